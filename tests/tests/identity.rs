//! Identity and mTLS end to end: `linkerd-control` with a CA (a child process), proxies that
//! get certificates from it, and apps behind them, all on loopback. Two proxies mesh without
//! iptables through opaque transport: the client proxy dials the server proxy's inbound port
//! with mTLS and a header naming the app's port.

use bytes::Bytes;
use http::Request;
use http_body_util::Full;
use hyper_util::rt::TokioIo;
use linkerd_tests::{
    backend,
    ca::{id, ready, start_proxy as start, tls_connect, CaControl},
    client, eventually, holds, metric, metric_sum, scrape,
};
use std::{net::SocketAddr, sync::Arc, time::Duration};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

const WEB: &str = "web.ns.svc.cluster.local";

fn with(mut env: Vec<(String, String)>, extra: &[(&str, &str)]) -> Vec<(String, String)> {
    env.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    env
}

/// The mesh file's services: `web` on 8080 is `app`, behind the proxy named `server` whose
/// inbound port takes opaque transport.
fn web_service(app: SocketAddr, server: &str, inbound: SocketAddr) -> String {
    format!(
        "services:\n  - name: {WEB}\n    port: 8080\n    endpoints:\n      - addr: {app}\n        identity: {}\n        opaque_transport_port: {}\n",
        id(server),
        inbound.port()
    )
}

/// Sends `GET http://web.ns.svc.cluster.local:8080{path}` through the explicit proxy `outbound`.
async fn get_web(outbound: SocketAddr, path: &str) -> (u16, String) {
    let mut tx = client::http1::<Full<Bytes>>(outbound).await;
    let req = Request::get(format!("http://{WEB}:8080{path}"))
        .body(Full::default())
        .unwrap();
    match tx.send_request(req).await {
        Ok(rsp) => client::text(rsp).await,
        Err(_) => (0, String::new()),
    }
}

/// `GET /` of `web` through `outbound` once it succeeds (the mesh file is reloaded
/// asynchronously): its status and body.
async fn web_served(outbound: SocketAddr) -> (u16, String) {
    eventually(Duration::from_secs(5), || async {
        let last = get_web(outbound, "/").await;
        holds(last.0 == 200, last.clone()).map(|()| last)
    })
    .await
}

