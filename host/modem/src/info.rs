//! What a modem is and whether it is set up for SMS: `simlab modem info` and
//! `simlab modem doctor`.

use super::syntax::{decode_ucs2_hex, fields, unquote};
use super::urc;
use super::{Holder, Modem, ModemError, OpenOptions, Timeouts, holders, open_port};
use std::path::PathBuf;
use std::time::Duration;

/// Signal quality from `AT+CSQ` (TS 27.007 8.5).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Signal {
    /// `<rssi>` 0–31, 99 = not known.
    pub rssi: u8,
    /// `<ber>` 0–7, 99 = not known.
    pub ber: u8,
}

impl Signal {
    /// The received level in dBm: 0 is −113 dBm or less, 31 is −51 dBm or more, steps of 2.
    pub fn dbm(&self) -> Option<i32> {
        (self.rssi <= 31).then(|| -113 + 2 * i32::from(self.rssi))
    }
}

/// Registration state from `AT+CREG?` (TS 27.007 7.2).
pub fn registration_name(stat: u8) -> &'static str {
    match stat {
        0 => "not registered",
        1 => "registered, home network",
        2 => "searching",
        3 => "registration denied",
        4 => "unknown",
        5 => "registered, roaming",
        _ => "reserved",
    }
}

/// Everything `modem info` reports; a field the modem would not give is `None`.
#[derive(Clone, Debug, Default)]
pub struct Info {
    pub manufacturer: Option<String>,
    pub model: Option<String>,
    pub revision: Option<String>,
    pub imei: Option<String>,
    pub imsi: Option<String>,
    pub signal: Option<Signal>,
    pub registration: Option<u8>,
    pub operator: Option<String>,
    pub smsc: Option<String>,
}

impl Modem {
    /// Collects [`Info`]. Only a vanished modem or an interruption fails it; anything the
    /// modem refuses is left out.
    pub fn info(&mut self) -> Result<Info, ModemError> {
        let mut info = Info {
            manufacturer: self.bare("AT+CGMI", "+CGMI")?,
            model: self.bare("AT+CGMM", "+CGMM")?,
            revision: self.bare("AT+CGMR", "+CGMR")?,
            imei: self.bare("AT+CGSN", "+CGSN")?,
            imsi: self.bare("AT+CIMI", "+CIMI")?,
            ..Info::default()
        };
        if let Some(csq) = self.optional("AT+CSQ")?.as_deref().and_then(|r| {
            let f = fields(r);
            Some(Signal {
                rssi: f.first()?.parse().ok()?,
                ber: f.get(1)?.parse().ok()?,
            })
        }) {
            info.signal = Some(csq);
        }
        info.registration = self
            .optional("AT+CREG?")?
            .and_then(|r| fields(&r).get(1).and_then(|s| s.parse().ok()));
        info.operator = self
            .optional("AT+COPS?")?
            .and_then(|r| fields(&r).get(2).map(|s| unquote(s).to_string()))
            .filter(|s| !s.is_empty());
        info.smsc = self.smsc()?;
        Ok(info)
    }

    /// The service-centre number from `AT+CSCA?`, decoded when the modem's character set
    /// (`AT+CSCS`) is UCS2 and it came as hex; `None` when unset.
    pub fn smsc(&mut self) -> Result<Option<String>, ModemError> {
        Ok(self
            .optional("AT+CSCA?")?
            .and_then(|r| fields(&r).first().map(|s| decode_ucs2_hex(unquote(s))))
            .filter(|s| !s.is_empty()))
    }

    /// The arguments of `prefix` in the reply to `cmd`, or `None` if the modem refused.
    fn optional(&mut self, cmd: &str) -> Result<Option<String>, ModemError> {
        let prefix = urc::owner(cmd).unwrap_or_default().to_string();
        match self.at.command(cmd) {
            Ok(r) => Ok(r.info(&prefix).map(str::to_string)),
            Err(e) => tolerate(e),
        }
    }

    /// A bare answer (`AT+CGMI` → `simlab`), or the same behind a `+CGMI:` prefix as some
    /// firmware sends it.
    fn bare(&mut self, cmd: &str, prefix: &str) -> Result<Option<String>, ModemError> {
        match self.at.command(cmd) {
            Ok(r) => Ok(r
                .bare()
                .or_else(|| r.info(prefix))
                .map(|s| unquote(s).to_string())
                .filter(|s| !s.is_empty())),
            Err(e) => tolerate(e),
        }
    }
}

/// A refusal becomes "not available"; a modem that is gone, or the user's Ctrl-C, stays an
/// error.
fn tolerate(e: ModemError) -> Result<Option<String>, ModemError> {
    match e {
        ModemError::Vanished { .. } | ModemError::Interrupted => Err(e),
        _ => Ok(None),
    }
}

