//! Addresses: TP-OA, TP-DA and TP-RA (TS 23.040 9.1.2.5) and the
//! service-centre address that modems put in front of the TPDU
//! (TS 24.011 8.2.5.1, TS 27.005 3.1).
//!
//! The two encodings differ in one way that trips up many decoders: a TP
//! address's length octet counts *digits* (semi-octets), the service-centre
//! length octet counts *octets*, type-of-address included.

use core::fmt;
use core::str::FromStr;

use crate::cursor::{PduBuf, Reader};
use crate::{Error, gsm7, semi_octet, septets};

/// Type-of-address octet of an international number (`+` prefix), NPI ISDN.
pub const TOA_INTERNATIONAL: u8 = 0x91;
/// Type-of-address octet of a number without a `+`: TON unknown, NPI ISDN,
/// which lets the network apply its own national dialling rules.
pub const TOA_UNKNOWN: u8 = 0x81;
/// Type-of-address octet of an alphanumeric sender name (GSM-7 packed).
pub const TOA_ALPHANUMERIC: u8 = 0xD0;

/// Digits an address value holds: 10 octets of semi-octets.
pub const MAX_DIGITS: usize = 20;
/// Septets an alphanumeric address holds: 10 octets of packed GSM-7.
pub const MAX_ALPHANUMERIC_SEPTETS: usize = 11;
/// Octets after the service-centre length octet: type of address plus 10.
const MAX_SCA_OCTETS: usize = 11;

const TON_SHIFT: u8 = 4;
const TON_MASK: u8 = 0x07;
const NPI_MASK: u8 = 0x0F;

/// Type of number, bits 6–4 of the type-of-address octet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TypeOfNumber {
    /// The network interprets the number by its dialling plan.
    Unknown,
    /// Starts with the country code; shown with a `+`.
    International,
    /// National number.
    National,
    /// Network-specific number (e.g. a service code).
    NetworkSpecific,
    /// Subscriber number.
    Subscriber,
    /// A sender name in GSM-7, not a number.
    Alphanumeric,
    /// Abbreviated number.
    Abbreviated,
    /// Reserved for extension.
    Reserved,
}

impl TypeOfNumber {
    const fn from_toa(toa: u8) -> Self {
        match (toa >> TON_SHIFT) & TON_MASK {
            0 => TypeOfNumber::Unknown,
            1 => TypeOfNumber::International,
            2 => TypeOfNumber::National,
            3 => TypeOfNumber::NetworkSpecific,
            4 => TypeOfNumber::Subscriber,
            5 => TypeOfNumber::Alphanumeric,
            6 => TypeOfNumber::Abbreviated,
            _ => TypeOfNumber::Reserved,
        }
    }
}

/// A phone number or alphanumeric sender name together with its
/// type-of-address octet.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Address {
    toa: u8,
    /// Digits (`0-9 * # a b c`) without `+`, or the decoded name.
    value: String,
}

impl Address {
    /// Parses a number as a user types it: `+` then digits for an
    /// international number (TOA 0x91), digits alone otherwise (TOA 0x81).
    /// Spaces and hyphens are ignored; `*` and `#` are kept for service
    /// codes. Letters are rejected rather than silently dropped — a name
    /// must be sent with [`Address::alphanumeric`].
    pub fn parse(input: &str) -> Result<Self, Error> {
        let mut digits = String::with_capacity(input.len());
        let mut international = false;
        for (position, character) in input.chars().enumerate() {
            match character {
                c if c.is_whitespace() || c == '-' => {}
                '+' if !international && digits.is_empty() => international = true,
                '0'..='9' | '*' | '#' => digits.push(character),
                _ => {
                    return Err(Error::InvalidAddressCharacter {
                        character,
                        position,
                    });
                }
            }
        }
        let toa = if international {
            TOA_INTERNATIONAL
        } else {
            TOA_UNKNOWN
        };
        Address::with_toa(toa, &digits)
    }

    /// An alphanumeric address (TOA 0xD0), as bulk senders use for their
    /// name. At most 11 GSM-7 septets fit.
    pub fn alphanumeric(name: &str) -> Result<Self, Error> {
        Address::with_toa(TOA_ALPHANUMERIC, name)
    }

    /// An address with an explicit type-of-address octet, for the cases the
    /// two constructors above do not cover (national numbers, other
    /// numbering plans). The octet is written as given; TS 23.040 wants
    /// bit 7 set.
    pub fn with_toa(toa: u8, value: &str) -> Result<Self, Error> {
        if value.is_empty() {
            return Err(Error::EmptyAddress);
        }
        if TypeOfNumber::from_toa(toa) == TypeOfNumber::Alphanumeric {
            let length = gsm7::encode(value)?.len();
            if length > MAX_ALPHANUMERIC_SEPTETS {
                return Err(Error::AddressTooLong {
                    length,
                    max: MAX_ALPHANUMERIC_SEPTETS,
                });
            }
        } else {
            for (position, character) in value.chars().enumerate() {
                if semi_octet::char_nibble(character).is_none() {
                    return Err(Error::InvalidAddressCharacter {
                        character,
                        position,
                    });
                }
            }
            let length = value.chars().count();
            if length > MAX_DIGITS {
                return Err(Error::AddressTooLong {
                    length,
                    max: MAX_DIGITS,
                });
            }
        }
        Ok(Address {
            toa,
            value: value.to_owned(),
        })
    }

