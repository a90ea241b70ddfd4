//! HTTP/2 connections: multiplexed, spread over several per endpoint under load.

use super::{Dial, Pool, RequestBody, Sent};
use crate::Error;
use hyper::{client::conn::http2, Request, Response};
use hyper_util::rt::{TokioIo, TokioTimer};
use std::sync::{
    atomic::{AtomicU64, AtomicUsize, Ordering},
    Arc,
};

/// One multiplexed HTTP/2 connection of an endpoint's pool.
pub(super) struct H2Conn<B> {
    pub(super) tx: http2::SendRequest<B>,
    /// Streams open on it: a request until its response body ends.
    streams: Arc<AtomicUsize>,
    /// When it last had a stream opened (ms since the client's epoch), for the idle timeout.
    last_used_ms: AtomicU64,
}

/// Counts an open stream until dropped.
pub(crate) struct Stream(Arc<AtomicUsize>);

impl Drop for Stream {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl<B> H2Conn<B> {
    /// Whether it carries streams or was used within the idle timeout.
    pub(super) fn busy(&self, now_ms: u64, idle_ms: u64) -> bool {
        self.streams.load(Ordering::Relaxed) > 0
            || now_ms.saturating_sub(self.last_used_ms.load(Ordering::Relaxed)) < idle_ms
    }
}

impl<B: RequestBody, D: Dial> Pool<B, D> {
    /// Sends `req` on one of the endpoint's connections.
    ///
    /// A request the peer refused unprocessed (`REFUSED_STREAM`, or a stream above the last
    /// stream id of its `GOAWAY`: RFC 9113 sections 8.7 and 6.8) is sent once more, on another
    /// connection, when its body can be replayed (what was read of it is kept up to a bound
    /// until the response arrives; a larger body is not re-sent).
    pub(super) async fn send_h2(self, mut req: Request<B>) -> Result<Response<Sent<B>>, Error> {
        let addr = self.addr();
        let mut redialed = false;
        // The request's head and its body from the start, for sending it again.
        let mut again = req.body().replay().map(|body| (crate::head_of(&req), body));
        let mut avoid: Option<Arc<H2Conn<B>>> = None;
        loop {
            let conn = self.h2_conn(avoid.take()).await?;
            conn.streams.fetch_add(1, Ordering::Relaxed);
            let stream = Stream(conn.streams.clone());
            conn.last_used_ms
                .store(self.shared.now_ms(), Ordering::Relaxed);
            let mut tx = conn.tx.clone();
            let mut e = match tx.try_send_request(req).await {
                Ok(rsp) => {
                    if let Some((_, body)) = again {
                        body.seal();
                    }
                    return Ok(rsp.map(|inner| (inner, None, Some(stream))));
                }
                Err(e) => e,
            };
            drop(stream);
            if let Some(r) = e.take_message() {
                // Never sent: the connection had closed.
                if !redialed && tx.is_closed() {
                    tracing::debug!(%addr, error = %e.error(), "HTTP/2 connection closed; redialing");
                    self.state.h2.write().retain(|c| !c.tx.is_closed());
                    redialed = true;
                    req = r;
                    continue;
                }
            }
            let refused = refused(e.error());
            // Taken: a re-sent attempt is not sealed when answered, as it may still be
            // replaying what was kept (a server may answer before it has read the body); the
            // kept data (at most the bound) goes when the body is done.
            let replay = refused
                .and_then(|_| again.take())
                .and_then(|(head, body)| Some((head, body.replay()?)));
            let (Some(how), Some((head, body))) = (refused, replay) else {
                return Err(Error::upstream(addr, e.into_error()));
            };
            tracing::debug!(%addr, refused = how.as_str(), "the peer refused the request unprocessed; sending it again");
            self.state.metrics.resent.incr();
            if how == Refused::GoAway {
                // The connection takes no more streams.
                self.state.h2.write().retain(|c| !Arc::ptr_eq(c, &conn));
            } else {
                avoid = Some(conn);
            }
            req = head.map(|()| body);
        }
    }

    /// The least loaded live HTTP/2 connection (other than `avoid`, if another is up), and
    /// whether all are busy enough (and fewer than the maximum) that another should be dialed.
    fn h2_pick(&self, avoid: Option<&Arc<H2Conn<B>>>) -> (Option<Arc<H2Conn<B>>>, bool) {
        let cfg = &self.shared.config;
        let conns = self.state.h2.read();
        let live = || conns.iter().filter(|c| !c.tx.is_closed());
        let best = live()
            .filter(|c| avoid.is_none_or(|a| !Arc::ptr_eq(a, c)))
            .min_by_key(|c| c.streams.load(Ordering::Relaxed))
            .cloned();
        if best.is_none() && conns.len() >= cfg.h2_max_connections {
            // Only the connection to avoid, and no room for another: it is used anyway.
            return (live().next().cloned(), false);
        }
        let spread = best.as_ref().is_some_and(|c| {
            c.streams.load(Ordering::Relaxed) >= cfg.h2_streams_per_connection
                && conns.len() < cfg.h2_max_connections
        });
        (best, spread)
    }

    /// A connection for one stream (other than `avoid`, when it can be). With none up, one
    /// task dials while the others wait for it; when all are busy, another is dialed in the
    /// background while this request uses the least loaded one.
    async fn h2_conn(&self, avoid: Option<Arc<H2Conn<B>>>) -> Result<Arc<H2Conn<B>>, Error> {
        match self.h2_pick(avoid.as_ref()) {
            (Some(conn), false) => Ok(conn),
            (Some(conn), true) => {
                if let Ok(dialing) = self.state.h2_dial.clone().try_lock_owned() {
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
                let _dialing = self.state.h2_dial.lock().await;
                if let (Some(conn), _) = self.h2_pick(avoid.as_ref()) {
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
        let addr = self.addr();
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
            last_used_ms: AtomicU64::new(self.shared.now_ms()),
        });
        let mut conns = self.state.h2.write();
        conns.retain(|c| !c.tx.is_closed());
        conns.push(conn.clone());
        tracing::debug!(%addr, connections = conns.len(), "HTTP/2 connection added");
        Ok(conn)
    }
}

/// How a peer refused a stream it did not process.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Refused {
    /// `RST_STREAM` with `REFUSED_STREAM`.
    Reset,
    /// Above the last stream id of the peer's `GOAWAY` (or opened after it).
    GoAway,
}

impl Refused {
    fn as_str(self) -> &'static str {
        match self {
            Refused::Reset => "REFUSED_STREAM",
            Refused::GoAway => "GOAWAY",
        }
    }
}

/// Whether `error` says the peer never processed the request: its `REFUSED_STREAM` reset, or
/// its `GOAWAY` (h2 fails with the peer's `GOAWAY` only the streams above its last stream id,
/// and those opened after it; streams the peer took that then die fail with I/O errors).
fn refused(error: &hyper::Error) -> Option<Refused> {
    let mut source = std::error::Error::source(error);
    while let Some(e) = source {
        if let Some(h2) = e.downcast_ref::<::h2::Error>() {
            if !h2.is_remote() {
                return None;
            }
            if h2.is_go_away() {
                return Some(Refused::GoAway);
            }
            if h2.is_reset() && h2.reason() == Some(::h2::Reason::REFUSED_STREAM) {
                return Some(Refused::Reset);
            }
            return None;
        }
        source = e.source();
    }
    None
}
