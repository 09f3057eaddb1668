//! A small blocking WebDriver client that drives Debian's headless Chromium through
//! `chromedriver`, for the tests of the web sites (seed 002's, driven by a real browser).
//!
//! It speaks the W3C WebDriver protocol (JSON over HTTP to the local chromedriver) with `ureq`,
//! the blocking HTTP client the workspace already builds, and `serde_json`, rather than wrapping
//! `fantoccini`: fantoccini is async (each call would need a tokio runtime here) and, even
//! without its TLS features, adds about 45 crates the workspace does not otherwise build (Mozilla's
//! `webdriver` crate with `url`, `cookie`, `time` and the ICU segmenter stack), while the handful of
//! commands these tests need (a session, navigation, finding elements, clear/keys/click, text,
//! source, screenshot) are a few lines each. The only other crate it uses is `base64`, already in
//! the tree, for screenshots and certificate pins; the pins' SHA-256 comes from the `openssl` CLI.
//!
//! A [`Browser`] owns its chromedriver (and through it Chromium) and a fresh profile directory;
//! dropping it, panics included, ends the session, stops chromedriver and waits for it and for
//! Chromium's processes, and removes the profile (chromedriver's log is kept after a panic). Commands block while a navigation is pending (a page whose meta refresh leads to
//! a long poll), up to a page-load timeout of [`PAGE_LOAD_TIMEOUT`].

use crate::{Process, find_tool, missing, temp_path};
use base64::Engine as _;
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// How long a navigation (`goto`, a click that submits, a meta refresh to a long poll) may take
/// before chromedriver reports a timeout. The seed-002 site holds `/wait` open up to 25 s.
pub const PAGE_LOAD_TIMEOUT: Duration = Duration::from_secs(90);
/// Chromedriver's script timeout (no command here runs scripts; set so none hangs forever).
const SCRIPT_TIMEOUT: Duration = Duration::from_secs(30);
/// One HTTP exchange with chromedriver: longer than any page load it may wait for.
const HTTP_TIMEOUT: Duration = Duration::from_secs(150);
/// Chromedriver's start, and Chromium's (the new session).
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// The W3C key of an element reference.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// The apt-get line that installs what [`Browser::start`] needs.
const INSTALL: &str = "apt-get install -y chromium chromium-driver";

/// Headless Chromium under a chromedriver of its own, with one session.
pub struct Browser {
    agent: ureq::Agent,
    /// `http://127.0.0.1:PORT`
    driver_url: String,
    /// `http://127.0.0.1:PORT/session/ID`, once the session exists.
    session: Option<String>,
    driver: Option<Process>,
    /// Holds `profile/`, Chromium's `home/` and `chromedriver.log`.
    dir: PathBuf,
}

/// An error that chromedriver answered (the W3C `error` code and its message).
#[derive(Debug)]
struct WdError {
    error: String,
    message: String,
}

impl std::fmt::Display for WdError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Chromedriver's messages carry a multi-line stack trace after the first line.
        let first = self.message.lines().next().unwrap_or_default();
        write!(f, "{}: {first}", self.error)
    }
}

enum Method {
    Get,
    Post(Value),
}

/// An override from the environment (a path or a name on PATH), or the default name on PATH.
fn locate(var: &str, default: &str) -> Result<PathBuf, String> {
    match std::env::var(var) {
        Ok(v) if !v.is_empty() => find_tool(&v).ok_or_else(|| format!("{var}={v} is not found")),
        _ => find_tool(default).ok_or_else(|| format!("{default} is not on PATH")),
    }
}

