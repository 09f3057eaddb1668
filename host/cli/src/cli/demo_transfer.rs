//! `simlab demo transfer` (and the last chapter of the full demo): seed 003 in one process.
//! Two operators, OP1 and OP2, each with its own SQLite store in a temporary directory, talk
//! on channel 121 over real mutual TLS on loopback; the phones A (OP1) and B (OP2) and the two
//! service nodes are virtual modems on real ptys behind the in-process virtual SMS network
//! (host/emulate's `Smsc`), reached through the AT engine exactly as `simlab transfer` and
//! `simlab operator serve` reach theirs. Each phone's card model carries the token applet: the
//! card checks its PIN and the token signs M1 and M4 (the recommended mode; the subscriptions
//! hold the tokens' public keys, no PIN travels). The operators' clock is the demo's, so an
//! offer's deadline passes without waiting ten minutes. Every answer is checked; a failed
//! check stops the demo with exit status 1.
//!
//! [`World`] is shared with `simlab transfer bench` (scripts/bench transfer), which also runs
//! it without the SMS legs ([`Legs::Direct`]) and on PostgreSQL.

use super::Output;
use super::demo::{ensure, failed, say, step};
use super::demo_otp::io;
use serde_json::{Value, json};
use simlab_applet::chv::pad_pin;
use simlab_card::error::Result;
use simlab_card::profile::Profile;
use simlab_card::token::{PinOutcome, TokenSession};
use simlab_card::transport::Link;
use simlab_card::transport::inproc::InProcess;
use simlab_emulate::card::EmulatedCard;
use simlab_emulate::modem::{DEFAULT_SIM, DEFAULT_SMSC, Loopback, Options, Pty, VirtualModem};
use simlab_emulate::smsc::{self, Node, Smsc};
use simlab_modem::OpenOptions;
use simlab_modem::backend::{
    AtBackend, BackendError, Incoming, NullBackend, Receipt, SendOptions, SmsBackend,
};
use simlab_services::bytes::hex;
use simlab_services::http::Role;
use simlab_services::http::server::{Background, Limits};
use simlab_services::http::tls::{ClientTls, Identity, ServerTls};
use simlab_services::pki::gateway::ca::Ca;
use simlab_services::transfer::messages::{
    Answer, Auth, Goods, Message, Offer, Order, Response, SERVICE_PID, Service, TRef,
};
use simlab_services::transfer::service::{Config, Operator};
use simlab_services::transfer::store::{PeerRow, State, Store, Subscription, Ticket};
use simlab_sms::Address;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant};

pub(super) const A: &str = "+491710000001";
pub(super) const B: &str = "+491720000002";
/// The service nodes' numbers: each operator's subscribers send M1 and M4 there.
const SN1: &str = "+491710000000";
const SN2: &str = "+491720000000";
const TOKEN_PIN: &str = "0000";
/// What A's account is funded with.
pub(super) const FUNDED: u64 = 1000;
/// The seed's ten minutes for an answer.
const ANSWER_TTL: u64 = 600;
const DEMO_PROFILE: &str = include_str!("../../../../fixtures/cards/demo-usim.toml");

/// How the service messages travel between phones and service nodes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Legs {
    /// Through the virtual SMS network, virtual modems on ptys and the AT engine.
    Sms,
    /// No SMS at all: M1 and M4 are handed to the service node, the outbox is captured
    /// (what channel 121 and the stores cost on their own).
    #[cfg_attr(not(feature = "bench"), allow(dead_code))]
    Direct,
}

/// What one operator's outbox sent, when nothing goes over the air.
type Captured = Arc<Mutex<Vec<Incoming>>>;

/// A backend that sends nothing and keeps each message as the phone would receive it.
struct Capture {
    null: NullBackend,
    sent: Captured,
}

impl SmsBackend for Capture {
    fn send(&mut self, to: &Address, text: &str, o: &SendOptions) -> Result<Receipt, BackendError> {
        let r = self.null.send(to, text, o)?;
        self.keep(to, Some(text.to_string()), None, o.protocol_identifier);
        Ok(r)
    }
    fn send_data(
        &mut self,
        to: &Address,
        data: &[u8],
        o: &SendOptions,
    ) -> Result<Receipt, BackendError> {
        let r = self.null.send_data(to, data, o)?;
        self.keep(to, None, Some(data.to_vec()), o.protocol_identifier);
        Ok(r)
    }
    fn incoming(&mut self) -> Result<Vec<Incoming>, BackendError> {
        Ok(Vec::new())
    }
    fn describe(&self) -> String {
        "capture (no I/O)".into()
    }
}

