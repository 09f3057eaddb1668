//! The JSON bodies of every message, shared by the servers and the clients so both ends agree
//! by construction. docs/pki-messages.md documents them with their HTTP statuses.
//!
//! Conventions: snake_case keys, binary values as lower-case hex strings, amounts as integers
//! in minor units, times as seconds since 1970 (UTC). Requests refuse unknown keys.

use super::restrictions::Restrictions;
use crate::http::ApiError;
use serde::{Deserialize, Serialize};

/// Which authentication K comes from.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuthPath {
    /// A3/A8 triplets (2–4 RAND/SRES/Kc): K from several Kc (seed 000).
    #[default]
    Gsm,
    /// One UMTS AKA quintet: K from CK‖IK as GBA's Ks_NAF (TS 33.220).
    Usim,
}

impl AuthPath {
    pub fn name(self) -> &'static str {
        match self {
            AuthPath::Gsm => "gsm",
            AuthPath::Usim => "usim",
        }
    }
}

// ----- 220/230: gateway ↔ AuC ---------------------------------------------------------------

/// 220: the gateway asks the AuC for vectors.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthInfoRequest {
    pub imsi: String,
    /// `gsm` for triplets, `usim` for a quintet.
    pub path: AuthPath,
    /// Triplets wanted (1–4); a quintet request always gets one.
    #[serde(default = "one")]
    pub count: usize,
    /// A USIM's AUTS after a synchronisation failure, with the RAND it answered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resync: Option<Resync>,
}

fn one() -> usize {
    1
}

/// The resynchronisation data of TS 33.102 6.3.5.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Resync {
    pub rand: String,
    pub auts: String,
}

/// 230: the vectors. Kc, CK and IK are secrets: this answer travels only on the operator's
/// link between AuC and gateway (as MAP SendAuthenticationInfo does) and is never logged.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthInfoResponse {
    pub imsi: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub triplets: Vec<Triplet>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub quintets: Vec<Quintet>,
    /// The subscriber's IMS private identity (TS 23.003 13.3), for the USIM path's K.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub impi: Option<String>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Triplet {
    pub rand: String,
    pub sres: String,
    pub kc: String,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Quintet {
    pub rand: String,
    pub autn: String,
    pub xres: String,
    pub ck: String,
    pub ik: String,
}

// ----- 210–260: mobile station ↔ gateway -----------------------------------------------------

/// 210: session id and IMSI.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BeginRequest {
    /// 16 random bytes chosen by the mobile station, never reused.
    pub sid: String,
    pub imsi: String,
    #[serde(default)]
    pub path: AuthPath,
}

/// 240: the challenge and the gateway's proof that it holds K.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BeginResponse {
    pub sid: String,
    pub path: AuthPath,
    /// 2–4 RANDs (gsm) or one (usim).
    pub rands: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub autn: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub impi: Option<String>,
    /// NAF_Id = FQDN ‖ Ua security protocol identifier, hex.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub naf_id: Option<String>,
    pub m1: String,
    /// The session must be finished (250) before this time.
    pub expires_at: u64,
}

/// After a USIM synchronisation failure: AUTS for the same session.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResyncRequest {
    pub sid: String,
    pub auts: String,
}

/// 250: the responses, the key to certify, the user's choices and M2.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FinishRequest {
    pub sid: String,
    /// SRES_1 ‖ … ‖ SRES_n (gsm) or RES (usim), hex.
    pub responses: String,
    /// The uncompressed P-256 point, 65 bytes, hex.
    pub public_key: String,
    pub restrictions: Restrictions,
    /// The alias for the certificate subject; empty for none.
    #[serde(default)]
    pub alias: String,
    pub m2: String,
}

/// 260: the certificate and M3.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FinishResponse {
    pub sid: String,
    pub serial: String,
    /// DER, hex: the bytes M3 covers.
    pub certificate: String,
    pub certificate_pem: String,
    pub m3: String,
    /// The CA certificate that issued it (seed 000's PKG in message 260).
    pub gateway_certificate_pem: String,
}

/// The gateway's CA certificate.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CaResponse {
    pub certificate_pem: String,
}

/// The online validity check (operation 830): what the gateway knows of a certificate now.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CertificateStatus {
    pub serial: String,
    /// `valid`, `revoked`, `expired` or `not_yet_valid`.
    pub status: String,
    pub not_before: u64,
    pub not_after: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoked_at: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revocation_reason: Option<String>,
    pub restrictions: Restrictions,
    pub checked_at: u64,
}

