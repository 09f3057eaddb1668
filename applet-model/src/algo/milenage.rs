//! Milenage (TS 35.205/35.206), the AKA algorithm of USIMs and of every AuC.
//!
//! Built on the RustCrypto `aes` crate, which picks AES-NI / ARMv8 AES at run time on hosts and
//! a constant-time bitsliced software AES on microcontrollers. The constants are the defaults of
//! TS 35.206: r1..r5 = 64, 0, 32, 64, 96 bits; c1..c5 = 0, 1, 2, 4, 8 in the last byte.

use aes::Aes128;
use aes::cipher::array::Array;
use aes::cipher::{BlockCipherEncrypt, KeyInit};

use super::AkaVector;

/// OPc = OP ⊕ E_K(OP): operators provision cards with OPc so that OP never leaves the AuC;
/// this derives it for profiles that only know OP.
pub fn opc(k: &[u8; 16], op: &[u8; 16]) -> [u8; 16] {
    let cipher = Aes128::new(&Array::from(*k));
    opc_with(&cipher, op)
}

fn opc_with(cipher: &Aes128, op: &[u8; 16]) -> [u8; 16] {
    let mut block = Array::from(*op);
    cipher.encrypt_block(&mut block);
    let e: [u8; 16] = block.into();
    (u128::from_be_bytes(e) ^ u128::from_be_bytes(*op)).to_be_bytes()
}

/// Milenage keyed with K and OPc. The AES key schedule is done once here, so reuse one value
/// for several challenges to the same subscriber.
#[derive(Clone)]
pub struct Milenage {
    cipher: Aes128,
    opc: u128,
}

impl core::fmt::Debug for Milenage {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        // K and OPc are secrets: never print them.
        f.write_str("Milenage { .. }")
    }
}

/// c2..c5 of TS 35.206 (c1 is zero).
const C2: u128 = 1;
const C3: u128 = 2;
const C4: u128 = 4;
const C5: u128 = 8;

impl Milenage {
    /// Keys Milenage with K and OPc.
    pub fn new(k: &[u8; 16], opc: &[u8; 16]) -> Self {
        Milenage {
            cipher: Aes128::new(&Array::from(*k)),
            opc: u128::from_be_bytes(*opc),
        }
    }

    /// Keys Milenage with K and OP (derives OPc with the same key schedule).
    pub fn with_op(k: &[u8; 16], op: &[u8; 16]) -> Self {
        let cipher = Aes128::new(&Array::from(*k));
        let opc = u128::from_be_bytes(opc_with(&cipher, op));
        Milenage { cipher, opc }
    }

    /// The OPc in use (what a card profile stores).
    pub fn opc(&self) -> [u8; 16] {
        self.opc.to_be_bytes()
    }

    fn e(&self, x: u128) -> u128 {
        let mut block = Array::from(x.to_be_bytes());
        self.cipher.encrypt_block(&mut block);
        let out: [u8; 16] = block.into();
        u128::from_be_bytes(out)
    }

    /// TEMP = E_K(RAND ⊕ OPc), shared by every function.
    fn temp(&self, rand: &[u8; 16]) -> u128 {
        self.e(u128::from_be_bytes(*rand) ^ self.opc)
    }

    /// The input block of OUT1 (before encryption).
    fn in1(&self, temp: u128, sqn: &[u8; 6], amf: &[u8; 2]) -> u128 {
        let half = u64::from_be_bytes([
            sqn[0], sqn[1], sqn[2], sqn[3], sqn[4], sqn[5], amf[0], amf[1],
        ]);
        let in1 = (u128::from(half) << 64) | u128::from(half);
        temp ^ (in1 ^ self.opc).rotate_left(64)
    }

    /// The input block of OUT2..OUT5: rot(TEMP ⊕ OPc, r) ⊕ c.
    fn in_n(&self, temp: u128, r: u32, c: u128) -> u128 {
        (temp ^ self.opc).rotate_left(r) ^ c
    }

    /// OUT1 = (MAC-A ‖ MAC-S).
    fn out1(&self, rand: &[u8; 16], sqn: &[u8; 6], amf: &[u8; 2]) -> u128 {
        let temp = self.temp(rand);
        self.e(self.in1(temp, sqn, amf)) ^ self.opc
    }

    /// f1: MAC-A, the network authentication code carried in AUTN.
    pub fn f1(&self, rand: &[u8; 16], sqn: &[u8; 6], amf: &[u8; 2]) -> [u8; 8] {
        hi64(self.out1(rand, sqn, amf))
    }

