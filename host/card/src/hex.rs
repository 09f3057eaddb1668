//! Hex in and out. Parsing names the argument it came from, so a typo in one of five hex
//! arguments says which.

use crate::error::{Error, Result};

/// Lower-case hex without separators, as the CLI contract wants it.
pub fn encode(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for &b in bytes {
        s.push(DIGITS[(b >> 4) as usize] as char);
        s.push(DIGITS[(b & 0xF) as usize] as char);
    }
    s
}

/// Decodes hex of any length; spaces and colons between bytes are allowed.
pub fn decode(arg: &str, text: &str) -> Result<Vec<u8>> {
    decode_as(arg, text, false)
}

/// As [`decode`], for values that are secrets (Ki, OP/OPc, ADM keys): an error never quotes
/// the characters, since even a mistyped key is most of a key.
fn decode_as(arg: &str, text: &str, secret: bool) -> Result<Vec<u8>> {
    let cleaned: Vec<u8> = text
        .bytes()
        .filter(|b| !matches!(b, b' ' | b':' | b'\t'))
        .collect();
    if !cleaned.len().is_multiple_of(2) {
        return Err(Error::arg(
            arg,
            format!("odd number of hex digits ({})", cleaned.len()),
        ));
    }
    cleaned
        .chunks_exact(2)
        .enumerate()
        .map(|(i, pair)| {
            let nibble = |c: u8| (c as char).to_digit(16);
            match (nibble(pair[0]), nibble(pair[1])) {
                (Some(h), Some(l)) => Ok((h * 16 + l) as u8),
                _ if secret => Err(Error::arg(arg, format!("not hex at byte {}", i + 1))),
                _ => Err(Error::arg(
                    arg,
                    format!(
                        "not hex: {:?} at byte {}",
                        String::from_utf8_lossy(pair),
                        i + 1
                    ),
                )),
            }
        })
        .collect()
}

/// Decodes a secret of any length: errors never quote what was typed.
pub fn decode_secret(arg: &str, text: &str) -> Result<Vec<u8>> {
    decode_as(arg, text, true)
}

/// Decodes exactly `N` bytes of hex.
pub fn decode_fixed<const N: usize>(arg: &str, text: &str) -> Result<[u8; N]> {
    fixed(arg, decode_as(arg, text, false)?)
}

/// Decodes exactly `N` bytes of a secret: errors say what is wrong, never what was typed.
pub fn decode_secret_fixed<const N: usize>(arg: &str, text: &str) -> Result<[u8; N]> {
    fixed(arg, decode_as(arg, text, true)?)
}

fn fixed<const N: usize>(arg: &str, bytes: Vec<u8>) -> Result<[u8; N]> {
    let len = bytes.len();
    bytes.try_into().map_err(|_| {
        Error::arg(
            arg,
            format!("expected {} hex digits ({N} bytes), got {}", 2 * N, 2 * len),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_errors() {
        assert_eq!(encode(&[0x3c, 0x0d, 0xff]), "3c0dff");
        assert_eq!(decode("x", "3C 0d:FF").unwrap(), [0x3c, 0x0d, 0xff]);
        assert!(
            decode("--ki", "abc")
                .unwrap_err()
                .to_string()
                .starts_with("--ki: odd")
        );
        assert!(
            decode("--ki", "zz")
                .unwrap_err()
                .to_string()
                .contains("not hex")
        );
        let err = decode_fixed::<16>("--rand", "00").unwrap_err().to_string();
        assert_eq!(err, "--rand: expected 32 hex digits (16 bytes), got 2");
    }
}
