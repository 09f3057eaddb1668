//! ARM semihosting, used by this TEST-ONLY board for what a real board has in hardware: flash
//! that survives a restart (a host file), arguments (the command line), and a time to mix into
//! the test RNG's seed. QEMU implements it with `-semihosting-config enable=on,target=native`.

use cortex_m_semihosting::{nr, syscall};

/// The command line QEMU passes (`-semihosting-config …,arg=…`), NUL-trimmed, into `buf`.
pub fn cmdline(buf: &mut [u8]) -> &str {
    buf.fill(0);
    let block = [buf.as_mut_ptr() as usize, buf.len() - 1];
    // SAFETY: SYS_GET_CMDLINE writes at most `len` bytes into `buf` (which outlives the call)
    // and a new length into `block`, which is not read afterwards.
    let r = unsafe { syscall(nr::GET_CMDLINE, &block) };
    if r != 0 {
        return "";
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    core::str::from_utf8(&buf[..end]).unwrap_or("")
}

/// The value of `key=value` among the space-separated arguments.
pub fn arg<'a>(cmdline: &'a str, key: &str) -> Option<&'a str> {
    cmdline
        .split(' ')
        .find_map(|a| a.strip_prefix(key)?.strip_prefix('='))
}

/// Host time in seconds (SYS_TIME) and centiseconds since QEMU started (SYS_CLOCK).
pub fn time() -> (usize, usize) {
    // SAFETY: neither call takes arguments or touches memory.
    unsafe { (syscall!(TIME), syscall!(CLOCK)) }
}

/// An open host file.
pub struct File(usize);

impl File {
    /// Opens `path` (NUL-terminated) read-write, creating it if needed; also returns whether
    /// it was created.
    pub fn open_or_create(path: &[u8]) -> Option<(File, bool)> {
        let len = path.len().checked_sub(1)?;
        if path.last() != Some(&0) {
            return None;
        }
        // SAFETY: `path` is a NUL-terminated buffer that outlives the call.
        let h = unsafe { syscall!(OPEN, path.as_ptr(), nr::open::RW_BINARY, len) };
        if h != usize::MAX {
            return Some((File(h), false));
        }
        // "w+b": create (or truncate) for reading and writing.
        // SAFETY: as above.
        let h = unsafe { syscall!(OPEN, path.as_ptr(), nr::open::RW_TRUNC_BINARY, len) };
        (h != usize::MAX).then_some((File(h), true))
    }

    /// The file's length, if the host can tell.
    pub fn len(&self) -> Option<usize> {
        // SAFETY: takes the handle only.
        let n = unsafe { syscall!(FLEN, self.0) };
        (n as isize >= 0).then_some(n)
    }

    fn seek(&self, at: usize) -> bool {
        // SAFETY: takes the handle and a position only.
        unsafe { syscall!(SEEK, self.0, at) == 0 }
    }

    /// Reads exactly `buf.len()` bytes at `at`.
    pub fn read_at(&self, at: usize, buf: &mut [u8]) -> bool {
        // SAFETY: SYS_READ writes at most `buf.len()` bytes into `buf`; it returns how many it
        // did not read.
        self.seek(at) && unsafe { syscall!(READ, self.0, buf.as_mut_ptr(), buf.len()) == 0 }
    }

    /// Writes all of `buf` at `at`.
    pub fn write_at(&self, at: usize, buf: &[u8]) -> bool {
        // SAFETY: SYS_WRITE reads `buf.len()` bytes from `buf`; it returns how many it did not
        // write.
        self.seek(at) && unsafe { syscall!(WRITE, self.0, buf.as_ptr(), buf.len()) == 0 }
    }
}