    /// f1*: MAC-S, the card's code in AUTS (TS 33.102 has callers pass AMF 0000 there).
    pub fn f1star(&self, rand: &[u8; 16], sqn: &[u8; 6], amf: &[u8; 2]) -> [u8; 8] {
        lo64(self.out1(rand, sqn, amf))
    }

    /// f2, f3, f4, f5: (RES, CK, IK, AK), in one pass sharing TEMP.
    pub fn f2345(&self, rand: &[u8; 16]) -> ([u8; 8], [u8; 16], [u8; 16], [u8; 6]) {
        let temp = self.temp(rand);
        let mut blocks = [
            Array::from(self.in_n(temp, 0, C2).to_be_bytes()),
            Array::from(self.in_n(temp, 32, C3).to_be_bytes()),
            Array::from(self.in_n(temp, 64, C4).to_be_bytes()),
        ];
        self.cipher.encrypt_blocks(&mut blocks);
        let [o2, o3, o4] = blocks.map(|b| u128::from_be_bytes(b.into()) ^ self.opc);
        (lo64(o2), o3.to_be_bytes(), o4.to_be_bytes(), ak(o2))
    }

    /// f5*: AK*, which masks SQN_MS in AUTS.
    pub fn f5star(&self, rand: &[u8; 16]) -> [u8; 6] {
        let temp = self.temp(rand);
        ak(self.e(self.in_n(temp, 96, C5)) ^ self.opc)
    }

    /// Every output for one (RAND, SQN, AMF) with the minimum of AES calls: TEMP, then OUT1..OUT5
    /// encrypted as one batch (independent blocks, which AES-NI pipelines).
    pub fn compute(&self, rand: &[u8; 16], sqn: &[u8; 6], amf: &[u8; 2]) -> AkaVector {
        let temp = self.temp(rand);
        let mut blocks = [
            Array::from(self.in1(temp, sqn, amf).to_be_bytes()),
            Array::from(self.in_n(temp, 0, C2).to_be_bytes()),
            Array::from(self.in_n(temp, 32, C3).to_be_bytes()),
            Array::from(self.in_n(temp, 64, C4).to_be_bytes()),
            Array::from(self.in_n(temp, 96, C5).to_be_bytes()),
        ];
        self.cipher.encrypt_blocks(&mut blocks);
        let [o1, o2, o3, o4, o5] = blocks.map(|b| u128::from_be_bytes(b.into()) ^ self.opc);
        AkaVector::new(
            hi64(o1),
            lo64(o1),
            &lo64(o2),
            o3.to_be_bytes(),
            o4.to_be_bytes(),
            ak(o2),
            ak(o5),
        )
    }
}

fn hi64(x: u128) -> [u8; 8] {
    ((x >> 64) as u64).to_be_bytes()
}

fn lo64(x: u128) -> [u8; 8] {
    (x as u64).to_be_bytes()
}

