//! The pool under paused time, against in-process servers reached over in-memory pipes.

use super::*;
use http_body_util::{BodyExt, Empty};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use linkerd_metrics::Registry;
use std::sync::atomic::{AtomicUsize, Ordering};
use tokio::{io::DuplexStream, sync::watch};

const IDLE: Duration = Duration::from_secs(3);

fn config() -> ClientConfig {
    ClientConfig {
        connect_timeout: Duration::from_secs(1),
        idle_timeout: IDLE,
        max_idle_per_endpoint: 10,
        h2_keep_alive_interval: None,
        h2_keep_alive_timeout: Duration::from_secs(3),
        h2_max_connections: 3,
        h2_streams_per_connection: 2,
        h2: H2Settings::default(),
        request_body_timeout: None,
        response_headers_timeout: None,
        h2_resend_max_request_bytes: 65536,
    }
}

/// A dialer whose every dial reaches a new in-process server (HTTP/1 and HTTP/2) that answers
/// with the number of its connection (and, in `x-version`, the request's version), once
/// `release` is true.
#[derive(Clone)]
pub(crate) struct TestDial {
    dials: Arc<AtomicUsize>,
    /// Requests the servers have received.
    seen: Arc<AtomicUsize>,
    /// How long a dial takes.
    delay: Duration,
    release: watch::Receiver<bool>,
}

impl TestDial {
    pub(crate) fn new(delay: Duration) -> (Self, watch::Sender<bool>) {
        let (tx, release) = watch::channel(true);
        let dial = Self {
            dials: Arc::default(),
            seen: Arc::default(),
            delay,
            release,
        };
        (dial, tx)
    }

    pub(crate) fn dials(&self) -> usize {
        self.dials.load(Ordering::SeqCst)
    }
}

impl tower::Service<Target> for TestDial {
    type Response = DuplexStream;
    type Error = Error;
    type Future =
        std::pin::Pin<Box<dyn std::future::Future<Output = Result<DuplexStream, Error>> + Send>>;

    fn poll_ready(&mut self, _: &mut std::task::Context<'_>) -> std::task::Poll<Result<(), Error>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: Target) -> Self::Future {
        let conn = self.dials.fetch_add(1, Ordering::SeqCst) + 1;
        let (client, server) = tokio::io::duplex(64 * 1024);
        let (seen, release, delay) = (self.seen.clone(), self.release.clone(), self.delay);
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                let (seen, mut release) = (seen.clone(), release.clone());
                async move {
                    seen.fetch_add(1, Ordering::SeqCst);
                    let _ = release.wait_for(|r| *r).await;
                    let body = http_body_util::Full::new(Bytes::from(conn.to_string()));
                    let mut rsp = Response::new(body);
                    let version = format!("{:?}", req.version());
                    rsp.headers_mut()
                        .insert("x-version", version.parse().unwrap());
                    Ok::<_, std::convert::Infallible>(rsp)
                }
            });
            let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(server), svc)
                .await;
        });
        Box::pin(async move {
            tokio::time::sleep(delay).await;
            Ok(client)
        })
    }
}

/// A client of `B` request bodies dialing with `dial`.
pub(crate) fn client<B: RequestBody>(dial: &TestDial, reg: &mut Registry) -> Client<B, TestDial> {
    let metrics = PoolMetrics::register(reg);
    Client::new(config(), Direction::Outbound, metrics, dial.clone(), false)
}

fn addr() -> SocketAddr {
    "10.0.0.1:8080".parse().unwrap()
}

fn request(version: Version) -> Request<Empty<Bytes>> {
    let version = match version {
        Version::Http1 => http::Version::HTTP_11,
        Version::Http2 => http::Version::HTTP_2,
    };
    Request::builder()
        .uri("http://web.ns.svc.cluster.local:8080/")
        .version(version)
        .body(Empty::new())
        .unwrap()
}

/// Sends a request and reads its body: the number of the connection that served it.
async fn get(pool: &Pool<Empty<Bytes>, TestDial>) -> usize {
    let version = pool.state.version;
    let rsp = pool.send(request(version)).await.unwrap();
    let body = rsp.into_body().collect().await.unwrap().to_bytes();
    std::str::from_utf8(&body).unwrap().parse().unwrap()
}

/// Lets spawned tasks (connections, the sweep) run until `done`.
async fn until(mut done: impl FnMut() -> bool) {
    for _ in 0..1000 {
        if done() {
            return;
        }
        tokio::task::yield_now().await;
    }
    panic!("condition not reached");
}

fn open_connections(reg: &Registry) -> f64 {
    reg.encode()
        .lines()
        .filter(|l| l.starts_with("http_pool_connections_open{"))
        .filter_map(|l| l.rsplit_once(' ').and_then(|(_, v)| v.parse::<f64>().ok()))
        .sum()
}

