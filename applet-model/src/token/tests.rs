//! The token applet, instruction by instruction and failure by failure, the worked vectors of
//! `docs/bootstrap-protocol.md`, and a property test that `process` never panics.
//!
//! The vectors were computed independently of this code (Python `hmac`/`hashlib` and
//! `cryptography`, the script in the protocol document), so these tests check the card against
//! the document, not against itself.

extern crate std;

use std::prelude::rust_2024::*;
use std::vec;

use super::bootstrap::{self, BeginRequest, BeginResponse, Variant};
use super::*;
use crate::algo::Algorithm;
use crate::auth::Keys;
use crate::card::{Card, Config, RESPONSE_MAX};
use p256::ecdsa::VerifyingKey;
use p256::ecdsa::signature::Verifier;
use proptest::prelude::*;

fn h<const N: usize>(s: &str) -> [u8; N] {
    let v = hv(s);
    v.try_into()
        .unwrap_or_else(|v: Vec<u8>| std::panic!("{s}: {} bytes", v.len()))
}

fn hv(s: &str) -> Vec<u8> {
    let s: String = s.split_whitespace().collect();
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

const SEED: [u8; 32] = [0x5E; 32];
const PIN: [u8; 8] = *b"0000\xFF\xFF\xFF\xFF";
const WRONG: [u8; 8] = *b"9999\xFF\xFF\xFF\xFF";

// ----- the worked vectors (docs/bootstrap-protocol.md) ------------------------------------------

/// d = SHA-256("simlab bootstrap test vector key").
const VEC_D: &str = "6c0ac18eb316da146e1df24082d972ac154ec2353581dc58f0e67eea3ca62f75";
const VEC_PK: &str = "042ac9a783d0a0b78633df525b1fb6c0f3e1b220165ac52dd527b60a4b30429a8f\
                      192daa335d9eb7ff7e51ccf41af4ead5289a22e4ce8d4a77c4c92eeb1c6c6190";
const VEC_RESTRICTIONS: &[u8] = b"limit=5000;count=10/86400;until=20271231";
const VEC_ALIAS: &[u8] = b"alice";
const VEC_CERT: &str = "30190c1773696d6c61622074657374206365727469666963617465";

const GSM_KI: &str = "000102030405060708090a0b0c0d0e0f";
const GSM_RANDS: [&str; 3] = [
    "23553cbe9637a89d218ae64dae47bf35",
    "2233445566778899aabbccddeeff0011",
    "00112233445566778899aabbccddeeff",
];
const GSM_SRES: &str = "23543ebd 22324656 00102030";
const GSM_K: &str = "8edbc4cbdded9f4fc348e5cf30b13a05ad3040cafd52320e9df35e8a5a1e61f5";
const GSM_M1: &str = "ccb6879ba8de7b4ce564f76c245538d9c022b8edae263caed4d98429dff7afa6";
const GSM_M2: &str = "d3e5fbb736c897a6032145ece249e3b9eff536de799126693ae35ed8476ee9e0";
const GSM_BEGIN_APDU: &str = "0050010089\
    801023553cbe9637a89d218ae64dae47bf35 80102233445566778899aabbccddeeff0011\
    801000112233445566778899aabbccddeeff\
    8220ccb6879ba8de7b4ce564f76c245538d9c022b8edae263caed4d98429dff7afa6\
    83286c696d69743d353030303b636f756e743d31302f38363430303b756e74696c3d3230323731323331\
    8405616c696365 00";
const GSM_M3: &str = "4720e1b1134597256efc55fc0d33665e39830d5e7ae6d7d4f2cd3d83a236c1b4";

/// TS 35.208 test set 1, and the SQN one step below the test set's (as usim-milenage.toml).
const AKA_KI: &str = "465b5ce8b199b49faa5f0a2ee238a6bc";
const AKA_OPC: &str = "cd63cb71954a9f4e48a5994e37a02baf";
const AKA_SQN_MS: u64 = 0xff9b_b4d0_b5e7;
const AKA_RAND: &str = "23553cbe9637a89d218ae64dae47bf35";
const AKA_AUTN: &str = "55f328b43577b9b94a9ffac354dfafb3";
const AKA_CK: &str = "b40ba9a3c58b2a05bbf0d987b21bf8cb";
const AKA_IK: &str = "f769bcd751044604127672711c6d3441";
const AKA_RES: &str = "a54211d5e3ba50bf";
const AKA_IMPI: &[u8] = b"001010123456789@ims.mnc001.mcc001.3gppnetwork.org";
const AKA_NAF_ID: &[u8] = b"gateway.simlab.invalid\x01\x00\x00\x00\x00";
const AKA_K: &str = "2116ec9b89189b7745cb22a0095b267dccf8ae9ed75b9808b15013ee6b421c38";
const AKA_M1: &str = "b37eebf4b4ccdd5aa2baee17f0f6f5b396c85c60a386d3d5f822fa5603de17c1";
const AKA_M2: &str = "6e1f9bf66e73c85aa1d129b787599347f080d8e08718b9226518cebf17b979c3";
const AKA_M3: &str = "5694727e0483536079cb68184e7ef2baa65df227de507d42b7c2015043bdef99";

fn gsm_sub() -> Subscriber {
    Subscriber::new(
        Keys {
            algorithm: Algorithm::Xor2g,
            ki: h(GSM_KI),
            opc: None,
        },
        0,
    )
}

fn aka_sub() -> Subscriber {
    Subscriber::new(
        Keys {
            algorithm: Algorithm::Milenage,
            ki: h(AKA_KI),
            opc: Some(h(AKA_OPC)),
        },
        AKA_SQN_MS,
    )
}

fn gsm_rands() -> Vec<[u8; 16]> {
    GSM_RANDS.iter().map(|r| h(r)).collect()
}

// ----- helpers ----------------------------------------------------------------------------------

/// Runs one APDU (given as bytes) against the token: response data and status word.
fn run(t: &mut Token, sub: &mut Subscriber, apdu: &[u8]) -> (Vec<u8>, Status) {
    let cmd = Command::parse(apdu).expect("test APDUs are well-formed");
    let mut out = [0u8; 256];
    match t.process(&cmd, sub, &mut out) {
        Ok(n) => (out[..n].to_vec(), Status::Success),
        Err(s) => (Vec::new(), s),
    }
}

fn apdu(cla: u8, ins: u8, p1: u8, p2: u8, data: &[u8], ne: Option<usize>) -> Vec<u8> {
    let mut cmd = Command::new(cla, ins, p1, p2).with_data(data);
    cmd.ne = ne;
    let mut buf = vec![0u8; cmd.encoded_len().unwrap()];
    cmd.serialize(&mut buf).unwrap();
    buf
}

fn sw(t: &mut Token, sub: &mut Subscriber, apdu: &[u8]) -> Status {
    run(t, sub, apdu).1
}

fn verify(t: &mut Token, sub: &mut Subscriber, pin: &[u8]) -> Status {
    sw(t, sub, &apdu(0, ins::VERIFY_PIN, 0, PIN_REF, pin, None))
}

fn keygen(t: &mut Token, sub: &mut Subscriber, p1: u8) -> (Vec<u8>, Status) {
    run(t, sub, &apdu(0, ins::GENERATE_KEY, p1, 0, &[], Some(256)))
}

fn sign(t: &mut Token, sub: &mut Subscriber, data: &[u8]) -> (Vec<u8>, Status) {
    run(t, sub, &apdu(0, ins::SIGN, 0x9E, 0x9A, data, Some(256)))
}

fn pubkey(t: &mut Token, sub: &mut Subscriber) -> (Vec<u8>, Status) {
    run(
        t,
        sub,
        &apdu(0x80, ins::GET_PUBLIC_KEY, 0, 0, &[], Some(256)),
    )
}

fn info(t: &mut Token, sub: &mut Subscriber) -> [u8; INFO_LEN] {
    let (data, status) = run(t, sub, &apdu(0, ins::GET_INFO, 0, 0, &[], Some(256)));
    assert_eq!(status, Status::Success);
    data.try_into().unwrap()
}

fn certificate(t: &mut Token, sub: &mut Subscriber) -> (Vec<u8>, Status) {
    let mut all = Vec::new();
    loop {
        let offset = all.len() as u16;
        let [p1, p2] = offset.to_be_bytes();
        let (data, status) = run(
            t,
            sub,
            &apdu(0, ins::GET_CERTIFICATE, p1, p2, &[], Some(256)),
        );
        match status {
            Status::Success if data.len() == 256 => all.extend(data),
            Status::Success => {
                all.extend(data);
                return (all, Status::Success);
            }
            Status::WrongP1P2 if !all.is_empty() => return (all, Status::Success),
            other => return (all, other),
        }
    }
}

/// Sends `data` as a chain of `block`-byte commands; returns the last command's answer.
fn chained(
    t: &mut Token,
    sub: &mut Subscriber,
    ins: u8,
    p1: u8,
    p2: u8,
    data: &[u8],
    block: usize,
) -> (Vec<u8>, Status) {
    let blocks: Vec<&[u8]> = data.chunks(block).collect();
    for b in &blocks[..blocks.len() - 1] {
        let (d, s) = run(t, sub, &apdu(cla::CHAINING, ins, p1, p2, b, None));
        if s != Status::Success {
            return (d, s);
        }
        assert!(d.is_empty(), "intermediate chain blocks answer no data");
    }
    run(
        t,
        sub,
        &apdu(0, ins, p1, p2, blocks[blocks.len() - 1], Some(256)),
    )
}

/// A seeded token with the PIN verified and a key.
fn ready() -> (Token, Subscriber) {
    let mut t = Token::new(&SEED);
    let mut sub = gsm_sub();
    assert_eq!(verify(&mut t, &mut sub, &PIN), Status::Success);
    assert_eq!(keygen(&mut t, &mut sub, KEYGEN_CREATE).1, Status::Success);
    (t, sub)
}

fn verifying_key(t: &mut Token, sub: &mut Subscriber) -> VerifyingKey {
    let (pk, status) = pubkey(t, sub);
    assert_eq!(status, Status::Success);
    VerifyingKey::from_sec1_bytes(&pk).expect("a valid P-256 point")
}

fn gsm_begin_data(m1: [u8; 32]) -> Vec<u8> {
    let rands = gsm_rands();
    let req = BeginRequest::gsm(&rands, m1, VEC_RESTRICTIONS, VEC_ALIAS).unwrap();
    let mut buf = [0u8; 512];
    let n = req.encode(&mut buf).unwrap();
    buf[..n].to_vec()
}

fn aka_begin_data(autn: [u8; 16], m1: [u8; 32]) -> Vec<u8> {
    let req = BeginRequest::aka(
        h(AKA_RAND),
        autn,
        AKA_IMPI,
        AKA_NAF_ID,
        m1,
        VEC_RESTRICTIONS,
        VEC_ALIAS,
    );
    let mut buf = [0u8; 512];
    let n = req.encode(&mut buf).unwrap();
    buf[..n].to_vec()
}

/// A token holding the vectors' key with the PIN verified.
fn vector_token() -> Token {
    let mut t = Token::new(&SEED);
    t.set_key(&h(VEC_D));
    t.core.pin_verified = true;
    t
}

fn begin(t: &mut Token, sub: &mut Subscriber, variant: Variant, data: &[u8]) -> (Vec<u8>, Status) {
    run(
        t,
        sub,
        &apdu(0, ins::BOOTSTRAP_BEGIN, variant.p1(), 0, data, Some(256)),
    )
}

fn finish(t: &mut Token, sub: &mut Subscriber, m3: &[u8], cert: &[u8]) -> Status {
    let data = [m3, cert].concat();
    if data.len() <= 255 {
        sw(t, sub, &apdu(0, ins::BOOTSTRAP_FINISH, 0, 0, &data, None))
    } else {
        chained(t, sub, ins::BOOTSTRAP_FINISH, 0, 0, &data, 255).1
    }
}

// ----- PIN ----------------------------------------------------------------------------------------

#[test]
fn wrong_pins_count_down_to_blocked_and_an_empty_verify_spends_nothing() {
    let mut t = Token::new(&SEED);
    let mut sub = gsm_sub();
    let query = apdu(0, ins::VERIFY_PIN, 0, PIN_REF, &[], None);
    assert_eq!(
        sw(&mut t, &mut sub, &query),
        Status::VerifyFailed { tries_left: 3 }
    );
    assert_eq!(
        sw(&mut t, &mut sub, &query),
        Status::VerifyFailed { tries_left: 3 }
    );
    assert!(!t.take_dirty(), "asking for the counter changes nothing");

    assert_eq!(
        verify(&mut t, &mut sub, &WRONG),
        Status::VerifyFailed { tries_left: 2 }
    );
    assert!(
        t.take_dirty(),
        "a spent try must be persisted before the reply"
    );
    assert_eq!(verify(&mut t, &mut sub, &PIN), Status::Success);
    assert_eq!(sw(&mut t, &mut sub, &query), Status::Success, "verified");
    assert_eq!(info(&mut t, &mut sub)[2], 3, "success refills the counter");

    for left in [2, 1] {
        assert_eq!(
            verify(&mut t, &mut sub, &WRONG),
            Status::VerifyFailed { tries_left: left }
        );
    }
    assert_eq!(verify(&mut t, &mut sub, &WRONG), Status::AuthMethodBlocked);
    assert_eq!(
        verify(&mut t, &mut sub, &PIN),
        Status::AuthMethodBlocked,
        "blocked is blocked"
    );
    assert_eq!(sw(&mut t, &mut sub, &query), Status::AuthMethodBlocked);
    assert_eq!(
        keygen(&mut t, &mut sub, KEYGEN_CREATE).1,
        Status::AuthMethodBlocked
    );
    assert_eq!(info(&mut t, &mut sub)[2], 0);
}

#[test]
fn a_counter_spent_is_spent_even_if_the_card_is_reset_at_once() {
    let mut t = Token::new(&SEED);
    let mut sub = gsm_sub();
    verify(&mut t, &mut sub, &WRONG);
    let mut saved = vec![0u8; STATE_LEN];
    t.save_state(&mut saved);
    let mut after = Token::new(&SEED);
    after.restore_state(&saved).unwrap();
    assert_eq!(
        sw(
            &mut after,
            &mut sub,
            &apdu(0, ins::VERIFY_PIN, 0, PIN_REF, &[], None)
        ),
        Status::VerifyFailed { tries_left: 2 }
    );
}

#[test]
fn verify_pin_rejects_bad_references_and_lengths_without_spending() {
    let mut t = Token::new(&SEED);
    let mut sub = gsm_sub();
    for bad in [
        apdu(0, ins::VERIFY_PIN, 0, 0x81, &PIN, None),
        apdu(0, ins::VERIFY_PIN, 1, PIN_REF, &PIN, None),
    ] {
        assert_eq!(sw(&mut t, &mut sub, &bad), Status::IncorrectP1P2);
    }
    assert_eq!(
        sw(
            &mut t,
            &mut sub,
            &apdu(0, ins::VERIFY_PIN, 0, PIN_REF, b"0000", None)
        ),
        Status::WrongLength
    );
    assert_eq!(info(&mut t, &mut sub)[2], 3);
    // A candidate that is not even digits is simply wrong, and costs a try like any other.
    assert_eq!(
        verify(&mut t, &mut sub, &[0; 8]),
        Status::VerifyFailed { tries_left: 2 }
    );
}

#[test]
fn change_pin_needs_the_old_one_and_checks_the_new_format_first() {
    let mut t = Token::new(&SEED);
    let mut sub = gsm_sub();
    let new = *b"123456\xFF\xFF";
    let change =
        |old: &[u8], new: &[u8]| apdu(0, ins::CHANGE_PIN, 0, PIN_REF, &[old, new].concat(), None);
    assert_eq!(
        sw(
            &mut t,
            &mut sub,
            &change(&PIN, b"12\xFF\xFF\xFF\xFF\xFF\xFF")
        ),
        Status::IncorrectData
    );
    assert_eq!(
        info(&mut t, &mut sub)[2],
        3,
        "a malformed new PIN costs no try"
    );
    assert_eq!(
        sw(&mut t, &mut sub, &change(&WRONG, &new)),
        Status::VerifyFailed { tries_left: 2 }
    );
    assert_eq!(sw(&mut t, &mut sub, &change(&PIN, &new)), Status::Success);
    assert_eq!(
        info(&mut t, &mut sub)[1] & flag::PIN_VERIFIED,
        flag::PIN_VERIFIED
    );
    t.reset();
    assert_eq!(
        verify(&mut t, &mut sub, &PIN),
        Status::VerifyFailed { tries_left: 2 }
    );
    assert_eq!(verify(&mut t, &mut sub, &new), Status::Success);
    assert_eq!(
        sw(
            &mut t,
            &mut sub,
            &apdu(0, ins::CHANGE_PIN, 0, PIN_REF, &PIN, None)
        ),
        Status::WrongLength
    );
    assert_eq!(
        sw(
            &mut t,
            &mut sub,
            &apdu(0, ins::CHANGE_PIN, 0, 1, &[PIN, new].concat(), None)
        ),
        Status::IncorrectP1P2
    );
}

#[test]
fn verification_is_lost_on_reset() {
    let (mut t, mut sub) = ready();
    assert_eq!(sign(&mut t, &mut sub, b"x").1, Status::Success);
    t.reset();
    assert_eq!(sign(&mut t, &mut sub, b"x").1, Status::SecurityNotSatisfied);
}

// ----- keys and signatures -------------------------------------------------------------------------

#[test]
fn generate_key_needs_the_pin_and_replaces_only_when_asked() {
    let mut t = Token::new(&SEED);
    let mut sub = gsm_sub();
    assert_eq!(
        keygen(&mut t, &mut sub, KEYGEN_CREATE).1,
        Status::SecurityNotSatisfied
    );
    assert_eq!(pubkey(&mut t, &mut sub).1, Status::ReferenceNotFound);
    verify(&mut t, &mut sub, &PIN);
    let (first, status) = keygen(&mut t, &mut sub, KEYGEN_CREATE);
    assert_eq!(status, Status::Success);
    assert_eq!((first.len(), first[0]), (PUBLIC_KEY_LEN, 0x04));
    assert!(
        t.take_dirty(),
        "a new key and the advanced DRBG must be persisted"
    );
    assert_eq!(pubkey(&mut t, &mut sub).0, first);
    assert!(!t.take_dirty(), "reading the public key changes nothing");
    assert_eq!(keygen(&mut t, &mut sub, KEYGEN_CREATE).1, sw::KEY_EXISTS);
    assert_eq!(
        pubkey(&mut t, &mut sub).0,
        first,
        "a refused keygen keeps the key"
    );
    let (second, status) = keygen(&mut t, &mut sub, KEYGEN_REPLACE);
    assert_eq!(status, Status::Success);
    assert_ne!(second, first);
    assert_eq!(pubkey(&mut t, &mut sub).0, second);
    for bad in [
        apdu(0, ins::GENERATE_KEY, 2, 0, &[], None),
        apdu(0, ins::GENERATE_KEY, 0, 1, &[], None),
    ] {
        assert_eq!(sw(&mut t, &mut sub, &bad), Status::IncorrectP1P2);
    }
    assert_eq!(
        sw(
            &mut t,
            &mut sub,
            &apdu(0, ins::GENERATE_KEY, 1, 0, &[1], None)
        ),
        Status::WrongLength
    );
}

#[test]
fn an_unseeded_token_refuses_to_generate_keys() {
    let mut t = Token::new(&[0; 32]);
    let mut sub = gsm_sub();
    verify(&mut t, &mut sub, &PIN);
    assert_eq!(
        keygen(&mut t, &mut sub, KEYGEN_CREATE).1,
        Status::ConditionsNotSatisfied
    );
    assert_eq!(info(&mut t, &mut sub)[1] & flag::SEEDED, 0);
}

#[test]
fn different_seeds_give_different_keys_and_the_same_seed_the_same() {
    let key = |seed: [u8; 32]| {
        let mut t = Token::new(&seed);
        let mut sub = gsm_sub();
        verify(&mut t, &mut sub, &PIN);
        keygen(&mut t, &mut sub, KEYGEN_CREATE).0
    };
    assert_eq!(key([1; 32]), key([1; 32]));
    assert_ne!(key([1; 32]), key([2; 32]));
}

#[test]
fn signatures_verify_and_need_the_pin_and_a_key() {
    let mut t = Token::new(&SEED);
    let mut sub = gsm_sub();
    verify(&mut t, &mut sub, &PIN);
    assert_eq!(
        sign(&mut t, &mut sub, b"invoice").1,
        Status::ReferenceNotFound
    );
    keygen(&mut t, &mut sub, KEYGEN_CREATE);
    t.reset();
    assert_eq!(
        sign(&mut t, &mut sub, b"invoice").1,
        Status::SecurityNotSatisfied
    );
    verify(&mut t, &mut sub, &PIN);
    let vk = verifying_key(&mut t, &mut sub);
    t.take_dirty();
    let (der, status) = sign(&mut t, &mut sub, b"invoice 42: 1250 cents to seller 7");
    assert_eq!(status, Status::Success);
    assert_eq!(der[0], 0x30, "DER SEQUENCE");
    let sig = DerSignature::try_from(der.as_slice()).unwrap();
    vk.verify(b"invoice 42: 1250 cents to seller 7", &sig)
        .unwrap();
    assert!(
        vk.verify(b"invoice 42: 9999 cents to seller 7", &sig)
            .is_err()
    );
    assert!(
        !t.take_dirty(),
        "signing is RFC 6979: no DRBG use, nothing to persist"
    );
    // The PIN stays verified for the session.
    assert_eq!(sign(&mut t, &mut sub, b"again").1, Status::Success);
}

#[test]
fn long_data_signs_the_same_chained_or_extended() {
    let (mut t, mut sub) = ready();
    let vk = verifying_key(&mut t, &mut sub);
    let data: Vec<u8> = (0..1000u32).map(|i| (i * 7) as u8).collect();
    let (by_chain, status) = chained(&mut t, &mut sub, ins::SIGN, 0x9E, 0x9A, &data, 200);
    assert_eq!(status, Status::Success);
    let extended = Command::new(0, ins::SIGN, 0x9E, 0x9A)
        .with_data(&data)
        .with_ne(256);
    let mut buf = vec![0u8; extended.encoded_len().unwrap()];
    extended.serialize(&mut buf).unwrap();
    let (by_extended, status) = run(&mut t, &mut sub, &buf);
    assert_eq!(status, Status::Success);
    assert_eq!(
        by_chain, by_extended,
        "RFC 6979: same key, same message, same signature"
    );
    vk.verify(&data, &DerSignature::try_from(by_chain.as_slice()).unwrap())
        .unwrap();
}

#[test]
fn another_command_abandons_a_chain() {
    let (mut t, mut sub) = ready();
    let vk = verifying_key(&mut t, &mut sub);
    let first = apdu(cla::CHAINING, ins::SIGN, 0x9E, 0x9A, b"abandoned ", None);
    assert_eq!(sw(&mut t, &mut sub, &first), Status::Success);
    assert_eq!(pubkey(&mut t, &mut sub).1, Status::Success);
    let (der, _) = sign(&mut t, &mut sub, b"fresh");
    vk.verify(b"fresh", &DerSignature::try_from(der.as_slice()).unwrap())
        .unwrap();
    // A reset abandons it too.
    assert_eq!(sw(&mut t, &mut sub, &first), Status::Success);
    t.reset();
    verify(&mut t, &mut sub, &PIN);
    let (der, _) = sign(&mut t, &mut sub, b"fresh");
    vk.verify(b"fresh", &DerSignature::try_from(der.as_slice()).unwrap())
        .unwrap();
}

#[test]
fn malformed_commands_get_a_clear_status() {
    let (mut t, mut sub) = ready();
    let cases: &[(Vec<u8>, Status)] = &[
        (
            apdu(0x40, ins::GET_INFO, 0, 0, &[], None),
            Status::ClaNotSupported,
        ),
        (
            apdu(0x01, ins::GET_INFO, 0, 0, &[], None),
            Status::ClaNotSupported,
        ),
        (apdu(0, 0x00, 0, 0, &[], None), Status::InsNotSupported),
        (apdu(0, 0xB0, 0, 0, &[], Some(10)), Status::InsNotSupported),
        (
            apdu(cla::CHAINING, ins::GET_INFO, 0, 0, &[], None),
            sw::CHAINING_NOT_SUPPORTED,
        ),
        (
            apdu(cla::CHAINING, ins::VERIFY_PIN, 0, PIN_REF, &PIN, None),
            sw::CHAINING_NOT_SUPPORTED,
        ),
        (
            apdu(0, ins::SIGN, 0x9E, 0x9A, &[], Some(256)),
            Status::WrongLength,
        ),
        (
            apdu(0, ins::SIGN, 0x9E, 0x00, b"x", Some(256)),
            Status::IncorrectP1P2,
        ),
        (
            apdu(0, ins::GET_PUBLIC_KEY, 0, 1, &[], None),
            Status::IncorrectP1P2,
        ),
        (
            apdu(0, ins::GET_PUBLIC_KEY, 0, 0, &[1, 2], None),
            Status::WrongLength,
        ),
        (
            apdu(0, ins::GET_INFO, 1, 0, &[], None),
            Status::IncorrectP1P2,
        ),
        (
            apdu(0, ins::GET_INFO, 0, 0, &[1], None),
            Status::WrongLength,
        ),
        (
            apdu(0, ins::GET_CERTIFICATE, 0x80, 0, &[], None),
            Status::IncorrectP1P2,
        ),
        (
            apdu(0, ins::GET_CERTIFICATE, 0, 0, &[1], None),
            Status::WrongLength,
        ),
        (
            apdu(0, ins::GET_CERTIFICATE, 0, 0, &[], None),
            Status::ReferenceNotFound,
        ),
        (
            apdu(0, ins::BOOTSTRAP_BEGIN, 3, 0, &[0x80, 0], None),
            Status::IncorrectP1P2,
        ),
        (
            apdu(0, ins::BOOTSTRAP_BEGIN, 1, 1, &[0x80, 0], None),
            Status::IncorrectP1P2,
        ),
        (
            apdu(0, ins::BOOTSTRAP_BEGIN, 1, 0, &[], None),
            Status::WrongLength,
        ),
        (
            apdu(0, ins::BOOTSTRAP_FINISH, 0, 0, &[0; 40], None),
            Status::ConditionsNotSatisfied,
        ),
    ];
    for (cmd, want) in cases {
        assert_eq!(sw(&mut t, &mut sub, cmd), *want, "{cmd:02X?}");
    }
}

// ----- bootstrap: the worked vectors --------------------------------------------------------------

#[test]
fn the_protocol_functions_reproduce_the_documented_vectors() {
    let rands = gsm_rands();
    let sres = hv(GSM_SRES);
    let kcs: Vec<[u8; 8]> = rands.iter().map(|r| gsm_sub().gsm(r).unwrap().1).collect();
    for (i, r) in rands.iter().enumerate() {
        assert_eq!(gsm_sub().gsm(r).unwrap().0, sres[4 * i..4 * i + 4]);
    }
    let k = bootstrap::k_gsm(&kcs, &rands).unwrap();
    assert_eq!(k, h::<32>(GSM_K));
    assert_eq!(bootstrap::m1(&k, &rands).unwrap(), h::<32>(GSM_M1));
    let pk: [u8; 65] = h(VEC_PK);
    assert_eq!(
        bootstrap::m2(&k, &sres, &pk, VEC_RESTRICTIONS, VEC_ALIAS).unwrap(),
        h::<32>(GSM_M2)
    );
    assert_eq!(bootstrap::m3(&k, &hv(VEC_CERT)).unwrap(), h::<32>(GSM_M3));

    let k = bootstrap::k_gba(&h(AKA_CK), &h(AKA_IK), &h(AKA_RAND), AKA_IMPI, AKA_NAF_ID).unwrap();
    assert_eq!(k, h::<32>(AKA_K));
    assert_eq!(bootstrap::m1(&k, &[h(AKA_RAND)]).unwrap(), h::<32>(AKA_M1));
    assert_eq!(
        bootstrap::m2(&k, &hv(AKA_RES), &pk, VEC_RESTRICTIONS, VEC_ALIAS).unwrap(),
        h::<32>(AKA_M2)
    );
    assert_eq!(bootstrap::m3(&k, &hv(VEC_CERT)).unwrap(), h::<32>(AKA_M3));

    // The vector's public key is the one its private scalar gives.
    let mut t = vector_token();
    assert_eq!(pubkey(&mut t, &mut gsm_sub()).0, hv(VEC_PK));
}

#[test]
fn gsm_bootstrap_follows_the_worked_vector_end_to_end() {
    let mut t = vector_token();
    let mut sub = gsm_sub();
    let data = gsm_begin_data(h(GSM_M1));
    // The APDU exactly as the document spells it.
    assert_eq!(
        apdu(0, ins::BOOTSTRAP_BEGIN, 1, 0, &data, Some(256)),
        hv(GSM_BEGIN_APDU)
    );
    let (resp, status) = begin(&mut t, &mut sub, Variant::Gsm, &data);
    assert_eq!(status, Status::Success);
    let expected = [
        &[bootstrap::tag::SUCCESS, 12][..],
        &hv(GSM_SRES),
        &hv(VEC_PK),
        &hv(GSM_M2),
    ]
    .concat();
    assert_eq!(resp, expected);
    assert!(matches!(
        BeginResponse::parse(&resp),
        Some(BeginResponse::Success { responses, .. }) if responses == hv(GSM_SRES)
    ));
    assert_eq!(
        info(&mut t, &mut sub)[1] & flag::BOOTSTRAP_PENDING,
        flag::BOOTSTRAP_PENDING
    );

    assert_eq!(
        finish(&mut t, &mut sub, &hv(GSM_M3), &hv(VEC_CERT)),
        Status::Success
    );
    assert!(t.take_dirty(), "the certificate must be persisted");
    assert_eq!(
        certificate(&mut t, &mut sub),
        (hv(VEC_CERT), Status::Success)
    );
    let i = info(&mut t, &mut sub);
    assert_eq!(
        i[1] & (flag::CERTIFICATE | flag::BOOTSTRAP_PENDING),
        flag::CERTIFICATE
    );
    assert_eq!(
        u16::from_be_bytes([i[4], i[5]]) as usize,
        hv(VEC_CERT).len()
    );
    assert_eq!(
        finish(&mut t, &mut sub, &hv(GSM_M3), &hv(VEC_CERT)),
        Status::ConditionsNotSatisfied,
        "K is used for one certificate only"
    );
}

#[test]
fn aka_bootstrap_follows_the_worked_vector_and_passes_sync_and_mac_failures_through() {
    let mut t = vector_token();
    let mut sub = aka_sub();
    let data = aka_begin_data(h(AKA_AUTN), h(AKA_M1));
    let (resp, status) = begin(&mut t, &mut sub, Variant::Aka, &data);
    assert_eq!(status, Status::Success);
    let expected = [
        &[bootstrap::tag::SUCCESS, 8][..],
        &hv(AKA_RES),
        &hv(VEC_PK),
        &hv(AKA_M2),
    ]
    .concat();
    assert_eq!(resp, expected);
    assert_eq!(
        finish(&mut t, &mut sub, &hv(AKA_M3), &hv(VEC_CERT)),
        Status::Success
    );
    assert_eq!(certificate(&mut t, &mut sub).0, hv(VEC_CERT));

    // The same AUTN again is a replay: AUTS for resynchronisation, no K, no session.
    let (resp, status) = begin(&mut t, &mut sub, Variant::Aka, &data);
    assert_eq!(status, Status::Success);
    let Some(BeginResponse::SyncFailure { auts }) = BeginResponse::parse(&resp) else {
        std::panic!("expected a sync failure, got {resp:02x?}");
    };
    assert_eq!(resp.len(), 2 + bootstrap::AUTS_LEN);
    assert_ne!(auts, &[0; 14]);
    assert_eq!(info(&mut t, &mut sub)[1] & flag::BOOTSTRAP_PENDING, 0);

    let mut forged = h::<16>(AKA_AUTN);
    forged[15] ^= 1;
    let data = aka_begin_data(forged, h(AKA_M1));
    assert_eq!(
        begin(&mut t, &mut sub, Variant::Aka, &data).1,
        Status::AuthMacFailure
    );

    let mut gsm_only = gsm_sub();
    let data = aka_begin_data(h(AKA_AUTN), h(AKA_M1));
    assert_eq!(
        begin(&mut t, &mut gsm_only, Variant::Aka, &data).1,
        Status::AuthContextNotSupported
    );
}

#[test]
fn a_forged_m1_releases_no_sres_and_opens_no_session() {
    let mut t = vector_token();
    let mut sub = gsm_sub();
    let mut m1 = h::<32>(GSM_M1);
    m1[31] ^= 0x01;
    let (resp, status) = begin(&mut t, &mut sub, Variant::Gsm, &gsm_begin_data(m1));
    assert_eq!(
        (resp.as_slice(), status),
        (&[][..], sw::GATEWAY_AUTH_FAILED)
    );
    assert_eq!(info(&mut t, &mut sub)[1] & flag::BOOTSTRAP_PENDING, 0);
    assert_eq!(
        finish(&mut t, &mut sub, &hv(GSM_M3), &hv(VEC_CERT)),
        Status::ConditionsNotSatisfied
    );
    // A forged BEGIN also ends an honest session that was waiting.
    begin(&mut t, &mut sub, Variant::Gsm, &gsm_begin_data(h(GSM_M1)));
    begin(&mut t, &mut sub, Variant::Gsm, &gsm_begin_data(m1));
    assert_eq!(
        finish(&mut t, &mut sub, &hv(GSM_M3), &hv(VEC_CERT)),
        Status::ConditionsNotSatisfied
    );
}

#[test]
fn a_wrong_m3_stores_nothing_keeps_the_old_certificate_and_ends_the_session() {
    let mut t = vector_token();
    let mut sub = gsm_sub();
    let data = gsm_begin_data(h(GSM_M1));
    begin(&mut t, &mut sub, Variant::Gsm, &data);
    let mut m3 = hv(GSM_M3);
    m3[0] ^= 0x80;
    assert_eq!(
        finish(&mut t, &mut sub, &m3, &hv(VEC_CERT)),
        sw::GATEWAY_AUTH_FAILED
    );
    assert_eq!(certificate(&mut t, &mut sub).1, Status::ReferenceNotFound);
    assert!(!t.take_dirty());
    assert_eq!(
        finish(&mut t, &mut sub, &hv(GSM_M3), &hv(VEC_CERT)),
        Status::ConditionsNotSatisfied,
        "a wrong M3 ends the session"
    );

    // With a certificate stored, a failed bootstrap leaves it in place.
    begin(&mut t, &mut sub, Variant::Gsm, &data);
    finish(&mut t, &mut sub, &hv(GSM_M3), &hv(VEC_CERT));
    begin(&mut t, &mut sub, Variant::Gsm, &data);
    let other = b"0\x03\x02\x01\x07";
    assert_eq!(
        finish(&mut t, &mut sub, &hv(GSM_M3), other),
        sw::GATEWAY_AUTH_FAILED
    );
    assert_eq!(certificate(&mut t, &mut sub).0, hv(VEC_CERT));
}

#[test]
fn k_is_lost_on_reset_and_a_new_key_ends_the_session_and_drops_the_certificate() {
    let mut t = vector_token();
    let mut sub = gsm_sub();
    let data = gsm_begin_data(h(GSM_M1));
    begin(&mut t, &mut sub, Variant::Gsm, &data);
    t.reset();
    assert_eq!(
        finish(&mut t, &mut sub, &hv(GSM_M3), &hv(VEC_CERT)),
        Status::ConditionsNotSatisfied
    );

    t.core.pin_verified = true;
    begin(&mut t, &mut sub, Variant::Gsm, &data);
    finish(&mut t, &mut sub, &hv(GSM_M3), &hv(VEC_CERT));
    begin(&mut t, &mut sub, Variant::Gsm, &data);
    assert_eq!(keygen(&mut t, &mut sub, KEYGEN_REPLACE).1, Status::Success);
    assert_eq!(certificate(&mut t, &mut sub).1, Status::ReferenceNotFound);
    assert_eq!(
        finish(&mut t, &mut sub, &hv(GSM_M3), &hv(VEC_CERT)),
        Status::ConditionsNotSatisfied
    );
}

#[test]
fn bootstrap_begin_needs_the_pin_a_key_and_well_formed_data() {
    let mut t = Token::new(&SEED);
    let mut sub = gsm_sub();
    let data = gsm_begin_data(h(GSM_M1));
    assert_eq!(
        begin(&mut t, &mut sub, Variant::Gsm, &data).1,
        Status::SecurityNotSatisfied
    );
    t.core.pin_verified = true;
    assert_eq!(
        begin(&mut t, &mut sub, Variant::Gsm, &data).1,
        Status::ReferenceNotFound
    );
    t.set_key(&h(VEC_D));

    let rands = gsm_rands();
    let mut buf = [0u8; 512];
    let one = BeginRequest::gsm(&rands[..2], h(GSM_M1), &[], &[]).unwrap();
    let n = one.encode(&mut buf).unwrap();
    // Drop the second RAND: one Kc is too little entropy.
    let only_one: Vec<u8> = [&buf[..18], &buf[36..n]].concat();
    let repeated = BeginRequest::gsm(&[rands[0], rands[0]], h(GSM_M1), &[], &[]).unwrap();
    let n2 = repeated.encode(&mut buf).unwrap();
    let repeated = buf[..n2].to_vec();
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (only_one, "one RAND"),
        (repeated, "the same RAND twice"),
        ([&data[..], &[0x99, 0x00]].concat(), "unknown tag"),
        (
            [&data[..], &[0x81, 16], &[0; 16]].concat(),
            "AUTN on the GSM path",
        ),
        ([&data[..], &[0x82, 32], &[0; 32]].concat(), "M1 twice"),
        (data[..data.len() - 1].to_vec(), "truncated TLV"),
        (
            [&data[..], &[0x83, 0x81, 0x80]].concat(),
            "long-form length",
        ),
        (
            [&data[..18 * 3], &[0x82, 31], &[0; 31]].concat(),
            "short M1",
        ),
        (data[..18 * 3].to_vec(), "no M1"),
        (
            [
                &data[..],
                &[0x80, 16],
                &[0xEE; 16],
                &[0x80, 16],
                &[0xEF; 16],
            ]
            .concat(),
            "five RANDs",
        ),
    ];
    for (bad, what) in cases {
        assert_eq!(
            begin(&mut t, &mut sub, Variant::Gsm, &bad).1,
            Status::IncorrectData,
            "{what}"
        );
    }
    // The AKA path needs AUTN, IMPI and NAF_Id.
    let aka = aka_begin_data(h(AKA_AUTN), h(AKA_M1));
    let without_naf = &aka[..aka.len() - 2 - AKA_NAF_ID.len()];
    assert_eq!(
        begin(&mut t, &mut aka_sub(), Variant::Aka, without_naf).1,
        Status::IncorrectData
    );
    assert_eq!(
        begin(&mut t, &mut aka_sub(), Variant::Aka, &data).1,
        Status::IncorrectData,
        "three RANDs on the AKA path"
    );
    // A card whose Milenage key lacks OPc cannot run A3/A8.
    let mut broken = Subscriber::new(
        Keys {
            algorithm: Algorithm::Milenage,
            ki: [1; 16],
            opc: None,
        },
        0,
    );
    assert_eq!(
        begin(&mut t, &mut broken, Variant::Gsm, &data).1,
        Status::ConditionsNotSatisfied
    );
}

