//! Reading a connection's first bytes with a bound and a timeout.

use crate::{classify, Classification, HeadBudget, PrefixedIo, Protocol};
use bytes::{Bytes, BytesMut};
use linkerd_stack::ThenCall;
use std::{
    future::Future,
    io,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};
use tokio::io::{AsyncRead, AsyncReadExt};
use tower::BoxError;

/// How detection reads: at most `capacity` bytes, for at most `timeout`.
#[derive(Clone, Debug)]
pub struct DetectParams {
    /// How long the client may take to send enough bytes to decide.
    pub timeout: Duration,
    /// The most bytes buffered to decide.
    pub capacity: usize,
    /// Where the bytes buffered beyond the first [`crate::SMALL_HEAD`] are charged (a long
    /// HTTP/1 request line); a read the budget can't take ends the connection.
    pub budget: Option<Arc<HeadBudget>>,
}

/// Bytes of one connection's detection buffer charged to a [`HeadBudget`], returned when
/// detection ends.
struct Charged<'a> {
    budget: Option<&'a HeadBudget>,
    n: usize,
}

impl Charged<'_> {
    /// Charges what a buffer of `len` bytes holds beyond the free part.
    fn to(&mut self, len: usize) -> io::Result<()> {
        let Some(budget) = self.budget else {
            return Ok(());
        };
        let over = len.saturating_sub(crate::SMALL_HEAD);
        if over > self.n {
            if !budget.charge(over - self.n) {
                return Err(io::Error::other(crate::HeadBudgetExhausted(budget.max())));
            }
            self.n = over;
        }
        Ok(())
    }
}

impl Drop for Charged<'_> {
    fn drop(&mut self) {
        if let Some(budget) = self.budget {
            budget.release(self.n);
        }
    }
}

/// What detection found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Detected {
    /// What the client speaks.
    pub protocol: Protocol,
    /// True when the timeout expired before the bytes decided (the result is then opaque).
    pub timed_out: bool,
    /// True when the client was silent and its server spoke first (the result is then
    /// opaque, and the dialed connection comes with it).
    pub server_first: bool,
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
/// Requests are `(target, io)` pairs; the inner service gets `(target, Detected, (io, dialed))`
/// where `io` is a [`PrefixedIo`] replaying what was read and `dialed` the connection a
/// speculation made, if any (see [`DetectLayer::with_speculation`]). `known` says, for a target,
/// that its protocol is already known (an opaque port, a peer's transport header): detection is
/// then skipped and nothing is read.
#[derive(Clone, Debug)]
pub struct DetectLayer<F, G = NoTimeouts, P = NoSpeculation> {
    params: DetectParams,
    known: F,
    timeouts: G,
    speculate: P,
    delay: Option<Duration>,
}

/// The service made by [`DetectLayer`].
#[derive(Clone, Debug)]
pub struct Detect<S, F, G = NoTimeouts, P = NoSpeculation> {
    params: DetectParams,
    known: F,
    timeouts: G,
    speculate: P,
    delay: Option<Duration>,
    inner: S,
}

/// What the inner service of a [`Detect`] gets: the target, what was found, the client's I/O
/// (replaying what was read) and the connection dialed while the client was silent, if any.
pub type DetectedConn<T, I, U> = (T, Detected, (PrefixedIo<I>, Option<Speculative<U>>));

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
            budget: None,
        }
    }
}

/// The buffer detection starts with; it grows (in steps of this size) up to the capacity only
/// for clients whose first line is that long.
const INITIAL_BUFFER: usize = 1024;

/// The most of a server's first message kept when it speaks first (a banner); the rest is
/// read by the forward.
const SERVER_FIRST_BUFFER: usize = 4096;

/// A connection to the client's target, dialed while the client was silent: when the
/// server spoke first, its prefix holds what it sent.
pub type Speculative<U> = PrefixedIo<U>;

/// A speculative dial in progress.
pub type Dialing<U> = Pin<Box<dyn Future<Output = Result<U, BoxError>> + Send + 'static>>;

