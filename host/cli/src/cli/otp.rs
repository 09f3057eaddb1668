//! `simlab otp send|verify`: one-time passwords over SMS, bound to an amount and a payee; and
//! the service commands of [`super::otp_service`].

use super::{Global, Output, otp_service};
use clap::Subcommand;
use serde_json::json;
use simlab_card::error::{Error, Result};
use simlab_modem::ModemError;
use simlab_services::otp::{self, Policy, Refusal, Store, Transaction};
use simlab_sms::{Address, SubmitOptions, ValidityPeriod};
use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

#[derive(Subcommand, Debug)]
pub enum OtpCommand {
    /// Run the OTP service (seed 004): sessions, directory, codes by SMS, confirmation.
    Serve(otp_service::ServeArgs),
    /// The service's directory: identifier → certified number, bank, card reference.
    #[command(subcommand)]
    Directory(otp_service::DirectoryCommand),
    /// Show or set the stored limit above which payments need a code.
    Policy(otp_service::PolicyArgs),
    /// Terminal A: log in with a code by SMS (Fig 5).
    #[command(after_help = "\
Opens a session, has a code sent to the identifier's registered phone, reads it (--code, or
asked for), and prints whether access is granted. With --reverse the code is shown here and
must be sent back by SMS from the registered phone. Exit 0 granted, 1 refused.

Example:
  simlab otp login --server https://127.0.0.1:8720 --ca otp-ca/ca.pem --id u1")]
    Login(otp_service::ClientArgs),
    /// Terminal A: pay, approving this exact payment with a code by SMS.
    Pay(otp_service::PayArgs),
    /// Every certificate issued, with who, what, when and the outcome (never the code).
    Log(otp_service::LogArgs),
    /// Registers per subscriber and the settlement of a period.
    Register(otp_service::RegisterArgs),
    /// The bank stub the service asks before a payment's code is sent.
    #[command(subcommand)]
    Bank(otp_service::BankCommand),
    /// The operator's look-up stub the service asks for identifiers not in its directory.
    #[command(subcommand)]
    Lookup(otp_service::LookupCommand),
    /// Benchmark: validated transactions per second, with a virtual modem and with no SMS I/O.
    #[cfg(feature = "bench")]
    #[command(hide = true)]
    Bench(super::otp_bench::BenchArgs),
    /// Issue a code for a transaction and send it by SMS; prints the transaction id (never the
    /// code).
    #[command(after_help = "\
The SMS shows the amount and the payee in clear, then the code; with --origin its last line is
`@ORIGIN #CODE`, which browsers autofill only on that site. The code is 6-10 random digits,
valid for --ttl seconds (TP-VP is set to match), usable once, blocked after 5 wrong attempts.
The database keeps only an HMAC of the code bound to id, destination, amount, currency, payee
and origin. At most --rate-limit codes per destination and window.

At or below --limit no OTP is required (only amounts greater than it are secured): nothing is
sent, and the JSON says \"required\": false. The number is counted for the rate limit in
E.164, however it is typed (00…, +…(0)…).

