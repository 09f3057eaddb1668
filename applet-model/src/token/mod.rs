//! The secure-token applet: a P-256 signing key that never leaves the card, a PIN with a retry
//! counter, and the card side of the seed-000 certificate bootstrap, so that Kc (or CK/IK)
//! never leaves the card either.
//!
//! The card's dispatcher routes commands here while the token's AID is selected on a channel
//! (see `dispatch.rs`, which strips the channel from CLA); a `process` call gets the parsed
//! command, the card's own subscriber (A3/A8 and AKA with the card's Ki) and a 256-byte
//! response buffer. `Ok(0)` becomes 9000, `Ok(n)` n bytes for GET
//! RESPONSE (61xx), `Err(status)` that status word. The APDUs are documented in
//! `docs/token-apdus.md`, the bootstrap protocol in `docs/bootstrap-protocol.md`.
//!
//! Rules this module keeps:
//! - no allocator, no panics on any input (the lints below forbid the usual sources, and a
//!   property test feeds `process` arbitrary commands);
//! - the PIN counter is decremented (and the state marked dirty) before the constant-time
//!   comparison, exactly as the card's own CHV ([`crate::chv::Secret`]);
//! - the private key, the PIN, K and Kc are never written to a response;
//! - K lives in RAM only, for one bootstrap session, and is wiped on reset and after use.
#![cfg_attr(
    not(test),
    deny(
        clippy::indexing_slicing,
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic,
        clippy::unreachable,
        clippy::todo
    )
)]

pub mod bootstrap;
pub mod drbg;
pub mod request;
#[cfg(test)]
mod tests;

use crate::apdu::Command;
use crate::auth::{AkaError, Subscriber};
use crate::chv::{self, ChvError, PIN_LEN, Secret};
use crate::state::StateError;
use crate::status::Status;
use bootstrap::{BeginRequest, MAC_LEN, PK_LEN, RAND_LEN, RequestError, Variant};
use drbg::{DrbgError, HmacDrbg};
use p256::ecdsa::signature::hazmat::PrehashSigner;
use p256::ecdsa::{DerSignature, SigningKey};
use p256::elliptic_curve::Generate;
use sha2::{Digest, Sha256};

/// The token's application identifier: a proprietary RID (F0) and "simlab" "TK".
pub const AID: [u8; 9] = [0xF0, b's', b'i', b'm', b'l', b'a', b'b', b'T', b'K'];

/// Instruction bytes. CLA is 00 or 80 (both accepted, same meaning), with bit 10 set on every
/// command of a chain but the last (ISO 7816-4 5.1.1.1).
pub mod ins {
    /// VERIFY PIN: `00 20 00 80 08 <PIN padded with FF>`; no data asks for the tries left.
    pub const VERIFY_PIN: u8 = 0x20;
    /// CHANGE PIN: `00 24 00 80 10 <old> <new>`.
    pub const CHANGE_PIN: u8 = 0x24;
    /// PERFORM SECURITY OPERATION: COMPUTE DIGITAL SIGNATURE, P1P2 = 9E 9A, data = the
    /// message (hashed on the card); chained or extended beyond 255 bytes. With P1P2 = 9E 9C
    /// ([`super::SIGN_REQUEST_P1P2`]) it is SIGN REQUEST: the data is a seed-002
    /// simlab-sign-request-v1 ([`super::request`]), decoded on the card before it is signed.
    pub const SIGN: u8 = 0x2A;
    /// GENERATE KEY: P1 = 00 create (refused if a key exists), 01 replace.
    pub const GENERATE_KEY: u8 = 0x46;
    /// GET PUBLIC KEY: the 65-byte uncompressed SEC1 point.
    pub const GET_PUBLIC_KEY: u8 = 0x48;
    /// BOOTSTRAP BEGIN: P1 = 01 (GSM) or 02 (AKA); see `docs/bootstrap-protocol.md`.
    pub const BOOTSTRAP_BEGIN: u8 = 0x50;
    /// BOOTSTRAP FINISH: data = M3 ‖ certificate; chained beyond 255 bytes.
    pub const BOOTSTRAP_FINISH: u8 = 0x52;
    /// GET CERTIFICATE: P1P2 = offset, Le = bytes wanted.
    pub const GET_CERTIFICATE: u8 = 0x54;
    /// GET DATA (token information): P1P2 = 00 00.
    pub const GET_INFO: u8 = 0xCA;
}

/// CLA bits the token understands.
pub mod cla {
    /// ISO 7816-4 command chaining: more commands of the same chain follow.
    pub const CHAINING: u8 = 0x10;
    /// The proprietary-class bit; the token treats 80 like 00.
    pub const PROPRIETARY: u8 = 0x80;
}

/// P2 of VERIFY PIN / CHANGE PIN: the token's own PIN (a specific, not global, reference).
pub const PIN_REF: u8 = 0x80;
/// P1 of GENERATE KEY: create a key; refused when one exists.
pub const KEYGEN_CREATE: u8 = 0x00;
/// P1 of GENERATE KEY: replace any existing key (and drop its certificate).
pub const KEYGEN_REPLACE: u8 = 0x01;
/// P1 P2 of SIGN: ISO 7816-8 COMPUTE DIGITAL SIGNATURE, signature returned (9E), data to be
/// signed in the data field (9A).
pub const SIGN_P1P2: (u8, u8) = (0x9E, 0x9A);
/// P1 P2 of SIGN REQUEST: signature returned (9E), and a **proprietary** P2 9C — ISO 7816-8
/// does not define 9C as a data-object reference (9A is "data to be signed"); simlab uses it
/// for "a simlab-sign-request-v1 to be decoded, then signed". The signature is the one SIGN
/// would give over the same bytes.
pub const SIGN_REQUEST_P1P2: (u8, u8) = (0x9E, 0x9C);

