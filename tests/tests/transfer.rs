//! Seed 003's acceptance tests on the real stacks: two `simlab operator serve` processes (each
//! its own store — SQLite, or PostgreSQL for one of them — channel 121 over mutual TLS on
//! loopback), their service nodes and three phones on the virtual SMS network (`simlab emulate
//! smsc`, real ptys), and the phones played by `simlab transfer` through `--modem`, exactly as
//! a lab user runs them; gammu reads one phone's confirmations as an SMS client we did not
//! write. The numbers in the test names are the acceptance tests.

use serde_json::Value;
use simlab_hil::postgres::Postgres;
use simlab_hil::{Process, gammu, profile, require, simlab_bin, simlab_timeout, temp_path, text};
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

const A: &str = "+491711000001";
const B: &str = "+491722000002";
/// A second subscriber of OP2: the "third number" of test 7.
const C: &str = "+491722000004";
const SN1: &str = "+491710000000";
const SN2: &str = "+491720000000";
const T: Duration = Duration::from_secs(60);
/// The phones: number, link and inbox name, the service node of its operator, lab PIN.
const PHONES: [(&str, &str, &str, &str); 3] = [
    (A, "a", SN1, "1357"),
    (B, "b", SN2, "2468"),
    (C, "c", SN2, "3579"),
];
const TOKEN_PIN: &str = "0000";

/// Whether `pin` shows in `logs`: as a number of its own (not inside a timestamp or a phone
/// number) or as the hex of its ASCII digits (inside a PDU).
fn shows_pin(logs: &str, pin: &str) -> bool {
    let hex: String = pin.bytes().map(|b| format!("{b:02x}")).collect();
    let alone = logs.match_indices(pin).any(|(i, _)| {
        let before = logs[..i].chars().next_back();
        let after = logs[i + pin.len()..].chars().next();
        !before.is_some_and(|c| c.is_ascii_digit()) && !after.is_some_and(|c| c.is_ascii_digit())
    });
    alone || logs.to_ascii_lowercase().contains(&hex)
}

fn ok(args: &[&str]) -> Value {
    let o = simlab_timeout(args, T);
    assert!(o.status.success(), "simlab {args:?}: {:?}", text(&o));
    serde_json::from_slice(&o.stdout).unwrap_or(Value::Null)
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// How a lab differs from the plain one (PIN lab mode, SQLite, A funded with 1000).
#[derive(Default)]
struct Setup {
    /// A's opening balance (default 1000).
    fund_a: Option<u64>,
    /// More `operator serve` arguments for OP1 and OP2.
    serve: [&'static [&'static str]; 2],
    /// The recommended mode: each phone's token signs M1/M4 (the card checks the token PIN),
    /// the subscriptions hold the tokens' keys, and the servers run without `--pin-in-sms`.
    token: bool,
    /// OP1's store elsewhere (a postgres:// URL) instead of a SQLite file.
    db1: Option<String>,
    /// OP1 starts with an empty peer table (the test adds OP2 while it runs).
    op1_alone: bool,
}

struct Lab {
    name: String,
    dir: PathBuf,
    smsc: Process,
    ops: Vec<Process>,
    logs: Vec<PathBuf>,
    /// `operator serve` without the per-run extras, per operator.
    serve: Vec<Vec<String>>,
    links: Vec<String>,
    dbs: [String; 2],
    token: bool,
    starts: usize,
    ports: [u16; 2],
}

