//! The restrictions a subscriber puts on a certificate (seed 000, message 250): a limit per
//! purchase, a number of purchases per period, and how long the key is valid. They protect the
//! subscriber if the phone is lost: a thief can spend at most this much, this often, this long.
//!
//! One encoding serves three purposes, so they cannot disagree: the DER below is the
//! `restrictions` field of M2 (the token MACs exactly these bytes), the value of the
//! certificate extension 1.3.6.1.4.1.55555.1.1, and what sellers and the gateway check
//! invoices against.
//!
//! ```text
//! SimlabRestrictions ::= SEQUENCE {
//!     perPurchaseLimit  INTEGER (1..1000000000000),  -- minor units of currency
//!     currency          PrintableString (SIZE (3)),  -- ISO 4217, upper case
//!     maxPurchases      INTEGER (1..1000000),        -- per period
//!     periodSeconds     INTEGER (60..31622400),
//!     validitySeconds   INTEGER (60..31622400)       -- certificate lifetime
//! }
//! ```

use const_oid::ObjectIdentifier;
use der::asn1::PrintableStringRef;
use der::{Decode, Encode, Sequence};
use serde::{Deserialize, Serialize};
use std::fmt;

/// The extension's OID, 1.3.6.1.4.1.55555.1.1, in a private-enterprise arc. 55555 is a
/// placeholder enterprise number, not one registered to simlab: a deployment must put its own.
pub const EXTENSION_OID: ObjectIdentifier = ObjectIdentifier::new_unwrap(EXTENSION_OID_TEXT);
/// The same OID in dotted form, as `openssl x509 -text` prints it.
pub const EXTENSION_OID_TEXT: &str = "1.3.6.1.4.1.55555.1.1";

/// The largest per-purchase limit: 10^12 minor units.
pub const MAX_LIMIT: u64 = 1_000_000_000_000;
/// The most purchases per period.
pub const MAX_PURCHASES: u32 = 1_000_000;
/// The shortest period and validity: a minute.
pub const MIN_SECONDS: u64 = 60;
/// The longest period and validity: 366 days. A temporary PKI is temporary.
pub const MAX_SECONDS: u64 = 366 * 86_400;

/// A certificate's restrictions, in JSON as in DER (amounts in minor units).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Restrictions {
    /// The most one purchase may cost, in minor units (cents).
    pub per_purchase_limit: u64,
    /// ISO 4217 code of the currency every invoice must be in.
    pub currency: String,
    /// The most purchases in one period.
    pub max_purchases: u32,
    /// The period length. Periods are counted from the certificate's notBefore, so every party
    /// computes the same period for an invoice.
    pub period_seconds: u64,
    /// The certificate's lifetime: notAfter = notBefore + validity.
    pub validity_seconds: u64,
}

impl Default for Restrictions {
    /// What `simlab ms enroll` asks for unless told otherwise: 50.00 EUR per purchase, 10
    /// purchases a day, for a week.
    fn default() -> Self {
        Restrictions {
            per_purchase_limit: 5_000,
            currency: "EUR".into(),
            max_purchases: 10,
            period_seconds: 86_400,
            validity_seconds: 7 * 86_400,
        }
    }
}

/// Why restrictions are not acceptable.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RestrictionError(pub String);

impl fmt::Display for RestrictionError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for RestrictionError {}

fn bad<T>(reason: impl Into<String>) -> Result<T, RestrictionError> {
    Err(RestrictionError(reason.into()))
}

/// The ASN.1 SEQUENCE itself; `der` derives its strict DER reader and writer. INTEGERs are
/// read as u64 (so a negative or non-minimal one is refused by `der`), ranges by `validate`.
#[derive(Sequence)]
struct SimlabRestrictions<'a> {
    per_purchase_limit: u64,
    currency: PrintableStringRef<'a>,
    max_purchases: u64,
    period_seconds: u64,
    validity_seconds: u64,
}

impl Restrictions {
    /// Checks every field against the ranges of the ASN.1 definition.
    pub fn validate(&self) -> Result<(), RestrictionError> {
        if !(1..=MAX_LIMIT).contains(&self.per_purchase_limit) {
            return bad(format!(
                "per_purchase_limit must be 1 to {MAX_LIMIT} minor units"
            ));
        }
        if self.currency.len() != 3 || !self.currency.bytes().all(|b| b.is_ascii_uppercase()) {
            return bad("currency must be three upper-case letters (ISO 4217)");
        }
        if !(1..=MAX_PURCHASES).contains(&self.max_purchases) {
            return bad(format!("max_purchases must be 1 to {MAX_PURCHASES}"));
        }
        for (name, v) in [
            ("period_seconds", self.period_seconds),
            ("validity_seconds", self.validity_seconds),
        ] {
            if !(MIN_SECONDS..=MAX_SECONDS).contains(&v) {
                return bad(format!("{name} must be {MIN_SECONDS} to {MAX_SECONDS}"));
            }
        }
        Ok(())
    }

