//! HTTP/2 send stalls: response streams whose client does not take the data.
//!
//! hyper polls a response body only while the client's flow-control window has room. A client
//! that advertises a zero window (or stops sending WINDOW_UPDATE) leaves the body unpolled, so
//! the data the upstream endpoint already sent stays unread in the proxy's upstream stream: it
//! holds that stream's slot on the upstream connection and its share of the upstream
//! connection's window, which every other client's streams on that connection also use. Two
//! bounds reclaim them, by resetting the client's stream (RST_STREAM CANCEL; the upstream
//! stream is then cancelled too):
//!
//! - **the send-stall timeout**: a stream whose client has taken nothing for this long;
//! - **a share per connection and per client**: a stream counts as stalled once its client has
//!   taken nothing for the grace period; a connection may hold at most so many stalled
//!   streams, and a client address (over all its connections, where the server knows it) at
//!   most so many; beyond that each further one is reset, at once if the connection has not
//!   taken data on any stream for the grace period (so a client opening stream after stream
//!   with a zero window holds nothing past the first grace period).
//!
//! A stream is watched from two ends: its response body ([`crate::ProxyBody`]) marks when it
//! yielded data and when it is polled again, and [`StallWatch`] wraps the stream's future (which
//! hyper hands the connection's executor) to time the waits and drop the stream. Nothing of this
//! runs for a stream whose client keeps up but an atomic store per body poll.

use linkerd_metrics::Counter;
use parking_lot::Mutex;
use std::{
    collections::HashMap,
    future::Future,
    net::IpAddr,
    pin::Pin,
    sync::{
        atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering},
        Arc,
    },
    task::{Context, Poll},
    time::Duration,
};
use tokio::time::{Instant, Sleep};

/// The bounds on streams whose client does not take their data.
#[derive(Clone, Debug)]
pub struct SendStallConfig {
    /// A stream whose client takes nothing for this long is reset (`None`: never).
    pub timeout: Option<Duration>,
    /// How long a client may take nothing on a stream before the stream counts as stalled.
    pub grace: Duration,
    /// The most stalled streams one connection may hold (`None`: no bound but the timeout).
    pub max_stalled_per_connection: Option<usize>,
    /// The most stalled streams one client address may hold over all its connections
    /// (`None`: no such bound).
    pub max_stalled_per_client: Option<usize>,
    /// Streams reset, by reason.
    pub resets: StallResets,
    /// The stalled streams of each client address (shared by a server's connections).
    pub clients: Arc<ClientStalls>,
}

/// Stalled streams per client address; an address is present only while it holds one.
#[derive(Debug, Default)]
pub struct ClientStalls(Mutex<HashMap<IpAddr, usize>>);

impl ClientStalls {
    fn get(&self, ip: IpAddr) -> usize {
        self.0.lock().get(&ip).copied().unwrap_or(0)
    }

    /// Counts one more stalled stream of `ip`; returns its count.
    fn add(&self, ip: IpAddr) -> usize {
        let mut map = self.0.lock();
        let n = map.entry(ip).or_insert(0);
        *n += 1;
        *n
    }

    fn remove(&self, ip: IpAddr) {
        let mut map = self.0.lock();
        if let Some(n) = map.get_mut(&ip) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                map.remove(&ip);
            }
        }
    }
}

impl Default for SendStallConfig {
    fn default() -> Self {
        Self {
            timeout: Some(Duration::from_secs(60)),
            grace: Duration::from_secs(1),
            max_stalled_per_connection: Some(4),
            max_stalled_per_client: Some(8),
            resets: StallResets::default(),
            clients: Default::default(),
        }
    }
}

impl SendStallConfig {
    /// Whether either bound is on.
    pub fn enabled(&self) -> bool {
        self.timeout.is_some()
            || self.max_stalled_per_connection.is_some()
            || self.max_stalled_per_client.is_some()
    }
}

/// Counts of streams reset because their client did not take their data.
#[derive(Clone, Debug, Default)]
pub struct StallResets {
    /// Past the send-stall timeout.
    pub timeout: Counter,
    /// Beyond the connection's share of stalled streams.
    pub share: Counter,
}

