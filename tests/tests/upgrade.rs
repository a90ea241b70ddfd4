//! Protocol upgrades and explicit-proxy mode: WebSocket, absolute-form requests, CONNECT.

use bytes::Bytes;
use http::Request;
use http_body_util::Full;
use hyper_util::rt::TokioIo;
use linkerd_tests::{backend, client, metric, proxy, scrape};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_upgrade_echo() {
    let app = backend::http().await;
    let proxy = proxy(&[], Some(app.addr));
    let mut tx = client::http1::<Full<Bytes>>(proxy.outbound_addr).await;
    let req = Request::get("/ws")
        .header("host", "web")
        .header("connection", "Upgrade")
        .header("upgrade", "websocket")
        .header("sec-websocket-version", "13")
        .header("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==")
        .body(Full::default())
        .unwrap();
    let rsp = tx.send_request(req).await.unwrap();
    assert_eq!(rsp.status(), 101);
    assert_eq!(rsp.headers()["upgrade"], "websocket");
    let mut io = TokioIo::new(hyper::upgrade::on(rsp).await.expect("upgraded"));
    for msg in [&b"ping"[..], b"second message", &[0u8, 1, 2, 255]] {
        io.write_all(msg).await.unwrap();
        let mut buf = vec![0u8; msg.len()];
        io.read_exact(&mut buf).await.unwrap();
        assert_eq!(buf, msg);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn explicit_absolute_form() {
    let app = backend::http().await;
    let proxy = proxy(&[], None);
    let mut tx = client::http1::<Full<Bytes>>(proxy.outbound_addr).await;
    let req = Request::get(format!("http://{}/headers?x=1", app.addr))
        .body(Full::default())
        .unwrap();
    let rsp = tx.send_request(req).await.unwrap();
    let (status, body) = client::text(rsp).await;
    assert_eq!(status, 200);
    // The origin server gets origin-form and a Host header.
    assert!(body.starts_with("GET /headers?x=1 HTTP/1.1\n"), "{body}");
    assert!(body.contains(&format!("host: {}\n", app.addr)), "{body}");

    // The explicit proxy's own ports are refused.
    for own in [proxy.admin_addr, proxy.inbound_addr, proxy.outbound_addr] {
        let req = Request::get(format!("http://{own}/metrics"))
            .body(Full::default())
            .unwrap();
        tx.ready().await.unwrap();
        let rsp = tx.send_request(req).await.unwrap();
        assert!(rsp.headers().contains_key("l5d-proxy-error"));
        assert_eq!(client::text(rsp).await.0, 403, "{own}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn explicit_connect_tunnel() {
    let echo = backend::tcp_echo().await;
    let proxy = proxy(&[], None);
    let (mut s, head) = client::connect_tunnel(proxy.outbound_addr, &echo.to_string()).await;
    assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
    s.write_all(b"through the tunnel").await.unwrap();
    s.shutdown().await.unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).await.unwrap();
    assert_eq!(
        out, b"through the tunnelbye",
        "echo, then the server's reply to our half-close"
    );

    // CONNECT to a closed port is a 502 with the reason.
    let (_reserved, closed) = linkerd_tests::refusing_addr();
    let mut s = tokio::net::TcpStream::connect(proxy.outbound_addr)
        .await
        .unwrap();
    s.write_all(format!("CONNECT {closed} HTTP/1.1\r\nHost: {closed}\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut buf = vec![0u8; 512];
    let n = s.read(&mut buf).await.unwrap();
    let text = String::from_utf8_lossy(&buf[..n]);
    assert!(text.starts_with("HTTP/1.1 502 Bad Gateway\r\n"), "{text}");
    assert!(text.contains("refused"), "{text}");

    let m = scrape(proxy.admin_addr).await;
    assert_eq!(
        metric(
            &m,
            "tcp_open_total",
            &["peer=\"dst\"", &format!("target_addr=\"{echo}\"")]
        ),
        Some(1.0)
    );
}