/// The PIN of a new token: "0000", as the card's own PIN1/PIN2 defaults. CHANGE PIN replaces it.
pub const DEFAULT_PIN: [u8; PIN_LEN] = *b"0000\xFF\xFF\xFF\xFF";
/// Wrong PINs in a row before the PIN blocks.
pub const PIN_TRIES: u8 = 3;
/// Length of GET PUBLIC KEY's answer.
pub const PUBLIC_KEY_LEN: usize = PK_LEN;
/// The largest certificate (chain) the token stores.
pub const CERT_MAX: usize = 1024;
/// Length of GET INFO's answer.
pub const INFO_LEN: usize = 6;
/// The layout version of the token's part of the card state, and of GET INFO.
pub const LAYOUT_VERSION: u8 = 1;
/// The largest response `process` writes (the card's response buffer).
const OUT_MAX: usize = 256;
/// Data collected across a chain: M3 followed by the largest certificate.
const CHAIN_BUF_LEN: usize = MAC_LEN + CERT_MAX;
/// SIGN REQUEST collects its request in the chain buffer too.
const _: () = assert!(request::MAX_LEN <= CHAIN_BUF_LEN);

/// Bits of the flags byte in the saved state and in GET INFO.
mod flag {
    /// A key pair exists.
    pub const KEY: u8 = 0x01;
    /// The DRBG was seeded with a non-zero seed.
    pub const SEEDED: u8 = 0x02;
    /// GET INFO only: a certificate is stored.
    pub const CERTIFICATE: u8 = 0x04;
    /// GET INFO only: the PIN is verified in this session.
    pub const PIN_VERIFIED: u8 = 0x08;
    /// GET INFO only: a bootstrap session waits for FINISH.
    pub const BOOTSTRAP_PENDING: u8 = 0x10;
    /// The bits a saved state may carry.
    pub const PERSISTENT: u8 = KEY | SEEDED;
}

/// Status words the card model's [`Status`] does not name.
pub mod sw {
    use crate::status::Status;
    /// 6300: authentication failed — M1 or M3 is not the MAC the card computes.
    pub const GATEWAY_AUTH_FAILED: Status = Status::Other(0x6300);
    /// 6884: command chaining not supported for this instruction.
    pub const CHAINING_NOT_SUPPORTED: Status = Status::Other(0x6884);
    /// 6A84: not enough memory — the certificate is longer than the token stores.
    pub const NOT_ENOUGH_MEMORY: Status = Status::Other(0x6A84);
    /// 6A89: a key already exists (GENERATE KEY without P1 = 01).
    pub const KEY_EXISTS: Status = Status::Other(0x6A89);
}

// Saved-state layout (offsets into the token's STATE_LEN bytes).
const AT_VERSION: usize = 0;
const AT_FLAGS: usize = AT_VERSION + 1;
const AT_KEY: usize = AT_FLAGS + 1;
const AT_PIN: usize = AT_KEY + 32;
const AT_PIN_TRIES: usize = AT_PIN + PIN_LEN;
const AT_CERT_LEN: usize = AT_PIN_TRIES + 1;
const AT_CERT: usize = AT_CERT_LEN + 2;
const AT_DRBG: usize = AT_CERT + CERT_MAX;

/// Bytes of persistent token state inside the card state: layout version, flags, private
/// scalar, PIN and its counter, certificate length and bytes, DRBG working state.
pub const STATE_LEN: usize = AT_DRBG + drbg::STATE_LEN;

/// The token may add at most 4 KiB to the card's persistent state (a microcontroller keeps it in
/// flash pages).
const _: () = assert!(STATE_LEN < 4096);

/// Why the token refused a command; each maps to one status word ([`TokenError::status`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TokenError {
    /// CLA other than 00/80 (with or without the chaining bit): 6E00.
    ClaNotSupported,
    /// Unknown INS: 6D00.
    InsNotSupported,
    /// P1/P2 not valid for the instruction: 6A86.
    BadP1P2,
    /// Lc (or the data collected by a chain) has the wrong length: 6700.
    WrongLength,
    /// The data field is malformed (bad TLV, bad new PIN format, …): 6A80.
    BadData,
    /// The operation needs the PIN verified in this session: 6982.
    PinNotVerified,
    /// The PIN is blocked: 6983.
    PinBlocked,
    /// Wrong PIN, or an empty VERIFY asking for the counter: 63Cx.
    WrongPin { tries_left: u8 },
    /// No key pair yet: 6A88.
    NoKey,
    /// GENERATE KEY would overwrite a key and P1 does not say so: 6A89.
    KeyExists,
    /// No certificate stored: 6A88.
    NoCertificate,
    /// GET CERTIFICATE offset at or past the end: 6B00.
    OffsetBeyondEnd,
    /// The DRBG was never seeded (an all-zero seed), so keys would be predictable: 6985.
    NotSeeded,
    /// The DRBG refused (reseed required): 6F00.
    Drbg(DrbgError),
    /// ECDSA signing failed (cannot happen with a valid key): 6F00.
    SigningFailed,
    /// BOOTSTRAP FINISH without a BOOTSTRAP BEGIN that succeeded in this session: 6985.
    NoBootstrapSession,
    /// M1 or M3 is wrong: the gateway does not hold K, or the message was altered: 6300.
    GatewayNotAuthenticated,
    /// The certificate is longer than [`CERT_MAX`]: 6A84.
    CertificateTooLong,
    /// The chaining bit on an instruction that takes no chain: 6884.
    ChainingNotSupported,
    /// The card's subscriber keys are incomplete (Milenage without OPc): 6985.
    SubscriberKeysMissing,
    /// AKA: AUTN's MAC is wrong, the network is not genuine: 9862.
    AuthMacFailure,
    /// AKA asked of a card whose algorithm is 2G only: 9864.
    AuthContextNotSupported,
}

