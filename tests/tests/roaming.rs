//! Seed 001, roaming m-commerce, as separate processes over mutual TLS: three operators' MeC
//! servers (`simlab mec serve`: Denmark visited, Norway home, Sweden another partner), content
//! providers' shop fronts (`simlab mec cp serve`), a financial institution (`simlab mec fi
//! serve`), and the phone (`simlab roam shop` with an emulated SIM + token, its memory in a
//! state file). openssl verifies the end-to-end CMS. Each server logs to a file of its own,
//! which the tests read as the seed's "request log".
//!
//! The ten acceptance tests of issue 15 are the `t01_…` to `t10_…` functions; the bad-input
//! paths follow.

use serde_json::{Value, json};
use simlab_hil::postgres::Postgres;
use simlab_hil::{Process, require, simlab, simlab_bin, text};
use simlab_services::http::client::{self, Url};
use simlab_services::http::tls::ClientTls;
use simlab_services::pki::gateway::ca::Ca;
use simlab_services::pki::restrictions::Restrictions;
use simlab_services::pki::x509;
use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

const PHONE: &str = "fixtures/cards/demo-usim.toml";
/// The profile's token PIN, changed at set-up to one no log could contain by accident.
const FACTORY_PIN: &str = "0000";
const PIN: &str = "739152";
const MSISDN: &str = "+4791234567";
/// The FI approves up to this amount and declines above.
const FI_LIMIT: u64 = 100_000;

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn ok(o: &Output) {
    assert!(o.status.success(), "{:?}", text(o));
}

/// One operator's world: the roaming CA, the servers, the phone.
struct World {
    dir: PathBuf,
    procs: Vec<Process>,
    dk: String,
    no: String,
    cp_card: String,
    cp_bank: String,
    state: PathBuf,
    /// The hanging partner's socket: it accepts (the kernel does) and never answers.
    _hang: TcpListener,
}

