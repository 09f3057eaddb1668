//! simlab's network roles: seed 000's PKI (AuC, gateway, seller, mobile station, buyer), the
//! OTP service, and the HTTP stack they share. Cards are reached only through simlab-card's
//! token client.

pub mod db;
pub mod http;
pub mod otp;
pub mod pki;
pub mod roaming;
pub mod router;
pub mod sql;
