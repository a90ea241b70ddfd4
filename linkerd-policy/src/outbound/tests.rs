use super::*;
use crate::route::select;
use linkerd_proxy_api::{http_route as h, meta, outbound::http_route as hr};

fn d(ms: u64) -> Option<prost_types::Duration> {
    prost_types::Duration::try_from(Duration::from_millis(ms)).ok()
}

fn balanced(path: &str) -> api::Backend {
    api::Backend {
        metadata: Some(meta::Metadata {
            kind: Some(meta::metadata::Kind::Resource(meta::Resource {
                group: "core".into(),
                kind: "Service".into(),
                name: path.into(),
                ..Default::default()
            })),
        }),
        kind: Some(api::backend::Kind::Balancer(api::backend::BalanceP2c {
            discovery: Some(api::backend::EndpointDiscovery {
                kind: Some(api::backend::endpoint_discovery::Kind::Dst(
                    api::backend::endpoint_discovery::DestinationGet { path: path.into() },
                )),
            }),
            load: None,
        })),
        queue: None,
    }
}

fn split(backends: &[(&str, u32)]) -> hr::Distribution {
    hr::Distribution {
        kind: Some(hr::distribution::Kind::RandomAvailable(
            hr::distribution::RandomAvailable {
                backends: backends
                    .iter()
                    .map(|(path, weight)| hr::WeightedRouteBackend {
                        backend: Some(hr::RouteBackend {
                            backend: Some(balanced(path)),
                            ..Default::default()
                        }),
                        weight: *weight,
                    })
                    .collect(),
            },
        )),
    }
}

fn path(kind: h::path_match::Kind) -> h::HttpRouteMatch {
    h::HttpRouteMatch {
        path: Some(h::PathMatch { kind: Some(kind) }),
        ..Default::default()
    }
}

/// A route named `name` with one rule of `matches`, to `web:80`.
fn route(name: &str, hosts: Vec<h::HostMatch>, matches: Vec<h::HttpRouteMatch>) -> api::HttpRoute {
    api::HttpRoute {
        metadata: Some(meta::Metadata {
            kind: Some(meta::metadata::Kind::Default(name.into())),
        }),
        hosts,
        rules: vec![hr::Rule {
            matches,
            backends: Some(split(&[("web:80", 1)])),
            ..Default::default()
        }],
    }
}

fn http1(routes: Vec<api::HttpRoute>) -> api::OutboundPolicy {
    api::OutboundPolicy {
        protocol: Some(api::ProxyProtocol {
            kind: Some(api::proxy_protocol::Kind::Http1(
                api::proxy_protocol::Http1 {
                    routes,
                    failure_accrual: None,
                },
            )),
        }),
        metadata: None,
    }
}

fn routes_of(p: &OutboundPolicy) -> &[OutboundRoute] {
    match &p.protocol {
        Protocol::Http1(h) => &h.routes,
        other => panic!("http1: {other:?}"),
    }
}

/// The name of the route `req` selects.
fn pick(p: &OutboundPolicy, host: &str, uri: &str, headers: &[(&str, &str)]) -> Option<String> {
    let mut req = http::Request::get(uri);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let req = req.body(()).unwrap();
    select(routes_of(p), Some(host), &req).map(|(r, _)| r.meta.name.to_string())
}

