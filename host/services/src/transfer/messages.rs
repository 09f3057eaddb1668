//! The service messages of seed 003 that travel by SMS: M1 (the order a subscriber sends to
//! its operator, step 100), M3 (the offer an operator shows the other party, 115/120) and M4
//! (that party's answer, 130). Each is 8-bit data with TP-PID [`SERVICE_PID`], the body
//! enc([`LABEL`], kind, fields…) as every signed structure of simlab (`crate::wire`).
//!
//! M1 and M4 end with their authentication: the token's ECDSA signature over every byte
//! before it (the recommended mode: the card checked the PIN, the token signed), or the
//! seed's literal PIN (an explicit lab mode). M4 carries the SHA-256 of the M3 it answers, so
//! an acceptance binds exactly what the phone showed — the point-of-sale check of Fig 3 is
//! that same hash. M2 and the commit messages stay between operators on channel 121 (JSON
//! over mutual TLS, [`super::peer`]).
//!
//! Decoding is strict (exactly the fields of the kind, nothing after), so
//! `decode(b)?.encode() == b` and one message has one meaning; every field is bounded, so no
//! body needs more than three SMS parts.

use crate::wire::{Reader, WireError, enc};
use sha2::{Digest, Sha256};
use std::fmt;

/// The first field of every service message.
pub const LABEL: &str = "simlab-svc-v1";
/// M-TYPE: the TP-PID of service messages (TS 23.040 9.2.3.9, "SC specific use").
pub const SERVICE_PID: u8 = 0xC1;
/// T-REF: 8 random bytes chosen by the debtor's operator.
pub const TREF_LEN: usize = 8;
/// The longest P-MSG (the note the other party reads).
pub const MESSAGE_MAX: usize = 80;
/// The longest ticket id.
pub const TICKET_MAX: usize = 32;
/// The longest DER ECDSA P-256 signature.
pub const SIGNATURE_MAX: usize = 72;
/// The largest amount in minor units: what an SQL INTEGER holds, so sums cannot wrap there.
pub const AMOUNT_MAX: u64 = 1 << 53;

/// A transaction reference.
pub type TRef = [u8; TREF_LEN];

/// Why a service message was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MessageError {
    /// Not enc(), a different label, truncated, trailing bytes, or a field of the wrong size.
    #[error(transparent)]
    Wire(#[from] WireError),
    /// A kind this version does not know (`M2` travels between operators, never by SMS).
    #[error("{0:?} is not a service message kind (M1, M3, M4)")]
    Kind(String),
    /// A field that decodes but breaks its rule.
    #[error("{field}: {reason}")]
    Field { field: &'static str, reason: String },
}

fn bad(field: &'static str, reason: impl Into<String>) -> MessageError {
    MessageError::Field {
        field,
        reason: reason.into(),
    }
}

/// R-APP: which service an order is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Service {
    /// Move money from the sender's account to the receiver's.
    Pay,
    /// Move M uses of the sender's ticket to a new ticket of the receiver.
    Ticket,
    /// Point of sale (Fig 3): the sender (a cashier) bills the receiver, who pays if it
    /// accepts; the money moves the other way.
    Bill,
}

impl Service {
    pub fn as_str(self) -> &'static str {
        match self {
            Service::Pay => "pay",
            Service::Ticket => "ticket",
            Service::Bill => "bill",
        }
    }

    pub fn parse(s: &str) -> Option<Service> {
        Some(match s {
            "pay" => Service::Pay,
            "ticket" => Service::Ticket,
            "bill" => Service::Bill,
            _ => return None,
        })
    }
}

/// P1 and P2: what moves.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Goods {
    /// An amount in minor units of `currency`.
    Money { amount: u64, currency: String },
    /// `uses` of the ticket `ticket`.
    Uses { ticket: String, uses: u32 },
}

impl Goods {
    fn write(&self, fields: &mut Vec<Vec<u8>>) {
        match self {
            Goods::Money { amount, currency } => {
                fields.push(b"money".to_vec());
                fields.push(amount.to_be_bytes().to_vec());
                fields.push(currency.as_bytes().to_vec());
            }
            Goods::Uses { ticket, uses } => {
                fields.push(b"uses".to_vec());
                fields.push(ticket.as_bytes().to_vec());
                fields.push(uses.to_be_bytes().to_vec());
            }
        }
    }

