//! APDU transcripts (`--trace FILE`): every command and response with its time, direction and
//! decoded name, with secrets blanked out before anything is written.
//!
//! Redaction is decided here, in one place, from what a command or a file *is*, not from a list
//! of writes that provisioning happens to make today, so a vendor's next key file or a tool that
//! writes keys another way is covered too:
//!
//! - the data of every PIN-family command (VERIFY, CHANGE, DISABLE, ENABLE, UNBLOCK: PINs, PUKs
//!   and ADM keys, in both dialects) and of vendor key-loading commands;
//! - the whole answer of RUN GSM ALGORITHM and AUTHENTICATE (SRES/RES, Kc, CK, IK, AUTS, in every
//!   context), also when it arrives later in a GET RESPONSE, and of the token's BOOTSTRAP BEGIN;
//! - the data written to and read from any file that is not a standard, public EF: TS 102 221
//!   numbers EFs `2Fxx` under the MF, `6Fxx` in a first-level DF or an ADF and `4Fxx` one level
//!   further down, so a FID outside that scheme (sysmoUSIM-SJS1's 7F20/00FF Ki and 00F7 OPc,
//!   sysmoISIM's ADF-level `AFxx`), any file below a proprietary DF (sysmoISIM's DF.SYSTEM A515,
//!   whose 6F20 holds Ki and OPc) and any file of an application the trace does not know is
//!   treated as a key file; so are the standard files that hold session keys (EF_Kc,
//!   EF_KcGPRS, EF_Keys, EF_KeysPS);
//! - the data of any command the trace cannot name, and its answer.
//!
//! Selections are followed per logical channel (the channel bits of CLA), by FID, path, parent
//! and AID, so the file a command touches is known whichever channel carries it. RES and SRES
//! are not keys, but a trace is often shared, and a (RAND, SRES) pair is what a replay needs;
//! they are blanked with the rest of the answer. A transcript can then be attached to a bug
//! report without a second thought.

use crate::error::{Error, Result};
use std::io::Write;
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

/// What a trace line says about a command.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decoded {
    pub name: &'static str,
    /// The data field must not be written.
    pub secret: bool,
    /// The data of the answer must not be written (the status word always is).
    pub secret_response: bool,
}

impl Decoded {
    fn new(name: &'static str, secret: bool, secret_response: bool) -> Self {
        Decoded {
            name,
            secret,
            secret_response,
        }
    }
}

/// The application a logical channel has selected, as far as redaction cares.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
enum App {
    /// None selected: the MF's own tree (GSM dialect, or UICC before any AID).
    #[default]
    None,
    /// ADF.USIM or ADF.ISIM: standard files.
    Standard,
    /// The simlab token applet (docs/token-apdus.md).
    Token,
    /// Any other AID: its files are not known, so they are treated as key files.
    Unknown,
}

/// Where one logical channel stands.
#[derive(Clone, Debug, Default)]
struct Channel {
    app: App,
    /// DFs below the MF (or the ADF) down to the current one.
    dfs: Vec<u16>,
    /// A DF on the way that is not in the standard numbering (a vendor's).
    proprietary: bool,
    /// The current EF, if any.
    ef: Option<u16>,
    /// The last command's answer is secret: so is the GET RESPONSE that fetches it.
    pending_secret: bool,
}

/// Whether `fid` follows TS 102 221's EF numbering at this level.
fn numbered(level: usize, fid: u16) -> bool {
    let [hi, _] = fid.to_be_bytes();
    match level {
        0 => hi == 0x2F,
        1 => hi == 0x6F,
        _ => hi == 0x4F,
    }
}

/// A standard EF that holds no key: numbered, and not one of the session-key files.
fn public_ef(level: usize, fid: u16) -> bool {
    const SESSION_KEYS: [u16; 6] = [0x6F20, 0x6F52, 0x6F08, 0x6F09, 0x4F20, 0x4F52];
    numbered(level, fid) && !SESSION_KEYS.contains(&fid)
}

impl Channel {
    fn at_mf(&mut self) {
        self.dfs.clear();
        self.proprietary = false;
        self.ef = None;
    }

    /// One FID of a SELECT, relative to where the channel stands.
    fn select_fid(&mut self, fid: u16) {
        let [hi, _] = fid.to_be_bytes();
        match fid {
            0x3F00 => {
                self.at_mf();
                self.app = App::None;
            }
            0x7FFF => {
                self.at_mf();
                // The current ADF; with none selected the card answers an error.
                if self.app != App::Standard {
                    self.proprietary = true;
                }
            }
            _ if hi == 0x7F => {
                self.dfs.clear();
                self.dfs.push(fid);
                self.proprietary = !STANDARD_DFS.contains(&fid);
                self.ef = None;
            }
            _ if hi == 0x5F => {
                // A 5Fxx sits below a first-level DF or an ADF; a sibling replaces the last one.
                let keep = usize::from(self.app != App::Standard);
                self.dfs.truncate(keep);
                self.dfs.push(fid);
                self.ef = None;
            }
            // An EF, or a vendor's DF numbered like an EF (sysmoISIM's A515). Its children are
            // then judged at the level above theirs, where their `6Fxx` numbers are outside the
            // scheme: secret, as they should be.
            _ => self.ef = Some(fid),
        }
    }

