//! Replays the APDU conversations in `fixtures/apdu/*.apdu` against the card model, byte for
//! byte, with no host-side T=0 help, through the same parser and runner as `simlab card
//! script` (simlab_card::script). The format is described in `fixtures/apdu/README.md`.

use simlab_applet::card::RESPONSE_MAX;
use simlab_card::profile::Profile;
use simlab_card::script::{self, Script, Step};
use simlab_card::transport::TransportError;
use std::path::{Path, PathBuf};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures")
}

/// The card model, reached without any transport.
struct Model(simlab_applet::Card);

impl script::Card for Model {
    fn transmit(&mut self, capdu: &[u8]) -> Result<Vec<u8>, TransportError> {
        let mut resp = [0u8; RESPONSE_MAX];
        let len = self.0.process(capdu, &mut resp);
        Ok(resp[..len].to_vec())
    }
    fn reset(&mut self) -> Result<(), TransportError> {
        self.0.reset();
        Ok(())
    }
}

fn run_script(path: &Path) -> usize {
    let text = std::fs::read_to_string(path).unwrap();
    let script = Script::parse(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let Some(Step::Profile(name)) = script.steps.first() else {
        panic!("{}: @profile must come first", path.display());
    };
    let profile = Profile::load(&fixtures().join("cards").join(name)).unwrap();
    let mut card = Model(profile.build_card_seeded([1; 32]));
    let secret = |n: &str| script::profile_secret(&profile, n);
    script::replay(&script, &mut card, &secret)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .exchanges
}

#[test]
fn every_apdu_script_replays() {
    let mut scripts: Vec<PathBuf> = std::fs::read_dir(fixtures().join("apdu"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "apdu"))
        .collect();
    scripts.sort();
    assert!(scripts.len() >= 4, "scripts missing: {scripts:?}");
    for script in scripts {
        let n = run_script(&script);
        assert!(n > 5, "{}: only {n} exchanges", script.display());
        eprintln!("{}: {n} exchanges", script.display());
    }
}
