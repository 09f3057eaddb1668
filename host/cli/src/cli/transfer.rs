//! `simlab transfer …`: seed 003's phones — the SIM Toolkit menu the seed describes, played by
//! the CLI. `send`, `ticket` and `bill` build an order (M1); `inbox` reads offers (M3) and
//! notices off the phone's modem; `accept`, `reject` and `postpone` answer an offer (M4). M1
//! and M4 go by SMS (8-bit data, TP-PID 0xC1) to the operator's service node; the token signs
//! them after the card checked its PIN (the recommended mode), or, with `--pin-in-sms`, the
//! service PIN travels in the message itself (the seed's literal lab mode).

use super::pki::{STATE_HELP, open_card, open_token, pin_arg};
use super::{Global, Output};
use clap::Subcommand;
use serde_json::{Value, json};
use simlab_card::error::{Error, Result};
use simlab_modem::backend::{AtBackend, SendOptions, SmsBackend};
use simlab_services::bytes::hex;
use simlab_services::transfer::messages::{
    self, Answer, Auth, Goods, Message, Offer, Order, Response, SERVICE_PID, Service,
};
use simlab_sms::Address;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

#[derive(Subcommand, Debug)]
pub enum TransferCommand {
    /// Send money to a subscriber of any operator (M1, service pay).
    #[command(after_help = "\
Example:
  simlab --modem /tmp/phone-a --emulate phone-a.toml transfer send --from +491710000001 \\
      --via +491710000000 --to +491720000002 --amount 2.50 --message rent --pin 1234 --state a.state")]
    Send(SendArgs),
    /// Give uses of a ticket to another subscriber (M1, service ticket).
    Ticket(TicketArgs),
    /// A point of sale bills a customer (M1, service bill; the customer pays if it accepts).
    Bill(SendArgs),
    /// Read offers (M3) and notices that arrived on --modem, and list the open offers.
    #[command(after_help = "\
Offers are kept in --inbox (a JSON file) so that `accept`, `reject` and `postpone` find them by
T-REF; notices from the operators (done, not done, refused) are printed as they arrive.")]
    Inbox(InboxArgs),
    /// Accept an offer: the money (or uses) move once both operators have prepared.
    Accept(AnswerArgs),
    /// Refuse an offer.
    Reject(AnswerArgs),
    /// Put an offer off (--until SECONDS from now).
    Postpone(AnswerArgs),
    /// Benchmark: coordinated transfers per second between two operators (scripts/bench
    /// transfer).
    #[cfg(feature = "bench")]
    #[command(hide = true)]
    Bench(super::transfer_bench::BenchArgs),
}

#[derive(clap::Args, Debug)]
pub struct AuthArgs {
    /// The token PIN: the card checks it, then the token signs the message (`-`: read from
    /// stdin; `env:NAME`: from the environment).
    #[arg(long, value_name = "PIN", conflicts_with = "pin_in_sms")]
    pin: Option<String>,
    /// Lab mode: the service PIN travels in the SMS (the seed's literal PIN1/PIN2); `-` and
    /// `env:NAME` as for --pin.
    #[arg(long, value_name = "PIN")]
    pin_in_sms: Option<String>,
    #[arg(long, value_name = "FILE", long_help = STATE_HELP, value_parser = crate::cli::file_arg)]
    state: Option<PathBuf>,
}

#[derive(clap::Args, Debug)]
pub struct SendArgs {
    /// This phone's number (S-MS).
    #[arg(long, value_name = "NUMBER")]
    from: String,
    /// The operator's service-node number the order goes to.
    #[arg(long, value_name = "NUMBER")]
    via: String,
    /// The other party (R-MS).
    #[arg(long, value_name = "NUMBER")]
    to: String,
    /// The amount, e.g. 2.50.
    #[arg(long, value_name = "AMOUNT")]
    amount: String,
    #[arg(long, value_name = "CODE", default_value = "EUR")]
    currency: String,
    /// P-MSG: a note the other party reads (at most 80 bytes).
    #[arg(long, value_name = "TEXT", default_value = "")]
    message: String,
    #[command(flatten)]
    auth: AuthArgs,
}

#[derive(clap::Args, Debug)]
pub struct TicketArgs {
    #[arg(long, value_name = "NUMBER")]
    from: String,
    #[arg(long, value_name = "NUMBER")]
    via: String,
    #[arg(long, value_name = "NUMBER")]
    to: String,
    /// The ticket to take the uses from.
    #[arg(long, value_name = "ID")]
    ticket: String,
    /// How many uses move (fewer than the ticket has left).
    #[arg(long, value_name = "M")]
    uses: u32,
    #[arg(long, value_name = "TEXT", default_value = "")]
    message: String,
    #[command(flatten)]
    auth: AuthArgs,
}

