//! The inbound policy API end to end: a policy server built from the published
//! `linkerd2-proxy-api` crate's generated server (as Linkerd's policy controller is), a proxy
//! that watches it, and clients that see what the policy allows.
//!
//! The proxy always lets `127.0.0.1` in (its `localhost` authorization), so the clients here
//! connect from other loopback addresses (`127.0.0.2`, `127.0.0.3`).

use linkerd2_proxy_api::{self as api, http_route as h, inbound as pb};
use linkerd_tests::{
    backend, eventually, holds, metric, metric_sum,
    policy::{serve, Policies},
    proxy, scrape,
};
use std::{collections::HashMap, net::SocketAddr, sync::Arc, time::Duration};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// An IPv4 CIDR (`a.b.c.d/n`) as the API writes it.
fn cidr(s: &str) -> api::net::IpNetwork {
    let (ip, len) = s.split_once('/').expect("a CIDR");
    let ip: std::net::Ipv4Addr = ip.parse().expect("an IPv4 address");
    api::net::IpNetwork {
        ip: Some(api::net::IpAddress {
            ip: Some(api::net::ip_address::Ip::Ipv4(u32::from(ip))),
        }),
        prefix_len: len.parse().expect("a prefix length"),
    }
}

fn meta(kind: &str, name: &str) -> Option<api::meta::Metadata> {
    Some(api::meta::Metadata {
        kind: Some(api::meta::metadata::Kind::Resource(api::meta::Resource {
            group: "policy.linkerd.io".into(),
            kind: kind.into(),
            name: name.into(),
            namespace: "default".into(),
            ..Default::default()
        })),
    })
}

/// Unauthenticated clients from `net`.
fn authz_net(net: &str, name: &str) -> pb::Authz {
    pb::Authz {
        networks: vec![pb::Network {
            net: Some(cidr(net)),
            except: vec![],
        }],
        authentication: Some(pb::Authn {
            permit: Some(pb::authn::Permit::Unauthenticated(Default::default())),
        }),
        labels: HashMap::new(),
        metadata: meta("AuthorizationPolicy", name),
    }
}

fn route(name: &str, path: &str, exact: bool, authzs: Vec<pb::Authz>) -> pb::HttpRoute {
    let kind = match exact {
        true => h::path_match::Kind::Exact(path.into()),
        false => h::path_match::Kind::Prefix(path.into()),
    };
    pb::HttpRoute {
        metadata: meta("HTTPRoute", name),
        hosts: vec![],
        authorizations: authzs,
        rules: vec![pb::http_route::Rule {
            matches: vec![h::HttpRouteMatch {
                path: Some(h::PathMatch { kind: Some(kind) }),
                ..Default::default()
            }],
            filters: vec![],
        }],
    }
}

fn server(name: &str, kind: pb::proxy_protocol::Kind, authzs: Vec<pb::Authz>) -> pb::Server {
    pb::Server {
        protocol: Some(pb::ProxyProtocol { kind: Some(kind) }),
        server_ips: vec![],
        authorizations: authzs,
        labels: HashMap::from([
            ("group".into(), "policy.linkerd.io".into()),
            ("kind".into(), "server".into()),
            ("name".into(), name.into()),
        ]),
    }
}

fn detect(
    routes: Vec<pb::HttpRoute>,
    rate_limit: Option<pb::HttpLocalRateLimit>,
) -> pb::proxy_protocol::Kind {
    detect_within(Duration::from_secs(10), routes, rate_limit)
}

/// A `detect` server whose own detect timeout is `timeout`.
fn detect_within(
    timeout: Duration,
    routes: Vec<pb::HttpRoute>,
    rate_limit: Option<pb::HttpLocalRateLimit>,
) -> pb::proxy_protocol::Kind {
    pb::proxy_protocol::Kind::Detect(pb::proxy_protocol::Detect {
        timeout: prost_types::Duration::try_from(timeout).ok(),
        http_routes: routes,
        http_local_rate_limit: rate_limit,
    })
}

/// A TCP connection to `to` from the loopback address `from`.
async fn connect_from(from: &str, to: SocketAddr) -> tokio::net::TcpStream {
    let sock = tokio::net::TcpSocket::new_v4().unwrap();
    sock.bind(format!("{from}:0").parse().unwrap()).unwrap();
    sock.connect(to).await.unwrap()
}

