//! The outbound policy of a target (`OutboundPolicies.Watch`), validated once when it arrives:
//! the protocol, the HTTP and gRPC routes with, per rule, the filters, the weighted backends
//! a request is split over, the timeouts and the retry policy; failure accrual and each
//! backend's queue. A policy the proxy cannot apply is refused whole ([`InvalidPolicy`]), so the
//! previous one stays in force.

use crate::route::{
    fail_grpc, fail_http, grpc_matches, headers_filter, http_matches, invalid, redirect,
    response_headers_filter, InvalidPolicy, Meta, Route, Rule,
};
use linkerd_proxy_api::{destination, outbound as api};
use std::{net::SocketAddr, sync::Arc, time::Duration};

/// An outbound route: per rule, what [`RuleParams`] says.
pub type OutboundRoute = Route<(), RuleParams>;

/// A validated outbound policy.
#[derive(Debug)]
pub struct OutboundPolicy {
    /// The parent (a Service): `parent_*` metric labels.
    pub parent: Arc<Meta>,
    /// How the target's connections are proxied.
    pub protocol: Protocol,
    /// Every backend of every route (where its endpoints come from, its queue), in the order
    /// of their [`Backend::index`]: what a client resolves once per policy, so a request finds
    /// its backend's service by index.
    pub backends: Vec<(BackendTarget, Queue)>,
}

/// How connections to the target are proxied, and the routes of each protocol.
#[derive(Debug)]
pub enum Protocol {
    /// Detect HTTP within the timeout; anything else is opaque.
    Detect {
        /// None: the proxy's own.
        timeout: Option<Duration>,
        /// For HTTP/1 connections.
        http1: Http,
        /// For HTTP/2 connections.
        http2: Http,
        /// For anything else.
        opaque: Opaque,
    },
    /// HTTP/1, no detection.
    Http1(Http),
    /// HTTP/2, no detection.
    Http2(Http),
    /// gRPC routes.
    Grpc(Http),
    /// Opaque, no detection.
    Opaque(Opaque),
    /// TLS routed by SNI: not yet applied by the proxy (forwarded as opaque).
    Tls,
}

/// The HTTP (or gRPC) side of a policy.
#[derive(Debug)]
pub struct Http {
    /// None: every request is answered 404.
    pub routes: Arc<[OutboundRoute]>,
    /// None: endpoints are never ejected.
    pub failure_accrual: Option<FailureAccrual>,
}

/// The opaque side: the backends of its (first) route.
#[derive(Debug)]
pub struct Opaque {
    /// Where connections go.
    pub backends: Distribution,
}

/// What an outbound rule does beyond its matches and filters.
#[derive(Debug)]
pub struct RuleParams {
    /// Where requests go.
    pub backends: Distribution,
    /// Bounds on each request.
    pub timeouts: Timeouts,
    /// None: requests are sent once.
    pub retry: Option<Arc<Retry>>,
    /// Whether `l5d-retry-*` and `l5d-timeout` request headers are honoured.
    pub allow_l5d_request_headers: bool,
}

/// How a rule's requests are spread over its backends.
#[derive(Debug)]
pub enum Distribution {
    /// Every request fails.
    Empty,
    /// The first backend that is available.
    FirstAvailable(Vec<Backend>),
    /// A backend chosen at random by weight (weights > 0; at least one).
    RandomAvailable(Vec<(Backend, u32)>),
}

/// A backend: its labels, where its endpoints come from, its queue, its own filters.
#[derive(Debug)]
pub struct Backend {
    /// `backend_*` labels.
    pub meta: Arc<Meta>,
    /// Its endpoints.
    pub target: BackendTarget,
    /// Requests waiting for an endpoint.
    pub queue: Queue,
    /// Applied after the rule's.
    pub filters: Vec<crate::route::Filter>,
    /// Its place in [`OutboundPolicy::backends`].
    pub index: usize,
}

/// Where a backend's endpoints come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BackendTarget {
    /// One address, as is.
    Forward(SocketAddr),
    /// A `Destination.Get` path (`name:port`), balanced by P2C over peak-EWMA.
    Balance {
        /// `name:port`.
        path: String,
        /// An endpoint's latency before it has any.
        default_rtt: Duration,
        /// The EWMA's decay.
        decay: Duration,
    },
}

/// A backend's queue (the policy controller's defaults when unset: 100, 3s).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Queue {
    /// More are shed (503).
    pub capacity: usize,
    /// Longer without an endpoint fails the request (504).
    pub failfast_timeout: Duration,
}

