//! Runs the data-driven PDU fixtures in `fixtures/sms/*.txt`. The format is
//! documented at the top of `fixtures/sms/pdus.txt`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use simlab_sms::{
    Address, Alphabet, ConcatReference, Decoded, Deliver, Error, Pdu, Push, Reassembler,
    RelativeValidity, Submit, SubmitOptions, TextEncoding, ValidityPeriod, decode, encode_text,
    hex,
};

const KEYS: &[&str] = &[
    "pdu",
    "sca",
    "type",
    "smsc",
    "oa",
    "da",
    "ra",
    "toa",
    "first_octet",
    "pid",
    "dcs",
    "alphabet",
    "class",
    "mr",
    "status",
    "scts",
    "dt",
    "vp",
    "srr",
    "udh",
    "concat",
    "ports",
    "text",
    "data",
    "cmgs",
    "reencode",
    "encode",
    "error",
    "error_field",
    "group",
    "encode_to",
    "rd",
    "ref8",
    "ref16",
    "encoding",
    "parts",
    "first_part",
    "first_part_prefix",
    "max_parts",
];

struct Record {
    origin: String,
    fields: BTreeMap<String, String>,
}

impl Record {
    fn get(&self, key: &str) -> Option<&str> {
        self.fields.get(key).map(String::as_str)
    }

    fn yes(&self, key: &str) -> Option<bool> {
        self.get(key).map(|v| match v {
            "yes" => true,
            "no" => false,
            other => panic!("{}: {key} must be yes or no, not {other:?}", self.origin),
        })
    }

    fn text(&self) -> Option<String> {
        self.get("text").map(unescape)
    }
}

fn unescape(s: &str) -> String {
    let mut out = String::new();
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('n') => out.push('\n'),
            Some('r') => out.push('\r'),
            Some('t') => out.push('\t'),
            Some('\\') => out.push('\\'),
            Some('u') => {
                assert_eq!(chars.next(), Some('{'), "bad \\u escape in {s:?}");
                let code: String = chars.by_ref().take_while(|&c| c != '}').collect();
                let code = u32::from_str_radix(&code, 16).expect("hex in \\u{}");
                out.push(char::from_u32(code).expect("scalar value"));
            }
            other => panic!("unknown escape \\{other:?} in {s:?}"),
        }
    }
    out
}

fn fixture_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/sms")
}

fn load() -> Vec<Record> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(fixture_dir())
        .expect("fixtures/sms exists")
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "txt"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no fixture files");
    let mut records = Vec::new();
    for file in files {
        let name = file.file_name().unwrap().to_string_lossy().into_owned();
        let content = std::fs::read_to_string(&file).expect("readable fixture");
        let mut current: Option<Record> = None;
        for (n, line) in content.lines().enumerate() {
            if line.trim().is_empty() {
                records.extend(current.take());
                continue;
            }
            if line.starts_with('#') {
                continue;
            }
            let (key, value) = line
                .split_once(": ")
                .or_else(|| line.strip_suffix(':').map(|k| (k, "")))
                .unwrap_or_else(|| panic!("{name}:{}: expected `key: value`", n + 1));
            assert!(KEYS.contains(&key), "{name}:{}: unknown key {key:?}", n + 1);
            let record = current.get_or_insert_with(|| Record {
                origin: format!("{name}:{}", n + 1),
                fields: BTreeMap::new(),
            });
            let previous = record.fields.insert(key.to_owned(), value.to_owned());
            assert!(previous.is_none(), "{name}:{}: duplicate key {key}", n + 1);
        }
        records.extend(current.take());
    }
    records
}

fn check(origin: &str, key: &str, expected: Option<&str>, actual: impl FnOnce() -> String) {
    if let Some(expected) = expected {
        let actual = actual();
        assert_eq!(actual, expected, "{origin}: {key}");
    }
}

fn hex_u8(v: u8) -> String {
    format!("{v:02x}")
}

