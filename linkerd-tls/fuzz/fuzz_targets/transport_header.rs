//! Fuzzes the opaque-transport header decoder: `cargo +nightly fuzz run transport_header`
//! from linkerd-tls/ (needs `cargo install cargo-fuzz`).
#![no_main]
#![forbid(unsafe_code)]

use libfuzzer_sys::fuzz_target;
use linkerd_tls::TransportHeader;

fuzz_target!(|data: &[u8]| {
    if let Ok(Some((header, n))) = TransportHeader::decode(data) {
        assert!(n <= data.len());
        // What decodes re-encodes to a header that decodes the same.
        let again = header.encode();
        let (decoded, m) = TransportHeader::decode(&again)
            .expect("re-encoded header decodes")
            .expect("complete");
        assert_eq!(decoded, header);
        assert_eq!(m, again.len());
    }
});
