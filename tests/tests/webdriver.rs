//! The WebDriver client (`simlab_hil::webdriver`) against the real headless Chromium: a form
//! served from a thread of the test (plain HTTP on loopback) is filled and submitted, the next
//! page's text is waited for, a page whose meta refresh leads to a held-open long poll is waited
//! through, and a screenshot is saved under `target/test-artifacts/webdriver/`. A second test
//! serves HTTPS with `openssl s_server` and a self-signed certificate: trusted by its pin, the
//! page loads; pinned to another key, Chromium refuses it.
//!
//! Without chromium and chromedriver the tests skip, except under `SIMLAB_HIL=require`, where
//! `Browser::start` fails them.

use simlab_hil::webdriver::Browser;
use simlab_hil::{Process, require, run_cmd, temp_path, workspace_root};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// How long `/wait` holds its answer: the commands issued meanwhile must wait, not fail.
const HOLD: Duration = Duration::from_secs(3);

const FORM: &str = "<!doctype html><html><head><title>form</title></head><body>\
    <form method=\"post\" action=\"/echo\">\
    <input id=\"name\" name=\"name\" value=\"to be cleared\">\
    <button id=\"go\" type=\"submit\">Send</button>\
    </form></body></html>";

const SLOW: &str = "<!doctype html><html><head><title>slow</title>\
    <meta http-equiv=\"refresh\" content=\"1; url=/wait\"></head>\
    <body><p id=\"state\">waiting</p></body></html>";

const DONE: &str = "<!doctype html><html><head><title>done</title></head>\
    <body><p id=\"state\">done after the long poll</p></body></html>";

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// application/x-www-form-urlencoded → the value of `name`.
fn form_value(body: &str, name: &str) -> Option<String> {
    body.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=')?;
        (k == name).then(|| {
            let v = v.replace('+', " ");
            let mut out = Vec::new();
            let bytes = v.as_bytes();
            let mut i = 0;
            while i < bytes.len() {
                let hex = bytes
                    .get(i + 1..i + 3)
                    .and_then(|h| u8::from_str_radix(std::str::from_utf8(h).ok()?, 16).ok());
                match (bytes[i], hex) {
                    (b'%', Some(b)) => {
                        out.push(b);
                        i += 3;
                    }
                    (b, _) => {
                        out.push(b);
                        i += 1;
                    }
                }
            }
            String::from_utf8_lossy(&out).into_owned()
        })
    })
}

/// One HTTP/1.1 exchange (the connection closed after it).
fn answer(stream: TcpStream) -> std::io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut request_line = String::new();
    if reader.read_line(&mut request_line)? == 0 {
        return Ok(()); // a preconnect that sent nothing
    }
    let mut length = 0;
    loop {
        let mut line = String::new();
        reader.read_line(&mut line)?;
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        if let Some((k, v)) = line.split_once(':')
            && k.eq_ignore_ascii_case("content-length")
        {
            length = v.trim().parse().unwrap_or(0);
        }
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body)?;
    let body = String::from_utf8_lossy(&body);

    let mut parts = request_line.split_whitespace();
    let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let (status, page) = match (method, path) {
        ("GET", "/") => ("200 OK", FORM.to_string()),
        ("POST", "/echo") => {
            let name = form_value(&body, "name").unwrap_or_default();
            (
                "200 OK",
                format!(
                    "<!doctype html><html><head><title>echo</title></head><body>\
                     <p id=\"echo\">You typed: {}</p><a id=\"next\" href=\"/slow\">next</a>\
                     </body></html>",
                    escape(&name)
                ),
            )
        }
        ("GET", "/slow") => ("200 OK", SLOW.to_string()),
        ("GET", "/wait") => {
            std::thread::sleep(HOLD);
            ("200 OK", DONE.to_string())
        }
        _ => ("404 Not Found", "not found".to_string()),
    };
    let mut stream = reader.into_inner();
    write!(
        stream,
        "HTTP/1.1 {status}\r\nContent-Type: text/html; charset=utf-8\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{page}",
        page.len()
    )?;
    stream.flush()
}

/// The test's web site on a loopback port: a thread per connection (Chromium opens spare
/// connections that may never carry a request).
fn serve() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind the test site");
    let addr = listener.local_addr().expect("its address");
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            std::thread::spawn(move || {
                let _ = answer(stream);
            });
        }
    });
    format!("http://{addr}")
}

fn artifacts() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("target"));
    let dir = workspace_root()
        .join(target)
        .join("test-artifacts/webdriver");
    std::fs::create_dir_all(&dir).expect("create target/test-artifacts/webdriver");
    dir
}

