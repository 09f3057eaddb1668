//! X.509 v3 certificates (RFC 5280) for the temporary PKI: the gateway's self-signed CA, the
//! subscriber certificates it issues in message 260 and the TLS certificates it issues by
//! role, all ECDSA P-256 with SHA-256, plus a strict parser that sellers, the mobile station
//! and the gateway use to check them.
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
//!
//! The DER is written and read by RustCrypto's `der`/`x509-cert`, never by hand: a parser
//! written for a handful of fixed structures is exactly where a malformed certificate from a
//! buyer turns into a panic. The fixtures in `fixtures/pki/` pin the bytes.

use super::restrictions::{EXTENSION_OID, Restrictions};
use const_oid::ObjectIdentifier;
use const_oid::db::{rfc4519, rfc5280, rfc5912};
use der::asn1::{Any, BitString, Ia5String, OctetString, Utf8StringRef};
use der::{Decode, DecodePem, Encode, Tag, Tagged};
use p256::ecdsa::signature::{Keypair, Signer};
use p256::ecdsa::{DerSignature, SigningKey, VerifyingKey};
use sha2::{Digest, Sha256};
use spki::{AlgorithmIdentifierOwned, DynSignatureAlgorithmIdentifier, EncodePublicKey};
use std::fmt;
use std::net::IpAddr;
use std::time::Duration;
use x509_cert::builder::profile::BuilderProfile;
use x509_cert::builder::{Builder, CertificateBuilder};
use x509_cert::ext::pkix::name::GeneralName;
use x509_cert::ext::pkix::{
    AuthorityKeyIdentifier, BasicConstraints, ExtendedKeyUsage, KeyUsage, KeyUsages,
    SubjectAltName, SubjectKeyIdentifier,
};
use x509_cert::ext::{Extension, Extensions};
use x509_cert::name::{Name, RdnSequence, RelativeDistinguishedName};
use x509_cert::serial_number::SerialNumber;
use x509_cert::time::{Time, Validity};

/// An uncompressed P-256 point: 04 ‖ X ‖ Y.
pub const P256_POINT_LEN: usize = 65;

/// Why a certificate is not acceptable (or could not be built).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertError(pub String);

impl fmt::Display for CertError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for CertError {}

fn bad<T>(reason: impl Into<String>) -> Result<T, CertError> {
    Err(CertError(reason.into()))
}

/// Prefixes a `der` error with what was being read or written, so a refusal names the field.
fn ctx(what: &'static str) -> impl Fn(der::Error) -> CertError {
    move |e| CertError(format!("{what}: {e}"))
}

fn p256_algorithm() -> Result<AlgorithmIdentifierOwned, der::Error> {
    Ok(AlgorithmIdentifierOwned {
        oid: rfc5912::ID_EC_PUBLIC_KEY,
        parameters: Some(Any::encode_from(&rfc5912::SECP_256_R_1)?),
    })
}

fn spki_owned(public_key: &[u8]) -> Result<x509_cert::spki::SubjectPublicKeyInfoOwned, der::Error> {
    Ok(x509_cert::spki::SubjectPublicKeyInfoOwned {
        algorithm: p256_algorithm()?,
        subject_public_key: BitString::from_bytes(public_key)?,
    })
}

/// SubjectPublicKeyInfo of a P-256 key (RFC 5480), DER: what `openssl pkey -pubin` reads.
pub fn spki(public_key: &[u8; P256_POINT_LEN]) -> Vec<u8> {
    // Two fixed OIDs and a 65-byte BIT STRING: nothing here can exceed a DER length.
    spki_owned(public_key)
        .and_then(|s| s.to_der())
        .expect("a P-256 SubjectPublicKeyInfo always encodes")
}

fn rdn(oid: ObjectIdentifier, value: &str) -> Result<RelativeDistinguishedName, CertError> {
    let mut set = RelativeDistinguishedName::default();
    set.insert(x509_cert::attr::AttributeTypeAndValue {
        oid,
        value: Any::encode_from(&Utf8StringRef::new(value).map_err(ctx("name"))?)
            .map_err(ctx("name"))?,
    })
    .map_err(ctx("name"))?;
    Ok(set)
}