/// An HTTP/1 connection from `from`.
async fn http_from(
    from: &str,
    to: SocketAddr,
) -> hyper::client::conn::http1::SendRequest<http_body_util::Full<bytes::Bytes>> {
    let io = connect_from(from, to).await;
    let (tx, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(io))
        .await
        .unwrap();
    tokio::spawn(conn);
    tx
}

async fn status(
    tx: &mut hyper::client::conn::http1::SendRequest<http_body_util::Full<bytes::Bytes>>,
    path: &str,
) -> u16 {
    tx.ready().await.unwrap();
    let req = http::Request::get(path)
        .header("host", "web.default.svc.cluster.local:8080")
        .body(http_body_util::Full::default())
        .unwrap();
    let rsp = tx.send_request(req).await.unwrap();
    linkerd_tests::client::text(rsp).await.0
}

async fn get_from(from: &str, to: SocketAddr, path: &str) -> u16 {
    status(&mut http_from(from, to).await, path).await
}

fn policy_env(policy: SocketAddr, app_port: u16) -> Vec<(&'static str, String)> {
    vec![
        ("LINKERD2_PROXY_POLICY_SVC_ADDR", policy.to_string()),
        (
            "LINKERD2_PROXY_POLICY_WORKLOAD",
            "{\"ns\":\"default\", \"pod\":\"web-0\"}\n".into(),
        ),
        ("LINKERD2_PROXY_INBOUND_PORTS", app_port.to_string()),
        ("LINKERD2_PROXY_INBOUND_DEFAULT_POLICY", "deny".into()),
    ]
}

