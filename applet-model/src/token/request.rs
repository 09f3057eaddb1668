//! Seed 002's signature request: the exact bytes a phone's token signs after the person saw
//! what they say.
//!
//! The server writes them, the phone shows them, the token decodes them *again* before it signs
//! (SIGN REQUEST, `docs/token-apdus.md`), and the server verifies the signature over them. All
//! three read the same bytes with this one decoder, so what is displayed — on the phone's
//! screen or on the token's own console — is what is signed, and a request that any of them
//! cannot read is refused by all. It lives here, without an allocator, because the card has to
//! read it; the host borrows it.
//!
//! # Encoding
//!
//! enc(): each field is a 2-byte big-endian length and its bytes (as seed 000's invoice and
//! seed 001's contracts), in this order:
//!
//! | # | field | bytes |
//! |---|---|---|
//! | 1 | label `simlab-sign-request-v1` | 22 |
//! | 2 | server id: printable ASCII | 1–64 |
//! | 3 | transaction id | 16 |
//! | 4 | user id: printable ASCII | 1–64 |
//! | 5 | amount in minor units, big-endian | 8 |
//! | 6 | currency: ISO 4217 letters | 3 |
//! | 7 | summary: UTF-8, no control characters, ≤ 160 characters | 1–640 |
//! | 8 | SHA-256 of the full content the summary abridges | 32 |
//! | 9 | correlator `XXX-XXX` | 7 |
//! | 10 | issued at, Unix seconds, big-endian | 8 |
//! | 11 | expires at, Unix seconds, big-endian, after issued at | 8 |
//!
//! Decoding is strict (exactly these fields, nothing after, every constraint checked), so one
//! set of bytes has one meaning and `encode(decode(b)) == b`.
//!
//! # Correlator
//!
//! Six Crockford base-32 symbols (no I, L, O, U) from the first 30 bits of SHA-256 over the
//! encoding of fields 1–8, written `XXX-XXX`. The PC page and the phone both show it; since it
//! is a function of the transaction's content, a request swapped for another on the way to the
//! phone shows another code. The decoder recomputes it and refuses a request whose correlator
//! field does not match, so no server can show one code and have another signed.

use sha2::{Digest, Sha256};

/// The first field: names the structure and its version.
pub const LABEL: &[u8] = b"simlab-sign-request-v1";
/// The longest server or user id.
pub const ID_MAX: usize = 64;
/// The most characters of a summary (the seed's "abridged form": one SMS worth).
pub const SUMMARY_MAX_CHARS: usize = 160;
/// The most bytes of a summary (160 characters of up to 4 UTF-8 bytes).
pub const SUMMARY_MAX_BYTES: usize = 4 * SUMMARY_MAX_CHARS;
/// Length of the correlator field, `XXX-XXX`.
pub const CORRELATOR_LEN: usize = 7;
/// The longest encoded request: the bound of the token's buffer for SIGN REQUEST.
pub const MAX_LEN: usize = 11 * 2
    + LABEL.len()
    + ID_MAX
    + 16
    + ID_MAX
    + 8
    + 3
    + SUMMARY_MAX_BYTES
    + 32
    + CORRELATOR_LEN
    + 8
    + 8;

/// Crockford's base-32 alphabet: no I, L, O or U, so a code read aloud or typed is not
/// mistaken.
const CROCKFORD: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";

/// Why bytes are not a signature request (or a request cannot be written).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RequestError {
    /// The bytes end inside a length or a field.
    Truncated,
    /// The first field is not [`LABEL`].
    WrongLabel,
    /// Bytes follow the last field.
    Trailing,
    /// A field has the wrong length or content; names the field.
    Field(&'static str),
    /// The correlator field is not the code of the request's content.
    CorrelatorMismatch,
    /// `encode` was given a buffer shorter than [`SignRequest::encoded_len`].
    BufferTooSmall,
}

