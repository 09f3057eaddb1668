//! Turning a text into SMS-SUBMIT PDUs ready for `AT+CMGS`, split into
//! concatenated parts when it does not fit in one.
//!
//! Part capacity follows from the header size: 140 octets of user data
//! minus the header, counted in septets (GSM-7, header rounded up to a
//! septet boundary), UTF-16 units (UCS2) or octets. With an 8-bit reference
//! that gives 153 / 67 / 134 per part, with a 16-bit reference 152 / 66 /
//! 133. A part never ends inside an escape sequence or a surrogate pair,
//! because some handsets show garbage for half a character.
//!
//! Parts are encoded straight from the `&str` into a fixed buffer: no
//! intermediate septet vector, and [`encode_text_single`] allocates nothing.

use crate::Error;
use crate::address::Address;
use crate::cursor::PduBuf;
use crate::dcs::{Alphabet, Dcs, MessageClass};
use crate::first_octet::{self as fo, flag};
use crate::gsm7::{self, ESCAPE, Gsm7Char};
use crate::pdu::EncodedPdu;
use crate::septets::{self, Packer};
use crate::udh::{ConcatReference, Concatenation, PortAddressing};
use crate::user_data::{MAX_USER_DATA_OCTETS, MAX_USER_DATA_SEPTETS, udl_octet};
use crate::validity::ValidityPeriod;

/// Which alphabet to encode text in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum TextEncoding {
    /// GSM-7 if every character allows it, otherwise UCS2.
    #[default]
    Auto,
    /// GSM-7; characters outside it are an error.
    Gsm7,
    /// UCS2 (UTF-16).
    Ucs2,
}

/// The most parts a concatenated message can have: TS 23.040 counts them
/// in one octet.
pub const MAX_PARTS: u8 = u8::MAX;

/// Everything about a SUBMIT besides its destination and text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubmitOptions {
    /// Alphabet choice.
    pub encoding: TextEncoding,
    /// TP-SRR: ask for a status report (`+CDS`).
    pub status_report_request: bool,
    /// TP-RD: ask the service centre to reject duplicates.
    pub reject_duplicates: bool,
    /// TP-VP; `None` leaves the validity to the service centre.
    pub validity_period: Option<ValidityPeriod>,
    /// TP-MR of the first part; later parts count up from it. Most modems
    /// substitute their own.
    pub message_reference: u8,
    /// Reference and width of the concatenation element. The 8-bit form
    /// saves a character per part; the 16-bit form makes reference clashes
    /// between messages to the same recipient rarer.
    pub concat_reference: ConcatReference,
    /// Refuse texts needing more parts than this.
    pub max_parts: u8,
    /// Message class in the DCS, e.g. class 0 for a flash message.
    pub message_class: Option<MessageClass>,
    /// TP-PID.
    pub protocol_identifier: u8,
    /// Application ports, added to every part.
    pub ports: Option<PortAddressing>,
    /// Service-centre address to prefix; `None` writes `00` so the modem
    /// uses `AT+CSCA`.
    pub service_centre: Option<Address>,
}

impl Default for SubmitOptions {
    fn default() -> Self {
        SubmitOptions {
            encoding: TextEncoding::Auto,
            status_report_request: false,
            reject_duplicates: false,
            validity_period: None,
            message_reference: 0,
            concat_reference: ConcatReference::Bits8(0),
            max_parts: MAX_PARTS,
            message_class: None,
            protocol_identifier: 0,
            ports: None,
            service_centre: None,
        }
    }
}

/// How a text will be sent, without encoding it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Plan {
    /// The alphabet chosen.
    pub alphabet: Alphabet,
    /// Septets, UTF-16 units or octets of the whole text.
    pub units: usize,
    /// Number of SUBMITs.
    pub parts: usize,
    /// Units one part holds.
    pub capacity_per_part: usize,
}

