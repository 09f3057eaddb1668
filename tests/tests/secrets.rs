//! No secret in any output: every card type provisioned over every path (in-process, pcscd with
//! vpcd, a modem's +CSIM), with `--trace` and `-v` on both ends, and every byte the processes
//! wrote — stdout, stderr, APDU and AT transcripts, the emulators' logs — searched for every
//! fixture secret in every spelling a hex dump could give it.

use simlab_hil::{Bench, READERS, VirtualModem, json, profile, simlab, temp_path, text};
use std::path::{Path, PathBuf};

fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

/// `key = "value"` lines of a card profile (the fixtures use no other syntax for these keys).
fn profile_value(path: &Path, key: &str) -> Option<String> {
    let body = std::fs::read_to_string(path).expect("profile");
    body.lines().find_map(|l| {
        let (k, v) = l.split_once('=')?;
        (k.trim() == key).then(|| v.trim().trim_matches('"').to_string())
    })
}

/// Every spelling of `bytes` a transcript or a log could use: lower and upper case, with and
/// without spaces. The first six bytes are enough to recognise a key and catch a partial dump.
fn spellings(bytes: &[u8]) -> Vec<String> {
    let head = &bytes[..bytes.len().min(6)];
    let lower: Vec<String> = head.iter().map(|b| format!("{b:02x}")).collect();
    let upper: Vec<String> = head.iter().map(|b| format!("{b:02X}")).collect();
    vec![
        lower.concat(),
        upper.concat(),
        lower.join(" "),
        upper.join(" "),
    ]
}

fn hex_bytes(hex: &str) -> Option<Vec<u8>> {
    (hex.len().is_multiple_of(2) && hex.bytes().all(|c| c.is_ascii_hexdigit())).then(|| {
        (0..hex.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
            .collect()
    })
}

/// The needles for the secrets of these profiles (and extra ADM values given on a command
/// line): keys as bytes; PINs, PUKs and ADM codes as the ASCII bytes a VERIFY carries, as raw
/// bytes when they are written in hex, and as typed when they are long and varied enough not to
/// occur by chance (a timestamp's digits would match a 4-digit PIN, an IMSI's `00000000`).
fn needles(profiles: &[&Path], extra_adm: &[&str]) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut add = |what: String, value: &str| {
        if let Some(b) =
            hex_bytes(value).filter(|_| what.starts_with("ki") || what.starts_with("op"))
        {
            out.extend(spellings(&b).into_iter().map(|n| (what.clone(), n)));
            return;
        }
        out.extend(
            spellings(value.as_bytes())
                .into_iter()
                .map(|n| (what.clone(), n)),
        );
        if value.len() >= 16
            && let Some(b) = hex_bytes(value)
        {
            out.extend(spellings(&b).into_iter().map(|n| (what.clone(), n)));
        }
        let distinct = value
            .chars()
            .collect::<std::collections::BTreeSet<_>>()
            .len();
        if value.len() >= 8 && distinct >= 3 {
            out.push((what.clone(), format!("{PLAIN}{value}")));
        }
    };
    for p in profiles {
        for key in ["ki", "opc", "op", "pin1", "puk1", "pin2", "puk2", "adm1"] {
            if let Some(v) = profile_value(p, key) {
                add(format!("{key} of {}", p.display()), &v);
            }
        }
    }
    for adm in extra_adm {
        add("adm1 given".into(), adm);
    }
    out
}

/// Marks a needle that is matched as a whole word only (an 8-digit PUK inside an IMSI is not a
/// leak; the PUK on its own is).
const PLAIN: &str = "\u{0}";

fn contains(body: &str, needle: &str) -> bool {
    let Some(word) = needle.strip_prefix(PLAIN) else {
        return body.contains(needle);
    };
    body.match_indices(word).any(|(i, _)| {
        let before = body[..i].chars().next_back();
        let after = body[i + word.len()..].chars().next();
        !before.is_some_and(|c| c.is_ascii_alphanumeric())
            && !after.is_some_and(|c| c.is_ascii_alphanumeric())
    })
}

struct Outputs(Vec<(String, String)>);

impl Outputs {
    fn new() -> Self {
        Outputs(Vec::new())
    }

    fn add(&mut self, what: &str, body: String) {
        self.0.push((what.to_string(), body));
    }

