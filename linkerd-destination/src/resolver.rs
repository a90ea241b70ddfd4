//! Shared `Get` streams, reconnected with back-off.

use crate::Resolution;
use linkerd_metrics::{Counter, EncodeLabels, Family, LabelWriter, Registry};
use linkerd_proxy_api::destination::{destination_client::DestinationClient, GetDestination};
use parking_lot::Mutex;
use rand::RngExt;
use std::{collections::HashMap, sync::Arc, time::Duration};
use tokio::sync::watch;
use tonic::transport::{Channel, Endpoint as GrpcEndpoint};

/// How to reach the Destination service.
#[derive(Clone, Debug)]
pub struct DestinationConfig {
    /// `host:port` of the Destination service.
    pub addr: String,
    /// Sent as `context_token` with every lookup.
    pub context: String,
    /// A name's stream is closed this long after its last watcher goes away.
    pub idle_timeout: Duration,
    /// Reconnect back-off: starts here, doubles, with jitter, up to `max_backoff`.
    pub min_backoff: Duration,
    pub max_backoff: Duration,
    /// Timeout for connecting to the Destination service.
    pub connect_timeout: Duration,
}

/// The resolver could not be built.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid destination service address {addr:?}: {reason}")]
    InvalidAddr { addr: String, reason: String },
}

/// Resolves names through the Destination service, one shared stream per name.
#[derive(Clone)]
pub struct Resolver {
    inner: Arc<Inner>,
}

struct Inner {
    config: DestinationConfig,
    channel: Channel,
    streams: Mutex<HashMap<String, watch::Sender<Arc<Resolution>>>>,
    metrics: ControlMetrics,
}

#[derive(Clone)]
struct ControlMetrics {
    requests: Counter,
    success: Counter,
    failure: Counter,
}

#[derive(Clone, PartialEq, Eq, Hash)]
struct ControlLabels {
    addr: String,
    classification: Option<&'static str>,
}

impl EncodeLabels for ControlLabels {
    fn encode(&self, w: &mut LabelWriter<'_>) {
        w.label("addr", &self.addr);
        if let Some(c) = self.classification {
            w.label("classification", c);
        }
    }
}

impl Resolver {
    /// A resolver for the service at `config.addr` (connected lazily, on the first lookup).
    /// Must be called inside a Tokio runtime.
    pub fn new(config: DestinationConfig, registry: &mut Registry) -> Result<Self, Error> {
        let channel = GrpcEndpoint::from_shared(format!("http://{}", config.addr))
            .map_err(|e| Error::InvalidAddr {
                addr: config.addr.clone(),
                reason: e.to_string(),
            })?
            .connect_timeout(config.connect_timeout)
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(10))
            .keep_alive_timeout(Duration::from_secs(3))
            .connect_lazy();
        let requests = Arc::new(Family::<ControlLabels, Counter>::new(
            "control_request_total",
            "Total count of requests (streams opened) to the control plane.",
        ));
        let responses = Arc::new(Family::<ControlLabels, Counter>::new(
            "control_response_total",
            "Total count of control-plane responses (updates received, or stream failures).",
        ));
        registry.register(requests.clone());
        registry.register(responses.clone());
        let labels = |classification| ControlLabels {
            addr: config.addr.clone(),
            classification,
        };
        let metrics = ControlMetrics {
            requests: requests.get(&labels(None)),
            success: responses.get(&labels(Some("success"))),
            failure: responses.get(&labels(Some("failure"))),
        };
        Ok(Self {
            inner: Arc::new(Inner {
                config,
                channel,
                streams: Mutex::new(HashMap::new()),
                metrics,
            }),
        })
    }

    /// Watches `name` (`host:port`), sharing the stream with every other watcher of it.
    pub fn resolve(&self, name: &str) -> watch::Receiver<Arc<Resolution>> {
        let mut streams = self.inner.streams.lock();
        if let Some(tx) = streams.get(name) {
            return tx.subscribe();
        }
        let (tx, rx) = watch::channel(Arc::new(Resolution::default()));
        streams.insert(name.to_string(), tx.clone());
        tokio::spawn(follow(self.inner.clone(), name.to_string(), tx));
        rx
    }

    /// How many names have a stream open.
    pub fn streams(&self) -> usize {
        self.inner.streams.lock().len()
    }
}

/// Keeps `name`'s resolution current until nobody watches it for the idle timeout.
async fn follow(inner: Arc<Inner>, name: String, tx: watch::Sender<Arc<Resolution>>) {
    let cfg = &inner.config;
    let mut backoff = cfg.min_backoff;
    loop {
        // Each stream starts from nothing and describes the whole set: its first update
        // replaces what the last stream said (which stays served until then).
        let mut current = Resolution::default();
        let session = async {
            let mut client = DestinationClient::new(inner.channel.clone());
            inner.metrics.requests.incr();
            let req = GetDestination {
                scheme: "k8s".into(),
                path: name.clone(),
                context_token: cfg.context.clone(),
            };
            let mut stream = client.get(req).await?.into_inner();
            tracing::debug!(%name, "destination stream open");
            while let Some(update) = stream.message().await? {
                tracing::trace!(%name, ?update, "destination update");
                inner.metrics.success.incr();
                current.apply(update);
                tx.send_replace(Arc::new(current.clone()));
                backoff = cfg.min_backoff;
            }
            Ok::<_, tonic::Status>(())
        };
        tokio::select! {
            res = session => match res {
                Ok(()) => tracing::debug!(%name, "destination stream ended; reopening"),
                Err(status) => {
                    inner.metrics.failure.incr();
                    tracing::info!(%name, code = ?status.code(), message = %status.message(), "destination lookup failed; keeping the last known endpoints");
                }
            },
            () = idle(&inner, &name, &tx) => {
                tracing::debug!(%name, "no longer watched; closing its destination stream");
                return;
            }
        }
        // Back off with jitter (up to half the back-off again) before reopening.
        let jitter = rand::rng().random_range(0..=backoff.as_millis() as u64 / 2);
        let wait = backoff + Duration::from_millis(jitter);
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            () = idle(&inner, &name, &tx) => return,
        }
        backoff = (backoff * 2).min(cfg.max_backoff);
    }
}

/// Completes (and forgets the name) once nobody has watched it for the idle timeout.
async fn idle(inner: &Inner, name: &str, tx: &watch::Sender<Arc<Resolution>>) {
    loop {
        tx.closed().await;
        tokio::time::sleep(inner.config.idle_timeout).await;
        let mut streams = inner.streams.lock();
        // `resolve` subscribes under this lock, so the count can't change under us.
        if tx.receiver_count() == 0 {
            streams.remove(name);
            return;
        }
    }
}
