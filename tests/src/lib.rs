//! Shared plumbing for the hardware-in-the-loop tests.
//!
//! These tests drive real components (pcscd with vpcd, ptys, QEMU, reference tools such as
//! libosmocore's `osmo-auc-gen`). On a developer's machine a missing component skips a test with
//! a message; with `SIMLAB_HIL=require` (CI sets it) the same absence fails the test, so CI can
//! never pass by silently testing nothing.
//!
//! Every process a test starts is owned by a guard that stops it (SIGTERM, then SIGKILL) and
//! waits for it on drop, panics included: nothing outlives its test, and nothing is left as a
//! zombie.

use std::io::Read;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

pub mod postgres;
pub mod webdriver;

/// Whether missing dependencies must fail tests instead of skipping them.
pub fn required() -> bool {
    std::env::var("SIMLAB_HIL").is_ok_and(|v| v == "require")
}

/// Finds an executable on PATH (or an absolute path) that the test needs.
pub fn find_tool(tool: &str) -> Option<PathBuf> {
    let candidate = Path::new(tool);
    if candidate.is_absolute() {
        return candidate.is_file().then(|| candidate.to_path_buf());
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/sbin")])
        .map(|dir| dir.join(tool))
        .find(|p| p.is_file())
}

/// True when `tool` is available. Otherwise: panics under `SIMLAB_HIL=require`, or prints why
/// the test is skipped and returns false.
pub fn require(tool: &str) -> bool {
    if find_tool(tool).is_some() {
        return true;
    }
    missing(&format!(
        "{tool} is not installed (scripts/setup installs it)"
    ))
}

/// True when `path` exists; otherwise as [`require`].
pub fn require_file(path: &str, package: &str) -> bool {
    if Path::new(path).exists() {
        return true;
    }
    missing(&format!(
        "{path} is missing (Debian package {package}; scripts/setup installs it)"
    ))
}

fn missing(why: &str) -> bool {
    if required() {
        panic!("SIMLAB_HIL=require: {why}");
    }
    eprintln!("skipping: {why}");
    false
}

/// The workspace root, for fixtures and the simlab binary.
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default()
}

/// A fresh path in this test process's own temporary directory (any old file removed).
pub fn temp_path(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("simlab-hil-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temporary directory");
    let path = dir.join(name);
    let _ = std::fs::remove_file(&path);
    path
}

/// Where cargo builds: CARGO_TARGET_DIR (relative to the workspace, as cargo reads it) or
/// target/.
pub fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .map(|d| {
            if d.is_absolute() {
                d
            } else {
                workspace_root().join(d)
            }
        })
        .unwrap_or_else(|| workspace_root().join("target"))
}

/// Builds the QEMU board's token firmware and returns its ELF. The board is a workspace of
/// its own whose config puts its build in target/firmware; CARGO_TARGET_DIR would override
/// that, so it is set to `<target dir>/firmware` explicitly, as scripts/qemu-token does.
pub fn qemu_token_firmware() -> PathBuf {
    let out = target_dir().join("firmware");
    let built = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .args(["build", "--quiet", "--release"])
        .env("CARGO_TARGET_DIR", &out)
        .current_dir(workspace_root().join("firmware/boards/qemu-lm3s6965"))
        .status()
        .expect("run cargo build for the QEMU board");
    assert!(built.success(), "building the QEMU board");
    out.join("thumbv7m-none-eabi/release/simlab-token-qemu")
}

/// A card profile in fixtures/cards.
pub fn profile(name: &str) -> PathBuf {
    workspace_root().join("fixtures/cards").join(name)
}

