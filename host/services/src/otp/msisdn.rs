//! One spelling per phone number (E.164, `+<country code><national number>`), so that the
//! directory look-up and the per-number rate limit see `+491701234569`, `00491701234569`,
//! `491701234569` and `+49 (0)170 1234569` as the same subscriber.
//!
//! The country code is found by ITU-T E.164's own structure: 1 and 7 are the only one-digit
//! codes, the two-digit codes are the list below, and every other code has three digits. That
//! is enough to remove a national trunk prefix `0` typed after the country code, except for
//! Italy (+39), where the leading 0 of a fixed number is part of the number itself.

/// The two-digit country codes (ITU-T E.164 assignments); all others starting 2–9 are three.
const TWO_DIGIT: [u8; 45] = [
    20, 27, 30, 31, 32, 33, 34, 36, 39, 40, 41, 43, 44, 45, 46, 47, 48, 49, 51, 52, 53, 54, 55, 56,
    57, 58, 60, 61, 62, 63, 64, 65, 66, 81, 82, 84, 86, 90, 91, 92, 93, 94, 95, 98, 99,
];

/// Why a number was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum NumberError {
    /// Something other than digits, an optional leading `+` or `00`, spaces, dashes, dots,
    /// slashes and a `(0)`.
    #[error("{0:?} is not a phone number (digits, with + or 00 before the country code)")]
    NotANumber(String),
    /// Outside E.164's 8 to 15 digits (country code included).
    #[error("{number:?} has {digits} digits; an international number has 8 to 15")]
    Length { number: String, digits: usize },
}

/// The length of the country code at the start of `digits` (E.164: 1, 2 or 3).
fn country_code_len(digits: &str) -> usize {
    let b = digits.as_bytes();
    match b.first() {
        Some(b'1' | b'7') => 1,
        Some(_) if b.len() >= 2 => {
            let two = (b[0] - b'0') * 10 + (b[1] - b'0');
            if TWO_DIGIT.contains(&two) { 2 } else { 3 }
        }
        _ => 1,
    }
}

/// `number` in E.164 (`+<digits>`): international numbers only, with `+`, `00` or bare
/// digits before the country code; separators and a `(0)` are dropped, and a trunk `0`
/// typed after the country code is removed (not for +39).
pub fn canonical(number: &str) -> Result<String, NumberError> {
    let bad = || NumberError::NotANumber(number.to_string());
    let trimmed = number.trim().replace("(0)", "");
    let (rest, _) = match trimmed.strip_prefix('+') {
        Some(r) => (r.to_string(), true),
        None => (trimmed.clone(), false),
    };
    if rest.is_empty() || rest.contains('+') {
        return Err(bad());
    }
    let mut digits = String::with_capacity(rest.len());
    for c in rest.chars() {
        match c {
            '0'..='9' => digits.push(c),
            ' ' | '-' | '.' | '/' => {}
            _ => return Err(bad()),
        }
    }
    if !trimmed.starts_with('+')
        && let Some(d) = digits.strip_prefix("00")
    {
        digits = d.to_string();
    }
    if digits.starts_with('0') {
        // A national number: this service only knows international ones.
        return Err(bad());
    }
    let cc = country_code_len(&digits);
    // Every trunk zero, so that the result is its own canonical form.
    while digits.len() > cc && &digits[..cc] != "39" && digits[cc..].starts_with('0') {
        digits.remove(cc);
    }
    if !(8..=15).contains(&digits.len()) {
        return Err(NumberError::Length {
            number: number.to_string(),
            digits: digits.len(),
        });
    }
    Ok(format!("+{digits}"))
}

/// For answers and logs: country code, an ellipsis and the last two digits (`+49…99`).
pub fn masked(e164: &str) -> String {
    let digits = e164.trim_start_matches('+');
    let cc = country_code_len(digits).min(digits.len());
    let tail = digits.len().saturating_sub(2).max(cc);
    format!("+{}…{}", &digits[..cc], &digits[tail..])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_spelling_per_number() {
        for typed in [
            "+491701234569",
            "00491701234569",
            "491701234569",
            "+4901701234569",
            "+49 (0)170 123-4569",
            " +49 170 1234569 ",
        ] {
            assert_eq!(canonical(typed).unwrap(), "+491701234569", "{typed}");
        }
        // Italy keeps its 0; the US has a one-digit code; Ireland a three-digit one.
        assert_eq!(canonical("+39 06 1234 5678").unwrap(), "+390612345678");
        assert_eq!(canonical("0012025550123").unwrap(), "+12025550123");
        assert_eq!(canonical("+353 087 123 4567").unwrap(), "+353871234567");
        // Canonical forms are fixed points.
        assert_eq!(canonical("+4900170123456").unwrap(), "+49170123456");
        assert_eq!(canonical("+49170123456").unwrap(), "+49170123456");
    }

    #[test]
    fn what_is_not_a_number() {
        for bad in [
            "",
            "+",
            "0170 1234569",
            "+49 170 12x4569",
            "++491701234569",
            "+49+1701",
        ] {
            assert!(
                matches!(canonical(bad), Err(NumberError::NotANumber(_))),
                "{bad}"
            );
        }
        assert!(matches!(
            canonical("+4912"),
            Err(NumberError::Length { digits: 4, .. })
        ));
        assert!(matches!(
            canonical("+4917012345678901"),
            Err(NumberError::Length { .. })
        ));
    }

    #[test]
    fn masks_keep_country_and_last_two() {
        assert_eq!(masked("+491700000099"), "+49…99");
        assert_eq!(masked("+12025550123"), "+1…23");
    }
}
