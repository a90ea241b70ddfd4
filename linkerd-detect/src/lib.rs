//! Protocol detection: what does the client speak?
//!
//! [`classify`] is a pure function from the first bytes of a connection to a [`Protocol`]
//! (HTTP/1 by a parsable request line, HTTP/2 by its connection preface, TLS by a ClientHello
//! record, anything else opaque). [`detect`] reads those bytes from a connection into a bounded
//! buffer with a timeout, and hands back a [`PrefixedIo`] that replays them, so nothing read
//! during detection is lost. [`DetectLayer`] wraps the same as a `tower` layer.
//!
//! It does not parse TLS (SNI comes with the TLS crate) and does not decide what to do with a
//! protocol: the application stacks do.
#![forbid(unsafe_code)]

mod classify;
mod io;
mod layer;

pub use self::classify::{classify, Classification, Protocol};
pub use self::io::PrefixedIo;
pub use self::layer::{detect, Detect, DetectLayer, DetectParams, Detected, Error};
