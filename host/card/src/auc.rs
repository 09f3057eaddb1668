//! The network side of authentication: what an AuC computes for a subscriber, and what a card
//! should therefore answer. `simlab algo` prints it; `card auth --check` compares against it.

use crate::hex;
use crate::sim::AuthResult;
use serde_json::{Value, json};
use simlab_applet::algo::{self, AkaVector, Algorithm, conv};
use subtle_free::ct_eq;

/// A 2G triplet's card half.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GsmVector {
    pub sres: [u8; 4],
    pub kc: [u8; 8],
}

/// A 3G quintet with everything around it.
#[derive(Clone, Debug)]
pub struct UmtsVector {
    pub opc: Option<[u8; 16]>,
    pub sqn: [u8; 6],
    pub amf: [u8; 2],
    pub aka: AkaVector,
    pub autn: [u8; 16],
    pub gsm: GsmVector,
}

/// SRES/Kc for any algorithm (3G ones through c2/c3). `None` when Milenage lacks OPc.
pub fn gsm(
    alg: Algorithm,
    ki: &[u8; 16],
    opc: Option<&[u8; 16]>,
    rand: &[u8; 16],
) -> Option<GsmVector> {
    algo::run_2g(alg, ki, opc, rand).map(|(sres, kc)| GsmVector { sres, kc })
}

/// The full AKA vector. `None` for 2G algorithms and for Milenage without OPc.
pub fn umts(
    alg: Algorithm,
    ki: &[u8; 16],
    opc: Option<&[u8; 16]>,
    rand: &[u8; 16],
    sqn: &[u8; 6],
    amf: &[u8; 2],
) -> Option<UmtsVector> {
    let aka = algo::run_3g(alg, ki, opc, rand, sqn, amf)?;
    let (sres, kc) = conv::gsm_view(&aka);
    Some(UmtsVector {
        opc: opc.copied().filter(|_| alg == Algorithm::Milenage),
        sqn: *sqn,
        amf: *amf,
        autn: aka.autn(sqn, amf),
        aka,
        gsm: GsmVector { sres, kc },
    })
}

impl GsmVector {
    pub fn to_json(&self) -> Value {
        json!({ "sres": hex::encode(&self.sres), "kc": hex::encode(&self.kc) })
    }
}

impl UmtsVector {
    pub fn to_json(&self) -> Value {
        let mut v = json!({
            "sqn": hex::encode(&self.sqn),
            "amf": hex::encode(&self.amf),
            "mac_a": hex::encode(&self.aka.mac_a),
            "mac_s": hex::encode(&self.aka.mac_s),
            "res": hex::encode(self.aka.res()),
            "ck": hex::encode(&self.aka.ck),
            "ik": hex::encode(&self.aka.ik),
            "ak": hex::encode(&self.aka.ak),
            "ak_star": hex::encode(&self.aka.ak_star),
            "autn": hex::encode(&self.autn),
            "sres": hex::encode(&self.gsm.sres),
            "kc": hex::encode(&self.gsm.kc),
        });
        if let Some(opc) = &self.opc {
            v["opc"] = Value::String(hex::encode(opc));
        }
        v
    }
}

/// What the host expects a card to answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Expected {
    Gsm(GsmVector),
    Umts {
        res: Vec<u8>,
        ck: [u8; 16],
        ik: [u8; 16],
        kc: [u8; 8],
        sqn: [u8; 6],
    },
    /// AUTN's MAC is wrong for these keys: a genuine card must refuse it (9862).
    MacFailure,
}

/// The verdict of `--check`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verdict {
    pub matches: bool,
    pub detail: String,
}

