//! A family: one metric name, many label sets.

use crate::{encode::LabelWriter, Metric};
use parking_lot::RwLock;
use std::{
    collections::HashMap,
    hash::Hash,
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc,
    },
    time::Duration,
};
use tokio::time::Instant;

/// A label set that knows how to write itself as `name="value"` pairs.
pub trait EncodeLabels: Clone + Eq + Hash + Send + Sync + 'static {
    /// Writes every label of this set.
    fn encode(&self, w: &mut LabelWriter<'_>);
}

/// The empty label set, for a family with a single, unlabelled metric.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct NoLabels;

impl EncodeLabels for NoLabels {
    fn encode(&self, _: &mut LabelWriter<'_>) {}
}

/// A set of name/value pairs built once (e.g. per policy decision) and shared by every label
/// set that carries it: cloning is a reference count, and it writes its pairs in order.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct LabelPairs(Arc<[(&'static str, Arc<str>)]>);

impl LabelPairs {
    /// These name/value pairs, in order.
    pub fn new(pairs: Vec<(&'static str, Arc<str>)>) -> Self {
        Self(pairs.into())
    }

    /// Whether `self` and `other` are the same set (not merely equal ones).
    pub fn ptr_eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }

    /// The pairs, in order.
    pub fn iter(&self) -> impl Iterator<Item = (&'static str, &str)> + '_ {
        self.0.iter().map(|(k, v)| (*k, &**v))
    }
}

impl EncodeLabels for LabelPairs {
    fn encode(&self, w: &mut LabelWriter<'_>) {
        for (k, v) in self.iter() {
            w.label(k, v);
        }
    }
}

/// How many series a family keeps, and for how long one nobody records on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// The most label sets a family holds; lookups of further ones share a series whose
    /// client-chosen label values read `other` (and are counted in
    /// `metrics_series_overflow_total`).
    pub max_series: usize,
    /// A series no handle refers to any more (its connection, target or route is gone) is
    /// dropped this long after it was last seen held (`LINKERD2_PROXY_METRICS_RETAIN_IDLE`).
    pub retain_idle: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_series: 2_000,
            retain_idle: Duration::from_secs(10 * 60),
        }
    }
}

/// All metrics of one name, keyed by label set.
///
/// [`Family::get`] takes a lock and is meant to be called once per target; the returned
/// handle is then recorded on without any lock. The family is bounded by its [`Limits`]: at
/// most `max_series` label sets, and series nobody holds expire after `retain_idle`.
pub struct Family<L, M> {
    name: &'static str,
    help: &'static str,
    new_metric: fn() -> M,
    metrics: RwLock<HashMap<L, Series<M>>>,
    limits: RwLock<Limits>,
    /// The series of lookups past the cap, by their labels with every value a client could
    /// vary written as `other` (see [`LabelWriter::masked`]): a handful at most.
    overflow: RwLock<HashMap<String, M>>,
    overflowed: AtomicU64,
}

struct Series<M> {
    metric: M,
    /// Looked up since the last sweep (a counter bumped through `get(..).incr()` is in use
    /// though nobody keeps its handle).
    touched: AtomicBool,
    /// When a sweep first found the metric neither held nor looked up (reset when it is).
    unheld_since: Option<Instant>,
}

impl<L: EncodeLabels, M: Metric + Default> Family<L, M> {
    /// A family whose metrics start at their default value.
    pub fn new(name: &'static str, help: &'static str) -> Self {
        Self::new_with(name, help, M::default)
    }
}

impl<L: EncodeLabels, M: Metric> Family<L, M> {
    /// A family whose metrics are made by `new_metric` (e.g. a histogram with its buckets).
    pub fn new_with(name: &'static str, help: &'static str, new_metric: fn() -> M) -> Self {
        Self {
            name,
            help,
            new_metric,
            metrics: RwLock::new(HashMap::new()),
            limits: RwLock::new(Limits::default()),
            overflow: RwLock::new(HashMap::new()),
            overflowed: AtomicU64::new(0),
        }
    }

    /// The metric for these labels, created on first use. Keep the handle.
    ///
    /// Past the family's `max_series`, a new label set gets the shared overflow series.
    pub fn get(&self, labels: &L) -> M {
        if let Some(s) = self.metrics.read().get(labels) {
            s.touched.store(true, Ordering::Relaxed);
            return s.metric.clone();
        }
        let max = self.limits.read().max_series;
        let mut metrics = self.metrics.write();
        if let Some(s) = metrics.get(labels) {
            return s.metric.clone();
        }
        if metrics.len() >= max {
            drop(metrics);
            self.overflowed.fetch_add(1, Ordering::Relaxed);
            let mut key = String::new();
            labels.encode(&mut LabelWriter::masked(&mut key));
            if let Some(m) = self.overflow.read().get(&key) {
                return m.clone();
            }
            return self
                .overflow
                .write()
                .entry(key)
                .or_insert_with(self.new_metric)
                .clone();
        }
        let metric = (self.new_metric)();
        metrics.insert(
            labels.clone(),
            Series {
                metric: metric.clone(),
                touched: AtomicBool::new(true),
                unheld_since: None,
            },
        );
        metric
    }

    /// The family's metric name.
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// Sets the family's bounds (the registry's, when it is registered).
    pub fn set_limits(&self, limits: Limits) {
        *self.limits.write() = limits;
    }

