//! `simlab operator …`: seed 003 — one operator's server (`serve`: SMS service node, service
//! manager, channel 121, operation manager) and the operator's own tools on its store
//! (`subscribe`, `account`, `ticket`, `peer`, `ledger`, `agents`).

use super::pki::{STATE_HELP, open_card, open_token};
use super::{Global, Output, print_line};
use clap::Subcommand;
use serde_json::{Value, json};
use simlab_card::error::{Error, Result};
use simlab_modem::backend::{AtBackend, NullBackend, SmsBackend};
use simlab_services::bytes::hex;
use simlab_services::http::Role;
use simlab_services::http::server::{Limits, Server, Stop};
use simlab_services::http::tls::{ClientTls, ServerTls};
use simlab_services::pki::x509::Certificate;
use simlab_services::transfer::messages::{self, Service};
use simlab_services::transfer::service::{Config, Fault, Operator};
use simlab_services::transfer::store::{PeerRow, State, Store, StoreError, Subscription, Ticket};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

#[derive(Subcommand, Debug)]
pub enum OperatorCommand {
    /// Run one operator: the SMS service node on --modem, channel 121 to the peers (mutual
    /// TLS), the agents and the two-phase commit.
    #[command(after_help = "\
Service messages (TP-PID 0xC1, 8-bit data: M1 orders, M4 answers) are taken off --modem (a
real modem, or a node of `simlab emulate smsc`); other messages are left alone. Orders go to
the peer that serves the receiver's number (`operator peer add`) as M2 over mutual TLS with
the --tls peer certificate; the peer shows its subscriber the offer (M3) and returns the
answer. The debtor's operator coordinates: it holds the debit, asks the creditor to prepare,
writes its decision with the debit, then commits at the creditor until it acknowledges; the
log in --db lets a restarted server finish what it started. docs/transfer.md has the messages.

Example:
  simlab gateway issue --ca-dir ix-ca --role peer --name OP1 --ip 127.0.0.1 --out op1-tls
  simlab --modem /tmp/op1-sn operator serve --db op1.sqlite --tls op1-tls --listen 127.0.0.1:9441")]
    Serve(ServeArgs),
    /// Add (or with --replace, update) a subscription: number, services, token key or PIN.
    #[command(after_help = "\
Orders (M1) and answers (M4) are verified with the token's public key (--public-key HEX, or
--from-token with the global card options); the seed's PIN in the SMS is a lab mode: give
--pin-file and run `operator serve --pin-in-sms`. The PIN is kept only as an argon2id
verifier.

Example:
  simlab --emulate phone-a.toml operator subscribe --db op1.sqlite --msisdn +491710000001 \\
      --services pay,ticket --from-token --state phone-a.state")]
    Subscribe(SubscribeArgs),
    /// Open an account or pay money into one (minor units).
    Account(AccountArgs),
    /// Issue a ticket: N uses of a service.
    Ticket(TicketArgs),
    /// The peer table: operators, their servers, number ranges and pinned certificates.
    #[command(subcommand)]
    Peer(PeerCommand),
    /// Accounts, tickets and settlement, and whether the ledger adds up (exit 1 if not).
    Ledger {
        #[arg(long, value_name = "FILE|URL")]
        db: String,
    },
    /// The service agents (active ones; --all for every one), or one with its log.
    Agents {
        #[arg(long, value_name = "FILE|URL")]
        db: String,
        #[arg(long)]
        all: bool,
        /// One agent, with its two-phase-commit log.
        #[arg(long, value_name = "HEX")]
        tref: Option<String>,
    },
}

#[derive(clap::Args, Debug)]
pub struct ServeArgs {
    /// The store: a SQLite file (created 0600) or postgres://….
    #[arg(long, value_name = "FILE|URL")]
    db: String,
    /// The TLS identity directory (cert.pem, key.pem, ca.pem), role peer: it answers and
    /// calls the other operators.
    #[arg(long, value_name = "DIR", value_parser = crate::cli::dir_arg)]
    tls: PathBuf,
    #[arg(long, value_name = "HOST:PORT", default_value = "127.0.0.1:9441")]
    listen: String,
    /// Seconds the other party has to answer an offer.
    #[arg(long, value_name = "SECONDS", default_value_t = 600)]
    answer_ttl: u64,
    /// Send the offer (M3) once more halfway to the deadline.
    #[arg(long)]
    resend: bool,
    /// Lab mode: accept the seed's literal PIN in the SMS, besides token signatures.
    #[arg(long)]
    pin_in_sms: bool,
    /// Send no SMS at all (benchmarks of channel 121 alone).
    #[arg(long)]
    null_sms: bool,
    /// Seconds one call to a peer may take.
    #[arg(long, value_name = "SECONDS", default_value_t = 5)]
    peer_timeout: u64,
    /// Fault injection for the tests: stall-after-prepare, alter-bill, fail-credit.
    #[cfg(feature = "test-faults")]
    #[arg(long, hide = true, value_name = "FAULT")]
    fault: Option<String>,
}

