//! A MeC server's store (SQLite, one file per server): the partner table, the home side's
//! subscribers, the visited side's content providers, and the contracts of both sides with
//! their state. Every state change is one conditional UPDATE (`… WHERE status = ?`), so a
//! replayed or concurrent result changes nothing and is told so (409), and nothing is paid
//! twice.

use super::keys::SigningKey;
use super::{RequestType, join_request_types, parse_request_types};
use crate::db::{self, DbError, Schema};
use rusqlite::{Connection, OptionalExtension, params};
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
    authorization  BLOB,
    PRIMARY KEY (id, side)
);
CREATE UNIQUE INDEX IF NOT EXISTS contracts_authorization
    ON contracts (authorization) WHERE authorization IS NOT NULL;
";

/// Why the store could not answer.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The file could not be opened as this store (the user's to fix: exit code 2).
    #[error("{0}")]
    Open(#[from] DbError),
    /// SQLite failed (I/O, locking).
    #[error("database: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// The name is taken already.
    #[error("{0} exists already")]
    Exists(String),
    /// A row holds what this build never writes.
    #[error("corrupt row: {0}")]
    Corrupt(String),
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

/// The store of one MeC server.
pub struct Store {
    conn: Mutex<Connection>,
}

fn methods(s: String) -> Vec<String> {
    s.split(',')
        .filter(|m| !m.is_empty())
        .map(str::to_string)
        .collect()
}

impl Store {
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        Ok(Store {
            conn: Mutex::new(db::open(path, &SCHEMA)?),
        })
    }

    fn conn(&self) -> MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub fn add_partner(&self, p: &Partner) -> Result<(), StoreError> {
        let n = self.conn().execute(
            "INSERT INTO partners VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) ON CONFLICT DO NOTHING",
            params![
                p.name,
                p.url,
                p.country,
                p.country_code,
                p.prefixes.join(","),
                p.certificate_der,
                join_request_types(&p.request_types)
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
            .execute("DELETE FROM partners WHERE name = ?1", [name])?
            > 0)
    }

    pub fn partners(&self) -> Result<Vec<Partner>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn.prepare(
            "SELECT name, url, country, country_code, prefixes, certificate, request_types
             FROM partners ORDER BY name",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, String>(3)?,
                r.get::<_, String>(4)?,
                r.get::<_, Vec<u8>>(5)?,
                r.get::<_, String>(6)?,
            ))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (name, url, country, country_code, prefixes, certificate_der, types) = row?;
            out.push(Partner {
                name,
                url,
                country,
                country_code,
                prefixes: methods(prefixes),
                certificate_der,
                request_types: parse_request_types(&types).map_err(StoreError::Corrupt)?,
            });
        }
        Ok(out)
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
        let n = self.conn().execute(
            "INSERT INTO subscribers (msisdn, public_key, certificate, payment_methods,
             delegated_key) VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT DO NOTHING",
            params![
                msisdn,
                public_key,
                certificate_der,
                payment_methods.join(","),
                key
            ],
        )?;
        if n == 0 {
            return Err(StoreError::Exists(format!("subscriber {msisdn}")));
        }
        Ok(())
    }

    pub fn subscriber(&self, msisdn: &str) -> Result<Option<Subscriber>, StoreError> {
        Ok(self
            .conn()
            .query_row(
                "SELECT msisdn, public_key, certificate, payment_methods, delegated_key, spent
                 FROM subscribers WHERE msisdn = ?1",
                [msisdn],
                |r| {
                    Ok(Subscriber {
                        msisdn: r.get(0)?,
                        public_key: r.get(1)?,
                        certificate_der: r.get(2)?,
                        payment_methods: methods(r.get(3)?),
                        delegated_key: r.get(4)?,
                        spent: r.get::<_, i64>(5)? as u64,
                    })
                },
            )
            .optional()?)
    }

    pub fn add_cp(&self, id: &str, payment_methods: &[String]) -> Result<(), StoreError> {
        let n = self.conn().execute(
            "INSERT INTO content_providers VALUES (?1, ?2) ON CONFLICT DO NOTHING",
            params![id, payment_methods.join(",")],
        )?;
        if n == 0 {
            return Err(StoreError::Exists(format!("content provider {id:?}")));
        }
        Ok(())
    }

    /// The payment methods a CP accepts; `None` for an unknown CP.
    pub fn cp(&self, id: &str) -> Result<Option<Vec<String>>, StoreError> {
        Ok(self
            .conn()
            .query_row(
                "SELECT payment_methods FROM content_providers WHERE id = ?1",
                [id],
                |r| r.get::<_, String>(0),
            )
            .optional()?
            .map(methods))
    }

    /// Records a contract on `side`; false when that side has it already.
    pub fn insert_contract(&self, side: Side, c: &ContractRow) -> Result<bool, StoreError> {
        Ok(self.conn().execute(
            "INSERT INTO contracts (id, side, bytes, peer, msisdn, request_type, amount, currency,
             payment_method, expires_at, status, result, authorization)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)
             ON CONFLICT DO NOTHING",
            params![
                &c.id[..],
                side.as_str(),
                c.bytes,
                c.peer,
                c.msisdn,
                c.request_type.as_str(),
                c.amount as i64,
                c.currency,
                c.payment_method,
                c.expires_at as i64,
                c.status,
                c.result,
                c.authorization.as_ref().map(|a| &a[..]),
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
        self.contract_where(side, "authorization = ?2", &authorization[..])
    }

    fn contract_where(
        &self,
        side: Side,
        condition: &str,
        key: &[u8],
    ) -> Result<Option<ContractRow>, StoreError> {
        let row = self
            .conn()
            .query_row(
                &format!(
                    "SELECT id, bytes, peer, msisdn, request_type, amount, currency,
                     payment_method, expires_at, status, result, authorization
                     FROM contracts WHERE side = ?1 AND {condition}"
                ),
                params![side.as_str(), key],
                |r| {
                    Ok((
                        r.get::<_, Vec<u8>>(0)?,
                        r.get::<_, Vec<u8>>(1)?,
                        r.get::<_, String>(2)?,
                        r.get::<_, String>(3)?,
                        r.get::<_, String>(4)?,
                        r.get::<_, i64>(5)?,
                        r.get::<_, String>(6)?,
                        r.get::<_, Option<String>>(7)?,
                        r.get::<_, i64>(8)?,
                        r.get::<_, String>(9)?,
                        r.get::<_, Option<String>>(10)?,
                        r.get::<_, Option<Vec<u8>>>(11)?,
                    ))
                },
            )
            .optional()?;
        let Some((
            id,
            bytes,
            peer,
            msisdn,
            rt,
            amount,
            currency,
            method,
            expires,
            status,
            result,
            auth,
        )) = row
        else {
            return Ok(None);
        };
        let corrupt = |what: &str| StoreError::Corrupt(format!("contract {what}"));
        Ok(Some(ContractRow {
            id: id.try_into().map_err(|_| corrupt("id"))?,
            bytes,
            peer,
            msisdn,
            request_type: RequestType::parse(&rt).ok_or_else(|| corrupt("request type"))?,
            amount: amount as u64,
            currency,
            payment_method: method,
            expires_at: expires as u64,
            status,
            result,
            authorization: auth
                .map(|a| a.try_into().map_err(|_| corrupt("authorization")))
                .transpose()?,
        }))
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
        Ok(self.conn().execute(
            "UPDATE contracts SET status = ?4, result = COALESCE(?5, result),
             authorization = COALESCE(?6, authorization)
             WHERE side = ?1 AND id = ?2 AND status = ?3",
            params![
                side.as_str(),
                &id[..],
                from,
                to,
                result,
                authorization.map(|a| &a[..])
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
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let to = if approved { "paid" } else { "declined" };
        let n = tx.execute(
            "UPDATE contracts SET status = ?2, result = ?3
             WHERE side = 'home' AND id = ?1 AND status = 'authorized'",
            params![&id[..], to, result],
        )?;
        if n == 0 {
            return Ok(false);
        }
        if approved {
            tx.execute(
                "UPDATE subscribers SET spent = spent + ?2 WHERE msisdn = ?1",
                params![msisdn, amount as i64],
            )?;
        }
        tx.commit()?;
        Ok(true)
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
