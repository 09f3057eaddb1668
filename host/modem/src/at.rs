//! The AT engine: one command at a time over a serial port, with everything real modems do
//! around it.
//!
//! * Replies are read until a final result code (`OK`, `ERROR`, `+CME ERROR`, `+CMS ERROR`,
//!   and the V.250 call codes); the lines before it are the reply.
//! * Unsolicited result codes that arrive before or between reply lines are recognised (see
//!   [`super::urc`]) and routed to every [`At::subscribe`]r, never taken for a reply.
//! * Bytes arrive in any split; [`LineReader`] reassembles lines and spots the `> ` prompt.
//! * Every wait has a deadline ([`Timeouts`]): the prompt, the `+CMGS` that can take tens of
//!   seconds, ordinary commands.
//! * A prompt that never came, or a modem stuck waiting for more PDU, is aborted with ESC and
//!   the engine resynchronises with `AT`, so the next command is not swallowed as PDU text.
//! * `+CME ERROR: 14` / `+CMS ERROR: 314` (SIM busy, while the SIM initialises) is retried
//!   with backoff, for at most [`Timeouts::sim_busy`].
//! * An echo of the command (echo on, or a modem that ignores `ATE0`) is recognised and
//!   dropped, the echoed PDU included.
//! * Garbage (invalid UTF-8, control bytes, endless lines) is traced and skipped.
//!
//! The engine is synchronous and owns its port; URCs are delivered through channels so a
//! caller can collect them while it issues commands (`sms send --report` waits for `+CDS`
//! that way).

use super::ModemError;
use super::codes::{CmeError, CmsError};
use super::line::{LineReader, Piece};
use super::trace::AtTrace;
use super::urc::{self, Kind, PduUrc, Urc};
use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Ctrl-Z: ends the PDU after the prompt.
pub const CTRL_Z: u8 = 0x1A;
/// ESC: abandons the prompt without sending.
pub const ESC: u8 = 0x1B;

/// A byte stream to a modem. Implemented for the serial port, and for test doubles.
pub trait AtPort: Send {
    /// Reads what has arrived, waiting at most `timeout`; `Ok(0)` means nothing arrived in
    /// time. A closed or vanished device is an error, never `Ok(0)`.
    fn read_timeout(&mut self, buf: &mut [u8], timeout: Duration) -> io::Result<usize>;
    /// Writes all of `bytes`.
    fn write_all_bytes(&mut self, bytes: &[u8]) -> io::Result<()>;
}

impl AtPort for serialport::TTYPort {
    fn read_timeout(&mut self, buf: &mut [u8], timeout: Duration) -> io::Result<usize> {
        use serialport::SerialPort;
        self.set_timeout(timeout.max(Duration::from_millis(1)))
            .map_err(io::Error::from)?;
        match io::Read::read(self, buf) {
            Ok(0) => Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "end of file on the port",
            )),
            Ok(n) => Ok(n),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock
                ) =>
            {
                Ok(0)
            }
            Err(e) => Err(gone(e)),
        }
    }

    fn write_all_bytes(&mut self, bytes: &[u8]) -> io::Result<()> {
        use serialport::SerialPort;
        self.set_timeout(WRITE_TIMEOUT).map_err(io::Error::from)?;
        io::Write::write_all(self, bytes).map_err(|e| {
            if e.kind() == io::ErrorKind::TimedOut {
                e
            } else {
                gone(e)
            }
        })?;
        io::Write::flush(self).or_else(|e| {
            // tcdrain on a pty whose other end is slow may be interrupted; the bytes are
            // queued either way.
            if e.kind() == io::ErrorKind::Other {
                Ok(())
            } else {
                Err(e)
            }
        })
    }
}

/// serialport reports EIO (the other end of a pty closed, a USB modem unplugged) as a plain
/// "I/O error" and a hang-up as BrokenPipe; on a serial device every such failure means the
/// device is gone, so they all become BrokenPipe, which the engine reports as
/// [`ModemError::Vanished`].
fn gone(e: io::Error) -> io::Error {
    if e.kind() == io::ErrorKind::Interrupted {
        return e;
    }
    io::Error::new(io::ErrorKind::BrokenPipe, e.to_string())
}

/// How long a write may block (the modem not reading, hardware flow control stuck).
const WRITE_TIMEOUT: Duration = Duration::from_secs(5);