    /// The EF level of the current DF: 0 for the MF, 1 in a first-level DF or an ADF.
    fn level(&self) -> usize {
        self.dfs.len() + usize::from(self.app == App::Standard)
    }

    /// Whether the current EF's contents are secret (see the module's rule).
    fn ef_secret(&self) -> bool {
        match self.app {
            App::Unknown | App::Token => return true,
            App::None | App::Standard => {}
        }
        if self.proprietary {
            return true;
        }
        match self.ef {
            Some(fid) => !public_ef(self.level(), fid),
            None => true,
        }
    }
}

/// First-level DFs of the standards (TS 51.011, TS 31.102 annex); any other `7Fxx` is a
/// vendor's, and everything below it is treated as key material.
const STANDARD_DFS: [u16; 6] = [0x7F10, 0x7F20, 0x7F21, 0x7F22, 0x7F23, 0x7F24];

/// Follows selections so that what a command touches is known.
#[derive(Clone, Debug)]
pub struct Redactor {
    /// Logical channels 0–19 (ISO 7816-4: 0–3 in the first interindustry CLA, 4–19 in the
    /// further one).
    channels: Vec<Channel>,
}

impl Default for Redactor {
    fn default() -> Self {
        Redactor {
            channels: vec![Channel::default(); 20],
        }
    }
}

/// The logical channel a CLA byte names (ISO 7816-4 5.4.1); the GSM class has only the basic
/// channel.
fn channel_of(cla: u8) -> usize {
    if cla == 0xA0 {
        0
    } else if cla & 0x40 != 0 {
        4 + usize::from(cla & 0x0F)
    } else {
        usize::from(cla & 0x03)
    }
}

/// The token applet's instructions: only VERIFY PIN and CHANGE PIN carry secrets (PINs), and
/// BOOTSTRAP BEGIN's answer carries the card's authentication answer; the key, Kc and K never
/// cross the interface at all.
fn decode_token(ins: u8) -> Option<Decoded> {
    use simlab_applet::token::ins;
    let (name, secret, secret_response) = match ins {
        ins::VERIFY_PIN => ("TOKEN VERIFY PIN", true, false),
        ins::CHANGE_PIN => ("TOKEN CHANGE PIN", true, false),
        ins::SIGN => ("TOKEN SIGN", false, false),
        ins::GENERATE_KEY => ("TOKEN GENERATE KEY", false, false),
        ins::GET_PUBLIC_KEY => ("TOKEN GET PUBLIC KEY", false, false),
        ins::BOOTSTRAP_BEGIN => ("TOKEN BOOTSTRAP BEGIN", false, true),
        ins::BOOTSTRAP_FINISH => ("TOKEN BOOTSTRAP FINISH", false, false),
        ins::GET_CERTIFICATE => ("TOKEN GET CERTIFICATE", false, false),
        ins::GET_INFO => ("TOKEN GET INFO", false, false),
        _ => return None,
    };
    Some(Decoded::new(name, secret, secret_response))
}

const USIM_RID_APP: [u8; 6] = [0xA0, 0x00, 0x00, 0x00, 0x87, 0x10];

