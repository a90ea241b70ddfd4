//! Logging: a `tracing` subscriber, plain or JSON, whose filter can be changed at run time.

use crate::config::LogFormat;
use parking_lot::Mutex;
use std::sync::Arc;
use tracing_subscriber::{
    layer::SubscriberExt, reload, util::SubscriberInitExt, EnvFilter, Registry,
};

/// Reads and replaces the log filter of the running process (admin `/proxy-log-level`).
#[derive(Clone)]
pub struct LogHandle {
    reload: reload::Handle<EnvFilter, Registry>,
    current: Arc<Mutex<String>>,
}

/// Installs the global subscriber; `filter` must already be valid (the config checked it).
pub fn init(filter: &str, format: LogFormat) -> LogHandle {
    let env_filter = EnvFilter::try_new(filter).unwrap_or_else(|_| EnvFilter::new("warn"));
    let (filter_layer, reload) = reload::Layer::new(env_filter);
    // Diagnostics go to stdout, as linkerd2-proxy's do. Colours only for a terminal: a pod's
    // log collector would store the escape codes.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stdout());
    let plain = (format == LogFormat::Plain).then(|| {
        tracing_subscriber::fmt::layer()
            .with_ansi(ansi)
            .with_writer(std::io::stdout)
    });
    let json = (format == LogFormat::Json).then(|| {
        tracing_subscriber::fmt::layer()
            .json()
            .with_current_span(true)
            .with_span_list(true)
            .with_writer(std::io::stdout)
    });
    // A second init (e.g. tests) keeps the first subscriber.
    let _ = tracing_subscriber::registry()
        .with(filter_layer)
        .with(plain)
        .with(json)
        .try_init();
    LogHandle {
        reload,
        current: Arc::new(Mutex::new(filter.to_string())),
    }
}

impl LogHandle {
    /// The filter in force.
    pub fn get(&self) -> String {
        self.current.lock().clone()
    }

    /// Replaces the filter; an invalid one is refused and the old one kept.
    pub fn set(&self, filter: &str) -> Result<(), String> {
        let new = EnvFilter::try_new(filter).map_err(|e| e.to_string())?;
        self.reload.reload(new).map_err(|e| e.to_string())?;
        *self.current.lock() = filter.to_string();
        Ok(())
    }
}
