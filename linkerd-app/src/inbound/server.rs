//! A port's server policy from the control plane (`InboundServerPolicies/WatchPort`): the
//! protocol, who may connect, and for HTTP the routes, their authorizations and filters.
//!
//! [`ServerPolicy::from_api`] validates a `Server` once, when it arrives (regexes compiled,
//! networks and identities parsed); evaluation per connection and per request is then pure and
//! allocation-free ([`ServerPolicy::authorize`], [`ServerPolicy::route`]).

use super::policy::ClientAuth;
use ipnet::IpNet;
use linkerd_policy::route::{
    fail_grpc, fail_http, grpc_matches, headers_filter, http_matches, invalid, redirect,
};
pub(crate) use linkerd_policy::{InvalidPolicy, Meta};
use linkerd_proxy_api::{http_route as http_api, inbound as api};
use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    sync::Arc,
    time::Duration,
};

/// A validated server policy.
#[derive(Debug)]
pub(crate) struct ServerPolicy {
    pub meta: Arc<Meta>,
    pub protocol: ServerProtocol,
    /// The server's authorizations, with the proxy's own `localhost` one.
    pub authorizations: Arc<[Authorization]>,
    /// HTTP or gRPC routes (one match-all `default` route when the server names none).
    pub routes: Arc<[Route]>,
    pub rate_limit: Option<Arc<super::ratelimit::RateLimit>>,
}

/// How connections to the port are proxied.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ServerProtocol {
    /// Detect HTTP within the timeout; anything else is TCP.
    Detect {
        timeout: Option<Duration>,
    },
    Http1,
    Http2,
    Grpc,
    /// TCP, no detection.
    Opaque,
    /// The app's TLS: connection-level authorization only.
    Tls,
}

/// Who may connect: a client address in the networks, and the authentication.
#[derive(Debug)]
pub(crate) struct Authorization {
    pub networks: Vec<Network>,
    pub authn: Authn,
    pub meta: Arc<Meta>,
}

#[derive(Debug)]
pub(crate) struct Network {
    pub net: IpNet,
    pub except: Vec<IpNet>,
}

#[derive(Debug)]
pub(crate) enum Authn {
    /// Any client.
    Unauthenticated,
    /// Mesh TLS, with or without an identity.
    MeshTls,
    /// Mesh TLS with one of these identities, or one under these suffixes (`""` = any).
    Identities {
        exact: Vec<String>,
        suffixes: Vec<String>,
    },
}

/// An HTTP (or gRPC) route: its own authorizations (the server's apply too), and its rules.
pub(crate) type Route = linkerd_policy::route::Route<RouteAuthz, ()>;
pub(crate) type Rule = linkerd_policy::route::Rule<()>;

/// A route's own authorizations.
#[derive(Debug)]
pub(crate) struct RouteAuthz(Vec<Authorization>);

impl RouteAuthz {
    /// The route's authorization that admits this client (the server's are checked by the
    /// caller first).
    pub(crate) fn authorize(&self, client: IpAddr, auth: &ClientAuth) -> Option<&Authorization> {
        self.0.iter().find(|a| a.admits(client, auth))
    }
}

impl ServerPolicy {
    /// Validates a `Server` from the control plane.
    pub(crate) fn from_api(s: &api::Server) -> Result<Self, InvalidPolicy> {
        use api::proxy_protocol::Kind;
        let meta = Meta::from_labels(&s.labels);
        let mut authorizations = s
            .authorizations
            .iter()
            .map(Authorization::from_api)
            .collect::<Result<Vec<_>, _>>()?;
        authorizations.push(Authorization::localhost());
        let kind = s
            .protocol
            .as_ref()
            .and_then(|p| p.kind.as_ref())
            .ok_or_else(|| invalid("no protocol"))?;
        let (protocol, routes, rate_limit) = match kind {
            Kind::Detect(d) => (
                ServerProtocol::Detect {
                    timeout: d.timeout.and_then(|t| Duration::try_from(t).ok()),
                },
                http_routes(&d.http_routes)?,
                d.http_local_rate_limit.as_ref(),
            ),
            Kind::Http1(h) => (
                ServerProtocol::Http1,
                http_routes(&h.routes)?,
                h.local_rate_limit.as_ref(),
            ),
            Kind::Http2(h) => (
                ServerProtocol::Http2,
                http_routes(&h.routes)?,
                h.local_rate_limit.as_ref(),
            ),
            Kind::Grpc(g) => (ServerProtocol::Grpc, grpc_routes(&g.routes)?, None),
            Kind::Opaque(_) => (ServerProtocol::Opaque, Vec::new(), None),
            Kind::Tls(_) => (ServerProtocol::Tls, Vec::new(), None),
        };
        let routes = match routes.is_empty() {
            true => vec![default_route()],
            false => routes,
        };
        Ok(Self {
            meta,
            protocol,
            authorizations: authorizations.into(),
            routes: routes.into(),
            rate_limit: rate_limit
                .map(super::ratelimit::RateLimit::from_api)
                .transpose()?
                .map(Arc::new),
        })
    }

