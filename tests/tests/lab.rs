//! `simlab lab`: the private bench other projects' CI uses, through the real pcscd, vpcd,
//! pyscard and pcsc_scan. The examples in examples/ci run exactly as their README shows, beside
//! a pcscd on the system socket that must not notice; every way a run can end leaves no
//! process and no socket behind.

use simlab_hil::{
    READERS, SystemPcscd, require, require_file, simlab, simlab_bin, text, workspace_root,
};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

const USIM: &str = "fixtures/cards/usim-milenage.toml";
const SIM: &str = "fixtures/cards/sim-comp128v1.toml";

/// Everything a bench needs on this machine; fails under SIMLAB_HIL=require.
fn stack() -> bool {
    require("pcscd")
        && require_file(
            "/usr/lib/pcsc/drivers/serial/libifdvpcd.so",
            "vsmartcard-vpcd",
        )
}

/// The stack, and the right to run a bench beside other benches (but not beside the test that
/// checks the system pcscd's pid file); `None` (skip) only without `SIMLAB_HIL=require`.
fn bench() -> Option<simlab_hil::BenchLock> {
    stack().then(simlab_hil::bench_share)
}

fn state(name: &str) -> PathBuf {
    let dir = simlab_hil::temp_path(&format!("lab-{name}"));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

/// Processes whose command line mentions `needle` (a state directory or a vpcd port).
fn leftovers(needle: &str) -> Vec<String> {
    let me = std::process::id().to_string();
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .chars()
                .all(|c| c.is_ascii_digit())
        })
        .filter(|e| e.file_name().to_string_lossy() != me)
        .filter_map(|e| {
            let cmd = std::fs::read(e.path().join("cmdline")).ok()?;
            let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
            cmd.contains(needle)
                .then(|| format!("{}: {cmd}", e.file_name().to_string_lossy()))
        })
        .collect()
}

/// No process of the bench on `dir` (and vpcd `port`) is left, within a few seconds.
fn assert_gone(dir: &Path, port: u16) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let mut left = leftovers(dir.to_str().unwrap());
        left.extend(leftovers(&format!("127.0.0.1:{port} ")));
        if left.is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "left running: {left:#?}");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        !dir.join("pcscd.comm").exists(),
        "stale socket in {}",
        dir.display()
    );
}

/// A free run of ports for `--port`.
fn free_port() -> u16 {
    loop {
        let l = std::net::TcpListener::bind("0.0.0.0:0").unwrap();
        let p = l.local_addr().unwrap().port();
        drop(l);
        if p < 65_000 && std::net::TcpListener::bind(("0.0.0.0", p + 1)).is_ok() {
            return p;
        }
    }
}

fn run(args: &[&str]) -> Output {
    simlab(args)
}

#[test]
fn the_ci_examples_run_through_lab_run_beside_a_system_pcscd() {
    if !stack()
        || !require("pcsc_scan")
        || !require_file(
            "/usr/lib/python3/dist-packages/smartcard/__init__.py",
            "python3-pyscard",
        )
    {
        return;
    }
    // A pcscd on the system socket with a card of its own, as a developer's machine has.
    let Some(system) = SystemPcscd::start() else {
        return;
    };
    let _system_card = system.ours().then(|| {
        simlab_hil::Process::spawn(
            "the system pcscd's card",
            Command::new(simlab_bin())
                .args(["emulate", "card", "--profile"])
                .arg(simlab_hil::profile("sim-xor2g.toml"))
                .args(["--vpcd", &format!("127.0.0.1:{}", READERS[0].1)])
                .stdout(Stdio::null())
                .stderr(Stdio::null()),
        )
    });

    let o = run(&[
        "lab",
        "run",
        "--card",
        USIM,
        "--card",
        SIM,
        "--",
        "/usr/bin/python3",
        "examples/ci/test_card.py",
    ]);
    assert!(o.status.success(), "{:?}", text(&o));
    assert!(
        text(&o)
            .0
            .contains("ok: Virtual PCD 00 00: ICCID 8988211000000530140"),
        "{:?}",
        text(&o)
    );
    let o = run(&[
        "lab",
        "run",
        "--card",
        USIM,
        "--card",
        SIM,
        "--card",
        USIM,
        "--",
        "sh",
        "examples/ci/pcsc_scan.sh",
    ]);
    assert!(o.status.success(), "{:?}", text(&o));
    let out = text(&o).0;
    assert!(out.contains("Virtual PCD #1 00 00"), "{out}");
    assert!(out.contains("ok: every card's reader is listed"), "{out}");

    // The system pcscd never noticed: its socket, its pid file, its card.
    // (Other tests' benches come and go meanwhile: the pid file must name the system's pcscd,
    // whichever bench stopped last.)
    let pid_file = std::fs::read_to_string("/run/pcscd/pcscd.pid").unwrap_or_default();
    let pid = pid_file.trim_matches(|c: char| c.is_whitespace() || c == '\0');
    let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    assert_eq!(comm.trim(), "pcscd", "pid file {pid_file:?}");
    assert!(
        !String::from_utf8_lossy(&cmdline).contains("simlab-lab"),
        "the pid file names a bench's pcscd: {pid_file:?}"
    );
    if system.ours() {
        // No bench is set, so the harness's `simlab` reaches the system socket.
        simlab_hil::wait_for_card(READERS[0].0, true, Duration::from_secs(5));
        let o = simlab(&["--reader", READERS[0].0, "card", "info", "--json"]);
        assert!(o.status.success(), "{:?}", text(&o));
        assert_eq!(
            simlab_hil::json(&o)["imsi"],
            "001010000000004",
            "{:?}",
            text(&o)
        );
    }
}

