//! The keys of seed 001's servers. Each MeC server signs its roam messages with the key of its
//! peer TLS certificate (`gateway issue --role peer`): the certificate its partners already
//! pinned in their partner tables then also names the key that signs, so the table holds one
//! certificate per partner and the TLS link and the signatures authenticate the same server.
//! The home server also holds one key per subscriber for delegated signing.

use crate::pki::x509::Certificate;
use ring::rand::SystemRandom;
use ring::signature::{ECDSA_P256_SHA256_ASN1_SIGNING, EcdsaKeyPair, KeyPair};
use std::fmt;
use std::path::Path;

/// Why a key could not be loaded or made.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The key file is missing or unreadable.
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    /// Not a PKCS#8 P-256 key.
    #[error("{0}: not a PKCS#8 ECDSA P-256 private key")]
    Malformed(String),
}

/// A P-256 signing key. `Debug` shows the public point only.
pub struct SigningKey {
    pair: EcdsaKeyPair,
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "SigningKey(public {})",
            crate::bytes::hex(self.public_point())
        )
    }
}

impl SigningKey {
    /// From PKCS#8 DER.
    pub fn from_pkcs8(der: &[u8], what: &str) -> Result<SigningKey, KeyError> {
        EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, der, &SystemRandom::new())
            .map(|pair| SigningKey { pair })
            .map_err(|_| KeyError::Malformed(what.to_string()))
    }

    /// The `key.pem` of a TLS identity directory.
    pub fn load_identity_key(dir: &Path) -> Result<SigningKey, KeyError> {
        let path = dir.join(crate::http::tls::KEY_FILE);
        let pem = std::fs::read_to_string(&path).map_err(|source| KeyError::Read {
            path: path.display().to_string(),
            source,
        })?;
        let (label, der) = pem_rfc7468::decode_vec(pem.as_bytes())
            .map_err(|_| KeyError::Malformed(path.display().to_string()))?;
        if label != "PRIVATE KEY" {
            return Err(KeyError::Malformed(path.display().to_string()));
        }
        SigningKey::from_pkcs8(&der, &path.display().to_string())
    }

    /// A fresh key and its PKCS#8 DER (to store).
    pub fn generate() -> (SigningKey, Vec<u8>) {
        let rng = SystemRandom::new();
        let doc = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, &rng)
            .expect("the OS random source failed");
        let der = doc.as_ref().to_vec();
        let key = SigningKey::from_pkcs8(&der, "fresh key").expect("ring reads its own PKCS#8");
        (key, der)
    }

    /// ECDSA P-256/SHA-256 over `message`, DER.
    pub fn sign(&self, message: &[u8]) -> Vec<u8> {
        self.pair
            .sign(&SystemRandom::new(), message)
            .expect("ECDSA signing with a valid key")
            .as_ref()
            .to_vec()
    }

    /// The uncompressed SEC1 point (04 ‖ X ‖ Y).
    pub fn public_point(&self) -> &[u8] {
        self.pair.public_key().as_ref()
    }
}

/// Whether `signature` over `message` is by the key of `certificate_der`. A certificate that
/// does not parse verifies nothing.
pub fn verify_by_certificate(certificate_der: &[u8], message: &[u8], signature: &[u8]) -> bool {
    Certificate::from_der(certificate_der)
        .is_ok_and(|c| crate::pki::verify::p256_sha256(&c.public_key, message, signature))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::Role;
    use crate::pki::gateway::ca::Ca;

    #[test]
    fn signs_with_the_peer_certificates_key() {
        let ca = Ca::ephemeral("roaming").unwrap();
        let id = ca.issue_tls(Role::Peer, "mec-no", &[], 3600).unwrap();
        let other = ca.issue_tls(Role::Peer, "mec-se", &[], 3600).unwrap();
        let key = SigningKey::from_pkcs8(&id.key_pkcs8_der, "k").unwrap();
        let sig = key.sign(b"roam");
        assert!(verify_by_certificate(&id.certificate_der, b"roam", &sig));
        assert!(!verify_by_certificate(&id.certificate_der, b"roaM", &sig));
        assert!(!verify_by_certificate(
            &other.certificate_der,
            b"roam",
            &sig
        ));
        assert!(!verify_by_certificate(b"junk", b"roam", &sig));
        assert!(!format!("{key:?}").contains("private"));
        let (fresh, der) = SigningKey::generate();
        assert_eq!(
            SigningKey::from_pkcs8(&der, "k").unwrap().public_point(),
            fresh.public_point()
        );
        assert!(SigningKey::from_pkcs8(b"junk", "k").is_err());
    }
}