    /// The server authorization that admits this client, if any.
    pub(crate) fn authorize(&self, client: IpAddr, auth: &ClientAuth) -> Option<&Authorization> {
        self.authorizations.iter().find(|a| a.admits(client, auth))
    }

    /// The best route and rule for a request, as linkerd2-proxy ranks them: the best host
    /// match, then the best rule match; ties go to the first.
    pub(crate) fn route<B>(&self, req: &http::Request<B>) -> Option<(&Route, &Rule)> {
        let host = linkerd_http::authority_of(req).and_then(linkerd_policy::route::authority_host);
        linkerd_policy::route::select(&self.routes, host, req)
    }
}

/// The default route: every request, no authorization of its own.
fn default_route() -> Route {
    Route {
        meta: Meta::default_named("default"),
        hosts: Vec::new(),
        params: RouteAuthz(Vec::new()),
        rules: vec![Rule::match_all(())],
    }
}

/// A route from the parts HTTP and gRPC routes share.
fn route(
    meta: Option<&linkerd_proxy_api::meta::Metadata>,
    hosts: &[http_api::HostMatch],
    authorizations: &[api::Authz],
    rules: Vec<Rule>,
) -> Result<Route, InvalidPolicy> {
    let authzs = authorizations
        .iter()
        .map(Authorization::from_api)
        .collect::<Result<_, _>>()?;
    // No rules is one match-all rule.
    let rules = match rules.is_empty() {
        true => vec![Rule::match_all(())],
        false => rules,
    };
    Route::from_api(meta, hosts, RouteAuthz(authzs), rules)
}

impl Authorization {
    /// The proxy's own: unauthenticated clients on loopback (probes from the pod, the admin
    /// port's local callers).
    pub(crate) fn localhost() -> Self {
        Self {
            networks: vec![
                Network {
                    net: IpNet::from(IpAddr::V4(Ipv4Addr::LOCALHOST)),
                    except: Vec::new(),
                },
                Network {
                    net: IpNet::from(IpAddr::V6(Ipv6Addr::LOCALHOST)),
                    except: Vec::new(),
                },
            ],
            authn: Authn::Unauthenticated,
            meta: Meta::default_named("localhost"),
        }
    }

    fn from_api(a: &api::Authz) -> Result<Self, InvalidPolicy> {
        use api::authn::{permit_mesh_tls::Clients, Permit};
        let networks = a
            .networks
            .iter()
            .map(|n| {
                Ok(Network {
                    net: ip_net(n.net.as_ref())?,
                    except: n
                        .except
                        .iter()
                        .map(|e| ip_net(Some(e)))
                        .collect::<Result<_, _>>()?,
                })
            })
            .collect::<Result<Vec<_>, InvalidPolicy>>()?;
        if networks.is_empty() {
            return Err(invalid("an authorization without networks"));
        }
        let permit = a
            .authentication
            .as_ref()
            .and_then(|a| a.permit.as_ref())
            .ok_or_else(|| invalid("an authorization without authentication"))?;
        let authn = match permit {
            Permit::Unauthenticated(_) => Authn::Unauthenticated,
            Permit::MeshTls(m) => match &m.clients {
                Some(Clients::Unauthenticated(_)) => Authn::MeshTls,
                Some(Clients::Identities(ids)) => Authn::Identities {
                    exact: ids
                        .identities
                        .iter()
                        .map(|i| i.name.to_ascii_lowercase())
                        .collect(),
                    suffixes: ids
                        .suffixes
                        .iter()
                        .map(|s| match s.parts.is_empty() {
                            true => String::new(),
                            false => format!(".{}", s.parts.join(".").to_ascii_lowercase()),
                        })
                        .collect(),
                },
                None => return Err(invalid("a mesh TLS authorization without clients")),
            },
        };
        let fallback = a.labels.get("name").map_or("unknown", String::as_str);
        let meta = match &a.metadata {
            Some(m) => Meta::from_api(Some(m), fallback),
            None => Arc::new(Meta {
                group: a
                    .labels
                    .get("group")
                    .map_or("policy.linkerd.io", String::as_str)
                    .into(),
                kind: a
                    .labels
                    .get("kind")
                    .map_or("serverauthorization", String::as_str)
                    .into(),
                name: fallback.into(),
            }),
        };
        Ok(Self {
            networks,
            authn,
            meta,
        })
    }

