//! The card: one file system and one set of secrets, answering two dialects.
//!
//! CLA A0 is the classic GSM SIM of TS 51.011 (responses through `9Fxx` + GET RESPONSE, CHV
//! errors `9804`/`9840`); CLA 00/80 is the UICC of TS 102 221 with ADF.USIM (FCP templates,
//! `63Cx`/`6983`). Real UICCs answer both, and so does this model. It behaves like a T=0 card:
//! commands that produce data as a side effect (SELECT, RUN GSM ALGORITHM, AUTHENTICATE) leave it
//! waiting for GET RESPONSE, and a wrong Le is answered with the right one (`6Cxx`/`67xx`), so a
//! host's T=0 handling is exercised by the model exactly as by a real card.
//!
//! [`Card`] is the outside: construction, personalisation, persistent state and `process`.
//! Logical channels, GET RESPONSE and which application a command reaches are the dispatcher's
//! (`dispatch`); the file system's commands are here, as the `FileSystem` application
//! over the shared `CardState`.

use crate::algo::Algorithm;
use crate::apdu::Command;
pub use crate::auth::Keys;
use crate::auth::{AkaError, SqnWindow, Subscriber};
use crate::card_manager::{ARAM_AID, CardManager, ISD_AID};
use crate::chv::{PIN_LEN, Pin, Secret};
use crate::dispatch::{
    AppId, Application, Apps, Ctx, Cursor, Dialect, Dispatcher, Fail, Handled, Out,
};
use crate::fs::{self, Access, Arena, Kind, idx};
use crate::state;
use crate::status::Status;
use crate::tlv::Writer;
use crate::token::{self, Token};

/// The largest response `process` writes: 256 data bytes and the status word. A response buffer
/// of this size never truncates.
pub const RESPONSE_MAX: usize = 258;

pub use crate::card_type::SIMLAB_ATR;

/// The longest ATR ISO 7816-3 allows.
pub const ATR_MAX: usize = 33;

pub use crate::card_type::CardType;

/// The algorithm codes of the SJA2-style key files (REFERENCE.md: milenage = 4, comp128v1..3 =
/// 1..3); simlab's own type adds 5 = xor2g and 6 = xor3g.
fn algorithm_code(alg: Algorithm) -> u8 {
    match alg {
        Algorithm::Comp128v1 => 1,
        Algorithm::Comp128v2 => 2,
        Algorithm::Comp128v3 => 3,
        Algorithm::Milenage => 4,
        Algorithm::Xor2g => 5,
        Algorithm::Xor3g => 6,
    }
}

fn algorithm_from_code(code: u8) -> Option<Algorithm> {
    Algorithm::ALL
        .into_iter()
        .find(|&a| algorithm_code(a) == code)
}

/// The vendor key-file layout: algorithm code ‖ Ki ‖ OPc (33 bytes).
pub fn encode_key_file(alg: Algorithm, ki: &[u8; 16], opc: Option<&[u8; 16]>) -> [u8; 33] {
    let mut out = [0u8; 33];
    out[0] = algorithm_code(alg);
    out[1..17].copy_from_slice(ki);
    out[17..].copy_from_slice(opc.unwrap_or(&[0; 16]));
    out
}

/// The longest vendor key file (algorithm ‖ Ki ‖ OPc).
const KEY_IMAGE_MAX: usize = 33;

/// Everything needed to build a card; the host fills it from a profile.
#[derive(Clone)]
pub struct Config {
    pub keys: Keys,
    /// The highest SQN the card has accepted so far (TS 33.102 Annex C), as a 48-bit number.
    pub sqn: u64,
    pub pin1: [u8; PIN_LEN],
    pub puk1: [u8; PIN_LEN],
    pub pin1_enabled: bool,
    pub pin2: [u8; PIN_LEN],
    pub puk2: [u8; PIN_LEN],
    pub adm1: [u8; PIN_LEN],
    /// ADM1 tries before the card locks for good (no PUK exists for ADM).
    pub adm1_tries: u8,
    pub atr: [u8; ATR_MAX],
    pub atr_len: usize,
    /// Seeds the token applet's DRBG: must be unique per card (the host draws it from the OS
    /// RNG, a microcontroller from its TRNG).
    pub token_seed: [u8; 32],
    /// Which programmable card this model is (ATR, ADM rules, key files).
    pub card_type: CardType,
}

impl Config {
    /// A configuration with the default codes and ATR (PIN1 0000 disabled, PUK1 12345678,
    /// PIN2 0000, PUK2 12345678, ADM1 88888888 with 3 tries), for the given keys.
    pub fn new(keys: Keys) -> Self {
        let mut atr = [0; ATR_MAX];
        atr[..SIMLAB_ATR.len()].copy_from_slice(SIMLAB_ATR);
        let pad = |s: &str| crate::chv::pad_pin(s).unwrap_or([0xFF; PIN_LEN]);
        Config {
            keys,
            sqn: 0,
            pin1: pad("0000"),
            puk1: pad("12345678"),
            pin1_enabled: false,
            pin2: pad("0000"),
            puk2: pad("12345678"),
            adm1: pad("88888888"),
            adm1_tries: 3,
            atr,
            atr_len: SIMLAB_ATR.len(),
            token_seed: [0; 32],
            card_type: CardType::Simlab,
        }
    }
}

/// Which secret code a VERIFY-family command addresses.
#[derive(Clone, Copy, PartialEq, Eq)]
enum CodeRef {
    Pin1,
    Pin2,
    Adm1,
}

/// The card model: the shared state its applications work on, the token applet's own state,
/// and the dispatcher that owns logical channels (see `dispatch`).
#[derive(Clone)]
pub struct Card {
    state: CardState,
    token: Token,
    dispatcher: Dispatcher,
    atr: [u8; ATR_MAX],
    atr_len: usize,
}

/// What the applications share: one file system, one set of codes and subscriber keys. The
/// file system's cursor (current DF, EF, record, ADF) is the channel's, swapped in by the
/// dispatcher for the command's duration.
#[derive(Clone)]
pub(crate) struct CardState {
    pub(crate) arena: Arena,
    pub(crate) sub: Subscriber,
    pin1: Pin,
    pin2: Pin,
    adm1: Secret,
    adm1_verified: bool,
    pub(crate) card_type: CardType,
    /// Set whenever state that must survive a power cut changes; see [`Card::take_dirty`].
    dirty: bool,
    /// Files switched off by DEACTIVATE FILE (one bit per file index), persistent.
    deactivated: [u8; DEACTIVATED_LEN],
    // The cursor of the channel the current command came on.
    pub(crate) current_df: u8,
    pub(crate) current_ef: Option<u8>,
    record: u8,
    pub(crate) app: App,
}

/// Logical channels 0–3 (ISO 7816-4 5.4.1 first interindustry CLA); channel 0 is always open.
pub const CHANNELS: usize = 4;

/// Bytes of the persistent deactivation bitmap.
pub const DEACTIVATED_LEN: usize = fs::FILE_COUNT.div_ceil(8);

/// The application the channel's file-system cursor is in: it decides what 7FFF means, which
/// AUTHENTICATE contexts exist and what STATUS reports. (Which application gets the channel's
/// commands is the dispatcher's `AppId`; the card manager's ISD and ARA-M show here too, since
/// the file system beneath them answers with this cursor.)
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum App {
    None,
    Usim,
    Isim,
    /// The GlobalPlatform issuer security domain.
    Isd,
    /// The GSMA access rule application master.
    AraM,
}

impl Card {
    /// A card with empty (all-FF) files; fill them with [`Card::personalize`].
    pub fn new(config: &Config) -> Self {
        let atr_len = config.atr_len.min(ATR_MAX);
        let mut card = Card {
            state: CardState {
                arena: Arena::new(config.card_type),
                sub: Subscriber::new(config.keys.clone(), config.sqn),
                card_type: config.card_type,
                pin1: Pin::new(config.pin1, config.puk1, config.pin1_enabled),
                pin2: Pin::new(config.pin2, config.puk2, true),
                adm1: Secret::new(config.adm1, config.adm1_tries),
                adm1_verified: false,
                dirty: false,
                deactivated: [0; DEACTIVATED_LEN],
                current_df: idx::MF,
                current_ef: None,
                record: 0,
                app: App::None,
            },
            token: Token::new(&config.token_seed),
            dispatcher: Dispatcher::new(),
            atr: config.atr,
            atr_len,
        };
        let arena = &mut card.state.arena;
        fs::factory(config.card_type, |file, offset, bytes| {
            if let Some(dst) = arena
                .content_mut(file)
                .get_mut(offset..offset + bytes.len())
            {
                dst.copy_from_slice(bytes);
            }
        });
        card.reset();
        card
    }

