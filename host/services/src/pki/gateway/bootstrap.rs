//! The gateway certificate generation module (seed 000, figure 5): 210 → 220/230 → 240, then
//! 250 → M2 check → certificate → 260. K, M1, M2 and M3 are the token's own functions
//! (`simlab_applet::token::bootstrap`), so both ends compute them with the same code.

use super::store::{CertRecord, Session, SessionState};
use super::{Gateway, store_error};
use crate::http::client::{self, ClientError};
use crate::http::{ApiError, Request, Response};
use crate::pki::messages::{
    AuthInfoRequest, AuthInfoResponse, AuthPath, BeginRequest, BeginResponse, FinishRequest,
    FinishResponse, Resync, ResyncRequest, check_imsi, hex_fixed, hex_range,
};
use crate::pki::now;
use p256::ecdsa::VerifyingKey;
use simlab_applet::token::bootstrap::{self as boot, ALIAS_MAX, MAC_LEN, PK_LEN, RES_MAX};
use simlab_card::hex;

/// The subject CN of a certificate requested without an alias.
pub const ANONYMOUS_CN: &str = "subscriber";

/// The vectors of one session and the K they give.
struct Vectors {
    rands: Vec<[u8; 16]>,
    expected: Vec<u8>,
    k: [u8; MAC_LEN],
    autn: Option<[u8; 16]>,
    impi: Option<String>,
}

fn auc_error(e: ClientError) -> ApiError {
    match e {
        ClientError::Status(e) if e.code == "unknown_imsi" => {
            ApiError::not_found("unknown_imsi", e.detail)
        }
        ClientError::Status(e) if e.code == "not_supported" => {
            ApiError::unprocessable("path_not_supported", e.detail)
        }
        ClientError::Status(e) if e.code == "resync_rejected" => {
            ApiError::new(403, "resync_rejected", e.detail)
        }
        ClientError::Status(e) => ApiError::new(502, "auc_error", e.to_string()),
        other => ApiError::unavailable("auc_unavailable", other.to_string()),
    }
}

fn bad_vector(what: &str) -> ApiError {
    ApiError::new(502, "auc_error", format!("the AuC sent a malformed {what}"))
}

/// Messages 220/230 and K.
fn vectors(
    gw: &Gateway,
    imsi: &str,
    path: AuthPath,
    resync: Option<Resync>,
) -> Result<Vectors, ApiError> {
    let request = AuthInfoRequest {
        imsi: imsi.to_string(),
        path,
        count: match path {
            AuthPath::Gsm => gw.config.triplets,
            AuthPath::Usim => 1,
        },
        resync,
    };
    let answer: AuthInfoResponse =
        client::post_json(&gw.config.auc, "/v1/auth-info", &request).map_err(auc_error)?;
    match path {
        AuthPath::Gsm => {
            if answer.triplets.len() != gw.config.triplets {
                return Err(bad_vector("set of triplets"));
            }
            let mut rands = Vec::new();
            let mut kcs = Vec::new();
            let mut expected = Vec::new();
            for t in &answer.triplets {
                rands.push(
                    hex::decode_fixed::<16>("rand", &t.rand).map_err(|_| bad_vector("RAND"))?,
                );
                kcs.push(hex::decode_fixed::<8>("kc", &t.kc).map_err(|_| bad_vector("Kc"))?);
                expected.extend(
                    hex::decode_fixed::<4>("sres", &t.sres).map_err(|_| bad_vector("SRES"))?,
                );
            }
            let k = boot::k_gsm(&kcs, &rands).ok_or_else(|| bad_vector("set of triplets"));
            kcs.iter_mut().for_each(|kc| kc.fill(0));
            Ok(Vectors {
                rands,
                expected,
                k: k?,
                autn: None,
                impi: None,
            })
        }
        AuthPath::Usim => {
            let [q] = answer.quintets.as_slice() else {
                return Err(bad_vector("quintet"));
            };
            let impi = answer.impi.clone().ok_or_else(|| bad_vector("IMPI"))?;
            let rand = hex::decode_fixed::<16>("rand", &q.rand).map_err(|_| bad_vector("RAND"))?;
            let autn = hex::decode_fixed::<16>("autn", &q.autn).map_err(|_| bad_vector("AUTN"))?;
            let mut ck = hex::decode_fixed::<16>("ck", &q.ck).map_err(|_| bad_vector("CK"))?;
            let mut ik = hex::decode_fixed::<16>("ik", &q.ik).map_err(|_| bad_vector("IK"))?;
            let xres = hex::decode("xres", &q.xres)
                .ok()
                .filter(|x| (4..=RES_MAX).contains(&x.len()))
                .ok_or_else(|| bad_vector("XRES"))?;
            let k = boot::k_gba(&ck, &ik, &rand, impi.as_bytes(), &gw.config.naf_id());
            ck.fill(0);
            ik.fill(0);
            Ok(Vectors {
                rands: vec![rand],
                expected: xres,
                k: k.ok_or_else(|| bad_vector("quintet"))?,
                autn: Some(autn),
                impi: Some(impi),
            })
        }
    }
}

