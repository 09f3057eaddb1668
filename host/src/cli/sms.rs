//! `simlab sms …` — placeholder; implemented with the modem work.

use super::{Global, Output};
use crate::error::{Error, Result};
use clap::Subcommand;

#[derive(Subcommand, Debug)]
pub enum SmsCommand {
    /// Decode a PDU.
    Decode,
}

pub fn run(_out: &Output, _global: &Global, _cmd: &SmsCommand) -> Result<i32> {
    Err(Error::arg("sms", "not implemented yet"))
}
