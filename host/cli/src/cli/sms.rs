//! `simlab sms …`: PDUs encoded and decoded offline, and short messages sent, listed, watched
//! and deleted through a modem (`--modem PATH`).

use super::{Global, Output};
use clap::{Subcommand, ValueEnum};
use serde_json::{Value, json};
use simlab_card::error::{Error, Result};
use simlab_card::hex;
use simlab_modem::sms::{ReportOutcome, SentPart, WatchEvent, status_name};
use simlab_modem::{Modem, ModemError};
use simlab_sms::{
    Address, ConcatReference, Decoded, Deliver, EncodedPdu, Pdu, PortAddressing, SubmitOptions,
    TextEncoding, ValidityPeriod,
};
use std::io::Write;
use std::time::{Duration, Instant};

#[derive(Subcommand, Debug)]
pub enum SmsCommand {
    /// Encode a text as SMS-SUBMIT PDUs (concatenated when long) with their AT+CMGS lengths.
    Encode {
        #[command(flatten)]
        message: MessageArgs,
    },
    /// Decode a PDU (SUBMIT, DELIVER or STATUS-REPORT) and print every field.
    #[command(after_help = "\
The PDU is hex, as AT+CMGR, AT+CMGL, +CMT and +CDS show it: starting with the service-centre
address (00 when absent). --no-sca for a bare TPDU. A PDU that does not decode is bad input
(exit 2); the message names the field at fault.")]
    Decode {
        /// The PDU in hex (spaces allowed).
        pdu: String,
        /// The PDU has no service-centre prefix.
        #[arg(long)]
        no_sca: bool,
    },
    /// Send a text through the modem, in as many parts as it needs.
    #[command(after_help = "\
A part counts as sent only when the modem confirmed it with +CMGS: <mr>. If a part fails, the
command stops, says which parts went out (with their message references) and exits 1. With
--report it sets TP-SRR, turns on status-report indications (AT+CNMI=2,1,0,1,0 or the closest
the modem accepts; the setting stays until the modem resets), waits for the reports and exits
1 unless every part was delivered.

Example:
  simlab --modem /dev/ttyUSB2 sms send --to +491701234567 --text 'Hello' --report")]
    Send {
        #[command(flatten)]
        message: MessageArgs,
        /// Seconds to wait for the status reports (with --report).
        #[arg(long, value_name = "SECONDS", default_value_t = 120)]
        report_timeout: u64,
        /// Seconds to wait for +CMGS after each part (networks can take tens of seconds).
        #[arg(long, value_name = "SECONDS", default_value_t = 60)]
        timeout: u64,
    },
    /// List the messages stored in the modem.
    List {
        /// Which messages.
        #[arg(long, value_enum, default_value = "all")]
        status: ListStatus,
    },
    /// Print incoming messages as they arrive, concatenated ones reassembled.
    #[command(after_help = "\
Turns on new-message indications (AT+CNMI=2,1,0,1,0 or the closest the modem accepts), then
prints each message once it is whole: one line each, or one JSON object per line with --json.
Messages read from storage are deleted once printed, unless --keep; a PDU that does not decode
is reported and kept. Parts of a concatenated message that never complete are printed after
--reassembly seconds with the missing part numbers. Ctrl-C stops (exit 0).")]
    Watch {
        /// Leave messages in the modem's storage after printing them.
        #[arg(long)]
        keep: bool,
        /// Stop after this many messages.
        #[arg(long, value_name = "N")]
        count: Option<u64>,
        /// Stop after this many seconds.
        #[arg(long, value_name = "SECONDS")]
        timeout: Option<f64>,
        /// Seconds to wait for the missing parts of a concatenated message.
        #[arg(long, value_name = "SECONDS", default_value_t = 300)]
        reassembly: u64,
    },
    /// Delete stored messages by index, or all of them.
    Delete {
        /// Storage indexes (see `sms list`).
        #[arg(required_unless_present = "all", conflicts_with = "all")]
        index: Vec<u32>,
        /// Delete every stored message.
        #[arg(long)]
        all: bool,
    },
    /// Throughput figures for scripts/bench-sms (PDU codec; AT round trips with --modem).
    #[cfg(feature = "bench")]
    #[command(hide = true)]
    Rate {
        /// Iterations.
        #[arg(long, default_value_t = 200_000)]
        n: u64,
        /// AT round trips instead of the codec (needs --modem).
        #[arg(long)]
        at: bool,
    },
}