#[test]
fn long_bootstrap_data_goes_by_chaining() {
    let mut t = vector_token();
    let mut sub = gsm_sub();
    let rands = gsm_rands();
    let restrictions = [b'r'; 127];
    let alias = [b'a'; 64];
    let pk: [u8; 65] = h(VEC_PK);
    let k = h::<32>(GSM_K);
    let req = BeginRequest::gsm(&rands, h(GSM_M1), &restrictions, &alias).unwrap();
    let mut buf = [0u8; 512];
    let n = req.encode(&mut buf).unwrap();
    assert!(n > 255, "{n}");
    let (resp, status) = chained(&mut t, &mut sub, ins::BOOTSTRAP_BEGIN, 1, 0, &buf[..n], 100);
    assert_eq!(status, Status::Success);
    let Some(BeginResponse::Success { m2, .. }) = BeginResponse::parse(&resp) else {
        std::panic!("{resp:02x?}");
    };
    assert_eq!(
        *m2,
        bootstrap::m2(&k, &hv(GSM_SRES), &pk, &restrictions, &alias).unwrap()
    );

    // The longest certificate fits, is read back in pieces, and one byte more does not.
    let cert: Vec<u8> = (0..CERT_MAX).map(|i| i as u8).collect();
    let m3 = bootstrap::m3(&k, &cert).unwrap();
    assert_eq!(finish(&mut t, &mut sub, &m3, &cert), Status::Success);
    assert_eq!(
        certificate(&mut t, &mut sub),
        (cert.clone(), Status::Success)
    );
    let (tail, status) = run(
        &mut t,
        &mut sub,
        &apdu(0, ins::GET_CERTIFICATE, 0x03, 0xF0, &[], Some(256)),
    );
    assert_eq!((tail.as_slice(), status), (&cert[0x3F0..], Status::Success));
    let (piece, _) = run(
        &mut t,
        &mut sub,
        &apdu(0, ins::GET_CERTIFICATE, 0, 10, &[], Some(5)),
    );
    assert_eq!(piece, cert[10..15]);
    assert_eq!(
        sw(
            &mut t,
            &mut sub,
            &apdu(0, ins::GET_CERTIFICATE, 0x04, 0x00, &[], Some(1))
        ),
        Status::WrongP1P2
    );

    begin(&mut t, &mut sub, Variant::Gsm, &gsm_begin_data(h(GSM_M1)));
    let too_long = [cert.as_slice(), b"!"].concat();
    let m3 = bootstrap::m3(&k, &too_long).unwrap();
    assert_eq!(
        finish(&mut t, &mut sub, &m3, &too_long),
        sw::NOT_ENOUGH_MEMORY
    );
    assert_eq!(
        certificate(&mut t, &mut sub).0,
        cert,
        "the stored one is untouched"
    );
    // The same through an extended APDU.
    begin(&mut t, &mut sub, Variant::Gsm, &gsm_begin_data(h(GSM_M1)));
    let data = [&m3[..], &too_long].concat();
    let ext = apdu(0, ins::BOOTSTRAP_FINISH, 0, 0, &data, None);
    assert_eq!(sw(&mut t, &mut sub, &ext), sw::NOT_ENOUGH_MEMORY);
    // And a FINISH with no certificate at all.
    begin(&mut t, &mut sub, Variant::Gsm, &gsm_begin_data(h(GSM_M1)));
    assert_eq!(finish(&mut t, &mut sub, &m3, &[]), Status::WrongLength);
}

