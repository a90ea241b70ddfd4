//! The metrics layer: counts each request and classifies its response.

use super::{HttpMetrics, PolicyLabels, ResponseRecorder, RouteLabels, RouteMetrics};
use crate::{Error, ProxyBody};
use http::{Request, Response};
use linkerd_proxy_transport::{Direction, TlsLabel};
use parking_lot::Mutex;
use std::{
    future::Future,
    net::SocketAddr,
    pin::Pin,
    sync::{Arc, OnceLock},
    task::{ready, Context, Poll},
};

/// Counts requests (`request_total`), their latency to the response headers
/// (`response_latency_ms`) and their responses by classification (`response_total`), under
/// the labels [`Routes`] gives each request. A failure below (e.g. a connect error) is counted
/// as the response the proxy will answer with.
#[derive(Clone)]
pub struct MetricsLayer {
    routes: Routes,
}

/// The service made by [`MetricsLayer`].
#[derive(Clone)]
pub struct Metrics<S> {
    routes: Routes,
    inner: S,
}

/// Which labels a request counts under.
#[derive(Clone)]
pub enum Routes {
    /// Every request counts under one route (e.g. one discovered endpoint of a service),
    /// looked up on the first request.
    Once(Arc<OnceRoute>),
    /// Requests to one target count under their own authority.
    ByAuthority(Arc<AuthorityRoutes>),
}

/// One route, looked up when first used (a series appears once it counts something).
pub struct OnceRoute {
    metrics: HttpMetrics,
    labels: RouteLabels,
    route: OnceLock<RouteMetrics>,
}

/// The routes of one target, by request authority, for one connection: the last one used is
/// kept, so a connection looks its authority up once, not per request.
pub struct AuthorityRoutes {
    metrics: HttpMetrics,
    direction: Direction,
    target_addr: SocketAddr,
    tls: TlsLabel,
    last: Mutex<Option<RouteMetrics>>,
}

pin_project_lite::pin_project! {
    /// The response future of [`Metrics`].
    pub struct ResponseFuture<F> {
        #[pin]
        inner: F,
        rec: Option<ResponseRecorder>,
    }
}

// === impl MetricsLayer ===

impl MetricsLayer {
    /// Counts requests under `routes`.
    pub fn new(routes: Routes) -> Self {
        Self { routes }
    }
}

impl<S> tower::Layer<S> for MetricsLayer {
    type Service = Metrics<S>;

    fn layer(&self, inner: S) -> Metrics<S> {
        Metrics {
            routes: self.routes.clone(),
            inner,
        }
    }
}

// === impl Metrics ===

impl<B, S> tower::Service<Request<B>> for Metrics<S>
where
    S: tower::Service<Request<B>, Response = Response<ProxyBody>, Error = Error>,
{
    type Response = Response<ProxyBody>;
    type Error = Error;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let rec = self.routes.route(&req).request();
        ResponseFuture::new(rec, self.inner.call(req))
    }
}

impl<F> ResponseFuture<F> {
    /// Records `inner`'s response (or failure) with `rec`.
    pub fn new(rec: ResponseRecorder, inner: F) -> Self {
        Self {
            inner,
            rec: Some(rec),
        }
    }
}

impl<F> Future for ResponseFuture<F>
where
    F: Future<Output = Result<Response<ProxyBody>, Error>>,
{
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let mut res = ready!(this.inner.poll(cx));
        if let Some(rec) = this.rec.take() {
            match &mut res {
                Ok(rsp) => rec.record(rsp),
                Err(e) => rec.error(e),
            }
        }
        Poll::Ready(res)
    }
}

// === impl Routes ===

impl Routes {
    /// Every request counts under `labels`.
    pub fn once(metrics: &HttpMetrics, labels: RouteLabels) -> Self {
        Self::Once(Arc::new(OnceRoute::new(metrics, labels)))
    }

    /// Requests to `target_addr` count under their authority, with the connection's `tls`.
    pub fn by_authority(
        metrics: &HttpMetrics,
        direction: Direction,
        target_addr: SocketAddr,
        tls: TlsLabel,
    ) -> Self {
        Self::ByAuthority(AuthorityRoutes::new(metrics, direction, target_addr, tls))
    }

    fn route<B>(&self, req: &Request<B>) -> RouteMetrics {
        match self {
            Self::Once(once) => once.get(),
            Self::ByAuthority(routes) => routes.route(req),
        }
    }
}

impl OnceRoute {
    /// Counts under `labels`, from its first use.
    pub fn new(metrics: &HttpMetrics, labels: RouteLabels) -> Self {
        Self {
            metrics: metrics.clone(),
            labels,
            route: OnceLock::new(),
        }
    }

    /// The route's handles, looked up on first use.
    pub fn get(&self) -> RouteMetrics {
        self.route
            .get_or_init(|| self.metrics.route(self.labels.clone()))
            .clone()
    }
}

impl AuthorityRoutes {
    /// Requests to `target_addr` count under their authority, with the connection's `tls`.
    pub fn new(
        metrics: &HttpMetrics,
        direction: Direction,
        target_addr: SocketAddr,
        tls: TlsLabel,
    ) -> Arc<Self> {
        Arc::new(Self {
            metrics: metrics.clone(),
            direction,
            target_addr,
            tls,
            last: Mutex::new(None),
        })
    }

    /// The route of `req`'s authority (its URI's, or its `Host`); inbound, the logical name
    /// the client's proxy routed it by (`l5d-dst-canonical`) comes first.
    fn route<B>(&self, req: &Request<B>) -> RouteMetrics {
        self.route_with(req, None)
    }

