//! A mesh of this proxy and linkerd2-proxy, one workload at a time: what each side must send
//! so the other's conversion works. The peer here is played by a plain HTTP/2 server (what
//! linkerd2-proxy's inbound receives) and a raw HTTP/2 client (what it sends).

use bytes::Bytes;
use http::{Request, Version};
use http_body_util::Full;
use linkerd_tests::{backend, client, control::ControlPlane, proxy};

const WEB: &str = "web.default.svc.cluster.local:8080";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upgraded_request_keeps_its_host_header() {
    // The "peer proxy": an HTTP/2 server that shows what it received.
    let peer = backend::http().await;
    let yaml = format!(
        "services:\n  - name: web.default.svc.cluster.local\n    port: 8080\n    endpoints:\n      - addr: {}\n        protocol_hint: h2\n",
        peer.addr
    );
    let control = ControlPlane::start(linkerd_control::MeshConfig::parse(&yaml).unwrap()).await;
    let dst = control.addr.to_string();
    let proxy = proxy(&[("LINKERD2_PROXY_DESTINATION_SVC_ADDR", &dst)], None);

    let mut tx = client::http1::<Full<Bytes>>(proxy.outbound_addr).await;
    let req = Request::get("/headers")
        .header("host", WEB)
        .body(Full::default())
        .unwrap();
    let (status, seen) = client::text(tx.send_request(req).await.unwrap()).await;
    assert_eq!(status, 200, "{seen}");
    assert!(seen.contains("HTTP/2.0"), "carried as HTTP/2: {seen}");
    assert!(seen.contains("l5d-orig-proto: HTTP/1.1"), "{seen}");
    // linkerd2-proxy's downgrade does not rebuild Host from :authority: it must arrive.
    assert!(seen.contains(&format!("\nhost: {WEB}\n")), "{seen}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_downgraded_request_without_host_gets_it_from_the_authority() {
    let app = backend::http().await;
    let proxy = proxy(&[], Some(app.addr));
    // The "peer proxy": HTTP/2 with l5d-orig-proto and no Host header, as linkerd2-proxy's
    // upgrade may send it.
    let mut tx = client::http2::<Full<Bytes>>(proxy.inbound_addr).await;
    let req = Request::get(format!("http://{WEB}/headers"))
        .version(Version::HTTP_2)
        .header("l5d-orig-proto", "HTTP/1.1")
        .body(Full::default())
        .unwrap();
    assert!(req.headers().get("host").is_none());
    let rsp = tx.send_request(req).await.unwrap();
    assert_eq!(
        rsp.headers().get("l5d-orig-proto").map(|v| v.as_bytes()),
        Some(&b"HTTP/1.1"[..])
    );
    let (status, seen) = client::text(rsp).await;
    assert_eq!(status, 200, "{seen}");
    assert!(
        seen.starts_with("GET /headers HTTP/1.1\n"),
        "the app gets HTTP/1.1: {seen}"
    );
    assert!(seen.contains(&format!("\nhost: {WEB}\n")), "{seen}");
}
