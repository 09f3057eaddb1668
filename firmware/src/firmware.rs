//! The main loop: frames in, card model, persistence, frames out.
//!
//! Order of events for a command, and why:
//!
//! 1. a complete, checked frame arrives ([`crate::link::Deframer`]);
//! 2. a retransmission of the request answered last (same sequence number and CRC) gets the
//!    same answer again, without running the command twice — a host that lost an answer to a
//!    VERIFY must not spend a second PIN try by asking again;
//! 3. SIGN waits for a fresh press of the user-presence button, LED on, telling the host it is
//!    waiting every [`WAIT_INTERVAL_MS`]; no press in time → [`crate::presence::NO_PRESENCE_SW`]
//!    and the card never sees the command. SIGN REQUEST (seed 002) first shows what it signs
//!    on the board's [`Console`] (see [`crate::presence`]); a request that does not decode asks
//!    for no press and goes to the card, which refuses it (6A80);
//! 4. the card model runs the command;
//! 5. if persistent state changed ([`simlab_applet::Card::take_dirty`]), it is saved — A/B
//!    slots, [`crate::store`] — *before* the reply leaves, so a counter the reply reports spent
//!    is spent in flash too; if the save fails the reply is 6581 (memory failure);
//! 6. the reply goes out.

use crate::link::{self, Deframer, ErrorCode, InfoTag, Kind, MAX_FRAME, MAX_PAYLOAD};
use crate::presence::{self, PressDetector};
use crate::store::{Store, StoreError};
use embedded_hal::delay::DelayNs;
use embedded_hal::digital::{InputPin, OutputPin};
use embedded_io::{Read, Write};
use embedded_storage::nor_flash::NorFlash;
use simlab_applet::algo::Algorithm;
use simlab_applet::card::{ATR_MAX, RESPONSE_MAX};
use simlab_applet::state::STATE_LEN;
use simlab_applet::token::{self, Token, request};
use simlab_applet::{Card, Config, Keys, Status};

/// A card state (`simlab_applet::state`) ends with the token's section and a CRC-32.
const STATE_BODY: usize = STATE_LEN - 4;
/// Where the token's section starts in a card state.
const TOKEN_AT: usize = STATE_BODY - token::STATE_LEN;

/// How often a [`Kind::Wait`] frame tells the host the card still works on its request.
pub const WAIT_INTERVAL_MS: u32 = 500;

/// The default time a user has to press the button for a signature.
pub const DEFAULT_PRESENCE_TIMEOUT_MS: u32 = 30_000;

/// Bytes read from the link per call.
const READ_CHUNK: usize = 64;

/// A free-running counter for [`Kind::Bench`]: CPU cycles (DWT on a real Cortex-M) or
/// instructions (QEMU with `-icount`).
pub trait Counter {
    /// What one count is ("cycles", "instructions"); `None` when the board has no counter and
    /// [`Kind::Bench`] is unsupported.
    const UNIT: Option<&'static str>;
    /// The current count. Wraps are the implementation's business: it must be monotonic over
    /// the longest command (a P-256 signature).
    fn now(&mut self) -> u64;
}

/// Where the token shows a person what they are asked to approve: a display, a serial
/// console, semihosting output under QEMU. One call per line, without the line end.
///
/// The lines of a SIGN REQUEST come from bytes the host sent and the token's decoder
/// accepted: printable, no control or bidirectional-override characters (the decoder refuses
/// them), so they cannot steer a terminal.
pub trait Console {
    fn show(&mut self, line: &str);
}

/// For boards with nowhere to show anything: SIGN REQUEST still waits for the button, but
/// the person sees only what the host shows.
pub struct NoConsole;

impl Console for NoConsole {
    fn show(&mut self, _line: &str) {}
}

/// For boards without a counter.
pub struct NoCounter;

impl Counter for NoCounter {
    const UNIT: Option<&'static str> = None;
    fn now(&mut self) -> u64 {
        0
    }
}

