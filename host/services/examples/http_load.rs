//! Load figures for a running role (scripts/bench-http runs it against `simlab gateway serve`):
//!
//! - `stall URL CA N M`: opens N connections that send half a request head and then nothing
//!   (slowloris), and while they hang, times M ordinary `GET /v1/health` requests on fresh
//!   connections; then the same M requests with no stalled connection, for comparison. Prints
//!   one line of JSON per phase with the p50/p99/max latency in milliseconds.
//! - `idle URL CA N PID`: opens N TLS keep-alive connections, makes one request on each, keeps
//!   them all open, and prints the server's resident memory (VmRSS of PID) before and after.
//!
//! - `wait URL CA N PID PATH COOKIE`: opens N TLS connections that each ask `GET PATH` with
//!   the session cookie — a page long-polling a transaction (seed 002's `/transactions/<id>/wait`)
//!   — and prints the server's resident memory before and while it holds them all, and how
//!   many of a sample were still held (unanswered) at the end.
//!
//! Not a test: numbers, for the README's table. Every loop is bounded and the program stops
//! by itself.

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

type Tls = tokio_rustls::client::TlsStream<TcpStream>;

fn usage() -> ! {
    eprintln!(
        "usage: http_load stall URL CA N M | idle URL CA N PID | wait URL CA N PID PATH COOKIE"
    );
    std::process::exit(2)
}

fn connector(ca: &str) -> tokio_rustls::TlsConnector {
    let pem = std::fs::read(ca).unwrap_or_else(|e| panic!("{ca}: {e}"));
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(&pem) {
        roots.add(cert.expect("CA PEM")).expect("CA certificate");
    }
    #[allow(deprecated)]
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    tokio_rustls::TlsConnector::from(Arc::new(config))
}

async fn connect(addr: &str, tls: &tokio_rustls::TlsConnector) -> std::io::Result<Tls> {
    let tcp = TcpStream::connect(addr).await?;
    tcp.set_nodelay(true)?;
    let host = addr.rsplit_once(':').map_or(addr, |(h, _)| h).to_string();
    let name = ServerName::try_from(host).map_err(std::io::Error::other)?;
    tls.connect(name, tcp).await
}

