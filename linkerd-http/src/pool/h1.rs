//! HTTP/1 connections: one request at a time, returned to the pool when the response ends.

use super::{Dial, Pool, PoolState, RequestBody, Sent};
use crate::Error;
use hyper::{client::conn::http1, Request, Response};
use hyper_util::rt::TokioIo;
use std::sync::Arc;
use tokio::time::Instant;

/// An idle connection and when it became idle.
pub(super) struct Idle<B> {
    pub(super) tx: http1::SendRequest<B>,
    pub(super) since: Instant,
}

/// How a response body returns its connection to the pool.
pub(crate) struct Release<B> {
    tx: http1::SendRequest<B>,
    pool: Arc<PoolState<B>>,
}

/// What the idle pool has for a request.
enum Checkout<B> {
    Ready(http1::SendRequest<B>),
    /// Pooled, but hyper has not yet marked it ready for another request.
    Pending(http1::SendRequest<B>),
    None,
}

impl<B: RequestBody, D: Dial> Pool<B, D> {
    pub(super) async fn send_h1(self, mut req: Request<B>) -> Result<Response<Sent<B>>, Error> {
        let addr = self.addr();
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
                        pool: self.state.clone(),
                    });
                    return Ok(rsp.map(|inner| (inner, release, None)));
                }
                Err(mut e) => match e.take_message() {
                    Some(r) if reused => {
                        tracing::debug!(%addr, error = %e.error(), "pooled connection was stale; retrying");
                        req = r;
                    }
                    _ => return Err(Error::upstream(addr, e.into_error())),
                },
            }
        }
    }

    /// A connection for one request: an idle one that is ready, else the first of a
    /// just-released one becoming ready and a new one being dialed (so a request never waits
    /// longer than a dial would take). Returns whether the connection was reused.
    async fn connection_h1(&self) -> Result<(http1::SendRequest<B>, bool), Error> {
        match self.state.checkout() {
            Checkout::Ready(tx) => Ok((tx, true)),
            // Boxed: dialing (TCP, TLS, handshake) is rare, and its large state would
            // otherwise be part of every request's future.
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
                        self.state.put_idle(tx);
                        Ok((res?, false))
                    }
                }
            }
        }
    }

    async fn dial_h1(&self) -> Result<http1::SendRequest<B>, Error> {
        let addr = self.addr();
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
}

impl<B> PoolState<B> {
    /// The most recently used idle connection that is ready (or, failing that, the most recent
    /// one still finishing its last exchange).
    fn checkout(&self) -> Checkout<B> {
        let mut idle = self.idle.lock();
        // Expired connections are the oldest, at the front.
        while idle
            .front()
            .is_some_and(|i| i.since.elapsed() >= self.idle_timeout)
        {
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

    /// Keeps `tx` for a later request, dropping the oldest beyond the per-endpoint maximum.
    fn put_idle(&self, tx: http1::SendRequest<B>) {
        let mut idle = self.idle.lock();
        idle.push_back(Idle {
            tx,
            since: Instant::now(),
        });
        while idle.len() > self.max_idle {
            idle.pop_front();
        }
    }
}

impl<B> Release<B> {
    /// Returns the connection to its pool, unless it closed.
    pub(super) fn release(self) {
        if !self.tx.is_closed() {
            self.pool.put_idle(self.tx);
        }
    }
}
