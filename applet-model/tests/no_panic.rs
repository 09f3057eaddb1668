//! Properties that must hold for every input: the APDU codec round-trips and never panics, and
//! the card answers anything — random bytes, or random but plausible commands in random order —
//! with a status word, never a panic.

use proptest::prelude::*;
use simlab_applet::algo::Algorithm;
use simlab_applet::card::RESPONSE_MAX;
use simlab_applet::{Card, Command, Config, Keys, Response};

fn card(algorithm: Algorithm) -> Card {
    Card::new(&Config::new(Keys {
        algorithm,
        ki: [0x42; 16],
        opc: Some([0x17; 16]),
    }))
}

fn plausible_command() -> impl Strategy<Value = Vec<u8>> {
    let cla = prop_oneof![Just(0x00u8), Just(0xA0), Just(0x80), any::<u8>()];
    let ins = prop_oneof![
        Just(0xA4u8),
        Just(0xC0),
        Just(0xB0),
        Just(0xD6),
        Just(0xB2),
        Just(0xDC),
        Just(0x20),
        Just(0x24),
        Just(0x26),
        Just(0x28),
        Just(0x2C),
        Just(0x88),
        Just(0xF2),
        any::<u8>()
    ];
    let p = prop_oneof![
        Just(0u8),
        Just(4),
        Just(0x0C),
        Just(0x81),
        Just(1),
        any::<u8>()
    ];
    (
        cla,
        ins,
        p.clone(),
        p,
        proptest::collection::vec(any::<u8>(), 0..40),
        proptest::option::of(1usize..=256),
    )
        .prop_map(|(cla, ins, p1, p2, data, ne)| {
            let mut cmd = Command::new(cla, ins, p1, p2).with_data(&data);
            cmd.ne = ne;
            let mut buf = vec![0u8; 300];
            let n = cmd.serialize(&mut buf).unwrap();
            buf.truncate(n);
            buf
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn parsing_never_panics_and_reserialises_identically(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
        if let Ok(cmd) = Command::parse(&bytes) {
            let mut out = vec![0u8; 300];
            let n = cmd.serialize(&mut out).unwrap();
            prop_assert_eq!(&out[..n], &bytes[..]);
        }
    }

    #[test]
    fn built_commands_round_trip(
        cla in any::<u8>(), ins in any::<u8>(), p1 in any::<u8>(), p2 in any::<u8>(),
        data in proptest::collection::vec(any::<u8>(), 0..400),
        ne in proptest::option::of(1usize..=65536),
    ) {
        let mut cmd = Command::new(cla, ins, p1, p2).with_data(&data);
        cmd.ne = ne;
        let mut out = vec![0u8; 500];
        let n = cmd.serialize(&mut out).unwrap();
        let back = Command::parse(&out[..n]).unwrap();
        prop_assert_eq!((back.cla, back.ins, back.p1, back.p2, back.data, back.ne), (cla, ins, p1, p2, &data[..], ne));
    }

    #[test]
    fn the_card_answers_random_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
        let mut c = card(Algorithm::Milenage);
        let mut resp = [0u8; RESPONSE_MAX];
        let n = c.process(&bytes, &mut resp);
        prop_assert!(n >= 2);
        prop_assert!(Response::parse(&resp[..n]).is_some());
    }

    #[test]
    fn the_card_survives_plausible_sessions(
        cmds in proptest::collection::vec(plausible_command(), 1..40),
        alg in prop_oneof![Just(Algorithm::Comp128v1), Just(Algorithm::Xor3g), Just(Algorithm::Milenage)],
        short in 0usize..RESPONSE_MAX,
    ) {
        let mut c = card(alg);
        let mut resp = [0u8; RESPONSE_MAX];
        for cmd in &cmds {
            let n = c.process(cmd, &mut resp);
            prop_assert!((2..=RESPONSE_MAX).contains(&n));
            // A short response buffer truncates data but never panics.
            let mut small = vec![0u8; short];
            let m = c.process(cmd, &mut small);
            prop_assert!(m <= short);
        }
    }
}
