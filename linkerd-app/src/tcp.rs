//! Opaque TCP: connect to the target and copy bytes both ways.

use linkerd_proxy_transport::{connect, Direction, Metered, Peer, TcpMetrics};
use std::{net::SocketAddr, time::Duration};
use tokio::io::{AsyncRead, AsyncWrite};

/// The copy buffer for each direction of an opaque connection.
const COPY_BUF: usize = 16 * 1024;

/// Copies between the client and `target` until both sides have closed; each side's EOF is
/// passed on as a half-close, so request/response protocols that shut down writing work.
pub(crate) async fn forward<I>(
    mut client: I,
    target: SocketAddr,
    connect_timeout: Duration,
    tcp: &TcpMetrics,
    direction: Direction,
) where
    I: AsyncRead + AsyncWrite + Unpin,
{
    let upstream = match connect(target, connect_timeout).await {
        Ok(s) => s,
        Err(error) => {
            tracing::info!(%error, "closing the client connection: the target is unreachable");
            return;
        }
    };
    let mut upstream = Metered::new(upstream, tcp.open(direction, Peer::Dst, target));
    match tokio::io::copy_bidirectional_with_sizes(&mut client, &mut upstream, COPY_BUF, COPY_BUF)
        .await
    {
        Ok((sent, received)) => tracing::debug!(sent, received, "connection closed"),
        Err(error) => tracing::info!(%error, "connection failed"),
    }
}
