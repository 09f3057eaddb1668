//! `simlab otp serve|directory|policy|login|pay|log|register|bank`: seed 004 as a service —
//! the first-channel server with its directory, sessions and certificate log, terminal A's
//! client, and the bank stub.

use super::{Global, Output, print_line};
use clap::{Args, Subcommand};
use serde_json::{Value, json};
use simlab_card::error::{Error, Result};
use simlab_modem::backend::{AtBackend, NullBackend, SmsBackend};
use simlab_services::http::Role;
use simlab_services::http::client::{self, Url};
use simlab_services::http::server::{Handler, Limits, Server, Stop, blocking_router};
use simlab_services::http::tls::{ClientTls, ServerTls};
use simlab_services::otp::bank::Bank;
use simlab_services::otp::lookup::Lookup;
use simlab_services::otp::msisdn::{self, masked};
use simlab_services::otp::service::{Config, MacKey, OtpService, Rate};
use simlab_services::otp::store::{Entry, Store, StoreError};
use simlab_services::otp::{self, check_currency, check_payee, format_amount};
use simlab_services::pki::der::iso8601;
use simlab_services::sql::is_postgres;
use std::io::{BufRead, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

#[derive(Args, Debug)]
#[command(after_help = "\
Terminal A (a PC, a payment terminal) opens a session for an identifier; the server looks the
identifier up in its directory (`simlab otp directory add`), or asks the operator's look-up
service (--lookup) for its certified number. A login, or a payment greater than the stored
limit (`simlab otp policy --limit`), gets a random code by SMS — amount, payee and items in
clear, TP-VP = the code's lifetime — which the person types back on terminal A. Payments at or
under the limit are validated in one step and recorded as \"normal\". With --bank, the bank
authorizes every payment first; a decline sends nothing. In the reverse direction the code is
shown on terminal A and sent back by SMS from the registered number; the server reads its
modem's incoming messages.

The store keeps only a MAC of each code, under a key in its own 0600 file (--key; default
DB.key beside an SQLite file): the database alone reveals no live code. Codes expire, are
single use, and are blocked after 5 wrong tries; closing a session voids its codes.

The SMS go through --modem (a real modem's AT port, or `simlab emulate modem`); --null-sms
sends nothing (benchmarks of the server alone). Ctrl-C or SIGTERM stops it.

Example:
  simlab --modem /dev/ttyUSB2 otp serve --db otp-service.sqlite --tls otp-tls \\
      --bank https://127.0.0.1:8721 --listen 127.0.0.1:8720")]
pub struct ServeArgs {
    /// The store: an SQLite file, or `postgres://USER@HOST:PORT/DB`.
    #[arg(long, value_name = "FILE|URL")]
    db: String,
    /// The MAC key file (32 bytes, mode 0600; created when missing). Default: DB.key for an
    /// SQLite store; required with PostgreSQL.
    #[arg(long, value_name = "FILE")]
    key: Option<PathBuf>,
    /// HOST:PORT to listen on (port 0 picks one; the first line printed says which).
    #[arg(long, value_name = "HOST:PORT", default_value = "127.0.0.1:8720")]
    listen: String,
    /// The server's TLS identity (cert.pem, key.pem, ca.pem), a `peer` certificate
    /// (`simlab gateway issue --role peer --name otp`): it serves terminal A and presents
    /// itself to the bank and the look-up service.
    #[arg(long, value_name = "DIR", value_parser = crate::cli::dir_arg)]
    tls: PathBuf,
    /// The bank that authorizes payments (`simlab otp bank serve`).
    #[arg(long, value_name = "URL")]
    bank: Option<String>,
    /// The operator's look-up for identifiers the directory lacks: GET URL/v1/subscribers/ID
    /// answering {"msisdn": …}.
    #[arg(long, value_name = "URL")]
    lookup: Option<String>,
    /// Seconds a code lives (60-600).
    #[arg(long, value_name = "SECONDS", default_value_t = 300)]
    ttl: u64,
    /// Digits of a code (6-10).
    #[arg(long, value_name = "N", default_value_t = 6)]
    digits: u8,
    /// Seconds a session stays open unless closed.
    #[arg(long, value_name = "SECONDS", default_value_t = 900)]
    session_ttl: u64,
    /// At most COUNT sessions per identifier per SECONDS.
    #[arg(long, value_name = "COUNT/SECONDS", default_value = "10/600")]
    sessions: String,
    /// At most COUNT codes by SMS per number per SECONDS.
    #[arg(long, value_name = "COUNT/SECONDS", default_value = "3/600")]
    codes: String,
    /// Send no SMS at all (benchmarks of the server alone).
    #[arg(long)]
    null_sms: bool,
    /// Test fault: the clock is the system's plus the seconds written in this file.
    #[cfg(feature = "test-faults")]
    #[arg(long, value_name = "FILE", hide = true)]
    clock_offset_file: Option<PathBuf>,
}

#[derive(Subcommand, Debug)]
pub enum DirectoryCommand {
    /// Add an identifier with its certified number (database 107).
    #[command(after_help = "\
The number is stored in E.164 (`00491700000099`, `+49 (0)170 0000099` and `491700000099` are
all +491700000099). The bank and card reference go to the bank with each payment.

Example:
  simlab otp directory add --db otp-service.sqlite --id u1 --msisdn +491700000099 \\
      --bank demo-bank --card card-0001")]
    Add {
        #[arg(long, value_name = "FILE|URL")]
        db: String,
        /// The identifier terminal A gives (a customer number, a login).
        #[arg(long = "id", value_name = "ID")]
        identifier: String,
        /// The certified number the codes go to.
        #[arg(long, value_name = "NUMBER")]
        msisdn: String,
        /// The bank that holds the account.
        #[arg(long, value_name = "NAME")]
        bank: Option<String>,
        /// The card reference the bank knows (not a card number).
        #[arg(long, value_name = "REF")]
        card: Option<String>,
    },
    /// List the directory.
    List {
        #[arg(long, value_name = "FILE|URL")]
        db: String,
    },
    /// Remove an identifier.
    Remove {
        #[arg(long, value_name = "FILE|URL")]
        db: String,
        #[arg(long = "id", value_name = "ID")]
        identifier: String,
    },
}

#[derive(Args, Debug)]
pub struct PolicyArgs {
    #[arg(long, value_name = "FILE|URL")]
    db: String,
    /// Payments greater than this (minor units) are secured by a code; the others are normal.
    #[arg(long, value_name = "MINOR_UNITS", conflicts_with = "no_limit")]
    limit: Option<u64>,
    /// Secure every payment.
    #[arg(long)]
    no_limit: bool,
}

#[derive(Args, Debug)]
pub struct ClientArgs {
    /// The OTP server.
    #[arg(long, value_name = "URL")]
    server: String,
    /// The CA that certified the server (PEM).
    #[arg(long, value_name = "FILE", value_parser = crate::cli::file_arg)]
    ca: PathBuf,
    /// Who is logging in or paying.
    #[arg(long = "id", value_name = "ID")]
    identifier: String,
    /// The code from the SMS; `-` reads it from stdin. Without it, it is asked for on the
    /// terminal.
    #[arg(long, value_name = "CODE")]
    code: Option<String>,
    /// Aspects 2 and 3: show the code here, to be sent back by SMS from the registered phone.
    #[arg(long)]
    reverse: bool,
}

#[derive(Args, Debug)]
#[command(after_help = "\
Opens a session, asks for the payment and, when it is secured, asks for the code the SMS
brought (or takes --code). The answer says: validated, or refused with its cause (wrong_code,
expired, mismatch, blocked, already_used, bank_declined …). Exit 0 validated, 1 refused.

Example:
  simlab otp pay --server https://127.0.0.1:8720 --ca otp-ca/ca.pem --id u1 --amount 15000 \\
      --currency EUR --payee 'ACME Shop' --item 'Concert ticket=2'")]
pub struct PayArgs {
    #[command(flatten)]
    client: ClientArgs,
    /// Minor units (cents): 15000 is 150.00 EUR.
    #[arg(long, value_name = "MINOR_UNITS")]
    amount: u64,
    #[arg(long, value_name = "CODE", default_value = "EUR")]
    currency: String,
    /// Who is paid (1-40 characters).
    #[arg(long, value_name = "NAME")]
    payee: String,
    /// An item, PRODUCT=QUANTITY (repeatable).
    #[arg(long = "item", value_name = "PRODUCT=QUANTITY")]
    items: Vec<String>,
    /// The account debited.
    #[arg(long = "from", value_name = "ACCOUNT", default_value = "")]
    account_from: String,
    /// The account credited.
    #[arg(long = "to", value_name = "ACCOUNT", default_value = "")]
    account_to: String,
}

#[derive(Args, Debug)]
pub struct LogArgs {
    #[arg(long, value_name = "FILE|URL")]
    db: String,
    /// Only this identifier's certificates.
    #[arg(long = "id", value_name = "ID")]
    identifier: Option<String>,
}

#[derive(Args, Debug)]
#[command(after_help = "\
Shows each identifier's register (every validated amount added) and, with --from/--to, the
settlement of the period: validated payments per identifier and currency.

Example:
  simlab otp register --db otp-service.sqlite --from 2026-12-01 --to 2027-01-01 --json")]
pub struct RegisterArgs {
    #[arg(long, value_name = "FILE|URL")]
    db: String,
    /// Start of the period (YYYY-MM-DD, UTC, inclusive).
    #[arg(long, value_name = "DATE")]
    from: Option<String>,
    /// End of the period (YYYY-MM-DD, UTC, exclusive).
    #[arg(long, value_name = "DATE")]
    to: Option<String>,
}

#[derive(Subcommand, Debug)]
pub enum BankCommand {
    /// A bank stub that authorizes payments for OTP servers (peer certificates).
    Serve {
        #[arg(long, value_name = "HOST:PORT", default_value = "127.0.0.1:8721")]
        listen: String,
        /// Its TLS identity (a `server` certificate from the same CA).
        #[arg(long, value_name = "DIR", value_parser = crate::cli::dir_arg)]
        tls: PathBuf,
        /// Decline every payment.
        #[arg(long)]
        decline: bool,
        /// Decline payments above this (minor units).
        #[arg(long, value_name = "MINOR_UNITS")]
        limit: Option<u64>,
    },
}

#[derive(Subcommand, Debug)]
pub enum LookupCommand {
    /// An operator's look-up stub: the certified number of identifiers the OTP server's own
    /// directory does not have (peer certificates only).
    #[command(after_help = "\
Answers GET /v1/subscribers/{identifier} with {\"msisdn\": …}, or 404 unknown_subscriber.
The numbers are returned as given here, not canonicalised: the OTP server canonicalises what
any operator answers.

Example:
  simlab otp lookup serve --tls lookup-tls --subscriber u3=00491700000097")]
    Serve {
        #[arg(long, value_name = "HOST:PORT", default_value = "127.0.0.1:8722")]
        listen: String,
        /// Its TLS identity (a `server` certificate from the same CA).
        #[arg(long, value_name = "DIR", value_parser = crate::cli::dir_arg)]
        tls: PathBuf,
        /// A subscriber the operator knows, IDENTIFIER=NUMBER (repeat).
        #[arg(long, value_name = "IDENTIFIER=NUMBER", value_parser = subscriber_arg)]
        subscriber: Vec<(String, String)>,
    },
}

fn subscriber_arg(s: &str) -> std::result::Result<(String, String), String> {
    match s.split_once('=') {
        Some((id, number)) if !id.trim().is_empty() && !number.trim().is_empty() => {
            Ok((id.trim().to_string(), number.trim().to_string()))
        }
        _ => Err(format!("{s:?} is not IDENTIFIER=NUMBER")),
    }
}

fn store_error(e: StoreError) -> Error {
    match e {
        StoreError::Sql(e) if e.is_bad_input() => Error::arg("--db", e.to_string()),
        StoreError::Exists(what) => Error::arg("--id", format!("{what} exists already")),
        other => Error::Io {
            context: "the OTP store".into(),
            source: std::io::Error::other(super::mec::with_causes(&other)),
        },
    }
}

fn open_store(db: &str) -> Result<Store> {
    Store::open(db).map_err(store_error)
}

fn rate(arg: &str, text: &str) -> Result<Rate> {
    text.split_once('/')
        .and_then(|(c, s)| Some((c.parse::<u64>().ok()?, s.parse::<u64>().ok()?)))
        .filter(|(c, s)| *c > 0 && *s > 0)
        .map(|(count, window)| Rate { count, window })
        .ok_or_else(|| Error::arg(arg, format!("{text:?}: expected COUNT/SECONDS, e.g. 3/600")))
}

fn https(arg: &str, text: &str, tls: &ClientTls) -> Result<Url> {
    let url = Url::parse(text).map_err(|e| Error::arg(arg, e.to_string()))?;
    if url.is_plain() {
        return Err(Error::arg(arg, format!("{text}: HTTPS only")));
    }
    Ok(url.with_tls(tls))
}

pub fn serve(out: &Output, global: &Global, a: &ServeArgs) -> Result<i32> {
    // Every argument is checked before the modem, the store or the port is touched.
    let code_ttl = Duration::from_secs(a.ttl);
    if !(otp::MIN_TTL..=otp::MAX_TTL).contains(&code_ttl) {
        return Err(Error::arg("--ttl", "must be 60 to 600 seconds"));
    }
    if !(otp::MIN_DIGITS..=otp::MAX_DIGITS).contains(&a.digits) {
        return Err(Error::arg("--digits", "must be 6 to 10"));
    }
    if a.session_ttl < 60 {
        return Err(Error::arg("--session-ttl", "at least 60 seconds"));
    }
    let sessions = rate("--sessions", &a.sessions)?;
    let codes = rate("--codes", &a.codes)?;
    let key_path = match (&a.key, is_postgres(&a.db)) {
        (Some(k), _) => k.clone(),
        (None, false) => otp::key_file(Path::new(&a.db)),
        (None, true) => {
            return Err(Error::arg(
                "--key",
                "a PostgreSQL store needs --key FILE: the MAC key never goes into the database",
            ));
        }
    };
    let client = ClientTls::mutual(&a.tls).map_err(|e| Error::arg("--tls", e.to_string()))?;
    match client.identity.as_ref().and_then(|i| i.peer()) {
        Some(p) if p.role == Role::Peer => {}
        other => {
            return Err(Error::arg(
                "--tls",
                format!(
                    "the certificate is for {}, not a peer (gateway issue --role peer --name otp)",
                    other.map_or("no role".to_string(), |p| p.role.as_str().to_string())
                ),
            ));
        }
    }
    let server_tls = ServerTls::from_dir(&a.tls).map_err(|e| Error::arg("--tls", e.to_string()))?;
    let bank = a
        .bank
        .as_deref()
        .map(|b| https("--bank", b, &client))
        .transpose()?;
    let lookup = a
        .lookup
        .as_deref()
        .map(|l| https("--lookup", l, &client))
        .transpose()?;
    if a.null_sms && global.modem.is_some() {
        return Err(Error::arg(
            "--null-sms",
            "give --modem or --null-sms, not both",
        ));
    }
    if !a.null_sms && global.modem.is_none() {
        return Err(Error::arg(
            "--modem",
            "the codes need a modem: --modem PATH (a real one, or `simlab emulate modem`), or --null-sms",
        ));
    }
    #[cfg(feature = "test-faults")]
    let clock: Arc<dyn Fn() -> i64 + Send + Sync> = match a.clock_offset_file.clone() {
        Some(file) => Arc::new(move || {
            let offset = std::fs::read_to_string(&file)
                .ok()
                .and_then(|s| s.trim().parse::<i64>().ok())
                .unwrap_or(0);
            simlab_services::pki::now() as i64 + offset
        }),
        None => Arc::new(|| simlab_services::pki::now() as i64),
    };
    #[cfg(not(feature = "test-faults"))]
    let clock: Arc<dyn Fn() -> i64 + Send + Sync> = Arc::new(|| simlab_services::pki::now() as i64);

    let store = open_store(&a.db)?;
    let key = MacKey::load_or_create(&key_path).map_err(|e| Error::arg("--key", e.to_string()))?;
    let sms: Box<dyn SmsBackend> = if a.null_sms {
        Box::new(NullBackend::default())
    } else {
        let path = global.modem.as_deref().unwrap_or(Path::new(""));
        Box::new(AtBackend::open(path, super::modem::options(global)?)?)
    };
    let describe = sms.describe();
    let server = Server::bind(&a.listen, Some(server_tls), "otp")
        .map_err(|e| Error::arg("--listen", format!("{}: {e}", a.listen)))?;
    let config = Config {
        key,
        code_ttl,
        digits: a.digits,
        session_ttl: a.session_ttl,
        sessions,
        codes,
        bank,
        lookup,
        clock,
    };
    let service = Arc::new(OtpService::new(config, store, sms));
    let url = server.url();
    if out.json() {
        print_line(&json!({"role": "otp", "url": url, "tls": true, "sms": describe}).to_string());
    } else {
        print_line(&format!("otp listening on {url} (SMS: {describe})"));
    }
    tracing::info!(url = %url, sms = %describe, bank = a.bank.as_deref().unwrap_or("-"), "OTP service started");
    // The second channel's way back (reverse direction) and the session deadlines.
    let stop = Arc::new(AtomicBool::new(false));
    let poller = {
        let (service, stop) = (service.clone(), stop.clone());
        std::thread::Builder::new()
            .name("otp-poll".into())
            .spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    service.poll();
                    if let Err(e) = service.sweep() {
                        tracing::warn!(error = %e, "closing timed-out sessions");
                    }
                    std::thread::sleep(Duration::from_millis(300));
                }
            })
            .map_err(|source| Error::Io {
                context: "starting the SMS poller".into(),
                source,
            })?
    };
    let handler: Handler = Arc::new(move |req| service.handle(req));
    let limits = Limits::default();
    let served = server.run_router(
        blocking_router(handler, limits, "otp"),
        limits,
        Stop::Signals,
    );
    stop.store(true, Ordering::Relaxed);
    let _ = poller.join();
    served.map_err(|source| Error::Io {
        context: format!("serving on {url}"),
        source,
    })?;
    Ok(0)
}

