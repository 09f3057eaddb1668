//! A MeC server's store — SQLite (a file per server, the default) or PostgreSQL
//! (`--db postgres://…`) — with the partner table, the home side's subscribers, the visited
//! side's content providers, and the contracts of both sides with their state. Every state
//! change is one conditional UPDATE (`… WHERE status = ?`), so a replayed or concurrent result
//! changes nothing and is told so (409), and nothing is paid twice.
//!
//! Both backends run the same SQL: it is written for SQLite (`?N` placeholders, BLOB, INTEGER)
//! and spelled for PostgreSQL by [`pg_sql`] (`$N`, BYTEA, BIGINT); values and rows cross as
//! [`V`] and [`Cell`], so every query exists once.

use super::keys::SigningKey;
use super::{RequestType, join_request_types, parse_request_types};
use crate::db::Schema;
use crate::sql::{self, Backend, Cell, PgSchema, SqlError, V};
use std::fmt;
use std::path::Path;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

pub const SCHEMA: Schema = Schema {
    name: "MeC server",
    application_id: 0x534C_6D65,
    marker_table: "partners",
    migrations: &[V1],
    busy_timeout: Duration::from_secs(5),
};

const V1: &str = "
CREATE TABLE IF NOT EXISTS partners (
    name          TEXT PRIMARY KEY,
    url           TEXT NOT NULL,
    country       TEXT NOT NULL,
    country_code  TEXT NOT NULL,
    prefixes      TEXT NOT NULL,
    certificate   BLOB NOT NULL,
    request_types TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS subscribers (
    msisdn          TEXT PRIMARY KEY,
    public_key      BLOB NOT NULL,
    certificate     BLOB,
    payment_methods TEXT NOT NULL,
    delegated_key   BLOB NOT NULL,
    spent           INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS content_providers (
    id              TEXT PRIMARY KEY,
    payment_methods TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS contracts (
    id             BLOB NOT NULL,
    side           TEXT NOT NULL CHECK (side IN ('home', 'visited')),
    bytes          BLOB NOT NULL,
    peer           TEXT NOT NULL,
    msisdn         TEXT NOT NULL,
    request_type   TEXT NOT NULL,
    amount         INTEGER NOT NULL,
    currency       TEXT NOT NULL,
    payment_method TEXT,
    expires_at     INTEGER NOT NULL,
    status         TEXT NOT NULL,
    result         TEXT,
    authorization_ref BLOB,
    PRIMARY KEY (id, side)
);
CREATE UNIQUE INDEX IF NOT EXISTS contracts_authorization
    ON contracts (authorization_ref) WHERE authorization_ref IS NOT NULL;
";

/// Why the store could not answer.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database failed or cannot be used ([`SqlError::is_bad_input`]: the user's to fix).
    #[error(transparent)]
    Sql(#[from] SqlError),
    /// The name is taken already.
    #[error("{0} exists already")]
    Exists(String),
    /// A row holds what this build never writes.
    #[error("corrupt row: {0}")]
    Corrupt(String),
}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        StoreError::Sql(e.into())
    }
}

/// A row of the partner table (the seed's "roaming capability module").
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Partner {
    pub name: String,
    /// The partner's MeC server, `https://HOST:PORT`.
    pub url: String,
    pub country: String,
    pub country_code: String,
    pub prefixes: Vec<String>,
    /// Its peer TLS certificate, DER: the TLS link must present it and roam messages must
    /// verify with its key.
    pub certificate_der: Vec<u8>,
    pub request_types: Vec<RequestType>,
}

/// A subscriber on the home side.
#[derive(Clone, PartialEq, Eq)]
pub struct Subscriber {
    pub msisdn: String,
    /// The token's public key (uncompressed SEC1), which verifies its signatures.
    pub public_key: Vec<u8>,
    /// The seed-000 certificate of that key, for CMS (end-to-end signing).
    pub certificate_der: Option<Vec<u8>>,
    pub payment_methods: Vec<String>,
    /// PKCS#8 of the server-held key for delegated signing. Never printed.
    delegated_key: Vec<u8>,
    /// What the subscriber spent through approved payments, minor units.
    pub spent: u64,
}

impl fmt::Debug for Subscriber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Subscriber")
            .field("msisdn", &self.msisdn)
            .field("payment_methods", &self.payment_methods)
            .finish_non_exhaustive()
    }
}

