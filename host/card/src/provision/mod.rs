//! Provisioning programmable SIMs: what to write ([`Target`]), the exact APDU plan for one card
//! ([`plan`]), its execution with read-back and an authentication check ([`provision`]), and
//! batches over several readers ([`batch`]).
//!
//! Three rules protect the cards. ADM is never presented before the remaining tries have been
//! read without spending one, and not at all when fewer than [`ADM_SAFE_TRIES`] remain (three
//! wrong ADM keys lock a card for good). A failed ADM is never retried. And the plan is data:
//! `--dry-run` prints the very APDUs a real run would send, secrets masked.

pub mod batch;
pub mod csv;
pub mod driver;

use crate::auc;
use crate::error::{Error, Result};
use crate::hex;
use crate::profile::Profile;
use crate::sim::{self, Dialect, Structure};
use crate::transport::Link;
use driver::{Driver, KeyLoad};
use serde_json::{Value, json};
use simlab_applet::card::encode_key_file;
use simlab_applet::{Command, Status, encoding};

/// The fewest ADM tries that must remain before simlab spends one.
pub const ADM_SAFE_TRIES: u8 = 2;

/// What one card should become.
#[derive(Clone, Debug)]
pub struct Target {
    pub profile: Profile,
    /// Whether PIN1/PUK1 are to be written (a CSV may leave them out).
    pub write_pins: bool,
    /// EF_SMSP record 1, if given (pySim's `smsp` column: hex).
    pub smsp: Option<Vec<u8>>,
    /// The CSV line this target came from.
    pub line: Option<usize>,
}

impl Target {
    pub fn from_profile(profile: Profile) -> Self {
        Target {
            profile,
            write_pins: true,
            smsp: None,
            line: None,
        }
    }

    /// The key a report uses for this target: the ICCID, or the IMSI.
    pub fn key(&self) -> String {
        self.profile.iccid.clone()
    }

    /// A label for progress lines.
    pub fn label(&self) -> String {
        match (self.line, &self.profile.name) {
            (Some(l), Some(n)) => format!("line {l} ({n})"),
            (Some(l), None) => format!("line {l}"),
            (None, Some(n)) => n.clone(),
            (None, None) => self.profile.iccid.clone(),
        }
    }
}

/// One APDU of a plan.
#[derive(Clone, Debug)]
pub struct Step {
    /// What it does, for people.
    pub what: String,
    /// The command bytes.
    pub apdu: Vec<u8>,
    /// The data field is secret (ADM, keys, PINs): masked in dry runs, reports and traces.
    pub secret: bool,
    /// For a read-back: the bytes the card must return.
    pub expect: Option<Vec<u8>>,
}

impl Step {
    fn new(what: impl Into<String>, cmd: Command) -> Self {
        let mut apdu = vec![0u8; cmd.encoded_len().unwrap_or(0)];
        let _ = cmd.serialize(&mut apdu);
        Step {
            what: what.into(),
            apdu,
            secret: false,
            expect: None,
        }
    }

    fn secret(mut self) -> Self {
        self.secret = true;
        self
    }

    /// The APDU as hex with the data field blanked when secret.
    pub fn render(&self) -> String {
        let hexed: Vec<String> = self.apdu.iter().map(|b| format!("{b:02X}")).collect();
        if !self.secret || self.apdu.len() <= 5 {
            return hexed.join(" ");
        }
        let mut out = hexed[..5].to_vec();
        out.extend(std::iter::repeat_n("**".to_string(), self.apdu.len() - 5));
        out.join(" ")
    }
}

/// The full plan for one card.
#[derive(Clone, Debug)]
pub struct Plan {
    pub driver: Driver,
    /// The ADM presentation, kept apart: it runs only after the guard.
    pub verify_adm: Step,
    /// Writes, each preceded by the SELECTs it needs.
    pub writes: Vec<Step>,
    /// Reads whose answers must equal what was written.
    pub read_back: Vec<Step>,
    /// Things the card type cannot take, said plainly in the report.
    pub skipped: Vec<String>,
}

