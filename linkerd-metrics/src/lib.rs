//! Metric families and their Prometheus text encoding.
//!
//! This crate owns the metric types ([`Counter`], [`Gauge`], [`Histogram`]), families of them keyed
//! by a label set ([`Family`]), and the [`Registry`] that renders every family in the Prometheus
//! text format for the admin `/metrics` endpoint. A family is looked up once per target and the
//! returned handle kept: recording on a handle is a single atomic operation, with no lock.
//!
//! It does not know what is measured: the transport and HTTP families live with their crates,
//! and process metrics are registered by the application.
#![forbid(unsafe_code)]

mod encode;
mod family;
mod metric;

pub use self::encode::{bounded, LabelWriter, Registry, MAX_LABEL_VALUE_LEN};
pub use self::family::{EncodeLabels, Family, LabelPairs, Limits, NoLabels, OVERFLOW_VALUE};
pub use self::metric::{Counter, Gauge, GaugeGuard, Histogram, Metric};

/// Linkerd's latency buckets, in milliseconds (`response_latency_ms`,
/// `control_response_latency_ms`).
pub static LATENCY_BUCKETS_MS: [f64; 25] = [
    1.0, 2.0, 3.0, 4.0, 5.0, 10.0, 20.0, 30.0, 40.0, 50.0, 100.0, 200.0, 300.0, 400.0, 500.0,
    1000.0, 2000.0, 3000.0, 4000.0, 5000.0, 10000.0, 20000.0, 30000.0, 40000.0, 50000.0,
];
