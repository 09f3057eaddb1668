//! One way for a service to send and receive short messages, whatever carries them: a real
//! modem or the virtual one over the AT engine ([`AtBackend`], chosen by `--modem PATH`), or
//! nothing at all ([`NullBackend`], for benchmarks that measure the service alone).
//!
//! Services (seed 004's OTP server; seeds 002 and 003 later) hold a `Box<dyn SmsBackend>` and
//! never speak AT themselves. The options are the SUBMIT fields services have a reason to set:
//! TP-VP (a one-time code must not arrive after it expired), the message class, TP-PID, a
//! status report, and whether the body is confidential (then neither it nor the PDUs that carry
//! it appear in an AT trace or an error).

use crate::{Modem, ModemError, OpenOptions};
use simlab_sms::{
    Address, ConcatReference, Deliver, MessageClass, Pdu, Push, Reassembler, SubmitOptions,
    ValidityPeriod,
};
use std::path::Path;
use std::time::{Duration, Instant};

/// What a sender may ask of one message.
#[derive(Clone, Debug, Default)]
pub struct SendOptions {
    /// TP-VP: the service centre gives up after this (rounded up to the next relative value).
    pub validity: Option<Duration>,
    /// The DCS message class (class 0: shown at once, not stored).
    pub class: Option<MessageClass>,
    /// TP-PID.
    pub protocol_identifier: u8,
    /// TP-SRR: ask for a status report.
    pub status_report: bool,
    /// Refuse bodies needing more parts than this (0: the SMS library's maximum).
    pub max_parts: u8,
    /// The body holds a secret: blanked from traces and errors.
    pub confidential: bool,
}

/// What the backend did with a message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Receipt {
    /// Parts sent.
    pub parts: usize,
    /// The message references (TP-MR) the network gave each part; empty for the null backend.
    pub references: Vec<u8>,
    /// The TP-VP actually encoded, in seconds (`None`: left to the service centre).
    pub validity_seconds: Option<u64>,
}

/// A whole incoming message (all parts of a concatenated one).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Incoming {
    /// The originator as the network gave it (`+<digits>` for international numbers).
    pub from: String,
    /// The text, `None` for 8-bit data.
    pub text: Option<String>,
    /// The user data of an 8-bit data message, all parts joined, headers removed; `None` for
    /// text.
    pub data: Option<Vec<u8>>,
    /// TP-PID of the DELIVER (of its first part): 0 for plain messages, 0xC0..=0xFF for
    /// service-centre specific use (seed 003's service messages carry 0xC1).
    pub protocol_identifier: u8,
}

/// Why a message could not be sent or received.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    /// The body or the options cannot be encoded (too long, bad address): nothing was sent.
    #[error("the message cannot be encoded: {0}")]
    Encode(simlab_sms::Error),
    /// The modem failed; [`ModemError::PartialSend`] says which parts went out.
    #[error(transparent)]
    Modem(#[from] ModemError),
}

impl BackendError {
    /// Whether some part may have reached the network (a failure after the first part, or a
    /// submit whose confirmation never came).
    pub fn maybe_sent(&self) -> bool {
        match self {
            BackendError::Encode(_) => false,
            BackendError::Modem(ModemError::PartialSend { sent, cause, .. }) => {
                !sent.is_empty()
                    || matches!(
                        **cause,
                        ModemError::Timeout {
                            stage: crate::Stage::Submit,
                            ..
                        } | ModemError::Vanished { .. }
                    )
            }
            BackendError::Modem(_) => false,
        }
    }
}

/// Sends and receives short messages.
pub trait SmsBackend: Send {
    /// Sends `body` to `to`, split into as many parts as it needs. All parts or an error.
    fn send(
        &mut self,
        to: &Address,
        body: &str,
        options: &SendOptions,
    ) -> Result<Receipt, BackendError>;

