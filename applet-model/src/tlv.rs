//! A tiny BER-TLV / LV writer over a caller's buffer, for FCP templates and AUTHENTICATE
//! responses. Writes past the end are dropped and remembered, never a panic; every template
//! this card builds is far below the 256-byte response limit, which the tests check.

/// Appends bytes to a fixed buffer.
pub struct Writer<'a> {
    buf: &'a mut [u8],
    len: usize,
    overflow: bool,
}

/// Where an open constructed TLV's length byte sits.
pub struct Open(usize);

impl<'a> Writer<'a> {
    pub fn new(buf: &'a mut [u8]) -> Self {
        Writer {
            buf,
            len: 0,
            overflow: false,
        }
    }

    /// Bytes written so far.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether a write did not fit.
    #[cfg(test)]
    pub fn overflowed(&self) -> bool {
        self.overflow
    }

    pub fn byte(&mut self, b: u8) {
        match self.buf.get_mut(self.len) {
            Some(slot) => {
                *slot = b;
                self.len += 1;
            }
            None => self.overflow = true,
        }
    }

    pub fn bytes(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.byte(b);
        }
    }

    /// A length-value pair with a one-byte length (values are at most 255 bytes here).
    pub fn lv(&mut self, value: &[u8]) {
        self.byte(value.len() as u8);
        self.bytes(value);
    }

    /// A primitive TLV with a one-byte tag; lengths of 128 and more use the 81 form.
    pub fn tlv(&mut self, tag: u8, value: &[u8]) {
        self.byte(tag);
        if value.len() >= 0x80 {
            self.byte(0x81);
        }
        self.lv(value);
    }

    /// Starts a constructed TLV whose content must stay under 128 bytes.
    pub fn open(&mut self, tag: u8) -> Open {
        self.byte(tag);
        let at = self.len;
        self.byte(0);
        Open(at)
    }

    /// Patches the length of a constructed TLV opened with [`Writer::open`].
    pub fn close(&mut self, open: Open) {
        let content = self.len.saturating_sub(open.0 + 1);
        match (self.buf.get_mut(open.0), u8::try_from(content)) {
            (Some(slot), Ok(n)) if n < 0x80 => *slot = n,
            _ => self.overflow = true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Writer;

    #[test]
    fn writes_past_the_end_are_dropped_and_remembered() {
        let mut buf = [0u8; 4];
        let mut w = Writer::new(&mut buf);
        let open = w.open(0x62);
        w.tlv(0x83, &[0x3F, 0x00]);
        w.close(open);
        assert!(w.overflowed());
        assert_eq!(w.len(), 4);
    }

    #[test]
    fn nested_lengths_are_patched() {
        let mut buf = [0u8; 16];
        let mut w = Writer::new(&mut buf);
        let open = w.open(0x62);
        w.tlv(0x83, &[0x3F, 0x00]);
        w.close(open);
        let n = w.len();
        assert!(!w.overflowed());
        assert_eq!(&buf[..n], &[0x62, 0x04, 0x83, 0x02, 0x3F, 0x00]);
    }
}