pub fn directory(out: &Output, cmd: &DirectoryCommand) -> Result<i32> {
    match cmd {
        DirectoryCommand::Add {
            db,
            identifier,
            msisdn: number,
            bank,
            card,
        } => {
            let id = identifier.trim();
            if id.is_empty() || id.chars().count() > 64 || id.chars().any(char::is_control) {
                return Err(Error::arg("--id", "1 to 64 printable characters"));
            }
            let msisdn =
                msisdn::canonical(number).map_err(|e| Error::arg("--msisdn", e.to_string()))?;
            for (arg, v) in [("--bank", bank), ("--card", card)] {
                if let Some(v) = v
                    && (v.is_empty() || v.len() > 64 || v.chars().any(char::is_control))
                {
                    return Err(Error::arg(arg, "1 to 64 printable characters"));
                }
            }
            let store = open_store(db)?;
            store
                .add_entry(&Entry {
                    identifier: id.to_string(),
                    msisdn: msisdn.clone(),
                    bank: bank.clone(),
                    card: card.clone(),
                    added_at: simlab_services::pki::now() as i64,
                })
                .map_err(store_error)?;
            out.result(
                &format!("{id} → {msisdn}\n"),
                &json!({"identifier": id, "msisdn": msisdn, "bank": bank, "card": card}),
            )?;
            Ok(0)
        }
        DirectoryCommand::List { db } => {
            let entries = open_store(db)?.list_entries().map_err(store_error)?;
            let mut text = String::new();
            for e in &entries {
                text.push_str(&format!(
                    "{:<20} {:<16} {:<12} {}\n",
                    e.identifier,
                    e.msisdn,
                    e.bank.as_deref().unwrap_or("-"),
                    e.card.as_deref().unwrap_or("-")
                ));
            }
            if entries.is_empty() {
                text.push_str("the directory is empty\n");
            }
            let value: Vec<Value> = entries
                .iter()
                .map(|e| {
                    json!({"identifier": e.identifier, "msisdn": e.msisdn, "bank": e.bank,
                           "card": e.card, "added_at": e.added_at})
                })
                .collect();
            out.result(&text, &json!(value))?;
            Ok(0)
        }
        DirectoryCommand::Remove { db, identifier } => {
            if !open_store(db)?
                .remove_entry(identifier)
                .map_err(store_error)?
            {
                return Err(Error::arg(
                    "--id",
                    format!("{identifier:?} is not in the directory"),
                ));
            }
            out.result(
                &format!("{identifier} removed\n"),
                &json!({"removed": identifier}),
            )?;
            Ok(0)
        }
    }
}

