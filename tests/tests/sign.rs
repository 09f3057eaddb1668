//! Seed 002 through separate processes: `simlab sign serve` on a virtual modem, the PC as
//! curl (a client simlab did not write) with a cookie jar, the phone as `simlab sign
//! approve|watch` on an emulated token and a virtual modem of its own. The test plays the
//! network: it carries each push from the server modem's spool to the phone's inbox.
//!
//! Signatures are checked by openssl with the key from the directory, not by simlab.

use simlab_hil::postgres::Postgres;
use simlab_hil::{Process, VirtualModem, require, simlab, simlab_bin, text};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

const PHONE: &str = "fixtures/cards/demo-usim.toml";
const PIN: &str = "0000";
const U1_PHONE: &str = "+491700000001";
const SERVER_PHONE: &str = "+491700000999";
const PASSWORD: &str = "correct horse battery";

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn ok(o: &Output) {
    assert!(o.status.success(), "{:?}", text(o));
}

#[derive(Default)]
struct Options {
    fault: Option<&'static str>,
    request_ttl: Option<u64>,
    /// The store in this PostgreSQL server (database `sign`) instead of a SQLite file.
    postgres: Option<String>,
}

/// A signing server with its modem and directory, and u1's phone.
struct World {
    dir: PathBuf,
    db: String,
    url: String,
    server_modem: VirtualModem,
    phone_modem: VirtualModem,
    _server: Process,
    /// Pushes already carried to the phone.
    relayed: std::cell::Cell<usize>,
}

/// What a page answered.
struct Page {
    status: u16,
    headers: String,
    body: String,
}

impl Page {
    /// The text of the element with `id`, e.g. `state`.
    fn id(&self, id: &str) -> Option<String> {
        let start = self.body.find(&format!("id=\"{id}\""))?;
        let rest = &self.body[start..];
        let open = rest.find('>')? + 1;
        let close = rest[open..].find('<')?;
        Some(rest[open..open + close].to_string())
    }

    fn csrf(&self) -> String {
        let at = self
            .body
            .find("name=\"csrf\" value=\"")
            .expect("a csrf field")
            + 19;
        self.body[at..at + 32].to_string()
    }

    fn location(&self) -> Option<String> {
        self.headers.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("location")
                .then(|| v.trim().to_string())
        })
    }
}

/// A browser session on the PC: curl with a cookie jar of its own.
struct Pc<'w> {
    w: &'w World,
    jar: PathBuf,
}

impl Pc<'_> {
    fn curl(&self, path: &str, extra: &[&str]) -> Page {
        let n = self.w.relayed.get();
        let tag = format!("{}-{n}-{}", std::process::id(), rand_tag());
        let head = self.w.dir.join(format!("h-{tag}"));
        let body = self.w.dir.join(format!("b-{tag}"));
        let o = Command::new("curl")
            .args(["-sS", "--max-time", "60", "--cacert"])
            .arg(self.w.dir.join("ca").join("ca.pem"))
            .arg("-b")
            .arg(&self.jar)
            .arg("-c")
            .arg(&self.jar)
            .arg("-D")
            .arg(&head)
            .arg("-o")
            .arg(&body)
            .args(["-w", "%{http_code}"])
            .args(extra)
            .arg(format!("{}{path}", self.w.url))
            .output()
            .expect("curl");
        assert!(o.status.success(), "curl {path}: {:?}", text(&o));
        let page = Page {
            status: String::from_utf8_lossy(&o.stdout).trim().parse().unwrap(),
            headers: std::fs::read_to_string(&head).unwrap_or_default(),
            body: std::fs::read_to_string(&body).unwrap_or_default(),
        };
        let _ = std::fs::remove_file(head);
        let _ = std::fs::remove_file(body);
        page
    }

    fn get(&self, path: &str) -> Page {
        self.curl(path, &[])
    }

    fn post(&self, path: &str, fields: &[(&str, &str)], extra: &[&str]) -> Page {
        let mut args: Vec<String> = Vec::new();
        for (k, v) in fields {
            args.push("--data-urlencode".into());
            args.push(format!("{k}={v}"));
        }
        args.extend(extra.iter().map(|s| s.to_string()));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        self.curl(path, &args)
    }

    /// Home page's CSRF token (after log-in).
    fn csrf(&self) -> String {
        self.get("/").csrf()
    }

    /// Prepares a transaction; returns its id.
    fn prepare(&self, amount: &str, summary: &str, content: &str) -> String {
        let csrf = self.csrf();
        let p = self.post(
            "/transactions",
            &[
                ("csrf", &csrf),
                ("amount", amount),
                ("currency", "EUR"),
                ("summary", summary),
                ("content", content),
            ],
            &[],
        );
        assert_eq!(p.status, 303, "{}", p.body);
        p.location()
            .unwrap()
            .strip_prefix("/transactions/")
            .unwrap()
            .to_string()
    }

    fn approve(&self, tx: &str) -> Page {
        let csrf = self.csrf();
        self.post(
            &format!("/transactions/{tx}/approve"),
            &[("csrf", &csrf)],
            &[],
        )
    }

    fn state(&self, tx: &str) -> String {
        self.get(&format!("/transactions/{tx}"))
            .id("state")
            .unwrap_or_default()
    }
}

fn rand_tag() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::SeqCst)
}

