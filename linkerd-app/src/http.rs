//! The HTTP stack of one connection: route each request to its target and forward it.

use crate::policy::Denial;
use crate::{
    discover::{Discovery, Service},
    explicit, OwnListeners,
};
use http::{header, Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use linkerd_detect::Protocol;
use linkerd_http::{
    connect_endpoint, forward, orig_proto, spawn_tunnel, strip_hop_by_hop, try_forward,
    wants_upgrade, Client, Endpoint, Error, HttpMetrics, Meshed, ProxyBody, RouteLabels,
    RouteMetrics, ServerConfig, Version,
};
use linkerd_metrics::Counter;
use linkerd_proxy_transport::{Direction, TcpMetrics, TlsLabel};
use parking_lot::Mutex;
use std::{
    convert::Infallible,
    net::SocketAddr,
    sync::{Arc, OnceLock},
    time::Duration,
};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

/// What one direction's HTTP stack needs; shared by all its connections.
pub(crate) struct HttpStack {
    pub direction: Direction,
    pub client: Client<Incoming>,
    pub metrics: HttpMetrics,
    pub tcp: TcpMetrics,
    pub own: OwnListeners,
    pub server: ServerConfig,
    pub connect_timeout: Duration,
    /// Whether the proxy has an identity (meshed endpoints are then reached with mTLS).
    pub tls_enabled: bool,
    /// Discovery and balancing by authority (outbound, when configured).
    pub discovery: Option<Arc<Discovery>>,
}

/// Where a connection's requests go.
#[derive(Clone)]
pub(crate) enum Route {
    /// Every request goes to this address (the original destination, or the local app), over
    /// mTLS when discovery named the endpoint's identity; with `h2`, the endpoint's proxy takes
    /// HTTP/2, so HTTP/1 requests are carried as HTTP/2 (`l5d-orig-proto`).
    Target {
        addr: SocketAddr,
        meshed: Option<Meshed>,
        h2: bool,
    },
    /// The original destination is a discovered service (its profile named it): requests
    /// are balanced over its endpoints unless their authority names another service.
    Service(Arc<Service>),
    /// Each request names its own target (explicit-proxy mode).
    Explicit,
}

/// What the accepting stack decided about a connection before serving its requests.
pub(crate) struct ConnInfo {
    /// The connection's TLS status, for request metrics.
    pub tls: TlsLabel,
    /// Set when the inbound policy refuses the client (each request gets a 403) or audits it.
    pub authz: Option<Authz>,
}

/// A policy decision against the connection's client, applied to each request.
pub(crate) struct Authz {
    pub denial: Denial,
    /// Allowed (audit policy), only counted.
    pub audit: bool,
    pub counter: Counter,
}

struct Conn {
    stack: Arc<HttpStack>,
    version: Version,
    info: ConnInfo,
    /// The pool for a fixed target, looked up once per connection.
    endpoint: Option<Endpoint<Incoming>>,
    /// The fixed target's HTTP/2 pool when HTTP/1 requests are upgraded to it (outbound), or
    /// its HTTP/1 pool for requests a peer proxy upgraded (inbound); made on first use.
    other_version: OnceLock<Endpoint<Incoming>>,
    /// Whether the fixed target's proxy takes HTTP/1 as HTTP/2.
    target_h2: bool,
    /// The metrics of the last route used, so a connection looks them up once per authority.
    last_route: Mutex<Option<RouteMetrics>>,
    /// The last authority looked up and the service it named (or not), so a connection looks
    /// each authority up (and, for short names, asks DNS) once.
    last_service: Mutex<Option<(String, Option<Arc<Service>>)>>,
    /// Requests name their own targets (explicit-proxy mode).
    explicit: bool,
    /// The service the connection's original destination is, if discovered.
    default_service: Option<Arc<Service>>,
}

/// Serves HTTP on a detected connection until the client closes or `shutdown` drains it.
pub(crate) async fn serve<I>(
    stack: Arc<HttpStack>,
    io: I,
    protocol: Protocol,
    route: Route,
    info: ConnInfo,
    shutdown: CancellationToken,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let http2 = protocol == Protocol::Http2;
    let version = if http2 {
        Version::Http2
    } else {
        Version::Http1
    };
    let endpoint = match route {
        Route::Target {
            addr, ref meshed, ..
        } => Some(stack.client.endpoint(addr, version, meshed.clone())),
        Route::Service(_) | Route::Explicit => None,
    };
    let explicit = matches!(route, Route::Explicit);
    let target_h2 = matches!(route, Route::Target { h2: true, .. });
    let default_service = match route {
        Route::Service(svc) => Some(svc),
        _ => None,
    };
    let server = stack.server.clone();
    let conn = Arc::new(Conn {
        stack,
        version,
        info,
        endpoint,
        other_version: OnceLock::new(),
        target_h2,
        last_route: Mutex::new(None),
        last_service: Mutex::new(None),
        explicit,
        default_service,
    });
    let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
        let conn = conn.clone();
        let span = tracing::debug_span!("request", method = %req.method(), uri = %req.uri());
        async move { Ok::<_, Infallible>(conn.handle(req).await) }.instrument(span)
    });
    if let Err(error) =
        linkerd_http::serve(io, http2, &server, svc, shutdown.cancelled_owned()).await
    {
        tracing::debug!(%error, "HTTP connection closed with an error");
    }
}