    /// The type-of-address octet.
    pub const fn toa(&self) -> u8 {
        self.toa
    }

    /// Type of number from the type-of-address octet.
    pub const fn type_of_number(&self) -> TypeOfNumber {
        TypeOfNumber::from_toa(self.toa)
    }

    /// Numbering-plan identification, bits 3–0 (1 = ISDN/E.164).
    pub const fn numbering_plan(&self) -> u8 {
        self.toa & NPI_MASK
    }

    /// True for a sender name rather than a number.
    pub fn is_alphanumeric(&self) -> bool {
        self.type_of_number() == TypeOfNumber::Alphanumeric
    }

    /// The digits without `+`, or the name of an alphanumeric address.
    pub fn value(&self) -> &str {
        &self.value
    }

    /// Reads a TP-OA/DA/RA, whose length octet counts semi-octets.
    pub(crate) fn decode_tp(r: &mut Reader<'_>, field: &'static str) -> Result<Self, Error> {
        let length = usize::from(r.u8(field)?);
        if length > MAX_DIGITS {
            return Err(Error::LengthOutOfRange {
                field,
                value: length,
                max: MAX_DIGITS,
            });
        }
        let toa = r.u8(field)?;
        let octets = r.take(length.div_ceil(2), field)?;
        let value = if TypeOfNumber::from_toa(toa) == TypeOfNumber::Alphanumeric {
            // The length counts semi-octets of packed septets; the spare
            // bits of the last one are not a character.
            gsm7::decode(&septets::unpack(octets, 0, length * 4 / 7))
        } else {
            semi_octet::decode_digits(octets, length, field)?
        };
        Ok(Address { toa, value })
    }

    /// Reads the service-centre prefix, whose length octet counts octets;
    /// `00` means "use the SMSC configured in the modem" (`AT+CSCA`).
    pub(crate) fn decode_sca(r: &mut Reader<'_>) -> Result<Option<Self>, Error> {
        const FIELD: &str = "service centre address";
        let length = usize::from(r.u8(FIELD)?);
        if length == 0 {
            return Ok(None);
        }
        if length > MAX_SCA_OCTETS {
            return Err(Error::LengthOutOfRange {
                field: FIELD,
                value: length,
                max: MAX_SCA_OCTETS,
            });
        }
        let toa = r.u8(FIELD)?;
        let octets = r.take(length - 1, FIELD)?;
        let value = if TypeOfNumber::from_toa(toa) == TypeOfNumber::Alphanumeric {
            // Only the octet count is known, so seven spare bits would read
            // as a final '@'; TS 23.038 6.1.2.3.1 has senders fill them
            // with CR instead, which is dropped here.
            let mut septets = septets::unpack(octets, 0, octets.len() * 8 / 7);
            if octets.len() * 8 % 7 == 0 && septets.last() == Some(&gsm7::CR) {
                septets.pop();
            }
            gsm7::decode(&septets)
        } else {
            let odd = octets.last().is_some_and(|&b| b >> 4 == semi_octet::FILLER);
            semi_octet::decode_digits(octets, octets.len() * 2 - usize::from(odd), FIELD)?
        };
        Ok(Some(Address { toa, value }))
    }

    /// The address value's octets: semi-octets or packed GSM-7.
    /// `pad_with_cr` fills seven spare bits with CR, for the
    /// service-centre address whose length counts octets, not septets.
    fn encode_value(&self, out: &mut PduBuf, pad_with_cr: bool) -> Result<(), Error> {
        if self.is_alphanumeric() {
            let septets = gsm7::encode(&self.value)?;
            let spare_septet = septets.len() * 7 % 8 == 1;
            let mut packer = septets::Packer::new(out, 0);
            for &septet in &septets {
                packer.push(septet)?;
            }
            if pad_with_cr && spare_septet {
                packer.push(gsm7::CR)?;
            }
            packer.finish()
        } else {
            semi_octet::encode_digits(&self.value, |b| out.push(b))
        }
    }

    /// Semi-octets the value occupies, which is what a TP address's length
    /// octet holds.
    fn semi_octets(&self) -> Result<usize, Error> {
        if self.is_alphanumeric() {
            Ok((gsm7::encode(&self.value)?.len() * 7).div_ceil(4))
        } else {
            Ok(self.value.chars().count())
        }
    }

    pub(crate) fn encode_tp(&self, out: &mut PduBuf) -> Result<(), Error> {
        let length = self.semi_octets()?;
        if length > MAX_DIGITS {
            return Err(Error::AddressTooLong {
                length,
                max: MAX_DIGITS,
            });
        }
        out.push(u8::try_from(length).unwrap_or(u8::MAX))?;
        out.push(self.toa)?;
        self.encode_value(out, false)
    }