/// One HTTP/1 request over an already connected stream (plaintext or TLS).
async fn get_over<I>(io: I, path: &str) -> Result<(u16, String, Option<String>), hyper::Error>
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut tx, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io)).await?;
    tokio::spawn(conn);
    let req = Request::get(path)
        .header("host", "app")
        .body(Full::<Bytes>::default())
        .unwrap();
    let rsp = tx.send_request(req).await?;
    let err = rsp
        .headers()
        .get("l5d-proxy-error")
        .map(|v| v.to_str().unwrap().to_string());
    let (status, body) = client::text(rsp).await;
    Ok((status, body, err))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_proxies_mesh_with_mtls() {
    let ctl = CaControl::start("24h", &["client", "server"]).await;
    let app = backend::http().await;
    let server = start(&ctl.proxy_env("server"), None);
    ctl.write_mesh(&web_service(app.addr, "server", server.inbound_addr));
    // The client proxy reaches the control plane over TLS, verifying its identity.
    let control_id = linkerd_control::tls::DEFAULT_IDENTITY;
    let client_env = with(
        ctl.proxy_env("client"),
        &[
            ("LINKERD2_PROXY_DESTINATION_SVC_ADDR", &ctl.addr.to_string()),
            ("LINKERD2_PROXY_DESTINATION_SVC_NAME", control_id),
            ("LINKERD2_PROXY_IDENTITY_SVC_NAME", control_id),
        ],
    );
    let client = start(&client_env, None);
    ready(server.admin_addr).await;
    ready(client.admin_addr).await;

    // The mesh file is reloaded asynchronously: retry until the service resolves.
    assert_eq!(
        web_served(client.outbound_addr).await,
        (200, "hello".into())
    );
    for _ in 0..4 {
        assert_eq!(get_web(client.outbound_addr, "/").await.0, 200);
    }
    // HTTP/2 from the app is carried as HTTP/2 over the meshed connection.
    let mut h2 = client::http2::<Full<Bytes>>(client.outbound_addr).await;
    let req = Request::get(format!("http://{WEB}:8080/headers"))
        .body(Full::default())
        .unwrap();
    let (status, body) = client::text(h2.send_request(req).await.unwrap()).await;
    assert_eq!(status, 200);
    assert!(
        body.lines().next().unwrap().ends_with("/headers HTTP/2.0"),
        "{body}"
    );
    // The app learns the client proxy's verified identity; what the client wrote is dropped.
    let forged = Request::get(format!("http://{WEB}:8080/headers"))
        .header(
            "l5d-client-id",
            "admin.ns.serviceaccount.identity.linkerd.cluster.local",
        )
        .body(Full::default())
        .unwrap();
    let (status, body) = client::text(h2.send_request(forged).await.unwrap()).await;
    assert_eq!(status, 200);
    let ids: Vec<&str> = body
        .lines()
        .filter_map(|l| l.strip_prefix("l5d-client-id: "))
        .collect();
    assert_eq!(ids, [id("client")], "{body}");

    // The server proxy saw the client proxy's identity; the client proxy verified the server's.
    let m = scrape(server.admin_addr).await;
    let client_id = format!("client_id=\"{}\"", id("client"));
    assert!(
        metric_sum(
            &m,
            "request_total",
            &["direction=\"inbound\"", "tls=\"true\"", &client_id]
        ) >= 6.0,
        "{m}"
    );
    assert!(
        metric_sum(
            &m,
            "tcp_open_total",
            &[
                "direction=\"inbound\"",
                "peer=\"src\"",
                "tls=\"true\"",
                &client_id
            ]
        ) >= 1.0,
        "{m}"
    );
    let expiry = metric(
        &m,
        "control_identity_cert_expiration_timestamp_seconds",
        &[],
    )
    .unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    assert!(expiry > now + 23.0 * 3600.0, "{expiry} vs {now}");
    let refreshed = metric(&m, "control_identity_cert_refresh_timestamp_seconds", &[]).unwrap();
    assert!(
        (now - 600.0..=now + 1.0).contains(&refreshed),
        "{refreshed} vs {now}"
    );
    let m = scrape(client.admin_addr).await;
    let server_id = format!("server_id=\"{}\"", id("server"));
    assert!(
        metric_sum(
            &m,
            "tcp_open_total",
            &[
                "direction=\"outbound\"",
                "peer=\"dst\"",
                "tls=\"true\"",
                &server_id
            ]
        ) >= 1.0,
        "{m}"
    );
    assert!(
        metric_sum(
            &m,
            "request_total",
            &["direction=\"outbound\"", "tls=\"true\"", &server_id]
        ) >= 6.0,
        "{m}"
    );
    assert_eq!(
        metric(
            &m,
            "control_identity_cert_refreshes_total",
            &["result=\"ok\""]
        ),
        Some(1.0)
    );
    // Its gRPC requests to the control plane (Certify, Get), over TLS to its identity:
    // counted, timed, and the completed Certify a success.
    let addr = format!("addr=\"{}\"", ctl.addr);
    let server = format!("server_id=\"{control_id}\"");
    let ctl_labels = [addr.as_str(), "tls=\"true\"", server.as_str()];
    assert!(
        metric_sum(&m, "control_request_total", &ctl_labels) >= 2.0,
        "{m}"
    );
    assert!(
        metric_sum(&m, "control_response_latency_ms_count", &ctl_labels) >= 2.0,
        "{m}"
    );
    let ok = [
        &ctl_labels[..],
        &["classification=\"success\"", "grpc_status=\"0\""],
    ]
    .concat();
    assert!(metric_sum(&m, "control_response_total", &ok) >= 1.0, "{m}");
}

