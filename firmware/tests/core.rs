//! The firmware core on the host: a simulated flash that loses power on cue, scripted buttons,
//! and the host's own card profiles for personalisation.

use proptest::prelude::*;
use simlab_applet::state::STATE_LEN;
use simlab_applet::token;
use simlab_applet::{Card, card::RESPONSE_MAX};
use simlab_card::profile::Profile;
use simlab_firmware::link::{self, Deframer, ErrorCode, Event, Kind, MAX_FRAME};
use simlab_firmware::presence::NO_PRESENCE_SW;
use simlab_firmware::testkit::{
    CountingDelay, RecordingLed, ScriptedButton, SimFlash, Tear, TestRng,
};
use simlab_firmware::{BoardConfig, Console, Counter, Firmware, Lifecycle, Parts};
use std::cell::RefCell;
use std::collections::VecDeque;
use std::path::Path;
use std::rc::Rc;

/// Two slots for the card state, with 256-byte pages.
const REGION: usize = 2 * (16 + STATE_LEN).div_ceil(256) * 256;

type Flash = SimFlash<REGION>;
type Fw = Firmware<Wire, Flash, TestRng, Watched, RecordingLed, CountingDelay, FakeCounter, Shown>;

/// What happened, in order: lines the console showed (`show: …`), and button sampling
/// (`poll`, once per run of samples).
type Log = Rc<RefCell<Vec<String>>>;

/// The console, writing into the log.
struct Shown(Log);

impl Console for Shown {
    fn show(&mut self, line: &str) {
        self.0.borrow_mut().push(format!("show: {line}"));
    }
}

/// A scripted button that notes in the log when it is sampled.
struct Watched {
    inner: ScriptedButton,
    log: Log,
}

impl embedded_hal::digital::ErrorType for Watched {
    type Error = core::convert::Infallible;
}

impl embedded_hal::digital::InputPin for Watched {
    fn is_high(&mut self) -> Result<bool, Self::Error> {
        let mut log = self.log.borrow_mut();
        if log.last().is_none_or(|l| l != "poll") {
            log.push("poll".into());
        }
        self.inner.is_high()
    }
    fn is_low(&mut self) -> Result<bool, Self::Error> {
        self.is_high().map(|h| !h)
    }
}

/// The link: bytes the test sends are fed directly; bytes the firmware writes are collected.
#[derive(Default)]
struct Wire {
    input: VecDeque<u8>,
    output: Vec<u8>,
}

impl embedded_io::ErrorType for Wire {
    type Error = embedded_io::ErrorKind;
}

impl embedded_io::Read for Wire {
    fn read(&mut self, buf: &mut [u8]) -> Result<usize, Self::Error> {
        let n = buf.len().min(self.input.len());
        if n == 0 {
            return Err(embedded_io::ErrorKind::BrokenPipe);
        }
        for b in buf.iter_mut().take(n) {
            *b = self.input.pop_front().unwrap_or(0);
        }
        Ok(n)
    }
}

