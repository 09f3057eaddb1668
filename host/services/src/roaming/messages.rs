//! The signed structures of seed 001, each an enc() with its own label, and the JSON envelope
//! that carries them: `{"bytes": hex, "signature": hex}`. The receiver decodes the bytes with
//! the strict parsers here (every field checked, nothing trailing) and checks the signature
//! over exactly those bytes, so there is no second, JSON, form that could say something else.
//!
//! | structure | label | signer | seed |
//! |---|---|---|---|
//! | [`Contract`] | `simlab-roam-contract-v1` | the user's token, or H-MeC (delegated) | Fig 5 6–8, Fig 6 10 |
//! | [`RoamUserRequest`] | `simlab-roam-user-request-v1` | V-MeC | steps 3–4 |
//! | [`RoamUserResponse`] | `simlab-roam-user-response-v1` | H-MeC | step 5 |
//! | [`SecurityResult`] | `simlab-roam-security-result-v1` | H-MeC | Fig 5 15, Fig 6 17 |
//! | [`PaymentOutcome`] | `simlab-roam-payment-outcome-v1` | V-MeC | Fig 6 21 |

use super::{RequestType, check_method, check_name};
use crate::bytes::{hex, unhex};
use crate::router;
use crate::wire::{Reader, WireError, enc};
use serde::{Deserialize, Serialize};

pub const CONTRACT_LABEL: &str = "simlab-roam-contract-v1";
pub const REQUEST_LABEL: &str = "simlab-roam-user-request-v1";
pub const RESPONSE_LABEL: &str = "simlab-roam-user-response-v1";
pub const RESULT_LABEL: &str = "simlab-roam-security-result-v1";
pub const OUTCOME_LABEL: &str = "simlab-roam-payment-outcome-v1";

/// The longest contract description, in bytes of UTF-8.
pub const MAX_DESCRIPTION: usize = 512;

fn field_err(field: &'static str, reason: impl Into<String>) -> WireError {
    WireError::Field {
        field,
        reason: reason.into(),
    }
}

fn name(r: &mut Reader<'_>, field: &'static str) -> Result<String, WireError> {
    let s = r.text(field)?;
    check_name(field, s).map_err(|e| field_err(field, e))?;
    Ok(s.to_string())
}

fn msisdn(r: &mut Reader<'_>) -> Result<String, WireError> {
    let s = r.text("msisdn")?;
    router::digits(s).map_err(|e| field_err("msisdn", e.to_string()))?;
    Ok(s.to_string())
}

fn request_type(r: &mut Reader<'_>) -> Result<RequestType, WireError> {
    let s = r.text("request_type")?;
    RequestType::parse(s).ok_or_else(|| field_err("request_type", format!("unknown {s:?}")))
}

fn currency(r: &mut Reader<'_>) -> Result<String, WireError> {
    let s = r.text("currency")?;
    check_currency(s).map_err(|e| field_err("currency", e))?;
    Ok(s.to_string())
}

/// ISO 4217 letters: three upper-case ASCII letters.
pub fn check_currency(c: &str) -> Result<(), String> {
    if c.len() == 3 && c.bytes().all(|b| b.is_ascii_uppercase()) {
        Ok(())
    } else {
        Err(format!("{c:?} is not a currency (three capital letters)"))
    }
}

/// What the user signs (Fig 5 6–8, Fig 6 10): the seed leaves its form open; this is the
/// proposal of SEEDS.md. The amount is in minor units of `currency`; authentication and
/// signature contracts carry 0.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Contract {
    #[serde(with = "hex16")]
    pub id: [u8; 16],
    pub cp_id: String,
    pub visited: String,
    pub home: String,
    pub msisdn: String,
    pub request_type: RequestType,
    pub amount: u64,
    pub currency: String,
    pub description: String,
    pub issued_at: u64,
    pub expires_at: u64,
}

