//! `simlab mec serve`: one operator's MeC server, in both roles at once.
//!
//! As the **visited** server it serves its content providers (`POST /v1/checkout`,
//! `GET /v1/checkout/<id>`, with a seller certificate whose CN is the CP id), finds the home
//! server of a number it does not know (partner table → roamUserRequest to each candidate in
//! prefix order, a deadline per partner, the first verified accept wins), sends the contract
//! home and, when the result comes back, completes a payment with the financial institution
//! and reports it home.
//!
//! As the **home** server it answers partners' roamUserRequests for its subscribers, keeps the
//! contracts sent to it, shows them to the user (`GET /v1/contracts/<id>`, no client
//! certificate: the phone), checks the user's security result against the stored bytes, signs
//! on the user's behalf or wraps the token's signature in CMS, authorises payments with a
//! single-use reference bound to the amount, and books the outcome.
//!
//! Server-to-server calls (`/v1/roam/…`) need a `peer` certificate whose CN is in the partner
//! table and whose serial is the one pinned there, and a body signed by that partner's key.

use super::cms;
use super::keys::{SigningKey, verify_by_certificate};
use super::messages::{
    Contract, Outcome, PaymentOutcome, RoamUserRequest, RoamUserResponse, SecurityResult, Signed,
    hex16,
};
use super::store::{ContractRow, Partner, Side, Store, StoreError};
use super::{RequestType, check_method, common_methods};
use crate::bytes::{hex, random16, unhex};
use crate::http::client::{self, ClientError, Url};
use crate::http::tls::ClientTls;
use crate::http::{ApiError, Peer, Request, Response, Role};
use crate::router::PrefixRouter;
use serde::{Deserialize, Serialize};
use serde_json::json;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::{Mutex, PoisonError, RwLock};
use std::time::Duration;

/// How far a peer's clock may be from ours for a signed message to count as fresh.
pub const MAX_SKEW: u64 = 300;
/// The seed's proposal: each partner gets 5 s to answer a roamUserRequest.
pub const PARTNER_TIMEOUT: Duration = Duration::from_secs(5);
/// The seed's proposal: a user who abandons is timed out after 300 s.
pub const CONTRACT_TTL: u64 = 300;

/// How a MeC server is set up.
pub struct Config {
    /// Its own name: the CN of its peer certificate and the name partners list it under.
    pub name: String,
    /// The URL users are redirected to (`https://HOST:PORT`).
    pub public_url: String,
    /// Its peer identity as a TLS client (to reach partners and the FI).
    pub client_tls: ClientTls,
    /// The key of its peer certificate: signs every roam message.
    pub key: SigningKey,
    /// The financial institution (visited side, payments).
    pub fi: Option<Url>,
    pub partner_timeout: Duration,
    pub contract_ttl: u64,
}

/// A running MeC server's state.
pub struct Mec {
    config: Config,
    store: Store,
    /// The partner table as a router, rebuilt from the store at start.
    table: RwLock<(PrefixRouter<String>, HashMap<String, Partner>)>,
    /// Nonces of roamUserRequests answered within the skew window: a replay is refused.
    seen: Mutex<HashMap<[u8; 16], u64>>,
}

fn store_err(e: StoreError) -> ApiError {
    ApiError::internal(e.to_string())
}

fn now() -> u64 {
    crate::pki::now()
}

/// The JSON a partner answers with, or what a partner sends.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Envelope {
    message: Signed,
    /// Beside a security result: the CMS SignedData (e2e) or the delegated signature, hex.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    evidence: Option<String>,
    /// Beside a delegated signature: the subscriber's server-held public key, hex.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    signer_public_key: Option<String>,
}

