//! The gateway's certification authority: a P-256 key generated on first start and kept in
//! `<ca-dir>/ca-key.pem` (PKCS#8, mode 0600, never printed), and its self-signed certificate
//! `<ca-dir>/ca.pem`, which sellers and mobile stations verify subscriber certificates with.
//!
//! Several gateway processes share one CA directory: the key file is created exclusively
//! (`O_EXCL`), so when two start at once exactly one key wins and the other process loads it.

use crate::http::Role;
use crate::pki::restrictions::Restrictions;
use crate::pki::x509::{self, Certificate, Kind, Template, TlsUsage};
use const_oid::ObjectIdentifier;
use const_oid::db::{rfc5280, rfc5912};
use der::asn1::{AnyRef, BitStringRef, OctetStringRef};
use der::pem::LineEnding;
use der::zeroize::Zeroizing;
use der::{Decode, SecretDocument, Sequence};
use p256::ecdsa::SigningKey;
use pkcs8::PrivateKeyInfoRef;
use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use x509_cert::name::Name;

pub use crate::pki::x509::{extended_key_usages, role_of};

/// The CA certificate's lifetime: ten years.
pub const CA_VALIDITY: u64 = 10 * 365 * 86_400;
/// The key file's name in the CA directory.
pub const KEY_FILE: &str = "ca-key.pem";
/// The certificate file's name in the CA directory.
pub const CERT_FILE: &str = "ca.pem";
/// How long a starting gateway waits for another one to finish writing the CA files.
const CREATION_WAIT: Duration = Duration::from_secs(5);
/// How far a TLS certificate's notBefore lies before its issue: a peer whose clock runs a
/// little behind the CA's must not see a certificate from the future.
pub const TLS_BACKDATE: u64 = 300;
/// The file names of a TLS identity directory (what `crate::http::tls` loads).
pub const TLS_CERT_FILE: &str = "cert.pem";
pub const TLS_KEY_FILE: &str = "key.pem";
pub const TLS_CA_FILE: &str = "ca.pem";

/// Why the CA could not be loaded or created, or could not issue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaError(pub String);

impl fmt::Display for CaError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "gateway CA: {}", self.0)
    }
}

impl std::error::Error for CaError {}

impl From<x509::CertError> for CaError {
    fn from(e: x509::CertError) -> Self {
        CaError(e.0)
    }
}

/// The gateway's CA. Debug output shows the certificate, never the key.
pub struct Ca {
    key: SigningKey,
    certificate: Certificate,
    organization: String,
}

impl fmt::Debug for Ca {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ca")
            .field("organization", &self.organization)
            .field("serial", &self.certificate.serial_hex())
            .finish_non_exhaustive()
    }
}

fn point(key: &SigningKey) -> [u8; 65] {
    x509::sec1_point(key.verifying_key())
}

/// A fresh key from the operating system's CSPRNG (a random 32-byte string is a valid scalar
/// with overwhelming probability; the rare one that is not is drawn again).
fn generate_key() -> Result<SigningKey, CaError> {
    loop {
        let mut bytes = simlab_card::random::bytes::<32>().map_err(|e| CaError(e.to_string()))?;
        let key = SigningKey::from_slice(&bytes);
        bytes.fill(0);
        if let Ok(key) = key {
            return Ok(key);
        }
    }
}

/// A positive serial of exactly 16 bytes (RFC 5280 4.1.2.2).
fn random_serial() -> Result<[u8; 16], CaError> {
    let mut serial = simlab_card::random::bytes::<16>().map_err(|e| CaError(e.to_string()))?;
    serial[0] = (serial[0] & 0x7F) | 0x01;
    Ok(serial)
}

/// RFC 5915 ECPrivateKey, the inside of a PKCS#8 EC key. `sec1` has it, but p256 is built
/// without the features that would expose it (the card model shares the crate).
#[derive(Sequence)]
struct EcPrivateKey<'a> {
    version: u8,
    private_key: &'a OctetStringRef,
    #[asn1(context_specific = "0", tag_mode = "EXPLICIT", optional = "true")]
    parameters: Option<ObjectIdentifier>,
    #[asn1(context_specific = "1", tag_mode = "EXPLICIT", optional = "true")]
    public_key: Option<BitStringRef<'a>>,
}

