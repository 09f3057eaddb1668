//! Property tests: encoding round-trips for any text, and decoding is total
//! (never panics) and stable (decode ∘ encode ∘ decode = decode).

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use proptest::prelude::*;
use simlab_sms::{
    Address, ConcatReference, Pdu, Push, Reassembler, RelativeValidity, Submit, SubmitOptions,
    decode, encodable_in_gsm7, encode_text, hex, plan,
};

/// Every character GSM-7 can encode, extension table included.
fn gsm7_chars() -> &'static [char] {
    static CHARS: OnceLock<Vec<char>> = OnceLock::new();
    CHARS.get_or_init(|| {
        (0..=0x20AC)
            .filter_map(char::from_u32)
            .filter(|&c| encodable_in_gsm7(c.encode_utf8(&mut [0; 4])))
            .collect()
    })
}

fn gsm7_text() -> impl Strategy<Value = String> {
    prop::collection::vec(prop::sample::select(gsm7_chars()), 0..700)
        .prop_map(|chars| chars.into_iter().collect())
}

fn any_text() -> impl Strategy<Value = String> {
    prop::collection::vec(any::<char>(), 0..400).prop_map(|chars| chars.into_iter().collect())
}

fn reference() -> impl Strategy<Value = ConcatReference> {
    prop_oneof![
        any::<u8>().prop_map(ConcatReference::Bits8),
        any::<u16>().prop_map(ConcatReference::Bits16),
    ]
}

/// Encodes, decodes every part, and reassembles; checks every step.
fn round_trip(text: &str, reference: ConcatReference) -> Result<(), TestCaseError> {
    let to = Address::parse("+4917012345678").unwrap();
    let options = SubmitOptions {
        concat_reference: reference,
        ..SubmitOptions::default()
    };
    let parts = encode_text(&to, text, &options).unwrap();
    prop_assert_eq!(parts.len(), plan(text, &options).unwrap().parts);
    let mut per_part = String::new();
    let mut reassembler: Reassembler<Submit> = Reassembler::new(Duration::from_secs(60));
    let now = Instant::now();
    let mut whole = None;
    // Feed the parts in reverse to exercise out-of-order arrival.
    let mut decoded = Vec::new();
    for part in &parts {
        prop_assert!(part.as_bytes().len() <= simlab_sms::MAX_PDU_LEN);
        let d = decode(part.as_bytes(), true).unwrap();
        prop_assert_eq!(d.tpdu_len, part.cmgs_length());
        // Each part decodes to whole characters: no escape or surrogate
        // pair was cut.
        per_part.push_str(&d.pdu.text().unwrap());
        let Pdu::Submit(s) = d.pdu else {
            return Err(TestCaseError::fail("not a SUBMIT"));
        };
        decoded.push(s);
    }
    prop_assert_eq!(&per_part, text);
    for s in decoded.into_iter().rev() {
        if let Push::Complete(m) = reassembler.push(s, now).unwrap() {
            whole = m.text();
        }
    }
    prop_assert_eq!(whole.as_deref(), Some(text));
    Ok(())
}

/// Known-good PDUs to mutate: random bytes alone rarely get past the
/// first fields.
const SEEDS: &[&str] = &[
    "0001000B917228001011F100000CC8329BFD065DDF72363904",
    "07917283010010F5040BC87238880900F10000993092516195800AE8329BFD4697D9EC37",
    "0791021197003899440ED0657A7A1E6687E93408610192016390000E05000365030106440642062F0020",
    "07911326040000F006D60B911326880736F4111011719551401110117195714000",
    "0791447779070652440BD0CDF03C2C4E030004907030714475400E0B05040B8423F000031C02025152",
    "0791449737709499440C914487732760570000807051117230401F06080400230202ED73FBDC3EB7CFED33FC0EBFC3EFF07BFC0EBFC301",
    "0019000B917228001011F100004210708150000000",
    "0006D60B911326880736F411101171955140111011719571400007030004C8329B0D",
];

