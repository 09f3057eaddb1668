//! The AT text syntax both ends of a modem line need: simlab's AT engine reading replies, and
//! the virtual modem (simlab-emulate) reading commands. Pure functions, public for that second
//! user, so the emulator does not reach into the engine's modules.

/// Comma-separated fields, commas inside double quotes kept; fields are trimmed but keep
/// their quotes (so callers can tell `"0010"` from `10`).
pub fn fields(args: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut quoted = false;
    let mut start = 0;
    for (i, c) in args.char_indices() {
        match c {
            '"' => quoted = !quoted,
            ',' if !quoted => {
                out.push(args[start..i].trim());
                start = i + 1;
            }
            _ => {}
        }
    }
    if !args.trim().is_empty() || !out.is_empty() {
        out.push(args[start..].trim());
    }
    out
}

/// A field without its surrounding double quotes.
pub fn unquote(field: &str) -> &str {
    let f = field.trim();
    f.strip_prefix('"')
        .and_then(|s| s.strip_suffix('"'))
        .unwrap_or(f)
}

/// `002B0034…` (UCS2 as hex, how modems with `AT+CSCS="UCS2"` show strings) → `+4…`; anything
/// else unchanged.
pub fn decode_ucs2_hex(s: &str) -> String {
    if s.len() >= 4 && s.len().is_multiple_of(4) && s.bytes().all(|b| b.is_ascii_hexdigit()) {
        let units: Option<Vec<u16>> = (0..s.len())
            .step_by(4)
            .map(|i| u16::from_str_radix(&s[i..i + 4], 16).ok())
            .collect();
        if let Some(text) = units.and_then(|u| String::from_utf16(&u).ok())
            && text.chars().all(|c| c.is_ascii_digit() || c == '+')
        {
            return text;
        }
    }
    s.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_respect_quotes() {
        assert_eq!(fields("1,\"a,b\", 3"), ["1", "\"a,b\"", "3"]);
        assert_eq!(fields(""), Vec::<&str>::new());
        assert_eq!(fields(",24"), ["", "24"]);
        assert_eq!(unquote(" \"SM\" "), "SM");
        assert_eq!(unquote("\""), "\"");
    }

    #[test]
    fn ucs2_smsc() {
        assert_eq!(decode_ucs2_hex("002B0034003900310037"), "+4917");
        assert_eq!(decode_ucs2_hex("+4917"), "+4917");
        assert_eq!(decode_ucs2_hex("0041"), "0041");
        assert_eq!(decode_ucs2_hex("D800"), "D800");
    }
}
