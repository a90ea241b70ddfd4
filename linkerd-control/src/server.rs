//! One listener for everything: plaintext and TLS told apart by the first byte, then one gRPC
//! server with the Destination and (optionally) Identity services.

use crate::{DestinationService, IdentityService, Mesh};
use linkerd_proxy_api::destination::destination_server::DestinationServer;
use rustls::ServerConfig;
use std::{
    future::Future,
    io,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::{TcpListener, TcpStream},
    sync::mpsc,
};
use tokio_rustls::{server::TlsStream, TlsAcceptor};
use tokio_stream::{wrappers::ReceiverStream, Stream};
use tonic::transport::server::{Connected, TcpConnectInfo};

/// The first byte of a TLS record carrying a handshake.
const TLS_HANDSHAKE: u8 = 0x16;

/// How long a new connection has to send its first byte and finish a TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// An accepted connection, plaintext or TLS.
pub enum Io {
    /// The first byte wasn't a TLS handshake (or TLS isn't configured).
    Plain(TcpStream),
    /// Terminated TLS 1.3.
    Tls(Box<TlsStream<TcpStream>>),
}

impl Io {
    fn tcp(&self) -> &TcpStream {
        match self {
            Io::Plain(s) => s,
            Io::Tls(s) => s.get_ref().0,
        }
    }
}

// The TCP info for both kinds, so `Request::remote_addr` works either way.
impl Connected for Io {
    type ConnectInfo = TcpConnectInfo;

    fn connect_info(&self) -> TcpConnectInfo {
        TcpConnectInfo {
            local_addr: self.tcp().local_addr().ok(),
            remote_addr: self.tcp().peer_addr().ok(),
        }
    }
}

impl AsyncRead for Io {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Io::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Io::Tls(s) => Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Io {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Io::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Io::Tls(s) => Pin::new(s).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Io::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Io::Tls(s) => Pin::new(s).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Io::Plain(s) => s.is_write_vectored(),
            Io::Tls(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Io::Plain(s) => Pin::new(s).poll_flush(cx),
            Io::Tls(s) => Pin::new(s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Io::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Io::Tls(s) => Pin::new(s).poll_shutdown(cx),
        }
    }
}

/// Accepts connections on `listener`; with `tls`, one whose first byte starts a TLS handshake
/// is terminated, and any other is served as plaintext. Each connection is classified in its
/// own task, so a slow or silent client doesn't hold up the others.
pub fn incoming(
    listener: TcpListener,
    tls: Option<Arc<ServerConfig>>,
) -> impl Stream<Item = Result<Io, io::Error>> {
    let (tx, rx) = mpsc::channel::<Result<Io, io::Error>>(16);
    let acceptor = tls.map(TlsAcceptor::from);
    tokio::spawn(async move {
        loop {
            let (stream, peer) = tokio::select! {
                res = listener.accept() => match res {
                    Ok(accepted) => accepted,
                    Err(error) => {
                        // Usually out of file descriptors: back off rather than spin.
                        tracing::warn!(%error, "accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                },
                // The server is gone: stop listening.
                () = tx.closed() => return,
            };
            // gRPC messages are small: don't let Nagle hold them back.
            let _ = stream.set_nodelay(true);
            let (tx, acceptor) = (tx.clone(), acceptor.clone());
            tokio::spawn(async move {
                let Some(acceptor) = acceptor else {
                    let _ = tx.send(Ok(Io::Plain(stream))).await;
                    return;
                };
                match tokio::time::timeout(HANDSHAKE_TIMEOUT, classify(stream, acceptor)).await {
                    Ok(Ok(io)) => {
                        let _ = tx.send(Ok(io)).await;
                    }
                    Ok(Err(error)) => tracing::debug!(%peer, %error, "connection dropped"),
                    Err(_) => tracing::debug!(%peer, "connection dropped: handshake timed out"),
                }
            });
        }
    });
    ReceiverStream::new(rx)
}

async fn classify(stream: TcpStream, acceptor: TlsAcceptor) -> io::Result<Io> {
    let mut first = [0u8; 1];
    if stream.peek(&mut first).await? == 1 && first[0] == TLS_HANDSHAKE {
        Ok(Io::Tls(Box::new(acceptor.accept(stream).await?)))
    } else {
        Ok(Io::Plain(stream))
    }
}

/// Serves Destination and inbound policy, and Identity when given, on `listener` until `shutdown` completes;
/// with `tls`, TLS and plaintext are both accepted.
pub async fn serve(
    listener: TcpListener,
    mesh: Mesh,
    identity: Option<IdentityService>,
    tls: Option<Arc<ServerConfig>>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), tonic::transport::Error> {
    tonic::transport::Server::builder()
        .add_service(DestinationServer::new(DestinationService::new(
            mesh.clone(),
        )))
        .add_service(crate::PolicyService::new(mesh.clone()).into_server())
        .add_service(crate::OutboundPolicyService::new(mesh).into_server())
        .add_optional_service(identity.map(IdentityService::into_server))
        .serve_with_incoming_shutdown(incoming(listener, tls), shutdown)
        .await
}
