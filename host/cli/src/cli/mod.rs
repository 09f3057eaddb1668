//! The `simlab` command line: argument definitions and dispatch. Each subcommand lives in its
//! own module; they all print through [`Output`] so `--json` means the same everywhere.

mod algo;
mod auc;
mod buy;
mod card;
mod demo;
mod demo_otp;
mod demo_roaming;
mod demo_sign;
mod demo_transfer;
mod emulate;
mod emulate_modem;
mod gateway;
mod lab;
mod mec;
mod modem;
mod ms;
mod operator;
mod otp;
#[cfg(feature = "bench")]
mod otp_bench;
mod otp_service;
mod pki;
#[cfg(feature = "bench")]
mod pki_bench;
mod readers;
mod roam;
mod seller;
mod sign;
#[cfg(feature = "bench")]
mod sign_bench;
mod sms;
mod token;
mod transfer;
#[cfg(feature = "bench")]
mod transfer_bench;

use clap::{Parser, Subcommand};
use serde_json::Value;
use simlab_card::error::{Error, Result};
use std::io::Write;
use std::path::PathBuf;

const ABOUT: &str = "Hardware-in-the-loop toolkit for SIM and smart-card work.";

const LONG_ABOUT: &str = "\
Hardware-in-the-loop toolkit for SIM and smart-card work.

simlab talks to SIMs, USIMs and the simlab secure token through one of four transports: a PC/SC
reader (--reader, see `simlab readers`), the SIM inside a modem (--modem, AT+CSIM), a
simlab-firmware token (--serial), or the simlab card model in-process (--emulate PROFILE.toml).
The card model also runs behind the real pcscd as a virtual card (`simlab emulate card`), and a
virtual modem stands in for a USB modem (`simlab emulate modem`), so every command works the
same against real and emulated hardware. The network side needs no card: `simlab algo` computes
vectors as an AuC does, and `auc`, `gateway` and `seller` serve the roles of the seed documents.

Secrets on the command line: every PIN and ADM option (--pin, --new-pin, --sim-pin, --adm) also
takes `-`, one line read from standard input, or `env:NAME`, the value of the environment
variable NAME, so the secret stays out of `ps` and the shell history.

Exit codes: 0 success, 1 the card, device or a check said no, 2 bad input or usage.";

const AFTER_HELP: &str = "\
Examples:
  simlab demo
  simlab algo comp128v1 --ki 112233445566778899aabbccddeeff00 --rand 2233445566778899aabbccddeeff0011
  simlab readers
  simlab --reader 0 card info
  simlab emulate card --profile fixtures/cards/usim-milenage.toml &   # then: --reader 0
  simlab --emulate fixtures/cards/usim-milenage.toml card info
  simlab card provision --csv cards.csv --readers all --report done.json
  simlab sms encode --to +491701234567 --text 'Hello'
  simlab --emulate fixtures/cards/usim-milenage.toml token keygen --pin 0000
  simlab --emulate fixtures/cards/usim-milenage.toml card auth --rand 23553cbe9637a89d218ae64dae47bf35 --check
  read -rs PIN; export PIN; simlab --emulate fixtures/cards/usim-milenage.toml card verify-pin --pin env:PIN
  simlab completions bash > ~/.local/share/bash-completion/completions/simlab
  simlab man | man -l -

PINs and ADM keys: `-` reads one line from stdin, `env:NAME` reads the variable NAME.";

#[derive(Parser, Debug)]
#[command(name = "simlab", version, about = ABOUT, long_about = LONG_ABOUT, after_help = AFTER_HELP)]
struct Cli {
    #[command(flatten)]
    global: Global,

    #[command(subcommand)]
    command: Command,
}