#[derive(clap::Args, Debug)]
pub struct InboxArgs {
    /// Where this phone keeps its offers.
    #[arg(long, value_name = "FILE")]
    inbox: PathBuf,
    /// Wait up to this many seconds for at least one new message (0: read once).
    #[arg(long, value_name = "SECONDS", default_value_t = 0)]
    timeout: u64,
}

#[derive(clap::Args, Debug)]
pub struct AnswerArgs {
    /// The offer's T-REF (as `transfer inbox` shows it).
    #[arg(long, value_name = "HEX")]
    tref: String,
    #[arg(long, value_name = "FILE")]
    inbox: PathBuf,
    /// The operator's service-node number the answer goes to.
    #[arg(long, value_name = "NUMBER")]
    via: String,
    /// `postpone`: seconds from now.
    #[arg(long, value_name = "SECONDS")]
    until: Option<u64>,
    #[command(flatten)]
    auth: AuthArgs,
}

pub fn run(out: &Output, global: &Global, cmd: &TransferCommand) -> Result<i32> {
    match cmd {
        TransferCommand::Send(a) => send_money(out, global, a, Service::Pay),
        TransferCommand::Bill(a) => send_money(out, global, a, Service::Bill),
        TransferCommand::Ticket(a) => send_ticket(out, global, a),
        TransferCommand::Inbox(a) => inbox(out, global, a),
        TransferCommand::Accept(a) => answer(out, global, a, "accept"),
        TransferCommand::Reject(a) => answer(out, global, a, "reject"),
        TransferCommand::Postpone(a) => answer(out, global, a, "postpone"),
        #[cfg(feature = "bench")]
        TransferCommand::Bench(a) => super::transfer_bench::run(out, a),
    }
}

fn number(arg: &str, n: &str) -> Result<Address> {
    messages::check_number("number", n).map_err(|_| {
        Error::arg(
            arg,
            format!("{n:?} is not an international number (+ and up to 15 digits)"),
        )
    })?;
    Address::parse(n).map_err(|e| Error::arg(arg, e.to_string()))
}

fn modem(global: &Global) -> Result<AtBackend> {
    let Some(path) = &global.modem else {
        return Err(Error::arg(
            "--modem",
            "service messages go by SMS: --modem PATH (this phone's modem)",
        ));
    };
    Ok(AtBackend::open(path, super::modem::options(global)?)?)
}

/// How the message will be authenticated, checked before anything is sent.
enum Signer {
    Token([u8; simlab_applet::chv::PIN_LEN]),
    Pin(String),
}

fn signer(a: &AuthArgs) -> Result<Signer> {
    match (&a.pin, &a.pin_in_sms) {
        (Some(p), None) => Ok(Signer::Token(pin_arg("--pin", p)?)),
        (None, Some(p)) => {
            // As every PIN option: `-` reads it from stdin, `env:NAME` from the environment,
            // so it need not sit in the process list.
            let p = crate::cli::secret_arg("--pin-in-sms", p)?;
            messages::check_pin(&p).map_err(|e| Error::arg("--pin-in-sms", e.to_string()))?;
            Ok(Signer::Pin(p))
        }
        _ => Err(Error::arg(
            "--pin",
            "give --pin (the token signs) or, in the lab mode, --pin-in-sms",
        )),
    }
}

fn authenticate(
    out: &Output,
    global: &Global,
    a: &AuthArgs,
    s: Signer,
    signed: &[u8],
) -> Result<Auth> {
    match s {
        Signer::Pin(p) => Ok(Auth::Pin(p)),
        Signer::Token(pin) => {
            let card = open_card(out, global, a.state.as_deref())?;
            let mut token = open_token(&card, global, Some(&pin))?;
            Ok(Auth::Signature(token.sign(signed)?))
        }
    }
}

fn send_data(global: &Global, to: &Address, body: &[u8], confidential: bool) -> Result<usize> {
    let mut sms = modem(global)?;
    let r = sms
        .send_data(
            to,
            body,
            &SendOptions {
                protocol_identifier: SERVICE_PID,
                max_parts: 3,
                confidential,
                ..SendOptions::default()
            },
        )
        .map_err(|e| Error::Io {
            context: format!("sending the service message on {}", sms.describe()),
            source: std::io::Error::other(e.to_string()),
        })?;
    Ok(r.parts)
}

