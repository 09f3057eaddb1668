//! AT transcripts (`--trace FILE` on modem commands): every line to and from the modem with its
//! time and direction, URCs and garbage marked as such.
//!
//! Redaction happens before anything reaches a transcript, in the AT engine
//! ([`super::at::At::add_secret`]): a line that contains a registered secret — an OTP, or the
//! PDU that carries it, which a modem with echo on also sends back — is written as asterisks.
//! A transcript can then be attached to a bug report as it is, like the APDU ones.

use crate::error::{Error, Result};
use crate::trace::timestamp;
use std::io::Write;
use std::path::Path;

/// A transcript being written.
pub struct AtTrace {
    out: Box<dyn Write + Send>,
}

impl AtTrace {
    /// Creates (truncates) the trace file.
    pub fn create(path: &Path) -> Result<Self> {
        let file = std::fs::File::create(path).map_err(|source| Error::Io {
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
