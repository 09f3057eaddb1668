//! One-time passwords over SMS, bound to a transaction (seed 004: a secret sent over a second
//! channel, typed back on the first, bound to session, identity, amount and time).
//!
//! * The code is drawn from the operating system's CSPRNG, uniformly (rejection sampling), with
//!   6 to 10 digits.
//! * Only a MAC of it is stored: HMAC-SHA256 under a random 32-byte key kept in its own 0600
//!   file beside the database ([`key_file`]), never in it, over the length-prefixed encoding
//!   below. The service ([`service`]) binds its codes to more (session, items, time); see
//!   `docs/otp.md`. The MAC binds the code to the transaction id,
//!   the destination, the amount, the currency, the payee and the origin: verifying with any
//!   of them changed computes a different MAC, so a code for "10.00 EUR to Alice" never
//!   approves "1000.00 EUR to Mallory".
//! * A code is single use, expires (`ttl`, at most 10 minutes; the SMS's TP-VP is the
//!   smallest relative value not shorter, so the network gives up about when the code does),
//!   and is blocked after [`MAX_FAILURES`] wrong attempts. The attempt is counted and
//!   committed *before* the comparison, as a card counts PIN tries, so killing the verifier
//!   mid-way never yields a free guess. The comparison is constant time.
//! * Sends are rate-limited per destination.
//! * Below a configurable limit amount no OTP is required ([`required`]), as the seed selects
//!   the transactions to secure by amount.
//!
//! MAC input (all integers big-endian; every field is a 4-byte length then its bytes):
//!
//! ```text
//! "simlab-otp-v1" ‖ id ‖ destination ‖ amount (8 bytes) ‖ currency ‖ payee ‖ origin ‖ code
//! ```
//!
//! `id` is the 32 lower-case hex digits of the transaction id, `destination` the number as
//! `+<digits>` or `<digits>`, `origin` empty when there is none, text fields UTF-8.

pub mod bank;
pub mod lookup;
pub mod msisdn;
pub mod service;
pub mod store;

use crate::db::{self, DbError, Schema};
use hmac::{Hmac, KeyInit, Mac};
use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};
use sha2::Sha256;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

type HmacSha256 = Hmac<Sha256>;

/// Wrong codes allowed before an OTP is blocked.
pub const MAX_FAILURES: u32 = 5;
/// The longest life of a code (REFERENCE.md: expire in 10 minutes or less).
pub const MAX_TTL: Duration = Duration::from_secs(600);
/// The shortest life worth sending.
pub const MIN_TTL: Duration = Duration::from_secs(60);
/// Digits of a code, at least and at most.
pub const MIN_DIGITS: u8 = 6;
pub const MAX_DIGITS: u8 = 10;
/// The longest payee name shown in the SMS.
pub const MAX_PAYEE_CHARS: usize = 40;

const DOMAIN: &[u8] = b"simlab-otp-v1";
const SCHEMA_VERSION: i64 = 1;

/// Why an OTP operation failed (as opposed to a verification that said no: [`Refusal`]).
#[derive(Debug)]
pub enum OtpError {
    /// The database cannot be read or written.
    Database { path: PathBuf, reason: String },
    /// The database file cannot be used (see [`DbError::is_bad_input`]).
    Open(DbError),
    /// Too many OTPs were sent to this destination recently.
    RateLimited {
        destination: String,
        sent: u32,
        window: Duration,
        retry_after: Duration,
    },
    /// The operating system's random source failed.
    Random(String),
}

impl fmt::Display for OtpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            OtpError::Database { path, reason } => {
                write!(f, "OTP database {}: {reason}", path.display())
            }
            OtpError::Open(e) => write!(f, "OTP database: {e}"),
            OtpError::RateLimited {
                destination,
                sent,
                window,
                retry_after,
            } => write!(
                f,
                "refused: {sent} OTPs were sent to {destination} in the last {} s (the limit); try again in {} s",
                window.as_secs(),
                retry_after.as_secs().max(1)
            ),
            OtpError::Random(e) => write!(f, "reading the system's random source: {e}"),
        }
    }
}

