//! The HTTPS server every role runs: hyper under axum on tokio, rustls, and limits on all a
//! client controls.
//!
//! A role's logic stays a plain blocking function ([`Handler`]): it talks to SQLite or
//! PostgreSQL and verifies signatures, which is blocking work in any case, so it runs on
//! tokio's blocking pool while connections — however many, however slow — cost only a task
//! each. Roles that wait on something (a page waiting for a phone) add async axum routes with
//! [`Server::run_router`], which hold no thread while they wait.
//!
//! What a client can cost: a TLS handshake must finish within `handshake_timeout` and the
//! request head within `header_timeout` (slowloris); the head is at most `max_head` bytes
//! (431), the body `max_body` (413) and must arrive within `request_timeout` (408); at most
//! `max_in_flight` handler calls run at once (503 `busy` beyond, never a queue that grows);
//! at most `max_connections` connections are open (more are closed at once).
//!
//! Why the body, time and concurrency limits are here and not tower-http layers: a refusal
//! must be the roles' JSON error (`{"error", "detail"}`) with its request id, a body a few
//! times too large is drained so the client reads its 413, and the concurrency limit answers
//! 503 at once instead of queueing; hyper itself enforces the head size and head timeout.
//!
//! Every request gets an id, in the log and in the `x-request-id` answer header. A 5xx answer
//! keeps its error code but its detail goes to the log only: clients learn the request id,
//! not database error text.

use super::tls::{ServerTls, peer_of};
use super::{ApiError, Peer, Request, Response};
use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::{Semaphore, oneshot};
use tower::ServiceExt;
use tracing::Instrument;

/// What a client may cost the server.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Request line plus headers, in bytes (431 beyond; hyper's floor is 8 KiB).
    pub max_head: usize,
    /// Body bytes (413 beyond).
    pub max_body: usize,
    /// The TLS handshake must finish within this time.
    pub handshake_timeout: Duration,
    /// A request head must arrive within this time, however slowly it trickles; an idle
    /// keep-alive connection is closed after it too.
    pub header_timeout: Duration,
    /// The body must arrive within this time (408).
    pub request_timeout: Duration,
    /// Handler calls running at once; more are answered 503 `busy` straight away.
    pub max_in_flight: usize,
    /// Connections open at once; more are closed as soon as they are accepted.
    pub max_connections: usize,
    /// On shutdown, how long requests in flight may take to finish.
    pub drain_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_head: 16 * 1024,
            max_body: 1024 * 1024,
            handshake_timeout: Duration::from_secs(10),
            header_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(30),
            max_in_flight: 64,
            max_connections: 16 * 1024,
            drain_timeout: Duration::from_secs(30),
        }
    }
}

/// The function that answers requests, on a blocking thread. A panic in it becomes a 500 and
/// does not take the server down.
pub type Handler = Arc<dyn Fn(&Request) -> Response + Send + Sync>;

/// What the connection knows about its client, for every request on it.
#[derive(Clone, Debug)]
pub struct Connection {
    pub peer_addr: SocketAddr,
    /// The verified client certificate's holder (mutual TLS), if one was presented.
    pub client: Option<Peer>,
}

/// A bound, not yet running server.
pub struct Server {
    listener: std::net::TcpListener,
    addr: SocketAddr,
    tls: Option<ServerTls>,
    name: String,
}

/// When a running server stops.
pub enum Stop {
    /// SIGTERM or Ctrl-C (SIGINT): the CLI's servers.
    Signals,
    /// When the sender fires or is dropped: servers inside another program.
    Channel(oneshot::Receiver<()>),
}

impl Server {
    /// Binds `addr` (`HOST:PORT`; port 0 picks a free one). Without `tls` the server speaks
    /// plain HTTP (`--insecure-http`). `name` is the role, for the log.
    pub fn bind(addr: &str, tls: Option<ServerTls>, name: &str) -> io::Result<Server> {
        let listener = std::net::TcpListener::bind(addr)?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        Ok(Server {
            listener,
            addr,
            tls,
            name: name.to_string(),
        })
    }

