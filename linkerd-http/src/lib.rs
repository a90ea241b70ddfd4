//! hyper glue: the shared client pool, the per-connection server, header hygiene, proxy errors
//! and HTTP metrics.
//!
//! This crate knows how to carry HTTP: serve a detected connection ([`serve`]), forward a
//! request over a pooled connection ([`forward`], [`Client`]), strip what must not cross a hop
//! ([`strip_hop_by_hop`]), turn a failure into a response with `l5d-proxy-error`
//! ([`Error::to_response`]) and count requests ([`HttpMetrics`]).
//!
//! It does not decide where a request goes: routing, discovery and explicit-proxy targets are
//! the application's.
#![forbid(unsafe_code)]

mod body;
mod client;
mod conn_tasks;
mod error;
mod forward;
mod headers;
mod metrics;
pub mod orig_proto;
mod server;
mod upgrade;

pub use self::body::ProxyBody;
pub use self::client::{
    connect_endpoint, Client, ClientConfig, ClientIo, Endpoint, H2Settings, Meshed, PoolBody,
    PoolMetrics, Version,
};
pub use self::error::Error;
pub use self::forward::{forward, try_forward};
pub use self::headers::{strip_hop_by_hop, wants_upgrade, L5D_PROXY_ERROR};
pub use self::metrics::{HttpMetrics, RecordBody, ResponseRecorder, RouteLabels, RouteMetrics};
pub use self::server::{serve, ServerConfig};
pub use self::upgrade::{spawn_tunnel, spawn_upgrade};
