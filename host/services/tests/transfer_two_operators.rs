//! Seed 003 with both operators in one process on real mutual TLS over loopback: M1 into
//! OP1's service node, M2 on channel 121, the M3 OP2 queues for its subscriber, the M4 back,
//! the answer forwarded (145), and the two-phase commit — then the ledgers. The SMS legs are
//! the store's outbox (what the SMS loop would send); the processes, the virtual SMS network
//! and the phones' CLI are the hardware-in-the-loop tests' business.

use simlab_modem::backend::{BackendError, Incoming, Receipt, SendOptions, SmsBackend};
use simlab_services::bytes::hex;
use simlab_services::http::Role;
use simlab_services::http::client::{self, ClientError, Url};
use simlab_services::http::server::{Background, Limits};
use simlab_services::http::tls::{ClientTls, Identity, ServerTls};
use simlab_services::pki::gateway::ca::Ca;
use simlab_services::transfer::messages::{
    Answer, Auth, Goods, Message, Order, Response, SERVICE_PID, Service,
};
use simlab_services::transfer::service::{Config, Operator};
use simlab_services::transfer::store::{PeerRow, State, Store, Subscription};
use simlab_sms::Address;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

/// Nothing leaves: the test reads the outbox instead.
struct Quiet;

impl SmsBackend for Quiet {
    fn send(&mut self, _: &Address, _: &str, _: &SendOptions) -> Result<Receipt, BackendError> {
        unreachable!("the test never flushes the outbox")
    }
    fn send_data(
        &mut self,
        _: &Address,
        _: &[u8],
        _: &SendOptions,
    ) -> Result<Receipt, BackendError> {
        unreachable!("the test never flushes the outbox")
    }
    fn incoming(&mut self) -> Result<Vec<Incoming>, BackendError> {
        Ok(Vec::new())
    }
    fn describe(&self) -> String {
        "quiet".into()
    }
}

const A: &str = "+491710000001";
const B: &str = "+491720000002";

struct Net {
    op1: Arc<Operator>,
    op2: Arc<Operator>,
    /// The interconnect CA the operators' peer certificates come from.
    ca: Ca,
    servers: Vec<Background>,
}

fn start(name: &str) -> std::path::PathBuf {
    let p = std::env::temp_dir().join(format!("simlab-{name}-{}.sqlite", std::process::id()));
    let _ = std::fs::remove_file(&p);
    p
}

/// How a network differs from the plain one.
#[derive(Default)]
struct Options {
    /// OP2 serves a certificate from another CA (same name, wrong issuer).
    foreign_op2: bool,
    /// OP1 reaches "OP2" at this URL instead (a peer that never answers).
    op2_url: Option<String>,
    /// Seconds added to both operators' clocks (the deadline sweeps).
    clock: Option<Arc<AtomicU64>>,
}

fn network(test: &str) -> Net {
    network_with(test, Options::default())
}

