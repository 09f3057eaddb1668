//! The HTTPS stack of simlab's network roles: [`server`] (hyper and axum on tokio, with limits
//! on everything a client controls), [`client`] (ureq, blocking, for the CLI roles and the
//! tests), [`tls`] (rustls identities, the pinned operator CA, who a client certificate is).
//!
//! The roles themselves see only [`Request`] and [`Response`]: a role's logic is a plain
//! function that can be tested without a socket, and the access rules read
//! [`Request::client`], which the TLS layer fills from a verified certificate.

pub mod client;
pub mod server;
pub mod tls;

use serde::Serialize;
use serde::de::DeserializeOwned;
use std::fmt;
use std::net::SocketAddr;

/// A request as the server read it: the whole body is in memory (bounded by the limits).
#[derive(Debug)]
pub struct Request {
    pub method: String,
    /// The path without the query string, e.g. `/v1/bootstrap/begin`.
    pub path: String,
    /// The query string after `?`, if any (undecoded).
    pub query: Option<String>,
    /// Header names in lower case, values trimmed.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    pub peer: Option<SocketAddr>,
    /// Who the client proved to be with its TLS certificate (mutual TLS), already checked
    /// against the CA, its validity period and the revocation list by the server. `None` for a
    /// client without a certificate (the phone side, or plain HTTP behind `--insecure-http`).
    pub client: Option<Peer>,
}

/// The role a certificate from an operator's CA gives its holder. The CA writes it into the
/// subject as `OU=<role>` (the holder's name is the `CN`) and sets extendedKeyUsage to match:
/// `server` certificates are for TLS servers (serverAuth), the others for TLS clients
/// (clientAuth).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Role {
    /// A seller: billing 910/920 and validity checks, for its own records only (CN = seller id).
    Seller,
    /// A gateway: reaches the AuC for triplets and quintets.
    Gateway,
    /// The operator's staff and tools: add sellers, revoke, list CDRs.
    Operator,
    /// A server (AuC, gateway, seller, the seeds' servers): the TLS server side only
    /// (serverAuth).
    Server,
    /// A person's browser (seed 002's web site): clientAuth only, CN = the user id in the
    /// signing server's directory — a log-in without a password.
    User,
    /// A server that also calls its peers (seed 001's MeC servers asking each other
    /// roamUserRequests and sending contracts home): serverAuth and clientAuth, because the same
    /// certificate both answers and asks on the server-to-server links.
    Peer,
}

impl Role {
    /// The `OU` value and the CLI spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Seller => "seller",
            Role::Gateway => "gateway",
            Role::Operator => "operator",
            Role::Server => "server",
            Role::Peer => "peer",
            Role::User => "user",
        }
    }

    /// Parses the `OU` value or CLI spelling.
    pub fn parse(s: &str) -> Option<Role> {
        match s {
            "seller" => Some(Role::Seller),
            "gateway" => Some(Role::Gateway),
            "operator" => Some(Role::Operator),
            "server" => Some(Role::Server),
            "peer" => Some(Role::Peer),
            "user" => Some(Role::User),
            _ => None,
        }
    }
}

/// An authenticated TLS client.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Peer {
    pub role: Role,
    /// The certificate's `CN`: a seller id, a gateway or operator name.
    pub name: String,
    /// The certificate's serial number, lower-case hex, for logs and revocation.
    pub serial_hex: String,
}

impl Request {
    /// The first header with this (lower-case) name.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The body as JSON of type `T`; a malformed body, unknown fields or wrong types are a 400
    /// that says what serde found wrong.
    pub fn json<T: DeserializeOwned>(&self) -> Result<T, ApiError> {
        if self.body.is_empty() {
            return Err(ApiError::bad_request(
                "malformed_json",
                "the request needs a JSON body",
            ));
        }
        serde_json::from_slice(&self.body)
            .map_err(|e| ApiError::bad_request("malformed_json", format!("request body: {e}")))
    }

    /// The authenticated client, if its certificate has one of `roles`; otherwise the 403 that
    /// says what was missing. Plain HTTP has no client certificate, so it always gets the 403.
    pub fn require(&self, roles: &[Role]) -> Result<&Peer, ApiError> {
        let wanted = roles
            .iter()
            .map(|r| r.as_str())
            .collect::<Vec<_>>()
            .join(" or ");
        let article = if wanted.starts_with(['a', 'e', 'i', 'o', 'u']) {
            "an"
        } else {
            "a"
        };
        match &self.client {
            Some(peer) if roles.contains(&peer.role) => Ok(peer),
            Some(peer) => Err(ApiError::new(
                403,
                "wrong_role",
                format!(
                    "this needs {article} {wanted} certificate; {:?}'s is for role {}",
                    peer.name,
                    peer.role.as_str()
                ),
            )),
            None => Err(ApiError::new(
                403,
                "client_certificate_required",
                format!("this needs {article} {wanted} client certificate (mutual TLS)"),
            )),
        }
    }

