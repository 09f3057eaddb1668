//! The signing server's store — SQLite (the default) or PostgreSQL (`--db postgres://…`) —
//! with the directory (Fig 3: user id, phone number, public key, plus a password verifier and
//! a status), the transactions with their states and exact request bytes, and the web
//! sessions.
//!
//! Every state change is one conditional UPDATE (`… WHERE state = ?`): a signature and an
//! abort arriving together, or a replayed signature, change the row once, and the loser is
//! told what happened instead (409/410).

use super::TxState;
use crate::db::Schema;
use crate::sql::{self, Backend, Cell, PgSchema, SqlError, V};
use std::fmt;
use std::path::Path;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

pub const SCHEMA: Schema = Schema {
    name: "signing server",
    application_id: 0x534C_7367,
    marker_table: "directory",
    migrations: &[V1],
    busy_timeout: Duration::from_secs(5),
};

const V1: &str = "
CREATE TABLE IF NOT EXISTS directory (
    user_id     TEXT PRIMARY KEY,
    phone       TEXT NOT NULL,
    public_key  BLOB,
    password    TEXT NOT NULL,
    status      TEXT NOT NULL CHECK (status IN ('active', 'disabled'))
);
CREATE TABLE IF NOT EXISTS transactions (
    id                BLOB PRIMARY KEY,
    user_id           TEXT NOT NULL,
    state             TEXT NOT NULL,
    amount            INTEGER NOT NULL,
    currency          TEXT NOT NULL,
    summary           TEXT NOT NULL,
    content           TEXT NOT NULL,
    request           BLOB,
    countersignature  BLOB,
    correlator        TEXT,
    signature         BLOB,
    cause             TEXT,
    created_at        INTEGER NOT NULL,
    approved_at       INTEGER,
    expires_at        INTEGER,
    finished_at       INTEGER
);
CREATE INDEX IF NOT EXISTS transactions_user ON transactions (user_id, created_at);
CREATE INDEX IF NOT EXISTS transactions_waiting ON transactions (state, expires_at);
CREATE TABLE IF NOT EXISTS sessions (
    id_hash     BLOB PRIMARY KEY,
    user_id     TEXT NOT NULL,
    csrf        TEXT NOT NULL,
    expires_at  INTEGER NOT NULL
);
";

const PG: PgSchema = PgSchema {
    version_table: "simlab_sign_schema",
    lock: 0x0053_494D_4C53_4947,
};

/// Why the store could not answer.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database failed or cannot be used ([`SqlError::is_bad_input`]: the user's to fix).
    #[error(transparent)]
    Sql(#[from] SqlError),
    /// The user id is taken already.
    #[error("{0} exists already")]
    Exists(String),
    /// A row holds what this build never writes.
    #[error("corrupt row: {0}")]
    Corrupt(String),
}

/// A directory row (Fig 3, record 340).
#[derive(Clone, PartialEq, Eq)]
pub struct User {
    pub user_id: String,
    /// The mobile device id 320: the number the push goes to.
    pub phone: String,
    /// The token's public key 330 (uncompressed SEC1); `None` until enrolled.
    pub public_key: Option<Vec<u8>>,
    /// The argon2id PHC string. Never printed.
    pub(crate) password: String,
    pub active: bool,
}

impl User {
    /// A directory row; `password` is the argon2id verifier ([`super::password_verifier`]).
    pub fn new(user_id: &str, phone: &str, public_key: Option<Vec<u8>>, password: String) -> User {
        User {
            user_id: user_id.to_string(),
            phone: phone.to_string(),
            public_key,
            password,
            active: true,
        }
    }
}

impl fmt::Debug for User {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("User")
            .field("user_id", &self.user_id)
            .field("phone", &self.phone)
            .field("has_key", &self.public_key.is_some())
            .field("active", &self.active)
            .finish_non_exhaustive()
    }
}

