//! Reading a connection's first bytes with a bound and a timeout.

use crate::{classify, Classification, PrefixedIo, Protocol};
use bytes::BytesMut;
use linkerd_stack::ThenCall;
use std::{
    io,
    task::{Context, Poll},
    time::Duration,
};
use tokio::io::{AsyncRead, AsyncReadExt};

/// How detection reads: at most `capacity` bytes, for at most `timeout`.
#[derive(Clone, Copy, Debug)]
pub struct DetectParams {
    /// How long the client may take to send enough bytes to decide.
    pub timeout: Duration,
    /// The most bytes buffered to decide.
    pub capacity: usize,
}

/// What detection found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Detected {
    /// What the client speaks.
    pub protocol: Protocol,
    /// True when the timeout expired before the bytes decided (the result is then opaque).
    pub timed_out: bool,
}

/// Detection failed because the connection failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The read failed (a reset, say).
    #[error("reading the connection during protocol detection failed: {0}")]
    Read(#[from] io::Error),
}

/// A `tower` layer that detects a connection's protocol, then calls the inner service with the
/// connection's target, what was found, and an I/O that replays the bytes read.
///
/// Requests are `(target, io)` pairs; the inner service gets `(target, Detected, PrefixedIo<io>)`.
/// `known` says, for a target, that its protocol is already known (an opaque port, a peer's
/// transport header): detection is then skipped and nothing is read.
#[derive(Clone, Copy, Debug)]
pub struct DetectLayer<F, G = NoTimeouts> {
    params: DetectParams,
    known: F,
    timeouts: G,
}

/// The service made by [`DetectLayer`].
#[derive(Clone, Debug)]
pub struct Detect<S, F, G = NoTimeouts> {
    params: DetectParams,
    known: F,
    timeouts: G,
    inner: S,
}

/// A target's own detect timeout, if it has one (else the layer's applies).
pub trait TargetTimeout<T> {
    /// `target`'s detect timeout.
    fn timeout(&self, target: &T) -> Option<Duration>;
}

/// Every target detects within the layer's timeout.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoTimeouts;

/// Targets' own timeouts, from a function.
#[derive(Clone, Copy, Debug)]
pub struct Timeouts<H>(H);

impl<T> TargetTimeout<T> for NoTimeouts {
    fn timeout(&self, _: &T) -> Option<Duration> {
        None
    }
}

impl<T, H: Fn(&T) -> Option<Duration>> TargetTimeout<T> for Timeouts<H> {
    fn timeout(&self, target: &T) -> Option<Duration> {
        (self.0)(target)
    }
}

/// The longest prefix that can be undecided without being the start of an HTTP/1 request
/// line: the HTTP/2 preface (a TLS record header decides at 6 bytes).
const MAX_UNDECIDED_NON_HTTP: usize = 24;

impl Default for DetectParams {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(10),
            // hyper's default HTTP/1 head limit (`max_buf_size`).
            capacity: 400 * 1024,
        }
    }
}

/// The buffer detection starts with; it grows (in steps of this size) up to the capacity only
/// for clients whose first line is that long.
const INITIAL_BUFFER: usize = 1024;

/// Reads from `io` until the classifier decides, the buffer is full, the peer stops sending
/// (EOF) or the timeout expires, then returns the protocol and an I/O that replays every byte.
///
/// Only an HTTP/1 request line can still be undecided after the first few bytes, so a buffer
/// that fills up holds the start of a request line longer than the capacity (the HTTP/1
/// server's head limit): it is handed to the HTTP/1 server, which answers it as too large,
/// rather than forwarded opaquely or reset.
pub async fn detect<I>(mut io: I, params: DetectParams) -> Result<(Detected, PrefixedIo<I>), Error>
where
    I: AsyncRead + Unpin,
{
    let mut buf = BytesMut::with_capacity(params.capacity.min(INITIAL_BUFFER));
    let read = async {
        loop {
            let room = params.capacity - buf.len();
            buf.reserve(room.min(INITIAL_BUFFER));
            // `take` keeps the buffer within the capacity whatever `read_buf` is offered.
            let n = (&mut io).take(room as u64).read_buf(&mut buf).await?;
            match classify(&buf) {
                Classification::Done(p) => return Ok::<_, io::Error>(p),
                Classification::NeedMore if n == 0 => return Ok(Protocol::Opaque),
                Classification::NeedMore if buf.len() >= params.capacity => {
                    return Ok(if buf.len() > MAX_UNDECIDED_NON_HTTP {
                        Protocol::Http1
                    } else {
                        Protocol::Opaque
                    })
                }
                Classification::NeedMore => {}
            }
        }
    };
    let detected = match tokio::time::timeout(params.timeout, read).await {
        Ok(res) => Detected {
            protocol: res?,
            timed_out: false,
        },
        Err(_) => Detected {
            protocol: Protocol::Opaque,
            timed_out: true,
        },
    };
    Ok((detected, PrefixedIo::new(buf.freeze(), io)))
}