impl Contract {
    /// Every field as the decoder would accept it.
    pub fn validate(&self) -> Result<(), WireError> {
        for (field, v) in [
            ("cp_id", &self.cp_id),
            ("visited", &self.visited),
            ("home", &self.home),
        ] {
            check_name(field, v).map_err(|e| field_err(field, e))?;
        }
        router::digits(&self.msisdn).map_err(|e| field_err("msisdn", e.to_string()))?;
        check_currency(&self.currency).map_err(|e| field_err("currency", e))?;
        if self.description.len() > MAX_DESCRIPTION {
            return Err(field_err(
                "description",
                format!("longer than {MAX_DESCRIPTION} bytes"),
            ));
        }
        if self.description.chars().any(char::is_control) {
            return Err(field_err("description", "holds control characters"));
        }
        if self.expires_at <= self.issued_at {
            return Err(field_err("expires_at", "not after issued_at"));
        }
        Ok(())
    }

    /// The bytes the user's token signs.
    pub fn encode(&self) -> Result<Vec<u8>, WireError> {
        self.validate()?;
        Ok(enc(&[
            CONTRACT_LABEL.as_bytes(),
            &self.id,
            self.cp_id.as_bytes(),
            self.visited.as_bytes(),
            self.home.as_bytes(),
            self.msisdn.as_bytes(),
            self.request_type.as_str().as_bytes(),
            &self.amount.to_be_bytes(),
            self.currency.as_bytes(),
            self.description.as_bytes(),
            &self.issued_at.to_be_bytes(),
            &self.expires_at.to_be_bytes(),
        ]))
    }

    /// Parses contract bytes strictly: `decode(b)?.encode()? == b` for every accepted `b`.
    pub fn decode(bytes: &[u8]) -> Result<Contract, WireError> {
        let mut r = Reader::new(bytes, CONTRACT_LABEL)?;
        let c = Contract {
            id: r.fixed::<16>("id")?,
            cp_id: name(&mut r, "cp_id")?,
            visited: name(&mut r, "visited")?,
            home: name(&mut r, "home")?,
            msisdn: msisdn(&mut r)?,
            request_type: request_type(&mut r)?,
            amount: r.u64("amount")?,
            currency: currency(&mut r)?,
            description: r.text("description")?.to_string(),
            issued_at: r.u64("issued_at")?,
            expires_at: r.u64("expires_at")?,
        };
        r.finish()?;
        c.validate()?;
        Ok(c)
    }

    pub fn id_hex(&self) -> String {
        hex(&self.id)
    }
}

/// Steps 3–4: V-MeC asks a partner whether it is the subscriber's home and will serve the
/// request. The nonce comes back in the response, which binds the answer to this question.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RoamUserRequest {
    pub visited: String,
    pub home: String,
    pub msisdn: String,
    pub request_type: RequestType,
    pub nonce: [u8; 16],
    pub timestamp: u64,
}

impl RoamUserRequest {
    pub fn encode(&self) -> Vec<u8> {
        enc(&[
            REQUEST_LABEL.as_bytes(),
            self.visited.as_bytes(),
            self.home.as_bytes(),
            self.msisdn.as_bytes(),
            self.request_type.as_str().as_bytes(),
            &self.nonce,
            &self.timestamp.to_be_bytes(),
        ])
    }

    pub fn decode(bytes: &[u8]) -> Result<RoamUserRequest, WireError> {
        let mut r = Reader::new(bytes, REQUEST_LABEL)?;
        let m = RoamUserRequest {
            visited: name(&mut r, "visited")?,
            home: name(&mut r, "home")?,
            msisdn: msisdn(&mut r)?,
            request_type: request_type(&mut r)?,
            nonce: r.fixed::<16>("nonce")?,
            timestamp: r.u64("timestamp")?,
        };
        r.finish()?;
        Ok(m)
    }
}

/// Step 5: the partner's answer. `payment_methods` is the extra information of a payment
/// request: which methods the subscriber has at home (names only, never card data).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RoamUserResponse {
    pub home: String,
    pub visited: String,
    pub msisdn: String,
    pub request_type: RequestType,
    pub nonce: [u8; 16],
    pub timestamp: u64,
    pub accept: bool,
    pub payment_methods: Vec<String>,
}

