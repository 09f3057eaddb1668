//! Unsolicited result codes, and how a line is told apart from a reply.
//!
//! A modem sends URCs whenever something happens — a message arrived (`+CMTI`), a status
//! report came back (`+CDS`), registration changed (`+CREG`), vendor chatter (`^RSSI`,
//! `+QIND`, `RDY`, `SMS Ready`) — including between the lines of a reply to a command. The
//! rule applied by the AT engine (see [`classify`]):
//!
//! * a line `+NAME: …` or `^NAME: …` belongs to the command only when the command is `NAME`
//!   (or a known alias, e.g. `+ICCID:` answering `AT+CCID`); any other prefixed line is a URC;
//! * the registration codes are the one overlap: `AT+CREG?` answers `+CREG: <n>,<stat>…` while
//!   the URC is `+CREG: <stat>[,"<lac>",…]`, so the shape decides;
//! * a few bare words (`RING`, `RDY`, `SMS Ready`, …) are always URCs;
//! * `+CMT:` and `+CDS:` carry their PDU on the next line, which is part of the URC.

use crate::syntax::{fields, unquote};

/// An unsolicited result code.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Urc {
    /// `+CMTI: <mem>,<index>`: a message was stored at `index`.
    MessageStored { storage: String, index: u32 },
    /// `+CMT: [<alpha>],<length>` and the PDU line: a message delivered directly.
    Message { length: usize, pdu: String },
    /// `+CDS: <length>` and the PDU line: a status report delivered directly.
    StatusReport { length: usize, pdu: String },
    /// `+CDSI: <mem>,<index>`: a status report was stored at `index`.
    StatusReportStored { storage: String, index: u32 },
    /// `+CREG`, `+CGREG`, `+CEREG`: registration state changed (`stat` as in TS 27.007).
    Registration { name: String, stat: u8 },
    /// `RING`.
    Ring,
    /// Anything else: vendor URCs, boot messages, and URCs whose fields did not parse.
    Other(String),
}

impl Urc {
    /// A one-line rendering for traces and logs.
    pub fn describe(&self) -> String {
        match self {
            Urc::MessageStored { storage, index } => format!("+CMTI {storage} {index}"),
            Urc::Message { length, .. } => format!("+CMT ({length}-octet PDU)"),
            Urc::StatusReport { length, .. } => format!("+CDS ({length}-octet PDU)"),
            Urc::StatusReportStored { storage, index } => format!("+CDSI {storage} {index}"),
            Urc::Registration { name, stat } => format!("{name} stat {stat}"),
            Urc::Ring => "RING".into(),
            Urc::Other(line) => line.clone(),
        }
    }
}

/// Words that are URCs whenever they appear on a line of their own.
const BARE_URCS: &[&str] = &[
    "RING",
    "RDY",
    "SMS Ready",
    "Call Ready",
    "SMS DONE",
    "PB DONE",
    "+PBREADY",
    "NORMAL POWER DOWN",
    "POWERED DOWN",
];

/// Prefixes that answer a command of another name on some firmware.
const ALIASES: &[(&str, &str)] = &[
    ("+CCID", "+ICCID"),
    ("+CCID", "^ICCID"),
    ("+CCID", "+QCCID"),
    ("+CGSN", "+GSN"),
    ("+CIMI", "+IMSI"),
];

/// Registration codes whose query reply and URC share a prefix.
const REGISTRATION: &[&str] = &["+CREG", "+CGREG", "+CEREG", "+C5GREG"];

/// The result-code prefix a command's reply lines carry: `AT+CMGL=4` → `+CMGL`,
/// `AT^SYSINFO` → `^SYSINFO`; `None` for basic commands (`ATI`, `AT`) whose replies are bare.
pub fn owner(command: &str) -> Option<&str> {
    let rest = command.get(2..).filter(|_| {
        command
            .get(..2)
            .is_some_and(|at| at.eq_ignore_ascii_case("AT"))
    })?;
    if !rest.starts_with(['+', '^', '$', '%', '*']) {
        return None;
    }
    let end = rest
        .find(|c: char| {
            !(c.is_ascii_alphanumeric() || matches!(c, '+' | '^' | '$' | '%' | '*' | '_'))
                || c == '='
                || c == '?'
        })
        .unwrap_or(rest.len());
    rest.get(..end).filter(|s| s.len() > 1)
}