impl TokenError {
    /// The status word the card answers.
    pub const fn status(self) -> Status {
        match self {
            TokenError::ClaNotSupported => Status::ClaNotSupported,
            TokenError::InsNotSupported => Status::InsNotSupported,
            TokenError::BadP1P2 => Status::IncorrectP1P2,
            TokenError::WrongLength => Status::WrongLength,
            TokenError::BadData => Status::IncorrectData,
            TokenError::PinNotVerified => Status::SecurityNotSatisfied,
            TokenError::PinBlocked => Status::AuthMethodBlocked,
            TokenError::WrongPin { tries_left } => Status::VerifyFailed { tries_left },
            TokenError::NoKey | TokenError::NoCertificate => Status::ReferenceNotFound,
            TokenError::KeyExists => sw::KEY_EXISTS,
            TokenError::OffsetBeyondEnd => Status::WrongP1P2,
            TokenError::NotSeeded
            | TokenError::NoBootstrapSession
            | TokenError::SubscriberKeysMissing => Status::ConditionsNotSatisfied,
            TokenError::Drbg(_) | TokenError::SigningFailed => Status::NoPreciseDiagnosis,
            TokenError::GatewayNotAuthenticated => sw::GATEWAY_AUTH_FAILED,
            TokenError::CertificateTooLong => sw::NOT_ENOUGH_MEMORY,
            TokenError::ChainingNotSupported => sw::CHAINING_NOT_SUPPORTED,
            TokenError::AuthMacFailure => Status::AuthMacFailure,
            TokenError::AuthContextNotSupported => Status::AuthContextNotSupported,
        }
    }
}

impl From<RequestError> for TokenError {
    fn from(e: RequestError) -> Self {
        match e {
            RequestError::BufferTooSmall => TokenError::WrongLength,
            _ => TokenError::BadData,
        }
    }
}

type Result<T> = core::result::Result<T, TokenError>;

/// The integrity key of one bootstrap session. Wiped when dropped, so every way a session
/// ends (FINISH, a wrong MAC, a new BEGIN, reset) leaves no K behind.
#[derive(Clone)]
struct Session {
    k: [u8; MAC_LEN],
}

impl Drop for Session {
    fn drop(&mut self) {
        self.k.fill(0);
        core::hint::black_box(&self.k);
    }
}

/// A command chain in progress (ISO 7816-4 command chaining), identified by INS P1 P2.
#[derive(Clone)]
struct Chain {
    ins: u8,
    p1: u8,
    p2: u8,
    body: ChainBody,
}

#[derive(Clone)]
enum ChainBody {
    /// SIGN hashes as the data arrives, so its length is unbounded.
    Hash(Sha256),
    /// BOOTSTRAP BEGIN/FINISH and SIGN REQUEST collect their data (this many bytes) in the
    /// chain buffer.
    Collect(usize),
}

/// Everything but the chain buffer, so a handler can read the buffer while changing the rest.
#[derive(Clone)]
struct Core {
    // Persistent.
    key: Option<SigningKey>,
    pin: Secret,
    cert: [u8; CERT_MAX],
    cert_len: usize,
    drbg: HmacDrbg,
    seeded: bool,
    /// Persistent state changed since [`Token::take_dirty`].
    dirty: bool,
    // Volatile, lost on reset.
    pin_verified: bool,
    chain: Option<Chain>,
    session: Option<Session>,
}

/// The token applet.
#[derive(Clone)]
pub struct Token {
    core: Core,
    /// Data of a chained BOOTSTRAP BEGIN/FINISH or SIGN REQUEST (RAM only; also the staging
    /// area that keeps the stored certificate intact until M3 has been checked).
    chain_buf: [u8; CHAIN_BUF_LEN],
}

impl Token {
    /// A token with no key yet and the default PIN. `seed` seeds its DRBG and must be unique
    /// per card; an all-zero seed (a `Config` nobody seeded) leaves the DRBG marked unseeded
    /// and GENERATE KEY refused, rather than giving every such card the same key.
    pub fn new(seed: &[u8; 32]) -> Self {
        Token {
            core: Core {
                key: None,
                pin: Secret::new(DEFAULT_PIN, PIN_TRIES),
                cert: [0; CERT_MAX],
                cert_len: 0,
                // The 256-bit seed is entropy input and nonce at once (SP 800-90A 8.6.7):
                // 3/2 of P-256's 128-bit security strength fits in it.
                drbg: HmacDrbg::new(seed, &[]),
                seeded: seed.iter().any(|&b| b != 0),
                dirty: false,
                pin_verified: false,
                chain: None,
                session: None,
            },
            chain_buf: [0; CHAIN_BUF_LEN],
        }
    }

