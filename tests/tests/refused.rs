//! Requests an HTTP/2 server refused unprocessed (RFC 9113 sections 6.8 and 8.7: streams above
//! its `GOAWAY`'s last stream id, or reset with `REFUSED_STREAM`) are sent again, once, on
//! another connection: a server that recycles its connections loses no request.

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Full};
use linkerd_tests::{
    backend,
    ca::{ready, start_proxy, CaControl},
    client, metric_sum, proxy, scrape,
};
use std::net::SocketAddr;

/// Sends `n` requests over one HTTP/2 connection to `addr`, `concurrency` at a time; every
/// other one a POST with a body of `body` bytes. Returns each response's status and body.
async fn load(
    addr: SocketAddr,
    authority: &str,
    n: usize,
    concurrency: usize,
    body: usize,
) -> Vec<(u16, String, String)> {
    let tx = client::http2::<Full<Bytes>>(addr).await;
    let next = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let (mut tx, next, authority) = (tx.clone(), next.clone(), authority.to_string());
        tasks.push(tokio::spawn(async move {
            let mut out = Vec::new();
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= n {
                    return out;
                }
                let (req, want) = if i % 2 == 0 {
                    let req = Request::get(format!("http://{authority}/"))
                        .body(Full::default())
                        .unwrap();
                    (req, "GET 0".to_string())
                } else {
                    let req = Request::post(format!("http://{authority}/"))
                        .header("content-length", body)
                        .body(Full::new(Bytes::from(vec![b'x'; body])))
                        .unwrap();
                    (req, format!("POST {body}"))
                };
                let rsp = tx.send_request(req).await.expect("the proxy answers");
                let status = rsp.status().as_u16();
                let got = rsp.into_body().collect().await.expect("a whole body");
                let got = String::from_utf8_lossy(&got.to_bytes()).into_owned();
                out.push((status, got, want));
            }
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    all
}

/// Every response was a 200 with the body the app echoed for its request.
fn assert_all_answered(rsps: &[(u16, String, String)]) {
    let failed: Vec<_> = rsps
        .iter()
        .filter(|(status, got, want)| *status != 200 || got != want)
        .collect();
    assert!(
        failed.is_empty(),
        "{} of {} requests failed: {:?}",
        failed.len(),
        rsps.len(),
        &failed[..failed.len().min(5)]
    );
}

/// Sends batches of 300 requests (every other one a 2 KiB POST) through `proxy` to
/// `authority`, each answered in full, until `admin`'s pool has re-sent some refused requests
/// in `direction` (whether a stream races a GOAWAY is timing); at most 20 batches.
async fn load_until_resent(proxy: SocketAddr, authority: &str, admin: SocketAddr, direction: &str) {
    for batch in 1.. {
        let rsps = load(proxy, authority, 300, 16, 2048).await;
        assert_all_answered(&rsps);
        let m = scrape(admin).await;
        let label = format!("direction=\"{direction}\"");
        if metric_sum(&m, "http_pool_requests_resent_total", &[&label]) > 0.0 {
            return;
        }
        assert!(batch < 20, "no request was refused in {batch} batches: {m}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_recycling_its_http2_connections_loses_no_request() {
    // A GOAWAY after every 10 streams, while 16 are in flight: many are refused.
    let app = backend::recycling_h2(10).await;
    let proxy = proxy(
        &[("LINKERD2_PROXY_HTTP_RESPONSE_HEADERS_TIMEOUT", "10s")],
        Some(app.addr),
    );
    load_until_resent(
        proxy.outbound_addr,
        "web.test",
        proxy.admin_addr,
        "outbound",
    )
    .await;
    assert!(app.connections() >= 10, "the app recycled its connections");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn through_the_mesh_a_recycling_server_behind_the_server_proxy_loses_no_request() {
    const WEB: &str = "web.ns.svc.cluster.local";
    let ctl = CaControl::start("24h", &["client", "server"]).await;
    let app = backend::recycling_h2(10).await;
    let server = ctl.h2_service_behind(WEB, 8080, app.addr, "server").await;
    let mut env = ctl.proxy_env("client");
    env.push((
        "LINKERD2_PROXY_DESTINATION_SVC_ADDR".into(),
        ctl.addr.to_string(),
    ));
    let client = start_proxy(&env, None);
    ready(client.admin_addr).await;

    // The server proxy's pool to the app re-sends the refused requests.
    let web = format!("{WEB}:8080");
    load_until_resent(client.outbound_addr, &web, server.admin_addr, "inbound").await;
    assert!(app.connections() >= 10, "the app recycled its connections");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_larger_than_the_bound_is_sent_once_never_truncated() {
    let app = backend::recycling_h2(10).await;
    let proxy = proxy(
        &[("LINKERD2_PROXY_HTTP2_RESEND_MAX_REQUEST_BYTES", "1024")],
        Some(app.addr),
    );
    let rsps = load(proxy.outbound_addr, "web.test", 400, 16, 4096).await;
    // GETs are re-sent; a refused 4 KiB POST is not (it is answered 502), and no POST that
    // reached the app arrived short.
    for (status, got, want) in &rsps {
        match *status {
            200 => assert_eq!(got, want),
            502 => assert!(want.starts_with("POST"), "only bodies over the bound fail"),
            other => panic!("unexpected status {other}"),
        }
    }
    assert!(rsps.iter().any(|(s, ..)| *s == 200));
}
