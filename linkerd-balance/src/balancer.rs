//! A set of endpoints and the choice among them.

use crate::{choose, PeakEwma};
use parking_lot::{Mutex, RwLock};
use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::{
        atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering},
        Arc,
    },
    time::Duration,
};
use tokio::{sync::Notify, time::Instant};

/// Balancer settings.
#[derive(Clone, Debug)]
pub struct BalancerConfig {
    /// The latency assumed of an endpoint before it has answered.
    pub default_rtt: Duration,
    /// The EWMA time constant.
    pub decay: Duration,
    /// How long a request waits for a ready endpoint before failing.
    pub failfast_timeout: Duration,
    /// How many requests may wait at once; more fail at once.
    pub queue_capacity: usize,
    /// The first back-off of an endpoint that failed to connect (doubling up to `max_backoff`).
    pub min_backoff: Duration,
    /// The longest back-off.
    pub max_backoff: Duration,
}

impl Default for BalancerConfig {
    fn default() -> Self {
        Self {
            default_rtt: Duration::from_millis(30),
            decay: Duration::from_secs(10),
            failfast_timeout: Duration::from_secs(3),
            queue_capacity: 10_000,
            min_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(10),
        }
    }
}

/// Failure accrual (circuit breaking): an endpoint whose responses fail `max_failures` times
/// in a row is ejected for a back-off, then given one probe request: success readmits it,
/// failure ejects it again for a longer back-off. Never below `min_ready` ready endpoints.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Accrual {
    /// Failures in a row that eject an endpoint.
    pub max_failures: u32,
    /// The first ejection's length (doubling while probes fail).
    pub min_backoff: Duration,
    /// The longest ejection.
    pub max_backoff: Duration,
    /// Up to this fraction of an ejection is taken off at random, in [0, 1].
    pub jitter: f32,
    /// An endpoint is not ejected when fewer would be left ready.
    pub min_ready: usize,
}

/// Why no endpoint was chosen.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// The control plane says the name does not exist.
    #[error("{name} does not exist")]
    NotFound {
        /// The balanced name.
        name: String,
    },
    /// No endpoint was ready within the fail-fast timeout.
    #[error("no endpoints of {name} became ready within {timeout:?}")]
    Unavailable {
        /// The balanced name.
        name: String,
        /// The fail-fast timeout.
        timeout: Duration,
    },
    /// The queue of requests waiting for an endpoint is full.
    #[error("{name} already has {capacity} requests waiting for an endpoint")]
    QueueFull {
        /// The balanced name.
        name: String,
        /// The queue's capacity.
        capacity: usize,
    },
}

/// One endpoint: its address, weight, what the caller attached, and its load.
pub struct Endpoint<T> {
    /// The endpoint's address.
    pub addr: SocketAddr,
    /// Its share of requests, relative to the other endpoints' weights.
    pub weight: u32,
    /// What the caller attached (e.g. the endpoint's services).
    pub meta: T,
    ewma: Mutex<PeakEwma>,
    pending: AtomicU32,
    failures: AtomicU32,
    failed_until: Mutex<Option<Instant>>,
    /// Responses that failed in a row (failure accrual).
    consecutive: AtomicU32,
    /// Whether `ejection` holds an ejection (so the common case takes no lock).
    ejected: std::sync::atomic::AtomicBool,
    ejection: Mutex<Ejection>,
}

/// An endpoint's failure-accrual state.
#[derive(Default)]
struct Ejection {
    /// Not chosen until then: the ejection's end, then (a probe out) the probe's deadline.
    until: Option<Instant>,
    /// A probe request is out: its outcome readmits or ejects again.
    probing: bool,
    /// How long a probe may take before another may go (the longest back-off).
    probe_wait: Duration,
    /// Ejections in a row (the back-off grows with them).
    count: u32,
}

/// A request in flight on an endpoint; report the first response byte, or just drop it.
pub struct InFlight<T> {
    endpoint: Arc<Endpoint<T>>,
    start: Instant,
}

/// A snapshot of the balancer for metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BalancerStats {
    /// Endpoints in the set.
    pub endpoints: usize,
    /// Endpoints not in back-off.
    pub ready: usize,
    /// Requests waiting for a ready endpoint.
    pub queued: usize,
    /// Requests that asked for an endpoint, in all.
    pub requests: u64,
    /// Discovery updates applied, in all.
    pub updates: u64,
}