impl Redactor {
    /// Names a command APDU and says whether its data, and its answer's data, are secret;
    /// follows SELECT and MANAGE CHANNEL.
    pub fn decode(&mut self, capdu: &[u8]) -> Decoded {
        let (Some(&cla), Some(&ins)) = (capdu.first(), capdu.get(1)) else {
            return Decoded::new("(short APDU)", false, false);
        };
        let p1 = capdu.get(2).copied().unwrap_or(0);
        let p2 = capdu.get(3).copied().unwrap_or(0);
        let lc = capdu.get(4).copied().unwrap_or(0) as usize;
        let data = capdu.get(5..).unwrap_or_default();
        let data = data.get(..lc).unwrap_or(data);
        let ch = channel_of(cla);
        let pending = std::mem::take(&mut self.channels[ch].pending_secret);
        if ins == 0xC0 {
            return Decoded::new("GET RESPONSE", false, pending);
        }
        if ins == 0x70 && cla != 0xA0 {
            // MANAGE CHANNEL: a channel opened or closed starts (again) at the MF.
            let target = if p1 == 0x80 { usize::from(p2) } else { 0 };
            if let Some(c) = self.channels.get_mut(target).filter(|_| target != 0) {
                *c = Channel::default();
            }
            return Decoded::new("MANAGE CHANNEL", false, false);
        }
        if ins == 0xA4 {
            self.select(ch, cla, p1, data);
            return Decoded::new("SELECT", false, false);
        }
        let channel = &mut self.channels[ch];
        if channel.app == App::Token
            && cla != 0xA0
            && let Some(decoded) = decode_token(ins)
        {
            channel.pending_secret = decoded.secret_response;
            return decoded;
        }
        // Commands that name their EF by SFI (READ/UPDATE BINARY P1 b8, RECORD P2 b8–b4) touch
        // a file the trace cannot name: only the standard applications' SFIs are known public,
        // except EF_Keys (08) and EF_KeysPS (09) of ADF.USIM.
        let sfi = match ins {
            0xB0 | 0xD6 | 0xB1 | 0xD7 if p1 & 0x80 != 0 => Some(p1 & 0x1F),
            0xB2 | 0xDC | 0xA2 | 0x32 if p2 >> 3 != 0 => Some(p2 >> 3),
            _ => None,
        };
        let file_secret = match sfi {
            Some(sfi) => {
                channel.app != App::Standard || channel.proprietary || matches!(sfi, 0x08 | 0x09)
            }
            None => channel.ef_secret(),
        };
        let (name, secret, secret_response) = match (cla, ins) {
            (_, 0xB0) => ("READ BINARY", false, file_secret),
            (_, 0xD6) => ("UPDATE BINARY", file_secret, false),
            (_, 0xB2) => ("READ RECORD", false, file_secret),
            (_, 0xDC) => ("UPDATE RECORD", file_secret, false),
            (_, 0xA2) => ("SEARCH RECORD", file_secret, file_secret),
            (_, 0x32) => ("INCREASE", file_secret, file_secret),
            (_, 0xF2) if cla & 0x80 != 0 && p1 & 0x20 == 0 && p1 != 0 => {
                ("GET STATUS (GlobalPlatform)", false, false)
            }
            (_, 0xF2) => ("STATUS", false, false),
            (_, 0x20) => ("VERIFY", true, false),
            (_, 0x24) => ("CHANGE PIN", true, false),
            (_, 0x26) => ("DISABLE PIN", true, false),
            (_, 0x28) => ("ENABLE PIN", true, false),
            (_, 0x2C) => ("UNBLOCK PIN", true, false),
            (0xA0, 0x88) => ("RUN GSM ALGORITHM", false, true),
            (_, 0x88) => ("AUTHENTICATE", false, true),
            (_, 0x89) => ("AUTHENTICATE (odd)", false, true),
            (_, 0x10) => ("TERMINAL PROFILE", false, false),
            (_, 0xAA) => ("TERMINAL CAPABILITY", false, false),
            (_, 0x12) => ("FETCH", false, false),
            (_, 0x14) => ("TERMINAL RESPONSE", false, false),
            (_, 0xC2) => ("ENVELOPE", false, false),
            (_, 0x04) => ("DEACTIVATE FILE", false, false),
            (_, 0x44) => ("ACTIVATE FILE", false, false),
            (_, 0xE0) => ("CREATE FILE", false, false),
            (_, 0xE4) => ("DELETE FILE", false, false),
            (_, 0xCA) if cla & 0x80 != 0 => ("GET DATA", false, false),
            (_, 0xFA) => ("SLEEP", false, false),
            (0x80, 0xD4) => ("WRITE KEY (vendor)", true, false),
            (_, _) => ("(unknown)", true, true),
        };
        channel.pending_secret = secret_response;
        Decoded::new(name, secret, secret_response)
    }

    /// The command as a transcript may show it (spaced hex, secret data as `**`), and whether
    /// its answer's data must be hidden: for transcripts that carry APDUs inside another
    /// protocol, such as a modem's `AT+CSIM` lines.
    pub fn command_text(&mut self, capdu: &[u8]) -> (String, bool) {
        let decoded = self.decode(capdu);
        (render(capdu, decoded.secret), decoded.secret_response)
    }

    fn select(&mut self, ch: usize, cla: u8, p1: u8, data: &[u8]) {
        let channel = &mut self.channels[ch];
        let fids = data
            .chunks_exact(2)
            .map(|c| u16::from_be_bytes([c[0], c[1]]));
        match p1 {
            0x04 if cla != 0xA0 => {
                channel.at_mf();
                channel.app = if data.is_empty() {
                    App::Unknown
                } else if simlab_applet::token::AID.starts_with(data) {
                    App::Token
                } else if data.len() >= 7
                    && data[..6] == USIM_RID_APP
                    && matches!(data[6], 0x02 | 0x04)
                {
                    App::Standard
                } else {
                    App::Unknown
                };
            }
            0x08 => {
                channel.at_mf();
                channel.app = App::None;
                fids.for_each(|f| channel.select_fid(f));
            }
            0x03 => {
                channel.ef = None;
                channel.dfs.pop();
            }
            _ => fids.for_each(|f| channel.select_fid(f)),
        }
    }
}

/// A transcript being written.
pub struct Trace {
    out: Box<dyn Write + Send>,
    redactor: Redactor,
    /// Who speaks: the host sends commands; an emulated card receives them.
    side: Side,
    format: Format,
}

/// How a transcript is written: chosen by the file name (`FILE.apdu` is a script).
enum Format {
    /// Timestamped, named lines for people (the default).
    Text,
    /// The APDU script format of [`crate::script`], so that a session recorded against a real
    /// card replays in CI with `card script`. Secret command data becomes named placeholders
    /// and secret answers `..`, by the same rules as the text format's `**`.
    Script(Recorder),
}

/// What a script recording knows about the secrets it must hide.
#[derive(Default)]
struct Recorder {
    /// Values a placeholder may stand for, longest first, so that a 16-byte key is not cut by
    /// an 8-byte code that happens to start it.
    known: Vec<(String, Vec<u8>)>,
    /// Secret runs no known value explains: `${SECRETn}` is `unnamed[n - 1]`. Kept so that the
    /// same value gets the same name all through one recording.
    unnamed: Vec<Vec<u8>>,
    /// Something other than the header has been written (`@profile` must come first).
    started: bool,
}

