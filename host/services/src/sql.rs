//! One store, two databases: SQLite (a file, the default) or PostgreSQL (`postgres://…`, for
//! several server processes on one database). The services' SQL is written once, in SQLite's
//! spelling (`?N` placeholders, BLOB, INTEGER), and spelled for PostgreSQL by [`pg_sql`]
//! (`$N`, BYTEA, BIGINT); values and rows cross as [`V`] and [`Cell`], so every query exists
//! once and both backends are tested by the same code.

use crate::db::{self, DbError, Schema};
use rusqlite::Connection;
use std::path::Path;

/// Why the database could not answer.
#[derive(Debug, thiserror::Error)]
pub enum SqlError {
    /// The file could not be opened as this store (the user's to fix: exit code 2).
    #[error("{0}")]
    Open(#[from] DbError),
    /// SQLite failed (I/O, locking).
    #[error("database: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// PostgreSQL failed (connection, query).
    #[error("PostgreSQL: {0}")]
    Postgres(#[from] postgres::Error),
    /// A row holds what this build never writes.
    #[error("corrupt row: {0}")]
    Corrupt(String),
    /// The PostgreSQL database was migrated by a newer simlab (the user's to fix).
    #[error(
        "the PostgreSQL database has {what} schema version {found}, newer than this simlab \
         knows ({known}); use the simlab that migrated it"
    )]
    TooNew {
        what: &'static str,
        found: i64,
        known: i64,
    },
    /// A `postgres://` URL that does not parse (the user's to fix).
    #[error("not a PostgreSQL URL: {0}")]
    BadUrl(String),
}

impl SqlError {
    /// Whether the user can fix it by naming another database (exit code 2).
    pub fn is_bad_input(&self) -> bool {
        match self {
            SqlError::Open(e) => e.is_bad_input(),
            SqlError::TooNew { .. } | SqlError::BadUrl(_) => true,
            _ => false,
        }
    }
}

/// A value bound to a query.
#[derive(Clone, Copy, Debug)]
pub enum V<'a> {
    Text(&'a str),
    Blob(&'a [u8]),
    Int(i64),
    OptText(Option<&'a str>),
    OptBlob(Option<&'a [u8]>),
    OptInt(Option<i64>),
}

/// A column of a row read back.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Cell {
    Null,
    Text(String),
    Blob(Vec<u8>),
    Int(i64),
}

impl Cell {
    pub fn text(self) -> Result<String, SqlError> {
        match self {
            Cell::Text(t) => Ok(t),
            other => Err(SqlError::Corrupt(format!("expected text, found {other:?}"))),
        }
    }

    pub fn opt_text(self) -> Result<Option<String>, SqlError> {
        match self {
            Cell::Null => Ok(None),
            other => other.text().map(Some),
        }
    }

    pub fn blob(self) -> Result<Vec<u8>, SqlError> {
        match self {
            Cell::Blob(b) => Ok(b),
            other => Err(SqlError::Corrupt(format!(
                "expected bytes, found {other:?}"
            ))),
        }
    }

    pub fn opt_blob(self) -> Result<Option<Vec<u8>>, SqlError> {
        match self {
            Cell::Null => Ok(None),
            other => other.blob().map(Some),
        }
    }

    pub fn int(self) -> Result<i64, SqlError> {
        match self {
            Cell::Int(i) => Ok(i),
            other => Err(SqlError::Corrupt(format!(
                "expected a number, found {other:?}"
            ))),
        }
    }
}

/// The SQLite spelling turned into PostgreSQL's: `?N` → `$N`, BLOB → BYTEA, INTEGER → BIGINT.
pub fn pg_sql(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len());
    let mut chars = sql.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '?' && chars.peek().is_some_and(char::is_ascii_digit) {
            out.push('$');
        } else {
            out.push(c);
        }
    }
    out.replace(" BLOB", " BYTEA")
        .replace(" INTEGER", " BIGINT")
}

pub enum Backend {
    Sqlite(Connection),
    Pg(postgres::Client),
}

