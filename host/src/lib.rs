//! simlab, the host side: transports that reach cards, the SIM commands spoken over them, the
//! AuC computations that check them, and the `simlab` command line.

pub mod auc;
pub mod cli;
pub mod db;
pub mod emulate;
pub mod error;
pub mod hex;
pub mod http;
pub mod modem;
pub mod otp;
pub mod pki;
pub mod profile;
pub mod provision;
pub mod random;
pub mod sim;
pub mod token;
pub mod trace;
pub mod transport;