/// How a silent client's target is dialed, to see whether its server speaks first.
pub trait Speculate<T> {
    /// The connection a dial gives.
    type Io: AsyncRead + Unpin + Send + 'static;

    /// Dials `target`'s server; `None` when it must not be dialed before the client has
    /// spoken (no target, a client the policy refuses, a forwarding loop).
    fn dial(&self, target: &T) -> Option<Dialing<Self::Io>>;
}

/// Nothing is dialed before the client speaks.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoSpeculation;

impl<T> Speculate<T> for NoSpeculation {
    type Io = tokio::io::Empty;

    fn dial(&self, _: &T) -> Option<Dialing<tokio::io::Empty>> {
        None
    }
}

/// Reads once more into `buf`, within `capacity`; the bytes read (0 at EOF).
async fn read_more<I: AsyncRead + Unpin>(
    io: &mut I,
    buf: &mut BytesMut,
    capacity: usize,
) -> io::Result<usize> {
    let room = capacity - buf.len();
    buf.reserve(room.min(INITIAL_BUFFER));
    // `take` keeps the buffer within the capacity whatever `read_buf` is offered.
    io.take(room as u64).read_buf(buf).await
}

/// The protocol, once `buf` (after a read of `n` bytes) decides it.
fn decided(buf: &[u8], n: usize, capacity: usize) -> Option<Protocol> {
    match classify(buf) {
        Classification::Done(p) => Some(p),
        Classification::NeedMore if n == 0 => Some(Protocol::Opaque),
        Classification::NeedMore if buf.len() >= capacity => {
            Some(if buf.len() > MAX_UNDECIDED_NON_HTTP {
                Protocol::Http1
            } else {
                Protocol::Opaque
            })
        }
        Classification::NeedMore => None,
    }
}

/// Reads from `io` until the classifier decides, the buffer is full, the peer stops sending
/// (EOF) or the timeout expires, then returns the protocol and an I/O that replays every byte.
///
/// Only an HTTP/1 request line can still be undecided after the first few bytes, so a buffer
/// that fills up holds the start of a request line longer than the capacity (the HTTP/1
/// server's head limit): it is handed to the HTTP/1 server, which answers it as too large,
/// rather than forwarded opaquely or reset.
pub async fn detect<I>(io: I, params: DetectParams) -> Result<(Detected, PrefixedIo<I>), Error>
where
    I: AsyncRead + Unpin,
{
    type Never = fn() -> Option<Dialing<tokio::io::Empty>>;
    let (detected, io, _) = detect_speculating(io, params, None::<(Duration, Never)>).await?;
    Ok((detected, io))
}

/// Reads as [`detect`]; and when the client has sent nothing for `speculate`'s delay, dials
/// its server with `speculate`'s dial and waits on both. A server that speaks first (a
/// banner) ends detection at once: the connection is opaque (`server_first`), and the dialed
/// connection, with what the server sent, is returned to be forwarded over. When the client
/// speaks first, detection goes on as usual and a dialed connection is returned unread, for
/// the forward of an opaque connection to use (anything else drops it). A dial that fails or
/// a server that closes without a word only ends the speculation.
pub async fn detect_speculating<I, U, D>(
    mut io: I,
    params: DetectParams,
    speculate: Option<(Duration, D)>,
) -> Result<(Detected, PrefixedIo<I>, Option<Speculative<U>>), Error>
where
    I: AsyncRead + Unpin,
    U: AsyncRead + Unpin,
    D: FnOnce() -> Option<Dialing<U>>,
{
    let capacity = params.capacity;
    let deadline = tokio::time::Instant::now() + params.timeout;
    let mut buf = BytesMut::with_capacity(capacity.min(INITIAL_BUFFER));
    let mut charged = Charged {
        budget: params.budget.as_deref(),
        n: 0,
    };
    let mut upstream = None;
    let read = async {
        let mut first = None;
        if let Some((delay, dial)) = speculate {
            match first_bytes(&mut io, &mut buf, capacity, delay, dial, deadline).await {
                First::Server(server) => {
                    upstream = Some(server);
                    return Ok::<_, io::Error>(Some((Protocol::Opaque, true)));
                }
                First::TimedOut(server) => {
                    upstream = server;
                    return Ok(None);
                }
                First::Client(n, server) => {
                    upstream = server;
                    first = Some(n?);
                }
            }
        }
        loop {
            let n = match first.take() {
                Some(n) => n,
                None => read_more(&mut io, &mut buf, capacity).await?,
            };
            charged.to(buf.len())?;
            if let Some(p) = decided(&buf, n, capacity) {
                return Ok(Some((p, false)));
            }
        }
    };
    let timed_out = Detected {
        protocol: Protocol::Opaque,
        timed_out: true,
        server_first: false,
    };
    let detected = match tokio::time::timeout_at(deadline, read).await {
        Ok(res) => match res? {
            Some((protocol, server_first)) => Detected {
                protocol,
                timed_out: false,
                server_first,
            },
            None => timed_out,
        },
        Err(_) => timed_out,
    };
    Ok((detected, PrefixedIo::new(buf.freeze(), io), upstream))
}