fn send_order(
    out: &Output,
    global: &Global,
    auth: &AuthArgs,
    via: &str,
    mut order: Order,
) -> Result<i32> {
    let to = number("--via", via)?;
    let s = signer(auth)?;
    let lab = matches!(s, Signer::Pin(_));
    order.auth = authenticate(out, global, auth, s, &order.signed_bytes())?;
    let body = order.encode();
    let parts = send_data(global, &to, &body, lab)?;
    out.result(
        &format!(
            "order sent to {via}: {} {} to {} ({parts} SMS)\n",
            order.service.as_str(),
            order.goods.display(),
            order.receiver
        ),
        &json!({"service": order.service, "to": order.receiver, "via": via, "goods": order.goods, "parts": parts}),
    )?;
    Ok(0)
}

fn send_money(out: &Output, global: &Global, a: &SendArgs, service: Service) -> Result<i32> {
    number("--from", &a.from)?;
    number("--to", &a.to)?;
    simlab_services::sign::check_currency(&a.currency).map_err(|e| Error::arg("--currency", e))?;
    let amount = simlab_services::sign::parse_amount(&a.amount, &a.currency)
        .map_err(|e| Error::arg("--amount", e))?;
    if amount > messages::AMOUNT_MAX {
        return Err(Error::arg("--amount", "too large"));
    }
    messages::check_message(&a.message).map_err(|e| Error::arg("--message", e.to_string()))?;
    let order = Order {
        service,
        sender: a.from.clone(),
        receiver: a.to.clone(),
        message: a.message.clone(),
        goods: Goods::Money {
            amount,
            currency: a.currency.clone(),
        },
        issued_at: simlab_services::pki::now(),
        auth: Auth::Pin(String::new()),
    };
    send_order(out, global, &a.auth, &a.via, order)
}

fn send_ticket(out: &Output, global: &Global, a: &TicketArgs) -> Result<i32> {
    number("--from", &a.from)?;
    number("--to", &a.to)?;
    messages::check_ticket_id(&a.ticket).map_err(|e| Error::arg("--ticket", e.to_string()))?;
    if a.uses == 0 {
        return Err(Error::arg("--uses", "at least 1"));
    }
    messages::check_message(&a.message).map_err(|e| Error::arg("--message", e.to_string()))?;
    let order = Order {
        service: Service::Ticket,
        sender: a.from.clone(),
        receiver: a.to.clone(),
        message: a.message.clone(),
        goods: Goods::Uses {
            ticket: a.ticket.clone(),
            uses: a.uses,
        },
        issued_at: simlab_services::pki::now(),
        auth: Auth::Pin(String::new()),
    };
    send_order(out, global, &a.auth, &a.via, order)
}

