//! `simlab seller …`: the seller of seed 000 — sells to certificate holders (messages
//! 610–640), keeps accounting records, and bills them through the gateway in batches
//! (910/920).

use super::pki::{ServeTlsArgs, serve, service_url, tls_required};
use super::{Global, Output};
use clap::Subcommand;
use serde_json::json;
use simlab_card::error::{Error, Result};
use simlab_services::http::Role;
use simlab_services::http::client::{self, Url};
use simlab_services::http::server::Limits;
use simlab_services::http::tls::{CA_FILE, ClientTls, ServerTls};
use simlab_services::pki::invoice::valid_id;
use simlab_services::pki::messages::{CaResponse, CatalogueItem, SubmitReport};
use simlab_services::pki::restrictions::money;
use simlab_services::pki::seller::billing::{self, DEFAULT_BATCH};
use simlab_services::pki::seller::sales::SalesDb;
use simlab_services::pki::seller::{Seller, SellerConfig, default_catalogue, sale_json};
use simlab_services::pki::x509::Certificate;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// Where the seller listens unless told otherwise (610: the first message it answers).
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8610";

#[derive(Subcommand, Debug)]
pub enum SellerCommand {
    /// Sell over HTTP (610–640) and bill through the gateway (910/920).
    #[command(after_help = "\
Before invoicing, the seller checks the buyer's certificate against the gateway's CA (fetched
from the gateway at start unless --ca names it), asks the gateway whether it is still valid,
and checks the price against the certificate's restrictions. Before delivering it checks the
signature over the invoice it issued. Paid sales are accounting records; they go to the
gateway every --submit-every seconds, on POST /v1/billing/submit, or with `simlab seller
submit`.

Example:
  simlab gateway add-seller --db gw.sqlite --seller-id cafe-1
  simlab gateway issue --ca-dir gw-ca --role seller --name cafe-1 --out cafe-tls
  simlab seller serve --db cafe.sqlite --gateway https://127.0.0.1:8210 --seller-id cafe-1 \\
      --tls cafe-tls --item coffee=350 --item cake=420")]
    Serve {
        /// The seller's database (SQLite).
        #[arg(long, value_name = "FILE")]
        db: PathBuf,
        /// The gateway's URL.
        #[arg(long, value_name = "URL")]
        gateway: String,
        /// The id the gateway registered this seller under (`simlab gateway add-seller`).
        #[arg(long, value_name = "ID")]
        seller_id: String,
        /// HOST:PORT to listen on (port 0 picks a free one; the first line printed says which).
        #[arg(long, value_name = "HOST:PORT", default_value = DEFAULT_LISTEN)]
        listen: String,
        /// An item for sale, NAME=PRICE in minor units; repeat for several (default: coffee,
        /// sandwich, flowers, ticket).
        #[arg(long = "item", value_name = "NAME=PRICE")]
        items: Vec<String>,
        /// The currency of the prices (ISO 4217).
        #[arg(long, value_name = "CODE", default_value = "EUR")]
        currency: String,
        /// Bill every this many seconds (0: only when asked).
        #[arg(long, value_name = "SECONDS", default_value_t = 0)]
        submit_every: u64,
        /// Accounting records per 910 message.
        #[arg(long, value_name = "N", default_value_t = DEFAULT_BATCH)]
        batch_size: usize,
        /// The CA that certifies buyers (PEM); default: the ca.pem of the --tls identity
        /// (with --insecure-http: fetched from the gateway).
        #[arg(long, value_name = "FILE")]
        ca: Option<PathBuf>,
        /// The seller's identity (`simlab gateway issue --role seller --name ID`): it serves
        /// buyers with it and presents it to the gateway (mutual TLS).
        #[command(flatten)]
        tls: ServeTlsArgs,
    },
    /// Bill what waits now (910/920) and report each record's fate.
    Submit {
        #[arg(long, value_name = "FILE")]
        db: PathBuf,
        #[arg(long, value_name = "URL")]
        gateway: String,
        #[arg(long, value_name = "ID")]
        seller_id: String,
        #[arg(long, value_name = "N", default_value_t = DEFAULT_BATCH)]
        batch_size: usize,
        /// The seller's identity, presented to the gateway (mutual TLS).
        #[command(flatten)]
        tls: ServeTlsArgs,
    },
    /// List the sales and their billing state.
    Sales {
        #[arg(long, value_name = "FILE")]
        db: PathBuf,
    },
}

