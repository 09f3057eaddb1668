//! `simlab token …`: the secure-token applet — a P-256 key that never leaves the card, its PIN,
//! and the certificate a bootstrap stored — through whichever transport the global options
//! name (`--emulate`, `--reader`, later `--serial`).

use super::card::open_link;
use super::{Global, Output};
use clap::Subcommand;
use serde_json::json;
use simlab_applet::chv::PIN_LEN;
use simlab_card::error::{Error, Result};
use simlab_card::hex;
use simlab_card::token::request::SignRequest;
use simlab_card::token::{PinOutcome, TokenSession};
use std::path::PathBuf;

const STATE_HELP: &str = "\
With --emulate, the emulated card forgets everything when the command ends; --state FILE keeps
its memory (the token's key, PIN counter and certificate) across runs, as `emulate card --state`
does. The file holds the card's secrets and is written with mode 0600.";

#[derive(Subcommand, Debug)]
pub enum TokenCommand {
    /// Generate the token's P-256 key pair on the card; prints the public key (PEM).
    #[command(after_help = "\
The token refuses to replace an existing key unless --force is given; a replaced key takes its
certificate with it. The PIN of a new token is 0000 (see `simlab token change-pin`).

Example:
  simlab --emulate fixtures/cards/usim-milenage.toml token keygen --pin 0000 --state /tmp/t.state")]
    Keygen {
        /// Verify the token PIN first (the card refuses key generation without it).
        #[arg(long, value_name = "PIN")]
        pin: Option<String>,
        /// Replace an existing key (and drop its certificate).
        #[arg(long)]
        force: bool,
        #[command(flatten)]
        state: StateArg,
    },
    /// Print the token's public key (PEM SubjectPublicKeyInfo, as openssl reads it).
    Pubkey {
        #[command(flatten)]
        state: StateArg,
    },
    /// Sign data on the card: ECDSA P-256 over SHA-256 of the data, DER signature.
    #[command(after_help = "\
The card hashes the data itself (it signs what it is shown); data longer than 255 bytes goes by
command chaining. Check a signature with:
  simlab … token pubkey > pub.pem
  openssl dgst -sha256 -verify pub.pem -signature sig.der data.bin

--request FILE signs a seed-002 signature request (simlab-sign-request-v1, the bytes a sign
server prepares) with SIGN REQUEST: simlab decodes the file first, with the decoder the token
runs, and prints what it says — server, user, amount, summary, correlator (compare it with the
one on the PC's page), expiry — then the token decodes the same bytes again and signs them only
if they are a request. A token with a console (the firmware) shows them too and waits for its
button. A file that is not a request is refused (exit 2) before anything goes to the card. The
signature is over exactly the file's bytes:
  simlab … token sign --request req.bin --pin 0000 --out sig.der
  openssl dgst -sha256 -verify pub.pem -signature sig.der req.bin")]
    Sign {
        /// The data to sign, in hex.
        #[arg(
            long,
            value_name = "HEX",
            required_unless_present = "request",
            conflicts_with = "request"
        )]
        data: Option<String>,
        /// A simlab-sign-request-v1 file to show and sign (instead of --data).
        #[arg(long, value_name = "FILE")]
        request: Option<PathBuf>,
        /// The token PIN: 4-8 digits.
        #[arg(long, value_name = "PIN")]
        pin: String,
        /// Also write the DER signature to this file.
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
        #[command(flatten)]
        state: StateArg,
    },
    /// Verify the token PIN; a wrong PIN spends a try, and the token tells how many remain.
    VerifyPin {
        /// The PIN: 4-8 digits.
        #[arg(long, value_name = "PIN")]
        pin: String,
        #[command(flatten)]
        state: StateArg,
    },
    /// Change the token PIN (the old one must be right; a wrong one spends a try).
    ChangePin {
        /// The current PIN.
        #[arg(long, value_name = "PIN")]
        pin: String,
        /// The new PIN: 4-8 digits.
        #[arg(long, value_name = "PIN")]
        new_pin: String,
        #[command(flatten)]
        state: StateArg,
    },
    /// Whether the token has a key and a certificate, and its PIN counter (spends no try).
    Info {
        #[command(flatten)]
        state: StateArg,
    },
    /// Print the certificate a bootstrap stored on the token (PEM).
    Certificate {
        #[command(flatten)]
        state: StateArg,
    },
}

