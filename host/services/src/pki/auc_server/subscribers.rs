//! The AuC's subscriber database: IMSI → Ki, OPc, algorithm, AMF and the last SQN issued, in
//! SQLite. The file holds every subscriber's Ki: it is created with mode 0600, and no query
//! here ever returns a key to the caller — only vectors computed from it.

use crate::db::{self, DbError, Schema};
use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};
use simlab_applet::algo::{self, Algorithm};
use simlab_card::auc;
use simlab_card::hex;
use simlab_card::profile::Profile;
use std::fmt;
use std::path::Path;
use std::time::Duration;

/// The most triplets one request gets (the token accepts 2–4 RANDs).
pub const MAX_TRIPLETS: usize = 4;
/// IND is the low 5 bits of SQN (TS 33.102 C.3.2, as the card model).
const IND_BITS: u32 = 5;
/// SQN is 48 bits.
const SQN_MASK: u64 = (1 << 48) - 1;
/// How long a request waits for another that holds the write lock.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// The subscriber file (application id "SLau"). Version 1 is the schema of the unversioned
/// files before it.
pub const SCHEMA: Schema = Schema {
    name: "AuC subscriber",
    application_id: 0x534C_6175,
    marker_table: "subscribers",
    migrations: &["CREATE TABLE IF NOT EXISTS subscribers (
        imsi      TEXT PRIMARY KEY,
        algorithm TEXT NOT NULL,
        ki        BLOB NOT NULL,
        opc       BLOB,
        amf       BLOB NOT NULL,
        sqn       INTEGER NOT NULL,
        mnc_len   INTEGER NOT NULL
    );"],
    busy_timeout: BUSY_TIMEOUT,
};

/// Why the AuC could not answer.
#[derive(Debug)]
pub enum AucError {
    /// No subscriber with this IMSI.
    UnknownImsi(String),
    /// The subscriber's algorithm cannot do what was asked (a quintet from a 2G SIM).
    NotSupported(String),
    /// AUTS did not carry a valid MAC-S: not the subscriber's card, or altered.
    ResyncRejected,
    /// A bad value in an import or request.
    BadInput(String),
    /// The database failed.
    Database(String),
    /// The database file cannot be used (see [`DbError::is_bad_input`]).
    Open(DbError),
}

impl fmt::Display for AucError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AucError::UnknownImsi(imsi) => write!(f, "no subscriber with IMSI {imsi}"),
            AucError::NotSupported(why) => f.write_str(why),
            AucError::ResyncRejected => f.write_str("AUTS carries an invalid MAC-S"),
            AucError::BadInput(why) => f.write_str(why),
            AucError::Database(why) => write!(f, "subscriber database: {why}"),
            AucError::Open(e) => write!(f, "subscriber database: {e}"),
        }
    }
}

impl std::error::Error for AucError {}

impl From<rusqlite::Error> for AucError {
    fn from(e: rusqlite::Error) -> Self {
        AucError::Database(e.to_string())
    }
}

/// A subscriber as the AuC holds it. Debug output leaves the keys out.
#[derive(Clone)]
pub struct Subscriber {
    pub imsi: String,
    pub algorithm: Algorithm,
    pub ki: [u8; 16],
    pub opc: Option<[u8; 16]>,
    pub amf: [u8; 2],
    /// The highest SQN issued (or accepted by the card, at import).
    pub sqn: u64,
    /// Digits of the MNC in the IMSI (2 or 3), for the IMPI.
    pub mnc_len: u8,
}

impl fmt::Debug for Subscriber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Subscriber")
            .field("imsi", &self.imsi)
            .field("algorithm", &self.algorithm)
            .finish_non_exhaustive()
    }
}

impl Subscriber {
    /// The subscriber of a card profile.
    pub fn from_profile(p: &Profile) -> Subscriber {
        Subscriber {
            imsi: p.imsi.clone(),
            algorithm: p.algorithm,
            ki: p.ki,
            opc: p.opc,
            amf: p.amf,
            sqn: p.sqn,
            mnc_len: if p.plmn[1] >> 4 == 0xF { 2 } else { 3 },
        }
    }

