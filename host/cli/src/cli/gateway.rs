//! `simlab gateway …`: the gateway of seed 000 — certificates from GSM/UMTS authentication
//! (messages 210–260), online validity checks, and billing (910/920) — plus the operator's
//! tools on its database: registering sellers, revoking certificates, reading CDRs.

use super::pki::{ServeTlsArgs, serve, service_url};
use super::{Global, Output};
use clap::Subcommand;
use serde_json::json;
use simlab_card::error::{Error, Result};
use simlab_card::hex;
use simlab_services::http::Role;
use simlab_services::http::server::Limits;
use simlab_services::http::tls::{ClientTls, Identity, KEY_FILE, ServerTls};
use simlab_services::pki::der::iso8601;
use simlab_services::pki::gateway::ca::Ca;
use simlab_services::pki::gateway::store::{self, Pool, RevokeOutcome, StoreError};
use simlab_services::pki::gateway::tls_register::{self, Issued, Revoked};
use simlab_services::pki::gateway::{self, Gateway, GatewayConfig};
use simlab_services::pki::invoice::valid_id;
use simlab_services::pki::restrictions::money;
use simlab_services::pki::x509::Certificate;
use std::path::PathBuf;
use std::sync::Arc;

/// Where the gateway listens unless told otherwise (210: the first message it answers).
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8210";
/// The largest request body: a 910 batch at its record limit.
const MAX_BODY: usize = gateway::billing::MAX_BATCH_BYTES;
/// How long the certificates the gateway issues itself at each start are valid.
const TLS_SELF_VALIDITY: u64 = 30 * 86_400;

const DB_HELP: &str = "The gateway's database: an SQLite file (created with mode 0600), or \
postgres://USER@HOST:PORT/DB for PostgreSQL (a Unix socket directory goes percent-encoded in \
the host part: postgres://postgres@%2Ftmp%2Fpg:5432/postgres). Several gateway processes may \
share one PostgreSQL database (and one --ca-dir).";

#[derive(Subcommand, Debug)]
pub enum GatewayCommand {
    /// Serve the gateway over HTTPS: bootstrap (210–260), validity checks, billing (910/920),
    /// and the operator's endpoints.
    #[command(after_help = "\
The CA key and certificate live in --ca-dir (created on first start: ca-key.pem with mode
0600, ca.pem for sellers and phones). K comes from --triplets GSM triplets (2-4) on the gsm
path, or from one AKA quintet (CK‖IK, GBA-style) on the usim path. docs/pki-messages.md
describes every message.

TLS: unless --tls names an identity, the gateway issues itself a server certificate (for
every --host) and a client certificate (role gateway, to reach the AuC) from its own CA at
each start. Who may call what: phones (no certificate) bootstrap; sellers (role seller) check
certificates and bill their own records; operators (role operator) add sellers, revoke and
read CDRs. `simlab gateway issue` makes those certificates.

Example:
  simlab gateway issue --ca-dir gw-ca --role server --name auc --out auc-tls
  simlab auc serve --db auc.sqlite --tls auc-tls --profile fixtures/cards/demo-usim.toml &
  simlab gateway serve --db gw.sqlite --ca-dir gw-ca --auc https://127.0.0.1:8220")]
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
        /// A host name or IP address for the self-issued server certificate; repeat for
        /// several (default: localhost and 127.0.0.1).
        #[arg(long = "host", value_name = "NAME|IP")]
        hosts: Vec<String>,
        /// The CA that certified the AuC, if it is not this gateway's own (PEM).
        #[arg(long, value_name = "FILE", value_parser = crate::cli::file_arg)]
        auc_ca: Option<PathBuf>,
        #[command(flatten)]
        tls: ServeTlsArgs,
        /// Test fault: exit right after committing this many billed records.
        #[cfg(feature = "test-faults")]
        #[arg(long, value_name = "N", hide = true)]
        exit_after_records: Option<u64>,
    },
    /// Issue a TLS certificate and key from the gateway's CA: for a server (AuC, seller,
    /// gateway), a seller, a gateway reaching the AuC, or an operator.
    #[command(after_help = "\
Writes OUT/cert.pem, OUT/key.pem (mode 0600; the key is never printed) and OUT/ca.pem: the
directory that --tls of the serving commands and of `simlab seller` takes. The role goes
into the subject (OU) and decides the extended key usage: server → serverAuth; seller →
serverAuth + clientAuth (a seller serves buyers and is a client of the gateway); gateway →
clientAuth + serverAuth; operator → clientAuth. The name (CN) is what the access rules
check: a seller's certificate bills that seller id's records only.

