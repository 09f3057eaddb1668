//! X.509 v3 certificates (RFC 5280) for the temporary PKI: the gateway's self-signed CA and
//! the subscriber certificates it issues in message 260, both ECDSA P-256 with SHA-256, plus a
//! strict parser that sellers, the mobile station and the gateway use to check them.
//!
//! A subscriber certificate is, in DER (docs/pki-messages.md has the annotated bytes):
//!
//! ```text
//! Certificate { tbsCertificate {
//!     version v3, serialNumber (16 random bytes), signature ecdsa-with-SHA256,
//!     issuer  O=<operator>, CN=<operator> gateway CA,
//!     validity notBefore = issue time, notAfter = notBefore + validitySeconds,
//!     subject O=<operator>, CN=<alias, or "subscriber" without one>,
//!     subjectPublicKeyInfo  id-ecPublicKey prime256v1, the token's key,
//!     extensions {
//!       basicConstraints  critical  cA FALSE
//!       keyUsage          critical  digitalSignature
//!       subjectKeyIdentifier, authorityKeyIdentifier  SHA-256(key)[0..20]
//!       1.3.6.1.4.1.55555.1.1  non-critical  SimlabRestrictions (restrictions.rs)
//!     } },
//!   signatureAlgorithm ecdsa-with-SHA256, signature (the gateway CA's) }
//! ```
//!
//! The restrictions extension is non-critical so that generic tools (`openssl verify`) accept
//! the certificate; simlab's seller and gateway refuse a subscriber certificate without it.

use super::der::{self, Reader, Tlv, tag};
use super::restrictions::{EXTENSION_OID, Restrictions};
use p256::ecdsa::signature::{Signer, Verifier};
use p256::ecdsa::{Signature, SigningKey, VerifyingKey};
use sha2::{Digest, Sha256};
use std::fmt;

/// OBJECT IDENTIFIER contents.
pub mod oid {
    /// id-ecPublicKey, 1.2.840.10045.2.1 (RFC 5480).
    pub const EC_PUBLIC_KEY: &[u8] = &[0x2A, 0x86, 0x48, 0xCE, 0x3D, 0x02, 0x01];
    /// prime256v1 / secp256r1, 1.2.840.10045.3.1.7.
    pub const PRIME256V1: &[u8] = &[0x2A, 0x86, 0x48, 0xCE, 0x3D, 0x03, 0x01, 0x07];
    /// ecdsa-with-SHA256, 1.2.840.10045.4.3.2 (RFC 5758).
    pub const ECDSA_SHA256: &[u8] = &[0x2A, 0x86, 0x48, 0xCE, 0x3D, 0x04, 0x03, 0x02];
    /// id-at-commonName, 2.5.4.3.
    pub const COMMON_NAME: &[u8] = &[0x55, 0x04, 0x03];
    /// id-at-organizationName, 2.5.4.10.
    pub const ORGANIZATION: &[u8] = &[0x55, 0x04, 0x0A];
    /// id-ce-basicConstraints, 2.5.29.19.
    pub const BASIC_CONSTRAINTS: &[u8] = &[0x55, 0x1D, 0x13];
    /// id-ce-keyUsage, 2.5.29.15.
    pub const KEY_USAGE: &[u8] = &[0x55, 0x1D, 0x0F];
    /// id-ce-subjectKeyIdentifier, 2.5.29.14.
    pub const SUBJECT_KEY_ID: &[u8] = &[0x55, 0x1D, 0x0E];
    /// id-ce-authorityKeyIdentifier, 2.5.29.35.
    pub const AUTHORITY_KEY_ID: &[u8] = &[0x55, 0x1D, 0x23];
}

/// An uncompressed P-256 point: 04 ‖ X ‖ Y.
pub const P256_POINT_LEN: usize = 65;

/// Why a certificate is not acceptable.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertError(pub String);

impl fmt::Display for CertError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for CertError {}

impl From<der::DerError> for CertError {
    fn from(e: der::DerError) -> Self {
        CertError(e.to_string())
    }
}

fn bad<T>(reason: impl Into<String>) -> Result<T, CertError> {
    Err(CertError(reason.into()))
}

