//! COMP128-1, -2 and -3, the A3/A8 algorithms of classic GSM SIMs.
//!
//! They are here because real cards (sysmoSIM-GR1, sysmoUSIM, ...) ship with them and the
//! simulated card must answer RUN GSM ALGORITHM exactly as a real one. COMP128-1 is broken (Ki
//! can be recovered from ~2^15 challenges): never use it for anything but testing.
//!
//! The algorithm descriptions follow the public reverse-engineering work (Briceno, Goldberg and
//! Wagner for v1; Tamas Jos for v2/v3); the tables are the published constants. The code is
//! written for speed (the AuC side computes many vectors): fixed-size arrays, masked indices so
//! that every bounds check folds away, loops with constant trip counts that the compiler unrolls,
//! and the v1 bit permutation done on a `u128` with eight rotations instead of 128 bit moves.

/// COMP128 v1 table 0.
#[rustfmt::skip]
const T0: [u8; 512] = [
    102, 177, 186, 162,   2, 156, 112,  75,  55,  25,   8,  12, 251, 193, 246, 188,
    109, 213, 151,  53,  42,  79, 191, 115, 233, 242, 164, 223, 209, 148, 108, 161,
    252,  37, 244,  47,  64, 211,   6, 237, 185, 160, 139, 113,  76, 138,  59,  70,
     67,  26,  13, 157,  63, 179, 221,  30, 214,  36, 166,  69, 152, 124, 207, 116,
    247, 194,  41,  84,  71,   1,  49,  14,  95,  35, 169,  21,  96,  78, 215, 225,
    182, 243,  28,  92, 201, 118,   4,  74, 248, 128,  17,  11, 146, 132, 245,  48,
    149,  90, 120,  39,  87, 230, 106, 232, 175,  19, 126, 190, 202, 141, 137, 176,
    250,  27, 101,  40, 219, 227,  58,  20,  51, 178,  98, 216, 140,  22,  32, 121,
     61, 103, 203,  72,  29, 110,  85, 212, 180, 204, 150, 183,  15,  66, 172, 196,
     56, 197, 158,   0, 100,  45, 153,   7, 144, 222, 163, 167,  60, 135, 210, 231,
    174, 165,  38, 249, 224,  34, 220, 229, 217, 208, 241,  68, 206, 189, 125, 255,
    239,  54, 168,  89, 123, 122,  73, 145, 117, 234, 143,  99, 129, 200, 192,  82,
    104, 170, 136, 235,  93,  81, 205, 173, 236,  94, 105,  52,  46, 228, 198,   5,
     57, 254,  97, 155, 142, 133, 199, 171, 187,  50,  65, 181, 127, 107, 147, 226,
    184, 218, 131,  33,  77,  86,  31,  44,  88,  62, 238,  18,  24,  43, 154,  23,
     80, 159, 134, 111,   9, 114,   3,  91,  16, 130,  83,  10, 195, 240, 253, 119,
    177, 102, 162, 186, 156,   2,  75, 112,  25,  55,  12,   8, 193, 251, 188, 246,
    213, 109,  53, 151,  79,  42, 115, 191, 242, 233, 223, 164, 148, 209, 161, 108,
     37, 252,  47, 244, 211,  64, 237,   6, 160, 185, 113, 139, 138,  76,  70,  59,
     26,  67, 157,  13, 179,  63,  30, 221,  36, 214,  69, 166, 124, 152, 116, 207,
    194, 247,  84,  41,   1,  71,  14,  49,  35,  95,  21, 169,  78,  96, 225, 215,
    243, 182,  92,  28, 118, 201,  74,   4, 128, 248,  11,  17, 132, 146,  48, 245,
     90, 149,  39, 120, 230,  87, 232, 106,  19, 175, 190, 126, 141, 202, 176, 137,
     27, 250,  40, 101, 227, 219,  20,  58, 178,  51, 216,  98,  22, 140, 121,  32,
    103,  61,  72, 203, 110,  29, 212,  85, 204, 180, 183, 150,  66,  15, 196, 172,
    197,  56,   0, 158,  45, 100,   7, 153, 222, 144, 167, 163, 135,  60, 231, 210,
    165, 174, 249,  38,  34, 224, 229, 220, 208, 217,  68, 241, 189, 206, 255, 125,
     54, 239,  89, 168, 122, 123, 145,  73, 234, 117,  99, 143, 200, 129,  82, 192,
    170, 104, 235, 136,  81,  93, 173, 205,  94, 236,  52, 105, 228,  46,   5, 198,
    254,  57, 155,  97, 133, 142, 171, 199,  50, 187, 181,  65, 107, 127, 226, 147,
    218, 184,  33, 131,  86,  77,  44,  31,  62,  88,  18, 238,  43,  24,  23, 154,
    159,  80, 111, 134, 114,   9,  91,   3, 130,  16,  10,  83, 240, 195, 119, 253,
];