/// A Name of RDNs in this order, each one UTF8String. Built from parts rather than parsed from
/// an RFC 4514 string, so that a comma or quote in an alias is just a character.
fn name_of(parts: &[(ObjectIdentifier, &str)]) -> Result<Name, CertError> {
    let mut seq = RdnSequence::default();
    for &(oid, value) in parts {
        seq.push(rdn(oid, value)?);
    }
    // x509-cert builds a Name only through decoding (its constructor is "hazmat"): encode the
    // sequence, decode it as a Name.
    Name::from_der(&seq.to_der().map_err(ctx("name"))?).map_err(ctx("name"))
}

/// `O=<organization>, CN=<common_name>`: the CA's and the subscribers' names.
pub fn name(organization: &str, common_name: &str) -> Result<Name, CertError> {
    name_of(&[
        (rfc4519::ORGANIZATION_NAME, organization),
        (rfc4519::CN, common_name),
    ])
}

/// `O=<organization>, OU=<unit>, CN=<common_name>`: TLS certificates, whose OU is the role.
pub fn name_with_unit(
    organization: &str,
    unit: &str,
    common_name: &str,
) -> Result<Name, CertError> {
    name_of(&[
        (rfc4519::ORGANIZATION_NAME, organization),
        (rfc4519::ORGANIZATIONAL_UNIT_NAME, unit),
        (rfc4519::CN, common_name),
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

/// What goes into a TLS certificate beyond the common extensions.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsUsage {
    /// extendedKeyUsage purposes (id-kp-serverAuth, id-kp-clientAuth).
    pub extended_key_usage: Vec<ObjectIdentifier>,
    /// subjectAltName: an IP literal becomes an iPAddress, anything else a dNSName.
    pub hosts: Vec<String>,
}

/// What a certificate is for.
#[derive(Clone, Debug)]
pub enum Kind<'a> {
    /// The gateway's own CA: may sign certificates, not other CAs.
    Ca,
    /// A subscriber's key: may sign invoices, within these restrictions.
    Subscriber(&'a Restrictions),
    /// A TLS endpoint of a role.
    Tls(&'a TlsUsage),
}

/// The fields of a certificate to issue.
#[derive(Clone, Debug)]
pub struct Template<'a> {
    /// INTEGER magnitude bytes (positive, at most 20).
    pub serial: &'a [u8],
    pub issuer: &'a Name,
    pub subject: &'a Name,
    pub not_before: u64,
    pub not_after: u64,
    pub public_key: &'a [u8; P256_POINT_LEN],
    /// The issuer's key identifier.
    pub authority_key_id: &'a [u8; 20],
    pub kind: Kind<'a>,
}

/// An X.509 Time from Unix seconds: `x509-cert` picks UTCTime through 2049 and GeneralizedTime
/// from 2050 (RFC 5280 4.1.2.5).
pub fn time(unix: u64) -> Result<Time, CertError> {
    der::DateTime::from_unix_duration(Duration::from_secs(unix))
        .map(Time::from)
        .map_err(|e| CertError(format!("time {unix} is not representable: {e}")))
}

fn extension(
    oid: ObjectIdentifier,
    critical: bool,
    value: &impl Encode,
) -> Result<Extension, CertError> {
    let value = value.to_der().map_err(ctx("extension"))?;
    Ok(Extension {
        extn_id: oid,
        critical,
        extn_value: OctetString::new(value).map_err(ctx("extension"))?,
    })
}

/// subjectAltName entries for `hosts`.
fn general_names(hosts: &[String]) -> Result<Vec<GeneralName>, CertError> {
    hosts
        .iter()
        .map(|h| match h.parse::<IpAddr>() {
            Ok(IpAddr::V4(ip)) => {
                OctetString::new(ip.octets().to_vec()).map(GeneralName::IpAddress)
            }
            Ok(IpAddr::V6(ip)) => {
                OctetString::new(ip.octets().to_vec()).map(GeneralName::IpAddress)
            }
            Err(_) => Ia5String::new(h).map(GeneralName::DnsName),
        })
        .collect::<Result<_, _>>()
        .map_err(|e| CertError(format!("subjectAltName: {e}")))
}

/// The extensions of `t`, in the documented order.
fn extensions(t: &Template) -> Result<Extensions, CertError> {
    let (basic, usage) = match t.kind {
        // pathLenConstraint 0: it signs end-entity certificates, never another CA.
        Kind::Ca => (
            BasicConstraints {
                ca: true,
                path_len_constraint: Some(0),
            },
            KeyUsage(KeyUsages::KeyCertSign | KeyUsages::CRLSign),
        ),
        Kind::Subscriber(_) | Kind::Tls(_) => (
            BasicConstraints {
                ca: false,
                path_len_constraint: None,
            },
            KeyUsage(KeyUsages::DigitalSignature.into()),
        ),
    };
    let mut out = vec![
        extension(rfc5280::ID_CE_BASIC_CONSTRAINTS, true, &basic)?,
        extension(rfc5280::ID_CE_KEY_USAGE, true, &usage)?,
    ];
    if let Kind::Tls(tls) = t.kind {
        out.push(extension(
            rfc5280::ID_CE_EXT_KEY_USAGE,
            false,
            &ExtendedKeyUsage(tls.extended_key_usage.clone()),
        )?);
        // Non-critical: the subject is not empty (RFC 5280 4.2.1.6).
        out.push(extension(
            rfc5280::ID_CE_SUBJECT_ALT_NAME,
            false,
            &SubjectAltName(general_names(&tls.hosts)?),
        )?);
    }
    let octets = |id: &[u8]| OctetString::new(id.to_vec()).map_err(ctx("key identifier"));
    out.push(extension(
        rfc5280::ID_CE_SUBJECT_KEY_IDENTIFIER,
        false,
        &SubjectKeyIdentifier(octets(&key_id(t.public_key))?),
    )?);
    out.push(extension(
        rfc5280::ID_CE_AUTHORITY_KEY_IDENTIFIER,
        false,
        &AuthorityKeyIdentifier {
            key_identifier: Some(octets(t.authority_key_id)?),
            authority_cert_issuer: None,
            authority_cert_serial_number: None,
        },
    )?);
    if let Kind::Subscriber(r) = t.kind {
        out.push(Extension {
            extn_id: EXTENSION_OID,
            critical: false,
            extn_value: OctetString::new(r.to_der()).map_err(ctx("restrictions"))?,
        });
    }
    Ok(out)
}

/// The issuer, subject and extensions of one certificate, for `x509-cert`'s builder.
struct Profile {
    issuer: Name,
    subject: Name,
    extensions: Extensions,
}

impl BuilderProfile for Profile {
    fn get_issuer(&self, _subject: &Name) -> Name {
        self.issuer.clone()
    }

    fn get_subject(&self) -> Name {
        self.subject.clone()
    }

    fn build_extensions(
        &self,
        _spk: spki::SubjectPublicKeyInfoRef<'_>,
        _issuer_spk: spki::SubjectPublicKeyInfoRef<'_>,
        _tbs: &x509_cert::TbsCertificate,
    ) -> x509_cert::builder::Result<Vec<Extension>> {
        Ok(self.extensions.clone())
    }
}

/// The issuer's key as the builder wants it. p256 is built without its `pkcs8` feature (the
/// card model shares it), so the SPKI and algorithm identifier come from here.
struct IssuerKey<'a>(&'a SigningKey);

/// The issuer's public key, as a SEC1 point.
#[derive(Clone)]
struct IssuerPublic([u8; P256_POINT_LEN]);

impl EncodePublicKey for IssuerPublic {
    fn to_public_key_der(&self) -> spki::Result<der::Document> {
        Ok(der::Document::encode_msg(&spki_owned(&self.0)?)?)
    }
}

impl Keypair for IssuerKey<'_> {
    type VerifyingKey = IssuerPublic;

    fn verifying_key(&self) -> IssuerPublic {
        IssuerPublic(sec1_point(self.0.verifying_key()))
    }
}

