//! HTTP and gRPC routes: their matches, ranked as the Gateway API orders them, and the
//! filters a matched rule applies; converted from the API's shared `http_route` and
//! `grpc_route` messages, validated once (regexes compiled, names and values parsed).

use linkerd_proxy_api::{grpc_route as grpc_api, http_route as http_api, meta};
use std::sync::Arc;

/// A resource's `group`, `kind` and `name`, as metrics label it (`srv_*`, `route_*`, `authz_*`).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Meta {
    /// E.g. `policy.linkerd.io`.
    pub group: Arc<str>,
    /// E.g. `server`, `HTTPRoute`, `default`.
    pub kind: Arc<str>,
    /// The resource's name.
    pub name: Arc<str>,
}

/// A route: its hosts, what the route itself carries (`R`: inbound, its authorizations), and
/// its rules (`P`: outbound, each rule's backends, timeouts and retries).
#[derive(Debug)]
pub struct Route<R, P> {
    /// `route_*` labels.
    pub meta: Arc<Meta>,
    /// None: any host.
    pub hosts: Vec<HostMatch>,
    /// What the route carries besides its rules.
    pub params: R,
    /// At least one.
    pub rules: Vec<Rule<P>>,
}

/// A route's host match (lower case, without trailing dot).
#[derive(Debug)]
pub enum HostMatch {
    /// The whole host.
    Exact(String),
    /// `*.example.com` as `.example.com`.
    Suffix(String),
}

/// A route's rule: any of its matches selects it.
#[derive(Debug)]
pub struct Rule<P> {
    /// Empty: matches every request.
    pub matches: Vec<RouteMatch>,
    /// Applied in order to the requests it selects.
    pub filters: Vec<Filter>,
    /// What the rule carries besides its matches and filters.
    pub params: P,
}

/// One match of a rule: every part must hold.
#[derive(Debug)]
pub enum RouteMatch {
    /// An HTTP route's.
    Http {
        /// None: any path.
        path: Option<PathMatch>,
        /// Each must match one of the request's values for the name.
        headers: Vec<HeaderMatch>,
        /// Query parameters by name.
        query: Vec<(String, ValueMatch)>,
        /// None: any method.
        method: Option<http::Method>,
    },
    /// A gRPC route's: `/service/method`.
    Grpc {
        /// None: any service.
        service: Option<String>,
        /// None: any method.
        method: Option<String>,
        /// As for HTTP.
        headers: Vec<HeaderMatch>,
    },
}

/// How a path matches.
#[derive(Debug)]
pub enum PathMatch {
    /// The whole path.
    Exact(String),
    /// Whole leading segments.
    Prefix(String),
    /// The whole path matches.
    Regex(regex::Regex),
}

/// A header that must have a matching value.
#[derive(Debug)]
pub struct HeaderMatch {
    /// The header.
    pub name: http::HeaderName,
    /// Its value's match.
    pub value: ValueMatch,
}

/// How a header or query value matches.
#[derive(Debug)]
pub enum ValueMatch {
    /// Byte for byte.
    Exact(Vec<u8>),
    /// The whole value matches.
    Regex(regex::Regex),
}

/// What a route does to a request before (or instead of) sending it on.
#[derive(Debug)]
pub enum Filter {
    /// Answer `status` (HTTP) for `ratio` of requests.
    FailHttp {
        /// The answer's status.
        status: http::StatusCode,
        /// In `l5d-proxy-error`.
        message: String,
        /// `numerator / denominator` of requests.
        ratio: (u32, u32),
    },
    /// Answer `grpc-status: code` for `ratio` of requests.
    FailGrpc {
        /// The `grpc-status`.
        code: u32,
        /// The `grpc-message`.
        message: String,
        /// `numerator / denominator` of requests.
        ratio: (u32, u32),
    },
    /// Add, then set, then remove request headers.
    Headers {
        /// Appended.
        add: Vec<(http::HeaderName, http::HeaderValue)>,
        /// Replacing any value.
        set: Vec<(http::HeaderName, http::HeaderValue)>,
        /// Removed.
        remove: Vec<http::HeaderName>,
    },
    /// Add, then set, then remove response headers (outbound routes).
    ResponseHeaders {
        /// Appended.
        add: Vec<(http::HeaderName, http::HeaderValue)>,
        /// Replacing any value.
        set: Vec<(http::HeaderName, http::HeaderValue)>,
        /// Removed.
        remove: Vec<http::HeaderName>,
    },
    /// Answer a redirect.
    Redirect {
        /// None: the request's.
        scheme: Option<String>,
        /// None: the request's.
        host: Option<String>,
        /// None: the request's.
        path: Option<PathRewrite>,
        /// None: the request's.
        port: Option<u16>,
        /// A 3xx.
        status: http::StatusCode,
    },
}

