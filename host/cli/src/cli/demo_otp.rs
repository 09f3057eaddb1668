//! `simlab demo otp` (and a chapter of the full demo): seed 004 on loopback. The OTP service
//! with its directory and stored limit, the bank stub, and a virtual modem on a real pty as the
//! second channel; terminal A logs in and pays, and the phone's side is read from the virtual
//! modem's spool (what its SIM would have received). Every answer is checked; a failed check
//! stops the demo with exit status 1.

use super::Output;
use super::demo::{ensure, failed, say, step};
use super::demo_roaming::Running;
use serde_json::{Value, json};
use simlab_card::error::{Error, Result};
use simlab_card::profile::Profile;
use simlab_emulate::card::EmulatedCard;
use simlab_emulate::modem::{DEFAULT_SIM, Loopback, Options, Pty, VirtualModem};
use simlab_modem::OpenOptions;
use simlab_modem::backend::AtBackend;
use simlab_services::http::Role;
use simlab_services::http::client::{self, Url};
use simlab_services::http::server::{Handler, Limits, Server, Stop, blocking_router};
use simlab_services::http::tls::{ClientTls, Identity, ServerTls};
use simlab_services::otp::bank::Bank;
use simlab_services::otp::service::{Config, MacKey, OtpService, Rate};
use simlab_services::otp::store::{Entry, Store};
use simlab_services::pki::gateway::ca::Ca;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

const U1: &str = "u1";
const U1_NUMBER: &str = "+491700000099";
const SERVICE_NUMBER: &str = "+491609999000";
const LIMIT: u64 = 10_000;

pub(super) fn io(context: &str) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |source| Error::Io {
        context: context.into(),
        source,
    }
}

fn serve(server: Server, handler: Handler, name: &str) -> Result<Running> {
    let (tx, rx) = oneshot::channel();
    let limits = Limits::default();
    let router = blocking_router(handler, limits, name);
    let thread = std::thread::Builder::new()
        .name(format!("{name}-server"))
        .spawn(move || server.run_router(router, limits, Stop::Channel(rx)))
        .map_err(io("starting a server thread"))?;
    Ok(Running::new(tx, thread))
}

/// A thread that stops (and is joined) when dropped.
pub(super) struct Worker {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for Worker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The second channel the OTP server sends its codes over.
pub(super) enum Channel {
    /// A virtual modem on a real pty, through the AT engine: what the phone got is read back
    /// from the modem's spool.
    Modem,
    /// No I/O at all (the server alone, for `scripts/bench otp`): each body is encoded as for
    /// a modem, then kept here for the bench to read the code off.
    #[cfg(feature = "bench")]
    Capture(Arc<std::sync::Mutex<Vec<String>>>),
}

/// A backend that does what [`NullBackend`](simlab_modem::backend::NullBackend) does and keeps
/// the bodies: the null one forgets the code, which a benchmark of validated transactions needs.
#[cfg(feature = "bench")]
struct Capture {
    null: simlab_modem::backend::NullBackend,
    bodies: Arc<std::sync::Mutex<Vec<String>>>,
}

#[cfg(feature = "bench")]
impl simlab_modem::backend::SmsBackend for Capture {
    fn send(
        &mut self,
        to: &simlab_sms::Address,
        body: &str,
        options: &simlab_modem::backend::SendOptions,
    ) -> std::result::Result<simlab_modem::backend::Receipt, simlab_modem::backend::BackendError>
    {
        let receipt = self.null.send(to, body, options)?;
        if let Ok(mut b) = self.bodies.lock() {
            b.push(body.to_string());
        }
        Ok(receipt)
    }

    fn send_data(
        &mut self,
        to: &simlab_sms::Address,
        data: &[u8],
        options: &simlab_modem::backend::SendOptions,
    ) -> std::result::Result<simlab_modem::backend::Receipt, simlab_modem::backend::BackendError>
    {
        self.null.send_data(to, data, options)
    }

    fn incoming(
        &mut self,
    ) -> std::result::Result<
        Vec<simlab_modem::backend::Incoming>,
        simlab_modem::backend::BackendError,
    > {
        self.null.incoming()
    }

