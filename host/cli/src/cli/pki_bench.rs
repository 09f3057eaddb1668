//! `simlab gateway bench` (hidden; `scripts/bench-pki` runs it and prints the table with
//! OpenSSL's figures beside these).
//!
//! Two measurements, one per run:
//!
//! - `--billing`: accounting records billed per second (910/920, every signature verified,
//!   every CDR committed to SQLite) by `billing::bill` in this process, on a gateway of its
//!   own — an ephemeral CA, a real SQLite file, a certificate issued into it and records
//!   signed by the certified P-256 key before the clock starts. No HTTP and no TLS in between:
//!   what is measured is the gateway's own work, which is what the raw verify rate bounds.
//! - `--gateway URL`: enrollments per second (messages 210–260) through a running gateway
//!   with its AuC, by `--clients` phones at once (the simlab card model, in-process).

use super::pki::{ClientTlsArgs, SharedTransport, pin_arg, read_imsi, service_url};
use super::{Global, Output};
use serde_json::json;
use simlab_card::error::{Error, Result};
use simlab_card::profile::Profile;
use simlab_card::token::{PinOutcome, TokenSession};
use simlab_card::transport::Link;
use simlab_card::transport::inproc::InProcess;
use simlab_services::http::client::Url;
use simlab_services::pki::gateway::billing::{self, MAX_RECORDS, testbed::Testbed};
use simlab_services::pki::messages::{AccountingRecord, AuthPath, BillingBatch};
use simlab_services::pki::ms::{self, EnrollRequest};
use simlab_services::pki::restrictions::{MAX_PURCHASES, Restrictions};
use simlab_services::pki::verify;
use std::path::PathBuf;
use std::time::Instant;

#[derive(clap::Args, Debug)]
pub struct BenchArgs {
    /// Time billing in this process (no gateway needed) instead of enrollments.
    #[arg(long, conflicts_with_all = ["gateway", "profile", "enrollments", "clients", "sim_pin"])]
    billing: bool,
    /// The gateway to enroll with.
    #[arg(long, value_name = "URL", required_unless_present = "billing")]
    gateway: Option<String>,
    /// The phones' profile; its subscriber must be in the gateway's AuC.
    #[arg(long, value_name = "PROFILE.toml", required_unless_present = "billing")]
    profile: Option<PathBuf>,
    /// The SIM's PIN1, if enabled.
    #[arg(long, value_name = "PIN")]
    sim_pin: Option<String>,
    /// Enrollments to time, in all.
    #[arg(long, value_name = "N", default_value_t = 100)]
    enrollments: usize,
    /// Phones enrolling at the same time, each on its own thread.
    #[arg(long, value_name = "N", default_value_t = 1)]
    clients: usize,
    /// Accounting records to bill.
    #[arg(long, value_name = "N", default_value_t = 20_000)]
    records: usize,
    /// Records per 910.
    #[arg(long, value_name = "N", default_value_t = MAX_RECORDS)]
    batch: usize,
    /// Threads the gateway verifies a batch's signatures on.
    #[arg(long, value_name = "N", default_value_t = 1)]
    threads: usize,
    /// The gateway's CA, pinned as a phone pins it.
    #[command(flatten)]
    tls: ClientTlsArgs,
}

fn rate(n: usize, seconds: f64) -> f64 {
    if seconds > 0.0 {
        n as f64 / seconds
    } else {
        0.0
    }
}

fn failed(what: impl std::fmt::Display) -> Error {
    Error::Mismatch {
        what: what.to_string(),
    }
}

pub fn run(out: &Output, _global: &Global, a: &BenchArgs) -> Result<i32> {
    if a.billing {
        bench_billing(out, a)
    } else {
        bench_enrollment(out, a)
    }
}

