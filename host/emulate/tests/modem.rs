//! The AT engine and the SMS operations against the virtual modem, through a real pty opened
//! with the serialport crate: every fault the emulator can inject, each quirk profile, the
//! SIM through AT+CSIM, exclusive opening and release.

use simlab_card::transport::Link;
use simlab_card::transport::modem::ModemTransport;
use simlab_emulate::card::EmulatedCard;
use simlab_emulate::modem::{DEFAULT_SIM, Faults, Options, Profile as Quirks, Pty, VirtualModem};
use simlab_modem::sms::WatchEvent;
use simlab_modem::*;
use simlab_sms::{Address, Pdu, SubmitOptions};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

const OWN: &str = "+491700000099";

/// A virtual modem serving a pty from a thread, stopped and joined on drop.
struct Bench {
    path: PathBuf,
    spool: PathBuf,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<bool>>,
    events: Arc<Mutex<Vec<String>>>,
}

impl Bench {
    fn start(profile: Quirks, faults: &str) -> Bench {
        Self::with(Options {
            profile,
            faults: Faults::parse(faults).unwrap(),
            own_number: Some(OWN.into()),
            ..Options::default()
        })
    }

    fn with(mut opts: Options) -> Bench {
        let spool = std::env::temp_dir().join(format!(
            "simlab-modem-test-{}-{}",
            std::process::id(),
            simlab_card::hex::encode(&simlab_card::random::bytes::<6>().unwrap())
        ));
        opts.spool = Some(spool.clone());
        let pty = Pty::open(None).unwrap();
        let path = pty.slave().to_path_buf();
        let profile =
            simlab_card::profile::Profile::parse(std::path::Path::new("test"), DEFAULT_SIM)
                .unwrap();
        let card = EmulatedCard::new(profile.build_card_seeded([7; 32]), None, None).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let events = Arc::new(Mutex::new(Vec::new()));
        let (s, e) = (stop.clone(), events.clone());
        let thread = std::thread::spawn(move || {
            let mut modem = VirtualModem::new(card, opts, None);
            modem
                .serve(pty, &s, &mut |ev| e.lock().unwrap().push(format!("{ev:?}")))
                .unwrap()
        });
        Bench {
            path,
            spool,
            stop,
            thread: Some(thread),
            events,
        }
    }

    fn open(&self) -> Modem {
        self.open_with(Timeouts {
            command: Duration::from_secs(5),
            long: Duration::from_secs(5),
            probe: Duration::from_millis(500),
            prompt: Duration::from_secs(5),
            submit: Duration::from_secs(10),
            sim_busy: Duration::from_secs(10),
            abort: Duration::from_secs(1),
        })
    }

    fn open_with(&self, timeouts: Timeouts) -> Modem {
        Modem::open(
            &self.path,
            OpenOptions {
                timeouts,
                ..OpenOptions::default()
            },
        )
        .unwrap()
    }

    /// The spooled submissions, in order.
    fn spooled(&self) -> Vec<serde_json::Value> {
        let dir = self.spool.join("sent");
        let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
            .map(|d| d.flatten().map(|e| e.path()).collect())
            .unwrap_or_default();
        files.retain(|p| p.extension().is_some_and(|e| e == "json"));
        files.sort();
        files
            .iter()
            .map(|p| serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap())
            .collect()
    }

    fn inbox(&self, name: &str, json: serde_json::Value) {
        let dir = self.spool.join("inbox");
        std::fs::create_dir_all(&dir).unwrap();
        let tmp = dir.join(format!("{name}.tmp"));
        std::fs::write(&tmp, json.to_string()).unwrap();
        std::fs::rename(&tmp, dir.join(format!("{name}.json"))).unwrap();
    }

    /// Waits (bounded) for the modem thread to end by itself, e.g. after `vanish`.
    fn join(&mut self) -> bool {
        self.thread
            .take()
            .map(|t| t.join().unwrap())
            .unwrap_or(false)
    }
}

impl Drop for Bench {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        let _ = std::fs::remove_dir_all(&self.spool);
    }
}

