//! What every CLI test of this crate needs: the workspace root, the `simlab` binary of this
//! build, and its output as text or JSON.
#![allow(dead_code)] // each test file uses its own subset

use std::path::PathBuf;
use std::process::{Command, Output};

/// The workspace root: profiles and fixtures are named relative to it.
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Runs the `simlab` binary in the workspace root.
pub fn simlab(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_simlab"))
        .args(args)
        .current_dir(root())
        .output()
        .expect("run simlab")
}

/// stdout and stderr as text.
pub fn text(o: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&o.stdout).into(),
        String::from_utf8_lossy(&o.stderr).into(),
    )
}

/// stdout as JSON, or a panic that shows both streams.
pub fn json(o: &Output) -> serde_json::Value {
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", text(o)))
}
