//! Random challenges from the operating system's CSPRNG. RANDs must be unpredictable: a
//! predictable RAND lets an attacker pre-compute or replay.

use crate::error::{Error, Result};
use std::io::Read;

/// `N` random bytes from /dev/urandom.
pub fn bytes<const N: usize>() -> Result<[u8; N]> {
    let mut buf = [0u8; N];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut buf))
        .map_err(|source| Error::Io {
            context: "reading /dev/urandom".into(),
            source,
        })?;
    Ok(buf)
}
