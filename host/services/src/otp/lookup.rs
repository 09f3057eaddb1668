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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::Peer;

    fn get(path: &str, role: Option<Role>) -> Response {
        let lookup = Lookup::new([("u3", "0049 170 0000097"), ("a b/c", "+491700000011")]);
        lookup.handle(&Request {
            method: "GET".into(),
            path: path.into(),
            query: None,
            headers: Vec::new(),
            body: Vec::new(),
            peer: None,
            client: role.map(|role| Peer {
                role,
                name: "otp".into(),
                serial_hex: "01".into(),
            }),
        })
    }

    fn body(r: &Response) -> serde_json::Value {
        serde_json::from_slice(&r.body).unwrap()
    }

    #[test]
    fn only_peers_learn_a_number_and_unknown_identifiers_are_404() {
        let r = get("/v1/subscribers/u3", Some(Role::Peer));
        assert_eq!(
            (r.status, body(&r)["msisdn"].clone()),
            (200, json!("0049 170 0000097"))
        );
        // Identifiers arrive percent-encoded, as the OTP server sends them.
        let r = get("/v1/subscribers/a%20b%2Fc", Some(Role::Peer));
        assert_eq!(r.status, 200, "{:?}", body(&r));
        let r = get("/v1/subscribers/u4", Some(Role::Peer));
        assert_eq!(
            (r.status, body(&r)["error"].clone()),
            (404, json!("unknown_subscriber"))
        );
        for role in [None, Some(Role::Server), Some(Role::Seller)] {
            let r = get("/v1/subscribers/u3", role);
            assert_eq!(r.status, 403, "{role:?}");
            assert!(
                !String::from_utf8_lossy(&r.body).contains("0000097"),
                "{role:?}"
            );
        }
        assert_eq!(get("/v1/subscribers", Some(Role::Peer)).status, 404);
    }
}