/// Endpoints of one destination and the choice among them.
pub struct Balancer<T> {
    name: String,
    config: BalancerConfig,
    set: RwLock<Set<T>>,
    changed: Notify,
    waiting: AtomicUsize,
    requests: AtomicU64,
    updates: AtomicU64,
    /// The queue's bounds (the config's, until [`Balancer::set_queue`]).
    queue_capacity: AtomicUsize,
    failfast_ms: AtomicU64,
    /// Whether failure accrual is on (read per response; the settings only then).
    accruing: std::sync::atomic::AtomicBool,
    accrual: RwLock<Option<Accrual>>,
}

struct Set<T> {
    endpoints: Vec<Arc<Endpoint<T>>>,
    cumulative: Vec<u64>,
    index: HashMap<SocketAddr, usize>,
    /// `None` until discovery first answers; `Some(false)` when the name does not exist.
    exists: Option<bool>,
}

pub(crate) enum Pick<T> {
    Chosen(Arc<Endpoint<T>>),
    NotFound,
    /// Nothing ready; an endpoint in back-off becomes ready again at this time, if any.
    Wait(Option<Instant>),
}

// === impl Balancer ===

impl<T> Balancer<T> {
    /// An empty balancer for `name` (used in errors).
    pub fn new(name: impl Into<String>, config: BalancerConfig) -> Self {
        Self {
            name: name.into(),
            set: RwLock::new(Set {
                endpoints: Vec::new(),
                cumulative: Vec::new(),
                index: HashMap::new(),
                exists: None,
            }),
            changed: Notify::new(),
            waiting: AtomicUsize::new(0),
            requests: AtomicU64::new(0),
            updates: AtomicU64::new(0),
            accruing: std::sync::atomic::AtomicBool::new(false),
            accrual: RwLock::new(None),
            queue_capacity: AtomicUsize::new(config.queue_capacity),
            failfast_ms: AtomicU64::new(
                u64::try_from(config.failfast_timeout.as_millis()).unwrap_or(u64::MAX),
            ),
            config,
        }
    }

    /// Bounds the queue of requests waiting for an endpoint anew: at most `capacity` wait
    /// (more are shed), each for at most `failfast` (then it fails).
    pub fn set_queue(&self, capacity: usize, failfast: Duration) {
        self.queue_capacity
            .store(capacity.max(1), Ordering::Relaxed);
        let ms = u64::try_from(failfast.as_millis()).unwrap_or(u64::MAX);
        self.failfast_ms.store(ms, Ordering::Relaxed);
    }

    fn failfast(&self) -> Duration {
        Duration::from_millis(self.failfast_ms.load(Ordering::Relaxed))
    }

    /// Turns failure accrual on with these settings, or off (`None`: ejected endpoints are
    /// readmitted).
    pub fn set_accrual(&self, accrual: Option<Accrual>) {
        let mut current = self.accrual.write();
        if *current == accrual {
            return;
        }
        *current = accrual;
        self.accruing.store(accrual.is_some(), Ordering::Release);
        drop(current);
        if accrual.is_none() {
            for e in &self.set.read().endpoints {
                e.readmit();
                e.consecutive.store(0, Ordering::Relaxed);
            }
            self.changed.notify_waiters();
        }
    }

