//! Inbound authorization: may this client talk to this port of the app?
//!
//! Evaluation is pure ([`Policy::check`]). The inbound connection stack decides once the app
//! port is known (`Decide`, step 4), and applies the decision once the protocol is
//! (`Authorize`, step 6): a refused TCP client is closed, a refused HTTP client gets 403 for
//! every request (the request layer in `inbound::http`); both are counted ([`AuthzMetrics`]).

use super::tls::InboundTls;
use crate::PortSet;
use ipnet::IpNet;
use linkerd_detect::{Detected, Protocol};
use linkerd_identity::Id;
use linkerd_metrics::{Counter, EncodeLabels, Family, LabelWriter, NoLabels, Registry};
use linkerd_proxy_transport::TlsLabel;
use linkerd_tls::{SessionProtocol, TransportHeader};
use std::{
    net::{IpAddr, SocketAddr},
    str::FromStr,
    sync::Arc,
};
use tower::{filter::Predicate, BoxError};

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

/// `inbound_{tcp,http}_authz_{deny,audit}_total`, and failed TLS handshakes.
#[derive(Clone)]
pub struct AuthzMetrics {
    handshake_failures: Counter,
    tcp_deny: Arc<Family<AuthzLabels, Counter>>,
    http_deny: Arc<Family<AuthzLabels, Counter>>,
    tcp_audit: Arc<Family<AuthzLabels, Counter>>,
    http_audit: Arc<Family<AuthzLabels, Counter>>,
}

/// The labels of one refused (or audited) client.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct AuthzLabels {
    /// The app port.
    pub target_port: u16,
    /// The rule that refused.
    pub policy: &'static str,
    /// Why.
    pub reason: DenyReason,
    /// The connection's TLS status.
    pub tls: TlsLabel,
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
            tcp_deny: family(
                "inbound_tcp_authz_deny_total",
                "Total count of TCP connections closed by the inbound policy.",
            ),
            http_deny: family(
                "inbound_http_authz_deny_total",
                "Total count of HTTP requests refused (403) by the inbound policy.",
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
        for f in [&m.tcp_deny, &m.http_deny, &m.tcp_audit, &m.http_audit] {
            reg.register(f.clone());
        }
        m
    }

    /// The count of failed inbound TLS handshakes (e.g. a client certificate from another CA).
    pub fn handshake_failures(&self) -> Counter {
        self.handshake_failures.clone()
    }

    /// The counter for TCP (`http: false`) or HTTP, denied or audited.
    pub fn counter(&self, http: bool, audit: bool, labels: &AuthzLabels) -> Counter {
        match (http, audit) {
            (false, false) => self.tcp_deny.get(labels),
            (true, false) => self.http_deny.get(labels),
            (false, true) => self.tcp_audit.get(labels),
            (true, true) => self.http_audit.get(labels),
        }
    }
}

impl EncodeLabels for AuthzLabels {
    fn encode(&self, w: &mut LabelWriter<'_>) {
        w.label("target_port", self.target_port)
            .label("policy", self.policy)
            .label("reason", self.reason.as_str());
        self.tls.encode(w);
    }
}

// === the connection steps ===

/// An inbound connection with its app port and the policy's decision.
#[derive(Clone, Debug)]
pub(crate) struct InboundTarget {
    pub client: SocketAddr,
    /// The app port: the original destination's, or the one a transport header names.
    pub port: u16,
    pub label: TlsLabel,
    pub auth: ClientAuth,
    pub decision: Decision,
    /// The protocol, when known without detection (a transport header names it; the app's
    /// own TLS, a silent client and an opaque port are opaque).
    pub protocol: Option<Protocol>,
}

impl InboundTarget {
    /// The protocol known without detection.
    pub(crate) fn known_protocol(&self) -> Option<Protocol> {
        self.protocol
    }
}