/// The `simlab` binary of this build, built once per test process so it is never stale.
pub fn simlab_bin() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let test_exe = std::env::current_exe().expect("test executable path");
        // target/<profile>/deps/<test> → target/<profile>/simlab
        let profile_dir = test_exe
            .parent()
            .and_then(Path::parent)
            .expect("target dir");
        let release = profile_dir.file_name().is_some_and(|n| n == "release");
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut build = Command::new(cargo);
        build
            .current_dir(workspace_root())
            .args(["build", "--quiet", "-p", "simlab", "--bin", "simlab"])
            // The faults the tests inject (`--exit-after-records`, `--pull-after`); `bench` as
            // in tests/Cargo.toml, so this build is the one `cargo test --workspace` made.
            .args(["--features", "test-faults,bench"]);
        if release {
            build.arg("--release");
        }
        let status = build.status().expect("run cargo build");
        assert!(status.success(), "cargo build -p simlab failed");
        profile_dir.join("simlab")
    })
}

/// Runs `simlab` with arguments and returns its output.
pub fn simlab(args: &[&str]) -> Output {
    Command::new(simlab_bin())
        .args(args)
        .envs(bench_env())
        .current_dir(workspace_root())
        .output()
        .expect("run simlab")
}

/// stdout and stderr as text.
pub fn text(o: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

/// stdout as JSON, or a panic that shows both streams.
pub fn json(o: &Output) -> serde_json::Value {
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", text(o)))
}

/// A child process that is stopped and reaped when dropped.
pub struct Process {
    child: Option<Child>,
    name: String,
}

impl Process {
    pub fn spawn(name: &str, cmd: &mut Command) -> Self {
        let child = cmd.spawn().unwrap_or_else(|e| panic!("start {name}: {e}"));
        Process {
            child: Some(child),
            name: name.to_string(),
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// Its piped stdout, if it was started with one.
    pub fn stdout(&mut self) -> Option<&mut std::process::ChildStdout> {
        self.child.as_mut().and_then(|c| c.stdout.as_mut())
    }

    /// Its piped stderr, if it was started with one.
    pub fn stderr(&mut self) -> Option<&mut std::process::ChildStderr> {
        self.child.as_mut().and_then(|c| c.stderr.as_mut())
    }

    /// Waits for it to exit by itself (the guard still reaps it if this is never called).
    pub fn wait(&mut self) -> Option<std::process::ExitStatus> {
        self.child.as_mut().and_then(|c| c.wait().ok())
    }

    /// Sends a signal (SIGINT = Ctrl-C, SIGTERM, …).
    pub fn signal(&self, signal: i32) {
        if let Some(child) = &self.child {
            // SAFETY: kill(2) with a pid we own and a valid signal number has no memory effects.
            unsafe { libc::kill(child.id() as i32, signal) };
        }
    }

    /// Whether it has exited (and its exit status).
    pub fn try_wait(&mut self) -> Option<std::process::ExitStatus> {
        self.child
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten())
    }

    /// Stops it with `signal`, waits up to `timeout`, then SIGKILLs; returns the exit status
    /// and whatever it wrote to a piped stderr.
    pub fn stop_with(
        &mut self,
        signal: i32,
        timeout: Duration,
    ) -> (Option<std::process::ExitStatus>, String) {
        let Some(mut child) = self.child.take() else {
            return (None, String::new());
        };
        if child.try_wait().ok().flatten().is_none() {
            // SAFETY: as in `signal`.
            unsafe { libc::kill(child.id() as i32, signal) };
        }
        let deadline = Instant::now() + timeout;
        let mut status = None;
        while Instant::now() < deadline {
            if let Ok(Some(s)) = child.try_wait() {
                status = Some(s);
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        if status.is_none() {
            eprintln!("{} did not stop within {timeout:?}; killing it", self.name);
            let _ = child.kill();
            status = child.wait().ok().filter(|_| false);
        }
        let mut err = String::new();
        if let Some(mut e) = child.stderr.take() {
            let _ = e.read_to_string(&mut err);
        }
        (status, err)
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.stop_with(libc::SIGTERM, Duration::from_secs(3));
    }
}

/// The two readers of a bench, and the ports a *system* pcscd's default vpcd entry listens on
/// (see [`SystemPcscd`]); a [`Bench`]'s own ports are [`Bench::port`].
pub const READERS: [(&str, u16); 2] = [("Virtual PCD 00 00", 35963), ("Virtual PCD 00 01", 35964)];

const PCSCD_SOCKET: &str = "/run/pcscd/pcscd.comm";

thread_local! {
    /// What the bench of this thread's test adds to the environment of every program the
    /// harness starts for it (`PCSCLITE_CSOCK_NAME` …); empty outside a bench. Per thread, so
    /// tests with benches of their own run side by side.
    static BENCH_ENV: std::cell::RefCell<Vec<(String, String)>> =
        const { std::cell::RefCell::new(Vec::new()) };
}

fn set_bench_env(env: Vec<(String, String)>) {
    BENCH_ENV.with(|e| *e.borrow_mut() = env);
}

/// The current test's bench environment, for programs it starts itself (pyscard, pcsc_scan).
pub fn bench_env() -> Vec<(String, String)> {
    BENCH_ENV.with(|e| e.borrow().clone())
}

/// A private bench with two empty readers (simlab's own `simlab lab` code, `simlab_lab`): a
/// pcscd of its own on a socket and ports nobody else uses, so a system pcscd is neither
/// needed nor disturbed, no test skips because of one, and benches run side by side. Its
/// environment reaches every program the harness starts on the test's thread ([`simlab`],
/// [`bench_env`]).
pub struct Bench {
    lab: simlab_lab::Lab,
    _share: BenchLock,
}

/// A bench's pcscd rewrites `/run/pcscd/pcscd.pid` while it runs (see simlab_lab::pcscd):
/// benches hold this lock shared, and the one test that checks a system pcscd's pid file
/// ([`SystemPcscd`]) holds it exclusively, in this process and any other.
pub struct BenchLock {
    _file: std::fs::File,
}

fn lock_file() -> std::fs::File {
    let path = std::env::temp_dir().join("simlab-bench.lock");
    std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .unwrap_or_else(|e| panic!("open {}: {e}", path.display()))
}

/// The lock shared with every other bench.
pub fn bench_share() -> BenchLock {
    let file = lock_file();
    file.lock_shared().expect("shared bench lock");
    BenchLock { _file: file }
}

/// The lock alone: no bench's pcscd runs while it is held.
pub fn bench_lock() -> BenchLock {
    let file = lock_file();
    file.lock().expect("exclusive bench lock");
    BenchLock { _file: file }
}

/// No pcscd at all, as far as the programs the harness starts can tell: their
/// `PCSCLITE_CSOCK_NAME` names a socket nobody listens on. Whatever runs on the machine.
pub struct NoPcscd {
    dir: PathBuf,
}

pub fn without_pcscd() -> NoPcscd {
    let dir = temp_path("no-pcscd");
    std::fs::create_dir_all(&dir).expect("no-pcscd dir");
    set_bench_env(vec![(
        "PCSCLITE_CSOCK_NAME".into(),
        dir.join("pcscd.comm").display().to_string(),
    )]);
    NoPcscd { dir }
}

impl Drop for NoPcscd {
    fn drop(&mut self) {
        set_bench_env(Vec::new());
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Bench {
    /// Stops the bench's pcscd and starts it again, as a system update or a crash would.
    pub fn restart_pcscd(&mut self) {
        self.lab
            .restart_pcscd()
            .unwrap_or_else(|e| panic!("restarting the bench's pcscd: {e}"));
    }

    /// Starts the bench. `None` (skip) when pcscd or vpcd are missing and `SIMLAB_HIL` is not
    /// `require`.
    pub fn start() -> Option<Self> {
        let share = bench_share();
        if !require("pcscd")
            || !require_file(
                "/usr/lib/pcsc/drivers/serial/libifdvpcd.so",
                "vsmartcard-vpcd",
            )
        {
            return None;
        }
        static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let dir = temp_path(&format!(
            "bench-{}",
            N.fetch_add(1, std::sync::atomic::Ordering::SeqCst)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        let lab = simlab_lab::Lab::start(&simlab_lab::Spec {
            dir,
            simlab: simlab_bin().to_path_buf(),
            cards: Vec::new(),
            modems: Vec::new(),
            base_port: None,
            spare_readers: READERS.len(),
            token: None,
        })
        .unwrap_or_else(|e| panic!("the test bench: {e}"));
        set_bench_env(lab.env());
        Some(Bench { lab, _share: share })
    }

    /// The vpcd port of reader `slot`.
    pub fn port(&self, slot: usize) -> u16 {
        self.lab.port(slot)
    }

    /// Puts the card model with `profile` into reader `slot` (0 or 1) and waits until pcscd
    /// sees it. Extra arguments go to `simlab emulate card` (e.g. `--state FILE`).
    pub fn insert(&self, slot: usize, profile: &Path, extra: &[&str]) -> Process {
        let (reader, _) = READERS[slot];
        let mut cmd = Command::new(simlab_bin());
        cmd.args(["emulate", "card", "--profile"])
            .arg(profile)
            .args(["--vpcd", &format!("127.0.0.1:{}", self.port(slot))])
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let card = Process::spawn("simlab emulate card", &mut cmd);
        wait_for_card(reader, true, Duration::from_secs(10));
        card
    }
}

impl Drop for Bench {
    fn drop(&mut self) {
        self.lab.stop();
        set_bench_env(Vec::new());
    }
}

/// A pcscd on the system socket (`/run/pcscd/pcscd.comm`) with the default vpcd entry, as a
/// developer's machine runs one: the one already running, or one started here. Only for the
/// tests that show a bench leaves it alone.
pub struct SystemPcscd {
    process: Option<Process>,
    conf: Option<PathBuf>,
    _lock: BenchLock,
}

impl SystemPcscd {
    pub fn start() -> Option<Self> {
        let lock = bench_lock();
        if !require("pcscd") {
            return None;
        }
        if pcscd_running() {
            eprintln!("using the pcscd that is already running on {PCSCD_SOCKET}");
            return Some(SystemPcscd {
                process: None,
                conf: None,
                _lock: lock,
            });
        }
        let conf = std::env::temp_dir().join(format!("simlab-pcscd-{}", std::process::id()));
        std::fs::create_dir_all(&conf).expect("conf dir");
        std::fs::write(
            conf.join("vpcd"),
            format!(
                "FRIENDLYNAME \"Virtual PCD\"\nDEVICENAME /dev/null:0x{port:04X}\nLIBPATH /usr/lib/pcsc/drivers/serial/libifdvpcd.so\nCHANNELID 0x{port:04X}\n",
                port = READERS[0].1
            ),
        )
        .expect("write reader.conf");
        let process = Process::spawn(
            "pcscd",
            Command::new(find_tool("pcscd").expect("pcscd"))
                .args(["-f", "-c"])
                .arg(&conf)
                .stdout(Stdio::null())
                .stderr(Stdio::null()),
        );
        let deadline = Instant::now() + Duration::from_secs(5);
        while !pcscd_running() {
            assert!(
                Instant::now() < deadline,
                "the system pcscd did not come up"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        Some(SystemPcscd {
            process: Some(process),
            conf: Some(conf),
            _lock: lock,
        })
    }

    /// Whether it was started here (and so has the default vpcd readers on 35963/35964).
    pub fn ours(&self) -> bool {
        self.process.is_some()
    }
}

impl Drop for SystemPcscd {
    fn drop(&mut self) {
        self.process.take();
        if let Some(conf) = self.conf.take() {
            let _ = std::fs::remove_dir_all(conf);
        }
    }
}

/// Whether a pcscd answers on the system socket.
pub fn pcscd_running() -> bool {
    std::os::unix::net::UnixStream::connect(PCSCD_SOCKET).is_ok()
}

/// Reader names as `simlab readers --json` reports them (empty if pcscd is unreachable).
pub fn reader_names() -> Vec<String> {
    readers_json()
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|r| r["name"].as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

/// `simlab readers --json`, or `null` when it fails.
pub fn readers_json() -> serde_json::Value {
    let o = simlab(&["readers", "--json"]);
    serde_json::from_slice(&o.stdout).unwrap_or(serde_json::Value::Null)
}

/// Waits until `reader` has (or no longer has) a card.
pub fn wait_for_card(reader: &str, present: bool, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    loop {
        let readers = readers_json();
        let now = readers.as_array().and_then(|a| {
            a.iter()
                .find(|r| r["name"] == reader)
                .map(|r| r["card_present"] == true)
        });
        if now == Some(present) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "reader {reader:?} card_present={present} not reached in {timeout:?}: {readers}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Whether something listens on a local TCP port.
pub fn port_open(port: u16) -> bool {
    TcpStream::connect(("127.0.0.1", port)).is_ok()
}

/// A long-running `simlab` (a server, the virtual SMS network) with stdout and stderr in files
/// of this test process's temporary directory: started, then waited for (at most 30 s) until
/// its first stdout line — the JSON start line servers print once they are ready. Returns the
/// process, that line parsed, and the stderr log's path.
pub fn spawn_started(name: &str, args: &[String]) -> (Process, serde_json::Value, PathBuf) {
    let out = temp_path(&format!("{name}.out"));
    let log = temp_path(&format!("{name}.log"));
    let mut cmd = Command::new(simlab_bin());
    cmd.args(args)
        .current_dir(workspace_root())
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out).expect("stdout file"))
        .stderr(std::fs::File::create(&log).expect("log file"));
    let mut p = Process::spawn(name, &mut cmd);
    let deadline = Instant::now() + Duration::from_secs(30);
    let line = loop {
        let got = std::fs::read_to_string(&out).unwrap_or_default();
        if let Some((line, _)) = got.split_once('\n') {
            break line.to_string();
        }
        if let Some(status) = p.try_wait() {
            panic!(
                "{name} exited ({status}): {}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
        }
        assert!(Instant::now() < deadline, "{name}: no start line");
        std::thread::sleep(Duration::from_millis(20));
    };
    let v = serde_json::from_str(&line).unwrap_or_else(|e| panic!("{name}: {line:?}: {e}"));
    (p, v, log)
}

/// Runs `simlab` with a deadline: a run that has not finished after `timeout` is killed and
/// fails the test, so a hung modem conversation cannot hang the suite.
pub fn simlab_timeout(args: &[&str], timeout: Duration) -> Output {
    run_cmd(
        Command::new(simlab_bin())
            .args(args)
            .envs(bench_env())
            .current_dir(workspace_root()),
        timeout,
    )
}

/// Runs any command with a deadline.
pub fn run_cmd(cmd: &mut Command, timeout: Duration) -> Output {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let mut out = child.stdout.take().unwrap();
    let mut err = child.stderr.take().unwrap();
    let ot = std::thread::spawn(move || {
        let mut b = Vec::new();
        let _ = out.read_to_end(&mut b);
        b
    });
    let et = std::thread::spawn(move || {
        let mut b = Vec::new();
        let _ = err.read_to_end(&mut b);
        b
    });
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Ok(Some(s)) = child.try_wait() {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{cmd:?} did not finish within {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    Output {
        status,
        stdout: ot.join().unwrap(),
        stderr: et.join().unwrap(),
    }
}

/// Runs gammu with the configuration `rc` (see [`VirtualModem::gammurc`]), at most 60 s.
pub fn gammu(rc: &Path, args: &[&str]) -> Output {
    run_cmd(
        Command::new(find_tool("gammu").expect("gammu (check with require(\"gammu\") first)"))
            .arg("-c")
            .arg(rc)
            .args(args),
        Duration::from_secs(60),
    )
}

/// A virtual modem (`simlab emulate modem`) on a real pty, with its symlink, spool and stderr
/// log in a directory of its own; stopped, waited for and cleaned up on drop.
pub struct VirtualModem {
    /// The symlink to the pty's slave: what `--modem` and gammu open.
    pub link: PathBuf,
    /// The spool: `sent/*.json` and `inbox/`.
    pub spool: PathBuf,
    /// The directory holding all of it.
    pub dir: PathBuf,
    process: Option<Process>,
}

impl VirtualModem {
    /// Starts `simlab emulate modem --link … --spool …` plus `extra` arguments and waits (at
    /// most 10 s) until the link exists.
    pub fn start(extra: &[&str]) -> VirtualModem {
        static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "simlab-vmodem-{}-{}",
            std::process::id(),
            N.fetch_add(1, std::sync::atomic::Ordering::SeqCst)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("modem dir");
        let link = dir.join("modem");
        let spool = dir.join("spool");
        let log = std::fs::File::create(dir.join("emulator.log")).expect("emulator log");
        let mut cmd = Command::new(simlab_bin());
        cmd.args(["emulate", "modem", "--link"])
            .arg(&link)
            .arg("--spool")
            .arg(&spool)
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log);
        let mut process = Process::spawn("simlab emulate modem", &mut cmd);
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::fs::symlink_metadata(&link).is_err() {
            if let Some(status) = process.try_wait() {
                panic!(
                    "simlab emulate modem exited ({status}): {}",
                    std::fs::read_to_string(dir.join("emulator.log")).unwrap_or_default()
                );
            }
            assert!(
                Instant::now() < deadline,
                "the virtual modem did not come up"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        VirtualModem {
            link,
            spool,
            dir,
            process: Some(process),
        }
    }

    /// A gammu configuration for this modem (AT connection, gammu's own log beside it).
    pub fn gammurc(&self) -> PathBuf {
        let rc = self.dir.join("gammurc");
        std::fs::write(
            &rc,
            format!(
                "[gammu]\ndevice = {}\nconnection = at\nlogfile = {}\nlogformat = textall\n",
                self.path(),
                self.dir.join("gammu.log").display()
            ),
        )
        .expect("gammurc");
        rc
    }

    /// The link as a string, for command lines.
    pub fn path(&self) -> &str {
        self.link.to_str().expect("utf-8 temp path")
    }

    /// The submitted messages spooled so far, in order.
    pub fn sent(&self) -> Vec<serde_json::Value> {
        let mut files: Vec<PathBuf> = std::fs::read_dir(self.spool.join("sent"))
            .map(|d| d.flatten().map(|e| e.path()).collect())
            .unwrap_or_default();
        files.retain(|p| p.extension().is_some_and(|e| e == "json"));
        files.sort();
        files
            .iter()
            .filter_map(|p| serde_json::from_str(&std::fs::read_to_string(p).ok()?).ok())
            .collect()
    }

    /// Drops a message into the inbox (written atomically).
    pub fn inbox(&self, name: &str, message: &serde_json::Value) {
        let dir = self.spool.join("inbox");
        std::fs::create_dir_all(&dir).expect("inbox");
        let tmp = dir.join(format!("{name}.tmp"));
        std::fs::write(&tmp, message.to_string()).expect("inbox file");
        std::fs::rename(&tmp, dir.join(format!("{name}.json"))).expect("inbox rename");
    }

    /// What the emulator wrote to stderr so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("emulator.log")).unwrap_or_default()
    }

    /// Whether the emulator process has exited (e.g. after the `vanish` fault), waiting at
    /// most `timeout`.
    pub fn exited_within(&mut self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if self.process.as_mut().and_then(Process::try_wait).is_some() {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Stops the emulator with Ctrl-C and waits for it; returns whether it exited cleanly.
    pub fn stop(&mut self) -> bool {
        self.process
            .take()
            .map(|mut p| p.stop_with(libc::SIGINT, Duration::from_secs(5)).0)
            .is_some_and(|s| s.is_some_and(|s| s.success()))
    }
}

impl Drop for VirtualModem {
    fn drop(&mut self) {
        self.process.take();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
