//! Protocol detection: what does the client speak?
//!
//! [`classify`] is a pure function from the first bytes of a connection to a [`Protocol`]
//! (HTTP/1 by a parsable request line, HTTP/2 by its connection preface, TLS by a ClientHello
//! record, anything else opaque). [`detect`] reads those bytes from a connection into a bounded
//! buffer with a timeout, and hands back a [`PrefixedIo`] that replays them, so nothing read
//! during detection is lost. [`DetectLayer`] is the same as a `tower` layer over a connection's
//! `(target, io)`, which skips detection when the target's protocol is already known.
//!
//! It does not parse TLS (SNI comes with the TLS crate) and does not decide what to do with a
//! protocol: the application stacks do.
#![forbid(unsafe_code)]

mod budget;
mod classify;
mod layer;

pub use self::budget::{HeadBudget, HeadBudgetExhausted, SMALL_HEAD};
pub use self::classify::{classify, Classification, Protocol};
pub use self::layer::{
    detect, detect_speculating, first_bytes, Detect, DetectLayer, DetectParams, Detected,
    DetectedConn, Dialing, Error, First, NoSpeculation, NoTimeouts, Speculate, Speculative,
    TargetTimeout, Timeouts,
};
pub use linkerd_proxy_transport::PrefixedIo;