impl Capture {
    fn keep(&self, to: &Address, text: Option<String>, data: Option<Vec<u8>>, pid: u8) {
        // The recipient rides in `from` here: `World::round` hands it to that phone.
        self.sent
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(Incoming {
                from: to.to_string(),
                text,
                data,
                protocol_identifier: pid,
            });
    }
}

/// A virtual modem serving its pty from a thread; stopped and joined when dropped.
struct ModemThread {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for ModemThread {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn start_modem(network: &Smsc, link: &Path, number: &str) -> Result<ModemThread> {
    let profile = Profile::parse(Path::new("(built-in modem SIM)"), DEFAULT_SIM)?;
    let card = EmulatedCard::new(profile.build_card()?, None, None)?;
    let mut modem = VirtualModem::new(
        card,
        Options {
            loopback: Loopback::None,
            own_number: Some(number.into()),
            smsc: Some(DEFAULT_SMSC.into()),
            ..Options::default()
        },
        None,
    );
    let port = network
        .port(number)
        .map_err(|e| failed("the SMS network", e))?;
    modem.attach(Box::new(port));
    let pty = Pty::open(Some(link)).map_err(io("creating a modem's pty"))?;
    let stop = Arc::new(AtomicBool::new(false));
    let thread = {
        let stop = stop.clone();
        std::thread::Builder::new()
            .name(format!("modem {number}"))
            .spawn(move || {
                let _ = modem.serve(pty, &stop, &mut |_| {});
            })
            .map_err(io("starting a virtual modem"))?
    };
    Ok(ModemThread {
        stop,
        thread: Some(thread),
    })
}

/// Which stores the operators use.
pub(super) enum Db {
    Sqlite,
    /// Two PostgreSQL URLs, OP1's and OP2's.
    #[cfg_attr(not(feature = "bench"), allow(dead_code))]
    Postgres(String, String),
}

/// A phone: its token, and (with SMS legs) its modem.
struct Phone {
    number: &'static str,
    via: &'static str,
    token: TokenSession,
    sms: Option<AtBackend>,
    /// Offers (M3) and notices that reached it, oldest first.
    offers: Vec<Offer>,
    notices: Vec<String>,
}

pub(super) struct World {
    dir: PathBuf,
    legs: Legs,
    pub(super) op1: Arc<Operator>,
    pub(super) op2: Arc<Operator>,
    a: Phone,
    b: Phone,
    /// Direct legs: what each operator's outbox sent.
    captured: [Captured; 2],
    /// Seconds the operators' clock (and the phones') is ahead of the real one.
    ahead: Arc<AtomicU64>,
    // Dropped in this order: the servers (and with them the operators and their modems' AT
    // ports), the modems, then the network.
    _servers: Vec<Background>,
    _modems: Vec<ModemThread>,
    _smsc: Option<Smsc>,
}

impl Drop for World {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn token(name: &str) -> Result<(TokenSession, Vec<u8>)> {
    let profile = Profile::parse(Path::new("fixtures/cards/demo-usim.toml"), DEMO_PROFILE)?;
    let mut token = TokenSession::open(Link::new(Box::new(InProcess::new(
        profile.build_card()?,
        name,
    ))))?;
    let pin = pad_pin(TOKEN_PIN).unwrap_or_default();
    ensure(
        token.verify_pin(&pin)? == PinOutcome::Verified,
        "the token refused its PIN",
    )?;
    let key = token.generate_key(false)?;
    Ok((token, key.0.to_vec()))
}

/// The result of one transfer, as both operators recorded it.
#[derive(Debug)]
pub(super) struct Outcome {
    pub(super) tref: TRef,
    pub(super) states: (State, State),
    pub(super) cause: Option<String>,
}

impl World {
    pub(super) fn start(legs: Legs, db: Db) -> Result<World> {
        let dir = std::env::temp_dir().join(format!(
            "simlab-demo-transfer-{}-{}-{:?}",
            std::process::id(),
            simlab_services::pki::now(),
            Instant::now()
        ));
        let dir = PathBuf::from(dir.to_string_lossy().replace(
            |c: char| !c.is_ascii_alphanumeric() && c != '/' && c != '-',
            "",
        ));
        std::fs::create_dir_all(&dir).map_err(io("creating the demo directory"))?;

        // The interconnect CA and one peer certificate per operator (channel 121).
        let ca = Ca::ephemeral("simlab transfer demo interconnect")
            .map_err(|e| failed("the interconnect CA", e))?;
        let ca_der = ca.certificate().der.clone();
        let mut ids = Vec::new();
        for name in ["OP1", "OP2"] {
            let t = ca
                .issue_tls(Role::Peer, name, &[], 86_400)
                .map_err(|e| failed("issuing a peer certificate", e))?;
            ids.push(Identity::from_der(
                t.certificate_der.clone(),
                t.key_pkcs8_der.to_vec(),
                vec![ca_der.clone()],
            ));
        }

        // The SMS network: two phones, two service nodes, each on a pty.
        let (smsc, modems, node_sms) = match legs {
            Legs::Sms => {
                let network = Smsc::start(
                    smsc::Config {
                        smsc: Address::parse(DEFAULT_SMSC)
                            .map_err(|e| failed("the service centre", e))?,
                        phones: vec![A.into(), B.into()],
                        nodes: vec![
                            Node {
                                number: SN1.into(),
                                prefixes: vec!["+49171".into()],
                            },
                            Node {
                                number: SN2.into(),
                                prefixes: vec!["+49172".into()],
                            },
                        ],
                        delays: HashMap::new(),
                        drops: HashMap::new(),
                    },
                    Box::new(|_| {}),
                )
                .map_err(|e| failed("the SMS network", e))?;
                let mut modems = Vec::new();
                for (n, link) in [
                    (A, "phone-a"),
                    (B, "phone-b"),
                    (SN1, "op1-sn"),
                    (SN2, "op2-sn"),
                ] {
                    modems.push(start_modem(&network, &dir.join(link), n)?);
                }
                let open = |link: &str| {
                    AtBackend::open(&dir.join(link), OpenOptions::default())
                        .map_err(|e| failed(&format!("opening the modem {link}"), e))
                };
                let phones = (open("phone-a")?, open("phone-b")?);
                let nodes: [Box<dyn SmsBackend>; 2] =
                    [Box::new(open("op1-sn")?), Box::new(open("op2-sn")?)];
                (Some(network), modems, (Some(phones), nodes))
            }
            Legs::Direct => (None, Vec::new(), (None, [dummy(), dummy()])),
        };
        let (phone_sms, nodes) = node_sms;
        let captured: [Captured; 2] = [Arc::default(), Arc::default()];
        let nodes: Vec<Box<dyn SmsBackend>> = match legs {
            Legs::Sms => nodes.into_iter().collect(),
            Legs::Direct => captured
                .iter()
                .map(|c| {
                    Box::new(Capture {
                        null: NullBackend::default(),
                        sent: c.clone(),
                    }) as Box<dyn SmsBackend>
                })
                .collect(),
        };

        // Channel 121: each operator's server, its handler set once the operator exists.
        let cells: Vec<Arc<OnceLock<Arc<Operator>>>> =
            vec![Arc::new(OnceLock::new()), Arc::new(OnceLock::new())];
        let mut servers = Vec::new();
        for (i, id) in ids.iter().enumerate() {
            let cell = cells[i].clone();
            let handler = Arc::new(
                move |req: &simlab_services::http::Request| match cell.get() {
                    Some(op) => op.handle(req),
                    None => simlab_services::http::ApiError::internal("starting").into(),
                },
            );
            let tls = ServerTls::new(id, &id.ca).map_err(|e| failed("the peer TLS", e))?;
            servers.push(
                Background::start("127.0.0.1:0", handler, Limits::default(), Some(tls), "op")
                    .map_err(|e| failed("starting an operator server", e))?,
            );
        }

        // The stores: peers (the other's URL, number range and pinned certificate), the
        // subscriptions with the tokens' keys, the accounts.
        let stores = match &db {
            Db::Sqlite => [
                Store::open_path(&dir.join("op1.sqlite")),
                Store::open_path(&dir.join("op2.sqlite")),
            ],
            Db::Postgres(u1, u2) => [Store::open(u1), Store::open(u2)],
        };
        let [s1, s2] = stores;
        let stores = [
            s1.map_err(|e| failed("OP1's store", e))?,
            s2.map_err(|e| failed("OP2's store", e))?,
        ];
        for (i, other) in [(0usize, 1usize), (1, 0)] {
            stores[i]
                .put_peer(
                    &PeerRow {
                        name: format!("OP{}", other + 1),
                        url: servers[other].url(),
                        country_code: "49".into(),
                        prefixes: vec![format!("17{}", other + 1)],
                        certificate_der: ids[other].chain[0].as_ref().to_vec(),
                    },
                    true,
                )
                .map_err(|e| failed("the peer table", e))?;
        }
        let (token_a, key_a) = token("phone A")?;
        let (token_b, key_b) = token("phone B")?;
        let all = vec![Service::Pay, Service::Ticket, Service::Bill];
        for (i, number, key) in [(0, A, key_a), (1, B, key_b)] {
            stores[i]
                .put_subscription(
                    &Subscription::new(number, all.clone(), None, Some(key)),
                    true,
                )
                .map_err(|e| failed("a subscription", e))?;
        }
        // A fresh database gets A's 1000; one used before (PostgreSQL) keeps what it has.
        if stores[0].account(A).ok().flatten().is_none() {
            stores[0]
                .fund(A, FUNDED, "EUR")
                .map_err(|e| failed("funding A", e))?;
        }
        if stores[1].account(B).ok().flatten().is_none() {
            stores[1]
                .fund(B, 0, "EUR")
                .map_err(|e| failed("opening B's account", e))?;
        }

        let ahead = Arc::new(AtomicU64::new(0));
        let mut ops = Vec::new();
        for (i, (store, sms)) in stores.into_iter().zip(nodes).enumerate() {
            let ahead = ahead.clone();
            let op = Operator::new(
                Config {
                    name: format!("OP{}", i + 1),
                    client_tls: ClientTls {
                        anchors: ids[i].ca.clone(),
                        identity: Some(ids[i].clone()),
                    },
                    answer_ttl: ANSWER_TTL,
                    resend: false,
                    pin_in_sms: false,
                    peer_timeout: Duration::from_secs(5),
                    fault: None,
                },
                store,
                sms,
            )
            .map_err(|e| failed("an operator", e))?
            .with_clock(Box::new(move || {
                simlab_services::pki::now() + ahead.load(Ordering::Relaxed)
            }));
            let op = Arc::new(op);
            let _ = cells[i].set(op.clone());
            ops.push(op);
        }
        let op2 = ops.pop().ok_or_else(|| failed("OP2", "missing"))?;
        let op1 = ops.pop().ok_or_else(|| failed("OP1", "missing"))?;
        let (sms_a, sms_b) = match phone_sms {
            Some((a, b)) => (Some(a), Some(b)),
            None => (None, None),
        };
        Ok(World {
            dir,
            legs,
            op1,
            op2,
            a: Phone {
                number: A,
                via: SN1,
                token: token_a,
                sms: sms_a,
                offers: Vec::new(),
                notices: Vec::new(),
            },
            b: Phone {
                number: B,
                via: SN2,
                token: token_b,
                sms: sms_b,
                offers: Vec::new(),
                notices: Vec::new(),
            },
            captured,
            ahead,
            _servers: servers,
            _modems: modems,
            _smsc: smsc,
        })
    }

