//! USB modems over their AT port: the AT engine, SMS in PDU mode, identity and a doctor.
//!
//! ```text
//! backend.rs one send/incoming trait for services: AT (real or virtual modem), null
//! at.rs      the engine: commands, final result codes, URC routing, prompts, timeouts, ESC
//! line.rs    bytes → lines, split reads, the `> ` prompt, garbage
//! urc.rs     which line is an unsolicited result code, and what it says
//! codes.rs   +CME ERROR / +CMS ERROR codes by name
//! sms.rs     send (multipart, status reports), list, read, delete, watch
//! info.rs    `modem info`, and `modem doctor`: port discovery, holders, set-up checks
//! syntax.rs  AT field syntax, shared with the virtual modem
//! trace.rs   AT transcripts with secrets blanked
//! ```
//!
//! Everything here speaks TS 27.007 / TS 27.005 as real modems implement them, quirks included,
//! and is tested against `simlab emulate modem` through real ptys (simlab-emulate's
//! `tests/modem.rs`). The SIM behind AT+CSIM is the card side's business: simlab-card's
//! `transport::modem`.

pub mod at;
pub mod backend;
pub mod codes;
pub mod info;
pub mod line;
pub mod sms;
pub mod syntax;
pub mod trace;
pub mod urc;

pub use at::{At, AtPort, Response, Stage, Timeouts};
pub use codes::{CmeError, CmsError};
pub use urc::Urc;

use std::fmt;
use std::path::Path;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

/// Why a modem operation failed. All of them are device or operation failures (exit code 1);
/// bad input is rejected before a modem is ever opened.
#[derive(Debug)]
pub enum ModemError {
    /// The port cannot be opened: no such device, no permission, not a tty.
    Open { port: String, reason: String },
    /// Another process holds the port (an exclusive open or lock), e.g. ModemManager; lists
    /// the holders found in /proc.
    Busy { port: String, holders: Vec<Holder> },
    /// Nothing answers `AT` on the port: a data, diagnostic or GPS port, or a modem still
    /// booting or switched off.
    NoAnswer { port: String },
    /// The device went away in the middle of the conversation (unplugged, reset, emulator
    /// stopped).
    Vanished { reason: String },
    /// No final result code (or prompt) in time.
    Timeout {
        command: String,
        stage: Stage,
        waited: Duration,
    },
    /// The command ended with `ERROR`.
    Error { command: String },
    /// The command ended with `+CME ERROR`.
    Cme { command: String, error: CmeError },
    /// The command ended with `+CMS ERROR`.
    Cms { command: String, error: CmsError },
    /// The command ended with another final result code (`NO CARRIER`, vendor texts).
    Final { command: String, text: String },
    /// A reply that does not say what TS 27.005/27.007 says it must.
    Malformed { command: String, reason: String },
    /// The SIM is not ready for the operation: PIN or PUK needed, missing, failed.
    SimNotReady { state: String },
    /// A PDU from the modem does not decode (truncated, malformed).
    Pdu {
        context: String,
        error: simlab_sms::Error,
    },
    /// A multipart message failed part-way: which parts went out, which failed and why.
    PartialSend {
        sent: Vec<sms::SentPart>,
        total: usize,
        failed_part: usize,
        cause: Box<ModemError>,
    },
    /// Any other I/O failure on the port.
    Io {
        context: String,
        source: std::io::Error,
    },
    /// Stopped by Ctrl-C / SIGTERM.
    Interrupted,
}

/// A process that has the port open.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Holder {
    pub pid: u32,
    pub name: String,
}

impl fmt::Display for Holder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (pid {})", self.name, self.pid)
    }
}

