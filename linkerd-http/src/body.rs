//! The body of every response the proxy serves.

use crate::{client::PoolBody, metrics::RecordBody};
use bytes::Bytes;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use std::{
    pin::Pin,
    task::{Context, Poll},
};

pin_project_lite::pin_project! {
    /// Either a forwarded upstream body or a body the proxy wrote itself (errors, admin).
    #[project = Proj]
    pub enum ProxyBody {
        Upstream { #[pin] body: RecordBody<PoolBody<Incoming>> },
        Full { data: Option<Bytes> },
    }
}

impl ProxyBody {
    /// A body holding `data`.
    pub fn full(data: impl Into<Bytes>) -> Self {
        let data = data.into();
        ProxyBody::Full {
            data: (!data.is_empty()).then_some(data),
        }
    }

    /// An empty body.
    pub fn empty() -> Self {
        ProxyBody::Full { data: None }
    }

    /// A forwarded upstream body.
    pub fn upstream(body: RecordBody<PoolBody<Incoming>>) -> Self {
        ProxyBody::Upstream { body }
    }
}

impl Body for ProxyBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        match self.project() {
            Proj::Upstream { body } => body.poll_frame(cx),
            Proj::Full { data } => Poll::Ready(data.take().map(|d| Ok(Frame::data(d)))),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ProxyBody::Upstream { body } => body.is_end_stream(),
            ProxyBody::Full { data } => data.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ProxyBody::Upstream { body } => body.size_hint(),
            ProxyBody::Full { data } => {
                SizeHint::with_exact(data.as_ref().map(|d| d.len() as u64).unwrap_or(0))
            }
        }
    }
}
