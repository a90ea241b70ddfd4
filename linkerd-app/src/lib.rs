//! The `linkerd2-proxy` application: configuration from the environment, and the inbound,
//! outbound and admin stacks composed from the other crates.
//!
//! Read [`outbound`] and [`inbound`] top to bottom for the life of a connection. [`App`] binds
//! the listeners and runs the stacks; `main.rs` adds the runtime, logging and signals.
//!
//! This is the only crate that knows every other crate; it holds no protocol logic of its own.
#![forbid(unsafe_code)]

mod admin;
pub mod config;
mod control;
mod discover;
mod explicit;
mod http;
pub mod inbound;
mod log;
pub mod outbound;
pub mod policy;
mod process;
mod tcp;

pub use self::config::{Config, ConfigError, LogFormat};
pub use self::log::{init as init_logging, LogHandle};

use linkerd_detect::DetectParams;
use linkerd_http::{Client, HttpMetrics};
use linkerd_metrics::Registry;
use linkerd_proxy_transport::{
    accept, bind, Accepted, Direction, OrigDst, SoOriginalDst, TcpMetrics,
};
use std::{
    future::Future,
    net::SocketAddr,
    sync::{atomic::AtomicBool, Arc},
    time::{Duration, SystemTime},
};
use tokio::net::TcpListener;
use tokio_util::{sync::CancellationToken, task::TaskTracker};
use tracing::Instrument;

/// The proxy before it runs: its configuration and its seams.
pub struct App {
    config: Config,
    orig_dst: Arc<dyn OrigDst>,
    log: Option<LogHandle>,
}

/// A running proxy.
pub struct Proxy {
    /// The bound inbound listener address.
    pub inbound_addr: SocketAddr,
    /// The bound outbound listener address.
    pub outbound_addr: SocketAddr,
    /// The bound admin listener address.
    pub admin_addr: SocketAddr,
    shutdown: CancellationToken,
    tracker: TaskTracker,
    grace: Duration,
    ready: Arc<std::sync::atomic::AtomicBool>,
}

