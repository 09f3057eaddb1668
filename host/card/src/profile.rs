//! Card profiles: the TOML files in `fixtures/cards/` that say what a card holds.
//!
//! One profile drives three things that must agree: the emulated card (`--emulate`), the host's
//! expected answers (`card auth --check`) and provisioning of real cards. Every key is checked
//! here, once, and an error names the file and the key.

use crate::error::{Error, Result};
use crate::hex;
use simlab_applet::Card;
use simlab_applet::algo::Algorithm;
use simlab_applet::card::{ATR_MAX, CardType, Config, Keys};
use simlab_applet::chv::{PIN_LEN, pad_pin};
use simlab_applet::encoding;
use simlab_applet::fs::{self, idx};
use std::path::{Path, PathBuf};

/// Every key a profile may have, with what it means; unknown keys are errors (a typo must not
/// silently fall back to a default).
pub const KEYS: &[(&str, &str)] = &[
    (
        "iccid",
        "18-20 digits; an 18-digit ICCID gets its Luhn check digit appended",
    ),
    (
        "iccid_luhn",
        "false accepts a 19-20 digit ICCID whose last digit is not its Luhn digit (default true)",
    ),
    ("imsi", "6-15 digits"),
    (
        "msisdn",
        "the subscriber number, digits with an optional leading +",
    ),
    ("ki", "Ki/K, 32 hex digits"),
    (
        "algorithm",
        "comp128v1 | comp128v2 | comp128v3 | xor2g | xor3g | milenage",
    ),
    ("op", "Milenage OP, 32 hex digits (give op or opc)"),
    ("opc", "Milenage OPc, 32 hex digits (give op or opc)"),
    ("amf", "AMF the AuC uses, 4 hex digits (default 8000)"),
    (
        "sqn",
        "highest SQN the card has accepted, 12 hex digits (default 000000000000)",
    ),
    ("pin1", "PIN1, 4-8 digits"),
    (
        "pin1_enabled",
        "whether PIN1 must be verified before protected files (default false)",
    ),
    ("puk1", "PUK1, 8 digits"),
    ("pin2", "PIN2, 4-8 digits (default 0000)"),
    ("puk2", "PUK2, 8 digits (default 12345678)"),
    (
        "adm1",
        "ADM1: 4-8 digits, or 16 hex digits for a raw 8-byte key",
    ),
    (
        "adm1_tries",
        "ADM1 attempts before the card locks (default 3)",
    ),
    ("spn", "service provider name, up to 16 characters"),
    (
        "mcc",
        "home network MCC, 3 digits (default: the IMSI's first 3)",
    ),
    (
        "mnc",
        "home network MNC, 2-3 digits (default: the IMSI's next 2)",
    ),
    (
        "acc",
        "access control class bitmap, 4 hex digits (default from the IMSI's last digit)",
    ),
    ("name", "a label for reports"),
    (
        "card_type",
        "the programmable card the model is: simlab | sysmoSIM-GR1 | sysmoUSIM-SJS1 | sysmoISIM-SJA2 (default simlab)",
    ),
];

/// A validated profile.
#[derive(Clone)]
pub struct Profile {
    pub path: PathBuf,
    pub name: Option<String>,
    pub iccid: String,
    /// Whether the ICCID's last digit is checked as its Luhn digit (`iccid_luhn`, default
    /// true).
    pub iccid_luhn: bool,
    pub imsi: String,
    pub msisdn: Option<String>,
    pub ki: [u8; 16],
    pub algorithm: Algorithm,
    pub opc: Option<[u8; 16]>,
    pub amf: [u8; 2],
    pub sqn: u64,
    pub pin1: [u8; PIN_LEN],
    pub pin1_enabled: bool,
    pub puk1: [u8; PIN_LEN],
    pub pin2: [u8; PIN_LEN],
    pub puk2: [u8; PIN_LEN],
    pub adm1: [u8; PIN_LEN],
    pub adm1_tries: u8,
    pub spn: Option<String>,
    pub plmn: [u8; 3],
    pub acc: [u8; 2],
    pub card_type: CardType,
}

