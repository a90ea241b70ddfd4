//! Serving one accepted connection with hyper, HTTP/1 or HTTP/2 as detected.

use crate::ProxyBody;
use hyper::{body::Incoming, service::Service, Request, Response};
use hyper_util::rt::{TokioIo, TokioTimer};
use std::{future::Future, time::Duration};
use tokio::io::{AsyncRead, AsyncWrite};

/// Server-side limits.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    /// An HTTP/1 client must send a request's headers within this time.
    pub h1_header_read_timeout: Duration,
    /// The largest HTTP/1 request head accepted (bytes); larger ones get 431.
    pub h1_max_buf_size: usize,
    /// HTTP/2 PING interval; `None` disables keep-alive pings.
    pub h2_keep_alive_interval: Option<Duration>,
    /// How long a PING may go unanswered.
    pub h2_keep_alive_timeout: Duration,
    /// The most concurrent streams a client may open on one HTTP/2 connection.
    pub h2_max_concurrent_streams: u32,
    /// Window, frame and header-list sizes.
    pub h2: crate::H2Settings,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            h1_header_read_timeout: Duration::from_secs(30),
            h1_max_buf_size: 400 * 1024,
            h2_keep_alive_interval: Some(Duration::from_secs(10)),
            h2_keep_alive_timeout: Duration::from_secs(20),
            h2_max_concurrent_streams: 1000,
            h2: crate::H2Settings::default(),
        }
    }
}

/// Serves HTTP on `io` until the client is done; when `shutdown` fires, in-flight requests
/// finish and the connection then closes (HTTP/1: after the current response; HTTP/2: GOAWAY).
pub async fn serve<I, S>(
    io: I,
    http2: bool,
    config: &ServerConfig,
    svc: S,
    shutdown: impl Future<Output = ()>,
) -> Result<(), hyper::Error>
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    S: Service<Request<Incoming>, Response = Response<ProxyBody>> + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let io = TokioIo::new(io);
    tokio::pin!(shutdown);
    if http2 {
        // Streams run in this connection's task (see `conn_tasks`).
        let (exec, tasks) = crate::conn_tasks::conn_executor();
        let mut b = hyper::server::conn::http2::Builder::new(exec);
        b.timer(TokioTimer::new())
            .max_concurrent_streams(config.h2_max_concurrent_streams)
            .initial_stream_window_size(config.h2.initial_stream_window_size)
            .initial_connection_window_size(config.h2.initial_connection_window_size)
            .max_frame_size(config.h2.max_frame_size)
            .max_header_list_size(config.h2.max_header_list_size)
            .keep_alive_interval(config.h2_keep_alive_interval)
            .keep_alive_timeout(config.h2_keep_alive_timeout);
        let mut conn = tasks.drive(b.serve_connection(io, svc));
        tokio::select! {
            res = &mut conn => return res,
            () = &mut shutdown => conn.conn().graceful_shutdown(),
        }
        conn.await
    } else {
        let conn = hyper::server::conn::http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(config.h1_header_read_timeout)
            .max_buf_size(config.h1_max_buf_size)
            .serve_connection(io, svc)
            .with_upgrades();
        tokio::pin!(conn);
        tokio::select! {
            res = conn.as_mut() => return res,
            () = &mut shutdown => conn.as_mut().graceful_shutdown(),
        }
        conn.await
    }
}
