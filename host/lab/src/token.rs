//! The simlab-firmware token on the QEMU board (lm3s6965evb, a TEST-ONLY build: simulated
//! button, seeded RNG), with its UART on a local TCP port and its flash in the state directory.
//! QEMU waits for the first client before it boots (`wait=on`), so the token starts when the
//! first program connects, and every later client reconnects to the same running token.

use crate::LabError;
use crate::child::{Child, Group};
use crate::pcscd;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Where the firmware image is.
#[derive(Clone, Debug)]
pub struct TokenSpec {
    /// The board's ELF (`firmware/boards/qemu-lm3s6965`, built with `cargo build --release`:
    /// `target/firmware/thumbv7m-none-eabi/release/simlab-token-qemu`).
    pub elf: PathBuf,
}

/// The running token.
pub struct Token {
    pub port: u16,
    pub flash: PathBuf,
    pub child: Child,
}

impl Token {
    /// What `--serial` takes.
    pub fn serial(&self) -> String {
        format!("tcp:127.0.0.1:{}", self.port)
    }
}

/// Finds qemu-system-arm (`SIMLAB_QEMU`, else PATH), or says how to install it.
pub fn find_qemu() -> Result<PathBuf, LabError> {
    pcscd::locate(
        "SIMLAB_QEMU",
        pcscd::on_path("qemu-system-arm", &[]),
        "qemu-system-arm",
        "qemu-system-arm",
    )
}

/// Starts QEMU with the token and waits until its UART port listens.
pub fn start(dir: &Path, spec: &TokenSpec) -> Result<Token, LabError> {
    let qemu = find_qemu()?;
    let io = |context: String| move |source| LabError::Io { context, source };
    let flash = dir.join("token.flash");
    let flash_text = flash.display().to_string();
    // QEMU's option syntax has no quoting for these.
    if flash_text.contains([',', ' ']) {
        return Err(LabError::Io {
            context: format!("the token's flash {flash_text}"),
            source: std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "QEMU cannot take a path with a comma or a space: use another --state",
            ),
        });
    }
    {
        use std::os::unix::fs::OpenOptionsExt;
        // The flash holds the card's keys.
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(&flash)
            .map_err(io(format!("creating {flash_text}")))?;
    }
    let port = pcscd::free_ports(1)?;
    let log = std::fs::File::create(dir.join("token.log"))
        .map_err(io(format!("creating {}/token.log", dir.display())))?;
    let mut cmd = Command::new(qemu);
    cmd.args([
        "-cpu",
        "cortex-m3",
        "-machine",
        "lm3s6965evb",
        "-nographic",
        "-monitor",
        "none",
        "-semihosting-config",
        &format!(
            "enable=on,target=native,arg=simlab-token,arg=flash={flash_text},arg=presence=auto"
        ),
        "-serial",
        &format!("tcp:127.0.0.1:{port},server=on,wait=on"),
        "-kernel",
    ])
    .arg(&spec.elf)
    .stdin(Stdio::null())
    .stdout(log.try_clone().map_err(io("the token's log".into()))?)
    .stderr(log);
    let mut child =
        Child::spawn("token", &mut cmd, Group::Own).map_err(io("starting QEMU".into()))?;
    let deadline = Instant::now() + Duration::from_secs(10);
    while !pcscd::listening(port) {
        if child.try_wait().is_some() || Instant::now() > deadline {
            return Err(LabError::NotReady {
                what: "the firmware token under QEMU".into(),
                log: pcscd::tail(
                    &std::fs::read_to_string(dir.join("token.log")).unwrap_or_default(),
                ),
            });
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    Ok(Token { port, flash, child })
}
