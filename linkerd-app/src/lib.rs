//! The `linkerd2-proxy` application: configuration from the environment, and the inbound,
//! outbound and admin stacks composed from the other crates.
//!
//! Read [`outbound`] and [`inbound`] top to bottom for the life of a connection and of a
//! request: each is a `tower::ServiceBuilder` of layers from the crates that own them.
//! [`App`] binds the listeners and runs the stacks; `main.rs` adds the runtime, logging and
//! signals.
//!
//! This is the only crate that knows every other crate; it holds no protocol logic of its own.
#![forbid(unsafe_code)]

mod admin;
mod app;
pub mod config;
mod control;
mod filters;
pub mod inbound;
mod log;
pub mod outbound;
mod own;
mod policy_watch;
mod ports;
mod process;
#[cfg(test)]
mod test_util;

pub use self::app::{App, Error, Proxy};

/// The commit this binary was built from (short SHA), or `unknown`.
pub const GIT_SHA: &str = env!("LINKERD2_PROXY_GIT_SHA");
/// The build commit's date (RFC 3339), or `unknown`.
pub const BUILD_DATE: &str = env!("LINKERD2_PROXY_BUILD_DATE");
/// The version line `--version` prints.
pub const VERSION_LINE: &str = concat!(
    "linkerd2-proxy ",
    env!("CARGO_PKG_VERSION"),
    " (",
    env!("LINKERD2_PROXY_GIT_SHA"),
    " ",
    env!("LINKERD2_PROXY_BUILD_DATE"),
    ")"
);
pub use self::config::{Config, ConfigError, LogFormat};
pub use self::inbound::policy;
pub use self::log::{init as init_logging, LogHandle};
pub use self::ports::PortSet;
