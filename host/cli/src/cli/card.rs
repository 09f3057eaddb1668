//! `simlab card …`: the card as a user sees it, through whichever transport was chosen.

use super::Global;
use super::Output;
use clap::Subcommand;
use serde_json::{Value, json};
use simlab_applet::chv::pad_pin;
use simlab_applet::encoding;
use simlab_card::auc::{self, Expected};
use simlab_card::error::{Error, Result};
use simlab_card::hex;
use simlab_card::profile::Profile;
use simlab_card::sim::{self, AuthResult, Code, FileContent, Sim, VerifyOutcome};
use simlab_card::trace::{Side, Trace};
use simlab_card::transport::inproc::InProcess;
use simlab_card::transport::pcsc::{PcscOptions, PcscTransport};
use simlab_card::transport::{Link, Transport};
use std::path::Path;
use std::time::Duration;

#[derive(Subcommand, Debug)]
pub enum CardCommand {
    /// ICCID, IMSI, MSISDN, ATR and the PIN retry counters.
    Info {
        /// Verify PIN1 first (needed when PIN1 is enabled).
        #[arg(long, value_name = "PIN")]
        pin: Option<String>,
    },
    /// Read an elementary file by name (ICCID, IMSI, SPN, USIM/UST, …; `--list` shows all).
    Read {
        /// The file, e.g. IMSI, EF_ICCID, USIM/IMSI.
        #[arg(required_unless_present = "list")]
        file: Option<String>,
        /// List the files this command knows.
        #[arg(long)]
        list: bool,
        /// Verify PIN1 first.
        #[arg(long, value_name = "PIN")]
        pin: Option<String>,
    },
    /// Run the card's authentication: RUN GSM ALGORITHM / AUTHENTICATE.
    #[command(after_help = "\
Without --autn a SIM runs RUN GSM ALGORITHM and a USIM AUTHENTICATE in GSM context (SRES, Kc).
With --autn a USIM authenticates in 3G context (RES, CK, IK, Kc, or AUTS on a sync failure).
--check computes the expected answer on the host from the profile (the --emulate one if no
profile is named) and exits 1 on a mismatch.")]
    Auth {
        /// The challenge RAND: 32 hex digits.
        #[arg(long, value_name = "HEX")]
        rand: String,
        /// AUTN for a 3G-context authentication: 32 hex digits (see `simlab algo milenage`).
        #[arg(long, value_name = "HEX")]
        autn: Option<String>,
        /// Compare with the host's computation from this profile (default: the --emulate one).
        #[arg(long, value_name = "PROFILE", num_args = 0..=1, default_missing_value = "")]
        check: Option<String>,
        /// Verify PIN1 first.
        #[arg(long, value_name = "PIN")]
        pin: Option<String>,
    },
    /// Write an elementary file (whole records or bytes at an offset), then read it back.
    #[command(after_help = "\
Most files need ADM1 (--adm) or PIN1 (--pin) first. Before spending an ADM attempt the card's
remaining ADM tries are read without spending one, and the write is refused when fewer than 2
remain: three wrong ADM keys lock a programmable card for good.

Example:
  simlab --reader 0 card update SPN --data 0173696d6c6162ffffffffffffffffffff --adm 88888888")]
    Update {
        /// The file, e.g. SPN, MSISDN, USIM/UST.
        file: String,
        /// The bytes to write, in hex.
        #[arg(long, value_name = "HEX")]
        data: String,
        /// For a linear fixed file: the record number (1-based).
        #[arg(long, value_name = "N")]
        record: Option<u8>,
        /// For a transparent file: the byte offset.
        #[arg(long, value_name = "N", default_value_t = 0)]
        offset: usize,
        /// Verify ADM1 first: 4-8 digits, or 16 hex digits for a raw key. Presented under the
        /// card type's own reference (CHV 5 on a sysmoSIM-GR1, 0A elsewhere).
        #[arg(long, value_name = "KEY")]
        adm: Option<String>,
        /// Present ADM1 even when the card cannot report its remaining tries (a TS 51.011 card
        /// such as the sysmoSIM-GR1 cannot): a wrong key then spends a try unseen.
        #[arg(long, requires = "adm")]
        force_adm: bool,
        /// Verify PIN1 first.
        #[arg(long, value_name = "PIN")]
        pin: Option<String>,
    },
    /// Send raw command APDUs and print the answers.
    #[command(after_help = "\
Each APDU is hex (spaces allowed inside one argument). By default the host does T=0 for you:
61xx/9Fxx are followed by GET RESPONSE and 6Cxx resent with the right Le, and the complete answer
is printed. --raw sends each APDU exactly as given and prints exactly what came back.

Examples:
  simlab --reader 0 card apdu 00A4040007A0000000871002 00B0000009
  simlab --emulate fixtures/cards/sim-comp128v1.toml card apdu --raw 'A0 A4 00 00 02 3F 00' A0C0000016")]
    Apdu {
        /// Command APDUs in hex.
        #[arg(required = true, value_name = "HEX")]
        apdus: Vec<String>,
        /// No T=0 help: each APDU as is, each answer as it came.
        #[arg(long)]
        raw: bool,
    },
    /// Replay an APDU script (fixtures/apdu/*.apdu format) and check every answer.
    #[command(after_help = "\
The script is sent as written (it carries its own GET RESPONSEs); the first answer that differs
stops the replay with exit 1 and names the line. Secrets in the script are named placeholders
filled from --profile: ${ADM1}, ${PIN1}, ${PUK1}, ${PIN2}, ${PUK2}, ${KI}, ${OPC}; and
${SECRET1}, ${SECRET2} … (secrets a recording could not name) from --secret. A malformed
script, or one whose placeholders cannot all be filled, is refused with its line number (exit 2)
before anything reaches the card. See fixtures/apdu/README.md.

Recording: --trace FILE.apdu on any card command writes this format (secrets as placeholders,
secret answers as `..`), so a session with a real card becomes a CI fixture:
  simlab --reader 0 --trace prog.apdu card provision --profile my-card.toml
  simlab --emulate my-blank.toml card script prog.apdu --profile my-card.toml

Example:
  simlab --emulate fixtures/cards/blank-sjs1.toml card script fixtures/apdu/program-sjs1.apdu")]
    Script {
        /// The script file.
        #[arg(value_name = "FILE.apdu")]
        file: std::path::PathBuf,
        /// The card profile whose secrets fill the script's placeholders.
        #[arg(long, value_name = "PROFILE.toml")]
        profile: Option<std::path::PathBuf>,
        /// A placeholder's value, NAME=HEX, NAME=env:VAR or NAME=- (stdin); before the
        /// profile's. For a recording's ${SECRETn} (repeat).
        #[arg(long, value_name = "NAME=HEX")]
        secret: Vec<String>,
    },
    /// Provision programmable SIMs: one card from a profile, or a batch from a CSV over several
    /// readers in parallel.
    #[command(after_help = "\
Supported cards: sysmoSIM-GR1, sysmoUSIM-SJS1, sysmoISIM-SJA2 and simlab's own virtual card,
recognised by their ATR (--card-type overrides). Written: ICCID (where the card allows), IMSI,
MSISDN, SPN, PLMN selector, ACC, AD, SMSP, Ki/OPc/algorithm, PIN1/PUK1 (where allowed). Then
everything is read back and compared, and the card is authenticated with a random RAND against
the host's computation.

Before ADM is presented, the remaining ADM tries are read without spending one; the card is
refused when fewer than 2 remain (--force-adm overrides). A failed ADM is never retried.

CSV columns (pySim-prog batch format): name, iccid, mcc, mnc, imsi, smsp, ki, opc|op, acc,
adm1|pin_adm, msisdn, spn, algorithm, pin1, puk1. Every row is checked before any card is
touched. With --report, finished cards are recorded as they complete and a re-run skips them.

Examples:
  simlab --reader 0 card provision --profile fixtures/cards/usim-milenage.toml --dry-run
  simlab card provision --csv cards.csv --readers all --report done.json --wait 60")]
    Provision {
        /// One card: this profile, into the card chosen with --reader/--emulate.
        #[arg(
            long,
            value_name = "PROFILE.toml",
            required_unless_present = "csv",
            conflicts_with = "csv"
        )]
        profile: Option<std::path::PathBuf>,
        /// A batch: one card per row.
        #[arg(long, value_name = "FILE")]
        csv: Option<std::path::PathBuf>,
        /// With --csv: `all`, or reader names/indices separated by commas.
        #[arg(long, value_name = "all|LIST", default_value = "all")]
        readers: String,
        /// Print the exact APDU plan (secrets masked) and write nothing.
        #[arg(long)]
        dry_run: bool,
        /// Write the per-card report (JSON) here; with --csv, also what makes a batch resumable.
        #[arg(long, value_name = "FILE.json")]
        report: Option<std::path::PathBuf>,
        /// Present ADM even with fewer than 2 tries left, or on a card that cannot say.
        #[arg(long)]
        force_adm: bool,
        /// The card type, when its ATR is not the vendor's.
        #[arg(long, value_name = "TYPE")]
        card_type: Option<String>,
        /// With --profile: the card's ADM1 key (from the vendor's letter), instead of the
        /// profile's `adm1`: 8 digits, or 16 hex digits.
        #[arg(long, value_name = "KEY", conflicts_with = "csv")]
        adm: Option<String>,
    },
    /// Verify PIN1 (or PIN2/ADM1); a wrong PIN spends a try, and the card tells how many remain.
    VerifyPin {
        /// The PIN: 4-8 digits.
        #[arg(long, value_name = "PIN")]
        pin: String,
        /// Which code to verify.
        #[arg(long, value_enum, default_value = "pin1")]
        code: CodeArg,
    },
}