/// How a check came out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    Ok,
    Warn,
    Fail,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Ok => "ok",
            Verdict::Warn => "warn",
            Verdict::Fail => "fail",
        }
    }
}

/// One finding of the doctor, with what to do about it.
#[derive(Clone, Debug)]
pub struct Check {
    pub name: &'static str,
    pub verdict: Verdict,
    pub detail: String,
    pub fix: Option<String>,
}

/// A port the doctor looked at.
#[derive(Clone, Debug)]
pub struct Candidate {
    pub path: PathBuf,
    pub holders: Vec<Holder>,
    /// Whether it answered `AT` (`None`: not probed).
    pub answers: Option<bool>,
    pub note: String,
}

/// The doctor's findings.
#[derive(Clone, Debug, Default)]
pub struct Diagnosis {
    pub candidates: Vec<Candidate>,
    /// The AT port found, if any.
    pub port: Option<PathBuf>,
    pub checks: Vec<Check>,
}

impl Diagnosis {
    /// True when no check failed.
    pub fn healthy(&self) -> bool {
        self.port.is_some() && self.checks.iter().all(|c| c.verdict != Verdict::Fail)
    }

    fn add(&mut self, name: &'static str, verdict: Verdict, detail: String, fix: Option<&str>) {
        self.checks.push(Check {
            name,
            verdict,
            detail,
            fix: fix.map(str::to_string),
        });
    }
}

/// The serial devices USB modems show up as, in a stable order (ttyUSB2 before ttyUSB10).
pub fn discover() -> Vec<PathBuf> {
    let mut ports: Vec<PathBuf> = std::fs::read_dir("/dev")
        .map(|d| {
            d.flatten()
                .map(|e| e.path())
                .filter(|p| {
                    p.file_name()
                        .and_then(|n| n.to_str())
                        .is_some_and(|n| n.starts_with("ttyUSB") || n.starts_with("ttyACM"))
                })
                .collect()
        })
        .unwrap_or_default();
    ports.sort_by_key(|p| {
        let name = p.file_name().and_then(|n| n.to_str()).unwrap_or_default();
        let digits = name.trim_start_matches(|c: char| !c.is_ascii_digit());
        (
            name[..name.len() - digits.len()].to_string(),
            digits.parse::<u32>().unwrap_or(u32::MAX),
        )
    });
    ports
}

/// Whether a ModemManager process runs (it probes new serial ports and may hold them).
pub fn modem_manager_running() -> Option<Holder> {
    let procs = std::fs::read_dir("/proc").ok()?;
    procs.flatten().find_map(|e| {
        let pid = e.file_name().to_str()?.parse::<u32>().ok()?;
        let name = std::fs::read_to_string(e.path().join("comm")).ok()?;
        (name.trim() == "ModemManager").then(|| Holder {
            pid,
            name: name.trim().to_string(),
        })
    })
}

