//! The link protocol: framed APDUs over a byte stream (UART, USB-CDC, a TCP socket to QEMU).
//!
//! A byte stream has no message boundaries, loses and corrupts bytes, and its other end may
//! vanish mid-message; the card model wants whole APDUs. Every message therefore travels as a
//! frame (all integers big-endian; `docs/link-protocol.md` is the full specification):
//!
//! ```text
//! +------+------+------+-----+---------+------+-----------------+----------------+
//! | A5   | 5A   | TYPE | SEQ | LEN (2) | HCRC | PAYLOAD (LEN)   | CRC-32 (4)     |
//! +------+------+------+-----+---------+------+-----------------+----------------+
//!   sync          header (HCRC = CRC-8 of the 6 bytes before it)    over all before it
//! ```
//!
//! The receiver ([`Deframer`]) never trusts anything it has not checked: bytes before a sync
//! pattern are skipped, a header must pass its CRC-8 before its length is believed, a length
//! above [`MAX_PAYLOAD`] is refused at once, and a frame must pass its CRC-32. After any
//! failure it resumes the search one byte after the rejected sync, over the bytes it already
//! holds, so a frame that follows garbage or a truncated frame is still found. It never
//! allocates and never panics, whatever the input (property-tested, and fuzz-friendly: one
//! `push` and a `poll` loop is the whole API).
//!
//! A frame cut short is completed by whatever comes next and then fails its CRC; a sender that
//! (re)starts a session first sends [`MAX_FRAME`] zero bytes, which finish any such frame, so
//! the receiver is idle again when the session's first frame arrives.

use crate::crc::{crc8, crc32};

/// The two bytes every frame starts with. Zero bytes (the resynchronisation preamble) never
/// look like a sync.
pub const SYNC: [u8; 2] = [0xA5, 0x5A];
/// Sync, type, sequence number, length and header CRC.
pub const HEADER_LEN: usize = 7;
/// The CRC-32 at the end.
pub const TRAILER_LEN: usize = 4;
/// The largest payload either side sends or accepts: a short or extended APDU with up to 255
/// data bytes (4 + 3 + 255 + 2 = 264), a [`Kind::Bench`] reply (8 + 258), a personalisation
/// chunk (2 + 256); rounded up.
pub const MAX_PAYLOAD: usize = 272;
/// The longest frame on the wire.
pub const MAX_FRAME: usize = HEADER_LEN + MAX_PAYLOAD + TRAILER_LEN;
/// Bytes of personalisation data per [`Kind::PersoWrite`] frame.
pub const PERSO_CHUNK: usize = 256;
/// The protocol version reported by [`Kind::Info`].
pub const PROTOCOL_VERSION: u8 = 1;

// The payload bound must hold everything the protocol promises to carry.
const _: () = assert!(MAX_PAYLOAD >= 4 + 3 + 255 + 2);
const _: () = assert!(MAX_PAYLOAD >= 8 + simlab_applet::card::RESPONSE_MAX);
const _: () = assert!(MAX_PAYLOAD >= 2 + PERSO_CHUNK);
const _: () = assert!(MAX_PAYLOAD <= u16::MAX as usize);

/// Frame types. A reply has the request's type with bit 7 set and the request's sequence
/// number; [`Kind::Wait`] and [`Kind::Error`] may answer any request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Kind {
    /// Host → card: one C-APDU. Reply: the R-APDU (data ‖ SW1 SW2).
    Apdu = 0x01,
    /// Host → card: warm reset (selection, verified PINs and pending responses are lost; the
    /// persistent state is not). Reply: the ATR.
    Reset = 0x02,
    /// Host → card: the ATR, without a reset. Reply: the ATR.
    GetAtr = 0x03,
    /// Host → card: what this firmware is (TLVs, see [`InfoTag`]).
    Info = 0x04,
    /// Host → card, factory only: `offset (2) ‖ bytes` of the personalisation image. Reply:
    /// empty.
    PersoWrite = 0x05,
    /// Host → card, factory only: `length (2) ‖ CRC-32 (4)` of the image written so far; the
    /// card checks, restores and persists it. Reply: empty.
    PersoCommit = 0x06,
    /// Host → card: one C-APDU, processed exactly as [`Kind::Apdu`], timed. Reply:
    /// `count (8) ‖ R-APDU`, the count in the unit [`InfoTag::BenchUnit`] names.
    Bench = 0x07,
    /// Card → host: still working (waiting for the user-presence button); sent every
    /// [`crate::WAIT_INTERVAL_MS`] so the host can keep waiting. Empty payload.
    Wait = 0xF0,
    /// Card → host: the request (or a frame that looked like one) failed: `code (1)`, see
    /// [`ErrorCode`].
    Error = 0xFF,
}

