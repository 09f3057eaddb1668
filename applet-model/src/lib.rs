//! The simlab card model.
//!
//! A GSM SIM / USIM as a pure function from command APDUs to response APDUs: the file system,
//! secret codes and A3/A8 of a real card, with no I/O and no allocator. The same code answers
//! in-process for tests, behind pcscd as a vpcd virtual card, and on a microcontroller; the
//! host never sees more of it than APDUs.
//!
//! Layout: [`apdu`] and [`status`] are ISO 7816-4; [`fs`], [`chv`] and [`card`] are the card,
//! whose dispatcher (`dispatch`) owns logical channels and GET RESPONSE for its applications:
//! the file system, the [`token`] and the GlobalPlatform card manager (`card_manager`);
//! [`algo`] holds the algorithms the card and the AuC share; [`encoding`] the identity formats
//! both ends must agree on.
#![no_std]
#![forbid(unsafe_code)]

pub mod algo;
pub mod apdu;
pub mod auth;
pub mod card;
mod card_manager;
pub mod card_type;
pub mod checksum;
pub mod chv;
mod dispatch;
pub mod encoding;
pub mod fs;
pub mod state;
pub mod status;
mod tlv;
pub mod token;

pub use apdu::{ApduError, Case, Command, Response};
pub use card::{Card, Config, Keys};
pub use status::Status;