/// A message body borrowed from the caller.
#[derive(Clone, Copy)]
enum Body<'a> {
    Text(&'a str, Alphabet),
    Binary(&'a [u8]),
}

impl<'a> Body<'a> {
    fn alphabet(self) -> Alphabet {
        match self {
            Body::Text(_, a) => a,
            Body::Binary(_) => Alphabet::EightBit,
        }
    }

    /// Greedy split into chunks of at most `capacity` units that never cut
    /// a character; each chunk with its unit count.
    fn chunks(self, capacity: usize) -> Chunks<'a> {
        Chunks {
            rest: self,
            capacity,
        }
    }

    fn is_empty(self) -> bool {
        match self {
            Body::Text(t, _) => t.is_empty(),
            Body::Binary(d) => d.is_empty(),
        }
    }
}

/// Units a character takes: septets (escapes count two) or UTF-16 units.
fn char_units(c: char, alphabet: Alphabet) -> usize {
    match alphabet {
        Alphabet::Gsm7 => gsm7::encode_char(c).map_or(1, Gsm7Char::septets),
        Alphabet::Ucs2 => c.len_utf16(),
        // Text is never sent as 8-bit data; this only keeps the match total.
        Alphabet::EightBit => c.len_utf8(),
    }
}

struct Chunks<'a> {
    rest: Body<'a>,
    capacity: usize,
}

impl<'a> Iterator for Chunks<'a> {
    type Item = Result<(Body<'a>, usize), Error>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.rest.is_empty() {
            return None;
        }
        let (chunk, rest, units) = match self.rest {
            Body::Text(text, alphabet) => {
                let mut units = 0;
                let mut end = text.len();
                for (i, c) in text.char_indices() {
                    let cost = char_units(c, alphabet);
                    if units + cost > self.capacity {
                        end = i;
                        break;
                    }
                    units += cost;
                }
                let (chunk, rest) = text.split_at_checked(end).unwrap_or((text, ""));
                (
                    Body::Text(chunk, alphabet),
                    Body::Text(rest, alphabet),
                    units,
                )
            }
            Body::Binary(data) => {
                let (chunk, rest) = data.split_at(self.capacity.min(data.len()));
                (Body::Binary(chunk), Body::Binary(rest), chunk.len())
            }
        };
        if chunk.is_empty() {
            // Only if a header left room for less than one character.
            self.rest = Body::Binary(&[]);
            return Some(Err(Error::InvalidOption {
                option: "ports (header leaves no room for text)",
            }));
        }
        self.rest = rest;
        Some(Ok((chunk, units)))
    }
}

/// Units of user data left after a header of `header_octets` octets.
fn capacity(alphabet: Alphabet, header_octets: usize) -> usize {
    match alphabet {
        Alphabet::Gsm7 => {
            MAX_USER_DATA_SEPTETS.saturating_sub(septets::septets_for_octets(header_octets))
        }
        Alphabet::Ucs2 => MAX_USER_DATA_OCTETS.saturating_sub(header_octets) / 2,
        Alphabet::EightBit => MAX_USER_DATA_OCTETS.saturating_sub(header_octets),
    }
}

/// Header octets (TP-UDHL included) for a part with these options.
fn header_octets(options: &SubmitOptions, concatenated: bool) -> usize {
    let ports = options.ports.map_or(0, PortAddressing::element_len);
    let concat = if concatenated {
        options.concat_reference.element_len()
    } else {
        0
    };
    if ports + concat == 0 {
        0
    } else {
        1 + ports + concat
    }
}

/// The alphabet for `text`, and the units it takes in that alphabet: one
/// pass for the common case of GSM-7 text.
fn choose_alphabet(text: &str, encoding: TextEncoding) -> Result<(Alphabet, usize), Error> {
    let ucs2 = || (Alphabet::Ucs2, crate::ucs2::unit_count(text));
    match encoding {
        TextEncoding::Ucs2 => Ok(ucs2()),
        TextEncoding::Auto => {
            Ok(gsm7::septet_count(text).map_or_else(ucs2, |n| (Alphabet::Gsm7, n)))
        }
        TextEncoding::Gsm7 => gsm7::checked_septet_count(text).map(|n| (Alphabet::Gsm7, n)),
    }
}

