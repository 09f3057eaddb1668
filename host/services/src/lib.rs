//! simlab's network roles: seed 000's PKI (AuC, gateway, seller, mobile station, buyer), the
//! OTP service (seed 004), roaming m-commerce (seed 001), signing on the phone's token (seed
//! 002), transfers between operators by SMS (seed 003), and what they share: the HTTP stack,
//! the SQL layer, enc() ([`wire`]) and [`bytes`]. Cards are reached only through simlab-card's
//! token client.

pub mod bytes;
pub mod db;
pub mod http;
pub mod otp;
pub mod pki;
pub mod roaming;
pub mod router;
pub mod sign;
pub mod sql;
pub mod transfer;
pub mod wire;
