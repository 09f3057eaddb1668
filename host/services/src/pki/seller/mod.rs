//! The seller of seed 000: the seller sales module (figure 8, messages 610–640) as an HTTP
//! service, with its accounting records ([`sales`]) and its billing module (figure 10,
//! messages 910/920, [`billing`]).
//!
//! | endpoint | message | answer |
//! |---|---|---|
//! | `GET /v1/catalogue` | | items and prices |
//! | `POST /v1/purchases` | 610: certificate + item | 620: invoice |
//! | `POST /v1/purchases/<transaction_id>/payment` | 630: signature | 640: delivery |
//! | `POST /v1/billing/submit` | (runs 910/920 now) | what was billed |
//! | `GET /v1/sales` | | every sale and its billing state |
//!
//! Before it invoices, the seller checks the certificate (issued by the gateway's CA, in its
//! validity period, carrying restrictions), asks the gateway whether it is still valid
//! (operation 830: revocation), and checks the restrictions against the price and its own
//! sales in the period (840). Before it delivers, it checks the signature over the invoice it
//! issued (870/880).

pub mod billing;
pub mod sales;

use crate::http::client::{self, ClientError, Url};
use crate::http::{ApiError, Request, Response, Role};
use crate::pki::invoice::{Invoice, valid_id};
use crate::pki::messages::{
    Catalogue, CatalogueItem, CertificateStatus, Delivery, InvoiceOffer, PaymentRequest,
    PurchaseRequest, hex_range,
};
use crate::pki::now;
use crate::pki::restrictions::money;
use crate::pki::x509::Certificate;
use sales::{Sale, SaleState, SalesDb};
use simlab_card::hex;
use std::sync::Mutex;

/// How long an invoice waits for its signature.
pub const OFFER_TTL: u64 = 120;
/// The largest certificate accepted in 610.
const CERT_MAX: usize = 4096;

/// How the seller runs.
#[derive(Clone, Debug)]
pub struct SellerConfig {
    /// The id the gateway registered this seller under.
    pub seller_id: String,
    pub gateway: Url,
    pub catalogue: Vec<CatalogueItem>,
    /// Records per 910.
    pub batch_size: usize,
}

/// The default catalogue: a few things a street vendor sells.
pub fn default_catalogue(currency: &str) -> Vec<CatalogueItem> {
    [
        ("coffee", 350),
        ("sandwich", 650),
        ("flowers", 1_500),
        ("ticket", 4_900),
    ]
    .into_iter()
    .map(|(name, price)| CatalogueItem {
        name: name.into(),
        price,
        currency: currency.into(),
    })
    .collect()
}

/// The seller service.
pub struct Seller {
    pub config: SellerConfig,
    /// The gateway's CA certificate: subscriber certificates must chain to it.
    pub ca: Certificate,
    /// One connection behind a lock, not a pool: an offer (620) and a payment (640) check the
    /// purchases counted in the period and then write, and the lock is what keeps two
    /// concurrent buyers from both passing the same check. A seller is one process.
    pub db: Mutex<SalesDb>,
}

impl Seller {
    pub fn new(config: SellerConfig, ca: Certificate, db: SalesDb) -> Seller {
        Seller {
            config,
            ca,
            db: Mutex::new(db),
        }
    }

    /// Routes one request.
    pub fn handle(&self, req: &Request) -> Response {
        let segments = req.segments();
        let result = match (req.method.as_str(), segments.as_slice()) {
            ("GET", ["v1", "catalogue"]) => Ok(Response::ok(&Catalogue {
                seller_id: self.config.seller_id.clone(),
                items: self.config.catalogue.clone(),
            })),
            ("POST", ["v1", "purchases"]) => self.purchase(req),
            ("POST", ["v1", "purchases", txn, "payment"]) => self.payment(req, txn),
            // The seller's own books: sales carry serials, invoices and signatures, and a
            // billing run spends the gateway's time, so only the operator's staff (or the
            // seller's own certificate) may ask.
            ("POST", ["v1", "billing", "submit"]) => self.staff(req).and_then(|()| self.submit()),
            ("GET", ["v1", "sales"]) => self.staff(req).and_then(|()| self.list()),
            ("GET", ["v1", "health"]) => Ok(Response::ok(&serde_json::json!({ "role": "seller" }))),
            _ => Err(ApiError::not_found(
                "no_such_endpoint",
                format!("no {} {}", req.method, req.path),
            )),
        };
        result.unwrap_or_else(Response::from)
    }

    /// An operator certificate, or this seller's own.
    fn staff(&self, req: &Request) -> Result<(), ApiError> {
        let peer = req.require(&[Role::Operator, Role::Seller])?;
        if peer.role == Role::Seller && peer.name != self.config.seller_id {
            return Err(ApiError::new(
                403,
                "wrong_seller",
                format!(
                    "these are {}'s books, not {:?}'s",
                    self.config.seller_id, peer.name
                ),
            ));
        }
        Ok(())
    }

