//! `simlab gateway …`: the gateway of seed 000 — certificates from GSM/UMTS authentication
//! (messages 210–260), online validity checks, and billing (910/920) — plus the operator's
//! tools on its database: registering sellers, revoking certificates, reading CDRs.

use super::pki::{serve, url_arg};
use super::{Global, Output};
use clap::Subcommand;
use serde_json::json;
use simlab_card::error::{Error, Result};
use simlab_card::hex;
use simlab_services::http::server::Limits;
use simlab_services::pki::der::iso8601;
use simlab_services::pki::gateway::ca::Ca;
use simlab_services::pki::gateway::store::{self, Pool, RevokeOutcome, StoreError};
use simlab_services::pki::gateway::{self, Gateway, GatewayConfig};
use simlab_services::pki::invoice::valid_id;
use simlab_services::pki::restrictions::money;
use std::path::PathBuf;
use std::sync::Arc;

/// Where the gateway listens unless told otherwise (210: the first message it answers).
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8210";
/// The largest request body: a 910 of 10 000 records is about 6 MB.
const MAX_BODY: usize = 16 * 1024 * 1024;

const DB_HELP: &str = "The gateway's database: an SQLite file (created with mode 0600), or \
postgres://USER@HOST:PORT/DB for PostgreSQL (a Unix socket directory goes percent-encoded in \
the host part: postgres://postgres@%2Ftmp%2Fpg:5432/postgres). Several gateway processes may \
share one PostgreSQL database (and one --ca-dir).";

#[derive(Subcommand, Debug)]
pub enum GatewayCommand {
    /// Serve the gateway over HTTP: bootstrap (210–260), validity checks, billing (910/920).
    #[command(after_help = "\
The CA key and certificate live in --ca-dir (created on first start: ca-key.pem with mode
0600, ca.pem for sellers and phones). K comes from --triplets GSM triplets (2-4) on the gsm
path, or from one AKA quintet (CK‖IK, GBA-style) on the usim path. docs/pki-messages.md
describes every message.

Example:
  simlab gateway serve --db gw.sqlite --ca-dir gw-ca --auc http://127.0.0.1:8220")]
    Serve {
        #[arg(long, value_name = "FILE|URL", long_help = DB_HELP)]
        db: String,
        /// Directory of the CA key (ca-key.pem, mode 0600) and certificate (ca.pem).
        #[arg(long, value_name = "DIR")]
        ca_dir: PathBuf,
        /// The AuC's URL (see `simlab auc serve`).
        #[arg(long, value_name = "URL")]
        auc: String,
        /// HOST:PORT to listen on (port 0 picks a free one; the first line printed says which).
        #[arg(long, value_name = "HOST:PORT", default_value = DEFAULT_LISTEN)]
        listen: String,
        /// GSM triplets per bootstrap: K comes from this many Kc (2-4).
        #[arg(long, value_name = "N", default_value_t = gateway::DEFAULT_TRIPLETS)]
        triplets: usize,
        /// The operator's name in certificate subjects and the CA's.
        #[arg(long, value_name = "NAME", default_value = "simlab")]
        organization: String,
        /// The FQDN in NAF_Id on the usim path.
        #[arg(long, value_name = "FQDN", default_value = "gateway.simlab.invalid")]
        naf_fqdn: String,
        /// The longest certificate lifetime granted, in seconds.
        #[arg(long, value_name = "SECONDS", default_value_t = gateway::DEFAULT_MAX_VALIDITY)]
        max_validity: u64,
        /// Threads that verify a batch's signatures (default: one per CPU).
        #[arg(long, value_name = "N")]
        verify_threads: Option<usize>,
        /// Test fault: exit right after committing this many billed records.
        #[cfg(feature = "test-faults")]
        #[arg(long, value_name = "N", hide = true)]
        exit_after_records: Option<u64>,
    },
    /// Register a seller: only registered sellers may submit accounting records.
    AddSeller {
        #[arg(long, value_name = "FILE|URL", long_help = DB_HELP)]
        db: String,
        /// The seller id invoices will carry: 1-64 of A-Z a-z 0-9 . _ -
        #[arg(long, value_name = "ID")]
        seller_id: String,
        /// A name for people.
        #[arg(long, value_name = "NAME")]
        name: Option<String>,
    },
    /// Revoke a certificate (a lost or stolen phone): sellers' online checks refuse it, and
    /// records of invoices issued after now are not billed.
    Revoke {
        #[arg(long, value_name = "FILE|URL", long_help = DB_HELP)]
        db: String,
        /// The certificate serial, hex.
        #[arg(long, value_name = "HEX")]
        serial: String,
        /// Why, for the record.
        #[arg(long, value_name = "TEXT", default_value = "reported lost")]
        reason: String,
    },
    /// List the call detail records: every billed purchase, whom it credits and charges.
    Cdrs {
        #[arg(long, value_name = "FILE|URL", long_help = DB_HELP)]
        db: String,
        /// Only this seller's.
        #[arg(long, value_name = "ID")]
        seller_id: Option<String>,
    },
    /// Benchmark: enrollments and billed records per second through a running gateway.
    #[cfg(feature = "bench")]
    #[command(hide = true)]
    Bench(super::pki_bench::BenchArgs),
}