impl Drop for World {
    fn drop(&mut self) {
        while let Some(p) = self.procs.pop() {
            drop(p);
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

struct Options {
    /// DK's partner table also lists a "mec-no" with another certificate than NO's own.
    wrong_no_certificate: bool,
    /// A partner that accepts connections and never answers, asked first for +4791….
    hanging_partner: bool,
    contract_ttl: u64,
    /// The servers' stores in this PostgreSQL (a database each) instead of SQLite files.
    postgres: Option<String>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            wrong_no_certificate: false,
            hanging_partner: false,
            contract_ttl: 300,
            postgres: None,
        }
    }
}

impl World {
    fn start(name: &str, opts: Options) -> World {
        let dir = simlab_hil::temp_path(&format!("roaming-{name}"));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let ca_dir = dir.join("roam-ca");
        let issue = |role: &str, who: &str, out: &str| {
            ok(&simlab(&[
                "gateway",
                "issue",
                "--ca-dir",
                s(&ca_dir),
                "--organization",
                "roaming",
                "--role",
                role,
                "--name",
                who,
                "--out",
                s(&dir.join(out)),
            ]));
        };
        for peer in ["mec-dk", "mec-no", "mec-se"] {
            issue("peer", peer, &format!("{peer}-tls"));
        }
        // Same name, same CA, another key: what DK pins in the wrong-certificate world.
        issue("peer", "mec-no", "mec-no-other-tls");
        issue("peer", "mec-hang", "mec-hang-tls");
        issue("seller", "cp-card", "cp-card-tls");
        issue("seller", "cp-bank", "cp-bank-tls");
        issue("server", "fi", "fi-tls");
        let ca_pem = ca_dir.join("ca.pem");
        let url = |p: u16| format!("https://127.0.0.1:{p}");
        let db = |n: &str| match &opts.postgres {
            Some(server) => format!("{}/mec_{n}", server.trim_end_matches("/postgres")),
            None => s(&dir.join(format!("{n}.sqlite"))).to_string(),
        };
        let partner = |on: &str, name: &str, port: u16, cc: &str, prefixes: &[&str], cert: &str| {
            let mut args = vec![
                "mec".to_string(),
                "partner".into(),
                "add".into(),
                "--db".into(),
                db(on),
                "--ca".into(),
                s(&ca_pem).into(),
                "--name".into(),
                name.into(),
                "--url".into(),
                url(port),
                "--country".into(),
                match cc {
                    "47" => "NO",
                    "46" => "SE",
                    "45" => "DK",
                    _ => "XX",
                }
                .into(),
                "--country-code".into(),
                cc.into(),
                "--certificate".into(),
                s(&dir.join(cert).join("cert.pem")).into(),
            ];
            for p in prefixes {
                args.push("--prefix".into());
                args.push(p.to_string());
            }
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            ok(&simlab(&args));
        };
        let hang = TcpListener::bind("127.0.0.1:0").unwrap();
        let hang_port = hang.local_addr().unwrap().port();
        if opts.hanging_partner {
            partner("dk", "mec-hang", hang_port, "47", &["91"], "mec-hang-tls");
        }
        let no_cert = if opts.wrong_no_certificate {
            "mec-no-other-tls"
        } else {
            "mec-no-tls"
        };
        for (cp, methods) in [("cp-card", "card"), ("cp-bank", "bank")] {
            ok(&simlab(&[
                "mec",
                "cp",
                "add",
                "--db",
                &db("dk"),
                "--id",
                cp,
                "--payment-methods",
                methods,
            ]));
        }

        // The phone: a token key, a PIN of its own, and a certificate from its home
        // operator's (seed 000) CA for that key.
        let state = dir.join("phone.state");
        let phone = |args: &[&str]| {
            let mut all = vec!["--emulate", PHONE];
            all.extend_from_slice(args);
            all.extend_from_slice(&["--state", s(&state)]);
            simlab(&all)
        };
        let keygen = phone(&["token", "keygen", "--pin", FACTORY_PIN, "--json"]);
        ok(&keygen);
        let public_key = unhex(simlab_hil::json(&keygen)["public_key"].as_str().unwrap());
        ok(&phone(&[
            "token",
            "change-pin",
            "--pin",
            FACTORY_PIN,
            "--new-pin",
            PIN,
        ]));
        let operator = Ca::load_or_create(&dir.join("operator-no-ca"), "operator-no").unwrap();
        let cert = operator
            .try_issue(
                &[0x47; 16],
                MSISDN,
                &public_key.try_into().unwrap(),
                simlab_services::pki::now(),
                &Restrictions::default(),
            )
            .unwrap();
        let cert_pem = dir.join("phone-cert.pem");
        std::fs::write(&cert_pem, x509::pem_certificate(&cert)).unwrap();
        ok(&simlab(&[
            "mec",
            "subscriber",
            "add",
            "--db",
            &db("no"),
            "--msisdn",
            MSISDN,
            "--certificate",
            s(&cert_pem),
            "--payment-methods",
            "card,wallet",
        ]));

        let mut w = World {
            dir: dir.clone(),
            procs: Vec::new(),
            dk: String::new(),
            no: String::new(),
            cp_card: String::new(),
            cp_bank: String::new(),
            state,
            _hang: hang,
        };
        let limit = FI_LIMIT.to_string();
        let fi = w.spawn(
            "fi",
            &[
                "mec",
                "fi",
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--tls",
                s(&dir.join("fi-tls")),
                "--limit",
                &limit,
            ],
        );
        let ttl = opts.contract_ttl.to_string();
        // The three servers must know each other's URLs before they start (the partner table
        // is read at start), so their ports are picked first; a parallel test may take one
        // before its server binds it, and then the round starts again with others.
        for round in 1.. {
            let (dk_port, no_port, se_port) = (free_port(), free_port(), free_port());
            partner("dk", "mec-no", no_port, "47", &["9", "4"], no_cert);
            partner("dk", "mec-se", se_port, "46", &[], "mec-se-tls");
            partner("no", "mec-dk", dk_port, "45", &[], "mec-dk-tls");
            partner("se", "mec-dk", dk_port, "45", &[], "mec-dk-tls");
            let before = w.procs.len();
            let started = [("no", no_port), ("se", se_port)]
                .into_iter()
                .try_for_each(|(n, port)| {
                    let listen = format!("127.0.0.1:{port}");
                    w.try_spawn(
                        n,
                        &[
                            "mec",
                            "serve",
                            "--name",
                            &format!("mec-{n}"),
                            "--db",
                            &db(n),
                            "--listen",
                            &listen,
                            "--tls",
                            s(&dir.join(format!("mec-{n}-tls"))),
                        ],
                    )
                    .map(drop)
                })
                .and_then(|()| {
                    let listen = format!("127.0.0.1:{dk_port}");
                    w.try_spawn(
                        "dk",
                        &[
                            "mec",
                            "serve",
                            "--name",
                            "mec-dk",
                            "--db",
                            &db("dk"),
                            "--listen",
                            &listen,
                            "--tls",
                            s(&dir.join("mec-dk-tls")),
                            "--fi",
                            &fi,
                            "--partner-timeout-ms",
                            "700",
                            "--contract-ttl",
                            &ttl,
                        ],
                    )
                });
            match started {
                Ok(_) => {
                    w.dk = url(dk_port);
                    w.no = url(no_port);
                    break;
                }
                Err(log) if round < 5 && log.contains("Address already in use") => {
                    w.procs.truncate(before);
                    for (on, name) in [
                        ("dk", "mec-no"),
                        ("dk", "mec-se"),
                        ("no", "mec-dk"),
                        ("se", "mec-dk"),
                    ] {
                        ok(&simlab(&[
                            "mec",
                            "partner",
                            "remove",
                            "--db",
                            &db(on),
                            "--name",
                            name,
                        ]));
                    }
                }
                Err(log) => panic!("the MeC servers did not start:\n{log}"),
            }
        }
        let dk = w.dk.clone();
        w.cp_card = w.spawn(
            "cp-card",
            &[
                "mec",
                "cp",
                "serve",
                "--mec",
                &dk,
                "--listen",
                "127.0.0.1:0",
                "--tls",
                s(&dir.join("cp-card-tls")),
            ],
        );
        w.cp_bank = w.spawn(
            "cp-bank",
            &[
                "mec",
                "cp",
                "serve",
                "--mec",
                &dk,
                "--listen",
                "127.0.0.1:0",
                "--tls",
                s(&dir.join("cp-bank-tls")),
            ],
        );
        w
    }

