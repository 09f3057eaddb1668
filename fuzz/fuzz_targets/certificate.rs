//! A certificate from a buyer, a gateway answer or a file: it parses or is refused, never
//! panics; what parses is canonical DER, so PEM and back gives the very same certificate.
#![no_main]

use libfuzzer_sys::fuzz_target;
use simlab_services::pki::x509::Certificate;

fuzz_target!(|data: &[u8]| {
    if let Ok(cert) = Certificate::from_der(data) {
        assert_eq!(cert.der, data);
        let again = Certificate::from_pem(&cert.to_pem()).expect("our own PEM parses");
        assert_eq!(again, cert);
        let _ = cert.verifying_key();
        let _ = cert.role();
    }
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = Certificate::from_pem(text);
    }
});