impl fmt::Display for ModemError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ModemError::Open { port, reason } => {
                write!(f, "cannot open modem port {port}: {reason}")
            }
            ModemError::Busy { port, holders } => {
                write!(f, "modem port {port} is in use by another process")?;
                if !holders.is_empty() {
                    let list: Vec<String> = holders.iter().map(Holder::to_string).collect();
                    write!(f, ": {}", list.join(", "))?;
                }
                if holders.iter().any(|h| h.name.contains("ModemManager")) {
                    f.write_str(
                        "; stop it (systemctl stop ModemManager) or make it ignore the modem \
                         (udev ENV{ID_MM_DEVICE_IGNORE}=\"1\")",
                    )?;
                }
                Ok(())
            }
            ModemError::NoAnswer { port } => write!(
                f,
                "nothing answers AT on {port}: not the modem's AT port (try `simlab modem doctor`), or the modem is off or still booting"
            ),
            ModemError::Vanished { reason } => write!(
                f,
                "the modem went away ({reason}): unplugged, reset, or its emulator stopped"
            ),
            ModemError::Timeout {
                command,
                stage,
                waited,
            } => {
                let secs = waited.as_secs_f64();
                match stage {
                    Stage::Reply => {
                        write!(f, "{command}: no answer from the modem within {secs:.1} s")
                    }
                    Stage::Prompt => write!(
                        f,
                        "{command}: no > prompt within {secs:.1} s; aborted with ESC, nothing was sent"
                    ),
                    Stage::Submit => write!(
                        f,
                        "{command}: no +CMGS confirmation within {secs:.1} s after the PDU; aborted with ESC — the message may or may not have gone out"
                    ),
                }
            }
            ModemError::Error { command } => write!(f, "{command}: the modem answered ERROR"),
            ModemError::Cme { command, error } => {
                write!(f, "{command}: {error}")?;
                match *error {
                    CmeError::SIM_PIN_REQUIRED => f.write_str(
                        "; enter the PIN once with AT+CPIN=\"<pin>\" (e.g. via `simlab modem doctor` hints) or disable the PIN lock",
                    ),
                    CmeError::SIM_NOT_INSERTED => f.write_str("; insert a SIM"),
                    _ => Ok(()),
                }
            }
            ModemError::Cms { command, error } => {
                write!(f, "{command}: {error}")?;
                match *error {
                    CmsError::SMSC_UNKNOWN => f.write_str(
                        "; set the service centre number with AT+CSCA=\"+<number>\",145 (your operator publishes it)",
                    ),
                    CmsError::NO_NETWORK => f.write_str("; the modem is not registered (see `simlab modem info`)"),
                    CmsError::MEMORY_FULL => f.write_str("; delete messages (`simlab sms delete --all`)"),
                    _ => Ok(()),
                }
            }
            ModemError::Final { command, text } => {
                write!(f, "{command}: the modem answered {text}")
            }
            ModemError::Malformed { command, reason } => {
                write!(f, "{command}: unexpected answer from the modem: {reason}")
            }
            ModemError::SimNotReady { state } => write!(
                f,
                "the SIM is not ready ({state}){}",
                match state.as_str() {
                    "SIM PIN" => ": enter the PIN with AT+CPIN=\"<pin>\" or disable the PIN lock",
                    "SIM PUK" => ": the PIN is blocked; unblock it with the PUK",
                    _ => "",
                }
            ),
            ModemError::Pdu { context, error } => write!(f, "{context}: {error}"),
            ModemError::PartialSend {
                sent,
                total,
                failed_part,
                cause,
            } => {
                let list: Vec<String> = sent
                    .iter()
                    .map(|p| format!("{} (mr {})", p.part, p.mr))
                    .collect();
                write!(
                    f,
                    "part {failed_part} of {total} failed: {cause}; parts sent: {}",
                    if list.is_empty() {
                        "none".to_string()
                    } else {
                        list.join(", ")
                    }
                )
            }
            ModemError::Io { context, source } => write!(f, "{context}: {source}"),
            ModemError::Interrupted => f.write_str("interrupted"),
        }
    }
}

impl std::error::Error for ModemError {}

/// How to open a modem.
pub struct OpenOptions {
    pub timeouts: Timeouts,
    pub trace: Option<trace::AtTrace>,
    /// Set by a signal handler to stop every wait.
    pub stop: Option<&'static AtomicBool>,
    /// How many `AT` probes before giving up.
    pub probe_tries: usize,
}

impl Default for OpenOptions {
    fn default() -> Self {
        OpenOptions {
            timeouts: Timeouts::default(),
            trace: None,
            stop: None,
            probe_tries: 3,
        }
    }
}

/// A modem with its AT engine set up: answering, echo off, numeric error codes.
pub struct Modem {
    at: At,
    port: String,
}

impl Modem {
    /// Opens the AT port exclusively and sets the modem up (see [`Modem::over`]).
    pub fn open(path: &Path, options: OpenOptions) -> Result<Modem, ModemError> {
        let port = open_port(path)?;
        Self::over(Box::new(port), &path.display().to_string(), options)
    }

