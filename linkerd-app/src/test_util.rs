//! What the crate's unit tests share: configurations, a direction's dialing, and requests
//! through a stack served over a connection.

use crate::{config::ProxyConfig, Config};
use hyper::body::Incoming;
use linkerd_connect::Connector;
use linkerd_http::{Client, PoolMetrics, RequestStack, ServerConfig, Version};
use linkerd_metrics::Registry;
use linkerd_proxy_transport::{Direction, TcpMetrics};
use std::{collections::HashMap, time::Duration};

/// A configuration with `env` over the defaults.
pub(crate) fn config(env: &[(&str, &str)]) -> Config {
    let env: HashMap<String, String> = env
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    Config::from_env(&env).expect("a valid test config")
}

/// A direction's TCP metrics, connector and client pool, without identity.
pub(crate) fn dialing(
    config: &ProxyConfig,
    direction: Direction,
    reg: &mut Registry,
) -> (
    TcpMetrics,
    Connector,
    Client<linkerd_http::ForwardBody, Connector>,
) {
    let tcp = TcpMetrics::register(reg);
    let connector = Connector::new(None, Duration::from_secs(1), tcp.clone(), direction);
    let client = Client::new(
        config.client.clone(),
        direction,
        PoolMetrics::register(reg),
        connector.clone(),
        false,
    );
    (tcp, connector, client)
}

/// Sends `req` through `stack`, served over a connection like the proxy's (request stacks
/// take hyper's `Incoming` bodies, which only a connection makes); returns the status,
/// `l5d-proxy-error` and the body.
pub(crate) async fn roundtrip(
    stack: impl RequestStack,
    req: hyper::Request<http_body_util::Empty<bytes::Bytes>>,
) -> (u16, String, String) {
    use http_body_util::BodyExt;
    let (client, io) = tokio::io::duplex(64 * 1024);
    let config = ServerConfig::default();
    let never = tokio_util::sync::CancellationToken::new();
    tokio::spawn(linkerd_http::serve(
        io,
        Version::Http1,
        &config,
        stack,
        never,
        None,
    ));
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