/// AK / AK* are the first 48 bits of OUT2 / OUT5.
fn ak(x: u128) -> [u8; 6] {
    let b = x.to_be_bytes();
    [b[0], b[1], b[2], b[3], b[4], b[5]]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::algo::conv::{c2, c3, gsm_view};
    use crate::algo::testdata::{MILENAGE_TS35208, for_each_set, hex};

    /// Every TS 35.208 test set, every output, through every entry point.
    #[test]
    fn ts35208_test_sets() {
        let mut gsm_checked = 0;
        let n = for_each_set(MILENAGE_TS35208, |t| {
            let name = t.str("name");
            let (k, rand) = (t.hex::<16>("k"), t.hex::<16>("rand"));
            let (sqn, amf) = (t.hex::<6>("sqn"), t.hex::<2>("amf"));
            let (op, want_opc) = (t.hex::<16>("op"), t.hex::<16>("opc"));
            let f1 = t.hex::<8>("f1");
            let f1s = t.hex::<8>("f1star");
            let f2 = t.hex::<8>("f2");
            let f3 = t.hex::<16>("f3");
            let f4 = t.hex::<16>("f4");
            let f5 = t.hex::<6>("f5");
            let f5s = t.hex::<6>("f5star");

            assert_eq!(opc(&k, &op), want_opc, "{name}: OPc");
            let by_op = Milenage::with_op(&k, &op);
            assert_eq!(by_op.opc(), want_opc, "{name}: OPc via with_op");
            let m = Milenage::new(&k, &want_opc);

            assert_eq!(m.f1(&rand, &sqn, &amf), f1, "{name}: f1");
            assert_eq!(m.f1star(&rand, &sqn, &amf), f1s, "{name}: f1*");
            assert_eq!(m.f2345(&rand), (f2, f3, f4, f5), "{name}: f2..f5");
            assert_eq!(m.f5star(&rand), f5s, "{name}: f5*");

            for v in [
                m.compute(&rand, &sqn, &amf),
                by_op.compute(&rand, &sqn, &amf),
            ] {
                assert_eq!(v.mac_a, f1, "{name}: compute MAC-A");
                assert_eq!(v.mac_s, f1s, "{name}: compute MAC-S");
                assert_eq!(v.res(), &f2, "{name}: compute RES");
                assert_eq!((v.ck, v.ik), (f3, f4), "{name}: compute CK/IK");
                assert_eq!((v.ak, v.ak_star), (f5, f5s), "{name}: compute AK/AK*");
                let autn = v.autn(&sqn, &amf);
                for i in 0..6 {
                    assert_eq!(autn[i] ^ f5[i], sqn[i], "{name}: AUTN SQN⊕AK");
                }
                assert_eq!(autn[6..8], amf, "{name}: AUTN AMF");
                assert_eq!(autn[8..], f1, "{name}: AUTN MAC");
            }

            // TS 55.205 GSM view: SRES#1 = c2(RES), SRES#2 = RES[0..4] (the alternative
            // derivation some cards offer), Kc = c3(CK, IK).
            if let Some(sres1) = t.get("sres1") {
                let v = m.compute(&rand, &sqn, &amf);
                assert_eq!(c2(&f2), hex::<4>(sres1), "{name}: SRES#1");
                assert_eq!(gsm_view(&v).0, hex::<4>(sres1), "{name}: gsm_view SRES");
                assert_eq!(f2[..4], hex::<4>(t.str("sres2")), "{name}: SRES#2");
                assert_eq!(c3(&f3, &f4), t.hex::<8>("kc"), "{name}: Kc");
                assert_eq!(gsm_view(&v).1, t.hex::<8>("kc"), "{name}: gsm_view Kc");
                gsm_checked += 1;
            }
        });
        assert_eq!(n, 20, "TS 35.208 has 20 test sets");
        assert!(
            gsm_checked >= 19,
            "GSM view checked on {gsm_checked} sets only"
        );
    }

    #[test]
    fn reference_md_test_set_1() {
        let m = Milenage::with_op(
            &hex("465b5ce8b199b49faa5f0a2ee238a6bc"),
            &hex("cdc202d5123e20f62b6d676ac72cb318"),
        );
        assert_eq!(m.opc(), hex::<16>("cd63cb71954a9f4e48a5994e37a02baf"));
        let v = m.compute(
            &hex("23553cbe9637a89d218ae64dae47bf35"),
            &hex("ff9bb4d0b607"),
            &hex("b9b9"),
        );
        assert_eq!(v.mac_a, hex::<8>("4a9ffac354dfafb3"));
        assert_eq!(v.mac_s, hex::<8>("01cfaf9ec4e871e9"));
        assert_eq!(v.res(), &hex::<8>("a54211d5e3ba50bf"));
        assert_eq!(v.ck, hex::<16>("b40ba9a3c58b2a05bbf0d987b21bf8cb"));
        assert_eq!(v.ik, hex::<16>("f769bcd751044604127672711c6d3441"));
        assert_eq!(v.ak, hex::<6>("aa689c648370"));
        assert_eq!(v.ak_star, hex::<6>("451e8beca43b"));
        assert_eq!(gsm_view(&v), (hex("46f8416a"), hex("eae4be823af9a08b")));
    }

    /// AUTS built by the card (SQN_MS, AMF 0000) must round-trip: the AuC recovers SQN_MS with
    /// AK* and checks MAC-S.
    #[test]
    fn auts_round_trip() {
        let m = Milenage::new(
            &hex("465b5ce8b199b49faa5f0a2ee238a6bc"),
            &hex("cd63cb71954a9f4e48a5994e37a02baf"),
        );
        let rand = hex::<16>("23553cbe9637a89d218ae64dae47bf35");
        let sqn_ms = hex::<6>("0000000012e0");
        let auts = m.compute(&rand, &sqn_ms, &[0, 0]).auts(&sqn_ms);
        let ak_star = m.f5star(&rand);
        let mut recovered = [0u8; 6];
        for i in 0..6 {
            recovered[i] = auts[i] ^ ak_star[i];
        }
        assert_eq!(recovered, sqn_ms);
        assert_eq!(auts[6..], m.f1star(&rand, &recovered, &[0, 0]));
    }
}