    /// Power-on / reset / re-selection: PIN verification, any chain and any bootstrap session
    /// (with its K) are lost.
    pub fn reset(&mut self) {
        self.core.pin_verified = false;
        self.core.chain = None;
        self.core.session = None;
        self.chain_buf.fill(0);
    }

    /// One command while the token is selected. Response data goes to `out`; the length is
    /// returned. `sub` gives the card's own A3/A8 and AKA, so bootstrap keys never leave it.
    pub fn process(
        &mut self,
        cmd: &Command,
        sub: &mut Subscriber,
        out: &mut [u8; 256],
    ) -> core::result::Result<usize, Status> {
        self.handle(cmd, sub, out).map_err(TokenError::status)
    }

    /// Whether persistent token state changed since the last call.
    pub fn take_dirty(&mut self) -> bool {
        core::mem::take(&mut self.core.dirty)
    }

    /// Writes [`STATE_LEN`] bytes of state into `out`; returns the length written, 0 if `out`
    /// is too small.
    pub fn save_state(&self, out: &mut [u8]) -> usize {
        let Some(out) = out.get_mut(..STATE_LEN) else {
            return 0;
        };
        let c = &self.core;
        let mut flags = 0;
        if c.key.is_some() {
            flags |= flag::KEY;
        }
        if c.seeded {
            flags |= flag::SEEDED;
        }
        let mut w = Cursor { buf: out, at: 0 };
        w.put(&[LAYOUT_VERSION, flags]);
        match &c.key {
            Some(key) => w.put(&key.to_bytes()),
            None => w.put(&[0; 32]),
        }
        w.put(c.pin.value());
        w.put(&[c.pin.tries_left()]);
        let cert_len = u16::try_from(c.cert_len).unwrap_or(0);
        w.put(&cert_len.to_be_bytes());
        w.put(&c.cert);
        let mut drbg = [0u8; drbg::STATE_LEN];
        c.drbg.save(&mut drbg);
        w.put(&drbg);
        w.at
    }

    /// Restores state written by [`Token::save_state`]. Everything is checked before anything
    /// changes: on error the token is untouched. Volatile state is reset, as after power-on.
    pub fn restore_state(&mut self, bytes: &[u8]) -> core::result::Result<(), StateError> {
        let bytes: &[u8; STATE_LEN] = bytes.try_into().map_err(|_| StateError::BadLength {
            expected: STATE_LEN,
            actual: bytes.len(),
        })?;
        let mut r = Reader { buf: bytes, at: 0 };
        let [version, flags] = r.take::<2>();
        if version != LAYOUT_VERSION {
            return Err(StateError::BadValue("token layout version"));
        }
        if flags & !flag::PERSISTENT != 0 {
            return Err(StateError::BadValue("token flags"));
        }
        let scalar = r.take::<32>();
        let key = if flags & flag::KEY != 0 {
            Some(
                SigningKey::from_slice(&scalar)
                    .map_err(|_| StateError::BadValue("token private key"))?,
            )
        } else {
            None
        };
        let pin = chv::parse_pin(&r.take::<PIN_LEN>()).ok_or(StateError::BadValue("token PIN"))?;
        let [tries] = r.take::<1>();
        let cert_len = u16::from_be_bytes(r.take::<2>()) as usize;
        if cert_len > CERT_MAX {
            return Err(StateError::BadValue("token certificate length"));
        }
        let cert = r.take::<CERT_MAX>();
        let drbg = HmacDrbg::restore(&r.take::<{ drbg::STATE_LEN }>())
            .ok_or(StateError::BadValue("token DRBG state"))?;
        let mut secret = Secret::new(pin, PIN_TRIES);
        secret.restore_tries(tries);
        let core = &mut self.core;
        core.key = key;
        core.pin = secret;
        core.cert = cert;
        core.cert_len = cert_len;
        core.drbg = drbg;
        core.seeded = flags & flag::SEEDED != 0;
        core.dirty = false;
        self.reset();
        Ok(())
    }

    /// Routes one command, handling command chaining for the instructions that take it.
    fn handle(
        &mut self,
        cmd: &Command,
        sub: &mut Subscriber,
        out: &mut [u8; 256],
    ) -> Result<usize> {
        if cmd.cla & !(cla::CHAINING | cla::PROPRIETARY) != 0 {
            self.core.chain = None;
            return Err(TokenError::ClaNotSupported);
        }
        let chained = cmd.cla & cla::CHAINING != 0;
        // A command that does not continue the chain abandons it (ISO 7816-4 leaves this to
        // the card; abandoning is what a host that gave up expects).
        if self
            .core
            .chain
            .as_ref()
            .is_some_and(|c| (c.ins, c.p1, c.p2) != (cmd.ins, cmd.p1, cmd.p2))
        {
            self.core.chain = None;
        }
        match cmd.ins {
            ins::SIGN | ins::BOOTSTRAP_BEGIN | ins::BOOTSTRAP_FINISH => {
                let result = self.long_command(cmd, chained, sub, out);
                if result.is_err() {
                    self.core.chain = None;
                }
                result
            }
            _ if chained => Err(TokenError::ChainingNotSupported),
            ins::VERIFY_PIN => self.core.verify_pin(cmd),
            ins::CHANGE_PIN => self.core.change_pin(cmd),
            ins::GENERATE_KEY => self.core.generate_key(cmd, out),
            ins::GET_PUBLIC_KEY => self.core.get_public_key(cmd, out),
            ins::GET_CERTIFICATE => self.core.get_certificate(cmd, out),
            ins::GET_INFO => self.core.get_info(cmd, out),
            _ => Err(TokenError::InsNotSupported),
        }
    }

