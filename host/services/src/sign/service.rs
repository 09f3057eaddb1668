//! Server 410 of seed 002: the business application (the PC's web site) and the signing
//! servlet (the phone's API) in one HTTPS service.
//!
//! PC, in a browser (201–205, 231–238):
//!
//! | | |
//! |---|---|
//! | `GET /` | log-in form, or the form to prepare a transaction and the user's list |
//! | `POST /login`, `POST /logout` | password (argon2id verifier) → a session cookie; a browser with a `user` client certificate (CN = user id) is logged in by `GET /` |
//! | `POST /transactions` | prepare: amount, currency, summary, full content → `prepared` |
//! | `GET /transactions/<id>` | the transaction; while waiting, the correlator |
//! | `GET /transactions/<id>/wait` | long poll: answers when the phone did, or after 25 s |
//! | `POST /transactions/<id>/approve` | 235–236, 221: directory look-up, request, push |
//! | `POST /transactions/<id>/abort` | `aborted`; a later signature gets 409 |
//!
//! Phone (211–215), JSON:
//!
//! | | |
//! |---|---|
//! | `GET /v1/requests/<id>` | the request bytes, the server's countersignature, the state |
//! | `POST /v1/requests/<id>/signature` | `{"signature": hex}`: verified with the directory's key (237) |
//! | `POST /v1/requests/<id>/decline` | `{"reason": "declined" \| "pin_blocked"}` |
//!
//! Forms are refused (403) when posted from another origin (`Origin`, `Sec-Fetch-Site`) or
//! without the session's CSRF token; a session only ever sees its own user's transactions
//! (404 for the others). The session cookie is `__Host-`, `Secure`, `HttpOnly`,
//! `SameSite=Strict`; only a SHA-256 of its value is stored.

use super::store::{Store, StoreError, Tx, User};
use super::{SignRequest, TxState, web};
use crate::bytes::{hex, random16, unhex};
use crate::http::server::{Handler, Limits, blocking_router};
use crate::http::{ApiError, Request, Response, Role};
use crate::roaming::keys::SigningKey;
use serde_json::json;
use sha2::{Digest, Sha256};
use simlab_applet::token::request::MAX_LEN;
use simlab_modem::backend::{SendOptions, SmsBackend};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::Duration;
use subtle::ConstantTimeEq;
use tokio::sync::Notify;

/// The session cookie's name: `__Host-` makes browsers insist on Secure, Path=/ and no Domain.
pub const COOKIE: &str = "__Host-simlab-sign";
/// How long one `…/wait` is held before the page refreshes itself.
pub const WAIT_HOLD: Duration = Duration::from_secs(25);

/// What the browser may load: this server's style sheet, nothing else, no framing.
const CSP: &str = "default-src 'none'; style-src 'self'; form-action 'self'; \
                   frame-ancestors 'none'; base-uri 'none'";

/// A fault for the tests (`--fault`), never in a real deployment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// The request is served with its amount changed after the countersignature was made
    /// (a man in the middle that keeps the signature).
    AmountInTransit,
}

pub struct Config {
    /// The server id inside every request (the phone shows it).
    pub server_id: String,
    /// Countersigns the requests (236): the key of the server's TLS certificate, which the
    /// phone pins.
    pub key: SigningKey,
    /// Seconds a phone has to sign once approved.
    pub request_ttl: u64,
    /// Seconds a web login lasts.
    pub session_ttl: u64,
    pub fault: Option<Fault>,
}

/// The signing server.
pub struct Signing {
    config: Config,
    store: Store,
    sms: Mutex<Box<dyn SmsBackend>>,
    /// Pages waiting on a transaction (the long polls), woken when its state changes.
    waiters: Mutex<HashMap<[u8; 16], Arc<Notify>>>,
}

/// A logged-in browser.
struct Session {
    user: String,
    csrf: String,
}

fn store_error(e: StoreError) -> ApiError {
    ApiError::unavailable("store_unavailable", e.to_string())
}

fn page(status: u16, body: String) -> Response {
    Response::html(status, body)
        .with_header("content-security-policy", CSP.to_string())
        .with_header("x-content-type-options", "nosniff".to_string())
        .with_header("referrer-policy", "same-origin".to_string())
        .with_header("x-frame-options", "DENY".to_string())
}