fn encode(to: &str, text: &str, srr: bool) -> Vec<simlab_sms::EncodedPdu> {
    let options = SubmitOptions {
        status_report_request: srr,
        ..SubmitOptions::default()
    };
    simlab_sms::encode_text(&Address::parse(to).unwrap(), text, &options).unwrap()
}

/// Watches until `want` events arrived; fails the test after 20 s rather than hanging.
fn watch_events(m: &mut Modem, keep: bool, want: usize) -> Vec<WatchEvent> {
    let stop: &'static AtomicBool = Box::leak(Box::new(AtomicBool::new(false)));
    let done = Arc::new(AtomicBool::new(false));
    m.at().set_stop(stop);
    let d = done.clone();
    let timer = std::thread::spawn(move || {
        let end = std::time::Instant::now() + Duration::from_secs(20);
        while std::time::Instant::now() < end && !d.load(Ordering::SeqCst) {
            std::thread::sleep(Duration::from_millis(20));
        }
        if !d.load(Ordering::SeqCst) {
            stop.store(true, Ordering::SeqCst);
        }
    });
    let mut got = Vec::new();
    let r = m.watch(keep, Duration::from_secs(60), &mut |e| {
        got.push(e);
        got.len() < want
    });
    done.store(true, Ordering::SeqCst);
    timer.join().unwrap();
    match r {
        Ok(()) => got,
        Err(e) => panic!("watch: {e}; got {got:?}"),
    }
}

const LONG: &str = "This message is long enough to need three parts when it is encoded in the GSM \
7-bit alphabet, because one part holds only 153 characters once the concatenation header takes \
its share, and this text goes on for quite a while longer than two of those parts would hold, \
so that the receiving side has to put three of them back together in the right order before \
it can show the whole of it.";

#[test]
fn info_send_report_and_loopback_on_every_profile() {
    for profile in [
        Quirks::Generic,
        Quirks::Huawei,
        Quirks::Quectel,
        Quirks::Simcom,
    ] {
        let bench = Bench::start(profile, "");
        let mut m = bench.open();
        let info = m.info().unwrap();
        assert_eq!(info.imsi.as_deref(), Some("001010000000099"), "{profile:?}");
        assert_eq!(info.smsc.as_deref(), Some("+491700000000"));
        assert_eq!(info.registration, Some(1));
        assert!(info.manufacturer.is_some() && info.model.is_some());
        m.prepare_sms().unwrap();
        m.enable_indications(true).unwrap();
        let urcs = m.at().subscribe();
        let sent = m.send_pdus(&encode(OWN, "hello me", true)).unwrap();
        assert_eq!(sent.len(), 1);
        let reports = m
            .wait_reports(&urcs, &sent, Duration::from_secs(10))
            .unwrap();
        assert!(
            reports[0]
                .report
                .as_ref()
                .is_some_and(|r| r.status.is_delivered()),
            "{profile:?}: {reports:?}"
        );
        let spool = bench.spooled();
        assert_eq!(spool.len(), 1);
        assert_eq!(spool[0]["to"], OWN);
        assert_eq!(spool[0]["text"], "hello me");
        assert_eq!(spool[0]["mr"], sent[0].mr);
        // The loopback DELIVER is stored; list and read it.
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        let list = loop {
            let l = m.list(4).unwrap();
            if !l.is_empty() || std::time::Instant::now() > deadline {
                break l;
            }
            m.at().poll(Duration::from_millis(100)).unwrap();
        };
        let d = list[0].decoded.as_ref().unwrap();
        assert_eq!(d.pdu.text().as_deref(), Some("hello me"));
        assert!(matches!(d.pdu, Pdu::Deliver(_)));
        m.delete_all().unwrap();
        assert!(m.list(4).unwrap().is_empty());
    }
}

