//! The gateway's records: bootstrap sessions, issued certificates, registered sellers, CDRs and
//! the purchase counters behind the "count per period" restriction — one [`Store`] trait with
//! two implementations, SQLite (the default, one file) and PostgreSQL (for several gateway
//! processes sharing one database).
//!
//! Nothing in the gateway assumes it is the only process: a session id is unique by a primary
//! key, a record is billed by an insert that a unique key lets succeed once, and billing
//! locks the certificates it counts against (SQLite: the database write lock of an
//! `IMMEDIATE` transaction; PostgreSQL: `SELECT … FOR UPDATE` in a fixed order).

pub mod postgres;
pub mod sqlite;

use crate::pki::messages::AuthPath;
use std::fmt;

/// Why the store failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreError {
    /// A unique key says this exists already (a replayed session id, a seller id taken).
    Conflict(String),
    /// The database failed or is unreachable; nothing of the failed operation was kept.
    Backend(String),
    /// A stored value cannot be read back.
    Corrupt(String),
    /// The database cannot be used as given (a directory, not SQLite, another store's file, a
    /// newer schema): the operator must name another.
    Unusable(String),
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreError::Conflict(what) => write!(f, "already exists: {what}"),
            StoreError::Backend(why) => write!(f, "database: {why}"),
            StoreError::Corrupt(why) => write!(f, "corrupt record: {why}"),
            StoreError::Unusable(why) => f.write_str(why),
        }
    }
}

impl std::error::Error for StoreError {}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// Where a bootstrap session stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SessionState {
    /// 240 sent, waiting for 250.
    Pending,
    /// 260 sent: the certificate is issued.
    Issued,
    /// 250 failed a check (wrong M2 or SRES): the session is spent.
    Failed,
}

impl SessionState {
    pub fn name(self) -> &'static str {
        match self {
            SessionState::Pending => "pending",
            SessionState::Issued => "issued",
            SessionState::Failed => "failed",
        }
    }

    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "pending" => Some(SessionState::Pending),
            "issued" => Some(SessionState::Issued),
            "failed" => Some(SessionState::Failed),
            _ => None,
        }
    }
}

/// A bootstrap session (seed 000: "SID, IMSI, RAND, SRES and K in a single record"). K is
/// wiped from the record when the session closes.
#[derive(Clone)]
pub struct Session {
    pub sid: Vec<u8>,
    pub imsi: String,
    pub path: AuthPath,
    pub rands: Vec<[u8; 16]>,
    /// SRES_1 ‖ … ‖ SRES_n, or XRES.
    pub expected: Vec<u8>,
    /// The integrity key; `None` once the session closed.
    pub k: Option<[u8; 32]>,
    pub created_at: u64,
    pub expires_at: u64,
    pub state: SessionState,
}

impl fmt::Debug for Session {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Session")
            .field("sid", &simlab_card::hex::encode(&self.sid))
            .field("imsi", &self.imsi)
            .field("state", &self.state)
            .finish_non_exhaustive()
    }
}

/// An issued certificate and what the gateway checks records against.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertRecord {
    pub serial: Vec<u8>,
    pub imsi: String,
    pub sid: Vec<u8>,
    pub public_key: [u8; 65],
    /// The restrictions' DER (restrictions.rs).
    pub restrictions: Vec<u8>,
    pub alias: String,
    pub not_before: u64,
    pub not_after: u64,
    pub der: Vec<u8>,
    pub issued_at: u64,
    pub revoked_at: Option<u64>,
    pub revocation_reason: Option<String>,
}

/// When and how a record was billed before.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Billed {
    pub billed_at: u64,
    pub batch_id: String,
    pub invoice_sha256: [u8; 32],
}

/// A call detail record: one billed purchase (operation 1280). The seller is credited and the
/// subscriber (IMSI) charged with `amount`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cdr {
    pub seller_id: String,
    pub transaction_id: String,
    pub serial: Vec<u8>,
    pub imsi: String,
    pub amount: u64,
    pub currency: String,
    pub issued_at: u64,
    /// The restriction period the purchase counts in.
    pub period: u64,
    pub invoice: Vec<u8>,
    pub invoice_sha256: [u8; 32],
    pub signature: Vec<u8>,
    pub batch_id: String,
    pub billed_at: u64,
}

/// What a revocation did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RevokeOutcome {
    Revoked,
    AlreadyRevoked,
    NotFound,
}

/// One connection to the gateway's database. Used by one thread at a time (see [`Pool`]).
pub trait Store: Send {
    /// Records a new session; [`StoreError::Conflict`] if its id was ever used.
    fn create_session(&mut self, session: &Session) -> Result<()>;
    /// A session by id, in whatever state.
    fn session(&mut self, sid: &[u8]) -> Result<Option<Session>>;
    /// New vectors for a pending session (after a USIM resynchronisation); false if the
    /// session is not pending.
    fn renew_session(
        &mut self,
        sid: &[u8],
        rands: &[[u8; 16]],
        expected: &[u8],
        k: &[u8; 32],
        expires_at: u64,
    ) -> Result<bool>;
    /// Closes a pending session as `state`, wiping K, and stores `certificate` in the same
    /// transaction. False (and nothing stored) if the session was no longer pending — a
    /// concurrent 250 for the same session won.
    fn close_session(
        &mut self,
        sid: &[u8],
        state: SessionState,
        certificate: Option<&CertRecord>,
    ) -> Result<bool>;
    fn certificate(&mut self, serial: &[u8]) -> Result<Option<CertRecord>>;
    fn revoke(&mut self, serial: &[u8], at: u64, reason: &str) -> Result<RevokeOutcome>;
    /// Registers a seller; [`StoreError::Conflict`] if the id is taken.
    fn add_seller(&mut self, seller_id: &str, name: &str, at: u64) -> Result<()>;
    fn seller_exists(&mut self, seller_id: &str) -> Result<bool>;
    /// CDRs, oldest first, of one seller or all.
    fn cdrs(&mut self, seller_id: Option<&str>) -> Result<Vec<Cdr>>;