    /// Sends `data` to `to` as 8-bit data (TP-PID from `options.protocol_identifier`), split
    /// into concatenated parts as it needs. All parts or an error.
    fn send_data(
        &mut self,
        to: &Address,
        data: &[u8],
        options: &SendOptions,
    ) -> Result<Receipt, BackendError>;

    /// The whole messages that arrived since the last call, oldest first; each is returned
    /// once (the AT backend deletes it from the modem's storage once it is whole).
    fn incoming(&mut self) -> Result<Vec<Incoming>, BackendError>;

    /// For logs: `AT on /dev/ttyUSB2`, `null`.
    fn describe(&self) -> String;
}

/// How long the parts of a concatenated incoming message may take to arrive.
const REASSEMBLY: Duration = Duration::from_secs(120);

/// The AT engine over a modem port, real or virtual.
pub struct AtBackend {
    modem: Modem,
    reassembler: Reassembler<Deliver>,
}

impl AtBackend {
    /// Opens the modem at `path`, makes it ready for SMS (SIM ready, PDU mode) and turns on
    /// new-message storage indications.
    pub fn open(path: &Path, options: OpenOptions) -> Result<AtBackend, ModemError> {
        let modem = Modem::open(path, options)?;
        Self::over(modem)
    }

    /// A backend over an already opened modem.
    pub fn over(mut modem: Modem) -> Result<AtBackend, ModemError> {
        modem.prepare_sms()?;
        // Stored indications: an incoming message waits in storage until `incoming` reads it.
        modem.enable_indications(false)?;
        Ok(AtBackend {
            modem,
            reassembler: Reassembler::new(REASSEMBLY),
        })
    }
}

impl AtBackend {
    /// Sends encoded parts, their hex blanked from the AT trace when the body is a secret.
    fn send_parts(
        &mut self,
        parts: &[simlab_sms::EncodedPdu],
        confidential: bool,
        validity: Option<ValidityPeriod>,
    ) -> Result<Receipt, BackendError> {
        if confidential {
            for p in parts {
                self.modem.at().add_secret(&p.to_hex());
            }
        }
        let sent = self.modem.send_pdus(parts)?;
        Ok(Receipt {
            parts: sent.len(),
            references: sent.iter().map(|p| p.mr).collect(),
            validity_seconds: validity.and_then(|v| v.duration()).map(|d| d.as_secs()),
        })
    }
}

impl SmsBackend for AtBackend {
    fn send(
        &mut self,
        to: &Address,
        body: &str,
        options: &SendOptions,
    ) -> Result<Receipt, BackendError> {
        let (submit, validity) = submit_options(options, concat_reference())?;
        let parts = simlab_sms::encode_text(to, body, &submit).map_err(BackendError::Encode)?;
        if options.confidential {
            self.modem.at().add_secret(body);
        }
        self.send_parts(&parts, options.confidential, validity)
    }

    fn send_data(
        &mut self,
        to: &Address,
        data: &[u8],
        options: &SendOptions,
    ) -> Result<Receipt, BackendError> {
        let (submit, validity) = submit_options(options, concat_reference())?;
        let parts = simlab_sms::encode_binary(to, data, &submit).map_err(BackendError::Encode)?;
        self.send_parts(&parts, options.confidential, validity)
    }

    fn incoming(&mut self) -> Result<Vec<Incoming>, BackendError> {
        let mut out = Vec::new();
        // Drops the URCs (+CMTI) queued since the last call: storage is read in full anyway.
        let _ = self.modem.at().poll(Duration::ZERO)?;
        for stored in self.modem.list(4)? {
            // Only received messages (0 unread, 1 read); drafts and sent copies stay.
            if stored.status > 1 {
                continue;
            }
            let deliver = match stored.decoded {
                Ok(d) => match d.pdu {
                    Pdu::Deliver(m) => Some(m),
                    _ => None,
                },
                Err(_) => None,
            };
            // Read (or undecodable: it would be listed again forever): deleted either way.
            self.modem.delete(stored.index)?;
            let Some(m) = deliver else { continue };
            let from = m.originator.to_string();
            match self.reassembler.push(m, Instant::now()) {
                Ok(Push::Complete(msg)) => out.push(whole(from, &msg)),
                Ok(Push::Pending { .. } | Push::Duplicate) | Err(_) => {}
            }
        }
        let _ = self.reassembler.expire(Instant::now());
        Ok(out)
    }