    fn read(r: &mut Reader<'_>) -> Result<Goods, MessageError> {
        let kind = r.text("goods")?;
        let goods = match kind {
            "money" => Goods::Money {
                amount: r.u64("amount")?,
                currency: r.text("currency")?.to_string(),
            },
            "uses" => Goods::Uses {
                ticket: r.text("ticket")?.to_string(),
                uses: u32::from_be_bytes(r.fixed::<4>("uses")?),
            },
            other => return Err(bad("goods", format!("{other:?} is neither money nor uses"))),
        };
        goods.check()?;
        Ok(goods)
    }

    /// The rules both sides check: a positive amount that sums safely, a currency code, a
    /// ticket id, at least one use.
    pub fn check(&self) -> Result<(), MessageError> {
        match self {
            Goods::Money { amount, currency } => {
                if *amount == 0 || *amount > AMOUNT_MAX {
                    return Err(bad("amount", format!("{amount} is not 1 to {AMOUNT_MAX}")));
                }
                if !(currency.len() == 3 && currency.bytes().all(|b| b.is_ascii_uppercase())) {
                    return Err(bad("currency", format!("{currency:?} is not ISO 4217")));
                }
            }
            Goods::Uses { ticket, uses } => {
                check_ticket_id(ticket)?;
                if *uses == 0 {
                    return Err(bad("uses", "at least one use"));
                }
            }
        }
        Ok(())
    }

    /// For people: `2.50 EUR`, `3 uses of ticket T-1`.
    pub fn display(&self) -> String {
        match self {
            Goods::Money { amount, currency } => {
                let exp = crate::otp::currency_exponent(currency);
                let unit = 10u64.pow(exp);
                if exp == 0 {
                    format!("{amount} {currency}")
                } else {
                    format!(
                        "{}.{:0w$} {currency}",
                        amount / unit,
                        amount % unit,
                        w = exp as usize
                    )
                }
            }
            Goods::Uses { ticket, uses } => format!("{uses} uses of ticket {ticket}"),
        }
    }
}

/// A ticket id: 1 to 32 printable ASCII characters, no spaces.
pub fn check_ticket_id(id: &str) -> Result<(), MessageError> {
    if (1..=TICKET_MAX).contains(&id.len()) && id.bytes().all(|b| (0x21..=0x7E).contains(&b)) {
        Ok(())
    } else {
        Err(bad(
            "ticket",
            format!("{id:?} is not a ticket id (1 to {TICKET_MAX} printable characters)"),
        ))
    }
}

/// An international number as the messages carry it: `+` and 1 to 15 digits (E.164).
pub fn check_number(field: &'static str, n: &str) -> Result<(), MessageError> {
    let digits = n.strip_prefix('+').unwrap_or("");
    if (1..=15).contains(&digits.len()) && digits.bytes().all(|b| b.is_ascii_digit()) {
        Ok(())
    } else {
        Err(bad(
            field,
            format!("{n:?} is not an international number (+ and up to 15 digits)"),
        ))
    }
}

/// P-MSG: up to [`MESSAGE_MAX`] bytes of text without control characters (it is shown on a
/// phone and written in logs' neighbourhood; no escape sequences).
pub fn check_message(m: &str) -> Result<(), MessageError> {
    if m.len() > MESSAGE_MAX {
        return Err(bad(
            "message",
            format!("{} bytes, at most {MESSAGE_MAX}", m.len()),
        ));
    }
    if m.chars().any(char::is_control) {
        return Err(bad("message", "control characters"));
    }
    Ok(())
}

/// How an order or an answer proves who sent it.
#[derive(Clone, PartialEq, Eq)]
pub enum Auth {
    /// The token's DER ECDSA P-256 signature over the message's bytes before this field; the
    /// card verified the PIN first.
    Signature(Vec<u8>),
    /// The service PIN itself (the seed's literal PIN1/PIN2 in the SMS): lab mode only.
    Pin(String),
}

impl fmt::Debug for Auth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Auth::Signature(s) => write!(f, "Signature({} bytes)", s.len()),
            Auth::Pin(_) => f.write_str("Pin(redacted)"),
        }
    }
}

impl Auth {
    fn write(&self, fields: &mut Vec<Vec<u8>>) {
        match self {
            Auth::Signature(s) => {
                fields.push(b"sig".to_vec());
                fields.push(s.clone());
            }
            Auth::Pin(p) => {
                fields.push(b"pin".to_vec());
                fields.push(p.as_bytes().to_vec());
            }
        }
    }

