//! Behaviour at the edges: part boundaries, options, construction of the
//! PDUs a virtual modem emits, and reassembly bookkeeping.

use std::time::{Duration, Instant};

use simlab_sms::{
    Address, Alphabet, ConcatReference, Dcs, Deliver, EncodedPdu, Error, MessageClass, Pdu, Plan,
    PortAddressing, Push, Reassembler, RelativeValidity, Status, StatusKind, StatusReport,
    SubmitOptions, TextEncoding, Timestamp, UserData, ValidityPeriod, decode, encode_binary,
    encode_text, encode_text_single, plan, septets,
};

fn to() -> Address {
    Address::parse("+27820001111").unwrap()
}

fn parts(text: &str, options: &SubmitOptions) -> Vec<EncodedPdu> {
    encode_text(&to(), text, options).unwrap()
}

/// Offset of TP-UDL in a SUBMIT to [`to`] without a validity period:
/// first octet, MR, 8 octets of address, PID, DCS.
const UDL_OFFSET: usize = 12;

/// Decodes our own output and returns TP-UDL and the text of each part,
/// checking TP-UDL against the decoded header and payload.
fn udl_and_text(parts: &[EncodedPdu]) -> Vec<(u8, String)> {
    parts
        .iter()
        .map(|p| {
            let d = decode(p.as_bytes(), true).unwrap();
            assert_eq!(d.tpdu_len, p.cmgs_length());
            let ud = d.pdu.user_data().unwrap();
            let header = ud.header.as_ref().map_or(0, |h| h.encoded_len());
            let expected = match d.pdu.dcs().unwrap().alphabet() {
                Alphabet::Gsm7 => septets::septets_for_octets(header) + ud.payload.len(),
                _ => header + ud.payload.len(),
            };
            let udl = p.tpdu()[UDL_OFFSET];
            assert_eq!(usize::from(udl), expected, "TP-UDL");
            (udl, d.pdu.text().unwrap())
        })
        .collect()
}

#[test]
fn single_part_limits() {
    let opts = SubmitOptions::default();
    assert_eq!(parts(&"a".repeat(160), &opts).len(), 1);
    assert_eq!(parts(&"a".repeat(161), &opts).len(), 2);
    // Extension characters count two septets: 80 of them fill one message.
    assert_eq!(parts(&"€".repeat(80), &opts).len(), 1);
    assert_eq!(parts(&"€".repeat(81), &opts).len(), 2);
    assert_eq!(parts(&"ж".repeat(70), &opts).len(), 1);
    assert_eq!(parts(&"ж".repeat(71), &opts).len(), 2);
    // Outside the BMP a character takes two UTF-16 units.
    assert_eq!(parts(&"🙂".repeat(35), &opts).len(), 1);
    assert_eq!(parts(&"🙂".repeat(36), &opts).len(), 2);
    assert_eq!(encode_binary(&to(), &[0; 140], &opts).unwrap().len(), 1);
    assert_eq!(encode_binary(&to(), &[0; 141], &opts).unwrap().len(), 2);
}

#[test]
fn per_part_capacity_8_bit_reference() {
    let opts = SubmitOptions::default();
    let p = udl_and_text(&parts(&"a".repeat(153 * 2 + 1), &opts));
    assert_eq!(p.len(), 3);
    assert_eq!(p[0], (160, "a".repeat(153)));
    assert_eq!(p[2].1, "a");
    let p = udl_and_text(&parts(&"ж".repeat(67 * 2 + 1), &opts));
    assert_eq!(p.len(), 3);
    assert_eq!(p[0], (6 + 134, "ж".repeat(67)));
    let bin = encode_binary(&to(), &[0x55; 134 * 2 + 1], &opts).unwrap();
    assert_eq!(bin.len(), 3);
    let d = decode(bin[0].as_bytes(), true).unwrap();
    assert_eq!(d.pdu.user_data().unwrap().payload.len(), 134);
}