/// Options every command understands: which card, and how to watch the conversation.
#[derive(clap::Args, Debug, Clone)]
pub struct Global {
    /// Use the simlab card model, personalised from this profile (fixtures/cards/*.toml).
    #[arg(
        long,
        global = true,
        value_name = "PROFILE.toml",
        conflicts_with = "reader"
    )]
    pub emulate: Option<PathBuf>,

    /// Use a PC/SC reader: its index in `simlab readers`, its name, or a unique part of it.
    #[arg(long, global = true, value_name = "NAME|INDEX")]
    pub reader: Option<String>,

    /// Use the SIM inside a modem, through AT+CSIM on its AT port (e.g. /dev/ttyUSB2); also the
    /// modem for `sms` and `otp` commands.
    #[arg(long, global = true, value_name = "PATH")]
    pub modem: Option<PathBuf>,

    /// Use a simlab-firmware token over its framed serial link: a device path or tcp:HOST:PORT.
    #[arg(long, global = true, value_name = "PATH|tcp:HOST:PORT")]
    pub serial: Option<String>,

    /// With --reader: wait up to this many seconds for a card to be inserted.
    #[arg(long, global = true, value_name = "SECONDS")]
    pub wait: Option<f64>,

    /// With --reader: connect exclusively, so no other process can talk to the card meanwhile.
    #[arg(long, global = true)]
    pub exclusive: bool,

    /// Write a transcript to this file: every APDU (time, direction, command name) and, for
    /// modem commands, every AT exchange. PINs, ADM keys, key material and OTP codes are blanked.
    /// A FILE.apdu records an APDU script instead, with secrets as ${NAME} placeholders, that
    /// `card script` replays (see `simlab card script --help`).
    #[arg(long, global = true, value_name = "FILE", value_parser = file_arg)]
    pub trace: Option<PathBuf>,

    /// Print machine-readable JSON on stdout (logs and progress stay on stderr).
    #[arg(long, global = true)]
    pub json: bool,

    /// Say more on stderr about what happens (-v: details and info logs, -vv: debug logs).
    /// RUST_LOG, when set, chooses the log levels instead (e.g. RUST_LOG=simlab_services=debug).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,

    /// How the logs of servers and emulators look on stderr: `text` for people (with
    /// timestamps), `json` (one object per line) for log collectors.
    #[arg(long, global = true, value_enum, default_value = "text")]
    pub log_format: LogFormat,
}

/// See `--log-format`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// Sets up `tracing` for the process: servers and emulators log at `info` by default (an
/// operator wants to see each request), one-shot commands only warnings unless `-v`.
fn init_logs(global: &Global, service: bool) {
    use tracing_subscriber::EnvFilter;
    let default = match (global.verbose, service) {
        (0, false) => "warn",
        (0, true) | (1, _) => "info",
        _ => "debug",
    };
    // Our crates at the chosen level, the libraries below one notch quieter (hyper and rustls
    // at info are noise for an operator).
    let directives = format!(
        "warn,simlab={default},simlab_services={default},simlab_emulate={default},simlab_card={default},simlab_modem={default}"
    );
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(directives));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false);
    let _ = match global.log_format {
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_span_list(false)
            .try_init(),
        LogFormat::Text => builder.with_ansi(false).try_init(),
    };
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Compute authentication vectors on the host, as an AuC does (no card involved).
    Algo(algo::AlgoArgs),
    /// Read, write, authenticate, verify PINs and provision programmable SIMs.
    #[command(subcommand)]
    Card(card::CardCommand),
    /// List PC/SC readers, whether a card is present, and its ATR.
    Readers,
    /// The secure-token applet: P-256 key generation, signatures, PIN.
    #[command(subcommand)]
    Token(token::TokenCommand),
    /// Modems: identity, registration, and a doctor for the AT set-up.
    #[command(subcommand)]
    Modem(modem::ModemCommand),
    /// Short messages: send, list, watch and delete through a modem; encode and decode PDUs.
    #[command(subcommand)]
    Sms(sms::SmsCommand),
    /// One-time passwords over SMS (seed 004): the service, terminal A's login and payment,
    /// the directory and the log; and single codes bound to an amount and a payee.
    #[command(subcommand)]
    Otp(otp::OtpCommand),
    /// Run an emulator: the card model as a virtual card behind pcscd (vpcd).
    #[command(subcommand)]
    Emulate(emulate::EmulateCommand),
    /// A whole virtual bench (a private pcscd, cards, modems) for other projects' tests:
    /// `lab run -- COMMAND`, or `lab up` / `lab down`.
    #[command(subcommand)]
    Lab(lab::LabCommand),
    /// The AuC (seed 000): subscriber keys, GSM triplets and UMTS quintets for gateways.
    #[command(subcommand)]
    Auc(auc::AucCommand),
    /// The gateway (seed 000): certificates from SIM authentication, validity checks, billing.
    #[command(subcommand)]
    Gateway(gateway::GatewayCommand),
    /// The seller (seed 000): sells against certificates, bills through the gateway.
    #[command(subcommand)]
    Seller(seller::SellerCommand),
    /// The mobile station (seed 000): enroll the token's key for a certificate.
    #[command(subcommand)]
    Ms(ms::MsCommand),
    /// Buy from a seller with the token's certificate; the token signs the invoice.
    Buy(buy::BuyArgs),
    /// Roaming m-commerce (seed 001): an operator's MeC server, its partner table, the CP and
    /// FI stubs.
    #[command(subcommand)]
    Mec(mec::MecCommand),
    /// The phone abroad (seed 001): shop at a content provider, approve at the home server.
    #[command(subcommand)]
    Roam(roam::RoamCommand),
    /// Prepare on a PC, sign on the phone's token (seed 002): the signing server and its web
    /// site, the directory, and the phone that approves.
    #[command(subcommand)]
    Sign(sign::SignCommand),
    /// Transfers between operators (seed 003): one operator's server and its store.
    #[command(subcommand)]
    Operator(operator::OperatorCommand),
    /// The phones of seed 003: order a transfer by SMS, read offers, accept or refuse them.
    #[command(subcommand)]
    Transfer(transfer::TransferCommand),
    /// Tell the simlab story end to end on emulated hardware.
    Demo(demo::DemoArgs),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell) to stdout.
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the manual page (roff) to stdout: `simlab man | man -l -`.
    Man,
}