    fn read(r: &mut Reader<'_>) -> Result<Auth, MessageError> {
        let kind = r.text("auth")?;
        let value = r.field("auth value")?;
        match kind {
            "sig" => {
                if value.len() < 8 || value.len() > SIGNATURE_MAX || value[0] != 0x30 {
                    return Err(bad("signature", "not a DER ECDSA P-256 signature"));
                }
                Ok(Auth::Signature(value.to_vec()))
            }
            "pin" => {
                let pin = std::str::from_utf8(value).unwrap_or("");
                check_pin(pin)?;
                Ok(Auth::Pin(pin.to_string()))
            }
            other => Err(bad("auth", format!("{other:?} is neither sig nor pin"))),
        }
    }
}

/// A service PIN: 4 to 8 digits.
pub fn check_pin(pin: &str) -> Result<(), MessageError> {
    if (4..=8).contains(&pin.len()) && pin.bytes().all(|b| b.is_ascii_digit()) {
        Ok(())
    } else {
        Err(bad("pin", "a service PIN is 4 to 8 digits"))
    }
}

/// M1 (step 100): the sender's order to its own operator.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Order {
    pub service: Service,
    /// S-MS.
    pub sender: String,
    /// R-MS.
    pub receiver: String,
    /// P-MSG.
    pub message: String,
    /// P1, P2.
    pub goods: Goods,
    /// Unix seconds; the operator refuses orders far from its clock (a replayed SMS).
    pub issued_at: u64,
    /// PIN1 or the token's signature.
    pub auth: Auth,
}

/// M3 (115/120): what an operator asks the other party to accept.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Offer {
    pub tref: TRef,
    pub service: Service,
    pub sender: String,
    pub receiver: String,
    /// R-OPER: the name of the operator whose subscriber sent the order.
    pub operator: String,
    pub message: String,
    pub goods: Goods,
    /// PX: the answer must arrive before this (Unix seconds).
    pub deadline: u64,
}

/// What the other party says (M4's response).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case", tag = "response")]
pub enum Response {
    Accept,
    Reject,
    /// Ask again later: the answer is put off until this time (Unix seconds).
    Postpone {
        until: u64,
    },
}

impl Response {
    pub fn as_str(self) -> &'static str {
        match self {
            Response::Accept => "accept",
            Response::Reject => "reject",
            Response::Postpone { .. } => "postpone",
        }
    }
}

/// M4 (130): the other party's answer to an offer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Answer {
    pub tref: TRef,
    pub response: Response,
    /// The party answering (the offer's receiver).
    pub from: String,
    /// SHA-256 of the exact M3 bytes shown: an answer accepts what was seen, nothing else.
    pub offer_hash: [u8; 32],
    pub issued_at: u64,
    /// PIN2 or the token's signature.
    pub auth: Auth,
}

/// One service message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Message {
    Order(Order),
    Offer(Offer),
    Answer(Answer),
}

fn to_bytes(fields: &[Vec<u8>]) -> Vec<u8> {
    let refs: Vec<&[u8]> = fields.iter().map(Vec::as_slice).collect();
    enc(&refs)
}

impl Order {
    fn head(&self) -> Vec<Vec<u8>> {
        let mut f = vec![
            LABEL.as_bytes().to_vec(),
            b"M1".to_vec(),
            self.service.as_str().as_bytes().to_vec(),
            self.sender.as_bytes().to_vec(),
            self.receiver.as_bytes().to_vec(),
            self.message.as_bytes().to_vec(),
        ];
        self.goods.write(&mut f);
        f.push(self.issued_at.to_be_bytes().to_vec());
        f
    }

    /// The bytes the token signs: everything before the authentication.
    pub fn signed_bytes(&self) -> Vec<u8> {
        to_bytes(&self.head())
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut f = self.head();
        self.auth.write(&mut f);
        to_bytes(&f)
    }

    fn check(&self) -> Result<(), MessageError> {
        check_number("sender", &self.sender)?;
        check_number("receiver", &self.receiver)?;
        check_message(&self.message)?;
        self.goods.check()?;
        match (self.service, &self.goods) {
            (Service::Pay | Service::Bill, Goods::Money { .. })
            | (Service::Ticket, Goods::Uses { .. }) => Ok(()),
            (s, _) => Err(bad(
                "goods",
                format!(
                    "the {} service moves {}",
                    s.as_str(),
                    match s {
                        Service::Ticket => "ticket uses",
                        _ => "money",
                    }
                ),
            )),
        }
    }
}

