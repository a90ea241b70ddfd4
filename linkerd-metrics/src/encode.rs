//! The registry of families and the Prometheus text format.

use crate::{EncodeLabels, Family, Limits, Metric};
use std::{fmt::Display, fmt::Write, sync::Arc};
use tokio::time::Instant;

/// The longest label value written (longer ones are cut at a character boundary): a DNS name
/// with a port fits; a 4 KiB `Host` does not make every series it lands in 4 KiB.
pub const MAX_LABEL_VALUE_LEN: usize = 256;

/// `value`, cut to at most [`MAX_LABEL_VALUE_LEN`] bytes at a character boundary: for a label
/// value taken from a client (an authority), before it is kept in a label set.
pub fn bounded(value: &str) -> &str {
    if value.len() <= MAX_LABEL_VALUE_LEN {
        return value;
    }
    let mut end = MAX_LABEL_VALUE_LEN;
    while !value.is_char_boundary(end) {
        end -= 1;
    }
    &value[..end]
}

/// Writes `name="value"` pairs, separated by commas, escaping values.
pub struct LabelWriter<'a> {
    out: &'a mut String,
    first: bool,
    /// Whether values a client could vary are written as `other` (a family's overflow
    /// series).
    masked: bool,
}

/// Labels whose values come from a small fixed set, kept as they are in an overflow series so
/// that it still says which way, how protected and how answered its requests were.
const FIXED_VALUE_LABELS: [&str; 9] = [
    "direction",
    "peer",
    "tls",
    "no_tls_reason",
    "classification",
    "status_code",
    "grpc_status",
    "error",
    "errno",
];

/// Every family of the process, rendered in order of registration.
#[derive(Default)]
pub struct Registry {
    families: Vec<Arc<dyn EncodeFamily>>,
    collectors: Vec<Collector>,
    limits: Limits,
}

/// A function that appends already-formatted sample lines on every scrape.
type Collector = Box<dyn Fn(&mut String) + Send + Sync>;

trait EncodeFamily: Send + Sync {
    fn encode_family(&self, out: &mut String);
    fn expire_family(&self, now: Instant);
    fn family_name(&self) -> &'static str;
    fn family_overflowed(&self) -> u64;
}

impl<L: EncodeLabels, M: Metric> EncodeFamily for Family<L, M> {
    fn encode_family(&self, out: &mut String) {
        self.encode(out)
    }

    fn expire_family(&self, now: Instant) {
        self.expire(now)
    }

    fn family_name(&self) -> &'static str {
        self.name()
    }

    fn family_overflowed(&self) -> u64 {
        self.overflowed()
    }
}

// === impl LabelWriter ===

impl<'a> LabelWriter<'a> {
    /// A writer appending to `out`.
    pub fn new(out: &'a mut String) -> Self {
        Self {
            out,
            first: true,
            masked: false,
        }
    }

    /// A writer that writes [`OVERFLOW_VALUE`](crate::OVERFLOW_VALUE) for every label but
    /// those whose values come from a small fixed set (direction, TLS, status, error, ...).
    pub fn masked(out: &'a mut String) -> Self {
        Self {
            out,
            first: true,
            masked: true,
        }
    }

    /// Writes one label.
    pub fn label(&mut self, name: &str, value: impl Display) -> &mut Self {
        if !self.first {
            self.out.push(',');
        }
        self.first = false;
        self.out.push_str(name);
        self.out.push_str("=\"");
        let value = match self.masked && !FIXED_VALUE_LABELS.contains(&name) {
            true => crate::OVERFLOW_VALUE.to_string(),
            false => value.to_string(),
        };
        for c in bounded(&value).chars() {
            match c {
                '\\' => self.out.push_str("\\\\"),
                '"' => self.out.push_str("\\\""),
                '\n' => self.out.push_str("\\n"),
                c => self.out.push(c),
            }
        }
        self.out.push('"');
        self
    }
}

// === impl Registry ===

impl Registry {
    /// A registry whose families are bounded by `limits`.
    pub fn with_limits(limits: Limits) -> Self {
        Self {
            limits,
            ..Self::default()
        }
    }

    /// Adds a family, bounded by the registry's limits; it is rendered on every scrape.
    pub fn register<L: EncodeLabels, M: Metric>(&mut self, family: Arc<Family<L, M>>) {
        family.set_limits(self.limits);
        self.families.push(family);
    }

    /// Adds a function that appends already-formatted lines on every scrape (e.g. process stats).
    pub fn register_collector(&mut self, f: impl Fn(&mut String) + Send + Sync + 'static) {
        self.collectors.push(Box::new(f));
    }

    /// Renders every family in the Prometheus text exposition format (version 0.0.4).
    pub fn encode(&self) -> String {
        let mut out = String::with_capacity(16 * 1024);
        let now = Instant::now();
        for f in &self.families {
            f.expire_family(now);
            f.encode_family(&mut out);
        }
        let overflowed: Vec<_> = self
            .families
            .iter()
            .map(|f| (f.family_name(), f.family_overflowed()))
            .filter(|(_, n)| *n > 0)
            .collect();
        if !overflowed.is_empty() {
            out.push_str("# HELP metrics_series_overflow_total Lookups of a new label set past its family's series limit, counted under the family's `other` series.\n");
            out.push_str("# TYPE metrics_series_overflow_total counter\n");
            for (name, n) in overflowed {
                let _ = writeln!(
                    out,
                    "metrics_series_overflow_total{{metric=\"{name}\"}} {n}"
                );
            }
        }
        for c in &self.collectors {
            c(&mut out);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Counter;

    #[derive(Clone, PartialEq, Eq, Hash)]
    struct Dir(&'static str, String);

    impl EncodeLabels for Dir {
        fn encode(&self, w: &mut LabelWriter<'_>) {
            w.label("direction", self.0).label("authority", &self.1);
        }
    }

    #[test]
    fn renders_families_with_escaped_labels() {
        let fam = Arc::new(Family::<Dir, Counter>::new("request_total", "Requests."));
        let mut reg = Registry::default();
        reg.register(fam.clone());
        assert_eq!(reg.encode(), "", "an empty family renders nothing");

        let c = fam.get(&Dir("outbound", "a\"b".into()));
        c.incr();
        // The same labels return the same handle.
        fam.get(&Dir("outbound", "a\"b".into())).incr();
        let text = reg.encode();
        assert_eq!(
            text,
            "# HELP request_total Requests.\n# TYPE request_total counter\n\
             request_total{direction=\"outbound\",authority=\"a\\\"b\"} 2\n"
        );
    }
}
