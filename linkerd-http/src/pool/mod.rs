//! The HTTP client: one connection pool per proxy direction, shared by every worker thread.
//!
//! Connections are keyed by target address, HTTP version and, for a meshed endpoint, the
//! identity its proxy must prove (and its opaque-transport port). HTTP/1 connections are
//! reused one request at a time (keep-alive) and returned to the pool when the response body
//! ends ([`h1`]); an HTTP/2 endpoint gets multiplexed connections, the first dialed by a single
//! task while other requests wait for it, more when all carry enough streams ([`h2`]).
//!
//! The pool dials through a connector service (the proxy's [`linkerd_connect::Connector`]), and
//! ages connections on `tokio::time`, so its behaviour is tested under paused time.

mod body;
mod h1;
mod h2;
mod metrics;
mod service;
#[cfg(test)]
pub(crate) mod tests;

pub use self::body::PoolBody;
pub use self::metrics::PoolMetrics;
pub use self::service::EndpointClient;

use self::metrics::{PoolHandles, PoolLabels};
use crate::Error;
use bytes::Bytes;
use hyper::{
    body::{Body, Incoming},
    Request, Response,
};
use linkerd_connect::{Meshed, SessionProtocol, Target};
use linkerd_metrics::GaugeGuard;
use linkerd_proxy_transport::Direction;
use parking_lot::{Mutex, RwLock};
use std::{
    collections::{HashMap, VecDeque},
    future::Future,
    net::SocketAddr,
    sync::{Arc, Weak},
    time::Duration,
};
use tokio::{
    io::{AsyncRead, AsyncWrite},
    time::Instant,
};
use tower::ServiceExt;

/// How the client dials and keeps connections.
#[derive(Clone, Debug)]
pub struct ClientConfig {
    /// Connect timeout.
    pub connect_timeout: Duration,
    /// An idle HTTP/1 connection (or an HTTP/2 one without requests) is closed after this.
    pub idle_timeout: Duration,
    /// At most this many idle HTTP/1 connections are kept per target.
    pub max_idle_per_endpoint: usize,
    /// HTTP/2 PING interval to detect dead peers; `None` disables keep-alive pings.
    pub h2_keep_alive_interval: Option<Duration>,
    /// How long a PING may go unanswered before the connection is closed.
    pub h2_keep_alive_timeout: Duration,
    /// At most this many HTTP/2 connections per endpoint (so streams can be spread over the
    /// worker threads instead of all being served by one).
    pub h2_max_connections: usize,
    /// When every HTTP/2 connection of an endpoint carries this many streams, another one is
    /// dialed (up to `h2_max_connections`); requests meanwhile use the least loaded one.
    pub h2_streams_per_connection: usize,
    /// HTTP/2 settings for the connections this client opens.
    pub h2: H2Settings,
    /// A request body must arrive within this from when the proxy first waits for it
    /// (`LINKERD2_PROXY_HTTP_REQUEST_BODY_TIMEOUT`; `None`: no limit); HTTP/1 bodies and
    /// HTTP/2 ones with a `content-length` (not HTTP/2 streams).
    pub request_body_timeout: Option<Duration>,
    /// An endpoint must send response headers within this of the request
    /// (`LINKERD2_PROXY_HTTP_RESPONSE_HEADERS_TIMEOUT`; `None`: no limit); not for gRPC.
    pub response_headers_timeout: Option<Duration>,
    /// An HTTP/2 request body is kept for sending the request again, should the peer refuse
    /// it unprocessed, while it is at most this many bytes
    /// (`LINKERD2_PROXY_HTTP2_RESEND_MAX_REQUEST_BYTES`): a larger one is sent once.
    pub h2_resend_max_request_bytes: u64,
}

/// HTTP/2 settings shared by the proxy's clients and servers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct H2Settings {
    /// `SETTINGS_INITIAL_WINDOW_SIZE`: each stream's flow-control window.
    pub initial_stream_window_size: u32,
    /// The connection's flow-control window.
    pub initial_connection_window_size: u32,
    /// `SETTINGS_MAX_FRAME_SIZE`: the largest frame accepted.
    pub max_frame_size: u32,
    /// `SETTINGS_MAX_HEADER_LIST_SIZE`: the largest header list accepted.
    pub max_header_list_size: u32,
}

impl Default for H2Settings {
    fn default() -> Self {
        Self {
            // linkerd2-proxy's (and RFC 9113's) stream window; its connection window.
            initial_stream_window_size: 65_535,
            initial_connection_window_size: 1024 * 1024,
            max_frame_size: 16 * 1024,
            max_header_list_size: 400 * 1024,
        }
    }
}

/// The HTTP version spoken to a target.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Version {
    /// HTTP/1.x: one request at a time per connection.
    Http1,
    /// HTTP/2: multiplexed streams.
    Http2,
}

