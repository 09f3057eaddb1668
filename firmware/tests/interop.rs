//! The host's `SerialTransport` (an independent implementation of docs/link-protocol.md)
//! against the firmware core, over a socket pair: personalisation, T=0 through the host's
//! `Link`, and a link that corrupts a reply.

use simlab_applet::Command;
use simlab_applet::state::STATE_LEN;
use simlab_card::profile::Profile;
use simlab_card::transport::serial::SerialTransport;
use simlab_card::transport::{Link, Transport, inproc::InProcess};
use simlab_firmware::link;
use simlab_firmware::testkit::{
    CountingDelay, RecordingConsole, RecordingLed, ScriptedButton, SimFlash, TestRng,
};
use simlab_firmware::{BoardConfig, Firmware, NoCounter, Parts};
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::thread::JoinHandle;

const REGION: usize = 2 * (16 + STATE_LEN).div_ceil(256) * 256;
type Flash = SimFlash<REGION>;

const BOARD: BoardConfig = BoardConfig {
    name: "interop",
    atr: simlab_applet::card::SIMLAB_ATR,
    test_flags: link::flags::TEST_PRESENCE | link::flags::TEST_RNG,
    presence_timeout_ms: 1_000,
    button_active_low: false,
    led_active_low: false,
    stack_peak: None,
};

/// The firmware's end of the socket; with `corrupt_write`, the n-th frame it sends (0-based)
/// has one payload bit flipped.
struct Sock {
    s: UnixStream,
    writes: usize,
    corrupt_write: Option<usize>,
}

impl embedded_io::ErrorType for Sock {
    type Error = embedded_io::ErrorKind;
}

fn kind(_: std::io::Error) -> embedded_io::ErrorKind {
    embedded_io::ErrorKind::BrokenPipe
}

impl embedded_io::Read for Sock {
    fn read(&mut self, buf: &mut [u8]) -> Result<usize, Self::Error> {
        self.s.read(buf).map_err(kind)
    }
}

impl embedded_io::Write for Sock {
    fn write(&mut self, buf: &[u8]) -> Result<usize, Self::Error> {
        let n = self.writes;
        self.writes += 1;
        if self.corrupt_write == Some(n) && buf.len() > link::HEADER_LEN {
            let mut bad = buf.to_vec();
            bad[link::HEADER_LEN] ^= 0x01;
            self.s.write_all(&bad).map_err(kind)?;
        } else {
            self.s.write_all(buf).map_err(kind)?;
        }
        Ok(buf.len())
    }
    fn flush(&mut self) -> Result<(), Self::Error> {
        self.s.flush().map_err(kind)
    }
}

type Fw = Firmware<
    Sock,
    Flash,
    TestRng,
    ScriptedButton,
    RecordingLed,
    CountingDelay,
    NoCounter,
    RecordingConsole,
>;

/// Runs a firmware on `flash` in a thread until the host hangs up; returns the host's end.
/// Runs a firmware on `flash`; the thread gives back the flash, the link's write count and
/// what the console showed.
fn serve(
    flash: Flash,
    corrupt_write: Option<usize>,
) -> (UnixStream, JoinHandle<(Flash, usize, String)>) {
    let (host, card) = UnixStream::pair().unwrap();
    let handle = std::thread::spawn(move || {
        let parts = Parts {
            link: Sock {
                s: card,
                writes: 0,
                corrupt_write,
            },
            flash,
            flash_base: 0,
            flash_len: REGION as u32,
            rng: TestRng(42),
            button: ScriptedButton::presses(),
            led: RecordingLed::default(),
            delay: CountingDelay::default(),
            counter: NoCounter,
            console: RecordingConsole::new(),
        };
        let mut fw: Fw = Firmware::new(parts, BOARD).expect("boot");
        while let Ok(n) = fw.poll() {
            if n == 0 {
                break;
            }
        }
        let parts = fw.release();
        let shown = parts.console.text().to_string();
        (parts.flash, parts.link.writes, shown)
    });
    (host, handle)
}

fn profile() -> Profile {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/cards/usim-milenage.toml");
    Profile::load(&path).unwrap()
}

fn personalised_flash() -> Flash {
    let (host, fw) = serve(Flash::new(), None);
    let mut t = SerialTransport::over(Box::new(host), "test token".into()).unwrap();
    assert!(!t.info().personalised());
    assert_ne!(
        t.info().flags & simlab_card::transport::serial::flags::TEST_RNG,
        0
    );
    let card = profile().build_card_seeded([0; 32]);
    let mut image = vec![0u8; STATE_LEN];
    card.save_state(&mut image);
    t.personalise(&image).unwrap();
    assert!(t.info().personalised());
    assert!(t.describe().contains("TEST-ONLY"), "{}", t.describe());
    drop(t);
    fw.join().unwrap().0
}