impl std::error::Error for OtpError {}

/// Rules for issuing codes.
#[derive(Clone, Debug)]
pub struct Policy {
    /// How long a code is valid (60 s to 10 min).
    pub ttl: Duration,
    /// Digits (6 to 10).
    pub digits: u8,
    /// At most `rate_count` codes per destination per `rate_window`.
    pub rate_count: u32,
    pub rate_window: Duration,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            ttl: Duration::from_secs(300),
            digits: 6,
            rate_count: 3,
            rate_window: Duration::from_secs(600),
        }
    }
}

/// The transaction a code approves.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transaction {
    /// The destination number, normalised (`+<digits>`).
    pub destination: String,
    /// The amount in minor units.
    pub amount: u64,
    /// ISO 4217 code.
    pub currency: String,
    pub payee: String,
    /// The web origin the code may be autofilled for (`example.com`).
    pub origin: Option<String>,
}

/// A code. Deliberately neither `Display` nor a revealing `Debug`: it goes into the SMS body
/// and nowhere else.
#[derive(Clone, PartialEq, Eq)]
pub struct Code(String);

impl Code {
    /// A code-shaped string of zeros, for sizing the SMS before a real code exists.
    pub fn placeholder(digits: usize) -> Code {
        Code("0".repeat(digits))
    }

    /// The digits, for the SMS body (and for tests).
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Code {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Code(**)")
    }
}

/// A freshly issued OTP.
#[derive(Debug)]
pub struct Issued {
    /// The transaction id: 32 lower-case hex digits.
    pub id: String,
    pub code: Code,
    /// Unix time at which the code stops being accepted.
    pub expires_at: i64,
}

/// Why a code was not accepted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// No OTP with this id.
    Unknown,
    /// Its SMS was never (completely) sent.
    NotSent,
    /// Already used once.
    Used,
    /// Too old.
    Expired,
    /// Blocked after too many wrong attempts.
    Blocked,
    /// Wrong code, or the amount, currency or payee differ from the ones it was issued for.
    Mismatch { failures_left: u32 },
}

impl Refusal {
    /// A stable snake_case name for JSON.
    pub fn as_str(&self) -> &'static str {
        match self {
            Refusal::Unknown => "unknown_id",
            Refusal::NotSent => "not_sent",
            Refusal::Used => "already_used",
            Refusal::Expired => "expired",
            Refusal::Blocked => "blocked",
            Refusal::Mismatch { .. } => "mismatch",
        }
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refusal::Unknown => f.write_str("no such OTP"),
            Refusal::NotSent => f.write_str("its SMS was not sent"),
            Refusal::Used => f.write_str("already used"),
            Refusal::Expired => f.write_str("expired"),
            Refusal::Blocked => write!(f, "blocked after {MAX_FAILURES} wrong attempts"),
            Refusal::Mismatch { failures_left } => write!(
                f,
                "the code does not match this transaction (code, amount or payee differ); {failures_left} attempt(s) left"
            ),
        }
    }
}

/// Whether a transaction of `amount` needs an OTP: *greater than* `limit`, as the seed's
/// test 1006 selects (no limit: always).
pub fn required(amount: u64, limit: Option<u64>) -> bool {
    limit.is_none_or(|l| amount > l)
}

/// The OTP file (application id "SLot"). Version 1 is the schema of the unversioned files
/// before it (which also carry `schema_version` 1 in `meta`).
pub const SCHEMA: Schema = Schema {
    name: "OTP",
    application_id: 0x534C_6F74,
    marker_table: "otp",
    migrations: &[
        "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value BLOB NOT NULL);
         CREATE TABLE IF NOT EXISTS otp (
             id TEXT PRIMARY KEY,
             destination TEXT NOT NULL,
             amount INTEGER NOT NULL,
             currency TEXT NOT NULL,
             payee TEXT NOT NULL,
             origin TEXT,
             mac BLOB NOT NULL,
             created_at INTEGER NOT NULL,
             expires_at INTEGER NOT NULL,
             failures INTEGER NOT NULL DEFAULT 0,
             state TEXT NOT NULL
         );
         CREATE INDEX IF NOT EXISTS otp_destination ON otp (destination, created_at);",
    ],
    busy_timeout: Duration::from_secs(5),
};

