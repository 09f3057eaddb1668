//! The virtual SMS network: one service centre between several virtual modems.
//!
//! Each modem (a phone with its own SIM and number, or an operator's service node) is
//! [attached](crate::modem::VirtualModem::attach) through a [`Port`]; a router thread takes
//! what the modems submit and hands each message to the modem it is for:
//!
//! * by TP-PID: a SUBMIT whose TP-PID is service-centre specific (0xC0..=0xFF; seed 003's
//!   service messages carry 0xC1) from a subscriber under a prefix a service node serves goes
//!   to that node (the longest prefix wins), whatever its destination;
//! * otherwise by number: to the modem whose number is the TP-DA.
//!
//! The DELIVER keeps TP-PID, TP-DCS and the user data (header included, so concatenated parts
//! reassemble at the other end); its originator is the sender's number, its SCTS now. A
//! destination nobody has is dropped with a permanent-error status report
//! ([`STATUS_UNKNOWN_DESTINATION`]) if the sender asked for one; a message lost on purpose
//! (`--drop`) with [`STATUS_LOST`]; a delivered one reports [`STATUS_DELIVERED`].
//!
//! Each part of a concatenated message is one message to the network: delays, losses and
//! counts apply per part. Events carry numbers, TP-PID, lengths and TP-MR, never bodies.

use crate::modem::{Network, NetworkDelivery, now_timestamp};
use simlab_sms::{Address, Deliver, Submit};
use std::collections::{HashMap, HashSet};
use std::fmt;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// TP-Status (TS 23.040 9.2.3.15) of a delivered message: "short message received by the SME".
pub const STATUS_DELIVERED: u8 = 0x00;
/// TP-Status of a message to a number no modem has: permanent error, "not obtainable".
pub const STATUS_UNKNOWN_DESTINATION: u8 = 0x43;
/// TP-Status of a message lost on purpose (`--drop`): permanent error, "validity period
/// expired" (the service centre gave up on it).
pub const STATUS_LOST: u8 = 0x46;

/// TP-PIDs a service centre may use as it likes (TS 23.040 9.2.3.9: "SC specific use").
pub const SC_SPECIFIC_PID: std::ops::RangeInclusive<u8> = 0xC0..=0xFF;

/// An operator's service node: a modem whose subscribers' service messages come to it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Node {
    /// The node's own number.
    pub number: String,
    /// Subscriber number prefixes it serves (`+49171`).
    pub prefixes: Vec<String>,
}

/// The network's shape and its misbehaviour on demand.
#[derive(Clone, Debug)]
pub struct Config {
    /// The service-centre address in front of every PDU handed to a modem.
    pub smsc: Address,
    /// The phones' numbers.
    pub phones: Vec<String>,
    /// The service nodes.
    pub nodes: Vec<Node>,
    /// Messages to this number arrive this much later.
    pub delays: HashMap<String, Duration>,
    /// The N-th messages (1-based) to this number are lost.
    pub drops: HashMap<String, Vec<u32>>,
}

/// Why a configuration cannot be used.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError(pub String);

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ConfigError {}

/// `number` in the one spelling the router keys by (`+<digits>` for international numbers).
pub fn normalize(number: &str) -> Result<String, ConfigError> {
    let a = Address::parse(number).map_err(|e| ConfigError(format!("{number:?}: {e}")))?;
    let s = a.to_string();
    if !s
        .trim_start_matches('+')
        .bytes()
        .all(|b| b.is_ascii_digit())
        || s.is_empty()
    {
        return Err(ConfigError(format!("{number:?} is not a phone number")));
    }
    Ok(s)
}

/// A subscriber prefix: `+` and 1 to 15 digits, or digits alone.
pub fn parse_prefix(prefix: &str) -> Result<String, ConfigError> {
    let digits = prefix.strip_prefix('+').unwrap_or(prefix);
    if digits.is_empty() || digits.len() > 15 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(ConfigError(format!(
            "bad prefix {prefix:?}: expected + and 1 to 15 digits, e.g. +49171"
        )));
    }
    Ok(prefix.to_string())
}

