//! Just enough ASN.1 DER (X.690) for the certificates and restrictions of seed 000: a writer
//! that builds TLVs from parts, a strict reader that refuses anything not in distinguished
//! form, PEM armour (RFC 7468), and the UTCTime/GeneralizedTime conversions X.509 needs.
//!
//! Hand-written because the structures are few and fixed (docs/pki-messages.md shows each one),
//! and because issuing is then exactly what the documentation says, byte for byte.

use std::fmt;

/// Universal tags used here.
pub mod tag {
    pub const BOOLEAN: u8 = 0x01;
    pub const INTEGER: u8 = 0x02;
    pub const BIT_STRING: u8 = 0x03;
    pub const OCTET_STRING: u8 = 0x04;
    pub const NULL: u8 = 0x05;
    pub const OID: u8 = 0x06;
    pub const UTF8_STRING: u8 = 0x0C;
    pub const PRINTABLE_STRING: u8 = 0x13;
    pub const IA5_STRING: u8 = 0x16;
    pub const UTC_TIME: u8 = 0x17;
    pub const GENERALIZED_TIME: u8 = 0x18;
    pub const SEQUENCE: u8 = 0x30;
    pub const SET: u8 = 0x31;

    /// `[n]` constructed, context-specific (EXPLICIT tagging).
    pub const fn explicit(n: u8) -> u8 {
        0xA0 | n
    }

    /// `[n]` primitive, context-specific (IMPLICIT tagging of a primitive type).
    pub const fn implicit(n: u8) -> u8 {
        0x80 | n
    }
}

/// Why DER could not be read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DerError(pub String);

impl fmt::Display for DerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DER: {}", self.0)
    }
}

impl std::error::Error for DerError {}

fn err<T>(reason: impl Into<String>) -> Result<T, DerError> {
    Err(DerError(reason.into()))
}

// ---------------------------------------------------------------------------------------------
// Writing

/// One TLV with a definite, minimal length.
pub fn tlv(tag: u8, content: &[u8]) -> Vec<u8> {
    let len = content.len();
    let mut out = Vec::with_capacity(len + 5);
    out.push(tag);
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes = (len as u32).to_be_bytes();
        let skip = bytes.iter().take_while(|&&b| b == 0).count();
        out.push(0x80 | (4 - skip) as u8);
        out.extend_from_slice(&bytes[skip..]);
    }
    out.extend_from_slice(content);
    out
}

/// A SEQUENCE of already encoded parts.
pub fn seq(parts: &[&[u8]]) -> Vec<u8> {
    tlv(tag::SEQUENCE, &parts.concat())
}

/// A SET of already encoded parts, sorted as DER requires for SET OF.
pub fn set(parts: &[&[u8]]) -> Vec<u8> {
    let mut sorted = parts.to_vec();
    sorted.sort();
    tlv(tag::SET, &sorted.concat())
}

/// A non-negative INTEGER from big-endian magnitude bytes (leading zeros removed, a zero byte
/// added when the top bit is set).
pub fn uint(magnitude: &[u8]) -> Vec<u8> {
    let start = magnitude
        .iter()
        .position(|&b| b != 0)
        .unwrap_or(magnitude.len().saturating_sub(1));
    let trimmed = magnitude.get(start..).unwrap_or(&[0]);
    let trimmed = if trimmed.is_empty() {
        &[0][..]
    } else {
        trimmed
    };
    if trimmed[0] & 0x80 != 0 {
        tlv(tag::INTEGER, &[&[0u8][..], trimmed].concat())
    } else {
        tlv(tag::INTEGER, trimmed)
    }
}

/// A non-negative INTEGER.
pub fn u64_int(n: u64) -> Vec<u8> {
    uint(&n.to_be_bytes())
}

pub fn boolean(b: bool) -> Vec<u8> {
    tlv(tag::BOOLEAN, &[if b { 0xFF } else { 0x00 }])
}

/// An OBJECT IDENTIFIER from its encoded content bytes (see [`oid_content`]).
pub fn oid(content: &[u8]) -> Vec<u8> {
    tlv(tag::OID, content)
}

/// The content bytes of an OID from its arcs (first two combined, base-128 for the rest).
pub fn oid_content(arcs: &[u64]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut push = |mut v: u64| {
        let mut tmp = vec![(v & 0x7F) as u8];
        v >>= 7;
        while v > 0 {
            tmp.push(0x80 | (v & 0x7F) as u8);
            v >>= 7;
        }
        tmp.reverse();
        out.extend_from_slice(&tmp);
    };
    if arcs.len() >= 2 {
        push(arcs[0] * 40 + arcs[1]);
        for &a in &arcs[2..] {
            push(a);
        }
    }
    out
}

