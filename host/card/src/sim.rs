//! Talking to a SIM or USIM through any transport: file selection and reading, PINs and
//! authentication, in whichever dialect the card speaks.
//!
//! This module knows the cards only through the specifications (TS 51.011, TS 102 221,
//! TS 31.102): file IDs, APDUs and response formats. It works the same against a real card in a
//! reader and against the simlab card model.

use crate::error::{Error, Result};
use crate::transport::{Link, Reply};
use simlab_applet::chv::PIN_LEN;
use simlab_applet::{Command, Status};

/// The 3GPP USIM application identifier (RID + application code); SELECT matches the prefix.
pub const USIM_AID_PREFIX: [u8; 7] = [0xA0, 0x00, 0x00, 0x00, 0x87, 0x10, 0x02];

/// Which command set the card answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dialect {
    /// TS 51.011 (CLA A0): a classic SIM, or a UICC addressed as one.
    Gsm,
    /// TS 102 221 (CLA 00) with ADF.USIM.
    Uicc,
}

/// Where a standard file lives: under the MF by a FID path, or inside ADF.USIM.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Location {
    /// A path of FIDs below the MF (3F00 itself omitted).
    Mf(&'static [u16]),
    /// A FID inside ADF.USIM.
    Usim(u16),
}

/// A standard elementary file: its name and where the specifications put it.
#[derive(Clone, Copy, Debug)]
pub struct StandardFile {
    pub name: &'static str,
    pub location: Location,
    pub about: &'static str,
}

const fn mf(name: &'static str, path: &'static [u16], about: &'static str) -> StandardFile {
    StandardFile {
        name,
        location: Location::Mf(path),
        about,
    }
}

const fn usim(name: &'static str, fid: u16, about: &'static str) -> StandardFile {
    StandardFile {
        name,
        location: Location::Usim(fid),
        about,
    }
}

/// The files `simlab card read` knows by name (TS 51.011 10.x, TS 102 221 13, TS 31.102 4.2).
pub const FILES: &[StandardFile] = &[
    mf("ICCID", &[0x2FE2], "ICC identification"),
    mf("DIR", &[0x2F00], "application directory"),
    mf("ARR", &[0x2F06], "access rule reference"),
    mf(
        "MSISDN",
        &[0x7F10, 0x6F40],
        "subscriber numbers (DF_TELECOM)",
    ),
    mf("SMSP", &[0x7F10, 0x6F42], "SMS parameters"),
    mf("SMS", &[0x7F10, 0x6F3C], "stored short messages"),
    mf("IMSI", &[0x7F20, 0x6F07], "IMSI (DF_GSM)"),
    mf("KC", &[0x7F20, 0x6F20], "ciphering key Kc"),
    mf("PLMNSEL", &[0x7F20, 0x6F30], "PLMN selector"),
    mf("HPPLMN", &[0x7F20, 0x6F31], "HPLMN search period"),
    mf("SST", &[0x7F20, 0x6F38], "SIM service table"),
    mf("SPN", &[0x7F20, 0x6F46], "service provider name"),
    mf("ACC", &[0x7F20, 0x6F78], "access control class"),
    mf("FPLMN", &[0x7F20, 0x6F7B], "forbidden PLMNs"),
    mf("LOCI", &[0x7F20, 0x6F7E], "location information"),
    mf("AD", &[0x7F20, 0x6FAD], "administrative data"),
    usim("USIM/IMSI", 0x6F07, "IMSI (ADF.USIM)"),
    usim("USIM/UST", 0x6F38, "USIM service table"),
    usim("USIM/KEYS", 0x6F08, "CS ciphering and integrity keys"),
    usim("USIM/KEYSPS", 0x6F09, "PS ciphering and integrity keys"),
    usim("USIM/EST", 0x6F56, "enabled services table"),
    usim("USIM/PSLOCI", 0x6F73, "PS location information"),
    usim(
        "USIM/PLMNWACT",
        0x6F60,
        "user PLMN selector with access technology",
    ),
    usim("USIM/LI", 0x6F05, "language indication"),
    usim("USIM/SPN", 0x6F46, "service provider name"),
    usim("USIM/MSISDN", 0x6F40, "subscriber numbers"),
    usim("USIM/AD", 0x6FAD, "administrative data"),
];

