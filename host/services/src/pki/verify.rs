//! ECDSA P-256 / SHA-256 signature checks for the host side, through ring.
//!
//! Why not the `p256` crate the card model uses: the gateway verifies every signature of
//! every billing batch, and ring's assembly field arithmetic (the same code as BoringSSL's)
//! runs several times faster than portable Rust; the card model keeps `p256` because it must
//! build for a microcontroller. Both accept exactly the same signatures (the tests sign with
//! one and verify with the other).

use ring::signature::{ECDSA_P256_SHA256_ASN1, UnparsedPublicKey};

/// Whether `signature_der` (an ASN.1 `ECDSA-Sig-Value`, as the token and OpenSSL write it) is
/// a valid signature over `message` by the uncompressed SEC1 point `public_key` (04 ‖ X ‖ Y).
/// Any malformed key or signature is simply not valid.
pub fn p256_sha256(public_key: &[u8], message: &[u8], signature_der: &[u8]) -> bool {
    UnparsedPublicKey::new(&ECDSA_P256_SHA256_ASN1, public_key)
        .verify(message, signature_der)
        .is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use p256::ecdsa::signature::Signer;
    use p256::ecdsa::{Signature, SigningKey};

    #[test]
    fn accepts_what_p256_signs_and_nothing_else() {
        let key = SigningKey::from_bytes(&[7u8; 32].into()).unwrap();
        let point = key.verifying_key().to_sec1_point(false);
        let sig: Signature = key.sign(b"invoice");
        let der = sig.to_der();
        assert!(p256_sha256(point.as_bytes(), b"invoice", der.as_bytes()));
        assert!(!p256_sha256(point.as_bytes(), b"invoicE", der.as_bytes()));
        assert!(!p256_sha256(
            &point.as_bytes()[..64],
            b"invoice",
            der.as_bytes()
        ));
        assert!(!p256_sha256(
            point.as_bytes(),
            b"invoice",
            &der.as_bytes()[1..]
        ));
        assert!(!p256_sha256(&[], b"", &[]));
    }
}
