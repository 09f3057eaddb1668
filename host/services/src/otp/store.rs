//! The OTP service's store (seed 004's database 107 and the information server's records):
//! the directory, the sessions, every certificate issued with its outcome, the registers, and
//! the stored policy. SQLite by default, PostgreSQL with `--db postgres://…` (see
//! [`crate::sql`]).
//!
//! What the store holds about a code is a MAC under a key that is *not* in the store (see
//! `docs/otp.md`): someone who reads the database learns who was sent what and when, but not
//! a live code, and cannot make one verify. Session tokens are kept as SHA-256 hashes, so the
//! database does not let anyone take over a session either.
//!
//! Every change of state is a conditional UPDATE (`… WHERE state = 'pending'`): a code is used
//! at most once even with two confirmations racing, and a closed session voids its codes in
//! the same transaction that closes it.

use crate::db::Schema;
use crate::sql::{self, Backend, Cell, PgSchema, SqlError, V};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

pub const SCHEMA: Schema = Schema {
    name: "OTP service",
    application_id: 0x534C_6F73,
    marker_table: "directory",
    migrations: &[V1],
    busy_timeout: Duration::from_secs(5),
};

const PG: PgSchema = PgSchema {
    version_table: "simlab_otp_service_schema",
    // Serialises the OTP service's migrations between processes starting at once.
    lock: 0x0053_494D_4F54_5053,
};

const V1: &str = "
CREATE TABLE IF NOT EXISTS settings (
    name  TEXT PRIMARY KEY,
    value INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS directory (
    identifier TEXT PRIMARY KEY,
    msisdn     TEXT NOT NULL,
    bank       TEXT,
    card       TEXT,
    added_at   INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS sessions (
    token_hash   BLOB PRIMARY KEY,
    number       BLOB NOT NULL,
    identifier   TEXT NOT NULL,
    msisdn       TEXT NOT NULL,
    opened_at    INTEGER NOT NULL,
    expires_at   INTEGER NOT NULL,
    closed_at    INTEGER,
    close_reason TEXT
);
CREATE INDEX IF NOT EXISTS sessions_identifier ON sessions (identifier, opened_at);
CREATE TABLE IF NOT EXISTS certificates (
    id           BLOB PRIMARY KEY,
    session      BLOB NOT NULL,
    identifier   TEXT NOT NULL,
    msisdn       TEXT NOT NULL,
    kind         TEXT NOT NULL,
    mode         TEXT NOT NULL,
    amount       INTEGER NOT NULL,
    currency     TEXT NOT NULL,
    payee        TEXT NOT NULL,
    items        TEXT NOT NULL,
    account_from TEXT NOT NULL,
    account_to   TEXT NOT NULL,
    bank_ref     TEXT,
    mac          BLOB,
    issued_at    INTEGER NOT NULL,
    expires_at   INTEGER NOT NULL,
    failures     INTEGER NOT NULL,
    state        TEXT NOT NULL,
    outcome      TEXT,
    used_at      INTEGER
);
CREATE INDEX IF NOT EXISTS certificates_msisdn ON certificates (msisdn, issued_at);
CREATE INDEX IF NOT EXISTS certificates_session ON certificates (session);
CREATE TABLE IF NOT EXISTS registers (
    identifier TEXT NOT NULL,
    currency   TEXT NOT NULL,
    total      INTEGER NOT NULL,
    PRIMARY KEY (identifier, currency)
);
";

/// Why the store could not do what was asked.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database failed or cannot be used ([`SqlError::is_bad_input`]: the user's to fix).
    #[error(transparent)]
    Sql(#[from] SqlError),
    /// The identifier is in the directory already.
    #[error("{0} exists already")]
    Exists(String),
    /// A row holds what this build never writes.
    #[error("corrupt row: {0}")]
    Corrupt(String),
    /// Too many sessions for one identifier, or codes for one number, in the window.
    #[error("{count} {what} in the last {window} s (the limit); try again in {retry_after} s")]
    RateLimited {
        what: &'static str,
        count: u64,
        window: u64,
        retry_after: u64,
    },
}

/// A directory row: an identifier's certified address and its bank.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub identifier: String,
    /// E.164.
    pub msisdn: String,
    pub bank: Option<String>,
    /// The card reference the bank knows (never a card number).
    pub card: Option<String>,
    pub added_at: i64,
}

/// A session of terminal A.
#[derive(Clone, PartialEq, Eq)]
pub struct Session {
    pub token_hash: [u8; 32],
    /// The secret session number (201): bound into every code's MAC, never shown.
    pub number: [u8; 16],
    pub identifier: String,
    pub msisdn: String,
    pub opened_at: i64,
    pub expires_at: i64,
    pub closed_at: Option<i64>,
    pub close_reason: Option<String>,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("identifier", &self.identifier)
            .field("opened_at", &self.opened_at)
            .finish_non_exhaustive()
    }
}

