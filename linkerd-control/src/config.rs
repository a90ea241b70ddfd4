//! The mesh file: services, their ports and their endpoints, and the identities that may ask
//! for certificates.

mod outbound;

pub use self::outbound::*;
use serde::Deserialize;
use std::{collections::BTreeMap, net::SocketAddr};

/// The whole file.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MeshConfig {
    #[serde(default)]
    pub services: Vec<ServiceConfig>,
    /// Who may ask the Identity service for a certificate, and with which token.
    #[serde(default)]
    pub identities: Vec<IdentityConfig>,
    /// Inbound server policies, by port (`InboundServerPolicies`): the local mesh enforces
    /// them as a cluster's `Server`, `AuthorizationPolicy` and `HTTPRoute` resources.
    #[serde(default)]
    pub servers: Vec<ServerConfig>,
}

/// A port's inbound policy, for every workload (this control plane has one kind of pod).
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    /// The `Server`'s name (`srv_name` in the proxies' metrics).
    pub name: String,
    /// The app port.
    pub port: u16,
    #[serde(default)]
    pub protocol: ServerProtocol,
    /// Who may connect; none: no one (but the proxy's own localhost).
    #[serde(default)]
    pub authorizations: Vec<AuthorizationConfig>,
    /// HTTP routes; none: one match-all route.
    #[serde(default)]
    pub routes: Vec<RouteConfig>,
}

/// How the proxy treats the port's connections.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ServerProtocol {
    #[default]
    Detect,
    Http1,
    Http2,
    Grpc,
    Opaque,
}

/// An authorization: client networks and how clients must authenticate.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthorizationConfig {
    pub name: String,
    /// CIDRs; default every address.
    #[serde(default)]
    pub networks: Vec<ipnet::IpNet>,
    /// CIDRs inside `networks` that are not allowed.
    #[serde(default)]
    pub except: Vec<ipnet::IpNet>,
    /// `unauthenticated` (anyone), `mesh-tls` (any meshed client), or `identities` (the
    /// clients named in `identities` / under `identity_suffixes`).
    #[serde(default)]
    pub authentication: Authentication,
    #[serde(default)]
    pub identities: Vec<String>,
    /// E.g. `default.serviceaccount.identity.linkerd.cluster.local`; `""` matches all.
    #[serde(default)]
    pub identity_suffixes: Vec<String>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Authentication {
    #[default]
    Unauthenticated,
    MeshTls,
    Identities,
}

/// An HTTP route of a server: a path match and its own authorizations.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    pub name: String,
    /// One of `path_exact`, `path_prefix`, `path_regex`; none matches every path.
    #[serde(default)]
    pub path_exact: Option<String>,
    #[serde(default)]
    pub path_prefix: Option<String>,
    #[serde(default)]
    pub path_regex: Option<String>,
    /// Added to the server's.
    #[serde(default)]
    pub authorizations: Vec<AuthorizationConfig>,
}

/// An identity proxies may claim, e.g. `web.default.serviceaccount.identity.linkerd.cluster.local`.
#[derive(Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IdentityConfig {
    /// The identity, exactly as it must appear in the certificate's DNS SAN.
    pub name: String,
    /// The proxy proves it holds the identity by sending this (its token file's content).
    pub token: String,
}

// Tokens are secrets: keep them out of logs and error messages.
impl std::fmt::Debug for IdentityConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IdentityConfig")
            .field("name", &self.name)
            .field("token", &"<redacted>")
            .finish()
    }
}

/// One service port: `name:port` is what proxies look up.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceConfig {
    /// The authority without port, e.g. `web.default.svc.cluster.local`.
    pub name: String,
    pub port: u16,
    /// The service's virtual IP (a Kubernetes ClusterIP), if any: a proxy that sees a
    /// connection to `cluster_ip:port` looks the service up by it.
    #[serde(default)]
    pub cluster_ip: Option<std::net::IpAddr>,
    #[serde(default)]
    pub endpoints: Vec<EndpointConfig>,
    /// Its outbound policy (`OutboundPolicies`): routes, splits, timeouts, retries, failure
    /// accrual; none: the policy controller's default (one route to the service).
    #[serde(default)]
    pub policy: OutboundConfig,
    /// Its ServiceProfile (`GetProfile`): routes, retry budget, traffic-split overrides.
    #[serde(default)]
    pub profile: ProfileConfig,
}