#[test]
fn per_part_capacity_16_bit_reference() {
    let opts = SubmitOptions {
        concat_reference: ConcatReference::Bits16(0xBEEF),
        ..SubmitOptions::default()
    };
    let p = udl_and_text(&parts(&"a".repeat(152 * 2 + 1), &opts));
    assert_eq!(p.len(), 3);
    assert_eq!(p[0], (160, "a".repeat(152)));
    let p = udl_and_text(&parts(&"ж".repeat(66 * 2 + 1), &opts));
    assert_eq!(p.len(), 3);
    assert_eq!(p[0], (7 + 132, "ж".repeat(66)));
    let bin = encode_binary(&to(), &[0x55; 133 * 2 + 1], &opts).unwrap();
    assert_eq!(bin.len(), 3);
    let d = decode(bin[0].as_bytes(), true).unwrap();
    assert_eq!(d.pdu.user_data().unwrap().payload.len(), 133);
    let c = d.pdu.udh().unwrap().concatenation().unwrap();
    assert_eq!(c.reference, ConcatReference::Bits16(0xBEEF));
    assert_eq!((c.total, c.sequence), (3, 1));
}

#[test]
fn escape_sequence_is_never_split() {
    // 152 septets of 'a' leave one septet in the first part: the euro sign
    // (ESC 65) must move to the second part whole.
    let text = format!("{}€{}", "a".repeat(152), "b".repeat(10));
    let p = udl_and_text(&parts(&text, &SubmitOptions::default()));
    assert_eq!(p[0], (7 + 152, "a".repeat(152)));
    assert_eq!(p[1].1, format!("€{}", "b".repeat(10)));
}

#[test]
fn surrogate_pair_is_never_split() {
    let text = format!("{}🙂{}", "ж".repeat(66), "ж".repeat(10));
    let p = udl_and_text(&parts(&text, &SubmitOptions::default()));
    assert_eq!(p[0], (6 + 132, "ж".repeat(66)));
    assert_eq!(p[1].1, format!("🙂{}", "ж".repeat(10)));
}

#[test]
fn options_reach_the_pdu() {
    let opts = SubmitOptions {
        status_report_request: true,
        reject_duplicates: true,
        validity_period: Some(ValidityPeriod::at_least(Duration::from_secs(600)).unwrap()),
        message_reference: 0xFE,
        message_class: Some(MessageClass::Class0),
        service_centre: Some(Address::parse("+27381000015").unwrap()),
        ..SubmitOptions::default()
    };
    let p = parts(&"x".repeat(200), &opts);
    assert_eq!(p.len(), 2);
    for (i, part) in p.iter().enumerate() {
        let d = decode(part.as_bytes(), true).unwrap();
        assert_eq!(d.sca.unwrap().to_string(), "+27381000015");
        let Pdu::Submit(s) = d.pdu else { panic!() };
        assert!(s.status_report_request && s.reject_duplicates);
        assert_eq!(
            s.validity_period,
            Some(ValidityPeriod::Relative(RelativeValidity::from_octet(1)))
        );
        // TP-MR counts up per part, modulo 256.
        assert_eq!(s.message_reference, 0xFEu8.wrapping_add(i as u8));
        assert_eq!(s.dcs.message_class(), Some(MessageClass::Class0));
        assert_eq!(part.as_bytes().len() - part.cmgs_length(), 8);
    }
}

#[test]
fn ports_go_in_every_part() {
    let opts = SubmitOptions {
        ports: Some(PortAddressing::Bits16 {
            destination: 2948,
            originator: 9200,
        }),
        ..SubmitOptions::default()
    };
    // One part holds 140 - 7 header octets = 133 octets.
    let one = encode_binary(&to(), &[1; 133], &opts).unwrap();
    assert_eq!(one.len(), 1);
    let d = decode(one[0].as_bytes(), true).unwrap();
    assert!(d.pdu.udh().unwrap().concatenation().is_none());
    // 134 octets need two parts of up to 140 - 12 = 128.
    let two = encode_binary(&to(), &[1; 134], &opts).unwrap();
    assert_eq!(two.len(), 2);
    for part in &two {
        let d = decode(part.as_bytes(), true).unwrap();
        let udh = d.pdu.udh().unwrap();
        assert!(udh.ports().is_some() && udh.concatenation().is_some());
    }
}