    fn now(&self) -> u64 {
        simlab_services::pki::now() + self.ahead.load(Ordering::Relaxed)
    }

    /// Moves the operators' (and phones') clock on.
    pub(super) fn advance(&self, seconds: u64) {
        self.ahead.fetch_add(seconds, Ordering::Relaxed);
    }

    /// A phone sends a service message (signed by its token) to its service node.
    fn send(&mut self, from_a: bool, body: Vec<u8>) -> Result<()> {
        let legs = self.legs;
        let (phone, op) = if from_a {
            (&mut self.a, &self.op1)
        } else {
            (&mut self.b, &self.op2)
        };
        match (legs, phone.sms.as_mut()) {
            (Legs::Sms, Some(sms)) => {
                let to = Address::parse(phone.via).map_err(|e| failed("a number", e))?;
                sms.send_data(
                    &to,
                    &body,
                    &SendOptions {
                        protocol_identifier: SERVICE_PID,
                        max_parts: 3,
                        ..SendOptions::default()
                    },
                )
                .map_err(|e| failed("sending a service message", e))?;
            }
            _ => op.handle_sms(&Incoming {
                from: phone.number.into(),
                text: None,
                data: Some(body),
                protocol_identifier: SERVICE_PID,
            }),
        }
        Ok(())
    }