/// COMP128 v1 table 1.
#[rustfmt::skip]
const T1: [u8; 256] = [
     19,  11,  80, 114,  43,   1,  69,  94,  39,  18, 127, 117,  97,   3,  85,  43,
     27, 124,  70,  83,  47,  71,  63,  10,  47,  89,  79,   4,  14,  59,  11,   5,
     35, 107, 103,  68,  21,  86,  36,  91,  85, 126,  32,  50, 109,  94, 120,   6,
     53,  79,  28,  45,  99,  95,  41,  34,  88,  68,  93,  55, 110, 125, 105,  20,
     90,  80,  76,  96,  23,  60,  89,  64, 121,  56,  14,  74, 101,   8,  19,  78,
     76,  66, 104,  46, 111,  50,  32,   3,  39,   0,  58,  25,  92,  22,  18,  51,
     57,  65, 119, 116,  22, 109,   7,  86,  59,  93,  62, 110,  78,  99,  77,  67,
     12, 113,  87,  98, 102,   5,  88,  33,  38,  56,  23,   8,  75,  45,  13,  75,
     95,  63,  28,  49, 123, 120,  20, 112,  44,  30,  15,  98, 106,   2, 103,  29,
     82, 107,  42, 124,  24,  30,  41,  16, 108, 100, 117,  40,  73,  40,   7, 114,
     82, 115,  36, 112,  12, 102, 100,  84,  92,  48,  72,  97,   9,  54,  55,  74,
    113, 123,  17,  26,  53,  58,   4,   9,  69, 122,  21, 118,  42,  60,  27,  73,
    118, 125,  34,  15,  65, 115,  84,  64,  62,  81,  70,   1,  24, 111, 121,  83,
    104,  81,  49, 127,  48, 105,  31,  10,   6,  91,  87,  37,  16,  54, 116, 126,
     31,  38,  13,   0,  72, 106,  77,  61,  26,  67,  46,  29,  96,  37,  61,  52,
    101,  17,  44, 108,  71,  52,  66,  57,  33,  51,  25,  90,   2, 119, 122,  35,
];

/// COMP128 v1 table 2.
#[rustfmt::skip]
const T2: [u8; 128] = [
     52,  50,  44,   6,  21,  49,  41,  59,  39,  51,  25,  32,  51,  47,  52,  43,
     37,   4,  40,  34,  61,  12,  28,   4,  58,  23,   8,  15,  12,  22,   9,  18,
     55,  10,  33,  35,  50,   1,  43,   3,  57,  13,  62,  14,   7,  42,  44,  59,
     62,  57,  27,   6,   8,  31,  26,  54,  41,  22,  45,  20,  39,   3,  16,  56,
     48,   2,  21,  28,  36,  42,  60,  33,  34,  18,   0,  11,  24,  10,  17,  61,
     29,  14,  45,  26,  55,  46,  11,  17,  54,  46,   9,  24,  30,  60,  32,   0,
     20,  38,   2,  30,  58,  35,   1,  16,  56,  40,  23,  48,  13,  19,  19,  27,
     31,  53,  47,  38,  63,  15,  49,   5,  37,  53,  25,  36,  63,  29,   5,   7,
];

