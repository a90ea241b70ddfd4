//! The response body of a pooled request.

use super::{h1::Release, h2::Stream};
use bytes::Bytes;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use linkerd_metrics::GaugeGuard;
use std::{
    pin::Pin,
    task::{Context, Poll},
};

/// A response body that returns its HTTP/1 connection to the pool once it has been read (and
/// counts as an open HTTP/2 stream, and a request in flight, until it ends).
pub struct PoolBody<B> {
    inner: Incoming,
    release: Option<Release<B>>,
    _in_flight: GaugeGuard,
    _stream: Option<Stream>,
}

impl<B> PoolBody<B> {
    pub(super) fn new(
        inner: Incoming,
        release: Option<Release<B>>,
        in_flight: GaugeGuard,
        stream: Option<Stream>,
    ) -> Self {
        Self {
            inner,
            release,
            _in_flight: in_flight,
            _stream: stream,
        }
    }

    fn release(&mut self) {
        if let Some(release) = self.release.take() {
            release.release();
        }
    }
}

impl<B: Unpin> Body for PoolBody<B> {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = self.get_mut();
        let res = Pin::new(&mut this.inner).poll_frame(cx);
        match &res {
            Poll::Ready(None) => this.release(),
            // Servers stop polling once a sized body is complete.
            Poll::Ready(Some(Ok(_))) if this.inner.is_end_stream() => this.release(),
            Poll::Ready(Some(Err(_))) => this.release = None,
            _ => {}
        }
        res
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl<B> Drop for PoolBody<B> {
    fn drop(&mut self) {
        // Servers skip polling bodies known to be empty (204, HEAD, content-length: 0).
        if self.inner.is_end_stream() {
            self.release();
        }
    }
}