pub fn policy(out: &Output, a: &PolicyArgs) -> Result<i32> {
    let store = open_store(&a.db)?;
    if a.limit.is_some() || a.no_limit {
        if a.limit.is_some_and(|l| l > i64::MAX as u64) {
            return Err(Error::arg("--limit", "too large"));
        }
        store.set_limit(a.limit).map_err(store_error)?;
    }
    let limit = store.limit().map_err(store_error)?;
    let text = match limit {
        Some(l) => format!("payments greater than {l} (minor units) are secured by a code\n"),
        None => "every payment is secured by a code\n".to_string(),
    };
    out.result(&text, &json!({"limit": limit}))?;
    Ok(0)
}

/// Terminal A's side of one session.
struct Terminal {
    url: Url,
    session: String,
}

fn client_error(e: client::ClientError) -> Error {
    Error::Transport(simlab_card::transport::TransportError::Device {
        reason: e.to_string(),
    })
}

impl Terminal {
    fn open(out: &Output, a: &ClientArgs) -> Result<Terminal> {
        let id = a.identifier.trim();
        if id.is_empty() {
            return Err(Error::arg("--id", "must not be empty"));
        }
        let tls = ClientTls::pinned(&a.ca).map_err(|e| Error::arg("--ca", e.to_string()))?;
        let url = https("--server", &a.server, &tls)?;
        if let Some(code) = a.code.as_deref().filter(|c| *c != "-")
            && (code.len() < 6 || code.len() > 10 || !code.bytes().all(|b| b.is_ascii_digit()))
        {
            return Err(Error::arg(
                "--code",
                "6 to 10 digits, or - to read it from stdin",
            ));
        }
        let answer = client::request(
            &url,
            "POST",
            "/v1/sessions",
            Some(json!({"identifier": id}).to_string().as_bytes()),
        )
        .map_err(client_error)?;
        let v = answer_json(answer)?;
        let session = v["session"].as_str().unwrap_or_default().to_string();
        out.detail(&format!("session opened for {id}"));
        Ok(Terminal { url, session })
    }

