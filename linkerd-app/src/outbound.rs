//! The outbound proxy: the app's connections to the world.
//!
//! The life of an outbound connection, top to bottom:
//! 1. accept it and read where the app meant to go (`SO_ORIGINAL_DST`), or take it as an
//!    explicit-proxy client when it was not redirected;
//! 2. with discovery, ask the control plane about the original destination (its profile): a
//!    service address names the service, whose endpoints are then balanced; a pod address is
//!    one endpoint, whose identity means mTLS; a profile may say the traffic is opaque;
//! 3. detect the protocol (skipped on opaque ports and opaque profiles);
//! 4. HTTP: serve it with hyper; route each request by authority (discovered names are
//!    balanced), else to the profile's service, else to the original destination (or, in
//!    explicit mode, to the target each request names) over the shared client pool;
//! 5. anything else: copy bytes to a balanced endpoint of the service, or to the original
//!    destination.
//!
//! A meshed endpoint (discovery named its proxy's identity) is reached with mTLS, through its
//! proxy's opaque-transport port when discovery gave one.

use crate::{
    discover,
    http::{self, ConnInfo, HttpStack, Route},
    tcp, ProxyStack,
};
use linkerd_destination::ProtocolHint;
use linkerd_detect::{detect, PrefixedIo, Protocol};
use linkerd_proxy_transport::{Accepted, Direction, Metered, NoTlsReason, Peer, TlsLabel};
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
            TlsLabel::NoIdentity(NoTlsReason::Loopback),
        ),
    );

    // 2. What the control plane knows of the original destination.
    let (service, meshed, h2, opaque_profile) = match (orig_dst, &stack.http.discovery) {
        (Some(dst), Some(discovery)) if !stack.http.own.contains(dst) => {
            match discovery.profile(dst).await {
                Some(p) => {
                    let svc = p
                        .fully_qualified_name
                        .as_ref()
                        .and_then(|name| discovery.service(&format!("{name}:{}", dst.port())));
                    let meshed = p.endpoint.as_ref().and_then(discover::meshed);
                    let h2 = p
                        .endpoint
                        .as_ref()
                        .is_some_and(|e| e.hint == ProtocolHint::H2);
                    (svc, meshed, h2, p.opaque)
                }
                None => (None, None, false, false),
            }
        }
        _ => (None, None, false, false),
    };

    // 3. Detect.
    let (protocol, io) = match orig_dst {
        Some(dst) if opaque_profile || stack.opaque_ports.contains(dst.port()) => {
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

    // 4. and 5. Forward.
    let http: &Arc<HttpStack> = &stack.http;
    let info = ConnInfo {
        tls: discover::tls_label(meshed.as_ref(), stack.tls.is_some()),
        authz: None,
    };
    let dial = tcp::Dial {
        tls: stack.tls.as_ref(),
        connect_timeout: stack.connect_timeout,
        tcp: &stack.tcp,
        direction: Direction::Outbound,
    };
    match (protocol, orig_dst, service) {
        (Protocol::Http1 | Protocol::Http2, Some(dst), svc) => {
            let target = Route::Target {
                addr: dst,
                meshed,
                h2,
            };
            let route = svc.map_or(target, Route::Service);
            http::serve(http.clone(), io, protocol, route, info, shutdown).await
        }
        (Protocol::Http1 | Protocol::Http2, None, _) => {
            http::serve(http.clone(), io, protocol, Route::Explicit, info, shutdown).await
        }
        (Protocol::Tls | Protocol::Opaque, Some(_), Some(svc)) => {
            tcp::forward_balanced(io, &svc, dial).await
        }
        (Protocol::Tls | Protocol::Opaque, Some(dst), None) => {
            if stack.http.own.contains(dst) {
                tracing::warn!(%dst, "refusing to forward to this proxy's own listener (a forwarding loop)");
                return;
            }
            tcp::forward(io, dst, meshed.as_ref(), dial).await
        }
        (Protocol::Tls | Protocol::Opaque, None, _) => {
            tracing::info!(
                "closing: not HTTP, and not redirected, so there is no target (use CONNECT)"
            );
        }
    }
}