/// COMP128 v1 table 3.
#[rustfmt::skip]
const T3: [u8; 64] = [
      1,   5,  29,   6,  25,   1,  18,  23,  17,  19,   0,   9,  24,  25,   6,  31,
     28,  20,  24,  30,   4,  27,   3,  13,  15,  16,  14,  18,   4,   3,   8,   9,
     20,   0,  12,  26,  21,   8,  28,   2,  29,   2,  15,   7,  11,  22,  14,  10,
     17,  21,  12,  30,  26,  27,  16,  31,  11,   7,  13,  23,  10,   5,  22,  19,
];

/// COMP128 v1 table 4.
#[rustfmt::skip]
const T4: [u8; 32] = [
     15,  12,  10,   4,   1,  14,  11,   7,   5,   0,  14,   7,   1,   2,  13,   8,
     10,   3,   4,   9,   6,   0,   3,   2,   5,   6,   8,   9,  11,  13,  15,  12,
];

/// COMP128 v2/v3 table 0.
#[rustfmt::skip]
const V0: [u8; 256] = [
    197, 235,  60, 151,  98,  96,   3, 100, 248, 118,  42, 117, 172, 211, 181, 203,
     61, 126, 156,  87, 149, 224,  55, 132, 186,  63, 238, 255,  85,  83, 152,  33,
    160, 184, 210, 219, 159,  11, 180, 194, 130, 212, 147,   5, 215,  92,  27,  46,
    113, 187,  52,  25, 185,  79, 221,  48,  70,  31, 101,  15, 195, 201,  50, 222,
    137, 233, 229, 106, 122, 183, 178, 177, 144, 207, 234, 182,  37, 254, 227, 231,
     54, 209, 133,  65, 202,  69, 237, 220, 189, 146, 120,  68,  21, 125,  38,  30,
      2, 155,  53, 196, 174, 176,  51, 246, 167,  76, 110,  20,  82, 121, 103, 112,
     56, 173,  49, 217, 252,   0, 114, 228, 123,  12,  93, 161, 253, 232, 240, 175,
     67, 128,  22, 158,  89,  18,  77, 109, 190,  17,  62,   4, 153, 163,  59, 145,
    138,   7,  74, 205,  10, 162,  80,  45, 104, 111, 150, 214, 154,  28, 191, 169,
    213,  88, 193, 198, 200, 245,  39, 164, 124,  84,  78,   1, 188, 170,  23,  86,
    226, 141,  32,   6, 131, 127, 199,  40, 135,  16,  57,  71,  91, 225, 168, 242,
    206,  97, 166,  44,  14,  90, 236, 239, 230, 244, 223, 108, 102, 119, 148, 251,
     29, 216,   8,   9, 249, 208,  24, 105,  94,  34,  64,  95, 115,  72, 134, 204,
     43, 247, 243, 218,  47,  58,  73, 107, 241, 179, 116,  66,  36, 143,  81, 250,
    139,  19,  13, 142, 140, 129, 192,  99, 171, 157, 136,  41,  75,  35, 165,  26,
];

