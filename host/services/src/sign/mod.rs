//! Seed 002: prepare a transaction on a PC, approve and sign it on the phone's token.
//!
//! - [`service`]: server 410 — the web site the PC's browser uses (log in, prepare, approve,
//!   wait, status: steps 201–205, 231–238), the push to the phone (221) and the phone's API
//!   (fetch the request, post the signature or a refusal: 211–215), with the transaction
//!   states of [`TxState`];
//! - [`store`]: the directory (Fig 3) and the transactions, SQLite or PostgreSQL;
//! - [`phone`]: the mobile's process 260 (`simlab sign approve|watch`);
//! - the request bytes themselves are `simlab_applet::token::request`: the card decodes them
//!   too, so server, phone and token read one format with one decoder.
//!
//! The push SMS carries only the transaction id and the correlator ([`push_text`]); the phone
//! fetches the request, checks the server's countersignature against the certificate it pinned,
//! and shows what it decoded from the signed bytes, never from the SMS.

pub mod phone;
pub mod service;
pub mod store;
mod web;

use crate::bytes::{hex, unhex};
pub use simlab_applet::token::request::{RequestError, SignRequest};

/// How long a phone has to sign once the PC approved (the seed's 120 s wait, step 222).
pub const REQUEST_TTL: u64 = 120;
/// How long a web login lasts.
pub const SESSION_TTL: u64 = 30 * 60;
/// The most bytes of a transaction's full content (the PC's form).
pub const CONTENT_MAX: usize = 16 * 1024;

/// A transaction's life.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TxState {
    /// Filled in on the PC, not yet approved.
    Prepared,
    /// Approved on the PC, pushed to the phone, waiting for its signature.
    AwaitingSignature,
    /// Signed, and the signature verified with the directory's key (237).
    Completed,
    /// The person said no on the phone.
    Declined,
    /// The signature did not verify, or the token refused (PIN blocked).
    Failed,
    /// No answer before the deadline.
    Expired,
    /// Abandoned on the PC.
    Aborted,
}

impl TxState {
    pub fn as_str(self) -> &'static str {
        match self {
            TxState::Prepared => "prepared",
            TxState::AwaitingSignature => "awaiting_signature",
            TxState::Completed => "completed",
            TxState::Declined => "declined",
            TxState::Failed => "failed",
            TxState::Expired => "expired",
            TxState::Aborted => "aborted",
        }
    }

    pub fn parse(s: &str) -> Option<TxState> {
        Some(match s {
            "prepared" => TxState::Prepared,
            "awaiting_signature" => TxState::AwaitingSignature,
            "completed" => TxState::Completed,
            "declined" => TxState::Declined,
            "failed" => TxState::Failed,
            "expired" => TxState::Expired,
            "aborted" => TxState::Aborted,
            _ => return None,
        })
    }

    /// Whether nothing will change it any more.
    pub fn is_final(self) -> bool {
        !matches!(self, TxState::Prepared | TxState::AwaitingSignature)
    }
}

/// Unix seconds now.
pub fn now() -> u64 {
    crate::pki::now()
}

/// A user id as the request carries it: printable ASCII without spaces, 1 to 64 bytes.
pub fn check_user_id(user: &str) -> Result<(), String> {
    let ok = (1..=simlab_applet::token::request::ID_MAX).contains(&user.len())
        && user.bytes().all(|b| (0x21..=0x7E).contains(&b));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{user:?} is not a user id (1 to 64 printable ASCII characters, no spaces)"
        ))
    }
}