fn assert_png(path: &Path) {
    let png = std::fs::read(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    assert!(
        png.starts_with(b"\x89PNG\r\n\x1a\n") && png.len() > 1000,
        "{} is not a PNG ({} bytes)",
        path.display(),
        png.len()
    );
}

#[test]
fn fills_a_form_clicks_and_waits_through_a_long_poll() {
    // Under SIMLAB_HIL=require a missing chromium or chromedriver panics here.
    let Some(browser) = Browser::start(&[]) else {
        return;
    };
    let site = serve();

    browser.goto(&format!("{site}/"));
    assert_eq!(browser.current_url(), format!("{site}/"));
    assert_eq!(browser.text("#missing"), None);
    assert_eq!(browser.text("#go").as_deref(), Some("Send"));
    browser.fill("#name", "Zoë & <b>Bob</b>");
    browser.click("#go");
    let echo = browser.wait_text("#echo", "You typed", Duration::from_secs(20));
    assert_eq!(echo, "You typed: Zoë & <b>Bob</b>");
    assert_eq!(browser.current_url(), format!("{site}/echo"));
    assert!(
        browser
            .source()
            .contains("You typed: Zoë &amp; &lt;b&gt;Bob&lt;/b&gt;")
    );
    assert_eq!(browser.text("#missing"), None);

    let shot = artifacts().join("echo.png");
    let _ = std::fs::remove_file(&shot);
    browser.screenshot(&shot);
    assert_png(&shot);

    // The seed-002 pattern: a meta refresh to a URL the server holds open. The commands that
    // poll meanwhile wait for the navigation (or find no element) and do not fail.
    let started = Instant::now();
    browser.click("#next");
    let state = browser.wait_text("#state", "done", Duration::from_secs(30));
    assert_eq!(state, "done after the long poll");
    assert!(started.elapsed() >= HOLD, "{:?}", started.elapsed());
    assert_eq!(browser.current_url(), format!("{site}/wait"));
    browser.screenshot(&artifacts().join("after-long-poll.png"));
    assert_png(&artifacts().join("after-long-poll.png"));
}

/// A self-signed P-256 certificate for 127.0.0.1 and its key: (cert, key).
fn self_signed(name: &str) -> (PathBuf, PathBuf) {
    let (cert, key) = (
        temp_path(&format!("{name}.crt")),
        temp_path(&format!("{name}.key")),
    );
    let out = run_cmd(
        Command::new("openssl")
            .args(["req", "-x509", "-newkey", "ec", "-pkeyopt"])
            .args(["ec_paramgen_curve:P-256", "-nodes", "-days", "1"])
            .args(["-subj", "/CN=simlab webdriver test"])
            .args(["-addext", "subjectAltName=IP:127.0.0.1"])
            .arg("-keyout")
            .arg(&key)
            .arg("-out")
            .arg(&cert),
        Duration::from_secs(30),
    );
    assert!(out.status.success(), "openssl req: {out:?}");
    (cert, key)
}

#[test]
fn trusts_certificates_by_their_pin_only() {
    if !require("openssl") {
        return;
    }
    let (cert, key) = self_signed("webdriver-server");
    let (other, _) = self_signed("webdriver-other");

    // openssl s_server -www answers every GET with a status page naming itself.
    let log = temp_path("webdriver-s_server.log");
    let mut server = Process::spawn(
        "openssl s_server",
        Command::new("openssl")
            .args(["s_server", "-accept", "127.0.0.1:0", "-www", "-cert"])
            .arg(&cert)
            .arg("-key")
            .arg(&key)
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&log).expect("s_server log"))
            .stderr(Stdio::null()),
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    let url = loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        if let Some(addr) = text.lines().find_map(|l| l.strip_prefix("ACCEPT ")) {
            break format!("https://{}/", addr.trim());
        }
        assert!(
            server.try_wait().is_none() && Instant::now() < deadline,
            "openssl s_server did not start: {text}"
        );
        std::thread::sleep(Duration::from_millis(20));
    };

    // Under SIMLAB_HIL=require a missing chromium or chromedriver panics here.
    let Some(trusting) = Browser::start(&[&cert]) else {
        return;
    };
    trusting.goto(&url);
    let page = trusting.wait_text("pre", "s_server", Duration::from_secs(20));
    assert!(page.contains("-www"), "{page}");
    trusting.screenshot(&artifacts().join("pinned-tls.png"));
    assert_png(&artifacts().join("pinned-tls.png"));
    drop(trusting);

    // Pinned to another key: Chromium shows its certificate error instead of the page.
    let refusing = Browser::start(&[&other]).expect("the browser started above");
    refusing.goto(&url);
    assert_eq!(refusing.text("pre"), None, "{}", refusing.source());
    let source = refusing.source();
    assert!(source.contains("ERR_CERT"), "{source}");
}
