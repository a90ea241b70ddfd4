//! The body of every response the proxy serves.

use crate::{
    head_budget::HeadDone,
    metrics::{Eos, RecordBody},
    stall::StreamStall,
    PoolBody,
};
use bytes::Bytes;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use std::{
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
};

pin_project_lite::pin_project! {
    /// Either a forwarded upstream body or a body the proxy wrote itself (errors, admin), and,
    /// once the metrics layer has seen it, the recorder that classifies the response when the
    /// body ends.
    pub struct ProxyBody {
        #[pin]
        body: RecordBody<Inner>,
        // Marks for the HTTP/2 stream it is sent on, whose client may stall it (`stall`).
        stall: Option<Arc<StreamStall>>,
        // Until dropped, its HTTP/1 connection reads no request head (`head_budget`).
        head: Option<HeadDone>,
    }
}

pin_project_lite::pin_project! {
    #[project = Proj]
    enum Inner {
        Pool { #[pin] body: PoolBody<ForwardBody> },
        Full { data: Option<Bytes> },
    }
}

impl ProxyBody {
    /// A body holding `data`.
    pub fn full(data: impl Into<Bytes>) -> Self {
        let data = data.into();
        Self::new(Inner::Full {
            data: (!data.is_empty()).then_some(data),
        })
    }

    /// An empty body.
    pub fn empty() -> Self {
        Self::new(Inner::Full { data: None })
    }

    /// A body forwarded from the pool.
    pub fn pool(body: PoolBody<ForwardBody>) -> Self {
        Self::new(Inner::Pool { body })
    }

    fn new(inner: Inner) -> Self {
        Self {
            body: RecordBody::unrecorded(inner),
            stall: None,
            head: None,
        }
    }

    /// Holds `done` until the body is dropped.
    pub(crate) fn hold(&mut self, done: HeadDone) {
        self.head = Some(done);
    }

    /// Marks `stall` as the body is polled and yields data.
    pub(crate) fn watch(&mut self, stall: Arc<StreamStall>) {
        self.stall = Some(stall);
    }

    /// Classifies the response with `eos` when the body ends.
    pub(crate) fn record(&mut self, eos: Eos) {
        self.body.record(eos);
    }
}

impl std::fmt::Debug for ProxyBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProxyBody")
            .field("end_stream", &self.is_end_stream())
            .finish_non_exhaustive()
    }
}

impl Body for ProxyBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = self.project();
        let Some(stall) = this.stall.as_deref() else {
            return this.body.poll_frame(cx);
        };
        stall.polling();
        let frame = this.body.poll_frame(cx);
        if let Poll::Ready(Some(Ok(f))) = &frame {
            if f.is_data() {
                stall.yielded();
            }
        }
        frame
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

impl Body for Inner {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        match self.project() {
            Proj::Pool { body } => body.poll_frame(cx),
            Proj::Full { data } => Poll::Ready(data.take().map(|d| Ok(Frame::data(d)))),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Inner::Pool { body } => body.is_end_stream(),
            Inner::Full { data } => data.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Inner::Pool { body } => body.size_hint(),
            Inner::Full { data } => {
                SizeHint::with_exact(data.as_ref().map(|d| d.len() as u64).unwrap_or(0))
            }
        }
    }
}

/// A client's request body on its way to the endpoint, which must have arrived in full within
/// a deadline (`LINKERD2_PROXY_HTTP_REQUEST_BODY_TIMEOUT`, from when the proxy first waits for it): a client
/// trickling a body a byte at a time can't hold the upstream connection forever. Past the
/// deadline the body fails with [`RequestBodyTimeout`]; the endpoint's connection or stream is
/// then reset (never handed a truncated body as if complete) and the client answered 408.
#[derive(Debug)]
pub struct ForwardBody {
    body: Incoming,
    /// Armed on the first poll of a body that is not already complete.
    deadline: Option<Pin<Box<tokio::time::Sleep>>>,
    timeout: Option<std::time::Duration>,
}

/// The request body did not arrive within the request body timeout.
#[derive(Debug, thiserror::Error)]
#[error("the request body did not arrive within {0:?}")]
pub struct RequestBodyTimeout(pub std::time::Duration);

impl ForwardBody {
    /// `body`, due in full within `timeout` (none: no deadline).
    pub fn new(body: Incoming, timeout: Option<std::time::Duration>) -> Self {
        Self {
            body,
            deadline: None,
            timeout,
        }
    }
}

impl Body for ForwardBody {
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = &mut *self;
        if let Poll::Ready(frame) = Pin::new(&mut this.body).poll_frame(cx) {
            return Poll::Ready(frame.map(|f| f.map_err(Into::into)));
        }
        let Some(timeout) = this.timeout else {
            return Poll::Pending;
        };
        // One timer per request whose body is still coming (not per GET), made on first wait.
        let deadline = this
            .deadline
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
        match deadline.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Some(Err(RequestBodyTimeout(timeout).into()))),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}