fn openssl(args: &[&str], input: Option<&[u8]>) -> Vec<u8> {
    use std::io::Write;
    let tool = find_tool("openssl").expect("openssl, to pin certificates (scripts/setup)");
    let mut child = Command::new(tool)
        .args(args)
        .stdin(if input.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start openssl");
    if let Some(input) = input {
        // Small inputs (a public key): written whole before the output is read.
        let mut stdin = child.stdin.take().expect("openssl stdin");
        stdin.write_all(input).expect("write to openssl");
    }
    let out = child.wait_with_output().expect("run openssl");
    assert!(
        out.status.success() && !out.stdout.is_empty(),
        "openssl {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// The base64 SHA-256 of the SubjectPublicKeyInfo (DER) of the first certificate in a PEM file:
/// what `--ignore-certificate-errors-spki-list` takes.
pub fn spki_pin(cert: &Path) -> String {
    let path = cert.to_str().expect("a UTF-8 certificate path");
    let public_pem = openssl(&["x509", "-in", path, "-noout", "-pubkey"], None);
    let spki_der = openssl(&["pkey", "-pubin", "-outform", "DER"], Some(&public_pem));
    let digest = openssl(&["dgst", "-sha256", "-binary"], Some(&spki_der));
    assert_eq!(digest.len(), 32, "openssl dgst -sha256 -binary: {digest:?}");
    base64::engine::general_purpose::STANDARD.encode(digest)
}

/// The live processes (zombies aside) of one browser: those in chromedriver's process `group`,
/// and those naming the browser's directory on their command line (the profile, the home of
/// the crash handler's database), which is every process Chromium starts.
fn leftovers(group: i32, dir: &Path) -> Vec<i32> {
    use std::os::unix::ffi::OsStrExt;
    let mut needle = dir.as_os_str().as_bytes().to_vec();
    needle.push(b'/');
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|&pid| {
            let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
                return false;
            };
            // "pid (comm) state ppid pgrp …": the name may hold anything, even ") ".
            let fields: Vec<&str> = stat
                .rsplit_once(')')
                .map_or("", |(_, rest)| rest)
                .split_whitespace()
                .collect();
            if fields.first().is_none_or(|&state| state == "Z") {
                return false;
            }
            let in_group = group > 0 && fields.get(2) == Some(&group.to_string().as_str());
            in_group
                || std::fs::read(format!("/proc/{pid}/cmdline"))
                    .is_ok_and(|c| c.windows(needle.len()).any(|w| w == needle))
        })
        .collect()
}

fn tail(path: &Path) -> String {
    let log = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(30)..].join("\n")
}