fn start(env: &[(&'static str, String)], app: SocketAddr) -> linkerd_app::Proxy {
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    proxy(&env, Some(app))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_routes_authorizations_and_updates() {
    let app = backend::http().await;
    let port = app.addr.port();
    let policies = Policies::default();
    policies.set(
        port,
        server(
            "web-http",
            detect(
                vec![
                    // Open to every network, on this route only.
                    route(
                        "open",
                        "/open",
                        false,
                        vec![authz_net("127.0.0.0/8", "open-authz")],
                    ),
                    // Probes, as the policy controller adds them, pass under `deny`.
                    route(
                        "probe",
                        "/ready",
                        true,
                        vec![authz_net("0.0.0.0/0", "probes")],
                    ),
                    // Only the server's authorizations.
                    route("api", "/api", false, vec![]),
                ],
                None,
            ),
            vec![authz_net("127.0.0.2/32", "web-clients")],
        ),
    );
    let (policy_addr, policy_task) = serve(policies.clone()).await;
    let proxy = start(&policy_env(policy_addr, port), app.addr);
    let inbound = proxy.inbound_addr;

    // A network allowed; another not.
    assert_eq!(get_from("127.0.0.2", inbound, "/api/x").await, 200);
    assert_eq!(get_from("127.0.0.3", inbound, "/api/x").await, 403);
    // A per-route authorization: one path allowed, one refused, for the same client.
    assert_eq!(get_from("127.0.0.3", inbound, "/open").await, 200);
    assert_eq!(
        get_from("127.0.0.3", inbound, "/ready").await,
        200,
        "probes pass under deny"
    );
    // No route: 404.
    assert_eq!(get_from("127.0.0.2", inbound, "/nowhere").await, 404);

    let m = scrape(proxy.admin_addr).await;
    let target = format!("target_addr=\"{}\"", app.addr);
    assert_eq!(
        metric(
            &m,
            "inbound_http_authz_allow_total",
            &[
                &target,
                "srv_kind=\"server\"",
                "srv_name=\"web-http\"",
                "route_kind=\"HTTPRoute\"",
                "route_name=\"api\"",
                "authz_kind=\"AuthorizationPolicy\"",
                "authz_name=\"web-clients\"",
            ]
        ),
        Some(1.0),
        "{m}"
    );
    assert_eq!(
        metric(
            &m,
            "inbound_http_authz_deny_total",
            &["srv_name=\"web-http\"", "route_name=\"api\""]
        ),
        Some(1.0),
        "{m}"
    );
    assert_eq!(
        metric(
            &m,
            "inbound_http_route_not_found_total",
            &["srv_name=\"web-http\""]
        ),
        Some(1.0),
        "{m}"
    );
    // The request metrics carry the decision: the server, route and authorization that let
    // a request in; a refused one counts too, as the client's answer.
    let allowed = [
        "direction=\"inbound\"",
        "srv_kind=\"server\"",
        "srv_name=\"web-http\"",
        &format!("srv_port=\"{port}\""),
        "route_name=\"api\"",
        "authz_name=\"web-clients\"",
    ];
    assert_eq!(metric(&m, "request_total", &allowed), Some(1.0), "{m}");
    assert_eq!(
        metric(
            &m,
            "response_total",
            &[
                &allowed[..],
                &["status_code=\"200\"", "classification=\"success\""]
            ]
            .concat()
        ),
        Some(1.0),
        "{m}"
    );
    assert_eq!(
        metric(
            &m,
            "response_total",
            &[
                "srv_name=\"web-http\"",
                "status_code=\"404\"",
                "error=\"route_not_found\""
            ]
        ),
        Some(1.0),
        "{m}"
    );
    assert_eq!(
        metric_sum(
            &m,
            "request_total",
            &["direction=\"inbound\"", "srv_name=\"web-http\""]
        ),
        5.0,
        "every request, let in or not: {m}"
    );

    // An update applies to a live connection's next request.
    let live = Arc::new(tokio::sync::Mutex::new(
        http_from("127.0.0.3", inbound).await,
    ));
    assert_eq!(status(&mut *live.lock().await, "/api/y").await, 403);
    policies.set(
        port,
        server(
            "web-http",
            detect(vec![route("api", "/api", false, vec![])], None),
            vec![authz_net("127.0.0.0/8", "everyone-local")],
        ),
    );
    eventually(Duration::from_secs(5), || {
        let live = live.clone();
        async move {
            let s = status(&mut *live.lock().await, "/api/y").await;
            holds(s == 200, s)
        }
    })
    .await;

    // The policy server goes away: the cached policy still applies to new connections
    // (under the `deny` default, every request would be refused).
    policy_task.abort();
    let _ = policy_task.await;
    assert_eq!(get_from("127.0.0.3", inbound, "/api/z").await, 200);
    assert_eq!(
        get_from("127.0.0.3", inbound, "/open").await,
        404,
        "the new policy has no /open"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_rate_limit_answers_429() {
    let app = backend::http().await;
    let port = app.addr.port();
    let policies = Policies::default();
    let limit = pb::HttpLocalRateLimit {
        metadata: meta("HTTPLocalRateLimitPolicy", "web-rl"),
        total: Some(pb::http_local_rate_limit::Limit {
            requests_per_second: 1,
        }),
        identity: None,
        overrides: vec![],
    };
    policies.set(
        port,
        server(
            "web-http",
            detect(vec![], Some(limit)),
            vec![authz_net("0.0.0.0/0", "all")],
        ),
    );
    let (policy_addr, _task) = serve(policies).await;
    let proxy = start(&policy_env(policy_addr, port), app.addr);
    let mut tx = http_from("127.0.0.2", proxy.inbound_addr).await;
    let mut statuses = Vec::new();
    for _ in 0..6 {
        statuses.push(status(&mut tx, "/").await);
    }
    assert_eq!(statuses[0], 200, "{statuses:?}");
    assert!(
        statuses.contains(&429),
        "over 1 rps (a one-second burst): {statuses:?}"
    );
    let m = scrape(proxy.admin_addr).await;
    let limited = metric_sum(
        &m,
        "inbound_http_local_ratelimit_total",
        &["srv_name=\"web-http\""],
    );
    assert_eq!(
        limited,
        statuses.iter().filter(|s| **s == 429).count() as f64,
        "{m}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_servers_own_detect_timeout_applies() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    // A server-first app (it greets, as SMTP or MySQL do): the client says nothing until
    // then, so the proxy only forwards once detection gives up.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let app = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let _ = s.write_all(b"220 ready\r\n").await;
                let mut rest = Vec::new();
                let _ = s.read_to_end(&mut rest).await;
            });
        }
    });
    let policies = Policies::default();
    policies.set(
        app.port(),
        server(
            "mail",
            detect_within(Duration::from_millis(200), vec![], None),
            vec![authz_net("0.0.0.0/0", "all")],
        ),
    );
    let (policy_addr, _task) = serve(policies).await;
    let mut env = policy_env(policy_addr, app.port());
    // The proxy's own detect timeout is far longer than the server's.
    env.push(("LINKERD2_PROXY_INBOUND_DETECT_TIMEOUT", "120s".into()));
    let proxy = start(&env, app);
    let mut conn = connect_from("127.0.0.2", proxy.inbound_addr).await;
    let mut greeting = [0u8; 11];
    // Well before the proxy's 120s: the server's 200ms applied.
    tokio::time::timeout(Duration::from_secs(30), conn.read_exact(&mut greeting))
        .await
        .expect("the greeting arrives once the server's detect timeout has passed")
        .unwrap();
    assert_eq!(&greeting, b"220 ready\r\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn opaque_servers_authorize_tcp_connections() {
    let app = backend::tcp_echo().await;
    let port = app.port();
    let policies = Policies::default();
    policies.set(
        port,
        server(
            "db",
            pb::proxy_protocol::Kind::Opaque(Default::default()),
            vec![authz_net("127.0.0.2/32", "db-clients")],
        ),
    );
    let (policy_addr, _task) = serve(policies).await;
    let proxy = start(&policy_env(policy_addr, port), app);

    let mut s = connect_from("127.0.0.2", proxy.inbound_addr).await;
    // Client-first bytes that are not HTTP: opaque, no detection wait.
    s.write_all(b"PING").await.unwrap();
    s.shutdown().await.unwrap();
    let mut got = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut got))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got, b"PINGbye");

    let mut s = connect_from("127.0.0.3", proxy.inbound_addr).await;
    let _ = s.write_all(b"PING").await;
    let mut got = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut got)).await;
    assert!(
        matches!(read, Ok(Ok(0)) | Ok(Err(_))),
        "closed: {read:?} {got:?}"
    );

    let m = scrape(proxy.admin_addr).await;
    assert_eq!(
        metric(
            &m,
            "inbound_tcp_authz_allow_total",
            &["srv_name=\"db\"", "authz_name=\"db-clients\""]
        ),
        Some(1.0),
        "{m}"
    );
    assert_eq!(
        metric(&m, "inbound_tcp_authz_deny_total", &["srv_name=\"db\""]),
        Some(1.0),
        "{m}"
    );
    // The TCP metrics of both connections carry the server they were decided under, and
    // every byte the allowed one's client sent.
    let srv = [
        "direction=\"inbound\"",
        "peer=\"src\"",
        "srv_group=\"policy.linkerd.io\"",
        "srv_kind=\"server\"",
        "srv_name=\"db\"",
        &format!("srv_port=\"{port}\""),
    ];
    assert_eq!(metric_sum(&m, "tcp_open_total", &srv), 2.0, "{m}");
    assert!(metric_sum(&m, "tcp_read_bytes_total", &srv) >= 4.0, "{m}");
    eventually(Duration::from_secs(5), || async {
        let m = scrape(proxy.admin_addr).await;
        let closed = metric_sum(&m, "tcp_close_total", &srv);
        let open = metric_sum(&m, "tcp_open_connections", &srv);
        holds(closed == 2.0 && open == 0.0, (closed, open))
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_tcp_connection_is_terminated() {
    let app = backend::tcp_echo().await;
    let port = app.port();
    let policies = Policies::default();
    let opaque = || pb::proxy_protocol::Kind::Opaque(Default::default());
    policies.set(
        port,
        server("db", opaque(), vec![authz_net("127.0.0.0/8", "local")]),
    );
    let (policy_addr, _task) = serve(policies.clone()).await;
    let proxy = start(&policy_env(policy_addr, port), app);

    let mut kept = connect_from("127.0.0.3", proxy.inbound_addr).await;
    let mut revoked = connect_from("127.0.0.2", proxy.inbound_addr).await;
    for s in [&mut kept, &mut revoked] {
        s.write_all(b"PING").await.unwrap();
        let mut echo = [0u8; 4];
        s.read_exact(&mut echo).await.unwrap();
        assert_eq!(&echo, b"PING");
    }
    // The update leaves 127.0.0.2 out: its live connection is closed; the other stays.
    policies.set(
        port,
        server("db", opaque(), vec![authz_net("127.0.0.3/32", "only-3")]),
    );
    let mut rest = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), revoked.read_to_end(&mut rest)).await;
    assert!(
        matches!(read, Ok(Ok(0)) | Ok(Err(_))),
        "closed without the app's goodbye: {read:?} {rest:?}"
    );
    kept.write_all(b"PONG").await.unwrap();
    let mut echo = [0u8; 4];
    kept.read_exact(&mut echo).await.unwrap();
    assert_eq!(&echo, b"PONG");
    let m = scrape(proxy.admin_addr).await;
    assert_eq!(
        metric(
            &m,
            "inbound_tcp_authz_terminate_total",
            &["srv_name=\"db\""]
        ),
        Some(1.0),
        "{m}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_policy_never_fails_open() {
    let app = backend::http().await;
    let port = app.addr.port();
    let policies = Policies::default();
    // A route regex that does not compile, as the port's first policy.
    let mut bad = route("bad", "/", false, vec![]);
    bad.rules[0].matches[0].path = Some(h::PathMatch {
        kind: Some(h::path_match::Kind::Regex("([".into())),
    });
    policies.set(
        port,
        server(
            "web-http",
            detect(vec![bad], None),
            vec![authz_net("0.0.0.0/0", "all")],
        ),
    );
    let (policy_addr, _task) = serve(policies.clone()).await;
    let mut env = policy_env(policy_addr, port);
    // Even where the default would let everyone in.
    env.push((
        "LINKERD2_PROXY_INBOUND_DEFAULT_POLICY",
        "all-unauthenticated".into(),
    ));
    let proxy = start(&env, app.addr);
    assert_eq!(
        get_from("127.0.0.2", proxy.inbound_addr, "/").await,
        500,
        "refused, not open"
    );
    // A valid policy replaces it.
    policies.set(
        port,
        server(
            "web-http",
            detect(vec![], None),
            vec![authz_net("127.0.0.0/8", "local")],
        ),
    );
    eventually(Duration::from_secs(5), || async {
        let s = get_from("127.0.0.2", proxy.inbound_addr, "/").await;
        holds(s == 200, s)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_requiring_mesh_identities_by_suffix() {
    use linkerd_tests::ca::{self, id, CaControl};
    let ctl = CaControl::start("24h", &["server", "client"]).await;
    let app = backend::http().await;
    let port = app.addr.port();
    let policies = Policies::default();
    let suffix = pb::Authz {
        networks: vec![pb::Network {
            net: Some(cidr("0.0.0.0/0")),
            except: vec![],
        }],
        authentication: Some(pb::Authn {
            permit: Some(pb::authn::Permit::MeshTls(pb::authn::PermitMeshTls {
                clients: Some(pb::authn::permit_mesh_tls::Clients::Identities(
                    pb::authn::permit_mesh_tls::PermitClientIdentities {
                        identities: vec![],
                        suffixes: vec![pb::IdentitySuffix {
                            parts: [
                                "ns",
                                "serviceaccount",
                                "identity",
                                "linkerd",
                                "cluster",
                                "local",
                            ]
                            .map(String::from)
                            .to_vec(),
                        }],
                    },
                )),
            })),
        }),
        labels: HashMap::new(),
        metadata: meta("MeshTLSAuthentication", "ns-clients"),
    };
    policies.set(port, server("web-http", detect(vec![], None), vec![suffix]));
    let (policy_addr, _task) = serve(policies).await;
    let mut env = ctl.proxy_env("server");
    env.extend(
        policy_env(policy_addr, port)
            .into_iter()
            .map(|(k, v)| (k.to_string(), v)),
    );
    let proxy = ca::start_proxy(&env, Some(app.addr));
    ca::ready(proxy.admin_addr).await;

    // Plaintext: no identity, refused.
    assert_eq!(get_from("127.0.0.2", proxy.inbound_addr, "/").await, 403);
    // TLS with this proxy but no client certificate: no identity, refused.
    let get_tls = |cert: Option<&'static str>| {
        let config = ctl.client_config(cert);
        let inbound = proxy.inbound_addr;
        async move {
            let io = connect_from("127.0.0.2", inbound).await;
            let name = rustls::pki_types::ServerName::try_from(id("server")).unwrap();
            let tls = tokio_rustls::TlsConnector::from(config)
                .connect(name, io)
                .await
                .expect("TLS with the server proxy");
            let (mut tx, conn) =
                hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls))
                    .await
                    .unwrap();
            tokio::spawn(conn);
            let req = http::Request::get("/headers")
                .header("host", "web")
                .body(http_body_util::Full::<bytes::Bytes>::default())
                .unwrap();
            linkerd_tests::client::text(tx.send_request(req).await.unwrap()).await
        }
    };
    assert_eq!(get_tls(None).await.0, 403);
    // An identity under the suffix: allowed, and the app learns it.
    let (status, body) = get_tls(Some("client")).await;
    assert_eq!(status, 200, "{body}");
    assert!(
        body.contains(&format!("l5d-client-id: {}", id("client"))),
        "{body}"
    );

    let m = scrape(proxy.admin_addr).await;
    assert_eq!(
        metric(
            &m,
            "inbound_http_authz_allow_total",
            &[
                "authz_kind=\"MeshTLSAuthentication\"",
                "authz_name=\"ns-clients\"",
                "tls=\"true\""
            ]
        ),
        Some(1.0),
        "{m}"
    );
    assert_eq!(
        metric_sum(
            &m,
            "inbound_http_authz_deny_total",
            &["srv_name=\"web-http\""]
        ),
        2.0,
        "{m}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_port_is_under_the_inbound_policy() {
    let app = backend::http().await;
    let policies = Policies::default();
    let (policy_addr, _task) = serve(policies.clone()).await;
    let proxy = start(&policy_env(policy_addr, app.addr.port()), app.addr);
    let admin = proxy.admin_addr;
    // Under `deny`, with no server for the admin port: refused (loopback itself always passes).
    assert_eq!(get_from("127.0.0.2", admin, "/ready").await, 403);
    assert_eq!(get_from("127.0.0.1", admin, "/ready").await, 200);
    // The policy controller's probe route for the admin port lets the kubelet in.
    policies.set(
        admin.port(),
        server(
            "admin",
            detect(
                vec![route(
                    "probe",
                    "/ready",
                    true,
                    vec![authz_net("0.0.0.0/0", "probes")],
                )],
                None,
            ),
            vec![],
        ),
    );
    eventually(Duration::from_secs(5), || async {
        let s = get_from("127.0.0.2", admin, "/ready").await;
        holds(s == 200, s)
    })
    .await;
    assert_eq!(
        get_from("127.0.0.2", admin, "/metrics").await,
        404,
        "no route"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn linkerd_control_serves_policy_from_its_mesh_file() {
    use linkerd_tests::ca::CaControl;
    let ctl = CaControl::start("24h", &["web"]).await;
    let app = backend::http().await;
    let port = app.addr.port();
    ctl.write_mesh(&format!(
        "services: []\nservers:\n  - name: web-http\n    port: {port}\n    authorizations:\n      - name: web-clients\n        networks: [127.0.0.2/32]\n    routes:\n      - name: open\n        path_prefix: /open\n        authorizations:\n          - name: anyone\n      - name: api\n        path_prefix: /api\n"
    ));
    let mut env = policy_env(ctl.addr, port);
    env.retain(|(k, _)| *k != "LINKERD2_PROXY_POLICY_SVC_ADDR");
    env.push(("LINKERD2_PROXY_POLICY_SVC_ADDR", ctl.addr.to_string()));
    let proxy = start(&env, app.addr);
    // The file is reloaded asynchronously, and the first watch may find no server yet.
    eventually(Duration::from_secs(10), || async {
        let s = get_from("127.0.0.2", proxy.inbound_addr, "/api/x").await;
        holds(s == 200, s)
    })
    .await;
    assert_eq!(
        get_from("127.0.0.3", proxy.inbound_addr, "/api/x").await,
        403
    );
    assert_eq!(
        get_from("127.0.0.3", proxy.inbound_addr, "/open").await,
        200
    );
    assert_eq!(
        get_from("127.0.0.2", proxy.inbound_addr, "/else").await,
        404
    );
}
