//! APDU scripts (`fixtures/apdu/*.apdu`, `simlab card script`): a conversation with a card,
//! byte for byte, with the answers it must give.
//!
//! One format serves the fixtures, replay against any transport and recording: a session
//! recorded against a real card, with its secrets replaced by named placeholders, becomes a CI
//! fixture that `card script --profile P` fills in again. The format is in
//! `fixtures/apdu/README.md`:
//!
//! ```text
//! # comment
//! @profile sim-comp128v1.toml   the card profile (fixtures/cards/) the script was written for
//! @reset                        power-cycle the card
//! > A0 20 00 05 08 ${ADM1}      a command; `${NAME}` is a secret filled in at replay
//! < 90 00                       the answer: data then SW; `..` any byte; a leading `*` any data
//! ```
//!
//! Parsing is separate from running, so a malformed script is refused (with its line) before
//! anything reaches a card.

use std::fmt;

/// The secrets a script may name, and the profile key each comes from.
pub const PLACEHOLDERS: &[(&str, &str)] = &[
    ("ADM1", "adm1 (8 bytes as VERIFY carries it)"),
    ("PIN1", "pin1 (8 bytes, FF-padded)"),
    ("PUK1", "puk1 (8 bytes)"),
    ("PIN2", "pin2 (8 bytes, FF-padded)"),
    ("PUK2", "puk2 (8 bytes)"),
    ("KI", "ki (16 bytes)"),
    ("OPC", "opc (16 bytes)"),
];

/// Secrets a recording could not name (a new PIN in CHANGE PIN, a key the profile does not
/// hold) are `${SECRET1}`, `${SECRET2}` …, filled at replay with `card script --secret`.
pub const UNNAMED_PREFIX: &str = "SECRET";

/// Whether `name` may stand in a `${…}`: one of [`PLACEHOLDERS`] or `SECRET` and a number.
pub fn is_placeholder(name: &str) -> bool {
    PLACEHOLDERS.iter().any(|(n, _)| *n == name)
        || name.strip_prefix(UNNAMED_PREFIX).is_some_and(|n| {
            !n.is_empty()
                && n.len() <= 4
                && !n.starts_with('0')
                && n.bytes().all(|b| b.is_ascii_digit())
        })
}

/// Why a script cannot be used: always with its 1-based line.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {reason}")]
pub struct ParseError {
    pub line: usize,
    pub reason: String,
}

/// One byte of an expected answer: a value, or `..` (any).
pub type Pattern = Option<u8>;

/// A piece of a command: literal bytes or a named secret.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Piece {
    Bytes(Vec<u8>),
    Secret(String),
}

/// One step of a script.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    /// `@profile NAME`: what the script was written for (replay against a built card uses it;
    /// replay over a transport only reports it).
    Profile(String),
    /// `@reset`.
    Reset,
    /// A command and the answer it must get.
    Exchange {
        line: usize,
        command: Vec<Piece>,
        /// Data may be anything before `expected` (a leading `*`).
        any_prefix: bool,
        expected: Vec<Pattern>,
    },
}

/// A parsed script.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Script {
    pub steps: Vec<Step>,
}

fn hex_pairs(text: &str, line: usize, wildcards: bool) -> Result<Vec<Pattern>, ParseError> {
    let compact: String = text.split_whitespace().collect();
    if !compact.len().is_multiple_of(2) {
        return Err(ParseError {
            line,
            reason: format!("odd number of hex digits in {:?}", text.trim()),
        });
    }
    compact
        .as_bytes()
        .chunks(2)
        .map(|pair| {
            if pair == b".." {
                return if wildcards {
                    Ok(None)
                } else {
                    Err(ParseError {
                        line,
                        reason: "`..` only in expected answers".into(),
                    })
                };
            }
            std::str::from_utf8(pair)
                .ok()
                .and_then(|p| u8::from_str_radix(p, 16).ok())
                .map(Some)
                .ok_or_else(|| ParseError {
                    line,
                    reason: format!("not hex: {:?}", String::from_utf8_lossy(pair)),
                })
        })
        .collect()
}