impl DynSignatureAlgorithmIdentifier for IssuerKey<'_> {
    fn signature_algorithm_identifier(&self) -> spki::Result<AlgorithmIdentifierOwned> {
        // ecdsa-with-SHA256 has absent parameters (RFC 5758 3.2).
        Ok(AlgorithmIdentifierOwned {
            oid: rfc5912::ECDSA_WITH_SHA_256,
            parameters: None,
        })
    }
}

impl Signer<DerSignature> for IssuerKey<'_> {
    fn try_sign(&self, msg: &[u8]) -> Result<DerSignature, p256::ecdsa::Error> {
        self.0.try_sign(msg)
    }
}

/// The uncompressed SEC1 point of a verifying key.
pub fn sec1_point(key: &VerifyingKey) -> [u8; P256_POINT_LEN] {
    let mut out = [0u8; P256_POINT_LEN];
    out.copy_from_slice(key.to_sec1_point(false).as_bytes());
    out
}

/// Signs `t` with the issuer's key: the DER Certificate.
pub fn issue(t: &Template, issuer_key: &SigningKey) -> Result<Vec<u8>, CertError> {
    if t.not_after < t.not_before {
        return bad("notAfter is before notBefore");
    }
    let serial = SerialNumber::new(t.serial).map_err(ctx("serialNumber"))?;
    let validity = Validity::new(time(t.not_before)?, time(t.not_after)?);
    let profile = Profile {
        issuer: t.issuer.clone(),
        subject: t.subject.clone(),
        extensions: extensions(t)?,
    };
    let spki = spki_owned(t.public_key).map_err(ctx("subjectPublicKeyInfo"))?;
    let builder = CertificateBuilder::new(profile, serial, validity, spki)
        .map_err(|e| CertError(format!("building the certificate: {e}")))?;
    let cert = builder
        .build::<_, DerSignature>(&IssuerKey(issuer_key))
        .map_err(|e| CertError(format!("signing the certificate: {e}")))?;
    cert.to_der().map_err(ctx("certificate"))
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
    /// The OU, which names the role in TLS certificates (`seller`, `gateway`, ...).
    pub subject_organizational_unit: Option<String>,
    pub not_before: u64,
    pub not_after: u64,
    pub public_key: [u8; P256_POINT_LEN],
    /// basicConstraints cA.
    pub is_ca: bool,
    /// The simlab restrictions extension, when present.
    pub restrictions: Option<Restrictions>,
    /// extendedKeyUsage purposes, empty when the extension is absent.
    pub extended_key_usage: Vec<ObjectIdentifier>,
    /// The issuer's ECDSA signature, DER.
    pub signature: Vec<u8>,
}

