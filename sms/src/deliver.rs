//! SMS-DELIVER (TS 23.040 9.2.2.1): a message from the service centre to
//! the handset, as modems report it in `+CMT`, `AT+CMGR` and `AT+CMGL`.

use crate::Error;
use crate::address::Address;
use crate::cursor::{PduBuf, Reader};
use crate::dcs::Dcs;
use crate::first_octet::{self as fo, flag};
use crate::pdu::EncodedPdu;
use crate::timestamp::{TIMESTAMP_LEN, Timestamp};
use crate::user_data::{self, UserData};

/// An SMS-DELIVER.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Deliver {
    /// More messages are waiting in the service centre (TP-MMS bit *clear*).
    pub more_messages_to_send: bool,
    /// TP-LP: the message was forwarded or is a spawned message.
    pub loop_prevention: bool,
    /// TP-SRI: the sender asked for a status report.
    pub status_report_indication: bool,
    /// TP-RP: reply through the same service centre.
    pub reply_path: bool,
    /// TP-OA.
    pub originator: Address,
    /// TP-PID.
    pub protocol_identifier: u8,
    /// TP-DCS.
    pub dcs: Dcs,
    /// TP-SCTS: when the service centre received the message.
    pub service_centre_timestamp: Timestamp,
    /// TP-UD.
    pub user_data: UserData,
}

impl Deliver {
    /// A DELIVER with default flags whose DCS follows the payload; the
    /// virtual modem builds incoming messages with this.
    pub fn new(
        originator: Address,
        service_centre_timestamp: Timestamp,
        user_data: UserData,
    ) -> Self {
        Deliver {
            more_messages_to_send: false,
            loop_prevention: false,
            status_report_indication: false,
            reply_path: false,
            originator,
            protocol_identifier: 0,
            dcs: Dcs::new(user_data.payload.alphabet(), None),
            service_centre_timestamp,
            user_data,
        }
    }

    /// The first octet as it will be encoded.
    pub fn first_octet(&self) -> u8 {
        fo::MTI_DELIVER
            | flag(!self.more_messages_to_send, fo::MMS)
            | flag(self.loop_prevention, fo::LP)
            | flag(self.status_report_indication, fo::SRI)
            | flag(self.user_data.header.is_some(), fo::UDHI)
            | flag(self.reply_path, fo::RP)
    }

    /// The text, or `None` for binary data.
    pub fn text(&self) -> Option<String> {
        self.user_data.text()
    }

    /// Encodes the PDU with a service-centre prefix (`None` writes `00`).
    pub fn encode(&self, sca: Option<&Address>) -> Result<EncodedPdu, Error> {
        user_data::check_alphabet(self.dcs, &self.user_data.payload)?;
        let mut buf = PduBuf::new();
        Address::encode_sca(sca, &mut buf)?;
        let sca_len = buf.len();
        buf.push(self.first_octet())?;
        self.originator.encode_tp(&mut buf)?;
        buf.push(self.protocol_identifier)?;
        buf.push(self.dcs.octet())?;
        buf.extend(&self.service_centre_timestamp.encode())?;
        self.user_data.encode(&mut buf)?;
        Ok(EncodedPdu::new(buf, sca_len))
    }

    pub(crate) fn decode_body(first: u8, r: &mut Reader<'_>) -> Result<Self, Error> {
        let originator = Address::decode_tp(r, "originating address")?;
        let protocol_identifier = r.u8("protocol identifier")?;
        let dcs = Dcs::from_octet(r.u8("data coding scheme")?);
        let service_centre_timestamp = Timestamp::decode(
            r.array::<TIMESTAMP_LEN>("service centre timestamp")?,
            "service centre timestamp",
        )?;
        let user_data = UserData::decode(r, dcs, first & fo::UDHI != 0)?;
        Ok(Deliver {
            more_messages_to_send: first & fo::MMS == 0,
            loop_prevention: first & fo::LP != 0,
            status_report_indication: first & fo::SRI != 0,
            reply_path: first & fo::RP != 0,
            originator,
            protocol_identifier,
            dcs,
            service_centre_timestamp,
            user_data,
        })
    }
}