/// Finds the AT port among `ports` (or among /dev/ttyUSB* and /dev/ttyACM* when empty),
/// then checks SIM, PDU mode, character set, indications, SMSC, registration and signal.
pub fn doctor(ports: &[PathBuf], options: OpenOptions) -> Result<Diagnosis, ModemError> {
    let mut d = Diagnosis::default();
    let ports = if ports.is_empty() {
        discover()
    } else {
        ports.to_vec()
    };
    if let Some(mm) = modem_manager_running() {
        d.add(
            "modem_manager",
            Verdict::Warn,
            format!("{mm} is running; it probes serial ports and can hold them or interleave its own commands"),
            Some("systemctl stop ModemManager, or mark the modem with udev ENV{ID_MM_DEVICE_IGNORE}=\"1\""),
        );
    }
    let mut trace = options.trace;
    let mut modem = None;
    for path in ports {
        let mut cand = Candidate {
            holders: holders(&path),
            path: path.clone(),
            answers: None,
            note: String::new(),
        };
        if modem.is_some() {
            cand.note = "not probed (the AT port was found earlier)".into();
            d.candidates.push(cand);
            continue;
        }
        match open_port(&path) {
            Err(ModemError::Busy { holders, .. }) => {
                cand.holders = holders;
                cand.note = "held by another process: not probed".into();
            }
            Err(e) => cand.note = e.to_string(),
            Ok(port) => {
                let probe = OpenOptions {
                    timeouts: Timeouts {
                        probe: Duration::from_millis(700),
                        ..options.timeouts
                    },
                    trace: trace.take(),
                    stop: options.stop,
                    probe_tries: 2,
                };
                match Modem::over(Box::new(port), &path.display().to_string(), probe) {
                    Ok(m) => {
                        cand.answers = Some(true);
                        cand.note = "answers AT".into();
                        d.port = Some(path.clone());
                        modem = Some(m);
                    }
                    Err(ModemError::Interrupted) => return Err(ModemError::Interrupted),
                    Err(e) => {
                        cand.answers = Some(false);
                        cand.note = match e {
                            ModemError::NoAnswer { .. } => {
                                "no answer to AT (a data, diagnostic or GPS port?)".into()
                            }
                            other => other.to_string(),
                        };
                    }
                }
            }
        }
        d.candidates.push(cand);
    }
    let Some(mut m) = modem else {
        let busy: Vec<String> = d
            .candidates
            .iter()
            .filter(|c| !c.holders.is_empty())
            .map(|c| {
                let h: Vec<String> = c.holders.iter().map(Holder::to_string).collect();
                format!("{} ({})", c.path.display(), h.join(", "))
            })
            .collect();
        let (detail, fix) = if d.candidates.is_empty() {
            (
                "no /dev/ttyUSB* or /dev/ttyACM* device".to_string(),
                "plug the modem in; some need usb_modeswitch to leave their CD-ROM mode",
            )
        } else if !busy.is_empty() {
            (
                format!("no free port answers AT; held: {}", busy.join("; ")),
                "stop the process holding the port (often ModemManager), then run the doctor again",
            )
        } else {
            (
                "no port answers AT".to_string(),
                "check that the modem is powered and in modem mode (lsusb, usb_modeswitch)",
            )
        };
        d.add("at_port", Verdict::Fail, detail, Some(fix));
        return Ok(d);
    };
    d.add(
        "at_port",
        Verdict::Ok,
        format!("{} answers AT", m.port()),
        None,
    );
    check_sim(&mut m, &mut d)?;
    check_cmgf(&mut m, &mut d)?;
    check_cscs(&mut m, &mut d)?;
    check_cnmi(&mut m, &mut d)?;
    match m.smsc()? {
        Some(n) => d.add("smsc", Verdict::Ok, format!("service centre {n}"), None),
        None => d.add(
            "smsc",
            Verdict::Fail,
            "no service-centre number (AT+CSCA? is empty): sending fails with +CMS ERROR 330"
                .into(),
            Some("AT+CSCA=\"+<your operator's SMSC>\",145"),
        ),
    }
    let reg = m
        .optional("AT+CREG?")?
        .and_then(|r| fields(&r).get(1).and_then(|s| s.parse::<u8>().ok()));
    match reg {
        Some(s @ (1 | 5)) => d.add(
            "registration",
            Verdict::Ok,
            registration_name(s).into(),
            None,
        ),
        Some(2) => d.add(
            "registration",
            Verdict::Warn,
            "searching for a network".into(),
            Some("wait, or check the antenna and coverage"),
        ),
        Some(s) => d.add(
            "registration",
            Verdict::Fail,
            registration_name(s).into(),
            Some("check the SIM's subscription and the network selection (AT+COPS)"),
        ),
        None => d.add(
            "registration",
            Verdict::Warn,
            "AT+CREG? gave no state".into(),
            None,
        ),
    }
    let signal = m.optional("AT+CSQ")?.and_then(|r| {
        let f = fields(&r);
        Some(Signal {
            rssi: f.first()?.parse().ok()?,
            ber: f.get(1)?.parse().ok()?,
        })
    });
    match signal
        .as_ref()
        .and_then(|s| s.dbm().map(|dbm| (s.rssi, dbm)))
    {
        Some((rssi, dbm)) if rssi >= 10 => d.add(
            "signal",
            Verdict::Ok,
            format!("{dbm} dBm (rssi {rssi})"),
            None,
        ),
        Some((rssi, dbm)) => d.add(
            "signal",
            Verdict::Warn,
            format!("weak: {dbm} dBm (rssi {rssi})"),
            Some("move the modem or use an external antenna"),
        ),
        None => d.add(
            "signal",
            Verdict::Warn,
            "signal not known (AT+CSQ gave 99 or nothing)".into(),
            None,
        ),
    }
    Ok(d)
}

