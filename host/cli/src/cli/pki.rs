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
use simlab_services::http::server::{Handler, Limits, Server, Stop};
use simlab_services::http::tls::{ClientTls, ServerTls};
use std::cell::RefCell;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::rc::Rc;

/// `--state` for the emulated card, as `simlab token` has it.
pub const STATE_HELP: &str = "With --emulate: keep the emulated card's memory (the token's key, \
PIN counter and certificate, the SIM's counters) in FILE across runs, created if missing. The \
file holds the card's secrets and is written with mode 0600.";

/// How a server role speaks: TLS with its identity, or plain HTTP for debugging.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct ServeTlsArgs {
    /// The role's TLS identity: a directory with cert.pem, key.pem and ca.pem, as `simlab
    /// gateway issue --role server --name NAME --out DIR` writes it. Clients that present a
    /// certificate from that ca.pem are known by it (mutual TLS).
    #[arg(long, value_name = "DIR", value_parser = crate::cli::dir_arg)]
    pub tls: Option<PathBuf>,
    /// Serve plain HTTP instead of TLS, for debugging only: no client is authenticated, so the
    /// endpoints that must know their caller refuse everyone.
    #[arg(long, conflicts_with = "tls")]
    pub insecure_http: bool,
}

impl ServeTlsArgs {
    /// The TLS settings, `None` for plain HTTP; `fallback` when neither option was given.
    pub fn server_tls(
        &self,
        fallback: impl FnOnce() -> Result<Option<ServerTls>>,
    ) -> Result<Option<ServerTls>> {
        match (&self.tls, self.insecure_http) {
            (Some(dir), _) => ServerTls::from_dir(dir)
                .map(Some)
                .map_err(|e| Error::arg("--tls", e.to_string())),
            (None, true) => Ok(None),
            (None, false) => fallback(),
        }
    }
}

/// The error for a server role started with neither `--tls` nor `--insecure-http`.
pub fn tls_required() -> Result<Option<ServerTls>> {
    Err(Error::arg(
        "--tls",
        "give the role's TLS identity (see `simlab gateway issue --help`), or --insecure-http \
         for plain HTTP while debugging",
    ))
}

/// Binds `listen`, prints where the role listens (one line on stdout, JSON with --json), and
/// serves until SIGTERM or Ctrl-C, finishing the requests in flight.
pub fn serve(
    out: &Output,
    role: &str,
    listen: &str,
    limits: Limits,
    handler: Handler,
    tls: Option<ServerTls>,
) -> Result<i32> {
    let plain = tls.is_none();
    let server = Server::bind(listen, tls, role).map_err(|source| match source.kind() {
        std::io::ErrorKind::AddrInUse
        | std::io::ErrorKind::AddrNotAvailable
        | std::io::ErrorKind::InvalidInput
        | std::io::ErrorKind::PermissionDenied => {
            Error::arg("--listen", format!("{listen}: {source}"))
        }
        _ if listen.parse::<std::net::SocketAddr>().is_err() => {
            Error::arg("--listen", format!("{listen}: {source}"))
        }
        _ => Error::Io {
            context: format!("listening on {listen}"),
            source,
        },
    })?;
    let url = server.url();
    let line = if out.json() {
        serde_json::json!({ "role": role, "url": url, "tls": !plain }).to_string()
    } else if plain {
        format!("{role} listening on {url} (plain HTTP: --insecure-http)")
    } else {
        format!("{role} listening on {url}")
    };
    let mut stdout = std::io::stdout().lock();
    let _ = writeln!(stdout, "{line}").and_then(|()| stdout.flush());
    drop(stdout);
    if plain {
        tracing::warn!("serving plain HTTP: no client can be authenticated");
    }
    server
        .run(handler, limits, Stop::Signals)
        .map_err(|source| Error::Io {
            context: format!("serving on {url}"),
            source,
        })?;
    Ok(0)
}

/// How a client role reaches a service: the pinned CA, or plain HTTP for debugging.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct ClientTlsArgs {
    /// The operator's CA certificate (PEM, the ca.pem `simlab gateway issue` writes): the
    /// server must present a certificate it issued.
    #[arg(long, value_name = "FILE", value_parser = crate::cli::file_arg)]
    pub ca: Option<PathBuf>,
    /// Allow http:// URLs (plain HTTP), for debugging only.
    #[arg(long)]
    pub insecure_http: bool,
}

impl ClientTlsArgs {
    /// The pinned CA as client TLS settings, if `--ca` was given.
    pub fn client_tls(&self) -> Result<Option<ClientTls>> {
        self.ca
            .as_deref()
            .map(|p| ClientTls::pinned(p).map_err(|e| Error::arg("--ca", e.to_string())))
            .transpose()
    }
}

/// A service URL argument, checked against how it may be reached: `https://` needs `tls`
/// (a pinned CA), `http://` needs `insecure_http`.
pub fn service_url(
    arg: &str,
    text: &str,
    tls: Option<&ClientTls>,
    insecure_http: bool,
) -> Result<Url> {
    let url = url_arg(arg, text)?;
    if url.is_plain() {
        if !insecure_http {
            return Err(Error::arg(
                arg,
                format!("{text}: plain HTTP needs --insecure-http (debugging only); use https://"),
            ));
        }
        return Ok(url);
    }
    match tls {
        Some(tls) => Ok(url.with_tls(tls)),
        None => Err(Error::arg(
            "--ca",
            format!("{text} is HTTPS: give the operator's CA certificate (--ca FILE)"),
        )),
    }
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
