//! The one error type of the crate.

use core::fmt;

use crate::dcs::Alphabet;

/// Why a PDU could not be decoded or encoded.
///
/// Decoding never panics: every way a PDU from a modem can be malformed maps
/// to one of these variants, named after the field that was wrong so that a
/// log line says where to look.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Error {
    /// The input ended inside `field`, which needs `needed` octets where only
    /// `available` remain. Modems truncate PDUs when their buffers overflow,
    /// so this is the most common decode error.
    Truncated {
        /// The TS 23.040 field being read.
        field: &'static str,
        /// Octets the field needs.
        needed: usize,
        /// Octets left in the input.
        available: usize,
    },
    /// Octets remain after the last field that the PDU's own length fields
    /// account for; usually a sign that the `with_sca` flag is wrong.
    TrailingBytes {
        /// How many octets were left over.
        count: usize,
    },
    /// TP-MTI `11` is reserved (TS 23.040 9.2.3.1).
    ReservedMessageType,
    /// A length octet exceeds the maximum TS 23.040 allows for `field`.
    LengthOutOfRange {
        /// The field whose length is wrong.
        field: &'static str,
        /// The length found.
        value: usize,
        /// The largest allowed.
        max: usize,
    },
    /// A semi-octet holds a value that is not allowed in `field`
    /// (a non-decimal digit in a timestamp, a filler in the middle of a number).
    InvalidSemiOctet {
        /// The field being decoded.
        field: &'static str,
        /// The offending semi-octet (0x0–0xF).
        value: u8,
    },
    /// The user-data header claims more septets than TP-UDL announces for
    /// the whole user data.
    HeaderExceedsUserData {
        /// Septets the header (with fill bits) occupies.
        header_septets: usize,
        /// TP-UDL.
        user_data_length: usize,
    },
    /// A hex string contains a non-hex character at `position` (in chars).
    InvalidHex {
        /// Index of the offending character.
        position: usize,
    },
    /// A hex string has an odd number of digits.
    OddHexLength {
        /// Number of hex digits found.
        digits: usize,
    },
    /// An address string contains a character that cannot be part of a phone
    /// number (letters must be sent as an alphanumeric address instead).
    InvalidAddressCharacter {
        /// The character.
        character: char,
        /// Its index (in chars) in the string given.
        position: usize,
    },
    /// An address string has no digits.
    EmptyAddress,
    /// An address has more digits, or an alphanumeric address more septets,
    /// than the 10 octets of an address value can hold.
    AddressTooLong {
        /// Digits or septets given.
        length: usize,
        /// The maximum.
        max: usize,
    },
    /// A character has no encoding in the GSM 7-bit default alphabet or its
    /// extension table.
    NotGsm7 {
        /// The character.
        character: char,
        /// Its index (in chars) in the text.
        position: usize,
    },
    /// User data (header included) does not fit in one TPDU.
    UserDataTooLong {
        /// Its length in the unit of TP-UDL (septets or octets).
        length: usize,
        /// The limit in the same unit.
        max: usize,
    },
    /// A text needs more concatenated parts than allowed.
    TooLong {
        /// Parts needed.
        parts: usize,
        /// Parts allowed.
        max: usize,
    },
    /// The DCS announces one alphabet and the payload is in another, so the
    /// TP-UDL unit would be wrong.
    AlphabetMismatch {
        /// What the DCS implies.
        dcs: Alphabet,
        /// What the payload is.
        payload: Alphabet,
    },
    /// A validity period is longer than the 63 weeks the relative format
    /// can express.
    ValidityPeriodTooLong {
        /// The requested duration in seconds.
        seconds: u64,
    },
    /// A timestamp field is out of range.
    InvalidTimestamp {
        /// Which field.
        field: &'static str,
        /// The value given.
        value: i16,
    },
    /// An option passed to the encoder cannot be honoured.
    InvalidOption {
        /// Which option.
        option: &'static str,
    },
    /// A concatenated part arrived twice with different contents.
    ConflictingPart {
        /// Its sequence number.
        sequence: u8,
    },
    /// An encoded PDU would exceed the largest PDU this crate can represent.
    PduTooLong {
        /// The maximum in octets.
        max: usize,
    },
}

