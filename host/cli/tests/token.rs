//! The token applet from the host: the `simlab token` CLI on an emulated card, signatures
//! checked by openssl (an independent verifier), and the seed-000 bootstrap played end to end
//! with the host acting as gateway and AuC — the mobile station's calls against the card model.

mod common;
use common::{json, root, simlab, text};

use simlab_applet::Card;
use simlab_applet::card::RESPONSE_MAX;
use simlab_card::auc;
use simlab_card::error::Error;
use simlab_card::profile::Profile;
use simlab_card::token::bootstrap::{self, BeginRequest};
use simlab_card::token::request;
use simlab_card::token::{BootstrapOutcome, PinOutcome, PublicKey, TokenSession};
use simlab_card::transport::inproc::InProcess;
use simlab_card::transport::{Link, Transport, TransportError};
use std::cell::RefCell;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::rc::Rc;

const MILENAGE: &str = "fixtures/cards/usim-milenage.toml";
const COMP128: &str = "fixtures/cards/sim-comp128v1.toml";
const PIN: [u8; 8] = *b"0000\xFF\xFF\xFF\xFF";

/// A fresh directory for one test's files.
fn temp_dir(test: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("simlab-token-{}-{test}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn openssl(args: &[&str], dir: &Path) -> Output {
    Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("openssl is installed")
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

/// A token session on an in-process card built from `profile`.
fn session(profile: &str, seed: u8) -> TokenSession {
    let p = Profile::load(&root().join(profile)).unwrap();
    let card = InProcess::new(p.build_card_seeded([seed; 32]), "test card");
    TokenSession::open(Link::new(Box::new(card))).unwrap()
}

/// `openssl dgst -sha256 -verify`: does openssl accept `signature` over `data` by `key`?
fn openssl_verifies(dir: &Path, key: &PublicKey, data: &[u8], signature: &[u8]) -> bool {
    std::fs::write(dir.join("pub.pem"), key.to_pem()).unwrap();
    std::fs::write(dir.join("data.bin"), data).unwrap();
    std::fs::write(dir.join("sig.der"), signature).unwrap();
    let o = openssl(
        &[
            "dgst",
            "-sha256",
            "-verify",
            "pub.pem",
            "-signature",
            "sig.der",
            "data.bin",
        ],
        dir,
    );
    let (out, err) = text(&o);
    assert!(
        o.status.success() || out.contains("Verification failure"),
        "openssl failed to run: {out} {err}"
    );
    o.status.success() && out.contains("Verified OK")
}

// ----- signatures, checked by openssl --------------------------------------------------------

#[test]
fn openssl_verifies_token_signatures_short_and_long() {
    let dir = temp_dir("sign");
    let mut token = session(MILENAGE, 3);
    assert_eq!(token.verify_pin(&PIN).unwrap(), PinOutcome::Verified);
    let key = token.generate_key(false).unwrap();
    assert_eq!(token.public_key().unwrap(), Some(key));

    let short = b"invoice 42: 1250 cents to seller 7".to_vec();
    // Longer than one APDU: goes by chaining (or one extended APDU where the card's routing
    // does not pass chained commands to the applet).
    let long: Vec<u8> = (0..1500u32).map(|i| (i * 31 % 251) as u8).collect();
    for data in [short, long] {
        let signature = token.sign(&data).unwrap();
        assert!(
            openssl_verifies(&dir, &key, &data, &signature),
            "{} bytes",
            data.len()
        );
        let mut altered = data.clone();
        altered[0] ^= 1;
        assert!(!openssl_verifies(&dir, &key, &altered, &signature));
    }
}

#[test]
fn the_cli_key_is_a_p256_key_openssl_reads() {
    let dir = temp_dir("keygen");
    let o = simlab(&[
        "--emulate",
        MILENAGE,
        "token",
        "keygen",
        "--pin",
        "0000",
        "--json",
    ]);
    assert!(o.status.success(), "{:?}", text(&o));
    let v = json(&o);
    let pem = v["public_key_pem"].as_str().unwrap();
    assert!(pem.starts_with("-----BEGIN PUBLIC KEY-----\n"));
    assert_eq!(unhex(v["public_key"].as_str().unwrap()).len(), 65);
    std::fs::write(dir.join("pub.pem"), pem).unwrap();
    let o = openssl(
        &["pkey", "-pubin", "-in", "pub.pem", "-noout", "-text"],
        &dir,
    );
    let (out, err) = text(&o);
    assert!(o.status.success(), "{err}");
    assert!(out.contains("prime256v1"), "{out}");
    assert!(
        out.contains(&v["public_key"].as_str().unwrap()[..2]),
        "{out}"
    );

    // Plain output is the PEM itself, ready for a file.
    let o = simlab(&["--emulate", MILENAGE, "token", "keygen", "--pin", "0000"]);
    assert!(text(&o).0.starts_with("-----BEGIN PUBLIC KEY-----"));
}

/// keygen, pubkey and sign in separate runs share the emulated card through `--state`.
#[test]
fn cli_signatures_verify_with_openssl_across_runs() {
    let dir = temp_dir("cli-sign");
    let state = dir.join("card.state");
    let state = state.to_str().unwrap();
    let run = |args: &[&str]| {
        let mut all = vec!["--emulate", MILENAGE, "--json"];
        all.extend_from_slice(args);
        all.extend_from_slice(&["--state", state]);
        simlab(&all)
    };
    let o = run(&["token", "keygen", "--pin", "0000"]);
    assert!(o.status.success(), "{:?}", text(&o));
    let pem = json(&o)["public_key_pem"].as_str().unwrap().to_string();
    let o = run(&["token", "pubkey"]);
    assert_eq!(json(&o)["public_key_pem"].as_str(), Some(pem.as_str()));
    let o = run(&["token", "keygen", "--pin", "0000"]);
    assert_eq!(o.status.code(), Some(1), "an existing key is not replaced");
    assert!(text(&o).1.contains("--force"), "{:?}", text(&o));

    let data: Vec<u8> = (0..600u32).map(|i| i as u8).collect();
    let o = run(&["token", "sign", "--data", &hex(&data), "--pin", "0000"]);
    assert!(o.status.success(), "{:?}", text(&o));
    let v = json(&o);
    let signature = unhex(v["signature_der"].as_str().unwrap());
    assert_eq!(v["public_key_pem"].as_str(), Some(pem.as_str()));
    std::fs::write(dir.join("pub.pem"), &pem).unwrap();
    std::fs::write(dir.join("data.bin"), &data).unwrap();
    std::fs::write(dir.join("sig.der"), &signature).unwrap();
    let o = openssl(
        &[
            "dgst",
            "-sha256",
            "-verify",
            "pub.pem",
            "-signature",
            "sig.der",
            "data.bin",
        ],
        &dir,
    );
    assert!(o.status.success(), "{:?}", text(&o));

    // The PIN counter is part of the memory too: a wrong PIN stays spent.
    let o = run(&["token", "verify-pin", "--pin", "9999"]);
    assert_eq!(json(&o)["tries_left"], 2);
    let o = run(&["token", "info"]);
    assert_eq!(json(&o)["pin_tries_left"], 2);
}

// ----- SIGN REQUEST (seed 002) --------------------------------------------------------------------

/// A seed-002 signature request, encoded with the decoder's own encoder.
fn sign_request_bytes(summary: &str) -> Vec<u8> {
    let r = request::SignRequest {
        server_id: "sign.example",
        tx_id: [0x17; 16],
        user_id: "ada",
        amount: 4250,
        currency: *b"EUR",
        summary,
        content_hash: [0x33; 32],
        correlator: [0; request::CORRELATOR_LEN],
        issued_at: 1_800_000_000,
        expires_at: 1_800_000_300,
    };
    let mut buf = [0u8; request::MAX_LEN];
    let n = r.encode(&mut buf).unwrap();
    buf[..n].to_vec()
}

#[test]
fn sign_request_signatures_verify_with_openssl_and_refusals_are_typed() {
    let dir = temp_dir("sign-request");
    let mut token = session(MILENAGE, 5);
    let short = sign_request_bytes("Flowers for Ada");
    assert!(matches!(
        token.sign_request(&short),
        Err(Error::Refused {
            status: simlab_applet::Status::ReferenceNotFound,
            ..
        })
    ));
    assert_eq!(token.verify_pin(&PIN).unwrap(), PinOutcome::Verified);
    let key = token.generate_key(false).unwrap();
    let long = sign_request_bytes(&"€".repeat(request::SUMMARY_MAX_CHARS));
    assert!(long.len() > 255, "goes by chaining");
    for req in [&short, &long] {
        let signature = token.sign_request(req).unwrap();
        assert!(openssl_verifies(&dir, &key, req, &signature));
        assert_eq!(signature, token.sign(req).unwrap(), "what SIGN gives");
    }
    let mut tampered = short.clone();
    let amount_at = short
        .windows(8)
        .position(|w| w == 4250u64.to_be_bytes())
        .unwrap();
    tampered[amount_at + 7] ^= 1;
    for bad in [b"not a request".to_vec(), tampered] {
        match token.sign_request(&bad) {
            Err(e @ Error::Refused { .. }) => {
                assert!(e.to_string().contains("could not decode"), "{e}")
            }
            other => panic!("{other:?}"),
        }
    }
    assert!(matches!(
        token.sign_request(&vec![0; request::MAX_LEN + 1]),
        Err(Error::Refused {
            status: simlab_applet::Status::WrongLength,
            ..
        })
    ));
    // Re-selecting the token ends its session: the PIN is no longer verified.
    let select =
        simlab_applet::Command::new(0x00, 0xA4, 0x04, 0x0C).with_data(&simlab_applet::token::AID);
    token.link().transmit(&select).unwrap();
    match token.sign_request(&short) {
        Err(e @ Error::Refused { .. }) => assert!(e.to_string().contains("PIN"), "{e}"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn cli_sign_request_shows_the_fields_then_signs_and_refuses_garbage_with_exit_2() {
    let dir = temp_dir("cli-sign-request");
    let state = dir.join("card.state");
    let state = state.to_str().unwrap();
    let run = |args: &[&str]| {
        let mut all = vec!["--emulate", MILENAGE];
        all.extend_from_slice(args);
        all.extend_from_slice(&["--state", state]);
        simlab(&all)
    };
    let o = run(&["--json", "token", "keygen", "--pin", "0000"]);
    assert!(o.status.success(), "{:?}", text(&o));
    let pem = json(&o)["public_key_pem"].as_str().unwrap().to_string();
    std::fs::write(dir.join("pub.pem"), &pem).unwrap();
    let req = sign_request_bytes(&"€".repeat(request::SUMMARY_MAX_CHARS));
    let req_file = dir.join("req.bin");
    std::fs::write(&req_file, &req).unwrap();
    let req_path = req_file.to_str().unwrap();
    let correlator = request::SignRequest::decode(&req)
        .unwrap()
        .correlator_str()
        .to_string();

    let sig_out = dir.join("out.der");
    let o = run(&[
        "token",
        "sign",
        "--request",
        req_path,
        "--pin",
        "0000",
        "--out",
        sig_out.to_str().unwrap(),
    ]);
    let (out, err) = text(&o);
    assert!(o.status.success(), "{out} {err}");
    for line in [
        "server:     sign.example",
        "user:       ada",
        "amount:     42.50 EUR",
        &format!("correlator: {correlator}"),
        "expires:    2027-01-15T08:05:00Z",
    ] {
        assert!(out.contains(line), "{out:?} lacks {line:?}");
    }
    assert!(out.find("amount:").unwrap() < out.find("signature:").unwrap());
    assert!(
        !out.contains("0000") && !err.contains("0000"),
        "the PIN never shows"
    );

    let o = run(&[
        "--json",
        "token",
        "sign",
        "--request",
        req_path,
        "--pin",
        "0000",
    ]);
    assert!(o.status.success(), "{:?}", text(&o));
    let v = json(&o);
    assert_eq!(v["amount"], 4250);
    assert_eq!(v["currency"], "EUR");
    assert_eq!(v["amount_text"], "42.50 EUR");
    assert_eq!(v["user_id"], "ada");
    assert_eq!(v["server_id"], "sign.example");
    assert_eq!(v["correlator"], correlator.as_str());
    assert_eq!(v["expires_at"], 1_800_000_300u64);
    assert_eq!(v["request_len"], req.len());
    std::fs::write(
        dir.join("sig.der"),
        unhex(v["signature_der"].as_str().unwrap()),
    )
    .unwrap();
    let verify = |data: &str| {
        openssl(
            &[
                "dgst",
                "-sha256",
                "-verify",
                "pub.pem",
                "-signature",
                "sig.der",
                data,
            ],
            &dir,
        )
        .status
        .success()
    };
    assert!(verify("req.bin"));
    assert_eq!(
        std::fs::read(&sig_out).unwrap(),
        unhex(v["signature_der"].as_str().unwrap()),
        "RFC 6979: the --out file of the first run is the same signature"
    );

    // Not a request: exit 2 with the decoder's reason, before the card is asked (a wrong PIN
    // would otherwise have spent a try).
    let garbage = dir.join("garbage.bin");
    std::fs::write(&garbage, b"simlab-sign-request-v0 garbage").unwrap();
    let mut tampered = req.clone();
    let amount_at = req
        .windows(8)
        .position(|w| w == 4250u64.to_be_bytes())
        .unwrap();
    tampered[amount_at + 7] ^= 1;
    let tampered_file = dir.join("tampered.bin");
    std::fs::write(&tampered_file, &tampered).unwrap();
    for (file, reason) in [
        (&garbage, "truncated"),
        (
            &tampered_file,
            "the correlator is not the code of the request's content",
        ),
    ] {
        let o = run(&[
            "token",
            "sign",
            "--request",
            file.to_str().unwrap(),
            "--pin",
            "9999",
        ]);
        let (out, err) = text(&o);
        assert_eq!(o.status.code(), Some(2), "{out} {err}");
        assert!(err.contains("--request") && err.contains(reason), "{err}");
        assert!(out.is_empty(), "{out}");
    }
    let o = run(&["--json", "token", "info"]);
    assert_eq!(json(&o)["pin_tries_left"], 3, "nothing reached the card");
    let o = run(&[
        "token",
        "sign",
        "--request",
        "/nonexistent/req.bin",
        "--pin",
        "0000",
    ]);
    assert_eq!(o.status.code(), Some(2), "{:?}", text(&o));
    let o = run(&[
        "token",
        "sign",
        "--request",
        req_path,
        "--data",
        "00",
        "--pin",
        "0000",
    ]);
    assert_eq!(o.status.code(), Some(2), "--data and --request conflict");
}

// ----- the CLI's answers --------------------------------------------------------------------------

#[test]
fn token_cli_refusals_exit_1_and_say_why() {
    let cases: &[(&[&str], &str)] = &[
        (&["token", "pubkey"], "no key yet"),
        (&["token", "keygen"], "PIN must be verified"),
        (
            &["token", "keygen", "--pin", "1234"],
            "wrong token PIN, 2 tries left",
        ),
        (
            &["token", "sign", "--data", "00", "--pin", "0000"],
            "no key yet",
        ),
        (
            &["token", "sign", "--data", "00", "--pin", "1111"],
            "wrong token PIN",
        ),
        (
            &["token", "change-pin", "--pin", "1111", "--new-pin", "2222"],
            "wrong token PIN",
        ),
        (&["token", "certificate"], "no certificate"),
    ];
    for (args, needle) in cases {
        let mut all = vec!["--emulate", MILENAGE];
        all.extend_from_slice(args);
        let o = simlab(&all);
        let (_, err) = text(&o);
        assert_eq!(o.status.code(), Some(1), "{args:?}: {err}");
        assert!(err.contains(needle), "{args:?}: {err:?} lacks {needle:?}");
    }
}

#[test]
fn token_cli_bad_input_exits_2_naming_the_argument() {
    let cases: &[(&[&str], &str)] = &[
        (
            &["--emulate", MILENAGE, "token", "verify-pin", "--pin", "12"],
            "--pin",
        ),
        (
            &["--emulate", MILENAGE, "token", "keygen", "--pin", "12ab"],
            "--pin",
        ),
        (
            &[
                "--emulate",
                MILENAGE,
                "token",
                "sign",
                "--data",
                "xyz",
                "--pin",
                "0000",
            ],
            "--data",
        ),
        (
            &[
                "--emulate",
                MILENAGE,
                "token",
                "sign",
                "--data",
                "",
                "--pin",
                "0000",
            ],
            "--data",
        ),
        (
            &[
                "--emulate",
                MILENAGE,
                "token",
                "change-pin",
                "--pin",
                "0000",
                "--new-pin",
                "1",
            ],
            "--new-pin",
        ),
        (&["token", "info", "--state", "/tmp/x.state"], "--state"),
        (&["token", "info"], "--emulate"),
        (&["token", "sign", "--pin", "0000"], "--data"),
    ];
    for (args, needle) in cases {
        let o = simlab(args);
        let (_, err) = text(&o);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains(needle), "{args:?}: {err:?} lacks {needle:?}");
    }
}

#[test]
fn token_cli_json_and_pin_answers() {
    let o = simlab(&["--emulate", MILENAGE, "--json", "token", "info"]);
    assert!(o.status.success());
    let v = json(&o);
    assert_eq!(
        (
            &v["key"],
            &v["certificate_len"],
            &v["pin_tries_left"],
            &v["seeded"]
        ),
        (&false.into(), &0.into(), &3.into(), &true.into())
    );
    let o = simlab(&[
        "--emulate",
        MILENAGE,
        "--json",
        "token",
        "verify-pin",
        "--pin",
        "0000",
    ]);
    assert_eq!(o.status.code(), Some(0));
    assert_eq!(json(&o)["verified"], true);
    let o = simlab(&[
        "--emulate",
        MILENAGE,
        "--json",
        "token",
        "verify-pin",
        "--pin",
        "9876",
    ]);
    assert_eq!(o.status.code(), Some(1));
    let v = json(&o);
    assert_eq!(
        (&v["verified"], &v["tries_left"]),
        (&false.into(), &2.into())
    );
    let o = simlab(&[
        "--emulate",
        MILENAGE,
        "--json",
        "token",
        "change-pin",
        "--pin",
        "0000",
        "--new-pin",
        "24680",
    ]);
    assert!(o.status.success(), "{:?}", text(&o));
    assert_eq!(json(&o)["changed"], true);
}

#[test]
fn pins_never_show_in_output_or_trace() {
    let dir = temp_dir("trace");
    let trace = dir.join("apdu.trace");
    let o = simlab(&[
        "--emulate",
        MILENAGE,
        "--trace",
        trace.to_str().unwrap(),
        "token",
        "change-pin",
        "--pin",
        "0000",
        "--new-pin",
        "47110815",
    ]);
    assert!(o.status.success(), "{:?}", text(&o));
    let (out, err) = text(&o);
    let transcript = std::fs::read_to_string(&trace).unwrap();
    assert!(transcript.contains("TOKEN CHANGE PIN"), "{transcript}");
    // "0000" and "47110815" as the hex bytes that would carry them.
    for secret in ["30 30 30 30", "34 37 31 31 30 38 31 35"] {
        assert!(
            !transcript.contains(secret),
            "{secret} in trace:\n{transcript}"
        );
    }
    assert!(!out.contains("47110815") && !err.contains("47110815"));
}

// ----- persistence --------------------------------------------------------------------------------

/// A transport over a card the test keeps a handle on, to save and restore its state.
struct Shared(Rc<RefCell<Card>>);

impl Transport for Shared {
    fn transmit_raw(&mut self, capdu: &[u8]) -> Result<Vec<u8>, TransportError> {
        let mut rapdu = [0u8; RESPONSE_MAX];
        let n = self.0.borrow_mut().process(capdu, &mut rapdu);
        Ok(rapdu[..n].to_vec())
    }
    fn reset(&mut self) -> Result<Vec<u8>, TransportError> {
        self.0.borrow_mut().reset();
        Ok(self.0.borrow().atr().to_vec())
    }
    fn atr(&self) -> Vec<u8> {
        self.0.borrow().atr().to_vec()
    }
    fn describe(&self) -> String {
        "shared test card".into()
    }
}

#[test]
fn the_in_process_card_keeps_the_token_key_across_save_and_restore() {
    let profile = Profile::load(&root().join(MILENAGE)).unwrap();
    let card = Rc::new(RefCell::new(profile.build_card_seeded([5; 32])));
    let mut token = TokenSession::open(Link::new(Box::new(Shared(card.clone())))).unwrap();
    token.verify_pin(&PIN).unwrap();
    let key = token.generate_key(false).unwrap();
    assert_eq!(
        token.verify_pin(b"9999\xFF\xFF\xFF\xFF").unwrap(),
        PinOutcome::Wrong { tries_left: 2 }
    );
    let mut saved = vec![0u8; simlab_applet::state::STATE_LEN];
    card.borrow().save_state(&mut saved);

    let restored = Rc::new(RefCell::new(profile.build_card_seeded([6; 32])));
    restored.borrow_mut().restore_state(&saved).unwrap();
    let mut token = TokenSession::open(Link::new(Box::new(Shared(restored)))).unwrap();
    assert_eq!(token.public_key().unwrap(), Some(key), "the key survives");
    assert_eq!(
        token.info().unwrap().pin_tries_left,
        2,
        "and so does the spent try"
    );
    token.verify_pin(&PIN).unwrap();
    let dir = temp_dir("persist");
    let signature = token.sign(b"after restore").unwrap();
    assert!(openssl_verifies(&dir, &key, b"after restore", &signature));
}

// ----- the bootstrap, with the host as gateway and AuC -------------------------------------------

/// An X.509 certificate for the token's key, issued by a throw-away CA with openssl — what the
/// gateway of seed 000 issues in message 260.
fn certificate_for(dir: &Path, key: &PublicKey) -> Vec<u8> {
    std::fs::write(dir.join("token.pem"), key.to_pem()).unwrap();
    let steps: &[&[&str]] = &[
        &[
            "ecparam",
            "-name",
            "prime256v1",
            "-genkey",
            "-noout",
            "-out",
            "ca.key",
        ],
        &[
            "req",
            "-new",
            "-x509",
            "-key",
            "ca.key",
            "-subj",
            "/CN=simlab test gateway",
            "-days",
            "1",
            "-out",
            "ca.crt",
        ],
        &[
            "req",
            "-new",
            "-key",
            "ca.key",
            "-subj",
            "/CN=alice",
            "-out",
            "sub.csr",
        ],
        &[
            "x509",
            "-req",
            "-in",
            "sub.csr",
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-force_pubkey",
            "token.pem",
            "-set_serial",
            "7",
            "-days",
            "1",
            "-outform",
            "DER",
            "-out",
            "cert.der",
        ],
    ];
    for args in steps {
        let o = openssl(args, dir);
        assert!(o.status.success(), "openssl {args:?}: {:?}", text(&o));
    }
    std::fs::read(dir.join("cert.der")).unwrap()
}

#[test]
fn gsm_bootstrap_end_to_end_with_a_real_certificate() {
    let dir = temp_dir("boot-gsm");
    let profile = Profile::load(&root().join(COMP128)).unwrap();
    let mut token = session(COMP128, 8);
    token.verify_pin(&PIN).unwrap();
    let key = token.generate_key(false).unwrap();

    // Gateway: three triplets from the AuC (COMP128-1 Kc carry only 54 bits each).
    let rands: Vec<[u8; 16]> = (0..3)
        .map(|_| simlab_card::random::bytes::<16>().unwrap())
        .collect();
    let triplets: Vec<auc::GsmVector> = rands
        .iter()
        .map(|r| auc::gsm(profile.algorithm, &profile.ki, profile.opc.as_ref(), r).unwrap())
        .collect();
    let kcs: Vec<[u8; 8]> = triplets.iter().map(|t| t.kc).collect();
    let k = bootstrap::k_gsm(&kcs, &rands).unwrap();
    let m1 = bootstrap::m1(&k, &rands).unwrap();
    let restrictions = b"limit=5000;count=10/86400";
    let request = BeginRequest::gsm(&rands, m1, restrictions, b"alice").unwrap();

    // Mobile station: the card checks M1 and answers message 250.
    let BootstrapOutcome::Accepted {
        responses,
        public_key,
        m2,
    } = token.bootstrap_begin(&request).unwrap()
    else {
        panic!("no sync failures on the GSM path");
    };
    let sres: Vec<u8> = triplets.iter().flat_map(|t| t.sres).collect();
    assert_eq!(responses, sres, "the SRES the AuC expects");
    assert_eq!(public_key, key);
    let expected = bootstrap::m2(&k, &responses, &public_key.0, restrictions, b"alice").unwrap();
    assert!(
        bootstrap::mac_matches(&expected, &m2),
        "the gateway accepts M2"
    );

    // Gateway: certificate and M3 (message 260); the card stores it only with the right M3.
    let cert = certificate_for(&dir, &public_key);
    assert!(
        cert.len() > 255,
        "a real certificate needs more than one APDU"
    );
    let m3 = bootstrap::m3(&k, &cert).unwrap();
    let mut forged = m3;
    forged[0] ^= 1;
    let err = token.bootstrap_finish(&cert, &forged).unwrap_err();
    assert!(err.to_string().contains("M3 is wrong"), "{err}");
    assert_eq!(token.certificate().unwrap(), None);

    let BootstrapOutcome::Accepted { .. } = token.bootstrap_begin(&request).unwrap() else {
        panic!()
    };
    token.bootstrap_finish(&cert, &m3).unwrap();
    let stored = token.certificate().unwrap().unwrap();
    assert_eq!(stored, cert);
    std::fs::write(dir.join("stored.der"), &stored).unwrap();
    let o = openssl(
        &[
            "x509",
            "-inform",
            "DER",
            "-in",
            "stored.der",
            "-noout",
            "-pubkey",
        ],
        &dir,
    );
    assert_eq!(
        text(&o).0,
        key.to_pem(),
        "the certificate certifies the token's key"
    );
}

#[test]
fn a_forged_gateway_gets_nothing() {
    let profile = Profile::load(&root().join(COMP128)).unwrap();
    let mut token = session(COMP128, 9);
    token.verify_pin(&PIN).unwrap();
    token.generate_key(false).unwrap();
    let rands = [[0x11; 16], [0x22; 16]];
    // A gateway without the AuC's Kc: it can only guess K.
    let m1 = bootstrap::m1(&[0x5A; 32], &rands).unwrap();
    let request = BeginRequest::gsm(&rands, m1, &[], &[]).unwrap();
    let err = token.bootstrap_begin(&request).unwrap_err();
    assert!(
        matches!(err, Error::Refused { status, .. } if status == simlab_applet::token::sw::GATEWAY_AUTH_FAILED),
        "{err:?}"
    );
    assert!(err.to_string().contains("M1 is wrong"), "{err}");
    let err = token.bootstrap_finish(b"0\x00", &[0; 32]).unwrap_err();
    assert!(err.to_string().contains("no bootstrap session"), "{err}");
    // And nothing it could learn: the honest run shows what the card would have released.
    let kcs: Vec<[u8; 8]> = rands
        .iter()
        .map(|r| {
            auc::gsm(profile.algorithm, &profile.ki, None, r)
                .unwrap()
                .kc
        })
        .collect();
    let k = bootstrap::k_gsm(&kcs, &rands).unwrap();
    let honest = BeginRequest::gsm(&rands, bootstrap::m1(&k, &rands).unwrap(), &[], &[]).unwrap();
    assert!(matches!(
        token.bootstrap_begin(&honest).unwrap(),
        BootstrapOutcome::Accepted { .. }
    ));
}

#[test]
fn usim_bootstrap_follows_gba_and_reports_resynchronisation() {
    let profile = Profile::load(&root().join(MILENAGE)).unwrap();
    let mut token = session(MILENAGE, 10);
    token.verify_pin(&PIN).unwrap();
    let key = token.generate_key(false).unwrap();

    // Gateway (as BSF and NAF): a quintet from the AuC with the test set's fresh SQN.
    let rand = simlab_card::random::bytes::<16>().unwrap();
    let sqn = [0xff, 0x9b, 0xb4, 0xd0, 0xb6, 0x07];
    let v = auc::umts(
        profile.algorithm,
        &profile.ki,
        profile.opc.as_ref(),
        &rand,
        &sqn,
        &profile.amf,
    )
    .unwrap();
    let impi = b"001010123456789@ims.mnc001.mcc001.3gppnetwork.org";
    let naf_id = b"gateway.simlab.invalid\x01\x00\x00\x00\x00";
    let k = bootstrap::k_gba(&v.aka.ck, &v.aka.ik, &rand, impi, naf_id).unwrap();
    let m1 = bootstrap::m1(&k, &[rand]).unwrap();
    let request = BeginRequest::aka(rand, v.autn, impi, naf_id, m1, &[], b"alice");
    let BootstrapOutcome::Accepted {
        responses,
        public_key,
        m2,
    } = token.bootstrap_begin(&request).unwrap()
    else {
        panic!("the AUTN is fresh");
    };
    assert_eq!(responses, v.aka.res());
    assert_eq!(public_key, key);
    let expected = bootstrap::m2(&k, &responses, &key.0, &[], b"alice").unwrap();
    assert!(bootstrap::mac_matches(&expected, &m2));
    let cert = b"0\x03\x02\x01\x01";
    token
        .bootstrap_finish(cert, &bootstrap::m3(&k, cert).unwrap())
        .unwrap();

    // The same AUTN again: the card's SQN has moved on, so it answers AUTS, and no K exists.
    match token.bootstrap_begin(&request).unwrap() {
        BootstrapOutcome::SyncFailure { auts } => assert_ne!(auts, [0; 14]),
        other => panic!("expected a sync failure, got {other:?}"),
    }
    let err = token.bootstrap_finish(cert, &[0; 32]).unwrap_err();
    assert!(err.to_string().contains("no bootstrap session"), "{err}");
}
