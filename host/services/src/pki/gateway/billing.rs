//! The gateway billing module (seed 000, figure 11): a batch of accounting records (910) in,
//! counts and the records not billed (920) out, each record billed at most once, ever.
//!
//! Only a seller may submit, and only its own records: the mutual-TLS client certificate must
//! be a seller's whose name is the batch's `seller_id` (the invoices inside are signed by
//! buyers, not by the seller, so without this anyone holding a seller's paid invoices — they
//! travel in the clear to the seller — could bill them in a batch of their choosing).
//!
//! Per record, in the figure's order: the record must read as an invoice of the submitting
//! seller; a certificate with its serial must have been issued here (1240/1250); the
//! signature must verify with the certified key; it must not have been billed before
//! (operation 1235, by the (seller, transaction) id inside the signed invoice — checked after
//! the signature so that the answer says nothing about a record nobody signed); the record
//! must say what the signed invoice says; the certificate must not have been revoked before
//! the invoice; and the restrictions must hold (1260/1270). Then the CDR is stored (1280) and
//! the record confirmed (1290).
//!
//! Signature checks run first, in parallel and outside any transaction (they need only the
//! immutable certified keys); everything that depends on other records runs in database
//! transactions of [`CHUNK`] records. A crash loses at most the uncommitted chunk: those
//! records are simply not billed, and a resubmission reports the committed ones as
//! `already_billed` with `same_invoice: true`.
//!
//! What one request may cost is bounded: [`MAX_RECORDS`] records in at most
//! [`MAX_BATCH_BYTES`] of body, [`MAX_CONCURRENT_BATCHES`] batches parsed and verified at once
//! (more are told `busy`, not queued: a queued request would hold a server thread and its body
//! while it waits), and an answer that names only the records not billed.

use super::store::{self, BillingTx, Cdr, CertRecord, StoreError};
use super::{Gateway, MAX_CLOCK_SKEW, store_error};
use crate::http::{ApiError, Peer, Request, Response, Role};
use crate::pki::invoice::{self, Invoice, valid_id};
use crate::pki::messages::{
    AccountingRecord, BillingAnswer, BillingBatch, RejectReason, Rejection,
};
use crate::pki::restrictions::{Restrictions, money};
use crate::pki::verify;
use sha2::{Digest, Sha256};
use simlab_card::hex;
use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering};

/// The most records one 910 may carry: its signature checks take about 60 ms of one core.
pub const MAX_RECORDS: usize = 1_000;
/// Records per database transaction: large enough that commits (each an fsync) are rare,
/// small enough that a crash loses little work.
pub const CHUNK: usize = 500;
/// The longest invoice that can decode: the label, two ids, a serial, two u64, a currency and
/// an item, each behind its 2-byte length.
pub const INVOICE_MAX: usize = 8 * 2
    + invoice::LABEL.len()
    + 2 * invoice::ID_MAX
    + invoice::SERIAL_MAX
    + 8
    + 3
    + 8
    + invoice::ITEM_MAX;
/// A DER ECDSA P-256 signature is at most 72 bytes.
pub const SIGNATURE_MAX: usize = 72;
/// The longest `currency` a record may claim (an honest one has 3 letters; a longer one is an
/// `invoice_mismatch`, a much longer one a malformed batch).
pub const CURRENCY_FIELD_MAX: usize = 8;
/// One record in compact JSON at its largest: the keys and punctuation
/// (`{"transaction_id":"","serial":"","amount":,"currency":"","invoice":"","signature":""},`)
/// and each value at its bound.
const RECORD_JSON_MAX: usize = 86
    + invoice::ID_MAX
    + 2 * invoice::SERIAL_MAX
    + 20
    + CURRENCY_FIELD_MAX
    + 2 * INVOICE_MAX
    + 2 * SIGNATURE_MAX;
/// The batch around the records: `{"seller_id":"","batch_id":"","records":[]}` and two ids.
const ENVELOPE_JSON_MAX: usize = 45 + 2 * invoice::ID_MAX;
/// The largest body a valid 910 has, as serde_json (and so the seller) writes it: the HTTP
/// layer's body limit for `POST /v1/billing/batches`. About 1 MB; anything larger is refused
/// before it is read.
pub const MAX_BATCH_BYTES: usize = ENVELOPE_JSON_MAX + MAX_RECORDS * RECORD_JSON_MAX;
/// Batches parsed and verified at the same time, in this process. Each holds about twice its
/// body in memory and keeps `verify_threads` cores busy; two already fill the machine.
pub const MAX_CONCURRENT_BATCHES: usize = 4;
/// What a `busy` answer tells the seller to wait before it tries again.
pub const BUSY_RETRY_SECONDS: u64 = 1;
/// The most threads one batch verifies on.
const MAX_VERIFY_THREADS: usize = 16;
/// Below this many records a batch is verified on the calling thread: spawning costs more.
const PARALLEL_MIN: usize = 64;
/// The exit status of the `exit_after_records` test fault.
pub const FAULT_EXIT: i32 = 86;

const BAD_REQUEST: u16 = 400;
const FORBIDDEN: u16 = 403;
const INTERNAL_SERVER_ERROR: u16 = 500;
const SERVICE_UNAVAILABLE: u16 = 503;

