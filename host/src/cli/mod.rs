//! The `simlab` command line: argument definitions and dispatch. Each subcommand lives in its
//! own module; they all print through [`Output`] so `--json` means the same everywhere.

mod algo;
mod card;
mod demo;

use crate::error::{Error, Result};
use clap::{Parser, Subcommand};
use serde_json::Value;
use std::io::Write;
use std::path::PathBuf;

const ABOUT: &str = "Hardware-in-the-loop toolkit for SIM and smart-card work.";

const LONG_ABOUT: &str = "\
Hardware-in-the-loop toolkit for SIM and smart-card work.

simlab talks to SIM cards and USIMs through a transport. Today that is the simlab card model
running in-process (--emulate PROFILE.toml); PC/SC readers, serial tokens and modems follow.
The AuC side of authentication needs no card at all (simlab algo).

Exit codes: 0 success, 1 the card or a check said no, 2 bad input or usage.";

const AFTER_HELP: &str = "\
Examples:
  simlab demo
  simlab algo comp128v1 --ki 112233445566778899aabbccddeeff00 --rand 2233445566778899aabbccddeeff0011
  simlab --emulate fixtures/cards/usim-milenage.toml card info
  simlab --emulate fixtures/cards/usim-milenage.toml card auth --rand 23553cbe9637a89d218ae64dae47bf35 --check";

#[derive(Parser, Debug)]
#[command(name = "simlab", version, about = ABOUT, long_about = LONG_ABOUT, after_help = AFTER_HELP)]
struct Cli {
    /// Use the simlab card model, personalised from this profile (fixtures/cards/*.toml).
    #[arg(long, global = true, value_name = "PROFILE.toml")]
    emulate: Option<PathBuf>,

    /// Print machine-readable JSON on stdout (logs and progress stay on stderr).
    #[arg(long, global = true)]
    json: bool,

    /// Say more on stderr about what happens.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    verbose: u8,

    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Compute authentication vectors on the host, as an AuC does (no card involved).
    Algo(algo::AlgoArgs),
    /// Read, authenticate and verify PINs on a card.
    #[command(subcommand)]
    Card(card::CardCommand),
    /// Tell the simlab story end to end on emulated hardware.
    Demo,
}

/// Where results go: plain text for people, or one JSON document for scripts.
pub struct Output {
    json: bool,
    verbose: u8,
}

impl Output {
    /// Prints a result: `text` for people, `value` under `--json`.
    pub fn result(&self, text: &str, value: &Value) -> Result<()> {
        let mut stdout = std::io::stdout().lock();
        let written = if self.json {
            writeln!(stdout, "{value:#}")
        } else {
            write!(stdout, "{text}")
        };
        written.map_err(|source| Error::Io {
            context: "writing to stdout".into(),
            source,
        })
    }

    /// A narrative or progress line on stderr, shown unless `--json` keeps stdout clean for
    /// scripts (stderr is still fine then, but quiet is friendlier).
    pub fn say(&self, line: &str) {
        if !self.json {
            eprintln!("{line}");
        }
    }

    /// A detail shown only with `-v`.
    pub fn detail(&self, line: &str) {
        if self.verbose > 0 {
            eprintln!("{line}");
        }
    }

    pub fn json(&self) -> bool {
        self.json
    }
}

/// Runs the CLI and returns the process exit code.
pub fn main() -> i32 {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            // clap prints help/version to stdout (exit 0) and usage errors to stderr (exit 2).
            let _ = e.print();
            return e.exit_code();
        }
    };
    let out = Output {
        json: cli.json,
        verbose: cli.verbose,
    };
    let result = match cli.command {
        Command::Algo(args) => algo::run(&out, &args),
        Command::Card(cmd) => card::run(&out, cli.emulate.as_deref(), &cmd),
        Command::Demo => demo::run(&out),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("simlab: error: {e}");
            e.exit_code()
        }
    }
}
