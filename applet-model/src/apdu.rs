//! ISO 7816-4 command and response APDUs (clause 5.1), short and extended length.
//!
//! Parsing borrows from the caller's buffer and serialising writes into one, so the card side
//! never needs an allocator. Every malformed input is an [`ApduError`], never a panic: the parser
//! is fuzzed (`fuzz/`) and property-tested.

use crate::status::Status;

/// The four ISO 7816-3 command cases: whether a command carries data and whether it expects data.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Case {
    /// No data, no response data.
    One,
    /// No data, response data expected (Le present).
    Two,
    /// Data (Lc present), no response data.
    Three,
    /// Data and response data.
    Four,
}

/// Why a byte string is not a command APDU, or cannot be serialised into the given buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ApduError {
    /// Fewer than the four header bytes CLA INS P1 P2.
    TooShort,
    /// The length fields disagree with the number of bytes present.
    LengthMismatch {
        /// How many bytes the length fields announce in total.
        expected: usize,
        /// How many bytes there are.
        actual: usize,
    },
    /// An extended Lc of 0000, which ISO 7816-4 does not allow.
    ZeroExtendedLc,
    /// Data longer than 65535 bytes, or Ne larger than 65536: no encoding exists.
    TooLong,
    /// The output buffer cannot hold the encoding.
    BufferTooSmall {
        /// Bytes the encoding needs.
        needed: usize,
    },
}

impl core::fmt::Display for ApduError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            ApduError::TooShort => f.write_str("APDU shorter than its 4-byte header"),
            ApduError::LengthMismatch { expected, actual } => write!(
                f,
                "APDU length fields announce {expected} bytes but {actual} are present"
            ),
            ApduError::ZeroExtendedLc => f.write_str("extended Lc of 0000 is not allowed"),
            ApduError::TooLong => f.write_str("APDU data or Ne too long to encode"),
            ApduError::BufferTooSmall { needed } => {
                write!(f, "buffer too small, {needed} bytes needed")
            }
        }
    }
}

/// A command APDU. `ne` is Ne, the maximum number of response bytes expected: `Some(256)` for a
/// short Le of 00, `Some(65536)` for an extended Le of 0000, `None` when Le is absent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Command<'a> {
    pub cla: u8,
    pub ins: u8,
    pub p1: u8,
    pub p2: u8,
    pub data: &'a [u8],
    pub ne: Option<usize>,
    /// Whether the length fields were (or are to be) extended; serialising picks extended anyway
    /// when the lengths need it.
    pub extended: bool,
}

/// The largest Ne a short Le can express.
pub const SHORT_NE_MAX: usize = 256;
/// The largest Ne an extended Le can express.
pub const EXTENDED_NE_MAX: usize = 65536;

impl<'a> Command<'a> {
    /// A command with no data and no Le (case 1); add data and Ne with the builders.
    pub const fn new(cla: u8, ins: u8, p1: u8, p2: u8) -> Self {
        Command {
            cla,
            ins,
            p1,
            p2,
            data: &[],
            ne: None,
            extended: false,
        }
    }

    /// The same command carrying `data`.
    pub const fn with_data(mut self, data: &'a [u8]) -> Self {
        self.data = data;
        self
    }

    /// The same command expecting up to `ne` response bytes.
    pub const fn with_ne(mut self, ne: usize) -> Self {
        self.ne = Some(ne);
        self
    }

