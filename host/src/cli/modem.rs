//! `simlab modem …` — placeholder; implemented with the modem work.

use super::{Global, Output};
use crate::error::{Error, Result};
use clap::Subcommand;

#[derive(Subcommand, Debug)]
pub enum ModemCommand {
    /// Manufacturer, model, IMSI, signal, registration, SMSC.
    Info,
}

pub fn run(_out: &Output, _global: &Global, _cmd: &ModemCommand) -> Result<i32> {
    Err(Error::arg("modem", "not implemented yet"))
}
