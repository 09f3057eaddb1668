//! The mobile station certificate acquisition module (seed 000, figure 3): messages 210–260
//! from the phone's side, with the token applet on the subscriber's card doing the secret
//! part — it runs A3/A8 (or AKA) itself, derives K, checks M1 before it releases anything,
//! computes M2, and stores the certificate only if M3 is right. Kc, CK, IK and K never leave
//! the card; this module sees RANDs, MACs, SRES and the public key.
//!
//! Abort paths: a wrong M1 (operation 350: a forged gateway, the card released nothing), a
//! certificate that does not certify what was asked (before the card is told anything), and
//! a wrong M3 (operation 410: the card refuses the certificate).

use crate::http::client::{self, ClientError, Url};
use crate::pki::messages::{
    AuthPath, BeginRequest, BeginResponse, FinishRequest, FinishResponse, ResyncRequest,
};
use crate::pki::restrictions::Restrictions;
use crate::pki::x509::Certificate;
use simlab_applet::token::bootstrap::{self as boot, MAC_LEN};
use simlab_card::error::Error;
use simlab_card::hex;
use simlab_card::token::{BootstrapOutcome, PublicKey, TokenSession};
use std::fmt;

/// How far the certificate's notBefore may be from this clock.
const CLOCK_SKEW: u64 = 300;

/// What to ask the gateway for.
#[derive(Clone, Debug)]
pub struct EnrollRequest {
    pub gateway: Url,
    pub path: AuthPath,
    pub restrictions: Restrictions,
    pub alias: String,
    /// The gateway CA to trust; without one, the CA certificate the gateway sends in 260.
    pub ca: Option<Certificate>,
}

/// A certificate obtained, and the conversation that obtained it (no secrets in it: MACs,
/// RANDs and SRES travel in clear anyway).
#[derive(Clone, Debug)]
pub struct Enrollment {
    pub sid: [u8; 16],
    pub imsi: String,
    pub path: AuthPath,
    pub rands: Vec<[u8; 16]>,
    pub m1: [u8; MAC_LEN],
    pub responses: Vec<u8>,
    pub m2: [u8; MAC_LEN],
    pub m3: [u8; MAC_LEN],
    pub public_key: PublicKey,
    pub certificate: Certificate,
    pub gateway_certificate: Certificate,
    /// Whether the card had to resynchronise its SQN with the AuC first (USIM path).
    pub resynchronised: bool,
}

