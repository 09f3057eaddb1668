//! APDU transcripts (`--trace FILE`): every command and response with its time, direction and
//! decoded name, with secrets blanked out before anything is written.
//!
//! Redaction is decided here, in one place, from the command alone: the data of every
//! PIN-family command (VERIFY, CHANGE, DISABLE, ENABLE, UNBLOCK — PINs, PUKs and ADM keys), of
//! vendor key-loading commands, and of writes to files that hold keys. A transcript can then be
//! attached to a bug report without a second thought.

use crate::error::{Error, Result};
use std::io::Write;
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

/// Elementary files that hold keys on programmable cards (REFERENCE.md): sysmoUSIM-SJS1 Ki
/// (7F20/00FF) and OPc (7F20/00F7), sysmoISIM-SJA2 ADF.USIM/AF20. A515/6F20 is handled by
/// parent, since 6F20 alone is EF_Kc.
const KEY_FILES: [u16; 3] = [0x00FF, 0x00F7, 0xAF20];

/// What a trace line says about a command.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decoded {
    pub name: &'static str,
    /// The data field must not be written.
    pub secret: bool,
}

/// Follows selections so that writes to key files can be recognised.
#[derive(Clone, Debug, Default)]
pub struct Redactor {
    parent: u16,
    selected: u16,
    /// The token applet is selected: its instructions (docs/token-apdus.md) are named as its,
    /// since several reuse INS values the SIM gives other meanings.
    token: bool,
}

/// The token applet's instructions: only VERIFY PIN and CHANGE PIN carry secrets (PINs); the
/// key, Kc and K never cross the interface at all.
fn decode_token(ins: u8) -> Option<Decoded> {
    use simlab_applet::token::ins;
    let (name, secret) = match ins {
        ins::VERIFY_PIN => ("TOKEN VERIFY PIN", true),
        ins::CHANGE_PIN => ("TOKEN CHANGE PIN", true),
        ins::SIGN => ("TOKEN SIGN", false),
        ins::GENERATE_KEY => ("TOKEN GENERATE KEY", false),
        ins::GET_PUBLIC_KEY => ("TOKEN GET PUBLIC KEY", false),
        ins::BOOTSTRAP_BEGIN => ("TOKEN BOOTSTRAP BEGIN", false),
        ins::BOOTSTRAP_FINISH => ("TOKEN BOOTSTRAP FINISH", false),
        ins::GET_CERTIFICATE => ("TOKEN GET CERTIFICATE", false),
        ins::GET_INFO => ("TOKEN GET INFO", false),
        _ => return None,
    };
    Some(Decoded { name, secret })
}

impl Redactor {
    /// Names a command APDU and says whether its data is secret; tracks SELECT by FID.
    pub fn decode(&mut self, capdu: &[u8]) -> Decoded {
        let (Some(&cla), Some(&ins)) = (capdu.first(), capdu.get(1)) else {
            return Decoded {
                name: "(short APDU)",
                secret: false,
            };
        };
        let p1 = capdu.get(2).copied().unwrap_or(0);
        let data = capdu.get(5..).unwrap_or_default();
        if ins == 0xA4
            && p1 == 0x00
            && let [hi, lo, ..] = data
        {
            self.parent = self.selected;
            self.selected = u16::from_be_bytes([*hi, *lo]);
        }
        if ins == 0xA4 {
            // The card routes to the token after a UICC SELECT by (a prefix of) its AID.
            let lc = capdu.get(4).copied().unwrap_or(0) as usize;
            let aid = data.get(..lc).unwrap_or_default();
            self.token = cla != 0xA0
                && p1 == 0x04
                && !aid.is_empty()
                && simlab_applet::token::AID.starts_with(aid);
        }
        if self.token
            && cla != 0xA0
            && let Some(decoded) = decode_token(ins)
        {
            return decoded;
        }
        let key_file = KEY_FILES.contains(&self.selected)
            || (self.selected == 0x6F20 && self.parent == 0xA515);
        let (name, secret) = match (cla, ins) {
            (_, 0xA4) => ("SELECT", false),
            (_, 0xC0) => ("GET RESPONSE", false),
            (_, 0xB0) => ("READ BINARY", false),
            (_, 0xD6) => ("UPDATE BINARY", key_file),
            (_, 0xB2) => ("READ RECORD", false),
            (_, 0xDC) => ("UPDATE RECORD", key_file),
            (_, 0xF2) => ("STATUS", false),
            (_, 0x20) => ("VERIFY", true),
            (_, 0x24) => ("CHANGE PIN", true),
            (_, 0x26) => ("DISABLE PIN", true),
            (_, 0x28) => ("ENABLE PIN", true),
            (_, 0x2C) => ("UNBLOCK PIN", true),
            (0xA0, 0x88) => ("RUN GSM ALGORITHM", false),
            (_, 0x88) => ("AUTHENTICATE", false),
            (_, 0x10) => ("TERMINAL PROFILE", false),
            (_, 0xFA) => ("SLEEP", false),
            (0x80, 0xD4) => ("WRITE KEY (vendor)", true),
            (_, _) => ("(unknown)", true),
        };
        Decoded { name, secret }
    }
}

