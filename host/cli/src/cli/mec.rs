//! `simlab mec …`: seed 001's MeC servers (one process per operator, home and visited roles at
//! once), their partner tables, subscribers and content providers, and the two stubs around
//! them: a content provider's shop front and a financial institution.

use super::pki::{ServeTlsArgs, tls_required};
use super::{Global, Output};
use clap::Subcommand;
use serde_json::json;
use simlab_card::error::{Error, Result};
use simlab_services::http::Role;
use simlab_services::http::client::Url;
use simlab_services::http::server::{Handler, Limits, Server, Stop, blocking_router};
use simlab_services::http::tls::{ClientTls, ServerTls, load_certificates};
use simlab_services::pki::x509::Certificate;
use simlab_services::roaming::keys::SigningKey;
use simlab_services::roaming::server::{CONTRACT_TTL, Config, Mec, PARTNER_TIMEOUT};
use simlab_services::roaming::store::{Partner, Store, StoreError};
use simlab_services::roaming::stubs::{Cp, Fi, with_location};
use simlab_services::roaming::{
    RequestType, check_name, join_request_types, parse_methods, parse_request_types,
};
use simlab_services::router::{check_country_code, check_prefix};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

#[cfg(feature = "bench")]
mod bench;

#[derive(Subcommand, Debug)]
pub enum MecCommand {
    /// Run one operator's MeC server: visited role for its content providers, home role for
    /// its subscribers.
    #[command(after_help = "\
Server-to-server calls need a peer certificate (`simlab gateway issue --role peer`) whose
name is in this server's partner table and whose serial is the one the table pins; every
roam message is also signed with that certificate's key. Content providers call with a
seller certificate whose CN is their id (`simlab mec cp add`). The phone needs none.

The partner table is read at start: restart after `mec partner add|remove`.

Example:
  simlab gateway issue --ca-dir roam-ca --role peer --name mec-no --out no-tls
  simlab mec serve --name mec-no --db no.sqlite --tls no-tls --listen 127.0.0.1:8701")]
    Serve {
        /// This server's name: the CN of its peer certificate, as partners list it.
        #[arg(long, value_name = "NAME")]
        name: String,
        /// The server's store: an SQLite file, or `postgres://USER@HOST:PORT/DB` for
        /// PostgreSQL (a Unix socket directory percent-encoded as the host).
        #[arg(long, value_name = "FILE|URL")]
        db: PathBuf,
        /// HOST:PORT to listen on (port 0 picks a free one; the first line printed says which).
        #[arg(long, value_name = "HOST:PORT", default_value = "127.0.0.1:8701")]
        listen: String,
        /// The URL users are redirected to (default: https:// and the address bound).
        #[arg(long, value_name = "URL")]
        public_url: Option<String>,
        /// The financial institution that completes payments (visited role).
        #[arg(long, value_name = "URL")]
        fi: Option<String>,
        /// How long each partner gets to answer a roamUserRequest, in milliseconds.
        #[arg(long, value_name = "MS", default_value_t = PARTNER_TIMEOUT.as_millis() as u64)]
        partner_timeout_ms: u64,
        /// How long a contract waits for the user, in seconds.
        #[arg(long, value_name = "SECONDS", default_value_t = CONTRACT_TTL)]
        contract_ttl: u64,
        /// The server's peer identity (`gateway issue --role peer`): it serves with it,
        /// presents it to partners and the FI, and signs roam messages with its key.
        #[arg(long, value_name = "DIR", value_parser = crate::cli::dir_arg)]
        tls: PathBuf,
    },
    /// The partner table: who else to ask about a number, and how to know them.
    #[command(subcommand)]
    Partner(PartnerCommand),
    /// Subscribers of this (home) operator.
    #[command(subcommand)]
    Subscriber(SubscriberCommand),
    /// Content providers attached to this (visited) server, and the CP stub.
    #[command(subcommand)]
    Cp(CpCommand),
    /// The financial institution stub.
    #[command(subcommand)]
    Fi(FiCommand),
    /// Benchmark: home-server look-ups and authenticated payments per second.
    #[cfg(feature = "bench")]
    #[command(hide = true)]
    Bench(bench::BenchArgs),
}

