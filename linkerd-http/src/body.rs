//! The body of every response the proxy serves.

use crate::{
    metrics::{Eos, RecordBody},
    PoolBody,
};
use bytes::Bytes;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use std::{
    pin::Pin,
    task::{Context, Poll},
};

pin_project_lite::pin_project! {
    /// Either a forwarded upstream body or a body the proxy wrote itself (errors, admin), and,
    /// once the metrics layer has seen it, the recorder that classifies the response when the
    /// body ends.
    pub struct ProxyBody {
        #[pin]
        body: RecordBody<Inner>,
    }
}

pin_project_lite::pin_project! {
    #[project = Proj]
    enum Inner {
        Pool { #[pin] body: PoolBody<Incoming> },
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
    pub fn pool(body: PoolBody<Incoming>) -> Self {
        Self::new(Inner::Pool { body })
    }

    fn new(inner: Inner) -> Self {
        Self {
            body: RecordBody::unrecorded(inner),
        }
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
        self.project().body.poll_frame(cx)
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