fn check_sim(m: &mut Modem, d: &mut Diagnosis) -> Result<(), ModemError> {
    match m.at.command("AT+CPIN?") {
        Ok(r) => {
            let state = r.info("+CPIN").map(unquote).unwrap_or("?").to_string();
            match state.to_ascii_uppercase().as_str() {
                "READY" => d.add("sim", Verdict::Ok, "SIM ready".into(), None),
                "SIM PIN" => d.add(
                    "sim",
                    Verdict::Fail,
                    "the SIM wants its PIN".into(),
                    Some("enter it once: AT+CPIN=\"<pin>\" (or disable the PIN lock on the SIM)"),
                ),
                "SIM PUK" => d.add(
                    "sim",
                    Verdict::Fail,
                    "the SIM's PIN is blocked".into(),
                    Some("unblock it: AT+CPIN=\"<puk>\",\"<new pin>\""),
                ),
                other => d.add(
                    "sim",
                    Verdict::Fail,
                    format!("SIM state {other}"),
                    Some("see TS 27.007 +CPIN"),
                ),
            }
        }
        Err(e @ (ModemError::Vanished { .. } | ModemError::Interrupted)) => return Err(e),
        Err(ModemError::Cme { error, .. }) if error == super::CmeError::SIM_NOT_INSERTED => d.add(
            "sim",
            Verdict::Fail,
            "no SIM inserted".into(),
            Some("insert a SIM (with the modem powered off)"),
        ),
        Err(e) => d.add("sim", Verdict::Fail, e.to_string(), None),
    }
    Ok(())
}

fn check_cmgf(m: &mut Modem, d: &mut Diagnosis) -> Result<(), ModemError> {
    let supported = m.optional("AT+CMGF=?")?;
    let current = m.optional("AT+CMGF?")?;
    let pdu = supported.as_deref().is_none_or(|s| s.contains('0'));
    if !pdu {
        d.add(
            "cmgf",
            Verdict::Fail,
            format!(
                "no PDU mode (AT+CMGF=? gives {})",
                supported.unwrap_or_default()
            ),
            Some("simlab needs PDU mode (TS 27.005 AT+CMGF=0); this modem only does text mode"),
        );
    } else {
        let now = match current.as_deref().map(str::trim) {
            Some("0") => "PDU mode now".to_string(),
            Some("1") => {
                "text mode now; simlab switches to PDU mode (AT+CMGF=0) itself".to_string()
            }
            other => format!("mode {}", other.unwrap_or("unknown")),
        };
        d.add(
            "cmgf",
            Verdict::Ok,
            format!("PDU mode supported; {now}"),
            None,
        );
    }
    Ok(())
}

fn check_cscs(m: &mut Modem, d: &mut Diagnosis) -> Result<(), ModemError> {
    match m.optional("AT+CSCS?")?.map(|s| unquote(&s).to_string()) {
        Some(cs) if cs.eq_ignore_ascii_case("UCS2") => d.add(
            "cscs",
            Verdict::Warn,
            "character set UCS2: strings such as the SMSC come hex-encoded (simlab decodes them; other tools may not)".into(),
            Some("AT+CSCS=\"GSM\""),
        ),
        Some(cs) => d.add(
            "cscs",
            Verdict::Ok,
            format!("character set {cs} (PDU mode does not depend on it)"),
            None,
        ),
        None => d.add(
            "cscs",
            Verdict::Warn,
            "AT+CSCS? not answered".into(),
            None,
        ),
    }
    Ok(())
}

fn check_cnmi(m: &mut Modem, d: &mut Diagnosis) -> Result<(), ModemError> {
    let Some(cnmi) = m.optional("AT+CNMI?")? else {
        d.add(
            "cnmi",
            Verdict::Warn,
            "AT+CNMI? not answered: new messages may arrive without notice".into(),
            Some("AT+CNMI=2,1,0,1,0"),
        );
        return Ok(());
    };
    let f: Vec<u8> = fields(&cnmi)
        .iter()
        .map(|s| s.parse().unwrap_or(0))
        .collect();
    let mt = f.get(1).copied().unwrap_or(0);
    let ds = f.get(3).copied().unwrap_or(0);
    let mut notes = Vec::new();
    if mt == 0 {
        notes.push("incoming messages are stored without notice (mt=0)");
    }
    if ds == 0 {
        notes.push("status reports are not indicated (ds=0)");
    }
    if notes.is_empty() {
        d.add("cnmi", Verdict::Ok, format!("indications {cnmi}"), None);
    } else {
        d.add(
            "cnmi",
            Verdict::Warn,
            format!(
                "{cnmi}: {}; `sms watch` and `sms send --report` set AT+CNMI themselves, other tools need it set",
                notes.join(", ")
            ),
            Some("AT+CNMI=2,1,0,1,0"),
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signal_levels() {
        let s = |rssi| Signal { rssi, ber: 99 }.dbm();
        assert_eq!(s(0), Some(-113));
        assert_eq!(s(31), Some(-51));
        assert_eq!(s(20), Some(-73));
        assert_eq!(s(99), None);
    }
}
