//! Rate-limited log lines, for events a client can cause over and over (a refused request, a
//! failed connection): one call site writes at most [`BURST`] lines per [`WINDOW`], and the first
//! line of the next window says how many were suppressed in between. A flood of bad requests
//! costs a few log lines a minute, not a line per request.

use std::{
    sync::{
        atomic::{AtomicU64, Ordering},
        OnceLock,
    },
    time::Duration,
};
use tokio::time::Instant;

/// Lines a call site may write per window.
pub const BURST: u64 = 5;

/// The window over which a call site's lines are counted.
pub const WINDOW: Duration = Duration::from_secs(10);

/// One call site's budget (a `static`, made by [`rate_limited!`](crate::rate_limited)).
#[derive(Debug)]
pub struct RateLimit {
    /// The window the count is for (windows since [`epoch`], plus one; 0 = never).
    window: AtomicU64,
    /// Lines allowed in that window.
    count: AtomicU64,
    /// Lines suppressed since the last one written.
    suppressed: AtomicU64,
}

fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

impl RateLimit {
    /// A budget nothing has used yet.
    pub const fn new() -> Self {
        Self {
            window: AtomicU64::new(0),
            count: AtomicU64::new(0),
            suppressed: AtomicU64::new(0),
        }
    }

    /// Whether a line may be written now: `Some(n)` with the number of lines suppressed since
    /// the last one written, or `None` (the line is counted as suppressed).
    pub fn allow(&self) -> Option<u64> {
        self.allow_at(Instant::now())
    }

    fn allow_at(&self, now: Instant) -> Option<u64> {
        let window = (now.saturating_duration_since(epoch()).as_millis() as u64)
            / WINDOW.as_millis() as u64
            + 1;
        let seen = self.window.load(Ordering::Relaxed);
        if seen != window
            && self
                .window
                .compare_exchange(seen, window, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            self.count.store(1, Ordering::Relaxed);
            return Some(self.suppressed.swap(0, Ordering::Relaxed));
        }
        if self.count.fetch_add(1, Ordering::Relaxed) < BURST {
            Some(self.suppressed.swap(0, Ordering::Relaxed))
        } else {
            self.suppressed.fetch_add(1, Ordering::Relaxed);
            None
        }
    }
}

impl Default for RateLimit {
    fn default() -> Self {
        Self::new()
    }
}

#[doc(hidden)]
pub use tracing as __tracing;

/// `tracing::event!` at `$level` (`INFO`, `WARN`, ...), at most [`BURST`] times per [`WINDOW`]
/// from this call site; a line after suppressed ones carries `suppressed = n`.
///
/// ```
/// linkerd_stack::rate_limited!(WARN, peer = %"10.0.0.1:4143", "refusing the client");
/// ```
#[macro_export]
macro_rules! rate_limited {
    ($level:ident, $($rest:tt)+) => {{
        use $crate::log::__tracing as __t;
        static LIMIT: $crate::log::RateLimit = $crate::log::RateLimit::new();
        if __t::enabled!(__t::Level::$level) {
            if let Some(suppressed) = LIMIT.allow() {
                if suppressed == 0 {
                    __t::event!(__t::Level::$level, $($rest)+);
                } else {
                    __t::event!(__t::Level::$level, suppressed, $($rest)+);
                }
            }
        }
    }};
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_per_window_then_the_suppressed_count() {
        let limit = RateLimit::new();
        let t0 = epoch() + WINDOW * 3;
        for _ in 0..BURST {
            assert_eq!(limit.allow_at(t0), Some(0));
        }
        for _ in 0..100 {
            assert_eq!(limit.allow_at(t0 + Duration::from_millis(10)), None);
        }
        // The next window's first line reports what was held back.
        assert_eq!(limit.allow_at(t0 + WINDOW), Some(100));
        assert_eq!(limit.allow_at(t0 + WINDOW), Some(0));
    }
}
