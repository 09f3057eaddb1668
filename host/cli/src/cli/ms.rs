//! `simlab ms enroll`: the mobile station obtains a certificate for its token's key from the
//! gateway (seed 000, messages 210–260), through whichever transport reaches the card.

use super::pki::{
    ClientTlsArgs, STATE_HELP, open_card, open_token, pin_arg, read_imsi, service_url,
};
use super::{Global, Output};
use clap::Subcommand;
use serde_json::json;
use simlab_card::error::{Error, Result};
use simlab_card::hex;
use simlab_services::pki::der::iso8601;
use simlab_services::pki::messages::AuthPath;
use simlab_services::pki::ms::{self, EnrollRequest};
use simlab_services::pki::restrictions::Restrictions;
use simlab_services::pki::x509::Certificate;
use std::path::PathBuf;

#[derive(Subcommand, Debug)]
pub enum MsCommand {
    /// Obtain a certificate for the token's key, bootstrapped from the SIM's authentication.
    #[command(after_help = "\
The token on the subscriber's card runs A3/A8 (gsm path: K from several Kc) or AKA (usim
path: K from CK‖IK) itself, checks the gateway's M1 before it releases anything, computes M2,
and stores the certificate only if M3 is right: Kc, CK, IK and K never leave the card. The
certificate is checked too (the token's key, the restrictions and alias asked for, the
gateway's CA). A forged gateway aborts the enrollment with exit status 1.

The token needs a key: one is generated if it has none (--new-key replaces it).

Example:
  simlab --emulate fixtures/cards/demo-usim.toml ms enroll --gateway https://127.0.0.1:8210 \\
      --ca gw-ca/ca.pem --pin 0000 --sim-pin 1234 --alias alice --limit 2000 --state /tmp/phone.state")]
    Enroll(EnrollArgs),
}

#[derive(clap::Args, Debug)]
pub struct EnrollArgs {
    /// The gateway's URL.
    #[arg(long, value_name = "URL")]
    gateway: String,
    /// The token PIN (4-8 digits; a new token's is 0000).
    #[arg(long, value_name = "PIN")]
    pin: String,
    /// The SIM's PIN1, when it is enabled (the IMSI is protected by it).
    #[arg(long, value_name = "PIN")]
    sim_pin: Option<String>,
    /// Which authentication K comes from.
    #[arg(long, value_enum, default_value = "gsm")]
    path: PathArg,
    /// The name in the certificate's subject (up to 64 bytes; default: none).
    #[arg(long, value_name = "NAME", default_value = "")]
    alias: String,
    /// Restriction: the most one purchase may cost, in minor units.
    #[arg(long, value_name = "AMOUNT", default_value_t = Restrictions::default().per_purchase_limit)]
    limit: u64,
    /// Restriction: the currency (ISO 4217).
    #[arg(long, value_name = "CODE", default_value = "EUR")]
    currency: String,
    /// Restriction: the most purchases per period.
    #[arg(long, value_name = "N", default_value_t = Restrictions::default().max_purchases)]
    max_purchases: u32,
    /// Restriction: the period, in seconds.
    #[arg(long, value_name = "SECONDS", default_value_t = Restrictions::default().period_seconds)]
    period: u64,
    /// Restriction: the certificate's lifetime, in seconds.
    #[arg(long, value_name = "SECONDS", default_value_t = Restrictions::default().validity_seconds)]
    validity: u64,
    /// Generate a new key on the token first (its old certificate goes with the old key).
    #[arg(long)]
    new_key: bool,
    /// The operator's CA certificate (PEM): the gateway's TLS certificate and the issued
    /// certificate must both come from it.
    #[command(flatten)]
    tls: ClientTlsArgs,
    /// Also write the certificate (PEM) to this file.
    #[arg(long, value_name = "FILE")]
    out: Option<PathBuf>,
    #[arg(long, value_name = "FILE", long_help = STATE_HELP, value_parser = crate::cli::file_arg)]
    state: Option<PathBuf>,
}

