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
