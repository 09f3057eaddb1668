//! Seed 000's temporary PKI as running services: `simlab auc serve`, `simlab gateway serve`
//! and `simlab seller serve` as real processes on loopback, `simlab ms enroll` and `simlab
//! buy` as clients with an emulated SIM + token (its memory in a state file), openssl as the
//! independent verifier of certificates and invoice signatures, and a real PostgreSQL for the
//! gateway.
//!
//! Every abort path of figures 3, 5, 7, 8, 10 and 11 has a test here that fails if the check
//! is removed: forged M1 and M3 (fig. 3), wrong M2 (fig. 5), an over-priced invoice (fig. 7),
//! a bad, foreign or revoked certificate, a broken restriction and a bad signature at the
//! seller (fig. 8), and at the gateway a duplicate record, no certificate record, a bad
//! signature, an altered amount, a revoked certificate and broken restrictions (fig. 11),
//! with the seller's error log (fig. 10). A gateway dying mid-batch bills nothing twice.
//!
//! Everything runs over TLS with the operator's CA (`simlab gateway issue`): the phone side
//! pins the CA, sellers and gateways present client certificates, and the tests check who is
//! let in (another CA's, an expired and a revoked certificate are not; the AuC answers only a
//! gateway), with openssl s_client and curl as clients we did not write.

