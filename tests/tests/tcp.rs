//! Opaque TCP: forwarding with half-close, server-speaks-first protocols, detection timeouts.

use linkerd_tests::{backend, eventually, holds, metric, proxy, scrape};
use std::time::Duration;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn opaque_echo_with_half_close() {
    let echo = backend::tcp_echo().await;
    let proxy = proxy(
        &[("LINKERD2_PROXY_OUTBOUND_DETECT_TIMEOUT", "10s")],
        Some(echo),
    );
    let mut s = TcpStream::connect(proxy.outbound_addr).await.unwrap();
    // Not HTTP: detected as opaque on the first bytes, without waiting for the timeout.
    let payload: Vec<u8> = (0..100_000u32).map(|i| (i % 7) as u8).collect();
    s.write_all(&payload).await.unwrap();
    s.shutdown().await.unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out))
        .await
        .expect("opaque data is not held until the detect timeout")
        .unwrap();
    assert_eq!(out.len(), payload.len() + 3);
    assert!(out[..payload.len()] == payload[..]);
    assert_eq!(
        &out[payload.len()..],
        b"bye",
        "the half-close reached the server"
    );

    // Byte counters, once the connection is closed on both sides.
    let target = format!("target_addr=\"{echo}\"");
    let m = eventually(Duration::from_secs(5), || async {
        let m = scrape(proxy.admin_addr).await;
        let closed = metric(&m, "tcp_open_connections", &["peer=\"dst\"", &target]);
        holds(closed == Some(0.0), closed).map(|()| m)
    })
    .await;
    assert_eq!(
        metric(&m, "tcp_read_bytes_total", &["peer=\"src\""]),
        Some(100_000.0)
    );
    assert_eq!(
        metric(&m, "tcp_write_bytes_total", &["peer=\"dst\"", &target]),
        Some(100_000.0)
    );
    assert_eq!(
        metric(&m, "tcp_read_bytes_total", &["peer=\"dst\"", &target]),
        Some(100_003.0)
    );
    assert_eq!(
        metric(
            &m,
            "tcp_close_total",
            &["peer=\"dst\"", &target, "errno=\"\""]
        ),
        Some(1.0)
    );
    assert_eq!(
        metric(&m, "tcp_open_connections", &["peer=\"dst\"", &target]),
        Some(0.0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_speaks_first_on_an_opaque_port() {
    let server = backend::server_first(b"220 smtp.test ESMTP ready\r\n").await;
    let ports = server.port().to_string();
    let proxy = proxy(
        &[(
            "LINKERD2_PROXY_INBOUND_PORTS_DISABLE_PROTOCOL_DETECTION",
            &ports,
        )],
        Some(server),
    );
    let mut s = TcpStream::connect(proxy.outbound_addr).await.unwrap();
    let mut banner = [0u8; 27];
    tokio::time::timeout(Duration::from_secs(2), s.read_exact(&mut banner))
        .await
        .expect("the banner arrives at once on an opaque port")
        .unwrap();
    assert_eq!(&banner, b"220 smtp.test ESMTP ready\r\n");
    s.write_all(b"EHLO client\r\n").await.unwrap();
    let mut echo = [0u8; 13];
    s.read_exact(&mut echo).await.unwrap();
    assert_eq!(&echo, b"EHLO client\r\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn detect_timeout_falls_back_to_opaque() {
    // A server-first protocol on a port not marked opaque: after the detect timeout the
    // connection is forwarded as opaque TCP and the banner arrives.
    let server = backend::server_first(b"* OK IMAP ready\r\n").await;
    let proxy = proxy(
        &[
            ("LINKERD2_PROXY_OUTBOUND_DETECT_TIMEOUT", "200ms"),
            (
                "LINKERD2_PROXY_INBOUND_PORTS_DISABLE_PROTOCOL_DETECTION",
                "",
            ),
        ],
        Some(server),
    );
    let mut s = TcpStream::connect(proxy.outbound_addr).await.unwrap();
    let mut banner = [0u8; 17];
    tokio::time::timeout(Duration::from_secs(3), s.read_exact(&mut banner))
        .await
        .expect("forwarded after the detect timeout")
        .unwrap();
    assert_eq!(&banner, b"* OK IMAP ready\r\n");
    let m = scrape(proxy.admin_addr).await;
    assert_eq!(metric(&m, "tcp_open_total", &["peer=\"dst\""]), Some(1.0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partial_http_then_timeout_loses_no_bytes() {
    // The first bytes look like HTTP but the line never ends: after the timeout they are
    // replayed to the target as opaque data.
    let echo = backend::tcp_echo().await;
    let proxy = proxy(
        &[("LINKERD2_PROXY_OUTBOUND_DETECT_TIMEOUT", "200ms")],
        Some(echo),
    );
    let mut s = TcpStream::connect(proxy.outbound_addr).await.unwrap();
    s.write_all(b"GET /never-ending").await.unwrap();
    let mut out = [0u8; 17];
    tokio::time::timeout(Duration::from_secs(3), s.read_exact(&mut out))
        .await
        .expect("echoed after the detect timeout")
        .unwrap();
    assert_eq!(&out, b"GET /never-ending");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inbound_opaque_to_the_app_port() {
    let echo = backend::tcp_echo().await;
    let dst = format!("10.1.1.1:{}", echo.port()).parse().unwrap();
    let proxy = proxy(&[], Some(dst));
    let mut s = TcpStream::connect(proxy.inbound_addr).await.unwrap();
    s.write_all(&[0x00, 0xff, 0x10]).await.unwrap();
    s.shutdown().await.unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).await.unwrap();
    assert_eq!(out, [0x00, 0xff, 0x10, b'b', b'y', b'e']);
    let m = scrape(proxy.admin_addr).await;
    assert_eq!(
        metric(
            &m,
            "tcp_open_total",
            &["direction=\"inbound\"", "peer=\"dst\""]
        ),
        Some(1.0)
    );
}
