//! The top of every request stack: a failure becomes the proxy's error response.

use crate::{Error, ProxyBody};
use http::{Request, Response};
use std::{
    convert::Infallible,
    future::Future,
    pin::Pin,
    task::{ready, Context, Poll},
};

/// Turns a request's failure into the response the client gets: the status that says what
/// went wrong, `l5d-proxy-error` and the message (see [`Error::to_response`]), logged once here.
#[derive(Clone, Copy, Debug, Default)]
pub struct ErrorResponseLayer;

/// The service made by [`ErrorResponseLayer`].
#[derive(Debug)]
pub struct ErrorResponse<S> {
    inner: S,
    /// Why the inner service could not become ready: the next request's answer.
    unready: Option<Error>,
}

pin_project_lite::pin_project! {
    /// The response future of [`ErrorResponse`].
    pub struct ResponseFuture<F> {
        #[pin]
        state: State<F>,
        // A gRPC request's failure is answered in gRPC.
        grpc: bool,
        // An HTTP/1 client is told with `Connection: close` that the connection ends.
        http1: bool,
    }
}

pin_project_lite::pin_project! {
    #[project = Proj]
    enum State<F> {
        // The inner service's response.
        Inner { #[pin] inner: F },
        // The inner service could not become ready: why, until polled.
        Unready { error: Option<Error> },
    }
}

impl<S: Clone> Clone for ErrorResponse<S> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            unready: None,
        }
    }
}

impl<S> tower::Layer<S> for ErrorResponseLayer {
    type Service = ErrorResponse<S>;

    fn layer(&self, inner: S) -> ErrorResponse<S> {
        ErrorResponse {
            inner,
            unready: None,
        }
    }
}

impl<B, S> tower::Service<Request<B>> for ErrorResponse<S>
where
    S: tower::Service<Request<B>, Response = Response<ProxyBody>, Error = Error>,
{
    type Response = Response<ProxyBody>;
    type Error = Infallible;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        if self.unready.is_none() {
            if let Err(error) = ready!(self.inner.poll_ready(cx)) {
                self.unready = Some(error);
            }
        }
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, mut req: Request<B>) -> Self::Future {
        let grpc = crate::is_grpc(&req);
        let http1 = req.version() < http::Version::HTTP_2;
        // Where the request goes is settled before anything routes on it.
        let checked = crate::headers::check_request(&mut req).err();
        match self.unready.take().or(checked) {
            Some(error) => ResponseFuture {
                state: State::Unready { error: Some(error) },
                grpc,
                http1,
            },
            None => ResponseFuture {
                state: State::Inner {
                    inner: self.inner.call(req),
                },
                grpc,
                http1,
            },
        }
    }
}

impl<F> Future for ResponseFuture<F>
where
    F: Future<Output = Result<Response<ProxyBody>, Error>>,
{
    type Output = Result<Response<ProxyBody>, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let grpc = *this.grpc;
        let res = match this.state.project() {
            Proj::Inner { inner } => ready!(inner.poll(cx)),
            Proj::Unready { error } => match error.take() {
                Some(e) => Err(e),
                None => return Poll::Pending,
            },
        };
        let error = match res {
            Ok(rsp) => return Poll::Ready(Ok(rsp)),
            Err(error) => error,
        };
        // A refusal by policy is expected traffic; a loop is a misconfiguration; the rest is a
        // request that could not be served.
        match &error {
            Error::Unauthorized(_)
            | Error::RouteNotFound
            | Error::NoBackends
            | Error::RateLimited
            | Error::Injected { .. }
            | Error::InjectedGrpc { .. }
            | Error::Redirect { .. } => tracing::debug!(%error, "request answered by policy"),
            Error::Loop { .. } => linkerd_stack::rate_limited!(WARN, %error, "request refused"),
            _ => linkerd_stack::rate_limited!(INFO, %error, "request failed"),
        }
        let mut rsp = match grpc {
            true => error.to_grpc_response(),
            false => error.to_response(),
        };
        if *this.http1 && error.closes_connection() {
            // hyper's HTTP/1 server closes the connection after this response.
            rsp.headers_mut().insert(
                http::header::CONNECTION,
                http::HeaderValue::from_static("close"),
            );
        }
        Poll::Ready(Ok(rsp))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::L5D_PROXY_ERROR;
    use tower::{Layer, ServiceExt};

    #[tokio::test]
    async fn a_failure_becomes_its_status_and_message() {
        let inner = tower::service_fn(|req: Request<bool>| async move {
            match *req.body() {
                true => Err(Error::BadRequest("no Host".into())),
                false => Ok(Response::new(ProxyBody::full("ok"))),
            }
        });
        let svc = ErrorResponseLayer.layer(inner);
        let rsp = svc.clone().oneshot(Request::new(true)).await.unwrap();
        assert_eq!(rsp.status(), 400);
        assert_eq!(rsp.headers()[L5D_PROXY_ERROR], "bad request: no Host");
        assert_eq!(rsp.headers()[crate::L5D_PROXY_CONNECTION], "close");
        assert_eq!(rsp.headers()["connection"], "close", "HTTP/1.1 closes");
        let grpc = Request::builder()
            .version(http::Version::HTTP_2)
            .header("content-type", "application/grpc+proto")
            .body(true)
            .unwrap();
        let rsp = svc.clone().oneshot(grpc).await.unwrap();
        assert_eq!(rsp.status(), 200, "gRPC failures are trailers-only answers");
        assert_eq!(rsp.headers()["grpc-status"], "13");
        assert_eq!(rsp.headers()["grpc-message"], "bad request: no Host");
        assert_eq!(rsp.headers()["content-type"], "application/grpc");
        assert_eq!(rsp.headers()[crate::L5D_PROXY_CONNECTION], "close");
        assert!(rsp.headers().get("connection").is_none(), "not on HTTP/2");
        let rsp = svc.oneshot(Request::new(false)).await.unwrap();
        assert_eq!(rsp.status(), 200);
        assert!(rsp.headers().get(L5D_PROXY_ERROR).is_none());
    }

    /// Never ready: it fails readiness.
    #[derive(Clone)]
    struct Unready;

    impl tower::Service<Request<()>> for Unready {
        type Response = Response<ProxyBody>;
        type Error = Error;
        type Future = std::future::Ready<Result<Response<ProxyBody>, Error>>;

        fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Error>> {
            Poll::Ready(Err(Error::Unauthorized("unready".into())))
        }

        fn call(&mut self, _: Request<()>) -> Self::Future {
            unreachable!("never called: never ready")
        }
    }

    #[tokio::test]
    async fn a_failed_readiness_answers_the_request() {
        let rsp = ErrorResponseLayer
            .layer(Unready)
            .oneshot(Request::new(()))
            .await
            .unwrap();
        assert_eq!(rsp.status(), 403);
        assert!(
            rsp.headers().get(crate::L5D_PROXY_CONNECTION).is_none(),
            "a refusal keeps the connection"
        );
        assert!(rsp.headers().get("connection").is_none());
    }
}
