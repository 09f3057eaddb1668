//! The CA's register of the TLS certificates it issued (`simlab gateway issue`) and of those
//! revoked since, kept beside the CA key in `--ca-dir` as two append-only text files:
//!
//! - `tls-issued.tsv`: `serial<TAB>role<TAB>name<TAB>not_after`, one line per certificate;
//! - `tls-revoked.tsv`: `serial<TAB>revoked_at<TAB>reason`.
//!
//! Why files and not the gateway's database: TLS certificates are issued from the CA
//! directory before any gateway runs (the AuC's comes first), and every gateway process of
//! one operator shares that directory (and may use PostgreSQL or SQLite for its records).
//! Why not a CRL: the gateway checks the register on every request of a certificate holder,
//! so a revocation takes effect at once, without re-signing and redistributing a list; a
//! line appended with `O_APPEND` is atomic for lines this short.
//!
//! The gateway refuses a revoked seller or operator certificate with 403
//! `certificate_revoked` and names it in its log. The AuC does not read this register (it has
//! no CA directory): a revoked gateway certificate keeps its access there until it expires,
//! which is why the gateway issues its own for 30 days at most.

use super::ca::CaError;
use crate::http::Role;
use std::collections::HashSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::SystemTime;

pub const ISSUED_FILE: &str = "tls-issued.tsv";
pub const REVOKED_FILE: &str = "tls-revoked.tsv";

/// A certificate the register knows.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Issued {
    pub serial_hex: String,
    pub role: Role,
    pub name: String,
    pub not_after: u64,
}

/// What [`revoke`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Revoked {
    Now,
    Already,
    /// Not a TLS certificate of this CA.
    Unknown,
}

fn append(path: &Path, line: &str) -> Result<(), CaError> {
    let mut options = std::fs::OpenOptions::new();
    options.append(true).create(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options
        .open(path)
        .and_then(|mut f| f.write_all(line.as_bytes()))
        .map_err(|e| CaError(format!("writing {}: {e}", path.display())))
}

fn read_lines(path: &Path) -> Result<Vec<Vec<String>>, CaError> {
    match std::fs::read_to_string(path) {
        Ok(text) => Ok(text
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| l.split('\t').map(str::to_string).collect())
            .collect()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(CaError(format!("reading {}: {e}", path.display()))),
    }
}

/// Records an issued certificate.
pub fn record_issued(ca_dir: &Path, issued: &Issued) -> Result<(), CaError> {
    append(
        &ca_dir.join(ISSUED_FILE),
        &format!(
            "{}\t{}\t{}\t{}\n",
            issued.serial_hex,
            issued.role.as_str(),
            issued.name,
            issued.not_after
        ),
    )
}

/// The issued certificate with this serial (lower-case hex), if this CA issued it.
pub fn find_issued(ca_dir: &Path, serial_hex: &str) -> Result<Option<Issued>, CaError> {
    Ok(read_lines(&ca_dir.join(ISSUED_FILE))?
        .into_iter()
        .find(|f| f.first().is_some_and(|s| s == serial_hex))
        .and_then(|f| match f.as_slice() {
            [serial, role, name, not_after] => Some(Issued {
                serial_hex: serial.clone(),
                role: Role::parse(role)?,
                name: name.clone(),
                not_after: not_after.parse().ok()?,
            }),
            _ => None,
        }))
}

/// Revokes a TLS certificate this CA issued. `reason` is one line of text.
pub fn revoke(ca_dir: &Path, serial_hex: &str, at: u64, reason: &str) -> Result<Revoked, CaError> {
    let serial = serial_hex.to_ascii_lowercase();
    if find_issued(ca_dir, &serial)?.is_none() {
        return Ok(Revoked::Unknown);
    }
    if revoked_serials(ca_dir)?.contains(&serial) {
        return Ok(Revoked::Already);
    }
    let reason: String = reason
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    append(
        &ca_dir.join(REVOKED_FILE),
        &format!("{serial}\t{at}\t{reason}\n"),
    )?;
    Ok(Revoked::Now)
}

fn revoked_serials(ca_dir: &Path) -> Result<HashSet<String>, CaError> {
    Ok(read_lines(&ca_dir.join(REVOKED_FILE))?
        .into_iter()
        .filter_map(|f| f.into_iter().next())
        .collect())
}

/// The revoked serials as a running gateway sees them: re-read when the file changes, so a
/// revocation by another process (the CLI, another gateway) counts from its next request.
#[derive(Debug)]
pub struct Revocations {
    path: PathBuf,
    cache: Mutex<(Option<SystemTime>, u64, HashSet<String>)>,
}

impl Revocations {
    pub fn new(ca_dir: &Path) -> Revocations {
        Revocations {
            path: ca_dir.join(REVOKED_FILE),
            cache: Mutex::new((None, 0, HashSet::new())),
        }
    }

    /// Whether `serial_hex` (lower case) is revoked. A register that cannot be read counts
    /// as revoking everyone: refusing a seller for a minute is better than billing for a
    /// stolen certificate.
    pub fn is_revoked(&self, serial_hex: &str) -> bool {
        let meta = match std::fs::metadata(&self.path) {
            Ok(m) => Some((m.modified().ok(), m.len())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => {
                tracing::error!("TLS revocations {}: {e}", self.path.display());
                return true;
            }
        };
        let Some((modified, len)) = meta else {
            return false;
        };
        let mut cache = self
            .cache
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if cache.0 != modified || cache.1 != len || cache.0.is_none() {
            match self.path.parent().map(revoked_serials) {
                Some(Ok(set)) => *cache = (modified, len, set),
                Some(Err(e)) => {
                    tracing::error!("{e}");
                    return true;
                }
                None => return true,
            }
        }
        cache.2.contains(serial_hex)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issued_then_revoked_once_and_seen_by_a_running_gateway() {
        let dir = std::env::temp_dir().join(format!("simlab-tls-register-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let seen = Revocations::new(&dir);
        assert!(!seen.is_revoked("0a0b"));
        record_issued(
            &dir,
            &Issued {
                serial_hex: "0a0b".into(),
                role: Role::Seller,
                name: "cafe-1".into(),
                not_after: 99,
            },
        )
        .unwrap();
        assert_eq!(find_issued(&dir, "0a0b").unwrap().unwrap().name, "cafe-1");
        assert_eq!(revoke(&dir, "ffff", 1, "x").unwrap(), Revoked::Unknown);
        assert_eq!(revoke(&dir, "0A0B", 1, "lost\nline").unwrap(), Revoked::Now);
        assert_eq!(revoke(&dir, "0a0b", 2, "again").unwrap(), Revoked::Already);
        assert!(seen.is_revoked("0a0b"));
        assert!(!seen.is_revoked("0a0c"));
        let text = std::fs::read_to_string(dir.join(REVOKED_FILE)).unwrap();
        assert_eq!(text.lines().count(), 1, "{text}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
