//! A private lab bench: a pcscd of its own with vpcd readers, one `simlab emulate card` per
//! card, virtual modems on ptys; described to the program under test by environment variables,
//! and torn down in order whatever happens (see [`child`] for how nothing outlives simlab).
//!
//! The bench knows the card model only as the `simlab` binary's `emulate` commands: it starts
//! processes and watches sockets, ports and links, so the same code serves `simlab lab`, the
//! test suite and anyone else's CI.

pub mod child;
pub mod pcscd;
pub mod token;

use child::{Child, Group};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Why a bench could not start. Every variant is found before the user's program runs.
#[derive(Debug, thiserror::Error)]
pub enum LabError {
    /// A system component is not installed.
    #[error("{what} is not installed (install it with: {install})")]
    Missing { what: String, install: String },
    /// More cards than one pcscd can serve.
    #[error("{asked} cards asked for, but one pcscd serves at most {max} readers")]
    TooManyCards { asked: usize, max: usize },
    /// A vpcd port the bench needs is taken.
    #[error("TCP port {port} is already in use (choose another --port, or leave it out)")]
    PortInUse { port: u16 },
    /// Another bench runs on this state directory.
    #[error(
        "a bench is already running on {dir} (pid {pid}): `simlab lab down --state {dir}` stops it"
    )]
    Busy { dir: String, pid: String },
    /// A component did not come up; the end of its log says why.
    #[error("{what} did not come up:\n{log}")]
    NotReady { what: String, log: String },
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
}

/// One virtual card: a profile, and arguments for its `emulate card` (e.g. `--state F`).
#[derive(Clone, Debug)]
pub struct CardSpec {
    pub profile: PathBuf,
    pub extra: Vec<String>,
}

/// What to put on the bench.
#[derive(Clone, Debug)]
pub struct Spec {
    /// The state directory: sockets, configuration, logs, modem links (created; must not be
    /// in use by another bench).
    pub dir: PathBuf,
    /// The `simlab` binary whose `emulate` commands play the hardware.
    pub simlab: PathBuf,
    pub cards: Vec<CardSpec>,
    /// Virtual modems, each with the SIM of a profile or the built-in one.
    pub modems: Vec<Option<PathBuf>>,
    /// The first vpcd port; by default a free run of ports is found.
    pub base_port: Option<u16>,
    /// Reader slots to offer beyond the cards (empty readers a test may insert into).
    pub spare_readers: usize,
    /// The firmware token under QEMU.
    pub token: Option<token::TokenSpec>,
}

/// A card in a reader.
pub struct Card {
    pub reader: String,
    pub port: u16,
    pub profile: PathBuf,
    pub child: Child,
}

/// A virtual modem.
pub struct Modem {
    /// The symlink to its pty: what `--modem` and gammu open.
    pub link: PathBuf,
    pub spool: PathBuf,
    pub child: Child,
}

/// A running bench; dropping it tears it down.
pub struct Lab {
    dir: PathBuf,
    pub cards: Vec<Card>,
    pub modems: Vec<Modem>,
    pub token: Option<token::Token>,
    pcscd: Option<pcscd::Pcscd>,
    readers: Vec<String>,
    base_port: u16,
    simlab: PathBuf,
    _lock: std::fs::File,
}

