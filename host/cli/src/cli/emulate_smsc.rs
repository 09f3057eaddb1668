//! `simlab emulate smsc`: the virtual SMS network, several virtual modems in one process.

use crate::cli::{Global, Output};
use clap::Args;
use serde_json::{Value, json};
use simlab_card::error::{Error, Result};
use simlab_card::profile::Profile;
use simlab_emulate::card::EmulatedCard;
use simlab_emulate::modem::{
    DEFAULT_SIM, DEFAULT_SMSC, Event, Loopback, Options, Profile as Quirks, Pty, VirtualModem,
};
use simlab_emulate::smsc::{self, Config, Node, Smsc, SmscEvent};
use simlab_emulate::vpcd;
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

const AFTER_HELP: &str = "\
One process, one service centre, several virtual modems, each on a pty of its own (the same
modem as `simlab emulate modem`, with its own SIM and number). A phone or a service reaches a
modem by its link, exactly as it would open a real modem:

  --phone LINK=PROFILE.toml   a phone with the SIM of PROFILE; its msisdn is the number
  --phone LINK=NUMBER         a phone with the built-in SIM and this number
  --node LINK=NUMBER:PREFIX[,PREFIX...]
                              an operator's service node (`simlab operator serve --modem LINK`)
                              with number NUMBER, serving the subscribers under PREFIX...