// ----- persistence --------------------------------------------------------------------------------

#[test]
fn state_survives_save_and_restore_and_bad_state_is_refused_whole() {
    let mut t = vector_token();
    let mut sub = gsm_sub();
    begin(&mut t, &mut sub, Variant::Gsm, &gsm_begin_data(h(GSM_M1)));
    finish(&mut t, &mut sub, &hv(GSM_M3), &hv(VEC_CERT));
    verify(&mut t, &mut sub, &WRONG);
    let mut saved = vec![0u8; STATE_LEN];
    assert_eq!(t.save_state(&mut saved), STATE_LEN);
    assert_eq!(t.save_state(&mut [0u8; 10]), 0);

    let mut r = Token::new(&[9; 32]);
    r.restore_state(&saved).unwrap();
    assert_eq!(pubkey(&mut r, &mut sub).0, hv(VEC_PK));
    assert_eq!(certificate(&mut r, &mut sub).0, hv(VEC_CERT));
    let i = info(&mut r, &mut sub);
    assert_eq!(
        (i[1] & flag::PIN_VERIFIED, i[2]),
        (0, 2),
        "counter kept, verification not"
    );

    // The DRBG continues from the saved state: a restored token and the original draw the
    // same next key, and never one drawn before the save.
    let mut a = Token::new(&SEED);
    verify(&mut a, &mut sub, &PIN);
    let before = keygen(&mut a, &mut sub, KEYGEN_CREATE).0;
    let mut state = vec![0u8; STATE_LEN];
    a.save_state(&mut state);
    let next_a = keygen(&mut a, &mut sub, KEYGEN_REPLACE).0;
    let mut b = Token::new(&SEED);
    b.restore_state(&state).unwrap();
    verify(&mut b, &mut sub, &PIN);
    let next_b = keygen(&mut b, &mut sub, KEYGEN_REPLACE).0;
    assert_eq!(next_a, next_b);
    assert_ne!(next_b, before);

    let corrupt = |at: usize, value: u8| {
        let mut s = saved.clone();
        s[at] = value;
        s
    };
    let mut bad_scalar = saved.clone();
    bad_scalar[AT_KEY..AT_KEY + 32].fill(0xFF);
    let mut bad_counter = saved.clone();
    bad_counter[STATE_LEN - 8..].fill(0);
    for (bad, what) in [
        (corrupt(AT_VERSION, 9), "version"),
        (corrupt(AT_FLAGS, 0x80), "flags"),
        (corrupt(AT_PIN, b'x'), "PIN"),
        (corrupt(AT_CERT_LEN, 0xFF), "certificate length"),
        (bad_scalar, "scalar ≥ n"),
        (bad_counter, "DRBG counter 0"),
    ] {
        let mut fresh = Token::new(&SEED);
        assert!(
            matches!(fresh.restore_state(&bad), Err(StateError::BadValue(_))),
            "{what}"
        );
        assert_eq!(
            pubkey(&mut fresh, &mut sub).1,
            Status::ReferenceNotFound,
            "{what}"
        );
    }
    assert!(matches!(
        Token::new(&SEED).restore_state(&saved[1..]),
        Err(StateError::BadLength { .. })
    ));
}

