//! Discovery: names under the discovery suffixes are resolved through the Destination API,
//! and each is balanced over its endpoints.
//!
//! One [`Service`] (a balancer following one name's resolution, over each endpoint's stacks)
//! is shared by every connection that talks to that name, and dropped once unused for the
//! discovery idle timeout.

pub(crate) use super::http::NewEndpoint;

use super::http::{EndpointStack, EndpointStacks, TcpConnect};
use crate::config::DiscoveryConfig;
use linkerd_balance::{Balance, Balancer, BalancerConfig};
use linkerd_connect::Meshed;
use linkerd_destination::{DestinationConfig, Profile, Resolution, Resolver};
use linkerd_identity::Id;
use linkerd_proxy_transport::{NoTlsReason, TlsLabel};
use parking_lot::Mutex;
use std::{
    collections::HashMap,
    fmt::Write,
    net::SocketAddr,
    sync::{Arc, Weak},
    time::Duration,
};
use tokio::{
    sync::{oneshot, watch},
    time::Instant,
};
use tower::BoxError;

/// A request balanced over a service's endpoints.
pub(crate) type HttpBalance =
    Balance<EndpointStacks, EndpointStack, linkerd_http::Error, HttpFailures>;

/// For failure accrual, a 5xx response is a failure (and so is any error but a connect
/// failure, which backs the endpoint off by itself).
pub(crate) enum HttpFailures {}

impl linkerd_balance::Classify<http::Response<linkerd_http::ProxyBody>> for HttpFailures {
    fn is_failure(rsp: &http::Response<linkerd_http::ProxyBody>) -> bool {
        rsp.status().is_server_error()
    }
}

/// A connection balanced over a service's endpoints.
pub(crate) type TcpBalance = Balance<EndpointStacks, TcpConnect, BoxError>;

/// The discovered services of the outbound proxy.
pub(crate) struct Discovery {
    resolver: Resolver,
    /// Expands short names (`web`, `web.ns`) with the system's search domains.
    dns: Option<linkerd_dns::Canonicalizer>,
    suffixes: Vec<String>,
    balancer: BalancerConfig,
    idle_timeout: Duration,
    profile_timeout: Duration,
    /// `None`: every original destination is looked up.
    profile_networks: Option<Vec<ipnet::IpNet>>,
    services: Mutex<HashMap<String, Arc<Service>>>,
    new_endpoint: NewEndpoint,
}

/// One discovered name (`host:port`) and its balancer.
pub(crate) struct Service {
    pub name: String,
    balancer: Arc<Balancer<EndpointStacks>>,
    /// Requests the balancer refused before any endpoint took them (the name does not
    /// exist, no endpoint in time, queue full) count here, under the name.
    pub unserved: linkerd_http::OnceRoute,
    last_used: Mutex<Instant>,
    /// Dropped with the service, which stops its follower task.
    _stop: oneshot::Sender<()>,
}

/// What [`Discovery::lookup`] found for an authority.
pub(crate) enum Lookup {
    /// The service it names, or none.
    Found(Option<Arc<Service>>),
    /// A short name: the service, if any, is known once DNS has expanded it.
    Canonicalize,
}

impl Discovery {
    /// Starts the resolver (connecting lazily) and the idle sweep. Needs a Tokio runtime.
    pub(crate) fn new(
        config: &DiscoveryConfig,
        channel: linkerd_proxy_api::client::ControlChannel,
        connect_timeout: Duration,
        new_endpoint: NewEndpoint,
    ) -> Arc<Self> {
        let resolver = Resolver::with_channel(
            DestinationConfig {
                addr: config.addr.clone(),
                context: config.context.clone(),
                idle_timeout: config.idle_timeout,
                min_backoff: Duration::from_millis(100),
                max_backoff: Duration::from_secs(10),
                connect_timeout,
                stream_limits: linkerd_destination::StreamLimits {
                    initial: config.control_streams.initial_timeout,
                    idle: config.control_streams.idle_timeout,
                    lifetime: config.control_streams.lifetime,
                },
            },
            channel,
        );
        let dns = match linkerd_dns::Canonicalizer::from_system(linkerd_dns::DnsConfig {
            min_ttl: config.dns_min_ttl,
            max_ttl: config.dns_max_ttl,
        }) {
            Ok(dns) => Some(dns),
            Err(error) => {
                tracing::warn!(%error, "short names will not be canonicalised");
                None
            }
        };
        let d = Arc::new(Self {
            resolver,
            dns,
            suffixes: config.suffixes.clone(),
            balancer: BalancerConfig {
                failfast_timeout: config.failfast_timeout,
                queue_capacity: config.queue_capacity,
                ..BalancerConfig::default()
            },
            idle_timeout: config.idle_timeout,
            profile_timeout: config.profile_initial_timeout,
            profile_networks: config.profile_networks.clone(),
            services: Mutex::new(HashMap::new()),
            new_endpoint,
        });
        tokio::spawn(sweep(Arc::downgrade(&d)));
        d
    }