/// A redirect's new path.
#[derive(Debug)]
pub enum PathRewrite {
    /// The whole path.
    Full(String),
    /// The prefix the rule matched, replaced.
    Prefix(String),
}

/// A policy the proxy cannot apply, and why.
#[derive(Debug, thiserror::Error)]
#[error("invalid policy: {0}")]
pub struct InvalidPolicy(String);

/// An [`InvalidPolicy`] saying `why`.
pub fn invalid(why: impl Into<String>) -> InvalidPolicy {
    InvalidPolicy(why.into())
}

impl Meta {
    /// A built-in default's metadata: kind `default`.
    pub fn default_named(name: &str) -> Arc<Self> {
        Arc::new(Self {
            group: "".into(),
            kind: "default".into(),
            name: name.into(),
        })
    }

    /// A resource's metadata, or a default named `fallback`.
    pub fn from_api(m: Option<&meta::Metadata>, fallback: &str) -> Arc<Self> {
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

    /// An inbound `Server`'s labels (`group`, `kind`, `name`; upstream's defaults when absent).
    pub fn from_labels(labels: &std::collections::HashMap<String, String>) -> Arc<Self> {
        let get = |k: &str, d: &str| -> Arc<str> { labels.get(k).map_or(d, String::as_str).into() };
        Arc::new(Self {
            group: get("group", "policy.linkerd.io"),
            kind: get("kind", "server"),
            name: get("name", "unknown"),
        })
    }
}

/// The best route and rule for a request to `host` (without port), as linkerd2-proxy ranks
/// them: the best host match, then the best rule match; ties go to the first.
pub fn select<'a, R, P, B>(
    routes: &'a [Route<R, P>],
    host: Option<&str>,
    req: &http::Request<B>,
) -> Option<(&'a Route<R, P>, &'a Rule<P>)> {
    let (route, rule) = select_index(routes, host, req)?;
    let route = &routes[route];
    Some((route, &route.rules[rule]))
}

/// [`select`], as the indices of the route in `routes` and of the rule in its route's rules.
pub fn select_index<R, P, B>(
    routes: &[Route<R, P>],
    host: Option<&str>,
    req: &http::Request<B>,
) -> Option<(usize, usize)> {
    let mut best: Option<((u8, usize), RuleScore, usize, usize)> = None;
    for (i, route) in routes.iter().enumerate() {
        let Some(hs) = route.host_score(host) else {
            continue;
        };
        for (j, rule) in route.rules.iter().enumerate() {
            let Some(rs) = rule.score(req) else {
                continue;
            };
            let better = match &best {
                None => true,
                Some((bh, br, _, _)) => (hs, rs) > (*bh, *br),
            };
            if better {
                best = Some((hs, rs, i, j));
            }
        }
    }
    best.map(|(_, _, route, rule)| (route, rule))
}

