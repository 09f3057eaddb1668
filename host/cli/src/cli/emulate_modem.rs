//! `simlab emulate modem`: the virtual modem on a pty.

use super::{Global, Output};
use clap::Args;
use simlab_card::error::{Error, Result};
use simlab_card::profile::Profile;
use simlab_emulate::card::EmulatedCard;
use simlab_emulate::modem::{
    DEFAULT_SIM, Event, Faults, Loopback, Options, Profile as Quirks, Pty, VirtualModem,
};
use simlab_emulate::vpcd;
use simlab_modem::trace::AtTrace;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;

const AFTER_HELP: &str = "\
The modem listens on the master side of a pty; clients open the slave (through --link) as they
would open /dev/ttyUSB2. It answers the AT set of TS 27.007/27.005 that SMS tools use (gammu
works against it), keeps received messages in a 30-slot SM store, and forwards AT+CSIM and
AT+CRSM to the card model, so `simlab --modem LINK card info` reads its SIM.

Spool: every accepted SMS-SUBMIT is written to DIR/sent/NNNNNN.json (to, text, pdu, mr, srr,
validity_seconds, concat, ...). JSON files dropped into DIR/inbox/ arrive as incoming messages:
{\"from\": \"+4917...\", \"text\": \"...\"} (split into parts when long; \"reverse\": true
delivers them last part first), or {\"pdu\": \"<SMS-DELIVER hex with SCA>\"}.

Faults (--faults a,b=N,...):
  slow-prompt[=MS]    wait MS (default 3000) before the > prompt
  slow-submit[=MS]    wait MS (default 3000) before +CMGS: <mr>
  cms330[=N]          +CMS ERROR: 330 for every submission, or only the N-th
  cms500[=N]          +CMS ERROR: 500, likewise
  cme14[=N]           SIM busy for the first N (default 3) SIM commands, then ready
  urc-mid             URCs between reply lines, before prompts and final result codes
  echo                echo stays on whatever ATE0 says
  split               replies written 1-7 bytes at a time
  garbage             NULs, invalid UTF-8 and control bytes around replies
  vanish=N            close the pty and stop after the PDU of the N-th submission
  stuck-prompt[=N]    ignore Ctrl-Z until ESC
  report-status=HEX   TP-Status of status reports (e.g. 46 = validity period expired)

Example:
  simlab emulate modem --link /tmp/modem0 --spool /tmp/spool --profile quectel &
  simlab --modem /tmp/modem0 sms send --to +491700000099 --text hello --report";

#[derive(Args, Debug)]
#[command(after_help = AFTER_HELP)]
pub struct EmulateModemArgs {
    /// Create a symlink here to the pty's slave (replacing a stale symlink).
    #[arg(long, value_name = "PATH")]
    pub link: Option<PathBuf>,
    /// Write submitted messages to DIR/sent/ and take incoming ones from DIR/inbox/.
    #[arg(long, value_name = "DIR")]
    pub spool: Option<PathBuf>,
    /// Which modem family to imitate.
    #[arg(long, value_enum, default_value = "generic")]
    pub profile: Quirks,
    /// Misbehave on purpose: a comma-separated list (see below).
    #[arg(long, value_name = "LIST", default_value = "")]
    pub faults: String,
    /// The SIM: a card profile (fixtures/cards/*.toml). Default: a built-in USIM with MSISDN
    /// +491700000099 and PIN1 disabled.
    #[arg(long, value_name = "PROFILE.toml")]
    pub sim: Option<PathBuf>,
    /// Keep the SIM's counters and files in this file across restarts.
    #[arg(long, value_name = "FILE", value_parser = crate::cli::file_arg)]
    pub state: Option<PathBuf>,
    /// Which submitted messages come back as SMS-DELIVER.
    #[arg(long, value_enum, default_value = "own")]
    pub loopback: Loopback,
    /// The modem's own number (default: the SIM profile's MSISDN).
    #[arg(long, value_name = "NUMBER")]
    pub own_number: Option<String>,
    /// The service centre in AT+CSCA at start; empty for none (sending then fails with
    /// +CMS ERROR: 330 unless the PDU names one).
    #[arg(long, value_name = "NUMBER", default_value = simlab_emulate::modem::DEFAULT_SMSC)]
    pub smsc: String,
}

static STOP: AtomicBool = AtomicBool::new(false);

pub fn run(_out: &Output, global: &Global, args: &EmulateModemArgs) -> Result<i32> {
    if global.modem.is_some() || global.reader.is_some() || global.emulate.is_some() {
        return Err(Error::arg(
            "--modem/--reader/--emulate",
            "`emulate modem` is the modem; its SIM is --sim PROFILE.toml",
        ));
    }
    let faults = Faults::parse(&args.faults).map_err(|e| Error::arg("--faults", e.0))?;
    let profile = match &args.sim {
        Some(p) => Profile::load(p)?,
        None => Profile::parse(Path::new("(built-in modem SIM)"), DEFAULT_SIM)?,
    };
    let own_number = match &args.own_number {
        Some(n) => {
            simlab_sms::Address::parse(n).map_err(|e| Error::arg("--own-number", e.to_string()))?;
            Some(n.clone())
        }
        None => profile.msisdn.clone(),
    };
    let smsc = if args.smsc.is_empty() {
        None
    } else {
        simlab_sms::Address::parse(&args.smsc).map_err(|e| Error::arg("--smsc", e.to_string()))?;
        Some(args.smsc.clone())
    };
    let trace = global.trace.as_deref().map(AtTrace::create).transpose()?;
    let card = EmulatedCard::new(profile.build_card()?, args.state.as_deref(), None)?;
    let options = Options {
        profile: args.profile,
        faults,
        spool: args.spool.clone(),
        loopback: args.loopback,
        own_number: own_number.clone(),
        smsc,
        ..Options::default()
    };
    let pty = Pty::open(args.link.as_deref()).map_err(|source| Error::Io {
        context: match &args.link {
            Some(l) => format!("creating the pty and the link {}", l.display()),
            None => "creating the pty".into(),
        },
        source,
    })?;
    vpcd::install_ctrl_c(&STOP).map_err(|source| Error::Io {
        context: "installing the Ctrl-C handler".into(),
        source,
    })?;
    eprintln!(
        "emulate: {:?} modem on {}{}; SIM {} ({}); Ctrl-C stops",
        args.profile,
        pty.slave().display(),
        args.link
            .as_ref()
            .map_or(String::new(), |l| format!(" (link {})", l.display())),
        profile.iccid,
        own_number.as_deref().unwrap_or("no MSISDN"),
    );
    let verbose = global.verbose > 0;
    let mut modem = VirtualModem::new(card, options, trace);
    let mut report = |event: Event| {
        if let Some(line) = describe(&event, verbose) {
            tracing::info!("{line}");
        }
    };
    let vanished = modem
        .serve(pty, &STOP, &mut report)
        .map_err(|source| Error::Io {
            context: "serving the pty".into(),
            source,
        })?;
    tracing::info!("stopped");
    if vanished {
        tracing::warn!("the modem vanished (fault vanish), as asked");
    }
    Ok(0)
}

/// A progress line for an event; routine ones only with `-v`.
pub(super) fn describe(event: &Event, verbose: bool) -> Option<String> {
    Some(match event {
        Event::Connected => "client connected".into(),
        Event::Disconnected => "client disconnected".into(),
        Event::Command(c) if verbose => format!("<< {c}"),
        Event::Command(_) => return None,
        Event::Submitted { mr, to, spool } => format!(
            "SMS to {to} accepted, mr {mr}{}",
            spool
                .as_ref()
                .map_or(String::new(), |p| format!(", spooled to {}", p.display()))
        ),
        Event::Refused { reason } => format!("submission refused: {reason}"),
        Event::Delivered { from, index } => format!(
            "incoming SMS from {from}{}",
            index.map_or(String::new(), |i| format!(" stored at {i}"))
        ),
        Event::Reported { mr } => format!("status report for mr {mr}"),
        Event::Fault(f) => format!("fault: {f}"),
        Event::Vanished => "vanishing".into(),
        Event::Warning(w) => format!("warning: {w}"),
    })
}