/// PKCS#8 PrivateKeyInfo (RFC 5208, version 0) around an RFC 5915 ECPrivateKey with its
/// public key and no curve parameters: the layout `openssl pkey` writes and ring (rustls)
/// loads. Every buffer holding the scalar is wiped on drop.
fn pkcs8(key: &SigningKey) -> Result<SecretDocument, CaError> {
    let encoding = |e: der::Error| CaError(format!("encoding the private key: {e}"));
    let scalar = Zeroizing::new(key.to_bytes().to_vec());
    let public = point(key);
    let ec = SecretDocument::encode_msg(&EcPrivateKey {
        version: 1,
        private_key: OctetStringRef::new(&scalar).map_err(encoding)?,
        parameters: None,
        public_key: Some(BitStringRef::from_bytes(&public).map_err(encoding)?),
    })
    .map_err(encoding)?;
    let curve = rfc5912::SECP_256_R_1;
    let info = PrivateKeyInfoRef {
        algorithm: spki::AlgorithmIdentifier {
            oid: rfc5912::ID_EC_PUBLIC_KEY,
            parameters: Some(AnyRef::from(&curve)),
        },
        private_key: OctetStringRef::new(ec.as_bytes()).map_err(encoding)?,
        public_key: None,
    };
    SecretDocument::encode_msg(&info).map_err(encoding)
}

/// The P-256 key in a PKCS#8 document; `what` names the file in errors.
fn from_pkcs8(bytes: &[u8], what: &str) -> Result<SigningKey, CaError> {
    let bad = |e: der::Error| CaError(format!("{what}: {e}"));
    let info = PrivateKeyInfoRef::from_der(bytes).map_err(bad)?;
    let curve = info
        .algorithm
        .parameters
        .and_then(|p| p.decode_as::<ObjectIdentifier>().ok());
    if info.algorithm.oid != rfc5912::ID_EC_PUBLIC_KEY || curve != Some(rfc5912::SECP_256_R_1) {
        return Err(CaError(format!("{what}: not a P-256 key")));
    }
    let ec = EcPrivateKey::from_der(info.private_key.as_bytes()).map_err(bad)?;
    if ec.version != 1 {
        return Err(CaError(format!("{what}: not an ECPrivateKey version 1")));
    }
    if ec.parameters.is_some_and(|c| c != rfc5912::SECP_256_R_1) {
        return Err(CaError(format!("{what}: the key names another curve")));
    }
    let key = SigningKey::from_slice(ec.private_key.as_bytes())
        .map_err(|_| CaError(format!("{what}: invalid P-256 scalar")))?;
    if let Some(public) = ec.public_key
        && public.as_bytes() != Some(&point(&key)[..])
    {
        return Err(CaError(format!(
            "{what}: the public key does not belong to the private key"
        )));
    }
    Ok(key)
}

/// The P-256 key in a PEM `PRIVATE KEY` (PKCS#8).
fn from_pkcs8_pem(text: &str, what: &str) -> Result<SigningKey, CaError> {
    let (label, doc) = SecretDocument::from_pem(text.trim())
        .map_err(|e| CaError(format!("{what}: not PEM: {e}")))?;
    if label != "PRIVATE KEY" {
        return Err(CaError(format!(
            "{what}: a PEM \"{label}\", not a PKCS#8 \"PRIVATE KEY\""
        )));
    }
    from_pkcs8(doc.as_bytes(), what)
}

fn pkcs8_pem(key: &SigningKey) -> Result<Zeroizing<String>, CaError> {
    pkcs8(key)?
        .to_pem("PRIVATE KEY", LineEnding::LF)
        .map_err(|e| CaError(format!("encoding the private key: {e}")))
}

