//! The inbound proxy: the world's connections to the app.
//!
//! The life of an inbound connection, top to bottom ([`Inbound::stack`]):
//! 1. accept it; the original destination's port is the app's port, and the app is reached on
//!    `127.0.0.1:<port>`. A connection that was not redirected is addressed to the inbound
//!    port itself: only peer proxies do that, with the opaque-transport header;
//! 2. TLS: a ClientHello whose SNI is this proxy's identity is terminated (the client's
//!    certificate, if any, is its identity); TLS for any other name is the app's own, passed
//!    through untouched;
//! 3. over mTLS with the opaque-transport ALPN, the client proxy's header names the app port
//!    (and, for HTTP, the protocol);
//! 4. policy: may this client (identity, address, TLS or not) use this port?
//! 5. detect the protocol (skipped on opaque ports, and when the header named it);
//! 6. apply the policy: a refused TCP client is closed; a refused HTTP client gets 403 for
//!    every request;
//! 7. HTTP: serve it with hyper, each request through the request stack below; anything
//!    else: copy bytes to the app.
//!
//! The life of an inbound request, top to bottom ([`Inbound::request_stack`]):
//! 1. a failure anywhere below becomes the proxy's error response (`l5d-proxy-error`);
//! 2. the policy: a refused client's request gets 403;
//! 3. `l5d-client-id`: the client's verified identity, and nothing the client wrote;
//! 4. request metrics, by authority;
//! 5. the app's port must not be one of this proxy's own;
//! 6. a peer proxy's HTTP/1 carried as HTTP/2 (`l5d-orig-proto`) goes back to HTTP/1;
//! 7. hop-by-hop headers stay on this hop; protocol upgrades are carried;
//! 8. the pool, to the app on loopback.

mod http;
pub mod policy;
mod ratelimit;
mod server;
mod tls;
mod watch;