fn catalogue(items: &[String], currency: &str) -> Result<Vec<CatalogueItem>> {
    if currency.len() != 3 || !currency.bytes().all(|b| b.is_ascii_uppercase()) {
        return Err(Error::arg(
            "--currency",
            "three upper-case letters (ISO 4217)",
        ));
    }
    if items.is_empty() {
        return Ok(default_catalogue(currency));
    }
    let mut out: Vec<CatalogueItem> = Vec::new();
    for spec in items {
        let bad = || {
            Error::arg(
                "--item",
                format!("{spec:?}: expected NAME=PRICE, price in minor units"),
            )
        };
        let (name, price) = spec.split_once('=').ok_or_else(bad)?;
        let price: u64 = price.trim().parse().map_err(|_| bad())?;
        let name = name.trim();
        if name.is_empty() || name.len() > simlab_services::pki::invoice::ITEM_MAX || price == 0 {
            return Err(bad());
        }
        if out.iter().any(|i| i.name == name) {
            return Err(Error::arg("--item", format!("{name:?} given twice")));
        }
        out.push(CatalogueItem {
            name: name.to_string(),
            price,
            currency: currency.to_string(),
        });
    }
    Ok(out)
}

fn open(db: &Path) -> Result<SalesDb> {
    SalesDb::open(db).map_err(|e| Error::arg("--db", e.to_string()))
}

fn seller_id_arg(id: &str) -> Result<()> {
    if valid_id(id) {
        Ok(())
    } else {
        Err(Error::arg(
            "--seller-id",
            "1-64 characters of A-Z a-z 0-9 . _ -",
        ))
    }
}

/// The gateway's URL with the seller's identity on the link, and the seller's own server TLS.
/// The identity must be a seller's, for this seller id: the gateway would refuse any other.
fn gateway_link(
    gateway: &str,
    seller_id: &str,
    tls: &ServeTlsArgs,
) -> Result<(Url, Option<ServerTls>)> {
    let client = match &tls.tls {
        Some(dir) => {
            let client = ClientTls::mutual(dir).map_err(|e| Error::arg("--tls", e.to_string()))?;
            match client.identity.as_ref().and_then(|i| i.peer()) {
                Some(peer) if peer.role == Role::Seller && peer.name == seller_id => {}
                Some(peer) => {
                    return Err(Error::arg(
                        "--tls",
                        format!(
                            "the certificate is for {} {:?}, not seller {seller_id:?}",
                            peer.role.as_str(),
                            peer.name
                        ),
                    ));
                }
                None => return Err(Error::arg("--tls", "the certificate names no role")),
            }
            Some(client)
        }
        None => None,
    };
    let url = service_url("--gateway", gateway, client.as_ref(), tls.insecure_http)?;
    let server = tls.server_tls(tls_required)?;
    Ok((url, server))
}

/// The gateway's CA certificate: from a file, or from the gateway itself.
fn ca(gateway: &Url, file: Option<&Path>) -> Result<Certificate> {
    let pem = match file {
        Some(path) => std::fs::read_to_string(path)
            .map_err(|e| Error::arg("--ca", format!("{}: {e}", path.display())))?,
        None => {
            let answer: CaResponse =
                client::get_json(gateway, "/v1/ca").map_err(|e| Error::Mismatch {
                    what: format!("cannot fetch the gateway's CA certificate: {e}"),
                })?;
            answer.certificate_pem
        }
    };
    let cert = Certificate::from_pem(&pem).map_err(|e| Error::arg("--ca", e.to_string()))?;
    if !cert.is_ca || cert.check_issued_by(&cert).is_err() {
        return Err(Error::arg("--ca", "not a self-signed CA certificate"));
    }
    Ok(cert)
}

