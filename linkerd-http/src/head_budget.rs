//! A bound on the HTTP/1 request heads buffered across all connections.
//!
//! Each connection's head is bounded by `LINKERD2_PROXY_HTTP1_MAX_HEADER_BYTES` (400 KiB by
//! default), but a client that opens many connections and sends each an unfinished head of
//! almost that size holds connections x 400 KiB of the proxy's memory until the header read
//! timeout. Heads are small in practice: the first [`SMALL_HEAD`] bytes of each head are free,
//! and the bytes beyond come out of one budget per listener direction. A read that would take
//! the budget past its size fails, which closes that connection (a rate-limited warning); the
//! connections with small heads are never refused. So heads hold at most connections x 16 KiB
//! plus the budget.
//!
//! What is a head: the bytes a connection reads from its start or from the end of its last
//! response until hyper has parsed the next request's head. Request bodies (read while the
//! request is served) are not counted, nor are upgraded connections once upgraded.

use std::{
    io,
    pin::Pin,
    sync::{
        atomic::{AtomicBool, AtomicUsize, Ordering},
        Arc,
    },
    task::{Context, Poll},
};
use tokio::io::{AsyncRead, ReadBuf};

pub use linkerd_detect::{HeadBudget, HeadBudgetExhausted, SMALL_HEAD};

/// Where one connection is: reading a head (and how much of it), or serving a request. Only
/// the connection's own task touches it (its I/O, its requests, its response bodies), so each
/// field is updated on its own, without a lock.
#[derive(Debug)]
pub(crate) struct ConnHead {
    budget: Arc<HeadBudget>,
    /// Reading a head (not serving a request, nor upgraded).
    reading: AtomicBool,
    /// Bytes of the head read so far; what is beyond [`SMALL_HEAD`] is charged to the budget.
    read: AtomicUsize,
}

fn charged(read: usize) -> usize {
    read.saturating_sub(SMALL_HEAD)
}

impl ConnHead {
    pub(crate) fn new(budget: Arc<HeadBudget>) -> Arc<Self> {
        Arc::new(Self {
            budget,
            reading: AtomicBool::new(true),
            read: AtomicUsize::new(0),
        })
    }

    /// `n` more bytes read; `false` (nothing counted) when the budget can't take them.
    fn read(&self, n: usize) -> bool {
        if !self.reading.load(Ordering::Relaxed) {
            return true;
        }
        let before = self.read.load(Ordering::Relaxed);
        let after = before.saturating_add(n);
        let charge = charged(after) - charged(before);
        if charge > 0 && !self.budget.charge(charge) {
            return false;
        }
        self.read.store(after, Ordering::Relaxed);
        true
    }

    /// A head was parsed: the request is served until its response ends ([`HeadDone`]).
    pub(crate) fn parsed(self: &Arc<Self>) -> HeadDone {
        self.reading.store(false, Ordering::Relaxed);
        // Most heads are small: the shared budget is not touched for them.
        let held = charged(self.read.swap(0, Ordering::Relaxed));
        if held > 0 {
            self.budget.release(held);
        }
        HeadDone {
            conn: Some(self.clone()),
        }
    }
}

impl Drop for ConnHead {
    fn drop(&mut self) {
        let held = charged(*self.read.get_mut());
        if held > 0 {
            self.budget.release(held);
        }
    }
}

/// Held by a request's response body: when it is dropped (the response was written, or
/// abandoned), the connection reads a head again.
#[derive(Debug)]
pub(crate) struct HeadDone {
    conn: Option<Arc<ConnHead>>,
}

impl HeadDone {
    /// The connection is upgraded (or tunnels): it never reads a head again.
    pub(crate) fn upgraded(mut self) {
        self.conn = None;
    }
}

impl Drop for HeadDone {
    fn drop(&mut self) {
        if let Some(conn) = self.conn.take() {
            conn.reading.store(true, Ordering::Relaxed);
        }
    }
}

pin_project_lite::pin_project! {
    /// An HTTP/1 server connection's I/O, charging the heads it reads to a [`HeadBudget`]
    /// (without one, it passes the bytes on).
    pub struct Budgeted<I> {
        #[pin]
        inner: I,
        head: Option<Arc<ConnHead>>,
    }
}

impl<I> Budgeted<I> {
    pub(crate) fn new(inner: I, head: Option<Arc<ConnHead>>) -> Self {
        Self { inner, head }
    }
}

impl<I: AsyncRead> AsyncRead for Budgeted<I> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.project();
        let before = buf.filled().len();
        std::task::ready!(this.inner.poll_read(cx, buf))?;
        let n = buf.filled().len() - before;
        let Some(head) = this.head.as_ref() else {
            return Poll::Ready(Ok(()));
        };
        if n > 0 && !head.read(n) {
            linkerd_stack::rate_limited!(
                WARN,
                budget = head.budget.max(),
                "closing an HTTP/1 connection: large unfinished request heads hold the head budget"
            );
            buf.set_filled(before);
            let error = HeadBudgetExhausted(head.budget.max());
            return Poll::Ready(Err(io::Error::other(error)));
        }
        Poll::Ready(Ok(()))
    }
}

linkerd_proxy_transport::write_through_inner!(Budgeted);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_heads_are_free_and_large_ones_share_the_budget() {
        let budget = HeadBudget::new(100 * 1024);
        let a = ConnHead::new(budget.clone());
        let b = ConnHead::new(budget.clone());
        assert!(a.read(SMALL_HEAD));
        assert_eq!(budget.used(), 0, "the first 16 KiB are free");
        assert!(a.read(60 * 1024));
        assert_eq!(budget.used(), 60 * 1024);
        assert!(b.read(SMALL_HEAD + 40 * 1024));
        assert!(!b.read(1), "the budget is full");
        assert_eq!(budget.used(), 100 * 1024);
        // A parsed head returns what it held; the request's body is not a head.
        let done = a.parsed();
        assert_eq!(budget.used(), 40 * 1024);
        assert!(a.read(1 << 20));
        assert_eq!(budget.used(), 40 * 1024);
        // Once the response ends, the next head counts again.
        drop(done);
        assert!(a.read(SMALL_HEAD + 10));
        assert_eq!(budget.used(), 40 * 1024 + 10);
        // An upgraded connection never reads a head again.
        a.parsed().upgraded();
        assert!(a.read(1 << 20));
        drop((a, b));
        assert_eq!(budget.used(), 0, "closed connections return what they held");
    }
}
