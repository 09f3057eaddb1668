//! One operator's store — SQLite (the default) or PostgreSQL — holding the service manager's
//! subscriptions, the peer table, the operation manager's private domains (accounts with a
//! held amount, tickets with held uses), the service agents keyed by T-REF, the settlement
//! with each peer, the two-phase-commit log and the SMS outbox.
//!
//! Every step of a transfer is one database transaction that changes the agent's state with a
//! conditional UPDATE (`… WHERE state = ?`), writes the money (or uses) it moves, appends to
//! the log and queues the SMS it owes: a crash between two steps leaves a state the worker
//! resumes from, a message handled twice changes nothing the second time, and nothing is told
//! to a phone that did not happen.

use super::messages::{Goods, Response, Service, TRef};
use crate::db::Schema;
use crate::sql::{self, Backend, Cell, PgSchema, SqlError, V};
use std::fmt;
use std::path::Path;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

pub const SCHEMA: Schema = Schema {
    name: "operator",
    application_id: 0x534C_6F70,
    marker_table: "subscriptions",
    migrations: &[V1],
    busy_timeout: Duration::from_secs(5),
};

const V1: &str = "
CREATE TABLE IF NOT EXISTS subscriptions (
    msisdn      TEXT PRIMARY KEY,
    services    TEXT NOT NULL,
    pin         TEXT,
    public_key  BLOB,
    status      TEXT NOT NULL CHECK (status IN ('active', 'disabled'))
);
CREATE TABLE IF NOT EXISTS peers (
    name          TEXT PRIMARY KEY,
    url           TEXT NOT NULL,
    country_code  TEXT NOT NULL,
    prefixes      TEXT NOT NULL,
    certificate   BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS accounts (
    msisdn   TEXT PRIMARY KEY,
    balance  INTEGER NOT NULL CHECK (balance >= 0),
    held     INTEGER NOT NULL CHECK (held >= 0 AND held <= balance),
    funded   INTEGER NOT NULL,
    currency TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS tickets (
    id          TEXT PRIMARY KEY,
    owner       TEXT NOT NULL,
    service     TEXT NOT NULL,
    uses        INTEGER NOT NULL CHECK (uses >= 0),
    held        INTEGER NOT NULL CHECK (held >= 0 AND held <= uses),
    valid_until INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS agents (
    tref        BLOB PRIMARY KEY,
    side        TEXT NOT NULL CHECK (side IN ('debtor', 'creditor')),
    origin      INTEGER NOT NULL,
    service     TEXT NOT NULL,
    sender      TEXT NOT NULL,
    receiver    TEXT NOT NULL,
    peer        TEXT NOT NULL,
    message     TEXT NOT NULL,
    goods       TEXT NOT NULL,
    offer       BLOB,
    offer_hash  BLOB,
    answer_hash BLOB,
    response    TEXT,
    state       TEXT NOT NULL,
    cause       TEXT,
    deadline    INTEGER NOT NULL,
    resent      INTEGER NOT NULL,
    tries       INTEGER NOT NULL,
    new_ticket  TEXT,
    created_at  INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS agents_state ON agents (state, updated_at);
CREATE TABLE IF NOT EXISTS settlement (
    peer        TEXT PRIMARY KEY,
    payable     INTEGER NOT NULL,
    receivable  INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS log (
    seq    INTEGER PRIMARY KEY AUTOINCREMENT,
    tref   BLOB NOT NULL,
    event  TEXT NOT NULL,
    at     INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS log_tref ON log (tref, seq);
CREATE TABLE IF NOT EXISTS seen (
    digest  BLOB PRIMARY KEY,
    at      INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS outbox (
    seq      INTEGER PRIMARY KEY AUTOINCREMENT,
    number   TEXT NOT NULL,
    data     BLOB,
    text     TEXT,
    sent_at  INTEGER,
    failed   TEXT,
    created_at INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS outbox_unsent ON outbox (sent_at, seq);
";

const PG: PgSchema = PgSchema {
    version_table: "simlab_operator_schema",
    lock: 0x0053_494D_4C4F_5052,
};

/// Why the store could not answer.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database failed or cannot be used ([`SqlError::is_bad_input`]: the user's to fix).
    #[error(transparent)]
    Sql(#[from] SqlError),
    /// The row exists already (a subscription, peer, account or ticket).
    #[error("{0} exists already")]
    Exists(String),
    /// A row this change needs is not there.
    #[error("{0}")]
    Missing(String),
    /// A row holds what this build never writes.
    #[error("corrupt row: {0}")]
    Corrupt(String),
    /// The change would take a number past what the messages can carry (2^53 minor units).
    #[error("{0}")]
    Limit(String),
}

/// Who pays in a transfer: the debtor's operator coordinates the two-phase commit.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Side {
    /// This operator's subscriber pays (or gives uses): it holds the debit, decides, commits.
    Debtor,
    /// This operator's subscriber is paid (or gets uses): it reserves the credit and follows.
    Creditor,
}

impl Side {
    pub fn as_str(self) -> &'static str {
        match self {
            Side::Debtor => "debtor",
            Side::Creditor => "creditor",
        }
    }
}

/// A service agent's life (110 on the side of the order, 140 on the other).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    /// Origin: M1 accepted, M2 not yet acknowledged by the peer.
    Requested,
    /// M3 sent (or, at the origin, M2 acknowledged): waiting for the M4 until the deadline.
    AwaitingAnswer,
    /// Accepted, at the side that received the M4 but does not coordinate: telling the
    /// debtor's operator (145).
    Forwarding,
    /// Debtor: accepted; the debit is to be held.
    Accepted,
    /// Debtor: the debit is held, the peer's vote is being asked. Creditor: the credit is
    /// reserved, waiting for the decision.
    Prepared,
    /// Debtor: decided commit and debited; the peer's acknowledgement (160) is outstanding.
    Committing,
    /// Both operations ran.
    Completed,
    /// Debtor: decided abort and released the hold; the peer's acknowledgement is outstanding.
    Aborting,
    /// Nothing moved: refused on either side, an operation failed, or cancelled.
    Aborted,
    /// The other party said no.
    Rejected,
    /// No answer before the deadline.
    Expired,
}

impl State {
    /// The states with a next step still to take (the worker's, or the peer's): every other
    /// one is final.
    pub const ACTIVE: [State; 7] = [
        State::Requested,
        State::AwaitingAnswer,
        State::Forwarding,
        State::Accepted,
        State::Prepared,
        State::Committing,
        State::Aborting,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            State::Requested => "requested",
            State::AwaitingAnswer => "awaiting_answer",
            State::Forwarding => "forwarding",
            State::Accepted => "accepted",
            State::Prepared => "prepared",
            State::Committing => "committing",
            State::Completed => "completed",
            State::Aborting => "aborting",
            State::Aborted => "aborted",
            State::Rejected => "rejected",
            State::Expired => "expired",
        }
    }

    pub fn parse(s: &str) -> Option<State> {
        Some(match s {
            "requested" => State::Requested,
            "awaiting_answer" => State::AwaitingAnswer,
            "forwarding" => State::Forwarding,
            "accepted" => State::Accepted,
            "prepared" => State::Prepared,
            "committing" => State::Committing,
            "completed" => State::Completed,
            "aborting" => State::Aborting,
            "aborted" => State::Aborted,
            "rejected" => State::Rejected,
            "expired" => State::Expired,
            _ => return None,
        })
    }

    /// Whether the agent is gone: nothing will change it any more.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            State::Completed | State::Aborted | State::Rejected | State::Expired
        )
    }
}

/// A subscription (service manager).
#[derive(Clone, PartialEq, Eq)]
pub struct Subscription {
    pub msisdn: String,
    pub services: Vec<Service>,
    /// argon2id verifier of the service PIN (lab mode: PIN in the SMS). Never printed.
    pub(crate) pin: Option<String>,
    /// The token's public key (uncompressed SEC1) that signs this subscriber's M1 and M4.
    pub public_key: Option<Vec<u8>>,
    pub active: bool,
}

impl Subscription {
    pub fn new(
        msisdn: &str,
        services: Vec<Service>,
        pin_verifier: Option<String>,
        public_key: Option<Vec<u8>>,
    ) -> Self {
        Subscription {
            msisdn: msisdn.to_string(),
            services,
            pin: pin_verifier,
            public_key,
            active: true,
        }
    }

    pub fn has_pin(&self) -> bool {
        self.pin.is_some()
    }
}

impl fmt::Debug for Subscription {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Subscription")
            .field("msisdn", &self.msisdn)
            .field("services", &self.services)
            .field("has_pin", &self.pin.is_some())
            .field("has_key", &self.public_key.is_some())
            .field("active", &self.active)
            .finish()
    }
}

/// A row of the peer table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerRow {
    pub name: String,
    /// Its operator server, `https://HOST:PORT`.
    pub url: String,
    pub country_code: String,
    pub prefixes: Vec<String>,
    /// The peer certificate it must present on channel 121 (DER).
    pub certificate_der: Vec<u8>,
}

