//! Fuzzes the ClientHello parser: `cargo +nightly fuzz run client_hello`
//! from linkerd-tls/ (needs `cargo install cargo-fuzz`).
#![no_main]
#![forbid(unsafe_code)]

use libfuzzer_sys::fuzz_target;
use linkerd_tls::{parse_client_hello, Parsed};

fuzz_target!(|data: &[u8]| {
    let full = parse_client_hello(data);
    // Bytes arrive in pieces: a prefix must ask for more or agree.
    if let Parsed::ClientHello(_) = full {
        for n in 0..data.len() {
            let prefix = parse_client_hello(&data[..n]);
            assert!(
                prefix == Parsed::Incomplete || prefix == full,
                "prefix {n}: {prefix:?} vs {full:?}"
            );
        }
    }
});