/// The OTP database: SQLite, one file.
pub struct Store {
    conn: Connection,
    key: [u8; 32],
    path: PathBuf,
}

impl Store {
    /// Opens (creating, with mode 0600) the database and its key file ([`key_file`]).
    pub fn open(path: &Path) -> Result<Store, OtpError> {
        let db = |reason: String| OtpError::Database {
            path: path.to_path_buf(),
            reason,
        };
        let conn = db::open(path, &SCHEMA).map_err(OtpError::Open)?;
        let version: Option<i64> = conn
            .query_row(
                "SELECT value FROM meta WHERE key = 'schema_version'",
                [],
                |r| r.get(0),
            )
            .optional()
            .map_err(|e| db(e.to_string()))?;
        match version {
            None => {
                conn.execute(
                    "INSERT INTO meta (key, value) VALUES ('schema_version', ?1)",
                    params![SCHEMA_VERSION],
                )
                .map_err(|e| db(e.to_string()))?;
            }
            Some(SCHEMA_VERSION) => {}
            Some(v) => {
                return Err(db(format!(
                    "schema version {v}, this simlab knows {SCHEMA_VERSION}"
                )));
            }
        }
        // The key lives in its own 0600 file beside the database, never in it: whoever reads
        // the database alone learns no code. A key that older simlab kept in `meta` is moved
        // out, in that order, so a crash in between leaves it in one place at least.
        let key_path = key_file(path);
        let legacy: Option<Vec<u8>> = conn
            .query_row("SELECT value FROM meta WHERE key = 'mac_key'", [], |r| {
                r.get(0)
            })
            .optional()
            .map_err(|e| db(e.to_string()))?;
        if let Some(k) = legacy {
            let k: [u8; 32] = k
                .try_into()
                .map_err(|_| db("the MAC key is not 32 bytes".into()))?;
            match service::MacKey::create_with(&key_path, &k) {
                Ok(()) => {}
                Err(service::KeyError::Io { source, .. })
                    if source.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(db(e.to_string())),
            }
            conn.execute("DELETE FROM meta WHERE key = 'mac_key'", [])
                .map_err(|e| db(e.to_string()))?;
        }
        let key = service::MacKey::load_or_create(&key_path)
            .map_err(|e| db(e.to_string()))?
            .bytes();
        Ok(Store {
            conn,
            key,
            path: path.to_path_buf(),
        })
    }

    fn db(&self, e: impl fmt::Display) -> OtpError {
        OtpError::Database {
            path: self.path.clone(),
            reason: e.to_string(),
        }
    }