/// What a SUBMIT carries, shared by `encode` and `send`.
#[derive(clap::Args, Debug)]
pub struct MessageArgs {
    /// The recipient: +international or national digits.
    #[arg(long, value_name = "NUMBER")]
    pub to: String,
    /// The text.
    #[arg(long, value_name = "TEXT")]
    pub text: String,
    /// Ask for a status report (TP-SRR); `send` then waits for it.
    #[arg(long)]
    pub report: bool,
    /// Validity period in seconds (TP-VP, rounded up to the relative scale's next step).
    #[arg(long, value_name = "SECONDS")]
    pub validity: Option<u64>,
    /// Refuse texts needing more parts than this.
    #[arg(long, value_name = "N", default_value_t = 10, value_parser = clap::value_parser!(u8).range(1..))]
    pub max_parts: u8,
    /// Alphabet: auto (GSM-7 when possible), gsm7, ucs2.
    #[arg(long, value_enum, default_value = "auto")]
    pub encoding: EncodingArg,
    /// Service centre to put in the PDU (default: the modem's AT+CSCA).
    #[arg(long, value_name = "NUMBER")]
    pub smsc: Option<String>,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum EncodingArg {
    Auto,
    Gsm7,
    Ucs2,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum ListStatus {
    All,
    Unread,
    Read,
    Unsent,
    Sent,
}

impl ListStatus {
    fn stat(self) -> u8 {
        match self {
            ListStatus::Unread => 0,
            ListStatus::Read => 1,
            ListStatus::Unsent => 2,
            ListStatus::Sent => 3,
            ListStatus::All => 4,
        }
    }
}

/// A random concatenation reference, so two long messages to one recipient do not merge.
fn random_reference() -> Result<ConcatReference> {
    Ok(ConcatReference::Bits8(
        simlab_card::random::bytes::<1>()?[0],
    ))
}

/// Checks the message arguments and encodes the PDUs: every bad input is exit 2 before any
/// modem is touched.
pub fn encode_message(m: &MessageArgs) -> Result<Vec<EncodedPdu>> {
    let to = Address::parse(&m.to).map_err(|e| Error::arg("--to", e.to_string()))?;
    let options = SubmitOptions {
        encoding: match m.encoding {
            EncodingArg::Auto => TextEncoding::Auto,
            EncodingArg::Gsm7 => TextEncoding::Gsm7,
            EncodingArg::Ucs2 => TextEncoding::Ucs2,
        },
        status_report_request: m.report,
        validity_period: m
            .validity
            .map(|s| {
                ValidityPeriod::at_least(Duration::from_secs(s))
                    .map_err(|e| Error::arg("--validity", e.to_string()))
            })
            .transpose()?,
        concat_reference: random_reference()?,
        max_parts: m.max_parts,
        service_centre: m
            .smsc
            .as_deref()
            .map(|s| Address::parse(s).map_err(|e| Error::arg("--smsc", e.to_string())))
            .transpose()?,
        ..SubmitOptions::default()
    };
    simlab_sms::encode_text(&to, &m.text, &options).map_err(|e| match e {
        simlab_sms::Error::TooLong { parts, max } => Error::arg(
            "--text",
            format!("needs {parts} parts, more than the limit of {max} (--max-parts)"),
        ),
        other => Error::arg("--text", other.to_string()),
    })
}

pub fn run(out: &Output, global: &Global, cmd: &SmsCommand) -> Result<i32> {
    match cmd {
        SmsCommand::Encode { message } => {
            let parts = encode_message(message)?;
            let list: Vec<Value> = parts
                .iter()
                .map(|p| json!({"pdu": hex::encode(p.as_bytes()), "cmgs_length": p.cmgs_length()}))
                .collect();
            let mut text = String::new();
            for p in &parts {
                text.push_str(&format!("AT+CMGS={}\n{}\n", p.cmgs_length(), p.to_hex()));
            }
            out.result(&text, &json!({"parts": list}))?;
            Ok(0)
        }
        SmsCommand::Decode { pdu, no_sca } => {
            let d = simlab_sms::decode_hex(pdu.trim(), !no_sca).map_err(|e| {
                let hint = if *no_sca {
                    ""
                } else {
                    " (a bare TPDU without service-centre prefix needs --no-sca)"
                };
                Error::arg("PDU", format!("{e}{hint}"))
            })?;
            let v = pdu_json(&d);
            out.result(&pdu_text(&v), &v)?;
            Ok(0)
        }
        SmsCommand::Send {
            message,
            report_timeout,
            timeout,
        } => send(out, global, message, *report_timeout, *timeout),
        SmsCommand::List { status } => {
            let mut modem = super::modem::open(global)?;
            modem.prepare_sms()?;
            let all = modem.list(status.stat())?;
            let list: Vec<Value> = all.iter().map(stored_json).collect();
            let mut text = String::new();
            for (m, v) in all.iter().zip(&list) {
                text.push_str(&format!("[{}] {} ", m.index, status_name(m.status)));
                text.push_str(&one_line(v));
                text.push('\n');
            }
            if all.is_empty() {
                text.push_str("no messages\n");
            }
            out.result(&text, &Value::Array(list))?;
            Ok(0)
        }
        SmsCommand::Delete { index, all } => {
            let mut modem = super::modem::open(global)?;
            modem.prepare_sms()?;
            if *all {
                let n = modem.delete_all()?;
                out.result(
                    &match n {
                        Some(n) => format!("deleted {n} messages\n"),
                        None => "deleted all messages\n".into(),
                    },
                    &json!({"deleted": "all"}),
                )?;
            } else {
                // Many modems answer OK to deleting an empty slot: read first, so a wrong index
                // is reported instead of "deleted".
                for i in index {
                    match modem.read(*i) {
                        Ok(_) => {}
                        Err(
                            ModemError::Cms { .. }
                            | ModemError::Cme { .. }
                            | ModemError::Error { .. }
                            | ModemError::Malformed { .. },
                        ) => {
                            return Err(Error::arg("INDEX", format!("no message at index {i}")));
                        }
                        Err(e) => return Err(e.into()),
                    }
                }
                for i in index {
                    modem.delete(*i)?;
                }
                out.result(
                    &format!("deleted {} message(s)\n", index.len()),
                    &json!({"deleted": index}),
                )?;
            }
            Ok(0)
        }
        SmsCommand::Watch {
            keep,
            count,
            timeout,
            reassembly,
        } => watch(out, global, *keep, *count, *timeout, *reassembly),
        #[cfg(feature = "bench")]
        SmsCommand::Rate { n, at } => rate(global, *n, *at),
    }
}

fn send(
    out: &Output,
    global: &Global,
    message: &MessageArgs,
    report_timeout: u64,
    timeout: u64,
) -> Result<i32> {
    let parts = encode_message(message)?;
    if !(1..=600).contains(&timeout) {
        return Err(Error::arg("--timeout", "must be 1 to 600 seconds"));
    }
    let mut modem = super::modem::open(global)?;
    modem.at().timeouts.submit = Duration::from_secs(timeout);
    modem.prepare_sms()?;
    let urcs = if message.report {
        modem.enable_indications(true)?;
        Some(modem.at().subscribe())
    } else {
        None
    };
    let to = Address::parse(&message.to)
        .map(|a| a.to_string())
        .unwrap_or_default();
    let sent = match modem.send_pdus(&parts) {
        Ok(sent) => sent,
        Err(ModemError::PartialSend {
            sent,
            total,
            failed_part,
            cause,
        }) => {
            let v = json!({
                "to": to,
                "parts": total,
                "complete": false,
                "sent": sent_json(&sent),
                "failed_part": failed_part,
                "error": cause.to_string(),
            });
            out.result(
                &format!(
                    "NOT SENT completely: part {failed_part} of {total} failed; parts that went out: {}\n",
                    if sent.is_empty() {
                        "none".to_string()
                    } else {
                        sent.iter().map(|p| format!("{} (mr {})", p.part, p.mr)).collect::<Vec<_>>().join(", ")
                    }
                ),
                &v,
            )?;
            eprintln!("simlab: error: part {failed_part} of {total}: {cause}");
            return Ok(1);
        }
        Err(e) => return Err(e.into()),
    };
    let mut value = json!({
        "to": to,
        "parts": parts.len(),
        "complete": true,
        "sent": sent_json(&sent),
    });
    let mut text = format!(
        "sent to {to} in {} part(s): mr {}\n",
        parts.len(),
        sent.iter()
            .map(|p| p.mr.to_string())
            .collect::<Vec<_>>()
            .join(", ")
    );
    let mut code = 0;
    if let Some(urcs) = urcs {
        out.say("waiting for status reports…");
        let reports = modem.wait_reports(&urcs, &sent, Duration::from_secs(report_timeout))?;
        let delivered = reports
            .iter()
            .all(|r| r.report.as_ref().is_some_and(|s| s.status.is_delivered()));
        value["delivered"] = json!(delivered);
        value["reports"] = Value::Array(reports.iter().map(report_json).collect());
        for r in &reports {
            text.push_str(&match &r.report {
                Some(s) => format!(
                    "part {} (mr {}): {} (status {:02x})\n",
                    r.part.part,
                    r.part.mr,
                    s.status.description(),
                    s.status.octet()
                ),
                None => format!(
                    "part {} (mr {}): no status report within {report_timeout} s\n",
                    r.part.part, r.part.mr
                ),
            });
        }
        if !delivered {
            code = 1;
        }
    }
    out.result(&text, &value)?;
    Ok(code)
}

pub(crate) fn sent_json(sent: &[SentPart]) -> Value {
    Value::Array(
        sent.iter()
            .map(|p| json!({"part": p.part, "mr": p.mr}))
            .collect(),
    )
}

fn report_json(r: &ReportOutcome) -> Value {
    json!({
        "part": r.part.part,
        "mr": r.part.mr,
        "status": r.report.as_ref().map(|s| format!("{:02x}", s.status.octet())),
        "delivered": r.report.as_ref().is_some_and(|s| s.status.is_delivered()),
        "description": r.report.as_ref().map(|s| s.status.description()),
        "discharge_time": r.report.as_ref().map(|s| s.discharge_time.to_string()),
    })
}

fn watch(
    out: &Output,
    global: &Global,
    keep: bool,
    count: Option<u64>,
    timeout: Option<f64>,
    reassembly: u64,
) -> Result<i32> {
    let deadline = timeout
        .map(|s| {
            if s.is_finite() && (0.0..=31_536_000.0).contains(&s) {
                Ok(Instant::now() + Duration::from_secs_f64(s))
            } else {
                Err(Error::arg("--timeout", "must be a number of seconds"))
            }
        })
        .transpose()?;
    let mut modem = super::modem::open(global)?;
    modem.prepare_sms()?;
    let cnmi = modem.enable_indications(false)?;
    out.say(&format!("watching {} ({cnmi}); Ctrl-C stops", modem.port()));
    let mut seen = 0u64;
    let json = out.json();
    let mut failed: Option<Error> = None;
    let mut handler = |event: WatchEvent| -> bool {
        let v = watch_json(&event);
        let line = if json { v.to_string() } else { watch_text(&v) };
        let mut stdout = std::io::stdout().lock();
        if let Err(source) = writeln!(stdout, "{line}").and_then(|()| stdout.flush()) {
            failed = Some(Error::Io {
                context: "writing to stdout".into(),
                source,
            });
            return false;
        }
        if matches!(event, WatchEvent::Message { .. }) {
            seen += 1;
        }
        count.is_none_or(|c| seen < c) && deadline.is_none_or(|d| Instant::now() < d)
    };
    let result = watch_until(&mut modem, keep, reassembly, deadline, &mut handler);
    if let Some(e) = failed {
        return Err(e);
    }
    match result {
        Ok(()) | Err(ModemError::Interrupted) => Ok(0),
        Err(e) => Err(e.into()),
    }
}

/// Watches, also stopping at the deadline when no message comes.
fn watch_until(
    modem: &mut Modem,
    keep: bool,
    reassembly: u64,
    deadline: Option<Instant>,
    handler: &mut dyn FnMut(WatchEvent) -> bool,
) -> std::result::Result<(), ModemError> {
    let Some(deadline) = deadline else {
        return modem.watch(keep, Duration::from_secs(reassembly), handler);
    };
    // The library's watch loop polls twice a second; a deadline check rides on a wrapper
    // that asks it to stop through the same stop flag the Ctrl-C handler sets.
    let stop = &super::modem::STOP;
    let timer = std::thread::spawn(move || {
        while Instant::now() < deadline {
            if stop.load(std::sync::atomic::Ordering::SeqCst) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        stop.store(true, std::sync::atomic::Ordering::SeqCst);
    });
    let r = modem.watch(keep, Duration::from_secs(reassembly), handler);
    super::modem::STOP.store(true, std::sync::atomic::Ordering::SeqCst);
    let _ = timer.join();
    r
}

fn watch_json(event: &WatchEvent) -> Value {
    match event {
        WatchEvent::Message {
            parts,
            text,
            indexes,
        } => {
            let first = parts.first();
            json!({
                "type": "deliver",
                "oa": first.map(|d| d.originator.to_string()),
                "scts": first.map(|d| d.service_centre_timestamp.to_string()),
                "text": text,
                "data": if text.is_none() { Some(parts.iter().map(|d| hex::encode(d.user_data.payload.as_slice())).collect::<String>()) } else { None },
                "parts": parts.len(),
                "indexes": indexes,
            })
        }
        WatchEvent::StatusReport(s) => json!({
            "type": "status_report",
            "mr": s.message_reference,
            "ra": s.recipient.to_string(),
            "status": format!("{:02x}", s.status.octet()),
            "delivered": s.status.is_delivered(),
            "description": s.status.description(),
            "scts": s.service_centre_timestamp.to_string(),
            "dt": s.discharge_time.to_string(),
        }),
        WatchEvent::Incomplete { parts, missing } => {
            let first: Option<&Deliver> = parts.first().map(|(_, d)| d);
            json!({
                "type": "incomplete",
                "oa": first.map(|d| d.originator.to_string()),
                "received": parts.iter().map(|(s, _)| s).collect::<Vec<_>>(),
                "missing": missing,
                "texts": parts.iter().map(|(_, d)| d.text()).collect::<Vec<_>>(),
            })
        }
        WatchEvent::Undecodable { index, error } => json!({
            "type": "undecodable",
            "index": index,
            "error": error,
        }),
    }
}

fn watch_text(v: &Value) -> String {
    match v["type"].as_str() {
        Some("deliver") => format!(
            "{} from {}: {}",
            v["scts"].as_str().unwrap_or("-"),
            v["oa"].as_str().unwrap_or("?"),
            v["text"].as_str().map_or_else(
                || format!("(binary {})", v["data"].as_str().unwrap_or("")),
                str::to_string
            )
        ),
        Some("status_report") => format!(
            "status report for mr {} to {}: {} ({})",
            v["mr"],
            v["ra"].as_str().unwrap_or("?"),
            v["description"].as_str().unwrap_or(""),
            v["status"].as_str().unwrap_or("")
        ),
        Some("incomplete") => format!(
            "incomplete message from {}: parts {} missing",
            v["oa"].as_str().unwrap_or("?"),
            v["missing"]
        ),
        _ => format!(
            "undecodable message{}: {}",
            v["index"]
                .as_u64()
                .map_or(String::new(), |i| format!(" at index {i} (kept)")),
            v["error"].as_str().unwrap_or("")
        ),
    }
}

fn stored_json(m: &simlab_modem::sms::Stored) -> Value {
    let mut v = match &m.decoded {
        Ok(d) => pdu_json(d),
        Err(e) => json!({"error": e.to_string(), "pdu": m.pdu.to_ascii_lowercase()}),
    };
    if let Value::Object(map) = &mut v {
        map.insert("index".into(), json!(m.index));
        map.insert("storage_status".into(), json!(status_name(m.status)));
    }
    v
}

fn one_line(v: &Value) -> String {
    if let Some(e) = v["error"].as_str() {
        return format!("undecodable: {e}");
    }
    let who = ["oa", "da", "ra"]
        .iter()
        .find_map(|k| v[*k].as_str().map(|s| format!("{k} {s}")))
        .unwrap_or_default();
    let concat = match &v["concat"] {
        Value::Object(c) => format!(" [part {}/{}]", c["sequence"], c["total"]),
        _ => String::new(),
    };
    format!(
        "{} {who}{concat}: {}",
        v["type"].as_str().unwrap_or("?"),
        v["text"].as_str().unwrap_or("(binary)")
    )
}

/// Every field of a decoded PDU, with the CLI's JSON conventions: snake_case keys, lower-case
/// hex, `null` where the PDU type has no such field.
pub fn pdu_json(d: &Decoded) -> Value {
    let p = &d.pdu;
    let hex8 = |b: u8| format!("{b:02x}");
    let udh = p.udh();
    let concat = udh.and_then(|h| h.concatenation()).map(|c| {
        json!({
            "reference": c.reference.value(),
            "reference_bits": match c.reference { ConcatReference::Bits8(_) => 8, ConcatReference::Bits16(_) => 16 },
            "total": c.total,
            "sequence": c.sequence,
        })
    });
    let ports = udh.and_then(|h| h.ports()).map(|pa| match pa {
        PortAddressing::Bits8 {
            destination,
            originator,
        } => json!({"bits": 8, "destination": destination, "originator": originator}),
        PortAddressing::Bits16 {
            destination,
            originator,
        } => json!({"bits": 16, "destination": destination, "originator": originator}),
    });
    let vp = p.validity_period().map(|vp| match vp {
        ValidityPeriod::Relative(r) => json!({
            "format": "relative",
            "octet": hex8(r.octet()),
            "seconds": r.duration().as_secs(),
        }),
        ValidityPeriod::Absolute(t) => json!({"format": "absolute", "time": t.to_string()}),
        ValidityPeriod::Enhanced(e) => json!({
            "format": "enhanced",
            "octets": hex::encode(&e.octets()),
            "seconds": vp.duration().map(|d| d.as_secs()),
        }),
    });
    let dcs = p.dcs();
    let mut v = json!({
        "type": p.message_type().as_str(),
        "sca": d.sca.as_ref().map(ToString::to_string),
        "first_octet": hex8(p.first_octet()),
        "mr": p.message_reference(),
        "pid": p.protocol_identifier().map(hex8),
        "dcs": dcs.map(|c| hex8(c.octet())),
        "alphabet": dcs.map(|c| c.alphabet().as_str()),
        "class": dcs.and_then(|c| c.message_class()).map(|c| c.number()),
        "scts": p.service_centre_timestamp().map(|t| t.to_string()),
        "dt": p.discharge_time().map(|t| t.to_string()),
        "status": p.status().map(|s| hex8(s.octet())),
        "status_description": p.status().map(|s| s.description()),
        "vp": vp,
        "srr": p.status_report_request(),
        "rd": match p { Pdu::Submit(s) => Some(s.reject_duplicates), _ => None },
        "udh": udh.and_then(|h| h.to_bytes().ok()).map(|b| hex::encode(&b)),
        "concat": concat,
        "ports": ports,
        "text": p.text(),
        "data": match p.text() {
            None => p.user_data().map(|u| hex::encode(u.payload.as_slice())),
            Some(_) => None,
        },
        "tpdu_length": d.tpdu_len,
    });
    let addr = p.address();
    if let Value::Object(map) = &mut v {
        map.insert(p.address_key().into(), json!(addr.to_string()));
        map.insert(format!("{}_toa", p.address_key()), json!(hex8(addr.toa())));
    }
    v
}

fn pdu_text(v: &Value) -> String {
    let mut s = String::new();
    if let Value::Object(map) = v {
        for (k, val) in map {
            if val.is_null() {
                continue;
            }
            let shown = match val {
                Value::String(t) => t.clone(),
                other => other.to_string(),
            };
            s.push_str(&format!("{k:<20} {shown}\n"));
        }
    }
    s
}

/// `sms rate`: PDUs encoded and decoded per second (a single-part GSM-7 OTP text, as
/// sms/benches does), or with `--at` AT round trips and SMS submissions per second against
/// `--modem` (meant for the virtual modem: the submissions really go out on a real one).
#[cfg(feature = "bench")]
fn rate(global: &Global, n: u64, at: bool) -> Result<i32> {
    let n = n.max(1);
    if at {
        let mut modem = super::modem::open(global)?;
        modem.prepare_sms()?;
        let start = Instant::now();
        for _ in 0..n {
            modem.at().command("AT")?;
        }
        let secs = start.elapsed().as_secs_f64();
        println!("at_round_trips {n} {:.1}", n as f64 / secs.max(1e-9));
        let to = Address::parse("+4915112345678").map_err(|e| Error::arg("to", e.to_string()))?;
        let parts = simlab_sms::encode_text(&to, "bench", &SubmitOptions::default())
            .map_err(|e| Error::arg("text", e.to_string()))?;
        let m = (n / 10).max(1);
        let start = Instant::now();
        for _ in 0..m {
            modem.send_pdus(&parts)?;
        }
        let secs = start.elapsed().as_secs_f64();
        println!("sms_submissions {m} {:.1}", m as f64 / secs.max(1e-9));
        return Ok(0);
    }
    let to = Address::parse("+27820001111").map_err(|e| Error::arg("to", e.to_string()))?;
    let text = "Your simlab code is 493817. It expires in 10 minutes. @example.com #493817";
    let options = SubmitOptions::default();
    let start = Instant::now();
    let mut check = 0usize;
    for _ in 0..n {
        let pdu = simlab_sms::encode_text_single(&to, std::hint::black_box(text), &options)
            .map_err(|e| Error::arg("text", e.to_string()))?;
        let d = simlab_sms::decode(std::hint::black_box(pdu.as_bytes()), true)
            .map_err(|e| Error::arg("pdu", e.to_string()))?;
        check = check.wrapping_add(d.pdu.text().map_or(0, |t| t.len()));
    }
    let secs = start.elapsed().as_secs_f64();
    if check != n as usize * text.len() {
        return Err(Error::Mismatch {
            what: "the codec did not round-trip the text".into(),
        });
    }
    println!("pdu_encode_decode {n} {:.1}", n as f64 / secs.max(1e-9));
    Ok(0)
}
