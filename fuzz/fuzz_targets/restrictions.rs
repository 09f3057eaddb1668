//! The restrictions extension (per-purchase limit, count per period, validity): strict DER,
//! so whatever parses re-encodes to the same bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use simlab_services::pki::restrictions::Restrictions;

fuzz_target!(|data: &[u8]| {
    if let Ok(r) = Restrictions::from_der(data) {
        assert_eq!(r.try_to_der().expect("a parsed value encodes"), data);
        let _ = r.validate();
        let _ = r.describe();
    }
});
