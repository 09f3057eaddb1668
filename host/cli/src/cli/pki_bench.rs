//! `simlab gateway bench` (hidden; `scripts/bench-pki` runs it): the throughput of one
//! running gateway — enrollments per second (messages 210–260, with the AuC behind it) and
//! accounting records billed per second (910/920, each signature verified) — and, in the same
//! run, the raw P-256 verification rate the billing rate is measured against.
//!
//! The phone is the simlab card model in-process; the invoices are signed by its token before
//! the clock starts.

use super::pki::{SharedTransport, pin_arg, read_imsi, url_arg};
use super::{Global, Output};
use serde_json::json;
use simlab_card::error::{Error, Result};
use simlab_card::profile::Profile;
use simlab_card::token::{PinOutcome, TokenSession};
use simlab_card::transport::Link;
use simlab_card::transport::inproc::InProcess;
use simlab_services::http::client::Url;
use simlab_services::pki::invoice::Invoice;
use simlab_services::pki::messages::{AccountingRecord, AuthPath};
use simlab_services::pki::ms::{self, EnrollRequest};
use simlab_services::pki::restrictions::Restrictions;
use simlab_services::pki::seller::billing;
use simlab_services::pki::x509;
use std::path::PathBuf;
use std::time::Instant;

#[derive(clap::Args, Debug)]
pub struct BenchArgs {
    /// The gateway under test.
    #[arg(long, value_name = "URL")]
    gateway: String,
    /// The phone's profile; its subscriber must be in the gateway's AuC.
    #[arg(long, value_name = "PROFILE.toml")]
    profile: PathBuf,
    /// A seller registered with the gateway.
    #[arg(long, value_name = "ID")]
    seller_id: String,
    /// The SIM's PIN1, if enabled.
    #[arg(long, value_name = "PIN")]
    sim_pin: Option<String>,
    /// Enrollments to time.
    #[arg(long, value_name = "N", default_value_t = 100)]
    enrollments: usize,
    /// Accounting records to bill.
    #[arg(long, value_name = "N", default_value_t = 10_000)]
    records: usize,
    /// Records per 910.
    #[arg(long, value_name = "N", default_value_t = 1_000)]
    batch: usize,
}

fn rate(n: usize, seconds: f64) -> f64 {
    if seconds > 0.0 {
        n as f64 / seconds
    } else {
        0.0
    }
}

