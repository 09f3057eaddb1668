//! The HTTPS stack on real loopback sockets: simlab's server (hyper/axum, rustls) against
//! simlab's client (ureq) and raw TCP, with identities from a real CA. What a role relies on:
//! who the client is, the limits, a 5xx that tells nothing, a panic that costs one answer,
//! long waits that hold no thread, and a shutdown that finishes what it started.

use simlab_services::http::client::{self, ClientError, Url};
use simlab_services::http::server::{self, Background, Connection, Handler, Limits, Server, Stop};
use simlab_services::http::tls::{ClientTls, Identity, ServerTls};
use simlab_services::http::{ApiError, Request, Response, Role};
use simlab_services::pki::gateway::ca::Ca;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

struct Pki {
    ca: Ca,
}

impl Pki {
    fn new() -> Pki {
        Pki {
            ca: Ca::ephemeral("simlab-test").unwrap(),
        }
    }

    fn identity(&self, role: Role, name: &str) -> Identity {
        let issued = self
            .ca
            .issue_tls(role, name, &["localhost".into(), "127.0.0.1".into()], 3600)
            .unwrap();
        Identity::from_der(
            issued.certificate_der.clone(),
            issued.key_pkcs8_der.to_vec(),
            vec![self.ca.certificate().der.clone()],
        )
    }

    fn server(&self) -> ServerTls {
        let id = self.identity(Role::Server, "test-server");
        ServerTls::new(&id, &id.ca).unwrap()
    }

    fn client(&self, who: Option<(Role, &str)>) -> ClientTls {
        ClientTls {
            anchors: vec![self.ca.certificate().der.clone().into()],
            identity: who.map(|(role, name)| self.identity(role, name)),
        }
    }
}

/// Answers `/whoami` with the client's role and name, `/fail` with a 500 whose detail is a
/// secret-looking database error, `/panic` by panicking, `/slow` after 300 ms.
fn handler(calls: Arc<AtomicUsize>) -> Handler {
    Arc::new(move |req: &Request| {
        calls.fetch_add(1, Ordering::SeqCst);
        match req.path.as_str() {
            "/whoami" => Response::ok(&serde_json::json!({
                "role": req.client.as_ref().map(|p| p.role.as_str()),
                "name": req.client.as_ref().map(|p| p.name.clone()),
            })),
            "/operator" => match req.require(&[Role::Operator]) {
                Ok(p) => Response::ok(&serde_json::json!({ "name": p.name })),
                Err(e) => e.into(),
            },
            "/fail" => ApiError::unavailable(
                "database_unavailable",
                "disk I/O error at /var/lib/secret/gateway.sqlite",
            )
            .into(),
            "/panic" => panic!("a bug in a handler"),
            "/slow" => {
                std::thread::sleep(Duration::from_millis(300));
                Response::ok(&serde_json::json!({ "slow": true }))
            }
            "/echo" => Response::ok(&serde_json::json!({ "bytes": req.body.len() })),
            _ => ApiError::not_found("no_such_endpoint", "no").into(),
        }
    })
}

fn start(pki: &Pki, limits: Limits) -> (Background, Arc<AtomicUsize>) {
    let calls = Arc::new(AtomicUsize::new(0));
    let bg = Background::start(
        "127.0.0.1:0",
        handler(calls.clone()),
        limits,
        Some(pki.server()),
        "test",
    )
    .unwrap();
    (bg, calls)
}

fn url(bg: &Background, tls: &ClientTls) -> Url {
    Url::parse(&bg.url()).unwrap().with_tls(tls)
}

fn get(url: &Url, path: &str) -> (u16, serde_json::Value) {
    let a = client::request(url, "GET", path, None).unwrap();
    (
        a.status,
        serde_json::from_slice(&a.body).unwrap_or(serde_json::Value::Null),
    )
}