fn error_page(status: u16, title: &str, detail: &str) -> Response {
    page(status, web::error(title, detail))
}

fn redirect(location: &str) -> Response {
    Response::see_other(location)
}

/// The form fields of a urlencoded body.
fn form(req: &Request) -> Result<HashMap<String, String>, Response> {
    let ct = req.header("content-type").unwrap_or("");
    if !ct.starts_with("application/x-www-form-urlencoded") {
        return Err(error_page(
            415,
            "Not a form",
            "this page takes an HTML form (application/x-www-form-urlencoded)",
        ));
    }
    let mut out = HashMap::new();
    for (k, v) in form_urlencoded::parse(&req.body) {
        if out.insert(k.into_owned(), v.into_owned()).is_some() {
            return Err(error_page(400, "Malformed form", "a field appears twice"));
        }
    }
    Ok(out)
}

fn field<'a>(f: &'a HashMap<String, String>, name: &str) -> &'a str {
    f.get(name).map(String::as_str).unwrap_or("")
}

fn parse_id(s: &str) -> Option<[u8; 16]> {
    unhex(s)?.try_into().ok()
}

impl Signing {
    pub fn new(config: Config, store: Store, sms: Box<dyn SmsBackend>) -> Signing {
        Signing {
            config,
            store,
            sms: Mutex::new(sms),
            waiters: Mutex::new(HashMap::new()),
        }
    }

    /// The router to serve: the long poll as an async route (no thread while it waits), every
    /// other path through the blocking handler.
    pub fn router(self: &Arc<Self>, limits: Limits) -> axum::Router {
        let me = self.clone();
        let handler: Handler = Arc::new(move |req| me.handle(req));
        axum::Router::new()
            .route(
                "/transactions/{id}/wait",
                axum::routing::get(wait).with_state(self.clone()),
            )
            .merge(blocking_router(handler, limits, "sign"))
    }

    /// Expires the transactions past their deadline and wakes their pages; the server calls
    /// it every second.
    pub fn sweep(&self) -> Result<usize, StoreError> {
        let expired = self.store.expire(super::now())?;
        for id in &expired {
            tracing::info!(tx = %hex(id), "expired: no signature before the deadline");
            self.notify(id);
        }
        Ok(expired.len())
    }

    fn notify(&self, id: &[u8; 16]) {
        let waiters = self.waiters.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(n) = waiters.get(id) {
            n.notify_waiters();
        }
    }

    fn waiter(&self, id: [u8; 16]) -> Arc<Notify> {
        self.waiters
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(id)
            .or_default()
            .clone()
    }

    fn drop_waiter(&self, id: &[u8; 16], n: Arc<Notify>) {
        let mut waiters = self.waiters.lock().unwrap_or_else(PoisonError::into_inner);
        drop(n);
        if waiters.get(id).is_some_and(|n| Arc::strong_count(n) == 1) {
            waiters.remove(id);
        }
    }

    /// Every request but the long poll.
    pub fn handle(&self, req: &Request) -> Response {
        let segments = req.segments();
        let result = match (req.method.as_str(), segments.as_slice()) {
            ("GET", ["style.css"]) => Ok(Response {
                status: 200,
                content_type: "text/css; charset=utf-8",
                body: web::STYLE.as_bytes().to_vec(),
                headers: Vec::new(),
            }),
            ("GET", []) => self.home(req),
            ("POST", ["login"]) => self.login(req),
            ("POST", ["logout"]) => self.logout(req),
            ("POST", ["transactions"]) => self.prepare(req),
            ("GET", ["transactions", id]) => self.show(req, id),
            ("POST", ["transactions", id, "approve"]) => self.approve(req, id),
            ("POST", ["transactions", id, "abort"]) => self.abort(req, id),
            ("GET", ["v1", "requests", id]) => self.request(id).map_err(Response::from),
            ("POST", ["v1", "requests", id, "signature"]) => {
                self.signature(req, id).map_err(Response::from)
            }
            ("POST", ["v1", "requests", id, "decline"]) => {
                self.decline(req, id).map_err(Response::from)
            }
            (_, ["v1", ..]) => Err(ApiError::not_found(
                "no_route",
                format!("no {} {}", req.method, req.path),
            )
            .into()),
            _ => Err(error_page(
                404,
                "Not found",
                &format!("no page at {}", req.path),
            )),
        };
        result.unwrap_or_else(|r| r)
    }

