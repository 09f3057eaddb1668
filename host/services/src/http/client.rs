//! The one blocking HTTP client of the CLI roles and the tests: ureq over rustls, with the
//! operator CA pinned, an overall deadline per request, an answer size limit, and connections
//! kept alive between requests to the same service.
//!
//! A [`Url`] is a base URL plus how to trust it: `https://` works only once [`Url::with_tls`]
//! has pinned a CA (there is no fallback to the web's CAs: simlab's services are certified by
//! their operator's CA), `http://` only where the caller allowed plain HTTP.

use super::ApiError;
use super::tls::ClientTls;
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::fmt;
use std::io;
use std::time::Duration;

/// How long to wait for a connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a whole request may take, answer included. A billing batch of 1 000 records
/// verifies in well under a second; this leaves a wide margin.
pub const IO_TIMEOUT: Duration = Duration::from_secs(60);
/// The largest answer accepted.
const MAX_RESPONSE: u64 = 16 * 1024 * 1024;

/// Why a request got no usable answer.
#[derive(Debug)]
pub enum ClientError {
    /// The URL is not `http(s)://HOST[:PORT][/PATH]`.
    BadUrl(String),
    /// An `https://` URL with no CA to trust it by (`--ca`).
    NoTrust(String),
    /// No connection: nothing listens there, or it timed out.
    Connect { addr: String, source: io::Error },
    /// The TLS handshake failed: a server certificate from another CA, an expired one, or the
    /// server refused this client's certificate.
    Tls { addr: String, reason: String },
    /// The connection broke or timed out mid-exchange: the request may or may not have been
    /// processed (a billing batch must be resubmitted; the gateway's answer then says which
    /// records were billed before).
    Io { addr: String, source: io::Error },
    /// The answer is not HTTP, or not the JSON expected.
    Malformed { addr: String, reason: String },
    /// The server answered with an error status and said why.
    Status(ApiError),
}

impl fmt::Display for ClientError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClientError::BadUrl(url) => {
                write!(f, "bad URL {url:?}: expected https://HOST:PORT/…")
            }
            ClientError::NoTrust(url) => write!(
                f,
                "{url}: no CA to check the server's certificate with (give --ca FILE)"
            ),
            ClientError::Connect { addr, source } => {
                write!(f, "cannot connect to {addr}: {source}")
            }
            ClientError::Tls { addr, reason } => write!(f, "TLS with {addr} failed: {reason}"),
            ClientError::Io { addr, source } => {
                write!(f, "connection to {addr} failed mid-request: {source}")
            }
            ClientError::Malformed { addr, reason } => {
                write!(f, "bad answer from {addr}: {reason}")
            }
            ClientError::Status(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for ClientError {}

/// `http` or `https`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scheme {
    Http,
    Https,
}

/// A service's base URL, and the client that reaches it (its TLS trust and identity, its
/// pool of kept-alive connections).
#[derive(Clone)]
pub struct Url {
    pub scheme: Scheme,
    /// `HOST:PORT` for messages.
    pub authority: String,
    /// The path prefix without a trailing slash (often empty).
    pub base_path: String,
    agent: Option<ureq::Agent>,
}

impl fmt::Debug for Url {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self)
    }
}

impl fmt::Display for Url {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scheme = match self.scheme {
            Scheme::Http => "http",
            Scheme::Https => "https",
        };
        write!(f, "{scheme}://{}{}", self.authority, self.base_path)
    }
}

impl PartialEq for Url {
    fn eq(&self, other: &Url) -> bool {
        (self.scheme, &self.authority, &self.base_path)
            == (other.scheme, &other.authority, &other.base_path)
    }
}

impl Eq for Url {}

fn agent(tls: Option<&ClientTls>, timeout: Duration) -> ureq::Agent {
    let mut config = ureq::Agent::config_builder()
        .timeout_global(Some(timeout))
        .timeout_connect(Some(CONNECT_TIMEOUT))
        .http_status_as_error(false)
        .max_redirects(0)
        .user_agent(concat!("simlab/", env!("CARGO_PKG_VERSION")));
    if let Some(tls) = tls {
        config = config.tls_config(tls.ureq());
    }
    config.build().into()
}

