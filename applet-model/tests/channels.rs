//! Bad input on logical channels: whatever a command on one channel does — including a channel
//! that is not open, a channel number the card does not have, or garbage — it gets a status
//! word, and the other channels keep their current DF, EF and application. And, as scripts: each
//! channel has its own selected application and its own response waiting for GET RESPONSE.

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

// ----- per-channel selection and GET RESPONSE ---------------------------------------------------
//
// Each script is a list of (command, expected response) in hex, as in `fixtures/apdu/`. "??" as a
// response prints what the card answered instead of comparing (for writing a new script).

/// A card with EF_ICCID personalised, and PIN1 disabled so RUN GSM ALGORITHM needs no VERIFY.
fn scripted_card() -> Card {
    let mut c = card(CardType::Simlab);
    c.personalize(
        simlab_applet::fs::idx::EF_ICCID,
        0,
        &[0x98, 0x94, 0x00, 0x10, 0x32, 0x54, 0x76, 0x98, 0x10, 0xF2],
    )
    .unwrap();
    c
}

fn hex(s: &str) -> Vec<u8> {
    s.split_whitespace()
        .map(|b| u8::from_str_radix(b, 16).unwrap())
        .collect()
}

fn run_script(c: &mut Card, name: &str, steps: &[(&str, &str)]) {
    for (i, (apdu, want)) in steps.iter().enumerate() {
        let mut resp = [0u8; RESPONSE_MAX];
        let n = c.process(&hex(apdu), &mut resp);
        let got: Vec<String> = resp[..n].iter().map(|b| format!("{b:02X}")).collect();
        let got = got.join(" ");
        if *want == "??" {
            println!("{name} step {i}: > {apdu}\n< {got}");
            continue;
        }
        assert_eq!(got, *want, "{name}, step {i}: > {apdu}");
    }
}

const OPEN_1: (&str, &str) = ("00 70 00 01", "90 00");
const OPEN_2: (&str, &str) = ("00 70 00 02", "90 00");
/// SELECT of the token applet by its full AID on channel 1: its FCI waits (13 bytes).
const TOKEN_ON_1: (&str, &str) = ("01 A4 04 00 09 F0 73 69 6D 6C 61 62 54 4B", "61 0D");
const TOKEN_FCI: &str = "6F 0B 84 09 F0 73 69 6D 6C 61 62 54 4B 90 00";
const ICCID: &str = "98 94 00 10 32 54 76 98 10 F2 90 00";
const RUN_GSM: &str = "A0 88 00 00 10 00 11 22 33 44 55 66 77 88 99 AA BB CC DD EE FF";
/// SRES ‖ Kc for [`RUN_GSM`] with the test keys.
const SRES_KC: &str = "A1 70 B7 CE 47 F9 60 F9 85 9A EA 3C 90 00";

#[test]
fn the_token_on_channel_1_and_the_file_system_on_channel_0_answer_side_by_side() {
    let mut c = scripted_card();
    run_script(
        &mut c,
        "token beside files",
        &[
            OPEN_1,
            TOKEN_ON_1,
            // Channel 0 reads EF_ICCID while channel 1's FCI waits.
            ("00 A4 00 0C 02 2F E2", "90 00"),
            ("00 B0 00 00 0A", ICCID),
            ("01 C0 00 00 0D", TOKEN_FCI),
            // The same VERIFY: the token's PIN on channel 1, an unknown reference on channel 0.
            ("01 20 00 80 08 30 30 30 30 FF FF FF FF", "90 00"),
            ("00 20 00 80 08 30 30 30 30 FF FF FF FF", "6A 88"),
            // RUN GSM ALGORITHM in the GSM class (the basic channel) while the token answers
            // GET INFO on channel 1: each response waits on its own channel.
            ("A0 A4 00 00 02 7F 20", "9F 17"),
            (RUN_GSM, "9F 0C"),
            ("01 CA 00 00", "61 06"),
            ("A0 C0 00 00 0C", SRES_KC),
            ("01 C0 00 00 06", "01 08 03 03 00 00 90 00"),
            // Channel 0 still reads its EF; channel 1 is still the token's, whose GET INFO
            // shows the PIN verified (08) and channel 0's VERIFY did not touch it.
            ("00 A4 08 0C 02 2F E2", "90 00"),
            ("00 B0 00 00 0A", ICCID),
            ("01 B0 00 00 0A", "6D 00"),
        ],
    );
    assert_eq!(
        c.channel_view(1).map(|v| v.2),
        Some(&simlab_applet::token::AID[..])
    );
    assert_eq!(c.channel_view(0).map(|v| v.2), Some(&[][..]));
    // The same answers as from a card whose other channels were never used.
    run_script(
        &mut scripted_card(),
        "files alone",
        &[
            ("A0 A4 00 00 02 7F 20", "9F 17"),
            (RUN_GSM, "9F 0C"),
            ("A0 C0 00 00 0C", SRES_KC),
            ("00 A4 08 0C 02 2F E2", "90 00"),
            ("00 B0 00 00 0A", ICCID),
        ],
    );
}

/// SELECT EF_ICCID with its FCP on channel 1, and the MF's on channel 2: two responses waiting.
const ICCID_FCP_ON_1: (&str, &str) = ("01 A4 00 04 02 2F E2", "61 18");
const MF_FCP_ON_2: (&str, &str) = ("02 A4 00 04 02 3F 00", "61 1D");
const ICCID_FCP: &str =
    "62 16 82 02 41 21 83 02 2F E2 8A 01 05 8B 03 2F 06 01 80 02 00 0A 88 00 90 00";