impl Certificate {
    /// Parses DER strictly: v3, ECDSA-SHA256, a P-256 subject key, no unknown critical
    /// extension, no extension twice, every known extension well formed, times as RFC 5280
    /// wants them, and the bytes exactly what re-encoding gives (distinguished encoding, nothing
    /// trailing).
    pub fn from_der(bytes: &[u8]) -> Result<Certificate, CertError> {
        let cert = x509_cert::Certificate::from_der(bytes).map_err(ctx("certificate"))?;
        if cert.to_der().map_err(ctx("certificate"))? != bytes {
            return bad("certificate: not in distinguished encoding (DER, RFC 5280 times)");
        }
        let tbs = cert.tbs_certificate();
        if tbs.version() != x509_cert::Version::V3 {
            return bad("not an X.509 v3 certificate");
        }
        check_algorithm(cert.signature_algorithm())?;
        if tbs.signature() != cert.signature_algorithm() {
            return bad("the two signature algorithms differ");
        }
        let serial = serial_magnitude(tbs.serial_number().as_bytes())?;
        let validity = tbs.validity();
        let not_before = validity.not_before.to_unix_duration().as_secs();
        let not_after = validity.not_after.to_unix_duration().as_secs();
        let public_key = read_spki(tbs.subject_public_key_info())?;
        let mut is_ca = false;
        let mut restrictions = None;
        let mut extended_key_usage = Vec::new();
        let mut seen: Vec<ObjectIdentifier> = Vec::new();
        for e in tbs.extensions().map(Vec::as_slice).unwrap_or_default() {
            if seen.contains(&e.extn_id) {
                return bad(format!("extension {} appears twice", e.extn_id));
            }
            seen.push(e.extn_id);
            let value = e.extn_value.as_bytes();
            match e.extn_id {
                rfc5280::ID_CE_BASIC_CONSTRAINTS => {
                    is_ca = BasicConstraints::from_der(value)
                        .map_err(ctx("basicConstraints"))?
                        .ca;
                }
                rfc5280::ID_CE_KEY_USAGE => {
                    KeyUsage::from_der(value).map_err(ctx("keyUsage"))?;
                }
                rfc5280::ID_CE_SUBJECT_KEY_IDENTIFIER => {
                    SubjectKeyIdentifier::from_der(value).map_err(ctx("subjectKeyIdentifier"))?;
                }
                rfc5280::ID_CE_AUTHORITY_KEY_IDENTIFIER => {
                    AuthorityKeyIdentifier::from_der(value)
                        .map_err(ctx("authorityKeyIdentifier"))?;
                }
                rfc5280::ID_CE_EXT_KEY_USAGE => {
                    extended_key_usage = ExtendedKeyUsage::from_der(value)
                        .map_err(ctx("extendedKeyUsage"))?
                        .0;
                }
                rfc5280::ID_CE_SUBJECT_ALT_NAME => {
                    SubjectAltName::from_der(value).map_err(ctx("subjectAltName"))?;
                }
                id if id == EXTENSION_OID => {
                    restrictions = Some(
                        Restrictions::from_der(value)
                            .map_err(|e| CertError(format!("restrictions extension: {e}")))?,
                    );
                }
                id if e.critical => {
                    return bad(format!("unknown critical extension {id} (RFC 5280 4.2)"));
                }
                _ => {}
            }
        }
        let subject = tbs.subject();
        let signature = cert
            .signature()
            .as_bytes()
            .ok_or_else(|| CertError("the signature BIT STRING has unused bits".into()))?
            .to_vec();
        Ok(Certificate {
            der: bytes.to_vec(),
            tbs: tbs.to_der().map_err(ctx("tbsCertificate"))?,
            serial,
            issuer: tbs.issuer().to_der().map_err(ctx("issuer"))?,
            subject: subject.to_der().map_err(ctx("subject"))?,
            subject_common_name: attribute(subject, rfc4519::CN),
            subject_organization: attribute(subject, rfc4519::ORGANIZATION_NAME),
            subject_organizational_unit: attribute(subject, rfc4519::ORGANIZATIONAL_UNIT_NAME),
            not_before,
            not_after,
            public_key,
            is_ca,
            restrictions,
            extended_key_usage,
            signature,
        })
    }

