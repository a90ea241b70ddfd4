//! The `l5d-*` headers between the app and one endpoint: what the app requires of the
//! endpoint (`l5d-require-id`), the logical name a request was routed by
//! (`l5d-dst-canonical`), and what a meshed endpoint's proxy says about the connection
//! (`l5d-proxy-connection`, `l5d-proxy-error`).

use crate::{
    headers::{L5D_DST_CANONICAL, L5D_PROXY_CONNECTION, L5D_PROXY_ERROR, L5D_REQUIRE_ID},
    Error, ProxyBody,
};
use http::{header, HeaderValue, Request, Response, Version};
use linkerd_tls::Id;
use std::{
    future::Future,
    net::SocketAddr,
    pin::Pin,
    task::{ready, Context, Poll},
};

/// Applies the `l5d-*` headers of requests to one endpoint (`addr`, meshed with `server_id`):
///
/// - `l5d-require-id` is removed; when the endpoint's identity is not that one (or it has
///   none), the request fails (502, gRPC UNAVAILABLE) without being sent.
/// - `l5d-dst-canonical` is set to the logical name the request was routed by, if any.
/// - On the response, `l5d-proxy-connection` is removed; from a meshed endpoint, `close`
///   closes the app's HTTP/1 connection in turn (`Connection: close`), and its proxy's
///   `l5d-proxy-error` is logged and removed.
#[derive(Clone, Debug)]
pub struct MeshHeadersLayer {
    params: Params,
}

#[derive(Clone, Debug)]
struct Params {
    addr: SocketAddr,
    server_id: Option<Id>,
    canonical: Option<HeaderValue>,
}

/// The service made by [`MeshHeadersLayer`].
#[derive(Clone, Debug)]
pub struct MeshHeaders<S> {
    params: Params,
    inner: S,
}

pin_project_lite::pin_project! {
    /// The response future of [`MeshHeaders`].
    pub struct ResponseFuture<F> {
        #[pin]
        state: State<F>,
        meshed: bool,
        http1: bool,
    }
}

