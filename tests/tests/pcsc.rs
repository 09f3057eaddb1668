//! The card model behind the real PC/SC stack: pcscd with vsmartcard's vpcd driver, the
//! `simlab emulate card` virtual card, and the `simlab` CLI (or pyscard) as the client.
//!
//! Each test holds a [`Bench`]: a pcscd of its own (one at a time, the daemon's socket is a
//! fixed path) with the two readers "Virtual PCD 00 00" and "Virtual PCD 00 01".

use simlab_hil::{Bench, Process, READERS, json, profile, readers_json, simlab, text};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::Duration;

const READER0: &str = READERS[0].0;

fn p(path: &std::path::Path) -> &str {
    path.to_str().unwrap()
}

#[test]
fn readers_show_both_virtual_readers_and_a_card_arriving() {
    let Some(bench) = Bench::start() else { return };
    let before = readers_json();
    let names: Vec<&str> = before
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|r| r["name"].as_str())
        .collect();
    assert_eq!(names, [READERS[0].0, READERS[1].0], "{before}");
    assert!(
        before
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["card_present"] == false)
    );

    let _card = bench.insert(1, &profile("usim-milenage.toml"), &[]);
    let after = readers_json();
    assert_eq!(after[1]["card_present"], true, "{after}");
    assert_eq!(after[1]["atr"], "3b199673696d6c61622d7631");
    assert_eq!(after[0]["card_present"], false);
    let o = simlab(&["readers"]);
    assert!(
        text(&o)
            .0
            .contains("[1] Virtual PCD 00 01  (card, ATR 3b1996"),
        "{:?}",
        text(&o)
    );
}

#[test]
fn card_commands_through_pcscd_match_the_in_process_card() {
    let Some(bench) = Bench::start() else { return };
    let usim = profile("usim-milenage.toml");
    let _card = bench.insert(0, &usim, &[]);

    let emulated = json(&simlab(&["--emulate", p(&usim), "card", "info", "--json"]));
    for reader in [READER0, "0", "PCD 00 00"] {
        let o = simlab(&["--reader", reader, "card", "info", "--json"]);
        assert!(o.status.success(), "{reader}: {:?}", text(&o));
        assert_eq!(json(&o), emulated, "--reader {reader}");
    }
    let o = simlab(&["--reader", READER0, "card", "read", "IMSI", "--json"]);
    assert_eq!(json(&o)["decoded"], "001010123456789");
    let o = simlab(&["--reader", READER0, "card", "read", "MSISDN"]);
    assert!(text(&o).0.contains("+491700000002"));

    // GSM context, checked against the host's computation from the profile.
    let rand = "23553cbe9637a89d218ae64dae47bf35";
    let o = simlab(&[
        "--reader",
        READER0,
        "card",
        "auth",
        "--rand",
        rand,
        "--check",
        p(&usim),
        "--json",
    ]);
    assert!(o.status.success(), "{:?}", text(&o));
    let v = json(&o);
    assert_eq!(
        (v["sres"].as_str(), v["check"].as_str()),
        (Some("46f8416a"), Some("match"))
    );

    // 3G: TS 35.208 test set 1's AUTN is fresh once; the replay gets AUTS, which --check verifies.
    let autn = "55f328b43577b9b94a9ffac354dfafb3";
    let first = json(&simlab(&[
        "--reader",
        READER0,
        "card",
        "auth",
        "--rand",
        rand,
        "--autn",
        autn,
        "--check",
        p(&usim),
        "--json",
    ]));
    assert_eq!(
        (first["res"].as_str(), first["check"].as_str()),
        (Some("a54211d5e3ba50bf"), Some("match"))
    );
    let again = json(&simlab(&[
        "--reader",
        READER0,
        "card",
        "auth",
        "--rand",
        rand,
        "--autn",
        autn,
        "--check",
        p(&usim),
        "--json",
    ]));
    assert!(again["auts"].is_string(), "{again}");
    assert_eq!(again["check"], "match");

    // Checked against the wrong profile: exit 1, mismatch.
    let o = simlab(&[
        "--reader",
        READER0,
        "card",
        "auth",
        "--rand",
        rand,
        "--check",
        p(&profile("sim-comp128v1.toml")),
    ]);
    assert_eq!(o.status.code(), Some(1), "{:?}", text(&o));
}

