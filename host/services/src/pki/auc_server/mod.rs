//! The HLR/AuC of seed 000 (messages 220/230) as a service: `POST /v1/auth-info` answers an
//! IMSI with GSM triplets or a UMTS quintet computed from the subscriber database.
//!
//! The answer carries Kc (or CK and IK): that is what message 230 is. So the AuC answers only
//! a gateway that proved itself with a client certificate of its operator's CA (role
//! `gateway`); anyone else, and anyone over plain HTTP, gets 403 before the body is read. It
//! logs no bodies.

pub mod subscribers;

use super::messages::{AuthInfoRequest, AuthInfoResponse, AuthPath, check_imsi, hex_fixed};
use crate::http::{ApiError, Request, Response, Role};
use subscribers::{AucError, MAX_TRIPLETS, SubscriberDb};

/// The AuC service. Its database is a pool: requests run concurrently, and SQN updates do not
/// interleave because each is one `IMMEDIATE` transaction.
pub struct Auc {
    db: SubscriberDb,
}

impl Auc {
    pub fn new(db: SubscriberDb) -> Auc {
        Auc { db }
    }

    /// Routes one request.
    pub fn handle(&self, req: &Request) -> Response {
        match (req.method.as_str(), req.segments().as_slice()) {
            ("POST", ["v1", "auth-info"]) => self.auth_info(req).unwrap_or_else(Response::from),
            ("GET", ["v1", "health"]) => Response::ok(&serde_json::json!({ "role": "auc" })),
            (_, ["v1", "auth-info"]) => ApiError::new(405, "method_not_allowed", "use POST").into(),
            _ => ApiError::not_found("no_such_endpoint", format!("no {}", req.path)).into(),
        }
    }

    fn auth_info(&self, req: &Request) -> Result<Response, ApiError> {
        match &req.client {
            Some(peer) if peer.role == Role::Gateway => {
                tracing::debug!(gateway = %peer.name, "auth-info");
            }
            Some(peer) => {
                return Err(ApiError::new(
                    403,
                    "gateway_certificate_required",
                    format!(
                        "the AuC answers gateways only; this certificate is for role {}",
                        peer.role.as_str()
                    ),
                ));
            }
            None => {
                return Err(ApiError::new(
                    403,
                    "gateway_certificate_required",
                    "the AuC answers gateways only: present the gateway's client certificate",
                ));
            }
        }
        let body: AuthInfoRequest = req.json()?;
        check_imsi(&body.imsi)?;
        let db = &self.db;
        let response = match body.path {
            AuthPath::Gsm => {
                if body.resync.is_some() {
                    return Err(ApiError::bad_request(
                        "bad_field",
                        "resync: only for the usim path",
                    ));
                }
                if !(1..=MAX_TRIPLETS).contains(&body.count) {
                    return Err(ApiError::bad_request(
                        "bad_field",
                        format!("count: 1 to {MAX_TRIPLETS} triplets"),
                    ));
                }
                let triplets = db.triplets(&body.imsi, body.count).map_err(api_error)?;
                AuthInfoResponse {
                    imsi: body.imsi,
                    triplets: triplets.iter().map(|t| t.to_message()).collect(),
                    quintets: Vec::new(),
                    impi: None,
                }
            }
            AuthPath::Usim => {
                if body.count != 1 {
                    return Err(ApiError::bad_request(
                        "bad_field",
                        "count: one quintet per request",
                    ));
                }
                let resync = body
                    .resync
                    .as_ref()
                    .map(|r| {
                        Ok::<_, ApiError>((
                            hex_fixed::<16>("resync.rand", &r.rand)?,
                            hex_fixed::<14>("resync.auts", &r.auts)?,
                        ))
                    })
                    .transpose()?;
                let (q, impi) = db
                    .quintet(&body.imsi, resync.as_ref().map(|(r, a)| (r, a)))
                    .map_err(api_error)?;
                AuthInfoResponse {
                    imsi: body.imsi,
                    triplets: Vec::new(),
                    quintets: vec![q.to_message()],
                    impi: Some(impi),
                }
            }
        };
        Ok(Response::ok(&response))
    }
}

/// The HTTP form of an AuC failure.
fn api_error(e: AucError) -> ApiError {
    match e {
        AucError::UnknownImsi(_) => ApiError::not_found("unknown_imsi", e.to_string()),
        AucError::NotSupported(_) => ApiError::unprocessable("not_supported", e.to_string()),
        AucError::ResyncRejected => ApiError::new(403, "resync_rejected", e.to_string()),
        AucError::BadInput(_) => ApiError::bad_request("bad_field", e.to_string()),
        AucError::Database(_) | AucError::Open(_) => {
            ApiError::unavailable("database_unavailable", e.to_string())
        }
    }
}