#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum CodeArg {
    Pin1,
    Pin2,
    Adm1,
}

/// Opens the card the global options name and starts a SIM session on it.
pub fn connect(global: &Global, out: &Output) -> Result<(Sim, Option<Profile>)> {
    let (transport, profile) = open_transport(global, out)?;
    Ok((Sim::open(open_link(transport, global)?)?, profile))
}

/// The transport the global options name: an emulated card (with its profile), a PC/SC
/// reader, a modem's SIM, or a serial token.
pub fn open_transport(
    global: &Global,
    out: &Output,
) -> Result<(Box<dyn Transport>, Option<Profile>)> {
    let chosen = [
        global.emulate.is_some(),
        global.reader.is_some(),
        global.modem.is_some(),
        global.serial.is_some(),
    ];
    if chosen.iter().filter(|&&c| c).count() > 1 {
        return Err(Error::arg(
            "--reader/--emulate/--modem/--serial",
            "name one card: each of these options chooses a different one",
        ));
    }
    if let Some(path) = &global.modem {
        let transport = simlab_card::transport::modem::ModemTransport::open(path)?;
        out.detail(&format!("using the SIM in the modem at {}", path.display()));
        return Ok((Box::new(transport), None));
    }
    if let Some(spec) = &global.serial {
        let transport = simlab_card::transport::serial::SerialTransport::open(spec)?;
        out.detail(&format!("using {}", transport.describe()));
        return Ok((Box::new(transport), None));
    }
    let (transport, profile): (Box<dyn Transport>, Option<Profile>) = match (
        &global.emulate,
        &global.reader,
    ) {
        (Some(path), _) => {
            let profile = Profile::load(path)?;
            out.detail(&format!(
                "using the simlab card model from {}",
                path.display()
            ));
            let card = InProcess::new(
                profile.build_card()?,
                format!("emulated card {}", path.display()),
            );
            (Box::new(card), Some(profile))
        }
        (None, Some(reader)) => {
            let wait = global
                .wait
                .map(|s| {
                    if s.is_finite() && (0.0..=86_400.0).contains(&s) {
                        Ok(Duration::from_secs_f64(s))
                    } else {
                        Err(Error::arg(
                            "--wait",
                            "must be a number of seconds from 0 to 86400",
                        ))
                    }
                })
                .transpose()?;
            let options = PcscOptions {
                exclusive: global.exclusive,
                wait,
            };
            let transport = PcscTransport::connect(reader, &options)?;
            out.detail(&format!("using PC/SC reader {:?}", transport.reader_name()));
            (Box::new(transport), None)
        }
        (None, None) => {
            return Err(Error::arg(
                "--reader/--emulate/--serial/--modem",
                "no card given: name a PC/SC reader with --reader (see `simlab readers`), a profile with --emulate PROFILE.toml, a token with --serial, or a modem with --modem",
            ));
        }
    };
    Ok((transport, profile))
}

