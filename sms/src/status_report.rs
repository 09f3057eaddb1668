//! SMS-STATUS-REPORT (TS 23.040 9.2.2.3): the service centre's answer to a
//! SUBMIT sent with TP-SRR, as modems report it in `+CDS` or store it for
//! `+CDSI`.

use crate::Error;
use crate::address::Address;
use crate::cursor::{PduBuf, Reader};
use crate::dcs::Dcs;
use crate::first_octet::{self as fo, flag};
use crate::pdu::EncodedPdu;
use crate::timestamp::{TIMESTAMP_LEN, Timestamp};
use crate::user_data::{self, UserData};

/// How a TP-ST value is classed (TS 23.040 9.2.3.15).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StatusKind {
    /// The transaction is over: delivered, forwarded or replaced.
    Completed,
    /// A temporary error; the service centre keeps trying.
    TemporaryRetrying,
    /// A permanent error; the service centre has given up.
    Permanent,
    /// A temporary error, but the service centre has given up.
    TemporaryAborted,
    /// A value TS 23.040 reserves.
    Reserved,
}

/// A TP-ST octet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Status(u8);

const CLASS_MASK: u8 = 0xE0;
const COMPLETED: u8 = 0x00;
const TEMPORARY_RETRYING: u8 = 0x20;
const PERMANENT: u8 = 0x40;
const TEMPORARY_ABORTED: u8 = 0x60;

impl Status {
    /// Received by the recipient.
    pub const DELIVERED: Status = Status(0x00);

    /// Wraps a TP-ST octet.
    pub const fn from_octet(octet: u8) -> Self {
        Status(octet)
    }

    /// The TP-ST octet.
    pub const fn octet(self) -> u8 {
        self.0
    }

    /// The class of the value.
    pub const fn kind(self) -> StatusKind {
        match self.0 & CLASS_MASK {
            COMPLETED => StatusKind::Completed,
            TEMPORARY_RETRYING => StatusKind::TemporaryRetrying,
            PERMANENT => StatusKind::Permanent,
            TEMPORARY_ABORTED => StatusKind::TemporaryAborted,
            _ => StatusKind::Reserved,
        }
    }

    /// True once the recipient has the message.
    pub const fn is_delivered(self) -> bool {
        self.0 == Status::DELIVERED.0
    }

    /// True when the service centre will not try again.
    pub const fn is_final(self) -> bool {
        !matches!(self.kind(), StatusKind::TemporaryRetrying)
    }

    /// The meaning TS 23.040 gives the value.
    pub const fn description(self) -> &'static str {
        match self.0 {
            0x00 => "received by the SME",
            0x01 => "forwarded, delivery unconfirmed",
            0x02 => "replaced by the SC",
            0x20 | 0x60 => "congestion",
            0x21 | 0x61 => "SME busy",
            0x22 | 0x62 => "no response from SME",
            0x23 | 0x63 => "service rejected",
            0x24 | 0x44 | 0x64 => "quality of service not available",
            0x25 | 0x65 => "error in SME",
            0x40 => "remote procedure error",
            0x41 => "incompatible destination",
            0x42 => "connection rejected by SME",
            0x43 => "not obtainable",
            0x45 => "no interworking available",
            0x46 => "validity period expired",
            0x47 => "deleted by originating SME",
            0x48 => "deleted by SC administration",
            0x49 => "message does not exist",
            0x10..=0x1F | 0x30..=0x3F | 0x50..=0x5F | 0x70..=0x7F => "SC specific",
            _ => "reserved",
        }
    }
}

/// An SMS-STATUS-REPORT.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct StatusReport {
    /// More messages are waiting in the service centre (TP-MMS bit *clear*).
    pub more_messages_to_send: bool,
    /// TP-LP.
    pub loop_prevention: bool,
    /// TP-SRQ: the report is about an SMS-COMMAND rather than a SUBMIT.
    pub about_command: bool,
    /// TP-MR of the SUBMIT this reports on — the `<mr>` from `+CMGS`.
    pub message_reference: u8,
    /// TP-RA: the recipient of that SUBMIT.
    pub recipient: Address,
    /// TP-SCTS: when the service centre received the SUBMIT.
    pub service_centre_timestamp: Timestamp,
    /// TP-DT: when the status was reached.
    pub discharge_time: Timestamp,
    /// TP-ST.
    pub status: Status,
    /// TP-PID, if TP-PI says it is present.
    pub protocol_identifier: Option<u8>,
    /// TP-DCS, if present.
    pub dcs: Option<Dcs>,
    /// TP-UD, if present.
    pub user_data: Option<UserData>,
}