fn command_pieces(text: &str, line: usize) -> Result<Vec<Piece>, ParseError> {
    let mut pieces = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find("${") {
        let bytes = hex_pairs(&rest[..start], line, false)?;
        pieces.push(Piece::Bytes(bytes.into_iter().flatten().collect()));
        let Some(end) = rest[start..].find('}') else {
            return Err(ParseError {
                line,
                reason: "`${` without `}`".into(),
            });
        };
        let name = &rest[start + 2..start + end];
        if !is_placeholder(name) {
            let known: Vec<&str> = PLACEHOLDERS.iter().map(|(n, _)| *n).collect();
            return Err(ParseError {
                line,
                reason: format!(
                    "unknown placeholder ${{{name}}} (known: {}, and SECRET1, SECRET2 … for \
                     secrets given with --secret)",
                    known.join(", ")
                ),
            });
        }
        pieces.push(Piece::Secret(name.to_string()));
        rest = &rest[start + end + 1..];
    }
    let bytes = hex_pairs(rest, line, false)?;
    pieces.push(Piece::Bytes(bytes.into_iter().flatten().collect()));
    pieces.retain(|p| !matches!(p, Piece::Bytes(b) if b.is_empty()));
    Ok(pieces)
}

impl Script {
    /// Parses a script; the first malformed line is the error.
    pub fn parse(text: &str) -> Result<Script, ParseError> {
        let mut steps = Vec::new();
        let mut open: Option<(usize, Vec<Piece>)> = None;
        for (n, raw) in text.lines().enumerate() {
            let line = n + 1;
            let body = raw.trim();
            if body.is_empty() || body.starts_with('#') {
                continue;
            }
            if let Some((cmd_line, _)) = &open
                && !body.starts_with('<')
            {
                return Err(ParseError {
                    line: *cmd_line,
                    reason: "command without an expected answer (`<` line)".into(),
                });
            }
            if let Some(name) = body.strip_prefix("@profile") {
                let name = name.trim();
                if name.is_empty() {
                    return Err(ParseError {
                        line,
                        reason: "@profile needs a file name".into(),
                    });
                }
                steps.push(Step::Profile(name.to_string()));
            } else if body == "@reset" {
                steps.push(Step::Reset);
            } else if let Some(cmd) = body.strip_prefix('>') {
                let pieces = command_pieces(cmd, line)?;
                let len: usize = pieces
                    .iter()
                    .map(|p| match p {
                        Piece::Bytes(b) => b.len(),
                        Piece::Secret(_) => 8,
                    })
                    .sum();
                if len < 4 {
                    return Err(ParseError {
                        line,
                        reason: "a command needs at least CLA INS P1 P2".into(),
                    });
                }
                open = Some((line, pieces));
            } else if let Some(answer) = body.strip_prefix('<') {
                let Some((cmd_line, command)) = open.take() else {
                    return Err(ParseError {
                        line,
                        reason: "`<` without a `>` command before it".into(),
                    });
                };
                let answer = answer.trim();
                let (any_prefix, answer) = match answer.strip_prefix('*') {
                    Some(rest) => (true, rest),
                    None => (false, answer),
                };
                let expected = hex_pairs(answer, line, true)?;
                if expected.len() < 2 {
                    return Err(ParseError {
                        line,
                        reason: "an answer needs at least its status word".into(),
                    });
                }
                steps.push(Step::Exchange {
                    line: cmd_line,
                    command,
                    any_prefix,
                    expected,
                });
            } else {
                return Err(ParseError {
                    line,
                    reason: format!("cannot parse {body:?} (expected #, @profile, @reset, > or <)"),
                });
            }
        }
        if let Some((line, _)) = open {
            return Err(ParseError {
                line,
                reason: "command without an expected answer (`<` line)".into(),
            });
        }
        Ok(Script { steps })
    }