/// As [`open_transport`], but an emulated card may keep its memory in a state file across runs
/// (`--state FILE`, with `--emulate` only: a real card keeps its own).
pub fn open_transport_stateful(
    global: &Global,
    out: &Output,
    state: Option<&Path>,
) -> Result<Box<dyn Transport>> {
    match (state, &global.emulate) {
        (Some(path), Some(profile_path)) => {
            let profile = Profile::load(profile_path)?;
            out.detail(&format!(
                "using the simlab card model from {} with state {}",
                profile_path.display(),
                path.display()
            ));
            let card =
                simlab_emulate::card::EmulatedCard::new(profile.build_card()?, Some(path), None)?;
            Ok(Box::new(simlab_emulate::card::PersistentCard::new(
                card,
                format!("emulated card {}", profile_path.display()),
            )))
        }
        (Some(_), None) => Err(Error::arg(
            "--state",
            "only with --emulate: a real card keeps its own memory",
        )),
        (None, _) => Ok(open_transport(global, out)?.0),
    }
}

/// A link over `transport`, traced when --trace was given; for commands that are not SIM
/// sessions (the token applet), too.
pub fn open_link(transport: Box<dyn Transport>, global: &Global) -> Result<Link> {
    open_link_knowing(transport, global, None)
}

/// As [`open_link`]; a script recording (`--trace FILE.apdu`) names the secrets of `first`
/// (the profile being written, in provisioning), then those of the emulated card's profile.
fn open_link_knowing(
    transport: Box<dyn Transport>,
    global: &Global,
    first: Option<&Profile>,
) -> Result<Link> {
    let mut link = Link::new(transport);
    if let Some(path) = &global.trace {
        let mut trace = Trace::create(path, Side::Host)?;
        if trace.is_script() {
            if let Some(p) = first {
                trace.know_profile(p, None);
            }
            if let Some(card) = &global.emulate {
                let file = card.file_name().map(|f| f.to_string_lossy().into_owned());
                trace.know_profile(&Profile::load(card)?, file.as_deref());
            }
        }
        link.set_trace(trace);
    }
    Ok(link)
}

/// A PIN argument (4-8 digits; or `-` / `env:NAME`, see [`super::secret_arg`]), padded with FF
/// as the card wants it.
pub(crate) fn pin_arg(arg: &str, text: &str) -> Result<[u8; 8]> {
    let text = super::secret_arg(arg, text)?;
    pad_pin(&text).ok_or_else(|| Error::arg(arg, "must be 4-8 digits"))
}

/// Verifies PIN1 when one was given; a wrong one is an error (and spends a try, as it must).
fn unlock(sim: &mut Sim, pin: Option<&str>) -> Result<()> {
    let Some(pin) = pin else { return Ok(()) };
    let value = pin_arg("--pin", pin)?;
    match sim.verify(Code::Pin1, Some(&value))? {
        VerifyOutcome::Verified | VerifyOutcome::NotEnabled => Ok(()),
        other => Err(verify_error(Code::Pin1, other)),
    }
}

/// An ADM key as typed: 16 hex digits are a raw key, 4-8 digits an ASCII one (as pySim does).
fn adm_arg(text: &str) -> Result<[u8; 8]> {
    let text = super::secret_arg("--adm", text)?;
    if text.len() == 16 {
        return hex::decode_secret_fixed::<8>("--adm", &text);
    }
    pad_pin(&text).ok_or_else(|| Error::arg("--adm", "must be 4-8 digits or 16 hex digits"))
}