impl Error {
    /// A stable snake_case name of the variant, for JSON output and fixtures.
    pub fn kind(&self) -> &'static str {
        match self {
            Error::Truncated { .. } => "truncated",
            Error::TrailingBytes { .. } => "trailing_bytes",
            Error::ReservedMessageType => "reserved_message_type",
            Error::LengthOutOfRange { .. } => "length_out_of_range",
            Error::InvalidSemiOctet { .. } => "invalid_semi_octet",
            Error::HeaderExceedsUserData { .. } => "header_exceeds_user_data",
            Error::InvalidHex { .. } => "invalid_hex",
            Error::OddHexLength { .. } => "odd_hex_length",
            Error::InvalidAddressCharacter { .. } => "invalid_address_character",
            Error::EmptyAddress => "empty_address",
            Error::AddressTooLong { .. } => "address_too_long",
            Error::NotGsm7 { .. } => "not_gsm7",
            Error::UserDataTooLong { .. } => "user_data_too_long",
            Error::TooLong { .. } => "too_long",
            Error::AlphabetMismatch { .. } => "alphabet_mismatch",
            Error::ValidityPeriodTooLong { .. } => "validity_period_too_long",
            Error::InvalidTimestamp { .. } => "invalid_timestamp",
            Error::InvalidOption { .. } => "invalid_option",
            Error::ConflictingPart { .. } => "conflicting_part",
            Error::PduTooLong { .. } => "pdu_too_long",
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Truncated {
                field,
                needed,
                available,
            } => write!(
                f,
                "PDU truncated in {field}: needs {needed} octet(s), {available} available"
            ),
            Error::TrailingBytes { count } => {
                write!(f, "{count} octet(s) after the end of the PDU")
            }
            Error::ReservedMessageType => {
                f.write_str("reserved message type indicator (TP-MTI 11)")
            }
            Error::LengthOutOfRange { field, value, max } => {
                write!(f, "{field} length {value} exceeds the maximum of {max}")
            }
            Error::InvalidSemiOctet { field, value } => {
                write!(f, "invalid semi-octet {value:X} in {field}")
            }
            Error::HeaderExceedsUserData {
                header_septets,
                user_data_length,
            } => write!(
                f,
                "user data header needs {header_septets} septets but TP-UDL is {user_data_length}"
            ),
            Error::InvalidHex { position } => {
                write!(f, "invalid hex character at position {position}")
            }
            Error::OddHexLength { digits } => write!(f, "odd number of hex digits ({digits})"),
            Error::InvalidAddressCharacter {
                character,
                position,
            } => write!(
                f,
                "{character:?} at position {position} is not allowed in a phone number \
                 (use an alphanumeric address for names)"
            ),
            Error::EmptyAddress => f.write_str("address has no digits"),
            Error::AddressTooLong { length, max } => {
                write!(
                    f,
                    "address has {length} digits or characters, at most {max} fit"
                )
            }
            Error::NotGsm7 {
                character,
                position,
            } => write!(
                f,
                "{character:?} at position {position} is not in the GSM 7-bit alphabet"
            ),
            Error::UserDataTooLong { length, max } => {
                write!(f, "user data length {length} exceeds the maximum of {max}")
            }
            Error::TooLong { parts, max } => {
                write!(f, "text needs {parts} parts, at most {max} allowed")
            }
            Error::AlphabetMismatch { dcs, payload } => write!(
                f,
                "DCS says {} but the payload is {}",
                dcs.as_str(),
                payload.as_str()
            ),
            Error::ValidityPeriodTooLong { seconds } => write!(
                f,
                "validity period of {seconds} s exceeds the relative maximum of 63 weeks"
            ),
            Error::InvalidTimestamp { field, value } => {
                write!(f, "timestamp {field} {value} out of range")
            }
            Error::InvalidOption { option } => write!(f, "invalid option: {option}"),
            Error::ConflictingPart { sequence } => write!(
                f,
                "concatenated part {sequence} received twice with different contents"
            ),
            Error::PduTooLong { max } => write!(f, "PDU longer than {max} octets"),
        }
    }
}

impl std::error::Error for Error {}