    /// SIGN, SIGN REQUEST, BOOTSTRAP BEGIN and BOOTSTRAP FINISH: one command (short or
    /// extended), or a chain whose blocks are hashed (SIGN) or collected (the others) until
    /// the last arrives.
    fn long_command(
        &mut self,
        cmd: &Command,
        chained: bool,
        sub: &mut Subscriber,
        out: &mut [u8; 256],
    ) -> Result<usize> {
        let core = &mut self.core;
        core.precheck(cmd)?;
        if cmd.data.is_empty() {
            return Err(TokenError::WrongLength);
        }
        let is_request = is_sign_request(cmd);
        let (limit, overflow) = match cmd.ins {
            ins::BOOTSTRAP_FINISH => (CHAIN_BUF_LEN, TokenError::CertificateTooLong),
            _ if is_request => (request::MAX_LEN, TokenError::WrongLength),
            _ => (CHAIN_BUF_LEN, TokenError::WrongLength),
        };
        let mut chain = match core.chain.take() {
            Some(chain) => chain,
            // The whole data in one command: nothing to collect.
            None if !chained => {
                return match cmd.ins {
                    _ if is_request => core.sign_request(cmd.data, out),
                    ins::SIGN => core.sign(Sha256::new_with_prefix(cmd.data), out),
                    ins::BOOTSTRAP_BEGIN => core.begin(cmd.p1, cmd.data, sub, out),
                    _ => core.finish(cmd.data),
                };
            }
            None => Chain {
                ins: cmd.ins,
                p1: cmd.p1,
                p2: cmd.p2,
                body: match cmd.ins {
                    ins::SIGN if !is_request => ChainBody::Hash(Sha256::new()),
                    _ => ChainBody::Collect(0),
                },
            },
        };
        match &mut chain.body {
            ChainBody::Hash(hasher) => hasher.update(cmd.data),
            ChainBody::Collect(len) => {
                let end = len
                    .checked_add(cmd.data.len())
                    .filter(|&end| end <= limit)
                    .ok_or(overflow)?;
                self.chain_buf
                    .get_mut(*len..end)
                    .ok_or(overflow)?
                    .copy_from_slice(cmd.data);
                *len = end;
            }
        }
        if chained {
            core.chain = Some(chain);
            return Ok(0);
        }
        match chain.body {
            ChainBody::Hash(hasher) => core.sign(hasher, out),
            ChainBody::Collect(len) => {
                let data = self.chain_buf.get(..len).ok_or(overflow)?;
                let result = match cmd.ins {
                    _ if is_request => core.sign_request(data, out),
                    ins::BOOTSTRAP_BEGIN => core.begin(cmd.p1, data, sub, out),
                    _ => core.finish(data),
                };
                self.chain_buf.fill(0);
                result
            }
        }
    }

    /// The bytes SIGN REQUEST would decode (and, if they decode, sign) if `cmd` came now:
    /// the data of the chain in progress followed by `cmd`'s, copied into `buf`. `None` when
    /// `cmd` would not get that far — not the last command of a SIGN REQUEST, a class the
    /// token refuses, the PIN not verified, no key, no data, or more than
    /// [`request::MAX_LEN`] bytes. `cmd` is as the token sees it (channel bits cleared).
    ///
    /// It follows [`Token::process`] step by step and changes nothing, so a device that must
    /// show what will be signed before it lets the command through (the firmware's
    /// user-presence gate) displays exactly these bytes; the card model's tests check that
    /// every SIGN REQUEST signature is over the bytes this returned just before.
    pub fn pending_sign_request<'b>(
        &self,
        cmd: &Command,
        buf: &'b mut [u8; request::MAX_LEN],
    ) -> Option<&'b [u8]> {
        if cmd.cla & !cla::PROPRIETARY != 0 || !is_sign_request(cmd) || cmd.data.is_empty() {
            return None;
        }
        self.core.precheck(cmd).ok()?;
        let collected = match &self.core.chain {
            Some(Chain {
                ins: i,
                p1,
                p2,
                body: ChainBody::Collect(len),
            }) if (*i, *p1, *p2) == (cmd.ins, cmd.p1, cmd.p2) => self.chain_buf.get(..*len)?,
            // Another chain is abandoned by this command; no chain: the data stands alone.
            _ => &[],
        };
        let total = collected.len().checked_add(cmd.data.len())?;
        let dst = buf.get_mut(..total)?;
        let (head, tail) = dst.split_at_mut(collected.len());
        head.copy_from_slice(collected);
        tail.copy_from_slice(cmd.data);
        Some(dst)
    }

    /// Installs a known key, for tests that check published vectors.
    #[cfg(test)]
    fn set_key(&mut self, scalar: &[u8; 32]) {
        self.core.key = SigningKey::from_slice(scalar).ok();
    }
}

impl Core {
    /// The conditions of SIGN / BEGIN / FINISH, checked on every block of a chain so a chain
    /// never runs ahead of them.
    fn precheck(&self, cmd: &Command) -> Result<()> {
        match cmd.ins {
            ins::SIGN => {
                if (cmd.p1, cmd.p2) != SIGN_P1P2 && (cmd.p1, cmd.p2) != SIGN_REQUEST_P1P2 {
                    return Err(TokenError::BadP1P2);
                }
                self.key.as_ref().ok_or(TokenError::NoKey)?;
                self.require_pin()
            }
            ins::BOOTSTRAP_BEGIN => {
                if Variant::from_p1(cmd.p1).is_none() || cmd.p2 != 0 {
                    return Err(TokenError::BadP1P2);
                }
                self.require_pin()?;
                self.key.as_ref().map(|_| ()).ok_or(TokenError::NoKey)
            }
            _ => {
                if (cmd.p1, cmd.p2) != (0, 0) {
                    return Err(TokenError::BadP1P2);
                }
                self.session
                    .as_ref()
                    .map(|_| ())
                    .ok_or(TokenError::NoBootstrapSession)
            }
        }
    }