    /// The value of `name` in the query string (no percent-decoding: simlab's ids need none).
    pub fn query_param(&self, name: &str) -> Option<&str> {
        self.query.as_deref()?.split('&').find_map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (k == name).then_some(v)
        })
    }

    /// The path split into its non-empty segments.
    pub fn segments(&self) -> Vec<&str> {
        self.path.split('/').filter(|s| !s.is_empty()).collect()
    }
}

/// A response: status, content type and the whole body.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub content_type: &'static str,
    pub body: Vec<u8>,
    /// Further headers (a web page's `Location`, `Set-Cookie`, its content security policy);
    /// the JSON roles need none.
    pub headers: Vec<(&'static str, String)>,
}

impl Response {
    /// A JSON response.
    pub fn json<T: Serialize + ?Sized>(status: u16, value: &T) -> Response {
        match serde_json::to_vec(value) {
            Ok(mut body) => {
                body.push(b'\n');
                Response {
                    status,
                    content_type: "application/json",
                    body,
                    headers: Vec::new(),
                }
            }
            Err(e) => ApiError::internal(format!("encoding the response: {e}")).into(),
        }
    }

    /// A 200 JSON response.
    pub fn ok<T: Serialize + ?Sized>(value: &T) -> Response {
        Response::json(200, value)
    }

    /// An HTML page.
    pub fn html(status: u16, page: String) -> Response {
        Response {
            status,
            content_type: "text/html; charset=utf-8",
            body: page.into_bytes(),
            headers: Vec::new(),
        }
    }

    /// A 303 to `location` (after a form post: the browser then GETs it).
    pub fn see_other(location: &str) -> Response {
        Response {
            status: 303,
            content_type: "text/plain; charset=utf-8",
            body: format!("see {location}\n").into_bytes(),
            headers: vec![("location", location.to_string())],
        }
    }

    /// Adds a header.
    pub fn with_header(mut self, name: &'static str, value: String) -> Response {
        self.headers.push((name, value));
        self
    }
}

/// An error answer: the HTTP status, a stable machine-readable code (snake_case) and a
/// sentence for people. Serialised as `{"error": code, "detail": detail}`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApiError {
    pub status: u16,
    pub code: String,
    pub detail: String,
}

impl ApiError {
    pub fn new(status: u16, code: &str, detail: impl Into<String>) -> Self {
        ApiError {
            status,
            code: code.to_string(),
            detail: detail.into(),
        }
    }

    /// 400: the request is malformed (JSON, hex, lengths, ranges).
    pub fn bad_request(code: &str, detail: impl Into<String>) -> Self {
        Self::new(400, code, detail)
    }

    /// 404: the thing named does not exist.
    pub fn not_found(code: &str, detail: impl Into<String>) -> Self {
        Self::new(404, code, detail)
    }

    /// 409: the request conflicts with what happened before (a replayed session id, a
    /// transaction already paid).
    pub fn conflict(code: &str, detail: impl Into<String>) -> Self {
        Self::new(409, code, detail)
    }

    /// 422: well-formed, but a check said no (restriction broken, bad signature).
    pub fn unprocessable(code: &str, detail: impl Into<String>) -> Self {
        Self::new(422, code, detail)
    }

    /// 500: a fault on this side; the detail goes to the log as well.
    pub fn internal(detail: impl Into<String>) -> Self {
        Self::new(500, "internal_error", detail)
    }

    /// 503: a service this one depends on is unavailable (database, AuC, gateway).
    pub fn unavailable(code: &str, detail: impl Into<String>) -> Self {
        Self::new(503, code, detail)
    }
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}: {}", self.status, self.code, self.detail)
    }
}

impl std::error::Error for ApiError {}

impl From<ApiError> for Response {
    fn from(e: ApiError) -> Self {
        Response::json(
            e.status,
            &serde_json::json!({ "error": e.code, "detail": e.detail }),
        )
    }
}

/// The reason phrase of the status codes simlab answers with.
pub fn reason(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        200 => "OK",
        201 => "Created",
        400 => "Bad Request",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        409 => "Conflict",
        410 => "Gone",
        411 => "Length Required",
        413 => "Content Too Large",
        415 => "Unsupported Media Type",
        422 => "Unprocessable Content",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        505 => "HTTP Version Not Supported",
        _ => "Unknown",
    }
}
