//! A bound on the HTTP/1 request heads buffered across all connections: the bytes of each
//! head beyond its first [`SMALL_HEAD`] are charged to one budget per listener direction, by
//! protocol detection (a long request line) and by the HTTP/1 server (`linkerd-http`).

use std::sync::{
    atomic::{AtomicUsize, Ordering},
    Arc,
};

/// The part of each head that is never charged to the budget.
pub const SMALL_HEAD: usize = 16 * 1024;

/// One listener direction's budget for the bytes of request heads beyond [`SMALL_HEAD`].
#[derive(Debug)]
pub struct HeadBudget {
    max: usize,
    used: AtomicUsize,
}

impl HeadBudget {
    /// A budget of `max` bytes.
    pub fn new(max: usize) -> Arc<Self> {
        Arc::new(Self {
            max,
            used: AtomicUsize::new(0),
        })
    }

    /// The bytes charged now.
    pub fn used(&self) -> usize {
        self.used.load(Ordering::Relaxed)
    }

    /// The budget's size.
    pub fn max(&self) -> usize {
        self.max
    }

    /// Charges `n` bytes; `false` (and nothing charged) when the budget can't take them.
    pub fn charge(&self, n: usize) -> bool {
        let before = self.used.fetch_add(n, Ordering::Relaxed);
        if before.saturating_add(n) > self.max {
            self.used.fetch_sub(n, Ordering::Relaxed);
            return false;
        }
        true
    }

    /// Returns `n` charged bytes.
    pub fn release(&self, n: usize) {
        self.used.fetch_sub(n, Ordering::Relaxed);
    }
}

/// The budget could not take a request head.
#[derive(Debug, thiserror::Error)]
#[error("request heads over {SMALL_HEAD} bytes already hold the proxy's budget of {0} bytes")]
pub struct HeadBudgetExhausted(pub usize);
