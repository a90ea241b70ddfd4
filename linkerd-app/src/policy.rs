//! Inbound authorization: may this client talk to this port of the app?
//!
//! Evaluation is pure ([`Policy::check`]); the inbound stack applies the decision (403 for
//! HTTP, a closed connection for TCP) and counts it ([`AuthzMetrics`]).

use crate::config::PortSet;
use ipnet::IpNet;
use linkerd_identity::Id;
use linkerd_metrics::{Counter, EncodeLabels, Family, LabelWriter, NoLabels, Registry};
use linkerd_proxy_transport::TlsLabel;
use std::{net::IpAddr, str::FromStr, sync::Arc};

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
    Allow,
    Deny(Denial),
    /// Allowed by `audit`, but `all-authenticated` would have refused it.
    Audit(Denial),
}

/// Why a client is (or would be) refused, and by which rule.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Denial {
    /// The rule: a default policy's name, or `require-identity` / `require-tls`.
    pub policy: &'static str,
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
    pub target_port: u16,
    pub policy: &'static str,
    pub reason: DenyReason,
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

    /// Counts a failed inbound TLS handshake (e.g. a client certificate from another CA).
    pub fn handshake_failed(&self) {
        self.handshake_failures.incr();
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

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "app.ns.serviceaccount.identity.linkerd.cluster.local";

    fn policy(default: DefaultPolicy) -> Policy {
        Policy {
            default,
            cluster_networks: parse_networks("10.0.0.0/8,fd00::/8").unwrap(),
            require_identity: PortSet::parse("9000").unwrap(),
            require_tls: PortSet::parse("9001-9002").unwrap(),
        }
    }

    /// Every client kind, from inside and outside the cluster networks.
    fn clients() -> Vec<(&'static str, IpAddr, ClientAuth)> {
        let id = ClientAuth::Authenticated(Id::parse(ID).unwrap());
        let inside: IpAddr = "10.1.2.3".parse().unwrap();
        let outside: IpAddr = "192.0.2.1".parse().unwrap();
        vec![
            ("in/plain", inside, ClientAuth::Plaintext),
            ("in/tls", inside, ClientAuth::Tls),
            ("in/id", inside, id.clone()),
            ("out/plain", outside, ClientAuth::Plaintext),
            ("out/tls", outside, ClientAuth::Tls),
            ("out/id", outside, id),
        ]
    }

    fn allowed(p: &Policy, port: u16) -> Vec<&'static str> {
        clients()
            .into_iter()
            .filter(|(_, ip, auth)| !matches!(p.check(port, *ip, auth), Decision::Deny(_)))
            .map(|(name, _, _)| name)
            .collect()
    }

    #[test]
    fn every_default_policy() {
        use DefaultPolicy::*;
        let all = vec![
            "in/plain",
            "in/tls",
            "in/id",
            "out/plain",
            "out/tls",
            "out/id",
        ];
        assert_eq!(allowed(&policy(AllUnauthenticated), 80), all);
        assert_eq!(allowed(&policy(AllAuthenticated), 80), ["in/id", "out/id"]);
        assert_eq!(allowed(&policy(ClusterAuthenticated), 80), ["in/id"]);
        assert_eq!(
            allowed(&policy(ClusterUnauthenticated), 80),
            ["in/plain", "in/tls", "in/id"]
        );
        assert!(allowed(&policy(Deny), 80).is_empty());
        assert_eq!(allowed(&policy(Audit), 80), all);
    }

    #[test]
    fn reasons() {
        let p = policy(DefaultPolicy::ClusterAuthenticated);
        let outside = "192.0.2.1".parse().unwrap();
        let inside = "10.0.0.1".parse().unwrap();
        assert_eq!(
            p.check(80, outside, &ClientAuth::Plaintext),
            Decision::Deny(Denial {
                policy: "cluster-authenticated",
                reason: DenyReason::OutsideClusterNetworks
            })
        );
        assert_eq!(
            p.check(80, inside, &ClientAuth::Tls),
            Decision::Deny(Denial {
                policy: "cluster-authenticated",
                reason: DenyReason::Unauthenticated
            })
        );
    }

    #[test]
    fn audit_flags_what_all_authenticated_would_refuse() {
        let p = policy(DefaultPolicy::Audit);
        let ip = "10.0.0.1".parse().unwrap();
        assert_eq!(
            p.check(80, ip, &ClientAuth::Tls),
            Decision::Audit(Denial {
                policy: "audit",
                reason: DenyReason::Unauthenticated
            })
        );
        let id = ClientAuth::Authenticated(Id::parse(ID).unwrap());
        assert_eq!(p.check(80, ip, &id), Decision::Allow);
    }

    #[test]
    fn port_overrides_win_over_the_default() {
        use DefaultPolicy::*;
        for default in [AllUnauthenticated, Deny, Audit, ClusterUnauthenticated] {
            let p = policy(default);
            assert_eq!(allowed(&p, 9000), ["in/id", "out/id"], "{default:?}");
            assert_eq!(
                allowed(&p, 9002),
                ["in/tls", "in/id", "out/tls", "out/id"],
                "{default:?}"
            );
        }
    }

    #[test]
    fn parses_policies_and_networks() {
        assert_eq!("Deny".parse(), Ok(DefaultPolicy::Deny));
        assert!("allow".parse::<DefaultPolicy>().is_err());
        let n = parse_networks(DEFAULT_CLUSTER_NETWORKS).unwrap();
        assert_eq!(n.len(), 5);
        assert_eq!(
            parse_networks("10.1.2.3, ::1").unwrap(),
            vec![
                "10.1.2.3/32".parse::<IpNet>().unwrap(),
                "::1/128".parse().unwrap()
            ]
        );
        assert!(parse_networks("10.0.0.0/33").is_err());
        assert!(parse_networks("example.com").is_err());
    }
}