#[test]
fn the_state_layout_adds_up() {
    assert_eq!(STATE_LEN, 2 + 32 + 8 + 1 + 2 + CERT_MAX + drbg::STATE_LEN);
}

// ----- SIGN REQUEST (seed 002) ----------------------------------------------------------------------

fn sample_request(summary: &str) -> Vec<u8> {
    let r = request::SignRequest {
        server_id: "sign.example",
        tx_id: [0x17; 16],
        user_id: "ada",
        amount: 4250,
        currency: *b"EUR",
        summary,
        content_hash: [0x33; 32],
        correlator: [0; request::CORRELATOR_LEN],
        issued_at: 1_800_000_000,
        expires_at: 1_800_000_300,
    };
    let mut buf = [0u8; request::MAX_LEN];
    let n = r.encode(&mut buf).unwrap();
    buf[..n].to_vec()
}

/// The longest request there is: 160 two-byte characters of summary... and more.
fn long_request() -> Vec<u8> {
    let summary = "€".repeat(request::SUMMARY_MAX_CHARS);
    sample_request(&summary)
}

fn sign_request(t: &mut Token, sub: &mut Subscriber, data: &[u8]) -> (Vec<u8>, Status) {
    let (p1, p2) = SIGN_REQUEST_P1P2;
    run(t, sub, &apdu(0, ins::SIGN, p1, p2, data, Some(256)))
}

