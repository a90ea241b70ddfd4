//! The body of every response the proxy serves.

use crate::{
    head_budget::HeadDone,
    metrics::{Eos, RecordBody},
    stall::StreamStall,
    PoolBody,
};
use bytes::Bytes;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use parking_lot::Mutex;
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
///
/// A body made [`ForwardBody::replayable`] keeps what it has read, up to a bound, until it is
/// sealed, so that a request an HTTP/2 peer refused unprocessed can be sent again
/// ([`ForwardBody::replay`]); a larger body is sent once, never truncated.
#[derive(Debug)]
pub struct ForwardBody {
    src: Source,
    /// Armed on the first poll of a body that is not already complete.
    deadline: Option<Pin<Box<tokio::time::Sleep>>>,
    timeout: Option<std::time::Duration>,
    /// Kept for a retry layer above the pool: the pool's [`ForwardBody::seal`] leaves it be,
    /// its owner ends it with [`ForwardBody::release`].
    held: bool,
    /// Made above the pool and not read yet: the pool makes it what it makes of a client's
    /// body ([`IntoForwardBody`]).
    deferred: bool,
}

#[derive(Debug)]
enum Source {
    /// Read straight from the client: sent once.
    Direct(Incoming),
    /// Nothing to send (the body had ended before it was forwarded): replays as itself.
    Empty,
    /// Read through the state every attempt shares.
    Shared(Attempt),
}

/// One attempt's place in a replayable body.
#[derive(Debug)]
struct Attempt {
    shared: Arc<Mutex<Shared>>,
    /// Data chunks of the body this attempt has sent.
    chunks: usize,
    /// Their bytes.
    bytes: u64,
    /// Whether it has sent the trailers.
    trailers: bool,
}

/// The client's body and what was read of it.
#[derive(Debug)]
struct Shared {
    body: Incoming,
    /// The data read so far, while it may be replayed.
    kept: Vec<Bytes>,
    /// Chunks and bytes read from the body in all.
    read_chunks: usize,
    read_bytes: u64,
    trailers: Option<http::HeaderMap>,
    ended: bool,
    /// No replay is possible any more: more than `max` bytes were read, the body failed, or
    /// the request was answered. What was kept is dropped.
    sealed: bool,
    max: u64,
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The request body did not arrive within the request body timeout.
#[derive(Debug, thiserror::Error)]
#[error("the request body did not arrive within {0:?}")]
pub struct RequestBodyTimeout(pub std::time::Duration);

/// A request body the pool sends: the client's own (made a [`ForwardBody`] there), or a
/// [`ForwardBody`] a layer above already made (a retried request's).
pub trait IntoForwardBody: Send + 'static {
    /// As a [`ForwardBody`] due within `timeout`; an HTTP/2 request's kept for a refused
    /// re-send up to `resend_max` bytes.
    fn into_forward(
        self,
        timeout: Option<std::time::Duration>,
        resend_max: Option<u64>,
    ) -> ForwardBody;
}

impl IntoForwardBody for Incoming {
    fn into_forward(
        self,
        timeout: Option<std::time::Duration>,
        resend_max: Option<u64>,
    ) -> ForwardBody {
        match resend_max {
            Some(max) => ForwardBody::replayable(self, timeout, max),
            None => ForwardBody::new(self, timeout),
        }
    }
}

impl IntoForwardBody for ForwardBody {
    fn into_forward(
        mut self,
        timeout: Option<std::time::Duration>,
        resend_max: Option<u64>,
    ) -> ForwardBody {
        match self.src {
            Source::Direct(body) if self.deferred => body.into_forward(timeout, resend_max),
            src => {
                self.src = src;
                self.timeout = self.timeout.or(timeout);
                self
            }
        }
    }
}

/// A replay of the request body reached data that was no longer kept.
#[derive(Debug, thiserror::Error)]
#[error("the request body can no longer be replayed")]
pub struct ReplayGone;

impl ForwardBody {
    /// `body`, due in full within `timeout` (none: no deadline), sent once.
    pub fn new(body: Incoming, timeout: Option<std::time::Duration>) -> Self {
        Self::with(Source::Direct(body), timeout)
    }