    /// Runs `work` in one write transaction (the billing of a chunk of records): committed
    /// when `work` returns `Ok`, rolled back when it returns an error or panics — the
    /// implementations hold a rusqlite/postgres `Transaction`, which rolls back on drop, so no
    /// path leaves a transaction open on a pooled connection.
    fn billing(&mut self, work: &mut dyn FnMut(&mut dyn BillingTx) -> Result<()>) -> Result<()>;

    /// Whether the connection can still be used (a PostgreSQL connection may have died).
    fn is_usable(&mut self) -> bool {
        true
    }
}

/// What billing does inside its transaction (see [`Store::billing`]).
pub trait BillingTx {
    /// The current records of these certificates, locked against concurrent billing until
    /// the transaction ends. `serials` are sorted, so two gateways lock in the same order and
    /// cannot deadlock.
    fn lock_certificates(&mut self, serials: &[Vec<u8>]) -> Result<Vec<CertRecord>>;
    /// Whether (seller, transaction) was billed, and how.
    fn billed(&mut self, seller_id: &str, transaction_id: &str) -> Result<Option<Billed>>;
    /// Purchases billed on this certificate in this period.
    fn usage(&mut self, serial: &[u8], period: u64) -> Result<u64>;
    /// Stores a CDR and counts it; false (nothing stored) if (seller, transaction) exists.
    fn insert_cdr(&mut self, cdr: &Cdr) -> Result<bool>;
}

/// Opens a new connection.
pub type Opener = Box<dyn Fn() -> Result<Box<dyn Store>> + Send + Sync>;

/// The opener for `--db`: a `postgres://` or `postgresql://` URL, or else an SQLite file path
/// (created with mode 0600).
pub fn opener(db: &str) -> Result<Opener> {
    if db.starts_with("postgres://") || db.starts_with("postgresql://") {
        let url = db.to_string();
        // Set up the schema once, up front, so a bad URL fails at start-up.
        postgres::PgStore::connect(&url)?;
        Ok(Box::new(move || {
            postgres::PgStore::connect(&url).map(|s| Box::new(s) as Box<dyn Store>)
        }))
    } else {
        let path = std::path::PathBuf::from(db);
        // Creates, checks and migrates the file before the gateway takes requests.
        sqlite::SqliteStore::open(&path)?;
        Ok(Box::new(move || {
            sqlite::SqliteStore::open(&path).map(|s| Box::new(s) as Box<dyn Store>)
        }))
    }
}

/// The most connections one gateway process holds: requests beyond it wait for one (up to
/// [`POOL_WAIT`]) instead of opening more. SQLite serialises writers anyway; PostgreSQL's
/// default `max_connections` is 100, shared by every gateway process.
pub const MAX_CONNECTIONS: u32 = 16;
/// How long a request waits for a free connection (or for an unreachable database) before it
/// fails with 503, instead of holding its thread indefinitely.
pub const POOL_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// Connects the pool (r2d2) to an [`Opener`]: one manager for both backends, since the
/// gateway works through the [`Store`] trait. (r2d2_sqlite 0.35 requires rusqlite 0.40, so
/// its manager would not fit rusqlite 0.41 anyway.)
pub struct Manager {
    open: Opener,
}

impl r2d2::ManageConnection for Manager {
    type Connection = Box<dyn Store>;
    type Error = StoreError;

    fn connect(&self) -> Result<Box<dyn Store>> {
        (self.open)()
    }

    fn is_valid(&self, store: &mut Box<dyn Store>) -> Result<()> {
        if store.is_usable() {
            Ok(())
        } else {
            Err(StoreError::Backend("the connection was closed".into()))
        }
    }

    fn has_broken(&self, store: &mut Box<dyn Store>) -> bool {
        !store.is_usable()
    }
}

/// A bounded pool of connections: a request takes one (opening one if none is idle and fewer
/// than [`MAX_CONNECTIONS`] exist) and gives it back on drop; a broken one is dropped.
pub struct Pool {
    inner: r2d2::Pool<Manager>,
}

/// A connection borrowed from a [`Pool`].
pub type Pooled = r2d2::PooledConnection<Manager>;

impl Pool {
    pub fn new(open: Opener) -> Pool {
        Pool::with_size(open, MAX_CONNECTIONS)
    }

    pub fn with_size(open: Opener, max: u32) -> Pool {
        let inner = r2d2::Pool::builder()
            .max_size(max)
            // Connections are opened when needed, not all up front.
            .min_idle(Some(0))
            .connection_timeout(POOL_WAIT)
            // r2d2 logs through `log`; the gateway reports failures itself.
            .error_handler(Box::new(r2d2::NopErrorHandler))
            .build_unchecked(Manager { open });
        Pool { inner }
    }

    /// A connection for the caller's exclusive use.
    pub fn get(&self) -> Result<Pooled> {
        self.inner.get().map_err(|e| {
            StoreError::Backend(format!("no database connection within {POOL_WAIT:?}: {e}"))
        })
    }
}