#[test]
fn pin_blocking_updates_and_counters_persist_across_restarts() {
    let Some(bench) = Bench::start() else { return };
    let state = simlab_hil::temp_path("pin.state");
    let card_profile = profile("usim-pin-enabled.toml");
    let args = ["--state", p(&state)];
    let mut card = bench.insert(0, &card_profile, &args);

    let verify = |pin: &str| {
        json(&simlab(&[
            "--reader",
            READER0,
            "card",
            "verify-pin",
            "--pin",
            pin,
            "--json",
        ]))
    };
    assert_eq!(verify("0000")["tries_left"], 2);
    // The IMSI is protected; with the PIN it reads.
    let o = simlab(&["--reader", READER0, "card", "read", "IMSI"]);
    assert_eq!(o.status.code(), Some(1));
    let o = simlab(&[
        "--reader", READER0, "card", "read", "IMSI", "--pin", "1234", "--json",
    ]);
    assert_eq!(json(&o)["decoded"], "001010000000007");

    // The right PIN refilled the counter; one wrong try now is what must survive the restart.
    assert_eq!(verify("9999")["tries_left"], 2);

    // Update with ADM (a raw 8-byte key in this profile) and read back.
    let spn = "0173696d6c61622d68696cffffffffffff";
    let o = simlab(&[
        "--reader",
        READER0,
        "card",
        "update",
        "SPN",
        "--data",
        spn,
        "--adm",
        "0123456789abcdef",
        "--json",
    ]);
    assert!(o.status.success(), "{:?}", text(&o));
    assert_eq!(json(&o)["verified"], true);

    // Ctrl-C stops the emulator cleanly; the state file keeps everything.
    let (status, _) = card.stop_with(libc::SIGINT, Duration::from_secs(5));
    assert_eq!(
        status.map(|s| s.success()),
        Some(true),
        "emulator did not exit cleanly on Ctrl-C"
    );
    simlab_hil::wait_for_card(READER0, false, Duration::from_secs(5));
    let _card = bench.insert(0, &card_profile, &args);
    let o = simlab(&["--reader", READER0, "card", "read", "SPN", "--json"]);
    assert_eq!(json(&o)["decoded"], "simlab-hil");
    assert_eq!(
        verify("0000")["tries_left"],
        1,
        "the spent try survived the restart"
    );
    let blocked = verify("0000");
    assert_eq!(
        (blocked["blocked"].as_bool(), blocked["tries_left"].as_u64()),
        (Some(true), Some(0))
    );
    // Blocked means blocked, even for the right PIN.
    assert_eq!(verify("1234")["blocked"], true);
    let info = json(&simlab(&["--reader", READER0, "card", "info", "--json"]));
    assert_eq!(
        (info["pin1_tries"].as_u64(), info["puk1_tries"].as_u64()),
        (Some(0), Some(10))
    );
}