    // ---- sessions -------------------------------------------------------------------------

    fn cookie(req: &Request) -> Option<[u8; 32]> {
        let header = req.header("cookie")?;
        let value = header.split(';').find_map(|c| {
            let (k, v) = c.trim().split_once('=')?;
            (k == COOKIE).then_some(v)
        })?;
        let raw = unhex(value).filter(|r| r.len() == 32)?;
        Some(Sha256::digest(&raw).into())
    }

    fn session(&self, req: &Request) -> Result<Option<Session>, Response> {
        let Some(hash) = Self::cookie(req) else {
            return Ok(None);
        };
        let found = self
            .store
            .session(&hash, super::now())
            .map_err(|e| Response::from(store_error(e)))?;
        Ok(found.map(|(user, csrf)| Session { user, csrf }))
    }

    /// A form post from this site by a logged-in user with the session's CSRF token.
    fn posted(&self, req: &Request) -> Result<(Session, HashMap<String, String>), Response> {
        Self::same_origin(req)?;
        let session = self
            .session(req)?
            .ok_or_else(|| error_page(401, "Not logged in", "log in first"))?;
        let f = form(req)?;
        let token = field(&f, "csrf");
        let ok: bool = token.as_bytes().ct_eq(session.csrf.as_bytes()).into();
        if !ok {
            return Err(error_page(
                403,
                "Refused",
                "the form does not carry this session's token: reload the page and try again",
            ));
        }
        Ok((session, f))
    }

    /// Refuses a form another site's page posted (the browser says so in `Sec-Fetch-Site` and
    /// `Origin`).
    fn same_origin(req: &Request) -> Result<(), Response> {
        let refuse = || {
            tracing::warn!(
                origin = req.header("origin").unwrap_or("-"),
                host = req.header("host").unwrap_or("-"),
                sec_fetch_site = req.header("sec-fetch-site").unwrap_or("-"),
                "form refused: posted from another site"
            );
            error_page(
                403,
                "Refused",
                "this form was posted from another site; nothing was done",
            )
        };
        // Browsers that send Fetch Metadata say it exactly; `Origin` is the check for the
        // others (it is "null" under some referrer policies, so it comes second).
        if let Some(site) = req.header("sec-fetch-site") {
            if !matches!(site, "same-origin" | "none") {
                return Err(refuse());
            }
        } else if let Some(origin) = req.header("origin") {
            let host = req.header("host").unwrap_or("");
            if origin != format!("https://{host}") {
                return Err(refuse());
            }
        }
        Ok(())
    }

    fn user_tx(&self, session: &Session, id: &str) -> Result<Tx, Response> {
        let not_found = || error_page(404, "Not found", "no such transaction");
        let id = parse_id(id).ok_or_else(not_found)?;
        let tx = self
            .store
            .tx(&id)
            .map_err(|e| Response::from(store_error(e)))?
            .ok_or_else(not_found)?;
        // Another user's transaction is not there, as far as this session can tell.
        if tx.user_id != session.user {
            return Err(not_found());
        }
        Ok(tx)
    }

    // ---- pages ----------------------------------------------------------------------------

    fn home(&self, req: &Request) -> Result<Response, Response> {
        let Some(s) = self.session(req)? else {
            // A browser with a `user` certificate of the CA is logged in by it (202).
            if let Some(peer) = req.client.as_ref().filter(|p| p.role == Role::User) {
                let row = self
                    .store
                    .user(&peer.name)
                    .map_err(|e| Response::from(store_error(e)))?;
                if let Some(u) = row.filter(|u| u.active) {
                    tracing::info!(user = %u.user_id, "logged in by client certificate");
                    return self.start_session(&u.user_id);
                }
            }
            return Ok(page(200, web::login(None)));
        };
        let txs = self
            .store
            .txs(Some(&s.user), 20)
            .map_err(|e| Response::from(store_error(e)))?;
        Ok(page(200, web::home(&s.user, &s.csrf, &txs, None)))
    }

