//! TLS for the roles, with rustls (ring provider): server identities, client identities, the
//! pinned operator CA, and who a client certificate says its holder is.
//!
//! An identity is a directory as `simlab gateway issue` writes it: `cert.pem` (the leaf),
//! `key.pem` (PKCS#8, mode 0600) and `ca.pem` (the CA that issued it, which is also the CA
//! whose clients the holder trusts). Servers ask every client for a certificate but let one
//! without a certificate in, because the phone side (mobile station, buyer) has none: each
//! endpoint that must know its caller checks [`Request::client`](super::Request::client).
//! A certificate that is offered must verify, or the handshake fails and the log names it.

use super::Peer;
use crate::bytes::hex;
use der::Decode;
use rustls::client::danger::HandshakeSignatureValid;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{DigitallySignedStruct, DistinguishedName, RootCertStore, SignatureScheme};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Why TLS material could not be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file of an identity or a CA file is missing or unreadable.
    #[error("cannot read {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    /// A file is there but holds no usable PEM of the expected kind.
    #[error("{}: {reason}", path.display())]
    Malformed { path: PathBuf, reason: String },
    /// rustls refused the combination (a key that does not match its certificate, a CA that
    /// is not a usable trust anchor).
    #[error("TLS configuration: {0}")]
    Config(String),
}

/// The file names inside an identity directory.
pub const CERT_FILE: &str = "cert.pem";
pub const KEY_FILE: &str = "key.pem";
pub const CA_FILE: &str = "ca.pem";

/// ring, not aws-lc-rs: it builds without cmake in a fraction of the time, and it is the
/// backend that verifies billing signatures anyway. rustls marks it deprecated because it has
/// no post-quantum key exchange; the links here are between one operator's own parties.
#[allow(deprecated)]
fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.to_path_buf(),
        source,
    })
}

/// Every `CERTIFICATE` in a PEM file (a CA file may hold several anchors).
pub fn load_certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = read(path)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::Malformed {
            path: path.to_path_buf(),
            reason: format!("not PEM certificates: {e}"),
        })?;
    if certs.is_empty() {
        return Err(TlsError::Malformed {
            path: path.to_path_buf(),
            reason: "holds no CERTIFICATE".into(),
        });
    }
    Ok(certs)
}

/// A certificate chain and its private key. The key is never printed: `Debug` shows the
/// holder only.
#[derive(Clone)]
pub struct Identity {
    pub chain: Vec<CertificateDer<'static>>,
    key: Arc<PrivateKeyDer<'static>>,
    /// The CA certificates beside it (`ca.pem`), when loaded from a directory.
    pub ca: Vec<CertificateDer<'static>>,
}

impl fmt::Debug for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let holder = self.chain.first().and_then(|c| describe(c.as_ref()));
        f.debug_struct("Identity")
            .field("holder", &holder)
            .finish_non_exhaustive()
    }
}

impl Identity {
    /// `cert.pem`, `key.pem` and `ca.pem` from `dir`.
    pub fn load(dir: &Path) -> Result<Identity, TlsError> {
        let chain = load_certificates(&dir.join(CERT_FILE))?;
        let key_path = dir.join(KEY_FILE);
        let key =
            PrivateKeyDer::from_pem_slice(&read(&key_path)?).map_err(|e| TlsError::Malformed {
                path: key_path.clone(),
                reason: format!("no PKCS#8 PRIVATE KEY: {e}"),
            })?;
        let ca = load_certificates(&dir.join(CA_FILE))?;
        Ok(Identity {
            chain,
            key: Arc::new(key),
            ca,
        })
    }

    /// An identity held in memory (the gateway's own, issued at start; tests).
    pub fn from_der(certificate: Vec<u8>, pkcs8_key: Vec<u8>, ca: Vec<Vec<u8>>) -> Identity {
        Identity {
            chain: vec![CertificateDer::from(certificate)],
            key: Arc::new(PrivateKeyDer::Pkcs8(pkcs8_key.into())),
            ca: ca.into_iter().map(CertificateDer::from).collect(),
        }
    }

    fn key(&self) -> PrivateKeyDer<'static> {
        self.key.clone_key()
    }

    /// The holder as a [`Peer`] (its own certificate's role and name).
    pub fn peer(&self) -> Option<Peer> {
        self.chain.first().and_then(|c| peer_of(c.as_ref()))
    }
}

fn roots(anchors: &[CertificateDer<'static>]) -> Result<RootCertStore, TlsError> {
    let mut store = RootCertStore::empty();
    for cert in anchors {
        store.add(cert.clone()).map_err(|e| {
            TlsError::Config(format!("the CA certificate is not a trust anchor: {e}"))
        })?;
    }
    Ok(store)
}

/// A server's TLS settings: its identity, and the CA whose client certificates it accepts.
#[derive(Clone)]
pub struct ServerTls {
    pub(crate) config: Arc<rustls::ServerConfig>,
}

impl fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ServerTls")
    }
}

