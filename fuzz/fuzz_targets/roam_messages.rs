//! Seed 001's signed structures (contract, roamUserRequest/Response, securityResult, payment
//! outcome), as a MeC server and the phone read them from the network: whatever decodes
//! encodes to the same bytes, so a signature over them means one message only. The first byte
//! picks the parser, so one corpus reaches all five.
#![no_main]

use libfuzzer_sys::fuzz_target;
use simlab_services::roaming::messages::{
    Contract, PaymentOutcome, RoamUserRequest, RoamUserResponse, SecurityResult,
};

fuzz_target!(|data: &[u8]| {
    let Some((&which, bytes)) = data.split_first() else {
        return;
    };
    let again = match which % 5 {
        0 => Contract::decode(bytes).map(|c| c.encode().expect("a decoded contract encodes")),
        1 => RoamUserRequest::decode(bytes).map(|m| m.encode()),
        2 => RoamUserResponse::decode(bytes).map(|m| m.encode()),
        3 => SecurityResult::decode(bytes).map(|m| m.encode()),
        _ => PaymentOutcome::decode(bytes).map(|m| m.encode()),
    };
    if let Ok(again) = again {
        assert_eq!(again, bytes);
    }
});
