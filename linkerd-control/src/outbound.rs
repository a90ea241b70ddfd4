//! `io.linkerd.proxy.outbound.OutboundPolicies/Watch` from the mesh file's services: a
//! service's policy as Linkerd's policy controller renders it (its `HTTPRoute`s with their
//! matches, filters, weighted backends, timeouts and retries; failure accrual; or one default
//! route to the service), and a new one each time the file changes it. A target that is no
//! service of the file (by `name:port`, or by `cluster_ip:port`) answers NotFound: the proxy
//! then forwards to the original destination.

use crate::{
    config::{
        status_range, BackendConfig, BackoffConfig, FilterConfig, HeaderModifierConfig,
        HttpMatchConfig, HttpRouteConfig, OutboundProtocol, ServiceConfig,
    },
    destination::{parse_target, Target},
    Mesh,
};
use linkerd_proxy_api::{
    destination, http_route as h, http_types, meta, net,
    outbound::{
        self as api,
        outbound_policies_server::{OutboundPolicies, OutboundPoliciesServer},
    },
};
use std::{pin::Pin, time::Duration};
use tokio_stream::Stream;
use tonic::{Request, Response, Status};

type Policies = Pin<Box<dyn Stream<Item = Result<api::OutboundPolicy, Status>> + Send>>;

/// The policy controller's defaults: a backend's queue, its balancer's EWMA, the detect
/// timeout.
const QUEUE_CAPACITY: u32 = 100;
const FAILFAST: Duration = Duration::from_secs(3);
const DEFAULT_RTT: Duration = Duration::from_millis(30);
const EWMA_DECAY: Duration = Duration::from_secs(10);
const DETECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Answers `Get` and `Watch` from the mesh file.
#[derive(Clone)]
pub struct OutboundPolicyService {
    mesh: Mesh,
}

impl OutboundPolicyService {
    pub fn new(mesh: Mesh) -> Self {
        Self { mesh }
    }

    pub fn into_server(self) -> OutboundPoliciesServer<Self> {
        OutboundPoliciesServer::new(self)
    }
}

/// What a `TrafficSpec` asks for.
fn target(spec: &api::TrafficSpec) -> Result<Target, Status> {
    use api::traffic_spec::Target as T;
    match &spec.target {
        Some(T::Addr(a)) => a
            .to_socket_addr()
            .map(Target::Addr)
            .ok_or_else(|| Status::invalid_argument("a target address without IP or port")),
        Some(T::Authority(a)) => parse_target(a),
        None => Err(Status::invalid_argument("no target")),
    }
}

fn not_found(target: &Target) -> Status {
    Status::not_found(format!("no service for {target:?}"))
}

fn duration(d: Duration) -> Option<prost_types::Duration> {
    prost_types::Duration::try_from(d).ok()
}

/// `web.ns.svc.cluster.local` is `web` in namespace `ns`; another name is itself.
fn name_and_namespace(name: &str) -> (String, String) {
    let name = name.trim_end_matches('.');
    match name.split_once('.') {
        Some((svc, rest)) if rest.contains(".svc.") => (
            svc.to_string(),
            rest.split('.').next().unwrap_or_default().to_string(),
        ),
        _ => (name.to_string(), String::new()),
    }
}

fn service_meta(name: &str, port: u16) -> Option<meta::Metadata> {
    let (name, namespace) = name_and_namespace(name);
    Some(meta::Metadata {
        kind: Some(meta::metadata::Kind::Resource(meta::Resource {
            group: "core".into(),
            kind: "Service".into(),
            name,
            namespace,
            section: String::new(),
            port: u32::from(port),
        })),
    })
}

fn route_meta(route: &str, service: &str) -> Option<meta::Metadata> {
    let (_, namespace) = name_and_namespace(service);
    Some(meta::Metadata {
        kind: Some(meta::metadata::Kind::Resource(meta::Resource {
            group: "gateway.networking.k8s.io".into(),
            kind: "HTTPRoute".into(),
            name: route.into(),
            namespace,
            ..Default::default()
        })),
    })
}

fn default_meta(name: &str) -> Option<meta::Metadata> {
    Some(meta::Metadata {
        kind: Some(meta::metadata::Kind::Default(name.into())),
    })
}

fn backoff(b: &BackoffConfig) -> api::ExponentialBackoff {
    api::ExponentialBackoff {
        min_backoff: b.min.and_then(duration),
        max_backoff: b.max.and_then(duration),
        jitter_ratio: b.jitter,
        respect_retry_after_hint: false,
    }
}