impl Url {
    /// Parses `https://HOST[:PORT][/PATH]` or `http://…`. Whether plain HTTP is acceptable
    /// is the caller's decision ([`Url::is_plain`]); an `https` URL needs [`Url::with_tls`].
    pub fn parse(url: &str) -> Result<Url, ClientError> {
        let bad = || ClientError::BadUrl(url.to_string());
        let (scheme, rest, default_port) = if let Some(rest) = url.strip_prefix("https://") {
            (Scheme::Https, rest, 443)
        } else if let Some(rest) = url.strip_prefix("http://") {
            (Scheme::Http, rest, 80)
        } else {
            return Err(bad());
        };
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, ""),
        };
        if authority.is_empty()
            || authority.contains(['@', ' ', '?', '#'])
            || path.contains(['?', '#', ' '])
        {
            return Err(bad());
        }
        let port_ok = |p: &str| p.parse::<u16>().is_ok();
        let authority = match authority.strip_prefix('[').and_then(|a| a.split_once(']')) {
            // An IPv6 literal, with or without a port.
            Some((_, "")) => format!("{authority}:{default_port}"),
            Some((_, port)) if port.strip_prefix(':').is_some_and(port_ok) => authority.into(),
            Some(_) => return Err(bad()),
            None => match authority.split_once(':') {
                None => format!("{authority}:{default_port}"),
                Some((host, port)) if !host.is_empty() && port_ok(port) => authority.into(),
                Some(_) => return Err(bad()),
            },
        };
        Ok(Url {
            scheme,
            authority,
            base_path: path.trim_end_matches('/').to_string(),
            agent: (scheme == Scheme::Http).then(|| agent(None, IO_TIMEOUT)),
        })
    }

    /// The same URL, its server checked against `tls`'s CA and, when `tls` has an identity,
    /// this client presenting it (mutual TLS).
    pub fn with_tls(mut self, tls: &ClientTls) -> Url {
        if self.scheme == Scheme::Https {
            self.agent = Some(agent(Some(tls), IO_TIMEOUT));
        }
        self
    }

    /// As [`Url::with_tls`], but every request (connection included) must finish within
    /// `timeout`: a caller that asks several peers in turn (seed 001's home-server search)
    /// gives each only its share and moves on from one that hangs.
    pub fn with_tls_timeout(mut self, tls: Option<&ClientTls>, timeout: Duration) -> Url {
        self.agent = match (self.scheme, tls) {
            (Scheme::Https, Some(tls)) => Some(agent(Some(tls), timeout)),
            (Scheme::Https, None) => None,
            (Scheme::Http, _) => Some(agent(None, timeout)),
        };
        self
    }

    /// Plain HTTP: allowed only behind `--insecure-http`.
    pub fn is_plain(&self) -> bool {
        self.scheme == Scheme::Http
    }

    /// The full path for `path` (which starts with `/`).
    fn path(&self, path: &str) -> String {
        format!("{}{path}", self.base_path)
    }
}

/// A raw answer.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub body: Vec<u8>,
    /// Header names in lower case (a web page's `location`, `set-cookie`).
    pub headers: Vec<(String, String)>,
}

