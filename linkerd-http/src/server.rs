//! Serving one accepted connection with hyper, HTTP/1 or HTTP/2 as detected, each request
//! through a `tower` request stack.

use crate::{
    head_budget::{Budgeted, ConnHead, HeadDone},
    stall::{ConnStalls, StreamStall},
    ProxyBody, Version,
};
use hyper::{body::Incoming, Request, Response};
use hyper_util::rt::{TokioIo, TokioTimer};
use std::{
    convert::Infallible,
    future::Future,
    net::IpAddr,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};
use tower::{util::Oneshot, ServiceExt};
use tracing::instrument::{Instrument, Instrumented};

/// Server-side limits.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    /// An HTTP/1 client must send a request's headers within this time.
    pub h1_header_read_timeout: Duration,
    /// The largest HTTP/1 request head accepted (bytes); larger ones get 431.
    pub h1_max_buf_size: usize,
    /// The bytes of HTTP/1 request heads beyond their first 16 KiB that all connections may
    /// buffer at once (`None`: unbounded).
    pub h1_head_budget: Option<Arc<crate::HeadBudget>>,
    /// HTTP/2 PING interval; `None` disables keep-alive pings.
    pub h2_keep_alive_interval: Option<Duration>,
    /// How long a PING may go unanswered.
    pub h2_keep_alive_timeout: Duration,
    /// The most concurrent streams a client may open on one HTTP/2 connection.
    pub h2_max_concurrent_streams: u32,
    /// Window, frame and header-list sizes.
    pub h2: crate::H2Settings,
    /// BDP-based flow control, which overrides the configured windows.
    pub h2_adaptive_window: bool,
    /// How many streams a client may open and reset before the server has accepted them.
    pub h2_max_pending_accept_reset_streams: Option<usize>,
    /// The most bytes buffered for sending on one stream.
    pub h2_max_send_buf_size: Option<usize>,
    /// Control frames (PING, SETTINGS, PRIORITY, tiny WINDOW_UPDATE, empty DATA) a client may
    /// send per second before its connection is closed; `None`: unlimited.
    pub h2_control_frames: Option<crate::ControlFrameLimit>,
    /// Bounds on HTTP/2 streams whose client does not take the response.
    pub h2_send_stall: Arc<crate::SendStallConfig>,
    /// An HTTP/2 connection with no open stream for this long is closed (GOAWAY); `None`:
    /// never.
    pub h2_idle_timeout: Option<Duration>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            h1_header_read_timeout: Duration::from_secs(30),
            h1_max_buf_size: 400 * 1024,
            h1_head_budget: Some(crate::HeadBudget::new(64 << 20)),
            h2_keep_alive_interval: Some(Duration::from_secs(10)),
            h2_keep_alive_timeout: Duration::from_secs(20),
            h2_max_concurrent_streams: 1000,
            h2: crate::H2Settings::default(),
            h2_adaptive_window: false,
            h2_max_pending_accept_reset_streams: None,
            h2_max_send_buf_size: None,
            h2_control_frames: None,
            h2_send_stall: Default::default(),
            h2_idle_timeout: Some(Duration::from_secs(600)),
        }
    }
}

/// What [`HttpServer`] serves a connection's requests with: a `tower` service over hyper's
/// requests whose failures are already responses, cloned for each request.
pub trait RequestStack:
    tower::Service<
        Request<Incoming>,
        Response = Response<ProxyBody>,
        Error = Infallible,
        Future: Send + 'static,
    > + Clone
    + Send
    + 'static
{
}

impl<S> RequestStack for S where
    S: tower::Service<
            Request<Incoming>,
            Response = Response<ProxyBody>,
            Error = Infallible,
            Future: Send + 'static,
        > + Clone
        + Send
        + 'static
{
}

/// A `Service` over a detected connection `(target, version, io)`: serves its requests with
/// hyper, each through the request stack `new_stack` builds for the connection's target, until
/// the client is done or the proxy drains (in-flight requests finish; HTTP/2 gets GOAWAY).
///
/// A connection that ends with an HTTP error (a reset, a malformed request) is logged at
/// debug: it is the client's business, not a failure of the proxy.
#[derive(Clone)]
pub struct HttpServer<N> {
    config: Arc<ServerConfig>,
    drain: CancellationToken,
    new_stack: N,
}

