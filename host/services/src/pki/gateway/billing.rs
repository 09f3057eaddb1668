//! The gateway billing module (seed 000, figure 11): a batch of accounting records (910) in,
//! one verdict per record (920) out, each record billed at most once, ever.
//!
//! Per record, in the figure's order: the record must read as an invoice of the submitting
//! seller; it must not have been billed before (operation 1235, by the (seller, transaction)
//! id inside the signed invoice); a certificate with its serial must have been issued here
//! (1240/1250); the signature must verify with the certified key and the record must say what
//! the signed invoice says; the certificate must not have been revoked before the invoice; and
//! the restrictions must hold (1260/1270). Then the CDR is stored (1280) and the record
//! confirmed (1290).
//!
//! Signature checks run first, in parallel and outside any transaction (they need only the
//! immutable certified keys); everything that depends on other records runs in database
//! transactions of [`CHUNK`] records. A crash loses at most the uncommitted chunk: those
//! records are simply not billed, and a resubmission reports the committed ones as
//! `already_billed` with `same_invoice: true`.

use super::store::{BillingTx, Cdr, CertRecord, StoreError};
use super::{Gateway, MAX_CLOCK_SKEW, store_error};
use crate::http::{ApiError, Request, Response};
use crate::pki::invoice::{Invoice, valid_id};
use crate::pki::messages::{
    AccountingRecord, BillingAnswer, BillingBatch, RecordResult, RecordStatus, RejectReason,
};
use crate::pki::restrictions::{Restrictions, money};
use crate::pki::x509;
use p256::ecdsa::VerifyingKey;
use sha2::{Digest, Sha256};
use simlab_card::hex;
use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::Ordering;

/// The most records one 910 may carry.
pub const MAX_RECORDS: usize = 10_000;
/// Records per database transaction: large enough that commits (each an fsync) are rare,
/// small enough that a crash loses little work.
pub const CHUNK: usize = 500;
/// The longest invoice accepted, in bytes.
const INVOICE_MAX: usize = 1024;
/// A DER ECDSA P-256 signature is at most 72 bytes.
const SIGNATURE_MAX: usize = 72;
/// The exit status of the `exit_after_records` test fault.
pub const FAULT_EXIT: i32 = 86;

/// A record that reads as an invoice.
struct Parsed {
    invoice: Invoice,
    bytes: Vec<u8>,
    signature: Vec<u8>,
    sha256: [u8; 32],
}

/// A verdict reached before the database is consulted.
type Early = Result<Parsed, (RejectReason, String)>;

fn parse(seller_id: &str, r: &AccountingRecord) -> Early {
    let malformed = |why: String| (RejectReason::MalformedRecord, why);
    let bytes = hex::decode("invoice", &r.invoice).map_err(|e| malformed(e.to_string()))?;
    if bytes.len() > INVOICE_MAX {
        return Err(malformed(format!(
            "invoice longer than {INVOICE_MAX} bytes"
        )));
    }
    let signature = hex::decode("signature", &r.signature).map_err(|e| malformed(e.to_string()))?;
    if signature.is_empty() || signature.len() > SIGNATURE_MAX {
        return Err(malformed(format!(
            "signature: {} bytes, a DER ECDSA P-256 signature has at most {SIGNATURE_MAX}",
            signature.len()
        )));
    }
    let invoice = Invoice::decode(&bytes).map_err(|e| malformed(e.to_string()))?;
    if invoice.seller_id != seller_id {
        return Err((
            RejectReason::WrongSeller,
            format!(
                "the invoice is seller {:?}'s, not {seller_id:?}'s",
                invoice.seller_id
            ),
        ));
    }
    if invoice.transaction_id != r.transaction_id {
        return Err(malformed(format!(
            "transaction_id {:?} differs from the signed invoice's {:?}",
            r.transaction_id, invoice.transaction_id
        )));
    }
    let sha256 = Sha256::digest(&bytes).into();
    Ok(Parsed {
        invoice,
        bytes,
        signature,
        sha256,
    })
}

