//! The inbound request stack's own layer: the policy's decision, applied to each request.

use super::{
    policy::{Authz, AuthzEvent, AuthzLabels, AuthzMetrics, ClientAuth},
    server::ServerPolicy,
    watch::PortPolicy,
};
use futures_util::future::Either;
use http::{Request, Response};
use linkerd_http::{AuthorityRoutes, Error, MetricsFuture, PolicyLabels, ProxyBody};
use linkerd_metrics::Counter;
use parking_lot::Mutex;
use std::{
    future::{ready, Ready},
    sync::Arc,
    task::{Context, Poll},
};
use tokio::sync::watch;

/// Each request is authorized: under the default policy, by the connection's decision (a
/// refused client gets 403 for every request, an audited one is counted); under a server
/// policy, by its current version (updates apply to a live connection's next request): the
/// best route, its and the server's authorizations (403), no route (404), the local rate
/// limit (429) and the route's filters. Each is counted in `inbound_http_*`, and every
/// request, let in or not, in the request metrics (`request_total`, ...) by its authority and
/// the `srv_*`/`route_*`/`authz_*` labels of the decision.
#[derive(Clone)]
pub(crate) struct AuthorizeLayer {
    authz: Option<Arc<Authz>>,
    server: Option<Arc<ServerCheck>>,
    routes: Arc<AuthorityRoutes>,
}

/// What a request under a server policy is checked with.
pub(crate) struct ServerCheck {
    pub rx: watch::Receiver<PortPolicy>,
    pub client: std::net::IpAddr,
    pub auth: ClientAuth,
    /// The connection's labels (target, TLS); server, route and authorization are filled in.
    pub labels: AuthzLabels,
    pub metrics: AuthzMetrics,
    /// The last decision that let a request in, its counter and labels (a connection's
    /// requests mostly share one): looked up once, not per request.
    pub last: Mutex<Option<(AuthzLabels, Counter, PolicyLabels)>>,
}

/// The service made by [`AuthorizeLayer`].
#[derive(Clone)]
pub(crate) struct AuthorizeRequest<S> {
    inner: S,
    authz: Option<Arc<Authz>>,
    server: Option<Arc<ServerCheck>>,
    routes: Arc<AuthorityRoutes>,
}

impl AuthorizeLayer {
    /// `authz`: the default policy's decision (`None`: allowed, uncounted); `server`: the
    /// port's server policy, which wins; `routes`: the connection's request metrics.
    pub(crate) fn new(
        authz: Option<Arc<Authz>>,
        server: Option<ServerCheck>,
        routes: Arc<AuthorityRoutes>,
    ) -> Self {
        Self {
            authz,
            server: server.map(Arc::new),
            routes,
        }
    }
}

impl<S> tower::Layer<S> for AuthorizeLayer {
    type Service = AuthorizeRequest<S>;

    fn layer(&self, inner: S) -> AuthorizeRequest<S> {
        AuthorizeRequest {
            inner,
            authz: self.authz.clone(),
            server: self.server.clone(),
            routes: self.routes.clone(),
        }
    }
}

impl<B, S> tower::Service<Request<B>> for AuthorizeRequest<S>
where
    S: tower::Service<Request<B>, Response = Response<ProxyBody>, Error = Error>,
{
    type Response = Response<ProxyBody>;
    type Error = Error;
    type Future = Either<MetricsFuture<S::Future>, Ready<Result<Response<ProxyBody>, Error>>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<B>) -> Self::Future {
        let decision = self.decide(&mut req);
        match decision {
            Ok(labels) => {
                let rec = self.routes.route_with(&req, labels.as_ref()).request();
                Either::Left(MetricsFuture::new(rec, self.inner.call(req)))
            }
            Err((error, labels)) => {
                // Refused requests count too, as the answer the client gets.
                let rec = self.routes.route_with(&req, labels.as_ref()).request();
                rec.error(&error);
                Either::Right(ready(Err(error)))
            }
        }
    }
}

/// A request's decision: let in, with its labels; or refused, why, with the labels it got
/// as far as.
type RequestDecision = Result<Option<PolicyLabels>, (Error, Option<PolicyLabels>)>;