impl Config {
    /// Checks numbers are unique and well formed, prefixes are prefixes, and delays and losses
    /// name a modem of the network; normalizes every number.
    pub fn validate(mut self) -> Result<Config, ConfigError> {
        let mut seen = HashSet::new();
        for n in self
            .phones
            .iter_mut()
            .chain(self.nodes.iter_mut().map(|n| &mut n.number))
        {
            *n = normalize(n)?;
            if !seen.insert(n.clone()) {
                return Err(ConfigError(format!("duplicate number {n}")));
            }
        }
        for node in &mut self.nodes {
            if node.prefixes.is_empty() {
                return Err(ConfigError(format!(
                    "service node {} serves no prefix",
                    node.number
                )));
            }
            for p in &mut node.prefixes {
                *p = parse_prefix(p)?;
            }
        }
        let mut prefixes = HashSet::new();
        for p in self.nodes.iter().flat_map(|n| &n.prefixes) {
            if !prefixes.insert(p.clone()) {
                return Err(ConfigError(format!(
                    "prefix {p} is served by two service nodes"
                )));
            }
        }
        let known = |n: &str, what: &str| -> Result<String, ConfigError> {
            let n = normalize(n)?;
            if seen.contains(&n) {
                Ok(n)
            } else {
                Err(ConfigError(format!("{what} {n}: no modem has that number")))
            }
        };
        self.delays = self
            .delays
            .iter()
            .map(|(n, d)| Ok((known(n, "--delay")?, *d)))
            .collect::<Result<_, ConfigError>>()?;
        let mut drops = HashMap::new();
        for (n, list) in &self.drops {
            if list.contains(&0) {
                return Err(ConfigError(format!("--drop {n}: messages count from 1")));
            }
            drops
                .entry(known(n, "--drop")?)
                .or_insert_with(Vec::new)
                .extend(list);
        }
        self.drops = drops;
        Ok(self)
    }
}

/// What happened to a message (for logs: numbers, TP-PID, lengths and TP-MR, never bodies).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SmscEvent {
    /// A modem submitted a message.
    Submitted {
        from: String,
        to: String,
        mr: u8,
        pid: u8,
        length: usize,
    },
    /// A service message went to a service node by TP-PID.
    Routed {
        from: String,
        to: String,
        node: String,
        pid: u8,
    },
    /// A message reached its modem.
    Delivered {
        from: String,
        to: String,
        mr: u8,
        pid: u8,
        length: usize,
    },
    /// A message was lost on purpose (`--drop`): the `nth` to `to`.
    Dropped {
        from: String,
        to: String,
        mr: u8,
        nth: u32,
    },
    /// A message to a number no modem has.
    Unknown { from: String, to: String, mr: u8 },
    /// A status report went back to the sender.
    Reported { to: String, mr: u8, status: u8 },
    /// Something the network could not encode (should not happen with valid SUBMITs).
    Warning(String),
}

type Scheduled = (Instant, u64, String, NetworkDelivery, SmscEvent);

/// The routing decisions, without threads or clocks: submit at `now`, collect what is due.
pub struct Router {
    config: Config,
    /// Messages to each number so far (for `--drop`).
    counts: HashMap<String, u32>,
    /// Scheduled: (when, sequence for a stable order, to whom, what, the event it makes).
    queue: Vec<Scheduled>,
    sequence: u64,
}

impl Router {
    /// A router for a [validated](Config::validate) configuration.
    pub fn new(config: Config) -> Router {
        Router {
            config,
            counts: HashMap::new(),
            queue: Vec::new(),
            sequence: 0,
        }
    }

    fn is_node(&self, number: &str) -> bool {
        self.config.nodes.iter().any(|n| n.number == number)
    }

    fn known(&self, number: &str) -> bool {
        self.config.phones.iter().any(|p| p == number) || self.is_node(number)
    }

    /// The service node for a subscriber's service message: longest prefix first.
    fn node_for(&self, sender: &str) -> Option<&str> {
        self.config
            .nodes
            .iter()
            .flat_map(|n| n.prefixes.iter().map(move |p| (p, n)))
            .filter(|(p, _)| sender.starts_with(p.as_str()))
            .max_by_key(|(p, _)| p.len())
            .map(|(_, n)| n.number.as_str())
    }

