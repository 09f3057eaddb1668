//! `simlab lab`: a whole virtual bench for someone else's tests (simlab_lab does the work).

use super::{Global, Output};
use clap::{Args, Subcommand};
use serde_json::json;
use simlab_card::error::{Error, Result};
use simlab_card::profile::Profile;
use simlab_lab::child::{Child, Group};
use simlab_lab::{CardSpec, Lab, LabError, Spec};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

macro_rules! environment {
    () => {
        "\
What the program sees (also printed by `lab up`):
  PCSCLITE_CSOCK_NAME  the bench's own pcscd; every pcsc-lite client (pyscard, pcsc_scan,
                       opensc-tool, pySim, simlab --reader) uses it instead of the system's
  SIMLAB_READERS       the readers holding the cards, in --card order, separated by `;`
  SIMLAB_READER0 …     each of them (`simlab --reader \"$SIMLAB_READER0\" card info`)
  SIMLAB_SERIAL        the firmware token under QEMU (--token), as --serial takes it
  SIMLAB_MODEMS        the virtual modems' pty links, separated by `:`
  SIMLAB_MODEM0 …      each of them (`simlab --modem \"$SIMLAB_MODEM0\" sms list`, gammu)
  SIMLAB_LAB           the bench's state directory: pcscd.log, card-N.log, modem-N.log

The bench never touches a system pcscd: its pcscd listens on a socket in the state directory
(socket activation: pcscd 1.9 ignores PCSCLITE_CSOCK_NAME itself) with vpcd readers on ports of
its own. Reader names: \"Virtual PCD 00 00\", \"Virtual PCD 00 01\", then \"Virtual PCD #1 00 00\" …;
one pcscd serves at most 16 readers, so a bench holds at most 16 cards."
    };
}

macro_rules! run_help {
    () => {
        concat!(
        "Exit status: COMMAND's; 128+N when a signal N ended it; 127 when COMMAND does not exist;\n",
        "2 for bad input (a profile that does not parse, too many cards, a port in use, pcscd or\n",
        "vpcd missing), found before anything starts. SIMLAB_PCSCD, SIMLAB_VPCD_DRIVER and\n",
        "SIMLAB_QEMU name pcscd, libifdvpcd.so and qemu-system-arm where they are not in the usual places.\n\n",
        "Examples:\n",
        "  simlab lab run --card fixtures/cards/usim-milenage.toml -- pcsc_scan -r\n",
        "  simlab lab run --card a.toml --card b.toml --vmodem -- python3 -m pytest tests/\n",
        "  simlab lab run --card fixtures/cards/usim-milenage.toml -- sh -c 'simlab --reader \"$SIMLAB_READER0\" card info'\n"
        )
    };
}

macro_rules! up_help {
    () => {
        concat!(
            "Example:\n",
            "  simlab lab up --card fixtures/cards/usim-milenage.toml > lab.env &\n",
            "  sleep 2; . ./lab.env; pcsc_scan -r\n",
            "  simlab lab down\n\n",
            "A second `lab up` on the same --state is refused (exit 2) while the first runs."
        )
    };
}

#[derive(Subcommand, Debug)]
pub enum LabCommand {
    /// Start a private bench, run COMMAND in it, tear it down; exits with COMMAND's status.
    #[command(after_help = concat!(run_help!(), "\n", environment!()))]
    Run {
        #[command(flatten)]
        bench: BenchArgs,
        /// Keep the state directory (logs) after the run.
        #[arg(long)]
        keep: bool,
        /// The program and its arguments (after `--`).
        #[arg(required = true, trailing_var_arg = true, value_name = "COMMAND")]
        command: Vec<String>,
    },
    /// Start a bench and keep it until `simlab lab down` or Ctrl-C; prints its environment as
    /// `export` lines (or JSON with --json) once it is ready.
    #[command(after_help = concat!(up_help!(), "\n\n", environment!()))]
    Up {
        #[command(flatten)]
        bench: BenchArgs,
    },
    /// Stop the bench that `lab up` started on a state directory.
    Down {
        /// The state directory (default: the one `lab up` uses).
        #[arg(long, value_name = "DIR")]
        state: Option<PathBuf>,
    },
}