pin_project_lite::pin_project! {
    #[project = Proj]
    enum State<F> {
        Inner { #[pin] inner: F },
        Refused { error: Option<Error> },
    }
}

impl MeshHeadersLayer {
    /// Requests to `addr`, whose proxy proves `server_id` (`None`: not meshed), routed by the
    /// logical name `canonical` (`name:port`), if any.
    pub fn new(addr: SocketAddr, server_id: Option<Id>, canonical: Option<&str>) -> Self {
        Self {
            params: Params {
                addr,
                server_id,
                // A name that is not a valid header value is not sent (names are DNS names).
                canonical: canonical.and_then(|c| HeaderValue::from_str(c).ok()),
            },
        }
    }
}

impl<S> tower::Layer<S> for MeshHeadersLayer {
    type Service = MeshHeaders<S>;

    fn layer(&self, inner: S) -> MeshHeaders<S> {
        MeshHeaders {
            params: self.params.clone(),
            inner,
        }
    }
}

impl<S> MeshHeaders<S> {
    /// Why `required` (the `l5d-require-id` value) is not met by this endpoint, if it is not.
    fn mismatch(&self, required: &HeaderValue) -> Option<Error> {
        let actual = match &self.params.server_id {
            // Identities compare case-insensitively (ours are held lower-case).
            Some(id)
                if id
                    .as_str()
                    .as_bytes()
                    .eq_ignore_ascii_case(required.as_bytes()) =>
            {
                return None
            }
            Some(id) => id.to_string(),
            None => "not meshed".to_string(),
        };
        Some(Error::IdentityMismatch {
            addr: self.params.addr,
            required: String::from_utf8_lossy(required.as_bytes()).into_owned(),
            actual,
        })
    }
}

impl<B, S> tower::Service<Request<B>> for MeshHeaders<S>
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
        let meshed = self.params.server_id.is_some();
        let http1 = req.version() < Version::HTTP_2;
        if let Some(required) = req.headers_mut().remove(L5D_REQUIRE_ID) {
            if let Some(error) = self.mismatch(&required) {
                return ResponseFuture {
                    state: State::Refused { error: Some(error) },
                    meshed,
                    http1,
                };
            }
        }
        if let Some(canonical) = &self.params.canonical {
            req.headers_mut()
                .insert(L5D_DST_CANONICAL, canonical.clone());
        }
        ResponseFuture {
            state: State::Inner {
                inner: self.inner.call(req),
            },
            meshed,
            http1,
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
        let mut rsp = match this.state.project() {
            Proj::Inner { inner } => ready!(inner.poll(cx))?,
            Proj::Refused { error } => {
                return match error.take() {
                    Some(e) => Poll::Ready(Err(e)),
                    None => Poll::Pending,
                }
            }
        };
        let close = rsp.headers_mut().remove(L5D_PROXY_CONNECTION);
        if *this.meshed {
            if let Some(error) = rsp.headers_mut().remove(L5D_PROXY_ERROR) {
                tracing::debug!(?error, "the endpoint's proxy answered with an error");
            }
            let close = close.is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"close"));
            if close && *this.http1 {
                rsp.headers_mut()
                    .insert(header::CONNECTION, HeaderValue::from_static("close"));
            }
        }
        Poll::Ready(Ok(rsp))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tower::{Layer, ServiceExt};

    /// Echoes the request's `l5d-dst-canonical` and answers with the error headers of a
    /// peer proxy that closes its connection.
    fn peer() -> impl tower::Service<
        Request<()>,
        Response = Response<ProxyBody>,
        Error = Error,
        Future = impl Send,
    > + Clone {
        tower::service_fn(|req: Request<()>| async move {
            assert!(
                req.headers().get(L5D_REQUIRE_ID).is_none(),
                "never forwarded"
            );
            let mut rsp = Response::new(ProxyBody::empty());
            *rsp.status_mut() = http::StatusCode::BAD_GATEWAY;
            if let Some(c) = req.headers().get(L5D_DST_CANONICAL) {
                rsp.headers_mut().insert("x-canonical", c.clone());
            }
            rsp.headers_mut()
                .insert(L5D_PROXY_ERROR, HeaderValue::from_static("boom"));
            rsp.headers_mut()
                .insert(L5D_PROXY_CONNECTION, HeaderValue::from_static("close"));
            Ok(rsp)
        })
    }

    fn req(version: Version, require: Option<&'static str>) -> Request<()> {
        let mut b = Request::builder().version(version);
        if let Some(id) = require {
            b = b.header(L5D_REQUIRE_ID, id);
        }
        b.body(()).unwrap()
    }

    fn id(s: &str) -> Id {
        s.parse().unwrap()
    }

    const WEB: &str = "web.ns.serviceaccount.identity.linkerd.cluster.local";

    #[tokio::test]
    async fn require_id_must_match_the_endpoint() {
        let addr = "10.0.0.1:80".parse().unwrap();
        let meshed = MeshHeadersLayer::new(addr, Some(id(WEB)), None).layer(peer());
        let rsp = meshed
            .clone()
            .oneshot(req(Version::HTTP_11, Some(WEB)))
            .await
            .unwrap();
        assert_eq!(rsp.status(), 502, "the peer's own answer");
        let err = meshed
            .oneshot(req(
                Version::HTTP_11,
                Some("other.ns.serviceaccount.identity"),
            ))
            .await
            .unwrap_err();
        assert!(matches!(err, Error::IdentityMismatch { .. }), "{err}");
        assert_eq!(err.status(), 502);
        assert_eq!(err.grpc_code(), 14);
        assert!(err.to_string().contains(WEB), "{err}");

        let plain = MeshHeadersLayer::new(addr, None, None).layer(peer());
        let err = plain
            .oneshot(req(Version::HTTP_11, Some(WEB)))
            .await
            .unwrap_err();
        assert!(err.to_string().contains("not meshed"), "{err}");
    }

    #[tokio::test]
    async fn a_meshed_peer_closing_closes_the_apps_http1_connection() {
        let addr = "10.0.0.1:80".parse().unwrap();
        let meshed =
            MeshHeadersLayer::new(addr, Some(id(WEB)), Some("web.ns.svc:80")).layer(peer());
        let rsp = meshed
            .clone()
            .oneshot(req(Version::HTTP_11, None))
            .await
            .unwrap();
        assert_eq!(rsp.headers()["x-canonical"], "web.ns.svc:80");
        assert_eq!(rsp.headers()[header::CONNECTION], "close");
        assert!(rsp.headers().get(L5D_PROXY_CONNECTION).is_none());
        assert!(rsp.headers().get(L5D_PROXY_ERROR).is_none());
        let rsp = meshed.oneshot(req(Version::HTTP_2, None)).await.unwrap();
        assert!(rsp.headers().get(header::CONNECTION).is_none());
        assert!(rsp.headers().get(L5D_PROXY_CONNECTION).is_none());

        // An unmeshed app's headers are not a proxy's: only `l5d-proxy-connection` goes.
        let plain = MeshHeadersLayer::new(addr, None, None).layer(peer());
        let rsp = plain.oneshot(req(Version::HTTP_11, None)).await.unwrap();
        assert!(rsp.headers().get(header::CONNECTION).is_none());
        assert!(rsp.headers().get(L5D_PROXY_CONNECTION).is_none());
        assert!(rsp.headers().get("x-canonical").is_none());
        assert_eq!(rsp.headers()[L5D_PROXY_ERROR], "boom");
    }
}