    fn describe(&self) -> String {
        "capture (no I/O)".into()
    }
}

pub(super) struct World {
    dir: PathBuf,
    url: Url,
    clock: Arc<AtomicI64>,
    spool: PathBuf,
    service: Arc<OtpService>,
    // Dropped in this order: the poller, the servers, then the modem.
    _poller: Worker,
    _otp: Running,
    _bank: Running,
    _modem: Option<Worker>,
}

impl Drop for World {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

pub(super) fn identity(ca: &Ca, role: Role, name: &str) -> Result<Identity> {
    let id = ca
        .issue_tls(role, name, &[], 86_400)
        .map_err(|e| failed("issuing a TLS certificate", e))?;
    Ok(Identity::from_der(
        id.certificate_der.clone(),
        id.key_pkcs8_der.to_vec(),
        vec![ca.certificate().der.clone()],
    ))
}

pub(super) fn bind(identity: &Identity, name: &str) -> Result<Server> {
    let tls = ServerTls::new(identity, &identity.ca).map_err(|e| failed("TLS", e))?;
    Server::bind("127.0.0.1:0", Some(tls), name).map_err(io("listening on loopback"))
}

/// A virtual modem on a new pty at `link`, with the built-in SIM and `own_number`, spooling
/// what it sends (and taking what the demo drops in its inbox).
pub(super) fn start_modem(link: &Path, spool: &Path, own_number: &str) -> Result<Worker> {
    let profile = Profile::parse(Path::new("(built-in modem SIM)"), DEFAULT_SIM)?;
    let card = EmulatedCard::new(profile.build_card()?, None, None)?;
    let pty = Pty::open(Some(link)).map_err(io("creating the modem's pty"))?;
    let mut modem = VirtualModem::new(
        card,
        Options {
            spool: Some(spool.to_path_buf()),
            loopback: Loopback::None,
            own_number: Some(own_number.into()),
            ..Options::default()
        },
        None,
    );
    let modem_stop = Arc::new(AtomicBool::new(false));
    let modem_thread = {
        let stop = modem_stop.clone();
        std::thread::Builder::new()
            .name("virtual-modem".into())
            .spawn(move || {
                let _ = modem.serve(pty, &stop, &mut |_| {});
            })
            .map_err(io("starting the virtual modem"))?
    };
    Ok(Worker {
        stop: modem_stop,
        thread: Some(modem_thread),
    })
}

impl World {
    fn start() -> Result<World> {
        let demo = Rate {
            count: 20,
            window: 600,
        };
        World::start_with(Channel::Modem, demo)
    }