    fn describe(&self) -> String {
        format!("AT on {}", self.modem.port())
    }
}

/// A whole reassembled DELIVER as the services see it.
fn whole(from: String, msg: &simlab_sms::Message<Deliver>) -> Incoming {
    let text = msg.text();
    let binary = msg
        .parts
        .iter()
        .any(|p| matches!(p.user_data.payload, simlab_sms::Payload::Binary(_)));
    Incoming {
        from,
        data: (text.is_none() && binary).then(|| msg.data()),
        text,
        protocol_identifier: msg.parts.first().map_or(0, |p| p.protocol_identifier),
    }
}

/// The SUBMIT fields of `options`, and the TP-VP they come to; the same for every backend, so
/// the null one refuses what a modem would.
fn submit_options(
    options: &SendOptions,
    reference: u8,
) -> Result<(SubmitOptions, Option<ValidityPeriod>), BackendError> {
    let validity = options
        .validity
        .map(ValidityPeriod::at_least)
        .transpose()
        .map_err(BackendError::Encode)?;
    let submit = SubmitOptions {
        validity_period: validity,
        status_report_request: options.status_report,
        message_class: options.class,
        protocol_identifier: options.protocol_identifier,
        concat_reference: ConcatReference::Bits8(reference),
        max_parts: if options.max_parts == 0 {
            SubmitOptions::default().max_parts
        } else {
            options.max_parts
        },
        ..SubmitOptions::default()
    };
    Ok((submit, validity))
}

/// An 8-bit concatenation reference: random, so two messages to one phone rarely share it.
/// It is no secret; should the random source fail, 0 is as valid a reference as any.
fn concat_reference() -> u8 {
    use std::io::Read;
    let mut b = [0u8; 1];
    let _ = std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut b));
    b[0]
}

/// Sends nothing and receives nothing; counts what it was given. For benchmarks of the
/// service alone, never for a deployment.
#[derive(Debug, Default)]
pub struct NullBackend {
    /// Messages "sent".
    pub sent: usize,
}

impl NullBackend {
    /// A send that goes nowhere. Encoded all the same, so a body the modem would refuse is
    /// refused here too, and the receipt counts the parts a modem would have sent.
    fn pretend<P>(
        &mut self,
        options: &SendOptions,
        encode: impl FnOnce(&SubmitOptions) -> Result<Vec<P>, simlab_sms::Error>,
    ) -> Result<Receipt, BackendError> {
        let (submit, validity) = submit_options(options, 0)?;
        let parts = encode(&submit).map_err(BackendError::Encode)?;
        self.sent += 1;
        Ok(Receipt {
            parts: parts.len(),
            references: Vec::new(),
            validity_seconds: validity.and_then(|v| v.duration()).map(|d| d.as_secs()),
        })
    }
}

impl SmsBackend for NullBackend {
    fn send(
        &mut self,
        to: &Address,
        body: &str,
        options: &SendOptions,
    ) -> Result<Receipt, BackendError> {
        self.pretend(options, |submit| simlab_sms::encode_text(to, body, submit))
    }

    fn send_data(
        &mut self,
        to: &Address,
        data: &[u8],
        options: &SendOptions,
    ) -> Result<Receipt, BackendError> {
        self.pretend(options, |submit| {
            simlab_sms::encode_binary(to, data, submit)
        })
    }

    fn incoming(&mut self) -> Result<Vec<Incoming>, BackendError> {
        Ok(Vec::new())
    }