    /// `body`, due in full within `timeout`, kept for replays while it is at most `max` bytes
    /// and not sealed. An empty body costs nothing.
    pub fn replayable(body: Incoming, timeout: Option<std::time::Duration>, max: u64) -> Self {
        if body.is_end_stream() {
            return Self::with(Source::Empty, timeout);
        }
        let shared = Shared {
            body,
            kept: Vec::new(),
            read_chunks: 0,
            read_bytes: 0,
            trailers: None,
            ended: false,
            sealed: false,
            max,
        };
        Self::with(
            Source::Shared(Attempt::new(Arc::new(Mutex::new(shared)))),
            timeout,
        )
    }

    /// `body`, kept for retries while it is at most `max` bytes, until
    /// [`ForwardBody::release`]d: the pool does not seal it when an attempt is answered. The
    /// body timeout is the pool's ([`IntoForwardBody`]).
    pub fn held(body: Incoming, max: u64) -> Self {
        let mut held = Self::replayable(body, None, max);
        held.held = true;
        held
    }

    fn with(src: Source, timeout: Option<std::time::Duration>) -> Self {
        Self {
            src,
            deadline: None,
            timeout,
            held: false,
            deferred: false,
        }
    }

    /// The client's `body`, as the pool would take it straight from the client (a layer above
    /// the pool that needs a [`ForwardBody`] but no retries).
    pub fn deferred(body: Incoming) -> Self {
        let mut deferred = Self::new(body, None);
        deferred.deferred = true;
        deferred
    }

    /// The body again from its start, for another attempt, unless it can't be replayed (read
    /// straight, sealed, or more was read than is kept).
    pub fn replay(&self) -> Option<Self> {
        let src = match &self.src {
            Source::Direct(_) => return None,
            Source::Empty => Source::Empty,
            Source::Shared(a) => {
                if a.shared.lock().sealed {
                    return None;
                }
                Source::Shared(Attempt::new(a.shared.clone()))
            }
        };
        let mut replay = Self::with(src, self.timeout);
        replay.held = self.held;
        Some(replay)
    }

    /// Whether the whole body has been read and kept (or there was none): a replay of it is
    /// the whole body, within the bound.
    pub fn is_kept_whole(&self) -> bool {
        match &self.src {
            Source::Direct(_) => false,
            Source::Empty => true,
            Source::Shared(a) => {
                let s = a.shared.lock();
                s.ended && !s.sealed
            }
        }
    }

    /// No replay will be asked for: what was kept for one is dropped, and the rest of the body
    /// is no longer kept (not for a [`ForwardBody::held`] body: its owner decides).
    pub fn seal(&self) {
        if !self.held {
            self.release();
        }
    }

    /// Seals the body, held or not.
    pub fn release(&self) {
        if let Source::Shared(a) = &self.src {
            a.shared.lock().seal();
        }
    }
}

impl Attempt {
    fn new(shared: Arc<Mutex<Shared>>) -> Self {
        Self {
            shared,
            chunks: 0,
            bytes: 0,
            trailers: false,
        }
    }

