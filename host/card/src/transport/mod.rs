//! Ways to reach a card. Every transport moves raw APDUs; [`Link`] adds what all of them need
//! on top, in one place: the T=0 rules (61xx / 9Fxx → GET RESPONSE, 6Cxx → resend with the
//! right Le), so no command code ever sees them.

pub mod inproc;
pub mod modem;
pub mod pcsc;
pub mod serial;

use crate::trace::Trace;
use simlab_applet::{Command, Status};
use std::fmt;

/// Why a transport could not deliver a command or its answer.
#[derive(Debug)]
pub enum TransportError {
    /// The PC/SC service (pcscd) is not running or not reachable.
    NoService,
    /// pcscd runs but has no reader.
    NoReaders,
    /// `--reader` names no reader (by index or name); lists the ones there are.
    ReaderNotFound {
        wanted: String,
        available: Vec<String>,
    },
    /// The reader is empty.
    NoCard { reader: String },
    /// No card arrived in time.
    Timeout {
        reader: String,
        waited: std::time::Duration,
    },
    /// The card was removed (or reset by someone else) in the middle of a command.
    CardRemoved { reader: String },
    /// Another process holds the reader exclusively.
    ReaderBusy { reader: String },
    /// Any other PC/SC failure: the operation and pcsc-lite's description.
    Pcsc { op: &'static str, reason: String },
    /// The card's answer was shorter than a status word, or otherwise not an R-APDU.
    BadResponse { reason: String },
    /// The command could not be encoded (too long for any APDU).
    BadCommand { reason: String },
    /// The card kept asking for GET RESPONSE / a new Le: a broken card or a loop.
    T0Loop,
    /// Any other failure of the underlying device, with its description.
    Device { reason: String },
}

impl fmt::Display for TransportError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TransportError::NoService => f.write_str(
                "the PC/SC service is not running (start pcscd, e.g. `pcscd -f` or `systemctl start pcscd`)",
            ),
            TransportError::NoReaders => f.write_str("pcscd runs but sees no card reader"),
            TransportError::ReaderNotFound { wanted, available } => write!(
                f,
                "no reader {wanted:?}; readers: {}",
                if available.is_empty() { "none".to_string() } else { available.iter().enumerate().map(|(i, r)| format!("[{i}] {r}")).collect::<Vec<_>>().join(", ") }
            ),
            TransportError::NoCard { reader } => write!(f, "no card in reader {reader:?}"),
            TransportError::Timeout { reader, waited } => {
                write!(f, "no card in reader {reader:?} after waiting {:.1} s", waited.as_secs_f64())
            }
            TransportError::CardRemoved { reader } => {
                write!(f, "the card was removed from {reader:?} during the command")
            }
            TransportError::ReaderBusy { reader } => {
                write!(f, "reader {reader:?} is in use by another process (held exclusively, or shared while --exclusive was asked)")
            }
            TransportError::Pcsc { op, reason } => write!(f, "PC/SC {op}: {reason}"),
            TransportError::BadResponse { reason } => write!(f, "bad response from card: {reason}"),
            TransportError::BadCommand { reason } => write!(f, "cannot encode command: {reason}"),
            TransportError::T0Loop => {
                f.write_str("card keeps answering 61xx/6Cxx: giving up after 32 exchanges")
            }
            TransportError::Device { reason } => f.write_str(reason),
        }
    }
}

impl std::error::Error for TransportError {}

/// A connection to one card that moves raw APDUs.
pub trait Transport {
    /// Sends one command APDU as is and returns the raw response (data ‖ SW1 SW2).
    fn transmit_raw(&mut self, capdu: &[u8]) -> Result<Vec<u8>, TransportError>;
    /// Resets the card and returns the new ATR.
    fn reset(&mut self) -> Result<Vec<u8>, TransportError>;
    /// The card's answer to reset.
    fn atr(&self) -> Vec<u8>;
    /// A human-readable name ("emulated card sim.toml", "Virtual PCD 00 00", …).
    fn describe(&self) -> String;
}

/// A complete answer after the T=0 dance.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reply {
    pub data: Vec<u8>,
    pub status: Status,
}

/// The most exchanges one logical command may take (GET RESPONSE chains included).
const MAX_EXCHANGES: usize = 32;

/// A transport plus the T=0 rules, and the transcript if one is wanted.
pub struct Link {
    transport: Box<dyn Transport>,
    trace: Option<Trace>,
}

impl Link {
    pub fn new(transport: Box<dyn Transport>) -> Self {
        Link {
            transport,
            trace: None,
        }
    }

    /// Records every exchange from now on.
    pub fn set_trace(&mut self, trace: Trace) {
        self.trace = Some(trace);
    }

    /// The transport underneath.
    pub fn transport(&mut self) -> &mut dyn Transport {
        self.transport.as_mut()
    }

    /// Sends bytes as they are and returns the answer as it came, traced: for raw APDUs and
    /// replayed scripts, where the caller does T=0 itself.
    pub fn transmit_bytes(&mut self, capdu: &[u8]) -> Result<Vec<u8>, TransportError> {
        let raw = self.transport.transmit_raw(capdu)?;
        if let Some(trace) = &mut self.trace {
            trace.exchange(capdu, &raw);
        }
        if raw.len() < 2 {
            return Err(TransportError::BadResponse {
                reason: format!("{} byte(s), shorter than a status word", raw.len()),
            });
        }
        Ok(raw)
    }

    /// Sends a command and returns its complete answer: response data fetched with GET RESPONSE
    /// after 61xx/9Fxx is appended, and a 6Cxx is answered by resending with Le = xx.
    pub fn transmit(&mut self, cmd: &Command) -> Result<Reply, TransportError> {
        let mut data = Vec::new();
        let mut current = *cmd;
        let get_response_cla = if cmd.cla == 0xA0 {
            0xA0
        } else {
            cmd.cla & 0x03
        };
        for _ in 0..MAX_EXCHANGES {
            let raw = self.exchange(&current)?;
            let (body, sw) = raw.split_at(raw.len() - 2);
            data.extend_from_slice(body);
            let status = Status::from_u16(u16::from_be_bytes([sw[0], sw[1]]));
            match status {
                Status::BytesAvailable(n) | Status::GsmBytesAvailable(n) => {
                    current = Command::new(get_response_cla, 0xC0, 0, 0).with_ne(ne_of(n));
                }
                Status::WrongLe(n) if current.ne.is_some() || current.data.is_empty() => {
                    current = Command {
                        ne: Some(ne_of(n)),
                        ..current
                    };
                }
                status => return Ok(Reply { data, status }),
            }
        }
        Err(TransportError::T0Loop)
    }

    fn exchange(&mut self, cmd: &Command) -> Result<Vec<u8>, TransportError> {
        let mut buf = vec![
            0u8;
            cmd.encoded_len().map_err(|e| TransportError::BadCommand {
                reason: e.to_string(),
            })?
        ];
        cmd.serialize(&mut buf)
            .map_err(|e| TransportError::BadCommand {
                reason: e.to_string(),
            })?;
        let raw = self.transport.transmit_raw(&buf)?;
        if let Some(trace) = &mut self.trace {
            trace.exchange(&buf, &raw);
        }
        if raw.len() < 2 {
            return Err(TransportError::BadResponse {
                reason: format!("{} byte(s), shorter than a status word", raw.len()),
            });
        }
        Ok(raw)
    }
}

/// A T=0 length byte as Ne: 00 means 256.
fn ne_of(n: u8) -> usize {
    if n == 0 { 256 } else { n as usize }
}