    /// The IMS private identity of TS 23.003 13.3:
    /// `<IMSI>@ims.mnc<MNC, 3 digits>.mcc<MCC>.3gppnetwork.org`.
    pub fn impi(&self) -> String {
        let mcc = &self.imsi[..3];
        let mnc = &self.imsi[3..3 + self.mnc_len as usize];
        format!("{}@ims.mnc{:0>3}.mcc{mcc}.3gppnetwork.org", self.imsi, mnc)
    }
}

/// A GSM triplet.
#[derive(Clone, Debug)]
pub struct Triplet {
    pub rand: [u8; 16],
    pub sres: [u8; 4],
    pub kc: [u8; 8],
}

/// A UMTS quintet.
#[derive(Clone, Debug)]
pub struct Quintet {
    pub rand: [u8; 16],
    pub autn: [u8; 16],
    pub xres: Vec<u8>,
    pub ck: [u8; 16],
    pub ik: [u8; 16],
}

/// The subscriber database.
pub struct SubscriberDb {
    pool: db::Pool,
}

/// The most connections one AuC process holds.
const MAX_CONNECTIONS: u32 = 8;

impl SubscriberDb {
    /// Opens (creating if needed, migrating if older) the database at `path`.
    pub fn open(path: &Path) -> Result<SubscriberDb, AucError> {
        let pool = db::pool(path, &SCHEMA, MAX_CONNECTIONS).map_err(AucError::Open)?;
        Ok(SubscriberDb { pool })
    }

    /// A connection of the pool; every method is one statement or one transaction on it, so
    /// concurrent requests need no lock of their own (SQN updates serialise on SQLite's
    /// write lock, `IMMEDIATE`).
    fn conn(&self) -> Result<db::Pooled, AucError> {
        self.pool
            .get()
            .map_err(|e| AucError::Database(format!("no connection free: {e}")))
    }

    /// Adds or replaces subscribers. A replaced subscriber keeps the higher of its stored and
    /// imported SQN, so a re-import never makes the AuC reuse sequence numbers.
    pub fn import(&self, subscribers: &[Subscriber]) -> Result<usize, AucError> {
        let mut conn = self.conn()?;
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        for s in subscribers {
            if s.algorithm == Algorithm::Milenage && s.opc.is_none() {
                return Err(AucError::BadInput(format!(
                    "{}: milenage needs OPc",
                    s.imsi
                )));
            }
            tx.execute(
                "INSERT INTO subscribers (imsi, algorithm, ki, opc, amf, sqn, mnc_len)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
                 ON CONFLICT (imsi) DO UPDATE SET algorithm = ?2, ki = ?3, opc = ?4, amf = ?5,
                    sqn = max(sqn, ?6), mnc_len = ?7",
                params![
                    s.imsi,
                    s.algorithm.name(),
                    &s.ki[..],
                    s.opc.as_ref().map(|o| &o[..]),
                    &s.amf[..],
                    (s.sqn & SQN_MASK) as i64,
                    s.mnc_len,
                ],
            )?;
        }
        tx.commit()?;
        Ok(subscribers.len())
    }