pub fn utf8(s: &str) -> Vec<u8> {
    tlv(tag::UTF8_STRING, s.as_bytes())
}

pub fn printable(s: &str) -> Vec<u8> {
    tlv(tag::PRINTABLE_STRING, s.as_bytes())
}

pub fn octets(b: &[u8]) -> Vec<u8> {
    tlv(tag::OCTET_STRING, b)
}

/// A BIT STRING of whole bytes (no unused bits).
pub fn bits(b: &[u8]) -> Vec<u8> {
    tlv(tag::BIT_STRING, &[&[0u8][..], b].concat())
}

/// `[n] EXPLICIT` around an encoded value.
pub fn explicit(n: u8, inner: &[u8]) -> Vec<u8> {
    tlv(tag::explicit(n), inner)
}

/// An X.509 Time (RFC 5280 4.1.2.5): UTCTime through 2049, GeneralizedTime from 2050.
pub fn time(unix: u64) -> Vec<u8> {
    let (y, mo, d, h, mi, s) = civil(unix);
    if (1950..2050).contains(&y) {
        tlv(
            tag::UTC_TIME,
            format!("{:02}{mo:02}{d:02}{h:02}{mi:02}{s:02}Z", y % 100).as_bytes(),
        )
    } else {
        tlv(
            tag::GENERALIZED_TIME,
            format!("{y:04}{mo:02}{d:02}{h:02}{mi:02}{s:02}Z").as_bytes(),
        )
    }
}

// ---------------------------------------------------------------------------------------------
// Reading

/// One TLV as read: its tag, its content, and the whole encoding (for signatures over it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tlv<'a> {
    pub tag: u8,
    pub value: &'a [u8],
    pub raw: &'a [u8],
}

/// Reads TLVs one after another from a slice, strictly: single-byte tags, definite minimal
/// lengths, nothing past the end.
#[derive(Clone, Copy, Debug)]
pub struct Reader<'a> {
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    pub fn new(bytes: &'a [u8]) -> Self {
        Reader { rest: bytes }
    }

    pub fn is_empty(&self) -> bool {
        self.rest.is_empty()
    }

    /// The next TLV.
    pub fn next_tlv(&mut self) -> Result<Tlv<'a>, DerError> {
        let all = self.rest;
        let (&tag, rest) = all
            .split_first()
            .map_or_else(|| err("unexpected end"), Ok)?;
        if tag & 0x1F == 0x1F {
            return err("multi-byte tags are not used here");
        }
        let (&first, rest) = rest
            .split_first()
            .map_or_else(|| err("missing length"), Ok)?;
        let (len, rest) = if first < 0x80 {
            (first as usize, rest)
        } else {
            let n = (first & 0x7F) as usize;
            if n == 0 {
                return err("indefinite length is not DER");
            }
            if n > 3 {
                return err("length too large");
            }
            let (bytes, rest) = rest
                .split_at_checked(n)
                .map_or_else(|| err("truncated length"), Ok)?;
            if bytes[0] == 0 {
                return err("non-minimal length");
            }
            let len = bytes.iter().fold(0usize, |acc, &b| (acc << 8) | b as usize);
            if len < 0x80 {
                return err("non-minimal length");
            }
            (len, rest)
        };
        let (value, rest) = rest.split_at_checked(len).map_or_else(
            || err(format!("value of tag {tag:02x} runs past the end")),
            Ok,
        )?;
        let header = all.len() - rest.len() - len;
        self.rest = rest;
        Ok(Tlv {
            tag,
            value,
            raw: &all[..header + len],
        })
    }

    /// The next TLV, which must have tag `tag`; its content.
    pub fn expect(&mut self, tag: u8) -> Result<&'a [u8], DerError> {
        let tlv = self.next_tlv()?;
        if tlv.tag != tag {
            return err(format!("expected tag {tag:02x}, found {:02x}", tlv.tag));
        }
        Ok(tlv.value)
    }

    /// The next TLV's content if it has tag `tag`; nothing consumed otherwise.
    pub fn optional(&mut self, tag: u8) -> Result<Option<&'a [u8]>, DerError> {
        match self.rest.first() {
            Some(&t) if t == tag => self.expect(tag).map(Some),
            _ => Ok(None),
        }
    }

    /// The tag of the next TLV, if any.
    pub fn peek_tag(&self) -> Option<u8> {
        self.rest.first().copied()
    }

    /// Requires that nothing is left.
    pub fn finish(&self) -> Result<(), DerError> {
        if self.rest.is_empty() {
            Ok(())
        } else {
            err(format!("{} unexpected trailing bytes", self.rest.len()))
        }
    }
}

