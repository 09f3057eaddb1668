//! The gateway's records in PostgreSQL, for several gateway processes on one database. The
//! schema is the SQLite one with PostgreSQL types; billing locks the certificates it counts
//! against with `SELECT … FOR UPDATE` (in serial order, so concurrent batches cannot
//! deadlock), and a record is billed by `INSERT … ON CONFLICT DO NOTHING` on its primary key,
//! which lets exactly one of two concurrent gateways succeed.
//!
//! `--db postgres://user@host:port/db`, or for a Unix socket directory
//! `postgres://user@%2Frun%2Fpostgresql:port/db` (percent-encoded path as the host). No TLS:
//! the database is local to the gateway.

use super::{
    Billed, BillingTx, Cdr, CertRecord, Result, RevokeOutcome, Session, SessionState, Store,
    StoreError,
};
use crate::pki::messages::AuthPath;
use postgres::{Client, NoTls, Row, Statement};
use std::collections::HashMap;

/// Serialises migrations between gateways starting at once (any constant works; this
/// one spells "sim" "lab" "gw").
const SCHEMA_LOCK: i64 = 0x0053_494D_4C41_4247;

/// Version 1: the schema of the unversioned databases before it (adopted as they are).
const V1: &str = "
CREATE TABLE IF NOT EXISTS sessions (
    sid        BYTEA PRIMARY KEY,
    imsi       TEXT NOT NULL,
    path       TEXT NOT NULL,
    rands      BYTEA NOT NULL,
    expected   BYTEA NOT NULL,
    k          BYTEA,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    state      TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS sessions_pending ON sessions (state, expires_at);
CREATE TABLE IF NOT EXISTS certificates (
    serial            BYTEA PRIMARY KEY,
    imsi              TEXT NOT NULL,
    sid               BYTEA NOT NULL UNIQUE,
    public_key        BYTEA NOT NULL,
    restrictions      BYTEA NOT NULL,
    alias             TEXT NOT NULL,
    not_before        BIGINT NOT NULL,
    not_after         BIGINT NOT NULL,
    der               BYTEA NOT NULL,
    issued_at         BIGINT NOT NULL,
    revoked_at        BIGINT,
    revocation_reason TEXT
);
CREATE TABLE IF NOT EXISTS sellers (
    seller_id     TEXT PRIMARY KEY,
    name          TEXT NOT NULL,
    registered_at BIGINT NOT NULL
);
CREATE TABLE IF NOT EXISTS cdrs (
    seller_id      TEXT NOT NULL,
    transaction_id TEXT NOT NULL,
    serial         BYTEA NOT NULL,
    imsi           TEXT NOT NULL,
    amount         BIGINT NOT NULL,
    currency       TEXT NOT NULL,
    issued_at      BIGINT NOT NULL,
    period_index   BIGINT NOT NULL,
    invoice        BYTEA NOT NULL,
    invoice_sha256 BYTEA NOT NULL,
    signature      BYTEA NOT NULL,
    batch_id       TEXT NOT NULL,
    billed_at      BIGINT NOT NULL,
    seq            BIGSERIAL,
    PRIMARY KEY (seller_id, transaction_id)
);
CREATE TABLE IF NOT EXISTS purchase_counts (
    serial       BYTEA NOT NULL,
    period_index BIGINT NOT NULL,
    purchases    BIGINT NOT NULL,
    PRIMARY KEY (serial, period_index)
);
";

/// Migration *n* takes the database from version *n − 1* to *n* (as in `crate::db` for
/// SQLite; refinery 0.10 would fit postgres 0.19 but not rusqlite 0.41, and one mechanism for
/// both backends is simpler to reason about). Never edit a released one: add another.
const MIGRATIONS: &[&str] = &[V1];

/// Where the version lives: one row, created by the first simlab that versions the database.
const VERSION_TABLE: &str =
    "CREATE TABLE IF NOT EXISTS simlab_gateway_schema (version BIGINT NOT NULL)";

const CERT_COLUMNS: &str = "serial, imsi, sid, public_key, restrictions, alias, not_before, \
     not_after, der, issued_at, revoked_at, revocation_reason";

/// One connection to the gateway's PostgreSQL database, with its prepared statements.
pub struct PgStore {
    client: Client,
    statements: HashMap<&'static str, Statement>,
}

fn backend(e: postgres::Error) -> StoreError {
    StoreError::Backend(e.to_string())
}

fn is_unique_violation(e: &postgres::Error) -> bool {
    e.code() == Some(&postgres::error::SqlState::UNIQUE_VIOLATION)
}

fn cert_from_row(r: &Row) -> Result<CertRecord> {
    let get = |e: postgres::Error| StoreError::Corrupt(e.to_string());
    Ok(CertRecord {
        serial: r.try_get(0).map_err(get)?,
        imsi: r.try_get(1).map_err(get)?,
        sid: r.try_get(2).map_err(get)?,
        public_key: r
            .try_get::<_, Vec<u8>>(3)
            .map_err(get)?
            .try_into()
            .map_err(|_| StoreError::Corrupt("public_key".into()))?,
        restrictions: r.try_get(4).map_err(get)?,
        alias: r.try_get(5).map_err(get)?,
        not_before: r.try_get::<_, i64>(6).map_err(get)? as u64,
        not_after: r.try_get::<_, i64>(7).map_err(get)? as u64,
        der: r.try_get(8).map_err(get)?,
        issued_at: r.try_get::<_, i64>(9).map_err(get)? as u64,
        revoked_at: r
            .try_get::<_, Option<i64>>(10)
            .map_err(get)?
            .map(|v| v as u64),
        revocation_reason: r.try_get(11).map_err(get)?,
    })
}

impl PgStore {
    /// Connects and brings the schema to the version this build knows, or refuses a newer
    /// one.
    pub fn connect(url: &str) -> Result<PgStore> {
        let mut client = Client::connect(url, NoTls)
            .map_err(|e| StoreError::Backend(format!("connecting to PostgreSQL: {e}")))?;
        migrate(&mut client)?;
        Ok(PgStore {
            client,
            statements: HashMap::new(),
        })
    }

    /// A prepared statement for `sql`, prepared once per connection.
    fn stmt(&mut self, sql: &'static str) -> Result<Statement> {
        if let Some(s) = self.statements.get(sql) {
            return Ok(s.clone());
        }
        let s = self.client.prepare(sql).map_err(backend)?;
        self.statements.insert(sql, s.clone());
        Ok(s)
    }
}

/// The schema version this build writes.
pub fn schema_version() -> i64 {
    MIGRATIONS.len() as i64
}

/// Runs the missing migrations in one transaction (rolled back on drop if any fails), under an
/// advisory lock so concurrent gateways migrate once.
fn migrate(client: &mut Client) -> Result<()> {
    let mut tx = client.transaction().map_err(backend)?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&SCHEMA_LOCK])
        .map_err(backend)?;
    tx.batch_execute(VERSION_TABLE).map_err(backend)?;
    let version: i64 = match tx
        .query_opt("SELECT version FROM simlab_gateway_schema", &[])
        .map_err(backend)?
    {
        Some(row) => row
            .try_get(0)
            .map_err(|e| StoreError::Corrupt(e.to_string()))?,
        None => {
            tx.execute(
                "INSERT INTO simlab_gateway_schema (version) VALUES (0)",
                &[],
            )
            .map_err(backend)?;
            0
        }
    };
    let known = schema_version();
    if version > known {
        return Err(StoreError::Unusable(format!(
            "gateway database schema version {version} is newer than this simlab knows \
             ({known}); use a newer simlab"
        )));
    }
    for migration in &MIGRATIONS[version.max(0) as usize..] {
        tx.batch_execute(migration).map_err(backend)?;
    }
    tx.execute("UPDATE simlab_gateway_schema SET version = $1", &[&known])
        .map_err(backend)?;
    tx.commit().map_err(backend)
}