/// One stretch of a secret data field.
enum Segment<'a> {
    Known(String),
    Raw(&'a [u8]),
}

impl Recorder {
    fn learn(&mut self, name: &str, value: Vec<u8>) {
        // Too short, or nothing but padding (an unset code: all FF, or all 00), would match
        // padding and ordinary data everywhere. An ADM of eight equal digits is a real value.
        if value.len() < 4 || value.iter().all(|&b| b == 0xFF) || value.iter().all(|&b| b == 0) {
            return;
        }
        if self.known.iter().any(|(n, v)| n == name || *v == value) {
            return;
        }
        self.known.push((name.to_string(), value));
        self.known.sort_by_key(|(_, v)| std::cmp::Reverse(v.len()));
    }

    fn unnamed(&mut self, run: &[u8]) -> String {
        let n = match self.unnamed.iter().position(|v| v == run) {
            Some(i) => i + 1,
            None => {
                self.unnamed.push(run.to_vec());
                self.unnamed.len()
            }
        };
        format!("${{{}{n}}}", crate::script::UNNAMED_PREFIX)
    }

    /// A secret data field as script text: known values as `${NAME}`, and whatever is left
    /// as `${SECRETn}`, except a single byte beside a known value (the algorithm byte before
    /// SJA2's K‖OPc, the `01` before SJS1's OPc): format, not key, and at most 8 bits of one.
    fn field(&mut self, data: &[u8]) -> String {
        let mut segments = Vec::new();
        let mut i = 0;
        let mut raw_from = 0;
        while i < data.len() {
            match self.known.iter().find(|(_, v)| data[i..].starts_with(v)) {
                Some((name, value)) => {
                    if raw_from < i {
                        segments.push(Segment::Raw(&data[raw_from..i]));
                    }
                    segments.push(Segment::Known(name.clone()));
                    i += value.len();
                    raw_from = i;
                }
                None => i += 1,
            }
        }
        if raw_from < data.len() {
            segments.push(Segment::Raw(&data[raw_from..]));
        }
        let any_known = segments.iter().any(|s| matches!(s, Segment::Known(_)));
        let rendered: Vec<String> = segments
            .into_iter()
            .map(|s| match s {
                Segment::Known(name) => format!("${{{name}}}"),
                Segment::Raw(run) if run.len() == 1 && any_known => spaced(run),
                Segment::Raw(run) => self.unnamed(run),
            })
            .collect();
        rendered.join(" ")
    }
}

/// Which end of the link writes the transcript.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    Host,
    Card,
}

impl Trace {
    /// Creates (truncates) the trace file; a name ending in `.apdu` records an APDU script
    /// (see [`Trace::script_to_writer`]), any other the text transcript.
    pub fn create(path: &Path, side: Side) -> Result<Self> {
        let file = std::fs::File::create(path).map_err(|source| Error::Io {
            context: format!("creating trace file {}", path.display()),
            source,
        })?;
        let out = Box::new(std::io::LineWriter::new(file));
        Ok(if path.extension().is_some_and(|e| e == "apdu") {
            Self::script_to_writer(out, side)
        } else {
            Self::to_writer(out, side)
        })
    }

    /// A text trace into any writer (tests use a buffer).
    pub fn to_writer(out: Box<dyn Write + Send>, side: Side) -> Self {
        Trace {
            out,
            redactor: Redactor::default(),
            side,
            format: Format::Text,
        }
    }

    /// A recording in the APDU script format: `> command` and `< answer` per exchange, `@reset`
    /// for a reset, secrets as placeholders that `card script --profile P` (or `--secret`)
    /// fills at replay. Tell it the secrets it may name with [`Trace::know_profile`].
    pub fn script_to_writer(out: Box<dyn Write + Send>, side: Side) -> Self {
        let mut t = Trace {
            out,
            redactor: Redactor::default(),
            side,
            format: Format::Script(Recorder::default()),
        };
        let _ = writeln!(
            t.out,
            "# recorded by simlab {} on the {} side, {}\n\
             # secrets stand as ${{NAME}}: replay with simlab card script FILE --profile PROFILE.toml\n\
             # (and --secret SECRETn=HEX for any ${{SECRETn}}); secret answers are `..`",
            env!("CARGO_PKG_VERSION"),
            match side {
                Side::Host => "host",
                Side::Card => "card",
            },
            timestamp()
        );
        t
    }

    /// Whether this is a script recording (which wants [`Trace::know_profile`]).
    pub fn is_script(&self) -> bool {
        matches!(self.format, Format::Script(_))
    }

    /// The card profile this session's secrets come from: a script recording names its
    /// values (ADM1, PIN1, PUK1, PIN2, PUK2, KI, OPC); the first profile told wins a name.
    /// Call before the first exchange; `card_file` (the emulated card's profile, if the card
    /// is one) becomes the script's `@profile`. A text trace needs none of this: it blanks.
    pub fn know_profile(&mut self, profile: &crate::profile::Profile, card_file: Option<&str>) {
        let Format::Script(r) = &mut self.format else {
            return;
        };
        for (name, _) in crate::script::PLACEHOLDERS {
            if let Some(value) = crate::script::profile_secret(profile, name) {
                r.learn(name, value);
            }
        }
        if let Some(file) = card_file.filter(|_| !r.started) {
            r.started = true;
            let _ = writeln!(self.out, "@profile {file}");
        }
    }