/// COMP128 v2/v3 table 1.
#[rustfmt::skip]
const V1: [u8; 256] = [
    170,  42,  95, 141, 109,  30,  71,  89,  26, 147, 231, 205, 239, 212, 124, 129,
    216,  79,  15, 185, 153,  14, 251, 162,   0, 241, 172, 197,  43,  10, 194, 235,
      6,  20,  72,  45, 143, 104, 161, 119,  41, 136,  38, 189, 135,  25,  93,  18,
    224, 171, 252, 195,  63,  19,  58, 165,  23,  55, 133, 254, 214, 144, 220, 178,
    156,  52, 110, 225,  97, 183, 140,  39,  53,  88, 219, 167,  16, 198,  62, 222,
     76, 139, 175,  94,  51, 134, 115,  22,  67,   1, 249, 217,   3,   5, 232, 138,
     31,  56, 116, 163,  70, 128, 234, 132, 229, 184, 244,  13,  34,  73, 233, 154,
    179, 131, 215, 236, 142, 223,  27,  57, 246, 108, 211,   8, 253,  85,  66, 245,
    193,  78, 190,   4,  17,   7, 150, 127, 152, 213,  37, 186,   2, 243,  46, 169,
     68, 101,  60, 174, 208, 158, 176,  69, 238, 191,  90,  83, 166, 125,  77,  59,
     21,  92,  49, 151, 168,  99,   9,  50, 146, 113, 117, 228,  65, 230,  40,  82,
     54, 237, 227, 102,  28,  36, 107,  24,  44, 126, 206, 201,  61, 114, 164, 207,
    181,  29,  91,  64, 221, 255,  48, 155, 192, 111, 180, 210, 182, 247, 203, 148,
    209,  98, 173,  11,  75, 123, 250, 118,  32,  47, 240, 202,  74, 177, 100,  80,
    196,  33, 248,  86, 157, 137, 120, 130,  84, 204, 122,  81, 242, 188, 200, 149,
    226, 218, 160, 187, 106,  35,  87, 105,  96, 145, 199, 159,  12, 121, 103, 112,
];

/// One level of the v1 butterfly: `S` (the table size) fixes the level, so the loops and masks
/// are compile-time constants.
#[inline(always)]
fn v1_level<const S: usize>(x: &mut [u8; 32], t: &[u8; S]) {
    // Level n uses a table of 512 >> n entries, pairs elements 16 >> n apart, in 1 << n groups.
    let half = S / 32;
    let groups = 512 / S;
    for i in 0..groups {
        for j in 0..half {
            let a = (j + 2 * half * i) & 31;
            let b = (a + half) & 31;
            let xa = usize::from(x[a]);
            let xb = usize::from(x[b]);
            x[a] = t[(xa + (xb << 1)) & (S - 1)];
            x[b] = t[((xa << 1) + xb) & (S - 1)];
        }
    }
}

/// The five-level compression of COMP128-1; afterwards every byte of `x` holds a nibble.
#[inline(always)]
fn v1_compress(x: &mut [u8; 32]) {
    v1_level(x, &T0);
    v1_level(x, &T1);
    v1_level(x, &T2);
    v1_level(x, &T3);
    v1_level(x, &T4);
}

/// "Form bits from bytes" + permutation: bit `i` of the new `x[16..32]` (MSB first) is bit
/// `17·i mod 128` of the 32 nibbles.
///
/// With `i = 8j + b` that source bit is `(8j + b) + 16b`, so the whole permutation is: for each
/// bit position `b` of a byte, rotate the 128-bit string left by `16b` and keep bit `b` of every
/// byte.
#[inline(always)]
fn v1_permute(x: &mut [u8; 32]) {
    let mut packed = [0u8; 16];
    for (m, p) in packed.iter_mut().enumerate() {
        *p = (x[(2 * m) & 31] << 4) | (x[(2 * m + 1) & 31] & 0x0f);
    }
    let v = u128::from_be_bytes(packed);
    let mut out = 0u128;
    for b in 0..8u32 {
        let mask = u128::from_ne_bytes([0x80u8 >> b; 16]);
        out |= v.rotate_left(16 * b) & mask;
    }
    for (d, s) in x[16..].iter_mut().zip(out.to_be_bytes()) {
        *d = s;
    }
}