    fn require_pin(&self) -> Result<()> {
        match (self.pin_verified, self.pin.is_blocked()) {
            (_, true) => Err(TokenError::PinBlocked),
            (true, false) => Ok(()),
            (false, false) => Err(TokenError::PinNotVerified),
        }
    }

    fn public_key(key: &SigningKey, out: &mut [u8; 256]) -> Result<usize> {
        let point = key.verifying_key().to_sec1_point(false);
        let bytes = point.as_bytes();
        out.get_mut(..bytes.len())
            .ok_or(TokenError::WrongLength)?
            .copy_from_slice(bytes);
        Ok(bytes.len())
    }

    fn verify_pin(&mut self, cmd: &Command) -> Result<usize> {
        if (cmd.p1, cmd.p2) != (0, PIN_REF) {
            return Err(TokenError::BadP1P2);
        }
        if cmd.data.is_empty() {
            // The counter, without spending a try (as TS 102 221 11.1.9 for the card's PINs).
            return match (self.pin.tries_left(), self.pin_verified) {
                (0, _) => Err(TokenError::PinBlocked),
                (_, true) => Ok(0),
                (n, false) => Err(TokenError::WrongPin { tries_left: n }),
            };
        }
        if cmd.data.len() != PIN_LEN {
            return Err(TokenError::WrongLength);
        }
        // `check` spends the try before it compares; the host persists before it answers.
        self.dirty = true;
        let result = self.pin.check(cmd.data);
        self.pin_verified = result.is_ok();
        result.map(|()| 0).map_err(pin_error)
    }

    fn change_pin(&mut self, cmd: &Command) -> Result<usize> {
        if (cmd.p1, cmd.p2) != (0, PIN_REF) {
            return Err(TokenError::BadP1P2);
        }
        let (old, new) = cmd
            .data
            .split_at_checked(PIN_LEN)
            .filter(|(_, new)| new.len() == PIN_LEN)
            .ok_or(TokenError::WrongLength)?;
        // A malformed new PIN is refused before any try is spent.
        let new = chv::parse_pin(new).ok_or(TokenError::BadData)?;
        self.dirty = true;
        let result = self.pin.check(old);
        self.pin_verified = result.is_ok();
        result.map_err(pin_error)?;
        self.pin.set(new);
        Ok(0)
    }

    fn generate_key(&mut self, cmd: &Command, out: &mut [u8; 256]) -> Result<usize> {
        if !matches!(cmd.p1, KEYGEN_CREATE | KEYGEN_REPLACE) || cmd.p2 != 0 {
            return Err(TokenError::BadP1P2);
        }
        if !cmd.data.is_empty() {
            return Err(TokenError::WrongLength);
        }
        self.require_pin()?;
        if self.key.is_some() && cmd.p1 != KEYGEN_REPLACE {
            return Err(TokenError::KeyExists);
        }
        if !self.seeded {
            return Err(TokenError::NotSeeded);
        }
        // The DRBG advances even if generation fails half-way: persist it either way.
        self.dirty = true;
        let key = SigningKey::try_generate_from_rng(&mut self.drbg).map_err(TokenError::Drbg)?;
        let n = Self::public_key(&key, out)?;
        self.key = Some(key);
        // A certificate certifies the old key, and a pending bootstrap MACed the old PK.
        self.cert.fill(0);
        self.cert_len = 0;
        self.session = None;
        Ok(n)
    }

    fn get_public_key(&self, cmd: &Command, out: &mut [u8; 256]) -> Result<usize> {
        if (cmd.p1, cmd.p2) != (0, 0) {
            return Err(TokenError::BadP1P2);
        }
        if !cmd.data.is_empty() {
            return Err(TokenError::WrongLength);
        }
        Self::public_key(self.key.as_ref().ok_or(TokenError::NoKey)?, out)
    }

    /// ECDSA P-256 over SHA-256 of everything the card was shown (RFC 6979 nonces), DER.
    fn sign(&mut self, hasher: Sha256, out: &mut [u8; 256]) -> Result<usize> {
        let key = self.key.as_ref().ok_or(TokenError::NoKey)?;
        self.require_pin()?;
        let digest = hasher.finalize();
        let signature: DerSignature = key
            .sign_prehash(&digest)
            .map_err(|_| TokenError::SigningFailed)?;
        let bytes = signature.as_bytes();
        out.get_mut(..bytes.len())
            .ok_or(TokenError::SigningFailed)?
            .copy_from_slice(bytes);
        Ok(bytes.len())
    }

    /// SIGN REQUEST: `data` must be a simlab-sign-request-v1 that [`request::SignRequest::decode`]
    /// accepts (correlator included); then it is signed exactly as SIGN signs it. Anything
    /// else is refused with 6A80 and nothing is signed.
    fn sign_request(&mut self, data: &[u8], out: &mut [u8; 256]) -> Result<usize> {
        if data.len() > request::MAX_LEN {
            return Err(TokenError::WrongLength);
        }
        request::SignRequest::decode(data).map_err(|_| TokenError::BadData)?;
        self.sign(Sha256::new_with_prefix(data), out)
    }

