//! A port's server policy from the control plane (`InboundServerPolicies/WatchPort`): the
//! protocol, who may connect, and for HTTP the routes, their authorizations and filters.
//!
//! [`ServerPolicy::from_api`] validates a `Server` once, when it arrives (regexes compiled,
//! networks and identities parsed); evaluation per connection and per request is then pure and
//! allocation-free ([`ServerPolicy::authorize`], [`ServerPolicy::route`]).

use super::policy::ClientAuth;
use ipnet::IpNet;
use linkerd_proxy_api::{grpc_route as grpc_api, http_route as http_api, inbound as api, meta};
use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    sync::Arc,
    time::Duration,
};

/// A resource's `group`, `kind` and `name`, as metrics label it (`srv_*`, `route_*`, `authz_*`).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) struct Meta {
    pub group: Arc<str>,
    pub kind: Arc<str>,
    pub name: Arc<str>,
}

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

/// An HTTP (or gRPC) route.
#[derive(Debug)]
pub(crate) struct Route {
    pub meta: Arc<Meta>,
    pub hosts: Vec<HostMatch>,
    /// The route's own authorizations; the server's apply too.
    pub authorizations: Vec<Authorization>,
    pub rules: Vec<Rule>,
}

#[derive(Debug)]
pub(crate) enum HostMatch {
    Exact(String),
    /// `*.example.com` as `.example.com`.
    Suffix(String),
}

#[derive(Debug)]
pub(crate) struct Rule {
    /// Empty: matches every request.
    pub matches: Vec<RouteMatch>,
    pub filters: Vec<Filter>,
}

#[derive(Debug)]
pub(crate) enum RouteMatch {
    Http {
        path: Option<PathMatch>,
        headers: Vec<HeaderMatch>,
        query: Vec<(String, ValueMatch)>,
        method: Option<http::Method>,
    },
    Grpc {
        service: Option<String>,
        method: Option<String>,
        headers: Vec<HeaderMatch>,
    },
}

#[derive(Debug)]
pub(crate) enum PathMatch {
    Exact(String),
    Prefix(String),
    Regex(regex::Regex),
}

#[derive(Debug)]
pub(crate) struct HeaderMatch {
    pub name: http::HeaderName,
    pub value: ValueMatch,
}

#[derive(Debug)]
pub(crate) enum ValueMatch {
    Exact(Vec<u8>),
    Regex(regex::Regex),
}

/// What a route does to a request before (or instead of) sending it on.
#[derive(Debug)]
pub(crate) enum Filter {
    /// Answer `status` (HTTP) for `ratio` of requests.
    FailHttp {
        status: http::StatusCode,
        message: String,
        ratio: (u32, u32),
    },
    /// Answer `grpc-status: code` for `ratio` of requests.
    FailGrpc {
        code: u32,
        message: String,
        ratio: (u32, u32),
    },
    /// Add, then set, then remove request headers.
    Headers {
        add: Vec<(http::HeaderName, http::HeaderValue)>,
        set: Vec<(http::HeaderName, http::HeaderValue)>,
        remove: Vec<http::HeaderName>,
    },
    /// Answer a redirect.
    Redirect {
        scheme: Option<String>,
        host: Option<String>,
        path: Option<PathRewrite>,
        port: Option<u16>,
        status: http::StatusCode,
    },
}

#[derive(Debug)]
pub(crate) enum PathRewrite {
    Full(String),
    Prefix(String),
}

/// A `Server` the proxy cannot apply, and why.
#[derive(Debug, thiserror::Error)]
#[error("invalid server policy: {0}")]
pub(crate) struct InvalidPolicy(String);

fn invalid(why: impl Into<String>) -> InvalidPolicy {
    InvalidPolicy(why.into())
}

impl Meta {
    /// A built-in default's metadata: kind `default`.
    pub(crate) fn default_named(name: &str) -> Arc<Self> {
        Arc::new(Self {
            group: "".into(),
            kind: "default".into(),
            name: name.into(),
        })
    }

    pub(crate) fn from_api(m: Option<&meta::Metadata>, fallback: &str) -> Arc<Self> {
        match m.and_then(|m| m.kind.as_ref()) {
            Some(meta::metadata::Kind::Resource(r)) => Arc::new(Self {
                group: r.group.as_str().into(),
                kind: r.kind.as_str().into(),
                name: r.name.as_str().into(),
            }),
            Some(meta::metadata::Kind::Default(name)) => Self::default_named(name),
            None => Self::default_named(fallback),
        }
    }

