//! A pcscd of the bench's own, beside any system one.
//!
//! pcsc-lite's clients find the daemon through `PCSCLITE_CSOCK_NAME`, but pcscd 1.9 ignores
//! it and always creates `/run/pcscd/pcscd.comm`, which a system pcscd owns. What pcscd does
//! honour is systemd's socket activation: given a listening socket as fd 3 with
//! `LISTEN_FDS=1` and `LISTEN_PID` set to its own pid, it serves that socket and creates none.
//! So the bench binds its socket in its state directory, starts pcscd on it with a reader
//! configuration of its own (`-c`: vpcd readers on ports nobody else uses), and clients get
//! `PCSCLITE_CSOCK_NAME` pointing there. The one file pcscd still writes in `/run/pcscd` is
//! its pid file (when it may); a system pcscd's pid file is put back when the bench's stops.
//!
//! The vpcd driver gives each reader entry two slots (ports P and P+1). More entries raise
//! that, provided each loads its own copy of the driver (see [`Pcscd::start`]), up to the 16
//! readers one pcscd serves (`PCSCLITE_MAX_READERS_CONTEXTS`): 8 entries, 16 cards per bench.

use crate::LabError;
use crate::child::{Child, Group};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Where distributions install the vpcd driver (Debian/Ubuntu, Fedora, a source build).
const VPCD_DRIVERS: [&str; 3] = [
    "/usr/lib/pcsc/drivers/serial/libifdvpcd.so",
    "/usr/lib64/pcsc/drivers/serial/libifdvpcd.so",
    "/usr/local/lib/pcsc/drivers/serial/libifdvpcd.so",
];
/// Readers one pcscd serves.
pub const MAX_READERS: usize = 16;
/// Slots per vpcd reader entry.
const SLOTS: usize = 2;
const SYSTEM_PID_FILE: &str = "/run/pcscd/pcscd.pid";

/// The reader name of slot `i`: entry 0 keeps vpcd's usual "Virtual PCD", so a bench with one
/// or two cards looks like the readers every vpcd tutorial shows; later entries need names of
/// their own, since pcscd does not number readers that share one.
pub fn reader_name(i: usize) -> String {
    let (entry, slot) = (i / SLOTS, i % SLOTS);
    if entry == 0 {
        format!("Virtual PCD 00 {slot:02}")
    } else {
        format!("Virtual PCD #{entry} 00 {slot:02}")
    }
}

/// The port of slot `i` given the first one.
pub fn slot_port(base: u16, i: usize) -> u16 {
    base + i as u16
}

/// A program or library the bench needs: the path in `var` if that is set (and then it must
/// exist), else the first of `candidates` that does; else what is missing and how to install it.
pub(crate) fn locate(
    var: &str,
    candidates: impl IntoIterator<Item = PathBuf>,
    what: &str,
    package: &str,
) -> Result<PathBuf, LabError> {
    let missing = |what: String| LabError::Missing {
        what,
        install: format!("sudo apt-get install {package}"),
    };
    if let Some(given) = std::env::var_os(var) {
        let given = PathBuf::from(given);
        return if given.is_file() {
            Ok(given)
        } else {
            Err(missing(format!("{what} ({var}={})", given.display())))
        };
    }
    candidates
        .into_iter()
        .find(|p| p.is_file())
        .ok_or_else(|| missing(what.to_string()))
}

/// `name` in each PATH directory, then in `extra`.
pub(crate) fn on_path(name: &str, extra: &[&str]) -> Vec<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())
        .chain(extra.iter().map(PathBuf::from))
        .map(|dir| dir.join(name))
        .collect()
}

/// Finds pcscd (`SIMLAB_PCSCD`, else PATH and the sbin directories).
pub fn find_pcscd() -> Result<PathBuf, LabError> {
    locate(
        "SIMLAB_PCSCD",
        on_path("pcscd", &["/usr/sbin", "/sbin"]),
        "pcscd",
        "pcscd",
    )
}

/// Finds the vpcd driver (`SIMLAB_VPCD_DRIVER`, else the distributions' places).
pub fn find_vpcd() -> Result<PathBuf, LabError> {
    locate(
        "SIMLAB_VPCD_DRIVER",
        VPCD_DRIVERS.iter().map(PathBuf::from),
        "the vpcd driver (libifdvpcd.so)",
        "vsmartcard-vpcd",
    )
}

