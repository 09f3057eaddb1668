//! The signed invoice bytes (length-prefixed fields): whatever decodes encodes to the same
//! bytes, so a signature over them means one invoice only.
#![no_main]

use libfuzzer_sys::fuzz_target;
use simlab_services::pki::invoice::Invoice;

fuzz_target!(|data: &[u8]| {
    if let Ok(invoice) = Invoice::decode(data) {
        assert_eq!(invoice.encode().expect("a decoded invoice encodes"), data);
    }
});
