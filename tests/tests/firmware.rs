//! simlab-firmware under QEMU: the `simlab` CLI against the firmware's UART on a TCP socket,
//! through `scripts/qemu-token` (which builds the lm3s6965evb board, starts QEMU, personalises
//! the token from a profile and prints `SIMLAB_SERIAL=tcp:127.0.0.1:PORT`).
//!
//! Every QEMU runs under a [`Process`] guard (and the script's own `--timeout`), so none
//! outlives its test. Nothing here asserts on time.

use simlab_applet::checksum::{crc8, crc32};
use simlab_hil::{Process, json, profile, require, simlab, temp_path, text, workspace_root};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// How long a token may take to come up: the first start builds the firmware.
const READY_WITHIN: Duration = Duration::from_secs(900);
/// QEMU stops by itself after this long, whatever happens to the test.
const QEMU_TIMEOUT_S: &str = "900";

const USIM: &str = "usim-milenage.toml";
const RAND: &str = "23553cbe9637a89d218ae64dae47bf35";

/// A running QEMU token.
struct Token {
    _qemu: Process,
    serial: String,
}

impl Token {
    /// Starts the QEMU token on `flash` (personalising it from `profile` if it is new).
    fn start(profile_name: Option<&str>, flash: &Path, extra: &[&str]) -> Token {
        // QEMU's and the firmware's messages go to a log next to the flash file.
        let log_path = flash.with_extension("log");
        let log = std::fs::File::create(&log_path).expect("log file");
        let mut cmd = Command::new(workspace_root().join("scripts/qemu-token"));
        cmd.arg("--flash")
            .arg(flash)
            .args(["--timeout", QEMU_TIMEOUT_S])
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(log);
        match profile_name {
            Some(p) => {
                cmd.arg("--profile").arg(profile(p));
            }
            None => {
                cmd.arg("--no-personalise");
            }
        }
        let mut qemu = Process::spawn("scripts/qemu-token", &mut cmd);
        let stdout = qemu.stdout().expect("piped stdout");
        // Read the address on a thread so a broken script cannot hang the test.
        let mut lines = BufReader::new(dup(stdout)).lines();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let found = lines
                .by_ref()
                .map_while(Result::ok)
                .find_map(|l| l.strip_prefix("SIMLAB_SERIAL=").map(str::to_string));
            let _ = tx.send(found);
            // Keep draining so the script never blocks on a full pipe.
            for _ in lines.by_ref() {}
        });
        let serial = match rx.recv_timeout(READY_WITHIN) {
            Ok(Some(s)) => s,
            other => panic!(
                "scripts/qemu-token did not report its address ({other:?}); its log:\n{}",
                std::fs::read_to_string(&log_path).unwrap_or_default()
            ),
        };
        Token {
            _qemu: qemu,
            serial,
        }
    }

    /// Runs `simlab --serial <token> args…`.
    fn simlab(&self, args: &[&str]) -> std::process::Output {
        let mut all = vec!["--serial", self.serial.as_str()];
        all.extend_from_slice(args);
        simlab(&all)
    }

    fn port(&self) -> u16 {
        self.serial.rsplit(':').next().unwrap().parse().unwrap()
    }
}

/// The script's stdout as an owned reader (the guard keeps the child; the pipe's file
/// descriptor is duplicated, so both can be dropped independently).
fn dup(out: &mut std::process::ChildStdout) -> std::fs::File {
    use std::os::fd::AsFd;
    std::fs::File::from(out.as_fd().try_clone_to_owned().expect("dup stdout"))
}

fn qemu_available() -> bool {
    require("qemu-system-arm")
}

fn ok(o: &std::process::Output) -> serde_json::Value {
    assert!(o.status.success(), "{:?}", text(o));
    json(o)
}

fn p(path: &Path) -> &str {
    path.to_str().unwrap()
}