/// The policy of service `s`, whose backends are looked up in `mesh`.
pub fn policy(s: &ServiceConfig) -> api::OutboundPolicy {
    use api::proxy_protocol::{self as pp, Kind};
    let queue = api::Queue {
        capacity: s
            .policy
            .queue
            .as_ref()
            .map_or(QUEUE_CAPACITY, |q| q.capacity),
        failfast_timeout: duration(
            s.policy
                .queue
                .as_ref()
                .and_then(|q| q.failfast_timeout)
                .unwrap_or(FAILFAST),
        ),
    };
    let own = format!("{}:{}", s.name.trim_end_matches('.'), s.port);
    let backend = |b: &BackendConfig| -> api::Backend {
        match (&b.service, b.addr) {
            (_, Some(addr)) => api::Backend {
                metadata: default_meta("forward"),
                kind: Some(api::backend::Kind::Forward(destination::WeightedAddr {
                    addr: Some(net::TcpAddress::from(addr)),
                    weight: b.weight,
                    ..Default::default()
                })),
                queue: Some(queue),
            },
            (service, None) => {
                let path = service.clone().unwrap_or_else(|| own.clone());
                let (host, port) = path
                    .rsplit_once(':')
                    .and_then(|(h, p)| Some((h, p.parse().ok()?)))
                    .unwrap_or((path.as_str(), 0));
                api::Backend {
                    metadata: service_meta(host, port),
                    kind: Some(api::backend::Kind::Balancer(api::backend::BalanceP2c {
                        discovery: Some(api::backend::EndpointDiscovery {
                            kind: Some(api::backend::endpoint_discovery::Kind::Dst(
                                api::backend::endpoint_discovery::DestinationGet {
                                    path: path.clone(),
                                },
                            )),
                        }),
                        load: Some(api::backend::balance_p2c::Load::PeakEwma(
                            api::backend::balance_p2c::PeakEwma {
                                default_rtt: duration(DEFAULT_RTT),
                                decay: duration(EWMA_DECAY),
                            },
                        )),
                    })),
                    queue: Some(queue),
                }
            }
        }
    };
    let itself = BackendConfig {
        service: None,
        addr: None,
        weight: 1,
    };
    let routes: Vec<api::HttpRoute> = if s.policy.routes.is_empty() {
        vec![api::HttpRoute {
            metadata: default_meta("http"),
            hosts: vec![],
            rules: vec![api::http_route::Rule {
                matches: vec![h::HttpRouteMatch {
                    path: Some(h::PathMatch {
                        kind: Some(h::path_match::Kind::Prefix("/".into())),
                    }),
                    ..Default::default()
                }],
                backends: Some(api::http_route::Distribution {
                    kind: Some(api::http_route::distribution::Kind::FirstAvailable(
                        api::http_route::distribution::FirstAvailable {
                            backends: vec![api::http_route::RouteBackend {
                                backend: Some(backend(&itself)),
                                ..Default::default()
                            }],
                        },
                    )),
                }),
                ..Default::default()
            }],
        }]
    } else {
        s.policy
            .routes
            .iter()
            .map(|r| http_route(r, &s.name, &backend, &itself))
            .collect()
    };
    let accrual = s
        .policy
        .failure_accrual
        .as_ref()
        .map(|fa| api::FailureAccrual {
            kind: Some(api::failure_accrual::Kind::ConsecutiveFailures(
                api::failure_accrual::ConsecutiveFailures {
                    max_failures: fa.consecutive_failures,
                    backoff: fa.backoff.as_ref().map(backoff),
                },
            )),
            ejection: Some(api::EjectionConfig {
                min_ready_endpoints: fa.min_ready_endpoints,
            }),
        });
    let http1 = pp::Http1 {
        routes: routes.clone(),
        failure_accrual: accrual,
    };
    let http2 = pp::Http2 {
        routes,
        failure_accrual: accrual,
    };
    let opaque = pp::Opaque {
        routes: vec![api::OpaqueRoute {
            metadata: default_meta("opaq"),
            rules: vec![api::opaque_route::Rule {
                backends: Some(api::opaque_route::Distribution {
                    kind: Some(api::opaque_route::distribution::Kind::FirstAvailable(
                        api::opaque_route::distribution::FirstAvailable {
                            backends: vec![api::opaque_route::RouteBackend {
                                backend: Some(backend(&itself)),
                                filters: vec![],
                            }],
                        },
                    )),
                }),
                filters: vec![],
            }],
        }],
    };
    let kind = match s.policy.protocol {
        OutboundProtocol::Detect => Kind::Detect(pp::Detect {
            timeout: duration(DETECT_TIMEOUT),
            opaque: Some(opaque),
            http1: Some(http1),
            http2: Some(http2),
        }),
        OutboundProtocol::Http1 => Kind::Http1(http1),
        OutboundProtocol::Http2 => Kind::Http2(http2),
        OutboundProtocol::Opaque => Kind::Opaque(opaque),
    };
    api::OutboundPolicy {
        protocol: Some(api::ProxyProtocol { kind: Some(kind) }),
        metadata: service_meta(&s.name, s.port),
    }
}