/// `None`: no limit.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Timeouts {
    /// Request start to response end.
    pub request: Option<Duration>,
    /// Request end to response end.
    pub response: Option<Duration>,
    /// No frame either way.
    pub idle: Option<Duration>,
}

/// A rule's retry policy.
#[derive(Debug, Clone, PartialEq)]
pub struct Retry {
    /// Attempts after the first.
    pub max_retries: u32,
    /// Bodies over this are sent once.
    pub max_request_bytes: u64,
    /// Which responses are retried.
    pub conditions: RetryConditions,
    /// Each attempt's (for its response headers).
    pub timeout: Option<Duration>,
    /// None: no wait between attempts.
    pub backoff: Option<Backoff>,
}

/// Which responses are retried (and connection errors, always).
#[derive(Debug, Clone, PartialEq)]
pub enum RetryConditions {
    /// Inclusive HTTP status ranges.
    Http(Vec<(u16, u16)>),
    /// gRPC status codes.
    Grpc(Vec<u32>),
}

/// An exponential backoff.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Backoff {
    /// The first wait.
    pub min: Duration,
    /// The longest.
    pub max: Duration,
    /// In [0, 1].
    pub jitter: f32,
    /// Wait what a response's `Retry-After` asks.
    pub respect_retry_after: bool,
}

/// When an endpoint is ejected.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FailureAccrual {
    /// Failures in a row.
    pub max_failures: u32,
    /// The ejection's length, growing while probes fail.
    pub backoff: Backoff,
    /// Never eject below this many ready endpoints.
    pub min_ready_endpoints: u32,
}

/// The policy controller's defaults.
const QUEUE: Queue = Queue {
    capacity: 100,
    failfast_timeout: Duration::from_secs(3),
};
const DEFAULT_RTT: Duration = Duration::from_millis(30);
const EWMA_DECAY: Duration = Duration::from_secs(10);
/// linkerd2-proxy's failure-accrual backoff when the policy gives none.
const ACCRUAL_BACKOFF: Backoff = Backoff {
    min: Duration::from_secs(1),
    max: Duration::from_secs(60),
    jitter: 0.5,
    respect_retry_after: false,
};

fn duration(
    d: Option<&prost_types::Duration>,
    what: &str,
) -> Result<Option<Duration>, InvalidPolicy> {
    d.map(|d| Duration::try_from(*d).map_err(|_| invalid(format!("{what}: a negative duration"))))
        .transpose()
}

impl OutboundPolicy {
    /// Validates a policy from the control plane.
    pub fn from_api(p: &api::OutboundPolicy) -> Result<Self, InvalidPolicy> {
        use api::proxy_protocol::Kind;
        let kind = p
            .protocol
            .as_ref()
            .and_then(|p| p.kind.as_ref())
            .ok_or_else(|| invalid("no protocol"))?;
        let protocol = match kind {
            Kind::Detect(d) => Protocol::Detect {
                timeout: duration(d.timeout.as_ref(), "detect timeout")?,
                http1: match &d.http1 {
                    Some(h) => Http::from_http(&h.routes, h.failure_accrual.as_ref())?,
                    None => return Err(invalid("detect without http1")),
                },
                http2: match &d.http2 {
                    Some(h) => Http::from_http(&h.routes, h.failure_accrual.as_ref())?,
                    None => return Err(invalid("detect without http2")),
                },
                opaque: match &d.opaque {
                    Some(o) => Opaque::from_api(o)?,
                    None => return Err(invalid("detect without opaque")),
                },
            },
            Kind::Http1(h) => {
                Protocol::Http1(Http::from_http(&h.routes, h.failure_accrual.as_ref())?)
            }
            Kind::Http2(h) => {
                Protocol::Http2(Http::from_http(&h.routes, h.failure_accrual.as_ref())?)
            }
            Kind::Grpc(g) => {
                Protocol::Grpc(Http::from_grpc(&g.routes, g.failure_accrual.as_ref())?)
            }
            Kind::Opaque(o) => Protocol::Opaque(Opaque::from_api(o)?),
            Kind::Tls(_) => Protocol::Tls,
        };
        let mut policy = Self {
            parent: Meta::from_api(p.metadata.as_ref(), "default"),
            protocol,
            backends: Vec::new(),
        };
        policy.index_backends();
        Ok(policy)
    }

    /// The HTTP routes for a request of this HTTP version (`None`: the policy does not route
    /// HTTP, its connections are opaque or TLS).
    pub fn http(&self, h2: bool) -> Option<&Http> {
        match &self.protocol {
            Protocol::Detect { http1, http2, .. } => Some(if h2 { http2 } else { http1 }),
            Protocol::Http1(h) | Protocol::Http2(h) | Protocol::Grpc(h) => Some(h),
            Protocol::Opaque(_) | Protocol::Tls => None,
        }
    }