impl std::fmt::Debug for Profile {
    /// Secrets stay out of debug output too.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Profile")
            .field("path", &self.path)
            .field("iccid", &self.iccid)
            .field("imsi", &self.imsi)
            .field("algorithm", &self.algorithm)
            .finish_non_exhaustive()
    }
}

struct Reader<'a> {
    path: &'a Path,
    table: toml::Table,
}

impl Reader<'_> {
    fn err(&self, key: &str, reason: impl Into<String>) -> Error {
        Error::Profile {
            path: self.path.to_path_buf(),
            key: Some(key.to_string()),
            reason: reason.into(),
        }
    }

    fn string(&self, key: &str) -> Result<Option<String>> {
        match self.table.get(key) {
            None => Ok(None),
            Some(toml::Value::String(s)) => Ok(Some(s.trim().to_string())),
            Some(toml::Value::Integer(_)) => Err(self.err(
                key,
                "must be a quoted string (a bare number loses leading zeros)",
            )),
            Some(other) => {
                Err(self.err(key, format!("must be a string, not {}", other.type_str())))
            }
        }
    }

    fn required(&self, key: &str) -> Result<String> {
        self.string(key)?
            .ok_or_else(|| self.err(key, "is required"))
    }

    fn hex<const N: usize>(&self, key: &str) -> Result<Option<[u8; N]>> {
        let Some(text) = self.string(key)? else {
            return Ok(None);
        };
        // Keys are secrets: their errors must not quote what was typed.
        let decoded = if matches!(key, "ki" | "op" | "opc") {
            hex::decode_secret_fixed::<N>(key, &text)
        } else {
            hex::decode_fixed::<N>(key, &text)
        };
        decoded.map(Some).map_err(|e| match e {
            Error::BadArgument { reason, .. } => self.err(key, reason),
            other => other,
        })
    }

    fn digits(
        &self,
        key: &str,
        value: &str,
        lengths: std::ops::RangeInclusive<usize>,
    ) -> Result<()> {
        if !value.bytes().all(|b| b.is_ascii_digit()) {
            return Err(self.err(key, format!("must be digits only, got {value:?}")));
        }
        if !lengths.contains(&value.len()) {
            return Err(self.err(
                key,
                format!(
                    "must have {}-{} digits, got {}",
                    lengths.start(),
                    lengths.end(),
                    value.len()
                ),
            ));
        }
        Ok(())
    }

    fn pin(&self, key: &str, default: Option<&str>) -> Result<[u8; PIN_LEN]> {
        let text = match (self.string(key)?, default) {
            (Some(t), _) => t,
            (None, Some(d)) => d.to_string(),
            (None, None) => return Err(self.err(key, "is required")),
        };
        // Never echo the value: it is a secret.
        pad_pin(&text).ok_or_else(|| self.err(key, "must be 4-8 digits"))
    }

    /// A PUK: exactly 8 digits (TS 31.102 / 51.011: the unblock key is 8 digits, unpadded).
    fn puk(&self, key: &str, default: Option<&str>) -> Result<[u8; PIN_LEN]> {
        let text = match (self.string(key)?, default) {
            (Some(t), _) => t,
            (None, Some(d)) => d.to_string(),
            (None, None) => return Err(self.err(key, "is required")),
        };
        if text.len() != PIN_LEN || !text.bytes().all(|b| b.is_ascii_digit()) {
            // Never echo the value: it is a secret.
            return Err(self.err(key, "must be exactly 8 digits"));
        }
        pad_pin(&text).ok_or_else(|| self.err(key, "must be exactly 8 digits"))
    }
}