    /// Which programmable card this is.
    pub fn card_type(&self) -> CardType {
        self.state.card_type
    }

    /// The answer to reset.
    pub fn atr(&self) -> &[u8] {
        &self.atr[..self.atr_len]
    }

    /// A warm or cold reset: selection, pending response and every verification are lost.
    pub fn reset(&mut self) {
        self.state.enter(Cursor::MF);
        self.dispatcher.reset();
        self.token.reset();
        self.state.pin1.verified = false;
        self.state.pin2.verified = false;
        self.state.adm1_verified = false;
    }

    /// Writes an EF's content directly, bypassing access conditions: the factory's
    /// personalisation step. `offset` is in bytes from the start of the file (for linear
    /// fixed files, record r starts at (r-1)·len).
    pub fn personalize(&mut self, file: u8, offset: usize, data: &[u8]) -> Result<(), Status> {
        let def = fs::def(file).ok_or(Status::FileNotFound)?;
        if def.kind.is_dedicated() {
            return Err(Status::IncompatibleFileStructure);
        }
        let dst = self
            .state
            .arena
            .content_mut(file)
            .get_mut(offset..offset + data.len())
            .ok_or(Status::WrongLength)?;
        dst.copy_from_slice(data);
        Ok(())
    }

    /// An EF's content as the card holds it, ignoring access conditions. Keys are not files, so
    /// this cannot reveal them; it exists for the host's `--check` and for persistence tests.
    pub fn file_content(&self, file: u8) -> &[u8] {
        self.state.arena.content(file)
    }

    /// Whether persistent state (files, counters, SQN) changed since the last call: the host
    /// saves state when this is true, before it sends the response.
    pub fn take_dirty(&mut self) -> bool {
        core::mem::take(&mut self.state.dirty)
            | core::mem::take(&mut self.state.sub.dirty)
            | self.token.take_dirty()
    }

    /// Remaining tries of PIN1, PUK1, PIN2, PUK2 and ADM1, as `simlab card info` shows them.
    pub fn tries(&self) -> [u8; 5] {
        [
            self.state.pin1.pin.tries_left(),
            self.state.pin1.puk.tries_left(),
            self.state.pin2.pin.tries_left(),
            self.state.pin2.puk.tries_left(),
            self.state.adm1.tries_left(),
        ]
    }

    /// Writes the persistent state (card type, keys, codes and counters, SQN window, files,
    /// deactivated files, token) into `out`, which must hold [`state::STATE_LEN`] bytes;
    /// returns the length written, 0 if too small.
    pub fn save_state(&self, out: &mut [u8]) -> usize {
        let Some(out) = out.get_mut(..state::STATE_LEN) else {
            return 0;
        };
        let mut p = state::Put { buf: out, at: 0 };
        p.bytes(&state::MAGIC);
        p.byte(state::VERSION);
        p.byte(self.state.card_type.index() as u8);
        self.save_secrets(&mut p);
        p.bytes(self.state.arena.as_bytes());
        p.bytes(&self.state.deactivated);
        let at = p.at;
        p.at += self.token.save_state(&mut p.buf[at..at + token::STATE_LEN]);
        let crc = state::crc32(&p.buf[..p.at]);
        p.bytes(&crc.to_be_bytes());
        p.at
    }

    /// Keys, codes and counters, SQN window: the part every format version shares.
    fn save_secrets(&self, p: &mut state::Put<'_>) {
        p.byte(
            Algorithm::ALL
                .iter()
                .position(|&a| a == self.state.sub.keys.algorithm)
                .unwrap_or(0) as u8,
        );
        p.bytes(&self.state.sub.keys.ki);
        p.byte(self.state.sub.keys.opc.is_some() as u8);
        p.bytes(&self.state.sub.keys.opc.unwrap_or([0; 16]));
        for pin in [&self.state.pin1, &self.state.pin2] {
            p.bytes(pin.pin.value());
            p.byte(pin.pin.tries_left());
            p.bytes(pin.puk.value());
            p.byte(pin.puk.tries_left());
            p.byte(pin.enabled as u8);
        }
        p.bytes(self.state.adm1.value());
        p.byte(self.state.adm1.tries_left());
        p.bytes(&self.state.sub.sqn.highest.to_be_bytes());
        for seq in self.state.sub.sqn.seq {
            p.bytes(&seq.to_be_bytes()[2..]);
        }
    }

    fn restore_secrets(next: &mut Card, g: &mut state::Get<'_>) -> Result<(), state::StateError> {
        let algorithm = *Algorithm::ALL
            .get(g.byte() as usize)
            .ok_or(state::StateError::BadValue("algorithm"))?;
        let ki = g.array::<16>();
        let has_opc = g.byte() != 0;
        let opc = g.array::<16>();
        next.state.sub.keys = Keys {
            algorithm,
            ki,
            opc: has_opc.then_some(opc),
        };
        for pin in [&mut next.state.pin1, &mut next.state.pin2] {
            pin.pin.restore_value(g.array());
            pin.pin.restore_tries(g.byte());
            pin.puk.restore_value(g.array());
            pin.puk.restore_tries(g.byte());
            pin.enabled = g.byte() != 0;
        }
        next.state.adm1.restore_value(g.array());
        next.state.adm1.restore_tries(g.byte());
        next.state.sub.sqn.highest = u64::from_be_bytes(g.array());
        for seq in next.state.sub.sqn.seq.iter_mut() {
            let b: [u8; 6] = g.array();
            *seq = u64::from_be_bytes([0, 0, b[0], b[1], b[2], b[3], b[4], b[5]]);
        }
        Ok(())
    }

    /// Restores state written by [`Card::save_state`] of this or an older format version
    /// (older ones are migrated: see [`state`]). Checks everything before changing anything:
    /// on error the card is untouched. Volatile state is reset, as after power-on.
    pub fn restore_state(&mut self, bytes: &[u8]) -> Result<(), state::StateError> {
        self.restore(bytes, false)
    }

    /// As [`Card::restore_state`], but a state of another card type turns this card into that
    /// type (its files, key files and ADM rules; the ATR stays): for a generic card such as
    /// the firmware's, which is whatever card its personalisation image describes.
    pub fn restore_state_adopting_type(&mut self, bytes: &[u8]) -> Result<(), state::StateError> {
        self.restore(bytes, true)
    }

    fn restore(&mut self, bytes: &[u8], adopt_type: bool) -> Result<(), state::StateError> {
        use state::StateError;
        if bytes.len() < 5 {
            return Err(StateError::BadLength {
                expected: state::STATE_LEN,
                actual: bytes.len(),
            });
        }
        if bytes[..4] != state::MAGIC {
            return Err(StateError::BadMagic);
        }
        let version = bytes[4];
        let expected = match version {
            state::VERSION => state::STATE_LEN,
            2 => state::V2_STATE_LEN,
            v => return Err(StateError::UnsupportedVersion(v)),
        };
        if bytes.len() != expected {
            return Err(StateError::BadLength {
                expected,
                actual: bytes.len(),
            });
        }
        let (body, crc) = bytes.split_at(expected - 4);
        if state::crc32(body).to_be_bytes() != crc {
            return Err(StateError::BadChecksum);
        }
        let mut next = self.clone();
        let mut g = state::Get { buf: body, at: 5 };
        if version == state::VERSION {
            let saved = g.byte();
            let saved_type = CardType::from_index(saved);
            match saved_type {
                Some(t) if t == self.state.card_type => {}
                Some(t) if adopt_type => {
                    next.state.card_type = t;
                    next.state.arena = Arena::new(t);
                }
                _ => {
                    return Err(StateError::WrongCardType {
                        saved: saved_type.map_or("unknown", CardType::name),
                        card: self.state.card_type.name(),
                    });
                }
            }
            Self::restore_secrets(&mut next, &mut g)?;
            next.state
                .arena
                .as_bytes_mut()
                .copy_from_slice(&g.array::<{ crate::fs::ARENA_SIZE }>());
            next.state.deactivated = g.array::<DEACTIVATED_LEN>();
        } else {
            // Version 2: no card type (the profile's is taken), one arena layout for every
            // type, no deactivation bitmap. Its files move to where this layout keeps them.
            Self::restore_secrets(&mut next, &mut g)?;
            let old = g.array::<{ state::V2_ARENA_SIZE }>();
            state::migrate_v2_arena(&old, &mut next.state.arena, self.state.card_type);
            next.state.deactivated = [0; DEACTIVATED_LEN];
        }
        next.token
            .restore_state(&g.array::<{ token::STATE_LEN }>())?;
        next.reset();
        next.state.dirty = false;
        *self = next;
        Ok(())
    }