/// What goes on the bench.
#[derive(Args, Debug)]
pub struct BenchArgs {
    /// A virtual card in the next reader, personalised from this profile (repeat, up to 16).
    #[arg(long = "card", value_name = "PROFILE.toml")]
    cards: Vec<PathBuf>,
    /// A virtual modem on a pty, with the SIM of this profile or the built-in one (repeat).
    /// (`--modem` names a real modem everywhere else in simlab.)
    #[arg(long = "vmodem", value_name = "PROFILE.toml", num_args = 0..=1, default_missing_value = "")]
    modems: Vec<String>,
    /// The simlab-firmware token under QEMU from this board image (the qemu-lm3s6965 ELF:
    /// `cd firmware/boards/qemu-lm3s6965 && cargo build --release` puts it in
    /// target/firmware/thumbv7m-none-eabi/release/simlab-token-qemu); SIMLAB_SERIAL reaches it.
    #[arg(long, value_name = "ELF")]
    token: Option<PathBuf>,
    /// Personalise the new token from this card profile (default: left factory-fresh).
    #[arg(long, value_name = "PROFILE.toml", requires = "token")]
    token_profile: Option<PathBuf>,
    /// Empty readers besides the cards' (for tests that insert cards themselves).
    #[arg(long, value_name = "N", default_value_t = 0)]
    spare_readers: usize,
    /// The first vpcd port (each card needs one, in order; default: free ports are found).
    #[arg(long, value_name = "PORT")]
    port: Option<u16>,
    /// The state directory (default: a new one per `run`; a fixed one per user for `up`).
    #[arg(long, value_name = "DIR")]
    state: Option<PathBuf>,
}

static STOP: AtomicBool = AtomicBool::new(false);

pub fn run(out: &Output, global: &Global, cmd: &LabCommand) -> Result<i32> {
    if global.reader.is_some()
        || global.emulate.is_some()
        || global.modem.is_some()
        || global.serial.is_some()
    {
        return Err(Error::arg(
            "--reader/--emulate/--modem/--serial",
            "`lab` builds its own bench: name its cards with --card and modems with --vmodem",
        ));
    }
    match cmd {
        LabCommand::Run {
            bench,
            keep,
            command,
        } => lab_run(out, bench, *keep, command),
        LabCommand::Up { bench } => lab_up(out, bench),
        LabCommand::Down { state } => lab_down(out, state.as_deref()),
    }
}

/// The state directory `lab up` and `lab down` use by default: per user, so two users of one
/// machine do not meet.
fn default_state() -> PathBuf {
    // SAFETY: getuid cannot fail.
    let uid = unsafe { libc::getuid() };
    std::env::temp_dir().join(format!("simlab-lab-{uid}"))
}

/// Checks every profile and builds the spec; nothing is started here.
fn spec(bench: &BenchArgs, dir: PathBuf) -> Result<Spec> {
    for p in &bench.cards {
        Profile::load(p)?;
    }
    let mut modems = Vec::new();
    for m in &bench.modems {
        if m.is_empty() {
            modems.push(None);
        } else {
            Profile::load(Path::new(m))?;
            modems.push(Some(PathBuf::from(m)));
        }
    }
    if let Some(elf) = &bench.token
        && !elf.is_file()
    {
        return Err(Error::arg(
            "--token",
            format!(
                "{} is not a file (build it: cd firmware/boards/qemu-lm3s6965 && cargo build --release)",
                elf.display()
            ),
        ));
    }
    if let Some(p) = &bench.token_profile {
        Profile::load(p)?;
    }
    if bench.cards.len() + bench.spare_readers > simlab_lab::pcscd::MAX_READERS {
        return Err(lab_error(LabError::TooManyCards {
            asked: bench.cards.len() + bench.spare_readers,
            max: simlab_lab::pcscd::MAX_READERS,
        }));
    }
    let simlab = std::env::current_exe().map_err(|source| Error::Io {
        context: "finding the simlab binary".into(),
        source,
    })?;
    Ok(Spec {
        dir,
        simlab,
        cards: bench
            .cards
            .iter()
            .map(|p| CardSpec {
                profile: absolute(p),
                extra: Vec::new(),
            })
            .collect(),
        modems: modems
            .into_iter()
            .map(|m| m.map(|p| absolute(&p)))
            .collect(),
        base_port: bench.port,
        spare_readers: bench.spare_readers,
        token: bench
            .token
            .as_ref()
            .map(|elf| simlab_lab::token::TokenSpec { elf: absolute(elf) }),
    })
}