impl core::fmt::Display for RequestError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            RequestError::Truncated => f.write_str("truncated"),
            RequestError::WrongLabel => f.write_str("not a simlab-sign-request-v1"),
            RequestError::Trailing => f.write_str("bytes after the last field"),
            RequestError::Field(name) => write!(f, "bad {name}"),
            RequestError::CorrelatorMismatch => {
                f.write_str("the correlator is not the code of the request's content")
            }
            RequestError::BufferTooSmall => f.write_str("buffer too small"),
        }
    }
}

/// A decoded request, borrowing the bytes it was read from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SignRequest<'a> {
    pub server_id: &'a str,
    pub tx_id: [u8; 16],
    pub user_id: &'a str,
    /// Minor units of `currency` (cents for EUR).
    pub amount: u64,
    pub currency: [u8; 3],
    pub summary: &'a str,
    pub content_hash: [u8; 32],
    /// `XXX-XXX`: always the code of fields 1–8 (checked by [`SignRequest::decode`], written
    /// by [`SignRequest::encode`], whatever this field holds).
    pub correlator: [u8; CORRELATOR_LEN],
    pub issued_at: u64,
    pub expires_at: u64,
}

impl<'a> SignRequest<'a> {
    /// Reads and checks a request.
    pub fn decode(bytes: &'a [u8]) -> Result<SignRequest<'a>, RequestError> {
        let mut r = bytes;
        if field(&mut r)? != LABEL {
            return Err(RequestError::WrongLabel);
        }
        let server_id = id(field(&mut r)?, "server id")?;
        let tx_id = fixed::<16>(field(&mut r)?, "transaction id")?;
        let user_id = id(field(&mut r)?, "user id")?;
        let amount = u64::from_be_bytes(fixed(field(&mut r)?, "amount")?);
        let currency = fixed::<3>(field(&mut r)?, "currency")?;
        if !currency.iter().all(u8::is_ascii_uppercase) {
            return Err(RequestError::Field("currency"));
        }
        let summary = summary(field(&mut r)?)?;
        let content_hash = fixed::<32>(field(&mut r)?, "content hash")?;
        let hashed_len = bytes.len() - r.len();
        let correlator = fixed::<CORRELATOR_LEN>(field(&mut r)?, "correlator")?;
        let issued_at = u64::from_be_bytes(fixed(field(&mut r)?, "issued at")?);
        let expires_at = u64::from_be_bytes(fixed(field(&mut r)?, "expires at")?);
        if !r.is_empty() {
            return Err(RequestError::Trailing);
        }
        if expires_at <= issued_at {
            return Err(RequestError::Field("expires at"));
        }
        let head = bytes.get(..hashed_len).ok_or(RequestError::Truncated)?;
        if correlator_of(head) != correlator {
            return Err(RequestError::CorrelatorMismatch);
        }
        Ok(SignRequest {
            server_id,
            tx_id,
            user_id,
            amount,
            currency,
            summary,
            content_hash,
            correlator,
            issued_at,
            expires_at,
        })
    }

    /// The length [`SignRequest::encode`] writes.
    pub fn encoded_len(&self) -> usize {
        11 * 2
            + LABEL.len()
            + self.server_id.len()
            + 16
            + self.user_id.len()
            + 8
            + 3
            + self.summary.len()
            + 32
            + CORRELATOR_LEN
            + 8
            + 8
    }

    /// Writes the request into `out` with its correlator computed; returns the length. Every
    /// field is checked as [`SignRequest::decode`] checks it, so what this writes decodes.
    pub fn encode(&self, out: &mut [u8]) -> Result<usize, RequestError> {
        id(self.server_id.as_bytes(), "server id")?;
        id(self.user_id.as_bytes(), "user id")?;
        if !self.currency.iter().all(u8::is_ascii_uppercase) {
            return Err(RequestError::Field("currency"));
        }
        summary(self.summary.as_bytes())?;
        if self.expires_at <= self.issued_at {
            return Err(RequestError::Field("expires at"));
        }
        let len = self.encoded_len();
        let out = out.get_mut(..len).ok_or(RequestError::BufferTooSmall)?;
        let mut w = Writer { out, at: 0 };
        w.field(LABEL)?;
        w.field(self.server_id.as_bytes())?;
        w.field(&self.tx_id)?;
        w.field(self.user_id.as_bytes())?;
        w.field(&self.amount.to_be_bytes())?;
        w.field(&self.currency)?;
        w.field(self.summary.as_bytes())?;
        w.field(&self.content_hash)?;
        let hashed = w.at;
        let correlator = correlator_of(w.out.get(..hashed).ok_or(RequestError::BufferTooSmall)?);
        w.field(&correlator)?;
        w.field(&self.issued_at.to_be_bytes())?;
        w.field(&self.expires_at.to_be_bytes())?;
        Ok(w.at)
    }

    /// The correlator as text.
    pub fn correlator_str(&self) -> &str {
        // Only Crockford symbols and '-' ever get here (decode checks, encode writes them).
        core::str::from_utf8(&self.correlator).unwrap_or("???-???")
    }

    /// The currency as text.
    pub fn currency_str(&self) -> &str {
        core::str::from_utf8(&self.currency).unwrap_or("???")
    }

    /// The amount as people read it: `42.50 EUR` (see [`Amount`]).
    pub fn amount_display(&self) -> Amount {
        Amount {
            minor: self.amount,
            currency: self.currency,
        }
    }
}

/// An amount in minor units of an ISO 4217 currency, displayed with that currency's decimals
/// and its code: `42.50 EUR`, `4250 JPY`, `4.250 KWD`. One formatting for every screen that
/// shows a request (the host CLI, the token's console), so they cannot disagree.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Amount {
    pub minor: u64,
    pub currency: [u8; 3],
}