/// COMP128-1. Returns (SRES, Kc); the low 10 bits of Kc are always zero (the algorithm only
/// produces 54 key bits, which is one of the reasons it is considered broken).
pub fn comp128v1(ki: &[u8; 16], rand: &[u8; 16]) -> ([u8; 4], [u8; 8]) {
    let mut x = [0u8; 32];
    x[16..].copy_from_slice(rand);
    for round in 0..8 {
        x[..16].copy_from_slice(ki);
        v1_compress(&mut x);
        if round < 7 {
            v1_permute(&mut x);
        }
    }

    let mut sres = [0u8; 4];
    for (i, s) in sres.iter_mut().enumerate() {
        *s = (x[2 * i] << 4) | x[2 * i + 1];
    }
    let mut kc = [0u8; 8];
    for (i, k) in kc.iter_mut().take(6).enumerate() {
        let n = 18 + 2 * i;
        *k = (x[n] << 6) | (x[n + 1] << 2) | (x[n + 2] >> 2);
    }
    kc[6] = (x[30] << 6) | (x[31] << 2);
    kc[7] = 0;
    (sres, kc)
}

/// One round of the v2/v3 internal function; `I` fixes the butterfly stride.
#[inline(always)]
fn v23_round<const I: usize>(km: &mut [u8; 32], temp: &mut [u8; 16]) {
    for (z, t) in temp.iter_mut().enumerate() {
        *t = V0[usize::from(V1[usize::from(km[(16 + z) & 31])] ^ km[z & 31])];
    }
    // The writes land in order on cells that later iterations may read: keep the exact order.
    for j in 0..(1usize << I) {
        for k in 0..(1usize << (4 - I)) {
            let t = temp[((k << I) + j) & 15];
            let other = km[((k << I) + 16 + j) & 31];
            km[(((2 * k + 1) << I) + j) & 31] = V0[usize::from(V1[usize::from(t)] ^ other)];
            km[((k << (I + 1)) + j) & 31] = t;
        }
    }
}

/// The v2/v3 internal function: 5 butterfly rounds over RAND ‖ (Ki ⊕ RAND), then a fixed bit
/// selection: output bit `q` (LSB first) is bit `19·(q+1) mod 256` of the 32-byte state.
#[inline(always)]
fn v23_internal(rand: &[u8; 16], kxor: &[u8; 16]) -> [u8; 16] {
    let mut km = [0u8; 32];
    km[..16].copy_from_slice(rand);
    km[16..].copy_from_slice(kxor);
    let mut temp = [0u8; 16];
    v23_round::<0>(&mut km, &mut temp);
    v23_round::<1>(&mut km, &mut temp);
    v23_round::<2>(&mut km, &mut temp);
    v23_round::<3>(&mut km, &mut temp);
    v23_round::<4>(&mut km, &mut temp);

    let mut out = [0u8; 16];
    for (i, o) in out.iter_mut().enumerate() {
        let mut byte = 0u8;
        for j in 0..8 {
            let p = (19 * (8 * i + j + 1)) & 255;
            byte |= ((km[(p >> 3) & 31] >> (p & 7)) & 1) << j;
        }
        *o = byte;
    }
    out
}

/// COMP128-3 (SRES, full 64-bit Kc); COMP128-2 is the same with the low 10 bits of Kc cleared.
pub fn comp128v3(ki: &[u8; 16], rand: &[u8; 16]) -> ([u8; 4], [u8; 8]) {
    let mut rand_mix = [0u8; 16];
    let mut katyvasz = [0u8; 16];
    for i in 0..16 {
        rand_mix[i] = rand[15 - i];
        katyvasz[i] = ki[15 - i] ^ rand[15 - i];
    }
    for _ in 0..8 {
        rand_mix = v23_internal(&rand_mix, &katyvasz);
    }
    // The output is rand_mix reversed; bytes 4..8 of it are dropped.
    let mut sres = [0u8; 4];
    for (i, s) in sres.iter_mut().enumerate() {
        *s = rand_mix[15 - i];
    }
    let mut kc = [0u8; 8];
    for (i, k) in kc.iter_mut().enumerate() {
        *k = rand_mix[7 - i];
    }
    (sres, kc)
}