#[derive(Subcommand, Debug)]
pub enum PartnerCommand {
    /// Add a partner (its peer certificate must come from the roaming CA given with --ca).
    #[command(after_help = "\
Example (the Norwegian operator, numbers +47 9… and +47 4…):
  simlab mec partner add --db se.sqlite --ca roam-ca/ca.pem --name mec-no \\
      --url https://127.0.0.1:8701 --country NO --country-code 47 --prefix 9 --prefix 4 \\
      --certificate no-tls/cert.pem")]
    Add {
        #[arg(long, value_name = "FILE")]
        db: PathBuf,
        /// The CA that certifies MeC servers (PEM): the partner's certificate must come from it.
        #[arg(long, value_name = "FILE", value_parser = crate::cli::file_arg)]
        ca: PathBuf,
        /// The partner's name (its certificate's CN).
        #[arg(long, value_name = "NAME")]
        name: String,
        /// Its MeC server's URL.
        #[arg(long, value_name = "URL")]
        url: String,
        /// Its country (ISO 3166 alpha-2).
        #[arg(long, value_name = "CC")]
        country: String,
        /// Its country calling code, without + (47 for Norway).
        #[arg(long, value_name = "DIGITS")]
        country_code: String,
        /// A local prefix it serves (digits after the country code); repeat for several; none
        /// means the whole country.
        #[arg(long = "prefix", value_name = "DIGITS")]
        prefixes: Vec<String>,
        /// Its peer certificate (PEM).
        #[arg(long, value_name = "FILE", value_parser = crate::cli::file_arg)]
        certificate: PathBuf,
        /// The request types it serves, comma-separated (default: all).
        #[arg(long, value_name = "LIST")]
        request_types: Option<String>,
    },
    /// List the partner table.
    List {
        #[arg(long, value_name = "FILE")]
        db: PathBuf,
    },
    /// Remove a partner.
    Remove {
        #[arg(long, value_name = "FILE")]
        db: PathBuf,
        #[arg(long, value_name = "NAME")]
        name: String,
    },
}

#[derive(Subcommand, Debug)]
pub enum SubscriberCommand {
    /// Add a subscriber: its token's certificate (seed 000) and payment methods. The server
    /// makes the key it signs with on the subscriber's behalf (delegated signing) now.
    Add {
        #[arg(long, value_name = "FILE")]
        db: PathBuf,
        /// E.164, e.g. +4791234567.
        #[arg(long, value_name = "NUMBER")]
        msisdn: String,
        /// The token's certificate (PEM, from `simlab ms enroll`): its key verifies the token's
        /// signatures, and it goes into end-to-end CMS signatures.
        #[arg(long, value_name = "FILE", value_parser = crate::cli::file_arg)]
        certificate: PathBuf,
        /// Payment methods, comma-separated (card, wallet, bank, …).
        #[arg(long, value_name = "LIST", default_value = "")]
        payment_methods: String,
    },
}

#[derive(Subcommand, Debug)]
pub enum CpCommand {
    /// Attach a content provider to this (visited) server.
    Add {
        #[arg(long, value_name = "FILE")]
        db: PathBuf,
        /// The CP's id: the CN of the seller certificate it calls with.
        #[arg(long, value_name = "ID")]
        id: String,
        /// The payment methods it accepts, comma-separated.
        #[arg(long, value_name = "LIST", default_value = "")]
        payment_methods: String,
    },
    /// Run a content provider's shop front: the phone checks out here and is redirected home.
    #[command(after_help = "\
POST /checkout {msisdn, request_type, amount, currency, description, payment_method?}
answers 303 with the home server's contract page (Location header and \"location\"), or 200
with the payment methods to choose from; GET /orders/<id> reports the order.

Example:
  simlab gateway issue --ca-dir roam-ca --role seller --name cp-stockholm --out cp-tls
  simlab mec cp serve --mec https://127.0.0.1:8702 --tls cp-tls --listen 127.0.0.1:8710")]
    Serve {
        /// The visited MeC server this CP is attached to.
        #[arg(long, value_name = "URL")]
        mec: String,
        #[arg(long, value_name = "HOST:PORT", default_value = "127.0.0.1:8710")]
        listen: String,
        /// The CP's identity (`gateway issue --role seller --name ID`), for the phone and, as a
        /// client, for its MeC server.
        #[arg(long, value_name = "DIR", value_parser = crate::cli::dir_arg)]
        tls: PathBuf,
    },
}