impl Amount {
    /// The currency's minor-unit digits (ISO 4217): 0 for JPY, KRW …, 3 for BHD, KWD …, 4 for
    /// CLF and UYW, 2 for every other code.
    pub fn decimals(&self) -> u32 {
        match &self.currency {
            b"BIF" | b"CLP" | b"DJF" | b"GNF" | b"ISK" | b"JPY" | b"KMF" | b"KRW" | b"PYG"
            | b"RWF" | b"UGX" | b"UYI" | b"VND" | b"VUV" | b"XAF" | b"XOF" | b"XPF" => 0,
            b"BHD" | b"IQD" | b"JOD" | b"KWD" | b"LYD" | b"OMR" | b"TND" => 3,
            b"CLF" | b"UYW" => 4,
            _ => 2,
        }
    }
}

impl core::fmt::Display for Amount {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let code = core::str::from_utf8(&self.currency).unwrap_or("???");
        match self.decimals() {
            0 => write!(f, "{} {code}", self.minor),
            d => {
                let scale = 10u64.pow(d);
                let width = d as usize;
                write!(
                    f,
                    "{}.{:0width$} {code}",
                    self.minor / scale,
                    self.minor % scale
                )
            }
        }
    }
}

/// The `XXX-XXX` code of the encoded fields 1–8.
fn correlator_of(head: &[u8]) -> [u8; CORRELATOR_LEN] {
    let d: [u8; 32] = Sha256::digest(head).into();
    let [a, b, c, e, ..] = d;
    let bits = u32::from_be_bytes([a, b, c, e]) >> 2;
    let mut out = [b'-'; CORRELATOR_LEN];
    let mut shift = 30;
    for (i, slot) in out.iter_mut().enumerate() {
        if i == 3 {
            continue;
        }
        shift -= 5;
        let symbol = ((bits >> shift) & 0x1F) as usize;
        *slot = CROCKFORD.get(symbol).copied().unwrap_or(b'?');
    }
    out
}

