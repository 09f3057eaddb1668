//! `simlab demo roaming` (and a chapter of the full demo): seed 001 on loopback. Three
//! operators' MeC servers (Denmark visited, Norway home, Sweden another partner) over mutual
//! TLS with a roaming CA, a content provider in Copenhagen, a financial institution; a
//! Norwegian subscriber's phone (the simlab card model with its token) authenticates, signs end
//! to end (the CMS checked by openssl when it is installed), pays, and a number no partner
//! serves is refused. Every answer is checked; a failed check stops the demo with exit status 1.

use super::Output;
use super::demo::{ensure, failed, say, step};
use serde_json::{Value, json};
use simlab_applet::chv::pad_pin;
use simlab_card::error::{Error, Result};
use simlab_card::hex;
use simlab_card::profile::Profile;
use simlab_card::token::TokenSession;
use simlab_card::transport::Link;
use simlab_card::transport::inproc::InProcess;
use simlab_services::http::Role;
use simlab_services::http::client::{self, Url};
use simlab_services::http::server::{Handler, Limits, Server, Stop, blocking_router};
use simlab_services::http::tls::{ClientTls, Identity, ServerTls};
use simlab_services::pki::gateway::ca::Ca;
use simlab_services::pki::restrictions::{Restrictions, money};
use simlab_services::pki::x509::{self, Certificate};
use simlab_services::roaming::RequestType;
use simlab_services::roaming::keys::SigningKey;
use simlab_services::roaming::server::{Config, Mec, PARTNER_TIMEOUT};
use simlab_services::roaming::shop::{Order, shop};
use simlab_services::roaming::store::{Partner, Store};
use simlab_services::roaming::stubs::{Cp, Fi, with_location};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio::sync::oneshot;

const MSISDN: &str = "+4791234567";
const TOKEN_PIN: &str = "0000";
const DEMO_PROFILE: &str = include_str!("../../../../fixtures/cards/demo-usim.toml");

/// A server on a thread of its own, stopped (requests finished) when dropped.
pub struct Running {
    stop: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<std::io::Result<()>>>,
}