impl Profile {
    /// Reads and validates a profile file.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::Profile {
            path: path.to_path_buf(),
            key: None,
            reason: format!("cannot read: {e}"),
        })?;
        Self::parse(path, &text)
    }

    /// Validates profile text; `path` is only used in messages.
    pub fn parse(path: &Path, text: &str) -> Result<Self> {
        let table: toml::Table = text.parse().map_err(|e: toml::de::Error| {
            // toml says "duplicate key" and points at the second one: name it (a key, never a
            // value, so no secret is quoted).
            let duplicate = e
                .message()
                .starts_with("duplicate key")
                .then(|| e.span().and_then(|span| text.get(span)))
                .flatten()
                .map(|k| k.trim().trim_matches(['"', '\'']).to_string())
                .filter(|k| !k.is_empty() && !k.contains('\n'));
            match duplicate {
                Some(key) => Error::Profile {
                    path: path.to_path_buf(),
                    key: Some(key),
                    reason: "is given twice".into(),
                },
                None => Error::Profile {
                    path: path.to_path_buf(),
                    key: None,
                    reason: format!("not valid TOML: {}", e.message()),
                },
            }
        })?;
        Self::from_table(path, table)
    }

    /// Validates an already parsed table (a TOML file, or a CSV row mapped to profile keys).
    pub fn from_table(path: &Path, table: toml::Table) -> Result<Self> {
        let r = Reader { path, table };
        if let Some(unknown) = r
            .table
            .keys()
            .find(|k| !KEYS.iter().any(|(known, _)| known == k))
        {
            let known: Vec<&str> = KEYS.iter().map(|(k, _)| *k).collect();
            return Err(r.err(
                unknown,
                format!("unknown key (known keys: {})", known.join(", ")),
            ));
        }

        let iccid = r.required("iccid")?;
        r.digits("iccid", &iccid, 18..=20)?;
        let iccid_luhn = match r.table.get("iccid_luhn") {
            None => true,
            Some(toml::Value::Boolean(b)) => *b,
            Some(_) => return Err(r.err("iccid_luhn", "must be true or false")),
        };
        let iccid = match encoding::encode_iccid_checked(&iccid, iccid_luhn) {
            Ok(bytes) => encoding::decode_iccid(&bytes)
                .map_err(|e| r.err("iccid", e.to_string()))?
                .as_str()
                .to_string(),
            Err(e) => return Err(r.err("iccid", e.to_string())),
        };
        let imsi = r.required("imsi")?;
        r.digits("imsi", &imsi, 6..=15)?;
        let msisdn = r.string("msisdn")?;
        if let Some(m) = &msisdn {
            let digits = m.strip_prefix('+').unwrap_or(m);
            r.digits("msisdn", digits, 1..=20)?;
        }
        let algorithm_name = r.required("algorithm")?;
        let algorithm = Algorithm::from_name(&algorithm_name).ok_or_else(|| {
            let names: Vec<&str> = Algorithm::ALL.iter().map(|a| a.name()).collect();
            r.err(
                "algorithm",
                format!(
                    "unknown algorithm {algorithm_name:?} (one of {})",
                    names.join(", ")
                ),
            )
        })?;
        let ki = r
            .hex::<16>("ki")?
            .ok_or_else(|| r.err("ki", "is required"))?;
        let op = r.hex::<16>("op")?;
        let opc_given = r.hex::<16>("opc")?;
        let opc = match (op, opc_given) {
            (Some(_), Some(_)) => return Err(r.err("opc", "give either op or opc, not both")),
            (Some(op), None) => Some(simlab_applet::algo::milenage::opc(&ki, &op)),
            (None, opc) => opc,
        };
        if algorithm == Algorithm::Milenage && opc.is_none() {
            return Err(r.err("opc", "milenage needs op or opc"));
        }
        let amf = r.hex::<2>("amf")?.unwrap_or([0x80, 0x00]);
        let sqn = r.hex::<6>("sqn")?.map_or(0, |s| {
            u64::from_be_bytes([0, 0, s[0], s[1], s[2], s[3], s[4], s[5]])
        });
        let pin1 = r.pin("pin1", None)?;
        let puk1 = r.puk("puk1", None)?;
        let pin2 = r.pin("pin2", Some("0000"))?;
        let puk2 = r.puk("puk2", Some("12345678"))?;
        let pin1_enabled = match r.table.get("pin1_enabled") {
            None => false,
            Some(toml::Value::Boolean(b)) => *b,
            Some(_) => return Err(r.err("pin1_enabled", "must be true or false")),
        };
        let adm_text = r.required("adm1")?;
        let adm1 = if adm_text.len() == 16 {
            hex::decode_secret_fixed::<8>("adm1", &adm_text).map_err(|_| {
                r.err(
                    "adm1",
                    "16 characters must be hex digits (a raw 8-byte key)",
                )
            })?
        } else {
            pad_pin(&adm_text)
                .ok_or_else(|| r.err("adm1", "must be 4-8 digits or 16 hex digits"))?
        };
        let adm1_tries = match r.table.get("adm1_tries") {
            None => 3,
            Some(toml::Value::Integer(n)) if (1..=15).contains(n) => *n as u8,
            Some(_) => return Err(r.err("adm1_tries", "must be a number from 1 to 15")),
        };
        let spn = r.string("spn")?;
        if let Some(s) = &spn
            && (s.len() > 16 || !s.is_ascii())
        {
            return Err(r.err("spn", "must be at most 16 ASCII characters"));
        }
        let mcc = r.string("mcc")?.unwrap_or_else(|| imsi[..3].to_string());
        let mnc = r.string("mnc")?.unwrap_or_else(|| imsi[3..5].to_string());
        let plmn =
            encoding::encode_plmn(&mcc, &mnc).map_err(|e| r.err("mnc", format!("MCC/MNC {e}")))?;
        let acc = match r.hex::<2>("acc")? {
            Some(acc) => acc,
            None => {
                // TS 22.011 4.2: classes 0-9 are drawn from the IMSI's last digit.
                let class = imsi.as_bytes()[imsi.len() - 1] - b'0';
                (1u16 << class).to_be_bytes()
            }
        };
        let card_type = match r.string("card_type")? {
            None => CardType::Simlab,
            Some(name) => CardType::from_name(&name).ok_or_else(|| {
                let names: Vec<&str> = CardType::ALL.iter().map(|t| t.name()).collect();
                r.err(
                    "card_type",
                    format!("unknown card type {name:?} (one of {})", names.join(", ")),
                )
            })?,
        };
        if card_type == CardType::SysmoUsimSjs1 && algorithm != Algorithm::Milenage {
            return Err(r.err("algorithm", "sysmoUSIM-SJS1 runs milenage only"));
        }
        Ok(Profile {
            card_type,
            path: path.to_path_buf(),
            name: r.string("name")?,
            iccid,
            iccid_luhn,
            imsi,
            msisdn,
            ki,
            algorithm,
            opc,
            amf,
            sqn,
            pin1,
            pin1_enabled,
            puk1,
            pin2,
            puk2,
            adm1,
            adm1_tries,
            spn,
            plmn,
            acc,
        })
    }

    /// The keys as the card and the AuC need them.
    pub fn keys(&self) -> Keys {
        Keys {
            algorithm: self.algorithm,
            ki: self.ki,
            opc: self.opc,
        }
    }

    /// A freshly personalised card model for this profile, its token DRBG seeded from the OS.
    pub fn build_card(&self) -> Result<Card> {
        Ok(self.build_card_seeded(crate::random::bytes::<32>()?))
    }

    /// As [`Profile::build_card`] with a given token seed (tests want reproducible cards).
    pub fn build_card_seeded(&self, token_seed: [u8; 32]) -> Card {
        let mut config = Config::new(self.keys());
        config.sqn = self.sqn;
        config.pin1 = self.pin1;
        config.puk1 = self.puk1;
        config.pin1_enabled = self.pin1_enabled;
        config.pin2 = self.pin2;
        config.puk2 = self.puk2;
        config.adm1 = self.adm1;
        config.adm1_tries = self.adm1_tries;
        config.token_seed = token_seed;
        config.card_type = self.card_type;
        let atr = self.card_type.atr();
        config.atr[..atr.len()].copy_from_slice(atr);
        config.atr_len = atr.len();
        debug_assert!(config.atr_len <= ATR_MAX);
        let mut card = Card::new(&config);
        for (file, offset, bytes) in self.file_contents() {
            // The layout is fixed and every content below fits its file, which the tests check.
            let _ = card.personalize(file, offset, &bytes);
        }
        card
    }

    /// EF_ICCID's content, checked as the profile asks (`iccid_luhn`).
    pub fn encoded_iccid(&self) -> Result<[u8; 10], encoding::EncodingError> {
        encoding::encode_iccid_checked(&self.iccid, self.iccid_luhn)
    }

    /// The EF contents this profile defines: (file index, byte offset, bytes).
    pub fn file_contents(&self) -> Vec<(u8, usize, Vec<u8>)> {
        let mut files = Vec::new();
        // Both unwraps below are on values `parse` already validated.
        if let Ok(iccid) = self.encoded_iccid() {
            files.push((idx::EF_ICCID, 0, iccid.to_vec()));
        }
        if let Ok(imsi) = encoding::encode_imsi(&self.imsi) {
            files.push((idx::EF_IMSI, 0, imsi.to_vec()));
        }
        // Sizes and record lengths are the card type's own (simlab_applet::fs).
        let size = |file| fs::kind(self.card_type, file).map_or(0, |k| k.size());
        if let Some(msisdn) = &self.msisdn {
            let len = fs::kind(self.card_type, idx::EF_MSISDN)
                .and_then(|k| k.records())
                .map_or(26, |(len, _)| len as usize);
            files.push((idx::EF_MSISDN, 0, msisdn_record(msisdn, len)));
        }
        if let Some(spn) = &self.spn {
            let mut content = vec![0xFF; 17];
            content[0] = 0x01; // display condition: show the SPN
            content[1..1 + spn.len()].copy_from_slice(spn.as_bytes());
            files.push((idx::EF_SPN, 0, content));
        }
        files.push((idx::EF_ACC, 0, self.acc.to_vec()));
        // EF_AD: normal operation, MNC length in byte 4 (TS 31.102 4.2.18) where the card's
        // EF_AD has a byte 4 (the GR1's has three).
        let mnc_len = if self.plmn[1] >> 4 == 0xF { 2 } else { 3 };
        let mut ad = vec![0x00, 0x00, 0x00, mnc_len];
        ad.truncate(size(idx::EF_AD));
        files.push((idx::EF_AD, 0, ad));
        let mut plmnsel = vec![0xFF; size(idx::EF_PLMNSEL)];
        plmnsel[..3].copy_from_slice(&self.plmn);
        files.push((idx::EF_PLMNSEL, 0, plmnsel));
        let mut plmnwact = vec![0xFF; 40];
        plmnwact[..3].copy_from_slice(&self.plmn);
        plmnwact[3..5].copy_from_slice(&[0xC0, 0x80]); // UTRAN + E-UTRAN, GSM
        files.push((idx::EF_PLMNWACT, 0, plmnwact));
        files.push((idx::EF_HPPLMN, 0, vec![0x0A]));
        files.push((idx::EF_FPLMN, 0, vec![0xFF; 12]));
        // The service tables, EF_LI, EF_EST, EF_DIR and EF_ARR are the card type's factory
        // contents (simlab_applet::fs::factory), consistent with its files.
        files
    }
}