    /// Issues a code for `tx` at unix time `now`, after the rate limit. The row starts as
    /// "sending": it verifies only once [`Store::mark_sent`] says the SMS went out.
    pub fn issue(
        &mut self,
        tx: &Transaction,
        policy: &Policy,
        now: i64,
    ) -> Result<Issued, OtpError> {
        let ttl = policy.ttl.clamp(MIN_TTL, MAX_TTL);
        let digits = policy.digits.clamp(MIN_DIGITS, MAX_DIGITS);
        let window = policy.rate_window.as_secs() as i64;
        let t = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(|e| OtpError::Database {
                path: self.path.clone(),
                reason: e.to_string(),
            })?;
        let (count, oldest): (u32, Option<i64>) = t
            .query_row(
                "SELECT COUNT(*), MIN(created_at) FROM otp WHERE destination = ?1 AND created_at > ?2",
                params![tx.destination, now - window],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .map_err(|e| OtpError::Database {
                path: self.path.clone(),
                reason: e.to_string(),
            })?;
        if count >= policy.rate_count {
            let retry = oldest.map_or(window, |o| o + window - now).max(1);
            return Err(OtpError::RateLimited {
                destination: tx.destination.clone(),
                sent: count,
                window: policy.rate_window,
                retry_after: Duration::from_secs(retry as u64),
            });
        }
        let id = simlab_card::hex::encode(&random::<16>()?);
        let code = Code(random_digits(digits)?);
        let mac = mac(&self.key, &id, tx, code.expose());
        let expires_at = now + ttl.as_secs() as i64;
        t.execute(
            "INSERT INTO otp (id, destination, amount, currency, payee, origin, mac, created_at, expires_at, state)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, 'sending')",
            params![
                id,
                tx.destination,
                i64::try_from(tx.amount).unwrap_or(i64::MAX),
                tx.currency,
                tx.payee,
                tx.origin,
                mac.to_vec(),
                now,
                expires_at
            ],
        )
        .map_err(|e| OtpError::Database {
            path: self.path.clone(),
            reason: e.to_string(),
        })?;
        t.commit().map_err(|e| OtpError::Database {
            path: self.path.clone(),
            reason: e.to_string(),
        })?;
        Ok(Issued {
            id,
            code,
            expires_at,
        })
    }

    /// Records that the SMS went out completely.
    pub fn mark_sent(&mut self, id: &str) -> Result<(), OtpError> {
        self.set_state(id, "sent")
    }

    /// Records that the SMS did not (completely) go out: the code can never be used.
    pub fn mark_failed(&mut self, id: &str) -> Result<(), OtpError> {
        self.set_state(id, "send_failed")
    }

    fn set_state(&mut self, id: &str, state: &str) -> Result<(), OtpError> {
        self.conn
            .execute(
                "UPDATE otp SET state = ?1 WHERE id = ?2",
                params![state, id],
            )
            .map(|_| ())
            .map_err(|e| self.db(e))
    }

    /// Checks `code` for OTP `id` against the transaction as presented now. `Ok(Ok(()))`
    /// accepts (and uses up) the code; `Ok(Err(refusal))` says why not.
    pub fn verify(
        &mut self,
        id: &str,
        code: &str,
        amount: u64,
        currency: &str,
        payee: &str,
        now: i64,
    ) -> Result<Result<(), Refusal>, OtpError> {
        let path = self.path.clone();
        let db = |e: rusqlite::Error| OtpError::Database {
            path: path.clone(),
            reason: e.to_string(),
        };
        // First transaction: checks and the attempt counted, committed before comparing.
        let t = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(db)?;
        type Row = (String, Option<String>, Vec<u8>, i64, u32, String);
        let row: Option<Row> = t
            .query_row(
                "SELECT destination, origin, mac, expires_at, failures, state FROM otp WHERE id = ?1",
                params![id],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?)),
            )
            .optional()
            .map_err(db)?;
        let Some((destination, origin, stored, expires_at, failures, state)) = row else {
            return Ok(Err(Refusal::Unknown));
        };
        let refusal = match state.as_str() {
            "used" => Some(Refusal::Used),
            "blocked" => Some(Refusal::Blocked),
            "sent" if now >= expires_at => Some(Refusal::Expired),
            "sent" if failures >= MAX_FAILURES => Some(Refusal::Blocked),
            "sent" => None,
            _ => Some(Refusal::NotSent),
        };
        if let Some(r) = refusal {
            return Ok(Err(r));
        }
        let attempts = failures + 1;
        t.execute(
            "UPDATE otp SET failures = ?1 WHERE id = ?2",
            params![attempts, id],
        )
        .map_err(db)?;
        t.commit().map_err(db)?;