#[test]
fn pyscard_runs_the_gsm_sequence_against_the_virtual_card() {
    let Some(bench) = Bench::start() else { return };
    if !simlab_hil::require_file(
        "/usr/lib/python3/dist-packages/smartcard/__init__.py",
        "python3-pyscard",
    ) {
        return;
    }
    let _card = bench.insert(0, &profile("sim-comp128v1.toml"), &[]);
    let script = simlab_hil::workspace_root().join("tests/py/pyscard_gsm.py");
    let o = Command::new("/usr/bin/python3")
        .envs(simlab_hil::bench_env())
        .arg(script)
        .args([READER0, "2233445566778899aabbccddeeff0011"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{:?}", text(&o));
    let v = json(&o);
    // REFERENCE.md's COMP128-1 vector, through pcscd, vpcd and the card model.
    assert_eq!(
        (v["sres"].as_str(), v["kc"].as_str()),
        (Some("3c0dcfbd"), Some("f84a72dc312f6000"))
    );
    assert_eq!(v["imsi_ef"], "080910100000000010");
    assert_eq!(
        (v["run_gsm_sw"].as_str(), v["get_response_sw"].as_str()),
        (Some("9f0c"), Some("9000"))
    );
}

#[test]
fn trace_records_every_apdu_and_hides_pins() {
    let Some(bench) = Bench::start() else { return };
    let _card = bench.insert(0, &profile("usim-pin-enabled.toml"), &[]);
    let host_trace = simlab_hil::temp_path("host.trace");
    let o = simlab(&[
        "--reader",
        READER0,
        "--trace",
        p(&host_trace),
        "card",
        "read",
        "IMSI",
        "--pin",
        "1234",
    ]);
    assert!(o.status.success(), "{:?}", text(&o));
    let t = std::fs::read_to_string(&host_trace).unwrap();
    assert!(
        t.contains(">> 00 20 00 01 08 ** ** ** ** ** ** ** **  VERIFY"),
        "{t}"
    );
    assert!(
        t.contains("READ BINARY") && t.contains("<< 90 00  success"),
        "{t}"
    );
    assert!(!t.contains("31 32 33 34"), "PIN in trace: {t}");
    // Card side: the emulator's own transcript hides the same bytes.
    drop(_card);
    simlab_hil::wait_for_card(READER0, false, Duration::from_secs(5));
    let card_trace = simlab_hil::temp_path("card.trace");
    let _card = bench.insert(
        0,
        &profile("usim-pin-enabled.toml"),
        &["--trace", p(&card_trace)],
    );
    let o = simlab(&["--reader", READER0, "card", "verify-pin", "--pin", "1234"]);
    assert!(o.status.success());
    let t = std::fs::read_to_string(&card_trace).unwrap();
    assert!(
        t.contains("<< 00 20 00 01 08 ** ** ** ** ** ** ** **  VERIFY"),
        "{t}"
    );
    assert!(!t.contains("31 32 33 34"), "PIN in trace: {t}");
}

#[test]
fn bad_readers_and_missing_cards_are_clear_errors() {
    let Some(_bench) = Bench::start() else { return };
    let o = simlab(&["--reader", "No Such Reader", "card", "info"]);
    assert_eq!(o.status.code(), Some(2));
    let err = text(&o).1;
    assert!(
        err.contains("No Such Reader") && err.contains("Virtual PCD 00 00"),
        "{err}"
    );
    let o = simlab(&["--reader", "7", "card", "info"]);
    assert_eq!(o.status.code(), Some(2), "{:?}", text(&o));
    let o = simlab(&["--reader", READER0, "card", "info"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o).1.contains("no card in reader"), "{:?}", text(&o));
    let o = simlab(&["--reader", READER0, "--wait", "0.5", "card", "info"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o).1.contains("after waiting"), "{:?}", text(&o));
}

#[test]
fn a_reader_held_exclusively_by_another_process_is_reported() {
    let Some(bench) = Bench::start() else { return };
    if !simlab_hil::require_file(
        "/usr/lib/python3/dist-packages/smartcard/__init__.py",
        "python3-pyscard",
    ) {
        return;
    }
    let _card = bench.insert(0, &profile("sim-comp128v1.toml"), &[]);
    let holder_src = format!(
        "from smartcard.System import readers\nfrom smartcard.scard import SCARD_SHARE_EXCLUSIVE\nimport sys\nr = next(r for r in readers() if str(r) == {READER0:?})\nc = r.createConnection()\nc.connect(mode=SCARD_SHARE_EXCLUSIVE)\nprint('held', flush=True)\nsys.stdin.read()\n"
    );
    let mut holder = Process::spawn(
        "pyscard holder",
        Command::new("/usr/bin/python3")
            .envs(simlab_hil::bench_env())
            .args(["-c", &holder_src])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped()),
    );
    let mut line = String::new();
    BufReader::new(holder_stdout(&mut holder))
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line.trim(), "held");
    let o = simlab(&["--reader", READER0, "card", "info"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        text(&o).1.contains("in use by another process"),
        "{:?}",
        text(&o)
    );
}

fn holder_stdout(p: &mut Process) -> impl Read + '_ {
    p.stdout().expect("piped stdout")
}