    /// The SQN window, for inspection.
    pub fn sqn(&self) -> &SqnWindow {
        &self.state.sub.sqn
    }

    /// Processes one command APDU and writes the response (data, then SW1 SW2) into `rapdu`,
    /// returning its length. Never panics; a `rapdu` shorter than [`RESPONSE_MAX`] truncates
    /// response data but always keeps the status word (if it has room for two bytes).
    pub fn process(&mut self, capdu: &[u8], rapdu: &mut [u8]) -> usize {
        let mut scratch = [0u8; 256];
        let (out, status) = match Command::parse(capdu) {
            Err(_) => (Out::Done, Status::WrongLength),
            Ok(cmd) => {
                let mut apps: Apps<'_> = [&mut FileSystem, &mut self.token, &mut CardManager];
                self.dispatcher
                    .route(&mut self.state, &mut apps, &cmd, &mut scratch)
            }
        };
        let data: &[u8] = match out {
            Out::Data(n) => &scratch[..n],
            Out::Done | Out::Pending(_) | Out::Partial(_) => &[],
        };
        let room = rapdu.len().saturating_sub(2);
        let n = data.len().min(room);
        if rapdu.len() < 2 {
            return 0;
        }
        rapdu[..n].copy_from_slice(&data[..n]);
        rapdu[n..n + 2].copy_from_slice(&status.to_bytes());
        n + 2
    }

    /// The exact bytes the token applet would decode — and sign, if they are a valid
    /// simlab-sign-request-v1 — were `capdu` processed now as the last command of a SIGN
    /// REQUEST (`docs/token-apdus.md`): the data collected by the chain in progress followed
    /// by `capdu`'s, copied into `buf`. `None` when `capdu` would not reach that step: it is
    /// not routed to the token (the token not selected on its channel, a closed channel, a
    /// class the card refuses), not a SIGN REQUEST, not the last of a chain, or the token
    /// would refuse it first (PIN not verified, no key, no data, longer than
    /// [`token::request::MAX_LEN`]).
    ///
    /// Looks ahead without changing anything, so a device that must show what is signed
    /// before the card sees the command (the firmware's user-presence gate) shows the bytes the
    /// card's own chain collected — not a second copy of its own that could drift from it.
    pub fn pending_sign_request<'b>(
        &self,
        capdu: &[u8],
        buf: &'b mut [u8; token::request::MAX_LEN],
    ) -> Option<&'b [u8]> {
        let mut cmd = Command::parse(capdu).ok()?;
        match self.dispatcher.ordinary_target(&self.state, &cmd)? {
            (AppId::Token, cla) => {
                cmd.cla = cla;
                self.token.pending_sign_request(&cmd, buf)
            }
            _ => None,
        }
    }

    /// What logical channel `channel` has selected, if it is open: (current DF, current EF,
    /// application AID) as file indices and AID, for inspection and tests.
    pub fn channel_view(&self, channel: usize) -> Option<(u8, Option<u8>, &'static [u8])> {
        let (app, c) = self.dispatcher.view(channel)?;
        let aid: &'static [u8] = match c.app {
            App::None => &[],
            App::Usim => &fs::USIM_AID,
            App::Isim => &fs::ISIM_AID,
            App::Isd => &ISD_AID,
            App::AraM => &ARAM_AID,
        };
        let aid: &'static [u8] = if app == AppId::Token {
            &token::AID
        } else {
            aid
        };
        Some((c.df, c.ef, aid))
    }

    /// Which logical channels are open (bit n = channel n), for inspection and tests.
    pub fn open_channels(&self) -> u8 {
        self.dispatcher.open_channels()
    }

    /// The FCP template of a file, as SELECT answers it.
    #[cfg(test)]
    fn fcp(&self, file: u8, out: &mut [u8; 256]) -> usize {
        self.state.fcp(file, out)
    }
}

/// The file system as an [`Application`]: the MF, DF.GSM, ADF.USIM and ADF.ISIM with their
/// commands. It is the default application (every SELECT no other one claims, and every GSM
/// command), and its state is the card's arena and the channel's cursor.
pub(crate) struct FileSystem;

impl Application for FileSystem {
    fn select(&mut self, ctx: &mut Ctx<'_>, cmd: &Command, out: &mut [u8; 256]) -> Handled {
        ctx.card.select(ctx.dialect, cmd, out)
    }

    fn call(&mut self, ctx: &mut Ctx<'_>, cmd: &Command, scratch: &mut [u8; 256]) -> Handled {
        let dialect = ctx.dialect;
        let card = &mut *ctx.card;
        let proprietary = cmd.cla & 0x80 != 0;
        match (dialect, cmd.ins) {
            // GlobalPlatform's GET STATUS P1s: the card manager's where it is selected, and
            // not a STATUS P1 here.
            (Dialect::Uicc, 0xF2) if !matches!(cmd.p1, 0x00..=0x02) => Err(Fail::BadP1P2),
            (_, 0xF2) => card.status(dialect, cmd, scratch),
            (_, 0xB0) => card.read_binary(dialect, cmd, scratch),
            (_, 0xD6) => card.update_binary(cmd),
            (_, 0xB2) => card.read_record(cmd, scratch),
            (_, 0xDC) => card.update_record(cmd),
            (Dialect::Uicc, 0xA2) if !proprietary => card.search_record(cmd, scratch),
            (Dialect::Gsm, 0x32) => card.increase(cmd, scratch),
            (Dialect::Uicc, 0x32) if proprietary => card.increase(cmd, scratch),
            (_, 0x04) => card.set_active(dialect, cmd, false),
            (_, 0x44) => card.set_active(dialect, cmd, true),
            (_, 0x20) => card.verify(dialect, cmd),
            (_, 0x24) => card.change(dialect, cmd),
            (_, 0x26) => card.set_enabled(dialect, cmd, false),
            (_, 0x28) => card.set_enabled(dialect, cmd, true),
            (_, 0x2C) => card.unblock(dialect, cmd),
            (Dialect::Gsm, 0x88) => card.run_gsm_algorithm(cmd, scratch),
            (Dialect::Uicc, 0x88) => card.authenticate(cmd, scratch),
            // TERMINAL CAPABILITY (TS 102 221 11.1.19): the terminal's power and feature
            // report, class 80 only; nothing on this card depends on it.
            (Dialect::Uicc, 0xAA) if !proprietary => Err(Fail::Raw(Status::ClaNotSupported)),
            (Dialect::Uicc, 0xAA) if (cmd.p1, cmd.p2) != (0, 0) => Err(Fail::BadP1P2),
            (Dialect::Uicc, 0xAA) => Ok(Out::Done),
            // SLEEP (51.011) and TERMINAL PROFILE: nothing to do, but a terminal expects 9000.
            (Dialect::Gsm, 0xFA) | (_, 0x10) => Ok(Out::Done),
            _ => Err(Fail::Raw(Status::InsNotSupported)),
        }
    }
}

impl CardState {
    /// Puts a channel's cursor in place for one command.
    pub(crate) fn enter(&mut self, c: Cursor) {
        self.current_df = c.df;
        self.current_ef = c.ef;
        self.record = c.record;
        self.app = c.app;
    }

    /// Where the command left the cursor, to keep for the channel.
    pub(crate) fn cursor(&self) -> Cursor {
        Cursor {
            df: self.current_df,
            ef: self.current_ef,
            record: self.record,
            app: self.app,
        }
    }