    /// A's order (M1), signed by A's token.
    pub(super) fn order(&mut self, service: Service, goods: Goods, message: &str) -> Result<()> {
        let mut m1 = Order {
            service,
            sender: A.into(),
            receiver: B.into(),
            message: message.into(),
            goods,
            issued_at: self.now(),
            auth: Auth::Pin(String::new()),
        };
        m1.auth = Auth::Signature(self.a.token.sign(&m1.signed_bytes())?);
        self.send(true, m1.encode())
    }

    /// B's answer (M4) to `offer`, signed by B's token over the exact M3 it was shown.
    pub(super) fn answer(&mut self, offer: &Offer, response: Response) -> Result<()> {
        let mut m4 = Answer {
            tref: offer.tref,
            response,
            from: B.into(),
            offer_hash: offer.hash(),
            issued_at: self.now(),
            auth: Auth::Pin(String::new()),
        };
        m4.auth = Auth::Signature(self.b.token.sign(&m4.signed_bytes())?);
        self.send(false, m4.encode())
    }

    /// One round of everything the operators' loops and the phones do.
    fn round(&mut self) -> Result<()> {
        for op in [&self.op1, &self.op2] {
            match self.legs {
                Legs::Sms => op.sms_round(),
                Legs::Direct => op.flush_outbox(),
            }
            .map_err(|e| failed(&format!("{}'s SMS loop", op.name()), e))?;
            op.drive()
                .map_err(|e| failed(&format!("{}'s worker", op.name()), e))?;
        }
        let mut got = Vec::new();
        match self.legs {
            Legs::Sms => {
                for (i, p) in [&mut self.a, &mut self.b].into_iter().enumerate() {
                    if let Some(sms) = p.sms.as_mut() {
                        let m = sms.incoming().map_err(|e| failed("a phone's modem", e))?;
                        got.extend(m.into_iter().map(|m| (i, m)));
                    }
                }
            }
            Legs::Direct => {
                for c in &self.captured {
                    for m in c.lock().unwrap_or_else(PoisonError::into_inner).drain(..) {
                        got.push((usize::from(m.from == B), m));
                    }
                }
            }
        }
        for (i, m) in got {
            let p = if i == 0 { &mut self.a } else { &mut self.b };
            match (&m.data, &m.text) {
                (Some(d), _) if m.protocol_identifier == SERVICE_PID => {
                    if let Ok(Message::Offer(o)) = Message::decode(d) {
                        p.offers.push(o);
                    }
                }
                (_, Some(t)) if t.starts_with("simlab-transfer") => p.notices.push(t.clone()),
                _ => {}
            }
        }
        Ok(())
    }

