//! Mutual TLS to a peer proxy.

use crate::{Error, TlsConfigs, TRANSPORT_ALPN};
use linkerd_identity::Id;
use rustls::pki_types::ServerName;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};

/// A client-side TLS stream.
pub type ClientTls<I> = tokio_rustls::client::TlsStream<I>;

/// Runs the client handshake on `io`, expecting the server to prove it is `server_id`. With
/// `transport`, offers the opaque-transport ALPN and requires the server to accept it.
pub async fn connect<I>(
    io: I,
    configs: &TlsConfigs,
    server_id: &Id,
    transport: bool,
    timeout: Duration,
) -> Result<ClientTls<I>, Error>
where
    I: AsyncRead + AsyncWrite + Unpin,
{
    let config = if transport {
        configs.client_transport.clone()
    } else {
        configs.client.clone()
    };
    let name = ServerName::try_from(server_id.as_str().to_string())
        .map_err(|_| Error::InvalidServerName(server_id.to_string()))?;
    let peer = || server_id.to_string();
    let tls = tokio::time::timeout(
        timeout,
        tokio_rustls::TlsConnector::from(config).connect(name, io),
    )
    .await
    .map_err(|_| Error::HandshakeTimeout {
        peer: peer(),
        timeout,
    })?
    .map_err(|source| Error::Handshake {
        peer: peer(),
        source,
    })?;
    if transport && tls.get_ref().1.alpn_protocol() != Some(TRANSPORT_ALPN) {
        return Err(Error::NoTransportAlpn {
            peer: peer(),
            alpn: "transport.l5d.io/v1",
        });
    }
    Ok(tls)
}