    /// Records whether a response from `endpoint` failed, for failure accrual (nothing when
    /// it is off).
    pub fn outcome(&self, endpoint: &Endpoint<T>, failed: bool) {
        if !self.accruing.load(Ordering::Acquire) {
            return;
        }
        let Some(accrual) = *self.accrual.read() else {
            return;
        };
        if !failed {
            if endpoint.consecutive.load(Ordering::Relaxed) != 0 {
                endpoint.consecutive.store(0, Ordering::Relaxed);
            }
            if endpoint.ejected.load(Ordering::Acquire) {
                endpoint.readmit();
                tracing::debug!(addr = %endpoint.addr, name = %self.name, "endpoint readmitted: its probe succeeded");
                self.changed.notify_waiters();
            }
            return;
        }
        let probing = match endpoint.ejected.load(Ordering::Acquire) {
            false => false,
            true => match endpoint.ejection.lock().probing {
                // Requests still in flight when it was ejected: it already is.
                false => return,
                true => true,
            },
        };
        let failures = endpoint.consecutive.fetch_add(1, Ordering::AcqRel) + 1;
        if !probing && failures < accrual.max_failures {
            return;
        }
        // Not below the floor of ready endpoints (this one counts while it is ready).
        let now = Instant::now();
        let ready = self
            .set
            .read()
            .endpoints
            .iter()
            .filter(|e| e.is_ready(now))
            .count();
        let counts = usize::from(endpoint.is_ready(now));
        if !probing && ready.saturating_sub(counts) < accrual.min_ready {
            return;
        }
        let mut ej = endpoint.ejection.lock();
        ej.count = ej.count.saturating_add(1);
        let exp = (ej.count - 1).min(16);
        let backoff =
            (accrual.min_backoff * 2u32.pow(exp)).min(accrual.max_backoff.max(accrual.min_backoff));
        let jitter = f64::from(accrual.jitter.clamp(0.0, 1.0)) * rand::random::<f64>();
        ej.until = Some(now + backoff.mul_f64(1.0 - jitter));
        ej.probing = false;
        ej.probe_wait = accrual.max_backoff.max(accrual.min_backoff);
        endpoint.ejected.store(true, Ordering::Release);
        endpoint.consecutive.store(0, Ordering::Relaxed);
        tracing::debug!(addr = %endpoint.addr, name = %self.name, ?backoff, failures, "endpoint ejected by failure accrual");
    }

    /// Applies one discovery update: endpoints added or changed, then removed. Endpoints not
    /// named keep their state (load estimate, connections held by the caller).
    pub fn update(
        &self,
        add: impl IntoIterator<Item = (SocketAddr, u32, T)>,
        remove: &[SocketAddr],
    ) {
        let now = Instant::now();
        let mut set = self.set.write();
        for (addr, weight, meta) in add {
            let ewma = match set.index.get(&addr) {
                // A changed endpoint keeps its load estimate.
                Some(i) => set.endpoints[*i].ewma.lock().clone(),
                None => PeakEwma::new(self.config.default_rtt, self.config.decay, now),
            };
            let e = Arc::new(Endpoint {
                addr,
                weight,
                meta,
                ewma: Mutex::new(ewma),
                pending: AtomicU32::new(0),
                failures: AtomicU32::new(0),
                failed_until: Mutex::new(None),
                consecutive: AtomicU32::new(0),
                ejected: std::sync::atomic::AtomicBool::new(false),
                ejection: Mutex::new(Ejection::default()),
            });
            match set.index.get(&addr).copied() {
                Some(i) => set.endpoints[i] = e,
                None => {
                    let i = set.endpoints.len();
                    set.endpoints.push(e);
                    set.index.insert(addr, i);
                }
            }
        }
        for addr in remove {
            if let Some(i) = set.index.remove(addr) {
                set.endpoints.swap_remove(i);
                if let Some(moved) = set.endpoints.get(i) {
                    let a = moved.addr;
                    set.index.insert(a, i);
                }
            }
        }
        set.exists = Some(true);
        set.rebuild_weights();
        drop(set);
        self.updates.fetch_add(1, Ordering::Relaxed);
        self.changed.notify_waiters();
    }

    /// Discovery says the name has no endpoints; `exists` says whether it is known at all.
    pub fn no_endpoints(&self, exists: bool) {
        let mut set = self.set.write();
        set.endpoints.clear();
        set.index.clear();
        set.exists = Some(exists);
        set.rebuild_weights();
        drop(set);
        self.updates.fetch_add(1, Ordering::Relaxed);
        self.changed.notify_waiters();
    }

    /// The addresses currently in the set.
    pub fn addrs(&self) -> Vec<SocketAddr> {
        self.set.read().endpoints.iter().map(|e| e.addr).collect()
    }