/// Where results go: plain text for people, or one JSON document for scripts.
pub struct Output {
    json: bool,
    verbose: u8,
}

impl Output {
    /// Prints a result: `text` for people, `value` under `--json`.
    pub fn result(&self, text: &str, value: &Value) -> Result<()> {
        let mut stdout = std::io::stdout().lock();
        let written = if self.json {
            writeln!(stdout, "{value:#}")
        } else {
            write!(stdout, "{text}")
        };
        written.map_err(|source| Error::Io {
            context: "writing to stdout".into(),
            source,
        })
    }

    /// A narrative or progress line on stderr, shown unless `--json` keeps stdout clean for
    /// scripts (stderr is still fine then, but quiet is friendlier).
    pub fn say(&self, line: &str) {
        if !self.json {
            eprintln!("{line}");
        }
    }

    /// A detail shown only with `-v`.
    pub fn detail(&self, line: &str) {
        if self.verbose > 0 {
            eprintln!("{line}");
        }
    }

    pub fn json(&self) -> bool {
        self.json
    }
}

/// Runs the CLI and returns the process exit code.
pub fn main() -> i32 {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            // clap prints help/version to stdout (exit 0) and usage errors to stderr (exit 2).
            let _ = e.print();
            return e.exit_code();
        }
    };
    let service = matches!(
        cli.command,
        Command::Auc(auc::AucCommand::Serve { .. })
            | Command::Gateway(gateway::GatewayCommand::Serve { .. })
            | Command::Seller(seller::SellerCommand::Serve { .. })
            | Command::Mec(
                mec::MecCommand::Serve { .. }
                    | mec::MecCommand::Cp(mec::CpCommand::Serve { .. })
                    | mec::MecCommand::Fi(mec::FiCommand::Serve { .. })
            )
            | Command::Sign(sign::SignCommand::Serve(_) | sign::SignCommand::Watch(_))
            | Command::Operator(operator::OperatorCommand::Serve(_))
            | Command::Emulate(_)
    );
    init_logs(&cli.global, service);
    let out = Output {
        json: cli.global.json,
        verbose: cli.global.verbose,
    };
    let result = match cli.command {
        Command::Algo(args) => algo::run(&out, &args),
        Command::Card(cmd) => card::run(&out, &cli.global, &cmd),
        Command::Readers => readers::run(&out),
        Command::Token(cmd) => token::run(&out, &cli.global, &cmd),
        Command::Modem(cmd) => modem::run(&out, &cli.global, &cmd),
        Command::Sms(cmd) => sms::run(&out, &cli.global, &cmd),
        Command::Otp(cmd) => otp::run(&out, &cli.global, &cmd),
        Command::Emulate(cmd) => emulate::run(&out, &cli.global, &cmd),
        Command::Lab(cmd) => lab::run(&out, &cli.global, &cmd),
        Command::Auc(cmd) => auc::run(&out, &cli.global, &cmd),
        Command::Gateway(cmd) => gateway::run(&out, &cli.global, &cmd),
        Command::Seller(cmd) => seller::run(&out, &cli.global, &cmd),
        Command::Ms(cmd) => ms::run(&out, &cli.global, &cmd),
        Command::Buy(args) => buy::run(&out, &cli.global, &args),
        Command::Mec(cmd) => mec::run(&out, &cli.global, &cmd),
        Command::Roam(cmd) => roam::run(&out, &cli.global, &cmd),
        Command::Sign(cmd) => sign::run(&out, &cli.global, &cmd),
        Command::Operator(cmd) => operator::run(&out, &cli.global, &cmd),
        Command::Transfer(cmd) => transfer::run(&out, &cli.global, &cmd),
        Command::Demo(args) => demo::run(&out, &args),
        Command::Completions { shell } => {
            let mut cmd = <Cli as clap::CommandFactory>::command();
            clap_complete::generate(shell, &mut cmd, "simlab", &mut std::io::stdout());
            Ok(0)
        }
        Command::Man => man(),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("simlab: error: {e}");
            e.exit_code()
        }
    }
}