        let tx = Transaction {
            destination,
            amount,
            currency: currency.to_string(),
            payee: payee.to_string(),
            origin,
        };
        let matches = mac_state(&self.key, id, &tx, code)
            .verify_slice(&stored)
            .is_ok();
        if matches {
            // Single use: only one verifier can move it from "sent" to "used".
            let changed = self
                .conn
                .execute(
                    "UPDATE otp SET state = 'used' WHERE id = ?1 AND state = 'sent'",
                    params![id],
                )
                .map_err(db)?;
            return Ok(if changed == 1 {
                Ok(())
            } else {
                Err(Refusal::Used)
            });
        }
        if attempts >= MAX_FAILURES {
            self.conn
                .execute(
                    "UPDATE otp SET state = 'blocked' WHERE id = ?1 AND state = 'sent'",
                    params![id],
                )
                .map_err(db)?;
            return Ok(Err(Refusal::Blocked));
        }
        Ok(Err(Refusal::Mismatch {
            failures_left: MAX_FAILURES - attempts,
        }))
    }
}

/// The MAC state over the encoding documented at the top of the module.
fn mac_state(key: &[u8; 32], id: &str, tx: &Transaction, code: &str) -> HmacSha256 {
    // A 32-byte key is always accepted by HMAC.
    let mut m = <HmacSha256 as KeyInit>::new_from_slice(key).unwrap_or_else(|_| unreachable!());
    let mut field = |bytes: &[u8]| {
        m.update(&(bytes.len() as u32).to_be_bytes());
        m.update(bytes);
    };
    field(DOMAIN);
    field(id.as_bytes());
    field(tx.destination.as_bytes());
    field(&tx.amount.to_be_bytes());
    field(tx.currency.as_bytes());
    field(tx.payee.as_bytes());
    field(tx.origin.as_deref().unwrap_or("").as_bytes());
    field(code.as_bytes());
    m
}

fn mac(key: &[u8; 32], id: &str, tx: &Transaction, code: &str) -> [u8; 32] {
    mac_state(key, id, tx, code).finalize().into_bytes().into()
}

/// Where the MAC key of the database at `db` lives: `<db>.key`, mode 0600.
pub fn key_file(db: &Path) -> PathBuf {
    let mut name = db.as_os_str().to_os_string();
    name.push(".key");
    PathBuf::from(name)
}

/// A fresh code of `digits` digits.
pub(crate) fn random_code(digits: u8) -> Result<Code, OtpError> {
    random_digits(digits).map(Code)
}

fn random<const N: usize>() -> Result<[u8; N], OtpError> {
    simlab_card::random::bytes::<N>().map_err(|e| OtpError::Random(e.to_string()))
}

/// `digits` uniformly random decimal digits: 64-bit draws above the largest multiple of
/// 10^digits are rejected, so no code is likelier than another.
fn random_digits(digits: u8) -> Result<String, OtpError> {
    let modulus = 10u64.pow(u32::from(digits));
    let limit = u64::MAX - (u64::MAX % modulus);
    loop {
        let n = u64::from_be_bytes(random::<8>()?);
        if n < limit {
            return Ok(format!(
                "{:0width$}",
                n % modulus,
                width = usize::from(digits)
            ));
        }
    }
}

/// Digits after the decimal point of a currency (ISO 4217), for showing minor units.
pub fn currency_exponent(currency: &str) -> u32 {
    match currency {
        "BIF" | "CLP" | "DJF" | "GNF" | "ISK" | "JPY" | "KMF" | "KRW" | "PYG" | "RWF" | "UGX"
        | "UYI" | "VND" | "VUV" | "XAF" | "XOF" | "XPF" => 0,
        "BHD" | "IQD" | "JOD" | "KWD" | "LYD" | "OMR" | "TND" => 3,
        "CLF" | "UYW" => 4,
        _ => 2,
    }
}

/// `1234` EUR → `12.34 EUR`.
pub fn format_amount(amount: u64, currency: &str) -> String {
    let exp = currency_exponent(currency);
    if exp == 0 {
        return format!("{amount} {currency}");
    }
    let scale = 10u64.pow(exp);
    format!(
        "{}.{:0width$} {currency}",
        amount / scale,
        amount % scale,
        width = exp as usize
    )
}