/// A transcript being written.
pub struct Trace {
    out: Box<dyn Write + Send>,
    redactor: Redactor,
    /// Who speaks: the host sends commands; an emulated card receives them.
    side: Side,
}

/// Which end of the link writes the transcript.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    Host,
    Card,
}

impl Trace {
    /// Creates (truncates) the trace file.
    pub fn create(path: &Path, side: Side) -> Result<Self> {
        let file = std::fs::File::create(path).map_err(|source| Error::Io {
            context: format!("creating trace file {}", path.display()),
            source,
        })?;
        Ok(Self::to_writer(
            Box::new(std::io::LineWriter::new(file)),
            side,
        ))
    }

    /// A trace into any writer (tests use a buffer).
    pub fn to_writer(out: Box<dyn Write + Send>, side: Side) -> Self {
        Trace {
            out,
            redactor: Redactor::default(),
            side,
        }
    }

    /// Records one exchange. Write errors are ignored: a full disk must not break the card
    /// session the trace is only observing.
    pub fn exchange(&mut self, capdu: &[u8], rapdu: &[u8]) {
        let decoded = self.redactor.decode(capdu);
        let (to_card, from_card) = match self.side {
            Side::Host => (">>", "<<"),
            Side::Card => ("<<", ">>"),
        };
        let cmd = render(capdu, decoded.secret);
        let status = rapdu
            .len()
            .checked_sub(2)
            .map(|i| simlab_applet::Status::from_u16(u16::from_be_bytes([rapdu[i], rapdu[i + 1]])));
        let now = timestamp();
        let _ = writeln!(self.out, "{now} {to_card} {cmd}  {}", decoded.name);
        let _ = writeln!(
            self.out,
            "{now} {from_card} {}  {}",
            spaced(rapdu),
            status.map_or("(no status word)", |s| s.description())
        );
    }

    /// Records an event that is not an APDU (power, reset, connection).
    pub fn note(&mut self, what: &str) {
        let _ = writeln!(self.out, "{} -- {what}", timestamp());
    }
}

fn spaced(bytes: &[u8]) -> String {
    bytes
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// The header and length fields in clear, the data as `**` per byte when secret. The data
/// field is found by parsing the APDU, so extended lengths are blanked as well as short ones; an
/// APDU that does not parse is blanked whole after its header.
fn render(capdu: &[u8], secret: bool) -> String {
    if !secret || capdu.len() <= 4 {
        return spaced(capdu);
    }
    let stars = |n: usize| vec!["**"; n].join(" ");
    let Ok(cmd) = simlab_applet::Command::parse(capdu) else {
        return format!("{} {}", spaced(&capdu[..4]), stars(capdu.len() - 4));
    };
    if cmd.data.is_empty() {
        return spaced(capdu);
    }
    let lc_len = if cmd.extended { 3 } else { 1 };
    let data_start = 4 + lc_len;
    let data_end = data_start + cmd.data.len();
    let mut parts = vec![spaced(&capdu[..data_start]), stars(cmd.data.len())];
    if data_end < capdu.len() {
        parts.push(spaced(&capdu[data_end..]));
    }
    parts.join(" ")
}

/// UTC wall-clock time with microseconds, without a date-time dependency.
pub(crate) fn timestamp() -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let secs = now.as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (y, m, d) = civil_from_days(days as i64);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:06}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60,
        now.subsec_micros()
    )
}

