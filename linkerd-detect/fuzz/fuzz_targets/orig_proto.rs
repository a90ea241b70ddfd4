//! Fuzzes the `l5d-orig-proto` parser (a peer proxy's HTTP/2 request turned back into the
//! HTTP/1 one it carries): `cargo +nightly fuzz run orig_proto` from linkerd-detect/.
#![no_main]
#![forbid(unsafe_code)]

use libfuzzer_sys::fuzz_target;
use linkerd_http::orig_proto::{downgrade_request, L5D_ORIG_PROTO};

fuzz_target!(|data: &[u8]| {
    // The header value, then (after a NUL) the request's authority and path.
    let (value, rest) = match data.iter().position(|b| *b == 0) {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &b""[..]),
    };
    let Ok(value) = http::HeaderValue::from_bytes(value) else {
        return;
    };
    let uri = format!("http://{}", String::from_utf8_lossy(rest));
    let Ok(uri) = uri.parse::<http::Uri>() else {
        return;
    };
    let mut req = http::Request::builder()
        .version(http::Version::HTTP_2)
        .uri(uri)
        .body(())
        .expect("a valid request");
    req.headers_mut().insert(L5D_ORIG_PROTO, value);
    if let Ok(true) = downgrade_request(&mut req) {
        // A downgraded request is HTTP/1 and no longer carries the header.
        assert!(req.version() < http::Version::HTTP_2);
        assert!(!req.headers().contains_key(L5D_ORIG_PROTO));
    }
});
