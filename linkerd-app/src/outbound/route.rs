//! Routing an outbound request by its authority: a discovered name is balanced over its
//! endpoints.

use super::{
    discover::{Discovery, HttpBalance, Lookup, Service},
    explicit,
};
use http::{Method, Request, Response, Version};
use hyper::body::Incoming;
use linkerd_http::{authority_of, Error, ProxyBody};
use parking_lot::Mutex;
use std::{
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{ready, Context, Poll},
};
use tower::{util::Oneshot, ServiceExt};

/// A `tower` layer over one connection's requests: a request whose authority (`:authority`,
/// `Host` or absolute URI) is a discovered name goes to that service's balancer; else to the
/// connection's own service (its original destination's profile named one), if any; else to
/// the inner service (the original destination, or explicit mode's named target).
///
/// A connection looks each authority up once (the last one is kept), so its requests neither
/// parse names nor ask DNS again. In explicit mode, an absolute-form HTTP/1 request routed to
/// a service is sent in origin form, as an origin server expects it.
#[derive(Clone)]
pub(crate) struct RouteLayer {
    discovery: Option<Arc<Discovery>>,
    default: Option<Arc<Service>>,
    explicit: bool,
}

/// The service made by [`RouteLayer`].
#[derive(Clone)]
pub(crate) struct Route<F> {
    discovery: Option<Arc<Discovery>>,
    /// The connection's own service (held, so the service and its resolution live as long
    /// as the connection).
    default: Option<Arc<Service>>,
    explicit: bool,
    /// The last authority looked up and the service it named (or not).
    last: Arc<Mutex<Option<LastLookup>>>,
    fallback: F,
}

type Req = Request<Incoming>;
type LastLookup = (String, Option<Arc<Service>>);
type Rsp = Result<Response<ProxyBody>, Error>;

pin_project_lite::pin_project! {
    /// The response future of [`Route`].
    pub(crate) struct ResponseFuture<F> {
        #[pin]
        state: State<F>,
    }
}

