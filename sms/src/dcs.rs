//! TP-Data-Coding-Scheme (TS 23.038 section 4).
//!
//! The DCS octet decides how TP-UDL is counted (septets or octets) and how
//! the user data reads, so it is kept as the raw octet — re-encoding a
//! decoded PDU must not lose message-waiting or auto-deletion bits — and
//! interpreted on demand.

/// How the user data is coded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Alphabet {
    /// GSM 7-bit default alphabet; TP-UDL counts septets.
    Gsm7,
    /// 8-bit data; TP-UDL counts octets.
    EightBit,
    /// UCS2 (UTF-16BE); TP-UDL counts octets.
    Ucs2,
}

impl Alphabet {
    /// Stable name for JSON and logs.
    pub const fn as_str(self) -> &'static str {
        match self {
            Alphabet::Gsm7 => "gsm7",
            Alphabet::EightBit => "8bit",
            Alphabet::Ucs2 => "ucs2",
        }
    }

    const fn bits(self) -> u8 {
        match self {
            Alphabet::Gsm7 => 0b00,
            Alphabet::EightBit => 0b01,
            Alphabet::Ucs2 => 0b10,
        }
    }
}

/// Where the receiving handset should put the message (TS 23.038 4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MessageClass {
    /// Shown immediately, not stored ("flash SMS").
    Class0,
    /// Mobile-equipment specific.
    Class1,
    /// SIM specific: stored on the SIM.
    Class2,
    /// Terminal-equipment specific.
    Class3,
}

impl MessageClass {
    /// The class number, 0–3.
    pub const fn number(self) -> u8 {
        match self {
            MessageClass::Class0 => 0,
            MessageClass::Class1 => 1,
            MessageClass::Class2 => 2,
            MessageClass::Class3 => 3,
        }
    }

    const fn from_bits(bits: u8) -> Self {
        match bits & 0b11 {
            0 => MessageClass::Class0,
            1 => MessageClass::Class1,
            2 => MessageClass::Class2,
            _ => MessageClass::Class3,
        }
    }
}

/// What a message-waiting indication is about (TS 23.038 4, groups 1100–1110).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum IndicationType {
    /// Voicemail.
    Voicemail,
    /// Fax.
    Fax,
    /// Electronic mail.
    Email,
    /// Anything else.
    Other,
}

/// A message-waiting indication carried in the DCS.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct MessageWaiting {
    /// Whether the handset should store the message or may discard it
    /// after updating the indicator.
    pub store: bool,
    /// Whether the indication is being set (true) or cleared.
    pub active: bool,
    /// What is waiting.
    pub kind: IndicationType,
}

/// A TP-DCS octet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Dcs(u8);

const GROUP_MASK: u8 = 0xF0;
const GENERAL_GROUP_MASK: u8 = 0xC0;
const GENERAL: u8 = 0x00;
const AUTO_DELETION: u8 = 0x40;
const COMPRESSED: u8 = 0x20;
const CLASS_PRESENT: u8 = 0x10;
const ALPHABET_SHIFT: u8 = 2;
const MWI_DISCARD: u8 = 0xC0;
const MWI_STORE_GSM7: u8 = 0xD0;
const MWI_STORE_UCS2: u8 = 0xE0;
const MWI_ACTIVE: u8 = 0x08;
const DATA_CODING_CLASS: u8 = 0xF0;
const DATA_CODING_8BIT: u8 = 0x04;

impl Dcs {
    /// GSM 7-bit, no class: the DCS of an ordinary text message.
    pub const GSM7: Dcs = Dcs(0x00);
    /// 8-bit data, no class.
    pub const EIGHT_BIT: Dcs = Dcs(0x04);
    /// UCS2, no class.
    pub const UCS2: Dcs = Dcs(0x08);

    /// Wraps a DCS octet as found in a PDU.
    pub const fn from_octet(octet: u8) -> Self {
        Dcs(octet)
    }

    /// The octet as written in a PDU.
    pub const fn octet(self) -> u8 {
        self.0
    }

    /// A general-group DCS for `alphabet`, with a message class if given.
    pub const fn new(alphabet: Alphabet, class: Option<MessageClass>) -> Self {
        let base = alphabet.bits() << ALPHABET_SHIFT;
        match class {
            None => Dcs(base),
            Some(c) => Dcs(base | CLASS_PRESENT | c.number()),
        }
    }

    const fn is_general(self) -> bool {
        self.0 & GENERAL_GROUP_MASK == GENERAL || self.0 & GENERAL_GROUP_MASK == AUTO_DELETION
    }

    /// The alphabet of the user data. Reserved codings read as GSM-7, as
    /// TS 23.038 4 tells receivers to assume.
    pub const fn alphabet(self) -> Alphabet {
        if self.is_general() {
            return match (self.0 >> ALPHABET_SHIFT) & 0b11 {
                0b01 => Alphabet::EightBit,
                0b10 => Alphabet::Ucs2,
                _ => Alphabet::Gsm7,
            };
        }
        match self.0 & GROUP_MASK {
            MWI_STORE_UCS2 => Alphabet::Ucs2,
            DATA_CODING_CLASS if self.0 & DATA_CODING_8BIT != 0 => Alphabet::EightBit,
            _ => Alphabet::Gsm7,
        }
    }

