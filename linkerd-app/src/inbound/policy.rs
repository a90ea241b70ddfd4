//! Inbound authorization: may this client talk to this port of the app?
//!
//! Evaluation is pure ([`Policy::check`]). The inbound connection stack decides once the app
//! port is known (`Decide`, step 4), and applies the decision once the protocol is
//! (`Authorize`, step 6): a refused TCP client is closed, a refused HTTP client gets 403 for
//! every request (the request layer in `inbound::http`); both are counted ([`AuthzMetrics`]).

use super::{server::Meta, tls::InboundTls};
use super::{
    server::ServerProtocol,
    watch::{PolicyStore, PortPolicy},
};
use crate::PortSet;
use ipnet::IpNet;
use linkerd_detect::{Detected, Protocol};
use linkerd_http::PolicyLabels;
use linkerd_identity::Id;
use linkerd_metrics::{Counter, EncodeLabels, Family, LabelWriter, NoLabels, Registry};
use linkerd_proxy_transport::TlsLabel;
use linkerd_tls::{SessionProtocol, TransportHeader};
use std::{
    net::{IpAddr, SocketAddr},
    str::FromStr,
    sync::Arc,
};
use tokio::sync::watch;
use tower::{
    filter::{AsyncPredicate, Predicate},
    BoxError,
};

/// What the proxy does with clients no port override covers
/// (`LINKERD2_PROXY_INBOUND_DEFAULT_POLICY`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DefaultPolicy {
    /// Everyone.
    AllUnauthenticated,
    /// Clients with a verified identity (mTLS with a client certificate).
    AllAuthenticated,
    /// Clients in the cluster networks with a verified identity.
    ClusterAuthenticated,
    /// Clients in the cluster networks.
    ClusterUnauthenticated,
    /// No one.
    Deny,
    /// Everyone; clients `all-authenticated` would refuse are logged and counted.
    Audit,
}

/// The inbound authorization policy.
#[derive(Clone, Debug, PartialEq)]
pub struct Policy {
    /// `LINKERD2_PROXY_INBOUND_DEFAULT_POLICY`.
    pub default: DefaultPolicy,
    /// `LINKERD2_PROXY_POLICY_CLUSTER_NETWORKS`.
    pub cluster_networks: Vec<IpNet>,
    /// Ports where every client must have an identity, whatever the default.
    pub require_identity: PortSet,
    /// Ports where every client must use TLS (terminated by this proxy), whatever the default.
    pub require_tls: PortSet,
}

/// How the client reached the proxy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ClientAuth {
    /// Not TLS terminated by the proxy (plaintext, or the app's own TLS passed through).
    Plaintext,
    /// TLS without a client certificate.
    Tls,
    /// mTLS: the client proved this identity.
    Authenticated(Id),
}

/// A policy's answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    /// The client may use the port.
    Allow,
    /// The client is refused.
    Deny(Denial),
    /// Allowed by `audit`, but `all-authenticated` would have refused it.
    Audit(Denial),
}

/// Why a client is (or would be) refused, and by which rule.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Denial {
    /// The rule: a default policy's name, or `require-identity` / `require-tls`.
    pub policy: &'static str,
    /// Why.
    pub reason: DenyReason,
}

/// Why a client is refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DenyReason {
    /// The client did not prove an identity.
    Unauthenticated,
    /// The client did not use TLS.
    Plaintext,
    /// The client's address is outside the cluster networks.
    OutsideClusterNetworks,
    /// The default policy is `deny`.
    DenyAll,
}

/// Linkerd's default cluster networks.
pub const DEFAULT_CLUSTER_NETWORKS: &str =
    "10.0.0.0/8,100.64.0.0/10,172.16.0.0/12,192.168.0.0/16,fd00::/8";