impl Offer {
    pub fn encode(&self) -> Vec<u8> {
        let mut f = vec![
            LABEL.as_bytes().to_vec(),
            b"M3".to_vec(),
            self.tref.to_vec(),
            self.service.as_str().as_bytes().to_vec(),
            self.sender.as_bytes().to_vec(),
            self.receiver.as_bytes().to_vec(),
            self.operator.as_bytes().to_vec(),
            self.message.as_bytes().to_vec(),
        ];
        self.goods.write(&mut f);
        f.push(self.deadline.to_be_bytes().to_vec());
        to_bytes(&f)
    }

    /// What an answer's `offer_hash` must be.
    pub fn hash(&self) -> [u8; 32] {
        Sha256::digest(self.encode()).into()
    }
}

impl Answer {
    fn head(&self) -> Vec<Vec<u8>> {
        let until = match self.response {
            Response::Postpone { until } => until,
            _ => 0,
        };
        vec![
            LABEL.as_bytes().to_vec(),
            b"M4".to_vec(),
            self.tref.to_vec(),
            self.response.as_str().as_bytes().to_vec(),
            until.to_be_bytes().to_vec(),
            self.from.as_bytes().to_vec(),
            self.offer_hash.to_vec(),
            self.issued_at.to_be_bytes().to_vec(),
        ]
    }

    /// The bytes the token signs: everything before the authentication.
    pub fn signed_bytes(&self) -> Vec<u8> {
        to_bytes(&self.head())
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut f = self.head();
        self.auth.write(&mut f);
        to_bytes(&f)
    }
}

impl Message {
    pub fn encode(&self) -> Vec<u8> {
        match self {
            Message::Order(m) => m.encode(),
            Message::Offer(m) => m.encode(),
            Message::Answer(m) => m.encode(),
        }
    }

    /// Reads a service message's body; refuses anything but one well-formed M1, M3 or M4.
    pub fn decode(bytes: &[u8]) -> Result<Message, MessageError> {
        let mut r = Reader::new(bytes, LABEL)?;
        let kind = r.text("kind")?;
        let m = match kind {
            "M1" => {
                let service = read_service(&mut r)?;
                let o = Order {
                    service,
                    sender: r.text("sender")?.to_string(),
                    receiver: r.text("receiver")?.to_string(),
                    message: r.text("message")?.to_string(),
                    goods: Goods::read(&mut r)?,
                    issued_at: r.u64("issued_at")?,
                    auth: Auth::read(&mut r)?,
                };
                o.check()?;
                Message::Order(o)
            }
            "M3" => {
                let tref = r.fixed::<TREF_LEN>("tref")?;
                let service = read_service(&mut r)?;
                let o = Offer {
                    tref,
                    service,
                    sender: r.text("sender")?.to_string(),
                    receiver: r.text("receiver")?.to_string(),
                    operator: r.text("operator")?.to_string(),
                    message: r.text("message")?.to_string(),
                    goods: Goods::read(&mut r)?,
                    deadline: r.u64("deadline")?,
                };
                check_number("sender", &o.sender)?;
                check_number("receiver", &o.receiver)?;
                check_message(&o.message)?;
                check_operator(&o.operator)?;
                Message::Offer(o)
            }
            "M4" => {
                let tref = r.fixed::<TREF_LEN>("tref")?;
                let response = r.text("response")?;
                let until = r.u64("until")?;
                let response = match (response, until) {
                    ("accept", 0) => Response::Accept,
                    ("reject", 0) => Response::Reject,
                    ("postpone", u) if u > 0 => Response::Postpone { until: u },
                    ("accept" | "reject", _) => {
                        return Err(bad("until", "only a postponement has a time"));
                    }
                    ("postpone", _) => return Err(bad("until", "a postponement needs a time")),
                    (other, _) => {
                        return Err(bad(
                            "response",
                            format!("{other:?} is not accept, reject or postpone"),
                        ));
                    }
                };
                let a = Answer {
                    tref,
                    response,
                    from: r.text("from")?.to_string(),
                    offer_hash: r.fixed::<32>("offer_hash")?,
                    issued_at: r.u64("issued_at")?,
                    auth: Auth::read(&mut r)?,
                };
                check_number("from", &a.from)?;
                Message::Answer(a)
            }
            other => return Err(MessageError::Kind(other.to_string())),
        };
        r.finish()?;
        Ok(m)
    }
}

/// An operator name: 1 to 32 printable ASCII characters, no spaces.
pub fn check_operator(name: &str) -> Result<(), MessageError> {
    if (1..=32).contains(&name.len()) && name.bytes().all(|b| (0x21..=0x7E).contains(&b)) {
        Ok(())
    } else {
        Err(bad(
            "operator",
            format!("{name:?} is not an operator name (1 to 32 printable characters)"),
        ))
    }
}