/// `--state FILE` for the emulated card.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct StateArg {
    /// With --emulate: keep the emulated card's memory in FILE across runs (created if missing).
    #[arg(long, value_name = "FILE", long_help = STATE_HELP, value_parser = crate::cli::file_arg)]
    pub state: Option<PathBuf>,
}

impl TokenCommand {
    fn state(&self) -> &StateArg {
        match self {
            TokenCommand::Keygen { state, .. }
            | TokenCommand::Pubkey { state }
            | TokenCommand::Sign { state, .. }
            | TokenCommand::VerifyPin { state, .. }
            | TokenCommand::ChangePin { state, .. }
            | TokenCommand::Info { state }
            | TokenCommand::Certificate { state } => state,
        }
    }
}

fn open(out: &Output, global: &Global, state: &StateArg) -> Result<TokenSession> {
    let transport = super::card::open_transport_stateful(global, out, state.state.as_deref())?;
    TokenSession::open(open_link(transport, global)?)
}

/// Verifies the PIN, turning a wrong or blocked one into an error that says how many tries
/// are left.
fn unlock(token: &mut TokenSession, pin: &[u8; PIN_LEN]) -> Result<()> {
    match token.verify_pin(pin)? {
        PinOutcome::Verified => Ok(()),
        other => Err(pin_error(other)),
    }
}

fn write_signature(path: &std::path::Path, signature: &[u8]) -> Result<()> {
    std::fs::write(path, signature).map_err(|source| Error::Io {
        context: format!("writing signature to {}", path.display()),
        source,
    })
}

