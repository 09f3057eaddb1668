//! `simlab demo`: what simlab does, told step by step on emulated hardware.
//!
//! An AuC and a USIM share a subscriber's keys; the demo lets them prove it to each other the
//! way a network and a phone do: 2G challenge-response, 3G mutual authentication, a replayed
//! challenge caught by the sequence-number check and resynchronised, a forged one refused, and
//! PIN protection. Every value the card returns is checked against the AuC's computation.

use super::Output;
use crate::auc;
use crate::error::{Error, Result};
use crate::hex;
use crate::profile::Profile;
use crate::random;
use crate::sim::{AuthResult, Code, Sim, VerifyOutcome};
use crate::transport::Link;
use crate::transport::inproc::InProcess;
use serde_json::json;
use simlab_applet::chv::pad_pin;
use std::path::Path;

/// The demo subscriber: a Milenage USIM with PIN1 enabled (PIN 1234).
const DEMO_PROFILE: &str = include_str!("../../../fixtures/cards/demo-usim.toml");

fn step(out: &Output, n: usize, title: &str) {
    if !out.json() {
        println!("\n[{n}] {title}");
    }
}

fn say(out: &Output, line: &str) {
    if !out.json() {
        println!("    {line}");
    }
}

fn ensure(ok: bool, what: &str) -> Result<()> {
    if ok {
        Ok(())
    } else {
        Err(Error::Mismatch {
            what: what.to_string(),
        })
    }
}

pub fn run(out: &Output) -> Result<i32> {
    let profile = Profile::parse(Path::new("fixtures/cards/demo-usim.toml"), DEMO_PROFILE)?;
    let (alg, ki, opc) = (profile.algorithm, profile.ki, profile.opc);

    step(out, 1, "A subscriber is provisioned");
    say(
        out,
        &format!(
            "The operator writes IMSI {} and a secret key into a USIM ({}), and the same key into its AuC.",
            profile.imsi,
            alg.name()
        ),
    );
    say(
        out,
        "The card here is the simlab card model, reached through APDUs exactly like a card in a reader.",
    );
    let card = InProcess::new(profile.build_card()?, "demo USIM");
    let mut sim = Sim::open(Link::new(Box::new(card)))?;

    step(out, 2, "The phone unlocks the card");
    let wrong = pad_pin("0000").unwrap_or_default();
    let first = sim.verify(Code::Pin1, Some(&wrong))?;
    say(
        out,
        &format!("A mistyped PIN: the card says {}.", describe(first)),
    );
    let right = pad_pin("1234").unwrap_or_default();
    let second = sim.verify(Code::Pin1, Some(&right))?;
    ensure(second == VerifyOutcome::Verified, "PIN1 1234 was refused")?;
    say(
        out,
        "The right PIN: verified, and the counter is back to 3.",
    );

    step(out, 3, "2G: the network challenges the SIM (A3/A8)");
    let rand2g = random::bytes::<16>()?;
    let expected = auc::gsm(alg, &ki, opc.as_ref(), &rand2g)
        .ok_or_else(|| Error::arg("profile", "cannot compute"))?;
    say(
        out,
        &format!(
            "AuC: RAND {} → expected SRES {}.",
            hex::encode(&rand2g),
            hex::encode(&expected.sres)
        ),
    );
    let AuthResult::Gsm { sres, kc } = sim.authenticate(&rand2g, None)? else {
        return Err(Error::Mismatch {
            what: "GSM authentication answered in another context".into(),
        });
    };
    ensure(
        sres == expected.sres && kc == expected.kc,
        "SRES/Kc differ from the AuC's",
    )?;
    say(
        out,
        &format!(
            "Card: SRES {} — matches; both sides now hold Kc (never sent over the air).",
            hex::encode(&sres)
        ),
    );

    step(
        out,
        4,
        "3G: network and card authenticate each other (Milenage AKA)",
    );
    let next_sqn = profile.sqn + 32; // same IND slot, next SEQ
    let sqn: [u8; 6] = next_sqn.to_be_bytes()[2..].try_into().unwrap_or_default();
    let rand3g = random::bytes::<16>()?;
    let v = auc::umts(alg, &ki, opc.as_ref(), &rand3g, &sqn, &profile.amf)
        .ok_or_else(|| Error::arg("profile", "cannot compute"))?;
    say(
        out,
        &format!(
            "AuC: SQN {}, AUTN {} proves the network knows the key.",
            hex::encode(&sqn),
            hex::encode(&v.autn)
        ),
    );
    let got = sim.authenticate(&rand3g, Some(&v.autn))?;
    let AuthResult::Umts { res, .. } = &got else {
        return Err(Error::Mismatch {
            what: format!("3G authentication failed: {got:?}"),
        });
    };
    ensure(res.as_slice() == v.aka.res(), "RES differs from XRES")?;
    say(
        out,
        &format!(
            "Card: AUTN checked, SQN fresh; RES {} = XRES, and CK/IK agree.",
            hex::encode(res)
        ),
    );

    step(out, 5, "A replayed challenge is caught");
    let replay = sim.authenticate(&rand3g, Some(&v.autn))?;
    let AuthResult::SyncFailure { auts } = replay else {
        return Err(Error::Mismatch {
            what: "the card accepted a replayed AUTN".into(),
        });
    };
    let verdict = auc::check(
        alg,
        &ki,
        opc.as_ref(),
        &rand3g,
        &auc::expected(alg, &ki, opc.as_ref(), &rand3g, Some(&v.autn))
            .ok_or_else(|| Error::arg("profile", "cannot compute"))?,
        &AuthResult::SyncFailure { auts },
    );
    ensure(verdict.matches, "AUTS did not verify")?;
    say(
        out,
        &format!("Card: sync failure, AUTS {}.", hex::encode(&auts)),
    );
    say(out, &format!("AuC: {}", verdict.detail));

    step(out, 6, "A forged challenge is refused");
    let mut forged = v.autn;
    forged[15] ^= 0x01;
    let forged_result = sim.authenticate(&rand3g, Some(&forged))?;
    ensure(
        forged_result == AuthResult::MacFailure,
        "the card accepted a forged MAC",
    )?;
    say(
        out,
        "Card: MAC failure (9862) — a false base station cannot authenticate itself.",
    );

    let tries = sim.tries()?;
    say(out, "");
    say(
        out,
        "All answers matched the AuC. Next: the same commands against a real card with --reader.",
    );
    out.result(
        "",
        &json!({
            "imsi": profile.imsi,
            "algorithm": alg.name(),
            "gsm": { "rand": hex::encode(&rand2g), "sres": hex::encode(&sres), "match": true },
            "umts": { "rand": hex::encode(&rand3g), "autn": hex::encode(&v.autn), "res": hex::encode(v.aka.res()), "match": true },
            "replay": { "auts": hex::encode(&auts), "resync_verified": verdict.matches },
            "forged_autn_refused": true,
            "pin1_tries": tries.pin1,
        }),
    )?;
    Ok(0)
}

fn describe(outcome: VerifyOutcome) -> String {
    match outcome {
        VerifyOutcome::Verified => "verified".into(),
        VerifyOutcome::Wrong {
            tries_left: Some(n),
        } => format!("wrong, {n} tries left"),
        VerifyOutcome::Wrong { tries_left: None } => "wrong".into(),
        VerifyOutcome::Blocked => "blocked".into(),
        VerifyOutcome::NotEnabled => "PIN disabled".into(),
    }
}
