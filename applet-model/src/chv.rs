//! Card holder verification: PIN1/CHV1, PIN2/CHV2 and ADM1, each with a retry counter, and the
//! PUKs (UNBLOCK CHV) that reset them.
//!
//! Two rules protect the holder against an attacker who can cut power at will: the counter is
//! decremented *before* the comparison (so a reset mid-command cannot save a try), and the
//! comparison is constant time (so timing tells nothing about how many bytes matched).

use subtle::ConstantTimeEq;

/// The length of a PIN field on the wire: the digits, padded with FF.
pub const PIN_LEN: usize = 8;

/// Why a secret code operation did not succeed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChvError {
    /// The code was wrong; this many tries remain.
    Wrong { tries_left: u8 },
    /// No try is left: the code is blocked.
    Blocked,
    /// The new value is not 4–8 digits padded with FF.
    BadFormat,
}

/// One secret code and its counter.
#[derive(Clone, Debug)]
pub struct Secret {
    value: [u8; PIN_LEN],
    tries: u8,
    max: u8,
}

impl Secret {
    /// A code with its maximum number of tries, counter full.
    pub const fn new(value: [u8; PIN_LEN], max: u8) -> Self {
        Secret {
            value,
            tries: max,
            max,
        }
    }

    /// Tries remaining before the code blocks.
    pub const fn tries_left(&self) -> u8 {
        self.tries
    }

    /// The counter's maximum.
    pub const fn max_tries(&self) -> u8 {
        self.max
    }

    /// Whether no try is left.
    pub const fn is_blocked(&self) -> bool {
        self.tries == 0
    }

    /// Checks `candidate`, spending a try first and giving it back on success.
    pub fn check(&mut self, candidate: &[u8]) -> Result<(), ChvError> {
        if self.tries == 0 {
            return Err(ChvError::Blocked);
        }
        self.tries -= 1;
        let ok = candidate.len() == PIN_LEN && bool::from(self.value.ct_eq(candidate));
        if ok {
            self.tries = self.max;
            Ok(())
        } else if self.tries == 0 {
            Err(ChvError::Blocked)
        } else {
            Err(ChvError::Wrong {
                tries_left: self.tries,
            })
        }
    }

    /// Replaces the value and refills the counter.
    pub fn set(&mut self, value: [u8; PIN_LEN]) {
        self.value = value;
        self.tries = self.max;
    }

    /// Restores a persisted counter value (clamped to the maximum).
    pub fn restore_tries(&mut self, tries: u8) {
        self.tries = tries.min(self.max);
    }

    /// The value, for the card's own persistence only (never for a command response).
    pub(crate) fn value(&self) -> &[u8; PIN_LEN] {
        &self.value
    }

    /// Restores a persisted value without touching the counter.
    pub(crate) fn restore_value(&mut self, value: [u8; PIN_LEN]) {
        self.value = value;
    }
}

/// A PIN with its PUK, enable flag and this session's verification state.
#[derive(Clone, Debug)]
pub struct Pin {
    pub pin: Secret,
    pub puk: Secret,
    pub enabled: bool,
    /// Verified since the last reset; never persisted.
    pub verified: bool,
}

impl Pin {
    /// A PIN with the usual counters (3 for the PIN, 10 for the PUK).
    pub const fn new(pin: [u8; PIN_LEN], puk: [u8; PIN_LEN], enabled: bool) -> Self {
        Pin {
            pin: Secret::new(pin, 3),
            puk: Secret::new(puk, 10),
            enabled,
            verified: false,
        }
    }

    /// Whether operations protected by this PIN are allowed now.
    pub const fn satisfied(&self) -> bool {
        !self.enabled || self.verified
    }

    /// VERIFY.
    pub fn verify(&mut self, candidate: &[u8]) -> Result<(), ChvError> {
        let result = self.pin.check(candidate);
        self.verified = result.is_ok();
        result
    }

    /// CHANGE: the old value must be right; the new one well-formed (checked first, so a typo in
    /// the new value costs no try).
    pub fn change(&mut self, old: &[u8], new: &[u8]) -> Result<(), ChvError> {
        let new = parse_pin(new).ok_or(ChvError::BadFormat)?;
        self.pin.check(old)?;
        self.pin.set(new);
        self.verified = true;
        Ok(())
    }

    /// UNBLOCK: the PUK resets the PIN to `new`, and enables it (TS 51.011 9.2.13).
    pub fn unblock(&mut self, puk: &[u8], new: &[u8]) -> Result<(), ChvError> {
        let new = parse_pin(new).ok_or(ChvError::BadFormat)?;
        self.puk.check(puk)?;
        self.pin.set(new);
        self.enabled = true;
        self.verified = true;
        Ok(())
    }
}

/// Accepts a PIN field of 4–8 ASCII digits padded with FF.
pub fn parse_pin(field: &[u8]) -> Option<[u8; PIN_LEN]> {
    let field: [u8; PIN_LEN] = field.try_into().ok()?;
    let digits = field.iter().take_while(|&&b| b != 0xFF).count();
    let well_formed = digits >= 4
        && field[..digits].iter().all(u8::is_ascii_digit)
        && field[digits..].iter().all(|&b| b == 0xFF);
    well_formed.then_some(field)
}

/// Pads a PIN given as text into its 8-byte field; `None` unless it is 4–8 digits.
pub fn pad_pin(text: &str) -> Option<[u8; PIN_LEN]> {
    if !(4..=PIN_LEN).contains(&text.len()) || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let mut field = [0xFF; PIN_LEN];
    field[..text.len()].copy_from_slice(text.as_bytes());
    Some(field)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counter_blocks_after_three_wrong_tries_and_refills_on_success() {
        let mut pin = Pin::new(pad_pin("1234").unwrap(), pad_pin("12345678").unwrap(), true);
        let wrong = pad_pin("0000").unwrap();
        assert_eq!(pin.verify(&wrong), Err(ChvError::Wrong { tries_left: 2 }));
        assert_eq!(pin.verify(&pad_pin("1234").unwrap()), Ok(()));
        assert_eq!(pin.pin.tries_left(), 3);
        for left in [2, 1] {
            assert_eq!(
                pin.verify(&wrong),
                Err(ChvError::Wrong { tries_left: left })
            );
        }
        assert_eq!(pin.verify(&wrong), Err(ChvError::Blocked));
        // Blocked means blocked, even for the right value.
        assert_eq!(
            pin.verify(&pad_pin("1234").unwrap()),
            Err(ChvError::Blocked)
        );
        assert!(!pin.verified);
        pin.unblock(&pad_pin("12345678").unwrap(), &pad_pin("4321").unwrap())
            .unwrap();
        assert!(pin.verified && pin.pin.tries_left() == 3);
    }

    #[test]
    fn pin_fields_must_be_digits_padded_with_ff() {
        assert!(parse_pin(b"1234\xff\xff\xff\xff").is_some());
        assert!(parse_pin(b"12\xff\xff\xff\xff\xff\xff").is_none());
        assert!(parse_pin(b"12a4\xff\xff\xff\xff").is_none());
        assert!(parse_pin(b"1234\xff5\xff\xff").is_none());
        assert!(pad_pin("123456789").is_none());
    }
}
