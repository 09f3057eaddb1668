//! The gateway of seed 000: it bootstraps certificates from GSM/UMTS authentication (messages
//! 210–260, [`bootstrap`]), answers sellers' online validity checks, and bills accounting
//! records exactly once (910/920, [`billing`]). Its CA is [`ca`]; its records are [`store`].
//!
//! | endpoint | message | answer |
//! |---|---|---|
//! | `POST /v1/bootstrap/begin` | 210 | 240 |
//! | `POST /v1/bootstrap/resync` | (USIM sync failure) | 240 |
//! | `POST /v1/bootstrap/finish` | 250 | 260 |
//! | `GET /v1/ca` | | the CA certificate |
//! | `GET /v1/certificates/<serial>` | (operation 830) | validity now |
//! | `POST /v1/billing/batches` | 910 | 920 |
//! | `POST /v1/sellers` | (operator) | the seller registered |
//! | `POST /v1/revocations` | (operator) | the certificate revoked |
//! | `GET /v1/cdrs[?seller_id=ID]` | (operator) | the call detail records |
//!
//! Who may call: anyone for bootstrap and the CA certificate (a phone has no client
//! certificate); a seller's certificate for validity checks and for billing its own records;
//! an operator's certificate for the last three.

pub mod billing;
pub mod bootstrap;
pub mod ca;
pub mod store;
pub mod tls_register;

use super::messages::{CaResponse, CertificateStatus};
use super::restrictions::Restrictions;
use crate::http::client::Url;
use crate::http::{ApiError, Request, Response, Role};
use ca::Ca;
use std::sync::atomic::AtomicU64;
use store::{Pool, StoreError};

/// The Ua security protocol identifier that ends NAF_Id (TS 33.220 Annex H, the value the
/// token's bootstrap tests use): 01 00 00 00 00.
pub const UA_PROTOCOL_ID: [u8; 5] = [0x01, 0x00, 0x00, 0x00, 0x00];
/// Default GSM triplets per session: three Kc give at least 3 × 54 bits even from COMP128-1.
pub const DEFAULT_TRIPLETS: usize = 3;
/// How long a bootstrap session stays open between 240 and 250.
pub const DEFAULT_SESSION_TTL: u64 = 300;
/// The longest certificate lifetime the gateway grants unless configured otherwise.
pub const DEFAULT_MAX_VALIDITY: u64 = 30 * 86_400;
/// How far in the future an invoice's time may be (clocks differ).
pub const MAX_CLOCK_SKEW: u64 = 300;

/// How the gateway runs.
#[derive(Clone, Debug)]
pub struct GatewayConfig {
    /// The AuC's base URL (messages 220/230).
    pub auc: Url,
    /// Triplets per GSM-path session, 2–4.
    pub triplets: usize,
    /// The FQDN in NAF_Id on the USIM path.
    pub naf_fqdn: String,
    pub session_ttl: u64,
    /// The longest `validity_seconds` the gateway certifies (longer requests are refused,
    /// never silently shortened: the subscriber MACed what it asked for).
    pub max_validity: u64,
    /// Threads that verify a batch's signatures in parallel.
    pub verify_threads: usize,
    /// Test fault: exit the process right after committing this many billed records.
    pub exit_after_records: Option<u64>,
}

impl GatewayConfig {
    pub fn new(auc: Url) -> Self {
        GatewayConfig {
            auc,
            triplets: DEFAULT_TRIPLETS,
            naf_fqdn: "gateway.simlab.invalid".into(),
            session_ttl: DEFAULT_SESSION_TTL,
            max_validity: DEFAULT_MAX_VALIDITY,
            verify_threads: std::thread::available_parallelism().map_or(1, |n| n.get()),
            exit_after_records: None,
        }
    }

    /// NAF_Id = FQDN ‖ Ua security protocol identifier.
    pub fn naf_id(&self) -> Vec<u8> {
        [self.naf_fqdn.as_bytes(), &UA_PROTOCOL_ID].concat()
    }
}

/// The gateway service.
pub struct Gateway {
    pub config: GatewayConfig,
    pub ca: Ca,
    pub pool: Pool,
    /// The CA directory's register of TLS certificates (revocations checked per request).
    tls: Option<(std::path::PathBuf, tls_register::Revocations)>,
    /// Records billed by this process (for the test fault).
    billed: AtomicU64,
}

/// A call detail record as JSON, for `GET /v1/cdrs` and `simlab gateway cdrs --json` alike:
/// the signed invoice and its signature come along, so the operator can prove each charge.
pub fn cdr_json(c: &store::Cdr) -> serde_json::Value {
    let hex = simlab_card::hex::encode;
    serde_json::json!({
        "seller_id": c.seller_id,
        "transaction_id": c.transaction_id,
        "serial": hex(&c.serial),
        "imsi": c.imsi,
        "amount": c.amount,
        "currency": c.currency,
        "issued_at": c.issued_at,
        "billed_at": c.billed_at,
        "batch_id": c.batch_id,
        "invoice": hex(&c.invoice),
        "signature": hex(&c.signature),
    })
}

