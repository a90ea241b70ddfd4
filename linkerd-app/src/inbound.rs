//! The inbound proxy: the world's connections to the app.
//!
//! The life of an inbound connection, top to bottom:
//! 1. accept it; the original destination's port is the app's port, and the app is reached on
//!    `127.0.0.1:<port>`;
//! 2. detect the protocol (skipped on opaque ports);
//! 3. HTTP: serve it with hyper and forward each request to the app over the shared pool;
//! 4. anything else: copy bytes to the app.
//!
//! Identity (TLS termination) and authorization policy slot in between 1 and 2.

use crate::{
    http::{self, Route},
    tcp, ProxyStack,
};
use linkerd_detect::{detect, PrefixedIo, Protocol};
use linkerd_proxy_transport::{Accepted, Direction, Metered, Peer};
use std::{
    net::{Ipv4Addr, SocketAddr},
    sync::Arc,
};
use tokio_util::sync::CancellationToken;

/// Serves one accepted inbound connection.
pub(crate) async fn serve(stack: Arc<ProxyStack>, conn: Accepted, shutdown: CancellationToken) {
    // 1. The app's port. A connection that was not redirected targets the listener itself.
    let orig_dst = conn.orig_dst.unwrap_or(conn.local);
    let target = SocketAddr::from((Ipv4Addr::LOCALHOST, orig_dst.port()));
    let io = Metered::new(
        conn.socket,
        stack.tcp.open(Direction::Inbound, Peer::Src, orig_dst),
    );
    // 2. Detect.
    let (protocol, io) = if stack.opaque_ports.contains(target.port()) {
        (Protocol::Opaque, PrefixedIo::new(bytes::Bytes::new(), io))
    } else {
        match detect(io, stack.detect).await {
            Ok((d, io)) => (d.protocol, io),
            Err(error) => {
                tracing::info!(%error, "connection closed during protocol detection");
                return;
            }
        }
    };
    tracing::Span::current().record("protocol", tracing::field::debug(protocol));

    // 3. and 4. Forward to the app.
    match protocol {
        Protocol::Http1 | Protocol::Http2 => {
            http::serve(
                stack.http.clone(),
                io,
                protocol,
                Route::Target(target),
                shutdown,
            )
            .await
        }
        Protocol::Tls | Protocol::Opaque => {
            if stack.http.own.contains(target) {
                tracing::warn!(%target, "refusing to forward to this proxy's own port (a forwarding loop)");
                return;
            }
            tcp::forward(
                io,
                target,
                stack.connect_timeout,
                &stack.tcp,
                Direction::Inbound,
            )
            .await
        }
    }
}
