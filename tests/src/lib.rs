//! Shared plumbing for the hardware-in-the-loop tests.
//!
//! These tests drive real components (pcscd with vpcd, ptys, QEMU, reference tools such as
//! libosmocore's `osmo-auc-gen`). On a developer's machine a missing component skips a test with
//! a message; with `SIMLAB_HIL=require` (CI sets it) the same absence fails the test, so CI can
//! never pass by silently testing nothing.

use std::path::{Path, PathBuf};

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
    let path = std::env::var_os("PATH")?;
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
    let why = format!("{tool} is not installed (scripts/setup installs it)");
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