#[test]
fn the_client_certificate_names_the_caller_and_roles_are_enforced() {
    let pki = Pki::new();
    let (bg, _) = start(&pki, Limits::default());
    let anonymous = url(&bg, &pki.client(None));
    let (st, v) = get(&anonymous, "/whoami");
    assert_eq!((st, v["role"].is_null()), (200, true), "{v}");
    let seller = url(&bg, &pki.client(Some((Role::Seller, "cafe-1"))));
    let (st, v) = get(&seller, "/whoami");
    assert_eq!(
        (st, v["role"].as_str(), v["name"].as_str()),
        (200, Some("seller"), Some("cafe-1"))
    );
    let (st, v) = get(&seller, "/operator");
    assert_eq!((st, v["error"].as_str()), (403, Some("wrong_role")), "{v}");
    let (st, v) = get(&anonymous, "/operator");
    assert_eq!(
        (st, v["error"].as_str()),
        (403, Some("client_certificate_required"))
    );
    let operator = url(&bg, &pki.client(Some((Role::Operator, "alice"))));
    assert_eq!(get(&operator, "/operator").0, 200);
}

#[test]
fn a_certificate_from_another_ca_fails_the_handshake_and_so_does_an_unpinned_server() {
    let pki = Pki::new();
    let other = Pki::new();
    let (bg, calls) = start(&pki, Limits::default());
    // A client certificate from another CA, the server trusted.
    let foreign = ClientTls {
        anchors: vec![pki.ca.certificate().der.clone().into()],
        identity: Some(other.identity(Role::Operator, "mallory")),
    };
    match client::request(&url(&bg, &foreign), "GET", "/whoami", None) {
        Err(ClientError::Tls { .. } | ClientError::Io { .. }) => {}
        other => panic!("a foreign client certificate got {other:?}"),
    }
    // A client that pins another CA refuses the server.
    match client::request(&url(&bg, &other.client(None)), "GET", "/whoami", None) {
        Err(ClientError::Tls { reason, .. }) => assert!(reason.contains("certificate"), "{reason}"),
        other => panic!("an unpinned server was accepted: {other:?}"),
    }
    assert_eq!(
        calls.load(Ordering::SeqCst),
        0,
        "no request reached the handler"
    );
}

#[test]
fn a_5xx_tells_the_client_a_request_id_and_the_log_the_cause() {
    let pki = Pki::new();
    let (bg, _) = start(&pki, Limits::default());
    let u = url(&bg, &pki.client(None));
    let (st, v) = get(&u, "/fail");
    assert_eq!(
        (st, v["error"].as_str()),
        (503, Some("database_unavailable"))
    );
    let detail = v["detail"].as_str().unwrap();
    assert!(
        !detail.contains("sqlite") && !detail.contains("/var"),
        "{detail}"
    );
    assert!(
        v["request_id"]
            .as_str()
            .is_some_and(|id| detail.contains(id)),
        "{v}"
    );
}

#[test]
fn a_panicking_handler_costs_one_500_and_the_server_goes_on() {
    let pki = Pki::new();
    let (bg, _) = start(&pki, Limits::default());
    let u = url(&bg, &pki.client(None));
    let (st, v) = get(&u, "/panic");
    assert_eq!(
        (st, v["error"].as_str()),
        (500, Some("internal_error")),
        "{v}"
    );
    assert_eq!(get(&u, "/whoami").0, 200);
}

#[test]
fn bodies_and_heads_over_the_limits_are_refused_and_the_server_goes_on() {
    let pki = Pki::new();
    let (bg, calls) = start(
        &pki,
        Limits {
            max_body: 64 * 1024,
            ..Limits::default()
        },
    );
    let u = url(&bg, &pki.client(None));
    let big = vec![b'x'; 65 * 1024];
    let a = client::request(&u, "POST", "/echo", Some(&big)).unwrap();
    assert_eq!(a.status, 413);
    let fits = vec![b'x'; 63 * 1024];
    assert_eq!(
        client::request(&u, "POST", "/echo", Some(&fits))
            .unwrap()
            .status,
        200
    );
    // Plain TCP against a TLS port: a truncated, nonsensical handshake.
    let mut raw = TcpStream::connect(bg.local_addr()).unwrap();
    raw.write_all(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00])
        .unwrap();
    drop(raw);
    assert_eq!(get(&u, "/whoami").0, 200);
    assert_eq!(
        calls.load(Ordering::SeqCst),
        2,
        "the 413 never reached the handler"
    );
}

