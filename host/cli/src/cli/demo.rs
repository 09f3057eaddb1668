//! `simlab demo`: seed 000 end to end on emulated hardware, told step by step.
//!
//! A subscriber's SIM bootstraps a certificate for a key generated on the token (messages
//! 210–260), a forged gateway is refused both ways (M1, M3), the token signs an invoice after
//! its PIN (610–640), the seller bills through the gateway (910/920) which bills each purchase
//! once and only for the signed amount, revocation stops a lost phone, and the 3G path issues
//! a fresh certificate. AuC, gateway and seller are real HTTP services on loopback with SQLite
//! in a temporary directory; the card (USIM + token applet) is the simlab card model. Every
//! answer is checked; a failed check stops the demo with exit status 1.

use super::Output;
use super::pki::{SharedTransport, read_imsi};
use serde_json::json;
use simlab_applet::Card;
use simlab_applet::chv::pad_pin;
use simlab_card::error::{Error, Result};
use simlab_card::hex;
use simlab_card::profile::Profile;
use simlab_card::token::TokenSession;
use simlab_card::transport::inproc::InProcess;
use simlab_card::transport::pcsc::{self, PcscOptions, PcscTransport};
use simlab_card::transport::{Link, Transport};
use simlab_services::http::Role;
use simlab_services::http::client::{self, ClientError, Url};
use simlab_services::http::server::{Background, Limits};
use simlab_services::http::tls::{ClientTls, Identity, ServerTls};
use simlab_services::http::{ApiError, Request, Response};
use simlab_services::pki::auc_server::Auc;
use simlab_services::pki::auc_server::subscribers::{Subscriber, SubscriberDb};
use simlab_services::pki::buyer::{self, BuyError, BuyRequest};
use simlab_services::pki::der::iso8601;
use simlab_services::pki::gateway::ca::Ca;
use simlab_services::pki::gateway::store::{self, Pool};
use simlab_services::pki::gateway::{Gateway, GatewayConfig};
use simlab_services::pki::messages::{
    AuthPath, BeginRequest, BeginResponse, FinishResponse, RecordResult, RejectReason,
};
use simlab_services::pki::ms::{self, EnrollRequest, MsError};
use simlab_services::pki::restrictions::{Restrictions, money};
use simlab_services::pki::seller::billing;
use simlab_services::pki::seller::sales::{SaleState, SalesDb};
use simlab_services::pki::seller::{Seller, SellerConfig, default_catalogue};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

#[derive(clap::Args, Debug, Default)]
pub struct DemoArgs {
    /// Put the USIM + token behind the running pcscd, as a virtual card in a free vpcd reader,
    /// and talk to it through PC/SC; without a pcscd (or a free vpcd reader) the card stays
    /// in-process.
    #[arg(long)]
    pub pcscd: bool,
    /// Tell one chapter only: `roaming` (seed 001: roaming m-commerce between three
    /// operators), `sign` (seed 002: prepare on a PC, sign on the phone's token), `transfer`
    /// (seed 003: transfers between two operators by SMS, both operations or neither), `otp`
    /// (seed 004: one-time secrets over a second channel).
    #[arg(value_enum, value_name = "CHAPTER")]
    pub chapter: Option<Chapter>,
}

/// The chapters `simlab demo CHAPTER` tells on their own.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Chapter {
    Roaming,
    Sign,
    Transfer,
    Otp,
}

