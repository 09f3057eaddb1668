//! The card's persistent state as one byte string, so a host (`emulate card --state`) or a
//! microcontroller can keep PIN counters, keys, the SQN window and file contents across power
//! cycles.
//!
//! The layout is versioned and ends in a CRC-32: a torn or foreign file is refused as a whole
//! rather than half-applied. It holds the card's secrets, exactly as a card's EEPROM does, so
//! whoever stores it must protect it like the card itself.
//!
//! Versions (golden files of each in `fixtures/state/`):
//!
//! - 3: magic, version, card type, keys, PIN/PUK/ADM values and counters, SQN window, the
//!   arena in its per-card-type layout, the deactivated-file bitmap, the token, CRC-32.
//! - 2: the same without card type and bitmap, and one arena of 33 files for every card type.
//!   Loaded by migration: each file's bytes move to the file with the same path in today's
//!   layout (dialling-number and SMS-parameter records keep their alpha identifier and their
//!   fixed tail apart, as the record length changed); files the card type no longer has are
//!   dropped, and the service tables, EF_DIR and EF_ARR are today's factory ones, since the
//!   old ones described files version 2 did not have.
//!
//! A version newer than this code knows is refused whole, never read in part.

use crate::card::DEACTIVATED_LEN;
use crate::card_type::CardType;
use crate::fs::{self, ARENA_SIZE, Arena, Kind};

/// Identifies a simlab card state.
pub const MAGIC: [u8; 4] = *b"SLST";
/// The layout version this code writes; it reads this one and every older one.
pub const VERSION: u8 = 3;

const PIN_BLOCK: usize = 8 + 1 + 8 + 1 + 1;
const SQN_BLOCK: usize = 8 + 32 * 6;

/// Keys, PIN blocks, ADM and SQN window: the part of the layout every version shares.
const SECRETS: usize = 1 + 16 + 1 + 16 + 2 * PIN_BLOCK + 8 + 1 + SQN_BLOCK;

/// The exact length of a saved state.
pub const STATE_LEN: usize =
    4 + 1 + 1 + SECRETS + ARENA_SIZE + DEACTIVATED_LEN + crate::token::STATE_LEN + 4;

/// The file table of format version 2, in its arena order: path from the MF, structure, and
/// for record files the length of the fixed tail after the alpha identifier (0: none).
const V2_FILES: [(&[u16], Kind, u8); 28] = [
    (&[0x2FE2], Kind::Transparent { size: 10 }, 0),
    (
        &[0x2F00],
        Kind::LinearFixed {
            len: 32,
            records: 2,
        },
        0,
    ),
    (
        &[0x2F06],
        Kind::LinearFixed {
            len: 24,
            records: 6,
        },
        0,
    ),
    (
        &[0x7F10, 0x6F40],
        Kind::LinearFixed {
            len: 26,
            records: 2,
        },
        14,
    ),
    (
        &[0x7F10, 0x6F42],
        Kind::LinearFixed {
            len: 40,
            records: 2,
        },
        28,
    ),
    (
        &[0x7F10, 0x6F3C],
        Kind::LinearFixed {
            len: 176,
            records: 5,
        },
        0,
    ),
    (&[0x7F20, 0x6F07], Kind::Transparent { size: 9 }, 0),
    (&[0x7F20, 0x6F20], Kind::Transparent { size: 9 }, 0),
    (&[0x7F20, 0x6F30], Kind::Transparent { size: 24 }, 0),
    (&[0x7F20, 0x6F31], Kind::Transparent { size: 1 }, 0),
    (&[0x7F20, 0x6F38], Kind::Transparent { size: 10 }, 0),
    (&[0x7F20, 0x6F46], Kind::Transparent { size: 17 }, 0),
    (&[0x7F20, 0x6F78], Kind::Transparent { size: 2 }, 0),
    (&[0x7F20, 0x6F7B], Kind::Transparent { size: 12 }, 0),
    (&[0x7F20, 0x6F7E], Kind::Transparent { size: 11 }, 0),
    (&[0x7F20, 0x6FAD], Kind::Transparent { size: 4 }, 0),
    (&[0x7FF0, 0x6F38], Kind::Transparent { size: 8 }, 0),
    (&[0x7FF0, 0x6F08], Kind::Transparent { size: 33 }, 0),
    (&[0x7FF0, 0x6F09], Kind::Transparent { size: 33 }, 0),
    (&[0x7FF0, 0x6F56], Kind::Transparent { size: 1 }, 0),
    (&[0x7FF0, 0x6F73], Kind::Transparent { size: 14 }, 0),
    (&[0x7FF0, 0x6F60], Kind::Transparent { size: 40 }, 0),
    (&[0x7FF0, 0x6F05], Kind::Transparent { size: 2 }, 0),
    // Vendor key files: their bytes were never the keys (those are in the secrets part).
    (&[0x7F20, 0x00FF], Kind::Transparent { size: 16 }, 0),
    (&[0x7F20, 0x00F7], Kind::Transparent { size: 17 }, 0),
    (&[0xA515, 0x6F20], Kind::Transparent { size: 33 }, 0),
    (&[0x7FF0, 0xAF20], Kind::Transparent { size: 33 }, 0),
    (&[0xA515, 0x6F01], Kind::Transparent { size: 16 }, 0),
];