pub fn run(out: &Output, _global: &Global, a: &BenchArgs) -> Result<i32> {
    let gateway: Url = url_arg("--gateway", &a.gateway)?;
    let profile = Profile::load(&a.profile)?;
    let sim_pin = a
        .sim_pin
        .as_deref()
        .map(|p| pin_arg("--sim-pin", p))
        .transpose()?;
    let card = SharedTransport::new(Box::new(InProcess::new(
        profile.build_card()?,
        "bench phone",
    )));
    let imsi = read_imsi(&card, sim_pin.as_ref())?;
    let mut token = TokenSession::open(Link::new(Box::new(card.clone())))?;
    let pin = pin_arg("--pin", "0000")?;
    if token.verify_pin(&pin)? != PinOutcome::Verified {
        return Err(Error::Mismatch {
            what: "the bench phone's token PIN is not 0000".into(),
        });
    }
    token.generate_key(true)?;
    let request = EnrollRequest {
        gateway: gateway.clone(),
        path: AuthPath::Gsm,
        restrictions: Restrictions {
            per_purchase_limit: 1_000_000,
            currency: "EUR".into(),
            max_purchases: simlab_services::pki::restrictions::MAX_PURCHASES,
            period_seconds: 86_400,
            validity_seconds: 86_400,
        },
        alias: "bench".into(),
        ca: None,
    };

    out.say(&format!("enrolling {} times…", a.enrollments));
    let started = Instant::now();
    let mut last = None;
    for _ in 0..a.enrollments.max(1) {
        last = Some(ms::enroll(&mut token, &imsi, &request, &mut |_| {})?);
    }
    let enroll_s = started.elapsed().as_secs_f64();
    let cert = last.map(|e| e.certificate).ok_or_else(|| Error::Mismatch {
        what: "no enrollment".into(),
    })?;

    out.say(&format!(
        "signing {} invoices on the token (not timed)…",
        a.records
    ));
    let now = simlab_services::pki::now();
    let mut records = Vec::with_capacity(a.records);
    let mut signed = Vec::with_capacity(a.records);
    for i in 0..a.records {
        let invoice = Invoice {
            seller_id: a.seller_id.clone(),
            transaction_id: format!("bench-{now}-{i}"),
            serial: cert.serial.clone(),
            amount: 100 + (i as u64 % 900),
            currency: "EUR".into(),
            issued_at: now,
            item: "coffee".into(),
        };
        let bytes = invoice
            .encode()
            .map_err(|e| Error::arg("--seller-id", e.to_string()))?;
        let signature = token.sign(&bytes)?;
        records.push(AccountingRecord {
            transaction_id: invoice.transaction_id.clone(),
            serial: cert.serial_hex(),
            amount: invoice.amount,
            currency: invoice.currency.clone(),
            invoice: simlab_card::hex::encode(&bytes),
            signature: simlab_card::hex::encode(&signature),
        });
        signed.push((bytes, signature));
    }

    out.say(&format!("billing them in batches of {}…", a.batch));
    let started = Instant::now();
    let mut accepted = 0;
    for (n, chunk) in records.chunks(a.batch.max(1)).enumerate() {
        let answer = billing::send(
            &gateway,
            &a.seller_id,
            &format!("bench-{now}-{n}"),
            chunk.to_vec(),
        )
        .map_err(|e| Error::Mismatch {
            what: format!("billing: {e}"),
        })?;
        accepted += answer.accepted;
    }
    let bill_s = started.elapsed().as_secs_f64();
    if accepted != records.len() {
        return Err(Error::Mismatch {
            what: format!("{accepted} of {} records billed", records.len()),
        });
    }

    out.say("verifying the same signatures here, one thread…");
    let key = cert.verifying_key().map_err(|e| Error::Mismatch {
        what: e.to_string(),
    })?;
    let started = Instant::now();
    let valid = signed
        .iter()
        .filter(|(bytes, sig)| x509::verify(&key, bytes, sig))
        .count();
    let verify_s = started.elapsed().as_secs_f64();
    if valid != signed.len() {
        return Err(Error::Mismatch {
            what: "a signature did not verify".into(),
        });
    }

    let enrollments = rate(a.enrollments.max(1), enroll_s);
    let billing = rate(records.len(), bill_s);
    let verify = rate(signed.len(), verify_s);
    let ratio = if verify > 0.0 { billing / verify } else { 0.0 };
    let text = format!(
        "{:<52} {:>8} {:>9} {:>12}\n{:<52} {:>8} {:>9.2} {:>12.1}\n{:<52} {:>8} {:>9.2} {:>12.0}\n{:<52} {:>8} {:>9.2} {:>12.0}\nbilling / raw verify: {:.0} %\n",
        "",
        "count",
        "seconds",
        "per second",
        "enrollments (210-260, AuC + CA + SQLite)",
        a.enrollments.max(1),
        enroll_s,
        enrollments,
        "billing records (910/920, signature verified)",
        records.len(),
        bill_s,
        billing,
        "raw p256 ECDSA verify (this process, 1 thread)",
        signed.len(),
        verify_s,
        verify,
        ratio * 100.0
    );
    out.result(
        &text,
        &json!({
            "enrollments": a.enrollments.max(1),
            "enrollments_per_second": enrollments,
            "records": records.len(),
            "records_per_second": billing,
            "raw_verifies_per_second": verify,
            "billing_to_verify_ratio": ratio,
        }),
    )?;
    Ok(0)
}