    /// Where a SUBMIT from `from` goes: the number of a modem, or `None` (nobody has it).
    pub fn destination(&self, from: &str, submit: &Submit) -> Option<String> {
        if SC_SPECIFIC_PID.contains(&submit.protocol_identifier)
            && !self.is_node(from)
            && let Some(node) = self.node_for(from)
        {
            return Some(node.to_string());
        }
        let to = submit.destination.to_string();
        self.known(&to).then_some(to)
    }

    fn schedule(&mut self, at: Instant, to: String, what: NetworkDelivery, event: SmscEvent) {
        self.sequence += 1;
        self.queue.push((at, self.sequence, to, what, event));
    }

    fn report(
        &mut self,
        at: Instant,
        from: &str,
        mr: u8,
        submit: &Submit,
        status: u8,
        events: &mut dyn FnMut(SmscEvent),
    ) {
        if !submit.status_report_request {
            return;
        }
        let report = crate::modem::report_now(submit, mr, status);
        match report.encode(Some(&self.config.smsc)) {
            Ok(p) => self.schedule(
                at,
                from.to_string(),
                NetworkDelivery::Report {
                    pdu: p.as_bytes().to_vec(),
                    mr,
                },
                SmscEvent::Reported {
                    to: from.to_string(),
                    mr,
                    status,
                },
            ),
            Err(e) => events(SmscEvent::Warning(format!(
                "status report for mr {mr}: {e}"
            ))),
        }
    }

    /// A SUBMIT (TP-MR `mr`) from the modem with number `from`, at `now`.
    pub fn submit(
        &mut self,
        from: &str,
        mr: u8,
        submit: &Submit,
        now: Instant,
        events: &mut dyn FnMut(SmscEvent),
    ) {
        let to = submit.destination.to_string();
        let pid = submit.protocol_identifier;
        let length = submit.user_data.payload.len();
        events(SmscEvent::Submitted {
            from: from.to_string(),
            to: to.clone(),
            mr,
            pid,
            length,
        });
        let Some(dest) = self.destination(from, submit) else {
            events(SmscEvent::Unknown {
                from: from.to_string(),
                to,
                mr,
            });
            self.report(now, from, mr, submit, STATUS_UNKNOWN_DESTINATION, events);
            return;
        };
        if dest != to {
            events(SmscEvent::Routed {
                from: from.to_string(),
                to,
                node: dest.clone(),
                pid,
            });
        }
        let nth = {
            let c = self.counts.entry(dest.clone()).or_insert(0);
            *c += 1;
            *c
        };
        let at = now + self.config.delays.get(&dest).copied().unwrap_or_default();
        if self
            .config
            .drops
            .get(&dest)
            .is_some_and(|l| l.contains(&nth))
        {
            events(SmscEvent::Dropped {
                from: from.to_string(),
                to: dest,
                mr,
                nth,
            });
            self.report(at, from, mr, submit, STATUS_LOST, events);
            return;
        }
        let originator = match Address::parse(from) {
            Ok(a) => a,
            Err(e) => {
                events(SmscEvent::Warning(format!("sender {from}: {e}")));
                return;
            }
        };
        let mut d = Deliver::new(originator, now_timestamp(), submit.user_data.clone());
        d.dcs = submit.dcs;
        d.protocol_identifier = pid;
        d.status_report_indication = submit.status_report_request;
        match d.encode(Some(&self.config.smsc)) {
            Ok(p) => {
                self.schedule(
                    at,
                    dest.clone(),
                    NetworkDelivery::Deliver {
                        pdu: p.as_bytes().to_vec(),
                        from: from.to_string(),
                    },
                    SmscEvent::Delivered {
                        from: from.to_string(),
                        to: dest,
                        mr,
                        pid,
                        length,
                    },
                );
                self.report(at, from, mr, submit, STATUS_DELIVERED, events);
            }
            Err(e) => events(SmscEvent::Warning(format!("DELIVER for mr {mr}: {e}"))),
        }
    }

    /// What is due at `now`, oldest first, with the number of the modem it is for; reports
    /// each as [`SmscEvent::Delivered`] or [`SmscEvent::Reported`].
    pub fn due(
        &mut self,
        now: Instant,
        events: &mut dyn FnMut(SmscEvent),
    ) -> Vec<(String, NetworkDelivery)> {
        let mut due: Vec<_> = Vec::new();
        let mut later = Vec::new();
        for item in std::mem::take(&mut self.queue) {
            if item.0 <= now {
                due.push(item);
            } else {
                later.push(item);
            }
        }
        self.queue = later;
        due.sort_by_key(|(at, seq, ..)| (*at, *seq));
        due.into_iter()
            .map(|(_, _, to, d, event)| {
                events(event);
                (to, d)
            })
            .collect()
    }