    /// The server's labels (`group`, `kind`, `name`; upstream's defaults when absent).
    fn from_labels(labels: &std::collections::HashMap<String, String>) -> Arc<Self> {
        let get = |k: &str, d: &str| -> Arc<str> { labels.get(k).map_or(d, String::as_str).into() };
        Arc::new(Self {
            group: get("group", "policy.linkerd.io"),
            kind: get("kind", "server"),
            name: get("name", "unknown"),
        })
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
            true => vec![Route::default_route()],
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
        let host = request_host(req);
        let mut best: Option<((u8, usize), RuleScore, &Route, &Rule)> = None;
        for route in self.routes.iter() {
            let Some(hs) = route.host_score(host) else {
                continue;
            };
            for rule in &route.rules {
                let Some(rs) = rule.score(req) else {
                    continue;
                };
                let better = match &best {
                    None => true,
                    Some((bh, br, _, _)) => (hs, rs) > (*bh, *br),
                };
                if better {
                    best = Some((hs, rs, route, rule));
                }
            }
        }
        best.map(|(_, _, route, rule)| (route, rule))
    }
}

/// The request's host (from `:authority` or `Host`), without a port or a trailing dot; not
/// copied (matches compare it ignoring ASCII case).
fn request_host<B>(req: &http::Request<B>) -> Option<&str> {
    let authority = linkerd_http::authority_of(req)?;
    let host = match authority.strip_prefix('[') {
        // `[::1]:80`: the address inside the brackets.
        Some(v6) => v6.split(']').next()?,
        None => authority
            .rsplit_once(':')
            .filter(|(_, port)| port.bytes().all(|b| b.is_ascii_digit()))
            .map_or(authority, |(host, _)| host),
    };
    Some(host.trim_end_matches('.'))
}

/// Whether `host` ends with `suffix` (lower case), ignoring ASCII case.
fn ends_with_ignore_case(host: &str, suffix: &str) -> bool {
    let (h, s) = (host.as_bytes(), suffix.as_bytes());
    h.len() >= s.len() && h[h.len() - s.len()..].eq_ignore_ascii_case(s)
}

/// How well a rule matched: path kind and length, header matches, query matches, method.
type RuleScore = (u8, usize, usize, usize, bool);

impl Route {
    fn default_route() -> Self {
        Self {
            meta: Meta::default_named("default"),
            hosts: Vec::new(),
            authorizations: Vec::new(),
            rules: vec![Rule::match_all()],
        }
    }

    /// The parts HTTP and gRPC routes share; no rules is one match-all rule.
    fn from_api(
        meta: Option<&meta::Metadata>,
        host_matches: &[http_api::HostMatch],
        authorizations: &[api::Authz],
        rules: Vec<Rule>,
    ) -> Result<Self, InvalidPolicy> {
        Ok(Self {
            meta: Meta::from_api(meta, "default"),
            hosts: hosts(host_matches)?,
            authorizations: authorizations
                .iter()
                .map(Authorization::from_api)
                .collect::<Result<_, _>>()?,
            rules: match rules.is_empty() {
                true => vec![Rule::match_all()],
                false => rules,
            },
        })
    }

    /// `None`: the host does not match. Exact beats any suffix; longer suffixes beat shorter;
    /// a route without hosts matches any, lowest.
    fn host_score(&self, host: Option<&str>) -> Option<(u8, usize)> {
        if self.hosts.is_empty() {
            return Some((0, 0));
        }
        let host = host?;
        self.hosts
            .iter()
            .filter_map(|m| match m {
                HostMatch::Exact(h) if h.eq_ignore_ascii_case(host) => Some((2, h.len())),
                HostMatch::Suffix(s) if ends_with_ignore_case(host, s) => Some((1, s.len())),
                _ => None,
            })
            .max()
    }

    /// The route's authorization that admits this client (the server's are checked by the
    /// caller first).
    pub(crate) fn authorize(&self, client: IpAddr, auth: &ClientAuth) -> Option<&Authorization> {
        self.authorizations.iter().find(|a| a.admits(client, auth))
    }
}

impl Rule {
    fn match_all() -> Self {
        Self {
            matches: Vec::new(),
            filters: Vec::new(),
        }
    }

    fn score<B>(&self, req: &http::Request<B>) -> Option<RuleScore> {
        if self.matches.is_empty() {
            return Some((0, 0, 0, 0, false));
        }
        self.matches.iter().filter_map(|m| m.score(req)).max()
    }
}

