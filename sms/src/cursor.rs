//! Bounds-checked reading and writing of octets.
//!
//! Every length in a PDU comes from the PDU itself, so every read goes
//! through [`Reader`], which turns running off the end into
//! [`Error::Truncated`] naming the field, and every write goes through
//! [`PduBuf`], a fixed array that needs no allocation.

use crate::Error;

/// Reads fields front to back from a PDU.
pub(crate) struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(bytes: &'a [u8]) -> Self {
        Reader { bytes, pos: 0 }
    }

    pub(crate) fn remaining(&self) -> usize {
        self.bytes.len().saturating_sub(self.pos)
    }

    pub(crate) fn u8(&mut self, field: &'static str) -> Result<u8, Error> {
        let [b] = *self.array::<1>(field)?;
        Ok(b)
    }

    pub(crate) fn take(&mut self, n: usize, field: &'static str) -> Result<&'a [u8], Error> {
        let available = self.remaining();
        let slice = self
            .pos
            .checked_add(n)
            .and_then(|end| self.bytes.get(self.pos..end))
            .ok_or(Error::Truncated {
                field,
                needed: n,
                available,
            })?;
        self.pos += n;
        Ok(slice)
    }

    pub(crate) fn array<const N: usize>(
        &mut self,
        field: &'static str,
    ) -> Result<&'a [u8; N], Error> {
        let slice = self.take(N, field)?;
        // `take` returned exactly N octets.
        slice.try_into().map_err(|_| Error::Truncated {
            field,
            needed: N,
            available: slice.len(),
        })
    }

    /// Succeeds only if every octet was consumed: an SMS TPDU has no
    /// trailing padding, so leftovers mean the fields were misread.
    pub(crate) fn finish(self) -> Result<(), Error> {
        match self.remaining() {
            0 => Ok(()),
            count => Err(Error::TrailingBytes { count }),
        }
    }
}

/// The largest TPDU this crate decodes: a STATUS-REPORT with every optional
/// field and 140 octets of user data (TS 23.040 9.2.2.3). SUBMIT tops out at
/// 164 octets.
pub const MAX_TPDU_LEN: usize = 1 // first octet
    + 1 // TP-MR
    + 12 // TP-RA
    + 7 // TP-SCTS
    + 7 // TP-DT
    + 1 // TP-ST
    + 1 // TP-PI
    + 1 // TP-PID
    + 1 // TP-DCS
    + 1 // TP-UDL
    + 140; // TP-UD

/// The service-centre address prefix: length octet plus up to 11 octets
/// (TS 24.011 8.2.5.1 RP-address).
pub const MAX_SCA_LEN: usize = 12;

/// The largest PDU: service-centre prefix plus the largest TPDU. Encoding
/// writes into a fixed array of this size.
pub const MAX_PDU_LEN: usize = MAX_SCA_LEN + MAX_TPDU_LEN;

/// A PDU under construction, in a fixed array so encoding never allocates.
#[derive(Clone, Copy)]
pub(crate) struct PduBuf {
    bytes: [u8; MAX_PDU_LEN],
    len: usize,
}

impl PduBuf {
    pub(crate) const fn new() -> Self {
        PduBuf {
            bytes: [0; MAX_PDU_LEN],
            len: 0,
        }
    }

    pub(crate) fn push(&mut self, b: u8) -> Result<(), Error> {
        let slot = self
            .bytes
            .get_mut(self.len)
            .ok_or(Error::PduTooLong { max: MAX_PDU_LEN })?;
        *slot = b;
        self.len += 1;
        Ok(())
    }

    pub(crate) fn extend(&mut self, bytes: &[u8]) -> Result<(), Error> {
        let end = self.len + bytes.len();
        let dst = self
            .bytes
            .get_mut(self.len..end)
            .ok_or(Error::PduTooLong { max: MAX_PDU_LEN })?;
        dst.copy_from_slice(bytes);
        self.len = end;
        Ok(())
    }

    pub(crate) fn len(&self) -> usize {
        self.len
    }

    pub(crate) fn as_slice(&self) -> &[u8] {
        // `len` never exceeds the array: push/extend check before growing.
        self.bytes.get(..self.len).unwrap_or(&[])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reader_reports_field_and_counts() {
        let mut r = Reader::new(&[1, 2, 3]);
        assert_eq!(r.u8("a").unwrap(), 1);
        assert_eq!(
            r.take(5, "user data"),
            Err(Error::Truncated {
                field: "user data",
                needed: 5,
                available: 2
            })
        );
        assert_eq!(r.array::<2>("b").unwrap(), &[2, 3]);
        assert!(r.finish().is_ok());
        let mut r = Reader::new(&[1, 2]);
        r.u8("a").unwrap();
        assert_eq!(r.finish(), Err(Error::TrailingBytes { count: 1 }));
    }

    #[test]
    fn buffer_refuses_overflow() {
        let mut b = PduBuf::new();
        assert!(b.extend(&[0; MAX_PDU_LEN]).is_ok());
        assert_eq!(b.push(0), Err(Error::PduTooLong { max: MAX_PDU_LEN }));
        assert_eq!(b.len(), MAX_PDU_LEN);
    }
}
