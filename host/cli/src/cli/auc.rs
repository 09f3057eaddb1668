//! `simlab auc …`: the HLR/AuC of seed 000 — a subscriber database (SQLite) and the service
//! that answers gateways with triplets and quintets (messages 220/230).

use super::pki::{ServeTlsArgs, serve, tls_required};
use super::{Global, Output};
use clap::Subcommand;
use serde_json::json;
use simlab_card::error::{Error, Result};
use simlab_card::profile::Profile;
use simlab_services::http::server::Limits;
use simlab_services::pki::auc_server::Auc;
use simlab_services::pki::auc_server::subscribers::{Subscriber, SubscriberDb};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Where the AuC listens unless told otherwise (220: the message it answers).
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8220";

#[derive(Subcommand, Debug)]
pub enum AucCommand {
    /// Answer gateways with GSM triplets and UMTS quintets over HTTP (messages 220/230).
    #[command(after_help = "\
POST /v1/auth-info {\"imsi\": \"…\", \"path\": \"gsm\", \"count\": 3} answers triplets
(RAND, SRES, Kc); \"path\": \"usim\" answers one quintet (RAND, AUTN, XRES, CK, IK) with the
next sequence number, and the IMPI. The answers carry Kc/CK/IK, as message 230 does, so
only a gateway of this operator is answered: a client certificate with role `gateway` from the
CA in the identity's ca.pem (mutual TLS); anyone else gets 403. Subscribers are imported with
--profile/--csv here or with `simlab auc import`.

Example:
  simlab gateway issue --ca-dir ca --role server --name auc --out auc-tls
  simlab auc serve --db auc.sqlite --tls auc-tls --profile fixtures/cards/demo-usim.toml")]
    Serve {
        /// The subscriber database (SQLite, created with mode 0600).
        #[arg(long, value_name = "FILE")]
        db: PathBuf,
        /// HOST:PORT to listen on (port 0 picks a free one; the first line printed says which).
        #[arg(long, value_name = "HOST:PORT", default_value = DEFAULT_LISTEN)]
        listen: String,
        #[command(flatten)]
        import: ImportArgs,
        #[command(flatten)]
        tls: ServeTlsArgs,
    },
    /// Add or update subscribers from card profiles or a pySim-style CSV.
    #[command(after_help = "\
A re-imported subscriber gets the new keys and keeps the higher of its stored and imported
SQN, so the AuC never reuses a sequence number. The CSV is the one `simlab card provision
--csv` takes (columns imsi, ki, opc|op, algorithm, mcc, mnc, …); every row is checked before
anything is written.")]
    Import {
        /// The subscriber database (SQLite, created with mode 0600).
        #[arg(long, value_name = "FILE")]
        db: PathBuf,
        #[command(flatten)]
        import: ImportArgs,
    },
    /// List the subscribers: IMSI, algorithm and SQN (never a key).
    List {
        #[arg(long, value_name = "FILE")]
        db: PathBuf,
    },
}

/// Subscribers to import.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct ImportArgs {
    /// A card profile (fixtures/cards/*.toml); repeat for several.
    #[arg(long = "profile", value_name = "PROFILE.toml")]
    pub profiles: Vec<PathBuf>,
    /// A pySim-style batch CSV (as `simlab card provision --csv`).
    #[arg(long, value_name = "FILE")]
    pub csv: Option<PathBuf>,
}

/// Reads every subscriber named, checking all of them before any is written.
pub fn subscribers(args: &ImportArgs) -> Result<Vec<Subscriber>> {
    let mut out = Vec::new();
    for path in &args.profiles {
        out.push(Subscriber::from_profile(&Profile::load(path)?));
    }
    if let Some(csv) = &args.csv {
        for target in simlab_card::provision::csv::read(csv)? {
            out.push(Subscriber::from_profile(&target.profile));
        }
    }
    Ok(out)
}

fn open(db: &Path) -> Result<SubscriberDb> {
    SubscriberDb::open(db).map_err(|e| Error::arg("--db", e.to_string()))
}

fn import(out: &Output, db: &mut SubscriberDb, args: &ImportArgs) -> Result<usize> {
    let subs = subscribers(args)?;
    if subs.is_empty() {
        return Ok(0);
    }
    let n = db
        .import(&subs)
        .map_err(|e| Error::arg("--profile/--csv", e.to_string()))?;
    for s in &subs {
        out.detail(&format!(
            "auc: subscriber {} ({})",
            s.imsi,
            s.algorithm.name()
        ));
    }
    Ok(n)
}

pub fn run(out: &Output, _global: &Global, cmd: &AucCommand) -> Result<i32> {
    match cmd {
        AucCommand::Serve {
            db,
            listen,
            import: args,
            tls,
        } => {
            let tls = tls.server_tls(tls_required)?;
            let mut store = open(db)?;
            let n = import(out, &mut store, args)?;
            if n > 0 {
                tracing::info!("imported {n} subscriber(s)");
            }
            let auc = Arc::new(Auc::new(store));
            serve(
                out,
                "auc",
                listen,
                Limits::default(),
                Arc::new(move |req| auc.handle(req)),
                tls,
            )
        }
        AucCommand::Import { db, import: args } => {
            if args.profiles.is_empty() && args.csv.is_none() {
                return Err(Error::arg("--profile/--csv", "name at least one source"));
            }
            let mut store = open(db)?;
            let n = import(out, &mut store, args)?;
            out.result(
                &format!("imported {n} subscriber(s) into {}\n", db.display()),
                &json!({ "imported": n }),
            )?;
            Ok(0)
        }
        AucCommand::List { db } => {
            let store = open(db)?;
            let rows = store
                .list()
                .map_err(|e| Error::arg("--db", e.to_string()))?;
            let mut text = String::new();
            for (imsi, alg, sqn) in &rows {
                text.push_str(&format!("{imsi}  {alg:<10} SQN {sqn:012x}\n"));
            }
            let json: Vec<_> = rows
                .iter()
                .map(|(imsi, alg, sqn)| json!({ "imsi": imsi, "algorithm": alg, "sqn": format!("{sqn:012x}") }))
                .collect();
            out.result(&text, &json!(json))?;
            Ok(0)
        }
    }
}