fn absolute(p: &Path) -> PathBuf {
    std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf())
}

fn lab_error(e: LabError) -> Error {
    match e {
        LabError::Missing { .. } => Error::arg("lab", e.to_string()),
        LabError::TooManyCards { .. } => Error::arg("--card", e.to_string()),
        LabError::PortInUse { .. } => Error::arg("--port", e.to_string()),
        LabError::Busy { .. } => Error::arg("--state", e.to_string()),
        LabError::NotReady { what, log } => Error::Io {
            context: format!("the bench: {what} did not come up"),
            source: std::io::Error::other(format!("its log ends:\n{log}")),
        },
        LabError::Io { context, source } => Error::Io { context, source },
    }
}

/// COMMAND as the shell would find it, or None (exit 127).
fn resolve(program: &str) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let executable = |p: &Path| {
        p.metadata()
            .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    };
    if program.contains('/') {
        let p = PathBuf::from(program);
        return executable(&p).then_some(p);
    }
    std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())
        .map(|d| d.join(program))
        .find(|p| executable(p))
}

/// A fresh state directory for one `lab run`; benches of runs that were killed leave theirs,
/// which are removed here once nothing holds them.
fn fresh_state() -> PathBuf {
    let tmp = std::env::temp_dir();
    if let Ok(entries) = std::fs::read_dir(&tmp) {
        for e in entries.flatten() {
            let name = e.file_name();
            let name = name.to_string_lossy();
            if name.starts_with("simlab-lab-run-")
                && e.path().join("lock").exists()
                && simlab_lab::running(&e.path()).is_none()
            {
                let _ = std::fs::remove_dir_all(e.path());
            }
        }
    }
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    tmp.join(format!(
        "simlab-lab-run-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst)
    ))
}

fn install_stop() -> Result<()> {
    simlab_emulate::vpcd::install_ctrl_c(&STOP).map_err(|source| Error::Io {
        context: "installing the signal handlers".into(),
        source,
    })
}

/// Starts the bench and personalises its token, if one was asked for with a profile (the
/// image travels only over the link, as `firmware/examples/personalise.rs` sends it).
fn start(spec: &Spec, bench: &BenchArgs) -> Result<Lab> {
    let lab = Lab::start(spec).map_err(lab_error)?;
    if let (Some(token), Some(profile)) = (&lab.token, &bench.token_profile) {
        let profile = Profile::load(profile)?;
        let mut link = simlab_card::transport::serial::SerialTransport::open(&token.serial())?;
        if !link.info().personalised() {
            let card = profile.build_card_seeded([0; 32]);
            let mut image = vec![0u8; simlab_applet::state::STATE_LEN];
            card.save_state(&mut image);
            let result = link.personalise(&image);
            image.fill(0);
            result?;
        }
    }
    Ok(lab)
}

