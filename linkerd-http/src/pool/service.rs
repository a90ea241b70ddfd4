//! The bottom of every request stack: a request sent to one endpoint over the pool.

use super::{Client, Dial, Pool, Version};
use crate::{
    body::{ForwardBody, IntoForwardBody},
    Error, ProxyBody,
};
use hyper::{Request, Response};
use linkerd_connect::Meshed;
use std::{
    future::Future,
    net::SocketAddr,
    pin::Pin,
    sync::{Arc, OnceLock},
    task::{Context, Poll},
};

/// Sends each request to one endpoint over the shared pool, in the request's own version
/// (HTTP/2 requests on the endpoint's HTTP/2 connections, HTTP/1 on its HTTP/1 ones). The
/// pool of each version is looked up on first use, then kept.
pub struct EndpointClient<D> {
    inner: Arc<Inner<D>>,
}

struct Inner<D> {
    client: Client<ForwardBody, D>,
    addr: SocketAddr,
    meshed: Option<Meshed>,
    pools: [OnceLock<Pool<ForwardBody, D>>; 2],
}

/// The future of a request sent over the pool (boxed: hyper's send futures can't be named).
pub type ResponseFuture =
    Pin<Box<dyn Future<Output = Result<Response<ProxyBody>, Error>> + Send + 'static>>;

impl<D> Clone for EndpointClient<D> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
        }
    }
}

impl<D: Dial> EndpointClient<D> {
    /// Sends to `addr` (over mTLS when `meshed`) through `client`'s pools.
    pub fn new(client: &Client<ForwardBody, D>, addr: SocketAddr, meshed: Option<Meshed>) -> Self {
        Self {
            inner: Arc::new(Inner {
                client: client.clone(),
                addr,
                meshed,
                pools: [OnceLock::new(), OnceLock::new()],
            }),
        }
    }
}

impl<D: Dial> Inner<D> {
    fn pool(&self, version: Version) -> &Pool<ForwardBody, D> {
        let i = match version {
            Version::Http1 => 0,
            Version::Http2 => 1,
        };
        self.pools[i].get_or_init(|| self.client.pool(self.addr, version, self.meshed.clone()))
    }
}

impl<B: IntoForwardBody, D: Dial> tower::Service<Request<B>> for EndpointClient<D> {
    type Response = Response<ProxyBody>;
    type Error = Error;
    type Future = ResponseFuture;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Error>> {
        // The pool dials on demand: it always takes a request.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let version = match req.version() {
            http::Version::HTTP_2 => Version::Http2,
            _ => Version::Http1,
        };
        let config = &self.inner.client.shared.config;
        // An HTTP/2 request body of no declared length is a stream (gRPC client and bidi
        // streams live for hours): only bodies that are meant to end get the deadline. gRPC
        // has its own deadlines (`grpc-timeout`), and a server stream may hold its headers back
        // until its first message: no response headers timeout for it.
        let streaming =
            version == Version::Http2 && !req.headers().contains_key(http::header::CONTENT_LENGTH);
        let body_timeout = config.request_body_timeout.filter(|_| !streaming);
        let headers_timeout = config
            .response_headers_timeout
            .filter(|_| !crate::is_grpc(&req));
        // An HTTP/2 peer may refuse the request unprocessed: it can then be sent again.
        let resend = (version == Version::Http2).then_some(config.h2_resend_max_request_bytes);
        let req = req.map(|body| body.into_forward(body_timeout, resend));
        let sent = self.inner.pool(version).send(req);
        let Some(timeout) = headers_timeout else {
            return Box::pin(futures_util::FutureExt::map(sent, |rsp| {
                rsp.map(|rsp| rsp.map(ProxyBody::pool))
            }));
        };
        let addr = self.inner.addr;
        // Dropping the send on timeout cancels the request to the endpoint.
        Box::pin(futures_util::FutureExt::map(
            tokio::time::timeout(timeout, sent),
            move |rsp| match rsp {
                Ok(rsp) => rsp.map(|rsp| rsp.map(ProxyBody::pool)),
                Err(_) => Err(Error::ResponseHeadersTimeout { addr, timeout }),
            },
        ))
    }
}
