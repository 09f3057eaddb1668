//! Seed 004 as a service, through real processes: `simlab otp serve` over a virtual modem on a
//! pty (`simlab emulate modem`, the second channel), the bank stub (`simlab otp bank serve`),
//! and terminal A as an HTTPS client in this test (and as `simlab otp login|pay`). What the
//! phone received is read from the virtual modem's spool: the SUBMITs the server's modem sent.
//!
//! The ten acceptance tests of issue 12 are `t01_…` to `t10_…`; the login, the reverse
//! direction, PostgreSQL and the bad-input paths follow.

use serde_json::{Value, json};
use simlab_hil::postgres::Postgres;
use simlab_hil::{Process, VirtualModem, gammu, require, simlab, simlab_bin, text};
use simlab_services::http::client::{self, Url};
use simlab_services::http::tls::ClientTls;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

const U1: &str = "u1";
const U1_NUMBER: &str = "+491700000099";
/// The server's own modem number: nothing it sends comes back to it.
const SERVICE_NUMBER: &str = "+491609999000";
/// The stored limit: 100.00 EUR.
const LIMIT: u64 = 10_000;

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn ok(o: &Output) {
    assert!(o.status.success(), "{:?}", text(o));
}

#[derive(Default)]
struct Options {
    bank_decline_above: Option<u64>,
    /// The store: PostgreSQL at this URL instead of an SQLite file.
    db: Option<String>,
    extra: Vec<&'static str>,
    modem_faults: &'static str,
    /// Subscribers the operator's look-up stub knows (identifier, number as the operator
    /// spells it); empty: no look-up service.
    lookup: &'static [(&'static str, &'static str)],
}

/// One OTP service with its bank and modem.
struct World {
    dir: PathBuf,
    db: String,
    url: Url,
    clock: PathBuf,
    modem: VirtualModem,
    server: Option<Process>,
    _bank: Process,
    _lookup: Option<Process>,
}

