//! The HTTP client: one connection pool per process direction, shared by every worker thread.
//!
//! Connections are keyed by target address, HTTP version and, for a meshed endpoint, the
//! identity its proxy must prove (and its opaque-transport port). HTTP/1 connections are
//! reused one request at a time (keep-alive) and returned to the pool when the response body
//! ends; an HTTP/2 target gets one multiplexed connection, dialed by a single task while other
//! requests wait for it.

use crate::Error;
use bytes::Bytes;
use hyper::{
    body::{Body, Incoming},
    client::conn::{http1, http2},
    Request, Response,
};
use hyper_util::rt::{TokioIo, TokioTimer};
use linkerd_metrics::{Counter, EncodeLabels, Family, Gauge, GaugeGuard, LabelWriter, Registry};
use linkerd_proxy_transport::{
    connect, Direction, Metered, NoTlsReason, Peer, TcpMetrics, TlsLabel,
};
use linkerd_tls::{ClientTls, Id, SessionProtocol, TlsConfigs, TransportHeader};
use parking_lot::{Mutex, RwLock};
use std::{
    collections::{HashMap, VecDeque},
    net::SocketAddr,
    pin::Pin,
    sync::atomic::{AtomicU64, AtomicUsize, Ordering},
    sync::{Arc, Weak},
    task::{Context, Poll},
    time::{Duration, Instant},
};
use tokio::{io::AsyncWriteExt, net::TcpStream};
use tokio_util::either::Either;

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
}

/// HTTP/2 settings shared by the proxy's clients and servers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct H2Settings {
    pub initial_stream_window_size: u32,
    pub initial_connection_window_size: u32,
    pub max_frame_size: u32,
    pub max_header_list_size: u32,
}

impl Default for H2Settings {
    fn default() -> Self {
        Self {
            initial_stream_window_size: 1024 * 1024,
            initial_connection_window_size: 4 * 1024 * 1024,
            max_frame_size: 16 * 1024,
            max_header_list_size: 400 * 1024,
        }
    }
}

/// The HTTP version spoken to a target.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Version {
    Http1,
    Http2,
}

/// How to reach a meshed endpoint: mutual TLS with its proxy.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Meshed {
    /// The identity the endpoint's proxy must prove.
    pub server_id: Id,
    /// Dial this port of the endpoint's proxy with the opaque-transport header naming the
    /// endpoint's port, instead of the endpoint's port itself.
    pub opaque_port: Option<u16>,
}