    fn post(&self, path: &str, body: &Value) -> Result<std::result::Result<Value, Value>> {
        let answer = client::request(
            &self.url,
            "POST",
            &format!("/v1/sessions/{}/{path}", self.session),
            Some(body.to_string().as_bytes()),
        )
        .map_err(client_error)?;
        let v: Value = serde_json::from_slice(&answer.body).unwrap_or(Value::Null);
        Ok(if (200..300).contains(&answer.status) {
            Ok(v)
        } else {
            Err(v)
        })
    }

    fn get(&self, path: &str) -> Result<Value> {
        let answer = client::request(
            &self.url,
            "GET",
            &format!("/v1/sessions/{}/{path}", self.session),
            None,
        )
        .map_err(client_error)?;
        answer_json(answer)
    }
}

impl Drop for Terminal {
    fn drop(&mut self) {
        // Closing voids whatever code is left; a session already closed is fine.
        let _ = client::request(
            &self.url,
            "DELETE",
            &format!("/v1/sessions/{}", self.session),
            None,
        );
    }
}

/// A 2xx answer's JSON; an error answer (unknown identifier, rate limit) as a refusal.
fn answer_json(answer: client::Answer) -> Result<Value> {
    let v: Value = serde_json::from_slice(&answer.body).unwrap_or(Value::Null);
    if (200..300).contains(&answer.status) {
        return Ok(v);
    }
    Err(Error::Mismatch {
        what: format!(
            "the server refused: {} ({})",
            v["error"].as_str().unwrap_or("error"),
            v["detail"].as_str().unwrap_or("")
        ),
    })
}

