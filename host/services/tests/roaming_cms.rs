//! Seed 001's end-to-end signature: the token's ECDSA signature over the contract bytes,
//! wrapped by the home server in CMS SignedData with the user's seed-000 certificate, is what
//! the real `openssl cms -verify` accepts against the operator's CA — and a signature over other
//! bytes is never wrapped. Needs `openssl` on PATH: without it the test fails.

use p256::ecdsa::signature::Signer;
use simlab_services::pki::gateway::ca::Ca;
use simlab_services::pki::restrictions::Restrictions;
use simlab_services::pki::x509;
use simlab_services::roaming::RequestType;
use simlab_services::roaming::cms::{CmsError, wrap};
use simlab_services::roaming::messages::Contract;
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

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn temp() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("simlab-roaming-cms-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn openssl_verifies_the_wrapped_token_signature() {
    let dir = temp();
    let ca = Ca::load_or_create(&dir.join("ca"), "operator-no").unwrap();
    let token = p256::ecdsa::SigningKey::from_slice(&[5; 32]).unwrap();
    let now = simlab_services::pki::now();
    let cert = ca
        .try_issue(
            &[0x42; 16],
            "+4791234567",
            &x509::sec1_point(token.verifying_key()),
            now,
            &Restrictions::default(),
        )
        .unwrap();
    let contract = Contract {
        id: [3; 16],
        cp_id: "cp-stockholm".into(),
        visited: "mec-se".into(),
        home: "mec-no".into(),
        msisdn: "+4791234567".into(),
        request_type: RequestType::E2eSignature,
        amount: 0,
        currency: "SEK".into(),
        description: "Lease agreement, flat 4B".into(),
        issued_at: now,
        expires_at: now + 300,
    }
    .encode()
    .unwrap();
    let sig: p256::ecdsa::Signature = token.sign(&contract);
    let sig = sig.to_der().as_bytes().to_vec();
    let p7 = wrap(&contract, &sig, &cert).unwrap();
    let p7_path = dir.join("signed.p7");
    std::fs::write(&p7_path, &p7).unwrap();
    let out_path = dir.join("content.bin");
    let ca_pem = dir.join("ca").join("ca.pem");
    let (ok, out) = openssl(&[
        "cms",
        "-verify",
        "-inform",
        "DER",
        "-in",
        s(&p7_path),
        "-CAfile",
        s(&ca_pem),
        "-purpose",
        "any",
        "-out",
        s(&out_path),
    ]);
    assert!(ok, "{out}");
    assert!(out.contains("Verification successful"), "{out}");
    assert_eq!(std::fs::read(&out_path).unwrap(), contract);

    // Another CA's certificate for the same bytes: openssl refuses the chain.
    let other = Ca::load_or_create(&dir.join("other"), "someone-else").unwrap();
    drop(other);
    let (ok, out) = openssl(&[
        "cms",
        "-verify",
        "-inform",
        "DER",
        "-in",
        s(&p7_path),
        "-CAfile",
        s(&dir.join("other").join("ca.pem")),
        "-purpose",
        "any",
        "-out",
        s(&out_path),
    ]);
    assert!(!ok, "{out}");

    // The amount plus one: the token's signature no longer fits, and nothing is wrapped.
    let mut tampered = Contract::decode(&contract).unwrap();
    tampered.amount += 1;
    let tampered = tampered.encode().unwrap();
    assert!(matches!(
        wrap(&tampered, &sig, &cert),
        Err(CmsError::BadSignature)
    ));
    assert!(matches!(
        wrap(&contract, &sig, b"not a certificate"),
        Err(CmsError::Certificate(_))
    ));
    let _ = std::fs::remove_dir_all(&dir);
}