fn concat_string(d: &Decoded) -> String {
    match d.pdu.udh().and_then(|u| u.concatenation()) {
        None => "none".into(),
        Some(c) => format!(
            "{}/{}/{}/{}",
            c.reference.width(),
            c.reference.value(),
            c.total,
            c.sequence
        ),
    }
}

fn ports_string(d: &Decoded) -> String {
    use simlab_sms::PortAddressing::*;
    match d.pdu.udh().and_then(|u| u.ports()) {
        None => "none".into(),
        Some(Bits8 {
            destination,
            originator,
        }) => format!("8/{destination}/{originator}"),
        Some(Bits16 {
            destination,
            originator,
        }) => format!("16/{destination}/{originator}"),
    }
}

fn vp_string(vp: Option<&ValidityPeriod>) -> String {
    match vp {
        None => "none".into(),
        Some(ValidityPeriod::Relative(r)) => format!("relative:{}", hex_u8(r.octet())),
        Some(ValidityPeriod::Absolute(t)) => format!("absolute:{t}"),
        Some(ValidityPeriod::Enhanced(e)) => format!("enhanced:{}", hex::encode_lower(&e.octets())),
    }
}

fn check_decoded(r: &Record, bytes: &[u8], with_sca: bool, d: &Decoded) {
    let o = r.origin.as_str();
    let p = &d.pdu;
    check(o, "type", r.get("type"), || {
        p.message_type().as_str().into()
    });
    check(o, "smsc", r.get("smsc"), || {
        d.sca.as_ref().map_or("none".into(), ToString::to_string)
    });
    for key in ["oa", "da", "ra"] {
        if let Some(expected) = r.get(key) {
            assert_eq!(p.address_key(), key, "{o}: address kind");
            assert_eq!(p.address().to_string(), expected, "{o}: {key}");
        }
    }
    check(o, "toa", r.get("toa"), || hex_u8(p.address().toa()));
    check(o, "first_octet", r.get("first_octet"), || {
        hex_u8(p.first_octet())
    });
    check(o, "pid", r.get("pid"), || {
        p.protocol_identifier().map_or("none".into(), hex_u8)
    });
    check(o, "dcs", r.get("dcs"), || {
        p.dcs().map_or("none".into(), |d| hex_u8(d.octet()))
    });
    check(o, "alphabet", r.get("alphabet"), || {
        p.dcs().map_or("none", |d| d.alphabet().as_str()).into()
    });
    check(o, "class", r.get("class"), || {
        p.dcs()
            .and_then(|d| d.message_class())
            .map_or("none".into(), |c| c.number().to_string())
    });
    check(o, "mr", r.get("mr"), || {
        p.message_reference()
            .map_or("none".into(), |m| m.to_string())
    });
    check(o, "status", r.get("status"), || {
        p.status().map_or("none".into(), |s| hex_u8(s.octet()))
    });
    check(o, "scts", r.get("scts"), || {
        p.service_centre_timestamp()
            .map_or("none".into(), |t| t.to_string())
    });
    check(o, "dt", r.get("dt"), || {
        p.discharge_time().map_or("none".into(), |t| t.to_string())
    });
    check(o, "vp", r.get("vp"), || vp_string(p.validity_period()));
    if let Some(srr) = r.yes("srr") {
        assert_eq!(p.status_report_request(), Some(srr), "{o}: srr");
    }
    check(o, "udh", r.get("udh"), || {
        p.udh()
            .map_or("none".into(), |u| hex::encode_lower(&u.to_bytes().unwrap()))
    });
    check(o, "concat", r.get("concat"), || concat_string(d));
    check(o, "ports", r.get("ports"), || ports_string(d));
    if let Some(text) = r.text() {
        assert_eq!(p.text().as_deref(), Some(text.as_str()), "{o}: text");
    }
    check(o, "data", r.get("data"), || {
        p.user_data()
            .map_or("none".into(), |u| hex::encode_lower(u.payload.as_slice()))
    });
    check(o, "cmgs", r.get("cmgs"), || d.tpdu_len.to_string());

    if r.yes("reencode").unwrap_or(true) {
        let encoded = p
            .encode(d.sca.as_ref())
            .unwrap_or_else(|e| panic!("{o}: re-encode: {e}"));
        let again = if with_sca {
            encoded.as_bytes()
        } else {
            encoded.tpdu()
        };
        assert_eq!(
            hex::encode_upper(again),
            hex::encode_upper(bytes),
            "{o}: re-encoding differs"
        );
        assert_eq!(encoded.cmgs_length(), d.tpdu_len, "{o}: cmgs length");
    }

    if r.yes("encode") == Some(true) {
        let Pdu::Submit(s) = p else {
            panic!("{o}: encode: yes needs a SUBMIT")
        };
        let options = SubmitOptions {
            encoding: match s.dcs.alphabet() {
                Alphabet::Ucs2 => TextEncoding::Ucs2,
                _ => TextEncoding::Gsm7,
            },
            status_report_request: s.status_report_request,
            reject_duplicates: s.reject_duplicates,
            validity_period: s.validity_period,
            message_reference: s.message_reference,
            message_class: s.dcs.message_class(),
            protocol_identifier: s.protocol_identifier,
            service_centre: d.sca.clone(),
            ..SubmitOptions::default()
        };
        let text = p.text().expect("text");
        let parts = encode_text(&s.destination, &text, &options).expect("encode_text");
        assert_eq!(parts.len(), 1, "{o}: one part");
        assert_eq!(
            parts[0].to_hex(),
            hex::encode_upper(bytes),
            "{o}: encode_text differs"
        );
        assert_eq!(parts[0].cmgs_length(), d.tpdu_len, "{o}: cmgs");
    }
}

