//! `simlab token …` — placeholder; implemented with the modem work.

use super::{Global, Output};
use crate::error::{Error, Result};
use clap::Subcommand;

#[derive(Subcommand, Debug)]
pub enum TokenCommand {
    /// The public key.
    Pubkey,
}

pub fn run(_out: &Output, _global: &Global, _cmd: &TokenCommand) -> Result<i32> {
    Err(Error::arg("token", "not implemented yet"))
}