    /// Parses a PEM `CERTIFICATE`.
    pub fn from_pem(text: &str) -> Result<Certificate, CertError> {
        let cert = x509_cert::Certificate::from_pem(text.trim().as_bytes())
            .map_err(ctx("PEM certificate"))?;
        Self::from_der(&cert.to_der().map_err(ctx("certificate"))?)
    }

    /// The certificate as PEM `CERTIFICATE`, LF line endings.
    pub fn to_pem(&self) -> String {
        pem_certificate(&self.der)
    }

    /// The same certificate as `x509-cert` sees it (for rustls-side code that wants its types).
    pub fn x509(&self) -> Result<x509_cert::Certificate, CertError> {
        x509_cert::Certificate::from_der(&self.der).map_err(ctx("certificate"))
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
        if !super::verify::p256_sha256(&ca.public_key, &self.tbs, &self.signature) {
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

    /// The extendedKeyUsage purposes (empty: the extension is absent).
    pub fn extended_key_usages(&self) -> &[ObjectIdentifier] {
        &self.extended_key_usage
    }

    /// The role (OU) and name (CN) a TLS certificate from an operator's CA gives its holder;
    /// `None` without a known role or a name.
    pub fn role(&self) -> Option<(crate::http::Role, String)> {
        let role = crate::http::Role::parse(self.subject_organizational_unit.as_deref()?)?;
        Some((role, self.subject_common_name.clone()?))
    }
}

/// PEM `CERTIFICATE` around DER.
pub fn pem_certificate(der: &[u8]) -> String {
    simlab_card::pem::pem_encode("CERTIFICATE", der)
}

/// The role (OU) and CN of any certificate `x509-cert` parsed: what the TLS layer maps a
/// verified client certificate to.
pub fn role_of(cert: &x509_cert::Certificate) -> Option<(crate::http::Role, String)> {
    let subject = cert.tbs_certificate().subject();
    let role = crate::http::Role::parse(&attribute(subject, rfc4519::ORGANIZATIONAL_UNIT_NAME)?)?;
    Some((role, attribute(subject, rfc4519::CN)?))
}

/// The extendedKeyUsage purposes of any parsed certificate (empty when absent or malformed).
pub fn extended_key_usages(cert: &x509_cert::Certificate) -> Vec<ObjectIdentifier> {
    cert.tbs_certificate()
        .get_extension::<ExtendedKeyUsage>()
        .ok()
        .flatten()
        .map(|(_, eku)| eku.0)
        .unwrap_or_default()
}

/// ECDSA P-256 / SHA-256 verification of `message` against a DER signature, through ring
/// ([`super::verify::p256_sha256`]) — the same check whichever key type the caller holds.
pub fn verify(key: &VerifyingKey, message: &[u8], signature_der: &[u8]) -> bool {
    super::verify::p256_sha256(&sec1_point(key), message, signature_der)
}

fn check_algorithm(alg: &AlgorithmIdentifierOwned) -> Result<(), CertError> {
    if alg.oid != rfc5912::ECDSA_WITH_SHA_256 {
        return bad(format!(
            "signed with {} rather than ecdsa-with-SHA256",
            alg.oid
        ));
    }
    if alg.parameters.is_some() {
        return bad("ecdsa-with-SHA256 must have absent parameters (RFC 5758 3.2)");
    }
    Ok(())
}

/// The magnitude of a serial's two's-complement content bytes: positive, at most 20 octets.
fn serial_magnitude(content: &[u8]) -> Result<Vec<u8>, CertError> {
    match content {
        [] => bad("empty serialNumber"),
        [b, ..] if b & 0x80 != 0 => bad("negative serialNumber"),
        [0] => bad("serialNumber zero"),
        [0, rest @ ..] if rest.len() > 20 => bad("serialNumber longer than 20 octets"),
        [0, rest @ ..] => Ok(rest.to_vec()),
        _ if content.len() > 20 => bad("serialNumber longer than 20 octets"),
        _ => Ok(content.to_vec()),
    }
}

fn read_spki(
    spki: &x509_cert::spki::SubjectPublicKeyInfoOwned,
) -> Result<[u8; P256_POINT_LEN], CertError> {
    let curve = spki
        .algorithm
        .parameters
        .as_ref()
        .and_then(|p| p.decode_as::<ObjectIdentifier>().ok());
    if spki.algorithm.oid != rfc5912::ID_EC_PUBLIC_KEY || curve != Some(rfc5912::SECP_256_R_1) {
        return bad("the subject key is not a P-256 key");
    }
    let point = spki
        .subject_public_key
        .as_bytes()
        .ok_or_else(|| CertError("the subject key BIT STRING has unused bits".into()))?;
    match <[u8; P256_POINT_LEN]>::try_from(point) {
        Ok(p) if p[0] == 0x04 => Ok(p),
        _ => bad("the subject key is not an uncompressed P-256 point"),
    }
}

/// The last value of attribute `oid` in `name`, as text (UTF8String, PrintableString or
/// IA5String; anything else is not text simlab compares).
fn attribute(name: &Name, oid: ObjectIdentifier) -> Option<String> {
    name.iter()
        .filter(|atv| atv.oid == oid)
        .filter_map(|atv| {
            let v = &atv.value;
            match v.tag() {
                Tag::Utf8String | Tag::PrintableString | Tag::Ia5String => {
                    String::from_utf8(v.value().to_vec()).ok()
                }
                _ => None,
            }
        })
        .last()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(byte: u8) -> SigningKey {
        SigningKey::from_slice(&[byte; 32]).unwrap()
    }

    fn point(k: &SigningKey) -> [u8; 65] {
        sec1_point(k.verifying_key())
    }

    fn make_ca(k: &SigningKey) -> Certificate {
        let pk = point(k);
        let n = name("simlab", "simlab gateway CA").unwrap();
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
        )
        .unwrap();
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
        let issuer = Name::from_der(&ca.subject).unwrap();
        let der = issue(
            &Template {
                serial: &[0x42; 16],
                issuer: &issuer,
                subject: &name("simlab", "Alice ÄÖ, \"quoted\"").unwrap(),
                not_before: 1_700_000_000,
                not_after: 1_700_000_000 + r.validity_seconds,
                public_key: &pk,
                authority_key_id: &key_id(&ca.public_key),
                kind: Kind::Subscriber(&r),
            },
            &ca_key,
        )
        .unwrap();
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
    fn serials() {
        assert_eq!(serial_magnitude(&[0, 0x80]).unwrap(), [0x80]);
        assert!(serial_magnitude(&[0x80]).is_err());
        assert!(serial_magnitude(&[0]).is_err());
        assert!(serial_magnitude(&[1; 21]).is_err());
        assert_eq!(
            serial_magnitude(&[[0].as_slice(), &[0xff; 20]].concat())
                .unwrap()
                .len(),
            20
        );
    }

    #[test]
    fn signatures() {
        let k = key(3);
        let sig: DerSignature = k.sign(b"invoice");
        let vk = *k.verifying_key();
        assert!(verify(&vk, b"invoice", sig.as_bytes()));
        assert!(!verify(&vk, b"invoicE", sig.as_bytes()));
        assert!(!verify(&vk, b"invoice", b"\x30\x00"));
    }
}
