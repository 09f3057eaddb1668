//! Turning the byte stream from a modem into lines.
//!
//! A serial port hands over whatever bytes have arrived: half a line, three lines and the start
//! of a fourth, a `> ` prompt that never gets a line ending, NULs and 0xFF after a modem reset.
//! [`LineReader`] is a pure parser over that stream: [`push`](LineReader::push) bytes as they
//! arrive, then take [`Piece`]s until it returns `None`. It never panics and never holds more
//! than [`MAX_LINE`] bytes of an unfinished line.

/// The longest line kept; a longer run of bytes without a line end is garbage (a modem
/// streaming binary on an AT port), reported and dropped so memory stays bounded.
pub const MAX_LINE: usize = 4096;

/// One thing read from the modem.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Piece {
    /// A complete, non-empty line of text, without its line ending and without stray control
    /// bytes at either end.
    Line(String),
    /// The `> ` prompt of `AT+CMGS` (only recognised when asked for).
    Prompt,
    /// Bytes that are not a text line: invalid UTF-8, control bytes in the middle of a line, or
    /// an overlong run. Never a reply; shown in traces.
    Garbage(Vec<u8>),
}

/// A stream-to-lines parser; see the module documentation.
#[derive(Clone, Debug, Default)]
pub struct LineReader {
    buf: Vec<u8>,
}

impl LineReader {
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends bytes read from the port.
    pub fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// Bytes received but not yet part of a complete piece.
    pub fn pending(&self) -> &[u8] {
        &self.buf
    }

    /// Forgets everything buffered (after a resynchronisation).
    pub fn clear(&mut self) {
        self.buf.clear();
    }

    /// The next complete piece, if any. With `prompt`, a `>` at the start of a line (after
    /// any junk bytes) is the SMS prompt even without a line ending, which is how modems send
    /// it: `\r\n> ` or a bare `> `.
    pub fn next(&mut self, prompt: bool) -> Option<Piece> {
        loop {
            if prompt {
                let start = self
                    .buf
                    .iter()
                    .position(|&b| !is_junk(b) && b != b'\r' && b != b'\n')
                    .unwrap_or(self.buf.len());
                if self.buf.get(start) == Some(&b'>') {
                    let mut end = start + 1;
                    while self.buf.get(end) == Some(&b' ') {
                        end += 1;
                    }
                    self.buf.drain(..end);
                    return Some(Piece::Prompt);
                }
            }
            let Some(end) = self.buf.iter().position(|&b| b == b'\r' || b == b'\n') else {
                if self.buf.len() > MAX_LINE {
                    return Some(Piece::Garbage(std::mem::take(&mut self.buf)));
                }
                return None;
            };
            let raw: Vec<u8> = self.buf.drain(..=end).take(end).collect();
            if raw.is_empty() {
                continue;
            }
            match clean(&raw) {
                Some(line) if line.is_empty() => {
                    if raw.iter().all(|&b| b == b' ' || b == b'\t') {
                        continue;
                    }
                    return Some(Piece::Garbage(raw));
                }
                Some(line) => return Some(Piece::Line(line)),
                None => return Some(Piece::Garbage(raw)),
            }
        }
    }
}

/// Bytes that surround real lines after resets and on noisy lines: NUL, 0xFF, and other
/// control bytes (Ctrl-Z of an echoed PDU included).
fn is_junk(b: u8) -> bool {
    b < 0x20 || b == 0x7F || b == 0xFF
}

/// The text of a line with junk and blanks trimmed from both ends, or `None` when what is left
/// is not clean text (invalid UTF-8 or control bytes inside).
fn clean(raw: &[u8]) -> Option<String> {
    let trim = |b: &u8| is_junk(*b) || *b == b' ';
    let start = raw.iter().position(|b| !trim(b)).unwrap_or(raw.len());
    let end = raw.iter().rposition(|b| !trim(b)).map_or(start, |i| i + 1);
    let body = raw.get(start..end).unwrap_or_default();
    let text = std::str::from_utf8(body).ok()?;
    if text.chars().any(|c| c.is_control() && c != '\t') {
        return None;
    }
    Some(text.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all(r: &mut LineReader, prompt: bool) -> Vec<Piece> {
        std::iter::from_fn(|| r.next(prompt)).collect()
    }

    fn line(s: &str) -> Piece {
        Piece::Line(s.into())
    }

    #[test]
    fn lines_split_anywhere_come_out_whole() {
        let stream = b"\r\n+CSQ: 20,99\r\n\r\nOK\r\n";
        for split in 0..stream.len() {
            let mut r = LineReader::new();
            let mut got = Vec::new();
            r.push(&stream[..split]);
            got.extend(all(&mut r, false));
            r.push(&stream[split..]);
            got.extend(all(&mut r, false));
            assert_eq!(got, [line("+CSQ: 20,99"), line("OK")], "split at {split}");
        }
        // One byte at a time.
        let mut r = LineReader::new();
        let mut got = Vec::new();
        for b in stream {
            r.push(&[*b]);
            got.extend(all(&mut r, false));
        }
        assert_eq!(got, [line("+CSQ: 20,99"), line("OK")]);
    }

    #[test]
    fn bare_cr_and_bare_lf_end_lines_and_partial_lines_wait() {
        let mut r = LineReader::new();
        r.push(b"ATE0\rOK\nRING\r\n+CMT");
        assert_eq!(all(&mut r, false), [line("ATE0"), line("OK"), line("RING")]);
        assert_eq!(r.pending(), b"+CMT");
    }

    #[test]
    fn the_prompt_needs_no_line_end_but_only_counts_when_asked_for() {
        let mut r = LineReader::new();
        r.push(b"\r\n> ");
        assert_eq!(all(&mut r, false), []);
        assert_eq!(r.next(true), Some(Piece::Prompt));
        assert!(r.pending().is_empty());
        let mut r = LineReader::new();
        r.push(b">");
        assert_eq!(r.next(true), Some(Piece::Prompt));
        // A URC glued to the prompt stays a line.
        let mut r = LineReader::new();
        r.push(b"\r\n> +CMTI: \"SM\",1\r\n");
        assert_eq!(all(&mut r, true), [Piece::Prompt, line("+CMTI: \"SM\",1")]);
    }

    #[test]
    fn junk_is_trimmed_and_garbage_never_becomes_a_line() {
        let mut r = LineReader::new();
        r.push(b"\x00\x00\xffRDY\r\n\xff\xfe\x80\x81\r\nA\x01B\r\n  \r\nOK\x1a\r\n");
        assert_eq!(
            all(&mut r, false),
            [
                line("RDY"),
                Piece::Garbage(vec![0xff, 0xfe, 0x80, 0x81]),
                Piece::Garbage(b"A\x01B".to_vec()),
                line("OK"),
            ]
        );
        let mut r = LineReader::new();
        r.push(&[0x01; 3]);
        r.push(b"\r");
        assert_eq!(all(&mut r, false), [Piece::Garbage(vec![1, 1, 1])]);
    }

    #[test]
    fn an_endless_line_is_dropped_as_garbage() {
        let mut r = LineReader::new();
        r.push(&vec![b'A'; MAX_LINE + 1]);
        assert!(matches!(r.next(false), Some(Piece::Garbage(g)) if g.len() == MAX_LINE + 1));
        assert!(r.pending().is_empty());
    }

    #[test]
    fn utf8_text_is_a_line() {
        let mut r = LineReader::new();
        r.push("+COPS: 0,0,\"Télé\"\r\n".as_bytes());
        assert_eq!(all(&mut r, false), [line("+COPS: 0,0,\"Télé\"")]);
    }
}