impl embedded_io::Write for Wire {
    fn write(&mut self, buf: &[u8]) -> Result<usize, Self::Error> {
        self.output.extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> Result<(), Self::Error> {
        Ok(())
    }
}

/// Counts 1000 per reading, so a timed command reports 1000.
struct FakeCounter(u64);

impl Counter for FakeCounter {
    const UNIT: Option<&'static str> = Some("ticks");
    fn now(&mut self) -> u64 {
        self.0 += 1000;
        self.0
    }
}

const BOARD: BoardConfig = BoardConfig {
    name: "host-test",
    atr: simlab_applet::card::SIMLAB_ATR,
    test_flags: link::flags::TEST_PRESENCE | link::flags::TEST_RNG,
    presence_timeout_ms: 2_000,
    button_active_low: false,
    led_active_low: false,
    stack_peak: None,
};

fn parts(
    flash: Flash,
    button: ScriptedButton,
    seed: u64,
) -> Parts<Wire, Flash, TestRng, Watched, RecordingLed, CountingDelay, FakeCounter, Shown> {
    let log = Log::default();
    Parts {
        link: Wire::default(),
        flash,
        flash_base: 0,
        flash_len: REGION as u32,
        rng: TestRng(seed),
        button: Watched {
            inner: button,
            log: log.clone(),
        },
        led: RecordingLed::default(),
        delay: CountingDelay::default(),
        counter: FakeCounter(0),
        console: Shown(log),
    }
}

fn boot(flash: Flash, button: ScriptedButton) -> Fw {
    Firmware::new(parts(flash, button, 0x5EED), BOARD).expect("boot")
}

/// Power off and on: a new firmware over the same flash.
fn reboot(fw: Fw) -> Fw {
    let mut p = fw.release();
    p.link = Wire::default();
    p.flash.cut_after = None;
    Firmware::new(p, BOARD).expect("reboot")
}

fn fixture(name: &str) -> Profile {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fixtures/cards")
        .join(name);
    Profile::load(&path).expect("profile")
}

/// The personalisation image of a profile, as the host tool builds it.
fn image(profile: &Profile) -> Vec<u8> {
    let card = profile.build_card_seeded([0x11; 32]);
    let mut state = vec![0u8; STATE_LEN];
    assert_eq!(card.save_state(&mut state), STATE_LEN);
    state
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Got {
    Frame { kind: u8, seq: u8, payload: Vec<u8> },
    Rejected { seq: u8, code: ErrorCode },
}

/// The host side of the conversation, with the firmware's own deframer.
struct Host {
    seq: u8,
}

impl Host {
    fn send_raw(&self, fw: &mut Fw, bytes: &[u8]) -> Vec<Got> {
        fw.feed(bytes);
        let out = std::mem::take(&mut fw.link().output);
        let mut d = Deframer::new();
        let mut got = Vec::new();
        let mut rest = out.as_slice();
        loop {
            let n = d.push(rest);
            rest = &rest[n..];
            while let Some(ev) = d.poll() {
                got.push(match ev {
                    Event::Frame(f) => Got::Frame {
                        kind: f.kind,
                        seq: f.seq,
                        payload: f.payload.to_vec(),
                    },
                    Event::Rejected { seq, code } => Got::Rejected { seq, code },
                });
            }
            if rest.is_empty() {
                break;
            }
        }
        got
    }

    fn frame(&mut self, kind: u8, payload: &[u8]) -> Vec<u8> {
        self.seq = self.seq.wrapping_add(1);
        let mut out = [0u8; MAX_FRAME];
        let n = link::encode(kind, self.seq, payload, &mut out).unwrap();
        out[..n].to_vec()
    }

    /// Sends a request and returns everything that came back.
    fn exchange(&mut self, fw: &mut Fw, kind: Kind, payload: &[u8]) -> Vec<Got> {
        let f = self.frame(kind as u8, payload);
        self.send_raw(fw, &f)
    }

    /// Sends a request and returns the payload of its reply (panics on anything else).
    fn request(&mut self, fw: &mut Fw, kind: Kind, payload: &[u8]) -> Vec<u8> {
        let got = self.exchange(fw, kind, payload);
        let seq = self.seq;
        match got.last() {
            Some(Got::Frame {
                kind: k,
                seq: s,
                payload,
            }) if *k == kind.reply() && *s == seq => payload.clone(),
            other => panic!("no reply to {kind:?}: {other:?} (all: {got:?})"),
        }
    }

    fn apdu(&mut self, fw: &mut Fw, capdu: &[u8]) -> Vec<u8> {
        self.request(fw, Kind::Apdu, capdu)
    }

    fn error(&mut self, fw: &mut Fw, kind: Kind, payload: &[u8]) -> ErrorCode {
        let got = self.exchange(fw, kind, payload);
        match got.as_slice() {
            [
                Got::Frame {
                    kind: 0xFF,
                    seq,
                    payload,
                },
            ] if *seq == self.seq && payload.len() == 1 => {
                ErrorCode::from_u8(payload[0]).expect("known code")
            }
            other => panic!("expected one error frame for {kind:?}, got {other:?}"),
        }
    }

    fn personalise(&mut self, fw: &mut Fw, image: &[u8]) -> Result<(), ErrorCode> {
        for (i, chunk) in image.chunks(link::PERSO_CHUNK).enumerate() {
            let mut p = ((i * link::PERSO_CHUNK) as u16).to_be_bytes().to_vec();
            p.extend_from_slice(chunk);
            match self.exchange(fw, Kind::PersoWrite, &p).as_slice() {
                [Got::Frame { kind: 0x85, .. }] => {}
                [
                    Got::Frame {
                        kind: 0xFF,
                        payload,
                        ..
                    },
                ] => {
                    return Err(ErrorCode::from_u8(payload[0]).unwrap());
                }
                other => panic!("perso write: {other:?}"),
            }
        }
        let mut commit = (image.len() as u16).to_be_bytes().to_vec();
        commit.extend_from_slice(&simlab_firmware::crc::crc32(image).to_be_bytes());
        let got = self.exchange(fw, Kind::PersoCommit, &commit);
        match got.as_slice() {
            [Got::Frame { kind: 0x86, .. }] => Ok(()),
            [
                Got::Frame {
                    kind: 0xFF,
                    payload,
                    ..
                },
            ] => Err(ErrorCode::from_u8(payload[0]).unwrap()),
            other => panic!("commit: {other:?}"),
        }
    }
}

fn sw(rapdu: &[u8]) -> u16 {
    u16::from_be_bytes([rapdu[rapdu.len() - 2], rapdu[rapdu.len() - 1]])
}

fn personalised(profile: &str) -> (Fw, Host) {
    let mut fw = boot(Flash::new(), ScriptedButton::presses());
    let mut host = Host { seq: 0 };
    host.personalise(&mut fw, &image(&fixture(profile)))
        .expect("personalise");
    assert_eq!(fw.lifecycle(), Lifecycle::Personalised);
    (fw, host)
}

const VERIFY_PIN1_WRONG: [u8; 13] = [
    0x00, 0x20, 0x00, 0x01, 0x08, b'9', b'9', b'9', b'9', 0xFF, 0xFF, 0xFF, 0xFF,
];
const PIN1_TRIES: [u8; 4] = [0x00, 0x20, 0x00, 0x01];

fn info_flags(host: &mut Host, fw: &mut Fw) -> u16 {
    let info = host.request(fw, Kind::Info, &[]);
    let at = info
        .windows(2)
        .position(|w| w == [0x02, 0x02])
        .expect("flags TLV");
    u16::from_be_bytes([info[at + 2], info[at + 3]])
}

#[test]
fn a_factory_token_accepts_only_personalisation() {
    let mut fw = boot(Flash::new(), ScriptedButton::presses());
    let mut host = Host { seq: 0 };
    assert_eq!(fw.lifecycle(), Lifecycle::Factory);
    assert_eq!(
        host.request(&mut fw, Kind::Reset, &[]),
        simlab_applet::card::SIMLAB_ATR
    );
    let flags = info_flags(&mut host, &mut fw);
    assert_eq!(flags & link::flags::PERSONALISED, 0);
    assert_ne!(flags & link::flags::TEST_PRESENCE, 0);
    assert_eq!(
        host.error(
            &mut fw,
            Kind::Apdu,
            &[0x00, 0xA4, 0x00, 0x04, 0x02, 0x3F, 0x00]
        ),
        ErrorCode::NotPersonalised
    );
    // A damaged image is refused as a whole.
    let mut bad = image(&fixture("usim-milenage.toml"));
    bad[100] ^= 1;
    assert_eq!(host.personalise(&mut fw, &bad), Err(ErrorCode::BadImage));
    assert_eq!(
        host.personalise(&mut fw, &bad[..100]),
        Err(ErrorCode::BadImage)
    );
    assert_eq!(
        host.error(&mut fw, Kind::PersoWrite, &[0xFF, 0xF0, 1, 2, 3]),
        ErrorCode::BadPayload
    );
    assert_eq!(fw.lifecycle(), Lifecycle::Factory);
    host.personalise(&mut fw, &image(&fixture("usim-milenage.toml")))
        .unwrap();
    assert_ne!(
        info_flags(&mut host, &mut fw) & link::flags::PERSONALISED,
        0
    );
    // Once personalised, never again (a stolen token cannot be re-keyed over the link).
    assert_eq!(
        host.personalise(&mut fw, &image(&fixture("sim-comp128v1.toml"))),
        Err(ErrorCode::AlreadyPersonalised)
    );
    let mut fw = reboot(fw);
    assert_eq!(fw.lifecycle(), Lifecycle::Personalised);
    assert_ne!(
        info_flags(&mut host, &mut fw) & link::flags::PERSONALISED,
        0
    );
}

/// Every APDU of a session answers byte for byte as the card model does in-process.
#[test]
fn a_personalised_token_answers_as_the_card_model() {
    for name in ["usim-milenage.toml", "sim-comp128v1.toml"] {
        let profile = fixture(name);
        let (mut fw, mut host) = personalised(name);
        let mut reference: Card = profile.build_card_seeded([0x11; 32]);
        let script: &[&[u8]] = &[
            &[0x00, 0xA4, 0x00, 0x04, 0x02, 0x3F, 0x00, 0x00],
            &[0x00, 0xC0, 0x00, 0x00, 0x00],
            &[0xA0, 0xA4, 0x00, 0x00, 0x02, 0x2F, 0xE2],
            &[0xA0, 0xB0, 0x00, 0x00, 0x0A],
            &[0xA0, 0xA4, 0x00, 0x00, 0x02, 0x7F, 0x20],
            &[
                0xA0, 0x20, 0x00, 0x01, 0x08, b'1', b'2', b'3', b'4', 0xFF, 0xFF, 0xFF, 0xFF,
            ],
            &[
                0xA0, 0x88, 0x00, 0x00, 0x10, 0x23, 0x55, 0x3c, 0xbe, 0x96, 0x37, 0xa8, 0x9d, 0x21,
                0x8a, 0xe6, 0x4d, 0xae, 0x47, 0xbf, 0x35,
            ],
            &[0xA0, 0xC0, 0x00, 0x00, 0x0C],
            &VERIFY_PIN1_WRONG,
            &PIN1_TRIES,
            &[0x00],
            &[0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF],
        ];
        for capdu in script {
            let mut expected = [0u8; RESPONSE_MAX];
            let n = reference.process(capdu, &mut expected);
            assert_eq!(
                host.apdu(&mut fw, capdu),
                &expected[..n],
                "{name}: {capdu:02x?}"
            );
        }
    }
}

#[test]
fn pin_counters_survive_a_reboot() {
    let (mut fw, mut host) = personalised("usim-milenage.toml");
    assert_eq!(sw(&host.apdu(&mut fw, &PIN1_TRIES)), 0x63C3);
    assert_eq!(sw(&host.apdu(&mut fw, &VERIFY_PIN1_WRONG)), 0x63C2);
    assert_eq!(sw(&host.apdu(&mut fw, &VERIFY_PIN1_WRONG)), 0x63C1);
    let saves = fw.store().saves();
    let mut fw = reboot(fw);
    assert_eq!(fw.store().saves(), saves);
    assert_eq!(sw(&host.apdu(&mut fw, &PIN1_TRIES)), 0x63C1);
    assert_eq!(sw(&host.apdu(&mut fw, &VERIFY_PIN1_WRONG)), 0x6983);
    let mut fw = reboot(fw);
    assert_eq!(sw(&host.apdu(&mut fw, &PIN1_TRIES)), 0x6983);
}

/// The counter of a wrong PIN is in flash before the reply leaves: cut the power at every
/// program/erase step of the save. Whenever the reply said a try was spent, the rebooted token
/// agrees; when the save failed the reply is a memory failure, and the token holds the old or
/// the new count, nothing else.
#[test]
fn a_power_cut_during_a_counter_save_never_lies() {
    let (fw, mut host) = personalised("usim-milenage.toml");
    let base = fw.release().flash;
    // Steps of one uninterrupted save.
    let mut flash = base.clone();
    flash.steps = 0;
    let mut probe = boot(flash, ScriptedButton::presses());
    assert_eq!(sw(&host.apdu(&mut probe, &VERIFY_PIN1_WRONG)), 0x63C2);
    let total = probe.release().flash.steps;
    assert!(total > 100, "{total} steps");
    let mut outcomes = [0usize; 2];
    for cut in 0..=total {
        let tear = Tear::ALL[cut as usize % Tear::ALL.len()];
        let mut flash = base.clone();
        flash.steps = 0;
        flash.cut_after = Some(cut);
        flash.tear = tear;
        let mut fw = boot(flash, ScriptedButton::presses());
        let reply = sw(&host.apdu(&mut fw, &VERIFY_PIN1_WRONG));
        let mut fw = reboot(fw);
        let now = sw(&host.apdu(&mut fw, &PIN1_TRIES));
        match reply {
            0x63C2 => {
                assert_eq!(now, 0x63C2, "cut {cut}: reply spent a try the flash lost");
                outcomes[0] += 1;
            }
            0x6581 => {
                assert!(
                    now == 0x63C3 || now == 0x63C2,
                    "cut {cut} ({tear:?}): {now:04x}"
                );
                outcomes[1] += 1;
            }
            other => panic!("cut {cut}: reply {other:04x}"),
        }
    }
    assert_eq!(outcomes[0], 1, "only the uncut run succeeds");
}

/// A power cut during personalisation leaves a factory token or a personalised one.
#[test]
fn a_power_cut_during_personalisation_leaves_factory_or_personalised() {
    let img = image(&fixture("sim-comp128v1.toml"));
    let mut fw = boot(Flash::new(), ScriptedButton::presses());
    let mut host = Host { seq: 0 };
    host.personalise(&mut fw, &img).unwrap();
    let total = fw.release().flash.steps;
    for cut in (0..=total).step_by(7).chain([total - 1, total]) {
        let mut flash = Flash::new();
        flash.cut_after = Some(cut);
        flash.tear = Tear::ALL[cut as usize % 4];
        let mut fw = boot(flash, ScriptedButton::presses());
        let result = host.personalise(&mut fw, &img);
        let mut fw = reboot(fw);
        match fw.lifecycle() {
            Lifecycle::Personalised => {
                let s = sw(&host.apdu(&mut fw, &[0xA0, 0xA4, 0x00, 0x00, 0x02, 0x7F, 0x20]));
                assert_eq!(s >> 8, 0x9F, "cut {cut}");
            }
            Lifecycle::Factory => {
                assert_eq!(result, Err(ErrorCode::Storage), "cut {cut}");
                host.personalise(&mut fw, &img).unwrap();
            }
            Lifecycle::Unreadable => panic!("cut {cut}: unreadable"),
        }
    }
}

/// A host that lost a reply sends the same frame again: it gets the same reply, and the
/// command ran once.
#[test]
fn a_retransmission_is_answered_without_running_the_command_again() {
    let (mut fw, mut host) = personalised("usim-milenage.toml");
    let frame = host.frame(Kind::Apdu as u8, &VERIFY_PIN1_WRONG);
    let first = host.send_raw(&mut fw, &frame);
    let again = host.send_raw(&mut fw, &frame);
    assert_eq!(first, again);
    assert!(matches!(&first[..], [Got::Frame { payload, .. }] if sw(payload) == 0x63C2));
    // A new sequence number is a new command.
    assert_eq!(sw(&host.apdu(&mut fw, &VERIFY_PIN1_WRONG)), 0x63C1);
    // A reset in between ends the replay window.
    let frame = host.frame(Kind::Apdu as u8, &PIN1_TRIES);
    host.send_raw(&mut fw, &frame);
    host.request(&mut fw, Kind::Reset, &[]);
    let after = host.send_raw(&mut fw, &frame);
    assert!(matches!(&after[..], [Got::Frame { kind: 0x81, .. }]));
}

#[test]
fn bad_input_gets_an_error_or_is_skipped_and_loses_nothing() {
    let (mut fw, mut host) = personalised("usim-milenage.toml");
    assert_eq!(sw(&host.apdu(&mut fw, &VERIFY_PIN1_WRONG)), 0x63C2);
    let saves = fw.store().saves();

    // Garbage alone: nothing.
    assert_eq!(
        host.send_raw(&mut fw, b"\x00\x01garbage\xA5\xA5\x5A\x5A\xFF"),
        []
    );
    // A frame cut short, then the preamble: an error about the cut frame, then silence.
    let cut = host.frame(Kind::Apdu as u8, &VERIFY_PIN1_WRONG);
    assert_eq!(host.send_raw(&mut fw, &cut[..9]), []);
    let got = host.send_raw(&mut fw, &[0u8; MAX_FRAME]);
    assert_eq!(got.len(), 1);
    assert!(
        matches!(got[0], Got::Frame { kind: 0xFF, ref payload, .. } if payload == &[ErrorCode::BadCrc as u8])
    );
    // A corrupted frame.
    let mut bad = host.frame(Kind::Apdu as u8, &VERIFY_PIN1_WRONG);
    bad[10] ^= 0x40;
    let got = host.send_raw(&mut fw, &bad);
    assert!(
        matches!(&got[..], [Got::Frame { kind: 0xFF, payload, .. }] if payload == &[ErrorCode::BadCrc as u8]),
        "{got:?}"
    );
    host.send_raw(&mut fw, &[0u8; MAX_FRAME]);
    // An oversized APDU: refused from its header.
    let mut header = [0xA5, 0x5A, 0x01, 0x33, 0x04, 0x00, 0];
    header[6] = simlab_firmware::crc::crc8(&header[..6]);
    let got = host.send_raw(&mut fw, &header);
    assert_eq!(
        got,
        [Got::Frame {
            kind: 0xFF,
            seq: 0x33,
            payload: vec![ErrorCode::TooLong as u8]
        }]
    );
    host.send_raw(&mut fw, &[0x77; 1024]);
    host.send_raw(&mut fw, &[0u8; MAX_FRAME]);
    // Unknown and reply-typed frames, an empty APDU.
    assert_eq!(host.error(&mut fw, Kind::Wait, &[]), ErrorCode::UnknownType);
    let f = host.frame(0x42, &[1, 2, 3]);
    let got = host.send_raw(&mut fw, &f);
    assert!(
        matches!(&got[..], [Got::Frame { kind: 0xFF, payload, .. }] if payload == &[ErrorCode::UnknownType as u8])
    );
    assert_eq!(host.error(&mut fw, Kind::Apdu, &[]), ErrorCode::BadPayload);
    // A malformed APDU is the card's to refuse.
    assert_eq!(sw(&host.apdu(&mut fw, &[0x00, 0xA4])), 0x6700);

    // Nothing above spent a try or touched the flash; the link still works.
    assert_eq!(fw.store().saves(), saves);
    assert_eq!(sw(&host.apdu(&mut fw, &PIN1_TRIES)), 0x63C2);
}

#[test]
fn bench_frames_time_the_command_and_answer_as_apdu_frames() {
    let (mut fw, mut host) = personalised("usim-milenage.toml");
    let reply = host.request(&mut fw, Kind::Bench, &PIN1_TRIES);
    assert_eq!(u64::from_be_bytes(reply[..8].try_into().unwrap()), 1000);
    assert_eq!(sw(&reply[8..]), 0x63C3);
    let info = host.request(&mut fw, Kind::Info, &[]);
    assert!(info.windows(7).any(|w| w == b"\x09\x05ticks"));
}

// ----- the token applet through the firmware -------------------------------------------------

const SELECT_TOKEN: [u8; 14] = [
    0x00, 0xA4, 0x04, 0x00, 0x09, 0xF0, b's', b'i', b'm', b'l', b'a', b'b', b'T', b'K',
];

fn token_apdu(host: &mut Host, fw: &mut Fw, capdu: &[u8]) -> (Vec<u8>, u16) {
    let mut r = host.apdu(fw, capdu);
    let mut data = Vec::new();
    loop {
        let s = sw(&r);
        data.extend_from_slice(&r[..r.len() - 2]);
        if s >> 8 != 0x61 {
            return (data, s);
        }
        r = host.apdu(fw, &[0x00, 0xC0, 0x00, 0x00, (s & 0xFF) as u8]);
    }
}

/// Selects the token, verifies its PIN, makes a key; returns the public key.
fn token_ready(host: &mut Host, fw: &mut Fw) -> Vec<u8> {
    assert_eq!(token_apdu(host, fw, &SELECT_TOKEN).1, 0x9000);
    let verify = [
        0x00,
        token::ins::VERIFY_PIN,
        0x00,
        token::PIN_REF,
        0x08,
        b'0',
        b'0',
        b'0',
        b'0',
        0xFF,
        0xFF,
        0xFF,
        0xFF,
    ];
    assert_eq!(token_apdu(host, fw, &verify).1, 0x9000);
    let (_, s) = token_apdu(
        host,
        fw,
        &[0x00, token::ins::GENERATE_KEY, token::KEYGEN_REPLACE, 0x00],
    );
    assert_eq!(s, 0x9000, "GENERATE KEY");
    let (pk, s) = token_apdu(
        host,
        fw,
        &[0x00, token::ins::GET_PUBLIC_KEY, 0x00, 0x00, 0x00],
    );
    assert_eq!((pk.len(), s), (token::PUBLIC_KEY_LEN, 0x9000));
    pk
}

fn sign_apdu(message: &[u8]) -> Vec<u8> {
    let mut c = vec![
        0x00,
        token::ins::SIGN,
        token::SIGN_P1P2.0,
        token::SIGN_P1P2.1,
        message.len() as u8,
    ];
    c.extend_from_slice(message);
    c.push(0x00);
    c
}

fn token_firmware(button: ScriptedButton, seed: u64) -> (Fw, Host) {
    let img = image(&fixture("usim-milenage.toml"));
    let mut fw = Firmware::new(parts(Flash::new(), button, seed), BOARD).unwrap();
    let mut host = Host { seq: 0 };
    host.personalise(&mut fw, &img).unwrap();
    (fw, host)
}

#[test]
fn sign_waits_for_a_fresh_press_and_refuses_without_one() {
    // Pressed in time: the LED lit once, the host heard WAIT, the signature came.
    let (mut fw, mut host) = token_firmware(ScriptedButton::presses(), 7);
    token_ready(&mut host, &mut fw);
    let got = host.exchange(&mut fw, Kind::Apdu, &sign_apdu(b"invoice 42"));
    assert!(
        matches!(got.first(), Some(Got::Frame { kind: 0xF0, .. })),
        "{got:?}"
    );
    let Some(Got::Frame {
        kind: 0x81,
        payload,
        ..
    }) = got.last()
    else {
        panic!("{got:?}")
    };
    assert!(
        sw(payload) == 0x9000 || sw(payload) >> 8 == 0x61,
        "{:04x}",
        sw(payload)
    );
    let p = fw.release();
    assert_eq!((p.led.times_on, p.led.on), (1, false));

    // Nobody presses: 6985 after the timeout, and the token never saw the command.
    for button in [ScriptedButton::untouched(), ScriptedButton::stuck()] {
        let (mut fw, mut host) = token_firmware(button, 8);
        token_ready(&mut host, &mut fw);
        let saves = fw.store().saves();
        let got = host.exchange(&mut fw, Kind::Apdu, &sign_apdu(b"invoice 43"));
        let waits = got
            .iter()
            .filter(|g| matches!(g, Got::Frame { kind: 0xF0, .. }))
            .count();
        assert_eq!(
            waits as u32,
            BOARD.presence_timeout_ms / simlab_firmware::WAIT_INTERVAL_MS
        );
        let Some(Got::Frame {
            kind: 0x81,
            payload,
            ..
        }) = got.last()
        else {
            panic!("{got:?}")
        };
        assert_eq!(payload.as_slice(), NO_PRESENCE_SW);
        assert_eq!(fw.store().saves(), saves);
        let p = fw.release();
        assert_eq!(
            p.delay.waited_ns,
            BOARD.presence_timeout_ms as u64 * 1_000_000
        );
        assert!(!p.led.on);
    }
}

/// The token's DRBG is seeded on the MCU at personalisation: the same image on two tokens
/// gives two different keys (and the host that built the image cannot know either).
#[test]
fn the_same_image_gives_different_tokens_different_keys() {
    let (mut a, mut ha) = token_firmware(ScriptedButton::presses(), 1);
    let (mut b, mut hb) = token_firmware(ScriptedButton::presses(), 2);
    assert_ne!(token_ready(&mut ha, &mut a), token_ready(&mut hb, &mut b));
}

#[test]
fn token_keys_and_pin_counter_survive_a_reboot() {
    let (mut fw, mut host) = token_firmware(ScriptedButton::presses(), 3);
    let pk = token_ready(&mut host, &mut fw);
    let wrong = [
        0x00,
        token::ins::VERIFY_PIN,
        0x00,
        token::PIN_REF,
        0x08,
        b'9',
        b'9',
        b'9',
        b'9',
        0xFF,
        0xFF,
        0xFF,
        0xFF,
    ];
    assert_eq!(token_apdu(&mut host, &mut fw, &wrong).1, 0x63C2);
    let mut fw = reboot(fw);
    assert_eq!(token_apdu(&mut host, &mut fw, &SELECT_TOKEN).1, 0x9000);
    let (again, _) = token_apdu(
        &mut host,
        &mut fw,
        &[0x00, token::ins::GET_PUBLIC_KEY, 0x00, 0x00, 0x00],
    );
    assert_eq!(again, pk);
    let tries = [0x00, token::ins::VERIFY_PIN, 0x00, token::PIN_REF];
    assert_eq!(token_apdu(&mut host, &mut fw, &tries).1, 0x63C2);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Arbitrary bytes on the link: no panic, no change to the stored state, and the link
    /// works afterwards.
    #[test]
    fn arbitrary_bytes_never_panic_or_change_state(
        noise in proptest::collection::vec(any::<u8>(), 0..3000),
        chunk in 1usize..200,
    ) {
        let (mut fw, mut host) = personalised("sim-comp128v1.toml");
        let saves = fw.store().saves();
        for piece in noise.chunks(chunk) {
            fw.feed(piece);
        }
        fw.feed(&[0u8; MAX_FRAME]);
        fw.link().output.clear();
        prop_assert_eq!(fw.store().saves(), saves);
        let s = sw(&host.apdu(&mut fw, &[0xA0, 0xA4, 0x00, 0x00, 0x02, 0x7F, 0x20]));
        prop_assert_eq!(s >> 8, 0x9F);
    }
}

/// A flash image of every older card-state format (the golden states of `fixtures/state/`)
/// boots as a personalised card with its counters: the firmware migrates it on load, exactly
/// as the host does a `--state` file. A newer format than this firmware knows is not loaded:
/// the card reports its state unreadable and answers no APDU as if it were that card.
#[test]
fn every_older_state_format_in_flash_loads_and_a_newer_one_is_refused() {
    use simlab_firmware::store::Store;
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/state");
    let mut seen = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "state") {
            continue;
        }
        let golden = std::fs::read(&path).unwrap();
        let flashed = |bytes: &[u8]| {
            let mut store = Store::new(Flash::new(), 0, REGION as u32, STATE_LEN).unwrap();
            store.save(bytes).unwrap();
            store.into_inner()
        };
        let mut fw = boot(flashed(&golden), ScriptedButton::presses());
        let mut host = Host { seq: 0 };
        let what = path.display();
        assert_eq!(fw.lifecycle(), Lifecycle::Personalised, "{what}");
        // The golden card left PIN1 with two tries.
        assert_eq!(sw(&host.apdu(&mut fw, &PIN1_TRIES)), 0x63C2, "{what}");
        let mut newer = golden.clone();
        newer[4] = simlab_applet::state::VERSION + 1;
        let fw = boot(flashed(&newer), ScriptedButton::presses());
        assert_eq!(fw.lifecycle(), Lifecycle::Unreadable, "{what}");
        seen += 1;
    }
    assert!(seen >= 2, "golden states missing in {}", dir.display());
}