/// The card model serving a vpcd reader from a thread; stopped when dropped.
struct VirtualCardThread {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for VirtualCardThread {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// How long the virtual card may take to appear in its reader.
const INSERT_WAIT: Duration = Duration::from_secs(5);

/// The card in a vpcd reader: the PC/SC transport to it, and the thread that is the card.
struct BehindPcscd {
    transport: Box<dyn Transport>,
    card: VirtualCardThread,
    reader: String,
}

/// The card behind pcscd in the first empty vpcd reader, or `None` when there is no pcscd or
/// no free vpcd reader.
fn behind_pcscd(card: Card) -> Result<Option<BehindPcscd>> {
    let Ok(readers) = pcsc::list_readers() else {
        return Ok(None);
    };
    // vsmartcard names its readers "Virtual PCD 00 <slot>"; slot n is vpcd's port 35963 + n.
    let free = readers.iter().find_map(|r| {
        let slot: u16 = r
            .name
            .strip_prefix("Virtual PCD 00 ")?
            .trim()
            .parse()
            .ok()?;
        (!r.card_present).then(|| (r.name.clone(), slot))
    });
    let Some((reader, slot)) = free else {
        return Ok(None);
    };
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    let addr = format!("127.0.0.1:{}", simlab_emulate::vpcd::DEFAULT_PORT + slot);
    let thread = std::thread::spawn(move || {
        let Ok(mut emulated) = simlab_emulate::card::EmulatedCard::new(card, None, None) else {
            return;
        };
        let options = simlab_emulate::vpcd::VpcdOptions {
            addr,
            reconnect: false,
            pull_after: None,
        };
        let _ = simlab_emulate::vpcd::serve(&mut emulated, &options, &flag, &mut |_| {});
    });
    let guard = VirtualCardThread {
        stop,
        thread: Some(thread),
    };
    let deadline = Instant::now() + INSERT_WAIT;
    while !pcsc::list_readers()
        .is_ok_and(|rs| rs.iter().any(|r| r.name == reader && r.card_present))
    {
        if Instant::now() > deadline {
            return Err(failed(
                "pcscd",
                format!("the virtual card did not appear in {reader:?}"),
            ));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let transport = PcscTransport::connect(
        &reader,
        &PcscOptions {
            exclusive: true,
            wait: Some(INSERT_WAIT),
        },
    )?;
    Ok(Some(BehindPcscd {
        transport: Box::new(transport),
        card: guard,
        reader,
    }))
}

/// The demo subscriber: a Milenage USIM with PIN1 enabled (PIN 1234) and the token applet.
const DEMO_PROFILE: &str = include_str!("../../../../fixtures/cards/demo-usim.toml");
/// The seller's id at the gateway.
const SELLER_ID: &str = "cafe-1";
/// A new token's PIN.
const TOKEN_PIN: &str = "0000";

/// The chapter headings and narration of every demo (this one, `demo roaming`, `demo otp`).
pub(super) fn step(out: &Output, n: usize, title: &str) {
    if !out.json() {
        println!("\n[{n}] {title}");
    }
}

/// A narration line (each line of it indented); an empty one is a blank line.
pub(super) fn say(out: &Output, line: &str) {
    if out.json() {
        return;
    }
    if line.is_empty() {
        println!();
    }
    for l in line.lines() {
        println!("    {l}");
    }
}

/// `simlab demo CHAPTER`: one chapter told on its own, its JSON under `key`.
fn alone(
    out: &Output,
    key: &str,
    chapter: fn(&Output, usize) -> Result<serde_json::Value>,
) -> Result<i32> {
    let v = chapter(out, 1)?;
    if !out.json() {
        println!("\nEverything checked.");
    }
    out.result("", &json!({ key: v }))?;
    Ok(0)
}

/// A step of the story that did not come out as told is a failed demo.
pub(super) fn ensure(ok: bool, what: &str) -> Result<()> {
    if ok {
        Ok(())
    } else {
        Err(Error::Mismatch {
            what: what.to_string(),
        })
    }
}

pub(super) fn failed(what: &str, e: impl std::fmt::Display) -> Error {
    Error::Mismatch {
        what: format!("{what}: {e}"),
    }
}

/// The demo's temporary directory, removed however the demo ends.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> Result<TempDir> {
        let tag = hex::encode(&simlab_card::random::bytes::<4>()?);
        let dir = std::env::temp_dir().join(format!("simlab-demo-{}-{tag}", std::process::id()));
        std::fs::create_dir_all(&dir).map_err(|source| Error::Io {
            context: format!("creating {}", dir.display()),
            source,
        })?;
        Ok(TempDir(dir))
    }

    fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The demo operator's PKI: every role gets a certificate from the gateway's CA, as
/// `simlab gateway issue` would write it.
struct DemoPki<'a> {
    ca: &'a Ca,
}

impl DemoPki<'_> {
    fn identity(&self, role: Role, name: &str) -> Result<Identity> {
        let issued = self
            .ca
            .issue_tls(
                role,
                name,
                &["localhost".into(), "127.0.0.1".into()],
                86_400,
            )
            .map_err(|e| failed("issuing a TLS certificate", e))?;
        Ok(Identity::from_der(
            issued.certificate_der.clone(),
            issued.key_pkcs8_der.to_vec(),
            vec![self.ca.certificate().der.clone()],
        ))
    }