/// A transaction row.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tx {
    pub id: [u8; 16],
    pub user_id: String,
    pub state: TxState,
    pub amount: u64,
    pub currency: String,
    pub summary: String,
    /// The full content the summary abridges (its SHA-256 is in the request).
    pub content: String,
    /// The exact bytes the phone signs, once approved.
    pub request: Option<Vec<u8>>,
    pub countersignature: Option<Vec<u8>>,
    pub correlator: Option<String>,
    pub signature: Option<Vec<u8>>,
    /// Why it failed, was declined or aborted.
    pub cause: Option<String>,
    pub created_at: u64,
    pub approved_at: Option<u64>,
    pub expires_at: Option<u64>,
    pub finished_at: Option<u64>,
}

/// The store of one signing server.
pub struct Store {
    conn: Mutex<Backend>,
}

const TX_COLUMNS: &str = "id, user_id, state, amount, currency, summary, content, request, \
     countersignature, correlator, signature, cause, created_at, approved_at, expires_at, \
     finished_at";

fn opt_u64(c: Cell) -> Result<Option<u64>, SqlError> {
    Ok(match c {
        Cell::Null => None,
        other => Some(other.int()? as u64),
    })
}

fn tx_row(row: Vec<Cell>) -> Result<Tx, StoreError> {
    let mut c = row.into_iter();
    let mut next = || {
        c.next()
            .ok_or_else(|| StoreError::Corrupt("short transaction row".into()))
    };
    let id = next()?.blob()?;
    let user_id = next()?.text()?;
    let state = next()?.text()?;
    Ok(Tx {
        id: id
            .try_into()
            .map_err(|_| StoreError::Corrupt("transaction id".into()))?,
        user_id,
        state: TxState::parse(&state)
            .ok_or_else(|| StoreError::Corrupt(format!("transaction state {state:?}")))?,
        amount: next()?.int()? as u64,
        currency: next()?.text()?,
        summary: next()?.text()?,
        content: next()?.text()?,
        request: next()?.opt_blob()?,
        countersignature: next()?.opt_blob()?,
        correlator: next()?.opt_text()?,
        signature: next()?.opt_blob()?,
        cause: next()?.opt_text()?,
        created_at: next()?.int()? as u64,
        approved_at: opt_u64(next()?)?,
        expires_at: opt_u64(next()?)?,
        finished_at: opt_u64(next()?)?,
    })
}

fn user_row(row: Vec<Cell>) -> Result<User, StoreError> {
    let mut c = row.into_iter();
    let mut next = || {
        c.next()
            .ok_or_else(|| StoreError::Corrupt("short directory row".into()))
    };
    Ok(User {
        user_id: next()?.text()?,
        phone: next()?.text()?,
        public_key: next()?.opt_blob()?,
        password: next()?.text()?,
        active: next()?.text()? == "active",
    })
}

impl Store {
    /// `postgres://…` for PostgreSQL (several server processes may share it), else a SQLite
    /// path (created 0600 if missing).
    pub fn open(db: &str) -> Result<Store, StoreError> {
        Ok(Store {
            conn: Mutex::new(sql::open(db, &SCHEMA, &PG)?),
        })
    }

    /// A SQLite file.
    pub fn open_path(path: &Path) -> Result<Store, StoreError> {
        Store::open(&path.to_string_lossy())
    }