    fn run(&mut self, what: &str, args: &[&str]) -> serde_json::Value {
        let o = simlab(args);
        let (out, err) = text(&o);
        assert!(o.status.success(), "{what}: {args:?}: {out}\n{err}");
        self.add(&format!("{what}: stdout"), out);
        self.add(&format!("{what}: stderr"), err);
        json(&o)
    }

    fn file(&mut self, what: &str, path: &Path) {
        let body = std::fs::read_to_string(path)
            .unwrap_or_else(|e| panic!("{what}: {}: {e}", path.display()));
        assert!(!body.is_empty(), "{what}: {} is empty", path.display());
        self.add(what, body);
    }

    fn assert_clean(&self, needles: &[(String, String)]) {
        for (what, body) in &self.0 {
            for (secret, needle) in needles {
                assert!(
                    !contains(body, needle),
                    "{secret} ({needle}) appears in {what}:\n{body}"
                );
            }
        }
    }
}

/// The blank card types, the profile each is provisioned to, and the extra arguments it needs
/// (GR1 cannot report its ADM tries, and its ADM comes from the vendor's letter).
fn card_types() -> Vec<(PathBuf, PathBuf, Vec<&'static str>)> {
    let mut blanks: Vec<PathBuf> =
        std::fs::read_dir(simlab_hil::workspace_root().join("fixtures/cards"))
            .expect("fixtures/cards")
            .map(|e| e.expect("entry").path())
            .filter(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with("blank-") && n.ends_with(".toml"))
            })
            .collect();
    blanks.sort();
    assert!(blanks.len() >= 4, "{blanks:?}");
    blanks
        .into_iter()
        .map(|b| {
            if b.ends_with("blank-gr1.toml") {
                (
                    b,
                    profile("sim-comp128v1.toml"),
                    vec!["--force-adm", "--adm", "4444444444444444"],
                )
            } else {
                (b, profile("usim-milenage.toml"), vec![])
            }
        })
        .collect()
}

fn provision_args<'a>(
    transport: &[&'a str],
    trace: &'a Path,
    target: &'a Path,
    extra: &[&'a str],
) -> Vec<&'a str> {
    let mut args = vec!["-v"];
    args.extend_from_slice(transport);
    args.extend([
        "--trace",
        s(trace),
        "card",
        "provision",
        "--profile",
        s(target),
        "--json",
    ]);
    args.extend_from_slice(extra);
    args
}

#[test]
fn in_process_provisioning_and_authentication_leave_no_secret() {
    let mut outputs = Outputs::new();
    let mut profiles = Vec::new();
    for (blank, target, extra) in card_types() {
        let trace = temp_path("inproc.trace");
        let args = provision_args(&["--emulate", s(&blank)], &trace, &target, &extra);
        let r = outputs.run(&format!("provision {}", blank.display()), &args);
        assert_eq!(r["status"], "done", "{}: {r}", blank.display());
        outputs.file(
            &format!("trace of provisioning {}", blank.display()),
            &trace,
        );
        profiles.push(blank);
        profiles.push(target);
    }
    // The session keys of an authentication, and a PIN verification.
    let usim = profile("usim-milenage.toml");
    let trace = temp_path("auth.trace");
    outputs.run(
        "auth",
        &[
            "-v",
            "--emulate",
            s(&usim),
            "--trace",
            s(&trace),
            "card",
            "auth",
            "--rand",
            "23553cbe9637a89d218ae64dae47bf35",
            "--json",
        ],
    );
    outputs.file("trace of auth", &trace);
    let pin1 = profile_value(&usim, "pin1").expect("pin1");
    let trace = temp_path("pin.trace");
    outputs.run(
        "verify-pin",
        &[
            "-v",
            "--emulate",
            s(&usim),
            "--trace",
            s(&trace),
            "card",
            "verify-pin",
            "--pin",
            &pin1,
            "--json",
        ],
    );
    outputs.file("trace of verify-pin", &trace);
    let profiles: Vec<&Path> = profiles.iter().map(PathBuf::as_path).collect();
    outputs.assert_clean(&needles(&profiles, &["4444444444444444"]));
}

