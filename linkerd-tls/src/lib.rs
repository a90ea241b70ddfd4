//! TLS for the mesh: what a connection's first bytes say ([`parse_client_hello`]), rustls
//! configs built from the proxy's identity ([`TlsConfigs`]), mutual TLS to a peer proxy
//! ([`connect`]) and from one ([`terminate`]), and Linkerd's opaque-transport header
//! ([`TransportHeader`]).
//!
//! The inbound stack's two TLS steps are `tower` layers over a connection: [`TerminateLayer`]
//! terminates TLS addressed to this proxy and passes the rest through untouched;
//! [`TransportHeaderLayer`] reads a peer proxy's transport header.
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
mod terminate;
mod transport;

pub use self::client::{connect, ClientTls};
pub use self::client_hello::{parse_client_hello, ClientHello, Parsed, MAX_CLIENT_HELLO_WIRE_LEN};
pub use self::config::{TlsConfigs, TRANSPORT_ALPN};
pub use self::header::{HeaderError, SessionProtocol, TransportHeader, PREFACE};
pub use self::server::{client_id, read_client_hello, terminate, Detected, ServerTlsStream};
pub use self::terminate::{
    ServerFirst, ServerTls, Terminate, TerminateLayer, TerminateParams, TlsIo,
};
pub use self::transport::{ReadTransportHeader, TransportHeaderLayer};
pub use linkerd_identity::Id;

/// TLS failures, each with the peer's address or identity in the message.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The handshake failed (an untrusted certificate, a protocol error).
    #[error("TLS handshake with {peer} failed: {source}")]
    Handshake {
        /// The peer.
        peer: String,
        /// What failed.
        #[source]
        source: std::io::Error,
    },
    /// The handshake did not complete in time.
    #[error("TLS handshake with {peer} timed out after {timeout:?}")]
    HandshakeTimeout {
        /// The peer.
        peer: String,
        /// The timeout.
        timeout: std::time::Duration,
    },
    /// A peer proxy did not negotiate the opaque-transport ALPN.
    #[error("{peer} did not accept the opaque-transport protocol (ALPN {alpn})")]
    NoTransportAlpn {
        /// The peer.
        peer: String,
        /// The ALPN expected.
        alpn: &'static str,
    },
    /// A server identity that is not a valid TLS server name.
    #[error("invalid server identity {0:?}")]
    InvalidServerName(String),
    /// The rustls configs could not be built.
    #[error("failed to build the TLS config: {0}")]
    Config(String),
    /// The connection failed, or closed, before its first bytes were read.
    #[error("connection closed before its first bytes were read: {0}")]
    ClientHello(#[source] std::io::Error),
    /// A meshed connection arrived before this proxy had a certificate.
    #[error("this proxy has no certificate yet (waited {0:?}) for a meshed connection")]
    NoCertificate(std::time::Duration),
}