impl Lab {
    /// Starts everything in `spec`, in order, and waits until each card is seen in its reader
    /// through the bench's own pcscd and each modem's link exists. On any error what was
    /// started is stopped again.
    pub fn start(spec: &Spec) -> Result<Lab, LabError> {
        let readers = spec.cards.len() + spec.spare_readers;
        if readers > pcscd::MAX_READERS {
            return Err(LabError::TooManyCards {
                asked: readers,
                max: pcscd::MAX_READERS,
            });
        }
        if readers > 0 {
            pcscd::find_pcscd()?;
            pcscd::find_vpcd()?;
        }
        let slots = readers.div_ceil(2) * 2;
        let base_port = match spec.base_port {
            Some(base) if readers > 0 => {
                pcscd::ports_free(base, slots).map_err(|port| LabError::PortInUse { port })?;
                base
            }
            Some(base) => base,
            None if readers > 0 => pcscd::free_ports(slots)?,
            None => 0,
        };
        let io = |context: String| move |source| LabError::Io { context, source };
        std::fs::create_dir_all(&spec.dir)
            .map_err(io(format!("creating {}", spec.dir.display())))?;
        let lock = lock(&spec.dir)?;
        let mut lab = Lab {
            dir: spec.dir.clone(),
            cards: Vec::new(),
            modems: Vec::new(),
            token: None,
            pcscd: None,
            readers: (0..readers).map(pcscd::reader_name).collect(),
            base_port,
            simlab: spec.simlab.clone(),
            _lock: lock,
        };
        if readers > 0 {
            // Free ports found a moment ago can be taken by another bench starting meanwhile:
            // unless the user chose them, try other ones.
            let mut tries = 0;
            let pcscd = loop {
                match pcscd::Pcscd::start(&spec.dir, lab.base_port, readers) {
                    Err(LabError::PortInUse { .. }) if spec.base_port.is_none() && tries < 5 => {
                        tries += 1;
                        lab.base_port = pcscd::free_ports(slots)?;
                    }
                    other => break other?,
                }
            };
            lab.pcscd = Some(pcscd);
            // A card that connects while pcscd still initialises its readers can be left
            // unaccepted in the second slot of a vpcd entry: wait until pcscd lists them all.
            lab.wait_readers(&spec.simlab)?;
        }
        for i in 0..spec.cards.len() {
            lab.start_card(spec, i, lab.base_port)?;
        }
        for (i, sim) in spec.modems.iter().enumerate() {
            let link = spec.dir.join(format!("modem-{i}"));
            let spool = spec.dir.join(format!("modem-{i}.spool"));
            let _ = std::fs::remove_file(&link);
            let log = spec.dir.join(format!("modem-{i}.log"));
            let mut cmd = Command::new(&spec.simlab);
            cmd.args(["emulate", "modem", "--link"])
                .arg(&link)
                .arg("--spool")
                .arg(&spool);
            if let Some(sim) = sim {
                cmd.arg("--sim").arg(sim);
            }
            cmd.stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(file(&log)?);
            let child = Child::spawn(&format!("modem {i}"), &mut cmd, Group::Own)
                .map_err(io(format!("starting {}", spec.simlab.display())))?;
            lab.modems.push(Modem { link, spool, child });
        }
        if let Some(t) = &spec.token {
            lab.token = Some(token::start(&spec.dir, t)?);
        }
        lab.wait_ready()?;
        lab.wait_cards(&spec.simlab, Instant::now() + Duration::from_secs(20))?;
        Ok(lab)
    }

