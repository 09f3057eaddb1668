//! The buyer purchase module (seed 000, figure 7): the mobile station presents its
//! certificate (610), checks the invoice it gets back (620, operations 730/740), has the token
//! sign exactly those bytes after its PIN (630), and takes the delivery (640).
//!
//! The invoice is shown to the user as the fields decoded from the very bytes the token will
//! sign, and those must match what the seller said in words: a seller cannot show one amount
//! and have another signed.

use crate::http::client::{self, ClientError, Url};
use crate::pki::invoice::Invoice;
use crate::pki::messages::{Delivery, InvoiceOffer, PaymentRequest, PurchaseRequest};
use crate::pki::restrictions::money;
use crate::pki::x509::Certificate;
use simlab_applet::chv::PIN_LEN;
use simlab_card::error::Error;
use simlab_card::hex;
use simlab_card::token::{PinOutcome, TokenSession};
use std::fmt;

/// How far an invoice's time may be from this clock.
const CLOCK_SKEW: u64 = 300;

/// What to buy.
#[derive(Clone, Debug)]
pub struct BuyRequest {
    pub seller: Url,
    pub item: String,
    /// The most the user agrees to pay (operation 730); `None`: up to the certificate's limit.
    pub max_amount: Option<u64>,
}

/// A finished purchase.
#[derive(Clone, Debug)]
pub struct Purchase {
    pub offer: InvoiceOffer,
    pub invoice: Invoice,
    /// The exact bytes signed.
    pub invoice_bytes: Vec<u8>,
    /// DER ECDSA signature.
    pub signature: Vec<u8>,
    pub delivery: Delivery,
    pub certificate: Certificate,
}

/// Why the purchase stopped.
#[derive(Debug)]
pub enum BuyError {
    /// The seller refused (bad certificate, revoked, restriction, bad signature) or could not
    /// be reached.
    Seller(ClientError),
    /// The invoice is not what the user agreed to (operation 750): nothing was signed.
    InvoiceRefused(String),
    /// The token has no certificate: enroll first (`simlab ms enroll`).
    NoCertificate,
    /// The card failed or refused (PIN, transport).
    Card(Error),
}

