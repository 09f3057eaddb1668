//! TLS certificates by role, as rustls (webpki, ring provider) sees them: a CA from
//! `Ca::ephemeral`, a server and a client identity from `Ca::issue_tls`, and handshakes pumped
//! in memory between a `ServerConnection` and a `ClientConnection` — no sockets.

use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, ClientConnection, RootCertStore, ServerConfig, ServerConnection};
use simlab_services::http::Role;
use simlab_services::pki::gateway::ca::{Ca, TlsIdentity};
use std::sync::Arc;

/// rustls 0.23.48 deprecates the ring provider for lacking post-quantum key exchange; ring is
/// still the provider the service stack is built with (DESIGN.md), so the tests use it too.
#[allow(deprecated)]
fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn roots(ca: &Ca) -> Arc<RootCertStore> {
    let mut store = RootCertStore::empty();
    store
        .add(CertificateDer::from(ca.certificate().der.clone()))
        .expect("the CA certificate is a trust anchor");
    Arc::new(store)
}

fn chain_and_key(id: &TlsIdentity) -> (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>) {
    (
        vec![CertificateDer::from(id.certificate_der.clone())],
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(id.key_pkcs8_der.to_vec())),
    )
}

fn server_config(ca: &Ca, id: &TlsIdentity) -> Arc<ServerConfig> {
    let verifier = WebPkiClientVerifier::builder_with_provider(roots(ca), provider())
        .build()
        .unwrap();
    let (chain, key) = chain_and_key(id);
    Arc::new(
        ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_client_cert_verifier(verifier)
            .with_single_cert(chain, key)
            .expect("rustls accepts the server certificate and its PKCS#8 key"),
    )
}

fn client_config(ca: &Ca, id: &TlsIdentity) -> Arc<ClientConfig> {
    client_config_trusting(ca, id)
}

/// A client that trusts `ca` for the server and presents `id`, from whichever CA.
fn client_config_trusting(ca: &Ca, id: &TlsIdentity) -> Arc<ClientConfig> {
    let (chain, key) = chain_and_key(id);
    Arc::new(
        ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots(ca))
            .with_client_auth_cert(chain, key)
            .expect("rustls accepts the client certificate and its PKCS#8 key"),
    )
}

/// Moves bytes both ways until neither side has anything to say; the first error either side
/// reports.
fn handshake(
    server: Arc<ServerConfig>,
    client: Arc<ClientConfig>,
    name: &str,
) -> Result<ServerConnection, rustls::Error> {
    let mut s = ServerConnection::new(server)?;
    let mut c = ClientConnection::new(client, ServerName::try_from(name.to_string()).unwrap())?;
    for _ in 0..20 {
        let mut buf = Vec::new();
        while c.wants_write() {
            c.write_tls(&mut buf).unwrap();
        }
        let mut rd = buf.as_slice();
        while !rd.is_empty() {
            s.read_tls(&mut rd).unwrap();
        }
        s.process_new_packets()?;
        let mut buf = Vec::new();
        while s.wants_write() {
            s.write_tls(&mut buf).unwrap();
        }
        let mut rd = buf.as_slice();
        while !rd.is_empty() {
            c.read_tls(&mut rd).unwrap();
        }
        c.process_new_packets()?;
        if !s.is_handshaking() && !c.is_handshaking() {
            return Ok(s);
        }
    }
    panic!("the handshake did not finish");
}

#[test]
fn mutual_tls_by_name_and_by_ip() {
    let ca = Ca::ephemeral("simlab").unwrap();
    let server = ca.issue_tls(Role::Server, "auc", &[], 3600).unwrap();
    let seller = ca.issue_tls(Role::Seller, "cafe-1", &[], 3600).unwrap();
    for name in ["localhost", "127.0.0.1"] {
        let s = handshake(
            server_config(&ca, &server),
            client_config(&ca, &seller),
            name,
        )
        .unwrap_or_else(|e| panic!("{name}: {e}"));
        let peer = s
            .peer_certificates()
            .expect("the client presented its certificate");
        let cert = simlab_services::pki::x509::Certificate::from_der(peer[0].as_ref()).unwrap();
        assert_eq!(cert.role(), Some((Role::Seller, "cafe-1".to_string())));
    }
    // Every client role with clientAuth connects.
    for role in [Role::Gateway, Role::Operator] {
        let id = ca.issue_tls(role, "x", &[], 3600).unwrap();
        handshake(
            server_config(&ca, &server),
            client_config(&ca, &id),
            "localhost",
        )
        .unwrap_or_else(|e| panic!("{role:?}: {e}"));
    }
}

#[test]
fn names_outside_the_certificate_are_refused() {
    let ca = Ca::ephemeral("simlab").unwrap();
    let hosts = ["gw.example".to_string(), "10.0.0.7".to_string()];
    let server = ca.issue_tls(Role::Gateway, "gw", &hosts, 3600).unwrap();
    let client = ca.issue_tls(Role::Operator, "ops", &[], 3600).unwrap();
    for name in ["gw.example", "10.0.0.7"] {
        handshake(
            server_config(&ca, &server),
            client_config(&ca, &client),
            name,
        )
        .unwrap_or_else(|e| panic!("{name}: {e}"));
    }
    for name in ["localhost", "127.0.0.1", "other.example"] {
        assert!(
            handshake(
                server_config(&ca, &server),
                client_config(&ca, &client),
                name
            )
            .is_err(),
            "{name}"
        );
    }
}

#[test]
fn a_certificate_without_client_auth_is_refused_as_a_client() {
    let ca = Ca::ephemeral("simlab").unwrap();
    let server = ca.issue_tls(Role::Server, "auc", &[], 3600).unwrap();
    // A server certificate (serverAuth only) presented as a client certificate.
    let other_server = ca.issue_tls(Role::Server, "peer", &[], 3600).unwrap();
    let err = handshake(
        server_config(&ca, &server),
        client_config(&ca, &other_server),
        "localhost",
    )
    .unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("Purpose") || text.contains("purpose") || text.contains("usage"),
        "{text}"
    );
    // And a client certificate from another CA.
    let stranger = Ca::ephemeral("simlab").unwrap();
    let foreign = stranger
        .issue_tls(Role::Seller, "cafe-1", &[], 3600)
        .unwrap();
    assert!(
        handshake(
            server_config(&ca, &server),
            client_config_trusting(&ca, &foreign),
            "localhost"
        )
        .is_err()
    );
}
