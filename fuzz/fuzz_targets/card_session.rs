//! A session of commands against the card: the input is split into APDUs at each 0xFF 0xFE
//! marker, so the fuzzer can build multi-command sessions (SELECT then READ, VERIFY then
//! AUTHENTICATE …). Every command must get a status word, and nothing may panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use simlab_applet::algo::Algorithm;
use simlab_applet::card::RESPONSE_MAX;
use simlab_applet::{Card, Config, Keys};

fuzz_target!(|data: &[u8]| {
    let algorithm = match data.first().map(|b| b % 3) {
        Some(0) => Algorithm::Comp128v1,
        Some(1) => Algorithm::Xor3g,
        _ => Algorithm::Milenage,
    };
    let mut card = Card::new(&Config::new(Keys {
        algorithm,
        ki: [0x42; 16],
        opc: Some([0x17; 16]),
    }));
    let mut resp = [0u8; RESPONSE_MAX];
    let body = data.get(1..).unwrap_or_default();
    for apdu in body.split(|&b| b == 0xFE) {
        let n = card.process(apdu, &mut resp);
        assert!(n >= 2);
    }
});