#[test]
fn card_info_matches_the_emulated_card_and_says_test_only() {
    if !qemu_available() {
        return;
    }
    let flash = temp_path("fw-info.flash");
    let token = Token::start(Some(USIM), &flash, &[]);
    let mut on_board = ok(&token.simlab(&["card", "info", "--json"]));
    let mut emulated = ok(&simlab(&[
        "--emulate",
        p(&profile(USIM)),
        "card",
        "info",
        "--json",
    ]));
    // The QEMU board's ATR says "simlab-v1-TEST": a test-only board announces itself.
    let atr = on_board["atr"].as_str().unwrap().to_string();
    assert!(atr.ends_with(&hex(b"simlab-v1-TEST")), "{atr}");
    on_board["atr"] = serde_json::Value::Null;
    emulated["atr"] = serde_json::Value::Null;
    assert_eq!(on_board, emulated);
    assert_eq!(on_board["imsi"], "001010123456789");
}

#[test]
fn authentication_matches_the_host_computation() {
    if !qemu_available() {
        return;
    }
    let flash = temp_path("fw-auth.flash");
    let token = Token::start(Some(USIM), &flash, &[]);
    let usim = profile(USIM);
    // GSM context (SRES/Kc through the USIM's c2/c3), checked against the profile.
    let v = ok(&token.simlab(&[
        "card",
        "auth",
        "--rand",
        RAND,
        "--check",
        p(&usim),
        "--json",
    ]));
    assert_eq!(
        (v["sres"].as_str(), v["check"].as_str()),
        (Some("46f8416a"), Some("match"))
    );
    // 3G: TS 35.208 set 1's AUTN is fresh once; the replay gets a resync (AUTS), also checked.
    let autn = "55f328b43577b9b94a9ffac354dfafb3";
    let first = ok(&token.simlab(&[
        "card",
        "auth",
        "--rand",
        RAND,
        "--autn",
        autn,
        "--check",
        p(&usim),
        "--json",
    ]));
    assert_eq!(
        (first["res"].as_str(), first["check"].as_str()),
        (Some("a54211d5e3ba50bf"), Some("match"))
    );
    let again = json(&token.simlab(&[
        "card",
        "auth",
        "--rand",
        RAND,
        "--autn",
        autn,
        "--check",
        p(&usim),
        "--json",
    ]));
    assert!(again["auts"].is_string(), "{again}");
    assert_eq!(again["check"], "match");
}

#[test]
fn wrong_pins_block_and_the_block_survives_a_qemu_restart() {
    if !qemu_available() {
        return;
    }
    let flash = temp_path("fw-pin.flash");
    let verify =
        |t: &Token, pin: &str| json(&t.simlab(&["card", "verify-pin", "--pin", pin, "--json"]));
    {
        let token = Token::start(Some(USIM), &flash, &[]);
        let v = verify(&token, "9999");
        assert_eq!(
            (v["verified"].as_bool(), v["tries_left"].as_u64()),
            (Some(false), Some(2))
        );
        assert_eq!(verify(&token, "9998")["tries_left"], 1);
        let v = verify(&token, "9997");
        assert_eq!(
            (v["blocked"].as_bool(), v["tries_left"].as_u64()),
            (Some(true), Some(0))
        );
        // Blocked means blocked, even for the right PIN.
        assert_eq!(verify(&token, "1234")["blocked"], true);
    }
    // QEMU is gone (its guard stopped it); a new one on the same flash remembers.
    let token = Token::start(Some(USIM), &flash, &[]);
    let info = ok(&token.simlab(&["card", "info", "--json"]));
    assert_eq!(info["pin1_tries"], 0);
    assert_eq!(verify(&token, "1234")["blocked"], true);
}