/// How a wait for a client's first bytes ended (see [`first_bytes`]).
pub enum First<U> {
    /// The client sent bytes (the read's result: 0 at EOF); the server's connection, if it
    /// was up, comes unread.
    Client(io::Result<usize>, Option<Speculative<U>>),
    /// The client was silent and its server spoke first: the connection, with what it sent.
    Server(Speculative<U>),
    /// Neither spoke by the deadline; the server's connection, if it is up.
    TimedOut(Option<Speculative<U>>),
}

/// Reads a client's first bytes into `buf` (within `capacity`); when the client has been
/// silent for `delay`, dials its server with `dial` (if it gives a dial) and waits on both, so
/// that a server that speaks first is heard at once. Ends at `deadline` at the latest.
pub async fn first_bytes<I, U, D>(
    io: &mut I,
    buf: &mut BytesMut,
    capacity: usize,
    delay: Duration,
    dial: D,
    deadline: tokio::time::Instant,
) -> First<U>
where
    I: AsyncRead + Unpin,
    U: AsyncRead + Unpin,
    D: FnOnce() -> Option<Dialing<U>>,
{
    let silent = tokio::time::timeout_at(
        deadline.min(tokio::time::Instant::now() + delay),
        read_more(io, buf, capacity),
    );
    if let Ok(n) = silent.await {
        return First::Client(n, None);
    }
    if tokio::time::Instant::now() >= deadline {
        // The detect timeout is shorter than the delay: nothing is dialed.
        return First::TimedOut(None);
    }
    let unread = |s| PrefixedIo::new(Bytes::new(), s);
    match dial() {
        Some(dialing) => match race(io, buf, capacity, dialing, deadline).await {
            Race::ServerFirst(server) => First::Server(server),
            Race::ClientFirst(n, server) => First::Client(n, server.map(unread)),
            Race::TimedOut(server) => First::TimedOut(server.map(unread)),
        },
        None => match tokio::time::timeout_at(deadline, read_more(io, buf, capacity)).await {
            Ok(n) => First::Client(n, None),
            Err(_) => First::TimedOut(None),
        },
    }
}

/// How the wait on a silent client and its dialed server ended.
enum Race<U> {
    /// The server spoke first: the connection, with what it sent.
    ServerFirst(Speculative<U>),
    /// The client spoke (the read's result), with the server's connection if it was up.
    ClientFirst(io::Result<usize>, Option<U>),
    /// Neither spoke before the detect timeout: the server's connection, if it is up, is
    /// kept for the opaque forward.
    TimedOut(Option<U>),
}

