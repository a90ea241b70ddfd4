//! The server proxy's side: a peer proxy's upgraded request goes to the app as HTTP/1.

use super::{downgrade_request, ResponseFuture};
use crate::{Error, ProxyBody};
use http::{Request, Response, Version};
use std::task::{Context, Poll};

/// Turns an HTTP/2 request carrying `l5d-orig-proto` back into the HTTP/1.x request the client
/// sent (so it reaches the app over HTTP/1), and the app's response back into HTTP/2. Other
/// requests pass unchanged; an unsupported `l5d-orig-proto` is a bad request.
#[derive(Clone, Copy, Debug, Default)]
pub struct DowngradeLayer;

/// The service made by [`DowngradeLayer`].
#[derive(Clone, Debug)]
pub struct Downgrade<S> {
    inner: S,
}

impl<S> tower::Layer<S> for DowngradeLayer {
    type Service = Downgrade<S>;

    fn layer(&self, inner: S) -> Downgrade<S> {
        Downgrade { inner }
    }
}

impl<B, S> tower::Service<Request<B>> for Downgrade<S>
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
        if req.version() != Version::HTTP_2 {
            return ResponseFuture::unchanged(self.inner.call(req));
        }
        match downgrade_request(&mut req) {
            Ok(true) => ResponseFuture::downgraded(self.inner.call(req)),
            Ok(false) => ResponseFuture::unchanged(self.inner.call(req)),
            Err(error) => ResponseFuture::failed(error),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::orig_proto::L5D_ORIG_PROTO;
    use tower::{Layer, ServiceExt};

    /// The app: answers in the request's version, saying what arrived.
    fn app() -> impl tower::Service<
        Request<()>,
        Response = Response<ProxyBody>,
        Error = Error,
        Future = impl std::future::Future<Output = Result<Response<ProxyBody>, Error>>,
    > + Clone {
        tower::service_fn(|req: Request<()>| async move {
            let host = req
                .headers()
                .get("host")
                .map_or("-", |h| h.to_str().unwrap());
            let seen = format!("{:?} {} {host}", req.version(), req.uri());
            let rsp = Response::builder()
                .version(req.version())
                .header("x-seen", seen)
                .body(ProxyBody::empty())
                .unwrap();
            Ok(rsp)
        })
    }

    fn h2(orig_proto: Option<&str>) -> Request<()> {
        let mut b = Request::builder()
            .uri("http://web.ns.svc.cluster.local:8080/p")
            .version(Version::HTTP_2);
        if let Some(v) = orig_proto {
            b = b.header(L5D_ORIG_PROTO, v);
        }
        b.body(()).unwrap()
    }

    #[tokio::test]
    async fn an_upgraded_request_reaches_the_app_as_http1() {
        let svc = DowngradeLayer.layer(app());
        let rsp = svc.oneshot(h2(Some("HTTP/1.1"))).await.unwrap();
        assert_eq!(
            rsp.headers()["x-seen"],
            "HTTP/1.1 /p web.ns.svc.cluster.local:8080"
        );
        assert_eq!(rsp.version(), Version::HTTP_2, "back to the peer as HTTP/2");
    }

    #[tokio::test]
    async fn plain_http2_passes_and_a_bad_header_is_refused() {
        let svc = DowngradeLayer.layer(app());
        let rsp = svc.clone().oneshot(h2(None)).await.unwrap();
        assert_eq!(
            rsp.headers()["x-seen"],
            "HTTP/2.0 http://web.ns.svc.cluster.local:8080/p -"
        );
        let err = svc.oneshot(h2(Some("HTTP/3"))).await.unwrap_err();
        assert_eq!(err.status(), 400);
    }
}