#[derive(clap::Args, Debug)]
pub struct SubscribeArgs {
    #[arg(long, value_name = "FILE|URL")]
    db: String,
    #[arg(long, value_name = "NUMBER")]
    msisdn: String,
    /// The services: pay, ticket, bill (comma-separated).
    #[arg(long, value_name = "LIST", default_value = "pay,ticket,bill")]
    services: String,
    /// The token's public key, uncompressed SEC1 hex (04…).
    #[arg(long, value_name = "HEX", conflicts_with = "from_token")]
    public_key: Option<String>,
    /// Read the key from the token (the global --emulate/--reader/--serial options).
    #[arg(long)]
    from_token: bool,
    /// Lab mode: the service PIN (4 to 8 digits) on the first line of this file.
    #[arg(long, value_name = "FILE")]
    pin_file: Option<PathBuf>,
    #[arg(long)]
    replace: bool,
    #[arg(long, value_name = "FILE", long_help = STATE_HELP, value_parser = crate::cli::file_arg)]
    state: Option<PathBuf>,
}

#[derive(clap::Args, Debug)]
pub struct AccountArgs {
    #[arg(long, value_name = "FILE|URL")]
    db: String,
    #[arg(long, value_name = "NUMBER")]
    msisdn: String,
    /// The amount paid in, in minor units (0 opens an empty account).
    #[arg(long, value_name = "MINOR", default_value_t = 0)]
    fund: u64,
    #[arg(long, value_name = "CODE", default_value = "EUR")]
    currency: String,
}

#[derive(clap::Args, Debug)]
pub struct TicketArgs {
    #[arg(long, value_name = "FILE|URL")]
    db: String,
    #[arg(long, value_name = "ID")]
    id: String,
    #[arg(long, value_name = "NUMBER")]
    owner: String,
    #[arg(long, value_name = "N")]
    uses: u32,
    /// What the ticket is for (shown to people).
    #[arg(long, value_name = "NAME", default_value = "transit")]
    service: String,
    #[arg(long, value_name = "DAYS", default_value_t = 365)]
    valid_days: u64,
}

#[derive(Subcommand, Debug)]
pub enum PeerCommand {
    /// Add (or with --replace, update) a peer.
    #[command(after_help = "\
Example:
  simlab operator peer add --db op1.sqlite --name OP2 --url https://127.0.0.1:9442 \\
      --country-code 49 --prefix 172 --certificate op2-tls/cert.pem")]
    Add {
        #[arg(long, value_name = "FILE|URL")]
        db: String,
        /// The peer's name: its certificate's CN.
        #[arg(long)]
        name: String,
        #[arg(long, value_name = "URL")]
        url: String,
        /// The country code of its numbers (49, not +49).
        #[arg(long, value_name = "CC")]
        country_code: String,
        /// A local prefix of its numbers (repeatable; none: the whole country).
        #[arg(long = "prefix", value_name = "DIGITS")]
        prefixes: Vec<String>,
        /// Its peer certificate (PEM), pinned: channel 121 accepts only this one.
        #[arg(long, value_name = "FILE")]
        certificate: PathBuf,
        #[arg(long)]
        replace: bool,
    },
    /// Every peer.
    List {
        #[arg(long, value_name = "FILE|URL")]
        db: String,
    },
}

fn store_error(arg: &str, e: StoreError) -> Error {
    match e {
        StoreError::Sql(s) if s.is_bad_input() => Error::arg(arg, s.to_string()),
        StoreError::Exists(what) => Error::arg(arg, format!("{what}: give --replace to update it")),
        StoreError::Missing(what) | StoreError::Limit(what) => Error::arg(arg, what),
        other => Error::Io {
            context: "the operator store".into(),
            source: std::io::Error::other(other.to_string()),
        },
    }
}