/// Writes `bytes` to `path` only if it does not exist, with `mode`; false if it exists.
fn create_exclusive(path: &Path, bytes: &[u8], mode: u32) -> Result<bool, CaError> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, mode);
    #[cfg(not(unix))]
    let _ = mode;
    match options.open(path) {
        Ok(mut f) => {
            f.write_all(bytes)
                .and_then(|()| f.sync_all())
                .map_err(|e| CaError(format!("writing {}: {e}", path.display())))?;
            Ok(true)
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(false),
        Err(e) => Err(CaError(format!("creating {}: {e}", path.display()))),
    }
}

impl Ca {
    /// The CA in `dir`, created (key, then certificate) if the directory has none.
    /// `organization` names the operator in the CA's subject.
    pub fn load_or_create(dir: &Path, organization: &str) -> Result<Ca, CaError> {
        std::fs::create_dir_all(dir)
            .map_err(|e| CaError(format!("creating {}: {e}", dir.display())))?;
        let key_path = dir.join(KEY_FILE);
        let cert_path = dir.join(CERT_FILE);
        // The key file appears complete or not at all: written under a temporary name first
        // would leave a window too, so it is created exclusively and filled before the
        // certificate, and a reader waits for the certificate.
        if !key_path.exists() {
            let key = generate_key()?;
            let pem = pkcs8_pem(&key)?;
            let tmp = dir.join(format!(".{KEY_FILE}.{}", std::process::id()));
            let _ = std::fs::remove_file(&tmp);
            create_exclusive(&tmp, pem.as_bytes(), 0o600)?;
            // hard_link fails if the key exists: exactly one process's key is installed.
            let won = std::fs::hard_link(&tmp, &key_path).is_ok();
            let _ = std::fs::remove_file(&tmp);
            if won {
                let cert = Self::self_signed(&key, organization)?;
                let tmp_cert = dir.join(format!(".{CERT_FILE}.{}", std::process::id()));
                std::fs::write(&tmp_cert, cert.to_pem())
                    .and_then(|()| std::fs::rename(&tmp_cert, &cert_path))
                    .map_err(|e| CaError(format!("writing {}: {e}", cert_path.display())))?;
            }
        }
        Self::load(&key_path, &cert_path, organization)
    }