/// Pool metrics, per (direction, endpoint, version, server identity):
/// `http_pool_connections_open`, `http_pool_connections_opened_total` and
/// `http_pool_requests_in_flight` (HTTP/2 streams, or HTTP/1 exchanges).
#[derive(Clone)]
pub struct PoolMetrics {
    open: Arc<Family<PoolLabels, Gauge>>,
    opened: Arc<Family<PoolLabels, Counter>>,
    in_flight: Arc<Family<PoolLabels, Gauge>>,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct PoolLabels {
    direction: Direction,
    addr: SocketAddr,
    version: Version,
    server_id: Option<Id>,
}

/// One pool's metric handles, looked up when the pool is made.
struct PoolHandles {
    open: Gauge,
    opened: Counter,
    in_flight: Gauge,
}

impl PoolMetrics {
    /// Creates and registers the families.
    pub fn register(reg: &mut Registry) -> Self {
        let m = Self {
            open: Arc::new(Family::new(
                "http_pool_connections_open",
                "Connections the HTTP client pool holds open, per endpoint.",
            )),
            opened: Arc::new(Family::new(
                "http_pool_connections_opened_total",
                "Connections the HTTP client pool has opened, per endpoint.",
            )),
            in_flight: Arc::new(Family::new(
                "http_pool_requests_in_flight",
                "Requests (HTTP/2 streams, or HTTP/1 exchanges) in flight on the pool's connections.",
            )),
        };
        reg.register(m.open.clone());
        reg.register(m.opened.clone());
        reg.register(m.in_flight.clone());
        m
    }
}

impl EncodeLabels for PoolLabels {
    fn encode(&self, w: &mut LabelWriter<'_>) {
        let version = match self.version {
            Version::Http1 => "1",
            Version::Http2 => "2",
        };
        w.label("direction", self.direction.as_str())
            .label("target_addr", self.addr)
            .label("http_version", version);
        if let Some(id) = &self.server_id {
            w.label("server_id", id);
        }
    }
}

/// A connection to an endpoint: plain TCP, or mTLS with its proxy.
pub type ClientIo = Either<Metered<TcpStream>, ClientTls<Metered<TcpStream>>>;

/// A pooling HTTP client. Cloning shares the pool.
pub struct Client<B> {
    shared: Arc<Shared<B>>,
}

/// The pool for one (target, version): look it up once per target and keep it.
pub struct Endpoint<B> {
    pool: Arc<EndpointPool<B>>,
    shared: Arc<Shared<B>>,
}

struct Shared<B> {
    config: ClientConfig,
    direction: Direction,
    tcp: TcpMetrics,
    metrics: PoolMetrics,
    /// Present when the proxy has an identity: meshed endpoints are dialed with mTLS.
    tls: Option<TlsConfigs>,
    endpoints: RwLock<HashMap<EndpointKey, Arc<EndpointPool<B>>>>,
}

type EndpointKey = (SocketAddr, Version, Option<Meshed>);

struct EndpointPool<B> {
    addr: SocketAddr,
    version: Version,
    meshed: Option<Meshed>,
    metrics: PoolHandles,
    /// Idle HTTP/1 connections, oldest first.
    idle: Mutex<VecDeque<Idle<B>>>,
    /// The HTTP/2 connections, shared by every request to the endpoint.
    h2: RwLock<Vec<Arc<H2Conn<B>>>>,
    /// Held by the one task dialing an HTTP/2 connection.
    h2_dial: Arc<tokio::sync::Mutex<()>>,
}

/// One multiplexed HTTP/2 connection of an endpoint's pool.
struct H2Conn<B> {
    tx: http2::SendRequest<B>,
    /// Streams open on it: a request until its response body ends.
    streams: Arc<AtomicUsize>,
    /// When it last had a stream opened (ms since `epoch()`), for the idle timeout.
    last_used_ms: AtomicU64,
}

/// Counts an open stream until dropped.
struct Stream(Arc<AtomicUsize>);

impl Drop for Stream {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A process-wide origin for cheap timestamps.
fn epoch() -> Instant {
    static EPOCH: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

fn now_ms() -> u64 {
    u64::try_from(epoch().elapsed().as_millis()).unwrap_or(u64::MAX)
}

/// What the idle pool has for a request.
enum Checkout<B> {
    Ready(http1::SendRequest<B>),
    /// Pooled, but hyper has not yet marked it ready for another request.
    Pending(http1::SendRequest<B>),
    None,
}

struct Idle<B> {
    tx: http1::SendRequest<B>,
    since: Instant,
}

/// A response body that returns its HTTP/1 connection to the pool once it has been read.
pub struct PoolBody<B> {
    inner: Incoming,
    release: Option<Release<B>>,
    _in_flight: GaugeGuard,
    _stream: Option<Stream>,
}

/// A response body; for HTTP/1, how to return its connection to the pool; for HTTP/2, its
/// stream's place in the connection's count.
type Sent<B> = (Incoming, Option<Release<B>>, Option<Stream>);

struct Release<B> {
    tx: http1::SendRequest<B>,
    pool: Arc<EndpointPool<B>>,
    config: Arc<Shared<B>>,
}

// === impl Client ===

impl<B> Clone for Client<B> {
    fn clone(&self) -> Self {
        Self {
            shared: self.shared.clone(),
        }
    }
}

impl<B> Client<B>
where
    B: Body<Data = Bytes> + Send + Unpin + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    /// A client whose connections count as `direction`/`dst` in the TCP metrics; with `tls`,
    /// meshed endpoints are reached over mTLS.
    ///
    /// Must be called inside a Tokio runtime: it spawns the task that closes idle connections.
    pub fn new(
        config: ClientConfig,
        direction: Direction,
        tcp: TcpMetrics,
        metrics: PoolMetrics,
        tls: Option<TlsConfigs>,
    ) -> Self {
        let shared = Arc::new(Shared {
            config,
            direction,
            tcp,
            metrics,
            tls,
            endpoints: RwLock::new(HashMap::new()),
        });
        tokio::spawn(sweep_idle(Arc::downgrade(&shared)));
        Self { shared }
    }

    /// The TLS configs meshed endpoints are dialed with, when the proxy has an identity.
    pub fn tls(&self) -> Option<&TlsConfigs> {
        self.shared.tls.as_ref()
    }

    /// The pool for `addr` spoken to in `version`, over mTLS when `meshed` (and the proxy has
    /// an identity; without one, meshed endpoints are reached in plaintext).
    pub fn endpoint(
        &self,
        addr: SocketAddr,
        version: Version,
        meshed: Option<Meshed>,
    ) -> Endpoint<B> {
        let meshed = meshed.filter(|_| self.shared.tls.is_some());
        let key = (addr, version, meshed.clone());
        // The read guard must be dropped before taking the write lock.
        let existing = self.shared.endpoints.read().get(&key).cloned();
        let pool = match existing {
            Some(p) => p,
            None => self
                .shared
                .endpoints
                .write()
                .entry(key)
                .or_insert_with(|| {
                    let labels = PoolLabels {
                        direction: self.shared.direction,
                        addr,
                        version,
                        server_id: meshed.as_ref().map(|m| m.server_id.clone()),
                    };
                    let m = &self.shared.metrics;
                    Arc::new(EndpointPool {
                        addr,
                        version,
                        meshed,
                        metrics: PoolHandles {
                            open: m.open.get(&labels),
                            opened: m.opened.get(&labels),
                            in_flight: m.in_flight.get(&labels),
                        },
                        idle: Mutex::new(VecDeque::new()),
                        h2: RwLock::new(Vec::new()),
                        h2_dial: Arc::new(tokio::sync::Mutex::new(())),
                    })
                })
                .clone(),
        };
        Endpoint {
            pool,
            shared: self.shared.clone(),
        }
    }
}

/// Every idle timeout, closes idle connections older than it and forgets empty endpoints.
async fn sweep_idle<B>(shared: Weak<Shared<B>>) {
    let period = match shared.upgrade() {
        Some(s) => s.config.idle_timeout.max(Duration::from_millis(100)),
        None => return,
    };
    loop {
        tokio::time::sleep(period).await;
        let Some(shared) = shared.upgrade() else {
            return;
        };
        let timeout = shared.config.idle_timeout;
        let (now, idle_ms) = (
            now_ms(),
            u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX),
        );
        shared.endpoints.write().retain(|_, pool| {
            let mut idle = pool.idle.lock();
            idle.retain(|i| i.since.elapsed() < timeout && !i.tx.is_closed());
            // HTTP/2: closed connections go, and so do idle ones (their last sender is dropped,
            // so hyper closes them).
            let mut h2 = pool.h2.write();
            h2.retain(|c| {
                let busy = c.streams.load(Ordering::Relaxed) > 0
                    || now.saturating_sub(c.last_used_ms.load(Ordering::Relaxed)) < idle_ms;
                !c.tx.is_closed() && busy
            });
            // Keep pools that still hold connections or are held by a service.
            !idle.is_empty() || !h2.is_empty() || Arc::strong_count(pool) > 1
        });
    }
}

// === impl Endpoint ===

impl<B> Clone for Endpoint<B> {
    fn clone(&self) -> Self {
        Self {
            pool: self.pool.clone(),
            shared: self.shared.clone(),
        }
    }
}

impl<B> Endpoint<B>
where
    B: Body<Data = Bytes> + Send + Unpin + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    /// The target address.
    pub fn addr(&self) -> SocketAddr {
        self.pool.addr
    }

