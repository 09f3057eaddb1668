//! The seller's local database (SQLite): every invoice it offered, and for the paid ones the
//! accounting record (operation 890) with its billing state — the "internal log" of confirmed
//! records (operation 1140) and the "error log" of rejected ones (1130) are the `billed` and
//! `rejected` rows.
//!
//! A sale moves `offered` → `paid` → `submitted` → `billed` | `rejected`. A record stays
//! `submitted` when the gateway's answer was lost; the next billing run sends it again, and the
//! gateway reports it `already_billed` (same invoice) if the lost answer had billed it.

use crate::db::{self, Schema};
use rusqlite::{Connection, OptionalExtension, params};
use std::fmt;
use std::path::Path;
use std::time::Duration;

const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// Where a sale stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SaleState {
    /// The invoice was sent (620); no signature yet.
    Offered,
    /// Signed and delivered (630/640): an accounting record waiting for billing.
    Paid,
    /// Sent in a 910 whose answer has not arrived.
    Submitted,
    /// Confirmed by the gateway (920).
    Billed,
    /// Refused by the gateway; `reason` and `detail` say why.
    Rejected,
}

impl SaleState {
    pub fn name(self) -> &'static str {
        match self {
            SaleState::Offered => "offered",
            SaleState::Paid => "paid",
            SaleState::Submitted => "submitted",
            SaleState::Billed => "billed",
            SaleState::Rejected => "rejected",
        }
    }

    fn from_name(s: &str) -> Option<Self> {
        Some(match s {
            "offered" => SaleState::Offered,
            "paid" => SaleState::Paid,
            "submitted" => SaleState::Submitted,
            "billed" => SaleState::Billed,
            "rejected" => SaleState::Rejected,
            _ => return None,
        })
    }
}

/// One sale.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sale {
    pub transaction_id: String,
    pub serial: Vec<u8>,
    /// The buyer's certified key, for the signature check at 630.
    pub public_key: [u8; 65],
    pub item: String,
    pub amount: u64,
    pub currency: String,
    pub issued_at: u64,
    pub expires_at: u64,
    /// The restriction period of the buyer's certificate this sale counts in.
    pub period_index: u64,
    /// The certificate's purchases per period, checked again when the sale is paid.
    pub max_purchases: u32,
    pub invoice: Vec<u8>,
    pub signature: Option<Vec<u8>>,
    pub state: SaleState,
    pub batch_id: Option<String>,
    pub reason: Option<String>,
    pub detail: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SalesError(pub String);

impl fmt::Display for SalesError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "seller database: {}", self.0)
    }
}

impl std::error::Error for SalesError {}

impl From<rusqlite::Error> for SalesError {
    fn from(e: rusqlite::Error) -> Self {
        SalesError(e.to_string())
    }
}

type Result<T> = std::result::Result<T, SalesError>;

const COLUMNS: &str = "transaction_id, serial, public_key, item, amount, currency, issued_at, \
     expires_at, period_index, max_purchases, invoice, signature, state, batch_id, reason, detail";

fn sale_from_row(r: &rusqlite::Row) -> rusqlite::Result<Sale> {
    let bad = |what: &str| {
        rusqlite::Error::InvalidColumnType(0, what.to_string(), rusqlite::types::Type::Blob)
    };
    let state: String = r.get(12)?;
    Ok(Sale {
        transaction_id: r.get(0)?,
        serial: r.get(1)?,
        public_key: r
            .get::<_, Vec<u8>>(2)?
            .try_into()
            .map_err(|_| bad("public_key"))?,
        item: r.get(3)?,
        amount: r.get::<_, i64>(4)? as u64,
        currency: r.get(5)?,
        issued_at: r.get::<_, i64>(6)? as u64,
        expires_at: r.get::<_, i64>(7)? as u64,
        period_index: r.get::<_, i64>(8)? as u64,
        max_purchases: r.get(9)?,
        invoice: r.get(10)?,
        signature: r.get(11)?,
        state: SaleState::from_name(&state).ok_or_else(|| bad("state"))?,
        batch_id: r.get(13)?,
        reason: r.get(14)?,
        detail: r.get(15)?,
    })
}

/// The seller's file (application id "SLsl"). Version 1 is the schema of the unversioned files
/// before it.
pub const SCHEMA: Schema = Schema {
    name: "seller",
    application_id: 0x534C_736C,
    marker_table: "sales",
    migrations: &[V1],
    busy_timeout: BUSY_TIMEOUT,
};