    /// The DER encoding (the bytes M2 and the certificate carry), or why these restrictions
    /// have none (a currency that is not a PrintableString).
    pub fn try_to_der(&self) -> Result<Vec<u8>, RestrictionError> {
        let currency = PrintableStringRef::new(&self.currency)
            .map_err(|e| RestrictionError(format!("currency: not a PrintableString: {e}")))?;
        SimlabRestrictions {
            per_purchase_limit: self.per_purchase_limit,
            currency,
            max_purchases: u64::from(self.max_purchases),
            period_seconds: self.period_seconds,
            validity_seconds: self.validity_seconds,
        }
        .to_der()
        .map_err(|e| RestrictionError(format!("SimlabRestrictions: {e}")))
    }

    /// The DER encoding (the bytes M2 and the certificate carry). Restrictions whose currency
    /// is not a PrintableString have no encoding and give empty bytes, which every reader
    /// refuses; [`validate`](Self::validate) refuses them first wherever they come in.
    pub fn to_der(&self) -> Vec<u8> {
        self.try_to_der().unwrap_or_default()
    }

    /// Parses and validates the DER encoding; re-encoding gives the same bytes.
    pub fn from_der(bytes: &[u8]) -> Result<Self, RestrictionError> {
        let r = SimlabRestrictions::from_der(bytes)
            .map_err(|e| RestrictionError(format!("SimlabRestrictions: {e}")))?;
        let parsed = Restrictions {
            per_purchase_limit: r.per_purchase_limit,
            currency: r.currency.as_str().to_string(),
            max_purchases: u32::try_from(r.max_purchases)
                .map_err(|_| RestrictionError("maxPurchases out of range".into()))?,
            period_seconds: r.period_seconds,
            validity_seconds: r.validity_seconds,
        };
        parsed.validate()?;
        Ok(parsed)
    }

    /// The number of the period an invoice issued at `at` falls in, counting from the
    /// certificate's `not_before` (period 0). `None` before `not_before`.
    pub fn period_index(&self, not_before: u64, at: u64) -> Option<u64> {
        at.checked_sub(not_before)
            .map(|d| d / self.period_seconds.max(1))
    }

    /// For people: "at most 50.00 EUR per purchase, 10 purchases per 1 d, valid 7 d".
    pub fn describe(&self) -> String {
        format!(
            "at most {} per purchase, {} purchase{} per {}, valid {}",
            money(self.per_purchase_limit, &self.currency),
            self.max_purchases,
            if self.max_purchases == 1 { "" } else { "s" },
            duration(self.period_seconds),
            duration(self.validity_seconds)
        )
    }
}

/// Minor units as `12.34 EUR` (two decimals, as for most ISO 4217 currencies).
pub fn money(minor: u64, currency: &str) -> String {
    format!("{}.{:02} {currency}", minor / 100, minor % 100)
}

/// Seconds as `7 d`, `3 h`, `90 s`.
pub fn duration(seconds: u64) -> String {
    match seconds {
        s if s % 86_400 == 0 => format!("{} d", s / 86_400),
        s if s % 3600 == 0 => format!("{} h", s / 3600),
        s if s % 60 == 0 => format!("{} min", s / 60),
        s => format!("{s} s"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn der_round_trip_and_exact_bytes() {
        let r = Restrictions::default();
        let der = r.to_der();
        assert_eq!(
            der,
            [
                0x30, 0x16, 0x02, 0x02, 0x13, 0x88, 0x13, 0x03, b'E', b'U', b'R', 0x02, 0x01, 0x0A,
                0x02, 0x03, 0x01, 0x51, 0x80, 0x02, 0x03, 0x09, 0x3A, 0x80
            ]
        );
        assert_eq!(Restrictions::from_der(&der).unwrap(), r);
        assert_eq!(
            EXTENSION_OID.as_bytes(),
            [0x2B, 6, 1, 4, 1, 0x83, 0xB2, 0x03, 1, 1]
        );
        assert!(der.len() <= simlab_applet::token::bootstrap::RESTRICTIONS_MAX);
    }

    #[test]
    fn out_of_range_is_refused() {
        let ok = Restrictions::default();
        let cases = [
            Restrictions {
                per_purchase_limit: 0,
                ..ok.clone()
            },
            Restrictions {
                currency: "eur".into(),
                ..ok.clone()
            },
            Restrictions {
                max_purchases: 0,
                ..ok.clone()
            },
            Restrictions {
                period_seconds: 59,
                ..ok.clone()
            },
            Restrictions {
                validity_seconds: MAX_SECONDS + 1,
                ..ok.clone()
            },
        ];
        for c in cases {
            assert!(c.validate().is_err(), "{c:?}");
            assert!(Restrictions::from_der(&c.to_der()).is_err(), "{c:?}");
        }
        let mut trailing = ok.to_der();
        trailing.push(0);
        assert!(Restrictions::from_der(&trailing).is_err());
    }

    #[test]
    fn periods_and_text() {
        let r = Restrictions::default();
        assert_eq!(r.period_index(1000, 999), None);
        assert_eq!(r.period_index(1000, 1000), Some(0));
        assert_eq!(r.period_index(1000, 1000 + 86_400), Some(1));
        assert_eq!(
            r.describe(),
            "at most 50.00 EUR per purchase, 10 purchases per 1 d, valid 7 d"
        );
    }
}
