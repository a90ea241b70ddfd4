//! Fuzzes the protocol-detection classifier: `cargo +nightly fuzz run classify` from
//! linkerd-detect/ (needs `cargo install cargo-fuzz`).
#![no_main]
#![forbid(unsafe_code)]

use libfuzzer_sys::fuzz_target;
use linkerd_detect::{classify, Classification};

fuzz_target!(|data: &[u8]| {
    let verdict = classify(data);
    // A verdict on the whole input is the verdict on every longer one that starts with it
    // whenever it is `Done`: detection never changes its mind as more bytes arrive.
    if let Classification::Done(p) = verdict {
        let mut longer = data.to_vec();
        longer.extend_from_slice(b"\r\n\r\nmore bytes");
        assert_eq!(classify(&longer), Classification::Done(p));
    }
    // Every prefix is undecided or decides the same (no prefix decides something else).
    for n in 0..data.len() {
        match (classify(&data[..n]), verdict) {
            (Classification::NeedMore, _) => {}
            (Classification::Done(a), Classification::Done(b)) => assert_eq!(a, b, "prefix {n}"),
            (Classification::Done(_), Classification::NeedMore) => {
                panic!("prefix {n} decided, the whole input did not")
            }
        }
    }
});
