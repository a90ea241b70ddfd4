//! The outbound stacks as built: the accept step, and the size of a request's future.

use super::*;
use linkerd_http::PoolMetrics;
use linkerd_metrics::Registry;
use std::{collections::HashMap, net::SocketAddr, time::Duration};

/// A configuration with `env` over the defaults.
pub(crate) fn config(env: &[(&str, &str)]) -> Config {
    let env: HashMap<String, String> = env
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    Config::from_env(&env).expect("a valid test config")
}

/// The outbound side of a proxy without identity, with `discovery`.
pub(crate) fn outbound(config: &Config, discovery: Option<Arc<Discovery>>) -> Arc<Outbound> {
    let mut reg = Registry::default();
    let tcp = TcpMetrics::register(&mut reg);
    let connector = Connector::new(
        None,
        Duration::from_secs(1),
        tcp.clone(),
        Direction::Outbound,
    );
    let client = Client::new(
        config.outbound.client.clone(),
        Direction::Outbound,
        PoolMetrics::register(&mut reg),
        connector.clone(),
        false,
    );
    Outbound::new(
        config,
        connector,
        client,
        tcp,
        HttpMetrics::register(&mut reg),
        OwnListeners::new(vec!["127.0.0.1:4140".parse().unwrap()]),
        discovery,
        false,
        CancellationToken::new(),
    )
}

/// Sends `req` through `stack`, served over a connection like the proxy's (request stacks
/// take hyper's `Incoming` bodies, which only a connection makes); returns the status,
/// `l5d-proxy-error` and the body.
pub(crate) async fn roundtrip<S>(
    stack: S,
    req: hyper::Request<http_body_util::Empty<bytes::Bytes>>,
) -> (u16, String, String)
where
    S: tower::Service<
            hyper::Request<Incoming>,
            Response = hyper::Response<ProxyBody>,
            Error = Infallible,
        > + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    use http_body_util::BodyExt;
    let (client, io) = tokio::io::duplex(64 * 1024);
    let config = ServerConfig::default();
    tokio::spawn(async move {
        let never = std::future::pending();
        let _ = linkerd_http::serve(io, Version::Http1, &config, stack, never).await;
    });
    let (mut tx, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(client))
            .await
            .unwrap();
    tokio::spawn(conn);
    let rsp = tx.send_request(req).await.unwrap();
    let err = rsp
        .headers()
        .get(linkerd_http::L5D_PROXY_ERROR)
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    let status = rsp.status().as_u16();
    let body = rsp.into_body().collect().await.unwrap().to_bytes();
    (status, err, String::from_utf8_lossy(&body).into_owned())
}

/// The size of the future hyper holds for each request of `stack`.
pub(crate) fn request_future_size<S>(_: &S) -> usize
where
    S: tower::Service<hyper::Request<Incoming>>,
{
    std::mem::size_of::<linkerd_http::RequestFuture<S>>()
}

/// What hyper holds for every request, in every outbound stack (it once grew to 6.7 KB, and
/// memmoves of it showed at the top of a profile): at most 1 KiB.
#[tokio::test]
async fn a_requests_future_stays_small() {
    let outbound = outbound(&config(&[]), None);
    let target = |orig_dst: Option<SocketAddr>, h2| OutboundTarget {
        orig_dst,
        service: None,
        meshed: None,
        h2,
        opaque: false,
    };
    let fixed = outbound.request_stack(target(Some("10.0.0.1:8080".parse().unwrap()), true));
    let explicit = outbound.request_stack(target(None, false));
    for (name, size) in [
        ("to the original destination", request_future_size(&fixed)),
        ("explicit", request_future_size(&explicit)),
    ] {
        eprintln!("{name}: {size} bytes");
        assert!(size <= 1024, "{name}: {size} bytes");
    }
}

#[tokio::test]
async fn accept_takes_the_original_destination_unless_it_is_the_listener() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let local = listener.local_addr().unwrap();
    let accept = accept(TcpMetrics::register(&mut Registry::default()));
    for (orig_dst, expected) in [
        (
            Some("10.0.0.1:8080".parse().unwrap()),
            Some("10.0.0.1:8080"),
        ),
        (Some(local), None),
        (None, None),
    ] {
        let _client = tokio::net::TcpStream::connect(local).await.unwrap();
        let (socket, client) = listener.accept().await.unwrap();
        let (conn, _) = accept(Accepted {
            socket,
            client,
            local,
            orig_dst,
        });
        assert_eq!(conn.orig_dst, expected.map(|a| a.parse().unwrap()));
    }
}