/// The token's key pair on the MCU; its signature checked by openssl against its public key.
#[test]
fn token_keygen_and_sign_verified_by_openssl() {
    if !qemu_available() || !require("openssl") {
        return;
    }
    let flash = temp_path("fw-sign.flash");
    let token = Token::start(Some(USIM), &flash, &[]);
    let keygen = ok(&token.simlab(&["token", "keygen", "--pin", "0000", "--json"]));
    let pem = keygen["public_key_pem"].as_str().unwrap().to_string();
    let pubkey = ok(&token.simlab(&["token", "pubkey", "--json"]));
    assert_eq!(pubkey["public_key_pem"], pem.as_str());

    let pem_file = temp_path("fw-sign.pem");
    std::fs::write(&pem_file, &pem).unwrap();
    let openssl_verifies = |data_file: &Path, sig_file: &Path| {
        let o = Command::new("openssl")
            .args(["dgst", "-sha256", "-verify"])
            .arg(&pem_file)
            .arg("-signature")
            .arg(sig_file)
            .arg(data_file)
            .output()
            .expect("run openssl");
        o.status.success()
    };
    // A short message in one APDU; a long one goes by command chaining, and only its last
    // command waits for the (simulated) button.
    let long: Vec<u8> = (0..700u32).map(|i| (i * 7 % 251) as u8).collect();
    let messages: [&[u8]; 2] = [b"invoice 2026-0042: 3 widgets, EUR 1234", &long];
    for (i, data) in messages.into_iter().enumerate() {
        let data_file = temp_path(&format!("fw-sign-{i}.data"));
        std::fs::write(&data_file, data).unwrap();
        let sig_file = temp_path(&format!("fw-sign-{i}.der"));
        let sign = ok(&token.simlab(&[
            "token",
            "sign",
            "--data",
            &hex(data),
            "--pin",
            "0000",
            "--out",
            p(&sig_file),
            "--json",
        ]));
        assert_eq!(sign["data_len"], data.len());
        assert!(openssl_verifies(&data_file, &sig_file), "message {i}");
        // A changed message does not verify.
        let mut changed = data.to_vec();
        changed[3] ^= 0x01;
        std::fs::write(&data_file, &changed).unwrap();
        assert!(!openssl_verifies(&data_file, &sig_file), "message {i}");
    }
}

