//! Semi-octet ("swapped nibble") representation (TS 23.040 9.1.2.3).
//!
//! Addresses and timestamps store one decimal digit per nibble, first digit
//! in the low nibble. Addresses may also hold `*`, `#`, `a`, `b`, `c`
//! (TS 24.008 10.5.4.7) and end with a 0xF filler when the count is odd.

use crate::Error;

/// Nibble that pads an odd number of digits.
pub(crate) const FILLER: u8 = 0xF;

/// The address character of a nibble; `None` for the filler.
pub(crate) fn digit_char(nibble: u8) -> Option<char> {
    match nibble {
        0..=9 => Some(char::from(b'0' + nibble)),
        0xA => Some('*'),
        0xB => Some('#'),
        0xC => Some('a'),
        0xD => Some('b'),
        0xE => Some('c'),
        _ => None,
    }
}

/// The nibble of an address character.
pub(crate) fn char_nibble(c: char) -> Option<u8> {
    match c {
        '0'..='9' => u8::try_from(u32::from(c) - u32::from('0')).ok(),
        '*' => Some(0xA),
        '#' => Some(0xB),
        'a' => Some(0xC),
        'b' => Some(0xD),
        'c' => Some(0xE),
        _ => None,
    }
}

/// Decodes `count` address digits from `octets`.
pub(crate) fn decode_digits(
    octets: &[u8],
    count: usize,
    field: &'static str,
) -> Result<String, Error> {
    let mut out = String::with_capacity(count);
    for i in 0..count {
        let octet = octets.get(i / 2).copied().unwrap_or((FILLER << 4) | FILLER);
        let nibble = if i % 2 == 0 { octet & 0x0F } else { octet >> 4 };
        let c = digit_char(nibble).ok_or(Error::InvalidSemiOctet {
            field,
            value: nibble,
        })?;
        out.push(c);
    }
    Ok(out)
}

/// Appends the semi-octets of `digits`, padding with the filler. `digits`
/// must already be validated.
pub(crate) fn encode_digits(
    digits: &str,
    mut push: impl FnMut(u8) -> Result<(), Error>,
) -> Result<(), Error> {
    let mut pending: Option<u8> = None;
    for c in digits.chars() {
        let nibble = char_nibble(c).unwrap_or(FILLER);
        match pending.take() {
            Some(low) => push((nibble << 4) | low)?,
            None => pending = Some(nibble),
        }
    }
    if let Some(low) = pending {
        push((FILLER << 4) | low)?;
    }
    Ok(())
}

/// A two-digit decimal value stored swapped, as in timestamps.
pub(crate) fn decode_decimal(octet: u8, field: &'static str) -> Result<u8, Error> {
    let tens = octet & 0x0F;
    let units = octet >> 4;
    for value in [tens, units] {
        if value > 9 {
            return Err(Error::InvalidSemiOctet { field, value });
        }
    }
    Ok(tens * 10 + units)
}

/// Encodes 0–99 as a swapped decimal octet.
pub(crate) const fn encode_decimal(value: u8) -> u8 {
    let value = value % 100;
    ((value % 10) << 4) | (value / 10)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digits_round_trip() {
        let mut out = Vec::new();
        encode_digits("27820001111", |b| {
            out.push(b);
            Ok(())
        })
        .unwrap();
        assert_eq!(out, [0x72, 0x28, 0x00, 0x10, 0x11, 0xF1]);
        assert_eq!(decode_digits(&out, 11, "a").unwrap(), "27820001111");
        assert_eq!(decode_digits(&[0x2A, 0xFB], 3, "a").unwrap(), "*2#");
    }

    #[test]
    fn filler_inside_a_number_is_an_error() {
        assert_eq!(
            decode_digits(&[0xF1, 0x22], 4, "destination address"),
            Err(Error::InvalidSemiOctet {
                field: "destination address",
                value: 0xF
            })
        );
    }

    #[test]
    fn decimal() {
        assert_eq!(decode_decimal(0x99, "x").unwrap(), 99);
        assert_eq!(decode_decimal(0x30, "x").unwrap(), 3);
        assert_eq!(encode_decimal(3), 0x30);
        assert_eq!(encode_decimal(59), 0x95);
        assert!(decode_decimal(0x0A, "x").is_err());
    }
}
