//! Hex text as modems exchange it in PDU mode.
//!
//! TS 27.005 3.1 shows PDUs as two IRA characters per octet in upper case;
//! some modems answer in lower case, and lines read off a serial port carry
//! stray whitespace, so decoding accepts both cases and skips whitespace.

use crate::Error;

const UPPER: &[u8; 16] = b"0123456789ABCDEF";
const LOWER: &[u8; 16] = b"0123456789abcdef";

/// Parses hex text, ignoring ASCII whitespace between digits.
pub fn decode(text: &str) -> Result<Vec<u8>, Error> {
    let mut out = Vec::with_capacity(text.len() / 2);
    let mut high: Option<u8> = None;
    let mut digits = 0usize;
    for (position, c) in text.chars().enumerate() {
        if c.is_ascii_whitespace() {
            continue;
        }
        let nibble = c
            .to_digit(16)
            .and_then(|d| u8::try_from(d).ok())
            .ok_or(Error::InvalidHex { position })?;
        digits += 1;
        match high.take() {
            Some(h) => out.push((h << 4) | nibble),
            None => high = Some(nibble),
        }
    }
    if high.is_some() {
        return Err(Error::OddHexLength { digits });
    }
    Ok(out)
}

/// Upper-case hex, the form TS 27.005 uses for `AT+CMGS` and `AT+CMGW`.
pub fn encode_upper(bytes: &[u8]) -> String {
    encode_with(bytes, UPPER)
}

/// Lower-case hex, the form simlab's JSON output uses.
pub fn encode_lower(bytes: &[u8]) -> String {
    encode_with(bytes, LOWER)
}

fn encode_with(bytes: &[u8], digits: &[u8; 16]) -> String {
    let mut out = String::with_capacity(bytes.len() * 2);
    for &b in bytes {
        out.push(char::from(digits[usize::from(b >> 4)]));
        out.push(char::from(digits[usize::from(b & 0x0F)]));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_whitespace() {
        assert_eq!(decode("0a Ff\r\n").unwrap(), vec![0x0A, 0xFF]);
        assert_eq!(encode_upper(&[0x0A, 0xFF]), "0AFF");
        assert_eq!(encode_lower(&[0x0A, 0xFF]), "0aff");
    }

    #[test]
    fn errors() {
        assert_eq!(decode("0G"), Err(Error::InvalidHex { position: 1 }));
        assert_eq!(decode("012"), Err(Error::OddHexLength { digits: 3 }));
        assert_eq!(decode("é"), Err(Error::InvalidHex { position: 0 }));
    }
}