/// Why a batch as a whole was not billed: nothing of it was.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BillingError {
    /// 403 `client_certificate_required`: no mutual-TLS client certificate.
    NoClientCertificate,
    /// 403 `wrong_role`: a certificate of another role than seller.
    WrongRole { role: Role, name: String },
    /// 403 `wrong_seller`: a seller's certificate, but the batch is another seller's.
    WrongSeller { certificate: String, batch: String },
    /// 403 `unknown_seller`: the seller is not registered with this gateway.
    UnknownSeller(String),
    /// 400 `malformed_json`: the body is not a 910.
    MalformedJson(String),
    /// 400 `bad_field`: a field of the batch is out of its range.
    BadField(String),
    /// 503 `busy`: [`MAX_CONCURRENT_BATCHES`] are being verified; try again later.
    Busy,
    /// 500 `internal_error`: a verification worker panicked, so which record each verdict
    /// belongs to is unknown; nothing was billed.
    WorkerPanicked,
    /// The store failed (503 when unreachable, 500 when corrupt).
    Store(StoreError),
}

impl fmt::Display for BillingError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BillingError::NoClientCertificate => f.write_str(
                "billing needs the seller's client certificate (mutual TLS); none was presented",
            ),
            BillingError::WrongRole { role, name } => write!(
                f,
                "the client certificate is {name:?}'s, a {} certificate, not a seller's",
                role.as_str()
            ),
            BillingError::WrongSeller { certificate, batch } => write!(
                f,
                "the client certificate is seller {certificate:?}'s; it may not bill seller {batch:?}'s records"
            ),
            BillingError::UnknownSeller(id) => {
                write!(f, "seller {id:?} is not registered with this gateway")
            }
            BillingError::MalformedJson(why) | BillingError::BadField(why) => f.write_str(why),
            BillingError::Busy => write!(
                f,
                "{MAX_CONCURRENT_BATCHES} batches are being verified; retry after {BUSY_RETRY_SECONDS} s (Retry-After: {BUSY_RETRY_SECONDS})"
            ),
            BillingError::WorkerPanicked => f.write_str(
                "a signature-verification worker failed; nothing of this batch was billed, send it again",
            ),
            BillingError::Store(e) => e.fmt(f),
        }
    }
}

impl std::error::Error for BillingError {}

impl From<StoreError> for BillingError {
    fn from(e: StoreError) -> Self {
        BillingError::Store(e)
    }
}

impl From<BillingError> for ApiError {
    fn from(e: BillingError) -> Self {
        let detail = e.to_string();
        let (status, code) = match &e {
            BillingError::NoClientCertificate => (FORBIDDEN, "client_certificate_required"),
            BillingError::WrongRole { .. } => (FORBIDDEN, "wrong_role"),
            BillingError::WrongSeller { .. } => (FORBIDDEN, "wrong_seller"),
            BillingError::UnknownSeller(_) => (FORBIDDEN, "unknown_seller"),
            BillingError::MalformedJson(_) => (BAD_REQUEST, "malformed_json"),
            BillingError::BadField(_) => (BAD_REQUEST, "bad_field"),
            BillingError::Busy => (SERVICE_UNAVAILABLE, "busy"),
            BillingError::WorkerPanicked => (INTERNAL_SERVER_ERROR, "internal_error"),
            BillingError::Store(e) => return store_error(e.clone()),
        };
        ApiError::new(status, code, detail)
    }
}

/// A counting semaphore that never waits: [`Slots::try_acquire`] either takes a slot or says
/// there is none.
pub struct Slots {
    taken: AtomicUsize,
    max: usize,
}

/// A slot of [`Slots`], given back on drop (a panicking request gives it back too).
pub struct Slot<'a>(&'a Slots);

impl Slots {
    pub const fn new(max: usize) -> Slots {
        Slots {
            taken: AtomicUsize::new(0),
            max,
        }
    }

    pub fn try_acquire(&self) -> Option<Slot<'_>> {
        self.taken
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < self.max).then_some(n + 1)
            })
            .ok()
            .map(|_| Slot(self))
    }
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        self.0.taken.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The process's batches in verification: CPU and memory are the process's, whatever number
/// of [`Gateway`] values it holds.
static SLOTS: Slots = Slots::new(MAX_CONCURRENT_BATCHES);

/// A record that reads as an invoice.
struct Parsed {
    invoice: Invoice,
    bytes: Vec<u8>,
    signature: Vec<u8>,
    sha256: [u8; 32],
}

/// A verdict reached before the database is consulted.
type Early = Result<Parsed, (RejectReason, String)>;

/// Strict hex (no separators: the JSON convention), without the copy a lenient decoder makes.
fn unhex(field: &str, text: &str) -> Result<Vec<u8>, String> {
    fn nibble(c: u8) -> Option<u8> {
        match c {
            b'0'..=b'9' => Some(c - b'0'),
            b'a'..=b'f' => Some(c - b'a' + 10),
            b'A'..=b'F' => Some(c - b'A' + 10),
            _ => None,
        }
    }
    let t = text.as_bytes();
    if !t.len().is_multiple_of(2) {
        return Err(format!("{field}: odd number of hex digits ({})", t.len()));
    }
    t.chunks_exact(2)
        .map(|p| Some(nibble(p[0])? << 4 | nibble(p[1])?))
        .collect::<Option<Vec<u8>>>()
        .ok_or_else(|| format!("{field}: not hex"))
}

/// Whether `text` is the hex of `bytes`, in either case.
fn hex_is(text: &str, bytes: &[u8]) -> bool {
    unhex("serial", text).is_ok_and(|t| t == bytes)
}

