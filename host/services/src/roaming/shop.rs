//! The phone's side of seed 001 (`simlab roam shop`): the browser checks out at the content
//! provider, follows the 303 to the home server, shows the contract decoded from the very
//! bytes it will sign, and has the token sign them after its PIN — over whatever transport the
//! token is on. The buyer's rule of seed 000 holds: decode the bytes, check them against what
//! was asked for, show them, then sign.

use super::RequestType;
use super::messages::{Contract, hex16};
use crate::http::client::{self, ClientError, Url};
use crate::http::tls::ClientTls;
use crate::pki::restrictions::money;
use serde_json::{Value, json};
use simlab_applet::chv::PIN_LEN;
use simlab_card::token::{PinOutcome, TokenSession};

/// Why shopping stopped.
#[derive(Debug, thiserror::Error)]
pub enum ShopError {
    /// A server refused or could not be reached (its error code and detail).
    #[error("{0}")]
    Http(#[from] ClientError),
    /// The redirect does not lead to a contract on an HTTPS server this phone trusts.
    #[error("redirect refused: {0}")]
    Redirect(String),
    /// The contract's bytes do not say what was asked for: nothing was signed.
    #[error("contract refused: {0}")]
    Contract(String),
    /// The token failed (transport, status word).
    #[error("token: {0}")]
    Token(#[from] simlab_card::error::Error),
}

impl From<ShopError> for simlab_card::error::Error {
    /// A token failure stays the card's error; every refusal is a mismatch (exit code 1).
    fn from(e: ShopError) -> Self {
        match e {
            ShopError::Token(e) => e,
            other => simlab_card::error::Error::Mismatch {
                what: other.to_string(),
            },
        }
    }
}

/// What to buy or approve.
#[derive(Clone, Debug)]
pub struct Order {
    pub msisdn: String,
    pub request_type: RequestType,
    pub amount: u64,
    pub currency: String,
    pub description: String,
    /// The payment method to pick; `None` takes the first one offered.
    pub payment_method: Option<String>,
    /// A fault for the tests: sign the contract with the amount plus one.
    pub sign_amount_plus_one: bool,
}

/// How it ended.
#[derive(Debug)]
pub struct Outcome {
    pub contract: Contract,
    pub contract_bytes: Vec<u8>,
    /// The token's status word when the PIN was refused (`63C2`…), else `None`.
    pub pin_status: Option<String>,
    /// The home server's answer to the security result.
    pub home: Value,
    /// The content provider's view of the order afterwards.
    pub cp: Value,
}

/// Checks a redirect target: `https://HOST:PORT/v1/contracts/<32 hex>`.
pub fn parse_redirect(location: &str) -> Result<(String, String), ShopError> {
    let rest = location
        .strip_prefix("https://")
        .ok_or_else(|| ShopError::Redirect(format!("{location:?} is not https://")))?;
    let (authority, path) = rest
        .split_once('/')
        .ok_or_else(|| ShopError::Redirect(format!("{location:?} names no contract")))?;
    let id = path
        .strip_prefix("v1/contracts/")
        .filter(|id| hex16::parse(id).is_some())
        .ok_or_else(|| ShopError::Redirect(format!("{location:?} is not a contract page")))?;
    Ok((format!("https://{authority}"), id.to_string()))
}

/// The whole walk of Fig 5 / Fig 6 from the phone.
pub fn shop(
    cp: &Url,
    trust: &ClientTls,
    token: &mut TokenSession,
    pin: &[u8; PIN_LEN],
    order: &Order,
    say: &mut dyn FnMut(&str),
) -> Result<Outcome, ShopError> {
    let mut form = json!({
        "msisdn": order.msisdn,
        "request_type": order.request_type,
        "amount": order.amount,
        "currency": order.currency,
        "description": order.description,
        "payment_method": order.payment_method,
    });
    let mut answer = client::request(cp, "POST", "/checkout", Some(form.to_string().as_bytes()))?;
    if answer.status == 200 {
        let v: Value = client::decode(&cp.authority, answer)?;
        let offered: Vec<String> = v
            .get("payment_methods")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|m| m.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default();
        say(&format!("payment methods offered: {}", offered.join(", ")));
        let pick = match &order.payment_method {
            Some(m) => m.clone(),
            None => offered
                .first()
                .cloned()
                .ok_or_else(|| ShopError::Contract("no payment method offered".into()))?,
        };
        say(&format!("paying by {pick}"));
        form["payment_method"] = json!(pick);
        answer = client::request(cp, "POST", "/checkout", Some(form.to_string().as_bytes()))?;
    }
    if answer.status != 303 {
        // An error answer: decode says what the server said.
        let _: Value = client::decode(&cp.authority, answer)?;
        return Err(ShopError::Redirect("the shop did not redirect".into()));
    }
    let body: Value = serde_json::from_slice(&answer.body)
        .map_err(|e| ShopError::Redirect(format!("the 303's body: {e}")))?;
    let location = body.get("location").and_then(Value::as_str).unwrap_or("");
    let order_id = body
        .get("order_id")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let (home_base, id) = parse_redirect(location)?;
    say(&format!("redirected to {location}"));
    let home = Url::parse(&home_base)?.with_tls(trust);
    let shown: Value = client::get_json(&home, &format!("/v1/contracts/{id}"))?;
    let bytes = shown
        .get("bytes")
        .and_then(Value::as_str)
        .and_then(crate::bytes::unhex)
        .ok_or_else(|| ShopError::Contract("the home server sent no contract bytes".into()))?;
    let contract = Contract::decode(&bytes).map_err(|e| ShopError::Contract(e.to_string()))?;
    check(&contract, &id, order)?;
    say(&format!(
        "contract {id}\n  from {} via {} (home {})\n  for {} · {}\n  {}{}\n  valid until {}",
        contract.cp_id,
        contract.visited,
        contract.home,
        contract.msisdn,
        contract.request_type,
        contract.description,
        if contract.amount > 0 || contract.request_type == RequestType::Payment {
            format!("\n  amount {}", money(contract.amount, &contract.currency))
        } else {
            String::new()
        },
        crate::pki::der::iso8601(contract.expires_at)
    ));
    let mut pin_status = None;
    let result_path = format!("/v1/contracts/{id}/result");
    let home_answer: Value = match token.verify_pin(pin)? {
        PinOutcome::Verified => {
            let to_sign = if order.sign_amount_plus_one {
                let mut c = contract.clone();
                c.amount += 1;
                c.encode().map_err(|e| ShopError::Contract(e.to_string()))?
            } else {
                bytes.clone()
            };
            let signature = token.sign(&to_sign)?;
            say("the token signed the contract");
            let first: Value = client::post_json(
                &home,
                &result_path,
                &json!({"msisdn": order.msisdn, "signature": crate::bytes::hex(&signature)}),
            )?;
            if contract.request_type == RequestType::DigitalSignature {
                say("authenticated; the home server signs on the user's behalf");
                client::post_json(
                    &home,
                    &format!("/v1/contracts/{id}/delegated-signature"),
                    &json!({"msisdn": order.msisdn}),
                )?
            } else {
                first
            }
        }
        refused => {
            let (failure, sw) = match refused {
                PinOutcome::Wrong { tries_left } => ("wrong_pin", format!("63C{tries_left:X}")),
                _ => ("token_blocked", "6983".to_string()),
            };
            say(&format!("the token refused the PIN ({sw}): nothing signed"));
            pin_status = Some(sw);
            client::post_json(
                &home,
                &result_path,
                &json!({"msisdn": order.msisdn, "failure": failure}),
            )?
        }
    };
    let cp_view: Value = client::get_json(cp, &format!("/orders/{order_id}"))?;
    Ok(Outcome {
        contract,
        contract_bytes: bytes,
        pin_status,
        home: home_answer,
        cp: cp_view,
    })
}

/// The contract must be the one the redirect named, for this phone, and say what was asked.
fn check(c: &Contract, id: &str, order: &Order) -> Result<(), ShopError> {
    let bad = |what: String| Err(ShopError::Contract(what));
    if c.id_hex() != id {
        return bad(format!("the page {id} shows contract {}", c.id_hex()));
    }
    if c.msisdn != order.msisdn {
        return bad(format!("it is for {}, not this phone", c.msisdn));
    }
    if c.request_type != order.request_type {
        return bad(format!(
            "it asks for {}, not {}",
            c.request_type, order.request_type
        ));
    }
    if c.amount != order.amount || c.currency != order.currency {
        return bad(format!(
            "it says {}, the shop asked {}",
            money(c.amount, &c.currency),
            money(order.amount, &order.currency)
        ));
    }
    if c.description != order.description {
        return bad(format!("it describes {:?}", c.description));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redirects() {
        let id = "00112233445566778899aabbccddeeff";
        assert_eq!(
            parse_redirect(&format!("https://127.0.0.1:9/v1/contracts/{id}")).unwrap(),
            ("https://127.0.0.1:9".to_string(), id.to_string())
        );
        for bad in [
            format!("http://127.0.0.1:9/v1/contracts/{id}"),
            "https://127.0.0.1:9".to_string(),
            "https://127.0.0.1:9/v1/contracts/xyz".to_string(),
            format!("https://evil/v1/pay/{id}"),
            String::new(),
        ] {
            assert!(
                matches!(parse_redirect(&bad), Err(ShopError::Redirect(_))),
                "{bad}"
            );
        }
    }
}
