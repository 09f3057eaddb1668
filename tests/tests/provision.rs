//! Provisioning through the real PC/SC stack: blank emulated cards of every supported type in
//! the two vpcd readers of one pcscd, and `simlab card provision` writing, reading back and
//! authenticating them — batches, resumption, pulled cards, wrong ADM keys and the lockout
//! guard.

use simlab_hil::{Bench, Process, READERS, json, profile, simlab, text};
use std::path::{Path, PathBuf};
use std::time::Duration;

const READER0: &str = READERS[0].0;
const READER1: &str = READERS[1].0;

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn batch_csv() -> PathBuf {
    simlab_hil::workspace_root().join("fixtures/provision/batch.csv")
}

/// Removes a card: stops its emulator and waits until pcscd sees the reader empty.
fn pull(card: Process, reader: &str) {
    drop(card);
    simlab_hil::wait_for_card(reader, false, Duration::from_secs(5));
}

fn info(reader: &str) -> serde_json::Value {
    json(&simlab(&["--reader", reader, "card", "info", "--json"]))
}

#[test]
fn every_card_type_is_provisioned_and_verified_end_to_end() {
    let Some(bench) = Bench::start() else { return };
    let target = profile("usim-milenage.toml");
    for (blank, extra) in [
        ("blank-simlab.toml", &[][..]),
        ("blank-sjs1.toml", &[][..]),
        ("blank-sja2.toml", &[][..]),
        ("blank-sja5.toml", &[][..]),
        // A TS 51.011 card cannot report its ADM tries: only --force-adm provisions it. Its
        // ADM key comes from the vendor's letter, not from the subscriber's profile.
        (
            "blank-gr1.toml",
            &["--force-adm", "--adm", "4444444444444444"][..],
        ),
    ] {
        let card = bench.insert(0, &profile(blank), &[]);
        let target = if blank == "blank-gr1.toml" {
            profile("sim-comp128v1.toml")
        } else {
            target.clone()
        };
        let mut args = vec![
            "--reader",
            READER0,
            "card",
            "provision",
            "--profile",
            s(&target),
            "--json",
        ];
        args.extend_from_slice(extra);
        let o = simlab(&args);
        assert!(o.status.success(), "{blank}: {:?}", text(&o));
        let r = json(&o);
        assert_eq!(
            (r["status"].as_str(), r["read_back_ok"].as_bool()),
            (Some("done"), Some(true)),
            "{blank}: {r}"
        );
        assert_eq!(r["auth"]["match"], true, "{blank}: {r}");
        // An independent check: the card now answers as the target profile's subscriber.
        let o = simlab(&[
            "--reader",
            READER0,
            "card",
            "auth",
            "--rand",
            "0123456789abcdef0123456789abcdef",
            "--check",
            s(&target),
            "--json",
        ]);
        assert_eq!(json(&o)["check"], "match", "{blank}: {:?}", text(&o));
        let i = info(READER0);
        let imsi = if blank == "blank-gr1.toml" {
            "001010000000001"
        } else {
            "001010123456789"
        };
        assert_eq!(i["imsi"], imsi, "{blank}");
        if blank == "blank-sja2.toml" || blank == "blank-sja5.toml" {
            // The SJA2's and SJA5's ICCID is fixed; the report says so instead of pretending.
            assert!(r["skipped"].to_string().contains("ICCID"), "{r}");
        } else {
            assert_eq!(i["iccid"], r["iccid"], "{blank}");
        }
        pull(card, READER0);
    }
}

