//! `simlab sign bench` (hidden; `scripts/bench sign` prints its table together with the
//! waiting pages a server holds).
//!
//! Signature requests completed per second end to end on loopback, with the in-process token:
//! the PC logs in once, then per transaction prepares and approves over HTTPS forms, the push
//! goes out, the phone fetches the request, checks the countersignature, has the token sign
//! and posts, and the PC page shows `completed`. Measured in the same run with two virtual
//! modems on ptys carrying the pushes through the AT engine, and with the server alone (no SMS
//! I/O, the phone told the transaction directly); the token's own SIGN rate beside them says
//! how much of a round the card costs.

use super::Output;
use super::demo_sign::World;
use serde_json::json;
use simlab_card::error::{Error, Result};
use std::time::Instant;

#[derive(clap::Args, Debug)]
pub struct BenchArgs {
    /// Completed transactions to time on each channel.
    #[arg(long, value_name = "N", default_value_t = 50)]
    transactions: usize,
}

fn rounds(w: &mut World, n: usize) -> Result<f64> {
    let pc = w.login()?;
    // One untimed round first: TLS session set-up and SQLite page cache are not the subject.
    w.sign_round(&pc)?;
    let start = Instant::now();
    for _ in 0..n {
        w.sign_round(&pc)?;
    }
    Ok(n as f64 / start.elapsed().as_secs_f64())
}

pub fn run(out: &Output, a: &BenchArgs) -> Result<i32> {
    if a.transactions == 0 {
        return Err(Error::arg("--transactions", "must be at least 1"));
    }
    let n = a.transactions;
    let mut modems = World::start_with(true)?;
    let with_modems = rounds(&mut modems, n)?;
    drop(modems);
    let mut alone = World::start_with(false)?;
    let without = rounds(&mut alone, n)?;
    let token = alone.token_signs(n)?;
    drop(alone);
    if !out.json() {
        println!("{:<64} {:>12}", "measure", "per second");
        println!(
            "{:<64} {:>12.1}",
            "completed signature requests, two virtual modems on ptys", with_modems
        );
        println!(
            "{:<64} {:>12.1}",
            "completed signature requests, server alone (no SMS I/O)", without
        );
        println!(
            "{:<64} {:>12.1}",
            "  beside: the in-process token's SIGN alone", token
        );
    }
    out.result(
        "",
        &json!({
            "transactions": n,
            "completed_per_second_virtual_modems": with_modems,
            "completed_per_second_server_alone": without,
            "token_sign_per_second": token,
        }),
    )?;
    Ok(0)
}