    /// A card type's vendor command that comes before any class decoding (the GR1's CLA 80
    /// on a GSM-only card): its status word, or `None` for every other command.
    pub(crate) fn vendor_command(&mut self, cmd: &Command) -> Option<Status> {
        if self.is_vendor_command(cmd) {
            return Some(match self.gr1_write_ki(cmd) {
                Ok(()) => Status::Success,
                Err(f) => f.status(Dialect::Gsm),
            });
        }
        None
    }

    /// Whether [`CardState::vendor_command`] takes `cmd`.
    pub(crate) fn is_vendor_command(&self, cmd: &Command) -> bool {
        self.card_type == CardType::SysmoSimGr1 && (cmd.cla, cmd.ins) == (0x80, 0xD4)
    }

    /// The ADF of the application selected on this channel, which 7FFF stands for.
    fn current_adf(&self) -> Option<u8> {
        match self.app {
            App::None | App::Isd | App::AraM => None,
            App::Usim => Some(idx::ADF_USIM),
            App::Isim => Some(idx::ADF_ISIM),
        }
    }

    /// Files reachable by FID from the current DF (TS 51.011 6.5, TS 102 221 8.4.1): the MF,
    /// the current DF, its children, its parent, and the parent's and the MF's child DFs.
    fn find_by_fid(&self, dialect: Dialect, fid: u16) -> Option<u8> {
        if fid == 0x3F00 {
            return Some(idx::MF);
        }
        if fid == 0x7FFF && dialect == Dialect::Uicc {
            return self.current_adf();
        }
        let visible = |i: u8| {
            fs::present(self.card_type, i)
                && (dialect == Dialect::Uicc || fs::def(i).map(|d| d.kind) != Some(Kind::Adf))
        };
        let cur = self.current_df;
        let parent = fs::def(cur)?.parent;
        let dedicated = |i: u8| fs::def(i).is_some_and(|d| d.kind.is_dedicated());
        let candidates = [
            (fs::def(cur)?.fid == fid).then_some(cur),
            fs::child(cur, fid),
            (fs::def(parent)?.fid == fid).then_some(parent),
            fs::child(parent, fid).filter(|&i| dedicated(i)),
            fs::child(idx::MF, fid).filter(|&i| dedicated(i)),
        ];
        candidates.into_iter().flatten().find(|&i| visible(i))
    }

    fn select(&mut self, dialect: Dialect, cmd: &Command, scratch: &mut [u8; 256]) -> Handled {
        let target = match dialect {
            Dialect::Gsm => {
                if (cmd.p1, cmd.p2) != (0, 0) {
                    return Err(Fail::BadP1P2);
                }
                let fid = fid_of(cmd.data).ok_or(Fail::WrongLc)?;
                self.find_by_fid(dialect, fid).ok_or(Fail::NotFound)?
            }
            Dialect::Uicc => self.uicc_target(cmd)?,
        };
        if !fs::present(self.card_type, target) {
            return Err(Fail::NotFound);
        }
        let def = fs::def(target).ok_or(Fail::NotFound)?;
        if def.kind.is_dedicated() {
            self.current_df = target;
            self.current_ef = None;
            if def.kind == Kind::Adf {
                self.app = if target == idx::ADF_ISIM {
                    App::Isim
                } else {
                    App::Usim
                };
            }
        } else {
            self.current_df = def.parent;
            self.current_ef = Some(target);
            self.record = 0;
        }
        match dialect {
            Dialect::Gsm => Ok(Out::Pending(self.gsm_file_info(target, scratch))),
            Dialect::Uicc => match cmd.p2 & 0x0C {
                0x0C => Ok(Out::Done),
                _ => Ok(Out::Pending(self.fcp(target, scratch))),
            },
        }
    }

    fn uicc_target(&self, cmd: &Command) -> Result<u8, Fail> {
        if !matches!(cmd.p2 & 0xF0, 0x00) || !matches!(cmd.p2 & 0x0C, 0x00 | 0x04 | 0x0C) {
            return Err(Fail::BadP1P2);
        }
        match cmd.p1 {
            0x00 if cmd.data.is_empty() => Ok(idx::MF),
            0x00 => {
                let fid = fid_of(cmd.data).ok_or(Fail::WrongLc)?;
                self.find_by_fid(Dialect::Uicc, fid).ok_or(Fail::NotFound)
            }
            0x01 | 0x02 => {
                let fid = fid_of(cmd.data).ok_or(Fail::WrongLc)?;
                let want_df = cmd.p1 == 0x01;
                fs::child(self.current_df, fid)
                    .filter(|&i| fs::def(i).is_some_and(|d| d.kind.is_dedicated() == want_df))
                    .ok_or(Fail::NotFound)
            }
            0x03 if cmd.data.is_empty() => {
                Ok(fs::def(self.current_df).map_or(idx::MF, |d| d.parent))
            }
            0x04 => {
                let aid = cmd.data;
                if aid.is_empty() || aid.len() > 16 {
                    return Err(Fail::WrongLc);
                }
                if fs::USIM_AID.starts_with(aid) {
                    Ok(idx::ADF_USIM)
                } else if fs::ISIM_AID.starts_with(aid) && self.card_type.has_isim() {
                    Ok(idx::ADF_ISIM)
                } else {
                    Err(Fail::NotFound)
                }
            }
            0x08 | 0x09 => {
                if cmd.data.is_empty() || !cmd.data.len().is_multiple_of(2) {
                    return Err(Fail::WrongLc);
                }
                let mut at = if cmd.p1 == 0x08 {
                    idx::MF
                } else {
                    self.current_df
                };
                for pair in cmd.data.chunks_exact(2) {
                    let fid = u16::from_be_bytes([pair[0], pair[1]]);
                    if !fs::def(at).is_some_and(|d| d.kind.is_dedicated()) {
                        return Err(Fail::NotFound);
                    }
                    at = match fid {
                        0x7FFF => self.current_adf().ok_or(Fail::NotFound)?,
                        _ => fs::child(at, fid).ok_or(Fail::NotFound)?,
                    };
                }
                Ok(at)
            }
            _ => Err(Fail::BadP1P2),
        }
    }

    /// The TS 51.011 9.2.1 response to SELECT / STATUS.
    fn gsm_file_info(&self, file: u8, out: &mut [u8; 256]) -> usize {
        let Some(def) = fs::def(file) else { return 0 };
        let fid = def.fid.to_be_bytes();
        if def.kind.is_dedicated() {
            let children = |dedicated: bool| {
                fs::FILES
                    .iter()
                    .skip(1)
                    .enumerate()
                    .filter(|(i, f)| {
                        f.parent == file
                            && f.kind != Kind::Adf
                            && fs::present(self.card_type, *i as u8 + 1)
                    })
                    .filter(|(_, f)| f.kind.is_dedicated() == dedicated)
                    .count() as u8
            };
            let chv = |s: &Secret| 0x80 | (s.tries_left() & 0x0F);
            // File characteristics: b8 set = CHV1 disabled; b1/b3 = clock stop allowed.
            let characteristics = 0x13 | if self.pin1.enabled { 0 } else { 0x80 };
            let info = [
                0x00,
                0x00,
                0x00,
                0x00,
                fid[0],
                fid[1],
                if def.kind == Kind::Mf { 0x01 } else { 0x02 },
                0x00,
                0x00,
                0x00,
                0x00,
                0x00,
                10,
                characteristics,
                children(true),
                children(false),
                4, // CHV1, CHV2 and their UNBLOCK codes
                0x00,
                chv(&self.pin1.pin),
                chv(&self.pin1.puk),
                chv(&self.pin2.pin),
                chv(&self.pin2.puk),
                0x00,
            ];
            out[..info.len()].copy_from_slice(&info);
            info.len()
        } else {
            let kind = fs::kind(self.card_type, file).unwrap_or(def.kind);
            let size = (kind.size() as u16).to_be_bytes();
            let (structure, rec_len) = match kind {
                Kind::LinearFixed { len, .. } => (0x01, len),
                Kind::Cyclic { len, .. } => (0x03, len),
                _ => (0x00, 0x00),
            };
            let nibble = |a: Access| match a {
                Access::Always => 0x0,
                Access::Pin1 => 0x1,
                Access::Adm1 => 0xA,
                Access::Never => 0xF,
            };
            let info = [
                0x00,
                0x00,
                size[0],
                size[1],
                fid[0],
                fid[1],
                0x04,
                0x00,
                (nibble(def.read) << 4) | nibble(def.update),
                0xFF,
                0xAA,
                // File status: b1 = not invalidated.
                if self.is_deactivated(file) {
                    0x00
                } else {
                    0x01
                },
                0x02,
                structure,
                rec_len,
            ];
            out[..info.len()].copy_from_slice(&info);
            info.len()
        }
    }

