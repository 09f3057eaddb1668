//! One operator of seed 003: the SMS service node (takes M1 and M4 off the modem by TP-PID),
//! the service manager (subscriptions, agents), channel 121 to the peers (JSON over mutual
//! TLS: M2, the answer 145, and the two-phase commit PREPARE / COMMIT / ABORT keyed by T-REF),
//! and the operation manager's accounts, tickets and settlement in the [`Store`].
//!
//! Three threads drive it: the HTTP server answers the peers; the SMS loop reads the modem and
//! sends the outbox; the worker moves every agent whose next step is this operator's —
//! sending M2, forwarding an answer, preparing, deciding, committing, aborting, asking a
//! silent coordinator, and the deadline. Every step is a conditional transaction in the
//! store, so the worker resumes after a crash exactly where the log says, and a step repeated
//! by a retry or by a second message changes nothing.
//!
//! The debtor's operator coordinates: it holds the debit (PREPARE locally), asks the creditor
//! to reserve the credit (PREPARE over 121), writes its decision together with the debit
//! (COMMITTING), then tells the creditor (COMMIT) until it acknowledges (step 160). Presumed
//! abort: a creditor whose coordinator has no record of a commit aborts.

use super::messages::{
    Answer, Auth, Goods, Message, Offer, Order, Response, SERVICE_PID, Service, TRef,
};
use super::store::{Agent, Effects, Operation, PeerRow, Side, State, Step, Store, StoreError};
use crate::bytes::hex;
use crate::http::client::{self, ClientError, Url};
use crate::http::tls::ClientTls;
use crate::http::{ApiError, Request, Response as HttpResponse, Role};
use crate::router::PrefixRouter;
use serde::{Deserialize, Serialize};
use serde_json::json;
use sha2::{Digest, Sha256};
use simlab_modem::backend::{Incoming, SendOptions, SmsBackend};
use simlab_sms::Address;
use std::collections::HashMap;
use std::sync::{Mutex, PoisonError, RwLock};
use std::time::Duration;

/// How far an order's or answer's time may be from the operator's clock.
pub const MAX_SKEW: u64 = 600;
/// Wrong PIN2/signature tries before an offer is cancelled.
pub const MAX_TRIES: u32 = 3;
/// How long a creditor waits for the coordinator's word before it asks.
const ASK_AFTER: u64 = 5;
/// How long past the deadline a coordinator keeps trying to reach a silent peer.
const GRACE: u64 = 60;

/// Misbehaviour on demand, for the tests of what the other side and recovery do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// The coordinator stops (forever) right after the creditor voted prepared, before it
    /// writes its decision: the test kills it there and restarts it.
    StallAfterPrepare,
    /// The point of sale changes its bill after the customer's operator has it (Fig 3's
    /// hash check must stop the debit).
    AlterBill,
    /// The creditor refuses every PREPARE (a failed credit operation).
    FailCredit,
}

pub struct Config {
    /// This operator's name (its peer certificate's CN).
    pub name: String,
    /// The peer identity and trust for channel 121.
    pub client_tls: ClientTls,
    /// How long the other party has to answer (the seed's 10 minutes).
    pub answer_ttl: u64,
    /// Send M3 a second time halfway to the deadline instead of only cancelling at it.
    pub resend: bool,
    /// Accept the seed's literal PIN in the SMS (a lab mode; off: only token signatures).
    pub pin_in_sms: bool,
    /// How long one call to a peer may take.
    pub peer_timeout: Duration,
    pub fault: Option<Fault>,
}

/// M2 and the offer, as sent on channel 121.
#[derive(Serialize, Deserialize, Debug)]
#[serde(deny_unknown_fields)]
pub struct Request2 {
    pub tref: String,
    /// The M3 the origin built (hex); its fields are the transfer's.
    pub offer: String,
}

/// The answer 145, forwarded to the debtor's operator.
#[derive(Serialize, Deserialize, Debug)]
#[serde(deny_unknown_fields)]
pub struct Forwarded {
    pub response: Response,
    /// Not an answer but the deadline passed (or too many wrong PINs): the offer is gone.
    #[serde(default)]
    pub expired: bool,
}

#[derive(Serialize, Deserialize, Debug)]
#[serde(deny_unknown_fields)]
pub struct Prepare {
    /// SHA-256 of the offer the person accepted (hex): the creditor checks it is its own.
    pub offer_hash: String,
}

#[derive(Serialize, Deserialize, Debug)]
#[serde(deny_unknown_fields)]
pub struct Abort {
    pub reason: String,
    /// The final state the abort means: `aborted`, `rejected` or `expired`.
    #[serde(default = "aborted")]
    pub state: String,
}

fn aborted() -> String {
    "aborted".into()
}

/// One operator.
pub struct Operator {
    config: Config,
    store: Store,
    table: RwLock<(PrefixRouter<String>, HashMap<String, PeerRow>)>,
    sms: Mutex<Box<dyn SmsBackend>>,
    clock: Box<dyn Fn() -> u64 + Send + Sync>,
    /// Peers that could not be reached a moment ago, until when, and why. The worker drives
    /// agents one after another: without this, every agent of a silent peer would cost its
    /// own `peer_timeout` per round and hold up the transfers with every other peer.
    down: Mutex<HashMap<String, (std::time::Instant, String)>>,
}

/// How long a peer that could not be reached is not called again (its agents' steps fail at
/// once in the meantime, so their deadlines still run).
const DOWN_FOR: Duration = Duration::from_secs(10);

fn tref_of(s: &str) -> Result<TRef, ApiError> {
    crate::bytes::unhex(s)
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| ApiError::bad_request("bad_tref", format!("{s:?} is not 16 hex digits")))
}

fn store_error(e: StoreError) -> ApiError {
    ApiError::internal(e.to_string())
}

/// A new T-REF: 8 random bytes.
pub fn new_tref() -> TRef {
    let r = crate::bytes::random16();
    let mut t = [0u8; 8];
    t.copy_from_slice(&r[..8]);
    t
}

impl Operator {
    pub fn new(config: Config, store: Store, sms: Box<dyn SmsBackend>) -> Result<Self, StoreError> {
        let op = Operator {
            config,
            store,
            table: RwLock::new((PrefixRouter::new(), HashMap::new())),
            sms: Mutex::new(sms),
            clock: Box::new(crate::pki::now),
            down: Mutex::new(HashMap::new()),
        };
        op.reload()?;
        Ok(op)
    }

    /// A clock the tests set.
    pub fn with_clock(mut self, clock: Box<dyn Fn() -> u64 + Send + Sync>) -> Self {
        self.clock = clock;
        self
    }

    fn now(&self) -> u64 {
        (self.clock)()
    }

