//! Deciding on a connection's first bytes, and terminating mutual TLS.

use crate::{parse_client_hello, ClientHello, Error, Parsed, TlsConfigs};
use bytes::BytesMut;
use linkerd_identity::Id;
use rustls::pki_types::CertificateDer;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite};

/// A server-side TLS stream.
pub type ServerTlsStream<I> = tokio_rustls::server::TlsStream<I>;

/// What the first bytes of a connection were.
#[derive(Debug, PartialEq, Eq)]
pub enum Detected {
    /// A complete ClientHello.
    ClientHello(ClientHello),
    /// Not TLS; or TLS whose ClientHello did not fit in the buffer or arrive in time (it is
    /// then forwarded untouched, as opaque bytes).
    NotClientHello,
}

/// Reads into `buf` until its bytes are a complete ClientHello or can't be one, for at most
/// `timeout` and `capacity` bytes. An EOF before that is returned as an error.
pub async fn read_client_hello<I>(
    io: &mut I,
    buf: &mut BytesMut,
    capacity: usize,
    timeout: Duration,
) -> std::io::Result<Detected>
where
    I: AsyncRead + Unpin,
{
    let read = async {
        loop {
            match parse_client_hello(buf) {
                Parsed::ClientHello(hello) => return Ok(Detected::ClientHello(hello)),
                Parsed::NotClientHello => return Ok(Detected::NotClientHello),
                Parsed::Incomplete if buf.len() >= capacity => return Ok(Detected::NotClientHello),
                Parsed::Incomplete => {}
            }
            buf.reserve(capacity.saturating_sub(buf.len()).min(4096));
            if io.read_buf(buf).await? == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
        }
    };
    match tokio::time::timeout(timeout, read).await {
        Ok(res) => res,
        Err(_) => Ok(Detected::NotClientHello),
    }
}

/// Runs the server handshake; returns the stream and the client's identity, if it presented a
/// certificate.
pub async fn terminate<I>(
    io: I,
    configs: &TlsConfigs,
    peer: std::net::SocketAddr,
    timeout: Duration,
) -> Result<(ServerTlsStream<I>, Option<Id>), Error>
where
    I: AsyncRead + AsyncWrite + Unpin,
{
    let accept = tokio_rustls::TlsAcceptor::from(configs.server.clone()).accept(io);
    let tls = tokio::time::timeout(timeout, accept)
        .await
        .map_err(|_| Error::HandshakeTimeout {
            peer: peer.to_string(),
            timeout,
        })?
        .map_err(|source| Error::Handshake {
            peer: peer.to_string(),
            source,
        })?;
    let id = tls
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|certs| certs.first())
        .and_then(client_id);
    Ok((tls, id))
}

/// The identity a (verified) client certificate names: its first DNS SAN.
pub fn client_id(cert: &CertificateDer<'_>) -> Option<Id> {
    let cert = webpki::EndEntityCert::try_from(cert).ok()?;
    let name = cert.valid_dns_names().next()?;
    Id::parse(name).ok()
}
