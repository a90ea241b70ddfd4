//! The client proxy's side: HTTP/1 requests to a peer proxy travel as HTTP/2.

use super::{upgradable, upgrade_request, ResponseFuture};
use crate::{Error, ProxyBody};
use http::{Request, Response};
use std::task::{Context, Poll};

/// Sends HTTP/1 requests to an endpoint whose proxy takes HTTP/2 (discovery's `h2` hint) as
/// HTTP/2 with `l5d-orig-proto`, and gives their responses back in the request's version.
/// `CONNECT` and protocol upgrades stay HTTP/1; with `enabled` false, nothing changes.
#[derive(Clone, Copy, Debug)]
pub struct UpgradeLayer {
    enabled: bool,
}

/// The service made by [`UpgradeLayer`].
#[derive(Clone, Debug)]
pub struct Upgrade<S> {
    inner: S,
    enabled: bool,
}

impl UpgradeLayer {
    /// Upgrades when `enabled` (the endpoint's proxy takes HTTP/2).
    pub fn new(enabled: bool) -> Self {
        Self { enabled }
    }
}

impl<S> tower::Layer<S> for UpgradeLayer {
    type Service = Upgrade<S>;

    fn layer(&self, inner: S) -> Upgrade<S> {
        Upgrade {
            inner,
            enabled: self.enabled,
        }
    }
}

impl<B, S> tower::Service<Request<B>> for Upgrade<S>
where
    S: tower::Service<Request<B>, Response = Response<ProxyBody>, Error = Error>,
{
    type Response = Response<ProxyBody>;
    type Error = Error;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<B>) -> Self::Future {
        if !(self.enabled && upgradable(&req)) {
            return ResponseFuture::unchanged(self.inner.call(req));
        }
        match upgrade_request(&mut req) {
            Ok(orig) => ResponseFuture::upgraded(self.inner.call(req), orig),
            Err(error) => ResponseFuture::failed(error),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::orig_proto::L5D_ORIG_PROTO;
    use http::Version;
    use tower::{Layer, ServiceExt};

    /// Answers in the request's version, saying what arrived in `x-seen`.
    fn upstream() -> impl tower::Service<
        Request<()>,
        Response = Response<ProxyBody>,
        Error = Error,
        Future = impl std::future::Future<Output = Result<Response<ProxyBody>, Error>>,
    > + Clone {
        tower::service_fn(|req: Request<()>| async move {
            let seen = format!(
                "{:?} {} {}",
                req.version(),
                req.uri(),
                req.headers()
                    .get(L5D_ORIG_PROTO)
                    .map_or("-", |v| v.to_str().unwrap())
            );
            let rsp = Response::builder()
                .version(req.version())
                .header("x-seen", seen)
                .body(ProxyBody::empty())
                .unwrap();
            Ok(rsp)
        })
    }

    fn req(method: &str, headers: &[(&str, &str)]) -> Request<()> {
        let mut b = Request::builder()
            .method(method)
            .uri("/p")
            .version(Version::HTTP_11)
            .header("host", "web.ns.svc.cluster.local:8080");
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        b.body(()).unwrap()
    }

    #[tokio::test]
    async fn http1_travels_as_http2_and_comes_back_as_http1() {
        let svc = UpgradeLayer::new(true).layer(upstream());
        let rsp = svc.oneshot(req("GET", &[])).await.unwrap();
        assert_eq!(
            rsp.headers()["x-seen"],
            "HTTP/2.0 http://web.ns.svc.cluster.local:8080/p HTTP/1.1"
        );
        assert_eq!(rsp.version(), Version::HTTP_11);
    }

    #[tokio::test]
    async fn connect_upgrades_and_disabled_endpoints_stay_http1() {
        let on = UpgradeLayer::new(true).layer(upstream());
        let ws = req(
            "GET",
            &[("connection", "upgrade"), ("upgrade", "websocket")],
        );
        let rsp = on.clone().oneshot(ws).await.unwrap();
        assert_eq!(rsp.headers()["x-seen"], "HTTP/1.1 /p -");
        let rsp = on.oneshot(req("CONNECT", &[])).await.unwrap();
        assert_eq!(rsp.headers()["x-seen"], "HTTP/1.1 /p -");

        let off = UpgradeLayer::new(false).layer(upstream());
        let rsp = off.oneshot(req("GET", &[])).await.unwrap();
        assert_eq!(rsp.headers()["x-seen"], "HTTP/1.1 /p -");
    }

    #[tokio::test]
    async fn a_request_without_host_is_a_bad_request() {
        let svc = UpgradeLayer::new(true).layer(upstream());
        let mut r = req("GET", &[]);
        r.headers_mut().remove("host");
        let err = svc.oneshot(r).await.unwrap_err();
        assert_eq!(err.status(), 400);
    }
}