impl<N> HttpServer<N> {
    /// Serves with `config` until `drain` is cancelled, each connection's requests through
    /// `new_stack(target)`.
    pub fn new(config: ServerConfig, drain: CancellationToken, new_stack: N) -> Self {
        Self {
            config: Arc::new(config),
            drain,
            new_stack,
        }
    }
}

/// What a connection's target says of its client, for the bounds that apply per client.
pub trait ClientIp {
    /// The client's address, where known.
    fn client_ip(&self) -> Option<IpAddr>;
}

impl ClientIp for () {
    fn client_ip(&self) -> Option<IpAddr> {
        None
    }
}

impl<T, I, N, S> tower::Service<(T, Version, I)> for HttpServer<N>
where
    T: ClientIp,
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    N: Fn(T) -> S,
    S: RequestStack,
{
    type Response = ();
    type Error = Infallible;
    /// The connection's own future (no box): it is polled at every wake-up of the connection.
    type Future = futures_util::future::Map<
        Serving<I, S>,
        fn(Result<(), hyper::Error>) -> Result<(), Infallible>,
    >;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, (target, version, io): (T, Version, I)) -> Self::Future {
        let client = target.client_ip();
        let stack = (self.new_stack)(target);
        let serving = serve(io, version, &self.config, stack, self.drain.clone(), client);
        let logged: fn(Result<(), hyper::Error>) -> Result<(), Infallible> = |res| {
            if let Err(error) = res {
                tracing::debug!(%error, "HTTP connection closed with an error");
            }
            Ok(())
        };
        futures_util::FutureExt::map(serving, logged)
    }
}

/// Serves HTTP on `io` with the request stack `svc` until the client is done; once `drain`
/// is cancelled, in-flight requests finish and the connection then closes (HTTP/1: after the
/// current response; HTTP/2: GOAWAY). `client` is the client's address, where known.
pub fn serve<I, S>(
    io: I,
    version: Version,
    config: &ServerConfig,
    svc: S,
    drain: CancellationToken,
    client: Option<IpAddr>,
) -> Serving<I, S>
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    S: RequestStack,
{
    let mut idle = None;
    let conn = match version {
        Version::Http2 => {
            let io = TokioIo::new(crate::FrameGuard::new(io, config.h2_control_frames));
            // Streams run in this connection's task (see `conn_tasks`), each watched for
            // send stalls when bounds are on.
            let (mut exec, tasks) = crate::conn_tasks::conn_executor();
            let stalls = (config.h2_send_stall.enabled() || config.h2_idle_timeout.is_some())
                .then(|| ConnStalls::new(config.h2_send_stall.clone(), client));
            idle = config
                .h2_idle_timeout
                .zip(stalls.clone())
                .map(|(timeout, streams)| Idle {
                    streams,
                    timeout,
                    timer: Box::pin(tokio::time::sleep(timeout)),
                    armed: false,
                });
            if let Some(stalls) = &stalls {
                exec = exec.with_stalls(stalls.clone());
            }
            let svc = PerRequest {
                svc,
                stalls,
                head: None,
            };
            let mut b = hyper::server::conn::http2::Builder::new(exec);
            b.timer(TokioTimer::new())
                .max_concurrent_streams(config.h2_max_concurrent_streams)
                .initial_stream_window_size(config.h2.initial_stream_window_size)
                .initial_connection_window_size(config.h2.initial_connection_window_size)
                .max_frame_size(config.h2.max_frame_size)
                .max_header_list_size(config.h2.max_header_list_size)
                .keep_alive_interval(config.h2_keep_alive_interval)
                .keep_alive_timeout(config.h2_keep_alive_timeout)
                .adaptive_window(config.h2_adaptive_window);
            if let Some(n) = config.h2_max_pending_accept_reset_streams {
                b.max_pending_accept_reset_streams(n);
            }
            if let Some(n) = config.h2_max_send_buf_size {
                b.max_send_buf_size(n);
            }
            Conn::Http2 {
                conn: tasks.drive(b.serve_connection(io, svc)),
            }
        }
        Version::Http1 => {
            let head = config.h1_head_budget.clone().map(ConnHead::new);
            let svc = PerRequest {
                svc,
                stalls: None,
                head: head.clone(),
            };
            Conn::Http1 {
                conn: hyper::server::conn::http1::Builder::new()
                    .timer(TokioTimer::new())
                    .header_read_timeout(config.h1_header_read_timeout)
                    .max_buf_size(config.h1_max_buf_size)
                    .serve_connection(TokioIo::new(Budgeted::new(io, head)), svc)
                    .with_upgrades(),
            }
        }
    };
    Serving {
        conn,
        drained: drain.cancelled_owned(),
        draining: false,
        idle,
    }
}