impl Lab {
    /// `operator peer add` on OP `op`'s store: the other operator, its numbers and its
    /// pinned certificate.
    fn add_peer(&self, op: usize) {
        let (other, prefix) = if op == 1 { (2, "172") } else { (1, "171") };
        let cert = self.dir.join(format!("OP{other}-tls/cert.pem"));
        ok(&[
            "operator",
            "peer",
            "add",
            "--db",
            &self.db(op),
            "--name",
            &format!("OP{other}"),
            "--url",
            &format!("https://127.0.0.1:{}", self.ports[other - 1]),
            "--country-code",
            "49",
            "--prefix",
            prefix,
            "--certificate",
            &cert.display().to_string(),
        ]);
    }
    fn db(&self, op: usize) -> String {
        self.dbs[op - 1].clone()
    }
    fn inbox(&self, phone: usize) -> String {
        self.dir
            .join(format!("{}-inbox.json", PHONES[phone].1))
            .display()
            .to_string()
    }
    fn state(&self, phone: usize) -> String {
        self.dir
            .join(format!("{}.state", PHONES[phone].1))
            .display()
            .to_string()
    }
    fn ledger(&self, op: usize) -> Value {
        ok(&["--json", "operator", "ledger", "--db", &self.db(op)])
    }
    fn balance(&self, op: usize, who: &str) -> u64 {
        self.ledger(op)["accounts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|a| a["msisdn"] == who)
            .and_then(|a| a["balance"].as_u64())
            .unwrap_or_else(|| panic!("no account {who}"))
    }
    fn balanced(&self) {
        for op in [1, 2] {
            let l = self.ledger(op);
            assert_eq!(l["balanced"], true, "OP{op}: {l}\n{}", self.logs());
            assert_eq!(l["held"], 0, "OP{op} still holds money: {l}");
        }
    }
    /// No agent of either operator is still on its way.
    fn settled(&self) {
        for op in [1, 2] {
            let active = ok(&["--json", "operator", "agents", "--db", &self.db(op)]);
            assert_eq!(active, serde_json::json!([]), "OP{op}\n{}", self.logs());
        }
    }
    fn agent(&self, op: usize, tref: &str) -> Value {
        let all = ok(&[
            "--json",
            "operator",
            "agents",
            "--db",
            &self.db(op),
            "--tref",
            tref,
        ]);
        all[0].clone()
    }
    /// Waits until OP `op`'s agent for `tref` is in `state`.
    fn wait_state(&self, op: usize, tref: &str, state: &str) -> Value {
        let deadline = Instant::now() + Duration::from_secs(40);
        loop {
            let a = self.agent(op, tref);
            if a["state"] == state {
                return a;
            }
            assert!(
                Instant::now() < deadline,
                "OP{op}'s agent {tref} never got {state}: {a}\n{}",
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    fn logs(&self) -> String {
        self.logs
            .iter()
            .map(|l| std::fs::read_to_string(l).unwrap_or_default())
            .collect::<Vec<_>>()
            .join("\n---\n")
    }

    /// `simlab transfer …` on a phone's modem (with its card in the token mode).
    fn transfer(&self, phone: usize, args: &[&str]) -> Value {
        let mut all: Vec<String> =
            vec!["--json".into(), "--modem".into(), self.links[phone].clone()];
        if self.token {
            all.extend([
                "--emulate".into(),
                profile("demo-usim.toml").display().to_string(),
            ]);
        }
        all.push("transfer".into());
        all.extend(args.iter().map(|s| s.to_string()));
        let all: Vec<&str> = all.iter().map(String::as_str).collect();
        ok(&all)
    }
    /// The same with the phone's authorisation: its token (PIN to the card) or the lab PIN.
    fn signed(&self, phone: usize, args: &[&str]) -> Value {
        let state = self.state(phone);
        let mut all = args.to_vec();
        if self.token {
            all.extend(["--pin", TOKEN_PIN, "--state", &state]);
        } else {
            all.extend(["--pin-in-sms", PHONES[phone].3]);
        }
        self.transfer(phone, &all)
    }
    /// An order from `phone` (service, receiver, then the goods arguments).
    fn order(&self, phone: usize, service: &str, to: &str, goods: &[&str]) {
        let (me, _, via, _) = PHONES[phone];
        let mut args = vec![service, "--from", me, "--via", via, "--to", to];
        args.extend(goods);
        self.signed(phone, &args);
    }
    /// A's order with the PIN in the SMS whatever the lab's mode (the seed's literal M1).
    fn send_with_pin(&self, to: &str, pin: &str) {
        self.transfer(
            0,
            &[
                "send",
                "--from",
                A,
                "--via",
                SN1,
                "--to",
                to,
                "--amount",
                "1.00",
                "--pin-in-sms",
                pin,
            ],
        );
    }
    fn send(&self, to: &str, amount: &str) {
        self.order(0, "send", to, &["--amount", amount]);
    }
    /// A sends `amount` to B, B accepts the offer: its T-REF.
    fn send_and_accept(&self, amount: &str) -> String {
        self.send(B, amount);
        let (tref, _) = self.offer(1);
        self.answer(1, "accept", &tref);
        tref
    }
    /// `accept`, `reject` or `postpone` from `phone` for the offer kept in `inbox`.
    fn answer_from(&self, phone: usize, verb: &str, tref: &str, inbox: &str) {
        self.signed(
            phone,
            &[
                verb,
                "--tref",
                tref,
                "--inbox",
                inbox,
                "--via",
                PHONES[phone].2,
            ],
        );
    }
    fn answer(&self, phone: usize, verb: &str, tref: &str) {
        self.answer_from(phone, verb, tref, &self.inbox(phone));
    }

    /// The phone's inbox until `f` holds for it (offers kept; notices and the number of M3
    /// received summed over the reads).
    fn inbox_until(&self, phone: usize, f: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + Duration::from_secs(40);
        let mut notices = Vec::new();
        let mut received = 0;
        loop {
            let v = self.transfer(
                phone,
                &["inbox", "--inbox", &self.inbox(phone), "--timeout", "2"],
            );
            notices.extend(v["notices"].as_array().cloned().unwrap_or_default());
            received += v["received"].as_u64().expect("received");
            let all = serde_json::json!({"offers": v["offers"], "notices": notices, "received": received});
            if f(&all) {
                return all;
            }
            assert!(
                Instant::now() < deadline,
                "{}'s inbox never got there: {all}\n{}",
                PHONES[phone].0,
                self.logs()
            );
        }
    }
    /// The first offer that reaches `phone`: its T-REF.
    fn offer(&self, phone: usize) -> (String, Value) {
        let v = self.inbox_until(phone, |v| !v["offers"].as_array().unwrap().is_empty());
        let o = v["offers"][0].clone();
        (o["tref"].as_str().unwrap().to_string(), o)
    }

    /// OP `op` killed with SIGKILL (no clean-up of any kind), then started again with `extra`.
    fn kill_and_restart(&mut self, op: usize, extra: &[&str]) {
        self.ops[op - 1].stop_with(libc::SIGKILL, Duration::from_secs(10));
        self.start(op, extra);
    }
    fn start(&mut self, op: usize, extra: &[&str]) {
        self.starts += 1;
        let mut args = self.serve[op - 1].clone();
        args.extend(extra.iter().map(|s| s.to_string()));
        let (p, started, log) =
            simlab_hil::spawn_started(&format!("{}-op{op}-{}", self.name, self.starts), &args);
        assert_eq!(started["name"], format!("OP{op}"));
        if self.ops.len() < op {
            self.ops.push(p);
        } else {
            self.ops[op - 1] = p;
        }
        self.logs.push(log);
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for p in &mut self.ops {
            p.stop_with(libc::SIGTERM, Duration::from_secs(10));
        }
        self.smsc.stop_with(libc::SIGTERM, Duration::from_secs(10));
    }
}

fn lab(name: &str) -> Lab {
    lab_with(name, Setup::default())
}

/// Two operators: A (1000 minor units) at OP1, B and C (0) at OP2, subscribed with a service
/// PIN (the seed's lab mode) or their tokens' keys; three phones and two service nodes on the
/// virtual SMSC; each operator's peer table holds the other with its pinned certificate.
fn lab_with(name: &str, setup: Setup) -> Lab {
    let dir = temp_path(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let d = |p: &str| dir.join(p).display().to_string();
    for op in ["OP1", "OP2"] {
        ok(&[
            "gateway",
            "issue",
            "--ca-dir",
            &d("ix-ca"),
            "--role",
            "peer",
            "--name",
            op,
            "--host",
            "127.0.0.1",
            "--out",
            &d(&format!("{op}-tls")),
        ]);
    }
    let ports = [free_port(), free_port()];
    let links: Vec<String> = ["a", "b", "c", "sn1", "sn2"].iter().map(|l| d(l)).collect();
    let (smsc, _, smsc_log) = simlab_hil::spawn_started(
        &format!("{name}-smsc"),
        &[
            "--json".into(),
            "emulate".into(),
            "smsc".into(),
            "--phone".into(),
            format!("{}={A}", links[0]),
            "--phone".into(),
            format!("{}={B}", links[1]),
            "--phone".into(),
            format!("{}={C}", links[2]),
            "--node".into(),
            format!("{}={SN1}:+49171", links[3]),
            "--node".into(),
            format!("{}={SN2}:+49172", links[4]),
        ],
    );
    let dbs = [
        setup.db1.clone().unwrap_or_else(|| d("op1.sqlite")),
        d("op2.sqlite"),
    ];
    let card = profile("demo-usim.toml").display().to_string();
    for (phone, op) in [(0usize, 1usize), (1, 2), (2, 2)] {
        let (who, short, _, pin) = PHONES[phone];
        let db = &dbs[op - 1];
        if setup.token {
            let state = d(&format!("{short}.state"));
            ok(&[
                "--emulate",
                &card,
                "token",
                "keygen",
                "--pin",
                TOKEN_PIN,
                "--state",
                &state,
            ]);
            ok(&[
                "--emulate",
                &card,
                "operator",
                "subscribe",
                "--db",
                db,
                "--msisdn",
                who,
                "--from-token",
                "--state",
                &state,
            ]);
        } else {
            let file = d(&format!("pin-{short}"));
            std::fs::write(&file, format!("{pin}\n")).unwrap();
            ok(&[
                "operator",
                "subscribe",
                "--db",
                db,
                "--msisdn",
                who,
                "--pin-file",
                &file,
            ]);
        }
        let fund = if phone == 0 {
            setup.fund_a.unwrap_or(1000)
        } else {
            0
        };
        ok(&[
            "operator",
            "account",
            "--db",
            db,
            "--msisdn",
            who,
            "--fund",
            &fund.to_string(),
        ]);
    }
    let serve = (1..=2usize)
        .map(|op| {
            let mut args: Vec<String> = [
                "--json",
                "--modem",
                &links[op + 2],
                "operator",
                "serve",
                "--db",
                &dbs[op - 1],
                "--tls",
                &d(&format!("OP{op}-tls")),
                "--listen",
                &format!("127.0.0.1:{}", ports[op - 1]),
            ]
            .iter()
            .map(|s| s.to_string())
            .collect();
            if !setup.token {
                args.push("--pin-in-sms".into());
            }
            args
        })
        .collect();
    let mut lab = Lab {
        name: name.into(),
        dir,
        smsc,
        ops: Vec::new(),
        logs: vec![smsc_log],
        serve,
        links,
        dbs,
        token: setup.token,
        starts: 0,
        ports,
    };
    if !setup.op1_alone {
        lab.add_peer(1);
    }
    lab.add_peer(2);
    for op in 1..=2 {
        lab.start(op, setup.serve[op - 1]);
    }
    lab
}

fn notice_with(s: impl Into<String>) -> impl Fn(&Value) -> bool {
    let s = s.into();
    move |v: &Value| notices_with(v, &s) > 0
}

fn notices_with(v: &Value, s: &str) -> usize {
    v["notices"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|n| n["text"].as_str().unwrap_or("").contains(s))
        .count()
}

/// Both people told, 750/250, settlement 250 both ways, ledgers balanced, nobody's agent
/// left active: test 1's outcome.
fn assert_moved_250(lab: &Lab) {
    lab.inbox_until(0, notice_with("done:"));
    lab.inbox_until(1, notice_with("done:"));
    assert_ledgers(lab, (750, 250), 250);
}

/// A's and B's balances, what OP1 owes OP2 (and OP2 is owed), both ledgers balanced with
/// nothing held, and no agent left on its way.
fn assert_ledgers(lab: &Lab, balances: (u64, u64), owed: i64) {
    assert_eq!(
        (lab.balance(1, A), lab.balance(2, B)),
        balances,
        "{}",
        lab.logs()
    );
    let (l1, l2) = (lab.ledger(1), lab.ledger(2));
    assert_eq!(
        (l1["payable"].as_i64(), l2["receivable"].as_i64()),
        (Some(owed), Some(owed))
    );
    lab.balanced();
    lab.settled();
}

/// Both operators ended the transfer in `state`.
fn both(lab: &Lab, tref: &str, state: &str) {
    lab.wait_state(1, tref, state);
    lab.wait_state(2, tref, state);
}

#[test]
fn t1_t10_a_transfer_accepted_by_the_receiver_moves_the_money_once_and_the_ledgers_add_up() {
    let lab = lab("transfer-accept");
    lab.order(0, "send", B, &["--amount", "2.50", "--message", "rent"]);
    let (tref, offer) = lab.offer(1);
    assert_eq!(offer["sender"], A);
    assert_eq!(offer["goods"]["amount"], 250);
    lab.answer(1, "accept", &tref);
    // Test 10: the same M4 again — still one transfer.
    lab.answer(1, "accept", &tref);
    assert_moved_250(&lab);
    // Nothing in a log says a PIN.
    let logs = lab.logs();
    for (_, _, _, pin) in PHONES {
        assert!(!shows_pin(&logs, pin), "{logs}");
    }
}

#[test]
fn t2_t3_t4_t7_a_wrong_pin_an_unsubscribed_receiver_a_third_number_and_a_rejection_move_nothing() {
    let lab = lab("transfer-refusals");
    // Test 2: a wrong PIN1 — an error SMS to A, no M2, no M3. The PIN from the environment
    // (`env:NAME`), as a lab script would keep it out of the process list.
    let o = simlab_hil::run_cmd(
        Command::new(simlab_bin())
            .args([
                "--modem",
                &lab.links[0],
                "transfer",
                "send",
                "--from",
                A,
                "--via",
                SN1,
                "--to",
                B,
                "--amount",
                "1.00",
                "--pin-in-sms",
                "env:SIMLAB_TEST_PIN",
            ])
            .env("SIMLAB_TEST_PIN", "9999"),
        T,
    );
    assert!(o.status.success(), "{:?}", text(&o));
    lab.inbox_until(0, notice_with("order refused: wrong PIN"));
    // Test 3: the receiver is not subscribed at OP2 — M2 rejected, A is told.
    lab.send("+491722000003", "1.00");
    lab.inbox_until(0, notice_with("not done: OP2 refused it"));
    // Test 4: B rejects — nothing moves and OP2 keeps no active agent.
    lab.send(B, "1.00");
    let (tref, _) = lab.offer(1);
    // Test 7: the right T-REF (and the right offer hash) answered by C, another subscriber of
    // OP2, with C's own valid PIN: OP2 ignores it, tells C nothing, and B's answer still counts.
    std::fs::copy(lab.inbox(1), lab.inbox(2)).unwrap();
    lab.answer(2, "accept", &tref);
    lab.wait_state(2, &tref, "awaiting_answer");
    lab.answer(1, "reject", &tref);
    lab.inbox_until(0, notice_with("rejected"));
    lab.settled();
    assert_eq!(lab.agent(2, &tref)["state"], "rejected");
    assert_eq!((lab.balance(1, A), lab.balance(2, B)), (1000, 0));
    lab.balanced();
    // C was told nothing at all; B got its one offer (no M3 after the error or the refusal).
    let c = lab.transfer(2, &["inbox", "--inbox", &lab.inbox(2), "--timeout", "1"]);
    assert_eq!(c["notices"], serde_json::json!([]), "{c}");
    assert_eq!(c["received"], 0);
    let b = lab.inbox_until(1, |_| true);
    assert_eq!(b["offers"].as_array().unwrap().len(), 1);
    assert!(lab.logs().contains("answer from another number ignored"));
}

#[test]
fn t5_an_offer_nobody_answers_is_cancelled_at_the_deadline_and_a_late_acceptance_is_expired() {
    // Two labs at once: OP1 (the origin) gives the shortest deadline in its offers; OP2, the
    // answering side, sweeps it, without and with --resend.
    let plain = lab_with(
        "transfer-deadline",
        Setup {
            serve: [&["--answer-ttl", "10"], &[]],
            ..Setup::default()
        },
    );
    let resend = lab_with(
        "transfer-resend",
        Setup {
            serve: [&["--answer-ttl", "10"], &["--resend"]],
            ..Setup::default()
        },
    );
    for lab in [&plain, &resend] {
        lab.send(B, "2.50");
    }
    for (lab, m3) in [(&plain, 1), (&resend, 2)] {
        // B reads its phone and says nothing: the offer expires; B is told, then A.
        let b = lab.inbox_until(1, notice_with("expired"));
        assert_eq!(b["received"], m3, "M3 sent to B: {b}\n{}", lab.logs());
        let tref = b["offers"][0]["tref"].as_str().unwrap().to_string();
        lab.inbox_until(0, notice_with(format!("not done: {B} expired")));
        lab.wait_state(2, &tref, "expired");
        assert_eq!(lab.agent(1, &tref)["state"], "expired");
        // A late acceptance is answered "expired" and moves nothing.
        lab.answer(1, "accept", &tref);
        let late = lab.inbox_until(1, notice_with("expired"));
        assert_eq!(
            notices_with(&late, &format!("{tref}: expired")),
            1,
            "{late}"
        );
        assert_eq!(late["received"], 0, "no M3 after the deadline: {late}");
        assert_eq!((lab.balance(1, A), lab.balance(2, B)), (1000, 0));
        lab.balanced();
        lab.settled();
    }
}

#[test]
fn t6_a_balance_too_small_for_the_transfer_credits_nothing() {
    let lab = lab_with(
        "transfer-balance",
        Setup {
            fund_a: Some(100),
            ..Setup::default()
        },
    );
    let tref = lab.send_and_accept("2.50");
    lab.inbox_until(0, notice_with("not done"));
    lab.inbox_until(1, notice_with("not done"));
    both(&lab, &tref, "aborted");
    assert_ledgers(&lab, (100, 0), 0);
}

#[test]
fn t6_a_credit_side_that_fails_leaves_the_debit_undone() {
    let lab = lab_with(
        "transfer-fail-credit",
        Setup {
            serve: [&[], &["--fault", "fail-credit"]],
            ..Setup::default()
        },
    );
    let tref = lab.send_and_accept("2.50");
    lab.inbox_until(0, notice_with("not done"));
    both(&lab, &tref, "aborted");
    assert_ledgers(&lab, (1000, 0), 0);
}

#[test]
fn t6_the_coordinator_killed_between_prepare_and_commit_finishes_after_a_restart() {
    let mut lab = lab_with(
        "transfer-crash",
        Setup {
            serve: [&["--fault", "stall-after-prepare"], &[]],
            ..Setup::default()
        },
    );
    let tref = lab.send_and_accept("2.50");
    // Both sides prepared: A's 250 held at OP1, the credit reserved at OP2; OP1 stops there.
    lab.wait_state(2, &tref, "prepared");
    lab.wait_state(1, &tref, "prepared");
    assert!(lab.logs().contains("fault stall-after-prepare"));
    assert_eq!(lab.ledger(1)["held"], 250);
    lab.kill_and_restart(1, &[]);
    // The restarted coordinator reads its log and finishes: both operations, exactly once.
    both(&lab, &tref, "completed");
    assert_moved_250(&lab);
}

/// Reads the phone's messages with gammu until one holds `needle`; the texts it saw.
fn gammu_until(lab: &Lab, phone: usize, needle: &str) -> String {
    let rc = lab.dir.join(format!("gammu-{}.rc", PHONES[phone].1));
    std::fs::write(
        &rc,
        format!(
            "[gammu]\ndevice = {}\nconnection = at\nlogfile = {}\nlogformat = textall\n",
            lab.links[phone],
            lab.dir.join("gammu.log").display()
        ),
    )
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(40);
    loop {
        let o = gammu(&rc, &["getallsms"]);
        let (out, err) = text(&o);
        if out.contains(needle) {
            return out;
        }
        assert!(
            Instant::now() < deadline,
            "gammu never read {needle:?}: {out}\n{err}\n{}",
            lab.logs()
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

#[test]
fn t8_a_ticket_split_leaves_n_minus_m_and_gives_the_receiver_m_and_all_of_it_is_refused() {
    if !require("gammu") {
        return;
    }
    let lab = lab("transfer-ticket");
    ok(&[
        "operator",
        "ticket",
        "--db",
        &lab.db(1),
        "--id",
        "T-10",
        "--owner",
        A,
        "--uses",
        "10",
    ]);
    let uses = |lab: &Lab, op: usize, owner: &str| -> Vec<(String, u64)> {
        lab.ledger(op)["tickets"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|t| t["owner"] == owner)
            .map(|t| {
                (
                    t["id"].as_str().unwrap().to_string(),
                    t["uses"].as_u64().unwrap(),
                )
            })
            .collect()
    };
    // M = N: a ticket keeps at least one use; B sees the offer, accepts, and nothing moves.
    lab.order(0, "ticket", B, &["--ticket", "T-10", "--uses", "10"]);
    let (all, _) = lab.offer(1);
    lab.answer(1, "accept", &all);
    both(&lab, &all, "aborted");
    assert_eq!(uses(&lab, 1, A), vec![("T-10".to_string(), 10)]);
    assert!(uses(&lab, 2, B).is_empty());
    // M = 3 of 10: 7 left, a new 3-use ticket for B.
    lab.order(0, "ticket", B, &["--ticket", "T-10", "--uses", "3"]);
    let three = lab.inbox_until(1, |v| v["offers"].as_array().unwrap().len() == 2);
    let tref = three["offers"][1]["tref"].as_str().unwrap().to_string();
    assert_eq!(three["offers"][1]["goods"]["uses"], 3, "{three}");
    lab.answer(1, "accept", &tref);
    both(&lab, &tref, "completed");
    assert_eq!(uses(&lab, 1, A), vec![("T-10".to_string(), 7)]);
    let got = uses(&lab, 2, B);
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0].1, 3);
    // A's confirmations, read by gammu off A's phone: the refusal and the split.
    let sms = gammu_until(&lab, 0, &format!("simlab-transfer {tref}: done:"));
    assert!(
        sms.contains(&format!("simlab-transfer {all}: not done")),
        "{sms}"
    );
    lab.balanced();
    lab.settled();
}

#[test]
fn t9_a_point_of_sale_bill_is_paid_once_accepted_and_an_altered_bill_debits_nothing() {
    let mut lab = lab("transfer-bill");
    // B is the till at OP2; A the customer at OP1.
    lab.order(1, "bill", A, &["--amount", "4.20", "--message", "coffee"]);
    let (tref, offer) = lab.offer(0);
    assert_eq!(offer["sender"], B);
    assert_eq!(offer["goods"]["amount"], 420);
    lab.answer(0, "accept", &tref);
    both(&lab, &tref, "completed");
    assert_eq!((lab.balance(1, A), lab.balance(2, B)), (580, 420));
    // The point of sale changes its bill after the customer saw it: the hash no longer
    // matches at PREPARE, and nothing is debited.
    lab.kill_and_restart(2, &["--fault", "alter-bill"]);
    lab.order(
        1,
        "bill",
        A,
        &["--amount", "4.20", "--message", "coffee again"],
    );
    let v = lab.inbox_until(0, |v| v["offers"].as_array().unwrap().len() == 2);
    let altered = v["offers"][1]["tref"].as_str().unwrap().to_string();
    lab.answer(0, "accept", &altered);
    lab.wait_state(1, &altered, "aborted");
    let a = lab.wait_state(2, &altered, "aborted");
    assert!(
        a["cause"].as_str().unwrap_or("").contains("not the bill"),
        "{a}"
    );
    lab.inbox_until(0, notice_with("not done"));
    assert_eq!((lab.balance(1, A), lab.balance(2, B)), (580, 420));
    lab.balanced();
    lab.settled();
}

#[test]
fn the_recommended_mode_signs_orders_and_answers_on_the_tokens_and_refuses_a_pin_in_the_sms() {
    let lab = lab_with(
        "transfer-token",
        Setup {
            token: true,
            ..Setup::default()
        },
    );
    // The seed's literal PIN in the SMS: refused by a server not in the lab mode.
    lab.send_with_pin(B, "1357");
    lab.inbox_until(0, notice_with("PINs in SMS are not accepted here"));
    lab.send_and_accept("2.50");
    assert_moved_250(&lab);
    let logs = lab.logs();
    assert!(!shows_pin(&logs, TOKEN_PIN), "{logs}");
}

#[test]
fn one_operator_on_postgresql_keeps_the_same_ledger() {
    let Some(pg) = Postgres::start_on("transfer-pg-server", "5439") else {
        return;
    };
    let lab = lab_with(
        "transfer-on-pg",
        Setup {
            db1: Some(pg.url.clone()),
            ..Setup::default()
        },
    );
    lab.send_and_accept("2.50");
    assert_moved_250(&lab);
    // A ticket split and a rejection on the same store: the other tables and paths.
    ok(&[
        "operator",
        "ticket",
        "--db",
        &lab.db(1),
        "--id",
        "T-5",
        "--owner",
        A,
        "--uses",
        "5",
    ]);
    lab.order(0, "ticket", B, &["--ticket", "T-5", "--uses", "2"]);
    let v = lab.inbox_until(1, |v| v["offers"].as_array().unwrap().len() == 2);
    let split = v["offers"][1]["tref"].as_str().unwrap().to_string();
    lab.answer(1, "accept", &split);
    lab.wait_state(1, &split, "completed");
    lab.send(B, "1.00");
    let v = lab.inbox_until(1, |v| v["offers"].as_array().unwrap().len() == 3);
    let no = v["offers"][2]["tref"].as_str().unwrap().to_string();
    lab.answer(1, "reject", &no);
    lab.wait_state(1, &no, "rejected");
    lab.balanced();
    lab.settled();
    // Read back with psql, the independent client.
    assert_eq!(
        pg.psql(&format!(
            "SELECT balance FROM accounts WHERE msisdn = '{A}'"
        )),
        "750"
    );
    assert_eq!(pg.psql("SELECT uses FROM tickets WHERE id = 'T-5'"), "3");
    assert_eq!(
        pg.psql(&format!(
            "SELECT state FROM agents WHERE tref = decode('{split}', 'hex')"
        )),
        "completed"
    );
}

#[test]
fn bad_input_on_the_command_line_is_exit_2_and_names_what_is_wrong() {
    let dir = temp_path("transfer-bad");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let db = dir.join("op.sqlite").display().to_string();
    let max = (1u64 << 53).to_string();
    ok(&[
        "operator", "account", "--db", &db, "--msisdn", A, "--fund", &max,
    ]);
    let send = |extra: &[&str]| -> Vec<String> {
        let mut v: Vec<String> = [
            "--modem",
            "/nonexistent/modem",
            "transfer",
            "send",
            "--from",
            A,
            "--via",
            SN1,
            "--pin-in-sms",
            "1357",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        v.extend(extra.iter().map(|s| s.to_string()));
        v
    };
    let cases: Vec<(Vec<String>, &str)> = vec![
        (
            [
                "operator", "account", "--db", &db, "--msisdn", A, "--fund", "1",
            ]
            .map(String::from)
            .to_vec(),
            "--fund",
        ),
        (
            send(&["--to", B, "--amount", "99999999999999999999"]),
            "--amount",
        ),
        (send(&["--to", B, "--amount", "-1"]), "--amount"),
        (send(&["--to", B, "--amount", "0"]), "--amount"),
        (send(&["--to", "12345", "--amount", "1"]), "--to"),
        (
            [
                "transfer",
                "accept",
                "--tref",
                "zz",
                "--inbox",
                "/tmp/x",
                "--via",
                SN2,
                "--pin-in-sms",
                "2468",
            ]
            .map(String::from)
            .to_vec(),
            "--tref",
        ),
        (
            [
                "operator",
                "serve",
                "--db",
                &db,
                "--tls",
                "/",
                "--null-sms",
                "--answer-ttl",
                "5",
            ]
            .map(String::from)
            .to_vec(),
            "--answer-ttl",
        ),
        (
            [
                "--trace",
                "/tmp/x.trace",
                "--modem",
                "/nonexistent",
                "operator",
                "serve",
                "--db",
                &db,
                "--tls",
                "/",
                "--pin-in-sms",
            ]
            .map(String::from)
            .to_vec(),
            "--trace",
        ),
        (
            [
                "operator",
                "peer",
                "add",
                "--db",
                &db,
                "--name",
                "OP2",
                "--url",
                "https://127.0.0.1:1",
                "--country-code",
                "49",
                "--certificate",
                "/nonexistent.pem",
            ]
            .map(String::from)
            .to_vec(),
            "--certificate",
        ),
    ];
    for (args, flag) in cases {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let o = simlab_hil::simlab(&args);
        let (out, err) = text(&o);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {out} {err}");
        assert!(err.contains(flag), "{args:?} should name {flag}: {err}");
    }
    // The refused --fund left the balance as it was.
    let l = ok(&["--json", "operator", "ledger", "--db", &db]);
    assert_eq!(l["accounts"][0]["balance"].as_u64(), Some(1 << 53));
}

#[test]
fn a_peer_added_while_the_operator_runs_is_used_without_a_restart() {
    let lab = lab_with(
        "transfer-late-peer",
        Setup {
            op1_alone: true,
            ..Setup::default()
        },
    );
    lab.send(B, "2.50");
    lab.inbox_until(0, notice_with(format!("no operator is known for {B}")));
    lab.add_peer(1);
    // The worker reads the peer table again within about 5 s.
    std::thread::sleep(Duration::from_secs(6));
    lab.send_and_accept("2.50");
    assert_moved_250(&lab);
}