    fn load(key_path: &PathBuf, cert_path: &PathBuf, organization: &str) -> Result<Ca, CaError> {
        let deadline = Instant::now() + CREATION_WAIT;
        while !cert_path.exists() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(key_path)
                .map_err(|e| CaError(format!("{}: {e}", key_path.display())))?
                .permissions()
                .mode();
            if mode & 0o077 != 0 {
                return Err(CaError(format!(
                    "{} is readable by others (mode {:o}); chmod 600 it",
                    key_path.display(),
                    mode & 0o777
                )));
            }
        }
        let key_pem = Zeroizing::new(
            std::fs::read_to_string(key_path)
                .map_err(|e| CaError(format!("{}: {e}", key_path.display())))?,
        );
        let key = from_pkcs8_pem(&key_pem, &key_path.display().to_string())?;
        let cert_pem = std::fs::read_to_string(cert_path)
            .map_err(|e| CaError(format!("{}: {e}", cert_path.display())))?;
        let certificate = Certificate::from_pem(&cert_pem)
            .map_err(|e| CaError(format!("{}: {e}", cert_path.display())))?;
        if certificate.public_key != point(&key) || !certificate.is_ca {
            return Err(CaError(format!(
                "{} does not certify the key in {}",
                cert_path.display(),
                key_path.display()
            )));
        }
        Ok(Ca {
            key,
            certificate,
            organization: organization.to_string(),
        })
    }

    /// A CA held in memory only (tests).
    pub fn ephemeral(organization: &str) -> Result<Ca, CaError> {
        let key = generate_key()?;
        let certificate = Self::self_signed(&key, organization)?;
        Ok(Ca {
            key,
            certificate,
            organization: organization.to_string(),
        })
    }

    fn self_signed(key: &SigningKey, organization: &str) -> Result<Certificate, CaError> {
        let pk = point(key);
        let name = x509::name(organization, &format!("{organization} gateway CA"))?;
        let now = crate::pki::now();
        let der = x509::issue(
            &Template {
                serial: &random_serial()?,
                issuer: &name,
                subject: &name,
                not_before: now,
                not_after: now + CA_VALIDITY,
                public_key: &pk,
                authority_key_id: &x509::key_id(&pk),
                kind: Kind::Ca,
            },
            key,
        )?;
        Ok(Certificate::from_der(&der)?)
    }

    pub fn certificate(&self) -> &Certificate {
        &self.certificate
    }

    pub fn organization(&self) -> &str {
        &self.organization
    }

    fn issuer_name(&self) -> Result<Name, CaError> {
        Name::from_der(&self.certificate.subject)
            .map_err(|e| CaError(format!("the CA's own subject: {e}")))
    }

    /// Issues a subscriber certificate (DER), or says why these inputs make none.
    pub fn try_issue(
        &self,
        serial: &[u8; 16],
        common_name: &str,
        public_key: &[u8; 65],
        not_before: u64,
        restrictions: &Restrictions,
    ) -> Result<Vec<u8>, CaError> {
        let subject = x509::name(&self.organization, common_name)?;
        let not_after = not_before
            .checked_add(restrictions.validity_seconds)
            .ok_or_else(|| CaError("notAfter overflows".into()))?;
        Ok(x509::issue(
            &Template {
                serial,
                issuer: &self.issuer_name()?,
                subject: &subject,
                not_before,
                not_after,
                public_key,
                authority_key_id: &x509::key_id(&self.certificate.public_key),
                kind: Kind::Subscriber(restrictions),
            },
            &self.key,
        )?)
    }

    /// Issues a TLS certificate for `role` to `name` (the CN: a seller id, a host name) with a
    /// fresh key, valid from now for `validity_seconds`. `hosts` are the subjectAltNames a
    /// TLS client checks (webpki requires one for servers); none means `localhost` and
    /// `127.0.0.1`.
    pub fn issue_tls(
        &self,
        role: Role,
        name: &str,
        hosts: &[String],
        validity_seconds: u64,
    ) -> Result<TlsIdentity, CaError> {
        if name.is_empty() {
            return Err(CaError("a TLS certificate needs a name (CN)".into()));
        }
        if validity_seconds == 0 {
            return Err(CaError("a TLS certificate needs a validity".into()));
        }
        let hosts = if hosts.is_empty() {
            vec!["localhost".to_string(), "127.0.0.1".to_string()]
        } else {
            hosts.to_vec()
        };
        let usage = TlsUsage {
            extended_key_usage: tls_purposes(role),
            hosts,
        };
        let key = generate_key()?;
        let now = crate::pki::now();
        let not_before = now.saturating_sub(TLS_BACKDATE);
        let not_after = now
            .checked_add(validity_seconds)
            .ok_or_else(|| CaError("notAfter overflows".into()))?;
        let subject = x509::name_with_unit(&self.organization, role.as_str(), name)?;
        let certificate_der = x509::issue(
            &Template {
                serial: &random_serial()?,
                issuer: &self.issuer_name()?,
                subject: &subject,
                not_before,
                not_after,
                public_key: &point(&key),
                authority_key_id: &x509::key_id(&self.certificate.public_key),
                kind: Kind::Tls(&usage),
            },
            &self.key,
        )?;
        Ok(TlsIdentity {
            certificate_der,
            key_pkcs8_der: pkcs8(&key)?.to_bytes(),
        })
    }
}

/// The extendedKeyUsage of each role: who is a TLS server, who a TLS client. A seller is both
/// (a server for buyers, a client of its gateway), so is a gateway (a server for phones and
/// sellers, a client of the AuC) and a roaming peer (answers and asks other operators'
/// servers); operator tools only connect.
pub fn tls_purposes(role: Role) -> Vec<ObjectIdentifier> {
    let (server, client) = (rfc5280::ID_KP_SERVER_AUTH, rfc5280::ID_KP_CLIENT_AUTH);
    match role {
        Role::Server => vec![server],
        Role::Seller => vec![server, client],
        Role::Gateway => vec![client, server],
        Role::Operator | Role::User => vec![client],
        Role::Peer => vec![server, client],
    }
}