/// An account (private domain of the operation manager).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Account {
    pub msisdn: String,
    pub balance: u64,
    /// Held by prepared debits: not spendable, not yet gone.
    pub held: u64,
    /// Everything ever paid in by the operator (`operator account --fund`): the ledger's
    /// starting point.
    pub funded: u64,
    pub currency: String,
}

/// A ticket: N uses of a service.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Ticket {
    pub id: String,
    pub owner: String,
    pub service: String,
    pub uses: u32,
    pub held: u32,
    pub valid_until: u64,
}

/// A service agent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Agent {
    pub tref: TRef,
    pub side: Side,
    /// Whether this operator received the order (M1).
    pub origin: bool,
    pub service: Service,
    pub sender: String,
    pub receiver: String,
    /// The other operator.
    pub peer: String,
    pub message: String,
    pub goods: Goods,
    /// The M3 bytes, once built (by the origin) — both sides keep the same.
    pub offer: Option<Vec<u8>>,
    pub offer_hash: Option<[u8; 32]>,
    /// SHA-256 of the M4 that answered, to tell a repeated M4 from another.
    pub answer_hash: Option<[u8; 32]>,
    /// The answer being forwarded to the debtor's operator ([`State::Forwarding`]).
    pub response: Option<Response>,
    pub state: State,
    pub cause: Option<String>,
    pub deadline: u64,
    /// Whether M3 was sent a second time.
    pub resent: bool,
    /// Wrong PIN2/signature tries on this agent's M4.
    pub tries: u32,
    /// Creditor of a ticket transfer: the new ticket's id.
    pub new_ticket: Option<String>,
    pub created_at: u64,
    pub updated_at: u64,
}

impl Agent {
    /// The party who pays or gives uses.
    pub fn debtor_number(&self) -> &str {
        match self.service {
            Service::Bill => &self.receiver,
            _ => &self.sender,
        }
    }

    /// The party who is paid or gets uses.
    pub fn creditor_number(&self) -> &str {
        match self.service {
            Service::Bill => &self.sender,
            _ => &self.receiver,
        }
    }

    /// This operator's own subscriber in the transfer.
    pub fn local_number(&self) -> &str {
        if self.origin {
            &self.sender
        } else {
            &self.receiver
        }
    }
}

/// The ledger of one operator: what its invariant compares.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Ledger {
    pub balances: i64,
    pub held: i64,
    pub funded: i64,
    pub payable: i64,
    pub receivable: i64,
    /// Per peer: (payable, receivable).
    pub peers: Vec<(String, i64, i64)>,
}

impl Ledger {
    /// Money neither created nor lost: what was paid in, less what is owed to peers, plus what
    /// peers owe, is exactly what the accounts hold.
    pub fn balanced(&self) -> bool {
        self.balances == self.funded - self.payable + self.receivable
    }
}

/// A message waiting to be sent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outgoing {
    pub seq: i64,
    pub number: String,
    /// 8-bit service data (an M3), or
    pub data: Option<Vec<u8>>,
    /// a text for the person.
    pub text: Option<String>,
}

