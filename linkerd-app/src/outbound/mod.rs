//! The outbound proxy: the app's connections to the world.
//!
//! The life of an outbound connection, top to bottom ([`Outbound::stack`]):
//! 1. accept it and read where the app meant to go (`SO_ORIGINAL_DST`), or take it as an
//!    explicit-proxy client when it was not redirected;
//! 2. with discovery, ask the control plane about the original destination (its profile): a
//!    service address names the service, whose endpoints are then balanced; a pod address is
//!    one endpoint, whose identity means mTLS; a profile may say the traffic is opaque;
//! 3. detect the protocol (skipped on opaque ports and opaque profiles);
//! 4. HTTP: serve it with hyper, each request through the request stack below;
//! 5. anything else: copy bytes to a balanced endpoint of the service, or to the original
//!    destination.
//!
//! The life of an outbound request, top to bottom ([`Outbound::request_stack`]):
//! 1. a failure anywhere below becomes the proxy's error response (`l5d-proxy-error`);
//! 2. route by authority: a discovered name (or else the original destination's service) is
//!    balanced over its endpoints by power of two choices over peak-EWMA, each endpoint with
//!    its own stack (metrics, `CONNECT` tunnel, hop-by-hop, `l5d-orig-proto` upgrade, pool);
//! 3. otherwise, to the original destination: metrics by authority, the loop check,
//!    hop-by-hop headers, the `l5d-orig-proto` upgrade when its proxy takes HTTP/2, the pool;
//! 4. or, in explicit mode, to the target each request names, resolved by the proxy.
//!
//! A meshed endpoint (discovery named its proxy's identity) is reached with mTLS, through its
//! proxy's opaque-transport port when discovery gave one.

pub(crate) mod discover;
mod explicit;
mod http;
mod policy;
mod policy_route;
mod profile;
mod retry;
mod route;
mod tcp;

pub(crate) use self::profile::OutboundTarget;

use self::{discover::Discovery, explicit::Explicit, http::target_stack, profile::ProfileLayer};
use crate::{app::ConnStack, own::OwnListeners, Config, PortSet};
use futures_util::{future, TryFutureExt};
use linkerd_connect::Connector;
use linkerd_detect::{DetectLayer, DetectParams, DetectedConn, PrefixedIo, Protocol};
use linkerd_http::{
    Client, ErrorResponseLayer, HttpMetrics, HttpServer, RequestStack, ServerConfig, Version,
};
use linkerd_proxy_transport::{
    Accepted, Direction, Metered, NoTlsReason, Peer, TcpMetrics, TlsLabel,
};
use std::{
    convert::Infallible,
    sync::Arc,
    task::{Context, Poll},
};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;
use tower::{
    util::{BoxCloneSyncService, Either, Oneshot},
    BoxError, ServiceBuilder, ServiceExt,
};

/// What every outbound connection and request shares.
pub(crate) struct Outbound {
    detect: DetectParams,
    /// A client silent this long has its server dialed (`None`: never).
    server_first_delay: Option<std::time::Duration>,
    opaque_ports: PortSet,
    server: ServerConfig,
    tcp: TcpMetrics,
    http_metrics: HttpMetrics,
    connector: Connector,
    client: Client<linkerd_http::ForwardBody, Connector>,
    own: OwnListeners,
    discovery: Option<Arc<Discovery>>,
    /// `OutboundPolicies` watches, with a policy controller (and discovery).
    policies: Option<Arc<policy::OutboundPolicies>>,
    /// Whether the proxy has an identity (meshed endpoints are then reached with mTLS).
    tls_enabled: bool,
    drain: CancellationToken,
}

/// An outbound connection, as accepted: where the app meant to go.
pub(crate) struct OutboundConn {
    /// The original destination; `None` when the connection was not redirected (explicit-proxy
    /// mode).
    pub orig_dst: Option<std::net::SocketAddr>,
}

/// The connection's I/O after accept.
type AcceptedIo = Metered<TcpStream>;