impl Store for PgStore {
    fn create_session(&mut self, s: &Session) -> Result<()> {
        // Sessions that expired without a 250 give up their K now.
        let expire = self.stmt(
            "UPDATE sessions SET state = 'failed', k = NULL \
             WHERE state = 'pending' AND expires_at < $1",
        )?;
        self.client
            .execute(&expire, &[&(s.created_at as i64)])
            .map_err(backend)?;
        let result = self.client.execute(
            "INSERT INTO sessions (sid, imsi, path, rands, expected, k, created_at, expires_at, state)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
            &[
                &s.sid,
                &s.imsi,
                &s.path.name(),
                &s.rands.concat(),
                &s.expected,
                &s.k.as_ref().map(|k| k.to_vec()),
                &(s.created_at as i64),
                &(s.expires_at as i64),
                &s.state.name(),
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
        let Some(r) = self
            .client
            .query_opt(
                "SELECT imsi, path, rands, expected, k, created_at, expires_at, state
                 FROM sessions WHERE sid = $1",
                &[&sid],
            )
            .map_err(backend)?
        else {
            return Ok(None);
        };
        let bad = |what: &str| StoreError::Corrupt(format!("session {what}"));
        let get = |e: postgres::Error| StoreError::Corrupt(e.to_string());
        let rands: Vec<u8> = r.try_get(2).map_err(get)?;
        let path: String = r.try_get(1).map_err(get)?;
        let state: String = r.try_get(7).map_err(get)?;
        Ok(Some(Session {
            sid: sid.to_vec(),
            imsi: r.try_get(0).map_err(get)?,
            path: match path.as_str() {
                "gsm" => AuthPath::Gsm,
                "usim" => AuthPath::Usim,
                _ => return Err(bad("path")),
            },
            rands: if !rands.is_empty() && rands.len().is_multiple_of(16) {
                rands
                    .chunks_exact(16)
                    .map(|c| c.try_into().map_err(|_| bad("rands")))
                    .collect::<Result<_>>()?
            } else {
                return Err(bad("rands"));
            },
            expected: r.try_get(3).map_err(get)?,
            k: r.try_get::<_, Option<Vec<u8>>>(4)
                .map_err(get)?
                .map(|k| k.try_into().map_err(|_| bad("k")))
                .transpose()?,
            created_at: r.try_get::<_, i64>(5).map_err(get)? as u64,
            expires_at: r.try_get::<_, i64>(6).map_err(get)? as u64,
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
            .client
            .execute(
                "UPDATE sessions SET rands = $2, expected = $3, k = $4, expires_at = $5
                 WHERE sid = $1 AND state = 'pending'",
                &[
                    &sid,
                    &rands.concat(),
                    &expected,
                    &&k[..],
                    &(expires_at as i64),
                ],
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
        let mut tx = self.client.transaction().map_err(backend)?;
        let n = tx
            .execute(
                "UPDATE sessions SET state = $2, k = NULL WHERE sid = $1 AND state = 'pending'",
                &[&sid, &state.name()],
            )
            .map_err(backend)?;
        if n != 1 {
            return Ok(false);
        }
        if let Some(c) = certificate {
            tx.execute(
                &format!(
                    "INSERT INTO certificates ({CERT_COLUMNS})
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)"
                ),
                &[
                    &c.serial,
                    &c.imsi,
                    &c.sid,
                    &&c.public_key[..],
                    &c.restrictions,
                    &c.alias,
                    &(c.not_before as i64),
                    &(c.not_after as i64),
                    &c.der,
                    &(c.issued_at as i64),
                    &c.revoked_at.map(|v| v as i64),
                    &c.revocation_reason,
                ],
            )
            .map_err(backend)?;
        }
        tx.commit().map_err(backend)?;
        Ok(true)
    }

    fn certificate(&mut self, serial: &[u8]) -> Result<Option<CertRecord>> {
        let stmt = self.stmt(
            "SELECT serial, imsi, sid, public_key, restrictions, alias, not_before, not_after, \
             der, issued_at, revoked_at, revocation_reason FROM certificates WHERE serial = $1",
        )?;
        self.client
            .query_opt(&stmt, &[&serial])
            .map_err(backend)?
            .map(|r| cert_from_row(&r))
            .transpose()
    }

    fn revoke(&mut self, serial: &[u8], at: u64, reason: &str) -> Result<RevokeOutcome> {
        let n = self
            .client
            .execute(
                "UPDATE certificates SET revoked_at = $2, revocation_reason = $3
                 WHERE serial = $1 AND revoked_at IS NULL",
                &[&serial, &(at as i64), &reason],
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
        match self.client.execute(
            "INSERT INTO sellers (seller_id, name, registered_at) VALUES ($1, $2, $3)",
            &[&seller_id, &name, &(at as i64)],
        ) {
            Ok(_) => Ok(()),
            Err(e) if is_unique_violation(&e) => {
                Err(StoreError::Conflict(format!("seller {seller_id}")))
            }
            Err(e) => Err(backend(e)),
        }
    }

    fn seller_exists(&mut self, seller_id: &str) -> Result<bool> {
        let stmt = self.stmt("SELECT 1 FROM sellers WHERE seller_id = $1")?;
        Ok(self
            .client
            .query_opt(&stmt, &[&seller_id])
            .map_err(backend)?
            .is_some())
    }

    fn cdrs(&mut self, seller_id: Option<&str>) -> Result<Vec<Cdr>> {
        let rows = self
            .client
            .query(
                "SELECT seller_id, transaction_id, serial, imsi, amount, currency, issued_at,
                        period_index, invoice, invoice_sha256, signature, batch_id, billed_at
                 FROM cdrs WHERE $1::TEXT IS NULL OR seller_id = $1
                 ORDER BY billed_at, seq",
                &[&seller_id],
            )
            .map_err(backend)?;
        let get = |e: postgres::Error| StoreError::Corrupt(e.to_string());
        rows.iter()
            .map(|r| {
                Ok(Cdr {
                    seller_id: r.try_get(0).map_err(get)?,
                    transaction_id: r.try_get(1).map_err(get)?,
                    serial: r.try_get(2).map_err(get)?,
                    imsi: r.try_get(3).map_err(get)?,
                    amount: r.try_get::<_, i64>(4).map_err(get)? as u64,
                    currency: r.try_get(5).map_err(get)?,
                    issued_at: r.try_get::<_, i64>(6).map_err(get)? as u64,
                    period: r.try_get::<_, i64>(7).map_err(get)? as u64,
                    invoice: r.try_get(8).map_err(get)?,
                    invoice_sha256: r
                        .try_get::<_, Vec<u8>>(9)
                        .map_err(get)?
                        .try_into()
                        .map_err(|_| StoreError::Corrupt("invoice_sha256".into()))?,
                    signature: r.try_get(10).map_err(get)?,
                    batch_id: r.try_get(11).map_err(get)?,
                    billed_at: r.try_get::<_, i64>(12).map_err(get)? as u64,
                })
            })
            .collect()
    }

    fn billing(&mut self, work: &mut dyn FnMut(&mut dyn BillingTx) -> Result<()>) -> Result<()> {
        // Dropped without commit (error, panic) the transaction rolls back.
        let mut tx = self.client.transaction().map_err(backend)?;
        work(&mut PgTx {
            tx: &mut tx,
            statements: &mut self.statements,
        })?;
        tx.commit().map_err(backend)
    }

    fn is_usable(&mut self) -> bool {
        !self.client.is_closed()
    }
}

/// A billing transaction on PostgreSQL, sharing the connection's prepared statements.
struct PgTx<'a, 'c> {
    tx: &'a mut postgres::Transaction<'c>,
    statements: &'a mut HashMap<&'static str, Statement>,
}

impl PgTx<'_, '_> {
    fn stmt(&mut self, sql: &'static str) -> Result<Statement> {
        if let Some(s) = self.statements.get(sql) {
            return Ok(s.clone());
        }
        let s = self.tx.prepare(sql).map_err(backend)?;
        self.statements.insert(sql, s.clone());
        Ok(s)
    }
}

impl BillingTx for PgTx<'_, '_> {
    fn lock_certificates(&mut self, serials: &[Vec<u8>]) -> Result<Vec<CertRecord>> {
        let stmt = self.stmt(
            "SELECT serial, imsi, sid, public_key, restrictions, alias, not_before, not_after, \
             der, issued_at, revoked_at, revocation_reason FROM certificates WHERE serial = $1 \
             FOR UPDATE",
        )?;
        let mut out = Vec::with_capacity(serials.len());
        for serial in serials {
            if let Some(r) = self.tx.query_opt(&stmt, &[serial]).map_err(backend)? {
                out.push(cert_from_row(&r)?);
            }
        }
        Ok(out)
    }

    fn billed(&mut self, seller_id: &str, transaction_id: &str) -> Result<Option<Billed>> {
        let stmt = self.stmt(
            "SELECT billed_at, batch_id, invoice_sha256 FROM cdrs \
             WHERE seller_id = $1 AND transaction_id = $2",
        )?;
        let Some(r) = self
            .tx
            .query_opt(&stmt, &[&seller_id, &transaction_id])
            .map_err(backend)?
        else {
            return Ok(None);
        };
        let get = |e: postgres::Error| StoreError::Corrupt(e.to_string());
        Ok(Some(Billed {
            billed_at: r.try_get::<_, i64>(0).map_err(get)? as u64,
            batch_id: r.try_get(1).map_err(get)?,
            invoice_sha256: r
                .try_get::<_, Vec<u8>>(2)
                .map_err(get)?
                .try_into()
                .map_err(|_| StoreError::Corrupt("invoice_sha256".into()))?,
        }))
    }

    fn usage(&mut self, serial: &[u8], period: u64) -> Result<u64> {
        let stmt = self.stmt(
            "SELECT purchases FROM purchase_counts WHERE serial = $1 AND period_index = $2",
        )?;
        Ok(self
            .tx
            .query_opt(&stmt, &[&serial, &(period as i64)])
            .map_err(backend)?
            .map_or(0, |r| r.get::<_, i64>(0) as u64))
    }

    fn insert_cdr(&mut self, c: &Cdr) -> Result<bool> {
        let insert = self.stmt(
            "INSERT INTO cdrs (seller_id, transaction_id, serial, imsi, amount, currency, \
             issued_at, period_index, invoice, invoice_sha256, signature, batch_id, billed_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13) \
             ON CONFLICT (seller_id, transaction_id) DO NOTHING",
        )?;
        let n = self
            .tx
            .execute(
                &insert,
                &[
                    &c.seller_id,
                    &c.transaction_id,
                    &c.serial,
                    &c.imsi,
                    &(c.amount as i64),
                    &c.currency,
                    &(c.issued_at as i64),
                    &(c.period as i64),
                    &c.invoice,
                    &&c.invoice_sha256[..],
                    &c.signature,
                    &c.batch_id,
                    &(c.billed_at as i64),
                ],
            )
            .map_err(backend)?;
        if n == 0 {
            return Ok(false);
        }
        let count = self.stmt(
            "INSERT INTO purchase_counts (serial, period_index, purchases) VALUES ($1, $2, 1) \
             ON CONFLICT (serial, period_index) DO UPDATE \
             SET purchases = purchase_counts.purchases + 1",
        )?;
        self.tx
            .execute(&count, &[&c.serial, &(c.period as i64)])
            .map_err(backend)?;
        Ok(true)
    }
}
