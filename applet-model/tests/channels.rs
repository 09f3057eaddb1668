//! Bad input on logical channels: whatever a command on one channel does — including a channel
//! that is not open, a channel number the card does not have, or garbage — it gets a status
//! word, and the other channels keep their current DF, EF and application.

use proptest::prelude::*;
use simlab_applet::algo::Algorithm;
use simlab_applet::card::{CHANNELS, CardType, RESPONSE_MAX};
use simlab_applet::{Card, Command, Config, Keys};

fn card(t: CardType) -> Card {
    let mut config = Config::new(Keys {
        algorithm: Algorithm::Milenage,
        ki: [0x42; 16],
        opc: Some([0x17; 16]),
    });
    config.card_type = t;
    Card::new(&config)
}

fn send(card: &mut Card, apdu: &[u8]) -> u16 {
    let mut resp = [0u8; RESPONSE_MAX];
    let n = card.process(apdu, &mut resp);
    assert!(n >= 2, "no status word for {apdu:02X?}");
    u16::from_be_bytes([resp[n - 2], resp[n - 1]])
}

/// A card with channels 1–3 open, each somewhere else: ADF.USIM/EF_IMSI, DF_TELECOM/EF_MSISDN
/// (or the ISIM), and the MF's EF_ICCID.
fn three_channels(t: CardType) -> Card {
    let mut c = card(t);
    for ch in 1..CHANNELS as u8 {
        assert_eq!(send(&mut c, &[0x00, 0x70, 0x00, ch]), 0x9000);
    }
    let usim = [
        0x01, 0xA4, 0x04, 0x0C, 0x07, 0xA0, 0, 0, 0, 0x87, 0x10, 0x02,
    ];
    assert_eq!(send(&mut c, &usim), 0x9000);
    assert_eq!(
        send(&mut c, &[0x01, 0xA4, 0x00, 0x0C, 0x02, 0x6F, 0x07]),
        0x9000
    );
    let second: &[u8] = if t.has_isim() {
        &[
            0x02, 0xA4, 0x04, 0x0C, 0x07, 0xA0, 0, 0, 0, 0x87, 0x10, 0x04,
        ]
    } else {
        &[0x02, 0xA4, 0x08, 0x0C, 0x04, 0x7F, 0x10, 0x6F, 0x40]
    };
    assert_eq!(send(&mut c, second), 0x9000);
    assert_eq!(
        send(&mut c, &[0x03, 0xA4, 0x00, 0x0C, 0x02, 0x2F, 0xE2]),
        0x9000
    );
    c
}

fn uicc_types() -> impl Strategy<Value = CardType> {
    proptest::sample::select(
        CardType::ALL
            .into_iter()
            .filter(|t| t.is_uicc())
            .collect::<Vec<_>>(),
    )
}

fn command() -> impl Strategy<Value = (u8, Vec<u8>)> {
    let cla_base = prop_oneof![
        Just(0x00u8),
        Just(0x80),
        Just(0x40),
        Just(0xC0),
        Just(0xA0),
        any::<u8>()
    ];
    let ins = prop_oneof![
        Just(0xA4u8),
        Just(0xC0),
        Just(0xB0),
        Just(0xD6),
        Just(0xB2),
        Just(0xDC),
        Just(0xF2),
        Just(0x70),
        Just(0x88),
        Just(0x04),
        Just(0x44),
        Just(0xA2),
        Just(0x32),
        Just(0xCA),
        any::<u8>()
    ];
    let p = prop_oneof![
        Just(0u8),
        Just(1),
        Just(4),
        Just(0x0C),
        Just(0x80),
        any::<u8>()
    ];
    (
        0u8..6,
        cla_base,
        ins,
        p.clone(),
        p,
        proptest::collection::vec(any::<u8>(), 0..20),
        proptest::option::of(1usize..=256),
    )
        .prop_map(|(ch, base, ins, p1, p2, data, ne)| {
            let cla = match base {
                0x00 | 0x80 => base | (ch & 3),
                0x40 | 0xC0 => base | ch,
                other => other,
            };
            let mut cmd = Command::new(cla, ins, p1, p2).with_data(&data);
            cmd.ne = ne;
            let mut buf = vec![0u8; 300];
            let n = cmd.serialize(&mut buf).unwrap();
            buf.truncate(n);
            (ch, buf)
        })
}

/// The channel a CLA addresses, if it is a basic-interindustry or proprietary 0X/8X class.
fn channel_of(cla: u8) -> Option<usize> {
    match cla {
        0xA0 => Some(0),
        c if c & 0x40 == 0 && c & 0x2C == 0 => Some((c & 3) as usize),
        _ => None,
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1500))]

    #[test]
    fn a_command_on_one_channel_leaves_the_others_alone(
        t in uicc_types(),
        close_three in any::<bool>(),
        cmds in proptest::collection::vec(command(), 1..12),
    ) {
        let mut c = three_channels(t);
        if close_three {
            prop_assert_eq!(send(&mut c, &[0x00, 0x70, 0x80, 0x03]), 0x9000);
        }
        for (_, apdu) in cmds {
            let before: Vec<_> = (0..CHANNELS).map(|ch| c.channel_view(ch)).collect();
            let was_open = c.open_channels();
            send(&mut c, &apdu);
            let cla = apdu[0];
            let ins = apdu.get(1).copied();
            // MANAGE CHANNEL may open or close other channels; that is its job.
            let manage = ins == Some(0x70) && channel_of(cla).is_some();
            let target = channel_of(cla).filter(|&ch| was_open & (1 << ch) != 0);
            for (ch, view) in before.iter().enumerate() {
                if Some(ch) == target || manage {
                    continue;
                }
                prop_assert_eq!(
                    c.channel_view(ch),
                    *view,
                    "channel {} changed by {:02X?} on {:?}",
                    ch,
                    apdu,
                    t
                );
            }
            if !manage {
                prop_assert_eq!(c.open_channels(), was_open, "{:02X?}", apdu);
            }
        }
    }
}

#[test]
fn every_card_type_answers_every_channel_with_a_status_word() {
    for t in CardType::ALL {
        let mut c = card(t);
        for cla in 0..=255u8 {
            for ins in [0xA4, 0xB0, 0x70, 0xF2, 0xC0, 0x88, 0x00] {
                send(&mut c, &[cla, ins, 0, 0]);
                send(&mut c, &[cla, ins, 0, 0, 0x02, 0x3F, 0x00]);
            }
        }
    }
}