/// The layout a body of `units` units will be sent with.
fn layout(body: Body<'_>, units: usize, options: &SubmitOptions) -> Result<Plan, Error> {
    if options.max_parts == 0 {
        return Err(Error::InvalidOption {
            option: "max_parts must be at least 1",
        });
    }
    let alphabet = body.alphabet();
    let single = capacity(alphabet, header_octets(options, false));
    if units <= single {
        return Ok(Plan {
            alphabet,
            units,
            parts: 1,
            capacity_per_part: single,
        });
    }
    let per_part = capacity(alphabet, header_octets(options, true));
    let mut parts = 0;
    for chunk in body.chunks(per_part) {
        chunk?;
        parts += 1;
    }
    let max = usize::from(options.max_parts);
    if parts > max {
        return Err(Error::TooLong { parts, max });
    }
    Ok(Plan {
        alphabet,
        units,
        parts,
        capacity_per_part: per_part,
    })
}

/// How `text` would be sent: alphabet, length and number of parts.
pub fn plan(text: &str, options: &SubmitOptions) -> Result<Plan, Error> {
    let (alphabet, units) = choose_alphabet(text, options.encoding)?;
    layout(Body::Text(text, alphabet), units, options)
}

/// Encodes `text` to `destination` as one SUBMIT, or as concatenated
/// SUBMITs if it is too long for one. Each [`EncodedPdu`] carries the hex
/// for `AT+CMGS` and its `<length>`.
pub fn encode_text(
    destination: &Address,
    text: &str,
    options: &SubmitOptions,
) -> Result<Vec<EncodedPdu>, Error> {
    let (alphabet, units) = choose_alphabet(text, options.encoding)?;
    encode_body(destination, Body::Text(text, alphabet), units, options)
}

/// Encodes `data` as 8-bit SUBMITs, concatenated if needed.
pub fn encode_binary(
    destination: &Address,
    data: &[u8],
    options: &SubmitOptions,
) -> Result<Vec<EncodedPdu>, Error> {
    encode_body(destination, Body::Binary(data), data.len(), options)
}

/// Encodes `text` as exactly one SUBMIT without allocating; a text that
/// needs concatenation fails with [`Error::TooLong`].
pub fn encode_text_single(
    destination: &Address,
    text: &str,
    options: &SubmitOptions,
) -> Result<EncodedPdu, Error> {
    let (alphabet, units) = choose_alphabet(text, options.encoding)?;
    let body = Body::Text(text, alphabet);
    let single = capacity(alphabet, header_octets(options, false));
    if units > single {
        let per_part = capacity(alphabet, header_octets(options, true)).max(1);
        return Err(Error::TooLong {
            parts: units.div_ceil(per_part),
            max: 1,
        });
    }
    encode_part(destination, body, units, None, 0, options)
}

fn encode_body(
    destination: &Address,
    body: Body<'_>,
    units: usize,
    options: &SubmitOptions,
) -> Result<Vec<EncodedPdu>, Error> {
    let plan = layout(body, units, options)?;
    if plan.parts == 1 {
        return Ok(vec![encode_part(
            destination,
            body,
            plan.units,
            None,
            0,
            options,
        )?]);
    }
    // `layout` checked parts <= max_parts <= 255.
    let total = u8::try_from(plan.parts).map_err(|_| Error::TooLong {
        parts: plan.parts,
        max: usize::from(MAX_PARTS),
    })?;
    let mut out = Vec::with_capacity(plan.parts);
    for (index, chunk) in body.chunks(plan.capacity_per_part).enumerate() {
        let (chunk, units) = chunk?;
        let sequence = u8::try_from(index + 1).unwrap_or(u8::MAX);
        let concat = Concatenation {
            reference: options.concat_reference,
            total,
            sequence,
        };
        out.push(encode_part(
            destination,
            chunk,
            units,
            Some(concat),
            index,
            options,
        )?);
    }
    Ok(out)
}