/// `GET uri` with these headers on `tx`: the status, the response's headers and its body.
async fn send_web(
    tx: &mut hyper::client::conn::http1::SendRequest<Full<Bytes>>,
    uri: &str,
    headers: &[(&str, &str)],
) -> (u16, http::HeaderMap, String) {
    let (status, h, body) = client::send(tx, Request::get(uri), headers).await;
    (status, h, String::from_utf8_lossy(&body).into_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn l5d_headers_between_meshed_proxies() {
    let ctl = CaControl::start("24h", &["client", "server"]).await;
    let app = backend::http().await;
    // Inbound authority labels are opt-in (`unsafe`), as linkerd2-proxy's.
    let server_env = with(
        ctl.proxy_env("server"),
        &[("LINKERD2_PROXY_INBOUND_METRICS_AUTHORITY_LABELS", "unsafe")],
    );
    let server = start(&server_env, None);
    // `dead` is behind the same proxy, on a port where nothing listens.
    let (_hold, dead) = linkerd_tests::refusing_addr();
    ctl.write_mesh(&format!(
        "{}  - name: dead.ns.svc.cluster.local\n    port: 8080\n    endpoints:\n      - addr: {dead}\n        identity: {}\n        opaque_transport_port: {}\n",
        web_service(app.addr, "server", server.inbound_addr),
        id("server"),
        server.inbound_addr.port()
    ));
    let client_env = with(
        ctl.proxy_env("client"),
        &[("LINKERD2_PROXY_DESTINATION_SVC_ADDR", &ctl.addr.to_string())],
    );
    let client = start(&client_env, None);
    ready(server.admin_addr).await;
    ready(client.admin_addr).await;
    web_served(client.outbound_addr).await;

    let web = format!("http://{WEB}:8080/headers");
    let mut tx = client::http1::<Full<Bytes>>(client.outbound_addr).await;
    // The endpoint is who the app requires: forwarded, without the header; the server's app
    // sees the logical name the client proxy routed by.
    let (status, _, body) = send_web(
        &mut tx,
        &web,
        &[("l5d-require-id", &id("server")), ("host", "alias.example")],
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert!(!body.contains("l5d-require-id"), "{body}");
    assert!(
        body.contains(&format!("l5d-dst-canonical: {WEB}:8080\n")),
        "{body}"
    );
    // An absolute-form request goes with its target as Host (RFC 9112 section 3.2.2), whatever
    // Host the app wrote.
    assert!(body.contains(&format!("host: {WEB}:8080\n")), "{body}");
    // The server proxy counts it under the logical name, not the Host the app wrote.
    let m = scrape(server.admin_addr).await;
    assert!(
        metric_sum(
            &m,
            "request_total",
            &[
                "direction=\"inbound\"",
                &format!("authority=\"{WEB}:8080\"")
            ]
        ) >= 1.0,
        "{m}"
    );
    assert_eq!(
        metric_sum(&m, "request_total", &["authority=\"alias.example\""]),
        0.0,
        "{m}"
    );

    // Anyone else: 502 before any byte is sent, and the app's connection is closed.
    let (status, h, _) = send_web(&mut tx, &web, &[("l5d-require-id", &id("other"))]).await;
    assert_eq!(status, 502);
    let err = h["l5d-proxy-error"].to_str().unwrap();
    assert!(
        err.contains(&id("other")) && err.contains(&id("server")),
        "{err}"
    );
    assert_eq!(h["connection"], "close");
    assert_eq!(h["l5d-proxy-connection"], "close");
    assert!(tx.ready().await.is_err(), "the proxy closed the connection");

    // The server proxy fails to reach its app and closes: the client proxy takes its
    // `l5d-proxy-connection` off and closes the app's HTTP/1.1 connection in turn.
    let mut tx = client::http1::<Full<Bytes>>(client.outbound_addr).await;
    let (status, h, _) = send_web(&mut tx, "http://dead.ns.svc.cluster.local:8080/", &[]).await;
    assert_eq!(status, 502);
    assert!(h.get("l5d-proxy-connection").is_none(), "{h:?}");
    assert!(
        h.get("l5d-proxy-error").is_none(),
        "the peer's error is not the app's: {h:?}"
    );
    assert_eq!(h["connection"], "close", "{h:?}");
    assert!(tx.ready().await.is_err(), "the proxy closed the connection");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pods_own_addresses_are_reached_without_mtls() {
    let ctl = CaControl::start("24h", &["client"]).await;
    let app = backend::http().await;
    // Discovery names an identity for an endpoint that is this pod's own address (its
    // plaintext app): with `INBOUND_IPS` it is reached without mTLS, as upstream does.
    ctl.write_mesh(&format!(
        "services:\n  - name: {WEB}\n    port: 8080\n    endpoints:\n      - addr: {}\n        identity: {}\n",
        app.addr,
        id("client")
    ));
    let env = with(
        ctl.proxy_env("client"),
        &[
            ("LINKERD2_PROXY_DESTINATION_SVC_ADDR", &ctl.addr.to_string()),
            ("LINKERD2_PROXY_INBOUND_IPS", "127.0.0.1"),
        ],
    );
    let client = start(&env, None);
    ready(client.admin_addr).await;
    assert_eq!(
        web_served(client.outbound_addr).await,
        (200, "hello".into())
    );
    let m = scrape(client.admin_addr).await;
    assert!(
        metric_sum(
            &m,
            "request_total",
            &["direction=\"outbound\"", "tls=\"no_identity\""]
        ) >= 1.0,
        "{m}"
    );
    assert_eq!(
        metric_sum(
            &m,
            "request_total",
            &["direction=\"outbound\"", "tls=\"true\""]
        ),
        0.0,
        "{m}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn meshed_tcp_uses_opaque_transport() {
    let ctl = CaControl::start("24h", &["client", "server"]).await;
    let echo = backend::tcp_echo().await;
    let server = start(&ctl.proxy_env("server"), None);
    // The echo server is an endpoint of a service; the client app connects to it directly
    // (as if redirected), and the client proxy learns its identity from the profile.
    ctl.write_mesh(&format!(
        "services:\n  - name: db.ns.svc.cluster.local\n    port: {}\n    endpoints:\n      - addr: {echo}\n        identity: {}\n        opaque_transport_port: {}\n",
        echo.port(),
        id("server"),
        server.inbound_addr.port()
    ));
    let client_env = with(
        ctl.proxy_env("client"),
        &[("LINKERD2_PROXY_DESTINATION_SVC_ADDR", &ctl.addr.to_string())],
    );
    let client = start(&client_env, Some(echo));
    ready(server.admin_addr).await;
    ready(client.admin_addr).await;

    let labels = ["direction=\"inbound\"", "peer=\"src\"", "tls=\"true\""];
    let client_id = format!("client_id=\"{}\"", id("client"));
    let mut l = labels.to_vec();
    l.push(&client_id);
    // The mesh file is reloaded asynchronously: until the client proxy learns the echo
    // server's identity, its connections go there directly, in plaintext.
    eventually(Duration::from_secs(5), || async {
        let mut s = tokio::net::TcpStream::connect(client.outbound_addr)
            .await
            .unwrap();
        s.write_all(b"ping over mtls").await.unwrap();
        s.shutdown().await.unwrap();
        let mut got = Vec::new();
        tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut got))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(got, b"ping over mtlsbye");
        let m = scrape(server.admin_addr).await;
        let meshed = metric_sum(&m, "tcp_open_total", &l);
        holds(meshed >= 1.0, m)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_from_another_ca_is_refused_at_the_handshake() {
    let ctl = CaControl::start("24h", &["server", "client"]).await;
    let rogue = CaControl::start("24h", &["client"]).await;
    let app = backend::http().await;
    let server = start(&ctl.proxy_env("server"), Some(app.addr));
    ready(server.admin_addr).await;

    // Trusts the real CA (so it accepts the server) but presents a certificate from another.
    let mut config = (*ctl.client_config(None)).clone();
    config.client_auth_cert_resolver = rogue
        .client_config(Some("client"))
        .client_auth_cert_resolver
        .clone();
    let config = Arc::new(config);
    let res = match tls_connect(server.inbound_addr, &id("server"), config).await {
        Err(_) => None,
        Ok(tls) => Some(get_over(tls, "/").await),
    };
    assert!(
        !matches!(res, Some(Ok(_))),
        "a rogue client certificate got an answer: {res:?}"
    );
    assert_eq!(app.requests(), 0);
    // The server finishes its side of the handshake after the client: wait for the count.
    eventually(Duration::from_secs(5), || async {
        let m = scrape(server.admin_addr).await;
        let failures = metric(&m, "inbound_tls_handshake_failures_total", &[]);
        holds(failures == Some(1.0), failures)
    })
    .await;

    // The same client with a certificate from the real CA gets through.
    let tls = tls_connect(
        server.inbound_addr,
        &id("server"),
        ctl.client_config(Some("client")),
    )
    .await
    .unwrap();
    let (status, body, _) = get_over(tls, "/").await.unwrap();
    assert_eq!((status, body.as_str()), (200, "hello"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn traffic_continues_while_certificates_rotate() {
    // 10s certificates, renewed at 70% (7s): several rotations in 25s.
    let ctl = CaControl::start("10s", &["client", "server"]).await;
    let app = backend::http().await;
    let fast = [("LINKERD2_PROXY_IDENTITY_MIN_REFRESH", "1s")];
    let server = start(&with(ctl.proxy_env("server"), &fast), None);
    ctl.write_mesh(&web_service(app.addr, "server", server.inbound_addr));
    let client_env = with(
        ctl.proxy_env("client"),
        &[
            ("LINKERD2_PROXY_DESTINATION_SVC_ADDR", &ctl.addr.to_string()),
            ("LINKERD2_PROXY_IDENTITY_MIN_REFRESH", "1s"),
            // New connections (so new handshakes) keep being made as certificates change.
            (
                "LINKERD2_PROXY_OUTBOUND_HTTP1_CONNECTION_POOL_IDLE_TIMEOUT",
                "1s",
            ),
        ],
    );
    let client = start(&client_env, None);
    ready(server.admin_addr).await;
    ready(client.admin_addr).await;
    eventually(Duration::from_secs(5), || async {
        let (status, body) = get_web(client.outbound_addr, "/").await;
        holds(status == 200, body)
    })
    .await;

    let deadline = tokio::time::Instant::now() + Duration::from_secs(25);
    let (mut ok, mut failed) = (0, Vec::new());
    let mut i = 0u32;
    // Requests at a steady pace (40 a second) while certificates rotate underneath.
    let mut pace = tokio::time::interval(Duration::from_millis(25));
    while tokio::time::Instant::now() < deadline {
        pace.tick().await;
        let (status, body) = get_web(client.outbound_addr, "/").await;
        if status == 200 {
            ok += 1;
        } else {
            failed.push((i, status, body));
        }
        i += 1;
        // Every tenth request, the pooled connections are let expire, so both reused and new
        // mTLS connections are exercised.
        if i.is_multiple_of(10) {
            eventually(Duration::from_secs(5), || async {
                let m = scrape(client.admin_addr).await;
                let open = metric_sum(
                    &m,
                    "http_pool_connections_open",
                    &["direction=\"outbound\""],
                );
                holds(open == 0.0, open)
            })
            .await;
        }
    }
    assert!(failed.is_empty(), "{} ok, failures: {failed:?}", ok);
    assert!(ok > 100, "{ok} requests");
    for p in [&server, &client] {
        let m = scrape(p.admin_addr).await;
        let refreshes = metric(
            &m,
            "control_identity_cert_refreshes_total",
            &["result=\"ok\""],
        )
        .unwrap();
        assert!(refreshes >= 3.0, "{refreshes} certificates in 25s:\n{m}");
        assert_eq!(
            metric(
                &m,
                "control_identity_cert_refreshes_total",
                &["result=\"error\""]
            ),
            Some(0.0)
        );
    }
    // More than one mTLS connection was made, so rotated certificates were used.
    let m = scrape(client.admin_addr).await;
    let opened = metric_sum(&m, "tcp_open_total", &["peer=\"dst\"", "tls=\"true\""]);
    assert!(opened >= 3.0, "{opened} mTLS connections");
}

/// An app speaking its own TLS: a rustls server with a self-signed certificate for
/// `app.example.com` that echoes one line.
async fn app_tls_server() -> (SocketAddr, Arc<rustls::ClientConfig>) {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let cert = rcgen::CertificateParams::new(vec!["app.example.com".into()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let server = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![cert.der().clone()],
            rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
        )
        .unwrap();
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert.der().clone()).unwrap();
    let client = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(server));
    tokio::spawn(async move {
        while let Ok((s, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                if let Ok(mut tls) = acceptor.accept(s).await {
                    let mut buf = [0u8; 64];
                    if let Ok(n) = tls.read(&mut buf).await {
                        let _ = tls.write_all(b"app says: ").await;
                        let _ = tls.write_all(&buf[..n]).await;
                        let _ = tls.shutdown().await;
                    }
                }
            });
        }
    });
    (addr, Arc::new(client))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn app_tls_for_another_name_passes_through_untouched() {
    let ctl = CaControl::start("24h", &["server"]).await;
    let (app, app_client) = app_tls_server().await;
    // The server proxy, with an identity, in front of the TLS app.
    let server = start(&ctl.proxy_env("server"), Some(app));
    ready(server.admin_addr).await;

    // The client verifies the app's own certificate end to end through the proxy.
    let mut tls = tls_connect(server.inbound_addr, "app.example.com", app_client)
        .await
        .expect("the app's handshake, through the proxy");
    tls.write_all(b"hello").await.unwrap();
    let mut got = Vec::new();
    tls.read_to_end(&mut got).await.unwrap();
    assert_eq!(got, b"app says: hello");

    let m = scrape(server.admin_addr).await;
    assert!(
        metric_sum(
            &m,
            "tcp_open_total",
            &["direction=\"inbound\"", "peer=\"src\"", "tls=\"opaque\""]
        ) >= 1.0,
        "{m}"
    );
    assert_eq!(
        metric(&m, "inbound_tls_handshake_failures_total", &[]),
        Some(0.0)
    );
}

/// What each kind of client gets from a server proxy with `policy` in front of an HTTP app.
#[derive(Debug, PartialEq)]
struct Outcome {
    plaintext: u16,
    tls_without_identity: u16,
    authenticated: u16,
}

async fn try_clients(ctl: &CaControl, env: &[(&str, &str)]) -> (Outcome, String) {
    let app = backend::http().await;
    let server = start(&with(ctl.proxy_env("server"), env), Some(app.addr));
    ready(server.admin_addr).await;
    let plain = tokio::net::TcpStream::connect(server.inbound_addr)
        .await
        .unwrap();
    let status = |r: Result<(u16, String, Option<String>), hyper::Error>| match r {
        Ok((s, _, err)) => {
            assert_eq!(s == 403, err.is_some(), "a 403 carries l5d-proxy-error");
            s
        }
        Err(_) => 0,
    };
    let plaintext = status(get_over(plain, "/").await);
    let tls = tls_connect(server.inbound_addr, &id("server"), ctl.client_config(None))
        .await
        .unwrap();
    let tls_without_identity = status(get_over(tls, "/").await);
    let mtls = tls_connect(
        server.inbound_addr,
        &id("server"),
        ctl.client_config(Some("client")),
    )
    .await
    .unwrap();
    let authenticated = status(get_over(mtls, "/").await);
    let outcome = Outcome {
        plaintext,
        tls_without_identity,
        authenticated,
    };
    (outcome, scrape(server.admin_addr).await)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_policy_mode_allows_and_denies_the_right_clients() {
    let ctl = CaControl::start("24h", &["server", "client"]).await;
    let o = |plaintext, tls_without_identity, authenticated| Outcome {
        plaintext,
        tls_without_identity,
        authenticated,
    };
    let local = "127.0.0.0/8";
    let elsewhere = "10.0.0.0/8";
    type Case<'a> = (&'a str, Vec<(&'a str, &'a str)>, Outcome);
    let cases: Vec<Case> = vec![
        ("all-unauthenticated", vec![], o(200, 200, 200)),
        ("all-authenticated", vec![], o(403, 403, 200)),
        (
            "cluster-authenticated",
            vec![("LINKERD2_PROXY_POLICY_CLUSTER_NETWORKS", local)],
            o(403, 403, 200),
        ),
        (
            "cluster-authenticated",
            vec![("LINKERD2_PROXY_POLICY_CLUSTER_NETWORKS", elsewhere)],
            o(403, 403, 403),
        ),
        (
            "cluster-unauthenticated",
            vec![("LINKERD2_PROXY_POLICY_CLUSTER_NETWORKS", local)],
            o(200, 200, 200),
        ),
        (
            "cluster-unauthenticated",
            vec![("LINKERD2_PROXY_POLICY_CLUSTER_NETWORKS", elsewhere)],
            o(403, 403, 403),
        ),
        ("deny", vec![], o(403, 403, 403)),
        ("audit", vec![], o(200, 200, 200)),
    ];
    for (mode, extra, want) in cases {
        let mut env = vec![("LINKERD2_PROXY_INBOUND_DEFAULT_POLICY", mode)];
        env.extend(extra.iter().copied());
        let (got, m) = try_clients(&ctl, &env).await;
        assert_eq!(got, want, "{mode} {extra:?}");
        let denied = metric_sum(&m, "inbound_http_authz_deny_total", &[]);
        let audited = metric_sum(&m, "inbound_http_authz_audit_total", &[]);
        let refused = [got.plaintext, got.tls_without_identity, got.authenticated]
            .iter()
            .filter(|s| **s == 403)
            .count();
        assert_eq!(denied, refused as f64, "{mode}: {m}");
        if mode == "audit" {
            // Plaintext and TLS without an identity would be refused by all-authenticated.
            assert_eq!(audited, 2.0, "{m}");
            assert!(
                metric(
                    &m,
                    "inbound_http_authz_audit_total",
                    &[
                        "srv_kind=\"default\"",
                        "srv_name=\"audit\"",
                        "tls=\"no_identity\""
                    ]
                )
                .is_some(),
                "{m}"
            );
        }
        if mode == "all-authenticated" {
            assert!(
                metric(
                    &m,
                    "inbound_http_authz_deny_total",
                    &[
                        "srv_kind=\"default\"",
                        "srv_name=\"all-authenticated\"",
                        "route_name=\"default\"",
                        "tls=\"true\""
                    ]
                )
                .is_some(),
                "{m}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn port_overrides_require_identity_or_tls() {
    let ctl = CaControl::start("24h", &["server", "client"]).await;
    // The app's port is whatever the backend got: override every port.
    let (got, _) = try_clients(
        &ctl,
        &[("LINKERD2_PROXY_INBOUND_PORTS_REQUIRE_IDENTITY", "1-65535")],
    )
    .await;
    assert_eq!(
        got,
        Outcome {
            plaintext: 403,
            tls_without_identity: 403,
            authenticated: 200
        }
    );
    let (got, _) = try_clients(
        &ctl,
        &[
            ("LINKERD2_PROXY_INBOUND_PORTS_REQUIRE_TLS", "1-65535"),
            ("LINKERD2_PROXY_INBOUND_DEFAULT_POLICY", "deny"),
        ],
    )
    .await;
    assert_eq!(
        got,
        Outcome {
            plaintext: 403,
            tls_without_identity: 200,
            authenticated: 200
        }
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_denied_tcp_connection_is_closed_and_counted() {
    let ctl = CaControl::start("24h", &["server", "client"]).await;
    let echo = backend::tcp_echo().await;
    let server = start(
        &with(
            ctl.proxy_env("server"),
            &[("LINKERD2_PROXY_INBOUND_DEFAULT_POLICY", "all-authenticated")],
        ),
        Some(echo),
    );
    ready(server.admin_addr).await;

    // Plaintext: closed without reaching the app.
    let mut s = tokio::net::TcpStream::connect(server.inbound_addr)
        .await
        .unwrap();
    s.write_all(b"hello").await.unwrap();
    let mut got = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut got)).await;
    assert!(matches!(read, Ok(Ok(0)) | Ok(Err(_))), "{read:?} {got:?}");
    let m = scrape(server.admin_addr).await;
    assert_eq!(
        metric(
            &m,
            "inbound_tcp_authz_deny_total",
            &[
                "srv_kind=\"default\"",
                "srv_name=\"all-authenticated\"",
                "tls=\"no_identity\""
            ]
        ),
        Some(1.0),
        "{m}"
    );

    // mTLS with an identity: echoed.
    let mut tls = tls_connect(
        server.inbound_addr,
        &id("server"),
        ctl.client_config(Some("client")),
    )
    .await
    .unwrap();
    tls.write_all(b"hello").await.unwrap();
    tls.shutdown().await.unwrap();
    let mut got = Vec::new();
    tls.read_to_end(&mut got).await.unwrap();
    assert_eq!(got, b"hellobye");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn meshed_traffic_and_readiness_wait_for_the_first_certificate() {
    let ctl = CaControl::start("24h", &["server"]).await;
    // A token the control plane does not accept: no certificate is ever issued.
    std::fs::write(ctl.dir.join("server.token"), "wrong").unwrap();
    let app = backend::http().await;
    let server = start(
        &with(
            ctl.proxy_env("server"),
            &[
                ("LINKERD2_PROXY_INBOUND_DETECT_TIMEOUT", "1s"),
                ("LINKERD2_PROXY_IDENTITY_MIN_REFRESH", "1s"),
            ],
        ),
        Some(app.addr),
    );
    // The Identity service has refused the token at least once.
    eventually(Duration::from_secs(5), || async {
        let m = scrape(server.admin_addr).await;
        let failures = metric(
            &m,
            "control_identity_cert_refreshes_total",
            &["result=\"error\""],
        );
        holds(failures >= Some(1.0), failures)
    })
    .await;
    let (status, body) = client::get(server.admin_addr, "/ready").await;
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("certificate"), "{body}");
    // A meshed client can't complete a handshake with a proxy that has no certificate.
    let res = tls_connect(
        server.inbound_addr,
        &id("server"),
        ctl.client_config(Some("client")),
    )
    .await;
    assert!(res.is_err() || get_over(res.unwrap(), "/").await.is_err());
    let m = scrape(server.admin_addr).await;
    assert!(
        metric(
            &m,
            "control_identity_cert_refreshes_total",
            &["result=\"error\""]
        )
        .unwrap()
            >= 1.0
    );

    // Plaintext traffic flows meanwhile.
    let plain = tokio::net::TcpStream::connect(server.inbound_addr)
        .await
        .unwrap();
    assert_eq!(get_over(plain, "/").await.unwrap().0, 200);

    // With the right token, the retry (after the min refresh) gets a certificate.
    std::fs::write(ctl.dir.join("server.token"), "token-of-server\n").unwrap();
    ready(server.admin_addr).await;
    let mtls = tls_connect(
        server.inbound_addr,
        &id("server"),
        ctl.client_config(Some("client")),
    )
    .await
    .unwrap();
    assert_eq!(get_over(mtls, "/").await.unwrap().0, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_meshed_client_scrapes_the_admin_port_over_mtls_and_http2() {
    let ctl = CaControl::start("24h", &["server", "prometheus"]).await;
    let server = start(&ctl.proxy_env("server"), None);
    ready(server.admin_addr).await;
    let tls = tls_connect(
        server.admin_addr,
        &id("server"),
        ctl.client_config(Some("prometheus")),
    )
    .await
    .expect("the admin port terminates mesh TLS");
    let (mut tx, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        TokioIo::new(tls),
    )
    .await
    .expect("HTTP/2 over mesh TLS");
    tokio::spawn(conn);
    let req = Request::get("http://server/metrics")
        .header("l5d-orig-proto", "HTTP/1.1")
        .body(Full::<Bytes>::default())
        .unwrap();
    let (status, body) = client::text(tx.send_request(req).await.unwrap()).await;
    assert_eq!(status, 200);
    assert!(body.contains("process_start_time_seconds"), "{body}");
    // Plaintext HTTP/1 (kubelet probes) still works beside it.
    assert_eq!(client::get(server.admin_addr, "/ready").await.0, 200);
}