/// Waits for the client's first bytes while `dialing` connects and the server is read.
async fn race<I, U>(
    io: &mut I,
    buf: &mut BytesMut,
    capacity: usize,
    dialing: Dialing<U>,
    deadline: tokio::time::Instant,
) -> Race<U>
where
    I: AsyncRead + Unpin,
    U: AsyncRead + Unpin,
{
    let mut dialing = Some(dialing);
    let mut server: Option<U> = None;
    let mut first = BytesMut::new();
    loop {
        let dial = async {
            match dialing.as_mut() {
                Some(d) => d.await,
                None => std::future::pending().await,
            }
        };
        let listen = async {
            match server.as_mut() {
                Some(s) => {
                    first.reserve(SERVER_FIRST_BUFFER);
                    s.take(SERVER_FIRST_BUFFER as u64)
                        .read_buf(&mut first)
                        .await
                }
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            // A finished dial is taken first (it decides nothing, and the connection may be
            // used); then the client's bytes win a tie with the server's: they are what a
            // client-first protocol is made of.
            biased;
            dialed = dial => {
                dialing = None;
                match dialed {
                    Ok(s) => server = Some(s),
                    Err(error) => {
                        tracing::debug!(%error, "the speculative connection failed");
                        // Still bounded by the deadline (the TLS step has no outer timeout).
                        let more = tokio::time::timeout_at(deadline, read_more(io, buf, capacity));
                        return match more.await {
                            Ok(n) => Race::ClientFirst(n, None),
                            Err(_) => Race::TimedOut(None),
                        };
                    }
                }
            }
            n = read_more(io, buf, capacity) => return Race::ClientFirst(n, server),
            heard = listen => match (heard, server.take()) {
                (Ok(n), Some(s)) if n > 0 => {
                    return Race::ServerFirst(PrefixedIo::new(first.freeze(), s));
                }
                _ => {
                    tracing::debug!("the speculatively dialed server closed without speaking");
                    // Still bounded by the deadline (the TLS step has no outer timeout).
                    let more = tokio::time::timeout_at(deadline, read_more(io, buf, capacity));
                    return match more.await {
                        Ok(n) => Race::ClientFirst(n, None),
                        Err(_) => Race::TimedOut(None),
                    };
                }
            },
            () = tokio::time::sleep_until(deadline) => return Race::TimedOut(server),
        }
    }
}

impl<F> DetectLayer<F> {
    /// A layer detecting with `params`, unless `known` names the target's protocol.
    pub fn new(params: DetectParams, known: F) -> Self {
        Self {
            params,
            known,
            timeouts: NoTimeouts,
            speculate: NoSpeculation,
            delay: None,
        }
    }
}

impl<F, G, P> DetectLayer<F, G, P> {
    /// Targets for which `timeout` gives one detect within it instead of the layer's (e.g. an
    /// inbound server's own `detect.timeout`).
    pub fn with_timeouts<H>(self, timeout: H) -> DetectLayer<F, Timeouts<H>, P> {
        DetectLayer {
            params: self.params,
            known: self.known,
            timeouts: Timeouts(timeout),
            speculate: self.speculate,
            delay: self.delay,
        }
    }

    /// A client that has sent nothing for `delay` (`None`: never) gets its server dialed
    /// with `speculate`, so that a server that speaks first (a banner) is heard at once
    /// rather than after the detect timeout (see [`detect_speculating`]).
    pub fn with_speculation<Q>(
        self,
        delay: Option<Duration>,
        speculate: Q,
    ) -> DetectLayer<F, G, Q> {
        DetectLayer {
            params: self.params,
            known: self.known,
            timeouts: self.timeouts,
            speculate,
            delay,
        }
    }
}

impl<S, F: Clone, G: Clone, P: Clone> tower::Layer<S> for DetectLayer<F, G, P> {
    type Service = Detect<S, F, G, P>;

    fn layer(&self, inner: S) -> Self::Service {
        Detect {
            params: self.params.clone(),
            known: self.known.clone(),
            timeouts: self.timeouts.clone(),
            speculate: self.speculate.clone(),
            delay: self.delay,
            inner,
        }
    }
}

impl<T, I, S, F, G, P> tower::Service<(T, I)> for Detect<S, F, G, P>
where
    T: Send + Sync + 'static,
    I: AsyncRead + Unpin + Send + 'static,
    F: Fn(&T) -> Option<Protocol>,
    G: TargetTimeout<T>,
    P: Speculate<T> + Clone + Send + 'static,
    S: tower::Service<DetectedConn<T, I, P::Io>> + Clone + Send + 'static,
    S::Error: From<Error>,
    S::Future: Send,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = ThenCall<S, DetectedConn<T, I, P::Io>, Error>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        // Readiness is checked on the clone that serves the connection.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, (target, io): (T, I)) -> Self::Future {
        let mut params = self.params.clone();
        if let Some(timeout) = self.timeouts.timeout(&target) {
            params.timeout = timeout;
        }
        let known = (self.known)(&target);
        let speculate = self
            .delay
            .filter(|_| known.is_none())
            .map(|delay| (delay, self.speculate.clone()));
        let detecting = async move {
            // Dialed only once the client has been silent for the delay.
            let t = &target;
            let speculate = speculate.map(|(delay, s)| (delay, move || s.dial(t)));
            let (detected, io, dialed) = match known {
                Some(protocol) => {
                    let detected = Detected {
                        protocol,
                        timed_out: false,
                        server_first: false,
                    };
                    (detected, PrefixedIo::new(Bytes::new(), io), None)
                }
                None => detect_speculating(io, params, speculate).await?,
            };
            Ok((target, detected, (io, dialed)))
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
        budget: None,
    };

    #[tokio::test]
    async fn a_long_request_line_is_charged_to_the_budget_while_detected() {
        let budget = HeadBudget::new(32 * 1024);
        let params = DetectParams {
            capacity: 400 * 1024,
            budget: Some(budget.clone()),
            ..PARAMS
        };
        // 40 KiB of a request line: 24 KiB beyond the free part, within the budget.
        let line = [b"GET /".as_slice(), &[b'a'; 40 * 1024]].concat();
        let (mut client, server) = tokio::io::duplex(1 << 20);
        client.write_all(&line).await.unwrap();
        client.write_all(b" HTTP/1.1\r\n").await.unwrap();
        let (d, _io) = detect(server, params.clone()).await.unwrap();
        assert_eq!(d.protocol, Protocol::Http1);
        assert_eq!(budget.used(), 0, "returned once detection is done");
        // Two such lines at once do not fit: the second connection's read fails.
        let (mut c1, s1) = tokio::io::duplex(1 << 20);
        let (mut c2, s2) = tokio::io::duplex(1 << 20);
        c1.write_all(&line).await.unwrap();
        let first = tokio::spawn(detect(s1, params.clone()));
        // The first holds its 24 KiB before the second sends (the budget reads it).
        for _ in 0..1000 {
            if budget.used() > 20 * 1024 {
                break;
            }
            tokio::task::yield_now().await;
        }
        assert!(budget.used() > 20 * 1024, "the first line is charged");
        c2.write_all(&line).await.unwrap();
        let Err(err) = detect(s2, params).await else {
            panic!("over the budget")
        };
        assert!(err.to_string().contains("budget"), "{err}");
        drop(c1);
        let (d, _) = first.await.unwrap().unwrap();
        assert_eq!(
            d.protocol,
            Protocol::Opaque,
            "the first ends at EOF, undecided"
        );
        assert_eq!(budget.used(), 0);
        drop(c2);
    }

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
                timed_out: true,
                server_first: false,
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

    type Inner<I> = DetectedConn<&'static str, I, tokio::io::Empty>;

    /// Passes on the target, the protocol and the replayed bytes.
    fn inner<I: Send + 'static>() -> impl tower::Service<
        Inner<I>,
        Response = (&'static str, Protocol, Vec<u8>),
        Error = Error,
        Future = impl Send,
    > + Clone
           + Send
           + 'static {
        tower::service_fn(|(t, d, (io, _)): Inner<I>| async move {
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

    /// Dials `addr` (a server on loopback), counting the connections made.
    #[derive(Clone)]
    struct DialLoopback {
        addr: std::net::SocketAddr,
        dials: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    }

    impl Speculate<&'static str> for DialLoopback {
        type Io = tokio::net::TcpStream;

        fn dial(&self, target: &&'static str) -> Option<Dialing<Self::Io>> {
            if *target == "refused" {
                return None;
            }
            let (addr, dials) = (self.addr, self.dials.clone());
            Some(Box::pin(async move {
                let io = tokio::net::TcpStream::connect(addr).await?;
                // Counted once connected: the dial's future is then ready.
                dials.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                Ok(io)
            }))
        }
    }

    /// A server on loopback that writes `banner` to each connection, if it has one, then
    /// echoes.
    async fn server(banner: Option<&'static [u8]>) -> DialLoopback {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = l.accept().await {
                tokio::spawn(async move {
                    if let Some(b) = banner {
                        s.write_all(b).await?;
                    }
                    let (mut r, mut w) = s.split();
                    tokio::io::copy(&mut r, &mut w).await
                });
            }
        });
        DialLoopback {
            addr,
            dials: Default::default(),
        }
    }

    type Speculated = DetectedConn<&'static str, tokio::io::DuplexStream, tokio::net::TcpStream>;

    /// The detected result and the dialed connection, if any, as the inner service gets them.
    async fn speculate(
        dial: DialLoopback,
        target: &'static str,
        server: tokio::io::DuplexStream,
    ) -> Speculated {
        use tower::{Layer, ServiceExt};
        let svc = DetectLayer::new(PARAMS, |_: &&str| None)
            .with_speculation(Some(Duration::from_millis(100)), dial)
            .layer(tower::service_fn(|c: Speculated| async move {
                Ok::<_, Error>(c)
            }));
        svc.oneshot((target, server)).await.unwrap()
    }

    #[tokio::test]
    async fn a_server_that_speaks_first_is_heard_after_the_delay() {
        let dial = server(Some(b"220 ready\r\n")).await;
        let (_client, io) = tokio::io::duplex(1024);
        let start = tokio::time::Instant::now();
        let (_, d, (io, dialed)) = speculate(dial.clone(), "t", io).await;
        assert!(start.elapsed() < PARAMS.timeout, "not the detect timeout");
        assert_eq!(
            d,
            Detected {
                protocol: Protocol::Opaque,
                timed_out: false,
                server_first: true
            }
        );
        assert!(io.prefix().is_empty());
        let mut dialed = dialed.expect("the dialed connection comes with it");
        assert_eq!(dialed.prefix(), b"220 ready\r\n");
        // The connection is the server's: it echoes after its banner (replayed first).
        dialed.write_all(b"hi").await.unwrap();
        let mut got = [0; 13];
        dialed.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"220 ready\r\nhi");
        assert_eq!(dial.dials.load(std::sync::atomic::Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_client_that_speaks_at_once_dials_nothing() {
        let dial = server(Some(b"banner")).await;
        let (mut client, io) = tokio::io::duplex(1024);
        client.write_all(b"GET / HTTP/1.1\r\n").await.unwrap();
        let (_, d, (io, dialed)) = speculate(dial.clone(), "t", io).await;
        assert_eq!(d.protocol, Protocol::Http1);
        assert!(!d.server_first);
        assert!(dialed.is_none());
        assert_eq!(io.prefix(), b"GET / HTTP/1.1\r\n");
        assert_eq!(dial.dials.load(std::sync::atomic::Ordering::SeqCst), 0);
    }

    #[tokio::test]
    async fn a_client_that_speaks_after_the_dial_gets_the_connection_unread() {
        // A server that waits for its client: the client speaks first, late.
        let dial = server(None).await;
        let (mut client, io) = tokio::io::duplex(1024);
        let speaking = tokio::spawn({
            let dial = dial.clone();
            async move {
                eventually_dialed(&dial).await;
                client.write_all(b"\x01opaque").await.unwrap();
                client
            }
        });
        let (_, d, (io, dialed)) = speculate(dial.clone(), "t", io).await;
        let _client = speaking.await.unwrap();
        assert_eq!(d.protocol, Protocol::Opaque);
        assert!(!d.server_first && !d.timed_out);
        assert_eq!(io.prefix(), b"\x01opaque");
        // Dialed, connected, unread: an opaque forward may use it.
        let mut dialed = dialed.expect("the dialed connection");
        assert!(dialed.prefix().is_empty());
        dialed.write_all(b"x").await.unwrap();
        let mut got = [0; 1];
        dialed.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"x");
    }

    /// Waits (boundedly) until `dial` has dialed once.
    async fn eventually_dialed(dial: &DialLoopback) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while dial.dials.load(std::sync::atomic::Ordering::SeqCst) == 0 {
            assert!(tokio::time::Instant::now() < deadline, "never dialed");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    #[tokio::test]
    async fn a_target_that_must_not_be_dialed_waits_for_its_client() {
        let dial = server(Some(b"banner")).await;
        let (mut client, io) = tokio::io::duplex(1024);
        let speaking = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(300)).await;
            client
                .write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
                .await
                .unwrap();
            client
        });
        let (_, d, (_, dialed)) = speculate(dial.clone(), "refused", io).await;
        let _client = speaking.await.unwrap();
        assert_eq!(d.protocol, Protocol::Http2);
        assert!(dialed.is_none());
        assert_eq!(dial.dials.load(std::sync::atomic::Ordering::SeqCst), 0);
    }

    #[tokio::test]
    async fn a_server_that_closes_silently_ends_the_speculation() {
        // A listener that accepts and closes at once.
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((s, _)) = l.accept().await {
                drop(s);
            }
        });
        let dial = DialLoopback {
            addr,
            dials: Default::default(),
        };
        let (mut client, io) = tokio::io::duplex(1024);
        let speaking = tokio::spawn({
            let dial = dial.clone();
            async move {
                eventually_dialed(&dial).await;
                client.write_all(b"GET / HTTP/1.1\r\n").await.unwrap();
                client
            }
        });
        let (_, d, (_, dialed)) = speculate(dial, "t", io).await;
        let _client = speaking.await.unwrap();
        assert_eq!(d.protocol, Protocol::Http1, "still the client's protocol");
        assert!(!d.server_first);
        // The closed connection is not handed on (or, if the client won the race to the
        // close, it is handed on closed: an HTTP client never uses it).
        if let Some(mut c) = dialed {
            let mut b = [0; 1];
            assert_eq!(c.read(&mut b).await.unwrap_or(0), 0);
        }
    }

    #[tokio::test]
    async fn a_timeout_with_both_silent_keeps_the_connection() {
        // A server that waits for its client, and a client that never speaks.
        let dial = server(None).await;
        let (_client, io) = tokio::io::duplex(1024);
        let params = DetectParams {
            timeout: Duration::from_millis(400),
            ..PARAMS
        };
        let dialing = {
            let dial = dial.clone();
            move || dial.dial(&"t")
        };
        let (d, _, dialed) =
            detect_speculating(io, params, Some((Duration::from_millis(50), dialing)))
                .await
                .unwrap();
        assert!(d.timed_out && !d.server_first);
        assert_eq!(d.protocol, Protocol::Opaque);
        // Kept for the opaque forward, which then needs no second dial.
        let mut dialed = dialed.expect("the dialed connection");
        dialed.write_all(b"late").await.unwrap();
        let mut got = [0; 4];
        dialed.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"late");
        assert_eq!(dial.dials.load(std::sync::atomic::Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_failed_dial_still_ends_at_the_deadline() {
        // A dial that fails (as one the policy refuses does), and a client that never speaks:
        // `first_bytes` itself (the TLS step has no outer timeout) ends at the deadline.
        let (_client, mut io) = tokio::io::duplex(64);
        let mut buf = BytesMut::new();
        let deadline = tokio::time::Instant::now() + Duration::from_millis(300);
        let failing = || -> Option<Dialing<tokio::net::TcpStream>> {
            Some(Box::pin(async { Err("refused".into()) }))
        };
        let waited = tokio::time::timeout(
            Duration::from_secs(5),
            first_bytes(
                &mut io,
                &mut buf,
                1024,
                Duration::from_millis(50),
                failing,
                deadline,
            ),
        )
        .await
        .expect("ends at the deadline, not never");
        assert!(matches!(waited, First::TimedOut(None)));
    }
}
