//! Explicit-proxy mode: the client names its target in each request (`curl -x`).

use crate::own::{OwnListeners, RefuseOwn, RefuseOwnLayer};
use http::{header, uri::Authority, HeaderValue, Method, Request, Response, Uri};
use hyper::body::Incoming;
use linkerd_connect::{Connect, Connector, Target};
use linkerd_http::{
    Client, EndpointClient, Error, HopByHop, HopByHopLayer, HttpMetrics, Metrics, MetricsLayer,
    ProxyBody, Routes, Tunnel, TunnelLayer,
};
use linkerd_proxy_transport::{Direction, TlsLabel};
use parking_lot::Mutex;
use std::{
    borrow::Cow,
    future::Future,
    net::SocketAddr,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};
use tower::{util::Oneshot, ServiceBuilder, ServiceExt};

/// The host and port an explicit-proxy request names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct ExplicitTarget<'a> {
    pub host: Cow<'a, str>,
    pub port: u16,
}

/// Reads the target from `CONNECT host:port`, an absolute-form URI or the `Host` header.
pub(crate) fn target_of<B>(req: &Request<B>) -> Result<ExplicitTarget<'_>, Error> {
    let uri = req.uri();
    if req.method() == Method::CONNECT {
        let auth = uri
            .authority()
            .ok_or_else(|| Error::BadRequest("CONNECT needs a host:port target".into()))?;
        let port = auth
            .port_u16()
            .ok_or_else(|| Error::BadRequest(format!("CONNECT target {auth} has no port")))?;
        return Ok(ExplicitTarget {
            host: Cow::Borrowed(auth.host()),
            port,
        });
    }
    if let Some(scheme) = uri.scheme_str() {
        if scheme != "http" {
            return Err(Error::BadRequest(format!(
                "{scheme}:// targets can't be proxied as plain HTTP; use CONNECT"
            )));
        }
    }
    if let Some(auth) = uri.authority() {
        return Ok(ExplicitTarget {
            host: Cow::Borrowed(auth.host()),
            port: auth.port_u16().unwrap_or(80),
        });
    }
    let auth = host_header(req)?;
    Ok(ExplicitTarget {
        host: Cow::Owned(auth.host().to_string()),
        port: auth.port_u16().unwrap_or(80),
    })
}

fn host_header<B>(req: &Request<B>) -> Result<Authority, Error> {
    let host = req.headers().get(header::HOST).ok_or_else(|| {
        Error::BadRequest("the request has neither an absolute URI nor a Host header".into())
    })?;
    host.to_str()
        .ok()
        .and_then(|h| h.parse::<Authority>().ok())
        .filter(|a| !a.host().is_empty())
        .ok_or_else(|| Error::BadRequest(format!("invalid Host header {host:?}")))
}

/// Rewrites an HTTP/1 absolute-form request to origin-form, as the origin server expects it,
/// keeping the authority in `Host`.
pub(crate) fn to_origin_form<B>(req: &mut Request<B>) {
    let Some(auth) = req.uri().authority().cloned() else {
        return;
    };
    if !req.headers().contains_key(header::HOST) {
        if let Ok(v) = HeaderValue::from_str(auth.as_str()) {
            req.headers_mut().insert(header::HOST, v);
        }
    }
    let path = req
        .uri()
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/");
    // A path taken from a valid URI is itself a valid URI.
    if let Ok(uri) = path.parse::<Uri>() {
        *req.uri_mut() = uri;
    }
}

/// Resolves the target's host (an IP literal, or a name through the system resolver).
pub(crate) async fn resolve(
    target: &ExplicitTarget<'_>,
    timeout: Duration,
) -> Result<SocketAddr, Error> {
    if let Some(addr) = target.literal() {
        return Ok(addr);
    }
    let host = target.host.trim_start_matches('[').trim_end_matches(']');
    let fail = |reason: String| Error::Resolve {
        name: target.host.to_string(),
        reason,
    };
    let lookup = tokio::net::lookup_host((host, target.port));
    match tokio::time::timeout(timeout, lookup).await {
        Ok(Ok(mut addrs)) => addrs.next().ok_or_else(|| fail("no addresses".into())),
        Ok(Err(e)) => Err(fail(e.to_string())),
        Err(_) => Err(fail(format!("timed out after {timeout:?}"))),
    }
}