    /// Chooses an endpoint, waiting (at most the fail-fast timeout, in a bounded queue) while
    /// none is ready. A name known not to exist fails at once.
    pub async fn ready(&self) -> Result<Arc<Endpoint<T>>, Error> {
        let failfast = self.failfast();
        let deadline = Instant::now() + failfast;
        let capacity = self.queue_capacity.load(Ordering::Relaxed);
        let mut queued = None;
        loop {
            let notified = self.changed.notified();
            let retry_at = match self.pick() {
                Pick::Chosen(e) => return Ok(e),
                Pick::NotFound => {
                    return Err(Error::NotFound {
                        name: self.name.clone(),
                    })
                }
                Pick::Wait(at) => at,
            };
            if queued.is_none() {
                if self.waiting.fetch_add(1, Ordering::AcqRel) >= capacity {
                    self.waiting.fetch_sub(1, Ordering::AcqRel);
                    return Err(Error::QueueFull {
                        name: self.name.clone(),
                        capacity,
                    });
                }
                queued = Some(QueueSlot(&self.waiting));
            }
            if Instant::now() >= deadline {
                return Err(Error::Unavailable {
                    name: self.name.clone(),
                    timeout: failfast,
                });
            }
            let wake = retry_at.map_or(deadline, |at| at.min(deadline));
            tokio::select! {
                () = notified => {}
                () = tokio::time::sleep_until(wake) => {}
            }
        }
    }

    /// Chooses a ready endpoint now, if one is.
    pub(crate) fn pick(&self) -> Pick<T> {
        let set = self.set.read();
        if set.exists == Some(false) {
            return Pick::NotFound;
        }
        let now = Instant::now();
        let eligible = |i: usize| set.endpoints[i].is_ready(now);
        let load = |i: usize| set.endpoints[i].load(now);
        match choose(&set.cumulative, load, eligible, &mut rand::rng()) {
            Some(i) => {
                let e = &set.endpoints[i];
                e.claim_probe(now);
                Pick::Chosen(e.clone())
            }
            None => Pick::Wait(
                set.endpoints
                    .iter()
                    .filter_map(|e| {
                        let failed = *e.failed_until.lock();
                        let ejected = match e.ejected.load(Ordering::Acquire) {
                            true => e.ejection.lock().until,
                            false => None,
                        };
                        failed.max(ejected)
                    })
                    .min(),
            ),
        }
    }

    /// Endpoints, ready endpoints and waiting requests, for metrics.
    pub fn stats(&self) -> BalancerStats {
        let set = self.set.read();
        let now = Instant::now();
        BalancerStats {
            endpoints: set.endpoints.len(),
            ready: set.endpoints.iter().filter(|e| e.is_ready(now)).count(),
            queued: self.waiting.load(Ordering::Relaxed),
            requests: self.requests.load(Ordering::Relaxed),
            updates: self.updates.load(Ordering::Relaxed),
        }
    }

    /// Counts a request asking for an endpoint.
    pub(crate) fn count_request(&self) {
        self.requests.fetch_add(1, Ordering::Relaxed);
    }

    /// The name this balancer serves.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The back-off after `failures` consecutive connect failures.
    fn backoff(&self, failures: u32) -> Duration {
        let exp = failures.saturating_sub(1).min(16);
        (self.config.min_backoff * 2u32.pow(exp)).min(self.config.max_backoff)
    }

    /// Records that connecting to `endpoint` failed: it leaves the ready set for a back-off.
    pub fn connect_failed(&self, endpoint: &Endpoint<T>) {
        let failures = endpoint.failures.fetch_add(1, Ordering::AcqRel) + 1;
        *endpoint.failed_until.lock() = Some(Instant::now() + self.backoff(failures));
    }

    /// Records that connecting to `endpoint` succeeded.
    pub fn connected(&self, endpoint: &Endpoint<T>) {
        if endpoint.failures.swap(0, Ordering::AcqRel) > 0 {
            *endpoint.failed_until.lock() = None;
            self.changed.notify_waiters();
        }
    }
}

struct QueueSlot<'a>(&'a AtomicUsize);

impl Drop for QueueSlot<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl<T> Set<T> {
    fn rebuild_weights(&mut self) {
        let mut sum = 0u64;
        self.cumulative.clear();
        self.cumulative.extend(self.endpoints.iter().map(|e| {
            sum += u64::from(e.weight);
            sum
        }));
    }
}

// === impl Endpoint ===

impl<T> Endpoint<T> {
    fn is_ready(&self, now: Instant) -> bool {
        self.failed_until.lock().is_none_or(|until| now >= until)
            && (!self.ejected.load(Ordering::Acquire)
                // Ejected: ready again, for one probe, once its back-off is over.
                || self.ejection.lock().until.is_none_or(|until| now >= until))
    }