fn extended(cla: u8, ins: u8, p1: u8, p2: u8, data: &[u8]) -> Vec<u8> {
    let cmd = Command::new(cla, ins, p1, p2).with_data(data).with_ne(256);
    let mut buf = vec![0u8; cmd.encoded_len().unwrap()];
    cmd.serialize(&mut buf).unwrap();
    buf
}

fn preview(t: &Token, apdu: &[u8]) -> Option<Vec<u8>> {
    let cmd = Command::parse(apdu).unwrap();
    let mut buf = [0u8; request::MAX_LEN];
    t.pending_sign_request(&cmd, &mut buf).map(<[u8]>::to_vec)
}

#[test]
fn sign_request_signs_what_sign_would_chained_or_extended() {
    let (mut t, mut sub) = ready();
    t.take_dirty();
    let vk = verifying_key(&mut t, &mut sub);
    let (p1, p2) = SIGN_REQUEST_P1P2;
    let short = sample_request("Flowers for Ada");
    assert!(short.len() <= 255);
    let (der, status) = sign_request(&mut t, &mut sub, &short);
    assert_eq!(status, Status::Success);
    let sig = DerSignature::try_from(der.as_slice()).unwrap();
    vk.verify(&short, &sig).unwrap();
    assert_eq!(
        der,
        sign(&mut t, &mut sub, &short).0,
        "RFC 6979: the signature SIGN gives over the same bytes"
    );

    let long = long_request();
    assert!(long.len() > 255 && long.len() <= request::MAX_LEN);
    let (by_chain, status) = chained(&mut t, &mut sub, ins::SIGN, p1, p2, &long, 255);
    assert_eq!(status, Status::Success);
    vk.verify(&long, &DerSignature::try_from(by_chain.as_slice()).unwrap())
        .unwrap();
    let (by_extended, status) = run(&mut t, &mut sub, &extended(0, ins::SIGN, p1, p2, &long));
    assert_eq!((by_extended, status), (by_chain.clone(), Status::Success));
    let (by_small_blocks, _) = chained(&mut t, &mut sub, ins::SIGN, p1, p2, &long, 7);
    assert_eq!(by_small_blocks, by_chain);
    // Class 80 is class 00.
    let (der80, status) = run(
        &mut t,
        &mut sub,
        &apdu(0x80, ins::SIGN, p1, p2, &short, None),
    );
    assert_eq!((der80, status), (der, Status::Success));
    assert!(!t.take_dirty(), "signing changes no persistent state");
}