#[test]
fn garbage_from_a_card_is_a_clear_error() {
    let Some(bench) = Bench::start() else { return };
    // A broken "card": a correct ATR, then one byte where an R-APDU should be.
    let (reader, port) = (READERS[1].0, bench.port(1));
    let card = std::thread::spawn(move || {
        let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let atr = [0x3B, 0x02, 0x14, 0x50];
        let mut answered = 0;
        while answered < 3 {
            let mut len = [0u8; 2];
            if s.read_exact(&mut len).is_err() {
                return;
            }
            let mut payload = vec![0u8; u16::from_be_bytes(len) as usize];
            if s.read_exact(&mut payload).is_err() {
                return;
            }
            let reply: &[u8] = match payload.as_slice() {
                [0x04] => &atr,
                [_] => continue,
                _ => {
                    answered += 1;
                    &[0x42]
                }
            };
            let mut frame = (reply.len() as u16).to_be_bytes().to_vec();
            frame.extend_from_slice(reply);
            s.write_all(&frame).unwrap();
        }
    });
    simlab_hil::wait_for_card(reader, true, Duration::from_secs(10));
    let o = simlab(&["--reader", reader, "card", "info"]);
    assert_eq!(o.status.code(), Some(1), "{:?}", text(&o));
    assert!(text(&o).1.contains("no status word"), "{:?}", text(&o));
    drop(card);
}

#[test]
fn a_card_pulled_mid_command_is_reported_and_comes_back_intact() {
    let Some(bench) = Bench::start() else { return };
    let state = simlab_hil::temp_path("pull.state");
    // The emulator pulls the card instead of answering its 5th APDU, then reinserts it.
    let _card = bench.insert(
        0,
        &profile("usim-pin-enabled.toml"),
        &["--state", p(&state), "--pull-after", "4"],
    );
    let first = simlab(&[
        "--reader",
        READER0,
        "card",
        "verify-pin",
        "--pin",
        "0000",
        "--json",
    ]);
    assert_eq!(json(&first)["tries_left"], 2, "{:?}", text(&first));
    let o = simlab(&["--reader", READER0, "card", "info"]);
    assert_eq!(o.status.code(), Some(1), "{:?}", text(&o));
    assert!(text(&o).1.contains("removed"), "{:?}", text(&o));
    simlab_hil::wait_for_card(READER0, true, Duration::from_secs(10));
    let info = json(&simlab(&["--reader", READER0, "card", "info", "--json"]));
    assert_eq!(
        info["pin1_tries"], 2,
        "the counter spent before the pull is kept: {info}"
    );
    assert_eq!(info["iccid"], "8988211000000530165");
}

#[test]
fn no_pcscd_is_a_clear_error() {
    if !simlab_hil::require("pcscd") {
        return;
    }
    let _idle = simlab_hil::without_pcscd();
    for args in [&["readers"][..], &["--reader", "0", "card", "info"][..]] {
        let o = simlab(args);
        assert_eq!(o.status.code(), Some(1), "{args:?}");
        assert!(
            text(&o).1.contains("PC/SC service is not running"),
            "{:?}",
            text(&o)
        );
    }
}

#[test]
fn the_virtual_card_comes_back_when_pcscd_restarts() {
    let Some(mut bench) = Bench::start() else {
        return;
    };
    let mut card = bench.insert(0, &profile("sim-comp128v1.toml"), &[]);
    bench.restart_pcscd();
    simlab_hil::wait_for_card(READER0, true, Duration::from_secs(10));
    let o = simlab(&[
        "--reader",
        READER0,
        "card",
        "auth",
        "--rand",
        "2233445566778899aabbccddeeff0011",
        "--json",
    ]);
    assert_eq!(json(&o)["sres"], "3c0dcfbd", "{:?}", text(&o));
    assert!(
        card.try_wait().is_none(),
        "the emulator must survive a pcscd restart"
    );
}