/// An HTTP/2 connection's idle timeout: armed whenever it has no open stream.
struct Idle {
    streams: Arc<ConnStalls>,
    timeout: Duration,
    timer: Pin<Box<tokio::time::Sleep>>,
    armed: bool,
}

impl Idle {
    /// Whether the connection has had no open stream for the timeout.
    fn poll_expired(&mut self, cx: &mut Context<'_>) -> bool {
        if !self.streams.idle() {
            self.armed = false;
            return false;
        }
        if !self.armed {
            self.armed = true;
            let deadline = tokio::time::Instant::now() + self.timeout;
            self.timer.as_mut().reset(deadline);
        }
        self.timer.as_mut().poll(cx).is_ready()
    }
}

type H1Conn<I, S> =
    hyper::server::conn::http1::UpgradeableConnection<TokioIo<Budgeted<I>>, PerRequest<S>>;
type H2Conn<I, S> = crate::conn_tasks::WithConnTasks<
    hyper::server::conn::http2::Connection<
        TokioIo<crate::FrameGuard<I>>,
        PerRequest<S>,
        crate::conn_tasks::ConnExecutor,
    >,
>;

pin_project_lite::pin_project! {
    /// One connection being served (see [`serve`]).
    pub struct Serving<I, S: RequestStack> {
        #[pin]
        conn: Conn<I, S>,
        #[pin]
        drained: WaitForCancellationFutureOwned,
        draining: bool,
        idle: Option<Idle>,
    }
}

pin_project_lite::pin_project! {
    #[project = ConnProj]
    enum Conn<I, S: RequestStack> {
        Http1 { #[pin] conn: H1Conn<I, S> },
        Http2 { #[pin] conn: H2Conn<I, S> },
    }
}

impl<I, S> Future for Serving<I, S>
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    S: RequestStack,
{
    type Output = Result<(), hyper::Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        if !*this.draining && this.drained.as_mut().poll(cx).is_ready() {
            *this.draining = true;
            match this.conn.as_mut().project() {
                ConnProj::Http1 { conn } => conn.graceful_shutdown(),
                ConnProj::Http2 { conn } => conn.get_mut().conn().graceful_shutdown(),
            }
        }
        match this.conn.project() {
            ConnProj::Http1 { conn } => conn.poll(cx),
            ConnProj::Http2 { mut conn } => {
                let out = conn.as_mut().poll(cx);
                if out.is_pending() && !*this.draining {
                    if let Some(idle) = this.idle.as_mut() {
                        if idle.poll_expired(cx) {
                            tracing::debug!(timeout = ?idle.timeout, "closing an idle HTTP/2 connection");
                            *this.draining = true;
                            conn.get_mut().conn().graceful_shutdown();
                            // The GOAWAY is written on the next poll.
                            cx.waker().wake_by_ref();
                        }
                    }
                }
                out
            }
        }
    }
}

/// hyper calls a service by reference, once per request; a `tower` service is called after
/// it is ready, by `&mut`. Each request gets its own clone of the connection's stack, driven
/// to readiness and called, in a span of its own.
#[derive(Clone, Debug)]
struct PerRequest<S> {
    svc: S,
    // An HTTP/2 connection's send-stall bounds.
    stalls: Option<Arc<ConnStalls>>,
    // An HTTP/1 connection's share of the head budget.
    head: Option<Arc<ConnHead>>,
}

/// The future hyper holds for each request.
pub type RequestFuture<S> = Watched<Instrumented<Oneshot<S, Request<Incoming>>>>;

pin_project_lite::pin_project! {
    /// A request's future whose response body marks the HTTP/2 stream it is sent on, for the
    /// stream's send-stall watch (see `stall`).
    pub struct Watched<F> {
        #[pin]
        inner: F,
        stall: Option<Arc<StreamStall>>,
        // HTTP/1: the connection reads no head until the response ends.
        head: Option<HeadDone>,
        connect: bool,
    }
}

impl<F> Future for Watched<F>
where
    F: Future<Output = Result<Response<ProxyBody>, Infallible>>,
{
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let mut rsp = std::task::ready!(this.inner.poll(cx));
        if let Ok(rsp) = &mut rsp {
            if let Some(stall) = this.stall.take() {
                rsp.body_mut().watch(stall);
            }
            if let Some(done) = this.head.take() {
                let status = rsp.status();
                if status == http::StatusCode::SWITCHING_PROTOCOLS
                    || (*this.connect && status.is_success())
                {
                    // What follows on the connection is not HTTP/1.
                    done.upgraded();
                } else {
                    rsp.body_mut().hold(done);
                }
            }
        }
        Poll::Ready(rsp)
    }
}