/// `42.50` in `EUR` → 4250 minor units (the currency's ISO 4217 decimals, no more).
pub fn parse_amount(text: &str, currency: &str) -> Result<u64, String> {
    let bad = || format!("{text:?} is not an amount in {currency} (e.g. 42.50)");
    let exp = crate::otp::currency_exponent(currency) as usize;
    let (whole, frac) = text.trim().split_once('.').unwrap_or((text.trim(), ""));
    if whole.is_empty()
        || whole.len() > 12
        || frac.len() > exp
        || !whole.bytes().all(|b| b.is_ascii_digit())
        || !frac.bytes().all(|b| b.is_ascii_digit())
        || (text.contains('.') && frac.is_empty())
    {
        return Err(bad());
    }
    let padded = format!("{whole}{frac:0<exp$}");
    let minor: u64 = padded.parse().map_err(|_| bad())?;
    if minor == 0 {
        return Err(format!("{text:?}: the amount must be more than zero"));
    }
    Ok(minor)
}

/// A currency code: three capital letters.
pub fn check_currency(c: &str) -> Result<(), String> {
    if c.len() == 3 && c.bytes().all(|b| b.is_ascii_uppercase()) {
        Ok(())
    } else {
        Err(format!("{c:?} is not an ISO 4217 currency code (e.g. EUR)"))
    }
}

/// The push SMS (221): the transaction id and the correlator, nothing the phone would have to
/// trust — it fetches and verifies the request itself.
pub fn push_text(tx: &[u8; 16], correlator: &str) -> String {
    format!(
        "simlab-sign tx {} code {correlator}: open simlab sign to review and sign",
        hex(tx)
    )
}

/// The transaction id and correlator of a push SMS, or `None` for any other message.
pub fn parse_push(text: &str) -> Option<([u8; 16], String)> {
    let rest = text.strip_prefix("simlab-sign tx ")?;
    let (tx, rest) = rest.split_once(' ')?;
    let code = rest.strip_prefix("code ")?.get(..7)?;
    let tx: [u8; 16] = unhex(tx)?.try_into().ok()?;
    Some((tx, code.to_string()))
}

/// An argon2id verifier (PHC string, random salt) of a web password.
pub fn password_verifier(password: &str) -> Result<String, String> {
    use argon2::PasswordHasher;
    argon2::Argon2::default()
        .hash_password(password.as_bytes())
        .map(|h| h.to_string())
        .map_err(|e| format!("hashing the password: {e}"))
}

/// Whether `password` matches the PHC verifier (constant time inside argon2).
pub fn password_matches(password: &str, verifier: &str) -> bool {
    use argon2::PasswordVerifier;
    argon2::Argon2::default()
        .verify_password(password.as_bytes(), verifier)
        .is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn amounts_are_read_in_the_currencys_decimals() {
        assert_eq!(parse_amount("42.50", "EUR"), Ok(4250));
        assert_eq!(parse_amount("42.5", "EUR"), Ok(4250));
        assert_eq!(parse_amount("42", "EUR"), Ok(4200));
        assert_eq!(parse_amount("1000", "JPY"), Ok(1000));
        for bad in [
            "",
            "42.",
            ".5",
            "42.505",
            "-1",
            "4 2",
            "1e3",
            "0",
            "0.00",
            "9999999999999",
        ] {
            assert!(parse_amount(bad, "EUR").is_err(), "{bad:?}");
        }
        assert!(parse_amount("1.5", "JPY").is_err());
    }

    #[test]
    fn the_push_names_the_transaction_and_code_only() {
        let text = push_text(&[0xAB; 16], "K7Q-3XZ");
        assert_eq!(parse_push(&text), Some(([0xAB; 16], "K7Q-3XZ".to_string())));
        assert_eq!(parse_push("Your code is 123456"), None);
        assert_eq!(parse_push("simlab-sign tx zz code K7Q-3XZ"), None);
    }

    #[test]
    fn passwords_verify_against_their_verifier_only() {
        let v = password_verifier("correct horse").unwrap();
        assert!(v.starts_with("$argon2id$"));
        assert!(password_matches("correct horse", &v));
        assert!(!password_matches("correct horsE", &v));
        assert!(!password_matches("correct horse", "not a verifier"));
    }
}