impl ServerTls {
    /// Serves `identity`, asking clients for a certificate from `client_ca` (every anchor in
    /// it). A client without a certificate still connects: see the module doc.
    pub fn new(
        identity: &Identity,
        client_ca: &[CertificateDer<'static>],
    ) -> Result<ServerTls, TlsError> {
        let inner =
            WebPkiClientVerifier::builder_with_provider(Arc::new(roots(client_ca)?), provider())
                .allow_unauthenticated()
                .build()
                .map_err(|e| TlsError::Config(e.to_string()))?;
        let verifier = Arc::new(LoggingVerifier { inner });
        let mut config = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::Config(e.to_string()))?
            .with_client_cert_verifier(verifier)
            .with_single_cert(identity.chain.clone(), identity.key())
            .map_err(|e| TlsError::Config(format!("certificate and key: {e}")))?;
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(ServerTls {
            config: Arc::new(config),
        })
    }

    /// Serves the identity in `dir`, trusting clients of its `ca.pem`.
    pub fn from_dir(dir: &Path) -> Result<ServerTls, TlsError> {
        let identity = Identity::load(dir)?;
        ServerTls::new(&identity, &identity.ca)
    }
}

/// WebPKI's verdict, with the refused certificate named in the log: an operator who sees a
/// seller fail to connect learns which certificate (subject, serial) and why (expired, from
/// another CA, not for client authentication).
#[derive(Debug)]
struct LoggingVerifier {
    inner: Arc<dyn ClientCertVerifier>,
}

impl ClientCertVerifier for LoggingVerifier {
    fn offer_client_auth(&self) -> bool {
        self.inner.offer_client_auth()
    }

    fn client_auth_mandatory(&self) -> bool {
        self.inner.client_auth_mandatory()
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        self.inner
            .verify_client_cert(end_entity, intermediates, now)
            .inspect_err(|e| {
                tracing::warn!(
                    certificate = %describe(end_entity.as_ref()).unwrap_or_else(|| "unparsable".into()),
                    error = %e,
                    "client certificate refused"
                );
            })
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// A client's TLS settings: the pinned CA (`--ca`) and, for links that must be mutual, the
/// client's own identity.
#[derive(Clone, Debug)]
pub struct ClientTls {
    pub anchors: Vec<CertificateDer<'static>>,
    pub identity: Option<Identity>,
}

impl ClientTls {
    /// Trusts the CA certificates in `ca_file`, presents no certificate (the phone side).
    pub fn pinned(ca_file: &Path) -> Result<ClientTls, TlsError> {
        Ok(ClientTls {
            anchors: load_certificates(ca_file)?,
            identity: None,
        })
    }

    /// Presents the identity in `dir` and trusts its `ca.pem` (a seller reaching its
    /// gateway, a gateway reaching the AuC).
    pub fn mutual(dir: &Path) -> Result<ClientTls, TlsError> {
        let identity = Identity::load(dir)?;
        Ok(ClientTls {
            anchors: identity.ca.clone(),
            identity: Some(identity),
        })
    }

    /// The ureq TLS settings.
    pub(crate) fn ureq(&self) -> ureq::tls::TlsConfig {
        let anchors: Vec<ureq::tls::Certificate<'static>> = self
            .anchors
            .iter()
            .map(|c| ureq::tls::Certificate::from_der(c.as_ref()).to_owned())
            .collect();
        let client_cert = self.identity.as_ref().and_then(|id| {
            let chain: Vec<ureq::tls::Certificate<'static>> = id
                .chain
                .iter()
                .map(|c| ureq::tls::Certificate::from_der(c.as_ref()).to_owned())
                .collect();
            // ureq takes a key from DER only with a kind it does not export; the PEM form
            // says PKCS#8 by its label.
            let pem = pem_rfc7468::encode_string(
                "PRIVATE KEY",
                pem_rfc7468::LineEnding::LF,
                id.key.secret_der(),
            )
            .ok()?;
            let key = ureq::tls::PrivateKey::from_pem(pem.as_bytes()).ok()?;
            Some(ureq::tls::ClientCert::new_with_certs(&chain, key))
        });
        ureq::tls::TlsConfig::builder()
            .provider(ureq::tls::TlsProvider::Rustls)
            .root_certs(ureq::tls::RootCerts::Specific(Arc::new(anchors)))
            .client_cert(client_cert)
            .build()
    }
}

/// The subject's `OU` (role) and `CN` (name), and the serial, of a certificate from an
/// operator's CA. `None` when the certificate names no known role: such a client is treated
/// as anonymous by the access rules.
pub fn peer_of(der: &[u8]) -> Option<Peer> {
    // The same strict parser as every other certificate, so that the serial is spelled as
    // the CA's register and `gateway revoke` spell it (the magnitude, no sign octet).
    let cert = crate::pki::x509::Certificate::from_der(der).ok()?;
    let (role, name) = cert.role()?;
    Some(Peer {
        role,
        name,
        serial_hex: cert.serial_hex(),
    })
}

/// "OU=seller CN=cafe-1 serial 0a1b…" for logs, from any parsable certificate.
pub fn describe(der: &[u8]) -> Option<String> {
    let cert = x509_cert::Certificate::from_der(der).ok()?;
    let tbs = cert.tbs_certificate();
    Some(format!(
        "subject \"{}\" serial {}",
        tbs.subject(),
        hex(tbs.serial_number().as_bytes())
    ))
}
