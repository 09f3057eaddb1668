//! The UCS2 alphabet (TS 23.038 6.2.3), written as UTF-16 big-endian.
//!
//! TS 23.038 says UCS2, but every handset since the emoji era sends and
//! expects UTF-16 surrogate pairs for characters outside the BMP, so that is
//! what we encode; decoding tolerates the broken pairs older phones produce.

/// UTF-16 code units `text` needs; characters outside the BMP count two.
pub fn unit_count(text: &str) -> usize {
    text.chars().map(char::len_utf16).sum()
}

/// Encodes `text` as UTF-16BE.
pub fn encode(text: &str) -> Vec<u8> {
    text.encode_utf16().flat_map(u16::to_be_bytes).collect()
}

/// Decodes UTF-16BE, replacing unpaired surrogates and a dangling odd octet
/// with U+FFFD: a message with one broken character is still worth showing,
/// and the raw octets stay available to the caller.
pub fn decode(octets: &[u8]) -> String {
    let (pairs, odd) = octets.as_chunks::<2>();
    let units = pairs.iter().map(|&pair| u16::from_be_bytes(pair));
    let mut out: String = char::decode_utf16(units)
        .map(|r| r.unwrap_or(char::REPLACEMENT_CHARACTER))
        .collect();
    if !odd.is_empty() {
        out.push(char::REPLACEMENT_CHARACTER);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn surrogate_pairs() {
        let text = "a🙂";
        assert_eq!(unit_count(text), 3);
        let bytes = encode(text);
        assert_eq!(bytes, [0x00, 0x61, 0xD8, 0x3D, 0xDE, 0x42]);
        assert_eq!(decode(&bytes), text);
    }

    #[test]
    fn broken_input_is_replaced() {
        assert_eq!(decode(&[0xD8, 0x3D, 0x00, 0x61]), "\u{FFFD}a");
        assert_eq!(decode(&[0x00, 0x61, 0x62]), "a\u{FFFD}");
    }
}