/// Deadlines, one per kind of wait. The defaults suit real USB modems; tests shorten them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timeouts {
    /// An ordinary command's final result code.
    pub command: Duration,
    /// Slow commands: `+CMGL`, `+CMGD` of many messages, `+COPS`, `+CFUN`.
    pub long: Duration,
    /// The answer to the `AT` that finds out whether anything listens.
    pub probe: Duration,
    /// The `> ` prompt after `AT+CMGS=<n>`.
    pub prompt: Duration,
    /// `+CMGS: <mr>` after the PDU: the network round trip, tens of seconds on a bad day.
    pub submit: Duration,
    /// Retrying SIM busy (`+CME ERROR: 14`) for at most this long.
    pub sim_busy: Duration,
    /// The modem's answer to an ESC.
    pub abort: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            command: Duration::from_secs(10),
            long: Duration::from_secs(30),
            probe: Duration::from_secs(1),
            prompt: Duration::from_secs(10),
            submit: Duration::from_secs(60),
            sim_busy: Duration::from_secs(30),
            abort: Duration::from_secs(2),
        }
    }
}

/// What a failed wait was waiting for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stage {
    /// The final result code of a command.
    Reply,
    /// The `> ` prompt.
    Prompt,
    /// `+CMGS: <mr>` after the PDU was sent: the message may or may not have gone out.
    Submit,
}

/// The information lines of a successful reply (final `OK`), URCs and echo removed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Response {
    pub lines: Vec<String>,
}

impl Response {
    /// The arguments of the first line with `prefix` (e.g. `+CSQ`), trimmed.
    pub fn info(&self, prefix: &str) -> Option<&str> {
        self.lines.iter().find_map(|l| strip_prefix(l, prefix))
    }

    /// The first line without a `+NAME:` prefix (the bare answers of `AT+CGMI`, `AT+CIMI`).
    pub fn bare(&self) -> Option<&str> {
        self.lines
            .iter()
            .map(String::as_str)
            .find(|l| urc::prefix(l).is_none())
    }
}

fn strip_prefix<'a>(line: &'a str, prefix: &str) -> Option<&'a str> {
    let head = line.get(..prefix.len())?;
    if !head.eq_ignore_ascii_case(prefix) {
        return None;
    }
    line[prefix.len()..].strip_prefix(':').map(str::trim)
}

/// A final result code.
enum Final {
    Ok,
    Error,
    Cme(CmeError),
    Cms(CmsError),
    /// V.250 codes that end a command unsuccessfully (`NO CARRIER`, `BUSY`, …) and vendor
    /// spellings of ERROR.
    Other(String),
}

fn final_code(line: &str) -> Option<Final> {
    let upper = line.to_ascii_uppercase();
    if upper == "OK" {
        return Some(Final::Ok);
    }
    if upper == "ERROR" {
        return Some(Final::Error);
    }
    if let Some(arg) = strip_prefix(line, "+CME ERROR") {
        return Some(Final::Cme(
            CmeError::parse(arg).unwrap_or(CmeError::UNKNOWN),
        ));
    }
    if let Some(arg) = strip_prefix(line, "+CMS ERROR") {
        return Some(Final::Cms(
            CmsError::parse(arg).unwrap_or(CmsError::UNKNOWN),
        ));
    }
    const OTHERS: [&str; 6] = [
        "NO CARRIER",
        "BUSY",
        "NO ANSWER",
        "NO DIALTONE",
        "COMMAND NOT SUPPORT",
        "TOO MANY PARAMETERS",
    ];
    OTHERS
        .contains(&upper.as_str())
        .then(|| Final::Other(line.to_string()))
}

/// Whether `line` is a final result code that ends a command (`OK`, `ERROR`, `+CME ERROR: …`,
/// `NO CARRIER`, …), and if so whether it reports success. Public only so that the fuzz target
/// `at_lines` reaches the private parser every line of a reply goes through.
pub fn final_result(line: &str) -> Option<bool> {
    final_code(line).map(|f| matches!(f, Final::Ok))
}

/// What [`At::read_reply`] stopped at.
enum Got {
    Done(Response),
    Prompt,
}

/// The AT engine over one port. See the module documentation.
pub struct At {
    port: Box<dyn AtPort>,
    reader: LineReader,
    subscribers: Vec<mpsc::Sender<Urc>>,
    trace: Option<AtTrace>,
    secrets: Vec<String>,
    /// The deadlines in force.
    pub timeouts: Timeouts,
    pending_urc: Option<PduUrc>,
    stop: Option<&'static AtomicBool>,
    garbage: usize,
    buf: Vec<u8>,
    /// A command timed out: its late answer may still arrive, and must not be taken for the
    /// next command's.
    desync: bool,
}

impl At {
    pub fn new(port: Box<dyn AtPort>) -> Self {
        At {
            port,
            reader: LineReader::new(),
            subscribers: Vec::new(),
            trace: None,
            secrets: Vec::new(),
            timeouts: Timeouts::default(),
            pending_urc: None,
            stop: None,
            garbage: 0,
            buf: vec![0; 1024],
            desync: false,
        }
    }