    /// IMSI, algorithm and SQN of every subscriber (never keys).
    pub fn list(&self) -> Result<Vec<(String, String, u64)>, AucError> {
        let conn = self.conn()?;
        let mut stmt =
            conn.prepare("SELECT imsi, algorithm, sqn FROM subscribers ORDER BY imsi")?;
        let rows = stmt.query_map([], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get::<_, i64>(2)? as u64))
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn load(conn: &Connection, imsi: &str) -> Result<Subscriber, AucError> {
        let row = conn
            .query_row(
                "SELECT algorithm, ki, opc, amf, sqn, mnc_len FROM subscribers WHERE imsi = ?1",
                [imsi],
                |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        r.get::<_, Vec<u8>>(1)?,
                        r.get::<_, Option<Vec<u8>>>(2)?,
                        r.get::<_, Vec<u8>>(3)?,
                        r.get::<_, i64>(4)?,
                        r.get::<_, u8>(5)?,
                    ))
                },
            )
            .optional()?
            .ok_or_else(|| AucError::UnknownImsi(imsi.to_string()))?;
        let corrupt = |what: &str| AucError::Database(format!("{imsi}: stored {what} is corrupt"));
        let (alg, ki, opc, amf, sqn, mnc_len) = row;
        Ok(Subscriber {
            imsi: imsi.to_string(),
            algorithm: Algorithm::from_name(&alg).ok_or_else(|| corrupt("algorithm"))?,
            ki: ki.try_into().map_err(|_| corrupt("Ki"))?,
            opc: opc
                .map(|o| o.try_into().map_err(|_| corrupt("OPc")))
                .transpose()?,
            amf: amf.try_into().map_err(|_| corrupt("AMF"))?,
            sqn: sqn as u64,
            mnc_len,
        })
    }

    /// `count` fresh triplets (RANDs from the OS's CSPRNG, all different).
    pub fn triplets(&self, imsi: &str, count: usize) -> Result<Vec<Triplet>, AucError> {
        if !(1..=MAX_TRIPLETS).contains(&count) {
            return Err(AucError::BadInput(format!(
                "count must be 1 to {MAX_TRIPLETS}"
            )));
        }
        let s = Self::load(&*self.conn()?, imsi)?;
        let mut out: Vec<Triplet> = Vec::with_capacity(count);
        while out.len() < count {
            let rand = simlab_card::random::bytes::<16>()
                .map_err(|e| AucError::Database(e.to_string()))?;
            if out.iter().any(|t| t.rand == rand) {
                continue;
            }
            let v = auc::gsm(s.algorithm, &s.ki, s.opc.as_ref(), &rand).ok_or_else(|| {
                AucError::NotSupported(format!("{imsi}: the keys cannot compute a triplet"))
            })?;
            out.push(Triplet {
                rand,
                sres: v.sres,
                kc: v.kc,
            });
        }
        Ok(out)
    }

    /// One fresh quintet with the next SQN, and the IMPI. With `resync` (RAND, AUTS) the
    /// AuC first checks MAC-S and takes the card's SQN as its own (TS 33.102 6.3.5).
    pub fn quintet(
        &self,
        imsi: &str,
        resync: Option<(&[u8; 16], &[u8; 14])>,
    ) -> Result<(Quintet, String), AucError> {
        let mut conn = self.conn()?;
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let s = Self::load(&tx, imsi)?;
        if !s.algorithm.is_3g() {
            return Err(AucError::NotSupported(format!(
                "{imsi} runs {} (2G): it has no quintets; use the gsm path",
                s.algorithm.name()
            )));
        }
        let mut last = s.sqn;
        if let Some((rand, auts)) = resync {
            let probe = algo::run_3g(s.algorithm, &s.ki, s.opc.as_ref(), rand, &[0; 6], &[0, 0])
                .ok_or_else(|| AucError::NotSupported("keys cannot compute AK*".into()))?;
            let sqn_ms: [u8; 6] = core::array::from_fn(|i| auts[i] ^ probe.ak_star[i]);
            let check = algo::run_3g(s.algorithm, &s.ki, s.opc.as_ref(), rand, &sqn_ms, &[0, 0])
                .ok_or(AucError::ResyncRejected)?;
            if !ct_eq(&check.mac_s, &auts[6..]) {
                return Err(AucError::ResyncRejected);
            }
            let mut be = [0u8; 8];
            be[2..].copy_from_slice(&sqn_ms);
            last = last.max(u64::from_be_bytes(be));
        }
        // Next SEQ, IND 0: fresh for the card's window whatever slot it last used.
        let next = (((last >> IND_BITS) + 1) << IND_BITS) & SQN_MASK;
        tx.execute(
            "UPDATE subscribers SET sqn = ?1 WHERE imsi = ?2",
            params![next as i64, imsi],
        )?;
        tx.commit()?;
        let sqn: [u8; 6] = next.to_be_bytes()[2..].try_into().unwrap_or([0; 6]);
        let rand =
            simlab_card::random::bytes::<16>().map_err(|e| AucError::Database(e.to_string()))?;
        let v = auc::umts(s.algorithm, &s.ki, s.opc.as_ref(), &rand, &sqn, &s.amf)
            .ok_or_else(|| AucError::NotSupported(format!("{imsi}: keys cannot compute AKA")))?;
        Ok((
            Quintet {
                rand,
                autn: v.autn,
                xres: v.aka.res().to_vec(),
                ck: v.aka.ck,
                ik: v.aka.ik,
            },
            s.impi(),
        ))
    }
}

fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