impl Kind {
    /// The request type for a byte, if it is one.
    pub fn request(byte: u8) -> Option<Kind> {
        Some(match byte {
            0x01 => Kind::Apdu,
            0x02 => Kind::Reset,
            0x03 => Kind::GetAtr,
            0x04 => Kind::Info,
            0x05 => Kind::PersoWrite,
            0x06 => Kind::PersoCommit,
            0x07 => Kind::Bench,
            _ => return None,
        })
    }

    /// The type of the reply to this request.
    pub const fn reply(self) -> u8 {
        self as u8 | 0x80
    }
}

/// Why a request failed, in an [`Kind::Error`] frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum ErrorCode {
    /// A frame with a valid header failed its CRC-32: resend it.
    BadCrc = 0x01,
    /// The header announced more than [`MAX_PAYLOAD`] bytes.
    TooLong = 0x02,
    /// The type is not a request this firmware knows.
    UnknownType = 0x03,
    /// The payload is malformed for its type (an empty APDU, a chunk outside the image, …).
    BadPayload = 0x04,
    /// The card holds no personalisation yet: personalise it first.
    NotPersonalised = 0x05,
    /// Personalisation is refused: the card already holds a valid state.
    AlreadyPersonalised = 0x06,
    /// The personalisation image was refused (bad length, CRC or content) or could not be
    /// stored.
    BadImage = 0x07,
    /// Persistent storage failed while storing the personalisation.
    Storage = 0x08,
}

impl ErrorCode {
    pub fn from_u8(b: u8) -> Option<Self> {
        Some(match b {
            0x01 => ErrorCode::BadCrc,
            0x02 => ErrorCode::TooLong,
            0x03 => ErrorCode::UnknownType,
            0x04 => ErrorCode::BadPayload,
            0x05 => ErrorCode::NotPersonalised,
            0x06 => ErrorCode::AlreadyPersonalised,
            0x07 => ErrorCode::BadImage,
            0x08 => ErrorCode::Storage,
            _ => return None,
        })
    }

    /// What it means, for people.
    pub const fn describe(self) -> &'static str {
        match self {
            ErrorCode::BadCrc => "frame failed its CRC",
            ErrorCode::TooLong => "frame longer than the link allows",
            ErrorCode::UnknownType => "unknown frame type",
            ErrorCode::BadPayload => "malformed payload",
            ErrorCode::NotPersonalised => "the token is not personalised",
            ErrorCode::AlreadyPersonalised => "the token is already personalised",
            ErrorCode::BadImage => "personalisation image refused",
            ErrorCode::Storage => "persistent storage failed",
        }
    }
}

/// Tags of the TLVs (tag, length, value) in an [`Kind::Info`] reply. Unknown tags are skipped
/// by readers, so new ones can be added.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum InfoTag {
    /// [`PROTOCOL_VERSION`] (1 byte).
    Protocol = 0x01,
    /// [`flags`] (2 bytes).
    Flags = 0x02,
    /// The board's name (ASCII).
    Board = 0x03,
    /// The firmware's version (ASCII).
    Version = 0x04,
    /// [`MAX_PAYLOAD`] (2 bytes).
    MaxPayload = 0x05,
    /// The card state's length in bytes (2 bytes).
    StateLen = 0x06,
    /// Sequence number of the stored state: how many times it was saved (4 bytes).
    Saves = 0x07,
    /// The deepest the stack has been, in bytes (4 bytes), if the board measures it.
    StackPeak = 0x08,
    /// What a [`Kind::Bench`] count counts ("cycles", "instructions"; ASCII), if supported.
    BenchUnit = 0x09,
    /// The user-presence timeout in milliseconds (4 bytes).
    PresenceTimeout = 0x0A,
}

/// Bits of [`InfoTag::Flags`].
pub mod flags {
    /// The user-presence check is simulated (no button): test-only firmware.
    pub const TEST_PRESENCE: u16 = 1 << 0;
    /// The RNG is a seeded test generator, not a TRNG: test-only firmware.
    pub const TEST_RNG: u16 = 1 << 1;
    /// The card holds a personalisation (a valid stored state).
    pub const PERSONALISED: u16 = 1 << 2;
    /// Stored state was found but could not be restored (another firmware's layout): the card
    /// accepts a new personalisation.
    pub const STATE_UNREADABLE: u16 = 1 << 3;
    /// [`super::Kind::Bench`] is supported.
    pub const BENCH: u16 = 1 << 4;
}