#[test]
fn sign_request_refuses_what_does_not_decode_and_signs_nothing() {
    let (mut t, mut sub) = ready();
    let (p1, p2) = SIGN_REQUEST_P1P2;
    let good = sample_request("Flowers for Ada");
    // Garbage, a truncated request, a trailing byte.
    for bad in [
        b"not a request".to_vec(),
        good[..good.len() - 1].to_vec(),
        [&good[..], &[0]].concat(),
    ] {
        assert_eq!(
            sign_request(&mut t, &mut sub, &bad),
            (Vec::new(), Status::IncorrectData)
        );
    }
    // The amount changed, the correlator kept: the decoder's CorrelatorMismatch.
    let mut tampered = good.clone();
    let at = 2 + request::LABEL.len() + 2 + 12 + 2 + 16 + 2 + 3 + 2 + 7;
    tampered[at] ^= 0x01;
    assert_eq!(
        request::SignRequest::decode(&tampered),
        Err(request::RequestError::CorrelatorMismatch)
    );
    assert_eq!(
        sign_request(&mut t, &mut sub, &tampered).1,
        Status::IncorrectData
    );
    let (_, status) = chained(&mut t, &mut sub, ins::SIGN, p1, p2, &tampered, 50);
    assert_eq!(status, Status::IncorrectData);
    // Longer than any request: 6700, whether extended or on the block that overflows.
    let oversize = vec![0x41u8; request::MAX_LEN + 1];
    assert_eq!(
        run(&mut t, &mut sub, &extended(0, ins::SIGN, p1, p2, &oversize)).1,
        Status::WrongLength
    );
    let blocks: Vec<&[u8]> = oversize.chunks(255).collect();
    for b in &blocks[..3] {
        assert_eq!(
            sw(
                &mut t,
                &mut sub,
                &apdu(cla::CHAINING, ins::SIGN, p1, p2, b, None)
            ),
            Status::Success
        );
    }
    assert_eq!(
        sw(
            &mut t,
            &mut sub,
            &apdu(cla::CHAINING, ins::SIGN, p1, p2, blocks[3], None)
        ),
        Status::WrongLength
    );
    // The refusal ended the chain: the good request, sent whole, signs alone.
    let vk = verifying_key(&mut t, &mut sub);
    let (der, status) = sign_request(&mut t, &mut sub, &good);
    assert_eq!(status, Status::Success);
    vk.verify(&good, &DerSignature::try_from(der.as_slice()).unwrap())
        .unwrap();
    // No data at all.
    assert_eq!(sign_request(&mut t, &mut sub, &[]).1, Status::WrongLength);
}