fn read_service(r: &mut Reader<'_>) -> Result<Service, MessageError> {
    let s = r.text("service")?;
    Service::parse(s).ok_or_else(|| bad("service", format!("{s:?} is not pay, ticket or bill")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn order(auth: Auth) -> Order {
        Order {
            service: Service::Pay,
            sender: "+491710000001".into(),
            receiver: "+491720000002".into(),
            message: "rent <march>".into(),
            goods: Goods::Money {
                amount: 25_000,
                currency: "EUR".into(),
            },
            issued_at: 1_800_000_000,
            auth,
        }
    }

    #[test]
    fn every_kind_round_trips_byte_for_byte() {
        let sig = {
            let mut s = vec![0x30, 0x44];
            s.extend([7u8; 68]);
            s
        };
        let offer = Offer {
            tref: [1, 2, 3, 4, 5, 6, 7, 8],
            service: Service::Ticket,
            sender: "+491710000001".into(),
            receiver: "+491720000002".into(),
            operator: "OP1".into(),
            message: String::new(),
            goods: Goods::Uses {
                ticket: "T-10".into(),
                uses: 3,
            },
            deadline: 1_800_000_600,
        };
        let answer = Answer {
            tref: offer.tref,
            response: Response::Postpone {
                until: 1_800_000_300,
            },
            from: offer.receiver.clone(),
            offer_hash: offer.hash(),
            issued_at: 1_800_000_010,
            auth: Auth::Pin("2468".into()),
        };
        for m in [
            Message::Order(order(Auth::Signature(sig.clone()))),
            Message::Order(order(Auth::Pin("1357".into()))),
            Message::Offer(offer),
            Message::Answer(answer),
        ] {
            let bytes = m.encode();
            assert_eq!(Message::decode(&bytes), Ok(m.clone()));
            // Three 8-bit parts of 134 bytes at most.
            assert!(bytes.len() <= 3 * 134, "{}", bytes.len());
            for n in 0..bytes.len() {
                assert!(Message::decode(&bytes[..n]).is_err(), "{n}");
            }
            let mut long = bytes.clone();
            long.push(0);
            assert!(Message::decode(&long).is_err());
        }
    }

    #[test]
    fn the_signature_covers_everything_before_it() {
        let o = order(Auth::Signature(vec![0x30; 70]));
        let b = o.encode();
        assert!(b.starts_with(&o.signed_bytes()));
        let mut other = o.clone();
        other.goods = Goods::Money {
            amount: 25_001,
            currency: "EUR".into(),
        };
        assert_ne!(other.signed_bytes(), o.signed_bytes());
    }

    #[test]
    fn rules_refuse_what_decodes() {
        let refuse = |o: Order, field: &str| match Message::decode(&o.encode()) {
            Err(MessageError::Field { field: f, .. }) => assert_eq!(f, field),
            other => panic!("{field}: {other:?}"),
        };
        let base = order(Auth::Pin("1234".into()));
        let mut o = base.clone();
        o.goods = Goods::Money {
            amount: 0,
            currency: "EUR".into(),
        };
        refuse(o, "amount");
        let mut o = base.clone();
        o.goods = Goods::Money {
            amount: u64::MAX,
            currency: "EUR".into(),
        };
        refuse(o, "amount");
        let mut o = base.clone();
        o.receiver = "0172".into();
        refuse(o, "receiver");
        let mut o = base.clone();
        o.message = "\x1b[2J".into();
        refuse(o, "message");
        let mut o = base.clone();
        o.auth = Auth::Pin("12".into());
        refuse(o, "pin");
        let mut o = base.clone();
        o.service = Service::Ticket;
        refuse(o, "goods");
        assert!(matches!(
            Message::decode(&enc(&[LABEL.as_bytes(), b"M2"])),
            Err(MessageError::Kind(_))
        ));
        assert!(matches!(
            Message::decode(b"hello"),
            Err(MessageError::Wire(_))
        ));
    }

    #[test]
    fn a_pin_never_reaches_debug_output() {
        let o = order(Auth::Pin("9876".into()));
        assert!(!format!("{o:?}").contains("9876"));
    }

    #[test]
    fn goods_are_shown_in_the_currencys_decimals() {
        let g = Goods::Money {
            amount: 25_000,
            currency: "EUR".into(),
        };
        assert_eq!(g.display(), "250.00 EUR");
        let g = Goods::Money {
            amount: 500,
            currency: "JPY".into(),
        };
        assert_eq!(g.display(), "500 JPY");
    }
}