    /// The placeholders the script uses, in order of first use.
    pub fn secrets(&self) -> Vec<&str> {
        let mut names: Vec<&str> = Vec::new();
        for step in &self.steps {
            if let Step::Exchange { command, .. } = step {
                for p in command {
                    if let Piece::Secret(n) = p
                        && !names.contains(&n.as_str())
                    {
                        names.push(n);
                    }
                }
            }
        }
        names
    }
}

/// Whether `got` is what `expected` allows.
pub fn matches(any_prefix: bool, expected: &[Pattern], got: &[u8]) -> bool {
    let ok = |w: &Pattern, g: &u8| w.is_none_or(|w| w == *g);
    if any_prefix {
        got.len() >= expected.len()
            && expected
                .iter()
                .zip(&got[got.len() - expected.len()..])
                .all(|(w, g)| ok(w, g))
    } else {
        expected.len() == got.len() && expected.iter().zip(got).all(|(w, g)| ok(w, g))
    }
}

/// Spaced upper-case hex of an expected answer, `..` for any byte.
pub fn show_pattern(any_prefix: bool, expected: &[Pattern]) -> String {
    let body: Vec<String> = expected
        .iter()
        .map(|p| p.map_or("..".to_string(), |b| format!("{b:02X}")))
        .collect();
    format!("{}{}", if any_prefix { "* " } else { "" }, body.join(" "))
}

/// Why a replay stopped.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    /// The card answered something else (the script's line, what it wanted, what came).
    #[error("line {line}: expected {expected}, got {got}")]
    Mismatch {
        line: usize,
        expected: String,
        got: String,
    },
    /// The script names a secret the replay was not given (`--profile` supplies them).
    #[error("line {line}: ${{{name}}} needs a value (give --profile)")]
    MissingSecret { line: usize, name: String },
    /// The transport failed.
    #[error("line {line}: {source}")]
    Transport {
        line: usize,
        #[source]
        source: crate::transport::TransportError,
    },
}

/// The card a script is replayed against: raw bytes in, raw bytes out (no T=0 help: scripts
/// carry their GET RESPONSEs).
pub trait Card {
    fn transmit(&mut self, capdu: &[u8]) -> Result<Vec<u8>, crate::transport::TransportError>;
    fn reset(&mut self) -> Result<(), crate::transport::TransportError>;
}

impl Card for crate::transport::Link {
    fn transmit(&mut self, capdu: &[u8]) -> Result<Vec<u8>, crate::transport::TransportError> {
        self.transmit_bytes(capdu)
    }
    fn reset(&mut self) -> Result<(), crate::transport::TransportError> {
        self.transport().reset().map(|_| ())
    }
}

/// What a replay did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Replayed {
    pub exchanges: usize,
    pub resets: usize,
    pub profile: Option<String>,
}

impl fmt::Display for Replayed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} exchanges, {} resets: all as expected",
            self.exchanges, self.resets
        )
    }
}

/// Replays `script` against `card`, filling placeholders from `secret`; stops at the first
/// answer that differs.
pub fn replay(
    script: &Script,
    card: &mut dyn Card,
    secret: &dyn Fn(&str) -> Option<Vec<u8>>,
) -> Result<Replayed, ReplayError> {
    let mut done = Replayed::default();
    for step in &script.steps {
        match step {
            Step::Profile(name) => done.profile = Some(name.clone()),
            Step::Reset => {
                card.reset()
                    .map_err(|source| ReplayError::Transport { line: 0, source })?;
                done.resets += 1;
            }
            Step::Exchange {
                line,
                command,
                any_prefix,
                expected,
            } => {
                let mut apdu = Vec::new();
                for piece in command {
                    match piece {
                        Piece::Bytes(b) => apdu.extend_from_slice(b),
                        Piece::Secret(name) => {
                            let value = secret(name).ok_or_else(|| ReplayError::MissingSecret {
                                line: *line,
                                name: name.clone(),
                            })?;
                            apdu.extend_from_slice(&value);
                        }
                    }
                }
                let got = card
                    .transmit(&apdu)
                    .map_err(|source| ReplayError::Transport {
                        line: *line,
                        source,
                    })?;
                if !matches(*any_prefix, expected, &got) {
                    // The answer may carry secrets the script hid (a key file read back): a
                    // mismatch shows only the status word then.
                    let shows_secret = command.iter().any(|p| matches!(p, Piece::Secret(_)));
                    let got = if shows_secret && got.len() > 2 {
                        format!(
                            "{} bytes and {}",
                            got.len() - 2,
                            crate::hex::encode(&got[got.len() - 2..]).to_uppercase()
                        )
                    } else {
                        got.iter()
                            .map(|b| format!("{b:02X}"))
                            .collect::<Vec<_>>()
                            .join(" ")
                    };
                    return Err(ReplayError::Mismatch {
                        line: *line,
                        expected: show_pattern(*any_prefix, expected),
                        got,
                    });
                }
                done.exchanges += 1;
            }
        }
    }
    Ok(done)
}