/// Whether something listens on TCP `port` of any local address, from /proc/net/tcp{,6}
/// (connecting would be taken by vpcd as a card arriving).
pub fn listening(port: u16) -> bool {
    ["/proc/net/tcp", "/proc/net/tcp6"].iter().any(|table| {
        std::fs::read_to_string(table).is_ok_and(|t| {
            t.lines().skip(1).any(|line| {
                let mut f = line.split_whitespace();
                let local = f.nth(1).unwrap_or("");
                let state = f.nth(1).unwrap_or("");
                state == "0A"
                    && local
                        .rsplit_once(':')
                        .and_then(|(_, p)| u16::from_str_radix(p, 16).ok())
                        == Some(port)
            })
        })
    })
}

/// Whether ports `base..base+n` can be bound now.
pub fn ports_free(base: u16, n: usize) -> Result<(), u16> {
    for i in 0..n {
        let port = base.checked_add(i as u16).ok_or(base)?;
        if listening(port) || std::net::TcpListener::bind(("0.0.0.0", port)).is_err() {
            return Err(port);
        }
    }
    Ok(())
}

/// A run of `n` free ports, looked for from a point that differs per process and per call, so
/// that benches starting together (in several processes, or threads of one) rarely try the
/// same ones; the caller retries when one is taken in between anyway.
pub fn free_ports(n: usize) -> Result<u16, LabError> {
    static CALLS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let call = CALLS.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    let start = 20_000 + ((std::process::id() as usize * 7 + call * 37) % 40_000) as u16;
    let mut base = start;
    for _ in 0..2_000 {
        if ports_free(base, n).is_ok() {
            return Ok(base);
        }
        base = if base > 60_000 {
            20_000
        } else {
            base + n as u16 + 1
        };
    }
    Err(LabError::PortInUse { port: start })
}

/// The bench's pcscd.
pub struct Pcscd {
    child: Child,
    socket: PathBuf,
    pub base_port: u16,
    pub readers: usize,
}

