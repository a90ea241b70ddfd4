//! `OutboundPolicies.Watch` from the mesh file, read with Linkerd's own generated client
//! (`linkerd2-proxy-api`): routes with their matches, filters, weighted backends, timeouts and
//! retries, by authority and by cluster IP; changes streamed; a bad file keeps the last
//! policy; unknown targets are NotFound.

mod common;

use common::Control;
use linkerd2_proxy_api::outbound::{
    self as api, outbound_policies_client::OutboundPoliciesClient, proxy_protocol, traffic_spec,
    TrafficSpec,
};
use std::time::Duration;

const MESH: &str = "
services:
  - name: web.ns.svc.cluster.local
    port: 8080
    cluster_ip: 10.96.0.10
    endpoints:
      - addr: 127.0.0.1:9001
    policy:
      failure_accrual: { consecutive_failures: 7, min_ready_endpoints: 1 }
      routes:
        - name: canary
          matches:
            - { path_prefix: /api, method: POST, headers: { x-canary: 'yes' }, query: { v: '2' } }
          filters:
            - request_header_modifier: { set: { x-route: canary }, remove: [x-debug] }
            - failure_injector: { status: 503, ratio: 0.25 }
          backends:
            - { service: web-v2.ns.svc.cluster.local:8080, weight: 10 }
            - { service: web.ns.svc.cluster.local:8080, weight: 90 }
          timeouts: { request: 2s, response: 1500ms }
          retry: { max_retries: 3, statuses: [5xx, '429'], timeout: 500ms }
  - name: web-v2.ns.svc.cluster.local
    port: 8080
    endpoints:
      - addr: 127.0.0.1:9002
  - name: plain.ns.svc.cluster.local
    port: 80
";

fn authority(a: &str) -> TrafficSpec {
    TrafficSpec {
        source_workload: "test".into(),
        target: Some(traffic_spec::Target::Authority(a.into())),
    }
}

async fn next(s: &mut tonic::Streaming<api::OutboundPolicy>) -> api::OutboundPolicy {
    tokio::time::timeout(Duration::from_secs(5), s.message())
        .await
        .expect("a policy within 5s")
        .expect("no error")
        .expect("the stream stays open")
}

/// The HTTP/1 routes of a detect policy.
fn http1_routes(p: &api::OutboundPolicy) -> &[api::HttpRoute] {
    match p.protocol.as_ref().and_then(|p| p.kind.as_ref()) {
        Some(proxy_protocol::Kind::Detect(d)) => &d.http1.as_ref().expect("http1").routes,
        other => panic!("a detect policy: {other:?}"),
    }
}

/// The weights of the first rule's backends, by discovery path.
fn split(route: &api::HttpRoute) -> Vec<(String, u32)> {
    use api::http_route::distribution::Kind;
    let Some(Kind::RandomAvailable(r)) = route.rules[0]
        .backends
        .as_ref()
        .and_then(|b| b.kind.clone())
    else {
        panic!("a random split: {route:?}");
    };
    r.backends
        .iter()
        .map(|b| {
            let backend = b.backend.as_ref().unwrap().backend.as_ref().unwrap();
            let Some(api::backend::Kind::Balancer(p2c)) = &backend.kind else {
                panic!("balanced");
            };
            let Some(api::backend::endpoint_discovery::Kind::Dst(dst)) =
                p2c.discovery.as_ref().unwrap().kind.clone()
            else {
                panic!("discovered");
            };
            assert_eq!(backend.queue.unwrap().capacity, 100, "the default queue");
            (dst.path, b.weight)
        })
        .collect()
}