impl Policy {
    /// Decides for a client connecting to the app's `port`.
    pub fn check(&self, port: u16, client: IpAddr, auth: &ClientAuth) -> Decision {
        let authenticated = matches!(auth, ClientAuth::Authenticated(_));
        let deny = |policy, reason| Decision::Deny(Denial { policy, reason });
        if self.require_identity.contains(port) {
            return match authenticated {
                true => Decision::Allow,
                false => deny("require-identity", DenyReason::Unauthenticated),
            };
        }
        if self.require_tls.contains(port) {
            return match auth {
                ClientAuth::Plaintext => deny("require-tls", DenyReason::Plaintext),
                _ => Decision::Allow,
            };
        }
        let policy = self.default.as_str();
        let in_cluster = || self.cluster_networks.iter().any(|n| n.contains(&client));
        match self.default {
            DefaultPolicy::AllUnauthenticated => Decision::Allow,
            DefaultPolicy::AllAuthenticated if !authenticated => {
                deny(policy, DenyReason::Unauthenticated)
            }
            DefaultPolicy::AllAuthenticated => Decision::Allow,
            DefaultPolicy::ClusterAuthenticated | DefaultPolicy::ClusterUnauthenticated
                if !in_cluster() =>
            {
                deny(policy, DenyReason::OutsideClusterNetworks)
            }
            DefaultPolicy::ClusterAuthenticated if !authenticated => {
                deny(policy, DenyReason::Unauthenticated)
            }
            DefaultPolicy::ClusterAuthenticated | DefaultPolicy::ClusterUnauthenticated => {
                Decision::Allow
            }
            DefaultPolicy::Deny => deny(policy, DenyReason::DenyAll),
            DefaultPolicy::Audit if !authenticated => Decision::Audit(Denial {
                policy,
                reason: DenyReason::Unauthenticated,
            }),
            DefaultPolicy::Audit => Decision::Allow,
        }
    }
}

impl DefaultPolicy {
    /// The name used in the environment variable and in metrics.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::AllUnauthenticated => "all-unauthenticated",
            Self::AllAuthenticated => "all-authenticated",
            Self::ClusterAuthenticated => "cluster-authenticated",
            Self::ClusterUnauthenticated => "cluster-unauthenticated",
            Self::Deny => "deny",
            Self::Audit => "audit",
        }
    }
}

impl FromStr for DefaultPolicy {
    type Err = &'static str;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s.to_ascii_lowercase().as_str() {
            "all-unauthenticated" => Self::AllUnauthenticated,
            "all-authenticated" => Self::AllAuthenticated,
            "cluster-authenticated" => Self::ClusterAuthenticated,
            "cluster-unauthenticated" => Self::ClusterUnauthenticated,
            "deny" => Self::Deny,
            "audit" => Self::Audit,
            _ => return Err("one of all-unauthenticated, all-authenticated, cluster-authenticated, cluster-unauthenticated, deny, audit"),
        })
    }
}

/// Parses comma-separated CIDRs (a bare address is a /32 or /128).
pub fn parse_networks(v: &str) -> Result<Vec<IpNet>, &'static str> {
    v.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.parse::<IpNet>()
                .or_else(|_| s.parse::<IpAddr>().map(IpNet::from))
                .map(|n| n.trunc())
                .map_err(|_| "comma-separated CIDRs like 10.0.0.0/8,fd00::/8")
        })
        .collect()
}

impl DenyReason {
    /// The metric label and log value.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Unauthenticated => "unauthenticated",
            Self::Plaintext => "plaintext",
            Self::OutsideClusterNetworks => "outside_cluster_networks",
            Self::DenyAll => "deny",
        }
    }
}

impl std::fmt::Display for Denial {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let why = match self.reason {
            DenyReason::Unauthenticated => "the client has no verified identity (mTLS)",
            DenyReason::Plaintext => "the client did not use TLS",
            DenyReason::OutsideClusterNetworks => "the client is outside the cluster networks",
            DenyReason::DenyAll => "the default policy denies all clients",
        };
        write!(f, "unauthorized by policy {}: {why}", self.policy)
    }
}

/// `inbound_{http,tcp}_authz_{allow,deny}_total`, `inbound_http_route_not_found_total`,
/// `inbound_http_local_ratelimit_total`, `inbound_tcp_authz_terminate_total` with
/// linkerd2-proxy's labels; `inbound_{http,tcp}_authz_audit_total` (ours, for `audit`); failed
/// TLS handshakes.
#[derive(Clone)]
pub struct AuthzMetrics {
    handshake_failures: Counter,
    tcp_allow: Arc<Family<AuthzLabels, Counter>>,
    tcp_deny: Arc<Family<AuthzLabels, Counter>>,
    tcp_terminate: Arc<Family<AuthzLabels, Counter>>,
    http_allow: Arc<Family<AuthzLabels, Counter>>,
    http_deny: Arc<Family<AuthzLabels, Counter>>,
    http_not_found: Arc<Family<AuthzLabels, Counter>>,
    http_ratelimit: Arc<Family<AuthzLabels, Counter>>,
    tcp_audit: Arc<Family<AuthzLabels, Counter>>,
    http_audit: Arc<Family<AuthzLabels, Counter>>,
}

