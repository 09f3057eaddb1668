//! simlab side of `scripts/bench-algos`: computes N vectors per algorithm and prints
//! `<algorithm> <vectors per second>` (best of 3 runs), the same workload as
//! `scripts/bench-algos.c` runs through libosmocore's `osmo_auth_gen_vec()`.
//!
//! Milenage does per vector what libosmocore's gen_vec does: key K (OPc is stored), compute the
//! quintuplet and the GSM view (SRES/Kc). RAND changes every iteration (splitmix64 of a counter,
//! as in the C program) so nothing is hoisted out of the loop.
//!
//! Usage: `cargo run --release -p simlab-applet --example algo_rate -- [N]`

use std::hint::black_box;
use std::time::Instant;

use simlab_applet::algo::comp128::{comp128v1, comp128v3};
use simlab_applet::algo::conv::gsm_view;
use simlab_applet::algo::milenage::Milenage;

const KI: [u8; 16] = [
    0x46, 0x5b, 0x5c, 0xe8, 0xb1, 0x99, 0xb4, 0x9f, 0xaa, 0x5f, 0x0a, 0x2e, 0xe2, 0x38, 0xa6, 0xbc,
];
const OPC: [u8; 16] = [
    0xcd, 0x63, 0xcb, 0x71, 0x95, 0x4a, 0x9f, 0x4e, 0x48, 0xa5, 0x99, 0x4e, 0x37, 0xa0, 0x2b, 0xaf,
];
const AMF: [u8; 2] = [0xb9, 0xb9];

fn next_rand(counter: &mut u64) -> [u8; 16] {
    let mut out = [0u8; 16];
    for half in out.chunks_exact_mut(8) {
        *counter = counter.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = *counter;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        half.copy_from_slice(&(z ^ (z >> 31)).to_le_bytes());
    }
    out
}

/// Best rate (vectors/s) of 3 runs of `n` calls of `one`.
fn rate(n: u64, mut one: impl FnMut(&[u8; 16], u64) -> u8) -> f64 {
    let mut counter = 0u64;
    let mut best = 0f64;
    let mut acc = 0u8;
    for _ in 0..3 {
        let t0 = Instant::now();
        for i in 0..n {
            let rand = next_rand(&mut counter);
            acc ^= one(&rand, i);
        }
        best = best.max(n as f64 / t0.elapsed().as_secs_f64());
    }
    black_box(acc);
    best
}

fn main() {
    let n: u64 = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(200_000);

    let v1 = rate(n, |rand, _| {
        let (sres, kc) = black_box(comp128v1(black_box(&KI), rand));
        sres[0] ^ kc[7]
    });
    println!("comp128v1 {v1:.0}");

    let v3 = rate(n, |rand, _| {
        let (sres, kc) = black_box(comp128v3(black_box(&KI), rand));
        sres[0] ^ kc[7]
    });
    println!("comp128v3 {v3:.0}");

    let mil = rate(n, |rand, i| {
        // libosmocore advances SQN per vector; so do we.
        let sqn = (0xff9b_b4d0_b607u64 + 32 * (i + 1)).to_be_bytes();
        let sqn = [sqn[2], sqn[3], sqn[4], sqn[5], sqn[6], sqn[7]];
        let m = Milenage::new(black_box(&KI), black_box(&OPC));
        let v = black_box(m.compute(rand, &sqn, &AMF));
        let (sres, kc) = black_box(gsm_view(&v));
        let autn = v.autn(&sqn, &AMF);
        sres[0] ^ kc[7] ^ v.res()[0] ^ autn[15]
    });
    println!("milenage {mil:.0}");
}
