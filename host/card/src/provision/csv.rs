//! Batch files: the CSV format of pySim-prog's batch mode, one card per row.
//!
//! Columns (header row required, any order, names case-insensitive):
//!
//! | column | meaning |
//! |---|---|
//! | `name` | a label for the report (optional) |
//! | `iccid` | 18-20 digits; 18 get their Luhn digit |
//! | `mcc`, `mnc` | home network (default: from the IMSI) |
//! | `imsi` | 6-15 digits |
//! | `smsp` | EF_SMSP record 1 parameters, hex, right-aligned in the record (optional) |
//! | `ki` | 32 hex digits |
//! | `opc` or `op` | Milenage operator key, 32 hex digits |
//! | `acc` | access control class, 4 hex digits (default: from the IMSI) |
//! | `adm1` (or pySim's `pin_adm`) | the card's ADM1 key: 8 digits, or 16 hex digits |
//! | `msisdn`, `spn` | optional |
//! | `algorithm` | optional; default `milenage` when `opc`/`op` is given, else `comp128v1` |
//! | `pin1`, `puk1` | optional; written only when given and the card type allows it |
//!
//! Every row is validated before any card is touched; the first bad value stops the batch with
//! its line number (exit 2).

use super::Target;
use crate::error::{Error, Result};
use crate::hex;
use crate::profile::Profile;
use std::path::Path;

/// Known columns and the profile key each maps to (`None`: handled here).
const COLUMNS: &[(&str, Option<&str>)] = &[
    ("name", Some("name")),
    ("iccid", Some("iccid")),
    ("mcc", Some("mcc")),
    ("mnc", Some("mnc")),
    ("imsi", Some("imsi")),
    ("smsp", None),
    ("ki", Some("ki")),
    ("opc", Some("opc")),
    ("op", Some("op")),
    ("acc", Some("acc")),
    ("adm1", Some("adm1")),
    ("pin_adm", Some("adm1")),
    ("msisdn", Some("msisdn")),
    ("spn", Some("spn")),
    ("algorithm", Some("algorithm")),
    ("pin1", Some("pin1")),
    ("puk1", Some("puk1")),
];

/// Splits one CSV line (RFC 4180 quoting: "a, b" and "" for a quote).
fn fields(line: &str) -> std::result::Result<Vec<String>, String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match (c, quoted) {
            ('"', true) if chars.peek() == Some(&'"') => {
                cur.push('"');
                chars.next();
            }
            ('"', true) => quoted = false,
            ('"', false) if cur.trim().is_empty() => {
                cur.clear();
                quoted = true;
            }
            (',', false) => out.push(std::mem::take(&mut cur).trim().to_string()),
            (c, _) => cur.push(c),
        }
    }
    if quoted {
        return Err("unterminated quote".into());
    }
    out.push(cur.trim().to_string());
    Ok(out)
}

/// Reads and validates a batch file.
pub fn read(path: &Path) -> Result<Vec<Target>> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| Error::arg("--csv", format!("{}: {e}", path.display())))?;
    parse(path, &text)
}

pub fn parse(path: &Path, text: &str) -> Result<Vec<Target>> {
    let err = |line: usize, column: Option<&str>, reason: String| Error::Csv {
        path: path.to_path_buf(),
        line,
        column: column.map(String::from),
        reason,
    };
    // Spreadsheets write a UTF-8 byte order mark first; it is not part of the first column's name.
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut lines = text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty() && !l.trim_start().starts_with('#'));
    let Some((header_no, header)) = lines.next() else {
        return Err(err(
            1,
            None,
            "empty file: a header row and at least one card are needed".into(),
        ));
    };
    let header: Vec<String> = fields(header)
        .map_err(|e| err(header_no + 1, None, e))?
        .into_iter()
        .map(|h| h.to_ascii_lowercase())
        .collect();
    for h in &header {
        if !COLUMNS.iter().any(|(c, _)| c == h) {
            let known: Vec<&str> = COLUMNS.iter().map(|(c, _)| *c).collect();
            return Err(err(
                header_no + 1,
                Some(h),
                format!("unknown column (known: {})", known.join(", ")),
            ));
        }
    }
    for required in ["imsi", "ki"] {
        if !header.iter().any(|h| h == required) {
            return Err(err(
                header_no + 1,
                Some(required),
                "required column missing".into(),
            ));
        }
    }
    if !header.iter().any(|h| h == "adm1" || h == "pin_adm") {
        return Err(err(
            header_no + 1,
            Some("adm1"),
            "required column missing".into(),
        ));
    }
    let mut targets = Vec::new();
    let mut seen = std::collections::HashMap::new();
    let mut seen_imsi = std::collections::HashMap::new();
    for (no, line) in lines {
        let line_no = no + 1;
        let values = fields(line).map_err(|e| err(line_no, None, e))?;
        if values.len() != header.len() {
            return Err(err(
                line_no,
                None,
                format!(
                    "{} fields, but the header has {}",
                    values.len(),
                    header.len()
                ),
            ));
        }
        let mut table = toml::Table::new();
        let mut smsp = None;
        for (h, v) in header.iter().zip(&values) {
            if v.is_empty() {
                continue;
            }
            match COLUMNS.iter().find(|(c, _)| c == h).and_then(|(_, k)| *k) {
                Some(key) => {
                    table.insert(key.to_string(), toml::Value::String(v.clone()));
                }
                None => {
                    smsp = Some(
                        hex::decode("smsp", v)
                            .map_err(|e| err(line_no, Some("smsp"), reason_of(e)))?,
                    )
                }
            }
        }
        if !table.contains_key("algorithm") {
            let alg = if table.contains_key("opc") || table.contains_key("op") {
                "milenage"
            } else {
                "comp128v1"
            };
            table.insert("algorithm".into(), toml::Value::String(alg.into()));
        }
        if !table.contains_key("iccid") {
            return Err(err(line_no, Some("iccid"), "required".into()));
        }
        let write_pins = table.contains_key("pin1") && table.contains_key("puk1");
        match (table.contains_key("pin1"), table.contains_key("puk1")) {
            (true, false) => return Err(err(line_no, Some("puk1"), "give puk1 with pin1".into())),
            (false, true) => return Err(err(line_no, Some("pin1"), "give pin1 with puk1".into())),
            _ => {}
        }
        // Placeholders only satisfy the profile validator; `write_pins` keeps them off the card.
        table
            .entry("pin1")
            .or_insert_with(|| toml::Value::String("0000".into()));
        table
            .entry("puk1")
            .or_insert_with(|| toml::Value::String("12345678".into()));
        let profile = Profile::from_table(path, table).map_err(|e| match e {
            Error::Profile { key, reason, .. } => err(line_no, key.as_deref(), reason),
            other => other,
        })?;
        if let Some(prev) = seen.insert(profile.iccid.clone(), line_no) {
            return Err(err(
                line_no,
                Some("iccid"),
                format!("same ICCID as line {prev}"),
            ));
        }
        if let Some(prev) = seen_imsi.insert(profile.imsi.clone(), line_no) {
            return Err(err(
                line_no,
                Some("imsi"),
                format!("same IMSI as line {prev}"),
            ));
        }
        targets.push(Target {
            profile,
            write_pins,
            smsp,
            line: Some(line_no),
        });
    }
    if targets.is_empty() {
        return Err(err(
            header_no + 1,
            None,
            "no card rows after the header".into(),
        ));
    }
    Ok(targets)
}