/// The labels of one authorization decision, as linkerd2-proxy writes them: the target, the
/// server (`srv_*`), the route (`route_*`, HTTP) and the authorization (`authz_*`, allowed).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) struct AuthzLabels {
    /// The connection's target (the pod address and app port).
    pub target: SocketAddr,
    /// The server, or the default policy (`kind="default"`).
    pub srv: Arc<Meta>,
    /// The route (HTTP).
    pub route: Option<Arc<Meta>>,
    /// The authorization that allowed it.
    pub authz: Option<Arc<Meta>>,
    /// The connection's TLS status.
    pub tls: TlsLabel,
}

/// Which decision counter.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum AuthzEvent {
    Allow,
    Deny,
    Audit,
    NotFound,
    RateLimited,
}

impl AuthzMetrics {
    /// Creates and registers the families.
    pub fn register(reg: &mut Registry) -> Self {
        let family = |name, help| Arc::new(Family::new(name, help));
        let handshakes = Arc::new(Family::<NoLabels, Counter>::new(
            "inbound_tls_handshake_failures_total",
            "Total count of inbound TLS handshakes that failed (e.g. an untrusted client certificate).",
        ));
        reg.register(handshakes.clone());
        let m = Self {
            handshake_failures: handshakes.get(&NoLabels),
            tcp_allow: family(
                "inbound_tcp_authz_allow_total",
                "The total number of inbound TCP connections that were authorized",
            ),
            tcp_deny: family(
                "inbound_tcp_authz_deny_total",
                "The total number of inbound TCP connections that were denied",
            ),
            tcp_terminate: family(
                "inbound_tcp_authz_terminate_total",
                "The total number of inbound TCP connections that were terminated due to an authorization change",
            ),
            http_allow: family(
                "inbound_http_authz_allow_total",
                "The total number of inbound HTTP requests that were authorized",
            ),
            http_deny: family(
                "inbound_http_authz_deny_total",
                "The total number of inbound HTTP requests that could not be processed due to a proxy error.",
            ),
            http_not_found: family(
                "inbound_http_route_not_found_total",
                "The number of inbound requests that did not match a route",
            ),
            http_ratelimit: family(
                "inbound_http_local_ratelimit_total",
                "The total number of inbound HTTP requests that were rate-limited",
            ),
            tcp_audit: family(
                "inbound_tcp_authz_audit_total",
                "Total count of TCP connections the audit policy allowed but all-authenticated would refuse.",
            ),
            http_audit: family(
                "inbound_http_authz_audit_total",
                "Total count of HTTP requests the audit policy allowed but all-authenticated would refuse.",
            ),
        };
        for f in [
            &m.tcp_allow,
            &m.tcp_deny,
            &m.tcp_terminate,
            &m.http_allow,
            &m.http_deny,
            &m.http_not_found,
            &m.http_ratelimit,
            &m.tcp_audit,
            &m.http_audit,
        ] {
            reg.register(f.clone());
        }
        m
    }

    /// The count of failed inbound TLS handshakes (e.g. a client certificate from another CA).
    pub fn handshake_failures(&self) -> Counter {
        self.handshake_failures.clone()
    }

    /// The counter of one decision, for TCP (`http: false`) or HTTP.
    pub(crate) fn counter(&self, http: bool, event: AuthzEvent, labels: &AuthzLabels) -> Counter {
        use AuthzEvent::*;
        let family = match (http, event) {
            (false, Allow) => &self.tcp_allow,
            (false, Deny) => &self.tcp_deny,
            (false, Audit) => &self.tcp_audit,
            (true, Allow) => &self.http_allow,
            (true, Deny) => &self.http_deny,
            (true, Audit) => &self.http_audit,
            (_, NotFound) => &self.http_not_found,
            (_, RateLimited) => &self.http_ratelimit,
        };
        family.get(labels)
    }

    /// `inbound_tcp_authz_terminate_total`.
    #[allow(dead_code)]
    pub(crate) fn terminated(&self, labels: &AuthzLabels) -> Counter {
        self.tcp_terminate.get(labels)
    }
}