    /// Parses one complete command APDU.
    pub fn parse(bytes: &'a [u8]) -> Result<Self, ApduError> {
        let [cla, ins, p1, p2, body @ ..] = bytes else {
            return Err(ApduError::TooShort);
        };
        let mut cmd = Command::new(*cla, *ins, *p1, *p2);
        let mismatch = |expected| ApduError::LengthMismatch {
            expected,
            actual: bytes.len(),
        };
        match body {
            [] => {}
            [le] => cmd.ne = Some(short_ne(*le)),
            [0, rest @ ..] if rest.len() >= 2 => {
                cmd.extended = true;
                let first = u16::from_be_bytes([rest[0], rest[1]]) as usize;
                let rest = &rest[2..];
                if rest.is_empty() {
                    cmd.ne = Some(extended_ne(first));
                } else {
                    if first == 0 {
                        return Err(ApduError::ZeroExtendedLc);
                    }
                    let data = rest.get(..first).ok_or(mismatch(7 + first))?;
                    cmd.data = data;
                    match &rest[first..] {
                        [] => {}
                        [hi, lo] => {
                            cmd.ne = Some(extended_ne(u16::from_be_bytes([*hi, *lo]) as usize))
                        }
                        _ => return Err(mismatch(9 + first)),
                    }
                }
            }
            [0, ..] => return Err(mismatch(7)),
            [lc, rest @ ..] => {
                let lc = *lc as usize;
                let data = rest.get(..lc).ok_or(mismatch(5 + lc))?;
                cmd.data = data;
                match &rest[lc..] {
                    [] => {}
                    [le] => cmd.ne = Some(short_ne(*le)),
                    _ => return Err(mismatch(6 + lc)),
                }
            }
        }
        Ok(cmd)
    }

    /// Which ISO case the command is.
    pub const fn case(&self) -> Case {
        match (self.data.is_empty(), self.ne.is_some()) {
            (true, false) => Case::One,
            (true, true) => Case::Two,
            (false, false) => Case::Three,
            (false, true) => Case::Four,
        }
    }

    /// The Le byte a short encoding carries (0 for Ne = 256), if Ne fits a short Le.
    pub fn short_le(&self) -> Option<u8> {
        match self.ne {
            Some(n) if (1..=SHORT_NE_MAX).contains(&n) => Some(n as u8),
            _ => None,
        }
    }

    fn needs_extended(&self) -> bool {
        self.extended || self.data.len() > 255 || self.ne.is_some_and(|n| n > SHORT_NE_MAX)
    }

    /// The number of bytes [`Command::serialize`] writes.
    pub fn encoded_len(&self) -> Result<usize, ApduError> {
        if self.data.len() > 65535 || self.ne.is_some_and(|n| n == 0 || n > EXTENDED_NE_MAX) {
            return Err(ApduError::TooLong);
        }
        let ext = self.needs_extended();
        let lc = match (self.data.is_empty(), ext) {
            (true, _) => 0,
            (false, false) => 1,
            (false, true) => 3,
        };
        let le = match (self.ne.is_some(), ext, self.data.is_empty()) {
            (false, _, _) => 0,
            (true, false, _) => 1,
            (true, true, true) => 3,
            (true, true, false) => 2,
        };
        Ok(4 + lc + self.data.len() + le)
    }

    /// Writes the command into `out`, returning the length written.
    pub fn serialize(&self, out: &mut [u8]) -> Result<usize, ApduError> {
        let needed = self.encoded_len()?;
        let out = out
            .get_mut(..needed)
            .ok_or(ApduError::BufferTooSmall { needed })?;
        let ext = self.needs_extended();
        out[..4].copy_from_slice(&[self.cla, self.ins, self.p1, self.p2]);
        let mut at = 4;
        if !self.data.is_empty() {
            if ext {
                out[at] = 0;
                out[at + 1..at + 3].copy_from_slice(&(self.data.len() as u16).to_be_bytes());
                at += 3;
            } else {
                out[at] = self.data.len() as u8;
                at += 1;
            }
            out[at..at + self.data.len()].copy_from_slice(self.data);
            at += self.data.len();
        }
        if let Some(ne) = self.ne {
            let le = (ne % EXTENDED_NE_MAX) as u16;
            if !ext {
                out[at] = le as u8;
                at += 1;
            } else {
                if self.data.is_empty() {
                    out[at] = 0;
                    at += 1;
                }
                out[at..at + 2].copy_from_slice(&le.to_be_bytes());
                at += 2;
            }
        }
        Ok(at)
    }
}

const fn short_ne(le: u8) -> usize {
    if le == 0 { SHORT_NE_MAX } else { le as usize }
}

const fn extended_ne(le: usize) -> usize {
    if le == 0 { EXTENDED_NE_MAX } else { le }
}

/// A response APDU: data followed by the status word.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Response<'a> {
    pub data: &'a [u8],
    pub status: Status,
}