#[test]
fn more_requests_than_allowed_at_once_get_503_busy_not_a_queue() {
    let pki = Pki::new();
    let (bg, _) = start(
        &pki,
        Limits {
            max_in_flight: 2,
            ..Limits::default()
        },
    );
    let u = url(&bg, &pki.client(None));
    let statuses: Vec<u16> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..6)
            .map(|_| s.spawn(|| client::request(&u, "GET", "/slow", None).unwrap().status))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let busy = statuses.iter().filter(|&&s| s == 503).count();
    let ok = statuses.iter().filter(|&&s| s == 200).count();
    assert!(ok >= 2 && busy >= 1 && ok + busy == 6, "{statuses:?}");
}

#[test]
fn a_stalled_request_head_is_dropped_after_the_head_timeout() {
    let pki = Pki::new();
    let (bg, _) = start(
        &pki,
        Limits {
            header_timeout: Duration::from_millis(500),
            handshake_timeout: Duration::from_millis(500),
            ..Limits::default()
        },
    );
    // Connects and says nothing: the handshake deadline closes it.
    let mut silent = TcpStream::connect(bg.local_addr()).unwrap();
    silent
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let started = Instant::now();
    let mut buf = [0u8; 16];
    let n = silent.read(&mut buf).unwrap_or(0);
    assert_eq!(n, 0, "the server closed the silent connection");
    assert!(started.elapsed() < Duration::from_secs(4));
    let u = url(&bg, &pki.client(None));
    assert_eq!(get(&u, "/whoami").0, 200);
}

#[test]
fn long_waits_on_an_async_route_hold_no_thread() {
    // 200 requests wait 1 s each at once on a server whose blocking pool is tiny and whose
    // runtime has two workers: they can only all finish in about a second if waiting costs
    // no thread.
    let pki = Pki::new();
    let limits = Limits {
        max_in_flight: 1,
        ..Limits::default()
    };
    let router = axum::Router::new().route(
        "/wait",
        axum::routing::get(
            |axum::Extension(c): axum::Extension<Connection>| async move {
                tokio::time::sleep(Duration::from_secs(1)).await;
                c.peer_addr.ip().to_string()
            },
        ),
    );
    let router = router.merge(server::blocking_router(
        handler(Arc::new(AtomicUsize::new(0))),
        limits,
        "test",
    ));
    let srv = Server::bind("127.0.0.1:0", Some(pki.server()), "test").unwrap();
    let base = srv.url();
    let (tx, rx) = tokio::sync::oneshot::channel();
    let thread = std::thread::spawn(move || srv.run_router(router, limits, Stop::Channel(rx)));
    let u = Url::parse(&base).unwrap().with_tls(&pki.client(None));
    let started = Instant::now();
    let statuses: Vec<u16> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..200)
            .map(|_| s.spawn(|| client::request(&u, "GET", "/wait", None).unwrap().status))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let took = started.elapsed();
    assert!(statuses.iter().all(|&s| s == 200), "{statuses:?}");
    // Serialised on one thread they would take 200 s; generous for a loaded 2-core machine.
    assert!(took < Duration::from_secs(30), "{took:?}");
    drop(tx);
    thread.join().unwrap().unwrap();
}

#[test]
fn shutdown_finishes_the_request_in_flight() {
    let pki = Pki::new();
    let (bg, calls) = start(&pki, Limits::default());
    let u = url(&bg, &pki.client(None));
    let waiting = std::thread::spawn(move || client::request(&u, "GET", "/slow", None));
    while calls.load(Ordering::SeqCst) == 0 {
        std::thread::sleep(Duration::from_millis(5));
    }
    drop(bg); // stop, as SIGTERM does: the slow request is answered first
    let answer = waiting.join().unwrap().unwrap();
    assert_eq!(answer.status, 200);
}

#[test]
fn plain_http_serves_only_when_asked_and_knows_no_client() {
    let calls = Arc::new(AtomicUsize::new(0));
    let bg = Background::start(
        "127.0.0.1:0",
        handler(calls),
        Limits::default(),
        None,
        "plain",
    )
    .unwrap();
    assert!(bg.url().starts_with("http://"));
    let u = Url::parse(&bg.url()).unwrap();
    assert!(u.is_plain());
    let (st, v) = get(&u, "/operator");
    assert_eq!(
        (st, v["error"].as_str()),
        (403, Some("client_certificate_required"))
    );
}
