//! `simlab emulate …`: emulators that stand in for hardware.

use super::{Global, Output};
use clap::Subcommand;
use simlab_card::error::{Error, Result};
use simlab_card::profile::Profile;
use simlab_card::trace::{Side, Trace};
use simlab_emulate::card::EmulatedCard;
use simlab_emulate::vpcd::{self, Event, VpcdOptions};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};

// Kept beside emulate_modem.rs, whose modems it runs; declared here so `cli/mod.rs` needs no line.
#[path = "emulate_smsc.rs"]
mod emulate_smsc;

#[derive(Subcommand, Debug)]
pub enum EmulateCommand {
    /// The card model as a virtual card in a vpcd reader of the real pcscd.
    #[command(after_help = "\
vpcd (Debian package vsmartcard-vpcd) is a pcscd reader driver that listens on TCP; this
command connects to it and answers as the card. With the default /etc/reader.conf.d/vpcd,
port 35963 is reader \"Virtual PCD 00 00\" and 35964 is \"Virtual PCD 00 01\". pcscd may start
before or after this command, and may restart: the card reconnects. Ctrl-C stops it.

Example:
  simlab emulate card --profile fixtures/cards/usim-milenage.toml --state /tmp/card.state &
  simlab --reader \"Virtual PCD 00 00\" card info")]
    Card {
        /// The card profile (fixtures/cards/*.toml).
        #[arg(long, value_name = "PROFILE.toml")]
        profile: PathBuf,
        /// Where vpcd listens.
        #[arg(long, value_name = "HOST:PORT", default_value = "127.0.0.1:35963")]
        vpcd: String,
        /// Keep PIN counters, SQN and updated files in this file across restarts (created from
        /// the profile if missing; an existing file wins over the profile). It holds the card's
        /// keys: it is written with mode 0600.
        #[arg(long, value_name = "FILE", value_parser = crate::cli::file_arg)]
        state: Option<PathBuf>,
        /// Test fault: pull the card once after N APDUs (the next command gets no answer), then
        /// reinsert it.
        #[cfg(feature = "test-faults")]
        #[arg(long, value_name = "N", hide = true)]
        pull_after: Option<u64>,
        /// Make every APDU take this many milliseconds, as a real card's processing does (for
        /// benchmarks of batch work).
        #[arg(long, value_name = "MS", default_value_t = 0)]
        latency: u64,
    },
    /// A virtual modem on a pty, answering AT commands (and AT+CSIM from the card model).
    Modem(super::emulate_modem::EmulateModemArgs),
    /// A virtual SMS network: several virtual modems (phones, operators' service nodes) in one
    /// process, routing by number and by TP-PID.
    Smsc(emulate_smsc::EmulateSmscArgs),
}

static STOP: AtomicBool = AtomicBool::new(false);

pub fn run(out: &Output, global: &Global, cmd: &EmulateCommand) -> Result<i32> {
    match cmd {
        EmulateCommand::Modem(args) => super::emulate_modem::run(out, global, args),
        EmulateCommand::Smsc(args) => emulate_smsc::run(out, global, args),
        EmulateCommand::Card {
            profile,
            vpcd: addr,
            state,
            #[cfg(feature = "test-faults")]
            pull_after,
            latency,
        } => {
            if global.reader.is_some() || global.emulate.is_some() {
                return Err(Error::arg(
                    "--reader/--emulate",
                    "`emulate card` is the card; it takes --profile, not a reader",
                ));
            }
            if addr
                .rsplit_once(':')
                .is_none_or(|(_, port)| port.parse::<u16>().is_err())
            {
                return Err(Error::arg(
                    "--vpcd",
                    format!("expected HOST:PORT, got {addr:?}"),
                ));
            }
            let profile = Profile::load(profile)?;
            let trace = match global.trace.as_deref() {
                Some(path) => {
                    let mut trace = Trace::create(path, Side::Card)?;
                    let file = profile
                        .path
                        .file_name()
                        .map(|f| f.to_string_lossy().into_owned());
                    trace.know_profile(&profile, file.as_deref());
                    Some(trace)
                }
                None => None,
            };
            let mut card = EmulatedCard::new(profile.build_card()?, state.as_deref(), trace)?
                .with_latency(std::time::Duration::from_millis(*latency));
            vpcd::install_ctrl_c(&STOP).map_err(|source| Error::Io {
                context: "installing the Ctrl-C handler".into(),
                source,
            })?;
            let opts = VpcdOptions {
                addr: addr.clone(),
                reconnect: true,
                #[cfg(feature = "test-faults")]
                pull_after: *pull_after,
                #[cfg(not(feature = "test-faults"))]
                pull_after: None,
            };
            let verbose = global.verbose > 0;
            eprintln!(
                "emulate: card {} ({}) for vpcd at {addr}; Ctrl-C stops",
                profile.iccid,
                profile.name.as_deref().unwrap_or(profile.algorithm.name())
            );
            let mut report = |event: Event| {
                if let Some(line) = describe(&event, verbose) {
                    tracing::info!("{line}");
                }
            };
            vpcd::serve(&mut card, &opts, &STOP, &mut report).map_err(|source| Error::Io {
                context: format!("vpcd at {addr}"),
                source,
            })?;
            if let Some(e) = &card.last_error {
                tracing::warn!("{e}");
            }
            tracing::info!("stopped");
            Ok(if STOP.load(Ordering::SeqCst) { 0 } else { 1 })
        }
    }
}

/// A progress line for an emulator event; routine ones (polls, APDUs) only with `-v`.
fn describe(event: &Event, verbose: bool) -> Option<String> {
    let line = match event {
        Event::Connected(peer) => format!("card inserted (connected to vpcd at {peer})"),
        Event::Disconnected { reason } => format!("card removed ({reason})"),
        Event::ConnectFailed { reason } if verbose => format!("vpcd not reachable: {reason}"),
        Event::Retrying { delay } if verbose => format!("retrying in {} ms", delay.as_millis()),
        Event::BadFrame(e) => format!("ignored a bad frame from vpcd: {e}"),
        Event::BadResponse { len } => format!("card produced a {len}-byte response; sent 6F00"),
        Event::PowerOn if verbose => "power on".into(),
        Event::PowerOff if verbose => "power off".into(),
        Event::Reset if verbose => "reset".into(),
        Event::Apdu { command, response } if verbose => format!(
            "APDU INS {:02X} -> SW {}",
            command.get(1).copied().unwrap_or(0),
            response
                .len()
                .checked_sub(2)
                .map_or(String::from("?"), |i| simlab_card::hex::encode(
                    &response[i..]
                ))
        ),
        _ => return None,
    };
    Some(line)
}