/// TP-Parameter-Indicator bits (9.2.3.27).
const PI_PID: u8 = 0x01;
const PI_DCS: u8 = 0x02;
const PI_UDL: u8 = 0x04;
const PI_EXTENSION: u8 = 0x80;

impl StatusReport {
    /// The first octet as it will be encoded.
    pub fn first_octet(&self) -> u8 {
        fo::MTI_STATUS_REPORT
            | flag(!self.more_messages_to_send, fo::MMS)
            | flag(self.loop_prevention, fo::LP)
            | flag(self.about_command, fo::SRQ)
            | flag(
                self.user_data.as_ref().is_some_and(|u| u.header.is_some()),
                fo::UDHI,
            )
    }

    /// The DCS that governs the user data: TS 23.040 9.2.3.27 says a missing
    /// TP-DCS means the default alphabet.
    fn effective_dcs(&self) -> Dcs {
        self.dcs.unwrap_or(Dcs::GSM7)
    }

    /// The text of the optional user data.
    pub fn text(&self) -> Option<String> {
        self.user_data.as_ref().and_then(UserData::text)
    }

    /// Encodes the PDU with a service-centre prefix (`None` writes `00`).
    /// TP-PI is written only when an optional field is present.
    pub fn encode(&self, sca: Option<&Address>) -> Result<EncodedPdu, Error> {
        if let Some(ud) = &self.user_data {
            user_data::check_alphabet(self.effective_dcs(), &ud.payload)?;
        }
        let mut buf = PduBuf::new();
        Address::encode_sca(sca, &mut buf)?;
        let sca_len = buf.len();
        buf.push(self.first_octet())?;
        buf.push(self.message_reference)?;
        self.recipient.encode_tp(&mut buf)?;
        buf.extend(&self.service_centre_timestamp.encode())?;
        buf.extend(&self.discharge_time.encode())?;
        buf.push(self.status.octet())?;
        let pi = flag(self.protocol_identifier.is_some(), PI_PID)
            | flag(self.dcs.is_some(), PI_DCS)
            | flag(self.user_data.is_some(), PI_UDL);
        if pi != 0 {
            buf.push(pi)?;
        }
        if let Some(pid) = self.protocol_identifier {
            buf.push(pid)?;
        }
        if let Some(dcs) = self.dcs {
            buf.push(dcs.octet())?;
        }
        if let Some(ud) = &self.user_data {
            ud.encode(&mut buf)?;
        }
        Ok(EncodedPdu::new(buf, sca_len))
    }

    pub(crate) fn decode_body(first: u8, r: &mut Reader<'_>) -> Result<Self, Error> {
        let message_reference = r.u8("message reference")?;
        let recipient = Address::decode_tp(r, "recipient address")?;
        let service_centre_timestamp = Timestamp::decode(
            r.array::<TIMESTAMP_LEN>("service centre timestamp")?,
            "service centre timestamp",
        )?;
        let discharge_time = Timestamp::decode(
            r.array::<TIMESTAMP_LEN>("discharge time")?,
            "discharge time",
        )?;
        let status = Status(r.u8("status")?);
        let mut report = StatusReport {
            more_messages_to_send: first & fo::MMS == 0,
            loop_prevention: first & fo::LP != 0,
            about_command: first & fo::SRQ != 0,
            message_reference,
            recipient,
            service_centre_timestamp,
            discharge_time,
            status,
            protocol_identifier: None,
            dcs: None,
            user_data: None,
        };
        // TP-PI and everything after it are optional.
        if r.remaining() == 0 {
            return Ok(report);
        }
        let pi = r.u8("parameter indicator")?;
        // Extension octets announce parameters not yet defined; skip them.
        let mut octet = pi;
        while octet & PI_EXTENSION != 0 {
            octet = r.u8("parameter indicator")?;
        }
        if pi & PI_PID != 0 {
            report.protocol_identifier = Some(r.u8("protocol identifier")?);
        }
        if pi & PI_DCS != 0 {
            report.dcs = Some(Dcs::from_octet(r.u8("data coding scheme")?));
        }
        if pi & PI_UDL != 0 {
            report.user_data = Some(UserData::decode(
                r,
                report.effective_dcs(),
                first & fo::UDHI != 0,
            )?);
        }
        Ok(report)
    }
}