impl Conn {
    async fn handle(&self, mut req: Request<Incoming>) -> Response<ProxyBody> {
        if let Some(authz) = &self.info.authz {
            authz.counter.incr();
            if !authz.audit {
                let error = Error::Unauthorized(authz.denial.to_string());
                tracing::debug!(%error, "request refused");
                return error.to_response();
            }
        }
        let svc = match self.discovered(&req).await {
            Some(svc) => Some(svc),
            None => self.default_service.clone(),
        };
        if let Some(svc) = svc {
            if self.explicit && self.version == Version::Http1 && req.method() != Method::CONNECT {
                explicit::to_origin_form(&mut req);
            }
            return self.balanced(&svc, req).await;
        }
        let Some(endpoint) = &self.endpoint else {
            // Boxed, like the other rare paths (tunnels, DNS): their large states would
            // otherwise be part of every request's future.
            return Box::pin(self.explicit(req)).await;
        };
        let rec = self.route(&req, endpoint.addr()).request();
        if self.stack.own.contains(endpoint.addr()) {
            let error = Error::Loop {
                addr: endpoint.addr(),
            };
            tracing::warn!(%error, "refusing request");
            rec.error(error.status());
            return error.to_response();
        }
        // A peer proxy's upgraded HTTP/1 request goes to the app as HTTP/1.
        if self.stack.direction == Direction::Inbound && self.version == Version::Http2 {
            match orig_proto::downgrade_request(&mut req) {
                Ok(false) => {}
                Ok(true) => {
                    let h1 = self.other_version(endpoint);
                    let mut rsp = forward(h1, req, rec).await;
                    orig_proto::upgrade_response(&mut rsp);
                    return rsp;
                }
                Err(error) => {
                    rec.error(error.status());
                    return error.to_response();
                }
            }
        }
        if self.target_h2 && upgradable(&req) {
            let h2 = self.other_version(endpoint);
            return match upgraded(h2, req, rec).await {
                Ok(rsp) => rsp,
                Err(e) => e.to_response(),
            };
        }
        forward(endpoint, req, rec).await
    }

    /// The fixed target's pool in the other HTTP version than the connection's (HTTP/2 for
    /// upgraded HTTP/1 requests, HTTP/1 for downgraded ones), looked up once.
    fn other_version(&self, endpoint: &Endpoint<Incoming>) -> &Endpoint<Incoming> {
        let other = match self.version {
            Version::Http1 => Version::Http2,
            Version::Http2 => Version::Http1,
        };
        self.other_version
            .get_or_init(|| endpoint.with_version(other))
    }

    /// Explicit-proxy mode: resolve the named target, refuse the proxy's own ports, then
    /// tunnel (`CONNECT`) or forward.
    async fn explicit(&self, mut req: Request<Incoming>) -> Response<ProxyBody> {
        let fail = |error: Error, route: Option<RouteMetrics>| {
            tracing::info!(%error, "explicit-proxy request refused");
            if let Some(r) = route {
                r.request().error(error.status());
            }
            error.to_response()
        };
        let target = match explicit::target_of(&req) {
            Ok(t) => t,
            Err(e) => return fail(e, None),
        };
        let addr = match explicit::resolve(&target, self.stack.connect_timeout).await {
            Ok(a) => a,
            Err(e) => return fail(e, None),
        };
        let route = self.route(&req, addr);
        if self.stack.own.contains(addr) {
            let e = Error::Forbidden {
                target: format!("{}:{}", target.host, target.port),
                reason: "it is one of this proxy's own listeners",
            };
            return fail(e, Some(route));
        }

        if req.method() == Method::CONNECT {
            return match Box::pin(self.tunnel(addr, None, &mut req, route.request())).await {
                Ok(rsp) => rsp,
                Err(e) => fail(e, None),
            };
        }

        if self.version == Version::Http1 {
            explicit::to_origin_form(&mut req);
        }
        let endpoint = self.stack.client.endpoint(addr, self.version, None);
        forward(&endpoint, req, route.request()).await
    }