Routing:
  * TP-PID 0xC0-0xFF (service-centre specific; seed 003's service messages use 0xC1) from a
    subscriber under a node's prefix goes to that node whatever its destination (the longest
    prefix wins; a node's own messages go by number);
  * anything else goes to the modem whose number is the destination, as an SMS-DELIVER from the
    sender's number with TP-PID, DCS and user data (concatenation header included) kept.
Status reports (if the sender asked, TP-SRR): 00 delivered; 43 (not obtainable) for a number
no modem has; 46 (validity period expired) for a message lost with --drop.

  --delay NUMBER=MS           messages to NUMBER arrive MS milliseconds late
  --drop NUMBER=N[,N...]      the N-th messages (from 1; each part of a long message counts)
                              to NUMBER are lost

On start it prints one line per modem (NUMBER on LINK), or with --json one JSON line
{\"role\":\"smsc\",\"phones\":[{\"number\",\"link\"}],\"nodes\":[{\"number\",\"link\",\"prefixes\"}]};
then it runs until Ctrl-C or SIGTERM and removes its links. Logs name numbers, TP-PID, lengths
and message references, never message bodies.

Example:
  simlab emulate smsc --phone /tmp/phone-a=+491711000001 \\
      --phone /tmp/phone-b=fixtures/cards/usim-milenage.toml \\
      --node /tmp/op1-sn=+491710000000:+49171 --delay +491711000001=2000 &
  simlab --modem /tmp/phone-a sms send --to +491710000099 --text hello --report
  simlab --modem /tmp/op1-sn sms list";

#[derive(Args, Debug)]
#[command(after_help = AFTER_HELP)]
pub struct EmulateSmscArgs {
    /// A phone's modem: a symlink at LINK to its pty, with the SIM of PROFILE.toml (its msisdn
    /// is the number) or the built-in SIM and NUMBER. Repeatable.
    #[arg(long = "phone", value_name = "LINK=PROFILE.toml|LINK=NUMBER")]
    pub phones: Vec<String>,
    /// An operator's service node: its modem at LINK with number NUMBER, receiving the service
    /// messages (TP-PID 0xC0-0xFF) of subscribers under PREFIX... Repeatable.
    #[arg(long = "node", value_name = "LINK=NUMBER:PREFIX[,PREFIX...]")]
    pub nodes: Vec<String>,
    /// Messages to NUMBER arrive MS milliseconds late. Repeatable.
    #[arg(long = "delay", value_name = "NUMBER=MS")]
    pub delays: Vec<String>,
    /// The N-th messages (1-based) to NUMBER are lost. Repeatable.
    #[arg(long = "drop", value_name = "NUMBER=N[,N...]")]
    pub drops: Vec<String>,
    /// Each modem spools its submitted messages to DIR/<number digits>/sent/ and takes
    /// incoming ones from DIR/<number digits>/inbox/ (as `emulate modem --spool`).
    #[arg(long, value_name = "DIR")]
    pub spool: Option<PathBuf>,
    /// Which modem family every modem imitates.
    #[arg(long, value_enum, default_value = "generic")]
    pub profile: Quirks,
}

/// One modem to start.
struct Planned {
    link: PathBuf,
    number: String,
    sim: Profile,
    /// Empty for a phone.
    prefixes: Vec<String>,
}

static STOP: AtomicBool = AtomicBool::new(false);

fn split_link<'a>(flag: &str, value: &'a str) -> Result<(&'a str, &'a str)> {
    value
        .split_once('=')
        .filter(|(l, r)| !l.is_empty() && !r.is_empty())
        .ok_or_else(|| Error::arg(flag, format!("expected LINK=..., got {value:?}")))
}

fn number_arg(flag: &str, n: &str) -> Result<String> {
    smsc::normalize(n).map_err(|e| Error::arg(flag, e.0))
}

/// The built-in SIM for a modem given by its number: EF_MSISDN says that number, so a
/// program reading the SIM (not only `AT+CNUM`) sees the phone it talks to.
fn default_sim(number: &str) -> Result<Profile> {
    let mut sim = Profile::parse(Path::new("(built-in modem SIM)"), DEFAULT_SIM)?;
    sim.msisdn = Some(number.to_string());
    Ok(sim)
}

fn plan(args: &EmulateSmscArgs) -> Result<(Vec<Planned>, Config)> {
    if args.phones.is_empty() && args.nodes.is_empty() {
        return Err(Error::arg(
            "--phone/--node",
            "a network needs at least one modem (see --help)",
        ));
    }
    let mut planned = Vec::new();
    for p in &args.phones {
        let (link, what) = split_link("--phone", p)?;
        let looks_like_number = what.starts_with('+') || what.bytes().all(|b| b.is_ascii_digit());
        let (number, sim) = if looks_like_number {
            let number = number_arg("--phone", what)?;
            let sim = default_sim(&number)?;
            (number, sim)
        } else {
            let sim = Profile::load(Path::new(what))?;
            let Some(msisdn) = sim.msisdn.clone() else {
                return Err(Error::arg(
                    "--phone",
                    format!("{what} has no msisdn: give the number instead (LINK=+49...)"),
                ));
            };
            (number_arg("--phone", &msisdn)?, sim)
        };
        planned.push(Planned {
            link: link.into(),
            number,
            sim,
            prefixes: Vec::new(),
        });
    }
    for n in &args.nodes {
        let (link, rest) = split_link("--node", n)?;
        let (number, prefixes) = rest.split_once(':').ok_or_else(|| {
            Error::arg(
                "--node",
                format!("expected LINK=NUMBER:PREFIX[,PREFIX...], got {n:?}"),
            )
        })?;
        let prefixes = prefixes
            .split(',')
            .map(|p| smsc::parse_prefix(p.trim()).map_err(|e| Error::arg("--node", e.0)))
            .collect::<Result<Vec<_>>>()?;
        let number = number_arg("--node", number)?;
        planned.push(Planned {
            link: link.into(),
            sim: default_sim(&number)?,
            number,
            prefixes,
        });
    }
    let mut links = HashSet::new();
    for m in &planned {
        if !links.insert(m.link.clone()) {
            return Err(Error::arg(
                "--phone/--node",
                format!("link {} is given twice", m.link.display()),
            ));
        }
        if let Ok(meta) = std::fs::symlink_metadata(&m.link)
            && !meta.file_type().is_symlink()
        {
            return Err(Error::arg(
                "--phone/--node",
                format!("{} exists and is not a symlink", m.link.display()),
            ));
        }
    }
    let mut delays = HashMap::new();
    for d in &args.delays {
        let (n, ms) = d
            .split_once('=')
            .ok_or_else(|| Error::arg("--delay", format!("expected NUMBER=MS, got {d:?}")))?;
        let ms: u64 = ms
            .parse()
            .map_err(|_| Error::arg("--delay", format!("{ms:?} is not milliseconds")))?;
        delays.insert(number_arg("--delay", n)?, Duration::from_millis(ms));
    }
    let mut drops: HashMap<String, Vec<u32>> = HashMap::new();
    for d in &args.drops {
        let (n, list) = d
            .split_once('=')
            .ok_or_else(|| Error::arg("--drop", format!("expected NUMBER=N[,N...], got {d:?}")))?;
        let list = list
            .split(',')
            .map(|x| match x.trim().parse::<u32>() {
                Ok(v) if v > 0 => Ok(v),
                _ => Err(Error::arg(
                    "--drop",
                    format!("{x:?} is not a message count (1, 2, ...)"),
                )),
            })
            .collect::<Result<Vec<_>>>()?;
        drops
            .entry(number_arg("--drop", n)?)
            .or_default()
            .extend(list);
    }
    let config = Config {
        smsc: simlab_sms::Address::parse(DEFAULT_SMSC)
            .map_err(|e| Error::arg("--smsc", e.to_string()))?,
        phones: planned
            .iter()
            .filter(|m| m.prefixes.is_empty())
            .map(|m| m.number.clone())
            .collect(),
        nodes: planned
            .iter()
            .filter(|m| !m.prefixes.is_empty())
            .map(|m| Node {
                number: m.number.clone(),
                prefixes: m.prefixes.clone(),
            })
            .collect(),
        delays,
        drops,
    };
    let config = config
        .validate()
        .map_err(|e| Error::arg("--phone/--node", e.0))?;
    Ok((planned, config))
}

pub fn run(out: &Output, global: &Global, args: &EmulateSmscArgs) -> Result<i32> {
    if global.modem.is_some() || global.reader.is_some() || global.emulate.is_some() {
        return Err(Error::arg(
            "--modem/--reader/--emulate",
            "`emulate smsc` is the network and its modems; they take --phone and --node",
        ));
    }
    let (planned, config) = plan(args)?;
    let network = Smsc::start(config, Box::new(log_network_event))
        .map_err(|e| Error::arg("--phone/--node", e.0))?;
    let verbose = global.verbose > 0;
    let mut modems = Vec::new();
    for m in &planned {
        let card = EmulatedCard::new(m.sim.build_card()?, None, None)?;
        let options = Options {
            profile: args.profile,
            spool: args
                .spool
                .as_ref()
                .map(|d| d.join(m.number.trim_start_matches('+'))),
            loopback: Loopback::None,
            own_number: Some(m.number.clone()),
            smsc: Some(DEFAULT_SMSC.into()),
            ..Options::default()
        };
        let mut modem = VirtualModem::new(card, options, None);
        let port = network
            .port(&m.number)
            .map_err(|e| Error::arg("--phone/--node", e.0))?;
        modem.attach(Box::new(port));
        let pty = Pty::open(Some(&m.link)).map_err(|source| Error::Io {
            context: format!("creating the pty and the link {}", m.link.display()),
            source,
        })?;
        modems.push((m.number.clone(), modem, pty));
    }
    vpcd::install_ctrl_c(&STOP).map_err(|source| Error::Io {
        context: "installing the Ctrl-C handler".into(),
        source,
    })?;
    let entry = |m: &Planned| {
        let mut v = json!({"number": m.number, "link": m.link.display().to_string()});
        if !m.prefixes.is_empty() {
            v["prefixes"] = json!(m.prefixes);
        }
        v
    };
    let phones: Vec<Value> = planned
        .iter()
        .filter(|m| m.prefixes.is_empty())
        .map(entry)
        .collect();
    let nodes: Vec<Value> = planned
        .iter()
        .filter(|m| !m.prefixes.is_empty())
        .map(entry)
        .collect();
    if out.json() {
        println!(
            "{}",
            json!({"role": "smsc", "phones": phones, "nodes": nodes})
        );
    } else {
        for m in &planned {
            if m.prefixes.is_empty() {
                println!("{} on {}", m.number, m.link.display());
            } else {
                println!(
                    "{} on {} (service node for {})",
                    m.number,
                    m.link.display(),
                    m.prefixes.join(",")
                );
            }
        }
    }
    eprintln!(
        "emulate: SMS network with {} phone(s) and {} service node(s); Ctrl-C stops",
        phones.len(),
        nodes.len()
    );
    let threads: Vec<_> = modems
        .into_iter()
        .map(|(number, mut modem, pty)| {
            std::thread::Builder::new()
                .name(format!("modem {number}"))
                .spawn(move || {
                    let mut report = |event: Event| {
                        if let Some(line) = crate::cli::emulate_modem::describe(&event, verbose) {
                            tracing::info!(modem = %number, "{line}");
                        }
                    };
                    match modem.serve(pty, &STOP, &mut report) {
                        Ok(_) => {}
                        Err(e) => tracing::error!(modem = %number, "serving the pty: {e}"),
                    }
                })
        })
        .collect::<std::io::Result<_>>()
        .map_err(|source| Error::Io {
            context: "starting a modem thread".into(),
            source,
        })?;
    while !STOP.load(Ordering::SeqCst) && threads.iter().any(|t| !t.is_finished()) {
        std::thread::sleep(Duration::from_millis(50));
    }
    STOP.store(true, Ordering::SeqCst);
    for t in threads {
        let _ = t.join();
    }
    drop(network);
    tracing::info!("stopped");
    Ok(0)
}

/// A log line for a network event: numbers, TP-PID, lengths and TP-MR, never the body.
fn log_network_event(event: SmscEvent) {
    match event {
        SmscEvent::Submitted {
            from,
            to,
            mr,
            pid,
            length,
        } => tracing::info!("submitted: {from} -> {to}, mr {mr}, pid {pid:02x}, {length} units"),
        SmscEvent::Routed {
            from,
            to,
            node,
            pid,
        } => tracing::info!("routed: {from} -> {to} by pid {pid:02x} to service node {node}"),
        SmscEvent::Delivered {
            from,
            to,
            mr,
            pid,
            length,
        } => tracing::info!("delivered: {from} -> {to}, mr {mr}, pid {pid:02x}, {length} units"),
        SmscEvent::Dropped { from, to, mr, nth } => {
            tracing::warn!("dropped (as asked): {from} -> {to}, mr {mr}, message {nth} to {to}")
        }
        SmscEvent::Unknown { from, to, mr } => {
            tracing::warn!("unknown destination: {from} -> {to}, mr {mr}")
        }
        SmscEvent::Reported { to, mr, status } => {
            tracing::info!("status report to {to}: mr {mr}, status {status:02x}")
        }
        SmscEvent::Warning(w) => tracing::warn!("{w}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: EmulateSmscArgs,
    }

    #[test]
    fn a_modem_given_by_its_number_has_that_number_on_its_sim() {
        let cli = Cli::parse_from([
            "smsc",
            "--phone",
            "/tmp/a=+491711000001",
            "--phone",
            "/tmp/b=+491722000002",
            "--node",
            "/tmp/sn=+491710000000:+49171",
        ]);
        let (planned, _) = plan(&cli.args).unwrap();
        let numbers: Vec<(&str, Option<&str>)> = planned
            .iter()
            .map(|p| (p.number.as_str(), p.sim.msisdn.as_deref()))
            .collect();
        assert_eq!(
            numbers,
            [
                ("+491711000001", Some("+491711000001")),
                ("+491722000002", Some("+491722000002")),
                ("+491710000000", Some("+491710000000")),
            ]
        );
    }
}
