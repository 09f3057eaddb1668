//! Throughput of the codec on the paths the host uses: one GSM-7 SUBMIT
//! (an OTP) encoded and decoded, and a long UCS2 text split, decoded and
//! reassembled.

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use simlab_sms::{
    Address, Pdu, Push, Reassembler, Submit, SubmitOptions, decode, encode_text, encode_text_single,
};

const OTP: &str = "Your simlab code is 493817. It expires in 10 minutes. @example.com #493817";

fn single_part_gsm7(c: &mut Criterion) {
    let to = Address::parse("+27820001111").unwrap();
    let options = SubmitOptions::default();
    let encoded = encode_text_single(&to, OTP, &options).unwrap();

    let mut group = c.benchmark_group("single_gsm7_submit");
    group.throughput(Throughput::Elements(1));
    group.bench_function("encode", |b| {
        b.iter(|| encode_text_single(black_box(&to), black_box(OTP), &options).unwrap())
    });
    group.bench_function("decode", |b| {
        b.iter(|| {
            let d = decode(black_box(encoded.as_bytes()), true).unwrap();
            d.pdu.text().unwrap()
        })
    });
    group.bench_function("encode_decode", |b| {
        b.iter(|| {
            let pdu = encode_text_single(black_box(&to), black_box(OTP), &options).unwrap();
            let d = decode(pdu.as_bytes(), true).unwrap();
            d.pdu.text().unwrap()
        })
    });
    group.finish();
}

fn multipart_ucs2(c: &mut Criterion) {
    let to = Address::parse("+27820001111").unwrap();
    let options = SubmitOptions::default();
    // 300 UTF-16 units: five parts of at most 67.
    let text: String = "Съешь же ещё этих мягких французских булок, да выпей чаю. "
        .chars()
        .cycle()
        .take(300)
        .collect();
    let parts = encode_text(&to, &text, &options).unwrap();
    assert_eq!(parts.len(), 5);

    let mut group = c.benchmark_group("multipart_ucs2_submit");
    group.throughput(Throughput::Elements(1));
    group.bench_function("encode", |b| {
        b.iter(|| encode_text(black_box(&to), black_box(&text), &options).unwrap())
    });
    group.bench_function("encode_decode_reassemble", |b| {
        let now = Instant::now();
        b.iter(|| {
            let parts = encode_text(black_box(&to), black_box(&text), &options).unwrap();
            let mut reassembler: Reassembler<Submit> = Reassembler::new(Duration::from_secs(60));
            let mut whole = None;
            for part in &parts {
                let Pdu::Submit(s) = decode(part.as_bytes(), true).unwrap().pdu else {
                    unreachable!()
                };
                if let Push::Complete(m) = reassembler.push(s, now).unwrap() {
                    whole = m.text();
                }
            }
            whole.unwrap()
        })
    });
    group.finish();
}

criterion_group!(benches, single_part_gsm7, multipart_ucs2);
criterion_main!(benches);