fn lab_run(out: &Output, bench: &BenchArgs, keep: bool, command: &[String]) -> Result<i32> {
    let (dir, ours) = match &bench.state {
        Some(d) => (d.clone(), false),
        None => (fresh_state(), true),
    };
    let spec = spec(bench, dir.clone())?;
    let Some(program) = resolve(&command[0]) else {
        eprintln!("simlab: lab run: {}: command not found", command[0]);
        return Ok(127);
    };
    install_stop()?;
    let started = std::time::Instant::now();
    let mut lab = start(&spec, bench).inspect_err(|_| {
        if ours {
            let _ = std::fs::remove_dir_all(&dir);
        }
    })?;
    out.detail(&format!(
        "lab: ready in {} ms: {} card(s), {} modem(s) in {}",
        started.elapsed().as_millis(),
        lab.cards.len(),
        lab.modems.len(),
        dir.display()
    ));
    let mut cmd = Command::new(&program);
    cmd.args(&command[1..]).envs(lab.env());
    let mut child = match Child::spawn(&command[0], &mut cmd, Group::Inherit) {
        Ok(c) => c,
        Err(e) => {
            drop(lab);
            eprintln!("simlab: lab run: {}: {e}", command[0]);
            return Ok(if e.kind() == std::io::ErrorKind::PermissionDenied {
                126
            } else {
                127
            });
        }
    };
    let mut warned = false;
    let status = loop {
        if let Some(s) = child.try_wait() {
            break s;
        }
        if STOP.load(Ordering::SeqCst) {
            // The terminal's Ctrl-C reached COMMAND too; a SIGTERM to simlab did not.
            child.signal(libc::SIGTERM);
            break child.stop(Duration::from_secs(5));
        }
        if !warned && let Some(what) = lab.crashed() {
            eprintln!(
                "simlab: lab: {what} ended while COMMAND runs; its log is in {}",
                dir.display()
            );
            warned = true;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let torn = std::time::Instant::now();
    lab.stop();
    drop(lab);
    out.detail(&format!(
        "lab: torn down in {} ms",
        torn.elapsed().as_millis()
    ));
    if ours && !keep {
        let _ = std::fs::remove_dir_all(&dir);
    } else {
        out.detail(&format!("lab: logs kept in {}", dir.display()));
    }
    use std::os::unix::process::ExitStatusExt;
    Ok(status
        .code()
        .or_else(|| status.signal().map(|s| 128 + s))
        .unwrap_or(1))
}

fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

fn lab_up(out: &Output, bench: &BenchArgs) -> Result<i32> {
    let dir = bench.state.clone().unwrap_or_else(default_state);
    let spec = spec(bench, dir.clone())?;
    install_stop()?;
    let mut lab = start(&spec, bench)?;
    let env = lab.env();
    let text: String = env
        .iter()
        .map(|(k, v)| format!("export {k}={}\n", shell_quote(v)))
        .collect();
    let value = json!({
        "state": dir.display().to_string(),
        "pid": std::process::id(),
        "env": env.iter().map(|(k, v)| (k.clone(), json!(v))).collect::<serde_json::Map<_, _>>(),
        "readers": lab.cards.iter().map(|c| json!({"name": c.reader, "port": c.port, "profile": c.profile.display().to_string()})).collect::<Vec<_>>(),
        "modems": lab.modems.iter().map(|m| m.link.display().to_string()).collect::<Vec<_>>(),
    });
    out.result(&text, &value)?;
    out.say(&format!(
        "lab: up in {} ({} card(s), {} modem(s)); `simlab lab down{}` or Ctrl-C stops it",
        dir.display(),
        lab.cards.len(),
        lab.modems.len(),
        bench
            .state
            .as_ref()
            .map(|d| format!(" --state {}", d.display()))
            .unwrap_or_default()
    ));
    let mut warned = false;
    while !STOP.load(Ordering::SeqCst) {
        if !warned && let Some(what) = lab.crashed() {
            eprintln!("simlab: lab: {what} ended; its log is in {}", dir.display());
            warned = true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    lab.stop();
    out.say("lab: down");
    Ok(0)
}

fn lab_down(out: &Output, state: Option<&Path>) -> Result<i32> {
    let dir = state.map(Path::to_path_buf).unwrap_or_else(default_state);
    let Some(pid) = simlab_lab::running(&dir) else {
        out.result(
            &format!("no bench is running on {}\n", dir.display()),
            &json!({"state": dir.display().to_string(), "stopped": false}),
        )?;
        return Ok(0);
    };
    // SAFETY: kill(2) with a pid read from the bench's own pid file, whose lock shows that
    // process still runs.
    unsafe {
        libc::kill(pid as libc::pid_t, libc::SIGTERM);
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while simlab_lab::running(&dir).is_some() {
        if std::time::Instant::now() > deadline {
            return Err(Error::Mismatch {
                what: format!(
                    "the bench (pid {pid}) on {} did not stop in 20 s",
                    dir.display()
                ),
            });
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    out.result(
        &format!("stopped the bench on {} (pid {pid})\n", dir.display()),
        &json!({"state": dir.display().to_string(), "stopped": true, "pid": pid}),
    )?;
    Ok(0)
}