impl<S> hyper::service::Service<Request<Incoming>> for PerRequest<S>
where
    S: tower::Service<Request<Incoming>, Response = Response<ProxyBody>, Error = Infallible>
        + Clone,
{
    type Response = Response<ProxyBody>;
    type Error = Infallible;
    type Future = RequestFuture<S>;

    fn call(&self, req: Request<Incoming>) -> Self::Future {
        let span = tracing::debug_span!("request", method = %req.method(), uri = %req.uri());
        Watched {
            stall: self.stalls.as_ref().map(|s| s.stream()),
            head: self.head.as_ref().map(|h| h.parsed()),
            connect: req.method() == http::Method::CONNECT,
            inner: self.svc.clone().oneshot(req).instrument(span),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{pool::tests::TestDial, EndpointClient, ErrorResponseLayer};
    use bytes::Bytes;
    use http_body_util::{BodyExt, Empty};
    use hyper_util::rt::TokioExecutor;
    use linkerd_metrics::Registry;
    use tower::Layer;

    /// Sends one request of `version` through a connection served by an [`HttpServer`] whose
    /// requests go to the pool; returns the status, the upstream connection that served it and
    /// the version the upstream saw.
    async fn through_server(
        server: &mut HttpServer<impl Fn(()) -> ErrorResponse + Clone + Send + 'static>,
        version: Version,
    ) -> (u16, String, String) {
        let (client, io) = tokio::io::duplex(64 * 1024);
        let served = tower::ServiceExt::oneshot(server.clone(), ((), version, io));
        let serving = tokio::spawn(served);
        let req = Request::get("http://web.ns.svc.cluster.local:8080/")
            .body(Empty::<Bytes>::new())
            .unwrap();
        let rsp = match version {
            Version::Http1 => {
                let (mut tx, conn) = hyper::client::conn::http1::handshake(TokioIo::new(client))
                    .await
                    .unwrap();
                tokio::spawn(conn);
                tx.send_request(req).await.unwrap()
            }
            Version::Http2 => {
                let (mut tx, conn) = hyper::client::conn::http2::handshake(
                    TokioExecutor::new(),
                    TokioIo::new(client),
                )
                .await
                .unwrap();
                tokio::spawn(conn);
                tx.send_request(req).await.unwrap()
            }
        };
        let status = rsp.status().as_u16();
        let seen = rsp.headers()["x-version"].to_str().unwrap().to_string();
        let conn = rsp.into_body().collect().await.unwrap().to_bytes();
        drop(serving);
        (status, String::from_utf8(conn.to_vec()).unwrap(), seen)
    }

    type ErrorResponse = crate::ErrorResponse<EndpointClient<TestDial>>;

    #[tokio::test]
    async fn each_request_goes_through_the_stack_in_its_own_version() {
        let (dial, _release) = TestDial::new(Duration::ZERO);
        let mut reg = Registry::default();
        let client = crate::pool::tests::client::<crate::ForwardBody>(&dial, &mut reg);
        let addr = "10.0.0.1:8080".parse().unwrap();
        let endpoint = EndpointClient::new(&client, addr, None);
        let new_stack = move |()| ErrorResponseLayer.layer(endpoint.clone());
        let mut server =
            HttpServer::new(ServerConfig::default(), CancellationToken::new(), new_stack);
        assert_eq!(
            through_server(&mut server, Version::Http1).await,
            (200, "1".into(), "HTTP/1.1".into())
        );
        // HTTP/2 requests take the endpoint's HTTP/2 pool: another connection.
        assert_eq!(
            through_server(&mut server, Version::Http2).await,
            (200, "2".into(), "HTTP/2.0".into())
        );
        assert_eq!(
            through_server(&mut server, Version::Http1).await,
            (200, "1".into(), "HTTP/1.1".into()),
            "the HTTP/1 connection is reused"
        );
        assert_eq!(dial.dials(), 2);
    }
}