fn reason_of(e: Error) -> String {
    match e {
        Error::BadArgument { reason, .. } => reason,
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEADER: &str = "name,iccid,mcc,mnc,imsi,smsp,ki,opc,acc,adm1\n";

    #[test]
    fn pysim_style_rows_parse() {
        let text = format!(
            "{HEADER}card1,898821100000053010,001,01,001010000000101,,000102030405060708090a0b0c0d0e0f,00112233445566778899aabbccddeeff,0001,88888888\n\"card 2\",898821100000053011,001,01,001010000000102,e1ffffffffffffffffffffff0581005155f5ffffffffffff000000,000102030405060708090a0b0c0d0e0f,,,88888888\n"
        );
        let t = parse(Path::new("b.csv"), &text).unwrap();
        assert_eq!(t.len(), 2);
        assert_eq!(t[0].profile.iccid, "8988211000000530108");
        assert_eq!(t[0].profile.algorithm.name(), "milenage");
        assert_eq!(t[1].profile.algorithm.name(), "comp128v1");
        assert_eq!(t[1].profile.name.as_deref(), Some("card 2"));
        assert!(t[1].smsp.is_some() && !t[0].write_pins);
        assert_eq!(t[1].line, Some(3));
    }

    #[test]
    fn a_byte_order_mark_is_not_part_of_the_header() {
        let text = format!(
            "\u{feff}{HEADER}card1,898821100000053010,001,01,001010000000101,,000102030405060708090a0b0c0d0e0f,,,88888888\n"
        );
        let t = parse(Path::new("b.csv"), &text).unwrap();
        assert_eq!(t[0].profile.name.as_deref(), Some("card1"));
    }

    #[test]
    fn a_bad_value_names_line_and_column() {
        let cases = [
            (
                format!(
                    "{HEADER}a,898821100000053010,001,01,00101000000010x,,000102030405060708090a0b0c0d0e0f,,,88888888\n"
                ),
                "line 2: column `imsi`",
            ),
            (
                format!("{HEADER}a,898821100000053010,001,01,001010000000101,,0001,,,88888888\n"),
                "line 2: column `ki`",
            ),
            (
                format!(
                    "{HEADER}a,898821100000053010,001,01,001010000000101,,000102030405060708090a0b0c0d0e0f,,,88888888\nb,898821100000053010,001,01,001010000000102,,000102030405060708090a0b0c0d0e0f,,,88888888\n"
                ),
                "line 3: column `iccid`: same ICCID as line 2",
            ),
            (
                format!(
                    "{HEADER}a,898821100000053010,001,01,001010000000101,,000102030405060708090a0b0c0d0e0f,,,88888888\nb,898821100000053011,001,01,001010000000101,,000102030405060708090a0b0c0d0e0f,,,88888888\n"
                ),
                "line 3: column `imsi`: same IMSI as line 2",
            ),
            (
                format!("{HEADER}a,898821100000053010,001\n"),
                "line 2: 3 fields",
            ),
            (
                "name,imsi,ki,colour\n".to_string(),
                "column `colour`: unknown column",
            ),
            (
                format!(
                    "{HEADER}a,898821100000053010,001,01,001010000000101,zz,000102030405060708090a0b0c0d0e0f,,,88888888\n"
                ),
                "column `smsp`",
            ),
        ];
        for (text, expected) in cases {
            let e = parse(Path::new("b.csv"), &text).unwrap_err();
            assert_eq!(e.exit_code(), 2);
            assert!(e.to_string().contains(expected), "{e} lacks {expected}");
        }
    }
}
