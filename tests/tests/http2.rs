//! HTTP/2 and gRPC through the proxy.

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Full};
use linkerd_tests::{backend, client, metric, proxy, scrape};
use std::net::SocketAddr;
use tonic_health::pb::{
    health_check_response::ServingStatus, health_client::HealthClient, HealthCheckRequest,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_with_trailers_on_one_multiplexed_connection() {
    let app = backend::http().await;
    // One upstream connection at most (by default a busy endpoint gets up to one per worker).
    let proxy = proxy(
        &[(
            "LINKERD2_PROXY_OUTBOUND_HTTP2_MAX_CONNECTIONS_PER_ENDPOINT",
            "1",
        )],
        Some(app.addr),
    );
    let tx = client::http2::<Full<Bytes>>(proxy.outbound_addr).await;

    // Concurrent streams on one client connection.
    let mut tasks = Vec::new();
    for _ in 0..10 {
        let mut tx = tx.clone();
        tasks.push(tokio::spawn(async move {
            let req = Request::get("http://web.test/trailers")
                .body(Full::default())
                .unwrap();
            let rsp = tx.send_request(req).await.unwrap();
            assert_eq!(rsp.status(), 200);
            assert_eq!(rsp.version(), http::Version::HTTP_2);
            let collected = rsp.into_body().collect().await.unwrap();
            let trailers = collected.trailers().cloned().expect("trailers arrive");
            assert_eq!(trailers["x-trailer"], "yes");
            assert_eq!(collected.to_bytes(), "hello");
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(
        app.connections(),
        1,
        "one multiplexed HTTP/2 connection upstream"
    );

    // The authority is preserved.
    let mut tx = tx.clone();
    let rsp = tx
        .send_request(
            Request::get("http://web.test/headers")
                .body(Full::default())
                .unwrap(),
        )
        .await
        .unwrap();
    let (_, body) = client::text(rsp).await;
    assert!(
        body.starts_with("GET http://web.test/headers HTTP/2.0"),
        "{body}"
    );

    let m = scrape(proxy.admin_addr).await;
    assert_eq!(
        metric(
            &m,
            "request_total",
            &["authority=\"web.test\"", "direction=\"outbound\""]
        ),
        Some(11.0)
    );
}

async fn grpc_server() -> (SocketAddr, tonic_health::server::HealthReporter) {
    let (reporter, svc) = tonic_health::server::health_reporter();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(svc)
            .serve_with_incoming(tokio_stream_listener(listener)),
    );
    (addr, reporter)
}

fn tokio_stream_listener(
    l: tokio::net::TcpListener,
) -> impl futures_util::Stream<Item = std::io::Result<tokio::net::TcpStream>> {
    futures_util::stream::unfold(l, |l| async move {
        let r = l.accept().await.map(|(s, _)| s);
        Some((r, l))
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_unary_and_server_streaming() {
    let (addr, reporter) = grpc_server().await;
    let proxy = proxy(&[], Some(addr));
    let channel =
        tonic::transport::Endpoint::from_shared(format!("http://{}", proxy.outbound_addr))
            .unwrap()
            .connect()
            .await
            .unwrap();
    let mut client = HealthClient::new(channel);

    // Unary.
    let rsp = client
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .expect("unary call through the proxy");
    assert_eq!(rsp.into_inner().status(), ServingStatus::Serving);

    // An error status travels in trailers.
    let err = client
        .check(HealthCheckRequest {
            service: "no.such.Service".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound);

    // Server streaming: the current status, then an update pushed by the server.
    reporter
        .set_service_status("svc", tonic_health::ServingStatus::Serving)
        .await;
    let mut stream = client
        .watch(HealthCheckRequest {
            service: "svc".into(),
        })
        .await
        .unwrap()
        .into_inner();
    let first = stream.message().await.unwrap().unwrap();
    assert_eq!(first.status(), ServingStatus::Serving);
    reporter
        .set_service_status("svc", tonic_health::ServingStatus::NotServing)
        .await;
    let next = stream.message().await.unwrap().unwrap();
    assert_eq!(next.status(), ServingStatus::NotServing);

    let m = scrape(proxy.admin_addr).await;
    assert_eq!(
        metric(
            &m,
            "response_total",
            &["grpc_status=\"0\"", "classification=\"success\""]
        ),
        Some(1.0)
    );
    assert_eq!(
        metric(
            &m,
            "response_total",
            &["grpc_status=\"5\"", "classification=\"failure\""]
        ),
        Some(1.0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grpc_request_the_proxy_cannot_serve_gets_a_grpc_status() {
    // Nothing listens there: the proxy cannot connect.
    let (_reserved, refusing) = linkerd_tests::refusing_addr();
    let proxy = proxy(&[], Some(refusing));
    let channel =
        tonic::transport::Endpoint::from_shared(format!("http://{}", proxy.outbound_addr))
            .unwrap()
            .connect()
            .await
            .unwrap();
    let err = HealthClient::new(channel)
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unavailable, "{err:?}");
    assert!(
        err.message().contains(&refusing.to_string()),
        "the reason names the target: {err:?}"
    );
}

/// HTTP/2 to the explicit proxy naming its own outbound listener as an IPv4-mapped IPv6
/// address: refused at once, not forwarded to itself stream after stream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn own_listener_spelled_as_mapped_ipv6_is_refused_over_http2() {
    let proxy = proxy(&[], None);
    let mut tx = client::http2::<Full<Bytes>>(proxy.outbound_addr).await;
    let uri = format!("http://[::ffff:127.0.0.1]:{}/", proxy.outbound_addr.port());
    let rsp = tokio::time::timeout(
        std::time::Duration::from_secs(5),
        tx.send_request(Request::get(uri).body(Full::default()).unwrap()),
    )
    .await
    .expect("answered at once")
    .unwrap();
    assert_eq!(rsp.status(), 403);
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