fn answer_240(gw: &Gateway, session: &Session, v: &Vectors) -> Result<Response, ApiError> {
    let m1 = boot::m1(&v.k, &v.rands).ok_or_else(|| ApiError::internal("M1"))?;
    Ok(Response::ok(&BeginResponse {
        sid: hex::encode(&session.sid),
        path: session.path,
        rands: v.rands.iter().map(|r| hex::encode(r)).collect(),
        autn: v.autn.map(|a| hex::encode(&a)),
        impi: v.impi.clone(),
        naf_id: v.impi.as_ref().map(|_| hex::encode(&gw.config.naf_id())),
        m1: hex::encode(&m1),
        expires_at: session.expires_at,
    }))
}

/// 210 → 240 (operations 510–550).
pub fn begin(gw: &Gateway, req: &Request) -> Result<Response, ApiError> {
    let body: BeginRequest = req.json()?;
    let sid = hex_fixed::<16>("sid", &body.sid)?;
    check_imsi(&body.imsi)?;
    // A session id is used once, ever: refuse a replay before asking the AuC for anything.
    if gw
        .pool
        .get()
        .and_then(|mut s| s.session(&sid))
        .map_err(store_error)?
        .is_some()
    {
        return Err(replayed(&sid));
    }
    // An IMSI the AuC does not know gets a session like any other, with vectors nobody can
    // answer: a 404 here would let anyone enumerate the operator's subscribers. The session
    // then fails at 250 as a wrong M2 does.
    let v = match vectors(gw, &body.imsi, body.path, None) {
        Err(e) if e.code == "unknown_imsi" => decoy(gw, &body.imsi, body.path)?,
        other => other?,
    };
    let created_at = now();
    let session = Session {
        sid: sid.to_vec(),
        imsi: body.imsi,
        path: body.path,
        rands: v.rands.clone(),
        expected: v.expected.clone(),
        k: Some(v.k),
        created_at,
        expires_at: created_at + gw.config.session_ttl,
        state: SessionState::Pending,
    };
    match gw.pool.get().and_then(|mut s| s.create_session(&session)) {
        Ok(()) => {}
        Err(super::store::StoreError::Conflict(_)) => return Err(replayed(&sid)),
        Err(e) => return Err(store_error(e)),
    }
    answer_240(gw, &session, &v)
}

/// Vectors for an unknown IMSI, shaped as the AuC's would be and drawn at random.
fn decoy(gw: &Gateway, imsi: &str, path: AuthPath) -> Result<Vectors, ApiError> {
    let random = |what| {
        simlab_card::random::bytes::<16>()
            .map_err(|e| ApiError::internal(format!("no randomness for {what}: {e}")))
    };
    let mut k = [0u8; MAC_LEN];
    for half in k.chunks_mut(16) {
        half.copy_from_slice(&random("K")?[..half.len()]);
    }
    match path {
        AuthPath::Gsm => {
            let rands = (0..gw.config.triplets)
                .map(|_| random("RAND"))
                .collect::<Result<Vec<_>, _>>()?;
            let expected = random("SRES")?
                .iter()
                .cycle()
                .take(4 * gw.config.triplets)
                .copied()
                .collect();
            Ok(Vectors {
                rands,
                expected,
                k,
                autn: None,
                impi: None,
            })
        }
        AuthPath::Usim => {
            let (mcc, mnc) = (&imsi[..3], &imsi[3..5]);
            Ok(Vectors {
                rands: vec![random("RAND")?],
                expected: random("XRES")?[..8].to_vec(),
                k,
                autn: Some(random("AUTN")?),
                impi: Some(format!("{imsi}@ims.mnc0{mnc}.mcc{mcc}.3gppnetwork.org")),
            })
        }
    }
}

