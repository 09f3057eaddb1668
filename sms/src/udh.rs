//! User-data header (TS 23.040 9.2.3.24): information elements in front of
//! the message text, announced by TP-UDHI.
//!
//! Only the elements this toolkit acts on are typed; every other element is
//! kept verbatim so that decoding and re-encoding never loses one.

use crate::Error;
use crate::cursor::{PduBuf, Reader};

/// Concatenated short messages, 8-bit reference (9.2.3.24.1).
pub const IEI_CONCAT_8: u8 = 0x00;
/// Application port addressing, 8-bit ports (9.2.3.24.3).
pub const IEI_PORTS_8: u8 = 0x04;
/// Application port addressing, 16-bit ports (9.2.3.24.4).
pub const IEI_PORTS_16: u8 = 0x05;
/// Concatenated short messages, 16-bit reference (9.2.3.24.8).
pub const IEI_CONCAT_16: u8 = 0x08;

/// Data lengths TS 23.040 gives each typed element.
const CONCAT_8_LEN: u8 = 3;
const CONCAT_16_LEN: u8 = 4;
const PORTS_8_LEN: u8 = 2;
const PORTS_16_LEN: u8 = 4;

/// Octets an information element's identifier and length take.
const IE_OVERHEAD: usize = 2;

/// The reference shared by all parts of one concatenated message.
///
/// The width is part of the identity: an 8-bit reference 5 and a 16-bit
/// reference 5 belong to different messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ConcatReference {
    /// IE 00.
    Bits8(u8),
    /// IE 08.
    Bits16(u16),
}

impl ConcatReference {
    /// The reference number whatever its width.
    pub const fn value(self) -> u16 {
        match self {
            ConcatReference::Bits8(r) => r as u16,
            ConcatReference::Bits16(r) => r,
        }
    }

    /// 8 or 16.
    pub const fn width(self) -> u8 {
        match self {
            ConcatReference::Bits8(_) => 8,
            ConcatReference::Bits16(_) => 16,
        }
    }

    /// Octets of the whole information element, identifier and length included.
    pub const fn element_len(self) -> usize {
        IE_OVERHEAD
            + match self {
                ConcatReference::Bits8(_) => CONCAT_8_LEN as usize,
                ConcatReference::Bits16(_) => CONCAT_16_LEN as usize,
            }
    }
}

/// One part's place in a concatenated message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Concatenation {
    /// Shared by every part of the message.
    pub reference: ConcatReference,
    /// Number of parts, 1–255.
    pub total: u8,
    /// This part's number, 1-based.
    pub sequence: u8,
}

impl Concatenation {
    /// TS 23.040 tells receivers to ignore the element when the total is
    /// zero or the sequence is zero or beyond the total.
    pub const fn is_valid(&self) -> bool {
        self.total != 0 && self.sequence != 0 && self.sequence <= self.total
    }

    pub(crate) fn write(&self, out: &mut impl FnMut(u8) -> Result<(), Error>) -> Result<(), Error> {
        match self.reference {
            ConcatReference::Bits8(r) => {
                for b in [IEI_CONCAT_8, CONCAT_8_LEN, r, self.total, self.sequence] {
                    out(b)?;
                }
            }
            ConcatReference::Bits16(r) => {
                let [hi, lo] = r.to_be_bytes();
                for b in [
                    IEI_CONCAT_16,
                    CONCAT_16_LEN,
                    hi,
                    lo,
                    self.total,
                    self.sequence,
                ] {
                    out(b)?;
                }
            }
        }
        Ok(())
    }
}

/// Application ports, which route a message to an application (WAP push,
/// vCard, SIM toolkit) instead of the inbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PortAddressing {
    /// IE 04.
    Bits8 {
        /// Destination port.
        destination: u8,
        /// Originator port.
        originator: u8,
    },
    /// IE 05.
    Bits16 {
        /// Destination port.
        destination: u16,
        /// Originator port.
        originator: u16,
    },
}

impl PortAddressing {
    /// Octets of the whole information element.
    pub const fn element_len(self) -> usize {
        IE_OVERHEAD
            + match self {
                PortAddressing::Bits8 { .. } => PORTS_8_LEN as usize,
                PortAddressing::Bits16 { .. } => PORTS_16_LEN as usize,
            }
    }