#[derive(Subcommand, Debug)]
pub enum FiCommand {
    /// Run the financial institution stub: approves payments from MeC servers (peer
    /// certificates), or declines.
    Serve {
        #[arg(long, value_name = "HOST:PORT", default_value = "127.0.0.1:8720")]
        listen: String,
        /// Decline every payment.
        #[arg(long)]
        decline: bool,
        /// Decline payments above this amount (minor units).
        #[arg(long, value_name = "AMOUNT")]
        limit: Option<u64>,
        #[command(flatten)]
        tls: ServeTlsArgs,
    },
}

/// `--db`: an SQLite file, or `postgres://…` for PostgreSQL.
fn open_store(db: &Path) -> Result<Store> {
    Store::open_db(&db.to_string_lossy()).map_err(store_error)
}

fn store_error(e: StoreError) -> Error {
    match e {
        StoreError::Sql(e) if e.is_bad_input() => Error::arg("--db", e.to_string()),
        StoreError::Exists(what) => Error::arg("--name", format!("{what} exists already")),
        other => Error::Io {
            context: "the MeC store".into(),
            source: std::io::Error::other(with_causes(&other)),
        },
    }
}

/// The error and its causes on one line: PostgreSQL's "error connecting to server" alone
/// would not say whether the socket is missing or the password wrong.
pub(crate) fn with_causes(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let c_text = c.to_string();
        if !text.contains(&c_text) {
            text.push_str(": ");
            text.push_str(&c_text);
        }
        cause = c.source();
    }
    text
}

fn read_certificate(arg: &str, path: &Path) -> Result<Certificate> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| Error::arg(arg, format!("{}: {e}", path.display())))?;
    Certificate::from_pem(&text).map_err(|e| Error::arg(arg, format!("{}: {e}", path.display())))
}

/// Binds, prints where it listens, and serves until SIGTERM (the 303s get a Location header).
fn serve(out: &Output, role: &str, listen: &str, handler: Handler, tls: ServerTls) -> Result<i32> {
    let server = Server::bind(listen, Some(tls), role)
        .map_err(|e| Error::arg("--listen", format!("{listen}: {e}")))?;
    let url = server.url();
    let line = if out.json() {
        json!({ "role": role, "url": url, "tls": true }).to_string()
    } else {
        format!("{role} listening on {url}")
    };
    let mut stdout = std::io::stdout().lock();
    let _ = writeln!(stdout, "{line}").and_then(|()| stdout.flush());
    drop(stdout);
    let limits = Limits::default();
    let router = with_location(blocking_router(handler, limits, role));
    server
        .run_router(router, limits, Stop::Signals)
        .map_err(|source| Error::Io {
            context: format!("serving on {url}"),
            source,
        })?;
    Ok(0)
}

fn server_tls(dir: &Path) -> Result<ServerTls> {
    ServerTls::from_dir(dir).map_err(|e| Error::arg("--tls", e.to_string()))
}

fn client_tls(dir: &Path) -> Result<ClientTls> {
    ClientTls::mutual(dir).map_err(|e| Error::arg("--tls", e.to_string()))
}

fn https_url(arg: &str, text: &str, tls: &ClientTls) -> Result<Url> {
    let url = Url::parse(text).map_err(|e| Error::arg(arg, e.to_string()))?;
    if url.is_plain() {
        return Err(Error::arg(arg, format!("{text}: MeC links are HTTPS only")));
    }
    Ok(url.with_tls(tls))
}

