//! The outbound proxy: the app's connections to the world.
//!
//! The life of an outbound connection, top to bottom:
//! 1. accept it and read where the app meant to go (`SO_ORIGINAL_DST`), or take it as an
//!    explicit-proxy client when it was not redirected;
//! 2. detect the protocol (skipped on opaque ports);
//! 3. HTTP: serve it with hyper and forward each request to the original destination (or, in
//!    explicit mode, to the target each request names) over the shared client pool;
//! 4. anything else: copy bytes to the original destination.

use crate::{
    http::{self, HttpStack, Route},
    tcp, ProxyStack,
};
use linkerd_detect::{detect, PrefixedIo, Protocol};
use linkerd_proxy_transport::{Accepted, Direction, Metered, Peer};
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

/// Serves one accepted outbound connection.
pub(crate) async fn serve(stack: Arc<ProxyStack>, conn: Accepted, shutdown: CancellationToken) {
    // 1. Where the app meant to go. A connection aimed at the listener itself was not
    //    redirected: the client is using the proxy explicitly.
    let orig_dst = conn.orig_dst.filter(|dst| *dst != conn.local);
    let io = Metered::new(
        conn.socket,
        stack.tcp.open(
            Direction::Outbound,
            Peer::Src,
            orig_dst.unwrap_or(conn.local),
        ),
    );

    // 2. Detect.
    let (protocol, io) = match orig_dst {
        Some(dst) if stack.opaque_ports.contains(dst.port()) => {
            (Protocol::Opaque, PrefixedIo::new(bytes::Bytes::new(), io))
        }
        _ => match detect(io, stack.detect).await {
            Ok((d, io)) => {
                if d.timed_out {
                    tracing::debug!("protocol detection timed out; forwarding as opaque TCP");
                }
                (d.protocol, io)
            }
            Err(error) => {
                tracing::info!(%error, "connection closed during protocol detection");
                return;
            }
        },
    };
    tracing::Span::current().record("protocol", tracing::field::debug(protocol));

    // 3. and 4. Forward.
    let http: &Arc<HttpStack> = &stack.http;
    match (protocol, orig_dst) {
        (Protocol::Http1 | Protocol::Http2, Some(dst)) => {
            http::serve(http.clone(), io, protocol, Route::Target(dst), shutdown).await
        }
        (Protocol::Http1 | Protocol::Http2, None) => {
            http::serve(http.clone(), io, protocol, Route::Explicit, shutdown).await
        }
        (Protocol::Tls | Protocol::Opaque, Some(dst)) => {
            if stack.http.own.contains(dst) {
                tracing::warn!(%dst, "refusing to forward to this proxy's own listener (a forwarding loop)");
                return;
            }
            tcp::forward(
                io,
                dst,
                stack.connect_timeout,
                &stack.tcp,
                Direction::Outbound,
            )
            .await
        }
        (Protocol::Tls | Protocol::Opaque, None) => {
            tracing::info!(
                "closing: not HTTP, and not redirected, so there is no target (use CONNECT)"
            );
        }
    }
}