    /// The TS 102 221 11.1.1.3 FCP template.
    fn fcp(&self, file: u8, out: &mut [u8; 256]) -> usize {
        let Some(def) = fs::def(file) else { return 0 };
        let kind = fs::kind(self.card_type, file).unwrap_or(def.kind);
        let mut w = Writer::new(out);
        let outer = w.open(0x62);
        match kind {
            Kind::Mf | Kind::Df | Kind::Adf => w.tlv(0x82, &[0x78, 0x21]),
            Kind::Transparent { .. } => w.tlv(0x82, &[0x41, 0x21]),
            Kind::LinearFixed { len, records } => w.tlv(0x82, &[0x42, 0x21, 0x00, len, records]),
            Kind::Cyclic { len, records } => w.tlv(0x82, &[0x46, 0x21, 0x00, len, records]),
        }
        w.tlv(0x83, &def.fid.to_be_bytes());
        match file {
            idx::ADF_USIM => w.tlv(0x84, &fs::USIM_AID),
            idx::ADF_ISIM => w.tlv(0x84, &fs::ISIM_AID),
            _ => {}
        }
        // Life-cycle status (TS 102 221 11.1.1.4.9): 05 operational and activated, 04
        // operational and deactivated.
        w.tlv(
            0x8A,
            &[if self.is_deactivated(file) {
                0x04
            } else {
                0x05
            }],
        );
        let in_adf = |i: u8| matches!(i, idx::ADF_USIM | idx::ADF_ISIM);
        let arr_fid: u16 = if in_adf(def.parent) || in_adf(file) {
            0x6F06
        } else {
            0x2F06
        };
        let [hi, lo] = arr_fid.to_be_bytes();
        w.tlv(0x8B, &[hi, lo, arr_record(def.read, def.update)]);
        if def.kind.is_dedicated() {
            // PIN status template: PIN1 (01) and ADM1 (0A); b8/b7 of the PS_DO = enabled.
            let ps_do = if self.pin1.enabled { 0xC0 } else { 0x40 };
            w.tlv(
                0xC6,
                &[0x90, 0x01, ps_do, 0x83, 0x01, 0x01, 0x83, 0x01, 0x0A],
            );
        } else {
            w.tlv(0x80, &(kind.size() as u16).to_be_bytes());
            w.tlv(0x88, &[]);
        }
        w.close(outer);
        w.len()
    }

    fn status(&self, dialect: Dialect, cmd: &Command, scratch: &mut [u8; 256]) -> Handled {
        let n = match dialect {
            Dialect::Gsm => self.gsm_file_info(self.current_df, scratch),
            Dialect::Uicc => match cmd.p2 {
                0x00 => self.fcp(self.current_df, scratch),
                0x01 if self.app != App::None => {
                    let aid = match self.app {
                        App::Isim => &fs::ISIM_AID,
                        _ => &fs::USIM_AID,
                    };
                    scratch[..aid.len()].copy_from_slice(aid);
                    aid.len()
                }
                0x01 => 0,
                0x0C => return Ok(Out::Done),
                _ => return Err(Fail::BadP1P2),
            },
        };
        match cmd.ne {
            None => Ok(Out::Done),
            Some(ne) if ne == n => Ok(Out::Data(n)),
            Some(ne) if ne < n && dialect == Dialect::Gsm => Ok(Out::Data(ne)),
            Some(_) => Err(Fail::WrongLe(n)),
        }
    }

    // ----- file access -----------------------------------------------------------------------

    fn allowed(&self, access: Access) -> bool {
        match access {
            Access::Always => true,
            // ADM is the issuer's key: programmable cards let it write what PIN1 protects too.
            Access::Pin1 => self.pin1.satisfied() || self.adm1_verified,
            Access::Adm1 => self.adm1_verified,
            Access::Never => false,
        }
    }

    fn current_ef(&self) -> Result<(u8, &'static fs::FileDef, Kind), Fail> {
        let ef = self.current_ef.ok_or(Fail::NoEf)?;
        let def = fs::def(ef).ok_or(Fail::NoEf)?;
        let kind = fs::kind(self.card_type, ef).ok_or(Fail::NoEf)?;
        Ok((ef, def, kind))
    }

    fn read_binary(&self, dialect: Dialect, cmd: &Command, scratch: &mut [u8; 256]) -> Handled {
        if cmd.p1 & 0x80 != 0 {
            // Short file identifiers are not assigned on this card.
            return Err(Fail::Raw(match dialect {
                Dialect::Gsm => Status::WrongP1P2,
                Dialect::Uicc => Status::FunctionNotSupported,
            }));
        }
        let (ef, def, kind) = self.current_ef()?;
        if !matches!(kind, Kind::Transparent { .. }) {
            return Err(Fail::Structure);
        }
        if !self.allowed(def.read) {
            return Err(Fail::Security);
        }
        self.check_active(ef)?;
        let offset = u16::from_be_bytes([cmd.p1, cmd.p2]) as usize;
        let mut image = [0u8; KEY_IMAGE_MAX];
        let content = if def.key_file {
            let n = self.key_image(ef, &mut image);
            &image[..n]
        } else {
            self.arena.content(ef)
        };
        let available = content
            .len()
            .checked_sub(offset)
            .filter(|&n| n > 0)
            .ok_or(Fail::OutOfRange)?;
        let ne = cmd.ne.unwrap_or(0);
        if ne == 0 || ne > available {
            return Err(Fail::WrongLe(available.min(256)));
        }
        let n = ne.min(256);
        scratch[..n].copy_from_slice(&content[offset..offset + n]);
        Ok(Out::Data(n))
    }

    fn update_binary(&mut self, cmd: &Command) -> Handled {
        if cmd.p1 & 0x80 != 0 {
            return Err(Fail::BadP1P2);
        }
        let (ef, def, kind) = self.current_ef()?;
        if !matches!(kind, Kind::Transparent { .. }) {
            return Err(Fail::Structure);
        }
        if !self.allowed(def.update) {
            return Err(Fail::Security);
        }
        self.check_active(ef)?;
        if cmd.data.is_empty() {
            return Err(Fail::WrongLc);
        }
        let offset = u16::from_be_bytes([cmd.p1, cmd.p2]) as usize;
        if ef == idx::EF_ICCID && self.card_type.iccid_fixed() {
            return Err(Fail::Security);
        }
        if def.key_file {
            return self.write_key_file(ef, offset, cmd.data);
        }
        let dst = self
            .arena
            .content_mut(ef)
            .get_mut(offset..offset + cmd.data.len())
            .ok_or(Fail::OutOfRange)?;
        dst.copy_from_slice(cmd.data);
        self.dirty = true;
        Ok(Out::Done)
    }

    /// A vendor key file's content, made from the keys it stands for: algorithm code ‖ Ki ‖
    /// OPc (SJA2-style), Ki, 01 ‖ OPc (SJS1), or PIN1 ‖ PUK1 (simlab's EF_CHV_CONFIG).
    fn key_image(&self, ef: u8, out: &mut [u8; KEY_IMAGE_MAX]) -> usize {
        let keys = &self.sub.keys;
        match ef {
            idx::EF_SJS1_KI => {
                out[..16].copy_from_slice(&keys.ki);
                16
            }
            idx::EF_SJS1_OPC => {
                out[0] = 0x01;
                out[1..17].copy_from_slice(&keys.opc.unwrap_or([0; 16]));
                17
            }
            idx::EF_SIMLAB_CHV => {
                out[..8].copy_from_slice(self.pin1.pin.value());
                out[8..16].copy_from_slice(self.pin1.puk.value());
                16
            }
            _ => {
                *out = encode_key_file(keys.algorithm, &keys.ki, keys.opc.as_ref());
                33
            }
        }
    }

