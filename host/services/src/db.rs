//! Opening simlab's SQLite files (gateway, AuC subscribers, seller records, OTP codes): created
//! 0600 without ever holding a second descriptor on a live database, identified, and migrated
//! to the schema this build knows — or refused with a reason.
//!
//! # Why no second descriptor
//!
//! POSIX record locks belong to a process and an inode, not to a descriptor: closing *any*
//! descriptor of a file drops every lock the process holds on it. SQLite keeps its locks
//! (the database lock and the WAL's read marks in `-shm`) as such locks, so if the process
//! opens and closes the database file outside SQLite while a connection is live, another
//! process (the `sqlite3` shell, a backup, monitoring) sees no reader and no writer, checkpoints
//! and deletes the WAL that the live connection still appends to — and everything committed
//! after that is gone. (SQLite's own unix VFS avoids this for its connections by sharing one
//! inode record and deferring closes; it cannot know about descriptors opened elsewhere.)
//!
//! So the file is created, when missing, with `O_CREAT | O_EXCL` and mode 0600 — a brand-new
//! inode, on which nobody can hold a lock yet — and that descriptor is closed before any SQLite
//! connection to it exists in this process: [`CREATE`] serialises the create-and-close step
//! against every other open in this process, and all of simlab's SQLite opens come through
//! [`open`]. When the file exists, `O_EXCL` fails without creating a descriptor, and only
//! `stat(2)` (no descriptor either) looks at it. A non-SQLite file is recognised by SQLite
//! itself (`SQLITE_NOTADB`), never by reading its header here. Creating through SQLite and
//! `chmod`ing afterwards was rejected: the file would be world-readable between the two, and
//! whoever opened it then keeps reading it. A process-wide `umask` change was rejected too:
//! it would silently apply to files other threads create meanwhile.
//!
//! # Versions
//!
//! `PRAGMA application_id` says which simlab store a file is (so a seller database given to
//! the gateway is refused, not filled with gateway tables) and `PRAGMA user_version` which
//! schema it has. Migration *n* (1-based) takes a database from version *n − 1* to *n*; all
//! missing ones run in one `IMMEDIATE` transaction, so two processes opening an old file at
//! once migrate it once, and a failed migration leaves the old version. Files from before
//! versioning (`user_version` 0, no application id) are adopted by migration 1, which is the
//! schema they already have (`CREATE … IF NOT EXISTS`), provided they hold the store's tables.
//!
//! No migrations crate is used: rusqlite_migration 2.6 and refinery 0.8/0.10 require
//! rusqlite ≤ 0.40, and simlab needs 0.41 (see host/Cargo.toml).

use rusqlite::{Connection, OpenFlags, TransactionBehavior};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

/// Serialises "create the file, close that descriptor" against every SQLite open in this
/// process (see the module docs).
static CREATE: Mutex<()> = Mutex::new(());

/// One kind of simlab SQLite file and its schema history.
pub struct Schema {
    /// For messages: "gateway", "AuC subscriber", …
    pub name: &'static str,
    /// `PRAGMA application_id`: tells the stores' files apart.
    pub application_id: i32,
    /// A table every version has; an unversioned file without it is not this store's.
    pub marker_table: &'static str,
    /// Migration *n* takes version *n − 1* to *n*. Never edit a released one: add another.
    pub migrations: &'static [&'static str],
    /// How long a connection waits for another's write lock.
    pub busy_timeout: Duration,
}

impl Schema {
    /// The schema version this build writes.
    pub fn version(&self) -> i64 {
        self.migrations.len() as i64
    }
}