#[tokio::test(start_paused = true)]
async fn an_idle_http1_connection_is_reused_until_it_expires() {
    let (dial, _release) = TestDial::new(Duration::ZERO);
    let mut reg = Registry::default();
    let pool = client(&dial, &mut reg).pool(addr(), Version::Http1, None);
    assert_eq!(get(&pool).await, 1);
    assert_eq!(
        get(&pool).await,
        1,
        "the idle connection is checked out again"
    );
    assert_eq!(dial.dials(), 1);

    tokio::time::advance(IDLE + Duration::from_millis(1)).await;
    assert_eq!(get(&pool).await, 2, "an expired connection is not reused");
    assert_eq!(dial.dials(), 2);
    until(|| open_connections(&reg) == 1.0).await;

    // The sweep closes what expires while nobody asks.
    tokio::time::advance(2 * IDLE).await;
    until(|| open_connections(&reg) == 0.0).await;
}

#[tokio::test(start_paused = true)]
async fn checkout_takes_the_most_recently_released_connection() {
    let (dial, release) = TestDial::new(Duration::ZERO);
    let mut reg = Registry::default();
    let pool = client(&dial, &mut reg).pool(addr(), Version::Http1, None);
    // Two requests at once need two connections.
    release.send_replace(false);
    let (a, b) = (pool.clone(), pool.clone());
    let first = tokio::spawn(async move { a.send(request(Version::Http1)).await.unwrap() });
    let second = tokio::spawn(async move { b.send(request(Version::Http1)).await.unwrap() });
    until(|| dial.seen.load(Ordering::SeqCst) == 2).await;
    release.send_replace(true);
    let (first, second) = (first.await.unwrap(), second.await.unwrap());
    assert_eq!(dial.dials(), 2);
    // Reading a body releases its connection: `second`'s is released last, and is warmer.
    let read = |rsp: Response<PoolBody<Empty<Bytes>>>| async move {
        let body = rsp.into_body().collect().await.unwrap().to_bytes();
        std::str::from_utf8(&body)
            .unwrap()
            .parse::<usize>()
            .unwrap()
    };
    let released_first = read(first).await;
    let released_last = read(second).await;
    assert_ne!(released_first, released_last);
    assert_eq!(
        get(&pool).await,
        released_last,
        "the last connection released"
    );
    assert_eq!(dial.dials(), 2);
}

#[tokio::test(start_paused = true)]
async fn concurrent_http2_requests_share_one_dial() {
    let (dial, _release) = TestDial::new(Duration::from_millis(100));
    let mut reg = Registry::default();
    let pool = client(&dial, &mut reg).pool(addr(), Version::Http2, None);
    let requests: Vec<_> = (0..10)
        .map(|_| {
            let pool = pool.clone();
            tokio::spawn(async move { get(&pool).await })
        })
        .collect();
    for r in requests {
        assert_eq!(r.await.unwrap(), 1, "every stream on the one connection");
    }
    assert_eq!(dial.dials(), 1, "one dial while the others waited");
}

#[tokio::test(start_paused = true)]
async fn busy_http2_connections_spread_up_to_the_maximum_then_idle_out() {
    let (dial, release) = TestDial::new(Duration::ZERO);
    let mut reg = Registry::default();
    let pool = client(&dial, &mut reg).pool(addr(), Version::Http2, None);
    release.send_replace(false);
    let mut held = Vec::new();
    for n in 1..=12 {
        let p = pool.clone();
        held.push(tokio::spawn(async move { get(&p).await }));
        until(|| dial.seen.load(Ordering::SeqCst) == n).await;
    }
    // Two streams per connection start another, up to three.
    assert_eq!(dial.dials(), 3);
    release.send_replace(true);
    let mut served = [0usize; 4];
    for h in held {
        served[h.await.unwrap()] += 1;
    }
    assert!(
        served[1] >= 2 && served[2] >= 1 && served[3] >= 1,
        "{served:?}"
    );
    assert_eq!(open_connections(&reg), 3.0);

    // Without streams, they close after the idle timeout.
    tokio::time::advance(2 * IDLE).await;
    until(|| open_connections(&reg) == 0.0).await;
    assert_eq!(
        get(&pool).await,
        4,
        "a new connection after the old ones idled out"
    );
}