pub struct Store {
    conn: Mutex<Backend>,
}

const AGENT_COLUMNS: &str = "tref, side, origin, service, sender, receiver, peer, message, goods, \
     offer, offer_hash, answer_hash, response, state, cause, deadline, resent, tries, new_ticket, \
     created_at, updated_at";

fn corrupt(what: &str) -> StoreError {
    StoreError::Corrupt(what.to_string())
}

fn hash32(c: Cell) -> Result<Option<[u8; 32]>, StoreError> {
    c.opt_blob()?
        .map(|b| b.try_into().map_err(|_| corrupt("hash")))
        .transpose()
}

fn agent_row(row: Vec<Cell>) -> Result<Agent, StoreError> {
    let mut c = row.into_iter();
    let mut next = || c.next().ok_or_else(|| corrupt("short agent row"));
    let tref: TRef = next()?.blob()?.try_into().map_err(|_| corrupt("tref"))?;
    let side = match next()?.text()?.as_str() {
        "debtor" => Side::Debtor,
        "creditor" => Side::Creditor,
        other => return Err(corrupt(&format!("side {other:?}"))),
    };
    let origin = next()?.int()? != 0;
    let service = next()?.text()?;
    let service = Service::parse(&service).ok_or_else(|| corrupt("service"))?;
    let sender = next()?.text()?;
    let receiver = next()?.text()?;
    let peer = next()?.text()?;
    let message = next()?.text()?;
    let goods: Goods =
        serde_json::from_str(&next()?.text()?).map_err(|e| corrupt(&format!("goods: {e}")))?;
    let offer = next()?.opt_blob()?;
    let offer_hash = hash32(next()?)?;
    let answer_hash = hash32(next()?)?;
    let response = next()?
        .opt_text()?
        .map(|r| serde_json::from_str(&r).map_err(|e| corrupt(&format!("response: {e}"))))
        .transpose()?;
    let state = next()?.text()?;
    Ok(Agent {
        tref,
        side,
        origin,
        service,
        sender,
        receiver,
        peer,
        message,
        goods,
        offer,
        offer_hash,
        answer_hash,
        response,
        state: State::parse(&state).ok_or_else(|| corrupt(&format!("state {state:?}")))?,
        cause: next()?.opt_text()?,
        deadline: next()?.int()? as u64,
        resent: next()?.int()? != 0,
        tries: next()?.int()? as u32,
        new_ticket: next()?.opt_text()?,
        created_at: next()?.int()? as u64,
        updated_at: next()?.int()? as u64,
    })
}

/// What a step of a transfer writes besides the agent's state, in the same transaction.
#[derive(Default)]
pub struct Effects {
    /// SMS owed to people because of this step.
    pub sms: Vec<(String, Option<Vec<u8>>, Option<String>)>,
    /// The log line.
    pub log: String,
}

impl Effects {
    pub fn log(event: impl Into<String>) -> Effects {
        Effects {
            sms: Vec::new(),
            log: event.into(),
        }
    }

    pub fn text(mut self, to: &str, text: String) -> Effects {
        self.sms.push((to.to_string(), None, Some(text)));
        self
    }

    pub fn data(mut self, to: &str, data: Vec<u8>) -> Effects {
        self.sms.push((to.to_string(), Some(data), None));
        self
    }
}

/// An operation on the private domains, run inside a step's transaction.
pub enum Operation<'a> {
    None,
    /// Hold `amount` of `msisdn`'s balance (fails without the funds).
    HoldMoney {
        msisdn: &'a str,
        amount: u64,
    },
    /// Release a hold.
    ReleaseMoney {
        msisdn: &'a str,
        amount: u64,
    },
    /// Take a held amount for good, owing it to `peer`.
    DebitMoney {
        msisdn: &'a str,
        amount: u64,
        peer: &'a str,
    },
    /// Pay `amount` into `msisdn`'s account, owed by `peer`.
    CreditMoney {
        msisdn: &'a str,
        amount: u64,
        peer: &'a str,
    },
    /// Hold `uses` of ticket `id` owned by `owner` (at least one use must stay).
    HoldUses {
        id: &'a str,
        owner: &'a str,
        uses: u32,
    },
    ReleaseUses {
        id: &'a str,
        uses: u32,
    },
    /// Take held uses for good.
    DebitUses {
        id: &'a str,
        uses: u32,
    },
    /// A new ticket for the receiver.
    NewTicket {
        id: &'a str,
        owner: &'a str,
        from: &'a str,
        uses: u32,
    },
}

/// Why an operation on the private domains could not run (the transfer aborts).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("insufficient funds")]
    InsufficientFunds,
    #[error("no account for {0}")]
    NoAccount(String),
    #[error("no ticket {0} of this owner")]
    NoTicket(String),
    #[error("ticket {0} has expired")]
    TicketExpired(String),
    #[error("the ticket has {left} uses left; at most {max} can be transferred")]
    TooManyUses { left: u32, max: u32 },
}

/// The result of a step.
pub enum Step {
    /// The agent moved to the new state.
    Done,
    /// The agent was not in the expected state (someone else did the step): nothing changed.
    Stale,
    /// The operation was refused: nothing changed.
    Refused(Refusal),
}

impl Store {
    pub fn open(db: &str) -> Result<Store, StoreError> {
        Ok(Store {
            conn: Mutex::new(sql::open(db, &SCHEMA, &PG)?),
        })
    }

    pub fn open_path(path: &Path) -> Result<Store, StoreError> {
        Store::open(&path.to_string_lossy())
    }