fn network_with(test: &str, opts: Options) -> Net {
    let ca = Ca::ephemeral("interconnect").unwrap();
    let foreign = Ca::ephemeral("somebody else").unwrap();
    let ids: Vec<Identity> = ["OP1", "OP2"]
        .iter()
        .map(|n| {
            let issuer = if *n == "OP2" && opts.foreign_op2 {
                &foreign
            } else {
                &ca
            };
            let t = issuer.issue_tls(Role::Peer, n, &[], 3600).unwrap();
            Identity::from_der(
                t.certificate_der.clone(),
                t.key_pkcs8_der.to_vec(),
                vec![issuer.certificate().der.clone()],
            )
        })
        .collect();
    let cells: Vec<Arc<OnceLock<Arc<Operator>>>> =
        vec![Arc::new(OnceLock::new()), Arc::new(OnceLock::new())];
    let mut servers = Vec::new();
    for (i, id) in ids.iter().enumerate() {
        let cell = cells[i].clone();
        let handler = Arc::new(move |req: &simlab_services::http::Request| {
            cell.get()
                .expect("operator set before any peer call")
                .handle(req)
        });
        let tls = ServerTls::new(id, &id.ca).unwrap();
        servers.push(
            Background::start("127.0.0.1:0", handler, Limits::default(), Some(tls), "op").unwrap(),
        );
    }
    let stores: Vec<Store> = (0..2)
        .map(|i| Store::open_path(&start(&format!("{test}-op{}", i + 1))).unwrap())
        .collect();
    for (i, other) in [(0usize, 1usize), (1, 0)] {
        stores[i]
            .put_peer(
                &PeerRow {
                    name: format!("OP{}", other + 1),
                    url: match (&opts.op2_url, other) {
                        (Some(url), 1) => url.clone(),
                        _ => servers[other].url(),
                    },
                    country_code: "49".into(),
                    prefixes: vec![format!("17{}", other + 1)],
                    certificate_der: ids[other].chain[0].as_ref().to_vec(),
                },
                false,
            )
            .unwrap();
    }
    let pin = |p: &str| Some(simlab_services::sign::password_verifier(p).unwrap());
    let all = vec![Service::Pay, Service::Ticket, Service::Bill];
    stores[0]
        .put_subscription(&Subscription::new(A, all.clone(), pin("1357"), None), false)
        .unwrap();
    stores[1]
        .put_subscription(&Subscription::new(B, all, pin("2468"), None), false)
        .unwrap();
    stores[0].fund(A, 1000, "EUR").unwrap();
    stores[1].fund(B, 0, "EUR").unwrap();
    let mut ops = Vec::new();
    for (i, store) in stores.into_iter().enumerate() {
        let config = Config {
            name: format!("OP{}", i + 1),
            client_tls: ClientTls {
                anchors: ids[i].ca.clone(),
                identity: Some(ids[i].clone()),
            },
            answer_ttl: 600,
            resend: false,
            pin_in_sms: true,
            peer_timeout: Duration::from_secs(1),
            fault: None,
        };
        let mut op = Operator::new(config, store, Box::new(Quiet)).unwrap();
        if let Some(offset) = &opts.clock {
            let offset = offset.clone();
            op = op.with_clock(Box::new(move || {
                simlab_services::pki::now() + offset.load(Ordering::Relaxed)
            }));
        }
        let op = Arc::new(op);
        cells[i].set(op.clone()).ok().unwrap();
        ops.push(op);
    }
    let op2 = ops.pop().unwrap();
    let op1 = ops.pop().unwrap();
    Net {
        op1,
        op2,
        ca,
        servers,
    }
}

fn service_sms(from: &str, body: Vec<u8>) -> Incoming {
    Incoming {
        from: from.into(),
        text: None,
        data: Some(body),
        protocol_identifier: SERVICE_PID,
    }
}

fn order(amount: u64) -> Vec<u8> {
    Order {
        service: Service::Pay,
        sender: A.into(),
        receiver: B.into(),
        message: "rent".into(),
        goods: Goods::Money {
            amount,
            currency: "EUR".into(),
        },
        issued_at: simlab_services::pki::now(),
        auth: Auth::Pin("1357".into()),
    }
    .encode()
}

fn drive(net: &Net, rounds: usize) {
    for _ in 0..rounds {
        net.op1.drive().unwrap();
        net.op2.drive().unwrap();
    }
}

/// B's newest offer in OP2's outbox.
fn last_offer(net: &Net) -> simlab_services::transfer::messages::Offer {
    let out = net.op2.store().outbox_to(B).unwrap();
    let data = out
        .iter()
        .rev()
        .find_map(|o| o.data.clone())
        .expect("an M3 for B");
    match Message::decode(&data).unwrap() {
        Message::Offer(o) => o,
        other => panic!("{other:?}"),
    }
}

fn answer(offer: &simlab_services::transfer::messages::Offer, response: Response) -> Vec<u8> {
    Answer {
        tref: offer.tref,
        response,
        from: B.into(),
        offer_hash: offer.hash(),
        issued_at: simlab_services::pki::now(),
        auth: Auth::Pin("2468".into()),
    }
    .encode()
}

