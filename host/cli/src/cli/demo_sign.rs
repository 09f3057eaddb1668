//! `simlab demo sign` (and a chapter of the full demo): seed 002 on loopback. A bank's signing
//! server with its web site, a PC that logs in, prepares and approves through real HTTPS forms
//! and cookies, a push over a virtual modem's AT engine, and a phone (the card model with its
//! token, and a virtual modem of its own) that checks the countersignature, shows what the
//! signed bytes say and signs them after its PIN. The demo plays the network between the two
//! modems. Every answer is checked; a failed check stops the demo with exit status 1.

use super::Output;
use super::demo::{ensure, failed, say, step};
use super::demo_otp::{Worker, bind, io, start_modem};
use super::demo_roaming::Running;
use serde_json::{Value, json};
use simlab_applet::chv::pad_pin;
use simlab_card::error::Result;
use simlab_card::profile::Profile;
use simlab_card::token::TokenSession;
use simlab_card::transport::Link;
use simlab_card::transport::inproc::InProcess;
use simlab_modem::OpenOptions;
use simlab_modem::backend::{AtBackend, SmsBackend};
use simlab_services::bytes::{hex, unhex};
use simlab_services::http::Role;
use simlab_services::http::client::{self, Answer, Url};
use simlab_services::http::server::{Limits, Stop};
use simlab_services::http::tls::ClientTls;
use simlab_services::pki::gateway::ca::Ca;
use simlab_services::roaming::keys::SigningKey;
use simlab_services::sign::phone::{self, Decision};
use simlab_services::sign::service::{Config, Signing};
use simlab_services::sign::store::{Store, User};
use simlab_services::sign::{self as seed};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

const USER: &str = "u1";
const PASSWORD: &str = "correct horse battery";
const PHONE_NUMBER: &str = "+491700000001";
const SERVER_NUMBER: &str = "+491609999002";
const TOKEN_PIN: &str = "0000";
const DEMO_PROFILE: &str = include_str!("../../../../fixtures/cards/demo-usim.toml");

pub(super) struct World {
    dir: PathBuf,
    url: Url,
    phone_server: phone::Server,
    store: Arc<Store>,
    token: TokenSession,
    /// `None`: the server sends nothing (the bench's "server alone") and the phone is told.
    phone_sms: Option<AtBackend>,
    server_spool: PathBuf,
    phone_spool: PathBuf,
    relayed: usize,
    // Dropped in this order: the server, then the modems.
    _sign: Running,
    _modems: Option<(Worker, Worker)>,
}

impl Drop for World {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A browser's session: the cookie it was given.
pub(super) struct Browser {
    cookie: String,
}

fn form(fields: &[(&str, &str)]) -> String {
    let mut s = form_urlencoded::Serializer::new(String::new());
    for (k, v) in fields {
        s.append_pair(k, v);
    }
    s.finish()
}

/// The text of the element with `id` on a page.
fn element(page: &str, id: &str) -> Option<String> {
    let start = page.find(&format!("id=\"{id}\""))?;
    let rest = &page[start..];
    let open = rest.find('>')? + 1;
    let close = rest[open..].find('<')?;
    Some(rest[open..open + close].to_string())
}

fn csrf(page: &str) -> Option<String> {
    let at = page.find("name=\"csrf\" value=\"")? + 19;
    page.get(at..at + 32).map(str::to_string)
}

impl World {
    fn start() -> Result<World> {
        World::start_with(true)
    }