// ----- SIGN REQUEST: shown before the wait -------------------------------------------------------

fn request_bytes(summary: &str) -> Vec<u8> {
    let r = token::request::SignRequest {
        server_id: "sign.example",
        tx_id: [0x17; 16],
        user_id: "ada",
        amount: 4250,
        currency: *b"EUR",
        summary,
        content_hash: [0x33; 32],
        correlator: [0; token::request::CORRELATOR_LEN],
        issued_at: 1_800_000_000,
        expires_at: 1_800_000_300,
    };
    let mut buf = [0u8; token::request::MAX_LEN];
    let n = r.encode(&mut buf).unwrap();
    buf[..n].to_vec()
}

/// The SIGN REQUEST blocks of `data` (CLA `cla`, chaining bit on all but the last).
fn request_apdus(cla: u8, data: &[u8]) -> Vec<Vec<u8>> {
    let (p1, p2) = token::SIGN_REQUEST_P1P2;
    let blocks: Vec<&[u8]> = data.chunks(255).collect();
    blocks
        .iter()
        .enumerate()
        .map(|(i, b)| {
            let last = i + 1 == blocks.len();
            let c = if last {
                cla
            } else {
                cla | token::cla::CHAINING
            };
            let mut a = vec![c, token::ins::SIGN, p1, p2, b.len() as u8];
            a.extend_from_slice(b);
            if last {
                a.push(0x00);
            }
            a
        })
        .collect()
}