    fn describe(&self) -> String {
        "null (nothing is sent)".into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_null_backend_encodes_and_reports_the_validity() {
        let mut b = NullBackend::default();
        let to = Address::parse("+491700000099").unwrap();
        let r = b
            .send(
                &to,
                "Pay 150.00 EUR to ACME? Code 123456",
                &SendOptions {
                    validity: Some(Duration::from_secs(300)),
                    ..SendOptions::default()
                },
            )
            .unwrap();
        assert_eq!((r.parts, r.validity_seconds), (1, Some(300)));
        // 301 s needs the next relative value: 10 minutes.
        let r = b
            .send(
                &to,
                "x",
                &SendOptions {
                    validity: Some(Duration::from_secs(301)),
                    ..SendOptions::default()
                },
            )
            .unwrap();
        assert_eq!(r.validity_seconds, Some(600));
        assert_eq!(b.sent, 2);
        assert!(b.incoming().unwrap().is_empty());
        // More parts than the sender allows: refused before anything is sent.
        let two_parts = SendOptions {
            max_parts: 2,
            ..SendOptions::default()
        };
        let e = b.send(&to, &"x".repeat(3 * 153), &two_parts).unwrap_err();
        assert!(
            matches!(e, BackendError::Encode(_)) && !e.maybe_sent(),
            "{e}"
        );
    }

    #[test]
    fn the_null_backend_splits_8_bit_data() {
        let mut b = NullBackend::default();
        let to = Address::parse("+491710000000").unwrap();
        let options = SendOptions {
            protocol_identifier: 0xC1,
            ..SendOptions::default()
        };
        // 140 octets fit one part; with the concatenation header a part holds 134.
        let r = b.send_data(&to, &[0x5a; 140], &options).unwrap();
        assert_eq!(r.parts, 1);
        let r = b.send_data(&to, &[0x5a; 141], &options).unwrap();
        assert_eq!(r.parts, 2);
        assert_eq!(b.sent, 2);
    }

    #[test]
    fn reassembled_data_keeps_its_bytes_and_pid() {
        let to = Address::parse("+491710000000").unwrap();
        let data: Vec<u8> = (0..=255u8).chain(0..50).collect();
        let submit = SubmitOptions {
            protocol_identifier: 0xC1,
            concat_reference: ConcatReference::Bits8(7),
            ..SubmitOptions::default()
        };
        let parts = simlab_sms::encode_binary(&to, &data, &submit).unwrap();
        assert_eq!(parts.len(), 3);
        let from = Address::parse("+491711234567").unwrap();
        let mut r = Reassembler::<Deliver>::new(REASSEMBLY);
        let mut whole_message = None;
        for p in parts.iter().rev() {
            let Ok(Pdu::Submit(s)) = simlab_sms::decode(p.as_bytes(), true).map(|d| d.pdu) else {
                panic!("not a SUBMIT");
            };
            assert_eq!(s.protocol_identifier, 0xC1);
            let mut d = Deliver::new(
                from.clone(),
                simlab_sms::Timestamp::new(26, 12, 7, 6, 0, 0, 0).unwrap(),
                s.user_data,
            );
            d.dcs = s.dcs;
            d.protocol_identifier = s.protocol_identifier;
            if let Push::Complete(m) = r.push(d, Instant::now()).unwrap() {
                whole_message = Some(m);
            }
        }
        let m = whole(from.to_string(), &whole_message.expect("complete"));
        assert_eq!(m.data.as_deref(), Some(&data[..]));
        assert_eq!((m.text, m.protocol_identifier), (None, 0xC1));
        assert_eq!(m.from, "+491711234567");
        // A text message has no data.
        let mut d = Deliver::new(
            from.clone(),
            simlab_sms::Timestamp::new(26, 12, 7, 6, 0, 0, 0).unwrap(),
            simlab_sms::UserData::from_text("hi"),
        );
        d.protocol_identifier = 0;
        let Push::Complete(t) = r.push(d, Instant::now()).unwrap() else {
            panic!("one part is whole");
        };
        let t = whole(from.to_string(), &t);
        assert_eq!(
            (t.text.as_deref(), t.data, t.protocol_identifier),
            (Some("hi"), None, 0)
        );
    }
}
