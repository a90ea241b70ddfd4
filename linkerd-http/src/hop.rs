//! Header hygiene for one hop, and carrying a protocol upgrade across it.

use crate::{
    headers::{strip_hop_by_hop, wants_upgrade},
    upgrade::spawn_upgrade,
    Error, ProxyBody,
};
use http::{Method, Request, Response, StatusCode, Version};
use hyper::upgrade::OnUpgrade;
use std::{
    future::Future,
    pin::Pin,
    task::{ready, Context, Poll},
};

/// Strips hop-by-hop headers from each request and its response (RFC 9110 section 7.6.1) and
/// carries an HTTP/1 protocol upgrade (WebSocket, `CONNECT`) when the upstream accepts it:
/// once both sides have switched, bytes are copied between them.
#[derive(Clone, Copy, Debug, Default)]
pub struct HopByHopLayer;

/// The service made by [`HopByHopLayer`].
#[derive(Clone, Debug)]
pub struct HopByHop<S> {
    inner: S,
}

pin_project_lite::pin_project! {
    /// The response future of [`HopByHop`].
    pub struct ResponseFuture<F> {
        #[pin]
        inner: F,
        // The client's side of an upgrade it asked for.
        client: Option<OnUpgrade>,
        connect: bool,
    }
}

impl<S> tower::Layer<S> for HopByHopLayer {
    type Service = HopByHop<S>;

    fn layer(&self, inner: S) -> HopByHop<S> {
        HopByHop { inner }
    }
}

impl<B, S> tower::Service<Request<B>> for HopByHop<S>
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
        let http1 = req.version() != Version::HTTP_2;
        let connect = req.method() == Method::CONNECT;
        let upgrade = http1 && (connect || wants_upgrade(req.headers()));
        strip_hop_by_hop(req.headers_mut(), upgrade);
        let client = upgrade.then(|| hyper::upgrade::on(&mut req));
        ResponseFuture {
            inner: self.inner.call(req),
            client,
            connect,
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
        let mut rsp = ready!(this.inner.poll(cx))?;
        let switched = rsp.status() == StatusCode::SWITCHING_PROTOCOLS
            || *this.connect && rsp.status().is_success();
        if let Some(client) = this.client.take().filter(|_| switched) {
            spawn_upgrade(client, hyper::upgrade::on(&mut rsp));
        }
        strip_hop_by_hop(rsp.headers_mut(), switched);
        Poll::Ready(Ok(rsp))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tower::{Layer, ServiceExt};

    /// Answers with `status`, the names of the request's headers in `x-seen`, and hop-by-hop
    /// headers of its own.
    fn upstream(
        status: StatusCode,
    ) -> impl tower::Service<
        Request<()>,
        Response = Response<ProxyBody>,
        Error = Error,
        Future = impl Future<Output = Result<Response<ProxyBody>, Error>>,
    > + Clone {
        tower::service_fn(move |req: Request<()>| async move {
            let mut seen: Vec<_> = req.headers().keys().map(|k| k.as_str()).collect();
            seen.sort_unstable();
            let mut rsp = Response::new(ProxyBody::empty());
            *rsp.status_mut() = status;
            let h = rsp.headers_mut();
            h.insert("x-seen", seen.join(",").parse().unwrap());
            for (k, v) in req.headers() {
                if k == "connection" || k == "upgrade" {
                    h.append(k, v.clone());
                }
            }
            h.insert("keep-alive", "timeout=5".parse().unwrap());
            h.append("connection", "x-rsp-hop".parse().unwrap());
            h.insert("x-rsp-hop", "1".parse().unwrap());
            h.insert("x-rsp", "kept".parse().unwrap());
            Ok(rsp)
        })
    }

    fn req(headers: &[(&str, &str)]) -> Request<()> {
        let mut b = Request::builder().uri("/");
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        b.body(()).unwrap()
    }

    #[tokio::test]
    async fn strips_both_ways() {
        let svc = HopByHopLayer.layer(upstream(StatusCode::OK));
        let rsp = svc
            .oneshot(req(&[
                ("connection", "x-hop"),
                ("x-hop", "1"),
                ("proxy-authorization", "Basic abc"),
                ("x-app", "kept"),
            ]))
            .await
            .unwrap();
        assert_eq!(
            rsp.headers()["x-seen"],
            "x-app",
            "the request's hop headers are gone"
        );
        let mut names: Vec<_> = rsp.headers().keys().map(|k| k.as_str()).collect();
        names.sort_unstable();
        assert_eq!(names, ["x-rsp", "x-seen"], "and the response's");
    }

    #[tokio::test]
    async fn an_upgrade_keeps_its_headers_only_when_the_upstream_switches() {
        let ws = [("connection", "upgrade"), ("upgrade", "websocket")];
        let switched = HopByHopLayer.layer(upstream(StatusCode::SWITCHING_PROTOCOLS));
        let rsp = switched.oneshot(req(&ws)).await.unwrap();
        assert_eq!(
            rsp.headers()["x-seen"],
            "connection,upgrade",
            "carried upstream"
        );
        assert_eq!(rsp.headers()["upgrade"], "websocket");
        assert_eq!(rsp.headers()["connection"], "upgrade");

        let refused = HopByHopLayer.layer(upstream(StatusCode::OK));
        let rsp = refused.oneshot(req(&ws)).await.unwrap();
        assert!(rsp.headers().get("upgrade").is_none());
        assert!(rsp.headers().get("connection").is_none());
    }
}