    /// Writes to a vendor key file go to the keys, never to readable storage. A write to the
    /// SJA cards' files may cover part of the file, as they allow (Ki at offset 1, OPc at 17):
    /// the bytes are laid over the file's current content and the whole is checked before any
    /// key changes, so a write that would leave an invalid file changes nothing.
    fn write_key_file(&mut self, ef: u8, offset: usize, data: &[u8]) -> Handled {
        let mut image = [0u8; KEY_IMAGE_MAX];
        let size = self.key_image(ef, &mut image);
        let partial_ok = matches!(
            ef,
            idx::EF_SJA2_KEYS | idx::EF_SJA2_USIM_KEYS | idx::EF_SJA2_ISIM_KEYS
        );
        if !partial_ok && (offset != 0 || data.len() != size) {
            // The SJS1's key files and simlab's PIN file are written whole, as on the card.
            return Err(Fail::WrongLc);
        }
        let dst = image[..size]
            .get_mut(offset..offset + data.len())
            .ok_or(Fail::OutOfRange)?;
        dst.copy_from_slice(data);
        let data = &image[..size];
        let keys = &mut self.sub.keys;
        match ef {
            idx::EF_SJS1_KI => keys.ki.copy_from_slice(data),
            idx::EF_SJS1_OPC => {
                let [0x01, opc @ ..] = data else {
                    return Err(Fail::BadData);
                };
                let mut value = [0u8; 16];
                value.copy_from_slice(opc);
                keys.opc = Some(value);
            }
            idx::EF_SIMLAB_CHV => {
                let pin = crate::chv::parse_pin(&data[..8]).ok_or(Fail::BadData)?;
                let puk = crate::chv::parse_pin(&data[8..]).ok_or(Fail::BadData)?;
                self.pin1.pin.set(pin);
                self.pin1.puk.set(puk);
            }
            idx::EF_SJA2_KEYS | idx::EF_SJA2_USIM_KEYS | idx::EF_SJA2_ISIM_KEYS => {
                let algorithm = algorithm_from_code(data[0] & 0x0F).ok_or(Fail::BadData)?;
                keys.algorithm = algorithm;
                keys.ki.copy_from_slice(&data[1..17]);
                let mut opc = [0u8; 16];
                opc.copy_from_slice(&data[17..33]);
                keys.opc = (algorithm == Algorithm::Milenage).then_some(opc);
            }
            _ => return Err(Fail::Security),
        }
        self.dirty = true;
        Ok(Out::Done)
    }

    /// sysmoSIM-GR1's vendor command `80 D4 02 00 10 <Ki>`: ADM (CHV 5) first.
    fn gr1_write_ki(&mut self, cmd: &Command) -> Result<(), Fail> {
        if (cmd.p1, cmd.p2) != (0x02, 0x00) {
            return Err(Fail::BadP1P2);
        }
        if !self.adm1_verified {
            return Err(Fail::Security);
        }
        let ki: [u8; 16] = cmd.data.try_into().map_err(|_| Fail::WrongLc)?;
        self.sub.keys.ki = ki;
        self.dirty = true;
        Ok(())
    }

    /// The record a READ/UPDATE RECORD addresses (TS 102 221 11.1.5 modes 02/03/04), moving the
    /// record pointer.
    fn target_record(&mut self, cmd: &Command, records: u8) -> Result<u8, Fail> {
        let rec = match (cmd.p2, cmd.p1) {
            (0x04, 0) if self.record == 0 => return Err(Fail::RecordNotFound),
            (0x04, 0) => self.record,
            (0x04, n) => n,
            (0x02, 0) => self.record.saturating_add(1),
            (0x03, 0) if self.record == 0 => records,
            (0x03, 0) => self.record - 1,
            _ => return Err(Fail::BadP1P2),
        };
        if rec == 0 || rec > records {
            return Err(Fail::RecordNotFound);
        }
        self.record = rec;
        Ok(rec)
    }

    fn read_record(&mut self, cmd: &Command, scratch: &mut [u8; 256]) -> Handled {
        let (ef, def, kind) = self.current_ef()?;
        let Some((len, records)) = kind.records() else {
            return Err(Fail::Structure);
        };
        if !self.allowed(def.read) {
            return Err(Fail::Security);
        }
        self.check_active(ef)?;
        let len = len as usize;
        if cmd.ne != Some(len) {
            return Err(Fail::WrongLe(len));
        }
        let rec = self.target_record(cmd, records)? as usize;
        let start = (rec - 1) * len;
        let src = self
            .arena
            .content(ef)
            .get(start..start + len)
            .ok_or(Fail::RecordNotFound)?;
        scratch[..len].copy_from_slice(src);
        Ok(Out::Data(len))
    }

    fn update_record(&mut self, cmd: &Command) -> Handled {
        let (ef, def, kind) = self.current_ef()?;
        let Some((len, records)) = kind.records() else {
            return Err(Fail::Structure);
        };
        if !self.allowed(def.update) {
            return Err(Fail::Security);
        }
        self.check_active(ef)?;
        let len = len as usize;
        if cmd.data.len() != len {
            return Err(Fail::WrongLc);
        }
        if let Kind::Cyclic { .. } = kind {
            // A cyclic file is written only as PREVIOUS: the new record becomes record 1.
            if (cmd.p1, cmd.p2) != (0, 0x03) {
                return Err(Fail::BadP1P2);
            }
            self.push_cyclic(ef, len, cmd.data);
            self.record = 1;
            return Ok(Out::Done);
        }
        let rec = self.target_record(cmd, records)? as usize;
        let start = (rec - 1) * len;
        let dst = self
            .arena
            .content_mut(ef)
            .get_mut(start..start + len)
            .ok_or(Fail::RecordNotFound)?;
        dst.copy_from_slice(cmd.data);
        self.dirty = true;
        Ok(Out::Done)
    }

    /// Makes `data` record 1 of cyclic file `ef`, the oldest record falling off the end.
    fn push_cyclic(&mut self, ef: u8, len: usize, data: &[u8]) {
        let content = self.arena.content_mut(ef);
        if content.len() < len || data.len() != len {
            return;
        }
        let total = content.len();
        content.copy_within(0..total - len, len);
        content[..len].copy_from_slice(data);
        self.dirty = true;
    }

    /// INCREASE (TS 102 221 11.1.8, TS 51.011 9.2.10): adds the data to record 1 of a cyclic
    /// file (EF_ACM) and stores the sum as the new record 1; answers the sum and the addend.
    fn increase(&mut self, cmd: &Command, scratch: &mut [u8; 256]) -> Handled {
        if (cmd.p1, cmd.p2) != (0, 0) {
            return Err(Fail::BadP1P2);
        }
        let (ef, def, kind) = self.current_ef()?;
        let Kind::Cyclic { len, .. } = kind else {
            return Err(Fail::Structure);
        };
        if !self.allowed(def.update) {
            return Err(Fail::Security);
        }
        self.check_active(ef)?;
        let len = len as usize;
        if cmd.data.is_empty() || cmd.data.len() > len || len > 8 {
            return Err(Fail::WrongLc);
        }
        let be = |bytes: &[u8]| bytes.iter().fold(0u64, |acc, &b| (acc << 8) | b as u64);
        let current = be(self.arena.content(ef).get(..len).unwrap_or(&[]));
        let sum = current + be(cmd.data);
        if sum >> (8 * len) != 0 {
            return Err(Fail::Raw(Status::IncreaseMaxReached));
        }
        let mut record = [0u8; 8];
        record[..len].copy_from_slice(&sum.to_be_bytes()[8 - len..]);
        self.push_cyclic(ef, len, &record[..len]);
        self.record = 1;
        scratch[..len].copy_from_slice(&record[..len]);
        scratch[len..len + cmd.data.len()].copy_from_slice(cmd.data);
        Ok(Out::Pending(len + cmd.data.len()))
    }

