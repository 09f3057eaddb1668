//! The card's persistent state as one byte string, so a host (`emulate card --state`) or a
//! microcontroller can keep PIN counters, keys, the SQN window and file contents across power
//! cycles.
//!
//! The layout is versioned and ends in a CRC-32: a torn or foreign file is refused as a whole
//! rather than half-applied. It holds the card's secrets, exactly as a card's EEPROM does, so
//! whoever stores it must protect it like the card itself.

use crate::fs::ARENA_SIZE;

/// Identifies a simlab card state.
pub const MAGIC: [u8; 4] = *b"SLST";
/// The layout version this code writes and reads.
pub const VERSION: u8 = 2;

const PIN_BLOCK: usize = 8 + 1 + 8 + 1 + 1;
const SQN_BLOCK: usize = 8 + 32 * 6;

/// The exact length of a saved state.
pub const STATE_LEN: usize = 4
    + 1
    + 1
    + 16
    + 1
    + 16
    + 2 * PIN_BLOCK
    + 8
    + 1
    + SQN_BLOCK
    + ARENA_SIZE
    + crate::token::STATE_LEN
    + 4;

/// Why saved state cannot be restored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StateError {
    /// Not [`STATE_LEN`] bytes.
    BadLength { expected: usize, actual: usize },
    /// Not a simlab card state.
    BadMagic,
    /// Written by another layout version.
    UnsupportedVersion(u8),
    /// The CRC does not match: a torn write or a corrupted file.
    BadChecksum,
    /// A field holds a value no card could have (unknown algorithm, …).
    BadValue(&'static str),
}

impl core::fmt::Display for StateError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            StateError::BadLength { expected, actual } => {
                write!(f, "card state is {actual} bytes, expected {expected}")
            }
            StateError::BadMagic => f.write_str("not a simlab card state"),
            StateError::UnsupportedVersion(v) => {
                write!(f, "card state version {v} is not supported")
            }
            StateError::BadChecksum => {
                f.write_str("card state checksum mismatch (torn or corrupted)")
            }
            StateError::BadValue(what) => write!(f, "card state has an invalid {what}"),
        }
    }
}

pub use crate::checksum::crc32;

/// Sequential writer over the caller's buffer (sized by [`STATE_LEN`]).
pub(crate) struct Put<'a> {
    pub buf: &'a mut [u8],
    pub at: usize,
}

impl Put<'_> {
    pub fn bytes(&mut self, b: &[u8]) {
        if let Some(dst) = self.buf.get_mut(self.at..self.at + b.len()) {
            dst.copy_from_slice(b);
        }
        self.at += b.len();
    }

    pub fn byte(&mut self, b: u8) {
        self.bytes(&[b]);
    }
}

/// Sequential reader; the length was checked up front, so reads never run short.
pub(crate) struct Get<'a> {
    pub buf: &'a [u8],
    pub at: usize,
}

impl Get<'_> {
    pub fn array<const N: usize>(&mut self) -> [u8; N] {
        let mut out = [0u8; N];
        if let Some(src) = self.buf.get(self.at..self.at + N) {
            out.copy_from_slice(src);
        }
        self.at += N;
        out
    }

    pub fn byte(&mut self) -> u8 {
        self.array::<1>()[0]
    }
}