/// A request body the pool can send (what hyper's clients take), and, for a request an HTTP/2
/// peer refused unprocessed, send again.
pub trait RequestBody:
    Body<Data = Bytes, Error: Into<Box<dyn std::error::Error + Send + Sync>>> + Send + Unpin + 'static
{
    /// The body again from its start, for another attempt; `None` when it can't be.
    fn replay(&self) -> Option<Self>
    where
        Self: Sized;

    /// No more attempts will be made: what was kept for one can go.
    fn seal(&self) {}
}

impl RequestBody for crate::ForwardBody {
    fn replay(&self) -> Option<Self> {
        crate::ForwardBody::replay(self)
    }

    fn seal(&self) {
        crate::ForwardBody::seal(self)
    }
}

impl RequestBody for http_body_util::Empty<Bytes> {
    fn replay(&self) -> Option<Self> {
        Some(Self::new())
    }
}

impl RequestBody for http_body_util::Full<Bytes> {
    fn replay(&self) -> Option<Self> {
        Some(self.clone())
    }
}

/// What the pool dials endpoints with: a connector service (the proxy's
/// [`linkerd_connect::Connector`]) that answers a [`Target`] with a connection.
pub trait Dial:
    tower::Service<
        Target,
        Response: AsyncRead + AsyncWrite + Unpin + Send + 'static,
        Error: Into<Error>,
        Future: Send,
    > + Clone
    + Send
    + Sync
    + 'static
{
}

impl<D> Dial for D where
    D: tower::Service<
            Target,
            Response: AsyncRead + AsyncWrite + Unpin + Send + 'static,
            Error: Into<Error>,
            Future: Send,
        > + Clone
        + Send
        + Sync
        + 'static
{
}

/// A pooling HTTP client, dialing with `D`. Cloning shares the pool.
pub struct Client<B, D> {
    shared: Arc<Shared<B, D>>,
}

/// The pool of connections to one endpoint in one version: look it up once per target and
/// keep it.
pub struct Pool<B, D> {
    state: Arc<PoolState<B>>,
    shared: Arc<Shared<B, D>>,
}

struct Shared<B, D> {
    config: ClientConfig,
    direction: Direction,
    metrics: PoolMetrics,
    /// Whether meshed endpoints are dialed with mTLS (the proxy has an identity); without,
    /// they are pooled, and labelled, as plain endpoints.
    mtls: bool,
    dial: D,
    /// The origin of the HTTP/2 connections' last-used stamps.
    epoch: Instant,
    pools: RwLock<HashMap<PoolKey, Arc<PoolState<B>>>>,
}

type PoolKey = (SocketAddr, Version, Option<Meshed>);

/// One endpoint's connections in one version.
struct PoolState<B> {
    target: Target,
    version: Version,
    metrics: PoolHandles,
    idle_timeout: Duration,
    max_idle: usize,
    /// Idle HTTP/1 connections, oldest first.
    idle: Mutex<VecDeque<h1::Idle<B>>>,
    /// The HTTP/2 connections, shared by every request to the endpoint.
    h2: RwLock<Vec<Arc<h2::H2Conn<B>>>>,
    /// Held by the one task dialing an HTTP/2 connection.
    h2_dial: Arc<tokio::sync::Mutex<()>>,
}

/// A response body; for HTTP/1, how to return its connection to the pool; for HTTP/2, its
/// stream's place in the connection's count.
type Sent<B> = (Incoming, Option<h1::Release<B>>, Option<h2::Stream>);

// === impl Client ===

impl<B, D> Clone for Client<B, D> {
    fn clone(&self) -> Self {
        Self {
            shared: self.shared.clone(),
        }
    }
}

impl<B: RequestBody, D: Dial> Client<B, D> {
    /// A client for `direction` that dials with `dial`; with `mtls`, meshed endpoints are
    /// reached over mTLS (and pooled apart from plain ones).
    ///
    /// Must be called inside a Tokio runtime: it spawns the task that closes idle connections.
    pub fn new(
        config: ClientConfig,
        direction: Direction,
        metrics: PoolMetrics,
        dial: D,
        mtls: bool,
    ) -> Self {
        let shared = Arc::new(Shared {
            config,
            direction,
            metrics,
            mtls,
            dial,
            epoch: Instant::now(),
            pools: RwLock::new(HashMap::new()),
        });
        tokio::spawn(sweep_idle(Arc::downgrade(&shared)));
        Self { shared }
    }

    /// The pool for `addr` spoken to in `version`, over mTLS when `meshed` (and the client
    /// dials meshed endpoints with mTLS).
    pub fn pool(&self, addr: SocketAddr, version: Version, meshed: Option<Meshed>) -> Pool<B, D> {
        let meshed = meshed.filter(|_| self.shared.mtls);
        let key = (addr, version, meshed.clone());
        // The read guard must be dropped before taking the write lock.
        let existing = self.shared.pools.read().get(&key).cloned();
        let state = match existing {
            Some(p) => p,
            None => self
                .shared
                .pools
                .write()
                .entry(key)
                .or_insert_with(|| Arc::new(self.new_pool(addr, version, meshed)))
                .clone(),
        };
        Pool {
            state,
            shared: self.shared.clone(),
        }
    }

