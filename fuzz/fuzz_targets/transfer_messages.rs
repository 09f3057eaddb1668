//! Seed 003's service messages (M1, M3, M4) as an operator's service node and a phone read
//! them off an SMS: nothing panics, and whatever decodes encodes to the same bytes (one set of
//! bytes, one meaning; the signature covers exactly the bytes before it).
#![no_main]

use libfuzzer_sys::fuzz_target;
use simlab_services::transfer::messages::Message;

fuzz_target!(|data: &[u8]| {
    if let Ok(m) = Message::decode(data) {
        assert_eq!(m.encode(), data, "encode(decode(b)) == b");
        match &m {
            Message::Order(o) => {
                assert!(data.starts_with(&o.signed_bytes()));
                let _ = o.goods.display();
            }
            Message::Answer(a) => assert!(data.starts_with(&a.signed_bytes())),
            Message::Offer(o) => {
                let _ = o.hash();
            }
        }
    }
});