/// One line of a transaction.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Item {
    pub product: String,
    pub quantity: u64,
}

/// A certificate: one login or payment, its code's MAC, and what became of it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Certificate {
    pub id: [u8; 16],
    pub session: [u8; 32],
    pub identifier: String,
    pub msisdn: String,
    /// `login` or `payment`.
    pub kind: String,
    /// `secured` (code by SMS), `normal` (under the limit: one step), `reverse` (code shown
    /// on terminal A, sent back by SMS).
    pub mode: String,
    pub amount: u64,
    pub currency: String,
    pub payee: String,
    pub items: Vec<Item>,
    pub account_from: String,
    pub account_to: String,
    pub bank_ref: Option<String>,
    pub mac: Option<[u8; 32]>,
    pub issued_at: i64,
    pub expires_at: i64,
    pub failures: u32,
    /// `sending`, `pending`, `awaiting_sms`, `validated`, `blocked`, `expired`, `void`,
    /// `declined`.
    pub state: String,
    /// Why it ended as it did (`send_failed`, `session_closed`, `bank_declined`, …).
    pub outcome: Option<String>,
    pub used_at: Option<i64>,
}

/// Validated amounts of one identifier in one currency over a period.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Settlement {
    pub identifier: String,
    pub currency: String,
    pub payments: u64,
    pub amount: u64,
}

/// The OTP service's store.
pub struct Store {
    conn: Mutex<Backend>,
}

const CERT_COLUMNS: &str = "id, session, identifier, msisdn, kind, mode, amount, currency, payee,
    items, account_from, account_to, bank_ref, mac, issued_at, expires_at, failures, state,
    outcome, used_at";

fn corrupt(what: &str) -> StoreError {
    StoreError::Corrupt(what.to_string())
}

fn array<const N: usize>(b: Vec<u8>, what: &str) -> Result<[u8; N], StoreError> {
    b.try_into().map_err(|_| corrupt(what))
}

fn certificate(row: Vec<Cell>) -> Result<Certificate, StoreError> {
    let mut c = row.into_iter();
    let mut next = || c.next().ok_or_else(|| corrupt("short certificate row"));
    let id = array(next()?.blob()?, "certificate id")?;
    let session = array(next()?.blob()?, "certificate session")?;
    let identifier = next()?.text()?;
    let msisdn = next()?.text()?;
    let kind = next()?.text()?;
    let mode = next()?.text()?;
    let amount = next()?.int()? as u64;
    let currency = next()?.text()?;
    let payee = next()?.text()?;
    let items = serde_json::from_str(&next()?.text()?).map_err(|_| corrupt("items"))?;
    let account_from = next()?.text()?;
    let account_to = next()?.text()?;
    let bank_ref = next()?.opt_text()?;
    let mac = next()?
        .opt_blob()?
        .map(|m| array(m, "certificate MAC"))
        .transpose()?;
    Ok(Certificate {
        id,
        session,
        identifier,
        msisdn,
        kind,
        mode,
        amount,
        currency,
        payee,
        items,
        account_from,
        account_to,
        bank_ref,
        mac,
        issued_at: next()?.int()?,
        expires_at: next()?.int()?,
        failures: next()?.int()? as u32,
        state: next()?.text()?,
        outcome: next()?.opt_text()?,
        used_at: match next()? {
            Cell::Null => None,
            other => Some(other.int()?),
        },
    })
}

