//! TP-UDL and TP-UD (TS 23.040 9.2.3.16, 9.2.3.24).
//!
//! The payload is kept in its coded form — septets for GSM-7, octets
//! otherwise — rather than as a `String`: decoding to text is lossy for
//! broken input, and reassembly must join parts *before* decoding so that
//! an escape sequence or surrogate pair split by a careless sender comes out
//! whole.

use crate::cursor::{PduBuf, Reader};
use crate::dcs::{Alphabet, Dcs};
use crate::septets::{self, Packer};
use crate::udh::UserDataHeader;
use crate::{Error, gsm7, ucs2};

/// Octets of TP-UD in any TPDU.
pub const MAX_USER_DATA_OCTETS: usize = 140;
/// Septets of TP-UD when TP-UDL counts septets.
pub const MAX_USER_DATA_SEPTETS: usize = 160;

/// The message body in its coded form.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Payload {
    /// GSM-7 septets, one per `u8`, escapes included.
    Gsm7(Vec<u8>),
    /// UTF-16BE octets.
    Ucs2(Vec<u8>),
    /// 8-bit or compressed data.
    Binary(Vec<u8>),
}

impl Payload {
    /// The alphabet this payload is coded in.
    pub const fn alphabet(&self) -> Alphabet {
        match self {
            Payload::Gsm7(_) => Alphabet::Gsm7,
            Payload::Ucs2(_) => Alphabet::Ucs2,
            Payload::Binary(_) => Alphabet::EightBit,
        }
    }

    /// The septets or octets.
    pub fn as_slice(&self) -> &[u8] {
        match self {
            Payload::Gsm7(v) | Payload::Ucs2(v) | Payload::Binary(v) => v,
        }
    }

    /// Length in the unit of TP-UDL.
    pub fn len(&self) -> usize {
        self.as_slice().len()
    }

    /// True if there is no body.
    pub fn is_empty(&self) -> bool {
        self.as_slice().is_empty()
    }

    /// The text, or `None` for binary data.
    pub fn text(&self) -> Option<String> {
        match self {
            Payload::Gsm7(s) => Some(gsm7::decode(s)),
            Payload::Ucs2(o) => Some(ucs2::decode(o)),
            Payload::Binary(_) => None,
        }
    }
}

/// A header (if TP-UDHI is set) and a payload.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct UserData {
    /// The user-data header; `Some` sets TP-UDHI.
    pub header: Option<UserDataHeader>,
    /// The body.
    pub payload: Payload,
}

impl UserData {
    /// Text in GSM-7 if every character allows it, otherwise UCS2 — the
    /// choice every handset makes, since GSM-7 fits 160 characters to
    /// UCS2's 70.
    pub fn from_text(text: &str) -> Self {
        let payload = match gsm7::encode(text) {
            Ok(septets) => Payload::Gsm7(septets),
            Err(_) => Payload::Ucs2(ucs2::encode(text)),
        };
        UserData {
            header: None,
            payload,
        }
    }

    /// Text in GSM-7, failing on the first character it cannot encode.
    pub fn gsm7(text: &str) -> Result<Self, Error> {
        Ok(UserData {
            header: None,
            payload: Payload::Gsm7(gsm7::encode(text)?),
        })
    }

    /// Text in UCS2.
    pub fn ucs2(text: &str) -> Self {
        UserData {
            header: None,
            payload: Payload::Ucs2(ucs2::encode(text)),
        }
    }

    /// 8-bit data.
    pub fn binary(data: Vec<u8>) -> Self {
        UserData {
            header: None,
            payload: Payload::Binary(data),
        }
    }

    /// The text, or `None` for binary data.
    pub fn text(&self) -> Option<String> {
        self.payload.text()
    }

    /// Reads TP-UDL and TP-UD, which must end the PDU.
    pub(crate) fn decode(r: &mut Reader<'_>, dcs: Dcs, udhi: bool) -> Result<Self, Error> {
        const FIELD: &str = "user data";
        let udl = usize::from(r.u8("user data length")?);
        if dcs.counts_septets() {
            if udl > MAX_USER_DATA_SEPTETS {
                return Err(Error::LengthOutOfRange {
                    field: "user data length",
                    value: udl,
                    max: MAX_USER_DATA_SEPTETS,
                });
            }
            let octets = r.take(septets::octets_for_septets(udl), FIELD)?;
            let (header, start_septet) = if udhi {
                let header = UserDataHeader::decode(octets)?;
                let header_septets = septets::septets_for_octets(header.encoded_len());
                if header_septets > udl {
                    return Err(Error::HeaderExceedsUserData {
                        header_septets,
                        user_data_length: udl,
                    });
                }
                (Some(header), header_septets)
            } else {
                (None, 0)
            };
            let text = septets::unpack(octets, start_septet * 7, udl - start_septet);
            Ok(UserData {
                header,
                payload: Payload::Gsm7(text),
            })
        } else {
            if udl > MAX_USER_DATA_OCTETS {
                return Err(Error::LengthOutOfRange {
                    field: "user data length",
                    value: udl,
                    max: MAX_USER_DATA_OCTETS,
                });
            }
            let octets = r.take(udl, FIELD)?;
            let (header, body) = if udhi {
                let header = UserDataHeader::decode(octets)?;
                let body = octets.get(header.encoded_len()..).unwrap_or(&[]);
                (Some(header), body)
            } else {
                (None, octets)
            };
            let payload = match dcs.payload_alphabet() {
                Alphabet::Ucs2 => Payload::Ucs2(body.to_vec()),
                _ => Payload::Binary(body.to_vec()),
            };
            Ok(UserData { header, payload })
        }
    }

    /// Writes TP-UDL and TP-UD. The caller has checked that the payload's
    /// alphabet matches the DCS.
    pub(crate) fn encode(&self, out: &mut PduBuf) -> Result<(), Error> {
        let header_octets = self.header.as_ref().map_or(0, UserDataHeader::encoded_len);
        match &self.payload {
            Payload::Gsm7(septets) => {
                let header_septets = septets::septets_for_octets(header_octets);
                let udl = header_septets + septets.len();
                let udl = udl_octet(udl, MAX_USER_DATA_SEPTETS)?;
                out.push(udl)?;
                if let Some(h) = &self.header {
                    h.encode(out)?;
                }
                let mut packer = Packer::new(out, septets::fill_bits(header_octets));
                for &s in septets {
                    packer.push(s)?;
                }
                packer.finish()
            }
            Payload::Ucs2(octets) | Payload::Binary(octets) => {
                let udl = udl_octet(header_octets + octets.len(), MAX_USER_DATA_OCTETS)?;
                out.push(udl)?;
                if let Some(h) = &self.header {
                    h.encode(out)?;
                }
                out.extend(octets)
            }
        }
    }
}

/// Checks a TP-UDL value against its limit.
pub(crate) fn udl_octet(length: usize, max: usize) -> Result<u8, Error> {
    if length > max {
        return Err(Error::UserDataTooLong { length, max });
    }
    u8::try_from(length).map_err(|_| Error::UserDataTooLong { length, max })
}

/// Checks that a payload is in the alphabet its DCS announces.
pub(crate) fn check_alphabet(dcs: Dcs, payload: &Payload) -> Result<(), Error> {
    let expected = dcs.payload_alphabet();
    let actual = payload.alphabet();
    if expected == actual {
        Ok(())
    } else {
        Err(Error::AlphabetMismatch {
            dcs: expected,
            payload: actual,
        })
    }
}