/// One stream's marks, set by its response body.
#[derive(Debug, Default)]
pub(crate) struct StreamStall {
    /// Data frames the body has yielded.
    yielded: AtomicU32,
    /// The body yielded data and has not been polled since: hyper waits for the client's window.
    awaiting: AtomicBool,
}

impl StreamStall {
    /// Before each poll of the body.
    #[inline]
    pub(crate) fn polling(&self) {
        self.awaiting.store(false, Ordering::Relaxed);
    }

    /// The body yielded a data frame.
    #[inline]
    pub(crate) fn yielded(&self) {
        self.yielded.fetch_add(1, Ordering::Relaxed);
        self.awaiting.store(true, Ordering::Relaxed);
    }
}

/// One HTTP/2 server connection's stalled streams.
#[derive(Debug)]
pub(crate) struct ConnStalls {
    config: Arc<SendStallConfig>,
    /// The client's address, where the server knows it.
    client: Option<IpAddr>,
    epoch: Instant,
    /// Streams stalled for at least the grace period.
    stalled: AtomicUsize,
    /// Streams whose futures run (for the connection's idle timeout).
    streams: AtomicUsize,
    /// When the client last took data on any stream (ms since `epoch`).
    progress_ms: AtomicU64,
    /// The marks of the stream hyper just called the service for, until hyper hands that
    /// stream's future to the executor (which it does next, in the same poll).
    next: Mutex<Option<Arc<StreamStall>>>,
}

impl ConnStalls {
    pub(crate) fn new(config: Arc<SendStallConfig>, client: Option<IpAddr>) -> Arc<Self> {
        Arc::new(Self {
            client: client.filter(|_| config.max_stalled_per_client.is_some()),
            config,
            epoch: Instant::now(),
            stalled: AtomicUsize::new(0),
            streams: AtomicUsize::new(0),
            progress_ms: AtomicU64::new(0),
            next: Mutex::new(None),
        })
    }

    /// Marks for a new stream, which its executed future picks up.
    pub(crate) fn stream(&self) -> Arc<StreamStall> {
        let s = Arc::new(StreamStall::default());
        *self.next.lock() = Some(s.clone());
        s
    }

    /// Wraps the future of the stream last marked, if any.
    pub(crate) fn watch<F>(self: &Arc<Self>, fut: F) -> Result<StallWatch<F>, F> {
        match self.next.lock().take() {
            Some(stream) => Ok({
                self.streams.fetch_add(1, Ordering::Relaxed);
                StallWatch {
                    inner: Some(fut),
                    stream,
                    conn: self.clone(),
                    seen: 0,
                    since: None,
                    counted: None,
                    timer: None,
                }
            }),
            None => Err(fut),
        }
    }

    /// Whether no stream of the connection is open.
    pub(crate) fn idle(&self) -> bool {
        self.streams.load(Ordering::Relaxed) == 0
    }

    fn ms(&self, t: Instant) -> u64 {
        u64::try_from(t.saturating_duration_since(self.epoch).as_millis()).unwrap_or(u64::MAX)
    }

    /// Whether the connection's client took nothing lately and the connection or the client
    /// already holds its share.
    fn over_share_and_idle(&self, now: Instant) -> bool {
        let idle_ms = self
            .ms(now)
            .saturating_sub(self.progress_ms.load(Ordering::Relaxed));
        if idle_ms < u64::try_from(self.config.grace.as_millis()).unwrap_or(u64::MAX) {
            return false;
        }
        let cfg = &self.config;
        cfg.max_stalled_per_connection
            .is_some_and(|max| self.stalled.load(Ordering::Relaxed) >= max)
            // Locked only for an idle connection's stream starting to wait: rare.
            || self.client.zip(cfg.max_stalled_per_client).is_some_and(|(ip, max)| cfg.clients.get(ip) >= max)
    }

