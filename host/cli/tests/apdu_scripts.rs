//! Replays the APDU conversations in `fixtures/apdu/*.apdu` against the card model, byte for
//! byte, with no host-side T=0 help. The format is described in `fixtures/apdu/README.md`.

use simlab_applet::card::RESPONSE_MAX;
use simlab_card::profile::Profile;
use std::path::{Path, PathBuf};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures")
}

fn hex_bytes(text: &str) -> Vec<Option<u8>> {
    let compact: String = text.split_whitespace().collect();
    compact
        .as_bytes()
        .chunks(2)
        .map(|pair| match pair {
            b".." => None,
            _ => Some(
                u8::from_str_radix(std::str::from_utf8(pair).unwrap(), 16)
                    .unwrap_or_else(|_| panic!("bad hex {:?}", String::from_utf8_lossy(pair))),
            ),
        })
        .collect()
}

fn matches(expected: &str, got: &[u8]) -> bool {
    let (any_prefix, rest) = match expected.trim().strip_prefix('*') {
        Some(rest) => (true, rest),
        None => (false, expected),
    };
    let want = hex_bytes(rest);
    if any_prefix {
        if got.len() < want.len() {
            return false;
        }
        let tail = &got[got.len() - want.len()..];
        return want
            .iter()
            .zip(tail)
            .all(|(w, g)| w.is_none_or(|w| w == *g));
    }
    want.len() == got.len() && want.iter().zip(got).all(|(w, g)| w.is_none_or(|w| w == *g))
}

fn run_script(path: &Path) -> usize {
    let text = std::fs::read_to_string(path).unwrap();
    let mut card = None;
    let mut last: Option<(usize, Vec<u8>)> = None;
    let mut exchanges = 0;
    for (n, line) in text.lines().enumerate() {
        let line_no = n + 1;
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if let Some(name) = line.strip_prefix("@profile ") {
            let profile = Profile::load(&fixtures().join("cards").join(name.trim())).unwrap();
            card = Some(profile.build_card_seeded([1; 32]));
        } else if line == "@reset" {
            card.as_mut().expect("@profile first").reset();
        } else if let Some(cmd) = line.strip_prefix('>') {
            let cmd: Vec<u8> = hex_bytes(cmd)
                .into_iter()
                .map(|b| b.expect("no wildcards in commands"))
                .collect();
            let mut resp = [0u8; RESPONSE_MAX];
            let len = card
                .as_mut()
                .expect("@profile first")
                .process(&cmd, &mut resp);
            last = Some((line_no, resp[..len].to_vec()));
        } else if let Some(expected) = line.strip_prefix('<') {
            let (cmd_line, got) = last
                .take()
                .unwrap_or_else(|| panic!("{}:{line_no}: '<' without '>'", path.display()));
            assert!(
                matches(expected, &got),
                "{}:{line_no}: command on line {cmd_line}\n  expected {}\n  got      {}",
                path.display(),
                expected.trim(),
                got.iter()
                    .map(|b| format!("{b:02X}"))
                    .collect::<Vec<_>>()
                    .join(" ")
            );
            exchanges += 1;
        } else {
            panic!("{}:{line_no}: cannot parse {line:?}", path.display());
        }
    }
    assert!(
        last.is_none(),
        "{}: last command has no expected response",
        path.display()
    );
    exchanges
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
