//! What the token applet costs per command on the host (the in-process card and the vpcd
//! virtual card run this code; a Cortex-M3 is slower by orders of magnitude, see the firmware's
//! own measurements): SIGN of a short and a chained 1 KiB message, GENERATE KEY, and the
//! bootstrap's BOOTSTRAP BEGIN (three A3/A8 runs, K, M1, M2).
//!
//! Everything goes through `Token::process` with real APDUs, so parsing, chaining and the
//! response encoding are part of the figure, as on a card.

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use simlab_applet::algo::Algorithm;
use simlab_applet::auth::{Keys, Subscriber};
use simlab_applet::token::bootstrap::{self, BeginRequest, Variant};
use simlab_applet::token::{KEYGEN_REPLACE, PIN_REF, SIGN_P1P2, Token, cla, ins};
use simlab_applet::{Command, Status};

fn subscriber() -> Subscriber {
    Subscriber::new(
        Keys {
            algorithm: Algorithm::Comp128v1,
            ki: [0x42; 16],
            opc: None,
        },
        0,
    )
}

fn run(token: &mut Token, sub: &mut Subscriber, cmd: Command) -> usize {
    let mut out = [0u8; 256];
    match token.process(&cmd, sub, &mut out) {
        Ok(n) => n,
        Err(status) => panic!("{:02X} answered {status}", cmd.ins),
    }
}

/// A token with its PIN verified and a key.
fn ready() -> (Token, Subscriber) {
    let mut token = Token::new(&[0x5E; 32]);
    let mut sub = subscriber();
    run(
        &mut token,
        &mut sub,
        Command::new(0, ins::VERIFY_PIN, 0, PIN_REF).with_data(b"0000\xFF\xFF\xFF\xFF"),
    );
    run(
        &mut token,
        &mut sub,
        Command::new(0, ins::GENERATE_KEY, KEYGEN_REPLACE, 0),
    );
    (token, sub)
}

fn sign(c: &mut Criterion) {
    let (mut token, mut sub) = ready();
    let (p1, p2) = SIGN_P1P2;
    let mut g = c.benchmark_group("token");
    let mut n = 0u64;
    g.bench_function("sign 32 bytes", |b| {
        b.iter(|| {
            n += 1;
            let mut data = [0u8; 32];
            data[..8].copy_from_slice(&n.to_le_bytes());
            let cmd = Command::new(0, ins::SIGN, p1, p2).with_data(&data);
            black_box(run(&mut token, &mut sub, cmd))
        })
    });
    let long = [0xA5u8; 1024];
    g.bench_function("sign 1 KiB chained", |b| {
        b.iter(|| {
            let blocks: Vec<&[u8]> = long.chunks(255).collect();
            let (last, first) = blocks.split_last().unwrap();
            for block in first {
                run(
                    &mut token,
                    &mut sub,
                    Command::new(cla::CHAINING, ins::SIGN, p1, p2).with_data(block),
                );
            }
            black_box(run(
                &mut token,
                &mut sub,
                Command::new(0, ins::SIGN, p1, p2).with_data(last),
            ))
        })
    });
    g.bench_function("keygen", |b| {
        b.iter(|| {
            black_box(run(
                &mut token,
                &mut sub,
                Command::new(0, ins::GENERATE_KEY, KEYGEN_REPLACE, 0),
            ))
        })
    });

    // BOOTSTRAP BEGIN with three triplets, as a gateway would send it.
    let rands = [[0x11u8; 16], [0x22; 16], [0x33; 16]];
    let kcs: Vec<[u8; 8]> = rands.iter().map(|r| sub.gsm(r).unwrap().1).collect();
    let k = bootstrap::k_gsm(&kcs, &rands).unwrap();
    let request = BeginRequest::gsm(
        &rands,
        bootstrap::m1(&k, &rands).unwrap(),
        b"limit=5000",
        b"alice",
    )
    .unwrap();
    let mut data = [0u8; 256];
    let len = request.encode(&mut data).unwrap();
    g.bench_function("bootstrap begin (3 x A3/A8)", |b| {
        b.iter(|| {
            let cmd =
                Command::new(0, ins::BOOTSTRAP_BEGIN, Variant::Gsm.p1(), 0).with_data(&data[..len]);
            let mut out = [0u8; 256];
            let result = token.process(&cmd, &mut sub, &mut out);
            assert_eq!(result.map_err(Status::to_u16), Ok(111));
            black_box(out)
        })
    });
    g.finish();
}

criterion_group!(benches, sign);
criterion_main!(benches);
