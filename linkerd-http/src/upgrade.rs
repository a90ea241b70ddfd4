//! Carrying a connection that switched protocols (WebSocket, `CONNECT`).

use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};

/// The copy buffer for each direction of an upgraded connection.
const COPY_BUF: usize = 16 * 1024;

/// Once both sides have switched protocols, copies bytes both ways until both close.
pub fn spawn_upgrade(client: OnUpgrade, upstream: OnUpgrade) {
    tokio::spawn(async move {
        let (client, upstream) = match tokio::try_join!(client, upstream) {
            Ok(io) => io,
            Err(error) => {
                tracing::debug!(%error, "protocol upgrade failed");
                return;
            }
        };
        copy(TokioIo::new(client), TokioIo::new(upstream)).await;
    });
}

/// Once the client has switched protocols (e.g. after `CONNECT`'s 200), copies bytes between
/// it and an already-connected upstream socket.
pub fn spawn_tunnel<U>(client: OnUpgrade, upstream: U)
where
    U: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    tokio::spawn(async move {
        match client.await {
            Ok(client) => copy(TokioIo::new(client), upstream).await,
            Err(error) => tracing::debug!(%error, "CONNECT upgrade failed"),
        }
    });
}

async fn copy<A, B>(mut a: A, mut b: B)
where
    A: AsyncRead + AsyncWrite + Unpin,
    B: AsyncRead + AsyncWrite + Unpin,
{
    match tokio::io::copy_bidirectional_with_sizes(&mut a, &mut b, COPY_BUF, COPY_BUF).await {
        Ok((up, down)) => tracing::debug!(up, down, "upgraded connection closed"),
        Err(error) => tracing::debug!(%error, "upgraded connection failed"),
    }
}