    /// With `modems`, two virtual modems carry the pushes; without, nothing is sent.
    pub(super) fn start_with(modems: bool) -> Result<World> {
        let dir = std::env::temp_dir().join(format!(
            "simlab-demo-sign-{}-{}",
            std::process::id(),
            simlab_services::pki::now()
        ));
        std::fs::create_dir_all(&dir).map_err(io("creating the demo directory"))?;
        let ca = Ca::load_or_create(&dir.join("ca"), "simlab sign demo")
            .map_err(|e| failed("the demo CA", e))?;
        let id = ca
            .issue_tls(Role::Server, "bank.example", &[], 86_400)
            .map_err(|e| failed("issuing the server certificate", e))?;
        let key = SigningKey::from_pkcs8(&id.key_pkcs8_der, "server key")
            .map_err(|e| failed("the server key", e))?;
        // The server countersigns with the key of the certificate it serves (the phone pins
        // that certificate): one identity for both.
        let server_identity = simlab_services::http::tls::Identity::from_der(
            id.certificate_der.clone(),
            id.key_pkcs8_der.to_vec(),
            vec![ca.certificate().der.clone()],
        );

        // Two virtual modems on ptys: the server's and the phone's.
        let (server_spool, phone_spool) = (dir.join("server-spool"), dir.join("phone-spool"));
        let (workers, server_sms, phone_sms): (_, Box<dyn SmsBackend>, _) = if modems {
            let server_modem =
                start_modem(&dir.join("server-modem"), &server_spool, SERVER_NUMBER)?;
            let phone_modem = start_modem(&dir.join("phone-modem"), &phone_spool, PHONE_NUMBER)?;
            let server_sms = AtBackend::open(&dir.join("server-modem"), OpenOptions::default())
                .map_err(|e| failed("opening the server's modem", e))?;
            let phone_sms = AtBackend::open(&dir.join("phone-modem"), OpenOptions::default())
                .map_err(|e| failed("opening the phone's modem", e))?;
            (
                Some((server_modem, phone_modem)),
                Box::new(server_sms),
                Some(phone_sms),
            )
        } else {
            (
                None,
                Box::new(simlab_modem::backend::NullBackend::default()),
                None,
            )
        };

        // The phone's token, and the directory row with its key.
        let profile = Profile::parse(Path::new("fixtures/cards/demo-usim.toml"), DEMO_PROFILE)?;
        let mut token = TokenSession::open(Link::new(Box::new(InProcess::new(
            profile.build_card()?,
            "signing phone",
        ))))?;
        let pin = pad_pin(TOKEN_PIN).unwrap_or_default();
        ensure(
            token.verify_pin(&pin)? == simlab_card::token::PinOutcome::Verified,
            "the token refused its PIN",
        )?;
        let public_key = token.generate_key(false)?;
        let store = Arc::new(
            Store::open_path(&dir.join("sign.sqlite")).map_err(|e| failed("the store", e))?,
        );
        let verifier = seed::password_verifier(PASSWORD).map_err(|e| failed("password", e))?;
        store
            .put_user(
                &User::new(USER, PHONE_NUMBER, Some(public_key.0.to_vec()), verifier),
                false,
            )
            .map_err(|e| failed("the directory", e))?;

        let server = bind(&server_identity, "sign")?;
        let trust = ClientTls {
            anchors: vec![ca.certificate().der.clone().into()],
            identity: None,
        };
        let url = Url::parse(&server.url())
            .map_err(|e| failed("server URL", e))?
            .with_tls(&trust);
        let signing = Arc::new(Signing::new(
            Config {
                server_id: "bank.example".into(),
                key,
                request_ttl: seed::REQUEST_TTL,
                session_ttl: seed::SESSION_TTL,
                fault: None,
            },
            Store::open_path(&dir.join("sign.sqlite")).map_err(|e| failed("the store", e))?,
            server_sms,
        ));
        let (tx, rx) = oneshot::channel();
        let limits = Limits::default();
        let router = signing.router(limits);
        let thread = std::thread::Builder::new()
            .name("sign-server".into())
            .spawn(move || server.run_router(router, limits, Stop::Channel(rx)))
            .map_err(io("starting the signing server"))?;
        Ok(World {
            phone_server: phone::Server {
                url: url.clone(),
                certificate_der: id.certificate_der.clone(),
            },
            dir,
            url,
            store,
            token,
            phone_sms,
            server_spool,
            phone_spool,
            relayed: 0,
            _sign: Running::new(tx, thread),
            _modems: workers,
        })
    }

