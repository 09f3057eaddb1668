//! The XOR test algorithms used by test SIMs and conformance testers.
//!
//! They have no security at all (every output is a slice of Ki ⊕ RAND); they exist so that a
//! test network, an MS tester and the simulated card can run authentication with predictable
//! results. XOR-3G mirrors libosmocore (the `XOR`/`XOR-3G` algorithm of `osmo-auc-gen`), which
//! is what the test suite cross-checks against.

use super::AkaVector;

/// XOR-2G (TS 51.010-1 A.4.1.2): SRES = (Ki ⊕ RAND)[0..4], Kc = (Ki ⊕ RAND)[4..12].
pub fn xor2g(ki: &[u8; 16], rand: &[u8; 16]) -> ([u8; 4], [u8; 8]) {
    let x = xor16(ki, rand);
    let mut sres = [0u8; 4];
    let mut kc = [0u8; 8];
    sres.copy_from_slice(&x[..4]);
    kc.copy_from_slice(&x[4..12]);
    (sres, kc)
}

/// XOR-3G (TS 34.108 8.1.2), keyed with K, with the same call shape as
/// [`Milenage`](super::milenage::Milenage) so that the card and the AuC can treat both alike.
///
/// Every function of TS 34.108 derives from XDOUT = K ⊕ RAND:
/// RES = XDOUT (all 16 bytes, as libosmocore does; TS 34.108 allows any length from 4 to 16
/// bytes and the 128-bit choice is the one test equipment uses), CK = XDOUT rotated left by one
/// byte, IK = rotated left by two, AK = XDOUT[3..9], MAC-A = XDOUT[0..8] ⊕ (SQN ‖ AMF).
/// TS 34.108 uses the same functions for re-synchronisation, so MAC-S = MAC-A and AK* = AK
/// (libosmocore checks AUTS that way too).
#[derive(Clone)]
pub struct Xor3g {
    k: [u8; 16],
}

impl core::fmt::Debug for Xor3g {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("Xor3g { .. }")
    }
}

impl Xor3g {
    /// Keys the algorithm with K.
    pub fn new(k: &[u8; 16]) -> Self {
        Xor3g { k: *k }
    }

    fn xdout(&self, rand: &[u8; 16]) -> [u8; 16] {
        xor16(&self.k, rand)
    }

    /// MAC-A.
    pub fn f1(&self, rand: &[u8; 16], sqn: &[u8; 6], amf: &[u8; 2]) -> [u8; 8] {
        mac(&self.xdout(rand), sqn, amf)
    }

    /// MAC-S; the same function as f1 in TS 34.108 (callers pass AMF 0000 for AUTS).
    pub fn f1star(&self, rand: &[u8; 16], sqn: &[u8; 6], amf: &[u8; 2]) -> [u8; 8] {
        self.f1(rand, sqn, amf)
    }

    /// (RES, CK, IK, AK); RES is 16 bytes.
    pub fn f2345(&self, rand: &[u8; 16]) -> ([u8; 16], [u8; 16], [u8; 16], [u8; 6]) {
        let x = self.xdout(rand);
        (x, rotl_bytes(&x, 1), rotl_bytes(&x, 2), ak(&x))
    }

    /// AK*; the same function as f5 in TS 34.108.
    pub fn f5star(&self, rand: &[u8; 16]) -> [u8; 6] {
        ak(&self.xdout(rand))
    }

    /// Every output for one (RAND, SQN, AMF).
    pub fn compute(&self, rand: &[u8; 16], sqn: &[u8; 6], amf: &[u8; 2]) -> AkaVector {
        let x = self.xdout(rand);
        let m = mac(&x, sqn, amf);
        let a = ak(&x);
        AkaVector::new(m, m, &x, rotl_bytes(&x, 1), rotl_bytes(&x, 2), a, a)
    }
}

fn xor16(a: &[u8; 16], b: &[u8; 16]) -> [u8; 16] {
    let mut out = [0u8; 16];
    for (o, (x, y)) in out.iter_mut().zip(a.iter().zip(b)) {
        *o = x ^ y;
    }
    out
}

fn rotl_bytes(x: &[u8; 16], n: usize) -> [u8; 16] {
    let mut out = *x;
    out.rotate_left(n % 16);
    out
}

fn ak(x: &[u8; 16]) -> [u8; 6] {
    let mut a = [0u8; 6];
    a.copy_from_slice(&x[3..9]);
    a
}