/// COMP128-2: COMP128-3 with the low 10 bits of Kc forced to zero (54-bit Kc, as deployed).
pub fn comp128v2(ki: &[u8; 16], rand: &[u8; 16]) -> ([u8; 4], [u8; 8]) {
    let (sres, mut kc) = comp128v3(ki, rand);
    kc[6] &= 0xfc;
    kc[7] = 0;
    (sres, kc)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::algo::testdata::{COMP128, hex};

    #[test]
    fn reference_md_vectors() {
        let ki = hex::<16>("112233445566778899AABBCCDDEEFF00");
        let rand = hex::<16>("2233445566778899AABBCCDDEEFF0011");
        assert_eq!(
            comp128v1(&ki, &rand),
            (hex("3c0dcfbd"), hex("f84a72dc312f6000"))
        );

        let ki = [0xaa; 16];
        let rand = [0; 16];
        assert_eq!(
            comp128v2(&ki, &rand),
            (hex("34b4225b"), hex("f16b96e118a85800"))
        );
        assert_eq!(
            comp128v3(&ki, &rand),
            (hex("34b4225b"), hex("f16b96e118a85986"))
        );
    }

    /// Every line of `fixtures/vectors/comp128.txt`: `<alg> <Ki> <RAND> <SRES> <Kc>`.
    #[test]
    fn fixture_vectors() {
        let mut n = 0;
        for line in COMP128.lines() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let mut f = line.split_whitespace();
            let mut next = || f.next().unwrap_or_else(|| panic!("short line {line:?}"));
            let alg = next();
            let ki = hex::<16>(next());
            let rand = hex::<16>(next());
            let want = (hex::<4>(next()), hex::<8>(next()));
            let got = match alg {
                "comp128v1" => comp128v1(&ki, &rand),
                "comp128v2" => comp128v2(&ki, &rand),
                "comp128v3" => comp128v3(&ki, &rand),
                _ => panic!("unknown algorithm in {line:?}"),
            };
            assert_eq!(got, want, "{line}");
            n += 1;
        }
        assert!(n >= 30, "fixture looks truncated ({n} vectors)");
    }

    #[test]
    fn v1_and_v2_kc_low_bits_are_zero() {
        let mut ki = [0u8; 16];
        let mut rand = [0u8; 16];
        for i in 0..64u8 {
            ki[usize::from(i % 16)] = ki[usize::from(i % 16)].wrapping_mul(31).wrapping_add(i);
            rand[usize::from(i / 4)] ^= i.wrapping_mul(97);
            for (sres_kc, full) in [
                (comp128v1(&ki, &rand), None),
                (comp128v2(&ki, &rand), Some(comp128v3(&ki, &rand))),
            ] {
                let (sres, kc) = sres_kc;
                assert_eq!(kc[7], 0);
                assert_eq!(kc[6] & 0x03, 0);
                if let Some((sres3, kc3)) = full {
                    assert_eq!(sres, sres3);
                    assert_eq!(kc[..6], kc3[..6]);
                    assert_eq!(kc[6], kc3[6] & 0xfc);
                }
            }
        }
    }

    /// The rotate-and-mask permutation against the literal bit-by-bit description.
    #[test]
    fn permutation_matches_bitwise_definition() {
        let mut seed = 0x1234_5678u32;
        for _ in 0..200 {
            let mut x = [0u8; 32];
            for b in x.iter_mut() {
                seed ^= seed << 13;
                seed ^= seed >> 17;
                seed ^= seed << 5;
                *b = (seed & 0x0f) as u8;
            }
            let mut bits = [0u8; 128];
            for (i, bit) in bits.iter_mut().enumerate() {
                *bit = (x[i >> 2] >> (3 - (i & 3))) & 1;
            }
            let mut want = [0u8; 16];
            for i in 0..128 {
                want[i >> 3] |= bits[(i * 17) & 127] << (7 - (i & 7));
            }
            v1_permute(&mut x);
            assert_eq!(x[16..], want);
        }
    }
}