/// The SMS: amount and payee in clear, the code, its lifetime, and with an origin the
/// origin-bound last line `@origin #code` that browsers autofill only on that site.
pub fn sms_text(tx: &Transaction, code: &Code, ttl: Duration) -> String {
    let minutes = ttl.as_secs().div_ceil(60);
    let mut text = format!(
        "Pay {} to {}? Code {} (valid {minutes} min). Never share it.",
        format_amount(tx.amount, &tx.currency),
        tx.payee,
        code.expose()
    );
    if let Some(origin) = &tx.origin {
        text.push_str(&format!("\n\n@{origin} #{}", code.expose()));
    }
    text
}

/// Checks a payee name: 1–40 characters, no control or invisible formatting characters
/// (line breaks could forge an `@origin #code` line; bidi overrides could make "Alice 10"
/// display as something else).
pub fn check_payee(payee: &str) -> Result<(), String> {
    let n = payee.chars().count();
    if payee.trim().is_empty() {
        return Err("must not be empty".into());
    }
    if n > MAX_PAYEE_CHARS {
        return Err(format!("{n} characters, at most {MAX_PAYEE_CHARS}"));
    }
    if let Some(c) = payee.chars().find(|&c| {
        c.is_control()
            || matches!(c, '\u{200B}'..='\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2060}'..='\u{2069}' | '\u{FEFF}' | '\u{00AD}')
    }) {
        return Err(format!("contains the control or formatting character U+{:04X}", c as u32));
    }
    Ok(())
}

/// Checks and normalises (lower case) an origin host name: LDH labels of 1–63 characters,
/// at most 253 in all.
pub fn check_origin(origin: &str) -> Result<String, String> {
    let o = origin.trim().trim_end_matches('.').to_ascii_lowercase();
    let ok = !o.is_empty()
        && o.len() <= 253
        && o.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        });
    if ok {
        Ok(o)
    } else {
        Err(format!(
            "{origin:?} is not a host name (letters, digits, hyphens and dots)"
        ))
    }
}

/// Checks an ISO 4217 code: three upper-case letters.
pub fn check_currency(c: &str) -> Result<(), String> {
    if c.len() == 3 && c.bytes().all(|b| b.is_ascii_uppercase()) {
        Ok(())
    } else {
        Err(format!(
            "{c:?} is not an ISO 4217 code (three capital letters)"
        ))
    }
}