    /// Numbers every backend and lists them in [`OutboundPolicy::backends`].
    fn index_backends(&mut self) {
        let mut targets = Vec::new();
        let mut number = |d: &mut Distribution| {
            let backends: Vec<&mut Backend> = match d {
                Distribution::Empty => Vec::new(),
                Distribution::FirstAvailable(bs) => bs.iter_mut().collect(),
                Distribution::RandomAvailable(bs) => bs.iter_mut().map(|(b, _)| b).collect(),
            };
            for b in backends {
                b.index = targets.len();
                targets.push((b.target.clone(), b.queue));
            }
        };
        let http = |h: &mut Http, number: &mut dyn FnMut(&mut Distribution)| {
            // Just built: nothing else holds the routes yet.
            if let Some(routes) = Arc::get_mut(&mut h.routes) {
                for rule in routes.iter_mut().flat_map(|r| r.rules.iter_mut()) {
                    number(&mut rule.params.backends);
                }
            }
        };
        match &mut self.protocol {
            Protocol::Detect {
                http1,
                http2,
                opaque,
                ..
            } => {
                http(http1, &mut number);
                http(http2, &mut number);
                number(&mut opaque.backends);
            }
            Protocol::Http1(h) | Protocol::Http2(h) | Protocol::Grpc(h) => http(h, &mut number),
            Protocol::Opaque(o) => number(&mut o.backends),
            Protocol::Tls => {}
        }
        self.backends = targets;
    }
}

/// HTTP and gRPC routes differ only in their generated types (and their matches, filters and
/// retry conditions): one body for both. `$m` is the API module (`http_route`, `grpc_route`).
macro_rules! routes_from_api {
    ($fn:ident, $route:ty, $m:ident, $filter:expr, $matches:ident, $retry:ident) => {
        fn $fn(
            routes: &[$route],
            accrual: Option<&api::FailureAccrual>,
        ) -> Result<Self, InvalidPolicy> {
            let filter = $filter;
            let routes = routes
                .iter()
                .map(|r| {
                    let rules = r
                        .rules
                        .iter()
                        .map(|rule| {
                            use api::$m::distribution::Kind as D;
                            let route_backend = |b: Option<&api::$m::RouteBackend>| {
                                let b =
                                    b.ok_or_else(|| invalid("a route backend without a backend"))?;
                                let filters =
                                    b.filters.iter().map(filter).collect::<Result<_, _>>()?;
                                backend(b.backend.as_ref(), filters)
                            };
                            let backends =
                                match rule.backends.as_ref().and_then(|b| b.kind.as_ref()) {
                                    None => return Err(invalid("a rule without backends")),
                                    Some(D::Empty(_)) => Distribution::Empty,
                                    Some(D::FirstAvailable(f)) => Distribution::FirstAvailable(
                                        f.backends
                                            .iter()
                                            .map(|b| route_backend(Some(b)))
                                            .collect::<Result<_, _>>()?,
                                    ),
                                    Some(D::RandomAvailable(r)) => weighted(
                                        r.backends
                                            .iter()
                                            .map(|b| {
                                                Ok((route_backend(b.backend.as_ref())?, b.weight))
                                            })
                                            .collect::<Result<_, _>>()?,
                                    )?,
                                };
                            #[allow(deprecated)] // The older field, when `timeouts` is unset.
                            let legacy = rule.request_timeout.as_ref();
                            Ok(Rule {
                                matches: $matches(&rule.matches)?,
                                filters: rule
                                    .filters
                                    .iter()
                                    .map(filter)
                                    .collect::<Result<_, _>>()?,
                                params: RuleParams {
                                    backends,
                                    timeouts: timeouts(rule.timeouts.as_ref(), legacy)?,
                                    retry: rule
                                        .retry
                                        .as_ref()
                                        .map($retry)
                                        .transpose()?
                                        .map(Arc::new),
                                    allow_l5d_request_headers: rule.allow_l5d_request_headers,
                                },
                            })
                        })
                        .collect::<Result<Vec<_>, InvalidPolicy>>()?;
                    if rules.is_empty() {
                        return Err(invalid("a route without rules"));
                    }
                    Route::from_api(r.metadata.as_ref(), &r.hosts, (), rules)
                })
                .collect::<Result<Vec<_>, _>>()?;
            Ok(Self {
                routes: routes.into(),
                failure_accrual: accrual.map(failure_accrual).transpose()?,
            })
        }
    };
}