    fn login(&self, req: &Request) -> Result<Response, Response> {
        Self::same_origin(req)?;
        let f = form(req)?;
        let (user, password) = (field(&f, "user"), field(&f, "password"));
        let row = if super::check_user_id(user).is_ok() {
            self.store
                .user(user)
                .map_err(|e| Response::from(store_error(e)))?
        } else {
            None
        };
        // An unknown user costs the same argon2 run as a known one: the time does not tell
        // which ids exist.
        let verifier = match &row {
            Some(u) => u.password.clone(),
            None => dummy_verifier().to_string(),
        };
        let matches = super::password_matches(password, &verifier);
        let Some(u) = row.filter(|u| matches && u.active) else {
            tracing::info!(user = %user.escape_debug(), "log-in refused");
            return Ok(page(401, web::login(Some("wrong user id or password"))));
        };
        tracing::info!(user = %u.user_id, "logged in");
        self.start_session(&u.user_id)
    }

    /// A new session for `user`: the cookie, and back to the home page.
    fn start_session(&self, user: &str) -> Result<Response, Response> {
        let raw = [random16(), random16()].concat();
        let csrf = hex(&random16());
        let hash: [u8; 32] = Sha256::digest(&raw).into();
        self.store
            .add_session(&hash, user, &csrf, super::now() + self.config.session_ttl)
            .map_err(|e| Response::from(store_error(e)))?;
        Ok(redirect("/").with_header(
            "set-cookie",
            format!(
                "{COOKIE}={}; Path=/; Secure; HttpOnly; SameSite=Strict; Max-Age={}",
                hex(&raw),
                self.config.session_ttl
            ),
        ))
    }

    fn logout(&self, req: &Request) -> Result<Response, Response> {
        let (_, _) = self.posted(req)?;
        if let Some(hash) = Self::cookie(req) {
            self.store
                .remove_session(&hash)
                .map_err(|e| Response::from(store_error(e)))?;
        }
        Ok(redirect("/").with_header(
            "set-cookie",
            format!("{COOKIE}=; Path=/; Secure; HttpOnly; SameSite=Strict; Max-Age=0"),
        ))
    }

    fn prepare(&self, req: &Request) -> Result<Response, Response> {
        let (s, f) = self.posted(req)?;
        let refuse = |msg: String| -> Result<Response, Response> {
            let txs = self.store.txs(Some(&s.user), 20).unwrap_or_default();
            Ok(page(422, web::home(&s.user, &s.csrf, &txs, Some(&msg))))
        };
        let currency = field(&f, "currency").trim().to_ascii_uppercase();
        if let Err(e) = super::check_currency(&currency) {
            return refuse(e);
        }
        let amount = match super::parse_amount(field(&f, "amount"), &currency) {
            Ok(a) => a,
            Err(e) => return refuse(e),
        };
        let summary = field(&f, "summary").trim().to_string();
        let content = field(&f, "content").replace("\r\n", "\n");
        if content.len() > super::CONTENT_MAX {
            return refuse(format!(
                "the details are longer than {} bytes",
                super::CONTENT_MAX
            ));
        }
        // The summary must be what the token can show: checked by the request encoder itself.
        let probe = SignRequest {
            server_id: &self.config.server_id,
            tx_id: [0; 16],
            user_id: &s.user,
            amount,
            currency: [0; 3],
            summary: &summary,
            content_hash: [0; 32],
            correlator: [0; 7],
            issued_at: 0,
            expires_at: 1,
        };
        let mut currency_bytes = [0u8; 3];
        currency_bytes.copy_from_slice(currency.as_bytes());
        let mut buf = [0u8; MAX_LEN];
        if (SignRequest {
            currency: currency_bytes,
            ..probe
        })
        .encode(&mut buf)
        .is_err()
        {
            return refuse(format!(
                "the summary must be 1 to {} characters without line breaks or control characters",
                simlab_applet::token::request::SUMMARY_MAX_CHARS
            ));
        }
        let tx = Tx {
            id: random16(),
            user_id: s.user.clone(),
            state: TxState::Prepared,
            amount,
            currency,
            summary,
            content,
            request: None,
            countersignature: None,
            correlator: None,
            signature: None,
            cause: None,
            created_at: super::now(),
            approved_at: None,
            expires_at: None,
            finished_at: None,
        };
        self.store
            .add_tx(&tx)
            .map_err(|e| Response::from(store_error(e)))?;
        tracing::info!(tx = %hex(&tx.id), user = %tx.user_id, "prepared");
        Ok(redirect(&format!("/transactions/{}", hex(&tx.id))))
    }

