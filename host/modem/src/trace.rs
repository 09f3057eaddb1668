//! AT transcripts (`--trace FILE` on modem commands): every line to and from the modem with its
//! time and direction, URCs and garbage marked as such.
//!
//! Redaction happens before anything reaches a transcript, in the AT engine
//! ([`super::at::At::add_secret`]): a line that contains a registered secret — an OTP, or the
//! PDU that carries it, which a modem with echo on also sends back — is written as asterisks.
//! A transcript can then be attached to a bug report as it is, like the APDU ones.

use crate::ModemError;
use std::io::Write;
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

/// A transcript being written.
pub struct AtTrace {
    out: Box<dyn Write + Send>,
}

impl AtTrace {
    /// Creates (truncates) the trace file.
    pub fn create(path: &Path) -> Result<Self, ModemError> {
        let file = std::fs::File::create(path).map_err(|source| ModemError::Io {
            context: format!("creating trace file {}", path.display()),
            source,
        })?;
        Ok(Self::to_writer(Box::new(std::io::LineWriter::new(file))))
    }

    /// A trace into any writer (tests use a buffer).
    pub fn to_writer(out: Box<dyn Write + Send>) -> Self {
        AtTrace { out }
    }

    /// A line the host sent (already redacted).
    pub fn sent(&mut self, line: &str) {
        self.write(">>", line);
    }

    /// A line of a reply (already redacted).
    pub fn received(&mut self, line: &str) {
        self.write("<<", line);
    }

    /// An unsolicited result code.
    pub fn urc(&mut self, line: &str) {
        self.write("<<", &format!("{line}  (URC)"));
    }

    /// Bytes that were not a text line.
    pub fn garbage(&mut self, bytes: &[u8]) {
        let shown: Vec<String> = bytes.iter().take(64).map(|b| format!("{b:02X}")).collect();
        let more = if bytes.len() > 64 { " …" } else { "" };
        self.write(
            "<<",
            &format!(
                "{}{more}  (garbage, {} bytes)",
                shown.join(" "),
                bytes.len()
            ),
        );
    }

    /// An event that is not a line: prompt, ESC, retries, timeouts.
    pub fn note(&mut self, what: &str) {
        self.write("--", what);
    }

    /// Write errors are ignored: a full disk must not break the modem session the trace is
    /// only observing.
    fn write(&mut self, dir: &str, text: &str) {
        let _ = writeln!(self.out, "{} {dir} {text}", timestamp());
    }
}

/// UTC wall-clock time with microseconds, without a date-time dependency; the same format as
/// simlab-card's APDU traces, kept here so the modem needs nothing from the card side.
fn timestamp() -> String {
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
fn civil_from_days(z: i64) -> (i64, u32, u32) {
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