/// The `srv_*` labels of `srv` on `port`.
fn srv_pairs(srv: &Meta, port: u16) -> Vec<(&'static str, Arc<str>)> {
    vec![
        ("srv_group", srv.group.clone()),
        ("srv_kind", srv.kind.clone()),
        ("srv_name", srv.name.clone()),
        ("srv_port", port.to_string().into()),
    ]
}

impl AuthzLabels {
    /// The `srv_*`, `route_*` and `authz_*` labels, for the request and TCP metrics.
    pub(crate) fn policy_labels(&self) -> PolicyLabels {
        let mut pairs = srv_pairs(&self.srv, self.target.port());
        if let Some(r) = &self.route {
            pairs.extend([
                ("route_group", r.group.clone()),
                ("route_kind", r.kind.clone()),
                ("route_name", r.name.clone()),
            ]);
        }
        if let Some(a) = &self.authz {
            pairs.extend([
                ("authz_group", a.group.clone()),
                ("authz_kind", a.kind.clone()),
                ("authz_name", a.name.clone()),
            ]);
        }
        PolicyLabels::new(pairs)
    }

    /// Whether `other` is the same decision: the same server, route and authorization
    /// (compared by identity, as one policy version shares them).
    pub(crate) fn same_decision(&self, other: &Self) -> bool {
        fn same(a: &Option<Arc<Meta>>, b: &Option<Arc<Meta>>) -> bool {
            match (a, b) {
                (None, None) => true,
                (Some(a), Some(b)) => Arc::ptr_eq(a, b),
                _ => false,
            }
        }
        Arc::ptr_eq(&self.srv, &other.srv)
            && same(&self.route, &other.route)
            && same(&self.authz, &other.authz)
    }
}

impl EncodeLabels for AuthzLabels {
    fn encode(&self, w: &mut LabelWriter<'_>) {
        w.label("target_addr", self.target)
            .label("target_ip", self.target.ip())
            .label("target_port", self.target.port())
            .label("srv_group", &*self.srv.group)
            .label("srv_kind", &*self.srv.kind)
            .label("srv_name", &*self.srv.name)
            .label("srv_port", self.target.port());
        if let Some(r) = &self.route {
            w.label("route_group", &*r.group)
                .label("route_kind", &*r.kind)
                .label("route_name", &*r.name);
        }
        if let Some(a) = &self.authz {
            w.label("authz_group", &*a.group)
                .label("authz_kind", &*a.kind)
                .label("authz_name", &*a.name);
        }
        self.tls.encode(w);
    }
}

// === the connection steps ===

/// An inbound connection with its app port and what the policy says of it.
#[derive(Clone, Debug)]
pub(crate) struct InboundTarget {
    pub client: SocketAddr,
    /// The connection's target: the pod address the client dialed, with the app port.
    pub target: SocketAddr,
    /// The app port: the original destination's, or the one a transport header names.
    pub port: u16,
    pub label: TlsLabel,
    pub auth: ClientAuth,
    /// The default policy's decision (used while the port has no server policy).
    pub decision: Decision,
    /// The default policy's name.
    pub default_policy: &'static str,
    /// The protocol, when known without detection (a transport header names it; the app's
    /// own TLS, a silent client, an opaque port or the server's protocol).
    pub protocol: Option<Protocol>,
    /// The port's policy from the control plane, and its updates.
    pub server: Option<(PortPolicy, watch::Receiver<PortPolicy>)>,
    /// The server's own detect timeout (`detect.timeout`), if it sets one.
    pub detect_timeout: Option<std::time::Duration>,
    /// The app connection made while the client was silent (see `InboundConn`).
    pub server_first: Option<super::tls::ServerFirstConn>,
}

impl InboundTarget {
    /// The protocol known without detection.
    pub(crate) fn known_protocol(&self) -> Option<Protocol> {
        self.protocol
    }

    /// Whether the policy lets this client through as opaque TCP, as step 6 would decide it:
    /// what must hold before its app is dialed for it speculatively. Counts nothing.
    pub(crate) fn allows_tcp(&self) -> bool {
        match &self.server {
            Some((PortPolicy::Policy(p), _)) => p.authorize(self.client.ip(), &self.auth).is_some(),
            Some((PortPolicy::Invalid(_), _)) => false,
            _ => !matches!(self.decision, Decision::Deny(_)),
        }
    }

