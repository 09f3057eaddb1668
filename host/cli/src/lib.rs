//! The `simlab` command line over the host crates: simlab-card (card access), simlab-modem,
//! simlab-emulate and simlab-services (the network roles). A library only so that `main.rs`
//! stays a one-liner; the library items live in those crates.

pub mod cli;