impl<S> AuthorizeRequest<S> {
    fn decide<B>(&self, req: &mut Request<B>) -> RequestDecision {
        if let Some(check) = &self.server {
            let current = check.rx.borrow().clone();
            match current {
                PortPolicy::Policy(policy) => return check.apply(&policy, req),
                PortPolicy::Invalid(why) => {
                    let labels = check.labels.policy_labels();
                    return Err((Error::InvalidPolicy(why.to_string()), Some(labels)));
                }
                // The server policy went away: the default policy's decision applies.
                PortPolicy::Default | PortPolicy::Pending => {}
            }
        }
        let Some(authz) = &self.authz else {
            return Ok(None);
        };
        authz.counter.incr();
        match &authz.denial {
            Some(denial) => Err((
                Error::Unauthorized(denial.to_string()),
                Some(authz.labels.clone()),
            )),
            None => Ok(Some(authz.labels.clone())),
        }
    }
}

impl ServerCheck {
    /// Routes and authorizes one request, and applies the route's filters to it.
    fn apply<B>(&self, policy: &ServerPolicy, req: &mut Request<B>) -> RequestDecision {
        let mut labels = self.labels.clone();
        labels.srv = policy.meta.clone();
        let Some((route, rule)) = policy.route(req) else {
            self.metrics
                .counter(true, AuthzEvent::NotFound, &labels)
                .incr();
            return Err((Error::RouteNotFound, Some(labels.policy_labels())));
        };
        labels.route = Some(route.meta.clone());
        let authz = route
            .params
            .authorize(self.client, &self.auth)
            .or_else(|| policy.authorize(self.client, &self.auth));
        let Some(authz) = authz else {
            self.metrics.counter(true, AuthzEvent::Deny, &labels).incr();
            let error =
                Error::Unauthorized(format!("unauthorized request on route {}", route.meta.name));
            return Err((error, Some(labels.policy_labels())));
        };
        labels.authz = Some(authz.meta.clone());
        if let Some(rl) = &policy.rate_limit {
            let id = match &self.auth {
                ClientAuth::Authenticated(id) => Some(id.as_str()),
                _ => None,
            };
            if !rl.allows(id) {
                labels.authz = None;
                self.metrics
                    .counter(true, AuthzEvent::RateLimited, &labels)
                    .incr();
                return Err((Error::RateLimited, Some(labels.policy_labels())));
            }
        }
        let policy_labels = self.allowed(labels);
        for filter in &rule.filters {
            if let Err(e) = crate::filters::apply_request(filter, req) {
                return Err((e, Some(policy_labels)));
            }
        }
        Ok(Some(policy_labels))
    }

    /// Counts a request `labels` let in, and its labels on the request metrics, from the
    /// connection's last decision when it is the same.
    fn allowed(&self, labels: AuthzLabels) -> PolicyLabels {
        let mut last = self.last.lock();
        if let Some((l, counter, policy)) = last.as_ref() {
            if l.same_decision(&labels) {
                counter.incr();
                return policy.clone();
            }
        }
        let counter = self.metrics.counter(true, AuthzEvent::Allow, &labels);
        counter.incr();
        let policy = labels.policy_labels();
        *last = Some((labels, counter, policy.clone()));
        policy
    }
}

/// `l5d-client-id`: the client's verified mesh identity, set on each request to the app; a
/// header the client sent is removed first, so the app can trust it (it is never forgeable).
#[derive(Clone, Debug)]
pub(crate) struct ClientIdLayer {
    id: Option<http::HeaderValue>,
}

/// The service made by [`ClientIdLayer`].
#[derive(Clone, Debug)]
pub(crate) struct ClientId<S> {
    inner: S,
    id: Option<http::HeaderValue>,
}

/// The header's name.
pub(crate) const L5D_CLIENT_ID: http::HeaderName = http::HeaderName::from_static("l5d-client-id");

impl ClientIdLayer {
    /// The connection's client identity, made a header value once per connection.
    pub(crate) fn new(auth: &super::policy::ClientAuth) -> Self {
        let id = match auth {
            super::policy::ClientAuth::Authenticated(id) => {
                // An identity is a DNS-like name: always a valid header value.
                http::HeaderValue::from_str(id.as_str()).ok()
            }
            _ => None,
        };
        Self { id }
    }
}

impl<S> tower::Layer<S> for ClientIdLayer {
    type Service = ClientId<S>;

    fn layer(&self, inner: S) -> ClientId<S> {
        ClientId {
            inner,
            id: self.id.clone(),
        }
    }
}