    /// BOOTSTRAP BEGIN (message 240 in, 250 out): run A3/A8 or AKA on the card, derive K,
    /// check M1, and only then release SRES/RES with PK and M2.
    fn begin(
        &mut self,
        p1: u8,
        data: &[u8],
        sub: &mut Subscriber,
        out: &mut [u8; 256],
    ) -> Result<usize> {
        // Whatever happens, an older session ends here.
        self.session = None;
        let variant = Variant::from_p1(p1).ok_or(TokenError::BadP1P2)?;
        let req = BeginRequest::parse(variant, data)?;
        let key = self.key.as_ref().ok_or(TokenError::NoKey)?;
        let mut responses = [0u8; bootstrap::RES_MAX];
        let (k, responses_len) = match variant {
            Variant::Gsm => {
                let mut kcs = [[0u8; bootstrap::KC_LEN]; bootstrap::MAX_RANDS];
                let rands = req.rands();
                for ((rand, kc), sres) in rands
                    .iter()
                    .zip(kcs.iter_mut())
                    .zip(responses.chunks_exact_mut(bootstrap::SRES_LEN))
                {
                    let (s, c) = sub.gsm(rand).ok_or(TokenError::SubscriberKeysMissing)?;
                    sres.copy_from_slice(&s);
                    *kc = c;
                }
                let k = bootstrap::k_gsm(kcs.get(..rands.len()).unwrap_or_default(), rands);
                kcs.iter_mut().for_each(|kc| kc.fill(0));
                core::hint::black_box(&kcs);
                (k, rands.len() * bootstrap::SRES_LEN)
            }
            Variant::Aka => {
                let rand: &[u8; RAND_LEN] = req.rands().first().ok_or(TokenError::BadData)?;
                let autn = req.autn.ok_or(TokenError::BadData)?;
                let ok = match sub.aka(rand, &autn) {
                    Ok(ok) => ok,
                    Err(AkaError::SyncFailure { auts }) => {
                        // No K, nothing to check: AUTS is what any USIM gives the network.
                        let reply = [bootstrap::tag::SYNC_FAILURE, bootstrap::AUTS_LEN as u8];
                        let mut w = Cursor { buf: out, at: 0 };
                        w.put(&reply);
                        w.put(&auts);
                        return Ok(w.at);
                    }
                    Err(AkaError::MacFailure) => return Err(TokenError::AuthMacFailure),
                    Err(AkaError::ContextNotSupported) => {
                        return Err(TokenError::AuthContextNotSupported);
                    }
                    Err(AkaError::MissingKey) => return Err(TokenError::SubscriberKeysMissing),
                };
                let res = ok.res();
                responses
                    .get_mut(..res.len())
                    .ok_or(TokenError::BadData)?
                    .copy_from_slice(res);
                let k = bootstrap::k_gba(&ok.ck, &ok.ik, rand, req.impi, req.naf_id);
                (k, res.len())
            }
        };
        // The derivations fail only for inputs the parser already refused.
        let session = Session {
            k: k.ok_or(TokenError::BadData)?,
        };
        let expected = bootstrap::m1(&session.k, req.rands()).ok_or(TokenError::BadData)?;
        if !bootstrap::mac_matches(&expected, &req.m1) {
            // A forged gateway learns nothing: no SRES/RES, no PK, no M2.
            return Err(TokenError::GatewayNotAuthenticated);
        }
        let responses = responses.get(..responses_len).unwrap_or_default();
        let mut pk = [0u8; 256];
        let pk_len = Self::public_key(key, &mut pk)?;
        let pk: &[u8; PK_LEN] = pk
            .get(..pk_len)
            .and_then(|p| p.try_into().ok())
            .ok_or(TokenError::NoKey)?;
        let m2 = bootstrap::m2(&session.k, responses, pk, req.restrictions, req.alias)
            .ok_or(TokenError::BadData)?;
        let mut w = Cursor { buf: out, at: 0 };
        w.put(&[bootstrap::tag::SUCCESS, responses_len as u8]);
        w.put(responses);
        w.put(pk);
        w.put(&m2);
        self.session = Some(session);
        Ok(w.at)
    }

    /// BOOTSTRAP FINISH (message 260): the certificate is stored only if M3 is right. Any
    /// outcome ends the session, so K is used for exactly one certificate.
    fn finish(&mut self, data: &[u8]) -> Result<usize> {
        let session = self.session.take().ok_or(TokenError::NoBootstrapSession)?;
        let (m3, cert) = data
            .split_first_chunk::<MAC_LEN>()
            .ok_or(TokenError::WrongLength)?;
        if cert.is_empty() {
            return Err(TokenError::WrongLength);
        }
        if cert.len() > CERT_MAX {
            return Err(TokenError::CertificateTooLong);
        }
        let expected = bootstrap::m3(&session.k, cert).ok_or(TokenError::BadData)?;
        if !bootstrap::mac_matches(&expected, m3) {
            return Err(TokenError::GatewayNotAuthenticated);
        }
        self.cert
            .get_mut(..cert.len())
            .ok_or(TokenError::CertificateTooLong)?
            .copy_from_slice(cert);
        if let Some(tail) = self.cert.get_mut(cert.len()..) {
            tail.fill(0);
        }
        self.cert_len = cert.len();
        self.dirty = true;
        Ok(0)
    }