/// SubjectPublicKeyInfo of a P-256 key (RFC 5480).
pub fn spki(public_key: &[u8; P256_POINT_LEN]) -> Vec<u8> {
    der::seq(&[
        &der::seq(&[&der::oid(oid::EC_PUBLIC_KEY), &der::oid(oid::PRIME256V1)]),
        &der::bits(public_key),
    ])
}

/// A Name of two RDNs, O then CN, as UTF8Strings.
pub fn name(organization: &str, common_name: &str) -> Vec<u8> {
    let atv =
        |oid: &[u8], value: &str| der::set(&[&der::seq(&[&der::oid(oid), &der::utf8(value)])]);
    der::seq(&[
        &atv(oid::ORGANIZATION, organization),
        &atv(oid::COMMON_NAME, common_name),
    ])
}

/// The key identifier of RFC 7093 section 2 method 1: the leftmost 160 bits of SHA-256 of the
/// public key's BIT STRING contents.
pub fn key_id(public_key: &[u8; P256_POINT_LEN]) -> [u8; 20] {
    let digest = Sha256::digest(public_key);
    let mut id = [0u8; 20];
    id.copy_from_slice(&digest[..20]);
    id
}

/// What a certificate is for.
#[derive(Clone, Debug)]
pub enum Kind<'a> {
    /// The gateway's own CA: may sign certificates, not other CAs.
    Ca,
    /// A subscriber's key: may sign invoices, within these restrictions.
    Subscriber(&'a Restrictions),
}

/// The fields of a certificate to issue.
#[derive(Clone, Debug)]
pub struct Template<'a> {
    /// INTEGER magnitude bytes (positive, at most 20).
    pub serial: &'a [u8],
    /// Issuer Name, DER.
    pub issuer: &'a [u8],
    /// Subject Name, DER.
    pub subject: &'a [u8],
    pub not_before: u64,
    pub not_after: u64,
    pub public_key: &'a [u8; P256_POINT_LEN],
    /// The issuer's key identifier.
    pub authority_key_id: &'a [u8; 20],
    pub kind: Kind<'a>,
}

fn extension(oid: &[u8], critical: bool, value: &[u8]) -> Vec<u8> {
    if critical {
        der::seq(&[&der::oid(oid), &der::boolean(true), &der::octets(value)])
    } else {
        der::seq(&[&der::oid(oid), &der::octets(value)])
    }
}

fn algorithm() -> Vec<u8> {
    // ecdsa-with-SHA256 has absent parameters (RFC 5758 3.2).
    der::seq(&[&der::oid(oid::ECDSA_SHA256)])
}

/// The DER TBSCertificate of `t`.
pub fn tbs(t: &Template) -> Vec<u8> {
    let (basic, usage) = match t.kind {
        // cA TRUE, pathLenConstraint 0: it signs subscriber certificates, never another CA.
        // keyUsage keyCertSign (bit 5) and cRLSign (bit 6): one unused bit.
        Kind::Ca => (
            der::seq(&[&der::boolean(true), &der::u64_int(0)]),
            der::tlv(tag::BIT_STRING, &[0x01, 0x06]),
        ),
        // cA FALSE is the default and so absent; keyUsage digitalSignature (bit 0).
        Kind::Subscriber(_) => (der::seq(&[]), der::tlv(tag::BIT_STRING, &[0x07, 0x80])),
    };
    let ski = key_id(t.public_key);
    let mut extensions = vec![
        extension(oid::BASIC_CONSTRAINTS, true, &basic),
        extension(oid::KEY_USAGE, true, &usage),
        extension(oid::SUBJECT_KEY_ID, false, &der::octets(&ski)),
        extension(
            oid::AUTHORITY_KEY_ID,
            false,
            &der::seq(&[&der::tlv(tag::implicit(0), t.authority_key_id)]),
        ),
    ];
    if let Kind::Subscriber(r) = t.kind {
        extensions.push(extension(&EXTENSION_OID, false, &r.to_der()));
    }
    let extensions: Vec<&[u8]> = extensions.iter().map(Vec::as_slice).collect();
    der::seq(&[
        &der::explicit(0, &der::u64_int(2)),
        &der::uint(t.serial),
        &algorithm(),
        t.issuer,
        &der::seq(&[&der::time(t.not_before), &der::time(t.not_after)]),
        t.subject,
        &spki(t.public_key),
        &der::explicit(3, &der::seq(&extensions)),
    ])
}

