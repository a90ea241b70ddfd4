//! The Destination API client.
//!
//! [`Resolver::resolve`] returns a watch of a name's [`Resolution`] (its endpoints, and whether
//! the name exists). Every caller of the same name shares one `Get` stream; the stream is
//! dropped after an idle timeout without watchers. When the stream fails, it is re-opened with
//! exponential back-off and jitter while the last known endpoints stay in place, so losing the
//! control plane does not fail requests to known services.
//!
//! It does not balance or connect: the balancer follows the watch.
#![forbid(unsafe_code)]

mod resolution;
mod resolver;

pub use self::resolution::{Endpoint, Profile, ProtocolHint, Resolution};
pub use self::resolver::{DestinationConfig, Error, Resolver, StreamLimits};