pub fn run(out: &Output, _global: &Global, cmd: &MecCommand) -> Result<i32> {
    match cmd {
        #[cfg(feature = "bench")]
        MecCommand::Bench(args) => bench::run(out, args),
        MecCommand::Serve {
            name,
            db,
            listen,
            public_url,
            fi,
            partner_timeout_ms,
            contract_ttl,
            tls,
        } => {
            check_name("--name", name).map_err(|e| Error::arg("--name", e))?;
            if *contract_ttl == 0 || *partner_timeout_ms == 0 {
                return Err(Error::arg(
                    "--contract-ttl",
                    "--contract-ttl and --partner-timeout-ms must be above 0",
                ));
            }
            let client = client_tls(tls)?;
            let own = client
                .identity
                .as_ref()
                .and_then(|i| i.peer())
                .ok_or_else(|| Error::arg("--tls", "the identity names no role"))?;
            if own.role != Role::Peer || own.name != *name {
                return Err(Error::arg(
                    "--tls",
                    format!(
                        "the certificate is {}:{}, not peer:{name} (gateway issue --role peer --name {name})",
                        own.role.as_str(),
                        own.name
                    ),
                ));
            }
            let key = SigningKey::load_identity_key(tls)
                .map_err(|e| Error::arg("--tls", e.to_string()))?;
            let fi = fi
                .as_deref()
                .map(|f| https_url("--fi", f, &client))
                .transpose()?;
            let server_tls = server_tls(tls)?;
            let store = open_store(db)?;
            let server = Server::bind(listen, Some(server_tls), "mec")
                .map_err(|e| Error::arg("--listen", format!("{listen}: {e}")))?;
            let public_url = public_url.clone().unwrap_or_else(|| server.url());
            let config = Config {
                name: name.clone(),
                public_url: public_url.trim_end_matches('/').to_string(),
                client_tls: client,
                key,
                fi,
                partner_timeout: Duration::from_millis(*partner_timeout_ms),
                contract_ttl: *contract_ttl,
            };
            let mec = Arc::new(Mec::new(config, store).map_err(store_error)?);
            let url = server.url();
            let line = if out.json() {
                json!({ "role": "mec", "name": name, "url": url, "tls": true }).to_string()
            } else {
                format!("mec {name} listening on {url}")
            };
            let mut stdout = std::io::stdout().lock();
            let _ = writeln!(stdout, "{line}").and_then(|()| stdout.flush());
            drop(stdout);
            let limits = Limits::default();
            let handler: Handler = Arc::new(move |req| mec.handle(req));
            server
                .run_router(
                    blocking_router(handler, limits, "mec"),
                    limits,
                    Stop::Signals,
                )
                .map_err(|source| Error::Io {
                    context: format!("serving on {url}"),
                    source,
                })?;
            Ok(0)
        }
        MecCommand::Partner(PartnerCommand::Add {
            db,
            ca,
            name,
            url,
            country,
            country_code,
            prefixes,
            certificate,
            request_types,
        }) => {
            check_name("--name", name).map_err(|e| Error::arg("--name", e))?;
            let u = Url::parse(url).map_err(|e| Error::arg("--url", e.to_string()))?;
            if u.is_plain() {
                return Err(Error::arg(
                    "--url",
                    "partners are reached over https:// only",
                ));
            }
            if country.len() != 2 || !country.bytes().all(|b| b.is_ascii_uppercase()) {
                return Err(Error::arg(
                    "--country",
                    "two capital letters (ISO 3166), e.g. NO",
                ));
            }
            check_country_code(country_code)
                .map_err(|e| Error::arg("--country-code", e.to_string()))?;
            for p in prefixes {
                check_prefix(p).map_err(|e| Error::arg("--prefix", e.to_string()))?;
            }
            let types = match request_types {
                Some(t) => parse_request_types(t).map_err(|e| Error::arg("--request-types", e))?,
                None => RequestType::ALL.to_vec(),
            };
            if types.is_empty() {
                return Err(Error::arg("--request-types", "name at least one"));
            }
            let cert = read_certificate("--certificate", certificate)?;
            let anchors = load_certificates(ca).map_err(|e| Error::arg("--ca", e.to_string()))?;
            let issued = anchors.iter().any(|a| {
                Certificate::from_der(a.as_ref()).is_ok_and(|a| cert.check_issued_by(&a).is_ok())
            });
            if !issued {
                return Err(Error::arg(
                    "--certificate",
                    format!(
                        "{} was not issued by the CA in {}",
                        certificate.display(),
                        ca.display()
                    ),
                ));
            }
            match cert.role() {
                Some((Role::Peer, cn)) if cn == *name => {}
                other => {
                    let holder = other.map_or("no role".to_string(), |(r, cn)| {
                        format!("{}:{cn}", r.as_str())
                    });
                    return Err(Error::arg(
                        "--certificate",
                        format!(
                            "the certificate is {holder}, not a peer named {name:?} (gateway issue --role peer --name {name})"
                        ),
                    ));
                }
            }
            let store = open_store(db)?;
            let partner = Partner {
                name: name.clone(),
                url: u.to_string(),
                country: country.clone(),
                country_code: country_code.clone(),
                prefixes: prefixes.clone(),
                certificate_der: cert.der.clone(),
                request_types: types,
            };
            store.add_partner(&partner).map_err(store_error)?;
            out.result(
                &format!(
                    "partner {name} added (+{country_code} {})\n",
                    prefixes.join(",")
                ),
                &partner_json(&partner),
            )?;
            Ok(0)
        }
        MecCommand::Partner(PartnerCommand::List { db }) => {
            let store = open_store(db)?;
            let partners = store.partners().map_err(store_error)?;
            let mut text = String::new();
            for p in &partners {
                text.push_str(&format!(
                    "{:<16} {} +{} {:<12} {}  {}\n",
                    p.name,
                    p.country,
                    p.country_code,
                    if p.prefixes.is_empty() {
                        "*".to_string()
                    } else {
                        p.prefixes.join(",")
                    },
                    p.url,
                    join_request_types(&p.request_types)
                ));
            }
            let list: Vec<_> = partners.iter().map(partner_json).collect();
            out.result(&text, &json!({ "partners": list }))?;
            Ok(0)
        }
        MecCommand::Partner(PartnerCommand::Remove { db, name }) => {
            let store = open_store(db)?;
            if !store.remove_partner(name).map_err(store_error)? {
                return Err(Error::arg("--name", format!("no partner {name:?}")));
            }
            out.result(
                &format!("partner {name} removed\n"),
                &json!({"removed": name}),
            )?;
            Ok(0)
        }
        MecCommand::Subscriber(SubscriberCommand::Add {
            db,
            msisdn,
            certificate,
            payment_methods,
        }) => {
            simlab_services::router::digits(msisdn)
                .map_err(|e| Error::arg("--msisdn", e.to_string()))?;
            let methods =
                parse_methods(payment_methods).map_err(|e| Error::arg("--payment-methods", e))?;
            let cert = read_certificate("--certificate", certificate)?;
            let store = open_store(db)?;
            store
                .add_subscriber(msisdn, &cert.public_key, Some(&cert.der), &methods)
                .map_err(|e| match e {
                    StoreError::Exists(w) => Error::arg("--msisdn", format!("{w} exists already")),
                    other => store_error(other),
                })?;
            out.result(
                &format!("subscriber {msisdn} added ({})\n", methods.join(", ")),
                &json!({"msisdn": msisdn, "payment_methods": methods, "serial": cert.serial_hex()}),
            )?;
            Ok(0)
        }
        MecCommand::Cp(CpCommand::Add {
            db,
            id,
            payment_methods,
        }) => {
            check_name("--id", id).map_err(|e| Error::arg("--id", e))?;
            let methods =
                parse_methods(payment_methods).map_err(|e| Error::arg("--payment-methods", e))?;
            let store = open_store(db)?;
            store.add_cp(id, &methods).map_err(|e| match e {
                StoreError::Exists(w) => Error::arg("--id", format!("{w} exists already")),
                other => store_error(other),
            })?;
            out.result(
                &format!("content provider {id} added ({})\n", methods.join(", ")),
                &json!({"id": id, "payment_methods": methods}),
            )?;
            Ok(0)
        }
        MecCommand::Cp(CpCommand::Serve { mec, listen, tls }) => {
            let client = client_tls(tls)?;
            let mec = https_url("--mec", mec, &client)?;
            let cp = Arc::new(Cp { mec });
            let handler: Handler = Arc::new(move |req| cp.handle(req));
            serve(out, "cp", listen, handler, server_tls(tls)?)
        }
        MecCommand::Fi(FiCommand::Serve {
            listen,
            decline,
            limit,
            tls,
        }) => {
            let tls = tls.server_tls(tls_required)?.ok_or_else(|| {
                Error::arg("--tls", "the FI answers MeC servers over mutual TLS only")
            })?;
            let fi = Arc::new(Fi::new(*decline, *limit));
            let handler: Handler = Arc::new(move |req| fi.handle(req));
            serve(out, "fi", listen, handler, tls)
        }
    }
}

fn partner_json(p: &Partner) -> serde_json::Value {
    json!({
        "name": p.name,
        "url": p.url,
        "country": p.country,
        "country_code": p.country_code,
        "prefixes": p.prefixes,
        "request_types": p.request_types,
        "serial": Certificate::from_der(&p.certificate_der).map(|c| c.serial_hex()).unwrap_or_default(),
    })
}