    /// The route of `req`'s authority, under the labels of the policy that let it in.
    pub fn route_with<B>(&self, req: &Request<B>, policy: Option<&PolicyLabels>) -> RouteMetrics {
        let canonical = match self.direction {
            Direction::Inbound => req
                .headers()
                .get(crate::L5D_DST_CANONICAL)
                .and_then(|v| v.to_str().ok()),
            Direction::Outbound => None,
        };
        let authority = match self.direction {
            Direction::Inbound if !self.metrics.inbound_authority() => None,
            _ => canonical
                .or_else(|| crate::authority_of(req))
                .map(linkerd_metrics::bounded),
        };
        let mut last = self.last.lock();
        if let Some(r) = last.as_ref() {
            let l = r.labels();
            let same_policy = match (&l.policy, policy) {
                (None, None) => true,
                (Some(a), Some(b)) => a.ptr_eq(b) || a == b,
                _ => false,
            };
            if same_policy && l.authority.as_deref() == authority {
                return r.clone();
            }
        }
        let r = self.metrics.route(RouteLabels {
            direction: self.direction,
            authority: authority.map(str::to_string),
            target_addr: self.target_addr,
            dst: None,
            tls: self.tls.clone(),
            policy: policy.cloned(),
        });
        *last = Some(r.clone());
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Error;
    use http::StatusCode;
    use linkerd_metrics::Registry;
    use linkerd_proxy_transport::NoTlsReason;
    use tower::{Layer, ServiceExt};

    const LABELS: &str = "direction=\"outbound\",authority=\"web:80\",target_addr=\"10.0.0.1:80\",target_ip=\"10.0.0.1\",target_port=\"80\",tls=\"no_identity\",no_tls_reason=\"disabled\"";

    fn routes(reg: &mut Registry) -> Routes {
        let metrics = HttpMetrics::register(reg);
        Routes::by_authority(
            &metrics,
            Direction::Outbound,
            "10.0.0.1:80".parse().unwrap(),
            TlsLabel::NoIdentity(NoTlsReason::Disabled),
        )
    }

    fn req(host: &str) -> Request<()> {
        Request::builder().header("host", host).body(()).unwrap()
    }

    #[tokio::test]
    async fn responses_and_failures_below_are_counted_per_authority() {
        let mut reg = Registry::default();
        let inner = tower::service_fn(|req: Request<()>| async move {
            match req.uri().path() {
                "/fail" => Err(Error::BadRequest("no".into())),
                _ => Ok(Response::new(ProxyBody::full("ok"))),
            }
        });
        let svc = MetricsLayer::new(routes(&mut reg)).layer(inner);
        let rsp = svc.clone().oneshot(req("web:80")).await.unwrap();
        http_body_util::BodyExt::collect(rsp.into_body())
            .await
            .unwrap();
        let mut fail = req("web:80");
        *fail.uri_mut() = "/fail".parse().unwrap();
        assert!(svc.clone().oneshot(fail).await.is_err());
        svc.clone().oneshot(req("other:80")).await.unwrap();

        let text = reg.encode();
        for line in [
            format!("request_total{{{LABELS}}} 2\n"),
            format!(
                "response_total{{{LABELS},status_code=\"200\",classification=\"success\",grpc_status=\"\",error=\"\"}} 1\n"
            ),
            format!(
                "response_total{{{LABELS},status_code=\"400\",classification=\"success\",grpc_status=\"\",error=\"bad_request\"}} 1\n"
            ),
            format!("response_latency_ms_count{{{LABELS},status_code=\"400\"}} 1\n"),
            "request_total{direction=\"outbound\",authority=\"other:80\"".to_string(),
        ] {
            assert!(text.contains(&line), "missing {line} in\n{text}");
        }
    }

    #[tokio::test]
    async fn a_fixed_route_appears_once_it_counts() {
        let mut reg = Registry::default();
        let metrics = HttpMetrics::register(&mut reg);
        let labels = RouteLabels {
            direction: Direction::Outbound,
            authority: Some("web.ns.svc.cluster.local:80".into()),
            target_addr: "10.0.0.1:80".parse().unwrap(),
            dst: None,
            tls: TlsLabel::NoIdentity(NoTlsReason::Disabled),
            policy: None,
        };
        let inner = tower::service_fn(|_: Request<()>| async {
            Ok::<_, Error>(Response::new(ProxyBody::empty()))
        });
        let svc = MetricsLayer::new(Routes::once(&metrics, labels)).layer(inner);
        assert!(
            !reg.encode().contains("request_total{"),
            "no series before a request"
        );
        for host in ["a", "b"] {
            svc.clone().oneshot(req(host)).await.unwrap();
        }
        assert!(
            reg.encode().contains(
                "request_total{direction=\"outbound\",authority=\"web.ns.svc.cluster.local:80\""
            ),
            "{}",
            reg.encode()
        );
        assert!(
            !reg.encode().contains("authority=\"a\""),
            "one route, whatever the Host"
        );
    }

    #[tokio::test]
    async fn a_response_is_classified_when_its_body_ends() {
        let mut reg = Registry::default();
        let inner = tower::service_fn(|_: Request<()>| async {
            let mut rsp = Response::new(ProxyBody::full("unavailable"));
            *rsp.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
            Ok::<_, Error>(rsp)
        });
        let svc = MetricsLayer::new(routes(&mut reg)).layer(inner);
        let rsp = svc.oneshot(req("web:80")).await.unwrap();
        let failure = format!(
            "response_total{{{LABELS},status_code=\"503\",classification=\"failure\",grpc_status=\"\",error=\"\"}} 1\n"
        );
        assert!(!reg.encode().contains(&failure), "not before the body ends");
        use http_body_util::BodyExt;
        rsp.into_body().collect().await.unwrap();
        assert!(reg.encode().contains(&failure), "{}", reg.encode());
    }
}
