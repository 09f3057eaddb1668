//! simlab's card access: the transports that reach cards, the SIM commands spoken over them,
//! the token client, provisioning, APDU traces, card profiles, and the expected authentication
//! vectors that `--check`, provisioning and the network roles compare against.

pub mod auc;
pub mod error;
pub mod hex;
pub mod pem;
pub mod profile;
pub mod provision;
pub mod random;
pub mod script;
pub mod sim;
pub mod token;
pub mod trace;
pub mod transport;