impl RoamUserResponse {
    pub fn encode(&self) -> Vec<u8> {
        enc(&[
            RESPONSE_LABEL.as_bytes(),
            self.home.as_bytes(),
            self.visited.as_bytes(),
            self.msisdn.as_bytes(),
            self.request_type.as_str().as_bytes(),
            &self.nonce,
            &self.timestamp.to_be_bytes(),
            &[u8::from(self.accept)],
            self.payment_methods.join(",").as_bytes(),
        ])
    }

    pub fn decode(bytes: &[u8]) -> Result<RoamUserResponse, WireError> {
        let mut r = Reader::new(bytes, RESPONSE_LABEL)?;
        let home = name(&mut r, "home")?;
        let visited = name(&mut r, "visited")?;
        let msisdn = msisdn(&mut r)?;
        let request_type = request_type(&mut r)?;
        let nonce = r.fixed::<16>("nonce")?;
        let timestamp = r.u64("timestamp")?;
        let accept = match r.fixed::<1>("accept")? {
            [0] => false,
            [1] => true,
            _ => return Err(field_err("accept", "neither 0 nor 1")),
        };
        let methods = r.text("payment_methods")?;
        let payment_methods = if methods.is_empty() {
            Vec::new()
        } else {
            methods
                .split(',')
                .map(|m| {
                    check_method(m)
                        .map(|()| m.to_string())
                        .map_err(|e| field_err("payment_methods", e))
                })
                .collect::<Result<_, _>>()?
        };
        r.finish()?;
        Ok(RoamUserResponse {
            home,
            visited,
            msisdn,
            request_type,
            nonce,
            timestamp,
            accept,
            payment_methods,
        })
    }
}

/// Whether the home server's checks passed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Success,
    Failure,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Success => "success",
            Outcome::Failure => "failure",
        }
    }
}

/// Fig 5 step 15 / Fig 6 step 17: H-MeC tells V-MeC the result, and only that. For a payment
/// it carries a single-use authorization reference bound to the amount; for a signature the
/// SHA-256 of the evidence (CMS or delegated signature) that travels beside it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SecurityResult {
    pub home: String,
    pub visited: String,
    pub contract_id: [u8; 16],
    pub outcome: Outcome,
    /// Why a failure failed (`wrong_pin`, `token_blocked`, `declined_by_user`); empty on success.
    pub reason: String,
    /// The payment authorization, all zero when there is none.
    pub authorization: [u8; 16],
    pub amount: u64,
    pub currency: String,
    /// SHA-256 of the evidence, all zero when there is none.
    pub evidence_sha256: [u8; 32],
    pub issued_at: u64,
}

impl SecurityResult {
    pub fn encode(&self) -> Vec<u8> {
        enc(&[
            RESULT_LABEL.as_bytes(),
            self.home.as_bytes(),
            self.visited.as_bytes(),
            &self.contract_id,
            self.outcome.as_str().as_bytes(),
            self.reason.as_bytes(),
            &self.authorization,
            &self.amount.to_be_bytes(),
            self.currency.as_bytes(),
            &self.evidence_sha256,
            &self.issued_at.to_be_bytes(),
        ])
    }

    pub fn decode(bytes: &[u8]) -> Result<SecurityResult, WireError> {
        let mut r = Reader::new(bytes, RESULT_LABEL)?;
        let home = name(&mut r, "home")?;
        let visited = name(&mut r, "visited")?;
        let contract_id = r.fixed::<16>("contract_id")?;
        let outcome = match r.text("outcome")? {
            "success" => Outcome::Success,
            "failure" => Outcome::Failure,
            o => return Err(field_err("outcome", format!("unknown {o:?}"))),
        };
        let reason = r.text("reason")?;
        if reason.len() > 64 || reason.chars().any(char::is_control) {
            return Err(field_err("reason", "longer than 64 bytes or not text"));
        }
        let m = SecurityResult {
            home,
            visited,
            contract_id,
            outcome,
            reason: reason.to_string(),
            authorization: r.fixed::<16>("authorization")?,
            amount: r.u64("amount")?,
            currency: currency(&mut r)?,
            evidence_sha256: r.fixed::<32>("evidence_sha256")?,
            issued_at: r.u64("issued_at")?,
        };
        r.finish()?;
        Ok(m)
    }
}