/// The fewest ADM tries that must remain before simlab spends one.
const ADM_SAFE_TRIES: u8 = 2;

/// Verifies ADM1 without ever risking the last attempts: the counter is read first (an empty
/// VERIFY spends nothing), and a card that cannot tell, or is low, is refused.
fn unlock_adm(sim: &mut Sim, key: &[u8; 8], force: bool) -> Result<()> {
    if !force {
        check_adm_tries(sim)?;
    }
    match sim.verify(Code::Adm1, Some(key))? {
        VerifyOutcome::Verified => Ok(()),
        other => Err(verify_error(Code::Adm1, other)),
    }
}

/// Reads ADM1's remaining tries with an empty VERIFY (which spends nothing) and refuses below
/// the safe threshold or when the card cannot tell.
fn check_adm_tries(sim: &mut Sim) -> Result<()> {
    let cannot_tell = || Error::Mismatch {
        what: "the card does not report its ADM1 tries: refusing to guess (--force-adm presents \
               the key anyway, at the risk of a try)"
            .into(),
    };
    if sim.dialect() == sim::Dialect::Gsm {
        // TS 51.011 has no empty VERIFY: asking would be refused, or worse, counted.
        return Err(cannot_tell());
    }
    match sim.verify(Code::Adm1, None)? {
        VerifyOutcome::Verified => return Ok(()),
        VerifyOutcome::Wrong {
            tries_left: Some(n),
        } if n >= ADM_SAFE_TRIES => {}
        VerifyOutcome::Wrong {
            tries_left: Some(n),
        } => {
            return Err(Error::Mismatch {
                what: format!("ADM1 has only {n} tries left: refusing to risk locking the card"),
            });
        }
        VerifyOutcome::Blocked => {
            return Err(Error::Mismatch {
                what: "ADM1 is blocked".into(),
            });
        }
        _ => return Err(cannot_tell()),
    }
    Ok(())
}

fn update(
    out: &Output,
    sim: &mut Sim,
    file: &sim::StandardFile,
    data: &[u8],
    record: Option<u8>,
    offset: usize,
) -> Result<i32> {
    let back = match (sim.select(file.location)?, record) {
        (sim::Structure::Transparent { size }, None) => {
            if offset + data.len() > size {
                return Err(Error::arg(
                    "--data",
                    format!(
                        "{} bytes at offset {offset} do not fit the {size}-byte file",
                        data.len()
                    ),
                ));
            }
            sim.update_binary(offset, data)?;
            let all = sim.read_binary(size)?;
            all[offset..offset + data.len()].to_vec()
        }
        (
            sim::Structure::LinearFixed {
                record_len,
                records,
            },
            Some(n),
        ) => {
            if n == 0 || n as usize > records {
                return Err(Error::arg(
                    "--record",
                    format!("the file has records 1 to {records}"),
                ));
            }
            if data.len() != record_len {
                return Err(Error::arg(
                    "--data",
                    format!("a record is {record_len} bytes, got {}", data.len()),
                ));
            }
            sim.update_record(n, data)?;
            sim.read_record(n, record_len)?
        }
        (sim::Structure::LinearFixed { .. }, None) => {
            return Err(Error::arg(
                "--record",
                "the file is linear fixed: say which record",
            ));
        }
        (_, Some(_)) => return Err(Error::arg("--record", "the file is not linear fixed")),
        (sim::Structure::Other, None) => {
            return Err(Error::arg("FILE", "not a transparent or linear fixed EF"));
        }
    };
    let verified = back == data;
    let text = format!(
        "wrote {} bytes to {}; read back {}\n",
        data.len(),
        file.name,
        if verified { "identical" } else { "DIFFERENT" }
    );
    let json = json!({ "file": file.name, "written": data.len(), "read_back": hex::encode(&back), "verified": verified });
    out.result(&text, &json)?;
    Ok(if verified { 0 } else { 1 })
}

fn verify_error(code: Code, outcome: VerifyOutcome) -> Error {
    let what = match outcome {
        VerifyOutcome::Wrong {
            tries_left: Some(n),
        } => format!("wrong {}, {n} tries left", code.name()),
        VerifyOutcome::Wrong { tries_left: None } => format!("wrong {}", code.name()),
        VerifyOutcome::Blocked => format!("{} is blocked", code.name()),
        VerifyOutcome::NotEnabled => format!("{} is disabled", code.name()),
        VerifyOutcome::Verified => format!("{} verified", code.name()),
    };
    Error::Mismatch { what }
}