    /// The server's own detect timeout, if any (else the proxy's).
    pub(crate) fn detect_timeout(&self) -> Option<std::time::Duration> {
        self.detect_timeout
    }

    /// The labels of this connection's decisions under `srv`.
    pub(crate) fn labels(&self, srv: Arc<Meta>) -> AuthzLabels {
        AuthzLabels {
            target: self.target,
            srv,
            route: None,
            authz: None,
            tls: self.label.clone(),
        }
    }
}

/// An inbound connection whose protocol is known and that the policy lets in, with what its
/// requests are held to.
#[derive(Clone, Debug)]
pub(crate) struct Authorized {
    pub target: InboundTarget,
    pub protocol: Protocol,
    /// HTTP under the default policy: the decision each request gets (and is counted in).
    pub authz: Option<Arc<Authz>>,
    /// HTTP under a server policy: each request is routed and authorized by its current
    /// version.
    pub server: Option<watch::Receiver<PortPolicy>>,
    /// TCP under a server policy: what ends the connection when an update revokes it.
    pub revocation: Option<Revocation>,
}

impl linkerd_http::ClientIp for Authorized {
    fn client_ip(&self) -> Option<std::net::IpAddr> {
        Some(self.target.client.ip())
    }
}

/// A TCP connection a server policy let in, watched for an update that no longer does:
/// it is then closed and counted in `inbound_tcp_authz_terminate_total`.
#[derive(Clone)]
pub(crate) struct Revocation {
    rx: watch::Receiver<PortPolicy>,
    client: std::net::IpAddr,
    auth: ClientAuth,
    labels: AuthzLabels,
    metrics: AuthzMetrics,
}

impl std::fmt::Debug for Revocation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Revocation")
            .field("client", &self.client)
            .field("labels", &self.labels)
            .finish_non_exhaustive()
    }
}

impl Revocation {
    /// Resolves when an update of the port's policy refuses this connection (another server
    /// or authorization set that leaves the client out, or an invalid policy: never fail
    /// open); never, while the policy keeps allowing it or the port's watch ends. A port
    /// that goes back to the default policy keeps its connections, as the default policy
    /// let them in at the start.
    pub(crate) async fn revoked(mut self) -> String {
        loop {
            if self.rx.changed().await.is_err() {
                return std::future::pending().await;
            }
            let current = self.rx.borrow_and_update().clone();
            let why = match current {
                PortPolicy::Policy(p) => match p.authorize(self.client, &self.auth) {
                    Some(_) => continue,
                    None => {
                        self.labels.srv = p.meta.clone();
                        format!("no longer authorized on server {}", p.meta.name)
                    }
                },
                PortPolicy::Invalid(why) => format!("the port's policy became invalid: {why}"),
                PortPolicy::Default | PortPolicy::Pending => continue,
            };
            self.labels.authz = None;
            self.metrics.terminated(&self.labels).incr();
            return why;
        }
    }
}

/// The default policy's decision against the connection's client, applied to each request.
#[derive(Debug)]
pub(crate) struct Authz {
    /// `None`: allowed (perhaps audited: counted only).
    pub denial: Option<Denial>,
    pub counter: Counter,
    /// The decision's labels on the request metrics.
    pub labels: PolicyLabels,
}

/// Step 4: the app port (the transport header's, or the original destination's), the port's
/// policy (waiting for its first answer, bounded) and the default policy's decision; the
/// protocol when it is known without detection.
#[derive(Clone)]
pub(crate) struct Decide {
    policy: Arc<Policy>,
    opaque_ports: PortSet,
    store: Option<Arc<PolicyStore>>,
}

impl Decide {
    pub(crate) fn new(
        policy: Arc<Policy>,
        opaque_ports: PortSet,
        store: Option<Arc<PolicyStore>>,
    ) -> Self {
        Self {
            policy,
            opaque_ports,
            store,
        }
    }
}