impl Running {
    pub fn new(
        stop: oneshot::Sender<()>,
        thread: std::thread::JoinHandle<std::io::Result<()>>,
    ) -> Running {
        Running {
            stop: Some(stop),
            thread: Some(thread),
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn run_server(server: Server, handler: Handler, name: &str) -> Result<Running> {
    let (tx, rx) = oneshot::channel();
    let limits = Limits::default();
    let router = with_location(blocking_router(handler, limits, name));
    let thread = std::thread::Builder::new()
        .name(format!("{name}-server"))
        .spawn(move || server.run_router(router, limits, Stop::Channel(rx)))
        .map_err(|source| Error::Io {
            context: "starting a server thread".into(),
            source,
        })?;
    Ok(Running {
        stop: Some(tx),
        thread: Some(thread),
    })
}

struct Roaming {
    dir: PathBuf,
    ca: Ca,
}

impl Roaming {
    fn issued(&self, role: Role, name: &str) -> Result<(Identity, Vec<u8>, SigningKey)> {
        let id = self
            .ca
            .issue_tls(role, name, &[], 86_400)
            .map_err(|e| failed("issuing a TLS certificate", e))?;
        let key = SigningKey::from_pkcs8(&id.key_pkcs8_der, name)
            .map_err(|e| failed("the peer key", e))?;
        let identity = Identity::from_der(
            id.certificate_der.clone(),
            id.key_pkcs8_der.to_vec(),
            vec![self.ca.certificate().der.clone()],
        );
        Ok((identity, id.certificate_der, key))
    }

    fn bind(&self, identity: &Identity, name: &str) -> Result<Server> {
        let tls = ServerTls::new(identity, &identity.ca).map_err(|e| failed("TLS", e))?;
        Server::bind("127.0.0.1:0", Some(tls), name).map_err(|source| Error::Io {
            context: "listening on loopback".into(),
            source,
        })
    }

    fn store(&self, name: &str) -> Result<Store> {
        Store::open(&self.dir.join(format!("{name}.sqlite"))).map_err(|e| failed("MeC store", e))
    }
}

pub struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn partner(
    name: &str,
    url: &str,
    country: &str,
    cc: &str,
    prefixes: &[&str],
    cert: &[u8],
) -> Partner {
    Partner {
        name: name.into(),
        url: url.into(),
        country: country.into(),
        country_code: cc.into(),
        prefixes: prefixes.iter().map(|p| p.to_string()).collect(),
        certificate_der: cert.to_vec(),
        request_types: RequestType::ALL.to_vec(),
    }
}

/// `openssl cms -verify` on `p7`, if openssl is installed: `Some(verified)`.
fn openssl_verifies(p7: &Path, ca: &Path, content: &[u8]) -> Option<bool> {
    let out_path = p7.with_extension("bin");
    let o = std::process::Command::new("openssl")
        .args(["cms", "-verify", "-inform", "DER", "-purpose", "any", "-in"])
        .arg(p7)
        .arg("-CAfile")
        .arg(ca)
        .arg("-out")
        .arg(&out_path)
        .output()
        .ok()?;
    Some(o.status.success() && std::fs::read(&out_path).ok().as_deref() == Some(content))
}

/// The chapter, its steps numbered from `first`; the JSON of what it showed.
/// Three MeC servers, a CP and an FI on loopback threads, and the phone's token: what the
/// demo chapter tells and what `mec bench` times.
pub struct World {
    pub cp_front: Url,
    pub trust: ClientTls,
    pub token: TokenSession,
    pub pin: [u8; simlab_applet::chv::PIN_LEN],
    pub operator: Ca,
    /// mec-dk, mec-no, mec-se, cp, fi.
    pub urls: [String; 5],
    pub dir: PathBuf,
    _servers: [Running; 5],
    _tmp: TempDir,
}

impl World {
    pub fn start() -> Result<World> {
        let tag = hex::encode(&simlab_card::random::bytes::<4>()?);
        let dir =
            std::env::temp_dir().join(format!("simlab-demo-roaming-{}-{tag}", std::process::id()));
        std::fs::create_dir_all(&dir).map_err(|source| Error::Io {
            context: format!("creating {}", dir.display()),
            source,
        })?;
        let _tmp = TempDir(dir.clone());
        let ca = Ca::load_or_create(&dir.join("roam-ca"), "roaming")
            .map_err(|e| failed("roaming CA", e))?;
        let w = Roaming {
            dir: dir.clone(),
            ca,
        };

        let (dk_id, dk_cert, dk_key) = w.issued(Role::Peer, "mec-dk")?;
        let (no_id, no_cert, no_key) = w.issued(Role::Peer, "mec-no")?;
        let (se_id, se_cert, se_key) = w.issued(Role::Peer, "mec-se")?;
        let (cp_id, _, _) = w.issued(Role::Seller, "cp-copenhagen")?;
        let (fi_id, _, _) = w.issued(Role::Server, "fi")?;
        let dk_server = w.bind(&dk_id, "mec-dk")?;
        let no_server = w.bind(&no_id, "mec-no")?;
        let se_server = w.bind(&se_id, "mec-se")?;
        let fi_server = w.bind(&fi_id, "fi")?;
        let cp_server = w.bind(&cp_id, "cp")?;
        let (dk_url, no_url, se_url) = (dk_server.url(), no_server.url(), se_server.url());
        let fi_url = fi_server.url();
        let cp_url = cp_server.url();
        let dk_store = w.store("dk")?;
        let no_store = w.store("no")?;
        let se_store = w.store("se")?;
        let err = |e| failed("the partner table", e);
        dk_store
            .add_partner(&partner(
                "mec-no",
                &no_url,
                "NO",
                "47",
                &["9", "4"],
                &no_cert,
            ))
            .map_err(err)?;
        dk_store
            .add_partner(&partner("mec-se", &se_url, "SE", "46", &[], &se_cert))
            .map_err(err)?;
        no_store
            .add_partner(&partner("mec-dk", &dk_url, "DK", "45", &[], &dk_cert))
            .map_err(err)?;
        se_store
            .add_partner(&partner("mec-dk", &dk_url, "DK", "45", &[], &dk_cert))
            .map_err(err)?;
        dk_store
            .add_cp("cp-copenhagen", &["card".into()])
            .map_err(|e| failed("the CP", e))?;

        let peer_tls = |id: &Identity| ClientTls {
            anchors: id.ca.clone(),
            identity: Some(id.clone()),
        };
        let mk = |name: &str, url: &str, id: &Identity, key: SigningKey, fi: Option<Url>| Config {
            name: name.into(),
            public_url: url.into(),
            client_tls: peer_tls(id),
            key,
            fi,
            partner_timeout: PARTNER_TIMEOUT,
            contract_ttl: 300,
        };
        let fi = Url::parse(&fi_url)
            .map_err(|e| failed("FI URL", e))?
            .with_tls(&peer_tls(&dk_id));
        let mec = |c, s| Mec::new(c, s).map(Arc::new).map_err(|e| failed("MeC", e));
        let dk = mec(mk("mec-dk", &dk_url, &dk_id, dk_key, Some(fi)), dk_store)?;
        let no = mec(mk("mec-no", &no_url, &no_id, no_key, None), no_store)?;
        let se = mec(mk("mec-se", &se_url, &se_id, se_key, None), se_store)?;
        let cp = Arc::new(Cp {
            mec: Url::parse(&dk_url)
                .map_err(|e| failed("MeC URL", e))?
                .with_tls(&peer_tls(&cp_id)),
        });
        let fi = Arc::new(Fi::new(false, Some(100_000)));

        // The phone: the subscriber's home operator certifies the token's key (seed 000 would do
        // it over the air; here its CA issues the certificate directly).
        let profile = Profile::parse(Path::new("fixtures/cards/demo-usim.toml"), DEMO_PROFILE)?;
        let mut token = TokenSession::open(Link::new(Box::new(InProcess::new(
            profile.build_card()?,
            "roaming phone",
        ))))?;
        let pin = pad_pin(TOKEN_PIN).unwrap_or_default();
        ensure(
            token.verify_pin(&pin)? == simlab_card::token::PinOutcome::Verified,
            "the token refused its PIN",
        )?;
        let public_key = token.generate_key(false)?;
        let operator = Ca::load_or_create(&dir.join("operator-no-ca"), "operator-no")
            .map_err(|e| failed("operator CA", e))?;
        let cert = operator
            .try_issue(
                &simlab_card::random::bytes::<16>()?,
                MSISDN,
                &public_key.0,
                simlab_services::pki::now(),
                &Restrictions::default(),
            )
            .map_err(|e| failed("certificate", e))?;
        let parsed = Certificate::from_der(&cert).map_err(|e| failed("certificate", e))?;
        // Registered at home only: Denmark and Sweden never learn the subscriber's keys.
        let no_handle = no.clone();
        no_handle
            .store()
            .add_subscriber(
                MSISDN,
                &parsed.public_key,
                Some(&cert),
                &["card".into(), "wallet".into()],
            )
            .map_err(|e| failed("subscriber", e))?;
        let _servers = [
            run_server(dk_server, Arc::new(move |r| dk.handle(r)), "mec-dk")?,
            run_server(no_server, Arc::new(move |r| no.handle(r)), "mec-no")?,
            run_server(se_server, Arc::new(move |r| se.handle(r)), "mec-se")?,
            run_server(fi_server, Arc::new(move |r| fi.handle(r)), "fi")?,
            run_server(cp_server, Arc::new(move |r| cp.handle(r)), "cp")?,
        ];
        let trust = ClientTls {
            anchors: vec![w.ca.certificate().der.clone().into()],
            identity: None,
        };
        let cp_front = Url::parse(&cp_url)
            .map_err(|e| failed("CP URL", e))?
            .with_tls(&trust);
        Ok(World {
            cp_front,
            trust,
            token,
            pin,
            operator,
            urls: [dk_url, no_url, se_url, cp_url, fi_url],
            dir,
            _servers,
            _tmp,
        })
    }
}

/// An order from the demo's subscriber.
pub fn order(request_type: RequestType, amount: u64, description: &str) -> Order {
    Order {
        msisdn: MSISDN.into(),
        request_type,
        amount,
        currency: "DKK".into(),
        description: description.into(),
        payment_method: None,
        sign_amount_plus_one: false,
    }
}

pub fn chapter(out: &Output, first: usize) -> Result<Value> {
    step(
        out,
        first,
        "Roaming (seed 001): three operators' m-commerce servers, a shop, a bank",
    );
    let mut w = World::start()?;
    say(
        out,
        &format!(
            "mec-dk {} (visited), mec-no {} (home of {MSISDN}), mec-se {}.\n\
             Denmark's partner table: mec-no +47 9…/4…, mec-se +46 (all numbers). Every link is\n\
             mutual TLS with peer certificates from one roaming CA; every roam message is signed.\n\
             Shop cp-copenhagen {} (accepts card); bank {}.",
            w.urls[0], w.urls[1], w.urls[2], w.urls[3], w.urls[4]
        ),
    );
    let (cp_front, trust, dir) = (w.cp_front.clone(), w.trust.clone(), w.dir.clone());
    let pin = w.pin;
    let token = &mut w.token;

    step(
        out,
        first + 1,
        "Authentication abroad: Denmark finds Norway from the number",
    );
    let auth = shop(
        &cp_front,
        &trust,
        token,
        &pin,
        &order(
            RequestType::Authentication,
            0,
            "Log in to Copenhagen Cinemas",
        ),
        &mut |l| say(out, l),
    )?;
    ensure(
        auth.cp["status"] == "success",
        "the CP did not see a success",
    )?;
    say(
        out,
        "Norway checked the token's signature over the contract; the shop learns only: success.",
    );

    step(
        out,
        first + 2,
        "End-to-end signature: the token signs, Norway wraps it in CMS",
    );
    let e2e = shop(
        &cp_front,
        &trust,
        token,
        &pin,
        &order(RequestType::E2eSignature, 0, "Lease, flat 4B, Nørrebro"),
        &mut |l| say(out, l),
    )?;
    let cms_hex = e2e.home["cms_der_hex"].as_str().unwrap_or("").to_string();
    ensure(!cms_hex.is_empty(), "no CMS came back")?;
    let p7 = dir.join("lease.p7");
    std::fs::write(&p7, hex::decode("cms", &cms_hex)?).map_err(|source| Error::Io {
        context: "writing the CMS".into(),
        source,
    })?;
    let operator_ca = dir.join("operator-no-ca").join("ca.pem");
    let verified = openssl_verifies(&p7, &operator_ca, &e2e.contract_bytes);
    match verified {
        Some(ok) => {
            ensure(ok, "openssl cms -verify refused the CMS")?;
            say(
                out,
                "openssl cms -verify: Verification successful, and the content is the contract's bytes.",
            );
        }
        None => say(
            out,
            "(openssl is not installed: the CMS is in the JSON output for later.)",
        ),
    }

    step(
        out,
        first + 3,
        "A payment: common methods, the PIN, an authorization, the bank",
    );
    let paid = shop(
        &cp_front,
        &trust,
        token,
        &pin,
        &order(RequestType::Payment, 12_900, "Concert ticket, Vega"),
        &mut |l| say(out, l),
    )?;
    let receipt = paid.home["visited"].clone();
    ensure(receipt["status"] == "paid", "the payment was not paid")?;
    ensure(
        receipt["home_recorded"] == "paid",
        "step 21 did not reach home",
    )?;
    say(
        out,
        &format!(
            "Paid {} by card: the bank's reference {}, Norway booked it (step 21), receipt (22).",
            money(12_900, "DKK"),
            receipt["fi_reference"].as_str().unwrap_or("?")
        ),
    );

    step(out, first + 4, "A number no partner serves");
    let stranger = "+4712345678";
    let answer = client::request(
        &cp_front,
        "POST",
        "/checkout",
        Some(
            json!({"msisdn": stranger, "request_type": "authentication", "currency": "DKK"})
                .to_string()
                .as_bytes(),
        ),
    )
    .map_err(|e| failed("checkout", e))?;
    let v: Value = serde_json::from_slice(&answer.body).unwrap_or_default();
    ensure(
        answer.status == 404 && v["error"] == "home_not_found",
        "a number no partner serves was not refused",
    )?;
    say(
        out,
        &format!(
            "{stranger}: +47 but prefix 1, which no partner lists → 404 home_not_found; no contract made."
        ),
    );
    Ok(json!({
        "authentication": auth.cp,
        "e2e_contract_hex": hex::encode(&e2e.contract_bytes),
        "cms_der_hex": cms_hex,
        "operator_ca_pem": x509::pem_certificate(&w.operator.certificate().der),
        "openssl_verified": verified,
        "payment_receipt": receipt,
        "home_not_found": stranger,
    }))
}
