//! `simlab sign …`: seed 002 — the signing server with its web site for the PC (`serve`), its
//! directory (`enroll`, `directory`), its records (`tx`), and the phone that signs on its token
//! (`approve` once, `watch` for every push).

use super::pki::{STATE_HELP, open_card, open_token, pin_arg};
use super::{Global, Output, print_line};
use clap::Subcommand;
use serde_json::{Value, json};
use simlab_card::error::{Error, Result};
use simlab_modem::backend::{AtBackend, NullBackend, SmsBackend};
use simlab_services::bytes::{hex, unhex};
use simlab_services::http::Role;
use simlab_services::http::client::Url;
use simlab_services::http::server::{Limits, Server, Stop};
use simlab_services::http::tls::{ClientTls, ServerTls};
use simlab_services::pki::x509::Certificate;
use simlab_services::roaming::keys::SigningKey;
use simlab_services::sign::phone::{self, Decision, Outcome, Shown};
use simlab_services::sign::service::{Config, Signing};
use simlab_services::sign::store::{Store, StoreError, Tx, User};
use simlab_services::sign::{self as seed, TxState};
use std::io::{BufRead, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

#[derive(Subcommand, Debug)]
pub enum SignCommand {
    /// Run the signing server: the PC's web site, the push to the phone, the phone's API.
    #[command(after_help = "\
The web site (log in, prepare, approve, wait for the phone, status) is server-rendered HTML
without scripts. Approving looks up the user's phone and token key in the directory, writes
the request the phone will sign (simlab-sign-request-v1, docs/sign.md), countersigns it with
the key of the --tls certificate, and pushes an SMS with only the transaction id and the
correlator through --modem (a real modem, or `simlab emulate modem`), or nowhere with
--null-sms. The phones pin the --tls certificate (`sign approve --server-cert`).

Example:
  simlab gateway issue --ca-dir sign-ca --role server --name sign.example --ip 127.0.0.1 --out sign-tls
  simlab sign enroll --db sign.sqlite --user u1 --phone +491700000001 --password-file pw --public-key 04…
  simlab --modem /dev/ttyUSB2 sign serve --db sign.sqlite --tls sign-tls --listen 127.0.0.1:8443")]
    Serve(ServeArgs),
    /// Add (or with --replace, update) a directory row: user id, phone number, token key,
    /// password.
    #[command(after_help = "\
The key is the phone token's public key: --public-key HEX (as `simlab token keygen` prints
it), --certificate FILE (a seed-000 certificate of that key), or --from-token (read from the
token the global options name). Without one the row is enrolled but cannot approve anything
yet. The password is read from the first line of --password-file and kept only as an
argon2id verifier.

Example:
  simlab --emulate phone.toml sign enroll --db sign.sqlite --user u1 --phone +491700000001 \\
      --password-file pw --from-token --state phone.state")]
    Enroll(EnrollArgs),
    /// The directory: list or remove rows.
    #[command(subcommand)]
    Directory(DirectoryCommand),
    /// The transactions on record: list, or show one with its request and signature.
    #[command(subcommand)]
    Tx(TxCommand),
    /// The phone, once: fetch a request, check it, show it, and sign it on the token (or
    /// decline).
    #[command(after_help = "\
The request must be countersigned by the key of --server-cert and decode as a
simlab-sign-request-v1 for this transaction; what is shown (amount, summary, correlator) is
decoded from the bytes the token signs. Without --pin or --decline the PIN is asked on the
terminal (empty: decline). Exit status 0 when the server recorded the answer, 1 when the
request was refused or the PIN was wrong.

Example:
  simlab --emulate phone.toml sign approve --server https://127.0.0.1:8443 --ca sign-ca/ca.pem \\
      --server-cert sign-tls/cert.pem --tx 5f0c… --pin 1234 --state phone.state")]
    Approve(ApproveArgs),
    /// The phone, waiting: read push SMS from --modem and handle each as `approve` does.
    #[command(after_help = "\
Push messages (\"simlab-sign tx … code …\") are taken off the modem's storage; any other
message is left alone in the log. Each request is checked against the push's code as well.

Example:
  simlab --modem /dev/ttyUSB3 --emulate phone.toml sign watch --server https://127.0.0.1:8443 \\
      --ca sign-ca/ca.pem --server-cert sign-tls/cert.pem --pin 1234 --count 1 --state phone.state")]
    Watch(WatchArgs),
    /// Benchmark: completed signature requests per second (scripts/bench sign).
    #[cfg(feature = "bench")]
    #[command(hide = true)]
    Bench(super::sign_bench::BenchArgs),
}

#[derive(clap::Args, Debug)]
pub struct ServeArgs {
    /// The store: a SQLite file (created 0600) or postgres://….
    #[arg(long, value_name = "FILE|URL")]
    db: String,
    /// The TLS identity directory (cert.pem, key.pem, ca.pem), role server; its key
    /// countersigns the requests.
    #[arg(long, value_name = "DIR", value_parser = crate::cli::dir_arg)]
    tls: PathBuf,
    #[arg(long, value_name = "HOST:PORT", default_value = "127.0.0.1:8443")]
    listen: String,
    /// The server id inside every request (default: the --tls certificate's name).
    #[arg(long, value_name = "ID")]
    server_id: Option<String>,
    /// Seconds the phone has to sign once the PC approved.
    #[arg(long, value_name = "SECONDS", default_value_t = seed::REQUEST_TTL)]
    request_ttl: u64,
    /// Seconds a web login lasts.
    #[arg(long, value_name = "SECONDS", default_value_t = seed::SESSION_TTL)]
    session_ttl: u64,
    /// Send no SMS at all (benchmarks, a phone told the transaction id another way).
    #[arg(long)]
    null_sms: bool,
    /// Fault injection for the tests: amount-in-transit.
    #[cfg(feature = "test-faults")]
    #[arg(long, hide = true, value_name = "FAULT")]
    fault: Option<String>,
}

#[derive(clap::Args, Debug)]
pub struct EnrollArgs {
    #[arg(long, value_name = "FILE|URL")]
    db: String,
    #[arg(long, value_name = "ID")]
    user: String,
    /// The phone the pushes go to (E.164).
    #[arg(long, value_name = "NUMBER")]
    phone: String,
    /// The web password, on the first line of this file.
    #[arg(long, value_name = "FILE")]
    password_file: PathBuf,
    /// The token's public key, uncompressed SEC1 hex (04…).
    #[arg(long, value_name = "HEX", conflicts_with_all = ["certificate", "from_token"])]
    public_key: Option<String>,
    /// A seed-000 certificate (PEM) of the token's key.
    #[arg(long, value_name = "FILE", conflicts_with = "from_token")]
    certificate: Option<PathBuf>,
    /// Read the key from the token (the global --emulate/--reader/--serial options).
    #[arg(long)]
    from_token: bool,
    /// Overwrite an existing row.
    #[arg(long)]
    replace: bool,
    #[arg(long, value_name = "FILE", long_help = STATE_HELP, value_parser = crate::cli::file_arg)]
    state: Option<PathBuf>,
}

#[derive(Subcommand, Debug)]
pub enum DirectoryCommand {
    /// Every row: user id, phone, whether a key is enrolled, the key itself.
    List {
        #[arg(long, value_name = "FILE|URL")]
        db: String,
    },
    /// Remove a row (and its sessions); its transactions stay on record.
    Remove {
        #[arg(long, value_name = "FILE|URL")]
        db: String,
        #[arg(long, value_name = "ID")]
        user: String,
    },
}

#[derive(Subcommand, Debug)]
pub enum TxCommand {
    /// The newest transactions.
    List {
        #[arg(long, value_name = "FILE|URL")]
        db: String,
        /// Only this user's.
        #[arg(long, value_name = "ID")]
        user: Option<String>,
        #[arg(long, value_name = "N", default_value_t = 50)]
        limit: u32,
    },
    /// One transaction: its state, the exact request bytes and the signature (hex).
    Show {
        #[arg(long, value_name = "FILE|URL")]
        db: String,
        /// The transaction id (32 hex digits).
        #[arg(long, value_name = "ID")]
        id: String,
        /// Also write the request bytes here (e.g. for `openssl dgst -verify`).
        #[arg(long, value_name = "FILE")]
        save_request: Option<PathBuf>,
        /// Also write the DER signature here.
        #[arg(long, value_name = "FILE")]
        save_signature: Option<PathBuf>,
    },
}

#[derive(clap::Args, Debug)]
pub struct PhoneArgs {
    /// The signing server.
    #[arg(long, value_name = "URL")]
    server: String,
    /// The CA (PEM) the server's TLS certificate must come from.
    #[arg(long, value_name = "FILE", value_parser = crate::cli::file_arg)]
    ca: PathBuf,
    /// The server's certificate (PEM), pinned: its key must have countersigned the request.
    #[arg(long, value_name = "FILE", value_parser = crate::cli::file_arg)]
    server_cert: PathBuf,
    /// The token PIN that approves the signature.
    #[arg(long, value_name = "PIN", conflicts_with = "decline")]
    pin: Option<String>,
    /// Say no to the request (the server records `declined`).
    #[arg(long)]
    decline: bool,
    #[arg(long, value_name = "FILE", long_help = STATE_HELP, value_parser = crate::cli::file_arg)]
    state: Option<PathBuf>,
}

#[derive(clap::Args, Debug)]
pub struct ApproveArgs {
    #[command(flatten)]
    phone: PhoneArgs,
    /// The transaction id from the push (32 hex digits).
    #[arg(long, value_name = "ID")]
    tx: String,
    /// The code from the push: the request's correlator must be the same.
    #[arg(long, value_name = "XXX-XXX")]
    code: Option<String>,
}

#[derive(clap::Args, Debug)]
pub struct WatchArgs {
    #[command(flatten)]
    phone: PhoneArgs,
    /// Stop after handling this many pushes (default: run until Ctrl-C).
    #[arg(long, value_name = "N")]
    count: Option<u32>,
    /// Give up after this many seconds without finishing --count pushes (exit 1).
    #[arg(long, value_name = "SECONDS")]
    timeout: Option<u64>,
}

fn store_error(arg: &str, e: StoreError) -> Error {
    match e {
        StoreError::Sql(s) if s.is_bad_input() => Error::arg(arg, s.to_string()),
        StoreError::Exists(what) => Error::arg(arg, format!("{what}: give --replace to update it")),
        other => Error::Io {
            context: "the signing store".into(),
            source: std::io::Error::other(other.to_string()),
        },
    }
}

fn open_store(db: &str) -> Result<Store> {
    Store::open(db).map_err(|e| store_error("--db", e))
}

pub fn run(out: &Output, global: &Global, cmd: &SignCommand) -> Result<i32> {
    match cmd {
        SignCommand::Serve(a) => serve(out, global, a),
        SignCommand::Enroll(a) => enroll(out, global, a),
        SignCommand::Directory(c) => directory(out, c),
        SignCommand::Tx(c) => tx(out, c),
        SignCommand::Approve(a) => approve(out, global, a),
        SignCommand::Watch(a) => watch(out, global, a),
        #[cfg(feature = "bench")]
        SignCommand::Bench(a) => super::sign_bench::run(out, a),
    }
}

fn serve(out: &Output, global: &Global, a: &ServeArgs) -> Result<i32> {
    // Every argument is checked before the modem, the store or the port is touched.
    if !(5..=3600).contains(&a.request_ttl) {
        return Err(Error::arg("--request-ttl", "must be 5 to 3600 seconds"));
    }
    if !(60..=86_400).contains(&a.session_ttl) {
        return Err(Error::arg("--session-ttl", "must be 60 to 86400 seconds"));
    }
    #[cfg(feature = "test-faults")]
    let fault = match a.fault.as_deref() {
        None => None,
        Some("amount-in-transit") => Some(simlab_services::sign::service::Fault::AmountInTransit),
        Some(other) => return Err(Error::arg("--fault", format!("{other:?} is not a fault"))),
    };
    #[cfg(not(feature = "test-faults"))]
    let fault = None;
    let tls = ServerTls::from_dir(&a.tls).map_err(|e| Error::arg("--tls", e.to_string()))?;
    let identity = ClientTls::mutual(&a.tls).map_err(|e| Error::arg("--tls", e.to_string()))?;
    let peer = identity.identity.as_ref().and_then(|i| i.peer());
    let name = match &peer {
        Some(p) if matches!(p.role, Role::Server | Role::Peer) => p.name.clone(),
        other => {
            return Err(Error::arg(
                "--tls",
                format!(
                    "the certificate is for {}, not a server (gateway issue --role server)",
                    other
                        .as_ref()
                        .map_or("no role".to_string(), |p| p.role.as_str().to_string())
                ),
            ));
        }
    };
    let server_id = a.server_id.clone().unwrap_or(name);
    seed::check_user_id(&server_id).map_err(|_| {
        Error::arg(
            "--server-id",
            format!("{server_id:?}: 1 to 64 printable ASCII characters, no spaces"),
        )
    })?;
    let key =
        SigningKey::load_identity_key(&a.tls).map_err(|e| Error::arg("--tls", e.to_string()))?;
    if a.null_sms == global.modem.is_some() {
        return Err(Error::arg(
            "--modem",
            "the pushes need a modem: --modem PATH (a real one, or `simlab emulate modem`), or --null-sms (not both)",
        ));
    }
    let store = open_store(&a.db)?;
    let sms: Box<dyn SmsBackend> = match &global.modem {
        None => Box::new(NullBackend::default()),
        Some(path) => Box::new(AtBackend::open(path, super::modem::options(global)?)?),
    };
    let describe = sms.describe();
    let server = Server::bind(&a.listen, Some(tls), "sign")
        .map_err(|e| Error::arg("--listen", format!("{}: {e}", a.listen)))?;
    let signing = Arc::new(Signing::new(
        Config {
            server_id: server_id.clone(),
            key,
            request_ttl: a.request_ttl,
            session_ttl: a.session_ttl,
            fault,
        },
        store,
        sms,
    ));
    let url = server.url();
    if out.json() {
        print_line(
            &json!({"role": "sign", "url": url, "server_id": server_id, "sms": describe})
                .to_string(),
        );
    } else {
        print_line(&format!(
            "sign listening on {url} as {server_id} (SMS: {describe})"
        ));
    }
    tracing::info!(url = %url, server_id = %server_id, sms = %describe, "signing server started");
    let stop = Arc::new(AtomicBool::new(false));
    let sweeper = {
        let (signing, stop) = (signing.clone(), stop.clone());
        std::thread::Builder::new()
            .name("sign-sweep".into())
            .spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    if let Err(e) = signing.sweep() {
                        tracing::warn!(error = %e, "expiring transactions");
                    }
                    std::thread::sleep(Duration::from_millis(500));
                }
            })
            .map_err(|source| Error::Io {
                context: "starting the deadline sweeper".into(),
                source,
            })?
    };
    let limits = Limits::default();
    let served = server.run_router(signing.router(limits), limits, Stop::Signals);
    stop.store(true, Ordering::Relaxed);
    let _ = sweeper.join();
    served.map_err(|source| Error::Io {
        context: format!("serving on {url}"),
        source,
    })?;
    Ok(0)
}