impl Decide {
    /// Whether a plaintext client at `client` may use `port` as opaque TCP, by the port's
    /// server policy (waiting for its first answer, as step 4) or the default policy; false on
    /// a port whose server takes only HTTP. What the TLS step checks before it dials the app
    /// for a silent client. Counts nothing.
    pub(crate) async fn allows_plaintext_tcp(&self, client: std::net::IpAddr, port: u16) -> bool {
        let auth = ClientAuth::Plaintext;
        if let Some(store) = &self.store {
            match store.get(port).await.0 {
                PortPolicy::Policy(p) => {
                    let tcp = matches!(
                        p.protocol,
                        ServerProtocol::Detect { .. }
                            | ServerProtocol::Opaque
                            | ServerProtocol::Tls
                    );
                    return tcp && p.authorize(client, &auth).is_some();
                }
                PortPolicy::Invalid(_) => return false,
                PortPolicy::Pending | PortPolicy::Default => {}
            }
        }
        !matches!(self.policy.check(port, client, &auth), Decision::Deny(_))
    }
}

impl<I: Send + 'static> AsyncPredicate<(InboundTls, Option<TransportHeader>, I)> for Decide {
    type Request = (InboundTarget, I);
    type Future = std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<Self::Request, BoxError>> + Send + 'static>,
    >;

    fn check(
        &mut self,
        (tls, header, io): (InboundTls, Option<TransportHeader>, I),
    ) -> Self::Future {
        let this = self.clone();
        Box::pin(async move {
            let (port, named) = match header {
                Some(h) => {
                    tracing::debug!(port = h.port, protocol = ?h.protocol, "opaque transport");
                    let protocol = match h.protocol {
                        Some(SessionProtocol::Http1) => Protocol::Http1,
                        Some(SessionProtocol::Http2) => Protocol::Http2,
                        None => Protocol::Opaque,
                    };
                    (h.port, Some(protocol))
                }
                None => (tls.conn.orig_dst.port(), None),
            };
            let server = match &this.store {
                Some(store) => {
                    let (current, rx) = store.get(port).await;
                    let current = match current {
                        PortPolicy::Pending => PortPolicy::Default,
                        c => c,
                    };
                    Some((current, rx))
                }
                None => None,
            };
            let detect_timeout = match server.as_ref().map(|(p, _)| p) {
                Some(PortPolicy::Policy(p)) => match p.protocol {
                    ServerProtocol::Detect { timeout, .. } => timeout,
                    _ => None,
                },
                _ => None,
            };
            let from_server = match server.as_ref().map(|(p, _)| p) {
                Some(PortPolicy::Policy(p)) => match p.protocol {
                    ServerProtocol::Opaque | ServerProtocol::Tls => Some(Protocol::Opaque),
                    ServerProtocol::Http1 => Some(Protocol::Http1),
                    ServerProtocol::Http2 | ServerProtocol::Grpc => Some(Protocol::Http2),
                    ServerProtocol::Detect { .. } => None,
                },
                // Without a server policy, opaque ports skip detection.
                _ => this.opaque_ports.contains(port).then_some(Protocol::Opaque),
            };
            let protocol = named
                .or_else(|| tls.opaque.then_some(Protocol::Opaque))
                .or(from_server);
            let client = tls.conn.client;
            let decision = this.policy.check(port, client.ip(), &tls.auth);
            // The connection counts in the TCP metrics under the port's server from here.
            let srv = match server.as_ref().map(|(p, _)| p) {
                Some(PortPolicy::Policy(p)) => p.meta.clone(),
                _ => Meta::default_named(match &decision {
                    Decision::Deny(d) | Decision::Audit(d) => d.policy,
                    Decision::Allow => this.policy.default.as_str(),
                }),
            };
            tls.metrics.label(PolicyLabels::new(srv_pairs(&srv, port)));
            let target = InboundTarget {
                client,
                target: SocketAddr::new(tls.conn.orig_dst.ip(), port),
                port,
                decision,
                default_policy: this.policy.default.as_str(),
                label: tls.label,
                auth: tls.auth,
                protocol,
                server,
                detect_timeout,
                server_first: tls.conn.server_first.clone(),
            };
            Ok((target, io))
        })
    }
}

/// Step 6: applies the policy once the protocol is known. A TCP client is authorized (or
/// counted and closed) now; an HTTP client's requests are authorized one by one.
#[derive(Clone)]
pub(crate) struct Authorize {
    authz: AuthzMetrics,
}

impl Authorize {
    pub(crate) fn new(authz: AuthzMetrics) -> Self {
        Self { authz }
    }
}

impl<I> Predicate<(InboundTarget, Detected, I)> for Authorize {
    type Request = (Authorized, I);

