//! Seed 003: transfers between subscribers of two operators, ordered and accepted by SMS,
//! debit and credit together or not at all.
//!
//! - [`messages`]: M1 (order), M3 (offer), M4 (answer) — the service SMS bodies, 8-bit data
//!   with TP-PID 0xC1, enc("simlab-svc-v1", …), signed by the token (or, in a lab mode, with
//!   the service PIN);
//! - [`store`]: one operator's subscriptions, peers, accounts, tickets, agents, settlement,
//!   two-phase-commit log and SMS outbox;
//! - [`service`]: the operator — SMS service node, service manager, channel 121 to the peer
//!   (M2, the answer 145, PREPARE / COMMIT / ABORT keyed by T-REF) and the worker that drives
//!   every agent and recovers after a crash.
//!
//! The phones' side (`simlab transfer send|ticket|inbox|accept|reject|postpone`) builds M1 and
//! M4 with [`messages`] and the token client; it knows nothing else of the operators.

pub mod messages;
pub mod service;
pub mod store;

pub use messages::{Answer, Auth, Goods, Message, Offer, Order, Response, Service, TRef};