/// Finds a standard file by name, case-insensitively, with or without an `EF_` prefix.
pub fn find_file(name: &str) -> Option<&'static StandardFile> {
    let wanted = name
        .to_ascii_uppercase()
        .replace("EF_", "")
        .replace("ADF.", "");
    FILES.iter().find(|f| f.name == wanted)
}

/// How an EF is organised, from its SELECT response.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Structure {
    Transparent {
        size: usize,
    },
    LinearFixed {
        record_len: usize,
        records: usize,
    },
    /// A DF or something this host does not read (cyclic, BER-TLV).
    Other,
}

/// Which secret code.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Code {
    Pin1,
    Pin2,
    Adm1,
}

impl Code {
    fn reference(self, dialect: Dialect) -> u8 {
        match (self, dialect) {
            (Code::Pin1, _) => 0x01,
            (Code::Pin2, Dialect::Gsm) => 0x02,
            (Code::Pin2, Dialect::Uicc) => 0x81,
            (Code::Adm1, _) => 0x0A,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Code::Pin1 => "PIN1",
            Code::Pin2 => "PIN2",
            Code::Adm1 => "ADM1",
        }
    }
}

/// The outcome of VERIFY.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VerifyOutcome {
    Verified,
    /// Wrong code; tries left when the card says (TS 51.011 cards do not).
    Wrong {
        tries_left: Option<u8>,
    },
    Blocked,
    /// TS 51.011 9808: e.g. verifying a disabled CHV1.
    NotEnabled,
}

/// Retry counters, as far as the card tells them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Tries {
    pub pin1: Option<u8>,
    pub puk1: Option<u8>,
    pub pin2: Option<u8>,
    pub puk2: Option<u8>,
    pub adm1: Option<u8>,
    pub pin1_enabled: Option<bool>,
}

/// A card's answer to an authentication challenge.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AuthResult {
    /// 2G, or a USIM in GSM context.
    Gsm { sres: [u8; 4], kc: [u8; 8] },
    /// USIM 3G context success.
    Umts {
        res: Vec<u8>,
        ck: [u8; 16],
        ik: [u8; 16],
        kc: Option<[u8; 8]>,
    },
    /// Synchronisation failure: the card's SQN is ahead of the network's.
    SyncFailure { auts: [u8; 14] },
    /// The card rejected AUTN's MAC (9862): the network is not who it claims.
    MacFailure,
}

/// A card session.
pub struct Sim {
    link: Link,
    dialect: Dialect,
    usim_selected: bool,
    /// The key reference ADM1 has on this card: `0A` (TS 102 221) unless the card's type says
    /// otherwise (a sysmoSIM-GR1 keeps its ADM as CHV 5).
    adm_reference: u8,
}

impl Sim {
    /// Presents ADM1 under `reference` from now on: for card types whose ADM is not key
    /// reference `0A` (the provisioning drivers know which).
    pub fn set_adm_reference(&mut self, reference: u8) {
        self.adm_reference = reference;
    }

    /// Opens a session and finds out which dialect the card speaks: a UICC answers a CLA 00
    /// SELECT of the MF; a classic SIM rejects the class.
    pub fn open(mut link: Link) -> Result<Self> {
        let probe = Command::new(0x00, 0xA4, 0x00, 0x04)
            .with_data(&[0x3F, 0x00])
            .with_ne(256);
        let reply = link.transmit(&probe)?;
        let dialect = if reply.status == Status::Success {
            Dialect::Uicc
        } else {
            Dialect::Gsm
        };
        Ok(Sim {
            link,
            dialect,
            usim_selected: false,
            adm_reference: 0x0A,
        })
    }

    pub fn dialect(&self) -> Dialect {
        self.dialect
    }

    /// The card's ATR.
    pub fn atr(&mut self) -> Vec<u8> {
        self.link.transport().atr()
    }

