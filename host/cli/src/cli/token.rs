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
  openssl dgst -sha256 -verify pub.pem -signature sig.der data.bin")]
    Sign {
        /// The data to sign, in hex.
        #[arg(long, value_name = "HEX")]
        data: String,
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
            data,
            pin,
            out: file,
            ..
        } => {
            let data = hex::decode("--data", data)?;
            if data.is_empty() {
                return Err(Error::arg("--data", "nothing to sign"));
            }
            let pin = super::card::pin_arg("--pin", pin)?;
            let mut token = open(out, global, cmd.state())?;
            unlock(&mut token, &pin)?;
            let signature = token.sign(&data)?;
            let key = token.public_key()?;
            if let Some(path) = file {
                std::fs::write(path, &signature).map_err(|source| Error::Io {
                    context: format!("writing signature to {}", path.display()),
                    source,
                })?;
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