fn log(fw: &mut Fw) -> Vec<String> {
    std::mem::take(&mut *fw.console().0.borrow_mut())
}

/// Sends the blocks; every block but the last answers 9000 with nothing shown or sampled.
/// Returns what the last one got back.
fn send_request(host: &mut Host, fw: &mut Fw, apdus: &[Vec<u8>]) -> Vec<Got> {
    let (last, first) = apdus.split_last().unwrap();
    for a in first {
        assert_eq!(sw(&host.apdu(fw, a)), 0x9000);
        assert_eq!(
            log(fw),
            Vec::<String>::new(),
            "nothing before the last block"
        );
    }
    host.exchange(fw, Kind::Apdu, last)
}

fn last_sw(got: &[Got]) -> u16 {
    match got.last() {
        Some(Got::Frame {
            kind: 0x81,
            payload,
            ..
        }) => sw(payload),
        other => panic!("{other:?}"),
    }
}

fn waits(got: &[Got]) -> usize {
    got.iter()
        .filter(|g| matches!(g, Got::Frame { kind: 0xF0, .. }))
        .count()
}

#[test]
fn sign_request_shows_its_fields_before_it_waits_for_the_button() {
    let (mut fw, mut host) = token_firmware(ScriptedButton::presses(), 9);
    token_ready(&mut host, &mut fw);
    log(&mut fw);
    let summary = "€".repeat(token::request::SUMMARY_MAX_CHARS);
    let req = request_bytes(&summary);
    let correlator = token::request::SignRequest::decode(&req)
        .unwrap()
        .correlator_str()
        .to_string();
    let got = send_request(&mut host, &mut fw, &request_apdus(0x00, &req));
    assert!(waits(&got) > 0, "{got:?}");
    let s = last_sw(&got);
    assert!(s == 0x9000 || s >> 8 == 0x61, "{s:04x}");
    assert_eq!(
        log(&mut fw),
        [
            "show: sign request from sign.example".to_string(),
            "show: amount:     42.50 EUR".into(),
            format!("show: summary:    {summary}"),
            "show: user:       ada".into(),
            format!("show: correlator: {correlator}"),
            "show: press the button to sign".into(),
            "poll".into(),
        ],
        "every field shown, then the wait"
    );
    let p = fw.release();
    assert_eq!((p.led.times_on, p.led.on), (1, false));

    // Nobody presses: shown, waited, refused; the card never saw the last block.
    let (mut fw, mut host) = token_firmware(ScriptedButton::untouched(), 10);
    token_ready(&mut host, &mut fw);
    log(&mut fw);
    let got = send_request(&mut host, &mut fw, &request_apdus(0x80, &req));
    assert_eq!(last_sw(&got), 0x6985);
    let l = log(&mut fw);
    assert_eq!(l.len(), 7, "{l:?}");
    assert_eq!(l.last().map(String::as_str), Some("poll"));
}

