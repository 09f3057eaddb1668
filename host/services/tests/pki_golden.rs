//! The bytes of docs/pki-messages.md (sections 4, 5, 7), kept in fixtures/pki/: encoding the
//! documented inputs gives exactly these bytes, decoding them gives the documented fields,
//! and malformed variants are errors, never panics.

use p256::ecdsa::SigningKey;
use simlab_services::pki::invoice::Invoice;
use simlab_services::pki::restrictions::Restrictions;
use simlab_services::pki::x509::{self, Certificate, Kind, Template};
use x509_cert::name::Name;

fn fixture(name: &str) -> Vec<u8> {
    let path = format!("{}/../../fixtures/pki/{name}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    simlab_card::hex::decode(name, text.trim()).unwrap_or_else(|e| panic!("{path}: {e:?}"))
}

fn key(byte: u8) -> SigningKey {
    SigningKey::from_slice(&[byte; 32]).unwrap()
}

fn point(k: &SigningKey) -> [u8; 65] {
    x509::sec1_point(k.verifying_key())
}

const NOT_BEFORE: u64 = 1_700_000_000;
const Y2050: u64 = 2_524_608_000;

fn ca_name() -> Name {
    x509::name("simlab", "simlab gateway CA").unwrap()
}

fn ca_der() -> Vec<u8> {
    let k = key(7);
    let pk = point(&k);
    let serial: Vec<u8> = (1..=16).collect();
    x509::issue(
        &Template {
            serial: &serial,
            issuer: &ca_name(),
            subject: &ca_name(),
            not_before: NOT_BEFORE,
            not_after: NOT_BEFORE + 10 * 365 * 86_400,
            public_key: &pk,
            authority_key_id: &x509::key_id(&pk),
            kind: Kind::Ca,
        },
        &k,
    )
    .unwrap()
}

fn subscriber_der(not_before: u64) -> Vec<u8> {
    let r = Restrictions::default();
    x509::issue(
        &Template {
            serial: &[0x42; 16],
            issuer: &ca_name(),
            subject: &x509::name("simlab", "alice").unwrap(),
            not_before,
            not_after: not_before + r.validity_seconds,
            public_key: &point(&key(9)),
            authority_key_id: &x509::key_id(&point(&key(7))),
            kind: Kind::Subscriber(&r),
        },
        &key(7),
    )
    .unwrap()
}

#[test]
fn restrictions_bytes_of_the_documentation() {
    let golden = fixture("restrictions-default.hex");
    assert_eq!(Restrictions::default().to_der(), golden);
    assert_eq!(
        Restrictions::from_der(&golden).unwrap(),
        Restrictions::default()
    );
}

#[test]
fn invoice_bytes_of_the_documentation() {
    let invoice = Invoice {
        seller_id: "cafe-1".into(),
        transaction_id: "t-0001".into(),
        serial: vec![0x12, 0x34],
        amount: 350,
        currency: "EUR".into(),
        issued_at: 1_700_000_000,
        item: "coffee".into(),
    };
    let golden = fixture("invoice-example.hex");
    assert_eq!(invoice.encode().unwrap(), golden);
    assert_eq!(Invoice::decode(&golden).unwrap(), invoice);
}

#[test]
fn ca_certificate_bytes() {
    let golden = fixture("ca.hex");
    assert_eq!(ca_der(), golden);
    let ca = Certificate::from_der(&golden).unwrap();
    assert!(ca.is_ca);
    assert_eq!(ca.serial, (1..=16).collect::<Vec<u8>>());
    assert_eq!(ca.subject, ca.issuer);
    assert_eq!(ca.subject_organization.as_deref(), Some("simlab"));
    assert_eq!(ca.subject_common_name.as_deref(), Some("simlab gateway CA"));
    assert_eq!(ca.public_key, point(&key(7)));
    assert_eq!(ca.restrictions, None);
    assert!(ca.extended_key_usages().is_empty());
    ca.check_issued_by(&ca).unwrap();
}

#[test]
fn subscriber_certificate_bytes() {
    let golden = fixture("subscriber.hex");
    assert_eq!(subscriber_der(NOT_BEFORE), golden);
    let ca = Certificate::from_der(&fixture("ca.hex")).unwrap();
    let c = Certificate::from_der(&golden).unwrap();
    assert_eq!(c.serial, [0x42; 16]);
    assert_eq!(c.serial_hex(), "42".repeat(16));
    assert_eq!(c.issuer, ca.subject);
    assert_eq!(c.subject_organization.as_deref(), Some("simlab"));
    assert_eq!(c.subject_common_name.as_deref(), Some("alice"));
    assert_eq!(c.subject_organizational_unit, None);
    assert_eq!(
        (c.not_before, c.not_after),
        (NOT_BEFORE, NOT_BEFORE + 604_800)
    );
    assert_eq!(c.public_key, point(&key(9)));
    assert!(!c.is_ca);
    assert_eq!(c.restrictions, Some(Restrictions::default()));
    assert_eq!(c.role(), None);
    c.check_issued_by(&ca).unwrap();
    // The documented layout, at the documented offsets (docs/pki-messages.md section 4).
    let find = |needle: &[u8]| golden.windows(needle.len()).position(|w| w == needle);
    assert!(find(b"\x17\x0d231114221320Z\x17\x0d231121221320Z").is_some());
    assert!(
        find(&[
            0x30, 0x0c, 0x06, 0x03, 0x55, 0x1d, 0x13, 0x01, 0x01, 0xff, 0x04, 0x02, 0x30, 0x00
        ])
        .is_some()
    );
    assert!(
        find(&[
            0x06, 0x03, 0x55, 0x1d, 0x0f, 0x01, 0x01, 0xff, 0x04, 0x04, 0x03, 0x02, 0x07, 0x80
        ])
        .is_some()
    );
    let mut ext = vec![
        0x06, 0x0a, 0x2b, 6, 1, 4, 1, 0x83, 0xb2, 0x03, 1, 1, 0x04, 0x18,
    ];
    ext.extend(fixture("restrictions-default.hex"));
    assert!(find(&ext).is_some());
}

#[test]
fn generalized_time_from_2050() {
    let golden = fixture("subscriber-2050.hex");
    assert_eq!(subscriber_der(Y2050), golden);
    let c = Certificate::from_der(&golden).unwrap();
    assert_eq!(c.not_before, Y2050);
    let find = |needle: &[u8]| golden.windows(needle.len()).position(|w| w == needle);
    assert!(find(b"\x18\x0f20500101000000Z\x18\x0f20500108000000Z").is_some());
    // The last second of 2049 is still a UTCTime.
    let edge = subscriber_der(Y2050 - 1);
    let find = |needle: &[u8]| edge.windows(needle.len()).position(|w| w == needle);
    assert!(find(b"\x17\x0d491231235959Z\x18\x0f20500107235959Z").is_some());
    assert_eq!(Certificate::from_der(&edge).unwrap().not_before, Y2050 - 1);
}

/// A certificate whose notBefore is the 13 bytes `2é010100000Z`: not digits, and a multi-byte
/// UTF-8 character where a string slice would split it. It used to panic the parser (the
/// seller answered 500, `simlab ms enroll` exited 101).
#[test]
fn a_non_ascii_utc_time_is_an_error() {
    let mut der = fixture("subscriber.hex");
    let utc = b"231114221320Z";
    let at = der.windows(utc.len()).position(|w| w == utc).unwrap();
    let evil = "2é010100000Z".as_bytes();
    assert_eq!(evil.len(), utc.len());
    der[at..at + utc.len()].copy_from_slice(evil);
    let err = Certificate::from_der(&der).unwrap_err();
    assert!(err.0.contains("UTCTime"), "{err}");
    let pem = x509::pem_certificate(&der);
    assert!(Certificate::from_pem(&pem).is_err());
}

#[test]
fn every_truncation_and_bit_flip_is_an_error_or_a_certificate() {
    let ca = Certificate::from_der(&fixture("ca.hex")).unwrap();
    let der = fixture("subscriber.hex");
    for n in 0..der.len() {
        assert!(
            Certificate::from_der(&der[..n]).is_err(),
            "truncated to {n}"
        );
    }
    for at in 0..der.len() {
        for bit in [0x01, 0x80] {
            let mut d = der.clone();
            d[at] ^= bit;
            // Flips inside the signature or key may still parse; never a panic, and never a
            // certificate that the CA's signature still covers.
            if let Ok(c) = Certificate::from_der(&d) {
                assert!(c.check_issued_by(&ca).is_err(), "flip at {at}");
            }
        }
    }
    assert!(Certificate::from_der(&[der.as_slice(), &[0]].concat()).is_err());
    assert!(
        Certificate::from_pem("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n")
            .is_err()
    );
    assert!(Certificate::from_pem("not pem").is_err());
}

#[test]
fn malformed_restrictions_and_invoices_are_errors() {
    let r = fixture("restrictions-default.hex");
    for n in 0..r.len() {
        assert!(Restrictions::from_der(&r[..n]).is_err());
    }
    for at in 0..r.len() {
        let mut d = r.clone();
        d[at] ^= 0x80;
        let _ = Restrictions::from_der(&d);
    }
    // A negative limit, a non-minimal INTEGER, a UTF8String currency.
    let mut negative = r.clone();
    negative[4] = 0x93;
    assert!(Restrictions::from_der(&negative).is_err());
    let mut utf8 = r.clone();
    utf8[6] = 0x0c;
    assert!(Restrictions::from_der(&utf8).is_err());
    let non_minimal = [&[0x30, 0x17, 0x02, 0x03, 0x00, 0x13, 0x88][..], &r[6..]].concat();
    assert!(Restrictions::from_der(&non_minimal).is_err());

    let inv = fixture("invoice-example.hex");
    for n in 0..inv.len() {
        assert!(Invoice::decode(&inv[..n]).is_err());
    }
    for at in 0..inv.len() {
        let mut d = inv.clone();
        d[at] ^= 0xff;
        let _ = Invoice::decode(&d);
    }
}

/// The hex at the start of each line of the first fenced block after `marker` in
/// docs/pki-messages.md, one byte string per line that has any.
fn doc_rows(marker: &str) -> Vec<Vec<u8>> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/pki-messages.md");
    let doc = std::fs::read_to_string(path).unwrap();
    let after = &doc[doc
        .find(marker)
        .unwrap_or_else(|| panic!("no {marker:?} in the doc"))..];
    let fence = after.find("```").unwrap();
    let block = &after[fence..];
    let block = &block[block.find('\n').unwrap() + 1..];
    let block = &block[..block.find("```").unwrap()];
    block
        .lines()
        .map(|line| {
            // The bytes, then two or more spaces, then the annotation.
            let bytes = line.trim_start();
            let bytes = bytes.split("  ").next().unwrap_or_default();
            let hex: String = bytes
                .split_whitespace()
                .take_while(|t| t.len() % 2 == 0 && t.bytes().all(|b| b.is_ascii_hexdigit()))
                .collect();
            simlab_card::hex::decode("doc", &hex).unwrap()
        })
        .filter(|row| !row.is_empty())
        .collect()
}

#[test]
fn the_documentation_shows_the_fixture_bytes() {
    assert_eq!(
        doc_rows("restrictions-default.hex`):").concat(),
        fixture("restrictions-default.hex")
    );
    assert_eq!(
        doc_rows("invoice-example.hex`):").concat(),
        fixture("invoice-example.hex")
    );
    // The certificate listing leaves the point and the signature out: each line must be found
    // in the fixture after the previous one.
    let cert = fixture("subscriber.hex");
    let mut from = 0;
    let rows = doc_rows("**The bytes.** The subscriber certificate");
    assert!(rows.len() > 20);
    for row in rows {
        let at = cert[from..]
            .windows(row.len())
            .position(|w| w == row)
            .unwrap_or_else(|| panic!("doc row {row:02x?} not in the certificate after {from}"));
        from += at + row.len();
    }
}