impl World {
    fn start(name: &str, opts: Options) -> World {
        assert!(require("curl") && require("openssl"), "curl and openssl");
        let dir = simlab_hil::temp_path(&format!("sign-{name}"));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        ok(&simlab(&[
            "gateway",
            "issue",
            "--ca-dir",
            s(&dir.join("ca")),
            "--organization",
            "bank",
            "--role",
            "server",
            "--name",
            "sign.example",
            "--out",
            s(&dir.join("tls")),
        ]));
        let pw = dir.join("pw");
        std::fs::write(&pw, format!("{PASSWORD}\n")).unwrap();
        let phone_state = dir.join("phone.state");
        let tls = dir.join("tls");
        let w_phone = |args: &[&str]| {
            let mut all = vec!["--emulate", PHONE];
            all.extend_from_slice(args);
            all.extend_from_slice(&["--state", s(&phone_state)]);
            simlab(&all)
        };
        ok(&w_phone(&["token", "keygen", "--pin", PIN]));
        let db = match &opts.postgres {
            Some(url) => format!("{}/sign", url.trim_end_matches("/postgres")),
            None => s(&dir.join("sign.sqlite")).to_string(),
        };
        ok(&w_phone(&[
            "sign",
            "enroll",
            "--db",
            &db,
            "--user",
            "u1",
            "--phone",
            U1_PHONE,
            "--password-file",
            s(&pw),
            "--from-token",
        ]));
        ok(&simlab(&[
            "sign",
            "enroll",
            "--db",
            &db,
            "--user",
            "u2",
            "--phone",
            "+491700000002",
            "--password-file",
            s(&pw),
        ]));
        let server_modem =
            VirtualModem::start(&["--own-number", SERVER_PHONE, "--loopback", "none"]);
        let phone_modem = VirtualModem::start(&["--own-number", U1_PHONE, "--loopback", "none"]);
        let ttl = opts.request_ttl.unwrap_or(120).to_string();
        let mut args = vec![
            "--modem",
            server_modem.path(),
            "sign",
            "serve",
            "--db",
            &db,
            "--tls",
            s(&tls),
            "--listen",
            "127.0.0.1:0",
            "--request-ttl",
            &ttl,
        ];
        if let Some(f) = opts.fault {
            args.extend_from_slice(&["--fault", f]);
        }
        let log = std::fs::File::create(dir.join("server.log")).unwrap();
        let mut cmd = Command::new(simlab_bin());
        cmd.args(&args)
            .current_dir(simlab_hil::workspace_root())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log));
        let mut server = Process::spawn("sign serve", &mut cmd);
        let mut line = String::new();
        BufReader::new(server.stdout().expect("stdout"))
            .read_line(&mut line)
            .unwrap();
        let url = line
            .split_whitespace()
            .find(|w| w.starts_with("https://"))
            .unwrap_or_else(|| {
                panic!(
                    "sign serve did not start: {line:?}\n{}",
                    std::fs::read_to_string(dir.join("server.log")).unwrap_or_default()
                )
            })
            // The certificate names localhost (and 127.0.0.1); curl checks it.
            .replace("127.0.0.1", "localhost");
        World {
            dir,
            db,
            url,
            server_modem,
            phone_modem,
            _server: server,
            relayed: std::cell::Cell::new(0),
        }
    }

    fn db(&self) -> String {
        self.db.clone()
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("server.log")).unwrap_or_default()
    }

    /// A logged-in PC (asserts the log-in worked).
    fn pc(&self, user: &str) -> Pc<'_> {
        let pc = Pc {
            w: self,
            jar: self.dir.join(format!("jar-{user}-{}", rand_tag())),
        };
        let p = pc.post("/login", &[("user", user), ("password", PASSWORD)], &[]);
        assert_eq!(p.status, 303, "log-in of {user}: {}", p.body);
        pc
    }

    /// The SMS the server's modem submitted so far.
    fn pushes(&self) -> Vec<serde_json::Value> {
        self.server_modem.sent()
    }

    /// Carries the pushes not yet carried to the phone's inbox, as from the server's number.
    fn relay(&self) {
        let sent = self.pushes();
        for (i, m) in sent.iter().enumerate().skip(self.relayed.get()) {
            assert_eq!(m["to"], U1_PHONE, "{m}");
            self.phone_modem.inbox(
                &format!("push-{i}"),
                &serde_json::json!({"from": SERVER_PHONE, "text": m["text"]}),
            );
        }
        self.relayed.set(sent.len());
    }

    fn phone_args<'a>(&'a self, cmd: &'a str) -> Vec<String> {
        vec![
            "--emulate".into(),
            PHONE.into(),
            "sign".into(),
            cmd.into(),
            "--server".into(),
            self.url.clone(),
            "--ca".into(),
            s(&self.dir.join("ca").join("ca.pem")).into(),
            "--server-cert".into(),
            s(&self.dir.join("tls").join("cert.pem")).into(),
            "--state".into(),
            s(&self.dir.join("phone.state")).into(),
        ]
    }

    /// `sign approve --tx TX` plus `extra`.
    fn approve(&self, tx: &str, extra: &[&str]) -> Output {
        let mut args = self.phone_args("approve");
        args.extend(["--tx".to_string(), tx.to_string()]);
        args.extend(extra.iter().map(|s| s.to_string()));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        simlab(&args)
    }

    /// `sign watch` on the phone's modem for `count` pushes.
    fn watch(&self, count: u32, extra: &[&str]) -> Output {
        let mut args = vec!["--modem".to_string(), self.phone_modem.path().to_string()];
        args.extend(self.phone_args("watch"));
        args.extend([
            "--count".to_string(),
            count.to_string(),
            "--timeout".to_string(),
            "30".to_string(),
        ]);
        args.extend(extra.iter().map(|s| s.to_string()));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        simlab(&args)
    }

    fn tx_json(&self, tx: &str) -> serde_json::Value {
        let o = simlab(&[
            "sign",
            "tx",
            "show",
            "--db",
            &self.db(),
            "--id",
            tx,
            "--json",
        ]);
        ok(&o);
        simlab_hil::json(&o)
    }

    /// Posts a signature for `tx` as a phone would (hex DER), returns the HTTP status.
    fn post_signature(&self, tx: &str, signature_hex: &str) -> (u16, String) {
        let o = Command::new("curl")
            .args(["-sS", "--max-time", "20", "--cacert"])
            .arg(self.dir.join("ca").join("ca.pem"))
            .args([
                "-H",
                "content-type: application/json",
                "-w",
                "\n%{http_code}",
            ])
            .args(["--data", &format!("{{\"signature\":\"{signature_hex}\"}}")])
            .arg(format!("{}/v1/requests/{tx}/signature", self.url))
            .output()
            .unwrap();
        let out = String::from_utf8_lossy(&o.stdout).to_string();
        let (body, code) = out.rsplit_once('\n').unwrap();
        (code.trim().parse().unwrap(), body.to_string())
    }

    /// The token signs `data` (hex) with its key, as any SIGN would.
    fn token_sign(&self, state: &Path, data_hex: &str) -> String {
        let o = simlab(&[
            "--emulate",
            PHONE,
            "token",
            "sign",
            "--data",
            data_hex,
            "--pin",
            PIN,
            "--state",
            s(state),
            "--json",
        ]);
        ok(&o);
        simlab_hil::json(&o)["signature_der"]
            .as_str()
            .unwrap()
            .to_string()
    }
}