#[tokio::test]
async fn serves_routes_splits_timeouts_and_retries_and_follows_the_file() {
    let control = Control::start("outbound", MESH);
    let mut client = OutboundPoliciesClient::new(control.channel().await);
    let mut web = client
        .watch(authority("web.ns.svc.cluster.local:8080"))
        .await
        .unwrap()
        .into_inner();
    let p = next(&mut web).await;
    let routes = http1_routes(&p);
    assert_eq!(routes.len(), 1);
    let rule = &routes[0].rules[0];
    let m = &rule.matches[0];
    assert_eq!(m.headers[0].name, "x-canary");
    assert_eq!(m.query_params[0].name, "v");
    assert!(m.method.is_some());
    assert_eq!(rule.filters.len(), 2);
    let t = rule.timeouts.as_ref().unwrap();
    assert_eq!(t.request.unwrap().seconds, 2);
    assert_eq!(t.response.unwrap().nanos, 500_000_000);
    let retry = rule.retry.as_ref().unwrap();
    assert_eq!(retry.max_retries, 3);
    let ranges: Vec<_> = retry
        .conditions
        .as_ref()
        .unwrap()
        .status_ranges
        .iter()
        .map(|r| (r.start, r.end))
        .collect();
    assert_eq!(ranges, [(500, 599), (429, 429)]);
    assert_eq!(
        split(&routes[0]),
        [
            ("web-v2.ns.svc.cluster.local:8080".to_string(), 10),
            ("web.ns.svc.cluster.local:8080".to_string(), 90)
        ]
    );
    let Some(proxy_protocol::Kind::Detect(d)) = p.protocol.as_ref().and_then(|p| p.kind.as_ref())
    else {
        unreachable!()
    };
    let accrual = d.http1.as_ref().unwrap().failure_accrual.as_ref().unwrap();
    assert_eq!(accrual.ejection.unwrap().min_ready_endpoints, 1);

    // By cluster IP, the same policy.
    let by_ip = TrafficSpec {
        source_workload: "test".into(),
        target: Some(traffic_spec::Target::Addr(
            linkerd2_proxy_api::net::TcpAddress {
                ip: Some("10.96.0.10".parse::<std::net::IpAddr>().unwrap().into()),
                port: 8080,
            },
        )),
    };
    let got = client.get(by_ip).await.unwrap().into_inner();
    assert_eq!(got, p);

    // A service without routes: one default route to itself.
    let plain = client
        .get(authority("plain.ns.svc.cluster.local:80"))
        .await
        .unwrap()
        .into_inner();
    let routes = http1_routes(&plain);
    assert_eq!(routes.len(), 1);
    assert!(matches!(
        routes[0].metadata.as_ref().unwrap().kind,
        Some(linkerd2_proxy_api::meta::metadata::Kind::Default(_))
    ));

    // Unknown targets.
    let err = client
        .watch(authority("nope.ns.svc.cluster.local:80"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound);

    // A bad file keeps the last policy; the next good one is streamed.
    control.write(&MESH.replace("status: 503", "status: 700"));
    control.write(&MESH.replace("weight: 10 }", "weight: 50 }"));
    let p = next(&mut web).await;
    assert_eq!(split(&http1_routes(&p)[0])[0].1, 50);
}

#[tokio::test]
async fn serves_service_profiles_with_routes_budgets_and_overrides() {
    use linkerd2_proxy_api::destination::{
        destination_client::DestinationClient, request_match, response_match, GetDestination,
    };
    let mesh = "
services:
  - name: books.ns.svc.cluster.local
    port: 7000
    profile:
      retry_budget: { retry_ratio: 0.2, min_retries_per_second: 10, ttl: 10s }
      routes:
        - { name: get-book, path_regex: '/books/[^/]+', method: GET, timeout: 1s, retryable: true }
        - { name: post, path_regex: '/books', failure_statuses: ['500-504'] }
      dst_overrides:
        - { authority: books-v2.ns.svc.cluster.local:7000, weight: 100 }
        - { authority: books.ns.svc.cluster.local:7000, weight: 900 }
";
    let control = Control::start("profile", mesh);
    let mut client = DestinationClient::new(control.channel().await);
    let mut profiles = client
        .get_profile(GetDestination {
            scheme: "k8s".into(),
            path: "books.ns.svc.cluster.local:7000".into(),
            context_token: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    let p = tokio::time::timeout(Duration::from_secs(5), profiles.message())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(p.fully_qualified_name, "books.ns.svc.cluster.local");
    let budget = p.retry_budget.unwrap();
    assert_eq!(
        (budget.retry_ratio, budget.min_retries_per_second),
        (0.2, 10)
    );
    assert_eq!(budget.ttl.unwrap().seconds, 10);
    assert_eq!(
        p.dst_overrides
            .iter()
            .map(|d| (d.authority.as_str(), d.weight))
            .collect::<Vec<_>>(),
        [
            ("books-v2.ns.svc.cluster.local:7000", 100),
            ("books.ns.svc.cluster.local:7000", 900)
        ]
    );
    let get = &p.routes[0];
    assert_eq!(get.metrics_labels["route"], "get-book");
    assert!(get.is_retryable);
    assert_eq!(get.timeout.unwrap().seconds, 1);
    let Some(request_match::Match::All(all)) =
        get.condition.as_ref().and_then(|c| c.r#match.clone())
    else {
        panic!("path and method: {get:?}");
    };
    assert_eq!(all.matches.len(), 2);
    let post = &p.routes[1];
    assert!(!post.is_retryable);
    let Some(response_match::Match::Status(range)) = post.response_classes[0]
        .condition
        .as_ref()
        .and_then(|c| c.r#match.clone())
    else {
        panic!("a status class");
    };
    assert_eq!((range.min, range.max), (500, 504));
    assert!(post.response_classes[0].is_failure);
}
