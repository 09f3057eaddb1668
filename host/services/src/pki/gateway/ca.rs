//! The gateway's certification authority: a P-256 key generated on first start and kept in
//! `<ca-dir>/ca-key.pem` (PKCS#8, mode 0600, never printed), and its self-signed certificate
//! `<ca-dir>/ca.pem`, which sellers and mobile stations verify subscriber certificates with.
//!
//! Several gateway processes share one CA directory: the key file is created exclusively
//! (`O_EXCL`), so when two start at once exactly one key wins and the other process loads it.

use crate::pki::der::{self, Reader, tag};
use crate::pki::restrictions::Restrictions;
use crate::pki::x509::{self, Certificate, Kind, Template, oid};
use p256::ecdsa::SigningKey;
use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The CA certificate's lifetime: ten years.
pub const CA_VALIDITY: u64 = 10 * 365 * 86_400;
/// The key file's name in the CA directory.
pub const KEY_FILE: &str = "ca-key.pem";
/// The certificate file's name in the CA directory.
pub const CERT_FILE: &str = "ca.pem";
/// How long a starting gateway waits for another one to finish writing the CA files.
const CREATION_WAIT: Duration = Duration::from_secs(5);

/// Why the CA could not be loaded or created.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaError(pub String);

impl fmt::Display for CaError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "gateway CA: {}", self.0)
    }
}

impl std::error::Error for CaError {}

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
    let mut out = [0u8; 65];
    out.copy_from_slice(key.verifying_key().to_sec1_point(false).as_bytes());
    out
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

/// PKCS#8 PrivateKeyInfo (RFC 5208) around an RFC 5915 ECPrivateKey with its public key, as
/// `openssl pkey` reads it.
fn pkcs8(key: &SigningKey) -> Vec<u8> {
    let ec = der::seq(&[
        &der::u64_int(1),
        &der::octets(&key.to_bytes()),
        &der::explicit(1, &der::bits(&point(key))),
    ]);
    der::seq(&[
        &der::u64_int(0),
        &der::seq(&[&der::oid(oid::EC_PUBLIC_KEY), &der::oid(oid::PRIME256V1)]),
        &der::octets(&ec),
    ])
}

fn from_pkcs8(bytes: &[u8]) -> Result<SigningKey, CaError> {
    let bad = |e: der::DerError| CaError(format!("{KEY_FILE}: {e}"));
    let mut r = Reader::new(der::single(bytes, tag::SEQUENCE).map_err(bad)?);
    if der::read_u64(r.expect(tag::INTEGER).map_err(bad)?).map_err(bad)? != 0 {
        return Err(CaError(format!("{KEY_FILE}: not PKCS#8 version 0")));
    }
    let mut alg = Reader::new(r.expect(tag::SEQUENCE).map_err(bad)?);
    if alg.expect(tag::OID).map_err(bad)? != oid::EC_PUBLIC_KEY
        || alg.expect(tag::OID).map_err(bad)? != oid::PRIME256V1
    {
        return Err(CaError(format!("{KEY_FILE}: not a P-256 key")));
    }
    let inner = r.expect(tag::OCTET_STRING).map_err(bad)?;
    let mut ec = Reader::new(der::single(inner, tag::SEQUENCE).map_err(bad)?);
    ec.expect(tag::INTEGER).map_err(bad)?;
    let scalar = ec.expect(tag::OCTET_STRING).map_err(bad)?;
    SigningKey::from_slice(scalar).map_err(|_| CaError(format!("{KEY_FILE}: invalid scalar")))
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
            let pem = der::pem_encode("PRIVATE KEY", &pkcs8(&key));
            let tmp = dir.join(format!(".{KEY_FILE}.{}", std::process::id()));
            let _ = std::fs::remove_file(&tmp);
            create_exclusive(&tmp, pem.as_bytes(), 0o600)?;
            // hard_link fails if the key exists: exactly one process's key is installed.
            let won = std::fs::hard_link(&tmp, &key_path).is_ok();
            let _ = std::fs::remove_file(&tmp);
            if won {
                let cert = Self::self_signed(&key, organization);
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
        let key_pem = std::fs::read_to_string(key_path)
            .map_err(|e| CaError(format!("{}: {e}", key_path.display())))?;
        let key = from_pkcs8(
            &der::pem_decode("PRIVATE KEY", &key_pem)
                .map_err(|e| CaError(format!("{}: {e}", key_path.display())))?,
        )?;
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
        let certificate = Self::self_signed(&key, organization);
        Ok(Ca {
            key,
            certificate,
            organization: organization.to_string(),
        })
    }

    fn self_signed(key: &SigningKey, organization: &str) -> Certificate {
        let pk = point(key);
        let name = x509::name(organization, &format!("{organization} gateway CA"));
        let now = crate::pki::now();
        let mut serial = simlab_card::random::bytes::<16>().unwrap_or([1; 16]);
        serial[0] = (serial[0] & 0x7F) | 0x01;
        let der = x509::issue(
            &Template {
                serial: &serial,
                issuer: &name,
                subject: &name,
                not_before: now,
                not_after: now + CA_VALIDITY,
                public_key: &pk,
                authority_key_id: &x509::key_id(&pk),
                kind: Kind::Ca,
            },
            key,
        );
        // Parsing what was just encoded cannot fail; the tests check it.
        Certificate::from_der(&der).expect("the CA certificate parses")
    }

    pub fn certificate(&self) -> &Certificate {
        &self.certificate
    }

    pub fn organization(&self) -> &str {
        &self.organization
    }

    /// Issues a subscriber certificate (DER).
    pub fn issue(
        &self,
        serial: &[u8; 16],
        common_name: &str,
        public_key: &[u8; 65],
        not_before: u64,
        restrictions: &Restrictions,
    ) -> Vec<u8> {
        let subject = x509::name(&self.organization, common_name);
        x509::issue(
            &Template {
                serial,
                issuer: &self.certificate.subject,
                subject: &subject,
                not_before,
                not_after: not_before + restrictions.validity_seconds,
                public_key,
                authority_key_id: &x509::key_id(&self.certificate.public_key),
                kind: Kind::Subscriber(restrictions),
            },
            &self.key,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn created_once_then_loaded() {
        let dir = std::env::temp_dir().join(format!("simlab-ca-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let a = Ca::load_or_create(&dir, "simlab").unwrap();
        let b = Ca::load_or_create(&dir, "simlab").unwrap();
        assert_eq!(a.certificate(), b.certificate());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.join(KEY_FILE))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        assert!(!format!("{a:?}").contains("key:"));
        let pem = std::fs::read_to_string(dir.join(KEY_FILE)).unwrap();
        let key = from_pkcs8(&der::pem_decode("PRIVATE KEY", &pem).unwrap()).unwrap();
        assert_eq!(point(&key), a.certificate().public_key);
        let r = Restrictions::default();
        let leaf = a.issue(
            &[0x11; 16],
            "alice",
            &point(&generate_key().unwrap()),
            1,
            &r,
        );
        Certificate::from_der(&leaf)
            .unwrap()
            .check_issued_by(b.certificate())
            .unwrap();
        let _ = std::fs::remove_dir_all(&dir);
    }
}