#[test]
fn a_multipart_message_comes_back_reassembled_and_is_deleted() {
    let bench = Bench::start(Quirks::Quectel, "");
    let mut m = bench.open();
    m.prepare_sms().unwrap();
    m.enable_indications(false).unwrap();
    let parts = encode(OWN, LONG, false);
    assert_eq!(parts.len(), 3, "LONG must need three parts");
    let sent = m.send_pdus(&parts).unwrap();
    assert_eq!(sent.iter().map(|p| p.part).collect::<Vec<_>>(), [1, 2, 3]);
    let got = watch_events(&mut m, false, 1);
    match &got[0] {
        WatchEvent::Message {
            text,
            parts,
            indexes,
        } => {
            assert_eq!(text.as_deref(), Some(LONG));
            assert_eq!(parts.len(), 3);
            assert_eq!(indexes.len(), 3);
        }
        other => panic!("{other:?}"),
    }
    assert!(
        m.list(4).unwrap().is_empty(),
        "watch deletes what it printed"
    );
}

#[test]
fn incoming_parts_out_of_order_and_undecodable_pdus() {
    let bench = Bench::start(Quirks::Generic, "");
    let mut m = bench.open();
    m.prepare_sms().unwrap();
    m.enable_indications(false).unwrap();
    bench.inbox(
        "a",
        serde_json::json!({"from": "+441234567890", "text": LONG, "reverse": true}),
    );
    // A truncated DELIVER, as a modem with a full buffer hands it over.
    bench.inbox(
        "b",
        serde_json::json!({"pdu": "07910201956905F0040B910201014160F300082021913052158004"}),
    );
    let got = watch_events(&mut m, true, 2);
    let text = got.iter().find_map(|e| match e {
        WatchEvent::Message { text, .. } => text.clone(),
        _ => None,
    });
    assert_eq!(text.as_deref(), Some(LONG));
    assert!(
        got.iter()
            .any(|e| matches!(e, WatchEvent::Undecodable { index: Some(_), error } if error.contains("truncated"))),
        "{got:?}"
    );
    // --keep, and the undecodable one is kept regardless.
    let list = m.list(4).unwrap();
    assert_eq!(list.len(), 4);
    assert_eq!(list.iter().filter(|s| s.decoded.is_err()).count(), 1);
}

#[test]
fn a_slow_prompt_within_the_timeout_is_waited_for() {
    let bench = Bench::start(Quirks::Generic, "slow-prompt=1200");
    let mut m = bench.open();
    m.prepare_sms().unwrap();
    let sent = m
        .send_pdus(&encode("+4915112345678", "slow", false))
        .unwrap();
    assert_eq!(sent.len(), 1);
    assert_eq!(bench.spooled().len(), 1);
}

#[test]
fn a_prompt_that_does_not_come_is_aborted_with_esc_and_nothing_is_sent() {
    let bench = Bench::start(Quirks::Generic, "slow-prompt=2500");
    let mut m = bench.open_with(Timeouts {
        prompt: Duration::from_millis(400),
        abort: Duration::from_secs(4),
        ..Timeouts::default()
    });
    m.prepare_sms().unwrap();
    match m.send_pdus(&encode("+4915112345678", "never", false)) {
        Err(ModemError::PartialSend { sent, cause, .. }) => {
            assert!(sent.is_empty());
            assert!(
                matches!(
                    *cause,
                    ModemError::Timeout {
                        stage: Stage::Prompt,
                        ..
                    }
                ),
                "{cause:?}"
            );
        }
        other => panic!("{other:?}"),
    }
    // The port is usable again and the modem did not take our next command as PDU.
    m.at().command("AT").unwrap();
    assert!(bench.spooled().is_empty());
}

#[test]
fn a_stuck_prompt_is_escaped_and_the_part_is_not_reported_as_sent() {
    let bench = Bench::start(Quirks::Huawei, "stuck-prompt");
    let mut m = bench.open_with(Timeouts {
        submit: Duration::from_millis(600),
        ..Timeouts::default()
    });
    m.prepare_sms().unwrap();
    match m.send_pdus(&encode("+4915112345678", "stuck", false)) {
        Err(ModemError::PartialSend { sent, cause, .. }) => {
            assert!(sent.is_empty());
            assert!(
                matches!(
                    *cause,
                    ModemError::Timeout {
                        stage: Stage::Submit,
                        ..
                    }
                ),
                "{cause:?}"
            );
            assert!(cause.to_string().contains("may or may not"));
        }
        other => panic!("{other:?}"),
    }
    m.at().command("AT").unwrap();
    assert!(bench.spooled().is_empty());
}