impl RouteMatch {
    fn score<B>(&self, req: &http::Request<B>) -> Option<RuleScore> {
        match self {
            RouteMatch::Http {
                path,
                headers,
                query,
                method,
            } => {
                let p = req.uri().path();
                let (kind, len) = match path {
                    None => (0, 0),
                    Some(PathMatch::Exact(e)) if e == p => (3, e.len()),
                    Some(PathMatch::Prefix(pre)) if prefix_matches(pre, p) => (2, pre.len()),
                    Some(PathMatch::Regex(re)) if full_match(re, p) => (1, 0),
                    Some(_) => return None,
                };
                if !headers.iter().all(|h| h.matches(req.headers())) {
                    return None;
                }
                let q = req.uri().query().unwrap_or("");
                if !query.iter().all(|(name, v)| query_matches(q, name, v)) {
                    return None;
                }
                if method.as_ref().is_some_and(|m| m != req.method()) {
                    return None;
                }
                Some((kind, len, headers.len(), query.len(), method.is_some()))
            }
            RouteMatch::Grpc {
                service,
                method,
                headers,
            } => {
                // `/package.Service/Method`.
                let mut parts = req.uri().path().trim_start_matches('/').splitn(2, '/');
                let (svc, mth) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
                if service.as_ref().is_some_and(|s| s != svc)
                    || method.as_ref().is_some_and(|m| m != mth)
                {
                    return None;
                }
                if !headers.iter().all(|h| h.matches(req.headers())) {
                    return None;
                }
                let len = service.as_ref().map_or(0, String::len)
                    + method.as_ref().map_or(0, String::len);
                Some((
                    u8::from(service.is_some()) + u8::from(method.is_some()),
                    len,
                    headers.len(),
                    0,
                    false,
                ))
            }
        }
    }
}

/// A path prefix matches whole segments: `/api` matches `/api` and `/api/x`, not `/apix`.
fn prefix_matches(prefix: &str, path: &str) -> bool {
    let prefix = prefix.trim_end_matches('/');
    match path.strip_prefix(prefix) {
        Some(rest) => rest.is_empty() || rest.starts_with('/') || prefix.is_empty(),
        None => false,
    }
}

fn full_match(re: &regex::Regex, s: &str) -> bool {
    re.find(s)
        .is_some_and(|m| m.start() == 0 && m.end() == s.len())
}

fn query_matches(query: &str, name: &str, v: &ValueMatch) -> bool {
    query.split('&').any(|kv| {
        let (k, val) = kv.split_once('=').unwrap_or((kv, ""));
        k == name
            && match v {
                ValueMatch::Exact(e) => val.as_bytes() == e.as_slice(),
                ValueMatch::Regex(re) => full_match(re, val),
            }
    })
}

impl HeaderMatch {
    fn matches(&self, headers: &http::HeaderMap) -> bool {
        headers
            .get_all(&self.name)
            .iter()
            .any(|v| match &self.value {
                ValueMatch::Exact(e) => v.as_bytes() == e.as_slice(),
                ValueMatch::Regex(re) => v.to_str().is_ok_and(|v| full_match(re, v)),
            })
    }
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

fn regex(re: &str) -> Result<regex::Regex, InvalidPolicy> {
    // Bounded: a hostile pattern cannot make the proxy build a huge automaton.
    regex::RegexBuilder::new(re)
        .size_limit(1 << 20)
        .build()
        .map_err(|e| invalid(format!("regex {re:?} does not compile: {e}")))
}

fn header_name(n: &str) -> Result<http::HeaderName, InvalidPolicy> {
    http::HeaderName::from_bytes(n.as_bytes()).map_err(|_| invalid(format!("header name {n:?}")))
}

fn header_value(v: &[u8]) -> Result<http::HeaderValue, InvalidPolicy> {
    http::HeaderValue::from_bytes(v).map_err(|_| invalid("a header value"))
}

fn header_match(h: &http_api::HeaderMatch) -> Result<HeaderMatch, InvalidPolicy> {
    use http_api::header_match::Value;
    Ok(HeaderMatch {
        name: header_name(&h.name)?,
        value: match h.value.as_ref() {
            Some(Value::Exact(e)) => ValueMatch::Exact(e.clone()),
            Some(Value::Regex(r)) => ValueMatch::Regex(regex(r)?),
            None => return Err(invalid("a header match without a value")),
        },
    })
}

fn hosts(hosts: &[http_api::HostMatch]) -> Result<Vec<HostMatch>, InvalidPolicy> {
    use http_api::host_match::Match;
    hosts
        .iter()
        .map(|h| match h.r#match.as_ref() {
            Some(Match::Exact(e)) => Ok(HostMatch::Exact(
                e.trim_end_matches('.').to_ascii_lowercase(),
            )),
            Some(Match::Suffix(s)) => {
                let labels: Vec<&str> = s.reverse_labels.iter().rev().map(String::as_str).collect();
                Ok(HostMatch::Suffix(format!(
                    ".{}",
                    labels.join(".").to_ascii_lowercase()
                )))
            }
            None => Err(invalid("a host match without a host")),
        })
        .collect()
}