/// An inbound connection whose protocol is known and that the policy lets in, with what its
/// requests are held to.
#[derive(Clone, Debug)]
pub(crate) struct Authorized {
    pub target: InboundTarget,
    pub protocol: Protocol,
    /// For HTTP: a refused client's requests get 403, an audited one's are counted.
    pub authz: Option<Arc<Authz>>,
}

/// A policy decision against the connection's client, applied to each request.
#[derive(Debug)]
pub(crate) struct Authz {
    pub denial: Denial,
    /// Allowed (audit policy), only counted.
    pub audit: bool,
    pub counter: Counter,
}

/// Step 4: the app port (the transport header's, or the original destination's) and the
/// policy's decision for the client; the protocol when it is known without detection.
#[derive(Clone)]
pub(crate) struct Decide {
    policy: Arc<Policy>,
    opaque_ports: PortSet,
}

impl Decide {
    pub(crate) fn new(policy: Arc<Policy>, opaque_ports: PortSet) -> Self {
        Self {
            policy,
            opaque_ports,
        }
    }
}

impl<I> Predicate<(InboundTls, Option<TransportHeader>, I)> for Decide {
    type Request = (InboundTarget, I);

    fn check(
        &mut self,
        (tls, header, io): (InboundTls, Option<TransportHeader>, I),
    ) -> Result<Self::Request, BoxError> {
        let (port, protocol) = match header {
            Some(h) => {
                tracing::debug!(port = h.port, protocol = ?h.protocol, "opaque transport");
                let protocol = match h.protocol {
                    Some(SessionProtocol::Http1) => Protocol::Http1,
                    Some(SessionProtocol::Http2) => Protocol::Http2,
                    None => Protocol::Opaque,
                };
                (h.port, Some(protocol))
            }
            None => {
                let port = tls.conn.orig_dst.port();
                let opaque = tls.opaque || self.opaque_ports.contains(port);
                (port, opaque.then_some(Protocol::Opaque))
            }
        };
        let client = tls.conn.client;
        let target = InboundTarget {
            client,
            port,
            decision: self.policy.check(port, client.ip(), &tls.auth),
            label: tls.label,
            auth: tls.auth,
            protocol,
        };
        Ok((target, io))
    }
}

/// Step 6: applies the decision once the protocol is known. A refused TCP client is counted
/// and closed; an audited one is counted and logged; an HTTP client's decision goes to its
/// requests.
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
        let (denial, audit) = match target.decision {
            Decision::Allow => {
                let authorized = Authorized {
                    target,
                    protocol,
                    authz: None,
                };
                return Ok((authorized, io));
            }
            Decision::Deny(denial) => (denial, false),
            Decision::Audit(denial) => (denial, true),
        };
        let labels = AuthzLabels {
            target_port: target.port,
            policy: denial.policy,
            reason: denial.reason,
            tls: target.label.clone(),
        };
        let counter = self.authz.counter(http, audit, &labels);
        if !http {
            counter.incr();
            if !audit {
                // Logged, with the connection's client and identity, as the stack closes it.
                return Err(Box::new(Refused(denial)));
            }
        }
        log_denial(&denial, audit, &target, http);
        let authz = http.then(|| {
            Arc::new(Authz {
                denial,
                audit,
                counter,
            })
        });
        let authorized = Authorized {
            target,
            protocol,
            authz,
        };
        Ok((authorized, io))
    }
}

/// A TCP client the policy refuses.
#[derive(Debug, thiserror::Error)]
#[error("refusing the client's connection: {0}")]
struct Refused(Denial);

fn log_denial(denial: &Denial, audit: bool, target: &InboundTarget, http: bool) {
    let client = target.client;
    let client_id = match &target.auth {
        ClientAuth::Authenticated(id) => id.to_string(),
        _ => String::new(),
    };
    let what = if http { "requests" } else { "connection" };
    if audit {
        tracing::info!(%client, %client_id, reason = %denial, "audit: allowing a client the policy would refuse ({what})");
    } else {
        tracing::info!(%client, %client_id, reason = %denial, "refusing the client's {what}");
    }
}

#[cfg(test)]
mod tests;