    /// Whether the client's address and TLS satisfy this authorization.
    pub(crate) fn admits(&self, client: IpAddr, auth: &ClientAuth) -> bool {
        let client = client.to_canonical();
        let in_net = self
            .networks
            .iter()
            .any(|n| n.net.contains(&client) && !n.except.iter().any(|e| e.contains(&client)));
        in_net
            && match (&self.authn, auth) {
                (Authn::Unauthenticated, _) => true,
                (Authn::MeshTls, ClientAuth::Tls | ClientAuth::Authenticated(_)) => true,
                (Authn::Identities { exact, suffixes }, ClientAuth::Authenticated(id)) => {
                    let id = id.as_str();
                    exact.iter().any(|e| e == id)
                        || suffixes
                            .iter()
                            .any(|s| s.is_empty() || id.ends_with(s.as_str()))
                }
                _ => false,
            }
    }
}

fn ip_net(n: Option<&linkerd_proxy_api::net::IpNetwork>) -> Result<IpNet, InvalidPolicy> {
    let n = n.ok_or_else(|| invalid("a network without an address"))?;
    let ip =
        n.ip.as_ref()
            .and_then(|ip| ip.to_ip())
            .ok_or_else(|| invalid("a network without an address"))?;
    let len = u8::try_from(n.prefix_len).map_err(|_| invalid("a prefix length over 128"))?;
    IpNet::new(ip, len)
        .map(|n| n.trunc())
        .map_err(|_| invalid(format!("prefix length {len} for {ip}")))
}

fn http_routes(routes: &[api::HttpRoute]) -> Result<Vec<Route>, InvalidPolicy> {
    use api::http_route::filter::Kind as F;
    routes
        .iter()
        .map(|r| {
            let rules = r
                .rules
                .iter()
                .map(|rule| {
                    let filters = rule
                        .filters
                        .iter()
                        .map(|f| match f.kind.as_ref() {
                            Some(F::FailureInjector(fi)) => fail_http(fi),
                            Some(F::RequestHeaderModifier(m)) => headers_filter(m),
                            Some(F::Redirect(r)) => redirect(r),
                            None => Err(invalid("a filter without a kind")),
                        })
                        .collect::<Result<Vec<_>, InvalidPolicy>>()?;
                    Ok(Rule {
                        matches: http_matches(&rule.matches)?,
                        filters,
                        params: (),
                    })
                })
                .collect::<Result<Vec<_>, InvalidPolicy>>()?;
            route(r.metadata.as_ref(), &r.hosts, &r.authorizations, rules)
        })
        .collect()
}

fn grpc_routes(routes: &[api::GrpcRoute]) -> Result<Vec<Route>, InvalidPolicy> {
    use api::grpc_route::filter::Kind as F;
    routes
        .iter()
        .map(|r| {
            let rules = r
                .rules
                .iter()
                .map(|rule| {
                    let filters = rule
                        .filters
                        .iter()
                        .map(|f| match f.kind.as_ref() {
                            Some(F::FailureInjector(fi)) => fail_grpc(fi),
                            Some(F::RequestHeaderModifier(m)) => headers_filter(m),
                            None => Err(invalid("a filter without a kind")),
                        })
                        .collect::<Result<Vec<_>, InvalidPolicy>>()?;
                    Ok(Rule {
                        matches: grpc_matches(&rule.matches)?,
                        filters,
                        params: (),
                    })
                })
                .collect::<Result<Vec<_>, InvalidPolicy>>()?;
            route(r.metadata.as_ref(), &r.hosts, &r.authorizations, rules)
        })
        .collect()
}

#[cfg(test)]
mod tests;