/// What the record claims and the signed invoice says must agree.
fn mismatch(r: &AccountingRecord, invoice: &Invoice) -> Option<String> {
    if r.amount != invoice.amount {
        return Some(format!(
            "the record says {} but the signed invoice says {}",
            money(r.amount, &r.currency),
            money(invoice.amount, &invoice.currency)
        ));
    }
    if r.currency != invoice.currency {
        return Some(format!(
            "the record's currency {} differs from the signed invoice's {}",
            r.currency, invoice.currency
        ));
    }
    if !r.serial.eq_ignore_ascii_case(&hex::encode(&invoice.serial)) {
        return Some("the record's serial differs from the signed invoice's".into());
    }
    None
}

/// The restriction check of operation 1260, given purchases already billed in the period.
fn restriction_broken(
    cert: &CertRecord,
    r: &Restrictions,
    invoice: &Invoice,
    used: u64,
    now: u64,
) -> Option<String> {
    if invoice.currency != r.currency {
        return Some(format!(
            "currency {} where the certificate allows only {}",
            invoice.currency, r.currency
        ));
    }
    if invoice.amount > r.per_purchase_limit {
        return Some(format!(
            "{} exceeds the per-purchase limit of {}",
            money(invoice.amount, &invoice.currency),
            money(r.per_purchase_limit, &r.currency)
        ));
    }
    if invoice.issued_at < cert.not_before || invoice.issued_at > cert.not_after {
        return Some(format!(
            "issued at {} outside the certificate's validity {} .. {}",
            crate::pki::der::iso8601(invoice.issued_at),
            crate::pki::der::iso8601(cert.not_before),
            crate::pki::der::iso8601(cert.not_after)
        ));
    }
    if invoice.issued_at > now + MAX_CLOCK_SKEW {
        return Some("issued in the future".into());
    }
    if used >= r.max_purchases as u64 {
        return Some(format!(
            "the certificate allows {} purchases per period and {used} are billed already",
            r.max_purchases
        ));
    }
    None
}

fn rejected(r: &AccountingRecord, reason: RejectReason, detail: String) -> RecordResult {
    RecordResult {
        transaction_id: r.transaction_id.clone(),
        status: RecordStatus::Rejected,
        reason: Some(reason),
        detail: Some(detail),
        billed_at: None,
        billed_in_batch: None,
        same_invoice: None,
    }
}

/// `POST /v1/billing/batches`.
pub fn handle(gw: &Gateway, req: &Request) -> Result<Response, ApiError> {
    let batch: BillingBatch = req.json()?;
    bill(gw, &batch).map(|answer| Response::ok(&answer))
}

/// Verifies every signature whose certificate is known, on `threads` threads.
fn verify_all(
    parsed: &[Early],
    keys: &HashMap<Vec<u8>, VerifyingKey>,
    threads: usize,
) -> Vec<Option<bool>> {
    let check = |p: &Early| -> Option<bool> {
        let p = p.as_ref().ok()?;
        let key = keys.get(&p.invoice.serial)?;
        Some(x509::verify(key, &p.bytes, &p.signature))
    };
    let threads = threads.clamp(1, 16);
    if threads == 1 || parsed.len() < 64 {
        return parsed.iter().map(check).collect();
    }
    let per = parsed.len().div_ceil(threads);
    std::thread::scope(|scope| {
        let handles: Vec<_> = parsed
            .chunks(per)
            .map(|part| scope.spawn(move || part.iter().map(check).collect::<Vec<_>>()))
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap_or_default())
            .collect()
    })
}