/// A whole encoding that must be exactly one TLV with tag `tag`; its content.
pub fn single(bytes: &[u8], tag: u8) -> Result<&[u8], DerError> {
    let mut r = Reader::new(bytes);
    let value = r.expect(tag)?;
    r.finish()?;
    Ok(value)
}

/// The magnitude of a non-negative, minimally encoded INTEGER (content bytes given).
pub fn read_uint(value: &[u8]) -> Result<&[u8], DerError> {
    match value {
        [] => err("empty INTEGER"),
        [b, ..] if b & 0x80 != 0 => err("negative INTEGER"),
        [0, next, ..] if next & 0x80 == 0 => err("non-minimal INTEGER"),
        [0, rest @ ..] if !rest.is_empty() => Ok(rest),
        _ => Ok(value),
    }
}

/// A non-negative INTEGER that fits 64 bits.
pub fn read_u64(value: &[u8]) -> Result<u64, DerError> {
    let magnitude = read_uint(value)?;
    if magnitude.len() > 8 {
        return err("INTEGER larger than 64 bits");
    }
    Ok(magnitude.iter().fold(0u64, |acc, &b| (acc << 8) | b as u64))
}

pub fn read_bool(value: &[u8]) -> Result<bool, DerError> {
    match value {
        [0x00] => Ok(false),
        [0xFF] => Ok(true),
        _ => err("BOOLEAN must be 00 or FF"),
    }
}

/// A BIT STRING of whole bytes.
pub fn read_bits(value: &[u8]) -> Result<&[u8], DerError> {
    match value {
        [0, rest @ ..] => Ok(rest),
        _ => err("BIT STRING with unused bits"),
    }
}

/// An X.509 Time as seconds since 1970.
pub fn read_time(tlv: &Tlv) -> Result<u64, DerError> {
    let text = std::str::from_utf8(tlv.value).map_err(|_| DerError("time not ASCII".into()))?;
    let (year, rest) = match tlv.tag {
        tag::UTC_TIME if text.len() == 13 => {
            let yy: u64 = digits(&text[..2])?;
            (if yy >= 50 { 1900 + yy } else { 2000 + yy }, &text[2..])
        }
        tag::GENERALIZED_TIME if text.len() == 15 => (digits(&text[..4])?, &text[4..]),
        _ => return err("time must be YYMMDDHHMMSSZ or YYYYMMDDHHMMSSZ"),
    };
    if !rest.ends_with('Z') {
        return err("time must be in UTC (Z)");
    }
    let mo = digits(&rest[0..2])?;
    let d = digits(&rest[2..4])?;
    let h = digits(&rest[4..6])?;
    let mi = digits(&rest[6..8])?;
    let s = digits(&rest[8..10])?;
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || s > 59 {
        return err("time out of range");
    }
    let days = days_from_civil(year as i64, mo as u32, d as u32);
    if days < 0 {
        return err("time before 1970");
    }
    Ok(days as u64 * 86_400 + h * 3600 + mi * 60 + s)
}

fn digits(s: &str) -> Result<u64, DerError> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return err(format!("{s:?} is not digits"));
    }
    s.parse().map_err(|_| DerError("number".into()))
}

// ---------------------------------------------------------------------------------------------
// Calendar (proleptic Gregorian, UTC), after H. Hinnant's public-domain algorithms.

fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m as i64 + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d as i64 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// (year, month, day, hour, minute, second) of a Unix time.
pub fn civil(unix: u64) -> (u64, u64, u64, u64, u64, u64) {
    let days = (unix / 86_400) as i64;
    let secs = unix % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + if m <= 2 { 1 } else { 0 };
    (
        y as u64,
        m as u64,
        d as u64,
        secs / 3600,
        secs % 3600 / 60,
        secs % 60,
    )
}

/// A Unix time as `2026-05-01T12:00:00Z`, for people.
pub fn iso8601(unix: u64) -> String {
    let (y, mo, d, h, mi, s) = civil(unix);
    format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}Z")
}

// ---------------------------------------------------------------------------------------------
// PEM (RFC 7468)

/// The base64 alphabet, for decoding.
const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Encoding lives with the token client, which prints public keys without the PKI.
pub use simlab_card::pem::pem_encode;