impl ExplicitTarget<'_> {
    /// The address, when the host is an IP literal.
    fn literal(&self) -> Option<SocketAddr> {
        let host = self.host.trim_start_matches('[').trim_end_matches(']');
        host.parse().ok().map(|ip| SocketAddr::new(ip, self.port))
    }

    fn into_owned(self) -> ExplicitTarget<'static> {
        ExplicitTarget {
            host: Cow::Owned(self.host.into_owned()),
            port: self.port,
        }
    }
}

/// The stack of requests to one named target.
type TargetStack =
    Metrics<RefuseOwn<Tunnel<OriginForm<HopByHop<EndpointClient<Connector>>>, Connect>>>;

/// The service at the bottom of an explicit-proxy connection's routing: reads the target each
/// request names (`CONNECT host:port`, an absolute URI, or `Host`), resolves it (an IP literal
/// at once, a name through the system resolver within the connect timeout), and sends the
/// request through that target's stack: metrics by authority, refusal of the proxy's own
/// ports (403), a `CONNECT` tunnel, origin form, hop-by-hop headers, the pool. The last
/// target's stack is kept, so a connection's requests to one target build nothing.
#[derive(Clone)]
pub(crate) struct Explicit(Arc<Inner>);

struct Inner {
    metrics: HttpMetrics,
    own: OwnListeners,
    connector: Connector,
    client: Client<linkerd_http::ForwardBody, Connector>,
    tls: TlsLabel,
    last: Mutex<Option<(ExplicitTarget<'static>, SocketAddr, TargetStack)>>,
}

type Req = Request<Incoming>;
type Rsp = Result<Response<ProxyBody>, Error>;

pin_project_lite::pin_project! {
    /// The response future of [`Explicit`].
    pub(crate) struct ResponseFuture {
        #[pin]
        state: State,
    }
}

pin_project_lite::pin_project! {
    #[project = Proj]
    enum State {
        Sent { #[pin] inner: Oneshot<TargetStack, Req> },
        // A name, resolved first (rare: boxed).
        Resolving { inner: Pin<Box<dyn Future<Output = Rsp> + Send>> },
        Failed { error: Option<Error> },
    }
}

impl Explicit {
    pub(crate) fn new(
        metrics: HttpMetrics,
        own: OwnListeners,
        connector: Connector,
        client: Client<linkerd_http::ForwardBody, Connector>,
        tls: TlsLabel,
    ) -> Self {
        Self(Arc::new(Inner {
            metrics,
            own,
            connector,
            client,
            tls,
            last: Mutex::new(None),
        }))
    }
}

impl Inner {
    /// The stack of `target` at `addr`: the connection's last one, or a new one.
    fn stack(&self, target: &ExplicitTarget<'_>, addr: SocketAddr) -> TargetStack {
        let mut last = self.last.lock();
        if let Some((t, a, stack)) = last.as_ref() {
            if *a == addr && t == target {
                return stack.clone();
            }
        }
        let named = format!("{}:{}", target.host, target.port);
        let stack = ServiceBuilder::new()
            // Request metrics, by the request's authority.
            .layer(MetricsLayer::new(Routes::by_authority(
                &self.metrics,
                Direction::Outbound,
                addr,
                self.tls.clone(),
            )))
            // The proxy's own ports are not targets.
            .layer(RefuseOwnLayer::forbidden(&self.own, addr, named))
            // `CONNECT host:port`: the proxy dials the target and tunnels.
            .layer(TunnelLayer::new(self.connector.to(Target {
                addr,
                meshed: None,
                protocol: None,
            })))
            .layer(OriginFormLayer)
            .layer(HopByHopLayer)
            .service(EndpointClient::new(&self.client, addr, None));
        *last = Some((target.clone().into_owned(), addr, stack.clone()));
        stack
    }
}

impl tower::Service<Req> for Explicit {
    type Response = Response<ProxyBody>;
    type Error = Error;
    type Future = ResponseFuture;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Req) -> Self::Future {
        let state = match target_of(&req) {
            Err(error) => State::Failed { error: Some(error) },
            Ok(target) => match target.literal() {
                Some(addr) => {
                    let stack = self.0.stack(&target, addr);
                    State::Sent {
                        inner: stack.oneshot(req),
                    }
                }
                None => {
                    let target = target.into_owned();
                    let inner = self.0.clone();
                    State::Resolving {
                        inner: Box::pin(async move {
                            let addr = resolve(&target, inner.connector.timeout()).await?;
                            inner.stack(&target, addr).oneshot(req).await
                        }),
                    }
                }
            },
        };
        ResponseFuture { state }
    }
}

impl Future for ResponseFuture {
    type Output = Rsp;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Rsp> {
        match self.project().state.project() {
            Proj::Sent { inner } => inner.poll(cx),
            Proj::Resolving { inner } => inner.as_mut().poll(cx),
            Proj::Failed { error } => match error.take() {
                Some(e) => Poll::Ready(Err(e)),
                None => Poll::Pending,
            },
        }
    }
}

/// Rewrites absolute-form HTTP/1 requests (`GET http://host/path`) to origin form, as an
/// origin server expects them, keeping the authority in `Host`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct OriginFormLayer;

/// The service made by [`OriginFormLayer`].
#[derive(Clone, Debug)]
pub(crate) struct OriginForm<S> {
    inner: S,
}

impl<S> tower::Layer<S> for OriginFormLayer {
    type Service = OriginForm<S>;

