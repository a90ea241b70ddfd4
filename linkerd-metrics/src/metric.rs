//! Single metric values: each a cheap, clonable handle around shared atomics.

use std::sync::{
    atomic::{AtomicI64, AtomicU64, Ordering},
    Arc,
};

/// A metric value that can be rendered as Prometheus sample lines.
pub trait Metric: Clone + Send + Sync + 'static {
    /// The Prometheus `# TYPE` of this metric.
    const TYPE: &'static str;

    /// Appends this metric's sample lines; `labels` is the already-encoded label list (may be empty).
    fn encode(&self, name: &str, labels: &str, out: &mut String);

    /// How many handles to this metric exist (its family's own included): a metric only its
    /// family holds can't be recorded on until it is looked up again.
    fn handles(&self) -> usize;
}

/// A monotonically increasing count.
#[derive(Clone, Debug, Default)]
pub struct Counter(Arc<AtomicU64>);

/// A value that goes up and down (e.g. open connections).
#[derive(Clone, Debug, Default)]
pub struct Gauge(Arc<AtomicI64>);

/// A cumulative histogram with fixed bucket bounds.
#[derive(Clone, Debug)]
pub struct Histogram(Arc<HistogramInner>);

#[derive(Debug)]
struct HistogramInner {
    bounds: &'static [f64],
    buckets: Box<[AtomicU64]>,
    count: AtomicU64,
    /// The sum as f64 bits, updated with a compare-and-swap loop.
    sum: AtomicU64,
}

// === impl Counter ===

impl Counter {
    /// Adds one.
    pub fn incr(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }

    /// Adds `n`.
    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }

    /// The current count.
    pub fn value(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

impl Metric for Counter {
    const TYPE: &'static str = "counter";

    fn handles(&self) -> usize {
        Arc::strong_count(&self.0)
    }

    fn encode(&self, name: &str, labels: &str, out: &mut String) {
        write_sample(out, name, "", labels, self.value() as f64);
    }
}

// === impl Gauge ===

impl Gauge {
    /// Adds one.
    pub fn incr(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }

    /// Subtracts one.
    pub fn decr(&self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }

    /// Sets the value.
    pub fn set(&self, v: i64) {
        self.0.store(v, Ordering::Relaxed);
    }

    /// The current value.
    pub fn value(&self) -> i64 {
        self.0.load(Ordering::Relaxed)
    }

    /// Adds one until the returned guard is dropped (a request in flight, a connection open).
    pub fn guard(&self) -> GaugeGuard {
        self.incr();
        GaugeGuard(self.clone())
    }
}

/// Holds a [`Gauge`] up by one while it lives.
#[must_use = "the gauge goes back down when the guard is dropped"]
pub struct GaugeGuard(Gauge);

impl Drop for GaugeGuard {
    fn drop(&mut self) {
        self.0.decr();
    }
}

impl Metric for Gauge {
    const TYPE: &'static str = "gauge";

    fn handles(&self) -> usize {
        // A gauge away from zero still says something (open connections), held or not.
        if self.value() != 0 {
            return usize::MAX;
        }
        Arc::strong_count(&self.0)
    }

    fn encode(&self, name: &str, labels: &str, out: &mut String) {
        write_sample(out, name, "", labels, self.value() as f64);
    }
}

// === impl Histogram ===

impl Histogram {
    /// A histogram with the given upper bounds (ascending; `+Inf` is implicit).
    pub fn new(bounds: &'static [f64]) -> Self {
        let buckets = bounds.iter().map(|_| AtomicU64::new(0)).collect();
        Self(Arc::new(HistogramInner {
            bounds,
            buckets,
            count: AtomicU64::new(0),
            sum: AtomicU64::new(0f64.to_bits()),
        }))
    }

    /// Records one observation.
    pub fn observe(&self, v: f64) {
        let h = &*self.0;
        // Buckets are stored non-cumulatively and summed when encoded.
        if let Some(i) = h.bounds.iter().position(|b| v <= *b) {
            h.buckets[i].fetch_add(1, Ordering::Relaxed);
        }
        h.count.fetch_add(1, Ordering::Relaxed);
        let mut cur = h.sum.load(Ordering::Relaxed);
        loop {
            let new = (f64::from_bits(cur) + v).to_bits();
            match h
                .sum
                .compare_exchange_weak(cur, new, Ordering::Relaxed, Ordering::Relaxed)
            {
                Ok(_) => break,
                Err(actual) => cur = actual,
            }
        }
    }

    /// The number of observations.
    pub fn count(&self) -> u64 {
        self.0.count.load(Ordering::Relaxed)
    }

    /// The sum of all observations.
    pub fn sum(&self) -> f64 {
        f64::from_bits(self.0.sum.load(Ordering::Relaxed))
    }
}

impl Metric for Histogram {
    const TYPE: &'static str = "histogram";

    fn handles(&self) -> usize {
        Arc::strong_count(&self.0)
    }

    fn encode(&self, name: &str, labels: &str, out: &mut String) {
        let h = &*self.0;
        let mut cumulative = 0;
        for (bound, bucket) in h.bounds.iter().zip(h.buckets.iter()) {
            cumulative += bucket.load(Ordering::Relaxed);
            let le = format!("le=\"{bound}\"");
            write_sample(out, name, "_bucket", &join(labels, &le), cumulative as f64);
        }
        let count = self.count();
        write_sample(
            out,
            name,
            "_bucket",
            &join(labels, "le=\"+Inf\""),
            count as f64,
        );
        write_sample(out, name, "_sum", labels, self.sum());
        write_sample(out, name, "_count", labels, count as f64);
    }
}

fn join(labels: &str, extra: &str) -> String {
    if labels.is_empty() {
        extra.to_string()
    } else {
        format!("{labels},{extra}")
    }
}

fn write_sample(out: &mut String, name: &str, suffix: &str, labels: &str, v: f64) {
    use std::fmt::Write;
    // Writing to a String cannot fail.
    let _ = if labels.is_empty() {
        writeln!(out, "{name}{suffix} {v}")
    } else {
        writeln!(out, "{name}{suffix}{{{labels}}} {v}")
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_gauge_guard_holds_one_until_dropped() {
        let g = Gauge::default();
        let a = g.guard();
        let b = g.guard();
        assert_eq!(g.value(), 2);
        drop(a);
        assert_eq!(g.value(), 1);
        drop(b);
        assert_eq!(g.value(), 0);
    }

    #[test]
    fn histogram_buckets_are_cumulative() {
        static BOUNDS: [f64; 3] = [1.0, 10.0, 100.0];
        let h = Histogram::new(&BOUNDS);
        h.observe(0.5);
        h.observe(5.0);
        h.observe(5.0);
        h.observe(1000.0);
        let mut out = String::new();
        h.encode("lat", "a=\"b\"", &mut out);
        assert!(out.contains("lat_bucket{a=\"b\",le=\"1\"} 1\n"), "{out}");
        assert!(out.contains("lat_bucket{a=\"b\",le=\"10\"} 3\n"), "{out}");
        assert!(out.contains("lat_bucket{a=\"b\",le=\"100\"} 3\n"), "{out}");
        assert!(out.contains("lat_bucket{a=\"b\",le=\"+Inf\"} 4\n"), "{out}");
        assert!(out.contains("lat_sum{a=\"b\"} 1010.5\n"), "{out}");
        assert!(out.contains("lat_count{a=\"b\"} 4\n"), "{out}");
    }

    #[test]
    fn counter_and_gauge() {
        let c = Counter::default();
        c.incr();
        c.add(2);
        assert_eq!(c.value(), 3);
        let g = Gauge::default();
        g.incr();
        g.incr();
        g.decr();
        assert_eq!(g.value(), 1);
        let mut out = String::new();
        g.encode("open", "", &mut out);
        assert_eq!(out, "open 1\n");
    }
}