#[test]
fn cms_errors_are_named_and_a_multipart_failure_says_which_parts_went_out() {
    let bench = Bench::start(Quirks::Generic, "cms330");
    let mut m = bench.open();
    m.prepare_sms().unwrap();
    match m.send_pdus(&encode("+4915112345678", "x", false)) {
        Err(ModemError::PartialSend { sent, cause, .. }) => {
            assert!(sent.is_empty());
            assert!(matches!(
                *cause,
                ModemError::Cms {
                    error: CmsError::SMSC_UNKNOWN,
                    ..
                }
            ));
            assert!(cause.to_string().contains("AT+CSCA"), "{cause}");
        }
        other => panic!("{other:?}"),
    }
    drop(m);

    let bench = Bench::start(Quirks::Generic, "cms500=2");
    let mut m = bench.open();
    m.prepare_sms().unwrap();
    match m.send_pdus(&encode("+4915112345678", LONG, false)) {
        Err(e @ ModemError::PartialSend { .. }) => {
            let ModemError::PartialSend {
                sent,
                total,
                failed_part,
                cause,
            } = &e
            else {
                unreachable!()
            };
            assert_eq!((sent.len(), *total, *failed_part), (1, 3, 2));
            assert!(matches!(
                **cause,
                ModemError::Cms {
                    error: CmsError::UNKNOWN,
                    ..
                }
            ));
            assert!(e.to_string().contains("parts sent: 1 (mr "), "{e}");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(bench.spooled().len(), 1);
}

#[test]
fn sim_busy_is_retried_until_the_modem_says_ready() {
    let bench = Bench::start(Quirks::Quectel, "cme14=4");
    let mut m = bench.open();
    let urcs = m.at().subscribe();
    m.prepare_sms().unwrap();
    let info = m.info().unwrap();
    assert_eq!(info.imsi.as_deref(), Some("001010000000099"));
    m.at().poll(Duration::from_millis(300)).unwrap();
    let seen: Vec<Urc> = urcs.try_iter().collect();
    assert!(
        seen.iter()
            .any(|u| *u == Urc::Other("+QIND: SMS DONE".into())),
        "{seen:?}"
    );
    assert!(
        bench
            .events
            .lock()
            .unwrap()
            .iter()
            .any(|e| e.contains("cme14"))
    );
}

#[test]
fn urcs_in_the_middle_of_replies_reach_subscribers_and_not_the_replies() {
    for profile in [
        Quirks::Generic,
        Quirks::Huawei,
        Quirks::Quectel,
        Quirks::Simcom,
    ] {
        let clean = {
            let bench = Bench::start(profile, "");
            let mut m = bench.open();
            m.info().unwrap()
        };
        let bench = Bench::start(profile, "urc-mid");
        let mut m = bench.open();
        let urcs = m.at().subscribe();
        let info = m.info().unwrap();
        assert_eq!(format!("{info:?}"), format!("{clean:?}"), "{profile:?}");
        m.prepare_sms().unwrap();
        m.send_pdus(&encode(OWN, LONG, false)).unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        let list = loop {
            let l = m.list(4).unwrap();
            if l.len() == 3 || std::time::Instant::now() > deadline {
                break l;
            }
            m.at().poll(Duration::from_millis(100)).unwrap();
        };
        assert_eq!(list.len(), 3, "{profile:?}");
        assert!(list.iter().all(|s| s.decoded.is_ok()), "{profile:?}");
        assert!(urcs.try_iter().count() >= 5, "{profile:?}");
    }
}

#[test]
fn echo_split_writes_and_garbage_are_survived() {
    let bench = Bench::start(Quirks::Simcom, "echo,split,garbage");
    let mut m = bench.open();
    let info = m.info().unwrap();
    assert_eq!(info.imsi.as_deref(), Some("001010000000099"));
    m.prepare_sms().unwrap();
    m.send_pdus(&encode("+4915112345678", LONG, false)).unwrap();
    assert_eq!(bench.spooled().len(), 3);
    assert!(m.at().garbage_seen() > 5);
}

#[test]
fn a_modem_that_vanishes_mid_send_is_an_error_and_the_part_is_not_sent() {
    let mut bench = Bench::start(Quirks::Generic, "vanish=2");
    let mut m = bench.open();
    m.prepare_sms().unwrap();
    match m.send_pdus(&encode("+4915112345678", LONG, false)) {
        Err(ModemError::PartialSend {
            sent,
            failed_part,
            cause,
            ..
        }) => {
            assert_eq!((sent.len(), failed_part), (1, 2));
            assert!(matches!(*cause, ModemError::Vanished { .. }), "{cause:?}");
        }
        other => panic!("{other:?}"),
    }
    assert!(bench.join(), "the modem thread ends by vanishing");
}

#[test]
fn the_port_is_exclusive_and_released_on_drop() {
    let bench = Bench::start(Quirks::Generic, "");
    let first = bench.open();
    match Modem::open(&bench.path, OpenOptions::default()) {
        Err(ModemError::Busy { port, .. }) => assert_eq!(port, bench.path.display().to_string()),
        Err(e) => panic!("{e}"),
        Ok(_) => panic!("a second open must fail"),
    }
    drop(first);
    let mut again = bench.open();
    again.at().command("AT").unwrap();
}

#[test]
fn a_port_without_a_modem_is_no_answer() {
    // Nothing serves this pty.
    let pty = Pty::open(None).unwrap();
    let quick = OpenOptions {
        timeouts: Timeouts {
            probe: Duration::from_millis(200),
            ..Timeouts::default()
        },
        probe_tries: 2,
        ..OpenOptions::default()
    };
    assert!(matches!(
        Modem::open(pty.slave(), quick),
        Err(ModemError::NoAnswer { .. })
    ));
    assert!(matches!(
        Modem::open(
            std::path::Path::new("/dev/simlab-no-such-modem"),
            OpenOptions::default()
        ),
        Err(ModemError::Open { .. })
    ));
}

#[test]
fn a_port_that_only_streams_garbage_is_no_answer() {
    use std::io::Write;
    // A diagnostic or GPS port: bytes, but never an AT answer. No line, no panic, no hang.
    let (mut master, slave) = serialport::TTYPort::pair().unwrap();
    let path = serialport::SerialPort::name(&slave).unwrap();
    drop(slave);
    let stop = Arc::new(AtomicBool::new(false));
    let s = stop.clone();
    let noise = std::thread::spawn(move || {
        let mut i = 0u32;
        while !s.load(Ordering::SeqCst) {
            let junk: Vec<u8> = (0..64u32)
                .map(|k| (i.wrapping_mul(2_654_435_761).wrapping_add(k * 97) >> 7) as u8)
                .collect();
            let _ = master.write_all(&junk);
            i = i.wrapping_add(1);
            std::thread::sleep(Duration::from_millis(5));
        }
    });
    let quick = OpenOptions {
        timeouts: Timeouts {
            probe: Duration::from_millis(300),
            ..Timeouts::default()
        },
        probe_tries: 2,
        ..OpenOptions::default()
    };
    let r = Modem::open(std::path::Path::new(&path), quick);
    stop.store(true, Ordering::SeqCst);
    noise.join().unwrap();
    assert!(
        matches!(r, Err(ModemError::NoAnswer { .. })),
        "{:?}",
        r.err()
    );
}

#[test]
fn the_sim_answers_through_at_csim() {
    let bench = Bench::start(Quirks::Generic, "");
    let transport = ModemTransport::over(bench.open()).unwrap();
    let mut sim = simlab_card::sim::Sim::open(Link::new(Box::new(transport))).unwrap();
    let imsi = sim
        .read_file(simlab_card::sim::find_file("IMSI").unwrap().location)
        .unwrap();
    assert_eq!(
        imsi,
        simlab_card::sim::FileContent::Transparent(
            simlab_applet::encoding::encode_imsi("001010000000099")
                .unwrap()
                .to_vec()
        )
    );
    let sres = sim.authenticate(&[0x11; 16], None).unwrap();
    assert!(matches!(sres, simlab_card::sim::AuthResult::Gsm { .. }));
}

#[test]
fn the_doctor_finds_what_to_fix() {
    let bench = Bench::with(Options {
        smsc: None,
        ..Options::default()
    });
    let d = info::doctor(std::slice::from_ref(&bench.path), OpenOptions::default()).unwrap();
    assert_eq!(d.port.as_ref(), Some(&bench.path));
    let check = |name: &str| d.checks.iter().find(|c| c.name == name).unwrap().clone();
    assert_eq!(check("sim").verdict, info::Verdict::Ok);
    assert_eq!(check("smsc").verdict, info::Verdict::Fail);
    assert!(check("smsc").fix.unwrap().contains("AT+CSCA"));
    assert_eq!(check("cnmi").verdict, info::Verdict::Warn);
    assert!(!d.healthy());
}

/// Replays `fixtures/at/*.at` (format in fixtures/at/README.md) against the virtual modem,
/// through a pty opened with the serialport crate, at the level of raw lines.
#[test]
fn at_transcripts_replay_against_the_virtual_modem() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/at");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "at"))
        .collect();
    files.sort();
    assert!(files.len() >= 6, "{files:?}");
    for f in files {
        replay(&f);
    }
}

fn replay(path: &std::path::Path) {
    use simlab_modem::line::{LineReader, Piece};
    let name = path.file_name().unwrap().to_string_lossy().to_string();
    let script = std::fs::read_to_string(path).unwrap();
    let directive = |key: &str| {
        script
            .lines()
            .find_map(|l| l.strip_prefix(key).map(|v| v.trim().to_string()))
    };
    let profile = match directive("@profile ").as_deref() {
        None | Some("generic") => Quirks::Generic,
        Some("huawei") => Quirks::Huawei,
        Some("quectel") => Quirks::Quectel,
        Some("simcom") => Quirks::Simcom,
        Some(other) => panic!("{name}: unknown profile {other}"),
    };
    let bench = Bench::start(profile, &directive("@faults ").unwrap_or_default());
    let mut port = serialport::new(bench.path.display().to_string(), 115_200)
        .open_native()
        .unwrap();
    let mut reader = LineReader::new();
    let mut buf = [0u8; 256];
    let mut next = |port: &mut serialport::TTYPort, prompt: bool, what: &str| -> Piece {
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        loop {
            if let Some(p) = reader.next(prompt) {
                return p;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{name}: nothing arrived while expecting {what}; pending {:?}",
                String::from_utf8_lossy(reader.pending())
            );
            let n = AtPort::read_timeout(port, &mut buf, Duration::from_millis(100)).unwrap();
            reader.push(&buf[..n]);
        }
    };
    for (i, line) in script.lines().enumerate() {
        let at = format!("{name}:{}", i + 1);
        let write = |port: &mut serialport::TTYPort, bytes: &[u8]| {
            AtPort::write_all_bytes(port, bytes).unwrap();
        };
        if line.trim().is_empty() || line.starts_with('#') || line.starts_with('@') {
            continue;
        } else if let Some(hex) = line.strip_prefix(">pdu ") {
            let mut b = hex.trim().as_bytes().to_vec();
            b.push(at::CTRL_Z);
            write(&mut port, &b);
        } else if line.trim() == ">esc" {
            write(&mut port, &[at::ESC]);
        } else if let Some(cmd) = line.strip_prefix("> ") {
            write(&mut port, format!("{cmd}\r").as_bytes());
        } else if line.trim() == "<prompt" {
            let p = next(&mut port, true, "the prompt");
            assert_eq!(p, Piece::Prompt, "{at}");
        } else if let Some(want) = line.strip_prefix("< ") {
            let got = match next(&mut port, false, want) {
                Piece::Line(l) => l,
                other => panic!("{at}: expected {want:?}, got {other:?}"),
            };
            let ok = match want.strip_suffix('*') {
                Some(prefix) => got.starts_with(prefix),
                None => got == want,
            };
            assert!(ok, "{at}: expected {want:?}, got {got:?}");
        } else {
            panic!("{at}: cannot read {line:?}");
        }
    }
}