    /// Chosen: an ejected endpoint's request is its probe (no other goes to it meanwhile,
    /// for at most the probe's wait).
    fn claim_probe(&self, now: Instant) {
        if !self.ejected.load(Ordering::Acquire) {
            return;
        }
        let mut ej = self.ejection.lock();
        ej.until = Some(now + ej.probe_wait);
        ej.probing = true;
    }

    /// Back in the ready set.
    fn readmit(&self) {
        *self.ejection.lock() = Ejection::default();
        self.ejected.store(false, Ordering::Release);
    }

    /// Peak-EWMA cost: the latency estimate times the requests it would have in flight.
    ///
    /// An endpoint nothing is known about yet costs nothing while it has no request in flight,
    /// so it is probed, one request at a time, instead of being avoided for the default RTT.
    fn load(&self, now: Instant) -> f64 {
        let pending = self.pending.load(Ordering::Relaxed);
        let ewma = self.ewma.lock();
        if !ewma.is_observed() && pending == 0 {
            return 0.0;
        }
        ewma.estimate(now) * (f64::from(pending) + 1.0)
    }

    /// Requests in flight on this endpoint.
    pub fn pending(&self) -> u32 {
        self.pending.load(Ordering::Relaxed)
    }

    /// Starts a request: it counts as pending until the returned guard is dropped.
    pub fn start(self: &Arc<Self>) -> InFlight<T> {
        self.pending.fetch_add(1, Ordering::Relaxed);
        InFlight {
            endpoint: self.clone(),
            start: Instant::now(),
        }
    }
}

impl<T> InFlight<T> {
    /// Records the time to the first response byte in the endpoint's estimate.
    pub fn first_byte(&self) {
        let now = Instant::now();
        self.endpoint.ewma.lock().observe(now - self.start, now);
    }

    /// The endpoint.
    pub fn endpoint(&self) -> &Arc<Endpoint<T>> {
        &self.endpoint
    }
}