    /// The underlying link, for raw APDUs.
    pub fn link(&mut self) -> &mut Link {
        &mut self.link
    }

    fn cla(&self) -> u8 {
        match self.dialect {
            Dialect::Gsm => 0xA0,
            Dialect::Uicc => 0x00,
        }
    }

    fn send(&mut self, cmd: &Command) -> Result<Reply> {
        Ok(self.link.transmit(cmd)?)
    }

    fn expect_ok(&mut self, name: &'static str, cmd: &Command) -> Result<Vec<u8>> {
        let reply = self.send(cmd)?;
        if reply.status != Status::Success {
            return Err(Error::Card {
                command: name,
                status: reply.status,
            });
        }
        Ok(reply.data)
    }

    fn select_fid(&mut self, fid: u16) -> Result<Vec<u8>> {
        let fid = fid.to_be_bytes();
        let cmd = match self.dialect {
            Dialect::Gsm => Command::new(0xA0, 0xA4, 0x00, 0x00).with_data(&fid),
            Dialect::Uicc => Command::new(0x00, 0xA4, 0x00, 0x04)
                .with_data(&fid)
                .with_ne(256),
        };
        self.expect_ok("SELECT", &cmd)
    }

    /// Selects ADF.USIM by its AID (UICC only).
    pub fn select_usim(&mut self) -> Result<()> {
        if self.dialect == Dialect::Gsm {
            return Err(Error::Card {
                command: "SELECT ADF.USIM",
                status: Status::ClaNotSupported,
            });
        }
        let cmd = Command::new(0x00, 0xA4, 0x04, 0x04)
            .with_data(&USIM_AID_PREFIX)
            .with_ne(256);
        self.expect_ok("SELECT ADF.USIM", &cmd)?;
        self.usim_selected = true;
        Ok(())
    }

    /// Selects a standard file and returns its structure.
    pub fn select(&mut self, location: Location) -> Result<Structure> {
        let response = match location {
            Location::Mf(path) => {
                self.select_fid(0x3F00)?;
                let mut last = Vec::new();
                for &fid in path {
                    last = self.select_fid(fid)?;
                }
                last
            }
            Location::Usim(fid) => {
                self.select_usim()?;
                self.select_fid(fid)?
            }
        };
        parse_select_response(self.dialect, &response)
    }

    /// Reads a whole transparent EF (in chunks of at most 255 bytes).
    pub fn read_binary(&mut self, size: usize) -> Result<Vec<u8>> {
        let mut content = Vec::with_capacity(size);
        while content.len() < size {
            let chunk = (size - content.len()).min(255);
            let [hi, lo] = (content.len() as u16).to_be_bytes();
            let cmd = Command::new(self.cla(), 0xB0, hi, lo).with_ne(chunk);
            content.extend(self.expect_ok("READ BINARY", &cmd)?);
        }
        Ok(content)
    }

    /// Writes `data` at `offset` of the selected transparent EF.
    pub fn update_binary(&mut self, offset: usize, data: &[u8]) -> Result<()> {
        for (i, chunk) in data.chunks(255).enumerate() {
            let [hi, lo] = ((offset + i * 255) as u16).to_be_bytes();
            let cmd = Command::new(self.cla(), 0xD6, hi, lo).with_data(chunk);
            self.expect_ok("UPDATE BINARY", &cmd)?;
        }
        Ok(())
    }

    /// Reads record `n` (1-based) of the selected linear fixed EF.
    pub fn read_record(&mut self, n: u8, len: usize) -> Result<Vec<u8>> {
        let cmd = Command::new(self.cla(), 0xB2, n, 0x04).with_ne(len);
        self.expect_ok("READ RECORD", &cmd)
    }

    /// Writes record `n` (1-based) of the selected linear fixed EF.
    pub fn update_record(&mut self, n: u8, data: &[u8]) -> Result<()> {
        let cmd = Command::new(self.cla(), 0xDC, n, 0x04).with_data(data);
        self.expect_ok("UPDATE RECORD", &cmd)?;
        Ok(())
    }