    fn layer(&self, inner: S) -> OriginForm<S> {
        OriginForm { inner }
    }
}

impl<B, S: tower::Service<Request<B>>> tower::Service<Request<B>> for OriginForm<S> {
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<B>) -> S::Future {
        if req.version() != http::Version::HTTP_2 {
            to_origin_form(&mut req);
        }
        self.inner.call(req)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(method: &str, uri: &str, host: Option<&str>) -> Request<()> {
        let mut b = Request::builder().method(method).uri(uri);
        if let Some(h) = host {
            b = b.header("host", h);
        }
        b.body(()).unwrap()
    }

    fn t(host: &str, port: u16) -> ExplicitTarget<'_> {
        ExplicitTarget {
            host: host.into(),
            port,
        }
    }

    #[test]
    fn targets() {
        assert_eq!(
            target_of(&req("CONNECT", "example.com:443", None)).unwrap(),
            t("example.com", 443)
        );
        assert_eq!(
            target_of(&req("GET", "http://10.0.0.1:8080/a", Some("x"))).unwrap(),
            t("10.0.0.1", 8080)
        );
        assert_eq!(
            target_of(&req("GET", "http://web/a", None)).unwrap(),
            t("web", 80)
        );
        assert_eq!(
            target_of(&req("GET", "/a", Some("web.ns:9000"))).unwrap(),
            t("web.ns", 9000)
        );
        assert_eq!(
            target_of(&req("GET", "http://[::1]:81/", None)).unwrap(),
            t("[::1]", 81)
        );
    }

    #[test]
    fn malformed_targets_are_bad_requests() {
        for r in [
            req("GET", "/a", None),
            req("GET", "/a", Some("bad host")),
            req("GET", "https://example.com/", None),
            req("CONNECT", "example.com", None),
        ] {
            let e = target_of(&r).unwrap_err();
            assert_eq!(e.status(), 400, "{e}");
        }
    }

    #[test]
    fn origin_form_keeps_host() {
        let mut r = req("GET", "http://web:81/p?q=1", None);
        to_origin_form(&mut r);
        assert_eq!(r.uri(), "/p?q=1");
        assert_eq!(r.headers()["host"], "web:81");
        let mut r = req("GET", "http://web:81/p", Some("other"));
        to_origin_form(&mut r);
        assert_eq!(r.headers()["host"], "other");
    }

    #[tokio::test]
    async fn resolves_literals_and_names() {
        let timeout = Duration::from_secs(5);
        assert_eq!(
            resolve(&t("[::1]", 81), timeout).await.unwrap(),
            "[::1]:81".parse().unwrap()
        );
        assert_eq!(
            resolve(&t("127.0.0.1", 80), timeout).await.unwrap(),
            "127.0.0.1:80".parse().unwrap()
        );
        let localhost = resolve(&t("localhost", 80), timeout).await.unwrap();
        assert!(localhost.ip().is_loopback());
        let e = resolve(&t("no-such-host.invalid", 80), timeout)
            .await
            .unwrap_err();
        assert_eq!(e.status(), 502);
    }