#[test]
fn routes_are_ranked_as_the_gateway_api_orders_them() {
    use h::path_match::Kind as P;
    let exact_host = h::HostMatch {
        r#match: Some(h::host_match::Match::Exact("web.example.com".into())),
    };
    let suffix_host = h::HostMatch {
        r#match: Some(h::host_match::Match::Suffix(h::host_match::Suffix {
            reverse_labels: vec!["com".into(), "example".into()],
        })),
    };
    let with_header = h::HttpRouteMatch {
        path: Some(h::PathMatch {
            kind: Some(P::Prefix("/api".into())),
        }),
        headers: vec![h::HeaderMatch {
            name: "x-canary".into(),
            value: Some(h::header_match::Value::Exact(b"yes".to_vec())),
        }],
        ..Default::default()
    };
    let p = OutboundPolicy::from_api(&http1(vec![
        route("any", vec![], vec![path(P::Prefix("/".into()))]),
        route("api", vec![], vec![path(P::Prefix("/api".into()))]),
        route("api-v1", vec![], vec![path(P::Prefix("/api/v1".into()))]),
        route("exact", vec![], vec![path(P::Exact("/api/v1/x".into()))]),
        route("regex", vec![], vec![path(P::Regex("/r[0-9]+".into()))]),
        route("canary", vec![], vec![with_header]),
        route("suffix", vec![suffix_host], vec![]),
        route("host", vec![exact_host], vec![]),
    ]))
    .unwrap();
    let at = |uri, headers: &[(&str, &str)]| pick(&p, "other.test", uri, headers);
    assert_eq!(at("/", &[]).as_deref(), Some("any"));
    assert_eq!(
        at("/api/x", &[]).as_deref(),
        Some("api"),
        "the longer prefix"
    );
    assert_eq!(
        at("/apix", &[]).as_deref(),
        Some("any"),
        "prefixes match whole segments"
    );
    assert_eq!(at("/api/v1/y", &[]).as_deref(), Some("api-v1"));
    assert_eq!(
        at("/api/v1/x", &[]).as_deref(),
        Some("exact"),
        "exact beats prefixes"
    );
    assert_eq!(
        at("/r12", &[]).as_deref(),
        Some("any"),
        "a regex ranks below a prefix"
    );
    assert_eq!(
        at("/api/x", &[("x-canary", "yes")]).as_deref(),
        Some("canary"),
        "the same prefix with a header match"
    );
    // Host matches rank first: exact, then suffixes, then routes without hosts.
    assert_eq!(
        pick(&p, "web.example.com", "/api/v1/x", &[]).as_deref(),
        Some("host")
    );
    assert_eq!(
        pick(&p, "a.example.com", "/api/v1/x", &[]).as_deref(),
        Some("suffix")
    );
}