impl Store {
    /// `postgres://…` for PostgreSQL, else an SQLite file (created 0600).
    pub fn open(db: &str) -> Result<Store, StoreError> {
        Ok(Store {
            conn: Mutex::new(sql::open(db, &SCHEMA, &PG)?),
        })
    }

    fn conn(&self) -> MutexGuard<'_, Backend> {
        self.conn.lock().unwrap_or_else(PoisonError::into_inner)
    }

    // ----- policy ------------------------------------------------------------------------

    /// The stored limit: payments above it are secured; `None`: every payment is.
    pub fn limit(&self) -> Result<Option<u64>, StoreError> {
        let rows = self
            .conn()
            .query("SELECT value FROM settings WHERE name = 'limit'", &[])?;
        match rows.into_iter().next().and_then(|r| r.into_iter().next()) {
            Some(c) => Ok(Some(c.int()? as u64)),
            None => Ok(None),
        }
    }

    pub fn set_limit(&self, limit: Option<u64>) -> Result<(), StoreError> {
        let mut conn = self.conn();
        conn.transaction(|tx| -> Result<bool, StoreError> {
            tx.exec("DELETE FROM settings WHERE name = 'limit'", &[])?;
            if let Some(l) = limit {
                tx.exec(
                    "INSERT INTO settings (name, value) VALUES ('limit', ?1)",
                    &[V::Int(l as i64)],
                )?;
            }
            Ok(true)
        })?;
        Ok(())
    }

    // ----- directory ---------------------------------------------------------------------

    pub fn add_entry(&self, e: &Entry) -> Result<(), StoreError> {
        let added = self.conn().exec(
            "INSERT INTO directory (identifier, msisdn, bank, card, added_at)
             VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT (identifier) DO NOTHING",
            &[
                V::Text(&e.identifier),
                V::Text(&e.msisdn),
                V::OptText(e.bank.as_deref()),
                V::OptText(e.card.as_deref()),
                V::Int(e.added_at),
            ],
        )?;
        if added == 0 {
            return Err(StoreError::Exists(format!("identifier {:?}", e.identifier)));
        }
        Ok(())
    }

    fn entries(&self, condition: &str, values: &[V<'_>]) -> Result<Vec<Entry>, StoreError> {
        let rows = self.conn().query(
            &format!(
                "SELECT identifier, msisdn, bank, card, added_at FROM directory {condition}
                 ORDER BY identifier"
            ),
            values,
        )?;
        rows.into_iter()
            .map(|r| {
                let mut c = r.into_iter();
                let mut next = || c.next().ok_or_else(|| corrupt("short directory row"));
                Ok(Entry {
                    identifier: next()?.text()?,
                    msisdn: next()?.text()?,
                    bank: next()?.opt_text()?,
                    card: next()?.opt_text()?,
                    added_at: next()?.int()?,
                })
            })
            .collect()
    }

    pub fn entry(&self, identifier: &str) -> Result<Option<Entry>, StoreError> {
        Ok(self
            .entries("WHERE identifier = ?1", &[V::Text(identifier)])?
            .pop())
    }

    pub fn list_entries(&self) -> Result<Vec<Entry>, StoreError> {
        self.entries("", &[])
    }

    /// Removes an identifier; false when there was none.
    pub fn remove_entry(&self, identifier: &str) -> Result<bool, StoreError> {
        Ok(self.conn().exec(
            "DELETE FROM directory WHERE identifier = ?1",
            &[V::Text(identifier)],
        )? == 1)
    }

    // ----- sessions ----------------------------------------------------------------------

    /// Opens `s` unless its identifier opened `max` sessions in the last `window` seconds.
    pub fn open_session(&self, s: &Session, max: u64, window: u64) -> Result<(), StoreError> {
        let mut conn = self.conn();
        conn.transaction(|tx| -> Result<bool, StoreError> {
            let since = s.opened_at - window as i64;
            let rows = tx.query(
                "SELECT count(*), min(opened_at) FROM sessions
                 WHERE identifier = ?1 AND opened_at > ?2",
                &[V::Text(&s.identifier), V::Int(since)],
            )?;
            let (count, oldest) = count_and_oldest(rows)?;
            if count >= max {
                return Err(StoreError::RateLimited {
                    what: "sessions for this identifier",
                    count,
                    window,
                    retry_after: retry_after(oldest, window, s.opened_at),
                });
            }
            tx.exec(
                "INSERT INTO sessions (token_hash, number, identifier, msisdn, opened_at,
                 expires_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                &[
                    V::Blob(&s.token_hash),
                    V::Blob(&s.number),
                    V::Text(&s.identifier),
                    V::Text(&s.msisdn),
                    V::Int(s.opened_at),
                    V::Int(s.expires_at),
                ],
            )?;
            Ok(true)
        })?;
        Ok(())
    }

    pub fn session(&self, token_hash: &[u8; 32]) -> Result<Option<Session>, StoreError> {
        let rows = self.conn().query(
            "SELECT token_hash, number, identifier, msisdn, opened_at, expires_at, closed_at,
             close_reason FROM sessions WHERE token_hash = ?1",
            &[V::Blob(token_hash)],
        )?;
        let Some(row) = rows.into_iter().next() else {
            return Ok(None);
        };
        let mut c = row.into_iter();
        let mut next = || c.next().ok_or_else(|| corrupt("short session row"));
        Ok(Some(Session {
            token_hash: array(next()?.blob()?, "session token")?,
            number: array(next()?.blob()?, "session number")?,
            identifier: next()?.text()?,
            msisdn: next()?.text()?,
            opened_at: next()?.int()?,
            expires_at: next()?.int()?,
            closed_at: match next()? {
                Cell::Null => None,
                other => Some(other.int()?),
            },
            close_reason: next()?.opt_text()?,
        }))
    }

    /// Closes an open session and voids its unused codes, in one transaction; false when it
    /// was closed already.
    pub fn close_session(
        &self,
        token_hash: &[u8; 32],
        now: i64,
        reason: &str,
    ) -> Result<bool, StoreError> {
        let mut conn = self.conn();
        conn.transaction(|tx| -> Result<bool, StoreError> {
            let closed = tx.exec(
                "UPDATE sessions SET closed_at = ?2, close_reason = ?3
                 WHERE token_hash = ?1 AND closed_at IS NULL",
                &[V::Blob(token_hash), V::Int(now), V::Text(reason)],
            )?;
            if closed == 0 {
                return Ok(false);
            }
            tx.exec(
                "UPDATE certificates SET state = 'void', outcome = ?2
                 WHERE session = ?1 AND state IN ('sending', 'pending', 'awaiting_sms')",
                &[V::Blob(token_hash), V::Text(reason)],
            )?;
            Ok(true)
        })
    }

    /// Closes every session whose time is up at `now`, voiding its codes; how many.
    pub fn sweep(&self, now: i64) -> Result<usize, StoreError> {
        let rows = self.conn().query(
            "SELECT token_hash FROM sessions WHERE closed_at IS NULL AND expires_at <= ?1",
            &[V::Int(now)],
        )?;
        let mut closed = 0;
        for row in rows {
            let hash = array(
                row.into_iter()
                    .next()
                    .ok_or_else(|| corrupt("short row"))?
                    .blob()?,
                "session token",
            )?;
            if self.close_session(&hash, now, "timeout")? {
                closed += 1;
            }
        }
        Ok(closed)
    }

    // ----- certificates ------------------------------------------------------------------

    /// Records a certificate. With `sms_limit` (max, window), refuses when the number got
    /// `max` codes in the window already, counted in the same transaction.
    pub fn insert_certificate(
        &self,
        c: &Certificate,
        sms_limit: Option<(u64, u64)>,
    ) -> Result<(), StoreError> {
        let items = serde_json::to_string(&c.items).map_err(|e| corrupt(&e.to_string()))?;
        let mut conn = self.conn();
        conn.transaction(|tx| -> Result<bool, StoreError> {
            if let Some((max, window)) = sms_limit {
                let rows = tx.query(
                    "SELECT count(*), min(issued_at) FROM certificates
                     WHERE msisdn = ?1 AND issued_at > ?2 AND mode = 'secured'
                     AND state <> 'declined'",
                    &[V::Text(&c.msisdn), V::Int(c.issued_at - window as i64)],
                )?;
                let (count, oldest) = count_and_oldest(rows)?;
                if count >= max {
                    return Err(StoreError::RateLimited {
                        what: "codes sent to this number",
                        count,
                        window,
                        retry_after: retry_after(oldest, window, c.issued_at),
                    });
                }
            }
            tx.exec(
                &format!(
                    "INSERT INTO certificates ({CERT_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6,
                     ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19, ?20)"
                ),
                &[
                    V::Blob(&c.id),
                    V::Blob(&c.session),
                    V::Text(&c.identifier),
                    V::Text(&c.msisdn),
                    V::Text(&c.kind),
                    V::Text(&c.mode),
                    V::Int(c.amount as i64),
                    V::Text(&c.currency),
                    V::Text(&c.payee),
                    V::Text(&items),
                    V::Text(&c.account_from),
                    V::Text(&c.account_to),
                    V::OptText(c.bank_ref.as_deref()),
                    V::OptBlob(c.mac.as_ref().map(|m| &m[..])),
                    V::Int(c.issued_at),
                    V::Int(c.expires_at),
                    V::Int(i64::from(c.failures)),
                    V::Text(&c.state),
                    V::OptText(c.outcome.as_deref()),
                    V::OptInt(c.used_at),
                ],
            )?;
            if c.state == "validated" {
                add_to_register(tx, &c.identifier, &c.currency, c.amount)?;
            }
            Ok(true)
        })?;
        Ok(())
    }

    fn certificates(
        &self,
        condition: &str,
        values: &[V<'_>],
    ) -> Result<Vec<Certificate>, StoreError> {
        let rows = self.conn().query(
            &format!("SELECT {CERT_COLUMNS} FROM certificates {condition}"),
            values,
        )?;
        rows.into_iter().map(certificate).collect()
    }

    pub fn certificate(&self, id: &[u8; 16]) -> Result<Option<Certificate>, StoreError> {
        Ok(self.certificates("WHERE id = ?1", &[V::Blob(id)])?.pop())
    }

    /// Every certificate, oldest first; of one identifier with `Some`.
    pub fn log(&self, identifier: Option<&str>) -> Result<Vec<Certificate>, StoreError> {
        match identifier {
            Some(i) => self.certificates(
                "WHERE identifier = ?1 ORDER BY issued_at, id",
                &[V::Text(i)],
            ),
            None => self.certificates("ORDER BY issued_at, id", &[]),
        }
    }

    /// Reverse-direction certificates waiting for an SMS from `msisdn`, still valid at `now`.
    pub fn awaiting_sms(&self, msisdn: &str, now: i64) -> Result<Vec<Certificate>, StoreError> {
        self.certificates(
            "WHERE msisdn = ?1 AND state = 'awaiting_sms' AND expires_at > ?2
             ORDER BY issued_at",
            &[V::Text(msisdn), V::Int(now)],
        )
    }

    /// Moves a certificate from state `from` to `to` with an outcome; false when it was not
    /// in `from` (someone else moved it first).
    pub fn transition(
        &self,
        id: &[u8; 16],
        from: &str,
        to: &str,
        outcome: Option<&str>,
    ) -> Result<bool, StoreError> {
        Ok(self.conn().exec(
            "UPDATE certificates SET state = ?3, outcome = COALESCE(?4, outcome)
             WHERE id = ?1 AND state = ?2",
            &[V::Blob(id), V::Text(from), V::Text(to), V::OptText(outcome)],
        )? == 1)
    }

    /// Counts one attempt *before* the code is compared (as a card counts PIN tries), so a
    /// verifier killed mid-way never gives a free guess. False when no attempt is left or
    /// the certificate is no longer in `state`.
    pub fn count_attempt(&self, id: &[u8; 16], state: &str, max: u32) -> Result<bool, StoreError> {
        Ok(self.conn().exec(
            "UPDATE certificates SET failures = failures + 1
             WHERE id = ?1 AND state = ?2 AND failures < ?3",
            &[V::Blob(id), V::Text(state), V::Int(i64::from(max))],
        )? == 1)
    }

    /// The right code: validated once, the attempt given back, and the identifier's register
    /// increased by the amount, all in one transaction. False when it was used meanwhile.
    pub fn validate(&self, id: &[u8; 16], from: &str, now: i64) -> Result<bool, StoreError> {
        let mut conn = self.conn();
        conn.transaction(|tx| -> Result<bool, StoreError> {
            let moved = tx.exec(
                "UPDATE certificates SET state = 'validated', outcome = 'validated',
                 used_at = ?3, failures = CASE WHEN failures > 0 THEN failures - 1 ELSE 0 END
                 WHERE id = ?1 AND state = ?2",
                &[V::Blob(id), V::Text(from), V::Int(now)],
            )?;
            if moved == 0 {
                return Ok(false);
            }
            let rows = tx.query(
                "SELECT identifier, currency, amount FROM certificates WHERE id = ?1",
                &[V::Blob(id)],
            )?;
            let mut c = rows
                .into_iter()
                .next()
                .ok_or_else(|| corrupt("vanished"))?
                .into_iter();
            let mut next = || c.next().ok_or_else(|| corrupt("short row"));
            let (identifier, currency, amount) = (next()?.text()?, next()?.text()?, next()?.int()?);
            add_to_register(tx, &identifier, &currency, amount as u64)?;
            Ok(true)
        })
    }

    /// The register of `identifier`: validated amounts so far, per currency.
    pub fn register(&self, identifier: &str) -> Result<Vec<(String, u64)>, StoreError> {
        let rows = self.conn().query(
            "SELECT currency, total FROM registers WHERE identifier = ?1 ORDER BY currency",
            &[V::Text(identifier)],
        )?;
        rows.into_iter()
            .map(|r| {
                let mut c = r.into_iter();
                let mut next = || c.next().ok_or_else(|| corrupt("short register row"));
                Ok((next()?.text()?, next()?.int()? as u64))
            })
            .collect()
    }

    /// Validated payments per identifier and currency with `from <= used_at < to`.
    pub fn settlement(&self, from: i64, to: i64) -> Result<Vec<Settlement>, StoreError> {
        let rows = self.conn().query(
            "SELECT identifier, currency, count(*), CAST(sum(amount) AS BIGINT) FROM certificates
             WHERE state = 'validated' AND kind = 'payment' AND used_at >= ?1 AND used_at < ?2
             GROUP BY identifier, currency ORDER BY identifier, currency",
            &[V::Int(from), V::Int(to)],
        )?;
        rows.into_iter()
            .map(|r| {
                let mut c = r.into_iter();
                let mut next = || c.next().ok_or_else(|| corrupt("short settlement row"));
                Ok(Settlement {
                    identifier: next()?.text()?,
                    currency: next()?.text()?,
                    payments: next()?.int()? as u64,
                    amount: sum_cell(next()?)?,
                })
            })
            .collect()
    }
}