    /// The service, the bank and the second channel; `rate` bounds both sessions per
    /// identifier and codes per number.
    pub(super) fn start_with(channel: Channel, rate: Rate) -> Result<World> {
        let dir = std::env::temp_dir().join(format!(
            "simlab-demo-otp-{}-{}",
            std::process::id(),
            simlab_services::pki::now()
        ));
        std::fs::create_dir_all(&dir).map_err(io("creating the demo directory"))?;
        let ca = Ca::load_or_create(&dir.join("ca"), "simlab otp demo")
            .map_err(|e| failed("the demo CA", e))?;
        let otp_id = identity(&ca, Role::Peer, "otp")?;
        let bank_id = identity(&ca, Role::Server, "bank")?;

        // The bank approves up to 500.00.
        let bank_server = bind(&bank_id, "bank")?;
        let bank_url = Url::parse(&bank_server.url())
            .map_err(|e| failed("bank URL", e))?
            .with_tls(&ClientTls {
                anchors: vec![ca.certificate().der.clone().into()],
                identity: Some(otp_id.clone()),
            });
        let bank = Arc::new(Bank::new(false, Some(50_000)));
        let bank_run = serve(bank_server, Arc::new(move |r| bank.handle(r)), "bank")?;

        // The second channel: a virtual modem on a pty, its spool standing for the phone.
        let spool = dir.join("spool");
        let link = dir.join("modem");
        let modem_worker = match channel {
            Channel::Modem => Some(start_modem(&link, &spool, SERVICE_NUMBER)?),
            #[cfg(feature = "bench")]
            Channel::Capture(_) => None,
        };

        let store = Store::open(&dir.join("otp.sqlite").to_string_lossy())
            .map_err(|e| failed("the OTP store", e))?;
        store
            .add_entry(&Entry {
                identifier: U1.into(),
                msisdn: U1_NUMBER.into(),
                bank: Some("demo-bank".into()),
                card: Some("card-0001".into()),
                added_at: simlab_services::pki::now() as i64,
            })
            .map_err(|e| failed("the directory", e))?;
        store
            .set_limit(Some(LIMIT))
            .map_err(|e| failed("the policy", e))?;
        let key = MacKey::load_or_create(&dir.join("otp.key")).map_err(|e| failed("key", e))?;
        let sms: Box<dyn simlab_modem::backend::SmsBackend> = match channel {
            Channel::Modem => Box::new(
                AtBackend::open(&link, OpenOptions::default())
                    .map_err(|e| failed("opening the virtual modem", e))?,
            ),
            #[cfg(feature = "bench")]
            Channel::Capture(bodies) => Box::new(Capture {
                null: Default::default(),
                bodies,
            }),
        };
        let clock = Arc::new(AtomicI64::new(0));
        let offset = clock.clone();
        let config = Config {
            key,
            code_ttl: Duration::from_secs(300),
            digits: 6,
            session_ttl: 900,
            sessions: rate,
            codes: rate,
            bank: Some(bank_url),
            lookup: None,
            clock: Arc::new(move || {
                simlab_services::pki::now() as i64 + offset.load(Ordering::Relaxed)
            }),
        };
        let service = Arc::new(OtpService::new(config, store, sms));
        let otp_server = bind(&otp_id, "otp")?;
        let url = Url::parse(&otp_server.url())
            .map_err(|e| failed("OTP URL", e))?
            .with_tls(&ClientTls {
                anchors: vec![ca.certificate().der.clone().into()],
                identity: None,
            });
        let handler = {
            let s = service.clone();
            Arc::new(move |r: &_| s.handle(r))
        };
        let otp_run = serve(otp_server, handler, "otp")?;
        let poll_stop = Arc::new(AtomicBool::new(false));
        let poller = {
            let (s, stop) = (service.clone(), poll_stop.clone());
            std::thread::Builder::new()
                .name("otp-poll".into())
                .spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        s.poll();
                        std::thread::sleep(Duration::from_millis(100));
                    }
                })
                .map_err(io("starting the SMS poller"))?
        };
        Ok(World {
            dir,
            url,
            clock,
            spool,
            service,
            _poller: Worker {
                stop: poll_stop,
                thread: Some(poller),
            },
            _otp: otp_run,
            _bank: bank_run,
            _modem: modem_worker,
        })
    }

    fn call(&self, method: &str, path: &str, body: Option<Value>) -> Result<(u16, Value)> {
        let bytes = body.map(|b| b.to_string().into_bytes());
        let a = client::request(&self.url, method, path, bytes.as_deref())
            .map_err(|e| failed("terminal A", e))?;
        Ok((
            a.status,
            serde_json::from_slice(&a.body).unwrap_or(Value::Null),
        ))
    }

    pub(super) fn session(&self) -> Result<String> {
        let (status, v) = self.call("POST", "/v1/sessions", Some(json!({"identifier": U1})))?;
        ensure(status == 201, &format!("opening a session: {v}"))?;
        Ok(v["session"].as_str().unwrap_or_default().to_string())
    }

    /// The SMS the phone got: the n-th message the service's modem sent.
    pub(super) fn sms(&self, n: usize) -> Result<Value> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let mut files: Vec<PathBuf> = std::fs::read_dir(self.spool.join("sent"))
                .map(|d| d.flatten().map(|e| e.path()).collect())
                .unwrap_or_default();
            files.retain(|p| p.extension().is_some_and(|e| e == "json"));
            files.sort();
            if let Some(f) = files.get(n) {
                let text = std::fs::read_to_string(f).map_err(io("reading the spool"))?;
                return serde_json::from_str(&text).map_err(|e| failed("the spool", e));
            }
            if Instant::now() > deadline {
                return Err(failed("the phone", format!("no SMS #{}", n + 1)));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub(super) fn sent(&self) -> usize {
        std::fs::read_dir(self.spool.join("sent"))
            .map(|d| {
                d.flatten()
                    .filter(|e| e.path().extension().is_some_and(|x| x == "json"))
                    .count()
            })
            .unwrap_or(0)
    }

    pub(super) fn pay(
        &self,
        session: &str,
        amount: u64,
        payee: &str,
        reverse: bool,
    ) -> Result<(u16, Value)> {
        self.call(
            "POST",
            &format!("/v1/sessions/{session}/payments"),
            Some(json!({
                "amount": amount, "currency": "EUR", "payee": payee,
                "items": [{"product": "Concert ticket", "quantity": 2}],
                "direction": if reverse { "reverse" } else { "sms" },
            })),
        )
    }

    pub(super) fn confirm(
        &self,
        session: &str,
        tx: &str,
        code: &str,
        amount: u64,
        payee: &str,
    ) -> Result<(u16, Value)> {
        self.call(
            "POST",
            &format!("/v1/sessions/{session}/transactions/{tx}/confirm"),
            Some(json!({
                "code": code, "amount": amount, "currency": "EUR", "payee": payee,
                "items": [{"product": "Concert ticket", "quantity": 2}],
            })),
        )
    }
}

