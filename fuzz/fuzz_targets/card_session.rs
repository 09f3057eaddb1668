//! A session of commands against the card: the input is split into APDUs at each 0xFE marker,
//! so the fuzzer can build multi-command sessions (MANAGE CHANNEL, SELECT on a channel, READ on
//! another, VERIFY then AUTHENTICATE …). The first byte picks the card type and the algorithm.
//! Every command must get a status word and nothing may panic; a command on a channel that is
//! not open, or a channel number the card does not have, must leave every channel as it was,
//! and one on an open channel must leave the other channels' selections alone (MANAGE CHANNEL
//! aside, whose job it is to open and close them).
#![no_main]

use libfuzzer_sys::fuzz_target;
use simlab_applet::algo::Algorithm;
use simlab_applet::card::{CHANNELS, CardType, RESPONSE_MAX};
use simlab_applet::{Card, Config, Keys};

/// The logical channel a CLA addresses, if it is one the card decodes to 0–3.
fn channel_of(cla: u8) -> Option<usize> {
    match cla {
        0xA0 => Some(0),
        c if c & 0x40 == 0 && c & 0x2C == 0 => Some((c & 3) as usize),
        _ => None,
    }
}

fuzz_target!(|data: &[u8]| {
    let first = data.first().copied().unwrap_or(0);
    let algorithm = match first % 3 {
        0 => Algorithm::Comp128v1,
        1 => Algorithm::Xor3g,
        _ => Algorithm::Milenage,
    };
    let types = CardType::ALL;
    let mut config = Config::new(Keys {
        algorithm,
        ki: [0x42; 16],
        opc: Some([0x17; 16]),
    });
    config.card_type = types[(first as usize / 3) % types.len()];
    let mut card = Card::new(&config);
    let mut resp = [0u8; RESPONSE_MAX];
    let body = data.get(1..).unwrap_or_default();
    for apdu in body.split(|&b| b == 0xFE) {
        let before: [_; CHANNELS] = core::array::from_fn(|ch| card.channel_view(ch));
        let open = card.open_channels();
        let n = card.process(apdu, &mut resp);
        assert!(n >= 2);
        let Some(&cla) = apdu.first() else { continue };
        let manage = apdu.get(1) == Some(&0x70);
        let target = channel_of(cla).filter(|&ch| open & (1 << ch) != 0);
        if manage && target.is_some() {
            continue;
        }
        for (ch, view) in before.iter().enumerate() {
            if Some(ch) != target {
                assert_eq!(card.channel_view(ch), *view, "channel {ch} changed");
            }
        }
        assert_eq!(card.open_channels(), open);
    }
});
