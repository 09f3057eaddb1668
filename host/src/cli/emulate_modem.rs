//! `simlab emulate modem` — placeholder; implemented with the modem work.

use super::{Global, Output};
use crate::error::{Error, Result};
use clap::Args;

#[derive(Args, Debug)]
pub struct EmulateModemArgs {}

pub fn run(_out: &Output, _global: &Global, _args: &EmulateModemArgs) -> Result<i32> {
    Err(Error::arg("emulate modem", "not implemented yet"))
}