    /// Starts a server with its log in `<name>.log`; returns the URL its first line names.
    fn spawn(&mut self, name: &str, args: &[&str]) -> String {
        self.try_spawn(name, args)
            .unwrap_or_else(|log| panic!("{name} did not start:\n{log}"))
    }

    /// [`World::spawn`], or the server's log when it did not start.
    fn try_spawn(&mut self, name: &str, args: &[&str]) -> Result<String, String> {
        let log = std::fs::File::create(self.log_path(name)).unwrap();
        let mut cmd = Command::new(simlab_bin());
        cmd.args(args)
            .current_dir(simlab_hil::workspace_root())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log));
        let mut p = Process::spawn(name, &mut cmd);
        let mut line = String::new();
        BufReader::new(p.stdout().expect("piped stdout"))
            .read_line(&mut line)
            .expect("read the listening line");
        let Some(url) = line.split_whitespace().find(|w| w.starts_with("https://")) else {
            drop(p);
            return Err(format!("{line:?}\n{}", self.log(name)));
        };
        let url = url.to_string();
        self.procs.push(p);
        Ok(url)
    }

    fn log_path(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}.log"))
    }

    fn log(&self, name: &str) -> String {
        std::fs::read_to_string(self.log_path(name)).unwrap_or_default()
    }

    fn ca(&self) -> PathBuf {
        self.dir.join("roam-ca").join("ca.pem")
    }

    fn phone(&self, args: &[&str]) -> Output {
        let mut all = vec!["--emulate", PHONE];
        all.extend_from_slice(args);
        all.extend_from_slice(&["--state", s(&self.state)]);
        simlab(&all)
    }

    /// `roam shop` at `cp` for MSISDN with the right PIN unless `extra` names another.
    fn shop(&self, cp: &str, extra: &[&str]) -> Output {
        let ca = self.ca();
        let mut args = vec![
            "roam",
            "shop",
            "--cp",
            cp,
            "--ca",
            s(&ca),
            "--msisdn",
            MSISDN,
        ];
        if !extra.contains(&"--pin") {
            args.extend_from_slice(&["--pin", PIN]);
        }
        args.extend_from_slice(extra);
        self.phone(&args)
    }

    /// The phone's TLS: the roaming CA pinned, no certificate.
    fn phone_url(&self, url: &str) -> Url {
        Url::parse(url)
            .unwrap()
            .with_tls(&ClientTls::pinned(&self.ca()).unwrap())
    }

    /// As a peer, with `identity`'s certificate.
    fn peer_url(&self, url: &str, identity: &str) -> Url {
        Url::parse(url)
            .unwrap()
            .with_tls(&ClientTls::mutual(&self.dir.join(identity)).unwrap())
    }

    /// The CP's front: a checkout that must answer 303; the contract id and its page.
    fn checkout(&self, cp: &str, body: &Value) -> (String, String) {
        let a = client::request(
            &self.phone_url(cp),
            "POST",
            "/checkout",
            Some(body.to_string().as_bytes()),
        )
        .unwrap();
        let v: Value = serde_json::from_slice(&a.body).unwrap();
        assert_eq!(a.status, 303, "{v}");
        (
            v["order_id"].as_str().unwrap().to_string(),
            v["location"].as_str().unwrap().to_string(),
        )
    }
}

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

fn json_of(o: &Output) -> Value {
    simlab_hil::json(o)
}

fn status(e: client::ClientError) -> (u16, String) {
    match e {
        client::ClientError::Status(e) => (e.status, e.code),
        other => panic!("expected an error status, got {other}"),
    }
}

#[test]
fn t01_only_the_partner_whose_prefix_matches_is_asked() {
    let w = World::start("t01", Options::default());
    let o = w.shop(&w.cp_card, &["--request-type", "authentication", "--json"]);
    ok(&o);
    let v = json_of(&o);
    assert_eq!(v["outcome"], "success", "{v}");
    assert_eq!(v["cp"]["status"], "success", "{v}");
    assert_eq!(v["contract"]["home"], "mec-no");
    assert!(w.log("no").contains("roamUserRequest"), "{}", w.log("no"));
    assert!(w.log("no").contains("+4791234567"));
    // SE's log is there and live (it says where it listens), and names no request.
    assert!(w.log("se").contains("listening"), "{}", w.log("se"));
    assert!(!w.log("se").contains("roamUserRequest"), "{}", w.log("se"));
    assert!(!w.log("se").contains("/v1/roam"), "{}", w.log("se"));
}