impl Subscriber {
    pub fn delegated_key(&self) -> Result<SigningKey, StoreError> {
        SigningKey::from_pkcs8(&self.delegated_key, "delegated key")
            .map_err(|e| StoreError::Corrupt(e.to_string()))
    }
}

/// Which side of a contract this server is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    Home,
    Visited,
}

impl Side {
    fn as_str(self) -> &'static str {
        match self {
            Side::Home => "home",
            Side::Visited => "visited",
        }
    }
}

/// A contract as one side keeps it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ContractRow {
    pub id: [u8; 16],
    pub bytes: Vec<u8>,
    /// The other server: the home server on the visited side, and the other way round.
    pub peer: String,
    pub msisdn: String,
    pub request_type: RequestType,
    pub amount: u64,
    pub currency: String,
    pub payment_method: Option<String>,
    pub expires_at: u64,
    pub status: String,
    /// The JSON the side reports (the security result, the receipt).
    pub result: Option<String>,
    pub authorization: Option<[u8; 16]>,
}

const PG: PgSchema = PgSchema {
    version_table: "simlab_mec_schema",
    // Serialises MeC migrations between servers starting at once on one database.
    lock: 0x0053_494D_4C4D_4543,
};

/// The store of one MeC server.
pub struct Store {
    conn: Mutex<Backend>,
}

fn methods(s: String) -> Vec<String> {
    s.split(',')
        .filter(|m| !m.is_empty())
        .map(str::to_string)
        .collect()
}

fn contract_row(row: Vec<Cell>) -> Result<ContractRow, StoreError> {
    let mut c = row.into_iter();
    let mut next = || {
        c.next()
            .ok_or_else(|| StoreError::Corrupt("short contract row".into()))
    };
    let corrupt = |what: &str| StoreError::Corrupt(format!("contract {what}"));
    let id = next()?.blob()?;
    let bytes = next()?.blob()?;
    let peer = next()?.text()?;
    let msisdn = next()?.text()?;
    let rt = next()?.text()?;
    let amount = next()?.int()?;
    let currency = next()?.text()?;
    let payment_method = next()?.opt_text()?;
    let expires = next()?.int()?;
    let status = next()?.text()?;
    let result = next()?.opt_text()?;
    let auth = next()?.opt_blob()?;
    Ok(ContractRow {
        id: id.try_into().map_err(|_| corrupt("id"))?,
        bytes,
        peer,
        msisdn,
        request_type: RequestType::parse(&rt).ok_or_else(|| corrupt("request type"))?,
        amount: amount as u64,
        currency,
        payment_method,
        expires_at: expires as u64,
        status,
        result,
        authorization: auth
            .map(|a| a.try_into().map_err(|_| corrupt("authorization")))
            .transpose()?,
    })
}