const MF_FCP: &str =
    "62 1B 82 02 78 21 83 02 3F 00 8A 01 05 8B 03 2F 06 01 C6 09 90 01 40 83 01 01 83 01 0A 90 00";

#[test]
fn responses_waiting_on_two_channels_are_each_fetched_by_their_own_get_response() {
    for first in [1, 2] {
        let mut c = scripted_card();
        run_script(
            &mut c,
            "two waiting",
            &[OPEN_1, OPEN_2, ICCID_FCP_ON_1, MF_FCP_ON_2],
        );
        let one: &[(&str, &str)] = &[
            // T=0: a wrong Le is answered with the right one, and the response still waits.
            ("01 C0 00 00 00", "6C 18"),
            ("01 C0 00 00 18", ICCID_FCP),
        ];
        let two: &[(&str, &str)] = &[("02 C0 00 00 1D", MF_FCP)];
        let (a, b) = if first == 1 { (one, two) } else { (two, one) };
        run_script(&mut c, &format!("channel {first} first"), a);
        run_script(&mut c, &format!("channel {first} first, then the other"), b);
    }
}

#[test]
fn get_response_with_nothing_waiting_on_its_channel_is_refused_as_before() {
    let mut c = scripted_card();
    run_script(
        &mut c,
        "nothing waiting",
        &[
            // A fresh card: 6985 in the UICC class, 6F00 in the GSM class.
            ("00 C0 00 00 10", "69 85"),
            ("A0 C0 00 00 10", "6F 00"),
            OPEN_1,
            OPEN_2,
            ("01 C0 00 00 10", "69 85"),
            // A response waiting on channel 1 is not channel 2's.
            ICCID_FCP_ON_1,
            ("02 C0 00 00 18", "69 85"),
            ("00 C0 00 00 18", "69 85"),
            ("01 C0 00 00 18", ICCID_FCP),
            // Fetched once, it is gone.
            ("01 C0 00 00 18", "69 85"),
            // Any other command on the channel drops what waits there.
            ICCID_FCP_ON_1,
            ("01 B0 00 00 0A", ICCID),
            ("01 C0 00 00 18", "69 85"),
        ],
    );
}

#[test]
fn closing_a_channel_drops_its_waiting_response_and_its_selection() {
    let mut c = scripted_card();
    run_script(
        &mut c,
        "close",
        &[
            OPEN_1,
            OPEN_2,
            TOKEN_ON_1,
            MF_FCP_ON_2,
            ("00 70 80 01", "90 00"),
            ("01 C0 00 00 0D", "68 81"),
            OPEN_1,
            // Reopened from the basic channel: at the MF, nothing selected, nothing waiting.
            ("01 C0 00 00 0D", "69 85"),
            ("01 CA 00 00", "6D 00"),
            ("01 B0 00 00 0A", "69 86"),
        ],
    );
    assert_eq!(c.channel_view(1).map(|v| v.2), Some(&[][..]));
    // Channel 2's response outlived channel 1.
    run_script(&mut c, "close, channel 2", &[("02 C0 00 00 1D", MF_FCP)]);
    // A channel closing itself (P2 00) drops its own.
    run_script(
        &mut c,
        "close itself",
        &[
            MF_FCP_ON_2,
            ("02 70 80 00", "90 00"),
            OPEN_2,
            ("02 C0 00 00 1D", "69 85"),
        ],
    );
}

#[test]
fn a_command_on_a_channel_that_is_not_open_leaves_every_other_channel_as_it_was() {
    let mut c = scripted_card();
    run_script(
        &mut c,
        "setup",
        &[
            OPEN_1,
            OPEN_2,
            TOKEN_ON_1,
            ("01 C0 00 00 0D", TOKEN_FCI),
            ("01 20 00 80 08 30 30 30 30 FF FF FF FF", "90 00"),
            ("01 CA 00 00", "61 06"),
            MF_FCP_ON_2,
            ("00 A4 00 0C 02 2F E2", "90 00"),
        ],
    );
    let views: Vec<_> = (0..CHANNELS).map(|ch| c.channel_view(ch)).collect();
    run_script(
        &mut c,
        "channel 3 is not open",
        &[
            ("03 C0 00 00 0D", "68 81"),
            ("03 A4 04 00 09 F0 73 69 6D 6C 61 62 54 4B", "68 81"),
            ("03 A4 00 04 02 3F 00", "68 81"),
            ("03 70 80 00", "68 81"),
            ("03 70 00 02", "68 81"),
            ("83 CA 00 00", "68 81"),
            ("13 20 00 80 08 30 30 30 30 FF FF FF FF", "68 81"),
            ("43 C0 00 00 06", "68 81"),
            ("C1 C0 00 00 06", "68 81"),
        ],
    );
    assert_eq!(
        (0..CHANNELS)
            .map(|ch| c.channel_view(ch))
            .collect::<Vec<_>>(),
        views
    );
    run_script(
        &mut c,
        "the others",
        &[
            ("01 C0 00 00 06", "01 08 03 03 00 00 90 00"),
            ("02 C0 00 00 1D", MF_FCP),
            ("00 B0 00 00 0A", ICCID),
        ],
    );
}
