//! The three TPDU types a modem hands the host, and the entry points that
//! tell them apart.

use crate::address::Address;
use crate::cursor::{MAX_PDU_LEN, PduBuf, Reader};
use crate::dcs::Dcs;
use crate::deliver::Deliver;
use crate::first_octet as fo;
use crate::status_report::{Status, StatusReport};
use crate::submit::Submit;
use crate::timestamp::Timestamp;
use crate::udh::UserDataHeader;
use crate::user_data::UserData;
use crate::validity::ValidityPeriod;
use crate::{Error, hex};

/// Which TPDU a [`Pdu`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MessageType {
    /// SMS-SUBMIT.
    Submit,
    /// SMS-DELIVER.
    Deliver,
    /// SMS-STATUS-REPORT.
    StatusReport,
}

impl MessageType {
    /// `submit`, `deliver` or `status_report`, as the CLI prints it.
    pub const fn as_str(self) -> &'static str {
        match self {
            MessageType::Submit => "submit",
            MessageType::Deliver => "deliver",
            MessageType::StatusReport => "status_report",
        }
    }
}

/// A decoded TPDU.
///
/// TP-MTI alone is ambiguous — `00` is DELIVER from the service centre but
/// DELIVER-REPORT towards it. A modem only ever hands the host messages it
/// received (DELIVER, STATUS-REPORT) or stored outgoing ones (SUBMIT), so
/// that is how the three values are read.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Pdu {
    /// SMS-SUBMIT.
    Submit(Submit),
    /// SMS-DELIVER.
    Deliver(Deliver),
    /// SMS-STATUS-REPORT.
    StatusReport(StatusReport),
}

/// A PDU as a modem shows it: optional service-centre address and TPDU.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Decoded {
    /// The service-centre address; `None` if absent or `00`.
    pub sca: Option<Address>,
    /// The TPDU.
    pub pdu: Pdu,
    /// TPDU octets, the number `AT+CMGS` / `+CMGL` report as `<length>`.
    pub tpdu_len: usize,
}

/// Decodes a PDU.
///
/// `with_sca` says whether the bytes start with the service-centre length
/// octet. `AT+CMGR`, `AT+CMGL`, `+CMT` and `+CDS` include it (TS 27.005
/// 3.1); some modems, and most tools' bare TPDUs, do not.
pub fn decode(bytes: &[u8], with_sca: bool) -> Result<Decoded, Error> {
    let mut r = Reader::new(bytes);
    let sca = if with_sca {
        Address::decode_sca(&mut r)?
    } else {
        None
    };
    let tpdu_len = r.remaining();
    let first = r.u8("first octet")?;
    let pdu = match first & fo::MTI_MASK {
        fo::MTI_DELIVER => Pdu::Deliver(Deliver::decode_body(first, &mut r)?),
        fo::MTI_SUBMIT => Pdu::Submit(Submit::decode_body(first, &mut r)?),
        fo::MTI_STATUS_REPORT => Pdu::StatusReport(StatusReport::decode_body(first, &mut r)?),
        _ => return Err(Error::ReservedMessageType),
    };
    r.finish()?;
    Ok(Decoded { sca, pdu, tpdu_len })
}

/// Decodes a PDU given as hex text; see [`decode`].
pub fn decode_hex(text: &str, with_sca: bool) -> Result<Decoded, Error> {
    decode(&hex::decode(text)?, with_sca)
}

impl Pdu {
    /// Which TPDU this is.
    pub const fn message_type(&self) -> MessageType {
        match self {
            Pdu::Submit(_) => MessageType::Submit,
            Pdu::Deliver(_) => MessageType::Deliver,
            Pdu::StatusReport(_) => MessageType::StatusReport,
        }
    }

    /// The first octet as it will be encoded.
    pub fn first_octet(&self) -> u8 {
        match self {
            Pdu::Submit(s) => s.first_octet(),
            Pdu::Deliver(d) => d.first_octet(),
            Pdu::StatusReport(s) => s.first_octet(),
        }
    }

    /// The other party: TP-DA of a SUBMIT, TP-OA of a DELIVER, TP-RA of a
    /// STATUS-REPORT.
    pub const fn address(&self) -> &Address {
        match self {
            Pdu::Submit(s) => &s.destination,
            Pdu::Deliver(d) => &d.originator,
            Pdu::StatusReport(s) => &s.recipient,
        }
    }