impl Store {
    /// A SQLite file (created 0600 if missing).
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        Store::open_db(&path.to_string_lossy())
    }

    /// `postgres://…` for PostgreSQL (several MeC processes may share it), else a SQLite path.
    pub fn open_db(db: &str) -> Result<Store, StoreError> {
        Ok(Store {
            conn: Mutex::new(sql::open(db, &SCHEMA, &PG)?),
        })
    }

    fn conn(&self) -> MutexGuard<'_, Backend> {
        self.conn.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub fn add_partner(&self, p: &Partner) -> Result<(), StoreError> {
        let prefixes = p.prefixes.join(",");
        let types = join_request_types(&p.request_types);
        let n = self.conn().exec(
            "INSERT INTO partners VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) ON CONFLICT DO NOTHING",
            &[
                V::Text(&p.name),
                V::Text(&p.url),
                V::Text(&p.country),
                V::Text(&p.country_code),
                V::Text(&prefixes),
                V::Blob(&p.certificate_der),
                V::Text(&types),
            ],
        )?;
        if n == 0 {
            return Err(StoreError::Exists(format!("partner {:?}", p.name)));
        }
        Ok(())
    }

    /// Whether a partner of that name was there.
    pub fn remove_partner(&self, name: &str) -> Result<bool, StoreError> {
        Ok(self
            .conn()
            .exec("DELETE FROM partners WHERE name = ?1", &[V::Text(name)])?
            > 0)
    }

    pub fn partners(&self) -> Result<Vec<Partner>, StoreError> {
        let rows = self.conn().query(
            "SELECT name, url, country, country_code, prefixes, certificate, request_types
             FROM partners ORDER BY name",
            &[],
        )?;
        rows.into_iter()
            .map(|row| {
                let mut c = row.into_iter();
                let mut next = || {
                    c.next()
                        .ok_or_else(|| StoreError::Corrupt("short partner row".into()))
                };
                Ok(Partner {
                    name: next()?.text()?,
                    url: next()?.text()?,
                    country: next()?.text()?,
                    country_code: next()?.text()?,
                    prefixes: methods(next()?.text()?),
                    certificate_der: next()?.blob()?,
                    request_types: parse_request_types(&next()?.text()?)
                        .map_err(StoreError::Corrupt)?,
                })
            })
            .collect()
    }

    /// Adds a subscriber with a fresh server-held key for delegated signing.
    pub fn add_subscriber(
        &self,
        msisdn: &str,
        public_key: &[u8],
        certificate_der: Option<&[u8]>,
        payment_methods: &[String],
    ) -> Result<(), StoreError> {
        let (_, key) = SigningKey::generate();
        let methods = payment_methods.join(",");
        let n = self.conn().exec(
            "INSERT INTO subscribers (msisdn, public_key, certificate, payment_methods,
             delegated_key) VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT DO NOTHING",
            &[
                V::Text(msisdn),
                V::Blob(public_key),
                V::OptBlob(certificate_der),
                V::Text(&methods),
                V::Blob(&key),
            ],
        )?;
        if n == 0 {
            return Err(StoreError::Exists(format!("subscriber {msisdn}")));
        }
        Ok(())
    }

    pub fn subscriber(&self, msisdn: &str) -> Result<Option<Subscriber>, StoreError> {
        let rows = self.conn().query(
            "SELECT msisdn, public_key, certificate, payment_methods, delegated_key, spent
             FROM subscribers WHERE msisdn = ?1",
            &[V::Text(msisdn)],
        )?;
        let Some(row) = rows.into_iter().next() else {
            return Ok(None);
        };
        let mut c = row.into_iter();
        let mut next = || {
            c.next()
                .ok_or_else(|| StoreError::Corrupt("short subscriber row".into()))
        };
        Ok(Some(Subscriber {
            msisdn: next()?.text()?,
            public_key: next()?.blob()?,
            certificate_der: next()?.opt_blob()?,
            payment_methods: methods(next()?.text()?),
            delegated_key: next()?.blob()?,
            spent: next()?.int()? as u64,
        }))
    }

    pub fn add_cp(&self, id: &str, payment_methods: &[String]) -> Result<(), StoreError> {
        let methods = payment_methods.join(",");
        let n = self.conn().exec(
            "INSERT INTO content_providers VALUES (?1, ?2) ON CONFLICT DO NOTHING",
            &[V::Text(id), V::Text(&methods)],
        )?;
        if n == 0 {
            return Err(StoreError::Exists(format!("content provider {id:?}")));
        }
        Ok(())
    }

    /// The payment methods a CP accepts; `None` for an unknown CP.
    pub fn cp(&self, id: &str) -> Result<Option<Vec<String>>, StoreError> {
        let rows = self.conn().query(
            "SELECT payment_methods FROM content_providers WHERE id = ?1",
            &[V::Text(id)],
        )?;
        rows.into_iter()
            .next()
            .and_then(|r| r.into_iter().next())
            .map(|c| c.text().map(methods))
            .transpose()
            .map_err(StoreError::from)
    }

    /// Records a contract on `side`; false when that side has it already.
    pub fn insert_contract(&self, side: Side, c: &ContractRow) -> Result<bool, StoreError> {
        Ok(self.conn().exec(
            "INSERT INTO contracts (id, side, bytes, peer, msisdn, request_type, amount, currency,
             payment_method, expires_at, status, result, authorization_ref)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)
             ON CONFLICT DO NOTHING",
            &[
                V::Blob(&c.id),
                V::Text(side.as_str()),
                V::Blob(&c.bytes),
                V::Text(&c.peer),
                V::Text(&c.msisdn),
                V::Text(c.request_type.as_str()),
                V::Int(c.amount as i64),
                V::Text(&c.currency),
                V::OptText(c.payment_method.as_deref()),
                V::Int(c.expires_at as i64),
                V::Text(&c.status),
                V::OptText(c.result.as_deref()),
                V::OptBlob(c.authorization.as_ref().map(|a| &a[..])),
            ],
        )? > 0)
    }

    pub fn contract(&self, side: Side, id: &[u8; 16]) -> Result<Option<ContractRow>, StoreError> {
        self.contract_where(side, "id = ?2", &id[..])
    }

    pub fn contract_by_authorization(
        &self,
        side: Side,
        authorization: &[u8; 16],
    ) -> Result<Option<ContractRow>, StoreError> {
        self.contract_where(side, "authorization_ref = ?2", &authorization[..])
    }

    fn contract_where(
        &self,
        side: Side,
        condition: &str,
        key: &[u8],
    ) -> Result<Option<ContractRow>, StoreError> {
        let rows = self.conn().query(
            &format!(
                "SELECT id, bytes, peer, msisdn, request_type, amount, currency,
                 payment_method, expires_at, status, result, authorization_ref
                 FROM contracts WHERE side = ?1 AND {condition}"
            ),
            &[V::Text(side.as_str()), V::Blob(key)],
        )?;
        rows.into_iter().next().map(contract_row).transpose()
    }

    /// Moves a contract from `from` to `to` (with its result and authorization), only if it
    /// is still in `from`: false when another request moved it first.
    pub fn transition(
        &self,
        side: Side,
        id: &[u8; 16],
        from: &str,
        to: &str,
        result: Option<&str>,
        authorization: Option<&[u8; 16]>,
    ) -> Result<bool, StoreError> {
        Ok(self.conn().exec(
            "UPDATE contracts SET status = ?4, result = COALESCE(?5, result),
             authorization_ref = COALESCE(?6, authorization_ref)
             WHERE side = ?1 AND id = ?2 AND status = ?3",
            &[
                V::Text(side.as_str()),
                V::Blob(id),
                V::Text(from),
                V::Text(to),
                V::OptText(result),
                V::OptBlob(authorization.map(|a| &a[..])),
            ],
        )? > 0)
    }

    /// Step 21 on the home side: the authorization is spent and, when approved, the amount
    /// booked to the subscriber, in one transaction; false when it was spent before.
    pub fn settle(
        &self,
        id: &[u8; 16],
        approved: bool,
        result: &str,
        msisdn: &str,
        amount: u64,
    ) -> Result<bool, StoreError> {
        let to = if approved { "paid" } else { "declined" };
        self.conn().transaction(|tx| {
            let n = tx.exec(
                "UPDATE contracts SET status = ?2, result = ?3
                 WHERE side = 'home' AND id = ?1 AND status = 'authorized'",
                &[V::Blob(id), V::Text(to), V::Text(result)],
            )?;
            if n == 0 {
                return Ok(false);
            }
            if approved {
                tx.exec(
                    "UPDATE subscribers SET spent = spent + ?2 WHERE msisdn = ?1",
                    &[V::Text(msisdn), V::Int(amount as i64)],
                )?;
            }
            Ok(true)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp(name: &str) -> std::path::PathBuf {
        let p = std::env::temp_dir().join(format!("simlab-mec-{name}-{}.db", std::process::id()));
        let _ = std::fs::remove_file(&p);
        p
    }

    #[test]
    fn partners_subscribers_cps() {
        let path = temp("store");
        let s = Store::open(&path).unwrap();
        let p = Partner {
            name: "mec-no".into(),
            url: "https://127.0.0.1:1".into(),
            country: "NO".into(),
            country_code: "47".into(),
            prefixes: vec!["9".into(), "4".into()],
            certificate_der: vec![1, 2],
            request_types: RequestType::ALL.to_vec(),
        };
        s.add_partner(&p).unwrap();
        assert!(matches!(s.add_partner(&p), Err(StoreError::Exists(_))));
        assert_eq!(s.partners().unwrap(), [p]);
        assert!(s.remove_partner("mec-no").unwrap());
        assert!(!s.remove_partner("mec-no").unwrap());
        s.add_subscriber("+4791234567", &[4; 65], None, &["card".into()])
            .unwrap();
        let sub = s.subscriber("+4791234567").unwrap().unwrap();
        assert_eq!(sub.payment_methods, ["card"]);
        sub.delegated_key().unwrap();
        assert!(!format!("{sub:?}").contains("delegated_key"));
        assert!(s.subscriber("+4700000000").unwrap().is_none());
        s.add_cp("cp-1", &["card".into(), "bank".into()]).unwrap();
        assert_eq!(s.cp("cp-1").unwrap().unwrap(), ["card", "bank"]);
        assert!(s.cp("cp-2").unwrap().is_none());
        drop(s);
        let _ = std::fs::remove_file(&path);
    }

    #[test]
    fn contracts_move_once() {
        let path = temp("contracts");
        let s = Store::open(&path).unwrap();
        let row = ContractRow {
            id: [9; 16],
            bytes: vec![1],
            peer: "mec-se".into(),
            msisdn: "+4791234567".into(),
            request_type: RequestType::Payment,
            amount: 100,
            currency: "SEK".into(),
            payment_method: Some("card".into()),
            expires_at: 10,
            status: "pending".into(),
            result: None,
            authorization: None,
        };
        s.add_subscriber("+4791234567", &[4; 65], None, &[])
            .unwrap();
        assert!(s.insert_contract(Side::Home, &row).unwrap());
        assert!(!s.insert_contract(Side::Home, &row).unwrap());
        assert!(s.insert_contract(Side::Visited, &row).unwrap());
        let auth = [7; 16];
        assert!(
            s.transition(
                Side::Home,
                &row.id,
                "pending",
                "authorized",
                Some("{}"),
                Some(&auth)
            )
            .unwrap()
        );
        assert!(
            !s.transition(Side::Home, &row.id, "pending", "authorized", None, None)
                .unwrap()
        );
        let got = s
            .contract_by_authorization(Side::Home, &auth)
            .unwrap()
            .unwrap();
        assert_eq!(got.status, "authorized");
        assert!(s.settle(&row.id, true, "{}", &row.msisdn, 100).unwrap());
        assert!(!s.settle(&row.id, true, "{}", &row.msisdn, 100).unwrap());
        assert_eq!(s.subscriber(&row.msisdn).unwrap().unwrap().spent, 100);
        assert_eq!(
            s.contract(Side::Visited, &row.id).unwrap().unwrap().status,
            "pending"
        );
        drop(s);
        let _ = std::fs::remove_file(&path);
    }
}