/// Selecting a file by path, in the card's dialect.
fn select_steps(dialect: Dialect, location: sim::Location) -> Vec<Step> {
    match (dialect, location) {
        (Dialect::Gsm, sim::Location::Mf(path)) => std::iter::once(0x3F00u16)
            .chain(path.iter().copied())
            .map(|fid| {
                Step::new(
                    format!("SELECT {fid:04X}"),
                    Command::new(0xA0, 0xA4, 0, 0).with_data(&fid.to_be_bytes()),
                )
            })
            .collect(),
        (Dialect::Uicc, sim::Location::Mf(path)) => {
            let bytes: Vec<u8> = path.iter().flat_map(|f| f.to_be_bytes()).collect();
            vec![Step::new(
                format!(
                    "SELECT 3F00/{}",
                    path.iter()
                        .map(|f| format!("{f:04X}"))
                        .collect::<Vec<_>>()
                        .join("/")
                ),
                Command::new(0x00, 0xA4, 0x08, 0x0C).with_data(&bytes),
            )]
        }
        (_, sim::Location::Usim(fid)) => vec![
            Step::new(
                "SELECT ADF.USIM",
                Command::new(0x00, 0xA4, 0x04, 0x0C).with_data(&sim::USIM_AID_PREFIX),
            ),
            Step::new(
                format!("SELECT {fid:04X}"),
                Command::new(0x00, 0xA4, 0x00, 0x0C).with_data(&fid.to_be_bytes()),
            ),
        ],
    }
}

/// Plans writing `data` to a transparent file (from offset 0) and reading it back.
fn transparent(
    plan: &mut Plan,
    dialect: Dialect,
    name: &str,
    location: sim::Location,
    data: &[u8],
    secret: bool,
) {
    let cla = if dialect == Dialect::Gsm { 0xA0 } else { 0x00 };
    let mut steps = select_steps(dialect, location);
    let mut write = Step::new(
        format!("UPDATE BINARY {name}"),
        Command::new(cla, 0xD6, 0, 0).with_data(data),
    );
    if secret {
        write = write.secret();
    }
    steps.push(write);
    plan.writes.extend(steps);
    if !secret {
        let mut reads = select_steps(dialect, location);
        let mut read = Step::new(
            format!("READ BINARY {name}"),
            Command::new(cla, 0xB0, 0, 0).with_ne(data.len()),
        );
        read.expect = Some(data.to_vec());
        reads.push(read);
        plan.read_back.extend(reads);
    }
}

/// Plans writing record 1 of a linear fixed file and reading it back.
fn record(plan: &mut Plan, dialect: Dialect, name: &str, location: sim::Location, data: &[u8]) {
    let cla = if dialect == Dialect::Gsm { 0xA0 } else { 0x00 };
    let mut steps = select_steps(dialect, location);
    steps.push(Step::new(
        format!("UPDATE RECORD {name} #1"),
        Command::new(cla, 0xDC, 1, 0x04).with_data(data),
    ));
    plan.writes.extend(steps);
    let mut reads = select_steps(dialect, location);
    let mut read = Step::new(
        format!("READ RECORD {name} #1"),
        Command::new(cla, 0xB2, 1, 0x04).with_ne(data.len()),
    );
    read.expect = Some(data.to_vec());
    reads.push(read);
    plan.read_back.extend(reads);
}