    /// When the next scheduled delivery is due.
    pub fn next_due(&self) -> Option<Instant> {
        self.queue.iter().map(|(at, ..)| *at).min()
    }
}

enum Command {
    Attach {
        number: String,
        tx: Sender<NetworkDelivery>,
    },
    Submit {
        from: String,
        mr: u8,
        submit: Box<Submit>,
    },
    Stop,
}

/// The network running on a thread of its own. Dropping it stops the thread.
pub struct Smsc {
    tx: Sender<Command>,
    numbers: HashSet<String>,
    thread: Option<JoinHandle<()>>,
}

impl Smsc {
    /// Validates `config` and starts the router; `events` is called on the router's thread.
    pub fn start(
        config: Config,
        mut events: Box<dyn FnMut(SmscEvent) + Send>,
    ) -> Result<Smsc, ConfigError> {
        let config = config.validate()?;
        let numbers = config
            .phones
            .iter()
            .chain(config.nodes.iter().map(|n| &n.number))
            .cloned()
            .collect();
        let (tx, rx) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("smsc".into())
            .spawn(move || run(Router::new(config), rx, &mut *events))
            .map_err(|e| ConfigError(format!("starting the router thread: {e}")))?;
        Ok(Smsc {
            tx,
            numbers,
            thread: Some(thread),
        })
    }

    /// The port for the modem with `number` (one of the configuration's), to
    /// [attach](crate::modem::VirtualModem::attach) to it.
    pub fn port(&self, number: &str) -> Result<Port, ConfigError> {
        let number = normalize(number)?;
        if !self.numbers.contains(&number) {
            return Err(ConfigError(format!("{number} is not in the network")));
        }
        let (tx, rx) = mpsc::channel();
        let _ = self.tx.send(Command::Attach {
            number: number.clone(),
            tx,
        });
        Ok(Port {
            number,
            tx: self.tx.clone(),
            rx,
        })
    }
}

