//! Opaque TCP: connect to the target (or a balanced endpoint of a service) and copy bytes
//! both ways.

use crate::discover::Service;
use linkerd_proxy_transport::{connect, Direction, Metered, Peer, TcpMetrics};
use std::{net::SocketAddr, time::Duration};
use tokio::{
    io::{AsyncRead, AsyncWrite},
    net::TcpStream,
};

/// The copy buffer for each direction of an opaque connection.
const COPY_BUF: usize = 16 * 1024;

/// Copies between the client and `target` until both sides have closed; each side's EOF is
/// passed on as a half-close, so request/response protocols that shut down writing work.
pub(crate) async fn forward<I>(
    client: I,
    target: SocketAddr,
    connect_timeout: Duration,
    tcp: &TcpMetrics,
    direction: Direction,
) where
    I: AsyncRead + AsyncWrite + Unpin,
{
    match connect(target, connect_timeout).await {
        Ok(upstream) => copy(client, upstream, target, tcp, direction).await,
        Err(error) => {
            tracing::info!(%error, "closing the client connection: the target is unreachable")
        }
    }
}

/// Like [`forward`], to the endpoint of `svc` its balancer picks for this connection.
pub(crate) async fn forward_balanced<I>(
    client: I,
    svc: &Service,
    connect_timeout: Duration,
    tcp: &TcpMetrics,
) where
    I: AsyncRead + AsyncWrite + Unpin,
{
    let ep = match svc.balancer.ready().await {
        Ok(ep) => ep,
        Err(error) => {
            tracing::info!(%error, "closing the client connection: no endpoint is available");
            return;
        }
    };
    let connecting = ep.start();
    match connect(ep.addr, connect_timeout).await {
        Ok(upstream) => {
            connecting.first_byte();
            svc.balancer.connected(&ep);
            drop(connecting);
            copy(client, upstream, ep.addr, tcp, Direction::Outbound).await
        }
        Err(error) => {
            svc.balancer.connect_failed(&ep);
            tracing::info!(%error, service = %svc.name, "closing the client connection: the endpoint is unreachable");
        }
    }
}

async fn copy<I>(
    mut client: I,
    upstream: TcpStream,
    target: SocketAddr,
    tcp: &TcpMetrics,
    direction: Direction,
) where
    I: AsyncRead + AsyncWrite + Unpin,
{
    let mut upstream = Metered::new(upstream, tcp.open(direction, Peer::Dst, target));
    match tokio::io::copy_bidirectional_with_sizes(&mut client, &mut upstream, COPY_BUF, COPY_BUF)
        .await
    {
        Ok((sent, received)) => tracing::debug!(sent, received, "connection closed"),
        Err(error) => tracing::info!(%error, "connection failed"),
    }
}