/// The host of an authority (`host[:port]`, `[v6]:port`), without port or trailing dot.
pub fn authority_host(authority: &str) -> Option<&str> {
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

impl<R, P> Route<R, P> {
    /// The parts HTTP and gRPC routes share (`rules`: at least one; the caller says what
    /// a route without rules means).
    pub fn from_api(
        meta: Option<&meta::Metadata>,
        host_matches: &[http_api::HostMatch],
        params: R,
        rules: Vec<Rule<P>>,
    ) -> Result<Self, InvalidPolicy> {
        Ok(Self {
            meta: Meta::from_api(meta, "default"),
            hosts: hosts(host_matches)?,
            params,
            rules,
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
}

impl<P> Rule<P> {
    /// A rule for every request, with no filters.
    pub fn match_all(params: P) -> Self {
        Self {
            matches: Vec::new(),
            filters: Vec::new(),
            params,
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
pub(crate) fn prefix_matches(prefix: &str, path: &str) -> bool {
    let prefix = prefix.trim_end_matches('/');
    match path.strip_prefix(prefix) {
        Some(rest) => rest.is_empty() || rest.starts_with('/') || prefix.is_empty(),
        None => false,
    }
}

pub(crate) fn full_match(re: &regex::Regex, s: &str) -> bool {
    re.find(s)
        .is_some_and(|m| m.start() == 0 && m.end() == s.len())
}

pub(crate) fn query_matches(query: &str, name: &str, v: &ValueMatch) -> bool {
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

pub(crate) fn regex(re: &str) -> Result<regex::Regex, InvalidPolicy> {
    // Bounded: a hostile pattern cannot make the proxy build a huge automaton.
    regex::RegexBuilder::new(re)
        .size_limit(1 << 20)
        .build()
        .map_err(|e| invalid(format!("regex {re:?} does not compile: {e}")))
}

pub(crate) fn header_name(n: &str) -> Result<http::HeaderName, InvalidPolicy> {
    http::HeaderName::from_bytes(n.as_bytes()).map_err(|_| invalid(format!("header name {n:?}")))
}

pub(crate) fn header_value(v: &[u8]) -> Result<http::HeaderValue, InvalidPolicy> {
    http::HeaderValue::from_bytes(v).map_err(|_| invalid("a header value"))
}

pub(crate) fn header_match(h: &http_api::HeaderMatch) -> Result<HeaderMatch, InvalidPolicy> {
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

pub(crate) fn hosts(hosts: &[http_api::HostMatch]) -> Result<Vec<HostMatch>, InvalidPolicy> {
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

pub(crate) fn ratio(r: Option<&http_api::Ratio>) -> Result<(u32, u32), InvalidPolicy> {
    match r {
        None => Ok((1, 1)),
        Some(r) if r.denominator == 0 => Err(invalid("a ratio with denominator 0")),
        Some(r) => Ok((r.numerator.min(r.denominator), r.denominator)),
    }
}

/// A request header modifier.
pub fn headers_filter(m: &http_api::RequestHeaderModifier) -> Result<Filter, InvalidPolicy> {
    let (add, set, remove) = modifier(m.add.as_ref(), m.set.as_ref(), &m.remove)?;
    Ok(Filter::Headers { add, set, remove })
}

/// A response header modifier.
pub fn response_headers_filter(
    m: &http_api::ResponseHeaderModifier,
) -> Result<Filter, InvalidPolicy> {
    let (add, set, remove) = modifier(m.add.as_ref(), m.set.as_ref(), &m.remove)?;
    Ok(Filter::ResponseHeaders { add, set, remove })
}

type HeaderPairs = Vec<(http::HeaderName, http::HeaderValue)>;

fn modifier(
    add: Option<&linkerd_proxy_api::http_types::Headers>,
    set: Option<&linkerd_proxy_api::http_types::Headers>,
    remove: &[String],
) -> Result<(HeaderPairs, HeaderPairs, Vec<http::HeaderName>), InvalidPolicy> {
    let pairs = |h: Option<&linkerd_proxy_api::http_types::Headers>| {
        h.map_or(&[][..], |h| h.headers.as_slice())
            .iter()
            .map(|h| Ok((header_name(&h.name)?, header_value(&h.value)?)))
            .collect::<Result<Vec<_>, InvalidPolicy>>()
    };
    Ok((
        pairs(add)?,
        pairs(set)?,
        remove
            .iter()
            .map(|n| header_name(n))
            .collect::<Result<_, _>>()?,
    ))
}

/// An HTTP route's matches.
pub fn http_matches(
    matches: &[http_api::HttpRouteMatch],
) -> Result<Vec<RouteMatch>, InvalidPolicy> {
    use http_api::path_match::Kind as P;
    matches
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
                            Some(Value::Exact(e)) => ValueMatch::Exact(e.as_bytes().to_vec()),
                            Some(Value::Regex(r)) => ValueMatch::Regex(regex(r)?),
                            None => return Err(invalid("a query match without a value")),
                        };
                        Ok((q.name.clone(), v))
                    })
                    .collect::<Result<_, _>>()?,
                method: m.method.as_ref().map(method).transpose()?,
            })
        })
        .collect()
}

/// A gRPC route's matches.
pub fn grpc_matches(
    matches: &[grpc_api::GrpcRouteMatch],
) -> Result<Vec<RouteMatch>, InvalidPolicy> {
    let nonempty = |s: &str| (!s.is_empty()).then(|| s.to_string());
    matches
        .iter()
        .map(|m| {
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
        .collect()
}

/// An HTTP failure injector.
pub fn fail_http(fi: &http_api::HttpFailureInjector) -> Result<Filter, InvalidPolicy> {
    Ok(Filter::FailHttp {
        status: u16::try_from(fi.status)
            .ok()
            .and_then(|s| http::StatusCode::from_u16(s).ok())
            .ok_or_else(|| invalid(format!("failure status {}", fi.status)))?,
        message: fi.message.clone(),
        ratio: ratio(fi.ratio.as_ref())?,
    })
}

/// A gRPC failure injector.
pub fn fail_grpc(fi: &grpc_api::GrpcFailureInjector) -> Result<Filter, InvalidPolicy> {
    Ok(Filter::FailGrpc {
        code: fi.code,
        message: fi.message.clone(),
        ratio: ratio(fi.ratio.as_ref())?,
    })
}

pub(crate) fn method(
    m: &linkerd_proxy_api::http_types::HttpMethod,
) -> Result<http::Method, InvalidPolicy> {
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

/// A redirect (301 when the status is unset).
pub fn redirect(r: &http_api::RequestRedirect) -> Result<Filter, InvalidPolicy> {
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