fn read_code(out: &Output, given: Option<&str>, sent_to: &str) -> Result<String> {
    let line = match given {
        Some("-") | None => {
            if given.is_none() && std::io::stdin().is_terminal() {
                eprint!("code sent to {sent_to}: ");
                let _ = std::io::stderr().flush();
            } else {
                out.detail("reading the code from stdin");
            }
            let mut line = String::new();
            std::io::stdin()
                .lock()
                .read_line(&mut line)
                .map_err(|source| Error::Io {
                    context: "reading the code from stdin".into(),
                    source,
                })?;
            line
        }
        Some(code) => code.to_string(),
    };
    let code = line.trim().to_string();
    if code.is_empty() || !code.bytes().all(|b| b.is_ascii_digit()) {
        return Err(Error::arg("--code", "the code is digits only"));
    }
    Ok(code)
}

/// Prints the outcome; exit 0 validated, 1 refused.
fn outcome(out: &Output, base: Value, answer: std::result::Result<Value, Value>) -> Result<i32> {
    let mut v = base;
    match answer {
        Ok(a) => {
            v["status"] = a["status"].clone();
            if let Some(access) = a.get("access") {
                v["access"] = access.clone();
            }
            out.result("validated\n", &v)?;
            Ok(0)
        }
        Err(e) => {
            v["status"] = json!("refused");
            v["cause"] = e["error"].clone();
            v["detail"] = e["detail"].clone();
            out.result(
                &format!(
                    "refused: {} ({})\n",
                    e["error"].as_str().unwrap_or("error"),
                    e["detail"].as_str().unwrap_or("")
                ),
                &v,
            )?;
            Ok(1)
        }
    }
}