    /// The service for an authority (`host[:port]`), when the host is under a suffix.
    pub(crate) fn service(&self, authority: &str) -> Option<Arc<Service>> {
        let name = self.name(authority)?;
        let mut services = self.services.lock();
        if let Some(s) = services.get(&name) {
            *s.last_used.lock() = Instant::now();
            return Some(s.clone());
        }
        let (stop, stopped) = oneshot::channel();
        let svc = Arc::new(Service {
            balancer: Arc::new(Balancer::new(name.clone(), self.balancer.clone())),
            unserved: self.new_endpoint.unserved(&name),
            name: name.clone(),
            last_used: Mutex::new(Instant::now()),
            _stop: stop,
        });
        tokio::spawn(follow(
            Arc::downgrade(&svc),
            self.resolver.resolve(&name),
            self.new_endpoint.clone(),
            stopped,
        ));
        services.insert(name, svc.clone());
        Some(svc)
    }

    /// What the control plane says about an original destination, waiting at most the profile
    /// initial timeout for a first answer; `None` when it has not answered by then.
    /// `GetProfile` for an original destination in the profile networks
    /// (`LINKERD2_PROXY_DESTINATION_PROFILE_NETWORKS`); `None` outside them, or without an
    /// answer within the initial timeout.
    pub(crate) async fn profile(&self, addr: SocketAddr) -> Option<Arc<Profile>> {
        if let Some(nets) = &self.profile_networks {
            if !nets.iter().any(|n| n.contains(&addr.ip())) {
                return None;
            }
        }
        let mut rx = self.resolver.profile(&addr.to_string());
        let answered = async {
            loop {
                if rx.borrow_and_update().received {
                    return;
                }
                if rx.changed().await.is_err() {
                    return;
                }
            }
        };
        let _ = tokio::time::timeout(self.profile_timeout, answered).await;
        let p = rx.borrow().clone();
        p.received.then_some(p)
    }

    /// The service an authority (`host[:port]`) names, or, for a short name (`web`, `web.ns`,
    /// `web.ns.svc`) that names none as written, that it must first be expanded with the DNS
    /// search domains ([`Discovery::canonical`]).
    pub(crate) fn lookup(&self, authority: &str) -> Lookup {
        if let Some(s) = self.service(authority) {
            return Lookup::Found(Some(s));
        }
        let short = self.dns.is_some()
            && authority.parse::<http::uri::Authority>().is_ok_and(|auth| {
                let host = auth.host();
                !host.ends_with('.')
                    && host.split('.').count() <= 3
                    && host.parse::<std::net::IpAddr>().is_err()
                    && !host.starts_with('[')
            });
        match short {
            true => Lookup::Canonicalize,
            false => Lookup::Found(None),
        }
    }

    /// The service a short name names once expanded with the DNS search domains.
    pub(crate) async fn canonical(&self, authority: &str) -> Option<Arc<Service>> {
        let dns = self.dns.as_ref()?;
        let auth: http::uri::Authority = authority.parse().ok()?;
        match dns.canonicalize(auth.host()).await {
            Ok(fqdn) => self.service(&format!("{fqdn}:{}", auth.port_u16().unwrap_or(80))),
            Err(error) => {
                tracing::debug!(%error, "not canonicalised");
                None
            }
        }
    }

    /// `host:port` for a discoverable authority: lower case, no trailing dot, port 80 if none.
    fn name(&self, authority: &str) -> Option<String> {
        let auth: http::uri::Authority = authority.parse().ok()?;
        let host = auth.host().trim_end_matches('.').to_ascii_lowercase();
        if host.parse::<std::net::IpAddr>().is_ok() || host.starts_with('[') {
            return None;
        }
        let dotted = format!("{host}.");
        self.suffixes
            .iter()
            .any(|s| s == "." || dotted.ends_with(&format!(".{s}")) || dotted == *s)
            .then(|| format!("{host}:{}", auth.port_u16().unwrap_or(80)))
    }

    /// How to reach endpoint `e` with mTLS, if at all (see [`NewEndpoint::meshed`]).
    pub(crate) fn meshed(&self, e: &linkerd_destination::Endpoint) -> Option<Meshed> {
        self.new_endpoint.meshed(e)
    }

