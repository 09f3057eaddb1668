//! The checksums of simlab's byte formats, in one place: the card state (CRC-32), and the
//! firmware link's frame header (CRC-8) and body (CRC-32). Bitwise: they run over a few hundred
//! bytes per frame or a few KiB per save, and lookup tables would cost 1.25 KiB of flash on a
//! microcontroller.

/// CRC-8 with polynomial 0x07 (CRC-8/SMBUS: init 0, no reflection): guards a frame header, so
/// a false start in garbage is rejected after 7 bytes instead of after a whole frame.
pub fn crc8(bytes: &[u8]) -> u8 {
    let mut crc = 0u8;
    for &b in bytes {
        crc ^= b;
        for _ in 0..8 {
            crc = if crc & 0x80 != 0 {
                (crc << 1) ^ 0x07
            } else {
                crc << 1
            };
        }
    }
    crc
}

/// CRC-32 (IEEE 802.3, reflected, as zlib), incremental: a stored state is checked while it is
/// read back from flash in small pieces.
#[derive(Clone, Copy, Debug)]
pub struct Crc32(u32);

impl Crc32 {
    pub const fn new() -> Self {
        Crc32(!0)
    }

    pub fn update(&mut self, bytes: &[u8]) {
        let mut crc = self.0;
        for &b in bytes {
            crc ^= b as u32;
            for _ in 0..8 {
                crc = (crc >> 1) ^ (0xEDB8_8320 & (crc & 1).wrapping_neg());
            }
        }
        self.0 = crc;
    }

    pub const fn finish(self) -> u32 {
        !self.0
    }
}

impl Default for Crc32 {
    fn default() -> Self {
        Self::new()
    }
}

/// CRC-32 of one slice.
pub fn crc32(bytes: &[u8]) -> u32 {
    let mut c = Crc32::new();
    c.update(bytes);
    c.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn check_values() {
        // The catalogue check values of both CRCs ("123456789").
        assert_eq!(crc8(b"123456789"), 0xF4);
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
        let mut c = Crc32::new();
        c.update(b"1234");
        c.update(b"56789");
        assert_eq!(c.finish(), 0xCBF4_3926);
    }
}
