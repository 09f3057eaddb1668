//! `simlab otp serve`: seed 004's information server 103 and data server 105 as one HTTPS
//! service for terminal A (the first channel), with the message server 109 behind the SMS
//! backend trait (the second channel).
//!
//! ```text
//! POST   /v1/sessions                         {identifier}                → 201 session
//! DELETE /v1/sessions/S                                                    → closed, codes void
//! POST   /v1/sessions/S/login                 {direction?}                → 201 certificate
//! POST   /v1/sessions/S/payments              {amount, currency, payee,
//!                                              items?, account_from?,
//!                                              account_to?, direction?}  → 201 certificate
//! POST   /v1/sessions/S/transactions/T/confirm {code, amount?, currency?,
//!                                              payee?, items?}           → validated or refused
//! GET    /v1/sessions/S/transactions/T                                    → its state
//! ```
//!
//! `S` is the session token (terminal A's bearer secret; the store keeps its SHA-256). The
//! *session number* bound into each code is a second random value that never leaves the
//! server. Payments above the stored limit are `secured` (code by SMS, typed back); the
//! others are `normal`: validated in one step and recorded as such. With `direction:
//! "reverse"` (aspects 2 and 3) the code is shown on terminal A and must come back by SMS
//! from the registered number, which [`OtpService::poll`] reads off the modem.

use super::msisdn::{self, masked};
use super::store::{Certificate, Entry, Item, Session, Store, StoreError};
use super::{MAX_FAILURES, check_currency, check_payee, format_amount};
use crate::bytes::hex;
use crate::http::client::{self, Url};
use crate::http::{ApiError, Request, Response};
use hmac::{Hmac, KeyInit, Mac};
use serde::Deserialize;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use simlab_modem::backend::{SendOptions, SmsBackend};
use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

type HmacSha256 = Hmac<Sha256>;

const DOMAIN: &[u8] = b"simlab-otp-certificate-v1";
/// The most items one transaction may list, and the longest product name.
pub const MAX_ITEMS: usize = 20;
pub const MAX_PRODUCT_CHARS: usize = 40;
/// The longest account reference.
pub const MAX_ACCOUNT_CHARS: usize = 34;
/// The longest identifier (a customer number, an e-mail address).
pub const MAX_IDENTIFIER_CHARS: usize = 64;

/// The MAC key, held outside the database (its own 0600 file, or the operator's). Never
/// printed.
#[derive(Clone)]
pub struct MacKey([u8; 32]);

impl std::fmt::Debug for MacKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MacKey(**)")
    }
}

/// Why the key file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    /// Not 32 bytes.
    #[error("{path}: {len} bytes; an OTP key file holds exactly 32")]
    Length { path: String, len: usize },
    /// Readable by others than its owner.
    #[error("{path}: mode {mode:o}; the key must be readable by its owner only (chmod 600)")]
    Mode { path: String, mode: u32 },
}