impl<'a> Response<'a> {
    /// Splits raw response bytes; `None` when there are fewer than the two status bytes.
    pub fn parse(bytes: &'a [u8]) -> Option<Self> {
        let split = bytes.len().checked_sub(2)?;
        let (data, sw) = bytes.split_at(split);
        Some(Response {
            data,
            status: Status::from_u16(u16::from_be_bytes([sw[0], sw[1]])),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(bytes: &[u8]) -> Command<'_> {
        let cmd = Command::parse(bytes).unwrap();
        let mut out = [0u8; 300];
        let n = cmd.serialize(&mut out).unwrap();
        assert_eq!(&out[..n], bytes);
        cmd
    }

    #[test]
    fn the_four_short_cases() {
        assert_eq!(round_trip(&[0xA0, 0xF2, 0, 0]).case(), Case::One);
        let c2 = round_trip(&[0xA0, 0xC0, 0, 0, 0x0C]);
        assert_eq!((c2.case(), c2.ne), (Case::Two, Some(12)));
        let c3 = round_trip(&[0xA0, 0xA4, 0, 0, 2, 0x3F, 0x00]);
        assert_eq!((c3.case(), c3.data), (Case::Three, &[0x3F, 0x00][..]));
        let c4 = round_trip(&[0x00, 0xA4, 4, 4, 2, 0x3F, 0x00, 0x00]);
        assert_eq!((c4.case(), c4.ne), (Case::Four, Some(256)));
    }

    #[test]
    fn the_extended_cases() {
        let c2 = round_trip(&[0, 0xB0, 0, 0, 0, 0x01, 0x00]);
        assert_eq!(
            (c2.case(), c2.ne, c2.extended),
            (Case::Two, Some(256), true)
        );
        let c2max = round_trip(&[0, 0xB0, 0, 0, 0, 0, 0]);
        assert_eq!(c2max.ne, Some(65536));
        let c3 = round_trip(&[0, 0xD6, 0, 0, 0, 0, 2, 0xAA, 0xBB]);
        assert_eq!((c3.case(), c3.data.len()), (Case::Three, 2));
        let c4 = round_trip(&[0, 0x2A, 0, 0, 0, 0, 1, 0xAA, 0x01, 0x00]);
        assert_eq!((c4.case(), c4.ne), (Case::Four, Some(256)));
    }

    #[test]
    fn long_data_forces_extended_encoding() {
        let data = [0x5A; 300];
        let cmd = Command::new(0, 0xD6, 0, 0).with_data(&data).with_ne(4);
        let mut out = [0u8; 400];
        let n = cmd.serialize(&mut out).unwrap();
        assert_eq!(n, 4 + 3 + 300 + 2);
        assert_eq!(Command::parse(&out[..n]).unwrap().data.len(), 300);
    }

    #[test]
    fn malformed_lengths_are_errors() {
        assert_eq!(Command::parse(&[0, 0xA4, 0]), Err(ApduError::TooShort));
        assert!(matches!(
            Command::parse(&[0, 0xA4, 0, 0, 3, 1, 2]),
            Err(ApduError::LengthMismatch { expected: 8, .. })
        ));
        assert!(Command::parse(&[0, 0xA4, 0, 0, 1, 1, 2, 3]).is_err());
        assert!(Command::parse(&[0, 0xA4, 0, 0, 0, 1]).is_err());
        assert_eq!(
            Command::parse(&[0, 0xA4, 0, 0, 0, 0, 0, 1]),
            Err(ApduError::ZeroExtendedLc)
        );
        let cmd = Command::new(0, 0, 0, 0).with_ne(0);
        assert_eq!(cmd.serialize(&mut [0; 10]), Err(ApduError::TooLong));
        let cmd = Command::new(0, 0, 0, 0).with_data(&[1, 2, 3]);
        assert_eq!(
            cmd.serialize(&mut [0; 5]),
            Err(ApduError::BufferTooSmall { needed: 8 })
        );
    }

    #[test]
    fn responses_split_data_and_status() {
        let r = Response::parse(&[1, 2, 0x90, 0x00]).unwrap();
        assert_eq!((r.data, r.status), (&[1u8, 2][..], Status::Success));
        assert_eq!(Response::parse(&[0x9F]), None);
    }
}