pin_project_lite::pin_project! {
    #[project = Proj]
    enum State<F> {
        Balanced { #[pin] inner: Oneshot<HttpBalance, Req>, svc: Arc<Service> },
        Fallback { #[pin] inner: F },
        // A short name, expanded by DNS first (rare: boxed).
        Canonicalizing { inner: Pin<Box<dyn Future<Output = Rsp> + Send>> },
    }
}

impl RouteLayer {
    /// Routes by `discovery`'s names, else to `default`; `explicit` for explicit-proxy mode.
    pub(crate) fn new(
        discovery: Option<Arc<Discovery>>,
        default: Option<Arc<Service>>,
        explicit: bool,
    ) -> Self {
        Self {
            discovery,
            default,
            explicit,
        }
    }
}

impl<F> tower::Layer<F> for RouteLayer {
    type Service = Route<F>;

    fn layer(&self, fallback: F) -> Route<F> {
        Route {
            discovery: self.discovery.clone(),
            default: self.default.clone(),
            explicit: self.explicit,
            last: Arc::new(Mutex::new(None)),
            fallback,
        }
    }
}

impl<F> tower::Service<Req> for Route<F>
where
    F: tower::Service<Req, Response = Response<ProxyBody>, Error = Error> + Clone + Send + 'static,
    F::Future: Send,
{
    type Response = Response<ProxyBody>;
    type Error = Error;
    type Future = ResponseFuture<F::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        // Most requests go to the fallback: it is readied first. A balancer is driven to
        // readiness (an endpoint) in the response future.
        self.fallback.poll_ready(cx)
    }

    fn call(&mut self, req: Req) -> Self::Future {
        let lookup = match (&self.discovery, authority_of(&req)) {
            (Some(d), Some(authority)) => self.lookup(d, authority),
            _ => Lookup::Found(None),
        };
        let state = match lookup {
            Lookup::Found(Some(svc)) => State::Balanced {
                inner: self.balanced(svc.http(), req),
                svc,
            },
            Lookup::Found(None) => match self.default.clone() {
                Some(svc) => State::Balanced {
                    inner: self.balanced(svc.http(), req),
                    svc,
                },
                None => State::Fallback {
                    inner: self.fallback.call(req),
                },
            },
            Lookup::Canonicalize => State::Canonicalizing {
                inner: Box::pin(self.clone().canonicalize(req)),
            },
        };
        ResponseFuture { state }
    }
}

impl<F> Route<F>
where
    F: tower::Service<Req, Response = Response<ProxyBody>, Error = Error> + Clone + Send + 'static,
    F::Future: Send,
{
    /// The service `authority` names, from the connection's last lookup when it is the same.
    fn lookup(&self, discovery: &Discovery, authority: &str) -> Lookup {
        let mut last = self.last.lock();
        if let Some((a, svc)) = last.as_ref() {
            if a == authority {
                return Lookup::Found(svc.clone());
            }
        }
        let found = discovery.lookup(authority);
        if let Lookup::Found(svc) = &found {
            *last = Some((authority.to_string(), svc.clone()));
        }
        found
    }

    /// Sends `req` to the balancer (in origin form, in explicit mode).
    fn balanced(&self, balance: HttpBalance, mut req: Req) -> Oneshot<HttpBalance, Req> {
        if self.explicit && req.version() != Version::HTTP_2 && req.method() != Method::CONNECT {
            explicit::to_origin_form(&mut req);
        }
        balance.oneshot(req)
    }

    /// Expands a short name with the DNS search domains, then routes as [`Route::call`] does.
    async fn canonicalize(self, req: Req) -> Rsp {
        let authority = authority_of(&req).unwrap_or_default().to_string();
        let svc = match &self.discovery {
            Some(d) => d.canonical(&authority).await,
            None => None,
        };
        *self.last.lock() = Some((authority, svc.clone()));
        match svc.or_else(|| self.default.clone()) {
            Some(svc) => {
                let res = self.balanced(svc.http(), req).await;
                count_unserved(&svc, &res);
                res
            }
            None => self.fallback.oneshot(req).await,
        }
    }
}

/// A request the balancer refused before any endpoint took it counts under the service:
/// the endpoints' own metrics count the rest.
pub(super) fn count_unserved(svc: &Service, res: &Rsp) {
    if let Err(e @ Error::Unavailable(_)) = res {
        svc.unserved.get().request().error(e);
    }
}

impl<F> Future for ResponseFuture<F>
where
    F: Future<Output = Rsp>,
{
    type Output = Rsp;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Rsp> {
        match self.project().state.project() {
            Proj::Balanced { inner, svc } => {
                let res = ready!(inner.poll(cx));
                count_unserved(svc, &res);
                Poll::Ready(res)
            }
            Proj::Fallback { inner } => inner.poll(cx),
            Proj::Canonicalizing { inner } => inner.as_mut().poll(cx),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outbound::discover::tests::discovery;
    use http::header;
    use linkerd_http::ErrorResponseLayer;
    use tower::Layer;

    /// Sends a request for `authority` through `route` over a fallback that answers 204;
    /// returns the status and `l5d-proxy-error`.
    async fn status(route: RouteLayer, authority: &str) -> (u16, String) {
        let fallback = tower::service_fn(|_: Req| async {
            let mut rsp = Response::new(ProxyBody::empty());
            *rsp.status_mut() = http::StatusCode::NO_CONTENT;
            Ok::<_, Error>(rsp)
        });
        let stack = ErrorResponseLayer.layer(route.layer(fallback));
        let req = Request::get("/")
            .header(header::HOST, authority)
            .body(http_body_util::Empty::new())
            .unwrap();
        let (status, err, _) = crate::test_util::roundtrip(stack, req).await;
        (status, err)
    }

    #[tokio::test(start_paused = true)]
    async fn a_discovered_name_is_balanced_and_other_authorities_fall_back() {
        let route = RouteLayer::new(Some(discovery()), None, false);
        // The control plane never answers: the name's balancer has no endpoint, and the request
        // fails fast, with the name in the reason.
        let (status, err) = status(route.clone(), "web.default.svc.cluster.local:8080").await;
        assert_eq!(status, 504, "{err}");
        assert!(err.contains("web.default.svc.cluster.local:8080"), "{err}");
        assert_eq!(status_of(route.clone(), "example.com").await, 204);
        assert_eq!(status_of(route, "10.0.0.1:8080").await, 204);
    }

    #[tokio::test(start_paused = true)]
    async fn the_connections_own_service_takes_what_no_name_claims() {
        let d = discovery();
        let own = d.service("db.default.svc.cluster.local:5432").unwrap();
        let route = RouteLayer::new(Some(d), Some(own), false);
        let (status, err) = status(route, "10.0.0.1:5432").await;
        assert_eq!(status, 504, "balanced over the connection's service: {err}");
        assert!(err.contains("db.default.svc.cluster.local:5432"), "{err}");
        // Without discovery, everything falls back.
        let route = RouteLayer::new(None, None, false);
        assert_eq!(
            status_of(route, "web.default.svc.cluster.local:8080").await,
            204
        );
    }

    #[tokio::test]
    async fn a_connection_holds_its_own_service() {
        let d = discovery();
        let own = d.service("db.default.svc.cluster.local:5432").unwrap();
        let held = Arc::downgrade(&own);
        let fallback =
            tower::service_fn(|_: Req| async { Ok::<_, Error>(Response::new(ProxyBody::empty())) });
        let route = RouteLayer::new(Some(d.clone()), Some(own), false).layer(fallback);
        // Discovery's map and the connection's route: the idle sweep keeps a service that
        // more than the map holds, so its endpoints keep following the control plane.
        assert_eq!(held.strong_count(), 2);
        drop(route);
        assert_eq!(held.strong_count(), 1);
    }

    async fn status_of(route: RouteLayer, authority: &str) -> u16 {
        status(route, authority).await.0
    }
}