/// The phone's kept offers: `{"offers": [{"tref", "from", "offer"}]}`.
fn load_inbox(path: &Path) -> Result<Vec<Value>> {
    match std::fs::read_to_string(path) {
        Ok(text) => {
            let v: Value = serde_json::from_str(&text)
                .map_err(|e| Error::arg("--inbox", format!("{}: {e}", path.display())))?;
            Ok(v["offers"].as_array().cloned().unwrap_or_default())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(Error::arg("--inbox", format!("{}: {e}", path.display()))),
    }
}

fn save_inbox(path: &Path, offers: &[Value]) -> Result<()> {
    let tmp = path.with_extension("tmp");
    let write = || -> std::io::Result<()> {
        std::fs::write(&tmp, format!("{:#}\n", json!({"offers": offers})))?;
        std::fs::rename(&tmp, path)
    };
    write().map_err(|source| Error::Io {
        context: format!("writing {}", path.display()),
        source,
    })
}

fn offer_json(o: &Offer, from: &str) -> Value {
    json!({
        "tref": hex(&o.tref), "from": from, "service": o.service, "sender": o.sender,
        "receiver": o.receiver, "operator": o.operator, "message": o.message, "goods": o.goods,
        "deadline": o.deadline, "offer": hex(&o.encode()),
    })
}

pub(super) fn offer_text(o: &Offer) -> String {
    let what = match o.service {
        Service::Bill => format!("{} bills you {}", o.sender, o.goods.display()),
        _ => format!("{} offers you {}", o.sender, o.goods.display()),
    };
    format!(
        "offer {}: {what} ({}){}; answer before {}\n",
        hex(&o.tref),
        o.operator,
        if o.message.is_empty() {
            String::new()
        } else {
            format!(": {:?}", o.message)
        },
        simlab_services::pki::der::iso8601(o.deadline)
    )
}

fn inbox(out: &Output, global: &Global, a: &InboxArgs) -> Result<i32> {
    let mut offers = load_inbox(&a.inbox)?;
    let mut sms = modem(global)?;
    let deadline = Instant::now() + Duration::from_secs(a.timeout.min(3600));
    let mut notices = Vec::new();
    let mut new_offers = 0;
    loop {
        let got = sms.incoming().map_err(|e| Error::Io {
            context: format!("reading SMS on {}", sms.describe()),
            source: std::io::Error::other(e.to_string()),
        })?;
        for m in got {
            match (&m.data, m.protocol_identifier, &m.text) {
                (Some(data), SERVICE_PID, _) => match Message::decode(data) {
                    Ok(Message::Offer(o)) => {
                        let j = offer_json(&o, &m.from);
                        if !offers.iter().any(|x| x["tref"] == j["tref"]) {
                            offers.push(j);
                        }
                        new_offers += 1;
                    }
                    Ok(_) => {
                        tracing::info!(from = %m.from, "a service message that is not an offer")
                    }
                    Err(e) => {
                        tracing::warn!(from = %m.from, error = %e, "an unreadable service message")
                    }
                },
                (_, _, Some(text)) if text.starts_with("simlab-transfer") => {
                    notices.push(json!({"from": m.from, "text": text}))
                }
                _ => tracing::info!(from = %m.from, "not for simlab transfer; left alone"),
            }
        }
        if new_offers + notices.len() > 0 || Instant::now() >= deadline {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    save_inbox(&a.inbox, &offers)?;
    let mut text = String::new();
    for n in &notices {
        text.push_str(&format!("{}\n", n["text"].as_str().unwrap_or("")));
    }
    for o in &offers {
        if let Some(Ok(Message::Offer(offer))) = o["offer"]
            .as_str()
            .and_then(simlab_services::bytes::unhex)
            .map(|b| Message::decode(&b))
        {
            text.push_str(&offer_text(&offer));
        }
    }
    if text.is_empty() {
        text.push_str("nothing\n");
    }
    // `received` counts every M3 that arrived in this read, repeats included (an offer sent
    // again halfway to its deadline is kept once but counted twice).
    out.result(
        &text,
        &json!({"offers": offers, "notices": notices, "received": new_offers}),
    )?;
    Ok(0)
}

fn answer(out: &Output, global: &Global, a: &AnswerArgs, what: &str) -> Result<i32> {
    let via = number("--via", &a.via)?;
    let s = signer(&a.auth)?;
    let response = match (what, a.until) {
        ("postpone", Some(secs)) if (1..=86_400).contains(&secs) => Response::Postpone {
            until: simlab_services::pki::now() + secs,
        },
        ("postpone", _) => {
            return Err(Error::arg(
                "--until",
                "postpone needs --until 1 to 86400 (seconds from now)",
            ));
        }
        (_, Some(_)) => return Err(Error::arg("--until", "only postpone takes --until")),
        ("accept", None) => Response::Accept,
        _ => Response::Reject,
    };
    let offers = load_inbox(&a.inbox)?;
    let found = offers
        .iter()
        .find(|o| o["tref"].as_str() == Some(a.tref.to_ascii_lowercase().as_str()))
        .ok_or_else(|| {
            Error::arg(
                "--tref",
                format!(
                    "no offer {} in {} (run `transfer inbox` first)",
                    a.tref,
                    a.inbox.display()
                ),
            )
        })?;
    let Some(Ok(Message::Offer(offer))) = found["offer"]
        .as_str()
        .and_then(simlab_services::bytes::unhex)
        .map(|b| Message::decode(&b))
    else {
        return Err(Error::arg("--inbox", "the kept offer no longer decodes"));
    };
    out.say(&offer_text(&offer));
    let lab = matches!(s, Signer::Pin(_));
    let mut m4 = Answer {
        tref: offer.tref,
        response,
        from: offer.receiver.clone(),
        offer_hash: offer.hash(),
        issued_at: simlab_services::pki::now(),
        auth: Auth::Pin(String::new()),
    };
    m4.auth = authenticate(out, global, &a.auth, s, &m4.signed_bytes())?;
    let parts = send_data(global, &via, &m4.encode(), lab)?;
    out.result(
        &format!("{what} sent to {} for {} ({parts} SMS)\n", a.via, hex(&offer.tref)),
        &json!({"tref": hex(&offer.tref), "response": response.as_str(), "via": a.via, "parts": parts}),
    )?;
    Ok(0)
}
