//! PEM armour (RFC 7468) for what the card side prints: the token's public key. Below the PKI,
//! which re-exports it, so the token client needs no network role to show a key. The base64
//! and the armour are `pem-rfc7468`'s.

pub use pem_rfc7468::{Error, LineEnding};

/// `der` in PEM armour with `label`: base64 lines of 64 characters, LF line endings, as
/// `openssl` writes it. Fails only for a label RFC 7468 does not allow.
pub fn try_pem_encode(label: &str, der: &[u8]) -> Result<String, Error> {
    pem_rfc7468::encode_string(label, LineEnding::LF, der)
}

/// [`try_pem_encode`] for the fixed labels callers use (`CERTIFICATE`, `PUBLIC KEY`, ...).
///
/// # Panics
///
/// If `label` is not a valid RFC 7468 label (doubled spaces, characters outside printable
/// ASCII): a programming error, never something input controls.
pub fn pem_encode(label: &str, der: &[u8]) -> String {
    try_pem_encode(label, der).expect("a valid RFC 7468 label")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_labels() {
        for len in [1usize, 2, 3, 47, 48, 49, 200] {
            let der: Vec<u8> = (0..len).map(|i| (i * 7 + 3) as u8).collect();
            let pem = pem_encode("CERTIFICATE", &der);
            let (label, back) = pem_rfc7468::decode_vec(pem.as_bytes()).unwrap();
            assert_eq!((label, back), ("CERTIFICATE", der));
        }
        assert!(try_pem_encode("TWO  SPACES", b"x").is_err());
        assert!(try_pem_encode("CAFÉ", b"x").is_err());
    }
}