/// Takes the next enc() field off `r`.
fn field<'a>(r: &mut &'a [u8]) -> Result<&'a [u8], RequestError> {
    let (len, rest) = r.split_first_chunk::<2>().ok_or(RequestError::Truncated)?;
    let len = u16::from_be_bytes(*len) as usize;
    if rest.len() < len {
        return Err(RequestError::Truncated);
    }
    let (f, rest) = rest.split_at(len);
    *r = rest;
    Ok(f)
}

fn fixed<const N: usize>(f: &[u8], name: &'static str) -> Result<[u8; N], RequestError> {
    f.try_into().map_err(|_| RequestError::Field(name))
}

/// Printable ASCII (no space), 1 to [`ID_MAX`] bytes.
fn id<'a>(f: &'a [u8], name: &'static str) -> Result<&'a str, RequestError> {
    if f.is_empty() || f.len() > ID_MAX || !f.iter().all(|b| (0x21..=0x7E).contains(b)) {
        return Err(RequestError::Field(name));
    }
    core::str::from_utf8(f).map_err(|_| RequestError::Field(name))
}

/// UTF-8 without control characters (a console or a phone screen must not be steered by
/// the text it shows), 1 to [`SUMMARY_MAX_CHARS`] characters.
fn summary(f: &[u8]) -> Result<&str, RequestError> {
    let bad = RequestError::Field("summary");
    let s = core::str::from_utf8(f).map_err(|_| bad)?;
    let chars = s.chars().count();
    if s.is_empty() || chars > SUMMARY_MAX_CHARS || s.chars().any(char::is_control) {
        return Err(bad);
    }
    // Bidirectional overrides and isolates can make a display show the text in another order.
    if s.chars()
        .any(|c| matches!(c, '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}'))
    {
        return Err(bad);
    }
    Ok(s)
}

struct Writer<'o> {
    out: &'o mut [u8],
    at: usize,
}