    /// Renders the balancer metrics of every discovered service, with upstream's names and
    /// `parent_*`/`backend_*` labels (the Service the name is; its own backend).
    pub(crate) fn encode_metrics(&self, out: &mut String) {
        let services: Vec<Arc<Service>> = self.services.lock().values().cloned().collect();
        if services.is_empty() {
            return;
        }
        let stats: Vec<_> = services
            .iter()
            .map(|s| (parent_labels(&s.name), s.balancer.stats()))
            .collect();
        type Value = fn(&linkerd_balance::BalancerStats) -> u64;
        let families: [(&str, &str, &str, Option<&str>, Value); 6] = [
            (
                "endpoints",
                "gauge",
                "Endpoints of a balancer, by readiness.",
                Some("ready"),
                |st| st.ready as u64,
            ),
            ("endpoints", "gauge", "", Some("pending"), |st| {
                (st.endpoints - st.ready) as u64
            }),
            (
                "queue_length",
                "gauge",
                "Requests waiting for an endpoint.",
                None,
                |st| st.queued as u64,
            ),
            (
                "queue_requests_total",
                "counter",
                "Requests that asked the balancer for an endpoint.",
                None,
                |st| st.requests,
            ),
            (
                "p2c_endpoints",
                "gauge",
                "Endpoints the power-of-two-choices balancer chooses among.",
                None,
                |st| st.endpoints as u64,
            ),
            (
                "p2c_updates_total",
                "counter",
                "Discovery updates applied to the balancer.",
                None,
                |st| st.updates,
            ),
        ];
        for (name, kind, help, state, value) in families {
            let family = format!("outbound_http_balancer_{name}");
            if !help.is_empty() {
                let _ = writeln!(out, "# HELP {family} {help}\n# TYPE {family} {kind}");
            }
            for (labels, st) in &stats {
                let state = state
                    .map(|s| format!(",endpoint_state=\"{s}\""))
                    .unwrap_or_default();
                let _ = writeln!(out, "{family}{{{labels}{state}}} {}", value(st));
            }
        }
    }
}

/// The `parent_*` and `backend_*` labels of a discovered name `host:port`: a Kubernetes
/// Service `name.namespace.svc...` (else the host as the name, no namespace), its own
/// backend. Names are DNS names: nothing to escape.
fn parent_labels(authority: &str) -> String {
    let (host, port) = authority.rsplit_once(':').unwrap_or((authority, ""));
    let mut parts = host.split('.');
    let name = parts.next().unwrap_or(host);
    let ns = match (parts.next(), parts.next()) {
        (Some(ns), Some("svc")) => ns,
        _ => "",
    };
    let one = |p: &str| {
        format!(
            "{p}_group=\"core\",{p}_kind=\"Service\",{p}_namespace=\"{ns}\",{p}_name=\"{name}\",{p}_port=\"{port}\",{p}_section_name=\"\""
        )
    };
    format!("{},{}", one("parent"), one("backend"))
}

/// Applies a name's resolution changes to its balancer until the service is dropped.
async fn follow(
    svc: Weak<Service>,
    mut rx: watch::Receiver<Arc<Resolution>>,
    new_endpoint: NewEndpoint,
    mut stopped: oneshot::Receiver<()>,
) {
    let mut prev = Arc::new(Resolution::default());
    loop {
        let next = rx.borrow_and_update().clone();
        let Some(s) = svc.upgrade() else { return };
        match next.exists {
            None => {}
            Some(exists) if next.endpoints.is_empty() => s.balancer.no_endpoints(exists),
            Some(_) => {
                let (changed, removed) = prev.diff(&next);
                s.balancer.update(
                    changed.into_iter().map(|e| {
                        let stacks = new_endpoint.new_endpoint(&s.name, e);
                        // A weight the control plane left unset counts as 1.
                        (e.addr, e.weight.max(1), stacks)
                    }),
                    &removed,
                );
            }
        }
        drop(s);
        prev = next;
        tokio::select! {
            res = rx.changed() => if res.is_err() { return },
            _ = &mut stopped => return,
        }
    }
}

/// Forgets services unused for the idle timeout (their lookups close after it too).
async fn sweep(d: Weak<Discovery>) {
    let period = match d.upgrade() {
        Some(d) => d.idle_timeout.max(Duration::from_millis(100)),
        None => return,
    };
    loop {
        tokio::time::sleep(period).await;
        let Some(d) = d.upgrade() else { return };
        d.services.lock().retain(|_, s| {
            Arc::strong_count(s) > 1 || s.last_used.lock().elapsed() < d.idle_timeout
        });
    }
}

/// How to reach a discovered endpoint's proxy with mTLS, if discovery named its identity.
pub(crate) fn meshed(e: &linkerd_destination::Endpoint) -> Option<Meshed> {
    let name = e.identity.as_deref()?;
    match Id::parse(name) {
        Ok(server_id) => Some(Meshed {
            server_id,
            opaque_port: e.opaque_transport_port,
        }),
        Err(error) => {
            tracing::warn!(addr = %e.addr, %error, "ignoring the endpoint's identity; it will be reached in plaintext");
            None
        }
    }
}

