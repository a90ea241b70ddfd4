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
pub mod inbound;
mod log;
pub mod outbound;
mod own;
mod ports;
mod process;
#[cfg(test)]
mod test_util;

pub use self::app::{App, Error, Proxy};
pub use self::config::{Config, ConfigError, LogFormat};
pub use self::inbound::policy;
pub use self::log::{init as init_logging, LogHandle};
pub use self::ports::PortSet;