/// Bytes of the version 2 arena.
pub const V2_ARENA_SIZE: usize = {
    let mut n = 0;
    let mut i = 0;
    while i < V2_FILES.len() {
        n += V2_FILES[i].1.size();
        i += 1;
    }
    n
};

/// The exact length of a version 2 state.
pub const V2_STATE_LEN: usize = 4 + 1 + SECRETS + V2_ARENA_SIZE + crate::token::STATE_LEN + 4;

// The firmware loads any stored version into a buffer of today's size.
const _: () = assert!(V2_STATE_LEN <= STATE_LEN);

/// Moves a version 2 arena's files into `arena` (already holding the card type's factory
/// contents), by path.
pub(crate) fn migrate_v2_arena(old: &[u8; V2_ARENA_SIZE], arena: &mut Arena, t: CardType) {
    let mut at = 0;
    for (path, kind, tail) in V2_FILES {
        let src = &old[at..at + kind.size()];
        at += kind.size();
        let Some(file) = fs::resolve_path(path) else {
            continue;
        };
        let def = fs::def(file);
        let skip = def.is_none_or(|d| d.key_file)
            || matches!(
                file,
                fs::idx::EF_SST | fs::idx::EF_UST | fs::idx::EF_DIR | fs::idx::EF_ARR
            );
        if skip || !fs::present(t, file) {
            continue;
        }
        let Some(new_kind) = fs::kind(t, file) else {
            continue;
        };
        let dst = arena.content_mut(file);
        match (kind.records(), new_kind.records()) {
            (Some((old_len, old_n)), Some((new_len, new_n))) => {
                let (old_len, new_len, tail) = (old_len as usize, new_len as usize, tail as usize);
                for r in 0..old_n.min(new_n) as usize {
                    let from = &src[r * old_len..(r + 1) * old_len];
                    let to = &mut dst[r * new_len..(r + 1) * new_len];
                    to.fill(0xFF);
                    if tail > 0 && old_len >= tail && new_len >= tail {
                        // Alpha identifier first, fixed part last (TS 31.102 4.2.26/27).
                        let alpha = (old_len - tail).min(new_len - tail);
                        to[..alpha].copy_from_slice(&from[..alpha]);
                        to[new_len - tail..].copy_from_slice(&from[old_len - tail..]);
                    } else {
                        let n = old_len.min(new_len);
                        to[..n].copy_from_slice(&from[..n]);
                    }
                }
            }
            (None, None) => {
                let n = src.len().min(dst.len());
                dst[..n].copy_from_slice(&src[..n]);
            }
            _ => {}
        }
    }
}

/// Why saved state cannot be restored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StateError {
    /// Not [`STATE_LEN`] bytes.
    BadLength { expected: usize, actual: usize },
    /// Not a simlab card state.
    BadMagic,
    /// Written by a layout version this code does not read: a newer one (never half-loaded)
    /// or one older than any it migrates.
    UnsupportedVersion(u8),
    /// Saved by a card of another type than the one it is loaded into.
    WrongCardType {
        saved: &'static str,
        card: &'static str,
    },
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
            StateError::UnsupportedVersion(v) if *v > VERSION => write!(
                f,
                "card state format version {v} is newer than this simlab knows (up to \
                 {VERSION}); use a newer simlab, nothing was loaded"
            ),
            StateError::UnsupportedVersion(v) => {
                write!(f, "card state format version {v} is not supported")
            }
            StateError::WrongCardType { saved, card } => write!(
                f,
                "card state was saved by a {saved} card, not a {card}; nothing was loaded"
            ),
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