use self::{
    http::AuthorizeLayer,
    policy::{Authorize, Authorized, AuthzMetrics, Decide, InboundTarget, Policy},
    tls::{InboundConn, InboundTls, Label, LabelledIo},
};
use crate::{app::ConnStack, own::OwnListeners, own::RefuseOwnLayer, Config, PortSet};
use futures_util::{future, TryFutureExt};
use linkerd_connect::{ClientIo, Connector, Forward, Target};
use linkerd_detect::{
    DetectLayer, DetectParams, Dialing, PrefixedIo, Protocol, Speculate, Speculative,
};
use linkerd_http::{
    orig_proto::DowngradeLayer, AuthorityRoutes, Client, EndpointClient, ErrorResponseLayer,
    HopByHopLayer, HttpMetrics, HttpServer, RequestStack, ServerConfig, Version,
};
use linkerd_proxy_transport::{Direction, TcpMetrics};
use linkerd_tls::{TerminateLayer, TerminateParams, TlsConfigs, TransportHeaderLayer};
use std::{
    convert::Infallible,
    future::Future,
    net::{Ipv4Addr, SocketAddr},
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;
use tower::{
    util::{BoxCloneSyncService, Oneshot},
    BoxError, ServiceBuilder, ServiceExt,
};

/// At most this much of a connection is buffered to read a ClientHello: as much as the
/// largest one the parser accepts (64 KiB, in records), so none is cut off.
const CLIENT_HELLO_CAPACITY: usize = linkerd_tls::MAX_CLIENT_HELLO_WIRE_LEN;

/// What every inbound connection and request shares.
pub(crate) struct Inbound {
    detect: DetectParams,
    /// A client silent this long has its app dialed (`None`: never).
    server_first_delay: Option<std::time::Duration>,
    opaque_ports: PortSet,
    /// `LINKERD2_PROXY_INBOUND_IPS`; empty accepts any destination.
    pod_ips: Arc<[std::net::IpAddr]>,
    server: ServerConfig,
    terminate: TerminateParams,
    policy: Arc<Policy>,
    tcp: TcpMetrics,
    http_metrics: HttpMetrics,
    authz: AuthzMetrics,
    connector: Connector,
    client: Client<linkerd_http::ForwardBody, Connector>,
    own: OwnListeners,
    drain: CancellationToken,
    /// The inbound policy API's watches; `None` without `LINKERD2_PROXY_POLICY_SVC_ADDR`.
    store: Option<Arc<watch::PolicyStore>>,
}

/// The inbound policy and TLS the admin server applies to its own port.
#[derive(Clone)]
pub(crate) struct AdminPolicy {
    pub policy: Arc<Policy>,
    store: Option<Arc<watch::PolicyStore>>,
    pub terminate: TerminateParams,
}

impl AdminPolicy {
    /// Whether a request from `client` (with `auth`) to the admin `port` is allowed: by the
    /// port's server policy (routes and authorizations), else the default policy; localhost
    /// (127.0.0.1, ::1) always is. `Err` is the refusal.
    pub(crate) fn check<B>(
        &self,
        port: u16,
        client: SocketAddr,
        auth: &policy::ClientAuth,
        req: &::http::Request<B>,
    ) -> Result<(), linkerd_http::Error> {
        use linkerd_http::Error;
        let ip = client.ip().to_canonical();
        // The proxy's own `localhost` authorization: 127.0.0.1 and ::1, as linkerd2-proxy.
        if ip == std::net::IpAddr::from([127, 0, 0, 1]) || ip == std::net::Ipv6Addr::LOCALHOST {
            return Ok(());
        }
        let current = self.store.as_ref().map(|s| s.watch(port).borrow().clone());
        match current {
            Some(watch::PortPolicy::Policy(p)) => {
                let Some((route, _)) = p.route(req) else {
                    return Err(Error::RouteNotFound);
                };
                match route
                    .params
                    .authorize(ip, auth)
                    .or_else(|| p.authorize(ip, auth))
                {
                    Some(_) => Ok(()),
                    None => Err(Error::Unauthorized(format!(
                        "unauthorized request on route {}",
                        route.meta.name
                    ))),
                }
            }
            Some(watch::PortPolicy::Invalid(why)) => Err(Error::InvalidPolicy(why.to_string())),
            _ => match self.policy.check(port, ip, auth) {
                policy::Decision::Deny(d) => Err(Error::Unauthorized(d.to_string())),
                _ => Ok(()),
            },
        }
    }
}

/// A connection's I/O once its protocol is known.
type DetectedIo = PrefixedIo<PrefixedIo<LabelledIo<TcpStream>>>;

impl Inbound {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        config: &Config,
        tls: Option<TlsConfigs>,
        connector: Connector,
        client: Client<linkerd_http::ForwardBody, Connector>,
        http_metrics: HttpMetrics,
        tcp: TcpMetrics,
        authz: AuthzMetrics,
        own: OwnListeners,
        drain: CancellationToken,
        policy_channel: Option<linkerd_proxy_api::client::ControlChannel>,
        admin_port: u16,
    ) -> Arc<Self> {
        let store = match (policy_channel, &config.policy_control) {
            (Some(ch), Some(pc)) => Some(watch::store(
                ch,
                pc.clone(),
                config.control_streams,
                admin_port,
            )),
            _ => None,
        };
        let detect = DetectParams {
            timeout: config.inbound.detect_timeout,
            // As long as a request line the HTTP/1 server would take.
            capacity: config.inbound.server.h1_max_buf_size,
            // The budget its HTTP/1 server charges heads to.
            budget: config.inbound.server.h1_head_budget.clone(),
        };
        let server_name = config.identity.as_ref().map(|i| i.server_name.clone());
        let terminate = TerminateParams {
            local: tls.zip(server_name),
            timeout: detect.timeout,
            capacity: CLIENT_HELLO_CAPACITY,
            handshake_failures: authz.handshake_failures(),
        };
        Arc::new(Self {
            detect,
            server_first_delay: config.inbound.server_first_delay,
            opaque_ports: config.opaque_ports.clone(),
            pod_ips: config.inbound_ips.clone().into(),
            server: config.inbound.server.clone(),
            terminate,
            policy: Arc::new(config.policy.clone()),
            tcp,
            http_metrics,
            authz,
            connector,
            client,
            own,
            drain,
            store,
        })
    }

    /// What the admin server checks its clients with: the default policy, the admin port's
    /// server policy, and the TLS termination parameters.
    pub(crate) fn admin_policy(&self) -> AdminPolicy {
        AdminPolicy {
            policy: self.policy.clone(),
            store: self.store.clone(),
            terminate: self.terminate.clone(),
        }
    }

    /// The inbound connection stack.
    pub(crate) fn stack(self: &Arc<Self>) -> ConnStack {
        // With an identity, TLS addressed to this proxy is looked for.
        let tls_enabled = self.terminate.local.is_some();
        let this = self.clone();
        let http = HttpServer::new(self.server.clone(), self.drain.clone(), move |a| {
            this.request_stack(a)
        });
        let decide = Decide::new(
            self.policy.clone(),
            self.opaque_ports.clone(),
            self.store.clone(),
        );
        let dial_app = DialApp {
            connector: self.connector.clone(),
            own: self.own.clone(),
        };
        let stack = ServiceBuilder::new()
            // 1. The app's port, or the inbound port itself.
            .map_request(tls::accept(tls_enabled, self.opaque_ports.clone()))
            .filter(tls::PodIps(self.pod_ips.clone()))
            // 2. TLS addressed to this proxy is terminated; other TLS and plaintext pass
            //    through. The connection is labelled by what its TLS proved, and counted.
            //    A client that sends nothing for a moment gets its app dialed (when the policy
            //    lets a plaintext client use TCP): a client that waits for its server is no
            //    TLS client, and an app that speaks first is forwarded at once.
            .layer(
                TerminateLayer::new(self.terminate.clone(), InboundConn::peer).with_server_first(
                    self.server_first_delay,
                    TlsServerFirst {
                        decide: Arc::new(decide.clone()),
                        dial: dial_app.clone(),
                    },
                ),
            )
            .filter(Label::new(
                self.tcp.clone(),
                self.authz.clone(),
                tls_enabled,
            ))
            // 3. A peer proxy's transport header names the app port.
            .layer(TransportHeaderLayer::new(
                self.detect.timeout,
                InboundTls::expects_header,
            ))
            // 4. The policy's decision for this client and port.
            .layer(tower::filter::AsyncFilterLayer::new(decide))
            // 5. Detect the protocol, unless it is known; a client silent for a moment that
            //    the policy lets use TCP gets its app dialed, in case the app speaks first.
            .layer(
                DetectLayer::new(self.detect.clone(), InboundTarget::known_protocol)
                    .with_timeouts(InboundTarget::detect_timeout)
                    .with_speculation(self.server_first_delay, dial_app),
            )
            // 6. Apply the decision.
            .filter(Authorize::new(self.authz.clone()))
            // 7. HTTP, or opaque TCP, to the app.
            .service(Router {
                http,
                connector: self.connector.clone(),
                own: self.own.clone(),
            });
        BoxCloneSyncService::new(stack)
    }

    /// The request stack of one HTTP connection.
    pub(crate) fn request_stack(&self, conn: Authorized) -> impl RequestStack {
        let app = app_addr(conn.target.port);
        let routes = AuthorityRoutes::new(
            &self.http_metrics,
            Direction::Inbound,
            app,
            conn.target.label.clone(),
        );
        ServiceBuilder::new()
            // 1. A failure becomes the proxy's error response.
            .layer(ErrorResponseLayer)
            // 2. The policy, per request; request metrics, by authority and the decision.
            .layer(AuthorizeLayer::new(
                conn.authz,
                conn.server.map(|rx| http::ServerCheck {
                    rx,
                    client: conn.target.client.ip(),
                    auth: conn.target.auth.clone(),
                    labels: conn.target.labels(server::Meta::default_named("default")),
                    metrics: self.authz.clone(),
                    last: Default::default(),
                }),
                routes,
            ))
            // 3. The app learns the client's verified identity (and only that).
            .layer(http::ClientIdLayer::new(&conn.target.auth))
            // 5. The app's port must not be this proxy's own.
            .layer(RefuseOwnLayer::loop_to(&self.own, app))
            // 6. A peer proxy's upgraded HTTP/1 goes to the app as HTTP/1.
            .layer(DowngradeLayer)
            // 7. Hop-by-hop headers stay on this hop.
            .layer(HopByHopLayer)
            // 8. The pool, to the app.
            .service(EndpointClient::new(&self.client, app, None))
    }
}