/// Bills a batch (operations 1220–1330).
pub fn bill(gw: &Gateway, batch: &BillingBatch) -> Result<BillingAnswer, ApiError> {
    if !valid_id(&batch.seller_id) {
        return Err(ApiError::bad_request(
            "bad_field",
            "seller_id: 1-64 characters of A-Z a-z 0-9 . _ -",
        ));
    }
    if batch.batch_id.is_empty() || batch.batch_id.len() > 64 {
        return Err(ApiError::bad_request(
            "bad_field",
            "batch_id: 1-64 characters",
        ));
    }
    if batch.records.is_empty() || batch.records.len() > MAX_RECORDS {
        return Err(ApiError::bad_request(
            "bad_field",
            format!("records: 1 to {MAX_RECORDS} per batch"),
        ));
    }
    let mut store = gw.pool.get().map_err(store_error)?;
    if !store.seller_exists(&batch.seller_id).map_err(store_error)? {
        return Err(ApiError::new(
            403,
            "unknown_seller",
            format!(
                "seller {:?} is not registered with this gateway",
                batch.seller_id
            ),
        ));
    }
    let now = crate::pki::now();
    let parsed: Vec<Early> = batch
        .records
        .iter()
        .map(|r| parse(&batch.seller_id, r))
        .collect();
    // The certified keys, looked up once per distinct serial.
    let serials: BTreeSet<Vec<u8>> = parsed
        .iter()
        .filter_map(|p| p.as_ref().ok().map(|p| p.invoice.serial.clone()))
        .collect();
    let mut keys = HashMap::new();
    for serial in &serials {
        if let Some(cert) = store.certificate(serial).map_err(store_error)?
            && let Ok(key) = VerifyingKey::from_sec1_bytes(&cert.public_key)
        {
            keys.insert(serial.clone(), key);
        }
    }
    let signatures = verify_all(&parsed, &keys, gw.config.verify_threads);

    let mut results = Vec::with_capacity(batch.records.len());
    let indices: Vec<usize> = (0..batch.records.len()).collect();
    for chunk in indices.chunks(CHUNK) {
        let mut chunk_results = Vec::new();
        let mut fault = None;
        // One transaction per chunk; an error (or a panic) inside rolls the chunk back.
        store
            .billing(&mut |tx| {
                (chunk_results, fault) =
                    bill_chunk(gw, tx, batch, chunk, &parsed, &signatures, now)?;
                Ok(())
            })
            .map_err(store_error)?;
        if let Some(n) = fault {
            // Test fault: the gateway dies mid-batch, right after committing what it billed
            // so far and before anyone hears about it.
            eprintln!("gateway: test fault: exiting after {n} billed records");
            std::process::exit(FAULT_EXIT);
        }
        results.append(&mut chunk_results);
    }
    let accepted = results
        .iter()
        .filter(|r| r.status == RecordStatus::Billed)
        .count();
    Ok(BillingAnswer {
        batch_id: batch.batch_id.clone(),
        accepted,
        rejected: results.len() - accepted,
        results,
    })
}

