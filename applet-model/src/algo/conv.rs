//! The 3G → 2G conversion functions of TS 33.102 6.8.1.2 (c2, c3).
//!
//! A USIM must still answer a GSM challenge (a 2G-only network, RUN GSM ALGORITHM, or
//! AUTHENTICATE in GSM context): it then derives SRES and Kc from the AKA outputs with these
//! functions. TS 55.205 ("GSM-Milenage") uses the same c2/c3, so the same code serves Milenage
//! and XOR-3G.

use super::AkaVector;

/// c2: SRES = XRES*1 ⊕ XRES*2 ⊕ XRES*3 ⊕ XRES*4, the four 32-bit words of RES zero-padded to
/// 128 bits. Bytes past the 16th are ignored (RES is at most 16 bytes), so any input is valid.
pub fn c2(res: &[u8]) -> [u8; 4] {
    let mut sres = [0u8; 4];
    for (i, b) in res.iter().take(16).enumerate() {
        sres[i & 3] ^= b;
    }
    sres
}

/// c3: Kc = CK1 ⊕ CK2 ⊕ IK1 ⊕ IK2 (the 64-bit halves of CK and IK).
pub fn c3(ck: &[u8; 16], ik: &[u8; 16]) -> [u8; 8] {
    let mut kc = [0u8; 8];
    for (i, k) in kc.iter_mut().enumerate() {
        *k = ck[i] ^ ck[i + 8] ^ ik[i] ^ ik[i + 8];
    }
    kc
}

/// (SRES, Kc) of an AKA vector: what the card answers to a GSM-context challenge.
pub fn gsm_view(v: &AkaVector) -> ([u8; 4], [u8; 8]) {
    (c2(v.res()), c3(&v.ck, &v.ik))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::algo::testdata::hex;

    #[test]
    fn c2_pads_short_res_with_zeros() {
        assert_eq!(c2(&hex::<4>("01020304")), hex("01020304"));
        assert_eq!(c2(&hex::<8>("a54211d5e3ba50bf")), hex("46f8416a"));
        assert_eq!(c2(&hex::<5>("0102030405")), hex("04020304"));
        assert_eq!(c2(&[]), [0; 4]);
        // Past 16 bytes nothing changes.
        let mut long = [0u8; 20];
        long[..4].copy_from_slice(&[1, 2, 3, 4]);
        long[16..].copy_from_slice(&[9, 9, 9, 9]);
        assert_eq!(c2(&long), [1, 2, 3, 4]);
    }

    /// TS 35.208 / 55.205 test set 1 (REFERENCE.md).
    #[test]
    fn c3_reference_vector() {
        let ck = hex::<16>("b40ba9a3c58b2a05bbf0d987b21bf8cb");
        let ik = hex::<16>("f769bcd751044604127672711c6d3441");
        assert_eq!(c3(&ck, &ik), hex("eae4be823af9a08b"));
    }
}