    fn show(&self, req: &Request, id: &str) -> Result<Response, Response> {
        let Some(s) = self.session(req)? else {
            return Ok(page(
                401,
                web::login(Some("log in to see this transaction")),
            ));
        };
        let tx = self.user_tx(&s, id)?;
        Ok(page(200, web::transaction(&s.user, &s.csrf, &tx, None)))
    }

    fn approve(&self, req: &Request, id: &str) -> Result<Response, Response> {
        let (s, _) = self.posted(req)?;
        let tx = self.user_tx(&s, id)?;
        let again = |status: u16, msg: &str| {
            Ok(page(
                status,
                web::transaction(&s.user, &s.csrf, &tx, Some(msg)),
            ))
        };
        if tx.state != TxState::Prepared {
            return again(409, "this transaction was approved or ended already");
        }
        // 235: the directory names the phone and the key that must sign.
        let user: Option<User> = self
            .store
            .user(&s.user)
            .map_err(|e| Response::from(store_error(e)))?;
        let Some(user) = user.filter(|u| u.public_key.is_some()) else {
            tracing::info!(tx = %hex(&tx.id), user = %s.user, "approval refused: no key in the directory");
            return again(
                422,
                "your directory entry has no token key yet: nothing was sent (enroll your phone's token first)",
            );
        };
        let Ok(to) = user.phone.parse::<simlab_sms::Address>() else {
            return again(422, "your directory entry has no usable phone number");
        };
        // 236: the request, countersigned.
        let issued = super::now();
        let mut currency = [0u8; 3];
        currency.copy_from_slice(tx.currency.as_bytes());
        let request = SignRequest {
            server_id: &self.config.server_id,
            tx_id: tx.id,
            user_id: &tx.user_id,
            amount: tx.amount,
            currency,
            summary: &tx.summary,
            content_hash: Sha256::digest(tx.content.as_bytes()).into(),
            correlator: [0; 7],
            issued_at: issued,
            expires_at: issued + self.config.request_ttl,
        };
        let mut buf = [0u8; MAX_LEN];
        let n = request.encode(&mut buf).map_err(|e| {
            Response::from(ApiError::internal(format!("encoding the request: {e}")))
        })?;
        let bytes = &buf[..n];
        let decoded = SignRequest::decode(bytes).map_err(|e| {
            Response::from(ApiError::internal(format!("re-reading the request: {e}")))
        })?;
        let correlator = decoded.correlator_str().to_string();
        let countersignature = self.config.key.sign(bytes);
        let approved = self
            .store
            .approve(
                &tx.id,
                bytes,
                &countersignature,
                &correlator,
                issued,
                issued + self.config.request_ttl,
            )
            .map_err(|e| Response::from(store_error(e)))?;
        if !approved {
            return again(409, "this transaction was approved or ended already");
        }
        // 221: the push names the transaction and the code, nothing to trust.
        let text = super::push_text(&tx.id, &correlator);
        let options = SendOptions {
            validity: Some(Duration::from_secs(self.config.request_ttl)),
            ..SendOptions::default()
        };
        let sent = self
            .sms
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .send(&to, &text, &options);
        if let Err(e) = sent {
            tracing::warn!(tx = %hex(&tx.id), error = %e, "the push SMS failed");
            let _ = self.store.finish(
                &tx.id,
                &[TxState::AwaitingSignature],
                TxState::Failed,
                None,
                Some("the request could not be sent to the phone"),
                super::now(),
            );
            let tx = self.user_tx(&s, id)?;
            return Ok(page(
                502,
                web::transaction(
                    &s.user,
                    &s.csrf,
                    &tx,
                    Some("the request could not be sent to your phone"),
                ),
            ));
        }
        tracing::info!(tx = %hex(&tx.id), user = %tx.user_id, to = %user.phone, correlator = %correlator, "approved; request pushed");
        Ok(redirect(&format!("/transactions/{}", hex(&tx.id))))
    }