#[test]
fn sign_request_needs_the_pin_and_a_key() {
    let mut t = Token::new(&SEED);
    let mut sub = gsm_sub();
    let (p1, p2) = SIGN_REQUEST_P1P2;
    let good = long_request();
    verify(&mut t, &mut sub, &PIN);
    assert_eq!(
        sign_request(&mut t, &mut sub, &good[..200]).1,
        Status::ReferenceNotFound
    );
    keygen(&mut t, &mut sub, KEYGEN_CREATE);
    t.reset();
    assert_eq!(
        sign_request(&mut t, &mut sub, &sample_request("x")).1,
        Status::SecurityNotSatisfied
    );
    // Already the first block of a chain is refused.
    assert_eq!(
        sw(
            &mut t,
            &mut sub,
            &apdu(cla::CHAINING, ins::SIGN, p1, p2, &good[..255], None)
        ),
        Status::SecurityNotSatisfied
    );
    assert_eq!(
        preview(&t, &apdu(0, ins::SIGN, p1, p2, &good, None)),
        None,
        "nothing to show for a request the token refuses"
    );
}

#[test]
fn another_command_abandons_a_sign_request_chain() {
    let (mut t, mut sub) = ready();
    let (p1, p2) = SIGN_REQUEST_P1P2;
    let good = long_request();
    let (head, tail) = good.split_at(300);
    let first = apdu(cla::CHAINING, ins::SIGN, p1, p2, head, None);
    let last = apdu(0, ins::SIGN, p1, p2, tail, Some(256));
    assert_eq!(sw(&mut t, &mut sub, &first), Status::Success);
    assert_eq!(preview(&t, &last).as_deref(), Some(&good[..]));
    // GET INFO in between: the chain is gone, the tail alone is no request.
    info(&mut t, &mut sub);
    assert_eq!(preview(&t, &last).as_deref(), Some(tail));
    assert_eq!(run(&mut t, &mut sub, &last).1, Status::IncorrectData);
    // A plain SIGN block in between abandons it too.
    assert_eq!(sw(&mut t, &mut sub, &first), Status::Success);
    let (_, status) = sign(&mut t, &mut sub, b"other");
    assert_eq!(status, Status::Success);
    assert_eq!(run(&mut t, &mut sub, &last).1, Status::IncorrectData);
    // And a reset.
    assert_eq!(sw(&mut t, &mut sub, &first), Status::Success);
    t.reset();
    verify(&mut t, &mut sub, &PIN);
    assert_eq!(run(&mut t, &mut sub, &last).1, Status::IncorrectData);
    // Unbroken, it signs.
    assert_eq!(sw(&mut t, &mut sub, &first), Status::Success);
    assert_eq!(run(&mut t, &mut sub, &last).1, Status::Success);
}

#[test]
fn the_card_looks_ahead_at_a_sign_request_on_any_channel() {
    let mut c = card();
    let (p1, p2) = SIGN_REQUEST_P1P2;
    let good = long_request();
    let (head, tail) = good.split_at(255);
    let look = |c: &Card, apdu: &[u8]| {
        let mut buf = [0u8; request::MAX_LEN];
        c.pending_sign_request(apdu, &mut buf).map(<[u8]>::to_vec)
    };
    // Not selected: the card would not hand it to the token.
    assert_eq!(look(&c, &apdu(0, ins::SIGN, p1, p2, tail, None)), None);
    // Open channel 1 and select the token there.
    let (ch, status) = exchange(&mut c, &[0x00, 0x70, 0x00, 0x00, 0x01]);
    assert_eq!((ch.as_slice(), status), (&[1u8][..], Status::Success));
    let select = [&[0x01, 0xA4, 0x04, 0x00, AID.len() as u8][..], &AID].concat();
    assert_eq!(exchange(&mut c, &select).1, Status::Success);
    exchange(&mut c, &apdu(0x01, ins::VERIFY_PIN, 0, PIN_REF, &PIN, None));
    let (pk, _) = exchange(&mut c, &apdu(0x01, ins::GENERATE_KEY, 0, 0, &[], None));
    assert_eq!(
        exchange(&mut c, &apdu(0x11, ins::SIGN, p1, p2, head, None)).1,
        Status::Success
    );
    let last = apdu(0x81, ins::SIGN, p1, p2, tail, None);
    assert_eq!(look(&c, &apdu(0x00, ins::SIGN, p1, p2, tail, None)), None);
    assert_eq!(look(&c, &apdu(0x11, ins::SIGN, p1, p2, tail, None)), None);
    assert_eq!(
        look(&c, &apdu(0x81, ins::SIGN, 0x9E, 0x9A, tail, None)),
        None
    );
    assert_eq!(look(&c, &last).as_deref(), Some(&good[..]));
    let (der, status) = exchange(&mut c, &last);
    assert_eq!(status, Status::Success);
    VerifyingKey::from_sec1_bytes(&pk)
        .unwrap()
        .verify(&good, &DerSignature::try_from(der.as_slice()).unwrap())
        .unwrap();
}

/// A step of a conversation with the token about signature requests.
#[derive(Clone, Debug)]
enum Step {
    /// A SIGN REQUEST block: this slice of the request (or garbage), chained or last.
    Block {
        from: usize,
        to: usize,
        chained: bool,
        flip: Option<usize>,
    },
    /// The whole request in two blocks cut here, one byte maybe flipped.
    Whole {
        cut: usize,
        flip: Option<usize>,
    },
    Info,
    PlainSign {
        chained: bool,
    },
    Verify,
    Reset,
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        6 => (0usize..900, 0usize..900, any::<bool>(), proptest::option::weighted(0.1, 0usize..900))
            .prop_map(|(a, b, chained, flip)| Step::Block { from: a.min(b), to: a.max(b), chained, flip }),
        3 => (1usize..890, proptest::option::weighted(0.3, 0usize..900))
            .prop_map(|(cut, flip)| Step::Whole { cut, flip }),
        1 => Just(Step::Info),
        1 => any::<bool>().prop_map(|chained| Step::PlainSign { chained }),
        1 => Just(Step::Verify),
        1 => Just(Step::Reset),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// Whatever the host sends, a SIGN REQUEST signature is over exactly the bytes
    /// `pending_sign_request` showed just before, and those bytes decode; when it shows
    /// nothing, or bytes that do not decode, nothing is signed.
    #[test]
    fn what_is_previewed_is_what_is_signed(steps in proptest::collection::vec(step(), 1..40)) {
        let (mut t, mut sub) = ready();
        let vk = verifying_key(&mut t, &mut sub);
        let good = long_request();
        let (p1, p2) = SIGN_REQUEST_P1P2;
        let steps: Vec<Step> = steps
            .into_iter()
            .flat_map(|s| match s {
                Step::Whole { cut, flip } => {
                    let cut = cut.min(good.len() - 1);
                    vec![
                        Step::Block { from: 0, to: cut, chained: true, flip },
                        Step::Block { from: cut, to: good.len(), chained: false, flip: None },
                    ]
                }
                s => vec![s],
            })
            .collect();
        for s in steps {
            let cmd = match s {
                Step::Block { from, to, chained, flip } => {
                    let mut data = good[from.min(good.len())..to.min(good.len())].to_vec();
                    if let Some(i) = flip && i < data.len() {
                        data[i] ^= 0x20;
                    }
                    let cla = if chained { cla::CHAINING } else { 0 };
                    if data.len() > 255 {
                        extended(cla, ins::SIGN, p1, p2, &data)
                    } else {
                        apdu(cla, ins::SIGN, p1, p2, &data, Some(256))
                    }
                }
                Step::Info => apdu(0, ins::GET_INFO, 0, 0, &[], None),
                Step::PlainSign { chained } => {
                    apdu(if chained { cla::CHAINING } else { 0 }, ins::SIGN, 0x9E, 0x9A, b"m", None)
                }
                Step::Verify => apdu(0, ins::VERIFY_PIN, 0, PIN_REF, &PIN, None),
                Step::Reset => {
                    t.reset();
                    continue;
                }
                Step::Whole { .. } => unreachable!("expanded above"),
            };
            let shown = preview(&t, &cmd);
            let parsed = Command::parse(&cmd).unwrap();
            let (der, status) = run(&mut t, &mut sub, &cmd);
            let is_last_request = parsed.ins == ins::SIGN
                && (parsed.p1, parsed.p2) == SIGN_REQUEST_P1P2
                && parsed.cla & cla::CHAINING == 0;
            if is_last_request && status == Status::Success {
                let shown = shown.as_deref().expect("signed without a preview");
                prop_assert!(request::SignRequest::decode(shown).is_ok());
                prop_assert!(vk.verify(shown, &DerSignature::try_from(der.as_slice()).unwrap()).is_ok());
            }
            if let Some(shown) = &shown {
                prop_assert!(is_last_request);
                let decodes = request::SignRequest::decode(shown).is_ok();
                prop_assert_eq!(decodes, status == Status::Success, "{:?}", status);
            }
        }
    }
}