fn open_store(db: &str) -> Result<Store> {
    Store::open(db).map_err(|e| store_error("--db", e))
}

fn number_arg(arg: &str, n: &str) -> Result<()> {
    messages::check_number("number", n).map_err(|_| {
        Error::arg(
            arg,
            format!("{n:?} is not an international number (+ and up to 15 digits)"),
        )
    })
}

pub fn run(out: &Output, global: &Global, cmd: &OperatorCommand) -> Result<i32> {
    match cmd {
        OperatorCommand::Serve(a) => serve(out, global, a),
        OperatorCommand::Subscribe(a) => subscribe(out, global, a),
        OperatorCommand::Account(a) => account(out, a),
        OperatorCommand::Ticket(a) => ticket(out, a),
        OperatorCommand::Peer(c) => peer(out, c),
        OperatorCommand::Ledger { db } => ledger(out, db),
        OperatorCommand::Agents { db, all, tref } => agents(out, db, *all, tref.as_deref()),
    }
}

fn serve(out: &Output, global: &Global, a: &ServeArgs) -> Result<i32> {
    if !(10..=86_400).contains(&a.answer_ttl) {
        return Err(Error::arg("--answer-ttl", "must be 10 to 86400 seconds"));
    }
    if !(1..=120).contains(&a.peer_timeout) {
        return Err(Error::arg("--peer-timeout", "must be 1 to 120 seconds"));
    }
    if a.pin_in_sms && global.trace.is_some() {
        // The incoming M1/M4 PDUs would go into the trace as they came off the modem, and
        // in this mode they hold the subscribers' PINs.
        return Err(Error::arg(
            "--trace",
            "not with --pin-in-sms: the service messages carry PINs in that mode and the trace would record them",
        ));
    }
    #[cfg(feature = "test-faults")]
    let fault = match a.fault.as_deref() {
        None => None,
        Some("stall-after-prepare") => Some(Fault::StallAfterPrepare),
        Some("alter-bill") => Some(Fault::AlterBill),
        Some("fail-credit") => Some(Fault::FailCredit),
        Some(other) => return Err(Error::arg("--fault", format!("{other:?} is not a fault"))),
    };
    #[cfg(not(feature = "test-faults"))]
    let fault: Option<Fault> = None;
    let tls = ServerTls::from_dir(&a.tls).map_err(|e| Error::arg("--tls", e.to_string()))?;
    let client_tls = ClientTls::mutual(&a.tls).map_err(|e| Error::arg("--tls", e.to_string()))?;
    let me = client_tls.identity.as_ref().and_then(|i| i.peer());
    let name = match &me {
        Some(p) if p.role == Role::Peer => p.name.clone(),
        other => {
            return Err(Error::arg(
                "--tls",
                format!(
                    "the certificate is for {}, not a peer (gateway issue --role peer)",
                    other
                        .as_ref()
                        .map_or("no role".to_string(), |p| p.role.as_str().to_string())
                ),
            ));
        }
    };
    messages::check_operator(&name).map_err(|e| Error::arg("--tls", e.to_string()))?;
    if a.null_sms == global.modem.is_some() {
        return Err(Error::arg(
            "--modem",
            "the service node needs a modem: --modem PATH (a real one, or a node of `simlab emulate smsc`), or --null-sms (not both)",
        ));
    }
    let store = open_store(&a.db)?;
    let sms: Box<dyn SmsBackend> = match &global.modem {
        None => Box::new(NullBackend::default()),
        Some(path) => Box::new(AtBackend::open(path, super::modem::options(global)?)?),
    };
    let server = Server::bind(&a.listen, Some(tls), "operator")
        .map_err(|e| Error::arg("--listen", format!("{}: {e}", a.listen)))?;
    let operator = Operator::new(
        Config {
            name: name.clone(),
            client_tls,
            answer_ttl: a.answer_ttl,
            resend: a.resend,
            pin_in_sms: a.pin_in_sms,
            peer_timeout: Duration::from_secs(a.peer_timeout),
            fault,
        },
        store,
        sms,
    )
    .map_err(|e| store_error("--db", e))?;
    let operator = Arc::new(operator);
    let url = server.url();
    let describe = operator.describe_sms();
    if out.json() {
        print_line(
            &json!({"role": "operator", "name": name, "url": url, "sms": describe}).to_string(),
        );
    } else {
        print_line(&format!(
            "operator {name} listening on {url} (SMS: {describe})"
        ));
    }
    tracing::info!(name = %name, url = %url, sms = %describe, "operator started");
    let stop = Arc::new(AtomicBool::new(false));
    let spawn = |label: &str, f: Box<dyn Fn() + Send>| {
        let stop = stop.clone();
        std::thread::Builder::new()
            .name(label.into())
            .spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    f();
                    std::thread::sleep(Duration::from_millis(150));
                }
            })
            .map_err(|source| Error::Io {
                context: format!("starting the {label} thread"),
                source,
            })
    };
    let sms_loop = {
        let op = operator.clone();
        spawn(
            "operator-sms",
            Box::new(move || {
                if let Err(e) = op.sms_round() {
                    tracing::warn!(error = %e, "SMS");
                    std::thread::sleep(Duration::from_millis(500));
                }
            }),
        )?
    };
    let worker = {
        let op = operator.clone();
        let rounds = std::sync::atomic::AtomicU32::new(0);
        spawn(
            "operator-worker",
            Box::new(move || {
                // `operator peer add` on the live store takes effect within ~5 s (every
                // 32nd round of 150 ms), no restart needed.
                if rounds.fetch_add(1, Ordering::Relaxed) % 32 == 31
                    && let Err(e) = op.reload()
                {
                    tracing::warn!(error = %e, "reading the peer table");
                }
                if let Err(e) = op.drive() {
                    tracing::warn!(error = %e, "worker");
                }
            }),
        )?
    };
    let limits = Limits::default();
    let handler = {
        let op = operator.clone();
        Arc::new(move |req: &simlab_services::http::Request| op.handle(req))
    };
    let served = server.run(handler, limits, Stop::Signals);
    stop.store(true, Ordering::Relaxed);
    let _ = sms_loop.join();
    let _ = worker.join();
    served.map_err(|source| Error::Io {
        context: format!("serving on {url}"),
        source,
    })?;
    Ok(0)
}

