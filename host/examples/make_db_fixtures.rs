//! One-off: writes fixtures/db/*-v0.sqlite with the schema of commit eb7ebe8 (before versioned
//! migrations), for the migration tests.
use simlab::pki::auc_server::subscribers::{Subscriber, SubscriberDb};
use simlab::pki::gateway::store::{self, Cdr, CertRecord, Session, SessionState};
use simlab::pki::messages::AuthPath;
use simlab::pki::seller::sales::{Sale, SaleState, SalesDb};
use simlab_applet::algo::Algorithm;
use std::path::Path;

fn main() {
    let dir = Path::new("fixtures/db");
    let open = store::opener(&dir.join("gateway-v0.sqlite").to_string_lossy()).unwrap();
    let mut s = open().unwrap();
    let sess = Session {
        sid: vec![0x51; 16],
        imsi: "001010123456789".into(),
        path: AuthPath::Gsm,
        rands: vec![[0x11; 16], [0x22; 16]],
        expected: vec![1, 2, 3, 4, 5, 6, 7, 8],
        k: Some([0x33; 32]),
        created_at: 1_700_000_000,
        expires_at: 1_700_000_300,
        state: SessionState::Pending,
    };
    s.create_session(&sess).unwrap();
    let cert = CertRecord {
        serial: vec![0x01, 0x02, 0x03, 0x04],
        imsi: sess.imsi.clone(),
        sid: sess.sid.clone(),
        public_key: [0x04; 65],
        restrictions: vec![0x30, 0x00],
        alias: "alice".into(),
        not_before: 1_700_000_000,
        not_after: 1_800_000_000,
        der: vec![0x30, 0x03, 0x02, 0x01, 0x01],
        issued_at: 1_700_000_010,
        revoked_at: None,
        revocation_reason: None,
    };
    assert!(s.close_session(&sess.sid, SessionState::Issued, Some(&cert)).unwrap());
    s.add_seller("shop-1", "The Shop", 1_700_000_020).unwrap();
    s.begin().unwrap();
    assert!(s
        .insert_cdr(&Cdr {
            seller_id: "shop-1".into(),
            transaction_id: "tx-0001".into(),
            serial: cert.serial.clone(),
            imsi: cert.imsi.clone(),
            amount: 1234,
            currency: "EUR".into(),
            issued_at: 1_700_000_100,
            period: 0,
            invoice: vec![0xAA; 40],
            invoice_sha256: [0xBB; 32],
            signature: vec![0xCC; 64],
            batch_id: "batch-1".into(),
            billed_at: 1_700_000_200,
        })
        .unwrap());
    s.commit().unwrap();
    drop(s);

    let mut auc = SubscriberDb::open(&dir.join("auc-v0.sqlite")).unwrap();
    auc.import(&[Subscriber {
        imsi: "001010123456789".into(),
        algorithm: Algorithm::Milenage,
        ki: [0x46; 16],
        opc: Some([0xCD; 16]),
        amf: [0x80, 0x00],
        sqn: 32,
        mnc_len: 2,
    }])
    .unwrap();
    drop(auc);

    let mut sales = SalesDb::open(&dir.join("seller-v0.sqlite")).unwrap();
    sales
        .offer(&Sale {
            transaction_id: "tx-0001".into(),
            serial: vec![1, 2, 3, 4],
            public_key: [0x04; 65],
            item: "coffee".into(),
            amount: 250,
            currency: "EUR".into(),
            issued_at: 1_700_000_100,
            expires_at: 1_700_000_400,
            period_index: 0,
            max_purchases: 10,
            invoice: vec![0xAA; 40],
            signature: None,
            state: SaleState::Offered,
            batch_id: None,
            reason: None,
            detail: None,
        })
        .unwrap();
    drop(sales);

    let mut otp = simlab::otp::Store::open(&dir.join("otp-v0.sqlite")).unwrap();
    otp.issue(
        &simlab::otp::Transaction {
            destination: "+491701234567".into(),
            amount: 1000,
            currency: "EUR".into(),
            payee: "shop".into(),
            origin: None,
        },
        &simlab::otp::Policy::default(),
        1_700_000_000,
    )
    .unwrap();
}