    fn call(
        &self,
        b: Option<&Browser>,
        method: &str,
        path: &str,
        fields: Option<&[(&str, &str)]>,
    ) -> Result<Answer> {
        let body = fields.map(form);
        let mut headers = Vec::new();
        if let Some(b) = b {
            headers.push(("cookie", b.cookie.as_str()));
        }
        client::request_with(
            &self.url,
            method,
            path,
            &headers,
            body.as_deref()
                .map(|f| ("application/x-www-form-urlencoded", f.as_bytes())),
        )
        .map_err(|e| failed(&format!("{method} {path}"), e))
    }

    fn page(&self, b: &Browser, path: &str) -> Result<String> {
        let a = self.call(Some(b), "GET", path, None)?;
        ensure(a.status == 200, &format!("GET {path}: {}", a.status))?;
        Ok(String::from_utf8_lossy(&a.body).into_owned())
    }

    pub(super) fn login(&self) -> Result<Browser> {
        let a = self.call(
            None,
            "POST",
            "/login",
            Some(&[("user", USER), ("password", PASSWORD)]),
        )?;
        ensure(a.status == 303, &format!("log-in: {}", a.status))?;
        let cookie = a
            .header("set-cookie")
            .and_then(|c| c.split(';').next())
            .unwrap_or_default()
            .to_string();
        Ok(Browser { cookie })
    }

    /// Prepares and approves; returns the transaction id and the correlator the PC shows.
    pub(super) fn prepare_and_approve(
        &self,
        b: &Browser,
        amount: &str,
        summary: &str,
    ) -> Result<(String, String)> {
        let token = csrf(&self.page(b, "/")?).unwrap_or_default();
        let a = self.call(
            Some(b),
            "POST",
            "/transactions",
            Some(&[
                ("csrf", &token),
                ("amount", amount),
                ("currency", "EUR"),
                ("summary", summary),
                ("content", "Order 4711: 12 red roses, delivery Friday"),
            ]),
        )?;
        ensure(a.status == 303, &format!("prepare: {}", a.status))?;
        let tx = a
            .header("location")
            .and_then(|l| l.strip_prefix("/transactions/"))
            .unwrap_or_default()
            .to_string();
        let a = self.call(
            Some(b),
            "POST",
            &format!("/transactions/{tx}/approve"),
            Some(&[("csrf", &token)]),
        )?;
        ensure(a.status == 303, &format!("approve: {}", a.status))?;
        let page = self.page(b, &format!("/transactions/{tx}"))?;
        let correlator = element(&page, "correlator").unwrap_or_default();
        ensure(!correlator.is_empty(), "the PC page shows no correlator")?;
        Ok((tx, correlator))
    }

    fn state(&self, b: &Browser, tx: &str) -> Result<String> {
        Ok(element(&self.page(b, &format!("/transactions/{tx}"))?, "state").unwrap_or_default())
    }