/// Signs `t` with the issuer's key: the DER Certificate.
pub fn issue(t: &Template, issuer_key: &SigningKey) -> Vec<u8> {
    let tbs = tbs(t);
    let signature: Signature = issuer_key.sign(&tbs);
    der::seq(&[
        &tbs,
        &algorithm(),
        &der::bits(signature.to_der().as_bytes()),
    ])
}

/// A parsed certificate: the fields simlab checks, and the bytes the signature covers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Certificate {
    /// The whole certificate as received.
    pub der: Vec<u8>,
    /// The TBSCertificate bytes, exactly as signed.
    pub tbs: Vec<u8>,
    /// INTEGER magnitude bytes.
    pub serial: Vec<u8>,
    /// Issuer and subject Names, DER, for exact comparison.
    pub issuer: Vec<u8>,
    pub subject: Vec<u8>,
    pub subject_common_name: Option<String>,
    pub subject_organization: Option<String>,
    pub not_before: u64,
    pub not_after: u64,
    pub public_key: [u8; P256_POINT_LEN],
    /// basicConstraints cA.
    pub is_ca: bool,
    /// The simlab restrictions extension, when present.
    pub restrictions: Option<Restrictions>,
    /// The issuer's ECDSA signature, DER.
    pub signature: Vec<u8>,
}

impl Certificate {
    /// Parses DER strictly: v3, ECDSA-SHA256, a P-256 subject key, no unknown critical
    /// extension, nothing trailing.
    pub fn from_der(bytes: &[u8]) -> Result<Certificate, CertError> {
        let outer = der::single(bytes, tag::SEQUENCE)?;
        let mut r = Reader::new(outer);
        let tbs_tlv = r.next_tlv()?;
        if tbs_tlv.tag != tag::SEQUENCE {
            return bad("tbsCertificate is not a SEQUENCE");
        }
        let outer_alg = r.expect(tag::SEQUENCE)?;
        let signature = der::read_bits(r.expect(tag::BIT_STRING)?)?.to_vec();
        r.finish()?;
        check_algorithm(outer_alg)?;

        let mut t = Reader::new(tbs_tlv.value);
        let version = t
            .optional(tag::explicit(0))?
            .ok_or_else(|| CertError("not an X.509 v3 certificate (no version)".into()))?;
        if der::read_u64(der::single(version, tag::INTEGER)?)? != 2 {
            return bad("not an X.509 v3 certificate");
        }
        let serial = der::read_uint(t.expect(tag::INTEGER)?)?.to_vec();
        if serial.len() > 20 {
            return bad("serial longer than 20 bytes");
        }
        let inner_alg = t.expect(tag::SEQUENCE)?;
        if inner_alg != outer_alg {
            return bad("the two signature algorithms differ");
        }
        let issuer = t.next_tlv()?;
        if issuer.tag != tag::SEQUENCE {
            return bad("issuer is not a Name");
        }
        let mut validity = Reader::new(t.expect(tag::SEQUENCE)?);
        let not_before = der::read_time(&validity.next_tlv()?)?;
        let not_after = der::read_time(&validity.next_tlv()?)?;
        validity.finish()?;
        let subject = t.next_tlv()?;
        if subject.tag != tag::SEQUENCE {
            return bad("subject is not a Name");
        }
        let public_key = read_spki(t.expect(tag::SEQUENCE)?)?;
        // issuerUniqueID [1] and subjectUniqueID [2] are allowed and ignored.
        t.optional(tag::implicit(1))?;
        t.optional(tag::implicit(2))?;
        let mut is_ca = false;
        let mut restrictions = None;
        if let Some(exts) = t.optional(tag::explicit(3))? {
            let mut list = Reader::new(der::single(exts, tag::SEQUENCE)?);
            let mut seen: Vec<&[u8]> = Vec::new();
            while !list.is_empty() {
                let mut e = Reader::new(list.expect(tag::SEQUENCE)?);
                let id = e.expect(tag::OID)?;
                let critical = match e.optional(tag::BOOLEAN)? {
                    Some(v) => {
                        let c = der::read_bool(v)?;
                        if !c {
                            return bad("critical FALSE must be absent in DER");
                        }
                        c
                    }
                    None => false,
                };
                let value = e.expect(tag::OCTET_STRING)?;
                e.finish()?;
                if seen.contains(&id) {
                    return bad("an extension appears twice");
                }
                seen.push(id);
                match id {
                    oid::BASIC_CONSTRAINTS => {
                        let mut bc = Reader::new(der::single(value, tag::SEQUENCE)?);
                        if let Some(ca) = bc.optional(tag::BOOLEAN)? {
                            is_ca = der::read_bool(ca)?;
                        }
                        bc.optional(tag::INTEGER)?;
                        bc.finish()?;
                    }
                    id if id == EXTENSION_OID => {
                        restrictions = Some(
                            Restrictions::from_der(value)
                                .map_err(|e| CertError(format!("restrictions extension: {e}")))?,
                        );
                    }
                    oid::KEY_USAGE | oid::SUBJECT_KEY_ID | oid::AUTHORITY_KEY_ID => {}
                    _ if critical => {
                        return bad("an unknown critical extension (RFC 5280 4.2)");
                    }
                    _ => {}
                }
            }
        }
        t.finish()?;
        let (subject_organization, subject_common_name) = name_parts(subject.value)?;
        Ok(Certificate {
            der: bytes.to_vec(),
            tbs: tbs_tlv.raw.to_vec(),
            serial,
            issuer: issuer.raw.to_vec(),
            subject: subject.raw.to_vec(),
            subject_common_name,
            subject_organization,
            not_before,
            not_after,
            public_key,
            is_ca,
            restrictions,
            signature,
        })
    }

