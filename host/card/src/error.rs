//! The host's error type. Every failure maps to one of the CLI's exit codes: 2 for anything the
//! user can fix in their input, 1 when a card, reader or check said no.

use simlab_applet::Status;
use std::fmt;
use std::path::PathBuf;

/// What went wrong, with enough context to act on.
#[derive(Debug)]
pub enum Error {
    /// A command-line argument has a bad value; names the argument.
    BadArgument { arg: String, reason: String },
    /// A profile file cannot be read or has a bad key; names the file and the key.
    Profile {
        path: PathBuf,
        key: Option<String>,
        reason: String,
    },
    /// A batch CSV has a bad row; names the file, the line and the column. Nothing has been
    /// written to any card when this is reported.
    Csv {
        path: PathBuf,
        line: usize,
        column: Option<String>,
        reason: String,
    },
    /// The card answered a command with a status word other than success.
    Card {
        command: &'static str,
        status: Status,
    },
    /// The card refused a command for a reason simlab can name (a token PIN not verified, a
    /// forged gateway's M1 …); the status word stays available to callers.
    Refused {
        command: &'static str,
        status: Status,
        reason: &'static str,
    },
    /// The card's answer could not be understood.
    Malformed { what: &'static str, reason: String },
    /// The transport (reader, link, emulator) failed.
    Transport(crate::transport::TransportError),
    /// A `--check` comparison found the card's answer different from the host's computation.
    Mismatch { what: String },
    /// An I/O failure writing output or files.
    Io {
        context: String,
        source: std::io::Error,
    },
}

impl Error {
    /// The process exit code for this error (see the CLI contract in DESIGN.md).
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::BadArgument { .. } | Error::Profile { .. } | Error::Csv { .. } => 2,
            // A reader name that matches nothing is a typo on the command line.
            Error::Transport(crate::transport::TransportError::ReaderNotFound { .. }) => 2,
            Error::Card { .. }
            | Error::Refused { .. }
            | Error::Malformed { .. }
            | Error::Transport(_)
            | Error::Mismatch { .. }
            | Error::Io { .. } => 1,
        }
    }

    /// A bad argument `arg`.
    pub fn arg(arg: &str, reason: impl Into<String>) -> Self {
        Error::BadArgument {
            arg: arg.to_string(),
            reason: reason.into(),
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::BadArgument { arg, reason } => write!(f, "{arg}: {reason}"),
            Error::Profile {
                path,
                key: Some(key),
                reason,
            } => {
                write!(f, "profile {}: key `{key}`: {reason}", path.display())
            }
            Error::Profile {
                path,
                key: None,
                reason,
            } => {
                write!(f, "profile {}: {reason}", path.display())
            }
            Error::Csv {
                path,
                line,
                column: Some(c),
                reason,
            } => {
                write!(f, "{} line {line}: column `{c}`: {reason}", path.display())
            }
            Error::Csv {
                path,
                line,
                column: None,
                reason,
            } => {
                write!(f, "{} line {line}: {reason}", path.display())
            }
            Error::Refused {
                command,
                status,
                reason,
            } => {
                write!(f, "{command}: {reason} ({:04X})", status.to_u16())
            }
            Error::Card { command, status } => write!(f, "{command}: card answered {status}"),
            Error::Malformed { what, reason } => write!(f, "malformed {what} from card: {reason}"),
            Error::Transport(e) => write!(f, "{e}"),
            Error::Mismatch { what } => write!(f, "mismatch: {what}"),
            Error::Io { context, source } => write!(f, "{context}: {source}"),
        }
    }
}

impl std::error::Error for Error {}

impl From<crate::transport::TransportError> for Error {
    fn from(e: crate::transport::TransportError) -> Self {
        Error::Transport(e)
    }
}

/// Modem failures are device failures: exit code 1, the message as it is.
impl From<simlab_modem::ModemError> for Error {
    fn from(e: simlab_modem::ModemError) -> Self {
        Error::Transport(crate::transport::TransportError::Device {
            reason: e.to_string(),
        })
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