impl Pcscd {
    /// Starts pcscd in `dir` with `readers` vpcd slots from `base_port`, and waits until every
    /// slot's port listens.
    pub fn start(dir: &Path, base_port: u16, readers: usize) -> Result<Pcscd, LabError> {
        let pcscd = find_pcscd()?;
        let vpcd = find_vpcd()?;
        let io = |context: String| move |source| LabError::Io { context, source };
        let conf = dir.join(CONF_DIR);
        std::fs::create_dir_all(&conf).map_err(io(format!("creating {}", conf.display())))?;
        let entries = readers.div_ceil(SLOTS);
        let mut text = String::from("# Written by simlab lab for its own pcscd.\n");
        for e in 0..entries {
            let port = slot_port(base_port, e * SLOTS);
            // vpcd keeps its slots' state in statics, so two entries that load the same
            // driver file share (and overwrite) it: only one of their cards is ever accepted.
            // Each further entry gets a copy of the driver, which pcscd loads separately.
            let (name, driver) = if e == 0 {
                ("Virtual PCD".to_string(), vpcd.clone())
            } else {
                let copy = dir.join(format!("libifdvpcd-{e}.so"));
                std::fs::copy(&vpcd, &copy).map_err(io(format!(
                    "copying {} to {}",
                    vpcd.display(),
                    copy.display()
                )))?;
                (format!("Virtual PCD #{e}"), copy)
            };
            text.push_str(&format!(
                "FRIENDLYNAME \"{name}\"\nDEVICENAME /dev/null:0x{port:04X}\nLIBPATH {}\nCHANNELID 0x{port:04X}\n\n",
                driver.display()
            ));
        }
        let conf_file = conf.join("vpcd");
        std::fs::write(&conf_file, text).map_err(io(format!("writing {}", conf_file.display())))?;

        let socket = dir.join("pcscd.comm");
        let _ = std::fs::remove_file(&socket);
        let listener =
            UnixListener::bind(&socket).map_err(io(format!("binding {}", socket.display())))?;
        let fd = listener.as_raw_fd();
        let log = std::fs::File::create(dir.join("pcscd.log"))
            .map_err(io(format!("creating {}/pcscd.log", dir.display())))?;

        // LISTEN_PID must be pcscd's own pid, known only after the fork: a shell sets it to
        // its `$$` and then becomes pcscd with exec, keeping that pid.
        let mut cmd = Command::new("/bin/sh");
        cmd.args(["-c", "LISTEN_PID=$$ LISTEN_FDS=1 exec \"$0\" \"$@\""])
            .arg(&pcscd)
            .args(["--foreground", "--config"])
            .arg(&conf)
            .env_remove("LISTEN_FDNAMES")
            .stdin(Stdio::null())
            .stdout(log.try_clone().map_err(io("pcscd's log".into()))?)
            .stderr(log);
        // SAFETY: between fork and exec, only dup2/fcntl (async-signal-safe) on our own fd.
        unsafe {
            cmd.pre_exec(move || {
                if fd == 3 {
                    // dup2(3, 3) would leave close-on-exec set.
                    if libc::fcntl(3, libc::F_SETFD, 0) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                } else if libc::dup2(fd, 3) != 3 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child =
            Child::spawn("pcscd", &mut cmd, Group::Own).map_err(io("starting pcscd".into()))?;
        drop(listener);
        let mut me = Pcscd {
            child,
            socket,
            base_port,
            readers,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        let ports: Vec<u16> = (0..entries * SLOTS)
            .map(|i| slot_port(base_port, i))
            .collect();
        while let Some(&port) = ports.iter().find(|&&p| !listening(p)) {
            let log = std::fs::read_to_string(dir.join("pcscd.log")).unwrap_or_default();
            // vpcd logs a port it cannot bind and pcscd goes on without that reader.
            let taken = log.contains("Address already in use");
            if taken || me.child.try_wait().is_some() || Instant::now() > deadline {
                return Err(if taken {
                    LabError::PortInUse { port }
                } else {
                    LabError::NotReady {
                        what: format!("pcscd (its vpcd port {port} does not listen)"),
                        log: tail(&log),
                    }
                });
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        Ok(me)
    }

    /// The socket clients reach it on (`PCSCLITE_CSOCK_NAME`).
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    pub fn child(&mut self) -> &mut Child {
        &mut self.child
    }

    /// Stops it, removes its socket, and puts a system pcscd's pid file back.
    pub fn stop(&mut self) {
        self.child.stop(Duration::from_secs(5));
        let _ = std::fs::remove_file(&self.socket);
        restore_system_pid_file();
    }
}

/// What marks a bench's pcscd on its command line: its configuration directory's name.
const CONF_DIR: &str = "simlab-lab-reader.conf.d";

/// A pcscd that is not a bench's (a system one), by its command line in /proc.
fn system_pcscd() -> Option<u32> {
    std::fs::read_dir("/proc").ok()?.flatten().find_map(|e| {
        let pid: u32 = e.file_name().to_str()?.parse().ok()?;
        let comm = std::fs::read_to_string(e.path().join("comm")).ok()?;
        let cmdline = std::fs::read(e.path().join("cmdline")).ok()?;
        let ours = String::from_utf8_lossy(&cmdline).contains(CONF_DIR);
        (comm.trim() == "pcscd" && !cmdline.is_empty() && !ours).then_some(pid)
    })
}

/// A bench's pcscd rewrites `/run/pcscd/pcscd.pid` when it starts and removes it when it
/// stops, whoever wrote it. When a system pcscd runs and the file does not name it any more,
/// it is written back as pcscd writes it. Done after every bench, so that benches stopping in
/// any order leave the system's pid file as it was.
fn restore_system_pid_file() {
    let Some(pid) = system_pcscd() else { return };
    let named: Option<u32> = std::fs::read_to_string(SYSTEM_PID_FILE).ok().and_then(|s| {
        s.trim_matches(|c: char| c.is_whitespace() || c == '\0')
            .parse()
            .ok()
    });
    if named == Some(pid) {
        return;
    }
    let tmp = Path::new(SYSTEM_PID_FILE).with_extension("pid.simlab");
    if std::fs::write(&tmp, format!("{pid}\n\0")).is_ok() {
        let _ = std::fs::rename(&tmp, SYSTEM_PID_FILE);
    }
}

impl Drop for Pcscd {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The last lines of a log, for an error message.
pub fn tail(log: &str) -> String {
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(8)..].join("\n")
}