    fn conn(&self) -> MutexGuard<'_, Backend> {
        self.conn.lock().unwrap_or_else(PoisonError::into_inner)
    }

    // ---- subscriptions -------------------------------------------------------------------

    pub fn put_subscription(&self, s: &Subscription, replace: bool) -> Result<(), StoreError> {
        let services: Vec<&str> = s.services.iter().map(|s| s.as_str()).collect();
        let services = services.join(",");
        let status = if s.active { "active" } else { "disabled" };
        let values = [
            V::Text(&s.msisdn),
            V::Text(&services),
            V::OptText(s.pin.as_deref()),
            V::OptBlob(s.public_key.as_deref()),
            V::Text(status),
        ];
        let sql = if replace {
            "INSERT INTO subscriptions VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT (msisdn) DO UPDATE \
             SET services = excluded.services, pin = excluded.pin, \
             public_key = excluded.public_key, status = excluded.status"
        } else {
            "INSERT INTO subscriptions VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT DO NOTHING"
        };
        if self.conn().exec(sql, &values)? == 0 {
            return Err(StoreError::Exists(format!("subscription {}", s.msisdn)));
        }
        Ok(())
    }

    pub fn subscription(&self, msisdn: &str) -> Result<Option<Subscription>, StoreError> {
        let rows = self.conn().query(
            "SELECT msisdn, services, pin, public_key, status FROM subscriptions WHERE msisdn = ?1",
            &[V::Text(msisdn)],
        )?;
        rows.into_iter().next().map(subscription_row).transpose()
    }

    pub fn subscriptions(&self) -> Result<Vec<Subscription>, StoreError> {
        let rows = self.conn().query(
            "SELECT msisdn, services, pin, public_key, status FROM subscriptions ORDER BY msisdn",
            &[],
        )?;
        rows.into_iter().map(subscription_row).collect()
    }

    // ---- peers ---------------------------------------------------------------------------

    pub fn put_peer(&self, p: &PeerRow, replace: bool) -> Result<(), StoreError> {
        let prefixes = p.prefixes.join(",");
        let values = [
            V::Text(&p.name),
            V::Text(&p.url),
            V::Text(&p.country_code),
            V::Text(&prefixes),
            V::Blob(&p.certificate_der),
        ];
        let sql = if replace {
            "INSERT INTO peers VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT (name) DO UPDATE SET \
             url = excluded.url, country_code = excluded.country_code, \
             prefixes = excluded.prefixes, certificate = excluded.certificate"
        } else {
            "INSERT INTO peers VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT DO NOTHING"
        };
        if self.conn().exec(sql, &values)? == 0 {
            return Err(StoreError::Exists(format!("peer {:?}", p.name)));
        }
        Ok(())
    }

    pub fn peers(&self) -> Result<Vec<PeerRow>, StoreError> {
        let rows = self.conn().query(
            "SELECT name, url, country_code, prefixes, certificate FROM peers ORDER BY name",
            &[],
        )?;
        rows.into_iter()
            .map(|row| {
                let mut c = row.into_iter();
                let mut next = || c.next().ok_or_else(|| corrupt("short peer row"));
                Ok(PeerRow {
                    name: next()?.text()?,
                    url: next()?.text()?,
                    country_code: next()?.text()?,
                    prefixes: next()?
                        .text()?
                        .split(',')
                        .filter(|p| !p.is_empty())
                        .map(str::to_string)
                        .collect(),
                    certificate_der: next()?.blob()?,
                })
            })
            .collect()
    }

    // ---- private domains -----------------------------------------------------------------

    /// Opens an account with `amount` paid in, or pays `amount` into an existing one.
    pub fn fund(&self, msisdn: &str, amount: u64, currency: &str) -> Result<Account, StoreError> {
        let amount = i64::try_from(amount).map_err(|_| corrupt("amount"))?;
        let mut conn = self.conn();
        let rows = conn.query(
            "SELECT currency, balance FROM accounts WHERE msisdn = ?1",
            &[V::Text(msisdn)],
        )?;
        if let Some(row) = rows.into_iter().next() {
            let mut row = row.into_iter();
            let have = row.next().map(Cell::text).transpose()?;
            if have.as_deref() != Some(currency) {
                return Err(StoreError::Exists(format!(
                    "an account of {msisdn} in {}",
                    have.unwrap_or_default()
                )));
            }
            let balance = row.next().map(Cell::int).transpose()?.unwrap_or(0);
            // Every amount the service handles fits the messages' 2^53: a balance past it
            // could not be sent on, and summing such balances could overflow the ledger.
            if balance.saturating_add(amount) > crate::transfer::messages::AMOUNT_MAX as i64 {
                return Err(StoreError::Limit(format!(
                    "{msisdn}'s balance {balance} plus {amount} passes {} minor units",
                    crate::transfer::messages::AMOUNT_MAX
                )));
            }
        }
        conn.exec(
            "INSERT INTO accounts VALUES (?1, ?2, 0, ?2, ?3) ON CONFLICT (msisdn) DO UPDATE SET \
             balance = accounts.balance + excluded.balance, funded = accounts.funded + excluded.funded",
            &[V::Text(msisdn), V::Int(amount), V::Text(currency)],
        )?;
        drop(conn);
        self.account(msisdn)?
            .ok_or_else(|| StoreError::Missing(format!("no account for {msisdn}")))
    }

    pub fn account(&self, msisdn: &str) -> Result<Option<Account>, StoreError> {
        let rows = self.conn().query(
            "SELECT msisdn, balance, held, funded, currency FROM accounts WHERE msisdn = ?1",
            &[V::Text(msisdn)],
        )?;
        rows.into_iter().next().map(account_row).transpose()
    }

    pub fn accounts(&self) -> Result<Vec<Account>, StoreError> {
        let rows = self.conn().query(
            "SELECT msisdn, balance, held, funded, currency FROM accounts ORDER BY msisdn",
            &[],
        )?;
        rows.into_iter().map(account_row).collect()
    }

    pub fn add_ticket(&self, t: &Ticket) -> Result<(), StoreError> {
        let n = self.conn().exec(
            "INSERT INTO tickets VALUES (?1, ?2, ?3, ?4, 0, ?5) ON CONFLICT DO NOTHING",
            &[
                V::Text(&t.id),
                V::Text(&t.owner),
                V::Text(&t.service),
                V::Int(t.uses.into()),
                V::Int(t.valid_until as i64),
            ],
        )?;
        if n == 0 {
            return Err(StoreError::Exists(format!("ticket {:?}", t.id)));
        }
        Ok(())
    }

    pub fn tickets(&self) -> Result<Vec<Ticket>, StoreError> {
        let rows = self.conn().query(
            "SELECT id, owner, service, uses, held, valid_until FROM tickets ORDER BY id",
            &[],
        )?;
        rows.into_iter().map(ticket_row).collect()
    }

    pub fn ticket(&self, id: &str) -> Result<Option<Ticket>, StoreError> {
        let rows = self.conn().query(
            "SELECT id, owner, service, uses, held, valid_until FROM tickets WHERE id = ?1",
            &[V::Text(id)],
        )?;
        rows.into_iter().next().map(ticket_row).transpose()
    }

    pub fn ledger(&self) -> Result<Ledger, StoreError> {
        let mut conn = self.conn();
        let sums = conn.query(
            // PostgreSQL's SUM of BIGINT is NUMERIC: cast back (a no-op for SQLite).
            "SELECT CAST(COALESCE(SUM(balance), 0) AS BIGINT), \
             CAST(COALESCE(SUM(held), 0) AS BIGINT), CAST(COALESCE(SUM(funded), 0) AS BIGINT) \
             FROM accounts",
            &[],
        )?;
        let int = |c: Option<Cell>| -> Result<i64, StoreError> {
            Ok(c.ok_or_else(|| corrupt("sum"))?.int()?)
        };
        let mut s = sums.into_iter().next().unwrap_or_default().into_iter();
        let (balances, held, funded) = (int(s.next())?, int(s.next())?, int(s.next())?);
        let rows = conn.query(
            "SELECT peer, payable, receivable FROM settlement ORDER BY peer",
            &[],
        )?;
        let mut peers = Vec::new();
        for row in rows {
            let mut c = row.into_iter();
            let name = c.next().ok_or_else(|| corrupt("settlement"))?.text()?;
            peers.push((name, int(c.next())?, int(c.next())?));
        }
        Ok(Ledger {
            balances,
            held,
            funded,
            payable: peers.iter().map(|p| p.1).sum(),
            receivable: peers.iter().map(|p| p.2).sum(),
            peers,
        })
    }

    // ---- agents --------------------------------------------------------------------------

    /// A new agent with its first effects; `false` when the T-REF exists already (a repeated
    /// M2: nothing written).
    pub fn add_agent(&self, a: &Agent, effects: Effects) -> Result<bool, StoreError> {
        let goods = serde_json::to_string(&a.goods).map_err(|e| corrupt(&e.to_string()))?;
        let response = a.response.map(|r| serde_json::json!(r).to_string());
        self.conn().transaction(|c| -> Result<bool, StoreError> {
            let n = c.exec(
                &format!(
                    "INSERT INTO agents ({AGENT_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, \
                     ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19, ?20, ?21) \
                     ON CONFLICT DO NOTHING"
                ),
                &[
                    V::Blob(&a.tref),
                    V::Text(a.side.as_str()),
                    V::Int(a.origin.into()),
                    V::Text(a.service.as_str()),
                    V::Text(&a.sender),
                    V::Text(&a.receiver),
                    V::Text(&a.peer),
                    V::Text(&a.message),
                    V::Text(&goods),
                    V::OptBlob(a.offer.as_deref()),
                    V::OptBlob(a.offer_hash.as_ref().map(|h| &h[..])),
                    V::OptBlob(a.answer_hash.as_ref().map(|h| &h[..])),
                    V::OptText(response.as_deref()),
                    V::Text(a.state.as_str()),
                    V::OptText(a.cause.as_deref()),
                    V::Int(a.deadline as i64),
                    V::Int(a.resent.into()),
                    V::Int(a.tries.into()),
                    V::OptText(a.new_ticket.as_deref()),
                    V::Int(a.created_at as i64),
                    V::Int(a.updated_at as i64),
                ],
            )?;
            if n == 0 {
                return Ok(false);
            }
            write_effects(c, &a.tref, effects, a.created_at)?;
            Ok(true)
        })
    }

    pub fn agent(&self, tref: &TRef) -> Result<Option<Agent>, StoreError> {
        let rows = self.conn().query(
            &format!("SELECT {AGENT_COLUMNS} FROM agents WHERE tref = ?1"),
            &[V::Blob(tref)],
        )?;
        rows.into_iter().next().map(agent_row).transpose()
    }

    /// Agents in `states` (all, newest first, with an empty list).
    pub fn agents(&self, states: &[State], limit: u32) -> Result<Vec<Agent>, StoreError> {
        let rows = if states.is_empty() {
            self.conn().query(
                &format!(
                    "SELECT {AGENT_COLUMNS} FROM agents ORDER BY created_at DESC, tref LIMIT ?1"
                ),
                &[V::Int(limit.into())],
            )?
        } else {
            let list: Vec<String> = states.iter().map(|s| format!("'{}'", s.as_str())).collect();
            self.conn().query(
                &format!(
                    "SELECT {AGENT_COLUMNS} FROM agents WHERE state IN ({}) \
                     ORDER BY updated_at, tref LIMIT ?1",
                    list.join(", ")
                ),
                &[V::Int(limit.into())],
            )?
        };
        rows.into_iter().map(agent_row).collect()
    }

    /// One step: when the agent is in `from`, run `op`, set `to` (and the fields `update`
    /// changes), write `effects` — all in one transaction, or nothing.
    // Each argument is one part of the step, in the order they happen; a builder would hide
    // that order.
    #[allow(clippy::too_many_arguments)]
    pub fn step(
        &self,
        tref: &TRef,
        from: &[State],
        to: State,
        op: Operation<'_>,
        update: impl FnOnce(&mut Agent),
        effects: Effects,
        now: u64,
    ) -> Result<Step, StoreError> {
        let mut result = Step::Stale;
        self.conn().transaction(|c| -> Result<bool, StoreError> {
            let rows = c.query(
                &format!("SELECT {AGENT_COLUMNS} FROM agents WHERE tref = ?1"),
                &[V::Blob(tref)],
            )?;
            let Some(mut agent) = rows.into_iter().next().map(agent_row).transpose()? else {
                return Ok(false);
            };
            if !from.contains(&agent.state) {
                return Ok(false);
            }
            if let Err(refusal) = operate(c, op, now)? {
                result = Step::Refused(refusal);
                return Ok(false);
            }
            let old = agent.state;
            update(&mut agent);
            let response = agent.response.map(|r| serde_json::json!(r).to_string());
            let n = c.exec(
                "UPDATE agents SET state = ?2, cause = ?3, deadline = ?4, resent = ?5, \
                 tries = ?6, new_ticket = ?7, answer_hash = ?8, offer = ?9, offer_hash = ?10, \
                 updated_at = ?11, response = ?13 WHERE tref = ?1 AND state = ?12",
                &[
                    V::Blob(tref),
                    V::Text(to.as_str()),
                    V::OptText(agent.cause.as_deref()),
                    V::Int(agent.deadline as i64),
                    V::Int(agent.resent.into()),
                    V::Int(agent.tries.into()),
                    V::OptText(agent.new_ticket.as_deref()),
                    V::OptBlob(agent.answer_hash.as_ref().map(|h| &h[..])),
                    V::OptBlob(agent.offer.as_deref()),
                    V::OptBlob(agent.offer_hash.as_ref().map(|h| &h[..])),
                    V::Int(now as i64),
                    V::Text(old.as_str()),
                    V::OptText(response.as_deref()),
                ],
            )?;
            if n != 1 {
                return Ok(false);
            }
            write_effects(c, tref, effects, now)?;
            result = Step::Done;
            Ok(true)
        })?;
        Ok(result)
    }

    /// Counts a wrong PIN2/signature try on the agent (no state change); returns the count.
    pub fn count_try(&self, tref: &TRef, now: u64) -> Result<u32, StoreError> {
        let mut conn = self.conn();
        conn.exec(
            "UPDATE agents SET tries = tries + 1, updated_at = ?2 WHERE tref = ?1",
            &[V::Blob(tref), V::Int(now as i64)],
        )?;
        let rows = conn.query("SELECT tries FROM agents WHERE tref = ?1", &[V::Blob(tref)])?;
        let tries = rows
            .into_iter()
            .next()
            .and_then(|r| r.into_iter().next())
            .ok_or_else(|| StoreError::Missing("agent".into()))?
            .int()?;
        Ok(tries as u32)
    }

    /// The 2PC log of one T-REF, oldest first.
    pub fn log(&self, tref: &TRef) -> Result<Vec<(u64, String)>, StoreError> {
        let rows = self.conn().query(
            "SELECT at, event FROM log WHERE tref = ?1 ORDER BY seq",
            &[V::Blob(tref)],
        )?;
        rows.into_iter()
            .map(|r| {
                let mut c = r.into_iter();
                let at = c.next().ok_or_else(|| corrupt("log"))?.int()? as u64;
                let ev = c.next().ok_or_else(|| corrupt("log"))?.text()?;
                Ok((at, ev))
            })
            .collect()
    }

    /// Records a message digest (an M1 or M4 body); `false` when it was seen before.
    pub fn first_sight(&self, digest: &[u8; 32], now: u64) -> Result<bool, StoreError> {
        Ok(self.conn().exec(
            "INSERT INTO seen VALUES (?1, ?2) ON CONFLICT DO NOTHING",
            &[V::Blob(digest), V::Int(now as i64)],
        )? == 1)
    }

    /// Queues one SMS outside any agent (an error reply to a phone).
    pub fn queue_sms(
        &self,
        number: &str,
        data: Option<&[u8]>,
        text: Option<&str>,
        now: u64,
    ) -> Result<(), StoreError> {
        self.conn().exec(
            "INSERT INTO outbox (number, data, text, created_at) VALUES (?1, ?2, ?3, ?4)",
            &[
                V::Text(number),
                V::OptBlob(data),
                V::OptText(text),
                V::Int(now as i64),
            ],
        )?;
        Ok(())
    }

    /// SMS not yet sent, oldest first.
    pub fn unsent(&self, limit: u32) -> Result<Vec<Outgoing>, StoreError> {
        let rows = self.conn().query(
            "SELECT seq, number, data, text FROM outbox WHERE sent_at IS NULL AND failed IS NULL \
             ORDER BY seq LIMIT ?1",
            &[V::Int(limit.into())],
        )?;
        rows.into_iter().map(outgoing_row).collect()
    }

    /// Marks an outbox row sent, or given up with the reason.
    pub fn sent(&self, seq: i64, failed: Option<&str>, now: u64) -> Result<(), StoreError> {
        self.conn().exec(
            "UPDATE outbox SET sent_at = ?2, failed = ?3 WHERE seq = ?1",
            &[V::Int(seq), V::Int(now as i64), V::OptText(failed)],
        )?;
        Ok(())
    }

    /// The outbox rows to `number`, sent or not (what a person was told, and how often).
    pub fn outbox_to(&self, number: &str) -> Result<Vec<Outgoing>, StoreError> {
        let rows = self.conn().query(
            "SELECT seq, number, data, text FROM outbox WHERE number = ?1 ORDER BY seq",
            &[V::Text(number)],
        )?;
        rows.into_iter().map(outgoing_row).collect()
    }
}