/// Fig 6 step 21: V-MeC reports the financial institution's answer home; the home server
/// keeps the account and spends the authorization (once).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PaymentOutcome {
    pub visited: String,
    pub home: String,
    pub contract_id: [u8; 16],
    pub authorization: [u8; 16],
    pub amount: u64,
    pub currency: String,
    pub approved: bool,
    /// The FI's own reference for the payment (empty when declined).
    pub fi_reference: String,
    pub issued_at: u64,
}

impl PaymentOutcome {
    pub fn encode(&self) -> Vec<u8> {
        enc(&[
            OUTCOME_LABEL.as_bytes(),
            self.visited.as_bytes(),
            self.home.as_bytes(),
            &self.contract_id,
            &self.authorization,
            &self.amount.to_be_bytes(),
            self.currency.as_bytes(),
            &[u8::from(self.approved)],
            self.fi_reference.as_bytes(),
            &self.issued_at.to_be_bytes(),
        ])
    }

    pub fn decode(bytes: &[u8]) -> Result<PaymentOutcome, WireError> {
        let mut r = Reader::new(bytes, OUTCOME_LABEL)?;
        let visited = name(&mut r, "visited")?;
        let home = name(&mut r, "home")?;
        let contract_id = r.fixed::<16>("contract_id")?;
        let authorization = r.fixed::<16>("authorization")?;
        let amount = r.u64("amount")?;
        let currency = currency(&mut r)?;
        let approved = match r.fixed::<1>("approved")? {
            [0] => false,
            [1] => true,
            _ => return Err(field_err("approved", "neither 0 nor 1")),
        };
        let fi_reference = r.text("fi_reference")?;
        if fi_reference.len() > 64 || fi_reference.chars().any(char::is_control) {
            return Err(field_err(
                "fi_reference",
                "longer than 64 bytes or not text",
            ));
        }
        let m = PaymentOutcome {
            visited,
            home,
            contract_id,
            authorization,
            amount,
            currency,
            approved,
            fi_reference: fi_reference.to_string(),
            issued_at: r.u64("issued_at")?,
        };
        r.finish()?;
        Ok(m)
    }
}

/// The JSON envelope of a signed structure.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Signed {
    /// The enc() bytes, hex.
    pub bytes: String,
    /// ECDSA P-256/SHA-256 over the bytes, DER, hex.
    pub signature: String,
}

impl Signed {
    /// The bytes and the signature, or what is wrong with the hex.
    pub fn parts(&self) -> Result<(Vec<u8>, Vec<u8>), String> {
        let bytes = unhex(&self.bytes).ok_or("bytes: not hex")?;
        let signature = unhex(&self.signature).ok_or("signature: not hex")?;
        if bytes.len() > 64 * 1024 || signature.len() > 80 {
            return Err("bytes or signature too long".into());
        }
        Ok((bytes, signature))
    }
}

/// serde for 16-byte ids as lower-case hex.
pub mod hex16 {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(b: &[u8; 16], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&crate::bytes::hex(b))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<[u8; 16], D::Error> {
        let s = String::deserialize(d)?;
        parse(&s).ok_or_else(|| serde::de::Error::custom("expected 32 hex digits"))
    }