impl Outbound {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        config: &Config,
        connector: Connector,
        client: Client<linkerd_http::ForwardBody, Connector>,
        tcp: TcpMetrics,
        http_metrics: HttpMetrics,
        own: OwnListeners,
        discovery: Option<Arc<Discovery>>,
        policy_channel: Option<linkerd_proxy_api::client::ControlChannel>,
        tls_enabled: bool,
        drain: CancellationToken,
    ) -> Arc<Self> {
        // Backends are discovered services: policies need discovery.
        let policies = match (&config.policy_control, policy_channel, &config.discovery) {
            (Some(p), Some(channel), Some(d)) => Some(policy::store(
                channel,
                p.workload.clone(),
                crate::policy_watch::WatchConfig {
                    idle_timeout: d.idle_timeout,
                    initial_timeout: d.profile_initial_timeout,
                    limits: config.control_streams,
                },
            )),
            _ => None,
        };
        Arc::new(Self {
            detect: DetectParams {
                timeout: config.outbound.detect_timeout,
                // As long as a request line the HTTP/1 server would take.
                capacity: config.outbound.server.h1_max_buf_size,
                // The budget its HTTP/1 server charges heads to.
                budget: config.outbound.server.h1_head_budget.clone(),
            },
            server_first_delay: config.outbound.server_first_delay,
            opaque_ports: config.opaque_ports.clone(),
            server: config.outbound.server.clone(),
            tcp,
            http_metrics,
            connector,
            client,
            own,
            discovery,
            policies,
            tls_enabled,
            drain,
        })
    }

    /// The outbound connection stack.
    pub(crate) fn stack(self: &Arc<Self>) -> ConnStack {
        let tcp = tcp::TcpForward::new(self.connector.clone(), self.own.clone());
        let this = self.clone();
        let http = HttpServer::new(self.server.clone(), self.drain.clone(), move |t| {
            this.request_stack(t)
        });
        let stack = ServiceBuilder::new()
            // 1. Where the app meant to go; explicit-proxy mode when it was not redirected.
            .map_request(accept(self.tcp.clone()))
            // 2. What the control plane knows of the original destination.
            .layer(ProfileLayer::new(
                self.discovery.clone(),
                self.policies.clone(),
                self.own.clone(),
                self.opaque_ports.clone(),
            ))
            // 3. Detect the protocol, unless the port or the profile says it is opaque; a
            //    client silent for a moment gets its server dialed, in case it speaks first.
            .layer(
                DetectLayer::new(self.detect.clone(), OutboundTarget::known_protocol)
                    .with_speculation(self.server_first_delay, tcp.clone()),
            )
            // 4. and 5. HTTP, or opaque TCP.
            .service(Router { http, tcp });
        BoxCloneSyncService::new(stack)
    }

    /// The request stack of one HTTP connection to `target`.
    pub(crate) fn request_stack(&self, target: OutboundTarget) -> impl RequestStack {
        let tls = discover::tls_label(target.meshed.as_ref(), self.tls_enabled);
        let backends = policy_route::Backends {
            discovery: self.discovery.clone(),
            metrics: self.http_metrics.clone(),
            own: self.own.clone(),
            client: self.client.clone(),
            tls: discover::tls_label(None, self.tls_enabled),
        };
        // Where requests go that no discovered name claims.
        let fallback = match target.dial {
            // 3. The original destination (the profile's endpoint address for it).
            Some(addr) => Either::Left(target_stack(
                &self.http_metrics,
                &self.own,
                &self.client,
                addr,
                target.meshed.clone(),
                target.h2,
                tls,
            )),
            // 4. Explicit-proxy mode: the target each request names.
            None => Either::Right(Explicit::new(
                self.http_metrics.clone(),
                self.own.clone(),
                self.connector.clone(),
                self.client.clone(),
                tls,
            )),
        };
        ServiceBuilder::new()
            // 1. A failure becomes the proxy's error response.
            .layer(ErrorResponseLayer)
            // 2. The original destination's policy, when it has one: its routes, filters,
            //    weighted backends and timeouts.
            .layer(policy_route::PolicyRouteLayer::new(
                target.policy.clone(),
                backends,
            ))
            // 3. Route by authority: discovered names are balanced over their endpoints.
            .layer(route::RouteLayer::new(
                self.discovery.clone(),
                target.service,
                target.orig_dst.is_none(),
            ))
            .service(fallback)
    }
}

/// Step 1: the original destination, unless the connection is addressed to the listener
/// itself (explicit-proxy mode); the connection counts in the TCP metrics from here.
fn accept(tcp: TcpMetrics) -> impl Fn(Accepted) -> (OutboundConn, AcceptedIo) + Clone {
    move |conn: Accepted| {
        let orig_dst = conn.orig_dst.filter(|dst| *dst != conn.local);
        let metrics = tcp.open(
            Direction::Outbound,
            Peer::Src,
            orig_dst.unwrap_or(conn.local),
            TlsLabel::NoIdentity(NoTlsReason::Loopback),
        );
        (
            OutboundConn { orig_dst },
            Metered::new(conn.socket, metrics),
        )
    }
}

/// Steps 4 and 5: HTTP is served, opaque bytes are forwarded.
#[derive(Clone)]
struct Router<H> {
    http: H,
    tcp: tcp::TcpForward,
}

type Detected3 = DetectedConn<OutboundTarget, AcceptedIo, linkerd_connect::ClientIo>;

impl<H> tower::Service<Detected3> for Router<H>
where
    H: tower::Service<
            (OutboundTarget, Version, PrefixedIo<AcceptedIo>),
            Response = (),
            Error = Infallible,
        > + Clone
        + Send
        + 'static,
    H::Future: Send,
{
    type Response = ();
    type Error = BoxError;
    type Future = future::Either<
        future::ErrInto<Oneshot<H, (OutboundTarget, Version, PrefixedIo<AcceptedIo>)>, BoxError>,
        tcp::Forwarding,
    >;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, (target, detected, (io, dialed)): Detected3) -> Self::Future {
        tracing::Span::current().record("protocol", tracing::field::debug(detected.protocol));
        if detected.timed_out {
            tracing::debug!("protocol detection timed out; forwarding as opaque TCP");
        }
        if detected.server_first {
            tracing::debug!("the server spoke first; forwarding as opaque TCP");
        }
        let version = match detected.protocol {
            Protocol::Http1 => Version::Http1,
            Protocol::Http2 => Version::Http2,
            Protocol::Tls | Protocol::Opaque => {
                return future::Either::Right(self.tcp.forward(target, io, dialed));
            }
        };
        // The connection is served for as long as it lasts: this future is polled at every
        // wake-up, so it is the HTTP server's own, not a box around it.
        let serving = self.http.clone().oneshot((target, version, io));
        future::Either::Left(serving.err_into())
    }
}

#[cfg(test)]
pub(crate) mod tests;