impl Writer<'_> {
    fn field(&mut self, f: &[u8]) -> Result<(), RequestError> {
        let len = u16::try_from(f.len()).map_err(|_| RequestError::BufferTooSmall)?;
        let end = self.at + 2 + f.len();
        let dst = self
            .out
            .get_mut(self.at..end)
            .ok_or(RequestError::BufferTooSmall)?;
        let (l, d) = dst.split_at_mut(2);
        l.copy_from_slice(&len.to_be_bytes());
        d.copy_from_slice(f);
        self.at = end;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> SignRequest<'static> {
        SignRequest {
            server_id: "shop.example",
            tx_id: [7; 16],
            user_id: "u1",
            amount: 4250,
            currency: *b"EUR",
            summary: "Flowers for Ada, 42.50 EUR",
            content_hash: [9; 32],
            correlator: [0; CORRELATOR_LEN],
            issued_at: 1_800_000_000,
            expires_at: 1_800_000_120,
        }
    }

    #[test]
    fn encode_then_decode_is_the_identity_and_fills_the_correlator() {
        let mut buf = [0u8; MAX_LEN];
        let n = sample().encode(&mut buf).unwrap();
        assert_eq!(n, sample().encoded_len());
        let d = SignRequest::decode(&buf[..n]).unwrap();
        assert_eq!(d.amount, 4250);
        assert_eq!(d.summary, "Flowers for Ada, 42.50 EUR");
        let c = d.correlator_str();
        assert_eq!(c.len(), 7);
        assert_eq!(&c[3..4], "-");
        assert!(
            c.bytes()
                .filter(|&b| b != b'-')
                .all(|b| CROCKFORD.contains(&b))
        );
        let mut again = [0u8; MAX_LEN];
        assert_eq!(d.encode(&mut again).unwrap(), n);
        assert_eq!(buf[..n], again[..n]);
    }

    #[test]
    fn another_amount_gives_another_correlator_and_a_kept_one_is_refused() {
        let mut a = [0u8; MAX_LEN];
        let n = sample().encode(&mut a).unwrap();
        let mut other = sample();
        other.amount = 4251;
        let mut b = [0u8; MAX_LEN];
        let m = other.encode(&mut b).unwrap();
        let ca = SignRequest::decode(&a[..n]).unwrap().correlator;
        let cb = SignRequest::decode(&b[..m]).unwrap().correlator;
        assert_ne!(ca, cb);
        // The amount changed in transit, the correlator kept: refused.
        let at = 2 + LABEL.len() + 2 + 12 + 2 + 16 + 2 + 2 + 2 + 7;
        a[at] ^= 1;
        assert_eq!(
            SignRequest::decode(&a[..n]),
            Err(RequestError::CorrelatorMismatch)
        );
    }

    #[test]
    fn every_bad_field_is_named() {
        let mut buf = [0u8; MAX_LEN];
        let bad = |r: SignRequest<'_>| {
            let mut buf = [0u8; MAX_LEN];
            r.encode(&mut buf).unwrap_err()
        };
        assert_eq!(
            bad(SignRequest {
                user_id: "",
                ..sample()
            }),
            RequestError::Field("user id")
        );
        assert_eq!(
            bad(SignRequest {
                user_id: "a b",
                ..sample()
            }),
            RequestError::Field("user id")
        );
        assert_eq!(
            bad(SignRequest {
                currency: *b"eur",
                ..sample()
            }),
            RequestError::Field("currency")
        );
        assert_eq!(
            bad(SignRequest {
                summary: "line\nbreak",
                ..sample()
            }),
            RequestError::Field("summary")
        );
        assert_eq!(
            bad(SignRequest {
                summary: "pay \u{202E}RUE 00.1",
                ..sample()
            }),
            RequestError::Field("summary")
        );
        assert_eq!(
            bad(SignRequest {
                expires_at: 1_800_000_000,
                ..sample()
            }),
            RequestError::Field("expires at")
        );
        let long = "é".repeat(SUMMARY_MAX_CHARS);
        let n = SignRequest {
            summary: &long,
            ..sample()
        }
        .encode(&mut buf)
        .unwrap();
        assert!(n <= MAX_LEN);
        assert!(SignRequest::decode(&buf[..n]).is_ok());
        let longer = "é".repeat(SUMMARY_MAX_CHARS + 1);
        assert_eq!(
            bad(SignRequest {
                summary: &longer,
                ..sample()
            }),
            RequestError::Field("summary")
        );
        assert_eq!(
            sample().encode(&mut [0u8; 10]),
            Err(RequestError::BufferTooSmall)
        );
    }

    #[test]
    fn amounts_show_with_their_currency_s_decimals() {
        extern crate std;
        use std::string::ToString;
        let a = |minor, c: &[u8; 3]| {
            Amount {
                minor,
                currency: *c,
            }
            .to_string()
        };
        assert_eq!(sample().amount_display().to_string(), "42.50 EUR");
        assert_eq!(a(5, b"EUR"), "0.05 EUR");
        assert_eq!(a(0, b"USD"), "0.00 USD");
        assert_eq!(a(4250, b"JPY"), "4250 JPY");
        assert_eq!(a(4250, b"KWD"), "4.250 KWD");
        assert_eq!(a(u64::MAX, b"EUR"), "184467440737095516.15 EUR");
    }

    #[test]
    fn truncation_trailing_bytes_and_other_labels_are_refused() {
        let mut buf = [0u8; MAX_LEN];
        let n = sample().encode(&mut buf).unwrap();
        for cut in 0..n {
            assert!(SignRequest::decode(&buf[..cut]).is_err(), "cut at {cut}");
        }
        assert_eq!(
            SignRequest::decode(&buf[..n + 1]),
            Err(RequestError::Trailing)
        );
        buf[2] = b'S';
        assert_eq!(
            SignRequest::decode(&buf[..n]),
            Err(RequestError::WrongLabel)
        );
    }
}