fn mutated_seed() -> impl Strategy<Value = Vec<u8>> {
    (
        prop::sample::select(SEEDS),
        prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..4),
        any::<prop::sample::Index>(),
        any::<bool>(),
    )
        .prop_map(|(seed, flips, cut, truncate)| {
            let mut bytes = hex::decode(seed).unwrap();
            for (i, b) in flips {
                let i = i.index(bytes.len());
                bytes[i] = b;
            }
            if truncate {
                bytes.truncate(cut.index(bytes.len() + 1));
            }
            bytes
        })
}

/// Decoding never panics; whatever decodes re-encodes, and decodes again
/// to the same value.
fn decode_is_total_and_stable(bytes: &[u8], with_sca: bool) -> Result<(), TestCaseError> {
    let Ok(d) = decode(bytes, with_sca) else {
        return Ok(());
    };
    let _ = d.pdu.text();
    let encoded = d.pdu.encode(d.sca.as_ref()).unwrap();
    let again = decode(encoded.as_bytes(), true).unwrap();
    prop_assert_eq!(again.pdu, d.pdu);
    prop_assert_eq!(again.sca, d.sca);
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn gsm7_text_round_trips(text in gsm7_text(), reference in reference()) {
        round_trip(&text, reference)?;
    }

    #[test]
    fn unicode_text_round_trips(text in any_text(), reference in reference()) {
        round_trip(&text, reference)?;
    }

    #[test]
    fn decode_never_panics_on_noise(
        bytes in prop::collection::vec(any::<u8>(), 0..200),
        with_sca in any::<bool>(),
    ) {
        decode_is_total_and_stable(&bytes, with_sca)?;
    }

    #[test]
    fn decode_never_panics_on_damaged_pdus(bytes in mutated_seed(), with_sca in any::<bool>()) {
        decode_is_total_and_stable(&bytes, with_sca)?;
    }

    #[test]
    fn relative_validity_is_the_smallest_cover(secs in 0u64..=63 * 7 * 86_400, nanos in 0u32..1_000_000_000) {
        let wanted = Duration::new(secs, nanos).min(Duration::from_secs(63 * 7 * 86_400));
        let vp = RelativeValidity::at_least(wanted).unwrap();
        prop_assert!(vp.duration() >= wanted);
        if let Some(smaller) = vp.octet().checked_sub(1) {
            prop_assert!(RelativeValidity::from_octet(smaller).duration() < wanted);
        }
    }

    #[test]
    fn addresses_round_trip(plus in any::<bool>(), digits in "[0-9*#]{1,20}") {
        let text = if plus { format!("+{digits}") } else { digits };
        let address = Address::parse(&text).unwrap();
        prop_assert_eq!(address.to_string(), text);
        let submit = Submit::new(address, simlab_sms::UserData::from_text("x"));
        let encoded = submit.encode(None).unwrap();
        let back = decode(encoded.as_bytes(), true).unwrap();
        prop_assert_eq!(back.pdu, Pdu::Submit(submit));
    }

    #[test]
    fn hex_round_trips(bytes in prop::collection::vec(any::<u8>(), 0..64)) {
        prop_assert_eq!(hex::decode(&hex::encode_upper(&bytes)).unwrap(), bytes.clone());
        prop_assert_eq!(hex::decode(&hex::encode_lower(&bytes)).unwrap(), bytes);
    }
}

/// Inputs the fuzzer found; each once broke decode ∘ encode ∘ decode.
#[test]
fn fuzz_regressions() {
    // Alphanumeric service-centre address whose septets end exactly on an
    // octet boundary: re-encoding must pad with CR, not leave an '@'.
    let crash = hex::decode("08d19b8e72020033f11103 07d19b72340 00bd19b00").unwrap();
    decode_is_total_and_stable(&crash, true).unwrap();
}