impl MacKey {
    /// Reads the 32-byte key at `path`, creating it (0600, `O_EXCL`) from the system's random
    /// source when missing.
    pub fn load_or_create(path: &Path) -> Result<MacKey, KeyError> {
        use std::os::unix::fs::PermissionsExt;
        let name = path.display().to_string();
        let io = |source| KeyError::Io {
            path: name.clone(),
            source,
        };
        if !path.exists() {
            let key = simlab_card::random::bytes::<32>()
                .map_err(|e| io(std::io::Error::other(e.to_string())))?;
            match MacKey::create_with(path, &key) {
                Ok(()) => return Ok(MacKey(key)),
                // Another process created it meanwhile: read theirs.
                Err(KeyError::Io { source, .. })
                    if source.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(e),
            }
        }
        let mode = std::fs::metadata(path).map_err(io)?.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(KeyError::Mode { path: name, mode });
        }
        let bytes = std::fs::read(path).map_err(io)?;
        let len = bytes.len();
        bytes
            .try_into()
            .map(MacKey)
            .map_err(|_| KeyError::Length { path: name, len })
    }

    pub fn from_bytes(key: [u8; 32]) -> MacKey {
        MacKey(key)
    }

    pub(crate) fn bytes(&self) -> [u8; 32] {
        self.0
    }

    /// Writes `key` to a new 0600 file at `path` (fails if it exists).
    pub(crate) fn create_with(path: &Path, key: &[u8; 32]) -> Result<(), KeyError> {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let io = |source| KeyError::Io {
            path: path.display().to_string(),
            source,
        };
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
            .map_err(io)?;
        f.write_all(key).and_then(|()| f.sync_all()).map_err(io)
    }

    /// The MAC over the encoding in `docs/otp.md`.
    fn state(&self, session: &Session, c: &Certificate, code: &str) -> HmacSha256 {
        // A 32-byte key is always accepted by HMAC.
        let mut m =
            <HmacSha256 as KeyInit>::new_from_slice(&self.0).unwrap_or_else(|_| unreachable!());
        let mut field = |bytes: &[u8]| {
            m.update(&(bytes.len() as u32).to_be_bytes());
            m.update(bytes);
        };
        field(DOMAIN);
        field(&session.number);
        field(&c.id);
        field(c.identifier.as_bytes());
        field(c.msisdn.as_bytes());
        field(c.kind.as_bytes());
        field(&c.amount.to_be_bytes());
        field(c.currency.as_bytes());
        field(c.payee.as_bytes());
        field(&(c.items.len() as u32).to_be_bytes());
        for item in &c.items {
            field(item.product.as_bytes());
            field(&item.quantity.to_be_bytes());
        }
        field(c.account_from.as_bytes());
        field(c.account_to.as_bytes());
        field(&c.issued_at.to_be_bytes());
        field(code.as_bytes());
        m
    }

    fn mac(&self, session: &Session, c: &Certificate, code: &str) -> [u8; 32] {
        self.state(session, c, code).finalize().into_bytes().into()
    }

    /// Constant-time comparison with the stored MAC.
    fn verify(&self, session: &Session, c: &Certificate, code: &str) -> bool {
        c.mac
            .is_some_and(|stored| self.state(session, c, code).verify_slice(&stored).is_ok())
    }
}

/// A rate: at most `count` per `window` seconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rate {
    pub count: u64,
    pub window: u64,
}

/// How the service is set up.
pub struct Config {
    pub key: MacKey,
    /// How long a code lives (60 s to 10 min); the SMS's TP-VP matches it.
    pub code_ttl: Duration,
    pub digits: u8,
    /// How long a session stays open without being closed.
    pub session_ttl: u64,
    pub sessions: Rate,
    pub codes: Rate,
    /// The bank that authorizes payments (707), reached with the server's peer identity.
    pub bank: Option<Url>,
    /// The operator's look-up for identifiers the directory lacks (203).
    pub lookup: Option<Url>,
    /// Unix seconds; the tests move it.
    pub clock: Arc<dyn Fn() -> i64 + Send + Sync>,
}

