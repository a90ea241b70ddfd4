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

/// Sends `POST path` with `body` on `tx`.
async fn post(
    tx: &mut hyper::client::conn::http1::SendRequest<Full<Bytes>>,
    path: &str,
    body: Bytes,
    headers: &[(&str, &str)],
) -> (u16, String) {
    let mut req = Request::post(path).header("host", "web.default.svc.cluster.local:8080");
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    tx.ready().await.expect("the connection is open");
    let rsp = tx
        .send_request(req.body(Full::new(body)).unwrap())
        .await
        .expect("response");
    client::text(rsp).await
}

const RETRIES: &str = "    policy:
      routes:
        - name: retried
          matches:
            - { path_prefix: /flaky, headers: { x-policy: retry } }
            - { path_prefix: /status, headers: { x-policy: retry } }
          retry: { max_retries: 2, statuses: [5xx], max_request_bytes: 1024 }
        - name: per-try
          matches: [{ path_prefix: /slow, headers: { x-policy: retry } }]
          retry: { max_retries: 2, statuses: [5xx], timeout: 200ms }
        - name: headers
          matches: [{ headers: { x-policy: allow } }]
          allow_l5d_request_headers: true
        - name: rest
";

const RETRY: (&str, &str) = ("x-policy", "retry");

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_succeed_later_respect_the_limit_and_never_resend_a_large_body() {
    let (a, b) = (backend::http().await, backend::http().await);
    let control = ControlPlane::start(mesh(a.addr, b.addr, RETRIES)).await;
    let proxy = start(control.addr);
    let mut tx = client::http1::<Full<Bytes>>(proxy.outbound_addr).await;

    // Every other request to the app fails: each client request succeeds on its retry, with
    // its body intact.
    for i in 0..10 {
        let body = Bytes::from(format!("body {i}"));
        let (status, text) = post(&mut tx, "/flaky/echo", body.clone(), &[RETRY]).await;
        assert_eq!((status, text.as_bytes()), (200, &body[..]), "request {i}");
    }
    assert_eq!(a.requests(), 20, "one retry each");
    // Without the route's retry, half fail.
    let mut failed = 0;
    for _ in 0..10 {
        failed += usize::from(get(&mut tx, "/flaky", &[]).await.0 == 503);
    }
    assert_eq!(failed, 5);

    // Always failing: the first attempt and two retries, then the last answer.
    let before = a.requests();
    let (status, _, _) = get(&mut tx, "/status/503", &[RETRY]).await;
    assert_eq!(status, 503);
    assert_eq!(a.requests(), before + 3);

    // A body over max_request_bytes (declared, or found while streaming) is sent once.
    let big = Bytes::from(vec![b'x'; 4096]);
    let before = a.requests();
    let (status, _) = post(&mut tx, "/status/503", big.clone(), &[RETRY]).await;
    assert_eq!(status, 503);
    assert_eq!(a.requests(), before + 1, "not retried");
    let mut h2 = client::http2::<http_body_util::StreamBody<Chunks>>(proxy.outbound_addr).await;
    for _ in 0..2 {
        let before = a.requests();
        let chunks: Chunks = Box::pin(futures_util::stream::iter((0..4).map(|_| {
            Ok::<_, std::convert::Infallible>(hyper::body::Frame::data(Bytes::from(vec![
                b'y';
                1024
            ])))
        })));
        let rsp = h2
            .send_request(
                Request::post("http://web.default.svc.cluster.local:8080/flaky/echo")
                    .header("x-policy", "retry")
                    .body(http_body_util::StreamBody::new(chunks))
                    .unwrap(),
            )
            .await
            .unwrap();
        let (status, text) = client::text(rsp).await;
        assert_eq!(
            a.requests(),
            before + 1,
            "a streamed body past the limit is sent once"
        );
        match status {
            200 => assert_eq!(text.len(), 4096, "never truncated"),
            s => assert_eq!(s, 503),
        }
    }

    // A per-attempt timeout: each attempt is cut and retried; the last one's timeout answers.
    let before = a.requests();
    let (status, h, _) = get(&mut tx, "/slow/5000", &[RETRY]).await;
    assert_eq!(status, 504);
    assert!(
        header(&h, "l5d-proxy-error").contains("retry attempt timeout"),
        "{h:?}"
    );
    eventually(Duration::from_secs(5), || {
        let a = a.clone();
        async move { holds(a.requests() == before + 3, a.requests() - before) }
    })
    .await;
}

