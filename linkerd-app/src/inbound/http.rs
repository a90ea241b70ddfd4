//! The inbound request stack's own layer: the policy's decision, applied to each request.

use super::{
    policy::{Authz, AuthzEvent, AuthzLabels, AuthzMetrics, ClientAuth},
    server::{Filter, PathRewrite, ServerPolicy},
    watch::PortPolicy,
};
use futures_util::future::Either;
use http::{Request, Response};
use linkerd_http::{Error, ProxyBody};
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
/// limit (429) and the route's filters. Each is counted in `inbound_http_*`.
#[derive(Clone)]
pub(crate) struct AuthorizeLayer {
    authz: Option<Arc<Authz>>,
    server: Option<Arc<ServerCheck>>,
}

/// What a request under a server policy is checked with.
pub(crate) struct ServerCheck {
    pub rx: watch::Receiver<PortPolicy>,
    pub client: std::net::IpAddr,
    pub auth: ClientAuth,
    /// The connection's labels (target, TLS); server, route and authorization are filled in.
    pub labels: AuthzLabels,
    pub metrics: AuthzMetrics,
}

/// The service made by [`AuthorizeLayer`].
#[derive(Clone)]
pub(crate) struct AuthorizeRequest<S> {
    inner: S,
    authz: Option<Arc<Authz>>,
    server: Option<Arc<ServerCheck>>,
}

impl AuthorizeLayer {
    /// `authz`: the default policy's decision (`None`: allowed, uncounted); `server`: the
    /// port's server policy, which wins.
    pub(crate) fn new(authz: Option<Arc<Authz>>, server: Option<ServerCheck>) -> Self {
        Self {
            authz,
            server: server.map(Arc::new),
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
        }
    }
}

impl<B, S> tower::Service<Request<B>> for AuthorizeRequest<S>
where
    S: tower::Service<Request<B>, Response = Response<ProxyBody>, Error = Error>,
{
    type Response = Response<ProxyBody>;
    type Error = Error;
    type Future = Either<S::Future, Ready<Result<Response<ProxyBody>, Error>>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<B>) -> Self::Future {
        if let Some(check) = &self.server {
            let current = check.rx.borrow().clone();
            match current {
                PortPolicy::Server(policy) => {
                    if let Err(error) = check.apply(&policy, &mut req) {
                        return Either::Right(ready(Err(error)));
                    }
                    return Either::Left(self.inner.call(req));
                }
                PortPolicy::Invalid(why) => {
                    return Either::Right(ready(Err(Error::InvalidPolicy(why.to_string()))));
                }
                // The server policy went away: the default policy's decision applies.
                PortPolicy::Default | PortPolicy::Pending => {}
            }
        }
        if let Some(authz) = &self.authz {
            authz.counter.incr();
            if let Some(denial) = &authz.denial {
                let error = Error::Unauthorized(denial.to_string());
                return Either::Right(ready(Err(error)));
            }
        }
        Either::Left(self.inner.call(req))
    }
}

impl ServerCheck {
    /// Routes and authorizes one request, and applies the route's filters to it.
    fn apply<B>(&self, policy: &ServerPolicy, req: &mut Request<B>) -> Result<(), Error> {
        let mut labels = self.labels.clone();
        labels.srv = policy.meta.clone();
        let Some((route, rule)) = policy.route(req) else {
            self.metrics
                .counter(true, AuthzEvent::NotFound, &labels)
                .incr();
            return Err(Error::RouteNotFound);
        };
        labels.route = Some(route.meta.clone());
        let authz = route
            .authorize(self.client, &self.auth)
            .or_else(|| policy.authorize(self.client, &self.auth));
        let Some(authz) = authz else {
            self.metrics.counter(true, AuthzEvent::Deny, &labels).incr();
            return Err(Error::Unauthorized(format!(
                "unauthorized request on route {}",
                route.meta.name
            )));
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
                return Err(Error::RateLimited);
            }
        }
        self.metrics
            .counter(true, AuthzEvent::Allow, &labels)
            .incr();
        for filter in &rule.filters {
            apply_filter(filter, req)?;
        }
        Ok(())
    }
}

/// Whether this request falls in `num/den` of requests.
fn in_ratio((num, den): (u32, u32)) -> bool {
    num >= den || (num > 0 && rand::random_range(0..den) < num)
}

fn apply_filter<B>(filter: &Filter, req: &mut Request<B>) -> Result<(), Error> {
    match filter {
        Filter::FailHttp {
            status,
            message,
            ratio,
        } => {
            if in_ratio(*ratio) {
                return Err(Error::Injected {
                    status: *status,
                    message: message.clone(),
                });
            }
        }
        Filter::FailGrpc {
            code,
            message,
            ratio,
        } => {
            if in_ratio(*ratio) {
                return Err(Error::InjectedGrpc {
                    code: u16::try_from(*code).unwrap_or(2),
                    message: message.clone(),
                });
            }
        }
        Filter::Headers { add, set, remove } => {
            let h = req.headers_mut();
            for (k, v) in add {
                h.append(k.clone(), v.clone());
            }
            for (k, v) in set {
                h.insert(k.clone(), v.clone());
            }
            for k in remove {
                h.remove(k);
            }
        }
        Filter::Redirect {
            scheme,
            host,
            path,
            port,
            status,
        } => {
            let uri = req.uri();
            let scheme = scheme
                .clone()
                .or_else(|| uri.scheme_str().map(str::to_string))
                .unwrap_or_else(|| "http".into());
            let orig_host = linkerd_http::authority_of(req)
                .and_then(|a| a.parse::<http::uri::Authority>().ok())
                .map(|a| a.host().to_string())
                .unwrap_or_default();
            let host = host.clone().unwrap_or(orig_host);
            let path = match path {
                None => req.uri().path().to_string(),
                Some(PathRewrite::Full(p)) => p.clone(),
                Some(PathRewrite::Prefix(p)) => p.clone(),
            };
            let location = match port {
                Some(port) => format!("{scheme}://{host}:{port}{path}"),
                None => format!("{scheme}://{host}{path}"),
            };
            let location = http::HeaderValue::from_str(&location)
                .map_err(|_| Error::InvalidPolicy(format!("a redirect to {location:?}")))?;
            return Err(Error::Redirect {
                status: *status,
                location,
            });
        }
    }
    Ok(())
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
        Arc::new(Authz {
            denial: (!audit).then_some(denial),
            counter: Counter::default(),
        })
    }

    #[tokio::test]
    async fn a_refused_client_gets_403_for_each_request_and_each_is_counted() {
        let refused = authz(false);
        let svc = AuthorizeLayer::new(Some(refused.clone()), None).layer(app());
        for _ in 0..2 {
            let err = svc.clone().oneshot(Request::new(())).await.unwrap_err();
            assert_eq!(err.status(), 403);
            assert!(err.to_string().contains("all-authenticated"), "{err}");
        }
        assert_eq!(refused.counter.value(), 2);
    }

    #[tokio::test]
    async fn audited_and_allowed_clients_are_served() {
        let audited = authz(true);
        let svc = AuthorizeLayer::new(Some(audited.clone()), None).layer(app());
        assert_eq!(svc.oneshot(Request::new(())).await.unwrap().status(), 200);
        assert_eq!(audited.counter.value(), 1);
        let svc = AuthorizeLayer::new(None, None).layer(app());
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