    /// The next frame of this attempt: a kept chunk it has not sent yet, else the body's next.
    fn poll_frame(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let mut s = self.shared.lock();
        if self.chunks < s.read_chunks {
            // Behind the body: replay what was kept, if it still is.
            let Some(chunk) = s.kept.get(self.chunks).filter(|_| !s.sealed).cloned() else {
                return Poll::Ready(Some(Err(ReplayGone.into())));
            };
            self.chunks += 1;
            self.bytes += chunk.len() as u64;
            return Poll::Ready(Some(Ok(Frame::data(chunk))));
        }
        if s.ended {
            if self.trailers {
                return Poll::Ready(None);
            }
            self.trailers = true;
            return Poll::Ready(match (&s.trailers, s.sealed) {
                (Some(t), false) => Some(Ok(Frame::trailers(t.clone()))),
                (Some(_), true) => Some(Err(ReplayGone.into())),
                (None, _) => None,
            });
        }
        let frame = match Pin::new(&mut s.body).poll_frame(cx) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(None) => {
                s.ended = true;
                self.trailers = true;
                return Poll::Ready(None);
            }
            Poll::Ready(Some(Err(e))) => {
                s.seal();
                return Poll::Ready(Some(Err(e.into())));
            }
            Poll::Ready(Some(Ok(frame))) => frame,
        };
        if let Some(data) = frame.data_ref() {
            let len = data.len() as u64;
            s.read_chunks += 1;
            s.read_bytes += len;
            self.chunks += 1;
            self.bytes += len;
            if !s.sealed {
                if s.read_bytes > s.max {
                    tracing::trace!(bytes = s.read_bytes, "request body too large to replay");
                    s.seal();
                } else {
                    s.kept.push(data.clone());
                }
            }
        } else if let Some(trailers) = frame.trailers_ref() {
            s.ended = true;
            self.trailers = true;
            if !s.sealed {
                s.trailers = Some(trailers.clone());
            }
        }
        Poll::Ready(Some(Ok(frame)))
    }

    fn is_end_stream(&self) -> bool {
        let s = self.shared.lock();
        if self.chunks < s.read_chunks {
            return false;
        }
        if s.ended {
            return self.trailers || s.trailers.is_none();
        }
        s.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        let s = self.shared.lock();
        if s.ended {
            return SizeHint::with_exact(s.read_bytes.saturating_sub(self.bytes));
        }
        // What is kept past this attempt, and what the body has yet to give.
        let behind = s.read_bytes.saturating_sub(self.bytes);
        let rest = s.body.size_hint();
        let mut hint = SizeHint::new();
        hint.set_lower(rest.lower().saturating_add(behind));
        if let Some(upper) = rest.upper() {
            hint.set_upper(upper.saturating_add(behind));
        }
        hint
    }
}

