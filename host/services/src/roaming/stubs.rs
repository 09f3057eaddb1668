//! The two parties seed 001 needs but does not describe: a content provider's shop front
//! (`simlab mec cp serve`) and a financial institution (`simlab mec fi serve`). Both are small
//! on purpose, but real servers over TLS: the tests and the demo run them as processes.

use super::messages::hex16;
use crate::http::client::{self, ClientError, Url};
use crate::http::{ApiError, Request, Response, Role};
use serde::Deserialize;
use serde_json::{Value, json};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

/// The financial institution: approves or declines (20A/20B). It answers MeC servers only
/// (peer certificates), and never sees more than an authorization reference and an amount.
pub struct Fi {
    /// Decline every payment (the tests' "FI declines").
    pub decline: bool,
    /// Decline payments above this amount, minor units.
    pub limit: Option<u64>,
    next: AtomicU64,
    /// Authorizations paid, so that one is never paid twice.
    paid: Mutex<std::collections::HashSet<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PayBody {
    authorization: String,
    amount: u64,
    currency: String,
    #[serde(default)]
    payment_method: Option<String>,
    merchant: String,
}

impl Fi {
    pub fn new(decline: bool, limit: Option<u64>) -> Fi {
        Fi {
            decline,
            limit,
            next: AtomicU64::new(1),
            paid: Mutex::new(Default::default()),
        }
    }

    pub fn handle(&self, req: &Request) -> Response {
        self.route(req).unwrap_or_else(Response::from)
    }

    fn route(&self, req: &Request) -> Result<Response, ApiError> {
        match (req.method.as_str(), req.segments().as_slice()) {
            ("POST", ["v1", "payments"]) => {}
            _ => return Err(ApiError::not_found("not_found", format!("no {}", req.path))),
        }
        let caller = req.require(&[Role::Peer])?.name.clone();
        let body: PayBody = req.json()?;
        if hex16::parse(&body.authorization).is_none() {
            return Err(ApiError::bad_request(
                "bad_authorization",
                "expected 32 hex digits",
            ));
        }
        let mut paid = self.paid.lock().unwrap_or_else(|e| e.into_inner());
        if paid.contains(&body.authorization) {
            return Err(ApiError::conflict(
                "authorization_used",
                "this authorization was paid before",
            ));
        }
        let approved = !self.decline && self.limit.is_none_or(|l| body.amount <= l);
        let reference = if approved {
            paid.insert(body.authorization.clone());
            format!("fi-{}", self.next.fetch_add(1, Ordering::Relaxed))
        } else {
            String::new()
        };
        tracing::info!(
            from = %caller,
            merchant = %body.merchant,
            amount = body.amount,
            currency = %body.currency,
            method = body.payment_method.as_deref().unwrap_or("-"),
            approved,
            "payment"
        );
        Ok(Response::ok(
            &json!({"approved": approved, "fi_reference": reference}),
        ))
    }
}

/// The content provider's shop front: the phone's browser checks out here, and is sent on
/// (303) to the subscriber's home server. It reaches its MeC server with its seller
/// certificate.
pub struct Cp {
    pub mec: Url,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CheckoutForm {
    msisdn: String,
    request_type: String,
    #[serde(default)]
    amount: u64,
    currency: String,
    #[serde(default)]
    description: String,
    #[serde(default)]
    payment_method: Option<String>,
}

fn passed_on(e: ClientError) -> ApiError {
    match e {
        ClientError::Status(e) if e.status < 500 => e,
        other => ApiError::new(502, "mec_unreachable", other.to_string()),
    }
}

impl Cp {
    pub fn handle(&self, req: &Request) -> Response {
        self.route(req).unwrap_or_else(Response::from)
    }

    fn route(&self, req: &Request) -> Result<Response, ApiError> {
        match (req.method.as_str(), req.segments().as_slice()) {
            ("POST", ["checkout"]) => self.checkout(req),
            ("GET", ["orders", id]) => {
                if hex16::parse(id).is_none() {
                    return Err(ApiError::bad_request(
                        "bad_order_id",
                        "expected 32 hex digits",
                    ));
                }
                let v: Value = client::get_json(&self.mec, &format!("/v1/checkout/{id}"))
                    .map_err(passed_on)?;
                Ok(Response::ok(&v))
            }
            _ => Err(ApiError::not_found("not_found", format!("no {}", req.path))),
        }
    }

    fn checkout(&self, req: &Request) -> Result<Response, ApiError> {
        let form: CheckoutForm = req.json()?;
        let v: Value = client::post_json(
            &self.mec,
            "/v1/checkout",
            &json!({
                "msisdn": form.msisdn,
                "request_type": form.request_type,
                "amount": form.amount,
                "currency": form.currency,
                "description": form.description,
                "payment_method": form.payment_method,
            }),
        )
        .map_err(passed_on)?;
        if v.get("status").and_then(Value::as_str) == Some("choose_payment_method") {
            return Ok(Response::ok(&v));
        }
        let id = v
            .get("contract_id")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let location = v
            .get("redirect")
            .and_then(Value::as_str)
            .unwrap_or_default();
        tracing::info!(order = %id, "checkout: user sent to the home server");
        Ok(Response::json(
            303,
            &json!({
                "order_id": id,
                "location": location,
                "payment_method": v.get("payment_method"),
                "status_url": format!("/orders/{id}"),
            }),
        ))
    }
}

/// `router` with a `Location` header on every 303: the blocking handlers' [`Response`] has no
/// headers, so a 303 names its target in the JSON body's `location` and this copies it out.
pub fn with_location(router: axum::Router) -> axum::Router {
    router.layer(axum::middleware::map_response(add_location))
}

async fn add_location(response: axum::response::Response) -> axum::response::Response {
    use axum::http::{HeaderValue, StatusCode, header};
    if response.status() != StatusCode::SEE_OTHER {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    let bytes = axum::body::to_bytes(body, 64 * 1024)
        .await
        .unwrap_or_default();
    let location = serde_json::from_slice::<Value>(&bytes)
        .ok()
        .and_then(|v| v.get("location")?.as_str().map(str::to_string));
    if let Some(v) = location.and_then(|l| HeaderValue::from_str(&l).ok()) {
        parts.headers.insert(header::LOCATION, v);
    }
    axum::response::Response::from_parts(parts, axum::body::Body::from(bytes))
}