    /// Runs rounds until `done` holds (or 20 s pass: a failed step).
    fn until(&mut self, what: &str, done: impl Fn(&World) -> bool) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            self.round()?;
            if done(self) {
                return Ok(());
            }
            ensure(Instant::now() < deadline, &format!("timed out: {what}"))?;
            if self.legs == Legs::Sms {
                std::thread::sleep(Duration::from_millis(2));
            }
        }
    }

    /// The next offer that reaches B.
    pub(super) fn next_offer(&mut self) -> Result<Offer> {
        let seen = self.b.offers.len();
        self.until("the offer (M3) reaching B", |w| w.b.offers.len() > seen)?;
        Ok(self.b.offers[seen].clone())
    }

    fn agents_final(&self, tref: &TRef) -> bool {
        [&self.op1, &self.op2].iter().all(|op| {
            op.store()
                .agent(tref)
                .ok()
                .flatten()
                .is_some_and(|a| a.state.is_final())
        })
    }

    fn told(p: &Phone, tref: &TRef) -> Vec<String> {
        let t = hex(tref);
        p.notices
            .iter()
            .filter(|n| n.contains(&t))
            .cloned()
            .collect()
    }

    /// Rounds until both agents of `tref` are final and A has been told.
    pub(super) fn settle(&mut self, tref: &TRef) -> Result<Outcome> {
        self.until("the transfer ending on both sides", |w| {
            w.agents_final(tref) && !World::told(&w.a, tref).is_empty()
        })?;
        let get = |op: &Operator| {
            op.store()
                .agent(tref)
                .map_err(|e| failed("a store", e))?
                .ok_or_else(|| failed("a store", "the agent is gone"))
        };
        let (a1, a2) = (get(&self.op1)?, get(&self.op2)?);
        Ok(Outcome {
            tref: *tref,
            states: (a1.state, a2.state),
            cause: a1.cause.or(a2.cause),
        })
    }