fn store_err(e: StoreError) -> Error {
    Error::arg("--db", e.to_string())
}

pub fn run(out: &Output, global: &Global, cmd: &GatewayCommand) -> Result<i32> {
    // Only `gateway bench` needs the global options.
    #[cfg(not(feature = "bench"))]
    let _ = global;
    match cmd {
        GatewayCommand::Serve {
            db,
            ca_dir,
            auc,
            listen,
            triplets,
            organization,
            naf_fqdn,
            max_validity,
            verify_threads,
            #[cfg(feature = "test-faults")]
            exit_after_records,
        } => {
            let auc = url_arg("--auc", auc)?;
            if !(2..=4).contains(triplets) {
                return Err(Error::arg("--triplets", "2 to 4: K needs at least two Kc"));
            }
            if organization.is_empty() || organization.len() > 64 {
                return Err(Error::arg("--organization", "1 to 64 characters"));
            }
            let pool = Pool::new(store::opener(db).map_err(store_err)?);
            let ca = Ca::load_or_create(ca_dir, organization)
                .map_err(|e| Error::arg("--ca-dir", e.to_string()))?;
            let mut config = GatewayConfig::new(auc);
            config.triplets = *triplets;
            config.naf_fqdn = naf_fqdn.clone();
            config.max_validity = *max_validity;
            if let Some(n) = verify_threads {
                config.verify_threads = (*n).max(1);
            }
            #[cfg(feature = "test-faults")]
            {
                config.exit_after_records = *exit_after_records;
            }
            let gw = Arc::new(Gateway::new(config, ca, pool));
            let limits = Limits {
                max_body: MAX_BODY,
                ..Limits::default()
            };
            serve(
                out,
                "gateway",
                listen,
                limits,
                Arc::new(move |req| gw.handle(req)),
            )
        }
        GatewayCommand::AddSeller {
            db,
            seller_id,
            name,
        } => {
            if !valid_id(seller_id) {
                return Err(Error::arg(
                    "--seller-id",
                    "1-64 characters of A-Z a-z 0-9 . _ -",
                ));
            }
            let mut s = (store::opener(db).map_err(store_err)?)().map_err(store_err)?;
            let name = name.clone().unwrap_or_else(|| seller_id.clone());
            match s.add_seller(seller_id, &name, simlab_services::pki::now()) {
                Ok(()) => {}
                Err(StoreError::Conflict(_)) => {
                    return Err(Error::Mismatch {
                        what: format!("seller {seller_id} is registered already"),
                    });
                }
                Err(e) => return Err(store_err(e)),
            }
            out.result(
                &format!("registered seller {seller_id} ({name})\n"),
                &json!({ "seller_id": seller_id, "name": name }),
            )?;
            Ok(0)
        }
        GatewayCommand::Revoke { db, serial, reason } => {
            let serial = hex::decode("--serial", serial)?;
            if serial.is_empty() || serial.len() > 20 {
                return Err(Error::arg("--serial", "1 to 20 bytes of hex"));
            }
            let mut s = (store::opener(db).map_err(store_err)?)().map_err(store_err)?;
            let now = simlab_services::pki::now();
            let outcome = s.revoke(&serial, now, reason).map_err(store_err)?;
            let (text, code) = match outcome {
                RevokeOutcome::Revoked => (format!("revoked {}\n", hex::encode(&serial)), 0),
                RevokeOutcome::AlreadyRevoked => {
                    (format!("{} was revoked already\n", hex::encode(&serial)), 0)
                }
                RevokeOutcome::NotFound => {
                    return Err(Error::Mismatch {
                        what: format!("no certificate {} was issued here", hex::encode(&serial)),
                    });
                }
            };
            out.result(
                &text,
                &json!({
                    "serial": hex::encode(&serial),
                    "revoked": true,
                    "already_revoked": outcome == RevokeOutcome::AlreadyRevoked,
                    "revoked_at": now,
                }),
            )?;
            Ok(code)
        }
        GatewayCommand::Cdrs { db, seller_id } => {
            let mut s = (store::opener(db).map_err(store_err)?)().map_err(store_err)?;
            let cdrs = s.cdrs(seller_id.as_deref()).map_err(store_err)?;
            let mut text = String::new();
            let mut rows = Vec::new();
            for c in &cdrs {
                text.push_str(&format!(
                    "{}  {:<12} {:<28} {:>14}  IMSI {}  cert {}\n",
                    iso8601(c.billed_at),
                    c.seller_id,
                    c.transaction_id,
                    money(c.amount, &c.currency),
                    c.imsi,
                    hex::encode(&c.serial)
                ));
                rows.push(json!({
                    "seller_id": c.seller_id,
                    "transaction_id": c.transaction_id,
                    "serial": hex::encode(&c.serial),
                    "imsi": c.imsi,
                    "amount": c.amount,
                    "currency": c.currency,
                    "issued_at": c.issued_at,
                    "billed_at": c.billed_at,
                    "batch_id": c.batch_id,
                    "invoice": hex::encode(&c.invoice),
                    "signature": hex::encode(&c.signature),
                }));
            }
            out.result(&text, &json!(rows))?;
            Ok(0)
        }
        #[cfg(feature = "bench")]
        GatewayCommand::Bench(args) => super::pki_bench::run(out, global, args),
    }
}