    /// The network: carries what the server's modem submitted to the phone's inbox, then the
    /// phone's modem reads it. Returns the push texts that arrived.
    pub(super) fn deliver(&mut self) -> Result<Vec<String>> {
        let Some(phone_sms) = self.phone_sms.as_mut() else {
            return Ok(Vec::new());
        };
        let mut sent: Vec<PathBuf> = std::fs::read_dir(self.server_spool.join("sent"))
            .map(|d| d.flatten().map(|e| e.path()).collect())
            .unwrap_or_default();
        sent.retain(|p| p.extension().is_some_and(|e| e == "json"));
        sent.sort();
        let inbox = self.phone_spool.join("inbox");
        std::fs::create_dir_all(&inbox).map_err(io("the phone's inbox"))?;
        let fresh: Vec<PathBuf> = sent.into_iter().skip(self.relayed).collect();
        for (i, p) in fresh.iter().enumerate() {
            let v: Value = std::fs::read_to_string(p)
                .ok()
                .and_then(|t| serde_json::from_str(&t).ok())
                .unwrap_or_default();
            ensure(
                v["to"] == PHONE_NUMBER,
                &format!("the push went to {}", v["to"]),
            )?;
            let name = format!("push-{}", self.relayed + i);
            let tmp = inbox.join(format!("{name}.tmp"));
            std::fs::write(
                &tmp,
                json!({"from": SERVER_NUMBER, "text": v["text"]}).to_string(),
            )
            .map_err(io("the phone's inbox"))?;
            std::fs::rename(&tmp, inbox.join(format!("{name}.json")))
                .map_err(io("the phone's inbox"))?;
        }
        self.relayed += fresh.len();
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut texts = Vec::new();
        while texts.len() < fresh.len() {
            ensure(
                Instant::now() < deadline,
                "the push did not reach the phone",
            )?;
            for m in phone_sms
                .incoming()
                .map_err(|e| failed("the phone's modem", e))?
            {
                texts.extend(m.text);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(texts)
    }

    /// The PC page's long poll: the state once it is not awaiting_signature any more.
    pub(super) fn settled(&self, b: &Browser, tx: &str) -> Result<String> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let s = self.state(b, tx)?;
            if s != "awaiting_signature" || Instant::now() > deadline {
                return Ok(s);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

// The rounds `simlab sign bench` times: unused in a build without the bench.
#[cfg_attr(not(feature = "bench"), allow(dead_code))]
impl World {
    /// One whole transaction: prepare, approve, the push (if there are modems), the phone
    /// checks and signs, the PC page shows completed.
    pub(super) fn sign_round(&mut self, pc: &Browser) -> Result<()> {
        let (tx, code) = self.prepare_and_approve(pc, "42.50", "Flowers for Ada")?;
        if self.phone_sms.is_some() {
            let pushes = self.deliver()?;
            ensure(pushes.len() == 1, "one push")?;
        }
        let id: [u8; 16] = unhex(&tx)
            .and_then(|k| k.try_into().ok())
            .unwrap_or_default();
        let pin = pad_pin(TOKEN_PIN).unwrap_or_default();
        let o = phone::handle(
            &self.phone_server,
            &mut self.token,
            &id,
            Some(&code),
            &mut |_| Decision::Sign(pin),
        )
        .map_err(|e| failed("the phone", e))?;
        ensure(
            o.state == "completed",
            &format!("the server says {}", o.state),
        )?;
        let s = self.settled(pc, &tx)?;
        ensure(s == "completed", &format!("the PC page shows {s}"))
    }

    /// The token alone: `n` SIGNs over a request-sized message, per second.
    pub(super) fn token_signs(&mut self, n: usize) -> Result<f64> {
        let message = [0x42u8; 160];
        let start = Instant::now();
        for _ in 0..n {
            self.token.sign(&message)?;
        }
        Ok(n as f64 / start.elapsed().as_secs_f64())
    }
}

pub fn chapter(out: &Output, first: usize) -> Result<Value> {
    step(
        out,
        first,
        "Signing on the phone's token (seed 002): prepare on a PC, approve on the phone",
    );
    let mut w = World::start()?;
    say(
        out,
        &format!(
            "bank.example {} — its directory: {USER} → {PHONE_NUMBER} and the public key of the\n\
             phone's token. The server's modem {SERVER_NUMBER} and the phone's modem are virtual\n\
             modems on ptys, reached through the AT engine.",
            w.url
        ),
    );

    step(
        out,
        first + 1,
        "The PC logs in, prepares 42.50 EUR and approves; the push reaches the phone",
    );
    let pc = w.login()?;
    let (tx, correlator) = w.prepare_and_approve(&pc, "42.50", "Flowers for Ada")?;
    let pushes = w.deliver()?;
    ensure(pushes.len() == 1, "one push per approval")?;
    let (pushed_tx, code) = seed::parse_push(&pushes[0])
        .ok_or_else(|| failed("the push", "not a signature request"))?;
    ensure(
        hex(&pushed_tx) == tx && code == correlator,
        "the push names the transaction and its code",
    )?;
    say(
        out,
        &format!(
            "The PC page shows code {correlator} and waits (a long poll, no script).\n\
             The phone got: \"{}\" — no amount, no payee: it fetches the request itself.",
            pushes[0]
        ),
    );

    step(
        out,
        first + 2,
        "The phone checks, shows, and the token signs the exact bytes",
    );
    let pin = pad_pin(TOKEN_PIN).unwrap_or_default();
    let mut shown_text = String::new();
    let outcome = phone::handle(
        &w.phone_server,
        &mut w.token,
        &pushed_tx,
        Some(&code),
        &mut |s| {
            shown_text = format!(
                "The phone shows, decoded from the countersigned bytes: {} for {:?}, code {} — PIN entered.",
                s.amount_text, s.summary, s.correlator
            );
            Decision::Sign(pin)
        },
    )
    .map_err(|e| failed("the phone", e))?;
    say(out, &shown_text);
    ensure(
        outcome.shown.correlator == correlator,
        "the phone shows the PC's code",
    )?;
    ensure(
        outcome.state == "completed",
        &format!("the server says {}", outcome.state),
    )?;
    let page_state = w.settled(&pc, &tx)?;
    ensure(
        page_state == "completed",
        &format!("the PC page shows {page_state}"),
    )?;
    let key: [u8; 16] = unhex(&tx)
        .and_then(|k| k.try_into().ok())
        .unwrap_or_default();
    let row = w
        .store
        .tx(&key)
        .map_err(|e| failed("the store", e))?
        .ok_or_else(|| failed("the store", "the transaction is gone"))?;
    let user = w
        .store
        .user(USER)
        .map_err(|e| failed("the store", e))?
        .and_then(|u| u.public_key)
        .unwrap_or_default();
    let request = row.request.clone().unwrap_or_default();
    let signature = row.signature.clone().unwrap_or_default();
    ensure(
        simlab_services::pki::verify::p256_sha256(&user, &request, &signature),
        "the signature verifies with the directory's key",
    )?;
    say(
        out,
        &format!(
            "The server verified the signature with the directory's key (step 237); the PC page\n\
             now shows: {page_state}. {} request bytes, {} signature bytes on record.",
            request.len(),
            signature.len()
        ),
    );

    step(
        out,
        first + 3,
        "Saying no, and changing one's mind on the PC",
    );
    let (tx2, _) = w.prepare_and_approve(&pc, "900.00", "A used car")?;
    let pushes = w.deliver()?;
    let (pushed, code) = pushes
        .first()
        .and_then(|p| seed::parse_push(p))
        .ok_or_else(|| failed("the push", "missing"))?;
    let declined = phone::handle(
        &w.phone_server,
        &mut w.token,
        &pushed,
        Some(&code),
        &mut |_| Decision::Decline,
    )
    .map_err(|e| failed("the phone", e))?;
    ensure(declined.state == "declined", "the decline is recorded")?;
    let s2 = w.settled(&pc, &tx2)?;
    ensure(s2 == "declined", &format!("the PC page shows {s2}"))?;
    let (tx3, _) = w.prepare_and_approve(&pc, "15.00", "Cinema tickets")?;
    let token = csrf(&w.page(&pc, &format!("/transactions/{tx3}"))?).unwrap_or_default();
    let a = w.call(
        Some(&pc),
        "POST",
        &format!("/transactions/{tx3}/abort"),
        Some(&[("csrf", &token)]),
    )?;
    ensure(a.status == 303, "the abort")?;
    let pushes = w.deliver()?;
    let (pushed, code) = pushes
        .first()
        .and_then(|p| seed::parse_push(p))
        .ok_or_else(|| failed("the push", "missing"))?;
    let refused = phone::handle(
        &w.phone_server,
        &mut w.token,
        &pushed,
        Some(&code),
        &mut |_| Decision::Sign(pin),
    );
    ensure(
        refused.is_err(),
        "the phone does not sign an aborted transaction",
    )?;
    say(
        out,
        &format!(
            "900.00 EUR for \"A used car\": declined on the phone, the PC shows {s2}.\n\
             15.00 EUR: aborted on the PC; the phone, asked afterwards, refuses to sign ({}).",
            refused.err().map(|e| e.to_string()).unwrap_or_default()
        ),
    );
    Ok(json!({
        "transaction": tx,
        "correlator": correlator,
        "request_hex": hex(&request),
        "signature_der_hex": hex(&signature),
        "public_key_hex": hex(&user),
        "declined": tx2,
        "aborted": tx3,
    }))
}
