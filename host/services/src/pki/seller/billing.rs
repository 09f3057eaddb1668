//! The seller billing module (seed 000, figure 10): accounting records go to the gateway in
//! batches of at most `n` (message 910); each answer (920) is entered in the internal log
//! (`billed`) or the error log (`rejected`, with the reason).
//!
//! A batch whose answer is lost stays `submitted` and is sent again by the next run. The
//! gateway then reports the records it had billed as `already_billed` with the same invoice;
//! those count as billed — "billed before" — and nothing is billed twice.

use super::sales::{Sale, SaleState, SalesDb};
use crate::http::client::{self, ClientError, Url};
use crate::pki::messages::{
    AccountingRecord, BillingAnswer, BillingBatch, RecordResult, RecordStatus, RejectReason,
    SubmitReport,
};
use simlab_card::hex;
use std::sync::Mutex;

/// The default batch size `n` of operation 1070.
pub const DEFAULT_BATCH: usize = 500;

/// The accounting record of a paid sale.
pub fn record(sale: &Sale) -> AccountingRecord {
    AccountingRecord {
        transaction_id: sale.transaction_id.clone(),
        serial: hex::encode(&sale.serial),
        amount: sale.amount,
        currency: sale.currency.clone(),
        invoice: hex::encode(&sale.invoice),
        signature: hex::encode(sale.signature.as_deref().unwrap_or_default()),
    }
}

/// Sends one batch (910) and returns the answer (920).
pub fn send(
    gateway: &Url,
    seller_id: &str,
    batch_id: &str,
    records: Vec<AccountingRecord>,
) -> Result<BillingAnswer, ClientError> {
    client::post_json(
        gateway,
        "/v1/billing/batches",
        &BillingBatch {
            seller_id: seller_id.to_string(),
            batch_id: batch_id.to_string(),
            records,
        },
    )
}

/// Whether a rejection means "billed before, by this very record": a resubmission after a
/// lost answer.
pub fn billed_before(r: &RecordResult) -> bool {
    r.reason == Some(RejectReason::AlreadyBilled) && r.same_invoice == Some(true)
}

/// Bills everything that waits (operations 1000–1160). Stops at the first batch the gateway
/// does not answer; its records stay pending for the next run.
pub fn submit(
    db: &Mutex<SalesDb>,
    gateway: &Url,
    seller_id: &str,
    batch_size: usize,
) -> Result<SubmitReport, String> {
    let lock = || {
        db.lock()
            .map_err(|_| "the seller database lock is poisoned".to_string())
    };
    let mut report = SubmitReport::default();
    loop {
        let batch_id = format!(
            "b{}-{}",
            crate::pki::now(),
            hex::encode(&simlab_card::random::bytes::<6>().map_err(|e| e.to_string())?)
        );
        let claimed = lock()?
            .claim(&batch_id, batch_size.max(1))
            .map_err(|e| e.to_string())?;
        if claimed.is_empty() {
            break;
        }
        let records: Vec<AccountingRecord> = claimed.iter().map(record).collect();
        let answer = match send(gateway, seller_id, &batch_id, records) {
            Ok(a) => a,
            Err(ClientError::Status(e)) if e.status < 500 => {
                // A refusal of the whole batch (unknown seller, malformed): the records stay
                // pending, and the operator must act.
                report.pending += claimed.len();
                return Err(format!("the gateway refused the batch: {e}"));
            }
            Err(e) => {
                report.pending += claimed.len();
                let earlier = if report.batches > 0 {
                    format!(
                        " (earlier batches: {} billed, {} billed before, {} rejected)",
                        report.accepted, report.billed_before, report.rejected
                    )
                } else {
                    String::new()
                };
                return Err(format!(
                    "no answer to batch {batch_id} ({e}); its {} records will be sent again{earlier}",
                    claimed.len()
                ));
            }
        };
        report.batches += 1;
        report.submitted += claimed.len();
        let mut db = lock()?;
        for r in &answer.results {
            let (state, reason) = match r.status {
                RecordStatus::Billed => (SaleState::Billed, None),
                _ if billed_before(r) => (SaleState::Billed, Some("billed_before")),
                _ => (SaleState::Rejected, r.reason.map(RejectReason::name)),
            };
            if state == SaleState::Billed {
                report.accepted += usize::from(r.status == RecordStatus::Billed);
                report.billed_before += usize::from(r.status != RecordStatus::Billed);
            } else {
                report.rejected += 1;
            }
            db.settle(&r.transaction_id, state, reason, r.detail.as_deref())
                .map_err(|e| e.to_string())?;
        }
        report.results.extend(answer.results);
    }
    Ok(report)
}