impl<T> Drop for InFlight<T> {
    fn drop(&mut self) {
        self.endpoint.pending.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(i: u16) -> SocketAddr {
        SocketAddr::from(([10, 0, 0, 1], i))
    }

    fn balancer(n: u16) -> Balancer<u16> {
        let b = Balancer::new("web:80", BalancerConfig::default());
        b.update((0..n).map(|i| (addr(i), 1, i)), &[]);
        b
    }

    #[tokio::test(start_paused = true)]
    async fn slow_endpoint_is_avoided() {
        let b = balancer(10);
        let mut hits = [0u32; 10];
        for _ in 0..2000 {
            let e = b.ready().await.unwrap();
            hits[e.meta as usize] += 1;
            let f = e.start();
            // Endpoint 9 takes 10x longer to answer.
            let rtt = if e.meta == 9 { 100 } else { 10 };
            tokio::time::advance(Duration::from_millis(rtt)).await;
            f.first_byte();
        }
        let share = hits[9] as f64 / 2000.0;
        assert!(
            share < 0.05,
            "the slow endpoint got {share:.3} of requests: {hits:?}"
        );
    }

    fn endpoint(b: &Balancer<u16>, i: u16) -> Arc<Endpoint<u16>> {
        let set = b.set.read();
        set.endpoints[set.index[&addr(i)]].clone()
    }

    /// How many of `n` picks chose endpoint `i`.
    async fn picks_of(b: &Balancer<u16>, i: u16, n: usize) -> usize {
        let mut hits = 0;
        for _ in 0..n {
            hits += usize::from(b.ready().await.unwrap().meta == i);
        }
        hits
    }

    #[tokio::test(start_paused = true)]
    async fn failure_accrual_ejects_probes_and_readmits_above_a_floor() {
        let b = balancer(3);
        let e0 = endpoint(&b, 0);
        // Off: failures change nothing.
        for _ in 0..10 {
            b.outcome(&e0, true);
        }
        assert_eq!(b.stats().ready, 3);
        b.set_accrual(Some(Accrual {
            max_failures: 3,
            min_backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(10),
            jitter: 0.0,
            min_ready: 1,
        }));
        // Two failures, a success, two failures: never three in a row.
        for failed in [true, true, false, true, true] {
            b.outcome(&e0, failed);
        }
        assert_eq!(b.stats().ready, 3);
        b.outcome(&e0, true);
        assert_eq!(b.stats().ready, 2, "ejected after three in a row");
        assert_eq!(picks_of(&b, 0, 200).await, 0);
        // After the back-off, one probe goes (and only one while it is out).
        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(picks_of(&b, 0, 200).await, 1, "one probe");
        // It fails: ejected again, for twice as long.
        b.outcome(&e0, true);
        tokio::time::advance(Duration::from_millis(1500)).await;
        assert_eq!(picks_of(&b, 0, 200).await, 0);
        tokio::time::advance(Duration::from_millis(500)).await;
        assert_eq!(picks_of(&b, 0, 200).await, 1, "the second probe");
        // It succeeds: readmitted.
        b.outcome(&e0, false);
        assert_eq!(b.stats().ready, 3);
        assert!(picks_of(&b, 0, 300).await > 30);

        // The floor: two of three can be ejected, not the last.
        for i in [1, 2, 0] {
            let e = endpoint(&b, i);
            for _ in 0..3 {
                b.outcome(&e, true);
            }
        }
        assert_eq!(b.stats().ready, 1, "one kept ready");
        assert_eq!(picks_of(&b, 0, 50).await, 50);
        // Off again: everyone is back.
        b.set_accrual(None);
        assert_eq!(b.stats().ready, 3);
    }

    #[tokio::test(start_paused = true)]
    async fn the_queue_can_be_bounded_anew() {
        let b = Arc::new(Balancer::<u16>::new("web:80", BalancerConfig::default()));
        b.no_endpoints(true);
        b.set_queue(1, Duration::from_millis(200));
        let waiting = tokio::spawn({
            let b = b.clone();
            async move { b.ready().await.err() }
        });
        tokio::task::yield_now().await;
        assert!(
            matches!(b.ready().await, Err(Error::QueueFull { capacity: 1, .. })),
            "one may wait"
        );
        let start = Instant::now();
        assert!(matches!(
            waiting.await.unwrap(),
            Some(Error::Unavailable { timeout, .. }) if timeout == Duration::from_millis(200)
        ));
        assert!(start.elapsed() <= Duration::from_millis(200));
    }

    #[tokio::test(start_paused = true)]
    async fn new_endpoints_are_probed() {
        let b = balancer(1);
        // Endpoint 0 is known to be fast.
        for _ in 0..10 {
            let f = b.ready().await.unwrap().start();
            tokio::time::advance(Duration::from_millis(1)).await;
            f.first_byte();
        }
        // A new endpoint (default RTT 30ms) still gets a first request to measure it...
        b.update([(addr(1), 1, 1)], &[]);
        let probe = b.ready().await.unwrap();
        assert_eq!(probe.meta, 1);
        let in_flight = probe.start();
        // ...but only one at a time until it answers.
        for _ in 0..20 {
            assert_eq!(b.ready().await.unwrap().meta, 0);
        }
        drop(in_flight);
    }

    #[tokio::test(start_paused = true)]
    async fn updates_touch_only_named_endpoints() {
        let b = balancer(3);
        // Make endpoint 1 look slow; then change endpoint 2's weight.
        let e1 = {
            let set = b.set.read();
            set.endpoints[set.index[&addr(1)]].clone()
        };
        let f = e1.start();
        tokio::time::advance(Duration::from_millis(500)).await;
        f.first_byte();
        drop(f);
        b.update([(addr(2), 5, 2)], &[]);
        let set = b.set.read();
        let still = &set.endpoints[set.index[&addr(1)]];
        assert!(Arc::ptr_eq(still, &e1), "endpoint 1 was not rebuilt");
        assert_eq!(set.endpoints[set.index[&addr(2)]].weight, 5);
        assert_eq!(set.cumulative.last(), Some(&7));
        drop(set);
        b.update([], &[addr(0)]);
        assert_eq!(b.addrs().len(), 2);
        assert!(!b.addrs().contains(&addr(0)));
        // The index stays consistent after a swap-remove.
        b.update([], &[addr(2)]);
        assert_eq!(b.addrs(), [addr(1)]);
    }

    #[tokio::test(start_paused = true)]
    async fn waits_for_endpoints_then_fails_fast() {
        let b = Arc::new(Balancer::<u16>::new("web:80", BalancerConfig::default()));
        // Nothing known yet: the request waits and is served when endpoints arrive.
        let waiter = tokio::spawn({
            let b = b.clone();
            async move { b.ready().await.map(|e| e.addr) }
        });
        tokio::time::advance(Duration::from_millis(100)).await;
        assert_eq!(b.stats().queued, 1);
        b.update([(addr(1), 1, 1)], &[]);
        assert_eq!(waiter.await.unwrap(), Ok(addr(1)));
        assert_eq!(b.stats().queued, 0);

        // Known to exist but empty: fails after the fail-fast timeout.
        b.no_endpoints(true);
        let start = Instant::now();
        let err = b.ready().await.map(|_| ()).unwrap_err();
        assert!(matches!(err, Error::Unavailable { .. }), "{err}");
        assert_eq!(start.elapsed(), Duration::from_secs(3));

        // Known not to exist: fails at once.
        b.no_endpoints(false);
        let start = Instant::now();
        assert_eq!(
            b.ready().await.map(|_| ()),
            Err(Error::NotFound {
                name: "web:80".into()
            })
        );
        assert_eq!(start.elapsed(), Duration::ZERO);
    }

    #[tokio::test(start_paused = true)]
    async fn failed_endpoints_back_off_and_return() {
        let b = balancer(2);
        let e0 = {
            let set = b.set.read();
            set.endpoints[set.index[&addr(0)]].clone()
        };
        b.connect_failed(&e0);
        for _ in 0..100 {
            assert_eq!(b.ready().await.unwrap().addr, addr(1));
        }
        assert_eq!(b.stats().ready, 1);
        tokio::time::advance(Duration::from_millis(101)).await;
        assert_eq!(
            b.stats().ready,
            2,
            "back in the ready set after the back-off"
        );
        // Both failing: a request waits for the first to come back.
        let e1 = {
            let set = b.set.read();
            set.endpoints[set.index[&addr(1)]].clone()
        };
        b.connect_failed(&e0);
        b.connect_failed(&e1);
        let start = Instant::now();
        let e = b.ready().await.unwrap();
        assert!(
            start.elapsed() >= Duration::from_millis(100),
            "{:?}",
            start.elapsed()
        );
        assert!(start.elapsed() < Duration::from_millis(250));
        b.connected(&e);
    }

    #[tokio::test(start_paused = true)]
    async fn bounded_queue() {
        let cfg = BalancerConfig {
            queue_capacity: 2,
            ..Default::default()
        };
        let b = Arc::new(Balancer::<u16>::new("web:80", cfg));
        let w: Vec<_> = (0..2)
            .map(|_| {
                let b = b.clone();
                tokio::spawn(async move { b.ready().await.map(|_| ()) })
            })
            .collect();
        tokio::time::advance(Duration::from_millis(1)).await;
        assert!(matches!(
            b.ready().await.map(|_| ()),
            Err(Error::QueueFull { capacity: 2, .. })
        ));
        for w in w {
            assert!(matches!(w.await.unwrap(), Err(Error::Unavailable { .. })));
        }
    }

    #[test]
    fn large_update_is_fast_enough_to_measure() {
        // 10,000 endpoints, then one changed: the change itself is a single write-locked
        // pass over the weights, not a rebuild of every endpoint.
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        rt.block_on(async {
            let b = Balancer::new("big:80", BalancerConfig::default());
            b.update(
                (0..10_000u16).map(|i| {
                    (
                        SocketAddr::from(([10, 1, (i >> 8) as u8, i as u8], 80)),
                        1,
                        i,
                    )
                }),
                &[],
            );
            let before: Vec<_> = b.set.read().endpoints.iter().map(Arc::as_ptr).collect();
            b.update([(SocketAddr::from(([10, 1, 0, 5], 80)), 3, 5)], &[]);
            let after: Vec<_> = b.set.read().endpoints.iter().map(Arc::as_ptr).collect();
            let rebuilt = before.iter().zip(&after).filter(|(a, b)| a != b).count();
            assert_eq!(rebuilt, 1, "only the named endpoint is replaced");
        });
    }
}