/// What a line read while a command runs (or none does) is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Part of the reply.
    Reply,
    /// A URC complete in this line.
    Urc(Urc),
    /// The first line of a `+CMT`/`+CDS` URC; the next line is its PDU.
    UrcHeader(PduUrc),
}

/// A URC waiting for its PDU line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PduUrc {
    Message { length: usize },
    StatusReport { length: usize },
}

impl PduUrc {
    /// The complete URC once the PDU line arrived.
    pub fn with_pdu(self, pdu: &str) -> Urc {
        let pdu = pdu.trim().to_string();
        match self {
            PduUrc::Message { length } => Urc::Message { length, pdu },
            PduUrc::StatusReport { length } => Urc::StatusReport { length, pdu },
        }
    }
}

/// Classifies a line that is not a final result code. `command` is the command whose reply is
/// being read, or `None` when the modem speaks unprompted (then every line is a URC).
pub fn classify(line: &str, command: Option<&str>) -> Kind {
    if BARE_URCS.iter().any(|u| u.eq_ignore_ascii_case(line)) {
        return Kind::Urc(parse(line));
    }
    let Some(name) = prefix(line) else {
        return match command {
            Some(_) => Kind::Reply,
            None => Kind::Urc(Urc::Other(line.to_string())),
        };
    };
    if let Some(cmd) = command
        && let Some(own) = owner(cmd)
    {
        let owned = own.eq_ignore_ascii_case(name)
            || ALIASES
                .iter()
                .any(|(c, alias)| c.eq_ignore_ascii_case(own) && alias.eq_ignore_ascii_case(name));
        if owned {
            let registration = REGISTRATION.iter().any(|r| r.eq_ignore_ascii_case(name));
            if !registration {
                return Kind::Reply;
            }
            // Only the query answers with a registration line, and its shape differs.
            if cmd.ends_with('?') && !registration_urc_shape(line) {
                return Kind::Reply;
            }
        }
    }
    let arg = args(line);
    match name.to_ascii_uppercase().as_str() {
        "+CMT" => match fields(arg).last().and_then(|l| l.parse().ok()) {
            Some(length) => Kind::UrcHeader(PduUrc::Message { length }),
            None => Kind::Urc(Urc::Other(line.to_string())),
        },
        "+CDS" => match fields(arg).last().and_then(|l| l.parse().ok()) {
            Some(length) => Kind::UrcHeader(PduUrc::StatusReport { length }),
            None => Kind::Urc(Urc::Other(line.to_string())),
        },
        _ => Kind::Urc(parse(line)),
    }
}

/// Parses a complete one-line URC.
pub fn parse(line: &str) -> Urc {
    if line.eq_ignore_ascii_case("RING") {
        return Urc::Ring;
    }
    let Some(name) = prefix(line) else {
        return Urc::Other(line.to_string());
    };
    let f = fields(args(line));
    let upper = name.to_ascii_uppercase();
    let parsed = match upper.as_str() {
        "+CMTI" | "+CDSI" => match (f.first(), f.get(1).and_then(|i| i.parse().ok())) {
            (Some(mem), Some(index)) if f.len() == 2 => {
                let storage = unquote(mem).to_string();
                Some(if upper == "+CMTI" {
                    Urc::MessageStored { storage, index }
                } else {
                    Urc::StatusReportStored { storage, index }
                })
            }
            _ => None,
        },
        _ if REGISTRATION.contains(&upper.as_str()) => {
            f.first()
                .and_then(|s| s.parse().ok())
                .map(|stat| Urc::Registration {
                    name: upper.clone(),
                    stat,
                })
        }
        _ => None,
    };
    parsed.unwrap_or_else(|| Urc::Other(line.to_string()))
}

/// `+CREG: 1` and `+CREG: 1,"00C3","0010AB12",7` are URCs; `+CREG: 0,1` answers a query.
fn registration_urc_shape(line: &str) -> bool {
    let f = fields(args(line));
    f.len() == 1 || f.get(1).is_some_and(|s| s.starts_with('"'))
}