impl Backend {
    pub fn exec(&mut self, sql: &str, values: &[V<'_>]) -> Result<u64, SqlError> {
        match self {
            Backend::Sqlite(c) => Ok(c.execute(
                sql,
                rusqlite::params_from_iter(values.iter().map(sqlite_value)),
            )? as u64),
            Backend::Pg(c) => {
                let boxed = pg_values(values);
                let refs: Vec<&(dyn postgres::types::ToSql + Sync)> =
                    boxed.iter().map(|b| b.as_ref()).collect();
                Ok(c.execute(pg_sql(sql).as_str(), &refs)?)
            }
        }
    }

    pub fn query(&mut self, sql: &str, values: &[V<'_>]) -> Result<Vec<Vec<Cell>>, SqlError> {
        match self {
            Backend::Sqlite(c) => {
                let mut stmt = c.prepare(sql)?;
                let n = stmt.column_count();
                let rows = stmt.query_map(
                    rusqlite::params_from_iter(values.iter().map(sqlite_value)),
                    |r| {
                        (0..n)
                            .map(|i| {
                                Ok(match r.get_ref(i)? {
                                    rusqlite::types::ValueRef::Null => Cell::Null,
                                    rusqlite::types::ValueRef::Integer(v) => Cell::Int(v),
                                    rusqlite::types::ValueRef::Text(t) => {
                                        Cell::Text(String::from_utf8_lossy(t).into_owned())
                                    }
                                    rusqlite::types::ValueRef::Blob(b) => Cell::Blob(b.to_vec()),
                                    rusqlite::types::ValueRef::Real(f) => Cell::Int(f as i64),
                                })
                            })
                            .collect::<rusqlite::Result<Vec<Cell>>>()
                    },
                )?;
                Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
            }
            Backend::Pg(c) => {
                let boxed = pg_values(values);
                let refs: Vec<&(dyn postgres::types::ToSql + Sync)> =
                    boxed.iter().map(|b| b.as_ref()).collect();
                let rows = c.query(pg_sql(sql).as_str(), &refs)?;
                rows.iter()
                    .map(|row| {
                        (0..row.len())
                            .map(|i| {
                                use postgres::types::Type;
                                let t = row.columns()[i].type_().clone();
                                Ok(if t == Type::BYTEA {
                                    row.try_get::<_, Option<Vec<u8>>>(i)?
                                        .map_or(Cell::Null, Cell::Blob)
                                } else if t == Type::INT8 {
                                    row.try_get::<_, Option<i64>>(i)?
                                        .map_or(Cell::Null, Cell::Int)
                                } else if t == Type::INT4 {
                                    row.try_get::<_, Option<i32>>(i)?
                                        .map_or(Cell::Null, |v| Cell::Int(v.into()))
                                } else {
                                    row.try_get::<_, Option<String>>(i)?
                                        .map_or(Cell::Null, Cell::Text)
                                })
                            })
                            .collect::<Result<Vec<Cell>, SqlError>>()
                    })
                    .collect()
            }
        }
    }

    /// Runs `f` in one transaction (committed when it returns `Ok(true)`).
    pub fn transaction<E: From<SqlError>>(
        &mut self,
        f: impl FnOnce(&mut Backend) -> Result<bool, E>,
    ) -> Result<bool, E> {
        self.exec_batch("BEGIN")?;
        match f(self) {
            Ok(true) => {
                self.exec_batch("COMMIT")?;
                Ok(true)
            }
            other => {
                let _ = self.exec_batch("ROLLBACK");
                other
            }
        }
    }

    pub fn exec_batch(&mut self, sql: &str) -> Result<(), SqlError> {
        match self {
            Backend::Sqlite(c) => Ok(c.execute_batch(sql)?),
            Backend::Pg(c) => Ok(c.batch_execute(sql)?),
        }
    }
}

fn sqlite_value(v: &V<'_>) -> rusqlite::types::Value {
    use rusqlite::types::Value;
    match *v {
        V::Text(t) => Value::Text(t.to_string()),
        V::Blob(b) => Value::Blob(b.to_vec()),
        V::Int(i) => Value::Integer(i),
        V::OptText(t) => t.map_or(Value::Null, |t| Value::Text(t.to_string())),
        V::OptBlob(b) => b.map_or(Value::Null, |b| Value::Blob(b.to_vec())),
        V::OptInt(i) => i.map_or(Value::Null, Value::Integer),
    }
}

fn pg_values(values: &[V<'_>]) -> Vec<Box<dyn postgres::types::ToSql + Sync>> {
    values
        .iter()
        .map(|v| -> Box<dyn postgres::types::ToSql + Sync> {
            match *v {
                V::Text(t) => Box::new(t.to_string()),
                V::Blob(b) => Box::new(b.to_vec()),
                V::Int(i) => Box::new(i),
                V::OptText(t) => Box::new(t.map(str::to_string)),
                V::OptBlob(b) => Box::new(b.map(<[u8]>::to_vec)),
                V::OptInt(i) => Box::new(i),
            }
        })
        .collect()
}

/// Opens `db`: `postgres://…` (or `postgresql://…`) for PostgreSQL, else an SQLite file
/// (created 0600 if missing) as [`db::open`] does. PostgreSQL keeps its schema version in
/// `<schema.pg_table>` and migrates under an advisory lock, so servers starting at once on
/// one database migrate it once.
pub fn open(db: &str, schema: &Schema, pg: &PgSchema) -> Result<Backend, SqlError> {
    if is_postgres(db) {
        pg_open(db, schema, pg).map(Backend::Pg)
    } else {
        Ok(Backend::Sqlite(db::open(Path::new(db), schema)?))
    }
}

/// Whether `--db` names a PostgreSQL server rather than a file.
pub fn is_postgres(db: &str) -> bool {
    db.starts_with("postgres://") || db.starts_with("postgresql://")
}

/// Where a store keeps its schema version in PostgreSQL, and the advisory lock its
/// migrations take (a constant per store, distinct between stores sharing a database).
pub struct PgSchema {
    pub version_table: &'static str,
    pub lock: i64,
}

fn pg_open(url: &str, schema: &Schema, pg: &PgSchema) -> Result<postgres::Client, SqlError> {
    let config: postgres::Config = url
        .parse()
        .map_err(|e: postgres::Error| SqlError::BadUrl(e.to_string()))?;
    let mut c = config.connect(postgres::NoTls)?;
    let mut tx = c.transaction()?;
    let table = pg.version_table;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&pg.lock])?;
    tx.batch_execute(&format!(
        "CREATE TABLE IF NOT EXISTS {table} (version BIGINT NOT NULL)"
    ))?;
    let found: i64 = match tx.query_opt(&format!("SELECT version FROM {table}"), &[])? {
        Some(row) => row.get(0),
        None => {
            tx.execute(&format!("INSERT INTO {table} VALUES (0)"), &[])?;
            0
        }
    };
    let known = schema.migrations.len() as i64;
    if found > known {
        return Err(SqlError::TooNew {
            what: schema.name,
            found,
            known,
        });
    }
    for m in &schema.migrations[found as usize..] {
        tx.batch_execute(&pg_sql(m))?;
    }
    tx.execute(&format!("UPDATE {table} SET version = $1"), &[&known])?;
    tx.commit()?;
    Ok(c)
}
