//! The pool's metrics.

use super::Version;
use linkerd_metrics::{Counter, EncodeLabels, Family, Gauge, LabelWriter, Registry};
use linkerd_proxy_transport::Direction;
use linkerd_tls::Id;
use std::{net::SocketAddr, sync::Arc};

/// Pool metrics, per (direction, endpoint, version, server identity):
/// `http_pool_connections_open`, `http_pool_connections_opened_total` and
/// `http_pool_requests_in_flight` (HTTP/2 streams, or HTTP/1 exchanges) and
/// `http_pool_requests_resent_total` (requests an HTTP/2 peer refused unprocessed, sent again).
#[derive(Clone)]
pub struct PoolMetrics {
    open: Arc<Family<PoolLabels, Gauge>>,
    opened: Arc<Family<PoolLabels, Counter>>,
    in_flight: Arc<Family<PoolLabels, Gauge>>,
    resent: Arc<Family<PoolLabels, Counter>>,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(super) struct PoolLabels {
    pub(super) direction: Direction,
    pub(super) addr: SocketAddr,
    pub(super) version: Version,
    pub(super) server_id: Option<Id>,
}

/// One pool's metric handles, looked up when the pool is made.
pub(super) struct PoolHandles {
    pub(super) open: Gauge,
    pub(super) opened: Counter,
    pub(super) in_flight: Gauge,
    pub(super) resent: Counter,
}

impl Default for PoolMetrics {
    fn default() -> Self {
        Self::new()
    }
}

impl PoolMetrics {
    /// Creates and registers the families.
    pub fn register(reg: &mut Registry) -> Self {
        let m = Self::new();
        m.register_in(reg);
        m
    }

    /// Creates the families, to be registered later ([`PoolMetrics::register_in`]).
    pub fn new() -> Self {
        Self {
            open: Arc::new(Family::new(
                "http_pool_connections_open",
                "Connections the HTTP client pool holds open, per endpoint.",
            )),
            opened: Arc::new(Family::new(
                "http_pool_connections_opened_total",
                "Connections the HTTP client pool has opened, per endpoint.",
            )),
            in_flight: Arc::new(Family::new(
                "http_pool_requests_in_flight",
                "Requests (HTTP/2 streams, or HTTP/1 exchanges) in flight on the pool's connections.",
            )),
            resent: Arc::new(Family::new(
                "http_pool_requests_resent_total",
                "Requests an HTTP/2 peer refused unprocessed (REFUSED_STREAM, or above its GOAWAY's last stream id) that the pool sent again.",
            )),
        }
    }

    /// Registers the families in `reg`.
    pub fn register_in(&self, reg: &mut Registry) {
        reg.register(self.open.clone());
        reg.register(self.opened.clone());
        reg.register(self.in_flight.clone());
        reg.register(self.resent.clone());
    }

    pub(super) fn handles(&self, labels: &PoolLabels) -> PoolHandles {
        PoolHandles {
            open: self.open.get(labels),
            opened: self.opened.get(labels),
            in_flight: self.in_flight.get(labels),
            resent: self.resent.get(labels),
        }
    }
}

impl EncodeLabels for PoolLabels {
    fn encode(&self, w: &mut LabelWriter<'_>) {
        let version = match self.version {
            Version::Http1 => "1",
            Version::Http2 => "2",
        };
        w.label("direction", self.direction.as_str())
            .label("target_addr", self.addr)
            .label("http_version", version);
        if let Some(id) = &self.server_id {
            w.label("server_id", id);
        }
    }
}