/// One `GET /v1/health` on `stream`, read up to the end of the (small) answer.
async fn health(stream: &mut Tls, host: &str, close: bool) -> std::io::Result<()> {
    let connection = if close { "close" } else { "keep-alive" };
    stream
        .write_all(
            format!("GET /v1/health HTTP/1.1\r\nHost: {host}\r\nConnection: {connection}\r\n\r\n")
                .as_bytes(),
        )
        .await?;
    let mut buf = vec![0u8; 4096];
    let mut got = Vec::new();
    loop {
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        got.extend_from_slice(&buf[..n]);
        // The health answer is a few dozen bytes of JSON ending in a newline.
        if let Some(end) = got.windows(4).position(|w| w == b"\r\n\r\n")
            && got[end + 4..].ends_with(b"\n")
        {
            break;
        }
    }
    if got.starts_with(b"HTTP/1.1 200") {
        Ok(())
    } else {
        Err(std::io::Error::other(format!(
            "unexpected answer {:?}",
            String::from_utf8_lossy(&got[..got.len().min(40)])
        )))
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

async fn timed_requests(addr: &str, tls: &tokio_rustls::TlsConnector, m: usize) -> Vec<f64> {
    let mut ms = Vec::with_capacity(m);
    for _ in 0..m {
        let started = Instant::now();
        let ok = tokio::time::timeout(Duration::from_secs(10), async {
            let mut s = connect(addr, tls).await?;
            health(&mut s, addr, true).await
        })
        .await;
        match ok {
            Ok(Ok(())) => ms.push(started.elapsed().as_secs_f64() * 1e3),
            Ok(Err(e)) => eprintln!("http_load: request failed: {e}"),
            Err(_) => eprintln!("http_load: request timed out after 10 s"),
        }
    }
    ms.sort_by(f64::total_cmp);
    ms
}

fn report(phase: &str, stalled: usize, ms: &[f64], asked: usize) {
    println!(
        "{{\"phase\":\"{phase}\",\"stalled\":{stalled},\"answered\":{},\"asked\":{asked},\"p50_ms\":{:.2},\"p99_ms\":{:.2},\"max_ms\":{:.2}}}",
        ms.len(),
        percentile(ms, 0.5),
        percentile(ms, 0.99),
        ms.last().copied().unwrap_or(f64::NAN)
    );
}

async fn stall(addr: &str, tls: tokio_rustls::TlsConnector, n: usize, m: usize) {
    let baseline = timed_requests(addr, &tls, m).await;
    report("baseline", 0, &baseline, m);
    let mut stalled = Vec::with_capacity(n);
    for _ in 0..n {
        match connect(addr, &tls).await {
            Ok(mut s) => {
                // Half a head, then silence.
                let _ = s
                    .write_all(b"POST /v1/billing/batches HTTP/1.1\r\nHost: x\r\n")
                    .await;
                stalled.push(s);
            }
            Err(e) => {
                eprintln!(
                    "http_load: stalled connection {} failed: {e}",
                    stalled.len()
                );
                break;
            }
        }
    }
    let under = timed_requests(addr, &tls, m).await;
    report("with_stalled", stalled.len(), &under, m);
    drop(stalled);
}

fn rss_kib(pid: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

async fn idle(addr: &str, tls: tokio_rustls::TlsConnector, n: usize, pid: &str) {
    let before = rss_kib(pid);
    let mut open = Vec::with_capacity(n);
    let started = Instant::now();
    for i in 0..n {
        let result = async {
            let mut s = connect(addr, &tls).await?;
            health(&mut s, addr, false).await?;
            Ok::<_, std::io::Error>(s)
        }
        .await;
        match result {
            Ok(s) => open.push(s),
            Err(e) => {
                eprintln!("http_load: keep-alive connection {i} failed: {e}");
                break;
            }
        }
    }
    let took = started.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = rss_kib(pid);
    println!(
        "{{\"phase\":\"idle\",\"connections\":{},\"rss_before_kib\":{before},\"rss_after_kib\":{after},\"kib_per_connection\":{:.1},\"open_s\":{took:.1}}}",
        open.len(),
        (after.saturating_sub(before)) as f64 / open.len().max(1) as f64
    );
    drop(open);
}

async fn wait(
    addr: &str,
    tls: tokio_rustls::TlsConnector,
    n: usize,
    pid: &str,
    path: &str,
    cookie: &str,
) {
    let before = rss_kib(pid);
    let mut open = Vec::with_capacity(n);
    let started = Instant::now();
    for i in 0..n {
        let result = async {
            let mut s = connect(addr, &tls).await?;
            s.write_all(
                format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nCookie: {cookie}\r\n\r\n")
                    .as_bytes(),
            )
            .await?;
            s.flush().await?;
            Ok::<_, std::io::Error>(s)
        }
        .await;
        match result {
            Ok(s) => open.push(s),
            Err(e) => {
                eprintln!("http_load: waiting page {i} failed: {e}");
                break;
            }
        }
    }
    let took = started.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = rss_kib(pid);
    // A sample of the pages: none may have been answered yet (the server holds each).
    let mut held = 0;
    let sample = open.len().min(20);
    for s in open.iter_mut().take(sample) {
        let mut buf = [0u8; 64];
        if tokio::time::timeout(Duration::from_millis(5), s.read(&mut buf))
            .await
            .is_err()
        {
            held += 1;
        }
    }
    println!(
        "{{\"phase\":\"wait\",\"pages\":{},\"rss_before_kib\":{before},\"rss_after_kib\":{after},\"kib_per_page\":{:.1},\"open_s\":{took:.1},\"sample\":{sample},\"held\":{held}}}",
        open.len(),
        (after.saturating_sub(before)) as f64 / open.len().max(1) as f64
    );
    drop(open);
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (mode, url, ca, n, extra, rest) = match args.as_slice() {
        [mode, url, ca, n, extra, rest @ ..] => (mode, url, ca, n, extra, rest),
        _ => usage(),
    };
    let addr = url
        .strip_prefix("https://")
        .unwrap_or_else(|| usage())
        .trim_end_matches('/')
        .to_string();
    let n: usize = n.parse().unwrap_or_else(|_| usage());
    let tls = connector(ca);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        match mode.as_str() {
            "stall" => stall(&addr, tls, n, extra.parse().unwrap_or_else(|_| usage())).await,
            "idle" => idle(&addr, tls, n, extra).await,
            "wait" => match rest {
                [path, cookie] => wait(&addr, tls, n, extra, path, cookie).await,
                _ => usage(),
            },
            _ => usage(),
        }
    });
}