/// The TLS label of connections to an endpoint.
pub(crate) fn tls_label(meshed: Option<&Meshed>, tls_enabled: bool) -> TlsLabel {
    match (meshed, tls_enabled) {
        (_, false) => TlsLabel::NoIdentity(NoTlsReason::Disabled),
        (None, true) => TlsLabel::NoIdentity(NoTlsReason::NotProvidedByServiceDiscovery),
        (Some(m), true) => TlsLabel::Tls {
            client_id: None,
            server_id: Some(m.server_id.as_str().into()),
        },
    }
}

impl Service {
    /// Failure accrual as a policy of this service's parent configures it (`None`: off).
    pub(crate) fn set_accrual(&self, accrual: Option<&linkerd_policy::outbound::FailureAccrual>) {
        self.balancer
            .set_accrual(accrual.map(|a| linkerd_balance::Accrual {
                max_failures: a.max_failures.max(1),
                min_backoff: a.backoff.min,
                max_backoff: a.backoff.max,
                jitter: a.backoff.jitter,
                min_ready: usize::try_from(a.min_ready_endpoints).unwrap_or(usize::MAX),
            }));
    }

    /// The queue a policy gives this service's backend: how many requests may wait for an
    /// endpoint, and for how long.
    pub(crate) fn set_queue(&self, queue: &linkerd_policy::outbound::Queue) {
        self.balancer
            .set_queue(queue.capacity, queue.failfast_timeout);
    }

    /// Whether an endpoint is ready (not backed off).
    pub(crate) fn has_ready(&self) -> bool {
        self.balancer.stats().ready > 0
    }

    /// Requests balanced over the endpoints.
    pub(crate) fn http(&self) -> HttpBalance {
        Balance::new(
            self.balancer.clone(),
            |e| &e.http,
            linkerd_http::Error::is_connect_failure,
        )
    }

    /// Connections balanced over the endpoints; every failure to dial one backs it off.
    pub(crate) fn tcp(&self) -> TcpBalance {
        Balance::new(self.balancer.clone(), |e| &e.tcp, |_| true)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Discovery through a control plane that never answers (its names never get endpoints),
    /// with a one-second fail-fast timeout.
    pub(crate) fn discovery() -> Arc<Discovery> {
        let cfg = DiscoveryConfig {
            addr: "127.0.0.1:1".into(),
            name: None,
            context: String::new(),
            suffixes: vec!["svc.cluster.local.".into()],
            profile_networks: None,
            control_streams: Default::default(),
            idle_timeout: Duration::from_secs(5),
            queue_capacity: 10,
            failfast_timeout: Duration::from_secs(1),
            profile_initial_timeout: Duration::from_millis(500),
            dns_min_ttl: None,
            dns_max_ttl: None,
        };
        let channel = linkerd_proxy_api::client::ControlChannel::unmetered(
            tonic::transport::Endpoint::from_static("http://127.0.0.1:1").connect_lazy(),
        );
        let config = crate::test_util::config(&[]);
        let outbound = super::super::tests::outbound(&config, None);
        let new_endpoint = NewEndpoint::new(
            &outbound.client,
            &outbound.connector,
            &outbound.http_metrics,
            false,
            Vec::new().into(),
        );
        Discovery::new(&cfg, channel, Duration::from_secs(1), new_endpoint)
    }

    #[test]
    fn balancer_labels_name_the_service() {
        let l = parent_labels("web.ns.svc.cluster.local:8080");
        assert!(l.starts_with("parent_group=\"core\",parent_kind=\"Service\",parent_namespace=\"ns\",parent_name=\"web\",parent_port=\"8080\",parent_section_name=\"\",backend_group"), "{l}");
        let l = parent_labels("db.example:5432");
        assert!(
            l.contains("parent_namespace=\"\",parent_name=\"db\",parent_port=\"5432\""),
            "{l}"
        );
    }

    #[tokio::test]
    async fn names_under_suffixes() {
        let d = discovery();
        assert_eq!(
            d.name("web.default.svc.cluster.local:8080").as_deref(),
            Some("web.default.svc.cluster.local:8080")
        );
        assert_eq!(
            d.name("WEB.default.svc.cluster.local.").as_deref(),
            Some("web.default.svc.cluster.local:80")
        );
        assert_eq!(d.name("web.default.svc.cluster.local.evil.com"), None);
        assert_eq!(d.name("example.com:80"), None);
        assert_eq!(d.name("10.0.0.1:80"), None);
        assert_eq!(
            d.name("svc.cluster.local"),
            Some("svc.cluster.local:80".into())
        );
        let a = d.service("web.default.svc.cluster.local:8080").unwrap();
        let b = d.service("web.default.svc.cluster.local.:8080").unwrap();
        assert!(Arc::ptr_eq(&a, &b), "one service per name");
    }
}