/// Computes what a card with these keys must answer to RAND (and AUTN).
pub fn expected(
    alg: Algorithm,
    ki: &[u8; 16],
    opc: Option<&[u8; 16]>,
    rand: &[u8; 16],
    autn: Option<&[u8; 16]>,
) -> Option<Expected> {
    let Some(autn) = autn else {
        return gsm(alg, ki, opc, rand).map(Expected::Gsm);
    };
    let amf = [autn[6], autn[7]];
    let ak = algo::run_3g(alg, ki, opc, rand, &[0; 6], &amf)?.ak;
    let sqn: [u8; 6] = core::array::from_fn(|i| autn[i] ^ ak[i]);
    let v = umts(alg, ki, opc, rand, &sqn, &amf)?;
    if !ct_eq(&v.aka.mac_a, &autn[8..]) {
        return Some(Expected::MacFailure);
    }
    Some(Expected::Umts {
        res: v.aka.res().to_vec(),
        ck: v.aka.ck,
        ik: v.aka.ik,
        kc: v.gsm.kc,
        sqn,
    })
}

/// Compares a card's answer with the expectation. A synchronisation failure is judged by
/// whether AUTS carries a valid MAC-S under the same keys: the card's SQN is its own business,
/// but only the genuine card can prove it.
pub fn check(
    alg: Algorithm,
    ki: &[u8; 16],
    opc: Option<&[u8; 16]>,
    rand: &[u8; 16],
    expected: &Expected,
    got: &AuthResult,
) -> Verdict {
    let verdict = |matches: bool, detail: String| Verdict { matches, detail };
    match (expected, got) {
        (Expected::Gsm(e), AuthResult::Gsm { sres, kc }) => {
            let ok = e.sres == *sres && e.kc == *kc;
            verdict(
                ok,
                if ok {
                    "SRES and Kc match".into()
                } else {
                    format!(
                        "expected SRES {} Kc {}",
                        hex::encode(&e.sres),
                        hex::encode(&e.kc)
                    )
                },
            )
        }
        (
            Expected::Umts {
                res, ck, ik, kc, ..
            },
            AuthResult::Umts {
                res: r,
                ck: c,
                ik: i,
                kc: k,
            },
        ) => {
            let ok = res == r && ck == c && ik == i && k.is_none_or(|k| k == *kc);
            verdict(
                ok,
                if ok {
                    "RES, CK, IK and Kc match".into()
                } else {
                    format!(
                        "expected RES {} CK {} IK {}",
                        hex::encode(res),
                        hex::encode(ck),
                        hex::encode(ik)
                    )
                },
            )
        }
        (Expected::Umts { sqn, .. }, AuthResult::SyncFailure { auts }) => {
            let Some(probe) = algo::run_3g(alg, ki, opc, rand, &[0; 6], &[0, 0]) else {
                return verdict(false, "keys cannot compute AUTS".into());
            };
            let sqn_ms: [u8; 6] = core::array::from_fn(|i| auts[i] ^ probe.ak_star[i]);
            let valid = algo::run_3g(alg, ki, opc, rand, &sqn_ms, &[0, 0])
                .is_some_and(|v| ct_eq(&v.mac_s, &auts[6..]));
            verdict(
                valid,
                if valid {
                    format!(
                        "resynchronisation: AUTN's SQN {} is not fresh; the card's SQN_MS is {} (MAC-S valid)",
                        hex::encode(sqn),
                        hex::encode(&sqn_ms)
                    )
                } else {
                    "AUTS carries an invalid MAC-S".into()
                },
            )
        }
        (Expected::MacFailure, AuthResult::MacFailure) => {
            verdict(true, "the card rejected AUTN's MAC, as it must".into())
        }
        (Expected::MacFailure, _) => verdict(
            false,
            "AUTN's MAC is wrong for these keys, yet the card accepted it".into(),
        ),
        (_, AuthResult::MacFailure) => verdict(
            false,
            "the card rejected a MAC that is valid for these keys".into(),
        ),
        (_, _) => verdict(
            false,
            "the card answered in another context than expected".into(),
        ),
    }
}

/// Constant-time comparison without pulling another dependency into the host.
mod subtle_free {
    pub fn ct_eq(a: &[u8], b: &[u8]) -> bool {
        a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
    }
}