    fn check(
        &mut self,
        (target, detected, io): (InboundTarget, Detected, I),
    ) -> Result<Self::Request, BoxError> {
        let protocol = detected.protocol;
        tracing::Span::current().record("protocol", tracing::field::debug(protocol));
        let http = matches!(protocol, Protocol::Http1 | Protocol::Http2);
        // A server policy, or only invalid answers (`Err`, with the reason).
        let (policy, rx) = match target.server.clone() {
            Some((PortPolicy::Policy(p), rx)) => (Ok(p), rx),
            Some((PortPolicy::Invalid(why), rx)) => (Err(why), rx),
            _ => return self.default_policy(target, protocol, http, io),
        };
        // HTTP is authorized per request, by the policy's current version.
        if http {
            let authorized = Authorized {
                target,
                protocol,
                authz: None,
                server: Some(rx),
                revocation: None,
            };
            return Ok((authorized, io));
        }
        let (labels, why) = match policy {
            Ok(p) => {
                let mut labels = target.labels(p.meta.clone());
                if let Some(a) = p.authorize(target.client.ip(), &target.auth) {
                    labels.authz = Some(a.meta.clone());
                    self.authz.counter(false, AuthzEvent::Allow, &labels).incr();
                    let revocation = Revocation {
                        rx,
                        client: target.client.ip(),
                        auth: target.auth.clone(),
                        labels,
                        metrics: self.authz.clone(),
                    };
                    let authorized = Authorized {
                        target,
                        protocol,
                        authz: None,
                        server: None,
                        revocation: Some(revocation),
                    };
                    return Ok((authorized, io));
                }
                let why = format!("unauthorized connection on server {}", p.meta.name);
                (labels, why)
            }
            Err(why) => (
                target.labels(Meta::default_named("invalid")),
                format!("the port's policy is invalid: {why}"),
            ),
        };
        self.authz.counter(false, AuthzEvent::Deny, &labels).incr();
        Err(Box::new(Refused(why)))
    }
}

impl Authorize {
    /// The default policy (no server policy for the port).
    fn default_policy<I>(
        &self,
        target: InboundTarget,
        protocol: Protocol,
        http: bool,
        io: I,
    ) -> Result<(Authorized, I), BoxError> {
        let (denial, audit) = match target.decision {
            Decision::Allow => (None, false),
            Decision::Deny(denial) => (Some(denial), false),
            Decision::Audit(denial) => (Some(denial), true),
        };
        let name = denial.map_or(target.default_policy, |d| d.policy);
        let mut labels = target.labels(Meta::default_named(name));
        if http {
            labels.route = Some(Meta::default_named("default"));
        }
        let event = match (denial, audit) {
            (None, _) => AuthzEvent::Allow,
            (Some(_), false) => AuthzEvent::Deny,
            (Some(_), true) => AuthzEvent::Audit,
        };
        if event == AuthzEvent::Allow {
            labels.authz = Some(Meta::default_named(name));
        }
        let counter = self.authz.counter(http, event, &labels);
        if !http {
            counter.incr();
            if let (Some(denial), false) = (denial, audit) {
                // Logged, with the connection's client and identity, as the stack closes it.
                return Err(Box::new(Refused(denial.to_string())));
            }
        }
        if let Some(denial) = &denial {
            log_denial(denial, audit, &target, http);
        }
        let authz = http.then(|| {
            Arc::new(Authz {
                denial: denial.filter(|_| !audit),
                counter,
                labels: labels.policy_labels(),
            })
        });
        Ok((
            Authorized {
                target,
                protocol,
                authz,
                server: None,
                revocation: None,
            },
            io,
        ))
    }
}

/// A TCP client the policy refuses.
#[derive(Debug, thiserror::Error)]
#[error("refusing the client's connection: {0}")]
struct Refused(String);

fn log_denial(denial: &Denial, audit: bool, target: &InboundTarget, http: bool) {
    let client = target.client;
    let client_id = match &target.auth {
        ClientAuth::Authenticated(id) => id.to_string(),
        _ => String::new(),
    };
    let what = if http { "requests" } else { "connection" };
    if audit {
        linkerd_stack::rate_limited!(INFO, %client, %client_id, reason = %denial, "audit: allowing a client the policy would refuse ({what})");
    } else {
        linkerd_stack::rate_limited!(INFO, %client, %client_id, reason = %denial, "refusing the client's {what}");
    }
}

#[cfg(test)]
mod tests;
