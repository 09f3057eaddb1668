//! Every APDU script in fixtures/apdu/ replayed through the real PC/SC stack: the card model
//! behind vpcd in pcscd's reader, `simlab --reader … card script` on the host side, byte for
//! byte as in-process (host/cli/tests/apdu_scripts.rs). What the fixtures promise of the card
//! then holds for what a PC/SC tool sees.

use simlab_hil::{Bench, READERS, profile, simlab, text, wait_for_card, workspace_root};
use std::path::PathBuf;
use std::time::Duration;

fn scripts() -> Vec<PathBuf> {
    let mut scripts: Vec<PathBuf> = std::fs::read_dir(workspace_root().join("fixtures/apdu"))
        .expect("fixtures/apdu")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "apdu"))
        .collect();
    scripts.sort();
    scripts
}

/// The profile a script names on its `@profile` line.
fn script_profile(script: &PathBuf) -> PathBuf {
    let text = std::fs::read_to_string(script).expect("script");
    let name = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("@profile"))
        .unwrap_or_else(|| panic!("{}: no @profile", script.display()))
        .trim();
    profile(name)
}

#[test]
fn every_apdu_script_replays_through_pcscd() {
    let Some(bench) = Bench::start() else { return };
    let scripts = scripts();
    assert!(scripts.len() >= 10, "{scripts:?}");
    for script in scripts {
        let card = bench.insert(0, &script_profile(&script), &[]);
        let o = simlab(&[
            "--reader",
            READERS[0].0,
            "card",
            "script",
            script.to_str().unwrap(),
            "--json",
        ]);
        assert!(
            o.status.success(),
            "{} through pcscd: {:?}",
            script.display(),
            text(&o)
        );
        drop(card);
        wait_for_card(READERS[0].0, false, Duration::from_secs(10));
    }
}

/// What a PC/SC tool we did not write (pyscard, then simlab's provisioning) says to the
/// virtual card, recorded on the card's side with `emulate card --trace FILE.apdu`, is a
/// script: Kc, SRES, Ki, OPc and ADM are not in it, and it replays in-process and through
/// pcscd on a fresh card.
#[test]
fn sessions_recorded_on_the_card_side_replay_anywhere() {
    let Some(bench) = Bench::start() else { return };
    if !simlab_hil::require_file(
        "/usr/lib/python3/dist-packages/smartcard/__init__.py",
        "python3-pyscard",
    ) {
        return;
    }
    let dir = simlab_hil::temp_path("card-side-recordings");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let replay = |script: &PathBuf, card: &str, profile_arg: &str, via_pcscd: bool| {
        let card = profile(card);
        let target = profile(profile_arg);
        let mut args = if via_pcscd {
            vec!["--reader", READERS[0].0]
        } else {
            vec!["--emulate", card.to_str().unwrap()]
        };
        args.extend([
            "card",
            "script",
            script.to_str().unwrap(),
            "--profile",
            target.to_str().unwrap(),
            "--json",
        ]);
        simlab(&args)
    };

    // pyscard's GSM sequence.
    let gsm = dir.join("pyscard-gsm.apdu");
    let card = bench.insert(
        0,
        &profile("sim-comp128v1.toml"),
        &["--trace", gsm.to_str().unwrap()],
    );
    let o = std::process::Command::new("/usr/bin/python3")
        .envs(simlab_hil::bench_env())
        .arg(workspace_root().join("tests/py/pyscard_gsm.py"))
        .args([READERS[0].0, "2233445566778899aabbccddeeff0011"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{:?}", text(&o));
    drop(card);
    wait_for_card(READERS[0].0, false, Duration::from_secs(10));
    let recorded = std::fs::read_to_string(&gsm).unwrap();
    assert!(
        recorded.contains("@profile sim-comp128v1.toml"),
        "{recorded}"
    );
    assert!(
        recorded.contains("> A0 88 00 00 10 22 33 44 55 66 77 88 99 AA BB CC DD EE FF 00 11"),
        "{recorded}"
    );
    for secret in ["3C 0D CF BD", "F8 4A 72 DC 31 2F 60 00"] {
        assert!(!recorded.contains(secret), "{secret}:\n{recorded}");
    }
    let o = replay(&gsm, "sim-comp128v1.toml", "sim-comp128v1.toml", false);
    assert!(o.status.success(), "in-process: {:?}", text(&o));
    let card = bench.insert(0, &profile("sim-comp128v1.toml"), &[]);
    let o = replay(&gsm, "sim-comp128v1.toml", "sim-comp128v1.toml", true);
    assert!(o.status.success(), "through pcscd: {:?}", text(&o));
    drop(card);
    wait_for_card(READERS[0].0, false, Duration::from_secs(10));

    // A provisioning run through pcscd, recorded by the card.
    let prog = dir.join("provision-sja2.apdu");
    let card = bench.insert(
        0,
        &profile("blank-sja2.toml"),
        &["--trace", prog.to_str().unwrap()],
    );
    let target = profile("isim-sja2-milenage.toml");
    let o = simlab(&[
        "--reader",
        READERS[0].0,
        "card",
        "provision",
        "--profile",
        target.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{:?}", text(&o));
    drop(card);
    wait_for_card(READERS[0].0, false, Duration::from_secs(10));
    let recorded = std::fs::read_to_string(&prog).unwrap();
    // The card knows only its own profile: the subscriber's new key file (algorithm, K, OPc)
    // is a secret it cannot name, so it stands as ${SECRET1}, the same in both places it is
    // written; its ADM it knows.
    assert!(recorded.contains("${ADM1}"), "{recorded}");
    assert_eq!(
        recorded.matches("00 D6 00 00 21 ${SECRET1}").count(),
        2,
        "{recorded}"
    );
    for secret in [
        "46 5B 5C E8 B1 99 B4 9F",
        "CD 63 CB 71 95 4A 9F 4E",
        "38 38 38 38 38 38 38 38",
    ] {
        assert!(!recorded.contains(secret), "{secret}:\n{recorded}");
    }
    let o = replay(&prog, "blank-sja2.toml", "blank-sja2.toml", false);
    assert_eq!(o.status.code(), Some(2), "{:?}", text(&o));
    assert!(
        text(&o).1.contains("--secret SECRET1=HEX"),
        "{:?}",
        text(&o)
    );
    // The key file's contents (algorithm byte, K, OPc), as an operator would pass them: from
    // the environment, not on the command line.
    let o = std::process::Command::new(simlab_hil::simlab_bin())
        .current_dir(workspace_root())
        .env(
            "SIMLAB_TEST_KEY_FILE",
            "04465b5ce8b199b49faa5f0a2ee238a6bccd63cb71954a9f4e48a5994e37a02baf",
        )
        .args([
            "--emulate",
            "fixtures/cards/blank-sja2.toml",
            "card",
            "script",
            prog.to_str().unwrap(),
            "--profile",
            "fixtures/cards/blank-sja2.toml",
            "--secret",
            "SECRET1=env:SIMLAB_TEST_KEY_FILE",
            "--json",
        ])
        .output()
        .unwrap();
    assert!(o.status.success(), "{:?}", text(&o));
    let _ = std::fs::remove_dir_all(&dir);
}
