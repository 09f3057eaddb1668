//! enc(): the byte form of everything seed 001 signs. Each field is a 2-byte big-endian length
//! then its bytes, the first field an ASCII label naming the structure and its version (as
//! seed 000's invoice). Decoding is strict: exactly the expected fields, nothing after, so that
//! `decode(b)?.encode() == b` and one set of bytes has one meaning.

/// Why signed bytes could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// The bytes end inside a length or a field.
    #[error("truncated at {0}")]
    Truncated(&'static str),
    /// The first field is not the label expected.
    #[error("not a {expected} (label {found:?})")]
    WrongLabel {
        expected: &'static str,
        found: String,
    },
    /// Bytes remain after the last field.
    #[error("{0} bytes after the last field")]
    Trailing(usize),
    /// A field has the wrong size or content.
    #[error("{field}: {reason}")]
    Field { field: &'static str, reason: String },
}

/// Writes `fields` as enc(). Fields longer than 65 535 bytes cannot be written: callers bound
/// every field long before that (see each structure's validation).
pub fn enc(fields: &[&[u8]]) -> Vec<u8> {
    let mut out = Vec::with_capacity(fields.iter().map(|f| f.len() + 2).sum());
    for f in fields {
        debug_assert!(f.len() <= u16::MAX as usize);
        out.extend_from_slice(&(f.len().min(u16::MAX as usize) as u16).to_be_bytes());
        out.extend_from_slice(&f[..f.len().min(u16::MAX as usize)]);
    }
    out
}

/// Reads enc() fields one by one.
pub struct Reader<'a> {
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    /// Starts reading `bytes`, whose first field must be `label`.
    pub fn new(bytes: &'a [u8], label: &'static str) -> Result<Reader<'a>, WireError> {
        let mut r = Reader { rest: bytes };
        let found = r.field("label")?;
        if found != label.as_bytes() {
            return Err(WireError::WrongLabel {
                expected: label,
                found: String::from_utf8_lossy(found).into_owned(),
            });
        }
        Ok(r)
    }

    /// The next field's bytes.
    pub fn field(&mut self, name: &'static str) -> Result<&'a [u8], WireError> {
        let (len, tail) = self
            .rest
            .split_first_chunk::<2>()
            .ok_or(WireError::Truncated(name))?;
        let len = u16::from_be_bytes(*len) as usize;
        if tail.len() < len {
            return Err(WireError::Truncated(name));
        }
        let (field, rest) = tail.split_at(len);
        self.rest = rest;
        Ok(field)
    }

    /// The next field as UTF-8 text.
    pub fn text(&mut self, name: &'static str) -> Result<&'a str, WireError> {
        let f = self.field(name)?;
        std::str::from_utf8(f).map_err(|_| WireError::Field {
            field: name,
            reason: "not UTF-8".into(),
        })
    }

    /// The next field as exactly `N` bytes.
    pub fn fixed<const N: usize>(&mut self, name: &'static str) -> Result<[u8; N], WireError> {
        let f = self.field(name)?;
        f.try_into().map_err(|_| WireError::Field {
            field: name,
            reason: format!("{} bytes, expected {N}", f.len()),
        })
    }

    /// The next field as a big-endian u64 (8 bytes).
    pub fn u64(&mut self, name: &'static str) -> Result<u64, WireError> {
        Ok(u64::from_be_bytes(self.fixed::<8>(name)?))
    }

    /// Ends reading: nothing may follow.
    pub fn finish(self) -> Result<(), WireError> {
        if self.rest.is_empty() {
            Ok(())
        } else {
            Err(WireError::Trailing(self.rest.len()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_refusals() {
        let b = enc(&[b"lbl", b"", b"abc", &7u64.to_be_bytes()]);
        assert_eq!(&b[..5], b"\x00\x03lbl");
        let mut r = Reader::new(&b, "lbl").unwrap();
        assert_eq!(r.field("a").unwrap(), b"");
        assert_eq!(r.text("b").unwrap(), "abc");
        assert_eq!(r.u64("c").unwrap(), 7);
        r.finish().unwrap();
        assert!(matches!(
            Reader::new(&b, "other"),
            Err(WireError::WrongLabel { .. })
        ));
        for n in 0..b.len() {
            let mut r = match Reader::new(&b[..n], "lbl") {
                Ok(r) => r,
                Err(e) => {
                    assert!(matches!(e, WireError::Truncated(_)));
                    continue;
                }
            };
            let all = r
                .field("a")
                .and_then(|_| r.text("b"))
                .and_then(|_| r.u64("c"));
            assert!(all.is_err(), "{n}");
        }
        let mut long = b.clone();
        long.push(0);
        let mut r = Reader::new(&long, "lbl").unwrap();
        r.field("a").unwrap();
        r.text("b").unwrap();
        r.u64("c").unwrap();
        assert_eq!(r.finish(), Err(WireError::Trailing(1)));
    }
}