fn parse(seller_id: &str, r: &AccountingRecord) -> Early {
    let malformed = |why: String| (RejectReason::MalformedRecord, why);
    let bytes = unhex("invoice", &r.invoice).map_err(malformed)?;
    let signature = unhex("signature", &r.signature).map_err(malformed)?;
    if signature.is_empty() {
        return Err(malformed("signature: empty".into()));
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
    if !hex_is(&r.serial, &invoice.serial) {
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

fn rejection(
    index: usize,
    r: &AccountingRecord,
    reason: RejectReason,
    detail: String,
) -> Rejection {
    Rejection {
        index,
        transaction_id: r.transaction_id.clone(),
        reason,
        detail,
        billed_at: None,
        billed_in_batch: None,
        same_invoice: None,
    }
}

/// The seller a request comes from: the holder of a seller's client certificate.
fn authenticated_seller(req: &Request) -> Result<&Peer, BillingError> {
    match &req.client {
        None => Err(BillingError::NoClientCertificate),
        Some(peer) if peer.role != Role::Seller => Err(BillingError::WrongRole {
            role: peer.role,
            name: peer.name.clone(),
        }),
        Some(peer) => Ok(peer),
    }
}

/// `POST /v1/billing/batches`.
pub fn handle(gw: &Gateway, req: &Request) -> Result<Response, ApiError> {
    let answer = handle_with(gw, req, &SLOTS)?;
    Ok(Response::ok(&answer))
}

/// [`handle`] with its semaphore given, so that a test can fill one without starving the
/// other tests of the process.
fn handle_with(gw: &Gateway, req: &Request, slots: &Slots) -> Result<BillingAnswer, BillingError> {
    // Who asks comes first: an anonymous client costs no parsing and takes no slot.
    let seller = authenticated_seller(req)?;
    let _slot = slots.try_acquire().ok_or(BillingError::Busy)?;
    let batch: BillingBatch = req
        .json()
        .map_err(|e: ApiError| BillingError::MalformedJson(e.detail))?;
    if batch.seller_id != seller.name {
        return Err(BillingError::WrongSeller {
            certificate: seller.name.clone(),
            batch: batch.seller_id,
        });
    }
    bill(gw, &batch)
}

/// The bounds that make [`MAX_BATCH_BYTES`] a bound: every field of every record, before any
/// work is spent on the batch.
fn check_batch(batch: &BillingBatch) -> Result<(), BillingError> {
    if !valid_id(&batch.seller_id) {
        return Err(BillingError::BadField(
            "seller_id: 1-64 characters of A-Z a-z 0-9 . _ -".into(),
        ));
    }
    if batch.batch_id.is_empty() || batch.batch_id.len() > invoice::ID_MAX {
        return Err(BillingError::BadField("batch_id: 1-64 characters".into()));
    }
    if batch.records.is_empty() || batch.records.len() > MAX_RECORDS {
        return Err(BillingError::BadField(format!(
            "records: 1 to {MAX_RECORDS} per batch, not {}",
            batch.records.len()
        )));
    }
    for (i, r) in batch.records.iter().enumerate() {
        let fields = [
            ("transaction_id", r.transaction_id.len(), invoice::ID_MAX),
            ("serial", r.serial.len(), 2 * invoice::SERIAL_MAX),
            ("currency", r.currency.len(), CURRENCY_FIELD_MAX),
            ("invoice", r.invoice.len(), 2 * INVOICE_MAX),
            ("signature", r.signature.len(), 2 * SIGNATURE_MAX),
        ];
        if let Some((name, len, max)) = fields.iter().find(|(_, len, max)| len > max) {
            return Err(BillingError::BadField(format!(
                "records[{i}].{name}: {len} characters, at most {max}"
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
thread_local! {
    /// Test fault: the verification of the record at this index panics (read on the thread
    /// that bills, so that tests running at the same time are not affected).
    static PANIC_AT: std::cell::Cell<Option<usize>> = const { std::cell::Cell::new(None) };
}

/// `f` over `items` on up to `threads` threads, results in order. A panic in any worker fails
/// the whole call: a shorter result list would give a record another record's verdict.
fn parallel<T: Sync, R: Send>(
    items: &[T],
    threads: usize,
    f: impl Fn(usize, &T) -> R + Sync,
) -> Result<Vec<R>, BillingError> {
    let threads = threads.clamp(1, MAX_VERIFY_THREADS);
    if threads == 1 || items.len() < PARALLEL_MIN {
        return std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            items.iter().enumerate().map(|(i, t)| f(i, t)).collect()
        }))
        .map_err(|_| BillingError::WorkerPanicked);
    }
    let per = items.len().div_ceil(threads);
    let f = &f;
    let out = std::thread::scope(|scope| {
        let handles: Vec<_> = items
            .chunks(per)
            .enumerate()
            .map(|(c, part)| {
                scope.spawn(move || {
                    part.iter()
                        .enumerate()
                        .map(|(j, t)| f(c * per + j, t))
                        .collect::<Vec<R>>()
                })
            })
            .collect();
        // Every handle is joined, so the scope itself does not re-raise a worker's panic.
        let mut out = Vec::with_capacity(items.len());
        let mut failed = false;
        for h in handles {
            match h.join() {
                Ok(mut part) => out.append(&mut part),
                Err(_) => failed = true,
            }
        }
        (!failed).then_some(out)
    });
    out.filter(|o| o.len() == items.len())
        .ok_or(BillingError::WorkerPanicked)
}

/// Whether each parsed record's signature verifies with its certificate's key: `None` when no
/// key was known when the batch was verified.
fn verify_all(
    parsed: &[Early],
    keys: &HashMap<Vec<u8>, [u8; 65]>,
    threads: usize,
) -> Result<Vec<Option<bool>>, BillingError> {
    #[cfg(test)]
    let panic_at = PANIC_AT.with(|p| p.get());
    parallel(parsed, threads, |_i, p| {
        #[cfg(test)]
        if panic_at == Some(_i) {
            panic!("test fault: the verification of record {_i} panics");
        }
        let p = p.as_ref().ok()?;
        let key = keys.get(&p.invoice.serial)?;
        Some(verify::p256_sha256(key, &p.bytes, &p.signature))
    })
}

/// Bills a batch (operations 1220–1330) for the seller it names. Who may name that seller is
/// [`handle`]'s business.
pub fn bill(gw: &Gateway, batch: &BillingBatch) -> Result<BillingAnswer, BillingError> {
    check_batch(batch)?;
    let mut store = gw.pool.get()?;
    if !store.seller_exists(&batch.seller_id)? {
        return Err(BillingError::UnknownSeller(batch.seller_id.clone()));
    }
    let now = crate::pki::now();
    let threads = gw.config.verify_threads;
    let parsed = parallel(&batch.records, threads, |_, r| parse(&batch.seller_id, r))?;
    // The certified keys, looked up once per distinct serial.
    let serials: BTreeSet<&[u8]> = parsed
        .iter()
        .filter_map(|p| p.as_ref().ok().map(|p| &p.invoice.serial[..]))
        .collect();
    let mut keys = HashMap::new();
    for serial in serials {
        if let Some(cert) = store.certificate(serial)? {
            keys.insert(serial.to_vec(), cert.public_key);
        }
    }
    let signatures = verify_all(&parsed, &keys, threads)?;

    let mut rejections = Vec::new();
    let mut accepted = 0;
    let indices: Vec<usize> = (0..batch.records.len()).collect();
    for chunk in indices.chunks(CHUNK) {
        let mut outcome = Chunk::default();
        // One transaction per chunk; an error (or a panic) inside rolls the chunk back.
        store.billing(&mut |tx| {
            outcome = bill_chunk(gw, tx, batch, chunk, &parsed, &signatures, now)?;
            Ok(())
        })?;
        if let Some(n) = outcome.fault {
            // Test fault: the gateway dies mid-batch, right after committing what it billed
            // so far and before anyone hears about it.
            eprintln!("gateway: test fault: exiting after {n} billed records");
            std::process::exit(FAULT_EXIT);
        }
        accepted += outcome.billed;
        rejections.append(&mut outcome.rejections);
    }
    Ok(BillingAnswer {
        batch_id: batch.batch_id.clone(),
        records: batch.records.len(),
        accepted,
        rejected: rejections.len(),
        billed_at: now,
        rejections,
    })
}

/// What one transaction did.
#[derive(Default)]
struct Chunk {
    billed: usize,
    rejections: Vec<Rejection>,
    /// When the `--exit-after-records` test fault fires: how many records were billed (the
    /// chunk stops there and is committed).
    fault: Option<u64>,
}

/// The `already_billed` verdict, saying when, where, and whether with these very bytes.
fn already_billed(
    index: usize,
    record: &AccountingRecord,
    p: &Parsed,
    b: Option<store::Billed>,
    detail: String,
) -> Rejection {
    Rejection {
        billed_at: b.as_ref().map(|b| b.billed_at),
        same_invoice: b.as_ref().map(|b| b.invoice_sha256 == p.sha256),
        billed_in_batch: b.map(|b| b.batch_id),
        ..rejection(index, record, RejectReason::AlreadyBilled, detail)
    }
}

/// One transaction's worth of records.
fn bill_chunk(
    gw: &Gateway,
    store: &mut dyn BillingTx,
    batch: &BillingBatch,
    chunk: &[usize],
    parsed: &[Early],
    signatures: &[Option<bool>],
    now: u64,
) -> Result<Chunk, StoreError> {
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
    // Purchases per (certificate, period): read once, then counted here — the certificates
    // are locked, so nobody else counts them meanwhile.
    let mut usage: HashMap<(&[u8], u64), u64> = HashMap::new();
    let mut out = Chunk::default();
    for &i in chunk {
        let record = &batch.records[i];
        let mut reject = |reason, detail| out.rejections.push(rejection(i, record, reason, detail));
        let p = match &parsed[i] {
            Ok(p) => p,
            Err((reason, detail)) => {
                reject(*reason, detail.clone());
                continue;
            }
        };
        let inv = &p.invoice;
        let Some((cert, restrictions)) = certs.get(&inv.serial) else {
            reject(
                RejectReason::NoCertificateRecord,
                format!(
                    "no certificate {} was issued here",
                    hex::encode(&inv.serial)
                ),
            );
            continue;
        };
        // A certificate issued after the batch was verified (its key unknown then).
        let valid = signatures[i]
            .unwrap_or_else(|| verify::p256_sha256(&cert.public_key, &p.bytes, &p.signature));
        if !valid {
            reject(
                RejectReason::BadSignature,
                "the signature does not verify with the certified key over the invoice".into(),
            );
            continue;
        }
        if let Some(b) = store.billed(&inv.seller_id, &inv.transaction_id)? {
            let detail = format!(
                "{} was billed at {} in batch {}",
                inv.transaction_id,
                crate::pki::der::iso8601(b.billed_at),
                b.batch_id
            );
            out.rejections
                .push(already_billed(i, record, p, Some(b), detail));
            continue;
        }
        if let Some(why) = mismatch(record, inv) {
            reject(RejectReason::InvoiceMismatch, why);
            continue;
        }
        if let Some(at) = cert.revoked_at
            && inv.issued_at >= at
        {
            reject(
                RejectReason::CertificateRevoked,
                format!(
                    "the certificate was revoked at {}, before the invoice",
                    crate::pki::der::iso8601(at)
                ),
            );
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
        let used = match usage.get(&(&cert.serial[..], period)) {
            Some(&n) => n,
            None => store.usage(&cert.serial, period)?,
        };
        if let Some(why) = restriction_broken(cert, restrictions, inv, used, now) {
            reject(RejectReason::RestrictionBroken, why);
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
            let detail = format!("{} was billed concurrently", inv.transaction_id);
            out.rejections.push(already_billed(i, record, p, b, detail));
            continue;
        }
        usage.insert((&cert.serial[..], period), used + 1);
        out.billed += 1;
        if let Some(limit) = gw.config.exit_after_records {
            let n = gw.billed.fetch_add(1, Ordering::SeqCst) + 1;
            if n >= limit {
                out.fault = Some(n);
                return Ok(out);
            }
        }
    }
    Ok(out)
}

/// A gateway of its own on a real SQLite file — an ephemeral CA, one registered seller, and
/// subscriber certificates issued by that CA into the store — with invoices signed by the
/// subscribers' P-256 keys: what the billing benchmark (`simlab gateway bench --billing`)
/// times and the tests bill, with no network and no HTTP stack in between.
pub mod testbed {
    use super::super::ca::Ca;
    use super::super::store::{self, CertRecord, Pool, Session, SessionState};
    use super::super::{Gateway, GatewayConfig};
    use crate::http::client::Url;
    use crate::pki::invoice::Invoice;
    use crate::pki::messages::{AccountingRecord, AuthPath};
    use crate::pki::restrictions::Restrictions;
    use p256::ecdsa::signature::Signer;
    use p256::ecdsa::{Signature, SigningKey};
    use simlab_card::hex;
    use std::path::Path;

    /// The IMSI the testbed's certificates are issued to.
    pub const IMSI: &str = "001010123456789";

    pub struct Testbed {
        pub gateway: Gateway,
        pub seller_id: String,
    }

    /// A certified subscriber: its certificate's serial and the key the token would hold.
    pub struct Subscriber {
        pub serial: [u8; 16],
        pub not_before: u64,
        key: SigningKey,
    }

    fn random<const N: usize>() -> Result<[u8; N], String> {
        simlab_card::random::bytes::<N>().map_err(|e| e.to_string())
    }

    impl Testbed {
        /// A gateway on the SQLite file `db` (created), verifying on `verify_threads`, with
        /// `seller_id` registered.
        pub fn new(db: &Path, seller_id: &str, verify_threads: usize) -> Result<Testbed, String> {
            let db = db.to_str().ok_or("the database path is not UTF-8")?;
            let pool = Pool::new(store::opener(db).map_err(|e| e.to_string())?);
            let ca = Ca::ephemeral("simlab testbed").map_err(|e| e.to_string())?;
            let auc = Url::parse("http://127.0.0.1:9").map_err(|e| e.to_string())?;
            let mut config = GatewayConfig::new(auc);
            config.verify_threads = verify_threads.max(1);
            let gateway = Gateway::new(config, ca, pool);
            gateway
                .pool
                .get()
                .and_then(|mut s| s.add_seller(seller_id, seller_id, crate::pki::now()))
                .map_err(|e| e.to_string())?;
            Ok(Testbed {
                gateway,
                seller_id: seller_id.to_string(),
            })
        }

        /// Issues a certificate with `restrictions` to a fresh key, valid from an hour ago,
        /// stored as the bootstrap (message 260) stores it.
        pub fn subscriber(&self, restrictions: &Restrictions) -> Result<Subscriber, String> {
            let key = loop {
                if let Ok(k) = SigningKey::from_slice(&random::<32>()?) {
                    break k;
                }
            };
            let mut point = [0u8; 65];
            point.copy_from_slice(key.verifying_key().to_sec1_point(false).as_bytes());
            let mut serial = random::<16>()?;
            serial[0] = (serial[0] & 0x7F) | 0x01;
            let now = crate::pki::now();
            let not_before = now - 3600;
            let der = self
                .gateway
                .ca
                .try_issue(&serial, "testbed", &point, not_before, restrictions)
                .map_err(|e| e.to_string())?;
            let sid = random::<16>()?.to_vec();
            let session = Session {
                sid: sid.clone(),
                imsi: IMSI.into(),
                path: AuthPath::Gsm,
                rands: vec![[0; 16]],
                expected: vec![0; 4],
                k: Some([0; 32]),
                created_at: now,
                expires_at: now + 300,
                state: SessionState::Pending,
            };
            let record = CertRecord {
                serial: serial.to_vec(),
                imsi: IMSI.into(),
                sid: sid.clone(),
                public_key: point,
                restrictions: restrictions.to_der(),
                alias: "testbed".into(),
                not_before,
                not_after: not_before + restrictions.validity_seconds,
                der,
                issued_at: not_before,
                revoked_at: None,
                revocation_reason: None,
            };
            let mut store = self.gateway.pool.get().map_err(|e| e.to_string())?;
            store.create_session(&session).map_err(|e| e.to_string())?;
            store
                .close_session(&sid, SessionState::Issued, Some(&record))
                .map_err(|e| e.to_string())?;
            Ok(Subscriber {
                serial,
                not_before,
                key,
            })
        }
    }

    impl Subscriber {
        /// The certified key, as the store holds it (uncompressed SEC1).
        pub fn public_key(&self) -> [u8; 65] {
            let mut point = [0u8; 65];
            point.copy_from_slice(self.key.verifying_key().to_sec1_point(false).as_bytes());
            point
        }

        /// The invoice of a purchase from `seller_id`.
        pub fn invoice(
            &self,
            seller_id: &str,
            transaction_id: &str,
            amount: u64,
            issued_at: u64,
        ) -> Invoice {
            Invoice {
                seller_id: seller_id.into(),
                transaction_id: transaction_id.into(),
                serial: self.serial.to_vec(),
                amount,
                currency: "EUR".into(),
                issued_at,
                item: "coffee".into(),
            }
        }

        /// The accounting record of `invoice`, signed by this subscriber's key.
        pub fn record(&self, invoice: &Invoice) -> Result<AccountingRecord, String> {
            let bytes = invoice.encode().map_err(|e| e.to_string())?;
            let signature: Signature = self.key.sign(&bytes);
            Ok(AccountingRecord {
                transaction_id: invoice.transaction_id.clone(),
                serial: hex::encode(&invoice.serial),
                amount: invoice.amount,
                currency: invoice.currency.clone(),
                invoice: hex::encode(&bytes),
                signature: hex::encode(signature.to_der().as_bytes()),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::testbed::{Subscriber, Testbed};
    use super::*;
    use crate::pki::restrictions::MAX_PURCHASES;

    const SELLER: &str = "cafe-1";

    fn testbed(name: &str, threads: usize) -> Testbed {
        let dir =
            std::env::temp_dir().join(format!("simlab-billing-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Testbed::new(&dir.join("gateway.sqlite"), SELLER, threads).unwrap()
    }

    fn roomy() -> Restrictions {
        Restrictions {
            per_purchase_limit: 1_000_000,
            currency: "EUR".into(),
            max_purchases: MAX_PURCHASES,
            period_seconds: 86_400,
            validity_seconds: 86_400,
        }
    }

    fn records(s: &Subscriber, prefix: &str, n: usize) -> Vec<AccountingRecord> {
        let now = crate::pki::now();
        (0..n)
            .map(|i| {
                s.record(&s.invoice(SELLER, &format!("{prefix}-{i}"), 100 + i as u64, now))
                    .unwrap()
            })
            .collect()
    }

    fn batch(id: &str, records: Vec<AccountingRecord>) -> BillingBatch {
        BillingBatch {
            seller_id: SELLER.into(),
            batch_id: id.into(),
            records,
        }
    }

    fn peer(role: Role, name: &str) -> Option<Peer> {
        Some(Peer {
            role,
            name: name.into(),
            serial_hex: "0a1b".into(),
        })
    }

    fn request(batch: &BillingBatch, client: Option<Peer>) -> Request {
        Request {
            method: "POST".into(),
            path: "/v1/billing/batches".into(),
            query: None,
            headers: vec![],
            body: serde_json::to_vec(batch).unwrap(),
            peer: None,
            client,
        }
    }

    fn cdrs(tb: &Testbed) -> usize {
        tb.gateway.pool.get().unwrap().cdrs(None).unwrap().len()
    }

    fn error(response: &Response) -> (u16, String) {
        let v: serde_json::Value = serde_json::from_slice(&response.body).unwrap();
        (response.status, v["error"].as_str().unwrap().to_string())
    }

    fn reasons(a: &BillingAnswer) -> Vec<(usize, RejectReason)> {
        a.rejections.iter().map(|r| (r.index, r.reason)).collect()
    }

    #[test]
    fn only_the_seller_itself_may_bill_its_records() {
        let tb = testbed("auth", 1);
        let s = tb.subscriber(&roomy()).unwrap();
        let b = batch("b-1", records(&s, "auth", 3));
        let gw = &tb.gateway;
        let refused = [
            (None, "client_certificate_required"),
            (peer(Role::Operator, SELLER), "wrong_role"),
            (peer(Role::Server, SELLER), "wrong_role"),
            (peer(Role::Seller, "cafe-2"), "wrong_seller"),
        ];
        for (client, code) in refused {
            let r = gw.handle(&request(&b, client));
            assert_eq!(error(&r), (403, code.to_string()));
        }
        assert_eq!(cdrs(&tb), 0, "a refused batch billed something");
        let r = gw.handle(&request(&b, peer(Role::Seller, SELLER)));
        assert_eq!(r.status, 200);
        let a: BillingAnswer = serde_json::from_slice(&r.body).unwrap();
        assert_eq!((a.records, a.accepted, a.rejected), (3, 3, 0));
        assert_eq!(cdrs(&tb), 3);
    }

    #[test]
    fn an_unregistered_seller_is_refused_even_with_its_certificate() {
        let tb = testbed("unknown", 1);
        let s = tb.subscriber(&roomy()).unwrap();
        let mut b = batch("b-1", records(&s, "unknown", 1));
        b.seller_id = "cafe-9".into();
        let r = tb
            .gateway
            .handle(&request(&b, peer(Role::Seller, "cafe-9")));
        assert_eq!(error(&r), (403, "unknown_seller".to_string()));
    }

    #[test]
    fn already_billed_is_said_only_of_a_record_whose_signature_verifies() {
        let tb = testbed("billed-sig", 1);
        let s = tb.subscriber(&roomy()).unwrap();
        let good = records(&s, "sig", 1);
        let a = bill(&tb.gateway, &batch("b-1", good.clone())).unwrap();
        assert_eq!(a.accepted, 1);
        // The same id and invoice with a signature nobody made: no word of when it was billed.
        let mut forged = good[0].clone();
        let last = forged.signature.len() - 1;
        let flipped = if &forged.signature[last..] == "0" {
            "1"
        } else {
            "0"
        };
        forged.signature.replace_range(last.., flipped);
        let a = bill(&tb.gateway, &batch("b-2", vec![forged])).unwrap();
        assert_eq!(reasons(&a), [(0, RejectReason::BadSignature)]);
        let r = &a.rejections[0];
        assert_eq!(
            (r.billed_at, &r.billed_in_batch, r.same_invoice),
            (None, &None, None)
        );
        // The genuine record again: billed before, by these very bytes.
        let a = bill(&tb.gateway, &batch("b-3", good)).unwrap();
        assert_eq!(reasons(&a), [(0, RejectReason::AlreadyBilled)]);
        let r = &a.rejections[0];
        assert_eq!(r.billed_in_batch.as_deref(), Some("b-1"));
        assert!(r.billed_at.is_some() && r.billed_before());
        assert_eq!(cdrs(&tb), 1);
    }

    #[test]
    fn verdicts_in_the_figures_order_and_only_for_what_was_not_billed() {
        let tb = testbed("order", 1);
        let strict = Restrictions {
            per_purchase_limit: 2_000,
            max_purchases: 3,
            ..roomy()
        };
        let s = tb.subscriber(&strict).unwrap();
        let now = crate::pki::now();
        let rec =
            |tx: &str, amount: u64, at: u64| s.record(&s.invoice(SELLER, tx, amount, at)).unwrap();
        let r1 = rec("t-1", 350, now);
        let r2 = rec("t-2", 400, now);
        let mut bad_sig = r2.clone();
        bad_sig.signature = records(&s, "other", 1)[0].signature.clone();
        let mut inflated = r2.clone();
        inflated.amount = 4_000;
        let stranger = Testbed::new(
            &std::env::temp_dir().join(format!(
                "simlab-billing-{}-order-2.sqlite",
                std::process::id()
            )),
            SELLER,
            1,
        )
        .unwrap()
        .subscriber(&strict)
        .unwrap();
        let unknown = stranger
            .record(&stranger.invoice(SELLER, "t-6", 100, now))
            .unwrap();
        let other_seller = s.record(&s.invoice("cafe-2", "t-9", 100, now)).unwrap();
        let mut garbage = r1.clone();
        garbage.transaction_id = "t-8".into();
        garbage.invoice = "zz".into();
        let batch1 = vec![
            r1.clone(),                                  // 0 billed
            r1.clone(),                                  // 1 already billed, same invoice
            bad_sig,                                     // 2
            inflated,                                    // 3
            rec("t-3", 2_500, now),                      // 4 over the limit
            unknown,                                     // 5
            rec("t-7", 100, s.not_before + 86_400 + 10), // 6 after the validity
            r2,                                          // 7 billed
            rec("t-4", 450, now),                        // 8 billed
            rec("t-5", 500, now),                        // 9 the 4th in a period of 3
            garbage,                                     // 10
            other_seller,                                // 11
        ];
        let a = bill(&tb.gateway, &batch("b-1", batch1)).unwrap();
        use RejectReason::*;
        assert_eq!(
            reasons(&a),
            [
                (1, AlreadyBilled),
                (2, BadSignature),
                (3, InvoiceMismatch),
                (4, RestrictionBroken),
                (5, NoCertificateRecord),
                (6, RestrictionBroken),
                (9, RestrictionBroken),
                (10, MalformedRecord),
                (11, WrongSeller),
            ]
        );
        assert_eq!((a.records, a.accepted, a.rejected), (12, 3, 9));
        assert!(a.rejections[0].billed_before());
        assert!(a.rejections[3].detail.contains("per-purchase limit"));
        assert!(a.rejections[6].detail.contains("3 purchases per period"));
        assert_eq!(a.rejections[7].transaction_id, "t-8");
        assert_eq!(cdrs(&tb), 3);
        // The JSON: counts and the rejections, no entry for a billed record.
        let json: serde_json::Value = serde_json::to_value(&a).unwrap();
        assert_eq!(json["rejections"].as_array().unwrap().len(), 9);
        assert!(json.get("results").is_none());
    }

    #[test]
    fn the_answer_does_not_grow_with_the_billed_records() {
        let tb = testbed("small-answer", 2);
        let s = tb.subscriber(&roomy()).unwrap();
        let mut recs = records(&s, "many", MAX_RECORDS);
        recs[500].amount += 1;
        let b = batch("b-1", recs);
        let r = tb.gateway.handle(&request(&b, peer(Role::Seller, SELLER)));
        assert_eq!(r.status, 200);
        let a: BillingAnswer = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(
            (a.accepted, reasons(&a)),
            (999, vec![(500, RejectReason::InvoiceMismatch)])
        );
        assert!(r.body.len() < 1_000, "{} bytes of answer", r.body.len());
        assert_eq!(cdrs(&tb), 999);
    }

    #[test]
    fn a_batch_beyond_the_bounds_is_refused_whole() {
        let tb = testbed("bounds", 1);
        let s = tb.subscriber(&roomy()).unwrap();
        let one = records(&s, "bound", 1).remove(0);
        let too_many = batch("b-1", vec![one.clone(); MAX_RECORDS + 1]);
        let mut long_id = one.clone();
        long_id.transaction_id = "t".repeat(invoice::ID_MAX + 1);
        let mut long_sig = one.clone();
        long_sig.signature = "ab".repeat(SIGNATURE_MAX + 1);
        let mut long_invoice = one.clone();
        long_invoice.invoice = "ab".repeat(INVOICE_MAX + 1);
        for b in [
            too_many,
            batch("b-2", vec![]),
            batch("b-3", vec![one.clone(), long_id]),
            batch("b-4", vec![long_sig]),
            batch("b-5", vec![long_invoice]),
        ] {
            let e = bill(&tb.gateway, &b).unwrap_err();
            assert!(matches!(e, BillingError::BadField(_)), "{e:?}");
            assert_eq!(ApiError::from(e).status, 400);
        }
        assert_eq!(cdrs(&tb), 0);
    }

    #[test]
    fn max_batch_bytes_holds_the_largest_valid_batch() {
        let largest = AccountingRecord {
            transaction_id: "t".repeat(invoice::ID_MAX),
            serial: "ab".repeat(invoice::SERIAL_MAX),
            amount: u64::MAX,
            currency: "E".repeat(CURRENCY_FIELD_MAX),
            invoice: "ab".repeat(INVOICE_MAX),
            signature: "ab".repeat(SIGNATURE_MAX),
        };
        let b = BillingBatch {
            seller_id: "s".repeat(invoice::ID_MAX),
            batch_id: "b".repeat(invoice::ID_MAX),
            records: vec![largest; MAX_RECORDS],
        };
        check_batch(&b).unwrap();
        let len = serde_json::to_vec(&b).unwrap().len();
        assert!(len <= MAX_BATCH_BYTES, "{len} > {MAX_BATCH_BYTES}");
        assert!(
            MAX_BATCH_BYTES - len < 64,
            "the bound is loose by {}",
            MAX_BATCH_BYTES - len
        );
        // And the largest invoice that decodes fits INVOICE_MAX exactly.
        let inv = Invoice {
            seller_id: "s".repeat(invoice::ID_MAX),
            transaction_id: "t".repeat(invoice::ID_MAX),
            serial: vec![1; invoice::SERIAL_MAX],
            amount: 1,
            currency: "EUR".into(),
            issued_at: 1,
            item: "i".repeat(invoice::ITEM_MAX),
        };
        assert_eq!(inv.encode().unwrap().len(), INVOICE_MAX);
    }

    #[test]
    fn a_full_gateway_says_busy_and_bills_nothing() {
        let tb = testbed("busy", 1);
        let s = tb.subscriber(&roomy()).unwrap();
        let b = batch("b-1", records(&s, "busy", 2));
        let slots = Slots::new(2);
        let held = (slots.try_acquire().unwrap(), slots.try_acquire().unwrap());
        let req = request(&b, peer(Role::Seller, SELLER));
        let e = handle_with(&tb.gateway, &req, &slots).unwrap_err();
        assert_eq!(e, BillingError::Busy);
        let e = ApiError::from(e);
        assert_eq!((e.status, e.code.as_str()), (503, "busy"));
        assert!(e.detail.contains("Retry-After: 1"), "{}", e.detail);
        assert_eq!(cdrs(&tb), 0);
        drop(held);
        assert_eq!(handle_with(&tb.gateway, &req, &slots).unwrap().accepted, 2);
        assert_eq!(
            slots.taken.load(Ordering::SeqCst),
            0,
            "a slot was not given back"
        );
    }

    #[test]
    fn a_panicking_verification_worker_fails_the_batch_and_bills_nothing() {
        for threads in [1, 2] {
            let tb = testbed(&format!("panic-{threads}"), threads);
            let s = tb.subscriber(&roomy()).unwrap();
            let b = batch("b-1", records(&s, "panic", 200));
            // In the second worker's half, so that the first worker's results are complete.
            PANIC_AT.with(|p| p.set(Some(150)));
            let e = bill(&tb.gateway, &b);
            PANIC_AT.with(|p| p.set(None));
            assert_eq!(
                e.unwrap_err(),
                BillingError::WorkerPanicked,
                "{threads} thread(s)"
            );
            let r = Response::from(ApiError::from(BillingError::WorkerPanicked));
            assert_eq!(error(&r), (500, "internal_error".to_string()));
            assert_eq!(
                cdrs(&tb),
                0,
                "{threads} thread(s): a failed batch billed records"
            );
            let a = bill(&tb.gateway, &b).unwrap();
            assert_eq!(a.accepted, 200);
        }
    }

    #[test]
    fn verdicts_follow_their_records_across_workers() {
        let tb = testbed("workers", 3);
        let s = tb.subscriber(&roomy()).unwrap();
        let mut recs = records(&s, "w", 300);
        for i in [0, 99, 100, 101, 250, 299] {
            recs[i].signature = recs[(i + 1) % 300].signature.clone();
        }
        let a = bill(&tb.gateway, &batch("b-1", recs)).unwrap();
        let bad: Vec<usize> = a.rejections.iter().map(|r| r.index).collect();
        assert_eq!(bad, [0, 99, 100, 101, 250, 299]);
        assert!(
            a.rejections
                .iter()
                .all(|r| r.reason == RejectReason::BadSignature)
        );
    }

    #[test]
    fn hex_is_strict_and_case_blind() {
        assert_eq!(unhex("x", "00aBff").unwrap(), [0, 0xab, 0xff]);
        assert!(unhex("x", "0").is_err());
        assert!(unhex("x", "0g").is_err());
        assert!(unhex("x", "00 11").is_err());
        assert!(hex_is("0A0b", &[10, 11]));
        assert!(!hex_is("0a0c", &[10, 11]));
    }
}