    /// Parses a PEM `CERTIFICATE`.
    pub fn from_pem(text: &str) -> Result<Certificate, CertError> {
        Self::from_der(&der::pem_decode("CERTIFICATE", text)?)
    }

    pub fn to_pem(&self) -> String {
        der::pem_encode("CERTIFICATE", &self.der)
    }

    /// The subject key, for verifying what it signed.
    pub fn verifying_key(&self) -> Result<VerifyingKey, CertError> {
        VerifyingKey::from_sec1_bytes(&self.public_key)
            .map_err(|_| CertError("the public key is not a point on P-256".into()))
    }

    /// Whether `ca` issued this certificate: the issuer Name is the CA's subject, byte for
    /// byte, and the CA's key verifies the signature over the TBSCertificate.
    pub fn check_issued_by(&self, ca: &Certificate) -> Result<(), CertError> {
        if !ca.is_ca {
            return bad("the issuer certificate is not a CA");
        }
        if self.issuer != ca.subject {
            return bad("issued by another CA (the issuer name differs)");
        }
        if !verify(&ca.verifying_key()?, &self.tbs, &self.signature) {
            return bad("the CA signature does not verify");
        }
        Ok(())
    }

    /// Whether `at` (seconds since 1970) lies in notBefore..=notAfter.
    pub fn valid_at(&self, at: u64) -> bool {
        (self.not_before..=self.not_after).contains(&at)
    }

    /// The serial in lower-case hex.
    pub fn serial_hex(&self) -> String {
        simlab_card::hex::encode(&self.serial)
    }
}

/// ECDSA P-256 / SHA-256 verification of `message` against a DER signature.
pub fn verify(key: &VerifyingKey, message: &[u8], signature_der: &[u8]) -> bool {
    Signature::from_der(signature_der).is_ok_and(|sig| key.verify(message, &sig).is_ok())
}

fn check_algorithm(alg: &[u8]) -> Result<(), CertError> {
    let mut r = Reader::new(alg);
    if r.expect(tag::OID)? != oid::ECDSA_SHA256 {
        return bad("signed with an algorithm other than ecdsa-with-SHA256");
    }
    r.finish()?;
    Ok(())
}

fn read_spki(value: &[u8]) -> Result<[u8; P256_POINT_LEN], CertError> {
    let mut r = Reader::new(value);
    let mut alg = Reader::new(r.expect(tag::SEQUENCE)?);
    if alg.expect(tag::OID)? != oid::EC_PUBLIC_KEY || alg.expect(tag::OID)? != oid::PRIME256V1 {
        return bad("the subject key is not a P-256 key");
    }
    alg.finish()?;
    let point = der::read_bits(r.expect(tag::BIT_STRING)?)?;
    r.finish()?;
    match <[u8; P256_POINT_LEN]>::try_from(point) {
        Ok(p) if p[0] == 0x04 => Ok(p),
        _ => bad("the subject key is not an uncompressed P-256 point"),
    }
}