Example:
  simlab --modem /dev/ttyUSB2 otp send --to +491701234567 --amount 1250 --payee 'ACME Shop' \\
      --origin shop.example --db otp.sqlite --json")]
    Send {
        /// The phone number to send the code to.
        #[arg(long, value_name = "NUMBER")]
        to: String,
        /// The amount in minor units (cents): 1250 is 12.50 EUR.
        #[arg(long, value_name = "MINOR_UNITS")]
        amount: u64,
        /// Who is paid, shown in the SMS (1-40 characters).
        #[arg(long, value_name = "NAME")]
        payee: String,
        /// The site the code is for: adds the origin-bound line `@ORIGIN #CODE`.
        #[arg(long, value_name = "DOMAIN")]
        origin: Option<String>,
        /// The OTP database (SQLite; created with mode 0600).
        #[arg(long, value_name = "FILE", value_parser = crate::cli::file_arg)]
        db: Option<PathBuf>,
        /// ISO 4217 currency of the amount.
        #[arg(long, value_name = "CODE", default_value = "EUR")]
        currency: String,
        /// Seconds the code is valid (60-600).
        #[arg(long, value_name = "SECONDS", default_value_t = 300)]
        ttl: u64,
        /// Digits of the code (6-10).
        #[arg(long, value_name = "N", default_value_t = 6)]
        digits: u8,
        /// Amounts at or below this (minor units) need no OTP.
        #[arg(long, value_name = "MINOR_UNITS")]
        limit: Option<u64>,
        /// At most COUNT codes per destination per SECONDS.
        #[arg(long, value_name = "COUNT/SECONDS", default_value = "3/600")]
        rate_limit: String,
    },
    /// Check a code typed back for a transaction: exit 0 accepted, 1 refused.
    Verify {
        /// The OTP database.
        #[arg(long, value_name = "FILE", value_parser = crate::cli::file_arg)]
        db: Option<PathBuf>,
        /// The transaction id `otp send` printed.
        #[arg(long, value_name = "ID")]
        id: String,
        /// The code the user typed; `-` reads it from stdin, which keeps it out of the process
        /// list and shell history.
        #[arg(long, value_name = "CODE")]
        code: String,
        /// The amount being approved now, in minor units.
        #[arg(long, value_name = "MINOR_UNITS")]
        amount: u64,
        /// The payee being approved now.
        #[arg(long, value_name = "NAME")]
        payee: String,
        /// ISO 4217 currency of the amount.
        #[arg(long, value_name = "CODE", default_value = "EUR")]
        currency: String,
    },
}

/// `--db`, else the default file, whose folder is created if missing (a `--db` in a missing
/// folder is refused as a typo instead).
fn db_path(db: &Option<PathBuf>) -> Result<PathBuf> {
    if let Some(db) = db {
        return Ok(db.clone());
    }
    let path = default_db();
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|source| Error::Io {
            context: format!("creating {}", dir.display()),
            source,
        })?;
    }
    Ok(path)
}