/// Seed 002 on the firmware: `simlab token sign --request` over the serial link. The token
/// shows the request's fields on its console (semihosting, QEMU's stderr) before it waits for
/// the (simulated) button — they are there when the host hears the first WAIT — and the
/// signature openssl checks is over exactly the file's bytes. A file that is no request is
/// exit 2 and never reaches the token.
#[test]
fn sign_request_is_shown_on_the_token_console_then_signed() {
    use simlab_applet::token::request::{CORRELATOR_LEN, MAX_LEN, SignRequest};
    if !qemu_available() || !require("openssl") {
        return;
    }
    let flash = temp_path("fw-sign-request.flash");
    let log_path = flash.with_extension("log");
    let token = Token::start(Some(USIM), &flash, &[]);
    let keygen = ok(&token.simlab(&["token", "keygen", "--pin", "0000", "--json"]));
    let pem_file = temp_path("fw-sign-request.pem");
    std::fs::write(&pem_file, keygen["public_key_pem"].as_str().unwrap()).unwrap();

    let summary = "Tulips for Grace, delivered Friday — ".repeat(4);
    let req = SignRequest {
        server_id: "sign.example",
        tx_id: [0x42; 16],
        user_id: "grace",
        amount: 4250,
        currency: *b"EUR",
        summary: &summary,
        content_hash: [0x24; 32],
        correlator: [0; CORRELATOR_LEN],
        issued_at: 1_800_000_000,
        expires_at: 1_800_000_300,
    };
    let mut buf = [0u8; MAX_LEN];
    let n = req.encode(&mut buf).unwrap();
    assert!(n > 255, "goes by command chaining");
    let bytes = &buf[..n];
    let correlator = SignRequest::decode(bytes)
        .unwrap()
        .correlator_str()
        .to_string();
    let req_file = temp_path("fw-sign-request.bin");
    std::fs::write(&req_file, bytes).unwrap();
    let sig_file = temp_path("fw-sign-request.der");

    let mut child = Process::spawn(
        "simlab token sign --request",
        Command::new(simlab_hil::simlab_bin())
            .args(["--serial", &token.serial, "--json", "token", "sign"])
            .args([
                "--request",
                p(&req_file),
                "--pin",
                "0000",
                "--out",
                p(&sig_file),
            ])
            .envs(simlab_hil::bench_env())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped()),
    );
    let mut stdout = dup(child.stdout().expect("piped stdout"));
    let stderr = {
        use std::os::fd::AsFd;
        let e = child.stderr().expect("piped stderr");
        std::fs::File::from(e.as_fd().try_clone_to_owned().expect("dup stderr"))
    };
    let mut err_lines = BufReader::new(stderr).lines();
    let mut heard = String::new();
    for line in err_lines.by_ref() {
        let line = line.unwrap();
        heard.push_str(&line);
        heard.push('\n');
        if line.contains("press the token's button") {
            break;
        }
    }
    assert!(
        heard.contains("press the token's button"),
        "no WAIT: {heard}"
    );
    // The token waits only after it showed: the console already has every field.
    let console = std::fs::read_to_string(&log_path).unwrap();
    let expected = [
        "simlab-token: sign request from sign.example".to_string(),
        "simlab-token: amount:     42.50 EUR".into(),
        format!("simlab-token: summary:    {summary}"),
        "simlab-token: user:       grace".into(),
        format!("simlab-token: correlator: {correlator}"),
        "simlab-token: press the button to sign".into(),
    ];
    let lines: Vec<&str> = console.lines().collect();
    let at = lines
        .iter()
        .position(|l| *l == expected[0])
        .unwrap_or_else(|| panic!("the console shows no request:\n{console}"));
    assert_eq!(
        lines[at..(at + expected.len()).min(lines.len())],
        expected.iter().map(String::as_str).collect::<Vec<_>>()[..],
        "{console}"
    );
    for _ in err_lines.by_ref() {}
    let status = child.wait().expect("simlab exits");
    let mut out = String::new();
    stdout.read_to_string(&mut out).unwrap();
    assert!(status.success(), "{out} {heard}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["correlator"], correlator.as_str());
    assert_eq!(v["amount"], 4250);
    assert_eq!(
        std::fs::read(&sig_file).unwrap(),
        unhex(v["signature_der"].as_str().unwrap())
    );
    let openssl_verifies = |data: &Path| {
        Command::new("openssl")
            .args(["dgst", "-sha256", "-verify"])
            .arg(&pem_file)
            .arg("-signature")
            .arg(&sig_file)
            .arg(data)
            .output()
            .expect("run openssl")
            .status
            .success()
    };
    assert!(openssl_verifies(&req_file));
    let mut changed = bytes.to_vec();
    changed[n - 1] ^= 1;
    let changed_file = temp_path("fw-sign-request-changed.bin");
    std::fs::write(&changed_file, &changed).unwrap();
    assert!(!openssl_verifies(&changed_file));

    // Garbage: exit 2 with the decoder's reason; the token is not asked, shows nothing more.
    let shown_before = std::fs::read_to_string(&log_path).unwrap();
    let garbage = temp_path("fw-sign-request-garbage.bin");
    std::fs::write(&garbage, b"\x00\x16simlab-sign-request-v1 and then nothing").unwrap();
    let o = token.simlab(&["token", "sign", "--request", p(&garbage), "--pin", "0000"]);
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(2), "{out} {err}");
    assert!(err.contains("not a simlab-sign-request-v1"), "{err}");
    assert_eq!(std::fs::read_to_string(&log_path).unwrap(), shown_before);
}

#[test]
fn token_key_and_pin_counter_survive_a_qemu_restart() {
    if !qemu_available() {
        return;
    }
    let flash = temp_path("fw-token-restart.flash");
    let pem = {
        let token = Token::start(Some(USIM), &flash, &[]);
        let k = ok(&token.simlab(&["token", "keygen", "--pin", "0000", "--json"]));
        let wrong = json(&token.simlab(&["token", "verify-pin", "--pin", "9999", "--json"]));
        assert_eq!(
            (wrong["verified"].as_bool(), wrong["tries_left"].as_u64()),
            (Some(false), Some(2))
        );
        k["public_key_pem"].as_str().unwrap().to_string()
    };
    let token = Token::start(Some(USIM), &flash, &[]);
    let again = ok(&token.simlab(&["token", "pubkey", "--json"]));
    assert_eq!(again["public_key_pem"], pem.as_str());
    let wrong = json(&token.simlab(&["token", "verify-pin", "--pin", "9999", "--json"]));
    assert_eq!(wrong["tries_left"], 1, "{wrong}");
}

/// No press of the (simulated) button: the signature is refused with 6985.
#[test]
fn sign_without_user_presence_is_refused() {
    if !qemu_available() {
        return;
    }
    let flash = temp_path("fw-presence.flash");
    let token = Token::start(Some(USIM), &flash, &["--presence", "never"]);
    ok(&token.simlab(&["token", "keygen", "--pin", "0000", "--json"]));
    let o = token.simlab(&["token", "sign", "--data", "00", "--pin", "0000", "--json"]);
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(1), "{out} {err}");
    assert!(err.contains("6985") || err.contains("button"), "{err}");
}

