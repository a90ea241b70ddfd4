//! Outbound policy (`OutboundPolicies`) end to end: `linkerd-control` serves the policy of a
//! service from its YAML; a proxy whose app connects to the service's ClusterIP routes each
//! request by it: route matches and 404, filters, weighted splits, timeouts, updates, and the
//! cached policy while the control plane is away.

use bytes::Bytes;
use http::Request;
use http_body_util::Full;
use linkerd_tests::{backend, client, control::ControlPlane, eventually, holds, proxy};
use std::{net::SocketAddr, time::Duration};

/// The ClusterIP of `web` (nothing listens there: a request the proxy forwarded as is would
/// fail).
const WEB_IP: &str = "127.0.0.88:8080";

fn env(control: SocketAddr) -> Vec<(&'static str, String)> {
    vec![
        ("LINKERD2_PROXY_DESTINATION_SVC_ADDR", control.to_string()),
        ("LINKERD2_PROXY_POLICY_SVC_ADDR", control.to_string()),
        (
            "LINKERD2_PROXY_POLICY_WORKLOAD",
            "{\"ns\":\"default\",\"pod\":\"client-0\"}\n".into(),
        ),
        (
            "LINKERD2_PROXY_OUTBOUND_HTTP_FAILFAST_TIMEOUT",
            "500ms".into(),
        ),
    ]
}

fn start(control: SocketAddr) -> linkerd_app::Proxy {
    let env = env(control);
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    proxy(&env, Some(WEB_IP.parse().unwrap()))
}

/// A mesh of `web` (ClusterIP [`WEB_IP`], endpoint `a`, with `policy`) and `web-v2`
/// (endpoint `b`).
fn mesh(a: SocketAddr, b: SocketAddr, policy: &str) -> linkerd_control::MeshConfig {
    let yaml = format!(
        "services:\n\
         \x20 - name: web.default.svc.cluster.local\n    port: 8080\n    cluster_ip: 127.0.0.88\n    endpoints:\n      - addr: {a}\n{policy}\
         \x20 - name: web-v2.default.svc.cluster.local\n    port: 8080\n    endpoints:\n      - addr: {b}\n"
    );
    linkerd_control::MeshConfig::parse(&yaml).unwrap_or_else(|e| panic!("{e}\n{yaml}"))
}

/// Sends `GET path` with these headers on `tx`.
async fn get(
    tx: &mut hyper::client::conn::http1::SendRequest<Full<Bytes>>,
    path: &str,
    headers: &[(&str, &str)],
) -> (u16, http::HeaderMap, String) {
    let req = Request::get(path).header("host", "web.default.svc.cluster.local:8080");
    let (status, headers, body) = client::send(tx, req, headers).await;
    (status, headers, String::from_utf8_lossy(&body).into_owned())
}

fn header<'a>(h: &'a http::HeaderMap, name: &str) -> &'a str {
    h.get(name).and_then(|v| v.to_str().ok()).unwrap_or("")
}