#[test]
fn t02_every_partner_rejects_home_not_found_and_no_contract_leaves() {
    let w = World::start("t02", Options::default());
    for (msisdn, asked) in [("+4799999999", "no"), ("+46701234567", "se")] {
        let a = client::request(
            &w.phone_url(&w.cp_card),
            "POST",
            "/checkout",
            Some(
                json!({"msisdn": msisdn, "request_type": "authentication", "currency": "DKK"})
                    .to_string()
                    .as_bytes(),
            ),
        )
        .unwrap();
        let v: Value = serde_json::from_slice(&a.body).unwrap();
        assert_eq!(
            (a.status, v["error"].as_str()),
            (404, Some("home_not_found")),
            "{v}"
        );
        assert!(w.log(asked).contains("roamUserRequest"), "{}", w.log(asked));
    }
    for home in ["no", "se"] {
        assert!(
            !w.log(home).contains("contract received"),
            "{}",
            w.log(home)
        );
        assert!(
            !w.log(home).contains("/v1/roam/contracts"),
            "{}",
            w.log(home)
        );
    }
    assert!(w.log("dk").contains("rejected"), "{}", w.log("dk"));
}

#[test]
fn t03_a_response_signed_by_an_unknown_key_is_ignored() {
    let w = World::start(
        "t03",
        Options {
            wrong_no_certificate: true,
            ..Options::default()
        },
    );
    let o = w.shop(&w.cp_card, &["--request-type", "authentication"]);
    assert_eq!(o.status.code(), Some(1), "{:?}", text(&o));
    assert!(text(&o).1.contains("home_not_found"), "{:?}", text(&o));
    // NO did answer, with its own key; DK counted that as a reject.
    assert!(w.log("no").contains("roamUserRequest"), "{}", w.log("no"));
    assert!(w.log("dk").contains("does not verify"), "{}", w.log("dk"));
    assert!(!w.log("no").contains("contract received"));
}

