//! A blocking HTTP/1.1 client for JSON on loopback: one connection per request, a timeout on
//! connect and on every read and write, and an answer size limit.

use super::ApiError;
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::fmt;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::time::Duration;

/// How long to wait for a connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long any single read or write may block. A billing batch of 10 000 records verifies in
/// about a second; this leaves a wide margin.
pub const IO_TIMEOUT: Duration = Duration::from_secs(60);
/// The largest answer accepted.
const MAX_RESPONSE: usize = 64 * 1024 * 1024;

/// Why a request got no usable answer.
#[derive(Debug)]
pub enum ClientError {
    /// The URL is not `http://HOST:PORT/…`.
    BadUrl(String),
    /// No connection: nothing listens there, or it timed out.
    Connect { addr: String, source: io::Error },
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
            ClientError::BadUrl(url) => write!(f, "bad URL {url:?}: expected http://HOST:PORT/…"),
            ClientError::Connect { addr, source } => {
                write!(f, "cannot connect to {addr}: {source}")
            }
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

/// A base URL split into what a request needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Url {
    /// `HOST:PORT` for the Host header and messages.
    pub authority: String,
    /// The path prefix without a trailing slash (often empty).
    pub base_path: String,
}

impl Url {
    /// Parses `http://HOST[:PORT][/PATH]`. `https` is refused: simlab's roles speak plain
    /// HTTP on loopback (see docs/pki-messages.md).
    pub fn parse(url: &str) -> Result<Url, ClientError> {
        let bad = || ClientError::BadUrl(url.to_string());
        let rest = url.strip_prefix("http://").ok_or_else(bad)?;
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, ""),
        };
        if authority.is_empty() || authority.contains(['@', ' ', '?', '#']) {
            return Err(bad());
        }
        let port_ok = |p: &str| p.parse::<u16>().is_ok();
        let authority = match authority.strip_prefix('[').and_then(|a| a.split_once(']')) {
            // An IPv6 literal, with or without a port.
            Some((_, "")) => format!("{authority}:80"),
            Some((_, port)) if port.strip_prefix(':').is_some_and(port_ok) => authority.into(),
            Some(_) => return Err(bad()),
            None => match authority.split_once(':') {
                None => format!("{authority}:80"),
                Some((host, port)) if !host.is_empty() && port_ok(port) => authority.into(),
                Some(_) => return Err(bad()),
            },
        };
        Ok(Url {
            authority,
            base_path: path.trim_end_matches('/').to_string(),
        })
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
}

/// Sends one request and reads the whole answer, whatever its status.
pub fn request(
    base: &Url,
    method: &str,
    path: &str,
    body: Option<&[u8]>,
) -> Result<Answer, ClientError> {
    let addr = &base.authority;
    let connect = |source| ClientError::Connect {
        addr: addr.clone(),
        source,
    };
    let addrs: Vec<SocketAddr> = addr.to_socket_addrs().map_err(connect)?.collect();
    let mut last = io::Error::new(io::ErrorKind::NotFound, "no address");
    let mut stream = None;
    for a in addrs {
        match TcpStream::connect_timeout(&a, CONNECT_TIMEOUT) {
            Ok(s) => {
                stream = Some(s);
                break;
            }
            Err(e) => last = e,
        }
    }
    let mut stream = stream.ok_or_else(|| connect(last))?;
    let io = |source| ClientError::Io {
        addr: addr.clone(),
        source,
    };
    stream.set_read_timeout(Some(IO_TIMEOUT)).map_err(io)?;
    stream.set_write_timeout(Some(IO_TIMEOUT)).map_err(io)?;
    let _ = stream.set_nodelay(true);
    let body = body.unwrap_or_default();
    let mut head = format!(
        "{method} {} HTTP/1.1\r\nHost: {addr}\r\nAccept: application/json\r\nConnection: close\r\n",
        base.path(path)
    );
    if method != "GET" || !body.is_empty() {
        head.push_str(&format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n",
            body.len()
        ));
    }
    head.push_str("\r\n");
    let mut message = head.into_bytes();
    message.extend_from_slice(body);
    stream.write_all(&message).map_err(io)?;
    stream.flush().map_err(io)?;
    let mut raw = Vec::new();
    (&mut stream)
        .take(MAX_RESPONSE as u64 + 1)
        .read_to_end(&mut raw)
        .map_err(io)?;
    parse_answer(addr, &raw)
}

fn parse_answer(addr: &str, raw: &[u8]) -> Result<Answer, ClientError> {
    let malformed = |reason: String| ClientError::Malformed {
        addr: addr.to_string(),
        reason,
    };
    if raw.len() > MAX_RESPONSE {
        return Err(malformed(format!(
            "answer larger than {MAX_RESPONSE} bytes"
        )));
    }
    if raw.is_empty() {
        return Err(ClientError::Io {
            addr: addr.to_string(),
            source: io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the server closed the connection without answering",
            ),
        });
    }
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| malformed("no end of headers".into()))?;
    let head = std::str::from_utf8(&raw[..end]).map_err(|_| malformed("non-ASCII head".into()))?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status: u16 = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .filter(|_| status_line.starts_with("HTTP/1."))
        .ok_or_else(|| malformed(format!("bad status line {status_line:?}")))?;
    let mut length = None;
    for line in lines {
        if let Some((name, value)) = line.split_once(':')
            && name.eq_ignore_ascii_case("content-length")
        {
            length = value.trim().parse::<usize>().ok();
        }
    }
    let body = &raw[end + 4..];
    let body = match length {
        Some(n) if body.len() < n => {
            return Err(ClientError::Io {
                addr: addr.to_string(),
                source: io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!("the answer ended after {} of {n} bytes", body.len()),
                ),
            });
        }
        Some(n) => &body[..n],
        None => body,
    };
    Ok(Answer {
        status,
        body: body.to_vec(),
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
        let u = Url::parse("http://127.0.0.1:8080").unwrap();
        assert_eq!(u.authority, "127.0.0.1:8080");
        assert_eq!(u.path("/v1/x"), "/v1/x");
        let u = Url::parse("http://localhost/api/").unwrap();
        assert_eq!(u.authority, "localhost:80");
        assert_eq!(u.path("/v1/x"), "/api/v1/x");
        assert_eq!(Url::parse("http://[::1]:9").unwrap().authority, "[::1]:9");
        for bad in [
            "https://x:1",
            "x:1",
            "http://",
            "http://a:b",
            "http://u@h:1",
        ] {
            assert!(Url::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn answers() {
        let a = parse_answer(
            "x",
            b"HTTP/1.1 404 Not Found\r\nContent-Length: 37\r\n\r\n{\"error\":\"unknown_imsi\",\"detail\":\"d\"}",
        )
        .unwrap();
        assert_eq!(a.status, 404);
        match decode::<serde_json::Value>("x", a) {
            Err(ClientError::Status(e)) => {
                assert_eq!((e.status, e.code.as_str()), (404, "unknown_imsi"))
            }
            other => panic!("{other:?}"),
        }
        assert!(parse_answer("x", b"").is_err());
        assert!(parse_answer("x", b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\n{}").is_err());
    }
}