/// The same commands through the host's `Link` (with its T=0 handling) get the same answers
/// from the token as from the card model in-process.
#[test]
fn the_host_transport_and_the_firmware_agree() {
    let flash = personalised_flash();
    let (host, fw) = serve(flash, None);
    let token = SerialTransport::over(Box::new(host), "test token".into()).unwrap();
    assert_eq!(token.atr(), simlab_applet::card::SIMLAB_ATR);
    let mut on_token = Link::new(Box::new(token));
    let mut in_process = Link::new(Box::new(InProcess::new(
        profile().build_card_seeded([0; 32]),
        "reference",
    )));
    let rand = [0x23u8; 16];
    let commands = [
        Command::new(0x00, 0xA4, 0x00, 0x04)
            .with_data(&[0x3F, 0x00])
            .with_ne(256),
        Command::new(0xA0, 0xA4, 0x00, 0x00).with_data(&[0x2F, 0xE2]),
        Command::new(0xA0, 0xB0, 0x00, 0x00).with_ne(10),
        Command::new(0xA0, 0xA4, 0x00, 0x00).with_data(&[0x7F, 0x20]),
        Command::new(0xA0, 0x88, 0x00, 0x00).with_data(&rand),
        Command::new(0x00, 0x20, 0x00, 0x01).with_data(b"9999\xFF\xFF\xFF\xFF"),
        Command::new(0x00, 0x20, 0x00, 0x01),
    ];
    for cmd in &commands {
        assert_eq!(
            on_token.transmit(cmd).unwrap(),
            in_process.transmit(cmd).unwrap(),
            "{cmd:02x?}"
        );
    }
    drop(on_token);
    fw.join().unwrap();
}

/// The host's `TokenSession::sign_request` over the serial link: the chained request is shown
/// on the firmware's console, whole, before the signature comes; garbage shows nothing.
#[test]
fn a_sign_request_from_the_host_is_shown_then_signed() {
    use simlab_card::token::{PinOutcome, TokenSession, request};
    let flash = personalised_flash();
    let (host, fw) = serve(flash, None);
    let t = SerialTransport::over(Box::new(host), "test token".into()).unwrap();
    let mut token = TokenSession::open(Link::new(Box::new(t))).unwrap();
    assert_eq!(
        token.verify_pin(b"0000\xFF\xFF\xFF\xFF").unwrap(),
        PinOutcome::Verified
    );
    token.generate_key(true).unwrap();
    let summary = "Tulips for Grace — ".repeat(8);
    let req = request::SignRequest {
        server_id: "sign.example",
        tx_id: [1; 16],
        user_id: "grace",
        amount: 199,
        currency: *b"EUR",
        summary: &summary,
        content_hash: [2; 32],
        correlator: [0; request::CORRELATOR_LEN],
        issued_at: 10,
        expires_at: 20,
    };
    let mut buf = [0u8; request::MAX_LEN];
    let n = req.encode(&mut buf).unwrap();
    assert!(n > 255, "chained");
    // The signature is checked against openssl in tests/tests/firmware.rs (under QEMU) and
    // against the key in the applet's own tests; here: it came, after the console showed.
    let der = token.sign_request(&buf[..n]).unwrap();
    assert_eq!(der.first(), Some(&0x30));
    // Garbage: no press asked, the card's own refusal.
    assert!(token.sign_request(b"garbage").is_err());
    drop(token);
    let shown = fw.join().unwrap().2;
    let correlator = request::SignRequest::decode(&buf[..n])
        .unwrap()
        .correlator_str()
        .to_string();
    assert_eq!(
        shown,
        format!(
            "sign request from sign.example\namount:     1.99 EUR\nsummary:    {summary}\n\
             user:       grace\ncorrelator: {correlator}\npress the button to sign\n"
        )
    );
}

/// The firmware's reply to a VERIFY arrives corrupted: the host sends the same frame again and
/// gets the cached answer — the wrong PIN costs one try, not two.
#[test]
fn a_corrupted_reply_is_resent_without_running_the_command_twice() {
    let flash = personalised_flash();
    // Writes: INFO reply (0), RESET reply (1), then the VERIFY reply (2).
    let (host, fw) = serve(flash, Some(2));
    let mut t = SerialTransport::over(Box::new(host), "lossy token".into()).unwrap();
    let r = t
        .transmit_raw(b"\x00\x20\x00\x01\x089999\xFF\xFF\xFF\xFF")
        .unwrap();
    assert_eq!(r, [0x63, 0xC2]);
    let r = t.transmit_raw(&[0x00, 0x20, 0x00, 0x01]).unwrap();
    assert_eq!(r, [0x63, 0xC2], "the retransmission ran the VERIFY again");
    drop(t);
    // INFO, RESET, the corrupted VERIFY reply, its repetition, the tries query.
    assert_eq!(fw.join().unwrap().1, 5);
}

#[test]
fn a_token_that_hangs_up_is_a_clear_error() {
    let (host, card) = UnixStream::pair().unwrap();
    drop(card);
    let e = SerialTransport::over(Box::new(host), "gone".into())
        .err()
        .expect("an error")
        .to_string();
    assert!(e.contains("gone"), "{e}");
}
