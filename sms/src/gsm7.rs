//! The GSM 7-bit default alphabet and its extension table (TS 23.038 6.2.1).
//!
//! Text is converted to septet values here, one septet per `u8`; packing
//! septets into octets is [`crate::septets`]'s job, because the bit offset
//! depends on the user-data header.

/// Septet that switches the next septet to the extension table.
pub const ESCAPE: u8 = 0x1B;

/// Carriage return, which TS 23.038 6.1.2.3.1 uses to pad seven spare bits
/// that would otherwise read as `@`.
pub const CR: u8 = 0x0D;

/// The default alphabet, indexed by septet. Index 0x1B is the escape and is
/// never produced from this table.
const DEFAULT: [char; 128] = [
    '@', '£', '$', '¥', 'è', 'é', 'ù', 'ì', 'ò', 'Ç', '\n', 'Ø', 'ø', '\r', 'Å', 'å', //
    'Δ', '_', 'Φ', 'Γ', 'Λ', 'Ω', 'Π', 'Ψ', 'Σ', 'Θ', 'Ξ', ' ', 'Æ', 'æ', 'ß', 'É', //
    ' ', '!', '"', '#', '¤', '%', '&', '\'', '(', ')', '*', '+', ',', '-', '.', '/', //
    '0', '1', '2', '3', '4', '5', '6', '7', '8', '9', ':', ';', '<', '=', '>', '?', //
    '¡', 'A', 'B', 'C', 'D', 'E', 'F', 'G', 'H', 'I', 'J', 'K', 'L', 'M', 'N', 'O', //
    'P', 'Q', 'R', 'S', 'T', 'U', 'V', 'W', 'X', 'Y', 'Z', 'Ä', 'Ö', 'Ñ', 'Ü', '§', //
    '¿', 'a', 'b', 'c', 'd', 'e', 'f', 'g', 'h', 'i', 'j', 'k', 'l', 'm', 'n', 'o', //
    'p', 'q', 'r', 's', 't', 'u', 'v', 'w', 'x', 'y', 'z', 'ä', 'ö', 'ñ', 'ü', 'à', //
];

/// The extension table: septet after [`ESCAPE`] and the character it stands for.
const EXTENSION: [(u8, char); 10] = [
    (0x0A, '\u{0C}'), // form feed (page break)
    (0x14, '^'),
    (0x28, '{'),
    (0x29, '}'),
    (0x2F, '\\'),
    (0x3C, '['),
    (0x3D, '~'),
    (0x3E, ']'),
    (0x40, '|'),
    (0x65, '€'),
];

/// Marks an ASCII character with no GSM-7 encoding in [`ASCII`].
const NONE: u8 = 0xFF;
/// Marks an [`ASCII`] entry as an extension-table septet.
const EXTENDED: u8 = 0x80;

/// ASCII to septet, built from the tables above so the common case of plain
/// ASCII text is one array lookup per character.
const ASCII: [u8; 128] = build_ascii();

const fn build_ascii() -> [u8; 128] {
    let mut table = [NONE; 128];
    let mut septet = 0;
    while septet < DEFAULT.len() {
        let c = DEFAULT[septet] as u32;
        if septet != ESCAPE as usize && c < 128 {
            table[c as usize] = septet as u8;
        }
        septet += 1;
    }
    let mut i = 0;
    while i < EXTENSION.len() {
        let (septet, c) = EXTENSION[i];
        if (c as u32) < 128 {
            table[c as usize] = EXTENDED | septet;
        }
        i += 1;
    }
    table
}

/// How one character is written in GSM-7.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gsm7Char {
    /// One septet of the default alphabet.
    Default(u8),
    /// [`ESCAPE`] followed by this extension-table septet.
    Extended(u8),
}

impl Gsm7Char {
    /// Septets the character occupies, which is what counts against the
    /// 160-septet limit.
    pub const fn septets(self) -> usize {
        match self {
            Gsm7Char::Default(_) => 1,
            Gsm7Char::Extended(_) => 2,
        }
    }
}

/// Looks up a character; `None` if neither table has it.
#[inline(always)]
pub fn encode_char(c: char) -> Option<Gsm7Char> {
    match ASCII.get(c as usize) {
        Some(&NONE) => None,
        Some(&e) if e & EXTENDED != 0 => Some(Gsm7Char::Extended(e & !EXTENDED)),
        Some(&e) => Some(Gsm7Char::Default(e)),
        None => encode_non_ascii(c),
    }
}

/// Non-ASCII characters are rare enough that a scan beats keeping a second
/// hand-written table in sync with the first.
#[cold]
fn encode_non_ascii(c: char) -> Option<Gsm7Char> {
    if let Some(septet) = DEFAULT.iter().position(|&d| d == c) {
        return u8::try_from(septet).ok().map(Gsm7Char::Default);
    }
    EXTENSION
        .iter()
        .find(|&&(_, e)| e == c)
        .map(|&(septet, _)| Gsm7Char::Extended(septet))
}

