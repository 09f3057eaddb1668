//! Packing septets into octets (TS 23.038 6.1.2.1.1).
//!
//! Septets are laid out least significant bit first across octet
//! boundaries. When a user-data header precedes GSM-7 text, the text must
//! start on a septet boundary counted from the start of the user data, so
//! 0–6 fill bits follow the header (TS 23.040 9.2.3.24); that is the
//! `fill_bits` / `start_bit` below.

use crate::Error;
use crate::cursor::PduBuf;

/// Septets needed to hold `octets` octets plus the fill bits that round
/// them up to a septet boundary.
pub const fn septets_for_octets(octets: usize) -> usize {
    (octets * 8).div_ceil(7)
}

/// Octets needed to hold `septets` packed septets.
pub const fn octets_for_septets(septets: usize) -> usize {
    (septets * 7).div_ceil(8)
}

/// Fill bits between a header of `header_octets` octets and the first septet.
pub const fn fill_bits(header_octets: usize) -> usize {
    septets_for_octets(header_octets) * 7 - header_octets * 8
}

/// Streams septets into a [`PduBuf`] without an intermediate buffer.
pub(crate) struct Packer<'a> {
    out: &'a mut PduBuf,
    acc: u32,
    bits: u32,
}

impl<'a> Packer<'a> {
    /// Starts packing after `fill_bits` zero bits.
    pub(crate) fn new(out: &'a mut PduBuf, fill_bits: usize) -> Self {
        Packer {
            out,
            acc: 0,
            // At most 6: `fill_bits` comes from `fill_bits()` above.
            bits: u32::try_from(fill_bits % 7).unwrap_or(0),
        }
    }

    pub(crate) fn push(&mut self, septet: u8) -> Result<(), Error> {
        self.acc |= u32::from(septet & 0x7F) << self.bits;
        self.bits += 7;
        if self.bits >= 8 {
            self.out.push(self.acc.to_le_bytes()[0])?;
            self.acc >>= 8;
            self.bits -= 8;
        }
        Ok(())
    }

    /// Flushes the last partial octet; its spare high bits stay zero.
    pub(crate) fn finish(self) -> Result<(), Error> {
        if self.bits > 0 {
            self.out.push(self.acc.to_le_bytes()[0])?;
        }
        Ok(())
    }
}

/// Septets per group of seven octets.
const GROUP_SEPTETS: usize = 8;
const GROUP_BITS: usize = GROUP_SEPTETS * 7;

/// Reads `count` septets starting `start_bit` bits into `octets`.
///
/// Missing octets read as zero; callers check the length against TP-UDL
/// first so that a short PDU is reported as truncated, not as `@` signs.
pub fn unpack(octets: &[u8], start_bit: usize, count: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(count);
    let mut bit = start_bit;
    // Eight septets at a time from one 64-bit load: after shifting out up
    // to 7 bits of misalignment, 57 bits remain for the 56 needed.
    while out.len() + GROUP_SEPTETS <= count {
        let mut window = [0u8; 8];
        let from = octets.get(bit / 8..).unwrap_or(&[]);
        let n = from.len().min(window.len());
        if let (Some(dst), Some(src)) = (window.get_mut(..n), from.get(..n)) {
            dst.copy_from_slice(src);
        }
        let mut bits = u64::from_le_bytes(window) >> (bit % 8);
        for _ in 0..GROUP_SEPTETS {
            out.push((bits & 0x7F).to_le_bytes()[0]);
            bits >>= 7;
        }
        bit += GROUP_BITS;
    }
    while out.len() < count {
        let lo = u16::from(octets.get(bit / 8).copied().unwrap_or(0));
        let hi = u16::from(octets.get(bit / 8 + 1).copied().unwrap_or(0));
        out.push((((lo | (hi << 8)) >> (bit % 8)) & 0x7F).to_le_bytes()[0]);
        bit += 7;
    }
    out
}

/// Packs septets into octets starting `fill_bits` bits into the first octet.
pub fn pack(septets: &[u8], fill_bits: usize) -> Vec<u8> {
    let mut buf = PduBuf::new();
    let mut packer = Packer::new(&mut buf, fill_bits);
    for &s in septets {
        // Only overflows past MAX_PDU_LEN; callers bound the input.
        if packer.push(s).is_err() {
            break;
        }
    }
    let _ = packer.finish();
    buf.as_slice().to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hello_world_from_reference() {
        // "Hello World!" from REFERENCE.md's SUBMIT example.
        let septets = crate::gsm7::encode("Hello World!").unwrap();
        let packed = pack(&septets, 0);
        assert_eq!(crate::hex::encode_upper(&packed), "C8329BFD065DDF72363904");
        assert_eq!(unpack(&packed, 0, 12), septets);
    }

    #[test]
    fn header_arithmetic() {
        // 8-bit concatenation header: 6 octets, 7 septets, 1 fill bit.
        assert_eq!(septets_for_octets(6), 7);
        assert_eq!(fill_bits(6), 1);
        // 16-bit: 7 octets, exactly 8 septets, no fill.
        assert_eq!(septets_for_octets(7), 8);
        assert_eq!(fill_bits(7), 0);
        assert_eq!(fill_bits(0), 0);
        assert_eq!(octets_for_septets(160), 140);
    }

    #[test]
    fn unpack_matches_bit_by_bit_reading() {
        let octets: Vec<u8> = (0..40u8).map(|i| i.wrapping_mul(37) ^ 0xA5).collect();
        for start in 0..16 {
            for count in [0, 1, 7, 8, 9, 17, 33] {
                let expected: Vec<u8> = (0..count)
                    .map(|i| {
                        (0..7).fold(0u8, |acc, b| {
                            let bit = start + i * 7 + b;
                            let set = octets.get(bit / 8).is_some_and(|o| o >> (bit % 8) & 1 == 1);
                            acc | u8::from(set) << b
                        })
                    })
                    .collect();
                assert_eq!(unpack(&octets, start, count), expected, "{start}/{count}");
            }
        }
        // Reading past the end yields zeros rather than panicking.
        assert_eq!(unpack(&[0xFF], 0, 9), [0x7F, 0x01, 0, 0, 0, 0, 0, 0, 0]);
    }

    #[test]
    fn fill_bits_shift_the_text() {
        let septets = [0x7F, 0x01, 0x55];
        for fill in 0..7 {
            let packed = pack(&septets, fill);
            assert_eq!(unpack(&packed, fill, 3), septets, "fill {fill}");
            // Fill bits are zero.
            assert_eq!(packed[0] & ((1 << fill) - 1), 0);
        }
    }
}