impl Http {
    routes_from_api!(
        from_http,
        api::HttpRoute,
        http_route,
        |f: &api::http_route::Filter| {
            use api::http_route::filter::Kind as F;
            match f.kind.as_ref() {
                Some(F::FailureInjector(fi)) => fail_http(fi),
                Some(F::RequestHeaderModifier(m)) => headers_filter(m),
                Some(F::ResponseHeaderModifier(m)) => response_headers_filter(m),
                Some(F::Redirect(r)) => redirect(r),
                None => Err(invalid("a filter without a kind")),
            }
        },
        http_matches,
        http_retry
    );

    routes_from_api!(
        from_grpc,
        api::GrpcRoute,
        grpc_route,
        |f: &api::grpc_route::Filter| {
            use api::grpc_route::filter::Kind as F;
            match f.kind.as_ref() {
                Some(F::FailureInjector(fi)) => fail_grpc(fi),
                Some(F::RequestHeaderModifier(m)) => headers_filter(m),
                None => Err(invalid("a filter without a kind")),
            }
        },
        grpc_matches,
        grpc_retry
    );
}

impl Opaque {
    fn from_api(o: &api::proxy_protocol::Opaque) -> Result<Self, InvalidPolicy> {
        use api::opaque_route::distribution::Kind as D;
        let Some(rule) = o.routes.first().and_then(|r| r.rules.first()) else {
            return Ok(Self {
                backends: Distribution::Empty,
            });
        };
        let backend = |b: Option<&api::Backend>| backend(b, Vec::new());
        let backends = match rule.backends.as_ref().and_then(|d| d.kind.as_ref()) {
            None | Some(D::Empty(_)) => Distribution::Empty,
            Some(D::FirstAvailable(f)) => Distribution::FirstAvailable(
                f.backends
                    .iter()
                    .map(|b| backend(b.backend.as_ref()))
                    .collect::<Result<_, _>>()?,
            ),
            Some(D::RandomAvailable(r)) => weighted(
                r.backends
                    .iter()
                    .map(|b| {
                        Ok((
                            backend(b.backend.as_ref().and_then(|b| b.backend.as_ref()))?,
                            b.weight,
                        ))
                    })
                    .collect::<Result<_, _>>()?,
            )?,
        };
        Ok(Self { backends })
    }
}

/// A weighted split: zero-weight backends take nothing; at least one must take something.
fn weighted(backends: Vec<(Backend, u32)>) -> Result<Distribution, InvalidPolicy> {
    let backends: Vec<_> = backends.into_iter().filter(|(_, w)| *w > 0).collect();
    if backends.is_empty() {
        return Err(invalid("a weighted split without a weight"));
    }
    Ok(Distribution::RandomAvailable(backends))
}

fn backend(
    b: Option<&api::Backend>,
    filters: Vec<crate::route::Filter>,
) -> Result<Backend, InvalidPolicy> {
    use api::backend::{balance_p2c::Load, endpoint_discovery::Kind as Disc, Kind};
    let b = b.ok_or_else(|| invalid("a backend without a kind"))?;
    let target = match b.kind.as_ref() {
        Some(Kind::Forward(addr)) => BackendTarget::Forward(forward_addr(addr)?),
        Some(Kind::Balancer(p2c)) => {
            let path = match p2c.discovery.as_ref().and_then(|d| d.kind.as_ref()) {
                Some(Disc::Dst(dst)) if !dst.path.is_empty() => dst.path.clone(),
                _ => return Err(invalid("a balancer without a discovery path")),
            };
            let (rtt, decay) = match p2c.load.as_ref() {
                Some(Load::PeakEwma(e)) => (e.default_rtt.as_ref(), e.decay.as_ref()),
                Some(Load::PenaltyPeakEwma(e)) => (e.default_rtt.as_ref(), e.decay.as_ref()),
                None => (None, None),
            };
            BackendTarget::Balance {
                path,
                default_rtt: duration(rtt, "default_rtt")?.unwrap_or(DEFAULT_RTT),
                decay: duration(decay, "decay")?.unwrap_or(EWMA_DECAY),
            }
        }
        None => return Err(invalid("a backend without a kind")),
    };
    let queue = match &b.queue {
        None => QUEUE,
        Some(q) => Queue {
            capacity: usize::try_from(q.capacity).unwrap_or(usize::MAX).max(1),
            failfast_timeout: duration(q.failfast_timeout.as_ref(), "failfast_timeout")?
                .unwrap_or(QUEUE.failfast_timeout),
        },
    };
    Ok(Backend {
        meta: Meta::from_api(b.metadata.as_ref(), "default"),
        target,
        queue,
        filters,
        index: 0,
    })
}

