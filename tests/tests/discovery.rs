//! Discovery and balancing end to end: a proxy, `linkerd-control`'s Destination service and
//! real backends. Requests name `web.default.svc.cluster.local:8080` through the explicit
//! proxy; the proxy resolves it and balances each request.

use bytes::Bytes;
use http::Request;
use http_body_util::Full;
use linkerd_tests::{
    backend, client,
    control::{mesh, ControlPlane},
    eventually, holds, metric, proxy, scrape,
};
use std::{
    net::SocketAddr,
    sync::{
        atomic::{AtomicBool, AtomicUsize, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

const WEB: &str = "web.default.svc.cluster.local";

/// The balancer of `web:8080`, by upstream's labels: the Service and its own backend.
const WEB_BALANCER: [&str; 8] = [
    "parent_group=\"core\"",
    "parent_kind=\"Service\"",
    "parent_namespace=\"default\"",
    "parent_name=\"web\"",
    "parent_port=\"8080\"",
    "backend_name=\"web\"",
    "backend_namespace=\"default\"",
    "backend_port=\"8080\"",
];
/// Its ready endpoints.
fn web_ready() -> Vec<&'static str> {
    [&WEB_BALANCER[..], &["endpoint_state=\"ready\""]].concat()
}

fn discovery_env(control: SocketAddr) -> Vec<(&'static str, String)> {
    vec![
        ("LINKERD2_PROXY_DESTINATION_SVC_ADDR", control.to_string()),
        (
            "LINKERD2_PROXY_OUTBOUND_HTTP_FAILFAST_TIMEOUT",
            "500ms".into(),
        ),
    ]
}

fn start_proxy(env: &[(&'static str, String)]) -> linkerd_app::Proxy {
    start_proxy_to(env, None)
}

/// A proxy whose connections all report `orig_dst` (as if redirected there).
fn start_proxy_to(
    env: &[(&'static str, String)],
    orig_dst: Option<SocketAddr>,
) -> linkerd_app::Proxy {
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    proxy(&env, orig_dst)
}

/// Connections the proxy opened to `e`, from a metrics scrape.
fn dst_opens(m: &str, e: SocketAddr) -> f64 {
    metric(
        m,
        "tcp_open_total",
        &["peer=\"dst\"", &format!("target_addr=\"{e}\"")],
    )
    .unwrap_or(0.0)
}

/// Sends `n` requests on each of `workers` connections to `authority`; returns the statuses.
async fn load(proxy: SocketAddr, authority: &str, workers: usize, n: usize) -> Vec<u16> {
    let mut tasks = Vec::new();
    for _ in 0..workers {
        let uri = format!("http://{authority}/");
        tasks.push(tokio::spawn(async move {
            let mut tx = client::http1::<Full<Bytes>>(proxy).await;
            let mut statuses = Vec::new();
            for _ in 0..n {
                if tx.ready().await.is_err() {
                    tx = client::http1::<Full<Bytes>>(proxy).await;
                }
                let rsp = tx
                    .send_request(Request::get(&uri).body(Full::default()).unwrap())
                    .await;
                statuses.push(match rsp {
                    Ok(r) => client::text(r).await.0,
                    Err(_) => 0,
                });
            }
            statuses
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    all
}

async fn get(proxy: SocketAddr, authority: &str) -> (u16, String, Option<String>) {
    let mut tx = client::http1::<Full<Bytes>>(proxy).await;
    let rsp = tx
        .send_request(
            Request::get(format!("http://{authority}/"))
                .body(Full::default())
                .unwrap(),
        )
        .await
        .unwrap();
    let err = rsp
        .headers()
        .get("l5d-proxy-error")
        .map(|v| v.to_str().unwrap().to_string());
    let (status, body) = client::text(rsp).await;
    (status, body, err)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weighted_spread_and_dst_labels() {
    // Equal backends whose latency (5ms) dwarfs this machine's scheduling noise.
    let d = Duration::from_millis(5);
    let (a, b, c) = (
        backend::http_delayed(d).await,
        backend::http_delayed(d).await,
        backend::http_delayed(d).await,
    );
    let eps = [
        format!("{} 1 web-a", a.addr),
        format!("{} 1 web-b", b.addr),
        format!("{} 2 web-c", c.addr),
    ];
    let eps: Vec<&str> = eps.iter().map(String::as_str).collect();
    let control = ControlPlane::start(mesh(&[(WEB, 8080, &eps)])).await;
    let proxy = start_proxy(&discovery_env(control.addr));

    let statuses = load(proxy.outbound_addr, &format!("{WEB}:8080"), 4, 100).await;
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
    let (ra, rb, rc) = (a.requests(), b.requests(), c.requests());
    assert_eq!(ra + rb + rc, 400);
    // Equal backends: the spread follows the weights (1:1:2), give or take latency noise.
    assert!(
        ra >= 40 && rb >= 40,
        "every endpoint serves: {ra} {rb} {rc}"
    );
    assert!(
        rc >= 120,
        "the weight-2 endpoint serves the most: {ra} {rb} {rc}"
    );

    let m = scrape(proxy.admin_addr).await;
    let n = metric(
        &m,
        "request_total",
        &[
            "dst_pod=\"web-c\"",
            "dst_service=\"web\"",
            "dst_namespace=\"default\"",
            &format!("authority=\"{WEB}:8080\""),
        ],
    );
    assert_eq!(n, Some(rc as f64), "{m}");
    assert_eq!(
        metric(&m, "outbound_http_balancer_endpoints", &web_ready()),
        Some(3.0),
        "{m}"
    );
    assert_eq!(
        metric(&m, "outbound_http_balancer_p2c_endpoints", &WEB_BALANCER),
        Some(3.0),
        "{m}"
    );
    assert!(
        metric(
            &m,
            "outbound_http_balancer_queue_requests_total",
            &WEB_BALANCER
        ) >= Some(rc as f64),
        "{m}"
    );
    assert_eq!(
        metric(&m, "control_request_total", &[]),
        Some(1.0),
        "one shared lookup: {m}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_endpoint_gets_few_requests() {
    let fast: Vec<_> = [
        backend::http_delayed(Duration::from_millis(2)).await,
        backend::http_delayed(Duration::from_millis(2)).await,
    ]
    .into();
    let slow = backend::http_delayed(Duration::from_millis(20)).await;
    let eps = [
        fast[0].addr.to_string(),
        fast[1].addr.to_string(),
        slow.addr.to_string(),
    ];
    let eps: Vec<&str> = eps.iter().map(String::as_str).collect();
    let control = ControlPlane::start(mesh(&[(WEB, 8080, &eps)])).await;
    let proxy = start_proxy(&discovery_env(control.addr));
    let authority = format!("{WEB}:8080");

    // Warm-up: the balancer learns the latencies.
    assert!(load(proxy.outbound_addr, &authority, 4, 10)
        .await
        .iter()
        .all(|s| *s == 200));
    let slow_before = slow.requests();
    let statuses = load(proxy.outbound_addr, &authority, 4, 75).await;
    assert!(statuses.iter().all(|s| *s == 200));
    let slow_share = (slow.requests() - slow_before) as f64 / 300.0;
    assert!(
        slow_share < 0.10,
        "the 10x slower endpoint got {:.1}% of requests",
        slow_share * 100.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removing_an_endpoint_mid_load_fails_nothing() {
    let backends = [
        backend::http_delayed(Duration::from_millis(1)).await,
        backend::http_delayed(Duration::from_millis(1)).await,
        backend::http_delayed(Duration::from_millis(1)).await,
    ];
    let all: Vec<String> = backends.iter().map(|b| b.addr.to_string()).collect();
    let all_refs: Vec<&str> = all.iter().map(String::as_str).collect();
    let control = ControlPlane::start(mesh(&[(WEB, 8080, &all_refs)])).await;
    let proxy = start_proxy(&discovery_env(control.addr));
    let authority = format!("{WEB}:8080");

    let running = load(proxy.outbound_addr, &authority, 4, 150);
    let mesh_handle = control.mesh.clone();
    let served = || backends.iter().map(backend::Http::requests).sum::<usize>();
    let remove = async {
        // Mid-load: a fifth of the requests are done.
        eventually(Duration::from_secs(10), || async {
            holds(served() >= 120, served())
        })
        .await;
        mesh_handle.set(mesh(&[(WEB, 8080, &all_refs[..2])]));
    };
    let (statuses, ()) = tokio::join!(running, remove);
    let failed = statuses.iter().filter(|s| **s != 200).count();
    assert_eq!(
        failed, 0,
        "no request fails when an endpoint is removed: {statuses:?}"
    );
    // After the removal settles (the balancer has two endpoints), the removed one gets
    // nothing.
    eventually(Duration::from_secs(5), || async {
        let m = scrape(proxy.admin_addr).await;
        let ready = metric(&m, "outbound_http_balancer_endpoints", &web_ready());
        holds(ready == Some(2.0), ready)
    })
    .await;
    let before = backends[2].requests();
    assert!(load(proxy.outbound_addr, &authority, 2, 50)
        .await
        .iter()
        .all(|s| *s == 200));
    assert_eq!(
        backends[2].requests(),
        before,
        "the removed endpoint is no longer chosen"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn control_plane_loss_and_recovery() {
    let web = backend::http().await;
    let other = backend::http().await;
    let web_ep = web.addr.to_string();
    let control = ControlPlane::start(mesh(&[(WEB, 8080, &[&web_ep])])).await;
    let proxy = start_proxy(&discovery_env(control.addr));
    let authority = format!("{WEB}:8080");
    assert!(load(proxy.outbound_addr, &authority, 1, 5)
        .await
        .iter()
        .all(|s| *s == 200));

    // The control plane goes away under load: known services keep working.
    let stop = Arc::new(AtomicBool::new(false));
    let failures = Arc::new(AtomicUsize::new(0));
    let bg = {
        let (stop, failures, authority) = (stop.clone(), failures.clone(), authority.clone());
        let addr = proxy.outbound_addr;
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                for s in load(addr, &authority, 2, 10).await {
                    if s != 200 {
                        failures.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        })
    };
    // The load is running; then the control plane goes, and the load goes on without it.
    let served = |n: usize| {
        let web = &web;
        move || async move { holds(web.requests() >= n, web.requests()) }
    };
    eventually(Duration::from_secs(5), served(web.requests() + 20)).await;
    let (addr, _) = control.kill();
    eventually(Duration::from_secs(5), served(web.requests() + 50)).await;

    // A service the proxy never resolved fails fast (the fail-fast timeout), with a reason:
    // 504 as upstream, counted like any other request.
    let started = Instant::now();
    let (status, _, err) = get(proxy.outbound_addr, "new.default.svc.cluster.local:80").await;
    assert_eq!(status, 504);
    assert!(err.unwrap().contains("new.default.svc.cluster.local:80"));
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    let m = scrape(proxy.admin_addr).await;
    let new = "authority=\"new.default.svc.cluster.local:80\"";
    assert_eq!(metric(&m, "request_total", &[new]), Some(1.0), "{m}");
    assert_eq!(
        metric(
            &m,
            "response_total",
            &[
                new,
                "status_code=\"504\"",
                "classification=\"failure\"",
                "error=\"failfast\""
            ]
        ),
        Some(1.0),
        "{m}"
    );

    // The control plane comes back, now also serving `new`: the proxy recovers.
    let other_ep = other.addr.to_string();
    let mesh2 = linkerd_control::Mesh::new(mesh(&[
        (WEB, 8080, &[&web_ep]),
        ("new.default.svc.cluster.local", 80, &[&other_ep]),
    ]));
    let _control = ControlPlane::start_on(addr, mesh2).await;
    let (_, body, _) = eventually(Duration::from_secs(15), || async {
        let rsp = get(proxy.outbound_addr, "new.default.svc.cluster.local:80").await;
        holds(rsp.0 == 200, rsp.clone()).map(|()| rsp)
    })
    .await;
    assert_eq!(body, "hello");
    stop.store(true, Ordering::Relaxed);
    bg.await.unwrap();
    assert_eq!(
        failures.load(Ordering::Relaxed),
        0,
        "requests to the known service failed while the control plane was away"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_service_is_503_at_once() {
    let control = ControlPlane::start(mesh(&[])).await;
    let proxy = start_proxy(&[
        (
            "LINKERD2_PROXY_DESTINATION_SVC_ADDR",
            control.addr.to_string(),
        ),
        (
            "LINKERD2_PROXY_OUTBOUND_HTTP_FAILFAST_TIMEOUT",
            "10s".into(),
        ),
    ]);
    // Let the first lookup answer.
    let _ = get(proxy.outbound_addr, "nope.default.svc.cluster.local:80").await;
    let started = Instant::now();
    let (status, _, err) = get(proxy.outbound_addr, "nope.default.svc.cluster.local:80").await;
    assert_eq!(status, 503);
    assert!(err.unwrap().contains("does not exist"));
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "not after the 10s fail-fast timeout: {:?}",
        started.elapsed()
    );
    // Refused requests count like any other, under the name they asked for.
    let m = scrape(proxy.admin_addr).await;
    let nope = "authority=\"nope.default.svc.cluster.local:80\"";
    assert_eq!(
        metric(&m, "request_total", &[nope, "direction=\"outbound\""]),
        Some(2.0),
        "{m}"
    );
    assert_eq!(
        metric(
            &m,
            "response_total",
            &[nope, "status_code=\"503\"", "error=\"not_found\""]
        ),
        Some(2.0),
        "{m}"
    );
    // Names outside the suffixes are not looked up: forwarded as before.
    let app = backend::http().await;
    let (status, body, _) = get(proxy.outbound_addr, &app.addr.to_string()).await;
    assert_eq!((status, body.as_str()), (200, "hello"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_tunnels_are_balanced_per_connection() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (e1, e2) = (backend::tcp_echo().await, backend::tcp_echo().await);
    let eps = [e1.to_string(), e2.to_string()];
    let eps: Vec<&str> = eps.iter().map(String::as_str).collect();
    let control = ControlPlane::start(mesh(&[("db.default.svc.cluster.local", 5432, &eps)])).await;
    let proxy = start_proxy(&discovery_env(control.addr));
    for i in 0..20 {
        let (mut s, head) =
            client::connect_tunnel(proxy.outbound_addr, "db.default.svc.cluster.local:5432").await;
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        let msg = format!("tunnel {i}");
        s.write_all(msg.as_bytes()).await.unwrap();
        s.shutdown().await.unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).await.unwrap();
        assert_eq!(out, format!("{msg}bye"));
    }
    let m = scrape(proxy.admin_addr).await;
    let opened = |e: SocketAddr| dst_opens(&m, e);
    assert_eq!(opened(e1) + opened(e2), 20.0, "{m}");
    assert!(
        opened(e1) > 0.0 && opened(e2) > 0.0,
        "both endpoints get tunnels: {m}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn service_ip_connections_are_balanced_by_profile() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    // A "ClusterIP" nothing listens on: forwarding to it would fail, so success shows the
    // proxy routed by the service's profile.
    let cluster_ip: SocketAddr = "127.0.0.77:6379".parse().unwrap();
    let web_ip: SocketAddr = "127.0.0.77:8080".parse().unwrap();
    let (e1, e2) = (backend::tcp_echo().await, backend::tcp_echo().await);
    let web = backend::http().await;
    let yaml = format!(
        "services:\n\
         \x20 - name: redis.default.svc.cluster.local\n    port: 6379\n    cluster_ip: 127.0.0.77\n    endpoints:\n      - addr: {e1}\n        protocol_hint: opaque\n      - addr: {e2}\n        protocol_hint: opaque\n\
         \x20 - name: web.default.svc.cluster.local\n    port: 8080\n    cluster_ip: 127.0.0.77\n    endpoints:\n      - addr: {}\n",
        web.addr
    );
    let control = ControlPlane::start(linkerd_control::MeshConfig::parse(&yaml).unwrap()).await;
    let env = discovery_env(control.addr);

    // Opaque TCP (the profile says opaque: no detection wait, even for a client-first
    // protocol whose first bytes look like nothing), balanced per connection.
    let redis = start_proxy_to(&env, Some(cluster_ip));
    for i in 0..10 {
        let mut s = tokio::net::TcpStream::connect(redis.outbound_addr)
            .await
            .unwrap();
        s.write_all(format!("PING {i}").as_bytes()).await.unwrap();
        s.shutdown().await.unwrap();
        let mut out = String::new();
        tokio::time::timeout(Duration::from_secs(5), s.read_to_string(&mut out))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(out, format!("PING {i}bye"));
    }
    let m = scrape(redis.admin_addr).await;
    let opened = |e: SocketAddr| dst_opens(&m, e);
    assert_eq!(opened(e1) + opened(e2), 10.0, "{m}");
    assert!(opened(e1) > 0.0 && opened(e2) > 0.0, "{m}");

    // HTTP to the service IP, with a Host that names nothing discoverable: the profile's
    // service routes it.
    let http = start_proxy_to(&env, Some(web_ip));
    let (status, body) = client::get(http.outbound_addr, "/").await;
    assert_eq!((status, body.as_str()), (200, "hello"));
    let m = scrape(http.admin_addr).await;
    assert_eq!(
        metric(
            &m,
            "request_total",
            &[
                "authority=\"web.default.svc.cluster.local:8080\"",
                &format!("target_addr=\"{}\"", web.addr)
            ]
        ),
        Some(1.0),
        "{m}"
    );
}

/// A Destination server built from the published `linkerd2-proxy-api` crate: every profile
/// names `endpoint`, whatever address was asked about (as a profile for a pod IP behind a
/// port mapping does); `Get` knows nothing.
struct ProfileWithEndpoint {
    endpoint: SocketAddr,
}

type TheirUpdates = std::pin::Pin<
    Box<
        dyn futures_util::Stream<
                Item = Result<linkerd2_proxy_api::destination::Update, tonic::Status>,
            > + Send,
    >,
>;
type TheirProfiles = std::pin::Pin<
    Box<
        dyn futures_util::Stream<
                Item = Result<linkerd2_proxy_api::destination::DestinationProfile, tonic::Status>,
            > + Send,
    >,
>;

#[tonic::async_trait]
impl linkerd2_proxy_api::destination::destination_server::Destination for ProfileWithEndpoint {
    type GetStream = TheirUpdates;
    type GetProfileStream = TheirProfiles;

    async fn get(
        &self,
        _: tonic::Request<linkerd2_proxy_api::destination::GetDestination>,
    ) -> Result<tonic::Response<TheirUpdates>, tonic::Status> {
        Err(tonic::Status::not_found("no services here"))
    }

    async fn get_profile(
        &self,
        _: tonic::Request<linkerd2_proxy_api::destination::GetDestination>,
    ) -> Result<tonic::Response<TheirProfiles>, tonic::Status> {
        use linkerd2_proxy_api::{destination as d, net};
        let ip = match self.endpoint.ip() {
            std::net::IpAddr::V4(v4) => net::ip_address::Ip::Ipv4(u32::from(v4)),
            std::net::IpAddr::V6(_) => unreachable!("the test endpoint is IPv4"),
        };
        let profile = d::DestinationProfile {
            endpoint: Some(d::WeightedAddr {
                addr: Some(net::TcpAddress {
                    ip: Some(net::IpAddress { ip: Some(ip) }),
                    port: u32::from(self.endpoint.port()),
                }),
                weight: 1,
                ..Default::default()
            }),
            ..Default::default()
        };
        // One answer, then the stream stays open (as the controller's does).
        let stream = futures_util::StreamExt::chain(
            futures_util::stream::iter([Ok(profile)]),
            futures_util::stream::pending(),
        );
        Ok(tonic::Response::new(Box::pin(stream)))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_profiles_endpoint_address_is_dialed_not_the_address_asked_about() {
    let app = backend::http().await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let dst = listener.local_addr().unwrap();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(
                linkerd2_proxy_api::destination::destination_server::DestinationServer::new(
                    ProfileWithEndpoint { endpoint: app.addr },
                ),
            )
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    // The original destination: nothing listens there.
    let (_reserved, asked) = linkerd_tests::refusing_addr();
    let proxy = start_proxy_to(&discovery_env(dst), Some(asked));
    let (status, body) = client::get(proxy.outbound_addr, "/").await;
    assert_eq!(
        (status, body.as_str()),
        (200, "hello"),
        "dialed the profile's endpoint"
    );
}
