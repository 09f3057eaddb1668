//! Per-vector cost of the A3/A8 and AKA algorithms (the AuC computes them in bulk).
//!
//! RAND changes on every iteration (derived from a counter) so the compiler cannot hoist the
//! computation out of the loop; `scripts/bench-algos` compares the same workload with libosmocore.

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use simlab_applet::algo::comp128::{comp128v1, comp128v3};
use simlab_applet::algo::conv::gsm_view;
use simlab_applet::algo::milenage::Milenage;

const KI: [u8; 16] = [
    0x46, 0x5b, 0x5c, 0xe8, 0xb1, 0x99, 0xb4, 0x9f, 0xaa, 0x5f, 0x0a, 0x2e, 0xe2, 0x38, 0xa6, 0xbc,
];
const OPC: [u8; 16] = [
    0xcd, 0x63, 0xcb, 0x71, 0x95, 0x4a, 0x9f, 0x4e, 0x48, 0xa5, 0x99, 0x4e, 0x37, 0xa0, 0x2b, 0xaf,
];
const SQN: [u8; 6] = [0xff, 0x9b, 0xb4, 0xd0, 0xb6, 0x07];
const AMF: [u8; 2] = [0xb9, 0xb9];

/// A RAND that differs on every call (splitmix64 of a counter, twice).
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

fn comp128(c: &mut Criterion) {
    let mut g = c.benchmark_group("comp128");
    let mut n = 0u64;
    g.bench_function("v1", |b| {
        b.iter(|| {
            let rand = next_rand(&mut n);
            black_box(comp128v1(black_box(&KI), &rand))
        })
    });
    g.bench_function("v3", |b| {
        b.iter(|| {
            let rand = next_rand(&mut n);
            black_box(comp128v3(black_box(&KI), &rand))
        })
    });
    g.finish();
}

fn milenage(c: &mut Criterion) {
    let mut g = c.benchmark_group("milenage");
    let mut n = 0u64;
    // What an AuC does per vector when it stores K and OPc: key schedule + all of f1..f5*.
    g.bench_function("new+compute", |b| {
        b.iter(|| {
            let rand = next_rand(&mut n);
            let m = Milenage::new(black_box(&KI), black_box(&OPC));
            black_box(m.compute(&rand, &SQN, &AMF))
        })
    });
    // The same plus SRES/Kc, i.e. the full quintuplet + triplet libosmocore's gen_vec returns.
    g.bench_function("new+compute+gsm_view", |b| {
        b.iter(|| {
            let rand = next_rand(&mut n);
            let m = Milenage::new(black_box(&KI), black_box(&OPC));
            let v = m.compute(&rand, &SQN, &AMF);
            black_box((gsm_view(&v), v))
        })
    });
    // Several challenges for one subscriber: the key schedule is paid once.
    let keyed = Milenage::new(&KI, &OPC);
    g.bench_function("compute (keyed once)", |b| {
        b.iter(|| {
            let rand = next_rand(&mut n);
            black_box(black_box(&keyed).compute(&rand, &SQN, &AMF))
        })
    });
    g.finish();
}

criterion_group!(benches, comp128, milenage);
criterion_main!(benches);
