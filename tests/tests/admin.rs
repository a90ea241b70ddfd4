//! The admin server, metrics after known traffic, and graceful shutdown.

use bytes::Bytes;
use http::Request;
use http_body_util::Full;
use linkerd_tests::{backend, client, eventually, holds, metric, metric_sum, proxy, scrape};
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_endpoints() {
    let proxy = proxy(&[("LINKERD2_PROXY_SHUTDOWN_GRACE_PERIOD", "1s")], None);
    let admin = proxy.admin_addr;
    assert_eq!(client::get(admin, "/live").await, (200, "live\n".into()));
    assert_eq!(client::get(admin, "/ready").await, (200, "ready\n".into()));
    assert_eq!(client::get(admin, "/nope").await.0, 404);

    let (status, env) = client::get(admin, "/env.json").await;
    assert_eq!(status, 200);
    assert!(
        env.contains("\"LINKERD2_PROXY_SHUTDOWN_GRACE_PERIOD\": \"1s\""),
        "{env}"
    );
    assert!(env.contains("LINKERD2_PROXY_ADMIN_LISTEN_ADDR"), "{env}");

    let m = scrape(admin).await;
    for family in [
        "process_start_time_seconds",
        "process_resident_memory_bytes",
        "process_cpu_seconds_total",
        "process_open_fds",
    ] {
        assert!(metric(&m, family, &[]).is_some(), "{family} in\n{m}");
    }
    assert!(m.contains("proxy_build_info{"), "{m}");

    // Shutdown is disabled by default: 404, and the proxy keeps running.
    let mut tx = client::http1::<Full<Bytes>>(admin).await;
    let rsp = tx
        .send_request(Request::post("/shutdown").body(Full::default()).unwrap())
        .await
        .unwrap();
    assert_eq!(rsp.status(), 404);
    tx.ready().await.unwrap();
    let rsp = tx
        .send_request(Request::post("/live").body(Full::default()).unwrap())
        .await
        .unwrap();
    assert_eq!(rsp.status(), 200, "/live answers any method, as upstream");
    tx.ready().await.unwrap();
    let rsp = tx
        .send_request(Request::get("/shutdown").body(Full::default()).unwrap())
        .await
        .unwrap();
    assert_eq!(rsp.status(), 405);
    assert_eq!(client::get(admin, "/live").await.0, 200);

    // Admin requests count in the inbound request metrics, under the admin port, as
    // upstream's do: the 10 above (the earlier scrape included; this one counts once its body
    // has ended).
    let m = scrape(admin).await;
    let labels = [
        "direction=\"inbound\"",
        &format!("target_addr=\"{admin}\""),
        "tls=\"no_identity\"",
    ];
    assert_eq!(metric_sum(&m, "request_total", &labels), 10.0, "{m}");
    assert_eq!(
        metric_sum(
            &m,
            "response_total",
            &[&labels[..], &["status_code=\"405\""]].concat()
        ),
        1.0,
        "{m}"
    );
}

