//! `simlab roam shop`: the phone abroad (seed 001). It plays the browser — checkout at the
//! content provider, the redirect to the home server, the contract shown decoded from its
//! bytes — and the token, which signs those bytes after its PIN, over any transport.

use super::pki::{STATE_HELP, open_card, open_token, pin_arg};
use super::{Global, Output};
use clap::Subcommand;
use serde_json::json;
use simlab_card::error::{Error, Result};
use simlab_services::bytes::hex;
use simlab_services::http::client::Url;
use simlab_services::http::tls::ClientTls;
use simlab_services::pki::restrictions::money;
use simlab_services::roaming::shop::{Order, shop};
use simlab_services::roaming::{RequestType, check_method};
use std::path::PathBuf;

#[derive(Subcommand, Debug)]
pub enum RoamCommand {
    /// Check out at a content provider abroad and approve at the home server with the token.
    #[command(after_help = "\
The contract is fetched from the home server the shop redirects to (it must be HTTPS with a
certificate from --ca) and decoded from the bytes the token will sign; it must say what was
asked for (number, request type, amount, currency, description) or nothing is signed. A wrong
PIN is reported to the home server as a failure (the token's status word, e.g. 63C2, is
shown). Exit status 1 when the home server or the shop refuses.

Example:
  simlab --emulate fixtures/cards/demo-usim.toml roam shop --cp https://127.0.0.1:8710 \\
      --ca roam-ca/ca.pem --msisdn +4791234567 --request-type payment --amount 12900 \\
      --currency SEK --description 'Concert ticket' --pin 0000 --state phone.state")]
    Shop(ShopArgs),
}

#[derive(clap::Args, Debug)]
pub struct ShopArgs {
    /// The content provider's shop front.
    #[arg(long, value_name = "URL")]
    cp: String,
    /// The roaming CA (PEM): the shop's and the home server's certificates must come from it.
    #[arg(long, value_name = "FILE", value_parser = crate::cli::file_arg)]
    ca: PathBuf,
    /// This phone's number (E.164).
    #[arg(long, value_name = "NUMBER")]
    msisdn: String,
    /// payment, authentication, digital_signature, e2e_signature or new_service.
    #[arg(long, value_name = "TYPE", value_parser = request_type)]
    request_type: RequestType,
    /// Minor units (payments).
    #[arg(long, value_name = "AMOUNT", default_value_t = 0)]
    amount: u64,
    #[arg(long, value_name = "CODE", default_value = "EUR")]
    currency: String,
    #[arg(long, value_name = "TEXT", default_value = "")]
    description: String,
    /// The payment method to choose (default: the first one offered).
    #[arg(long, value_name = "NAME")]
    payment_method: Option<String>,
    /// The token PIN that approves the signature.
    #[arg(long, value_name = "PIN")]
    pin: String,
    /// Also write the end-to-end CMS (DER) here.
    #[arg(long, value_name = "FILE")]
    save_cms: Option<PathBuf>,
    #[arg(long, value_name = "FILE", long_help = STATE_HELP, value_parser = crate::cli::file_arg)]
    state: Option<PathBuf>,
    /// Fault injection for the tests: sign the contract with the amount plus one.
    #[cfg(feature = "test-faults")]
    #[arg(long, hide = true)]
    sign_amount_plus_one: bool,
}

fn request_type(s: &str) -> std::result::Result<RequestType, String> {
    RequestType::parse(s)
        .ok_or_else(|| format!("one of {}", RequestType::ALL.map(|t| t.as_str()).join(", ")))
}

pub fn run(out: &Output, global: &Global, cmd: &RoamCommand) -> Result<i32> {
    let RoamCommand::Shop(a) = cmd;
    let trust = ClientTls::pinned(&a.ca).map_err(|e| Error::arg("--ca", e.to_string()))?;
    let cp = Url::parse(&a.cp).map_err(|e| Error::arg("--cp", e.to_string()))?;
    if cp.is_plain() {
        return Err(Error::arg("--cp", "the shop is reached over https:// only"));
    }
    let cp = cp.with_tls(&trust);
    simlab_services::router::digits(&a.msisdn)
        .map_err(|e| Error::arg("--msisdn", e.to_string()))?;
    simlab_services::roaming::messages::check_currency(&a.currency)
        .map_err(|e| Error::arg("--currency", e))?;
    if let Some(m) = &a.payment_method {
        check_method(m).map_err(|e| Error::arg("--payment-method", e))?;
    }
    let pin = pin_arg("--pin", &a.pin)?;
    #[cfg(feature = "test-faults")]
    let sign_amount_plus_one = a.sign_amount_plus_one;
    #[cfg(not(feature = "test-faults"))]
    let sign_amount_plus_one = false;
    let order = Order {
        msisdn: a.msisdn.clone(),
        request_type: a.request_type,
        amount: a.amount,
        currency: a.currency.clone(),
        description: a.description.clone(),
        payment_method: a.payment_method.clone(),
        sign_amount_plus_one,
    };
    let card = open_card(out, global, a.state.as_deref())?;
    let mut token = open_token(&card, global, None)?;
    let o = shop(&cp, &trust, &mut token, &pin, &order, &mut |line| {
        out.say(line)
    })?;
    let outcome = o
        .home
        .get("outcome")
        .and_then(|v| v.as_str())
        .unwrap_or("unknown")
        .to_string();
    let cp_status =
        o.cp.get("status")
            .and_then(|v| v.as_str())
            .unwrap_or("unknown")
            .to_string();
    if let (Some(path), Some(cms)) = (
        &a.save_cms,
        o.home.get("cms_der_hex").and_then(|v| v.as_str()),
    ) {
        let der = simlab_services::bytes::unhex(cms).unwrap_or_default();
        std::fs::write(path, der).map_err(|source| Error::Io {
            context: format!("writing {}", path.display()),
            source,
        })?;
    }
    let mut text = format!(
        "{} for {}: {outcome}; the content provider says {cp_status}\n",
        o.contract.request_type, o.contract.cp_id
    );
    if o.contract.request_type == RequestType::Payment {
        text.push_str(&format!(
            "amount {}\n",
            money(o.contract.amount, &o.contract.currency)
        ));
    }
    out.result(
        &text,
        &json!({
            "contract_id": o.contract.id_hex(),
            "contract": o.contract,
            "contract_hex": hex(&o.contract_bytes),
            "pin_status": o.pin_status,
            "outcome": outcome,
            "home": o.home,
            "cp": o.cp,
        }),
    )?;
    let done = matches!(cp_status.as_str(), "success" | "paid");
    Ok(if outcome == "success" && o.pin_status.is_none() && done {
        0
    } else {
        1
    })
}