/// Reverse direction: shows the code and waits until the server saw it come back by SMS.
fn await_reverse(out: &Output, t: &Terminal, issued: &Value, base: Value) -> Result<i32> {
    let id = issued["transaction"].as_str().unwrap_or_default();
    let code = issued["code"].as_str().unwrap_or_default();
    let from = issued["reply_from"].as_str().unwrap_or_default();
    // The code is shown on purpose: in this direction terminal A is where it appears.
    eprintln!("send {code} by SMS from {from} to the service's number");
    let expires = issued["expires_at"].as_i64().unwrap_or(0);
    loop {
        let s = t.get(&format!("transactions/{id}"))?;
        match s["status"].as_str() {
            Some("awaiting_sms") => {}
            Some("validated") => return outcome(out, base, Ok(s)),
            _ => {
                let cause = s["outcome"].as_str().unwrap_or("refused");
                return outcome(
                    out,
                    base,
                    Err(json!({"error": cause, "detail": "not validated"})),
                );
            }
        }
        if simlab_services::pki::now() as i64 > expires + 2 {
            return outcome(
                out,
                base,
                Err(json!({"error": "expired", "detail": "no SMS came back in time"})),
            );
        }
        std::thread::sleep(Duration::from_millis(300));
    }
}

pub fn login(out: &Output, a: &ClientArgs) -> Result<i32> {
    let t = Terminal::open(out, a)?;
    let direction = if a.reverse { "reverse" } else { "sms" };
    let issued = match t.post("login", &json!({"direction": direction}))? {
        Ok(v) => v,
        Err(e) => return outcome(out, json!({"kind": "login"}), Err(e)),
    };
    let base = json!({
        "kind": "login",
        "transaction": issued["transaction"],
        "mode": issued["mode"],
        "sent_to": issued["sent_to"],
    });
    if a.reverse {
        return await_reverse(out, &t, &issued, base);
    }
    let sent_to = issued["sent_to"].as_str().unwrap_or_default();
    out.say(&format!("a login code went to {sent_to}"));
    let code = read_code(out, a.code.as_deref(), sent_to)?;
    let id = issued["transaction"].as_str().unwrap_or_default();
    let answer = t.post(
        &format!("transactions/{id}/confirm"),
        &json!({"code": code}),
    )?;
    outcome(out, base, answer)
}