/// Builds the exact plan for `target` on the card behind `sim`. It reads (file sizes, record
/// lengths) but never writes or presents a code.
pub fn plan(sim: &mut sim::Sim, driver: Driver, target: &Target) -> Result<Plan> {
    let p = &target.profile;
    driver
        .check_algorithm(p.algorithm)
        .map_err(|reason| Error::arg("algorithm", reason))?;
    let dialect = driver.dialect();
    let cla = if dialect == Dialect::Gsm { 0xA0 } else { 0x00 };
    let mut plan = Plan {
        driver,
        verify_adm: Step::new(
            "VERIFY ADM1",
            Command::new(cla, 0x20, 0x00, driver.adm_reference()).with_data(&p.adm1),
        )
        .secret(),
        writes: Vec::new(),
        read_back: Vec::new(),
        skipped: Vec::new(),
    };
    let mf = |path: &'static [u16]| sim::Location::Mf(path);
    if driver.iccid_writable() {
        let iccid = p
            .encoded_iccid()
            .map_err(|e| Error::arg("iccid", e.to_string()))?;
        transparent(&mut plan, dialect, "EF_ICCID", mf(&[0x2FE2]), &iccid, false);
    } else {
        plan.skipped
            .push(format!("ICCID: fixed on a {}", driver.name()));
    }
    let imsi = encoding::encode_imsi(&p.imsi).map_err(|e| Error::arg("imsi", e.to_string()))?;
    transparent(
        &mut plan,
        dialect,
        "EF_IMSI",
        mf(&[0x7F20, 0x6F07]),
        &imsi,
        false,
    );
    // Every other file comes from the same encoder the card model is personalised with, so the
    // emulated and the provisioned card hold identical bytes; sized for the card in the reader
    // (a GR1's EF_AD has three bytes, whatever card type the profile was written for).
    let mut for_this_card = p.clone();
    for_this_card.card_type = plan.driver.card_type;
    let contents = for_this_card.file_contents();
    let content = |file: u8| {
        contents
            .iter()
            .find(|(f, off, _)| *f == file && *off == 0)
            .map(|(_, _, b)| b.clone())
    };
    use simlab_applet::fs::idx;
    for (file, name, path) in [
        (idx::EF_SPN, "EF_SPN", mf(&[0x7F20, 0x6F46])),
        (idx::EF_ACC, "EF_ACC", mf(&[0x7F20, 0x6F78])),
        (idx::EF_AD, "EF_AD", mf(&[0x7F20, 0x6FAD])),
    ] {
        if let Some(bytes) = content(file) {
            transparent(&mut plan, dialect, name, path, &bytes, false);
        }
    }
    // PLMN lists: sized from the card, since real cards differ in how many entries they hold.
    if let Structure::Transparent { size } = sim.select(mf(&[0x7F20, 0x6F30]))? {
        let mut plmnsel = vec![0xFF; size];
        plmnsel[..3].copy_from_slice(&p.plmn);
        transparent(
            &mut plan,
            dialect,
            "EF_PLMNsel",
            mf(&[0x7F20, 0x6F30]),
            &plmnsel,
            false,
        );
    }
    if let Some(msisdn) = &p.msisdn
        && let Structure::LinearFixed { record_len, .. } = sim.select(mf(&[0x7F10, 0x6F40]))?
    {
        let rec = msisdn_record(msisdn, record_len)?;
        record(&mut plan, dialect, "EF_MSISDN", mf(&[0x7F10, 0x6F40]), &rec);
    }
    if let Some(smsp) = &target.smsp
        && let Structure::LinearFixed { record_len, .. } = sim.select(mf(&[0x7F10, 0x6F42]))?
    {
        let mut rec = vec![0xFF; record_len];
        // pySim's smsp column is the record's tail (parameters), right-aligned.
        let n = smsp.len().min(record_len);
        rec[record_len - n..].copy_from_slice(&smsp[smsp.len() - n..]);
        record(&mut plan, dialect, "EF_SMSP", mf(&[0x7F10, 0x6F42]), &rec);
    }
    match driver.key_load() {
        KeyLoad::Gr1Command => {
            plan.writes.push(
                Step::new(
                    "WRITE Ki (80 D4)",
                    Command::new(0x80, 0xD4, 0x02, 0x00).with_data(&p.ki),
                )
                .secret(),
            );
        }
        KeyLoad::Sjs1Files => {
            transparent(
                &mut plan,
                dialect,
                "Ki (7F20/00FF)",
                mf(&[0x7F20, 0x00FF]),
                &p.ki,
                true,
            );
            let opc = p
                .opc
                .ok_or_else(|| Error::arg("opc", "a sysmoUSIM-SJS1 needs OPc"))?;
            let mut field = vec![0x01];
            field.extend_from_slice(&opc);
            transparent(
                &mut plan,
                dialect,
                "OPc (7F20/00F7)",
                mf(&[0x7F20, 0x00F7]),
                &field,
                true,
            );
        }
        KeyLoad::Sja2Files => {
            let keys = encode_key_file(p.algorithm, &p.ki, p.opc.as_ref());
            transparent(
                &mut plan,
                dialect,
                "keys (A515/6F20)",
                mf(&[0xA515, 0x6F20]),
                &keys,
                true,
            );
            transparent(
                &mut plan,
                dialect,
                "keys (ADF.USIM/AF20)",
                sim::Location::Usim(0xAF20),
                &keys,
                true,
            );
        }
    }
    if target.write_pins {
        if driver.pins_writable() {
            let mut chv = p.pin1.to_vec();
            chv.extend_from_slice(&p.puk1);
            transparent(
                &mut plan,
                dialect,
                "PIN1/PUK1 (A515/6F01)",
                mf(&[0xA515, 0x6F01]),
                &chv,
                true,
            );
        } else {
            plan.skipped
                .push(format!("PIN1/PUK1: a {} keeps its own", driver.name()));
        }
    }
    Ok(plan)
}

