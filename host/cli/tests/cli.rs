//! The `simlab` binary as a user meets it: exit codes, messages that name the bad argument or
//! profile key, JSON keys, and secrets that never show up in any output.

mod common;
use common::{json, root, simlab, text};

const MILENAGE: &str = "fixtures/cards/usim-milenage.toml";
const COMP128: &str = "fixtures/cards/sim-comp128v1.toml";

#[test]
fn algo_prints_the_published_vectors() {
    let o = simlab(&[
        "algo",
        "comp128v1",
        "--ki",
        "112233445566778899AABBCCDDEEFF00",
        "--rand",
        "2233445566778899AABBCCDDEEFF0011",
        "--json",
    ]);
    assert!(o.status.success(), "{:?}", text(&o));
    let v = json(&o);
    assert_eq!(
        (v["sres"].as_str(), v["kc"].as_str()),
        (Some("3c0dcfbd"), Some("f84a72dc312f6000"))
    );

    let o = simlab(&[
        "algo",
        "milenage",
        "--ki",
        "465b5ce8b199b49faa5f0a2ee238a6bc",
        "--rand",
        "23553cbe9637a89d218ae64dae47bf35",
        "--op",
        "cdc202d5123e20f62b6d676ac72cb318",
        "--sqn",
        "ff9bb4d0b607",
        "--amf",
        "b9b9",
        "--json",
    ]);
    let v = json(&o);
    let expected = [
        ("opc", "cd63cb71954a9f4e48a5994e37a02baf"),
        ("mac_a", "4a9ffac354dfafb3"),
        ("mac_s", "01cfaf9ec4e871e9"),
        ("res", "a54211d5e3ba50bf"),
        ("ck", "b40ba9a3c58b2a05bbf0d987b21bf8cb"),
        ("ik", "f769bcd751044604127672711c6d3441"),
        ("ak", "aa689c648370"),
        ("ak_star", "451e8beca43b"),
        ("sres", "46f8416a"),
        ("kc", "eae4be823af9a08b"),
        ("autn", "55f328b43577b9b94a9ffac354dfafb3"),
    ];
    for (key, value) in expected {
        assert_eq!(v[key].as_str(), Some(value), "{key}");
    }
}

#[test]
fn bad_input_exits_2_and_names_the_argument() {
    let ki = "112233445566778899AABBCCDDEEFF00";
    let rand = "2233445566778899AABBCCDDEEFF0011";
    let cases: &[(&[&str], &str)] = &[
        (
            &["algo", "comp128v1", "--ki", "xyz", "--rand", rand],
            "--ki",
        ),
        (
            &["algo", "comp128v1", "--ki", ki, "--rand", "0011"],
            "--rand: expected 32 hex digits",
        ),
        (&["algo", "comp129", "--ki", ki, "--rand", rand], "comp129"),
        (
            &["algo", "milenage", "--ki", ki, "--rand", rand],
            "--op/--opc",
        ),
        (
            &[
                "algo", "milenage", "--ki", ki, "--rand", rand, "--opc", ki, "--sqn", "12",
            ],
            "--sqn",
        ),
        (
            &["algo", "comp128v1", "--ki", ki, "--rand", rand, "--opc", ki],
            "--opc",
        ),
        (
            &["--emulate", "fixtures/cards/nope.toml", "card", "info"],
            "cannot read",
        ),
        (
            &["--emulate", COMP128, "card", "read", "EF_NOPE"],
            "unknown file",
        ),
        (
            &["--emulate", COMP128, "card", "auth", "--rand", "12"],
            "--rand",
        ),
        (
            &["--emulate", COMP128, "card", "verify-pin", "--pin", "12ab"],
            "--pin",
        ),
        (&["card", "info"], "--emulate"),
    ];
    for (args, needle) in cases {
        let o = simlab(args);
        let (_, err) = text(&o);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains(needle), "{args:?}: {err:?} lacks {needle:?}");
    }
}

