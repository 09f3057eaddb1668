//! The real `openssl` binary reads and verifies what the gateway CA issues: subscriber
//! certificates (seed 000) and TLS certificates by role. Needs `openssl` on PATH; without it
//! the test fails, because a skipped interoperability check is no check.

use simlab_services::http::Role;
use simlab_services::pki::gateway::ca::Ca;
use simlab_services::pki::restrictions::Restrictions;
use simlab_services::pki::x509;
use std::path::{Path, PathBuf};
use std::process::Command;

fn openssl(args: &[&str]) -> (bool, String) {
    let o = Command::new("openssl")
        .args(args)
        .output()
        .expect("run openssl (it must be installed for this test)");
    let mut text = String::from_utf8_lossy(&o.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&o.stderr));
    (o.status.success(), text)
}

fn temp(what: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("simlab-openssl-{what}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn openssl_reads_and_verifies_subscriber_and_tls_certificates() {
    let dir = temp("pki");
    let ca = Ca::load_or_create(&dir.join("ca"), "simlab").unwrap();
    let ca_pem = dir.join("ca").join("ca.pem");
    let (ok, out) = openssl(&["x509", "-in", s(&ca_pem), "-noout", "-text"]);
    assert!(ok, "{out}");
    assert!(out.contains("CA:TRUE, pathlen:0"), "{out}");
    assert!(out.contains("Certificate Sign, CRL Sign"), "{out}");
    // The CA key file is a PKCS#8 EC key openssl reads.
    let key_file = dir.join("ca").join("ca-key.pem");
    let (ok, out) = openssl(&["pkey", "-in", s(&key_file), "-noout", "-text"]);
    assert!(ok && out.contains("prime256v1"), "{out}");

    // A subscriber certificate.
    let token = p256::ecdsa::SigningKey::from_slice(&[9; 32]).unwrap();
    let der = ca
        .try_issue(
            &[0x42; 16],
            "alice",
            &x509::sec1_point(token.verifying_key()),
            simlab_services::pki::now(),
            &Restrictions::default(),
        )
        .unwrap();
    let sub = dir.join("subscriber.pem");
    std::fs::write(&sub, x509::pem_certificate(&der)).unwrap();
    let (ok, out) = openssl(&["x509", "-in", s(&sub), "-noout", "-text"]);
    assert!(ok, "{out}");
    assert!(
        out.contains("Subject: O=simlab, CN=alice")
            || out.contains("Subject: O = simlab, CN = alice"),
        "{out}"
    );
    assert!(out.contains("1.3.6.1.4.1.55555.1.1"), "{out}");
    let (ok, out) = openssl(&["verify", "-CAfile", s(&ca_pem), s(&sub)]);
    assert!(ok, "{out}");

    // TLS certificates, one per role, written as `simlab gateway issue` will write them.
    for (role, purposes) in [
        (Role::Server, &["TLS Web Server Authentication"][..]),
        (
            Role::Seller,
            &[
                "TLS Web Server Authentication",
                "TLS Web Client Authentication",
            ],
        ),
        (
            Role::Gateway,
            &[
                "TLS Web Client Authentication",
                "TLS Web Server Authentication",
            ],
        ),
        (Role::Operator, &["TLS Web Client Authentication"]),
        (Role::User, &["TLS Web Client Authentication"]),
    ] {
        let id_dir = dir.join(role.as_str());
        let hosts = [
            "localhost".to_string(),
            "127.0.0.1".to_string(),
            "::1".to_string(),
        ];
        ca.issue_tls(role, "node-1", &hosts, 86_400)
            .unwrap()
            .write(&id_dir, ca.certificate())
            .unwrap();
        let cert = id_dir.join("cert.pem");
        let (ok, out) = openssl(&["x509", "-in", s(&cert), "-noout", "-text"]);
        assert!(ok, "{out}");
        let unit = format!("OU={}", role.as_str());
        let spaced = format!("OU = {}", role.as_str());
        assert!(out.contains(&unit) || out.contains(&spaced), "{out}");
        assert!(out.contains(&purposes.join(", ")), "{role:?}: {out}");
        assert!(
            out.contains("DNS:localhost, IP Address:127.0.0.1, IP Address:0:0:0:0:0:0:0:1"),
            "{out}"
        );
        assert!(out.contains("CA:FALSE"), "{out}");
        let (ok, out) = openssl(&["verify", "-CAfile", s(&id_dir.join("ca.pem")), s(&cert)]);
        assert!(ok, "{role:?}: {out}");
        let purpose = if purposes[0].contains("Server") {
            "sslserver"
        } else {
            "sslclient"
        };
        let (ok, out) = openssl(&[
            "verify",
            "-purpose",
            purpose,
            "-CAfile",
            s(&ca_pem),
            s(&cert),
        ]);
        assert!(ok, "{role:?} {purpose}: {out}");
        // The key is the certificate's key.
        let (ok, from_key) = openssl(&["pkey", "-in", s(&id_dir.join("key.pem")), "-pubout"]);
        assert!(ok, "{from_key}");
        let (ok, from_cert) = openssl(&["x509", "-in", s(&cert), "-noout", "-pubkey"]);
        assert!(ok && from_key == from_cert, "{from_key}\n{from_cert}");
    }
    // A server certificate is no client certificate.
    let (ok, _) = openssl(&[
        "verify",
        "-purpose",
        "sslclient",
        "-CAfile",
        s(&ca_pem),
        s(&dir.join("server").join("cert.pem")),
    ]);
    assert!(!ok);
    let _ = std::fs::remove_dir_all(&dir);
}
