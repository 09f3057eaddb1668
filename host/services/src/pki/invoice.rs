//! The invoice of message 620: the exact bytes the token signs (message 630), the seller keeps
//! in its accounting record, and the gateway verifies before it bills (910/920).
//!
//! The encoding is length-prefixed and unambiguous — every field is `u16be(length) ‖ bytes`,
//! in a fixed order, opened by a label that names the format:
//!
//! ```text
//! invoice = enc("simlab-invoice-v1", seller_id, transaction_id, serial,
//!               u64be(amount), currency, u64be(issued_at), item)
//! enc(f_1, …, f_n) = u16be(len f_1) ‖ f_1 ‖ … ‖ u16be(len f_n) ‖ f_n
//! ```
//!
//! Because the seller id and the seller's transaction id are inside the signature, they are
//! the accounting record's identity: a seller cannot bill the same signed invoice twice under
//! another id, and the gateway's uniqueness check on (seller_id, transaction_id) is a check on
//! what the buyer signed. The certificate serial binds the invoice to one certificate and so
//! to its restrictions.

use std::fmt;

/// The first field: names the format (and its version) so these bytes cannot be read as any
/// other signed message.
pub const LABEL: &[u8] = b"simlab-invoice-v1";
/// Longest seller id and transaction id.
pub const ID_MAX: usize = 64;
/// Longest item description.
pub const ITEM_MAX: usize = 128;
/// Longest certificate serial (RFC 5280 4.1.2.2: 20 octets).
pub const SERIAL_MAX: usize = 20;

/// The fields of an invoice.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Invoice {
    /// Who sells, as registered with the gateway: `[A-Za-z0-9._-]`, 1-64 bytes.
    pub seller_id: String,
    /// The seller's unique id for this sale: `[A-Za-z0-9._-]`, 1-64 bytes.
    pub transaction_id: String,
    /// The serial of the buyer's certificate (INTEGER magnitude bytes, 1-20).
    pub serial: Vec<u8>,
    /// Price in minor units.
    pub amount: u64,
    /// ISO 4217 code.
    pub currency: String,
    /// When the seller issued the invoice, seconds since 1970 (UTC).
    pub issued_at: u64,
    /// What is sold, for the buyer to read: UTF-8, up to 128 bytes.
    pub item: String,
}

/// Why bytes are not a valid invoice.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InvoiceError(pub String);

impl fmt::Display for InvoiceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invoice: {}", self.0)
    }
}

impl std::error::Error for InvoiceError {}

/// Whether `id` may be a seller or transaction id.
pub fn valid_id(id: &str) -> bool {
    (1..=ID_MAX).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
}

impl Invoice {
    /// Checks every field's range.
    pub fn validate(&self) -> Result<(), InvoiceError> {
        let bad = |what: &str| Err(InvoiceError(what.to_string()));
        if !valid_id(&self.seller_id) {
            return bad("seller_id must be 1-64 characters of A-Z a-z 0-9 . _ -");
        }
        if !valid_id(&self.transaction_id) {
            return bad("transaction_id must be 1-64 characters of A-Z a-z 0-9 . _ -");
        }
        if !(1..=SERIAL_MAX).contains(&self.serial.len()) {
            return bad("serial must be 1-20 bytes");
        }
        if self.currency.len() != 3 || !self.currency.bytes().all(|b| b.is_ascii_uppercase()) {
            return bad("currency must be three upper-case letters");
        }
        if self.item.len() > ITEM_MAX {
            return bad("item must be at most 128 bytes");
        }
        Ok(())
    }

    /// The signed bytes. Fields are validated first, so every length fits its prefix.
    pub fn encode(&self) -> Result<Vec<u8>, InvoiceError> {
        self.validate()?;
        let fields: [&[u8]; 8] = [
            LABEL,
            self.seller_id.as_bytes(),
            self.transaction_id.as_bytes(),
            &self.serial,
            &self.amount.to_be_bytes(),
            self.currency.as_bytes(),
            &self.issued_at.to_be_bytes(),
            self.item.as_bytes(),
        ];
        let mut out = Vec::with_capacity(fields.iter().map(|f| f.len() + 2).sum());
        for f in fields {
            out.extend_from_slice(&(f.len() as u16).to_be_bytes());
            out.extend_from_slice(f);
        }
        Ok(out)
    }

