//! The outbound stacks as built: the accept step, and the size of a request's future.

use super::*;
use crate::test_util::{config, dialing, request_future_size};
use linkerd_metrics::Registry;
use std::net::SocketAddr;

/// The outbound side of a proxy without identity, with `discovery`.
pub(crate) fn outbound(config: &Config, discovery: Option<Arc<Discovery>>) -> Arc<Outbound> {
    let mut reg = Registry::default();
    let (tcp, connector, client) = dialing(&config.outbound, Direction::Outbound, &mut reg);
    Outbound::new(
        config,
        connector,
        client,
        tcp,
        HttpMetrics::register(&mut reg),
        OwnListeners::new(vec!["127.0.0.1:4140".parse().unwrap()]),
        discovery,
        None,
        false,
        CancellationToken::new(),
    )
}

/// What hyper holds for every request, in every outbound stack (it once grew to 6.7 KB, and
/// memmoves of it showed at the top of a profile): at most 1 KiB.
#[tokio::test]
async fn a_requests_future_stays_small() {
    let outbound = outbound(&config(&[]), None);
    let target = |orig_dst: Option<SocketAddr>, h2| OutboundTarget {
        orig_dst,
        dial: orig_dst,
        service: None,
        meshed: None,
        h2,
        opaque: false,
        policy: None,
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
