//! The seller billing module (seed 000, figure 10): accounting records go to the gateway in
//! batches of at most `n` (message 910); each answer (920) is entered in the internal log
//! (`billed`) or the error log (`rejected`, with the reason).
//!
//! The answer names only the records the gateway did not bill, by position; every other
//! record of the batch was billed. So the answer is checked to be the answer to this batch
//! (its id, its record count, names that match the positions) before anything is settled: an
//! answer that does not add up leaves the whole batch `submitted`, to be sent again, which the
//! gateway's exactly-once billing makes harmless.
//!
//! A batch whose answer is lost (or refused as `busy`) stays `submitted` and is sent again by
//! the next run. The gateway then reports the records it had billed as `already_billed` with
//! the same invoice; those count as billed — "billed before" — and nothing is billed twice.

use super::sales::{Sale, SaleState, SalesDb};
use crate::http::client::{self, ClientError, Url};
use crate::pki::gateway::billing::MAX_RECORDS;
use crate::pki::messages::{
    AccountingRecord, BillingAnswer, BillingBatch, RecordResult, RecordStatus, RejectReason,
    Rejection, SubmitReport,
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

/// Why an answer cannot be the answer to the batch that was sent.
fn check_answer(batch_id: &str, sent: &[Sale], answer: &BillingAnswer) -> Result<(), String> {
    if answer.batch_id != batch_id {
        return Err(format!("it answers batch {:?}", answer.batch_id));
    }
    if answer.records != sent.len()
        || answer.accepted + answer.rejected != sent.len()
        || answer.rejected != answer.rejections.len()
    {
        return Err(format!(
            "{} records sent, the answer counts {} ({} billed + {} rejected, {} named)",
            sent.len(),
            answer.records,
            answer.accepted,
            answer.rejected,
            answer.rejections.len()
        ));
    }
    let mut previous = None;
    for r in &answer.rejections {
        if previous.is_some_and(|p| r.index <= p) {
            return Err("rejections out of order".into());
        }
        previous = Some(r.index);
        match sent.get(r.index) {
            Some(s) if s.transaction_id == r.transaction_id => {}
            _ => {
                return Err(format!(
                    "rejection {} names {:?}, not a record sent there",
                    r.index, r.transaction_id
                ));
            }
        }
    }
    Ok(())
}

/// Every record's verdict, from an answer that names only the records not billed.
fn verdicts(sent: &[Sale], answer: &BillingAnswer) -> Vec<RecordResult> {
    let mut named = answer.rejections.iter().peekable();
    sent.iter()
        .enumerate()
        .map(|(i, sale)| match named.next_if(|r| r.index == i) {
            Some(r) => Rejection::to_result(r),
            None => RecordResult {
                transaction_id: sale.transaction_id.clone(),
                status: RecordStatus::Billed,
                reason: None,
                detail: None,
                billed_at: Some(answer.billed_at),
                billed_in_batch: Some(answer.batch_id.clone()),
                same_invoice: None,
            },
        })
        .collect()
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
    // The gateway refuses larger batches as a whole.
    let batch_size = batch_size.clamp(1, MAX_RECORDS);
    let mut report = SubmitReport::default();
    loop {
        let batch_id = format!(
            "b{}-{}",
            crate::pki::now(),
            hex::encode(&simlab_card::random::bytes::<6>().map_err(|e| e.to_string())?)
        );
        let claimed = lock()?
            .claim(&batch_id, batch_size)
            .map_err(|e| e.to_string())?;
        if claimed.is_empty() {
            break;
        }
        let records: Vec<AccountingRecord> = claimed.iter().map(record).collect();
        let earlier = || {
            if report.batches > 0 {
                format!(
                    " (earlier batches: {} billed, {} billed before, {} rejected)",
                    report.accepted, report.billed_before, report.rejected
                )
            } else {
                String::new()
            }
        };
        let answer = match send(gateway, seller_id, &batch_id, records) {
            Ok(a) => a,
            Err(ClientError::Status(e)) if e.status < 500 => {
                // A refusal of the whole batch (not this seller's certificate, unknown seller,
                // malformed): the records stay pending, and the operator must act.
                report.pending += claimed.len();
                return Err(format!("the gateway refused the batch: {e}"));
            }
            Err(e) => {
                // No answer, or `busy`, or a failure on the gateway's side: nothing was
                // billed that a resubmission would not report.
                report.pending += claimed.len();
                return Err(format!(
                    "no answer to batch {batch_id} ({e}); its {} records will be sent again{}",
                    claimed.len(),
                    earlier()
                ));
            }
        };
        if let Err(why) = check_answer(&batch_id, &claimed, &answer) {
            report.pending += claimed.len();
            return Err(format!(
                "the gateway's answer to batch {batch_id} does not add up ({why}); its {} records will be sent again{}",
                claimed.len(),
                earlier()
            ));
        }
        report.batches += 1;
        report.submitted += claimed.len();
        let results = verdicts(&claimed, &answer);
        let mut db = lock()?;
        for r in &results {
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
        report.results.extend(results);
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sale(tx: &str) -> Sale {
        Sale {
            transaction_id: tx.into(),
            serial: vec![1],
            public_key: [4; 65],
            item: "coffee".into(),
            amount: 350,
            currency: "EUR".into(),
            issued_at: 1,
            expires_at: 2,
            period_index: 0,
            max_purchases: 10,
            invoice: vec![1, 2],
            signature: Some(vec![3]),
            state: SaleState::Submitted,
            batch_id: Some("b-1".into()),
            reason: None,
            detail: None,
        }
    }

    fn rejection(index: usize, tx: &str, reason: RejectReason, same: Option<bool>) -> Rejection {
        Rejection {
            index,
            transaction_id: tx.into(),
            reason,
            detail: "why".into(),
            billed_at: same.map(|_| 5),
            billed_in_batch: same.map(|_| "b-0".into()),
            same_invoice: same,
        }
    }

    fn answer(rejections: Vec<Rejection>, records: usize) -> BillingAnswer {
        BillingAnswer {
            batch_id: "b-1".into(),
            records,
            accepted: records - rejections.len(),
            rejected: rejections.len(),
            billed_at: 7,
            rejections,
        }
    }

    #[test]
    fn a_record_the_answer_does_not_name_is_billed_in_this_batch() {
        let sent: Vec<Sale> = ["t-0", "t-1", "t-2", "t-3"].map(sale).into();
        let a = answer(
            vec![
                rejection(1, "t-1", RejectReason::AlreadyBilled, Some(true)),
                rejection(3, "t-3", RejectReason::BadSignature, None),
            ],
            4,
        );
        check_answer("b-1", &sent, &a).unwrap();
        let v = verdicts(&sent, &a);
        let ids: Vec<&str> = v.iter().map(|r| r.transaction_id.as_str()).collect();
        assert_eq!(ids, ["t-0", "t-1", "t-2", "t-3"]);
        assert_eq!(v[0].status, RecordStatus::Billed);
        assert_eq!(
            (v[0].billed_at, v[0].billed_in_batch.as_deref()),
            (Some(7), Some("b-1"))
        );
        assert!(billed_before(&v[1]));
        assert_eq!(v[2].status, RecordStatus::Billed);
        assert_eq!(v[3].reason, Some(RejectReason::BadSignature));
        assert!(!billed_before(&v[3]));
    }

    #[test]
    fn an_answer_that_does_not_add_up_settles_nothing() {
        let sent: Vec<Sale> = ["t-0", "t-1"].map(sale).into();
        let ok = answer(
            vec![rejection(1, "t-1", RejectReason::BadSignature, None)],
            2,
        );
        check_answer("b-1", &sent, &ok).unwrap();
        let mut other_batch = ok.clone();
        other_batch.batch_id = "b-2".into();
        let mut short = ok.clone();
        short.records = 1;
        short.accepted = 0;
        let mut miscounted = ok.clone();
        miscounted.accepted = 2;
        let wrong_name = answer(
            vec![rejection(1, "t-0", RejectReason::BadSignature, None)],
            2,
        );
        let beyond = answer(
            vec![rejection(2, "t-2", RejectReason::BadSignature, None)],
            2,
        );
        let twice = answer(
            vec![
                rejection(0, "t-0", RejectReason::BadSignature, None),
                rejection(0, "t-0", RejectReason::BadSignature, None),
            ],
            2,
        );
        for bad in [other_batch, short, miscounted, wrong_name, beyond, twice] {
            assert!(check_answer("b-1", &sent, &bad).is_err(), "{bad:?}");
        }
    }
}