fn balance(op: &Operator, n: &str) -> u64 {
    op.store().account(n).unwrap().unwrap().balance
}

#[test]
fn an_accepted_transfer_moves_once_and_an_unfunded_one_not_at_all() {
    let net = network("accept");
    net.op1.handle_sms(&service_sms(A, order(250)));
    drive(&net, 2);
    let offer = last_offer(&net);
    assert_eq!(
        offer.goods,
        Goods::Money {
            amount: 250,
            currency: "EUR".into()
        }
    );
    let m4 = answer(&offer, Response::Accept);
    net.op2.handle_sms(&service_sms(B, m4.clone()));
    // The same M4 twice (test 10): one transfer.
    net.op2.handle_sms(&service_sms(B, m4));
    drive(&net, 6);
    for op in [&net.op1, &net.op2] {
        let a = op.store().agent(&offer.tref).unwrap().unwrap();
        assert_eq!(a.state, State::Completed, "{}: {:?}", op.name(), a.cause);
    }
    assert_eq!((balance(&net.op1, A), balance(&net.op2, B)), (750, 250));
    let (l1, l2) = (
        net.op1.store().ledger().unwrap(),
        net.op2.store().ledger().unwrap(),
    );
    assert!(l1.balanced() && l2.balanced(), "{l1:?} {l2:?}");
    assert_eq!((l1.payable, l2.receivable), (250, 250));
    // Both people are told.
    let told = |op: &Operator, n: &str| {
        op.store()
            .outbox_to(n)
            .unwrap()
            .iter()
            .filter_map(|o| o.text.clone())
            .filter(|t| t.contains("done:"))
            .count()
    };
    assert_eq!((told(&net.op1, A), told(&net.op2, B)), (1, 1));
    // Each with the balance after the transfer (B's credit and the notice are one step).
    let done = |op: &Operator, n: &str| texts(op, n).into_iter().find(|t| t.contains("done:"));
    assert!(done(&net.op1, A).unwrap().ends_with("; balance 7.50 EUR"));
    assert!(done(&net.op2, B).unwrap().ends_with("; balance 2.50 EUR"));

    // 900 with 750 left (test 6): accepted, but the debit cannot be held — nothing moves.
    net.op1.handle_sms(&service_sms(A, order(900)));
    drive(&net, 2);
    let offer = last_offer(&net);
    net.op2
        .handle_sms(&service_sms(B, answer(&offer, Response::Accept)));
    drive(&net, 6);
    let a1 = net.op1.store().agent(&offer.tref).unwrap().unwrap();
    let a2 = net.op2.store().agent(&offer.tref).unwrap().unwrap();
    assert_eq!(
        (a1.state, a2.state),
        (State::Aborted, State::Aborted),
        "{:?}",
        a1.cause
    );
    assert_eq!((balance(&net.op1, A), balance(&net.op2, B)), (750, 250));
    assert_eq!(net.op1.store().account(A).unwrap().unwrap().held, 0);
}

#[test]
fn a_rejection_or_a_third_number_moves_nothing() {
    let net = network("reject");
    net.op1.handle_sms(&service_sms(A, order(100)));
    drive(&net, 2);
    let offer = last_offer(&net);
    // The right T-REF from another number (test 7): ignored.
    net.op2.handle_sms(&service_sms(
        "+491720000099",
        answer(&offer, Response::Accept),
    ));
    drive(&net, 2);
    assert_eq!(
        net.op2.store().agent(&offer.tref).unwrap().unwrap().state,
        State::AwaitingAnswer
    );
    net.op2
        .handle_sms(&service_sms(B, answer(&offer, Response::Reject)));
    drive(&net, 4);
    assert_eq!(
        net.op1.store().agent(&offer.tref).unwrap().unwrap().state,
        State::Rejected
    );
    assert_eq!(
        net.op2.store().agent(&offer.tref).unwrap().unwrap().state,
        State::Rejected
    );
    assert_eq!((balance(&net.op1, A), balance(&net.op2, B)), (1000, 0));
}