    /// An explicit-proxy connection's stack, as the outbound side builds it.
    fn explicit() -> impl tower::Service<
        Req,
        Response = Response<ProxyBody>,
        Error = std::convert::Infallible,
        Future = impl Send,
    > + Clone
           + Send
           + 'static {
        let config = crate::test_util::config(&[]);
        let outbound = crate::outbound::tests::outbound(&config, None);
        let explicit = Explicit::new(
            outbound.http_metrics.clone(),
            outbound.own.clone(),
            outbound.connector.clone(),
            outbound.client.clone(),
            TlsLabel::NoIdentity(linkerd_proxy_transport::NoTlsReason::Disabled),
        );
        tower::Layer::layer(&linkerd_http::ErrorResponseLayer, explicit)
    }

    fn get(uri: &str, host: Option<&str>) -> Request<http_body_util::Empty<bytes::Bytes>> {
        let mut b = Request::get(uri);
        if let Some(h) = host {
            b = b.header("host", h);
        }
        b.body(http_body_util::Empty::new()).unwrap()
    }

    /// An app that answers with the request line and `Host` it got.
    async fn app() -> SocketAddr {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((socket, _)) = listener.accept().await {
                let svc = hyper::service::service_fn(|req: Request<Incoming>| async move {
                    let host = req
                        .headers()
                        .get("host")
                        .map_or("-", |h| h.to_str().unwrap());
                    let seen = format!("{} {}", req.uri(), host);
                    Ok::<_, std::convert::Infallible>(Response::new(http_body_util::Full::new(
                        bytes::Bytes::from(seen),
                    )))
                });
                tokio::spawn(
                    hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(socket), svc),
                );
            }
        });
        addr
    }

    #[tokio::test]
    async fn each_request_reaches_the_target_it_names_in_origin_form() {
        let app = app().await;
        let (status, err, seen) =
            crate::test_util::roundtrip(explicit(), get(&format!("http://{app}/a?b"), None)).await;
        assert_eq!(status, 200, "{err}");
        assert_eq!(
            seen,
            format!("/a?b {app}"),
            "origin form, the authority in Host"
        );
        let host = app.to_string();
        let (status, _, seen) =
            crate::test_util::roundtrip(explicit(), get("/p", Some(&host))).await;
        assert_eq!((status, seen), (200, format!("/p {app}")), "routed by Host");
    }

    #[tokio::test]
    async fn a_target_that_is_the_proxys_own_port_or_none_at_all_is_refused() {
        // 127.0.0.1:4140 is one of the test proxy's own listeners.
        let (status, err, _) =
            crate::test_util::roundtrip(explicit(), get("http://127.0.0.1:4140/", None)).await;
        assert_eq!(status, 403);
        assert!(err.contains("127.0.0.1:4140"), "{err}");
        let (status, _, _) = crate::test_util::roundtrip(explicit(), get("/", None)).await;
        assert_eq!(status, 400, "no absolute URI, no Host");
        let (status, err, _) =
            crate::test_util::roundtrip(explicit(), get("http://no-such-host.invalid/", None))
                .await;
        assert_eq!(status, 502, "{err}");
    }

    #[tokio::test]
    async fn origin_form_rewrites_http1_only() {
        use tower::{Layer, ServiceExt};
        let seen = tower::service_fn(|req: Request<()>| async move {
            Ok::<_, std::convert::Infallible>(req.uri().to_string())
        });
        let svc = OriginFormLayer.layer(seen);
        let r = req("GET", "http://web:81/p", None);
        assert_eq!(svc.clone().oneshot(r).await.unwrap(), "/p");
        let mut h2 = req("GET", "http://web:81/p", None);
        *h2.version_mut() = http::Version::HTTP_2;
        assert_eq!(svc.oneshot(h2).await.unwrap(), "http://web:81/p");
    }
}
