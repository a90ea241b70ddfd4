//! HTTP/1 carried over multiplexed HTTP/2 between proxies (`l5d-orig-proto`): a client proxy
//! and a server proxy on loopback, meshed with mTLS through opaque transport, the server's
//! endpoint hinted `h2` by `linkerd-control`.

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Full};
use linkerd_tests::{
    backend,
    ca::{ready, start_proxy as start, CaControl},
    client, eventually, holds, metric, metric_sum, scrape,
};
use std::{net::SocketAddr, time::Duration};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const WEB: &str = "web.ns.svc.cluster.local";

struct Mesh {
    ctl: CaControl,
    app: backend::Http,
    server: linkerd_app::Proxy,
}

impl Mesh {
    /// The app behind a server proxy, discovered as `web:8080` with the `h2` hint.
    async fn start() -> Self {
        let ctl = CaControl::start("24h", &["client", "server"]).await;
        let app = backend::http().await;
        let server = ctl.h2_service_behind(WEB, 8080, app.addr, "server").await;
        Self { ctl, app, server }
    }

    /// A client proxy with discovery; `orig_dst` makes it transparent.
    async fn client(&self, orig_dst: Option<SocketAddr>) -> linkerd_app::Proxy {
        self.client_with(orig_dst, &[]).await
    }

    async fn client_with(
        &self,
        orig_dst: Option<SocketAddr>,
        extra: &[(&str, &str)],
    ) -> linkerd_app::Proxy {
        let mut env = self.ctl.proxy_env("client");
        env.push((
            "LINKERD2_PROXY_DESTINATION_SVC_ADDR".into(),
            self.ctl.addr.to_string(),
        ));
        env.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        let p = start(&env, orig_dst);
        ready(p.admin_addr).await;
        p
    }
}

/// Writes a raw HTTP/1 request on a new connection and reads the whole response.
async fn raw(addr: SocketAddr, request: &str) -> String {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(request.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out))
        .await
        .expect("response")
        .unwrap();
    String::from_utf8_lossy(&out).into_owned()
}