/// Why a database could not be opened. All but [`DbError::Sqlite`] are the user's to fix
/// (exit code 2).
#[derive(Debug)]
pub enum DbError {
    /// The path names a directory.
    IsDirectory(PathBuf),
    /// The folder that would hold the file does not exist.
    NoFolder(PathBuf),
    /// The file cannot be created (permissions, read-only file system).
    Create {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The file exists and is not an SQLite database.
    NotADatabase(PathBuf),
    /// An SQLite database, but not this store's.
    WrongKind {
        path: PathBuf,
        expected: &'static str,
        found: String,
    },
    /// Written by a newer simlab: this build does not know its schema.
    TooNew {
        path: PathBuf,
        name: &'static str,
        found: i64,
        known: i64,
    },
    /// SQLite failed otherwise (I/O, locking).
    Sqlite {
        path: PathBuf,
        error: rusqlite::Error,
    },
}

impl DbError {
    /// Whether the user can fix this by naming another file (exit code 2).
    pub fn is_bad_input(&self) -> bool {
        !matches!(self, DbError::Sqlite { .. })
    }
}

impl fmt::Display for DbError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DbError::IsDirectory(p) => {
                write!(f, "{} is a directory, not a file", p.display())
            }
            DbError::NoFolder(p) => write!(
                f,
                "{}: the folder {} does not exist",
                p.display(),
                p.parent()
                    .map_or_else(String::new, |d| d.display().to_string())
            ),
            DbError::Create { path, source } => {
                write!(f, "cannot create {}: {source}", path.display())
            }
            DbError::NotADatabase(p) => write!(f, "{} is not an SQLite database", p.display()),
            DbError::WrongKind {
                path,
                expected,
                found,
            } => write!(
                f,
                "{} is not a simlab {expected} database ({found})",
                path.display()
            ),
            DbError::TooNew {
                path,
                name,
                found,
                known,
            } => write!(
                f,
                "{}: {name} database schema version {found} is newer than this simlab knows \
                 ({known}); use a newer simlab",
                path.display()
            ),
            DbError::Sqlite { path, error } => write!(f, "{}: {error}", path.display()),
        }
    }
}

impl std::error::Error for DbError {}

/// Checks a path the user gave for a file simlab will create or write (`--db`, `--trace`,
/// `--state`) without opening it: not a directory, and its folder exists.
pub fn check_file_path(path: &Path) -> Result<(), DbError> {
    if path.is_dir() {
        return Err(DbError::IsDirectory(path.to_path_buf()));
    }
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty())
        && !dir.is_dir()
    {
        return Err(DbError::NoFolder(path.to_path_buf()));
    }
    Ok(())
}