/// Checks a transaction id: 32 lower-case hex digits.
pub fn check_id(id: &str) -> Result<(), String> {
    if id.len() == 32 && id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        Ok(())
    } else {
        Err("must be the 32 lower-case hex digits `otp send` printed".into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tx() -> Transaction {
        Transaction {
            destination: "+491700000099".into(),
            amount: 1234,
            currency: "EUR".into(),
            payee: "ACME Shop".into(),
            origin: Some("shop.example".into()),
        }
    }

    fn store() -> (Store, PathBuf) {
        let dir = std::env::temp_dir().join(format!(
            "simlab-otp-test-{}-{}",
            std::process::id(),
            simlab_card::hex::encode(&simlab_card::random::bytes::<6>().unwrap())
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("otp.sqlite");
        (Store::open(&path).unwrap(), dir)
    }

    fn sent(s: &mut Store, now: i64) -> Issued {
        let i = s.issue(&tx(), &Policy::default(), now).unwrap();
        s.mark_sent(&i.id).unwrap();
        i
    }

    #[test]
    fn a_code_verifies_once_for_its_own_transaction_only() {
        let (mut s, dir) = store();
        let i = sent(&mut s, 1000);
        assert_eq!(i.code.expose().len(), 6);
        assert!(i.code.expose().bytes().all(|b| b.is_ascii_digit()));
        assert_eq!(format!("{:?}", i.code), "Code(**)");
        let c = i.code.expose();
        // Amount, payee, currency changed: refused (and counted).
        assert!(matches!(
            s.verify(&i.id, c, 1235, "EUR", "ACME Shop", 1001).unwrap(),
            Err(Refusal::Mismatch { failures_left: 4 })
        ));
        assert!(matches!(
            s.verify(&i.id, c, 1234, "EUR", "ACME Shop ", 1001).unwrap(),
            Err(Refusal::Mismatch { failures_left: 3 })
        ));
        assert!(matches!(
            s.verify(&i.id, c, 1234, "USD", "ACME Shop", 1001).unwrap(),
            Err(Refusal::Mismatch { .. })
        ));
        assert_eq!(
            s.verify(&i.id, c, 1234, "EUR", "ACME Shop", 1001).unwrap(),
            Ok(())
        );
        assert_eq!(
            s.verify(&i.id, c, 1234, "EUR", "ACME Shop", 1001).unwrap(),
            Err(Refusal::Used)
        );
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn five_failures_block_even_the_right_code() {
        let (mut s, dir) = store();
        let i = sent(&mut s, 0);
        let wrong = if i.code.expose() == "000000" {
            "000001"
        } else {
            "000000"
        };
        for left in (0..MAX_FAILURES).rev() {
            let r = s.verify(&i.id, wrong, 1234, "EUR", "ACME Shop", 1).unwrap();
            if left == 0 {
                assert_eq!(r, Err(Refusal::Blocked));
            } else {
                assert_eq!(
                    r,
                    Err(Refusal::Mismatch {
                        failures_left: left
                    })
                );
            }
        }
        assert_eq!(
            s.verify(&i.id, i.code.expose(), 1234, "EUR", "ACME Shop", 1)
                .unwrap(),
            Err(Refusal::Blocked)
        );
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn expiry_unsent_and_unknown() {
        let (mut s, dir) = store();
        let i = sent(&mut s, 0);
        assert_eq!(
            s.verify(&i.id, i.code.expose(), 1234, "EUR", "ACME Shop", 300)
                .unwrap(),
            Err(Refusal::Expired)
        );
        let j = s.issue(&tx(), &Policy::default(), 10).unwrap();
        assert_eq!(
            s.verify(&j.id, j.code.expose(), 1234, "EUR", "ACME Shop", 11)
                .unwrap(),
            Err(Refusal::NotSent)
        );
        s.mark_failed(&j.id).unwrap();
        assert_eq!(
            s.verify(&j.id, j.code.expose(), 1234, "EUR", "ACME Shop", 11)
                .unwrap(),
            Err(Refusal::NotSent)
        );
        assert_eq!(
            s.verify(&"0".repeat(32), "123456", 1234, "EUR", "ACME Shop", 11)
                .unwrap(),
            Err(Refusal::Unknown)
        );
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn sends_are_rate_limited_per_destination() {
        let (mut s, dir) = store();
        let p = Policy::default();
        for t in 0..3 {
            s.issue(&tx(), &p, 100 + t).unwrap();
        }
        match s.issue(&tx(), &p, 200) {
            Err(OtpError::RateLimited {
                sent: 3,
                retry_after,
                ..
            }) => {
                assert_eq!(retry_after, Duration::from_secs(500));
            }
            other => panic!("{other:?}"),
        }
        let mut other = tx();
        other.destination = "+491700000098".into();
        s.issue(&other, &p, 200).unwrap();
        s.issue(&tx(), &p, 701).unwrap();
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn the_database_keeps_its_key_and_only_a_mac() {
        let (mut s, dir) = store();
        let i = sent(&mut s, 0);
        let path = dir.join("otp.sqlite");
        drop(s);
        // No column holds the code: only the MAC.
        let conn = Connection::open(&path).unwrap();
        let cols: Vec<String> = conn
            .query_row(
                "SELECT destination, amount, currency, payee, origin, state, hex(mac) FROM otp",
                [],
                |r| {
                    (0..7)
                        .map(|c| {
                            r.get::<_, rusqlite::types::Value>(c)
                                .map(|v| format!("{v:?}"))
                        })
                        .collect()
                },
            )
            .unwrap();
        assert!(
            cols.iter()
                .all(|c| !c.contains(&format!("\"{}\"", i.code.expose()))),
            "{cols:?}"
        );
        drop(conn);
        let mut s = Store::open(&path).unwrap();
        assert_eq!(
            s.verify(&i.id, i.code.expose(), 1234, "EUR", "ACME Shop", 1)
                .unwrap(),
            Ok(())
        );
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(
                std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
                0o600
            );
        }
        let _ = std::fs::remove_dir_all(dir);
    }

    /// The key is in `<db>.key` (0600), not in the database; a key older simlab kept in
    /// `meta` is moved out and the codes it made still verify.
    #[test]
    fn the_key_lives_beside_the_database_and_a_legacy_key_moves_out() {
        let (mut s, dir) = store();
        let i = sent(&mut s, 0);
        let path = dir.join("otp.sqlite");
        drop(s);
        let key_path = key_file(&path);
        let key = std::fs::read(&key_path).unwrap();
        assert_eq!(key.len(), 32);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&key_path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let conn = Connection::open(&path).unwrap();
        let in_meta: i64 = conn
            .query_row("SELECT count(*) FROM meta WHERE key = 'mac_key'", [], |r| {
                r.get(0)
            })
            .unwrap();
        assert_eq!(in_meta, 0);
        // As older simlab left it: the key in `meta`, no key file.
        conn.execute(
            "INSERT INTO meta (key, value) VALUES ('mac_key', ?1)",
            params![key.clone()],
        )
        .unwrap();
        drop(conn);
        std::fs::remove_file(&key_path).unwrap();
        let mut s = Store::open(&path).unwrap();
        assert_eq!(std::fs::read(&key_path).unwrap(), key);
        assert_eq!(
            s.verify(&i.id, i.code.expose(), 1234, "EUR", "ACME Shop", 1)
                .unwrap(),
            Ok(())
        );
        drop(s);
        let conn = Connection::open(&path).unwrap();
        let in_meta: i64 = conn
            .query_row("SELECT count(*) FROM meta WHERE key = 'mac_key'", [], |r| {
                r.get(0)
            })
            .unwrap();
        assert_eq!(in_meta, 0);
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn codes_are_uniform_enough() {
        // Each digit position over 2000 codes: every digit appears (a broken generator that
        // repeats or biases to a few values fails this).
        let mut seen = [[0u32; 10]; 6];
        for _ in 0..2000 {
            for (i, b) in random_digits(6).unwrap().bytes().enumerate() {
                seen[i][(b - b'0') as usize] += 1;
            }
        }
        assert!(
            seen.iter().all(|pos| pos.iter().all(|&n| n > 100)),
            "{seen:?}"
        );
        assert_eq!(random_digits(10).unwrap().len(), 10);
    }

    #[test]
    fn text_and_checks() {
        let code = Code("042042".into());
        let t = sms_text(&tx(), &code, Duration::from_secs(300));
        assert!(t.contains("12.34 EUR") && t.contains("ACME Shop"), "{t}");
        assert!(t.ends_with("\n\n@shop.example #042042"), "{t}");
        assert_eq!(format_amount(5, "JPY"), "5 JPY");
        assert_eq!(format_amount(1005, "KWD"), "1.005 KWD");
        assert_eq!(format_amount(7, "EUR"), "0.07 EUR");
        assert!(check_payee("Alice\n@evil.example #1").is_err());
        assert!(check_payee("Alice\u{202E}01").is_err());
        assert!(check_payee(&"x".repeat(41)).is_err());
        assert!(check_payee(" ").is_err());
        assert!(check_payee("Café Zürich").is_ok());
        assert_eq!(check_origin("Shop.Example.").unwrap(), "shop.example");
        assert!(check_origin("bad_host").is_err() && check_origin("-a.b").is_err());
        assert!(check_currency("EUR").is_ok() && check_currency("eur").is_err());
        assert!(check_id(&"a".repeat(32)).is_ok() && check_id("A").is_err());
        assert!(required(100, None) && !required(100, Some(100)) && required(101, Some(100)));
    }
}