    fn new_pool(&self, addr: SocketAddr, version: Version, meshed: Option<Meshed>) -> PoolState<B> {
        let labels = PoolLabels {
            direction: self.shared.direction,
            addr,
            version,
            server_id: meshed.as_ref().map(|m| m.server_id.clone()),
        };
        let protocol = match version {
            Version::Http1 => SessionProtocol::Http1,
            Version::Http2 => SessionProtocol::Http2,
        };
        let config = &self.shared.config;
        PoolState {
            target: Target {
                addr,
                meshed,
                protocol: Some(protocol),
            },
            version,
            metrics: self.shared.metrics.handles(&labels),
            idle_timeout: config.idle_timeout,
            max_idle: config.max_idle_per_endpoint,
            idle: Mutex::new(VecDeque::new()),
            h2: RwLock::new(Vec::new()),
            h2_dial: Arc::new(tokio::sync::Mutex::new(())),
        }
    }
}

/// Every idle timeout, closes idle connections older than it and forgets empty pools.
async fn sweep_idle<B, D>(shared: Weak<Shared<B, D>>) {
    let period = match shared.upgrade() {
        Some(s) => s.config.idle_timeout.max(Duration::from_millis(100)),
        None => return,
    };
    loop {
        tokio::time::sleep(period).await;
        let Some(shared) = shared.upgrade() else {
            return;
        };
        let now = shared.now_ms();
        shared.pools.write().retain(|_, pool| {
            let (idle, h2) = pool.sweep(now);
            // Keep pools that still hold connections or are held by a service.
            idle || h2 || Arc::strong_count(pool) > 1
        });
    }
}

impl<B, D> Shared<B, D> {
    /// Milliseconds since the client was made: HTTP/2 connections' last-used stamps.
    fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }
}

// === impl Pool ===

impl<B, D> Clone for Pool<B, D> {
    fn clone(&self) -> Self {
        Self {
            state: self.state.clone(),
            shared: self.shared.clone(),
        }
    }
}

impl<B: RequestBody, D: Dial> Pool<B, D> {
    /// The target address.
    pub fn addr(&self) -> SocketAddr {
        self.state.target.addr
    }

    /// Sends `req` on a pooled connection, dialing one when none is free.
    ///
    /// A request that a stale pooled connection could not take (closed by the peer while idle)
    /// is retried once on a new connection; it was never sent, so this is safe.
    ///
    /// The future owns what it needs (`'static`), and is no larger than the version's own
    /// send: it is boxed once per request, and small enough for the allocator's fast path.
    pub fn send(
        &self,
        req: Request<B>,
    ) -> impl Future<Output = Result<Response<PoolBody<B>>, Error>> + Send + 'static {
        use futures_util::{future::Either, FutureExt};
        let in_flight = self.state.metrics.in_flight.guard();
        let sent = match self.state.version {
            Version::Http1 => Either::Left(self.clone().send_h1(req)),
            Version::Http2 => Either::Right(self.clone().send_h2(req)),
        };
        sent.map(move |rsp| {
            rsp.map(|r| {
                r.map(|(inner, release, stream)| PoolBody::new(inner, release, in_flight, stream))
            })
        })
    }

    /// Dials a connection to the pool's target.
    async fn dial(&self) -> Result<D::Response, Error> {
        let dial = self.shared.dial.clone();
        dial.oneshot(self.state.target.clone())
            .await
            .map_err(Into::into)
    }

    /// Counts a newly opened connection; it counts as open while the guard lives.
    fn opened(&self) -> GaugeGuard {
        let m = &self.state.metrics;
        m.opened.incr();
        m.open.guard()
    }
}

// === impl PoolState ===

impl<B> PoolState<B> {
    /// Drops expired and closed connections; returns whether idle HTTP/1 and HTTP/2
    /// connections remain.
    fn sweep(&self, now_ms: u64) -> (bool, bool) {
        let mut idle = self.idle.lock();
        idle.retain(|i| i.since.elapsed() < self.idle_timeout && !i.tx.is_closed());
        let idle_ms = u64::try_from(self.idle_timeout.as_millis()).unwrap_or(u64::MAX);
        // HTTP/2: closed connections go, and so do idle ones (their last sender is dropped, so
        // hyper closes them).
        let mut h2 = self.h2.write();
        h2.retain(|c| !c.tx.is_closed() && c.busy(now_ms, idle_ms));
        (!idle.is_empty(), !h2.is_empty())
    }
}