    /// SEARCH RECORD (TS 102 221 11.1.7), simple search: the records, from P1 (or the first)
    /// forward (P2 04) or backward (05), whose content starts with the data; answers their
    /// numbers, or 6282 if none does.
    fn search_record(&mut self, cmd: &Command, scratch: &mut [u8; 256]) -> Handled {
        let (ef, def, kind) = self.current_ef()?;
        let Kind::LinearFixed { len, records } = kind else {
            return Err(Fail::Structure);
        };
        if !self.allowed(def.read) {
            return Err(Fail::Security);
        }
        self.check_active(ef)?;
        if cmd.data.is_empty() || cmd.data.len() > len as usize {
            return Err(Fail::WrongLc);
        }
        let first = if cmd.p1 == 0 { 1 } else { cmd.p1 };
        if first > records {
            return Err(Fail::RecordNotFound);
        }
        let forward = match cmd.p2 {
            0x04 => true,
            0x05 => false,
            _ => return Err(Fail::BadP1P2),
        };
        let content = self.arena.content(ef);
        let mut n = 0;
        let mut visit = |rec: u8| {
            let start = (rec as usize - 1) * len as usize;
            if content
                .get(start..start + cmd.data.len())
                .is_some_and(|r| r == cmd.data)
            {
                scratch[n] = rec;
                n += 1;
            }
        };
        if forward {
            (first..=records).for_each(&mut visit);
        } else {
            (1..=first).rev().for_each(&mut visit);
        }
        if n == 0 {
            return Err(Fail::Raw(Status::SearchUnsuccessful));
        }
        self.record = scratch[0];
        Ok(Out::Pending(n))
    }

    /// DEACTIVATE FILE / ACTIVATE FILE (TS 102 221 11.1.14/15; TS 51.011 INVALIDATE and
    /// REHABILITATE): the current EF, or the file the data names, switched off or on. The
    /// state persists and shows in the FCP's life-cycle byte; a deactivated file answers
    /// reads and writes with 6984 (9810 in the GSM dialect) until it is activated again.
    fn set_active(&mut self, dialect: Dialect, cmd: &Command, active: bool) -> Handled {
        let file = if cmd.data.is_empty() {
            if (cmd.p1, cmd.p2) != (0, 0) {
                return Err(Fail::BadP1P2);
            }
            self.current_ef.ok_or(Fail::NoEf)?
        } else if dialect == Dialect::Uicc {
            let target = self.uicc_target(cmd)?;
            if !fs::present(self.card_type, target) {
                return Err(Fail::NotFound);
            }
            target
        } else {
            return Err(Fail::WrongLc);
        };
        if !self.adm1_verified {
            return Err(Fail::Security);
        }
        let (byte, bit) = (file as usize / 8, 1u8 << (file % 8));
        let Some(b) = self.deactivated.get_mut(byte) else {
            return Err(Fail::NotFound);
        };
        if active {
            *b &= !bit;
        } else {
            *b |= bit;
        }
        self.dirty = true;
        Ok(Out::Done)
    }

    fn is_deactivated(&self, file: u8) -> bool {
        self.deactivated
            .get(file as usize / 8)
            .is_some_and(|b| b & (1 << (file % 8)) != 0)
    }

    fn check_active(&self, file: u8) -> Result<(), Fail> {
        if self.is_deactivated(file) {
            Err(Fail::Invalidated)
        } else {
            Ok(())
        }
    }

    // ----- secret codes ----------------------------------------------------------------------

    fn code_ref(&self, dialect: Dialect, ins: u8, p2: u8) -> Result<CodeRef, Fail> {
        let gsm_adm = self.card_type.adm_reference();
        match (dialect, ins, p2) {
            (Dialect::Gsm, 0x20, r) if r == gsm_adm => Ok(CodeRef::Adm1),
            (Dialect::Uicc, 0x20, 0x0A) => Ok(CodeRef::Adm1),
            (Dialect::Gsm, 0x2C, 0x00) | (Dialect::Gsm, _, 0x01) => Ok(CodeRef::Pin1),
            (Dialect::Gsm, _, 0x02) => Ok(CodeRef::Pin2),
            (Dialect::Uicc, _, 0x01) => Ok(CodeRef::Pin1),
            (Dialect::Uicc, _, 0x81) => Ok(CodeRef::Pin2),
            _ => Err(Fail::UnknownReference),
        }
    }

    fn pin_mut(&mut self, r: CodeRef) -> &mut Pin {
        match r {
            CodeRef::Pin2 => &mut self.pin2,
            _ => &mut self.pin1,
        }
    }

    fn verify(&mut self, dialect: Dialect, cmd: &Command) -> Handled {
        if cmd.p1 != 0 {
            return Err(Fail::BadP1P2);
        }
        let code = self.code_ref(dialect, cmd.ins, cmd.p2)?;
        if cmd.data.is_empty() && dialect == Dialect::Uicc {
            // TS 102 221 11.1.9: an empty VERIFY asks for the retry counter without spending a
            // try — what provisioning relies on before it dares an ADM attempt.
            let (secret, verified) = match code {
                CodeRef::Adm1 => (&self.adm1, self.adm1_verified),
                CodeRef::Pin1 => (&self.pin1.pin, self.pin1.verified),
                CodeRef::Pin2 => (&self.pin2.pin, self.pin2.verified),
            };
            return match (secret.tries_left(), verified) {
                (0, _) => Err(Fail::Blocked),
                (_, true) => Ok(Out::Done),
                (n, false) => Err(Fail::WrongCode(n)),
            };
        }
        if cmd.data.len() != PIN_LEN {
            return Err(Fail::WrongLc);
        }
        self.dirty = true;
        match code {
            CodeRef::Adm1 => {
                let result = self.adm1.check(cmd.data);
                self.adm1_verified = result.is_ok();
                result.map_err(Fail::from)?;
            }
            CodeRef::Pin1 if dialect == Dialect::Gsm && !self.pin1.enabled => {
                self.dirty = false;
                return Err(Fail::Contradiction);
            }
            pin => self.pin_mut(pin).verify(cmd.data)?,
        }
        Ok(Out::Done)
    }

    fn change(&mut self, dialect: Dialect, cmd: &Command) -> Handled {
        if cmd.p1 != 0 {
            return Err(Fail::BadP1P2);
        }
        let code = self.code_ref(dialect, cmd.ins, cmd.p2)?;
        if code == CodeRef::Adm1 {
            return Err(Fail::UnknownReference);
        }
        if cmd.data.len() != 2 * PIN_LEN {
            return Err(Fail::WrongLc);
        }
        let pin = self.pin_mut(code);
        if !pin.enabled {
            return Err(Fail::Contradiction);
        }
        let (old, new) = cmd.data.split_at(PIN_LEN);
        let result = pin.change(old, new);
        self.dirty = true;
        result?;
        Ok(Out::Done)
    }

    fn set_enabled(&mut self, dialect: Dialect, cmd: &Command, enable: bool) -> Handled {
        if cmd.p1 != 0 {
            return Err(Fail::BadP1P2);
        }
        // Only PIN1 may be switched off (TS 51.011 9.2.11, TS 102 221 11.1.11).
        if self.code_ref(dialect, cmd.ins, cmd.p2)? != CodeRef::Pin1 {
            return Err(Fail::UnknownReference);
        }
        if cmd.data.len() != PIN_LEN {
            return Err(Fail::WrongLc);
        }
        if self.pin1.enabled == enable {
            return Err(Fail::Contradiction);
        }
        self.dirty = true;
        self.pin1.verify(cmd.data)?;
        self.pin1.enabled = enable;
        Ok(Out::Done)
    }

    fn unblock(&mut self, dialect: Dialect, cmd: &Command) -> Handled {
        if cmd.p1 != 0 {
            return Err(Fail::BadP1P2);
        }
        let code = self.code_ref(dialect, cmd.ins, cmd.p2)?;
        if code == CodeRef::Adm1 {
            return Err(Fail::UnknownReference);
        }
        let pin = self.pin_mut(code);
        if cmd.data.is_empty() && dialect == Dialect::Uicc {
            return match pin.puk.tries_left() {
                0 => Err(Fail::Blocked),
                n => Err(Fail::WrongCode(n)),
            };
        }
        if cmd.data.len() != 2 * PIN_LEN {
            return Err(Fail::WrongLc);
        }
        let (puk, new) = cmd.data.split_at(PIN_LEN);
        let result = pin.unblock(puk, new);
        self.dirty = true;
        result?;
        Ok(Out::Done)
    }

    // ----- authentication --------------------------------------------------------------------

    fn run_gsm_algorithm(&mut self, cmd: &Command, scratch: &mut [u8; 256]) -> Handled {
        if (cmd.p1, cmd.p2) != (0, 0) {
            return Err(Fail::BadP1P2);
        }
        let rand: &[u8; 16] = cmd.data.try_into().map_err(|_| Fail::WrongLc)?;
        if self.current_df != idx::DF_GSM {
            return Err(Fail::Structure);
        }
        if !self.pin1.satisfied() {
            return Err(Fail::Security);
        }
        let (sres, kc) = self.gsm_auth(rand)?;
        scratch[..4].copy_from_slice(&sres);
        scratch[4..12].copy_from_slice(&kc);
        Ok(Out::Pending(12))
    }