    /// The address actually bound.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// `https://HOST:PORT`, or `http://` without TLS.
    pub fn url(&self) -> String {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        format!("{scheme}://{}", self.addr)
    }

    /// Serves `handler` until `stop`, then lets requests in flight finish.
    pub fn run(self, handler: Handler, limits: Limits, stop: Stop) -> io::Result<()> {
        // The role behind the handler is dropped here, after the runtime has gone: a role may
        // hold synchronous clients (postgres) whose drop blocks on a runtime of their own,
        // which tokio forbids inside another runtime.
        let role = handler.clone();
        let router = blocking_router(handler, limits, &self.name);
        let result = self.run_router(router, limits, stop);
        drop(role);
        result
    }

    /// Serves an axum router (async routes; [`blocking_router`] for a [`Handler`]). Each
    /// request carries a [`Connection`] extension.
    pub fn run_router(self, router: Router, limits: Limits, stop: Stop) -> io::Result<()> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .thread_name(format!("{}-io", self.name))
            .max_blocking_threads(limits.max_in_flight.max(1) + 8)
            .build()?;
        runtime.block_on(async move {
            let stop = async move {
                match stop {
                    Stop::Signals => wait_for_signal().await,
                    Stop::Channel(rx) => {
                        let _ = rx.await;
                    }
                }
            };
            serve(self, router, limits, stop).await
        })
    }
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => tracing::info!("SIGTERM: stopping"),
                    _ = tokio::signal::ctrl_c() => tracing::info!("interrupted: stopping"),
                }
            }
            Err(e) => {
                tracing::warn!("cannot watch SIGTERM ({e}); Ctrl-C still stops the server");
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

async fn serve(
    server: Server,
    router: Router,
    limits: Limits,
    stop: impl Future<Output = ()>,
) -> io::Result<()> {
    let listener = tokio::net::TcpListener::from_std(server.listener)?;
    let acceptor = server
        .tls
        .map(|tls| tokio_rustls::TlsAcceptor::from(tls.config.clone()));
    let connections = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let graceful = GracefulShutdown::new();
    tracing::info!(url = %format!("{}://{}", if acceptor.is_some() { "https" } else { "http" }, server.addr), "listening");
    tokio::pin!(stop);
    loop {
        let (tcp, peer_addr) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                // A client that gave up between SYN and accept, or out of descriptors for a
                // moment: keep serving the others.
                Err(e) => {
                    tracing::warn!("accept: {e}");
                    tokio::time::sleep(Duration::from_millis(5)).await;
                    continue;
                }
            },
            () = &mut stop => break,
        };
        let Ok(permit) = connections.clone().try_acquire_owned() else {
            tracing::warn!(%peer_addr, "refused: {} connections open", limits.max_connections);
            continue;
        };
        let _ = tcp.set_nodelay(true);
        let router = router.clone();
        let acceptor = acceptor.clone();
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            let _permit = permit;
            match acceptor {
                Some(acceptor) => {
                    let tls =
                        match tokio::time::timeout(limits.handshake_timeout, acceptor.accept(tcp))
                            .await
                        {
                            Ok(Ok(tls)) => tls,
                            Ok(Err(e)) => {
                                tracing::info!(%peer_addr, "TLS handshake failed: {e}");
                                return;
                            }
                            Err(_) => {
                                tracing::info!(%peer_addr, "TLS handshake timed out");
                                return;
                            }
                        };
                    let client = tls
                        .get_ref()
                        .1
                        .peer_certificates()
                        .and_then(|certs| certs.first())
                        .and_then(|cert| {
                            let peer = peer_of(cert.as_ref());
                            if peer.is_none() {
                                tracing::warn!(%peer_addr, "client certificate names no role: treated as anonymous");
                            }
                            peer
                        });
                    let connection = Connection { peer_addr, client };
                    serve_connection(TokioIo::new(tls), router, connection, limits, watcher).await;
                }
                None => {
                    let connection = Connection {
                        peer_addr,
                        client: None,
                    };
                    serve_connection(TokioIo::new(tcp), router, connection, limits, watcher).await;
                }
            }
        });
    }
    drop(listener);
    tracing::info!(
        "stopped accepting; finishing {} open connection(s)",
        graceful.count()
    );
    tokio::select! {
        () = graceful.shutdown() => tracing::info!("all requests finished"),
        () = tokio::time::sleep(limits.drain_timeout) => {
            tracing::warn!("requests still running after {:?}; stopping anyway", limits.drain_timeout);
        }
    }
    Ok(())
}

