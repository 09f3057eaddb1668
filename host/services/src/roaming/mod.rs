//! Seed 001: roaming m-commerce. A subscriber abroad buys from a content provider (CP) attached
//! to the visited operator's MeC server (V-MeC). V-MeC does not know the subscriber: it finds
//! the home server (H-MeC) from the number through its partner table ([`crate::router`]), asks
//! it with signed roamUser messages, and sends the contract and then the user there. H-MeC —
//! the only one holding the user's keys and payment data — authenticates the user, signs on the
//! user's behalf or has the user's token sign, authorises the payment, and tells V-MeC only the
//! result.
//!
//! | module | what |
//! |---|---|
//! | [`wire`] | enc(): the length-prefixed bytes every signed structure is |
//! | [`messages`] | contract, roamUserRequest/Response, roamSecurityResult, payment outcome |
//! | [`keys`] | the server's signing key (its peer TLS key) and checks against a partner's certificate |
//! | [`cms`] | the token's signature wrapped in CMS SignedData (`openssl cms -verify`) |
//! | [`store`] | partners, subscribers, content providers, contracts, authorizations (SQLite) |
//! | [`server`] | `simlab mec serve`: the home and visited roles' HTTP API |
//! | [`stubs`] | the content provider and financial institution stubs |
//! | [`shop`] | the phone's side: checkout, redirect, show the contract, PIN, token signature |
//!
//! docs/roaming.md describes the messages, their bytes and the API for people.

pub mod cms;
pub mod keys;
pub mod messages;
pub mod server;
pub mod shop;
pub mod store;
pub mod stubs;

use std::fmt;

/// What V-MeC asks the home server to do for a subscriber (the seed's request types).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RequestType {
    /// Pay the CP through the home operator (Fig 6).
    Payment,
    /// Prove that the user is the subscriber (Fig 5, authentication result).
    Authentication,
    /// Delegated signing: H-MeC authenticates the user, then signs with a key it holds.
    DigitalSignature,
    /// End-to-end signing: the user's token signs; H-MeC wraps it in CMS.
    E2eSignature,
    /// Subscribe to a new service (answered like authentication).
    NewService,
}

impl RequestType {
    pub const ALL: [RequestType; 5] = [
        RequestType::Payment,
        RequestType::Authentication,
        RequestType::DigitalSignature,
        RequestType::E2eSignature,
        RequestType::NewService,
    ];

    /// The snake_case spelling used in JSON, the CLI and the signed bytes.
    pub fn as_str(self) -> &'static str {
        match self {
            RequestType::Payment => "payment",
            RequestType::Authentication => "authentication",
            RequestType::DigitalSignature => "digital_signature",
            RequestType::E2eSignature => "e2e_signature",
            RequestType::NewService => "new_service",
        }
    }

    pub fn parse(s: &str) -> Option<RequestType> {
        RequestType::ALL.into_iter().find(|t| t.as_str() == s)
    }
}

impl fmt::Display for RequestType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A list of request types as the store and the CLI spell it: `payment,authentication`.
pub fn parse_request_types(s: &str) -> Result<Vec<RequestType>, String> {
    let mut out = Vec::new();
    for part in s.split(',').filter(|p| !p.is_empty()) {
        let t = RequestType::parse(part).ok_or_else(|| {
            format!(
                "{part:?} is not a request type (one of {})",
                RequestType::ALL.map(|t| t.as_str()).join(", ")
            )
        })?;
        if !out.contains(&t) {
            out.push(t);
        }
    }
    Ok(out)
}

/// Joins request types with commas.
pub fn join_request_types(types: &[RequestType]) -> String {
    types
        .iter()
        .map(|t| t.as_str())
        .collect::<Vec<_>>()
        .join(",")
}

/// A payment method's name: `card`, `wallet`, `bank`, … lower-case letters, digits and `_`,
/// 1 to 32 of them. The seed leaves the set open; both sides only compare names.
pub fn check_method(m: &str) -> Result<(), String> {
    if (1..=32).contains(&m.len())
        && m.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
    {
        Ok(())
    } else {
        Err(format!(
            "{m:?} is not a payment method name (1-32 of a-z, 0-9, _)"
        ))
    }
}

/// Parses `card,wallet` into checked, de-duplicated names (order kept).
pub fn parse_methods(s: &str) -> Result<Vec<String>, String> {
    let mut out: Vec<String> = Vec::new();
    for m in s.split(',').filter(|p| !p.is_empty()) {
        check_method(m)?;
        if !out.iter().any(|x| x == m) {
            out.push(m.to_string());
        }
    }
    Ok(out)
}

/// Fig 6 steps 8–9: the methods both the user's home operator and the CP accept, in the user's
/// order of preference.
pub fn common_methods(user: &[String], cp: &[String]) -> Vec<String> {
    user.iter().filter(|m| cp.contains(m)).cloned().collect()
}

/// A name in the partner table, a CP id, a server's own name: 1 to 64 of `A-Za-z0-9._-`.
pub fn check_name(what: &str, name: &str) -> Result<(), String> {
    if (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
    {
        Ok(())
    } else {
        Err(format!("{what} {name:?}: 1-64 of A-Z a-z 0-9 . _ -"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_lists() {
        assert_eq!(
            parse_request_types("payment,e2e_signature,payment").unwrap(),
            [RequestType::Payment, RequestType::E2eSignature]
        );
        assert!(parse_request_types("pay").is_err());
        assert_eq!(
            join_request_types(&RequestType::ALL),
            "payment,authentication,digital_signature,e2e_signature,new_service"
        );
        assert_eq!(
            parse_methods("card,wallet,card").unwrap(),
            ["card", "wallet"]
        );
        assert!(parse_methods("Card").is_err());
        let user = parse_methods("card,wallet").unwrap();
        assert_eq!(common_methods(&user, &["card".into()]), ["card"]);
        assert!(common_methods(&user, &["bank".into()]).is_empty());
        assert!(check_name("partner", "mec-no.1").is_ok());
        assert!(check_name("partner", "").is_err());
        assert!(check_name("partner", "a b").is_err());
    }
}
