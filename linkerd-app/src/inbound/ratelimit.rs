//! `HTTPLocalRateLimitPolicy`: requests per second for a server, overall, per client identity,
//! and for named identities. Over the limit: 429.
//!
//! Each limit is a lock-free GCRA cell (one atomic); per-identity cells live in a bounded map.

use super::server::InvalidPolicy;
use linkerd_proxy_api::inbound as api;
use parking_lot::Mutex;
use std::{
    collections::HashMap,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
};
use tokio::time::Instant;

/// Per-identity cells kept at most; beyond, the map is cleared (limits restart, never grow).
const MAX_IDENTITIES: usize = 10_000;

/// A server's local rate limits.
#[derive(Debug)]
pub(crate) struct RateLimit {
    total: Option<Cell>,
    identity: Option<u32>,
    overrides: Vec<(Vec<String>, Cell)>,
    per_identity: Mutex<HashMap<String, Arc<Cell>>>,
}

/// One limit: `rps` requests per second, bursting up to one second's worth.
#[derive(Debug)]
struct Cell {
    /// Nanoseconds between requests at the limit.
    interval: u64,
    /// The theoretical arrival time of the next request, in ns since `base`.
    tat: AtomicU64,
    base: Instant,
}

impl Cell {
    fn new(rps: u32) -> Self {
        Self {
            interval: 1_000_000_000 / u64::from(rps.max(1)),
            tat: AtomicU64::new(0),
            base: Instant::now(),
        }
    }

    /// Takes one request's worth; `false` when over the limit.
    fn take(&self) -> bool {
        // Saturates after ~584 years.
        let now = u64::try_from(self.base.elapsed().as_nanos()).unwrap_or(u64::MAX);
        let burst = 1_000_000_000u64;
        let mut tat = self.tat.load(Ordering::Relaxed);
        loop {
            let next = tat.max(now).saturating_add(self.interval);
            if next - now > burst + self.interval {
                return false;
            }
            match self
                .tat
                .compare_exchange_weak(tat, next, Ordering::Relaxed, Ordering::Relaxed)
            {
                Ok(_) => return true,
                Err(t) => tat = t,
            }
        }
    }
}

impl RateLimit {
    pub(crate) fn from_api(r: &api::HttpLocalRateLimit) -> Result<Self, InvalidPolicy> {
        let rps = |l: &Option<api::http_local_rate_limit::Limit>| {
            l.as_ref().map(|l| l.requests_per_second).filter(|n| *n > 0)
        };
        Ok(Self {
            total: rps(&r.total).map(Cell::new),
            identity: rps(&r.identity),
            overrides: r
                .overrides
                .iter()
                .filter_map(|o| {
                    let ids = o
                        .clients
                        .as_ref()?
                        .identities
                        .iter()
                        .map(|i| i.name.clone())
                        .collect();
                    Some((ids, Cell::new(rps(&o.limit)?)))
                })
                .collect(),
            per_identity: Mutex::new(HashMap::new()),
        })
    }

    /// Whether a request from this client (its identity, if any) is within the limits.
    pub(crate) fn allows(&self, id: Option<&str>) -> bool {
        if let Some(id) = id {
            if let Some((_, cell)) = self
                .overrides
                .iter()
                .find(|(ids, _)| ids.iter().any(|i| i == id))
            {
                return cell.take();
            }
            if let Some(rps) = self.identity {
                let cell = {
                    let mut map = self.per_identity.lock();
                    if map.len() >= MAX_IDENTITIES && !map.contains_key(id) {
                        map.clear();
                    }
                    map.entry(id.to_string())
                        .or_insert_with(|| Arc::new(Cell::new(rps)))
                        .clone()
                };
                if !cell.take() {
                    return false;
                }
            }
        }
        self.total.as_ref().is_none_or(Cell::take)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_second_of_burst_then_the_rate() {
        let c = Cell::new(10);
        let allowed = (0..100).filter(|_| c.take()).count();
        assert!((10..=11).contains(&allowed), "{allowed}");
        tokio::time::advance(std::time::Duration::from_millis(500)).await;
        let more = (0..100).filter(|_| c.take()).count();
        assert!((4..=6).contains(&more), "{more}");
    }

    #[tokio::test(start_paused = true)]
    async fn overrides_and_identities() {
        let api = api::HttpLocalRateLimit {
            metadata: None,
            total: Some(api::http_local_rate_limit::Limit {
                requests_per_second: 100,
            }),
            identity: Some(api::http_local_rate_limit::Limit {
                requests_per_second: 2,
            }),
            overrides: vec![api::http_local_rate_limit::Override {
                limit: Some(api::http_local_rate_limit::Limit {
                    requests_per_second: 50,
                }),
                clients: Some(api::http_local_rate_limit::r#override::ClientIdentities {
                    identities: vec![api::Identity {
                        name: "batch".into(),
                    }],
                }),
            }],
        };
        let rl = RateLimit::from_api(&api).unwrap();
        let n = |id| (0..200).filter(|_| rl.allows(id)).count();
        assert!((2..=3).contains(&n(Some("web"))), "per identity");
        assert!((2..=3).contains(&n(Some("other"))), "each identity its own");
        assert!((50..=51).contains(&n(Some("batch"))), "the override");
        let anon = n(None);
        assert!(anon <= 100, "the total: {anon}");
    }
}