/// Prints a billing run.
pub fn report_text(r: &SubmitReport) -> String {
    let mut text = format!(
        "{} record(s) in {} batch(es): {} billed, {} billed before, {} rejected, {} pending\n",
        r.submitted, r.batches, r.accepted, r.billed_before, r.rejected, r.pending
    );
    for x in &r.results {
        text.push_str(&format!(
            "  {:<28} {}\n",
            x.transaction_id,
            match (&x.reason, &x.detail) {
                (None, _) => "billed".to_string(),
                (Some(reason), Some(d)) => format!("{}: {d}", reason.name()),
                (Some(reason), None) => reason.name().to_string(),
            }
        ));
    }
    text
}

pub fn run(out: &Output, _global: &Global, cmd: &SellerCommand) -> Result<i32> {
    match cmd {
        SellerCommand::Serve {
            db,
            gateway,
            seller_id,
            listen,
            items,
            currency,
            submit_every,
            batch_size,
            ca: ca_file,
            tls,
        } => {
            seller_id_arg(seller_id)?;
            let (gateway, server_tls) = gateway_link(gateway, seller_id, tls)?;
            let catalogue = catalogue(items, currency)?;
            let sales = open(db)?;
            let ca_file = ca_file
                .clone()
                .or_else(|| tls.tls.as_ref().map(|d| d.join(CA_FILE)));
            let ca = ca(&gateway, ca_file.as_deref())?;
            for i in &catalogue {
                out.detail(&format!(
                    "seller: {} at {}",
                    i.name,
                    money(i.price, &i.currency)
                ));
            }
            let seller = Arc::new(Seller::new(
                SellerConfig {
                    seller_id: seller_id.clone(),
                    gateway: gateway.clone(),
                    catalogue,
                    batch_size: (*batch_size).max(1),
                },
                ca,
                sales,
            ));
            if *submit_every > 0 {
                let s = seller.clone();
                let every = Duration::from_secs(*submit_every);
                std::thread::spawn(move || {
                    loop {
                        std::thread::sleep(every);
                        match billing::submit(
                            &s.db,
                            &s.config.gateway,
                            &s.config.seller_id,
                            s.config.batch_size,
                        ) {
                            Ok(r) if r.submitted > 0 => {
                                tracing::info!("billing: {}", report_text(&r).trim_end())
                            }
                            Ok(_) => {}
                            Err(e) => tracing::warn!("billing: {e}"),
                        }
                    }
                });
            }
            serve(
                out,
                "seller",
                listen,
                Limits::default(),
                Arc::new(move |req| seller.handle(req)),
                server_tls,
            )
        }
        SellerCommand::Submit {
            db,
            gateway,
            seller_id,
            batch_size,
            tls,
        } => {
            seller_id_arg(seller_id)?;
            let (gateway, _) = gateway_link(gateway, seller_id, tls)?;
            let sales = std::sync::Mutex::new(open(db)?);
            let report = billing::submit(&sales, &gateway, seller_id, (*batch_size).max(1))
                .map_err(|what| Error::Mismatch { what })?;
            out.result(&report_text(&report), &json!(report))?;
            Ok(if report.rejected > 0 { 1 } else { 0 })
        }
        SellerCommand::Sales { db } => {
            let sales = open(db)?
                .sales(None)
                .map_err(|e| Error::arg("--db", e.to_string()))?;
            let mut text = String::new();
            for s in &sales {
                text.push_str(&format!(
                    "{:<28} {:<10} {:>12}  {}{}\n",
                    s.transaction_id,
                    s.item,
                    money(s.amount, &s.currency),
                    s.state.name(),
                    s.reason
                        .as_ref()
                        .map(|r| format!(" ({r})"))
                        .unwrap_or_default()
                ));
            }
            let rows: Vec<_> = sales.iter().map(sale_json).collect();
            out.result(&text, &json!(rows))?;
            Ok(0)
        }
    }
}