fn msisdn_record(number: &str, record_len: usize) -> Result<Vec<u8>> {
    if record_len < 14 {
        return Err(Error::Malformed {
            what: "EF_MSISDN",
            reason: format!("records of {record_len} bytes are too short"),
        });
    }
    let mut bcd = [0xFF; 10];
    let (len, ton) = encoding::encode_dialling_number(number, &mut bcd)
        .map_err(|e| Error::arg("msisdn", e.to_string()))?;
    let mut rec = vec![0xFF; record_len];
    let tail = record_len - 14;
    rec[tail] = (len + 1) as u8;
    rec[tail + 1] = ton;
    rec[tail + 2..tail + 12].copy_from_slice(&bcd);
    Ok(rec)
}

/// What happened to one card.
#[derive(Clone, Debug)]
pub struct CardReport {
    pub json: Value,
    pub ok: bool,
}

/// Progress callback: a short line per step.
pub type Progress<'a> = &'a mut dyn FnMut(&str);

/// Options that change how far provisioning may go.
#[derive(Clone, Copy, Debug, Default)]
pub struct Options {
    /// Present ADM even when fewer than [`ADM_SAFE_TRIES`] remain or the card cannot tell.
    pub force_adm: bool,
}

/// Why provisioning stopped before the end: the step, and what went wrong.
fn step_error(step: &Step, e: impl std::fmt::Display) -> Error {
    Error::Mismatch {
        what: format!("{}: {e}", step.what),
    }
}

fn run(link: &mut Link, step: &Step) -> Result<Vec<u8>> {
    let cmd = Command::parse(&step.apdu).map_err(|e| Error::Malformed {
        what: "planned APDU",
        reason: e.to_string(),
    })?;
    let reply = link.transmit(&cmd).map_err(|e| step_error(step, e))?;
    if reply.status != Status::Success {
        return Err(step_error(step, format!("card answered {}", reply.status)));
    }
    Ok(reply.data)
}

/// Provisions one card: guard, ADM, writes, read-back, authentication. Returns the report,
/// which says what was written, read back and verified; `Err` only for failures before any
/// write (guard refusals included), so the caller can tell "untouched" from "half-written".
pub fn provision(
    sim: &mut sim::Sim,
    plan: &Plan,
    target: &Target,
    options: Options,
    progress: Progress,
) -> Result<CardReport> {
    let p = &target.profile;
    // The guard: the counter is read without spending a try.
    let adm_tries = if plan.driver.can_query_adm() {
        let reply = sim
            .link()
            .transmit(&Command::new(0x00, 0x20, 0x00, plan.driver.adm_reference()))
            .map_err(Error::from)?;
        match reply.status {
            Status::VerifyFailed { tries_left } => Some(tries_left),
            Status::Success => Some(u8::MAX),
            Status::AuthMethodBlocked => Some(0),
            _ => None,
        }
    } else {
        None
    };
    match adm_tries {
        Some(0) => {
            return Err(Error::Mismatch {
                what: "ADM1 is blocked: the card cannot be provisioned".into(),
            });
        }
        Some(n) if n < ADM_SAFE_TRIES && !options.force_adm => {
            return Err(Error::Mismatch {
                what: format!(
                    "ADM1 has only {n} tries left: refusing to risk locking the card (--force-adm overrides)"
                ),
            });
        }
        None if !options.force_adm => {
            return Err(Error::Mismatch {
                what: format!(
                    "a {} does not report its ADM tries without spending one: refusing (--force-adm overrides)",
                    plan.driver.name()
                ),
            });
        }
        _ => {}
    }
    if adm_tries != Some(u8::MAX) {
        progress("verifying ADM1");
        // Never retried: a wrong ADM key spends a try, and the next one could be the last.
        run(sim.link(), &plan.verify_adm).map_err(|e| Error::Mismatch {
            what: format!("ADM1 refused ({e}); not retrying"),
        })?;
    }
    let mut written = Vec::new();
    let mut failure = None;
    for step in &plan.writes {
        if step.what.starts_with("UPDATE") || step.what.starts_with("WRITE") {
            progress(&step.what.to_lowercase());
        }
        match run(sim.link(), step) {
            Ok(_) => {
                if !step.what.starts_with("SELECT") {
                    written.push(json!({
                        "step": step.what,
                        "data": if step.secret { Value::Null } else { Value::String(hex::encode(&step.apdu[5..])) },
                    }));
                }
            }
            Err(e) => {
                failure = Some(e.to_string());
                break;
            }
        }
    }
    let mut read_back = Vec::new();
    let mut read_back_ok = failure.is_none();
    if failure.is_none() {
        progress("reading back");
        for step in &plan.read_back {
            match run(sim.link(), step) {
                Ok(data) => {
                    if let Some(expect) = &step.expect {
                        let same = &data == expect;
                        read_back_ok &= same;
                        read_back.push(json!({ "step": step.what, "data": hex::encode(&data), "matches": same }));
                    }
                }
                Err(e) => {
                    read_back_ok = false;
                    failure = Some(e.to_string());
                    break;
                }
            }
        }
    }
    let mut auth = Value::Null;
    let mut auth_ok = false;
    if failure.is_none() {
        progress("authenticating");
        match check_auth(sim, target) {
            Ok((value, ok)) => {
                auth = value;
                auth_ok = ok;
            }
            Err(e) => failure = Some(format!("authentication: {e}")),
        }
    }
    let ok = failure.is_none() && read_back_ok && auth_ok;
    let json = json!({
        "status": if ok { "done" } else { "failed" },
        "line": target.line,
        "name": p.name,
        "iccid": p.iccid,
        "imsi": p.imsi,
        "card_type": plan.driver.name(),
        "adm1_tries_before": adm_tries.filter(|&n| n != u8::MAX),
        "written": written,
        "read_back": read_back,
        "read_back_ok": read_back_ok,
        "auth": auth,
        "skipped": plan.skipped,
        "error": failure.clone().or_else(|| (!read_back_ok).then(|| "read-back differs from what was written".to_string())).or_else(|| (!auth_ok).then(|| "authentication does not match the host's computation".to_string())),
    });
    Ok(CardReport { json, ok })
}

