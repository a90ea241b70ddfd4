//! `CONNECT` to a named target: the proxy dials it and tunnels the client's bytes.

use crate::{upgrade::spawn_tunnel, Error, ProxyBody};
use futures_util::future::Either;
use http::{Method, Request, Response};
use std::{
    future::Future,
    pin::Pin,
    task::{Context, Poll},
};
use tokio::io::{AsyncRead, AsyncWrite};
use tower::ServiceExt;

/// Answers a `CONNECT` request itself: dials the target with `C` (plain, or mTLS to a meshed
/// endpoint's proxy), answers 200 once the connection is up, and, once the client has
/// switched protocols, copies bytes between the two. Other requests go to the inner service.
#[derive(Clone, Debug)]
pub struct TunnelLayer<C> {
    connect: C,
}

/// The service made by [`TunnelLayer`].
#[derive(Clone, Debug)]
pub struct Tunnel<S, C> {
    inner: S,
    connect: C,
}

type Tunneling = Pin<Box<dyn Future<Output = Result<Response<ProxyBody>, Error>> + Send>>;

impl<C> TunnelLayer<C> {
    /// Tunnels `CONNECT` requests to what `connect` dials.
    pub fn new(connect: C) -> Self {
        Self { connect }
    }
}

impl<S, C: Clone> tower::Layer<S> for TunnelLayer<C> {
    type Service = Tunnel<S, C>;

    fn layer(&self, inner: S) -> Tunnel<S, C> {
        Tunnel {
            inner,
            connect: self.connect.clone(),
        }
    }
}

impl<B, S, C> tower::Service<Request<B>> for Tunnel<S, C>
where
    S: tower::Service<Request<B>, Response = Response<ProxyBody>, Error = Error>,
    C: tower::Service<()> + Clone + Send + 'static,
    C::Response: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    C::Error: Into<Error>,
    C::Future: Send,
{
    type Response = Response<ProxyBody>;
    type Error = Error;
    type Future = Either<S::Future, Tunneling>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<B>) -> Self::Future {
        if req.method() != Method::CONNECT {
            return Either::Left(self.inner.call(req));
        }
        let client = hyper::upgrade::on(&mut req);
        let connect = self.connect.clone();
        // Boxed: tunnels are rare, and a dial's state is large.
        Either::Right(Box::pin(async move {
            let upstream = connect.oneshot(()).await.map_err(Into::into)?;
            spawn_tunnel(client, upstream);
            Ok(Response::new(ProxyBody::empty()))
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tower::Layer;

    fn inner() -> impl tower::Service<
        Request<()>,
        Response = Response<ProxyBody>,
        Error = Error,
        Future = impl Future<Output = Result<Response<ProxyBody>, Error>>,
    > + Clone {
        tower::service_fn(|_: Request<()>| async {
            let mut rsp = Response::new(ProxyBody::empty());
            *rsp.status_mut() = http::StatusCode::NO_CONTENT;
            Ok(rsp)
        })
    }

    fn connect(method: &str) -> Request<()> {
        Request::builder()
            .method(method)
            .uri("web.ns:8080")
            .body(())
            .unwrap()
    }

    #[tokio::test]
    async fn connect_is_answered_once_the_target_is_dialed() {
        let dials = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let dial = {
            let dials = dials.clone();
            tower::service_fn(move |()| {
                dials.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                async { Ok::<_, Error>(tokio::io::duplex(64).0) }
            })
        };
        let svc = TunnelLayer::new(dial).layer(inner());
        let rsp = svc.clone().oneshot(connect("CONNECT")).await.unwrap();
        assert_eq!(rsp.status(), 200);
        assert_eq!(dials.load(std::sync::atomic::Ordering::SeqCst), 1);
        let rsp = svc.oneshot(connect("GET")).await.unwrap();
        assert_eq!(rsp.status(), 204, "other methods go on");
        assert_eq!(dials.load(std::sync::atomic::Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_failed_dial_is_the_error() {
        let dial = tower::service_fn(|()| async {
            let addr = "10.0.0.1:8080".parse().unwrap();
            Err::<tokio::io::DuplexStream, _>(Error::Loop { addr })
        });
        let svc = TunnelLayer::new(dial).layer(inner());
        let err = svc.oneshot(connect("CONNECT")).await.unwrap_err();
        assert_eq!(err.status(), 502);
    }
}