async fn serve_connection<I>(
    io: TokioIo<I>,
    router: Router,
    connection: Connection,
    limits: Limits,
    watcher: hyper_util::server::graceful::Watcher,
) where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let service =
        hyper::service::service_fn(move |mut req: hyper::Request<hyper::body::Incoming>| {
            req.extensions_mut().insert(connection.clone());
            router.clone().oneshot(req.map(Body::new))
        });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .max_buf_size(limits.max_head.max(8192))
        .keep_alive(true);
    let conn = builder.serve_connection(io, service);
    if let Err(e) = watcher.watch(conn).await {
        tracing::debug!("connection ended: {e}");
    }
}

/// What the blocking adapter needs per request.
struct App {
    handler: Handler,
    limits: Limits,
    in_flight: Arc<Semaphore>,
    name: String,
}

/// A router whose every path goes to `handler` on a blocking thread.
pub fn blocking_router(handler: Handler, limits: Limits, name: &str) -> Router {
    let app = Arc::new(App {
        handler,
        limits,
        in_flight: Arc::new(Semaphore::new(limits.max_in_flight.max(1))),
        name: name.to_string(),
    });
    Router::new().fallback(dispatch).with_state(app)
}

static REQUEST_IDS: AtomicU64 = AtomicU64::new(1);

/// A request id unique within the process, short enough to read aloud.
fn request_id() -> String {
    format!(
        "{:x}-{}",
        std::process::id(),
        REQUEST_IDS.fetch_add(1, Ordering::Relaxed)
    )
}

async fn dispatch(
    State(app): State<Arc<App>>,
    req: axum::extract::Request,
) -> axum::response::Response {
    let id = request_id();
    let started = Instant::now();
    let (parts, body) = req.into_parts();
    let connection = parts.extensions.get::<Connection>().cloned();
    let span = tracing::info_span!(
        "request",
        role = %app.name,
        id = %id,
        method = %parts.method,
        path = %parts.uri.path(),
        client = %connection
            .as_ref()
            .and_then(|c| c.client.as_ref())
            .map_or_else(|| "-".to_string(), |p| format!("{}:{}", p.role.as_str(), p.name)),
    );
    async move {
        let response = answer(&app, parts, body, connection).await;
        let response = redact_server_error(response, &id);
        tracing::info!(
            status = response.status,
            ms = format_args!("{:.1}", started.elapsed().as_secs_f64() * 1e3),
            "answered"
        );
        to_axum(response, &id)
    }
    .instrument(span)
    .await
}