/// The HTTP form of a store failure.
pub fn store_error(e: StoreError) -> ApiError {
    match e {
        StoreError::Conflict(what) => ApiError::conflict("conflict", what),
        StoreError::Backend(why) => ApiError::unavailable("database_unavailable", why),
        StoreError::Corrupt(why) | StoreError::Unusable(why) => ApiError::internal(why),
    }
}

impl Gateway {
    pub fn new(config: GatewayConfig, ca: Ca, pool: Pool) -> Gateway {
        Gateway {
            config,
            ca,
            pool,
            tls: None,
            billed: AtomicU64::new(0),
        }
    }

    /// Checks every client certificate against the TLS register in `ca_dir`, and lets the
    /// operator endpoint revoke TLS certificates there.
    pub fn with_tls_register(mut self, ca_dir: &std::path::Path) -> Gateway {
        self.tls = Some((ca_dir.to_path_buf(), tls_register::Revocations::new(ca_dir)));
        self
    }

    /// Routes one request.
    pub fn handle(&self, req: &Request) -> Response {
        if let (Some(peer), Some((_, revocations))) = (&req.client, &self.tls)
            && revocations.is_revoked(&peer.serial_hex)
        {
            tracing::warn!(
                serial = %peer.serial_hex,
                holder = %format!("{}:{}", peer.role.as_str(), peer.name),
                "revoked client certificate refused"
            );
            return ApiError::new(
                403,
                "certificate_revoked",
                format!("client certificate {} is revoked", peer.serial_hex),
            )
            .into();
        }
        let segments = req.segments();
        let result = match (req.method.as_str(), segments.as_slice()) {
            ("POST", ["v1", "bootstrap", "begin"]) => bootstrap::begin(self, req),
            ("POST", ["v1", "bootstrap", "resync"]) => bootstrap::resync(self, req),
            ("POST", ["v1", "bootstrap", "finish"]) => bootstrap::finish(self, req),
            ("GET", ["v1", "ca"]) => Ok(Response::ok(&CaResponse {
                certificate_pem: self.ca.certificate().to_pem(),
            })),
            ("GET", ["v1", "certificates", serial]) => req
                .require(&[Role::Seller, Role::Operator])
                .and_then(|_| self.status(serial)),
            ("POST", ["v1", "sellers"]) => self.add_seller(req),
            ("POST", ["v1", "revocations"]) => self.revoke(req),
            ("GET", ["v1", "cdrs"]) => self.cdrs(req),
            ("POST", ["v1", "billing", "batches"]) => billing::handle(self, req),
            ("GET", ["v1", "health"]) => {
                Ok(Response::ok(&serde_json::json!({ "role": "gateway" })))
            }
            (_, ["v1", "bootstrap", _] | ["v1", "billing", "batches"]) => {
                Err(ApiError::new(405, "method_not_allowed", "use POST"))
            }
            (_, ["v1", "sellers"] | ["v1", "revocations"]) => {
                Err(ApiError::new(405, "method_not_allowed", "use POST"))
            }
            (_, ["v1", "ca"] | ["v1", "certificates", _] | ["v1", "cdrs"]) => {
                Err(ApiError::new(405, "method_not_allowed", "use GET"))
            }
            _ => Err(ApiError::not_found(
                "no_such_endpoint",
                format!("no {}", req.path),
            )),
        };
        result.unwrap_or_else(Response::from)
    }

    /// `POST /v1/sellers` `{"seller_id": "…", "name": "…"}`: registers a seller (operator).
    fn add_seller(&self, req: &Request) -> Result<Response, ApiError> {
        let operator = req.require(&[Role::Operator])?;
        #[derive(serde::Deserialize)]
        #[serde(deny_unknown_fields)]
        struct AddSeller {
            seller_id: String,
            #[serde(default)]
            name: Option<String>,
        }
        let body: AddSeller = req.json()?;
        if !super::invoice::valid_id(&body.seller_id) {
            return Err(ApiError::bad_request(
                "bad_field",
                "seller_id: 1-64 characters of A-Z a-z 0-9 . _ -",
            ));
        }
        let name = body.name.unwrap_or_else(|| body.seller_id.clone());
        if name.is_empty() || name.len() > 128 || name.chars().any(char::is_control) {
            return Err(ApiError::bad_request(
                "bad_field",
                "name: 1-128 printable characters",
            ));
        }
        self.pool
            .get()
            .and_then(|mut s| s.add_seller(&body.seller_id, &name, super::now()))
            .map_err(store_error)?;
        tracing::info!(operator = %operator.name, seller = %body.seller_id, "seller registered");
        Ok(Response::json(
            201,
            &serde_json::json!({ "seller_id": body.seller_id, "name": name }),
        ))
    }