/// The texts OP `op` owes `n` (its outbox).
fn texts(op: &Operator, n: &str) -> Vec<String> {
    op.store()
        .outbox_to(n)
        .unwrap()
        .iter()
        .filter_map(|o| o.text.clone())
        .collect()
}

fn no_agents(op: &Operator) {
    assert_eq!(
        op.store().agents(&[], 100).unwrap(),
        vec![],
        "{}",
        op.name()
    );
}

#[test]
fn truncated_garbage_and_overflowing_service_messages_get_a_refusal_and_leave_nothing() {
    let net = network("garbage");
    let whole = order(250);
    let mut too_much = order(250);
    // The amount field (8 bytes after the "money" tag): past 2^53.
    let at = too_much.windows(5).position(|w| w == b"money").unwrap() + 5 + 2;
    too_much[at..at + 8].copy_from_slice(&(1u64 << 60).to_be_bytes());
    for body in [
        whole[..whole.len() / 2].to_vec(),
        vec![0xff; 40],
        Vec::new(),
        too_much,
    ] {
        net.op1.handle_sms(&service_sms(A, body));
    }
    let t = texts(&net.op1, A);
    assert_eq!(t.len(), 4, "{t:?}");
    assert!(
        t.iter()
            .all(|t| t.starts_with("simlab-transfer: refused: the service message cannot be read")),
        "{t:?}"
    );
    drive(&net, 2);
    no_agents(&net.op1);
    no_agents(&net.op2);
}

#[test]
fn a_message_with_another_tp_pid_is_left_alone_and_an_m4_for_an_unknown_tref_is_answered() {
    let net = network("pid");
    for pid in [0x00, 0x7f, 0xc2] {
        net.op1.handle_sms(&Incoming {
            protocol_identifier: pid,
            ..service_sms(A, order(250))
        });
    }
    net.op1.handle_sms(&Incoming {
        from: A.into(),
        text: Some("hello".into()),
        data: None,
        protocol_identifier: SERVICE_PID,
    });
    drive(&net, 2);
    assert_eq!(texts(&net.op1, A), Vec::<String>::new());
    no_agents(&net.op1);
    let stray = simlab_services::transfer::messages::Offer {
        tref: [7; 8],
        service: Service::Pay,
        sender: A.into(),
        receiver: B.into(),
        operator: "OP1".into(),
        message: String::new(),
        goods: Goods::Money {
            amount: 1,
            currency: "EUR".into(),
        },
        deadline: simlab_services::pki::now() + 600,
    };
    net.op2
        .handle_sms(&service_sms(B, answer(&stray, Response::Accept)));
    assert_eq!(
        texts(&net.op2, B),
        vec!["simlab-transfer 0707070707070707: no such transfer".to_string()]
    );
    no_agents(&net.op2);
}

#[test]
fn a_peer_with_a_certificate_from_another_ca_is_never_told_and_the_sender_is_at_the_deadline() {
    let clock = Arc::new(AtomicU64::new(0));
    let net = network_with(
        "foreign",
        Options {
            foreign_op2: true,
            clock: Some(clock.clone()),
            ..Options::default()
        },
    );
    net.op1.handle_sms(&service_sms(A, order(250)));
    drive(&net, 2);
    let a = &net.op1.store().agents(&[], 10).unwrap()[0];
    assert_eq!(a.state, State::Requested, "M2 cannot go out: {:?}", a.cause);
    no_agents(&net.op2);
    clock.store(601, Ordering::Relaxed);
    drive(&net, 1);
    let a = net.op1.store().agent(&a.tref).unwrap().unwrap();
    assert_eq!(a.state, State::Aborted);
    let t = texts(&net.op1, A);
    assert!(
        t.iter()
            .any(|t| t.contains("not done: OP2 cannot be reached")),
        "{t:?}"
    );
    assert_eq!(balance(&net.op1, A), 1000);
    assert!(net.op1.store().ledger().unwrap().balanced());
}