    /// Counts a stream as stalled; `false` when that is beyond the connection's or the
    /// client's share.
    fn stall(self: &Arc<Self>) -> (Stalled, bool) {
        let on_conn = self.stalled.fetch_add(1, Ordering::Relaxed) + 1;
        let cfg = &self.config;
        let on_client = self.client.map(|ip| cfg.clients.add(ip));
        let within = cfg
            .max_stalled_per_connection
            .is_none_or(|max| on_conn <= max)
            && on_client
                .zip(cfg.max_stalled_per_client)
                .is_none_or(|(n, max)| n <= max);
        (Stalled(self.clone()), within)
    }
}

/// Why a stream was reset.
#[derive(Clone, Copy, Debug)]
enum Reset {
    Timeout,
    Share,
}

pin_project_lite::pin_project! {
    /// A stream's future, dropped (which resets the stream) when its client stalls it past the
    /// bounds of [`SendStallConfig`].
    pub(crate) struct StallWatch<F> {
        #[pin]
        inner: Option<F>,
        stream: Arc<StreamStall>,
        conn: Arc<ConnStalls>,
        // The yielded count at the last look.
        seen: u32,
        // Since when the client has taken nothing (while the body waits for it).
        since: Option<Instant>,
        // Held while this stream counts in the connection's stalled streams.
        counted: Option<Stalled>,
        // Made on the first wait for a client, then reset.
        timer: Option<Pin<Box<Sleep>>>,
    }

    impl<F> PinnedDrop for StallWatch<F> {
        fn drop(this: Pin<&mut Self>) {
            this.conn.streams.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

/// One stream in a connection's count of stalled streams, until dropped.
#[derive(Debug)]
pub(crate) struct Stalled(Arc<ConnStalls>);

impl Drop for Stalled {
    fn drop(&mut self) {
        let conn = &self.0;
        conn.stalled.fetch_sub(1, Ordering::Relaxed);
        if let Some(ip) = conn.client {
            conn.config.clients.remove(ip);
        }
    }
}

impl<F: Future<Output = ()>> Future for StallWatch<F> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let mut this = self.project();
        let Some(inner) = this.inner.as_mut().as_pin_mut() else {
            return Poll::Ready(());
        };
        if inner.poll(cx).is_ready() {
            this.inner.set(None);
            *this.counted = None;
            return Poll::Ready(());
        }
        let conn = &**this.conn;
        let cfg = &*conn.config;
        if !cfg.enabled() {
            // Counted for the idle timeout only.
            return Poll::Pending;
        }
        let reset = |why: Reset| {
            match why {
                Reset::Timeout => cfg.resets.timeout.incr(),
                Reset::Share => cfg.resets.share.incr(),
            }
            linkerd_stack::rate_limited!(
                WARN,
                reason = ?why,
                "resetting an HTTP/2 stream whose client does not take the response"
            );
        };
        let yielded = this.stream.yielded.load(Ordering::Relaxed);
        if yielded != *this.seen {
            // A second data frame means the client's window took the first.
            if yielded > 1 {
                let ms = conn.ms(Instant::now());
                conn.progress_ms.store(ms, Ordering::Relaxed);
            }
            *this.seen = yielded;
            *this.since = None;
            *this.counted = None;
        }
        if !this.stream.awaiting.load(Ordering::Relaxed) {
            // Waiting for the upstream (or for the response head), not for the client.
            *this.since = None;
            *this.counted = None;
            return Poll::Pending;
        }
        let now = Instant::now();
        let since = match *this.since {
            Some(since) => since,
            None => {
                if conn.over_share_and_idle(now) {
                    reset(Reset::Share);
                    this.inner.set(None);
                    return Poll::Ready(());
                }
                *this.since = Some(now);
                now
            }
        };
        let waited = now.saturating_duration_since(since);
        if cfg.timeout.is_some_and(|t| waited >= t) {
            reset(Reset::Timeout);
            this.inner.set(None);
            *this.counted = None;
            return Poll::Ready(());
        }
        if this.counted.is_none() && waited >= cfg.grace {
            let (stalled, within) = this.conn.stall();
            *this.counted = Some(stalled);
            if !within {
                reset(Reset::Share);
                this.inner.set(None);
                *this.counted = None;
                return Poll::Ready(());
            }
        }
        let next = if this.counted.is_some() {
            match cfg.timeout {
                Some(t) => since + t,
                // Counted, and no timeout: nothing more to wait for.
                None => return Poll::Pending,
            }
        } else {
            since + cfg.timeout.map_or(cfg.grace, |t| t.min(cfg.grace))
        };
        let timer = match this.timer.as_mut() {
            Some(timer) => {
                if timer.deadline() != next {
                    timer.as_mut().reset(next);
                }
                timer
            }
            None => this.timer.insert(Box::pin(tokio::time::sleep_until(next))),
        };
        if timer.as_mut().poll(cx).is_ready() {
            // Due already: look again at once.
            cx.waker().wake_by_ref();
        }
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicBool;

    /// A stream future that stays pending until `done`; what its body does is driven by hand.
    struct Stream {
        done: Arc<AtomicBool>,
    }

    impl Future for Stream {
        type Output = ();
        fn poll(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<()> {
            if self.done.load(Ordering::Relaxed) {
                Poll::Ready(())
            } else {
                Poll::Pending
            }
        }
    }

    fn config(timeout: u64, max: usize) -> Arc<SendStallConfig> {
        Arc::new(SendStallConfig {
            timeout: Some(Duration::from_secs(timeout)),
            grace: Duration::from_secs(1),
            max_stalled_per_connection: Some(max),
            max_stalled_per_client: Some(3),
            ..Default::default()
        })
    }

    /// A watched stream and its body's marks.
    fn stream(conn: &Arc<ConnStalls>) -> (StallWatch<Stream>, Arc<StreamStall>, Arc<AtomicBool>) {
        let marks = conn.stream();
        let done = Arc::new(AtomicBool::new(false));
        let watch = match conn.watch(Stream { done: done.clone() }) {
            Ok(w) => w,
            Err(_) => panic!("the stream was marked"),
        };
        (watch, marks, done)
    }

    fn poll(w: &mut StallWatch<Stream>) -> Poll<()> {
        let mut cx = Context::from_waker(futures_util::task::noop_waker_ref());
        // `Stream` is Unpin, and so is the watch over it.
        Pin::new(w).poll(&mut cx)
    }

    #[tokio::test(start_paused = true)]
    async fn a_client_that_takes_nothing_is_reset_at_the_timeout() {
        let cfg = config(30, 4);
        let conn = ConnStalls::new(cfg.clone(), None);
        let (mut w, marks, _done) = stream(&conn);
        marks.polling();
        marks.yielded();
        assert!(poll(&mut w).is_pending());
        tokio::time::advance(Duration::from_secs(29)).await;
        assert!(poll(&mut w).is_pending(), "stalled, within the timeout");
        assert_eq!(conn.stalled.load(Ordering::Relaxed), 1);
        tokio::time::advance(Duration::from_secs(1)).await;
        assert!(poll(&mut w).is_ready(), "reset at the timeout");
        assert!(w.inner.is_none(), "the stream's future is dropped");
        assert_eq!(cfg.resets.timeout.value(), 1);
        assert_eq!(conn.stalled.load(Ordering::Relaxed), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_client_that_keeps_taking_data_is_never_reset() {
        let cfg = config(30, 4);
        let conn = ConnStalls::new(cfg.clone(), None);
        let (mut w, marks, done) = stream(&conn);
        for _ in 0..100 {
            marks.polling();
            marks.yielded();
            assert!(poll(&mut w).is_pending());
            tokio::time::advance(Duration::from_secs(20)).await;
        }
        // Waiting on the upstream is not the client's stall.
        marks.polling();
        tokio::time::advance(Duration::from_secs(100)).await;
        assert!(poll(&mut w).is_pending());
        done.store(true, Ordering::Relaxed);
        assert!(poll(&mut w).is_ready());
        assert_eq!(cfg.resets.timeout.value() + cfg.resets.share.value(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_connection_holds_at_most_its_share_of_stalled_streams() {
        let cfg = config(60, 2);
        let conn = ConnStalls::new(cfg.clone(), None);
        let mut streams: Vec<_> = (0..5).map(|_| stream(&conn)).collect();
        for (w, marks, _) in &mut streams {
            marks.polling();
            marks.yielded();
            assert!(poll(w).is_pending());
        }
        tokio::time::advance(Duration::from_secs(1)).await;
        let reset: Vec<bool> = streams
            .iter_mut()
            .map(|(w, _, _)| poll(w).is_ready())
            .collect();
        assert_eq!(reset, [false, false, true, true, true]);
        assert_eq!(cfg.resets.share.value(), 3);
        assert_eq!(conn.stalled.load(Ordering::Relaxed), 2);
        // A new stream on a connection that holds its share and takes nothing: reset at its
        // first wait, without a grace period of its own.
        let (mut w, marks, _) = stream(&conn);
        marks.polling();
        marks.yielded();
        assert!(poll(&mut w).is_ready());
        assert_eq!(cfg.resets.share.value(), 4);
        // The stalled ones resume: they no longer count, and new streams get their grace.
        for (w, marks, _) in &mut streams[..2] {
            marks.polling();
            marks.yielded();
            marks.polling();
            marks.yielded();
            assert!(poll(w).is_pending());
        }
        assert_eq!(conn.stalled.load(Ordering::Relaxed), 0);
        let (mut w, marks, _) = stream(&conn);
        marks.polling();
        marks.yielded();
        assert!(poll(&mut w).is_pending());
    }

    #[tokio::test(start_paused = true)]
    async fn a_client_holds_at_most_its_share_over_all_its_connections() {
        let cfg = config(60, 2);
        let ip = IpAddr::from([10, 0, 0, 7]);
        let conns: Vec<_> = (0..3)
            .map(|_| ConnStalls::new(cfg.clone(), Some(ip)))
            .collect();
        // Two stalled streams on each of three connections: within each connection's share of
        // 2, but the client may hold 3.
        let mut streams: Vec<_> = conns.iter().flat_map(|c| [stream(c), stream(c)]).collect();
        for (w, marks, _) in &mut streams {
            marks.polling();
            marks.yielded();
            assert!(poll(w).is_pending());
        }
        tokio::time::advance(Duration::from_secs(1)).await;
        let reset = streams
            .iter_mut()
            .map(|(w, _, _)| poll(w).is_ready())
            .filter(|&r| r)
            .count();
        assert_eq!(reset, 3);
        assert_eq!(cfg.clients.get(ip), 3);
        // Another client is not held to this one's share.
        let other = ConnStalls::new(cfg.clone(), Some(IpAddr::from([10, 0, 0, 8])));
        let (mut w, marks, _) = stream(&other);
        marks.polling();
        marks.yielded();
        assert!(poll(&mut w).is_pending());
        tokio::time::advance(Duration::from_secs(1)).await;
        assert!(poll(&mut w).is_pending());
        drop((w, streams));
        assert!(
            cfg.clients.0.lock().is_empty(),
            "no client holds a stalled stream"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_finished_stream_leaves_the_count() {
        let cfg = config(60, 1);
        let conn = ConnStalls::new(cfg.clone(), None);
        let (mut w, marks, done) = stream(&conn);
        marks.polling();
        marks.yielded();
        assert!(poll(&mut w).is_pending());
        tokio::time::advance(Duration::from_secs(2)).await;
        assert!(poll(&mut w).is_pending());
        assert_eq!(conn.stalled.load(Ordering::Relaxed), 1);
        done.store(true, Ordering::Relaxed);
        assert!(poll(&mut w).is_ready());
        assert_eq!(conn.stalled.load(Ordering::Relaxed), 0);
        let (w, marks, _) = stream(&conn);
        drop((w, marks));
        assert_eq!(cfg.resets.share.value() + cfg.resets.timeout.value(), 0);
    }
}