    pub fn name(&self) -> &str {
        &self.config.name
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    pub fn describe_sms(&self) -> String {
        self.sms
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .describe()
    }

    /// Rebuilds the number router from the peer table.
    pub fn reload(&self) -> Result<(), StoreError> {
        let mut router = PrefixRouter::new();
        let mut by_name = HashMap::new();
        for p in self.store.peers()? {
            router
                .add(p.name.clone(), &p.country_code, &p.prefixes)
                .map_err(|e| StoreError::Corrupt(e.to_string()))?;
            by_name.insert(p.name.clone(), p);
        }
        *self.table.write().unwrap_or_else(PoisonError::into_inner) = (router, by_name);
        Ok(())
    }

    fn peer_for_number(&self, number: &str) -> Option<PeerRow> {
        let table = self.table.read().unwrap_or_else(PoisonError::into_inner);
        let routes = table.0.lookup(number).ok()?;
        let name = routes.first()?.key.clone();
        table.1.get(&name).cloned()
    }

    fn peer(&self, name: &str) -> Option<PeerRow> {
        let table = self.table.read().unwrap_or_else(PoisonError::into_inner);
        table.1.get(name).cloned()
    }

    fn peer_url(&self, peer: &PeerRow) -> Result<Url, ClientError> {
        Ok(Url::parse(&peer.url)?
            .with_tls_timeout(Some(&self.config.client_tls), self.config.peer_timeout))
    }

    // =====================================================================================
    // The SMS service node
    // =====================================================================================

    /// One round of the SMS loop: read what arrived, handle it, send what is owed.
    pub fn sms_round(&self) -> Result<(), String> {
        let incoming = {
            let mut sms = self.sms.lock().unwrap_or_else(PoisonError::into_inner);
            sms.incoming().map_err(|e| e.to_string())?
        };
        for m in incoming {
            self.handle_sms(&m);
        }
        self.flush_outbox()
    }

    /// Sends the outbox. A message the backend refuses for good is marked failed (and
    /// logged); one that failed on the way stays queued for the next round.
    pub fn flush_outbox(&self) -> Result<(), String> {
        let unsent = self.store.unsent(20).map_err(|e| e.to_string())?;
        for o in unsent {
            let Ok(to) = Address::parse(&o.number) else {
                let _ = self.store.sent(o.seq, Some("not a number"), self.now());
                continue;
            };
            let mut sms = self.sms.lock().unwrap_or_else(PoisonError::into_inner);
            let result = match (&o.data, &o.text) {
                (Some(data), _) => sms.send_data(
                    &to,
                    data,
                    &SendOptions {
                        protocol_identifier: SERVICE_PID,
                        max_parts: 3,
                        ..SendOptions::default()
                    },
                ),
                (None, Some(text)) => sms.send(&to, text, &SendOptions::default()),
                (None, None) => {
                    let _ = self.store.sent(o.seq, Some("empty"), self.now());
                    continue;
                }
            };
            drop(sms);
            match result {
                Ok(_) => {
                    tracing::info!(to = %o.number, kind = if o.data.is_some() { "M3" } else { "notice" }, "SMS sent");
                    self.store
                        .sent(o.seq, None, self.now())
                        .map_err(|e| e.to_string())?;
                }
                Err(e)
                    if !e.maybe_sent()
                        && matches!(e, simlab_modem::backend::BackendError::Encode(_)) =>
                {
                    tracing::error!(to = %o.number, error = %e, "SMS cannot be encoded; given up");
                    self.store
                        .sent(o.seq, Some(&e.to_string()), self.now())
                        .map_err(|e| e.to_string())?;
                }
                Err(e) => {
                    // Kept: sent again next round (a modem that failed before the network
                    // had the message; a duplicate notice is better than a lost one).
                    return Err(format!("sending to {}: {e}", o.number));
                }
            }
        }
        Ok(())
    }

    fn reply(&self, to: &str, text: String) {
        if let Err(e) = self.store.queue_sms(to, None, Some(&text), self.now()) {
            tracing::error!(to = %to, error = %e, "queueing a reply");
        }
    }

    /// Takes one incoming SMS: service messages (TP-PID 0xC1, 8-bit data) are M1 or M4;
    /// anything else is not for the service node and is left alone (answering texts could
    /// loop between two automatic responders).
    pub fn handle_sms(&self, m: &Incoming) {
        let (Some(data), SERVICE_PID) = (&m.data, m.protocol_identifier) else {
            tracing::info!(from = %m.from, pid = m.protocol_identifier, "not a service message; ignored");
            return;
        };
        let message = match Message::decode(data) {
            Ok(msg) => msg,
            Err(e) => {
                tracing::warn!(from = %m.from, error = %e, "unreadable service message");
                self.reply(
                    &m.from,
                    format!("simlab-transfer: refused: the service message cannot be read ({e})"),
                );
                return;
            }
        };
        let digest: [u8; 32] = Sha256::digest(data).into();
        match message {
            Message::Order(o) => self.order(&m.from, o, digest),
            Message::Answer(a) => self.answer(&m.from, a, digest),
            Message::Offer(_) => {
                tracing::warn!(from = %m.from, "an M3 sent to the service node; ignored")
            }
        }
    }

    /// Checks an M1's or M4's authentication with the subscription.
    fn authenticate(&self, number: &str, signed: &[u8], auth: &Auth) -> Result<(), String> {
        let sub = match self.store.subscription(number) {
            Ok(Some(s)) if s.active => s,
            Ok(_) => return Err(format!("{number} is not subscribed here")),
            Err(e) => return Err(format!("store: {e}")),
        };
        match auth {
            Auth::Signature(sig) => match &sub.public_key {
                Some(k) if crate::pki::verify::p256_sha256(k, signed, sig) => Ok(()),
                Some(_) => Err("the signature does not verify".into()),
                None => Err("no token key is registered for this subscription".into()),
            },
            Auth::Pin(pin) => {
                if !self.config.pin_in_sms {
                    return Err("PINs in SMS are not accepted here (sign with the token)".into());
                }
                match &sub.pin {
                    Some(v) if crate::sign::password_matches(pin, v) => Ok(()),
                    Some(_) => Err("wrong PIN".into()),
                    None => Err("no service PIN is set for this subscription".into()),
                }
            }
        }
    }

    /// M1 (105–110): checks, a T-REF, an agent; the worker sends M2.
    fn order(&self, from: &str, o: Order, digest: [u8; 32]) {
        let now = self.now();
        let refuse = |why: String| {
            tracing::info!(from = %from, reason = %why, "order refused");
            self.reply(from, format!("simlab-transfer: order refused: {why}"));
        };
        if from != o.sender {
            // The network's originator is the identity; an order naming someone else is
            // refused to its real sender.
            return refuse(format!("the order names {} as sender", o.sender));
        }
        if o.issued_at.abs_diff(now) > MAX_SKEW {
            return refuse("the order is too old (or from the future)".into());
        }
        match self.store.first_sight(&digest, now) {
            Ok(true) => {}
            Ok(false) => {
                tracing::info!(from = %from, "repeated order ignored");
                return;
            }
            Err(e) => return tracing::error!(error = %e, "store"),
        }
        if let Err(why) = self.authenticate(from, &o.signed_bytes(), &o.auth) {
            return refuse(why);
        }
        match self.store.subscription(from) {
            Ok(Some(s)) if s.services.contains(&o.service) => {}
            _ => return refuse(format!("not subscribed to {}", o.service.as_str())),
        }
        let Some(peer) = self.peer_for_number(&o.receiver) else {
            return refuse(format!("no operator is known for {}", o.receiver));
        };
        let tref = new_tref();
        let offer = Offer {
            tref,
            service: o.service,
            sender: o.sender.clone(),
            receiver: o.receiver.clone(),
            operator: self.config.name.clone(),
            message: o.message.clone(),
            goods: o.goods.clone(),
            deadline: now + self.config.answer_ttl,
        };
        let agent = Agent {
            tref,
            side: match o.service {
                Service::Bill => Side::Creditor,
                _ => Side::Debtor,
            },
            origin: true,
            service: o.service,
            sender: o.sender,
            receiver: o.receiver,
            peer: peer.name.clone(),
            message: o.message,
            goods: o.goods,
            offer_hash: Some(offer.hash()),
            offer: Some(offer.encode()),
            answer_hash: None,
            response: None,
            state: State::Requested,
            cause: None,
            deadline: offer.deadline,
            resent: false,
            tries: 0,
            new_ticket: None,
            created_at: now,
            updated_at: now,
        };
        match self.store.add_agent(&agent, Effects::log("M1 accepted")) {
            Ok(_) => {
                tracing::info!(tref = %hex(&tref), from = %from, to = %agent.receiver, peer = %peer.name, service = agent.service.as_str(), "order accepted")
            }
            Err(e) => tracing::error!(error = %e, "storing an agent"),
        }
    }

    /// M4 (135): the answer of this operator's subscriber to an offer.
    fn answer(&self, from: &str, a: Answer, digest: [u8; 32]) {
        let now = self.now();
        let tref = hex(&a.tref);
        let agent = match self.store.agent(&a.tref) {
            Ok(Some(agent)) if !agent.origin => agent,
            Ok(_) => {
                tracing::info!(tref = %tref, from = %from, "answer for an unknown transfer");
                return self.reply(from, format!("simlab-transfer {tref}: no such transfer"));
            }
            Err(e) => return tracing::error!(error = %e, "store"),
        };
        if from != agent.receiver || from != a.from {
            // Only the person the offer went to may answer; anybody else is not told a thing.
            tracing::warn!(tref = %tref, from = %from, "answer from another number ignored");
            return;
        }
        if agent.answer_hash == Some(digest) {
            tracing::info!(tref = %tref, "repeated answer ignored");
            return;
        }
        if agent.state == State::Expired {
            return self.reply(from, format!("simlab-transfer {tref}: expired"));
        }
        if agent.state != State::AwaitingAnswer {
            tracing::info!(tref = %tref, state = agent.state.as_str(), "answer after the offer was answered; ignored");
            return;
        }
        if a.issued_at.abs_diff(now) > MAX_SKEW {
            return self.reply(
                from,
                format!("simlab-transfer {tref}: the answer is too old"),
            );
        }
        if Some(a.offer_hash) != agent.offer_hash {
            tracing::warn!(tref = %tref, "answer for another offer");
            return self.reply(
                from,
                format!("simlab-transfer {tref}: the answer does not match the offer"),
            );
        }
        if let Err(why) = self.authenticate(from, &a.signed_bytes(), &a.auth) {
            let tries = self.store.count_try(&a.tref, now).unwrap_or(MAX_TRIES);
            tracing::info!(tref = %tref, tries, reason = %why, "answer refused");
            if tries >= MAX_TRIES {
                let _ = self.close_offer(&agent, "too many wrong PINs", now);
            }
            return self.reply(
                from,
                format!(
                    "simlab-transfer {tref}: answer refused: {why} ({} tries left)",
                    MAX_TRIES.saturating_sub(tries)
                ),
            );
        }
        let step = match (agent.side, a.response) {
            // The bill's customer: this operator is the debtor's and coordinates.
            (Side::Debtor, Response::Accept) => self.store.step(
                &a.tref,
                &[State::AwaitingAnswer],
                State::Accepted,
                Operation::None,
                |ag| ag.answer_hash = Some(digest),
                Effects::log("M4 accept"),
                now,
            ),
            (Side::Debtor, Response::Reject) => self.store.step(
                &a.tref,
                &[State::AwaitingAnswer],
                State::Aborting,
                Operation::None,
                |ag| {
                    ag.answer_hash = Some(digest);
                    ag.cause = Some("rejected".into());
                },
                Effects::log("M4 reject"),
                now,
            ),
            (_, Response::Postpone { until }) => self.postpone(&agent, until, digest, now),
            (Side::Creditor, response) => self.store.step(
                &a.tref,
                &[State::AwaitingAnswer],
                State::Forwarding,
                Operation::None,
                |ag| {
                    ag.answer_hash = Some(digest);
                    ag.response = Some(response);
                },
                Effects::log(format!("M4 {}", response.as_str())),
                now,
            ),
        };
        match step {
            Ok(Step::Done) => {
                tracing::info!(tref = %tref, response = a.response.as_str(), "answer taken")
            }
            Ok(_) => tracing::info!(tref = %tref, "answer raced another step; ignored"),
            Err(e) => tracing::error!(tref = %tref, error = %e, "storing an answer"),
        }
    }

    fn postpone(
        &self,
        agent: &Agent,
        until: u64,
        digest: [u8; 32],
        now: u64,
    ) -> Result<Step, StoreError> {
        let limit = now + 86_400;
        let until = until.clamp(now, limit);
        let text = format!(
            "simlab-transfer {}: put off until {}",
            hex(&agent.tref),
            crate::pki::der::iso8601(until)
        );
        let effects = Effects::log("M4 postpone").text(&agent.receiver, text);
        let step = self.store.step(
            &agent.tref,
            &[State::AwaitingAnswer],
            if agent.side == Side::Creditor {
                State::Forwarding
            } else {
                State::AwaitingAnswer
            },
            Operation::None,
            |ag| {
                ag.answer_hash = Some(digest);
                ag.deadline = ag.deadline.max(until + self.config.answer_ttl);
                ag.response = Some(Response::Postpone { until });
                // A postponed offer is asked again when the time comes.
                ag.resent = false;
            },
            effects,
            now,
        )?;
        Ok(step)
    }

    /// The offer is gone without an acceptance (rejected, expired, too many wrong tries).
    fn close_offer(&self, agent: &Agent, why: &str, now: u64) -> Result<Step, StoreError> {
        match agent.side {
            Side::Creditor => self.store.step(
                &agent.tref,
                &[State::AwaitingAnswer],
                State::Forwarding,
                Operation::None,
                |ag| {
                    ag.response = Some(Response::Reject);
                    ag.cause = Some(why.to_string());
                },
                Effects::log(format!("offer closed: {why}")),
                now,
            ),
            Side::Debtor => self.store.step(
                &agent.tref,
                &[State::AwaitingAnswer],
                State::Aborting,
                Operation::None,
                |ag| ag.cause = Some(why.to_string()),
                Effects::log(format!("offer closed: {why}")),
                now,
            ),
        }
    }

    // =====================================================================================
    // The worker
    // =====================================================================================

    /// One round of the worker: every agent whose next step is ours.
    pub fn drive(&self) -> Result<(), StoreError> {
        let now = self.now();
        let active = self.store.agents(&State::ACTIVE, 200)?;
        for agent in active {
            if let Err(e) = self.drive_one(&agent, now) {
                tracing::warn!(tref = %hex(&agent.tref), state = agent.state.as_str(), error = %e, "step postponed");
            }
        }
        Ok(())
    }

    fn drive_one(&self, a: &Agent, now: u64) -> Result<(), String> {
        let coordinator = a.side == Side::Debtor;
        match a.state {
            State::Requested => self.send_m2(a, now),
            State::AwaitingAnswer => self.watch_deadline(a, now),
            State::Forwarding => self.forward(a, now),
            State::Accepted if coordinator => self.prepare_local(a, now),
            State::Prepared if coordinator => self.ask_vote(a, now),
            State::Committing => self.send_commit(a, now),
            State::Aborting => self.send_abort(a, now),
            // A creditor waiting for the coordinator's word: ask it when it is quiet.
            State::Accepted | State::Prepared if now >= a.updated_at + ASK_AFTER => {
                self.ask_coordinator(a, now)
            }
            _ => Ok(()),
        }
        .map_err(|e| e.to_string())
    }

    fn peer_of(&self, a: &Agent) -> Result<(PeerRow, Url), String> {
        let peer = self
            .peer(&a.peer)
            .ok_or_else(|| format!("peer {:?} is no longer in the table", a.peer))?;
        let url = self.peer_url(&peer).map_err(|e| e.to_string())?;
        Ok((peer, url))
    }

    /// One call on channel 121 to the agent's peer, unless that peer was unreachable less
    /// than [`DOWN_FOR`] ago: then the same kind of error at once, without the network.
    fn call<T>(
        &self,
        a: &Agent,
        f: impl FnOnce() -> Result<T, ClientError>,
    ) -> Result<T, ClientError> {
        let now = std::time::Instant::now();
        {
            let down = self.down.lock().unwrap_or_else(PoisonError::into_inner);
            if let Some((until, why)) = down.get(&a.peer)
                && now < *until
            {
                return Err(ClientError::Connect {
                    addr: a.peer.clone(),
                    source: std::io::Error::other(format!("not tried again yet: {why}")),
                });
            }
        }
        let got = f();
        let mut down = self.down.lock().unwrap_or_else(PoisonError::into_inner);
        match &got {
            Err(
                e
                @ (ClientError::Connect { .. } | ClientError::Tls { .. } | ClientError::Io { .. }),
            ) => {
                tracing::warn!(peer = %a.peer, error = %e, "peer unreachable; its agents wait");
                down.insert(a.peer.clone(), (now + DOWN_FOR, e.to_string()));
            }
            _ => {
                down.remove(&a.peer);
            }
        }
        got
    }

    fn notice(&self, a: &Agent, what: &str) -> String {
        format!("simlab-transfer {}: {what}", hex(&a.tref))
    }

    /// Origin: M2 to the peer (121). The peer refusing (not subscribed) ends the transfer.
    fn send_m2(&self, a: &Agent, now: u64) -> Result<(), String> {
        let (_, url) = self.peer_of(a)?;
        let body = Request2 {
            tref: hex(&a.tref),
            offer: hex(a.offer.as_deref().unwrap_or_default()),
        };
        let sent: Result<serde_json::Value, ClientError> =
            self.call(a, || client::post_json(&url, "/v1/peer/transfers", &body));
        let (to, effects, why) = match sent {
            Ok(_) => (
                State::AwaitingAnswer,
                Effects::log("M2 acknowledged"),
                String::new(),
            ),
            Err(ClientError::Status(e)) if (400..500).contains(&e.status) => {
                let why = format!("{} refused it: {}", a.peer, e.detail);
                (
                    State::Aborted,
                    Effects::log(format!("M2 refused: {}", e.code)).text(
                        a.local_number(),
                        self.notice(a, &format!("not done: {why}")),
                    ),
                    why,
                )
            }
            Err(e) if now > a.deadline => {
                let why = format!("{} cannot be reached ({e})", a.peer);
                (
                    State::Aborted,
                    Effects::log("M2 undelivered").text(
                        a.local_number(),
                        self.notice(a, &format!("not done: {why}")),
                    ),
                    why,
                )
            }
            Err(e) => return Err(e.to_string()),
        };
        self.store
            .step(
                &a.tref,
                &[State::Requested],
                to,
                Operation::None,
                |ag| {
                    if !why.is_empty() {
                        ag.cause = Some(why.clone())
                    }
                },
                effects,
                now,
            )
            .map_err(|e| e.to_string())?;
        tracing::info!(tref = %hex(&a.tref), state = to.as_str(), "M2 done");
        Ok(())
    }

    /// The answering side's deadline: M3 once more halfway (with `--resend`), cancel at the
    /// deadline. The origin waits longer: the peer tells it; only a peer silent past the grace
    /// makes it give up.
    fn watch_deadline(&self, a: &Agent, now: u64) -> Result<(), String> {
        if a.origin {
            if now > a.deadline + GRACE && a.side == Side::Debtor {
                self.store
                    .step(
                        &a.tref,
                        &[State::AwaitingAnswer],
                        State::Aborting,
                        Operation::None,
                        |ag| ag.cause = Some("expired".into()),
                        Effects::log("deadline passed; peer silent"),
                        now,
                    )
                    .map_err(|e| e.to_string())?;
            } else if now > a.deadline + GRACE {
                self.store
                    .step(
                        &a.tref,
                        &[State::AwaitingAnswer],
                        State::Expired,
                        Operation::None,
                        |ag| ag.cause = Some("expired".into()),
                        Effects::log("deadline passed; peer silent").text(
                            a.local_number(),
                            self.notice(a, "not done: no answer in time"),
                        ),
                        now,
                    )
                    .map_err(|e| e.to_string())?;
            }
            return Ok(());
        }
        if now >= a.deadline {
            tracing::info!(tref = %hex(&a.tref), "no answer before the deadline; cancelled");
            let effects =
                Effects::log("deadline: cancelled").text(&a.receiver, self.notice(a, "expired"));
            let step = match a.side {
                Side::Creditor => self.store.step(
                    &a.tref,
                    &[State::AwaitingAnswer],
                    State::Forwarding,
                    Operation::None,
                    |ag| {
                        ag.response = Some(Response::Reject);
                        ag.cause = Some("expired".into());
                    },
                    effects,
                    now,
                ),
                Side::Debtor => self.store.step(
                    &a.tref,
                    &[State::AwaitingAnswer],
                    State::Aborting,
                    Operation::None,
                    |ag| ag.cause = Some("expired".into()),
                    effects,
                    now,
                ),
            };
            step.map_err(|e| e.to_string())?;
            return Ok(());
        }
        let half = a.created_at + (a.deadline.saturating_sub(a.created_at)) / 2;
        if self.config.resend
            && !a.resent
            && now >= half
            && let Some(offer) = &a.offer
        {
            {
                self.store
                    .step(
                        &a.tref,
                        &[State::AwaitingAnswer],
                        State::AwaitingAnswer,
                        Operation::None,
                        |ag| ag.resent = true,
                        Effects::log("M3 sent again").data(&a.receiver, offer.clone()),
                        now,
                    )
                    .map_err(|e| e.to_string())?;
                tracing::info!(tref = %hex(&a.tref), "M3 sent again");
            }
        }
        Ok(())
    }

    /// The creditor's side tells the debtor's operator the answer (145).
    fn forward(&self, a: &Agent, now: u64) -> Result<(), String> {
        let response = a.response.unwrap_or(Response::Reject);
        let expired = a.cause.as_deref() == Some("expired");
        let (_, url) = self.peer_of(a)?;
        let path = format!("/v1/peer/transfers/{}/answer", hex(&a.tref));
        let body = Forwarded { response, expired };
        let sent: Result<serde_json::Value, ClientError> =
            self.call(a, || client::post_json(&url, &path, &body));
        if let Err(e) = sent
            && !matches!(&e, ClientError::Status(s) if s.status == 409)
        {
            return Err(e.to_string());
        }
        let (to, deadline) = match response {
            Response::Accept => (State::Accepted, a.deadline),
            Response::Reject if expired => (State::Expired, a.deadline),
            Response::Reject => (State::Rejected, a.deadline),
            Response::Postpone { .. } => (State::AwaitingAnswer, a.deadline),
        };
        self.store
            .step(
                &a.tref,
                &[State::Forwarding],
                to,
                Operation::None,
                |ag| {
                    ag.deadline = deadline;
                    if to == State::Rejected {
                        ag.cause = Some("rejected".into());
                    }
                },
                Effects::log(format!("answer {} forwarded", response.as_str())),
                now,
            )
            .map_err(|e| e.to_string())?;
        tracing::info!(tref = %hex(&a.tref), state = to.as_str(), "answer forwarded");
        Ok(())
    }

    fn hold(a: &Agent) -> Operation<'_> {
        match &a.goods {
            Goods::Money { amount, .. } => Operation::HoldMoney {
                msisdn: a.debtor_number(),
                amount: *amount,
            },
            Goods::Uses { ticket, uses } => Operation::HoldUses {
                id: ticket,
                owner: a.debtor_number(),
                uses: *uses,
            },
        }
    }