    pub fn parse(s: &str) -> Option<[u8; 16]> {
        crate::bytes::unhex(s)?.try_into().ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn contract() -> Contract {
        Contract {
            id: [0x11; 16],
            cp_id: "cp-oslo".into(),
            visited: "mec-se".into(),
            home: "mec-no".into(),
            msisdn: "+4791234567".into(),
            request_type: RequestType::Payment,
            amount: 12_900,
            currency: "SEK".into(),
            description: "Concert ticket, Stockholm".into(),
            issued_at: 1_800_000_000,
            expires_at: 1_800_000_300,
        }
    }

    #[test]
    fn contract_bytes_are_the_proposal() {
        let c = contract();
        let b = c.encode().unwrap();
        let mut expected = Vec::new();
        for f in [
            &b"simlab-roam-contract-v1"[..],
            &[0x11; 16],
            b"cp-oslo",
            b"mec-se",
            b"mec-no",
            b"+4791234567",
            b"payment",
            &12_900u64.to_be_bytes(),
            b"SEK",
            b"Concert ticket, Stockholm",
            &1_800_000_000u64.to_be_bytes(),
            &1_800_000_300u64.to_be_bytes(),
        ] {
            expected.extend_from_slice(&(f.len() as u16).to_be_bytes());
            expected.extend_from_slice(f);
        }
        assert_eq!(b, expected);
        assert_eq!(Contract::decode(&b).unwrap(), c);
        for n in 0..b.len() {
            assert!(Contract::decode(&b[..n]).is_err());
        }
        let mut plus_one = c.clone();
        plus_one.amount += 1;
        assert_ne!(plus_one.encode().unwrap(), b);
    }

    #[test]
    fn contract_refusals() {
        let mut c = contract();
        c.currency = "sek".into();
        assert!(c.encode().is_err());
        let mut c = contract();
        c.expires_at = c.issued_at;
        assert!(c.encode().is_err());
        let mut c = contract();
        c.description = "a\nb".into();
        assert!(c.encode().is_err());
        let mut c = contract();
        c.msisdn = "4791234567".into();
        assert!(c.encode().is_err());
        let json = serde_json::to_string(&contract()).unwrap();
        assert!(json.contains("\"id\":\"11111111111111111111111111111111\""));
        assert!(json.contains("\"request_type\":\"payment\""));
    }

    #[test]
    fn roam_user_messages_round_trip() {
        let q = RoamUserRequest {
            visited: "mec-se".into(),
            home: "mec-no".into(),
            msisdn: "+4791234567".into(),
            request_type: RequestType::E2eSignature,
            nonce: [7; 16],
            timestamp: 1_800_000_000,
        };
        let b = q.encode();
        assert_eq!(RoamUserRequest::decode(&b).unwrap(), q);
        assert!(RoamUserResponse::decode(&b).is_err());
        let a = RoamUserResponse {
            home: "mec-no".into(),
            visited: "mec-se".into(),
            msisdn: q.msisdn.clone(),
            request_type: RequestType::Payment,
            nonce: q.nonce,
            timestamp: 1_800_000_001,
            accept: true,
            payment_methods: vec!["card".into(), "wallet".into()],
        };
        let b = a.encode();
        assert_eq!(RoamUserResponse::decode(&b).unwrap(), a);
        let none = RoamUserResponse {
            accept: false,
            payment_methods: vec![],
            ..a
        };
        assert_eq!(RoamUserResponse::decode(&none.encode()).unwrap(), none);
    }

    #[test]
    fn results_round_trip() {
        let r = SecurityResult {
            home: "mec-no".into(),
            visited: "mec-se".into(),
            contract_id: [1; 16],
            outcome: Outcome::Failure,
            reason: "wrong_pin".into(),
            authorization: [0; 16],
            amount: 0,
            currency: "NOK".into(),
            evidence_sha256: [0; 32],
            issued_at: 5,
        };
        assert_eq!(SecurityResult::decode(&r.encode()).unwrap(), r);
        let o = PaymentOutcome {
            visited: "mec-se".into(),
            home: "mec-no".into(),
            contract_id: [1; 16],
            authorization: [2; 16],
            amount: 100,
            currency: "SEK".into(),
            approved: true,
            fi_reference: "fi-1".into(),
            issued_at: 9,
        };
        assert_eq!(PaymentOutcome::decode(&o.encode()).unwrap(), o);
        let env = Signed {
            bytes: "00".into(),
            signature: "zz".into(),
        };
        assert!(env.parts().is_err());
    }
}