    /// Parses signed bytes; exactly the eight fields, nothing after, every field valid. So
    /// `decode(b)?.encode()? == b` for every accepted `b`.
    pub fn decode(bytes: &[u8]) -> Result<Invoice, InvoiceError> {
        let mut rest = bytes;
        let mut next = |what: &str| -> Result<&[u8], InvoiceError> {
            let (len, tail) = rest
                .split_first_chunk::<2>()
                .ok_or_else(|| InvoiceError(format!("truncated before {what}")))?;
            let (value, tail) = tail
                .split_at_checked(u16::from_be_bytes(*len) as usize)
                .ok_or_else(|| InvoiceError(format!("{what} runs past the end")))?;
            rest = tail;
            Ok(value)
        };
        let text = |what: &str, b: &[u8]| {
            String::from_utf8(b.to_vec()).map_err(|_| InvoiceError(format!("{what} is not UTF-8")))
        };
        let u64_field = |what: &str, b: &[u8]| {
            <[u8; 8]>::try_from(b)
                .map(u64::from_be_bytes)
                .map_err(|_| InvoiceError(format!("{what} must be 8 bytes")))
        };
        if next("label")? != LABEL {
            return Err(InvoiceError("not a simlab-invoice-v1".into()));
        }
        let seller_id = text("seller_id", next("seller_id")?)?;
        let transaction_id = text("transaction_id", next("transaction_id")?)?;
        let serial = next("serial")?.to_vec();
        let amount = u64_field("amount", next("amount")?)?;
        let currency = text("currency", next("currency")?)?;
        let issued_at = u64_field("issued_at", next("issued_at")?)?;
        let item = text("item", next("item")?)?;
        if !rest.is_empty() {
            return Err(InvoiceError(format!(
                "{} bytes after the last field",
                rest.len()
            )));
        }
        let invoice = Invoice {
            seller_id,
            transaction_id,
            serial,
            amount,
            currency,
            issued_at,
            item,
        };
        invoice.validate()?;
        Ok(invoice)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Invoice {
        Invoice {
            seller_id: "cafe-1".into(),
            transaction_id: "t-0001".into(),
            serial: vec![0x12, 0x34],
            amount: 350,
            currency: "EUR".into(),
            issued_at: 1_700_000_000,
            item: "coffee".into(),
        }
    }

    #[test]
    fn exact_bytes_and_round_trip() {
        let bytes = sample().encode().unwrap();
        let mut expected = Vec::new();
        for f in [
            &b"simlab-invoice-v1"[..],
            b"cafe-1",
            b"t-0001",
            &[0x12, 0x34],
            &350u64.to_be_bytes(),
            b"EUR",
            &1_700_000_000u64.to_be_bytes(),
            b"coffee",
        ] {
            expected.extend_from_slice(&(f.len() as u16).to_be_bytes());
            expected.extend_from_slice(f);
        }
        assert_eq!(bytes, expected);
        assert_eq!(Invoice::decode(&bytes).unwrap(), sample());
    }

    #[test]
    fn malformed_invoices_are_refused() {
        let good = sample().encode().unwrap();
        assert!(Invoice::decode(&good[..good.len() - 1]).is_err());
        assert!(Invoice::decode(&[&good[..], &[0]].concat()).is_err());
        let mut other_label = good.clone();
        other_label[2] = b'S';
        assert!(Invoice::decode(&other_label).is_err());
        for bad in [
            Invoice {
                seller_id: "a b".into(),
                ..sample()
            },
            Invoice {
                transaction_id: String::new(),
                ..sample()
            },
            Invoice {
                serial: vec![],
                ..sample()
            },
            Invoice {
                currency: "EURO".into(),
                ..sample()
            },
            Invoice {
                item: "x".repeat(129),
                ..sample()
            },
        ] {
            assert!(bad.encode().is_err(), "{bad:?}");
        }
    }
}
