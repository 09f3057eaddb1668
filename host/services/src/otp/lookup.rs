//! The operator's look-up service (203): when an identifier has no row in the OTP server's own
//! directory, the operator that issued the subscriber's card knows the certified number. A small
//! HTTPS stub (`simlab otp lookup serve`) for the tests and the demo; it answers OTP servers
//! only (peer certificates), `GET /v1/subscribers/{identifier}` → `{"msisdn": …}` or 404.

use super::service::percent;
use crate::http::{ApiError, Request, Response, Role};
use serde_json::json;
use std::collections::HashMap;

/// Identifier → number, as the operator has them (not canonicalised here: the OTP server must
/// cope with however the operator spells its numbers).
pub struct Lookup {
    /// Keyed by the identifier as it appears in the request path (percent-encoded), so the
    /// stub never decodes outside input.
    numbers: HashMap<String, String>,
}

impl Lookup {
    pub fn new<'a>(entries: impl IntoIterator<Item = (&'a str, &'a str)>) -> Lookup {
        Lookup {
            numbers: entries
                .into_iter()
                .map(|(id, number)| (percent(id), number.to_string()))
                .collect(),
        }
    }

    pub fn handle(&self, req: &Request) -> Response {
        self.route(req).unwrap_or_else(Response::from)
    }

    fn route(&self, req: &Request) -> Result<Response, ApiError> {
        let segments = req.segments();
        let ["v1", "subscribers", id] = segments.as_slice() else {
            return Err(ApiError::not_found("not_found", format!("no {}", req.path)));
        };
        if req.method != "GET" {
            return Err(ApiError::not_found("not_found", format!("no {}", req.path)));
        }
        let caller = req.require(&[Role::Peer])?.name.clone();
        let number = self.numbers.get(*id);
        tracing::info!(from = %caller, identifier = %id, found = number.is_some(), "look-up");
        match number {
            Some(n) => Ok(Response::ok(&json!({ "msisdn": n }))),
            None => Err(ApiError::not_found(
                "unknown_subscriber",
                format!("{id} is not a subscriber of this operator"),
            )),
        }
    }
}