    /// The same target's pool in `version` (same transport).
    pub fn with_version(&self, version: Version) -> Self {
        Client {
            shared: self.shared.clone(),
        }
        .endpoint(self.pool.addr, version, self.pool.meshed.clone())
    }

    /// Sends `req` on a pooled connection, dialing one when none is free.
    ///
    /// A request that a stale pooled connection could not take (closed by the peer while idle)
    /// is retried once on a new connection; it was never sent, so this is safe.
    pub async fn send(&self, req: Request<B>) -> Result<Response<PoolBody<B>>, Error> {
        let in_flight = self.pool.metrics.in_flight.guard();
        let rsp = match self.pool.version {
            Version::Http1 => self.send_h1(req).await,
            Version::Http2 => self.send_h2(req).await,
        };
        rsp.map(|r| {
            r.map(|(inner, release, stream)| PoolBody {
                inner,
                release,
                _in_flight: in_flight,
                _stream: stream,
            })
        })
    }

    async fn send_h1(&self, mut req: Request<B>) -> Result<Response<Sent<B>>, Error> {
        let addr = self.pool.addr;
        let connect = req.method() == http::Method::CONNECT;
        loop {
            let (mut tx, reused) = self.connection_h1().await?;
            match tx.try_send_request(req).await {
                Ok(rsp) => {
                    // A connection that switched protocols is no longer HTTP: never pool it.
                    let upgraded = rsp.status() == http::StatusCode::SWITCHING_PROTOCOLS
                        || connect && rsp.status().is_success();
                    let release = (!upgraded).then(|| Release {
                        tx,
                        pool: self.pool.clone(),
                        config: self.shared.clone(),
                    });
                    return Ok(rsp.map(|inner| (inner, release, None)));
                }
                Err(mut e) => match e.take_message() {
                    Some(r) if reused => {
                        tracing::debug!(%addr, error = %e.error(), "pooled connection was stale; retrying");
                        req = r;
                    }
                    _ => {
                        return Err(Error::Upstream {
                            addr,
                            source: e.into_error(),
                        })
                    }
                },
            }
        }
    }