    /// Connects to `addr` (with mTLS when `meshed`) and, once the client has switched
    /// protocols, copies bytes between them (`CONNECT`). Answers 200 only after the connection
    /// is up.
    async fn tunnel(
        &self,
        addr: SocketAddr,
        meshed: Option<&Meshed>,
        req: &mut Request<Incoming>,
        rec: linkerd_http::ResponseRecorder,
    ) -> Result<Response<ProxyBody>, Error> {
        let s = &self.stack;
        let tls = s.client.tls();
        match connect_endpoint(
            addr,
            meshed,
            tls,
            None,
            s.connect_timeout,
            &s.tcp,
            s.direction,
        )
        .await
        {
            Ok(upstream) => {
                spawn_tunnel(hyper::upgrade::on(req), upstream);
                let rsp = Response::new(ProxyBody::empty());
                // An empty body: recorded as a complete, successful response when dropped.
                drop(rec.response(StatusCode::OK, rsp.headers(), ProxyBody::empty()));
                Ok(rsp)
            }
            Err(e) => {
                rec.error(e.status());
                Err(e)
            }
        }
    }

    /// The discovered service this request's authority names, if any.
    async fn discovered(&self, req: &Request<Incoming>) -> Option<Arc<Service>> {
        let discovery = self.stack.discovery.as_ref()?;
        let authority = authority_of(req)?;
        if let Some((a, svc)) = self.last_service.lock().as_ref() {
            if a == authority {
                return svc.clone();
            }
        }
        let svc = Box::pin(discovery.service_for(authority)).await;
        *self.last_service.lock() = Some((authority.to_string(), svc.clone()));
        svc
    }

    /// Sends the request to the endpoint the service's balancer picks (a `CONNECT` tunnel is
    /// balanced per connection the same way).
    async fn balanced(&self, svc: &Service, mut req: Request<Incoming>) -> Response<ProxyBody> {
        let ep = match svc.balancer.ready().await {
            Ok(ep) => ep,
            Err(e) => {
                let error = Error::Unavailable(e.to_string());
                tracing::info!(%error, "no endpoint for the request");
                return error.to_response();
            }
        };
        let in_flight = ep.start();
        let rec = ep
            .meta
            .route(
                &self.stack.metrics,
                &svc.name,
                ep.addr,
                self.stack.tls_enabled,
            )
            .request();
        let res = if req.method() == Method::CONNECT {
            Box::pin(self.tunnel(ep.addr, ep.meta.meshed.as_ref(), &mut req, rec)).await
        } else if ep.meta.h2 && self.version == Version::Http1 && upgradable(&req) {
            let pool = ep.meta.pool(&self.stack.client, ep.addr, Version::Http2);
            upgraded(pool, req, rec).await
        } else {
            let pool = ep.meta.pool(&self.stack.client, ep.addr, self.version);
            try_forward(pool, req, rec).await
        };
        match res {
            Ok(rsp) => {
                in_flight.first_byte();
                svc.balancer.connected(&ep);
                rsp
            }
            Err(error) => {
                if matches!(error, Error::Connect(_)) {
                    svc.balancer.connect_failed(&ep);
                }
                error.to_response()
            }
        }
    }

    /// The route metrics for this request's authority and target, cached per connection.
    fn route(&self, req: &Request<Incoming>, target_addr: SocketAddr) -> RouteMetrics {
        let authority = req.uri().authority().map(|a| a.as_str()).or_else(|| {
            req.headers()
                .get(header::HOST)
                .and_then(|h| h.to_str().ok())
        });
        let mut last = self.last_route.lock();
        if let Some(r) = last.as_ref() {
            let l = r.labels();
            if l.target_addr == target_addr && l.authority.as_deref() == authority {
                return r.clone();
            }
        }
        let r = self.stack.metrics.route(RouteLabels {
            direction: self.stack.direction,
            authority: authority.map(str::to_string),
            target_addr,
            dst: None,
            tls: self.info.tls.clone(),
        });
        *last = Some(r.clone());
        r
    }
}

/// Whether an HTTP/1 request may be carried as HTTP/2: not `CONNECT` and not a protocol
/// upgrade (WebSocket), which need an HTTP/1.1 connection of their own.
fn upgradable<B>(req: &Request<B>) -> bool {
    req.version() != http::Version::HTTP_2
        && req.method() != Method::CONNECT
        && !wants_upgrade(req.headers())
}

/// Sends an HTTP/1 request as HTTP/2 with `l5d-orig-proto`, and gives the response back in
/// the request's version.
async fn upgraded(
    h2: &Endpoint<Incoming>,
    mut req: Request<Incoming>,
    rec: linkerd_http::ResponseRecorder,
) -> Result<Response<ProxyBody>, Error> {
    strip_hop_by_hop(req.headers_mut(), false);
    let orig = match orig_proto::upgrade_request(&mut req) {
        Ok(v) => v,
        Err(e) => {
            rec.error(e.status());
            return Err(e);
        }
    };
    let mut rsp = try_forward(h2, req, rec).await?;
    orig_proto::downgrade_response(&mut rsp, orig);
    Ok(rsp)
}

/// The request's authority: the URI's, or the `Host` header.
fn authority_of<B>(req: &Request<B>) -> Option<&str> {
    req.uri().authority().map(|a| a.as_str()).or_else(|| {
        req.headers()
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
    })
}
