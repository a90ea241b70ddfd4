//! The registry of families and the Prometheus text format.

use crate::{EncodeLabels, Family, Metric};
use std::{fmt::Display, sync::Arc};

/// Writes `name="value"` pairs, separated by commas, escaping values.
pub struct LabelWriter<'a> {
    out: &'a mut String,
    first: bool,
}

/// Every family of the process, rendered in order of registration.
#[derive(Default)]
pub struct Registry {
    families: Vec<Arc<dyn EncodeFamily>>,
    collectors: Vec<Collector>,
}

/// A function that appends already-formatted sample lines on every scrape.
type Collector = Box<dyn Fn(&mut String) + Send + Sync>;

trait EncodeFamily: Send + Sync {
    fn encode_family(&self, out: &mut String);
}

impl<L: EncodeLabels, M: Metric> EncodeFamily for Family<L, M> {
    fn encode_family(&self, out: &mut String) {
        self.encode(out)
    }
}

// === impl LabelWriter ===

impl<'a> LabelWriter<'a> {
    /// A writer appending to `out`.
    pub fn new(out: &'a mut String) -> Self {
        Self { out, first: true }
    }

    /// Writes one label.
    pub fn label(&mut self, name: &str, value: impl Display) -> &mut Self {
        if !self.first {
            self.out.push(',');
        }
        self.first = false;
        self.out.push_str(name);
        self.out.push_str("=\"");
        for c in value.to_string().chars() {
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
    /// Adds a family; it is rendered on every scrape.
    pub fn register<L: EncodeLabels, M: Metric>(&mut self, family: Arc<Family<L, M>>) {
        self.families.push(family);
    }

    /// Adds a function that appends already-formatted lines on every scrape (e.g. process stats).
    pub fn register_collector(&mut self, f: impl Fn(&mut String) + Send + Sync + 'static) {
        self.collectors.push(Box::new(f));
    }

    /// Renders every family in the Prometheus text exposition format (version 0.0.4).
    pub fn encode(&self) -> String {
        let mut out = String::with_capacity(16 * 1024);
        for f in &self.families {
            f.encode_family(&mut out);
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
