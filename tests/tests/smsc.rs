//! The virtual SMS network (`simlab emulate smsc`) on real ptys: phones reach each other by
//! number through simlab and through gammu, a service message (8-bit, TP-PID 0xC1) reaches the
//! sender's service node whatever its destination, status reports say what happened to unknown
//! numbers and lost messages, delays hold messages, and bad input is exit 2.

use serde_json::Value;
use simlab_hil::{Process, gammu, require, simlab_timeout, temp_path, text};
use simlab_modem::backend::{AtBackend, SendOptions, SmsBackend};
use std::path::PathBuf;
use std::process::Output;
use std::time::{Duration, Instant};

const A: &str = "+491711000001";
const B: &str = "+491712000002";
const NODE: &str = "+491710000000";
const T: Duration = Duration::from_secs(60);

/// A running `simlab emulate smsc`, stopped with SIGTERM and waited for on drop.
struct Net {
    process: Process,
    links: Vec<PathBuf>,
    log: PathBuf,
    started: Value,
}

impl Net {
    /// `phones` and `nodes` are (link name, spec after `LINK=`); `extra` more arguments.
    fn start(name: &str, phones: &[(&str, &str)], nodes: &[(&str, &str)], extra: &[&str]) -> Net {
        let mut args: Vec<String> = ["--json", "emulate", "smsc"].map(String::from).to_vec();
        let mut links = Vec::new();
        for (flag, list) in [("--phone", phones), ("--node", nodes)] {
            for (link, spec) in list {
                let path = temp_path(&format!("{name}-{link}"));
                args.push(flag.to_string());
                args.push(format!("{}={spec}", path.display()));
                links.push(path);
            }
        }
        args.extend(extra.iter().map(|s| s.to_string()));
        // One JSON line on stdout once every modem is up.
        let (process, started, log) = simlab_hil::spawn_started(&format!("{name}-smsc"), &args);
        Net {
            process,
            links,
            log,
            started,
        }
    }

