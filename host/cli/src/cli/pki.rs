//! Helpers shared by the seed-000 commands (`auc`, `gateway`, `seller`, `ms`, `buy`): running
//! an HTTP role in the foreground, and reaching the SIM and the token applet on one card.

use super::card::open_link;
use super::{Global, Output};
use simlab_applet::chv::PIN_LEN;
use simlab_applet::encoding;
use simlab_card::error::{Error, Result};
use simlab_card::sim::{Code, FileContent, Location, Sim, VerifyOutcome};
use simlab_card::token::{PinOutcome, TokenSession};
use simlab_card::transport::{Link, Transport, TransportError};
use simlab_services::http::client::Url;
use simlab_services::http::server::{Handler, Limits, Log, Server};
use std::cell::RefCell;
use std::io::Write;
use std::path::Path;
use std::rc::Rc;
use std::sync::Arc;

/// `--state` for the emulated card, as `simlab token` has it.
pub const STATE_HELP: &str = "With --emulate: keep the emulated card's memory (the token's key, \
PIN counter and certificate, the SIM's counters) in FILE across runs, created if missing. The \
file holds the card's secrets and is written with mode 0600.";

/// Binds `listen`, prints where the role listens (one line on stdout, JSON with --json), and
/// serves until the process is stopped.
pub fn serve(
    out: &Output,
    role: &str,
    listen: &str,
    limits: Limits,
    handler: Handler,
) -> Result<i32> {
    let server = Server::bind(listen).map_err(|source| Error::Io {
        context: format!("listening on {listen}"),
        source,
    })?;
    let url = format!("http://{}", server.local_addr());
    let line = if out.json() {
        serde_json::json!({ "role": role, "url": url }).to_string()
    } else {
        format!("{role} listening on {url}")
    };
    let mut stdout = std::io::stdout().lock();
    let _ = writeln!(stdout, "{line}").and_then(|()| stdout.flush());
    drop(stdout);
    let log: Option<Log> = if out.verbose > 0 {
        let role = role.to_string();
        Some(Arc::new(move |line: &str| eprintln!("{role}: {line}")))
    } else {
        None
    };
    server
        .run(handler, limits, log)
        .map_err(|source| Error::Io {
            context: format!("serving on {url}"),
            source,
        })?;
    Ok(0)
}

/// A base URL argument.
pub fn url_arg(arg: &str, text: &str) -> Result<Url> {
    Url::parse(text).map_err(|e| Error::arg(arg, e.to_string()))
}

/// A PIN argument (4-8 digits), padded as the card wants it.
pub fn pin_arg(arg: &str, text: &str) -> Result<[u8; PIN_LEN]> {
    super::card::pin_arg(arg, text)
}

/// One transport used by two sessions in turn (the SIM's, then the token's): the card is one
/// card, whichever application a command addresses.
#[derive(Clone)]
pub struct SharedTransport(Rc<RefCell<Box<dyn Transport>>>);

impl SharedTransport {
    pub fn new(transport: Box<dyn Transport>) -> Self {
        SharedTransport(Rc::new(RefCell::new(transport)))
    }
}

impl Transport for SharedTransport {
    fn transmit_raw(&mut self, capdu: &[u8]) -> std::result::Result<Vec<u8>, TransportError> {
        self.0.borrow_mut().transmit_raw(capdu)
    }

    fn reset(&mut self) -> std::result::Result<Vec<u8>, TransportError> {
        self.0.borrow_mut().reset()
    }

    fn atr(&self) -> Vec<u8> {
        self.0.borrow().atr()
    }

    fn describe(&self) -> String {
        self.0.borrow().describe()
    }
}

/// The card the global options name (with `--state` for an emulated one).
pub fn open_card(out: &Output, global: &Global, state: Option<&Path>) -> Result<SharedTransport> {
    Ok(SharedTransport::new(super::card::open_transport_stateful(
        global, out, state,
    )?))
}

/// Reads the IMSI from the SIM (verifying PIN1 first when given).
pub fn read_imsi(card: &SharedTransport, sim_pin: Option<&[u8; PIN_LEN]>) -> Result<String> {
    let mut sim = Sim::open(Link::new(Box::new(card.clone())))?;
    if let Some(pin) = sim_pin {
        match sim.verify(Code::Pin1, Some(pin))? {
            VerifyOutcome::Verified | VerifyOutcome::NotEnabled => {}
            VerifyOutcome::Wrong { tries_left } => {
                return Err(Error::Mismatch {
                    what: format!(
                        "wrong SIM PIN1{}",
                        tries_left
                            .map(|n| format!(", {n} tries left"))
                            .unwrap_or_default()
                    ),
                });
            }
            VerifyOutcome::Blocked => {
                return Err(Error::Mismatch {
                    what: "SIM PIN1 is blocked".into(),
                });
            }
        }
    }
    let content = sim
        .read_file(Location::Mf(&[0x7F20, 0x6F07]))
        .map_err(|e| match e {
            Error::Card { .. } => Error::Mismatch {
                what: format!("cannot read the IMSI ({e}): is PIN1 enabled? give --sim-pin"),
            },
            other => other,
        })?;
    match content {
        FileContent::Transparent(bytes) => encoding::decode_imsi(&bytes)
            .map(|d| d.as_str().to_string())
            .map_err(|e| Error::Malformed {
                what: "EF_IMSI",
                reason: e.to_string(),
            }),
        FileContent::Records(_) => Err(Error::Malformed {
            what: "EF_IMSI",
            reason: "not a transparent file".into(),
        }),
    }
}

/// The token applet on the card, with its PIN verified.
pub fn open_token(
    card: &SharedTransport,
    global: &Global,
    pin: Option<&[u8; PIN_LEN]>,
) -> Result<TokenSession> {
    let mut token = TokenSession::open(open_link(Box::new(card.clone()), global)?)?;
    if let Some(pin) = pin {
        match token.verify_pin(pin)? {
            PinOutcome::Verified => {}
            PinOutcome::Wrong { tries_left } => {
                return Err(Error::Mismatch {
                    what: format!("wrong token PIN, {tries_left} tries left"),
                });
            }
            PinOutcome::Blocked => {
                return Err(Error::Mismatch {
                    what: "the token PIN is blocked".into(),
                });
            }
        }
    }
    Ok(token)
}