    fn release(a: &Agent) -> Operation<'_> {
        match &a.goods {
            Goods::Money { amount, .. } => Operation::ReleaseMoney {
                msisdn: a.debtor_number(),
                amount: *amount,
            },
            Goods::Uses { ticket, uses } => Operation::ReleaseUses {
                id: ticket,
                uses: *uses,
            },
        }
    }

    /// Coordinator, phase 1 at home: hold the debit.
    fn prepare_local(&self, a: &Agent, now: u64) -> Result<(), String> {
        let step = self
            .store
            .step(
                &a.tref,
                &[State::Accepted],
                State::Prepared,
                Self::hold(a),
                |_| {},
                Effects::log("prepared: debit held"),
                now,
            )
            .map_err(|e| e.to_string())?;
        if let Step::Refused(r) = step {
            tracing::info!(tref = %hex(&a.tref), reason = %r, "debit refused; aborting");
            self.store
                .step(
                    &a.tref,
                    &[State::Accepted],
                    State::Aborting,
                    Operation::None,
                    |ag| ag.cause = Some(r.to_string()),
                    Effects::log(format!("decision: abort ({r})")),
                    now,
                )
                .map_err(|e| e.to_string())?;
        }
        Ok(())
    }

    /// Coordinator, phase 1 at the peer, then the decision with the debit in one transaction.
    fn ask_vote(&self, a: &Agent, now: u64) -> Result<(), String> {
        let (_, url) = self.peer_of(a)?;
        let path = format!("/v1/peer/transfers/{}/prepare", hex(&a.tref));
        let body = Prepare {
            offer_hash: hex(&a.offer_hash.unwrap_or_default()),
        };
        let vote: Result<serde_json::Value, ClientError> =
            self.call(a, || client::post_json(&url, &path, &body));
        match vote {
            Ok(_) => {
                if self.config.fault == Some(Fault::StallAfterPrepare) {
                    tracing::warn!(tref = %hex(&a.tref), "fault stall-after-prepare: stopping before the decision");
                    loop {
                        std::thread::sleep(Duration::from_secs(3600));
                    }
                }
                let debit = match &a.goods {
                    Goods::Money { amount, .. } => Operation::DebitMoney {
                        msisdn: a.debtor_number(),
                        amount: *amount,
                        peer: &a.peer,
                    },
                    Goods::Uses { ticket, uses } => Operation::DebitUses {
                        id: ticket,
                        uses: *uses,
                    },
                };
                self.store
                    .step(
                        &a.tref,
                        &[State::Prepared],
                        State::Committing,
                        debit,
                        |_| {},
                        Effects::log("decision: commit"),
                        now,
                    )
                    .map_err(|e| e.to_string())?;
                tracing::info!(tref = %hex(&a.tref), "decision: commit");
                Ok(())
            }
            Err(ClientError::Status(e)) if (400..500).contains(&e.status) => {
                let why = format!("{} refused: {}", a.peer, e.detail);
                self.abort_prepared(a, &why, now)
            }
            Err(e) if now > a.deadline + GRACE => {
                self.abort_prepared(a, &format!("{} cannot be reached ({e})", a.peer), now)
            }
            Err(e) => Err(e.to_string()),
        }
    }

    fn abort_prepared(&self, a: &Agent, why: &str, now: u64) -> Result<(), String> {
        tracing::info!(tref = %hex(&a.tref), reason = %why, "decision: abort");
        self.store
            .step(
                &a.tref,
                &[State::Prepared],
                State::Aborting,
                Self::release(a),
                |ag| ag.cause = Some(why.to_string()),
                Effects::log(format!("decision: abort ({why})")),
                now,
            )
            .map(|_| ())
            .map_err(|e| e.to_string())
    }

    /// The "done" notice for this side's subscriber, with the balance after the transfer:
    /// `pending` is a credit the same step is about to make (a debit is in the balance
    /// already when the coordinator writes its notice).
    fn done_text(&self, a: &Agent, pending: u64) -> String {
        let other = if a.local_number() == a.sender {
            &a.receiver
        } else {
            &a.sender
        };
        let verb = if a.local_number() == a.debtor_number() {
            "sent to"
        } else {
            "received from"
        };
        let mut t = self.notice(a, &format!("done: {} {verb} {other}", a.goods.display()));
        if let Ok(Some(acc)) = self.store.account(a.local_number())
            && matches!(a.goods, Goods::Money { .. })
        {
            let left = Goods::Money {
                amount: acc.balance.saturating_add(pending),
                currency: acc.currency,
            };
            t.push_str(&format!("; balance {}", left.display()));
        }
        t
    }

    /// Coordinator, phase 2: tell the creditor until it acknowledges (160).
    fn send_commit(&self, a: &Agent, now: u64) -> Result<(), String> {
        let (_, url) = self.peer_of(a)?;
        let path = format!("/v1/peer/transfers/{}/commit", hex(&a.tref));
        let _: serde_json::Value = self
            .call(a, || client::post_json(&url, &path, &json!({})))
            .map_err(|e| e.to_string())?;
        let text = self.done_text(a, 0);
        self.store
            .step(
                &a.tref,
                &[State::Committing],
                State::Completed,
                Operation::None,
                |_| {},
                Effects::log("commit acknowledged").text(a.local_number(), text),
                now,
            )
            .map_err(|e| e.to_string())?;
        tracing::info!(tref = %hex(&a.tref), "completed");
        Ok(())
    }

    /// Coordinator: the abort reaches the peer, then the person is told.
    fn send_abort(&self, a: &Agent, now: u64) -> Result<(), String> {
        let cause = a.cause.clone().unwrap_or_else(|| "aborted".into());
        let end = match cause.as_str() {
            "rejected" => State::Rejected,
            "expired" => State::Expired,
            _ => State::Aborted,
        };
        let (_, url) = self.peer_of(a)?;
        let path = format!("/v1/peer/transfers/{}/abort", hex(&a.tref));
        let body = Abort {
            reason: cause.clone(),
            state: end.as_str().into(),
        };
        let sent: Result<serde_json::Value, ClientError> =
            self.call(a, || client::post_json(&url, &path, &body));
        match sent {
            Ok(_) => {}
            Err(ClientError::Status(e)) if e.status == 404 => {}
            Err(e) if now > a.deadline + 10 * GRACE => {
                tracing::warn!(tref = %hex(&a.tref), error = %e, "peer never acknowledged the abort; closing");
            }
            Err(e) => return Err(e.to_string()),
        }
        self.store
            .step(
                &a.tref,
                &[State::Aborting],
                end,
                Operation::None,
                |_| {},
                Effects::log("abort acknowledged").text(
                    a.local_number(),
                    self.notice(a, &format!("not done: {cause}")),
                ),
                now,
            )
            .map_err(|e| e.to_string())?;
        tracing::info!(tref = %hex(&a.tref), state = end.as_str(), "aborted");
        Ok(())
    }

    /// Creditor: a quiet coordinator is asked what it decided (presumed abort).
    fn ask_coordinator(&self, a: &Agent, now: u64) -> Result<(), String> {
        let (_, url) = self.peer_of(a)?;
        let path = format!("/v1/peer/transfers/{}", hex(&a.tref));
        let said: Result<serde_json::Value, ClientError> =
            self.call(a, || client::get_json(&url, &path));
        let state = match said {
            Ok(v) => v["state"].as_str().and_then(State::parse),
            Err(ClientError::Status(e)) if e.status == 404 => None,
            Err(e) => return Err(e.to_string()),
        };
        match state {
            Some(State::Committing | State::Completed) if a.state == State::Prepared => self
                .commit_credit(a, now)
                .map(|_| ())
                .map_err(|e| e.to_string()),
            Some(State::Accepted | State::Prepared | State::Committing | State::Completed) => {
                // Still deciding (or waiting for our vote): ask again later.
                self.store
                    .step(
                        &a.tref,
                        &[a.state],
                        a.state,
                        Operation::None,
                        |_| {},
                        Effects::default(),
                        now,
                    )
                    .map(|_| ())
                    .map_err(|e| e.to_string())
            }
            other => {
                let end = other.filter(|s| s.is_final()).unwrap_or(State::Aborted);
                self.abort_credit(a, "the coordinator has no commit", end, now)
                    .map(|_| ())
                    .map_err(|e| e.to_string())
            }
        }
    }

    fn commit_credit(&self, a: &Agent, now: u64) -> Result<Step, StoreError> {
        let new_ticket = match &a.goods {
            Goods::Uses { ticket, .. } => Some(format!("{ticket}/{}", &hex(&a.tref)[..8])),
            Goods::Money { .. } => None,
        };
        let op = match &a.goods {
            Goods::Money { amount, .. } => Operation::CreditMoney {
                msisdn: a.creditor_number(),
                amount: *amount,
                peer: &a.peer,
            },
            Goods::Uses { ticket, uses } => Operation::NewTicket {
                id: new_ticket.as_deref().unwrap_or_default(),
                owner: a.creditor_number(),
                from: ticket,
                uses: *uses,
            },
        };
        let credit = match &a.goods {
            Goods::Money { amount, .. } => *amount,
            Goods::Uses { .. } => 0,
        };
        let mut text = self.done_text(a, credit);
        if let Some(t) = &new_ticket {
            text.push_str(&format!(" (ticket {t})"));
        }
        self.store.step(
            &a.tref,
            &[State::Prepared],
            State::Completed,
            op,
            |ag| ag.new_ticket = new_ticket.clone(),
            Effects::log("committed: credit made").text(a.local_number(), text),
            now,
        )
    }

    fn abort_credit(&self, a: &Agent, why: &str, end: State, now: u64) -> Result<Step, StoreError> {
        let states = [
            State::Requested,
            State::AwaitingAnswer,
            State::Forwarding,
            State::Accepted,
            State::Prepared,
        ];
        let what = match end {
            State::Rejected => "rejected".to_string(),
            State::Expired => "expired".to_string(),
            _ => why.to_string(),
        };
        self.store.step(
            &a.tref,
            &states,
            end,
            Operation::None,
            |ag| ag.cause = Some(what.clone()),
            Effects::log(format!("aborted: {what}")).text(
                a.local_number(),
                self.notice(a, &format!("not done: {what}")),
            ),
            now,
        )
    }

    // =====================================================================================
    // Channel 121: what the peers ask
    // =====================================================================================

    /// Answers one request on channel 121.
    pub fn handle(&self, req: &Request) -> HttpResponse {
        match self.route(req) {
            Ok(r) => r,
            Err(e) => e.into(),
        }
    }

    fn route(&self, req: &Request) -> Result<HttpResponse, ApiError> {
        let seg = req.segments();
        match (req.method.as_str(), seg.as_slice()) {
            ("GET", ["v1", "health"]) => Ok(HttpResponse::ok(&json!({"name": self.config.name}))),
            ("POST", ["v1", "peer", "transfers"]) => self.peer_m2(req),
            ("GET", ["v1", "peer", "transfers", t]) => self.peer_status(req, t),
            ("POST", ["v1", "peer", "transfers", t, "answer"]) => self.peer_answer(req, t),
            ("POST", ["v1", "peer", "transfers", t, "prepare"]) => self.peer_prepare(req, t),
            ("POST", ["v1", "peer", "transfers", t, "commit"]) => self.peer_commit(req, t),
            ("POST", ["v1", "peer", "transfers", t, "abort"]) => self.peer_abort(req, t),
            (_, ["v1", ..]) => Err(ApiError::new(
                405,
                "method_not_allowed",
                format!("{} {} is not an endpoint", req.method, req.path),
            )),
            _ => Err(ApiError::not_found("not_found", format!("no {}", req.path))),
        }
    }

    /// The calling peer: a peer certificate, a name in the table, the pinned serial.
    fn calling_peer(&self, req: &Request) -> Result<PeerRow, ApiError> {
        let caller = req.require(&[Role::Peer])?;
        let peer = self.peer(&caller.name).ok_or_else(|| {
            ApiError::new(
                403,
                "unknown_peer",
                format!("{:?} is not in the peer table", caller.name),
            )
        })?;
        let pinned = crate::pki::x509::Certificate::from_der(&peer.certificate_der)
            .map(|c| c.serial_hex())
            .unwrap_or_default();
        if pinned != caller.serial_hex {
            return Err(ApiError::new(
                403,
                "peer_certificate_mismatch",
                format!(
                    "{:?} presented certificate {} but the peer table pins {pinned}",
                    caller.name, caller.serial_hex
                ),
            ));
        }
        Ok(peer)
    }

    /// The agent `t` shared with the calling peer.
    fn shared_agent(&self, req: &Request, t: &str) -> Result<(PeerRow, Agent), ApiError> {
        let peer = self.calling_peer(req)?;
        let tref = tref_of(t)?;
        let agent = self
            .store
            .agent(&tref)
            .map_err(store_error)?
            .filter(|a| a.peer == peer.name)
            .ok_or_else(|| ApiError::not_found("unknown_tref", format!("no transfer {t}")))?;
        Ok((peer, agent))
    }

    /// M2 (121 → 140): a new agent for this operator's subscriber; M3 to them.
    fn peer_m2(&self, req: &Request) -> Result<HttpResponse, ApiError> {
        let peer = self.calling_peer(req)?;
        let body: Request2 = req.json()?;
        let tref = tref_of(&body.tref)?;
        let bytes = crate::bytes::unhex(&body.offer)
            .ok_or_else(|| ApiError::bad_request("bad_offer", "the offer is not hex"))?;
        let offer = match Message::decode(&bytes) {
            Ok(Message::Offer(o)) if o.tref == tref => o,
            Ok(_) => {
                return Err(ApiError::bad_request(
                    "bad_offer",
                    "not an M3 for this T-REF",
                ));
            }
            Err(e) => return Err(ApiError::bad_request("bad_offer", e.to_string())),
        };
        if offer.operator != peer.name {
            return Err(ApiError::unprocessable(
                "wrong_operator",
                format!(
                    "the offer names {:?}, the caller is {:?}",
                    offer.operator, peer.name
                ),
            ));
        }
        if self.peer_for_number(&offer.sender).map(|p| p.name) != Some(peer.name.clone()) {
            return Err(ApiError::unprocessable(
                "not_your_subscriber",
                format!("{} is not in {:?}'s number ranges", offer.sender, peer.name),
            ));
        }
        match self
            .store
            .subscription(&offer.receiver)
            .map_err(store_error)?
        {
            Some(s) if s.active && s.services.contains(&offer.service) => {}
            _ => {
                return Err(ApiError::unprocessable(
                    "not_subscribed",
                    format!(
                        "{} does not subscribe to {} at {}",
                        offer.receiver,
                        offer.service.as_str(),
                        self.config.name
                    ),
                ));
            }
        }
        let now = self.now();
        if let Some(existing) = self.store.agent(&tref).map_err(store_error)? {
            if existing.peer == peer.name && existing.offer.as_deref() == Some(&bytes[..]) {
                return Ok(HttpResponse::ok(
                    &json!({"tref": body.tref, "state": existing.state}),
                ));
            }
            return Err(ApiError::conflict(
                "tref_taken",
                "this T-REF names another transfer",
            ));
        }
        let agent = Agent {
            tref,
            side: match offer.service {
                Service::Bill => Side::Debtor,
                _ => Side::Creditor,
            },
            origin: false,
            service: offer.service,
            sender: offer.sender.clone(),
            receiver: offer.receiver.clone(),
            peer: peer.name.clone(),
            message: offer.message.clone(),
            goods: offer.goods.clone(),
            offer: Some(bytes.clone()),
            offer_hash: Some(offer.hash()),
            answer_hash: None,
            response: None,
            state: State::AwaitingAnswer,
            cause: None,
            deadline: offer.deadline.min(now + 86_400),
            resent: false,
            tries: 0,
            new_ticket: None,
            created_at: now,
            updated_at: now,
        };
        self.store
            .add_agent(
                &agent,
                Effects::log("M2 taken; M3 sent").data(&offer.receiver, bytes),
            )
            .map_err(store_error)?;
        tracing::info!(tref = %body.tref, from = %offer.sender, to = %offer.receiver, peer = %peer.name, "offer sent to the subscriber");
        Ok(HttpResponse::json(
            201,
            &json!({"tref": body.tref, "state": State::AwaitingAnswer}),
        ))
    }

    /// What a peer may know of a shared transfer (the creditor's recovery question).
    fn peer_status(&self, req: &Request, t: &str) -> Result<HttpResponse, ApiError> {
        let (_, a) = self.shared_agent(req, t)?;
        Ok(HttpResponse::ok(&json!({"tref": t, "state": a.state})))
    }

    /// 145: the answer of the creditor's subscriber reaches the coordinator.
    fn peer_answer(&self, req: &Request, t: &str) -> Result<HttpResponse, ApiError> {
        let (_, a) = self.shared_agent(req, t)?;
        let body: Forwarded = req.json()?;
        if a.side != Side::Debtor || !a.origin {
            return Err(ApiError::conflict(
                "not_the_coordinator",
                "answers go to the debtor's operator",
            ));
        }
        let now = self.now();
        let step = match body.response {
            Response::Accept => self.store.step(
                &a.tref,
                &[State::AwaitingAnswer],
                State::Accepted,
                Operation::None,
                |_| {},
                Effects::log("answer: accept"),
                now,
            ),
            Response::Reject => {
                let (end, what) = if body.expired {
                    (State::Expired, "expired")
                } else {
                    (State::Rejected, "rejected")
                };
                self.store.step(
                    &a.tref,
                    &[State::AwaitingAnswer],
                    end,
                    Operation::None,
                    |ag| ag.cause = Some(what.into()),
                    Effects::log(format!("answer: {what}")).text(
                        &a.sender,
                        self.notice(&a, &format!("not done: {} {what}", a.receiver)),
                    ),
                    now,
                )
            }
            Response::Postpone { until } => {
                let until = until.clamp(now, now + 86_400);
                self.store.step(
                    &a.tref,
                    &[State::AwaitingAnswer],
                    State::AwaitingAnswer,
                    Operation::None,
                    |ag| ag.deadline = ag.deadline.max(until + self.config.answer_ttl),
                    Effects::log("answer: postpone").text(
                        &a.sender,
                        self.notice(
                            &a,
                            &format!(
                                "{} put it off until {}",
                                a.receiver,
                                crate::pki::der::iso8601(until)
                            ),
                        ),
                    ),
                    now,
                )
            }
        }
        .map_err(store_error)?;
        match step {
            Step::Done => Ok(HttpResponse::ok(&json!({"tref": t}))),
            _ => {
                let a = self.store.agent(&a.tref).map_err(store_error)?;
                let state = a.map(|a| a.state);
                // A repeated forward of the answer already taken is fine; anything else not.
                match (body.response, state) {
                    (Response::Accept, Some(s))
                        if !matches!(s, State::Rejected | State::Expired | State::Aborted) =>
                    {
                        Ok(HttpResponse::ok(&json!({"tref": t, "state": s})))
                    }
                    (Response::Reject, Some(State::Rejected | State::Expired)) => {
                        Ok(HttpResponse::ok(&json!({"tref": t})))
                    }
                    _ => Err(ApiError::conflict(
                        "not_waiting",
                        format!("transfer {t} is {:?}", state.map(State::as_str)),
                    )),
                }
            }
        }
    }

    /// PREPARE at the creditor: the offer the person accepted must be this one (Fig 3's
    /// hash); the account to credit must exist.
    fn peer_prepare(&self, req: &Request, t: &str) -> Result<HttpResponse, ApiError> {
        let (_, a) = self.shared_agent(req, t)?;
        let body: Prepare = req.json()?;
        if a.side != Side::Creditor {
            return Err(ApiError::conflict(
                "not_the_creditor",
                "PREPARE goes to the creditor",
            ));
        }
        if a.state == State::Prepared {
            return Ok(HttpResponse::ok(&json!({"tref": t, "vote": "prepared"})));
        }
        let now = self.now();
        let refuse = |why: String| -> Result<HttpResponse, ApiError> {
            let _ = self.abort_credit(&a, &why, State::Aborted, now);
            Err(ApiError::unprocessable("refused", why))
        };
        if !matches!(a.state, State::Accepted | State::AwaitingAnswer) {
            return Err(ApiError::conflict(
                "not_preparable",
                format!("transfer {t} is {}", a.state.as_str()),
            ));
        }
        let mut offer_hash = a.offer_hash.unwrap_or_default();
        if self.config.fault == Some(Fault::AlterBill) && a.service == Service::Bill {
            tracing::warn!(tref = %t, "fault alter-bill: the point of sale's bill changed");
            offer_hash[0] ^= 1;
        }
        if body.offer_hash != hex(&offer_hash) {
            return refuse("the accepted offer is not the bill of the point of sale".into());
        }
        if self.config.fault == Some(Fault::FailCredit) {
            return refuse("the credit operation failed (fault fail-credit)".into());
        }
        if let Goods::Money { currency, .. } = &a.goods {
            match self
                .store
                .account(a.creditor_number())
                .map_err(store_error)?
            {
                Some(acc) if &acc.currency == currency => {}
                Some(acc) => {
                    return refuse(format!(
                        "{}'s account is in {}, not {currency}",
                        a.creditor_number(),
                        acc.currency
                    ));
                }
                None => return refuse(format!("no account for {}", a.creditor_number())),
            }
        }
        match self
            .store
            .step(
                &a.tref,
                &[State::Accepted, State::AwaitingAnswer],
                State::Prepared,
                Operation::None,
                |_| {},
                Effects::log("prepared: credit reserved"),
                now,
            )
            .map_err(store_error)?
        {
            Step::Done => Ok(HttpResponse::ok(&json!({"tref": t, "vote": "prepared"}))),
            _ => Err(ApiError::conflict(
                "not_preparable",
                format!("transfer {t} moved"),
            )),
        }
    }

    /// COMMIT at the creditor (idempotent: a repeated commit is acknowledged again).
    fn peer_commit(&self, req: &Request, t: &str) -> Result<HttpResponse, ApiError> {
        let (_, a) = self.shared_agent(req, t)?;
        if a.side != Side::Creditor {
            return Err(ApiError::conflict(
                "not_the_creditor",
                "COMMIT goes to the creditor",
            ));
        }
        match a.state {
            State::Completed => {
                return Ok(HttpResponse::ok(&json!({"tref": t, "state": "completed"})));
            }
            State::Prepared => {}
            other => {
                return Err(ApiError::conflict(
                    "not_prepared",
                    format!("transfer {t} is {}", other.as_str()),
                ));
            }
        }
        match self.commit_credit(&a, self.now()).map_err(store_error)? {
            Step::Done => {
                tracing::info!(tref = %t, "committed");
                Ok(HttpResponse::ok(&json!({"tref": t, "state": "completed"})))
            }
            Step::Refused(r) => Err(ApiError::internal(format!(
                "the credit failed after prepare: {r}"
            ))),
            Step::Stale => Err(ApiError::conflict(
                "not_prepared",
                format!("transfer {t} moved"),
            )),
        }
    }

    /// ABORT at the creditor, or (from a creditor that gave up) at the origin.
    fn peer_abort(&self, req: &Request, t: &str) -> Result<HttpResponse, ApiError> {
        let (_, a) = self.shared_agent(req, t)?;
        let body: Abort = req.json()?;
        if a.state == State::Completed {
            return Err(ApiError::conflict(
                "completed",
                format!("transfer {t} is completed; it cannot be aborted"),
            ));
        }
        if a.state.is_final() {
            return Ok(HttpResponse::ok(&json!({"tref": t, "state": a.state})));
        }
        if a.side == Side::Debtor && matches!(a.state, State::Prepared | State::Committing) {
            return Err(ApiError::conflict(
                "coordinator_decides",
                "the debtor's operator decides this transfer",
            ));
        }
        let end = State::parse(&body.state)
            .filter(|s| matches!(s, State::Aborted | State::Rejected | State::Expired))
            .unwrap_or(State::Aborted);
        let reason: String = body
            .reason
            .chars()
            .filter(|c| !c.is_control())
            .take(120)
            .collect();
        self.abort_credit(&a, &reason, end, self.now())
            .map_err(store_error)?;
        tracing::info!(tref = %t, state = end.as_str(), "aborted by the peer");
        Ok(HttpResponse::ok(&json!({"tref": t, "state": end})))
    }
}