    /// Records one exchange. Write errors are ignored: a full disk must not break the card
    /// session the trace is only observing.
    pub fn exchange(&mut self, capdu: &[u8], rapdu: &[u8]) {
        let decoded = self.redactor.decode(capdu);
        if let Format::Script(r) = &mut self.format {
            r.started = true;
            let cmd = if decoded.secret {
                script_command(r, capdu)
            } else {
                spaced(capdu)
            };
            if rapdu.len() < 2 {
                let _ = writeln!(
                    self.out,
                    "# > {cmd}\n# (no status word came back: {} byte(s))",
                    rapdu.len()
                );
                return;
            }
            let n = rapdu.len() - 2;
            let answer = if decoded.secret_response && n > 0 {
                format!("{} {}", vec![".."; n].join(" "), spaced(&rapdu[n..]))
            } else {
                spaced(rapdu)
            };
            let _ = writeln!(self.out, "> {cmd}\n< {answer}");
            return;
        }
        let (to_card, from_card) = match self.side {
            Side::Host => (">>", "<<"),
            Side::Card => ("<<", ">>"),
        };
        let cmd = render(capdu, decoded.secret);
        let answer = render_response(rapdu, decoded.secret_response);
        let status = rapdu
            .len()
            .checked_sub(2)
            .map(|i| simlab_applet::Status::from_u16(u16::from_be_bytes([rapdu[i], rapdu[i + 1]])));
        let now = timestamp();
        let _ = writeln!(self.out, "{now} {to_card} {cmd}  {}", decoded.name);
        let _ = writeln!(
            self.out,
            "{now} {from_card} {answer}  {}",
            status.map_or("(no status word)", |s| s.description())
        );
    }

    /// Records an event that is not an APDU (power, reset, connection); in a script, a reset
    /// is `@reset` and anything else a comment.
    pub fn note(&mut self, what: &str) {
        if let Format::Script(r) = &mut self.format {
            r.started = true;
            let _ = if what == "reset" {
                writeln!(self.out, "@reset")
            } else {
                writeln!(self.out, "# {what}")
            };
            return;
        }
        let _ = writeln!(self.out, "{} -- {what}", timestamp());
    }
}

/// A command with secret data as script text: header and length fields as they are, the data
/// through the recorder. An APDU that does not parse keeps only its header in clear.
fn script_command(r: &mut Recorder, capdu: &[u8]) -> String {
    if capdu.len() <= 4 {
        return spaced(capdu);
    }
    let Ok(cmd) = simlab_applet::Command::parse(capdu) else {
        return format!("{} {}", spaced(&capdu[..4]), r.field(&capdu[4..]));
    };
    if cmd.data.is_empty() {
        return spaced(capdu);
    }
    let data_start = 4 + if cmd.extended { 3 } else { 1 };
    let data_end = data_start + cmd.data.len();
    let mut parts = vec![spaced(&capdu[..data_start]), r.field(cmd.data)];
    if data_end < capdu.len() {
        parts.push(spaced(&capdu[data_end..]));
    }
    parts.join(" ")
}

fn spaced(bytes: &[u8]) -> String {
    bytes
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// The status word in clear, the data before it as `**` per byte when secret.
pub fn render_response(rapdu: &[u8], secret: bool) -> String {
    match rapdu.len().checked_sub(2) {
        Some(n) if secret && n > 0 => {
            format!("{} {}", vec!["**"; n].join(" "), spaced(&rapdu[n..]))
        }
        _ => spaced(rapdu),
    }
}

/// The header and length fields in clear, the data as `**` per byte when secret. The data
/// field is found by parsing the APDU, so extended lengths are blanked as well as short ones; an
/// APDU that does not parse is blanked whole after its header.
fn render(capdu: &[u8], secret: bool) -> String {
    if !secret || capdu.len() <= 4 {
        return spaced(capdu);
    }
    let stars = |n: usize| vec!["**"; n].join(" ");
    let Ok(cmd) = simlab_applet::Command::parse(capdu) else {
        return format!("{} {}", spaced(&capdu[..4]), stars(capdu.len() - 4));
    };
    if cmd.data.is_empty() {
        return spaced(capdu);
    }
    let lc_len = if cmd.extended { 3 } else { 1 };
    let data_start = 4 + lc_len;
    let data_end = data_start + cmd.data.len();
    let mut parts = vec![spaced(&capdu[..data_start]), stars(cmd.data.len())];
    if data_end < capdu.len() {
        parts.push(spaced(&capdu[data_end..]));
    }
    parts.join(" ")
}

/// UTC wall-clock time with microseconds, without a date-time dependency.
pub(crate) fn timestamp() -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let secs = now.as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (y, m, d) = civil_from_days(days as i64);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:06}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60,
        now.subsec_micros()
    )
}