#[test]
fn a_peer_that_never_answers_costs_one_timeout_per_round_and_ends_at_the_deadline() {
    // Accepts connections and says nothing; counts them.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("https://127.0.0.1:{}", silent.local_addr().unwrap().port());
    let held = Arc::new(std::sync::Mutex::new(Vec::new()));
    {
        let held = held.clone();
        std::thread::spawn(move || {
            for c in silent.incoming().flatten() {
                held.lock().unwrap().push(c);
            }
        });
    }
    let clock = Arc::new(AtomicU64::new(0));
    let net = network_with(
        "silent",
        Options {
            op2_url: Some(url),
            clock: Some(clock.clone()),
            ..Options::default()
        },
    );
    for amount in [100, 200, 300] {
        net.op1.handle_sms(&service_sms(A, order(amount)));
    }
    net.op1.drive().unwrap();
    // One connection, one peer timeout: the other two agents wait without calling.
    assert_eq!(held.lock().unwrap().len(), 1);
    net.op1.drive().unwrap();
    assert_eq!(
        held.lock().unwrap().len(),
        1,
        "called again within DOWN_FOR"
    );
    let agents = net.op1.store().agents(&[], 10).unwrap();
    assert_eq!(agents.len(), 3);
    assert!(agents.iter().all(|a| a.state == State::Requested));
    // Past the deadline every one of them ends, told, without another call.
    clock.store(601, Ordering::Relaxed);
    net.op1.drive().unwrap();
    for a in &agents {
        assert_eq!(
            net.op1.store().agent(&a.tref).unwrap().unwrap().state,
            State::Aborted
        );
    }
    assert_eq!(held.lock().unwrap().len(), 1);
    let told = texts(&net.op1, A);
    assert_eq!(
        told.iter()
            .filter(|t| t.contains("not done: OP2 cannot be reached"))
            .count(),
        3,
        "{told:?}"
    );
    assert_eq!(balance(&net.op1, A), 1000);
}

/// Channel 121 at OP2, called with a certificate of `role` named `name` from the interconnect
/// CA (or with none): the HTTP status of an M2, or `None` when the TLS handshake itself
/// refused the client.
fn m2_status(net: &Net, who: Option<(Role, &str)>) -> Option<u16> {
    let ca = vec![net.ca.certificate().der.clone()];
    let (role, name) = who.unwrap_or((Role::Peer, "anchors only"));
    let t = net.ca.issue_tls(role, name, &[], 3600).unwrap();
    let id = Identity::from_der(t.certificate_der.clone(), t.key_pkcs8_der.to_vec(), ca);
    let tls = ClientTls {
        anchors: id.ca.clone(),
        identity: who.map(|_| id),
    };
    let url = Url::parse(&net.servers[1].url())
        .unwrap()
        .with_tls_timeout(Some(&tls), Duration::from_secs(5));
    let body = serde_json::json!({"tref": "0707070707070707", "offer": hex(&order(1))});
    match client::post_json::<_, serde_json::Value>(&url, "/v1/peer/transfers", &body) {
        Err(ClientError::Status(e)) => Some(e.status),
        Err(ClientError::Tls { .. } | ClientError::Io { .. }) => None,
        other => panic!("{other:?}"),
    }
}

#[test]
fn channel_121_answers_only_the_pinned_peer_certificate() {
    let net = network("pinning");
    // OP1's name on a new certificate from the right CA: not the one OP2's table pins.
    assert_eq!(m2_status(&net, Some((Role::Peer, "OP1"))), Some(403));
    // A peer certificate of an operator OP2 does not know.
    assert_eq!(m2_status(&net, Some((Role::Peer, "OP9"))), Some(403));
    // The right name on a certificate for another role: a gateway's is answered 403, a
    // server's (no clientAuth usage) does not get past the handshake.
    assert_eq!(m2_status(&net, Some((Role::Gateway, "OP1"))), Some(403));
    assert_eq!(m2_status(&net, Some((Role::Server, "OP1"))), None);
    // No client certificate at all.
    assert_eq!(m2_status(&net, None), Some(403));
    no_agents(&net.op2);
    assert_eq!(net.op2.store().outbox_to(B).unwrap().len(), 0);
}
