//! The gateway's records in one SQLite file (WAL mode, synchronous FULL: a billed record
//! survives a crash or power loss once the gateway has answered). Several connections and
//! processes may share the file: writers serialise on SQLite's lock, so billing transactions
//! (`IMMEDIATE`) never interleave. The file is opened, created and migrated by [`crate::db`],
//! which also explains why nothing else may ever open it.

use super::{
    Billed, BillingTx, Cdr, CertRecord, Result, RevokeOutcome, Session, SessionState, Store,
    StoreError,
};
use crate::db::{self, DbError, Schema};
use crate::pki::messages::AuthPath;
use rusqlite::{Connection, OptionalExtension, Row, TransactionBehavior, params};
use std::path::Path;
use std::time::Duration;

/// How long a writer waits for another's lock before giving up (a billing batch of 10 000
/// records holds it for about a second).
const BUSY_TIMEOUT: Duration = Duration::from_secs(30);

/// Version 1: the schema of the unversioned files before it (they are adopted as they are).
const V1: &str = "
CREATE TABLE IF NOT EXISTS sessions (
    sid        BLOB PRIMARY KEY,
    imsi       TEXT NOT NULL,
    path       TEXT NOT NULL,
    rands      BLOB NOT NULL,
    expected   BLOB NOT NULL,
    k          BLOB,
    created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    state      TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS sessions_pending ON sessions (state, expires_at);
CREATE TABLE IF NOT EXISTS certificates (
    serial            BLOB PRIMARY KEY,
    imsi              TEXT NOT NULL,
    sid               BLOB NOT NULL UNIQUE,
    public_key        BLOB NOT NULL,
    restrictions      BLOB NOT NULL,
    alias             TEXT NOT NULL,
    not_before        INTEGER NOT NULL,
    not_after         INTEGER NOT NULL,
    der               BLOB NOT NULL,
    issued_at         INTEGER NOT NULL,
    revoked_at        INTEGER,
    revocation_reason TEXT
);
CREATE TABLE IF NOT EXISTS sellers (
    seller_id     TEXT PRIMARY KEY,
    name          TEXT NOT NULL,
    registered_at INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS cdrs (
    seller_id      TEXT NOT NULL,
    transaction_id TEXT NOT NULL,
    serial         BLOB NOT NULL,
    imsi           TEXT NOT NULL,
    amount         INTEGER NOT NULL,
    currency       TEXT NOT NULL,
    issued_at      INTEGER NOT NULL,
    period_index   INTEGER NOT NULL,
    invoice        BLOB NOT NULL,
    invoice_sha256 BLOB NOT NULL,
    signature      BLOB NOT NULL,
    batch_id       TEXT NOT NULL,
    billed_at      INTEGER NOT NULL,
    PRIMARY KEY (seller_id, transaction_id)
);
CREATE TABLE IF NOT EXISTS purchase_counts (
    serial       BLOB NOT NULL,
    period_index INTEGER NOT NULL,
    purchases    INTEGER NOT NULL,
    PRIMARY KEY (serial, period_index)
);
";

/// The gateway's file (application id "SLgw").
pub const SCHEMA: Schema = Schema {
    name: "gateway",
    application_id: 0x534C_6777,
    marker_table: "certificates",
    migrations: &[V1],
    busy_timeout: BUSY_TIMEOUT,
};

const CERT_COLUMNS: &str = "serial, imsi, sid, public_key, restrictions, alias, not_before, \
     not_after, der, issued_at, revoked_at, revocation_reason";

/// One connection to the gateway's SQLite file.
pub struct SqliteStore {
    conn: Connection,
}

fn backend(e: rusqlite::Error) -> StoreError {
    StoreError::Backend(e.to_string())
}

fn is_unique_violation(e: &rusqlite::Error) -> bool {
    matches!(
        e,
        rusqlite::Error::SqliteFailure(f, _)
            if f.code == rusqlite::ErrorCode::ConstraintViolation
    )
}

fn corrupt(what: &str) -> rusqlite::Error {
    rusqlite::Error::InvalidColumnType(0, what.to_string(), rusqlite::types::Type::Blob)
}

fn cert_from_row(r: &Row) -> rusqlite::Result<CertRecord> {
    Ok(CertRecord {
        serial: r.get(0)?,
        imsi: r.get(1)?,
        sid: r.get(2)?,
        public_key: r
            .get::<_, Vec<u8>>(3)?
            .try_into()
            .map_err(|_| corrupt("public_key"))?,
        restrictions: r.get(4)?,
        alias: r.get(5)?,
        not_before: r.get::<_, i64>(6)? as u64,
        not_after: r.get::<_, i64>(7)? as u64,
        der: r.get(8)?,
        issued_at: r.get::<_, i64>(9)? as u64,
        revoked_at: r.get::<_, Option<i64>>(10)?.map(|v| v as u64),
        revocation_reason: r.get(11)?,
    })
}

fn rands_blob(rands: &[[u8; 16]]) -> Vec<u8> {
    rands.concat()
}

fn rands_from(blob: &[u8]) -> Option<Vec<[u8; 16]>> {
    if blob.is_empty() || !blob.len().is_multiple_of(16) {
        return None;
    }
    blob.chunks_exact(16).map(|c| c.try_into().ok()).collect()
}

impl SqliteStore {
    /// Opens (creating with mode 0600 if needed, migrating if older) the gateway database
    /// at `path`.
    pub fn open(path: &Path) -> Result<SqliteStore> {
        let conn = db::open(path, &SCHEMA).map_err(|e| match e {
            DbError::Sqlite { .. } => StoreError::Backend(e.to_string()),
            e => StoreError::Unusable(e.to_string()),
        })?;
        Ok(SqliteStore { conn })
    }
}

impl Store for SqliteStore {
    fn create_session(&mut self, s: &Session) -> Result<()> {
        // Sessions that expired without a 250 give up their K now.
        self.conn
            .prepare_cached(
                "UPDATE sessions SET state = 'failed', k = NULL
                 WHERE state = 'pending' AND expires_at < ?1",
            )
            .and_then(|mut st| st.execute([s.created_at as i64]))
            .map_err(backend)?;
        let result = self.conn.execute(
            "INSERT INTO sessions (sid, imsi, path, rands, expected, k, created_at, expires_at, state)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
            params![
                s.sid,
                s.imsi,
                s.path.name(),
                rands_blob(&s.rands),
                s.expected,
                s.k.as_ref().map(|k| &k[..]),
                s.created_at as i64,
                s.expires_at as i64,
                s.state.name(),
            ],
        );
        match result {
            Ok(_) => Ok(()),
            Err(e) if is_unique_violation(&e) => Err(StoreError::Conflict(format!(
                "session id {}",
                simlab_card::hex::encode(&s.sid)
            ))),
            Err(e) => Err(backend(e)),
        }
    }

    fn session(&mut self, sid: &[u8]) -> Result<Option<Session>> {
        let row = self
            .conn
            .query_row(
                "SELECT imsi, path, rands, expected, k, created_at, expires_at, state
                 FROM sessions WHERE sid = ?1",
                [sid],
                |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        r.get::<_, String>(1)?,
                        r.get::<_, Vec<u8>>(2)?,
                        r.get::<_, Vec<u8>>(3)?,
                        r.get::<_, Option<Vec<u8>>>(4)?,
                        r.get::<_, i64>(5)?,
                        r.get::<_, i64>(6)?,
                        r.get::<_, String>(7)?,
                    ))
                },
            )
            .optional()
            .map_err(backend)?;
        let Some((imsi, path, rands, expected, k, created_at, expires_at, state)) = row else {
            return Ok(None);
        };
        let bad = |what: &str| StoreError::Corrupt(format!("session {what}"));
        Ok(Some(Session {
            sid: sid.to_vec(),
            imsi,
            path: match path.as_str() {
                "gsm" => AuthPath::Gsm,
                "usim" => AuthPath::Usim,
                _ => return Err(bad("path")),
            },
            rands: rands_from(&rands).ok_or_else(|| bad("rands"))?,
            expected,
            k: k.map(|k| k.try_into().map_err(|_| bad("k"))).transpose()?,
            created_at: created_at as u64,
            expires_at: expires_at as u64,
            state: SessionState::from_name(&state).ok_or_else(|| bad("state"))?,
        }))
    }

    fn renew_session(
        &mut self,
        sid: &[u8],
        rands: &[[u8; 16]],
        expected: &[u8],
        k: &[u8; 32],
        expires_at: u64,
    ) -> Result<bool> {
        let n = self
            .conn
            .execute(
                "UPDATE sessions SET rands = ?2, expected = ?3, k = ?4, expires_at = ?5
                 WHERE sid = ?1 AND state = 'pending'",
                params![sid, rands_blob(rands), expected, &k[..], expires_at as i64],
            )
            .map_err(backend)?;
        Ok(n == 1)
    }

    fn close_session(
        &mut self,
        sid: &[u8],
        state: SessionState,
        certificate: Option<&CertRecord>,
    ) -> Result<bool> {
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .map_err(backend)?;
        let n = tx
            .execute(
                "UPDATE sessions SET state = ?2, k = NULL WHERE sid = ?1 AND state = 'pending'",
                params![sid, state.name()],
            )
            .map_err(backend)?;
        if n != 1 {
            return Ok(false);
        }
        if let Some(c) = certificate {
            tx.execute(
                &format!(
                    "INSERT INTO certificates ({CERT_COLUMNS})
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)"
                ),
                params![
                    c.serial,
                    c.imsi,
                    c.sid,
                    &c.public_key[..],
                    c.restrictions,
                    c.alias,
                    c.not_before as i64,
                    c.not_after as i64,
                    c.der,
                    c.issued_at as i64,
                    c.revoked_at.map(|v| v as i64),
                    c.revocation_reason,
                ],
            )
            .map_err(backend)?;
        }
        tx.commit().map_err(backend)?;
        Ok(true)
    }

    fn certificate(&mut self, serial: &[u8]) -> Result<Option<CertRecord>> {
        certificate(&self.conn, serial)
    }

    fn revoke(&mut self, serial: &[u8], at: u64, reason: &str) -> Result<RevokeOutcome> {
        let n = self
            .conn
            .execute(
                "UPDATE certificates SET revoked_at = ?2, revocation_reason = ?3
                 WHERE serial = ?1 AND revoked_at IS NULL",
                params![serial, at as i64, reason],
            )
            .map_err(backend)?;
        if n == 1 {
            return Ok(RevokeOutcome::Revoked);
        }
        Ok(match self.certificate(serial)? {
            Some(_) => RevokeOutcome::AlreadyRevoked,
            None => RevokeOutcome::NotFound,
        })
    }

    fn add_seller(&mut self, seller_id: &str, name: &str, at: u64) -> Result<()> {
        match self.conn.execute(
            "INSERT INTO sellers (seller_id, name, registered_at) VALUES (?1, ?2, ?3)",
            params![seller_id, name, at as i64],
        ) {
            Ok(_) => Ok(()),
            Err(e) if is_unique_violation(&e) => {
                Err(StoreError::Conflict(format!("seller {seller_id}")))
            }
            Err(e) => Err(backend(e)),
        }
    }

    fn seller_exists(&mut self, seller_id: &str) -> Result<bool> {
        self.conn
            .prepare_cached("SELECT 1 FROM sellers WHERE seller_id = ?1")
            .and_then(|mut s| s.exists([seller_id]))
            .map_err(backend)
    }

    fn cdrs(&mut self, seller_id: Option<&str>) -> Result<Vec<Cdr>> {
        let mut stmt = self
            .conn
            .prepare(
                "SELECT seller_id, transaction_id, serial, imsi, amount, currency, issued_at,
                        period_index, invoice, invoice_sha256, signature, batch_id, billed_at
                 FROM cdrs WHERE ?1 IS NULL OR seller_id = ?1
                 ORDER BY billed_at, rowid",
            )
            .map_err(backend)?;
        let rows = stmt
            .query_map([seller_id], |r| {
                Ok(Cdr {
                    seller_id: r.get(0)?,
                    transaction_id: r.get(1)?,
                    serial: r.get(2)?,
                    imsi: r.get(3)?,
                    amount: r.get::<_, i64>(4)? as u64,
                    currency: r.get(5)?,
                    issued_at: r.get::<_, i64>(6)? as u64,
                    period: r.get::<_, i64>(7)? as u64,
                    invoice: r.get(8)?,
                    invoice_sha256: r
                        .get::<_, Vec<u8>>(9)?
                        .try_into()
                        .map_err(|_| corrupt("invoice_sha256"))?,
                    signature: r.get(10)?,
                    batch_id: r.get(11)?,
                    billed_at: r.get::<_, i64>(12)? as u64,
                })
            })
            .map_err(backend)?;
        rows.collect::<rusqlite::Result<_>>().map_err(backend)
    }

    fn billing(&mut self, work: &mut dyn FnMut(&mut dyn BillingTx) -> Result<()>) -> Result<()> {
        // IMMEDIATE: the write lock up front, so the reads below are current and no other
        // writer interleaves. Dropped without commit (error, panic) it rolls back.
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(backend)?;
        work(&mut SqliteTx(&tx))?;
        tx.commit().map_err(backend)
    }
}

