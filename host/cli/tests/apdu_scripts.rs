//! Replays the APDU conversations in `fixtures/apdu/*.apdu` against the card model, byte for
//! byte, with no host-side T=0 help, through the same parser and runner as `simlab card
//! script` (simlab_card::script). The format is described in `fixtures/apdu/README.md`.

mod common;

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

/// Every spelling a trace could use for `bytes`: upper/lower case, with and without spaces.
fn spellings(bytes: &[u8]) -> Vec<String> {
    let spaced: Vec<String> = bytes.iter().map(|b| format!("{b:02X}")).collect();
    let upper = spaced.concat();
    vec![
        spaced.join(" "),
        spaced.join(" ").to_lowercase(),
        upper.clone(),
        upper.to_lowercase(),
    ]
}

/// A provisioning run recorded with `--trace FILE.apdu` is a script: its secrets are named
/// placeholders (none in clear), and it replays on a fresh card of the same type with `card
/// script --profile`, answer for answer; a wrong ADM at replay stops it at that line.
#[test]
fn a_recorded_provisioning_run_replays_on_a_fresh_card() {
    let dir = std::env::temp_dir().join(format!("simlab-record-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let cards = fixtures().join("cards");
    for (blank, target, adm) in [
        ("blank-simlab.toml", "usim-milenage.toml", None),
        ("blank-sjs1.toml", "usim-milenage.toml", None),
        ("blank-sja2.toml", "isim-sja2-milenage.toml", None),
        ("blank-sja5.toml", "usim-milenage.toml", None),
        // GR1's ADM comes from the vendor's letter (--adm), not from the target profile: the
        // replay must be given it the same way.
        (
            "blank-gr1.toml",
            "sim-comp128v1.toml",
            Some("4444444444444444"),
        ),
    ] {
        let blank_path = cards.join(blank);
        let target_path = cards.join(target);
        let (blank_s, target_s) = (blank_path.to_str().unwrap(), target_path.to_str().unwrap());
        let rec = dir.join(format!("{blank}.apdu"));
        let mut args = vec![
            "--emulate",
            blank_s,
            "--trace",
            rec.to_str().unwrap(),
            "card",
            "provision",
            "--profile",
            target_s,
        ];
        if let Some(adm) = adm {
            args.extend(["--force-adm", "--adm", adm]);
        }
        let o = common::simlab(&args);
        assert!(o.status.success(), "{blank}: {:?}", common::text(&o));
        let recorded = std::fs::read_to_string(&rec).unwrap();
        for p in [&blank_path, &target_path] {
            let p = Profile::load(p).unwrap();
            let secrets = [
                &p.ki[..],
                &p.opc.unwrap_or([0x5A; 16]),
                &p.adm1,
                &p.pin1,
                &p.puk1,
            ];
            for secret in secrets {
                for spelling in spellings(secret) {
                    assert!(
                        !recorded.contains(&spelling),
                        "{blank}: {spelling} in the recording:\n{recorded}"
                    );
                }
            }
        }
        assert!(recorded.contains("${ADM1}"), "{blank}:\n{recorded}");
        assert!(recorded.contains("${KI}"), "{blank}:\n{recorded}");
        let exchanges = recorded.lines().filter(|l| l.starts_with('>')).count();

        let replay = |profile: &str, extra: &[&str]| {
            let mut args = vec![
                "--emulate",
                blank_s,
                "card",
                "script",
                rec.to_str().unwrap(),
                "--profile",
                profile,
                "--json",
            ];
            args.extend_from_slice(extra);
            common::simlab(&args)
        };
        let adm_secret = adm.map(|a| format!("ADM1={a}"));
        let extra: Vec<&str> = adm_secret
            .as_deref()
            .map(|s| vec!["--secret", s])
            .unwrap_or_default();
        let o = replay(target_s, &extra);
        assert!(o.status.success(), "{blank}: {:?}", common::text(&o));
        let r = common::json(&o);
        assert_eq!(r["exchanges"], exchanges, "{blank}: {r}");
        assert_eq!(r["profile"], blank, "{blank}: {r}");

        // Another ADM: the card refuses it, and the replay stops at that VERIFY.
        let o = replay(target_s, &["--secret", "ADM1=3132333435363738"]);
        assert_eq!(o.status.code(), Some(1), "{blank}: {:?}", common::text(&o));
        let r = common::json(&o);
        let line = r["line"].as_u64().unwrap() as usize;
        let verify = recorded.lines().nth(line - 1).unwrap();
        assert!(verify.contains("${ADM1}"), "{blank}: line {line}: {verify}");
    }
    // Bad --secret values: exit 2 before any APDU, and the value is never echoed.
    let rec = dir.join("blank-sja2.toml.apdu");
    for (bad, says) in [
        ("ADM1", "NAME=HEX"),
        ("PIN9=31323334", "not a placeholder"),
        ("ADM1=3132zz", "not hex"),
        ("SECRET1=", "empty"),
    ] {
        let o = common::simlab(&[
            "--emulate",
            cards.join("blank-sja2.toml").to_str().unwrap(),
            "card",
            "script",
            rec.to_str().unwrap(),
            "--secret",
            bad,
        ]);
        let (_, err) = common::text(&o);
        assert_eq!(o.status.code(), Some(2), "{bad}: {err}");
        assert!(err.contains(says), "{bad}: {err}");
        assert!(!err.contains("zz"), "{bad}: {err}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}