    /// The message class, if the DCS carries one.
    pub const fn message_class(self) -> Option<MessageClass> {
        if self.is_general() {
            if self.0 & CLASS_PRESENT != 0 {
                return Some(MessageClass::from_bits(self.0));
            }
            return None;
        }
        if self.0 & GROUP_MASK == DATA_CODING_CLASS {
            return Some(MessageClass::from_bits(self.0));
        }
        None
    }

    /// True if the user data is compressed (TS 23.042). This crate does not
    /// decompress; such user data is delivered as octets.
    pub const fn is_compressed(self) -> bool {
        self.is_general() && self.0 & COMPRESSED != 0
    }

    /// True for the "marked for automatic deletion" group.
    pub const fn auto_deletion(self) -> bool {
        self.0 & GENERAL_GROUP_MASK == AUTO_DELETION
    }

    /// The message-waiting indication, for DCS groups 1100–1110.
    pub const fn message_waiting(self) -> Option<MessageWaiting> {
        let store = match self.0 & GROUP_MASK {
            MWI_DISCARD => false,
            MWI_STORE_GSM7 | MWI_STORE_UCS2 => true,
            _ => return None,
        };
        let kind = match self.0 & 0b11 {
            0 => IndicationType::Voicemail,
            1 => IndicationType::Fax,
            2 => IndicationType::Email,
            _ => IndicationType::Other,
        };
        Some(MessageWaiting {
            store,
            active: self.0 & MWI_ACTIVE != 0,
            kind,
        })
    }

    /// True if TP-UDL counts septets: GSM-7 that is not compressed
    /// (TS 23.040 9.2.3.16).
    pub const fn counts_septets(self) -> bool {
        matches!(self.alphabet(), Alphabet::Gsm7) && !self.is_compressed()
    }

    /// The alphabet the payload must be in for this DCS: compressed data is
    /// opaque octets whatever the nominal alphabet.
    pub(crate) const fn payload_alphabet(self) -> Alphabet {
        if self.is_compressed() {
            Alphabet::EightBit
        } else {
            self.alphabet()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn general_group() {
        assert_eq!(Dcs::GSM7.alphabet(), Alphabet::Gsm7);
        assert_eq!(Dcs::EIGHT_BIT.alphabet(), Alphabet::EightBit);
        assert_eq!(Dcs::UCS2.alphabet(), Alphabet::Ucs2);
        assert_eq!(Dcs::from_octet(0x0C).alphabet(), Alphabet::Gsm7); // reserved
        assert_eq!(Dcs::from_octet(0x00).message_class(), None);
        assert_eq!(
            Dcs::from_octet(0x18).message_class(),
            Some(MessageClass::Class0)
        );
        assert_eq!(Dcs::from_octet(0x18).alphabet(), Alphabet::Ucs2);
        assert!(Dcs::from_octet(0x20).is_compressed());
        assert!(!Dcs::from_octet(0x20).counts_septets());
        assert!(Dcs::from_octet(0x40).auto_deletion());
    }

    #[test]
    fn data_coding_group() {
        // F6: 8-bit, class 2 (SIM data download).
        let dcs = Dcs::from_octet(0xF6);
        assert_eq!(dcs.alphabet(), Alphabet::EightBit);
        assert_eq!(dcs.message_class(), Some(MessageClass::Class2));
        // F0: GSM-7 flash.
        assert_eq!(Dcs::from_octet(0xF0).alphabet(), Alphabet::Gsm7);
        assert_eq!(
            Dcs::from_octet(0xF0).message_class(),
            Some(MessageClass::Class0)
        );
    }

    #[test]
    fn message_waiting() {
        let mwi = Dcs::from_octet(0xC8).message_waiting().unwrap();
        assert!(!mwi.store && mwi.active);
        assert_eq!(mwi.kind, IndicationType::Voicemail);
        assert_eq!(Dcs::from_octet(0xE1).alphabet(), Alphabet::Ucs2);
        assert_eq!(Dcs::from_octet(0x08).message_waiting(), None);
        assert_eq!(Dcs::from_octet(0x90).alphabet(), Alphabet::Gsm7); // reserved group
    }

    #[test]
    fn constructor() {
        assert_eq!(Dcs::new(Alphabet::Ucs2, None), Dcs::UCS2);
        assert_eq!(
            Dcs::new(Alphabet::Gsm7, Some(MessageClass::Class0)).octet(),
            0x10
        );
        assert_eq!(
            Dcs::new(Alphabet::EightBit, Some(MessageClass::Class2)).octet(),
            0x16
        );
    }
}