/// What a board tells the core about itself.
#[derive(Clone, Copy, Debug)]
pub struct BoardConfig {
    /// Reported by [`Kind::Info`] ("qemu-lm3s6965evb", "nrf52840-dk").
    pub name: &'static str,
    /// The card's answer to reset (at most [`ATR_MAX`] bytes).
    pub atr: &'static [u8],
    /// [`link::flags::TEST_PRESENCE`] / [`link::flags::TEST_RNG`] for test-only boards.
    pub test_flags: u16,
    /// How long SIGN waits for the button.
    pub presence_timeout_ms: u32,
    /// The button reads low when pressed (a switch to ground with a pull-up).
    pub button_active_low: bool,
    /// The LED lights when its pin is low (LED from VDD to the pin).
    pub led_active_low: bool,
    /// The deepest stack use so far, if the board measures it (stack painting).
    pub stack_peak: Option<fn() -> u32>,
}

/// The hardware the core runs on.
pub struct Parts<L, F, R, B, O, D, C, S = NoConsole> {
    /// The APDU link: UART, USB-CDC, a socket.
    pub link: L,
    /// Flash for the card state; the core uses `[flash_base, flash_base + flash_len)`.
    pub flash: F,
    pub flash_base: u32,
    pub flash_len: u32,
    /// A true RNG: seeds the token's DRBG at personalisation (and the boot-time card).
    pub rng: R,
    /// The user-presence button.
    pub button: B,
    /// Lit while waiting for the button.
    pub led: O,
    pub delay: D,
    pub counter: C,
    /// Where SIGN REQUEST shows what it signs ([`NoConsole`] if nowhere).
    pub console: S,
}

/// Why the firmware could not start.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BootError {
    /// The RNG failed to give the token's seed: refusing to run a token with a guessable key.
    Rng,
    /// The flash region cannot hold the state (board configuration bug).
    Storage(StoreError),
}

/// The lifecycle state of the card's personalisation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lifecycle {
    /// No valid stored state: only personalisation (and reset/ATR/info) is accepted.
    Factory,
    /// A stored state exists but this firmware cannot restore it (another layout version);
    /// treated as factory, reported as such.
    Unreadable,
    /// Personalised: the card answers APDUs.
    Personalised,
}

/// The cached reply to the last APDU, for retransmissions.
struct LastReply {
    seq: u8,
    crc: u32,
    len: usize,
}

/// The firmware: a card model behind the link, with its state in flash.
pub struct Firmware<L, F, R, B, O, D, C, S = NoConsole> {
    link: L,
    store: Store<F>,
    rng: R,
    button: B,
    led: O,
    delay: D,
    counter: C,
    console: S,
    board: BoardConfig,
    card: Card,
    lifecycle: Lifecycle,
    deframer: Deframer,
    request: [u8; MAX_PAYLOAD],
    tx: [u8; MAX_FRAME],
    last: Option<LastReply>,
    last_frame: [u8; MAX_FRAME],
    /// Save/restore buffer and personalisation staging area. Holds secrets only while in use;
    /// wiped afterwards.
    state: [u8; STATE_LEN],
    /// The card model saves its token where [`TOKEN_AT`] says (checked at boot with a token of
    /// known content); personalisation is refused otherwise, rather than writing a fresh token
    /// over some other part of the state.
    token_layout_ok: bool,
    /// The SIGN REQUEST being shown: the bytes the card would decode (RAM only).
    shown: [u8; request::MAX_LEN],
}

