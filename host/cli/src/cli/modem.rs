//! `simlab modem info|doctor`.

use super::{Global, Output};
use clap::Subcommand;
use serde_json::{Value, json};
use simlab_card::error::{Error, Result};
use simlab_modem::info::{self, Verdict, registration_name};
use simlab_modem::trace::AtTrace;
use simlab_modem::{Modem, OpenOptions};
use std::sync::atomic::AtomicBool;

#[derive(Subcommand, Debug)]
pub enum ModemCommand {
    /// Manufacturer, model, IMEI, IMSI, signal, registration, operator and SMSC.
    Info,
    /// Find the AT port, check who holds it, the SIM, PDU mode, character set, indications,
    /// SMSC, registration and signal, and say what to fix.
    #[command(after_help = "\
Without --modem the doctor tries /dev/ttyUSB* and /dev/ttyACM* in order and stops at the first
port that answers AT. Ports another process holds (often ModemManager) are reported with the
process, not probed. It changes nothing on the modem. Exit code 1 when a check fails.")]
    Doctor,
}

/// The stop flag of modem commands (Ctrl-C ends waits cleanly and releases the port).
pub(crate) static STOP: AtomicBool = AtomicBool::new(false);

/// Opens the modem the global options name, with `--trace` and the Ctrl-C flag.
pub(crate) fn open(global: &Global) -> Result<Modem> {
    let path = global.modem.as_deref().ok_or_else(|| {
        Error::arg(
            "--modem",
            "no modem given: name its AT port with --modem PATH (see `simlab modem doctor`)",
        )
    })?;
    Ok(Modem::open(path, options(global)?)?)
}

pub(crate) fn options(global: &Global) -> Result<OpenOptions> {
    let _ = simlab_emulate::vpcd::install_ctrl_c(&STOP);
    Ok(OpenOptions {
        trace: global.trace.as_deref().map(AtTrace::create).transpose()?,
        stop: Some(&STOP),
        ..OpenOptions::default()
    })
}

pub fn run(out: &Output, global: &Global, cmd: &ModemCommand) -> Result<i32> {
    match cmd {
        ModemCommand::Info => {
            let mut modem = open(global)?;
            let i = modem.info()?;
            let dbm = i.signal.as_ref().and_then(|s| s.dbm());
            let value = json!({
                "port": modem.port(),
                "manufacturer": i.manufacturer,
                "model": i.model,
                "revision": i.revision,
                "imei": i.imei,
                "imsi": i.imsi,
                "signal": i.signal.as_ref().map(|s| json!({"rssi": s.rssi, "ber": s.ber, "dbm": dbm})),
                "registration": i.registration.map(|r| json!({"stat": r, "state": registration_name(r)})),
                "operator": i.operator,
                "smsc": i.smsc,
            });
            let show = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".into());
            let text = format!(
                "port          {}\nmanufacturer  {}\nmodel         {}\nrevision      {}\nIMEI          {}\nIMSI          {}\nsignal        {}\nregistration  {}\noperator      {}\nSMSC          {}\n",
                modem.port(),
                show(&i.manufacturer),
                show(&i.model),
                show(&i.revision),
                show(&i.imei),
                show(&i.imsi),
                match (&i.signal, dbm) {
                    (Some(s), Some(d)) => format!("{d} dBm (rssi {}, ber {})", s.rssi, s.ber),
                    (Some(s), None) => format!("unknown (rssi {})", s.rssi),
                    _ => "-".into(),
                },
                i.registration
                    .map_or("-".into(), |r| format!("{} ({r})", registration_name(r))),
                show(&i.operator),
                show(&i.smsc),
            );
            out.result(&text, &value)?;
            Ok(0)
        }
        ModemCommand::Doctor => {
            let ports: Vec<_> = global.modem.iter().cloned().collect();
            let d = info::doctor(&ports, options(global)?)?;
            let candidates: Vec<Value> = d
                .candidates
                .iter()
                .map(|c| {
                    json!({
                        "path": c.path.display().to_string(),
                        "answers_at": c.answers,
                        "holders": c.holders.iter().map(|h| json!({"pid": h.pid, "name": h.name})).collect::<Vec<_>>(),
                        "note": c.note,
                    })
                })
                .collect();
            let checks: Vec<Value> = d
                .checks
                .iter()
                .map(|c| {
                    json!({
                        "name": c.name,
                        "status": c.verdict.as_str(),
                        "detail": c.detail,
                        "fix": c.fix,
                    })
                })
                .collect();
            let value = json!({
                "port": d.port.as_ref().map(|p| p.display().to_string()),
                "healthy": d.healthy(),
                "candidates": candidates,
                "checks": checks,
            });
            let mut text = String::new();
            for c in &d.candidates {
                let holders: Vec<String> = c.holders.iter().map(ToString::to_string).collect();
                text.push_str(&format!(
                    "port {}: {}{}\n",
                    c.path.display(),
                    c.note,
                    if holders.is_empty() {
                        String::new()
                    } else {
                        format!(" [open by {}]", holders.join(", "))
                    }
                ));
            }
            for c in &d.checks {
                let mark = match c.verdict {
                    Verdict::Ok => "ok  ",
                    Verdict::Warn => "WARN",
                    Verdict::Fail => "FAIL",
                };
                text.push_str(&format!("{mark} {:<14} {}\n", c.name, c.detail));
                if let Some(fix) = &c.fix {
                    text.push_str(&format!("     {:<14} fix: {fix}\n", ""));
                }
            }
            out.result(&text, &value)?;
            Ok(if d.healthy() { 0 } else { 1 })
        }
    }
}
