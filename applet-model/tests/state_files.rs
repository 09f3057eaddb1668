//! Golden card states, one per state-format version (`fixtures/state/v<N>.state`): every one
//! must still load into today's card, with the counters, files and keys it was saved with.
//!
//! Each file comes from [`scenario`] run by the code of its own version (see
//! `fixtures/state/README.md`), so a migration that drops or shifts a byte fails here rather
//! than on a lab user's card. Write the current version's file with
//! `SIMLAB_WRITE_GOLDEN=1 cargo test -p simlab-applet --test state_files -- --ignored`.

use simlab_applet::algo::Algorithm;
use simlab_applet::card::{CardType, RESPONSE_MAX};
use simlab_applet::fs::idx;
use simlab_applet::state::{StateError, VERSION};
use simlab_applet::{Card, Config, Keys, Status};
use std::path::{Path, PathBuf};

fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/state")
}

const KI: [u8; 16] = [
    0x46, 0x5b, 0x5c, 0xe8, 0xb1, 0x99, 0xb4, 0x9f, 0xaa, 0x5f, 0x0a, 0x2e, 0xe2, 0x38, 0xa6, 0xbc,
];
const OPC: [u8; 16] = [
    0xcd, 0x63, 0xcb, 0x71, 0x95, 0x4a, 0x9f, 0x4e, 0x48, 0xa5, 0x99, 0x4e, 0x37, 0xa0, 0x2b, 0xaf,
];
/// EF_IMSI for 001010123456789.
const IMSI: [u8; 9] = [0x08, 0x09, 0x10, 0x10, 0x10, 0x32, 0x54, 0x76, 0x98];
const SPN: &[u8] = b"\x01golden";

/// The card every golden file was saved from, before its state is loaded: an SJA2 with
/// TS 35.208 test set 1 keys, PIN1 1234 enabled.
fn config() -> Config {
    let mut config = Config::new(Keys {
        algorithm: Algorithm::Milenage,
        ki: [0; 16],
        opc: Some([0; 16]),
    });
    config.card_type = CardType::SysmoIsimSja2;
    config.pin1 = *b"1234\xff\xff\xff\xff";
    config.pin1_enabled = true;
    config.token_seed = [7; 32];
    config.sqn = 0xff9bb4d0b5e7;
    config
}

fn run(card: &mut Card, apdu: &[u8]) -> Vec<u8> {
    let mut resp = [0u8; RESPONSE_MAX];
    let n = card.process(apdu, &mut resp);
    resp[..n].to_vec()
}

fn sw(resp: &[u8]) -> Status {
    Status::from_u16(u16::from_be_bytes([
        resp[resp.len() - 2],
        resp[resp.len() - 1],
    ]))
}

fn hex(s: &str) -> Vec<u8> {
    let s: String = s.split_whitespace().collect();
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

const AUTHENTICATE: &str = "00 88 00 81 22 10 23 55 3C BE 96 37 A8 9D 21 8A E6 4D AE 47 BF 35 \
     10 55 F3 28 B4 35 77 B9 B9 4A 9F FA C3 54 DF AF B3";

/// What the saved card went through: keys written through the vendor key file (not the
/// config), a changed SPN and IMSI, an accepted AKA (SQN ff9bb4d0b607), then one wrong PIN1.
fn scenario() -> Card {
    let mut card = Card::new(&config());
    card.personalize(idx::EF_IMSI, 0, &IMSI).unwrap();
    card.personalize(idx::EF_SPN, 0, SPN).unwrap();
    let adm = hex("00 20 00 0A 08 38 38 38 38 38 38 38 38");
    assert_eq!(sw(&run(&mut card, &adm)), Status::Success);
    assert_eq!(
        sw(&run(&mut card, &hex("00 A4 08 0C 04 A5 15 6F 20"))),
        Status::Success
    );
    let mut write = hex("00 D6 00 00 21 04");
    write.extend_from_slice(&KI);
    write.extend_from_slice(&OPC);
    assert_eq!(sw(&run(&mut card, &write)), Status::Success);
    card.reset();
    let pin = hex("00 20 00 01 08 31 32 33 34 FF FF FF FF");
    assert_eq!(sw(&run(&mut card, &pin)), Status::Success);
    let select_usim = hex("00 A4 04 0C 07 A0 00 00 00 87 10 02");
    assert_eq!(sw(&run(&mut card, &select_usim)), Status::Success);
    assert_eq!(
        sw(&run(&mut card, &hex(AUTHENTICATE))),
        Status::BytesAvailable(0x35)
    );
    let wrong = hex("00 20 00 01 08 39 39 39 39 FF FF FF FF");
    assert_eq!(
        sw(&run(&mut card, &wrong)),
        Status::VerifyFailed { tries_left: 2 }
    );
    card
}

#[test]
#[ignore = "writes fixtures/state/v<VERSION>.state; run once per new format version"]
fn write_golden_for_current_version() {
    let path = dir().join(format!("v{VERSION}.state"));
    if path.exists() && std::env::var_os("SIMLAB_WRITE_GOLDEN").is_none() {
        panic!(
            "{} exists; set SIMLAB_WRITE_GOLDEN=1 to replace it",
            path.display()
        );
    }
    let card = scenario();
    let mut bytes = vec![0u8; simlab_applet::state::STATE_LEN];
    assert_eq!(card.save_state(&mut bytes), bytes.len());
    std::fs::write(&path, bytes).unwrap();
}

fn golden_files() -> Vec<(u8, PathBuf)> {
    let mut files: Vec<(u8, PathBuf)> = std::fs::read_dir(dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "state"))
        .map(|p| {
            let stem = p.file_stem().unwrap().to_str().unwrap();
            let v: u8 = stem.strip_prefix('v').and_then(|v| v.parse().ok()).unwrap();
            (v, p)
        })
        .collect();
    files.sort();
    files
}