/// Why a frame could not be built.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EncodeError {
    /// The payload is longer than [`MAX_PAYLOAD`].
    PayloadTooLong(usize),
    /// The output buffer is shorter than the frame.
    BufferTooSmall { needed: usize },
}

/// Writes a header and trailer around `len` payload bytes already at `out[HEADER_LEN..]`;
/// returns the frame's length. Lets a reply be built in place.
pub fn seal(kind: u8, seq: u8, len: usize, out: &mut [u8]) -> Result<usize, EncodeError> {
    if len > MAX_PAYLOAD {
        return Err(EncodeError::PayloadTooLong(len));
    }
    let total = HEADER_LEN + len + TRAILER_LEN;
    let Some(frame) = out.get_mut(..total) else {
        return Err(EncodeError::BufferTooSmall { needed: total });
    };
    let len16 = (len as u16).to_be_bytes();
    frame[..6].copy_from_slice(&[SYNC[0], SYNC[1], kind, seq, len16[0], len16[1]]);
    frame[6] = crc8(&frame[..6]);
    let crc = crc32(&frame[..HEADER_LEN + len]);
    frame[HEADER_LEN + len..].copy_from_slice(&crc.to_be_bytes());
    Ok(total)
}

/// Builds a frame carrying `payload` into `out`; returns its length.
pub fn encode(kind: u8, seq: u8, payload: &[u8], out: &mut [u8]) -> Result<usize, EncodeError> {
    if payload.len() > MAX_PAYLOAD {
        return Err(EncodeError::PayloadTooLong(payload.len()));
    }
    let total = HEADER_LEN + payload.len() + TRAILER_LEN;
    let Some(dst) = out.get_mut(HEADER_LEN..HEADER_LEN + payload.len()) else {
        return Err(EncodeError::BufferTooSmall { needed: total });
    };
    dst.copy_from_slice(payload);
    seal(kind, seq, payload.len(), out)
}

/// One frame that passed both checks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Frame<'a> {
    pub kind: u8,
    pub seq: u8,
    pub payload: &'a [u8],
    /// The frame's CRC-32: with `seq`, it identifies a retransmission of the same request.
    pub crc: u32,
}

/// What the receiver found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Event<'a> {
    Frame(Frame<'a>),
    /// A frame with a valid header was rejected; `seq` is from that header. The receiver has
    /// already resumed its search.
    Rejected {
        seq: u8,
        code: ErrorCode,
    },
}

/// The receiving half of the link: feed it bytes with [`Deframer::push`], take frames with
/// [`Deframer::poll`] until it returns `None`.
///
/// Holds at most one frame's worth of bytes ([`MAX_FRAME`]); the search after a rejected
/// candidate runs over those bytes again, so nothing that arrived is ever skipped unseen.
pub struct Deframer {
    buf: [u8; MAX_FRAME],
    start: usize,
    end: usize,
    /// Bytes of the frame last returned by `poll`, dropped at the next call (the frame
    /// borrows them until then).
    taken: usize,
}

impl Default for Deframer {
    fn default() -> Self {
        Self::new()
    }
}

impl Deframer {
    pub const fn new() -> Self {
        Deframer {
            buf: [0; MAX_FRAME],
            start: 0,
            end: 0,
            taken: 0,
        }
    }

    /// Forgets everything buffered (a reset of the link).
    pub fn clear(&mut self) {
        self.start = 0;
        self.end = 0;
        self.taken = 0;
    }

    /// Bytes held that are not yet part of a returned frame.
    pub fn buffered(&self) -> usize {
        self.end - self.start - self.taken
    }