#[test]
fn a_rule_carries_its_split_timeouts_and_retry() {
    #[allow(deprecated)] // The legacy request timeout is read when `timeouts` is unset.
    let legacy = hr::Rule {
        backends: Some(split(&[("a:80", 1)])),
        request_timeout: d(700),
        ..Default::default()
    };
    let full = hr::Rule {
        backends: Some(split(&[("a:80", 90), ("b:80", 10), ("c:80", 0)])),
        timeouts: Some(h::Timeouts {
            request: d(2000),
            response: d(1000),
            idle: None,
        }),
        retry: Some(hr::Retry {
            max_retries: 3,
            max_request_bytes: 1024,
            conditions: None,
            timeout: d(100),
            backoff: Some(api::ExponentialBackoff {
                min_backoff: d(25),
                max_backoff: d(250),
                jitter_ratio: 0.5,
                respect_retry_after_hint: false,
            }),
        }),
        ..Default::default()
    };
    let mut r = route("r", vec![], vec![]);
    r.rules = vec![full, legacy];
    let p = OutboundPolicy::from_api(&http1(vec![r])).unwrap();
    let rules = &routes_of(&p)[0].rules;
    let Distribution::RandomAvailable(backends) = &rules[0].params.backends else {
        panic!("a weighted split");
    };
    let weights: Vec<_> = backends
        .iter()
        .map(|(b, w)| match &b.target {
            BackendTarget::Balance {
                path, default_rtt, ..
            } => {
                assert_eq!(*default_rtt, DEFAULT_RTT);
                (path.as_str(), *w)
            }
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(
        weights,
        [("a:80", 90), ("b:80", 10)],
        "zero weights take nothing"
    );
    assert_eq!(backends[0].0.queue, QUEUE, "the controller's default queue");
    assert_eq!(
        rules[0].params.timeouts.request,
        Some(Duration::from_secs(2))
    );
    assert_eq!(
        rules[0].params.timeouts.response,
        Some(Duration::from_secs(1))
    );
    let retry = rules[0].params.retry.as_ref().unwrap();
    assert_eq!(
        retry.conditions,
        RetryConditions::Http(vec![(500, 599)]),
        "5xx by default"
    );
    assert_eq!(retry.backoff.unwrap().max, Duration::from_millis(250));
    assert_eq!(
        rules[1].params.timeouts.request,
        Some(Duration::from_millis(700))
    );
    // Every backend is numbered in the policy's list, in order.
    let Distribution::RandomAvailable(last) = &rules[1].params.backends else {
        panic!("a weighted split");
    };
    let indices: Vec<_> = backends
        .iter()
        .chain(last)
        .map(|(b, _)| (b.index, p.backends[b.index].0.clone()))
        .collect();
    let balance = |path: &str| BackendTarget::Balance {
        path: path.into(),
        default_rtt: DEFAULT_RTT,
        decay: EWMA_DECAY,
    };
    assert_eq!(
        indices,
        [
            (0, balance("a:80")),
            (1, balance("b:80")),
            (2, balance("a:80"))
        ]
    );
    assert_eq!(p.backends.len(), 3);
}

#[test]
fn a_policy_the_proxy_cannot_apply_is_refused() {
    let bad_rule = |f: &dyn Fn(&mut hr::Rule)| {
        let mut r = route("r", vec![], vec![]);
        f(&mut r.rules[0]);
        OutboundPolicy::from_api(&http1(vec![r]))
    };
    assert!(
        OutboundPolicy::from_api(&api::OutboundPolicy::default()).is_err(),
        "no protocol"
    );
    for (what, result) in [
        ("no backends", bad_rule(&|r| r.backends = None)),
        (
            "only zero weights",
            bad_rule(&|r| r.backends = Some(split(&[("a:80", 0)]))),
        ),
        (
            "a bad regex",
            bad_rule(&|r| r.matches = vec![path(h::path_match::Kind::Regex("([".into()))]),
        ),
        (
            "a negative timeout",
            bad_rule(&|r| {
                r.timeouts = Some(h::Timeouts {
                    request: Some(prost_types::Duration {
                        seconds: -1,
                        nanos: 0,
                    }),
                    ..Default::default()
                })
            }),
        ),
        (
            "a bad status range",
            bad_rule(&|r| {
                r.retry = Some(hr::Retry {
                    conditions: Some(hr::retry::Conditions {
                        status_ranges: vec![hr::retry::conditions::StatusRange {
                            start: 504,
                            end: 500,
                        }],
                    }),
                    ..Default::default()
                })
            }),
        ),
        (
            "a backoff whose min is over its max",
            bad_rule(&|r| {
                r.retry = Some(hr::Retry {
                    backoff: Some(api::ExponentialBackoff {
                        min_backoff: d(500),
                        max_backoff: d(100),
                        ..Default::default()
                    }),
                    ..Default::default()
                })
            }),
        ),
        (
            "a balancer without a path",
            bad_rule(&|r| r.backends = Some(split(&[("", 1)]))),
        ),
    ] {
        assert!(result.is_err(), "{what}");
    }
    let mut accrual = http1(vec![route("r", vec![], vec![])]);
    if let Some(api::proxy_protocol::Kind::Http1(h)) =
        accrual.protocol.as_mut().and_then(|p| p.kind.as_mut())
    {
        h.failure_accrual = Some(api::FailureAccrual {
            kind: Some(api::failure_accrual::Kind::ConsecutiveFailures(
                api::failure_accrual::ConsecutiveFailures {
                    max_failures: 0,
                    backoff: None,
                },
            )),
            ejection: None,
        });
    }
    assert!(
        OutboundPolicy::from_api(&accrual).is_err(),
        "accrual after 0 failures"
    );
}
