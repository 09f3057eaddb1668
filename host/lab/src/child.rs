//! The bench's processes. Each one is told to die with simlab (`PR_SET_PDEATHSIG`), so even
//! a `kill -9` of simlab leaves nothing running; each is stopped by its pid with SIGTERM, then
//! SIGKILL after a grace period, and always waited for: nothing reaps zombies on a CI runner's
//! container, and a pcscd that is gone but not reaped still holds its ports.

use std::io;
use std::os::unix::process::CommandExt;
use std::process::{Command, ExitStatus};
use std::time::{Duration, Instant};

/// A child process that is stopped and reaped when dropped.
pub struct Child {
    name: String,
    child: std::process::Child,
    status: Option<ExitStatus>,
}

/// How `spawn` places the child.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Group {
    /// A process group of its own: Ctrl-C in the terminal reaches simlab, which then stops
    /// the bench in order (the card emulators before pcscd), instead of everything at once.
    Own,
    /// simlab's group, so the terminal's Ctrl-C reaches it directly (the user's COMMAND).
    Inherit,
}

impl Child {
    /// Spawns `cmd`. `PR_SET_PDEATHSIG` fires when the spawning *thread* ends, so the bench
    /// spawns from the thread that outlives it (the CLI's main thread).
    pub fn spawn(name: &str, cmd: &mut Command, group: Group) -> io::Result<Child> {
        // SAFETY: the closure runs between fork and exec and calls only async-signal-safe
        // functions (prctl, setpgid, getppid, raise), touching no memory of the parent.
        unsafe {
            cmd.pre_exec(move || {
                let parent = libc::getppid();
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) != 0 {
                    return Err(io::Error::last_os_error());
                }
                // The parent may have died before the prctl: then nobody would tell us.
                if libc::getppid() != parent {
                    libc::raise(libc::SIGTERM);
                }
                if group == Group::Own && libc::setpgid(0, 0) != 0 {
                    return Err(io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd.spawn()?;
        Ok(Child {
            name: name.to_string(),
            child,
            status: None,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn id(&self) -> u32 {
        self.child.id()
    }

    /// The exit status if it has ended (reaping it).
    pub fn try_wait(&mut self) -> Option<ExitStatus> {
        if self.status.is_none() {
            self.status = self.child.try_wait().ok().flatten();
        }
        self.status
    }

    /// Sends `signal` unless it has already ended.
    pub fn signal(&mut self, signal: libc::c_int) {
        if self.try_wait().is_none() {
            // SAFETY: kill(2) on our own child's pid, which cannot have been reused: it is
            // not reaped yet.
            unsafe {
                libc::kill(self.child.id() as libc::pid_t, signal);
            }
        }
    }

    /// Waits at most `timeout` for it to end by itself.
    pub fn wait_for(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(s) = self.try_wait() {
                return Some(s);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// SIGTERM, `grace` to end, then SIGKILL; always reaped. The status it ended with.
    pub fn stop(&mut self, grace: Duration) -> ExitStatus {
        if let Some(s) = self.try_wait() {
            return s;
        }
        self.signal(libc::SIGTERM);
        if let Some(s) = self.wait_for(grace) {
            return s;
        }
        let _ = self.child.kill();
        let status = self
            .child
            .wait()
            .unwrap_or_else(|_| std::os::unix::process::ExitStatusExt::from_raw(9));
        self.status = Some(status);
        status
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        self.stop(Duration::from_secs(5));
    }
}