    /// Rounds until B has been told about `tref` too.
    fn b_told(&mut self, tref: &TRef) -> Result<Vec<String>> {
        self.until("B's notice", |w| !World::told(&w.b, tref).is_empty())?;
        Ok(World::told(&self.b, tref))
    }

    pub(super) fn balance(&self, op: &Operator, n: &str) -> Result<u64> {
        Ok(op
            .store()
            .account(n)
            .map_err(|e| failed("a store", e))?
            .map(|a| a.balance)
            .unwrap_or(0))
    }

    /// A's and B's balances, in that order.
    pub(super) fn balances(&self) -> Result<(u64, u64)> {
        Ok((self.balance(&self.op1, A)?, self.balance(&self.op2, B)?))
    }

    /// Both ledgers balanced, and OP1's payable to OP2 equals OP2's receivable from OP1.
    pub(super) fn ledgers(&self) -> Result<(i64, i64)> {
        let l1 = self
            .op1
            .store()
            .ledger()
            .map_err(|e| failed("OP1's ledger", e))?;
        let l2 = self
            .op2
            .store()
            .ledger()
            .map_err(|e| failed("OP2's ledger", e))?;
        ensure(
            l1.balanced(),
            &format!("OP1's ledger does not add up: {l1:?}"),
        )?;
        ensure(
            l2.balanced(),
            &format!("OP2's ledger does not add up: {l2:?}"),
        )?;
        ensure(
            l1.payable - l1.receivable == l2.receivable - l2.payable,
            &format!("the settlement differs: OP1 {l1:?}, OP2 {l2:?}"),
        )?;
        Ok((l1.payable - l1.receivable, l2.receivable - l2.payable))
    }

    /// One accepted transfer of `amount` from A to B, from the order to both notices.
    /// Each order's note differs: the same M1 twice (same second, same deterministic
    /// signature) is a repeated order the service node ignores, by design.
    #[cfg_attr(not(feature = "bench"), allow(dead_code))]
    pub(super) fn pay_round(&mut self, amount: u64, round: usize) -> Result<()> {
        self.order(Service::Pay, money(amount), &format!("bench {round}"))?;
        let offer = self.next_offer()?;
        self.answer(&offer, Response::Accept)?;
        let o = self.settle(&offer.tref)?;
        ensure(
            o.states == (State::Completed, State::Completed),
            &format!("the transfer ended {:?} ({:?})", o.states, o.cause),
        )?;
        self.b_told(&offer.tref)?;
        Ok(())
    }