/// PostgreSQL's `sum(bigint)` is NUMERIC, which the store reads as text.
fn sum_cell(c: Cell) -> Result<u64, StoreError> {
    match c {
        Cell::Int(i) => Ok(i as u64),
        Cell::Text(t) => t.parse().map_err(|_| corrupt("sum")),
        Cell::Null => Ok(0),
        Cell::Blob(_) => Err(corrupt("sum")),
    }
}

fn add_to_register(
    tx: &mut Backend,
    identifier: &str,
    currency: &str,
    amount: u64,
) -> Result<(), StoreError> {
    tx.exec(
        "INSERT INTO registers (identifier, currency, total) VALUES (?1, ?2, ?3)
         ON CONFLICT (identifier, currency) DO UPDATE SET total = registers.total + ?3",
        &[
            V::Text(identifier),
            V::Text(currency),
            V::Int(amount as i64),
        ],
    )?;
    Ok(())
}

fn count_and_oldest(rows: Vec<Vec<Cell>>) -> Result<(u64, i64), StoreError> {
    let mut c = rows.into_iter().next().unwrap_or_default().into_iter();
    let count = c.next().map_or(Ok(0), Cell::int)? as u64;
    let oldest = match c.next() {
        Some(Cell::Int(t)) => t,
        _ => 0,
    };
    Ok((count, oldest))
}

fn retry_after(oldest: i64, window: u64, now: i64) -> u64 {
    (oldest + window as i64 - now).max(1) as u64
}