#[test]
fn a_request_that_does_not_decode_shows_nothing_and_asks_no_press() {
    let (mut fw, mut host) = token_firmware(ScriptedButton::presses(), 11);
    token_ready(&mut host, &mut fw);
    log(&mut fw);
    let req = request_bytes("Flowers for Ada");
    let mut tampered = req.clone();
    let at = req
        .windows(8)
        .position(|w| w == 4250u64.to_be_bytes())
        .unwrap();
    tampered[at + 7] ^= 1;
    let long = request_bytes(&"€".repeat(token::request::SUMMARY_MAX_CHARS));
    let mut long_tampered = long.clone();
    let at = long
        .windows(8)
        .position(|w| w == 4250u64.to_be_bytes())
        .unwrap();
    long_tampered[at + 7] ^= 1;
    let garbage = vec![0x41u8; 600];
    for bad in [
        b"garbage".to_vec(),
        tampered,
        long_tampered,
        garbage,
        req[..req.len() - 1].to_vec(),
    ] {
        let got = send_request(&mut host, &mut fw, &request_apdus(0x00, &bad));
        assert_eq!(waits(&got), 0, "{got:?}");
        assert_eq!(last_sw(&got), 0x6A80, "the card's own refusal");
        assert_eq!(log(&mut fw), Vec::<String>::new(), "nothing shown, no wait");
    }
    // The last block alone, its chain abandoned by another command: not the request.
    let apdus = request_apdus(0x00, &long);
    assert_eq!(sw(&host.apdu(&mut fw, &apdus[0])), 0x9000);
    let (_, s) = token_apdu(&mut host, &mut fw, &[0x00, token::ins::GET_INFO, 0, 0, 0]);
    assert_eq!(s, 0x9000);
    let got = send_request(&mut host, &mut fw, &apdus[1..]);
    assert_eq!((waits(&got), last_sw(&got)), (0, 0x6A80));
    assert_eq!(log(&mut fw), Vec::<String>::new());
    // PIN not verified (a re-selection ends the session): the card says so, no press asked.
    assert_eq!(token_apdu(&mut host, &mut fw, &SELECT_TOKEN).1, 0x9000);
    let got = send_request(&mut host, &mut fw, &request_apdus(0x00, &req));
    assert_eq!((waits(&got), last_sw(&got)), (0, 0x6982));
    let got = host.exchange(&mut fw, Kind::Apdu, &request_apdus(0x00, &long)[0]);
    assert_eq!((waits(&got), last_sw(&got)), (0, 0x6982));
    assert_eq!(log(&mut fw), Vec::<String>::new());
}