fn ratio(r: Option<&http_api::Ratio>) -> Result<(u32, u32), InvalidPolicy> {
    match r {
        None => Ok((1, 1)),
        Some(r) if r.denominator == 0 => Err(invalid("a ratio with denominator 0")),
        Some(r) => Ok((r.numerator.min(r.denominator), r.denominator)),
    }
}

fn headers_filter(m: &http_api::RequestHeaderModifier) -> Result<Filter, InvalidPolicy> {
    let pairs = |h: Option<&linkerd_proxy_api::http_types::Headers>| {
        h.map_or(&[][..], |h| h.headers.as_slice())
            .iter()
            .map(|h| Ok((header_name(&h.name)?, header_value(&h.value)?)))
            .collect::<Result<Vec<_>, InvalidPolicy>>()
    };
    Ok(Filter::Headers {
        add: pairs(m.add.as_ref())?,
        set: pairs(m.set.as_ref())?,
        remove: m
            .remove
            .iter()
            .map(|n| header_name(n))
            .collect::<Result<_, _>>()?,
    })
}

fn http_routes(routes: &[api::HttpRoute]) -> Result<Vec<Route>, InvalidPolicy> {
    use api::http_route::filter::Kind as F;
    use http_api::path_match::Kind as P;
    routes
        .iter()
        .map(|r| {
            let rules = r
                .rules
                .iter()
                .map(|rule| {
                    let matches = rule
                        .matches
                        .iter()
                        .map(|m| {
                            Ok(RouteMatch::Http {
                                path: match m.path.as_ref().and_then(|p| p.kind.as_ref()) {
                                    None => None,
                                    Some(P::Exact(e)) => Some(PathMatch::Exact(e.clone())),
                                    Some(P::Prefix(p)) => Some(PathMatch::Prefix(p.clone())),
                                    Some(P::Regex(re)) => Some(PathMatch::Regex(regex(re)?)),
                                },
                                headers: m
                                    .headers
                                    .iter()
                                    .map(header_match)
                                    .collect::<Result<_, _>>()?,
                                query: m
                                    .query_params
                                    .iter()
                                    .map(|q| {
                                        use http_api::query_param_match::Value;
                                        let v = match q.value.as_ref() {
                                            Some(Value::Exact(e)) => {
                                                ValueMatch::Exact(e.as_bytes().to_vec())
                                            }
                                            Some(Value::Regex(r)) => ValueMatch::Regex(regex(r)?),
                                            None => {
                                                return Err(invalid(
                                                    "a query match without a value",
                                                ))
                                            }
                                        };
                                        Ok((q.name.clone(), v))
                                    })
                                    .collect::<Result<_, _>>()?,
                                method: m.method.as_ref().map(method).transpose()?,
                            })
                        })
                        .collect::<Result<Vec<_>, InvalidPolicy>>()?;
                    let filters = rule
                        .filters
                        .iter()
                        .map(|f| match f.kind.as_ref() {
                            Some(F::FailureInjector(fi)) => Ok(Filter::FailHttp {
                                status: u16::try_from(fi.status)
                                    .ok()
                                    .and_then(|s| http::StatusCode::from_u16(s).ok())
                                    .ok_or_else(|| {
                                        invalid(format!("failure status {}", fi.status))
                                    })?,
                                message: fi.message.clone(),
                                ratio: ratio(fi.ratio.as_ref())?,
                            }),
                            Some(F::RequestHeaderModifier(m)) => headers_filter(m),
                            Some(F::Redirect(r)) => redirect(r),
                            None => Err(invalid("a filter without a kind")),
                        })
                        .collect::<Result<Vec<_>, InvalidPolicy>>()?;
                    Ok(Rule { matches, filters })
                })
                .collect::<Result<Vec<_>, InvalidPolicy>>()?;
            Route::from_api(r.metadata.as_ref(), &r.hosts, &r.authorizations, rules)
        })
        .collect()
}