#[test]
fn limits_and_errors() {
    let long = "a".repeat(161);
    let opts = SubmitOptions {
        max_parts: 1,
        ..SubmitOptions::default()
    };
    assert_eq!(
        encode_text(&to(), &long, &opts),
        Err(Error::TooLong { parts: 2, max: 1 })
    );
    assert_eq!(
        encode_text_single(&to(), &long, &SubmitOptions::default()),
        Err(Error::TooLong { parts: 2, max: 1 })
    );
    let zero = SubmitOptions {
        max_parts: 0,
        ..SubmitOptions::default()
    };
    assert!(matches!(
        encode_text(&to(), "hi", &zero),
        Err(Error::InvalidOption { .. })
    ));
    let gsm7 = SubmitOptions {
        encoding: TextEncoding::Gsm7,
        ..SubmitOptions::default()
    };
    assert_eq!(
        encode_text(&to(), "ab🙂", &gsm7),
        Err(Error::NotGsm7 {
            character: '🙂',
            position: 2
        })
    );
    // The empty text is one empty message.
    let empty = parts("", &SubmitOptions::default());
    assert_eq!(empty[0].to_hex(), "0001000B917228001011F1000000");
    // A 255-part message is the most TS 23.040 can number.
    let huge = "a".repeat(153 * 255 + 1);
    assert_eq!(
        encode_text(&to(), &huge, &SubmitOptions::default()),
        Err(Error::TooLong {
            parts: 256,
            max: 255
        })
    );
}

#[test]
fn plan_reports_without_encoding() {
    let p = plan("€uro", &SubmitOptions::default()).unwrap();
    assert_eq!(
        p,
        Plan {
            alphabet: simlab_sms::Alphabet::Gsm7,
            units: 5,
            parts: 1,
            capacity_per_part: 160
        }
    );
    let p = plan(&"ж".repeat(100), &SubmitOptions::default()).unwrap();
    assert_eq!((p.parts, p.capacity_per_part), (2, 67));
}

#[test]
fn single_part_encoder_matches_the_splitter() {
    let opts = SubmitOptions::default();
    for text in ["Hello World!", "Привет", "€[]{}", ""] {
        assert_eq!(
            encode_text_single(&to(), text, &opts).unwrap(),
            parts(text, &opts)[0]
        );
    }
}

#[test]
fn deliver_built_for_a_virtual_modem() {
    let ts = Timestamp::new(24, 5, 17, 9, 30, 0, 8).unwrap();
    let d = Deliver::new(
        Address::alphanumeric("simlab").unwrap(),
        ts,
        UserData::from_text("Your code is 123456"),
    );
    let pdu = d
        .encode(Some(&Address::parse("+27381000015").unwrap()))
        .unwrap();
    let back = decode(pdu.as_bytes(), true).unwrap();
    assert_eq!(back.pdu, Pdu::Deliver(d));
    assert_eq!(back.pdu.address().to_string(), "simlab");
    assert_eq!(
        back.pdu.service_centre_timestamp().unwrap().to_string(),
        "2024-05-17T09:30:00+02:00"
    );
}

#[test]
fn status_report_with_optional_fields() {
    let ts = Timestamp::new(24, 5, 17, 9, 30, 0, -20).unwrap();
    let report = StatusReport {
        more_messages_to_send: false,
        loop_prevention: false,
        about_command: false,
        message_reference: 42,
        recipient: to(),
        service_centre_timestamp: ts,
        discharge_time: ts,
        status: Status::from_octet(0x46),
        protocol_identifier: Some(0),
        dcs: Some(Dcs::UCS2),
        user_data: Some(UserData::ucs2("expired")),
    };
    let pdu = report.encode(None).unwrap();
    let back = decode(pdu.as_bytes(), true).unwrap();
    assert_eq!(back.pdu, Pdu::StatusReport(report.clone()));
    let status = back.pdu.status().unwrap();
    assert_eq!(status.kind(), StatusKind::Permanent);
    assert_eq!(status.description(), "validity period expired");
    assert!(status.is_final() && !status.is_delivered());
    assert_eq!(back.pdu.text().as_deref(), Some("expired"));

    // Without optional fields there is no TP-PI.
    let bare = StatusReport {
        protocol_identifier: None,
        dcs: None,
        user_data: None,
        status: Status::DELIVERED,
        ..report
    };
    assert_eq!(
        bare.encode(None).unwrap().cmgs_length(),
        1 + 1 + 8 + 7 + 7 + 1
    );
    // A mismatched DCS is refused rather than written wrong.
    let wrong = StatusReport {
        dcs: Some(Dcs::GSM7),
        user_data: Some(UserData::ucs2("x")),
        ..bare
    };
    assert!(matches!(
        wrong.encode(None),
        Err(Error::AlphabetMismatch { .. })
    ));
}