#[test]
fn t04_end_to_end_signature_verified_by_openssl_and_no_secret_in_logs() {
    if !require("openssl") {
        return;
    }
    let w = World::start("t04", Options::default());
    let p7 = w.dir.join("signed.p7");
    let o = w.shop(
        &w.cp_card,
        &[
            "--request-type",
            "e2e_signature",
            "--description",
            "Lease, flat 4B",
            "--currency",
            "DKK",
            "--save-cms",
            s(&p7),
            "--json",
        ],
    );
    ok(&o);
    let v = json_of(&o);
    assert_eq!(v["cp"]["status"], "success", "{v}");
    let content = w.dir.join("content.bin");
    let operator_ca = w.dir.join("operator-no-ca").join("ca.pem");
    let out = Command::new("openssl")
        .args([
            "cms",
            "-verify",
            "-inform",
            "DER",
            "-in",
            s(&p7),
            "-CAfile",
            s(&operator_ca),
            "-purpose",
            "any",
            "-out",
            s(&content),
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        std::fs::read(&content).unwrap(),
        unhex(v["contract_hex"].as_str().unwrap())
    );
    // The CP saw the same CMS through its MeC server.
    assert_eq!(
        v["cp"]["result"]["evidence_hex"].as_str().unwrap(),
        v["home"]["cms_der_hex"].as_str().unwrap()
    );
    for log in ["dk", "cp-card", "no", "se", "fi"] {
        let l = w.log(log);
        assert!(!l.contains(PIN), "{log}'s log holds the PIN");
        assert!(!l.contains("PRIVATE KEY"), "{log}'s log holds a key");
        assert!(!l.to_lowercase().contains("pin\":"), "{log}: {l}");
    }
    let key = std::fs::read_to_string(w.dir.join("mec-dk-tls").join("key.pem")).unwrap();
    let body: String = key.lines().filter(|l| !l.starts_with("-----")).collect();
    for log in ["dk", "cp-card"] {
        assert!(!w.log(log).contains(&body[40..80]), "{log} holds DK's key");
    }
}

#[test]
fn t05_wrong_pin_the_token_answers_63c2_and_the_cp_gets_a_failure() {
    let w = World::start("t05", Options::default());
    let o = w.shop(
        &w.cp_card,
        &[
            "--request-type",
            "authentication",
            "--pin",
            "111111",
            "--json",
        ],
    );
    assert_eq!(o.status.code(), Some(1), "{:?}", text(&o));
    let v = json_of(&o);
    assert_eq!(v["pin_status"], "63C2", "{v}");
    assert_eq!(v["outcome"], "failure", "{v}");
    assert_eq!(v["cp"]["status"], "failure", "{v}");
    assert_eq!(v["cp"]["result"]["reason"], "wrong_pin", "{v}");
}

#[test]
fn t06_a_signature_over_the_amount_plus_one_is_422() {
    let w = World::start("t06", Options::default());
    let o = w.shop(
        &w.cp_card,
        &[
            "--request-type",
            "payment",
            "--amount",
            "12900",
            "--currency",
            "DKK",
            "--sign-amount-plus-one",
        ],
    );
    assert_eq!(o.status.code(), Some(1), "{:?}", text(&o));
    let err = text(&o).1;
    assert!(
        err.contains("422") && err.contains("signature_mismatch"),
        "{err}"
    );
    assert!(!w.log("fi").contains("payment"), "{}", w.log("fi"));
}

#[test]
fn t07_only_common_payment_methods_are_offered() {
    let w = World::start("t07", Options::default());
    let o = w.shop(
        &w.cp_card,
        &[
            "--request-type",
            "payment",
            "--amount",
            "12900",
            "--currency",
            "DKK",
        ],
    );
    ok(&o);
    let err = text(&o).1;
    assert!(err.contains("payment methods offered: card\n"), "{err}");
    let o = w.shop(
        &w.cp_bank,
        &[
            "--request-type",
            "payment",
            "--amount",
            "12900",
            "--currency",
            "DKK",
        ],
    );
    assert_eq!(o.status.code(), Some(1), "{:?}", text(&o));
    assert!(
        text(&o).1.contains("no_common_payment_method"),
        "{:?}",
        text(&o)
    );
}

#[test]
fn t08_the_fi_approves_or_declines_and_steps_21_and_22_agree() {
    let w = World::start("t08", Options::default());
    for (amount, expected, code) in [("12900", "paid", 0), ("150000", "declined", 1)] {
        let o = w.shop(
            &w.cp_card,
            &[
                "--request-type",
                "payment",
                "--amount",
                amount,
                "--currency",
                "DKK",
                "--json",
            ],
        );
        assert_eq!(o.status.code(), Some(code), "{:?}", text(&o));
        let v = json_of(&o);
        let receipt = &v["home"]["visited"];
        assert_eq!(receipt["status"], expected, "{v}");
        assert_eq!(receipt["home_recorded"], expected, "{v}");
        assert_eq!(v["cp"]["status"], expected, "{v}");
        assert_eq!(v["cp"]["result"]["status"], expected, "{v}");
        if expected == "paid" {
            // The paid contract's result replayed: 409 at home, and the FI paid once.
            let id = v["contract_id"].as_str().unwrap();
            let sig = w.phone(&[
                "token",
                "sign",
                "--data",
                v["contract_hex"].as_str().unwrap(),
                "--pin",
                PIN,
                "--json",
            ]);
            ok(&sig);
            let sig = json_of(&sig)["signature_der"].as_str().unwrap().to_string();
            let e = client::post_json::<_, Value>(
                &w.phone_url(&w.no),
                &format!("/v1/contracts/{id}/result"),
                &json!({"msisdn": MSISDN, "signature": sig}),
            )
            .unwrap_err();
            assert_eq!(status(e), (409, "contract_used".into()));
            assert_eq!(
                w.log("fi").matches("approved=true").count(),
                1,
                "{}",
                w.log("fi")
            );
        }
    }
    assert_eq!(
        w.log("fi").matches("approved=false").count(),
        1,
        "{}",
        w.log("fi")
    );
}

#[test]
fn t09_a_replayed_security_result_is_409() {
    let w = World::start("t09", Options::default());
    let o = w.shop(&w.cp_card, &["--request-type", "authentication", "--json"]);
    ok(&o);
    let v = json_of(&o);
    let id = v["contract_id"].as_str().unwrap();
    let sig = w.phone(&[
        "token",
        "sign",
        "--data",
        v["contract_hex"].as_str().unwrap(),
        "--pin",
        PIN,
        "--json",
    ]);
    ok(&sig);
    let sig = json_of(&sig)["signature_der"].as_str().unwrap().to_string();
    let e = client::post_json::<_, Value>(
        &w.phone_url(&w.no),
        &format!("/v1/contracts/{id}/result"),
        &json!({"msisdn": MSISDN, "signature": sig}),
    )
    .unwrap_err();
    assert_eq!(status(e), (409, "contract_used".into()));
}

#[test]
fn t10_delegated_signing_without_user_authentication_is_403() {
    let w = World::start("t10", Options::default());
    // A browser that is not ours (curl) sees the 303 and its Location header.
    if require("curl") {
        let out = Command::new("curl")
            .args([
                "-sS",
                "-i",
                "--cacert",
                s(&w.ca()),
                "-H",
                "content-type: application/json",
                "-d",
                &json!({"msisdn": MSISDN, "request_type": "authentication",
                "currency": "DKK"})
                .to_string(),
                &format!("{}/checkout", w.cp_card),
            ])
            .output()
            .unwrap();
        let head = String::from_utf8_lossy(&out.stdout).to_lowercase();
        assert!(head.starts_with("http/1.1 303"), "{head}");
        let location = format!("location: {}/v1/contracts/", w.no);
        assert!(head.contains(&location), "{head}");
    }
    let (_, location) = w.checkout(
        &w.cp_card,
        &json!({"msisdn": MSISDN, "request_type": "digital_signature", "currency": "DKK",
            "description": "Power of attorney"}),
    );
    let path = location
        .split_once("/v1/")
        .map(|(_, p)| format!("/v1/{p}"))
        .unwrap();
    let e = client::post_json::<_, Value>(
        &w.phone_url(&w.no),
        &format!("{path}/delegated-signature"),
        &json!({"msisdn": MSISDN}),
    )
    .unwrap_err();
    assert_eq!(status(e), (403, "authentication_required".into()));
    // With authentication, the home server signs, and the signature verifies.
    let o = w.shop(
        &w.cp_card,
        &[
            "--request-type",
            "digital_signature",
            "--currency",
            "DKK",
            "--description",
            "Power of attorney",
            "--json",
        ],
    );
    ok(&o);
    let v = json_of(&o);
    let key = unhex(v["home"]["delegated_public_key_hex"].as_str().unwrap());
    let sig = unhex(v["home"]["delegated_signature_hex"].as_str().unwrap());
    let bytes = unhex(v["contract_hex"].as_str().unwrap());
    assert!(simlab_services::pki::verify::p256_sha256(
        &key, &bytes, &sig
    ));
    assert_eq!(
        v["cp"]["result"]["evidence_hex"],
        v["home"]["delegated_signature_hex"]
    );
}

// ---- bad input ----------------------------------------------------------------------------

#[test]
fn bad_roam_messages_foreign_partners_unknown_and_expired_contracts() {
    let w = World::start(
        "bad",
        Options {
            contract_ttl: 2,
            ..Options::default()
        },
    );
    let dk_as_peer = w.peer_url(&w.no, "mec-dk-tls");
    // Malformed JSON, an envelope with no valid hex, a signature by another key.
    let e =
        client::post_json::<_, Value>(&dk_as_peer, "/v1/roam/user", &json!({"x": 1})).unwrap_err();
    assert_eq!(status(e).0, 400);
    let e = client::post_json::<_, Value>(
        &dk_as_peer,
        "/v1/roam/user",
        &json!({"message": {"bytes": "zz", "signature": ""}}),
    )
    .unwrap_err();
    assert_eq!(status(e), (400, "malformed_message".into()));
    let e = client::post_json::<_, Value>(
        &dk_as_peer,
        "/v1/roam/user",
        &json!({"message": {"bytes": "0001", "signature": "3006020101020101"}}),
    )
    .unwrap_err();
    assert_eq!(status(e), (422, "bad_signature".into()));
    // Not a partner of NO (SE is not in NO's table), and the phone with no certificate.
    let e = client::post_json::<_, Value>(
        &w.peer_url(&w.no, "mec-se-tls"),
        "/v1/roam/user",
        &json!({"message": {"bytes": "00", "signature": "00"}}),
    )
    .unwrap_err();
    assert_eq!(status(e), (403, "unknown_partner".into()));
    let e = client::post_json::<_, Value>(&w.phone_url(&w.no), "/v1/roam/user", &json!({}))
        .unwrap_err();
    assert_eq!(status(e), (403, "client_certificate_required".into()));
    // A partner certificate from another CA is refused at `partner add`, nothing stored.
    let other = w.dir.join("other-ca");
    ok(&simlab(&[
        "gateway",
        "issue",
        "--ca-dir",
        s(&other),
        "--role",
        "peer",
        "--name",
        "mec-xx",
        "--out",
        s(&w.dir.join("xx-tls")),
    ]));
    let db = w.dir.join("no.sqlite");
    let o = simlab(&[
        "mec",
        "partner",
        "add",
        "--db",
        s(&db),
        "--ca",
        s(&w.ca()),
        "--name",
        "mec-xx",
        "--url",
        "https://127.0.0.1:9",
        "--country",
        "FI",
        "--country-code",
        "358",
        "--certificate",
        s(&w.dir.join("xx-tls").join("cert.pem")),
    ]);
    assert_eq!(o.status.code(), Some(2), "{:?}", text(&o));
    assert!(text(&o).1.contains("not issued by"), "{:?}", text(&o));
    let list = simlab(&["mec", "partner", "list", "--db", s(&db), "--json"]);
    ok(&list);
    assert_eq!(json_of(&list)["partners"].as_array().unwrap().len(), 1);
    // Unknown and malformed contract ids.
    let e = client::get_json::<Value>(
        &w.phone_url(&w.no),
        "/v1/contracts/00000000000000000000000000000000",
    )
    .unwrap_err();
    assert_eq!(status(e), (404, "unknown_contract".into()));
    let e = client::get_json::<Value>(&w.phone_url(&w.no), "/v1/contracts/xyz").unwrap_err();
    assert_eq!(status(e), (400, "bad_contract_id".into()));
    // An expired contract: 410 at the home server, expired for the CP, nothing paid.
    let (order, location) = w.checkout(
        &w.cp_card,
        &json!({"msisdn": MSISDN, "request_type": "payment", "amount": 500, "currency": "DKK",
            "payment_method": "card"}),
    );
    std::thread::sleep(Duration::from_millis(3100));
    let path = location
        .split_once("/v1/")
        .map(|(_, p)| format!("/v1/{p}"))
        .unwrap();
    let e = client::get_json::<Value>(&w.phone_url(&w.no), &path).unwrap_err();
    assert_eq!(status(e), (410, "contract_expired".into()));
    let v: Value = client::get_json(&w.phone_url(&w.cp_card), &format!("/orders/{order}")).unwrap();
    assert_eq!(v["status"], "expired", "{v}");
    assert!(!w.log("fi").contains("payment"));
    // The visited server still serves.
    let o = w.shop(&w.cp_card, &["--request-type", "authentication"]);
    ok(&o);
}

#[test]
fn the_mec_commands_refuse_bad_arguments_with_exit_2_and_store_nothing() {
    let dir = simlab_hil::temp_path("roaming-cli");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let ca = dir.join("ca");
    for (role, name) in [("peer", "mec-no"), ("server", "plain")] {
        ok(&simlab(&[
            "gateway",
            "issue",
            "--ca-dir",
            s(&ca),
            "--role",
            role,
            "--name",
            name,
            "--out",
            s(&dir.join(name)),
        ]));
    }
    let db = dir.join("m.sqlite");
    let cert = dir.join("mec-no").join("cert.pem");
    let ca_pem = ca.join("ca.pem");
    let base = |extra: &[&str]| {
        let mut a = vec![
            "mec",
            "partner",
            "add",
            "--db",
            s(&db),
            "--ca",
            s(&ca_pem),
            "--name",
            "mec-no",
            "--url",
            "https://127.0.0.1:9",
            "--country",
            "NO",
            "--country-code",
            "47",
            "--certificate",
            s(&cert),
        ];
        for pair in extra.chunks(2) {
            if let Some(i) = a.iter().position(|x| *x == pair[0]) {
                a[i + 1] = pair[1];
            } else {
                a.extend_from_slice(pair);
            }
        }
        simlab(&a)
    };
    let plain_cert = dir.join("plain").join("cert.pem");
    for (extra, says) in [
        (&["--country-code", "047"][..], "country code"),
        (&["--prefix", "9x"][..], "local prefix"),
        (&["--url", "http://127.0.0.1:9"][..], "https"),
        (&["--country", "Norway"][..], "two capital letters"),
        (&["--name", "mec no"][..], "--name"),
        (&["--request-types", "pay"][..], "request type"),
        (&["--certificate", s(&plain_cert)][..], "not a peer"),
        (&["--name", "mec-se"][..], "not a peer named"),
    ] {
        let o = base(extra);
        assert_eq!(o.status.code(), Some(2), "{extra:?}: {:?}", text(&o));
        assert!(text(&o).1.contains(says), "{extra:?}: {:?}", text(&o));
    }
    let list = simlab(&["mec", "partner", "list", "--db", s(&db), "--json"]);
    ok(&list);
    assert!(json_of(&list)["partners"].as_array().unwrap().is_empty());
    ok(&base(&[]));
    let again = base(&[]);
    assert_eq!(again.status.code(), Some(2), "{:?}", text(&again));
    let o = simlab(&[
        "mec",
        "partner",
        "remove",
        "--db",
        s(&db),
        "--name",
        "mec-xx",
    ]);
    assert_eq!(o.status.code(), Some(2), "{:?}", text(&o));
    for args in [
        &[
            "mec",
            "subscriber",
            "add",
            "--db",
            s(&db),
            "--msisdn",
            "4791234567",
            "--certificate",
            s(&cert),
        ][..],
        &["mec", "cp", "add", "--db", s(&db), "--id", "cp 1"][..],
        &[
            "mec",
            "cp",
            "add",
            "--db",
            s(&db),
            "--id",
            "cp-1",
            "--payment-methods",
            "Card",
        ][..],
        // A server certificate is not a MeC server's identity.
        &[
            "mec",
            "serve",
            "--name",
            "plain",
            "--db",
            s(&db),
            "--listen",
            "127.0.0.1:0",
            "--tls",
            s(&dir.join("plain")),
        ][..],
        &[
            "mec",
            "serve",
            "--name",
            "mec-se",
            "--db",
            s(&db),
            "--listen",
            "127.0.0.1:0",
            "--tls",
            s(&dir.join("mec-no")),
        ][..],
        &[
            "mec",
            "serve",
            "--name",
            "mec-no",
            "--db",
            s(&dir),
            "--listen",
            "127.0.0.1:0",
            "--tls",
            s(&dir.join("mec-no")),
        ][..],
    ] {
        let o = simlab(args);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {:?}", text(&o));
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_partner_that_hangs_costs_its_timeout_and_the_next_one_answers() {
    let w = World::start(
        "hang",
        Options {
            hanging_partner: true,
            ..Options::default()
        },
    );
    let o = w.shop(&w.cp_card, &["--request-type", "authentication", "--json"]);
    ok(&o);
    assert_eq!(json_of(&o)["contract"]["home"], "mec-no");
    assert!(w.log("dk").contains("mec-hang"), "{}", w.log("dk"));
    assert!(
        w.log("dk").contains("counted as a reject"),
        "{}",
        w.log("dk")
    );
}

/// Both servers on PostgreSQL (a database each in one server, as operators would run them):
/// a payment goes through and its contract stands in both stores, read back with psql; a
/// store from a newer simlab is refused with exit 2 and left alone.
#[test]
fn servers_on_postgresql_pay_and_a_newer_schema_is_refused() {
    let Some(pg) = Postgres::start_on("roaming-pg-server", "5436") else {
        return;
    };
    for n in ["dk", "no", "se"] {
        pg.psql(&format!("CREATE DATABASE mec_{n}"));
    }
    let w = World::start(
        "pg",
        Options {
            postgres: Some(pg.url.clone()),
            ..Options::default()
        },
    );
    let o = w.shop(
        &w.cp_card,
        &[
            "--request-type",
            "payment",
            "--amount",
            "12900",
            "--currency",
            "DKK",
            "--json",
        ],
    );
    ok(&o);
    let v = json_of(&o);
    assert_eq!(v["home"]["visited"]["status"], "paid", "{v}");
    let id = v["contract_id"].as_str().unwrap();
    let in_db = |n: &str, sql: &str| {
        let url = format!("{}/mec_{n}", pg.url.trim_end_matches("/postgres"));
        let o = Command::new("psql")
            .args([
                &url,
                "-X",
                "-q",
                "-A",
                "-t",
                "-v",
                "ON_ERROR_STOP=1",
                "-c",
                sql,
            ])
            .output()
            .expect("run psql");
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        String::from_utf8_lossy(&o.stdout).trim().to_string()
    };
    let row = |n: &str, side: &str| {
        in_db(
            n,
            &format!(
                "SELECT status || ' ' || amount || ' ' || currency FROM contracts \
                 WHERE side = '{side}' AND encode(id, 'hex') = '{id}'"
            ),
        )
    };
    assert_eq!(row("dk", "visited"), "paid 12900 DKK");
    assert_eq!(row("no", "home"), "paid 12900 DKK");
    assert_eq!(in_db("no", "SELECT count(*) FROM subscribers"), "1");
    drop(w);

    let db = format!("{}/mec_no", pg.url.trim_end_matches("/postgres"));
    in_db("no", "UPDATE simlab_mec_schema SET version = version + 1");
    let before = in_db("no", "SELECT version FROM simlab_mec_schema");
    let o = simlab(&["mec", "partner", "list", "--db", &db, "--json"]);
    assert_eq!(o.status.code(), Some(2), "{:?}", text(&o));
    assert!(text(&o).1.contains("newer"), "{:?}", text(&o));
    assert_eq!(in_db("no", "SELECT version FROM simlab_mec_schema"), before);

    let o = simlab(&["mec", "partner", "list", "--db", "postgres://u@h:port/db"]);
    assert_eq!(o.status.code(), Some(2), "{:?}", text(&o));
    assert!(
        text(&o).1.contains("not a PostgreSQL URL"),
        "{:?}",
        text(&o)
    );
}

/// A shop front (the roaming CA's own certificate) that redirects the phone to a host
/// certified by another CA, or to a partner that holds no such contract: the phone refuses
/// before it shows or signs anything, and the foreign host never sees a request.
#[test]
fn a_redirect_to_a_foreign_host_is_refused_and_nothing_is_signed() {
    use simlab_services::http::server::{Background, Limits};
    use simlab_services::http::tls::ServerTls;
    use simlab_services::http::{Request, Response};
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    let w = World::start("foreign", Options::default());
    ok(&simlab(&[
        "gateway",
        "issue",
        "--ca-dir",
        s(&w.dir.join("evil-ca")),
        "--role",
        "server",
        "--name",
        "mec-no",
        "--out",
        s(&w.dir.join("evil-tls")),
    ]));
    let asked = Arc::new(AtomicUsize::new(0));
    let seen = asked.clone();
    let evil = Background::start(
        "127.0.0.1:0",
        Arc::new(move |_: &Request| {
            seen.fetch_add(1, Ordering::SeqCst);
            Response::json(200, &json!({"bytes": "00"}))
        }),
        Limits::default(),
        Some(ServerTls::from_dir(&w.dir.join("evil-tls")).unwrap()),
        "evil",
    )
    .unwrap();
    let id = "00112233445566778899aabbccddeeff";
    for (target, says) in [
        (evil.url(), "certificate"),
        // A genuine server of the roaming CA, but the visited one, which holds no such
        // contract.
        (w.dk.clone(), "contract"),
    ] {
        let location = format!("{target}/v1/contracts/{id}");
        let shop = Background::start(
            "127.0.0.1:0",
            Arc::new(move |_: &Request| {
                Response::json(303, &json!({"location": location, "order_id": "o-1"}))
            }),
            Limits::default(),
            Some(ServerTls::from_dir(&w.dir.join("cp-card-tls")).unwrap()),
            "shop",
        )
        .unwrap();
        let o = w.shop(&shop.url(), &["--request-type", "authentication", "--json"]);
        let (out, err) = text(&o);
        assert_eq!(o.status.code(), Some(1), "{out}{err}");
        assert!(err.contains(says), "{target}: {err}");
        assert!(!out.contains("signature"), "{out}");
    }
    assert_eq!(
        asked.load(Ordering::SeqCst),
        0,
        "the foreign host was asked"
    );
    assert!(!w.log("no").contains(id), "{}", w.log("no"));
}