// ----- 910/920: seller ↔ gateway ---------------------------------------------------------------

/// 910: a batch of accounting records.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BillingBatch {
    pub seller_id: String,
    /// The seller's id for this batch (for its logs; records carry their own identity).
    pub batch_id: String,
    pub records: Vec<AccountingRecord>,
}

/// One accounting record: the signed invoice, its signature, and what the seller claims it
/// says (which the gateway checks against the signed bytes).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccountingRecord {
    pub transaction_id: String,
    pub serial: String,
    pub amount: u64,
    pub currency: String,
    /// The invoice bytes (invoice.rs), hex.
    pub invoice: String,
    /// The buyer's ECDSA signature over them, DER, hex.
    pub signature: String,
}

/// What happened to a record.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RecordStatus {
    /// Billed now: a CDR is stored, the seller credited and the buyer charged.
    Billed,
    /// Not billed by this request; `reason` says why.
    Rejected,
}

/// Why a record was rejected (operation 1300), in the order the gateway checks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RejectReason {
    /// The record cannot be read (bad hex, not an invoice).
    MalformedRecord,
    /// The invoice names another seller than the one submitting.
    WrongSeller,
    /// The same (seller, transaction) was billed before (operation 1235); `billed_at` and
    /// `billed_in_batch` say when, `same_invoice` whether it was the identical invoice.
    AlreadyBilled,
    /// No certificate with this serial was issued here (operation 1250).
    NoCertificateRecord,
    /// The signature does not verify with the certified key (operation 1270).
    BadSignature,
    /// The record's amount, currency or serial differ from the signed invoice's.
    InvoiceMismatch,
    /// The certificate was revoked before the invoice was issued.
    CertificateRevoked,
    /// Limit per purchase, count per period, currency or validity broken (operation 1270).
    RestrictionBroken,
}

impl RejectReason {
    pub fn name(self) -> &'static str {
        match self {
            RejectReason::MalformedRecord => "malformed_record",
            RejectReason::WrongSeller => "wrong_seller",
            RejectReason::AlreadyBilled => "already_billed",
            RejectReason::NoCertificateRecord => "no_certificate_record",
            RejectReason::BadSignature => "bad_signature",
            RejectReason::InvoiceMismatch => "invoice_mismatch",
            RejectReason::CertificateRevoked => "certificate_revoked",
            RejectReason::RestrictionBroken => "restriction_broken",
        }
    }
}

/// One record's verdict, as the seller's report (`simlab seller submit`) lists it: every record
/// of its run, billed or not. The gateway's answer (920) names only the records it did not bill
/// ([`Rejection`]); the seller fills in the billed ones.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecordResult {
    pub transaction_id: String,
    pub status: RecordStatus,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<RejectReason>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// When it was billed (now, or before for `already_billed`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub billed_at: Option<u64>,
    /// The batch that billed it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub billed_in_batch: Option<String>,
    /// For `already_billed`: whether the earlier record had the very same invoice bytes (a
    /// resubmission after a lost answer) or a different one (a seller reusing an id).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub same_invoice: Option<bool>,
}

/// A record of a 910 that this request did not bill, and why (operation 1300).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rejection {
    /// Its position in the batch (from 0): transaction ids of unreadable records cannot be
    /// trusted to name them, positions can.
    pub index: usize,
    /// The id the record claims (at most 64 bytes: longer makes the batch a 400).
    pub transaction_id: String,
    pub reason: RejectReason,
    pub detail: String,
    /// For `already_billed`: when it was billed before.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub billed_at: Option<u64>,
    /// For `already_billed`: the batch that billed it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub billed_in_batch: Option<String>,
    /// For `already_billed`: whether the earlier record had the very same invoice bytes (a
    /// resubmission after a lost answer: the record *is* billed) or a different one (a seller
    /// reusing an id).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub same_invoice: Option<bool>,
}

impl Rejection {
    /// Whether the record was billed by an earlier request with these very bytes: the seller
    /// counts it as billed ("billed before"), not as rejected.
    pub fn billed_before(&self) -> bool {
        self.reason == RejectReason::AlreadyBilled && self.same_invoice == Some(true)
    }