    pub(crate) fn write(&self, out: &mut impl FnMut(u8) -> Result<(), Error>) -> Result<(), Error> {
        match *self {
            PortAddressing::Bits8 {
                destination,
                originator,
            } => {
                for b in [IEI_PORTS_8, PORTS_8_LEN, destination, originator] {
                    out(b)?;
                }
            }
            PortAddressing::Bits16 {
                destination,
                originator,
            } => {
                let [d1, d0] = destination.to_be_bytes();
                let [o1, o0] = originator.to_be_bytes();
                for b in [IEI_PORTS_16, PORTS_16_LEN, d1, d0, o1, o0] {
                    out(b)?;
                }
            }
        }
        Ok(())
    }
}

/// One information element.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum InformationElement {
    /// IE 00 or 08 with the length TS 23.040 defines.
    Concatenation(Concatenation),
    /// IE 04 or 05 with the length TS 23.040 defines.
    PortAddressing(PortAddressing),
    /// Anything else — including a known identifier with a wrong length —
    /// kept as it came.
    Other {
        /// Information-element identifier.
        id: u8,
        /// Its data.
        data: Vec<u8>,
    },
}

impl InformationElement {
    fn decode(id: u8, data: &[u8]) -> Self {
        match (id, data) {
            (IEI_CONCAT_8, &[reference, total, sequence]) => {
                InformationElement::Concatenation(Concatenation {
                    reference: ConcatReference::Bits8(reference),
                    total,
                    sequence,
                })
            }
            (IEI_CONCAT_16, &[hi, lo, total, sequence]) => {
                InformationElement::Concatenation(Concatenation {
                    reference: ConcatReference::Bits16(u16::from_be_bytes([hi, lo])),
                    total,
                    sequence,
                })
            }
            (IEI_PORTS_8, &[destination, originator]) => {
                InformationElement::PortAddressing(PortAddressing::Bits8 {
                    destination,
                    originator,
                })
            }
            (IEI_PORTS_16, &[d1, d0, o1, o0]) => {
                InformationElement::PortAddressing(PortAddressing::Bits16 {
                    destination: u16::from_be_bytes([d1, d0]),
                    originator: u16::from_be_bytes([o1, o0]),
                })
            }
            _ => InformationElement::Other {
                id,
                data: data.to_vec(),
            },
        }
    }

    /// Octets of the element, identifier and length included.
    pub fn encoded_len(&self) -> usize {
        match self {
            InformationElement::Concatenation(c) => c.reference.element_len(),
            InformationElement::PortAddressing(p) => p.element_len(),
            InformationElement::Other { data, .. } => IE_OVERHEAD + data.len(),
        }
    }

    fn write(&self, out: &mut impl FnMut(u8) -> Result<(), Error>) -> Result<(), Error> {
        match self {
            InformationElement::Concatenation(c) => c.write(out),
            InformationElement::PortAddressing(p) => p.write(out),
            InformationElement::Other { id, data } => {
                let len = u8::try_from(data.len()).map_err(|_| Error::LengthOutOfRange {
                    field: "information element",
                    value: data.len(),
                    max: usize::from(u8::MAX),
                })?;
                out(*id)?;
                out(len)?;
                data.iter().try_for_each(|&b| out(b))
            }
        }
    }
}

/// A user-data header: its information elements in order.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct UserDataHeader {
    /// The elements as they appear.
    pub elements: Vec<InformationElement>,
}

impl UserDataHeader {
    /// The first valid concatenation element, if any (an invalid one is
    /// ignored as TS 23.040 requires).
    pub fn concatenation(&self) -> Option<Concatenation> {
        self.elements.iter().find_map(|ie| match ie {
            InformationElement::Concatenation(c) if c.is_valid() => Some(*c),
            _ => None,
        })
    }

    /// The port-addressing element, if any.
    pub fn ports(&self) -> Option<PortAddressing> {
        self.elements.iter().find_map(|ie| match ie {
            InformationElement::PortAddressing(p) => Some(*p),
            _ => None,
        })
    }