impl Shared {
    fn seal(&mut self) {
        self.sealed = true;
        self.kept = Vec::new();
        self.trailers = None;
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
        let polled = match &mut this.src {
            Source::Direct(body) => Pin::new(body)
                .poll_frame(cx)
                .map(|f| f.map(|f| f.map_err(Into::into))),
            Source::Empty => return Poll::Ready(None),
            Source::Shared(attempt) => attempt.poll_frame(cx),
        };
        if let Poll::Ready(frame) = polled {
            return Poll::Ready(frame);
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
        match &self.src {
            Source::Direct(body) => body.is_end_stream(),
            Source::Empty => true,
            Source::Shared(attempt) => attempt.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.src {
            Source::Direct(body) => body.size_hint(),
            Source::Empty => SizeHint::with_exact(0),
            Source::Shared(attempt) => attempt.size_hint(),
        }
    }
}

#[cfg(test)]
mod replay_tests {
    use super::*;
    use http_body_util::{BodyExt, StreamBody};
    use hyper_util::rt::{TokioExecutor, TokioIo};

    /// A request body as the proxy's server receives it: `frames` sent by an HTTP/2 client
    /// over an in-memory pipe, received as hyper's `Incoming`.
    async fn incoming(frames: Vec<Frame<Bytes>>) -> Incoming {
        let (client, server) = tokio::io::duplex(1 << 20);
        let (tx, rx) = tokio::sync::oneshot::channel();
        let tx = Mutex::new(Some(tx));
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req: http::Request<Incoming>| {
                if let Some(tx) = tx.lock().take() {
                    let _ = tx.send(req.into_body());
                }
                async { Ok::<_, std::convert::Infallible>(http::Response::new(ProxyBody::empty())) }
            });
            let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(server), svc)
                .await;
        });
        let (mut send, conn) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(client))
                .await
                .unwrap();
        tokio::spawn(conn);
        let body = StreamBody::new(futures_util::stream::iter(
            frames.into_iter().map(Ok::<_, std::convert::Infallible>),
        ));
        tokio::spawn(async move {
            let _ = send
                .send_request(http::Request::post("http://x/").body(body).unwrap())
                .await;
        });
        rx.await.unwrap()
    }

    fn data(s: &'static str) -> Frame<Bytes> {
        Frame::data(Bytes::from_static(s.as_bytes()))
    }

    fn trailers() -> Frame<Bytes> {
        let mut t = http::HeaderMap::new();
        t.insert("grpc-status", http::HeaderValue::from_static("0"));
        Frame::trailers(t)
    }

    /// The data and trailers of `body`.
    async fn read(body: ForwardBody) -> Result<(Bytes, Option<http::HeaderMap>), BoxError> {
        let collected = body.collect().await?;
        let trailers = collected.trailers().cloned();
        Ok((collected.to_bytes(), trailers))
    }

    #[tokio::test]
    async fn a_replay_sends_what_the_first_attempt_read_then_the_rest() {
        let body = incoming(vec![data("hello "), data("world"), trailers()]).await;
        let mut first = ForwardBody::replayable(body, None, 1024);
        // The first attempt reads one chunk, then is refused.
        let chunk = first.frame().await.unwrap().unwrap().into_data().unwrap();
        assert_eq!(chunk, "hello ");
        let again = first.replay().expect("replayable");
        drop(first);
        let (data, trailers) = read(again).await.unwrap();
        assert_eq!(data, "hello world", "the kept chunk, then the rest");
        assert_eq!(trailers.unwrap()["grpc-status"], "0");
    }

    #[tokio::test]
    async fn a_held_body_is_whole_once_read_within_the_bound_and_outlives_seal() {
        let body = incoming(vec![data("hello "), data("world"), trailers()]).await;
        let template = ForwardBody::held(body, 1024);
        let mut first = template.replay().unwrap();
        first.frame().await.unwrap().unwrap();
        assert!(!template.is_kept_whole(), "still streaming");
        // The pool seals an answered attempt: a held body stays replayable.
        first.seal();
        assert_eq!(read(first).await.unwrap().0, "world");
        assert!(template.is_kept_whole());
        let (whole, trailers) = read(template.replay().unwrap()).await.unwrap();
        assert_eq!(whole, "hello world");
        assert!(trailers.is_some());
        template.release();
        assert!(template.replay().is_none(), "released");
        // Past the bound: never whole.
        let body = incoming(vec![data("hello "), data("world")]).await;
        let big = ForwardBody::held(body, 8);
        read(big.replay().unwrap()).await.unwrap();
        assert!(!big.is_kept_whole());
    }

    #[tokio::test]
    async fn a_whole_body_replays_with_its_trailers_and_size() {
        let body = incoming(vec![data("abc"), trailers()]).await;
        let first = ForwardBody::replayable(body, None, 1024);
        let again = first.replay().unwrap();
        assert_eq!(read(first).await.unwrap().0, "abc");
        assert_eq!(again.size_hint().exact(), Some(3), "what is kept, exactly");
        let (data, trailers) = read(again).await.unwrap();
        assert_eq!(data, "abc");
        assert!(trailers.is_some(), "the trailers are replayed too");
    }

    #[tokio::test]
    async fn a_body_over_the_bound_is_not_replayed() {
        let body = incoming(vec![data("0123456789"), data("0123456789")]).await;
        let first = ForwardBody::replayable(body, None, 15);
        let early = first.replay().unwrap();
        assert_eq!(
            read(first).await.unwrap().0,
            "01234567890123456789",
            "sent whole, once"
        );
        // A replay made before the bound was passed fails rather than sending a short body.
        assert!(read(early).await.is_err());
        let body = incoming(vec![data("0123456789"), data("0123456789")]).await;
        let first = ForwardBody::replayable(body, None, 15);
        let (data, _) = read(first.replay().unwrap()).await.unwrap();
        assert_eq!(data.len(), 20);
        assert!(first.replay().is_none(), "no replay once past the bound");
    }

    #[tokio::test]
    async fn a_sealed_body_keeps_nothing() {
        let body = incoming(vec![data("abc"), data("def")]).await;
        let mut first = ForwardBody::replayable(body, None, 1024);
        let _ = first.frame().await;
        first.seal();
        assert!(first.replay().is_none());
        assert_eq!(read(first).await.unwrap().0, "def", "the rest still flows");
    }
}