    fn gsm_auth(&self, rand: &[u8; 16]) -> Result<([u8; 4], [u8; 8]), Fail> {
        self.sub
            .gsm(rand)
            .ok_or(Fail::Raw(Status::ConditionsNotSatisfied))
    }

    fn authenticate(&mut self, cmd: &Command, scratch: &mut [u8; 256]) -> Handled {
        if cmd.p1 != 0 {
            return Err(Fail::BadP1P2);
        }
        if self.app == App::None {
            return Err(Fail::Raw(Status::ConditionsNotSatisfied));
        }
        if self.app == App::Isim && cmd.p2 != 0x81 {
            // TS 31.103 7.1.2: the ISIM has the IMS AKA context (81, the same Milenage as
            // the USIM's 3G context) and the HTTP Digest / GBA ones, not the GSM context.
            return Err(Fail::BadP1P2);
        }
        if !self.pin1.satisfied() {
            return Err(Fail::Security);
        }
        match cmd.p2 {
            0x80 => {
                let [0x10, rand @ ..] = cmd.data else {
                    return Err(Fail::WrongLc);
                };
                let rand: &[u8; 16] = rand.try_into().map_err(|_| Fail::WrongLc)?;
                let (sres, kc) = self.gsm_auth(rand)?;
                let mut w = Writer::new(scratch);
                w.lv(&sres);
                w.lv(&kc);
                Ok(Out::Pending(w.len()))
            }
            0x81 => self.authenticate_3g(cmd.data, scratch),
            _ => Err(Fail::BadP1P2),
        }
    }

    /// TS 33.102 6.3.3 (and TS 33.203 for IMS AKA, the same Milenage): check MAC, then SQN
    /// freshness; answer RES/CK/IK(/Kc), or AUTS.
    fn authenticate_3g(&mut self, data: &[u8], scratch: &mut [u8; 256]) -> Handled {
        let [0x10, body @ ..] = data else {
            return Err(Fail::WrongLc);
        };
        let (rand, rest) = body.split_first_chunk::<16>().ok_or(Fail::WrongLc)?;
        let [0x10, autn @ ..] = rest else {
            return Err(Fail::WrongLc);
        };
        let autn: &[u8; 16] = autn.try_into().map_err(|_| Fail::WrongLc)?;
        let mut w = Writer::new(scratch);
        match self.sub.aka(rand, autn) {
            Ok(ok) => {
                w.byte(0xDB);
                w.lv(ok.res());
                w.lv(&ok.ck);
                w.lv(&ok.ik);
                // Kc only for the USIM with GSM access (TS 31.102 7.1.2.1); the ISIM's IMS
                // AKA answer is RES, CK, IK (TS 31.103 7.1.2.1).
                if self.app == App::Usim {
                    w.lv(&ok.kc);
                }
            }
            Err(AkaError::SyncFailure { auts }) => {
                w.byte(0xDC);
                w.lv(&auts);
            }
            Err(AkaError::MacFailure) => return Err(Fail::Raw(Status::AuthMacFailure)),
            Err(AkaError::ContextNotSupported) => {
                return Err(Fail::Raw(Status::AuthContextNotSupported));
            }
            Err(AkaError::MissingKey) => return Err(Fail::Raw(Status::ConditionsNotSatisfied)),
        }
        Ok(Out::Pending(w.len()))
    }
}

fn fid_of(data: &[u8]) -> Option<u16> {
    let pair: [u8; 2] = data.try_into().ok()?;
    Some(u16::from_be_bytes(pair))
}

/// The EF_ARR record (see [`ARR_RECORDS`]) that expresses a file's access conditions.
fn arr_record(read: Access, update: Access) -> u8 {
    match (read, update) {
        (Access::Always, Access::Adm1) => 1,
        (Access::Pin1, Access::Pin1) => 2,
        (Access::Pin1, Access::Adm1) => 3,
        (Access::Always, Access::Pin1) => 4,
        (Access::Never, _) => 5,
        _ => 6,
    }
}

/// EF_ARR's records in the expanded format of ISO 7816-4 9.3: an access-mode byte (80 01 xx:
/// 01 = READ, 02 = UPDATE) followed by its condition (90 00 always, 97 00 never, A4 = a CRT
/// naming key reference 01 for PIN1 or 0A for ADM1). The host personalises EF_ARR with these so
/// that the FCP's 8B references resolve on a real card reader tool too.
pub const ARR_RECORDS: [&[u8]; 6] = [
    &[
        0x80, 0x01, 0x01, 0x90, 0x00, 0x80, 0x01, 0x02, 0xA4, 0x06, 0x83, 0x01, 0x0A, 0x95, 0x01,
        0x08,
    ],
    &[
        0x80, 0x01, 0x03, 0xA4, 0x06, 0x83, 0x01, 0x01, 0x95, 0x01, 0x08,
    ],
    &[
        0x80, 0x01, 0x01, 0xA4, 0x06, 0x83, 0x01, 0x01, 0x95, 0x01, 0x08, 0x80, 0x01, 0x02, 0xA4,
        0x06, 0x83, 0x01, 0x0A, 0x95, 0x01, 0x08,
    ],
    &[
        0x80, 0x01, 0x01, 0x90, 0x00, 0x80, 0x01, 0x02, 0xA4, 0x06, 0x83, 0x01, 0x01, 0x95, 0x01,
        0x08,
    ],
    &[
        0x80, 0x01, 0x01, 0x97, 0x00, 0x80, 0x01, 0x02, 0xA4, 0x06, 0x83, 0x01, 0x0A, 0x95, 0x01,
        0x08,
    ],
    &[0x80, 0x01, 0x03, 0x90, 0x00],
];

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::{STATE_LEN, StateError};

    fn card() -> Card {
        let mut config = Config::new(Keys {
            algorithm: Algorithm::Milenage,
            ki: [1; 16],
            opc: Some([2; 16]),
        });
        config.pin1_enabled = true;
        Card::new(&config)
    }

    fn run(card: &mut Card, apdu: &[u8]) -> Status {
        let mut resp = [0u8; RESPONSE_MAX];
        let n = card.process(apdu, &mut resp);
        Status::from_u16(u16::from_be_bytes([resp[n - 2], resp[n - 1]]))
    }

    #[test]
    fn state_survives_save_and_restore_and_a_torn_copy_is_refused() {
        let mut a = card();
        assert_eq!(
            run(&mut a, &[0x00, 0x20, 0x00, 0x01]),
            Status::VerifyFailed { tries_left: 3 }
        );
        let wrong = [
            0x00, 0x20, 0x00, 0x01, 0x08, b'9', b'9', b'9', b'9', 0xFF, 0xFF, 0xFF, 0xFF,
        ];
        assert_eq!(run(&mut a, &wrong), Status::VerifyFailed { tries_left: 2 });
        assert!(a.take_dirty());
        a.personalize(idx::EF_SPN, 0, b"\x01saved").unwrap();
        let mut saved = [0u8; STATE_LEN];
        assert_eq!(a.save_state(&mut saved), STATE_LEN);

        let mut b = card();
        b.restore_state(&saved).unwrap();
        assert_eq!(b.tries()[0], 2);
        assert_eq!(&b.file_content(idx::EF_SPN)[..6], b"\x01saved");

        let mut torn = saved;
        torn[STATE_LEN / 2] ^= 0x40;
        let mut c = card();
        assert_eq!(c.restore_state(&torn), Err(StateError::BadChecksum));
        assert_eq!(c.tries()[0], 3, "a refused state changes nothing");
        assert!(matches!(
            c.restore_state(&saved[..10]),
            Err(StateError::BadLength { .. })
        ));
        assert_eq!(c.save_state(&mut [0u8; 10]), 0);
    }

    #[test]
    fn fcp_templates_fit_and_are_well_formed() {
        let c = card();
        for i in 0..fs::FILE_COUNT as u8 {
            let mut buf = [0u8; 256];
            let n = c.fcp(i, &mut buf);
            assert_eq!(buf[0], 0x62);
            assert_eq!(buf[1] as usize, n - 2, "{}", fs::def(i).unwrap().name);
        }
    }
}