impl<F> DetectLayer<F> {
    /// A layer detecting with `params`, unless `known` names the target's protocol.
    pub fn new(params: DetectParams, known: F) -> Self {
        Self {
            params,
            known,
            timeouts: NoTimeouts,
        }
    }
}

impl<F, G> DetectLayer<F, G> {
    /// Targets for which `timeout` gives one detect within it instead of the layer's (e.g. an
    /// inbound server's own `detect.timeout`).
    pub fn with_timeouts<H>(self, timeout: H) -> DetectLayer<F, Timeouts<H>> {
        DetectLayer {
            params: self.params,
            known: self.known,
            timeouts: Timeouts(timeout),
        }
    }
}

impl<S, F: Clone, G: Clone> tower::Layer<S> for DetectLayer<F, G> {
    type Service = Detect<S, F, G>;

    fn layer(&self, inner: S) -> Self::Service {
        Detect {
            params: self.params,
            known: self.known.clone(),
            timeouts: self.timeouts.clone(),
            inner,
        }
    }
}

impl<T, I, S, F, G> tower::Service<(T, I)> for Detect<S, F, G>
where
    T: Send + 'static,
    I: AsyncRead + Unpin + Send + 'static,
    F: Fn(&T) -> Option<Protocol>,
    G: TargetTimeout<T>,
    S: tower::Service<(T, Detected, PrefixedIo<I>)> + Clone + Send + 'static,
    S::Error: From<Error>,
    S::Future: Send,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = ThenCall<S, (T, Detected, PrefixedIo<I>), Error>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        // Readiness is checked on the clone that serves the connection.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, (target, io): (T, I)) -> Self::Future {
        let mut params = self.params;
        if let Some(timeout) = self.timeouts.timeout(&target) {
            params.timeout = timeout;
        }
        let known = (self.known)(&target);
        let detecting = async move {
            let (detected, io) = match known {
                Some(protocol) => {
                    let detected = Detected {
                        protocol,
                        timed_out: false,
                    };
                    (detected, PrefixedIo::new(bytes::Bytes::new(), io))
                }
                None => detect(io, params).await?,
            };
            Ok((target, detected, io))
        };
        ThenCall::new(detecting, self.inner.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::pin::Pin;
    use tokio::io::AsyncWriteExt;

    const PARAMS: DetectParams = DetectParams {
        timeout: Duration::from_secs(10),
        capacity: 1024,
    };

    async fn read_all<I: AsyncRead + Unpin>(mut io: I) -> Vec<u8> {
        let mut v = Vec::new();
        io.read_to_end(&mut v).await.unwrap();
        v
    }

    #[tokio::test]
    async fn split_http1_is_detected_and_replayed() {
        let (client, server) = tokio::io::duplex(4096);
        let task = tokio::spawn(async move {
            let mut client = client;
            client.write_all(b"GE").await.unwrap();
            tokio::task::yield_now().await;
            client.write_all(b"T / HTTP/1.1\r\n").await.unwrap();
            client.write_all(b"Host: a\r\n\r\n").await.unwrap();
            client.shutdown().await.unwrap();
            client
        });
        let (d, io) = detect(server, PARAMS).await.unwrap();
        assert_eq!(d.protocol, Protocol::Http1);
        let _client = task.await.unwrap();
        assert_eq!(read_all(io).await, b"GET / HTTP/1.1\r\nHost: a\r\n\r\n");
    }

    #[tokio::test(start_paused = true)]
    async fn timeout_is_opaque_and_keeps_bytes() {
        let (mut client, server) = tokio::io::duplex(4096);
        client.write_all(b"GET /").await.unwrap();
        let (d, mut io) = detect(server, PARAMS).await.unwrap();
        assert_eq!(
            d,
            Detected {
                protocol: Protocol::Opaque,
                timed_out: true
            }
        );
        client.write_all(b" more").await.unwrap();
        drop(client);
        let mut v = Vec::new();
        io.read_to_end(&mut v).await.unwrap();
        assert_eq!(v, b"GET / more");
    }

    #[tokio::test]
    async fn full_buffer_is_http1_and_nothing_is_lost() {
        let (mut client, server) = tokio::io::duplex(8192);
        // A request line longer than the buffer: still undecided when the buffer is full, and
        // given to the HTTP/1 server (which answers it as too large).
        let mut data = b"GET /".to_vec();
        data.extend(std::iter::repeat_n(b'a', 3000));
        client.write_all(&data).await.unwrap();
        drop(client);
        let (d, io) = detect(server, PARAMS).await.unwrap();
        assert_eq!(d.protocol, Protocol::Http1);
        assert!(!d.timed_out);
        assert_eq!(io.prefix().len(), 1024);
        assert_eq!(read_all(io).await, data);
    }

    #[tokio::test]
    async fn request_lines_longer_than_the_first_buffer_are_http1() {
        let params = DetectParams {
            capacity: 64 * 1024,
            ..PARAMS
        };
        let (mut client, server) = tokio::io::duplex(64 * 1024);
        let mut data = b"GET /".to_vec();
        data.extend(std::iter::repeat_n(b'a', 20_000));
        data.extend_from_slice(b" HTTP/1.1\r\nHost: a\r\n\r\n");
        client.write_all(&data).await.unwrap();
        drop(client);
        let (d, io) = detect(server, params).await.unwrap();
        assert_eq!(d.protocol, Protocol::Http1);
        assert_eq!(read_all(io).await, data);
    }

    #[tokio::test]
    async fn a_short_undecided_prefix_at_capacity_is_opaque() {
        // A tiny capacity filled by a strict prefix of the HTTP/2 preface is not HTTP/1.
        let params = DetectParams {
            capacity: 10,
            ..PARAMS
        };
        let (mut client, server) = tokio::io::duplex(64);
        client.write_all(b"PRI * HTTP/2.0").await.unwrap();
        let (d, _io) = detect(server, params).await.unwrap();
        assert_eq!(d.protocol, Protocol::Opaque);
    }

    #[tokio::test]
    async fn eof_before_any_byte_is_opaque() {
        let (client, server) = tokio::io::duplex(64);
        drop(client);
        let (d, io) = detect(server, PARAMS).await.unwrap();
        assert_eq!(d.protocol, Protocol::Opaque);
        assert!(read_all(io).await.is_empty());
    }

    type Inner<I> = (&'static str, Detected, PrefixedIo<I>);

    /// Passes on the target, the protocol and the replayed bytes.
    fn inner<I: Send + 'static>() -> impl tower::Service<
        Inner<I>,
        Response = (&'static str, Protocol, Vec<u8>),
        Error = Error,
        Future = impl Send,
    > + Clone
           + Send
           + 'static {
        tower::service_fn(|(t, d, io): Inner<I>| async move {
            Ok::<_, Error>((t, d.protocol, io.prefix().to_vec()))
        })
    }

    #[tokio::test]
    async fn layer_passes_the_result_on() {
        use tower::{Layer, Service, ServiceExt};
        let mut svc = DetectLayer::new(PARAMS, |_: &&str| None).layer(inner());
        let (mut client, server) = tokio::io::duplex(64);
        client
            .write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
            .await
            .unwrap();
        let (t, p, prefix) = svc
            .ready()
            .await
            .unwrap()
            .call(("conn", server))
            .await
            .unwrap();
        assert_eq!(t, "conn");
        assert_eq!(p, Protocol::Http2);
        assert_eq!(prefix, b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n");
    }

    #[tokio::test(start_paused = true)]
    async fn a_known_protocol_is_not_read() {
        use tower::{Layer, ServiceExt};
        let known = |t: &&str| (*t == "opaque").then_some(Protocol::Opaque);
        let svc = DetectLayer::new(PARAMS, known).layer(inner());
        let (mut client, server) = tokio::io::duplex(64);
        // HTTP/1 bytes on a connection known to be opaque: not read, not classified.
        client.write_all(b"GET / HTTP/1.1\r\n\r\n").await.unwrap();
        let start = tokio::time::Instant::now();
        let (_, p, prefix) = svc.oneshot(("opaque", server)).await.unwrap();
        assert_eq!(p, Protocol::Opaque);
        assert!(prefix.is_empty(), "nothing was buffered");
        assert_eq!(
            start.elapsed(),
            Duration::ZERO,
            "no detection timeout was waited"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_targets_own_timeout_wins() {
        use tower::{Layer, ServiceExt};
        let own = |t: &&str| (*t == "quick").then_some(Duration::from_secs(1));
        let svc = DetectLayer::new(PARAMS, |_: &&str| None)
            .with_timeouts(own)
            .layer(inner());
        for (target, waited) in [("quick", 1), ("other", 10)] {
            // A client that sends nothing: detection ends at the target's timeout.
            let (_client, server) = tokio::io::duplex(64);
            let start = tokio::time::Instant::now();
            let (_, p, _) = svc.clone().oneshot((target, server)).await.unwrap();
            assert_eq!(p, Protocol::Opaque);
            assert_eq!(start.elapsed(), Duration::from_secs(waited), "{target}");
        }
    }

    #[tokio::test]
    async fn a_failed_read_is_the_layers_error() {
        use tower::{Layer, ServiceExt};
        let svc = DetectLayer::new(PARAMS, |_: &&str| None).layer(inner());
        let err = svc.oneshot(("conn", FailingIo)).await;
        assert!(matches!(err, Err(Error::Read(_))), "{err:?}");
    }

    /// An I/O whose reads fail (a reset connection).
    struct FailingIo;

    impl AsyncRead for FailingIo {
        fn poll_read(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
            _: &mut tokio::io::ReadBuf<'_>,
        ) -> Poll<io::Result<()>> {
            Poll::Ready(Err(io::ErrorKind::ConnectionReset.into()))
        }
    }
}