fn write_effects(c: &mut Backend, tref: &TRef, e: Effects, now: u64) -> Result<(), StoreError> {
    if !e.log.is_empty() {
        c.exec(
            "INSERT INTO log (tref, event, at) VALUES (?1, ?2, ?3)",
            &[V::Blob(tref), V::Text(&e.log), V::Int(now as i64)],
        )?;
    }
    for (number, data, text) in &e.sms {
        c.exec(
            "INSERT INTO outbox (number, data, text, created_at) VALUES (?1, ?2, ?3, ?4)",
            &[
                V::Text(number),
                V::OptBlob(data.as_deref()),
                V::OptText(text.as_deref()),
                V::Int(now as i64),
            ],
        )?;
    }
    Ok(())
}

/// Runs one operation on the private domains inside the caller's transaction.
fn operate(
    c: &mut Backend,
    op: Operation<'_>,
    now: u64,
) -> Result<Result<(), Refusal>, StoreError> {
    let amount_of = |a: u64| i64::try_from(a).map_err(|_| corrupt("amount"));
    match op {
        Operation::None => {}
        Operation::HoldMoney { msisdn, amount } => {
            let a = amount_of(amount)?;
            let n = c.exec(
                "UPDATE accounts SET held = held + ?2 WHERE msisdn = ?1 AND balance - held >= ?2",
                &[V::Text(msisdn), V::Int(a)],
            )?;
            if n == 0 {
                let exists = !c
                    .query(
                        "SELECT 1 FROM accounts WHERE msisdn = ?1",
                        &[V::Text(msisdn)],
                    )?
                    .is_empty();
                return Ok(Err(if exists {
                    Refusal::InsufficientFunds
                } else {
                    Refusal::NoAccount(msisdn.to_string())
                }));
            }
        }
        Operation::ReleaseMoney { msisdn, amount } => {
            c.exec(
                "UPDATE accounts SET held = held - ?2 WHERE msisdn = ?1 AND held >= ?2",
                &[V::Text(msisdn), V::Int(amount_of(amount)?)],
            )?;
        }
        Operation::DebitMoney {
            msisdn,
            amount,
            peer,
        } => {
            let a = amount_of(amount)?;
            let n = c.exec(
                "UPDATE accounts SET held = held - ?2, balance = balance - ?2 \
                 WHERE msisdn = ?1 AND held >= ?2",
                &[V::Text(msisdn), V::Int(a)],
            )?;
            if n != 1 {
                return Err(StoreError::Corrupt(format!(
                    "the hold on {msisdn}'s account is gone"
                )));
            }
            c.exec(
                "INSERT INTO settlement VALUES (?1, ?2, 0) ON CONFLICT (peer) DO UPDATE \
                 SET payable = settlement.payable + excluded.payable",
                &[V::Text(peer), V::Int(a)],
            )?;
        }
        Operation::CreditMoney {
            msisdn,
            amount,
            peer,
        } => {
            let a = amount_of(amount)?;
            let n = c.exec(
                "UPDATE accounts SET balance = balance + ?2 WHERE msisdn = ?1",
                &[V::Text(msisdn), V::Int(a)],
            )?;
            if n != 1 {
                return Ok(Err(Refusal::NoAccount(msisdn.to_string())));
            }
            c.exec(
                "INSERT INTO settlement VALUES (?1, 0, ?2) ON CONFLICT (peer) DO UPDATE \
                 SET receivable = settlement.receivable + excluded.receivable",
                &[V::Text(peer), V::Int(a)],
            )?;
        }
        Operation::HoldUses { id, owner, uses } => {
            let rows = c.query(
                "SELECT uses, held, valid_until FROM tickets WHERE id = ?1 AND owner = ?2",
                &[V::Text(id), V::Text(owner)],
            )?;
            let Some(row) = rows.into_iter().next() else {
                return Ok(Err(Refusal::NoTicket(id.to_string())));
            };
            let mut r = row.into_iter();
            let mut next = || -> Result<i64, StoreError> {
                Ok(r.next().ok_or_else(|| corrupt("ticket"))?.int()?)
            };
            let (n, held, valid_until) = (next()?, next()?, next()?);
            if (valid_until as u64) < now {
                return Ok(Err(Refusal::TicketExpired(id.to_string())));
            }
            let left = (n - held).max(0) as u32;
            // M < N: the sender keeps at least one use (the seed: M ≥ N is refused).
            if uses >= left {
                return Ok(Err(Refusal::TooManyUses {
                    left,
                    max: left.saturating_sub(1),
                }));
            }
            c.exec(
                "UPDATE tickets SET held = held + ?2 WHERE id = ?1",
                &[V::Text(id), V::Int(uses.into())],
            )?;
        }
        Operation::ReleaseUses { id, uses } => {
            c.exec(
                "UPDATE tickets SET held = held - ?2 WHERE id = ?1 AND held >= ?2",
                &[V::Text(id), V::Int(uses.into())],
            )?;
        }
        Operation::DebitUses { id, uses } => {
            let n = c.exec(
                "UPDATE tickets SET held = held - ?2, uses = uses - ?2 WHERE id = ?1 AND held >= ?2",
                &[V::Text(id), V::Int(uses.into())],
            )?;
            if n != 1 {
                return Err(StoreError::Corrupt(format!(
                    "the hold on ticket {id} is gone"
                )));
            }
        }
        Operation::NewTicket {
            id,
            owner,
            from,
            uses,
        } => {
            // The receiver's ticket is valid as long as the original is said to be, which the
            // creditor does not know: a year, the lab's choice.
            c.exec(
                "INSERT INTO tickets VALUES (?1, ?2, ?3, ?4, 0, ?5) ON CONFLICT DO NOTHING",
                &[
                    V::Text(id),
                    V::Text(owner),
                    V::Text(from),
                    V::Int(uses.into()),
                    V::Int((now + 365 * 86_400) as i64),
                ],
            )?;
        }
    }
    Ok(Ok(()))
}