    /// Reads a file whole: transparent content, or every record.
    pub fn read_file(&mut self, location: Location) -> Result<FileContent> {
        match self.select(location)? {
            Structure::Transparent { size } => {
                Ok(FileContent::Transparent(self.read_binary(size)?))
            }
            Structure::LinearFixed {
                record_len,
                records,
            } => {
                let mut all = Vec::with_capacity(records);
                for n in 1..=records {
                    all.push(self.read_record(n as u8, record_len)?);
                }
                Ok(FileContent::Records(all))
            }
            Structure::Other => Err(Error::Malformed {
                what: "file",
                reason: "not a transparent or linear fixed EF".into(),
            }),
        }
    }

    /// VERIFY a code. The value is padded to 8 bytes with FF; `None` only queries the counter
    /// (TS 102 221; a TS 51.011 card cannot be queried this way).
    pub fn verify(&mut self, code: Code, value: Option<&[u8; PIN_LEN]>) -> Result<VerifyOutcome> {
        let reference = match code {
            Code::Adm1 => self.adm_reference,
            _ => code.reference(self.dialect),
        };
        let mut cmd = Command::new(self.cla(), 0x20, 0x00, reference);
        if let Some(v) = value {
            cmd = cmd.with_data(v);
        }
        let reply = self.send(&cmd)?;
        Ok(match reply.status {
            Status::Success => VerifyOutcome::Verified,
            Status::VerifyFailed { tries_left } => VerifyOutcome::Wrong {
                tries_left: Some(tries_left),
            },
            Status::GsmAccessDenied => VerifyOutcome::Wrong { tries_left: None },
            Status::AuthMethodBlocked | Status::GsmChvBlocked => VerifyOutcome::Blocked,
            Status::GsmChvContradiction => VerifyOutcome::NotEnabled,
            status => {
                return Err(Error::Card {
                    command: "VERIFY",
                    status,
                });
            }
        })
    }

    /// Retry counters without spending a try: TS 102 221 empty VERIFY / UNBLOCK on a UICC, the
    /// CHV status bytes of the MF's SELECT response on a TS 51.011 SIM.
    pub fn tries(&mut self) -> Result<Tries> {
        match self.dialect {
            Dialect::Uicc => {
                let mut t = Tries::default();
                let query = |sim: &mut Sim, ins: u8, reference: u8| -> Result<Option<u8>> {
                    let reply = sim.send(&Command::new(0x00, ins, 0x00, reference))?;
                    Ok(match reply.status {
                        Status::VerifyFailed { tries_left } => Some(tries_left),
                        Status::AuthMethodBlocked => Some(0),
                        _ => None,
                    })
                };
                t.pin1 = query(self, 0x20, 0x01)?;
                t.puk1 = query(self, 0x2C, 0x01)?;
                t.pin2 = query(self, 0x20, 0x81)?;
                t.puk2 = query(self, 0x2C, 0x81)?;
                let adm = self.adm_reference;
                t.adm1 = query(self, 0x20, adm)?;
                let fcp = self.select_fid(0x3F00)?;
                t.pin1_enabled = pin1_enabled_from_fcp(&fcp);
                Ok(t)
            }
            Dialect::Gsm => {
                let info = self.select_fid(0x3F00)?;
                let status = |i: usize| info.get(i).map(|b| b & 0x0F);
                Ok(Tries {
                    pin1: status(18),
                    puk1: status(19),
                    pin2: status(20),
                    puk2: status(21),
                    adm1: None,
                    pin1_enabled: info.get(13).map(|b| b & 0x80 == 0),
                })
            }
        }
    }