const ROUTES: &str = "    policy:
      routes:
        - name: v2
          matches: [{ headers: { x-v: \"2\" } }]
          filters:
            - request_header_modifier: { set: { x-route: v2 }, remove: [x-debug] }
            - response_header_modifier: { set: { x-served-by: v2 } }
          backends: [{ service: web-v2.default.svc.cluster.local:8080 }]
        - name: api
          matches: [{ path_prefix: /api, headers: { x-canary: \"yes\" } }]
        - name: api-exact
          matches: [{ path_exact: /api/headers, method: POST }]
          backends: [{ service: web-v2.default.svc.cluster.local:8080 }]
        - name: fail
          matches: [{ path_exact: /fail }]
          filters: [{ failure_injector: { status: 503, message: chaos } }]
        - name: moved
          matches: [{ path_exact: /old }]
          filters: [{ redirect: { path: /new, status: 301 } }]
        - name: other-host
          hosts: [elsewhere.example.com]
          matches: [{ headers: { x-v: \"2\" } }]
          backends: [{ service: web.default.svc.cluster.local:8080 }]
";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_match_filter_and_answer_404() {
    let (a, b) = (backend::http().await, backend::http().await);
    let control = ControlPlane::start(mesh(a.addr, b.addr, ROUTES)).await;
    let proxy = start(control.addr);
    let mut tx = client::http1::<Full<Bytes>>(proxy.outbound_addr).await;

    // A header route to the other service, with its request and response header filters.
    let (status, h, body) = get(&mut tx, "/headers", &[("x-v", "2"), ("x-debug", "1")]).await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("x-route: v2"), "{body}");
    assert!(!body.contains("x-debug"), "{body}");
    assert_eq!(header(&h, "x-served-by"), "v2");
    assert_eq!((a.requests(), b.requests()), (0, 1));

    // A header match: with it, the route to `web`; without, no route matches: 404.
    let (status, _, body) = get(&mut tx, "/api/x", &[("x-canary", "yes")]).await;
    assert_eq!((status, body.as_str()), (200, "hello"));
    assert_eq!((a.requests(), b.requests()), (1, 1));
    let (status, h, _) = get(&mut tx, "/api/x", &[]).await;
    assert_eq!(status, 404);
    assert!(header(&h, "l5d-proxy-error").contains("no route"), "{h:?}");
    // A 404 keeps the connection: the next request on it is served.
    let (status, _, _) = get(&mut tx, "/", &[("x-v", "2")]).await;
    assert_eq!(status, 200);

    // Precedence: an exact path beats a prefix; the method must match too.
    let req = Request::post("/api/headers")
        .header("host", "web.default.svc.cluster.local:8080")
        .header("x-canary", "yes");
    let before = b.requests();
    let (status, _, _) = client::send(&mut tx, req, &[]).await;
    assert_eq!(status, 200);
    assert_eq!(b.requests(), before + 1, "the exact route (to web-v2) won");

    // The failure injector answers without forwarding.
    let sent = a.requests() + b.requests();
    let (status, h, _) = get(&mut tx, "/fail", &[]).await;
    assert_eq!(status, 503);
    assert!(header(&h, "l5d-proxy-error").contains("chaos"), "{h:?}");
    let (status, h, _) = get(&mut tx, "/old", &[]).await;
    assert_eq!(status, 301);
    assert_eq!(
        header(&h, "location"),
        "http://web.default.svc.cluster.local/new"
    );
    assert_eq!(a.requests() + b.requests(), sent, "answered by the proxy");

    // Hosts: a route for another host does not take this host's requests, and takes its own.
    let req = Request::get("/").header("host", "elsewhere.example.com");
    let before = (a.requests(), b.requests());
    let (status, _, _) = client::send(&mut tx, req, &[("x-v", "2")]).await;
    assert_eq!(status, 200);
    assert_eq!((a.requests(), b.requests()), (before.0 + 1, before.1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_weighted_split_follows_its_weights() {
    let (a, b) = (backend::http().await, backend::http().await);
    let policy = "    policy:
      routes:
        - name: split
          backends:
            - { service: web.default.svc.cluster.local:8080, weight: 80 }
            - { service: web-v2.default.svc.cluster.local:8080, weight: 20 }
";
    let control = ControlPlane::start(mesh(a.addr, b.addr, policy)).await;
    let proxy = start(control.addr);
    let mut tx = client::http1::<Full<Bytes>>(proxy.outbound_addr).await;
    let n = 1000;
    for _ in 0..n {
        let (status, _, _) = get(&mut tx, "/", &[]).await;
        assert_eq!(status, 200);
    }
    let share = b.requests() as f64 / n as f64;
    // 20% of 1000: the standard deviation is 1.3 points; 6 of them is beyond chance.
    assert!((0.12..=0.28).contains(&share), "web-v2 took {share}");
    assert_eq!(a.requests() + b.requests(), n);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn route_timeouts_answer_504_and_keep_the_connection() {
    let (a, b) = (backend::http().await, backend::http().await);
    let policy = "    policy:
      routes:
        - name: request
          matches: [{ path_prefix: /slow, headers: { x-kind: request } }]
          timeouts: { request: 300ms }
        - name: response
          matches: [{ path_prefix: /slow, headers: { x-kind: response } }]
          timeouts: { response: 300ms }
        - name: rest
";
    let control = ControlPlane::start(mesh(a.addr, b.addr, policy)).await;
    let proxy = start(control.addr);
    let mut tx = client::http1::<Full<Bytes>>(proxy.outbound_addr).await;
    for kind in ["request", "response"] {
        let (status, h, _) = get(&mut tx, "/slow/5000", &[("x-kind", kind)]).await;
        assert_eq!(status, 504, "{kind}");
        assert!(
            header(&h, "l5d-proxy-error").contains(&format!("{kind} timeout")),
            "{h:?}"
        );
        // Within the limit, on the same connection.
        let (status, _, body) = get(&mut tx, "/slow/10", &[("x-kind", kind)]).await;
        assert_eq!((status, body.as_str()), (200, "slow"), "{kind}");
    }
    // No timeout on the other route.
    let (status, _, _) = get(&mut tx, "/slow/600", &[]).await;
    assert_eq!(status, 200);

    // HTTP/2, and gRPC's answer: DEADLINE_EXCEEDED.
    let mut h2 = client::http2::<Full<Bytes>>(proxy.outbound_addr).await;
    let uri = "http://web.default.svc.cluster.local:8080/slow/5000";
    let rsp = h2
        .send_request(
            Request::get(uri)
                .header("x-kind", "request")
                .body(Full::default())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(rsp.status(), 504);
    let rsp = h2
        .send_request(
            Request::post(uri)
                .header("x-kind", "request")
                .header("content-type", "application/grpc")
                .header("te", "trailers")
                .body(Full::default())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(rsp.status(), 200);
    assert_eq!(
        header(rsp.headers(), "grpc-status"),
        "4",
        "{:?}",
        rsp.headers()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policy_updates_apply_to_the_next_request_and_survive_control_plane_loss() {
    let (a, b) = (backend::http().await, backend::http().await);
    let to = |svc: &str| {
        format!(
            "    policy:\n      routes:\n        - name: r\n          backends: [{{ service: {svc}.default.svc.cluster.local:8080 }}]\n"
        )
    };
    let control = ControlPlane::start(mesh(a.addr, b.addr, &to("web"))).await;
    let proxy = start(control.addr);
    let mut tx = client::http1::<Full<Bytes>>(proxy.outbound_addr).await;
    assert_eq!(get(&mut tx, "/", &[]).await.0, 200);
    assert_eq!((a.requests(), b.requests()), (1, 0));

    // The route now goes to web-v2: the same connection's next requests follow.
    control.mesh.set(mesh(a.addr, b.addr, &to("web-v2")));
    let conn = std::sync::Arc::new(tokio::sync::Mutex::new(tx));
    eventually(Duration::from_secs(10), || {
        let (conn, b) = (conn.clone(), b.clone());
        async move {
            let before = b.requests();
            get(&mut *conn.lock().await, "/", &[]).await;
            holds(b.requests() == before + 1, "web-v2 not yet routed to")
        }
    })
    .await;

    // The control plane goes away: new connections still use the cached policy.
    let _ = control.kill();
    for _ in 0..3 {
        let mut tx = client::http1::<Full<Bytes>>(proxy.outbound_addr).await;
        let before = b.requests();
        let (status, _, _) = get(&mut tx, "/", &[]).await;
        assert_eq!(status, 200);
        assert_eq!(b.requests(), before + 1, "routed by the cached policy");
    }
}