impl Drop for Smsc {
    fn drop(&mut self) {
        let _ = self.tx.send(Command::Stop);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn run(mut router: Router, rx: Receiver<Command>, events: &mut dyn FnMut(SmscEvent)) {
    let mut modems: HashMap<String, Sender<NetworkDelivery>> = HashMap::new();
    loop {
        let wait = router
            .next_due()
            .map(|at| at.saturating_duration_since(Instant::now()))
            .unwrap_or(Duration::from_secs(1));
        match rx.recv_timeout(wait) {
            Ok(Command::Attach { number, tx }) => {
                modems.insert(number, tx);
            }
            Ok(Command::Submit { from, mr, submit }) => {
                router.submit(&from, mr, &submit, Instant::now(), events);
            }
            Ok(Command::Stop) | Err(RecvTimeoutError::Disconnected) => return,
            Err(RecvTimeoutError::Timeout) => {}
        }
        for (to, d) in router.due(Instant::now(), events) {
            match modems.get(&to) {
                Some(tx) => {
                    let _ = tx.send(d);
                }
                None => events(SmscEvent::Warning(format!(
                    "{to} is not attached: a delivery was lost"
                ))),
            }
        }
    }
}

/// One modem's connection to the network.
pub struct Port {
    number: String,
    tx: Sender<Command>,
    rx: Receiver<NetworkDelivery>,
}

impl Port {
    /// The modem's number.
    pub fn number(&self) -> &str {
        &self.number
    }
}

impl Network for Port {
    fn submitted(&mut self, mr: u8, submit: &Submit) {
        let _ = self.tx.send(Command::Submit {
            from: self.number.clone(),
            mr,
            submit: Box::new(submit.clone()),
        });
    }

    fn poll(&mut self) -> Vec<NetworkDelivery> {
        self.rx.try_iter().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use simlab_sms::{Pdu, UserData, decode};

    const A: &str = "+491711000001";
    const B: &str = "+491712000002";
    const C: &str = "+4930555";
    const NODE: &str = "+491710000000";
    const NODE2: &str = "+491719000000";

    fn config() -> Config {
        Config {
            smsc: Address::parse(crate::modem::DEFAULT_SMSC).unwrap(),
            phones: vec![A.into(), B.into(), C.into()],
            nodes: vec![
                Node {
                    number: NODE.into(),
                    prefixes: vec!["+49171".into()],
                },
                Node {
                    number: NODE2.into(),
                    prefixes: vec!["+491712".into()],
                },
            ],
            delays: HashMap::new(),
            drops: HashMap::new(),
        }
    }

    fn router(c: Config) -> Router {
        Router::new(c.validate().unwrap())
    }

    fn submit(to: &str, pid: u8, srr: bool) -> Submit {
        let mut s = Submit::new(
            Address::parse(to).unwrap(),
            UserData::from_text("secret 1234"),
        );
        s.protocol_identifier = pid;
        s.status_report_request = srr;
        s
    }

    fn deliver_of(d: &NetworkDelivery) -> Deliver {
        let NetworkDelivery::Deliver { pdu, .. } = d else {
            panic!("not a DELIVER: {d:?}");
        };
        match decode(pdu, true).unwrap().pdu {
            Pdu::Deliver(d) => d,
            other => panic!("{other:?}"),
        }
    }

    fn status_of(d: &NetworkDelivery) -> (u8, u8) {
        let NetworkDelivery::Report { pdu, mr } = d else {
            panic!("not a report: {d:?}");
        };
        match decode(pdu, true).unwrap().pdu {
            Pdu::StatusReport(r) => {
                assert_eq!(r.message_reference, *mr);
                (*mr, r.status.octet())
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn by_number_with_the_sender_as_originator_and_a_delivered_report() {
        let mut r = router(config());
        let now = Instant::now();
        let mut events = Vec::new();
        r.submit(A, 7, &submit(B, 0, true), now, &mut |e| events.push(e));
        assert_eq!(events.len(), 1, "delivered only when due: {events:?}");
        let due = r.due(now, &mut |e| events.push(e));
        assert_eq!(due.len(), 2);
        assert_eq!(due[0].0, B);
        let d = deliver_of(&due[0].1);
        assert_eq!(d.originator.to_string(), A);
        assert_eq!(d.text().as_deref(), Some("secret 1234"));
        assert_eq!(due[1].0, A);
        assert_eq!(status_of(&due[1].1), (7, STATUS_DELIVERED));
        assert!(matches!(events[1], SmscEvent::Delivered { mr: 7, .. }));
        assert!(matches!(
            events[2],
            SmscEvent::Reported {
                mr: 7,
                status: STATUS_DELIVERED,
                ..
            }
        ));
        // No event carries the body.
        assert!(!format!("{events:?}").contains("secret"));
    }

    #[test]
    fn service_messages_go_to_the_node_of_the_longest_prefix() {
        let mut r = router(config());
        let now = Instant::now();
        // A is under +49171 only; B under +49171 and +491712: the longer one wins.
        r.submit(A, 1, &submit(C, 0xC1, false), now, &mut |_| {});
        r.submit(B, 2, &submit("+4912345", 0xC1, false), now, &mut |_| {});
        let due = r.due(now, &mut |_| {});
        assert_eq!(due[0].0, NODE);
        assert_eq!(deliver_of(&due[0].1).protocol_identifier, 0xC1);
        assert_eq!(due[1].0, NODE2);
        // An ordinary PID goes by number; a sender under no prefix (C) by number too.
        r.submit(A, 3, &submit(C, 0, false), now, &mut |_| {});
        r.submit(C, 4, &submit(A, 0xC1, false), now, &mut |_| {});
        let due = r.due(now, &mut |_| {});
        assert_eq!((due[0].0.as_str(), due[1].0.as_str()), (C, A));
        // The node's own service messages go by number, not back to itself.
        r.submit(NODE, 5, &submit(A, 0xC1, false), now, &mut |_| {});
        assert_eq!(r.due(now, &mut |_| {})[0].0, A);
    }

    #[test]
    fn unknown_numbers_are_dropped_with_a_permanent_error() {
        let mut r = router(config());
        let now = Instant::now();
        let mut events = Vec::new();
        r.submit(A, 9, &submit("+15550000", 0, true), now, &mut |e| {
            events.push(e)
        });
        let due = r.due(now, &mut |_| {});
        assert_eq!(due.len(), 1);
        assert_eq!(due[0].0, A);
        assert_eq!(status_of(&due[0].1), (9, STATUS_UNKNOWN_DESTINATION));
        assert!(
            events
                .iter()
                .any(|e| matches!(e, SmscEvent::Unknown { .. }))
        );
        // Without SRR: nothing at all.
        r.submit(A, 10, &submit("+15550000", 0, false), now, &mut |_| {});
        assert!(r.due(now, &mut |_| {}).is_empty());
    }

    #[test]
    fn drops_lose_the_nth_message_with_a_failed_report() {
        let mut c = config();
        c.drops.insert(B.into(), vec![1, 3]);
        let mut r = router(c);
        let now = Instant::now();
        for mr in 0..4 {
            r.submit(A, mr, &submit(B, 0, true), now, &mut |_| {});
        }
        let due = r.due(now, &mut |_| {});
        let to_b: Vec<_> = due.iter().filter(|(n, _)| n == B).collect();
        assert_eq!(to_b.len(), 2);
        let reports: Vec<_> = due
            .iter()
            .filter(|(n, _)| n == A)
            .map(|(_, d)| status_of(d))
            .collect();
        assert_eq!(
            reports,
            [
                (0, STATUS_LOST),
                (1, STATUS_DELIVERED),
                (2, STATUS_LOST),
                (3, STATUS_DELIVERED)
            ]
        );
    }

    #[test]
    fn delays_hold_one_destination_and_not_the_others() {
        let mut c = config();
        c.delays.insert(B.into(), Duration::from_millis(500));
        let mut r = router(c);
        let now = Instant::now();
        r.submit(A, 1, &submit(B, 0, false), now, &mut |_| {});
        r.submit(A, 2, &submit(C, 0, false), now, &mut |_| {});
        let due = r.due(now, &mut |_| {});
        assert_eq!(due.len(), 1);
        assert_eq!(due[0].0, C);
        assert_eq!(r.next_due(), Some(now + Duration::from_millis(500)));
        assert!(
            r.due(now + Duration::from_millis(499), &mut |_| {})
                .is_empty()
        );
        let due = r.due(now + Duration::from_millis(500), &mut |_| {});
        assert_eq!(due.len(), 1);
        assert_eq!(due[0].0, B);
    }

    #[test]
    fn bad_configurations_are_refused() {
        let mut c = config();
        c.phones.push("+491711000001".into());
        assert!(
            c.validate()
                .unwrap_err()
                .0
                .contains("duplicate number +491711000001")
        );
        let mut c = config();
        c.nodes[0].prefixes = vec!["+49x".into()];
        assert!(c.validate().unwrap_err().0.contains("bad prefix"));
        let mut c = config();
        c.delays.insert("+4999".into(), Duration::ZERO);
        assert!(c.validate().unwrap_err().0.contains("no modem"));
        let mut c = config();
        c.drops.insert(A.into(), vec![0]);
        assert!(c.validate().is_err());
    }

    #[test]
    fn the_thread_routes_between_ports() {
        let (etx, erx) = mpsc::channel();
        let smsc = Smsc::start(
            config(),
            Box::new(move |e| {
                let _ = etx.send(e);
            }),
        )
        .unwrap();
        let mut a = smsc.port(A).unwrap();
        let mut b = smsc.port(B).unwrap();
        assert!(smsc.port("+4999").is_err());
        a.submitted(3, &submit(B, 0, false));
        let deadline = Instant::now() + Duration::from_secs(5);
        let got = loop {
            let got = b.poll();
            if !got.is_empty() || Instant::now() > deadline {
                break got;
            }
            std::thread::sleep(Duration::from_millis(5));
        };
        assert_eq!(got.len(), 1);
        assert_eq!(deliver_of(&got[0]).originator.to_string(), A);
        assert!(a.poll().is_empty());
        drop(smsc);
        assert!(
            erx.try_iter()
                .any(|e| matches!(e, SmscEvent::Delivered { .. }))
        );
    }
}