type Chunks = std::pin::Pin<
    Box<
        dyn futures_util::Stream<Item = Result<hyper::body::Frame<Bytes>, std::convert::Infallible>>
            + Send,
    >,
>;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn l5d_retry_headers_are_honoured_only_where_the_route_allows_them() {
    let (a, b) = (backend::http().await, backend::http().await);
    let control = ControlPlane::start(mesh(a.addr, b.addr, RETRIES)).await;
    let proxy = start(control.addr);
    let mut tx = client::http1::<Full<Bytes>>(proxy.outbound_addr).await;
    let asks = [("l5d-retry-http", "5xx"), ("l5d-retry-limit", "3")];
    let allow = ("x-policy", "allow");

    // Not allowed: no retry, and the headers reach the app as sent.
    let before = a.requests();
    assert_eq!(get(&mut tx, "/status/503", &asks).await.0, 503);
    let (status, _, body) = get(&mut tx, "/headers", &asks).await;
    assert_eq!(status, 200);
    assert!(body.contains("l5d-retry-limit: 3"), "{body}");
    assert_eq!(a.requests(), before + 2, "no retries");

    // Allowed: the headers make a retry, and are taken off the request.
    let before = a.requests();
    let with = [asks[0], asks[1], allow];
    assert_eq!(get(&mut tx, "/status/503", &with).await.0, 503);
    assert_eq!(a.requests(), before + 4, "three retries");
    let (_, _, body) = get(&mut tx, "/headers", &with).await;
    assert!(!body.contains("l5d-retry"), "{body}");
    let (status, h, _) = get(&mut tx, "/slow/5000", &[("l5d-timeout", "200ms"), allow]).await;
    assert_eq!(status, 504);
    assert!(
        header(&h, "l5d-proxy-error").contains("request timeout"),
        "{h:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failure_accrual_ejects_a_failing_endpoint_and_readmits_it() {
    let failing = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    // The healthy endpoint is slower: by latency alone, P2C would prefer the failing one.
    let good = backend::http_delayed(Duration::from_millis(5)).await;
    let bad = backend::http_failing(failing.clone()).await;
    let b = backend::http().await;
    let yaml = format!(
        "services:\n\
         \x20 - name: web.default.svc.cluster.local\n    port: 8080\n    cluster_ip: 127.0.0.88\n    endpoints:\n      - addr: {}\n      - addr: {}\n\
         \x20   policy:\n      failure_accrual: {{ consecutive_failures: 3, backoff: {{ min: 300ms, max: 300ms, jitter: 0 }}, min_ready_endpoints: 1 }}\n\
         \x20 - name: web-v2.default.svc.cluster.local\n    port: 8080\n    endpoints:\n      - addr: {}\n",
        good.addr, bad.addr, b.addr
    );
    let mesh = linkerd_control::MeshConfig::parse(&yaml).unwrap_or_else(|e| panic!("{e}\n{yaml}"));
    let control = ControlPlane::start(mesh).await;
    let proxy = start(control.addr);
    let mut tx = client::http1::<Full<Bytes>>(proxy.outbound_addr).await;
    let mut failed = 0;
    let start = std::time::Instant::now();
    for _ in 0..200 {
        failed += usize::from(get(&mut tx, "/", &[]).await.0 == 503);
    }
    // Three in a row eject it; after each 300 ms back-off one probe fails again: at most one
    // per back-off (200 requests take over a second), one more for the last.
    let probes = (start.elapsed().as_millis() / 300) as usize + 1;
    assert!(
        (3..=3 + probes).contains(&failed),
        "{failed} of 200 failed ({probes} probes at most)"
    );
    assert_eq!(bad.requests(), failed);

    // It recovers: a probe readmits it and it takes its share again.
    failing.store(false, std::sync::atomic::Ordering::SeqCst);
    let before = bad.requests();
    let conn = std::sync::Arc::new(tokio::sync::Mutex::new(tx));
    eventually(Duration::from_secs(10), || {
        let (conn, bad) = (conn.clone(), bad.clone());
        async move {
            let mut tx = conn.lock().await;
            for _ in 0..20 {
                assert_eq!(get(&mut tx, "/", &[]).await.0, 200, "healthy again");
            }
            holds(bad.requests() > before + 5, bad.requests() - before)
        }
    })
    .await;
}

/// An `OutboundPolicies` server built from the published `linkerd2-proxy-api` crate's
/// generated server (as Linkerd's policy controller is): each `Watch` hands the test the
/// sending side of its stream.
struct TheirPolicies {
    watches: tokio::sync::mpsc::UnboundedSender<tokio::sync::mpsc::Sender<TheirItem>>,
}

type TheirItem = Result<linkerd2_proxy_api::outbound::OutboundPolicy, tonic::Status>;

#[tonic::async_trait]
impl linkerd2_proxy_api::outbound::outbound_policies_server::OutboundPolicies for TheirPolicies {
    async fn get(
        &self,
        _: tonic::Request<linkerd2_proxy_api::outbound::TrafficSpec>,
    ) -> Result<tonic::Response<linkerd2_proxy_api::outbound::OutboundPolicy>, tonic::Status> {
        Err(tonic::Status::unimplemented("watch only"))
    }

    type WatchStream = tokio_stream::wrappers::ReceiverStream<TheirItem>;

    async fn watch(
        &self,
        _: tonic::Request<linkerd2_proxy_api::outbound::TrafficSpec>,
    ) -> Result<tonic::Response<Self::WatchStream>, tonic::Status> {
        let (tx, rx) = tokio::sync::mpsc::channel(8);
        let _ = self.watches.send(tx);
        Ok(tonic::Response::new(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        ))
    }
}

/// The policy `linkerd-control` renders for `web` in `mesh`, as Linkerd's own type (re-encoded:
/// the wire format is the contract).
async fn their_policy(
    mesh: linkerd_control::MeshConfig,
) -> linkerd2_proxy_api::outbound::OutboundPolicy {
    use linkerd_proxy_api::outbound::outbound_policies_server::OutboundPolicies;
    use prost::Message;
    let ours = linkerd_control::OutboundPolicyService::new(linkerd_control::Mesh::new(mesh));
    let spec = linkerd_proxy_api::outbound::TrafficSpec {
        source_workload: String::new(),
        target: Some(linkerd_proxy_api::outbound::traffic_spec::Target::Addr(
            WEB_IP.parse::<SocketAddr>().unwrap().into(),
        )),
    };
    let policy = ours
        .get(tonic::Request::new(spec))
        .await
        .expect("web's policy")
        .into_inner();
    linkerd2_proxy_api::outbound::OutboundPolicy::decode(policy.encode_to_vec().as_slice())
        .expect("the same wire format")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_policy_is_refused_and_the_last_good_one_kept() {
    let (a, b) = (backend::http().await, backend::http().await);
    let to = |svc: &str| {
        format!(
            "    policy:\n      routes:\n        - name: r\n          backends: [{{ service: {svc}.default.svc.cluster.local:8080 }}]\n"
        )
    };
    let to_v2 = their_policy(mesh(a.addr, b.addr, &to("web-v2"))).await;
    let to_web = their_policy(mesh(a.addr, b.addr, &to("web"))).await;
    // Discovery from linkerd-control, policy from Linkerd's own server type.
    let control = ControlPlane::start(mesh(a.addr, b.addr, "")).await;
    let (watches, mut watched) = tokio::sync::mpsc::unbounded_channel();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let policy_addr = listener.local_addr().unwrap();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(
                linkerd2_proxy_api::outbound::outbound_policies_server::OutboundPoliciesServer::new(
                    TheirPolicies { watches },
                ),
            )
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    let mut env = env(control.addr);
    env[1].1 = policy_addr.to_string();
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let proxy = proxy(&env, Some(WEB_IP.parse().unwrap()));

    // The first watch gets the policy to web-v2 before the connection's first request.
    let connecting = tokio::spawn(client::http1::<Full<Bytes>>(proxy.outbound_addr));
    let first = watched.recv().await.expect("a watch");
    first.send(Ok(to_v2)).await.unwrap();
    let mut tx = connecting.await.unwrap();
    assert_eq!(get(&mut tx, "/", &[]).await.0, 200);
    assert_eq!((a.requests(), b.requests()), (0, 1));

    // A policy without a protocol, then the stream fails: the proxy reads both (it watches
    // again), and the policy it had still routes.
    let mut malformed = their_policy(mesh(a.addr, b.addr, &to("web"))).await;
    malformed.protocol = None;
    first.send(Ok(malformed)).await.unwrap();
    first
        .send(Err(tonic::Status::unavailable("restarting")))
        .await
        .unwrap();
    let second = tokio::time::timeout(Duration::from_secs(10), watched.recv())
        .await
        .expect("watched again")
        .expect("a watch");
    for _ in 0..3 {
        assert_eq!(get(&mut tx, "/", &[]).await.0, 200);
    }
    assert_eq!((a.requests(), b.requests()), (0, 4), "still to web-v2");

    // A good update applies to the connection's next requests.
    second.send(Ok(to_web)).await.unwrap();
    let conn = std::sync::Arc::new(tokio::sync::Mutex::new(tx));
    eventually(Duration::from_secs(10), || {
        let (conn, a) = (conn.clone(), a.clone());
        async move {
            let before = a.requests();
            get(&mut *conn.lock().await, "/", &[]).await;
            holds(a.requests() == before + 1, "not yet to web")
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backends_queue_comes_from_the_policy() {
    let (a, b) = (backend::http().await, backend::http().await);
    let yaml = format!(
        "services:\n\
         \x20 - name: web.default.svc.cluster.local\n    port: 8080\n    cluster_ip: 127.0.0.88\n    endpoints:\n      - addr: {}\n\
         \x20   policy:\n      queue: {{ capacity: 10, failfast_timeout: 200ms }}\n      routes:\n        - name: r\n          backends: [{{ service: empty.default.svc.cluster.local:8080 }}]\n\
         \x20 - name: empty.default.svc.cluster.local\n    port: 8080\n    endpoints: []\n\
         \x20 - name: web-v2.default.svc.cluster.local\n    port: 8080\n    endpoints:\n      - addr: {}\n",
        a.addr, b.addr
    );
    let mesh = linkerd_control::MeshConfig::parse(&yaml).unwrap_or_else(|e| panic!("{e}\n{yaml}"));
    let control = ControlPlane::start(mesh).await;
    // The proxy's own fail-fast timeout is a minute: only the policy's makes the answer come
    // in time.
    let mut env = env(control.addr);
    env[3].1 = "60s".into();
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let proxy = proxy(&env, Some(WEB_IP.parse().unwrap()));
    let mut tx = client::http1::<Full<Bytes>>(proxy.outbound_addr).await;
    let (status, h, _) = tokio::time::timeout(Duration::from_secs(10), get(&mut tx, "/", &[]))
        .await
        .expect("failed fast by the policy's queue");
    assert_eq!(status, 504, "{h:?}");
    assert!(header(&h, "l5d-proxy-error").contains("200ms"), "{h:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_profile_with_routes_wins_over_the_policy() {
    let (a, b) = (backend::http().await, backend::http().await);
    let policy = "    policy:
      routes:
        - name: r
          backends: [{ service: web-v2.default.svc.cluster.local:8080 }]
";
    let with_profile = format!(
        "{policy}    profile:\n      routes:\n        - {{ name: all, path_regex: '/.*' }}\n"
    );
    // Without the profile's routes, the policy routes to web-v2.
    let control = ControlPlane::start(mesh(a.addr, b.addr, policy)).await;
    let proxy = start(control.addr);
    let mut tx = client::http1::<Full<Bytes>>(proxy.outbound_addr).await;
    assert_eq!(get(&mut tx, "/", &[]).await.0, 200);
    assert_eq!((a.requests(), b.requests()), (0, 1));
    drop((tx, proxy, control));

    // With them, the profile decides: the service itself, not the policy's backend.
    let control = ControlPlane::start(mesh(a.addr, b.addr, &with_profile)).await;
    let proxy = start(control.addr);
    let mut tx = client::http1::<Full<Bytes>>(proxy.outbound_addr).await;
    assert_eq!(get(&mut tx, "/", &[]).await.0, 200);
    assert_eq!((a.requests(), b.requests()), (1, 1));
}