// ----- through the card ---------------------------------------------------------------------------

fn card() -> Card {
    let mut config = Config::new(Keys {
        algorithm: Algorithm::Xor2g,
        ki: h(GSM_KI),
        opc: None,
    });
    config.token_seed = SEED;
    Card::new(&config)
}

/// One exchange with the card, with the host's GET RESPONSE handling.
fn exchange(card: &mut Card, apdu: &[u8]) -> (Vec<u8>, Status) {
    let mut resp = [0u8; RESPONSE_MAX];
    let n = card.process(apdu, &mut resp);
    let status = Status::from_u16(u16::from_be_bytes([resp[n - 2], resp[n - 1]]));
    match status {
        Status::BytesAvailable(x) => {
            // On the command's own logical channel.
            let n = card.process(&[apdu[0] & 0x03, 0xC0, 0, 0, x], &mut resp);
            let status = Status::from_u16(u16::from_be_bytes([resp[n - 2], resp[n - 1]]));
            (resp[..n - 2].to_vec(), status)
        }
        s => (resp[..n - 2].to_vec(), s),
    }
}

fn select_token(card: &mut Card) {
    let select = [&[0x00, 0xA4, 0x04, 0x00, AID.len() as u8][..], &AID].concat();
    let (fci, status) = exchange(card, &select);
    assert_eq!(status, Status::Success);
    assert_eq!(
        &fci[..4],
        &[0x6F, 2 + AID.len() as u8, 0x84, AID.len() as u8]
    );
}

#[test]
fn the_card_routes_the_token_by_its_aid() {
    let mut c = card();
    let (_, status) = exchange(&mut c, &apdu(0, ins::GET_INFO, 0, 0, &[], None));
    assert_eq!(
        status,
        Status::InsNotSupported,
        "not selected: the card's own INS set"
    );
    select_token(&mut c);
    assert_eq!(
        exchange(&mut c, &apdu(0, ins::VERIFY_PIN, 0, PIN_REF, &PIN, None)).1,
        Status::Success
    );
    assert!(c.take_dirty());
    let (pk, status) = exchange(&mut c, &apdu(0, ins::GENERATE_KEY, 0, 0, &[], None));
    assert_eq!((pk.len(), status), (PUBLIC_KEY_LEN, Status::Success));
    let (der, status) = exchange(
        &mut c,
        &apdu(0x80, ins::SIGN, 0x9E, 0x9A, b"via the card", None),
    );
    assert_eq!(status, Status::Success);
    VerifyingKey::from_sec1_bytes(&pk)
        .unwrap()
        .verify(
            b"via the card",
            &DerSignature::try_from(der.as_slice()).unwrap(),
        )
        .unwrap();
    // Re-selecting the token (or any other SELECT) loses the PIN verification.
    select_token(&mut c);
    assert_eq!(
        exchange(&mut c, &apdu(0, ins::SIGN, 0x9E, 0x9A, b"x", None)).1,
        Status::SecurityNotSatisfied
    );
}

/// The card passes chained commands (CLA 10/90) to the selected token, and to nothing else.
#[test]
fn the_card_passes_chained_commands_to_the_token() {
    let mut c = card();
    select_token(&mut c);
    exchange(&mut c, &apdu(0, ins::VERIFY_PIN, 0, PIN_REF, &PIN, None));
    let (pk, _) = exchange(&mut c, &apdu(0, ins::GENERATE_KEY, 0, 0, &[], None));
    let data = [0x42u8; 600];
    for block in data[..400].chunks(200) {
        let (_, status) = exchange(
            &mut c,
            &apdu(cla::CHAINING, ins::SIGN, 0x9E, 0x9A, block, None),
        );
        assert_eq!(status, Status::Success);
    }
    let (der, status) = exchange(&mut c, &apdu(0, ins::SIGN, 0x9E, 0x9A, &data[400..], None));
    assert_eq!(status, Status::Success);
    VerifyingKey::from_sec1_bytes(&pk)
        .unwrap()
        .verify(&data, &DerSignature::try_from(der.as_slice()).unwrap())
        .unwrap();
    // The SIM's own commands take no chains.
    select_token(&mut c);
    let (_, status) = exchange(&mut c, &[0x10, 0xA4, 0x00, 0x04, 0x02, 0x3F, 0x00]);
    assert_eq!(status, Status::ChainingNotSupported);
}

#[test]
fn the_card_state_has_room_for_the_token() {
    let c = card();
    let mut saved = vec![0u8; crate::state::STATE_LEN];
    assert_eq!(c.save_state(&mut saved), crate::state::STATE_LEN);
}

/// Needs `Card::restore_state` to restore the token's bytes too (see the token work's report):
/// until then a restored card keeps the token state it had before the restore.
#[test]
fn the_card_persists_the_token_key_across_save_and_restore() {
    let mut c = card();
    select_token(&mut c);
    exchange(&mut c, &apdu(0, ins::VERIFY_PIN, 0, PIN_REF, &PIN, None));
    let (pk, _) = exchange(&mut c, &apdu(0, ins::GENERATE_KEY, 0, 0, &[], None));
    let mut saved = vec![0u8; crate::state::STATE_LEN];
    c.save_state(&mut saved);
    let mut restored = card();
    restored.restore_state(&saved).unwrap();
    select_token(&mut restored);
    assert_eq!(
        exchange(
            &mut restored,
            &apdu(0, ins::GET_PUBLIC_KEY, 0, 0, &[], None)
        )
        .0,
        pk
    );
}

// ----- no panics ----------------------------------------------------------------------------------

fn token_command() -> impl Strategy<Value = Vec<u8>> {
    let cla = prop_oneof![
        Just(0x00u8),
        Just(0x80),
        Just(0x10),
        Just(0x90),
        any::<u8>()
    ];
    let ins = prop_oneof![
        Just(ins::VERIFY_PIN),
        Just(ins::CHANGE_PIN),
        Just(ins::SIGN),
        Just(ins::GENERATE_KEY),
        Just(ins::GET_PUBLIC_KEY),
        Just(ins::BOOTSTRAP_BEGIN),
        Just(ins::BOOTSTRAP_FINISH),
        Just(ins::GET_CERTIFICATE),
        Just(ins::GET_INFO),
        any::<u8>()
    ];
    let p = prop_oneof![
        Just(0u8),
        Just(1),
        Just(2),
        Just(0x80),
        Just(0x9E),
        Just(0x9A),
        Just(0x9C),
        any::<u8>()
    ];
    let data = prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..64),
        proptest::collection::vec(any::<u8>(), 250..600),
        Just(PIN.to_vec()),
        Just(gsm_begin_data(h(GSM_M1))),
        Just([hv(GSM_M3), hv(VEC_CERT)].concat()),
        Just(sample_request("Flowers for Ada")),
        Just(long_request()),
    ];
    (
        cla,
        ins,
        p.clone(),
        p,
        data,
        proptest::option::of(1usize..=65536),
    )
        .prop_map(|(cla, ins, p1, p2, data, ne)| apdu(cla, ins, p1, p2, &data, ne))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn process_never_panics(cmds in proptest::collection::vec(token_command(), 1..24), keyed in any::<bool>()) {
        let mut t = if keyed { vector_token() } else { Token::new(&SEED) };
        let mut sub = gsm_sub();
        for cmd in &cmds {
            let parsed = Command::parse(cmd).unwrap();
            let mut out = [0u8; 256];
            if let Ok(n) = t.process(&parsed, &mut sub, &mut out) {
                prop_assert!(n <= 256);
            }
        }
        let mut saved = vec![0u8; STATE_LEN];
        prop_assert_eq!(t.save_state(&mut saved), STATE_LEN);
        prop_assert!(Token::new(&SEED).restore_state(&saved).is_ok());
    }

    #[test]
    fn restore_never_panics(bytes in proptest::collection::vec(any::<u8>(), STATE_LEN..=STATE_LEN)) {
        let _ = Token::new(&SEED).restore_state(&bytes);
    }
}