impl Envelope {
    fn new(bytes: &[u8], key: &SigningKey) -> Envelope {
        Envelope {
            message: Signed {
                bytes: hex(bytes),
                signature: hex(&key.sign(bytes)),
            },
            evidence: None,
            signer_public_key: None,
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CheckoutBody {
    msisdn: String,
    request_type: RequestType,
    #[serde(default)]
    amount: u64,
    currency: String,
    #[serde(default)]
    description: String,
    #[serde(default)]
    payment_method: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ResultBody {
    msisdn: String,
    #[serde(default)]
    signature: Option<String>,
    /// Why there is no signature: `wrong_pin`, `token_blocked`, `declined_by_user`.
    #[serde(default)]
    failure: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MsisdnBody {
    msisdn: String,
}

const FAILURES: [&str; 3] = ["wrong_pin", "token_blocked", "declined_by_user"];

impl Mec {
    pub fn new(config: Config, store: Store) -> Result<Mec, StoreError> {
        let mec = Mec {
            config,
            store,
            table: RwLock::new((PrefixRouter::new(), HashMap::new())),
            seen: Mutex::new(HashMap::new()),
        };
        mec.reload()?;
        Ok(mec)
    }

    /// Rebuilds the router from the partner table.
    pub fn reload(&self) -> Result<(), StoreError> {
        let mut router = PrefixRouter::new();
        let mut by_name = HashMap::new();
        for p in self.store.partners()? {
            router
                .add(p.name.clone(), &p.country_code, &p.prefixes)
                .map_err(|e| StoreError::Corrupt(e.to_string()))?;
            by_name.insert(p.name.clone(), p);
        }
        *self.table.write().unwrap_or_else(PoisonError::into_inner) = (router, by_name);
        Ok(())
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Answers one request.
    pub fn handle(&self, req: &Request) -> Response {
        match self.route(req) {
            Ok(r) => r,
            Err(e) => e.into(),
        }
    }

    fn route(&self, req: &Request) -> Result<Response, ApiError> {
        let seg = req.segments();
        match (req.method.as_str(), seg.as_slice()) {
            ("GET", ["v1", "health"]) => Ok(Response::ok(&json!({"name": self.config.name}))),
            ("POST", ["v1", "checkout"]) => self.checkout(req),
            ("GET", ["v1", "checkout", id]) => self.checkout_status(req, id),
            ("GET", ["v1", "contracts", id]) => self.show_contract(id),
            ("POST", ["v1", "contracts", id, "result"]) => self.security_result(req, id),
            ("POST", ["v1", "contracts", id, "delegated-signature"]) => self.delegated(req, id),
            ("POST", ["v1", "roam", "user"]) => self.roam_user(req),
            ("POST", ["v1", "roam", "contracts"]) => self.roam_contract(req),
            ("POST", ["v1", "roam", "results"]) => self.roam_result(req),
            ("POST", ["v1", "roam", "payments"]) => self.roam_payment(req),
            (_, ["v1", ..]) => Err(ApiError::new(
                405,
                "method_not_allowed",
                format!("{} {} is not an endpoint", req.method, req.path),
            )),
            _ => Err(ApiError::not_found("not_found", format!("no {}", req.path))),
        }
    }

    // ---- partners ---------------------------------------------------------------------

    fn partner(&self, name: &str) -> Option<Partner> {
        let table = self.table.read().unwrap_or_else(PoisonError::into_inner);
        table.1.get(name).cloned()
    }

    /// The calling partner: a peer certificate, a name in the table, the pinned serial.
    fn calling_partner(&self, req: &Request) -> Result<Partner, ApiError> {
        let peer: &Peer = req.require(&[Role::Peer])?;
        let partner = self.partner(&peer.name).ok_or_else(|| {
            ApiError::new(
                403,
                "unknown_partner",
                format!("{:?} is not in the partner table", peer.name),
            )
        })?;
        let pinned = crate::pki::x509::Certificate::from_der(&partner.certificate_der)
            .map(|c| c.serial_hex())
            .unwrap_or_default();
        if pinned != peer.serial_hex {
            return Err(ApiError::new(
                403,
                "partner_certificate_mismatch",
                format!(
                    "{:?} presented certificate {} but the partner table pins {pinned}",
                    peer.name, peer.serial_hex
                ),
            ));
        }
        Ok(partner)
    }

    /// The bytes of a signed envelope from `partner`, or 422 when the signature fails.
    fn verified(partner: &Partner, signed: &Signed) -> Result<Vec<u8>, ApiError> {
        let (bytes, signature) = signed
            .parts()
            .map_err(|e| ApiError::bad_request("malformed_message", e))?;
        if !verify_by_certificate(&partner.certificate_der, &bytes, &signature) {
            return Err(ApiError::unprocessable(
                "bad_signature",
                format!("the message does not verify with {:?}'s key", partner.name),
            ));
        }
        Ok(bytes)
    }

    fn partner_url(&self, partner: &Partner, timeout: Option<Duration>) -> Result<Url, ApiError> {
        let url = Url::parse(&partner.url)
            .map_err(|e| ApiError::internal(format!("partner {:?}'s URL: {e}", partner.name)))?;
        Ok(match timeout {
            Some(t) => url.with_tls_timeout(Some(&self.config.client_tls), t),
            None => url.with_tls(&self.config.client_tls),
        })
    }

    fn fresh(timestamp: u64) -> bool {
        now().abs_diff(timestamp) <= MAX_SKEW
    }

    // ---- home: roamUserRequest ----------------------------------------------------------

    fn roam_user(&self, req: &Request) -> Result<Response, ApiError> {
        let partner = self.calling_partner(req)?;
        let env: Envelope = req.json()?;
        let bytes = Self::verified(&partner, &env.message)?;
        let q = RoamUserRequest::decode(&bytes)
            .map_err(|e| ApiError::bad_request("malformed_message", e.to_string()))?;
        tracing::info!(from = %partner.name, msisdn = %q.msisdn, request_type = %q.request_type, "roamUserRequest");
        if q.visited != partner.name || q.home != self.config.name {
            return Err(ApiError::unprocessable(
                "misaddressed",
                format!(
                    "the request is from {:?} to {:?}; this is {:?} called by {:?}",
                    q.visited, q.home, self.config.name, partner.name
                ),
            ));
        }
        if !Self::fresh(q.timestamp) {
            return Err(ApiError::unprocessable(
                "stale_message",
                "the timestamp is more than 300 s from this server's clock",
            ));
        }
        {
            let mut seen = self.seen.lock().unwrap_or_else(PoisonError::into_inner);
            if seen.len() > 100_000 {
                let t = now();
                seen.retain(|_, at| t.abs_diff(*at) <= 2 * MAX_SKEW);
            }
            if seen.insert(q.nonce, q.timestamp).is_some() {
                return Err(ApiError::conflict(
                    "replayed_request",
                    "this roamUserRequest's nonce was answered before",
                ));
            }
        }
        let subscriber = self.store.subscriber(&q.msisdn).map_err(store_err)?;
        let accept = subscriber.is_some();
        let answer = RoamUserResponse {
            home: self.config.name.clone(),
            visited: partner.name.clone(),
            msisdn: q.msisdn.clone(),
            request_type: q.request_type,
            nonce: q.nonce,
            timestamp: now(),
            accept,
            payment_methods: match (&subscriber, q.request_type) {
                (Some(s), RequestType::Payment) => s.payment_methods.clone(),
                _ => Vec::new(),
            },
        };
        Ok(Response::ok(&Envelope::new(
            &answer.encode(),
            &self.config.key,
        )))
    }

    // ---- visited: the home-server search (Fig 4) -------------------------------------------

    /// Asks the partners for `msisdn` in prefix order; the first verified accept, with the
    /// payment methods it reported. Every partner that rejects, fails, hangs past the deadline
    /// or answers with a signature that does not verify counts as a reject.
    pub fn find_home(
        &self,
        msisdn: &str,
        request_type: RequestType,
    ) -> Result<Option<(Partner, Vec<String>)>, ApiError> {
        let candidates: Vec<Partner> = {
            let table = self.table.read().unwrap_or_else(PoisonError::into_inner);
            let routes = table
                .0
                .lookup(msisdn)
                .map_err(|e| ApiError::bad_request("bad_msisdn", e.to_string()))?;
            routes
                .iter()
                .filter_map(|r| table.1.get(r.key))
                .filter(|p| p.request_types.contains(&request_type))
                .cloned()
                .collect()
        };
        for partner in candidates {
            match self.ask(&partner, msisdn, request_type) {
                Ok(Some(methods)) => {
                    tracing::info!(partner = %partner.name, %msisdn, "home server found");
                    return Ok(Some((partner, methods)));
                }
                Ok(None) => tracing::info!(partner = %partner.name, %msisdn, "rejected"),
                Err(reason) => {
                    tracing::warn!(partner = %partner.name, %msisdn, "counted as a reject: {reason}")
                }
            }
        }
        Ok(None)
    }

    fn ask(
        &self,
        partner: &Partner,
        msisdn: &str,
        request_type: RequestType,
    ) -> Result<Option<Vec<String>>, String> {
        let q = RoamUserRequest {
            visited: self.config.name.clone(),
            home: partner.name.clone(),
            msisdn: msisdn.to_string(),
            request_type,
            nonce: random16(),
            timestamp: now(),
        };
        let url = self
            .partner_url(partner, Some(self.config.partner_timeout))
            .map_err(|e| e.detail)?;
        let env: Envelope = client::post_json(
            &url,
            "/v1/roam/user",
            &Envelope::new(&q.encode(), &self.config.key),
        )
        .map_err(|e| e.to_string())?;
        let bytes = Self::verified(partner, &env.message).map_err(|e| e.detail)?;
        let a = RoamUserResponse::decode(&bytes).map_err(|e| e.to_string())?;
        if a.nonce != q.nonce
            || a.msisdn != q.msisdn
            || a.home != partner.name
            || a.visited != self.config.name
            || a.request_type != request_type
        {
            return Err("the response does not answer this request".into());
        }
        if !Self::fresh(a.timestamp) {
            return Err("the response's timestamp is stale".into());
        }
        Ok(a.accept.then_some(a.payment_methods))
    }

    // ---- visited: checkout (Fig 5/6 steps 1–10) ---------------------------------------------

    fn checkout(&self, req: &Request) -> Result<Response, ApiError> {
        let cp = req.require(&[Role::Seller])?.name.clone();
        let body: CheckoutBody = req.json()?;
        let cp_methods = self.store.cp(&cp).map_err(store_err)?.ok_or_else(|| {
            ApiError::new(
                403,
                "unknown_content_provider",
                format!("{cp:?} is not a content provider of {}", self.config.name),
            )
        })?;
        crate::router::digits(&body.msisdn)
            .map_err(|e| ApiError::bad_request("bad_msisdn", e.to_string()))?;
        super::messages::check_currency(&body.currency)
            .map_err(|e| ApiError::bad_request("bad_currency", e))?;
        if let Some(m) = &body.payment_method {
            check_method(m).map_err(|e| ApiError::bad_request("bad_payment_method", e))?;
        }
        let payment = body.request_type == RequestType::Payment;
        if payment && body.amount == 0 {
            return Err(ApiError::bad_request(
                "bad_amount",
                "a payment needs an amount above 0 (minor units)",
            ));
        }
        let Some((home, user_methods)) = self.find_home(&body.msisdn, body.request_type)? else {
            return Err(ApiError::not_found(
                "home_not_found",
                format!(
                    "no partner of {} accepted {} for {}",
                    self.config.name, body.request_type, body.msisdn
                ),
            ));
        };
        let mut method = None;
        if payment {
            let common = common_methods(&user_methods, &cp_methods);
            if common.is_empty() {
                return Err(ApiError::unprocessable(
                    "no_common_payment_method",
                    format!(
                        "the subscriber's home offers {user_methods:?}, {cp:?} accepts {cp_methods:?}"
                    ),
                ));
            }
            match &body.payment_method {
                None => {
                    return Ok(Response::ok(&json!({
                        "status": "choose_payment_method",
                        "home": home.name,
                        "payment_methods": common,
                    })));
                }
                Some(m) if !common.contains(m) => {
                    return Err(ApiError::unprocessable(
                        "payment_method_not_offered",
                        format!("{m:?} is not one of {common:?}"),
                    ));
                }
                Some(m) => method = Some(m.clone()),
            }
        }
        let issued_at = now();
        let contract = Contract {
            id: random16(),
            cp_id: cp.clone(),
            visited: self.config.name.clone(),
            home: home.name.clone(),
            msisdn: body.msisdn.clone(),
            request_type: body.request_type,
            amount: body.amount,
            currency: body.currency.clone(),
            description: body.description.clone(),
            issued_at,
            expires_at: issued_at + self.config.contract_ttl,
        };
        let bytes = contract
            .encode()
            .map_err(|e| ApiError::bad_request("bad_contract", e.to_string()))?;
        let row = ContractRow {
            id: contract.id,
            bytes: bytes.clone(),
            peer: home.name.clone(),
            msisdn: contract.msisdn.clone(),
            request_type: contract.request_type,
            amount: contract.amount,
            currency: contract.currency.clone(),
            payment_method: method.clone(),
            expires_at: contract.expires_at,
            status: "pending".into(),
            result: None,
            authorization: None,
        };
        self.store
            .insert_contract(Side::Visited, &row)
            .map_err(store_err)?;
        let mut env = Envelope::new(&bytes, &self.config.key);
        env.evidence = method.clone();
        let url = self.partner_url(&home, None)?;
        let sent: Result<serde_json::Value, ClientError> =
            client::post_json(&url, "/v1/roam/contracts", &env);
        let answer = match sent {
            Ok(a) => a,
            Err(e) => {
                let _ = self.store.transition(
                    Side::Visited,
                    &contract.id,
                    "pending",
                    "failed",
                    Some(&json!({"status": "failed", "reason": "home_unreachable"}).to_string()),
                    None,
                );
                return Err(ApiError::new(
                    502,
                    "home_unreachable",
                    format!("sending the contract to {}: {e}", home.name),
                ));
            }
        };
        let redirect = answer
            .get("redirect")
            .and_then(|v| v.as_str())
            .unwrap_or_default()
            .to_string();
        tracing::info!(contract = %contract.id_hex(), home = %home.name, "contract sent home");
        Ok(Response::json(
            201,
            &json!({
                "contract_id": contract.id_hex(),
                "home": home.name,
                "redirect": redirect,
                "payment_method": method,
                "contract": contract,
            }),
        ))
    }

    fn checkout_status(&self, req: &Request, id: &str) -> Result<Response, ApiError> {
        let cp = req.require(&[Role::Seller])?.name.clone();
        let row = self.contract_row(Side::Visited, id)?;
        let contract =
            Contract::decode(&row.bytes).map_err(|e| ApiError::internal(e.to_string()))?;
        if contract.cp_id != cp {
            return Err(ApiError::not_found(
                "unknown_contract",
                format!("no contract {id} of {cp:?}"),
            ));
        }
        let mut status = row.status.clone();
        if status == "pending" && now() > row.expires_at {
            status = "expired".into();
        }
        let result: serde_json::Value = row
            .result
            .as_deref()
            .and_then(|r| serde_json::from_str(r).ok())
            .unwrap_or(serde_json::Value::Null);
        Ok(Response::ok(&json!({
            "contract_id": id,
            "status": status,
            "request_type": row.request_type,
            "amount": row.amount,
            "currency": row.currency,
            "payment_method": row.payment_method,
            "result": result,
        })))
    }

    fn contract_row(&self, side: Side, id: &str) -> Result<ContractRow, ApiError> {
        let key = hex16::parse(id).ok_or_else(|| {
            ApiError::bad_request("bad_contract_id", format!("{id:?}: expected 32 hex digits"))
        })?;
        self.store
            .contract(side, &key)
            .map_err(store_err)?
            .ok_or_else(|| ApiError::not_found("unknown_contract", format!("no contract {id}")))
    }

    // ---- home: the contract arrives (step 8) -------------------------------------------------

    fn roam_contract(&self, req: &Request) -> Result<Response, ApiError> {
        let partner = self.calling_partner(req)?;
        let env: Envelope = req.json()?;
        let bytes = Self::verified(&partner, &env.message)?;
        let c = Contract::decode(&bytes)
            .map_err(|e| ApiError::bad_request("malformed_contract", e.to_string()))?;
        if c.visited != partner.name || c.home != self.config.name {
            return Err(ApiError::unprocessable(
                "misaddressed",
                format!("the contract is from {:?} to {:?}", c.visited, c.home),
            ));
        }
        if now() >= c.expires_at {
            return Err(ApiError::new(
                410,
                "contract_expired",
                "the contract has expired",
            ));
        }
        if self
            .store
            .subscriber(&c.msisdn)
            .map_err(store_err)?
            .is_none()
        {
            return Err(ApiError::not_found(
                "unknown_subscriber",
                format!("{} is not a subscriber of {}", c.msisdn, self.config.name),
            ));
        }
        if let Some(m) = &env.evidence {
            check_method(m).map_err(|e| ApiError::bad_request("bad_payment_method", e))?;
        }
        let row = ContractRow {
            id: c.id,
            bytes: bytes.clone(),
            peer: partner.name.clone(),
            msisdn: c.msisdn.clone(),
            request_type: c.request_type,
            amount: c.amount,
            currency: c.currency.clone(),
            payment_method: env.evidence.clone(),
            expires_at: c.expires_at,
            status: "pending".into(),
            result: None,
            authorization: None,
        };
        if !self
            .store
            .insert_contract(Side::Home, &row)
            .map_err(store_err)?
        {
            return Err(ApiError::conflict(
                "contract_exists",
                format!("contract {} was received before", c.id_hex()),
            ));
        }
        tracing::info!(contract = %c.id_hex(), from = %partner.name, "contract received");
        Ok(Response::json(
            201,
            &json!({
                "contract_id": c.id_hex(),
                "redirect": format!("{}/v1/contracts/{}", self.config.public_url, c.id_hex()),
            }),
        ))
    }

    // ---- home: the user (steps 10–14) ------------------------------------------------------

    fn home_contract(&self, id: &str) -> Result<(ContractRow, Contract), ApiError> {
        let row = self.contract_row(Side::Home, id)?;
        let c = Contract::decode(&row.bytes).map_err(|e| ApiError::internal(e.to_string()))?;
        if now() >= row.expires_at && (row.status == "pending" || row.status == "authenticated") {
            return Err(ApiError::new(
                410,
                "contract_expired",
                format!("contract {id} expired at {}", row.expires_at),
            ));
        }
        Ok((row, c))
    }

    fn show_contract(&self, id: &str) -> Result<Response, ApiError> {
        let (row, c) = self.home_contract(id)?;
        Ok(Response::ok(&json!({
            "contract": c,
            "bytes": hex(&row.bytes),
            "payment_method": row.payment_method,
            "status": row.status,
        })))
    }

    fn security_result(&self, req: &Request, id: &str) -> Result<Response, ApiError> {
        let body: ResultBody = req.json()?;
        let (row, c) = self.home_contract(id)?;
        if body.msisdn != row.msisdn {
            return Err(ApiError::new(
                403,
                "wrong_subscriber",
                "the contract is for another subscriber",
            ));
        }
        if row.status != "pending" {
            return Err(ApiError::conflict(
                "contract_used",
                format!("contract {id} is {} already", row.status),
            ));
        }
        let subscriber = self
            .store
            .subscriber(&row.msisdn)
            .map_err(store_err)?
            .ok_or_else(|| ApiError::internal("the contract's subscriber vanished"))?;
        let signature = match (&body.signature, &body.failure) {
            (Some(s), None) => unhex(s).ok_or_else(|| {
                ApiError::bad_request("malformed_signature", "signature: not hex")
            })?,
            (None, Some(f)) if FAILURES.contains(&f.as_str()) => {
                return self.finish(&row, &c, "pending", Outcome::Failure, f, None, None);
            }
            _ => {
                return Err(ApiError::bad_request(
                    "malformed_result",
                    format!(
                        "give a signature, or a failure (one of {})",
                        FAILURES.join(", ")
                    ),
                ));
            }
        };
        if !crate::pki::verify::p256_sha256(&subscriber.public_key, &row.bytes, &signature) {
            return Err(ApiError::unprocessable(
                "signature_mismatch",
                "the signature is not the subscriber's token's over this contract's bytes",
            ));
        }
        match c.request_type {
            RequestType::Authentication | RequestType::NewService => {
                self.finish(&row, &c, "pending", Outcome::Success, "", None, None)
            }
            RequestType::E2eSignature => {
                let cert = subscriber.certificate_der.as_deref().ok_or_else(|| {
                    ApiError::unprocessable(
                        "no_certificate",
                        "the subscriber has no certificate to wrap the signature with",
                    )
                })?;
                let p7 = cms::wrap(&row.bytes, &signature, cert)
                    .map_err(|e| ApiError::unprocessable("cms_failed", e.to_string()))?;
                self.finish(
                    &row,
                    &c,
                    "pending",
                    Outcome::Success,
                    "",
                    Some((p7, None)),
                    None,
                )
            }
            RequestType::DigitalSignature => {
                if !self
                    .store
                    .transition(Side::Home, &row.id, "pending", "authenticated", None, None)
                    .map_err(store_err)?
                {
                    return Err(ApiError::conflict("contract_used", "answered meanwhile"));
                }
                Ok(Response::ok(&json!({
                    "outcome": "authenticated",
                    "next": format!("/v1/contracts/{id}/delegated-signature"),
                })))
            }
            RequestType::Payment => {
                let authorization = random16();
                self.finish(
                    &row,
                    &c,
                    "pending",
                    Outcome::Success,
                    "",
                    None,
                    Some(authorization),
                )
            }
        }
    }

    fn delegated(&self, req: &Request, id: &str) -> Result<Response, ApiError> {
        let body: MsisdnBody = req.json()?;
        let (row, c) = self.home_contract(id)?;
        if body.msisdn != row.msisdn {
            return Err(ApiError::new(
                403,
                "wrong_subscriber",
                "the contract is for another subscriber",
            ));
        }
        if c.request_type != RequestType::DigitalSignature {
            return Err(ApiError::unprocessable(
                "not_delegated",
                format!("contract {id} asks for {}", c.request_type),
            ));
        }
        match row.status.as_str() {
            "authenticated" => {}
            "pending" => {
                return Err(ApiError::new(
                    403,
                    "authentication_required",
                    "the user has not authenticated for this contract: the home server signs \
                     on the user's behalf only after that",
                ));
            }
            other => {
                return Err(ApiError::conflict(
                    "contract_used",
                    format!("contract {id} is {other} already"),
                ));
            }
        }
        let subscriber = self
            .store
            .subscriber(&row.msisdn)
            .map_err(store_err)?
            .ok_or_else(|| ApiError::internal("the contract's subscriber vanished"))?;
        let key = subscriber.delegated_key().map_err(store_err)?;
        let signature = key.sign(&row.bytes);
        let public = key.public_point().to_vec();
        self.finish(
            &row,
            &c,
            "authenticated",
            Outcome::Success,
            "",
            Some((signature, Some(public))),
            None,
        )
    }

    /// Steps 14–17: records the outcome once, tells the visited server, and answers the user
    /// with what the visited server said (for a payment, the receipt of step 22).
    #[allow(clippy::too_many_arguments)]
    fn finish(
        &self,
        row: &ContractRow,
        c: &Contract,
        from: &str,
        outcome: Outcome,
        reason: &str,
        evidence: Option<(Vec<u8>, Option<Vec<u8>>)>,
        authorization: Option<[u8; 16]>,
    ) -> Result<Response, ApiError> {
        let to = match (outcome, authorization) {
            (Outcome::Failure, _) => "failed",
            (Outcome::Success, Some(_)) => "authorized",
            (Outcome::Success, None) => "done",
        };
        let evidence_sha256: [u8; 32] = evidence
            .as_ref()
            .map_or([0; 32], |(e, _)| Sha256::digest(e).into());
        let result = SecurityResult {
            home: self.config.name.clone(),
            visited: row.peer.clone(),
            contract_id: row.id,
            outcome,
            reason: reason.to_string(),
            authorization: authorization.unwrap_or([0; 16]),
            amount: row.amount,
            currency: row.currency.clone(),
            evidence_sha256,
            issued_at: now(),
        };
        let summary = json!({"outcome": outcome.as_str(), "reason": reason}).to_string();
        if !self
            .store
            .transition(
                Side::Home,
                &row.id,
                from,
                to,
                Some(&summary),
                authorization.as_ref(),
            )
            .map_err(store_err)?
        {
            return Err(ApiError::conflict(
                "contract_used",
                format!("contract {} was answered meanwhile", c.id_hex()),
            ));
        }
        tracing::info!(contract = %c.id_hex(), outcome = outcome.as_str(), reason, "security result");
        let mut env = Envelope::new(&result.encode(), &self.config.key);
        if let Some((e, public)) = &evidence {
            env.evidence = Some(hex(e));
            env.signer_public_key = public.as_ref().map(|p| hex(p));
        }
        let visited = self.partner(&row.peer).ok_or_else(|| {
            ApiError::unavailable(
                "visited_unknown",
                format!("{:?} left the partner table", row.peer),
            )
        })?;
        let url = self.partner_url(&visited, None)?;
        let answer: serde_json::Value =
            client::post_json(&url, "/v1/roam/results", &env).map_err(|e| {
                ApiError::new(
                    502,
                    "visited_unreachable",
                    format!("reporting to {}: {e}", visited.name),
                )
            })?;
        let mut out = json!({
            "contract_id": c.id_hex(),
            "outcome": outcome.as_str(),
            "reason": reason,
            "visited": answer,
        });
        if let Some((e, public)) = evidence {
            match public {
                None => out["cms_der_hex"] = json!(hex(&e)),
                Some(p) => {
                    out["delegated_signature_hex"] = json!(hex(&e));
                    out["delegated_public_key_hex"] = json!(hex(&p));
                }
            }
        }
        Ok(Response::ok(&out))
    }

    // ---- visited: the result arrives (steps 15–22) -------------------------------------------

    fn roam_result(&self, req: &Request) -> Result<Response, ApiError> {
        let partner = self.calling_partner(req)?;
        let env: Envelope = req.json()?;
        let bytes = Self::verified(&partner, &env.message)?;
        let r = SecurityResult::decode(&bytes)
            .map_err(|e| ApiError::bad_request("malformed_message", e.to_string()))?;
        let row = self
            .store
            .contract(Side::Visited, &r.contract_id)
            .map_err(store_err)?
            .ok_or_else(|| {
                ApiError::not_found(
                    "unknown_contract",
                    format!("no contract {}", hex(&r.contract_id)),
                )
            })?;
        if row.peer != partner.name || r.visited != self.config.name || r.home != partner.name {
            return Err(ApiError::new(
                403,
                "not_the_home_server",
                format!("{:?} is not the home server of this contract", partner.name),
            ));
        }
        if let Some(e) = &env.evidence {
            let e =
                unhex(e).ok_or_else(|| ApiError::bad_request("malformed_evidence", "not hex"))?;
            let digest: [u8; 32] = Sha256::digest(&e).into();
            if digest != r.evidence_sha256 {
                return Err(ApiError::unprocessable(
                    "evidence_mismatch",
                    "the evidence is not what the signed result names",
                ));
            }
        }
        if row.status != "pending" {
            return Err(ApiError::conflict(
                "contract_used",
                format!("contract {} is {} already", hex(&row.id), row.status),
            ));
        }
        let id = row.id;
        let payment = row.request_type == RequestType::Payment && r.outcome == Outcome::Success;
        if !payment {
            let status = match r.outcome {
                Outcome::Success => "success",
                Outcome::Failure => "failure",
            };
            let result = json!({
                "status": status,
                "reason": r.reason,
                "evidence_hex": env.evidence,
                "signer_public_key_hex": env.signer_public_key,
            });
            if !self
                .store
                .transition(
                    Side::Visited,
                    &id,
                    "pending",
                    status,
                    Some(&result.to_string()),
                    None,
                )
                .map_err(store_err)?
            {
                return Err(ApiError::conflict("contract_used", "answered meanwhile"));
            }
            tracing::info!(contract = %hex(&id), status, "result from home");
            return Ok(Response::ok(&result));
        }
        if r.amount != row.amount || r.currency != row.currency {
            return Err(ApiError::unprocessable(
                "amount_mismatch",
                "the authorization is not for this contract's amount",
            ));
        }
        if !self
            .store
            .transition(
                Side::Visited,
                &id,
                "pending",
                "authorized",
                None,
                Some(&r.authorization),
            )
            .map_err(store_err)?
        {
            return Err(ApiError::conflict("contract_used", "answered meanwhile"));
        }
        // Step 20: the financial institution.
        let (approved, fi_reference) = match self.pay(&row, &r.authorization) {
            Ok(v) => v,
            Err(e) => {
                tracing::warn!(contract = %hex(&id), "the FI did not answer: {e}");
                (false, String::new())
            }
        };
        let status = if approved { "paid" } else { "declined" };
        // Step 21: tell the home server.
        let outcome = PaymentOutcome {
            visited: self.config.name.clone(),
            home: partner.name.clone(),
            contract_id: id,
            authorization: r.authorization,
            amount: row.amount,
            currency: row.currency.clone(),
            approved,
            fi_reference: fi_reference.clone(),
            issued_at: now(),
        };
        let url = self.partner_url(&partner, None)?;
        let home_said: Result<serde_json::Value, ClientError> = client::post_json(
            &url,
            "/v1/roam/payments",
            &Envelope::new(&outcome.encode(), &self.config.key),
        );
        let home_status = match &home_said {
            Ok(v) => v
                .get("status")
                .and_then(|s| s.as_str())
                .unwrap_or("")
                .to_string(),
            Err(e) => {
                tracing::warn!(contract = %hex(&id), "reporting the payment home: {e}");
                "unreported".into()
            }
        };
        // Step 22: the receipt.
        let receipt = json!({
            "status": status,
            "contract_id": hex(&id),
            "amount": row.amount,
            "currency": row.currency,
            "payment_method": row.payment_method,
            "fi_reference": fi_reference,
            "home_recorded": home_status,
        });
        self.store
            .transition(
                Side::Visited,
                &id,
                "authorized",
                status,
                Some(&receipt.to_string()),
                None,
            )
            .map_err(store_err)?;
        tracing::info!(contract = %hex(&id), status, "payment");
        Ok(Response::ok(&receipt))
    }

    fn pay(&self, row: &ContractRow, authorization: &[u8; 16]) -> Result<(bool, String), String> {
        let fi = self.config.fi.as_ref().ok_or("no --fi configured")?;
        let contract = Contract::decode(&row.bytes).map_err(|e| e.to_string())?;
        let answer: serde_json::Value = client::post_json(
            fi,
            "/v1/payments",
            &json!({
                "authorization": hex(authorization),
                "amount": row.amount,
                "currency": row.currency,
                "payment_method": row.payment_method,
                "merchant": contract.cp_id,
            }),
        )
        .map_err(|e| e.to_string())?;
        let approved = answer
            .get("approved")
            .and_then(|v| v.as_bool())
            .unwrap_or(false);
        let reference = answer
            .get("fi_reference")
            .and_then(|v| v.as_str())
            .unwrap_or("")
            .chars()
            .take(64)
            .collect();
        Ok((approved, reference))
    }

    // ---- home: the payment's outcome (step 21) -----------------------------------------------

    fn roam_payment(&self, req: &Request) -> Result<Response, ApiError> {
        let partner = self.calling_partner(req)?;
        let env: Envelope = req.json()?;
        let bytes = Self::verified(&partner, &env.message)?;
        let o = PaymentOutcome::decode(&bytes)
            .map_err(|e| ApiError::bad_request("malformed_message", e.to_string()))?;
        let row = self
            .store
            .contract_by_authorization(Side::Home, &o.authorization)
            .map_err(store_err)?
            .ok_or_else(|| {
                ApiError::not_found("unknown_authorization", "no payment has this authorization")
            })?;
        if row.id != o.contract_id || row.peer != partner.name || o.home != self.config.name {
            return Err(ApiError::new(
                403,
                "not_this_payment",
                "the authorization belongs to another contract or server",
            ));
        }
        if o.amount != row.amount || o.currency != row.currency {
            return Err(ApiError::unprocessable(
                "amount_mismatch",
                format!(
                    "the authorization is for {} {}, not {} {}",
                    row.amount, row.currency, o.amount, o.currency
                ),
            ));
        }
        let status = if o.approved { "paid" } else { "declined" };
        let record = json!({"status": status, "fi_reference": o.fi_reference}).to_string();
        if !self
            .store
            .settle(&row.id, o.approved, &record, &row.msisdn, row.amount)
            .map_err(store_err)?
        {
            return Err(ApiError::conflict(
                "authorization_used",
                "this authorization was settled before",
            ));
        }
        tracing::info!(contract = %hex(&row.id), status, "payment settled");
        Ok(Response::ok(&json!({"status": status})))
    }
}