impl Drop for World {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

fn wait_for_state(pc: &Pc<'_>, tx: &str, want: &str) {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let state = pc.state(tx);
        if state == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{tx} is {state}, not {want}\n{}",
            pc.w.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// openssl checks `signature` (DER) over `request` with the directory's key for `user`.
fn openssl_verifies(w: &World, user: &str, request: &[u8], signature: &[u8]) -> bool {
    let o = simlab(&["sign", "directory", "list", "--db", &w.db(), "--json"]);
    ok(&o);
    let rows = simlab_hil::json(&o);
    let key_hex = rows
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["user"] == user)
        .and_then(|r| r["public_key"].as_str())
        .expect("a key in the directory")
        .to_string();
    let key = unhex(&key_hex);
    // SubjectPublicKeyInfo for a P-256 point: the fixed prefix, then the point.
    let mut spki = unhex("3059301306072a8648ce3d020106082a8648ce3d030107034200");
    spki.extend_from_slice(&key);
    let der = w.dir.join("key.der");
    std::fs::write(&der, spki).unwrap();
    let (req, sig) = (w.dir.join("req.bin"), w.dir.join("sig.der"));
    std::fs::write(&req, request).unwrap();
    std::fs::write(&sig, signature).unwrap();
    let o = Command::new("openssl")
        .args(["dgst", "-sha256", "-keyform", "DER", "-verify"])
        .arg(&der)
        .arg("-signature")
        .arg(&sig)
        .arg(&req)
        .output()
        .unwrap();
    o.status.success() && String::from_utf8_lossy(&o.stdout).contains("Verified OK")
}

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

#[test]
fn t1_the_pc_approves_the_phone_signs_and_openssl_verifies_with_the_directorys_key() {
    let w = World::start("t1", Options::default());
    let pc = w.pc("u1");
    let tx = pc.prepare("42.50", "Flowers for Ada", "12 red roses\ndelivery Friday");
    let p = pc.approve(&tx);
    assert_eq!(p.status, 303, "{}", p.body);
    let page = pc.get(&format!("/transactions/{tx}"));
    assert_eq!(page.id("state").as_deref(), Some("awaiting_signature"));
    let correlator = page.id("correlator").expect("the PC shows the correlator");
    // One SMS to u1's phone with the transaction id and the correlator only.
    let pushes = w.pushes();
    assert_eq!(pushes.len(), 1, "{pushes:?}");
    let sms = pushes[0]["text"].as_str().unwrap();
    assert_eq!(pushes[0]["to"], U1_PHONE);
    assert!(sms.contains(&tx) && sms.contains(&correlator), "{sms}");
    assert!(
        !sms.contains("42.50") && !sms.contains("Flowers"),
        "the push carries no content: {sms}"
    );

    w.relay();
    let o = w.watch(1, &["--pin", PIN]);
    ok(&o);
    let (stdout, stderr) = text(&o);
    // The phone shows what the PC showed, decoded from the signed bytes.
    assert!(stderr.contains("Flowers for Ada"), "{stderr}");
    assert!(stderr.contains("42.50 EUR"), "{stderr}");
    assert!(stderr.contains(&correlator), "{stderr}");
    assert!(stdout.contains("completed"), "{stdout}");

    wait_for_state(&pc, &tx, "completed");
    let t = w.tx_json(&tx);
    assert_eq!(t["state"], "completed");
    let request = unhex(t["request"].as_str().unwrap());
    let signature = unhex(t["signature"].as_str().unwrap());
    assert!(openssl_verifies(&w, "u1", &request, &signature));
    assert!(!w.log().contains(PASSWORD));
}

#[test]
fn t2_a_wrong_password_is_401_with_no_transaction_and_no_sms() {
    let w = World::start("t2", Options::default());
    let pc = Pc {
        w: &w,
        jar: w.dir.join("jar-bad"),
    };
    let p = pc.post("/login", &[("user", "u1"), ("password", "wrong")], &[]);
    assert_eq!(p.status, 401, "{}", p.body);
    assert!(p.body.contains("wrong user id or password"), "{}", p.body);
    let p = pc.post("/login", &[("user", "nobody"), ("password", PASSWORD)], &[]);
    assert_eq!(p.status, 401);
    // Not logged in: preparing is refused.
    let p = pc.post(
        "/transactions",
        &[("csrf", "00"), ("amount", "1"), ("summary", "x")],
        &[],
    );
    assert_eq!(p.status, 401);
    let o = simlab(&["sign", "tx", "list", "--db", &w.db(), "--json"]);
    ok(&o);
    assert_eq!(simlab_hil::json(&o), serde_json::json!([]));
    assert!(w.pushes().is_empty());
}

#[test]
fn t3_a_directory_row_without_a_key_cannot_approve_and_nothing_is_sent() {
    let w = World::start("t3", Options::default());
    let pc = w.pc("u2");
    let tx = pc.prepare("10.00", "Books", "");
    let p = pc.approve(&tx);
    assert_eq!(p.status, 422, "{}", p.body);
    assert!(p.body.contains("no token key"), "{}", p.body);
    assert_eq!(pc.state(&tx), "prepared");
    assert!(w.pushes().is_empty());
}

#[test]
fn t4_an_amount_changed_in_transit_is_refused_by_the_phone_and_nothing_is_signed() {
    let w = World::start(
        "t4",
        Options {
            fault: Some("amount-in-transit"),
            ..Options::default()
        },
    );
    let pc = w.pc("u1");
    let tx = pc.prepare("42.50", "Flowers for Ada", "");
    assert_eq!(pc.approve(&tx).status, 303);
    let o = w.approve(&tx, &["--pin", PIN]);
    assert_eq!(o.status.code(), Some(1), "{:?}", text(&o));
    assert!(text(&o).1.contains("countersignature"), "{:?}", text(&o));
    let t = w.tx_json(&tx);
    assert_eq!(t["state"], "awaiting_signature");
    assert!(t["signature"].is_null());
}

#[test]
fn t5_declined_on_the_phone_shows_declined_on_the_pc() {
    let w = World::start("t5", Options::default());
    let pc = w.pc("u1");
    let tx = pc.prepare("5.00", "Coffee", "");
    assert_eq!(pc.approve(&tx).status, 303);
    let o = w.approve(&tx, &["--decline"]);
    ok(&o);
    wait_for_state(&pc, &tx, "declined");
}

#[test]
fn t6_three_wrong_pins_block_the_token_and_the_pc_shows_failed() {
    let w = World::start("t6", Options::default());
    let pc = w.pc("u1");
    let tx = pc.prepare("99.00", "Shoes", "");
    assert_eq!(pc.approve(&tx).status, 303);
    for left in ["63C2", "63C1"] {
        let o = w.approve(&tx, &["--pin", "9999"]);
        assert_eq!(o.status.code(), Some(1), "{:?}", text(&o));
        assert!(text(&o).0.contains(left), "{:?}", text(&o));
        assert_eq!(pc.state(&tx), "awaiting_signature");
    }
    let o = w.approve(&tx, &["--pin", "9999"]);
    assert_eq!(o.status.code(), Some(1), "{:?}", text(&o));
    assert!(text(&o).0.contains("blocked"), "{:?}", text(&o));
    wait_for_state(&pc, &tx, "failed");
    assert!(!w.log().contains("9999"));
}

#[test]
fn t7_no_answer_before_the_deadline_is_expired_and_a_late_signature_gets_410() {
    let w = World::start(
        "t7",
        Options {
            request_ttl: Some(5),
            ..Options::default()
        },
    );
    let pc = w.pc("u1");
    let tx = pc.prepare("1.00", "Gum", "");
    assert_eq!(pc.approve(&tx).status, 303);
    let request = w.tx_json(&tx)["request"].as_str().unwrap().to_string();
    let signature = w.token_sign(&w.dir.join("phone.state"), &request);
    std::thread::sleep(Duration::from_secs(6));
    wait_for_state(&pc, &tx, "expired");
    let (status, body) = w.post_signature(&tx, &signature);
    assert_eq!(status, 410, "{body}");
    assert_eq!(w.tx_json(&tx)["state"], "expired");
}

#[test]
fn t8_another_tokens_signature_or_one_over_other_bytes_is_422_and_failed() {
    let w = World::start("t8", Options::default());
    let other = w.dir.join("other.state");
    ok(&simlab(&[
        "--emulate",
        PHONE,
        "token",
        "keygen",
        "--pin",
        PIN,
        "--state",
        s(&other),
    ]));
    let pc = w.pc("u1");
    let a = pc.prepare("20.00", "Tickets", "");
    assert_eq!(pc.approve(&a).status, 303);
    let request = w.tx_json(&a)["request"].as_str().unwrap().to_string();
    let by_other = w.token_sign(&other, &request);
    let (status, body) = w.post_signature(&a, &by_other);
    assert_eq!(status, 422, "{body}");
    wait_for_state(&pc, &a, "failed");

    let b = pc.prepare("20.00", "Tickets", "");
    assert_eq!(pc.approve(&b).status, 303);
    let over_other = w.token_sign(&w.dir.join("phone.state"), "00112233");
    let (status, body) = w.post_signature(&b, &over_other);
    assert_eq!(status, 422, "{body}");
    wait_for_state(&pc, &b, "failed");
}

#[test]
fn t9_the_pc_aborts_and_a_later_signature_gets_409() {
    let w = World::start("t9", Options::default());
    let pc = w.pc("u1");
    let tx = pc.prepare("7.00", "Lunch", "");
    assert_eq!(pc.approve(&tx).status, 303);
    let request = w.tx_json(&tx)["request"].as_str().unwrap().to_string();
    let signature = w.token_sign(&w.dir.join("phone.state"), &request);
    let csrf = pc.csrf();
    let p = pc.post(
        &format!("/transactions/{tx}/abort"),
        &[("csrf", &csrf)],
        &[],
    );
    assert_eq!(p.status, 303, "{}", p.body);
    wait_for_state(&pc, &tx, "aborted");
    let (status, body) = w.post_signature(&tx, &signature);
    assert_eq!(status, 409, "{body}");
    // The phone, asked now, refuses to sign at all.
    let o = w.approve(&tx, &["--pin", PIN]);
    assert_eq!(o.status.code(), Some(1), "{:?}", text(&o));
    assert_eq!(w.tx_json(&tx)["state"], "aborted");
}

#[test]
fn t10_a_valid_signature_posted_to_another_transaction_is_422() {
    let w = World::start("t10", Options::default());
    let pc = w.pc("u1");
    let a = pc.prepare("30.00", "Dinner", "");
    let b = pc.prepare("30.00", "Dinner", "");
    assert_eq!(pc.approve(&a).status, 303);
    assert_eq!(pc.approve(&b).status, 303);
    let request_a = w.tx_json(&a)["request"].as_str().unwrap().to_string();
    let sig_a = w.token_sign(&w.dir.join("phone.state"), &request_a);
    let (status, body) = w.post_signature(&b, &sig_a);
    assert_eq!(status, 422, "{body}");
    wait_for_state(&pc, &b, "failed");
    // It is still good for the transaction it was made for.
    let (status, body) = w.post_signature(&a, &sig_a);
    assert_eq!(status, 200, "{body}");
    wait_for_state(&pc, &a, "completed");
}

#[test]
fn forms_from_another_origin_another_users_cookie_and_bad_posts_are_refused() {
    let w = World::start("forms", Options::default());
    let pc = w.pc("u1");
    let csrf = pc.csrf();
    // CSRF: another site's page posting the form, or a post without the session's token.
    let p = pc.post(
        "/transactions",
        &[
            ("csrf", &csrf),
            ("amount", "1"),
            ("currency", "EUR"),
            ("summary", "x"),
        ],
        &["-H", "Origin: https://evil.example"],
    );
    assert_eq!(p.status, 403, "{}", p.body);
    let p = pc.post(
        "/transactions",
        &[
            ("csrf", &csrf),
            ("amount", "1"),
            ("currency", "EUR"),
            ("summary", "x"),
        ],
        &["-H", "Sec-Fetch-Site: cross-site"],
    );
    assert_eq!(p.status, 403);
    let p = pc.post(
        "/transactions",
        &[("amount", "1"), ("currency", "EUR"), ("summary", "x")],
        &[],
    );
    assert_eq!(p.status, 403);
    // Malformed posts.
    let p = pc.post(
        "/transactions",
        &[("csrf", &csrf), ("csrf", &csrf), ("summary", "x")],
        &[],
    );
    assert_eq!(p.status, 400);
    let p = pc.curl(
        "/transactions",
        &["-H", "content-type: application/json", "--data", "{}"],
    );
    assert_eq!(p.status, 415);
    for (amount, currency, summary) in [
        ("abc", "EUR", "x"),
        ("1.234", "EUR", "x"),
        ("1", "euro", "x"),
        ("1", "EUR", ""),
        ("1", "EUR", "line\u{202E}reversed"),
    ] {
        let p = pc.post(
            "/transactions",
            &[
                ("csrf", &csrf),
                ("amount", amount),
                ("currency", currency),
                ("summary", summary),
            ],
            &[],
        );
        assert_eq!(p.status, 422, "{amount} {currency} {summary:?}: {}", p.body);
    }
    let huge = "x".repeat(20_000);
    let p = pc.post(
        "/transactions",
        &[
            ("csrf", &csrf),
            ("amount", "1"),
            ("currency", "EUR"),
            ("summary", "x"),
            ("content", &huge),
        ],
        &[],
    );
    assert_eq!(p.status, 422, "{}", p.body);
    let o = simlab(&["sign", "tx", "list", "--db", &w.db(), "--json"]);
    assert_eq!(
        simlab_hil::json(&o),
        serde_json::json!([]),
        "nothing was stored"
    );

    // HTML in the summary: escaped on every page, shown as text on the phone.
    let tx = pc.prepare("3.00", "<script>alert(1)</script> & <b>", "<img src=x>");
    let page = pc.get(&format!("/transactions/{tx}"));
    assert!(
        !page.body.contains("<script>alert") && !page.body.contains("<img"),
        "{}",
        page.body
    );
    assert!(
        page.body
            .contains("&lt;script&gt;alert(1)&lt;/script&gt; &amp; &lt;b&gt;")
    );
    assert!(
        page.headers
            .to_ascii_lowercase()
            .contains("content-security-policy: default-src 'none'")
    );
    assert!(pc.get("/").body.contains("&lt;script&gt;"));
    assert_eq!(pc.approve(&tx).status, 303);
    let o = w.approve(&tx, &["--pin", PIN]);
    ok(&o);
    assert!(
        text(&o).1.contains("<script>alert(1)</script> & <b>"),
        "{:?}",
        text(&o)
    );

    // Another user's session sees none of u1's transactions.
    let other = w.pc("u2");
    let p = other.get(&format!("/transactions/{tx}"));
    assert_eq!(p.status, 404);
    let csrf2 = other.csrf();
    let p = other.post(
        &format!("/transactions/{tx}/abort"),
        &[("csrf", &csrf2)],
        &[],
    );
    assert_eq!(p.status, 404);
    assert_eq!(pc.state(&tx), "completed");
}

#[test]
fn a_push_naming_an_unknown_transaction_signs_nothing() {
    let w = World::start("unknown", Options::default());
    w.phone_modem.inbox(
        "forged",
        &serde_json::json!({
            "from": SERVER_PHONE,
            "text": "simlab-sign tx 00112233445566778899aabbccddeeff code ABC-DEF: open simlab sign",
        }),
    );
    let o = w.watch(1, &["--pin", PIN]);
    assert_eq!(o.status.code(), Some(1), "{:?}", text(&o));
    assert!(text(&o).1.contains("no transaction"), "{:?}", text(&o));
    // A bad tx id on the command line is the user's error.
    let o = w.approve("xyz", &["--pin", PIN]);
    assert_eq!(o.status.code(), Some(2), "{:?}", text(&o));
}

#[test]
fn the_sign_commands_refuse_bad_arguments_with_exit_2() {
    let dir = simlab_hil::temp_path("sign-args");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let db = dir.join("s.sqlite");
    let pw = dir.join("pw");
    std::fs::write(&pw, "short\n").unwrap();
    let long_pw = dir.join("pw2");
    std::fs::write(&long_pw, "long enough password\n").unwrap();
    for args in [
        &[
            "sign",
            "enroll",
            "--db",
            s(&db),
            "--user",
            "u 1",
            "--phone",
            "+4917",
            "--password-file",
            s(&long_pw),
        ][..],
        &[
            "sign",
            "enroll",
            "--db",
            s(&db),
            "--user",
            "u1",
            "--phone",
            "0170",
            "--password-file",
            s(&long_pw),
        ][..],
        &[
            "sign",
            "enroll",
            "--db",
            s(&db),
            "--user",
            "u1",
            "--phone",
            "+491700000001",
            "--password-file",
            s(&pw),
        ][..],
        &[
            "sign",
            "enroll",
            "--db",
            s(&db),
            "--user",
            "u1",
            "--phone",
            "+491700000001",
            "--password-file",
            s(&long_pw),
            "--public-key",
            "0411",
        ][..],
        &[
            "sign",
            "serve",
            "--db",
            s(&db),
            "--tls",
            s(&dir),
            "--null-sms",
        ][..],
        &["sign", "tx", "show", "--db", s(&db), "--id", "zz"][..],
        &[
            "sign",
            "directory",
            "remove",
            "--db",
            s(&db),
            "--user",
            "ghost",
        ][..],
        &[
            "sign",
            "approve",
            "--server",
            "http://127.0.0.1:1",
            "--ca",
            s(&pw),
            "--server-cert",
            s(&pw),
            "--tx",
            "00",
            "--pin",
            "0000",
        ][..],
    ] {
        let o = simlab(args);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {:?}", text(&o));
    }
    ok(&simlab(&[
        "sign",
        "enroll",
        "--db",
        s(&db),
        "--user",
        "u1",
        "--phone",
        "+491700000001",
        "--password-file",
        s(&long_pw),
    ]));
    let o = simlab(&[
        "sign",
        "enroll",
        "--db",
        s(&db),
        "--user",
        "u1",
        "--phone",
        "+491700000001",
        "--password-file",
        s(&long_pw),
    ]);
    assert_eq!(o.status.code(), Some(2), "{:?}", text(&o));
    assert!(text(&o).1.contains("--replace"));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn on_postgresql_a_signature_completes_and_the_row_is_there() {
    let Some(pg) = Postgres::start_on("sign-postgresql-server", "5438") else {
        return;
    };
    pg.psql("CREATE DATABASE sign");
    let w = World::start(
        "pg",
        Options {
            postgres: Some(pg.url.clone()),
            ..Options::default()
        },
    );
    let pc = w.pc("u1");
    let tx = pc.prepare("42.50", "Flowers for Ada", "");
    assert_eq!(pc.approve(&tx).status, 303);
    ok(&w.approve(&tx, &["--pin", PIN]));
    wait_for_state(&pc, &tx, "completed");
    // psql, a client simlab did not write, sees the row.
    let o = Command::new("psql")
        .arg(&w.db)
        .args(["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-c"])
        .arg(format!(
            "SELECT state, amount FROM transactions WHERE id = '\\x{tx}'::bytea"
        ))
        .output()
        .expect("run psql");
    let rows = String::from_utf8_lossy(&o.stdout).to_string();
    assert!(rows.contains("completed|4250"), "{rows}");
}

/// The phone's token behind a real pcscd (a `simlab lab run` bench): enrolled from the reader,
/// and `sign approve --reader 0` signs through PC/SC. The bench's shell waits for the test to
/// approve on the PC, then signs.
#[test]
fn the_phones_token_behind_pcscd_signs_through_pc_sc() {
    let stack = require("pcscd")
        && simlab_hil::require_file(
            "/usr/lib/pcsc/drivers/serial/libifdvpcd.so",
            "vsmartcard-vpcd",
        );
    if !stack {
        return;
    }
    let _share = simlab_hil::bench_share();
    let w = World::start("pcsc", Options::default());
    let lab = w.dir.join("lab");
    let tx_file = w.dir.join("tx");
    let bin = s(simlab_bin()).to_string();
    let script = format!(
        "set -e\n\
         {bin} --reader 0 token keygen --pin {PIN} >/dev/null\n\
         {bin} --reader 0 sign enroll --db {db} --user u1 --phone {U1_PHONE} \
           --password-file {pw} --from-token --replace >/dev/null\n\
         touch {enrolled}\n\
         while [ ! -s {tx} ]; do sleep 0.1; done\n\
         exec {bin} --reader 0 sign approve --server {url} --ca {ca} --server-cert {cert} \
           --tx $(cat {tx}) --pin {PIN} --json",
        db = w.db,
        pw = s(&w.dir.join("pw")),
        enrolled = s(&w.dir.join("enrolled")),
        tx = s(&tx_file),
        url = w.url,
        ca = s(&w.dir.join("ca").join("ca.pem")),
        cert = s(&w.dir.join("tls").join("cert.pem")),
    );
    let out = std::fs::File::create(w.dir.join("lab.out")).unwrap();
    let err = std::fs::File::create(w.dir.join("lab.err")).unwrap();
    let mut cmd = Command::new(simlab_bin());
    cmd.args([
        "lab",
        "run",
        "--state",
        s(&lab),
        "--card",
        PHONE,
        "--",
        "sh",
        "-c",
        &script,
    ])
    .current_dir(simlab_hil::workspace_root())
    .stdout(Stdio::from(out))
    .stderr(Stdio::from(err));
    let mut bench = Process::spawn("lab run", &mut cmd);
    let deadline = Instant::now() + Duration::from_secs(60);
    while !w.dir.join("enrolled").exists() {
        assert!(
            bench.try_wait().is_none() && Instant::now() < deadline,
            "the bench did not enroll the token: {}",
            std::fs::read_to_string(w.dir.join("lab.err")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let pc = w.pc("u1");
    let tx = pc.prepare("42.50", "Flowers for Ada", "");
    assert_eq!(pc.approve(&tx).status, 303);
    std::fs::write(&tx_file, &tx).unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = bench.try_wait() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "the bench's phone never finished"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    let stdout = std::fs::read_to_string(w.dir.join("lab.out")).unwrap_or_default();
    assert!(
        status.success(),
        "{stdout}\n{}",
        std::fs::read_to_string(w.dir.join("lab.err")).unwrap_or_default()
    );
    assert!(stdout.contains("\"completed\""), "{stdout}");
    wait_for_state(&pc, &tx, "completed");
    let t = w.tx_json(&tx);
    let request = unhex(t["request"].as_str().unwrap());
    let signature = unhex(t["signature"].as_str().unwrap());
    assert!(openssl_verifies(&w, "u1", &request, &signature));
}

#[test]
fn a_user_certificate_logs_the_browser_in_without_a_password() {
    let w = World::start("usercert", Options::default());
    for (name, out) in [("u1", "u1-cert"), ("ghost", "ghost-cert")] {
        ok(&simlab(&[
            "gateway",
            "issue",
            "--ca-dir",
            s(&w.dir.join("ca")),
            "--organization",
            "bank",
            "--role",
            "user",
            "--name",
            name,
            "--out",
            s(&w.dir.join(out)),
        ]));
    }
    let with_cert = |dir: &str| {
        let d = w.dir.join(dir);
        vec![
            "--cert".to_string(),
            s(&d.join("cert.pem")).to_string(),
            "--key".to_string(),
            s(&d.join("key.pem")).to_string(),
        ]
    };
    let pc = Pc {
        w: &w,
        jar: w.dir.join("jar-cert"),
    };
    let args = with_cert("u1-cert");
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let p = pc.curl("/", &args);
    assert_eq!(p.status, 303, "{}", p.body);
    assert!(
        p.headers
            .to_ascii_lowercase()
            .contains("set-cookie: __host-simlab-sign=")
    );
    // The session works like a password log-in's.
    let tx = pc.prepare("12.00", "Umbrella", "");
    assert_eq!(pc.state(&tx), "prepared");
    assert_eq!(pc.get("/").id("who").as_deref(), Some("u1"));
    // A certificate for a name the directory does not hold logs nobody in.
    let stranger = Pc {
        w: &w,
        jar: w.dir.join("jar-ghost"),
    };
    let args = with_cert("ghost-cert");
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let p = stranger.curl("/", &args);
    assert_eq!(p.status, 200);
    assert!(p.body.contains("Log in"), "{}", p.body);
}

/// A real browser (Debian's headless Chromium over WebDriver) logs in, prepares, approves and
/// sees `completed` while `sign watch` on the phone's virtual modem signs; a screenshot of each
/// page is kept in target/test-artifacts/sign/.
#[test]
fn chromium_logs_in_prepares_approves_and_sees_completed() {
    let w = World::start("chromium", Options::default());
    let cert = w.dir.join("tls").join("cert.pem");
    let Some(browser) = simlab_hil::webdriver::Browser::start(&[&cert]) else {
        return;
    };
    let shots = simlab_hil::workspace_root().join("target/test-artifacts/sign");
    let _ = std::fs::remove_dir_all(&shots);
    let shot = |name: &str| browser.screenshot(&shots.join(format!("{name}.png")));
    let long = Duration::from_secs(60);

    browser.goto(&format!("{}/", w.url));
    browser.wait_text("h1", "Log in", long);
    shot("1-login");
    browser.fill("#user", "u1");
    browser.fill("#password", PASSWORD);
    browser.click("#login");
    browser.wait_text("h1", "Prepare a transaction", long);
    browser.fill("#amount", "42.50");
    browser.fill("#summary", "Flowers for <Ada> & co");
    browser.fill("#content", "12 red roses, delivery Friday");
    shot("2-prepare");
    browser.click("#prepare");
    browser.wait_text("#state", "prepared", long);
    assert_eq!(
        browser.text("#summary").as_deref(),
        Some("Flowers for <Ada> & co")
    );
    shot("3-prepared");
    browser.click("#approve");
    browser.wait_text("#state", "awaiting_signature", long);
    let correlator = browser
        .text("#correlator")
        .expect("the correlator is shown");
    shot("4-waiting");

    w.relay();
    let o = w.watch(1, &["--pin", PIN]);
    ok(&o);
    assert!(text(&o).1.contains(&correlator), "{:?}", text(&o));
    assert!(
        text(&o).1.contains("Flowers for <Ada> & co"),
        "{:?}",
        text(&o)
    );
    // The waiting page learns it from its long poll, with no reload by the test.
    browser.wait_text("#state", "completed", long);
    shot("5-completed");
    for name in [
        "1-login",
        "2-prepare",
        "3-prepared",
        "4-waiting",
        "5-completed",
    ] {
        let png = std::fs::read(shots.join(format!("{name}.png"))).unwrap();
        assert!(png.starts_with(b"\x89PNG"), "{name}");
    }
}

/// The phone's token is the simlab-firmware token under QEMU (a `simlab lab run --token` bench,
/// its simulated button pressed by itself): keygen on the MCU, enrolled from it over the serial
/// link, and `sign approve --serial "$SIMLAB_SERIAL"` signs there. The token's console (QEMU's
/// log in the bench's state directory) shows the request's fields before it signs; openssl
/// checks the signature with the key the directory now holds, the firmware's.
#[test]
fn the_phones_token_on_the_firmware_under_qemu_signs() {
    if !require("qemu-system-arm") {
        return;
    }
    // The board image, built as CI's firmware step builds it (a no-op when it is current).
    let elf = simlab_hil::qemu_token_firmware();
    let w = World::start("qemu", Options::default());
    let directory_key = |w: &World| {
        let o = simlab(&["sign", "directory", "list", "--db", &w.db(), "--json"]);
        ok(&o);
        simlab_hil::json(&o)
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["user"] == "u1")
            .and_then(|r| r["public_key"].as_str())
            .map(str::to_string)
    };
    let emulated_key = directory_key(&w).expect("u1 enrolled with the emulated token");
    let lab = w.dir.join("lab");
    let tx_file = w.dir.join("tx");
    let bin = s(simlab_bin()).to_string();
    let script = format!(
        "set -e\n\
         {bin} --serial \"$SIMLAB_SERIAL\" token keygen --pin {PIN} >/dev/null\n\
         {bin} --serial \"$SIMLAB_SERIAL\" sign enroll --db {db} --user u1 --phone {U1_PHONE} \
           --password-file {pw} --from-token --replace >/dev/null\n\
         touch {enrolled}\n\
         while [ ! -s {tx} ]; do sleep 0.1; done\n\
         exec {bin} --serial \"$SIMLAB_SERIAL\" sign approve --server {url} --ca {ca} \
           --server-cert {cert} --tx $(cat {tx}) --pin {PIN} --json",
        db = w.db,
        pw = s(&w.dir.join("pw")),
        enrolled = s(&w.dir.join("enrolled")),
        tx = s(&tx_file),
        url = w.url,
        ca = s(&w.dir.join("ca").join("ca.pem")),
        cert = s(&w.dir.join("tls").join("cert.pem")),
    );
    let out = std::fs::File::create(w.dir.join("lab.out")).unwrap();
    let err = std::fs::File::create(w.dir.join("lab.err")).unwrap();
    let mut cmd = Command::new(simlab_bin());
    cmd.args([
        "lab",
        "run",
        "--state",
        s(&lab),
        "--token",
        s(&elf),
        "--token-profile",
        PHONE,
        "--",
        "sh",
        "-c",
        &script,
    ])
    .current_dir(simlab_hil::workspace_root())
    .stdout(Stdio::from(out))
    .stderr(Stdio::from(err));
    let mut bench = Process::spawn("lab run", &mut cmd);
    let bench_log = |w: &World| {
        format!(
            "{}\n{}",
            std::fs::read_to_string(w.dir.join("lab.err")).unwrap_or_default(),
            std::fs::read_to_string(lab.join("token.log")).unwrap_or_default()
        )
    };
    let deadline = Instant::now() + Duration::from_secs(180);
    while !w.dir.join("enrolled").exists() {
        assert!(
            bench.try_wait().is_none() && Instant::now() < deadline,
            "the bench did not enroll the firmware token: {}",
            bench_log(&w)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let firmware_key = directory_key(&w).expect("u1 enrolled with the firmware token");
    assert_ne!(
        firmware_key, emulated_key,
        "the directory holds the firmware's key"
    );
    let pc = w.pc("u1");
    let tx = pc.prepare("42.50", "Flowers for Ada", "");
    assert_eq!(pc.approve(&tx).status, 303);
    let correlator = pc
        .get(&format!("/transactions/{tx}"))
        .id("correlator")
        .expect("the PC shows the correlator");
    std::fs::write(&tx_file, &tx).unwrap();
    let deadline = Instant::now() + Duration::from_secs(180);
    let status = loop {
        if let Some(status) = bench.try_wait() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "the firmware token never finished: {}",
            bench_log(&w)
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    let stdout = std::fs::read_to_string(w.dir.join("lab.out")).unwrap_or_default();
    assert!(status.success(), "{stdout}\n{}", bench_log(&w));
    assert!(stdout.contains("\"completed\""), "{stdout}");
    wait_for_state(&pc, &tx, "completed");
    let t = w.tx_json(&tx);
    let request = unhex(t["request"].as_str().unwrap());
    let signature = unhex(t["signature"].as_str().unwrap());
    assert!(openssl_verifies(&w, "u1", &request, &signature));
    // The token showed what it signed on its console before it signed.
    let console = std::fs::read_to_string(lab.join("token.log")).unwrap_or_default();
    let expected = [
        "simlab-token: sign request from sign.example".to_string(),
        "simlab-token: amount:     42.50 EUR".into(),
        "simlab-token: summary:    Flowers for Ada".into(),
        "simlab-token: user:       u1".into(),
        format!("simlab-token: correlator: {correlator}"),
        "simlab-token: press the button to sign".into(),
    ];
    let lines: Vec<&str> = console.lines().collect();
    let at = lines
        .iter()
        .position(|l| *l == expected[0])
        .unwrap_or_else(|| panic!("the console shows no request:\n{console}"));
    assert_eq!(
        lines[at..(at + expected.len()).min(lines.len())],
        expected.iter().map(String::as_str).collect::<Vec<_>>()[..],
        "{console}"
    );
}