    /// Octets of the header including the TP-UDHL octet.
    pub fn encoded_len(&self) -> usize {
        1 + self
            .elements
            .iter()
            .map(InformationElement::encoded_len)
            .sum::<usize>()
    }

    /// The header as it appears in the PDU, TP-UDHL first; for printing.
    pub fn to_bytes(&self) -> Result<Vec<u8>, Error> {
        let mut out = Vec::with_capacity(self.encoded_len());
        self.write(&mut |b| {
            out.push(b);
            Ok(())
        })?;
        Ok(out)
    }

    /// Reads TP-UDHL and the elements from the start of the user data.
    pub(crate) fn decode(user_data: &[u8]) -> Result<Self, Error> {
        let mut r = Reader::new(user_data);
        let length = usize::from(r.u8("user data header")?);
        let mut ies = Reader::new(r.take(length, "user data header")?);
        let mut elements = Vec::new();
        while ies.remaining() > 0 {
            let id = ies.u8("information element")?;
            let len = usize::from(ies.u8("information element")?);
            let data = ies.take(len, "information element")?;
            elements.push(InformationElement::decode(id, data));
        }
        Ok(UserDataHeader { elements })
    }

    pub(crate) fn write(&self, out: &mut impl FnMut(u8) -> Result<(), Error>) -> Result<(), Error> {
        let body = self.encoded_len() - 1;
        let udhl = u8::try_from(body).map_err(|_| Error::LengthOutOfRange {
            field: "user data header",
            value: body,
            max: usize::from(u8::MAX),
        })?;
        out(udhl)?;
        self.elements.iter().try_for_each(|ie| ie.write(out))
    }

    pub(crate) fn encode(&self, buf: &mut PduBuf) -> Result<(), Error> {
        self.write(&mut |b| buf.push(b))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_known_and_unknown_elements() {
        // Ports 16-bit, 8-bit concatenation, and an unknown IE 24 (national
        // language single shift), as a Turkish phone sends.
        let bytes = [
            0x0E, 0x05, 0x04, 0x0B, 0x84, 0x23, 0xF0, 0x00, 0x03, 0x1C, 0x02, 0x01, 0x24, 0x01,
            0x01, 0xAA,
        ];
        let udh = UserDataHeader::decode(&bytes).unwrap();
        assert_eq!(
            udh.ports(),
            Some(PortAddressing::Bits16 {
                destination: 2948,
                originator: 9200
            })
        );
        assert_eq!(
            udh.concatenation(),
            Some(Concatenation {
                reference: ConcatReference::Bits8(0x1C),
                total: 2,
                sequence: 1
            })
        );
        assert_eq!(
            udh.elements[2],
            InformationElement::Other {
                id: 0x24,
                data: vec![1]
            }
        );
        assert_eq!(udh.encoded_len(), 15);
        let mut back = udh.to_bytes().unwrap();
        back.push(0xAA);
        assert_eq!(back, bytes);
    }

    #[test]
    fn invalid_concatenation_is_ignored_but_kept() {
        let udh = UserDataHeader::decode(&[0x05, 0x00, 0x03, 0x01, 0x02, 0x03]).unwrap();
        assert_eq!(udh.concatenation(), None);
        assert_eq!(udh.elements.len(), 1);
        // Wrong length: kept as an unknown element.
        let udh = UserDataHeader::decode(&[0x04, 0x00, 0x02, 0x01, 0x02]).unwrap();
        assert!(matches!(
            udh.elements[0],
            InformationElement::Other { id: 0, .. }
        ));
    }

    #[test]
    fn truncated_elements() {
        assert_eq!(
            UserDataHeader::decode(&[0x05, 0x00, 0x03]),
            Err(Error::Truncated {
                field: "user data header",
                needed: 5,
                available: 2
            })
        );
        assert_eq!(
            UserDataHeader::decode(&[0x03, 0x00, 0x03, 0x01]),
            Err(Error::Truncated {
                field: "information element",
                needed: 3,
                available: 1
            })
        );
        assert_eq!(
            UserDataHeader::decode(&[0x01, 0x00]),
            Err(Error::Truncated {
                field: "information element",
                needed: 1,
                available: 0
            })
        );
    }
}