    /// A connection for one request: an idle one that is ready, else the first of a
    /// just-released one becoming ready and a new one being dialed (so a request never waits
    /// longer than a dial would take). Returns whether the connection was reused.
    async fn connection_h1(&self) -> Result<(http1::SendRequest<B>, bool), Error> {
        match self.checkout_h1() {
            Checkout::Ready(tx) => Ok((tx, true)),
            // Boxed: see `h2_conn`.
            Checkout::None => Ok((Box::pin(self.dial_h1()).await?, false)),
            Checkout::Pending(mut tx) => {
                let mut dial = Box::pin(self.dial_h1());
                tokio::select! {
                    biased;
                    res = tx.ready() => match res {
                        Ok(()) => Ok((tx, true)),
                        Err(_) => Ok((dial.await?, false)),
                    },
                    res = &mut dial => {
                        // Still finishing its last exchange: keep it for a later request.
                        put_idle(&self.pool, &self.shared.config, tx);
                        Ok((res?, false))
                    }
                }
            }
        }
    }

    /// The most recently used idle connection that is ready (or, failing that, the most recent
    /// one still finishing its last exchange).
    fn checkout_h1(&self) -> Checkout<B> {
        let timeout = self.shared.config.idle_timeout;
        let mut idle = self.pool.idle.lock();
        // Expired connections are the oldest, at the front.
        while idle.front().is_some_and(|i| i.since.elapsed() >= timeout) {
            idle.pop_front();
        }
        idle.retain(|i| !i.tx.is_closed());
        if let Some(i) = idle.iter().rposition(|i| i.tx.is_ready()) {
            if let Some(i) = idle.remove(i) {
                return Checkout::Ready(i.tx);
            }
        }
        match idle.pop_back() {
            Some(i) => Checkout::Pending(i.tx),
            None => Checkout::None,
        }
    }

    async fn dial_h1(&self) -> Result<http1::SendRequest<B>, Error> {
        let addr = self.pool.addr;
        let io = self.dial().await?;
        let (mut tx, conn) = http1::Builder::new()
            .handshake(TokioIo::new(io))
            .await
            .map_err(|source| Error::Handshake { addr, source })?;
        let open = self.opened();
        tokio::spawn(async move {
            let _open = open;
            if let Err(error) = conn.with_upgrades().await {
                tracing::debug!(%addr, %error, "HTTP/1 client connection failed");
            }
        });
        tx.ready()
            .await
            .map_err(|source| Error::Handshake { addr, source })?;
        Ok(tx)
    }