fn subscribe(out: &Output, global: &Global, a: &SubscribeArgs) -> Result<i32> {
    number_arg("--msisdn", &a.msisdn)?;
    let services = a
        .services
        .split(',')
        .map(|s| {
            Service::parse(s.trim()).ok_or_else(|| {
                Error::arg("--services", format!("{s:?} is not pay, ticket or bill"))
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let public_key = if let Some(h) = &a.public_key {
        Some(
            simlab_services::bytes::unhex(h)
                .filter(|k| simlab_card::token::PublicKey::from_sec1(k).is_ok())
                .ok_or_else(|| {
                    Error::arg(
                        "--public-key",
                        "not an uncompressed P-256 point (04 and 64 bytes, hex)",
                    )
                })?,
        )
    } else if a.from_token {
        let card = open_card(out, global, a.state.as_deref())?;
        let mut token = open_token(&card, global, None)?;
        let key = token.public_key()?.ok_or_else(|| Error::Mismatch {
            what: "the token has no key yet: `simlab token keygen` first".into(),
        })?;
        Some(key.0.to_vec())
    } else {
        None
    };
    let pin = match &a.pin_file {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| Error::arg("--pin-file", format!("{}: {e}", path.display())))?;
            let pin = text.lines().next().unwrap_or("").trim().to_string();
            messages::check_pin(&pin).map_err(|e| Error::arg("--pin-file", e.to_string()))?;
            Some(
                simlab_services::sign::password_verifier(&pin).map_err(|e| Error::Io {
                    context: "the PIN verifier".into(),
                    source: std::io::Error::other(e),
                })?,
            )
        }
        None => None,
    };
    if public_key.is_none() && pin.is_none() {
        return Err(Error::arg(
            "--public-key",
            "a subscription needs the token's key (--public-key or --from-token) or, in the lab mode, --pin-file",
        ));
    }
    let store = open_store(&a.db)?;
    let s = Subscription::new(&a.msisdn, services.clone(), pin, public_key.clone());
    store
        .put_subscription(&s, a.replace)
        .map_err(|e| store_error("--msisdn", e))?;
    let names: Vec<&str> = services.iter().map(|s| s.as_str()).collect();
    out.result(
        &format!(
            "{} subscribed to {}{}\n",
            a.msisdn,
            names.join(", "),
            if public_key.is_some() {
                " with the token's key"
            } else {
                " with a service PIN (lab mode)"
            }
        ),
        &json!({"msisdn": a.msisdn, "services": names, "public_key": public_key.as_deref().map(hex), "pin": s.has_pin()}),
    )?;
    Ok(0)
}

fn account(out: &Output, a: &AccountArgs) -> Result<i32> {
    number_arg("--msisdn", &a.msisdn)?;
    simlab_services::sign::check_currency(&a.currency).map_err(|e| Error::arg("--currency", e))?;
    if a.fund > messages::AMOUNT_MAX {
        return Err(Error::arg(
            "--fund",
            format!("at most {} minor units", messages::AMOUNT_MAX),
        ));
    }
    let store = open_store(&a.db)?;
    let acc = store
        .fund(&a.msisdn, a.fund, &a.currency)
        .map_err(|e| match e {
            e @ StoreError::Limit(_) => store_error("--fund", e),
            e => store_error("--currency", e),
        })?;
    out.result(
        &format!(
            "{}: balance {} {} (held {})\n",
            acc.msisdn, acc.balance, acc.currency, acc.held
        ),
        &json!(acc),
    )?;
    Ok(0)
}

fn ticket(out: &Output, a: &TicketArgs) -> Result<i32> {
    number_arg("--owner", &a.owner)?;
    messages::check_ticket_id(&a.id).map_err(|e| Error::arg("--id", e.to_string()))?;
    if a.uses == 0 {
        return Err(Error::arg("--uses", "at least 1"));
    }
    if a.service.is_empty() || a.service.len() > 32 || a.service.chars().any(char::is_control) {
        return Err(Error::arg("--service", "1 to 32 characters"));
    }
    let store = open_store(&a.db)?;
    let t = Ticket {
        id: a.id.clone(),
        owner: a.owner.clone(),
        service: a.service.clone(),
        uses: a.uses,
        held: 0,
        valid_until: simlab_services::pki::now() + a.valid_days.min(3650) * 86_400,
    };
    store.add_ticket(&t).map_err(|e| store_error("--id", e))?;
    out.result(
        &format!(
            "ticket {} for {}: {} uses of {}\n",
            t.id, t.owner, t.uses, t.service
        ),
        &json!(t),
    )?;
    Ok(0)
}

fn peer(out: &Output, cmd: &PeerCommand) -> Result<i32> {
    match cmd {
        PeerCommand::Add {
            db,
            name,
            url,
            country_code,
            prefixes,
            certificate,
            replace,
        } => {
            messages::check_operator(name).map_err(|e| Error::arg("--name", e.to_string()))?;
            let u = super::pki::url_arg("--url", url)?;
            if u.is_plain() {
                return Err(Error::arg("--url", "channel 121 is https:// only"));
            }
            simlab_services::router::check_country_code(country_code)
                .map_err(|e| Error::arg("--country-code", e.to_string()))?;
            for p in prefixes {
                simlab_services::router::check_prefix(p)
                    .map_err(|e| Error::arg("--prefix", e.to_string()))?;
            }
            let pem = std::fs::read(certificate).map_err(|e| {
                Error::arg("--certificate", format!("{}: {e}", certificate.display()))
            })?;
            let der = simlab_services::http::tls::load_certificates(certificate)
                .ok()
                .and_then(|c| c.into_iter().next())
                .map(|c| c.as_ref().to_vec())
                .ok_or_else(|| {
                    Error::arg(
                        "--certificate",
                        format!(
                            "{}: no PEM certificate ({} bytes)",
                            certificate.display(),
                            pem.len()
                        ),
                    )
                })?;
            let cert = Certificate::from_der(&der)
                .map_err(|e| Error::arg("--certificate", e.to_string()))?;
            let store = open_store(db)?;
            let row = PeerRow {
                name: name.clone(),
                url: url.clone(),
                country_code: country_code.clone(),
                prefixes: prefixes.clone(),
                certificate_der: der,
            };
            store
                .put_peer(&row, *replace)
                .map_err(|e| store_error("--name", e))?;
            out.result(
                &format!(
                    "peer {name} at {url}: +{country_code} {} (certificate {})\n",
                    if prefixes.is_empty() {
                        "(whole country)".to_string()
                    } else {
                        prefixes.join(", ")
                    },
                    cert.serial_hex()
                ),
                &json!({"name": name, "url": url, "country_code": country_code, "prefixes": prefixes, "serial": cert.serial_hex()}),
            )?;
            Ok(0)
        }
        PeerCommand::List { db } => {
            let store = open_store(db)?;
            let peers = store.peers().map_err(|e| store_error("--db", e))?;
            let mut text = String::new();
            let mut rows = Vec::new();
            for p in &peers {
                text.push_str(&format!(
                    "{:<12} {:<28} +{} {}\n",
                    p.name,
                    p.url,
                    p.country_code,
                    p.prefixes.join(",")
                ));
                rows.push(json!({"name": p.name, "url": p.url, "country_code": p.country_code, "prefixes": p.prefixes}));
            }
            out.result(&text, &Value::Array(rows))?;
            Ok(0)
        }
    }
}

fn ledger(out: &Output, db: &str) -> Result<i32> {
    let store = open_store(db)?;
    let e = |e| store_error("--db", e);
    let accounts = store.accounts().map_err(e)?;
    let tickets = store.tickets().map_err(e)?;
    let l = store.ledger().map_err(e)?;
    let mut text = String::from("accounts\n");
    for a in &accounts {
        text.push_str(&format!(
            "  {:<16} {:>12} {} (held {})\n",
            a.msisdn, a.balance, a.currency, a.held
        ));
    }
    text.push_str("tickets\n");
    for t in &tickets {
        text.push_str(&format!(
            "  {:<24} {:<16} {:>4} uses of {} (held {})\n",
            t.id, t.owner, t.uses, t.service, t.held
        ));
    }
    text.push_str("settlement (payable / receivable)\n");
    for (peer, pay, recv) in &l.peers {
        text.push_str(&format!("  {peer:<12} {pay:>12} / {recv}\n"));
    }
    let balanced = l.balanced();
    text.push_str(&format!(
        "ledger: balances {} = funded {} - payable {} + receivable {}: {}\n",
        l.balances,
        l.funded,
        l.payable,
        l.receivable,
        if balanced { "balanced" } else { "NOT BALANCED" }
    ));
    let peers: Vec<Value> = l
        .peers
        .iter()
        .map(|(p, pay, recv)| json!({"peer": p, "payable": pay, "receivable": recv}))
        .collect();
    out.result(
        &text,
        &json!({
            "accounts": accounts, "tickets": tickets, "settlement": peers,
            "balances": l.balances, "held": l.held, "funded": l.funded,
            "payable": l.payable, "receivable": l.receivable, "balanced": balanced,
        }),
    )?;
    Ok(if balanced { 0 } else { 1 })
}

fn agents(out: &Output, db: &str, all: bool, tref: Option<&str>) -> Result<i32> {
    let store = open_store(db)?;
    let e = |e| store_error("--db", e);
    let list = match tref {
        Some(t) => {
            let t: [u8; 8] = simlab_services::bytes::unhex(t)
                .and_then(|b| b.try_into().ok())
                .ok_or_else(|| Error::arg("--tref", format!("{t:?} is not 16 hex digits")))?;
            store.agent(&t).map_err(e)?.into_iter().collect()
        }
        None if all => store.agents(&[], 1000).map_err(e)?,
        None => store.agents(&State::ACTIVE, 1000).map_err(e)?,
    };
    let mut text = String::new();
    let mut rows = Vec::new();
    for a in &list {
        text.push_str(&format!(
            "{} {:<8} {:<16} {} → {} {} ({}){}\n",
            hex(&a.tref),
            a.service.as_str(),
            a.state.as_str(),
            a.sender,
            a.receiver,
            a.goods.display(),
            a.side.as_str(),
            a.cause
                .as_deref()
                .map(|c| format!(": {c}"))
                .unwrap_or_default()
        ));
        let log = if tref.is_some() {
            let log = store.log(&a.tref).map_err(e)?;
            for (at, ev) in &log {
                text.push_str(&format!(
                    "  {} {ev}\n",
                    simlab_services::pki::der::iso8601(*at)
                ));
            }
            Some(
                log.into_iter()
                    .map(|(at, ev)| json!({"at": at, "event": ev}))
                    .collect::<Vec<_>>(),
            )
        } else {
            None
        };
        rows.push(json!({
            "tref": hex(&a.tref), "service": a.service, "state": a.state, "side": a.side,
            "origin": a.origin, "sender": a.sender, "receiver": a.receiver, "peer": a.peer,
            "goods": a.goods, "message": a.message, "cause": a.cause, "deadline": a.deadline,
            "resent": a.resent, "new_ticket": a.new_ticket, "log": log,
        }));
    }
    out.result(&text, &Value::Array(rows))?;
    Ok(0)
}