    /// The same verdict in the seller's report form.
    pub fn to_result(&self) -> RecordResult {
        RecordResult {
            transaction_id: self.transaction_id.clone(),
            status: RecordStatus::Rejected,
            reason: Some(self.reason),
            detail: Some(self.detail.clone()),
            billed_at: self.billed_at,
            billed_in_batch: self.billed_in_batch.clone(),
            same_invoice: self.same_invoice,
        }
    }
}

/// 920: counts, and only the records not billed by this request. The answer never echoes
/// every record — that would let a 910 cost the gateway its size again in output — so a
/// record the answer does not name was billed, at `billed_at`, in this batch.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BillingAnswer {
    pub batch_id: String,
    /// Records in the batch: `accepted + rejected`.
    pub records: usize,
    /// Billed by this request.
    pub accepted: usize,
    /// Not billed by this request: `rejections.len()`.
    pub rejected: usize,
    /// When this request billed its records (one clock reading for the whole batch).
    pub billed_at: u64,
    /// The records not billed, in batch order.
    pub rejections: Vec<Rejection>,
}

// ----- 610–640: buyer ↔ seller ------------------------------------------------------------------

/// 610: the buyer's certificate and what it wants.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PurchaseRequest {
    /// DER, hex.
    pub certificate: String,
    pub item: String,
}

/// 620: the invoice, as fields for people and as the exact bytes to sign.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InvoiceOffer {
    pub transaction_id: String,
    pub seller_id: String,
    pub amount: u64,
    pub currency: String,
    pub item: String,
    pub issued_at: u64,
    pub serial: String,
    /// The invoice bytes (invoice.rs), hex: what the token signs.
    pub invoice: String,
    /// The offer must be paid (630) before this time.
    pub expires_at: u64,
}

/// 630: the signature that approves the invoice.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PaymentRequest {
    /// DER ECDSA signature over the invoice bytes, hex.
    pub signature: String,
}

/// 640: the delivery.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Delivery {
    pub transaction_id: String,
    pub item: String,
    pub amount: u64,
    pub currency: String,
    /// The goods, for a digital item; a receipt line for anything else.
    pub delivery: String,
}

/// What a seller sells.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Catalogue {
    pub seller_id: String,
    pub items: Vec<CatalogueItem>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CatalogueItem {
    pub name: String,
    pub price: u64,
    pub currency: String,
}

/// The seller's billing run (its operations 1000–1160), as its admin endpoint and
/// `simlab seller submit` report it.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SubmitReport {
    pub batches: usize,
    pub submitted: usize,
    pub accepted: usize,
    pub rejected: usize,
    /// Records the gateway had billed before (a resubmission after a lost answer).
    pub billed_before: usize,
    /// Records left for the next run (the gateway could not be reached).
    pub pending: usize,
    pub results: Vec<RecordResult>,
}

// ----- field decoding ---------------------------------------------------------------------------

/// Decodes a hex field of exactly `N` bytes, or a 400 naming the field.
pub fn hex_fixed<const N: usize>(field: &str, text: &str) -> Result<[u8; N], ApiError> {
    simlab_card::hex::decode_fixed::<N>(field, text)
        .map_err(|e| ApiError::bad_request("bad_field", e.to_string()))
}

/// Decodes a hex field whose length must lie in `range`, or a 400 naming the field.
pub fn hex_range(
    field: &str,
    text: &str,
    range: std::ops::RangeInclusive<usize>,
) -> Result<Vec<u8>, ApiError> {
    let bytes = simlab_card::hex::decode(field, text)
        .map_err(|e| ApiError::bad_request("bad_field", e.to_string()))?;
    if !range.contains(&bytes.len()) {
        return Err(ApiError::bad_request(
            "bad_field",
            format!(
                "{field}: {} bytes, expected {} to {}",
                bytes.len(),
                range.start(),
                range.end()
            ),
        ));
    }
    Ok(bytes)
}

/// Checks an IMSI's form (6–15 digits), or a 400.
pub fn check_imsi(imsi: &str) -> Result<(), ApiError> {
    if (6..=15).contains(&imsi.len()) && imsi.bytes().all(|b| b.is_ascii_digit()) {
        Ok(())
    } else {
        Err(ApiError::bad_request(
            "bad_field",
            format!("imsi: {imsi:?} is not 6 to 15 digits"),
        ))
    }
}
