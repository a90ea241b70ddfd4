//! TLS for the mesh: what a connection's first bytes say ([`parse_client_hello`]), rustls
//! configs built from the proxy's identity ([`TlsConfigs`]), mutual TLS to a peer proxy
//! ([`connect`]) and from one ([`terminate`]), and Linkerd's opaque-transport header
//! ([`TransportHeader`]).
//!
//! TLS 1.3 only, with the ring provider. A server certificate is verified against the trust
//! anchors and the identity the client expected (a DNS SAN); a client certificate against the
//! trust anchors, its identity taken from its DNS SAN.
//!
//! It does not decide what to terminate or whom to allow: the application's inbound stack does.
#![forbid(unsafe_code)]

mod client;
mod client_hello;
mod config;
mod header;
mod server;

pub use self::client::{connect, ClientTls};
pub use self::client_hello::{parse_client_hello, ClientHello, Parsed};
pub use self::config::{TlsConfigs, TRANSPORT_ALPN};
pub use self::header::{HeaderError, SessionProtocol, TransportHeader, PREFACE};
pub use self::server::{client_id, read_client_hello, terminate, Detected, ServerTls};
pub use linkerd_identity::Id;

/// TLS failures, each with the peer's address or identity in the message.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("TLS handshake with {peer} failed: {source}")]
    Handshake {
        peer: String,
        #[source]
        source: std::io::Error,
    },
    #[error("TLS handshake with {peer} timed out after {timeout:?}")]
    HandshakeTimeout {
        peer: String,
        timeout: std::time::Duration,
    },
    #[error("{peer} did not accept the opaque-transport protocol (ALPN {alpn})")]
    NoTransportAlpn { peer: String, alpn: &'static str },
    #[error("invalid server identity {0:?}")]
    InvalidServerName(String),
    #[error("failed to build the TLS config: {0}")]
    Config(String),
}
