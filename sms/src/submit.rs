//! SMS-SUBMIT (TS 23.040 9.2.2.2): a message from the handset, or from
//! simlab through a modem's `AT+CMGS`, to the service centre.

use crate::Error;
use crate::address::Address;
use crate::cursor::{PduBuf, Reader};
use crate::dcs::Dcs;
use crate::first_octet::{self as fo, flag};
use crate::pdu::EncodedPdu;
use crate::user_data::{self, UserData};
use crate::validity::ValidityPeriod;

/// An SMS-SUBMIT.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Submit {
    /// TP-RD: ask the service centre to reject a resubmission with the same
    /// TP-MR and TP-DA.
    pub reject_duplicates: bool,
    /// TP-RP: ask the recipient to reply through the same service centre.
    pub reply_path: bool,
    /// TP-SRR: ask for an SMS-STATUS-REPORT.
    pub status_report_request: bool,
    /// TP-MR. Most modems overwrite it with their own counter and report it
    /// in `+CMGS: <mr>`.
    pub message_reference: u8,
    /// TP-DA.
    pub destination: Address,
    /// TP-PID; 0 for an ordinary message.
    pub protocol_identifier: u8,
    /// TP-DCS; must agree with the payload's alphabet.
    pub dcs: Dcs,
    /// TP-VP; `None` leaves it to the service centre.
    pub validity_period: Option<ValidityPeriod>,
    /// TP-UD.
    pub user_data: UserData,
}

impl Submit {
    /// A SUBMIT with default flags whose DCS follows the payload.
    pub fn new(destination: Address, user_data: UserData) -> Self {
        Submit {
            reject_duplicates: false,
            reply_path: false,
            status_report_request: false,
            message_reference: 0,
            destination,
            protocol_identifier: 0,
            dcs: Dcs::new(user_data.payload.alphabet(), None),
            validity_period: None,
            user_data,
        }
    }

    /// The first octet as it will be encoded.
    pub fn first_octet(&self) -> u8 {
        fo::MTI_SUBMIT
            | flag(self.reject_duplicates, fo::RD)
            | ValidityPeriod::format_bits(self.validity_period.as_ref()) << fo::VPF_SHIFT
            | flag(self.status_report_request, fo::SRR)
            | flag(self.user_data.header.is_some(), fo::UDHI)
            | flag(self.reply_path, fo::RP)
    }

    /// The text, or `None` for binary data.
    pub fn text(&self) -> Option<String> {
        self.user_data.text()
    }

    /// Encodes the PDU with a service-centre prefix: `None` writes `00`,
    /// which tells the modem to use its configured SMSC — the form
    /// `AT+CMGS` expects.
    pub fn encode(&self, sca: Option<&Address>) -> Result<EncodedPdu, Error> {
        user_data::check_alphabet(self.dcs, &self.user_data.payload)?;
        let mut buf = PduBuf::new();
        Address::encode_sca(sca, &mut buf)?;
        let sca_len = buf.len();
        buf.push(self.first_octet())?;
        buf.push(self.message_reference)?;
        self.destination.encode_tp(&mut buf)?;
        buf.push(self.protocol_identifier)?;
        buf.push(self.dcs.octet())?;
        if let Some(vp) = &self.validity_period {
            vp.encode(&mut buf)?;
        }
        self.user_data.encode(&mut buf)?;
        Ok(EncodedPdu::new(buf, sca_len))
    }

    /// Decodes what follows the first octet.
    pub(crate) fn decode_body(first: u8, r: &mut Reader<'_>) -> Result<Self, Error> {
        let message_reference = r.u8("message reference")?;
        let destination = Address::decode_tp(r, "destination address")?;
        let protocol_identifier = r.u8("protocol identifier")?;
        let dcs = Dcs::from_octet(r.u8("data coding scheme")?);
        let validity_period = ValidityPeriod::decode((first >> fo::VPF_SHIFT) & fo::VPF_MASK, r)?;
        let user_data = UserData::decode(r, dcs, first & fo::UDHI != 0)?;
        Ok(Submit {
            reject_duplicates: first & fo::RD != 0,
            reply_path: first & fo::RP != 0,
            status_report_request: first & fo::SRR != 0,
            message_reference,
            destination,
            protocol_identifier,
            dcs,
            validity_period,
            user_data,
        })
    }
}
