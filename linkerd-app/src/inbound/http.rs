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
}