#[test]
fn a_factory_token_refuses_apdus_until_personalised() {
    if !qemu_available() {
        return;
    }
    let flash = temp_path("fw-factory.flash");
    let token = Token::start(None, &flash, &[]);
    let o = token.simlab(&["card", "info", "--json"]);
    assert_eq!(o.status.code(), Some(1), "{:?}", text(&o));
    assert!(text(&o).1.contains("not personalised"), "{:?}", text(&o));
    let tool = simlab_hil::target_dir().join("debug/examples/personalise");
    let status = Command::new(tool)
        .args(["--profile", p(&profile(USIM)), "--serial", &token.serial])
        .status()
        .expect("run personalise");
    assert!(status.success());
    ok(&token.simlab(&["card", "info", "--json"]));
}

/// Garbage, a frame cut short by a host that then vanishes, an oversized frame: the firmware
/// answers with errors or skips, stays responsive, and loses no state.
#[test]
fn bad_input_on_the_link_never_hangs_or_loses_state() {
    if !qemu_available() {
        return;
    }
    let flash = temp_path("fw-garbage.flash");
    let token = Token::start(Some(USIM), &flash, &[]);
    let wrong = json(&token.simlab(&["card", "verify-pin", "--pin", "9999", "--json"]));
    assert_eq!(wrong["tries_left"], 2);
    let before = ok(&token.simlab(&["card", "info", "--json"]));

    // A client that sends garbage and half a frame, then disconnects.
    {
        let mut s = TcpStream::connect(("127.0.0.1", token.port())).unwrap();
        s.write_all(b"\x00\xffgarbage\xa5\x5a\xa5").unwrap();
        // A VERIFY with a wrong PIN, cut after 9 of its 24 bytes.
        let verify = [
            0x00, 0x20, 0x00, 0x01, 0x08, b'9', b'9', b'9', b'9', 0xFF, 0xFF, 0xFF, 0xFF,
        ];
        let frame = frame(0x01, 0x07, &verify);
        assert_eq!(frame.len(), 24);
        s.write_all(&frame[..9]).unwrap();
    }
    // Another that announces a frame far beyond the limit and then sends its bytes: the card
    // answers TOO LONG from the header alone.
    {
        let mut s = TcpStream::connect(("127.0.0.1", token.port())).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        let mut header = [0xA5, 0x5A, 0x01, 0x42, 0x10, 0x00, 0x00];
        header[6] = crc8(&header[..6]);
        s.write_all(&[0u8; 283]).unwrap();
        s.write_all(&header).unwrap();
        // Error frames: maybe one about the cut frame the preamble completed, then ours.
        let mut reply = Vec::new();
        let mut buf = [0u8; 64];
        let found = loop {
            if let Some(at) = reply.windows(4).position(|w| w == [0xA5, 0x5A, 0xFF, 0x42])
                && reply.len() >= at + 8
            {
                break Some(reply[at + 7]);
            }
            match s.read(&mut buf) {
                Ok(0) | Err(_) => break None,
                Ok(n) => reply.extend_from_slice(&buf[..n]),
            }
        };
        assert_eq!(found, Some(0x02), "no TOO LONG error frame: {reply:02x?}");
        s.write_all(&[0x77; 4096]).unwrap();
    }
    // The next host resynchronises and finds everything as it was.
    let after = ok(&token.simlab(&["card", "info", "--json"]));
    assert_eq!(after, before);
    assert_eq!(after["pin1_tries"], 2);
}

/// A link frame (docs/link-protocol.md), built here independently of both implementations.
fn frame(kind: u8, seq: u8, payload: &[u8]) -> Vec<u8> {
    let len = (payload.len() as u16).to_be_bytes();
    let mut f = vec![0xA5, 0x5A, kind, seq, len[0], len[1]];
    f.push(crc8(&f));
    f.extend_from_slice(payload);
    let crc = crc32(&f);
    f.extend_from_slice(&crc.to_be_bytes());
    f
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