    async fn send_h2(&self, mut req: Request<B>) -> Result<Response<Sent<B>>, Error> {
        let addr = self.pool.addr;
        let mut retried = false;
        loop {
            let conn = self.h2_conn().await?;
            conn.streams.fetch_add(1, Ordering::Relaxed);
            let stream = Stream(conn.streams.clone());
            conn.last_used_ms.store(now_ms(), Ordering::Relaxed);
            let mut tx = conn.tx.clone();
            match tx.try_send_request(req).await {
                Ok(rsp) => return Ok(rsp.map(|inner| (inner, None, Some(stream)))),
                Err(mut e) => match e.take_message() {
                    Some(r) if !retried && tx.is_closed() => {
                        tracing::debug!(%addr, error = %e.error(), "HTTP/2 connection closed; redialing");
                        self.pool.h2.write().retain(|c| !c.tx.is_closed());
                        retried = true;
                        req = r;
                    }
                    _ => {
                        return Err(Error::Upstream {
                            addr,
                            source: e.into_error(),
                        })
                    }
                },
            }
        }
    }

    /// The least loaded live HTTP/2 connection, and whether all are busy enough (and fewer
    /// than the maximum) that another should be dialed.
    fn h2_pick(&self) -> (Option<Arc<H2Conn<B>>>, bool) {
        let cfg = &self.shared.config;
        let conns = self.pool.h2.read();
        let best = conns
            .iter()
            .filter(|c| !c.tx.is_closed())
            .min_by_key(|c| c.streams.load(Ordering::Relaxed))
            .cloned();
        let spread = best.as_ref().is_some_and(|c| {
            c.streams.load(Ordering::Relaxed) >= cfg.h2_streams_per_connection
                && conns.len() < cfg.h2_max_connections
        });
        (best, spread)
    }

    /// A connection for one stream. With none up, one task dials while the others wait for
    /// it; when all are busy, another is dialed in the background while this request uses the
    /// least loaded one.
    async fn h2_conn(&self) -> Result<Arc<H2Conn<B>>, Error> {
        match self.h2_pick() {
            (Some(conn), false) => Ok(conn),
            (Some(conn), true) => {
                if let Ok(dialing) = self.pool.h2_dial.clone().try_lock_owned() {
                    let this = self.clone();
                    tokio::spawn(async move {
                        if let Err(error) = this.dial_h2().await {
                            tracing::debug!(%error, "failed to open another HTTP/2 connection");
                        }
                        drop(dialing);
                    });
                }
                Ok(conn)
            }
            (None, _) => {
                let _dialing = self.pool.h2_dial.lock().await;
                if let (Some(conn), _) = self.h2_pick() {
                    return Ok(conn);
                }
                // Boxed: dialing (TCP, TLS, handshake) is rare, and its large state would
                // otherwise be part of every request's future.
                Box::pin(self.dial_h2()).await
            }
        }
    }

    /// Dials an HTTP/2 connection and adds it to the pool.
    async fn dial_h2(&self) -> Result<Arc<H2Conn<B>>, Error> {
        let addr = self.pool.addr;
        let io = self.dial().await?;
        let cfg = &self.shared.config;
        // The connection driver and each request's response future run in the connection's
        // task (see `conn_tasks`).
        let (exec, tasks) = crate::conn_tasks::conn_executor();
        let mut builder = http2::Builder::new(exec);
        builder
            .timer(TokioTimer::new())
            .initial_stream_window_size(cfg.h2.initial_stream_window_size)
            .initial_connection_window_size(cfg.h2.initial_connection_window_size)
            .max_frame_size(cfg.h2.max_frame_size)
            .max_header_list_size(cfg.h2.max_header_list_size);
        if let Some(interval) = cfg.h2_keep_alive_interval {
            builder
                .keep_alive_interval(interval)
                .keep_alive_timeout(cfg.h2_keep_alive_timeout)
                .keep_alive_while_idle(true);
        }
        let (tx, conn) = builder
            .handshake(TokioIo::new(io))
            .await
            .map_err(|source| Error::Handshake { addr, source })?;
        let open = self.opened();
        tokio::spawn(async move {
            let _open = open;
            if let Err(error) = tasks.drive(conn).await {
                tracing::debug!(%addr, %error, "HTTP/2 client connection failed");
            }
        });
        let conn = Arc::new(H2Conn {
            tx,
            streams: Arc::new(AtomicUsize::new(0)),
            last_used_ms: AtomicU64::new(now_ms()),
        });
        let mut conns = self.pool.h2.write();
        conns.retain(|c| !c.tx.is_closed());
        conns.push(conn.clone());
        tracing::debug!(%addr, connections = conns.len(), "HTTP/2 connection added");
        Ok(conn)
    }

