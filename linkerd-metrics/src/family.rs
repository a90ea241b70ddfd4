//! A family: one metric name, many label sets.

use crate::{encode::LabelWriter, Metric};
use parking_lot::RwLock;
use std::{collections::HashMap, hash::Hash, sync::Arc};

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

/// All metrics of one name, keyed by label set.
///
/// [`Family::get`] takes a lock and is meant to be called once per target; the returned
/// handle is then recorded on without any lock.
pub struct Family<L, M> {
    name: &'static str,
    help: &'static str,
    new_metric: fn() -> M,
    metrics: RwLock<HashMap<L, M>>,
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
        }
    }

    /// The metric for these labels, created on first use. Keep the handle.
    pub fn get(&self, labels: &L) -> M {
        if let Some(m) = self.metrics.read().get(labels) {
            return m.clone();
        }
        self.metrics
            .write()
            .entry(labels.clone())
            .or_insert_with(self.new_metric)
            .clone()
    }

    /// The family's metric name.
    pub fn name(&self) -> &'static str {
        self.name
    }

    pub(crate) fn encode(&self, out: &mut String) {
        let metrics = self.metrics.read();
        if metrics.is_empty() {
            return;
        }
        out.push_str(&format!("# HELP {} {}\n", self.name, self.help));
        out.push_str(&format!("# TYPE {} {}\n", self.name, M::TYPE));
        let mut lines: Vec<(String, &M)> = metrics
            .iter()
            .map(|(l, m)| {
                let mut s = String::new();
                l.encode(&mut LabelWriter::new(&mut s));
                (s, m)
            })
            .collect();
        // A stable order makes the output easy to diff and to read.
        lines.sort_by(|a, b| a.0.cmp(&b.0));
        for (labels, m) in lines {
            m.encode(self.name, &labels, out);
        }
    }
}