impl Browser {
    /// Starts chromedriver on a free port and a headless Chromium session
    /// (`--headless=new --no-sandbox --disable-gpu --window-size=800,1000`, a fresh profile
    /// directory), trusting the given TLS server certificates (PEM files, the first certificate
    /// of each) by the SHA-256 pin of their public key (`--ignore-certificate-errors-spki-list`).
    ///
    /// Chromium is `chromium` on PATH (or `SIMLAB_CHROMIUM`), chromedriver `chromedriver` (or
    /// `SIMLAB_CHROMEDRIVER`). When either is missing: None, or a panic under `SIMLAB_HIL=require`.
    pub fn start(trusted_certs: &[&Path]) -> Option<Browser> {
        let (chromium, chromedriver) = match (
            locate("SIMLAB_CHROMIUM", "chromium"),
            locate("SIMLAB_CHROMEDRIVER", "chromedriver"),
        ) {
            (Ok(chromium), Ok(chromedriver)) => (chromium, chromedriver),
            (a, b) => {
                let why: Vec<String> = [a.err(), b.err()].into_iter().flatten().collect();
                missing(&format!(
                    "{} (Debian: {INSTALL}; scripts/setup installs them)",
                    why.join(", ")
                ));
                return None;
            }
        };
        let pins: Vec<String> = trusted_certs.iter().map(|c| spki_pin(c)).collect();

        static COUNT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = COUNT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = temp_path(&format!("browser-{n}"));
        let _ = std::fs::remove_dir_all(&dir);
        let profile = dir.join("profile");
        std::fs::create_dir_all(&profile).expect("create the browser's profile directory");
        let log_path = dir.join("chromedriver.log");
        let log = std::fs::File::create(&log_path).expect("create chromedriver.log");

        // Port 0: chromedriver picks a free port itself and says which on stdout, so no other
        // test can take it between our choice and its bind.
        let home = dir.join("home");
        std::fs::create_dir_all(&home).expect("create the browser's home directory");
        let mut cmd = Command::new(&chromedriver);
        cmd.arg("--port=0")
            // A home of its own: Chromium's crash handler database and anything else it keeps
            // outside the profile (~/.config/chromium, ~/.pki, caches) go with the profile.
            .env("HOME", &home)
            .env("XDG_CONFIG_HOME", home.join(".config"))
            .env("XDG_CACHE_HOME", home.join(".cache"))
            .env("XDG_DATA_HOME", home.join(".local/share"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log file"))
            .stderr(log);
        // A process group of its own: whatever Chromium leaves behind can be killed with it.
        std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
        let mut driver = Process::spawn("chromedriver", &mut cmd);

        let deadline = Instant::now() + START_TIMEOUT;
        let port = loop {
            let text = std::fs::read_to_string(&log_path).unwrap_or_default();
            if let Some(port) = text
                .lines()
                .find_map(|l| l.strip_prefix("ChromeDriver was started successfully on port "))
                .and_then(|rest| rest.trim_end_matches('.').trim().parse::<u16>().ok())
            {
                break port;
            }
            if driver.try_wait().is_some() || Instant::now() > deadline {
                panic!(
                    "chromedriver ({}) did not start:\n{}",
                    chromedriver.display(),
                    tail(&log_path)
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        };

        let agent: ureq::Agent = ureq::Agent::config_builder()
            .timeout_global(Some(HTTP_TIMEOUT))
            .http_status_as_error(false)
            .proxy(None)
            .build()
            .into();
        let mut browser = Browser {
            agent,
            driver_url: format!("http://127.0.0.1:{port}"),
            session: None,
            driver: Some(driver),
            dir,
        };

        let mut args = vec![
            "--headless=new".to_string(),
            // Chromium's sandbox refuses to run as root (the tests' usual user in containers).
            "--no-sandbox".into(),
            "--disable-gpu".into(),
            "--window-size=800,1000".into(),
            format!("--user-data-dir={}", profile.display()),
            // Containers' /dev/shm is often 64 MiB, too small for Chromium's shared memory.
            "--disable-dev-shm-usage".into(),
            // Only local sites are tested: no proxy from the environment, no calls home.
            "--no-proxy-server".into(),
            "--no-first-run".into(),
            "--no-default-browser-check".into(),
            "--disable-background-networking".into(),
            "--disable-component-update".into(),
            "--disable-sync".into(),
            "--password-store=basic".into(),
            // No crash handler: Chromium starts it as a daemon of its own (outside chromedriver's
            // process group, with its database in ~/.config/chromium), and nobody reads the dumps.
            "--disable-breakpad".into(),
        ];
        if !pins.is_empty() {
            args.push(format!(
                "--ignore-certificate-errors-spki-list={}",
                pins.join(",")
            ));
        }
        let ms = |d: Duration| d.as_millis() as u64;
        let capabilities = json!({
            "capabilities": {
                "alwaysMatch": {
                    "browserName": "chrome",
                    "pageLoadStrategy": "normal",
                    "timeouts": {
                        "implicit": 0,
                        "pageLoad": ms(PAGE_LOAD_TIMEOUT),
                        "script": ms(SCRIPT_TIMEOUT),
                    },
                    "goog:chromeOptions": {
                        "binary": chromium.to_str().expect("a UTF-8 chromium path"),
                        "args": args,
                    },
                }
            }
        });
        let url = format!("{}/session", browser.driver_url);
        let session = match browser.http(&url, Method::Post(capabilities)) {
            Ok(v) => v["sessionId"]
                .as_str()
                .unwrap_or_else(|| panic!("new session: no sessionId in {v}"))
                .to_string(),
            Err(e) => panic!(
                "chromedriver could not start {}: {e}\n{}",
                chromium.display(),
                tail(&browser.dir.join("chromedriver.log"))
            ),
        };
        browser.session = Some(format!("{url}/{session}"));
        Some(browser)
    }

    /// One HTTP exchange with chromedriver: its `value`, or the WebDriver error it answered.
    /// Panics when chromedriver cannot be reached or does not answer WebDriver JSON.
    fn http(&self, url: &str, method: Method) -> Result<Value, WdError> {
        let response = match method {
            Method::Get => self.agent.get(url).call(),
            Method::Post(body) => self
                .agent
                .post(url)
                .header("content-type", "application/json")
                .send(body.to_string()),
        };
        let mut response = response.unwrap_or_else(|e| {
            panic!(
                "chromedriver did not answer {url}: {e}\n{}",
                tail(&self.dir.join("chromedriver.log"))
            )
        });
        let status = response.status();
        let body = response
            .body_mut()
            .with_config()
            .limit(256 << 20)
            .read_to_string()
            .unwrap_or_else(|e| panic!("chromedriver's answer to {url}: {e}"));
        let parsed: Value = serde_json::from_str(&body)
            .unwrap_or_else(|e| panic!("chromedriver's answer to {url} ({status}): {e}: {body}"));
        let value = parsed.get("value").cloned().unwrap_or(Value::Null);
        match value.get("error").and_then(Value::as_str) {
            Some(error) => Err(WdError {
                error: error.to_string(),
                message: value["message"].as_str().unwrap_or_default().to_string(),
            }),
            None if status.is_success() => Ok(value),
            None => panic!("chromedriver's answer to {url}: {status} {body}"),
        }
    }

    /// A command of the session (`path` after `/session/ID`).
    fn cmd(&self, path: &str, method: Method) -> Result<Value, WdError> {
        let session = self.session.as_deref().expect("a session");
        self.http(&format!("{session}{path}"), method)
    }

    /// A command that must succeed.
    fn must(&self, what: &str, path: &str, method: Method) -> Value {
        self.cmd(path, method)
            .unwrap_or_else(|e| panic!("webdriver {what}: {e}"))
    }

    fn find(&self, css: &str) -> Result<String, WdError> {
        let found = self.cmd(
            "/element",
            Method::Post(json!({"using": "css selector", "value": css})),
        )?;
        Ok(found[ELEMENT]
            .as_str()
            .unwrap_or_else(|| panic!("find {css:?}: no element reference in {found}"))
            .to_string())
    }

    fn must_find(&self, css: &str) -> String {
        self.find(css)
            .unwrap_or_else(|e| panic!("webdriver find {css:?} on {}: {e}", self.current_url()))
    }

    /// The text of the first element `css` selects.
    fn try_text(&self, css: &str) -> Result<String, WdError> {
        let element = self.find(css)?;
        let text = self.cmd(&format!("/element/{element}/text"), Method::Get)?;
        Ok(text.as_str().unwrap_or_default().to_string())
    }

    /// Navigates to `url` and waits for the page to load.
    pub fn goto(&self, url: &str) {
        self.must(
            &format!("goto {url}"),
            "/url",
            Method::Post(json!({ "url": url })),
        );
    }

    pub fn current_url(&self) -> String {
        let url = self.must("current url", "/url", Method::Get);
        url.as_str().unwrap_or_default().to_string()
    }

    /// Clears the first element `css` selects (an input) and types `text` into it.
    pub fn fill(&self, css: &str, text: &str) {
        let element = self.must_find(css);
        self.must(
            &format!("clear {css:?}"),
            &format!("/element/{element}/clear"),
            Method::Post(json!({})),
        );
        self.must(
            &format!("type into {css:?}"),
            &format!("/element/{element}/value"),
            Method::Post(json!({ "text": text })),
        );
    }

    /// Clicks the first element `css` selects (and waits for the navigation it starts).
    pub fn click(&self, css: &str) {
        let element = self.must_find(css);
        self.must(
            &format!("click {css:?}"),
            &format!("/element/{element}/click"),
            Method::Post(json!({})),
        );
    }

    /// The rendered text of the first element `css` selects; None when there is none.
    pub fn text(&self, css: &str) -> Option<String> {
        let mut tries = 0;
        loop {
            match self.try_text(css) {
                Ok(text) => return Some(text),
                Err(e) if e.error == "no such element" => return None,
                // Replaced between finding it and reading it (a refresh): find it again.
                Err(e) if e.error == "stale element reference" && tries < 5 => tries += 1,
                Err(e) => panic!("webdriver text {css:?}: {e}"),
            }
        }
    }

    /// Polls until the first element `css` selects has a text containing `want`, and returns that
    /// text. Missing or replaced elements and pending navigations are waited out; after `timeout`
    /// (give or take a navigation chromedriver was waiting for) it panics with the page source.
    pub fn wait_text(&self, css: &str, want: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let last = match self.try_text(css) {
                Ok(text) if text.contains(want) => return text,
                Ok(text) => format!("its text is {text:?}"),
                Err(e) if matches!(e.error.as_str(), "invalid selector" | "invalid session id") => {
                    panic!("webdriver wait for {css:?}: {e}")
                }
                Err(e) => e.to_string(),
            };
            if Instant::now() > deadline {
                let url = self.cmd("/url", Method::Get).unwrap_or_default();
                let source = self.cmd("/source", Method::Get).unwrap_or_default();
                panic!(
                    "no {css:?} containing {want:?} within {timeout:?} ({last}) at {url}; \
                     page source:\n{}",
                    source.as_str().unwrap_or_default()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The current page's source (its DOM, serialised).
    pub fn source(&self) -> String {
        let source = self.must("page source", "/source", Method::Get);
        source.as_str().unwrap_or_default().to_string()
    }

    /// Saves a PNG screenshot of the window (parent directories created).
    pub fn screenshot(&self, path: &Path) {
        let png = self.must("screenshot", "/screenshot", Method::Get);
        let png = base64::engine::general_purpose::STANDARD
            .decode(png.as_str().unwrap_or_default())
            .unwrap_or_else(|e| panic!("screenshot: not base64: {e}"));
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .unwrap_or_else(|e| panic!("create {}: {e}", parent.display()));
        }
        std::fs::write(path, png).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if let Some(session) = self.session.take() {
            // Ends Chromium. Not through `http`: a panic here would abort a panicking test.
            let agent: ureq::Agent = ureq::Agent::config_builder()
                .timeout_global(Some(Duration::from_secs(20)))
                .proxy(None)
                .build()
                .into();
            if let Err(e) = agent.delete(&session).call() {
                eprintln!("webdriver: ending the session: {e}");
            }
        }
        if let Some(mut driver) = self.driver.take() {
            let group = driver.pid() as i32;
            // The whole process group, chromedriver and what is left of Chromium in it (its
            // zygotes, exiting), while chromedriver is not yet reaped: the id is still ours.
            if group > 0 {
                // SAFETY: kill(2) on the process group we created; no memory effects.
                unsafe { libc::kill(-group, libc::SIGTERM) };
            }
            driver.stop_with(libc::SIGTERM, Duration::from_secs(5));
            // Chromium's processes outlive chromedriver by a moment (the crash handler, in a
            // session of its own, exits when the browser has): wait for them, then kill them.
            let deadline = Instant::now() + Duration::from_secs(5);
            loop {
                let left = leftovers(group, &self.dir);
                if left.is_empty() {
                    break;
                }
                if Instant::now() > deadline {
                    eprintln!("webdriver: killing Chromium's leftover processes {left:?}");
                    for pid in left {
                        // SAFETY: as above, a process of this browser's (see `leftovers`).
                        unsafe { libc::kill(pid, libc::SIGKILL) };
                    }
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        let profile = self.dir.join("profile");
        for _ in 0..20 {
            if std::fs::remove_dir_all(&profile).is_ok() || !profile.exists() {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = std::fs::remove_dir_all(self.dir.join("home"));
        if std::thread::panicking() {
            eprintln!(
                "webdriver: chromedriver's log is kept in {}",
                self.dir.display()
            );
        } else {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}
