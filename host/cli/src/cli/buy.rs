//! `simlab buy`: the mobile station buys from a seller with the certificate on its token
//! (seed 000, messages 610–640): it checks the invoice, the token signs it after its PIN.

use super::pki::{ClientTlsArgs, STATE_HELP, open_card, open_token, pin_arg, service_url};
use super::{Global, Output};
use serde_json::json;
use simlab_card::error::{Error, Result};
use simlab_card::hex;
use simlab_services::pki::buyer::{self, BuyRequest};
use simlab_services::pki::restrictions::money;
use std::path::PathBuf;

#[derive(clap::Args, Debug)]
#[command(after_help = "\
The invoice is checked before anything is signed: the bytes to sign must say what the seller
said (seller, transaction, item, amount), name this token's certificate, stay within its
restrictions and within --max-amount. Only then is the token PIN verified and the invoice
signed. A refused invoice exits with status 1, and nothing was signed.

Example:
  simlab --emulate fixtures/cards/demo-usim.toml buy --seller https://127.0.0.1:8610 \\
      --ca gw-ca/ca.pem --item coffee --pin 0000 --max-amount 500 --state /tmp/phone.state")]
pub struct BuyArgs {
    /// The seller's URL.
    #[arg(long, value_name = "URL")]
    seller: String,
    /// What to buy (see the seller's GET /v1/catalogue).
    #[arg(long, value_name = "NAME")]
    item: String,
    /// The token PIN that approves the signature.
    #[arg(long, value_name = "PIN")]
    pin: String,
    /// The most you agree to pay, in minor units (default: up to the certificate's limit).
    #[arg(long, value_name = "AMOUNT")]
    max_amount: Option<u64>,
    /// Also write the signed invoice bytes and the DER signature here (FILE.bin, FILE.sig).
    #[arg(long, value_name = "FILE")]
    save: Option<PathBuf>,
    #[arg(long, value_name = "FILE", long_help = STATE_HELP, value_parser = crate::cli::file_arg)]
    state: Option<PathBuf>,
    /// The operator's CA certificate (PEM): the seller's TLS certificate must come from it.
    #[command(flatten)]
    tls: ClientTlsArgs,
}

pub fn run(out: &Output, global: &Global, a: &BuyArgs) -> Result<i32> {
    let request = BuyRequest {
        seller: service_url(
            "--seller",
            &a.seller,
            a.tls.client_tls()?.as_ref(),
            a.tls.insecure_http,
        )?,
        item: a.item.clone(),
        max_amount: a.max_amount,
    };
    if a.item.is_empty() {
        return Err(Error::arg("--item", "name an item"));
    }
    let pin = pin_arg("--pin", &a.pin)?;
    let card = open_card(out, global, a.state.as_deref())?;
    let mut token = open_token(&card, global, None)?;
    let p = buyer::buy(&mut token, &pin, &request, &mut |line| out.say(line))?;
    if let Some(base) = &a.save {
        for (ext, bytes) in [("bin", &p.invoice_bytes), ("sig", &p.signature)] {
            let path = base.with_extension(ext);
            std::fs::write(&path, bytes).map_err(|source| Error::Io {
                context: format!("writing {}", path.display()),
                source,
            })?;
        }
    }
    let text = format!(
        "bought {} from {} for {} (transaction {})\n{}\n",
        p.invoice.item,
        p.invoice.seller_id,
        money(p.invoice.amount, &p.invoice.currency),
        p.invoice.transaction_id,
        p.delivery.delivery
    );
    let public_key_pem = simlab_services::pki::der::pem_encode(
        "PUBLIC KEY",
        &simlab_services::pki::x509::spki(&p.certificate.public_key),
    );
    out.result(
        &text,
        &json!({
            "transaction_id": p.invoice.transaction_id,
            "seller_id": p.invoice.seller_id,
            "item": p.invoice.item,
            "amount": p.invoice.amount,
            "currency": p.invoice.currency,
            "issued_at": p.invoice.issued_at,
            "serial": p.certificate.serial_hex(),
            "invoice_hex": hex::encode(&p.invoice_bytes),
            "signature_der_hex": hex::encode(&p.signature),
            "public_key_pem": public_key_pem,
            "certificate_pem": p.certificate.to_pem(),
            "delivery": p.delivery.delivery,
        }),
    )?;
    Ok(0)
}
