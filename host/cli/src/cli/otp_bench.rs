//! `simlab otp bench` (hidden; `scripts/bench otp` prints its table).
//!
//! Validated transactions per second end to end on loopback: terminal A over HTTPS opens a
//! session, asks for a payment greater than the stored limit, the server asks the bank stub,
//! issues the code and sends it; the bench reads the code off the second channel as the person
//! would off the phone and confirms it. Measured twice in the same run with the same server
//! code: once with a virtual modem on a real pty behind the AT engine, once with a backend that
//! does no I/O (the server alone). Payments not greater than the limit (one step, no SMS) are
//! timed beside them.

use super::Output;
use super::demo_otp::{Channel, World, code_of};
use serde_json::{Value, json};
use simlab_card::error::{Error, Result};
use simlab_services::otp::service::Rate;
use std::sync::{Arc, Mutex};
use std::time::Instant;

#[derive(clap::Args, Debug)]
pub struct BenchArgs {
    /// Validated transactions to time on each channel.
    #[arg(long, value_name = "N", default_value_t = 100)]
    transactions: usize,
}

fn failed(what: &str, v: impl std::fmt::Display) -> Error {
    Error::Mismatch {
        what: format!("{what}: {v}"),
    }
}

/// No limit the bench could hit.
const UNLIMITED: Rate = Rate {
    count: u64::MAX,
    window: 600,
};

/// `n` secured payments, each validated with the code read from the channel; per second.
fn secured(w: &World, n: usize, code: &dyn Fn(usize) -> Result<String>) -> Result<f64> {
    let s = w.session()?;
    let start = Instant::now();
    for i in 0..n {
        let (status, v) = w.pay(&s, 15_000, "ACME Shop", false)?;
        if status != 201 || v["mode"] != "secured" {
            return Err(failed("a payment over the limit", v));
        }
        let tx = v["transaction"].as_str().unwrap_or_default().to_string();
        let (status, v) = w.confirm(&s, &tx, &code(i)?, 15_000, "ACME Shop")?;
        if status != 200 || v["status"] != "validated" {
            return Err(failed("confirming the code", v));
        }
    }
    Ok(n as f64 / start.elapsed().as_secs_f64())
}

/// `n` payments not greater than the limit (validated in one step, no SMS); per second.
fn normal(w: &World, n: usize) -> Result<f64> {
    let s = w.session()?;
    let start = Instant::now();
    for _ in 0..n {
        let (status, v) = w.pay(&s, 5_000, "Corner Shop", false)?;
        if status != 201 || v["mode"] != "normal" {
            return Err(failed("a payment under the limit", v));
        }
    }
    Ok(n as f64 / start.elapsed().as_secs_f64())
}

pub fn run(out: &Output, a: &BenchArgs) -> Result<i32> {
    if a.transactions == 0 {
        return Err(Error::arg("--transactions", "must be at least 1"));
    }
    let n = a.transactions;

    let modem = World::start_with(Channel::Modem, UNLIMITED)?;
    // One untimed round first: TLS session set-up and SQLite page cache are not the subject.
    secured(&modem, 1, &|i| Ok(code_of(&modem.sms(i)?)))?;
    let with_modem = secured(&modem, n, &|i| Ok(code_of(&modem.sms(i + 1)?)))?;
    let sent = modem.sent();
    if sent != n + 1 {
        return Err(failed("SMS sent through the modem", sent));
    }
    drop(modem);

    let bodies = Arc::new(Mutex::new(Vec::new()));
    let alone = World::start_with(Channel::Capture(bodies.clone()), UNLIMITED)?;
    let body = |i: usize| -> Result<String> {
        let b = bodies
            .lock()
            .map_err(|_| failed("the captured bodies", "poisoned"))?;
        let text = b
            .get(i)
            .ok_or_else(|| failed("the server", "sent nothing"))?;
        Ok(code_of(&json!({ "text": text })))
    };
    secured(&alone, 1, &body)?;
    let without = secured(&alone, n, &|i| body(i + 1))?;
    let one_step = normal(&alone, n)?;
    drop(alone);

    let v: Value = json!({
        "transactions": n,
        "validated_per_second_virtual_modem": with_modem,
        "validated_per_second_server_alone": without,
        "normal_per_second": one_step,
    });
    if !out.json() {
        println!("{:<64} {:>12}", "measure", "per second");
        println!(
            "{:<64} {:>12.1}",
            "validated transactions, virtual modem on a pty", with_modem
        );
        println!(
            "{:<64} {:>12.1}",
            "validated transactions, server alone (no SMS I/O)", without
        );
        println!(
            "{:<64} {:>12.1}",
            "  beside: normal payments (one step, no code)", one_step
        );
    }
    out.result("", &v)?;
    Ok(0)
}
