//! HTTP/1 through the proxy: keep-alive and pooling, HTTP/1.0, chunked and large bodies,
//! header hygiene, error responses.

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::Frame;
use linkerd_tests::{backend, client, metric, proxy, scrape};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keep_alive_and_pool_reuse() {
    let app = backend::http().await;
    let proxy = proxy(&[], Some(app.addr));

    // Two requests on one client connection, then one on a second client connection: the
    // proxy reuses one upstream connection for all three.
    let mut tx = client::http1::<Full<Bytes>>(proxy.outbound_addr).await;
    for _ in 0..2 {
        tx.ready().await.unwrap();
        let rsp = tx.send_request(client::req("/")).await.unwrap();
        assert_eq!(client::text(rsp).await, (200, "hello".into()));
    }
    let (status, body) = client::get(proxy.outbound_addr, "/").await;
    assert_eq!((status, body.as_str()), (200, "hello"));
    assert_eq!(
        app.connections(),
        1,
        "the upstream connection is pooled and reused"
    );

    let m = scrape(proxy.admin_addr).await;
    let target = format!("target_addr=\"{}\"", app.addr);
    assert_eq!(
        metric(&m, "tcp_open_total", &["peer=\"dst\"", &target]),
        Some(1.0)
    );
    assert_eq!(
        metric(
            &m,
            "tcp_open_total",
            &["peer=\"src\"", "direction=\"outbound\""]
        ),
        Some(2.0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_1_0_request() {
    let app = backend::http().await;
    let proxy = proxy(&[], Some(app.addr));
    let mut s = tokio::net::TcpStream::connect(proxy.outbound_addr)
        .await
        .unwrap();
    s.write_all(b"GET /headers HTTP/1.0\r\nHost: web\r\n\r\n")
        .await
        .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    assert!(out.starts_with("HTTP/1.0 200 OK\r\n"), "{out}");
    assert!(
        out.contains("GET /headers HTTP/1.0\n"),
        "the app sees HTTP/1.0: {out}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chunked_bodies_both_ways() {
    let app = backend::http().await;
    let proxy = proxy(&[], Some(app.addr));
    let mut tx = client::http1(proxy.outbound_addr).await;
    let chunks = (0..5)
        .map(|i| Ok::<_, std::convert::Infallible>(Frame::data(Bytes::from(format!("part{i}-")))));
    let req = Request::post("/echo")
        .header("host", "web")
        .body(StreamBody::new(futures_util::stream::iter(chunks)))
        .unwrap();
    let rsp = tx.send_request(req).await.unwrap();
    assert_eq!(rsp.headers().get("transfer-encoding").unwrap(), "chunked");
    assert_eq!(
        client::text(rsp).await,
        (200, "part0-part1-part2-part3-part4-".into())
    );

    let (status, body) = client::get(proxy.outbound_addr, "/chunks").await;
    assert_eq!((status, body.as_str()), (200, "chunk0;chunk1;chunk2;"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_bodies_both_ways() {
    let app = backend::http().await;
    let proxy = proxy(&[], Some(app.addr));
    let body: Vec<u8> = (0..10 * 1024 * 1024).map(|i| (i % 251) as u8).collect();
    let mut tx = client::http1(proxy.outbound_addr).await;
    let req = Request::post("/echo")
        .header("host", "web")
        .body(Full::new(Bytes::from(body.clone())))
        .unwrap();
    let rsp = tx.send_request(req).await.unwrap();
    assert_eq!(rsp.status(), 200);
    let got = rsp.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(got.len(), body.len());
    assert!(got == body, "10 MiB echoed intact");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hop_by_hop_and_h2c_upgrade_headers_are_stripped() {
    let app = backend::http().await;
    let proxy = proxy(&[], Some(app.addr));
    let mut tx = client::http1::<Full<Bytes>>(proxy.outbound_addr).await;
    let req = Request::get("/headers")
        .header("host", "web")
        .header("connection", "Upgrade, HTTP2-Settings, x-hop")
        .header("upgrade", "h2c")
        .header("http2-settings", "AAMAAABkAARAAAAAAAIAAAAA")
        .header("x-hop", "1")
        .header("keep-alive", "timeout=5")
        .header("proxy-connection", "keep-alive")
        .header("x-end-to-end", "kept")
        .body(Full::default())
        .unwrap();
    let rsp = tx.send_request(req).await.unwrap();
    assert_eq!(
        rsp.status(),
        200,
        "an h2c upgrade request is served as plain HTTP/1.1"
    );
    let (_, seen) = client::text(rsp).await;
    let seen = seen.to_lowercase();
    for h in [
        "upgrade:",
        "http2-settings:",
        "x-hop:",
        "keep-alive:",
        "proxy-connection:",
    ] {
        assert!(!seen.contains(h), "{h} must not reach the app:\n{seen}");
    }
    assert!(seen.contains("x-end-to-end: kept"), "{seen}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_refused_is_502() {
    // A port that refuses connections.
    let (_reserved, closed) = linkerd_tests::refusing_addr();
    let proxy = proxy(&[], Some(closed));
    let mut tx = client::http1::<Full<Bytes>>(proxy.outbound_addr).await;
    let rsp = tx.send_request(client::req("/")).await.unwrap();
    assert_eq!(rsp.status(), 502);
    assert_eq!(
        rsp.headers()["l5d-proxy-error"],
        format!("connect to {closed} refused").as_str()
    );
    let m = scrape(proxy.admin_addr).await;
    assert_eq!(
        metric(
            &m,
            "response_total",
            &["status_code=\"502\"", "classification=\"failure\""]
        ),
        Some(1.0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarding_to_own_listener_is_502() {
    // The original destination is the proxy's own admin port: a loop.
    let orig_dst = linkerd_tests::LaterOrigDst::default();
    let proxy = linkerd_tests::proxy_with(&[], orig_dst.clone());
    orig_dst.set(proxy.admin_addr);
    let mut tx = client::http1::<Full<Bytes>>(proxy.outbound_addr).await;
    let rsp = tx.send_request(client::req("/metrics")).await.unwrap();
    assert_eq!(rsp.status(), 502);
    assert!(rsp.headers()["l5d-proxy-error"]
        .to_str()
        .unwrap()
        .contains("forwarding loop"));
}

/// The proxy's own listeners named through the explicit proxy as IPv4-mapped IPv6 addresses
/// are refused like their IPv4 spelling: no loop into the outbound listener, no admin server
/// from outside.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn own_listeners_spelled_as_mapped_ipv6_are_refused() {
    let proxy = proxy(&[], None);
    for (port, path) in [
        (proxy.outbound_addr.port(), "/"),
        (proxy.admin_addr.port(), "/proxy-log-level"),
    ] {
        let mut s = tokio::net::TcpStream::connect(proxy.outbound_addr)
            .await
            .unwrap();
        let req = format!(
            "GET http://[::ffff:127.0.0.1]:{port}{path} HTTP/1.1\r\nhost: [::ffff:127.0.0.1]:{port}\r\nconnection: close\r\n\r\n"
        );
        s.write_all(req.as_bytes()).await.unwrap();
        let mut out = String::new();
        tokio::time::timeout(
            std::time::Duration::from_secs(5),
            s.read_to_string(&mut out),
        )
        .await
        .expect("answered at once")
        .unwrap();
        assert!(
            out.starts_with("HTTP/1.1 403 Forbidden\r\n"),
            "{port}{path}: {out}"
        );
    }
    // A tunnel to the admin port, likewise.
    let mut s = tokio::net::TcpStream::connect(proxy.outbound_addr)
        .await
        .unwrap();
    let admin = format!("[::ffff:127.0.0.1]:{}", proxy.admin_addr.port());
    let req = format!("CONNECT {admin} HTTP/1.1\r\nhost: {admin}\r\n\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    let mut head = vec![0u8; 64];
    let n = tokio::time::timeout(std::time::Duration::from_secs(5), s.read(&mut head))
        .await
        .expect("answered at once")
        .unwrap();
    let head = String::from_utf8_lossy(&head[..n]);
    assert!(head.starts_with("HTTP/1.1 403"), "CONNECT {admin}: {head}");
    let m = scrape(proxy.admin_addr).await;
    assert_eq!(
        metric(
            &m,
            "tcp_open_total",
            &["direction=\"outbound\"", "peer=\"dst\""]
        ),
        None,
        "nothing was dialed: {m}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_requests_are_400() {
    // Explicit-proxy mode: a request with no absolute URI and no Host can't be routed.
    let proxy = proxy(&[], None);
    let mut s = tokio::net::TcpStream::connect(proxy.outbound_addr)
        .await
        .unwrap();
    s.write_all(b"GET / HTTP/1.0\r\n\r\n").await.unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    assert!(out.starts_with("HTTP/1.0 400 Bad Request\r\n"), "{out}");
    assert!(
        out.to_lowercase().contains("l5d-proxy-error: bad request"),
        "{out}"
    );

    // A request whose headers don't parse is refused by the HTTP server itself.
    let app = backend::http().await;
    let proxy = linkerd_tests::proxy(&[], Some(app.addr));
    let mut s = tokio::net::TcpStream::connect(proxy.outbound_addr)
        .await
        .unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: a\r\nbad header line\r\n\r\n")
        .await
        .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    assert!(out.starts_with("HTTP/1.1 400 Bad Request\r\n"), "{out}");
    assert_eq!(app.connections(), 0, "nothing reached the app");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inbound_forwards_to_the_local_app_port() {
    let app = backend::http().await;
    // The peer dialed some pod IP on the app's port; the inbound proxy serves 127.0.0.1:port.
    let dst = format!("10.9.8.7:{}", app.addr.port()).parse().unwrap();
    let proxy = proxy(&[], Some(dst));
    let (status, body) = client::get(proxy.inbound_addr, "/headers").await;
    assert_eq!(status, 200);
    assert!(body.starts_with("GET /headers HTTP/1.1\n"), "{body}");
    let m = scrape(proxy.admin_addr).await;
    assert_eq!(
        metric(
            &m,
            "request_total",
            &[
                "direction=\"inbound\"",
                &format!("target_addr=\"127.0.0.1:{}\"", app.addr.port())
            ]
        ),
        Some(1.0)
    );
}
