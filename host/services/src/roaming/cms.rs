//! End-to-end signing (Fig 5, "PKCS#1 to PKCS#7"): the user's token signs the contract bytes
//! with ECDSA P-256/SHA-256 after its PIN, and the home server wraps that signature, unchanged,
//! in a CMS SignedData (RFC 5652) with the user's seed-000 certificate, so that anyone with
//! the operator's CA certificate can check it with standard tools:
//!
//! ```text
//! openssl cms -verify -inform DER -in signed.p7 -CAfile gw-ca.pem -purpose any -out contract.bin
//! ```
//!
//! There are no signed attributes: with them the token would have to sign a DER SET the
//! server builds, and the user would no longer be signing the bytes the phone showed. Without
//! them, RFC 5652 §5.4 has the signature computed over the content itself — exactly what the
//! token signed. The content is encapsulated (`id-data`), so the CMS carries what was signed.
//! The structures are the RustCrypto `cms` crate's; nothing here writes ASN.1 by hand.

use cms::cert::{CertificateChoices, IssuerAndSerialNumber};
use cms::content_info::{CmsVersion, ContentInfo};
use cms::signed_data::{
    CertificateSet, EncapsulatedContentInfo, SignedData, SignerIdentifier, SignerInfo, SignerInfos,
};
use const_oid::db::{rfc5911, rfc5912};
use der::asn1::{OctetString, SetOfVec};
use der::{Any, Decode, Encode};
use spki::AlgorithmIdentifierOwned;

/// Why the CMS could not be built.
#[derive(Debug, thiserror::Error)]
pub enum CmsError {
    /// The user's certificate does not parse.
    #[error("the user's certificate: {0}")]
    Certificate(String),
    /// The signature is not over the content by the certificate's key.
    #[error("the signature does not verify with the user's certificate")]
    BadSignature,
    /// DER encoding failed (sizes beyond what DER can say).
    #[error("encoding the CMS: {0}")]
    Encode(String),
}

fn alg(oid: const_oid::ObjectIdentifier) -> AlgorithmIdentifierOwned {
    AlgorithmIdentifierOwned {
        oid,
        parameters: None,
    }
}

/// A DER `ContentInfo` holding a SignedData over `content`, signed by the holder of
/// `certificate_der` with `signature_der` (an ECDSA-Sig-Value over SHA-256 of `content`). The
/// signature is checked first: the home server never wraps what does not verify.
pub fn wrap(
    content: &[u8],
    signature_der: &[u8],
    certificate_der: &[u8],
) -> Result<Vec<u8>, CmsError> {
    let parsed = crate::pki::x509::Certificate::from_der(certificate_der)
        .map_err(|e| CmsError::Certificate(e.to_string()))?;
    if !crate::pki::verify::p256_sha256(&parsed.public_key, content, signature_der) {
        return Err(CmsError::BadSignature);
    }
    let cert = x509_cert::Certificate::from_der(certificate_der)
        .map_err(|e| CmsError::Certificate(e.to_string()))?;
    let enc = |e: der::Error| CmsError::Encode(e.to_string());
    let tbs = cert.tbs_certificate();
    let signer = SignerInfo {
        version: CmsVersion::V1,
        sid: SignerIdentifier::IssuerAndSerialNumber(IssuerAndSerialNumber {
            issuer: tbs.issuer().clone(),
            serial_number: tbs.serial_number().clone(),
        }),
        digest_alg: alg(rfc5912::ID_SHA_256),
        signed_attrs: None,
        signature_algorithm: alg(rfc5912::ECDSA_WITH_SHA_256),
        signature: OctetString::new(signature_der).map_err(enc)?,
        unsigned_attrs: None,
    };
    let mut digests = SetOfVec::new();
    digests.insert(alg(rfc5912::ID_SHA_256)).map_err(enc)?;
    let mut certs = SetOfVec::new();
    certs
        .insert(CertificateChoices::Certificate(cert))
        .map_err(enc)?;
    let mut signers = SetOfVec::new();
    signers.insert(signer).map_err(enc)?;
    let signed = SignedData {
        version: CmsVersion::V1,
        digest_algorithms: digests,
        encap_content_info: EncapsulatedContentInfo {
            econtent_type: rfc5911::ID_DATA,
            econtent: Some(
                Any::encode_from(&OctetString::new(content).map_err(enc)?).map_err(enc)?,
            ),
        },
        certificates: Some(CertificateSet(certs)),
        crls: None,
        signer_infos: SignerInfos(signers),
    };
    ContentInfo {
        content_type: rfc5911::ID_SIGNED_DATA,
        content: Any::encode_from(&signed).map_err(enc)?,
    }
    .to_der()
    .map_err(enc)
}
