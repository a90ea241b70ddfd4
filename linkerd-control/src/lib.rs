//! A local control plane: serves the Destination API (and later Identity) from a YAML file it
//! watches, so a mesh runs on one machine without Kubernetes.
//!
//! [`MeshConfig`] is the file's format and its validation; [`Mesh`] holds the current config
//! and tells subscribers when it changes; [`DestinationService`] answers `Get` and `GetProfile`
//! from it, streaming only what changed; [`watch_file`] reloads the file, keeping the last good
//! config when a new one is bad.
#![forbid(unsafe_code)]

mod config;
mod destination;
mod watch;

pub use self::config::{ConfigError, EndpointConfig, MeshConfig, ProtocolHint, ServiceConfig};
pub use self::destination::DestinationService;
pub use self::watch::{watch_file, Mesh};
