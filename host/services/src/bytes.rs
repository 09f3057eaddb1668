//! Hex for logs, URLs and JSON, and the random identifiers the services hand out: one copy
//! for every network role.

/// Lower-case hex.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Parses hex (either case); `None` for odd lengths or other characters.
pub fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

/// 16 random bytes (contract ids, nonces, authorization references), from the OS.
pub fn random16() -> [u8; 16] {
    use ring::rand::SecureRandom;
    let mut b = [0u8; 16];
    ring::rand::SystemRandom::new()
        .fill(&mut b)
        .expect("the OS random source failed");
    b
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_both_ways_and_fresh_random() {
        assert_eq!(unhex("00aB").unwrap(), [0, 0xab]);
        assert!(unhex("0").is_none() && unhex("zz").is_none());
        assert_eq!(hex(&[0, 0xab]), "00ab");
        assert_ne!(random16(), random16());
    }
}
