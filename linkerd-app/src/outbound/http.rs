//! The request stacks at the bottom of outbound routing: to the original destination, and to
//! each endpoint of a discovered service.

use crate::own::{OwnListeners, RefuseOwn, RefuseOwnLayer};
use linkerd_connect::{Connect, Connector, Meshed, Target};
use linkerd_destination as destination;
use linkerd_http::{
    orig_proto::{Upgrade, UpgradeLayer},
    Client, EndpointClient, HopByHop, HopByHopLayer, HttpMetrics, MeshHeaders, MeshHeadersLayer,
    Metrics, MetricsLayer, RouteLabels, Routes, Tunnel, TunnelLayer,
};
use linkerd_proxy_transport::{Direction, TlsLabel};
use std::{
    net::{IpAddr, SocketAddr},
    sync::Arc,
};
use tower::{util::MapErr, BoxError, ServiceBuilder};

/// The stack of requests to the original destination.
pub(crate) type TargetStack =
    Metrics<RefuseOwn<MeshHeaders<HopByHop<Upgrade<EndpointClient<Connector>>>>>>;

/// The stack of requests to one endpoint of a discovered service.
pub(crate) type EndpointStack =
    Metrics<Tunnel<MeshHeaders<HopByHop<Upgrade<EndpointClient<Connector>>>>, Connect>>;

/// Opaque TCP to one endpoint of a discovered service.
pub(crate) type TcpConnect = MapErr<Connect, fn(linkerd_connect::Error) -> BoxError>;

/// A discovered endpoint's services, built once when discovery adds it, shared by every
/// connection: its HTTP request stack, and its opaque TCP dial.
pub(crate) struct EndpointStacks {
    pub http: EndpointStack,
    pub tcp: TcpConnect,
}

/// Builds the stacks of discovered endpoints.
#[derive(Clone)]
pub(crate) struct NewEndpoint {
    client: Client<linkerd_http::ForwardBody, Connector>,
    connector: Connector,
    metrics: HttpMetrics,
    tls_enabled: bool,
    /// `LINKERD2_PROXY_INBOUND_IPS`: the pod's own addresses, reached without mTLS.
    local_ips: Arc<[IpAddr]>,
}

/// Requests to the original destination `addr` (over mTLS when `meshed`; as HTTP/2 when its
/// proxy takes it, `h2`), counted by authority with the connection's `tls`.
pub(crate) fn target_stack(
    metrics: &HttpMetrics,
    own: &OwnListeners,
    client: &Client<linkerd_http::ForwardBody, Connector>,
    addr: SocketAddr,
    meshed: Option<Meshed>,
    h2: bool,
    tls: TlsLabel,
) -> TargetStack {
    ServiceBuilder::new()
        // Request metrics, by the request's authority.
        .layer(MetricsLayer::new(Routes::by_authority(
            metrics,
            Direction::Outbound,
            addr,
            tls,
        )))
        // The original destination must not be this proxy itself.
        .layer(RefuseOwnLayer::loop_to(own, addr))
        // `l5d-require-id`; a meshed peer's `l5d-proxy-connection` (above the hop-by-hop
        // layer: the app's `Connection: close` it may set is this hop's).
        .layer(MeshHeadersLayer::new(
            addr,
            meshed.as_ref().map(|m| m.server_id.clone()),
            None,
        ))
        // Hop-by-hop headers stay on this hop; protocol upgrades are carried.
        .layer(HopByHopLayer)
        // HTTP/1 to a proxy that takes HTTP/2 travels as HTTP/2.
        .layer(UpgradeLayer::new(h2))
        .service(EndpointClient::new(client, addr, meshed))
}

impl NewEndpoint {
    pub(crate) fn new(
        client: &Client<linkerd_http::ForwardBody, Connector>,
        connector: &Connector,
        metrics: &HttpMetrics,
        tls_enabled: bool,
        local_ips: Arc<[IpAddr]>,
    ) -> Self {
        Self {
            client: client.clone(),
            connector: connector.clone(),
            metrics: metrics.clone(),
            tls_enabled,
            local_ips,
        }
    }

    /// How to reach endpoint `e` with mTLS, if discovery named its identity and it is not
    /// one of the pod's own addresses (`LINKERD2_PROXY_INBOUND_IPS`: reached in plaintext,
    /// as upstream does).
    pub(crate) fn meshed(&self, e: &destination::Endpoint) -> Option<Meshed> {
        if self.local_ips.contains(&e.addr.ip().to_canonical()) {
            tracing::debug!(addr = %e.addr, "an address of this pod: reached without mTLS");
            return None;
        }
        super::discover::meshed(e)
    }

    /// Where requests to the service `name` (`host:port`) count that no endpoint took: no
    /// endpoint, so no address (`0.0.0.0:port`) and no identity.
    pub(crate) fn unserved(&self, name: &str) -> linkerd_http::OnceRoute {
        let port = name
            .rsplit_once(':')
            .and_then(|(_, p)| p.parse().ok())
            .unwrap_or(0);
        linkerd_http::OnceRoute::new(
            &self.metrics,
            RouteLabels {
                direction: Direction::Outbound,
                authority: Some(name.to_string()),
                target_addr: SocketAddr::from(([0, 0, 0, 0], port)),
                dst: None,
                tls: TlsLabel::NoIdentity(
                    linkerd_proxy_transport::NoTlsReason::NotProvidedByServiceDiscovery,
                ),
                policy: None,
            },
        )
    }

    /// The stacks of endpoint `e` of the service `name` (`host:port`).
    pub(crate) fn new_endpoint(&self, name: &str, e: &destination::Endpoint) -> EndpointStacks {
        let meshed = self.meshed(e);
        let h2 = e.hint == destination::ProtocolHint::H2;
        let labels = RouteLabels {
            direction: Direction::Outbound,
            authority: Some(name.to_string()),
            target_addr: e.addr,
            dst: Some(e.labels.clone()),
            tls: super::discover::tls_label(meshed.as_ref(), self.tls_enabled),
            policy: None,
        };
        let connect = self.connector.to(Target {
            addr: e.addr,
            meshed: meshed.clone(),
            protocol: None,
        });
        let http = ServiceBuilder::new()
            // Request metrics, under the service's name and the endpoint's labels.
            .layer(MetricsLayer::new(Routes::once(&self.metrics, labels)))
            // `CONNECT name:port` tunnels to this endpoint.
            .layer(TunnelLayer::new(connect.clone()))
            // `l5d-require-id`, `l5d-dst-canonical` (the service's name), a meshed peer's
            // `l5d-proxy-connection`.
            .layer(MeshHeadersLayer::new(
                e.addr,
                meshed.as_ref().map(|m| m.server_id.clone()),
                Some(name),
            ))
            .layer(HopByHopLayer)
            .layer(UpgradeLayer::new(h2))
            .service(EndpointClient::new(&self.client, e.addr, meshed));
        let boxed: fn(linkerd_connect::Error) -> BoxError = |e| e.into();
        EndpointStacks {
            http,
            tcp: MapErr::new(connect, boxed),
        }
    }
}