impl Drop for World {
    fn drop(&mut self) {
        self.server.take();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Starts `args` with stderr into `log`; the URL of the first stdout line.
fn spawn(name: &str, args: &[&str], log: &Path) -> (Process, String) {
    let mut cmd = Command::new(simlab_bin());
    cmd.args(args)
        .current_dir(simlab_hil::workspace_root())
        .stdout(Stdio::piped())
        .stderr(Stdio::from(std::fs::File::create(log).unwrap()));
    let mut p = Process::spawn(name, &mut cmd);
    let mut line = String::new();
    BufReader::new(p.stdout().expect("piped stdout"))
        .read_line(&mut line)
        .expect("read the listening line");
    let url = line
        .split_whitespace()
        .find(|w| w.starts_with("https://"))
        .unwrap_or_else(|| {
            panic!(
                "{name} did not start: {line:?}\n{}",
                std::fs::read_to_string(log).unwrap_or_default()
            )
        })
        .to_string();
    (p, url)
}

impl World {
    fn start(name: &str, opts: Options) -> World {
        let dir = simlab_hil::temp_path(&format!("otp-service-{name}"));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let ca = dir.join("ca");
        for (role, who) in [("peer", "otp"), ("server", "bank"), ("server", "lookup")] {
            ok(&simlab(&[
                "gateway",
                "issue",
                "--ca-dir",
                s(&ca),
                "--organization",
                "otp",
                "--role",
                role,
                "--name",
                who,
                "--out",
                s(&dir.join(format!("{who}-tls"))),
            ]));
        }
        let mut bank_args = vec![
            "-v".to_string(),
            "otp".into(),
            "bank".into(),
            "serve".into(),
            "--listen".into(),
            "127.0.0.1:0".into(),
            "--tls".into(),
            s(&dir.join("bank-tls")).into(),
        ];
        if let Some(l) = opts.bank_decline_above {
            bank_args.extend(["--limit".into(), l.to_string()]);
        }
        let bank_args: Vec<&str> = bank_args.iter().map(String::as_str).collect();
        let (bank, bank_url) = spawn("bank", &bank_args, &dir.join("bank.log"));
        let lookup = (!opts.lookup.is_empty()).then(|| {
            let mut args = vec![
                "-v".to_string(),
                "otp".into(),
                "lookup".into(),
                "serve".into(),
                "--listen".into(),
                "127.0.0.1:0".into(),
                "--tls".into(),
                s(&dir.join("lookup-tls")).into(),
            ];
            for (id, number) in opts.lookup {
                args.extend(["--subscriber".into(), format!("{id}={number}")]);
            }
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            spawn("lookup", &args, &dir.join("lookup.log"))
        });

        let db = opts
            .db
            .clone()
            .unwrap_or_else(|| s(&dir.join("otp-service.sqlite")).to_string());
        for (id, number, bank) in [
            (U1, "00491700000099", "bank-1"),
            ("u2", "+49 170 0000098", "bank-1"),
        ] {
            ok(&simlab(&[
                "otp",
                "directory",
                "add",
                "--db",
                &db,
                "--id",
                id,
                "--msisdn",
                number,
                "--bank",
                bank,
                "--card",
                &format!("card-{id}"),
            ]));
        }
        ok(&simlab(&[
            "otp",
            "policy",
            "--db",
            &db,
            "--limit",
            &LIMIT.to_string(),
        ]));

        let mut modem_args = vec!["--own-number", SERVICE_NUMBER, "--loopback", "none"];
        if !opts.modem_faults.is_empty() {
            modem_args.extend(["--faults", opts.modem_faults]);
        }
        let modem = VirtualModem::start(&modem_args);
        let clock = dir.join("clock-offset");
        std::fs::write(&clock, "0").unwrap();
        let key = dir.join("otp.key");
        let tls = dir.join("otp-tls");
        let mut args = vec![
            "-v",
            "--modem",
            modem.path(),
            "otp",
            "serve",
            "--db",
            &db,
            "--key",
            s(&key),
            "--listen",
            "127.0.0.1:0",
            "--tls",
            s(&tls),
            "--bank",
            &bank_url,
            "--clock-offset-file",
            s(&clock),
        ];
        if let Some((_, lookup_url)) = &lookup {
            args.extend(["--lookup", lookup_url]);
        }
        args.extend(opts.extra.iter());
        let (server, url) = spawn("otp", &args, &dir.join("otp.log"));
        let url = Url::parse(&url)
            .unwrap()
            .with_tls(&ClientTls::pinned(&ca.join("ca.pem")).unwrap());
        World {
            dir,
            db,
            url,
            clock,
            modem,
            server: Some(server),
            _bank: bank,
            _lookup: lookup.map(|(p, _)| p),
        }
    }

    fn log(&self, name: &str) -> String {
        std::fs::read_to_string(self.dir.join(format!("{name}.log"))).unwrap_or_default()
    }

    fn ca(&self) -> PathBuf {
        self.dir.join("ca").join("ca.pem")
    }

    /// An HTTP call as terminal A: status and JSON body.
    fn call(&self, method: &str, path: &str, body: Option<&Value>) -> (u16, Value) {
        let bytes = body.map(|b| b.to_string().into_bytes());
        self.raw(method, path, bytes.as_deref())
    }

    fn raw(&self, method: &str, path: &str, body: Option<&[u8]>) -> (u16, Value) {
        let a = client::request(&self.url, method, path, body).expect("the OTP server answers");
        (
            a.status,
            serde_json::from_slice(&a.body).unwrap_or(Value::Null),
        )
    }

    fn open(&self, identifier: &str) -> String {
        let (status, v) = self.call(
            "POST",
            "/v1/sessions",
            Some(&json!({"identifier": identifier})),
        );
        assert_eq!(status, 201, "{v}");
        v["session"].as_str().unwrap().to_string()
    }

    fn pay(&self, session: &str, amount: u64, payee: &str) -> (u16, Value) {
        self.call(
            "POST",
            &format!("/v1/sessions/{session}/payments"),
            Some(&json!({
                "amount": amount,
                "currency": "EUR",
                "payee": payee,
                "items": [{"product": "Concert ticket", "quantity": 2}],
            })),
        )
    }

    fn confirm(
        &self,
        session: &str,
        tx: &str,
        code: &str,
        amount: u64,
        payee: &str,
    ) -> (u16, Value) {
        self.call(
            "POST",
            &format!("/v1/sessions/{session}/transactions/{tx}/confirm"),
            Some(&json!({
                "code": code,
                "amount": amount,
                "currency": "EUR",
                "payee": payee,
                "items": [{"product": "Concert ticket", "quantity": 2}],
            })),
        )
    }

    /// The code in the n-th SMS the server's modem sent (waits for it).
    fn code(&self, n: usize) -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let sent = self.modem.sent();
            if let Some(m) = sent.get(n) {
                let text = m["text"].as_str().unwrap();
                let code = text
                    .split(|c: char| !c.is_ascii_digit())
                    .find(|run| run.len() == 6)
                    .unwrap_or_else(|| panic!("no code in {text:?}"));
                return code.to_string();
            }
            assert!(Instant::now() < deadline, "no SMS #{n}: {sent:?}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// A payment over the limit, its transaction and code.
    fn secured(&self, session: &str, amount: u64) -> (String, String) {
        let before = self.modem.sent().len();
        let (status, v) = self.pay(session, amount, "ACME Shop");
        assert_eq!(status, 201, "{v}");
        assert_eq!(v["mode"], "secured", "{v}");
        (
            v["transaction"].as_str().unwrap().to_string(),
            self.code(before),
        )
    }

    fn log_json(&self) -> Vec<Value> {
        let o = simlab(&["otp", "log", "--db", &self.db, "--json"]);
        ok(&o);
        serde_json::from_slice::<Value>(&o.stdout)
            .unwrap()
            .as_array()
            .unwrap()
            .clone()
    }

    fn register(&self, identifier: &str) -> u64 {
        let o = simlab(&["otp", "register", "--db", &self.db, "--json"]);
        ok(&o);
        let v: Value = serde_json::from_slice(&o.stdout).unwrap();
        v["registers"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| r["identifier"] == identifier)
            .map(|r| r["total"].as_u64().unwrap())
            .sum()
    }

    /// No code, key or session token of the server in its log or the modem's.
    fn assert_no_code_in_logs(&self, codes: &[String]) {
        for log in [self.log("otp"), self.modem.log()] {
            for code in codes {
                assert!(!log.contains(code.as_str()), "code {code} in a log:\n{log}");
            }
        }
    }
}

#[test]
fn t01_one_sms_to_the_directorys_number_and_only_a_masked_number_back() {
    let w = World::start("t01", Options::default());
    let session = w.open(U1);
    let (status, v) = w.pay(&session, 15_000, "ACME Shop");
    assert_eq!(status, 201, "{v}");
    assert_eq!(v["mode"], "secured");
    assert_eq!(v["sent_to"], "+49…99");
    assert!(!v.to_string().contains("1700000099"), "{v}");
    let code = w.code(0);
    let sent = w.modem.sent();
    assert_eq!(sent.len(), 1, "{sent:?}");
    assert_eq!(sent[0]["to"], U1_NUMBER);
    let body = sent[0]["text"].as_str().unwrap();
    assert!(
        body.contains("150.00 EUR") && body.contains("ACME Shop"),
        "{body}"
    );
    assert!(body.contains("2 x Concert ticket"), "{body}");
    assert_eq!(
        sent[0]["validity_seconds"], 300,
        "TP-VP = the code's lifetime"
    );
    w.assert_no_code_in_logs(&[code]);
}

#[test]
fn t02_the_right_code_in_the_same_session_validates_and_the_register_grows() {
    let w = World::start("t02", Options::default());
    let session = w.open(U1);
    let (tx, code) = w.secured(&session, 15_000);
    let (status, v) = w.confirm(&session, &tx, &code, 15_000, "ACME Shop");
    assert_eq!(
        (status, v["status"].clone()),
        (200, json!("validated")),
        "{v}"
    );
    assert_eq!(w.register(U1), 15_000);
    let (status, v) = w.confirm(&session, &tx, &code, 15_000, "ACME Shop");
    assert_eq!(
        (status, v["error"].clone()),
        (409, json!("already_used")),
        "{v}"
    );
    assert_eq!(w.register(U1), 15_000, "counted once");
    w.assert_no_code_in_logs(&[code]);
}

#[test]
fn t03_the_code_from_a_second_session_is_wrong_session_and_stays_unused() {
    let w = World::start("t03", Options::default());
    let first = w.open(U1);
    let (tx, code) = w.secured(&first, 15_000);
    let second = w.open(U1);
    let (status, v) = w.confirm(&second, &tx, &code, 15_000, "ACME Shop");
    assert_eq!(
        (status, v["error"].clone()),
        (409, json!("wrong_session")),
        "{v}"
    );
    let (status, v) = w.confirm(&first, &tx, &code, 15_000, "ACME Shop");
    assert_eq!(
        (status, v["status"].clone()),
        (200, json!("validated")),
        "{v}"
    );
}

#[test]
fn t04_an_amount_changed_by_one_cent_is_a_mismatch() {
    let w = World::start("t04", Options::default());
    let session = w.open(U1);
    let (tx, code) = w.secured(&session, 15_000);
    let (status, v) = w.confirm(&session, &tx, &code, 15_001, "ACME Shop");
    assert_eq!(
        (status, v["error"].clone()),
        (422, json!("mismatch")),
        "{v}"
    );
    let (status, v) = w.confirm(&session, &tx, &code, 15_000, "ACME Shopp");
    assert_eq!(
        (status, v["error"].clone()),
        (422, json!("mismatch")),
        "{v}"
    );
    assert_eq!(w.register(U1), 0);
}

#[test]
fn t05_after_the_lifetime_the_code_is_expired() {
    let w = World::start("t05", Options::default());
    let session = w.open(U1);
    let (tx, code) = w.secured(&session, 15_000);
    std::fs::write(&w.clock, "301").unwrap();
    let (status, v) = w.confirm(&session, &tx, &code, 15_000, "ACME Shop");
    assert_eq!((status, v["error"].clone()), (410, json!("expired")), "{v}");
    let log = w.log_json();
    assert_eq!(log[0]["state"], "expired", "{log:?}");
}

#[test]
fn t06_exactly_the_limit_is_normal_and_recorded_one_cent_more_is_secured() {
    let w = World::start("t06", Options::default());
    let session = w.open(U1);
    let (status, v) = w.pay(&session, LIMIT, "Corner Shop");
    assert_eq!(status, 201, "{v}");
    assert_eq!(
        (v["mode"].clone(), v["status"].clone()),
        (json!("normal"), json!("validated"))
    );
    assert!(w.modem.sent().is_empty(), "no SMS for a normal payment");
    let log = w.log_json();
    assert_eq!(log.len(), 1);
    assert_eq!(
        (log[0]["mode"].clone(), log[0]["state"].clone()),
        (json!("normal"), json!("validated"))
    );
    assert_eq!(w.register(U1), LIMIT);
    let (_, _) = w.secured(&session, LIMIT + 1);
    assert_eq!(w.modem.sent().len(), 1);
}

#[test]
fn t07_an_unknown_identifier_is_404_sends_nothing_and_uses_no_rate_slot() {
    let w = World::start(
        "t07",
        Options {
            extra: vec!["--sessions", "2/600"],
            ..Options::default()
        },
    );
    for _ in 0..5 {
        let (status, v) = w.call(
            "POST",
            "/v1/sessions",
            Some(&json!({"identifier": "nobody"})),
        );
        assert_eq!(
            (status, v["error"].clone()),
            (404, json!("unknown_identifier")),
            "{v}"
        );
    }
    assert!(w.modem.sent().is_empty());
    assert!(w.log_json().is_empty());
    // u1's two slots are intact; the third is the limit.
    w.open(U1);
    w.open(U1);
    let (status, v) = w.call("POST", "/v1/sessions", Some(&json!({"identifier": U1})));
    assert_eq!(
        (status, v["error"].clone()),
        (429, json!("rate_limited")),
        "{v}"
    );
    assert!(
        v["detail"].as_str().unwrap().contains("try again in"),
        "{v}"
    );
}

#[test]
fn an_identifier_missing_from_the_directory_gets_its_number_from_the_operators_look_up() {
    let w = World::start(
        "lookup",
        Options {
            lookup: &[("u3", "0049 170 0000097"), (U1, "00491700000011")],
            ..Options::default()
        },
    );
    // u3 has no directory row: the operator knows it, and the code goes to that number.
    let session = w.open("u3");
    let (_, code) = w.secured(&session, 15_000);
    let sent = w.modem.sent();
    assert_eq!(sent.len(), 1, "{sent:?}");
    assert_eq!(
        sent[0]["to"], "+491700000097",
        "canonicalised from the look-up"
    );
    let (status, v) = w.pay(&session, 15_000, "ACME Shop");
    assert_eq!(status, 201, "{v}");
    assert!(
        w.log("lookup").contains("found=true"),
        "{}",
        w.log("lookup")
    );
    // The directory's own row wins: U1 is not looked up, whatever the operator says.
    let s1 = w.open(U1);
    w.secured(&s1, 15_000);
    assert_eq!(w.modem.sent()[2]["to"], U1_NUMBER);
    assert_eq!(w.log("lookup").matches("look-up").count(), 1);
    // Unknown to both: 404, nothing sent, nothing logged as issued.
    let (status, v) = w.call("POST", "/v1/sessions", Some(&json!({"identifier": "u4"})));
    assert_eq!(
        (status, v["error"].clone()),
        (404, json!("unknown_identifier")),
        "{v}"
    );
    assert!(w.log("lookup").contains("found=false"));
    assert_eq!(w.modem.sent().len(), 3);
    w.assert_no_code_in_logs(&[code]);
}

#[test]
fn t08_the_bank_declines_and_nothing_is_sent() {
    let w = World::start(
        "t08",
        Options {
            bank_decline_above: Some(20_000),
            ..Options::default()
        },
    );
    let session = w.open(U1);
    let (status, v) = w.pay(&session, 30_000, "ACME Shop");
    assert_eq!(
        (status, v["error"].clone()),
        (402, json!("bank_declined")),
        "{v}"
    );
    assert!(w.modem.sent().is_empty());
    let log = w.log_json();
    assert_eq!(
        (log[0]["state"].clone(), log[0]["outcome"].clone()),
        (json!("declined"), json!("bank_declined"))
    );
    assert!(
        w.log("bank").contains("approved=false"),
        "{}",
        w.log("bank")
    );
    // Under the bank's limit: approved, and the code goes out.
    w.secured(&session, 15_000);
    assert!(w.log("bank").contains("approved=true"));
}

#[test]
fn t09_five_wrong_codes_block_and_the_right_one_is_then_refused() {
    let w = World::start("t09", Options::default());
    let session = w.open(U1);
    let (tx, code) = w.secured(&session, 15_000);
    let wrong = if code == "000000" { "000001" } else { "000000" };
    for n in 1..=5 {
        let (status, v) = w.confirm(&session, &tx, wrong, 15_000, "ACME Shop");
        let expected = if n < 5 { "wrong_code" } else { "blocked" };
        assert_eq!(
            (status, v["error"].clone()),
            (403, json!(expected)),
            "attempt {n}: {v}"
        );
    }
    let (status, v) = w.confirm(&session, &tx, &code, 15_000, "ACME Shop");
    assert_eq!((status, v["error"].clone()), (403, json!("blocked")), "{v}");
    assert_eq!(w.register(U1), 0);
}

#[test]
fn t10_a_closed_session_refuses_its_code() {
    let w = World::start("t10", Options::default());
    let session = w.open(U1);
    let (tx, code) = w.secured(&session, 15_000);
    let (status, v) = w.call("DELETE", &format!("/v1/sessions/{session}"), None);
    assert_eq!(status, 200, "{v}");
    let (status, v) = w.confirm(&session, &tx, &code, 15_000, "ACME Shop");
    assert_eq!(
        (status, v["error"].clone()),
        (409, json!("session_closed")),
        "{v}"
    );
    let log = w.log_json();
    assert_eq!(log[0]["state"], "void", "{log:?}");
    // A new session gets a new secret: the old code does not validate there either.
    let again = w.open(U1);
    let (status, v) = w.confirm(&again, &tx, &code, 15_000, "ACME Shop");
    assert_eq!(
        (status, v["error"].clone()),
        (409, json!("wrong_session")),
        "{v}"
    );
}

/// `simlab otp login` and `otp pay` as terminal A: the code read from stdin once the SMS is
/// there.
#[test]
fn terminal_a_logs_in_and_pays_with_the_cli() {
    let w = World::start("cli", Options::default());
    let url = format!("https://{}", w.url.authority);
    let run = |args: &[&str], n: usize| {
        let mut cmd = Command::new(simlab_bin());
        cmd.args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().unwrap();
        let code = w.code(n);
        writeln!(child.stdin.take().unwrap(), "{code}").unwrap();
        let o = child.wait_with_output().unwrap();
        (o, code)
    };
    let ca = w.ca();
    let (o, code) = run(
        &[
            "otp",
            "login",
            "--server",
            &url,
            "--ca",
            s(&ca),
            "--id",
            U1,
            "--code",
            "-",
            "--json",
        ],
        0,
    );
    ok(&o);
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["access"], "granted", "{v}");
    assert!(
        w.modem.sent()[0]["text"]
            .as_str()
            .unwrap()
            .starts_with("Login code")
    );
    assert!(!String::from_utf8_lossy(&o.stdout).contains(&code));
    let (o, _) = run(
        &[
            "otp",
            "pay",
            "--server",
            &url,
            "--ca",
            s(&ca),
            "--id",
            U1,
            "--amount",
            "15000",
            "--payee",
            "ACME Shop",
            "--item",
            "Concert ticket=2",
            "--code",
            "-",
            "--json",
        ],
        1,
    );
    ok(&o);
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["status"], "validated", "{v}");
    assert_eq!(w.register(U1), 15_000);
    // A wrong code through the CLI: exit 1 and the cause.
    let o = {
        let mut cmd = Command::new(simlab_bin());
        cmd.args([
            "otp",
            "pay",
            "--server",
            &url,
            "--ca",
            s(&ca),
            "--id",
            U1,
            "--amount",
            "15000",
            "--payee",
            "ACME Shop",
            "--code",
            "999999x",
        ]);
        cmd.output().unwrap()
    };
    assert_eq!(o.status.code(), Some(2), "{:?}", text(&o));
    // Every session the CLI opened, it closed.
    let log = w.log_json();
    assert!(log.iter().all(|c| c["state"] != "pending"), "{log:?}");
}

/// Aspects 2 and 3: the code shown on terminal A comes back by SMS from the registered
/// number; from another number it validates nothing.
#[test]
fn the_reverse_direction_validates_by_sms_from_the_registered_number() {
    let w = World::start("reverse", Options::default());
    let session = w.open(U1);
    let (status, v) = w.call(
        "POST",
        &format!("/v1/sessions/{session}/payments"),
        Some(&json!({"amount": 15_000, "currency": "EUR", "payee": "ACME Shop", "direction": "reverse"})),
    );
    assert_eq!(status, 201, "{v}");
    assert_eq!(v["mode"], "reverse");
    let code = v["code"].as_str().unwrap().to_string();
    let tx = v["transaction"].as_str().unwrap().to_string();
    assert!(
        w.modem.sent().is_empty(),
        "nothing is sent in this direction"
    );
    let status_of = || {
        w.call(
            "GET",
            &format!("/v1/sessions/{session}/transactions/{tx}"),
            None,
        )
        .1["status"]
            .as_str()
            .unwrap()
            .to_string()
    };
    w.modem
        .inbox("stranger", &json!({"from": "+491700000098", "text": code}));
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(status_of(), "awaiting_sms");
    w.modem.inbox(
        "reply",
        &json!({"from": "00491700000099", "text": format!("OK {code}")}),
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while status_of() != "validated" {
        assert!(Instant::now() < deadline, "{}", w.log("otp"));
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(w.register(U1), 15_000);
    w.assert_no_code_in_logs(&[code]);
}

/// The phone is gammu on a virtual modem of its own, so the SMS on both legs is encoded and
/// decoded by a client simlab did not write; the test plays the network, carrying each
/// message from one modem's spool to the other's inbox.
#[test]
fn gammu_on_the_phone_reads_the_code_and_sends_it_back() {
    if !require("gammu") {
        return;
    }
    let w = World::start("gammu", Options::default());
    let phone = VirtualModem::start(&["--own-number", U1_NUMBER, "--loopback", "none"]);
    let rc = phone.gammurc();

    // Forward: the server's SMS reaches the phone; gammu reads it; terminal A types the code.
    let session = w.open(U1);
    let (status, v) = w.pay(&session, 15_000, "ACME Shop");
    assert_eq!((status, v["mode"].clone()), (201, json!("secured")), "{v}");
    let tx = v["transaction"].as_str().unwrap().to_string();
    w.code(0);
    let sms = &w.modem.sent()[0];
    assert_eq!(sms["to"], U1_NUMBER);
    phone.inbox(
        "code",
        &json!({"from": SERVICE_NUMBER, "text": sms["text"]}),
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    let shown = loop {
        let o = gammu(&rc, &["getallsms"]);
        let out = text(&o).0;
        if out.contains("ACME Shop") {
            break out;
        }
        assert!(
            Instant::now() < deadline,
            "gammu never saw the code: {:?}\n{}",
            text(&o),
            phone.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(shown.contains("150.00 EUR"), "{shown}");
    let code: String = shown
        .split("Code ")
        .nth(1)
        .unwrap_or_else(|| panic!("no code in what gammu shows: {shown}"))
        .chars()
        .take(6)
        .collect();
    let (status, v) = w.confirm(&session, &tx, &code, 15_000, "ACME Shop");
    assert_eq!(
        (status, v["status"].clone()),
        (200, json!("validated")),
        "{v}"
    );

    // Reverse: the code shown on terminal A, sent back by gammu from the registered number.
    let (status, v) = w.call(
        "POST",
        &format!("/v1/sessions/{session}/payments"),
        Some(&json!({"amount": 12_000, "currency": "EUR", "payee": "ACME Shop", "direction": "reverse"})),
    );
    assert_eq!((status, v["mode"].clone()), (201, json!("reverse")), "{v}");
    let back = v["code"].as_str().unwrap().to_string();
    let tx2 = v["transaction"].as_str().unwrap().to_string();
    let o = gammu(
        &rc,
        &[
            "sendsms",
            "TEXT",
            SERVICE_NUMBER,
            "-text",
            &format!("OK {back}"),
        ],
    );
    assert!(o.status.success(), "{:?}\n{}", text(&o), phone.log());
    let reply = &phone.sent()[0];
    assert_eq!(reply["to"], SERVICE_NUMBER);
    w.modem
        .inbox("reply", &json!({"from": U1_NUMBER, "text": reply["text"]}));
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (_, v) = w.call(
            "GET",
            &format!("/v1/sessions/{session}/transactions/{tx2}"),
            None,
        );
        if v["status"] == "validated" {
            break;
        }
        assert!(Instant::now() < deadline, "{v}\n{}", w.log("otp"));
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(w.register(U1), 27_000);
    w.assert_no_code_in_logs(&[code, back]);
}

/// The server on PostgreSQL: the same flow, the rows read back with psql, and the key file
/// required (it never goes into the database).
#[test]
fn the_service_on_postgresql_validates_and_keeps_the_key_out_of_the_database() {
    let Some(pg) = Postgres::start_on("otp-service-pg-server", "5437") else {
        return;
    };
    let o = simlab(&[
        "otp",
        "serve",
        "--db",
        &pg.url,
        "--tls",
        "/",
        "--null-sms",
        "--listen",
        "127.0.0.1:0",
    ]);
    assert_eq!(o.status.code(), Some(2), "{:?}", text(&o));
    let w = World::start(
        "pg",
        Options {
            db: Some(pg.url.clone()),
            ..Options::default()
        },
    );
    let session = w.open(U1);
    let (tx, code) = w.secured(&session, 15_000);
    let (status, v) = w.confirm(&session, &tx, &code, 15_000, "ACME Shop");
    assert_eq!(status, 200, "{v}");
    assert_eq!(
        pg.psql("SELECT state || ' ' || amount FROM certificates"),
        "validated 15000"
    );
    assert_eq!(
        pg.psql("SELECT total FROM registers WHERE identifier = 'u1'"),
        "15000"
    );
    let key = std::fs::read(w.dir.join("otp.key")).unwrap();
    let key_hex: String = key.iter().map(|b| format!("{b:02x}")).collect();
    let dump = pg.psql("SELECT string_agg(encode(mac, 'hex'), ',') FROM certificates");
    assert!(!dump.contains(&key_hex));
}

#[test]
fn bad_input_gets_a_clear_4xx_and_nothing_is_stored() {
    let w = World::start("bad", Options::default());
    let session = w.open(U1);
    let pay = format!("/v1/sessions/{session}/payments");
    for (body, code) in [
        (&b"{not json"[..], "malformed_json"),
        (
            br#"{"amount": 100, "currency": "EUR", "payee": "x", "extra": 1}"#,
            "malformed_json",
        ),
        (
            br#"{"amount": 12.5, "currency": "EUR", "payee": "x"}"#,
            "malformed_json",
        ),
        (
            br#"{"amount": "100", "currency": "EUR", "payee": "x"}"#,
            "malformed_json",
        ),
        (
            br#"{"amount": 0, "currency": "EUR", "payee": "x"}"#,
            "bad_amount",
        ),
        (
            br#"{"amount": 100, "currency": "eur", "payee": "x"}"#,
            "bad_currency",
        ),
        (
            br#"{"amount": 100, "currency": "EUR", "payee": "x", "direction": "up"}"#,
            "bad_direction",
        ),
    ] {
        let (status, v) = w.raw("POST", &pay, Some(body));
        assert_eq!(
            (status, v["error"].clone()),
            (400, json!(code)),
            "{}: {v}",
            String::from_utf8_lossy(body)
        );
    }
    let long = "P".repeat(10_000);
    let (status, v) = w.pay(&session, 100, &long);
    assert_eq!(
        (status, v["error"].clone()),
        (400, json!("bad_payee")),
        "{v}"
    );
    let (tx, _) = w.secured(&session, 15_000);
    let (status, v) = w.confirm(&session, &tx, "12a456", 15_000, "ACME Shop");
    assert_eq!(
        (status, v["error"].clone()),
        (400, json!("bad_code")),
        "{v}"
    );
    let (status, v) = w.call("GET", "/v1/sessions/zz/transactions/00", None);
    assert_eq!(
        (status, v["error"].clone()),
        (400, json!("bad_session")),
        "{v}"
    );
    let (status, _) = w.call(
        "GET",
        &format!("/v1/sessions/{}/transactions/{tx}", "0".repeat(32)),
        None,
    );
    assert_eq!(status, 404);
    // Only the one secured payment was stored, with no failure counted for the bad code.
    let log = w.log_json();
    assert_eq!(log.len(), 1, "{log:?}");
    assert_eq!(log[0]["failures"], 0);
    // The CLI refuses bad arguments before anything starts.
    for args in [
        &[
            "otp",
            "directory",
            "add",
            "--db",
            &w.db,
            "--id",
            "u3",
            "--msisdn",
            "0170 123",
        ][..],
        &[
            "otp",
            "directory",
            "add",
            "--db",
            &w.db,
            "--id",
            U1,
            "--msisdn",
            "+491700000097",
        ][..],
        &[
            "otp",
            "directory",
            "remove",
            "--db",
            &w.db,
            "--id",
            "nobody",
        ][..],
        &["otp", "register", "--db", &w.db, "--from", "2026-13-01"][..],
        &[
            "otp",
            "serve",
            "--db",
            &w.db,
            "--tls",
            "/",
            "--ttl",
            "5",
            "--null-sms",
        ][..],
        &[
            "otp",
            "serve",
            "--db",
            &w.db,
            "--tls",
            "/",
            "--codes",
            "3",
            "--null-sms",
        ][..],
        &[
            "otp",
            "pay",
            "--server",
            "https://127.0.0.1:1",
            "--ca",
            s(&w.ca()),
            "--id",
            U1,
            "--amount",
            "0",
            "--payee",
            "x",
        ][..],
        &[
            "otp",
            "lookup",
            "serve",
            "--tls",
            s(&w.dir.join("lookup-tls")),
            "--subscriber",
            "u3",
        ][..],
        &[
            "otp",
            "lookup",
            "serve",
            "--tls",
            s(&w.dir.join("lookup-tls")),
            "--listen",
            "nowhere",
        ][..],
    ] {
        let o = simlab(args);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {:?}", text(&o));
    }
}

/// The modem vanishes in the middle of the send: the code is void, terminal A is told (503),
/// and the code can never validate.
#[test]
fn a_modem_that_vanishes_mid_send_voids_the_code() {
    let w = World::start(
        "vanish",
        Options {
            modem_faults: "vanish=1",
            ..Options::default()
        },
    );
    let session = w.open(U1);
    let (status, v) = w.pay(&session, 15_000, "ACME Shop");
    assert_eq!(
        (status, v["error"].clone()),
        (503, json!("sms_failed")),
        "{v}"
    );
    assert!(
        w.log("otp").contains("the code is void"),
        "{}",
        w.log("otp")
    );
    let log = w.log_json();
    assert_eq!(
        (log[0]["state"].clone(), log[0]["outcome"].clone()),
        (json!("void"), json!("send_failed"))
    );
    // The server keeps serving.
    let (status, _) = w.call("POST", "/v1/sessions", Some(&json!({"identifier": U1})));
    assert_eq!(status, 201);
}

/// The per-number limit counts the number in E.164: the directory's spelling does not give
/// another slot.
#[test]
fn the_code_limit_counts_each_number_once_however_it_was_typed() {
    let w = World::start(
        "rate",
        Options {
            extra: vec!["--codes", "1/600"],
            ..Options::default()
        },
    );
    let session = w.open(U1);
    w.secured(&session, 15_000);
    let (status, v) = w.pay(&session, 15_000, "ACME Shop");
    assert_eq!(
        (status, v["error"].clone()),
        (429, json!("rate_limited")),
        "{v}"
    );
    // u2 is another number: its own slot.
    let other = w.open("u2");
    let (status, v) = w.pay(&other, 15_000, "ACME Shop");
    assert_eq!(status, 201, "{v}");
    // `otp send` (the single-code command) canonicalises too.
    let db = w.dir.join("single.sqlite");
    let phone = VirtualModem::start(&[]);
    let mut codes = 0;
    for typed in [
        "+491701234569",
        "00491701234569",
        "491701234569",
        "+4901701234569",
    ] {
        let o = simlab(&[
            "--modem",
            phone.path(),
            "otp",
            "send",
            "--to",
            typed,
            "--amount",
            "100",
            "--payee",
            "X",
            "--db",
            s(&db),
            "--rate-limit",
            "3/600",
        ]);
        if o.status.success() {
            codes += 1;
        }
    }
    assert_eq!(codes, 3, "one number, three codes");
}
