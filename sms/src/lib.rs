//! SMS PDU codec: 3GPP TS 23.040 (SMS-SUBMIT, SMS-DELIVER,
//! SMS-STATUS-REPORT) and TS 23.038 (GSM 7-bit, UCS2, 8-bit).
//!
//! Modems speak SMS in PDU mode (TS 27.005, `AT+CMGF=0`): each message
//! crosses the serial line as hex, usually prefixed by the service-centre
//! address. This crate turns those octets into typed values and back,
//! splits long texts into concatenated parts for `AT+CMGS`, and reassembles
//! incoming parts. It does no I/O, and no input makes it panic: every
//! malformed PDU is an [`Error`] naming the field at fault.
//!
//! ```
//! use simlab_sms::{Address, SubmitOptions, decode_hex, encode_text};
//!
//! let to = Address::parse("+27820001111")?;
//! let parts = encode_text(&to, "Hello World!", &SubmitOptions::default())?;
//! assert_eq!(parts[0].to_hex(), "0001000B917228001011F100000CC8329BFD065DDF72363904");
//! assert_eq!(parts[0].cmgs_length(), 24);
//!
//! let decoded = decode_hex(&parts[0].to_hex(), true)?;
//! assert_eq!(decoded.pdu.text().as_deref(), Some("Hello World!"));
//! # Ok::<(), simlab_sms::Error>(())
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod address;
mod cursor;
mod dcs;
mod deliver;
mod error;
mod first_octet;
pub mod gsm7;
pub mod hex;
mod pdu;
mod reassembly;
mod semi_octet;
pub mod septets;
mod split;
mod status_report;
mod submit;
mod timestamp;
pub mod ucs2;
mod udh;
mod user_data;
mod validity;

pub use address::{
    Address, MAX_ALPHANUMERIC_SEPTETS, MAX_DIGITS, TOA_ALPHANUMERIC, TOA_INTERNATIONAL,
    TOA_UNKNOWN, TypeOfNumber,
};
pub use cursor::{MAX_PDU_LEN, MAX_SCA_LEN, MAX_TPDU_LEN};
pub use dcs::{Alphabet, Dcs, IndicationType, MessageClass, MessageWaiting};
pub use deliver::Deliver;
pub use error::Error;
pub use gsm7::encodable_in_gsm7;
pub use pdu::{Decoded, EncodedPdu, MessageType, Pdu, decode, decode_hex};
pub use reassembly::{Fragment, Incomplete, Message, Push, Reassembler, ReassemblyKey};
pub use split::{
    MAX_PARTS, Plan, SubmitOptions, TextEncoding, encode_binary, encode_text, encode_text_single,
    plan,
};
pub use status_report::{Status, StatusKind, StatusReport};
pub use submit::Submit;
pub use timestamp::Timestamp;
pub use udh::{
    ConcatReference, Concatenation, IEI_CONCAT_8, IEI_CONCAT_16, IEI_PORTS_8, IEI_PORTS_16,
    InformationElement, PortAddressing, UserDataHeader,
};
pub use user_data::{MAX_USER_DATA_OCTETS, MAX_USER_DATA_SEPTETS, Payload, UserData};
pub use validity::{EnhancedFormat, EnhancedValidity, RelativeValidity, ValidityPeriod};