    fn abort(&self, req: &Request, id: &str) -> Result<Response, Response> {
        let (s, _) = self.posted(req)?;
        let tx = self.user_tx(&s, id)?;
        let done = self
            .store
            .finish(
                &tx.id,
                &[TxState::Prepared, TxState::AwaitingSignature],
                TxState::Aborted,
                None,
                Some("aborted on the PC"),
                super::now(),
            )
            .map_err(|e| Response::from(store_error(e)))?;
        if !done {
            return Ok(page(
                409,
                web::transaction(
                    &s.user,
                    &s.csrf,
                    &tx,
                    Some("this transaction has ended already"),
                ),
            ));
        }
        tracing::info!(tx = %hex(&tx.id), "aborted on the PC");
        self.notify(&tx.id);
        Ok(redirect(&format!("/transactions/{}", hex(&tx.id))))
    }

    // ---- the phone's API ------------------------------------------------------------------

    fn api_tx(&self, id: &str) -> Result<Tx, ApiError> {
        let not_found =
            || ApiError::not_found("unknown_transaction", format!("no transaction {id}"));
        let id = parse_id(id).ok_or_else(not_found)?;
        self.store
            .tx(&id)
            .map_err(store_error)?
            .ok_or_else(not_found)
    }

    /// Whether `tx` still takes an answer from the phone: 409 or 410 otherwise.
    fn awaiting(&self, tx: &Tx) -> Result<(), ApiError> {
        let now = super::now();
        match tx.state {
            TxState::AwaitingSignature if tx.expires_at.is_some_and(|e| e > now) => Ok(()),
            TxState::AwaitingSignature | TxState::Expired => {
                let _ = self.sweep();
                Err(ApiError::new(
                    410,
                    "expired",
                    "the deadline for this transaction has passed",
                ))
            }
            TxState::Prepared => Err(ApiError::conflict(
                "not_approved",
                "this transaction was not approved on the PC",
            )),
            other => Err(ApiError::conflict(
                other.as_str(),
                format!("this transaction is {} already", other.as_str()),
            )),
        }
    }

    fn request(&self, id: &str) -> Result<Response, ApiError> {
        let tx = self.api_tx(id)?;
        let (Some(request), Some(counter)) = (&tx.request, &tx.countersignature) else {
            return Err(ApiError::conflict(
                "not_approved",
                "this transaction was not approved on the PC",
            ));
        };
        let mut request = request.clone();
        if self.config.fault == Some(Fault::AmountInTransit) {
            // A well-formed request with its own correlator and one cent more: only the
            // countersignature, which is kept, can tell.
            let mut buf = [0u8; MAX_LEN];
            let forged = SignRequest::decode(&request)
                .ok()
                .map(|r| SignRequest {
                    amount: r.amount + 1,
                    ..r
                })
                .and_then(|r| r.encode(&mut buf).ok());
            if let Some(n) = forged {
                request = buf[..n].to_vec();
            }
        }
        Ok(Response::ok(&json!({
            "tx": hex(&tx.id),
            "state": tx.state,
            "server_id": self.config.server_id,
            "request": hex(&request),
            "countersignature": hex(counter),
            "expires_at": tx.expires_at,
        })))
    }