use serde_json::{Value, json};
use simlab_hil::postgres::Postgres;
use simlab_hil::{Process, require, simlab, simlab_bin, text};
use simlab_services::http::client::{self, Url};
use simlab_services::http::server::{Background, Limits};
use simlab_services::http::tls::{ClientTls, Identity, ServerTls};
use simlab_services::http::{Request, Response, Role};
use simlab_services::pki::gateway::ca::Ca;
use std::cell::RefCell;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const PHONE: &str = "fixtures/cards/demo-usim.toml";
const SELLER: &str = "cafe-1";
const TOKEN_PIN: &str = "0000";
const SIM_PIN: &str = "1234";

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// A fresh directory for one test.
fn test_dir(name: &str) -> PathBuf {
    let dir = simlab_hil::temp_path(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Starts `simlab <args>` as a server and returns it with the URL its first line names.
fn spawn_role(name: &str, args: &[&str]) -> (Process, String) {
    let mut cmd = Command::new(simlab_bin());
    cmd.args(args)
        .current_dir(simlab_hil::workspace_root())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    let mut p = Process::spawn(name, &mut cmd);
    let mut line = String::new();
    BufReader::new(p.stdout().expect("piped stdout"))
        .read_line(&mut line)
        .expect("read the listening line");
    let url = line
        .split_whitespace()
        .find(|w| w.starts_with("https://"))
        .unwrap_or_else(|| panic!("{name} did not say where it listens over TLS: {line:?}"))
        .to_string();
    (p, url)
}

// ----- TLS: who the test speaks as ------------------------------------------------------------

/// How each server the tests started is trusted: its URL and the CA that certified it. Tests
/// run in parallel, but every server has a port of its own, so a URL names one CA.
static TRUST: Mutex<Vec<(String, PathBuf)>> = Mutex::new(Vec::new());

thread_local! {
    /// The CA directory of the stack this test thread started last: fake servers get their
    /// certificates from it.
    static CURRENT_CA: RefCell<Option<PathBuf>> = const { RefCell::new(None) };
}

fn trust(url: &str, ca_dir: &Path) {
    TRUST
        .lock()
        .unwrap()
        .push((url.to_string(), ca_dir.to_path_buf()));
}

fn ca_of(url: &str) -> PathBuf {
    TRUST
        .lock()
        .unwrap()
        .iter()
        .rev()
        .find(|(u, _)| u == url)
        .map(|(_, ca)| ca.clone())
        .unwrap_or_else(|| panic!("no CA known for {url}"))
}

/// The phone's side: the CA pinned, no certificate.
fn phone_tls(url: &str) -> ClientTls {
    ClientTls::pinned(&ca_of(url).join("ca.pem")).unwrap()
}

/// A TLS identity issued in the test process from the CA in `ca_dir`.
fn identity(ca_dir: &Path, role: Role, name: &str) -> Identity {
    let ca = Ca::load_or_create(ca_dir, "simlab").unwrap();
    let issued = ca
        .issue_tls(role, name, &["localhost".into(), "127.0.0.1".into()], 3600)
        .unwrap();
    Identity::from_der(
        issued.certificate_der.clone(),
        issued.key_pkcs8_der.to_vec(),
        vec![ca.certificate().der.clone()],
    )
}

/// A client presenting `role`'s certificate from the CA that certified `url`.
fn client_tls(url: &str, role: Role, name: &str) -> ClientTls {
    let id = identity(&ca_of(url), role, name);
    ClientTls {
        anchors: id.ca.clone(),
        identity: Some(id),
    }
}

/// One request as `tls`: the status and the body as JSON (or a string when not JSON).
fn http_as(
    tls: &ClientTls,
    method: &str,
    url: &str,
    path: &str,
    body: Option<&str>,
) -> (u16, Value) {
    let base = Url::parse(url).unwrap().with_tls(tls);
    let answer = client::request(&base, method, path, body.map(str::as_bytes))
        .unwrap_or_else(|e| panic!("{method} {url}{path}: {e}"));
    let text = String::from_utf8_lossy(&answer.body).into_owned();
    let value = serde_json::from_str(&text).unwrap_or(Value::String(text));
    (answer.status, value)
}

/// One request from the phone's side (no client certificate).
fn http(method: &str, url: &str, path: &str, body: Option<&str>) -> (u16, Value) {
    http_as(&phone_tls(url), method, url, path, body)
}

fn post(url: &str, path: &str, body: &Value) -> (u16, Value) {
    http("POST", url, path, Some(&body.to_string()))
}

/// A POST as a seller (its client certificate).
fn post_as_seller(url: &str, seller: &str, path: &str, body: &Value) -> (u16, Value) {
    let tls = client_tls(url, Role::Seller, seller);
    http_as(&tls, "POST", url, path, Some(&body.to_string()))
}

/// A GET as a seller, as the seller's online validity check does.
fn get_as_seller(url: &str, path: &str) -> (u16, Value) {
    http_as(
        &client_tls(url, Role::Seller, SELLER),
        "GET",
        url,
        path,
        None,
    )
}

/// A server in the test process with a server certificate from this thread's stack's CA:
/// `answer(method, path, body)` gives status and body.
struct FakeServer {
    url: String,
    _server: Background,
}

type Answer = dyn Fn(&str, &str, &str) -> (u16, String) + Send + Sync;

impl FakeServer {
    fn start(answer: Box<Answer>) -> FakeServer {
        let ca_dir = CURRENT_CA
            .with(|c| c.borrow().clone())
            .expect("start a Stack before a FakeServer");
        let id = identity(&ca_dir, Role::Server, "gateway");
        let tls = ServerTls::new(&id, &id.ca).unwrap();
        let handler = Arc::new(move |req: &Request| {
            let (status, body) =
                answer(&req.method, &req.path, &String::from_utf8_lossy(&req.body));
            Response {
                status,
                content_type: "application/json",
                body: body.into_bytes(),
                headers: Vec::new(),
            }
        });
        let server =
            Background::start("127.0.0.1:0", handler, Limits::default(), Some(tls), "fake")
                .unwrap();
        let url = server.url();
        trust(&url, &ca_dir);
        FakeServer {
            url,
            _server: server,
        }
    }

    /// A relay to `target` that lets `edit` change the JSON answer to `path_suffix`.
    fn relay(target: String, path_suffix: &'static str, edit: fn(&mut Value)) -> FakeServer {
        FakeServer::start(Box::new(move |method, path, body| {
            let (status, mut v) = http(method, &target, path, Some(body));
            if status == 200 && path.ends_with(path_suffix) {
                edit(&mut v);
            }
            (status, v.to_string())
        }))
    }
}

// ----- the services ----------------------------------------------------------------------------

/// AuC, gateway and a registered seller, as processes.
struct Stack {
    dir: PathBuf,
    gateway_db: String,
    auc_url: String,
    gw_url: String,
    seller_url: String,
    seller: Option<Process>,
    gateway: Option<Process>,
    auc: Option<Process>,
}

impl Drop for Stack {
    fn drop(&mut self) {
        // Stopped in reverse order of start, then the directory goes.
        self.seller.take();
        self.gateway.take();
        self.auc.take();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Stack {
    /// With the gateway on SQLite in `dir`, or on `gateway_db`.
    fn start(name: &str, gateway_db: Option<&str>, gateway_extra: &[&str]) -> Stack {
        let dir = test_dir(name);
        let auc_db = dir.join("auc.sqlite");
        let ca_dir = dir.join("ca");
        CURRENT_CA.with(|c| *c.borrow_mut() = Some(ca_dir.clone()));
        let issue = |role: &str, who: &str, out: &str| {
            let o = simlab(&[
                "gateway",
                "issue",
                "--ca-dir",
                s(&ca_dir),
                "--role",
                role,
                "--name",
                who,
                "--out",
                s(&dir.join(out)),
            ]);
            assert!(o.status.success(), "{:?}", text(&o));
        };
        issue("server", "auc", "auc-tls");
        issue("seller", SELLER, "seller-tls");
        let (auc, auc_url) = spawn_role(
            "auc",
            &[
                "auc",
                "serve",
                "--db",
                s(&auc_db),
                "--listen",
                "127.0.0.1:0",
                "--tls",
                s(&dir.join("auc-tls")),
                "--profile",
                PHONE,
            ],
        );
        trust(&auc_url, &ca_dir);
        let gateway_db = gateway_db
            .map(String::from)
            .unwrap_or_else(|| dir.join("gateway.sqlite").to_string_lossy().into_owned());
        let mut stack = Stack {
            dir,
            gateway_db,
            auc_url,
            gw_url: String::new(),
            seller_url: String::new(),
            seller: None,
            gateway: None,
            auc: Some(auc),
        };
        stack.start_gateway(gateway_extra);
        let o = simlab(&[
            "gateway",
            "add-seller",
            "--db",
            &stack.gateway_db,
            "--seller-id",
            SELLER,
        ]);
        assert!(o.status.success(), "{:?}", text(&o));
        let seller_db = stack.dir.join("seller.sqlite");
        let (seller, seller_url) = spawn_role(
            "seller",
            &[
                "seller",
                "serve",
                "--db",
                s(&seller_db),
                "--gateway",
                &stack.gw_url,
                "--seller-id",
                SELLER,
                "--listen",
                "127.0.0.1:0",
                "--tls",
                s(&stack.seller_tls()),
                "--item",
                "coffee=350",
                "--item",
                "flowers=1500",
                "--item",
                "ticket=4900",
            ],
        );
        trust(&seller_url, &stack.dir.join("ca"));
        stack.seller = Some(seller);
        stack.seller_url = seller_url;
        stack
    }

    fn seller_tls(&self) -> PathBuf {
        self.dir.join("seller-tls")
    }

    fn start_gateway(&mut self, extra: &[&str]) {
        let ca_dir = self.dir.join("ca");
        let mut args = vec![
            "gateway",
            "serve",
            "--db",
            &self.gateway_db,
            "--ca-dir",
            s(&ca_dir),
            "--auc",
            &self.auc_url,
            "--listen",
            "127.0.0.1:0",
        ];
        args.extend_from_slice(extra);
        let (gw, url) = spawn_role("gateway", &args);
        trust(&url, &ca_dir);
        self.gateway = Some(gw);
        self.gw_url = url;
    }

    fn ca_pem(&self) -> PathBuf {
        self.dir.join("ca").join("ca.pem")
    }

    fn seller_db(&self) -> PathBuf {
        self.dir.join("seller.sqlite")
    }

    /// A phone (SIM + token) whose memory lives in `name`.state in the test directory.
    fn phone(&self, name: &str) -> Phone {
        Phone {
            state: self.dir.join(format!("{name}.state")),
            ca: self.ca_pem(),
        }
    }

    /// `simlab seller submit` for this stack's seller.
    fn submit(&self) -> std::process::Output {
        simlab(&[
            "seller",
            "submit",
            "--db",
            s(&self.seller_db()),
            "--gateway",
            &self.gw_url,
            "--seller-id",
            SELLER,
            "--tls",
            s(&self.seller_tls()),
            "--json",
        ])
    }

    /// POSTs a 910 by hand, as the seller.
    fn bill(&self, batch_id: &str, records: Vec<Value>) -> (u16, Value) {
        post_as_seller(
            &self.gw_url,
            SELLER,
            "/v1/billing/batches",
            &json!({ "seller_id": SELLER, "batch_id": batch_id, "records": records }),
        )
    }

    /// `simlab seller sales --json`: every sale and its billing state.
    fn sales(&self) -> Value {
        simlab_hil::json(&simlab(&[
            "seller",
            "sales",
            "--db",
            s(&self.seller_db()),
            "--json",
        ]))
    }

    fn cdrs(&self) -> Vec<Value> {
        let o = simlab(&["gateway", "cdrs", "--db", &self.gateway_db, "--json"]);
        assert!(o.status.success(), "{:?}", text(&o));
        simlab_hil::json(&o).as_array().unwrap().clone()
    }
}

/// The emulated card (demo USIM with the token applet) with persistent memory.
struct Phone {
    state: PathBuf,
    /// The operator's CA, pinned for every service the phone reaches.
    ca: PathBuf,
}

impl Phone {
    fn run(&self, args: &[&str]) -> std::process::Output {
        let mut all = vec!["--emulate", PHONE];
        all.extend_from_slice(args);
        all.extend_from_slice(&["--state", s(&self.state)]);
        simlab(&all)
    }

    fn enroll(&self, gateway: &str, extra: &[&str]) -> std::process::Output {
        let mut args = vec![
            "ms",
            "enroll",
            "--gateway",
            gateway,
            "--pin",
            TOKEN_PIN,
            "--sim-pin",
            SIM_PIN,
            "--ca",
            s(&self.ca),
            "--json",
        ];
        args.extend_from_slice(extra);
        self.run(&args)
    }

    /// Enrolls and returns the JSON, asserting success.
    fn enrolled(&self, gateway: &str, extra: &[&str]) -> Value {
        let o = self.enroll(gateway, extra);
        assert!(o.status.success(), "enroll: {:?}", text(&o));
        simlab_hil::json(&o)
    }

    fn buy(&self, seller: &str, item: &str, extra: &[&str]) -> std::process::Output {
        let mut args = vec![
            "buy",
            "--seller",
            seller,
            "--item",
            item,
            "--pin",
            TOKEN_PIN,
            "--ca",
            s(&self.ca),
            "--json",
        ];
        args.extend_from_slice(extra);
        self.run(&args)
    }

    fn bought(&self, seller: &str, item: &str) -> Value {
        let o = self.buy(seller, item, &[]);
        assert!(o.status.success(), "buy: {:?}", text(&o));
        simlab_hil::json(&o)
    }

    /// The token's DER signature over `data` (its SIGN command: SHA-256 on the card).
    fn sign(&self, data: &[u8]) -> String {
        let o = self.run(&[
            "token",
            "sign",
            "--data",
            &hex(data),
            "--pin",
            TOKEN_PIN,
            "--json",
        ]);
        assert!(o.status.success(), "sign: {:?}", text(&o));
        simlab_hil::json(&o)["signature_der"]
            .as_str()
            .unwrap()
            .to_string()
    }

    fn certificate_len(&self) -> u64 {
        let o = self.run(&["token", "info", "--json"]);
        assert!(o.status.success(), "{:?}", text(&o));
        simlab_hil::json(&o)["certificate_len"].as_u64().unwrap()
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

/// The invoice encoding of docs/pki-messages.md, written here independently of simlab's.
fn invoice(txn: &str, serial: &[u8], amount: u64, issued_at: u64, item: &str) -> Vec<u8> {
    let mut out = Vec::new();
    for f in [
        &b"simlab-invoice-v1"[..],
        SELLER.as_bytes(),
        txn.as_bytes(),
        serial,
        &amount.to_be_bytes(),
        b"EUR",
        &issued_at.to_be_bytes(),
        item.as_bytes(),
    ] {
        out.extend_from_slice(&(f.len() as u16).to_be_bytes());
        out.extend_from_slice(f);
    }
    out
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// An accounting record as the seller would send it.
fn record(txn: &str, serial: &str, amount: u64, invoice: &[u8], signature: &str) -> Value {
    json!({
        "transaction_id": txn,
        "serial": serial,
        "amount": amount,
        "currency": "EUR",
        "invoice": hex(invoice),
        "signature": signature,
    })
}

fn openssl(args: &[&str]) -> (bool, String) {
    let o = Command::new("openssl")
        .args(args)
        .output()
        .expect("run openssl");
    (
        o.status.success(),
        String::from_utf8_lossy(&o.stdout).into_owned() + &String::from_utf8_lossy(&o.stderr),
    )
}

/// Each record's fate in a 920, in batch order: `billed`, or the reason it was not (the
/// answer names only the records not billed, by their position).
fn reasons(answer: &Value) -> Vec<String> {
    let n = answer["records"].as_u64().unwrap() as usize;
    let mut out = vec!["billed".to_string(); n];
    for r in answer["rejections"].as_array().unwrap() {
        out[r["index"].as_u64().unwrap() as usize] = r["reason"].as_str().unwrap().to_string();
    }
    out
}

/// The rejection of record `index` in a 920, if it was not billed.
fn rejection(answer: &Value, index: usize) -> Option<&Value> {
    answer["rejections"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["index"].as_u64() == Some(index as u64))
}

// ----- the tests -------------------------------------------------------------------------------

#[test]
fn enroll_buy_and_bill_end_to_end_checked_by_openssl() {
    if !require("openssl") {
        return;
    }
    let stack = Stack::start("pki-e2e", None, &[]);
    let phone = stack.phone("phone");
    let e = phone.enrolled(&stack.gw_url, &["--alias", "alice", "--limit", "2000"]);
    assert_eq!(e["imsi"], "001010000000042");
    assert_eq!(e["path"], "gsm");
    let cert = stack.dir.join("alice.pem");
    std::fs::write(&cert, e["certificate_pem"].as_str().unwrap()).unwrap();

    // openssl reads the certificate, the alias is the subject, the restrictions are there.
    let (ok, out) = openssl(&["x509", "-in", s(&cert), "-noout", "-text"]);
    assert!(ok, "{out}");
    assert!(out.contains("Subject: O = simlab, CN = alice"), "{out}");
    assert!(
        out.contains("ecdsa-with-SHA256") && out.contains("prime256v1"),
        "{out}"
    );
    assert!(out.contains("1.3.6.1.4.1.55555.1.1"), "{out}");
    assert!(out.contains("Digital Signature"), "{out}");
    // …and verifies it against the gateway's CA file, and the one sent in 260.
    let (ok, out) = openssl(&["verify", "-CAfile", s(&stack.ca_pem()), s(&cert)]);
    assert!(ok, "{out}");
    let sent_ca = stack.dir.join("sent-ca.pem");
    std::fs::write(&sent_ca, e["gateway_certificate_pem"].as_str().unwrap()).unwrap();
    assert!(openssl(&["verify", "-CAfile", s(&sent_ca), s(&cert)]).0);
    // The CA key is private to the gateway.
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(stack.dir.join("ca/ca-key.pem"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);

    // A purchase; openssl verifies the token's signature over the exact invoice bytes.
    let b = phone.bought(&stack.seller_url, "coffee");
    assert_eq!(
        (b["amount"].as_u64(), b["currency"].as_str()),
        (Some(350), Some("EUR"))
    );
    let inv = stack.dir.join("invoice.bin");
    let sig = stack.dir.join("invoice.sig");
    let key = stack.dir.join("key.pem");
    std::fs::write(&inv, unhex(b["invoice_hex"].as_str().unwrap())).unwrap();
    std::fs::write(&sig, unhex(b["signature_der_hex"].as_str().unwrap())).unwrap();
    std::fs::write(&key, b["public_key_pem"].as_str().unwrap()).unwrap();
    let (ok, out) = openssl(&[
        "dgst",
        "-sha256",
        "-verify",
        s(&key),
        "-signature",
        s(&sig),
        s(&inv),
    ]);
    assert!(ok && out.contains("Verified OK"), "{out}");
    // The key is the certified one.
    let (_, pub_from_cert) = openssl(&["x509", "-in", s(&cert), "-noout", "-pubkey"]);
    assert_eq!(
        pub_from_cert.trim(),
        b["public_key_pem"].as_str().unwrap().trim()
    );
    // One changed byte and openssl says no: the check has teeth.
    let mut tampered = unhex(b["invoice_hex"].as_str().unwrap());
    tampered[40] ^= 1;
    std::fs::write(&inv, tampered).unwrap();
    assert!(
        !openssl(&[
            "dgst",
            "-sha256",
            "-verify",
            s(&key),
            "-signature",
            s(&sig),
            s(&inv)
        ])
        .0
    );

    phone.bought(&stack.seller_url, "flowers");
    let o = stack.submit();
    assert!(o.status.success(), "{:?}", text(&o));
    let r = simlab_hil::json(&o);
    assert_eq!(
        (r["accepted"].as_u64(), r["rejected"].as_u64()),
        (Some(2), Some(0))
    );
    let cdrs = stack.cdrs();
    assert_eq!(cdrs.len(), 2);
    assert!(
        cdrs.iter()
            .all(|c| c["imsi"] == "001010000000042" && c["seller_id"] == SELLER)
    );
    assert_eq!(
        cdrs.iter()
            .map(|c| c["amount"].as_u64().unwrap())
            .sum::<u64>(),
        1850
    );
    // The seller's own endpoint runs the same billing (what --submit-every does).
    phone.bought(&stack.seller_url, "coffee");
    // Only the operator's staff or the seller itself may run it, or read the books.
    let (st, v) = post(&stack.seller_url, "/v1/billing/submit", &json!({}));
    assert_eq!(
        (st, v["error"].as_str()),
        (403, Some("client_certificate_required")),
        "{v}"
    );
    let (st, v) = http("GET", &stack.seller_url, "/v1/sales", None);
    assert_eq!(
        (st, v["error"].as_str()),
        (403, Some("client_certificate_required")),
        "{v}"
    );
    let other = client_tls(&stack.seller_url, Role::Seller, "cafe-2");
    let (st, v) = http_as(&other, "GET", &stack.seller_url, "/v1/sales", None);
    assert_eq!(
        (st, v["error"].as_str()),
        (403, Some("wrong_seller")),
        "{v}"
    );
    let operator = client_tls(&stack.seller_url, Role::Operator, "alice");
    let (st, v) = http_as(
        &operator,
        "POST",
        &stack.seller_url,
        "/v1/billing/submit",
        Some("{}"),
    );
    assert_eq!((st, v["accepted"].as_u64()), (200, Some(1)), "{v}");
    // Nothing is left to bill, and the seller's log says billed.
    let again = simlab_hil::json(&stack.submit());
    assert_eq!(again["submitted"], 0);
    let sales = stack.sales();
    assert!(
        sales
            .as_array()
            .unwrap()
            .iter()
            .all(|s| s["state"] == "billed"),
        "{sales}"
    );

    // The USIM path (K from CK‖IK) issues a certificate openssl verifies too.
    let u = phone.enrolled(&stack.gw_url, &["--path", "usim"]);
    assert_eq!(u["path"], "usim");
    let ucert = stack.dir.join("usim.pem");
    std::fs::write(&ucert, u["certificate_pem"].as_str().unwrap()).unwrap();
    assert!(openssl(&["verify", "-CAfile", s(&stack.ca_pem()), s(&ucert)]).0);
}

#[test]
fn a_usim_ahead_of_the_auc_resynchronises() {
    let stack = Stack::start("pki-resync", None, &[]);
    let ahead = stack.dir.join("ahead.toml");
    let text_ = std::fs::read_to_string(simlab_hil::workspace_root().join(PHONE)).unwrap();
    std::fs::write(
        &ahead,
        text_
            .lines()
            .map(|l| {
                if l.starts_with("sqn") {
                    "sqn = \"000000100000\""
                } else {
                    l
                }
            })
            .collect::<Vec<_>>()
            .join("\n"),
    )
    .unwrap();
    let o = simlab(&[
        "--emulate",
        s(&ahead),
        "ms",
        "enroll",
        "--gateway",
        &stack.gw_url,
        "--ca",
        s(&stack.ca_pem()),
        "--pin",
        TOKEN_PIN,
        "--sim-pin",
        SIM_PIN,
        "--path",
        "usim",
        "--json",
    ]);
    assert!(o.status.success(), "{:?}", text(&o));
    assert_eq!(simlab_hil::json(&o)["resynchronised"], true);
}

#[test]
fn a_forged_gateway_is_refused_at_m1_and_the_card_releases_nothing() {
    let stack = Stack::start("pki-m1", None, &[]);
    // An impersonator without the AuC: real-looking RANDs, an M1 it cannot compute.
    let forged = FakeServer::start(Box::new(|_, path, body| {
        assert!(
            path.ends_with("/begin"),
            "the phone went on after a wrong M1: {path}"
        );
        let req: Value = serde_json::from_str(body).unwrap();
        let answer = json!({
            "sid": req["sid"], "path": "gsm",
            "rands": ["00112233445566778899aabbccddeeff", "0102030405060708090a0b0c0d0e0f10", "ffeeddccbbaa99887766554433221100"],
            "m1": "5a".repeat(32),
            "expires_at": 4_000_000_000u64,
        });
        (200, answer.to_string())
    }));
    let phone = stack.phone("phone");
    let o = phone.enroll(&forged.url, &[]);
    let (_, err) = text(&o);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("M1 is wrong"), "{err}");
    assert_eq!(phone.certificate_len(), 0);
    // The genuine gateway, same phone: fine.
    phone.enrolled(&stack.gw_url, &[]);
    assert!(phone.certificate_len() > 0);
}

#[test]
fn a_forged_m3_and_a_foreign_certificate_are_refused_and_nothing_is_stored() {
    let stack = Stack::start("pki-m3", None, &[]);
    let phone = stack.phone("phone");
    let relay = FakeServer::relay(stack.gw_url.clone(), "/finish", |v| {
        let m3 = v["m3"].as_str().unwrap();
        let flipped = if &m3[..1] == "0" { "1" } else { "0" };
        v["m3"] = Value::String(format!("{flipped}{}", &m3[1..]));
    });
    let o = phone.enroll(&relay.url, &[]);
    let (_, err) = text(&o);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("M3 is wrong"), "{err}");
    assert_eq!(
        phone.certificate_len(),
        0,
        "a certificate with a wrong M3 was stored"
    );

    // A relay that swaps in a certificate the gateway CA did not issue (with the right M3 it
    // cannot have): the phone refuses it before the card is even asked.
    if require("openssl") {
        let key = stack.dir.join("other.key");
        let pem = stack.dir.join("other.pem");
        let (ok, out) = openssl(&[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            s(&key),
            "-out",
            s(&pem),
            "-subj",
            "/O=simlab/CN=alice",
            "-days",
            "1",
        ]);
        assert!(ok, "{out}");
        let (_, der) = openssl(&[
            "x509",
            "-in",
            s(&pem),
            "-outform",
            "DER",
            "-out",
            s(&stack.dir.join("other.der")),
        ]);
        let _ = der;
        let other = hex(&std::fs::read(stack.dir.join("other.der")).unwrap());
        std::fs::write(stack.dir.join("other.hex"), &other).unwrap();
        let swap = FakeServer::start(Box::new({
            let target = stack.gw_url.clone();
            move |method, path, body| {
                let (status, mut v) = http(method, &target, path, Some(body));
                if status == 200 && path.ends_with("/finish") {
                    v["certificate"] = Value::String(other.clone());
                }
                (status, v.to_string())
            }
        }));
        let o = phone.enroll(&swap.url, &[]);
        let (_, err) = text(&o);
        assert_eq!(o.status.code(), Some(1), "{err}");
        assert!(err.contains("bad certificate"), "{err}");
        assert_eq!(phone.certificate_len(), 0);
    }
}

/// A P-256 public key (uncompressed point, hex) that is not the token's.
fn some_public_key(dir: &Path) -> String {
    let key = dir.join("p.key");
    assert!(
        openssl(&[
            "ecparam",
            "-name",
            "prime256v1",
            "-genkey",
            "-noout",
            "-out",
            s(&key)
        ])
        .0
    );
    let der = dir.join("p.der");
    assert!(
        openssl(&[
            "ec",
            "-in",
            s(&key),
            "-pubout",
            "-outform",
            "DER",
            "-out",
            s(&der)
        ])
        .0
    );
    let spki = std::fs::read(der).unwrap();
    hex(&spki[spki.len() - 65..])
}

fn restrictions() -> Value {
    json!({"per_purchase_limit": 5000, "currency": "EUR", "max_purchases": 10, "period_seconds": 86400, "validity_seconds": 604800})
}

#[test]
fn a_wrong_m2_is_refused_and_ends_the_session() {
    if !require("openssl") {
        return;
    }
    let stack = Stack::start("pki-m2", None, &[]);
    let sid = "5e55105e55105e55105e55105e551001";
    let (status, m240) = post(
        &stack.gw_url,
        "/v1/bootstrap/begin",
        &json!({ "sid": sid, "imsi": "001010000000042" }),
    );
    assert_eq!(status, 200, "{m240}");
    assert_eq!(m240["rands"].as_array().unwrap().len(), 3);
    let finish = json!({
        "sid": sid,
        "responses": "00112233445566778899aabb",
        "public_key": some_public_key(&stack.dir),
        "restrictions": restrictions(),
        "alias": "mallory",
        "m2": "42".repeat(32),
    });
    let (status, v) = post(&stack.gw_url, "/v1/bootstrap/finish", &finish);
    assert_eq!(
        (status, v["error"].as_str()),
        (403, Some("m2_mismatch")),
        "{v}"
    );
    // One 250 per session: no second guess.
    let (status, v) = post(&stack.gw_url, "/v1/bootstrap/finish", &finish);
    assert_eq!(
        (status, v["error"].as_str()),
        (409, Some("session_closed")),
        "{v}"
    );
    // The SID cannot be reused either.
    let (status, v) = post(
        &stack.gw_url,
        "/v1/bootstrap/begin",
        &json!({ "sid": sid, "imsi": "001010000000042" }),
    );
    assert_eq!(
        (status, v["error"].as_str()),
        (409, Some("replayed_sid")),
        "{v}"
    );
}

#[test]
fn the_gateway_answers_bad_input_with_the_right_status() {
    let stack = Stack::start("pki-bad-input", None, &[]);
    let g = &stack.gw_url;
    let begin = "/v1/bootstrap/begin";
    let cases: Vec<(Option<&str>, u16, &str)> = vec![
        (Some("{not json"), 400, "malformed_json"),
        (Some(""), 400, "malformed_json"),
        (
            Some(r#"{"sid":"00","imsi":"001010000000042"}"#),
            400,
            "bad_field",
        ),
        (
            Some(r#"{"sid":"000102030405060708090a0b0c0d0e0f","imsi":"12ab"}"#),
            400,
            "bad_field",
        ),
        (
            Some(r#"{"sid":"000102030405060708090a0b0c0d0e0f","imsi":"001010000000042","x":1}"#),
            400,
            "malformed_json",
        ),
    ];
    for (body, status, code) in cases {
        let (st, v) = http("POST", g, begin, body);
        assert_eq!(
            (st, v["error"].as_str()),
            (status, Some(code)),
            "{body:?}: {v}"
        );
    }
    // An IMSI the AuC does not know looks like one it knows: no enumeration of subscribers.
    let known = json!({ "sid": "cc0102030405060708090a0b0c0d0e0f", "imsi": "001010000000042" });
    let unknown = json!({ "sid": "dd0102030405060708090a0b0c0d0e0f", "imsi": "001019999999999" });
    let (st_known, a) = post(g, begin, &known);
    let (st_unknown, b) = post(g, begin, &unknown);
    assert_eq!((st_known, st_unknown), (200, 200), "{a} {b}");
    let keys = |v: &Value| {
        let mut k: Vec<String> = v.as_object().unwrap().keys().cloned().collect();
        k.sort();
        k
    };
    assert_eq!(keys(&a), keys(&b));
    assert_eq!(
        a["rands"].as_array().unwrap().len(),
        b["rands"].as_array().unwrap().len()
    );
    // Replayed SID.
    let body = json!({ "sid": "aa0102030405060708090a0b0c0d0e0f", "imsi": "001010000000042" });
    assert_eq!(post(g, begin, &body).0, 200);
    let (st, v) = post(g, begin, &body);
    assert_eq!((st, v["error"].as_str()), (409, Some("replayed_sid")));
    // 250 for a session that never was; wrong lengths.
    let (st, v) = post(
        g,
        "/v1/bootstrap/finish",
        &json!({"sid": "bb0102030405060708090a0b0c0d0e0f", "responses": "00112233", "public_key": "04".to_string() + &"11".repeat(64), "restrictions": restrictions(), "m2": "00".repeat(32)}),
    );
    assert_eq!(st, 400, "not a point on the curve: {v}");
    let (st, v) = post(
        g,
        "/v1/bootstrap/finish",
        &json!({"sid": "bb0102030405060708090a0b0c0d0e0f", "responses": "00112233", "public_key": "04", "restrictions": restrictions(), "m2": "00".repeat(32)}),
    );
    assert_eq!((st, v["error"].as_str()), (400, Some("bad_field")), "{v}");
    // Billing: no client certificate, another seller's, an unregistered seller, an empty
    // batch, unknown endpoint, wrong method, too large.
    let batch = json!({"seller_id": SELLER, "batch_id": "b", "records": [record("t", "01", 1, b"x", "30")]});
    let (st, v) = post(g, "/v1/billing/batches", &batch);
    assert_eq!(
        (st, v["error"].as_str()),
        (403, Some("client_certificate_required")),
        "{v}"
    );
    let (st, v) = post_as_seller(g, "cafe-2", "/v1/billing/batches", &batch);
    assert_eq!(
        (st, v["error"].as_str()),
        (403, Some("wrong_seller")),
        "{v}"
    );
    let (st, v) = post_as_seller(
        g,
        "nobody",
        "/v1/billing/batches",
        &json!({"seller_id": "nobody", "batch_id": "b", "records": [record("t", "01", 1, b"x", "30")]}),
    );
    assert_eq!(
        (st, v["error"].as_str()),
        (403, Some("unknown_seller")),
        "{v}"
    );
    // A seller's certificate with a body that is no 910, and an operator's certificate.
    let seller = client_tls(g, Role::Seller, SELLER);
    let (st, v) = http_as(&seller, "POST", g, "/v1/billing/batches", Some("{not json"));
    assert_eq!(
        (st, v["error"].as_str()),
        (400, Some("malformed_json")),
        "{v}"
    );
    let operator = client_tls(g, Role::Operator, "alice");
    let (st, v) = http_as(
        &operator,
        "POST",
        g,
        "/v1/billing/batches",
        Some(&batch.to_string()),
    );
    assert_eq!((st, v["error"].as_str()), (403, Some("wrong_role")), "{v}");
    let (st, _) = stack.bill("b", vec![]);
    assert_eq!(st, 400);
    assert_eq!(http("GET", g, "/v1/nothing", None).0, 404);
    assert_eq!(http("GET", g, "/v1/bootstrap/begin", None).0, 405);
    // Validity check of an unknown certificate, as a seller (anyone else gets 403).
    assert_eq!(get_as_seller(g, "/v1/certificates/0102").0, 404);
    assert_eq!(get_as_seller(g, "/v1/certificates/zz").0, 400);
    assert_eq!(http("GET", g, "/v1/certificates/0102", None).0, 403);
    // After all that, the gateway still answers, and billed nothing.
    assert_eq!(http("GET", g, "/v1/health", None).0, 200);
    assert!(stack.cdrs().is_empty());
}

#[test]
fn the_seller_refuses_foreign_revoked_and_over_limit_certificates() {
    let stack = Stack::start("pki-seller-cert", None, &[]);
    let phone = stack.phone("phone");
    let e = phone.enrolled(&stack.gw_url, &["--limit", "2000"]);
    let serial = e["serial"].as_str().unwrap().to_string();

    // Garbage and a certificate from another CA (same names, its own key).
    let (st, v) = post(
        &stack.seller_url,
        "/v1/purchases",
        &json!({"certificate": "3003020101", "item": "coffee"}),
    );
    assert_eq!(
        (st, v["error"].as_str()),
        (403, Some("certificate_rejected")),
        "{v}"
    );
    // The real certificate with its notBefore's 13 UTCTime bytes replaced by "2\u{e9}010100000Z"
    // (13 bytes of UTF-8, no valid time): refused as a bad certificate, not a 500.
    let pem = stack.dir.join("mine.pem");
    let der = stack.dir.join("mine.der");
    std::fs::write(&pem, e["certificate_pem"].as_str().unwrap()).unwrap();
    let (ok, out) = openssl(&["x509", "-in", s(&pem), "-outform", "DER", "-out", s(&der)]);
    assert!(ok, "{out}");
    let mut bad = std::fs::read(&der).unwrap();
    let at = bad
        .windows(2)
        .position(|w| w == [0x17, 0x0d])
        .expect("a UTCTime in the certificate");
    bad[at + 2..at + 15].copy_from_slice("2\u{e9}010100000Z".as_bytes());
    let (st, v) = post(
        &stack.seller_url,
        "/v1/purchases",
        &json!({"certificate": hex(&bad), "item": "coffee"}),
    );
    assert_eq!(
        (st, v["error"].as_str()),
        (403, Some("certificate_rejected")),
        "{v}"
    );
    assert_eq!(http("GET", &stack.seller_url, "/v1/catalogue", None).0, 200);
    if require("openssl") {
        let key = stack.dir.join("k.pem");
        let pem = stack.dir.join("foreign.pem");
        let der = stack.dir.join("foreign.der");
        assert!(
            openssl(&[
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
                "-nodes",
                "-keyout",
                s(&key),
                "-out",
                s(&pem),
                "-subj",
                "/O=simlab/CN=simlab gateway CA",
                "-days",
                "2",
            ])
            .0
        );
        assert!(openssl(&["x509", "-in", s(&pem), "-outform", "DER", "-out", s(&der)]).0);
        let (st, v) = post(
            &stack.seller_url,
            "/v1/purchases",
            &json!({"certificate": hex(&std::fs::read(&der).unwrap()), "item": "coffee"}),
        );
        assert_eq!(
            (st, v["error"].as_str()),
            (403, Some("certificate_rejected")),
            "{v}"
        );
        // openssl agrees that it is not the gateway's.
        assert!(!openssl(&["verify", "-CAfile", s(&stack.ca_pem()), s(&pem)]).0);
    }

    // Over the per-purchase limit: refused before any invoice (exit 1, nothing signed).
    let o = phone.buy(&stack.seller_url, "ticket", &[]);
    let (_, err) = text(&o);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("restriction_broken"), "{err}");

    // Revoked: the online check refuses it.
    let o = simlab(&[
        "gateway",
        "revoke",
        "--db",
        &stack.gateway_db,
        "--serial",
        &serial,
        "--json",
    ]);
    assert!(o.status.success(), "{:?}", text(&o));
    let (st, v) = get_as_seller(&stack.gw_url, &format!("/v1/certificates/{serial}"));
    assert_eq!((st, v["status"].as_str()), (200, Some("revoked")), "{v}");
    let o = phone.buy(&stack.seller_url, "coffee", &[]);
    let (_, err) = text(&o);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("certificate_revoked"), "{err}");
    let sales = stack.sales();
    assert!(
        sales.as_array().unwrap().is_empty(),
        "nothing may be invoiced: {sales}"
    );
}

#[test]
fn the_seller_refuses_a_signature_over_another_amount_and_the_buyer_refuses_a_dear_invoice() {
    let stack = Stack::start("pki-seller-sig", None, &[]);
    let phone = stack.phone("phone");
    let e = phone.enrolled(&stack.gw_url, &[]);
    let cert_der = {
        let pem = e["certificate_pem"].as_str().unwrap();
        let b64: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
        let p = stack.dir.join("c.pem");
        std::fs::write(&p, pem).unwrap();
        let d = stack.dir.join("c.der");
        assert!(
            openssl(&["x509", "-in", s(&p), "-outform", "DER", "-out", s(&d)]).0 || b64.is_empty()
        );
        std::fs::read(d).unwrap()
    };
    // 610 → 620.
    let (st, offer) = post(
        &stack.seller_url,
        "/v1/purchases",
        &json!({"certificate": hex(&cert_der), "item": "flowers"}),
    );
    assert_eq!(st, 200, "{offer}");
    let txn = offer["transaction_id"].as_str().unwrap().to_string();
    let bytes = unhex(offer["invoice"].as_str().unwrap());
    // The buyer signs an invoice with another amount: the seller checks against its own.
    let cheaper = invoice(
        &txn,
        &unhex(offer["serial"].as_str().unwrap()),
        150,
        offer["issued_at"].as_u64().unwrap(),
        "flowers",
    );
    assert_ne!(cheaper, bytes);
    let bad = phone.sign(&cheaper);
    let pay = format!("/v1/purchases/{txn}/payment");
    let (st, v) = post(&stack.seller_url, &pay, &json!({"signature": bad}));
    assert_eq!(
        (st, v["error"].as_str()),
        (422, Some("bad_signature")),
        "{v}"
    );
    // The exact bytes, signed: delivered, once.
    let good = phone.sign(&bytes);
    let (st, v) = post(&stack.seller_url, &pay, &json!({"signature": good}));
    assert_eq!(st, 200, "{v}");
    assert!(v["delivery"].as_str().unwrap().contains("flowers"));
    let (st, v) = post(&stack.seller_url, &pay, &json!({"signature": good}));
    assert_eq!(
        (st, v["error"].as_str()),
        (409, Some("already_paid")),
        "{v}"
    );
    // The invoice encoding the test wrote by hand is simlab's, byte for byte.
    assert_eq!(
        invoice(
            &txn,
            &unhex(offer["serial"].as_str().unwrap()),
            1500,
            offer["issued_at"].as_u64().unwrap(),
            "flowers"
        ),
        bytes
    );

    // The buyer's own check (operation 740): more than it agreed to pay, nothing is signed.
    let o = phone.buy(&stack.seller_url, "flowers", &["--max-amount", "1000"]);
    let (_, err) = text(&o);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("nothing signed"), "{err}");
    let sales = stack.sales();
    let offered: Vec<_> = sales
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["state"] == "offered")
        .collect();
    assert_eq!(offered.len(), 1, "the dear invoice stays unpaid: {sales}");
}

#[test]
fn offers_are_not_purchases_the_seller_counts_again_at_payment() {
    if !require("openssl") {
        return;
    }
    let stack = Stack::start("pki-seller-count", None, &[]);
    let phone = stack.phone("phone");
    let e = phone.enrolled(&stack.gw_url, &["--max-purchases", "1"]);
    let p = stack.dir.join("c.pem");
    let d = stack.dir.join("c.der");
    std::fs::write(&p, e["certificate_pem"].as_str().unwrap()).unwrap();
    assert!(openssl(&["x509", "-in", s(&p), "-outform", "DER", "-out", s(&d)]).0);
    let cert = hex(&std::fs::read(&d).unwrap());
    // Two invoices while nothing is paid yet: both offered.
    let offers: Vec<Value> = (0..2)
        .map(|_| {
            let (st, v) = post(
                &stack.seller_url,
                "/v1/purchases",
                &json!({"certificate": cert, "item": "coffee"}),
            );
            assert_eq!(st, 200, "{v}");
            v
        })
        .collect();
    let pay = |offer: &Value| {
        let sig = phone.sign(&unhex(offer["invoice"].as_str().unwrap()));
        let path = format!(
            "/v1/purchases/{}/payment",
            offer["transaction_id"].as_str().unwrap()
        );
        post(&stack.seller_url, &path, &json!({ "signature": sig }))
    };
    assert_eq!(pay(&offers[0]).0, 200);
    let (st, v) = pay(&offers[1]);
    assert_eq!(
        (st, v["error"].as_str()),
        (422, Some("restriction_broken")),
        "{v}"
    );
    // And no third invoice either.
    let (st, v) = post(
        &stack.seller_url,
        "/v1/purchases",
        &json!({"certificate": cert, "item": "coffee"}),
    );
    assert_eq!(
        (st, v["error"].as_str()),
        (422, Some("restriction_broken")),
        "{v}"
    );
}

#[test]
fn the_gateway_rejects_each_bad_record_for_its_reason_and_bills_the_rest_once() {
    let stack = Stack::start("pki-billing", None, &[]);
    let phone = stack.phone("phone");
    let e = phone.enrolled(&stack.gw_url, &["--limit", "2000", "--max-purchases", "3"]);
    let serial_hex = e["serial"].as_str().unwrap().to_string();
    let serial = unhex(&serial_hex);
    let t = now();

    // Invoices signed by the token, made up by the test (the seller is bypassed: the gateway
    // must stand on its own).
    let signed = |txn: &str, amount: u64, issued_at: u64| {
        let inv = invoice(txn, &serial, amount, issued_at, "coffee");
        let sig = phone.sign(&inv);
        (inv, sig)
    };
    let (i1, s1) = signed("t-1", 350, t);
    let (i2, s2) = signed("t-2", 400, t);
    let (i3, s3) = signed("t-3", 2500, t); // over the 20.00 limit
    let (i4, s4) = signed("t-4", 450, t);
    let (i5, s5) = signed("t-5", 500, t); // the 4th purchase in a period of 3
    let mut bad_sig = unhex(&s2);
    let last = bad_sig.len() - 1;
    bad_sig[last] ^= 1;
    let unknown_serial = [0x7e; 16];
    let i6 = invoice("t-6", &unknown_serial, 100, t, "coffee");
    let s6 = phone.sign(&i6);
    let (i7, s7) = signed("t-7", 100, e["not_after"].as_u64().unwrap() + 10); // after validity

    let (st, a) = stack.bill(
        "batch-1",
        vec![
            record("t-1", &serial_hex, 350, &i1, &s1),
            record("t-1", &serial_hex, 350, &i1, &s1), // duplicate within the batch
            record("t-2", &serial_hex, 400, &i2, &hex(&bad_sig)),
            record("t-2", &serial_hex, 4000, &i2, &s2), // the amount differs from the signed one
            record("t-3", &serial_hex, 2500, &i3, &s3),
            record("t-6", &hex(&unknown_serial), 100, &i6, &s6),
            record("t-7", &serial_hex, 100, &i7, &s7),
            record("t-2", &serial_hex, 400, &i2, &s2),
            record("t-4", &serial_hex, 450, &i4, &s4),
            record("t-5", &serial_hex, 500, &i5, &s5),
            json!({"transaction_id": "t-8", "serial": serial_hex, "amount": 1, "currency": "EUR", "invoice": "zz", "signature": "00"}),
        ],
    );
    assert_eq!(st, 200, "{a}");
    assert_eq!(
        reasons(&a),
        [
            "billed",
            "already_billed",
            "bad_signature",
            "invoice_mismatch",
            "restriction_broken",
            "no_certificate_record",
            "restriction_broken",
            "billed",
            "billed",
            "restriction_broken",
            "malformed_record",
        ],
        "{a:#}"
    );
    assert_eq!(
        (a["accepted"].as_u64(), a["rejected"].as_u64()),
        (Some(3), Some(8))
    );
    assert_eq!(rejection(&a, 1).unwrap()["same_invoice"], true);
    assert!(
        rejection(&a, 4).unwrap()["detail"]
            .as_str()
            .unwrap()
            .contains("per-purchase limit")
    );
    assert!(
        rejection(&a, 9).unwrap()["detail"]
            .as_str()
            .unwrap()
            .contains("3 purchases per period")
    );

    // Submitted again in another batch: all already billed, saying when and where.
    let (_, b) = stack.bill(
        "batch-2",
        vec![
            record("t-1", &serial_hex, 350, &i1, &s1),
            record("t-4", &serial_hex, 450, &i4, &s4),
        ],
    );
    assert_eq!(reasons(&b), ["already_billed", "already_billed"]);
    assert_eq!(rejection(&b, 0).unwrap()["billed_in_batch"], "batch-1");
    assert_eq!(rejection(&b, 0).unwrap()["same_invoice"], true);
    // Another invoice reusing a billed transaction id: rejected as well, flagged as different.
    let (i1b, s1b) = signed("t-1", 100, t);
    let (_, c) = stack.bill("batch-3", vec![record("t-1", &serial_hex, 100, &i1b, &s1b)]);
    assert_eq!(reasons(&c), ["already_billed"]);
    assert_eq!(rejection(&c, 0).unwrap()["same_invoice"], false);

    // Revocation: an invoice issued after it is not billed.
    assert!(
        simlab(&[
            "gateway",
            "revoke",
            "--db",
            &stack.gateway_db,
            "--serial",
            &serial_hex
        ])
        .status
        .success()
    );
    let (i9, s9) = signed("t-9", 100, now() + 1);
    let (_, d) = stack.bill("batch-4", vec![record("t-9", &serial_hex, 100, &i9, &s9)]);
    assert_eq!(reasons(&d), ["certificate_revoked"]);

    let cdrs = stack.cdrs();
    let mut ids: Vec<&str> = cdrs
        .iter()
        .map(|c| c["transaction_id"].as_str().unwrap())
        .collect();
    ids.sort_unstable();
    assert_eq!(ids, ["t-1", "t-2", "t-4"]);
    assert_eq!(
        cdrs.iter()
            .map(|c| c["amount"].as_u64().unwrap())
            .sum::<u64>(),
        1200
    );
}

#[test]
fn rejected_records_land_in_the_sellers_error_log() {
    if !require("python3") {
        return;
    }
    let stack = Stack::start("pki-errorlog", None, &[]);
    let phone = stack.phone("phone");
    phone.enrolled(&stack.gw_url, &[]);
    let coffee = phone.bought(&stack.seller_url, "coffee");
    phone.bought(&stack.seller_url, "flowers");
    // A dishonest (or broken) seller database: the coffee's record now claims three times the
    // signed amount.
    let db = stack.seller_db();
    let script = format!(
        "import sqlite3; c = sqlite3.connect({:?}); c.execute(\"UPDATE sales SET amount = amount * 3 WHERE transaction_id = '{}'\"); c.commit()",
        s(&db),
        coffee["transaction_id"].as_str().unwrap()
    );
    assert!(
        Command::new("python3")
            .args(["-c", &script])
            .status()
            .unwrap()
            .success()
    );
    let o = stack.submit();
    assert_eq!(
        o.status.code(),
        Some(1),
        "a rejection is a failed check: {:?}",
        text(&o)
    );
    let r = simlab_hil::json(&o);
    assert_eq!(
        (r["accepted"].as_u64(), r["rejected"].as_u64()),
        (Some(1), Some(1)),
        "{r}"
    );
    let sales = simlab_hil::json(&simlab(&["seller", "sales", "--db", s(&db), "--json"]));
    for sale in sales.as_array().unwrap() {
        if sale["transaction_id"] == coffee["transaction_id"] {
            assert_eq!(
                (sale["state"].as_str(), sale["reason"].as_str()),
                (Some("rejected"), Some("invoice_mismatch")),
                "{sale}"
            );
            assert!(
                sale["detail"]
                    .as_str()
                    .unwrap()
                    .contains("signed invoice says 3.50 EUR"),
                "{sale}"
            );
        } else {
            assert_eq!(sale["state"], "billed", "{sale}");
        }
    }
    // The error log is not resubmitted by itself.
    assert_eq!(simlab_hil::json(&stack.submit())["submitted"], 0);
    assert_eq!(stack.cdrs().len(), 1);
}

#[test]
fn a_gateway_killed_mid_batch_bills_every_record_exactly_once() {
    let mut stack = Stack::start("pki-kill", None, &["--exit-after-records", "3"]);
    let phone = stack.phone("phone");
    phone.enrolled(&stack.gw_url, &["--max-purchases", "20"]);
    for _ in 0..6 {
        phone.bought(&stack.seller_url, "coffee");
    }
    // The gateway commits three records, then dies before answering.
    let o = stack.submit();
    assert_eq!(o.status.code(), Some(1), "{:?}", text(&o));
    assert!(text(&o).1.contains("will be sent again"), "{:?}", text(&o));
    let status = stack
        .gateway
        .as_mut()
        .unwrap()
        .stop_with(libc::SIGTERM, Duration::from_secs(5))
        .0;
    assert_eq!(
        status.and_then(|s| s.code()),
        Some(86),
        "the gateway should have died of the fault"
    );
    assert_eq!(stack.cdrs().len(), 3);
    // Restarted (no fault), the same records again: three were billed before, three now.
    stack.gateway = None;
    stack.start_gateway(&[]);
    let o = stack.submit();
    assert!(o.status.success(), "{:?}", text(&o));
    let r = simlab_hil::json(&o);
    assert_eq!(
        (
            r["submitted"].as_u64(),
            r["accepted"].as_u64(),
            r["billed_before"].as_u64(),
            r["rejected"].as_u64()
        ),
        (Some(6), Some(3), Some(3), Some(0)),
        "{r:#}"
    );
    let before: Vec<_> = r["results"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|x| x["reason"] == "already_billed")
        .collect();
    assert!(before.iter().all(|x| x["same_invoice"] == true));
    let cdrs = stack.cdrs();
    let mut ids: Vec<&str> = cdrs
        .iter()
        .map(|c| c["transaction_id"].as_str().unwrap())
        .collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!((cdrs.len(), ids.len()), (6, 6));
    assert_eq!(simlab_hil::json(&stack.submit())["submitted"], 0);
}

#[test]
fn a_gateway_killed_with_sigkill_at_any_moment_bills_nothing_twice() {
    let mut stack = Stack::start("pki-sigkill", None, &[]);
    let phone = stack.phone("phone");
    phone.enrolled(&stack.gw_url, &["--max-purchases", "100"]);
    const N: usize = 30;
    for _ in 0..N {
        phone.bought(&stack.seller_url, "coffee");
    }
    // Batches of 5, and the kill comes once the first is committed: somewhere in the middle
    // of the run, possibly inside a batch. Whatever the moment, the invariants below hold.
    let mut submit = Process::spawn(
        "seller submit",
        Command::new(simlab_bin())
            .args([
                "seller",
                "submit",
                "--db",
                s(&stack.seller_db()),
                "--gateway",
                &stack.gw_url,
                "--seller-id",
                SELLER,
                "--tls",
                s(&stack.seller_tls()),
                "--batch-size",
                "5",
                "--json",
            ])
            .current_dir(simlab_hil::workspace_root())
            .stdout(Stdio::piped())
            .stderr(Stdio::null()),
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    while stack.cdrs().is_empty() {
        assert!(Instant::now() < deadline, "nothing was billed");
        std::thread::sleep(Duration::from_millis(5));
    }
    stack.gateway.as_ref().unwrap().signal(libc::SIGKILL);
    let first_ok = submit
        .stop_with(libc::SIGTERM, Duration::from_secs(10))
        .0
        .is_some_and(|s| s.success());
    let committed = stack.cdrs().len();
    let settled = stack
        .sales()
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["state"] == "billed")
        .count();
    eprintln!(
        "SIGKILL: the first run {}; {settled} answered as billed, {committed} committed, of {N}",
        if first_ok { "finished" } else { "was cut off" }
    );
    assert!(settled <= committed && committed <= N);
    stack.gateway = None;
    stack.start_gateway(&[]);
    let o = stack.submit();
    assert!(o.status.success(), "{:?}", text(&o));
    let r = simlab_hil::json(&o);
    let n = |k: &str| r[k].as_u64().unwrap() as usize;
    // Everything the seller did not hear about is answered now: billed now, or billed before
    // (what the killed gateway had committed) — never twice, never lost.
    assert_eq!(n("submitted"), N - settled, "{r:#}");
    assert_eq!(n("billed_before"), committed - settled, "{r:#}");
    assert_eq!(n("accepted"), N - committed, "{r:#}");
    assert_eq!(n("rejected"), 0, "{r:#}");
    let cdrs = stack.cdrs();
    let mut ids: Vec<&str> = cdrs
        .iter()
        .map(|c| c["transaction_id"].as_str().unwrap())
        .collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!((cdrs.len(), ids.len()), (N, N));
    assert!(
        stack
            .sales()
            .as_array()
            .unwrap()
            .iter()
            .all(|s| s["state"] == "billed")
    );
}

/// The gateway's SQLite file read by another SQLite client while the gateway writes: the
/// `sqlite3` shell opening, reading and closing it in a loop (as a backup or a monitoring
/// script would) while two billing clients keep two pooled connections busy. A process that
/// opens and closes a second descriptor on the file drops its POSIX locks, and the shell then
/// checkpoints and deletes the WAL the gateway still appends to: records answered `billed`
/// vanished and a certificate issued meanwhile was gone after a restart. Nothing may be lost.
#[test]
fn another_sqlite_client_reading_the_live_database_loses_nothing() {
    if !require("sqlite3") {
        return;
    }
    let mut stack = Stack::start("pki-sqlite3", None, &[]);
    let phone = stack.phone("phone");
    let e = phone.enrolled(
        &stack.gw_url,
        &["--limit", "2000", "--max-purchases", "1000"],
    );
    let serial_hex = e["serial"].as_str().unwrap().to_string();
    let serial = unhex(&serial_hex);
    let t = now();
    const N: usize = 60;
    let records: Vec<(String, Value)> = (0..N)
        .map(|i| {
            let txn = format!("r-{i}");
            let inv = invoice(&txn, &serial, 100, t, "coffee");
            let sig = phone.sign(&inv);
            let r = record(&txn, &serial_hex, 100, &inv, &sig);
            (txn, r)
        })
        .collect();

    let db = stack.gateway_db.clone();
    let stop = Arc::new(AtomicBool::new(false));
    let reader = {
        let stop = stop.clone();
        let db = db.clone();
        std::thread::spawn(move || {
            let mut reads = 0u32;
            while !stop.load(Ordering::SeqCst) {
                let o = Command::new("sqlite3")
                    .args([
                        &db,
                        "SELECT count(*) FROM cdrs; SELECT count(*) FROM certificates;",
                    ])
                    .output()
                    .expect("run sqlite3");
                if o.status.success() {
                    reads += 1;
                }
            }
            reads
        })
    };

    // Two clients at once, one record per batch: two pooled connections open and busy, and
    // the pool grows while the shell reads.
    let answered: Vec<(String, u16, String)> = std::thread::scope(|scope| {
        let workers: Vec<_> = records
            .chunks(N / 2)
            .map(|half| {
                let stack = &stack;
                scope.spawn(move || {
                    half.iter()
                        .map(|(txn, r)| {
                            let (status, a) = stack.bill(&format!("b-{txn}"), vec![r.clone()]);
                            let outcome = if status == 200 {
                                reasons(&a)[0].clone()
                            } else {
                                String::new()
                            };
                            (txn.clone(), status, outcome)
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|w| w.join().unwrap())
            .collect()
    });
    // The pool really grew: the gateway holds more than one connection to the file.
    let db_path = std::fs::canonicalize(&db).unwrap();
    let gateway_pid = stack.gateway.as_ref().unwrap().pid();
    let connections = std::fs::read_dir(format!("/proc/{gateway_pid}/fd"))
        .unwrap()
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .filter(|target| *target == db_path)
        .count();
    assert!(
        connections >= 2,
        "the gateway had {connections} connection(s) to its database, not two busy ones"
    );
    // A certificate issued while the shell still reads.
    let phone2 = stack.phone("phone2");
    let e2 = phone2.enrolled(&stack.gw_url, &["--limit", "2000"]);
    let serial2 = e2["serial"].as_str().unwrap().to_string();
    stop.store(true, Ordering::SeqCst);
    let reads = reader.join().unwrap();
    assert!(reads > 0, "the sqlite3 shell never read the database");

    let billed: Vec<&str> = answered
        .iter()
        .filter(|(_, status, outcome)| *status == 200 && outcome == "billed")
        .map(|(txn, ..)| txn.as_str())
        .collect();
    let failed: Vec<_> = answered
        .iter()
        .filter(|(_, status, outcome)| *status != 200 || outcome != "billed")
        .collect();
    assert!(
        failed.is_empty(),
        "not billed while sqlite3 read ({reads} reads): {failed:?}"
    );

    // Restarted, the gateway has everything it acknowledged.
    stack.gateway = None;
    stack.start_gateway(&[]);
    let cdrs = stack.cdrs();
    let stored: std::collections::BTreeSet<&str> = cdrs
        .iter()
        .map(|c| c["transaction_id"].as_str().unwrap())
        .collect();
    let lost: Vec<&&str> = billed.iter().filter(|t| !stored.contains(**t)).collect();
    assert!(lost.is_empty(), "answered billed, then lost: {lost:?}");
    assert_eq!(cdrs.len(), N);
    let (status, cert) = get_as_seller(&stack.gw_url, &format!("/v1/certificates/{serial2}"));
    assert_eq!(
        status, 200,
        "the certificate issued during the reads is gone: {cert}"
    );
    // And an independent reader agrees.
    let o = Command::new("sqlite3")
        .args([
            &db,
            &format!("SELECT count(*) FROM certificates WHERE serial = X'{serial2}';"),
        ])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&o.stdout).trim(), "1");
}

// ----- PostgreSQL ------------------------------------------------------------------------------

/// A gateway database as simlab created it in PostgreSQL before schema versions
/// (fixtures/db/gateway-v0-postgres.sql) is migrated and keeps its rows; one from a newer
/// simlab is refused with exit 2 and left alone.
#[test]
fn a_postgresql_gateway_database_is_migrated_and_a_newer_one_refused() {
    let Some(pg) = Postgres::start_on("pki-pg-migrate", "5434") else {
        return;
    };
    let v0 = std::fs::read_to_string(
        simlab_hil::workspace_root().join("fixtures/db/gateway-v0-postgres.sql"),
    )
    .unwrap();
    pg.psql(&v0);
    let o = simlab(&[
        "gateway",
        "add-seller",
        "--db",
        &pg.url,
        "--seller-id",
        "shop-2",
    ]);
    assert!(o.status.success(), "{:?}", text(&o));
    assert_eq!(pg.psql("SELECT version FROM simlab_gateway_schema"), "1");
    assert_eq!(
        pg.psql("SELECT string_agg(seller_id, ',' ORDER BY seller_id) FROM sellers"),
        "shop-1,shop-2"
    );
    // The old row is the gateway's as much as the new one.
    let o = simlab(&[
        "gateway",
        "add-seller",
        "--db",
        &pg.url,
        "--seller-id",
        "shop-1",
    ]);
    assert!(
        !o.status.success() && text(&o).1.contains("shop-1 is registered already"),
        "{:?}",
        text(&o)
    );

    pg.psql("UPDATE simlab_gateway_schema SET version = 2");
    let o = simlab(&["gateway", "cdrs", "--db", &pg.url]);
    let (_, err) = text(&o);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(
        err.contains("schema version 2 is newer than this simlab knows (1)"),
        "{err}"
    );
    assert_eq!(pg.psql("SELECT version FROM simlab_gateway_schema"), "2");
}

/// On PostgreSQL as on SQLite, billing runs in a `Transaction` that rolls back on drop: an
/// error or a panic after a CDR was inserted leaves nothing, and the connection bills again.
#[test]
fn a_failed_billing_transaction_on_postgresql_leaves_nothing() {
    use simlab_services::pki::gateway::store::{Cdr, Store, StoreError, postgres::PgStore};
    let Some(pg) = Postgres::start_on("pki-pg-rollback", "5435") else {
        return;
    };
    let mut store = PgStore::connect(&pg.url).unwrap();
    let cdr = |txn: &str| Cdr {
        seller_id: SELLER.into(),
        transaction_id: txn.into(),
        serial: vec![1, 2, 3, 4],
        imsi: "001010123456789".into(),
        amount: 350,
        currency: "EUR".into(),
        issued_at: 1_700_000_000,
        period: 0,
        invoice: vec![0xAA; 40],
        invoice_sha256: [0xBB; 32],
        signature: vec![0xCC; 64],
        batch_id: "b-1".into(),
        billed_at: 1_700_000_100,
    };
    let e = store
        .billing(&mut |tx| {
            assert!(tx.insert_cdr(&cdr("t-1"))?);
            Err(StoreError::Corrupt(
                "a check failed after the insert".into(),
            ))
        })
        .unwrap_err();
    assert_eq!(
        e,
        StoreError::Corrupt("a check failed after the insert".into())
    );
    let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let _ = store.billing(&mut |tx| {
            tx.insert_cdr(&cdr("t-2"))?;
            panic!("a billing bug");
        });
    }));
    assert!(caught.is_err());
    assert_eq!(pg.psql("SELECT count(*) FROM cdrs"), "0");
    assert_eq!(pg.psql("SELECT count(*) FROM purchase_counts"), "0");
    store
        .billing(&mut |tx| {
            assert!(tx.insert_cdr(&cdr("t-3"))?);
            Ok(())
        })
        .unwrap();
    assert_eq!(
        pg.psql("SELECT string_agg(transaction_id, ',') FROM cdrs"),
        "t-3"
    );
    assert_eq!(pg.psql("SELECT purchases FROM purchase_counts"), "1");
}

#[test]
fn the_gateway_on_postgresql_bills_once_even_with_two_gateway_processes() {
    let Some(pg) = Postgres::start("pki-pg") else {
        return;
    };
    let mut stack = Stack::start("pki-pg-stack", Some(&pg.url), &[]);
    let phone = stack.phone("phone");
    let e = phone.enrolled(&stack.gw_url, &["--max-purchases", "50", "--limit", "5000"]);
    let serial_hex = e["serial"].as_str().unwrap().to_string();
    // The same story as on SQLite: buy, bill, refuse the double submission.
    phone.bought(&stack.seller_url, "coffee");
    let r = simlab_hil::json(&stack.submit());
    assert_eq!(r["accepted"], 1, "{r}");
    let sale = stack.sales()[0].clone();
    let again = record(
        sale["transaction_id"].as_str().unwrap(),
        &serial_hex,
        350,
        &unhex(sale["invoice"].as_str().unwrap()),
        sale["signature"].as_str().unwrap(),
    );
    let (_, a) = stack.bill("dup", vec![again]);
    assert_eq!(reasons(&a), ["already_billed"]);

    // A second gateway process on the same database and CA directory; both get the same
    // batch at the same time. Every record is billed by exactly one of them.
    let first_url = stack.gw_url.clone();
    let first = stack.gateway.take();
    stack.start_gateway(&[]);
    let second_url = stack.gw_url.clone();
    let serial = unhex(&serial_hex);
    let t = now();
    let records: Vec<Value> = (0..20)
        .map(|i| {
            let txn = format!("pg-{i}");
            let inv = invoice(&txn, &serial, 100 + i, t, "coffee");
            let sig = phone.sign(&inv);
            record(&txn, &serial_hex, 100 + i, &inv, &sig)
        })
        .collect();
    let batch = json!({ "seller_id": SELLER, "batch_id": "race", "records": records });
    let answers: Vec<Value> = std::thread::scope(|scope| {
        let a = scope.spawn(|| post_as_seller(&first_url, SELLER, "/v1/billing/batches", &batch).1);
        let b =
            scope.spawn(|| post_as_seller(&second_url, SELLER, "/v1/billing/batches", &batch).1);
        vec![a.join().unwrap(), b.join().unwrap()]
    });
    let accepted: u64 = answers
        .iter()
        .map(|a| a["accepted"].as_u64().unwrap())
        .sum();
    assert_eq!(accepted, 20, "{answers:#?}");
    for i in 0..20 {
        let verdicts: Vec<String> = answers.iter().map(|a| reasons(a)[i].clone()).collect();
        assert!(
            verdicts == ["billed", "already_billed"] || verdicts == ["already_billed", "billed"],
            "record {i}: {verdicts:?}"
        );
    }
    assert_eq!(stack.cdrs().len(), 21);
    // Both processes share the CA: a certificate from the second verifies with the first's.
    let e2 = phone.enrolled(&second_url, &[]);
    assert_eq!(e2["gateway_certificate_pem"], e["gateway_certificate_pem"]);

    // The killed-mid-batch story on PostgreSQL.
    stack.gateway = None;
    stack.start_gateway(&["--exit-after-records", "2"]);
    for _ in 0..4 {
        phone.bought(&stack.seller_url, "coffee");
    }
    let o = simlab(&[
        "seller",
        "submit",
        "--db",
        s(&stack.seller_db()),
        "--gateway",
        &stack.gw_url,
        "--seller-id",
        SELLER,
        "--tls",
        s(&stack.seller_tls()),
        "--json",
    ]);
    assert_eq!(o.status.code(), Some(1), "{:?}", text(&o));
    stack.gateway = None;
    stack.start_gateway(&[]);
    let r = simlab_hil::json(&stack.submit());
    assert_eq!(
        (r["accepted"].as_u64(), r["billed_before"].as_u64()),
        (Some(2), Some(2)),
        "{r:#}"
    );
    assert_eq!(stack.cdrs().len(), 25);
    // The seller checked validity with the first gateway all along.
    drop(first);
}

// ----- TLS: who may connect, and how the stack behaves under abuse -------------------------------

/// A seller's TLS client certificate for `cafe-1` made with the `openssl` binary (`openssl
/// ca`), signed by the stack's CA key, valid only in 2020 (`expired`) or from now on for a day:
/// the same recipe both times, so that the dates alone decide.
fn openssl_identity(stack: &Stack, expired: bool) -> PathBuf {
    let dir = stack.dir.join(if expired {
        "expired-tls"
    } else {
        "openssl-tls"
    });
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("index.txt"), "").unwrap();
    std::fs::write(dir.join("serial"), "7a01\n").unwrap();
    std::fs::write(
        dir.join("ca.cnf"),
        "[ca]\ndefault_ca = x\n[x]\ndatabase = index.txt\nnew_certs_dir = .\nserial = serial\n\
         default_md = sha256\npolicy = p\nx509_extensions = ext\nunique_subject = no\n\
         [p]\norganizationName = optional\norganizationalUnitName = optional\ncommonName = supplied\n\
         [ext]\nbasicConstraints = critical,CA:FALSE\nkeyUsage = critical,digitalSignature\n\
         extendedKeyUsage = clientAuth\n",
    )
    .unwrap();
    let run = |args: &[&str]| {
        let o = Command::new("openssl")
            .args(args)
            .current_dir(&dir)
            .output()
            .expect("run openssl");
        assert!(
            o.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
    };
    run(&[
        "req",
        "-new",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
        "-keyout",
        "key.pem",
        "-out",
        "req.csr",
        "-subj",
        "/O=simlab/OU=seller/CN=cafe-1",
    ]);
    let ca_cert = stack.ca_pem();
    let ca_key = stack.dir.join("ca").join("ca-key.pem");
    let sign: &[&str] = &[
        "ca",
        "-batch",
        "-config",
        "ca.cnf",
        "-cert",
        s(&ca_cert),
        "-keyfile",
        s(&ca_key),
        "-in",
        "req.csr",
        "-out",
        "cert.pem",
        "-notext",
    ];
    let dates: &[&str] = if expired {
        &[
            "-startdate",
            "20200101000000Z",
            "-enddate",
            "20200102000000Z",
        ]
    } else {
        &["-days", "1"]
    };
    run(&[sign, dates].concat());
    std::fs::copy(&ca_cert, dir.join("ca.pem")).unwrap();
    dir
}

#[test]
fn client_certificates_from_another_ca_expired_or_revoked_are_refused() {
    assert!(require("openssl"), "openssl is needed");
    let stack = Stack::start("pki-tls-refused", None, &[]);
    let g = &stack.gw_url;
    let batch = json!({"seller_id": SELLER, "batch_id": "x", "records": [record("t", "01", 1, b"x", "30")]});
    // The seller's own certificate is let in (the record itself is refused: no such serial).
    let own = ClientTls::mutual(&stack.seller_tls()).unwrap();
    let (st, v) = http_as(
        &own,
        "POST",
        g,
        "/v1/billing/batches",
        Some(&batch.to_string()),
    );
    assert_eq!((st, v["rejected"].as_u64()), (200, Some(1)), "{v}");
    let refused = |tls: &ClientTls, what: &str| {
        let base = Url::parse(g).unwrap().with_tls(tls);
        match client::request(
            &base,
            "POST",
            "/v1/billing/batches",
            Some(batch.to_string().as_bytes()),
        ) {
            // No HTTP answer at all: the server's alert (TLS 1.3 reports it on the first read
            // after the handshake), or the connection it closed while the body was written.
            Err(e @ (client::ClientError::Tls { .. } | client::ClientError::Io { .. })) => {
                eprintln!("{what}: refused: {e}");
            }
            other => panic!("{what}: {other:?}"),
        }
    };
    // Another CA's seller certificate with the right name.
    let other = stack.dir.join("other-ca");
    let o = simlab(&[
        "gateway",
        "issue",
        "--ca-dir",
        s(&other),
        "--role",
        "seller",
        "--name",
        SELLER,
        "--out",
        s(&stack.dir.join("other-tls")),
    ]);
    assert!(o.status.success(), "{:?}", text(&o));
    let mut foreign = ClientTls::mutual(&stack.dir.join("other-tls")).unwrap();
    foreign.anchors = own.anchors.clone();
    refused(&foreign, "a certificate from another CA");
    // Signed by the right CA with openssl: let in while valid, refused at the handshake once
    // expired (the same recipe, other dates).
    let mut fresh = ClientTls::mutual(&openssl_identity(&stack, false)).unwrap();
    fresh.anchors = own.anchors.clone();
    let (st, v) = http_as(
        &fresh,
        "POST",
        g,
        "/v1/billing/batches",
        Some(&batch.to_string()),
    );
    assert_eq!(
        (st, v["rejected"].as_u64()),
        (200, Some(1)),
        "openssl's certificate: {v}"
    );
    let mut expired = ClientTls::mutual(&openssl_identity(&stack, true)).unwrap();
    expired.anchors = own.anchors.clone();
    refused(&expired, "an expired certificate");
    // A sale waits to be billed when the seller's certificate is revoked.
    let phone = stack.phone("phone");
    phone.enrolled(g, &[]);
    phone.bought(&stack.seller_url, "coffee");
    // Revoked through the CA's register: refused from the next request on.
    let serial = {
        let register = std::fs::read_to_string(stack.dir.join("ca/tls-issued.tsv")).unwrap();
        register
            .lines()
            .find(|l| l.split('\t').nth(2) == Some(SELLER))
            .unwrap()
            .split('\t')
            .next()
            .unwrap()
            .to_string()
    };
    let o = simlab(&[
        "gateway",
        "revoke",
        "--ca-dir",
        s(&stack.dir.join("ca")),
        "--serial",
        &serial,
        "--reason",
        "key lost",
    ]);
    assert!(o.status.success(), "{:?}", text(&o));
    let (st, v) = http_as(
        &own,
        "POST",
        g,
        "/v1/billing/batches",
        Some(&batch.to_string()),
    );
    assert_eq!(
        (st, v["error"].as_str()),
        (403, Some("certificate_revoked")),
        "{v}"
    );
    // `seller submit` with it says so, and bills nothing.
    let o = stack.submit();
    assert_ne!(o.status.code(), Some(0), "{:?}", text(&o));
    assert!(text(&o).1.contains("certificate_revoked"), "{:?}", text(&o));
    assert!(stack.cdrs().is_empty());
}

#[test]
fn openssl_and_curl_are_independent_clients_of_the_gateway() {
    assert!(
        require("openssl") && require("curl"),
        "openssl and curl are needed"
    );
    let stack = Stack::start("pki-tls-peers", None, &[]);
    let g = stack.gw_url.trim_start_matches("https://").to_string();
    // openssl s_client verifies the gateway's self-issued certificate against the pinned CA.
    let mut s_client = Command::new("openssl")
        .args([
            "s_client",
            "-connect",
            &g,
            "-CAfile",
            s(&stack.ca_pem()),
            "-verify_return_error",
        ])
        .args(["-verify_ip", "127.0.0.1", "-brief"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(s_client.stdin.take());
    let out = s_client.wait_with_output().unwrap();
    let said =
        String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout);
    assert!(said.contains("Verification: OK"), "{said}");
    // curl with an operator certificate: register a seller, list CDRs, revoke; without one: 403.
    let o = simlab(&[
        "gateway",
        "issue",
        "--ca-dir",
        s(&stack.dir.join("ca")),
        "--role",
        "operator",
        "--name",
        "alice",
        "--out",
        s(&stack.dir.join("op-tls")),
    ]);
    assert!(o.status.success(), "{:?}", text(&o));
    let op = stack.dir.join("op-tls");
    let curl = |args: &[&str]| -> (String, Value) {
        let o = Command::new("curl")
            .args(["-s", "-w", "\n%{http_code}", "--cacert", s(&stack.ca_pem())])
            .args(args)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&o.stdout).into_owned();
        let (body, code) = text.rsplit_once('\n').unwrap();
        (
            code.to_string(),
            serde_json::from_str(body).unwrap_or(Value::Null),
        )
    };
    let (op_cert, op_key) = (op.join("cert.pem"), op.join("key.pem"));
    let cert = ["--cert", s(&op_cert), "--key", s(&op_key)];
    let url = |p: &str| format!("{}{p}", stack.gw_url);
    let (code, v) = curl(
        &[
            &cert[..],
            &[
                "-d",
                r#"{"seller_id":"kiosk-2","name":"Kiosk"}"#,
                &url("/v1/sellers"),
            ],
        ]
        .concat(),
    );
    assert_eq!(
        (code.as_str(), v["seller_id"].as_str()),
        ("201", Some("kiosk-2")),
        "{v}"
    );
    let (code, v) = curl(&["-d", r#"{"seller_id":"kiosk-3"}"#, &url("/v1/sellers")]);
    assert_eq!(
        (code.as_str(), v["error"].as_str()),
        ("403", Some("client_certificate_required"))
    );
    let phone = stack.phone("phone");
    phone.enrolled(&stack.gw_url, &[]);
    phone.bought(&stack.seller_url, "coffee");
    assert!(stack.submit().status.success());
    let (code, v) = curl(&[&cert[..], &[&url("/v1/cdrs?seller_id=cafe-1")]].concat());
    assert_eq!(
        (code.as_str(), v.as_array().map(Vec::len)),
        ("200", Some(1)),
        "{v}"
    );
    let serial = v[0]["serial"].as_str().unwrap().to_string();
    let body = json!({ "serial": serial, "reason": "stolen" }).to_string();
    let (code, v) = curl(&[&cert[..], &["-d", &body, &url("/v1/revocations")]].concat());
    assert_eq!(
        (code.as_str(), v["revoked"].as_bool()),
        ("200", Some(true)),
        "{v}"
    );
    let (st, v) = get_as_seller(&stack.gw_url, &format!("/v1/certificates/{serial}"));
    assert_eq!((st, v["status"].as_str()), (200, Some("revoked")), "{v}");
}

/// A raw TLS pipe through `openssl s_client -quiet`, a client we did not write: what the
/// test writes goes to the server as it is written, what the server sends is collected.
struct RawTls {
    child: std::process::Child,
    stdin: Option<std::process::ChildStdin>,
    out: Option<std::thread::JoinHandle<Vec<u8>>>,
}

impl RawTls {
    /// Connects to `addr` (`HOST:PORT`) trusting `ca`, presenting the identity in `id` if any.
    fn open(addr: &str, ca: &Path, id: Option<&Path>) -> RawTls {
        let mut cmd = Command::new("openssl");
        cmd.args(["s_client", "-quiet", "-connect", addr, "-CAfile", s(ca)])
            .args(["-verify_return_error"]);
        if let Some(id) = id {
            cmd.args([
                "-cert",
                s(&id.join("cert.pem")),
                "-key",
                s(&id.join("key.pem")),
            ]);
        }
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("run openssl s_client");
        let mut stdout = child.stdout.take().unwrap();
        let out = std::thread::spawn(move || {
            let mut all = Vec::new();
            let _ = stdout.read_to_end(&mut all);
            all
        });
        RawTls {
            stdin: child.stdin.take(),
            child,
            out: Some(out),
        }
    }

    /// Writes `bytes`; false once the other side is gone.
    fn send(&mut self, bytes: &[u8]) -> bool {
        let Some(stdin) = self.stdin.as_mut() else {
            return false;
        };
        stdin.write_all(bytes).and_then(|()| stdin.flush()).is_ok()
    }

    /// Closes the sending side and returns what the server sent before it closed the
    /// connection (s_client is killed after `timeout`).
    fn answer(mut self, timeout: Duration) -> String {
        drop(self.stdin.take());
        let deadline = Instant::now() + timeout;
        while self.child.try_wait().ok().flatten().is_none() {
            if Instant::now() > deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let out = self.out.take().unwrap().join().unwrap();
        String::from_utf8_lossy(&out).into_owned()
    }
}

impl Drop for RawTls {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The first TLS record a real client (openssl) sends: its ClientHello, caught by a listener
/// of the test's own.
fn a_client_hello() -> Vec<u8> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let mut client = Command::new("openssl")
        .args(["s_client", "-connect", &addr])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("run openssl s_client");
    let (mut c, _) = listener.accept().unwrap();
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut hello = vec![0u8; 5];
    c.read_exact(&mut hello).unwrap();
    assert_eq!(hello[0], 0x16, "a handshake record");
    let len = u16::from_be_bytes([hello[3], hello[4]]) as usize;
    hello.resize(5 + len, 0);
    c.read_exact(&mut hello[5..]).unwrap();
    assert_eq!(hello[5], 0x01, "a ClientHello");
    let _ = client.kill();
    let _ = client.wait();
    hello
}

#[test]
fn the_auc_answers_a_gateway_certificate_only() {
    let stack = Stack::start("pki-auc-tls", None, &[]);
    // The AuC answers gateways only: Kc, CK and IK go to nobody else.
    let ask = json!({"imsi": "001010000000042", "path": "gsm", "count": 3}).to_string();
    let a = &stack.auc_url;
    for (who, tls) in [
        ("no certificate", phone_tls(a)),
        ("a seller", client_tls(a, Role::Seller, SELLER)),
        ("an operator", client_tls(a, Role::Operator, "alice")),
    ] {
        let (st, v) = http_as(&tls, "POST", a, "/v1/auth-info", Some(&ask));
        assert_eq!(
            (st, v["error"].as_str()),
            (403, Some("gateway_certificate_required")),
            "{who}: {v}"
        );
        assert!(!v.to_string().contains("kc"), "{who}: {v}");
    }
    let gateway = client_tls(a, Role::Gateway, "gateway");
    let (st, v) = http_as(&gateway, "POST", a, "/v1/auth-info", Some(&ask));
    assert_eq!(
        (st, v["triplets"].as_array().map(Vec::len)),
        (200, Some(3)),
        "{v}"
    );
    // The AuC's own answers to a gateway.
    let (st, v) = http_as(
        &gateway,
        "POST",
        a,
        "/v1/auth-info",
        Some(&json!({"imsi": "001010000000042", "path": "gsm", "count": 9}).to_string()),
    );
    assert_eq!((st, v["error"].as_str()), (400, Some("bad_field")), "{v}");
}

/// Garbage and weight thrown at the gateway and the seller: each is refused with a 4xx (or the
/// connection is closed), never a 5xx; after each the server still answers a plain request
/// at once, and nothing is billed.
#[test]
fn bad_input_and_load_leave_the_servers_serving_and_bill_nothing() {
    assert!(require("openssl"), "openssl is needed");
    let stack = Stack::start("pki-load", None, &[]);
    let g = &stack.gw_url;
    let addr = g.trim_start_matches("https://").to_string();
    let seller_id = stack.seller_tls();
    let serving = |after: &str| {
        let started = Instant::now();
        let (st, v) = http("GET", g, "/v1/health", None);
        assert_eq!(st, 200, "after {after}: {v}");
        let (st, v) = http("GET", &stack.seller_url, "/v1/catalogue", None);
        assert_eq!(st, 200, "the seller, after {after}: {v}");
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "after {after} the servers took {:?} to answer",
            started.elapsed()
        );
        assert!(
            stack.cdrs().is_empty(),
            "after {after} something was billed"
        );
    };
    serving("nothing");

    // Malformed JSON, from the seller itself: a 400.
    let seller = ClientTls::mutual(&seller_id).unwrap();
    let (st, v) = http_as(
        &seller,
        "POST",
        g,
        "/v1/billing/batches",
        Some("{\"seller_id\": [}"),
    );
    assert_eq!(
        (st, v["error"].as_str()),
        (400, Some("malformed_json")),
        "{v}"
    );
    serving("malformed JSON");

    // A body over the limit: a few times the limit is read and dropped, so that the client
    // reads the 413; 50 MB is not read at all (a 413, or the connection closed under the
    // client's feet: both are refusals).
    let big = format!("{{\"x\": \"{}\"}}", "a".repeat(2 << 20));
    let (st, v) = http_as(&seller, "POST", g, "/v1/billing/batches", Some(&big));
    assert_eq!(
        (st, v["error"].as_str()),
        (413, Some("body_too_large")),
        "{v}"
    );
    serving("a 2 MB body");
    let huge = vec![b'a'; 50 << 20];
    let base = Url::parse(g).unwrap().with_tls(&seller);
    match client::request(&base, "POST", "/v1/billing/batches", Some(&huge)) {
        Ok(a) => assert_eq!(a.status, 413, "{}", String::from_utf8_lossy(&a.body)),
        Err(e) => eprintln!("50 MB body: connection closed ({e})"),
    }
    serving("a 50 MB body");
    // Only the head, announcing 50 MB: answered 413 from the Content-Length, unread.
    let mut raw = RawTls::open(&addr, &stack.ca_pem(), Some(&seller_id));
    raw.send(
        format!(
            "POST /v1/billing/batches HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            50 << 20
        )
        .as_bytes(),
    );
    let answer = raw.answer(Duration::from_secs(20));
    assert!(
        answer.starts_with("HTTP/1.1 413") && answer.contains("body_too_large"),
        "{answer:?}"
    );
    serving("a 50 MB Content-Length");

    // A 1 MB header: 431, or the connection closed.
    let mut raw = RawTls::open(&addr, &stack.ca_pem(), None);
    let head = format!(
        "GET /v1/health HTTP/1.1\r\nHost: {addr}\r\nX-Big: {}\r\nConnection: close\r\n\r\n",
        "h".repeat(1 << 20)
    );
    raw.send(head.as_bytes());
    let answer = raw.answer(Duration::from_secs(20));
    assert!(
        answer.is_empty() || answer.starts_with("HTTP/1.1 431"),
        "a 1 MB header: {}",
        &answer[..answer.len().min(300)]
    );
    assert!(!answer.contains("\"role\""), "a 1 MB header was served");
    serving("a 1 MB header");
    // The same pipe with a small header is served: the refusal was the header's size.
    let mut raw = RawTls::open(&addr, &stack.ca_pem(), None);
    raw.send(
        format!(
            "GET /v1/health HTTP/1.1\r\nHost: {addr}\r\nX-Small: h\r\nConnection: close\r\n\r\n"
        )
        .as_bytes(),
    );
    let answer = raw.answer(Duration::from_secs(20));
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer:?}");

    // Half of a real ClientHello, then gone; and another half held open meanwhile.
    let hello = a_client_hello();
    let mut stalled = TcpStream::connect(&addr).unwrap();
    stalled.write_all(&hello[..hello.len() / 2]).unwrap();
    let mut gone = TcpStream::connect(&addr).unwrap();
    gone.write_all(&hello[..hello.len() / 2]).unwrap();
    drop(gone);
    serving("half a ClientHello (one closed, one stalled)");
    drop(stalled);
    // A ClientHello cut in its record header.
    let mut cut = TcpStream::connect(&addr).unwrap();
    cut.write_all(&hello[..3]).unwrap();
    drop(cut);
    serving("three bytes of a ClientHello");

    // The seller: a buyer certificate whose validity has a UTCTime that is no time (month 13,
    // and letters), and one whose UTCTime is a GeneralizedTime's tag: 4xx, not 500.
    let phone = stack.phone("phone");
    let e = phone.enrolled(g, &[]);
    let pem = stack.dir.join("mine.pem");
    let der = stack.dir.join("mine.der");
    std::fs::write(&pem, e["certificate_pem"].as_str().unwrap()).unwrap();
    let (ok, out) = openssl(&["x509", "-in", s(&pem), "-outform", "DER", "-out", s(&der)]);
    assert!(ok, "{out}");
    let good = std::fs::read(&der).unwrap();
    let at = good
        .windows(2)
        .position(|w| w == [0x17, 0x0d])
        .expect("a UTCTime in the certificate");
    for (what, tag, time) in [
        ("month 13", 0x17, &b"261399000000Z"[..]),
        ("letters", 0x17, &b"ZZZZZZZZZZZZZ"[..]),
        ("no Z", 0x17, &b"2612010000000"[..]),
        ("GeneralizedTime tag", 0x18, &good[at + 2..at + 15]),
    ] {
        let mut bad = good.clone();
        bad[at] = tag;
        bad[at + 2..at + 15].copy_from_slice(time);
        let (st, v) = post(
            &stack.seller_url,
            "/v1/purchases",
            &json!({"certificate": hex(&bad), "item": "coffee"}),
        );
        assert!((400..500).contains(&st), "{what}: {st} {v}");
        serving(what);
    }
    let sales = stack.sales();
    assert!(sales.as_array().unwrap().is_empty(), "invoiced: {sales}");

    // Load: 8 clients at once, 10 requests each, while a 50 MB upload runs: every one answered.
    std::thread::scope(|scope| {
        scope.spawn(|| {
            let _ = client::request(&base, "POST", "/v1/billing/batches", Some(&huge));
        });
        let workers: Vec<_> = (0..8)
            .map(|i| {
                scope.spawn(move || {
                    (0..10)
                        .map(|j| {
                            let sid = format!("{:02x}{:02x}{}", i, j, "0".repeat(28));
                            post(
                                g,
                                "/v1/bootstrap/begin",
                                &json!({ "sid": sid, "imsi": "001010000000042" }),
                            )
                            .0
                        })
                        .collect::<Vec<u16>>()
                })
            })
            .collect();
        for w in workers {
            let statuses = w.join().unwrap();
            assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
        }
    });
    serving("the load");
    // The one real purchase bills, once, after all of that.
    phone.bought(&stack.seller_url, "coffee");
    let r = simlab_hil::json(&stack.submit());
    assert_eq!(r["accepted"], 1, "{r}");
    assert_eq!(stack.cdrs().len(), 1);
}

/// SIGTERM while a 910 is half sent: the gateway stops accepting, lets the batch finish (its
/// answer arrives, its records are billed), then exits 0; restarted, it bills nothing twice.
#[test]
fn sigterm_lets_the_batch_in_flight_finish_then_the_gateway_exits_0() {
    assert!(require("openssl"), "openssl is needed");
    let mut stack = Stack::start("pki-tls-sigterm", None, &[]);
    let phone = stack.phone("phone");
    phone.enrolled(&stack.gw_url, &["--max-purchases", "20"]);
    for _ in 0..3 {
        phone.bought(&stack.seller_url, "coffee");
    }
    let sales = stack.sales();
    let records: Vec<Value> = sales
        .as_array()
        .unwrap()
        .iter()
        .map(|x| {
            record(
                x["transaction_id"].as_str().unwrap(),
                x["serial"].as_str().unwrap(),
                x["amount"].as_u64().unwrap(),
                &unhex(x["invoice"].as_str().unwrap()),
                x["signature"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(records.len(), 3, "{sales}");
    let body =
        json!({ "seller_id": SELLER, "batch_id": "in-flight", "records": records }).to_string();
    let (first, rest) = body.split_at(body.len() / 2);
    let addr = stack.gw_url.trim_start_matches("https://").to_string();
    let mut pipe = RawTls::open(&addr, &stack.ca_pem(), Some(&stack.seller_tls()));
    assert!(pipe.send(
        format!(
            "POST /v1/billing/batches HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{first}",
            body.len()
        )
        .as_bytes(),
    ));
    std::thread::sleep(Duration::from_millis(500));
    let gateway = stack.gateway.as_mut().unwrap();
    gateway.signal(libc::SIGTERM);
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        gateway.try_wait().is_none(),
        "the gateway quit with a batch in flight"
    );
    // No new connection is taken any more.
    assert!(
        TcpStream::connect(&addr).is_err(),
        "the gateway still accepts after SIGTERM"
    );
    assert!(
        pipe.send(rest.as_bytes()),
        "the connection in flight was closed"
    );
    let answer = pipe.answer(Duration::from_secs(20));
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let a: Value = serde_json::from_str(&answer[answer.find("\r\n\r\n").unwrap() + 4..]).unwrap();
    assert_eq!(
        (a["accepted"].as_u64(), a["rejected"].as_u64()),
        (Some(3), Some(0)),
        "{a}"
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = stack.gateway.as_mut().unwrap().try_wait() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "the gateway did not stop after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(status.code(), Some(0), "a graceful stop exits 0");
    assert_eq!(stack.cdrs().len(), 3);
    // The seller never heard the answer: restarted, the gateway says billed before, and bills
    // nothing again.
    stack.gateway = None;
    stack.start_gateway(&[]);
    let r = simlab_hil::json(&stack.submit());
    assert_eq!(
        (
            r["submitted"].as_u64(),
            r["accepted"].as_u64(),
            r["billed_before"].as_u64()
        ),
        (Some(3), Some(0), Some(3)),
        "{r:#}"
    );
    assert_eq!(stack.cdrs().len(), 3);
}