#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum PathArg {
    Gsm,
    Usim,
}

pub fn run(out: &Output, global: &Global, cmd: &MsCommand) -> Result<i32> {
    let MsCommand::Enroll(a) = cmd;
    // Every argument is checked before the card or the network is touched.
    let client_tls = a.tls.client_tls()?;
    let gateway = service_url(
        "--gateway",
        &a.gateway,
        client_tls.as_ref(),
        a.tls.insecure_http,
    )?;
    let pin = pin_arg("--pin", &a.pin)?;
    let sim_pin = a
        .sim_pin
        .as_deref()
        .map(|p| pin_arg("--sim-pin", p))
        .transpose()?;
    let restrictions = Restrictions {
        per_purchase_limit: a.limit,
        currency: a.currency.clone(),
        max_purchases: a.max_purchases,
        period_seconds: a.period,
        validity_seconds: a.validity,
    };
    restrictions
        .validate()
        .map_err(|e| Error::arg("restrictions", e.to_string()))?;
    if a.alias.len() > simlab_applet::token::bootstrap::ALIAS_MAX
        || a.alias.chars().any(char::is_control)
    {
        return Err(Error::arg("--alias", "at most 64 bytes of printable text"));
    }
    let ca = a
        .tls
        .ca
        .as_ref()
        .map(|p| {
            std::fs::read_to_string(p)
                .map_err(|e| Error::arg("--ca", format!("{}: {e}", p.display())))
                .and_then(|pem| {
                    Certificate::from_pem(&pem).map_err(|e| Error::arg("--ca", e.to_string()))
                })
        })
        .transpose()?;
    let request = EnrollRequest {
        gateway,
        path: match a.path {
            PathArg::Gsm => AuthPath::Gsm,
            PathArg::Usim => AuthPath::Usim,
        },
        restrictions,
        alias: a.alias.clone(),
        ca,
    };

    let card = open_card(out, global, a.state.as_deref())?;
    let imsi = read_imsi(&card, sim_pin.as_ref())?;
    let mut token = open_token(&card, global, Some(&pin))?;
    if a.new_key || token.public_key()?.is_none() {
        token.generate_key(a.new_key)?;
        out.say("generated a P-256 key pair on the token; the private key stays on the card");
    }
    let e = ms::enroll(&mut token, &imsi, &request, &mut |line| out.say(line))?;
    let cert_pem = e.certificate.to_pem();
    if let Some(path) = &a.out {
        std::fs::write(path, &cert_pem).map_err(|source| Error::Io {
            context: format!("writing {}", path.display()),
            source,
        })?;
    }
    let r = e.certificate.restrictions.clone().unwrap_or_default();
    let text = format!(
        "certificate {} for {} (IMSI {}), {}\nvalid {} .. {}\n{}",
        e.certificate.serial_hex(),
        e.certificate.subject_common_name.as_deref().unwrap_or("?"),
        imsi,
        r.describe(),
        iso8601(e.certificate.not_before),
        iso8601(e.certificate.not_after),
        cert_pem
    );
    out.result(
        &text,
        &json!({
            "imsi": imsi,
            "path": e.path.name(),
            "sid": hex::encode(&e.sid),
            "serial": e.certificate.serial_hex(),
            "alias": a.alias,
            "not_before": e.certificate.not_before,
            "not_after": e.certificate.not_after,
            "restrictions": r,
            "resynchronised": e.resynchronised,
            "m1": hex::encode(&e.m1),
            "m2": hex::encode(&e.m2),
            "m3": hex::encode(&e.m3),
            "certificate_pem": cert_pem,
            "gateway_certificate_pem": e.gateway_certificate.to_pem(),
            "public_key_pem": e.public_key.to_pem(),
        }),
    )?;
    Ok(0)
}