    fn get_certificate(&self, cmd: &Command, out: &mut [u8; 256]) -> Result<usize> {
        if cmd.p1 & 0x80 != 0 {
            return Err(TokenError::BadP1P2);
        }
        if !cmd.data.is_empty() {
            return Err(TokenError::WrongLength);
        }
        if self.cert_len == 0 {
            return Err(TokenError::NoCertificate);
        }
        let offset = u16::from_be_bytes([cmd.p1, cmd.p2]) as usize;
        let left = self
            .cert_len
            .checked_sub(offset)
            .filter(|&n| n > 0)
            .ok_or(TokenError::OffsetBeyondEnd)?;
        let n = cmd.ne.unwrap_or(OUT_MAX).min(OUT_MAX).min(left);
        let src = self
            .cert
            .get(offset..offset + n)
            .ok_or(TokenError::OffsetBeyondEnd)?;
        out.get_mut(..n)
            .ok_or(TokenError::WrongLength)?
            .copy_from_slice(src);
        Ok(n)
    }

    fn get_info(&self, cmd: &Command, out: &mut [u8; 256]) -> Result<usize> {
        if (cmd.p1, cmd.p2) != (0, 0) {
            return Err(TokenError::BadP1P2);
        }
        if !cmd.data.is_empty() {
            return Err(TokenError::WrongLength);
        }
        let mut flags = 0;
        for (on, bit) in [
            (self.key.is_some(), flag::KEY),
            (self.seeded, flag::SEEDED),
            (self.cert_len > 0, flag::CERTIFICATE),
            (self.pin_verified, flag::PIN_VERIFIED),
            (self.session.is_some(), flag::BOOTSTRAP_PENDING),
        ] {
            if on {
                flags |= bit;
            }
        }
        let cert_len = u16::try_from(self.cert_len).unwrap_or(0).to_be_bytes();
        let info: [u8; INFO_LEN] = [
            LAYOUT_VERSION,
            flags,
            self.pin.tries_left(),
            self.pin.max_tries(),
            cert_len[0],
            cert_len[1],
        ];
        let mut w = Cursor { buf: out, at: 0 };
        w.put(&info);
        Ok(w.at)
    }
}

/// INS 2A with P1P2 9E 9C.
fn is_sign_request(cmd: &Command) -> bool {
    cmd.ins == ins::SIGN && (cmd.p1, cmd.p2) == SIGN_REQUEST_P1P2
}

fn pin_error(e: ChvError) -> TokenError {
    match e {
        ChvError::Wrong { tries_left } => TokenError::WrongPin { tries_left },
        ChvError::Blocked => TokenError::PinBlocked,
        ChvError::BadFormat => TokenError::BadData,
    }
}

/// Sequential writer into a fixed buffer; writes past the end are dropped (the callers'
/// sizes are constants far below the buffers', which the tests check).
struct Cursor<'a> {
    buf: &'a mut [u8],
    at: usize,
}

impl Cursor<'_> {
    fn put(&mut self, bytes: &[u8]) {
        let end = self.at.saturating_add(bytes.len());
        if let Some(dst) = self.buf.get_mut(self.at..end) {
            dst.copy_from_slice(bytes);
            self.at = end;
        }
    }
}

/// Sequential reader over the saved state, whose length is checked up front.
struct Reader<'a> {
    buf: &'a [u8],
    at: usize,
}

impl Reader<'_> {
    fn take<const N: usize>(&mut self) -> [u8; N] {
        let mut out = [0u8; N];
        let end = self.at.saturating_add(N);
        if let Some(src) = self.buf.get(self.at..end) {
            out.copy_from_slice(src);
        }
        self.at = end;
        out
    }
}

/// The token behind the card's dispatcher: selected by its AID, it gets every command of its
/// channel but SELECT and GET RESPONSE, chained ones included, with the card's own subscriber.
impl crate::dispatch::Application for Token {
    fn claims(&self, _card: &crate::card::CardState, aid: &[u8]) -> bool {
        !aid.is_empty() && AID.starts_with(aid)
    }

    fn takes_chaining(&self) -> bool {
        true
    }

    /// SELECT of the token applet: its FCI (6F, with the AID in 84) unless P2 says no data.
    /// A new selection is a new session.
    fn select(
        &mut self,
        _ctx: &mut crate::dispatch::Ctx<'_>,
        cmd: &Command,
        scratch: &mut [u8; 256],
    ) -> crate::dispatch::Handled {
        use crate::dispatch::Out;
        self.reset();
        if cmd.p2 & 0x0C == 0x0C {
            return Ok(Out::Done);
        }
        let mut w = crate::tlv::Writer::new(scratch);
        let fci = w.open(0x6F);
        w.tlv(0x84, &AID);
        w.close(fci);
        Ok(Out::Pending(w.len()))
    }

    fn call(
        &mut self,
        ctx: &mut crate::dispatch::Ctx<'_>,
        cmd: &Command,
        out: &mut [u8; 256],
    ) -> crate::dispatch::Handled {
        use crate::dispatch::{Fail, Out};
        match self.process(cmd, &mut ctx.card.sub, out) {
            Ok(0) => Ok(Out::Done),
            Ok(n) => Ok(Out::Pending(n)),
            Err(status) => Err(Fail::Raw(status)),
        }
    }

    /// The last channel that had the token selected closed or selected something else: the
    /// session ends as at a reset, so a verified PIN or a bootstrap K does not linger.
    fn deselect(&mut self) {
        self.reset();
    }
}