fn certificate(conn: &Connection, serial: &[u8]) -> Result<Option<CertRecord>> {
    conn.prepare_cached(&format!(
        "SELECT {CERT_COLUMNS} FROM certificates WHERE serial = ?1"
    ))
    .and_then(|mut s| s.query_row([serial], cert_from_row).optional())
    .map_err(backend)
}

/// A billing transaction on SQLite.
struct SqliteTx<'a>(&'a rusqlite::Transaction<'a>);

impl BillingTx for SqliteTx<'_> {
    fn lock_certificates(&mut self, serials: &[Vec<u8>]) -> Result<Vec<CertRecord>> {
        // The IMMEDIATE transaction already holds the write lock: reads are current.
        let mut out = Vec::with_capacity(serials.len());
        for serial in serials {
            if let Some(c) = certificate(self.0, serial)? {
                out.push(c);
            }
        }
        Ok(out)
    }

    fn billed(&mut self, seller_id: &str, transaction_id: &str) -> Result<Option<Billed>> {
        self.0
            .prepare_cached(
                "SELECT billed_at, batch_id, invoice_sha256 FROM cdrs
                 WHERE seller_id = ?1 AND transaction_id = ?2",
            )
            .and_then(|mut s| {
                s.query_row([seller_id, transaction_id], |r| {
                    Ok(Billed {
                        billed_at: r.get::<_, i64>(0)? as u64,
                        batch_id: r.get(1)?,
                        invoice_sha256: r
                            .get::<_, Vec<u8>>(2)?
                            .try_into()
                            .map_err(|_| corrupt("invoice_sha256"))?,
                    })
                })
                .optional()
            })
            .map_err(backend)
    }

    fn usage(&mut self, serial: &[u8], period: u64) -> Result<u64> {
        self.0
            .prepare_cached(
                "SELECT purchases FROM purchase_counts WHERE serial = ?1 AND period_index = ?2",
            )
            .and_then(|mut s| {
                s.query_row(params![serial, period as i64], |r| r.get::<_, i64>(0))
                    .optional()
            })
            .map(|n| n.unwrap_or(0) as u64)
            .map_err(backend)
    }

    fn insert_cdr(&mut self, c: &Cdr) -> Result<bool> {
        let inserted = self
            .0
            .prepare_cached(
                "INSERT INTO cdrs (seller_id, transaction_id, serial, imsi, amount, currency,
                    issued_at, period_index, invoice, invoice_sha256, signature, batch_id,
                    billed_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)
                 ON CONFLICT (seller_id, transaction_id) DO NOTHING",
            )
            .and_then(|mut s| {
                s.execute(params![
                    c.seller_id,
                    c.transaction_id,
                    c.serial,
                    c.imsi,
                    c.amount as i64,
                    c.currency,
                    c.issued_at as i64,
                    c.period as i64,
                    c.invoice,
                    &c.invoice_sha256[..],
                    c.signature,
                    c.batch_id,
                    c.billed_at as i64,
                ])
            })
            .map_err(backend)?;
        if inserted == 0 {
            return Ok(false);
        }
        self.0
            .prepare_cached(
                "INSERT INTO purchase_counts (serial, period_index, purchases) VALUES (?1, ?2, 1)
                 ON CONFLICT (serial, period_index) DO UPDATE SET purchases = purchases + 1",
            )
            .and_then(|mut s| s.execute(params![c.serial, c.period as i64]))
            .map_err(backend)?;
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn tmp(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("simlab-gwstore-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir.join("gateway.sqlite")
    }

    /// A copy of the database today's code wrote before versioning (fixtures/db).
    fn golden(name: &str) -> PathBuf {
        let path = tmp(name);
        let fixture =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/db/gateway-v0.sqlite");
        std::fs::copy(fixture, &path).unwrap();
        path
    }

    fn cdr(tx: &str) -> Cdr {
        Cdr {
            seller_id: "shop-1".into(),
            transaction_id: tx.into(),
            serial: vec![1, 2, 3, 4],
            imsi: "001010123456789".into(),
            amount: 1,
            currency: "EUR".into(),
            issued_at: 1_700_000_500,
            period: 0,
            invoice: vec![0xAA; 40],
            invoice_sha256: [0xBB; 32],
            signature: vec![0xCC; 64],
            batch_id: "batch-2".into(),
            billed_at: 1_700_000_600,
        }
    }

    fn user_version(path: &Path) -> i64 {
        Connection::open(path)
            .unwrap()
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .unwrap()
    }

    #[test]
    fn the_unversioned_database_is_migrated_and_keeps_everything() {
        let path = golden("migrate");
        assert_eq!(user_version(&path), 0);
        let mut s = SqliteStore::open(&path).unwrap();
        assert_eq!(user_version(&path), SCHEMA.version());
        let cert = s
            .certificate(&[1, 2, 3, 4])
            .unwrap()
            .expect("certificate kept");
        assert_eq!(
            (cert.alias.as_str(), cert.not_after),
            ("alice", 1_800_000_000)
        );
        let session = s.session(&[0x51; 16]).unwrap().expect("session kept");
        assert_eq!(session.state, SessionState::Issued);
        assert!(session.k.is_none());
        assert!(s.seller_exists("shop-1").unwrap());
        let cdrs = s.cdrs(None).unwrap();
        assert_eq!(cdrs.len(), 1);
        assert_eq!(
            (cdrs[0].transaction_id.as_str(), cdrs[0].amount),
            ("tx-0001", 1234)
        );
        // And it goes on working: the purchase counter carried over.
        s.billing(&mut |tx| {
            assert_eq!(tx.usage(&[1, 2, 3, 4], 0)?, 1);
            assert!(tx.insert_cdr(&cdr("tx-0002"))?);
            Ok(())
        })
        .unwrap();
        assert_eq!(s.cdrs(Some("shop-1")).unwrap().len(), 2);
    }

    #[test]
    fn a_newer_schema_is_refused_with_its_version() {
        let path = golden("newer");
        drop(SqliteStore::open(&path).unwrap());
        Connection::open(&path)
            .unwrap()
            .pragma_update(None, "user_version", SCHEMA.version() + 1)
            .unwrap();
        let Err(StoreError::Unusable(why)) = SqliteStore::open(&path) else {
            panic!("a newer schema was opened");
        };
        assert!(why.contains("newer than this simlab knows"), "{why}");
    }

    #[test]
    fn an_error_mid_transaction_leaves_nothing() {
        let path = golden("rollback");
        let mut s = SqliteStore::open(&path).unwrap();
        let e = s
            .billing(&mut |tx| {
                assert!(tx.insert_cdr(&cdr("tx-0002"))?);
                Err(StoreError::Corrupt("stop here".into()))
            })
            .unwrap_err();
        assert_eq!(e, StoreError::Corrupt("stop here".into()));
        assert_eq!(s.cdrs(None).unwrap().len(), 1);
        s.billing(&mut |tx| {
            assert!(tx.billed("shop-1", "tx-0002")?.is_none());
            assert_eq!(
                tx.usage(&[1, 2, 3, 4], 0)?,
                1,
                "the counter was rolled back too"
            );
            Ok(())
        })
        .unwrap();
    }

    #[test]
    fn a_panic_mid_transaction_leaves_nothing_and_the_connection_usable() {
        let path = golden("panic");
        let mut s = SqliteStore::open(&path).unwrap();
        let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let _ = s.billing(&mut |tx| {
                tx.insert_cdr(&cdr("tx-0002"))?;
                panic!("a billing bug");
            });
        }));
        assert!(caught.is_err());
        // The same connection takes the write lock again: no transaction was left open.
        s.billing(&mut |tx| {
            assert!(tx.billed("shop-1", "tx-0002")?.is_none());
            assert!(tx.insert_cdr(&cdr("tx-0003"))?);
            Ok(())
        })
        .unwrap();
        // And another connection sees exactly that.
        let mut other = SqliteStore::open(&path).unwrap();
        let ids: Vec<String> = other
            .cdrs(None)
            .unwrap()
            .into_iter()
            .map(|c| c.transaction_id)
            .collect();
        assert_eq!(ids, ["tx-0001", "tx-0003"]);
    }

    #[test]
    fn another_stores_file_is_refused() {
        let path = tmp("seller");
        std::fs::copy(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/db/seller-v0.sqlite"),
            &path,
        )
        .unwrap();
        let Err(StoreError::Unusable(why)) = SqliteStore::open(&path) else {
            panic!("a seller database was opened as the gateway's");
        };
        assert!(why.contains("not a simlab gateway database"), "{why}");
    }
}