#[test]
fn sixteen_cards_and_two_modems_on_one_bench() {
    let Some(_share) = bench() else { return };
    let mut args = vec!["lab", "run"];
    for _ in 0..16 {
        args.extend(["--card", USIM]);
    }
    args.extend([
        "--vmodem",
        "--vmodem",
        "fixtures/cards/demo-usim.toml",
        "--",
    ]);
    let script = format!(
        "{simlab} readers --json | grep -c '\"card_present\": true'; \
         {simlab} --modem \"$SIMLAB_MODEM1\" modem info --json | grep -c '\"manufacturer\": \"simlab\"'; \
         echo \"$SIMLAB_READERS\"",
        simlab = simlab_bin().display()
    );
    args.extend(["sh", "-c", &script]);
    let o = run(&args);
    assert!(o.status.success(), "{:?}", text(&o));
    let out = text(&o).0;
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "16", "{out}");
    assert_eq!(lines[1], "1", "{out}");
    assert!(lines[2].ends_with("Virtual PCD #7 00 01"), "{out}");
    // One more than pcscd can serve: refused before anything starts.
    let mut args = vec!["lab", "run"];
    for _ in 0..17 {
        args.extend(["--card", USIM]);
    }
    args.extend(["--", "true"]);
    let o = run(&args);
    assert_eq!(o.status.code(), Some(2), "{:?}", text(&o));
    assert!(text(&o).1.contains("at most 16 readers"), "{:?}", text(&o));
}

#[test]
fn exit_status_passes_through_and_bad_input_starts_nothing() {
    let Some(_share) = bench() else { return };
    let dir = state("status");
    let port = free_port();
    let p = port.to_string();
    let base = ["lab", "run", "--state", dir.to_str().unwrap(), "--port", &p];
    let with = |rest: &[&str]| {
        let mut a = base.to_vec();
        a.extend_from_slice(rest);
        run(&a)
    };
    let o = with(&["--card", USIM, "--", "sh", "-c", "exit 3"]);
    assert_eq!(o.status.code(), Some(3), "{:?}", text(&o));
    assert_gone(&dir, port);
    let o = with(&["--card", USIM, "--", "sh", "-c", "kill -9 $$"]);
    assert_eq!(o.status.code(), Some(137), "COMMAND killed: {:?}", text(&o));
    assert_gone(&dir, port);
    let o = with(&["--card", USIM, "--", "no-such-command-here"]);
    assert_eq!(o.status.code(), Some(127), "{:?}", text(&o));
    assert!(text(&o).1.contains("command not found"), "{:?}", text(&o));
    assert_gone(&dir, port);
    for (rest, says) in [
        (
            &["--card", "fixtures/cards/nope.toml", "--", "true"][..],
            "nope.toml",
        ),
        (&["--card", "README.md", "--", "true"][..], "README.md"),
        (&["--vmodem", "Cargo.toml", "--", "true"][..], "Cargo.toml"),
        (&["--card", USIM][..], "COMMAND"),
    ] {
        let o = with(rest);
        assert_eq!(o.status.code(), Some(2), "{rest:?}: {:?}", text(&o));
        assert!(text(&o).1.contains(says), "{rest:?}: {:?}", text(&o));
        assert_gone(&dir, port);
    }
    // pcscd or vpcd missing: the message says how to install it.
    for (var, install) in [
        ("SIMLAB_PCSCD", "apt-get install pcscd"),
        ("SIMLAB_VPCD_DRIVER", "apt-get install vsmartcard-vpcd"),
    ] {
        let o = Command::new(simlab_bin())
            .args(base)
            .args(["--card", USIM, "--", "true"])
            .env(var, "/nonexistent/simlab-test")
            .current_dir(workspace_root())
            .output()
            .unwrap();
        assert_eq!(o.status.code(), Some(2), "{var}: {:?}", text(&o));
        assert!(text(&o).1.contains(install), "{var}: {:?}", text(&o));
        assert_gone(&dir, port);
    }
    // A port in use.
    let _taken = std::net::TcpListener::bind(("0.0.0.0", port)).unwrap();
    let o = with(&["--card", USIM, "--", "true"]);
    assert_eq!(o.status.code(), Some(2), "{:?}", text(&o));
    assert!(
        text(&o)
            .1
            .contains(&format!("TCP port {port} is already in use")),
        "{:?}",
        text(&o)
    );
    assert_gone(&dir, port);
}