fn outgoing_row(row: Vec<Cell>) -> Result<Outgoing, StoreError> {
    let mut c = row.into_iter();
    let mut next = || c.next().ok_or_else(|| corrupt("short outbox row"));
    Ok(Outgoing {
        seq: next()?.int()?,
        number: next()?.text()?,
        data: next()?.opt_blob()?,
        text: next()?.opt_text()?,
    })
}

fn subscription_row(row: Vec<Cell>) -> Result<Subscription, StoreError> {
    let mut c = row.into_iter();
    let mut next = || c.next().ok_or_else(|| corrupt("short subscription row"));
    let msisdn = next()?.text()?;
    let services = next()?
        .text()?
        .split(',')
        .filter(|s| !s.is_empty())
        .map(|s| Service::parse(s).ok_or_else(|| corrupt(&format!("service {s:?}"))))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Subscription {
        msisdn,
        services,
        pin: next()?.opt_text()?,
        public_key: next()?.opt_blob()?,
        active: next()?.text()? == "active",
    })
}

fn account_row(row: Vec<Cell>) -> Result<Account, StoreError> {
    let mut c = row.into_iter();
    let mut next = || c.next().ok_or_else(|| corrupt("short account row"));
    Ok(Account {
        msisdn: next()?.text()?,
        balance: next()?.int()? as u64,
        held: next()?.int()? as u64,
        funded: next()?.int()? as u64,
        currency: next()?.text()?,
    })
}