async fn answer(
    app: &Arc<App>,
    parts: axum::http::request::Parts,
    body: Body,
    connection: Option<Connection>,
) -> Response {
    if let Some(length) = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        && length > app.limits.max_body as u64
    {
        // A body a few times the limit is read and dropped first, so that the client, still
        // writing, reads a 413 rather than a reset connection; a larger one is not worth
        // reading: the connection closes after the answer.
        if length <= 8 * app.limits.max_body as u64 {
            let _ = tokio::time::timeout(app.limits.request_timeout, drain(body)).await;
        }
        return too_large(app.limits.max_body);
    }
    let bytes = match tokio::time::timeout(
        app.limits.request_timeout,
        axum::body::to_bytes(body, app.limits.max_body),
    )
    .await
    {
        Err(_) => {
            return ApiError::new(
                408,
                "request_timeout",
                "the request body did not arrive in time",
            )
            .into();
        }
        Ok(Err(e)) => {
            // to_bytes reports a length-limit error through the error source chain.
            let too_big = std::error::Error::source(&e)
                .is_some_and(|s| s.is::<http_body_util::LengthLimitError>());
            if too_big {
                return too_large(app.limits.max_body);
            }
            return ApiError::bad_request("malformed_request", format!("reading the body: {e}"))
                .into();
        }
        Ok(Ok(bytes)) => bytes,
    };
    let Ok(permit) = app.in_flight.clone().try_acquire_owned() else {
        return ApiError::unavailable(
            "busy",
            format!(
                "more than {} requests at once; retry in a second",
                app.limits.max_in_flight
            ),
        )
        .into();
    };
    let request = Request {
        method: parts.method.as_str().to_string(),
        path: parts.uri.path().to_string(),
        query: parts.uri.query().map(str::to_string),
        headers: parts
            .headers
            .iter()
            .map(|(n, v)| {
                (
                    n.as_str().to_string(),
                    String::from_utf8_lossy(v.as_bytes()).trim().to_string(),
                )
            })
            .collect(),
        body: bytes.to_vec(),
        peer: connection.as_ref().map(|c| c.peer_addr),
        client: connection.and_then(|c| c.client),
    };
    let handler = app.handler.clone();
    let span = tracing::Span::current();
    let joined = tokio::task::spawn_blocking(move || {
        let _permit = permit;
        let _enter = span.enter();
        handler(&request)
    })
    .await;
    match joined {
        Ok(response) => response,
        Err(e) => ApiError::internal(format!("the handler failed: {e}")).into(),
    }
}

async fn drain(mut body: Body) {
    use http_body_util::BodyExt;
    while let Some(Ok(_)) = body.frame().await {}
}

fn too_large(max: usize) -> Response {
    ApiError::new(
        413,
        "body_too_large",
        format!("the body exceeds {max} bytes"),
    )
    .into()
}

/// Keeps a 5xx's code, moves its detail to the log.
fn redact_server_error(response: Response, id: &str) -> Response {
    if response.status < 500 {
        return response;
    }
    let value: serde_json::Value = serde_json::from_slice(&response.body).unwrap_or_default();
    let code = value
        .get("error")
        .and_then(|v| v.as_str())
        .unwrap_or("internal_error")
        .to_string();
    let detail = value.get("detail").and_then(|v| v.as_str()).unwrap_or("");
    tracing::error!(status = response.status, code = %code, "{detail}");
    let public = match code.as_str() {
        // Says nothing of the inside, and tells the client what to do.
        "busy" => detail.to_string(),
        _ => format!("the server could not answer; its log has the cause under request id {id}"),
    };
    Response::json(
        response.status,
        &serde_json::json!({ "error": code, "detail": public, "request_id": id }),
    )
}

fn to_axum(response: Response, id: &str) -> axum::response::Response {
    let Response {
        status,
        content_type,
        body,
        headers: extra,
    } = response;
    let mut out = axum::response::Response::new(Body::from(body));
    *out.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let headers = out.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    for (name, value) in &extra {
        if let Ok(v) = HeaderValue::from_str(value) {
            headers.append(*name, v);
        }
    }
    if let Ok(v) = HeaderValue::from_str(id) {
        headers.insert("x-request-id", v);
    }
    out
}

/// A server on a thread of its own (the demo, tests, benchmarks): stopped, with its requests
/// finished, when dropped.
pub struct Background {
    url: String,
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<io::Result<()>>>,
}

impl Background {
    /// Binds `listen` and serves `handler` until dropped.
    pub fn start(
        listen: &str,
        handler: Handler,
        limits: Limits,
        tls: Option<ServerTls>,
        name: &str,
    ) -> io::Result<Background> {
        let server = Server::bind(listen, tls, name)?;
        let (url, addr) = (server.url(), server.local_addr());
        let (tx, rx) = oneshot::channel();
        let thread = std::thread::Builder::new()
            .name(format!("{name}-server"))
            .spawn(move || server.run(handler, limits, Stop::Channel(rx)))?;
        Ok(Background {
            url,
            addr,
            stop: Some(tx),
            thread: Some(thread),
        })
    }

    /// `https://HOST:PORT` (or `http://` without TLS).
    pub fn url(&self) -> String {
        self.url.clone()
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