/// Days since 1970-01-01 to a proleptic Gregorian date (Howard Hinnant's algorithm).
pub fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    #[derive(Clone, Default)]
    struct Buf(Arc<Mutex<Vec<u8>>>);

    impl Write for Buf {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn pins_and_key_writes_are_blanked() {
        let buf = Buf::default();
        let mut t = Trace::to_writer(Box::new(buf.clone()), Side::Host);
        t.exchange(
            &[
                0x00, 0x20, 0x00, 0x01, 0x08, b'1', b'2', b'3', b'4', 0xFF, 0xFF, 0xFF, 0xFF,
            ],
            &[0x90, 0x00],
        );
        t.exchange(&[0xA0, 0xA4, 0x00, 0x00, 0x02, 0x00, 0xFF], &[0x9F, 0x0F]);
        t.exchange(&[0xA0, 0xD6, 0x00, 0x00, 0x02, 0x5A, 0xA5], &[0x90, 0x00]);
        t.exchange(&[0x80, 0xD4, 0x02, 0x00, 0x02, 0x77, 0x66], &[0x90, 0x00]);
        t.exchange(&[0xA0, 0x88, 0x00, 0x00, 0x02, 0x11, 0x22], &[0x9F, 0x0C]);
        let text = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
        assert!(
            text.contains(">> 00 20 00 01 08 ** ** ** ** ** ** ** **  VERIFY"),
            "{text}"
        );
        for secret in ["31 32", "5A A5", "77 66"] {
            assert!(!text.contains(secret), "{secret} leaked: {text}");
        }
        assert!(text.contains("11 22  RUN GSM ALGORITHM"));
        assert!(text.contains("<< 9F 0C  response bytes available"));
    }

    #[test]
    fn token_pins_are_blanked_and_token_instructions_named() {
        let buf = Buf::default();
        let mut t = Trace::to_writer(Box::new(buf.clone()), Side::Host);
        let aid = simlab_applet::token::AID;
        let select = [&[0x00, 0xA4, 0x04, 0x00, aid.len() as u8][..], &aid].concat();
        t.exchange(&select, &[0x61, 0x0D]);
        let pin = [
            0x00, 0x20, 0x00, 0x80, 0x08, b'4', b'7', b'1', b'1', 0xFF, 0xFF, 0xFF, 0xFF,
        ];
        t.exchange(&pin, &[0x90, 0x00]);
        let change = [
            &[0x00, 0x24, 0x00, 0x80, 0x10][..],
            b"4711\xFF\xFF\xFF\xFF",
            b"8642\xFF\xFF\xFF\xFF",
        ]
        .concat();
        t.exchange(&change, &[0x90, 0x00]);
        t.exchange(&[0x10, 0x2A, 0x9E, 0x9A, 0x02, 0xAB, 0xCD], &[0x90, 0x00]);
        t.exchange(&[0x00, 0x48, 0x00, 0x00, 0x00], &[0x61, 0x41]);
        // Another SELECT leaves the token: 2A is no longer its SIGN.
        t.exchange(&[0x00, 0xA4, 0x00, 0x04, 0x02, 0x3F, 0x00], &[0x61, 0x20]);
        t.exchange(&[0x00, 0x2A, 0x9E, 0x9A, 0x01, 0x11], &[0x6D, 0x00]);
        let text = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
        for secret in ["34 37 31 31", "38 36 34 32"] {
            assert!(!text.contains(secret), "{secret} leaked: {text}");
        }
        assert!(
            text.contains("** ** ** ** ** ** ** **  TOKEN VERIFY PIN"),
            "{text}"
        );
        assert!(text.contains("TOKEN CHANGE PIN"), "{text}");
        assert!(text.contains("10 2A 9E 9A 02 AB CD  TOKEN SIGN"), "{text}");
        assert!(text.contains("TOKEN GET PUBLIC KEY"), "{text}");
        assert!(text.contains("00 2A 9E 9A 01 **  (unknown)"), "{text}");
    }

    #[test]
    fn dates_are_right() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(20_778), (2026, 11, 21));
    }
}