    /// Runs the card's authentication. Without AUTN: RUN GSM ALGORITHM (TS 51.011) or a
    /// GSM-context AUTHENTICATE (TS 31.102); with AUTN: a 3G-context AUTHENTICATE.
    pub fn authenticate(&mut self, rand: &[u8; 16], autn: Option<&[u8; 16]>) -> Result<AuthResult> {
        match (self.dialect, autn) {
            (Dialect::Gsm, Some(_)) => Err(Error::arg(
                "--autn",
                "this card speaks only TS 51.011 (2G); it has no 3G authentication",
            )),
            (Dialect::Gsm, None) => {
                self.select_fid(0x3F00)?;
                self.select_fid(0x7F20)?;
                let data = self.expect_ok(
                    "RUN GSM ALGORITHM",
                    &Command::new(0xA0, 0x88, 0x00, 0x00).with_data(rand),
                )?;
                parse_sres_kc(&data)
            }
            (Dialect::Uicc, None) => {
                self.select_usim()?;
                let mut body = vec![0x10];
                body.extend_from_slice(rand);
                let cmd = Command::new(0x00, 0x88, 0x00, 0x80)
                    .with_data(&body)
                    .with_ne(256);
                let data = self.expect_ok("AUTHENTICATE (GSM context)", &cmd)?;
                // SRES and Kc as length-value pairs (TS 31.102 7.1.2.1).
                match data.as_slice() {
                    [4, sres @ .., 8, _, _, _, _, _, _, _, _] if sres.len() == 4 => {
                        parse_sres_kc(&[&data[1..5], &data[6..14]].concat())
                    }
                    _ => Err(Error::Malformed {
                        what: "AUTHENTICATE response",
                        reason: format!("unexpected layout ({} bytes)", data.len()),
                    }),
                }
            }
            (Dialect::Uicc, Some(autn)) => {
                self.select_usim()?;
                let mut body = vec![0x10];
                body.extend_from_slice(rand);
                body.push(0x10);
                body.extend_from_slice(autn);
                let cmd = Command::new(0x00, 0x88, 0x00, 0x81)
                    .with_data(&body)
                    .with_ne(256);
                let reply = self.send(&cmd)?;
                match reply.status {
                    Status::Success => parse_umts(&reply.data),
                    Status::AuthMacFailure => Ok(AuthResult::MacFailure),
                    status => Err(Error::Card {
                        command: "AUTHENTICATE (3G context)",
                        status,
                    }),
                }
            }
        }
    }
}

/// A file's content, as read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FileContent {
    Transparent(Vec<u8>),
    Records(Vec<Vec<u8>>),
}

fn parse_sres_kc(data: &[u8]) -> Result<AuthResult> {
    let sres = data.get(..4).and_then(|s| s.try_into().ok());
    let kc = data.get(4..12).and_then(|s| s.try_into().ok());
    match (sres, kc, data.len()) {
        (Some(sres), Some(kc), 12) => Ok(AuthResult::Gsm { sres, kc }),
        _ => Err(Error::Malformed {
            what: "SRES/Kc",
            reason: format!("expected 12 bytes, got {}", data.len()),
        }),
    }
}

/// TS 31.102 7.1.2.1: DB LV(RES) LV(CK) LV(IK) [LV(Kc)], or DC LV(AUTS).
fn parse_umts(data: &[u8]) -> Result<AuthResult> {
    let bad = |reason: &str| Error::Malformed {
        what: "AUTHENTICATE response",
        reason: reason.to_string(),
    };
    let (&tag, mut rest) = data.split_first().ok_or_else(|| bad("empty"))?;
    let mut take = |what: &str| -> Result<Vec<u8>> {
        let (&len, tail) = rest.split_first().ok_or_else(|| bad(what))?;
        let value = tail.get(..len as usize).ok_or_else(|| bad(what))?;
        rest = &tail[len as usize..];
        Ok(value.to_vec())
    };
    match tag {
        0xDB => {
            let res = take("RES")?;
            let ck = take("CK")?
                .try_into()
                .map_err(|_| bad("CK is not 16 bytes"))?;
            let ik = take("IK")?
                .try_into()
                .map_err(|_| bad("IK is not 16 bytes"))?;
            let kc = match take("Kc") {
                Ok(kc) => Some(kc.try_into().map_err(|_| bad("Kc is not 8 bytes"))?),
                Err(_) => None,
            };
            if !(4..=16).contains(&res.len()) {
                return Err(bad("RES must be 4-16 bytes"));
            }
            Ok(AuthResult::Umts { res, ck, ik, kc })
        }
        0xDC => {
            let auts = take("AUTS")?
                .try_into()
                .map_err(|_| bad("AUTS is not 14 bytes"))?;
            Ok(AuthResult::SyncFailure { auts })
        }
        other => Err(bad(&format!("unknown tag {other:02X}"))),
    }
}