/// The value of a placeholder from a profile: the bytes the card expects in the command.
pub fn profile_secret(profile: &crate::profile::Profile, name: &str) -> Option<Vec<u8>> {
    Some(match name {
        "ADM1" => profile.adm1.to_vec(),
        "PIN1" => profile.pin1.to_vec(),
        "PUK1" => profile.puk1.to_vec(),
        "PIN2" => profile.pin2.to_vec(),
        "PUK2" => profile.puk2.to_vec(),
        "KI" => profile.ki.to_vec(),
        "OPC" => profile.opc?.to_vec(),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_format_and_names_bad_lines() {
        let s = Script::parse(
            "# c\n@profile x.toml\n> A0 A4 00 00 02 3F 00\n< 9F ..\n> 00 20 00 0A 08 ${ADM1}\n< * 90 00\n@reset\n",
        )
        .unwrap();
        assert_eq!(s.steps.len(), 4);
        assert_eq!(s.secrets(), ["ADM1"]);
        let s = Script::parse("> 00 24 00 01 10 ${PIN1}${SECRET12}\n< 90 00\n").unwrap();
        assert_eq!(s.secrets(), ["PIN1", "SECRET12"]);
        for (text, line, what) in [
            ("> A0 A4 00 00\n", 1, "without an expected answer"),
            ("< 90 00\n", 1, "without a `>`"),
            ("> A0 A4\n< 90 00\n", 1, "at least CLA INS P1 P2"),
            ("> A0 A4 00 00\n< 9\n", 2, "odd number"),
            ("> A0 A4 00 0G\n< 90 00\n", 1, "not hex"),
            ("> A0 A4 .. 00\n< 90 00\n", 1, "only in expected"),
            (
                "> 00 20 00 0A 08 ${PIN9}\n< 90 00\n",
                1,
                "unknown placeholder",
            ),
            (
                "> A0 A4 00 00\n> A0 A4 00 00\n< 90 00\n",
                1,
                "without an expected answer",
            ),
            (
                "> 00 24 00 01 10 ${SECRET0}\n< 90 00\n",
                1,
                "unknown placeholder",
            ),
            (
                "> 00 24 00 01 10 ${SECRETX}\n< 90 00\n",
                1,
                "unknown placeholder",
            ),
            ("hello\n", 1, "cannot parse"),
            ("> A0 A4 00 00\n< 90\n", 2, "status word"),
        ] {
            let e = Script::parse(text).unwrap_err();
            assert_eq!(e.line, line, "{text:?}: {e}");
            assert!(e.reason.contains(what), "{text:?}: {e}");
        }
    }

    #[test]
    fn matching_with_wildcards_and_any_prefix() {
        assert!(matches(false, &[Some(0x90), None], &[0x90, 0x12]));
        assert!(!matches(false, &[Some(0x90), None], &[0x01, 0x90, 0x12]));
        assert!(matches(true, &[Some(0x90), Some(0)], &[1, 2, 0x90, 0]));
        assert!(!matches(true, &[Some(0x90), Some(0)], &[0]));
    }
}
