//! Dialing an endpoint: plain TCP, or mutual TLS with the endpoint's proxy (through its
//! opaque-transport port when it has one), with a timeout and TCP metrics; and the opaque TCP
//! forward that dials, then copies bytes both ways.
//!
//! A [`Connector`] holds how one direction dials (TLS, timeout, metrics); [`Connector::to`]
//! makes a [`Connect`] service for one [`Target`]. The HTTP client pool dials through the
//! same `Connector`, so HTTP and TCP reach a meshed endpoint the same way.
//!
//! It does not choose targets (discovery and balancing do) and does not speak HTTP.
#![forbid(unsafe_code)]

mod connect;
mod forward;

pub use self::connect::{ClientIo, Connect, Connector, Dialing, Meshed, Target};
pub use self::forward::{copy, Forward};
pub use linkerd_tls::SessionProtocol;

use std::{net::SocketAddr, time::Duration};

/// Why an endpoint could not be reached.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The TCP connection failed (refused, timed out, unreachable).
    #[error(transparent)]
    Connect(#[from] linkerd_proxy_transport::Error),

    /// The proxy has no certificate yet, so it can't reach a meshed endpoint.
    #[error("no certificate yet for this proxy's identity (waited {0:?}); meshed endpoints are unreachable until the Identity service issues one")]
    NoCertificate(Duration),

    /// Mutual TLS with the endpoint's proxy failed (or it is not who discovery said).
    #[error("mTLS to {addr} failed: {source}")]
    Tls {
        /// The endpoint.
        addr: SocketAddr,
        /// What failed.
        #[source]
        source: linkerd_tls::Error,
    },

    /// Sending the opaque-transport header failed.
    #[error("failed to send the transport header to {addr}: {source}")]
    TransportHeader {
        /// The endpoint.
        addr: SocketAddr,
        /// What failed.
        #[source]
        source: std::io::Error,
    },
}