fn forward_addr(a: &destination::WeightedAddr) -> Result<SocketAddr, InvalidPolicy> {
    a.addr
        .as_ref()
        .and_then(|a| a.to_socket_addr())
        .ok_or_else(|| invalid("a forward backend without an address"))
}

fn timeouts(
    t: Option<&linkerd_proxy_api::http_route::Timeouts>,
    legacy_request: Option<&prost_types::Duration>,
) -> Result<Timeouts, InvalidPolicy> {
    let Some(t) = t else {
        return Ok(Timeouts {
            request: duration(legacy_request, "request timeout")?,
            ..Timeouts::default()
        });
    };
    Ok(Timeouts {
        request: duration(t.request.as_ref(), "request timeout")?,
        response: duration(t.response.as_ref(), "response timeout")?,
        idle: duration(t.idle.as_ref(), "idle timeout")?,
    })
}

fn backoff(b: Option<&api::ExponentialBackoff>) -> Result<Option<Backoff>, InvalidPolicy> {
    let Some(b) = b else { return Ok(None) };
    let min = duration(b.min_backoff.as_ref(), "min_backoff")?.unwrap_or_default();
    let max = duration(b.max_backoff.as_ref(), "max_backoff")?.unwrap_or(min);
    if min > max {
        return Err(invalid("a backoff whose min is over its max"));
    }
    if !(0.0..=1.0).contains(&b.jitter_ratio) {
        return Err(invalid(format!("jitter ratio {}", b.jitter_ratio)));
    }
    Ok(Some(Backoff {
        min,
        max,
        jitter: b.jitter_ratio,
        respect_retry_after: b.respect_retry_after_hint,
    }))
}

fn http_retry(r: &api::http_route::Retry) -> Result<Retry, InvalidPolicy> {
    let ranges = r
        .conditions
        .as_ref()
        .map_or(&[][..], |c| c.status_ranges.as_slice())
        .iter()
        .map(|s| {
            let code = |c: u32| u16::try_from(c).ok().filter(|c| (100..=599).contains(c));
            match (code(s.start), code(s.end)) {
                (Some(a), Some(b)) if a <= b => Ok((a, b)),
                _ => Err(invalid(format!("status range {}-{}", s.start, s.end))),
            }
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Retry {
        max_retries: r.max_retries,
        max_request_bytes: u64::from(r.max_request_bytes),
        // No condition: upstream retries 5xx.
        conditions: RetryConditions::Http(if ranges.is_empty() {
            vec![(500, 599)]
        } else {
            ranges
        }),
        timeout: duration(r.timeout.as_ref(), "retry timeout")?,
        backoff: backoff(r.backoff.as_ref())?,
    })
}

fn grpc_retry(r: &api::grpc_route::Retry) -> Result<Retry, InvalidPolicy> {
    let c = r.conditions.unwrap_or_default();
    let codes = [
        (c.cancelled, 1),
        (c.deadine_exceeded, 4),
        (c.resource_exhausted, 8),
        (c.internal, 13),
        (c.unavailable, 14),
    ]
    .into_iter()
    .filter_map(|(on, code)| on.then_some(code))
    .collect();
    Ok(Retry {
        max_retries: r.max_retries,
        max_request_bytes: u64::from(r.max_request_bytes),
        conditions: RetryConditions::Grpc(codes),
        timeout: duration(r.timeout.as_ref(), "retry timeout")?,
        backoff: backoff(r.backoff.as_ref())?,
    })
}

fn failure_accrual(fa: &api::FailureAccrual) -> Result<FailureAccrual, InvalidPolicy> {
    use api::failure_accrual::Kind;
    let min_ready = fa.ejection.map_or(0, |e| e.min_ready_endpoints);
    let (max_failures, b) = match fa.kind.as_ref() {
        Some(Kind::ConsecutiveFailures(c)) => (c.max_failures, c.backoff.as_ref()),
        Some(Kind::Unified(u)) => (u.max_consecutive_failures, u.backoff.as_ref()),
        None => return Err(invalid("failure accrual without a kind")),
    };
    if max_failures == 0 {
        return Err(invalid("failure accrual after 0 failures"));
    }
    Ok(FailureAccrual {
        max_failures,
        backoff: backoff(b)?.unwrap_or(ACCRUAL_BACKOFF),
        min_ready_endpoints: min_ready,
    })
}

#[cfg(test)]
mod tests;