fn deliver_part(from: &str, reference: ConcatReference, total: u8, seq: u8, text: &str) -> Deliver {
    let mut ud = UserData::from_text(text);
    ud.header = Some(simlab_sms::UserDataHeader {
        elements: vec![simlab_sms::InformationElement::Concatenation(
            simlab_sms::Concatenation {
                reference,
                total,
                sequence: seq,
            },
        )],
    });
    Deliver::new(
        Address::parse(from).unwrap(),
        Timestamp::new(24, 1, 1, 0, 0, 0, 0).unwrap(),
        ud,
    )
}

#[test]
fn reassembly_bookkeeping() {
    let t0 = Instant::now();
    let r8 = ConcatReference::Bits8(7);
    let r16 = ConcatReference::Bits16(7);
    let mut r: Reassembler = Reassembler::new(Duration::from_secs(30));

    // Not concatenated: complete at once.
    let plain = Deliver::new(
        to(),
        Timestamp::new(24, 1, 1, 0, 0, 0, 0).unwrap(),
        UserData::from_text("hi"),
    );
    assert!(matches!(r.push(plain, t0), Ok(Push::Complete(m)) if m.key.is_none()));

    // Same reference number, different width or sender: different messages.
    assert!(matches!(
        r.push(deliver_part("+111", r8, 2, 2, "B"), t0),
        Ok(Push::Pending { received: 1, .. })
    ));
    assert!(matches!(
        r.push(deliver_part("+111", r16, 2, 1, "x"), t0),
        Ok(Push::Pending { received: 1, .. })
    ));
    assert!(matches!(
        r.push(deliver_part("+222", r8, 2, 1, "y"), t0),
        Ok(Push::Pending { received: 1, .. })
    ));
    assert_eq!(r.pending(), 3);

    // Exact duplicate is dropped; a different part 2 is refused.
    assert_eq!(
        r.push(deliver_part("+111", r8, 2, 2, "B"), t0),
        Ok(Push::Duplicate)
    );
    assert_eq!(
        r.push(deliver_part("+111", r8, 2, 2, "C"), t0),
        Err(Error::ConflictingPart { sequence: 2 })
    );

    // Part 1 arrives late: the message completes in order.
    let t1 = t0 + Duration::from_secs(10);
    match r.push(deliver_part("+111", r8, 2, 1, "A"), t1).unwrap() {
        Push::Complete(m) => {
            assert_eq!(m.text().as_deref(), Some("AB"));
            assert_eq!(m.key.unwrap().reference, r8);
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(r.pending(), 2);

    // Nothing expires before the timeout...
    assert!(r.expire(t0 + Duration::from_secs(29)).is_empty());
    // ...and both leftovers at it, reported with what is missing.
    let dropped = r.expire(t0 + Duration::from_secs(30));
    assert_eq!(dropped.len(), 2);
    for incomplete in &dropped {
        assert_eq!(incomplete.missing(), vec![2]);
        assert_eq!(incomplete.parts.len(), 1);
    }
    assert_eq!(r.pending(), 0);
    // An Instant earlier than the first part does not panic.
    assert!(r.expire(t0 - Duration::from_nanos(1)).is_empty());
}

#[test]
fn reassembly_joins_before_decoding() {
    // A careless sender split ESC 65 (€) across parts; joining the septets
    // first still yields the euro sign.
    let reference = ConcatReference::Bits8(1);
    let mut first = deliver_part("+111", reference, 2, 1, "a");
    let mut second = deliver_part("+111", reference, 2, 2, "b");
    first.user_data.payload = simlab_sms::Payload::Gsm7(vec![0x61, 0x1B]);
    second.user_data.payload = simlab_sms::Payload::Gsm7(vec![0x65, 0x62]);
    let mut r: Reassembler = Reassembler::new(Duration::from_secs(1));
    let now = Instant::now();
    r.push(first, now).unwrap();
    match r.push(second, now).unwrap() {
        Push::Complete(m) => assert_eq!(m.text().as_deref(), Some("a€b")),
        other => panic!("{other:?}"),
    }
}

#[test]
fn address_errors_read_well() {
    let err = Address::parse("+49 170 CALL-ME").unwrap_err();
    assert_eq!(
        err,
        Error::InvalidAddressCharacter {
            character: 'C',
            position: 8
        }
    );
    assert_eq!(
        err.to_string(),
        "'C' at position 8 is not allowed in a phone number (use an alphanumeric address for names)"
    );
    let err = decode(&[0x00, 0x01, 0x00, 0x0B], true).unwrap_err();
    assert_eq!(
        err.to_string(),
        "PDU truncated in destination address: needs 1 octet(s), 0 available"
    );
}