/// The app's address for `port`.
fn app_addr(port: u16) -> SocketAddr {
    SocketAddr::from((Ipv4Addr::LOCALHOST, port))
}

/// Step 5's speculative dial of a silent client's app, as step 7 would dial it; never for a
/// client the policy refuses TCP, or to this proxy's own ports.
#[derive(Clone)]
struct DialApp {
    connector: Connector,
    own: OwnListeners,
}

impl DialApp {
    /// A connection to the app's `port`, unless it is one of this proxy's own.
    fn app(&self, port: u16) -> Option<linkerd_connect::Connect> {
        let app = app_addr(port);
        if self.own.contains(app) {
            return None;
        }
        Some(self.connector.to(Target {
            addr: app,
            meshed: None,
            protocol: None,
        }))
    }
}

impl Speculate<InboundTarget> for DialApp {
    type Io = ClientIo;

    fn dial(&self, target: &InboundTarget) -> Option<Dialing<ClientIo>> {
        if !target.allows_tcp() {
            return None;
        }
        let connect = self.app(target.port)?;
        Some(Box::pin(async move { Ok(connect.oneshot(()).await?) }))
    }
}

/// Step 2's dial of a silent client's app: only for a redirected connection (not one to the
/// inbound port itself, which only peer proxies make, speaking first) whose client the policy
/// lets use TCP as a plaintext client (checked in the dial, which waits for the port's policy
/// as step 4 does).
#[derive(Clone)]
struct TlsServerFirst {
    /// Shared: cloned for every connection the TLS step reads.
    decide: Arc<Decide>,
    dial: DialApp,
}