#[test]
fn a_batch_over_two_readers_is_resumable() {
    let Some(bench) = Bench::start() else { return };
    let report = simlab_hil::temp_path("batch-report.json");
    let run = || {
        simlab(&[
            "card",
            "provision",
            "--csv",
            s(&batch_csv()),
            "--readers",
            "all",
            "--report",
            s(&report),
            "--json",
        ])
    };

    let a = bench.insert(0, &profile("blank-simlab.toml"), &[]);
    let b = bench.insert(1, &profile("blank-sja2.toml"), &[]);
    let o = run();
    assert!(o.status.success(), "{:?}", text(&o));
    let first = json(&o);
    assert_eq!(
        (first["done"].as_u64(), first["pending"].as_u64()),
        (Some(2), Some(2)),
        "{first}"
    );
    // Each card holds the row the report says it got.
    for card in first["cards"].as_array().unwrap() {
        let reader = card["reader"].as_str().unwrap();
        assert_eq!(info(reader)["imsi"], card["imsi"], "{card}");
    }
    assert!(
        text(&o).1.contains("done"),
        "progress on stderr: {:?}",
        text(&o).1
    );

    // Fresh cards in both readers: the re-run takes exactly the two rows not yet done.
    pull(a, READER0);
    pull(b, READER1);
    let _a = bench.insert(0, &profile("blank-simlab.toml"), &[]);
    let _b = bench.insert(1, &profile("blank-simlab.toml"), &[]);
    let second = json(&run());
    assert_eq!(
        (second["done"].as_u64(), second["pending"].as_u64()),
        (Some(2), Some(0)),
        "{second}"
    );
    let saved: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&report).unwrap()).unwrap();
    let mut lines: Vec<u64> = saved["cards"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["line"].as_u64().unwrap())
        .collect();
    lines.sort();
    assert_eq!(lines, [2, 3, 4, 5], "{saved}");
    assert!(
        saved["cards"]
            .as_array()
            .unwrap()
            .iter()
            .all(|c| c["status"] == "done")
    );

    // A third run finds nothing to do and touches nothing.
    let third = json(&run());
    assert_eq!(
        (
            third["done"].as_u64(),
            third["failed"].as_u64(),
            third["pending"].as_u64()
        ),
        (Some(0), Some(0), Some(0))
    );
}

#[test]
fn a_card_pulled_mid_write_fails_alone_and_the_batch_goes_on() {
    let Some(bench) = Bench::start() else { return };
    let report = simlab_hil::temp_path("pull-report.json");
    // Reader 0's card vanishes after a few APDUs, in the middle of the writes.
    let _a = bench.insert(0, &profile("blank-simlab.toml"), &["--pull-after", "12"]);
    let _b = bench.insert(1, &profile("blank-simlab.toml"), &[]);
    let o = simlab(&[
        "card",
        "provision",
        "--csv",
        s(&batch_csv()),
        "--report",
        s(&report),
        "--json",
    ]);
    assert_eq!(o.status.code(), Some(1), "{:?}", text(&o));
    let r = json(&o);
    assert_eq!(
        (r["done"].as_u64(), r["failed"].as_u64()),
        (Some(1), Some(1)),
        "{r}"
    );
    let failed = r["cards"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["status"] == "failed")
        .unwrap();
    assert_eq!(failed["reader"], READER0);
    assert!(
        failed["error"].as_str().unwrap().contains("removed"),
        "{failed}"
    );
    // The failed row is pending again: after a swap it is provisioned.
    simlab_hil::wait_for_card(READER0, true, Duration::from_secs(10));
    let again = json(&simlab(&[
        "card",
        "provision",
        "--csv",
        s(&batch_csv()),
        "--readers",
        READER0,
        "--report",
        s(&report),
        "--json",
    ]));
    assert_eq!(again["done"], 1, "{again}");
    assert_eq!(again["cards"][0]["line"], failed["line"], "{again}");
}

