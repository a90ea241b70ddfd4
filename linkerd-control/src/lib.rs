//! A local control plane: serves the Destination, Identity, inbound policy and outbound policy
//! APIs from a YAML file it watches,
//! so a mesh runs on one machine without Kubernetes.
//!
//! [`MeshConfig`] is the file's format and its validation (services, endpoints, and the
//! identities allowed certificates with their tokens); [`Mesh`] holds the current config and
//! tells subscribers when it changes; [`DestinationService`] answers `Get` and `GetProfile`
//! from it, streaming only what changed; [`PolicyService`] and [`OutboundPolicyService`] answer
//! the inbound and outbound policy watches; [`watch_file`] reloads the file, keeping the last good
//! config when a new one is bad.
//!
//! [`Ca`] is a small CA: `ca init` writes a root (the proxies' trust anchors) and an issuer;
//! [`IdentityService`] answers `Certify` by checking the identity's token and signing the
//! proxy's CSR with the issuer. [`serve`] runs both on one port, where [`tls::server_config`]
//! lets TLS and plaintext clients share it.
#![forbid(unsafe_code)]

pub mod ca;
pub mod cli;
mod config;
mod destination;
mod identity;
mod outbound;
mod policy;
mod server;
pub mod tls;
mod watch;

pub use self::ca::{Ca, CaError, Signed};
pub use self::config::{
    check_identity_name, Authentication, AuthorizationConfig, ConfigError, EndpointConfig,
    IdentityConfig, MeshConfig, OutboundConfig, ProtocolHint, RouteConfig, ServerConfig,
    ServerProtocol, ServiceConfig,
};
pub use self::destination::DestinationService;
pub use self::identity::{IdentityService, DEFAULT_CERT_LIFETIME, MAX_REQUEST_BYTES};
pub use self::outbound::OutboundPolicyService;
pub use self::policy::PolicyService;
pub use self::server::{incoming, serve, Io};
pub use self::watch::{watch_file, Mesh};