/// The one allocation every request makes is the pool's send future (with the proxy's request
/// body, and, for HTTP/2, the copy of the request's head kept for re-sending a refused
/// request): at most 1.5 KiB, so it stays in a small size class of the allocator's per-thread
/// cache (jemalloc's, the proxy's default, caches classes up to 32 KiB).
#[tokio::test]
async fn the_boxed_send_future_stays_small() {
    let (dial, _release) = TestDial::new(Duration::ZERO);
    let mut reg = Registry::default();
    let client = client::<crate::ForwardBody>(&dial, &mut reg);
    for version in [Version::Http1, Version::Http2] {
        let pool = client.pool(addr(), version, None);
        let size = size_of_send(&|req| pool.send(req));
        eprintln!("{version:?}: {size} bytes");
        assert!(size <= 1536, "{version:?}: {size} bytes");
    }
}

/// The size of the future `send` returns for a request of the proxy's body type (which only a
/// connection makes, so no request is sent).
fn size_of_send<F>(_: &dyn Fn(Request<crate::ForwardBody>) -> F) -> usize {
    std::mem::size_of::<F>()
}

/// A dialer whose every dial reaches a new in-process HTTP/2 server; the servers refuse the
/// first `refuse` streams they get in all (`REFUSED_STREAM`) and answer the others with
/// `<connection number> <request body length>`.
#[derive(Clone)]
struct RefusingDial {
    dials: Arc<AtomicUsize>,
    refuse: Arc<AtomicUsize>,
}

impl tower::Service<Target> for RefusingDial {
    type Response = DuplexStream;
    type Error = Error;
    type Future = futures_util::future::Ready<Result<DuplexStream, Error>>;

    fn poll_ready(&mut self, _: &mut std::task::Context<'_>) -> std::task::Poll<Result<(), Error>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: Target) -> Self::Future {
        let conn = self.dials.fetch_add(1, Ordering::SeqCst) + 1;
        let (client, server) = tokio::io::duplex(64 * 1024);
        let refuse = self.refuse.clone();
        tokio::spawn(async move {
            let Ok(mut h2) = ::h2::server::handshake(server).await else {
                return;
            };
            while let Some(Ok((req, mut respond))) = h2.accept().await {
                let left =
                    refuse.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1));
                if left.is_ok() {
                    respond.send_reset(::h2::Reason::REFUSED_STREAM);
                    continue;
                }
                tokio::spawn(async move {
                    let mut body = req.into_body();
                    let mut n = 0;
                    while let Some(Ok(chunk)) = body.data().await {
                        n += chunk.len();
                        let _ = body.flow_control().release_capacity(chunk.len());
                    }
                    let rsp = Response::new(());
                    if let Ok(mut tx) = respond.send_response(rsp, false) {
                        let _ = tx.send_data(Bytes::from(format!("{conn} {n}")), true);
                    }
                });
            }
        });
        futures_util::future::ready(Ok(client))
    }
}

fn refusing(
    refuse: usize,
) -> (
    Pool<http_body_util::Full<Bytes>, RefusingDial>,
    RefusingDial,
) {
    let dial = RefusingDial {
        dials: Arc::default(),
        refuse: Arc::new(AtomicUsize::new(refuse)),
    };
    let metrics = PoolMetrics::register(&mut Registry::default());
    let client = Client::new(config(), Direction::Outbound, metrics, dial.clone(), false);
    (client.pool(addr(), Version::Http2, None), dial)
}

fn post(body: &'static str) -> Request<http_body_util::Full<Bytes>> {
    Request::post("http://web.test/")
        .version(http::Version::HTTP_2)
        .body(http_body_util::Full::new(Bytes::from_static(
            body.as_bytes(),
        )))
        .unwrap()
}

#[tokio::test(start_paused = true)]
async fn a_refused_request_is_sent_again_on_another_connection() {
    let (pool, dial) = refusing(1);
    let rsp = pool.send(post("hello")).await.expect("sent again");
    let body = rsp.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(
        body, "2 5",
        "answered on a second connection, with its whole body"
    );
    assert_eq!(dial.dials.load(Ordering::SeqCst), 2);
    assert_eq!(pool.state.metrics.resent.value(), 1);
    // The next request takes a connection that serves it.
    let rsp = pool.send(post("hi")).await.unwrap();
    let body = rsp.into_body().collect().await.unwrap().to_bytes();
    assert!(body.ends_with(b" 2"), "{body:?}");
}

#[tokio::test(start_paused = true)]
async fn a_request_is_sent_again_only_once() {
    let (pool, dial) = refusing(usize::MAX);
    let err = pool.send(post("hello")).await.err().expect("refused twice");
    assert_eq!(err.status(), http::StatusCode::BAD_GATEWAY, "{err}");
    assert_eq!(
        dial.dials.load(Ordering::SeqCst),
        2,
        "one more connection, no more"
    );
    assert_eq!(pool.state.metrics.resent.value(), 1);
}
