//! Opaque TCP: connect to the target (or a balanced endpoint of a service), with mTLS to a
//! meshed endpoint's proxy, and copy bytes both ways.

use crate::discover::Service;
use linkerd_http::{connect_endpoint, Meshed};
use linkerd_proxy_transport::{Direction, TcpMetrics};
use linkerd_tls::TlsConfigs;
use std::{net::SocketAddr, time::Duration};
use tokio::io::{AsyncRead, AsyncWrite};

/// The copy buffer for each direction of an opaque connection.
const COPY_BUF: usize = 16 * 1024;

/// How one direction's opaque connections are dialed.
pub(crate) struct Dial<'a> {
    pub tls: Option<&'a TlsConfigs>,
    pub connect_timeout: Duration,
    pub tcp: &'a TcpMetrics,
    pub direction: Direction,
}

/// Copies between the client and `target` (over mTLS when `meshed`) until both sides have
/// closed; each side's EOF is passed on as a half-close, so request/response protocols that
/// shut down writing work.
pub(crate) async fn forward<I>(
    client: I,
    target: SocketAddr,
    meshed: Option<&Meshed>,
    dial: Dial<'_>,
) where
    I: AsyncRead + AsyncWrite + Unpin,
{
    let upstream = connect_endpoint(
        target,
        meshed,
        dial.tls,
        None,
        dial.connect_timeout,
        dial.tcp,
        dial.direction,
    )
    .await;
    match upstream {
        Ok(upstream) => copy(client, upstream).await,
        Err(error) => {
            tracing::info!(%error, "closing the client connection: the target is unreachable")
        }
    }
}

/// Like [`forward`], to the endpoint of `svc` its balancer picks for this connection.
pub(crate) async fn forward_balanced<I>(client: I, svc: &Service, dial: Dial<'_>)
where
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
    let upstream = connect_endpoint(
        ep.addr,
        ep.meta.meshed.as_ref(),
        dial.tls,
        None,
        dial.connect_timeout,
        dial.tcp,
        Direction::Outbound,
    )
    .await;
    match upstream {
        Ok(upstream) => {
            connecting.first_byte();
            svc.balancer.connected(&ep);
            drop(connecting);
            copy(client, upstream).await
        }
        Err(error) => {
            svc.balancer.connect_failed(&ep);
            tracing::info!(%error, service = %svc.name, "closing the client connection: the endpoint is unreachable");
        }
    }
}

async fn copy<I, U>(mut client: I, mut upstream: U)
where
    I: AsyncRead + AsyncWrite + Unpin,
    U: AsyncRead + AsyncWrite + Unpin,
{
    match tokio::io::copy_bidirectional_with_sizes(&mut client, &mut upstream, COPY_BUF, COPY_BUF)
        .await
    {
        Ok((sent, received)) => tracing::debug!(sent, received, "connection closed"),
        Err(error) => tracing::info!(%error, "connection failed"),
    }
}