fn http_route(
    r: &HttpRouteConfig,
    service: &str,
    backend: &dyn Fn(&BackendConfig) -> api::Backend,
    itself: &BackendConfig,
) -> api::HttpRoute {
    use api::http_route::{distribution, Distribution, Filter, RouteBackend, WeightedRouteBackend};
    let hosts = r
        .hosts
        .iter()
        .map(|host| h::HostMatch {
            r#match: Some(match host.strip_prefix("*.") {
                Some(suffix) => h::host_match::Match::Suffix(h::host_match::Suffix {
                    reverse_labels: suffix.rsplit('.').map(str::to_string).collect(),
                }),
                None => h::host_match::Match::Exact(host.clone()),
            }),
        })
        .collect();
    let prefix = r.matches.iter().find_map(|m| m.path_prefix.clone());
    let filters = r
        .filters
        .iter()
        .map(|f| Filter {
            kind: Some(filter(f, prefix.as_deref())),
        })
        .collect();
    let backends = if r.backends.is_empty() {
        std::slice::from_ref(itself)
    } else {
        &r.backends
    };
    let backends = Distribution {
        kind: Some(distribution::Kind::RandomAvailable(
            distribution::RandomAvailable {
                backends: backends
                    .iter()
                    .map(|b| WeightedRouteBackend {
                        backend: Some(RouteBackend {
                            backend: Some(backend(b)),
                            ..Default::default()
                        }),
                        weight: b.weight,
                    })
                    .collect(),
            },
        )),
    };
    let retry = r.retry.as_ref().map(|retry| {
        let statuses: Vec<_> = if retry.statuses.is_empty() {
            vec![(500, 599)]
        } else {
            retry
                .statuses
                .iter()
                .filter_map(|s| status_range(s))
                .collect()
        };
        api::http_route::Retry {
            max_retries: retry.max_retries,
            max_request_bytes: retry.max_request_bytes,
            conditions: Some(api::http_route::retry::Conditions {
                status_ranges: statuses
                    .into_iter()
                    .map(
                        |(start, end)| api::http_route::retry::conditions::StatusRange {
                            start: u32::from(start),
                            end: u32::from(end),
                        },
                    )
                    .collect(),
            }),
            timeout: retry.timeout.and_then(duration),
            backoff: retry.backoff.as_ref().map(backoff),
        }
    });
    let t = &r.timeouts;
    let timeouts =
        (t.request.is_some() || t.response.is_some() || t.idle.is_some()).then(|| h::Timeouts {
            request: t.request.and_then(duration),
            response: t.response.and_then(duration),
            idle: t.idle.and_then(duration),
        });
    #[allow(deprecated)] // The deprecated `requestTimeout`, unset: `timeouts` supersedes it.
    let rule = api::http_route::Rule {
        matches: r.matches.iter().map(route_match).collect(),
        filters,
        backends: Some(backends),
        request_timeout: None,
        timeouts,
        retry,
        allow_l5d_request_headers: r.allow_l5d_request_headers,
    };
    api::HttpRoute {
        metadata: route_meta(&r.name, service),
        hosts,
        rules: vec![rule],
    }
}

fn route_match(m: &HttpMatchConfig) -> h::HttpRouteMatch {
    use h::path_match::Kind as P;
    let path = match (&m.path_exact, &m.path_prefix, &m.path_regex) {
        (Some(p), _, _) => Some(P::Exact(p.clone())),
        (_, Some(p), _) => Some(P::Prefix(p.clone())),
        (_, _, Some(p)) => Some(P::Regex(p.clone())),
        _ => None,
    };
    let exact = m.headers.iter().map(|(name, v)| h::HeaderMatch {
        name: name.clone(),
        value: Some(h::header_match::Value::Exact(v.as_bytes().to_vec())),
    });
    let regex = m.header_regexes.iter().map(|(name, re)| h::HeaderMatch {
        name: name.clone(),
        value: Some(h::header_match::Value::Regex(re.clone())),
    });
    h::HttpRouteMatch {
        path: path.map(|k| h::PathMatch { kind: Some(k) }),
        headers: exact.chain(regex).collect(),
        query_params: m
            .query
            .iter()
            .map(|(name, v)| h::QueryParamMatch {
                name: name.clone(),
                value: Some(h::query_param_match::Value::Exact(v.clone())),
            })
            .collect(),
        method: m.method.as_deref().map(method),
    }
}