/// One endpoint of a service.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EndpointConfig {
    pub addr: SocketAddr,
    #[serde(default = "default_weight")]
    pub weight: u32,
    /// Become `dst_*` metric labels on the proxy.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// The endpoint proxy's TLS identity.
    #[serde(default)]
    pub identity: Option<String>,
    #[serde(default)]
    pub protocol_hint: Option<ProtocolHint>,
    /// The port where the endpoint's proxy accepts opaque transport (mTLS with a header naming
    /// the real target port), sent as `protocol_hint.opaque_transport.inbound_port`.
    #[serde(default)]
    pub opaque_transport_port: Option<u16>,
}

/// What the endpoint's proxy accepts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProtocolHint {
    H2,
    Opaque,
}

/// A file that can't be served, with where and why.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{0}")]
    Yaml(#[from] serde_yaml::Error),
    #[error("service {name}:{port} is listed twice")]
    Duplicate { name: String, port: u16 },
    #[error("service {name:?}: {reason}")]
    Invalid { name: String, reason: &'static str },
    #[error("identity {name:?} is listed twice")]
    DuplicateIdentity { name: String },
    #[error("identity {name:?}: {reason}")]
    InvalidIdentity { name: String, reason: &'static str },
}

/// Whether a route regex compiles (the proxy compiles it too; a bad one is caught here first).
fn regex_lite_check(re: &str) -> Result<(), ()> {
    regex::Regex::new(re).map(|_| ()).map_err(|_| ())
}

fn default_weight() -> u32 {
    1
}

impl MeshConfig {
    /// Parses and validates the file's text. YAML errors name the line and column.
    pub fn parse(text: &str) -> Result<Self, ConfigError> {
        let config: MeshConfig = if text.trim().is_empty() {
            MeshConfig::default()
        } else {
            serde_yaml::from_str(text)?
        };
        let mut seen = std::collections::HashSet::new();
        for s in &config.services {
            let name = s.name.trim_end_matches('.').to_ascii_lowercase();
            if name.is_empty() || name.contains(':') || name.contains('/') {
                return Err(ConfigError::Invalid {
                    name: s.name.clone(),
                    reason: "the name must be a DNS name without port",
                });
            }
            if s.port == 0 {
                return Err(ConfigError::Invalid {
                    name: s.name.clone(),
                    reason: "port 0",
                });
            }
            if !seen.insert((name, s.port)) {
                return Err(ConfigError::Duplicate {
                    name: s.name.clone(),
                    port: s.port,
                });
            }
            s.policy.validate(&s.name)?;
            s.profile.validate(&s.name)?;
            if s.endpoints
                .iter()
                .any(|e| e.opaque_transport_port == Some(0))
            {
                return Err(ConfigError::Invalid {
                    name: s.name.clone(),
                    reason: "opaque_transport_port 0",
                });
            }
        }
        let mut seen = std::collections::HashSet::new();
        for i in &config.identities {
            if let Err(reason) = check_identity_name(&i.name) {
                return Err(ConfigError::InvalidIdentity {
                    name: i.name.clone(),
                    reason,
                });
            }
            if i.token.trim().is_empty() {
                return Err(ConfigError::InvalidIdentity {
                    name: i.name.clone(),
                    reason: "empty token",
                });
            }
            if !seen.insert(i.name.as_str()) {
                return Err(ConfigError::DuplicateIdentity {
                    name: i.name.clone(),
                });
            }
        }
        let mut ports = std::collections::HashSet::new();
        for srv in &config.servers {
            let bad = |reason| ConfigError::Invalid {
                name: srv.name.clone(),
                reason,
            };
            if srv.port == 0 {
                return Err(bad("server port 0"));
            }
            if !ports.insert(srv.port) {
                return Err(bad("a second server for the same port"));
            }
            for r in &srv.routes {
                let paths = [&r.path_exact, &r.path_prefix, &r.path_regex]
                    .iter()
                    .filter(|p| p.is_some())
                    .count();
                if paths > 1 {
                    return Err(bad(
                        "a route takes one of path_exact, path_prefix, path_regex",
                    ));
                }
                if let Some(re) = &r.path_regex {
                    if regex_lite_check(re).is_err() {
                        return Err(bad("a route's path_regex does not compile"));
                    }
                }
            }
        }
        Ok(config)
    }

    /// The server policy of `port`.
    pub fn server(&self, port: u16) -> Option<&ServerConfig> {
        self.servers.iter().find(|s| s.port == port)
    }

    /// The identity named exactly `name`.
    pub fn identity(&self, name: &str) -> Option<&IdentityConfig> {
        self.identities.iter().find(|i| i.name == name)
    }

    /// The service answering `name:port` (names compared without a trailing dot, any case).
    pub fn service(&self, name: &str, port: u16) -> Option<&ServiceConfig> {
        let name = name.trim_end_matches('.');
        self.services
            .iter()
            .find(|s| s.port == port && s.name.trim_end_matches('.').eq_ignore_ascii_case(name))
    }

    /// The service whose `cluster_ip:port` is `addr`.
    pub fn service_by_ip(&self, addr: SocketAddr) -> Option<&ServiceConfig> {
        self.services
            .iter()
            .find(|s| s.port == addr.port() && s.cluster_ip == Some(addr.ip()))
    }

    /// The endpoint with this address, in any service.
    pub fn endpoint(&self, addr: SocketAddr) -> Option<&EndpointConfig> {
        self.services
            .iter()
            .flat_map(|s| &s.endpoints)
            .find(|e| e.addr == addr)
    }
}

/// Checks that `name` is a DNS-like identity: lowercase labels of `a-z`, `0-9` and `-`, with no
/// trailing dot, as it must appear verbatim in a certificate's DNS SAN.
pub fn check_identity_name(name: &str) -> Result<(), &'static str> {
    if name.is_empty() || name.len() > 253 {
        return Err("must be 1 to 253 characters");
    }
    for label in name.split('.') {
        if label.is_empty() || label.len() > 63 {
            return Err("labels must be 1 to 63 characters (no empty labels or trailing dot)");
        }
        if !label
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        {
            return Err("labels may hold only lowercase letters, digits and '-'");
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err("labels must not start or end with '-'");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "
services:
  - name: web.default.svc.cluster.local
    port: 8080
    endpoints:
      - addr: 127.0.0.1:9001
        weight: 3
        labels: { pod: web-1 }
        identity: web.default.serviceaccount.identity.linkerd.cluster.local
        protocol_hint: h2
      - addr: 127.0.0.1:9002
        opaque_transport_port: 4143
";

    const IDENTITIES: &str = "
identities:
  - name: web.default.serviceaccount.identity.linkerd.cluster.local
    token: s3cret
  - name: db.default.serviceaccount.identity.linkerd.cluster.local
    token: other
";

    #[test]
    fn parses_the_documented_format() {
        let c = MeshConfig::parse(&format!("{GOOD}{IDENTITIES}")).unwrap();
        let s = c.service("WEB.default.svc.cluster.local.", 8080).unwrap();
        assert_eq!(s.endpoints.len(), 2);
        assert_eq!(s.endpoints[0].weight, 3);
        assert_eq!(s.endpoints[0].labels["pod"], "web-1");
        assert_eq!(s.endpoints[0].protocol_hint, Some(ProtocolHint::H2));
        assert_eq!(s.endpoints[1].weight, 1, "default weight");
        assert_eq!(s.endpoints[0].opaque_transport_port, None);
        assert_eq!(s.endpoints[1].opaque_transport_port, Some(4143));
        let web = c
            .identity("web.default.serviceaccount.identity.linkerd.cluster.local")
            .unwrap();
        assert_eq!(web.token, "s3cret");
        assert!(
            !format!("{c:?}").contains("s3cret"),
            "tokens stay out of Debug"
        );
        assert!(c.identity("nope.identity.linkerd.cluster.local").is_none());
        assert!(c.service("web.default.svc.cluster.local", 8081).is_none());
        assert!(c.endpoint("127.0.0.1:9002".parse().unwrap()).is_some());
        assert_eq!(MeshConfig::parse("").unwrap(), MeshConfig::default());
    }

    #[test]
    fn errors_name_the_line() {
        let bad_addr = GOOD.replace("127.0.0.1:9002", "localhost:9002");
        let e = MeshConfig::parse(&bad_addr).unwrap_err().to_string();
        assert!(e.contains("line 11"), "{e}");
        let bad_hint = GOOD.replace("protocol_hint: h2", "protocol_hint: h3");
        let e = MeshConfig::parse(&bad_hint).unwrap_err().to_string();
        assert!(e.contains("line 10") && e.contains("h3"), "{e}");
        let unknown = GOOD.replace("weight: 3", "wieght: 3");
        let e = MeshConfig::parse(&unknown).unwrap_err().to_string();
        assert!(e.contains("wieght"), "{e}");
        let dup = format!("{GOOD}  - name: web.default.svc.cluster.local\n    port: 8080\n");
        assert!(matches!(
            MeshConfig::parse(&dup),
            Err(ConfigError::Duplicate { .. })
        ));
        assert!(MeshConfig::parse("services:\n  - name: a:80\n    port: 80\n").is_err());
    }

    #[test]
    fn identities_are_validated() {
        let with = |name: &str, token: &str| {
            format!("identities:\n  - name: {name:?}\n    token: {token:?}\n")
        };
        assert!(MeshConfig::parse(&with("a.b-c.d0", "t")).is_ok());
        for bad in [
            "Web.default.identity",
            "web..identity",
            "web.identity.",
            "-web.identity",
            "web_1.identity",
            "web:80",
            "",
        ] {
            let e = MeshConfig::parse(&with(bad, "t")).unwrap_err();
            assert!(
                matches!(e, ConfigError::InvalidIdentity { .. }),
                "{bad:?}: {e}"
            );
        }
        assert!(matches!(
            MeshConfig::parse(&with("a.b", " \n")),
            Err(ConfigError::InvalidIdentity { .. })
        ));
        let dup = format!("{}  - name: a.b\n    token: u\n", with("a.b", "t"));
        let e = MeshConfig::parse(&dup).unwrap_err();
        assert!(matches!(e, ConfigError::DuplicateIdentity { .. }), "{e}");
        let zero = GOOD.replace("opaque_transport_port: 4143", "opaque_transport_port: 0");
        assert!(MeshConfig::parse(&zero).is_err());
    }
}

#[cfg(test)]
mod server_tests {
    use super::*;

    #[test]
    fn servers_parse_and_validate() {
        let c = MeshConfig::parse(
            "servers:\n  - name: web\n    port: 8080\n    protocol: opaque\n    authorizations:\n      - name: a\n        networks: [10.0.0.0/8]\n        authentication: identities\n        identity_suffixes: [default.serviceaccount.identity.linkerd.cluster.local]\n",
        )
        .unwrap();
        let s = c.server(8080).unwrap();
        assert_eq!(s.protocol, ServerProtocol::Opaque);
        assert_eq!(
            s.authorizations[0].authentication,
            Authentication::Identities
        );
        assert!(c.server(9090).is_none());
        for bad in [
            "servers:\n  - name: a\n    port: 1\n  - name: b\n    port: 1\n",
            "servers:\n  - name: a\n    port: 1\n    routes:\n      - name: r\n        path_regex: '(['\n",
            "servers:\n  - name: a\n    port: 1\n    protocol: udp\n",
            "servers:\n  - name: a\n    port: 1\n    authorizations:\n      - name: x\n        networks: [10.0.0.0/40]\n",
        ] {
            assert!(MeshConfig::parse(bad).is_err(), "{bad}");
        }
    }
}