    /// Counts a newly opened connection; it counts as open while the guard lives.
    fn opened(&self) -> GaugeGuard {
        let m = &self.pool.metrics;
        m.opened.incr();
        m.open.guard()
    }

    async fn dial(&self) -> Result<ClientIo, Error> {
        let protocol = match self.pool.version {
            Version::Http1 => SessionProtocol::Http1,
            Version::Http2 => SessionProtocol::Http2,
        };
        let shared = &self.shared;
        connect_endpoint(
            self.pool.addr,
            self.pool.meshed.as_ref(),
            shared.tls.as_ref(),
            Some(protocol),
            shared.config.connect_timeout,
            &shared.tcp,
            shared.direction,
        )
        .await
    }
}

/// Connects to an endpoint: plain TCP, or mTLS with its proxy when `meshed` and the proxy has
/// `tls` (to its opaque-transport port, with a header naming the endpoint's port and
/// `protocol`). Meshed connections wait (a connect timeout at most) for the first certificate.
pub async fn connect_endpoint(
    addr: SocketAddr,
    meshed: Option<&Meshed>,
    tls: Option<&TlsConfigs>,
    protocol: Option<SessionProtocol>,
    connect_timeout: Duration,
    tcp: &TcpMetrics,
    direction: Direction,
) -> Result<ClientIo, Error> {
    let (meshed, tls) = match (meshed, tls) {
        (Some(m), Some(tls)) => (m, tls),
        (_, tls) => {
            let reason = match tls {
                _ if addr.ip().is_loopback() => NoTlsReason::Loopback,
                Some(_) => NoTlsReason::NotProvidedByServiceDiscovery,
                None => NoTlsReason::Disabled,
            };
            let socket = connect(addr, connect_timeout).await?;
            let metrics = tcp.open(direction, Peer::Dst, addr, TlsLabel::NoIdentity(reason));
            tracing::debug!(%addr, "connected");
            return Ok(Either::Left(Metered::new(socket, metrics)));
        }
    };
    if !tls.credentials().is_ready() {
        tokio::time::timeout(connect_timeout, tls.credentials().ready())
            .await
            .map_err(|_| Error::NoCertificate(connect_timeout))?;
    }
    let dial_addr = SocketAddr::new(addr.ip(), meshed.opaque_port.unwrap_or(addr.port()));
    let socket = connect(dial_addr, connect_timeout).await?;
    let metrics = tcp.open(
        direction,
        Peer::Dst,
        addr,
        TlsLabel::Tls {
            client_id: None,
            server_id: Some(meshed.server_id.as_str().into()),
        },
    );
    let io = Metered::new(socket, metrics);
    let transport = meshed.opaque_port.is_some();
    let mut io = linkerd_tls::connect(io, tls, &meshed.server_id, transport, connect_timeout)
        .await
        .map_err(|source| Error::Tls { addr, source })?;
    if transport {
        let header = TransportHeader {
            port: addr.port(),
            name: None,
            protocol,
        };
        io.write_all(&header.encode())
            .await
            .map_err(|source| Error::TransportHeader { addr, source })?;
    }
    tracing::debug!(%addr, %dial_addr, server_id = %meshed.server_id, "connected with mTLS");
    Ok(Either::Right(io))
}

// === impl PoolBody ===

impl<B> PoolBody<B> {
    fn release(&mut self) {
        if let Some(Release { tx, pool, config }) = self.release.take() {
            if !tx.is_closed() {
                put_idle(&pool, &config.config, tx);
            }
        }
    }
}

fn put_idle<B>(pool: &EndpointPool<B>, config: &ClientConfig, tx: http1::SendRequest<B>) {
    let mut idle = pool.idle.lock();
    idle.push_back(Idle {
        tx,
        since: Instant::now(),
    });
    while idle.len() > config.max_idle_per_endpoint {
        idle.pop_front();
    }
}

impl<B: Unpin> Body for PoolBody<B> {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<hyper::body::Frame<Bytes>, hyper::Error>>> {
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

    fn size_hint(&self) -> hyper::body::SizeHint {
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