#[test]
fn a_bad_profile_exits_2_naming_file_and_key() {
    let dir = std::env::temp_dir().join(format!("simlab-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let base = std::fs::read_to_string(root().join(COMP128)).unwrap();
    let cases = [
        (
            base.replace("algorithm = \"comp128v1\"", "algorithm = \"a5\""),
            "key `algorithm`",
        ),
        (base.replace("ki = ", "kii = "), "key `kii`: unknown key"),
        (
            base.replace("pin1 = \"1234\"", "pin1 = \"12\""),
            "key `pin1`",
        ),
        (format!("{base}\n[broken"), "not valid TOML"),
    ];
    for (i, (content, needle)) in cases.iter().enumerate() {
        let path = dir.join(format!("p{i}.toml"));
        std::fs::write(&path, content).unwrap();
        let o = simlab(&["--emulate", path.to_str().unwrap(), "card", "info"]);
        let (_, err) = text(&o);
        assert_eq!(o.status.code(), Some(2), "{err}");
        assert!(
            err.contains(needle) && err.contains(&format!("p{i}.toml")),
            "{err}"
        );
    }
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn card_info_reports_identity_and_counters() {
    let o = simlab(&["--emulate", MILENAGE, "card", "info", "--json"]);
    assert!(o.status.success(), "{:?}", text(&o));
    let v = json(&o);
    assert_eq!(v["iccid"], "8988211000000530140");
    assert_eq!(v["imsi"], "001010123456789");
    assert_eq!(v["msisdn"], "+491700000002");
    assert_eq!(v["atr"], "3b199673696d6c61622d7631");
    assert_eq!(
        (v["pin1_tries"].as_u64(), v["puk1_tries"].as_u64()),
        (Some(3), Some(10))
    );
}

#[test]
fn card_auth_checks_against_the_host_computation() {
    let rand = "23553cbe9637a89d218ae64dae47bf35";
    let o = simlab(&[
        "--emulate",
        MILENAGE,
        "card",
        "auth",
        "--rand",
        rand,
        "--autn",
        "55f328b43577b9b94a9ffac354dfafb3",
        "--check",
        "--json",
    ]);
    let v = json(&o);
    assert_eq!(v["res"], "a54211d5e3ba50bf");
    assert_eq!(v["check"], "match");
    assert!(o.status.success());

    // The same card checked against another subscriber's profile: a mismatch, exit 1.
    let o = simlab(&[
        "--emulate",
        COMP128,
        "card",
        "auth",
        "--rand",
        rand,
        "--check",
        "fixtures/cards/sim-xor2g.toml",
        "--json",
    ]);
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(json(&o)["check"], "mismatch");

    // A stale SQN: the card answers AUTS, and the check verifies its MAC-S.
    let o = simlab(&[
        "algo",
        "milenage",
        "--ki",
        "465b5ce8b199b49faa5f0a2ee238a6bc",
        "--rand",
        rand,
        "--op",
        "cdc202d5123e20f62b6d676ac72cb318",
        "--sqn",
        "000000000001",
        "--amf",
        "b9b9",
        "--json",
    ]);
    let autn = json(&o)["autn"].as_str().unwrap().to_string();
    let o = simlab(&[
        "--emulate",
        MILENAGE,
        "card",
        "auth",
        "--rand",
        rand,
        "--autn",
        &autn,
        "--check",
        "--json",
    ]);
    let v = json(&o);
    assert_eq!(v["auts"].as_str().map(str::len), Some(28));
    assert_eq!(v["check"], "match", "{v}");
}

#[test]
fn verify_pin_counts_down_and_blocks() {
    let profile = "fixtures/cards/usim-pin-enabled.toml";
    let o = simlab(&[
        "--emulate",
        profile,
        "card",
        "verify-pin",
        "--pin",
        "0000",
        "--json",
    ]);
    assert_eq!(o.status.code(), Some(1));
    let v = json(&o);
    assert_eq!(
        (v["verified"].as_bool(), v["tries_left"].as_u64()),
        (Some(false), Some(2))
    );
    let o = simlab(&["--emulate", profile, "card", "verify-pin", "--pin", "1234"]);
    assert!(o.status.success());
    // Protected files need the PIN; with it they read.
    let o = simlab(&["--emulate", profile, "card", "read", "IMSI"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o).1.contains("6982"), "{:?}", text(&o));
    let o = simlab(&[
        "--emulate",
        profile,
        "card",
        "read",
        "IMSI",
        "--pin",
        "1234",
        "--json",
    ]);
    assert_eq!(json(&o)["decoded"], "001010000000007");
}

#[test]
fn secrets_never_appear_in_any_output() {
    let secrets = [
        "112233445566778899aabbccddeeff00",
        "1234",
        "12345678",
        "88888888",
    ];
    let runs = [
        simlab(&["--emulate", COMP128, "card", "info", "--json"]),
        simlab(&["--emulate", COMP128, "card", "info"]),
        simlab(&[
            "--emulate",
            COMP128,
            "-v",
            "card",
            "auth",
            "--rand",
            "2233445566778899AABBCCDDEEFF0011",
            "--check",
        ]),
        simlab(&["--emulate", COMP128, "card", "verify-pin", "--pin", "1234"]),
        simlab(&["--emulate", COMP128, "card", "read", "ICCID", "--json"]),
    ];
    for o in runs {
        let (out, err) = text(&o);
        for s in secrets {
            let lower = (out.clone() + &err).to_ascii_lowercase();
            // PIN digits may occur inside hex by chance; look for them as whole words.
            let hit = lower
                .split(|c: char| !c.is_ascii_alphanumeric())
                .any(|w| w == s);
            assert!(!hit, "secret {s} in output: {out} {err}");
        }
    }
}

#[test]
fn a_mistyped_key_is_not_quoted_back() {
    let o = simlab(&[
        "algo",
        "comp128v1",
        "--ki",
        "112233445566778899aabbccddeeffQX",
        "--rand",
        "2233445566778899AABBCCDDEEFF0011",
    ]);
    assert_eq!(o.status.code(), Some(2));
    let (_, err) = text(&o);
    assert!(err.contains("--ki: not hex at byte 16"), "{err}");
    assert!(!err.contains("QX"), "{err}");
}

#[test]
fn the_demo_runs_and_summarises() {
    let o = simlab(&["demo", "--json"]);
    assert!(o.status.success(), "{:?}", text(&o));
    let v = json(&o);
    for key in [
        "certificate_pem",
        "gateway_certificate_pem",
        "public_key_pem",
        "invoice_hex",
        "signature_der_hex",
    ] {
        assert!(v[key].as_str().is_some_and(|s| !s.is_empty()), "{key}: {v}");
    }
    assert!(
        v["certificate_pem"]
            .as_str()
            .unwrap()
            .starts_with("-----BEGIN CERTIFICATE-----")
    );
    assert_eq!(v["forged_m1_refused"], true);
    assert_eq!(v["forged_m3_refused"], true);
    assert!(v["billing"]["accepted"].as_u64() >= Some(1));
    assert!(v["billing"]["rejected"].as_u64() >= Some(1));
    assert!(
        v["billing"]["results"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["reason"] == "already_billed"),
        "{v}"
    );
    assert!(
        v["sign"]["signature_der_hex"]
            .as_str()
            .is_some_and(|s| s.starts_with("30")),
        "the seed-002 chapter signed: {v}"
    );
    assert_eq!(
        v["transfer"]["accepted"]["state"], "completed",
        "the seed-003 chapter ran: {v}"
    );
    let o = simlab(&["demo"]);
    assert!(text(&o).0.contains("A double submission is rejected"));
    assert!(
        text(&o)
            .0
            .contains("Signing on the phone's token (seed 002)")
    );
}

#[test]
fn demo_sign_tells_seed_002_on_its_own() {
    let o = simlab(&["demo", "sign", "--json"]);
    assert!(o.status.success(), "{:?}", text(&o));
    let v = json(&o)["sign"].clone();
    let correlator = v["correlator"].as_str().unwrap();
    assert_eq!(correlator.len(), 7, "{v}");
    // The correlator is inside the signed request bytes, after its length.
    let request = v["request_hex"].as_str().unwrap();
    let code_hex: String = correlator.bytes().map(|b| format!("{b:02x}")).collect();
    assert!(request.contains(&format!("0007{code_hex}")), "{v}");
    let o = simlab(&["demo", "sign"]);
    let out = text(&o).0;
    assert!(
        out.contains("declined on the phone") && out.contains("Everything checked"),
        "{out}"
    );
}

/// Seed 003 on its own: each of the four transfers ended as told on both operators, the
/// ledgers add up, and the text tells the expiry and the ticket split.
#[test]
fn demo_transfer_tells_seed_003_on_its_own() {
    let o = simlab(&["demo", "transfer", "--json"]);
    assert!(o.status.success(), "{:?}", text(&o));
    let v = json(&o)["transfer"].clone();
    assert_eq!(v["mode"], "token", "{v}");
    assert_eq!(v["accepted"]["state"], "completed", "{v}");
    assert_eq!(v["accepted"]["balances"]["a"], 750, "{v}");
    assert_eq!(v["accepted"]["balances"]["b"], 250, "{v}");
    assert_eq!(v["accepted"]["settlement"], 250, "{v}");
    assert_eq!(v["rejected"]["state"], "rejected", "{v}");
    assert_eq!(v["expired"]["state"], "expired", "{v}");
    assert_eq!(v["ticket"]["state"], "completed", "{v}");
    assert_eq!(v["ticket"]["left"], 7, "{v}");
    assert_eq!(v["ticket"]["new_uses"], 3, "{v}");
    assert_eq!(v["ledgers_balanced"], true, "{v}");
    for key in ["accepted", "rejected", "expired", "ticket"] {
        assert_eq!(
            v[key]["tref"].as_str().map(str::len),
            Some(16),
            "{key}: {v}"
        );
    }
    let o = simlab(&["demo", "transfer"]);
    let (out, err) = text(&o);
    assert!(o.status.success(), "{err}");
    assert!(
        out.contains("7 uses left")
            && out.contains("expired")
            && out.contains("Everything checked"),
        "{out}"
    );
}

#[test]
fn help_teaches() {
    let o = simlab(&["--help"]);
    let (out, _) = text(&o);
    assert!(o.status.success());
    assert!(out.contains("Exit codes") && out.contains("simlab demo"));
    let o = simlab(&["card", "auth", "--help"]);
    assert!(text(&o).0.contains("--check"));
}

/// A fresh directory for one test.
fn scratch(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("simlab-cli-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn file_options_naming_a_directory_a_missing_folder_or_a_foreign_file_exit_2() {
    let dir = scratch("paths");
    let d = dir.to_str().unwrap().to_string();
    let missing = dir
        .join("no/such/folder/file")
        .to_str()
        .unwrap()
        .to_string();
    let text_file = dir.join("notes.txt");
    std::fs::write(&text_file, "these are notes, not a database\n".repeat(40)).unwrap();
    let t = text_file.to_str().unwrap().to_string();
    let seller_db = dir.join("seller.sqlite");
    std::fs::copy(root().join("fixtures/db/seller-v0.sqlite"), &seller_db).unwrap();
    let sdb = seller_db.to_str().unwrap().to_string();
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (
            vec!["--emulate", COMP128, "--trace", &d, "card", "info"],
            "is a directory",
        ),
        (
            vec!["--emulate", COMP128, "--trace", &missing, "card", "info"],
            "does not exist",
        ),
        (
            vec!["--emulate", COMP128, "token", "info", "--state", &d],
            "is a directory",
        ),
        (
            vec!["--emulate", COMP128, "token", "info", "--state", &missing],
            "does not exist",
        ),
        (vec!["auc", "list", "--db", &d], "is a directory"),
        (vec!["auc", "list", "--db", &missing], "does not exist"),
        (vec!["auc", "list", "--db", &t], "is not an SQLite database"),
        (
            vec!["seller", "sales", "--db", &t],
            "is not an SQLite database",
        ),
        (vec!["gateway", "cdrs", "--db", &d], "is a directory"),
        (
            vec!["gateway", "cdrs", "--db", &t],
            "is not an SQLite database",
        ),
        (
            vec!["gateway", "cdrs", "--db", &sdb],
            "not a simlab gateway database",
        ),
        (
            vec!["otp", "verify", "--db", &d, "--id", "00", "--code", "1"],
            "is a directory",
        ),
    ];
    for (args, needle) in &cases {
        let o = simlab(args);
        let (_, err) = text(&o);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains(needle), "{args:?}: {err:?} lacks {needle:?}");
    }
    // The foreign files were refused, not changed.
    assert_eq!(
        std::fs::read_to_string(&text_file).unwrap(),
        "these are notes, not a database\n".repeat(40)
    );
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn a_database_from_a_newer_simlab_is_refused_with_exit_2() {
    let dir = scratch("newer");
    let db = dir.join("gateway.sqlite");
    let db_s = db.to_str().unwrap();
    let o = simlab(&["gateway", "cdrs", "--db", db_s]);
    assert!(o.status.success(), "{:?}", text(&o));
    let c = rusqlite::Connection::open(&db).unwrap();
    let v: i64 = c
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .unwrap();
    c.pragma_update(None, "user_version", v + 1).unwrap();
    drop(c);
    let o = simlab(&["gateway", "cdrs", "--db", db_s]);
    let (_, err) = text(&o);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.contains("newer than this simlab knows"), "{err}");
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn a_duplicate_profile_key_is_named() {
    let dir = scratch("dupkey");
    let base = std::fs::read_to_string(root().join(COMP128)).unwrap();
    let path = dir.join("dup.toml");
    std::fs::write(
        &path,
        format!("{base}\nki = \"000102030405060708090a0b0c0d0e0f\"\n"),
    )
    .unwrap();
    let o = simlab(&["--emulate", path.to_str().unwrap(), "card", "info"]);
    let (_, err) = text(&o);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.contains("key `ki`: is given twice"), "{err}");
    assert!(!err.contains("000102030405060708090a0b0c0d0e0f"), "{err}");
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn puks_are_exactly_8_digits() {
    let dir = scratch("puk");
    let base = std::fs::read_to_string(root().join(COMP128)).unwrap();
    for (i, puk) in ["1234567", "123456789", "1234"].iter().enumerate() {
        let path = dir.join(format!("p{i}.toml"));
        std::fs::write(
            &path,
            base.replace("puk1 = \"12345678\"", &format!("puk1 = \"{puk}\"")),
        )
        .unwrap();
        let o = simlab(&["--emulate", path.to_str().unwrap(), "card", "info"]);
        let (_, err) = text(&o);
        assert_eq!(o.status.code(), Some(2), "{puk}: {err}");
        assert!(
            err.contains("key `puk1`: must be exactly 8 digits"),
            "{err}"
        );
        assert!(!err.contains(puk), "the PUK was quoted back: {err}");
    }
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn batch_csv_duplicates_are_refused_and_a_byte_order_mark_is_accepted() {
    let dir = scratch("csv");
    let batch = std::fs::read_to_string(root().join("fixtures/provision/batch.csv")).unwrap();
    // Two rows with one IMSI: refused while reading the file, before any reader is opened.
    let dup = batch.replace("001010000100002", "001010000100001");
    let path = dir.join("dup.csv");
    std::fs::write(&path, &dup).unwrap();
    let o = simlab(&["card", "provision", "--csv", path.to_str().unwrap()]);
    let (_, err) = text(&o);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(
        err.contains("line 3: column `imsi`: same IMSI as line 2"),
        "{err}"
    );

    // As a spreadsheet saves it: BOM first.
    let bom = dir.join("bom.csv");
    std::fs::write(&bom, format!("\u{feff}{batch}")).unwrap();
    let db = dir.join("auc.sqlite");
    let o = simlab(&[
        "auc",
        "import",
        "--db",
        db.to_str().unwrap(),
        "--csv",
        bom.to_str().unwrap(),
        "--json",
    ]);
    assert!(o.status.success(), "{:?}", text(&o));
    let o = simlab(&["auc", "list", "--db", db.to_str().unwrap(), "--json"]);
    assert!(o.status.success(), "{:?}", text(&o));
    assert_eq!(
        json(&o).as_array().map(Vec::len),
        Some(batch.lines().filter(|l| l.starts_with("lab-")).count())
    );
    std::fs::remove_dir_all(&dir).ok();
}

/// `simlab` with `stdin` fed and extra environment variables.
fn simlab_with(args: &[&str], stdin: &str, env: &[(&str, &str)]) -> std::process::Output {
    use std::io::Write;
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_simlab"))
        .args(args)
        .current_dir(root())
        .envs(env.iter().copied())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

#[test]
fn pins_come_from_stdin_or_the_environment() {
    let profile = "fixtures/cards/usim-pin-enabled.toml";
    let verify = |pin: &str, stdin: &str, env: &[(&str, &str)]| {
        simlab_with(
            &[
                "--emulate",
                profile,
                "card",
                "verify-pin",
                "--pin",
                pin,
                "--json",
            ],
            stdin,
            env,
        )
    };
    let o = verify("-", "1234\n", &[]);
    assert!(o.status.success(), "{:?}", text(&o));
    assert_eq!(json(&o)["verified"], true);
    let o = verify("env:SIMLAB_TEST_PIN", "", &[("SIMLAB_TEST_PIN", "1234")]);
    assert!(o.status.success(), "{:?}", text(&o));
    // The value from the environment is the PIN: a wrong one is a wrong PIN (exit 1).
    let o = verify("env:SIMLAB_TEST_PIN", "", &[("SIMLAB_TEST_PIN", "0000")]);
    assert_eq!(o.status.code(), Some(1), "{:?}", text(&o));
    assert!(!text(&o).0.contains("0000") && !text(&o).1.contains("0000"));
    // Usage mistakes: exit 2, naming the option and the variable, never a value.
    let o = verify("env:SIMLAB_NO_SUCH_VARIABLE", "", &[]);
    let (_, err) = text(&o);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(
        err.contains("--pin") && err.contains("SIMLAB_NO_SUCH_VARIABLE is not set"),
        "{err}"
    );
    let o = verify("-", "", &[]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        text(&o).1.contains("standard input is empty"),
        "{:?}",
        text(&o)
    );
    // One line of stdin is one secret: a second `-` is refused, not given the same line.
    let o = simlab_with(
        &[
            "--emulate",
            "fixtures/cards/demo-usim.toml",
            "ms",
            "enroll",
            "--gateway",
            "http://127.0.0.1:9",
            "--insecure-http",
            "--pin",
            "-",
            "--sim-pin",
            "-",
        ],
        "0000\n1234\n",
        &[],
    );
    let (_, err) = text(&o);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.contains("already read for --pin"), "{err}");
    // The ADM key too.
    let o = simlab_with(
        &[
            "--emulate",
            COMP128,
            "card",
            "update",
            "SPN",
            "--data",
            "0173696d6c6162ffffffffffffffffffff",
            "--adm",
            "env:SIMLAB_TEST_ADM",
        ],
        "",
        &[("SIMLAB_TEST_ADM", "88888888")],
    );
    assert!(o.status.success(), "{:?}", text(&o));
}

#[test]
fn completions_and_the_manual_page_are_generated() {
    for shell in ["bash", "zsh", "fish", "elvish", "powershell"] {
        let o = simlab(&["completions", shell]);
        assert!(o.status.success(), "{shell}: {:?}", text(&o));
        let script = text(&o).0;
        assert!(
            script.contains("simlab") && script.contains("provision"),
            "{shell}"
        );
    }
    // bash itself accepts the script and registers the completion.
    let o = simlab(&["completions", "bash"]);
    let dir = scratch("completions");
    let script = dir.join("simlab.bash");
    std::fs::write(&script, &o.stdout).unwrap();
    let b = std::process::Command::new("bash")
        .arg("-c")
        .arg(format!("source {} && complete -p simlab", script.display()))
        .output()
        .expect("run bash");
    assert!(
        b.status.success(),
        "{:?}",
        String::from_utf8_lossy(&b.stderr)
    );
    assert!(String::from_utf8_lossy(&b.stdout).contains("simlab"));
    let o = simlab(&["completions", "tcsh"]);
    assert_eq!(o.status.code(), Some(2));

    let o = simlab(&["man"]);
    assert!(o.status.success(), "{:?}", text(&o));
    let page = text(&o).0;
    assert!(
        page.starts_with(".ie") || page.contains(".TH simlab"),
        "{}",
        &page[..200.min(page.len())]
    );
    assert!(
        page.contains("env:NAME"),
        "the secrets convention is in the manual"
    );
    std::fs::remove_dir_all(&dir).ok();
}

/// Test faults and benchmark subcommands exist only in builds with the `test-faults` and
/// `bench` features (the HIL tests and scripts/bench-* turn them on): a plain build refuses
/// them as unknown, a featured one knows them.
#[test]
fn test_faults_and_benchmarks_only_with_their_features() {
    let cases: [(&[&str], &str, bool); 3] = [
        (
            &["gateway", "serve", "--exit-after-records", "3"],
            "--exit-after-records",
            cfg!(feature = "test-faults"),
        ),
        (
            &["emulate", "card", "--pull-after", "3"],
            "--pull-after",
            cfg!(feature = "test-faults"),
        ),
        (
            &["sms", "rate", "--n", "1"],
            "'rate'",
            cfg!(feature = "bench"),
        ),
    ];
    for (args, name, enabled) in cases {
        let o = simlab(args);
        let (_, err) = text(&o);
        let unknown =
            err.contains("unexpected argument") || err.contains("unrecognized subcommand");
        assert_eq!(
            unknown && err.contains(name),
            !enabled,
            "{args:?} (feature on: {enabled}): {err}"
        );
    }
    let o = simlab(&["gateway", "bench", "--help"]);
    assert_eq!(
        o.status.success(),
        cfg!(feature = "bench"),
        "{:?}",
        text(&o)
    );
}

/// How the network roles are reached is checked before anything is touched: plain HTTP only
/// when asked for, HTTPS only with a CA to trust, identities that exist, and no key written
/// over. Each is exit 2 with the option named.
#[test]
fn tls_options_are_checked_before_anything_starts() {
    let dir = std::env::temp_dir().join(format!("simlab-cli-tls-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let d = |name: &str| dir.join(name).to_string_lossy().into_owned();
    let cases: Vec<(Vec<String>, &str)> = vec![
        (
            vec![
                "--emulate",
                MILENAGE,
                "ms",
                "enroll",
                "--gateway",
                "http://127.0.0.1:9",
                "--pin",
                "0000",
            ]
            .into_iter()
            .map(String::from)
            .collect(),
            "needs --insecure-http",
        ),
        (
            vec![
                "--emulate",
                MILENAGE,
                "ms",
                "enroll",
                "--gateway",
                "https://127.0.0.1:9",
                "--pin",
                "0000",
            ]
            .into_iter()
            .map(String::from)
            .collect(),
            "--ca",
        ),
        (
            vec!["auc".into(), "serve".into(), "--db".into(), d("auc.sqlite")],
            "--tls",
        ),
        (
            vec![
                "auc".into(),
                "serve".into(),
                "--db".into(),
                d("auc.sqlite"),
                "--tls".into(),
                d("missing"),
            ],
            "not a directory",
        ),
        (
            vec![
                "gateway".into(),
                "issue".into(),
                "--ca-dir".into(),
                d("ca"),
                "--role".into(),
                "seller".into(),
                "--name".into(),
                "bad name".into(),
                "--out".into(),
                d("id"),
            ],
            "--name",
        ),
        (
            vec![
                "auc".into(),
                "serve".into(),
                "--db".into(),
                d("auc.sqlite"),
                "--insecure-http".into(),
                "--listen".into(),
                "256.1.1.1:80".into(),
            ],
            "--listen",
        ),
    ];
    for (args, needle) in cases {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let o = simlab(&args);
        let (_, err) = text(&o);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains(needle), "{args:?}: {err}");
    }
    // A second issue into the same directory would replace a key: refused, the key kept.
    let issue = |out: &str| {
        simlab(&[
            "gateway",
            "issue",
            "--ca-dir",
            &d("ca"),
            "--role",
            "operator",
            "--name",
            "alice",
            "--out",
            out,
        ])
    };
    assert!(issue(&d("id")).status.success());
    let key = std::fs::read(dir.join("id/key.pem")).unwrap();
    let again = issue(&d("id"));
    assert_eq!(again.status.code(), Some(2), "{:?}", text(&again));
    assert_eq!(std::fs::read(dir.join("id/key.pem")).unwrap(), key);
    // The key is never printed.
    let (out, err) = text(&issue(&d("id2")));
    let pem = std::fs::read_to_string(dir.join("id2/key.pem")).unwrap();
    let body: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    assert!(!out.contains(&body[..16]) && !err.contains(&body[..16]));
    let _ = std::fs::remove_dir_all(&dir);
}

/// A sysmoSIM-GR1 keeps its ADM as CHV 5: `card update --adm` presents it there (the key
/// blanked in the trace), and, since a TS 51.011 card cannot report its tries, only with
/// --force-adm.
#[test]
fn gr1_adm_is_chv5_and_needs_force() {
    let gr1 = "fixtures/cards/blank-gr1.toml";
    let o = simlab(&[
        "--emulate",
        gr1,
        "card",
        "update",
        "SPN",
        "--data",
        "00",
        "--adm",
        "4444444444444444",
    ]);
    assert_eq!(o.status.code(), Some(1), "{:?}", text(&o));
    assert!(text(&o).1.contains("--force-adm"), "{:?}", text(&o));

    let dir = std::env::temp_dir().join(format!("simlab-gr1-adm-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let trace = dir.join("gr1.trace");
    let o = simlab(&[
        "--emulate",
        gr1,
        "--trace",
        trace.to_str().unwrap(),
        "card",
        "update",
        "SPN",
        "--data",
        "0073696d6c6162ffffffffffffffffffff",
        "--adm",
        "4444444444444444",
        "--force-adm",
    ]);
    assert!(o.status.success(), "{:?}", text(&o));
    let t = std::fs::read_to_string(&trace).unwrap();
    assert!(
        t.contains(">> A0 20 00 05 08 ** ** ** ** ** ** ** **  VERIFY"),
        "{t}"
    );
    assert!(!t.contains("A0 20 00 0A"), "{t}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// `card script` replays a fixture over a transport; placeholders are filled from --profile; a
/// different answer is exit 1 naming the line; a malformed script is exit 2 before any APDU.
#[test]
fn card_script_replays_checks_and_fills_placeholders() {
    let sja2 = "fixtures/cards/blank-sja2.toml";
    let o = simlab(&[
        "--emulate",
        sja2,
        "card",
        "script",
        "fixtures/apdu/program-sja2.apdu",
        "--json",
    ]);
    assert!(o.status.success(), "{:?}", text(&o));
    assert_eq!(json(&o)["ok"], true);

    let dir = std::env::temp_dir().join(format!("simlab-script-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let original = std::fs::read_to_string(root().join("fixtures/apdu/program-sja2.apdu")).unwrap();
    // The recorded ADM replaced by its placeholder: the profile supplies it at replay.
    let with_placeholder = original.replacen(
        "> 00 20 00 0A 08 38 38 38 38 38 38 38 38",
        "> 00 20 00 0A 08 ${ADM1}",
        1,
    );
    assert_ne!(with_placeholder, original);
    let script = dir.join("placeholder.apdu");
    std::fs::write(&script, &with_placeholder).unwrap();
    let script = script.to_str().unwrap();
    let o = simlab(&[
        "--emulate",
        sja2,
        "card",
        "script",
        script,
        "--profile",
        sja2,
    ]);
    assert!(o.status.success(), "{:?}", text(&o));
    let o = simlab(&["--emulate", sja2, "card", "script", script]);
    assert_eq!(o.status.code(), Some(2), "{:?}", text(&o));
    assert!(text(&o).1.contains("${ADM1}"), "{:?}", text(&o));

    // One expected status word changed: the replay stops there.
    let wrong = dir.join("wrong.apdu");
    std::fs::write(&wrong, original.replacen("< 63 C3", "< 63 C2", 1)).unwrap();
    let o = simlab(&["--emulate", sja2, "card", "script", wrong.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1), "{:?}", text(&o));
    assert!(
        text(&o).0.contains(":7: the card answered differently"),
        "{:?}",
        text(&o)
    );
    assert!(text(&o).0.contains("expected 63 C2"), "{:?}", text(&o));

    let bad = dir.join("bad.apdu");
    std::fs::write(&bad, "@profile x.toml\n> 00 A4 00 0G\n< 90 00\n").unwrap();
    let o = simlab(&["--emulate", sja2, "card", "script", bad.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2), "{:?}", text(&o));
    assert!(text(&o).1.contains("line 2: not hex"), "{:?}", text(&o));
    let _ = std::fs::remove_dir_all(&dir);
}

/// `card apdu`: T=0 done for you by default, nothing done with --raw; a malformed APDU is exit 2
/// before anything is sent.
#[test]
fn card_apdu_with_and_without_t0_help() {
    let o = simlab(&[
        "--emulate",
        COMP128,
        "card",
        "apdu",
        "A0A40000023F00",
        "--raw",
        "--json",
    ]);
    assert!(o.status.success(), "{:?}", text(&o));
    assert_eq!(json(&o)["exchanges"][0]["sw"], "9f17");
    let o = simlab(&[
        "--emulate",
        COMP128,
        "card",
        "apdu",
        "A0A40000023F00",
        "--json",
    ]);
    assert!(o.status.success(), "{:?}", text(&o));
    let v = json(&o);
    assert_eq!(v["exchanges"][0]["sw"], "9000");
    assert_eq!(v["exchanges"][0]["data"].as_str().unwrap().len(), 2 * 0x17);
    for bad in ["A0A4", "A0A40000023F", "zz"] {
        let o = simlab(&["--emulate", COMP128, "card", "apdu", bad]);
        assert_eq!(o.status.code(), Some(2), "{bad}: {:?}", text(&o));
    }
}