impl<L, F, R, B, O, D, C, S> Firmware<L, F, R, B, O, D, C, S>
where
    L: Read + Write,
    F: NorFlash,
    R: rand_core::TryCryptoRng,
    B: InputPin,
    O: OutputPin,
    D: DelayNs,
    C: Counter,
    S: Console,
{
    /// Boots: mounts the store and restores the card state (a factory-fresh card, its token
    /// seeded from the RNG, when there is none).
    pub fn new(
        mut parts: Parts<L, F, R, B, O, D, C, S>,
        board: BoardConfig,
    ) -> Result<Self, BootError> {
        let mut config = Config::new(Keys {
            algorithm: Algorithm::ALL[0],
            ki: [0; 16],
            opc: None,
        });
        let atr_len = board.atr.len().min(ATR_MAX);
        config.atr = [0; ATR_MAX];
        config.atr[..atr_len].copy_from_slice(&board.atr[..atr_len]);
        config.atr_len = atr_len;
        parts
            .rng
            .try_fill_bytes(&mut config.token_seed)
            .map_err(|_| BootError::Rng)?;
        let store = Store::new(parts.flash, parts.flash_base, parts.flash_len, STATE_LEN)
            .map_err(BootError::Storage)?;
        let mut fw = Firmware {
            link: parts.link,
            store,
            rng: parts.rng,
            button: parts.button,
            led: parts.led,
            delay: parts.delay,
            counter: parts.counter,
            console: parts.console,
            board,
            card: Card::new(&config),
            lifecycle: Lifecycle::Factory,
            deframer: Deframer::new(),
            request: [0; MAX_PAYLOAD],
            tx: [0; MAX_FRAME],
            last: None,
            last_frame: [0; MAX_FRAME],
            state: [0; STATE_LEN],
            token_layout_ok: false,
            shown: [0; request::MAX_LEN],
        };
        fw.token_layout_ok = fw.check_token_layout(&config.token_seed);
        config.token_seed.fill(0);
        fw.led_set(false);
        fw.lifecycle = fw.restore().map_err(BootError::Storage)?;
        Ok(fw)
    }

    /// Whether the fresh card saves its token where [`TOKEN_AT`] says, compared with a token
    /// saved on its own. Out of line (and before any restore) so the temporary token does not
    /// add to the deepest stack.
    #[inline(never)]
    fn check_token_layout(&mut self, seed: &[u8; 32]) -> bool {
        self.card.save_state(&mut self.state);
        let in_card = crate::crc::crc32(&self.state[TOKEN_AT..STATE_BODY]);
        let n = Token::new(seed).save_state(&mut self.state[..token::STATE_LEN]);
        let alone = crate::crc::crc32(&self.state[..n]);
        self.state.fill(0);
        n == token::STATE_LEN && in_card == alone
    }

    /// Loads the stored state into the card.
    #[inline(never)]
    fn restore(&mut self) -> Result<Lifecycle, StoreError> {
        let lifecycle = match self.store.load(&mut self.state) {
            Ok(Some(n)) => match self.card.restore_state_adopting_type(&self.state[..n]) {
                Ok(()) => Ok(Lifecycle::Personalised),
                Err(_) => Ok(Lifecycle::Unreadable),
            },
            Ok(None) => Ok(Lifecycle::Factory),
            // A valid slot larger than this firmware's state: another layout.
            Err(StoreError::TooLarge) => Ok(Lifecycle::Unreadable),
            Err(e) => Err(e),
        };
        self.state.fill(0);
        lifecycle
    }

    /// Where the card is in its life.
    pub fn lifecycle(&self) -> Lifecycle {
        self.lifecycle
    }

    /// The card model (host tests look inside).
    pub fn card(&self) -> &Card {
        &self.card
    }

    /// The store (host tests inspect the flash).
    pub fn store(&mut self) -> &mut Store<F> {
        &mut self.store
    }

    /// The link (host tests read what was sent).
    pub fn link(&mut self) -> &mut L {
        &mut self.link
    }

    /// The console (host tests read what was shown).
    pub fn console(&mut self) -> &mut S {
        &mut self.console
    }

    /// Takes the firmware apart (host tests "reboot" by building a new one from the parts).
    pub fn release(self) -> Parts<L, F, R, B, O, D, C, S> {
        let (flash_base, flash_len) = self.store.region();
        Parts {
            link: self.link,
            flash: self.store.into_inner(),
            flash_base,
            flash_len,
            rng: self.rng,
            button: self.button,
            led: self.led,
            delay: self.delay,
            counter: self.counter,
            console: self.console,
        }
    }

    /// Serves forever; read errors (UART framing/overrun, a dropped connection) are the
    /// deframer's to recover from.
    pub fn run(&mut self) -> ! {
        loop {
            let _ = self.poll();
        }
    }

    /// Reads once from the link (blocking) and handles every frame that completes.
    pub fn poll(&mut self) -> Result<usize, L::Error> {
        let mut chunk = [0u8; READ_CHUNK];
        let n = self.link.read(&mut chunk)?;
        self.feed(&chunk[..n]);
        Ok(n)
    }

    /// Handles received bytes.
    pub fn feed(&mut self, mut bytes: &[u8]) {
        loop {
            let n = self.deframer.push(bytes);
            bytes = &bytes[n..];
            loop {
                let (kind, seq, crc, len) = match self.deframer.poll() {
                    None => break,
                    Some(link::Event::Rejected { seq, code }) => {
                        self.send_error(seq, code);
                        continue;
                    }
                    Some(link::Event::Frame(f)) => {
                        let len = f.payload.len();
                        self.request[..len].copy_from_slice(f.payload);
                        (f.kind, f.seq, f.crc, len)
                    }
                };
                self.handle(kind, seq, crc, len);
            }
            if bytes.is_empty() {
                break;
            }
        }
    }

    fn handle(&mut self, kind: u8, seq: u8, crc: u32, len: usize) {
        let Some(kind) = Kind::request(kind) else {
            self.send_error(seq, ErrorCode::UnknownType);
            return;
        };
        if !matches!(kind, Kind::Apdu | Kind::Bench) {
            // Anything else ends the retransmission window: after a reset, replaying an answer
            // from before it would be a lie.
            self.last = None;
        }
        match kind {
            Kind::Apdu | Kind::Bench => self.apdu(kind, seq, crc, len),
            Kind::Reset => {
                self.card.reset();
                let atr_len = self.card.atr().len();
                self.tx[link::HEADER_LEN..link::HEADER_LEN + atr_len]
                    .copy_from_slice(self.card.atr());
                self.send_built(kind.reply(), seq, atr_len);
            }
            Kind::GetAtr => {
                let atr_len = self.card.atr().len();
                self.tx[link::HEADER_LEN..link::HEADER_LEN + atr_len]
                    .copy_from_slice(self.card.atr());
                self.send_built(kind.reply(), seq, atr_len);
            }
            Kind::Info => {
                let n = self.info();
                self.send_built(kind.reply(), seq, n);
            }
            Kind::PersoWrite => match self.perso_write(len) {
                Ok(()) => self.send_built(kind.reply(), seq, 0),
                Err(code) => self.send_error(seq, code),
            },
            Kind::PersoCommit => match self.perso_commit(len) {
                Ok(()) => self.send_built(kind.reply(), seq, 0),
                Err(code) => self.send_error(seq, code),
            },
            Kind::Wait | Kind::Error => self.send_error(seq, ErrorCode::UnknownType),
        }
    }

    fn apdu(&mut self, kind: Kind, seq: u8, crc: u32, len: usize) {
        if len == 0 || (kind == Kind::Bench && C::UNIT.is_none()) {
            self.send_error(seq, ErrorCode::BadPayload);
            return;
        }
        if self.lifecycle != Lifecycle::Personalised {
            self.send_error(seq, ErrorCode::NotPersonalised);
            return;
        }
        if let Some(last) = &self.last
            && last.seq == seq
            && last.crc == crc
        {
            let n = last.len;
            let _ = self.link.write_all(&self.last_frame[..n]);
            let _ = self.link.flush();
            return;
        }
        self.last = None;
        let prefix = if kind == Kind::Bench { 8 } else { 0 };
        let out_at = link::HEADER_LEN + prefix;
        let mut rapdu = [0u8; RESPONSE_MAX];
        let (n, count) =
            if presence::requires_presence(&self.request[..len]) && !self.approve(seq, len) {
                rapdu[..2].copy_from_slice(&presence::NO_PRESENCE_SW);
                (2, 0)
            } else {
                let start = self.counter.now();
                let n = self.card.process(&self.request[..len], &mut rapdu);
                let count = self.counter.now().wrapping_sub(start);
                if self.card.take_dirty() && self.persist().is_err() {
                    // The card changed in RAM but not in flash: say so instead of pretending the
                    // command succeeded (a real card reports a failed EEPROM write the same way).
                    rapdu[..2].copy_from_slice(&Status::MemoryFailure.to_bytes());
                    (2, count)
                } else {
                    (n, count)
                }
            };
        if prefix > 0 {
            self.tx[link::HEADER_LEN..out_at].copy_from_slice(&count.to_be_bytes());
        }
        self.tx[out_at..out_at + n].copy_from_slice(&rapdu[..n]);
        rapdu.fill(0);
        if let Ok(total) = link::seal(kind.reply(), seq, prefix + n, &mut self.tx) {
            self.last_frame[..total].copy_from_slice(&self.tx[..total]);
            self.last = Some(LastReply {
                seq,
                crc,
                len: total,
            });
            let _ = self.link.write_all(&self.tx[..total]);
            let _ = self.link.flush();
        }
    }

    /// Saves the card state; the buffer is wiped whatever happens.
    fn persist(&mut self) -> Result<(), StoreError> {
        let n = self.card.save_state(&mut self.state);
        let result = self.store.save(&self.state[..n]);
        self.state.fill(0);
        result
    }

    fn led_set(&mut self, on: bool) {
        let _ = if on != self.board.led_active_low {
            self.led.set_high()
        } else {
            self.led.set_low()
        };
    }

    fn button_pressed(&mut self) -> bool {
        let level = if self.board.button_active_low {
            self.button.is_low()
        } else {
            self.button.is_high()
        };
        level.unwrap_or(false)
    }

    /// The user's approval of a command [`presence::requires_presence`] gates. SIGN REQUEST
    /// shows its fields and then waits; one that does not decode is let through without a
    /// press (the card refuses it, see [`presence::is_sign_request`]). Any other SIGN waits.
    fn approve(&mut self, seq: u8, len: usize) -> bool {
        let capdu = &self.request[..len];
        if !presence::is_sign_request(capdu) {
            return self.wait_for_presence(seq);
        }
        // The bytes the card itself collected for this request, not a copy of our own.
        let shown = self.card.pending_sign_request(capdu, &mut self.shown);
        let decoded = shown.and_then(|b| request::SignRequest::decode(b).ok());
        let approved = match decoded {
            Some(req) => {
                presence::show_request(&mut self.console, &req);
                self.wait_for_presence(seq)
            }
            None => true,
        };
        self.shown.fill(0);
        approved
    }

    /// Waits for a fresh press, LED on, telling the host every [`WAIT_INTERVAL_MS`].
    fn wait_for_presence(&mut self, seq: u8) -> bool {
        let polls = self.board.presence_timeout_ms / presence::POLL_MS;
        let wait_every = (WAIT_INTERVAL_MS / presence::POLL_MS).max(1);
        let mut detector = PressDetector::new();
        self.led_set(true);
        let mut pressed = false;
        for i in 0..polls {
            if i % wait_every == 0 {
                self.send_built(Kind::Wait as u8, seq, 0);
            }
            if detector.sample(self.button_pressed()) {
                pressed = true;
                break;
            }
            self.delay.delay_ms(presence::POLL_MS);
        }
        self.led_set(false);
        pressed
    }

    fn perso_write(&mut self, len: usize) -> Result<(), ErrorCode> {
        if self.lifecycle == Lifecycle::Personalised {
            return Err(ErrorCode::AlreadyPersonalised);
        }
        let [hi, lo, data @ ..] = &self.request[..len] else {
            return Err(ErrorCode::BadPayload);
        };
        let offset = u16::from_be_bytes([*hi, *lo]) as usize;
        let dst = self
            .state
            .get_mut(offset..offset + data.len())
            .filter(|d| !d.is_empty())
            .ok_or(ErrorCode::BadPayload)?;
        dst.copy_from_slice(data);
        Ok(())
    }

    /// Checks, adapts, restores and stores the personalisation image staged by PERSO WRITE.
    ///
    /// The image is a card state the host built from a profile. Its token section is replaced
    /// by a fresh token seeded from this MCU's RNG: the token's DRBG state is persistent, and
    /// the host that built the image must not know the state its keys will be drawn from.
    /// Where that section lies is checked at boot, not assumed ([`Self::token_layout_ok`]).
    fn perso_commit(&mut self, len: usize) -> Result<(), ErrorCode> {
        if self.lifecycle == Lifecycle::Personalised {
            return Err(ErrorCode::AlreadyPersonalised);
        }
        let &[l0, l1, c0, c1, c2, c3] = &self.request[..len] else {
            return Err(ErrorCode::BadPayload);
        };
        let image_len = u16::from_be_bytes([l0, l1]) as usize;
        let crc = u32::from_be_bytes([c0, c1, c2, c3]);
        let result = self.adopt_image(image_len, crc);
        self.state.fill(0);
        result?;
        self.persist().map_err(|_| ErrorCode::Storage)?;
        self.lifecycle = Lifecycle::Personalised;
        Ok(())
    }

    fn adopt_image(&mut self, image_len: usize, crc: u32) -> Result<(), ErrorCode> {
        if !self.token_layout_ok || image_len != STATE_LEN || crate::crc::crc32(&self.state) != crc
        {
            return Err(ErrorCode::BadImage);
        }
        // The card's own CRC, before the token patch makes a new one: the link CRC proves the
        // image arrived as sent, this one that the host sent a whole, undamaged card state.
        let stored = &self.state[STATE_BODY..];
        if simlab_applet::state::crc32(&self.state[..STATE_BODY]).to_be_bytes() != stored {
            return Err(ErrorCode::BadImage);
        }
        let mut seed = [0u8; 32];
        self.rng
            .try_fill_bytes(&mut seed)
            .map_err(|_| ErrorCode::BadImage)?;
        let written = Token::new(&seed).save_state(&mut self.state[TOKEN_AT..STATE_BODY]);
        seed.fill(0);
        if written != token::STATE_LEN {
            return Err(ErrorCode::BadImage);
        }
        let card_crc = simlab_applet::state::crc32(&self.state[..STATE_BODY]);
        self.state[STATE_BODY..].copy_from_slice(&card_crc.to_be_bytes());
        // The SIM part must come back exactly as sent (the token part may legitimately
        // differ: its DRBG is the card's own business).
        let sim_part = crate::crc::crc32(&self.state[..TOKEN_AT]);
        self.card
            .restore_state_adopting_type(&self.state)
            .map_err(|_| ErrorCode::BadImage)?;
        self.state.fill(0);
        if self.card.save_state(&mut self.state) != STATE_LEN
            || crate::crc::crc32(&self.state[..TOKEN_AT]) != sim_part
        {
            return Err(ErrorCode::BadImage);
        }
        Ok(())
    }

    /// Writes the INFO TLVs into the transmit buffer; returns their length.
    fn info(&mut self) -> usize {
        let mut flags = self.board.test_flags;
        match self.lifecycle {
            Lifecycle::Personalised => flags |= link::flags::PERSONALISED,
            Lifecycle::Unreadable => flags |= link::flags::STATE_UNREADABLE,
            Lifecycle::Factory => {}
        }
        if C::UNIT.is_some() {
            flags |= link::flags::BENCH;
        }
        let mut w = TlvWriter {
            buf: &mut self.tx[link::HEADER_LEN..link::HEADER_LEN + MAX_PAYLOAD],
            at: 0,
        };
        w.put(InfoTag::Protocol, &[link::PROTOCOL_VERSION]);
        w.put(InfoTag::Flags, &flags.to_be_bytes());
        w.put(InfoTag::Board, self.board.name.as_bytes());
        w.put(InfoTag::Version, env!("CARGO_PKG_VERSION").as_bytes());
        w.put(InfoTag::MaxPayload, &(MAX_PAYLOAD as u16).to_be_bytes());
        w.put(InfoTag::StateLen, &(STATE_LEN as u16).to_be_bytes());
        w.put(InfoTag::Saves, &self.store.saves().to_be_bytes());
        if let Some(peak) = self.board.stack_peak {
            w.put(InfoTag::StackPeak, &peak().to_be_bytes());
        }
        if let Some(unit) = C::UNIT {
            w.put(InfoTag::BenchUnit, unit.as_bytes());
        }
        w.put(
            InfoTag::PresenceTimeout,
            &self.board.presence_timeout_ms.to_be_bytes(),
        );
        w.at
    }

    fn send_error(&mut self, seq: u8, code: ErrorCode) {
        self.tx[link::HEADER_LEN] = code as u8;
        self.send_built(Kind::Error as u8, seq, 1);
    }

    /// Seals and sends the `len` payload bytes already in the transmit buffer. A write error
    /// means the host is gone; the next one resynchronises.
    fn send_built(&mut self, kind: u8, seq: u8, len: usize) {
        if let Ok(total) = link::seal(kind, seq, len, &mut self.tx) {
            let _ = self.link.write_all(&self.tx[..total]);
            let _ = self.link.flush();
        }
    }
}

/// Tag-length-value writer that drops what does not fit (INFO is small; nothing is dropped
/// in practice, and a truncated INFO is still well-formed).
struct TlvWriter<'a> {
    buf: &'a mut [u8],
    at: usize,
}

impl TlvWriter<'_> {
    fn put(&mut self, tag: InfoTag, value: &[u8]) {
        let len = value.len().min(u8::MAX as usize);
        let Some(dst) = self.buf.get_mut(self.at..self.at + 2 + len) else {
            return;
        };
        dst[0] = tag as u8;
        dst[1] = len as u8;
        dst[2..].copy_from_slice(&value[..len]);
        self.at += 2 + len;
    }
}