/// Days since 1970-01-01 to a proleptic Gregorian date (Howard Hinnant's algorithm).
pub fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    /// A transcript's writer that tests can read back.
    #[derive(Clone, Default)]
    pub(super) struct Buf(pub(super) Arc<Mutex<Vec<u8>>>);

    impl Write for Buf {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn pins_and_key_writes_are_blanked() {
        let buf = Buf::default();
        let mut t = Trace::to_writer(Box::new(buf.clone()), Side::Host);
        t.exchange(
            &[
                0x00, 0x20, 0x00, 0x01, 0x08, b'1', b'2', b'3', b'4', 0xFF, 0xFF, 0xFF, 0xFF,
            ],
            &[0x90, 0x00],
        );
        t.exchange(&[0xA0, 0xA4, 0x00, 0x00, 0x02, 0x00, 0xFF], &[0x9F, 0x0F]);
        t.exchange(&[0xA0, 0xD6, 0x00, 0x00, 0x02, 0x5A, 0xA5], &[0x90, 0x00]);
        t.exchange(&[0x80, 0xD4, 0x02, 0x00, 0x02, 0x77, 0x66], &[0x90, 0x00]);
        t.exchange(&[0xA0, 0x88, 0x00, 0x00, 0x02, 0x11, 0x22], &[0x9F, 0x0C]);
        let text = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
        assert!(
            text.contains(">> 00 20 00 01 08 ** ** ** ** ** ** ** **  VERIFY"),
            "{text}"
        );
        for secret in ["31 32", "5A A5", "77 66"] {
            assert!(!text.contains(secret), "{secret} leaked: {text}");
        }
        assert!(text.contains("11 22  RUN GSM ALGORITHM"));
        assert!(text.contains("<< 9F 0C  response bytes available"));
    }

    #[test]
    fn token_pins_are_blanked_and_token_instructions_named() {
        let buf = Buf::default();
        let mut t = Trace::to_writer(Box::new(buf.clone()), Side::Host);
        let aid = simlab_applet::token::AID;
        let select = [&[0x00, 0xA4, 0x04, 0x00, aid.len() as u8][..], &aid].concat();
        t.exchange(&select, &[0x61, 0x0D]);
        let pin = [
            0x00, 0x20, 0x00, 0x80, 0x08, b'4', b'7', b'1', b'1', 0xFF, 0xFF, 0xFF, 0xFF,
        ];
        t.exchange(&pin, &[0x90, 0x00]);
        let change = [
            &[0x00, 0x24, 0x00, 0x80, 0x10][..],
            b"4711\xFF\xFF\xFF\xFF",
            b"8642\xFF\xFF\xFF\xFF",
        ]
        .concat();
        t.exchange(&change, &[0x90, 0x00]);
        t.exchange(&[0x10, 0x2A, 0x9E, 0x9A, 0x02, 0xAB, 0xCD], &[0x90, 0x00]);
        t.exchange(&[0x00, 0x48, 0x00, 0x00, 0x00], &[0x61, 0x41]);
        // Another SELECT leaves the token: 2A is no longer its SIGN.
        t.exchange(&[0x00, 0xA4, 0x00, 0x04, 0x02, 0x3F, 0x00], &[0x61, 0x20]);
        t.exchange(&[0x00, 0x2A, 0x9E, 0x9A, 0x01, 0x11], &[0x6D, 0x00]);
        let text = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
        for secret in ["34 37 31 31", "38 36 34 32"] {
            assert!(!text.contains(secret), "{secret} leaked: {text}");
        }
        assert!(
            text.contains("** ** ** ** ** ** ** **  TOKEN VERIFY PIN"),
            "{text}"
        );
        assert!(text.contains("TOKEN CHANGE PIN"), "{text}");
        assert!(text.contains("10 2A 9E 9A 02 AB CD  TOKEN SIGN"), "{text}");
        assert!(text.contains("TOKEN GET PUBLIC KEY"), "{text}");
        assert!(text.contains("00 2A 9E 9A 01 **  (unknown)"), "{text}");
    }

    #[test]
    fn dates_are_right() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(20_778), (2026, 11, 21));
    }
}

#[cfg(test)]
mod redaction {
    //! The leaks issue 11 found, replayed: each exchange as a provisioning tool or a browser
    //! sends it, and the secret bytes must be absent from the transcript.
    use super::tests::Buf;
    use super::*;

    fn h(s: &str) -> Vec<u8> {
        crate::hex::decode("apdu", &s.replace(" ", "")).unwrap()
    }

    /// Replays `(command, response)` pairs and returns the transcript.
    fn trace(exchanges: &[(&str, &str)]) -> String {
        let buf = Buf::default();
        let mut t = Trace::to_writer(Box::new(buf.clone()), Side::Host);
        for (c, r) in exchanges {
            t.exchange(&h(c), &h(r));
        }
        String::from_utf8(buf.0.lock().unwrap().clone()).unwrap()
    }

    const KI: &str = "46 5B 5C E8 B1 99 B4 9F AA 5F 0A 2E E2 38 A6 BC";
    const OPC: &str = "CD 63 CB 71 95 4A 9F 4E 48 A5 99 4E 37 A0 2B AF";

    fn assert_absent(text: &str, secret: &str) {
        assert!(!text.contains(secret), "{secret} leaked:\n{text}");
    }