/// Longest header the splitter writes: TP-UDHL, 16-bit ports and 16-bit
/// concatenation.
const MAX_HEADER: usize = 1
    + PortAddressing::Bits16 {
        destination: 0,
        originator: 0,
    }
    .element_len()
    + ConcatReference::Bits16(0).element_len();

fn encode_part(
    destination: &Address,
    body: Body<'_>,
    units: usize,
    concat: Option<Concatenation>,
    index: usize,
    options: &SubmitOptions,
) -> Result<EncodedPdu, Error> {
    let mut header = [0u8; MAX_HEADER];
    let header_len = header_octets(options, concat.is_some());
    if header_len > 0 {
        let mut len = 0;
        let mut push = |b: u8| {
            let slot = header
                .get_mut(len)
                .ok_or(Error::PduTooLong { max: MAX_HEADER })?;
            *slot = b;
            len += 1;
            Ok(())
        };
        push(u8::try_from(header_len - 1).unwrap_or(0))?;
        if let Some(ports) = options.ports {
            ports.write(&mut push)?;
        }
        if let Some(concat) = concat {
            concat.write(&mut push)?;
        }
    }
    let header = header.get(..header_len).unwrap_or(&[]);

    let mut buf = PduBuf::new();
    Address::encode_sca(options.service_centre.as_ref(), &mut buf)?;
    let sca_len = buf.len();
    let first = fo::MTI_SUBMIT
        | flag(options.reject_duplicates, fo::RD)
        | ValidityPeriod::format_bits(options.validity_period.as_ref()) << fo::VPF_SHIFT
        | flag(options.status_report_request, fo::SRR)
        | flag(header_len > 0, fo::UDHI);
    buf.push(first)?;
    // TP-MR is modulo 256 by definition.
    buf.push(
        options
            .message_reference
            .wrapping_add(index.to_le_bytes()[0]),
    )?;
    destination.encode_tp(&mut buf)?;
    buf.push(options.protocol_identifier)?;
    buf.push(Dcs::new(body.alphabet(), options.message_class).octet())?;
    if let Some(vp) = &options.validity_period {
        vp.encode(&mut buf)?;
    }
    match body {
        Body::Text(text, Alphabet::Gsm7) => {
            let header_septets = septets::septets_for_octets(header_len);
            buf.push(udl_octet(header_septets + units, MAX_USER_DATA_SEPTETS)?)?;
            buf.extend(header)?;
            let mut packer = Packer::new(&mut buf, septets::fill_bits(header_len));
            for character in text.chars() {
                match gsm7::encode_char(character) {
                    Some(Gsm7Char::Default(s)) => packer.push(s)?,
                    Some(Gsm7Char::Extended(s)) => {
                        packer.push(ESCAPE)?;
                        packer.push(s)?;
                    }
                    // The alphabet was chosen after checking every character.
                    None => {
                        return Err(gsm7::checked_septet_count(text).err().unwrap_or(
                            Error::NotGsm7 {
                                character,
                                position: 0,
                            },
                        ));
                    }
                }
            }
            packer.finish()?;
        }
        // UCS2: `choose_alphabet` never picks 8-bit for text.
        Body::Text(text, _) => {
            buf.push(udl_octet(header_len + units * 2, MAX_USER_DATA_OCTETS)?)?;
            buf.extend(header)?;
            for unit in text.encode_utf16() {
                buf.extend(&unit.to_be_bytes())?;
            }
        }
        Body::Binary(data) => {
            buf.push(udl_octet(header_len + data.len(), MAX_USER_DATA_OCTETS)?)?;
            buf.extend(header)?;
            buf.extend(data)?;
        }
    }
    Ok(EncodedPdu::new(buf, sca_len))
}