pub fn run(out: &Output, global: &Global, cmd: &CardCommand) -> Result<i32> {
    if let CardCommand::Read { list: true, .. } = cmd {
        return list_files(out);
    }
    if let CardCommand::Provision {
        profile,
        csv,
        readers,
        dry_run,
        report,
        force_adm,
        card_type,
        adm,
    } = cmd
    {
        let adm = adm.as_deref().map(adm_arg).transpose()?;
        return provision_command(
            out,
            global,
            profile.as_deref(),
            csv.as_deref(),
            readers,
            *dry_run,
            report.as_deref(),
            *force_adm,
            card_type.as_deref(),
            adm,
        );
    }
    match cmd {
        CardCommand::Apdu { apdus, raw } => return apdu_command(out, global, apdus, *raw),
        CardCommand::Script {
            file,
            profile,
            secret,
        } => {
            return script_command(out, global, file, profile.as_deref(), secret);
        }
        _ => {}
    }
    // Validate every argument before touching the card.
    let (mut sim, profile) = connect(global, out)?;
    match cmd {
        CardCommand::Info { pin } => {
            unlock(&mut sim, pin.as_deref())?;
            info(out, &mut sim)
        }
        CardCommand::Read { file, pin, .. } => {
            let name = file.as_deref().unwrap_or_default();
            let file = sim::find_file(name).ok_or_else(|| {
                Error::arg(
                    "FILE",
                    format!("unknown file {name:?} (simlab card read --list shows the known ones)"),
                )
            })?;
            unlock(&mut sim, pin.as_deref())?;
            read(out, &mut sim, file)
        }
        CardCommand::Auth {
            rand,
            autn,
            check,
            pin,
        } => {
            let rand = hex::decode_fixed::<16>("--rand", rand)?;
            let autn = autn
                .as_deref()
                .map(|a| hex::decode_fixed::<16>("--autn", a))
                .transpose()?;
            let check_profile = match check {
                None => None,
                Some(p) if p.is_empty() => Some(profile.clone().ok_or_else(|| {
                    Error::arg(
                        "--check",
                        "name the card's profile (--check PROFILE): the card is not emulated",
                    )
                })?),
                Some(p) => Some(Profile::load(Path::new(p))?),
            };
            unlock(&mut sim, pin.as_deref())?;
            auth(out, &mut sim, &rand, autn.as_ref(), check_profile.as_ref())
        }
        CardCommand::Update {
            file,
            data,
            record,
            offset,
            adm,
            force_adm,
            pin,
        } => {
            let name = file.as_str();
            let file = sim::find_file(name).ok_or_else(|| {
                Error::arg(
                    "FILE",
                    format!("unknown file {name:?} (simlab card read --list shows the known ones)"),
                )
            })?;
            let data = hex::decode("--data", data)?;
            if data.is_empty() {
                return Err(Error::arg("--data", "nothing to write"));
            }
            let adm = adm.as_deref().map(adm_arg).transpose()?;
            unlock(&mut sim, pin.as_deref())?;
            if let Some(key) = adm {
                let atr = sim.atr();
                if let Some(driver) = simlab_card::provision::driver::Driver::detect(&atr) {
                    sim.set_adm_reference(driver.adm_reference());
                }
                unlock_adm(&mut sim, &key, *force_adm)?;
            }
            update(out, &mut sim, file, &data, *record, *offset)
        }
        CardCommand::Provision { .. } | CardCommand::Apdu { .. } | CardCommand::Script { .. } => {
            unreachable!("handled above")
        }
        CardCommand::VerifyPin { pin, code } => {
            let value = pin_arg("--pin", pin)?;
            let code = match code {
                CodeArg::Pin1 => Code::Pin1,
                CodeArg::Pin2 => Code::Pin2,
                CodeArg::Adm1 => Code::Adm1,
            };
            let outcome = sim.verify(code, Some(&value))?;
            let tries = match outcome {
                VerifyOutcome::Wrong { tries_left } => tries_left,
                VerifyOutcome::Blocked => Some(0),
                _ => None,
            };
            let (verified, text) = match outcome {
                VerifyOutcome::Verified => (true, format!("{} verified\n", code.name())),
                other => (
                    false,
                    format!(
                        "{}\n",
                        verify_error(code, other)
                            .to_string()
                            .trim_start_matches("mismatch: ")
                    ),
                ),
            };
            let json = json!({
                "code": code.name().to_ascii_lowercase(),
                "verified": verified,
                "blocked": outcome == VerifyOutcome::Blocked,
                "tries_left": tries,
            });
            out.result(&text, &json)?;
            Ok(if verified { 0 } else { 1 })
        }
    }
}

fn list_files(out: &Output) -> Result<i32> {
    let mut text = String::new();
    let mut rows = Vec::new();
    for f in sim::FILES {
        let path = match f.location {
            sim::Location::Mf(p) => {
                let fids: Vec<String> = p.iter().map(|fid| format!("{fid:04X}")).collect();
                format!("3F00/{}", fids.join("/"))
            }
            sim::Location::Usim(fid) => format!("ADF.USIM/{fid:04X}"),
        };
        text.push_str(&format!("{:<14}{:<20}{}\n", f.name, path, f.about));
        rows.push(json!({ "name": f.name, "path": path, "about": f.about }));
    }
    out.result(&text, &Value::Array(rows))?;
    Ok(0)
}