pub fn pay(out: &Output, a: &PayArgs) -> Result<i32> {
    check_payee(&a.payee).map_err(|e| Error::arg("--payee", e))?;
    check_currency(&a.currency).map_err(|e| Error::arg("--currency", e))?;
    if a.amount == 0 {
        return Err(Error::arg("--amount", "must be above 0"));
    }
    let items: Vec<Value> = a
        .items
        .iter()
        .map(|i| {
            let (product, qty) = i
                .rsplit_once('=')
                .ok_or_else(|| Error::arg("--item", format!("{i:?}: expected PRODUCT=QUANTITY")))?;
            let quantity: u64 = qty.parse().ok().filter(|q| *q > 0).ok_or_else(|| {
                Error::arg(
                    "--item",
                    format!("{i:?}: the quantity is a whole number above 0"),
                )
            })?;
            Ok(json!({"product": product, "quantity": quantity}))
        })
        .collect::<Result<_>>()?;
    let t = Terminal::open(out, &a.client)?;
    let request = json!({
        "amount": a.amount,
        "currency": a.currency,
        "payee": a.payee,
        "items": items,
        "account_from": a.account_from,
        "account_to": a.account_to,
        "direction": if a.client.reverse { "reverse" } else { "sms" },
    });
    let what = format!("{} to {}", format_amount(a.amount, &a.currency), a.payee);
    let issued = match t.post("payments", &request)? {
        Ok(v) => v,
        Err(e) => return outcome(out, json!({"kind": "payment"}), Err(e)),
    };
    let base = json!({
        "kind": "payment",
        "transaction": issued["transaction"],
        "mode": issued["mode"],
        "sent_to": issued["sent_to"],
        "amount": a.amount,
        "currency": a.currency,
    });
    match issued["mode"].as_str() {
        Some("normal") => {
            out.say(&format!("{what}: at or under the limit, no code needed"));
            return outcome(out, base, Ok(issued));
        }
        Some("reverse") => return await_reverse(out, &t, &issued, base),
        _ => {}
    }
    let sent_to = issued["sent_to"].as_str().unwrap_or_default();
    out.say(&format!("{what}: a code went to {sent_to}"));
    let code = read_code(out, a.client.code.as_deref(), sent_to)?;
    let id = issued["transaction"].as_str().unwrap_or_default();
    let answer = t.post(
        &format!("transactions/{id}/confirm"),
        &json!({"code": code, "amount": a.amount, "currency": a.currency,
                "payee": a.payee, "items": items}),
    )?;
    outcome(out, base, answer)
}

pub fn log(out: &Output, a: &LogArgs) -> Result<i32> {
    let certs = open_store(&a.db)?
        .log(a.identifier.as_deref())
        .map_err(store_error)?;
    let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
    let mut text = String::new();
    let mut rows = Vec::new();
    for c in &certs {
        let amount = if c.kind == "payment" {
            format_amount(c.amount, &c.currency)
        } else {
            "-".into()
        };
        text.push_str(&format!(
            "{}  {:<12} {:<8} {:<8} {:>14}  {:<20} {:<8} {:<10} {}\n",
            iso8601(c.issued_at.max(0) as u64),
            c.identifier,
            c.kind,
            c.mode,
            amount,
            c.payee,
            masked(&c.msisdn),
            c.state,
            c.outcome.as_deref().unwrap_or("-"),
        ));
        rows.push(json!({
            "transaction": hex(&c.id),
            "identifier": c.identifier,
            "to": masked(&c.msisdn),
            "kind": c.kind,
            "mode": c.mode,
            "amount": c.amount,
            "currency": c.currency,
            "payee": c.payee,
            "items": c.items,
            "account_from": c.account_from,
            "account_to": c.account_to,
            "bank_reference": c.bank_ref,
            "issued_at": c.issued_at,
            "expires_at": c.expires_at,
            "failures": c.failures,
            "state": c.state,
            "outcome": c.outcome,
            "used_at": c.used_at,
        }));
    }
    if certs.is_empty() {
        text.push_str("no certificates\n");
    }
    out.result(&text, &json!(rows))?;
    Ok(0)
}

