//! The seed-000 commands as a user meets them without any server running: exit codes for bad
//! input (2) and for an unreachable peer (1), help that teaches, and secrets that never show
//! up in the demo's output. The services themselves are tested as real processes in
//! tests/tests/pki.rs.

mod common;
use common::{simlab, text};

const PHONE: &str = "fixtures/cards/demo-usim.toml";
/// The demo subscriber's Ki and OPc (fixtures/cards/demo-usim.toml).
const DEMO_KI: &str = "8e27b6af0e692e750f32667a3b14605d";

/// A loopback port nothing listens on.
fn closed_port() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    drop(l);
    format!("https://127.0.0.1:{port}")
}

#[test]
fn bad_arguments_exit_2_and_name_the_argument() {
    let cases: &[(&[&str], &str)] = &[
        (
            &["ms", "enroll", "--gateway", "https://x:1", "--pin", "0000"],
            "--ca",
        ),
        (
            &["ms", "enroll", "--gateway", "http://x:1", "--pin", "0000"],
            "--insecure-http",
        ),
        (
            &[
                "ms",
                "enroll",
                "--gateway",
                "http://127.0.0.1:1",
                "--insecure-http",
                "--pin",
                "12",
            ],
            "--pin",
        ),
        (
            &[
                "ms",
                "enroll",
                "--gateway",
                "http://127.0.0.1:1",
                "--insecure-http",
                "--pin",
                "0000",
                "--currency",
                "euro",
            ],
            "restrictions",
        ),
        (
            &[
                "ms",
                "enroll",
                "--gateway",
                "http://127.0.0.1:1",
                "--insecure-http",
                "--pin",
                "0000",
                "--period",
                "1",
            ],
            "restrictions",
        ),
        (
            &[
                "ms",
                "enroll",
                "--gateway",
                "http://127.0.0.1:1",
                "--insecure-http",
                "--pin",
                "0000",
                "--alias",
                &"x".repeat(65),
            ],
            "--alias",
        ),
        (
            &[
                "buy", "--seller", "ftp://x", "--item", "coffee", "--pin", "0000",
            ],
            "--seller",
        ),
        (
            &[
                "gateway",
                "serve",
                "--db",
                "/tmp/x.sqlite",
                "--ca-dir",
                "/tmp/x",
                "--auc",
                "http://127.0.0.1:1",
                "--insecure-http",
                "--triplets",
                "1",
            ],
            "--triplets",
        ),
        (
            &[
                "gateway",
                "add-seller",
                "--db",
                "/tmp/x.sqlite",
                "--seller-id",
                "a b",
            ],
            "--seller-id",
        ),
        (
            &[
                "gateway",
                "revoke",
                "--db",
                "/tmp/x.sqlite",
                "--serial",
                "xyz",
            ],
            "--serial",
        ),
        (
            &[
                "seller",
                "serve",
                "--db",
                "/tmp/x.sqlite",
                "--gateway",
                "http://127.0.0.1:1",
                "--insecure-http",
                "--seller-id",
                "s",
                "--item",
                "coffee",
            ],
            "--item",
        ),
        (
            &["auc", "import", "--db", "/tmp/x.sqlite"],
            "--profile/--csv",
        ),
        (
            &[
                "auc",
                "import",
                "--db",
                "/tmp/simlab-auc-x.sqlite",
                "--profile",
                "fixtures/cards/nope.toml",
            ],
            "nope.toml",
        ),
    ];
    for (args, name) in cases {
        let o = simlab(args);
        let (_, err) = text(&o);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains(name), "{args:?} should name {name}: {err}");
    }
}

#[test]
fn an_unreachable_gateway_or_an_empty_token_exits_1() {
    let dir = std::env::temp_dir().join(format!("simlab-pki-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let state = dir.join("phone.state");
    let _ = std::fs::remove_file(&state);
    let url = closed_port();
    // The CA the phone pins, from `gateway issue` (which creates it).
    let ca_dir = dir.join("ca");
    let _ = std::fs::remove_dir_all(&ca_dir);
    let _ = std::fs::remove_dir_all(dir.join("op-tls"));
    let o = simlab(&[
        "gateway",
        "issue",
        "--ca-dir",
        ca_dir.to_str().unwrap(),
        "--role",
        "operator",
        "--name",
        "ops",
        "--out",
        dir.join("op-tls").to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{:?}", text(&o));
    let ca = ca_dir.join("ca.pem");
    let ca = ca.to_str().unwrap();
    let o = simlab(&[
        "--emulate",
        PHONE,
        "ms",
        "enroll",
        "--gateway",
        &url,
        "--ca",
        ca,
        "--pin",
        "0000",
        "--sim-pin",
        "1234",
        "--state",
        state.to_str().unwrap(),
    ]);
    let (_, err) = text(&o);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("cannot connect"), "{err}");
    // The buyer without a certificate is told to enroll first, before any network.
    let o = simlab(&[
        "--emulate",
        PHONE,
        "buy",
        "--seller",
        &url,
        "--ca",
        ca,
        "--item",
        "coffee",
        "--pin",
        "0000",
        "--state",
        state.to_str().unwrap(),
    ]);
    let (_, err) = text(&o);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("simlab ms enroll"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn help_names_the_messages() {
    for (args, needle) in [
        (&["gateway", "serve", "--help"][..], "210"),
        (&["ms", "enroll", "--help"][..], "M1"),
        (&["buy", "--help"][..], "nothing was signed"),
        (&["seller", "serve", "--help"][..], "still valid"),
        (&["auc", "serve", "--help"][..], "quintet"),
    ] {
        let o = simlab(args);
        assert!(o.status.success());
        assert!(text(&o).0.contains(needle), "{args:?}");
    }
    // The operator's bench stays out of the way.
    assert!(!text(&simlab(&["gateway", "--help"])).0.contains("bench"));
}

#[test]
fn the_demo_never_shows_a_secret() {
    for args in [&["demo"][..], &["demo", "--json"][..]] {
        let o = simlab(args);
        let (out, err) = text(&o);
        assert!(o.status.success(), "{err}");
        let all = (out + &err).to_ascii_lowercase();
        assert!(!all.contains(DEMO_KI), "Ki/OPc in the demo's output");
        assert!(
            !all.contains("private key-----"),
            "a private key in the demo's output"
        );
        // PINs appear nowhere as values either.
        assert!(
            !all.split(|c: char| !c.is_ascii_alphanumeric())
                .any(|w| w == "1234"),
            "the SIM PIN in the demo's output"
        );
    }
}

#[test]
fn the_auc_imports_profiles_and_the_provisioning_csv_and_never_lists_a_key() {
    let dir = std::env::temp_dir().join(format!("simlab-pki-auc-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let db = dir.join("auc.sqlite");
    let _ = std::fs::remove_file(&db);
    let db = db.to_str().unwrap();
    let o = simlab(&[
        "auc",
        "import",
        "--db",
        db,
        "--csv",
        "fixtures/provision/batch.csv",
        "--profile",
        PHONE,
        "--json",
    ]);
    assert!(o.status.success(), "{:?}", text(&o));
    let o = simlab(&["auc", "list", "--db", db, "--json"]);
    let (out, _) = text(&o);
    let list: serde_json::Value = serde_json::from_str(&out).unwrap();
    let imsis: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["imsi"].as_str().unwrap())
        .collect();
    assert_eq!(imsis.len(), 5, "{list}");
    assert!(imsis.contains(&"001010000000042"));
    assert!(!out.to_ascii_lowercase().contains(DEMO_KI));
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(db).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "the subscriber database holds Ki");
    let _ = std::fs::remove_dir_all(&dir);
}