    fn drop_taken(&mut self) {
        self.start += core::mem::take(&mut self.taken);
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        }
    }

    /// Takes as many of `bytes` as fit and returns how many; call [`Deframer::poll`] until it
    /// returns `None`, then push the rest. Always accepts at least one byte after `poll` has
    /// returned `None`.
    pub fn push(&mut self, bytes: &[u8]) -> usize {
        self.drop_taken();
        if self.end + bytes.len() > self.buf.len() && self.start > 0 {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        let n = bytes.len().min(self.buf.len() - self.end);
        self.buf[self.end..self.end + n].copy_from_slice(&bytes[..n]);
        self.end += n;
        n
    }

    /// The next frame or rejection among the bytes pushed so far, or `None` when more bytes
    /// are needed.
    pub fn poll(&mut self) -> Option<Event<'_>> {
        self.drop_taken();
        loop {
            let avail = &self.buf[self.start..self.end];
            // Skip to the first byte that can start a sync.
            let skip = avail
                .iter()
                .position(|&b| b == SYNC[0])
                .unwrap_or(avail.len());
            self.start += skip;
            let avail = &self.buf[self.start..self.end];
            if avail.len() < HEADER_LEN {
                if avail.len() >= 2 && avail[1] != SYNC[1] {
                    self.start += 1;
                    continue;
                }
                if self.start == self.end {
                    self.start = 0;
                    self.end = 0;
                }
                return None;
            }
            if avail[1] != SYNC[1] || crc8(&avail[..6]) != avail[6] {
                self.start += 1;
                continue;
            }
            let seq = avail[3];
            let len = u16::from_be_bytes([avail[4], avail[5]]) as usize;
            if len > MAX_PAYLOAD {
                self.start += 1;
                return Some(Event::Rejected {
                    seq,
                    code: ErrorCode::TooLong,
                });
            }
            let total = HEADER_LEN + len + TRAILER_LEN;
            if avail.len() < total {
                return None;
            }
            let body = HEADER_LEN + len;
            let crc = u32::from_be_bytes([
                avail[body],
                avail[body + 1],
                avail[body + 2],
                avail[body + 3],
            ]);
            if crc32(&avail[..body]) != crc {
                self.start += 1;
                return Some(Event::Rejected {
                    seq,
                    code: ErrorCode::BadCrc,
                });
            }
            self.taken = total;
            let frame = &self.buf[self.start..self.start + total];
            return Some(Event::Frame(Frame {
                kind: frame[2],
                seq,
                payload: &frame[HEADER_LEN..body],
                crc,
            }));
        }
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use proptest::prelude::*;
    use std::vec;
    use std::vec::Vec;

    /// A frame (kind, seq, payload) or a rejection (seq, code).
    type Seen = Result<(u8, u8, Vec<u8>), (u8, ErrorCode)>;

    /// Everything a deframer reports for `input`, fed in pieces of `chunk` bytes.
    fn run(input: &[u8], chunk: usize) -> Vec<Seen> {
        let mut d = Deframer::new();
        let mut out = Vec::new();
        for piece in input.chunks(chunk.max(1)) {
            let mut rest = piece;
            loop {
                let n = d.push(rest);
                rest = &rest[n..];
                while let Some(ev) = d.poll() {
                    out.push(match ev {
                        Event::Frame(f) => Ok((f.kind, f.seq, f.payload.to_vec())),
                        Event::Rejected { seq, code } => Err((seq, code)),
                    });
                }
                if rest.is_empty() {
                    break;
                }
            }
        }
        out
    }

    fn frame(kind: u8, seq: u8, payload: &[u8]) -> Vec<u8> {
        let mut out = [0u8; MAX_FRAME];
        let n = encode(kind, seq, payload, &mut out).unwrap();
        out[..n].to_vec()
    }

    fn frames_only(events: Vec<Seen>) -> Vec<(u8, u8, Vec<u8>)> {
        events.into_iter().filter_map(Result::ok).collect()
    }

    #[test]
    fn a_frame_round_trips_whole_and_byte_by_byte() {
        let f = frame(0x01, 7, &[0xA0, 0xA4, 0, 0, 2, 0x3F, 0x00]);
        assert_eq!(f.len(), HEADER_LEN + 7 + TRAILER_LEN);
        for chunk in [1, 3, f.len()] {
            assert_eq!(
                run(&f, chunk),
                [Ok((0x01, 7, vec![0xA0, 0xA4, 0, 0, 2, 0x3F, 0x00]))]
            );
        }
        assert_eq!(run(&frame(0x02, 0, &[]), 1), [Ok((0x02, 0, vec![]))]);
    }

    #[test]
    fn garbage_before_between_and_after_frames_is_skipped() {
        let a = frame(0x01, 1, b"first");
        let b = frame(0x01, 2, b"second");
        let mut input = b"\x00\xA5\xA5\x5A\x01garbage\xA5".to_vec();
        input.extend_from_slice(&a);
        input.extend_from_slice(&[0xA5, 0x5A, 0xA5]);
        input.extend_from_slice(&b);
        input.extend_from_slice(&[0xA5]);
        let got = frames_only(run(&input, 5));
        assert_eq!(got, [(1, 1, b"first".to_vec()), (1, 2, b"second".to_vec())]);
    }

    #[test]
    fn a_truncated_frame_then_a_preamble_then_a_frame() {
        let cut = frame(0x01, 9, &[0x55; 200]);
        let mut input = cut[..50].to_vec();
        input.extend_from_slice(&[0u8; MAX_FRAME]);
        let next = frame(0x03, 10, &[]);
        input.extend_from_slice(&next);
        let events = run(&input, 64);
        assert_eq!(events.last(), Some(&Ok((0x03, 10, vec![]))));
        assert!(events.contains(&Err((9, ErrorCode::BadCrc))), "{events:?}");
    }

    #[test]
    fn a_truncated_frame_followed_directly_by_a_whole_one_is_recovered() {
        // The cut frame swallows the next one into its payload, fails its CRC, and the search
        // resumes inside the bytes it held: the second frame is found there.
        let cut = frame(0x01, 1, &[0x11; 40]);
        let whole = frame(0x01, 2, b"whole");
        let mut input = cut[..20].to_vec();
        input.extend_from_slice(&whole);
        input.extend_from_slice(&[0u8; 64]);
        let got = frames_only(run(&input, 7));
        assert_eq!(got, [(1, 2, b"whole".to_vec())]);
    }

    #[test]
    fn an_oversized_header_is_rejected_at_once() {
        let mut header = [SYNC[0], SYNC[1], 0x01, 4, 0x01, 0x20, 0];
        header[6] = crc8(&header[..6]);
        let events = run(&header, 1);
        assert_eq!(events, [Err((4, ErrorCode::TooLong))]);
    }

    #[test]
    fn encode_refuses_what_does_not_fit() {
        let mut out = [0u8; 16];
        assert_eq!(
            encode(1, 0, &[0; MAX_PAYLOAD + 1], &mut [0u8; 400]),
            Err(EncodeError::PayloadTooLong(MAX_PAYLOAD + 1))
        );
        assert_eq!(
            encode(1, 0, &[0; 10], &mut out),
            Err(EncodeError::BufferTooSmall { needed: 21 })
        );
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        /// Any input, in any pieces: no panic, and every frame reported passed its checks.
        #[test]
        fn never_panics_and_reports_only_checked_frames(
            input in proptest::collection::vec(any::<u8>(), 0..2000),
            chunk in 1usize..300,
        ) {
            for (kind, seq, payload) in run(&input, chunk).into_iter().flatten() {
                prop_assert!(payload.len() <= MAX_PAYLOAD);
                let f = frame(kind, seq, &payload);
                let found = input.windows(f.len()).any(|w| w == f.as_slice());
                prop_assert!(found, "reported a frame that is not in the input");
            }
        }

        /// Frames separated by arbitrary garbage (and cut frames) are all found, in order, as
        /// long as each garbage run is followed by a preamble.
        #[test]
        fn frames_survive_garbage_and_cuts(
            items in proptest::collection::vec(
                (any::<u8>(), any::<u8>(), proptest::collection::vec(any::<u8>(), 0..MAX_PAYLOAD),
                 proptest::collection::vec(any::<u8>(), 0..40), any::<bool>(), 0usize..300),
                1..6),
            chunk in 1usize..400,
        ) {
            let mut input = Vec::new();
            let mut expected = Vec::new();
            for (kind, seq, payload, garbage, cut_one, cut_at) in items {
                input.extend_from_slice(&garbage);
                if cut_one {
                    let doomed = frame(kind ^ 0x40, seq, &payload);
                    input.extend_from_slice(&doomed[..cut_at.min(doomed.len() - 1)]);
                }
                input.extend_from_slice(&[0u8; MAX_FRAME]);
                input.extend_from_slice(&frame(kind, seq, &payload));
                expected.push((kind, seq, payload));
            }
            let got = frames_only(run(&input, chunk));
            // Garbage may contain a valid frame only with negligible probability; every
            // expected frame must be there, in order.
            let mut it = got.iter();
            for e in &expected {
                prop_assert!(it.any(|g| g == e), "missing {:?}", e);
            }
        }
    }
}