    fn link(&self, i: usize) -> &str {
        self.links[i].to_str().expect("utf-8 temp path")
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Stops it with SIGTERM; returns whether it exited cleanly.
    fn stop(&mut self) -> bool {
        let (status, _) = self
            .process
            .stop_with(libc::SIGTERM, Duration::from_secs(10));
        status.is_some_and(|s| s.success())
    }
}

fn at(link: &str, args: &[&str]) -> Output {
    let mut all = vec!["--modem", link];
    all.extend_from_slice(args);
    simlab_timeout(&all, T)
}

fn code(o: &Output) -> i32 {
    o.status.code().unwrap_or(-1)
}

/// The messages in a modem's storage (`sms list --json`).
fn list(link: &str) -> Vec<Value> {
    let o = at(link, &["--json", "sms", "list"]);
    assert!(o.status.success(), "{:?}", text(&o));
    serde_json::from_slice::<Vec<Value>>(&o.stdout)
        .unwrap_or_else(|e| panic!("sms list: {e}: {:?}", text(&o)))
}

/// Lists until a message satisfying `f` is there (at most `timeout`).
fn wait_for(link: &str, timeout: Duration, f: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(m) = list(link).into_iter().find(&f) {
            return m;
        }
        assert!(Instant::now() < deadline, "never arrived on {link}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn send(link: &str, to: &str, body: &str, report: bool) -> Output {
    let mut args = vec!["--json", "sms", "send", "--to", to, "--text", body];
    if report {
        args.push("--report");
    }
    at(link, &args)
}

#[test]
fn a_phone_reaches_another_by_number_with_a_delivered_report() {
    let mut net = Net::start(
        "bynumber",
        &[("a", A), ("b", "fixtures/cards/usim-milenage.toml")],
        &[],
        &[],
    );
    // B's number is its SIM profile's msisdn.
    let b_number = "+491700000002";
    assert_eq!(net.started["role"], "smsc");
    assert_eq!(net.started["phones"][0]["number"], A);
    assert_eq!(net.started["phones"][0]["link"], net.link(0));
    assert_eq!(net.started["phones"][1]["number"], b_number);

    let o = send(net.link(0), b_number, "hello", true);
    assert!(o.status.success(), "{:?}\n{}", text(&o), net.log());
    let v: Value = serde_json::from_slice(&o.stdout).expect("json");
    assert_eq!(v["delivered"], true, "{v}");
    assert_eq!(v["reports"][0]["status"], "00");
    let m = wait_for(net.link(1), Duration::from_secs(10), |m| {
        m["text"] == "hello"
    });
    assert_eq!(m["oa"], A);
    // The log names numbers, never bodies.
    let log = net.log();
    assert!(log.contains(A) && !log.contains("hello"), "{log}");
    let links = net.links.clone();
    assert!(net.stop(), "{}", net.log());
    for l in links {
        assert!(
            std::fs::symlink_metadata(&l).is_err(),
            "{} left",
            l.display()
        );
    }
}

#[test]
fn gammu_on_one_phone_reaches_the_other() {
    if !require("gammu") {
        return;
    }
    let net = Net::start("gammu", &[("a", A), ("b", B)], &[], &[]);
    let rc = temp_path("gammu-b.rc");
    std::fs::write(
        &rc,
        format!(
            "[gammu]\ndevice = {}\nconnection = at\nlogfile = {}\nlogformat = textall\n",
            net.link(1),
            temp_path("gammu-b.log").display()
        ),
    )
    .expect("gammurc");
    let o = gammu(&rc, &["sendsms", "TEXT", A, "-text", "from gammu on B"]);
    assert!(o.status.success(), "{:?}\n{}", text(&o), net.log());
    let m = wait_for(net.link(0), Duration::from_secs(10), |m| {
        m["text"] == "from gammu on B"
    });
    assert_eq!(m["oa"], B);
}

#[test]
fn a_service_message_reaches_the_senders_service_node() {
    let net = Net::start(
        "pid",
        &[("a", A), ("b", B)],
        &[
            ("sn", &format!("{NODE}:+49171")),
            ("other", "+4930000000:+4930"),
        ],
        &[],
    );
    assert_eq!(net.started["nodes"][0]["number"], NODE);
    assert_eq!(net.started["nodes"][0]["prefixes"][0], "+49171");
    let data: Vec<u8> = (0..200u16).map(|i| (i * 7) as u8).collect();
    {
        let mut a = AtBackend::open(net.links[0].as_path(), Default::default()).expect("open A");
        // To a number nobody has: the PID takes it to A's node all the same; 200 octets are
        // two concatenated parts.
        let r = a
            .send_data(
                &simlab_sms::Address::parse("+4912345").unwrap(),
                &data,
                &SendOptions {
                    protocol_identifier: 0xC1,
                    ..SendOptions::default()
                },
            )
            .expect("send_data");
        assert_eq!(r.parts, 2);
    }
    let mut node = AtBackend::open(net.links[2].as_path(), Default::default()).expect("open node");
    let deadline = Instant::now() + Duration::from_secs(10);
    let got = loop {
        let got = node.incoming().expect("incoming");
        if !got.is_empty() || Instant::now() > deadline {
            break got;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(got.len(), 1, "{got:?}\n{}", net.log());
    assert_eq!(got[0].from, A);
    assert_eq!(got[0].protocol_identifier, 0xC1);
    assert_eq!(got[0].data.as_deref(), Some(&data[..]));
    assert_eq!(got[0].text, None);
    assert!(net.log().contains("routed"), "{}", net.log());
    // The other node and B saw nothing.
    assert!(list(net.link(1)).is_empty());
    assert!(list(net.link(3)).is_empty());
}

#[test]
fn unknown_numbers_lost_and_delayed_messages() {
    let delay = 3000;
    let net = Net::start(
        "faults",
        &[("a", A), ("b", B), ("c", "+4930555")],
        &[],
        &[
            "--drop",
            &format!("{B}=1"),
            "--delay",
            &format!("+4930555={delay}"),
        ],
    );
    // Unknown: a permanent error, exit 1.
    let o = send(net.link(0), "+15550000", "nobody", true);
    assert_eq!(code(&o), 1, "{:?}\n{}", text(&o), net.log());
    let v: Value = serde_json::from_slice(&o.stdout).expect("json");
    assert_eq!(v["reports"][0]["status"], "43", "{v}");
    // --drop B=1: the first is lost (validity period expired), the second arrives.
    let o = send(net.link(0), B, "first", true);
    assert_eq!(code(&o), 1, "{:?}", text(&o));
    let v: Value = serde_json::from_slice(&o.stdout).expect("json");
    assert_eq!(v["reports"][0]["status"], "46", "{v}");
    let o = send(net.link(0), B, "second", true);
    assert!(o.status.success(), "{:?}", text(&o));
    let got = wait_for(net.link(1), Duration::from_secs(10), |m| {
        m["text"] == "second"
    });
    assert_eq!(got["oa"], A);
    assert!(list(net.link(1)).iter().all(|m| m["text"] != "first"));
    // --delay: held, then delivered.
    let sent = Instant::now();
    let o = send(net.link(0), "+4930555", "later", false);
    assert!(o.status.success(), "{:?}", text(&o));
    assert!(list(net.link(2)).is_empty(), "arrived before its delay");
    wait_for(net.link(2), Duration::from_secs(15), |m| {
        m["text"] == "later"
    });
    assert!(sent.elapsed() >= Duration::from_millis(delay));
}

#[test]
fn bad_input_is_exit_2_with_a_reason() {
    let x = temp_path("bad-x");
    let y = temp_path("bad-y");
    let file = temp_path("bad-file");
    std::fs::write(&file, "not a link").unwrap();
    let (x, y, file) = (
        x.display().to_string(),
        y.display().to_string(),
        file.display().to_string(),
    );
    let cases: Vec<(Vec<String>, &str)> = vec![
        (
            vec![
                "--phone".into(),
                format!("{x}={A}"),
                "--phone".into(),
                format!("{y}={A}"),
            ],
            "duplicate number",
        ),
        (
            vec!["--node".into(), format!("{x}={NODE}:+49x")],
            "bad prefix",
        ),
        (
            vec!["--phone".into(), format!("{file}={A}")],
            "not a symlink",
        ),
        (
            vec![
                "--phone".into(),
                format!("{x}=fixtures/cards/sim-xor2g.toml"),
            ],
            "has no msisdn",
        ),
        (
            vec![
                "--phone".into(),
                format!("{x}={A}"),
                "--drop".into(),
                "+4999=1".into(),
            ],
            "no modem has that number",
        ),
        (vec![], "at least one modem"),
    ];
    for (args, reason) in cases {
        let mut all = vec!["emulate", "smsc"];
        all.extend(args.iter().map(String::as_str));
        let o = simlab_timeout(&all, T);
        assert_eq!(code(&o), 2, "{args:?}: {:?}", text(&o));
        assert!(text(&o).1.contains(reason), "{args:?}: {:?}", text(&o));
    }
    assert!(std::fs::symlink_metadata(&x).is_err());
}