/// EF_MSISDN record of `len` bytes (TS 31.102 4.2.26): alpha identifier (len - 14 bytes), BCD
/// length, TON/NPI, 10 BCD bytes, CCP and extension identifiers.
fn msisdn_record(number: &str, len: usize) -> Vec<u8> {
    let mut record = vec![0xFF; len.max(14)];
    let x = record.len() - 14;
    let mut bcd = [0xFF; 10];
    if let Ok((n, ton)) = encoding::encode_dialling_number(number, &mut bcd) {
        record[x] = (n + 1) as u8;
        record[x + 1] = ton;
        record[x + 2..x + 12].copy_from_slice(&bcd);
    }
    record
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = r#"
iccid = "898821100000053010"
imsi = "001010000000001"
ki = "112233445566778899AABBCCDDEEFF00"
algorithm = "comp128v1"
pin1 = "1234"
puk1 = "12345678"
adm1 = "88888888"
"#;

    fn parse(extra: &str) -> Result<Profile> {
        Profile::parse(Path::new("t.toml"), &format!("{BASE}{extra}"))
    }

    #[test]
    fn a_minimal_profile_gets_its_luhn_digit() {
        let p = parse("").unwrap();
        assert_eq!(p.iccid, "8988211000000530108");
        assert_eq!(p.amf, [0x80, 0x00]);
    }

    #[test]
    fn errors_name_the_key() {
        let cases = [
            ("typo = \"1\"\n", "key `typo`: unknown key"),
            ("opc = \"zz\"\n", "key `opc`: not hex"),
            ("amf = \"800\"\n", "key `amf`: odd number"),
            ("sqn = 5\n", "key `sqn`: must be a quoted string"),
            ("pin2 = \"12\"\n", "key `pin2`: must be 4-8 digits"),
            ("spn = \"a very long provider name\"\n", "key `spn`"),
        ];
        for (extra, expected) in cases {
            let err = parse(extra).unwrap_err().to_string();
            assert!(err.contains(expected), "{extra:?}: {err}");
        }
        let bad_alg = BASE.replace("comp128v1", "comp129");
        let err = Profile::parse(Path::new("t.toml"), &bad_alg)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("key `algorithm`: unknown algorithm \"comp129\""),
            "{err}"
        );
        let milenage = BASE.replace("comp128v1", "milenage");
        let err = Profile::parse(Path::new("t.toml"), &milenage)
            .unwrap_err()
            .to_string();
        assert!(err.contains("key `opc`: milenage needs op or opc"), "{err}");
        let bad_luhn = BASE.replace("898821100000053010", "8988211000000530107");
        let err = Profile::parse(Path::new("t.toml"), &bad_luhn)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("key `iccid`: fails its Luhn check digit"),
            "{err}"
        );
        // Some test cards carry such an ICCID: the profile says so, and it is kept as given,
        // 19 or 20 digits, on the card.
        for iccid in ["8988211000000530107", "89882110000005301079"] {
            let text = format!(
                "iccid_luhn = false\n{}",
                BASE.replace("898821100000053010", iccid)
            );
            let p = Profile::parse(Path::new("t.toml"), &text).unwrap();
            assert_eq!(p.iccid, iccid);
            let card = simlab_applet::encoding::decode_iccid(&p.encoded_iccid().unwrap()).unwrap();
            assert_eq!(card.as_str(), iccid);
        }
        let not_bool = format!("iccid_luhn = \"no\"\n{BASE}");
        let err = Profile::parse(Path::new("t.toml"), &not_bool)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("key `iccid_luhn`: must be true or false"),
            "{err}"
        );
        let err = Profile::parse(Path::new("t.toml"), "iccid = [")
            .unwrap_err()
            .to_string();
        assert!(err.contains("not valid TOML"), "{err}");
    }

    #[test]
    fn error_messages_never_contain_secret_values() {
        let err = parse("pin2 = \"98x7\"\n").unwrap_err().to_string();
        assert!(!err.contains("98x7"), "{err}");
    }

    #[test]
    fn every_file_content_fits_its_file() {
        let p = parse("msisdn = \"+4912345678\"\nspn = \"simlab\"\n").unwrap();
        let mut card = p.build_card_seeded([7; 32]);
        for (file, offset, bytes) in p.file_contents() {
            card.personalize(file, offset, &bytes).unwrap();
        }
    }
}