/// The DER inside the first PEM block labelled `label`.
pub fn pem_decode(label: &str, text: &str) -> Result<Vec<u8>, DerError> {
    let begin = format!("-----BEGIN {label}-----");
    let end = format!("-----END {label}-----");
    let start = text
        .find(&begin)
        .ok_or_else(|| DerError(format!("no {begin} line")))?
        + begin.len();
    let stop = text[start..]
        .find(&end)
        .ok_or_else(|| DerError(format!("no {end} line")))?
        + start;
    let mut out = Vec::new();
    let mut acc = 0u32;
    let mut nbits = 0;
    let mut padding = 0;
    for c in text[start..stop].bytes() {
        if c.is_ascii_whitespace() {
            continue;
        }
        if c == b'=' {
            padding += 1;
            continue;
        }
        if padding > 0 {
            return err("base64 data after padding");
        }
        let v = B64
            .iter()
            .position(|&x| x == c)
            .ok_or_else(|| DerError(format!("{:?} is not base64", c as char)))?;
        acc = (acc << 6) | v as u32;
        nbits += 6;
        if nbits >= 8 {
            nbits -= 8;
            out.push((acc >> nbits) as u8);
            acc &= (1 << nbits) - 1;
        }
    }
    if padding > 2 {
        return err("too much base64 padding");
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lengths_and_integers() {
        assert_eq!(tlv(0x04, &[1, 2]), [0x04, 2, 1, 2]);
        let long = tlv(0x04, &[0; 200]);
        assert_eq!(&long[..3], &[0x04, 0x81, 200]);
        let longer = tlv(0x04, &[0; 300]);
        assert_eq!(&longer[..4], &[0x04, 0x82, 0x01, 0x2C]);
        assert_eq!(uint(&[0, 0, 5]), [2, 1, 5]);
        assert_eq!(uint(&[0x80]), [2, 2, 0, 0x80]);
        assert_eq!(uint(&[0, 0]), [2, 1, 0]);
        assert_eq!(u64_int(0), [2, 1, 0]);
        assert_eq!(read_u64(&[0, 0x80]).unwrap(), 128);
        assert!(read_uint(&[0, 5]).is_err());
        assert!(read_uint(&[0x80]).is_err());
        for (bytes, what) in [
            (&[0x30, 0x80, 0, 0][..], "indefinite"),
            (&[0x04, 0x81, 0x05, 1, 2, 3, 4, 5], "non-minimal"),
            (&[0x04, 0x05, 1], "past the end"),
            (&[0x1F, 0x01, 0x00], "multi-byte"),
        ] {
            let e = Reader::new(bytes).next_tlv().unwrap_err();
            assert!(e.0.contains(what), "{e}");
        }
        let two = [tlv(1, &[0xFF]), tlv(2, &[1])].concat();
        let mut r = Reader::new(&two);
        assert_eq!(r.optional(2).unwrap(), None);
        assert!(read_bool(r.expect(1).unwrap()).unwrap());
        assert_eq!(r.expect(2).unwrap(), [1]);
        r.finish().unwrap();
    }

    #[test]
    fn oids() {
        assert_eq!(
            oid_content(&[1, 2, 840, 10045, 4, 3, 2]),
            [0x2A, 0x86, 0x48, 0xCE, 0x3D, 0x04, 0x03, 0x02]
        );
        assert_eq!(
            oid_content(&[1, 3, 6, 1, 4, 1, 55555, 1, 1]),
            [0x2B, 6, 1, 4, 1, 0x83, 0xB2, 0x03, 1, 1]
        );
    }

    #[test]
    fn times() {
        assert_eq!(iso8601(0), "1970-01-01T00:00:00Z");
        assert_eq!(iso8601(951_782_400), "2000-02-29T00:00:00Z");
        for t in [
            0u64,
            951_782_400,
            1_700_000_000,
            2_524_608_000,
            4_102_444_800,
        ] {
            let enc = time(t);
            let mut r = Reader::new(&enc);
            let tlv = r.next_tlv().unwrap();
            assert_eq!(read_time(&tlv).unwrap(), t, "{}", iso8601(t));
        }
        assert_eq!(time(1_700_000_000)[0], tag::UTC_TIME);
        assert_eq!(time(2_524_608_000)[0], tag::GENERALIZED_TIME); // 2050-01-01
        assert_eq!(&time(1_700_000_000)[2..], b"231114221320Z");
    }

    #[test]
    fn pem_round_trip() {
        for len in [0usize, 1, 2, 3, 47, 48, 49, 200] {
            let der: Vec<u8> = (0..len).map(|i| (i * 7 + 3) as u8).collect();
            let pem = pem_encode("CERTIFICATE", &der);
            assert_eq!(pem_decode("CERTIFICATE", &pem).unwrap(), der);
        }
        assert!(pem_decode("CERTIFICATE", "-----BEGIN X-----").is_err());
        assert_eq!(pem_encode("X", b"foobar").lines().nth(1), Some("Zm9vYmFy"));
    }
}