impl Triplet {
    pub fn to_message(&self) -> crate::pki::messages::Triplet {
        crate::pki::messages::Triplet {
            rand: hex::encode(&self.rand),
            sres: hex::encode(&self.sres),
            kc: hex::encode(&self.kc),
        }
    }
}

impl Quintet {
    pub fn to_message(&self) -> crate::pki::messages::Quintet {
        crate::pki::messages::Quintet {
            rand: hex::encode(&self.rand),
            autn: hex::encode(&self.autn),
            xres: hex::encode(&self.xres),
            ck: hex::encode(&self.ck),
            ik: hex::encode(&self.ik),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp(name: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("simlab-auc-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join(name);
        let _ = std::fs::remove_file(&p);
        p
    }

    fn milenage() -> Subscriber {
        Subscriber {
            imsi: "001010000000042".into(),
            algorithm: Algorithm::Milenage,
            ki: [0x8e; 16],
            opc: Some([0x11; 16]),
            amf: [0x80, 0],
            sqn: 0x20,
            mnc_len: 2,
        }
    }

    #[test]
    fn concurrent_quintets_through_the_pool_never_share_an_sqn() {
        let path = temp("concurrent.db");
        let db = SubscriberDb::open(&path).unwrap();
        db.import(&[milenage()]).unwrap();
        const THREADS: u64 = 4;
        const EACH: u64 = 10;
        std::thread::scope(|scope| {
            for _ in 0..THREADS {
                scope.spawn(|| {
                    for _ in 0..EACH {
                        db.quintet("001010000000042", None).unwrap();
                    }
                });
            }
        });
        // Every quintet advanced SEQ by one: no two read the same SQN (a lost update would
        // leave the counter behind).
        let start = milenage().sqn >> IND_BITS;
        let sqn = db.list().unwrap()[0].2;
        assert_eq!(sqn, (start + THREADS * EACH) << IND_BITS);
    }

    #[test]
    fn vectors_sqn_and_privacy() {
        let path = temp("subs.db");
        let db = SubscriberDb::open(&path).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        db.import(&[milenage()]).unwrap();
        let t = db.triplets("001010000000042", 3).unwrap();
        assert_eq!(t.len(), 3);
        let s = milenage();
        for x in &t {
            let v = auc::gsm(s.algorithm, &s.ki, s.opc.as_ref(), &x.rand).unwrap();
            assert_eq!((v.sres, v.kc), (x.sres, x.kc));
        }
        assert!(matches!(
            db.triplets("001019999999999", 2),
            Err(AucError::UnknownImsi(_))
        ));
        let (q1, impi) = db.quintet("001010000000042", None).unwrap();
        assert_eq!(impi, "001010000000042@ims.mnc001.mcc001.3gppnetwork.org");
        let (q2, _) = db.quintet("001010000000042", None).unwrap();
        assert_ne!(q1.autn, q2.autn);
        assert_eq!(db.list().unwrap()[0].2, 0x60);
        // A re-import with an older SQN keeps the newer one.
        db.import(&[milenage()]).unwrap();
        assert_eq!(db.list().unwrap()[0].2, 0x60);
        assert!(format!("{s:?}").find("ki").is_none());
    }

    #[test]
    fn resync_takes_the_cards_sqn_only_with_a_valid_mac() {
        let path = temp("resync.db");
        let db = SubscriberDb::open(&path).unwrap();
        db.import(&[milenage()]).unwrap();
        let s = milenage();
        let rand = [7u8; 16];
        // The card says its SQN is 0x1000: AUTS = (SQN_MS xor AK*) ‖ MAC-S.
        let sqn_ms = [0, 0, 0, 0, 0x10, 0];
        let v = algo::run_3g(s.algorithm, &s.ki, s.opc.as_ref(), &rand, &sqn_ms, &[0, 0]).unwrap();
        let mut auts = [0u8; 14];
        for i in 0..6 {
            auts[i] = sqn_ms[i] ^ v.ak_star[i];
        }
        auts[6..].copy_from_slice(&v.mac_s);
        let mut forged = auts;
        forged[13] ^= 1;
        assert!(matches!(
            db.quintet(&s.imsi, Some((&rand, &forged))),
            Err(AucError::ResyncRejected)
        ));
        db.quintet(&s.imsi, Some((&rand, &auts))).unwrap();
        assert_eq!(db.list().unwrap()[0].2, 0x1020);
    }
}