/// `YYYY-MM-DD` → Unix seconds at 00:00 UTC.
fn day(arg: &str, s: &str) -> Result<i64> {
    let bad = || Error::arg(arg, format!("{s:?}: expected YYYY-MM-DD"));
    let mut parts = s.split('-');
    let (Some(y), Some(m), Some(d), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(bad());
    };
    let (y, m, d): (i64, i64, i64) = (
        y.parse().map_err(|_| bad())?,
        m.parse().map_err(|_| bad())?,
        d.parse().map_err(|_| bad())?,
    );
    if !(1970..=9999).contains(&y) || !(1..=12).contains(&m) || !(1..=31).contains(&d) {
        return Err(bad());
    }
    // Days from civil (Howard Hinnant's algorithm).
    let y2 = if m <= 2 { y - 1 } else { y };
    let era = y2.div_euclid(400);
    let yoe = y2 - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    Ok((era * 146_097 + doe - 719_468) * 86_400)
}

pub fn register(out: &Output, a: &RegisterArgs) -> Result<i32> {
    let store = open_store(&a.db)?;
    let from = a.from.as_deref().map(|s| day("--from", s)).transpose()?;
    let to = a.to.as_deref().map(|s| day("--to", s)).transpose()?;
    if let (Some(f), Some(t)) = (from, to)
        && f >= t
    {
        return Err(Error::arg("--to", "must be after --from"));
    }
    let mut text = String::new();
    let mut registers = Vec::new();
    for e in store.list_entries().map_err(store_error)? {
        for (currency, total) in store.register(&e.identifier).map_err(store_error)? {
            text.push_str(&format!(
                "{:<20} register {}\n",
                e.identifier,
                format_amount(total, &currency)
            ));
            registers
                .push(json!({"identifier": e.identifier, "currency": currency, "total": total}));
        }
    }
    let mut settlement = Vec::new();
    if from.is_some() || to.is_some() {
        let (f, t) = (from.unwrap_or(0), to.unwrap_or(i64::MAX));
        text.push_str("settlement of the period:\n");
        for s in store.settlement(f, t).map_err(store_error)? {
            text.push_str(&format!(
                "  {:<20} {:>4} payment(s) {}\n",
                s.identifier,
                s.payments,
                format_amount(s.amount, &s.currency)
            ));
            settlement.push(json!({"identifier": s.identifier, "currency": s.currency,
                                   "payments": s.payments, "amount": s.amount}));
        }
    }
    out.result(
        &text,
        &json!({"registers": registers, "settlement": settlement, "from": from, "to": to}),
    )?;
    Ok(0)
}

pub fn bank(out: &Output, cmd: &BankCommand) -> Result<i32> {
    let BankCommand::Serve {
        listen,
        tls,
        decline,
        limit,
    } = cmd;
    let bank = Arc::new(Bank::new(*decline, *limit));
    serve_stub(
        out,
        "bank",
        listen,
        tls,
        Arc::new(move |req| bank.handle(req)),
    )
}

pub fn lookup(out: &Output, cmd: &LookupCommand) -> Result<i32> {
    let LookupCommand::Serve {
        listen,
        tls,
        subscriber,
    } = cmd;
    let lookup = Arc::new(Lookup::new(
        subscriber.iter().map(|(i, n)| (i.as_str(), n.as_str())),
    ));
    serve_stub(
        out,
        "lookup",
        listen,
        tls,
        Arc::new(move |req| lookup.handle(req)),
    )
}

/// Serves one of the stubs the OTP server calls until SIGINT/SIGTERM; its URL is the first
/// line on stdout.
fn serve_stub(out: &Output, role: &str, listen: &str, tls: &Path, handler: Handler) -> Result<i32> {
    let server_tls = ServerTls::from_dir(tls).map_err(|e| Error::arg("--tls", e.to_string()))?;
    let server = Server::bind(listen, Some(server_tls), role)
        .map_err(|e| Error::arg("--listen", format!("{listen}: {e}")))?;
    let url = server.url();
    if out.json() {
        print_line(&json!({"role": role, "url": url, "tls": true}).to_string());
    } else {
        print_line(&format!("{role} listening on {url}"));
    }
    let limits = Limits::default();
    server
        .run_router(
            blocking_router(handler, limits, role),
            limits,
            Stop::Signals,
        )
        .map_err(|source| Error::Io {
            context: format!("serving on {url}"),
            source,
        })?;
    Ok(0)
}