/// Why enrollment stopped.
#[derive(Debug)]
pub enum MsError {
    /// The gateway could not be reached, refused, or answered nonsense.
    Gateway(ClientError),
    /// The gateway failed to prove it holds K: `which` is "M1" or "M3". Seed 000 operations
    /// 350 and 410 — the gateway is impersonated or the message was altered.
    ForgedGateway { which: &'static str, detail: String },
    /// The certificate does not certify what was asked, or not by the expected CA.
    BadCertificate(String),
    /// The card failed or refused (PIN, no key, transport).
    Card(Error),
}

impl fmt::Display for MsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MsError::Gateway(e) => write!(f, "gateway: {e}"),
            MsError::ForgedGateway { which, detail } => write!(
                f,
                "aborted: the gateway failed to prove it holds K ({which} is wrong): {detail}"
            ),
            MsError::BadCertificate(why) => write!(f, "aborted: bad certificate: {why}"),
            MsError::Card(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for MsError {}

impl From<MsError> for Error {
    /// A refusal or a failed check is exit 1; an unreachable gateway is an I/O failure.
    fn from(e: MsError) -> Self {
        match e {
            MsError::Card(e) => e,
            other => Error::Mismatch {
                what: other.to_string(),
            },
        }
    }
}

fn malformed(what: &str) -> MsError {
    MsError::Gateway(ClientError::Malformed {
        addr: "gateway".into(),
        reason: format!("malformed {what}"),
    })
}

/// Whether a token error is its "M1/M3 wrong" refusal.
fn gateway_auth_failed(e: &Error) -> bool {
    matches!(e, Error::Refused { status, .. } if *status == simlab_applet::token::sw::GATEWAY_AUTH_FAILED)
}

/// The card's part of 240 → 250.
struct Challenge {
    rands: Vec<[u8; 16]>,
    autn: Option<[u8; 16]>,
    impi: Vec<u8>,
    naf_id: Vec<u8>,
    m1: [u8; MAC_LEN],
}

fn challenge(path: AuthPath, m: &BeginResponse) -> Result<Challenge, MsError> {
    let rands = m
        .rands
        .iter()
        .map(|r| hex::decode_fixed::<16>("rand", r).map_err(|_| malformed("RAND")))
        .collect::<Result<Vec<_>, _>>()?;
    let m1 = hex::decode_fixed::<MAC_LEN>("m1", &m.m1).map_err(|_| malformed("M1"))?;
    if m.path != path {
        return Err(malformed("240 (another path than asked)"));
    }
    match path {
        AuthPath::Gsm => {
            if !(boot::MIN_RANDS..=boot::MAX_RANDS).contains(&rands.len()) {
                return Err(malformed("240 (2 to 4 RANDs expected)"));
            }
            Ok(Challenge {
                rands,
                autn: None,
                impi: Vec::new(),
                naf_id: Vec::new(),
                m1,
            })
        }
        AuthPath::Usim => {
            if rands.len() != 1 {
                return Err(malformed("240 (one RAND expected)"));
            }
            let autn = m
                .autn
                .as_deref()
                .and_then(|a| hex::decode_fixed::<16>("autn", a).ok())
                .ok_or_else(|| malformed("AUTN"))?;
            let impi = m
                .impi
                .clone()
                .ok_or_else(|| malformed("IMPI"))?
                .into_bytes();
            let naf_id = m
                .naf_id
                .as_deref()
                .and_then(|n| hex::decode("naf_id", n).ok())
                .ok_or_else(|| malformed("NAF_Id"))?;
            Ok(Challenge {
                rands,
                autn: Some(autn),
                impi,
                naf_id,
                m1,
            })
        }
    }
}

/// Checks that `cert` certifies exactly what was asked, by the trusted CA.
pub fn check_certificate(
    cert: &Certificate,
    ca: &Certificate,
    public_key: &PublicKey,
    req: &EnrollRequest,
    now: u64,
) -> Result<(), MsError> {
    let bad = |why: &str| Err(MsError::BadCertificate(why.to_string()));
    cert.check_issued_by(ca)
        .map_err(|e| MsError::BadCertificate(e.to_string()))?;
    if cert.public_key != public_key.0 {
        return bad("it certifies another public key than the token's");
    }
    if cert.restrictions.as_ref() != Some(&req.restrictions) {
        return bad("its restrictions are not the ones asked for");
    }
    let cn = if req.alias.is_empty() {
        crate::pki::gateway::bootstrap::ANONYMOUS_CN
    } else {
        &req.alias
    };
    if cert.subject_common_name.as_deref() != Some(cn) {
        return bad("its subject is not the alias asked for");
    }
    if cert.is_ca {
        return bad("it is a CA certificate");
    }
    if cert.not_before.abs_diff(now) > CLOCK_SKEW
        || cert.not_after.checked_sub(cert.not_before) != Some(req.restrictions.validity_seconds)
    {
        return bad("its validity period is not the one asked for");
    }
    Ok(())
}

/// Obtains a certificate for the token's key (messages 210–260). The token PIN must be
/// verified and the token must have a key; `imsi` is read from the SIM by the caller.
/// `progress` hears each step in words.
pub fn enroll(
    token: &mut TokenSession,
    imsi: &str,
    req: &EnrollRequest,
    progress: &mut dyn FnMut(&str),
) -> Result<Enrollment, MsError> {
    let public_key = token.public_key().map_err(MsError::Card)?.ok_or_else(|| {
        MsError::Card(Error::Mismatch {
            what: "the token has no key yet (run `simlab token keygen`)".into(),
        })
    })?;
    let restrictions = req.restrictions.to_der();
    let sid = simlab_card::random::bytes::<16>().map_err(MsError::Card)?;
    progress(&format!(
        "210 → gateway: SID {}, IMSI {imsi}, {} path",
        hex::encode(&sid),
        req.path.name()
    ));
    let mut m240: BeginResponse = client::post_json(
        &req.gateway,
        "/v1/bootstrap/begin",
        &BeginRequest {
            sid: hex::encode(&sid),
            imsi: imsi.to_string(),
            path: req.path,
        },
    )
    .map_err(MsError::Gateway)?;
    let mut resynchronised = false;
    let (c, responses, m2) = loop {
        let c = challenge(req.path, &m240)?;
        progress(&format!(
            "240 ← gateway: {} RAND{}, M1 {}…",
            c.rands.len(),
            if c.rands.len() == 1 { "" } else { "s" },
            &m240.m1[..16]
        ));
        let request = match req.path {
            AuthPath::Gsm => {
                boot::BeginRequest::gsm(&c.rands, c.m1, &restrictions, req.alias.as_bytes())
                    .ok_or_else(|| malformed("240"))?
            }
            AuthPath::Usim => boot::BeginRequest::aka(
                c.rands[0],
                c.autn.unwrap_or_default(),
                &c.impi,
                &c.naf_id,
                c.m1,
                &restrictions,
                req.alias.as_bytes(),
            ),
        };
        match token.bootstrap_begin(&request) {
            Ok(BootstrapOutcome::Accepted {
                responses,
                public_key: pk,
                m2,
            }) => {
                if pk != public_key {
                    return Err(MsError::Card(Error::Mismatch {
                        what: "the token MACed another public key than it reports".into(),
                    }));
                }
                break (c, responses, m2);
            }
            Ok(BootstrapOutcome::SyncFailure { auts }) if !resynchronised => {
                progress(
                    "the USIM's sequence number is ahead of the AuC's: resynchronising with AUTS",
                );
                resynchronised = true;
                m240 = client::post_json(
                    &req.gateway,
                    "/v1/bootstrap/resync",
                    &ResyncRequest {
                        sid: hex::encode(&sid),
                        auts: hex::encode(&auts),
                    },
                )
                .map_err(MsError::Gateway)?;
            }
            Ok(BootstrapOutcome::SyncFailure { .. }) => {
                return Err(malformed(
                    "240 (still out of sequence after resynchronisation)",
                ));
            }
            Err(e) if gateway_auth_failed(&e) => {
                return Err(MsError::ForgedGateway {
                    which: "M1",
                    detail: "the card computed another M1 from its own Kc; it released no SRES, key or M2".into(),
                });
            }
            Err(e) => return Err(MsError::Card(e)),
        }
    };
    progress(&format!(
        "the token checked M1, ran {} itself and computed M2",
        match req.path {
            AuthPath::Gsm => "A3/A8",
            AuthPath::Usim => "AKA",
        }
    ));
    progress(&format!(
        "250 → gateway: SRES/RES {}, public key, restrictions, alias {:?}, M2 {}…",
        hex::encode(&responses),
        req.alias,
        &hex::encode(&m2)[..16]
    ));
    let m260: FinishResponse = client::post_json(
        &req.gateway,
        "/v1/bootstrap/finish",
        &FinishRequest {
            sid: hex::encode(&sid),
            responses: hex::encode(&responses),
            public_key: hex::encode(&public_key.0),
            restrictions: req.restrictions.clone(),
            alias: req.alias.clone(),
            m2: hex::encode(&m2),
        },
    )
    .map_err(MsError::Gateway)?;
    let der =
        hex::decode("certificate", &m260.certificate).map_err(|_| malformed("certificate"))?;
    let m3 = hex::decode_fixed::<MAC_LEN>("m3", &m260.m3).map_err(|_| malformed("M3"))?;
    progress(&format!(
        "260 ← gateway: certificate {} ({} bytes), M3 {}…",
        m260.serial,
        der.len(),
        &m260.m3[..16]
    ));
    let certificate =
        Certificate::from_der(&der).map_err(|e| MsError::BadCertificate(e.to_string()))?;
    let sent_ca = Certificate::from_pem(&m260.gateway_certificate_pem)
        .map_err(|e| MsError::BadCertificate(format!("the gateway's CA certificate: {e}")))?;
    let ca = match &req.ca {
        Some(pinned) => pinned.clone(),
        None => {
            sent_ca.check_issued_by(&sent_ca).map_err(|e| {
                MsError::BadCertificate(format!("the gateway's CA certificate: {e}"))
            })?;
            sent_ca.clone()
        }
    };
    check_certificate(&certificate, &ca, &public_key, req, crate::pki::now())?;
    progress("the certificate certifies the token's key with the restrictions and alias asked for");
    match token.bootstrap_finish(&der, &m3) {
        Ok(()) => {}
        Err(e) if gateway_auth_failed(&e) => {
            return Err(MsError::ForgedGateway {
                which: "M3",
                detail: "the card computed another M3 over the certificate; it stored nothing"
                    .into(),
            });
        }
        Err(e) => return Err(MsError::Card(e)),
    }
    progress("the token checked M3 and stored the certificate");
    Ok(Enrollment {
        sid,
        imsi: imsi.to_string(),
        path: req.path,
        rands: c.rands,
        m1: c.m1,
        responses,
        m2,
        m3,
        public_key,
        certificate,
        gateway_certificate: ca,
        resynchronised,
    })
}