impl fmt::Display for BuyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BuyError::Seller(e) => write!(f, "seller: {e}"),
            BuyError::InvoiceRefused(why) => {
                write!(f, "invoice refused, nothing signed: {why}")
            }
            BuyError::NoCertificate => f.write_str(
                "the token holds no certificate: run `simlab ms enroll --gateway URL` first",
            ),
            BuyError::Card(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for BuyError {}

impl From<BuyError> for Error {
    fn from(e: BuyError) -> Self {
        match e {
            BuyError::Card(e) => e,
            other => Error::Mismatch {
                what: other.to_string(),
            },
        }
    }
}

/// Operation 730/740: the invoice bytes say what the offer says, name this certificate, and
/// the price is acceptable.
pub fn check_offer(
    offer: &InvoiceOffer,
    cert: &Certificate,
    req: &BuyRequest,
    now: u64,
) -> Result<(Invoice, Vec<u8>), BuyError> {
    let refuse = |why: String| Err(BuyError::InvoiceRefused(why));
    let bytes = hex::decode("invoice", &offer.invoice)
        .map_err(|e| BuyError::InvoiceRefused(e.to_string()))?;
    let invoice = Invoice::decode(&bytes).map_err(|e| BuyError::InvoiceRefused(e.to_string()))?;
    if invoice.seller_id != offer.seller_id
        || invoice.transaction_id != offer.transaction_id
        || invoice.amount != offer.amount
        || invoice.currency != offer.currency
        || invoice.item != offer.item
        || invoice.issued_at != offer.issued_at
        || hex::encode(&invoice.serial) != offer.serial.to_ascii_lowercase()
    {
        return refuse("the bytes to sign say something else than the invoice shown".into());
    }
    if invoice.serial != cert.serial {
        return refuse("the invoice names another certificate".into());
    }
    if invoice.item != req.item {
        return refuse(format!(
            "the invoice is for {:?}, not {:?}",
            invoice.item, req.item
        ));
    }
    if let Some(max) = req.max_amount
        && invoice.amount > max
    {
        return refuse(format!(
            "{} is more than the {} you agreed to pay",
            money(invoice.amount, &invoice.currency),
            money(max, &invoice.currency)
        ));
    }
    if let Some(r) = &cert.restrictions
        && (invoice.currency != r.currency || invoice.amount > r.per_purchase_limit)
    {
        return refuse(format!(
            "{} breaks this certificate's limit of {} per purchase",
            money(invoice.amount, &invoice.currency),
            money(r.per_purchase_limit, &r.currency)
        ));
    }
    if invoice.issued_at.abs_diff(now) > CLOCK_SKEW {
        return refuse("the invoice is not dated now".into());
    }
    Ok((invoice, bytes))
}

/// Buys `req.item` with the certificate on the token (messages 610–640). The PIN is verified
/// only after the invoice was checked, right before signing.
pub fn buy(
    token: &mut TokenSession,
    pin: &[u8; PIN_LEN],
    req: &BuyRequest,
    progress: &mut dyn FnMut(&str),
) -> Result<Purchase, BuyError> {
    let der = token
        .certificate()
        .map_err(BuyError::Card)?
        .ok_or(BuyError::NoCertificate)?;
    let certificate = Certificate::from_der(&der).map_err(|e| {
        BuyError::Card(Error::Mismatch {
            what: format!("the certificate on the token: {e}"),
        })
    })?;
    progress(&format!(
        "610 → seller: certificate {} and a request for {:?}",
        certificate.serial_hex(),
        req.item
    ));
    let offer: InvoiceOffer = client::post_json(
        &req.seller,
        "/v1/purchases",
        &PurchaseRequest {
            certificate: hex::encode(&der),
            item: req.item.clone(),
        },
    )
    .map_err(BuyError::Seller)?;
    progress(&format!(
        "620 ← seller {}: invoice {} for {} ({})",
        offer.seller_id,
        offer.transaction_id,
        offer.item,
        money(offer.amount, &offer.currency)
    ));
    let (invoice, bytes) = check_offer(&offer, &certificate, req, crate::pki::now())?;
    progress("the invoice bytes say exactly that, for this certificate, within its limits");
    match token.verify_pin(pin).map_err(BuyError::Card)? {
        PinOutcome::Verified => {}
        PinOutcome::Wrong { tries_left } => {
            return Err(BuyError::Card(Error::Mismatch {
                what: format!("wrong token PIN, {tries_left} tries left: nothing signed"),
            }));
        }
        PinOutcome::Blocked => {
            return Err(BuyError::Card(Error::Mismatch {
                what: "the token PIN is blocked: nothing signed".into(),
            }));
        }
    }
    let signature = token.sign(&bytes).map_err(BuyError::Card)?;
    if !crate::pki::verify::p256_sha256(&certificate.public_key, &bytes, &signature) {
        return Err(BuyError::Card(Error::Mismatch {
            what: "the token's signature does not verify with its certificate".into(),
        }));
    }
    progress(&format!(
        "630 → seller: the token's signature over the {}-byte invoice (PIN verified first)",
        bytes.len()
    ));
    let delivery: Delivery = client::post_json(
        &req.seller,
        &format!("/v1/purchases/{}/payment", offer.transaction_id),
        &PaymentRequest {
            signature: hex::encode(&signature),
        },
    )
    .map_err(BuyError::Seller)?;
    progress(&format!("640 ← seller: {}", delivery.delivery));
    Ok(Purchase {
        offer,
        invoice,
        invoice_bytes: bytes,
        signature,
        delivery,
        certificate,
    })
}
