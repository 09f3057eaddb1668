//! SMS PDUs (TS 23.040 SMS-DELIVER, SMS-STATUS-REPORT, SMS-SUBMIT) as octets or as a modem's
//! hex text: decoding must not panic, and whatever decodes must re-encode and decode to the
//! same value.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // The first octet picks whether a service-centre prefix is expected.
    let Some((&flags, pdu)) = data.split_first() else {
        return;
    };
    // The hex text a modem prints after +CMT / +CMGR / +CDS.
    if let Ok(text) = std::str::from_utf8(pdu) {
        let _ = simlab_sms::decode_hex(text, flags & 1 != 0);
    }
    let Ok(decoded) = simlab_sms::decode(pdu, flags & 1 != 0) else {
        return;
    };
    let _ = decoded.pdu.text();
    let encoded = decoded
        .pdu
        .encode(decoded.sca.as_ref())
        .expect("a decoded PDU re-encodes");
    let again = simlab_sms::decode(encoded.as_bytes(), true).expect("our own output decodes");
    assert_eq!(again.pdu, decoded.pdu);
    assert_eq!(again.sca, decoded.sca);
});