impl<B, S: tower::Service<Request<B>>> tower::Service<Request<B>> for ClientId<S> {
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<B>) -> S::Future {
        let headers = req.headers_mut();
        match &self.id {
            // `insert` replaces every value the client sent.
            Some(id) => {
                headers.insert(L5D_CLIENT_ID, id.clone());
            }
            None => {
                headers.remove(L5D_CLIENT_ID);
            }
        }
        self.inner.call(req)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inbound::policy::{Denial, DenyReason};
    use linkerd_metrics::Counter;
    use tower::{Layer, ServiceExt};

    fn app() -> impl tower::Service<
        Request<()>,
        Response = Response<ProxyBody>,
        Error = Error,
        Future = impl std::future::Future<Output = Result<Response<ProxyBody>, Error>>,
    > + Clone {
        tower::service_fn(|_: Request<()>| async { Ok(Response::new(ProxyBody::empty())) })
    }

    fn authz(audit: bool) -> Arc<Authz> {
        let denial = Denial {
            policy: "all-authenticated",
            reason: DenyReason::Unauthenticated,
        };
        let labels = PolicyLabels::new(vec![
            ("srv_kind", "default".into()),
            ("srv_name", "all-authenticated".into()),
        ]);
        Arc::new(Authz {
            denial: (!audit).then_some(denial),
            counter: Counter::default(),
            labels,
        })
    }

    fn routes(reg: &mut linkerd_metrics::Registry) -> Arc<AuthorityRoutes> {
        AuthorityRoutes::new(
            &linkerd_http::HttpMetrics::register(reg),
            linkerd_proxy_transport::Direction::Inbound,
            "127.0.0.1:8080".parse().unwrap(),
            linkerd_proxy_transport::TlsLabel::NoIdentity(
                linkerd_proxy_transport::NoTlsReason::NotProvidedByRemote,
            ),
        )
    }

    #[tokio::test]
    async fn a_refused_client_gets_403_for_each_request_and_each_is_counted() {
        let mut reg = linkerd_metrics::Registry::default();
        let refused = authz(false);
        let svc = AuthorizeLayer::new(Some(refused.clone()), None, routes(&mut reg)).layer(app());
        for _ in 0..2 {
            let err = svc.clone().oneshot(Request::new(())).await.unwrap_err();
            assert_eq!(err.status(), 403);
            assert!(err.to_string().contains("all-authenticated"), "{err}");
        }
        assert_eq!(refused.counter.value(), 2);
        // In the request metrics too, under the decision's labels.
        let text = reg.encode();
        assert!(
            text.contains("srv_kind=\"default\",srv_name=\"all-authenticated\"} 2\n"),
            "{text}"
        );
        assert!(text.contains("status_code=\"403\""), "{text}");
    }

    #[tokio::test]
    async fn audited_and_allowed_clients_are_served() {
        let mut reg = linkerd_metrics::Registry::default();
        let audited = authz(true);
        let svc = AuthorizeLayer::new(Some(audited.clone()), None, routes(&mut reg)).layer(app());
        assert_eq!(svc.oneshot(Request::new(())).await.unwrap().status(), 200);
        assert_eq!(audited.counter.value(), 1);
        let svc = AuthorizeLayer::new(None, None, routes(&mut reg)).layer(app());
        assert_eq!(svc.oneshot(Request::new(())).await.unwrap().status(), 200);
    }

    #[tokio::test]
    async fn the_client_id_header_is_the_verified_identity_and_never_the_clients() {
        use crate::inbound::policy::ClientAuth;
        let echo = tower::service_fn(|req: Request<()>| async move {
            let ids: Vec<String> = req
                .headers()
                .get_all(L5D_CLIENT_ID)
                .iter()
                .map(|v| v.to_str().unwrap().to_string())
                .collect();
            Ok::<_, Error>(ids)
        });
        let forged = || {
            let mut r = Request::new(());
            r.headers_mut()
                .append(L5D_CLIENT_ID, "admin.ns.serviceaccount".parse().unwrap());
            r.headers_mut()
                .append(L5D_CLIENT_ID, "root.ns.serviceaccount".parse().unwrap());
            r
        };
        let web =
            linkerd_identity::Id::parse("web.ns.serviceaccount.identity.linkerd.cluster.local")
                .unwrap();
        let meshed = ClientIdLayer::new(&ClientAuth::Authenticated(web.clone())).layer(echo);
        assert_eq!(meshed.oneshot(forged()).await.unwrap(), [web.as_str()]);
        for auth in [ClientAuth::Plaintext, ClientAuth::Tls] {
            let svc = ClientIdLayer::new(&auth).layer(echo);
            assert!(svc.oneshot(forged()).await.unwrap().is_empty(), "{auth:?}");
        }
    }
}