/// The value parser of options naming a file simlab writes (`--trace`, `--state`, `--db`): a
/// directory or a file in a missing folder is refused while parsing (exit 2), before any card
/// or modem is touched.
pub fn file_arg(s: &str) -> std::result::Result<PathBuf, String> {
    let path = PathBuf::from(s);
    simlab_services::db::check_file_path(&path).map_err(|e| e.to_string())?;
    Ok(path)
}

/// An existing directory (a TLS identity): refused at parse time, exit 2, when it is not one.
pub fn dir_arg(s: &str) -> std::result::Result<PathBuf, String> {
    let path = PathBuf::from(s);
    if !path.is_dir() {
        return Err(format!("{s}: not a directory"));
    }
    Ok(path)
}

/// The manual page, generated from the same definitions as `--help` (clap_mangen) at run time
/// rather than in a build step, so it cannot drift from the binary that prints it.
fn man() -> Result<i32> {
    let cmd = <Cli as clap::CommandFactory>::command();
    clap_mangen::Man::new(cmd)
        .render(&mut std::io::stdout())
        .map_err(|source| Error::Io {
            context: "writing the manual page to stdout".into(),
            source,
        })?;
    Ok(0)
}

/// Which option took standard input, and the line it read: one line is one secret, so a second
/// option asking for `-` is refused instead of getting the same line or the next one.
static STDIN_SECRET: std::sync::Mutex<Option<(String, String)>> = std::sync::Mutex::new(None);

/// A secret option's value (PIN, ADM key): `-` reads one line from stdin, `env:NAME` the
/// environment variable NAME, anything else is the value itself. Errors name the option, never
/// the value.
pub(crate) fn secret_arg(arg: &str, text: &str) -> Result<String> {
    if let Some(name) = text.strip_prefix("env:") {
        return std::env::var(name).map_err(|e| {
            Error::arg(
                arg,
                match e {
                    std::env::VarError::NotPresent => {
                        format!("the environment variable {name} is not set")
                    }
                    std::env::VarError::NotUnicode(_) => {
                        format!("the environment variable {name} is not UTF-8")
                    }
                },
            )
        });
    }
    if text != "-" {
        return Ok(text.to_string());
    }
    let mut taken = STDIN_SECRET
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    match &*taken {
        Some((by, value)) if by == arg => return Ok(value.clone()),
        Some((by, _)) => {
            return Err(Error::arg(
                arg,
                format!("standard input was already read for {by}; use env:NAME for this one"),
            ));
        }
        None => {}
    }
    let mut line = String::new();
    let n = std::io::stdin()
        .read_line(&mut line)
        .map_err(|e| Error::arg(arg, format!("reading standard input: {e}")))?;
    if n == 0 {
        return Err(Error::arg(arg, "`-` given, but standard input is empty"));
    }
    let value = line.trim_end_matches(['\n', '\r']).to_string();
    *taken = Some((arg.to_string(), value.clone()));
    Ok(value)
}

/// One line on stdout, flushed at once: a server's start line, which the process that started
/// it waits for before the server has anything else to say.
pub fn print_line(line: &str) {
    let mut stdout = std::io::stdout().lock();
    let _ = writeln!(stdout, "{line}").and_then(|()| stdout.flush());
}

#[cfg(test)]
mod tests {
    /// clap checks the whole command tree only when asked: a subcommand's `--timeout` or
    /// `--wait` that collides with a global option would otherwise panic at parse time in the
    /// field, not here.
    #[test]
    fn the_command_line_is_consistent() {
        <super::Cli as clap::CommandFactory>::command().debug_assert();
    }
}