/// Reads the file structure from a TS 51.011 response or a TS 102 221 FCP template.
pub fn parse_select_response(dialect: Dialect, data: &[u8]) -> Result<Structure> {
    let bad = |reason: &str| Error::Malformed {
        what: "SELECT response",
        reason: reason.to_string(),
    };
    match dialect {
        Dialect::Gsm => {
            let kind = *data.get(6).ok_or_else(|| bad("shorter than 7 bytes"))?;
            if kind != 0x04 {
                return Ok(Structure::Other);
            }
            let size = u16::from_be_bytes([data[2], data[3]]) as usize;
            match (data.get(13), data.get(14)) {
                (Some(0x00), _) => Ok(Structure::Transparent { size }),
                (Some(0x01), Some(&len)) if len > 0 => Ok(Structure::LinearFixed {
                    record_len: len as usize,
                    records: size / len as usize,
                }),
                (Some(_), _) => Ok(Structure::Other),
                (None, _) => Err(bad("no structure byte")),
            }
        }
        Dialect::Uicc => {
            let body = match data {
                [0x62, len, body @ ..] if body.len() >= *len as usize => &body[..*len as usize],
                _ => return Err(bad("not an FCP template (tag 62)")),
            };
            let descriptor = find_tlv(body, 0x82).ok_or_else(|| bad("no file descriptor (82)"))?;
            match descriptor {
                [d, ..] if d & 0x38 == 0x38 => Ok(Structure::Other),
                [d, _] if d & 0x07 == 0x01 => {
                    let size = find_tlv(body, 0x80).ok_or_else(|| bad("no file size (80)"))?;
                    let size = size.iter().fold(0usize, |acc, &b| (acc << 8) | b as usize);
                    Ok(Structure::Transparent { size })
                }
                [d, _, hi, lo, records] if d & 0x07 == 0x02 => Ok(Structure::LinearFixed {
                    record_len: u16::from_be_bytes([*hi, *lo]) as usize,
                    records: *records as usize,
                }),
                _ => Ok(Structure::Other),
            }
        }
    }
}

/// The value of the first TLV with one-byte tag `tag` at the top level of `data`.
fn find_tlv(mut data: &[u8], tag: u8) -> Option<&[u8]> {
    while let [t, len, rest @ ..] = data {
        let len = *len as usize;
        let value = rest.get(..len)?;
        if *t == tag {
            return Some(value);
        }
        data = &rest[len..];
    }
    None
}

/// PIN1's enable state from the PS_DO of a DF's FCP (tag C6, first key reference bit).
fn pin1_enabled_from_fcp(fcp: &[u8]) -> Option<bool> {
    let body = fcp.get(2..)?;
    let c6 = find_tlv(body, 0xC6)?;
    let ps_do = find_tlv(c6, 0x90)?;
    ps_do.first().map(|b| b & 0x80 != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_resolve_with_and_without_prefix() {
        assert_eq!(
            find_file("ef_imsi").unwrap().location,
            Location::Mf(&[0x7F20, 0x6F07])
        );
        assert_eq!(
            find_file("USIM/IMSI").unwrap().location,
            Location::Usim(0x6F07)
        );
        assert!(find_file("EF_NOPE").is_none());
    }

    #[test]
    fn umts_responses_parse_and_reject_truncation() {
        let mut ok = vec![0xDB, 8];
        ok.extend([1; 8]);
        ok.push(16);
        ok.extend([2; 16]);
        ok.push(16);
        ok.extend([3; 16]);
        assert!(matches!(
            parse_umts(&ok),
            Ok(AuthResult::Umts { kc: None, .. })
        ));
        assert!(parse_umts(&ok[..20]).is_err());
        assert!(parse_umts(&[0xDC, 14, 0]).is_err());
        assert!(parse_umts(&[0x42]).is_err());
    }
}