fn check_error(r: &Record, result: Result<Decoded, Error>) {
    let o = r.origin.as_str();
    let expected = r.get("error").unwrap();
    let err = match result {
        Ok(d) => panic!("{o}: expected error {expected}, decoded {:?}", d.pdu),
        Err(e) => e,
    };
    assert_eq!(err.kind(), expected, "{o}: {err:?}");
    if let Some(field) = r.get("error_field") {
        let actual = match &err {
            Error::Truncated { field, .. }
            | Error::LengthOutOfRange { field, .. }
            | Error::InvalidSemiOctet { field, .. } => *field,
            other => panic!("{o}: {other:?} has no field"),
        };
        assert_eq!(actual, field, "{o}: error field");
    }
    // Display must say something useful.
    assert!(!err.to_string().is_empty());
}

fn run_encode(r: &Record) {
    let o = r.origin.as_str();
    let to = Address::parse(r.get("encode_to").unwrap()).expect("address");
    let mut options = SubmitOptions {
        reject_duplicates: r.yes("rd").unwrap_or(false),
        status_report_request: r.yes("srr").unwrap_or(false),
        ..SubmitOptions::default()
    };
    if let Some(vp) = r.get("vp") {
        let octet = vp.strip_prefix("relative:").expect("vp: relative:XX");
        options.validity_period = Some(ValidityPeriod::Relative(RelativeValidity::from_octet(
            u8::from_str_radix(octet, 16).unwrap(),
        )));
    }
    if let Some(mr) = r.get("mr") {
        options.message_reference = mr.parse().unwrap();
    }
    if let Some(reference) = r.get("ref8") {
        options.concat_reference = ConcatReference::Bits8(reference.parse().unwrap());
    }
    if let Some(reference) = r.get("ref16") {
        options.concat_reference = ConcatReference::Bits16(reference.parse().unwrap());
    }
    if let Some(max) = r.get("max_parts") {
        options.max_parts = max.parse().unwrap();
    }
    if let Some(smsc) = r.get("smsc") {
        options.service_centre = Some(Address::parse(smsc).unwrap());
    }
    options.encoding = match r.get("encoding") {
        None | Some("auto") => TextEncoding::Auto,
        Some("gsm7") => TextEncoding::Gsm7,
        Some("ucs2") => TextEncoding::Ucs2,
        Some(other) => panic!("{o}: encoding {other}"),
    };
    let text = r.text().expect("text");
    let result = encode_text(&to, &text, &options);
    if let Some(kind) = r.get("error") {
        let err = result.expect_err(o);
        assert_eq!(err.kind(), kind, "{o}: {err:?}");
        return;
    }
    let parts = result.unwrap_or_else(|e| panic!("{o}: {e}"));
    check(o, "parts", r.get("parts"), || parts.len().to_string());
    check(o, "first_part", r.get("first_part"), || parts[0].to_hex());
    if let Some(prefix) = r.get("first_part_prefix") {
        assert!(
            parts[0].to_hex().starts_with(prefix),
            "{o}: {} does not start with {prefix}",
            parts[0].to_hex()
        );
    }
    check(o, "cmgs", r.get("cmgs"), || {
        parts[0].cmgs_length().to_string()
    });
    // Whatever was encoded decodes back to the text.
    let mut joined = String::new();
    for part in &parts {
        let d = decode(part.as_bytes(), true).expect("own output decodes");
        joined.push_str(&d.pdu.text().unwrap());
    }
    assert_eq!(joined, text, "{o}: round trip");
}