Examples:
  simlab gateway issue --ca-dir gw-ca --role server --name auc --out auc-tls
  simlab gateway issue --ca-dir gw-ca --role seller --name cafe-1 --out cafe-tls
  simlab gateway issue --ca-dir gw-ca --role operator --name alice --out ops-tls")]
    Issue {
        /// Directory of the CA key and certificate (created if missing, as `serve` does).
        #[arg(long, value_name = "DIR")]
        ca_dir: PathBuf,
        /// The operator's name in the CA's subject, when the CA is created now.
        #[arg(long, value_name = "NAME", default_value = "simlab")]
        organization: String,
        /// What the certificate is for.
        #[arg(long, value_enum)]
        role: RoleArg,
        /// The holder's name (CN): a seller id, a server or operator name.
        #[arg(long, value_name = "NAME")]
        name: String,
        /// A host name or IP address the server answers on; repeat for several (default:
        /// localhost and 127.0.0.1).
        #[arg(long = "host", value_name = "NAME|IP")]
        hosts: Vec<String>,
        /// Lifetime in days.
        #[arg(long, value_name = "DAYS", default_value_t = 365)]
        days: u64,
        /// The directory to write (created with mode 0700; an existing key is not overwritten).
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
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
    /// Revoke a certificate: a subscriber's (a lost or stolen phone: sellers' online checks
    /// refuse it, and records of invoices issued after now are not billed) with --db, or a TLS
    /// certificate from `gateway issue` (a seller's or operator's: the gateway refuses it from
    /// its next request) with --ca-dir.
    #[command(group(clap::ArgGroup::new("register").required(true).args(["db", "ca_dir"])))]
    Revoke {
        #[arg(long, value_name = "FILE|URL", long_help = DB_HELP)]
        db: Option<String>,
        /// The CA directory whose TLS certificate register to revoke in.
        #[arg(long, value_name = "DIR")]
        ca_dir: Option<PathBuf>,
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

/// The roles a TLS certificate can have.
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum RoleArg {
    Server,
    Seller,
    Gateway,
    Operator,
    /// A MeC server on the links between operators (seed 001): server and client.
    Peer,
    /// A person's browser certificate (seed 002's web site): CN = the user id.
    User,
}

impl From<RoleArg> for Role {
    fn from(r: RoleArg) -> Role {
        match r {
            RoleArg::Server => Role::Server,
            RoleArg::Seller => Role::Seller,
            RoleArg::Gateway => Role::Gateway,
            RoleArg::Operator => Role::Operator,
            RoleArg::Peer => Role::Peer,
            RoleArg::User => Role::User,
        }
    }
}

/// The names a self-issued server certificate carries.
fn server_hosts(hosts: &[String], listen: &str) -> Vec<String> {
    let mut out: Vec<String> = if hosts.is_empty() {
        vec!["localhost".into(), "127.0.0.1".into()]
    } else {
        hosts.to_vec()
    };
    if let Ok(addr) = listen.parse::<std::net::SocketAddr>()
        && !addr.ip().is_unspecified()
        && !out.contains(&addr.ip().to_string())
    {
        out.push(addr.ip().to_string());
    }
    out
}

fn check_name(name: &str) -> Result<()> {
    if !valid_id(name) {
        return Err(Error::arg("--name", "1-64 characters of A-Z a-z 0-9 . _ -"));
    }
    Ok(())
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
            hosts,
            auc_ca,
            tls,
            #[cfg(feature = "test-faults")]
            exit_after_records,
        } => {
            if !(2..=4).contains(triplets) {
                return Err(Error::arg("--triplets", "2 to 4: K needs at least two Kc"));
            }
            if organization.is_empty() || organization.len() > 64 {
                return Err(Error::arg("--organization", "1 to 64 characters"));
            }
            let ca = Ca::load_or_create(ca_dir, organization)
                .map_err(|e| Error::arg("--ca-dir", e.to_string()))?;
            let ca_der = ca.certificate().der.clone();
            // The AuC link is mutual: this gateway's own client certificate, and the AuC's
            // server certificate checked against this CA (or --auc-ca).
            let issue = |role: Role, hosts: &[String]| {
                ca.issue_tls(role, "gateway", hosts, TLS_SELF_VALIDITY)
                    .map_err(|e| Error::arg("--ca-dir", e.to_string()))
            };
            let client_identity = issue(Role::Gateway, &[])?;
            let anchors = match auc_ca {
                Some(path) => {
                    ClientTls::pinned(path)
                        .map_err(|e| Error::arg("--auc-ca", e.to_string()))?
                        .anchors
                }
                None => vec![ca_der.clone().into()],
            };
            let auc_tls = ClientTls {
                anchors,
                identity: Some(Identity::from_der(
                    client_identity.certificate_der.clone(),
                    client_identity.key_pkcs8_der.to_vec(),
                    vec![ca_der.clone()],
                )),
            };
            let auc = service_url("--auc", auc, Some(&auc_tls), tls.insecure_http)?;
            let server_tls = tls.server_tls(|| {
                let own = issue(Role::Server, &server_hosts(hosts, listen))?;
                let identity = Identity::from_der(
                    own.certificate_der.clone(),
                    own.key_pkcs8_der.to_vec(),
                    vec![ca_der.clone()],
                );
                ServerTls::new(&identity, &identity.ca)
                    .map(Some)
                    .map_err(|e| Error::arg("--ca-dir", e.to_string()))
            })?;
            let pool = Pool::new(store::opener(db).map_err(store_err)?);
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
            let gw = Arc::new(Gateway::new(config, ca, pool).with_tls_register(ca_dir));
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
                server_tls,
            )
        }
        GatewayCommand::Issue {
            ca_dir,
            organization,
            role,
            name,
            hosts,
            days,
            out: dir,
        } => {
            check_name(name)?;
            if !(1..=3650).contains(days) {
                return Err(Error::arg("--days", "1 to 3650"));
            }
            if dir.join(KEY_FILE).exists() {
                return Err(Error::arg(
                    "--out",
                    format!(
                        "{} holds a key already; choose another directory",
                        dir.display()
                    ),
                ));
            }
            let ca = Ca::load_or_create(ca_dir, organization)
                .map_err(|e| Error::arg("--ca-dir", e.to_string()))?;
            let role = Role::from(*role);
            let hosts = if hosts.is_empty()
                && matches!(
                    role,
                    Role::Server | Role::Seller | Role::Gateway | Role::Peer
                ) {
                server_hosts(&[], "")
            } else {
                hosts.clone()
            };
            let identity = ca
                .issue_tls(role, name, &hosts, days * 86_400)
                .map_err(|e| Error::arg("--ca-dir", e.to_string()))?;
            identity
                .write(dir, ca.certificate())
                .map_err(|e| Error::arg("--out", e.to_string()))?;
            let issued = Certificate::from_der(&identity.certificate_der)
                .map_err(|e| Error::arg("--ca-dir", e.to_string()))?;
            let serial = issued.serial_hex();
            tls_register::record_issued(
                ca_dir,
                &Issued {
                    serial_hex: serial.clone(),
                    role,
                    name: name.clone(),
                    not_after: issued.not_after,
                },
            )
            .map_err(|e| Error::arg("--ca-dir", e.to_string()))?;
            out.result(
                &format!(
                    "issued {} certificate for {name} (serial {serial}) in {}: cert.pem, key.pem (0600), ca.pem\n",
                    role.as_str(),
                    dir.display()
                ),
                &json!({
                    "role": role.as_str(),
                    "name": name,
                    "serial": serial,
                    "hosts": hosts,
                    "dir": dir.display().to_string(),
                }),
            )?;
            Ok(0)
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
        GatewayCommand::Revoke {
            db,
            ca_dir,
            serial,
            reason,
        } => {
            let serial = hex::decode("--serial", serial)?;
            if serial.is_empty() || serial.len() > 20 {
                return Err(Error::arg("--serial", "1 to 20 bytes of hex"));
            }
            if reason.chars().any(char::is_control) || reason.len() > 256 {
                return Err(Error::arg("--reason", "at most 256 printable characters"));
            }
            let Some(db) = db else {
                let dir = ca_dir.as_deref().unwrap_or(std::path::Path::new("."));
                let now = simlab_services::pki::now();
                let hexs = hex::encode(&serial);
                let outcome = tls_register::revoke(dir, &hexs, now, reason)
                    .map_err(|e| Error::arg("--ca-dir", e.to_string()))?;
                let text = match outcome {
                    Revoked::Now => format!("revoked TLS certificate {hexs}\n"),
                    Revoked::Already => format!("TLS certificate {hexs} was revoked already\n"),
                    Revoked::Unknown => {
                        return Err(Error::Mismatch {
                            what: format!(
                                "no TLS certificate {hexs} was issued from {}",
                                dir.display()
                            ),
                        });
                    }
                };
                out.result(
                    &text,
                    &json!({
                        "serial": hexs,
                        "revoked": true,
                        "already_revoked": outcome == Revoked::Already,
                        "tls": true,
                        "revoked_at": now,
                    }),
                )?;
                return Ok(0);
            };
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
                rows.push(gateway::cdr_json(c));
            }
            out.result(&text, &json!(rows))?;
            Ok(0)
        }
        #[cfg(feature = "bench")]
        GatewayCommand::Bench(args) => super::pki_bench::run(out, global, args),
    }
}