    fn conn(&self) -> MutexGuard<'_, Backend> {
        self.conn.lock().unwrap_or_else(PoisonError::into_inner)
    }

    // ---- directory ----------------------------------------------------------------------

    /// Adds a row, or with `replace` overwrites one (a new phone, key or password).
    pub fn put_user(&self, u: &User, replace: bool) -> Result<(), StoreError> {
        let status = if u.active { "active" } else { "disabled" };
        let values = [
            V::Text(&u.user_id),
            V::Text(&u.phone),
            V::OptBlob(u.public_key.as_deref()),
            V::Text(&u.password),
            V::Text(status),
        ];
        let sql = if replace {
            "INSERT INTO directory VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT (user_id) DO UPDATE \
             SET phone = excluded.phone, public_key = excluded.public_key, \
             password = excluded.password, status = excluded.status"
        } else {
            "INSERT INTO directory VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT DO NOTHING"
        };
        if self.conn().exec(sql, &values)? == 0 {
            return Err(StoreError::Exists(format!("user {:?}", u.user_id)));
        }
        Ok(())
    }

    pub fn user(&self, user_id: &str) -> Result<Option<User>, StoreError> {
        let rows = self.conn().query(
            "SELECT user_id, phone, public_key, password, status FROM directory WHERE user_id = ?1",
            &[V::Text(user_id)],
        )?;
        rows.into_iter().next().map(user_row).transpose()
    }

    pub fn users(&self) -> Result<Vec<User>, StoreError> {
        let rows = self.conn().query(
            "SELECT user_id, phone, public_key, password, status FROM directory ORDER BY user_id",
            &[],
        )?;
        rows.into_iter().map(user_row).collect()
    }

    /// Removes a user and their sessions; their transactions stay on record.
    pub fn remove_user(&self, user_id: &str) -> Result<bool, StoreError> {
        let mut conn = self.conn();
        conn.exec(
            "DELETE FROM sessions WHERE user_id = ?1",
            &[V::Text(user_id)],
        )?;
        Ok(conn.exec(
            "DELETE FROM directory WHERE user_id = ?1",
            &[V::Text(user_id)],
        )? > 0)
    }

    // ---- sessions -----------------------------------------------------------------------

    pub fn add_session(
        &self,
        id_hash: &[u8; 32],
        user_id: &str,
        csrf: &str,
        expires_at: u64,
    ) -> Result<(), StoreError> {
        let mut conn = self.conn();
        // Each login sweeps the expired sessions, so the table stays as small as the logins
        // that are live.
        conn.exec(
            "DELETE FROM sessions WHERE expires_at <= ?1",
            &[V::Int(super::now() as i64)],
        )?;
        conn.exec(
            "INSERT INTO sessions VALUES (?1, ?2, ?3, ?4)",
            &[
                V::Blob(id_hash),
                V::Text(user_id),
                V::Text(csrf),
                V::Int(expires_at as i64),
            ],
        )?;
        Ok(())
    }

    /// The user and CSRF token of a live session.
    pub fn session(
        &self,
        id_hash: &[u8; 32],
        now: u64,
    ) -> Result<Option<(String, String)>, StoreError> {
        let rows = self.conn().query(
            "SELECT s.user_id, s.csrf FROM sessions s JOIN directory d ON d.user_id = s.user_id \
             WHERE s.id_hash = ?1 AND s.expires_at > ?2 AND d.status = 'active'",
            &[V::Blob(id_hash), V::Int(now as i64)],
        )?;
        let Some(row) = rows.into_iter().next() else {
            return Ok(None);
        };
        let mut c = row.into_iter();
        match (c.next(), c.next()) {
            (Some(u), Some(t)) => Ok(Some((u.text()?, t.text()?))),
            _ => Err(StoreError::Corrupt("short session row".into())),
        }
    }

    pub fn remove_session(&self, id_hash: &[u8; 32]) -> Result<(), StoreError> {
        self.conn().exec(
            "DELETE FROM sessions WHERE id_hash = ?1",
            &[V::Blob(id_hash)],
        )?;
        Ok(())
    }

    // ---- transactions -------------------------------------------------------------------

    pub fn add_tx(&self, tx: &Tx) -> Result<(), StoreError> {
        self.conn().exec(
            &format!("INSERT INTO transactions ({TX_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16)"),
            &[
                V::Blob(&tx.id),
                V::Text(&tx.user_id),
                V::Text(tx.state.as_str()),
                V::Int(tx.amount as i64),
                V::Text(&tx.currency),
                V::Text(&tx.summary),
                V::Text(&tx.content),
                V::OptBlob(tx.request.as_deref()),
                V::OptBlob(tx.countersignature.as_deref()),
                V::OptText(tx.correlator.as_deref()),
                V::OptBlob(tx.signature.as_deref()),
                V::OptText(tx.cause.as_deref()),
                V::Int(tx.created_at as i64),
                V::OptInt(tx.approved_at.map(|v| v as i64)),
                V::OptInt(tx.expires_at.map(|v| v as i64)),
                V::OptInt(tx.finished_at.map(|v| v as i64)),
            ],
        )?;
        Ok(())
    }

    pub fn tx(&self, id: &[u8; 16]) -> Result<Option<Tx>, StoreError> {
        let rows = self.conn().query(
            &format!("SELECT {TX_COLUMNS} FROM transactions WHERE id = ?1"),
            &[V::Blob(id)],
        )?;
        rows.into_iter().next().map(tx_row).transpose()
    }

    /// A user's transactions, newest first (`user` `None`: everybody's).
    pub fn txs(&self, user: Option<&str>, limit: u32) -> Result<Vec<Tx>, StoreError> {
        let rows = match user {
            Some(u) => self.conn().query(
                &format!(
                    "SELECT {TX_COLUMNS} FROM transactions WHERE user_id = ?1 \
                     ORDER BY created_at DESC, id LIMIT ?2"
                ),
                &[V::Text(u), V::Int(limit.into())],
            )?,
            None => self.conn().query(
                &format!(
                    "SELECT {TX_COLUMNS} FROM transactions ORDER BY created_at DESC, id LIMIT ?1"
                ),
                &[V::Int(limit.into())],
            )?,
        };
        rows.into_iter().map(tx_row).collect()
    }

    /// prepared → awaiting_signature with the request; false when it was not prepared.
    pub fn approve(
        &self,
        id: &[u8; 16],
        request: &[u8],
        countersignature: &[u8],
        correlator: &str,
        approved_at: u64,
        expires_at: u64,
    ) -> Result<bool, StoreError> {
        Ok(self.conn().exec(
            "UPDATE transactions SET state = 'awaiting_signature', request = ?2, \
             countersignature = ?3, correlator = ?4, approved_at = ?5, expires_at = ?6 \
             WHERE id = ?1 AND state = 'prepared'",
            &[
                V::Blob(id),
                V::Blob(request),
                V::Blob(countersignature),
                V::Text(correlator),
                V::Int(approved_at as i64),
                V::Int(expires_at as i64),
            ],
        )? == 1)
    }

    /// Moves `id` from `from` to `to` (with a signature or a cause); false when it was not in
    /// `from` any more.
    pub fn finish(
        &self,
        id: &[u8; 16],
        from: &[TxState],
        to: TxState,
        signature: Option<&[u8]>,
        cause: Option<&str>,
        at: u64,
    ) -> Result<bool, StoreError> {
        let mut changed = false;
        let mut conn = self.conn();
        for f in from {
            changed |= conn.exec(
                "UPDATE transactions SET state = ?2, signature = COALESCE(?3, signature), \
                 cause = ?4, finished_at = ?5 WHERE id = ?1 AND state = ?6",
                &[
                    V::Blob(id),
                    V::Text(to.as_str()),
                    V::OptBlob(signature),
                    V::OptText(cause),
                    V::Int(at as i64),
                    V::Text(f.as_str()),
                ],
            )? == 1;
            if changed {
                break;
            }
        }
        Ok(changed)
    }

    /// Marks every awaiting transaction past its deadline expired; returns their ids.
    pub fn expire(&self, now: u64) -> Result<Vec<[u8; 16]>, StoreError> {
        let mut conn = self.conn();
        let rows = conn.query(
            "SELECT id FROM transactions WHERE state = 'awaiting_signature' AND expires_at <= ?1",
            &[V::Int(now as i64)],
        )?;
        let mut out = Vec::new();
        for row in rows {
            let Some(id) = row.into_iter().next() else {
                continue;
            };
            let Ok(id) = <[u8; 16]>::try_from(id.blob()?) else {
                continue;
            };
            let n = conn.exec(
                "UPDATE transactions SET state = 'expired', cause = 'no signature before the deadline', \
                 finished_at = ?2 WHERE id = ?1 AND state = 'awaiting_signature'",
                &[V::Blob(&id), V::Int(now as i64)],
            )?;
            if n == 1 {
                out.push(id);
            }
        }
        Ok(out)
    }
}
