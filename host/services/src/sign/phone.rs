//! The phone's process 260 (`simlab sign approve` once, `simlab sign watch` for every push):
//! fetch the request named by the push, check the server's countersignature against the
//! certificate the phone pinned (211), decode what to show from the signed bytes themselves
//! (212), ask the PIN or take a refusal (213), have the token sign exactly those bytes (214)
//! and post the signature (215).
//!
//! Nothing the SMS says is shown as fact: it only names a transaction; a push whose code is
//! not the request's own correlator is refused.

use super::{SignRequest, TxState};
use crate::bytes::{hex, unhex};
use crate::http::client::{self, ClientError, Url};
use crate::roaming::keys::verify_by_certificate;
use serde_json::{Value, json};
use simlab_applet::chv::PIN_LEN;
use simlab_card::token::{PinOutcome, TokenSession};

/// Why the phone did not sign.
#[derive(Debug, thiserror::Error)]
pub enum PhoneError {
    /// The server refused or could not be reached (its error code and detail).
    #[error("{0}")]
    Http(#[from] ClientError),
    /// The request is not one to sign: bad countersignature, undecodable, another
    /// transaction, a code that differs from the push's, not waiting any more. Nothing was
    /// signed.
    #[error("request refused: {0}")]
    Refused(String),
    /// The token failed (transport, status word).
    #[error("token: {0}")]
    Token(#[from] simlab_card::error::Error),
}

impl From<PhoneError> for simlab_card::error::Error {
    /// A token failure stays the card's error; every refusal is a mismatch (exit code 1).
    fn from(e: PhoneError) -> Self {
        match e {
            PhoneError::Token(e) => e,
            other => simlab_card::error::Error::Mismatch {
                what: other.to_string(),
            },
        }
    }
}

/// What the phone shows, decoded from the signed bytes.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Shown {
    pub tx: String,
    pub server_id: String,
    pub user_id: String,
    pub amount: u64,
    pub currency: String,
    /// `42.50 EUR`.
    pub amount_text: String,
    pub summary: String,
    pub correlator: String,
    pub expires_at: u64,
}

impl Shown {
    fn of(r: &SignRequest<'_>) -> Shown {
        Shown {
            tx: hex(&r.tx_id),
            server_id: r.server_id.to_string(),
            user_id: r.user_id.to_string(),
            amount: r.amount,
            currency: r.currency_str().to_string(),
            amount_text: r.amount_display().to_string(),
            summary: r.summary.to_string(),
            correlator: r.correlator_str().to_string(),
            expires_at: r.expires_at,
        }
    }
}

/// What the person decided after seeing the request.
pub enum Decision {
    /// Sign, with this PIN.
    Sign([u8; PIN_LEN]),
    /// Say no: the server records `declined`.
    Decline,
}

/// How one request ended on the phone.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Outcome {
    pub shown: Shown,
    /// The state the server reported afterwards.
    pub state: String,
    /// The token's status word when the PIN was refused (`63C1`, `6983`).
    pub pin_status: Option<String>,
}

/// The server the phone trusts: its URL (HTTPS with the pinned CA) and its certificate, whose
/// key must have countersigned every request.
pub struct Server {
    pub url: Url,
    pub certificate_der: Vec<u8>,
}

/// Fetches and checks the request of `tx`: the bytes to sign and what they say.
pub fn fetch(
    server: &Server,
    tx: &[u8; 16],
    pushed_code: Option<&str>,
) -> Result<(Vec<u8>, Shown), PhoneError> {
    let v: Value = client::get_json(&server.url, &format!("/v1/requests/{}", hex(tx)))?;
    let field = |name: &str| {
        v.get(name)
            .and_then(Value::as_str)
            .and_then(unhex)
            .ok_or_else(|| PhoneError::Refused(format!("the answer has no {name}")))
    };
    let bytes = field("request")?;
    let counter = field("countersignature")?;
    // 211: the request comes from the server this phone pinned, unchanged.
    if !verify_by_certificate(&server.certificate_der, &bytes, &counter) {
        return Err(PhoneError::Refused(
            "the server's countersignature does not verify: the request was changed on the way or comes from another server".into(),
        ));
    }
    let decoded = SignRequest::decode(&bytes)
        .map_err(|e| PhoneError::Refused(format!("the request cannot be read: {e}")))?;
    if decoded.tx_id != *tx {
        return Err(PhoneError::Refused(
            "the request is for another transaction".into(),
        ));
    }
    let shown = Shown::of(&decoded);
    if let Some(code) = pushed_code
        && code != shown.correlator
    {
        return Err(PhoneError::Refused(format!(
            "the push said code {code} but the request's code is {}",
            shown.correlator
        )));
    }
    let state = v.get("state").and_then(Value::as_str).unwrap_or("");
    if state != TxState::AwaitingSignature.as_str() {
        return Err(PhoneError::Refused(format!(
            "the transaction is {state}, not waiting for a signature"
        )));
    }
    Ok((bytes, shown))
}

/// The whole of process 260 for one transaction.
pub fn handle(
    server: &Server,
    token: &mut TokenSession,
    tx: &[u8; 16],
    pushed_code: Option<&str>,
    decide: &mut dyn FnMut(&Shown) -> Decision,
) -> Result<Outcome, PhoneError> {
    let (bytes, shown) = fetch(server, tx, pushed_code)?;
    let base = format!("/v1/requests/{}", hex(tx));
    let post = |path: &str, body: Value| -> Result<String, PhoneError> {
        let v: Value = client::post_json(&server.url, &format!("{base}/{path}"), &body)?;
        Ok(v.get("state")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string())
    };
    let pin = match decide(&shown) {
        Decision::Decline => {
            let state = post("decline", json!({"reason": "declined"}))?;
            return Ok(Outcome {
                shown,
                state,
                pin_status: None,
            });
        }
        Decision::Sign(pin) => pin,
    };
    match token.verify_pin(&pin)? {
        PinOutcome::Verified => {}
        PinOutcome::Wrong { tries_left } if tries_left > 0 => {
            // The server hears nothing: the person may try again before the deadline.
            return Ok(Outcome {
                shown,
                state: TxState::AwaitingSignature.as_str().into(),
                pin_status: Some(format!("63C{tries_left:X}")),
            });
        }
        // The last try spent, or blocked before: this transaction cannot be signed.
        PinOutcome::Wrong { .. } | PinOutcome::Blocked => {
            let state = post("decline", json!({"reason": "pin_blocked"}))?;
            return Ok(Outcome {
                shown,
                state,
                pin_status: Some("6983".into()),
            });
        }
    }
    // 214: exactly the bytes that were shown, sent as SIGN REQUEST so that the token decodes
    // them again itself (a firmware token also shows them on its own display before it waits
    // for the button).
    let signature = token.sign_request(&bytes)?;
    let state = post("signature", json!({"signature": hex(&signature)}))?;
    Ok(Outcome {
        shown,
        state,
        pin_status: None,
    })
}
