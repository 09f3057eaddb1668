//! The HTTP/1.1 server: one thread per connection, one request per connection, and limits on
//! everything a client controls (header size, body size, time, number of connections).
//!
//! Every malformed request gets an answer with the right status (400, 411, 413, 431, 501,
//! 505) rather than a dropped connection, so a client always learns what it did wrong.

use super::{ApiError, Request, Response, reason};
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// What a client may cost the server.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Request line plus headers, in bytes (431 beyond).
    pub max_head: usize,
    /// Body bytes (413 beyond).
    pub max_body: usize,
    /// Each read and write on the socket.
    pub io_timeout: Duration,
    /// The whole request must arrive within this time, however slowly it trickles (408).
    pub request_deadline: Duration,
    /// Connections served at once; more are answered 503 straight away.
    pub max_connections: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_head: 16 * 1024,
            max_body: 1024 * 1024,
            io_timeout: Duration::from_secs(10),
            request_deadline: Duration::from_secs(30),
            max_connections: 64,
        }
    }
}

/// The function that answers requests. It runs on the connection's thread; a panic in it
/// becomes a 500 and does not take the server down.
pub type Handler = Arc<dyn Fn(&Request) -> Response + Send + Sync>;

/// Where the server writes one line per request (method, path, status, time; never bodies).
pub type Log = Arc<dyn Fn(&str) + Send + Sync>;

/// A bound, not yet running server.
pub struct Server {
    listener: TcpListener,
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
}

/// Stops a running [`Server`] from another thread.
#[derive(Clone)]
pub struct StopHandle {
    stop: Arc<AtomicBool>,
    addr: SocketAddr,
}

impl StopHandle {
    /// Asks the server to stop accepting; wakes its accept loop with a connection of its own.
    pub fn stop(&self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
    }
}

impl Server {
    /// Binds `addr` (`HOST:PORT`; port 0 picks a free one, see [`Server::local_addr`]).
    pub fn bind(addr: &str) -> io::Result<Server> {
        let listener = TcpListener::bind(addr)?;
        let addr = listener.local_addr()?;
        Ok(Server {
            listener,
            addr,
            stop: Arc::new(AtomicBool::new(false)),
        })
    }

    /// The address actually bound.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// A handle that stops [`Server::run`].
    pub fn stop_handle(&self) -> StopHandle {
        StopHandle {
            stop: self.stop.clone(),
            addr: self.addr,
        }
    }

    /// Serves until stopped. Requests in flight when the stop comes are finished (for at most
    /// one request deadline) before this returns.
    pub fn run(self, handler: Handler, limits: Limits, log: Option<Log>) -> io::Result<()> {
        let active = Arc::new(AtomicUsize::new(0));
        for conn in self.listener.incoming() {
            if self.stop.load(Ordering::SeqCst) {
                break;
            }
            let stream = match conn {
                Ok(s) => s,
                // A client that gave up between SYN and accept, or a transient shortage of
                // descriptors: keep serving the others.
                Err(_) => {
                    std::thread::sleep(Duration::from_millis(5));
                    continue;
                }
            };
            if active.load(Ordering::SeqCst) >= limits.max_connections {
                let _ = stream.set_write_timeout(Some(Duration::from_secs(1)));
                let busy: Response = ApiError::unavailable(
                    "busy",
                    format!(
                        "more than {} connections at once; retry",
                        limits.max_connections
                    ),
                )
                .into();
                let mut stream = stream;
                let _ = write_response(&mut stream, &busy);
                continue;
            }
            active.fetch_add(1, Ordering::SeqCst);
            let guard = ActiveGuard(active.clone());
            let handler = handler.clone();
            let log = log.clone();
            let spawned = std::thread::Builder::new()
                .name("http-conn".into())
                .spawn(move || {
                    let _guard = guard;
                    serve_connection(stream, &handler, &limits, log.as_deref());
                });
            // On failure the closure (and with it the guard and the stream) is dropped: the
            // client sees the connection close.
            drop(spawned);
        }
        let deadline = Instant::now() + limits.request_deadline;
        while active.load(Ordering::SeqCst) > 0 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        Ok(())
    }
}