fn info(out: &Output, sim: &mut Sim) -> Result<i32> {
    let atr = sim.atr();
    let iccid = match sim.read_file(
        sim::find_file("ICCID")
            .map(|f| f.location)
            .unwrap_or(sim::Location::Mf(&[0x2FE2])),
    ) {
        Ok(FileContent::Transparent(bytes)) => encoding::decode_iccid(&bytes)
            .ok()
            .map(|d| d.as_str().to_string()),
        _ => None,
    };
    let imsi = match sim.read_file(sim::Location::Mf(&[0x7F20, 0x6F07])) {
        Ok(FileContent::Transparent(bytes)) => encoding::decode_imsi(&bytes)
            .ok()
            .map(|d| d.as_str().to_string()),
        Err(Error::Card { .. }) => None,
        Err(e) => return Err(e),
        _ => None,
    };
    let msisdn = match sim.read_file(sim::Location::Mf(&[0x7F10, 0x6F40])) {
        Ok(FileContent::Records(records)) => records.iter().find_map(|r| decode_msisdn(r)),
        _ => None,
    };
    let tries = sim.tries()?;
    let dialect = match sim.dialect() {
        sim::Dialect::Gsm => "sim",
        sim::Dialect::Uicc => "uicc",
    };
    let json = json!({
        "iccid": iccid,
        "imsi": imsi,
        "msisdn": msisdn,
        "atr": hex::encode(&atr),
        "type": dialect,
        "pin1_enabled": tries.pin1_enabled,
        "pin1_tries": tries.pin1,
        "puk1_tries": tries.puk1,
        "pin2_tries": tries.pin2,
        "puk2_tries": tries.puk2,
        "adm1_tries": tries.adm1,
    });
    let show = |v: &Option<String>, why: &str| v.clone().unwrap_or_else(|| format!("({why})"));
    let count = |v: Option<u8>| v.map_or("-".to_string(), |n| n.to_string());
    let text = format!(
        "ATR      {}\nType     {}\nICCID    {}\nIMSI     {}\nMSISDN   {}\nPIN1     {} ({} tries left, PUK1 {})\nPIN2     {} tries left (PUK2 {})\nADM1     {} tries left\n",
        hex::encode(&atr),
        if dialect == "uicc" {
            "UICC with ADF.USIM"
        } else {
            "GSM SIM (TS 51.011)"
        },
        show(&iccid, "unreadable"),
        show(&imsi, "protected: give --pin"),
        show(&msisdn, "not set"),
        match tries.pin1_enabled {
            Some(true) => "enabled",
            Some(false) => "disabled",
            None => "unknown",
        },
        count(tries.pin1),
        count(tries.puk1),
        count(tries.pin2),
        count(tries.puk2),
        count(tries.adm1),
    );
    out.result(&text, &json)?;
    Ok(0)
}

/// The number in an EF_MSISDN record (alpha identifier first, then the TS 31.102 4.4.2.3 part).
fn decode_msisdn(record: &[u8]) -> Option<String> {
    let tail = record.get(record.len().checked_sub(14)?..)?;
    let len = tail[0] as usize;
    if !(2..=11).contains(&len) {
        return None;
    }
    let (international, digits) =
        encoding::decode_dialling_number(&tail[2..1 + len], tail[1]).ok()?;
    Some(format!(
        "{}{}",
        if international { "+" } else { "" },
        digits.as_str()
    ))
}

fn read(out: &Output, sim: &mut Sim, file: &sim::StandardFile) -> Result<i32> {
    let content = sim.read_file(file.location)?;
    let decoded = match (&content, file.name) {
        (FileContent::Transparent(b), "ICCID") => encoding::decode_iccid(b)
            .ok()
            .map(|d| d.as_str().to_string()),
        (FileContent::Transparent(b), "IMSI" | "USIM/IMSI") => encoding::decode_imsi(b)
            .ok()
            .map(|d| d.as_str().to_string()),
        (FileContent::Transparent(b), "SPN" | "USIM/SPN") => {
            let name: Vec<u8> = b
                .iter()
                .skip(1)
                .copied()
                .take_while(|&c| c != 0xFF)
                .collect();
            String::from_utf8(name).ok().filter(|n| !n.is_empty())
        }
        (FileContent::Records(r), "MSISDN" | "USIM/MSISDN") => {
            r.iter().find_map(|r| decode_msisdn(r))
        }
        _ => None,
    };
    let (text, json) = match &content {
        FileContent::Transparent(bytes) => (
            format!(
                "{}{}\n",
                hex::encode(bytes),
                decoded
                    .as_ref()
                    .map(|d| format!("  ({d})"))
                    .unwrap_or_default()
            ),
            json!({ "file": file.name, "structure": "transparent", "data": hex::encode(bytes), "decoded": decoded }),
        ),
        FileContent::Records(records) => {
            let mut text = String::new();
            for (i, r) in records.iter().enumerate() {
                text.push_str(&format!("{:>3}: {}\n", i + 1, hex::encode(r)));
            }
            if let Some(d) = &decoded {
                text.push_str(&format!("     ({d})\n"));
            }
            let hexes: Vec<String> = records.iter().map(|r| hex::encode(r)).collect();
            (
                text,
                json!({ "file": file.name, "structure": "linear_fixed", "records": hexes, "decoded": decoded }),
            )
        }
    };
    out.result(&text, &json)?;
    Ok(0)
}