/// Failures starting the proxy.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("failed to set up identity: {0}")]
    Identity(#[from] linkerd_identity::Error),
    #[error("failed to set up TLS: {0}")]
    Tls(#[from] linkerd_tls::Error),
    #[error(transparent)]
    Control(#[from] control::ControlError),
    #[error("failed to start the {listener} listener: {source}")]
    Listen {
        listener: &'static str,
        #[source]
        source: linkerd_proxy_transport::Error,
    },
}

/// The proxy's own listener addresses: forwarding to one of them would loop.
#[derive(Clone, Debug)]
pub(crate) struct OwnListeners(Vec<SocketAddr>);

/// What one direction's connections share.
pub(crate) struct ProxyStack {
    /// mTLS, when the proxy has an identity.
    pub tls: Option<linkerd_tls::TlsConfigs>,
    /// The name peers use (SNI) to reach this proxy with mTLS.
    pub server_name: Option<linkerd_identity::Id>,
    /// Inbound authorization.
    pub policy: Arc<policy::Policy>,
    pub authz: policy::AuthzMetrics,
    pub detect: DetectParams,
    pub opaque_ports: config::PortSet,
    pub connect_timeout: Duration,
    pub tcp: TcpMetrics,
    pub http: Arc<http::HttpStack>,
}

// === impl App ===

impl App {
    /// A proxy with this configuration that reads `SO_ORIGINAL_DST`.
    pub fn new(config: Config) -> Self {
        Self {
            config,
            orig_dst: Arc::new(SoOriginalDst),
            log: None,
        }
    }

    /// Replaces the original-destination lookup (tests inject fixed addresses).
    pub fn with_orig_dst(mut self, orig_dst: impl OrigDst) -> Self {
        self.orig_dst = Arc::new(orig_dst);
        self
    }

    /// Lets the admin server read and change the log filter.
    pub fn with_log(mut self, log: LogHandle) -> Self {
        self.log = Some(log);
        self
    }

    /// Binds the listeners and starts serving on the current Tokio runtime.
    pub fn spawn(self) -> Result<Proxy, Error> {
        let Self {
            config,
            orig_dst,
            log,
        } = self;
        let listen =
            |listener, addr| bind(addr).map_err(|source| Error::Listen { listener, source });
        let inbound = listen("inbound", config.inbound.listen_addr)?;
        let outbound = listen("outbound", config.outbound.listen_addr)?;
        let admin = listen("admin", config.admin_listen_addr)?;
        let local = |l: &TcpListener, listener| {
            l.local_addr().map_err(|e| Error::Listen {
                listener,
                source: linkerd_proxy_transport::Error::Bind {
                    addr: config.admin_listen_addr,
                    source: e,
                },
            })
        };
        let inbound_addr = local(&inbound, "inbound")?;
        let outbound_addr = local(&outbound, "outbound")?;
        let admin_addr = local(&admin, "admin")?;
        let own = OwnListeners(vec![inbound_addr, outbound_addr, admin_addr]);

        let mut registry = Registry::default();
        let tcp = TcpMetrics::register(&mut registry);
        let http_metrics = HttpMetrics::register(&mut registry);
        registry.register_collector(process::collector(SystemTime::now()));
        let tls = match &config.identity {
            Some(id) => Some(start_identity(
                id,
                config.outbound.client.connect_timeout,
                &mut registry,
            )?),
            None => None,
        };
        let discovery = match &config.discovery {
            Some(d) => {
                let control = config::ControlAddr {
                    addr: d.addr.clone(),
                    name: d.name.clone(),
                };
                let connect_timeout = config.outbound.client.connect_timeout;
                let channel =
                    control::channel("destination", &control, tls.as_ref(), connect_timeout)?;
                let discovery =
                    discover::Discovery::new(d, channel, connect_timeout, &mut registry);
                let metrics = Arc::downgrade(&discovery);
                registry.register_collector(move |out| {
                    if let Some(d) = metrics.upgrade() {
                        d.encode_metrics(out)
                    }
                });
                Some(discovery)
            }
            None => None,
        };

        let authz = policy::AuthzMetrics::register(&mut registry);
        let pool_metrics = linkerd_http::PoolMetrics::register(&mut registry);
        let policy = Arc::new(config.policy.clone());
        let stack =
            |direction, cfg: &config::ProxyConfig, discovery: Option<Arc<discover::Discovery>>| {
                Arc::new(ProxyStack {
                    tls: tls.clone(),
                    server_name: config.identity.as_ref().map(|i| i.server_name.clone()),
                    policy: policy.clone(),
                    authz: authz.clone(),
                    detect: DetectParams {
                        timeout: cfg.detect_timeout,
                        capacity: 1024,
                    },
                    opaque_ports: config.opaque_ports.clone(),
                    connect_timeout: cfg.client.connect_timeout,
                    tcp: tcp.clone(),
                    http: Arc::new(http::HttpStack {
                        direction,
                        client: Client::new(
                            cfg.client.clone(),
                            direction,
                            tcp.clone(),
                            pool_metrics.clone(),
                            tls.clone(),
                        ),
                        tls_enabled: tls.is_some(),
                        metrics: http_metrics.clone(),
                        tcp: tcp.clone(),
                        own: own.clone(),
                        server: config.server.clone(),
                        connect_timeout: cfg.client.connect_timeout,
                        discovery,
                    }),
                })
            };
        let inbound_stack = stack(Direction::Inbound, &config.inbound, None);
        let outbound_stack = stack(Direction::Outbound, &config.outbound, discovery.clone());

        let shutdown = CancellationToken::new();
        let tracker = TaskTracker::new();
        let ready = Arc::new(AtomicBool::new(false));

        // The accept loops are tracked too, so `drained` returns only once the listeners are
        // closed (their ports can be bound again).
        tracker.spawn(accept_loop(
            "outbound",
            outbound,
            orig_dst.clone(),
            shutdown.clone(),
            tracker.clone(),
            move |conn, drain| outbound::serve(outbound_stack.clone(), conn, drain),
        ));
        tracker.spawn(accept_loop(
            "inbound",
            inbound,
            orig_dst,
            shutdown.clone(),
            tracker.clone(),
            move |conn, drain| inbound::serve(inbound_stack.clone(), conn, drain),
        ));
        let admin_state = Arc::new(admin::Admin {
            registry,
            ready: ready.clone(),
            identity: tls.as_ref().map(|t| t.credentials().clone()),
            log,
            env: config.env.clone(),
            shutdown_enabled: config.shutdown_endpoint_enabled,
            shutdown: shutdown.clone(),
        });
        tokio::spawn(admin::serve(admin_state, admin));

        ready.store(true, std::sync::atomic::Ordering::Release);
        let destination = config
            .discovery
            .as_ref()
            .map(|d| d.addr.as_str())
            .unwrap_or("none");
        match &config.identity {
            Some(id) => {
                tracing::info!(%inbound_addr, %outbound_addr, %admin_addr, %destination, identity = %id.id, identity_svc = %id.control.addr, "proxy started; meshed traffic is mTLS once the first certificate arrives")
            }
            None => {
                tracing::info!(%inbound_addr, %outbound_addr, %admin_addr, %destination, "proxy started; identity is not configured, so traffic between proxies is plaintext")
            }
        }
        Ok(Proxy {
            inbound_addr,
            outbound_addr,
            admin_addr,
            shutdown,
            tracker,
            grace: config.shutdown_grace_period,
            ready,
        })
    }
}

/// Makes the local key, starts getting and renewing its certificate, and returns the TLS
/// configs that read it.
fn start_identity(
    config: &config::IdentityConfig,
    connect_timeout: Duration,
    registry: &mut Registry,
) -> Result<linkerd_tls::TlsConfigs, Error> {
    use linkerd_identity::{CertifyConfig, Credentials, IdentityMetrics, LocalKey};
    let key = match &config.dir {
        Some(dir) => {
            tracing::info!(dir = %dir.display(), "using the injected key and CSR");
            LocalKey::load(dir)?
        }
        None => LocalKey::generate(&config.id)?,
    };
    let creds = Credentials::new(config.id.clone(), config.trust_anchors.clone(), &key);
    let tls = linkerd_tls::TlsConfigs::new(creds.clone())?;
    let channel = control::channel("identity", &config.control, Some(&tls), connect_timeout)?;
    let client = linkerd_proxy_api::identity::identity_client::IdentityClient::new(channel);
    let certify = CertifyConfig {
        token_file: config.token_file.clone(),
        min_refresh: config.min_refresh,
        max_refresh: config.max_refresh,
        request_timeout: Duration::from_secs(10),
    };
    let metrics = IdentityMetrics::register(registry);
    tokio::spawn(linkerd_identity::refresh(
        creds, key.csr, client, certify, metrics,
    ));
    Ok(tls)
}

/// Accepts connections until shutdown, serving each on its own task.
async fn accept_loop<F, Fut>(
    name: &'static str,
    listener: TcpListener,
    orig_dst: Arc<dyn OrigDst>,
    shutdown: CancellationToken,
    tracker: TaskTracker,
    serve: F,
) where
    F: Fn(Accepted, CancellationToken) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    loop {
        let conn = tokio::select! {
            res = accept(&listener, &*orig_dst) => res,
            () = shutdown.cancelled() => {
                tracing::debug!(listener = name, "no longer accepting connections");
                return;
            }
        };
        match conn {
            Ok(conn) => {
                let span = tracing::info_span!(
                    "conn",
                    dir = name,
                    peer = %conn.client,
                    orig_dst = tracing::field::display(conn.orig_dst.map(|d| d.to_string()).unwrap_or_default()),
                    protocol = tracing::field::Empty,
                    client_id = tracing::field::Empty,
                );
                tracker.spawn(serve(conn, shutdown.clone()).instrument(span));
            }
            Err(error) => {
                // E.g. EMFILE: back off briefly rather than spin.
                tracing::warn!(listener = name, %error, "accept failed");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
}

// === impl Proxy ===

impl Proxy {
    /// Begins a graceful shutdown: stop accepting, let in-flight work finish.
    pub fn shutdown(&self) {
        self.shutdown.cancel();
    }

    /// Completes once shutdown has been requested (by [`Proxy::shutdown`] or `POST /shutdown`).
    pub async fn shutdown_requested(&self) {
        self.shutdown.cancelled().await
    }

    /// Waits for in-flight connections to finish after shutdown, for at most the grace period.
    /// Returns false when the grace period expired first.
    pub async fn drained(self) -> bool {
        self.shutdown.cancelled().await;
        self.ready
            .store(false, std::sync::atomic::Ordering::Release);
        self.tracker.close();
        match tokio::time::timeout(self.grace, self.tracker.wait()).await {
            Ok(()) => true,
            Err(_) => {
                tracing::warn!(grace_period = ?self.grace, remaining = self.tracker.len(), "grace period expired; closing remaining connections");
                false
            }
        }
    }
}

// === impl OwnListeners ===

impl OwnListeners {
    /// Whether `addr` reaches one of this proxy's listeners.
    pub(crate) fn contains(&self, addr: SocketAddr) -> bool {
        self.0.iter().any(|l| {
            l.port() == addr.port()
                && (l.ip() == addr.ip()
                    || l.ip().is_unspecified()
                        && (addr.ip().is_loopback() || addr.ip().is_unspecified())
                    || l.ip().is_loopback() && addr.ip().is_unspecified())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_listeners() {
        let own = OwnListeners(vec![
            "0.0.0.0:4143".parse().unwrap(),
            "127.0.0.1:4140".parse().unwrap(),
        ]);
        assert!(own.contains("127.0.0.1:4143".parse().unwrap()));
        assert!(own.contains("127.0.0.1:4140".parse().unwrap()));
        assert!(own.contains("0.0.0.0:4140".parse().unwrap()));
        assert!(!own.contains("127.0.0.1:8080".parse().unwrap()));
        assert!(!own.contains("10.0.0.2:4140".parse().unwrap()));
    }
}