    pub(crate) fn encode_sca(sca: Option<&Address>, out: &mut PduBuf) -> Result<(), Error> {
        let Some(sca) = sca else {
            return out.push(0);
        };
        let length = sca.semi_octets()?;
        if length > MAX_DIGITS {
            return Err(Error::AddressTooLong {
                length,
                max: MAX_DIGITS,
            });
        }
        let octets = if sca.is_alphanumeric() {
            (length * 4).div_ceil(8)
        } else {
            length.div_ceil(2)
        };
        out.push(u8::try_from(1 + octets).unwrap_or(u8::MAX))?;
        out.push(sca.toa)?;
        sca.encode_value(out, true)
    }
}

impl fmt::Display for Address {
    /// International numbers with `+`, everything else as is.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.type_of_number() == TypeOfNumber::International {
            f.write_str("+")?;
        }
        f.write_str(&self.value)
    }
}

impl FromStr for Address {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        Address::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_user_input() {
        let a = Address::parse("+27 82-000 1111").unwrap();
        assert_eq!(a.toa(), TOA_INTERNATIONAL);
        assert_eq!(a.value(), "27820001111");
        assert_eq!(a.to_string(), "+27820001111");
        let b: Address = "0820001111".parse().unwrap();
        assert_eq!(b.toa(), TOA_UNKNOWN);
        assert_eq!(b.to_string(), "0820001111");
        assert_eq!(Address::parse("*100#").unwrap().value(), "*100#");
    }

    #[test]
    fn parse_rejects_letters_and_junk() {
        assert_eq!(
            Address::parse("+4917O123"),
            Err(Error::InvalidAddressCharacter {
                character: 'O',
                position: 5
            })
        );
        assert_eq!(
            Address::parse("12+3"),
            Err(Error::InvalidAddressCharacter {
                character: '+',
                position: 2
            })
        );
        assert_eq!(Address::parse(" + "), Err(Error::EmptyAddress));
        assert_eq!(
            Address::parse("123456789012345678901"),
            Err(Error::AddressTooLong {
                length: 21,
                max: 20
            })
        );
    }

    #[test]
    fn alphanumeric_limits() {
        assert!(Address::alphanumeric("simlab-Test").is_ok());
        assert_eq!(
            Address::alphanumeric("simlab-Tests"),
            Err(Error::AddressTooLong {
                length: 12,
                max: 11
            })
        );
        // Extension characters take two septets.
        assert!(Address::alphanumeric("€€€€€€").is_err());
        assert!(matches!(
            Address::alphanumeric("Ωç"),
            Err(Error::NotGsm7 {
                character: 'ç', ..
            })
        ));
    }

    #[test]
    fn tp_round_trip() {
        for a in [
            Address::parse("+27820001111").unwrap(),
            Address::parse("1234").unwrap(),
            Address::alphanumeric("etisalat").unwrap(),
            Address::alphanumeric("from_Orange").unwrap(),
        ] {
            let mut buf = PduBuf::new();
            a.encode_tp(&mut buf).unwrap();
            let mut r = Reader::new(buf.as_slice());
            assert_eq!(Address::decode_tp(&mut r, "a").unwrap(), a);
            assert!(r.finish().is_ok());
        }
    }

    #[test]
    fn sca_round_trip() {
        let mut buf = PduBuf::new();
        Address::encode_sca(Some(&Address::parse("+27381000015").unwrap()), &mut buf).unwrap();
        assert_eq!(
            buf.as_slice(),
            [0x07, 0x91, 0x72, 0x83, 0x01, 0x00, 0x10, 0xF5]
        );
        let mut r = Reader::new(buf.as_slice());
        assert_eq!(
            Address::decode_sca(&mut r).unwrap().unwrap().to_string(),
            "+27381000015"
        );
        let mut r = Reader::new(&[0x00]);
        assert_eq!(Address::decode_sca(&mut r).unwrap(), None);
    }

    #[test]
    fn alphanumeric_sca_pads_with_cr() {
        // Seven septets leave seven spare bits in seven octets.
        let sca = Address::alphanumeric("simlab7").unwrap();
        let mut buf = PduBuf::new();
        Address::encode_sca(Some(&sca), &mut buf).unwrap();
        assert_eq!(buf.len(), 1 + 1 + 7);
        let last = buf.as_slice().last().copied().unwrap();
        assert_eq!(last >> 1, gsm7::CR);
        let mut r = Reader::new(buf.as_slice());
        assert_eq!(Address::decode_sca(&mut r).unwrap(), Some(sca));
    }

    #[test]
    fn sca_length_is_checked() {
        let mut r = Reader::new(&[0x0C, 0x91]);
        assert_eq!(
            Address::decode_sca(&mut r),
            Err(Error::LengthOutOfRange {
                field: "service centre address",
                value: 12,
                max: 11
            })
        );
        let mut r = Reader::new(&[0x07, 0x91, 0x72]);
        assert!(matches!(
            Address::decode_sca(&mut r),
            Err(Error::Truncated {
                needed: 6,
                available: 1,
                ..
            })
        ));
    }
}
