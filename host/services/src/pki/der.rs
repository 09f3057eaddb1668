//! What is left of simlab's own DER module once RustCrypto's `der`/`x509-cert`/`pkcs8` read
//! and write every structure: the time format people read in logs and output, and PEM armour
//! under the path callers already use. Neither writes ASN.1.

/// PEM armour (RFC 7468) through `pem-rfc7468`; it lives with the token client, which prints
/// public keys without the PKI.
pub use simlab_card::pem::pem_encode;

/// A Unix time as `2026-05-01T12:00:00Z`, for people. Times past 9999 (which no certificate
/// here carries) are shown as seconds.
pub fn iso8601(unix: u64) -> String {
    ::der::DateTime::from_unix_duration(std::time::Duration::from_secs(unix))
        .map_or_else(|_| format!("@{unix}"), |t| t.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times() {
        assert_eq!(iso8601(0), "1970-01-01T00:00:00Z");
        assert_eq!(iso8601(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(iso8601(1_700_000_000), "2023-11-14T22:13:20Z");
        assert_eq!(iso8601(2_524_608_000), "2050-01-01T00:00:00Z");
    }
}
