//! The OTP service's reading of phone numbers as people type them (directory entries, the
//! look-up service's answers, the originators of incoming SMS): never a panic, and one
//! spelling per number — the canonical form is its own canonical form, so the rate limit and
//! the directory cannot be given a second slot by retyping.
#![no_main]

use libfuzzer_sys::fuzz_target;
use simlab_services::otp::msisdn::{canonical, masked};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(e164) = canonical(text) {
        assert!(e164.starts_with('+') && e164[1..].bytes().all(|b| b.is_ascii_digit()));
        assert_eq!(canonical(&e164).as_deref(), Ok(e164.as_str()));
        let m = masked(&e164);
        assert!(m.starts_with('+') && m.contains('…'));
    }
});