fn auth(
    out: &Output,
    sim: &mut Sim,
    rand: &[u8; 16],
    autn: Option<&[u8; 16]>,
    check: Option<&Profile>,
) -> Result<i32> {
    let got = sim.authenticate(rand, autn)?;
    let (mut json, mut text) = match &got {
        AuthResult::Gsm { sres, kc } => (
            json!({ "sres": hex::encode(sres), "kc": hex::encode(kc) }),
            format!("SRES  {}\nKc    {}\n", hex::encode(sres), hex::encode(kc)),
        ),
        AuthResult::Umts { res, ck, ik, kc } => (
            json!({
                "res": hex::encode(res),
                "ck": hex::encode(ck),
                "ik": hex::encode(ik),
                "kc": kc.map(|k| hex::encode(&k)),
            }),
            format!(
                "RES   {}\nCK    {}\nIK    {}\n{}",
                hex::encode(res),
                hex::encode(ck),
                hex::encode(ik),
                kc.map(|k| format!("Kc    {}\n", hex::encode(&k)))
                    .unwrap_or_default()
            ),
        ),
        AuthResult::SyncFailure { auts } => (
            json!({ "auts": hex::encode(auts) }),
            format!("sync failure\nAUTS  {}\n", hex::encode(auts)),
        ),
        AuthResult::MacFailure => (
            json!({ "mac_failure": true }),
            "MAC failure: the card rejected AUTN (9862)\n".to_string(),
        ),
    };
    let mut code = match got {
        AuthResult::MacFailure => 1,
        _ => 0,
    };
    if let Some(profile) = check {
        let expected = auc::expected(
            profile.algorithm,
            &profile.ki,
            profile.opc.as_ref(),
            rand,
            autn,
        )
        .ok_or_else(|| Error::arg("--check", "the profile's algorithm cannot compute this"))?;
        if autn.is_some() && !profile.algorithm.is_3g() {
            return Err(Error::arg(
                "--autn",
                format!(
                    "the profile's algorithm {} is 2G only",
                    profile.algorithm.name()
                ),
            ));
        }
        let verdict = auc::check(
            profile.algorithm,
            &profile.ki,
            profile.opc.as_ref(),
            rand,
            &expected,
            &got,
        );
        json["check"] = Value::String(if verdict.matches { "match" } else { "mismatch" }.into());
        json["check_detail"] = Value::String(verdict.detail.clone());
        text.push_str(&format!(
            "check {}: {}\n",
            if verdict.matches { "match" } else { "MISMATCH" },
            verdict.detail
        ));
        code = if verdict.matches { 0 } else { 1 };
        if matches!(expected, Expected::MacFailure) && verdict.matches {
            code = 0;
        }
    }
    out.result(&text, &json)?;
    Ok(code)
}

#[allow(clippy::too_many_arguments)]
fn provision_command(
    out: &Output,
    global: &Global,
    profile: Option<&Path>,
    csv: Option<&Path>,
    readers: &str,
    dry_run: bool,
    report: Option<&Path>,
    force_adm: bool,
    card_type: Option<&str>,
    adm: Option<[u8; 8]>,
) -> Result<i32> {
    use simlab_card::provision::{self, Options, Target, batch, driver::Driver};
    let options = Options { force_adm };
    let forced = card_type
        .map(|name| {
            Driver::by_name(name).ok_or_else(|| {
                Error::arg("--card-type", format!("unknown card type {name:?} (simlab, sysmoSIM-GR1, sysmoUSIM-SJS1, sysmoISIM-SJA2)"))
            })
        })
        .transpose()?;
    if let Some(csv) = csv {
        // Every row is validated before any card is touched.
        let targets = provision::csv::read(csv)?;
        let readers = match &global.reader {
            Some(one) => batch::resolve_readers(one)?,
            None => batch::resolve_readers(readers)?,
        };
        let wait = global
            .wait
            .map(std::time::Duration::from_secs_f64)
            .unwrap_or_default();
        let summary = batch::run(
            targets,
            &batch::BatchOptions {
                readers,
                dry_run,
                report: report.map(Path::to_path_buf),
                options,
                wait,
                card_type: forced,
            },
        )?;
        let text = format!(
            "{} done, {} failed, {} pending{}\n",
            summary.done,
            summary.failed,
            summary.pending,
            if summary.pending > 0 && !dry_run {
                " (insert fresh cards and run again: done rows are skipped)"
            } else {
                ""
            }
        );
        let json = json!({ "done": summary.done, "failed": summary.failed, "pending": summary.pending, "cards": summary.cards });
        out.result(&text, &json)?;
        return Ok(if summary.failed > 0 { 1 } else { 0 });
    }
    let path = profile.ok_or_else(|| Error::arg("--profile", "give --profile or --csv"))?;
    let mut target = Target::from_profile(Profile::load(path)?);
    if let Some(adm) = adm {
        target.profile.adm1 = adm;
    }
    let (transport, _) = open_transport(global, out)?;
    let atr = transport.atr();
    let driver = forced
        .or_else(|| Driver::detect(&atr))
        .ok_or_else(|| Error::Mismatch {
            what: format!(
                "unknown card (ATR {}): name its type with --card-type",
                hex::encode(&atr)
            ),
        })?;
    let mut sim = Sim::open(open_link_knowing(transport, global, Some(&target.profile))?)?;
    let plan = provision::plan(&mut sim, driver, &target)?;
    if dry_run {
        out.result(
            &provision::render_plan(&plan, options),
            &json!({ "card_type": driver.name(), "dry_run": true }),
        )?;
        return Ok(0);
    }
    let mut progress = |step: &str| out.say(&format!("provision: {step}"));
    let r = provision::provision(&mut sim, &plan, &target, options, &mut progress)?;
    if let Some(report) = report {
        let text =
            serde_json::to_string_pretty(&json!({ "version": 1, "cards": [r.json.clone()] }))
                .unwrap_or_default();
        std::fs::write(report, text + "\n").map_err(|source| Error::Io {
            context: format!("writing {}", report.display()),
            source,
        })?;
    }
    let text = format!(
        "{}: {} ({} written, read back {}, authentication {})\n",
        r.json["iccid"].as_str().unwrap_or("?"),
        if r.ok { "done" } else { "FAILED" },
        r.json["written"].as_array().map_or(0, |w| w.len()),
        if r.json["read_back_ok"] == true {
            "identical"
        } else {
            "DIFFERENT"
        },
        if r.json["auth"]["match"] == true {
            "matches"
        } else {
            "does not match"
        },
    );
    out.result(&text, &r.json)?;
    Ok(if r.ok { 0 } else { 1 })
}