    #[test]
    fn sja2_key_file_below_df_system() {
        let text = trace(&[
            ("00 A4 00 04 02 3F 00", "61 20"),
            ("00 A4 00 04 02 A5 15", "61 20"),
            ("00 A4 00 04 02 6F 20", "61 20"),
            (&format!("00 D6 00 00 21 04 {KI} {OPC}"), "90 00"),
            (&format!("00 D6 00 01 10 {KI}"), "90 00"),
            (&format!("00 D6 00 11 10 {OPC}"), "90 00"),
            ("00 B0 00 00 21", &format!("04 {KI} {OPC} 90 00")),
        ]);
        assert_absent(&text, KI);
        assert_absent(&text, OPC);
        assert!(text.contains("<< ** ** "), "{text}");
    }

    #[test]
    fn sjs1_key_files_in_df_gsm() {
        let text = trace(&[
            ("A0 A4 00 00 02 3F 00", "9F 16"),
            ("A0 A4 00 00 02 7F 20", "9F 16"),
            ("A0 A4 00 00 02 00 FF", "9F 0F"),
            (&format!("A0 D6 00 00 10 {KI}"), "90 00"),
            ("A0 A4 00 00 02 00 F7", "9F 0F"),
            (&format!("A0 D6 00 00 11 01 {OPC}"), "90 00"),
            // A standard file afterwards, once a DF is selected again, is in clear.
            ("A0 A4 00 00 02 7F 20", "9F 16"),
            ("A0 A4 00 00 02 6F 07", "9F 0F"),
            ("A0 D6 00 00 09 08 29 26 20 00 00 00 00 10", "90 00"),
        ]);
        assert_absent(&text, KI);
        assert_absent(&text, OPC);
        assert!(
            text.contains("08 29 26 20 00 00 00 00 10  UPDATE BINARY"),
            "{text}"
        );
    }

    #[test]
    fn usim_vendor_key_file_and_session_key_files() {
        let text = trace(&[
            ("00 A4 04 04 07 A0 00 00 00 87 10 02", "61 30"),
            ("00 A4 00 04 02 AF 20", "61 20"),
            (&format!("00 D6 00 00 10 {KI}"), "90 00"),
            ("00 A4 00 04 02 6F 08", "61 20"),
            (&format!("00 D6 00 00 11 07 {OPC}"), "90 00"),
            ("00 A4 00 04 02 6F 07", "61 20"),
            ("00 B0 00 00 09", "08 29 26 20 00 00 00 00 10 90 00"),
        ]);
        assert_absent(&text, KI);
        assert_absent(&text, OPC);
        assert!(
            text.contains("<< 08 29 26 20 00 00 00 00 10 90 00"),
            "{text}"
        );
    }

    #[test]
    fn authentication_answers_are_blanked_also_through_get_response() {
        let res_ck =
            "DB 08 A5 42 11 D5 E3 BA 50 BF 10 B4 0B A9 A3 C5 8B 2A 05 BB F0 D9 87 B2 1B F8 CB";
        let text = trace(&[
            ("00 A4 04 04 07 A0 00 00 00 87 10 02", "61 30"),
            (
                "00 88 00 81 22 10 00 11 22 33 44 55 66 77 88 99 AA BB CC DD EE FF 10 11 22 33 44 55 66 77 88 99 AA BB CC DD EE FF 00",
                "61 35",
            ),
            ("00 C0 00 00 35", &format!("{res_ck} 90 00")),
            // The same with the answer on the command itself (T=1, in-process).
            (
                "00 88 00 81 22 10 00 11 22 33 44 55 66 77 88 99 AA BB CC DD EE FF 10 11 22 33 44 55 66 77 88 99 AA BB CC DD EE FF 00",
                &format!("{res_ck} 90 00"),
            ),
            (
                "A0 88 00 00 10 00 11 22 33 44 55 66 77 88 99 AA BB CC DD EE FF",
                "9F 0C",
            ),
            (
                "A0 C0 00 00 0C",
                "C1 D2 E3 F4 0A 0B 0C 0D 0E 0F 1A 1B 90 00",
            ),
            // The GET RESPONSE of an ordinary SELECT stays readable.
            ("A0 A4 00 00 02 3F 00", "9F 16"),
            ("A0 C0 00 00 16", "00 00 00 00 3F 00 01 90 00"),
        ]);
        assert_absent(&text, "A5 42 11 D5");
        assert_absent(&text, "B4 0B A9 A3");
        assert_absent(&text, "0A 0B 0C 0D");
        assert!(text.contains("<< 00 00 00 00 3F 00 01 90 00"), "{text}");
    }

    #[test]
    fn logical_channels_are_followed_separately() {
        let text = trace(&[
            ("00 70 00 00 01", "01 90 00"),
            // Channel 1 goes to DF.SYSTEM's key file; channel 0 reads EF_ICCID.
            ("01 A4 00 04 02 3F 00", "61 20"),
            ("01 A4 00 04 02 A5 15", "61 20"),
            ("01 A4 00 04 02 6F 20", "61 20"),
            ("00 A4 00 04 02 2F E2", "61 20"),
            ("00 B0 00 00 0A", "98 94 00 00 00 00 00 00 00 F1 90 00"),
            ("01 B0 00 00 21", &format!("04 {KI} {OPC} 90 00")),
            ("41 A4 00 04 02 3F 00", "61 20"),
        ]);
        assert_absent(&text, KI);
        assert!(
            text.contains("98 94 00 00 00 00 00 00 00 F1 90 00"),
            "{text}"
        );
        assert!(text.contains("MANAGE CHANNEL"), "{text}");
    }