fn read_certificate(arg: &str, path: &Path) -> Result<Certificate> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| Error::arg(arg, format!("{}: {e}", path.display())))?;
    Certificate::from_pem(&text).map_err(|e| Error::arg(arg, format!("{}: {e}", path.display())))
}

fn enroll(out: &Output, global: &Global, a: &EnrollArgs) -> Result<i32> {
    seed::check_user_id(&a.user).map_err(|e| Error::arg("--user", e))?;
    simlab_services::router::digits(&a.phone).map_err(|e| Error::arg("--phone", e.to_string()))?;
    let password = std::fs::read_to_string(&a.password_file).map_err(|e| {
        Error::arg(
            "--password-file",
            format!("{}: {e}", a.password_file.display()),
        )
    })?;
    let password = password.lines().next().unwrap_or("").to_string();
    if password.chars().count() < 8 {
        return Err(Error::arg(
            "--password-file",
            "the password must be at least 8 characters",
        ));
    }
    let public_key = if let Some(h) = &a.public_key {
        let k = unhex(h)
            .filter(|k| simlab_card::token::PublicKey::from_sec1(k).is_ok())
            .ok_or_else(|| {
                Error::arg(
                    "--public-key",
                    "not an uncompressed P-256 point (04 and 64 bytes, hex)",
                )
            })?;
        Some(k)
    } else if let Some(path) = &a.certificate {
        Some(read_certificate("--certificate", path)?.public_key.to_vec())
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
    let verifier = seed::password_verifier(&password).map_err(|e| Error::Io {
        context: "the password verifier".into(),
        source: std::io::Error::other(e),
    })?;
    let store = open_store(&a.db)?;
    let user = User::new(&a.user, &a.phone, public_key.clone(), verifier);
    store
        .put_user(&user, a.replace)
        .map_err(|e| store_error("--user", e))?;
    let key_text = match &public_key {
        Some(_) => "with the token's key",
        None => "without a key (it cannot approve until enrolled with one)",
    };
    out.result(
        &format!("{} enrolled, phone {}, {key_text}\n", a.user, a.phone),
        &json!({"user": a.user, "phone": a.phone, "public_key": public_key.as_deref().map(hex)}),
    )?;
    Ok(0)
}

fn directory(out: &Output, cmd: &DirectoryCommand) -> Result<i32> {
    match cmd {
        DirectoryCommand::List { db } => {
            let users = open_store(db)?
                .users()
                .map_err(|e| store_error("--db", e))?;
            let mut text = String::new();
            for u in &users {
                text.push_str(&format!(
                    "{}  {}  {}{}\n",
                    u.user_id,
                    u.phone,
                    if u.public_key.is_some() {
                        "key"
                    } else {
                        "no key"
                    },
                    if u.active { "" } else { "  (disabled)" }
                ));
            }
            if users.is_empty() {
                text.push_str("(no users)\n");
            }
            let rows: Vec<Value> = users
                .iter()
                .map(|u| {
                    json!({
                        "user": u.user_id,
                        "phone": u.phone,
                        "public_key": u.public_key.as_deref().map(hex),
                        "active": u.active,
                    })
                })
                .collect();
            out.result(&text, &json!(rows))?;
            Ok(0)
        }
        DirectoryCommand::Remove { db, user } => {
            let removed = open_store(db)?
                .remove_user(user)
                .map_err(|e| store_error("--db", e))?;
            if !removed {
                return Err(Error::arg(
                    "--user",
                    format!("{user:?} is not in the directory"),
                ));
            }
            out.result(&format!("{user} removed\n"), &json!({"removed": user}))?;
            Ok(0)
        }
    }
}

fn tx_json(t: &Tx) -> Value {
    json!({
        "id": hex(&t.id),
        "user": t.user_id,
        "state": t.state,
        "amount": t.amount,
        "currency": t.currency,
        "summary": t.summary,
        "correlator": t.correlator,
        "request": t.request.as_deref().map(hex),
        "signature": t.signature.as_deref().map(hex),
        "cause": t.cause,
        "created_at": t.created_at,
        "approved_at": t.approved_at,
        "expires_at": t.expires_at,
        "finished_at": t.finished_at,
    })
}

fn write_file(arg: &str, path: &Path, bytes: &[u8]) -> Result<()> {
    std::fs::write(path, bytes).map_err(|e| Error::arg(arg, format!("{}: {e}", path.display())))
}

fn tx(out: &Output, cmd: &TxCommand) -> Result<i32> {
    match cmd {
        TxCommand::List { db, user, limit } => {
            let txs = open_store(db)?
                .txs(user.as_deref(), *limit)
                .map_err(|e| store_error("--db", e))?;
            let mut text = String::new();
            for t in &txs {
                text.push_str(&format!(
                    "{}  {:<18}  {:>14}  {}  {}\n",
                    hex(&t.id),
                    t.state.as_str(),
                    simlab_services::otp::format_amount(t.amount, &t.currency),
                    t.user_id,
                    t.summary
                ));
            }
            if txs.is_empty() {
                text.push_str("(no transactions)\n");
            }
            out.result(&text, &json!(txs.iter().map(tx_json).collect::<Vec<_>>()))?;
            Ok(0)
        }
        TxCommand::Show {
            db,
            id,
            save_request,
            save_signature,
        } => {
            let key: [u8; 16] = unhex(id)
                .and_then(|k| k.try_into().ok())
                .ok_or_else(|| Error::arg("--id", format!("{id:?} is not 32 hex digits")))?;
            let t = open_store(db)?
                .tx(&key)
                .map_err(|e| store_error("--db", e))?
                .ok_or_else(|| Error::arg("--id", format!("no transaction {id}")))?;
            if let Some(p) = save_request {
                let bytes = t.request.as_deref().ok_or_else(|| {
                    Error::arg("--save-request", "the transaction was never approved")
                })?;
                write_file("--save-request", p, bytes)?;
            }
            if let Some(p) = save_signature {
                let bytes = t.signature.as_deref().ok_or_else(|| {
                    Error::arg("--save-signature", "the transaction has no signature")
                })?;
                write_file("--save-signature", p, bytes)?;
            }
            let text = format!(
                "{} {} for {}: {}\n  {}\n{}{}",
                hex(&t.id),
                t.state.as_str(),
                t.user_id,
                simlab_services::otp::format_amount(t.amount, &t.currency),
                t.summary,
                t.correlator
                    .as_deref()
                    .map(|c| format!("  code {c}\n"))
                    .unwrap_or_default(),
                t.cause
                    .as_deref()
                    .map(|c| format!("  cause: {c}\n"))
                    .unwrap_or_default(),
            );
            out.result(&text, &tx_json(&t))?;
            Ok(0)
        }
    }
}

/// The phone's pinned server and its way to ask the person.
struct PhoneSetup {
    server: phone::Server,
    pin: Option<[u8; simlab_applet::chv::PIN_LEN]>,
    decline: bool,
}

fn phone_setup(a: &PhoneArgs) -> Result<PhoneSetup> {
    let trust = ClientTls::pinned(&a.ca).map_err(|e| Error::arg("--ca", e.to_string()))?;
    let url = Url::parse(&a.server).map_err(|e| Error::arg("--server", e.to_string()))?;
    if url.is_plain() {
        return Err(Error::arg(
            "--server",
            "the signing server is reached over https:// only",
        ));
    }
    let cert = read_certificate("--server-cert", &a.server_cert)?;
    let pin = a.pin.as_deref().map(|p| pin_arg("--pin", p)).transpose()?;
    if pin.is_none() && !a.decline && !std::io::stdin().is_terminal() {
        return Err(Error::arg(
            "--pin",
            "give --pin or --decline (no terminal to ask on)",
        ));
    }
    Ok(PhoneSetup {
        server: phone::Server {
            url: url.with_tls(&trust),
            certificate_der: cert.der,
        },
        pin,
        decline: a.decline,
    })
}

fn show_text(s: &Shown) -> String {
    format!(
        "request from {} for {}\n  pay   {}\n  for   {}\n  code  {}   (the PC shows the same code)\n  sign before {}\n",
        s.server_id,
        s.user_id,
        s.amount_text,
        s.summary,
        s.correlator,
        simlab_services::pki::der::iso8601(s.expires_at)
    )
}

/// One line from the terminal with echo off (the PIN is not shown as it is typed).
fn read_hidden(prompt: &str) -> String {
    eprint!("{prompt}");
    let _ = std::io::stderr().flush();
    // SAFETY: tcgetattr/tcsetattr on stdin with a termios this function owns; the saved
    // settings are restored before returning.
    let saved = unsafe {
        let mut t: libc::termios = std::mem::zeroed();
        (libc::tcgetattr(libc::STDIN_FILENO, &mut t) == 0).then_some(t)
    };
    if let Some(mut quiet) = saved {
        quiet.c_lflag &= !libc::ECHO;
        // SAFETY: as above.
        unsafe { libc::tcsetattr(libc::STDIN_FILENO, libc::TCSANOW, &quiet) };
    }
    let mut line = String::new();
    let _ = std::io::stdin().lock().read_line(&mut line);
    if let Some(t) = saved {
        // SAFETY: restoring the settings read above.
        unsafe { libc::tcsetattr(libc::STDIN_FILENO, libc::TCSANOW, &t) };
        eprintln!();
    }
    line
}

/// The person's answer: the given --pin or --decline, or asked on the terminal.
fn decide(out: &Output, setup: &PhoneSetup, shown: &Shown) -> Decision {
    out.say(&show_text(shown));
    if setup.decline {
        return Decision::Decline;
    }
    if let Some(pin) = setup.pin {
        return Decision::Sign(pin);
    }
    let line = read_hidden("token PIN (empty to decline): ");
    let line = line.trim_end_matches(['\r', '\n']);
    match pin_arg("PIN", line) {
        Ok(pin) if !line.is_empty() => Decision::Sign(pin),
        _ => Decision::Decline,
    }
}

fn report(out: &Output, o: &Outcome) -> Result<i32> {
    let text = match (&o.pin_status, o.state.as_str()) {
        (Some(sw), "failed") => {
            format!("the token PIN is blocked ({sw}): the server records failed\n")
        }
        (Some(sw), _) => format!("wrong token PIN ({sw}): nothing was signed\n"),
        (None, state) => format!("the server says {state}\n"),
    };
    out.result(
        &text,
        &json!({"shown": o.shown, "state": o.state, "pin_status": o.pin_status}),
    )?;
    let recorded = o.pin_status.is_none()
        && matches!(
            TxState::parse(&o.state),
            Some(TxState::Completed | TxState::Declined)
        );
    Ok(if recorded { 0 } else { 1 })
}

fn approve(out: &Output, global: &Global, a: &ApproveArgs) -> Result<i32> {
    let tx: [u8; 16] = unhex(&a.tx)
        .and_then(|k| k.try_into().ok())
        .ok_or_else(|| Error::arg("--tx", format!("{:?} is not 32 hex digits", a.tx)))?;
    let setup = phone_setup(&a.phone)?;
    let card = open_card(out, global, a.phone.state.as_deref())?;
    let mut token = open_token(&card, global, None)?;
    let o = phone::handle(
        &setup.server,
        &mut token,
        &tx,
        a.code.as_deref(),
        &mut |shown| decide(out, &setup, shown),
    )?;
    report(out, &o)
}

fn watch(out: &Output, global: &Global, a: &WatchArgs) -> Result<i32> {
    let setup = phone_setup(&a.phone)?;
    let Some(modem) = &global.modem else {
        return Err(Error::arg(
            "--modem",
            "the pushes arrive by SMS: --modem PATH (this phone's modem)",
        ));
    };
    if a.count == Some(0) {
        return Err(Error::arg("--count", "at least 1"));
    }
    let mut sms = AtBackend::open(modem, super::modem::options(global)?)?;
    let card = open_card(out, global, a.phone.state.as_deref())?;
    let mut token = open_token(&card, global, None)?;
    let deadline = a.timeout.map(|t| Instant::now() + Duration::from_secs(t));
    let mut handled = 0u32;
    let mut failures = 0u32;
    out.say(&format!(
        "waiting for signature requests on {}",
        sms.describe()
    ));
    loop {
        let messages = sms.incoming().map_err(|e| Error::Io {
            context: format!("reading SMS on {}", sms.describe()),
            source: std::io::Error::other(e.to_string()),
        })?;
        for m in messages {
            let Some((tx, code)) = m.text.as_deref().and_then(seed::parse_push) else {
                tracing::info!(from = %m.from, "not a signature push; left alone");
                continue;
            };
            out.say(&format!("push from {}: transaction {}", m.from, hex(&tx)));
            let result = phone::handle(&setup.server, &mut token, &tx, Some(&code), &mut |shown| {
                decide(out, &setup, shown)
            });
            handled += 1;
            match result {
                Ok(o) => {
                    if report(out, &o)? != 0 {
                        failures += 1;
                    }
                }
                Err(e) => {
                    failures += 1;
                    eprintln!("simlab: {e}");
                    if out.json() {
                        out.result("", &json!({"tx": hex(&tx), "refused": e.to_string()}))?;
                    }
                }
            }
            if a.count.is_some_and(|c| handled >= c) {
                return Ok(if failures == 0 { 0 } else { 1 });
            }
        }
        if deadline.is_some_and(|d| Instant::now() >= d) {
            eprintln!(
                "simlab: {handled} of {} pushes before the timeout",
                a.count.unwrap_or(0)
            );
            return Ok(1);
        }
        if super::modem::STOP.load(Ordering::Relaxed) {
            return Ok(if failures == 0 { 0 } else { 1 });
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}