/// Creates `path` with mode 0600 if it does not exist. Holds [`CREATE`]; the descriptor is on a
/// new inode and closed before returning (see the module docs for why that is safe and nothing
/// else is).
fn create_if_missing(path: &Path) -> Result<(), DbError> {
    let _only_us = CREATE.lock().unwrap_or_else(PoisonError::into_inner);
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    match options.open(path) {
        Ok(file) => {
            drop(file);
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(source) => Err(DbError::Create {
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// Opens `path` as a `schema` database (creating it 0600 if missing), in WAL mode with
/// synchronous FULL (what was committed survives a crash or power loss), migrated to
/// `schema.version()`.
pub fn open(path: &Path, schema: &Schema) -> Result<Connection, DbError> {
    check_file_path(path)?;
    create_if_missing(path)?;
    let sqlite = |error: rusqlite::Error| classify(path, error);
    // No SQLITE_OPEN_CREATE: the file exists now, and if it vanished meanwhile SQLite must not
    // create it with the default mode.
    let conn = {
        let _no_create_in_flight = CREATE.lock().unwrap_or_else(PoisonError::into_inner);
        Connection::open_with_flags(
            path,
            // No SQLITE_OPEN_URI either: `file:…` is a file name here, the one created above.
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(sqlite)?
    };
    conn.busy_timeout(schema.busy_timeout).map_err(sqlite)?;
    // The first statement that reads the file: SQLITE_NOTADB for anything else.
    conn.pragma_update(None, "journal_mode", "WAL")
        .map_err(sqlite)?;
    conn.pragma_update(None, "synchronous", "FULL")
        .map_err(sqlite)?;
    migrate(&conn, path, schema)?;
    Ok(conn)
}

fn classify(path: &Path, error: rusqlite::Error) -> DbError {
    match error.sqlite_error_code() {
        Some(rusqlite::ErrorCode::NotADatabase) => DbError::NotADatabase(path.to_path_buf()),
        _ => DbError::Sqlite {
            path: path.to_path_buf(),
            error,
        },
    }
}

fn versions(conn: &Connection) -> rusqlite::Result<(i32, i64)> {
    let app: i32 = conn.pragma_query_value(None, "application_id", |r| r.get(0))?;
    let version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
    Ok((app, version))
}

/// Brings the database to `schema.version()`, or says why not.
fn migrate(conn: &Connection, path: &Path, schema: &Schema) -> Result<(), DbError> {
    let sqlite = |error: rusqlite::Error| classify(path, error);
    // Fast path, without the write lock: an up-to-date file of the right kind.
    let (app, version) = versions(conn).map_err(sqlite)?;
    check_kind(conn, path, schema, app, version)?;
    if version == schema.version() {
        return Ok(());
    }
    // `Transaction` rolls back on drop: an error (or a panic) in a migration leaves the file at
    // its old version.
    let tx = rusqlite::Transaction::new_unchecked(conn, TransactionBehavior::Immediate)
        .map_err(sqlite)?;
    let (app, version) = versions(&tx).map_err(sqlite)?;
    check_kind(&tx, path, schema, app, version)?;
    for migration in &schema.migrations[version as usize..] {
        tx.execute_batch(migration).map_err(sqlite)?;
    }
    tx.pragma_update(None, "application_id", schema.application_id)
        .map_err(sqlite)?;
    tx.pragma_update(None, "user_version", schema.version())
        .map_err(sqlite)?;
    tx.commit().map_err(sqlite)
}

fn check_kind(
    conn: &Connection,
    path: &Path,
    schema: &Schema,
    app: i32,
    version: i64,
) -> Result<(), DbError> {
    let wrong = |found: String| DbError::WrongKind {
        path: path.to_path_buf(),
        expected: schema.name,
        found,
    };
    if app != 0 && app != schema.application_id {
        return Err(wrong(format!("application id {app:#010x}")));
    }
    if app == 0 && version == 0 {
        // Unversioned: new and empty, or written before versioning — then it must hold our
        // tables and no one else's.
        let tables: Vec<String> = conn
            .prepare("SELECT name FROM sqlite_schema WHERE type = 'table' ORDER BY name")
            .and_then(|mut s| s.query_map([], |r| r.get(0))?.collect())
            .map_err(|e| classify(path, e))?;
        if !tables.is_empty() && !tables.iter().any(|t| t == schema.marker_table) {
            return Err(wrong(format!("its tables are {}", tables.join(", "))));
        }
    } else if app == 0 {
        return Err(wrong(format!(
            "user_version {version} without an application id"
        )));
    }
    if version > schema.version() {
        return Err(DbError::TooNew {
            path: path.to_path_buf(),
            name: schema.name,
            found: version,
            known: schema.version(),
        });
    }
    Ok(())
}

/// Makes every connection of a [`Pool`] through [`open`].
pub struct Manager {
    path: PathBuf,
    schema: &'static Schema,
}

impl r2d2::ManageConnection for Manager {
    type Connection = Connection;
    type Error = DbError;

    fn connect(&self) -> Result<Connection, DbError> {
        open(&self.path, self.schema)
    }

    fn is_valid(&self, conn: &mut Connection) -> Result<(), DbError> {
        conn.execute_batch("").map_err(|e| classify(&self.path, e))
    }

    fn has_broken(&self, _: &mut Connection) -> bool {
        false
    }
}

/// A bounded pool of connections to one store's file (r2d2; r2d2_sqlite 0.35 requires
/// rusqlite 0.40, so [`Manager`] stands in for its manager).
pub type Pool = r2d2::Pool<Manager>;
/// A connection borrowed from a [`Pool`].
pub type Pooled = r2d2::PooledConnection<Manager>;

/// How long a caller waits for a free connection before it gets an error.
pub const POOL_WAIT: Duration = Duration::from_secs(10);

/// A pool of at most `max` connections to `path`. The file is opened (created, checked,
/// migrated) once here, so a bad one is refused now with its reason; closing that connection
/// again is SQLite's own close, which keeps the process's locks (its VFS defers the `close(2)`
/// while another connection holds a lock).
pub fn pool(path: &Path, schema: &'static Schema, max: u32) -> Result<Pool, DbError> {
    drop(open(path, schema)?);
    Ok(r2d2::Pool::builder()
        .max_size(max)
        .min_idle(Some(0))
        .connection_timeout(POOL_WAIT)
        .error_handler(Box::new(r2d2::NopErrorHandler))
        .build_unchecked(Manager {
            path: path.to_path_buf(),
            schema,
        }))
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEST: Schema = Schema {
        name: "test",
        application_id: 0x5349_4d00,
        marker_table: "t",
        migrations: &[
            "CREATE TABLE IF NOT EXISTS t (a INTEGER);",
            "ALTER TABLE t ADD b TEXT;",
        ],
        busy_timeout: Duration::from_secs(1),
    };

    fn tmp(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("simlab-db-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir.join("x.sqlite")
    }

    #[test]
    fn a_new_file_is_private_versioned_and_identified() {
        let path = tmp("new");
        let conn = open(&path, &TEST).unwrap();
        assert_eq!(versions(&conn).unwrap(), (TEST.application_id, 2));
        conn.execute("INSERT INTO t (a, b) VALUES (1, 'x')", [])
            .unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }

    #[test]
    fn an_older_version_is_migrated_and_keeps_its_rows() {
        let path = tmp("old");
        {
            let c = Connection::open(&path).unwrap();
            c.execute_batch("CREATE TABLE t (a INTEGER); INSERT INTO t VALUES (7);")
                .unwrap();
        }
        let conn = open(&path, &TEST).unwrap();
        let (a, b): (i64, Option<String>) = conn
            .query_row("SELECT a, b FROM t", [], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap();
        assert_eq!((a, b), (7, None));
        assert_eq!(versions(&conn).unwrap().1, 2);
    }

    #[test]
    fn a_newer_version_is_refused_and_left_alone() {
        let path = tmp("newer");
        drop(open(&path, &TEST).unwrap());
        {
            let c = Connection::open(&path).unwrap();
            c.pragma_update(None, "user_version", 3).unwrap();
        }
        let e = open(&path, &TEST).unwrap_err();
        assert!(
            matches!(
                e,
                DbError::TooNew {
                    found: 3,
                    known: 2,
                    ..
                }
            ),
            "{e}"
        );
        assert!(e.is_bad_input());
        assert!(
            e.to_string().contains("newer than this simlab knows"),
            "{e}"
        );
        let c = Connection::open(&path).unwrap();
        assert_eq!(versions(&c).unwrap().1, 3);
    }

    #[test]
    fn a_failed_migration_leaves_the_old_version() {
        const BROKEN: Schema = Schema {
            migrations: &[
                "CREATE TABLE IF NOT EXISTS t (a INTEGER);",
                "ALTER TABLE t ADD b TEXT; THIS IS NOT SQL;",
            ],
            ..TEST
        };
        let path = tmp("broken");
        {
            let c = Connection::open(&path).unwrap();
            c.execute_batch("CREATE TABLE t (a INTEGER);").unwrap();
        }
        assert!(matches!(open(&path, &BROKEN), Err(DbError::Sqlite { .. })));
        let c = Connection::open(&path).unwrap();
        assert_eq!(versions(&c).unwrap(), (0, 0));
        // The ALTER before the error was rolled back too.
        assert!(c.prepare("SELECT b FROM t").is_err());
    }

    #[test]
    fn other_files_are_refused_by_what_they_are() {
        let path = tmp("text");
        std::fs::write(
            &path,
            "not a database, just text that is long enough ".repeat(20),
        )
        .unwrap();
        assert!(matches!(open(&path, &TEST), Err(DbError::NotADatabase(_))));

        let other = tmp("other");
        {
            let c = Connection::open(&other).unwrap();
            c.execute_batch("CREATE TABLE unrelated (x);").unwrap();
        }
        let e = open(&other, &TEST).unwrap_err();
        assert!(matches!(e, DbError::WrongKind { .. }), "{e}");

        let dir = other.parent().unwrap();
        assert!(matches!(open(dir, &TEST), Err(DbError::IsDirectory(_))));
        assert!(matches!(
            open(&dir.join("missing/x.sqlite"), &TEST),
            Err(DbError::NoFolder(_))
        ));
    }
}