    /// Records every line from now on.
    pub fn set_trace(&mut self, trace: AtTrace) {
        self.trace = Some(trace);
    }

    /// Adds a note to the transcript, if there is one.
    pub fn note(&mut self, what: &str) {
        if let Some(t) = &mut self.trace {
            t.note(what);
        }
    }

    /// A flag that, once set (by a signal handler), makes every wait return
    /// [`ModemError::Interrupted`].
    pub fn set_stop(&mut self, flag: &'static AtomicBool) {
        self.stop = Some(flag);
    }

    /// From now on, any line containing `secret` (case-insensitively) is blanked in traces and
    /// error messages. Used for OTPs and the PDUs that carry them.
    pub fn add_secret(&mut self, secret: &str) {
        if !secret.is_empty() {
            self.secrets.push(secret.to_ascii_uppercase());
        }
    }

    /// A line as it may be shown: blanked when it contains a secret.
    pub fn redact(&self, line: &str) -> String {
        let upper = line.to_ascii_uppercase();
        if self.secrets.iter().any(|s| upper.contains(s.as_str())) {
            format!("** ({} characters blanked)", line.chars().count())
        } else {
            line.to_string()
        }
    }

    /// A new receiver of every URC from now on.
    pub fn subscribe(&mut self) -> mpsc::Receiver<Urc> {
        let (tx, rx) = mpsc::channel();
        self.subscribers.push(tx);
        rx
    }

    /// Garbage pieces seen so far.
    pub fn garbage_seen(&self) -> usize {
        self.garbage
    }

    /// Runs a command with the timeout its kind needs, retrying while the SIM is busy.
    pub fn command(&mut self, cmd: &str) -> Result<Response, ModemError> {
        let timeout = self.timeout_for(cmd);
        self.command_timeout(cmd, timeout)
    }

    /// Runs a command with an explicit timeout, retrying while the SIM is busy.
    pub fn command_timeout(
        &mut self,
        cmd: &str,
        timeout: Duration,
    ) -> Result<Response, ModemError> {
        self.retry_busy(cmd, |at| at.attempt(cmd, timeout))
    }

    /// `AT+CMGS=<n>` (or any command that prompts), then `pdu_hex` and Ctrl-Z; returns the
    /// reply (`+CMGS: <mr>`). Before the prompt nothing has been sent: errors there are safe to
    /// report as "not sent". After the PDU, a timeout is [`Stage::Submit`]: unconfirmed.
    pub fn submit(&mut self, cmd: &str, pdu_hex: &str) -> Result<Response, ModemError> {
        self.retry_busy(cmd, |at| at.attempt_submit(cmd, pdu_hex))
    }

    /// Reads and dispatches URCs for up to `timeout`, returning early once at least one was
    /// dispatched. Returns how many.
    pub fn poll(&mut self, timeout: Duration) -> Result<usize, ModemError> {
        let deadline = Instant::now() + timeout;
        let mut count = 0;
        loop {
            while let Some(piece) = self.reader.next(false) {
                match piece {
                    Piece::Garbage(g) => self.on_garbage(&g),
                    Piece::Prompt => {}
                    Piece::Line(line) => {
                        if let Some(p) = self.pending_urc.take() {
                            self.dispatch(p.with_pdu(&line));
                            count += 1;
                            continue;
                        }
                        if final_code(&line).is_some() {
                            // A reply to nothing (a command abandoned earlier): shown, ignored.
                            self.trace_received(&format!("{line}  (stray)"));
                            continue;
                        }
                        match urc::classify(&line, None) {
                            Kind::Urc(u) => {
                                self.dispatch(u);
                                count += 1;
                            }
                            Kind::UrcHeader(p) => self.pending_urc = Some(p),
                            Kind::Reply => {}
                        }
                    }
                }
            }
            let now = Instant::now();
            if count > 0 && self.reader.pending().is_empty() && self.pending_urc.is_none() {
                return Ok(count);
            }
            if now >= deadline {
                return Ok(count);
            }
            self.fill(deadline - now)?;
        }
    }

    /// Discards whatever the modem sends until it has been quiet for `quiet` (at most `max`):
    /// leftovers of a previous session, boot messages. URCs among them are still dispatched.
    pub fn drain(&mut self, quiet: Duration, max: Duration) -> Result<(), ModemError> {
        let end = Instant::now() + max;
        loop {
            let now = Instant::now();
            if now >= end {
                break;
            }
            let got = self.fill(quiet.min(end - now))?;
            if got == 0 {
                break;
            }
        }
        self.poll(Duration::ZERO)?;
        // A partial line left over is junk from before this session.
        if !self.reader.pending().is_empty() {
            let junk = self.reader.pending().to_vec();
            self.on_garbage(&junk);
            self.reader.clear();
        }
        Ok(())
    }