impl Answer {
    /// The first value of header `name` (lower case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

fn ureq_error(addr: &str, e: ureq::Error) -> ClientError {
    let addr = addr.to_string();
    match e {
        ureq::Error::HostNotFound | ureq::Error::ConnectionFailed => ClientError::Connect {
            addr,
            source: io::Error::new(io::ErrorKind::ConnectionRefused, e.to_string()),
        },
        ureq::Error::Timeout(t) => ClientError::Io {
            addr,
            source: io::Error::new(io::ErrorKind::TimedOut, format!("timed out ({t})")),
        },
        ureq::Error::Io(source) if source.kind() == io::ErrorKind::ConnectionRefused => {
            ClientError::Connect { addr, source }
        }
        // rustls reports a refused certificate through the I/O error it returns.
        ureq::Error::Io(source)
            if source
                .get_ref()
                .is_some_and(|inner| inner.is::<rustls::Error>()) =>
        {
            ClientError::Tls {
                addr,
                reason: source.to_string(),
            }
        }
        ureq::Error::Io(source) => ClientError::Io { addr, source },
        ureq::Error::Rustls(e) => ClientError::Tls {
            addr,
            reason: e.to_string(),
        },
        ureq::Error::Tls(reason) => ClientError::Tls {
            addr,
            reason: reason.to_string(),
        },
        ureq::Error::BodyExceedsLimit(n) => ClientError::Malformed {
            addr,
            reason: format!("answer larger than {n} bytes"),
        },
        other => ClientError::Io {
            addr,
            source: io::Error::other(other.to_string()),
        },
    }
}

/// A TLS server that refuses the client's certificate closes the connection while the client
/// may still be writing its body, which reaches the client as a broken pipe or a reset rather
/// than a TLS alert: say so, so that nobody resubmits in a loop against a refusal.
fn tls_hint(base: &Url, e: ClientError) -> ClientError {
    match e {
        ClientError::Io { addr, source }
            if base.scheme == Scheme::Https
                && matches!(
                    source.kind(),
                    io::ErrorKind::BrokenPipe | io::ErrorKind::ConnectionReset
                ) =>
        {
            ClientError::Io {
                addr,
                source: io::Error::new(
                    source.kind(),
                    format!(
                        "{source} (over TLS this is also how a server refuses a client \
                         certificate: its log names the certificate and the reason)"
                    ),
                ),
            }
        }
        other => other,
    }
}

/// Sends one request and reads the whole answer, whatever its status.
pub fn request(
    base: &Url,
    method: &str,
    path: &str,
    body: Option<&[u8]>,
) -> Result<Answer, ClientError> {
    let body = body.map(|b| ("application/json", b));
    request_with(base, method, path, &[], body)
}

/// [`request`] with extra headers and a body of any content type (a browser's form post and
/// cookie). Redirects are not followed: the caller sees the 303 and its `location`.
pub fn request_with(
    base: &Url,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<(&str, &[u8])>,
) -> Result<Answer, ClientError> {
    let addr = &base.authority;
    let agent = base
        .agent
        .as_ref()
        .ok_or_else(|| ClientError::NoTrust(base.to_string()))?;
    let scheme = match base.scheme {
        Scheme::Http => "http",
        Scheme::Https => "https",
    };
    let target = format!("{scheme}://{addr}{}", base.path(path));
    let mut builder = ureq::http::Request::builder()
        .method(method)
        .uri(&target)
        .header("accept", "application/json");
    for (k, v) in headers {
        builder = builder.header(*k, *v);
    }
    let built = match body {
        Some((content_type, body)) => builder
            .header("content-type", content_type)
            .body(body.to_vec())
            .map(|r| agent.run(r)),
        None => builder.body(()).map(|r| agent.run(r)),
    };
    let mut response = built
        .map_err(|_| ClientError::BadUrl(target.clone()))?
        .map_err(|e| tls_hint(base, ureq_error(addr, e)))?;
    let status = response.status().as_u16();
    let headers = response
        .headers()
        .iter()
        .map(|(k, v)| {
            (
                k.as_str().to_string(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    let body = response
        .body_mut()
        .with_config()
        .limit(MAX_RESPONSE)
        .read_to_vec()
        .map_err(|e| tls_hint(base, ureq_error(addr, e)))?;
    Ok(Answer {
        status,
        body,
        headers,
    })
}

/// Turns an answer into `T` when its status is 2xx, else into [`ClientError::Status`] with the
/// server's error code and detail.
pub fn decode<T: DeserializeOwned>(addr: &str, answer: Answer) -> Result<T, ClientError> {
    if !(200..300).contains(&answer.status) {
        #[derive(serde::Deserialize)]
        struct ErrorBody {
            error: String,
            #[serde(default)]
            detail: String,
        }
        let (code, detail) = match serde_json::from_slice::<ErrorBody>(&answer.body) {
            Ok(e) => (e.error, e.detail),
            Err(_) => (
                "http_error".to_string(),
                String::from_utf8_lossy(&answer.body).trim().to_string(),
            ),
        };
        return Err(ClientError::Status(ApiError {
            status: answer.status,
            code,
            detail,
        }));
    }
    serde_json::from_slice(&answer.body).map_err(|e| ClientError::Malformed {
        addr: addr.to_string(),
        reason: format!("unexpected JSON: {e}"),
    })
}

/// POSTs `value` as JSON to `base` + `path` and decodes the JSON answer.
pub fn post_json<B: Serialize + ?Sized, T: DeserializeOwned>(
    base: &Url,
    path: &str,
    value: &B,
) -> Result<T, ClientError> {
    let body = serde_json::to_vec(value).map_err(|e| ClientError::Malformed {
        addr: base.authority.clone(),
        reason: format!("cannot encode the request: {e}"),
    })?;
    let answer = request(base, "POST", path, Some(&body))?;
    decode(&base.authority, answer)
}

/// GETs `base` + `path` and decodes the JSON answer.
pub fn get_json<T: DeserializeOwned>(base: &Url, path: &str) -> Result<T, ClientError> {
    let answer = request(base, "GET", path, None)?;
    decode(&base.authority, answer)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let u = Url::parse("https://127.0.0.1:8080").unwrap();
        assert_eq!(u.authority, "127.0.0.1:8080");
        assert_eq!(u.path("/v1/x"), "/v1/x");
        assert!(!u.is_plain());
        let u = Url::parse("http://localhost/api/").unwrap();
        assert_eq!(u.authority, "localhost:80");
        assert_eq!(u.path("/v1/x"), "/api/v1/x");
        assert!(u.is_plain());
        assert_eq!(Url::parse("https://h").unwrap().authority, "h:443");
        assert_eq!(Url::parse("https://[::1]:9").unwrap().authority, "[::1]:9");
        for bad in [
            "ftp://x:1",
            "x:1",
            "https://",
            "https://a:b",
            "https://u@h:1",
            "https://h/p?q",
        ] {
            assert!(Url::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn https_without_a_pinned_ca_is_refused_before_connecting() {
        let u = Url::parse("https://127.0.0.1:9").unwrap();
        assert!(matches!(
            request(&u, "GET", "/", None),
            Err(ClientError::NoTrust(_))
        ));
    }
}
