//! `--state` files across format versions, through the binary: an older format (the golden
//! files of `fixtures/state/`) is migrated on load, a newer one or one of another card type is
//! refused with exit 2 and a message that says why, and the refused file is left as it was.

mod common;
use common::{root, simlab, text};

const SJA2: &str = "fixtures/cards/isim-sja2-milenage.toml";
const SIMLAB: &str = "fixtures/cards/usim-milenage.toml";

fn golden(version: u8) -> Vec<u8> {
    std::fs::read(root().join(format!("fixtures/state/v{version}.state"))).unwrap()
}

fn scratch(name: &str, bytes: &[u8]) -> String {
    let dir = std::env::temp_dir().join(format!("simlab-card-state-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    path.to_str().unwrap().to_string()
}

#[test]
fn an_older_state_file_is_migrated_and_used() {
    for version in [2, simlab_applet::state::VERSION] {
        let f = scratch(&format!("v{version}.state"), &golden(version));
        let out = simlab(&["--emulate", SJA2, "token", "info", "--state", &f]);
        assert!(out.status.success(), "v{version}: {:?}", text(&out));
    }
}

#[test]
fn a_newer_or_foreign_state_file_is_refused_whole() {
    let mut newer = golden(simlab_applet::state::VERSION);
    newer[4] += 1;
    let f = scratch("newer.state", &newer);
    let out = simlab(&["--emulate", SJA2, "token", "info", "--state", &f]);
    let (_, err) = text(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("newer than this simlab knows"), "{err}");
    assert_eq!(
        std::fs::read(&f).unwrap(),
        newer,
        "the file is left as it was"
    );

    let current = golden(simlab_applet::state::VERSION);
    let f = scratch("sja2.state", &current);
    let out = simlab(&["--emulate", SIMLAB, "token", "info", "--state", &f]);
    let (_, err) = text(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("saved by a sysmoISIM-SJA2 card"), "{err}");
    assert_eq!(std::fs::read(&f).unwrap(), current);
}