    fn start_card(&mut self, spec: &Spec, i: usize, base_port: u16) -> Result<(), LabError> {
        let card = &spec.cards[i];
        let port = pcscd::slot_port(base_port, i);
        let log = spec.dir.join(format!("card-{i}.log"));
        let mut cmd = Command::new(&spec.simlab);
        cmd.args(["emulate", "card", "--profile"])
            .arg(&card.profile)
            .args(["--vpcd", &format!("127.0.0.1:{port}")])
            .args(&card.extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(file(&log)?);
        let child = Child::spawn(&format!("card {i}"), &mut cmd, Group::Own).map_err(|source| {
            LabError::Io {
                context: format!("starting {}", spec.simlab.display()),
                source,
            }
        })?;
        self.cards.push(Card {
            reader: pcscd::reader_name(i),
            port,
            profile: card.profile.clone(),
            child,
        });
        Ok(())
    }

    /// Waits (at most 10 s) until the bench's pcscd lists every reader.
    fn wait_readers(&mut self, simlab: &Path) -> Result<(), LabError> {
        let deadline = Instant::now() + Duration::from_secs(10);
        let env = self.env();
        loop {
            let listed = self.list(simlab, &env);
            let all = self.readers.iter().all(|r| {
                listed
                    .as_array()
                    .is_some_and(|a| a.iter().any(|l| l["name"] == r.as_str()))
            });
            if all {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(LabError::NotReady {
                    what: format!("pcscd (it lists {listed})"),
                    log: log_tail(&self.dir.join("pcscd.log")),
                });
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// `simlab readers --json` through the bench's pcscd, as any client would see it.
    fn list(&self, simlab: &Path, env: &[(String, String)]) -> serde_json::Value {
        Command::new(simlab)
            .args(["readers", "--json"])
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stderr(Stdio::null())
            .output()
            .ok()
            .and_then(|o| serde_json::from_slice(&o.stdout).ok())
            .unwrap_or_default()
    }

    /// Waits (at most 20 s) for every modem's link.
    fn wait_ready(&mut self) -> Result<(), LabError> {
        let deadline = Instant::now() + Duration::from_secs(20);
        for (i, m) in self.modems.iter_mut().enumerate() {
            while std::fs::symlink_metadata(&m.link).is_err() {
                if m.child.try_wait().is_some() || Instant::now() > deadline {
                    return Err(LabError::NotReady {
                        what: format!("modem {i}"),
                        log: log_tail(&self.dir.join(format!("modem-{i}.log"))),
                    });
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        Ok(())
    }

    /// Waits until every card started so far is present in its reader.
    fn wait_cards(&mut self, simlab: &Path, deadline: Instant) -> Result<(), LabError> {
        if self.cards.is_empty() {
            return Ok(());
        }
        let env = self.env();
        loop {
            let present = self.cards_present(simlab, &env);
            let Some(i) = (0..self.cards.len()).find(|&i| !present.contains(&i)) else {
                return Ok(());
            };
            let dead = self.cards[i].child.try_wait().is_some();
            if dead || Instant::now() > deadline {
                let log = self.dir.join(format!(
                    "{}.log",
                    self.cards[i].child.name().replace(' ', "-")
                ));
                return Err(LabError::NotReady {
                    what: format!(
                        "{} in {:?}",
                        self.cards[i].child.name(),
                        self.cards[i].reader
                    ),
                    log: log_tail(&log),
                });
            }
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    /// The cards their readers report present.
    fn cards_present(&self, simlab: &Path, env: &[(String, String)]) -> Vec<usize> {
        let readers = self.list(simlab, env);
        let present = |name: &str| {
            readers.as_array().is_some_and(|all| {
                all.iter()
                    .any(|r| r["name"] == name && r["card_present"] == true)
            })
        };
        self.cards
            .iter()
            .enumerate()
            .filter(|(_, c)| present(&c.reader))
            .map(|(i, _)| i)
            .collect()
    }

    /// The vpcd port of reader `i` (for a card a test inserts itself).
    pub fn port(&self, i: usize) -> u16 {
        pcscd::slot_port(self.base_port, i)
    }

    /// Stops pcscd and starts it again on the same socket, readers and ports, as a system
    /// update or a crash would; the cards' emulators reconnect by themselves.
    pub fn restart_pcscd(&mut self) -> Result<(), LabError> {
        let Some(mut old) = self.pcscd.take() else {
            return Ok(());
        };
        old.stop();
        drop(old);
        self.pcscd = Some(pcscd::Pcscd::start(
            &self.dir,
            self.base_port,
            self.readers.len(),
        )?);
        let simlab = self.simlab.clone();
        self.wait_readers(&simlab)
    }

    /// The state directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Every reader of the bench's pcscd, cards first.
    pub fn readers(&self) -> &[String] {
        &self.readers
    }

    /// What a program on the bench needs to know, as environment variables:
    ///
    /// - `PCSCLITE_CSOCK_NAME`: the bench's pcscd (every pcsc-lite client honours it);
    /// - `SIMLAB_READERS`: the readers with cards, in `--card` order, separated by `;`;
    ///   `SIMLAB_READER0`, `SIMLAB_READER1` …: each;
    /// - `SIMLAB_SERIAL`: the firmware token under QEMU, as `--serial` takes it;
    /// - `SIMLAB_MODEMS`: the modems' pty links, separated by `:`; `SIMLAB_MODEM0` …: each;
    /// - `SIMLAB_LAB`: the state directory (logs of every component).
    pub fn env(&self) -> Vec<(String, String)> {
        let mut env = vec![("SIMLAB_LAB".to_string(), self.dir.display().to_string())];
        if let Some(p) = &self.pcscd {
            env.push((
                "PCSCLITE_CSOCK_NAME".into(),
                p.socket().display().to_string(),
            ));
        }
        let readers: Vec<&str> = self.cards.iter().map(|c| c.reader.as_str()).collect();
        env.push(("SIMLAB_READERS".into(), readers.join(";")));
        for (i, r) in readers.iter().enumerate() {
            env.push((format!("SIMLAB_READER{i}"), r.to_string()));
        }
        let modems: Vec<String> = self
            .modems
            .iter()
            .map(|m| m.link.display().to_string())
            .collect();
        if let Some(t) = &self.token {
            env.push(("SIMLAB_SERIAL".into(), t.serial()));
        }
        env.push(("SIMLAB_MODEMS".into(), modems.join(":")));
        for (i, m) in modems.iter().enumerate() {
            env.push((format!("SIMLAB_MODEM{i}"), m.clone()));
        }
        env
    }

    /// A component that has ended while the bench runs, with its status.
    pub fn crashed(&mut self) -> Option<String> {
        let pcscd = self
            .pcscd
            .as_mut()
            .and_then(|p| p.child().try_wait().map(|s| format!("pcscd ({s})")));
        pcscd.or_else(|| {
            self.cards
                .iter_mut()
                .map(|c| &mut c.child)
                .chain(self.modems.iter_mut().map(|m| &mut m.child))
                .chain(self.token.iter_mut().map(|t| &mut t.child))
                .find_map(|c| c.try_wait().map(|s| format!("{} ({s})", c.name())))
        })
    }

    /// Tears the bench down: cards and modems first, then pcscd, then the sockets, links and
    /// pid file. Also what dropping it does.
    pub fn stop(&mut self) {
        for c in &mut self.cards {
            c.child.signal(libc::SIGTERM);
        }
        for m in &mut self.modems {
            m.child.signal(libc::SIGTERM);
        }
        if let Some(t) = &mut self.token {
            t.child.signal(libc::SIGTERM);
        }
        for c in &mut self.cards {
            c.child.stop(Duration::from_secs(5));
        }
        if let Some(t) = &mut self.token {
            t.child.stop(Duration::from_secs(5));
        }
        for m in &mut self.modems {
            m.child.stop(Duration::from_secs(5));
            let _ = std::fs::remove_file(&m.link);
        }
        if let Some(mut p) = self.pcscd.take() {
            p.stop();
        }
        let _ = std::fs::remove_file(self.dir.join("lab.pid"));
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Takes the state directory's lock (held while the bench runs; released by the kernel if
/// simlab dies) and records our pid for `lab down`.
fn lock(dir: &Path) -> Result<std::fs::File, LabError> {
    let path = dir.join("lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|source| LabError::Io {
            context: format!("opening {}", path.display()),
            source,
        })?;
    if file.try_lock().is_err() {
        return Err(LabError::Busy {
            dir: dir.display().to_string(),
            pid: std::fs::read_to_string(dir.join("lab.pid"))
                .map(|p| p.trim().to_string())
                .unwrap_or_else(|_| "unknown".into()),
        });
    }
    std::fs::write(dir.join("lab.pid"), format!("{}\n", std::process::id())).map_err(|source| {
        LabError::Io {
            context: format!("writing {}/lab.pid", dir.display()),
            source,
        }
    })?;
    Ok(file)
}

/// Whether a bench holds `dir` now, and its pid.
pub fn running(dir: &Path) -> Option<u32> {
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(dir.join("lock"))
        .ok()?;
    if file.try_lock().is_ok() {
        return None;
    }
    std::fs::read_to_string(dir.join("lab.pid"))
        .ok()
        .and_then(|p| p.trim().parse().ok())
}

fn file(path: &Path) -> Result<std::fs::File, LabError> {
    std::fs::File::create(path).map_err(|source| LabError::Io {
        context: format!("creating {}", path.display()),
        source,
    })
}

fn log_tail(path: &Path) -> String {
    pcscd::tail(&std::fs::read_to_string(path).unwrap_or_default())
}