#[test]
fn a_wrong_adm_is_tried_once_and_the_guard_protects_the_last_tries() {
    let Some(bench) = Bench::start() else { return };
    let state = simlab_hil::temp_path("adm.state");
    let _card = bench.insert(0, &profile("blank-simlab.toml"), &["--state", s(&state)]);
    let csv = simlab_hil::temp_path("wrong-adm.csv");
    let text_csv = std::fs::read_to_string(batch_csv())
        .unwrap()
        .replace(",88888888,", ",12345678,");
    std::fs::write(&csv, text_csv).unwrap();

    let o = simlab(&[
        "card",
        "provision",
        "--csv",
        s(&csv),
        "--readers",
        READER0,
        "--json",
    ]);
    assert_eq!(o.status.code(), Some(1));
    let r = json(&o);
    assert!(
        r["cards"][0]["error"]
            .as_str()
            .unwrap()
            .contains("ADM1 refused"),
        "{r}"
    );
    assert_eq!(info(READER0)["adm1_tries"], 2, "exactly one try was spent");

    // One more wrong ADM by hand leaves 1 try: now the guard refuses even the right key.
    let o = simlab(&[
        "--reader",
        READER0,
        "card",
        "verify-pin",
        "--code",
        "adm1",
        "--pin",
        "00000000",
    ]);
    assert_eq!(o.status.code(), Some(1));
    let o = simlab(&[
        "card",
        "provision",
        "--csv",
        s(&batch_csv()),
        "--readers",
        READER0,
        "--json",
    ]);
    assert_eq!(o.status.code(), Some(1));
    let r = json(&o);
    assert!(
        r["cards"][0]["error"]
            .as_str()
            .unwrap()
            .contains("only 1 tries left"),
        "{r}"
    );
    assert_eq!(info(READER0)["adm1_tries"], 1, "the guard spent nothing");

    // --force-adm is the operator's explicit decision; with the right key it succeeds.
    let o = simlab(&[
        "card",
        "provision",
        "--csv",
        s(&batch_csv()),
        "--readers",
        READER0,
        "--force-adm",
        "--json",
    ]);
    assert!(o.status.success(), "{:?}", text(&o));
    // Success refilled the counter: a wrong key now leaves 2.
    let o = simlab(&[
        "--reader",
        READER0,
        "card",
        "verify-pin",
        "--code",
        "adm1",
        "--pin",
        "00000000",
        "--json",
    ]);
    assert_eq!(json(&o)["tries_left"], 2);
}

#[test]
fn dry_run_prints_the_plan_masked_and_writes_nothing() {
    let Some(bench) = Bench::start() else { return };
    let _card = bench.insert(0, &profile("blank-sjs1.toml"), &[]);
    let before = info(READER0);
    let o = simlab(&[
        "--reader",
        READER0,
        "card",
        "provision",
        "--profile",
        s(&profile("usim-milenage.toml")),
        "--dry-run",
    ]);
    assert!(o.status.success(), "{:?}", text(&o));
    let plan = text(&o).0;
    assert!(plan.contains("card type: sysmoUSIM-SJS1"), "{plan}");
    assert!(
        plan.contains("00 20 00 0A 08 ** ** ** ** ** ** ** **"),
        "{plan}"
    );
    assert!(
        plan.contains("Ki (7F20/00FF)") && plan.contains("OPc (7F20/00F7)"),
        "{plan}"
    );
    // Ki and ADM never appear in clear.
    for secret in ["46 5B 5C E8", "38 38 38 38"] {
        assert!(!plan.contains(secret), "{secret} in {plan}");
    }
    assert_eq!(
        info(READER0),
        before,
        "a dry run writes nothing and spends no ADM try"
    );
}

#[test]
fn a_bad_csv_row_is_rejected_before_any_card_is_touched() {
    let Some(bench) = Bench::start() else { return };
    let _card = bench.insert(0, &profile("blank-simlab.toml"), &[]);
    let before = info(READER0);
    let csv = simlab_hil::temp_path("bad.csv");
    let text_csv = std::fs::read_to_string(batch_csv())
        .unwrap()
        .replace("001010000100003", "00101000010000x");
    std::fs::write(&csv, text_csv).unwrap();
    let o = simlab(&["card", "provision", "--csv", s(&csv)]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        text(&o).1.contains("line 4: column `imsi`"),
        "{:?}",
        text(&o)
    );
    assert_eq!(info(READER0), before);
}

#[test]
fn a_card_that_cannot_report_adm_tries_is_refused_without_force() {
    let Some(bench) = Bench::start() else { return };
    let _card = bench.insert(0, &profile("blank-gr1.toml"), &[]);
    let o = simlab(&[
        "--reader",
        READER0,
        "card",
        "provision",
        "--profile",
        s(&profile("sim-comp128v1.toml")),
        "--adm",
        "4444444444444444",
    ]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        text(&o).1.contains("does not report its ADM tries"),
        "{:?}",
        text(&o)
    );
}