    fn signature(&self, req: &Request, id: &str) -> Result<Response, ApiError> {
        #[derive(serde::Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Body {
            signature: String,
        }
        let body: Body = req.json()?;
        let signature = unhex(&body.signature)
            .filter(|s| (8..=80).contains(&s.len()))
            .ok_or_else(|| {
                ApiError::bad_request("bad_signature", "the signature is not DER hex")
            })?;
        let tx = self.api_tx(id)?;
        self.awaiting(&tx)?;
        let request = tx.request.as_deref().unwrap_or_default();
        let key = self
            .store
            .user(&tx.user_id)
            .map_err(store_error)?
            .and_then(|u| u.public_key);
        // 237: the directory's key, over exactly the stored bytes.
        let valid = key
            .as_deref()
            .is_some_and(|k| crate::pki::verify::p256_sha256(k, request, &signature));
        let now = super::now();
        if !valid {
            let changed = self
                .store
                .finish(
                    &tx.id,
                    &[TxState::AwaitingSignature],
                    TxState::Failed,
                    None,
                    Some(
                        "the signature does not verify with the directory's key over this request",
                    ),
                    now,
                )
                .map_err(store_error)?;
            if changed {
                tracing::warn!(tx = %hex(&tx.id), user = %tx.user_id, "signature refused: does not verify");
                self.notify(&tx.id);
            }
            return Err(ApiError::unprocessable(
                "signature_invalid",
                format!(
                    "the signature does not verify with {:?}'s key over this transaction's request",
                    tx.user_id
                ),
            ));
        }
        let changed = self
            .store
            .finish(
                &tx.id,
                &[TxState::AwaitingSignature],
                TxState::Completed,
                Some(&signature),
                None,
                now,
            )
            .map_err(store_error)?;
        if !changed {
            // Something else (an abort, the sweep) got there first.
            let tx = self.api_tx(id)?;
            self.awaiting(&tx)?;
        }
        tracing::info!(tx = %hex(&tx.id), user = %tx.user_id, "signed and verified: completed");
        self.notify(&tx.id);
        Ok(Response::ok(
            &json!({"tx": hex(&tx.id), "state": TxState::Completed}),
        ))
    }

    fn decline(&self, req: &Request, id: &str) -> Result<Response, ApiError> {
        #[derive(serde::Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Body {
            reason: String,
        }
        let body: Body = req.json()?;
        let (state, cause) = match body.reason.as_str() {
            "declined" => (TxState::Declined, "declined on the phone"),
            "pin_blocked" => (TxState::Failed, "the token's PIN is blocked"),
            other => {
                return Err(ApiError::bad_request(
                    "bad_reason",
                    format!("{other:?}: the reason is declined or pin_blocked"),
                ));
            }
        };
        let tx = self.api_tx(id)?;
        self.awaiting(&tx)?;
        let changed = self
            .store
            .finish(
                &tx.id,
                &[TxState::AwaitingSignature],
                state,
                None,
                Some(cause),
                super::now(),
            )
            .map_err(store_error)?;
        if !changed {
            let tx = self.api_tx(id)?;
            self.awaiting(&tx)?;
        }
        tracing::info!(tx = %hex(&tx.id), state = state.as_str(), "{cause}");
        self.notify(&tx.id);
        Ok(Response::ok(&json!({"tx": hex(&tx.id), "state": state})))
    }

    /// For the long poll: the transaction's state, if this browser may see it.
    fn wait_state(&self, cookie: Option<String>, id: &[u8; 16]) -> Option<TxState> {
        let req = Request {
            method: "GET".into(),
            path: String::new(),
            query: None,
            headers: cookie
                .map(|c| vec![("cookie".to_string(), c)])
                .unwrap_or_default(),
            body: Vec::new(),
            peer: None,
            client: None,
        };
        let s = self.session(&req).ok()??;
        let tx = self.store.tx(id).ok()??;
        (tx.user_id == s.user).then_some(tx.state)
    }
}

/// An argon2id verifier of nothing anyone knows, for log-ins of unknown users.
fn dummy_verifier() -> &'static str {
    static V: OnceLock<String> = OnceLock::new();
    V.get_or_init(|| super::password_verifier(&hex(&random16())).unwrap_or_default())
}

/// `GET /transactions/<id>/wait`: holds the browser until the phone answered (or
/// [`WAIT_HOLD`]), then sends it back to the transaction page. No thread waits: the state is
/// read on the blocking pool, the wait itself is a [`Notify`].
async fn wait(
    axum::extract::State(s): axum::extract::State<Arc<Signing>>,
    axum::extract::Path(id): axum::extract::Path<String>,
    headers: axum::http::HeaderMap,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    let back = || {
        (
            axum::http::StatusCode::SEE_OTHER,
            [
                (axum::http::header::LOCATION, format!("/transactions/{id}")),
                (axum::http::header::CACHE_CONTROL, "no-store".to_string()),
            ],
        )
            .into_response()
    };
    let Some(tx) = parse_id(&id) else {
        return axum::http::StatusCode::NOT_FOUND.into_response();
    };
    let cookie = headers
        .get(axum::http::header::COOKIE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let notify = s.waiter(tx);
    let deadline = tokio::time::Instant::now() + WAIT_HOLD;
    let answer = loop {
        let notified = notify.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        let (s2, c2) = (s.clone(), cookie.clone());
        let state = tokio::task::spawn_blocking(move || s2.wait_state(c2, &tx))
            .await
            .ok()
            .flatten();
        match state {
            None => break axum::http::StatusCode::NOT_FOUND.into_response(),
            Some(TxState::AwaitingSignature) => {}
            Some(_) => break back(),
        }
        if tokio::time::timeout_at(deadline, notified).await.is_err() {
            break back();
        }
    };
    s.drop_waiter(&tx, notify);
    answer
}
