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

pub use self::encode::{LabelWriter, Registry};
pub use self::family::{EncodeLabels, Family, NoLabels};
pub use self::metric::{Counter, Gauge, GaugeGuard, Histogram, Metric};