/// Unix seconds as RFC 3339 UTC.
fn utc(secs: u64) -> String {
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (y, m, d) = simlab_card::trace::civil_from_days(days as i64);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

/// A request's display fields, one per line, as the person checks them.
fn request_text(req: &SignRequest<'_>) -> String {
    format!(
        "server:     {}\nuser:       {}\namount:     {}\nsummary:    {}\ncorrelator: {}\nexpires:    {}\n",
        req.server_id,
        req.user_id,
        req.amount_display(),
        req.summary,
        req.correlator_str(),
        utc(req.expires_at),
    )
}

/// The same fields for scripts: amounts in minor units, hex in lower case.
fn request_json(req: &SignRequest<'_>) -> serde_json::Value {
    json!({
        "server_id": req.server_id,
        "tx_id": hex::encode(&req.tx_id),
        "user_id": req.user_id,
        "amount": req.amount,
        "currency": req.currency_str(),
        "amount_text": req.amount_display().to_string(),
        "summary": req.summary,
        "content_hash": hex::encode(&req.content_hash),
        "correlator": req.correlator_str(),
        "issued_at": req.issued_at,
        "expires_at": req.expires_at,
        "expires_at_utc": utc(req.expires_at),
    })
}

fn pin_error(outcome: PinOutcome) -> Error {
    Error::Mismatch {
        what: match outcome {
            PinOutcome::Wrong { tries_left } => {
                format!("wrong token PIN, {tries_left} tries left")
            }
            PinOutcome::Blocked => "the token PIN is blocked".into(),
            PinOutcome::Verified => "token PIN verified".into(),
        },
    }
}

pub fn run(out: &Output, global: &Global, cmd: &TokenCommand) -> Result<i32> {
    // Every argument is checked before the card is touched.
    match cmd {
        TokenCommand::Keygen { pin, force, .. } => {
            let pin = pin
                .as_deref()
                .map(|p| super::card::pin_arg("--pin", p))
                .transpose()?;
            let mut token = open(out, global, cmd.state())?;
            if let Some(pin) = &pin {
                unlock(&mut token, pin)?;
            }
            let key = token.generate_key(*force)?;
            let pem = key.to_pem();
            out.say("generated a P-256 key pair on the token; the private key stays on the card");
            out.result(
                &pem,
                &json!({ "public_key_pem": pem, "public_key": hex::encode(&key.0) }),
            )?;
            Ok(0)
        }
        TokenCommand::Pubkey { .. } => {
            let mut token = open(out, global, cmd.state())?;
            let key = token.public_key()?.ok_or_else(|| Error::Mismatch {
                what: "the token has no key yet (run `simlab token keygen`)".into(),
            })?;
            let pem = key.to_pem();
            out.result(
                &pem,
                &json!({ "public_key_pem": pem, "public_key": hex::encode(&key.0) }),
            )?;
            Ok(0)
        }
        TokenCommand::Sign {
            request: Some(path),
            pin,
            out: file,
            ..
        } => {
            let bytes = std::fs::read(path).map_err(|e| {
                Error::arg("--request", format!("cannot read {}: {e}", path.display()))
            })?;
            let req = SignRequest::decode(&bytes).map_err(|e| {
                Error::arg(
                    "--request",
                    format!("{} is not a simlab-sign-request-v1: {e}", path.display()),
                )
            })?;
            let pin = super::card::pin_arg("--pin", pin)?;
            if !out.json() {
                // What is about to be signed, before the card is asked.
                print!("{}", request_text(&req));
                let _ = std::io::Write::flush(&mut std::io::stdout());
            }
            let mut token = open(out, global, cmd.state())?;
            unlock(&mut token, &pin)?;
            let signature = token.sign_request(&bytes)?;
            let key = token.public_key()?;
            if let Some(path) = file {
                write_signature(path, &signature)?;
            }
            let mut value = request_json(&req);
            value["signature_der"] = json!(hex::encode(&signature));
            value["request_len"] = json!(bytes.len());
            value["public_key_pem"] = json!(key.map(|k| k.to_pem()));
            out.result(
                &format!("signature:  {}\n", hex::encode(&signature)),
                &value,
            )?;
            Ok(0)
        }
        TokenCommand::Sign {
            data,
            pin,
            out: file,
            ..
        } => {
            let data = hex::decode("--data", data.as_deref().unwrap_or_default())?;
            if data.is_empty() {
                return Err(Error::arg("--data", "nothing to sign"));
            }
            let pin = super::card::pin_arg("--pin", pin)?;
            let mut token = open(out, global, cmd.state())?;
            unlock(&mut token, &pin)?;
            let signature = token.sign(&data)?;
            let key = token.public_key()?;
            if let Some(path) = file {
                write_signature(path, &signature)?;
            }
            out.result(
                &format!("{}\n", hex::encode(&signature)),
                &json!({
                    "signature_der": hex::encode(&signature),
                    "data_len": data.len(),
                    "public_key_pem": key.map(|k| k.to_pem()),
                }),
            )?;
            Ok(0)
        }
        TokenCommand::VerifyPin { pin, .. } => {
            let pin = super::card::pin_arg("--pin", pin)?;
            let mut token = open(out, global, cmd.state())?;
            let outcome = token.verify_pin(&pin)?;
            let (verified, tries, text) = match outcome {
                PinOutcome::Verified => (true, None, "token PIN verified\n".to_string()),
                PinOutcome::Wrong { tries_left } => (
                    false,
                    Some(tries_left),
                    format!("wrong token PIN, {tries_left} tries left\n"),
                ),
                PinOutcome::Blocked => (false, Some(0), "the token PIN is blocked\n".into()),
            };
            out.result(&text, &json!({ "verified": verified, "tries_left": tries }))?;
            Ok(if verified { 0 } else { 1 })
        }
        TokenCommand::ChangePin { pin, new_pin, .. } => {
            let old = super::card::pin_arg("--pin", pin)?;
            let new = super::card::pin_arg("--new-pin", new_pin)?;
            let mut token = open(out, global, cmd.state())?;
            match token.change_pin(&old, &new)? {
                PinOutcome::Verified => {
                    out.result("token PIN changed\n", &json!({ "changed": true }))?;
                    Ok(0)
                }
                other => Err(pin_error(other)),
            }
        }
        TokenCommand::Info { .. } => {
            let mut token = open(out, global, cmd.state())?;
            let info = token.info()?;
            let text = format!(
                "key:          {}\ncertificate:  {}\nPIN:          {} of {} tries left\n",
                if info.has_key { "yes" } else { "none" },
                match info.certificate_len {
                    0 => "none".to_string(),
                    n => format!("{n} bytes"),
                },
                info.pin_tries_left,
                info.pin_max_tries,
            );
            out.result(
                &text,
                &json!({
                    "key": info.has_key,
                    "seeded": info.seeded,
                    "certificate_len": info.certificate_len,
                    "pin_tries_left": info.pin_tries_left,
                    "pin_max_tries": info.pin_max_tries,
                }),
            )?;
            Ok(0)
        }
        TokenCommand::Certificate { .. } => {
            let mut token = open(out, global, cmd.state())?;
            let cert = token.certificate()?.ok_or_else(|| Error::Mismatch {
                what: "no certificate on the token (a bootstrap stores one)".into(),
            })?;
            let pem = simlab_services::pki::der::pem_encode("CERTIFICATE", &cert);
            out.result(
                &pem,
                &json!({ "certificate_pem": pem, "certificate_der": hex::encode(&cert) }),
            )?;
            Ok(0)
        }
    }
}