/// The running service.
pub struct OtpService {
    config: Config,
    store: Store,
    sms: Mutex<Box<dyn SmsBackend>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct OpenBody {
    identifier: String,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct LoginBody {
    #[serde(default)]
    direction: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PaymentBody {
    amount: u64,
    currency: String,
    payee: String,
    #[serde(default)]
    items: Vec<Item>,
    #[serde(default)]
    account_from: String,
    #[serde(default)]
    account_to: String,
    #[serde(default)]
    direction: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ConfirmBody {
    code: String,
    #[serde(default)]
    amount: Option<u64>,
    #[serde(default)]
    currency: Option<String>,
    #[serde(default)]
    payee: Option<String>,
    #[serde(default)]
    items: Option<Vec<Item>>,
}

fn store_err(e: StoreError) -> ApiError {
    match e {
        StoreError::RateLimited { .. } => ApiError::new(429, "rate_limited", e.to_string()),
        other => {
            tracing::error!(error = %other, "store");
            ApiError::unavailable("store_unavailable", other.to_string())
        }
    }
}

fn unhex<const N: usize>(s: &str) -> Option<[u8; N]> {
    if s.len() != 2 * N || !s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        return None;
    }
    let mut out = [0u8; N];
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(out)
}

fn token_hash(token: &[u8; 16]) -> [u8; 32] {
    Sha256::digest(token).into()
}

fn random<const N: usize>() -> Result<[u8; N], ApiError> {
    simlab_card::random::bytes::<N>().map_err(|e| ApiError::internal(e.to_string()))
}

fn check_text(field: &str, value: &str, max: usize) -> Result<(), ApiError> {
    let n = value.chars().count();
    if n > max {
        return Err(ApiError::bad_request(
            "bad_field",
            format!("{field}: {n} characters, at most {max}"),
        ));
    }
    if value.chars().any(char::is_control) {
        return Err(ApiError::bad_request(
            "bad_field",
            format!("{field}: control characters are not allowed"),
        ));
    }
    Ok(())
}

fn check_payment(p: &PaymentBody) -> Result<(), ApiError> {
    if p.amount == 0 || p.amount > i64::MAX as u64 {
        return Err(ApiError::bad_request(
            "bad_amount",
            "amount: a positive whole number of minor units (cents)",
        ));
    }
    check_currency(&p.currency).map_err(|e| ApiError::bad_request("bad_currency", e))?;
    check_payee(&p.payee).map_err(|e| ApiError::bad_request("bad_payee", format!("payee: {e}")))?;
    if p.items.len() > MAX_ITEMS {
        return Err(ApiError::bad_request(
            "bad_items",
            format!("{} items, at most {MAX_ITEMS}", p.items.len()),
        ));
    }
    for item in &p.items {
        if item.product.trim().is_empty() || item.quantity == 0 || item.quantity > 1_000_000 {
            return Err(ApiError::bad_request(
                "bad_items",
                "each item needs a product name and a quantity from 1 to 1000000",
            ));
        }
        check_text("product", &item.product, MAX_PRODUCT_CHARS)?;
    }
    check_text("account_from", &p.account_from, MAX_ACCOUNT_CHARS)?;
    check_text("account_to", &p.account_to, MAX_ACCOUNT_CHARS)?;
    Ok(())
}

/// `direction`: `sms` (the default: code by SMS, typed on terminal A) or `reverse`.
fn reverse(direction: &Option<String>) -> Result<bool, ApiError> {
    match direction.as_deref() {
        None | Some("sms") => Ok(false),
        Some("reverse") => Ok(true),
        Some(other) => Err(ApiError::bad_request(
            "bad_direction",
            format!("direction {other:?}: `sms` or `reverse`"),
        )),
    }
}

/// The digits of a reply SMS: the first run of exactly `digits` digits.
fn code_in(text: &str, digits: usize) -> Option<&str> {
    text.split(|c: char| !c.is_ascii_digit())
        .find(|run| run.len() == digits)
}

fn refused(status: u16, cause: &str, detail: impl Into<String>) -> ApiError {
    ApiError::new(status, cause, detail)
}

impl OtpService {
    pub fn new(config: Config, store: Store, sms: Box<dyn SmsBackend>) -> OtpService {
        OtpService {
            config,
            store,
            sms: Mutex::new(sms),
        }
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    fn now(&self) -> i64 {
        (self.config.clock)()
    }

    pub fn handle(&self, req: &Request) -> Response {
        self.route(req).unwrap_or_else(Response::from)
    }

    fn route(&self, req: &Request) -> Result<Response, ApiError> {
        match (req.method.as_str(), req.segments().as_slice()) {
            ("POST", ["v1", "sessions"]) => self.open(req),
            ("DELETE", ["v1", "sessions", s]) => self.close(s),
            ("POST", ["v1", "sessions", s, "login"]) => self.login(req, s),
            ("POST", ["v1", "sessions", s, "payments"]) => self.payment(req, s),
            ("POST", ["v1", "sessions", s, "transactions", t, "confirm"]) => {
                self.confirm(req, s, t)
            }
            ("GET", ["v1", "sessions", s, "transactions", t]) => self.status(s, t),
            _ => Err(ApiError::not_found(
                "not_found",
                format!("no {} {}", req.method, req.path),
            )),
        }
    }

    /// The address of `identifier`: the directory's, else the operator's look-up (203).
    fn address(&self, identifier: &str) -> Result<Option<Entry>, ApiError> {
        if let Some(e) = self.store.entry(identifier).map_err(store_err)? {
            return Ok(Some(e));
        }
        let Some(lookup) = &self.config.lookup else {
            return Ok(None);
        };
        let answer = client::request(
            lookup,
            "GET",
            &format!("/v1/subscribers/{}", percent(identifier)),
            None,
        )
        .map_err(|e| ApiError::unavailable("lookup_unavailable", e.to_string()))?;
        if answer.status == 404 {
            return Ok(None);
        }
        let v: Value = client::decode(&lookup.authority, answer)
            .map_err(|e| ApiError::unavailable("lookup_unavailable", e.to_string()))?;
        let number = v.get("msisdn").and_then(Value::as_str).unwrap_or_default();
        let msisdn = msisdn::canonical(number).map_err(|e| {
            ApiError::unavailable("lookup_unavailable", format!("the look-up answered {e}"))
        })?;
        tracing::info!(identifier, to = %masked(&msisdn), "address from the operator's look-up");
        Ok(Some(Entry {
            identifier: identifier.to_string(),
            msisdn,
            bank: None,
            card: None,
            added_at: self.now(),
        }))
    }

    fn open(&self, req: &Request) -> Result<Response, ApiError> {
        let body: OpenBody = req.json()?;
        let identifier = body.identifier.trim();
        if identifier.is_empty() {
            return Err(ApiError::bad_request(
                "bad_identifier",
                "identifier is empty",
            ));
        }
        check_text("identifier", identifier, MAX_IDENTIFIER_CHARS)?;
        let entry = self.address(identifier)?.ok_or_else(|| {
            ApiError::not_found(
                "unknown_identifier",
                format!("{identifier:?} is not in the directory"),
            )
        })?;
        let token = random::<16>()?;
        let now = self.now();
        let session = Session {
            token_hash: token_hash(&token),
            number: random::<16>()?,
            identifier: identifier.to_string(),
            msisdn: entry.msisdn.clone(),
            opened_at: now,
            expires_at: now + self.config.session_ttl as i64,
            closed_at: None,
            close_reason: None,
        };
        let r = self.config.sessions;
        self.store
            .open_session(&session, r.count, r.window)
            .map_err(store_err)?;
        tracing::info!(identifier, "session opened");
        Ok(Response::json(
            201,
            &json!({
                "session": hex(&token),
                "identifier": identifier,
                "expires_at": session.expires_at,
            }),
        ))
    }

    /// The open session `s`, closing it first when its time is up.
    fn session(&self, s: &str) -> Result<Session, ApiError> {
        let token = unhex::<16>(s).ok_or_else(|| {
            ApiError::bad_request("bad_session", "a session is 32 lower-case hex digits")
        })?;
        let session = self
            .store
            .session(&token_hash(&token))
            .map_err(store_err)?
            .ok_or_else(|| ApiError::not_found("unknown_session", "no such session"))?;
        let now = self.now();
        if session.closed_at.is_none() && now >= session.expires_at {
            self.store
                .close_session(&session.token_hash, now, "timeout")
                .map_err(store_err)?;
            return Err(refused(409, "session_closed", "the session timed out"));
        }
        if let Some(reason) = &session.close_reason {
            return Err(refused(
                409,
                "session_closed",
                format!("the session was closed ({reason})"),
            ));
        }
        Ok(session)
    }

    fn close(&self, s: &str) -> Result<Response, ApiError> {
        let session = self.session(s)?;
        let now = self.now();
        if !self
            .store
            .close_session(&session.token_hash, now, "closed")
            .map_err(store_err)?
        {
            return Err(refused(409, "session_closed", "closed already"));
        }
        tracing::info!(identifier = %session.identifier, "session closed");
        Ok(Response::ok(&json!({"closed": true})))
    }

    fn login(&self, req: &Request, s: &str) -> Result<Response, ApiError> {
        let session = self.session(s)?;
        let body: LoginBody = if req.body.is_empty() {
            LoginBody::default()
        } else {
            req.json()?
        };
        let reverse = reverse(&body.direction)?;
        let c = self.certificate(&session, "login", 0, "EUR", "", vec![], "", "", reverse)?;
        self.issue(&session, c, reverse)
    }

    fn payment(&self, req: &Request, s: &str) -> Result<Response, ApiError> {
        let session = self.session(s)?;
        let body: PaymentBody = req.json()?;
        check_payment(&body)?;
        let reverse = reverse(&body.direction)?;
        let mut c = self.certificate(
            &session,
            "payment",
            body.amount,
            &body.currency,
            &body.payee,
            body.items,
            &body.account_from,
            &body.account_to,
            reverse,
        )?;
        // 707: the bank authorizes the amount before any secret leaves.
        if let Some(bank) = &self.config.bank {
            let entry = self.store.entry(&session.identifier).map_err(store_err)?;
            let ask = json!({
                "transaction": hex(&c.id),
                "identifier": session.identifier,
                "bank": entry.as_ref().and_then(|e| e.bank.clone()),
                "card": entry.as_ref().and_then(|e| e.card.clone()),
                "amount": c.amount,
                "currency": c.currency,
                "payee": c.payee,
            });
            let answer: Value = client::post_json(bank, "/v1/authorizations", &ask)
                .map_err(|e| ApiError::unavailable("bank_unavailable", e.to_string()))?;
            if answer.get("approved") != Some(&Value::Bool(true)) {
                c.state = "declined".into();
                c.outcome = Some("bank_declined".into());
                c.mac = None;
                self.store.insert_certificate(&c, None).map_err(store_err)?;
                tracing::info!(identifier = %c.identifier, tx = %hex(&c.id), amount = c.amount, "the bank declined; nothing sent");
                return Err(refused(
                    402,
                    "bank_declined",
                    format!(
                        "the bank declined {} to {}",
                        format_amount(c.amount, &c.currency),
                        c.payee
                    ),
                ));
            }
            c.bank_ref = answer
                .get("reference")
                .and_then(Value::as_str)
                .map(str::to_string);
        }
        // 1006: only amounts *greater than* the stored limit are secured.
        let limit = self.store.limit().map_err(store_err)?;
        if !reverse && limit.is_some_and(|l| c.amount <= l) {
            c.mode = "normal".into();
            c.state = "validated".into();
            c.outcome = Some("validated".into());
            c.used_at = Some(c.issued_at);
            c.mac = None;
            self.store.insert_certificate(&c, None).map_err(store_err)?;
            tracing::info!(identifier = %c.identifier, tx = %hex(&c.id), amount = c.amount, "normal payment validated in one step");
            return Ok(Response::json(
                201,
                &json!({
                    "transaction": hex(&c.id),
                    "mode": "normal",
                    "status": "validated",
                    "amount": c.amount,
                    "currency": c.currency,
                }),
            ));
        }
        self.issue(&session, c, reverse)
    }

    #[allow(clippy::too_many_arguments)]
    fn certificate(
        &self,
        session: &Session,
        kind: &str,
        amount: u64,
        currency: &str,
        payee: &str,
        items: Vec<Item>,
        from: &str,
        to: &str,
        reverse: bool,
    ) -> Result<Certificate, ApiError> {
        let now = self.now();
        Ok(Certificate {
            id: random::<16>()?,
            session: session.token_hash,
            identifier: session.identifier.clone(),
            msisdn: session.msisdn.clone(),
            kind: kind.into(),
            mode: if reverse { "reverse" } else { "secured" }.into(),
            amount,
            currency: currency.into(),
            payee: payee.into(),
            items,
            account_from: from.into(),
            account_to: to.into(),
            bank_ref: None,
            mac: None,
            issued_at: now,
            expires_at: now + self.config.code_ttl.as_secs() as i64,
            failures: 0,
            state: String::new(),
            outcome: None,
            used_at: None,
        })
    }

    /// 202–206: a fresh code, only its MAC kept, sent by SMS (or shown, in reverse).
    fn issue(
        &self,
        session: &Session,
        mut c: Certificate,
        reverse: bool,
    ) -> Result<Response, ApiError> {
        let code = super::random_code(self.config.digits)
            .map_err(|e| ApiError::internal(e.to_string()))?;
        c.mac = Some(self.config.key.mac(session, &c, code.expose()));
        let id = hex(&c.id);
        let to = masked(&c.msisdn);
        if reverse {
            c.state = "awaiting_sms".into();
            self.store.insert_certificate(&c, None).map_err(store_err)?;
            tracing::info!(identifier = %c.identifier, tx = %id, from = %to, "reverse: waiting for the code by SMS");
            return Ok(Response::json(
                201,
                &json!({
                    "transaction": id,
                    "mode": "reverse",
                    "status": "awaiting_sms",
                    "code": code.expose(),
                    "reply_from": to,
                    "expires_at": c.expires_at,
                }),
            ));
        }
        c.state = "sending".into();
        let r = self.config.codes;
        self.store
            .insert_certificate(&c, Some((r.count, r.window)))
            .map_err(store_err)?;
        let text = self.sms_text(&c, code.expose());
        let address = simlab_sms::Address::parse(&c.msisdn)
            .map_err(|e| ApiError::internal(format!("the directory's number: {e}")))?;
        let options = SendOptions {
            validity: Some(self.config.code_ttl),
            confidential: true,
            ..SendOptions::default()
        };
        let sent = {
            let mut sms = self.sms.lock().unwrap_or_else(PoisonError::into_inner);
            sms.send(&address, &text, &options)
        };
        match sent {
            Ok(receipt) => {
                self.store
                    .transition(&c.id, "sending", "pending", None)
                    .map_err(store_err)?;
                tracing::info!(identifier = %c.identifier, tx = %id, to = %to, parts = receipt.parts, kind = %c.kind, "code sent");
                Ok(Response::json(
                    201,
                    &json!({
                        "transaction": id,
                        "mode": "secured",
                        "status": "pending",
                        "sent_to": to,
                        "expires_at": c.expires_at,
                    }),
                ))
            }
            Err(e) => {
                // Whether or not a part went out, the code is void: it is never accepted.
                self.store
                    .transition(&c.id, "sending", "void", Some("send_failed"))
                    .map_err(store_err)?;
                tracing::warn!(identifier = %c.identifier, tx = %id, to = %to, error = %e, "the SMS failed; the code is void");
                Err(ApiError::unavailable(
                    "sms_failed",
                    format!("the code could not be sent to {to} ({e}); it is void, ask again"),
                ))
            }
        }
    }

    /// 605/709: what the person approves, in clear, then the code.
    fn sms_text(&self, c: &Certificate, code: &str) -> String {
        let minutes = self.config.code_ttl.as_secs().div_ceil(60);
        if c.kind == "login" {
            return format!(
                "Login code {code} for {} (valid {minutes} min). Never share it.",
                c.identifier
            );
        }
        let items: Vec<String> = c
            .items
            .iter()
            .map(|i| format!("{} x {}", i.quantity, i.product))
            .collect();
        let what = if items.is_empty() {
            String::new()
        } else {
            format!(" for {}", items.join(", "))
        };
        format!(
            "Pay {} to {}{what}? Code {code} (valid {minutes} min). Never share it.",
            format_amount(c.amount, &c.currency),
            c.payee
        )
    }

    fn transaction(&self, session: &Session, t: &str) -> Result<Certificate, ApiError> {
        let id = unhex::<16>(t).ok_or_else(|| {
            ApiError::bad_request(
                "bad_transaction",
                "a transaction is 32 lower-case hex digits",
            )
        })?;
        let c = self
            .store
            .certificate(&id)
            .map_err(store_err)?
            .ok_or_else(|| ApiError::not_found("unknown_transaction", "no such transaction"))?;
        if c.identifier != session.identifier {
            // Another person's transaction: as if it did not exist.
            return Err(ApiError::not_found(
                "unknown_transaction",
                "no such transaction",
            ));
        }
        Ok(c)
    }

    fn status(&self, s: &str, t: &str) -> Result<Response, ApiError> {
        let session = self.session(s)?;
        let c = self.transaction(&session, t)?;
        Ok(Response::ok(&json!({
            "transaction": hex(&c.id),
            "kind": c.kind,
            "mode": c.mode,
            "status": c.state,
            "outcome": c.outcome,
            "expires_at": c.expires_at,
        })))
    }

    /// 208–210 / 712: the code typed back on terminal A.
    fn confirm(&self, req: &Request, s: &str, t: &str) -> Result<Response, ApiError> {
        let session = self.session(s)?;
        let body: ConfirmBody = req.json()?;
        let digits = usize::from(self.config.digits);
        if body.code.len() != digits || !body.code.bytes().all(|b| b.is_ascii_digit()) {
            return Err(ApiError::bad_request(
                "bad_code",
                format!("the code is {digits} digits"),
            ));
        }
        let c = self.transaction(&session, t)?;
        let id = hex(&c.id);
        if c.session != session.token_hash {
            return Err(refused(
                409,
                "wrong_session",
                "this code was issued to another session",
            ));
        }
        match c.state.as_str() {
            "pending" => {}
            "validated" => return Err(refused(409, "already_used", "this code was used")),
            "blocked" => {
                return Err(refused(
                    403,
                    "blocked",
                    format!("blocked after {MAX_FAILURES} wrong codes"),
                ));
            }
            "expired" => return Err(refused(410, "expired", "this code expired")),
            "awaiting_sms" => {
                return Err(refused(
                    409,
                    "reverse_direction",
                    "this code must come back by SMS from the registered number",
                ));
            }
            _ => {
                return Err(refused(
                    409,
                    "void",
                    format!(
                        "this code is void ({})",
                        c.outcome.as_deref().unwrap_or("not sent")
                    ),
                ));
            }
        }
        let now = self.now();
        if now >= c.expires_at {
            self.store
                .transition(&c.id, "pending", "expired", Some("expired"))
                .map_err(store_err)?;
            tracing::info!(tx = %id, "confirmation after expiry");
            return Err(refused(
                410,
                "expired",
                format!("the code expired {} s ago", now - c.expires_at),
            ));
        }
        let differs = body.amount.is_some_and(|a| a != c.amount)
            || body.currency.as_ref().is_some_and(|x| *x != c.currency)
            || body.payee.as_ref().is_some_and(|x| *x != c.payee)
            || body.items.as_ref().is_some_and(|x| *x != c.items);
        if c.kind == "payment"
            && (differs || body.amount.is_none() || body.currency.is_none() || body.payee.is_none())
        {
            tracing::info!(tx = %id, "confirmation for another transaction than the code's");
            return Err(refused(
                422,
                "mismatch",
                "amount, currency, payee or items differ from what the code was sent for",
            ));
        }
        if !self
            .store
            .count_attempt(&c.id, "pending", MAX_FAILURES)
            .map_err(store_err)?
        {
            return Err(refused(409, "already_used", "this code was used meanwhile"));
        }
        if self.config.key.verify(&session, &c, &body.code) {
            if !self
                .store
                .validate(&c.id, "pending", now)
                .map_err(store_err)?
            {
                return Err(refused(409, "already_used", "this code was used meanwhile"));
            }
            tracing::info!(identifier = %c.identifier, tx = %id, kind = %c.kind, amount = c.amount, "validated");
            let mut answer = json!({"transaction": id, "status": "validated", "kind": c.kind});
            if c.kind == "login" {
                answer["access"] = json!("granted");
            }
            return Ok(Response::ok(&answer));
        }
        let failures = c.failures + 1;
        if failures >= MAX_FAILURES {
            self.store
                .transition(&c.id, "pending", "blocked", Some("blocked"))
                .map_err(store_err)?;
            tracing::warn!(identifier = %c.identifier, tx = %id, "blocked after {MAX_FAILURES} wrong codes");
            return Err(refused(
                403,
                "blocked",
                format!("{MAX_FAILURES} wrong codes: blocked"),
            ));
        }
        tracing::info!(identifier = %c.identifier, tx = %id, failures, "wrong code");
        Err(refused(
            403,
            "wrong_code",
            format!("wrong code; {} attempt(s) left", MAX_FAILURES - failures),
        ))
    }

    /// Aspects 2 and 3: reads the modem's incoming messages and validates the reverse-direction
    /// certificate each one's code belongs to (same number, right code, still valid). Returns
    /// how many were validated.
    pub fn poll(&self) -> usize {
        let incoming = {
            let mut sms = self.sms.lock().unwrap_or_else(PoisonError::into_inner);
            match sms.incoming() {
                Ok(m) => m,
                Err(e) => {
                    tracing::warn!(error = %e, "reading incoming SMS");
                    return 0;
                }
            }
        };
        let now = self.now();
        let mut validated = 0;
        for m in incoming {
            let Ok(from) = msisdn::canonical(&m.from) else {
                tracing::info!("an SMS from a number that is not international: ignored");
                continue;
            };
            let Some(code) = m
                .text
                .as_deref()
                .and_then(|t| code_in(t, usize::from(self.config.digits)))
            else {
                tracing::info!(from = %masked(&from), "an SMS without a code: ignored");
                continue;
            };
            match self.match_reverse(&from, code, now) {
                Ok(true) => validated += 1,
                Ok(false) => {
                    tracing::info!(from = %masked(&from), "an SMS code that matches no waiting transaction")
                }
                Err(e) => tracing::warn!(error = %e, "matching an incoming SMS"),
            }
        }
        validated
    }

    fn match_reverse(&self, from: &str, code: &str, now: i64) -> Result<bool, StoreError> {
        for c in self.store.awaiting_sms(from, now)? {
            let Some(session) = self.store.session(&c.session)? else {
                continue;
            };
            if session.closed_at.is_some() || !self.config.key.verify(&session, &c, code) {
                continue;
            }
            if self.store.validate(&c.id, "awaiting_sms", now)? {
                tracing::info!(identifier = %c.identifier, tx = %hex(&c.id), "validated by SMS from the registered number");
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Closes the sessions whose time is up (their codes void); how many.
    pub fn sweep(&self) -> Result<usize, StoreError> {
        self.store.sweep(self.now())
    }
}

/// Percent-encodes an identifier for a URL path segment.
pub(crate) fn percent(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reply_codes_and_hex() {
        assert_eq!(code_in("OK 482913 thanks", 6), Some("482913"));
        assert_eq!(code_in("4829134", 6), None);
        assert_eq!(code_in("", 6), None);
        assert_eq!(unhex::<2>("0aff"), Some([0x0a, 0xff]));
        assert_eq!(unhex::<2>("0AFF"), None);
        assert_eq!(unhex::<2>("0af"), None);
        assert_eq!(percent("u1@x y"), "u1%40x%20y");
    }
}
