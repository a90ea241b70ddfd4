//! Wiring: binds the listeners, builds what each direction's stacks share, and runs the
//! accept loops and the admin server until shutdown.

use crate::{
    admin, config, control,
    inbound::{policy::AuthzMetrics, Inbound},
    outbound::{discover, Outbound},
    own::OwnListeners,
    process, Config, ConfigError, LogHandle,
};
use linkerd_connect::Connector;
use linkerd_http::{Client, HttpMetrics, PoolMetrics};
use linkerd_metrics::{Counter, Family, LabelPairs, Registry};
use linkerd_proxy_api::client::ControlMetrics;
use linkerd_proxy_transport::{
    accept, bind, Accepted, Direction, OrigDst, SoOriginalDst, SocketOptions, TcpMetrics,
};
use std::{
    net::SocketAddr,
    sync::{atomic::AtomicBool, Arc},
    time::{Duration, SystemTime},
};
use tokio::net::TcpListener;
use tokio_util::{sync::CancellationToken, task::TaskTracker};
use tower::{util::BoxCloneSyncService, BoxError, ServiceExt};
use tracing::Instrument;

/// A connection stack: a service over one accepted connection. Each direction's stack is
/// boxed here, the seam between the accept loop and the stacks, so its type is one line.
pub(crate) type ConnStack = BoxCloneSyncService<Accepted, (), BoxError>;

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
    /// The second outbound listener's address (`_OUTBOUND_LISTEN_ADDRS` with two).
    pub outbound_also_addr: Option<SocketAddr>,
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
    /// A variable could not be used.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The local key or credentials could not be made.
    #[error("failed to set up identity: {0}")]
    Identity(#[from] linkerd_identity::Error),
    /// The TLS configs could not be built.
    #[error("failed to set up TLS: {0}")]
    Tls(#[from] linkerd_tls::Error),
    /// A control-plane channel could not be built.
    #[error(transparent)]
    Control(#[from] control::ControlError),
    /// A listener could not be bound.
    #[error("failed to start the {listener} listener: {source}")]
    Listen {
        /// Which listener.
        listener: &'static str,
        /// What failed.
        #[source]
        source: linkerd_proxy_transport::Error,
    },
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
            mut config,
            orig_dst,
            log,
        } = self;
        let (inbound_listener, inbound_addr) = listen(
            "inbound",
            config.inbound.listen_addr,
            config.inbound.backlog,
        )?;
        let (outbound_listener, outbound_addr) = listen(
            "outbound",
            config.outbound.listen_addr,
            config.outbound.backlog,
        )?;
        let outbound_also = match config.outbound.also_listen_addr {
            Some(addr) => Some(listen("outbound", addr, config.outbound.backlog)?),
            None => None,
        };
        let outbound_also_addr = outbound_also.as_ref().map(|(_, a)| *a);
        let (admin_listener, admin_addr) = listen(
            "admin",
            config.admin_listen_addr,
            linkerd_proxy_transport::DEFAULT_BACKLOG,
        )?;
        let own = OwnListeners::with_local_ips(
            [inbound_addr, outbound_addr, admin_addr]
                .into_iter()
                .chain(outbound_also_addr)
                .collect(),
            config.inbound_ips.clone(),
        );

        let mut registry = Registry::with_limits(config.metrics);
        let tcp = TcpMetrics::register(&mut registry);
        let http_metrics = HttpMetrics::register(&mut registry)
            .with_inbound_authority(config.inbound_authority_labels);
        registry.register_collector(process::collector(SystemTime::now()));
        let control_metrics = ControlMetrics::register(&mut registry);
        let tls = match &config.identity {
            Some(id) => Some(start_identity(
                id,
                config.outbound.client.connect_timeout,
                &control_metrics,
                &mut registry,
            )?),
            None => None,
        };
        // Registered after discovery's, so /metrics lists the families in the order it always
        // has.
        let pool_metrics = PoolMetrics::new();
        let shutdown = CancellationToken::new();
        let tracker = TaskTracker::new();
        let ready = Arc::new(AtomicBool::new(false));

        // Outbound: the app's connections to the world, dialed with mTLS to meshed endpoints.
        let connector = Connector::new(
            tls.clone(),
            config.outbound.client.connect_timeout,
            tcp.clone(),
            Direction::Outbound,
        )
        .with_socket_options(config.outbound.connect);
        let client = Client::new(
            config.outbound.client.clone(),
            Direction::Outbound,
            pool_metrics.clone(),
            connector.clone(),
            tls.is_some(),
        );
        let endpoints = discover::NewEndpoint::new(
            &client,
            &connector,
            &http_metrics,
            tls.is_some(),
            config.inbound_ips.clone().into(),
        );
        let discovery = match &config.discovery {
            Some(d) => {
                let control = config::ControlAddr {
                    addr: d.addr.clone(),
                    name: d.name.clone(),
                };
                let connect_timeout = config.outbound.client.connect_timeout;
                let channel = control::channel(
                    "destination",
                    &control,
                    tls.as_ref(),
                    connect_timeout,
                    &control_metrics,
                )?;
                let discovery = discover::Discovery::new(d, channel, connect_timeout, endpoints);
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
        let stall_resets = Arc::new(Family::<LabelPairs, Counter>::new(
            "http2_send_stall_resets_total",
            "HTTP/2 streams reset because their client did not take the response: past the send-stall timeout, or beyond the connection's share of stalled streams.",
        ));
        registry.register(stall_resets.clone());
        for (direction, server) in [
            ("outbound", &mut config.outbound.server),
            ("inbound", &mut config.inbound.server),
        ] {
            let counter = |reason: &'static str| {
                stall_resets.get(&LabelPairs::new(vec![
                    ("direction", Arc::from(direction)),
                    ("reason", Arc::from(reason)),
                ]))
            };
            let mut stall = (*server.h2_send_stall).clone();
            stall.resets = linkerd_http::StallResets {
                timeout: counter("timeout"),
                share: counter("share"),
            };
            // Each direction counts its own clients.
            stall.clients = Default::default();
            server.h2_send_stall = Arc::new(stall);
        }
        let authz = AuthzMetrics::register(&mut registry);
        pool_metrics.register_in(&mut registry);
        let policy_channel = match &config.policy_control {
            Some(p) => Some(control::channel(
                "policy",
                &p.control,
                tls.as_ref(),
                config.outbound.client.connect_timeout,
                &control_metrics,
            )?),
            None => None,
        };
        let outbound = Outbound::new(
            &config,
            connector,
            client,
            tcp.clone(),
            http_metrics.clone(),
            own.clone(),
            discovery,
            policy_channel.clone(),
            tls.is_some(),
            shutdown.clone(),
        );

        // Inbound: the world's connections to the app, on loopback.
        let connector = Connector::new(
            None,
            config.inbound.client.connect_timeout,
            tcp.clone(),
            Direction::Inbound,
        )
        .with_socket_options(config.inbound.connect);
        let client = Client::new(
            config.inbound.client.clone(),
            Direction::Inbound,
            pool_metrics,
            connector.clone(),
            false,
        );
        let inbound = Inbound::new(
            &config,
            tls.clone(),
            connector,
            client,
            http_metrics.clone(),
            tcp,
            authz,
            own,
            shutdown.clone(),
            policy_channel,
            admin_addr.port(),
        );

        // The accept loops are tracked too, so `drained` returns only once the listeners are
        // closed (their ports can be bound again).
        let outbound_stack = outbound.stack();
        let refused = Arc::new(Family::<LabelPairs, Counter>::new(
            "tcp_accept_refused_total",
            "Connections closed as soon as they were accepted: the listener's connection limit was reached.",
        ));
        registry.register(refused.clone());
        let outbound_limit = ConnLimit::new(&refused, "outbound", config.outbound.max_connections);
        for listener in std::iter::once(outbound_listener).chain(outbound_also.map(|(l, _)| l)) {
            tracker.spawn(accept_loop(
                "outbound",
                listener,
                config.outbound.accept,
                orig_dst.clone(),
                shutdown.clone(),
                tracker.clone(),
                outbound_limit.clone(),
                outbound_stack.clone(),
            ));
        }
        tracker.spawn(accept_loop(
            "inbound",
            inbound_listener,
            config.inbound.accept,
            orig_dst,
            shutdown.clone(),
            tracker.clone(),
            ConnLimit::new(&refused, "inbound", config.inbound.max_connections),
            inbound.stack(),
        ));
        let admin_state = Arc::new(admin::Admin {
            registry,
            ready: ready.clone(),
            identity: tls.as_ref().map(|t| t.credentials().clone()),
            log,
            env: config.env.clone(),
            shutdown_enabled: config.shutdown_endpoint_enabled,
            shutdown: shutdown.clone(),
            policy: inbound.admin_policy(),
            http_metrics,
        });
        tokio::spawn(admin::serve(admin_state, admin_listener));

        ready.store(true, std::sync::atomic::Ordering::Release);
        let destination = config
            .discovery
            .as_ref()
            .map(|d| d.addr.as_str())
            .unwrap_or("none");
        match &config.identity {
            Some(id) => {
                tracing::info!(%inbound_addr, %outbound_addr, outbound_also_addr = ?outbound_also_addr, %admin_addr, %destination, identity = %id.id, identity_svc = %id.control.addr, "proxy started; meshed traffic is mTLS once the first certificate arrives")
            }
            None => {
                tracing::info!(%inbound_addr, %outbound_addr, outbound_also_addr = ?outbound_also_addr, %admin_addr, %destination, "proxy started; identity is not configured, so traffic between proxies is plaintext")
            }
        }
        Ok(Proxy {
            inbound_addr,
            outbound_addr,
            outbound_also_addr,
            admin_addr,
            shutdown,
            tracker,
            grace: config.shutdown_grace_period,
            ready,
        })
    }
}

/// Binds the `listener`'s address; an error names the listener and its address.
fn listen(
    listener: &'static str,
    addr: SocketAddr,
    backlog: u32,
) -> Result<(TcpListener, SocketAddr), Error> {
    let fail = |source| Error::Listen { listener, source };
    let l = bind(addr, backlog).map_err(fail)?;
    let local = l
        .local_addr()
        .map_err(|source| fail(linkerd_proxy_transport::Error::Bind { addr, source }))?;
    Ok((l, local))
}

/// Makes the local key, starts getting and renewing its certificate, and returns the TLS
/// configs that read it.
fn start_identity(
    config: &config::IdentityConfig,
    connect_timeout: Duration,
    control_metrics: &ControlMetrics,
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
    let channel = control::channel(
        "identity",
        &config.control,
        Some(&tls),
        connect_timeout,
        control_metrics,
    )?;
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

/// A direction's bound on connections served at once, and the count of those refused.
#[derive(Clone)]
struct ConnLimit {
    permits: Arc<tokio::sync::Semaphore>,
    max: usize,
    refused: Counter,
}

impl ConnLimit {
    fn new(refused: &Family<LabelPairs, Counter>, direction: &'static str, max: usize) -> Self {
        let labels = LabelPairs::new(vec![("direction", Arc::from(direction))]);
        Self {
            permits: Arc::new(tokio::sync::Semaphore::new(max)),
            max,
            refused: refused.get(&labels),
        }
    }
}

/// Accepts connections until shutdown, serving each through `stack` on its own task, at most
/// `limit` at once (one more is closed at once, counted and logged, rate-limited).
#[allow(clippy::too_many_arguments)]
async fn accept_loop(
    name: &'static str,
    listener: TcpListener,
    opts: SocketOptions,
    orig_dst: Arc<dyn OrigDst>,
    shutdown: CancellationToken,
    tracker: TaskTracker,
    limit: ConnLimit,
    stack: ConnStack,
) {
    loop {
        let conn = tokio::select! {
            res = accept(&listener, &*orig_dst, opts) => res,
            () = shutdown.cancelled() => {
                tracing::debug!(listener = name, "no longer accepting connections");
                return;
            }
        };
        match conn {
            Ok(conn) => {
                let Ok(permit) = limit.permits.clone().try_acquire_owned() else {
                    limit.refused.incr();
                    linkerd_stack::rate_limited!(WARN, listener = name, peer = %conn.client, max = limit.max, "connection limit reached; closing the new connection");
                    continue;
                };
                let span = tracing::info_span!(
                    "conn",
                    dir = name,
                    peer = %conn.client,
                    orig_dst = tracing::field::display(conn.orig_dst.map(|d| d.to_string()).unwrap_or_default()),
                    protocol = tracing::field::Empty,
                    client_id = tracing::field::Empty,
                );
                let serve = stack.clone().oneshot(conn);
                tracker.spawn(
                    async move {
                        if let Err(error) = serve.await {
                            linkerd_stack::rate_limited!(INFO, %error, "closing the connection");
                        }
                        drop(permit);
                    }
                    .instrument(span),
                );
            }
            Err(error) => {
                // E.g. EMFILE: back off briefly rather than spin.
                linkerd_stack::rate_limited!(WARN, listener = name, %error, "accept failed");
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_listener_that_fails_names_itself_and_its_address() {
        let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = taken.local_addr().unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let _guard = rt.enter();
        let err = listen("admin", addr, 16)
            .map(|_| ())
            .unwrap_err()
            .to_string();
        let named = format!("failed to start the admin listener: failed to bind {addr}: ");
        assert!(err.starts_with(&named), "{err}");
        let (_, bound) = listen("inbound", "127.0.0.1:0".parse().unwrap(), 16).unwrap();
        assert_ne!(bound.port(), 0, "the bound port, not the configured 0");
    }
}