    /// `POST /v1/revocations` `{"serial": "<hex>", "reason": "…"}` (operator).
    fn revoke(&self, req: &Request) -> Result<Response, ApiError> {
        let operator = req.require(&[Role::Operator])?;
        #[derive(serde::Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Revoke {
            serial: String,
            #[serde(default)]
            reason: Option<String>,
        }
        let body: Revoke = req.json()?;
        let serial = super::messages::hex_range("serial", &body.serial, 1..=20)?;
        let reason = body.reason.unwrap_or_else(|| "reported lost".into());
        if reason.len() > 256 || reason.chars().any(char::is_control) {
            return Err(ApiError::bad_request(
                "bad_field",
                "reason: at most 256 printable characters",
            ));
        }
        let now = super::now();
        let outcome = self
            .pool
            .get()
            .and_then(|mut s| s.revoke(&serial, now, &reason))
            .map_err(store_error)?;
        let already = match outcome {
            store::RevokeOutcome::Revoked => false,
            store::RevokeOutcome::AlreadyRevoked => true,
            store::RevokeOutcome::NotFound => {
                // Not a subscriber certificate: perhaps one of the CA's TLS certificates.
                if let Some((dir, _)) = &self.tls {
                    let hex = body.serial.to_lowercase();
                    let outcome = tls_register::revoke(dir, &hex, now, &reason)
                        .map_err(|e| ApiError::internal(e.to_string()))?;
                    match outcome {
                        tls_register::Revoked::Now | tls_register::Revoked::Already => {
                            tracing::info!(operator = %operator.name, serial = %hex, "TLS certificate revoked");
                            return Ok(Response::ok(&serde_json::json!({
                                "serial": hex,
                                "revoked": true,
                                "already_revoked": outcome == tls_register::Revoked::Already,
                                "tls": true,
                                "revoked_at": now,
                            })));
                        }
                        tls_register::Revoked::Unknown => {}
                    }
                }
                return Err(ApiError::not_found(
                    "unknown_certificate",
                    format!(
                        "no certificate {} was issued here",
                        body.serial.to_lowercase()
                    ),
                ));
            }
        };
        tracing::info!(operator = %operator.name, serial = %body.serial.to_lowercase(), "certificate revoked");
        Ok(Response::ok(&serde_json::json!({
            "serial": body.serial.to_lowercase(),
            "revoked": true,
            "already_revoked": already,
            "revoked_at": now,
        })))
    }

    /// `GET /v1/cdrs[?seller_id=ID]` (operator).
    fn cdrs(&self, req: &Request) -> Result<Response, ApiError> {
        req.require(&[Role::Operator])?;
        let seller = req.query_param("seller_id");
        if let Some(id) = seller
            && !super::invoice::valid_id(id)
        {
            return Err(ApiError::bad_request(
                "bad_field",
                "seller_id: 1-64 characters of A-Z a-z 0-9 . _ -",
            ));
        }
        let cdrs = self
            .pool
            .get()
            .and_then(|mut s| s.cdrs(seller))
            .map_err(store_error)?;
        let rows: Vec<serde_json::Value> = cdrs.iter().map(cdr_json).collect();
        Ok(Response::ok(&rows))
    }

    /// The online validity check of operation 830.
    fn status(&self, serial_hex: &str) -> Result<Response, ApiError> {
        let serial = super::messages::hex_range("serial", serial_hex, 1..=20)?;
        let record = self
            .pool
            .get()
            .and_then(|mut s| s.certificate(&serial))
            .map_err(store_error)?
            .ok_or_else(|| {
                ApiError::not_found(
                    "unknown_certificate",
                    format!("no certificate {serial_hex} was issued here"),
                )
            })?;
        let now = super::now();
        let status = match record.revoked_at {
            Some(_) => "revoked",
            None if now < record.not_before => "not_yet_valid",
            None if now > record.not_after => "expired",
            None => "valid",
        };
        let restrictions = Restrictions::from_der(&record.restrictions)
            .map_err(|e| ApiError::internal(format!("stored restrictions: {e}")))?;
        Ok(Response::ok(&CertificateStatus {
            serial: simlab_card::hex::encode(&record.serial),
            status: status.into(),
            not_before: record.not_before,
            not_after: record.not_after,
            revoked_at: record.revoked_at,
            revocation_reason: record.revocation_reason,
            restrictions,
            checked_at: now,
        }))
    }
}