/// The organization and common name of a Name (the last of each, as strings).
fn name_parts(name: &[u8]) -> Result<(Option<String>, Option<String>), CertError> {
    let mut o = None;
    let mut cn = None;
    let mut rdns = Reader::new(name);
    while !rdns.is_empty() {
        let mut set = Reader::new(rdns.expect(tag::SET)?);
        while !set.is_empty() {
            let mut atv = Reader::new(set.expect(tag::SEQUENCE)?);
            let id = atv.expect(tag::OID)?;
            let value: Tlv = atv.next_tlv()?;
            atv.finish()?;
            let text = match value.tag {
                tag::UTF8_STRING | tag::PRINTABLE_STRING | tag::IA5_STRING => {
                    String::from_utf8(value.value.to_vec()).ok()
                }
                _ => None,
            };
            match id {
                oid::COMMON_NAME => cn = text,
                oid::ORGANIZATION => o = text,
                _ => {}
            }
        }
    }
    Ok((o, cn))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(byte: u8) -> SigningKey {
        SigningKey::from_slice(&[byte; 32]).unwrap()
    }

    fn point(k: &SigningKey) -> [u8; 65] {
        k.verifying_key()
            .to_sec1_point(false)
            .as_bytes()
            .try_into()
            .unwrap()
    }

    fn make_ca(k: &SigningKey) -> Certificate {
        let pk = point(k);
        let n = name("simlab", "simlab gateway CA");
        let der = issue(
            &Template {
                serial: &[1],
                issuer: &n,
                subject: &n,
                not_before: 1_700_000_000,
                not_after: 2_000_000_000,
                public_key: &pk,
                authority_key_id: &key_id(&pk),
                kind: Kind::Ca,
            },
            k,
        );
        Certificate::from_der(&der).unwrap()
    }

    #[test]
    fn issue_parse_and_verify() {
        let ca_key = key(7);
        let ca = make_ca(&ca_key);
        assert!(ca.is_ca);
        ca.check_issued_by(&ca).unwrap();
        let sub = key(9);
        let pk = point(&sub);
        let r = Restrictions::default();
        let der = issue(
            &Template {
                serial: &[0x42; 16],
                issuer: &ca.subject,
                subject: &name("simlab", "Alice ÄÖ, \"quoted\""),
                not_before: 1_700_000_000,
                not_after: 1_700_000_000 + r.validity_seconds,
                public_key: &pk,
                authority_key_id: &key_id(&ca.public_key),
                kind: Kind::Subscriber(&r),
            },
            &ca_key,
        );
        let c = Certificate::from_der(&der).unwrap();
        assert_eq!(c.serial, [0x42; 16]);
        assert_eq!(c.public_key, pk);
        assert_eq!(c.restrictions, Some(r));
        assert!(!c.is_ca);
        assert_eq!(
            c.subject_common_name.as_deref(),
            Some("Alice ÄÖ, \"quoted\"")
        );
        assert!(c.valid_at(1_700_000_000) && !c.valid_at(1_699_999_999));
        c.check_issued_by(&ca).unwrap();
        assert_eq!(Certificate::from_pem(&c.to_pem()).unwrap(), c);

        // Another CA with the same name: the signature gives it away.
        let other = make_ca(&key(8));
        assert!(
            c.check_issued_by(&other)
                .unwrap_err()
                .0
                .contains("signature")
        );
        // A flipped bit anywhere in the signed part.
        let mut tampered = der.clone();
        let at = tampered.len() / 2;
        tampered[at] ^= 1;
        if let Ok(t) = Certificate::from_der(&tampered) {
            assert!(t.check_issued_by(&ca).is_err());
        }
        // Trailing garbage and truncation.
        assert!(Certificate::from_der(&[&der[..], &[0]].concat()).is_err());
        assert!(Certificate::from_der(&der[..der.len() - 1]).is_err());
    }

    #[test]
    fn signatures() {
        let k = key(3);
        let sig: Signature = k.sign(b"invoice");
        let vk = *k.verifying_key();
        assert!(verify(&vk, b"invoice", sig.to_der().as_bytes()));
        assert!(!verify(&vk, b"invoicE", sig.to_der().as_bytes()));
        assert!(!verify(&vk, b"invoice", b"\x30\x00"));
    }
}