fn mac(x: &[u8; 16], sqn: &[u8; 6], amf: &[u8; 2]) -> [u8; 8] {
    let cdout = [
        sqn[0], sqn[1], sqn[2], sqn[3], sqn[4], sqn[5], amf[0], amf[1],
    ];
    let mut m = [0u8; 8];
    for (i, o) in m.iter_mut().enumerate() {
        *o = x[i] ^ cdout[i];
    }
    m
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::algo::conv::gsm_view;
    use crate::algo::testdata::hex;

    #[test]
    fn xor2g_is_the_spec_definition() {
        let ki = hex::<16>("00112233445566778899aabbccddeeff");
        let rand = hex::<16>("0f0e0d0c0b0a09080706050403020100");
        assert_eq!(
            xor2g(&ki, &rand),
            (hex("0f1f2f3f"), hex("4f5f6f7f8f9fafbf"))
        );
        assert_eq!(xor2g(&[0; 16], &[0; 16]), ([0; 4], [0; 8]));
    }

    /// Outputs of libosmocore 1.7.0 `osmo-auc-gen -3 -a xor -k K -r RAND -s S -f AMF`.
    /// Columns: K, RAND, SQN actually used (osmo-auc-gen 1.7 prints it after `SQN:`), AMF,
    /// AUTN, IK, CK, RES, SRES, Kc.
    const OSMO_XOR3G: &[[&str; 10]] = &[
        [
            "00112233445566778899aabbccddeeff",
            "0f0e0d0c0b0a09080706050403020100",
            "ffffffffffe5",
            "8000",
            "c0b0a090806a8000f0e0d0c0b0baef7f",
            "2f3f4f5f6f7f8f9fafbfcfdfefff0f1f",
            "1f2f3f4f5f6f7f8f9fafbfcfdfefff0f",
            "0f1f2f3f4f5f6f7f8f9fafbfcfdfefff",
            "00000000",
            "0000000000000000",
        ],
        [
            "465b5ce8b199b49faa5f0a2ee238a6bc",
            "23553cbe9637a89d218ae64dae47bf35",
            "000000000021",
            "b9b9",
            "5627ae1c02aab9b9650e6056278fa5bb",
            "605627ae1c028bd5ec634c7f1989650e",
            "0e605627ae1c028bd5ec634c7f198965",
            "650e605627ae1c028bd5ec634c7f1989",
            "850a89be",
            "57b95ebad48e6535",
        ],
        [
            "9e5944aea94b81165c82fbf9f32db751",
            "ce83dbc54ac0274a157c17f80d017bd6",
            "0b604a81ec88",
            "9e09",
            "6083c127b0c19e095bbad5ea0f033855",
            "9f6be38ba65c49feec01fe2ccc8750da",
            "da9f6be38ba65c49feec01fe2ccc8750",
            "50da9f6be38ba65c49feec01fe2ccc87",
            "048319b1",
            "571977bacdb1c23d",
        ],
    ];

    #[test]
    fn xor3g_matches_osmo_auc_gen() {
        for row in OSMO_XOR3G {
            let [k, rand, sqn, amf, autn, ik, ck, res, sres, kc] = *row;
            let (sqn, amf) = (hex::<6>(sqn), hex::<2>(amf));
            let v = Xor3g::new(&hex(k)).compute(&hex(rand), &sqn, &amf);
            assert_eq!(v.autn(&sqn, &amf), hex::<16>(autn), "AUTN {row:?}");
            assert_eq!(v.ik, hex::<16>(ik), "IK {row:?}");
            assert_eq!(v.ck, hex::<16>(ck), "CK {row:?}");
            assert_eq!(v.res(), &hex::<16>(res), "RES {row:?}");
            assert_eq!(gsm_view(&v), (hex(sres), hex(kc)), "GSM view {row:?}");
        }
    }

    #[test]
    fn xor3g_functions_agree_with_compute() {
        let x = Xor3g::new(&hex("465b5ce8b199b49faa5f0a2ee238a6bc"));
        let rand = hex::<16>("23553cbe9637a89d218ae64dae47bf35");
        let (sqn, amf) = (hex::<6>("ff9bb4d0b607"), hex::<2>("b9b9"));
        let v = x.compute(&rand, &sqn, &amf);
        let (res, ck, ik, ak) = x.f2345(&rand);
        assert_eq!(v.res(), &res);
        assert_eq!((v.ck, v.ik, v.ak), (ck, ik, ak));
        assert_eq!(v.mac_a, x.f1(&rand, &sqn, &amf));
        assert_eq!(v.mac_s, x.f1star(&rand, &sqn, &amf));
        assert_eq!(v.ak_star, x.f5star(&rand));
    }
}
