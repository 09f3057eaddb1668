//! The bank seed 004 asks before a payment's secret is sent (707, 805, 1007–1009): a small
//! HTTPS stub (`simlab otp bank serve`) that approves or declines an amount, for the tests and
//! the demo. It answers OTP servers only (peer certificates) and sees the card reference, the
//! amount and the payee, never a code.

use crate::http::{ApiError, Request, Response, Role};
use serde::Deserialize;
use serde_json::json;
use std::sync::atomic::{AtomicU64, Ordering};

/// Approves up to a limit, or declines everything.
pub struct Bank {
    /// Decline every authorization (the tests' "the bank declines").
    pub decline: bool,
    /// Decline amounts above this, minor units.
    pub limit: Option<u64>,
    next: AtomicU64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Authorization {
    transaction: String,
    identifier: String,
    #[serde(default)]
    bank: Option<String>,
    #[serde(default)]
    card: Option<String>,
    amount: u64,
    currency: String,
    payee: String,
}

impl Bank {
    pub fn new(decline: bool, limit: Option<u64>) -> Bank {
        Bank {
            decline,
            limit,
            next: AtomicU64::new(1),
        }
    }

    pub fn handle(&self, req: &Request) -> Response {
        self.route(req).unwrap_or_else(Response::from)
    }

    fn route(&self, req: &Request) -> Result<Response, ApiError> {
        match (req.method.as_str(), req.segments().as_slice()) {
            ("POST", ["v1", "authorizations"]) => {}
            _ => return Err(ApiError::not_found("not_found", format!("no {}", req.path))),
        }
        let caller = req.require(&[Role::Peer])?.name.clone();
        let a: Authorization = req.json()?;
        let approved = !self.decline && self.limit.is_none_or(|l| a.amount <= l);
        let reference =
            approved.then(|| format!("auth-{}", self.next.fetch_add(1, Ordering::Relaxed)));
        tracing::info!(
            from = %caller,
            transaction = %a.transaction,
            identifier = %a.identifier,
            bank = a.bank.as_deref().unwrap_or("-"),
            card = a.card.as_deref().unwrap_or("-"),
            amount = a.amount,
            currency = %a.currency,
            payee = %a.payee,
            approved,
            "authorization"
        );
        Ok(Response::ok(
            &json!({"approved": approved, "reference": reference}),
        ))
    }
}
