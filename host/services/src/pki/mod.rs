//! Seed 000: a temporary public-key infrastructure bootstrapped from GSM/UMTS authentication.
//!
//! The roles, each a module, each also a `simlab` subcommand:
//!
//! | module | role | messages |
//! |---|---|---|
//! | [`auc_server`] | HLR/AuC: subscriber keys, triplets and quintets | 220/230 |
//! | [`gateway`] | CA and billing: certificates for subscribers, CDRs for sellers | 210–260, 910/920 |
//! | [`ms`] | mobile station: SIM + token, enrolls for a certificate | 210–260 |
//! | [`seller`] | sells, checks certificates and signatures, bills in batches | 610–640, 910/920 |
//! | [`buyer`] | the mobile station buying: checks and signs invoices | 610–640 |
//!
//! and the formats they share: [`messages`] (the JSON bodies), [`restrictions`] (the DER the
//! token MACs and the certificate carries), [`invoice`] (the bytes the token signs), [`x509`]
//! (certificates) on top of [`der`]. `docs/pki-messages.md` describes all of it for people.

pub mod auc_server;
pub mod buyer;
pub mod der;
pub mod gateway;
pub mod invoice;
pub mod messages;
pub mod ms;
pub mod restrictions;
pub mod seller;
pub mod verify;
pub mod x509;

/// Seconds since 1970, from the system clock.
pub fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