/// One request to the admin server over HTTP/1 with these headers; status, headers, body.
async fn admin_req(
    admin: std::net::SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> (u16, http::HeaderMap, Bytes) {
    let mut tx = client::http1::<Full<Bytes>>(admin).await;
    let req = Request::builder()
        .method(method)
        .uri(path)
        .header("host", "admin");
    client::send(&mut tx, req, headers).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_endpoints_as_linkerd2_proxy_answers_them() {
    let proxy = proxy(&[("LINKERD2_PROXY_SHUTDOWN_GRACE_PERIOD", "1s")], None);
    let admin = proxy.admin_addr;

    // /env.json: the whole environment, or the variables the query names.
    let (status, _, body) = admin_req(
        admin,
        "GET",
        "/env.json?LINKERD2_PROXY_SHUTDOWN_GRACE_PERIOD&NOT_SET_ANYWHERE",
        &[],
    )
    .await;
    assert_eq!(status, 200);
    let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(
        json,
        serde_json::json!({"LINKERD2_PROXY_SHUTDOWN_GRACE_PERIOD": "1s", "NOT_SET_ANYWHERE": null})
    );
    assert_eq!(admin_req(admin, "GET", "/env.json?A=1", &[]).await.0, 400);
    assert_eq!(admin_req(admin, "POST", "/env.json", &[]).await.0, 405);
    assert_eq!(
        admin_req(admin, "GET", "/env.json", &[("accept", "text/html")])
            .await
            .0,
        406
    );
    assert_eq!(
        admin_req(
            admin,
            "GET",
            "/env.json",
            &[("accept", "text/html, application/*;q=0.5")]
        )
        .await
        .0,
        200
    );

    // /metrics: ends with # EOF; gzipped when asked.
    let (_, headers, plain) = admin_req(admin, "GET", "/metrics", &[]).await;
    assert!(headers.get("content-encoding").is_none());
    let plain = String::from_utf8(plain.to_vec()).unwrap();
    assert!(plain.ends_with("# EOF\n"), "{plain}");
    let (status, headers, zipped) = admin_req(
        admin,
        "GET",
        "/metrics",
        &[("accept-encoding", "deflate, gzip")],
    )
    .await;
    assert_eq!(
        (status, headers["content-encoding"].as_bytes()),
        (200, &b"gzip"[..])
    );
    let mut unzipped = String::new();
    std::io::Read::read_to_string(
        &mut flate2::read::GzDecoder::new(&zipped[..]),
        &mut unzipped,
    )
    .unwrap();
    assert!(
        unzipped.contains("process_start_time_seconds"),
        "{unzipped}"
    );
    assert!(unzipped.ends_with("# EOF\n"));

    // HTTP/2 (a meshed Prometheus scrapes that way).
    let mut h2 = client::http2::<Full<Bytes>>(admin).await;
    let rsp = h2
        .send_request(
            Request::get("http://admin/ready")
                .body(Full::default())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(client::text(rsp).await, (200, "ready\n".into()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_endpoint_when_enabled() {
    let proxy = proxy(
        &[("LINKERD2_PROXY_SHUTDOWN_ENDPOINT_ENABLED", "true")],
        None,
    );
    let mut tx = client::http1::<Full<Bytes>>(proxy.admin_addr).await;
    let rsp = tx
        .send_request(Request::post("/shutdown").body(Full::default()).unwrap())
        .await
        .unwrap();
    assert_eq!(rsp.status(), 200);
    tokio::time::timeout(Duration::from_secs(2), proxy.shutdown_requested())
        .await
        .expect("POST /shutdown starts the shutdown");
    let outbound = proxy.outbound_addr;
    assert!(proxy.drained().await, "nothing in flight: drains at once");
    assert!(
        tokio::net::TcpStream::connect(outbound).await.is_err(),
        "the outbound listener is closed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_after_known_traffic() {
    let app = backend::http().await;
    let proxy = proxy(&[], Some(app.addr));
    let mut tx = client::http1::<Full<Bytes>>(proxy.outbound_addr).await;
    for path in ["/", "/", "/status/404", "/status/503", "/"] {
        tx.ready().await.unwrap();
        let rsp = tx
            .send_request(
                Request::get(path)
                    .header("host", "web.ns:8080")
                    .body(Full::default())
                    .unwrap(),
            )
            .await
            .unwrap();
        client::text(rsp).await;
    }
    let m = scrape(proxy.admin_addr).await;
    let target = format!("target_addr=\"{}\"", app.addr);
    let base = [
        "direction=\"outbound\"",
        "authority=\"web.ns:8080\"",
        target.as_str(),
    ];
    let with = |extra: &[&'static str]| -> Vec<&str> {
        base.iter().copied().chain(extra.iter().copied()).collect()
    };
    assert_eq!(metric(&m, "request_total", &with(&[])), Some(5.0));
    assert_eq!(
        metric(
            &m,
            "response_total",
            &with(&["status_code=\"200\"", "classification=\"success\""])
        ),
        Some(3.0)
    );
    assert_eq!(
        metric(
            &m,
            "response_total",
            &with(&["status_code=\"404\"", "classification=\"success\""])
        ),
        Some(1.0)
    );
    assert_eq!(
        metric(
            &m,
            "response_total",
            &with(&["status_code=\"503\"", "classification=\"failure\""])
        ),
        Some(1.0)
    );
    assert_eq!(metric_sum(&m, "response_latency_ms_count", &with(&[])), 5.0);
    assert_eq!(
        metric(
            &m,
            "response_latency_ms_bucket",
            &with(&["status_code=\"200\"", "le=\"+Inf\""])
        ),
        Some(3.0)
    );
    // The client connection is still open; the upstream one too.
    assert_eq!(
        metric(
            &m,
            "tcp_open_connections",
            &["peer=\"src\"", "direction=\"outbound\""]
        ),
        Some(1.0)
    );
    assert_eq!(
        metric(&m, "tcp_open_connections", &["peer=\"dst\"", &target]),
        Some(1.0)
    );
    assert_eq!(
        metric(&m, "tcp_open_total", &["peer=\"dst\"", &target]),
        Some(1.0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_shutdown_finishes_in_flight_requests() {
    let app = backend::http().await;
    let proxy = proxy(
        &[("LINKERD2_PROXY_SHUTDOWN_GRACE_PERIOD", "10s")],
        Some(app.addr),
    );
    let outbound = proxy.outbound_addr;
    let mut tx = client::http1::<Full<Bytes>>(outbound).await;
    let in_flight = tokio::spawn(async move {
        let rsp = tx
            .send_request(client::req("/slow/500"))
            .await
            .expect("the in-flight request completes");
        client::text(rsp).await
    });
    // The request has reached the app (and is in flight) before the drain begins.
    eventually(Duration::from_secs(5), || async {
        holds(app.requests() == 1, app.requests())
    })
    .await;
    proxy.shutdown();
    let started = std::time::Instant::now();
    assert!(proxy.drained().await, "drained within the grace period");
    assert_eq!(in_flight.await.unwrap(), (200, "slow".into()));
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "drain does not wait for the whole grace period"
    );
    assert!(
        tokio::net::TcpStream::connect(outbound).await.is_err(),
        "no longer accepting"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_shutdown_finishes_in_flight_http2_streams() {
    // Streams run inside their connection's task (server side, and the client side towards
    // the app): a GOAWAY drain must still let each finish.
    let app = backend::http().await;
    let proxy = proxy(
        &[("LINKERD2_PROXY_SHUTDOWN_GRACE_PERIOD", "10s")],
        Some(app.addr),
    );
    let tx = client::http2::<Full<Bytes>>(proxy.outbound_addr).await;
    let in_flight: Vec<_> = (0..3)
        .map(|_| {
            let mut tx = tx.clone();
            tokio::spawn(async move {
                let req = Request::get("http://web.test/slow/500")
                    .body(Full::default())
                    .unwrap();
                let rsp = tx.send_request(req).await.expect("the stream completes");
                client::text(rsp).await
            })
        })
        .collect();
    // The three streams have reached the app before the drain begins.
    eventually(Duration::from_secs(5), || async {
        holds(app.requests() == 3, app.requests())
    })
    .await;
    proxy.shutdown();
    let started = std::time::Instant::now();
    assert!(proxy.drained().await, "drained within the grace period");
    for stream in in_flight {
        assert_eq!(stream.await.unwrap(), (200, "slow".into()));
    }
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "drain does not wait for the whole grace period"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grace_period_bounds_the_drain() {
    let echo = backend::tcp_echo().await;
    let proxy = proxy(
        &[("LINKERD2_PROXY_SHUTDOWN_GRACE_PERIOD", "300ms")],
        Some(echo),
    );
    // An idle opaque connection that never closes by itself.
    let mut s = tokio::net::TcpStream::connect(proxy.outbound_addr)
        .await
        .unwrap();
    tokio::io::AsyncWriteExt::write_all(&mut s, b"\x00hold")
        .await
        .unwrap();
    // Forwarded: the echo comes back through the proxy.
    let mut echo = [0u8; 5];
    tokio::io::AsyncReadExt::read_exact(&mut s, &mut echo)
        .await
        .unwrap();
    assert_eq!(&echo, b"\x00hold");
    proxy.shutdown();
    assert!(
        !proxy.drained().await,
        "the grace period expired with a connection still open"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn non_http_on_the_admin_port_is_dropped() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let proxy = proxy(&[], None);
    let mut s = tokio::net::TcpStream::connect(proxy.admin_addr)
        .await
        .unwrap();
    s.write_all(b"\x00\x01 not http at all\r\n\r\n")
        .await
        .unwrap();
    let mut got = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut got)).await;
    assert!(
        matches!(read, Ok(Ok(0)) | Ok(Err(_))),
        "closed: {read:?} {got:?}"
    );
    // The admin server still answers others.
    assert_eq!(client::get(proxy.admin_addr, "/live").await.0, 200);
}