#[test]
fn provisioning_through_pcscd_leaves_no_secret_on_either_end() {
    let Some(bench) = Bench::start() else { return };
    let mut outputs = Outputs::new();
    let mut profiles = Vec::new();
    for (blank, target, extra) in card_types() {
        let card_trace = temp_path("card-side.trace");
        let mut card = bench.insert(0, &blank, &["-v", "--trace", s(&card_trace)]);
        let trace = temp_path("host-side.trace");
        let args = provision_args(&["--reader", READERS[0].0], &trace, &target, &extra);
        let r = outputs.run(&format!("provision {} via pcscd", blank.display()), &args);
        assert_eq!(r["status"], "done", "{}: {r}", blank.display());
        outputs.run(
            "auth via pcscd",
            &[
                "-v",
                "--reader",
                READERS[0].0,
                "--trace",
                s(&trace),
                "card",
                "auth",
                "--rand",
                "23553cbe9637a89d218ae64dae47bf35",
                "--json",
            ],
        );
        let (_, card_log) = card.stop_with(libc::SIGTERM, std::time::Duration::from_secs(5));
        simlab_hil::wait_for_card(READERS[0].0, false, std::time::Duration::from_secs(10));
        outputs.add(
            &format!("card emulator log for {}", blank.display()),
            card_log,
        );
        outputs.file(&format!("host trace for {}", blank.display()), &trace);
        outputs.file(
            &format!("card-side trace for {}", blank.display()),
            &card_trace,
        );
        profiles.push(blank);
        profiles.push(target);
    }
    let profiles: Vec<&Path> = profiles.iter().map(PathBuf::as_path).collect();
    outputs.assert_clean(&needles(&profiles, &["4444444444444444"]));
}

#[test]
fn provisioning_through_a_modem_leaves_no_secret_in_either_transcript() {
    let mut outputs = Outputs::new();
    let mut profiles = Vec::new();
    for (blank, target, extra) in card_types() {
        let at_trace = temp_path("modem-at.trace");
        let modem = VirtualModem::start(&["--sim", s(&blank), "-v", "--trace", s(&at_trace)]);
        let trace = temp_path("csim.trace");
        // A modem shows no ATR: the card type is named.
        let card_type = profile_value(&blank, "card_type").expect("card_type");
        let mut extra = extra.clone();
        extra.extend(["--card-type", card_type.as_str()]);
        let args = provision_args(&["--modem", modem.path()], &trace, &target, &extra);
        let r = outputs.run(&format!("provision {} via +CSIM", blank.display()), &args);
        assert_eq!(r["status"], "done", "{}: {r}", blank.display());
        modem_log(&mut outputs, modem, &blank);
        outputs.file(
            &format!("APDU trace via +CSIM for {}", blank.display()),
            &trace,
        );
        outputs.file(
            &format!("AT trace of the modem for {}", blank.display()),
            &at_trace,
        );
        profiles.push(blank);
        profiles.push(target);
    }
    let profiles: Vec<&Path> = profiles.iter().map(PathBuf::as_path).collect();
    outputs.assert_clean(&needles(&profiles, &["4444444444444444"]));
}

fn modem_log(outputs: &mut Outputs, mut modem: VirtualModem, blank: &Path) {
    assert!(modem.stop(), "the modem emulator stopped cleanly");
    outputs.add(
        &format!("modem emulator log for {}", blank.display()),
        modem.log(),
    );
}

#[test]
fn the_needles_find_what_they_look_for() {
    // A test of the test: a transcript line with the fixture Ki in each spelling is caught.
    let usim = profile("usim-milenage.toml");
    let ki = profile_value(&usim, "ki").expect("ki");
    let n = needles(&[&usim], &[]);
    for line in [
        ki.to_uppercase(),
        ki.clone(),
        hex_bytes(&ki)
            .unwrap()
            .iter()
            .map(|b| format!("{b:02X}"))
            .collect::<Vec<_>>()
            .join(" "),
    ] {
        assert!(
            n.iter().any(|(_, needle)| line.contains(needle.as_str())),
            "{line}"
        );
    }
    let pin = profile_value(&usim, "pin1").expect("pin1");
    let verify: String = pin.bytes().map(|b| format!("{b:02X} ")).collect();
    assert!(
        n.iter().any(|(_, needle)| verify.contains(needle.as_str())),
        "{verify}"
    );
}