    /// The JSON key for [`Pdu::address`]: `da`, `oa` or `ra`.
    pub const fn address_key(&self) -> &'static str {
        match self {
            Pdu::Submit(_) => "da",
            Pdu::Deliver(_) => "oa",
            Pdu::StatusReport(_) => "ra",
        }
    }

    /// TP-DCS; a STATUS-REPORT without one has none.
    pub const fn dcs(&self) -> Option<Dcs> {
        match self {
            Pdu::Submit(s) => Some(s.dcs),
            Pdu::Deliver(d) => Some(d.dcs),
            Pdu::StatusReport(s) => s.dcs,
        }
    }

    /// TP-PID.
    pub const fn protocol_identifier(&self) -> Option<u8> {
        match self {
            Pdu::Submit(s) => Some(s.protocol_identifier),
            Pdu::Deliver(d) => Some(d.protocol_identifier),
            Pdu::StatusReport(s) => s.protocol_identifier,
        }
    }

    /// TP-UD.
    pub const fn user_data(&self) -> Option<&UserData> {
        match self {
            Pdu::Submit(s) => Some(&s.user_data),
            Pdu::Deliver(d) => Some(&d.user_data),
            Pdu::StatusReport(s) => s.user_data.as_ref(),
        }
    }

    /// The user-data header.
    pub fn udh(&self) -> Option<&UserDataHeader> {
        self.user_data().and_then(|u| u.header.as_ref())
    }

    /// The text, or `None` for binary data or no user data.
    pub fn text(&self) -> Option<String> {
        self.user_data().and_then(UserData::text)
    }

    /// TP-MR of a SUBMIT or STATUS-REPORT.
    pub const fn message_reference(&self) -> Option<u8> {
        match self {
            Pdu::Submit(s) => Some(s.message_reference),
            Pdu::Deliver(_) => None,
            Pdu::StatusReport(s) => Some(s.message_reference),
        }
    }

    /// TP-ST of a STATUS-REPORT.
    pub const fn status(&self) -> Option<Status> {
        match self {
            Pdu::StatusReport(s) => Some(s.status),
            _ => None,
        }
    }

    /// TP-SCTS of a DELIVER or STATUS-REPORT.
    pub const fn service_centre_timestamp(&self) -> Option<Timestamp> {
        match self {
            Pdu::Submit(_) => None,
            Pdu::Deliver(d) => Some(d.service_centre_timestamp),
            Pdu::StatusReport(s) => Some(s.service_centre_timestamp),
        }
    }

    /// TP-DT of a STATUS-REPORT.
    pub const fn discharge_time(&self) -> Option<Timestamp> {
        match self {
            Pdu::StatusReport(s) => Some(s.discharge_time),
            _ => None,
        }
    }

    /// TP-VP of a SUBMIT.
    pub const fn validity_period(&self) -> Option<&ValidityPeriod> {
        match self {
            Pdu::Submit(s) => s.validity_period.as_ref(),
            _ => None,
        }
    }

    /// TP-SRR of a SUBMIT, TP-SRI of a DELIVER.
    pub const fn status_report_request(&self) -> Option<bool> {
        match self {
            Pdu::Submit(s) => Some(s.status_report_request),
            Pdu::Deliver(d) => Some(d.status_report_indication),
            Pdu::StatusReport(_) => None,
        }
    }

    /// Encodes the PDU with a service-centre prefix (`None` writes `00`).
    pub fn encode(&self, sca: Option<&Address>) -> Result<EncodedPdu, Error> {
        match self {
            Pdu::Submit(s) => s.encode(sca),
            Pdu::Deliver(d) => d.encode(sca),
            Pdu::StatusReport(s) => s.encode(sca),
        }
    }
}

/// An encoded PDU, held in a fixed array so that encoding does not allocate.
#[derive(Clone, Copy)]
pub struct EncodedPdu {
    buf: PduBuf,
    sca_len: usize,
}

impl EncodedPdu {
    /// Largest PDU in octets, service-centre prefix included.
    pub const MAX_LEN: usize = MAX_PDU_LEN;

    pub(crate) fn new(buf: PduBuf, sca_len: usize) -> Self {
        EncodedPdu { buf, sca_len }
    }

    /// Service-centre prefix and TPDU, as sent after `AT+CMGS`.
    pub fn as_bytes(&self) -> &[u8] {
        self.buf.as_slice()
    }

    /// The TPDU alone.
    pub fn tpdu(&self) -> &[u8] {
        self.as_bytes().get(self.sca_len..).unwrap_or(&[])
    }

    /// The `<length>` of `AT+CMGS=<length>`: TPDU octets, service-centre
    /// octets excluded (TS 27.005 3.5.1).
    pub fn cmgs_length(&self) -> usize {
        self.buf.len().saturating_sub(self.sca_len)
    }

    /// Upper-case hex of the whole PDU, the form to type after `> `.
    pub fn to_hex(&self) -> String {
        hex::encode_upper(self.as_bytes())
    }
}

impl core::fmt::Debug for EncodedPdu {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("EncodedPdu")
            .field("hex", &self.to_hex())
            .field("cmgs_length", &self.cmgs_length())
            .finish()
    }
}

impl PartialEq for EncodedPdu {
    fn eq(&self, other: &Self) -> bool {
        self.sca_len == other.sca_len && self.as_bytes() == other.as_bytes()
    }
}

impl Eq for EncodedPdu {}