const V1: &str = "CREATE TABLE IF NOT EXISTS sales (
                transaction_id TEXT PRIMARY KEY,
                serial         BLOB NOT NULL,
                public_key     BLOB NOT NULL,
                item           TEXT NOT NULL,
                amount         INTEGER NOT NULL,
                currency       TEXT NOT NULL,
                issued_at      INTEGER NOT NULL,
                expires_at     INTEGER NOT NULL,
                period_index   INTEGER NOT NULL,
                max_purchases  INTEGER NOT NULL,
                invoice        BLOB NOT NULL,
                signature      BLOB,
                state          TEXT NOT NULL,
                batch_id       TEXT,
                reason         TEXT,
                detail         TEXT,
                seq            INTEGER
            );
            CREATE INDEX IF NOT EXISTS sales_by_state ON sales (state, seq);
            CREATE INDEX IF NOT EXISTS sales_by_serial ON sales (serial, period_index);";

/// The seller's database.
pub struct SalesDb {
    conn: Connection,
}

impl SalesDb {
    pub fn open(path: &Path) -> Result<SalesDb> {
        let conn = db::open(path, &SCHEMA).map_err(|e| SalesError(e.to_string()))?;
        Ok(SalesDb { conn })
    }

    /// Records an offered invoice.
    pub fn offer(&mut self, s: &Sale) -> Result<()> {
        self.conn.execute(
            &format!(
                "INSERT INTO sales ({COLUMNS}, seq) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9,
                 ?10, ?11, ?12, ?13, ?14, ?15, ?16, (SELECT COALESCE(MAX(seq), 0) + 1 FROM sales))"
            ),
            params![
                s.transaction_id,
                s.serial,
                &s.public_key[..],
                s.item,
                s.amount as i64,
                s.currency,
                s.issued_at as i64,
                s.expires_at as i64,
                s.period_index as i64,
                s.max_purchases,
                s.invoice,
                s.signature,
                s.state.name(),
                s.batch_id,
                s.reason,
                s.detail,
            ],
        )?;
        Ok(())
    }

    pub fn sale(&self, transaction_id: &str) -> Result<Option<Sale>> {
        Ok(self
            .conn
            .query_row(
                &format!("SELECT {COLUMNS} FROM sales WHERE transaction_id = ?1"),
                [transaction_id],
                sale_from_row,
            )
            .optional()?)
    }

    /// Sales in order of offering, optionally only those in `state`.
    pub fn sales(&self, state: Option<SaleState>) -> Result<Vec<Sale>> {
        let mut stmt = self.conn.prepare(&format!(
            "SELECT {COLUMNS} FROM sales WHERE ?1 IS NULL OR state = ?1 ORDER BY seq"
        ))?;
        let rows = stmt.query_map([state.map(SaleState::name)], sale_from_row)?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// Sales of this certificate in this period that count against its restriction (paid or
    /// further).
    pub fn purchases_in_period(&self, serial: &[u8], period_index: u64) -> Result<u64> {
        Ok(self.conn.query_row(
            "SELECT COUNT(*) FROM sales WHERE serial = ?1 AND period_index = ?2
             AND state IN ('paid', 'submitted', 'billed')",
            params![serial, period_index as i64],
            |r| r.get::<_, i64>(0),
        )? as u64)
    }

    /// Records the signature of an offered sale (operation 890): false if it was no longer
    /// `offered` (paid already, concurrently).
    pub fn pay(&mut self, transaction_id: &str, signature: &[u8]) -> Result<bool> {
        Ok(self.conn.execute(
            "UPDATE sales SET state = 'paid', signature = ?2
             WHERE transaction_id = ?1 AND state = 'offered'",
            params![transaction_id, signature],
        )? == 1)
    }

    /// Takes up to `n` records to bill (paid, or submitted earlier without an answer) and
    /// marks them submitted in `batch_id`.
    pub fn claim(&mut self, batch_id: &str, n: usize) -> Result<Vec<Sale>> {
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let sales: Vec<Sale> = {
            let mut stmt = tx.prepare(&format!(
                "SELECT {COLUMNS} FROM sales WHERE state IN ('paid', 'submitted')
                 ORDER BY seq LIMIT ?1"
            ))?;
            let rows = stmt.query_map([n as i64], sale_from_row)?;
            rows.collect::<rusqlite::Result<_>>()?
        };
        for s in &sales {
            tx.execute(
                "UPDATE sales SET state = 'submitted', batch_id = ?2 WHERE transaction_id = ?1",
                params![s.transaction_id, batch_id],
            )?;
        }
        tx.commit()?;
        Ok(sales)
    }

    /// Records the gateway's verdict on a submitted record.
    pub fn settle(
        &mut self,
        transaction_id: &str,
        state: SaleState,
        reason: Option<&str>,
        detail: Option<&str>,
    ) -> Result<()> {
        self.conn.execute(
            "UPDATE sales SET state = ?2, reason = ?3, detail = ?4 WHERE transaction_id = ?1",
            params![transaction_id, state.name(), reason, detail],
        )?;
        Ok(())
    }
}