    #[test]
    fn unknown_applications_and_commands_give_nothing_away() {
        let text = trace(&[
            ("00 A4 04 04 05 D2 76 00 01 24", "61 10"),
            ("00 B0 00 00 04", "DE AD BE EF 90 00"),
            ("80 E6 00 00 03 01 02 03", "CA FE 90 00"),
        ]);
        assert_absent(&text, "DE AD BE EF");
        assert_absent(&text, "01 02 03");
        assert_absent(&text, "CA FE");
    }

    #[test]
    fn a_script_recording_names_its_secrets_and_replays_as_a_script() {
        let profile = crate::profile::Profile::parse(
            Path::new("isim.toml"),
            "card_type = \"sysmoISIM-SJA2\"\niccid = \"8988211000000530140\"\n\
             imsi = \"001010123456789\"\nki = \"465b5ce8b199b49faa5f0a2ee238a6bc\"\n\
             algorithm = \"milenage\"\nopc = \"cd63cb71954a9f4e48a5994e37a02baf\"\n\
             pin1 = \"1234\"\npuk1 = \"12345678\"\nadm1 = \"88888888\"\n",
        )
        .unwrap();
        let buf = Buf::default();
        let mut t = Trace::script_to_writer(Box::new(buf.clone()), Side::Host);
        t.know_profile(&profile, Some("isim-sja2-milenage.toml"));
        let verify_adm = [&[0x00, 0x20, 0x00, 0x0A, 0x08][..], b"88888888"].concat();
        t.exchange(&verify_adm, &[0x90, 0x00]);
        t.exchange(&[0x00, 0xA4, 0x00, 0x04, 0x02, 0xA5, 0x15], &[0x61, 0x20]);
        t.exchange(&[0x00, 0xA4, 0x00, 0x04, 0x02, 0x6F, 0x20], &[0x61, 0x20]);
        let keys = [
            &[0x00, 0xD6, 0x00, 0x00, 0x21, 0x04][..],
            &profile.ki,
            &profile.opc.unwrap(),
        ]
        .concat();
        t.exchange(&keys, &[0x90, 0x00]);
        // CHANGE PIN: the old PIN is the profile's, the new one nobody told the recorder.
        let change = [
            &[0x00, 0x24, 0x00, 0x01, 0x10][..],
            &profile.pin1,
            b"5678\xFF\xFF\xFF\xFF",
        ]
        .concat();
        t.exchange(&change, &[0x90, 0x00]);
        t.note("reset");
        t.exchange(
            &[
                0xA0, 0x88, 0x00, 0x00, 0x10, 0x23, 0x55, 0x3C, 0xBE, 0x96, 0x37, 0xA8, 0x9D, 0x21,
                0x8A, 0xE6, 0x4D, 0xAE, 0x47, 0xBF, 0x35,
            ],
            &[0x9F, 0x0C],
        );
        let kc = [0xA0, 0xC0, 0x00, 0x00, 0x0C];
        t.exchange(&kc, &[1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 0x90, 0x00]);
        let text = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
        for secret in [
            "38 38 38 38",
            "46 5B 5C E8",
            "CD 63 CB 71",
            "31 32 33 34",
            "35 36 37 38",
            "05 06 07 08",
        ] {
            assert_absent(&text, secret);
        }
        assert!(text.contains("> 00 20 00 0A 08 ${ADM1}\n< 90 00"), "{text}");
        assert!(
            text.contains("> 00 D6 00 00 21 04 ${KI} ${OPC}\n"),
            "{text}"
        );
        assert!(
            text.contains("> 00 24 00 01 10 ${PIN1} ${SECRET1}\n"),
            "{text}"
        );
        assert!(
            text.contains("< .. .. .. .. .. .. .. .. .. .. .. .. 90 00"),
            "{text}"
        );
        assert!(text.contains("> 00 A4 00 04 02 A5 15\n< 61 20"), "{text}");
        let script = crate::script::Script::parse(&text).unwrap();
        assert_eq!(
            script.steps.first(),
            Some(&crate::script::Step::Profile(
                "isim-sja2-milenage.toml".into()
            ))
        );
        assert!(script.steps.contains(&crate::script::Step::Reset));
        assert_eq!(script.secrets(), ["ADM1", "KI", "OPC", "PIN1", "SECRET1"]);
    }

    #[test]
    fn a_lone_secret_byte_is_not_written_and_repeated_values_keep_their_name() {
        let mut r = Recorder::default();
        r.learn("PIN1", b"1234\xFF\xFF\xFF\xFF".to_vec());
        r.learn("PIN2", vec![0xFF; 8]); // an unset code names nothing
        assert_eq!(r.field(&[0x42]), "${SECRET1}");
        assert_eq!(r.field(&[0xFF; 8]), "${SECRET2}");
        assert_eq!(r.field(&[0x42]), "${SECRET1}");
        assert_eq!(r.field(b"\x011234\xFF\xFF\xFF\xFF"), "01 ${PIN1}");
        assert_eq!(
            r.field(b"\x01\x021234\xFF\xFF\xFF\xFF"),
            "${SECRET3} ${PIN1}"
        );
    }
}