    /// Finds out whether an AT interpreter listens: ESC (in case a previous session left the
    /// modem in the prompt), then `AT` up to `tries` times with the probe timeout.
    pub fn sync(&mut self, tries: usize) -> Result<(), ModemError> {
        self.write(&[ESC])?;
        self.note("ESC (leave any prompt a previous session left open)");
        self.drain(Duration::from_millis(100), Duration::from_secs(1))?;
        let mut last = None;
        for _ in 0..tries.max(1) {
            match self.attempt("AT", self.timeouts.probe) {
                Ok(_) => return Ok(()),
                Err(e @ (ModemError::Vanished { .. } | ModemError::Interrupted)) => return Err(e),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or(ModemError::NoAnswer {
            port: String::new(),
        }))
    }

    fn timeout_for(&self, cmd: &str) -> Duration {
        let upper = cmd.to_ascii_uppercase();
        const SLOW: [&str; 5] = ["AT+CMGL", "AT+CMGD", "AT+COPS", "AT+CFUN", "AT+CPMS"];
        if SLOW.iter().any(|s| upper.starts_with(s)) {
            self.timeouts.long
        } else {
            self.timeouts.command
        }
    }

    fn retry_busy(
        &mut self,
        cmd: &str,
        mut attempt: impl FnMut(&mut Self) -> Result<Response, ModemError>,
    ) -> Result<Response, ModemError> {
        let start = Instant::now();
        let mut delay = Duration::from_millis(200);
        loop {
            let result = attempt(self);
            let busy = match &result {
                Err(ModemError::Cme { error, .. }) => error.is_busy(),
                Err(ModemError::Cms { error, .. }) => error.is_busy(),
                _ => false,
            };
            if !busy || start.elapsed() + delay > self.timeouts.sim_busy {
                return result;
            }
            self.note(&format!(
                "SIM busy: retrying {cmd} in {} ms",
                delay.as_millis()
            ));
            // Keep listening meanwhile: the "ready" URC often arrives now.
            let until = Instant::now() + delay;
            while Instant::now() < until {
                self.poll(until.saturating_duration_since(Instant::now()))?;
            }
            delay = (delay * 2).min(Duration::from_secs(2));
        }
    }

    /// After a timeout: wait for the late answer to arrive and be discarded (URCs among it
    /// still dispatched), then make sure the modem answers `AT` again.
    fn resync(&mut self) -> Result<(), ModemError> {
        if !self.desync {
            return Ok(());
        }
        self.desync = false;
        self.note("resynchronising after a timeout");
        self.drain(Duration::from_millis(200), Duration::from_secs(2))?;
        let probe = self.timeouts.probe;
        if let Err(e @ (ModemError::Vanished { .. } | ModemError::Interrupted)) =
            self.attempt("AT", probe)
        {
            return Err(e);
        }
        self.desync = false;
        self.drain(Duration::from_millis(50), Duration::from_millis(500))
    }

    fn attempt(&mut self, cmd: &str, timeout: Duration) -> Result<Response, ModemError> {
        self.resync()?;
        let deadline = Instant::now() + timeout;
        self.send_line(cmd)?;
        match self.read_reply(cmd, &[cmd], deadline, false, Stage::Reply)? {
            Got::Done(r) => Ok(r),
            Got::Prompt => unreachable_prompt(cmd),
        }
    }

    fn attempt_submit(&mut self, cmd: &str, pdu_hex: &str) -> Result<Response, ModemError> {
        self.resync()?;
        let deadline = Instant::now() + self.timeouts.prompt;
        self.send_line(cmd)?;
        match self.read_reply(cmd, &[cmd], deadline, true, Stage::Prompt) {
            Ok(Got::Prompt) => {}
            Ok(Got::Done(_)) => {
                // OK without a prompt: nothing was asked for, nothing was sent.
                return Err(ModemError::Malformed {
                    command: cmd.to_string(),
                    reason: "the modem answered OK without the > prompt".into(),
                });
            }
            Err(e @ ModemError::Timeout { .. }) => {
                // Nothing was typed after the prompt, so nothing can have been sent.
                let _ = self.abort_prompt(cmd);
                return Err(e);
            }
            Err(e) => return Err(e),
        }
        self.trace_pdu(pdu_hex);
        let mut bytes = Vec::with_capacity(pdu_hex.len() + 1);
        bytes.extend_from_slice(pdu_hex.as_bytes());
        bytes.push(CTRL_Z);
        self.write(&bytes)?;
        let deadline = Instant::now() + self.timeouts.submit;
        match self.read_reply(cmd, &[pdu_hex, cmd], deadline, false, Stage::Submit) {
            Ok(Got::Done(r)) => Ok(r),
            Ok(Got::Prompt) => unreachable_prompt(cmd),
            Err(e @ ModemError::Timeout { .. }) => {
                // The modem may still sit in the prompt waiting for more PDU: leave it. If the
                // confirmation was only late, it arrives now and the part did go out.
                match self.abort_prompt(cmd) {
                    Some(r) => {
                        self.note("late +CMGS after ESC: the message went out");
                        Ok(r)
                    }
                    None => Err(e),
                }
            }
            Err(e) => Err(e),
        }
    }

    /// ESC, then a short wait for the modem's answer, then `AT` to be sure it listens again.
    /// Returns the reply if what arrived was in fact a late `+CMGS: <mr>` and `OK` (the
    /// message did go out); otherwise the caller reports the original failure.
    fn abort_prompt(&mut self, cmd: &str) -> Option<Response> {
        self.note("ESC (abort the prompt)");
        if self.write(&[ESC]).is_err() {
            return None;
        }
        let deadline = Instant::now() + self.timeouts.abort;
        let late = match self.read_reply(cmd, &[], deadline, true, Stage::Reply) {
            Ok(Got::Done(r)) if r.info("+CMGS").is_some() => Some(r),
            _ => None,
        };
        self.desync = false;
        let _ = self.drain(Duration::from_millis(50), Duration::from_millis(500));
        let _ = self.attempt("AT", self.timeouts.probe);
        late
    }

    /// Reads until a final result code, or the prompt when `prompt` is set.
    fn read_reply(
        &mut self,
        cmd: &str,
        echoes: &[&str],
        deadline: Instant,
        prompt: bool,
        stage: Stage,
    ) -> Result<Got, ModemError> {
        let mut lines: Vec<String> = Vec::new();
        let started = Instant::now();
        loop {
            while let Some(piece) = self.reader.next(prompt) {
                let line = match piece {
                    Piece::Prompt => {
                        if let Some(t) = &mut self.trace {
                            t.received("> ");
                        }
                        return Ok(Got::Prompt);
                    }
                    Piece::Garbage(g) => {
                        self.on_garbage(&g);
                        continue;
                    }
                    Piece::Line(line) => line,
                };
                if let Some(p) = self.pending_urc.take() {
                    self.dispatch(p.with_pdu(&line));
                    continue;
                }
                if lines.is_empty() && echoes.iter().any(|e| is_echo(&line, e)) {
                    let shown = self.redact(&line);
                    self.trace_received(&format!("{shown}  (echo)"));
                    continue;
                }
                if let Some(fin) = final_code(&line) {
                    self.trace_received(&line);
                    let command = self.redact(cmd);
                    return match fin {
                        Final::Ok => Ok(Got::Done(Response { lines })),
                        Final::Error => Err(ModemError::Error { command }),
                        Final::Cme(error) => Err(ModemError::Cme { command, error }),
                        Final::Cms(error) => Err(ModemError::Cms { command, error }),
                        Final::Other(text) => Err(ModemError::Final { command, text }),
                    };
                }
                match urc::classify(&line, Some(cmd)) {
                    Kind::Reply => {
                        self.trace_received(&line);
                        lines.push(line);
                    }
                    Kind::Urc(u) => self.dispatch(u),
                    Kind::UrcHeader(p) => {
                        self.trace_urc(&line);
                        self.pending_urc = Some(p);
                    }
                }
            }
            let now = Instant::now();
            if now >= deadline {
                self.note(&format!(
                    "timeout after {} ms",
                    started.elapsed().as_millis()
                ));
                self.desync = true;
                return Err(ModemError::Timeout {
                    command: self.redact(cmd),
                    stage,
                    waited: now.saturating_duration_since(started),
                });
            }
            self.fill(deadline - now)?;
        }
    }

    /// Reads once (up to `timeout`) into the line reader; returns the bytes read.
    fn fill(&mut self, timeout: Duration) -> Result<usize, ModemError> {
        if self.stop.is_some_and(|s| s.load(Ordering::SeqCst)) {
            return Err(ModemError::Interrupted);
        }
        match self.port.read_timeout(&mut self.buf, timeout) {
            Ok(n) => {
                let n = n.min(self.buf.len());
                self.reader.push(&self.buf[..n]);
                Ok(n)
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {
                if self.stop.is_some_and(|s| s.load(Ordering::SeqCst)) {
                    Err(ModemError::Interrupted)
                } else {
                    Ok(0)
                }
            }
            Err(e) => Err(self.io_error("reading from the modem", e)),
        }
    }

    fn write(&mut self, bytes: &[u8]) -> Result<(), ModemError> {
        self.port
            .write_all_bytes(bytes)
            .map_err(|e| self.io_error("writing to the modem", e))
    }

    fn send_line(&mut self, cmd: &str) -> Result<(), ModemError> {
        let shown = self.redact(cmd);
        if let Some(t) = &mut self.trace {
            t.sent(&shown);
        }
        let mut bytes = Vec::with_capacity(cmd.len() + 1);
        bytes.extend_from_slice(cmd.as_bytes());
        bytes.push(b'\r');
        self.write(&bytes)
    }

    fn io_error(&mut self, context: &str, e: io::Error) -> ModemError {
        let vanished = matches!(
            e.kind(),
            io::ErrorKind::BrokenPipe
                | io::ErrorKind::UnexpectedEof
                | io::ErrorKind::NotConnected
                | io::ErrorKind::ConnectionReset
        ) || e.raw_os_error() == Some(libc::EIO)
            || e.raw_os_error() == Some(libc::ENXIO)
            || e.raw_os_error() == Some(libc::ENODEV);
        self.note(&format!("{context}: {e}"));
        if vanished {
            ModemError::Vanished {
                reason: format!("{context}: {e}"),
            }
        } else {
            ModemError::Io {
                context: context.to_string(),
                source: e,
            }
        }
    }

    fn dispatch(&mut self, u: Urc) {
        let shown = self.redact(&u.describe());
        self.trace_urc(&shown);
        self.subscribers.retain(|s| s.send(u.clone()).is_ok());
    }

    fn on_garbage(&mut self, bytes: &[u8]) {
        self.garbage += 1;
        if let Some(t) = &mut self.trace {
            t.garbage(bytes);
        }
    }

    fn trace_received(&mut self, line: &str) {
        let shown = self.redact(line);
        if let Some(t) = &mut self.trace {
            t.received(&shown);
        }
    }

    fn trace_urc(&mut self, line: &str) {
        let shown = self.redact(line);
        if let Some(t) = &mut self.trace {
            t.urc(&shown);
        }
    }

    fn trace_pdu(&mut self, pdu_hex: &str) {
        let shown = if self.redact(pdu_hex) != pdu_hex {
            format!("** (PDU of {} octets blanked) ^Z", pdu_hex.len() / 2)
        } else {
            format!("{pdu_hex} ^Z")
        };
        if let Some(t) = &mut self.trace {
            t.sent(&shown);
        }
    }
}

/// A prompt is only asked for by [`At::attempt_submit`]'s first wait; any other wait that
/// returned one would be a bug, reported as a malformed reply rather than a panic.
fn unreachable_prompt<T>(cmd: &str) -> Result<T, ModemError> {
    Err(ModemError::Malformed {
        command: cmd.to_string(),
        reason: "unexpected > prompt".into(),
    })
}

/// Whether `line` is the modem echoing `sent` (case aside; an echoed PDU may carry the prompt
/// and Ctrl-Z around it, which the line reader already trimmed).
fn is_echo(line: &str, sent: &str) -> bool {
    let line = line.trim_start_matches('>').trim();
    !sent.is_empty() && line.eq_ignore_ascii_case(sent)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::VecDeque;
    use std::sync::{Arc, Mutex};

    /// A scripted modem: each command written pops the next canned reply, delivered in
    /// chunks of `chunk` bytes to exercise split reads.
    struct Script {
        replies: VecDeque<Vec<u8>>,
        out: Vec<u8>,
        written: Arc<Mutex<Vec<u8>>>,
        chunk: usize,
    }

    impl AtPort for Script {
        fn read_timeout(&mut self, buf: &mut [u8], timeout: Duration) -> io::Result<usize> {
            if self.out.is_empty() {
                std::thread::sleep(timeout.min(Duration::from_millis(2)));
                return Ok(0);
            }
            let n = self.chunk.min(self.out.len()).min(buf.len());
            buf[..n].copy_from_slice(&self.out[..n]);
            self.out.drain(..n);
            Ok(n)
        }

        fn write_all_bytes(&mut self, bytes: &[u8]) -> io::Result<()> {
            self.written.lock().unwrap().extend_from_slice(bytes);
            if (bytes.ends_with(b"\r") || bytes.ends_with(&[CTRL_Z]) || bytes == [ESC])
                && let Some(r) = self.replies.pop_front()
            {
                self.out.extend_from_slice(&r);
            }
            Ok(())
        }
    }

    fn at(replies: &[&[u8]], chunk: usize) -> (At, Arc<Mutex<Vec<u8>>>) {
        let written = Arc::new(Mutex::new(Vec::new()));
        let script = Script {
            replies: replies.iter().map(|r| r.to_vec()).collect(),
            out: Vec::new(),
            written: written.clone(),
            chunk,
        };
        let mut at = At::new(Box::new(script));
        at.timeouts = Timeouts {
            command: Duration::from_millis(200),
            long: Duration::from_millis(200),
            probe: Duration::from_millis(100),
            prompt: Duration::from_millis(200),
            submit: Duration::from_millis(200),
            sim_busy: Duration::from_secs(2),
            abort: Duration::from_millis(100),
        };
        (at, written)
    }

    #[test]
    fn urcs_between_reply_lines_go_to_subscribers() {
        for chunk in [1, 3, 64] {
            let (mut at, _) = at(
                &[b"\r\n+CMTI: \"SM\",2\r\n+CSQ: 20,99\r\n^RSSI: 9\r\n\r\nOK\r\n"],
                chunk,
            );
            let urcs = at.subscribe();
            let r = at.command("AT+CSQ").unwrap();
            assert_eq!(r.lines, ["+CSQ: 20,99"]);
            assert_eq!(r.info("+CSQ"), Some("20,99"));
            let got: Vec<Urc> = urcs.try_iter().collect();
            assert_eq!(
                got,
                [
                    Urc::MessageStored {
                        storage: "SM".into(),
                        index: 2
                    },
                    Urc::Other("^RSSI: 9".into())
                ]
            );
        }
    }

    #[test]
    fn a_cmt_in_the_middle_of_a_list_keeps_its_pdu() {
        let (mut at, _) = at(
            &[b"+CMGL: 1,1,,3\r\n000102\r\n+CMT: ,2\r\n0A0B\r\n+CMGL: 2,1,,1\r\nFF\r\nOK\r\n"],
            5,
        );
        let urcs = at.subscribe();
        let r = at.command("AT+CMGL=4").unwrap();
        assert_eq!(r.lines, ["+CMGL: 1,1,,3", "000102", "+CMGL: 2,1,,1", "FF"]);
        assert_eq!(
            urcs.try_recv().unwrap(),
            Urc::Message {
                length: 2,
                pdu: "0A0B".into()
            }
        );
    }

    #[test]
    fn final_codes_become_named_errors() {
        let (mut at, _) = at(
            &[
                b"\r\nERROR\r\n",
                b"\r\n+CME ERROR: 10\r\n",
                b"\r\n+CMS ERROR: SMSC address unknown\r\n",
                b"\r\nNO CARRIER\r\n",
            ],
            64,
        );
        assert!(matches!(at.command("AT+X"), Err(ModemError::Error { .. })));
        assert!(matches!(
            at.command("AT+CPIN?"),
            Err(ModemError::Cme {
                error: CmeError::SIM_NOT_INSERTED,
                ..
            })
        ));
        assert!(matches!(
            at.command("AT+CMGS=3"),
            Err(ModemError::Cms {
                error: CmsError::SMSC_UNKNOWN,
                ..
            })
        ));
        assert!(matches!(at.command("ATD1;"), Err(ModemError::Final { .. })));
    }

    #[test]
    fn sim_busy_is_retried_until_ready() {
        let (mut at, written) = at(
            &[
                b"\r\n+CME ERROR: 14\r\n",
                b"\r\n+CME ERROR: SIM busy\r\n",
                b"\r\n+CPIN: READY\r\n\r\nOK\r\n",
            ],
            64,
        );
        let r = at.command("AT+CPIN?").unwrap();
        assert_eq!(r.info("+CPIN"), Some("READY"));
        let w = String::from_utf8(written.lock().unwrap().clone()).unwrap();
        assert_eq!(w.matches("AT+CPIN?\r").count(), 3);
    }

    #[test]
    fn sim_busy_gives_up_after_its_budget() {
        let replies: Vec<&[u8]> = vec![b"\r\n+CMS ERROR: 314\r\n"; 50];
        let (mut at, _) = at(&replies, 64);
        at.timeouts.sim_busy = Duration::from_millis(300);
        assert!(matches!(
            at.command("AT+CMGL=4"),
            Err(ModemError::Cms {
                error: CmsError::SIM_BUSY,
                ..
            })
        ));
    }

    #[test]
    fn echo_is_dropped_and_pdu_echo_too() {
        let (mut at, written) = at(
            &[
                b"ATE0\r\r\nOK\r\n",
                b"AT+CMGS=3\r\r\n> ",
                b"000102\x1a\r\n+CMGS: 7\r\n\r\nOK\r\n",
            ],
            2,
        );
        assert_eq!(at.command("ATE0").unwrap().lines, Vec::<String>::new());
        let r = at.submit("AT+CMGS=3", "000102").unwrap();
        assert_eq!(r.lines, ["+CMGS: 7"]);
        let w = written.lock().unwrap().clone();
        assert!(w.ends_with(b"AT+CMGS=3\r000102\x1a"));
    }

    #[test]
    fn a_missing_prompt_is_aborted_with_esc_and_nothing_is_sent() {
        let (mut at, written) = at(&[b"", b"\r\nOK\r\n", b"\r\nOK\r\n"], 64);
        let e = at.submit("AT+CMGS=3", "000102").unwrap_err();
        assert!(
            matches!(
                e,
                ModemError::Timeout {
                    stage: Stage::Prompt,
                    ..
                }
            ),
            "{e:?}"
        );
        let w = written.lock().unwrap().clone();
        assert!(!w.windows(6).any(|x| x == b"000102"));
        assert!(w.contains(&ESC));
        assert!(w.ends_with(b"AT\r"));
    }

    #[test]
    fn a_late_cmgs_after_esc_counts_as_sent() {
        let (mut at, _) = at(
            &[b"\r\n> ", b"", b"\r\n+CMGS: 9\r\n\r\nOK\r\n", b"\r\nOK\r\n"],
            64,
        );
        let r = at.submit("AT+CMGS=3", "000102").unwrap();
        assert_eq!(r.info("+CMGS"), Some("9"));
    }

    #[test]
    fn a_late_answer_after_a_timeout_is_not_the_next_commands() {
        let (mut at, _) = at(
            &[
                b"",
                b"\r\n+CSQ: 1,1\r\n\r\nOK\r\n\r\nOK\r\n",
                b"\r\n001010000000099\r\n\r\nOK\r\n",
            ],
            64,
        );
        assert!(matches!(
            at.command("AT+CSQ"),
            Err(ModemError::Timeout { .. })
        ));
        let r = at.command("AT+CIMI").unwrap();
        assert_eq!(r.bare(), Some("001010000000099"));
    }

    #[test]
    fn an_error_before_the_prompt_is_not_a_send() {
        let (mut at, written) = at(&[b"\r\n+CMS ERROR: 330\r\n"], 64);
        assert!(matches!(
            at.submit("AT+CMGS=3", "000102"),
            Err(ModemError::Cms {
                error: CmsError::SMSC_UNKNOWN,
                ..
            })
        ));
        assert!(!written.lock().unwrap().windows(6).any(|x| x == b"000102"));
    }

    #[test]
    fn garbage_and_stray_lines_never_answer_a_command() {
        let (mut at, _) = at(
            &[b"\x00\xff\xfe\r\nnoise\x07here\r\n\r\n+CGMI: x\r\nsimlab\r\n\r\nOK\r\n"],
            4,
        );
        let urcs = at.subscribe();
        let r = at.command("AT+CGMM").unwrap();
        assert_eq!(r.bare(), Some("simlab"));
        assert_eq!(at.garbage_seen(), 2);
        assert_eq!(urcs.try_recv().unwrap(), Urc::Other("+CGMI: x".into()));
    }

    #[test]
    fn secrets_are_blanked_in_traces_and_errors() {
        #[derive(Clone, Default)]
        struct Buf(Arc<Mutex<Vec<u8>>>);
        impl io::Write for Buf {
            fn write(&mut self, b: &[u8]) -> io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(b);
                Ok(b.len())
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        let (mut at, _) = at(
            &[
                b"AT+CMGS=3\r\r\n> ",
                b"00C0DE\x1a\r\n+CMGS: 7\r\n\r\nOK\r\n",
            ],
            64,
        );
        let buf = Buf::default();
        at.set_trace(AtTrace::to_writer(Box::new(buf.clone())));
        at.add_secret("00c0de");
        at.submit("AT+CMGS=3", "00C0DE").unwrap();
        let text = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
        assert!(!text.to_ascii_uppercase().contains("C0DE"), "{text}");
        assert!(text.contains("PDU of 3 octets blanked"), "{text}");
        assert!(text.contains("+CMGS: 7"), "{text}");
    }

    #[test]
    fn timeouts_name_the_command() {
        let (mut at, _) = at(&[b"\r\n+CSQ: 1,1\r\n"], 64);
        match at.command("AT+CSQ") {
            Err(ModemError::Timeout { command, stage, .. }) => {
                assert_eq!((command.as_str(), stage), ("AT+CSQ", Stage::Reply));
            }
            other => panic!("{other:?}"),
        }
    }
}