/// A TLS certificate and its fresh key, issued by the operator's CA. The key bytes are wiped
/// when the identity is dropped, and `Debug` never shows them.
pub struct TlsIdentity {
    /// The leaf certificate, DER.
    pub certificate_der: Vec<u8>,
    /// Its private key, PKCS#8 DER.
    pub key_pkcs8_der: Zeroizing<Vec<u8>>,
}

impl fmt::Debug for TlsIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let holder = Certificate::from_der(&self.certificate_der)
            .ok()
            .and_then(|c| c.role().map(|(r, n)| format!("{}/{n}", r.as_str())));
        f.debug_struct("TlsIdentity")
            .field("holder", &holder)
            .finish_non_exhaustive()
    }
}

impl TlsIdentity {
    /// The leaf as PEM `CERTIFICATE`.
    pub fn certificate_pem(&self) -> String {
        x509::pem_certificate(&self.certificate_der)
    }

    /// The key as PKCS#8 PEM `PRIVATE KEY`, wiped on drop.
    pub fn key_pem(&self) -> Result<Zeroizing<String>, CaError> {
        pem_rfc7468::encode_string("PRIVATE KEY", LineEnding::LF, &self.key_pkcs8_der)
            .map(Zeroizing::new)
            .map_err(|e| CaError(format!("encoding the private key: {e}")))
    }

