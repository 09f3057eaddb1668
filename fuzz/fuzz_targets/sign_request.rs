//! Seed 002's signature request (simlab-sign-request-v1), as the token decodes it before it
//! signs: nothing panics, and whatever decodes encodes to the same bytes (one set of bytes, one
//! meaning) and carries the correlator of its own content — a request that decodes never shows
//! a code that was not computed from what is signed.
#![no_main]

use libfuzzer_sys::fuzz_target;
use simlab_applet::token::request::{MAX_LEN, SignRequest};
use simlab_services::sign::{parse_push, push_text};

fuzz_target!(|data: &[u8]| {
    if let Ok(req) = SignRequest::decode(data) {
        assert!(
            data.len() <= MAX_LEN,
            "the token's buffer bounds every request"
        );
        assert_eq!(req.encoded_len(), data.len());
        let mut out = [0u8; MAX_LEN];
        let n = req.encode(&mut out).expect("a decoded request encodes");
        assert_eq!(
            &out[..n],
            data,
            "encode(decode(b)) == b, correlator included"
        );
        let _ = req.amount_display().to_string();
    }
    // The push SMS the phone reads off its modem is outside input too: whatever parses names
    // a transaction and a code the server could have written.
    if let Ok(text) = core::str::from_utf8(data)
        && let Some((tx, code)) = parse_push(text)
    {
        let written = push_text(&tx, &code);
        assert_eq!(written.get(..15), text.get(..15));
        assert_eq!(code.len(), 7);
    }
});