#[derive(Default)]
struct Group {
    delivers: Vec<Deliver>,
    submits: Vec<Submit>,
    text: Option<(String, String)>,
}

#[test]
fn fixtures() {
    let records = load();
    let mut groups: BTreeMap<String, Group> = BTreeMap::new();
    let mut decoded = 0;
    for r in &records {
        if r.get("encode_to").is_some() {
            run_encode(r);
            continue;
        }
        let Some(pdu) = r.get("pdu") else {
            let name = r
                .get("group")
                .unwrap_or_else(|| panic!("{}: no pdu", r.origin));
            let text = r
                .text()
                .unwrap_or_else(|| panic!("{}: group needs text", r.origin));
            groups.entry(name.into()).or_default().text = Some((r.origin.clone(), text));
            continue;
        };
        let with_sca = r
            .yes("sca")
            .unwrap_or_else(|| panic!("{}: sca: yes|no is required", r.origin));
        let bytes = hex::decode(pdu).unwrap_or_else(|e| panic!("{}: {e}", r.origin));
        let result = decode(&bytes, with_sca);
        if r.get("error").is_some() {
            check_error(r, result);
            continue;
        }
        let d = result.unwrap_or_else(|e| panic!("{}: {e:?}", r.origin));
        check_decoded(r, &bytes, with_sca, &d);
        decoded += 1;
        if let Some(name) = r.get("group") {
            let group = groups.entry(name.into()).or_default();
            match d.pdu {
                Pdu::Deliver(del) => group.delivers.push(del),
                Pdu::Submit(sub) => group.submits.push(sub),
                Pdu::StatusReport(_) => panic!("{}: status reports do not concatenate", r.origin),
            }
        }
    }
    assert!(decoded >= 20, "only {decoded} PDUs decoded");
    for (name, group) in groups {
        let (origin, text) = group
            .text
            .unwrap_or_else(|| panic!("group {name} has no text"));
        // Feed parts last-first to exercise out-of-order arrival.
        if !group.delivers.is_empty() {
            assert_eq!(reassemble(group.delivers), text, "{origin}: group {name}");
        }
        if !group.submits.is_empty() {
            assert_eq!(reassemble(group.submits), text, "{origin}: group {name}");
        }
    }
}

fn reassemble<F: simlab_sms::Fragment + Clone + PartialEq + std::fmt::Debug>(
    mut parts: Vec<F>,
) -> String {
    parts.reverse();
    let now = Instant::now();
    let mut r = Reassembler::new(Duration::from_secs(60));
    let mut done = None;
    for part in parts {
        // Every part twice: the copy must be recognised as a duplicate.
        match r.push(part.clone(), now).unwrap() {
            Push::Complete(m) => done = Some(m),
            Push::Pending { .. } => {
                assert_eq!(r.push(part, now).unwrap(), Push::Duplicate);
            }
            Push::Duplicate => panic!("first copy seen as duplicate"),
        }
    }
    assert_eq!(r.pending(), 0);
    done.expect("message completed")
        .text()
        .expect("text message")
}
