//! Classifying a response when its body ends: `response_total`.

use super::{grpc_status, ResponseKey, RouteMetrics};
use bytes::Bytes;
use http::{HeaderMap, StatusCode};
use hyper::body::{Body, Frame, SizeHint};
use std::{
    pin::Pin,
    task::{Context, Poll},
};

pin_project_lite::pin_project! {
    /// A response body that records `response_total` when it ends (or is dropped early);
    /// without a recorder (a response the proxy answered itself), it records nothing.
    pub struct RecordBody<B> {
        #[pin]
        inner: B,
        eos: Option<Eos>,
        // Servers never poll a body known to be empty (204, HEAD, content-length: 0).
        empty: bool,
    }

    impl<B> PinnedDrop for RecordBody<B> {
        fn drop(this: Pin<&mut Self>) {
            let this = this.project();
            if let Some(eos) = this.eos.take() {
                // Dropped before its end (e.g. the client went away), unless known empty.
                eos.finish(None, if *this.empty { End::Complete } else { End::Dropped });
            }
        }
    }
}

/// What a response is classified by when its body ends.
pub(crate) struct Eos {
    pub(super) route: RouteMetrics,
    pub(super) status: StatusCode,
    pub(super) grpc_status: Option<u32>,
    /// The proxy's error, for a response it synthesized.
    pub(super) error: Option<&'static str>,
}

/// How a response body ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum End {
    /// Completely.
    Complete,
    /// With an error from the peer's stream.
    Error,
    /// Dropped before its end.
    Dropped,
}

impl Eos {
    /// Counts the response: a failure unless it completed with a non-5xx status (gRPC: with
    /// `grpc-status: 0`, from the trailers, or from the headers of a trailers-only response).
    pub(super) fn finish(self, trailers: Option<&HeaderMap>, end: End) {
        let grpc_status = trailers.and_then(grpc_status).or(self.grpc_status);
        let success = end == End::Complete
            && match grpc_status {
                Some(code) => code == 0,
                None => !self.status.is_server_error(),
            };
        let error = self.error.or(match end {
            End::Complete => None,
            End::Error => Some("stream"),
            End::Dropped => Some("cancel"),
        });
        self.route
            .response_total(ResponseKey {
                status_code: Some(self.status.as_u16()),
                grpc_status,
                success,
                error,
            })
            .incr();
    }
}

impl<B: Body> RecordBody<B> {
    /// A body that records nothing (yet).
    pub(crate) fn unrecorded(inner: B) -> Self {
        Self {
            inner,
            eos: None,
            empty: false,
        }
    }

    /// A body that records with `eos` when it ends.
    pub(super) fn recorded(inner: B, eos: Eos) -> Self {
        let mut body = Self::unrecorded(inner);
        body.record(eos);
        body
    }

    /// Records with `eos` when the body ends.
    pub(crate) fn record(&mut self, eos: Eos) {
        self.empty = self.inner.is_end_stream();
        self.eos = Some(eos);
    }
}

impl<B: Body<Data = Bytes>> Body for RecordBody<B> {
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let mut this = self.project();
        let res = this.inner.as_mut().poll_frame(cx);
        match &res {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(trailers) = frame.trailers_ref() {
                    if let Some(eos) = this.eos.take() {
                        eos.finish(Some(trailers), End::Complete);
                    }
                } else if this.inner.is_end_stream() {
                    // Servers stop polling once a sized body is complete.
                    if let Some(eos) = this.eos.take() {
                        eos.finish(None, End::Complete);
                    }
                }
            }
            Poll::Ready(None) => {
                if let Some(eos) = this.eos.take() {
                    eos.finish(None, End::Complete);
                }
            }
            Poll::Ready(Some(Err(_))) => {
                if let Some(eos) = this.eos.take() {
                    eos.finish(None, End::Error);
                }
            }
            Poll::Pending => {}
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