/// The six digits of an SMS body (what the person reads off the phone).
pub(super) fn code_of(sms: &Value) -> String {
    sms["text"]
        .as_str()
        .unwrap_or_default()
        .split(|c: char| !c.is_ascii_digit())
        .find(|run| run.len() == 6)
        .unwrap_or_default()
        .to_string()
}

fn cause(v: &Value) -> String {
    v["error"].as_str().unwrap_or("?").to_string()
}

pub fn chapter(out: &Output, first: usize) -> Result<Value> {
    step(
        out,
        first,
        "One-time secrets over a second channel (seed 004): an OTP server, a bank, a modem",
    );
    let w = World::start()?;
    say(
        out,
        &format!(
            "Directory: {U1} → {U1_NUMBER}; payments greater than 100.00 EUR need a code; the bank approves up to 500.00."
        ),
    );
    let mut sms_count = 0;

    let s = w.session()?;
    let (status, v) = w.call("POST", &format!("/v1/sessions/{s}/login"), None)?;
    ensure(status == 201, &format!("login: {v}"))?;
    let login_sms = w.sms(sms_count)?;
    sms_count += 1;
    let tx = v["transaction"].as_str().unwrap_or_default();
    let (status, ok) = w.call(
        "POST",
        &format!("/v1/sessions/{s}/transactions/{tx}/confirm"),
        Some(json!({"code": code_of(&login_sms)})),
    )?;
    ensure(
        status == 200 && ok["access"] == "granted",
        &format!("login code: {ok}"),
    )?;
    say(
        out,
        &format!(
            "Login: a code went to {} (the answer names no more of the number), typed back: access granted.",
            v["sent_to"].as_str().unwrap_or("")
        ),
    );

    let (status, v) = w.pay(&s, 8_000, "Corner Shop", false)?;
    ensure(
        status == 201 && v["mode"] == "normal" && w.sent() == sms_count,
        &format!("a payment under the limit: {v}"),
    )?;
    say(
        out,
        "80.00 EUR to Corner Shop: not greater than the limit, validated in one step, no SMS.",
    );

    let (status, v) = w.pay(&s, 15_000, "ACME Shop", false)?;
    ensure(
        status == 201 && v["mode"] == "secured",
        &format!("a payment over the limit: {v}"),
    )?;
    let sms = w.sms(sms_count)?;
    sms_count += 1;
    let text = sms["text"].as_str().unwrap_or_default().to_string();
    ensure(
        text.contains("150.00 EUR") && text.contains("ACME Shop"),
        &format!("the SMS shows the payment: {text}"),
    )?;
    let tx = v["transaction"].as_str().unwrap_or_default().to_string();
    let code = code_of(&sms);
    say(
        out,
        &format!(
            "150.00 EUR to ACME Shop: the phone shows \"{}\" (TP-VP {} s).",
            text.replace(&code, "······"),
            sms["validity_seconds"]
        ),
    );
    let wrong = if code == "000000" { "000001" } else { "000000" };
    let (status, v) = w.confirm(&s, &tx, wrong, 15_000, "ACME Shop")?;
    ensure(
        status == 403 && cause(&v) == "wrong_code",
        &format!("a wrong code: {v}"),
    )?;
    say(
        out,
        &format!(
            "A wrong code: refused, {}.",
            v["detail"].as_str().unwrap_or("")
        ),
    );
    let (status, v) = w.confirm(&s, &tx, &code, 15_001, "ACME Shop")?;
    ensure(
        status == 422 && cause(&v) == "mismatch",
        &format!("an altered amount: {v}"),
    )?;
    say(out, "The right code for 150.01 EUR: refused, mismatch.");
    let (status, v) = w.confirm(&s, &tx, &code, 15_000, "ACME Shop")?;
    ensure(
        status == 200 && v["status"] == "validated",
        &format!("the right code: {v}"),
    )?;
    say(
        out,
        "The right code for exactly what the SMS showed: validated.",
    );

    let (status, v) = w.pay(&s, 12_000, "ACME Shop", false)?;
    ensure(status == 201, &format!("another payment: {v}"))?;
    let late = w.sms(sms_count)?;
    sms_count += 1;
    w.clock.store(301, Ordering::Relaxed);
    let tx = v["transaction"].as_str().unwrap_or_default();
    let (status, v) = w.confirm(&s, tx, &code_of(&late), 12_000, "ACME Shop")?;
    ensure(
        status == 410 && cause(&v) == "expired",
        &format!("an expired code: {v}"),
    )?;
    w.clock.store(0, Ordering::Relaxed);
    say(
        out,
        "A code typed 301 s after it was sent: refused, expired.",
    );

    let (status, v) = w.pay(&s, 90_000, "Car Dealer", false)?;
    ensure(
        status == 402 && cause(&v) == "bank_declined" && w.sent() == sms_count,
        &format!("a declined payment: {v}"),
    )?;
    say(
        out,
        "900.00 EUR to Car Dealer: the bank declines, and nothing is sent.",
    );

    let (status, v) = w.pay(&s, 20_000, "ACME Shop", true)?;
    ensure(
        status == 201 && v["mode"] == "reverse",
        &format!("reverse: {v}"),
    )?;
    let reverse_code = v["code"].as_str().unwrap_or_default().to_string();
    let tx = v["transaction"].as_str().unwrap_or_default().to_string();
    let inbox = w.spool.join("inbox");
    std::fs::create_dir_all(&inbox).map_err(io("the modem's inbox"))?;
    let tmp = inbox.join("reply.tmp");
    std::fs::write(
        &tmp,
        json!({"from": U1_NUMBER, "text": reverse_code}).to_string(),
    )
    .map_err(io("the modem's inbox"))?;
    std::fs::rename(&tmp, inbox.join("reply.json")).map_err(io("the modem's inbox"))?;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (_, st) = w.call("GET", &format!("/v1/sessions/{s}/transactions/{tx}"), None)?;
        if st["status"] == "validated" {
            break;
        }
        ensure(Instant::now() < deadline, &format!("the SMS back: {st}"))?;
        std::thread::sleep(Duration::from_millis(50));
    }
    say(
        out,
        "Reverse direction: terminal A shows a code, the phone sends it back by SMS from +49…99: validated.",
    );
    let (status, _) = w.call("DELETE", &format!("/v1/sessions/{s}"), None)?;
    ensure(status == 200, "closing the session")?;

    let register = w
        .service
        .store()
        .register(U1)
        .map_err(|e| failed("the register", e))?;
    let total: u64 = register.iter().map(|(_, t)| t).sum();
    ensure(
        total == 8_000 + 15_000 + 20_000,
        &format!("the register: {register:?}"),
    )?;
    let log = w
        .service
        .store()
        .log(Some(U1))
        .map_err(|e| failed("the log", e))?;
    say(
        out,
        &format!(
            "u1's register: {}; the log holds {} certificates (states and outcomes, no code).",
            simlab_services::otp::format_amount(total, "EUR"),
            log.len()
        ),
    );
    Ok(json!({
        "register": total,
        "certificates": log.len(),
        "sms_sent": sms_count,
    }))
}
