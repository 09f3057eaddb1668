//! The databases written before schema versions (fixtures/db, made by the code of commit
//! eb7ebe8) open with today's code, migrated, with their rows intact; newer ones are refused.

use rusqlite::Connection;
use simlab_services::pki::auc_server::subscribers::SubscriberDb;
use simlab_services::pki::seller::sales::{SaleState, SalesDb};
use std::path::{Path, PathBuf};

fn golden(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("simlab-stores-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(format!("{name}.sqlite"));
    let fixture =
        Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("../../fixtures/db/{name}-v0.sqlite"));
    std::fs::copy(fixture, &path).unwrap();
    path
}

fn versions(path: &Path) -> (i32, i64) {
    let c = Connection::open(path).unwrap();
    (
        c.pragma_query_value(None, "application_id", |r| r.get(0))
            .unwrap(),
        c.pragma_query_value(None, "user_version", |r| r.get(0))
            .unwrap(),
    )
}

fn make_newer(path: &Path, version: i64) {
    Connection::open(path)
        .unwrap()
        .pragma_update(None, "user_version", version + 1)
        .unwrap();
}

#[test]
fn auc_subscribers_migrate_and_keep_their_sqn() {
    let path = golden("auc");
    assert_eq!(versions(&path), (0, 0));
    let db = SubscriberDb::open(&path).unwrap();
    let schema = &simlab_services::pki::auc_server::subscribers::SCHEMA;
    assert_eq!(versions(&path), (schema.application_id, schema.version()));
    assert_eq!(
        db.list().unwrap(),
        [("001010123456789".to_string(), "milenage".to_string(), 32)]
    );
    drop(db);
    make_newer(&path, schema.version());
    let e = SubscriberDb::open(&path)
        .err()
        .expect("newer refused")
        .to_string();
    assert!(e.contains("newer than this simlab knows"), "{e}");
}

#[test]
fn seller_records_migrate_and_keep_their_sales() {
    let path = golden("seller");
    let db = SalesDb::open(&path).unwrap();
    let schema = &simlab_services::pki::seller::sales::SCHEMA;
    assert_eq!(versions(&path), (schema.application_id, schema.version()));
    let sale = db.sale("tx-0001").unwrap().expect("sale kept");
    assert_eq!(
        (sale.item.as_str(), sale.amount, sale.state),
        ("coffee", 250, SaleState::Offered)
    );
    drop(db);
    make_newer(&path, schema.version());
    let e = SalesDb::open(&path).err().expect("newer refused").0;
    assert!(e.contains("newer than this simlab knows"), "{e}");
}

#[test]
fn otp_codes_migrate_and_their_key_moves_out_unchanged() {
    let path = golden("otp");
    let key_before: Vec<u8> = Connection::open(&path)
        .unwrap()
        .query_row("SELECT value FROM meta WHERE key = 'mac_key'", [], |r| {
            r.get(0)
        })
        .unwrap();
    let store = simlab_services::otp::Store::open(&path).unwrap();
    drop(store);
    let schema = &simlab_services::otp::SCHEMA;
    assert_eq!(versions(&path), (schema.application_id, schema.version()));
    let c = Connection::open(&path).unwrap();
    // The key moved out of the database into its own 0600 file, unchanged.
    let key_file = simlab_services::otp::key_file(&path);
    let key_after = std::fs::read(&key_file).unwrap();
    assert_eq!(
        key_before, key_after,
        "a new MAC key would void every pending code"
    );
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&key_file).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    let left: i64 = c
        .query_row("SELECT count(*) FROM meta WHERE key = 'mac_key'", [], |r| {
            r.get(0)
        })
        .unwrap();
    assert_eq!(left, 0, "the key is no longer kept in the database");
    let n: i64 = c
        .query_row("SELECT count(*) FROM otp", [], |r| r.get(0))
        .unwrap();
    assert_eq!(n, 1);
    drop(c);
    make_newer(&path, schema.version());
    let e = simlab_services::otp::Store::open(&path)
        .err()
        .expect("newer refused")
        .to_string();
    assert!(e.contains("newer than this simlab knows"), "{e}");
}