/// `$XDG_STATE_HOME/simlab/otp.sqlite`, else `~/.local/state/simlab/otp.sqlite`.
fn default_db() -> PathBuf {
    let state = std::env::var_os("XDG_STATE_HOME")
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/state")));
    state.map_or_else(
        || PathBuf::from("simlab-otp.sqlite"),
        |s| s.join("simlab/otp.sqlite"),
    )
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

fn otp_err(e: otp::OtpError) -> Error {
    match e {
        // A refusal, not a broken device: still exit 1, with the reason as it is.
        e @ otp::OtpError::RateLimited { .. } => Error::Mismatch {
            what: e.to_string(),
        },
        otp::OtpError::Open(e) if e.is_bad_input() => Error::arg("--db", e.to_string()),
        e => Error::Transport(simlab_card::transport::TransportError::Device {
            reason: e.to_string(),
        }),
    }
}

pub fn run(out: &Output, global: &Global, cmd: &OtpCommand) -> Result<i32> {
    match cmd {
        OtpCommand::Serve(a) => otp_service::serve(out, global, a),
        OtpCommand::Directory(c) => otp_service::directory(out, c),
        OtpCommand::Policy(a) => otp_service::policy(out, a),
        OtpCommand::Login(a) => otp_service::login(out, a),
        OtpCommand::Pay(a) => otp_service::pay(out, a),
        OtpCommand::Log(a) => otp_service::log(out, a),
        OtpCommand::Register(a) => otp_service::register(out, a),
        OtpCommand::Bank(c) => otp_service::bank(out, c),
        OtpCommand::Lookup(c) => otp_service::lookup(out, c),
        #[cfg(feature = "bench")]
        OtpCommand::Bench(a) => super::otp_bench::run(out, a),
        OtpCommand::Send {
            to,
            amount,
            payee,
            origin,
            db,
            currency,
            ttl,
            digits,
            limit,
            rate_limit,
        } => {
            // Every bad input is refused before the modem or the database is touched.
            let canonical =
                otp::msisdn::canonical(to).map_err(|e| Error::arg("--to", e.to_string()))?;
            let destination = Address::parse(&canonical)
                .map_err(|e| Error::arg("--to", e.to_string()))?
                .to_string();
            otp::check_payee(payee).map_err(|e| Error::arg("--payee", e))?;
            otp::check_currency(currency).map_err(|e| Error::arg("--currency", e))?;
            let origin = origin
                .as_deref()
                .map(otp::check_origin)
                .transpose()
                .map_err(|e| Error::arg("--origin", e))?;
            let ttl = Duration::from_secs(*ttl);
            if !(otp::MIN_TTL..=otp::MAX_TTL).contains(&ttl) {
                return Err(Error::arg("--ttl", "must be 60 to 600 seconds"));
            }
            if !(otp::MIN_DIGITS..=otp::MAX_DIGITS).contains(digits) {
                return Err(Error::arg("--digits", "must be 6 to 10"));
            }
            let (rate_count, rate_window) = rate_limit
                .split_once('/')
                .and_then(|(c, s)| Some((c.parse::<u32>().ok()?, s.parse::<u64>().ok()?)))
                .filter(|(c, s)| *c > 0 && *s > 0)
                .ok_or_else(|| Error::arg("--rate-limit", "expected COUNT/SECONDS, e.g. 3/600"))?;
            if !otp::required(*amount, *limit) {
                let v = json!({
                    "id": null,
                    "required": false,
                    "amount": amount,
                    "currency": currency,
                    "limit": limit,
                });
                out.result(
                    &format!(
                        "no OTP needed: {} is below the limit\n",
                        otp::format_amount(*amount, currency)
                    ),
                    &v,
                )?;
                return Ok(0);
            }
            let validity =
                ValidityPeriod::at_least(ttl).map_err(|e| Error::arg("--ttl", e.to_string()))?;
            let tx = Transaction {
                destination: destination.clone(),
                amount: *amount,
                currency: currency.clone(),
                payee: payee.clone(),
                origin,
            };
            let policy = Policy {
                ttl,
                digits: *digits,
                rate_count,
                rate_window: Duration::from_secs(rate_window),
            };
            // The longest possible text must fit the part limit: check with a dummy code of
            // the same length before spending a rate-limit slot.
            let address =
                Address::parse(&destination).map_err(|e| Error::arg("--to", e.to_string()))?;
            let options = SubmitOptions {
                validity_period: Some(validity),
                max_parts: 3,
                concat_reference: simlab_sms::ConcatReference::Bits8(
                    simlab_card::random::bytes::<1>()?[0],
                ),
                ..SubmitOptions::default()
            };
            let probe = otp::sms_text(&tx, &otp::Code::placeholder(usize::from(*digits)), ttl);
            simlab_sms::encode_text(&address, &probe, &options)
                .map_err(|e| Error::arg("--payee", format!("the SMS would not fit: {e}")))?;

            let db_path = db_path(db)?;
            let mut modem = super::modem::open(global)?;
            modem.prepare_sms()?;
            let mut store = Store::open(&db_path).map_err(otp_err)?;
            let issued = store.issue(&tx, &policy, now()).map_err(otp_err)?;
            let text = otp::sms_text(&tx, &issued.code, ttl);
            let parts = match simlab_sms::encode_text(&address, &text, &options) {
                Ok(p) => p,
                Err(e) => {
                    store.mark_failed(&issued.id).map_err(otp_err)?;
                    return Err(Error::arg("--payee", format!("the SMS would not fit: {e}")));
                }
            };
            // The code and the PDUs that carry it are blanked in --trace and in errors.
            modem.at().add_secret(issued.code.expose());
            for p in &parts {
                modem.at().add_secret(&p.to_hex());
            }
            let vp = validity.duration().map(|d| d.as_secs());
            match modem.send_pdus(&parts) {
                Ok(sent) => {
                    store.mark_sent(&issued.id).map_err(otp_err)?;
                    let v = json!({
                        "id": issued.id,
                        "required": true,
                        "to": destination,
                        "amount": amount,
                        "currency": currency,
                        "payee": payee,
                        "origin": tx.origin,
                        "expires_at": issued.expires_at,
                        "ttl_seconds": ttl.as_secs(),
                        "validity_period_seconds": vp,
                        "parts": parts.len(),
                        "complete": true,
                        "sent": super::sms::sent_json(&sent),
                        "db": db_path.display().to_string(),
                    });
                    out.result(
                        &format!(
                            "{}\nOTP sent to {destination} for {} to {payee}; valid {} s\n",
                            issued.id,
                            otp::format_amount(*amount, currency),
                            ttl.as_secs()
                        ),
                        &v,
                    )?;
                    Ok(0)
                }
                Err(e) => {
                    store.mark_failed(&issued.id).map_err(otp_err)?;
                    let (sent, failed_part, cause) = match e {
                        ModemError::PartialSend {
                            sent,
                            failed_part,
                            cause,
                            ..
                        } => (sent, Some(failed_part), cause.to_string()),
                        other => (Vec::new(), None, other.to_string()),
                    };
                    let v = json!({
                        "id": issued.id,
                        "required": true,
                        "to": destination,
                        "parts": parts.len(),
                        "complete": false,
                        "sent": super::sms::sent_json(&sent),
                        "failed_part": failed_part,
                        "error": cause,
                    });
                    out.result(
                        &format!("OTP NOT SENT (id {} is void): {cause}\n", issued.id),
                        &v,
                    )?;
                    eprintln!("simlab: error: the OTP SMS did not go out completely: {cause}");
                    Ok(1)
                }
            }
        }
        OtpCommand::Verify {
            db,
            id,
            code,
            amount,
            payee,
            currency,
        } => {
            otp::check_id(id).map_err(|e| Error::arg("--id", e))?;
            let code = if code == "-" {
                let mut line = String::new();
                std::io::stdin()
                    .read_line(&mut line)
                    .map_err(|source| Error::Io {
                        context: "reading the code from stdin".into(),
                        source,
                    })?;
                line.trim().to_string()
            } else {
                code.clone()
            };
            let code = &code;
            if code.is_empty() || code.len() > 16 || !code.bytes().all(|b| b.is_ascii_digit()) {
                // Not echoed: it may be a real code with a typo.
                return Err(Error::arg("--code", "must be the digits from the SMS"));
            }
            otp::check_currency(currency).map_err(|e| Error::arg("--currency", e))?;
            let db_path = db_path(db)?;
            if !db_path.exists() {
                return Err(Error::arg(
                    "--db",
                    format!("{} does not exist", db_path.display()),
                ));
            }
            let mut store = Store::open(&db_path).map_err(otp_err)?;
            let verdict = store
                .verify(id, code, *amount, currency, payee, now())
                .map_err(otp_err)?;
            let (accepted, reason, left) = match &verdict {
                Ok(()) => (true, None, None),
                Err(r @ Refusal::Mismatch { failures_left }) => {
                    (false, Some(r.clone()), Some(*failures_left))
                }
                Err(r) => (false, Some(r.clone()), None),
            };
            let v = json!({
                "id": id,
                "accepted": accepted,
                "reason": reason.as_ref().map(Refusal::as_str),
                "failures_left": left,
            });
            let text = match &reason {
                None => format!(
                    "accepted: {} to {payee}\n",
                    otp::format_amount(*amount, currency)
                ),
                Some(r) => format!("refused: {r}\n"),
            };
            out.result(&text, &v)?;
            Ok(if accepted { 0 } else { 1 })
        }
    }
}