fn ticket_row(row: Vec<Cell>) -> Result<Ticket, StoreError> {
    let mut c = row.into_iter();
    let mut next = || c.next().ok_or_else(|| corrupt("short ticket row"));
    Ok(Ticket {
        id: next()?.text()?,
        owner: next()?.text()?,
        service: next()?.text()?,
        uses: next()?.int()? as u32,
        held: next()?.int()? as u32,
        valid_until: next()?.int()? as u64,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn agent(tref: TRef, goods: Goods) -> Agent {
        Agent {
            tref,
            side: Side::Debtor,
            origin: true,
            service: Service::Pay,
            sender: "+491710000001".into(),
            receiver: "+491720000002".into(),
            peer: "OP2".into(),
            message: String::new(),
            goods,
            offer: None,
            offer_hash: None,
            answer_hash: None,
            response: None,
            state: State::Accepted,
            cause: None,
            deadline: 1_000,
            resent: false,
            tries: 0,
            new_ticket: None,
            created_at: 1,
            updated_at: 1,
        }
    }

    fn money(amount: u64) -> Goods {
        Goods::Money {
            amount,
            currency: "EUR".into(),
        }
    }

    #[test]
    fn a_held_debit_is_spent_once_and_the_ledger_adds_up() {
        let dir = std::env::temp_dir().join(format!("simlab-op-store-{}", std::process::id()));
        let _ = std::fs::remove_file(&dir);
        let s = Store::open_path(&dir).unwrap();
        s.fund("+491710000001", 1000, "EUR").unwrap();
        let a = agent([1; 8], money(250));
        assert!(s.add_agent(&a, Effects::log("M1")).unwrap());
        assert!(!s.add_agent(&a, Effects::log("M1 again")).unwrap());
        let hold = || Operation::HoldMoney {
            msisdn: "+491710000001",
            amount: 250,
        };
        let step = |from: &[State], to, op| {
            s.step(&[1; 8], from, to, op, |_| {}, Effects::log("x"), 2)
                .unwrap()
        };
        assert!(matches!(
            step(&[State::Accepted], State::Prepared, hold()),
            Step::Done
        ));
        // The same step again finds the agent moved on: nothing is held twice.
        assert!(matches!(
            step(&[State::Accepted], State::Prepared, hold()),
            Step::Stale
        ));
        assert_eq!(s.account("+491710000001").unwrap().unwrap().held, 250);
        let debit = Operation::DebitMoney {
            msisdn: "+491710000001",
            amount: 250,
            peer: "OP2",
        };
        assert!(matches!(
            step(&[State::Prepared], State::Committing, debit),
            Step::Done
        ));
        let acc = s.account("+491710000001").unwrap().unwrap();
        assert_eq!((acc.balance, acc.held), (750, 0));
        let l = s.ledger().unwrap();
        assert_eq!((l.payable, l.receivable), (250, 0));
        assert!(l.balanced(), "{l:?}");
        // More than the balance: refused, nothing held, the agent where it was.
        let b = agent([2; 8], money(800));
        s.add_agent(&b, Effects::default()).unwrap();
        let r = s
            .step(
                &[2; 8],
                &[State::Accepted],
                State::Prepared,
                Operation::HoldMoney {
                    msisdn: "+491710000001",
                    amount: 800,
                },
                |_| {},
                Effects::default(),
                3,
            )
            .unwrap();
        assert!(matches!(r, Step::Refused(Refusal::InsufficientFunds)));
        assert_eq!(s.agent(&[2; 8]).unwrap().unwrap().state, State::Accepted);
        assert_eq!(s.account("+491710000001").unwrap().unwrap().held, 0);
        assert_eq!(s.log(&[1; 8]).unwrap().len(), 3);
        drop(s);
        let _ = std::fs::remove_file(&dir);
    }

    #[test]
    fn a_ticket_keeps_at_least_one_use() {
        let path = std::env::temp_dir().join(format!("simlab-op-tickets-{}", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let s = Store::open_path(&path).unwrap();
        s.add_ticket(&Ticket {
            id: "T-10".into(),
            owner: "+491710000001".into(),
            service: "transit".into(),
            uses: 10,
            held: 0,
            valid_until: 10_000,
        })
        .unwrap();
        let uses = |m| Goods::Uses {
            ticket: "T-10".into(),
            uses: m,
        };
        for (tref, m, ok) in [([3u8; 8], 10, false), ([4; 8], 3, true)] {
            s.add_agent(&agent(tref, uses(m)), Effects::default())
                .unwrap();
            let r = s
                .step(
                    &tref,
                    &[State::Accepted],
                    State::Prepared,
                    Operation::HoldUses {
                        id: "T-10",
                        owner: "+491710000001",
                        uses: m,
                    },
                    |_| {},
                    Effects::default(),
                    5,
                )
                .unwrap();
            assert_eq!(matches!(r, Step::Done), ok, "M = {m}");
        }
        s.step(
            &[4; 8],
            &[State::Prepared],
            State::Committing,
            Operation::DebitUses {
                id: "T-10",
                uses: 3,
            },
            |_| {},
            Effects::default(),
            6,
        )
        .unwrap();
        let t = s.ticket("T-10").unwrap().unwrap();
        assert_eq!((t.uses, t.held), (7, 0));
        drop(s);
        let _ = std::fs::remove_file(&path);
    }
}
