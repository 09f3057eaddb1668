//! `simlab transfer bench` (hidden; `scripts/bench transfer` runs it, with a throwaway
//! PostgreSQL cluster for `--postgres`).
//!
//! Coordinated transfers completed per second between two operators in one process on
//! loopback, one after the other: A's order (M1, signed by the in-process token), M2 on
//! channel 121 over mutual TLS, the offer (M3) to B, B's signed acceptance (M4), the answer
//! forwarded, the two-phase commit (hold, PREPARE, decision with the debit, COMMIT) and both
//! notices. Measured with the SMS legs excluded (M1 and M4 handed to the service node, the
//! outbox captured instead of sent: what channel 121 and the stores cost) and included (the
//! virtual SMS network, virtual modems on ptys and the AT engine at both ends), each on SQLite
//! and, given two databases, on PostgreSQL. A run whose ledgers do not add up, or after which
//! the money in the accounts is not what it was, fails the bench: a fast wrong answer is no
//! measurement.

use super::Output;
use super::demo::{ensure, failed};
use super::demo_transfer::{Db, Legs, World};
use serde_json::{Value, json};
use simlab_card::error::{Error, Result};
use simlab_services::transfer::store::Store;
use std::time::Instant;

#[derive(clap::Args, Debug)]
pub struct BenchArgs {
    /// Completed transfers to time in each run.
    #[arg(long, value_name = "N", default_value_t = 50)]
    transfers: usize,
    /// Two PostgreSQL databases, OP1's and OP2's: every run once more on PostgreSQL.
    #[arg(long, value_name = "URL1,URL2")]
    postgres: Option<String>,
}

/// All the money in one store's accounts (a held amount is still in its balance).
fn money_in(store: &Store) -> Result<u64> {
    Ok(store
        .accounts()
        .map_err(|e| failed("the accounts", e))?
        .iter()
        .map(|a| a.balance)
        .sum())
}

/// One run: `n` timed transfers of one cent; the rate, after the checks.
fn run_one(legs: Legs, db: Db, n: usize) -> Result<f64> {
    let mut w = World::start(legs, db)?;
    // A database used before (PostgreSQL) may have too little left for this run.
    let (a, _) = w.balances()?;
    let need = n as u64 + 1;
    if a < need {
        w.op1
            .store()
            .fund(super::demo_transfer::A, need - a, "EUR")
            .map_err(|e| failed("funding A", e))?;
    }
    let before = money_in(w.op1.store())? + money_in(w.op2.store())?;
    // One untimed transfer first: TLS sessions and page caches are not the subject.
    w.pay_round(1, 0)?;
    w.forget();
    let start = Instant::now();
    for i in 1..=n {
        w.pay_round(1, i)?;
        w.forget();
    }
    let rate = n as f64 / start.elapsed().as_secs_f64();
    w.ledgers()?;
    let after = money_in(w.op1.store())? + money_in(w.op2.store())?;
    ensure(
        before == after,
        &format!("the accounts held {before} before the run and {after} after"),
    )?;
    Ok(rate)
}

pub fn run(out: &Output, a: &BenchArgs) -> Result<i32> {
    if a.transfers == 0 {
        return Err(Error::arg("--transfers", "must be at least 1"));
    }
    let postgres = match &a.postgres {
        None => None,
        Some(list) => match list.split_once(',') {
            Some((u1, u2)) if !u1.is_empty() && !u2.is_empty() && u1 != u2 => {
                Some((u1.to_string(), u2.to_string()))
            }
            _ => {
                return Err(Error::arg(
                    "--postgres",
                    "two different databases: URL1,URL2 (OP1's, OP2's)",
                ));
            }
        },
    };
    let n = a.transfers;
    let mut rows: Vec<(&str, &str, f64)> = Vec::new();
    for (legs, label) in [
        (Legs::Direct, "SMS legs excluded (M1/M4 handed over)"),
        (Legs::Sms, "SMS legs included (virtual SMSC, ptys, AT)"),
    ] {
        rows.push((label, "sqlite", run_one(legs, Db::Sqlite, n)?));
        if let Some((u1, u2)) = &postgres {
            rows.push((
                label,
                "postgresql",
                run_one(legs, Db::Postgres(u1.clone(), u2.clone()), n)?,
            ));
        }
    }
    if !out.json() {
        println!(
            "{:<56} {:<11} {:>12}",
            "coordinated transfers (two operators, mTLS)", "store", "per second"
        );
        for (label, store, rate) in &rows {
            println!("{label:<56} {store:<11} {rate:>12.1}");
        }
        println!("(every run: both ledgers balanced, the money in the accounts unchanged)");
    }
    let results: Vec<Value> = rows
        .iter()
        .map(|(label, store, rate)| {
            json!({
                "sms_legs": label.starts_with("SMS legs included"),
                "store": store,
                "transfers_per_second": rate,
            })
        })
        .collect();
    out.result(
        "",
        &json!({"transfers": n, "ledgers_balanced": true, "results": results}),
    )?;
    Ok(0)
}