/// Starts `lab run` on `dir` with COMMAND `sh -c SCRIPT` and waits until COMMAND runs.
fn running_bench(dir: &Path, port: u16, script: &str) -> std::process::Child {
    let started = dir.join("started");
    let script = format!("touch {}; {script}", started.display());
    let child = Command::new(simlab_bin())
        .args(["lab", "run", "--state"])
        .arg(dir)
        .args([
            "--port",
            &port.to_string(),
            "--card",
            USIM,
            "--vmodem",
            "--",
        ])
        .args(["sh", "-c", &script])
        .current_dir(workspace_root())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while !started.exists() {
        assert!(Instant::now() < deadline, "the bench did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    child
}

fn signal(pid: u32, sig: libc::c_int) {
    // SAFETY: kill(2) on a child of this test.
    unsafe {
        libc::kill(pid as libc::pid_t, sig);
    }
}

fn wait(child: &mut std::process::Child) -> (std::process::ExitStatus, String) {
    let mut err = String::new();
    if let Some(e) = child.stderr.take() {
        for line in BufReader::new(e).lines().map_while(Result::ok) {
            err.push_str(&line);
            err.push('\n');
        }
    }
    (child.wait().unwrap(), err)
}

#[test]
fn teardown_leaves_nothing_whatever_ends_the_run() {
    let Some(_share) = bench() else { return };
    let dir = state("teardown");
    let port = free_port();

    // simlab is told to stop: COMMAND, cards, modem and pcscd go, in order.
    let mut lab = running_bench(&dir, port, "exec sleep 60");
    signal(lab.id(), libc::SIGTERM);
    let (status, err) = wait(&mut lab);
    assert_eq!(status.code(), Some(143), "{err}");
    assert_gone(&dir, port);

    // A card emulator crashes while COMMAND runs: said, and still nothing left behind.
    let mut lab = running_bench(
        &dir,
        port,
        // The pattern is computed by the shell, so it does not match the shell itself.
        &format!("pkill -KILL -f \"vpcd 127.0.0.1:$(({port} + 0))\"; sleep 0.5"),
    );
    let (status, err) = wait(&mut lab);
    assert_eq!(status.code(), Some(0), "{err}");
    assert!(err.contains("card 0"), "{err}");
    assert!(err.contains("ended while COMMAND runs"), "{err}");
    assert_gone(&dir, port);

    // simlab killed outright: its children are told by the kernel (PR_SET_PDEATHSIG).
    let mut lab = running_bench(&dir, port, "exec sleep 60");
    signal(lab.id(), libc::SIGKILL);
    let _ = wait(&mut lab);
    let deadline = Instant::now() + Duration::from_secs(5);
    while !leftovers(dir.to_str().unwrap()).is_empty() {
        assert!(
            Instant::now() < deadline,
            "{:#?}",
            leftovers(dir.to_str().unwrap())
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // … and the next run on the same state directory and ports just works.
    let o = run(&[
        "lab",
        "run",
        "--state",
        dir.to_str().unwrap(),
        "--port",
        &port.to_string(),
        "--card",
        USIM,
        "--",
        "true",
    ]);
    assert!(o.status.success(), "{:?}", text(&o));
    assert_gone(&dir, port);
}

#[test]
fn lab_up_prints_its_environment_refuses_a_second_bench_and_lab_down_stops_it() {
    let Some(_share) = bench().filter(|_| require("pcsc_scan")) else {
        return;
    };
    let dir = state("up");
    let mut up = Command::new(simlab_bin())
        .args(["lab", "up", "--state"])
        .arg(&dir)
        .args(["--card", USIM, "--card", SIM])
        .current_dir(workspace_root())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut env = Vec::new();
    for line in BufReader::new(up.stdout.take().unwrap()).lines() {
        let line = line.unwrap();
        let (k, v) = line
            .strip_prefix("export ")
            .and_then(|kv| kv.split_once('='))
            .unwrap_or_else(|| panic!("not an export line: {line}"));
        env.push((k.to_string(), v.trim_matches('\'').to_string()));
        if k == "SIMLAB_MODEMS" {
            break;
        }
    }
    let get = |k: &str| env.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
    assert_eq!(
        get("PCSCLITE_CSOCK_NAME"),
        Some(dir.join("pcscd.comm").display().to_string())
    );
    assert_eq!(
        get("SIMLAB_READERS").as_deref(),
        Some("Virtual PCD 00 00;Virtual PCD 00 01")
    );
    let o = Command::new(simlab_hil::find_tool("pcsc_scan").unwrap())
        .arg("-r")
        .envs(env.iter().map(|(k, v)| (k, v)))
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("1: Virtual PCD 00 01"),
        "{:?}",
        text(&o)
    );
    // A second bench on the same state directory.
    let o = run(&[
        "lab",
        "up",
        "--state",
        dir.to_str().unwrap(),
        "--card",
        USIM,
    ]);
    assert_eq!(o.status.code(), Some(2), "{:?}", text(&o));
    assert!(text(&o).1.contains("already running"), "{:?}", text(&o));
    let o = run(&["lab", "down", "--state", dir.to_str().unwrap(), "--json"]);
    assert!(o.status.success(), "{:?}", text(&o));
    assert_eq!(simlab_hil::json(&o)["stopped"], true);
    assert!(up.wait().unwrap().success());
    assert!(leftovers(dir.to_str().unwrap()).is_empty());
    let o = run(&["lab", "down", "--state", dir.to_str().unwrap()]);
    assert!(o.status.success(), "{:?}", text(&o));
    assert!(text(&o).0.contains("no bench is running"), "{:?}", text(&o));
}

#[test]
fn the_firmware_token_under_qemu_joins_the_bench() {
    let Some(_share) = bench().filter(|_| require("qemu-system-arm")) else {
        return;
    };
    // The board image, built as CI's firmware step builds it (a no-op when it is current).
    let elf = simlab_hil::qemu_token_firmware();
    let dir = state("token");
    let script = format!(
        "{simlab} --serial \"$SIMLAB_SERIAL\" card info --json; \
         {simlab} --reader \"$SIMLAB_READER0\" card info --json",
        simlab = simlab_bin().display()
    );
    let o = run(&[
        "lab",
        "run",
        "--state",
        dir.to_str().unwrap(),
        "--keep",
        "--token",
        elf.to_str().unwrap(),
        "--token-profile",
        "fixtures/cards/demo-usim.toml",
        "--card",
        USIM,
        "--",
        "sh",
        "-c",
        &script,
    ]);
    assert!(o.status.success(), "{:?}", text(&o));
    // Two JSON documents: the token's card, then the vpcd card.
    let out = text(&o).0;
    let docs: Vec<serde_json::Value> = serde_json::Deserializer::from_str(&out)
        .into_iter()
        .map(Result::unwrap)
        .collect();
    // The token personalised from demo-usim (whose PIN1 keeps the IMSI), the card usim-milenage.
    assert_eq!(docs[0]["iccid"], "8988211000000990013", "{out}");
    assert_eq!(
        docs[0]["atr"], "3b1e9673696d6c61622d76312d54455354",
        "the TEST-ONLY token's ATR"
    );
    assert_eq!(docs[1]["iccid"], "8988211000000530140", "{out}");
    let flash = dir.join("token.flash");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&flash).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    while !leftovers(flash.to_str().unwrap()).is_empty() {
        assert!(Instant::now() < deadline, "QEMU left running");
        std::thread::sleep(Duration::from_millis(50));
    }
    // An image that is not there: refused before anything starts.
    let o = run(&["lab", "run", "--token", "no/such.elf", "--", "true"]);
    assert_eq!(o.status.code(), Some(2), "{:?}", text(&o));
    assert!(
        text(&o).1.contains("cargo build --release"),
        "{:?}",
        text(&o)
    );
}