    /// Drops what the phones were told so far (a bench keeps no history).
    #[cfg_attr(not(feature = "bench"), allow(dead_code))]
    pub(super) fn forget(&mut self) {
        for p in [&mut self.a, &mut self.b] {
            p.offers.clear();
            p.notices.clear();
        }
    }
}

fn dummy() -> Box<dyn SmsBackend> {
    Box::new(NullBackend::default())
}

pub(super) fn money(amount: u64) -> Goods {
    Goods::Money {
        amount,
        currency: "EUR".into(),
    }
}

/// Both sides' final states, and why, for a failed check.
fn state_pair(o: &Outcome) -> String {
    format!(
        "{} / {} ({})",
        o.states.0.as_str(),
        o.states.1.as_str(),
        o.cause.as_deref().unwrap_or("no cause recorded")
    )
}

pub fn chapter(out: &Output, first: usize) -> Result<Value> {
    step(
        out,
        first,
        "Transfers between two operators by SMS (seed 003): both operations or neither",
    );
    let mut w = World::start(Legs::Sms, Db::Sqlite)?;
    say(
        out,
        &format!(
            "OP1 and OP2 run in this process, each with its own SQLite store, and talk on\n\
             channel 121 over mutual TLS (peer certificates from one interconnect CA, pinned).\n\
             Phone A {A} (OP1, {FUNDED} cents), phone B {B} (OP2, 0) and the\n\
             service nodes {SN1} and {SN2} are virtual modems on ptys behind a\n\
             virtual SMS network. Recommended mode: each phone's card checks its PIN and its\n\
             token signs M1 and M4; the subscriptions hold the tokens' public keys, and no PIN\n\
             travels in any SMS."
        ),
    );

    // 1. Accepted.
    step(
        out,
        first + 1,
        "A sends B 2.50 EUR; B accepts; both operators prepare, then commit",
    );
    w.order(Service::Pay, money(250), "rent")?;
    let offer = w.next_offer()?;
    ensure(offer.goods == money(250), "the offer shows 2.50 EUR")?;
    ensure(
        offer.sender == A && offer.operator == "OP1",
        "the offer names A and OP1",
    )?;
    say(
        out,
        &format!(
            "B's phone shows: {}",
            super::transfer::offer_text(&offer).trim_end()
        ),
    );
    w.answer(&offer, Response::Accept)?;
    let accepted = w.settle(&offer.tref)?;
    ensure(
        accepted.states == (State::Completed, State::Completed),
        &format!("the transfer ended {}", state_pair(&accepted)),
    )?;
    let told_b = w.b_told(&offer.tref)?;
    let told_a = World::told(&w.a, &offer.tref);
    ensure(
        told_a.iter().any(|t| t.contains("done:")) && told_b.iter().any(|t| t.contains("done:")),
        "both A and B are told it is done",
    )?;
    let balances = w.balances()?;
    ensure(balances == (750, 250), &format!("balances {balances:?}"))?;
    let settlement = w.ledgers()?;
    ensure(
        settlement == (250, 250),
        &format!("settlement {settlement:?}"),
    )?;
    say(
        out,
        &format!(
            "A was told: \"{}\"\nB was told: \"{}\"\n\
             Balances 750 / 250; both ledgers add up; OP1 owes OP2 250 (settlement).",
            told_a.join(" | "),
            told_b.join(" | ")
        ),
    );

    // 2. Rejected.
    step(
        out,
        first + 2,
        "A sends B 1.00 EUR; B rejects: nothing moves",
    );
    w.order(Service::Pay, money(100), "lunch")?;
    let offer = w.next_offer()?;
    w.answer(&offer, Response::Reject)?;
    let rejected = w.settle(&offer.tref)?;
    ensure(
        rejected.states == (State::Rejected, State::Rejected),
        &format!("the rejection ended {}", state_pair(&rejected)),
    )?;
    ensure(w.balances()? == (750, 250), "a rejection moved money")?;
    let held = w
        .op1
        .store()
        .account(A)
        .map_err(|e| failed("OP1's store", e))?
        .map(|a| a.held)
        .unwrap_or(1);
    ensure(held == 0, "money is still held for a rejected transfer")?;
    ensure(w.ledgers()? == (250, 250), "the settlement moved")?;
    let told_a = World::told(&w.a, &offer.tref);
    say(
        out,
        &format!(
            "Both sides: rejected. A was told: \"{}\". Balances still 750 / 250, nothing held.",
            told_a.join(" | ")
        ),
    );

    // 3. Timed out.
    step(
        out,
        first + 3,
        "A sends B 3.00 EUR; B does not answer in ten minutes: the offer is cancelled",
    );
    w.order(Service::Pay, money(300), "bike")?;
    let offer = w.next_offer()?;
    w.advance(ANSWER_TTL + 1);
    let expired = w.settle(&offer.tref)?;
    ensure(
        expired.states == (State::Expired, State::Expired),
        &format!("the deadline ended {}", state_pair(&expired)),
    )?;
    let told_a = World::told(&w.a, &offer.tref);
    ensure(
        told_a.iter().any(|t| t.contains("expired")),
        &format!("A is told the offer expired: {told_a:?}"),
    )?;
    let told_b = w.b_told(&offer.tref)?;
    // B answers too late: it is told so, and still nothing moves.
    w.answer(&offer, Response::Accept)?;
    w.until("B's late answer being refused", |w| {
        World::told(&w.b, &offer.tref).len() > told_b.len()
    })?;
    let late = World::told(&w.b, &offer.tref);
    ensure(
        late.last().is_some_and(|t| t.contains("expired")),
        &format!("the late answer is told expired: {late:?}"),
    )?;
    ensure(w.balances()? == (750, 250), "an expired offer moved money")?;
    ensure(w.ledgers()? == (250, 250), "the settlement moved")?;
    say(
        out,
        &format!(
            "The operators' clock moved {} s on: OP2 cancelled the offer at its deadline.\n\
             A was told: \"{}\"\nB's late acceptance got: \"{}\". Balances still 750 / 250.",
            ANSWER_TTL + 1,
            told_a.join(" | "),
            late.last().cloned().unwrap_or_default()
        ),
    );

    // 4. A ticket split.
    step(
        out,
        first + 4,
        "A gives B 3 uses of a 10-use ticket: 7 left to A, a 3-use ticket for B",
    );
    w.op1
        .store()
        .add_ticket(&Ticket {
            id: "bus-4711".into(),
            owner: A.into(),
            service: "bus".into(),
            uses: 10,
            held: 0,
            valid_until: w.now() + 30 * 86_400,
        })
        .map_err(|e| failed("issuing A's ticket", e))?;
    w.order(
        Service::Ticket,
        Goods::Uses {
            ticket: "bus-4711".into(),
            uses: 3,
        },
        "for the trip",
    )?;
    let offer = w.next_offer()?;
    w.answer(&offer, Response::Accept)?;
    let split = w.settle(&offer.tref)?;
    ensure(
        split.states == (State::Completed, State::Completed),
        &format!("the ticket transfer ended {}", state_pair(&split)),
    )?;
    let left = w
        .op1
        .store()
        .ticket("bus-4711")
        .map_err(|e| failed("OP1's store", e))?
        .map(|t| (t.uses, t.held))
        .unwrap_or_default();
    ensure(
        left == (7, 0),
        &format!("A's ticket has {left:?} (uses, held) left"),
    )?;
    let b_tickets: Vec<Ticket> = w
        .op2
        .store()
        .tickets()
        .map_err(|e| failed("OP2's store", e))?
        .into_iter()
        .filter(|t| t.owner == B)
        .collect();
    ensure(
        b_tickets.len() == 1 && b_tickets[0].uses == 3,
        &format!("B's tickets: {b_tickets:?}"),
    )?;
    let told_b = w.b_told(&offer.tref)?;
    ensure(w.balances()? == (750, 250), "a ticket transfer moved money")?;
    ensure(
        w.ledgers()? == (250, 250),
        "a ticket transfer moved the settlement",
    )?;
    say(
        out,
        &format!(
            "A's ticket bus-4711: 7 uses left. B's new ticket {}: 3 uses.\nB was told: \"{}\"",
            b_tickets[0].id,
            told_b.join(" | ")
        ),
    );
    Ok(json!({
        "mode": "token",
        "accepted": {
            "tref": hex(&accepted.tref),
            "state": accepted.states.0.as_str(),
            "balances": {"a": balances.0, "b": balances.1},
            "settlement": settlement.0,
        },
        "rejected": {"tref": hex(&rejected.tref), "state": rejected.states.0.as_str()},
        "expired": {"tref": hex(&expired.tref), "state": expired.states.0.as_str()},
        "ticket": {
            "tref": hex(&split.tref),
            "state": split.states.0.as_str(),
            "left": left.0,
            "new_ticket": b_tickets[0].id,
            "new_uses": b_tickets[0].uses,
        },
        "ledgers_balanced": true,
    }))
}