/// True if every character of `text` has a GSM-7 encoding, so the text can
/// go out at 160 characters per message instead of 70.
pub fn encodable_in_gsm7(text: &str) -> bool {
    text.chars().all(|c| encode_char(c).is_some())
}

/// Septets `text` needs in GSM-7, or `None` if a character has no encoding.
pub fn septet_count(text: &str) -> Option<usize> {
    text.chars()
        .try_fold(0usize, |n, c| encode_char(c).map(|g| n + g.septets()))
}

/// Septets `text` needs in GSM-7, or an error naming the first character
/// that has no encoding.
pub fn checked_septet_count(text: &str) -> Result<usize, crate::Error> {
    let mut septets = 0;
    for (position, character) in text.chars().enumerate() {
        septets += encode_char(character)
            .ok_or(crate::Error::NotGsm7 {
                character,
                position,
            })?
            .septets();
    }
    Ok(septets)
}

/// Converts text to septets (one per `u8`), naming the first character
/// that cannot be encoded.
pub fn encode(text: &str) -> Result<Vec<u8>, crate::Error> {
    let mut out = Vec::with_capacity(text.len());
    for (position, character) in text.chars().enumerate() {
        match encode_char(character) {
            Some(Gsm7Char::Default(s)) => out.push(s),
            Some(Gsm7Char::Extended(s)) => out.extend_from_slice(&[ESCAPE, s]),
            None => {
                return Err(crate::Error::NotGsm7 {
                    character,
                    position,
                });
            }
        }
    }
    Ok(out)
}

fn default_char(septet: u8) -> char {
    DEFAULT
        .get(usize::from(septet & 0x7F))
        .copied()
        .unwrap_or(' ')
}

fn extension_char(septet: u8) -> Option<char> {
    EXTENSION
        .iter()
        .find(|&&(s, _)| s == septet)
        .map(|&(_, c)| c)
}

/// Appends the text of `septets` to `out`.
///
/// Decoding is total, following TS 23.038 6.2.1.1: an escape followed by a
/// septet the extension table does not define shows the default-alphabet
/// character, and the reserved escape-escape and a dangling escape show a
/// space.
pub fn decode_into(septets: &[u8], out: &mut String) {
    let mut iter = septets.iter().copied();
    while let Some(s) = iter.next() {
        if s & 0x7F != ESCAPE {
            out.push(default_char(s));
            continue;
        }
        match iter.next() {
            Some(next) if next & 0x7F == ESCAPE => out.push(' '),
            Some(next) => {
                out.push(extension_char(next & 0x7F).unwrap_or_else(|| default_char(next)))
            }
            None => out.push(' '),
        }
    }
}

/// The text of `septets`; see [`decode_into`].
pub fn decode(septets: &[u8]) -> String {
    let mut out = String::with_capacity(septets.len());
    decode_into(septets, &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_table_entry_round_trips() {
        for septet in 0u8..128 {
            if septet == ESCAPE {
                continue;
            }
            let c = default_char(septet);
            // 0x1B's placeholder is ' ', which must map to 0x20.
            assert_eq!(encode_char(c), Some(Gsm7Char::Default(septet)), "{c:?}");
            assert_eq!(decode(&[septet]), c.to_string());
        }
        for &(septet, c) in &EXTENSION {
            assert_eq!(encode_char(c), Some(Gsm7Char::Extended(septet)));
            assert_eq!(decode(&[ESCAPE, septet]), c.to_string());
        }
    }

    #[test]
    fn ascii_gaps() {
        for c in ['`', '\t', '\u{7F}', '\u{1B}', '\0'] {
            assert_eq!(encode_char(c), None, "{c:?}");
        }
        assert_eq!(encode_char('@'), Some(Gsm7Char::Default(0)));
        assert_eq!(encode_char('_'), Some(Gsm7Char::Default(0x11)));
        assert_eq!(encode_char('['), Some(Gsm7Char::Extended(0x3C)));
    }

    #[test]
    fn counting() {
        assert_eq!(septet_count("€[]"), Some(6));
        assert_eq!(septet_count("ç"), None);
        assert!(encodable_in_gsm7("Hello {World} ^_^ €5"));
        assert!(!encodable_in_gsm7("naïve"));
        assert_eq!(
            encode("ab🙂"),
            Err(crate::Error::NotGsm7 {
                character: '🙂',
                position: 2
            })
        );
    }

    #[test]
    fn lenient_escapes() {
        // Undefined extension: show the default character.
        assert_eq!(decode(&[ESCAPE, 0x41]), "A");
        assert_eq!(decode(&[ESCAPE, ESCAPE, 0x41]), " A");
        assert_eq!(decode(&[0x41, ESCAPE]), "A ");
    }
}
