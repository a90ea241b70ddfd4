//! The inbound request stack's own layer: the policy's decision, applied to each request.

use super::policy::Authz;
use futures_util::future::Either;
use http::{Request, Response};
use linkerd_http::{Error, ProxyBody};
use std::{
    future::{ready, Ready},
    sync::Arc,
    task::{Context, Poll},
};

/// Each request of a client the policy refuses gets 403 with the reason; an audited client's
/// requests are counted and go on. Counted per request, in `inbound_http_authz_*_total`.
#[derive(Clone, Debug)]
pub(crate) struct AuthorizeLayer {
    authz: Option<Arc<Authz>>,
}

/// The service made by [`AuthorizeLayer`].
#[derive(Clone, Debug)]
pub(crate) struct AuthorizeRequest<S> {
    inner: S,
    authz: Option<Arc<Authz>>,
}

impl AuthorizeLayer {
    /// Applies the connection's decision; `None`: the client is allowed.
    pub(crate) fn new(authz: Option<Arc<Authz>>) -> Self {
        Self { authz }
    }
}

impl<S> tower::Layer<S> for AuthorizeLayer {
    type Service = AuthorizeRequest<S>;

    fn layer(&self, inner: S) -> AuthorizeRequest<S> {
        AuthorizeRequest {
            inner,
            authz: self.authz.clone(),
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

    fn call(&mut self, req: Request<B>) -> Self::Future {
        if let Some(authz) = &self.authz {
            authz.counter.incr();
            if !authz.audit {
                let error = Error::Unauthorized(authz.denial.to_string());
                return Either::Right(ready(Err(error)));
            }
        }
        Either::Left(self.inner.call(req))
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
        Arc::new(Authz {
            denial: Denial {
                policy: "all-authenticated",
                reason: DenyReason::Unauthenticated,
            },
            audit,
            counter: Counter::default(),
        })
    }

    #[tokio::test]
    async fn a_refused_client_gets_403_for_each_request_and_each_is_counted() {
        let refused = authz(false);
        let svc = AuthorizeLayer::new(Some(refused.clone())).layer(app());
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
        let svc = AuthorizeLayer::new(Some(audited.clone())).layer(app());
        assert_eq!(svc.oneshot(Request::new(())).await.unwrap().status(), 200);
        assert_eq!(audited.counter.value(), 1);
        let svc = AuthorizeLayer::new(None).layer(app());
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