    /// Writes DIR/cert.pem (the leaf), DIR/key.pem (PKCS#8, created with mode 0600 so it is
    /// never readable by others, not even between creation and a chmod) and DIR/ca.pem (the
    /// CA certificate, which is also the anchor the holder trusts its peers with). Creates DIR
    /// with mode 0700 if it is missing. Refuses to replace an existing key.pem: a key in use
    /// is never overwritten by accident.
    pub fn write(&self, dir: &Path, ca: &Certificate) -> Result<(), CaError> {
        if !dir.exists() {
            let mut builder = std::fs::DirBuilder::new();
            builder.recursive(true);
            #[cfg(unix)]
            std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
            builder
                .create(dir)
                .map_err(|e| CaError(format!("creating {}: {e}", dir.display())))?;
        }
        let key_path = dir.join(TLS_KEY_FILE);
        let key_pem = self.key_pem()?;
        if !create_exclusive(&key_path, key_pem.as_bytes(), 0o600)? {
            return Err(CaError(format!(
                "{} exists; refusing to overwrite a key (remove it first to re-issue)",
                key_path.display()
            )));
        }
        for (file, pem) in [
            (TLS_CERT_FILE, self.certificate_pem()),
            (TLS_CA_FILE, ca.to_pem()),
        ] {
            let path = dir.join(file);
            std::fs::write(&path, pem)
                .map_err(|e| CaError(format!("writing {}: {e}", path.display())))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_dir(what: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("simlab-{what}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    #[cfg(unix)]
    fn mode(path: &Path) -> u32 {
        use std::os::unix::fs::PermissionsExt;
        std::fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn created_once_then_loaded() {
        let dir = temp_dir("ca");
        let a = Ca::load_or_create(&dir, "simlab").unwrap();
        let b = Ca::load_or_create(&dir, "simlab").unwrap();
        assert_eq!(a.certificate(), b.certificate());
        #[cfg(unix)]
        assert_eq!(mode(&dir.join(KEY_FILE)), 0o600);
        assert!(!format!("{a:?}").contains("key:"));
        let pem = std::fs::read_to_string(dir.join(KEY_FILE)).unwrap();
        assert!(pem.starts_with("-----BEGIN PRIVATE KEY-----\n"));
        let key = from_pkcs8_pem(&pem, KEY_FILE).unwrap();
        assert_eq!(point(&key), a.certificate().public_key);
        let r = Restrictions::default();
        let leaf = a
            .try_issue(
                &[0x11; 16],
                "alice",
                &point(&generate_key().unwrap()),
                1,
                &r,
            )
            .unwrap();
        assert!(
            a.try_issue(&[0x11; 16], "alice", &point(&key), u64::MAX - 1, &r)
                .is_err()
        );
        Certificate::from_der(&leaf)
            .unwrap()
            .check_issued_by(b.certificate())
            .unwrap();
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn pkcs8_round_trip_and_refusals() {
        let key = generate_key().unwrap();
        let doc = pkcs8(&key).unwrap();
        assert_eq!(
            from_pkcs8(doc.as_bytes(), "k").unwrap().to_bytes(),
            key.to_bytes()
        );
        // ring, which rustls uses, loads exactly this layout.
        ring::signature::EcdsaKeyPair::from_pkcs8(
            &ring::signature::ECDSA_P256_SHA256_ASN1_SIGNING,
            doc.as_bytes(),
            &ring::rand::SystemRandom::new(),
        )
        .unwrap();
        let pem = pkcs8_pem(&key).unwrap();
        assert!(from_pkcs8_pem(&pem.replace("PRIVATE KEY", "PUBLIC KEY"), "k").is_err());
        let mut bytes = doc.as_bytes().to_vec();
        let last = bytes.len() - 1;
        bytes[last] ^= 1; // the public key no longer matches
        assert!(
            from_pkcs8(&bytes, "k")
                .unwrap_err()
                .0
                .contains("does not belong")
        );
        for n in 0..doc.as_bytes().len() {
            let _ = from_pkcs8(&doc.as_bytes()[..n], "k").unwrap_err();
        }
    }

    #[test]
    fn tls_identities_by_role() {
        let ca = Ca::ephemeral("simlab").unwrap();
        let id = ca.issue_tls(Role::Seller, "cafe-1", &[], 86_400).unwrap();
        let cert = Certificate::from_der(&id.certificate_der).unwrap();
        cert.check_issued_by(ca.certificate()).unwrap();
        assert_eq!(cert.role(), Some((Role::Seller, "cafe-1".to_string())));
        assert_eq!(
            cert.extended_key_usages(),
            [rfc5280::ID_KP_SERVER_AUTH, rfc5280::ID_KP_CLIENT_AUTH]
        );
        assert!(!cert.is_ca && cert.restrictions.is_none());
        let parsed = cert.x509().unwrap();
        assert_eq!(role_of(&parsed), cert.role());
        assert_eq!(extended_key_usages(&parsed), cert.extended_key_usage);
        assert!(!format!("{id:?}").contains("key_pkcs8"));
        let peer = ca.issue_tls(Role::Peer, "mec-no", &[], 86_400).unwrap();
        let peer = Certificate::from_der(&peer.certificate_der).unwrap();
        assert_eq!(peer.role(), Some((Role::Peer, "mec-no".to_string())));
        assert_eq!(
            peer.extended_key_usages(),
            [rfc5280::ID_KP_SERVER_AUTH, rfc5280::ID_KP_CLIENT_AUTH]
        );
        assert_eq!(Role::parse(Role::Peer.as_str()), Some(Role::Peer));
        assert!(ca.issue_tls(Role::Server, "", &[], 60).is_err());
        assert!(ca.issue_tls(Role::Server, "x", &[], 0).is_err());

        let dir = temp_dir("tls").join("seller");
        id.write(&dir, ca.certificate()).unwrap();
        #[cfg(unix)]
        {
            assert_eq!(mode(&dir), 0o700);
            assert_eq!(mode(&dir.join(TLS_KEY_FILE)), 0o600);
        }
        let key = from_pkcs8_pem(
            &std::fs::read_to_string(dir.join(TLS_KEY_FILE)).unwrap(),
            TLS_KEY_FILE,
        )
        .unwrap();
        assert_eq!(point(&key), cert.public_key);
        let err = id.write(&dir, ca.certificate()).unwrap_err();
        assert!(err.0.contains("key.pem"), "{err}");
        assert_eq!(
            Certificate::from_pem(&std::fs::read_to_string(dir.join(TLS_CA_FILE)).unwrap())
                .unwrap(),
            *ca.certificate()
        );
        let _ = std::fs::remove_dir_all(dir.parent().unwrap());
    }
}