/// Billing records per second on `--threads` verification threads.
fn bench_billing(out: &Output, a: &BenchArgs) -> Result<i32> {
    const SELLER: &str = "bench";
    let dir = std::env::temp_dir().join(format!("simlab-bench-billing-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).map_err(|e| failed(format!("{}: {e}", dir.display())))?;
    let result = (|| {
        let tb = Testbed::new(&dir.join("gateway.sqlite"), SELLER, a.threads).map_err(failed)?;
        let subscriber = tb
            .subscriber(&Restrictions {
                per_purchase_limit: 1_000_000,
                currency: "EUR".into(),
                max_purchases: MAX_PURCHASES,
                period_seconds: 86_400,
                validity_seconds: 86_400,
            })
            .map_err(failed)?;
        out.say(&format!(
            "signing {} invoices with the subscriber's P-256 key (not timed)…",
            a.records
        ));
        let now = simlab_services::pki::now();
        let records: Vec<AccountingRecord> = (0..a.records.max(1))
            .map(|i| {
                let invoice = subscriber.invoice(
                    SELLER,
                    &format!("bench-{now}-{i}"),
                    100 + (i as u64 % 900),
                    now,
                );
                subscriber.record(&invoice).map_err(failed)
            })
            .collect::<Result<_>>()?;
        out.say(&format!(
            "billing them in batches of {} on {} thread(s)…",
            a.batch, a.threads
        ));
        let started = Instant::now();
        let mut accepted = 0;
        for (n, chunk) in records.chunks(a.batch.clamp(1, MAX_RECORDS)).enumerate() {
            let answer = billing::bill(
                &tb.gateway,
                &BillingBatch {
                    seller_id: SELLER.into(),
                    batch_id: format!("bench-{n}"),
                    records: chunk.to_vec(),
                },
            )
            .map_err(|e| failed(format!("billing: {e}")))?;
            accepted += answer.accepted;
        }
        let seconds = started.elapsed().as_secs_f64();
        if accepted != records.len() {
            return Err(failed(format!(
                "{accepted} of {} records billed",
                records.len()
            )));
        }
        let per_second = rate(records.len(), seconds);
        // The same signatures through the verifier alone, on this thread: what billing costs
        // beyond its signature checks is the gap between the two.
        let decoded: Vec<(Vec<u8>, Vec<u8>)> = records
            .iter()
            .map(|r| {
                let bytes = |h: &str| simlab_card::hex::decode("bench", h).map_err(failed);
                Ok((bytes(&r.invoice)?, bytes(&r.signature)?))
            })
            .collect::<Result<_>>()?;
        let key = subscriber.public_key();
        let started = Instant::now();
        let valid = decoded
            .iter()
            .filter(|(m, sig)| verify::p256_sha256(&key, m, sig))
            .count();
        let verify_seconds = started.elapsed().as_secs_f64();
        if valid != decoded.len() {
            return Err(failed("a signature did not verify"));
        }
        let verifies = rate(decoded.len(), verify_seconds);
        out.result(
            &format!(
                "billing: {} records in {seconds:.2} s on {} thread(s): {per_second:.0} records/s (the verifier alone, 1 thread: {verifies:.0}/s)\n",
                records.len(),
                a.threads
            ),
            &json!({
                "records": records.len(),
                "threads": a.threads,
                "seconds": seconds,
                "records_per_second": per_second,
                "raw_verifies_per_second": verifies,
            }),
        )?;
        Ok(0)
    })();
    let _ = std::fs::remove_dir_all(&dir);
    result
}

/// Enrollments per second by `--clients` phones at once through a running gateway.
fn bench_enrollment(out: &Output, a: &BenchArgs) -> Result<i32> {
    let (Some(gateway), Some(profile)) = (&a.gateway, &a.profile) else {
        return Err(Error::arg("--gateway", "needed unless --billing"));
    };
    let gateway: Url = service_url(
        "--gateway",
        gateway,
        a.tls.client_tls()?.as_ref(),
        a.tls.insecure_http,
    )?;
    let profile = Profile::load(profile)?;
    let sim_pin = a
        .sim_pin
        .as_deref()
        .map(|p| pin_arg("--sim-pin", p))
        .transpose()?;
    let clients = a.clients.max(1);
    let per_client = a.enrollments.max(1).div_ceil(clients);
    let request = EnrollRequest {
        gateway,
        path: AuthPath::Gsm,
        restrictions: Restrictions {
            per_purchase_limit: 1_000_000,
            currency: "EUR".into(),
            max_purchases: MAX_PURCHASES,
            period_seconds: 86_400,
            validity_seconds: 86_400,
        },
        alias: "bench".into(),
        ca: None,
    };
    out.say(&format!(
        "enrolling {} times on {clients} phone(s)…",
        per_client * clients
    ));
    // Each phone is its own card model and token, ready before the clock starts; the threads
    // start enrolling together.
    let start = std::sync::Barrier::new(clients + 1);
    let phone = |start: &std::sync::Barrier| -> std::result::Result<(), String> {
        let setup = || -> Result<(TokenSession, String)> {
            let card = SharedTransport::new(Box::new(InProcess::new(
                profile.build_card()?,
                "bench phone",
            )));
            let imsi = read_imsi(&card, sim_pin.as_ref())?;
            let mut token = TokenSession::open(Link::new(Box::new(card.clone())))?;
            if token.verify_pin(&pin_arg("--pin", "0000")?)? != PinOutcome::Verified {
                return Err(failed("the bench phone's token PIN is not 0000"));
            }
            token.generate_key(true)?;
            Ok((token, imsi))
        };
        let ready = setup();
        start.wait();
        let (mut token, imsi) = ready.map_err(|e| e.to_string())?;
        for _ in 0..per_client {
            ms::enroll(&mut token, &imsi, &request, &mut |_| {}).map_err(|e| e.to_string())?;
        }
        Ok(())
    };
    let (seconds, results) = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..clients)
            .map(|_| scope.spawn(|| phone(&start)))
            .collect();
        start.wait();
        let started = Instant::now();
        let results: Vec<_> = handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err("a phone thread panicked".into()))
            })
            .collect();
        (started.elapsed().as_secs_f64(), results)
    });
    if let Some(Err(e)) = results.into_iter().find(|r| r.is_err()) {
        return Err(failed(format!("enrollment: {e}")));
    }
    let n = per_client * clients;
    let per_second = rate(n, seconds);
    out.result(
        &format!(
            "enrollment: {n} in {seconds:.2} s by {clients} phone(s): {per_second:.1} enrollments/s\n"
        ),
        &json!({
            "enrollments": n,
            "clients": clients,
            "seconds": seconds,
            "enrollments_per_second": per_second,
        }),
    )?;
    Ok(0)
}