    fn db(&self) -> Result<std::sync::MutexGuard<'_, SalesDb>, ApiError> {
        // A request that panicked while holding the connection left no transaction open (a
        // rusqlite `Transaction` rolls back on drop, also while unwinding): recover it instead
        // of answering 500 forever after.
        Ok(self
            .db
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner))
    }

    /// Operations 810–850: check the certificate and the restrictions, then invoice (620).
    fn purchase(&self, req: &Request) -> Result<Response, ApiError> {
        let body: PurchaseRequest = req.json()?;
        let der = hex_range("certificate", &body.certificate, 1..=CERT_MAX)?;
        let item = self
            .config
            .catalogue
            .iter()
            .find(|i| i.name == body.item)
            .ok_or_else(|| {
                ApiError::not_found("unknown_item", format!("no item {:?} for sale", body.item))
            })?;
        let refused = |detail: String| ApiError::new(403, "certificate_rejected", detail);
        let cert = Certificate::from_der(&der).map_err(|e| refused(e.to_string()))?;
        cert.check_issued_by(&self.ca)
            .map_err(|e| refused(e.to_string()))?;
        if cert.is_ca {
            return Err(refused("a CA certificate cannot buy".into()));
        }
        let restrictions = cert
            .restrictions
            .clone()
            .ok_or_else(|| refused("the certificate carries no purchase restrictions".into()))?;
        let now = now();
        if !cert.valid_at(now) {
            return Err(ApiError::new(
                403,
                "certificate_expired",
                format!(
                    "the certificate is valid {} .. {}",
                    crate::pki::der::iso8601(cert.not_before),
                    crate::pki::der::iso8601(cert.not_after)
                ),
            ));
        }
        // Operation 830: online, because a certificate may be revoked before it expires.
        let status: CertificateStatus = client::get_json(
            &self.config.gateway,
            &format!("/v1/certificates/{}", cert.serial_hex()),
        )
        .map_err(|e| match e {
            ClientError::Status(e) if e.status == 404 => ApiError::new(
                403,
                "certificate_unknown",
                "the gateway has no record of this certificate",
            ),
            other => ApiError::unavailable(
                "validity_unknown",
                format!("cannot check the certificate with the gateway: {other}"),
            ),
        })?;
        match status.status.as_str() {
            "valid" => {}
            "revoked" => {
                return Err(ApiError::new(
                    403,
                    "certificate_revoked",
                    format!(
                        "the gateway revoked this certificate{}",
                        status
                            .revocation_reason
                            .map(|r| format!(" ({r})"))
                            .unwrap_or_default()
                    ),
                ));
            }
            other => {
                return Err(ApiError::new(
                    403,
                    "certificate_expired",
                    format!("the gateway says the certificate is {other}"),
                ));
            }
        }
        // Operation 840.
        let broken = |detail: String| ApiError::unprocessable("restriction_broken", detail);
        if item.currency != restrictions.currency {
            return Err(broken(format!(
                "the certificate pays only in {}; {} costs {}",
                restrictions.currency,
                item.name,
                money(item.price, &item.currency)
            )));
        }
        if item.price > restrictions.per_purchase_limit {
            return Err(broken(format!(
                "{} costs {}, over the certificate's limit of {} per purchase",
                item.name,
                money(item.price, &item.currency),
                money(restrictions.per_purchase_limit, &restrictions.currency)
            )));
        }
        let period_index = restrictions.period_index(cert.not_before, now).unwrap_or(0);
        let mut db = self.db()?;
        let used = db
            .purchases_in_period(&cert.serial, period_index)
            .map_err(|e| ApiError::unavailable("database_unavailable", e.to_string()))?;
        if used >= restrictions.max_purchases as u64 {
            return Err(broken(format!(
                "the certificate allows {} purchases per period; {used} were made here",
                restrictions.max_purchases
            )));
        }
        let transaction_id = format!(
            "t{now}-{}",
            hex::encode(
                &simlab_card::random::bytes::<8>()
                    .map_err(|e| ApiError::internal(e.to_string()))?
            )
        );
        let invoice = Invoice {
            seller_id: self.config.seller_id.clone(),
            transaction_id: transaction_id.clone(),
            serial: cert.serial.clone(),
            amount: item.price,
            currency: item.currency.clone(),
            issued_at: now,
            item: item.name.clone(),
        };
        let bytes = invoice
            .encode()
            .map_err(|e| ApiError::internal(e.to_string()))?;
        let sale = Sale {
            transaction_id: transaction_id.clone(),
            serial: cert.serial.clone(),
            public_key: cert.public_key,
            item: item.name.clone(),
            amount: item.price,
            currency: item.currency.clone(),
            issued_at: now,
            expires_at: now + OFFER_TTL,
            period_index,
            max_purchases: restrictions.max_purchases,
            invoice: bytes.clone(),
            signature: None,
            state: SaleState::Offered,
            batch_id: None,
            reason: None,
            detail: None,
        };
        db.offer(&sale)
            .map_err(|e| ApiError::unavailable("database_unavailable", e.to_string()))?;
        Ok(Response::ok(&InvoiceOffer {
            transaction_id,
            seller_id: invoice.seller_id,
            amount: invoice.amount,
            currency: invoice.currency,
            item: invoice.item,
            issued_at: now,
            serial: cert.serial_hex(),
            invoice: hex::encode(&bytes),
            expires_at: sale.expires_at,
        }))
    }

    /// Operations 860–900: check the signature over the invoice this seller issued, keep the
    /// accounting record, deliver (640).
    fn payment(&self, req: &Request, transaction_id: &str) -> Result<Response, ApiError> {
        if !valid_id(transaction_id) {
            return Err(ApiError::bad_request("bad_field", "transaction_id"));
        }
        let body: PaymentRequest = req.json()?;
        let signature = hex_range("signature", &body.signature, 8..=72)?;
        let mut db = self.db()?;
        let unavailable =
            |e: sales::SalesError| ApiError::unavailable("database_unavailable", e.to_string());
        let sale = db
            .sale(transaction_id)
            .map_err(unavailable)?
            .ok_or_else(|| {
                ApiError::not_found(
                    "unknown_transaction",
                    format!("no invoice {transaction_id}"),
                )
            })?;
        if sale.state != SaleState::Offered {
            return Err(ApiError::conflict(
                "already_paid",
                format!("{transaction_id} is paid already ({})", sale.state.name()),
            ));
        }
        if now() > sale.expires_at {
            return Err(ApiError::new(
                410,
                "offer_expired",
                format!("the invoice {transaction_id} expired unpaid; ask for a new one"),
            ));
        }
        if !crate::pki::verify::p256_sha256(&sale.public_key, &sale.invoice, &signature) {
            return Err(ApiError::unprocessable(
                "bad_signature",
                "the signature does not verify over the invoice this seller issued (was another amount signed?)",
            ));
        }
        // Offers are not purchases: the count per period is checked again now.
        let used = db
            .purchases_in_period(&sale.serial, sale.period_index)
            .map_err(unavailable)?;
        if used >= sale.max_purchases as u64 {
            return Err(ApiError::unprocessable(
                "restriction_broken",
                format!(
                    "the certificate allows {} purchases per period; {used} were paid here meanwhile",
                    sale.max_purchases
                ),
            ));
        }
        if !db.pay(transaction_id, &signature).map_err(unavailable)? {
            return Err(ApiError::conflict(
                "already_paid",
                format!("{transaction_id} was paid concurrently"),
            ));
        }
        Ok(Response::ok(&Delivery {
            transaction_id: transaction_id.to_string(),
            item: sale.item.clone(),
            amount: sale.amount,
            currency: sale.currency.clone(),
            delivery: format!(
                "{} from {}, paid {} (receipt {transaction_id})",
                sale.item,
                self.config.seller_id,
                money(sale.amount, &sale.currency)
            ),
        }))
    }

    fn submit(&self) -> Result<Response, ApiError> {
        billing::submit(
            &self.db,
            &self.config.gateway,
            &self.config.seller_id,
            self.config.batch_size,
        )
        .map(|r| Response::ok(&r))
        .map_err(|e| ApiError::new(502, "billing_failed", e))
    }

    fn list(&self) -> Result<Response, ApiError> {
        let sales = self
            .db()?
            .sales(None)
            .map_err(|e| ApiError::unavailable("database_unavailable", e.to_string()))?;
        let rows: Vec<serde_json::Value> = sales.iter().map(sale_json).collect();
        Ok(Response::ok(&rows))
    }
}

/// A sale as JSON (no secrets: the invoice and signature are what the buyer sent openly).
pub fn sale_json(s: &Sale) -> serde_json::Value {
    serde_json::json!({
        "transaction_id": s.transaction_id,
        "serial": hex::encode(&s.serial),
        "item": s.item,
        "amount": s.amount,
        "currency": s.currency,
        "issued_at": s.issued_at,
        "state": s.state.name(),
        "batch_id": s.batch_id,
        "reason": s.reason,
        "detail": s.detail,
        "invoice": hex::encode(&s.invoice),
        "signature": s.signature.as_ref().map(|x| hex::encode(x)),
    })
}
