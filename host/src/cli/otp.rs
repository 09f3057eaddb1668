//! `simlab otp …` — placeholder; implemented with the modem work.

use super::{Global, Output};
use crate::error::{Error, Result};
use clap::Subcommand;

#[derive(Subcommand, Debug)]
pub enum OtpCommand {
    /// Verify an OTP.
    Verify,
}

pub fn run(_out: &Output, _global: &Global, _cmd: &OtpCommand) -> Result<i32> {
    Err(Error::arg("otp", "not implemented yet"))
}