    /// Sets up a modem over any byte stream: leftovers drained, `AT` answered, `ATE0`,
    /// `AT+CMEE=1`. Echo and verbose errors are tolerated if the modem refuses to change.
    pub fn over(
        port: Box<dyn AtPort>,
        name: &str,
        options: OpenOptions,
    ) -> Result<Modem, ModemError> {
        let mut at = At::new(port);
        at.timeouts = options.timeouts;
        if let Some(t) = options.trace {
            at.set_trace(t);
        }
        if let Some(stop) = options.stop {
            at.set_stop(stop);
        }
        at.note(&format!("open {name}"));
        match at.sync(options.probe_tries) {
            Ok(()) => {}
            Err(e @ (ModemError::Vanished { .. } | ModemError::Interrupted)) => return Err(e),
            Err(_) => {
                return Err(ModemError::NoAnswer {
                    port: name.to_string(),
                });
            }
        }
        for setup in ["ATE0", "AT+CMEE=1"] {
            // A refusal is fine: echo is handled anyway, and text errors parse too.
            if let Err(e @ (ModemError::Vanished { .. } | ModemError::Interrupted)) =
                at.command(setup)
            {
                return Err(e);
            }
        }
        Ok(Modem {
            at,
            port: name.to_string(),
        })
    }

    /// The AT engine, for commands this module has no method for.
    pub fn at(&mut self) -> &mut At {
        &mut self.at
    }

    /// The port's name as opened.
    pub fn port(&self) -> &str {
        &self.port
    }

    /// Checks `AT+CPIN?` (retrying while the SIM is busy) and fails unless READY.
    pub fn require_sim_ready(&mut self) -> Result<(), ModemError> {
        let r = self.at.command("AT+CPIN?")?;
        let state = r
            .info("+CPIN")
            .map(|s| syntax::unquote(s).to_string())
            .ok_or_else(|| ModemError::Malformed {
                command: "AT+CPIN?".into(),
                reason: "no +CPIN: line".into(),
            })?;
        if state.eq_ignore_ascii_case("READY") {
            Ok(())
        } else {
            Err(ModemError::SimNotReady { state })
        }
    }
}

/// Opens a serial port the way a modem wants it: exclusive (TIOCEXCL and flock, so a second
/// simlab or ModemManager cannot interleave commands), raw, 115200 8N1, DTR raised where the
/// device has the line (a pty does not: ENOTTY is ignored).
pub fn open_port(path: &Path) -> Result<serialport::TTYPort, ModemError> {
    let name = path.display().to_string();
    let builder = serialport::new(name.clone(), 115_200)
        .timeout(Duration::from_secs(1))
        .dtr_on_open(true);
    match builder.open_native() {
        Ok(mut port) => {
            use serialport::SerialPort;
            // Modem-control lines: real serial devices have them, ptys answer ENOTTY.
            let _ = port.write_request_to_send(true);
            Ok(port)
        }
        Err(e) => Err(match e.kind() {
            serialport::ErrorKind::NoDevice if path.exists() => ModemError::Busy {
                holders: holders(path),
                port: name,
            },
            serialport::ErrorKind::Io(std::io::ErrorKind::NotFound)
            | serialport::ErrorKind::NoDevice => ModemError::Open {
                port: name,
                reason: "no such device".into(),
            },
            serialport::ErrorKind::Io(std::io::ErrorKind::PermissionDenied) => ModemError::Open {
                port: name,
                reason: "permission denied (add yourself to the dialout group)".into(),
            },
            _ => ModemError::Open {
                port: name,
                reason: e.description,
            },
        }),
    }
}

/// Processes (other than this one) that have `path` open, found through /proc/*/fd.
pub fn holders(path: &Path) -> Vec<Holder> {
    let Ok(target) = std::fs::canonicalize(path) else {
        return Vec::new();
    };
    let me = std::process::id();
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for entry in procs.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        if pid == me {
            continue;
        }
        let Ok(fds) = std::fs::read_dir(entry.path().join("fd")) else {
            continue;
        };
        if fds
            .flatten()
            .any(|fd| std::fs::read_link(fd.path()).is_ok_and(|l| l == target))
        {
            let name = std::fs::read_to_string(entry.path().join("comm"))
                .map(|s| s.trim().to_string())
                .unwrap_or_else(|_| "?".into());
            out.push(Holder { pid, name });
        }
    }
    out.sort_by_key(|h| h.pid);
    out
}