/// The `+NAME` / `^NAME` before the colon, if the line has that form.
pub fn prefix(line: &str) -> Option<&str> {
    if !line.starts_with(['+', '^', '$', '%', '*']) {
        return None;
    }
    let colon = line.find(':')?;
    let name = line.get(..colon)?;
    (name.len() > 1
        && name[1..]
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_'))
    .then_some(name)
}

/// Everything after `NAME:`, trimmed.
pub fn args(line: &str) -> &str {
    line.split_once(':').map_or("", |(_, rest)| rest.trim())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owners() {
        assert_eq!(owner("AT+CMGL=4"), Some("+CMGL"));
        assert_eq!(owner("AT+CREG?"), Some("+CREG"));
        assert_eq!(owner("at^sysinfo"), Some("^sysinfo"));
        assert_eq!(owner("AT+CMGS=24"), Some("+CMGS"));
        assert_eq!(owner("ATI"), None);
        assert_eq!(owner("AT"), None);
        assert_eq!(owner("AT+"), None);
        assert_eq!(owner("X"), None);
    }

    #[test]
    fn prefixed_lines_of_other_commands_are_urcs() {
        let cmd = Some("AT+CSQ");
        assert_eq!(classify("+CSQ: 20,99", cmd), Kind::Reply);
        assert_eq!(
            classify("+CMTI: \"SM\",3", cmd),
            Kind::Urc(Urc::MessageStored {
                storage: "SM".into(),
                index: 3
            })
        );
        assert_eq!(
            classify("^RSSI: 17", cmd),
            Kind::Urc(Urc::Other("^RSSI: 17".into()))
        );
        assert_eq!(
            classify("RDY", Some("AT+CIMI")),
            Kind::Urc(Urc::Other("RDY".into()))
        );
        assert_eq!(classify("001010123456789", Some("AT+CIMI")), Kind::Reply);
        assert_eq!(classify("+ICCID: 8988", Some("AT+CCID")), Kind::Reply);
        assert_eq!(
            classify("+QIND: SMS DONE", Some("AT+CIMI")),
            Kind::Urc(Urc::Other("+QIND: SMS DONE".into()))
        );
        assert_eq!(classify("RING", None), Kind::Urc(Urc::Ring));
        assert_eq!(
            classify("hello", None),
            Kind::Urc(Urc::Other("hello".into()))
        );
    }

    #[test]
    fn registration_query_and_urc_are_told_apart_by_shape() {
        let q = Some("AT+CREG?");
        assert_eq!(classify("+CREG: 0,1", q), Kind::Reply);
        assert_eq!(
            classify("+CREG: 2,1,\"00C3\",\"0010AB12\",7", q),
            Kind::Reply
        );
        let urc = Kind::Urc(Urc::Registration {
            name: "+CREG".into(),
            stat: 5,
        });
        assert_eq!(classify("+CREG: 5", q), urc);
        assert_eq!(classify("+CREG: 5,\"00C3\",\"0010AB12\",7", q), urc);
        assert_eq!(classify("+CREG: 5", Some("AT+CREG=1")), urc);
        assert_eq!(classify("+CREG: 5", None), urc);
    }

    #[test]
    fn pdu_urcs_announce_a_second_line() {
        assert_eq!(
            classify("+CMT: ,24", Some("AT+CMGL=4")),
            Kind::UrcHeader(PduUrc::Message { length: 24 })
        );
        assert_eq!(
            classify("+CMT: \"+4917\",24", None),
            Kind::UrcHeader(PduUrc::Message { length: 24 })
        );
        assert_eq!(
            classify("+CDS: 25", None),
            Kind::UrcHeader(PduUrc::StatusReport { length: 25 })
        );
        assert_eq!(
            classify("+CDS: x", None),
            Kind::Urc(Urc::Other("+CDS: x".into()))
        );
        assert_eq!(
            PduUrc::Message { length: 2 }.with_pdu(" 0011 "),
            Urc::Message {
                length: 2,
                pdu: "0011".into()
            }
        );
    }

    #[test]
    fn malformed_urcs_are_kept_as_text() {
        assert_eq!(parse("+CMTI: \"SM\""), Urc::Other("+CMTI: \"SM\"".into()));
        assert_eq!(
            parse("+CMTI: \"SM\",x"),
            Urc::Other("+CMTI: \"SM\",x".into())
        );
        assert_eq!(parse("+CREG:"), Urc::Other("+CREG:".into()));
        assert_eq!(
            parse("+CDSI: \"SR\",7"),
            Urc::StatusReportStored {
                storage: "SR".into(),
                index: 7
            }
        );
    }

    #[test]
    fn prefixes() {
        assert_eq!(prefix("+CSQ: 1"), Some("+CSQ"));
        assert_eq!(prefix("+CSQ 1"), None);
        assert_eq!(prefix("+: 1"), None);
        assert_eq!(prefix("http://x"), None);
    }
}