fn spaced(bytes: &[u8]) -> String {
    bytes
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// `card apdu`: every argument checked before the first one is sent.
fn apdu_command(out: &Output, global: &Global, apdus: &[String], raw: bool) -> Result<i32> {
    let commands: Vec<Vec<u8>> = apdus
        .iter()
        .map(|a| {
            let compact: String = a.split_whitespace().collect();
            let bytes = hex::decode("HEX", &compact)?;
            simlab_applet::Command::parse(&bytes)
                .map_err(|e| Error::arg("HEX", format!("{a:?} is not a command APDU: {e}")))?;
            Ok(bytes)
        })
        .collect::<Result<_>>()?;
    let (transport, _) = open_transport(global, out)?;
    let mut link = open_link(transport, global)?;
    let mut text = String::new();
    let mut answers = Vec::new();
    for bytes in &commands {
        let answer = if raw {
            link.transmit_bytes(bytes)?
        } else {
            let cmd = simlab_applet::Command::parse(bytes)
                .map_err(|e| Error::arg("HEX", e.to_string()))?;
            let reply = link.transmit(&cmd)?;
            let mut a = reply.data;
            a.extend_from_slice(&reply.status.to_u16().to_be_bytes());
            a
        };
        let (data, sw) = answer.split_at(answer.len() - 2);
        let status = simlab_applet::Status::from_u16(u16::from_be_bytes([sw[0], sw[1]]));
        text.push_str(&format!(
            ">> {}\n<< {}  {}\n",
            spaced(bytes),
            spaced(&answer),
            status.description()
        ));
        answers.push(json!({
            "command": hex::encode(bytes),
            "data": hex::encode(data),
            "sw": hex::encode(sw),
            "status": status.description(),
        }));
    }
    out.result(&text, &json!({ "exchanges": answers }))?;
    Ok(0)
}

/// `card script`: parse, then replay, stopping at the first answer that differs.
fn script_command(
    out: &Output,
    global: &Global,
    file: &Path,
    profile: Option<&Path>,
    given: &[String],
) -> Result<i32> {
    use simlab_card::script::{self, ReplayError, Script};
    let mut given_values: Vec<(String, Vec<u8>)> = Vec::new();
    for g in given {
        let Some((name, value)) = g.split_once('=') else {
            return Err(Error::arg("--secret", "expected NAME=HEX"));
        };
        if !script::is_placeholder(name) {
            return Err(Error::arg(
                "--secret",
                format!(
                    "{name:?} is not a placeholder (ADM1, PIN1, PUK1, PIN2, PUK2, KI, OPC, SECRETn)"
                ),
            ));
        }
        let value = super::secret_arg("--secret", value)?;
        let bytes = hex::decode_secret(&format!("--secret {name}"), &value)?;
        if bytes.is_empty() {
            return Err(Error::arg("--secret", format!("{name} is empty")));
        }
        given_values.push((name.to_string(), bytes));
    }
    let text = std::fs::read_to_string(file).map_err(|source| Error::Io {
        context: format!("reading {}", file.display()),
        source,
    })?;
    let parsed = Script::parse(&text)
        .map_err(|e| Error::arg("FILE.apdu", format!("{}: {e}", file.display())))?;
    let profile = profile.map(Profile::load).transpose()?;
    let secret = |n: &str| {
        given_values
            .iter()
            .find(|(g, _)| g == n)
            .map(|(_, v)| v.clone())
            .or_else(|| profile.as_ref().and_then(|p| script::profile_secret(p, n)))
    };
    if let Some(missing) = parsed.secrets().into_iter().find(|n| secret(n).is_none()) {
        let how = if missing.starts_with(script::UNNAMED_PREFIX) {
            format!("give it with --secret {missing}=HEX")
        } else {
            format!("give a profile that has it, or --secret {missing}=HEX")
        };
        return Err(Error::arg(
            "--profile",
            format!("the script uses ${{{missing}}}: {how}"),
        ));
    }
    let (transport, _) = open_transport(global, out)?;
    let mut link = open_link(transport, global)?;
    match script::replay(&parsed, &mut link, &secret) {
        Ok(done) => {
            out.result(
                &format!("{}: {done}\n", file.display()),
                &json!({
                    "script": file.display().to_string(),
                    "exchanges": done.exchanges,
                    "resets": done.resets,
                    "profile": done.profile,
                    "ok": true,
                }),
            )?;
            Ok(0)
        }
        Err(ReplayError::Mismatch {
            line,
            expected,
            got,
        }) => {
            out.result(
                &format!(
                    "{}:{line}: the card answered differently\n  expected {expected}\n  got      {got}\n",
                    file.display()
                ),
                &json!({
                    "script": file.display().to_string(),
                    "ok": false,
                    "line": line,
                    "expected": expected,
                    "got": got,
                }),
            )?;
            Ok(1)
        }
        Err(ReplayError::MissingSecret { line, name }) => Err(Error::arg(
            "--profile",
            format!("{}:{line}: ${{{name}}} needs a value", file.display()),
        )),
        Err(ReplayError::Transport { source, .. }) => Err(source.into()),
    }
}