/// The token can be selected on logical channels 1-3: SIGN there waits for the button too.
#[test]
fn sign_on_another_logical_channel_waits_for_the_button() {
    let (mut fw, mut host) = token_firmware(ScriptedButton::untouched(), 12);
    let (ch, s) = token_apdu(&mut host, &mut fw, &[0x00, 0x70, 0x00, 0x00, 0x01]);
    assert_eq!((ch.as_slice(), s), (&[1u8][..], 0x9000));
    let mut select = SELECT_TOKEN.to_vec();
    select[0] = 0x01;
    select[3] = 0x0C;
    assert_eq!(sw(&host.apdu(&mut fw, &select)), 0x9000);
    let verify = [
        &[0x01, token::ins::VERIFY_PIN, 0x00, token::PIN_REF, 0x08][..],
        b"0000\xFF\xFF\xFF\xFF",
    ]
    .concat();
    assert_eq!(sw(&host.apdu(&mut fw, &verify)), 0x9000);
    let keygen = [0x01, token::ins::GENERATE_KEY, token::KEYGEN_REPLACE, 0x00];
    assert_eq!(sw(&host.apdu(&mut fw, &keygen)) >> 8, 0x61);
    let mut sign = sign_apdu(b"on channel 1");
    sign[0] = 0x01;
    let got = host.exchange(&mut fw, Kind::Apdu, &sign);
    assert!(waits(&got) > 0);
    assert_eq!(last_sw(&got), 0x6985);
    assert_eq!(log(&mut fw), ["poll"]);
    let got = send_request(
        &mut host,
        &mut fw,
        &request_apdus(0x81, &request_bytes("x")),
    );
    assert!(waits(&got) > 0);
    assert_eq!(last_sw(&got), 0x6985);
    assert_eq!(log(&mut fw).len(), 7);
}