/// One transaction's worth of records, and, when the `--exit-after-records` test fault
/// fires, how many records were billed (the chunk stops there and is committed).
fn bill_chunk(
    gw: &Gateway,
    store: &mut dyn BillingTx,
    batch: &BillingBatch,
    chunk: &[usize],
    parsed: &[Early],
    signatures: &[Option<bool>],
    now: u64,
) -> Result<(Vec<RecordResult>, Option<u64>), StoreError> {
    let serials: BTreeSet<Vec<u8>> = chunk
        .iter()
        .filter_map(|&i| parsed[i].as_ref().ok().map(|p| p.invoice.serial.clone()))
        .collect();
    let serials: Vec<Vec<u8>> = serials.into_iter().collect();
    let certs: HashMap<Vec<u8>, (CertRecord, Option<Restrictions>)> = store
        .lock_certificates(&serials)?
        .into_iter()
        .map(|c| {
            let r = Restrictions::from_der(&c.restrictions).ok();
            (c.serial.clone(), (c, r))
        })
        .collect();
    let mut out = Vec::with_capacity(chunk.len());
    for &i in chunk {
        let record = &batch.records[i];
        let p = match &parsed[i] {
            Ok(p) => p,
            Err((reason, detail)) => {
                out.push(rejected(record, *reason, detail.clone()));
                continue;
            }
        };
        let inv = &p.invoice;
        if let Some(b) = store.billed(&inv.seller_id, &inv.transaction_id)? {
            out.push(RecordResult {
                billed_at: Some(b.billed_at),
                billed_in_batch: Some(b.batch_id.clone()),
                same_invoice: Some(b.invoice_sha256 == p.sha256),
                ..rejected(
                    record,
                    RejectReason::AlreadyBilled,
                    format!(
                        "{} was billed at {} in batch {}",
                        inv.transaction_id,
                        crate::pki::der::iso8601(b.billed_at),
                        b.batch_id
                    ),
                )
            });
            continue;
        }
        let Some((cert, restrictions)) = certs.get(&inv.serial) else {
            out.push(rejected(
                record,
                RejectReason::NoCertificateRecord,
                format!(
                    "no certificate {} was issued here",
                    hex::encode(&inv.serial)
                ),
            ));
            continue;
        };
        if signatures[i] != Some(true) {
            out.push(rejected(
                record,
                RejectReason::BadSignature,
                "the signature does not verify with the certified key over the invoice".into(),
            ));
            continue;
        }
        if let Some(why) = mismatch(record, inv) {
            out.push(rejected(record, RejectReason::InvoiceMismatch, why));
            continue;
        }
        if let Some(at) = cert.revoked_at
            && inv.issued_at >= at
        {
            out.push(rejected(
                record,
                RejectReason::CertificateRevoked,
                format!(
                    "the certificate was revoked at {}, before the invoice",
                    crate::pki::der::iso8601(at)
                ),
            ));
            continue;
        }
        let Some(restrictions) = restrictions else {
            return Err(StoreError::Corrupt(format!(
                "certificate {}: stored restrictions",
                hex::encode(&cert.serial)
            )));
        };
        let period = restrictions
            .period_index(cert.not_before, inv.issued_at)
            .unwrap_or(0);
        let used = store.usage(&cert.serial, period)?;
        if let Some(why) = restriction_broken(cert, restrictions, inv, used, now) {
            out.push(rejected(record, RejectReason::RestrictionBroken, why));
            continue;
        }
        let cdr = Cdr {
            seller_id: inv.seller_id.clone(),
            transaction_id: inv.transaction_id.clone(),
            serial: cert.serial.clone(),
            imsi: cert.imsi.clone(),
            amount: inv.amount,
            currency: inv.currency.clone(),
            issued_at: inv.issued_at,
            period,
            invoice: p.bytes.clone(),
            invoice_sha256: p.sha256,
            signature: p.signature.clone(),
            batch_id: batch.batch_id.clone(),
            billed_at: now,
        };
        if !store.insert_cdr(&cdr)? {
            // Another gateway process billed it between our check and our insert.
            let b = store.billed(&inv.seller_id, &inv.transaction_id)?;
            out.push(RecordResult {
                billed_at: b.as_ref().map(|b| b.billed_at),
                billed_in_batch: b.as_ref().map(|b| b.batch_id.clone()),
                same_invoice: b.as_ref().map(|b| b.invoice_sha256 == p.sha256),
                ..rejected(
                    record,
                    RejectReason::AlreadyBilled,
                    format!("{} was billed concurrently", inv.transaction_id),
                )
            });
            continue;
        }
        out.push(RecordResult {
            transaction_id: record.transaction_id.clone(),
            status: RecordStatus::Billed,
            reason: None,
            detail: None,
            billed_at: Some(now),
            billed_in_batch: Some(batch.batch_id.clone()),
            same_invoice: None,
        });
        if let Some(limit) = gw.config.exit_after_records {
            let n = gw.billed.fetch_add(1, Ordering::SeqCst) + 1;
            if n >= limit {
                return Ok((out, Some(n)));
            }
        }
    }
    Ok((out, None))
}
