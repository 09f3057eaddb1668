//! A PostgreSQL server of a test's own, for the stores that take PostgreSQL as an option.

use crate::{Process, require_file};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn s(p: &Path) -> &str {
    p.to_str().expect("a UTF-8 path")
}

/// A fresh directory for one test.
fn test_dir(name: &str) -> PathBuf {
    let dir = crate::temp_path(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create the test directory");
    dir
}

/// A PostgreSQL server of one test's own, on a Unix socket in a temporary directory, run as
/// the `postgres` user when the tests run as root (PostgreSQL refuses root).
pub struct Postgres {
    server: Option<Process>,
    dir: PathBuf,
    /// The URL simlab's `--db` takes.
    pub url: String,
    bin: PathBuf,
    sock: PathBuf,
    port: &'static str,
}

fn postgres_bin() -> Option<PathBuf> {
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
        .filter(|p| p.join("postgres").is_file())
        .collect();
    versions.sort();
    versions.pop()
}

fn user_ids(name: &str) -> Option<(u32, u32)> {
    let cname = std::ffi::CString::new(name).ok()?;
    // SAFETY: getpwnam with a valid C string; the result is read before any other call.
    let pw = unsafe { libc::getpwnam(cname.as_ptr()) };
    if pw.is_null() {
        return None;
    }
    // SAFETY: non-null pointer from getpwnam.
    Some(unsafe { ((*pw).pw_uid, (*pw).pw_gid) })
}

impl Postgres {
    pub fn start(name: &str) -> Option<Postgres> {
        Postgres::start_on(name, "5433")
    }

    /// SQL through psql, the independent client; its output, unaligned.
    pub fn psql(&self, sql: &str) -> String {
        let o = Command::new(self.bin.join("psql"))
            .args([
                "-h",
                s(&self.sock),
                "-p",
                self.port,
                "-U",
                "postgres",
                "-X",
                "-q",
                "-A",
                "-t",
            ])
            .args(["-v", "ON_ERROR_STOP=1", "-c", sql])
            .env("LC_ALL", "C")
            .output()
            .expect("run psql");
        assert!(
            o.status.success(),
            "psql: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8_lossy(&o.stdout).trim().to_string()
    }

    /// On its own port, so tests with a server each can run at once.
    pub fn start_on(name: &str, port: &'static str) -> Option<Postgres> {
        if !require_file("/usr/lib/postgresql", "postgresql") {
            return None;
        }
        let bin = postgres_bin().expect("a PostgreSQL server in /usr/lib/postgresql/*/bin");
        let dir = test_dir(name);
        let data = dir.join("data");
        let sock = dir.join("sock");
        std::fs::create_dir_all(&sock).unwrap();
        // SAFETY: getuid has no preconditions.
        let as_user = if unsafe { libc::getuid() } == 0 {
            let ids = user_ids("postgres").expect("a postgres user (Debian package postgresql)");
            for p in [&dir, &sock] {
                let c = std::ffi::CString::new(s(p)).unwrap();
                // SAFETY: chown on a path we created, with ids from getpwnam.
                assert_eq!(unsafe { libc::chown(c.as_ptr(), ids.0, ids.1) }, 0);
            }
            Some(ids)
        } else {
            None
        };
        let command = |tool: &str| {
            let mut c = Command::new(bin.join(tool));
            c.env("LC_ALL", "C").env("LANG", "C");
            if let Some((uid, gid)) = as_user {
                use std::os::unix::process::CommandExt;
                c.uid(uid).gid(gid);
            }
            c
        };
        let o = command("initdb")
            .args([
                "-D",
                s(&data),
                "-A",
                "trust",
                "-U",
                "postgres",
                "-E",
                "UTF8",
                "--no-sync",
            ])
            .output()
            .expect("run initdb");
        assert!(
            o.status.success(),
            "initdb: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        let server = Process::spawn(
            "postgres",
            command("postgres")
                .args([
                    "-D",
                    s(&data),
                    "-k",
                    s(&sock),
                    "-p",
                    port,
                    "-c",
                    "listen_addresses=",
                    "-c",
                    "fsync=off",
                ])
                .stdout(Stdio::null())
                .stderr(Stdio::null()),
        );
        let socket = sock.join(format!(".s.PGSQL.{port}"));
        let deadline = Instant::now() + Duration::from_secs(30);
        let ready = || {
            socket.exists()
                && Command::new(bin.join("pg_isready"))
                    .args(["-h", s(&sock), "-p", port, "-U", "postgres"])
                    .stdout(Stdio::null())
                    .status()
                    .is_ok_and(|s| s.success())
        };
        while !ready() {
            assert!(Instant::now() < deadline, "PostgreSQL did not come up");
            std::thread::sleep(Duration::from_millis(50));
        }
        let url = format!(
            "postgres://postgres@{}:{port}/postgres",
            s(&sock).replace('/', "%2F")
        );
        Some(Postgres {
            server: Some(server),
            dir,
            url,
            bin,
            sock,
            port,
        })
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        // A fast shutdown (SIGINT): disconnect clients, stop, and wait for it.
        if let Some(mut p) = self.server.take() {
            p.stop_with(libc::SIGINT, Duration::from_secs(20));
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