/// Authenticates with a fresh random RAND and compares with the host's computation from the
/// target's keys: the only way to check keys that can never be read back.
fn check_auth(sim: &mut sim::Sim, target: &Target) -> Result<(Value, bool)> {
    let p = &target.profile;
    if p.pin1_enabled && target.write_pins {
        sim.verify(sim::Code::Pin1, Some(&p.pin1))?;
    }
    let rand = crate::random::bytes::<16>()?;
    let expected = auc::gsm(p.algorithm, &p.ki, p.opc.as_ref(), &rand)
        .ok_or_else(|| Error::arg("opc", "cannot compute the expected answer"))?;
    let got = sim.authenticate(&rand, None)?;
    let sim::AuthResult::Gsm { sres, kc } = got else {
        return Ok((json!({ "rand": hex::encode(&rand), "match": false }), false));
    };
    let ok = sres == expected.sres && kc == expected.kc;
    Ok((
        json!({ "rand": hex::encode(&rand), "sres": hex::encode(&sres), "match": ok }),
        ok,
    ))
}

/// The dry-run rendering of a plan.
pub fn render_plan(plan: &Plan, options: Options) -> String {
    let mut out = String::new();
    out.push_str(&format!("card type: {}\n", plan.driver.name()));
    if plan.driver.can_query_adm() {
        out.push_str(&format!(
            "  00 20 00 {:02X}            read ADM1 tries (spends none); stop if fewer than {ADM_SAFE_TRIES}{}\n",
            plan.driver.adm_reference(),
            if options.force_adm { " (--force-adm: go on)" } else { "" }
        ));
    } else {
        out.push_str("  (the card cannot report ADM tries: refused unless --force-adm)\n");
    }
    let line =
        |out: &mut String, s: &Step| out.push_str(&format!("  {:<48} {}\n", s.render(), s.what));
    line(&mut out, &plan.verify_adm);
    for s in &plan.writes {
        line(&mut out, s);
    }
    out.push_str("  then read back:\n");
    for s in &plan.read_back {
        line(&mut out, s);
    }
    out.push_str(
        "  then authenticate with a random RAND and compare with the host's computation\n",
    );
    for s in &plan.skipped {
        out.push_str(&format!("  skipped: {s}\n"));
    }
    out
}