/// A server on a thread of its own (the demo, tests, benchmarks): stopped and joined when
/// dropped.
pub struct Background {
    addr: SocketAddr,
    stop: StopHandle,
    thread: Option<std::thread::JoinHandle<io::Result<()>>>,
}

impl Background {
    /// Binds `listen` and serves `handler` until dropped.
    pub fn start(listen: &str, handler: Handler, limits: Limits) -> io::Result<Background> {
        let server = Server::bind(listen)?;
        let addr = server.local_addr();
        let stop = server.stop_handle();
        let thread = std::thread::Builder::new()
            .name("http-accept".into())
            .spawn(move || server.run(handler, limits, None))?;
        Ok(Background {
            addr,
            stop,
            thread: Some(thread),
        })
    }

    /// `http://HOST:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        self.stop.stop();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Decrements the active-connection count however the connection thread ends.
struct ActiveGuard(Arc<AtomicUsize>);

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Why no request could be read.
#[derive(Debug)]
enum ReadError {
    /// The client closed (or never sent anything): nobody to answer.
    Closed,
    /// An answer explains what was wrong.
    Reply(ApiError),
}

fn serve_connection(
    mut stream: TcpStream,
    handler: &Handler,
    limits: &Limits,
    log: Option<&(dyn Fn(&str) + Send + Sync)>,
) {
    let _ = stream.set_read_timeout(Some(limits.io_timeout));
    let _ = stream.set_write_timeout(Some(limits.io_timeout));
    let _ = stream.set_nodelay(true);
    let started = Instant::now();
    let (line, response) = match read_request(&mut stream, limits) {
        Ok(mut request) => {
            request.peer = stream.peer_addr().ok();
            let response = catch_unwind(AssertUnwindSafe(|| handler(&request)))
                .unwrap_or_else(|_| ApiError::internal("the handler panicked").into());
            (format!("{} {}", request.method, request.path), response)
        }
        Err(ReadError::Closed) => return,
        Err(ReadError::Reply(e)) => ("(unreadable request)".to_string(), e.into()),
    };
    let written = write_response(&mut stream, &response);
    if let Some(log) = log {
        log(&format!(
            "{line} -> {} ({:.1} ms){}",
            response.status,
            started.elapsed().as_secs_f64() * 1e3,
            if written.is_err() {
                " [client gone]"
            } else {
                ""
            }
        ));
    }
    // Half-close, then drain briefly: closing with unread request bytes would reset the
    // connection and could destroy the answer before the client reads it.
    let _ = stream.shutdown(Shutdown::Write);
    let _ = stream.set_read_timeout(Some(Duration::from_millis(100)));
    let mut sink = [0u8; 4096];
    let mut drained = 0;
    while drained < 1 << 20 {
        match stream.read(&mut sink) {
            Ok(0) | Err(_) => break,
            Ok(n) => drained += n,
        }
    }
}

fn write_response(stream: &mut TcpStream, response: &Response) -> io::Result<()> {
    let head = format!(
        "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\nConnection: close\r\nCache-Control: no-store\r\n\r\n",
        response.status,
        reason(response.status),
        response.content_type,
        response.body.len()
    );
    stream.write_all(head.as_bytes())?;
    stream.write_all(&response.body)?;
    stream.flush()
}

fn position(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// Reads one request: the head up to the blank line, then exactly Content-Length body bytes.
fn read_request(stream: &mut TcpStream, limits: &Limits) -> Result<Request, ReadError> {
    let deadline = Instant::now() + limits.request_deadline;
    let mut buf = Vec::with_capacity(4096);
    let mut chunk = [0u8; 8192];
    let head_end = loop {
        if let Some(end) = position(&buf, b"\r\n\r\n") {
            break end;
        }
        if buf.len() > limits.max_head {
            return Err(ReadError::Reply(ApiError::new(
                431,
                "header_too_large",
                format!("request line and headers exceed {} bytes", limits.max_head),
            )));
        }
        match read_some(stream, &mut chunk, deadline) {
            Ok(0) if buf.is_empty() => return Err(ReadError::Closed),
            Ok(0) => {
                return Err(ReadError::Reply(ApiError::bad_request(
                    "truncated_request",
                    "the connection ended inside the request head",
                )));
            }
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) if buf.is_empty() && e.kind() != io::ErrorKind::TimedOut => {
                return Err(ReadError::Closed);
            }
            Err(_) => {
                return Err(ReadError::Reply(ApiError::new(
                    408,
                    "request_timeout",
                    "the request did not arrive in time",
                )));
            }
        }
    };
    if head_end > limits.max_head {
        return Err(ReadError::Reply(ApiError::new(
            431,
            "header_too_large",
            format!("request line and headers exceed {} bytes", limits.max_head),
        )));
    }
    let head = std::str::from_utf8(&buf[..head_end]).map_err(|_| {
        ReadError::Reply(ApiError::bad_request(
            "malformed_request",
            "the request head is not ASCII",
        ))
    })?;
    let mut request = parse_head(head, limits).map_err(ReadError::Reply)?;
    let length = content_length(&request, limits).map_err(ReadError::Reply)?;
    let mut body = buf.split_off(head_end + 4);
    if body.len() > length {
        // Pipelined requests are not served (one request per connection): ignore the rest.
        body.truncate(length);
    }
    if body.len() < length
        && request
            .header("expect")
            .is_some_and(|e| e.eq_ignore_ascii_case("100-continue"))
    {
        let _ = stream.write_all(b"HTTP/1.1 100 Continue\r\n\r\n");
    }
    while body.len() < length {
        let want = (length - body.len()).min(chunk.len());
        match read_some(stream, &mut chunk[..want], deadline) {
            Ok(0) => {
                return Err(ReadError::Reply(ApiError::bad_request(
                    "truncated_body",
                    format!("the body ended after {} of {length} bytes", body.len()),
                )));
            }
            Ok(n) => body.extend_from_slice(&chunk[..n]),
            Err(_) => {
                return Err(ReadError::Reply(ApiError::new(
                    408,
                    "request_timeout",
                    "the request body did not arrive in time",
                )));
            }
        }
    }
    request.body = body;
    Ok(request)
}

/// One read that also honours the overall request deadline.
fn read_some(stream: &mut TcpStream, buf: &mut [u8], deadline: Instant) -> io::Result<usize> {
    if Instant::now() >= deadline {
        return Err(io::Error::new(io::ErrorKind::TimedOut, "request deadline"));
    }
    match stream.read(buf) {
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
            Err(io::Error::new(io::ErrorKind::TimedOut, e))
        }
        other => other,
    }
}

fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// Parses the request line and headers (RFC 9112 section 3 and 5), strictly.
fn parse_head(head: &str, limits: &Limits) -> Result<Request, ApiError> {
    let bad = |detail: String| ApiError::bad_request("malformed_request", detail);
    let mut lines = head.split("\r\n");
    let request_line = lines.next().unwrap_or_default();
    let mut parts = request_line.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(bad(format!("bad request line {request_line:?}")));
    };
    if !is_token(method) {
        return Err(bad(format!("bad method {method:?}")));
    }
    if version != "HTTP/1.1" && version != "HTTP/1.0" {
        return Err(ApiError::new(
            505,
            "http_version_not_supported",
            format!("{version:?}: only HTTP/1.0 and HTTP/1.1"),
        ));
    }
    if !target.starts_with('/') || target.bytes().any(|b| b <= b' ' || b == 0x7F) {
        return Err(bad(format!("bad request target {target:?}")));
    }
    let (path, query) = match target.split_once('?') {
        Some((p, q)) => (p.to_string(), Some(q.to_string())),
        None => (target.to_string(), None),
    };
    let mut headers = Vec::new();
    for line in lines {
        if line.starts_with([' ', '\t']) {
            return Err(bad("obsolete header line folding".into()));
        }
        let Some((name, value)) = line.split_once(':') else {
            return Err(bad(format!("header line without a colon: {line:?}")));
        };
        if !is_token(name) {
            return Err(bad(format!("bad header name {name:?}")));
        }
        headers.push((name.to_ascii_lowercase(), value.trim().to_string()));
        if headers.len() > limits.max_head / 8 {
            return Err(ApiError::new(431, "header_too_large", "too many headers"));
        }
    }
    Ok(Request {
        method: method.to_string(),
        path,
        query,
        headers,
        body: Vec::new(),
        peer: None,
        client: None,
    })
}