/// An HTTP method as the API spells it.
pub(crate) fn method(m: &str) -> http_types::HttpMethod {
    use http_types::http_method::{Registered as R, Type};
    let registered = match m {
        "GET" => Some(R::Get),
        "POST" => Some(R::Post),
        "PUT" => Some(R::Put),
        "DELETE" => Some(R::Delete),
        "PATCH" => Some(R::Patch),
        "OPTIONS" => Some(R::Options),
        "CONNECT" => Some(R::Connect),
        "HEAD" => Some(R::Head),
        "TRACE" => Some(R::Trace),
        _ => None,
    };
    http_types::HttpMethod {
        r#type: Some(match registered {
            Some(r) => Type::Registered(r.into()),
            None => Type::Unregistered(m.to_string()),
        }),
    }
}

fn headers(map: &std::collections::BTreeMap<String, String>) -> Option<http_types::Headers> {
    (!map.is_empty()).then(|| http_types::Headers {
        headers: map
            .iter()
            .map(|(name, value)| http_types::headers::Header {
                name: name.clone(),
                value: value.as_bytes().to_vec(),
            })
            .collect(),
    })
}

fn filter(f: &FilterConfig, matched_prefix: Option<&str>) -> api::http_route::filter::Kind {
    use api::http_route::filter::Kind;
    let modifier = |m: &HeaderModifierConfig| (headers(&m.add), headers(&m.set), m.remove.clone());
    match f {
        FilterConfig::RequestHeaderModifier(m) => {
            let (add, set, remove) = modifier(m);
            Kind::RequestHeaderModifier(h::RequestHeaderModifier { add, set, remove })
        }
        FilterConfig::ResponseHeaderModifier(m) => {
            let (add, set, remove) = modifier(m);
            Kind::ResponseHeaderModifier(h::ResponseHeaderModifier { add, set, remove })
        }
        FilterConfig::FailureInjector {
            status,
            message,
            ratio,
        } => Kind::FailureInjector(h::HttpFailureInjector {
            status: u32::from(*status),
            message: message.clone(),
            // As a fraction of 10,000 (the policy controller's resolution).
            ratio: ratio.map(|r| h::Ratio {
                numerator: (r * 10_000.0).round() as u32,
                denominator: 10_000,
            }),
        }),
        FilterConfig::Redirect {
            scheme,
            host,
            port,
            path,
            path_prefix,
            status,
        } => {
            let replace = match (path, path_prefix) {
                (Some(p), _) => Some(h::path_modifier::Replace::Full(p.clone())),
                (_, Some(p)) if matched_prefix.is_some() => {
                    Some(h::path_modifier::Replace::Prefix(p.clone()))
                }
                (_, Some(p)) => Some(h::path_modifier::Replace::Full(p.clone())),
                _ => None,
            };
            Kind::Redirect(h::RequestRedirect {
                scheme: scheme.as_deref().map(|s| {
                    use http_types::scheme::{Registered as R, Type};
                    http_types::Scheme {
                        r#type: Some(match s {
                            "http" => Type::Registered(R::Http.into()),
                            "https" => Type::Registered(R::Https.into()),
                            other => Type::Unregistered(other.to_string()),
                        }),
                    }
                }),
                host: host.clone().unwrap_or_default(),
                path: replace.map(|r| h::PathModifier { replace: Some(r) }),
                port: port.map(u32::from).unwrap_or(0),
                status: u32::from(status.unwrap_or(302)),
            })
        }
    }
}

#[tonic::async_trait]
impl OutboundPolicies for OutboundPolicyService {
    async fn get(
        &self,
        req: Request<api::TrafficSpec>,
    ) -> Result<Response<api::OutboundPolicy>, Status> {
        let target = target(req.get_ref())?;
        match target.service(&self.mesh.current()) {
            Some(s) => Ok(Response::new(policy(s))),
            None => Err(not_found(&target)),
        }
    }

    type WatchStream = Policies;

    async fn watch(&self, req: Request<api::TrafficSpec>) -> Result<Response<Policies>, Status> {
        let target = target(req.get_ref())?;
        let (t, gone) = (target.clone(), target.clone());
        match self.mesh.follow(
            move |mesh| t.service(mesh).map(policy),
            move || not_found(&gone),
        ) {
            Some(stream) => Ok(Response::new(Box::pin(stream))),
            None => Err(not_found(&target)),
        }
    }
}