impl linkerd_tls::ServerFirst<InboundConn> for TlsServerFirst {
    type Io = ClientIo;

    fn dial(&self, conn: &InboundConn) -> Option<Dialing<ClientIo>> {
        if conn.to_listener {
            return None;
        }
        let port = conn.orig_dst.port();
        let connect = self.dial.app(port)?;
        let (decide, client) = (self.decide.clone(), conn.client.ip());
        Some(Box::pin(async move {
            if !decide.allows_plaintext_tcp(client, port).await {
                return Err("the policy does not let the client use TCP".into());
            }
            Ok(connect.oneshot(()).await?)
        }))
    }

    fn attach(&self, conn: &mut InboundConn, dialed: Speculative<ClientIo>) {
        conn.server_first = Some(tls::ServerFirstConn::new(dialed));
    }
}

/// What step 7 gets: the connection, and the app connection step 5 dialed, if any.
type RouterIo = (DetectedIo, Option<Speculative<ClientIo>>);

/// Step 7: HTTP is served; anything else is copied to the app.
#[derive(Clone)]
struct Router<H> {
    http: H,
    connector: Connector,
    own: OwnListeners,
}

impl<H> tower::Service<(Authorized, RouterIo)> for Router<H>
where
    H: tower::Service<(Authorized, Version, DetectedIo), Response = (), Error = Infallible>
        + Clone
        + Send
        + 'static,
    H::Future: Send,
{
    type Response = ();
    type Error = BoxError;
    type Future = future::Either<
        future::ErrInto<Oneshot<H, (Authorized, Version, DetectedIo)>, BoxError>,
        Pin<Box<dyn Future<Output = Result<(), BoxError>> + Send>>,
    >;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, (conn, (mut io, dialed)): (Authorized, RouterIo)) -> Self::Future {
        let version = match conn.protocol {
            Protocol::Http1 => Version::Http1,
            Protocol::Http2 => Version::Http2,
            Protocol::Tls | Protocol::Opaque => {
                let app = app_addr(conn.target.port);
                if self.own.contains(app) {
                    linkerd_stack::rate_limited!(WARN, target = %app, "refusing to forward to this proxy's own port (a forwarding loop)");
                    return future::Either::Right(Box::pin(async { Ok(()) }));
                }
                let connect = self.connector.to(Target {
                    addr: app,
                    meshed: None,
                    protocol: None,
                });
                let client = conn.target.client;
                let revocation = conn.revocation;
                return future::Either::Right(Box::pin(async move {
                    // Over the connection step 2 or 5 dialed, when one did.
                    let dialed =
                        dialed.or_else(|| conn.target.server_first.as_ref().and_then(|c| c.take()));
                    let forward = async move {
                        match dialed {
                            Some(upstream) => {
                                linkerd_connect::copy(&mut io, upstream).await;
                                Ok(())
                            }
                            None => Forward::new(connect).oneshot(io).await,
                        }
                    };
                    let Some(revocation) = revocation else {
                        forward.await?;
                        return Ok(());
                    };
                    tokio::select! {
                        res = forward => res?,
                        // Dropping the forward closes both sides.
                        why = revocation.revoked() => {
                            linkerd_stack::rate_limited!(INFO, %client, target = %app, reason = %why, "terminating a TCP connection the policy no longer allows");
                        }
                    }
                    Ok(())
                }));
            }
        };
        // Polled at every wake-up of the connection: the HTTP server's own future, unboxed.
        let serving = self.http.clone().oneshot((conn, version, io));
        future::Either::Left(serving.err_into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_util::{config, dialing, request_future_size};
    use linkerd_metrics::Registry;
    use linkerd_proxy_transport::TlsLabel;

    fn inbound(config: &Config) -> Arc<Inbound> {
        let mut reg = Registry::default();
        let (tcp, connector, client) = dialing(&config.inbound, Direction::Inbound, &mut reg);
        Inbound::new(
            config,
            None,
            connector,
            client,
            HttpMetrics::register(&mut reg),
            tcp,
            AuthzMetrics::register(&mut reg),
            OwnListeners::new(vec![]),
            CancellationToken::new(),
            None,
            4191,
        )
    }

    /// What hyper holds for every inbound request: at most 1 KiB (see the outbound test).
    #[tokio::test]
    async fn a_requests_future_stays_small() {
        let inbound = inbound(&config(&[]));
        let target = InboundTarget {
            client: "10.0.0.9:40000".parse().unwrap(),
            target: "10.0.0.1:8080".parse().unwrap(),
            port: 8080,
            label: TlsLabel::Opaque,
            auth: policy::ClientAuth::Plaintext,
            decision: policy::Decision::Allow,
            default_policy: "all-unauthenticated",
            protocol: None,
            server: None,
            detect_timeout: None,
            server_first: None,
        };
        let conn = Authorized {
            target,
            protocol: Protocol::Http1,
            authz: None,
            server: None,
            revocation: None,
        };
        let size = request_future_size(&inbound.request_stack(conn));
        eprintln!("inbound: {size} bytes");
        assert!(size <= 1024, "{size} bytes");
    }
}