    /// How many label sets the family holds (the overflow series aside).
    pub fn len(&self) -> usize {
        self.metrics.read().len()
    }

    /// Whether the family holds no label set.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Lookups that got the overflow series.
    pub fn overflowed(&self) -> u64 {
        self.overflowed.load(Ordering::Relaxed)
    }

    /// Drops series only the family has held for `retain_idle` (as of `now`).
    pub(crate) fn expire(&self, now: Instant) {
        let retain = self.limits.read().retain_idle;
        let mut metrics = self.metrics.write();
        metrics.retain(|_, s| {
            if s.touched.swap(false, Ordering::Relaxed) || s.metric.handles() > 1 {
                s.unheld_since = None;
                return true;
            }
            let since = *s.unheld_since.get_or_insert(now);
            now.saturating_duration_since(since) < retain
        });
    }

    pub(crate) fn encode(&self, out: &mut String) {
        let metrics = self.metrics.read();
        let overflow = self.overflow.read();
        if metrics.is_empty() && overflow.is_empty() {
            return;
        }
        out.push_str(&format!("# HELP {} {}\n", self.name, self.help));
        out.push_str(&format!("# TYPE {} {}\n", self.name, M::TYPE));
        let mut lines: Vec<(String, &M)> = metrics
            .iter()
            .map(|(l, s)| {
                let mut line = String::new();
                l.encode(&mut LabelWriter::new(&mut line));
                (line, &s.metric)
            })
            .collect();
        // A stable order makes the output easy to diff and to read.
        lines.sort_by(|a, b| a.0.cmp(&b.0));
        let mut others: Vec<(String, &M)> = overflow.iter().map(|(k, m)| (k.clone(), m)).collect();
        others.sort_by(|a, b| a.0.cmp(&b.0));
        lines.extend(others);
        for (labels, m) in lines {
            m.encode(self.name, &labels, out);
        }
    }
}

/// The value of every label of a family's overflow series.
pub const OVERFLOW_VALUE: &str = "other";

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Counter, Registry};

    #[derive(Clone, PartialEq, Eq, Hash)]
    struct Authority(String);

    impl EncodeLabels for Authority {
        fn encode(&self, w: &mut LabelWriter<'_>) {
            w.label("direction", "inbound").label("authority", &self.0);
        }
    }

    fn family(limits: Limits) -> (Registry, Arc<Family<Authority, Counter>>) {
        let mut reg = Registry::with_limits(limits);
        let fam = Arc::new(Family::new("request_total", "Requests."));
        reg.register(fam.clone());
        (reg, fam)
    }

    #[test]
    fn lookups_past_the_cap_share_one_other_series_and_are_counted() {
        let (reg, fam) = family(Limits {
            max_series: 3,
            ..Limits::default()
        });
        for i in 0..10 {
            fam.get(&Authority(format!("host-{i}"))).incr();
        }
        // Known label sets keep their own series at the cap.
        fam.get(&Authority("host-0".into())).incr();
        assert_eq!(fam.len(), 3);
        let text = reg.encode();
        assert!(
            text.contains("request_total{direction=\"inbound\",authority=\"host-0\"} 2\n"),
            "{text}"
        );
        assert!(
            text.contains("request_total{direction=\"inbound\",authority=\"other\"} 7\n"),
            "{text}"
        );
        assert!(
            text.contains("metrics_series_overflow_total{metric=\"request_total\"} 7\n"),
            "{text}"
        );
        assert_eq!(text.matches("request_total{").count(), 4, "{text}");
    }

    #[test]
    fn series_nobody_holds_or_looks_up_expire_after_retain_idle() {
        let retain_idle = Duration::from_secs(600);
        let (_reg, fam) = family(Limits {
            retain_idle,
            ..Limits::default()
        });
        let held = fam.get(&Authority("held".into()));
        fam.get(&Authority("dropped".into())).incr();
        fam.get(&Authority("bumped".into())).incr();
        let t0 = Instant::now();
        // The first sweep sees every series as just used.
        fam.expire(t0);
        fam.expire(t0 + Duration::from_secs(1));
        // `bumped` is looked up again and again, without anyone keeping its handle.
        fam.get(&Authority("bumped".into())).incr();
        fam.expire(t0 + retain_idle);
        fam.get(&Authority("bumped".into())).incr();
        fam.expire(t0 + retain_idle + Duration::from_secs(2));
        assert_eq!(fam.len(), 2, "only the idle, unheld series is gone");
        assert_eq!(
            fam.get(&Authority("dropped".into())).value(),
            0,
            "it starts over"
        );
        assert_eq!(fam.get(&Authority("bumped".into())).value(), 3);
        held.incr();
        assert_eq!(fam.get(&Authority("held".into())).value(), 1);
    }

    #[test]
    fn long_label_values_are_cut() {
        let (reg, fam) = family(Limits::default());
        fam.get(&Authority("é".repeat(4096))).incr();
        let text = reg.encode();
        let line = text
            .lines()
            .find(|l| l.starts_with("request_total{"))
            .unwrap();
        assert!(line.len() < crate::MAX_LABEL_VALUE_LEN + 64, "{line}");
        assert_eq!(crate::bounded(&"é".repeat(200)).len(), 256);
        assert_eq!(crate::bounded(&"a".repeat(300)).len(), 256);
        assert_eq!(crate::bounded("short"), "short");
    }
}