fn replayed(sid: &[u8]) -> ApiError {
    ApiError::conflict(
        "replayed_sid",
        format!(
            "session id {} was used before: every bootstrap needs a fresh one",
            hex::encode(sid)
        ),
    )
}

/// A pending, unexpired session, or the error that says why not.
fn open_session(gw: &Gateway, sid: &[u8; 16]) -> Result<Session, ApiError> {
    let session = gw
        .pool
        .get()
        .and_then(|mut s| s.session(sid))
        .map_err(store_error)?
        .ok_or_else(|| {
            ApiError::not_found(
                "unknown_session",
                format!("no session {}", hex::encode(sid)),
            )
        })?;
    if session.state != SessionState::Pending {
        return Err(ApiError::conflict(
            "session_closed",
            format!(
                "session {} has ended ({}): each session answers one 250",
                hex::encode(sid),
                session.state.name()
            ),
        ));
    }
    if now() > session.expires_at {
        let _ = gw
            .pool
            .get()
            .and_then(|mut s| s.close_session(sid, SessionState::Failed, None));
        return Err(ApiError::new(
            410,
            "session_expired",
            format!("session {} expired: start again", hex::encode(sid)),
        ));
    }
    Ok(session)
}

/// A USIM's synchronisation failure: AUTS goes to the AuC, a fresh 240 comes back for the
/// same session.
pub fn resync(gw: &Gateway, req: &Request) -> Result<Response, ApiError> {
    let body: ResyncRequest = req.json()?;
    let sid = hex_fixed::<16>("sid", &body.sid)?;
    let auts = hex_fixed::<{ boot::AUTS_LEN }>("auts", &body.auts)?;
    let session = open_session(gw, &sid)?;
    if session.path != AuthPath::Usim {
        return Err(ApiError::bad_request(
            "bad_field",
            "resync is for the usim path only",
        ));
    }
    let v = vectors(
        gw,
        &session.imsi,
        AuthPath::Usim,
        Some(Resync {
            rand: hex::encode(&session.rands[0]),
            auts: hex::encode(&auts),
        }),
    )
    // A decoy session (unknown IMSI) fails here as a bad AUTS does, and says no more.
    .map_err(|e| {
        if e.code == "unknown_imsi" {
            ApiError::new(
                403,
                "resync_rejected",
                "the AuC rejected the resynchronisation",
            )
        } else {
            e
        }
    })?;
    let expires_at = now() + gw.config.session_ttl;
    let renewed = gw
        .pool
        .get()
        .and_then(|mut s| s.renew_session(&sid, &v.rands, &v.expected, &v.k, expires_at))
        .map_err(store_error)?;
    if !renewed {
        return Err(ApiError::conflict(
            "session_closed",
            "the session has ended",
        ));
    }
    let session = Session {
        expires_at,
        ..session
    };
    answer_240(gw, &session, &v)
}

fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// 250 → 260 (operations 560–610).
pub fn finish(gw: &Gateway, req: &Request) -> Result<Response, ApiError> {
    let body: FinishRequest = req.json()?;
    let sid = hex_fixed::<16>("sid", &body.sid)?;
    let responses = hex_range("responses", &body.responses, 4..=RES_MAX)?;
    let public_key = hex_fixed::<PK_LEN>("public_key", &body.public_key)?;
    let m2 = hex_fixed::<MAC_LEN>("m2", &body.m2)?;
    if VerifyingKey::from_sec1_bytes(&public_key).is_err() || public_key[0] != 0x04 {
        return Err(ApiError::bad_request(
            "bad_field",
            "public_key: not an uncompressed P-256 point",
        ));
    }
    body.restrictions
        .validate()
        .map_err(|e| ApiError::bad_request("bad_field", format!("restrictions: {e}")))?;
    if body.alias.len() > ALIAS_MAX || body.alias.chars().any(char::is_control) {
        return Err(ApiError::bad_request(
            "bad_field",
            format!("alias: at most {ALIAS_MAX} bytes of printable UTF-8"),
        ));
    }
    let session = open_session(gw, &sid)?;
    let k = session
        .k
        .ok_or_else(|| ApiError::internal("a pending session without K"))?;
    let restrictions_der = body.restrictions.to_der();
    let expected_m2 = boot::m2(
        &k,
        &responses,
        &public_key,
        &restrictions_der,
        body.alias.as_bytes(),
    )
    .ok_or_else(|| ApiError::internal("M2"))?;
    let fail = |status: u16, code: &str, detail: &str| -> Result<Response, ApiError> {
        // One 250 per session: a wrong one ends it, so M2 cannot be guessed online.
        let _ = gw
            .pool
            .get()
            .and_then(|mut s| s.close_session(&sid, SessionState::Failed, None));
        Err(ApiError::new(status, code, detail))
    };
    if !boot::mac_matches(&expected_m2, &m2) {
        return fail(
            403,
            "m2_mismatch",
            "M2 is not the MAC of this session's K: the mobile station is not the subscriber, or the message was altered; the session is closed",
        );
    }
    if !ct_eq(&responses, &session.expected) {
        return fail(
            403,
            "sres_mismatch",
            "the responses are not the AuC's SRES/XRES; the session is closed",
        );
    }
    // Operation 600's policy, after authentication: the subscriber asked for exactly these
    // restrictions (M2 covers them), so the gateway refuses rather than alter them.
    if body.restrictions.validity_seconds > gw.config.max_validity {
        return fail(
            422,
            "restrictions_refused",
            &format!(
                "validity_seconds {} exceeds this gateway's maximum of {}",
                body.restrictions.validity_seconds, gw.config.max_validity
            ),
        );
    }
    let mut serial =
        simlab_card::random::bytes::<16>().map_err(|e| ApiError::internal(e.to_string()))?;
    // A positive INTEGER of exactly 16 bytes (RFC 5280 4.1.2.2).
    serial[0] = (serial[0] & 0x7F) | 0x01;
    let not_before = now();
    let cn = if body.alias.is_empty() {
        ANONYMOUS_CN
    } else {
        &body.alias
    };
    let der = gw
        .ca
        .try_issue(&serial, cn, &public_key, not_before, &body.restrictions)
        .map_err(|e| ApiError::internal(format!("issuing the certificate: {e}")))?;
    let m3 = boot::m3(&k, &der).ok_or_else(|| ApiError::internal("M3"))?;
    let record = CertRecord {
        serial: serial.to_vec(),
        imsi: session.imsi.clone(),
        sid: sid.to_vec(),
        public_key,
        restrictions: restrictions_der,
        alias: body.alias.clone(),
        not_before,
        not_after: not_before + body.restrictions.validity_seconds,
        der: der.clone(),
        issued_at: not_before,
        revoked_at: None,
        revocation_reason: None,
    };
    let closed = gw
        .pool
        .get()
        .and_then(|mut s| s.close_session(&sid, SessionState::Issued, Some(&record)))
        .map_err(store_error)?;
    if !closed {
        return Err(ApiError::conflict(
            "session_closed",
            "another 250 for this session was answered first",
        ));
    }
    Ok(Response::ok(&FinishResponse {
        sid: hex::encode(&sid),
        serial: hex::encode(&serial),
        certificate: hex::encode(&der),
        certificate_pem: crate::pki::der::pem_encode("CERTIFICATE", &der),
        m3: hex::encode(&m3),
        gateway_certificate_pem: gw.ca.certificate().to_pem(),
    }))
}