/// The body length: Content-Length only (no chunked bodies), consistent if repeated, and
/// within the limit.
fn content_length(request: &Request, limits: &Limits) -> Result<usize, ApiError> {
    if request.header("transfer-encoding").is_some() {
        return Err(ApiError::new(
            501,
            "transfer_encoding_not_supported",
            "send the body with Content-Length, not Transfer-Encoding",
        ));
    }
    let mut length: Option<usize> = None;
    for (_, value) in request
        .headers
        .iter()
        .filter(|(n, _)| n == "content-length")
    {
        if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) || value.len() > 18 {
            return Err(ApiError::bad_request(
                "malformed_request",
                format!("bad Content-Length {value:?}"),
            ));
        }
        let n: usize = value.parse().map_err(|_| {
            ApiError::bad_request("malformed_request", format!("bad Content-Length {value:?}"))
        })?;
        if length.is_some_and(|l| l != n) {
            return Err(ApiError::bad_request(
                "malformed_request",
                "conflicting Content-Length headers",
            ));
        }
        length = Some(n);
    }
    let length = length.unwrap_or(0);
    if length > limits.max_body {
        return Err(ApiError::new(
            413,
            "body_too_large",
            format!(
                "the body is {length} bytes; at most {} are accepted",
                limits.max_body
            ),
        ));
    }
    if length == 0
        && matches!(request.method.as_str(), "POST" | "PUT")
        && request.header("content-length").is_none()
    {
        return Err(ApiError::new(
            411,
            "length_required",
            "a POST needs a Content-Length",
        ));
    }
    Ok(length)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn start(limits: Limits) -> (SocketAddr, StopHandle, std::thread::JoinHandle<()>) {
        let server = Server::bind("127.0.0.1:0").unwrap();
        let addr = server.local_addr();
        let stop = server.stop_handle();
        let handler: Handler = Arc::new(|req: &Request| {
            if req.path == "/panic" {
                panic!("boom");
            }
            Response::ok(&serde_json::json!({
                "method": req.method,
                "path": req.path,
                "query": req.query,
                "len": req.body.len(),
            }))
        });
        let join = std::thread::spawn(move || server.run(handler, limits, None).unwrap());
        (addr, stop, join)
    }

    fn raw(addr: SocketAddr, bytes: &[u8]) -> String {
        let mut s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        s.write_all(bytes).unwrap();
        let _ = s.shutdown(Shutdown::Write);
        let mut out = String::new();
        let _ = s.read_to_string(&mut out);
        out
    }

    #[test]
    fn serves_and_refuses_what_it_must() {
        let limits = Limits {
            max_head: 512,
            max_body: 64,
            ..Limits::default()
        };
        let (addr, stop, join) = start(limits);
        let ok = raw(
            addr,
            b"POST /a/b?x=1 HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n\r\nabc",
        );
        assert!(ok.starts_with("HTTP/1.1 200 OK\r\n"), "{ok}");
        assert!(
            ok.contains("\"len\":3") && ok.contains("\"query\":\"x=1\""),
            "{ok}"
        );

        let cases: &[(&[u8], &str)] = &[
            (b"GARBAGE\r\n\r\n", "400"),
            (b"GET / HTTP/2.0\r\n\r\n", "505"),
            (b"POST / HTTP/1.1\r\n\r\n", "411"),
            (b"POST / HTTP/1.1\r\nContent-Length: 65\r\n\r\n", "413"),
            (
                b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",
                "501",
            ),
            (
                b"POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab",
                "400",
            ),
            (b"POST / HTTP/1.1\r\nContent-Length: 10\r\n\r\nabc", "400"),
            (b"GET /panic HTTP/1.1\r\n\r\n", "500"),
        ];
        for (request, status) in cases {
            let answer = raw(addr, request);
            assert!(
                answer.starts_with(&format!("HTTP/1.1 {status} ")),
                "{:?} -> {answer}",
                String::from_utf8_lossy(request)
            );
        }
        let big = format!("GET / HTTP/1.1\r\nX: {}\r\n\r\n", "y".repeat(600));
        assert!(raw(addr, big.as_bytes()).starts_with("HTTP/1.1 431 "));
        stop.stop();
        join.join().unwrap();
    }
}