#[test]
fn every_golden_state_loads_with_what_it_was_saved_with() {
    let files = golden_files();
    assert!(
        files.iter().any(|(v, _)| *v == VERSION),
        "no golden file for the current version {VERSION}: {files:?}"
    );
    for (version, path) in files {
        let bytes = std::fs::read(&path).unwrap();
        let mut card = Card::new(&config());
        card.restore_state(&bytes)
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let what = format!("v{version}");
        assert_eq!(card.tries()[0], 2, "{what}: PIN1 tries");
        assert_eq!(card.file_content(idx::EF_IMSI), IMSI, "{what}: IMSI");
        assert_eq!(
            &card.file_content(idx::EF_SPN)[..SPN.len()],
            SPN,
            "{what}: SPN"
        );
        assert_eq!(card.sqn().highest(), 0xff9bb4d0b607, "{what}: SQN");
        // The keys came through: PIN1, then the GSM context gives test set 1's SRES/Kc.
        let pin = hex("00 20 00 01 08 31 32 33 34 FF FF FF FF");
        assert_eq!(sw(&run(&mut card, &pin)), Status::Success, "{what}");
        run(&mut card, &hex("00 A4 04 0C 07 A0 00 00 00 87 10 02"));
        let gsm = hex("00 88 00 80 11 10 23 55 3C BE 96 37 A8 9D 21 8A E6 4D AE 47 BF 35");
        assert_eq!(
            sw(&run(&mut card, &gsm)),
            Status::BytesAvailable(0x0E),
            "{what}"
        );
        assert_eq!(
            run(&mut card, &hex("00 C0 00 00 0E")),
            hex("04 46 F8 41 6A 08 EA E4 BE 82 3A F9 A0 8B 90 00"),
            "{what}: SRES/Kc"
        );
        // The replayed AKA is refused: the SQN window survived.
        run(&mut card, &hex(AUTHENTICATE));
        assert_eq!(
            run(&mut card, &hex("00 C0 00 00 01"))[0],
            0xDC,
            "{what}: replay must be a sync failure"
        );
    }
}

#[test]
fn a_newer_version_is_refused_whole() {
    let (_, path) = golden_files().pop().unwrap();
    let mut bytes = std::fs::read(path).unwrap();
    bytes[4] = VERSION + 1;
    let mut card = scenario();
    let before = card.tries();
    assert_eq!(
        card.restore_state(&bytes),
        Err(StateError::UnsupportedVersion(VERSION + 1))
    );
    assert_eq!(card.tries(), before, "nothing was loaded");
}

#[test]
fn a_state_of_another_card_type_is_refused_unless_the_card_adopts_it() {
    let (_, path) = golden_files().pop().unwrap();
    let bytes = std::fs::read(path).unwrap();
    let mut config = config();
    config.card_type = CardType::SysmoUsimSjs1;
    let mut sjs1 = Card::new(&config);
    let err = sjs1.restore_state(&bytes).unwrap_err();
    assert_eq!(
        err,
        StateError::WrongCardType {
            saved: "sysmoISIM-SJA2",
            card: "sysmoUSIM-SJS1"
        }
    );
    assert!(err.to_string().contains("nothing was loaded"), "{err}");
    assert_eq!(sjs1.tries()[0], 3);
    // The firmware's generic card becomes what its image says.
    sjs1.restore_state_adopting_type(&bytes).unwrap();
    assert_eq!(sjs1.card_type(), CardType::SysmoIsimSja2);
    assert_eq!(sjs1.tries()[0], 2);
}

/// Version 2 kept EF_MSISDN in 26-byte records; the sysmocom cards' have 34. The migrated
/// record keeps its alpha identifier at the front and its 14-byte number part at the end.
#[test]
fn a_v2_dialling_number_record_keeps_alpha_and_number_apart_when_it_grows() {
    let mut bytes = std::fs::read(dir().join("v2.state")).unwrap();
    // v2 arena: after magic, version and the 281 bytes of secrets; EF_MSISDN after EF_ICCID
    // (10), EF_DIR (2 × 32) and EF_ARR (6 × 24).
    let msisdn_at = 5 + 281 + 10 + 64 + 144;
    let mut record = [0xFF; 26];
    record[..3].copy_from_slice(b"Lab");
    let number = [
        0x07, 0x91, 0x94, 0x71, 0x00, 0x00, 0x00, 0xF1, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF,
    ];
    record[12..].copy_from_slice(&number);
    bytes[msisdn_at..msisdn_at + 26].copy_from_slice(&record);
    let body = bytes.len() - 4;
    let crc = simlab_applet::state::crc32(&bytes[..body]).to_be_bytes();
    bytes[body..].copy_from_slice(&crc);
    let mut card = Card::new(&config());
    card.restore_state(&bytes).unwrap();
    let got = &card.file_content(idx::EF_MSISDN)[..34];
    assert_eq!(&got[..3], b"Lab");
    assert!(got[3..20].iter().all(|&b| b == 0xFF), "{got:02X?}");
    assert_eq!(&got[20..], &number);
}