/// Proxy-to-proxy connections the client proxy's pool opened to the server (HTTP/2).
fn h2_opened(m: &str) -> f64 {
    metric_sum(
        m,
        "http_pool_connections_opened_total",
        &["direction=\"outbound\"", "http_version=\"2\""],
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http1_requests_arrive_as_http1_with_their_headers_body_and_trailers() {
    let mesh = Mesh::start().await;
    let client = mesh.client(None).await;

    // HTTP/1.1: method, path, headers; hop-by-hop ones are not forwarded.
    let rsp = raw(
        client.outbound_addr,
        &format!("GET http://{WEB}:8080/headers?x=1 HTTP/1.1\r\nhost: {WEB}:8080\r\nx-app: kept\r\nconnection: close, x-hop\r\nx-hop: dropped\r\n\r\n"),
    )
    .await;
    assert!(rsp.starts_with("HTTP/1.1 200"), "{rsp}");
    assert!(
        !rsp.to_ascii_lowercase().contains("l5d-orig-proto"),
        "{rsp}"
    );
    assert!(rsp.contains("GET /headers?x=1 HTTP/1.1\n"), "{rsp}");
    assert!(rsp.contains("x-app: kept\n"), "{rsp}");
    assert!(rsp.contains(&format!("host: {WEB}:8080\n")), "{rsp}");
    assert!(!rsp.contains("x-hop"), "{rsp}");
    assert!(
        !rsp.contains("l5d-orig-proto"),
        "the app sees no proxy header: {rsp}"
    );

    // HTTP/1.0.
    let rsp = raw(
        client.outbound_addr,
        &format!("GET http://{WEB}:8080/headers HTTP/1.0\r\nhost: {WEB}:8080\r\n\r\n"),
    )
    .await;
    assert!(rsp.starts_with("HTTP/1.0 200"), "{rsp}");
    assert!(rsp.contains("GET /headers HTTP/1.0\n"), "{rsp}");

    // A chunked request body arrives intact, and a chunked response comes back chunked.
    let body: String = (0..2000).map(|i| format!("{i},")).collect();
    let mut tx = client::http1::<Full<Bytes>>(client.outbound_addr).await;
    let req = Request::post(format!("http://{WEB}:8080/echo"))
        .body(Full::new(Bytes::from(body.clone())))
        .unwrap();
    let (status, echoed) = client::text(tx.send_request(req).await.unwrap()).await;
    assert_eq!((status, echoed.len()), (200, body.len()));
    assert_eq!(echoed, body);
    let rsp = raw(
        client.outbound_addr,
        &format!("GET http://{WEB}:8080/chunks HTTP/1.1\r\nhost: {WEB}:8080\r\nconnection: close\r\n\r\n"),
    )
    .await;
    assert!(
        rsp.to_ascii_lowercase()
            .contains("transfer-encoding: chunked"),
        "{rsp}"
    );
    assert!(rsp.contains("chunk0;") && rsp.contains("chunk2;"), "{rsp}");

    // Response trailers cross both proxies (the client asks for them with TE: trailers).
    let req = Request::get(format!("http://{WEB}:8080/trailers"))
        .header("te", "trailers")
        .body(Full::<Bytes>::default())
        .unwrap();
    let mut tx = client::http1::<Full<Bytes>>(client.outbound_addr).await;
    let rsp = tx.send_request(req).await.unwrap();
    assert_eq!(rsp.status(), 200);
    let collected = rsp.into_body().collect().await.unwrap();
    let trailers = collected.trailers().cloned();
    assert_eq!(collected.to_bytes(), "hello");
    assert_eq!(
        trailers
            .as_ref()
            .and_then(|t| t.get("x-trailer"))
            .map(|v| v.to_str().unwrap()),
        Some("yes"),
        "{trailers:?}"
    );

    // All of it went over one HTTP/2 connection between the proxies.
    let m = scrape(client.admin_addr).await;
    assert_eq!(h2_opened(&m), 1.0, "{m}");
    assert_eq!(mesh.app.requests(), 5);
    let s = scrape(mesh.server.admin_addr).await;
    assert!(
        metric_sum(
            &s,
            "request_total",
            &["direction=\"inbound\"", "tls=\"true\""]
        ) >= 5.0,
        "{s}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn absolute_form_round_trips_and_websocket_uses_http1() {
    let mesh = Mesh::start().await;
    // Transparent: the app's connections were meant for the app's address.
    let client = mesh.client(Some(mesh.app.addr)).await;
    let rsp = raw(
        client.outbound_addr,
        &format!("GET http://{WEB}:8080/headers HTTP/1.1\r\nhost: {WEB}:8080\r\nconnection: close\r\n\r\n"),
    )
    .await;
    assert!(rsp.starts_with("HTTP/1.1 200"), "{rsp}");
    assert!(
        rsp.contains(&format!("GET http://{WEB}:8080/headers HTTP/1.1\n")),
        "the app sees the absolute form: {rsp}"
    );

    // WebSocket: an HTTP/1.1 upgrade, carried on an HTTP/1.1 connection of its own.
    let mut s = tokio::net::TcpStream::connect(client.outbound_addr)
        .await
        .unwrap();
    s.write_all(
        format!("GET /ws HTTP/1.1\r\nhost: {WEB}:8080\r\nconnection: upgrade\r\nupgrade: websocket\r\n\r\n")
            .as_bytes(),
    )
    .await
    .unwrap();
    let mut head = vec![0u8; 1024];
    let n = s.read(&mut head).await.unwrap();
    let head = String::from_utf8_lossy(&head[..n]).into_owned();
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    s.write_all(b"ping").await.unwrap();
    let mut buf = [0u8; 4];
    tokio::time::timeout(Duration::from_secs(5), s.read_exact(&mut buf))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&buf, b"ping");
    let m = scrape(client.admin_addr).await;
    assert!(
        metric(
            &m,
            "http_pool_connections_opened_total",
            &["direction=\"outbound\"", "http_version=\"1\""]
        )
        .unwrap_or(0.0)
            >= 1.0,
        "{m}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn short_lived_app_connections_share_a_few_proxy_connections() {
    let mesh = Mesh::start().await;
    // No spreading here: this is about not dialing one connection per request.
    let client = mesh
        .client_with(
            None,
            &[(
                "LINKERD2_PROXY_OUTBOUND_HTTP2_MAX_CONNECTIONS_PER_ENDPOINT",
                "1",
            )],
        )
        .await;

    // Concurrent first requests: one connection is dialed, the others wait for it.
    let mut tasks = Vec::new();
    for _ in 0..50 {
        let outbound = client.outbound_addr;
        tasks.push(tokio::spawn(async move {
            raw(
                outbound,
                &format!("GET http://{WEB}:8080/ HTTP/1.1\r\nhost: {WEB}:8080\r\nconnection: close\r\n\r\n"),
            )
            .await
        }));
    }
    for t in tasks {
        let rsp = t.await.unwrap();
        assert!(rsp.starts_with("HTTP/1.1 200"), "{rsp}");
    }
    let m = scrape(client.admin_addr).await;
    assert_eq!(h2_opened(&m), 1.0, "{m}");

    // 1,000 sequential short-lived app connections.
    for i in 0..1000 {
        let rsp = raw(
            client.outbound_addr,
            &format!(
                "GET http://{WEB}:8080/ HTTP/1.1\r\nhost: {WEB}:8080\r\nconnection: close\r\n\r\n"
            ),
        )
        .await;
        assert!(rsp.starts_with("HTTP/1.1 200"), "request {i}: {rsp}");
    }
    let m = scrape(client.admin_addr).await;
    let opened = h2_opened(&m);
    assert!(
        opened <= 3.0,
        "{opened} proxy-to-proxy connections for 1,050 app connections"
    );
    assert_eq!(
        metric(
            &m,
            "http_pool_connections_open",
            &["direction=\"outbound\"", "http_version=\"2\""]
        ),
        Some(1.0),
        "{m}"
    );
    // Each app connection still reached the client proxy; few reached the server proxy.
    let s = scrape(mesh.server.admin_addr).await;
    let accepted = metric_sum(
        &s,
        "tcp_open_total",
        &["direction=\"inbound\"", "peer=\"src\""],
    );
    assert!(accepted <= 3.0, "{accepted}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_client_proxy_recovers_when_the_server_proxy_restarts() {
    let mesh = Mesh::start().await;
    let client = mesh.client(None).await;
    let get = |outbound: SocketAddr| async move {
        raw(
            outbound,
            &format!(
                "GET http://{WEB}:8080/ HTTP/1.1\r\nhost: {WEB}:8080\r\nconnection: close\r\n\r\n"
            ),
        )
        .await
    };
    assert!(get(client.outbound_addr).await.starts_with("HTTP/1.1 200"));

    // Kill the server proxy (its listeners and connections go), then start it again on the
    // same inbound address.
    let Mesh { ctl, app, server } = mesh;
    let inbound = server.inbound_addr;
    server.shutdown();
    let _ = tokio::time::timeout(Duration::from_secs(5), server.drained()).await;
    let mut env = ctl.proxy_env("server");
    env.push((
        "LINKERD2_PROXY_INBOUND_LISTEN_ADDR".into(),
        inbound.to_string(),
    ));
    // The old listener is closed once drained; retry briefly in case another socket took the
    // port as its ephemeral source port meanwhile.
    let config = {
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        linkerd_tests::config(&env)
    };
    let server = eventually(Duration::from_secs(2), || async {
        linkerd_app::App::new(config.clone())
            .with_orig_dst(linkerd_proxy_transport::NoOrigDst)
            .spawn()
    })
    .await;
    ready(server.admin_addr).await;

    // The pooled HTTP/2 connection died with the old proxy: the client proxy redials.
    eventually(Duration::from_secs(2), || async {
        let rsp = get(client.outbound_addr).await;
        holds(rsp.starts_with("HTTP/1.1 200"), rsp)
    })
    .await;
    for _ in 0..20 {
        assert!(get(client.outbound_addr).await.starts_with("HTTP/1.1 200"));
    }
    let m = scrape(client.admin_addr).await;
    assert_eq!(h2_opened(&m), 2.0, "one connection before, one after: {m}");
    drop((app, ctl));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn busy_endpoints_get_a_few_connections_and_idle_ones_close() {
    let mesh = Mesh::start().await;
    let client = mesh
        .client_with(
            None,
            &[
                (
                    "LINKERD2_PROXY_OUTBOUND_HTTP2_MAX_CONNECTIONS_PER_ENDPOINT",
                    "3",
                ),
                ("LINKERD2_PROXY_OUTBOUND_HTTP2_STREAMS_PER_CONNECTION", "4"),
                (
                    "LINKERD2_PROXY_OUTBOUND_HTTP1_CONNECTION_POOL_IDLE_TIMEOUT",
                    "1s",
                ),
            ],
        )
        .await;
    assert!(raw(
        client.outbound_addr,
        &format!(
            "GET http://{WEB}:8080/ HTTP/1.1\r\nhost: {WEB}:8080\r\nconnection: close\r\n\r\n"
        )
    )
    .await
    .starts_with("HTTP/1.1 200"));

    // 40 slow requests at once: more than 4 streams per connection, so more connections are
    // dialed, but never more than 3. Each is let reach the app before the next starts, so
    // streams pile up on the connections one at a time.
    let mut tasks = Vec::new();
    let app = &mesh.app;
    for _ in 0..40 {
        let outbound = client.outbound_addr;
        let reached = app.requests() + 1;
        tasks.push(tokio::spawn(async move {
            raw(
                outbound,
                &format!("GET http://{WEB}:8080/slow/300 HTTP/1.1\r\nhost: {WEB}:8080\r\nconnection: close\r\n\r\n"),
            )
            .await
        }));
        eventually(Duration::from_secs(5), || async {
            holds(app.requests() >= reached, app.requests())
        })
        .await;
    }
    for t in tasks {
        assert!(t.await.unwrap().starts_with("HTTP/1.1 200"));
    }
    let m = scrape(client.admin_addr).await;
    let opened = h2_opened(&m);
    assert!((2.0..=3.0).contains(&opened), "{opened} connections: {m}");
    assert_eq!(
        metric(
            &m,
            "http_pool_requests_in_flight",
            &["direction=\"outbound\"", "http_version=\"2\""]
        ),
        Some(0.0),
        "{m}"
    );

    // Idle for longer than the idle timeout: the connections close.
    eventually(Duration::from_secs(4), || async {
        let m = scrape(client.admin_addr).await;
        let open = metric(
            &m,
            "http_pool_connections_open",
            &["direction=\"outbound\"", "http_version=\"2\""],
        );
        holds(open == Some(0.0), open)
    })
    .await;
}