    fn server(&self, name: &str) -> Result<ServerTls> {
        let identity = self.identity(Role::Server, name)?;
        ServerTls::new(&identity, &identity.ca).map_err(|e| failed("TLS", e))
    }

    /// A client that trusts the CA and presents `role`'s certificate.
    fn client(&self, role: Role, name: &str) -> Result<ClientTls> {
        let identity = self.identity(role, name)?;
        Ok(ClientTls {
            anchors: identity.ca.clone(),
            identity: Some(identity),
        })
    }

    /// The phone side: the CA pinned, no certificate.
    fn phone(&self) -> ClientTls {
        ClientTls {
            anchors: vec![self.ca.certificate().der.clone().into()],
            identity: None,
        }
    }
}

fn start(
    handler: simlab_services::http::server::Handler,
    limits: Limits,
    tls: ServerTls,
    name: &str,
    client: &ClientTls,
) -> Result<(Background, Url)> {
    let server =
        Background::start("127.0.0.1:0", handler, limits, Some(tls), name).map_err(|source| {
            Error::Io {
                context: "listening on loopback".into(),
                source,
            }
        })?;
    let url = Url::parse(&server.url())
        .map_err(|e| failed("loopback URL", e))?
        .with_tls(client);
    Ok((server, url))
}

/// A gateway impersonator that has no AuC: it answers 210 with its own RANDs and an M1 made
/// up without the subscriber's Kc.
fn forged_gateway(req: &Request) -> Response {
    let body: BeginRequest = match req.json() {
        Ok(b) => b,
        Err(e) => return e.into(),
    };
    let random = |n| simlab_card::random::bytes::<16>().map(|r| hex::encode(&r[..n]));
    match (random(16), random(16), random(16), random(16), random(16)) {
        (Ok(r1), Ok(r2), Ok(r3), Ok(m1a), Ok(m1b)) => Response::ok(&BeginResponse {
            sid: body.sid,
            path: body.path,
            rands: vec![r1, r2, r3],
            autn: None,
            impi: None,
            naf_id: None,
            m1: format!("{m1a}{m1b}"),
            expires_at: simlab_services::pki::now() + 300,
        }),
        _ => ApiError::internal("no randomness").into(),
    }
}

/// A relay that passes everything to the real gateway but swaps M3 for one of its own.
fn m3_forger(gateway: Url) -> impl Fn(&Request) -> Response + Send + Sync {
    move |req: &Request| {
        let answer = match client::request(&gateway, &req.method, &req.path, Some(&req.body)) {
            Ok(a) => a,
            Err(e) => return ApiError::new(502, "relay", e.to_string()).into(),
        };
        if req.path.ends_with("/finish") && answer.status == 200 {
            let Ok(mut m260) = serde_json::from_slice::<FinishResponse>(&answer.body) else {
                return ApiError::new(502, "relay", "unreadable 260").into();
            };
            m260.m3 = hex::encode(&[0x33; 32]);
            return Response::ok(&m260);
        }
        Response {
            status: answer.status,
            content_type: "application/json",
            body: answer.body,
            headers: Vec::new(),
        }
    }
}

pub fn run(out: &Output, args: &DemoArgs) -> Result<i32> {
    match args.chapter {
        Some(Chapter::Roaming) => return alone(out, "roaming", super::demo_roaming::chapter),
        Some(Chapter::Sign) => return alone(out, "sign", super::demo_sign::chapter),
        Some(Chapter::Transfer) => {
            return alone(out, "transfer", super::demo_transfer::chapter);
        }
        Some(Chapter::Otp) => return alone(out, "otp", super::demo_otp::chapter),
        None => {}
    }
    let profile = Profile::parse(Path::new("fixtures/cards/demo-usim.toml"), DEMO_PROFILE)?;
    let tmp = TempDir::new()?;

    step(
        out,
        1,
        "The operator's side comes up: AuC, gateway, seller, over mutual TLS",
    );
    let ca = Ca::load_or_create(&tmp.path("gateway-ca"), "simlab")
        .map_err(|e| failed("gateway CA", e))?;
    let pki = DemoPki { ca: &ca };
    let phone_tls = pki.phone();
    let subscribers = SubscriberDb::open(&tmp.path("auc.sqlite")).map_err(|e| failed("AuC", e))?;
    subscribers
        .import(&[Subscriber::from_profile(&profile)])
        .map_err(|e| failed("AuC", e))?;
    let auc = Arc::new(Auc::new(subscribers));
    let (_auc_server, auc_url) = start(
        Arc::new(move |r| auc.handle(r)),
        Limits::default(),
        pki.server("auc")?,
        "auc",
        &pki.client(Role::Gateway, "gateway")?,
    )?;
    say(
        out,
        &format!(
            "AuC on {auc_url}: subscriber IMSI {} ({}); its Ki stays in the AuC's database, and \
             it answers only the gateway's client certificate.",
            profile.imsi,
            profile.algorithm.name()
        ),
    );
    let pool = Pool::new(
        store::opener(&tmp.path("gateway.sqlite").to_string_lossy())
            .map_err(|e| failed("gateway database", e))?,
    );
    let ca_cert = ca.certificate().clone();
    let gateway_tls = pki.server("gateway")?;
    let seller_link = pki.client(Role::Seller, SELLER_ID)?;
    let seller_tls = {
        let identity = pki.identity(Role::Seller, SELLER_ID)?;
        ServerTls::new(&identity, &identity.ca).map_err(|e| failed("TLS", e))?
    };
    pool.get()
        .and_then(|mut s| s.add_seller(SELLER_ID, "Café One", simlab_services::pki::now()))
        .map_err(|e| failed("registering the seller", e))?;
    let gateway = Arc::new(Gateway::new(GatewayConfig::new(auc_url.clone()), ca, pool));
    let pki = DemoPki { ca: &gateway.ca };
    let gw = gateway.clone();
    let (_gw_server, gw_url) = start(
        Arc::new(move |r| gw.handle(r)),
        Limits {
            max_body: simlab_services::pki::gateway::billing::MAX_BATCH_BYTES,
            ..Limits::default()
        },
        gateway_tls,
        "gateway",
        &phone_tls,
    )?;
    // The seller reaches the gateway with its own certificate: billing answers only it.
    let gw_seller = gw_url.clone().with_tls(&seller_link);
    say(
        out,
        &format!(
            "Gateway on {}: a fresh CA \"{}\" (P-256; its key file has mode 0600 and is never shown).",
            gw_url,
            ca_cert.subject_common_name.as_deref().unwrap_or("?")
        ),
    );
    let catalogue = default_catalogue("EUR");
    let seller = Arc::new(Seller::new(
        SellerConfig {
            seller_id: SELLER_ID.into(),
            gateway: gw_seller.clone(),
            catalogue: catalogue.clone(),
            batch_size: billing::DEFAULT_BATCH,
        },
        ca_cert.clone(),
        SalesDb::open(&tmp.path("seller.sqlite")).map_err(|e| failed("seller database", e))?,
    ));
    let s = seller.clone();
    let (_seller_server, seller_url) = start(
        Arc::new(move |r| s.handle(r)),
        Limits::default(),
        seller_tls,
        "seller",
        &phone_tls,
    )?;
    let menu: Vec<String> = catalogue
        .iter()
        .map(|i| format!("{} {}", i.name, money(i.price, &i.currency)))
        .collect();
    say(
        out,
        &format!(
            "Seller \"{SELLER_ID}\" on {}, registered with the gateway (billing only with its own certificate), sells {}.",
            seller_url,
            menu.join(", ")
        ),
    );

    step(out, 2, "The subscriber's phone: a USIM with a token applet");
    let mut _virtual_card = None;
    let in_process = || -> Result<Box<dyn Transport>> {
        Ok(Box::new(InProcess::new(profile.build_card()?, "demo USIM")))
    };
    let transport: Box<dyn Transport> = if !args.pcscd {
        in_process()?
    } else if let Some(BehindPcscd {
        transport,
        card,
        reader,
    }) = behind_pcscd(profile.build_card()?)?
    {
        _virtual_card = Some(card);
        say(
            out,
            &format!(
                "The card model is a virtual card in pcscd's reader {reader:?}; every APDU goes through PC/SC."
            ),
        );
        transport
    } else {
        say(
            out,
            "No pcscd with a free vpcd reader: the card model stays in-process.",
        );
        in_process()?
    };
    let card = SharedTransport::new(transport);
    let sim_pin = pad_pin("1234").unwrap_or_default();
    let imsi = read_imsi(&card, Some(&sim_pin))?;
    ensure(imsi == profile.imsi, "the SIM reports another IMSI")?;
    say(
        out,
        &format!("SIM PIN1 verified; the SIM's IMSI is {imsi}."),
    );
    let mut token = TokenSession::open(Link::new(Box::new(card.clone())))?;
    let token_pin = pad_pin(TOKEN_PIN).unwrap_or_default();
    ensure(
        token.verify_pin(&token_pin)? == simlab_card::token::PinOutcome::Verified,
        "the token refused its PIN",
    )?;
    let public_key = token.generate_key(false)?;
    say(
        out,
        &format!(
            "Token PIN verified; the token generated a P-256 key pair. Public key 04{}…; the private key never leaves the card.",
            &hex::encode(&public_key.0[1..])[..16]
        ),
    );

    step(
        out,
        3,
        "Bootstrap: a certificate from the SIM's own authentication (210-260)",
    );
    let restrictions = Restrictions {
        per_purchase_limit: 2_000,
        currency: "EUR".into(),
        max_purchases: 5,
        period_seconds: 86_400,
        validity_seconds: 7 * 86_400,
    };
    say(
        out,
        &format!(
            "The subscriber asks for a certificate as \"alice\": {}.",
            restrictions.describe()
        ),
    );
    let request = EnrollRequest {
        gateway: gw_url.clone(),
        path: AuthPath::Gsm,
        restrictions: restrictions.clone(),
        alias: "alice".into(),
        ca: Some(ca_cert.clone()),
    };
    let enrollment = ms::enroll(&mut token, &imsi, &request, &mut |l| say(out, l))?;
    let cert = enrollment.certificate.clone();
    ensure(
        enrollment.rands.len() == 3,
        "K should come from three triplets",
    )?;
    ensure(
        token.certificate()?.as_deref() == Some(&cert.der[..]),
        "the token does not hold the certificate",
    )?;
    cert.check_issued_by(&ca_cert)
        .map_err(|e| failed("the certificate", e))?;
    say(
        out,
        "K = HMAC-SHA-256 keyed with three Kc (up to 3 × 64 bits): the gateway computed it from the AuC's triplets, the card from its own A3/A8; it never travelled.",
    );
    say(
        out,
        &format!(
            "Certificate {}: X.509 v3, subject CN=alice, issued by the gateway CA, valid {} .. {},",
            cert.serial_hex(),
            iso8601(cert.not_before),
            iso8601(cert.not_after)
        ),
    );
    say(
        out,
        "restrictions in extension 1.3.6.1.4.1.55555.1.1 (the DER the token MACed in M2).",
    );

    step(out, 4, "A forged gateway is refused, both ways");
    let (_forged, forged_url) = start(
        Arc::new(forged_gateway),
        Limits::default(),
        pki.server("gateway")?,
        "forger",
        &phone_tls,
    )?;
    let forged = ms::enroll(
        &mut token,
        &imsi,
        &EnrollRequest {
            gateway: forged_url,
            ..request.clone()
        },
        &mut |_| {},
    );
    let m1_refused = matches!(&forged, Err(MsError::ForgedGateway { which: "M1", .. }));
    ensure(
        m1_refused,
        "the card answered a gateway that does not know K",
    )?;
    say(
        out,
        "An impersonator without the AuC's Kc sends RANDs with a made-up M1: the card computes another M1 and releases nothing — no SRES, no key, no M2.",
    );
    let (_relay, relay_url) = start(
        Arc::new(m3_forger(gw_url.clone())),
        Limits::default(),
        pki.server("gateway")?,
        "relay",
        &phone_tls,
    )?;
    let relayed = ms::enroll(
        &mut token,
        &imsi,
        &EnrollRequest {
            gateway: relay_url,
            ..request.clone()
        },
        &mut |_| {},
    );
    let m3_refused = matches!(&relayed, Err(MsError::ForgedGateway { which: "M3", .. }));
    ensure(
        m3_refused,
        "the card accepted a certificate with a forged M3",
    )?;
    ensure(
        token.certificate()?.as_deref() == Some(&cert.der[..]),
        "a refused certificate replaced the stored one",
    )?;
    say(
        out,
        "A relay that swaps M3 in message 260: the card refuses the certificate and keeps its own.",
    );

    step(out, 5, "A purchase (610-640): the token signs the invoice");
    let buy = |token: &mut TokenSession, item: &str, max: Option<u64>| {
        buyer::buy(
            token,
            &token_pin,
            &BuyRequest {
                seller: seller_url.clone(),
                item: item.into(),
                max_amount: max,
            },
            &mut |l| say(out, l),
        )
    };
    let coffee = buy(&mut token, "coffee", Some(500))?;
    ensure(
        simlab_services::pki::x509::verify(
            &cert.verifying_key().map_err(|e| failed("key", e))?,
            &coffee.invoice_bytes,
            &coffee.signature,
        ),
        "the signature does not verify",
    )?;
    say(
        out,
        &format!(
            "The signed invoice is {} bytes: seller, transaction id, certificate serial, amount, currency, time, item — each length-prefixed.",
            coffee.invoice_bytes.len()
        ),
    );
    let flowers = buy(&mut token, "flowers", None)?;
    say(
        out,
        &format!(
            "A second purchase: {} for {}.",
            flowers.invoice.item,
            money(flowers.invoice.amount, &flowers.invoice.currency)
        ),
    );

    step(
        out,
        6,
        "Over the limit: the seller refuses before invoicing",
    );
    let ticket = buy(&mut token, "ticket", None);
    let over_limit = matches!(&ticket, Err(BuyError::Seller(ClientError::Status(e))) if e.code == "restriction_broken");
    ensure(over_limit, "the seller sold over the certificate's limit")?;
    if let Err(e) = &ticket {
        say(out, &format!("{e}"));
    }

    step(
        out,
        7,
        "Billing (910/920): the seller submits its accounting records",
    );
    let report = billing::submit(&seller.db, &gw_seller, SELLER_ID, billing::DEFAULT_BATCH)
        .map_err(|e| failed("billing", e))?;
    ensure(
        report.accepted == 2 && report.rejected == 0,
        "the gateway did not bill both purchases",
    )?;
    say(
        out,
        &format!(
            "The gateway found each certificate record, verified each signature over the signed bytes, checked the restrictions: {} billed.",
            report.accepted
        ),
    );
    let cdrs = gateway
        .pool
        .get()
        .and_then(|mut s| s.cdrs(None))
        .map_err(|e| failed("CDRs", e))?;
    let total: u64 = cdrs.iter().map(|c| c.amount).sum();
    say(
        out,
        &format!(
            "{} CDRs stored: seller {SELLER_ID} is credited and IMSI {imsi} charged {} in all.",
            cdrs.len(),
            money(total, "EUR")
        ),
    );
    let mut billing_results: Vec<RecordResult> = report.results.clone();

    step(
        out,
        8,
        "A double submission is rejected, and so is an altered amount",
    );
    let sales = seller
        .db
        .lock()
        .map_err(|_| failed("seller database", "poisoned"))?
        .sales(Some(SaleState::Billed))
        .map_err(|e| failed("seller database", e))?;
    let first = sales
        .iter()
        .find(|s| s.transaction_id == coffee.invoice.transaction_id)
        .ok_or_else(|| failed("seller database", "the coffee sale is missing"))?;
    let again = billing::record(first);
    let mut altered = billing::record(
        sales
            .iter()
            .find(|s| s.transaction_id == flowers.invoice.transaction_id)
            .ok_or_else(|| failed("seller database", "the flowers sale is missing"))?,
    );
    altered.amount *= 10;
    let answer = billing::send(
        &gw_seller,
        SELLER_ID,
        "demo-resubmission",
        vec![again, altered],
    )
    .map_err(|e| failed("billing", e))?;
    let reasons: Vec<Option<RejectReason>> =
        answer.rejections.iter().map(|r| Some(r.reason)).collect();
    ensure(
        answer.accepted == 0
            && reasons
                == [
                    Some(RejectReason::AlreadyBilled),
                    Some(RejectReason::AlreadyBilled),
                ],
        &format!("unexpected verdicts {reasons:?}"),
    )?;
    say(
        out,
        &format!(
            "The coffee again: rejected, already billed at {} (the same signed invoice).",
            iso8601(answer.rejections[0].billed_at.unwrap_or_default())
        ),
    );
    say(
        out,
        "The flowers at ten times the price: rejected too — the record id is inside the signed invoice, so it is the same purchase.",
    );
    // An altered amount on a purchase not yet billed: a third purchase, billed dishonestly.
    let sandwich = buy(&mut token, "sandwich", None)?;
    let sale = seller
        .db
        .lock()
        .map_err(|_| failed("seller database", "poisoned"))?
        .sale(&sandwich.invoice.transaction_id)
        .map_err(|e| failed("seller database", e))?
        .ok_or_else(|| failed("seller database", "the sandwich sale is missing"))?;
    let mut inflated = billing::record(&sale);
    inflated.amount = 1_950;
    let answer2 = billing::send(&gw_seller, SELLER_ID, "demo-inflated", vec![inflated])
        .map_err(|e| failed("billing", e))?;
    ensure(
        answer2.rejections.first().map(|r| r.reason) == Some(RejectReason::InvoiceMismatch),
        "the gateway billed an amount the buyer did not sign",
    )?;
    say(
        out,
        &format!(
            "A new sandwich billed at 19.50 EUR instead of the signed {}: rejected ({}).",
            money(sandwich.invoice.amount, "EUR"),
            answer2.rejections[0].detail
        ),
    );
    let honest = billing::submit(&seller.db, &gw_seller, SELLER_ID, billing::DEFAULT_BATCH)
        .map_err(|e| failed("billing", e))?;
    ensure(
        honest.accepted == 1,
        "the honest sandwich record was not billed",
    )?;
    say(out, "Billed honestly, the sandwich goes through.");
    billing_results.extend(answer.rejections.iter().map(|r| r.to_result()));
    billing_results.extend(answer2.rejections.iter().map(|r| r.to_result()));
    billing_results.extend(honest.results.iter().cloned());

    step(
        out,
        9,
        "The phone is lost: the operator revokes the certificate",
    );
    gateway
        .pool
        .get()
        .and_then(|mut s| s.revoke(&cert.serial, simlab_services::pki::now(), "reported lost"))
        .map_err(|e| failed("revocation", e))?;
    let after = buy(&mut token, "coffee", None);
    let revoked_refused = matches!(&after, Err(BuyError::Seller(ClientError::Status(e))) if e.code == "certificate_revoked");
    ensure(revoked_refused, "the seller accepted a revoked certificate")?;
    say(
        out,
        "The seller's online check (operation 830) now says revoked: no invoice, nothing to sign.",
    );

    step(
        out,
        10,
        "Found again: a fresh certificate, the 3G way (CK‖IK, as GBA)",
    );
    let usim = ms::enroll(
        &mut token,
        &imsi,
        &EnrollRequest {
            path: AuthPath::Usim,
            ..request.clone()
        },
        &mut |l| say(out, l),
    )?;
    ensure(usim.rands.len() == 1, "the usim path uses one quintet")?;
    let tea = buy(&mut token, "coffee", None)?;
    say(
        out,
        &format!(
            "Certificate {} (K from one AKA run: Ks_NAF of TS 33.220), and the coffee is sold again: {}.",
            usim.certificate.serial_hex(),
            tea.delivery.delivery
        ),
    );
    let last = billing::submit(&seller.db, &gw_seller, SELLER_ID, billing::DEFAULT_BATCH)
        .map_err(|e| failed("billing", e))?;
    ensure(last.accepted == 1, "the last purchase was not billed")?;
    billing_results.extend(last.results.iter().cloned());

    let roaming = super::demo_roaming::chapter(out, 11)?;
    let otp = super::demo_otp::chapter(out, 16)?;
    let sign = super::demo_sign::chapter(out, 17)?;
    let transfer = super::demo_transfer::chapter(out, 21)?;

    let accepted = billing_results
        .iter()
        .filter(|r| r.reason.is_none())
        .count();
    let rejected = billing_results.len() - accepted;
    say(out, "");
    say(
        out,
        &format!(
            "Everything checked: {accepted} records billed once each, {rejected} rejected. `simlab demo --json` prints the certificates, the signed invoice and its signature for openssl."
        ),
    );
    out.result(
        "",
        &json!({
            "imsi": imsi,
            "algorithm": profile.algorithm.name(),
            "serial": cert.serial_hex(),
            "restrictions": restrictions,
            "certificate_pem": cert.to_pem(),
            "gateway_certificate_pem": ca_cert.to_pem(),
            "public_key_pem": public_key.to_pem(),
            "invoice_hex": hex::encode(&coffee.invoice_bytes),
            "signature_der_hex": hex::encode(&coffee.signature),
            "forged_m1_refused": m1_refused,
            "forged_m3_refused": m3_refused,
            "over_limit_refused": over_limit,
            "revoked_refused": revoked_refused,
            "usim_certificate_pem": usim.certificate.to_pem(),
            "billing": {
                "accepted": accepted,
                "rejected": rejected,
                "results": billing_results,
            },
            "roaming": roaming,
            "otp": otp,
            "sign": sign,
            "transfer": transfer,
        }),
    )?;
    Ok(0)
}
