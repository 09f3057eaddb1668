//! Modems and SMS end to end: `simlab emulate modem` on a real pty as the modem, the `simlab`
//! CLI (which opens the pty with the serialport crate) and gammu as clients.
//!
//! Every test starts its own virtual modem ([`VirtualModem`]); each fault the emulator can
//! inject is driven through the CLI here, and through the library in host/emulate/tests/modem.rs.

use serde_json::{Value, json};
use simlab_hil::{VirtualModem, gammu, json, require, simlab_timeout, text, workspace_root};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// The virtual modem's own number (its built-in SIM's MSISDN).
const OWN: &str = "+491700000099";
const T: Duration = Duration::from_secs(60);

fn run(args: &[&str]) -> Output {
    simlab_timeout(args, T)
}

/// `simlab --modem LINK <args…>`.
fn at(m: &VirtualModem, args: &[&str]) -> Output {
    let mut all = vec!["--modem", m.path()];
    all.extend_from_slice(args);
    run(&all)
}

fn code(o: &Output) -> i32 {
    o.status.code().unwrap_or(-1)
}

/// Waits (bounded) until the spool holds `n` messages.
fn wait_sent(m: &VirtualModem, n: usize) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let sent = m.sent();
        if sent.len() >= n || Instant::now() > deadline {
            return sent;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

const LONG: &str = "This message is long enough to need three parts when it is encoded in the GSM \
7-bit alphabet, because one part holds only 153 characters once the concatenation header takes \
its share, and this text goes on for quite a while longer than two of those parts would hold, \
so that the receiving side has to put three of them back together in the right order before \
it can show the whole of it.";

#[test]
fn gammu_sends_and_reads_through_the_virtual_modem() {
    if !require("gammu") {
        return;
    }
    for profile in ["generic", "huawei", "quectel", "simcom"] {
        let m = VirtualModem::start(&["--profile", profile]);
        let rc = m.gammurc();
        let o = gammu(&rc, &["identify"]);
        assert!(o.status.success(), "{profile}: {:?}\n{}", text(&o), m.log());
        assert!(text(&o).0.contains("001010000000099"), "{:?}", text(&o));

        let o = gammu(
            &rc,
            &[
                "sendsms",
                "TEXT",
                "+491701234567",
                "-text",
                "Hello from gammu",
            ],
        );
        assert!(o.status.success(), "{profile}: {:?}\n{}", text(&o), m.log());
        let sent = wait_sent(&m, 1);
        assert_eq!(sent.len(), 1, "{profile}");
        assert_eq!(sent[0]["to"], "+491701234567");
        assert_eq!(sent[0]["text"], "Hello from gammu");

        // simlab sends to the modem's own number; gammu, independently, reads it back.
        let o = at(
            &m,
            &["sms", "send", "--to", OWN, "--text", "loop via simlab"],
        );
        assert!(o.status.success(), "{:?}", text(&o));
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let o = gammu(&rc, &["getallsms"]);
            if text(&o).0.contains("loop via simlab") {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{profile}: gammu never saw it: {:?}",
                text(&o)
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

#[test]
fn gammu_to_simlab_multipart() {
    if !require("gammu") {
        return;
    }
    let m = VirtualModem::start(&[]);
    let rc = m.gammurc();
    let o = gammu(&rc, &["sendsms", "TEXT", OWN, "-len", "400", "-text", LONG]);
    assert!(o.status.success(), "{:?}\n{}", text(&o), m.log());
    assert_eq!(wait_sent(&m, 3).len(), 3);
    // simlab reassembles gammu's concatenated parts from the modem's storage.
    let o = at(
        &m,
        &["sms", "watch", "--json", "--count", "1", "--timeout", "20"],
    );
    assert!(o.status.success(), "{:?}", text(&o));
    let line: Value = serde_json::from_str(text(&o).0.lines().next().unwrap_or("")).unwrap();
    assert_eq!(line["text"], LONG);
    assert_eq!(line["parts"], 3);
}

#[test]
fn send_with_report_list_watch_and_delete() {
    let m = VirtualModem::start(&["--profile", "quectel"]);
    let trace = m.dir.join("at.trace");
    let o = run(&[
        "--modem",
        m.path(),
        "--trace",
        trace.to_str().unwrap(),
        "sms",
        "send",
        "--to",
        OWN,
        "--text",
        LONG,
        "--report",
        "--json",
    ]);
    assert!(o.status.success(), "{:?}", text(&o));
    let v = json(&o);
    assert_eq!(
        (v["complete"].as_bool(), v["delivered"].as_bool()),
        (Some(true), Some(true))
    );
    assert_eq!(v["parts"], 3);
    assert_eq!(v["reports"].as_array().unwrap().len(), 3);
    assert!(
        v["reports"]
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["status"] == "00")
    );
    let t = std::fs::read_to_string(&trace).unwrap();
    assert!(t.contains(">> AT+CMGS=") && t.contains("(URC)"), "{t}");

    // The three looped-back parts are in storage.
    let deadline = Instant::now() + Duration::from_secs(10);
    let list = loop {
        let l = json(&at(&m, &["sms", "list", "--json"]));
        if l.as_array().is_some_and(|a| a.len() >= 3) || Instant::now() > deadline {
            break l;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let list = list.as_array().unwrap();
    assert_eq!(list.len(), 3, "{list:?}");
    assert!(
        list.iter()
            .all(|e| e["type"] == "deliver" && e["oa"] == OWN)
    );
    assert!(list.iter().all(|e| e["concat"]["total"] == 3));

    // watch: a reversed three-part message from the inbox arrives whole, as one JSON line.
    m.inbox(
        "in",
        &json!({"from": "+441234567890", "text": LONG, "reverse": true}),
    );
    let o = at(
        &m,
        &["sms", "watch", "--json", "--count", "1", "--timeout", "20"],
    );
    assert!(o.status.success(), "{:?}", text(&o));
    let lines: Vec<Value> = text(&o)
        .0
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert_eq!(lines[0]["text"], LONG);
    assert_eq!(lines[0]["oa"], "+441234567890");

    let o = at(&m, &["sms", "delete", "--all"]);
    assert!(o.status.success(), "{:?}", text(&o));
    let l = json(&at(&m, &["sms", "list", "--json"]));
    assert_eq!(l, json!([]));
    let o = at(&m, &["sms", "delete", "7"]);
    assert_eq!(code(&o), 2, "{:?}", text(&o));
}

#[test]
fn watch_reports_undecodable_messages_and_keeps_them() {
    let m = VirtualModem::start(&[]);
    m.inbox(
        "bad",
        &json!({"pdu": "07910201956905F0040B910201014160F300082021913052158004"}),
    );
    let o = at(&m, &["sms", "watch", "--json", "--timeout", "3"]);
    assert!(o.status.success(), "{:?}", text(&o));
    let first: Value = serde_json::from_str(text(&o).0.lines().next().unwrap()).unwrap();
    assert_eq!(first["type"], "undecodable");
    assert!(first["error"].as_str().unwrap().contains("truncated"));
    let l = json(&at(&m, &["sms", "list", "--json"]));
    assert_eq!(l.as_array().unwrap().len(), 1, "kept: {l}");
    assert!(l[0]["error"].is_string());
}

#[test]
fn faults_slow_prompt_sim_busy_and_noisy_modems_still_send() {
    for (profile, faults) in [
        ("generic", "slow-prompt=1500"),
        ("quectel", "cme14=5"),
        ("huawei", "urc-mid,echo,split,garbage"),
        ("simcom", "urc-mid,slow-submit=500"),
    ] {
        let m = VirtualModem::start(&["--profile", profile, "--faults", faults]);
        let o = at(
            &m,
            &[
                "sms", "send", "--to", OWN, "--text", LONG, "--report", "--json",
            ],
        );
        assert!(o.status.success(), "{faults}: {:?}\n{}", text(&o), m.log());
        assert_eq!(json(&o)["delivered"], true, "{faults}");
        assert_eq!(m.sent().len(), 3, "{faults}");
        let o = at(&m, &["modem", "info", "--json"]);
        assert_eq!(json(&o)["imsi"], "001010000000099", "{faults}");
    }
}

#[test]
fn faults_that_stop_a_send_report_exactly_what_went_out() {
    // SMSC unknown: nothing sent, the message says how to fix it.
    let m = VirtualModem::start(&["--faults", "cms330"]);
    let o = at(
        &m,
        &[
            "sms",
            "send",
            "--to",
            "+491701234567",
            "--text",
            "x",
            "--json",
        ],
    );
    assert_eq!(code(&o), 1, "{:?}", text(&o));
    let v = json(&o);
    assert_eq!(
        (v["complete"].as_bool(), v["sent"].clone()),
        (Some(false), json!([]))
    );
    assert!(
        text(&o).1.contains("330") && text(&o).1.contains("AT+CSCA"),
        "{:?}",
        text(&o)
    );
    assert!(m.sent().is_empty());

    // The second of three parts refused: part 1 went out and is reported, exit 1.
    let m = VirtualModem::start(&["--faults", "cms500=2"]);
    let o = at(
        &m,
        &[
            "sms",
            "send",
            "--to",
            "+491701234567",
            "--text",
            LONG,
            "--json",
        ],
    );
    assert_eq!(code(&o), 1, "{:?}", text(&o));
    let v = json(&o);
    assert_eq!(v["complete"], false);
    assert_eq!(v["failed_part"], 2);
    assert_eq!(v["sent"].as_array().unwrap().len(), 1);
    assert_eq!(v["sent"][0]["part"], 1);
    assert_eq!(m.sent().len(), 1);
    let m = VirtualModem::start(&["--faults", "cms500=2"]);
    let o = at(
        &m,
        &["sms", "send", "--to", "+491701234567", "--text", LONG],
    );
    assert_eq!(code(&o), 1, "{:?}", text(&o));
    assert!(
        text(&o)
            .0
            .contains("NOT SENT completely: part 2 of 3 failed; parts that went out: 1 (mr "),
        "{:?}",
        text(&o)
    );

    // A stuck prompt: ESC after the timeout, the part is not counted, the modem answers
    // again afterwards.
    let m = VirtualModem::start(&["--faults", "stuck-prompt=1"]);
    let o = at(
        &m,
        &[
            "sms",
            "send",
            "--to",
            "+491701234567",
            "--text",
            "x",
            "--timeout",
            "2",
            "--json",
        ],
    );
    assert_eq!(code(&o), 1, "{:?}", text(&o));
    assert_eq!(json(&o)["sent"], json!([]));
    assert!(text(&o).1.contains("may or may not"), "{:?}", text(&o));
    assert!(m.sent().is_empty());
    let o = at(&m, &["sms", "send", "--to", "+491701234567", "--text", "y"]);
    assert!(o.status.success(), "{:?}", text(&o));

    // The modem vanishes after the first part's PDU.
    let mut m = VirtualModem::start(&["--faults", "vanish=1"]);
    let o = at(
        &m,
        &[
            "sms",
            "send",
            "--to",
            "+491701234567",
            "--text",
            "x",
            "--json",
        ],
    );
    assert_eq!(code(&o), 1, "{:?}", text(&o));
    assert_eq!(json(&o)["sent"], json!([]));
    assert!(text(&o).1.contains("went away"), "{:?}", text(&o));
    assert!(m.exited_within(Duration::from_secs(5)));
    // And it is gone for the next command, too.
    let o = at(&m, &["modem", "info"]);
    assert_eq!(code(&o), 1, "{:?}", text(&o));
}

#[test]
fn status_report_saying_undelivered_is_exit_1() {
    let m = VirtualModem::start(&["--faults", "report-status=46"]);
    let o = at(
        &m,
        &[
            "sms",
            "send",
            "--to",
            "+491701234567",
            "--text",
            "x",
            "--report",
            "--json",
        ],
    );
    assert_eq!(code(&o), 1, "{:?}", text(&o));
    let v = json(&o);
    assert_eq!(
        (v["complete"].as_bool(), v["delivered"].as_bool()),
        (Some(true), Some(false))
    );
    assert_eq!(v["reports"][0]["status"], "46");
    assert_eq!(v["reports"][0]["description"], "validity period expired");
}

#[test]
fn otp_send_and_verify() {
    let m = VirtualModem::start(&[]);
    let db = m.dir.join("otp.sqlite");
    let trace = m.dir.join("otp.trace");
    let db_s = db.to_str().unwrap();
    let o = run(&[
        "--modem",
        m.path(),
        "--trace",
        trace.to_str().unwrap(),
        "otp",
        "send",
        "--to",
        "+491701234567",
        "--amount",
        "1250",
        "--payee",
        "ACME Shop",
        "--origin",
        "shop.example",
        "--db",
        db_s,
        "--json",
    ]);
    assert!(o.status.success(), "{:?}", text(&o));
    let v = json(&o);
    let id = v["id"].as_str().unwrap().to_string();
    assert_eq!(id.len(), 32);
    assert_eq!(v["validity_period_seconds"], 300);

    // The SMS as the network got it: amount and payee in clear, origin-bound last line.
    let sent = wait_sent(&m, 1);
    let sms = sent[0]["text"].as_str().unwrap().to_string();
    assert_eq!(sent[0]["validity_seconds"], 300);
    assert!(
        sms.contains("12.50 EUR") && sms.contains("ACME Shop"),
        "{sms}"
    );
    let last = sms.lines().last().unwrap();
    let code_str = last
        .strip_prefix("@shop.example #")
        .expect(&sms)
        .to_string();
    assert!(code_str.len() == 6 && code_str.bytes().all(|b| b.is_ascii_digit()));

    // The code is nowhere but in the SMS: not on stdout or stderr, not in the AT trace (nor
    // the PDU that carries it), not in the database.
    let (out, err) = text(&o);
    assert!(!out.contains(&code_str) && !err.contains(&code_str));
    let t = std::fs::read_to_string(&trace).unwrap();
    assert!(!t.contains(&code_str), "{t}");
    let pdu = sent[0]["pdu"].as_str().unwrap().to_ascii_uppercase();
    assert!(
        !t.to_ascii_uppercase().contains(&pdu[pdu.len() - 20..]),
        "{t}"
    );
    assert!(t.contains("blanked"), "{t}");

    let verify = |amount: &str, payee: &str, c: &str| {
        run(&[
            "otp", "verify", "--db", db_s, "--id", &id, "--code", c, "--amount", amount, "--payee",
            payee, "--json",
        ])
    };
    // Any change to the transaction refuses the code.
    let o = verify("1251", "ACME Shop", &code_str);
    assert_eq!(code(&o), 1, "{:?}", text(&o));
    assert_eq!(json(&o)["reason"], "mismatch");
    let o = verify("1250", "ACME Shoq", &code_str);
    assert_eq!(code(&o), 1);
    assert!(!text(&o).0.contains(&code_str) && !text(&o).1.contains(&code_str));
    // The right one is accepted once.
    let o = verify("1250", "ACME Shop", &code_str);
    assert_eq!(code(&o), 0, "{:?}", text(&o));
    assert_eq!(json(&o)["accepted"], true);
    let o = verify("1250", "ACME Shop", &code_str);
    assert_eq!(
        (code(&o), json(&o)["reason"].clone()),
        (1, json!("already_used"))
    );

    // Five wrong codes block it, the right one included afterwards.
    let o = at(
        &m,
        &[
            "otp",
            "send",
            "--to",
            "+491701234567",
            "--amount",
            "99",
            "--payee",
            "Bob",
            "--db",
            db_s,
            "--json",
        ],
    );
    let id2 = json(&o)["id"].as_str().unwrap().to_string();
    let sent = wait_sent(&m, 2);
    let c2 = sent[1]["text"]
        .as_str()
        .unwrap()
        .split("Code ")
        .nth(1)
        .unwrap()[..6]
        .to_string();
    let wrong = if c2 == "000000" { "000001" } else { "000000" };
    for _ in 0..5 {
        let o = run(&[
            "otp", "verify", "--db", db_s, "--id", &id2, "--code", wrong, "--amount", "99",
            "--payee", "Bob",
        ]);
        assert_eq!(code(&o), 1);
    }
    let o = run(&[
        "otp", "verify", "--db", db_s, "--id", &id2, "--code", &c2, "--amount", "99", "--payee",
        "Bob", "--json",
    ]);
    assert_eq!(
        (code(&o), json(&o)["reason"].clone()),
        (1, json!("blocked"))
    );

    // A third send to the same number is fine, the fourth within 10 minutes is refused.
    let args = [
        "otp",
        "send",
        "--to",
        "+491701234567",
        "--amount",
        "5",
        "--payee",
        "C",
        "--db",
        db_s,
    ];
    assert_eq!(code(&at(&m, &args)), 0);
    let o = at(&m, &args);
    assert_eq!(code(&o), 1, "{:?}", text(&o));
    assert!(text(&o).1.contains("try again in"), "{:?}", text(&o));
    assert_eq!(wait_sent(&m, 3).len(), 3);

    // Below the limit no OTP is needed: nothing sent, nothing stored.
    let o = at(
        &m,
        &[
            "otp",
            "send",
            "--to",
            "+491709999999",
            "--amount",
            "500",
            "--payee",
            "D",
            "--db",
            db_s,
            "--limit",
            "1000",
            "--json",
        ],
    );
    assert!(o.status.success(), "{:?}", text(&o));
    assert_eq!(
        (json(&o)["required"].clone(), json(&o)["id"].clone()),
        (json!(false), Value::Null)
    );
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(m.sent().len(), 3);
}

#[test]
fn otp_over_a_failing_modem_is_void() {
    let m = VirtualModem::start(&["--faults", "cms500"]);
    let db = m.dir.join("otp.sqlite");
    let o = at(
        &m,
        &[
            "otp",
            "send",
            "--to",
            "+491701234567",
            "--amount",
            "1",
            "--payee",
            "E",
            "--db",
            db.to_str().unwrap(),
            "--json",
        ],
    );
    assert_eq!(code(&o), 1, "{:?}", text(&o));
    assert_eq!(json(&o)["complete"], false);
}

#[test]
fn bad_input_is_exit_2_before_any_modem_is_opened() {
    let nowhere = "/dev/simlab-no-such-modem";
    let long: String = "x".repeat(200);
    for args in [
        vec![
            "--modem",
            nowhere,
            "sms",
            "send",
            "--to",
            "+49170abc",
            "--text",
            "x",
        ],
        vec![
            "--modem",
            nowhere,
            "sms",
            "send",
            "--to",
            "+491701234567",
            "--text",
            &long,
            "--max-parts",
            "1",
        ],
        vec![
            "--modem",
            nowhere,
            "sms",
            "send",
            "--to",
            "+491701234567",
            "--text",
            "x",
            "--validity",
            "99999999999",
        ],
        vec!["sms", "encode", "--to", "", "--text", "x"],
        vec![
            "sms",
            "decode",
            "0001000B917228001011F100000CC8329BFD065DDF723639",
        ],
        vec!["sms", "decode", "zz"],
        vec!["sms", "decode", "0001"],
        vec![
            "--modem",
            nowhere,
            "otp",
            "send",
            "--to",
            "+491701234567",
            "--amount",
            "1",
            "--payee",
            "A\n@evil.example #123456",
        ],
        vec![
            "--modem",
            nowhere,
            "otp",
            "send",
            "--to",
            "+491701234567",
            "--amount",
            "1",
            "--payee",
            "A",
            "--origin",
            "bad_host",
        ],
        vec![
            "--modem",
            nowhere,
            "otp",
            "send",
            "--to",
            "+491701234567",
            "--amount",
            "1",
            "--payee",
            "A",
            "--ttl",
            "3600",
        ],
        vec![
            "--modem",
            nowhere,
            "otp",
            "send",
            "--to",
            "+491701234567",
            "--amount",
            "-5",
            "--payee",
            "A",
        ],
        vec![
            "otp",
            "verify",
            "--db",
            "/nonexistent",
            "--id",
            "xyz",
            "--code",
            "1",
            "--amount",
            "1",
            "--payee",
            "A",
        ],
        vec![
            "otp",
            "verify",
            "--db",
            "/nonexistent",
            "--id",
            "00000000000000000000000000000000",
            "--code",
            "12a",
            "--amount",
            "1",
            "--payee",
            "A",
        ],
        vec!["emulate", "modem", "--faults", "bogus"],
    ] {
        let o = run(&args);
        assert_eq!(code(&o), 2, "{args:?}: {:?}", text(&o));
        assert!(!text(&o).1.is_empty(), "{args:?} says why");
    }
    let o = run(&[
        "sms",
        "decode",
        "0001000B917228001011F100000CC8329BFD065DDF723639",
    ]);
    assert!(
        text(&o).1.contains("truncated in user data"),
        "{:?}",
        text(&o)
    );
}

#[test]
fn device_failures_are_exit_1_and_the_port_is_held_and_released() {
    let o = run(&["--modem", "/dev/simlab-no-such-modem", "modem", "info"]);
    assert_eq!(code(&o), 1, "{:?}", text(&o));
    assert!(text(&o).1.contains("cannot open"), "{:?}", text(&o));

    let m = VirtualModem::start(&[]);
    // A watcher holds the port; a second simlab is told who has it.
    let log = m.dir.join("watcher.log");
    let mut watcher = simlab_hil::Process::spawn(
        "simlab sms watch",
        Command::new(simlab_hil::simlab_bin())
            .args(["--modem", m.path(), "sms", "watch", "--timeout", "30"])
            .current_dir(workspace_root())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap()),
    );
    // Only once it says it is watching does it hold the port (asking earlier would race it).
    let deadline = Instant::now() + Duration::from_secs(10);
    while !std::fs::read_to_string(&log)
        .unwrap_or_default()
        .contains("watching")
    {
        assert!(
            watcher.try_wait().is_none(),
            "the watcher exited: {}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        assert!(Instant::now() < deadline, "the watcher did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    let o = at(&m, &["modem", "info"]);
    assert_eq!(code(&o), 1, "{:?}", text(&o));
    assert!(text(&o).1.contains("in use"), "{:?}", text(&o));
    assert!(text(&o).1.contains("simlab (pid"), "{:?}", text(&o));
    let d = at(&m, &["modem", "doctor", "--json"]);
    assert_eq!(code(&d), 1);
    let d = json(&d);
    assert_eq!(d["candidates"][0]["holders"][0]["name"], "simlab", "{d}");
    // Ctrl-C: the watcher exits 0 and the port is free again.
    let (status, _) = watcher.stop_with(libc::SIGINT, Duration::from_secs(10));
    assert!(status.is_some_and(|s| s.success()), "{status:?}");
    let o = at(&m, &["modem", "info", "--json"]);
    assert!(o.status.success(), "{:?}", text(&o));
}

#[test]
fn doctor_says_what_to_fix() {
    let m = VirtualModem::start(&[]);
    let o = at(&m, &["modem", "doctor", "--json"]);
    let v = json(&o);
    assert_eq!(code(&o), 0, "{v}");
    assert_eq!(v["port"], m.path());

    let m = VirtualModem::start(&["--smsc", "", "--profile", "huawei"]);
    let o = at(&m, &["modem", "doctor", "--json"]);
    assert_eq!(code(&o), 1, "{:?}", text(&o));
    let v = json(&o);
    let smsc = v["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "smsc")
        .unwrap()
        .clone();
    assert_eq!(smsc["status"], "fail");
    assert!(smsc["fix"].as_str().unwrap().contains("AT+CSCA"));
    let o = at(&m, &["modem", "doctor"]);
    assert!(text(&o).0.contains("FAIL smsc"), "{:?}", text(&o));

    // A PIN-locked SIM.
    let pin = simlab_hil::profile("usim-pin-enabled.toml");
    let m = VirtualModem::start(&["--sim", pin.to_str().unwrap()]);
    let o = at(&m, &["modem", "doctor", "--json"]);
    assert_eq!(code(&o), 1);
    assert!(
        o.stdout.windows(13).any(|w| w == b"the SIM wants"),
        "{:?}",
        text(&o)
    );
    let o = at(&m, &["sms", "send", "--to", OWN, "--text", "x"]);
    assert_eq!(code(&o), 1);
    assert!(text(&o).1.contains("SIM PIN"), "{:?}", text(&o));
}

#[test]
fn modem_info_names_every_field() {
    let m = VirtualModem::start(&["--profile", "huawei"]);
    let v = json(&at(&m, &["modem", "info", "--json"]));
    assert_eq!(v["manufacturer"], "huawei");
    assert_eq!(v["model"], "E3372");
    assert_eq!(v["imsi"], "001010000000099");
    assert_eq!(v["signal"]["dbm"], -73);
    assert_eq!(v["registration"]["stat"], 1);
    assert_eq!(v["smsc"], "+491700000000");
    assert!(v["imei"].is_string() && v["operator"].is_string());
}

#[test]
fn the_sim_in_the_modem_is_a_card() {
    let m = VirtualModem::start(&[]);
    let o = at(&m, &["card", "read", "IMSI", "--json"]);
    assert!(o.status.success(), "{:?}", text(&o));
    assert_eq!(json(&o)["decoded"], "001010000000099");
}

/// Every published PDU in fixtures/sms/pdus.txt decodes through the CLI to the fields the
/// fixture names (type, addresses, DCS, text, MR, status, SCTS, UDH).
#[test]
fn published_pdus_decode_through_the_cli() {
    let fixtures = std::fs::read_to_string(workspace_root().join("fixtures/sms/pdus.txt")).unwrap();
    let mut checked = 0;
    for record in fixtures.split("\n\n") {
        let fields: std::collections::BTreeMap<&str, &str> = record
            .lines()
            .filter(|l| !l.starts_with('#'))
            .filter_map(|l| {
                l.split_once(": ")
                    .or_else(|| l.strip_suffix(':').map(|k| (k, "")))
            })
            .collect();
        let (Some(pdu), None) = (fields.get("pdu"), fields.get("error")) else {
            continue;
        };
        let mut args = vec!["sms", "decode", pdu, "--json"];
        if fields.get("sca") == Some(&"no") {
            args.push("--no-sca");
        }
        let o = run(&args);
        assert!(o.status.success(), "{pdu}: {:?}", text(&o));
        let v = json(&o);
        if let Some(t) = fields.get("type") {
            assert_eq!(v["type"], *t, "{pdu}");
        }
        for key in ["oa", "da", "ra"] {
            if let Some(a) = fields.get(key) {
                assert_eq!(v[key], *a, "{pdu} {key}");
            }
        }
        for key in ["dcs", "status"] {
            if let Some(h) = fields.get(key) {
                assert_eq!(v[key], h.to_ascii_lowercase(), "{pdu} {key}");
            }
        }
        if let Some(mr) = fields.get("mr") {
            assert_eq!(v["mr"].to_string(), *mr, "{pdu} mr");
        }
        if let Some(s) = fields.get("scts") {
            assert_eq!(v["scts"], *s, "{pdu} scts");
        }
        if let Some(u) = fields.get("udh") {
            let want = if *u == "none" {
                Value::Null
            } else {
                json!(u.to_ascii_lowercase())
            };
            assert_eq!(v["udh"], want, "{pdu} udh");
        }
        if let Some(t) = fields.get("text").filter(|t| !t.contains('\\')) {
            assert_eq!(v["text"], *t, "{pdu} text");
        }
        checked += 1;
    }
    assert!(checked >= 20, "only {checked} PDUs checked");
}