fn grpc_routes(routes: &[api::GrpcRoute]) -> Result<Vec<Route>, InvalidPolicy> {
    use api::grpc_route::filter::Kind as F;
    let nonempty = |s: &str| (!s.is_empty()).then(|| s.to_string());
    routes
        .iter()
        .map(|r| {
            let rules = r
                .rules
                .iter()
                .map(|rule| {
                    let matches = rule
                        .matches
                        .iter()
                        .map(|m: &grpc_api::GrpcRouteMatch| {
                            Ok(RouteMatch::Grpc {
                                service: m.rpc.as_ref().and_then(|r| nonempty(&r.service)),
                                method: m.rpc.as_ref().and_then(|r| nonempty(&r.method)),
                                headers: m
                                    .headers
                                    .iter()
                                    .map(header_match)
                                    .collect::<Result<_, _>>()?,
                            })
                        })
                        .collect::<Result<Vec<_>, InvalidPolicy>>()?;
                    let filters = rule
                        .filters
                        .iter()
                        .map(|f| match f.kind.as_ref() {
                            Some(F::FailureInjector(fi)) => Ok(Filter::FailGrpc {
                                code: fi.code,
                                message: fi.message.clone(),
                                ratio: ratio(fi.ratio.as_ref())?,
                            }),
                            Some(F::RequestHeaderModifier(m)) => headers_filter(m),
                            None => Err(invalid("a filter without a kind")),
                        })
                        .collect::<Result<Vec<_>, InvalidPolicy>>()?;
                    Ok(Rule { matches, filters })
                })
                .collect::<Result<Vec<_>, InvalidPolicy>>()?;
            Route::from_api(r.metadata.as_ref(), &r.hosts, &r.authorizations, rules)
        })
        .collect()
}

fn method(m: &linkerd_proxy_api::http_types::HttpMethod) -> Result<http::Method, InvalidPolicy> {
    use linkerd_proxy_api::http_types::http_method::{Registered, Type};
    match m.r#type.as_ref() {
        Some(Type::Registered(r)) => Ok(match Registered::try_from(*r) {
            Ok(Registered::Get) => http::Method::GET,
            Ok(Registered::Post) => http::Method::POST,
            Ok(Registered::Put) => http::Method::PUT,
            Ok(Registered::Delete) => http::Method::DELETE,
            Ok(Registered::Patch) => http::Method::PATCH,
            Ok(Registered::Options) => http::Method::OPTIONS,
            Ok(Registered::Connect) => http::Method::CONNECT,
            Ok(Registered::Head) => http::Method::HEAD,
            Ok(Registered::Trace) => http::Method::TRACE,
            Err(_) => return Err(invalid(format!("unknown method {r}"))),
        }),
        Some(Type::Unregistered(u)) => {
            http::Method::from_bytes(u.as_bytes()).map_err(|_| invalid(format!("method {u:?}")))
        }
        None => Err(invalid("a method match without a method")),
    }
}

fn redirect(r: &http_api::RequestRedirect) -> Result<Filter, InvalidPolicy> {
    use linkerd_proxy_api::http_types::scheme::{Registered, Type};
    let scheme = match r.scheme.as_ref().and_then(|s| s.r#type.as_ref()) {
        None => None,
        Some(Type::Registered(n)) => Some(match Registered::try_from(*n) {
            Ok(Registered::Https) => "https".to_string(),
            _ => "http".to_string(),
        }),
        Some(Type::Unregistered(s)) => Some(s.clone()),
    };
    let status = match r.status {
        0 => http::StatusCode::MOVED_PERMANENTLY,
        s => u16::try_from(s)
            .ok()
            .and_then(|s| http::StatusCode::from_u16(s).ok())
            .filter(|s| s.is_redirection())
            .ok_or_else(|| invalid(format!("redirect status {s}")))?,
    };
    use http_api::path_modifier::Replace;
    Ok(Filter::Redirect {
        scheme,
        host: (!r.host.is_empty()).then(|| r.host.clone()),
        path: match r.path.as_ref().and_then(|p| p.replace.as_ref()) {
            None => None,
            Some(Replace::Full(f)) => Some(PathRewrite::Full(f.clone())),
            Some(Replace::Prefix(p)) => Some(PathRewrite::Prefix(p.clone())),
        },
        port: match r.port {
            0 => None,
            p => Some(u16::try_from(p).map_err(|_| invalid(format!("redirect port {p}")))?),
        },
        status,
    })
}

#[cfg(test)]
mod tests;
