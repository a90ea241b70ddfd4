//! The outbound policy watch against an in-process `OutboundPolicies` server whose every
//! `Watch` plays the next script.

use super::*;
use crate::config::StreamLimits;
use linkerd_policy::outbound::Protocol;
use linkerd_proxy_api::outbound::outbound_policies_server::{
    OutboundPolicies as Api, OutboundPoliciesServer,
};
use std::{
    collections::VecDeque,
    pin::Pin,
    sync::atomic::{AtomicUsize, Ordering},
    time::Duration,
};
use tokio_stream::{Stream, StreamExt};

type Script = Vec<Result<api::OutboundPolicy, tonic::Status>>;

#[derive(Clone, Default)]
struct Server {
    calls: Arc<AtomicUsize>,
    scripts: Arc<parking_lot::Mutex<VecDeque<Script>>>,
}

#[tonic::async_trait]
impl Api for Server {
    async fn get(
        &self,
        _: tonic::Request<TrafficSpec>,
    ) -> Result<tonic::Response<api::OutboundPolicy>, tonic::Status> {
        Err(tonic::Status::unimplemented("watch"))
    }

    type WatchStream =
        Pin<Box<dyn Stream<Item = Result<api::OutboundPolicy, tonic::Status>> + Send>>;

    async fn watch(
        &self,
        req: tonic::Request<TrafficSpec>,
    ) -> Result<tonic::Response<Self::WatchStream>, tonic::Status> {
        if req.get_ref().target == Some(traffic_spec::Target::Authority("nope:80".into())) {
            return Err(tonic::Status::not_found("no such service"));
        }
        self.calls.fetch_add(1, Ordering::SeqCst);
        let script = self.scripts.lock().pop_front().unwrap_or_default();
        let ends = script.last().is_some_and(|m| m.is_err());
        let items = tokio_stream::iter(script);
        // A script that does not end in an error leaves its stream open.
        let rest = tokio_stream::pending().take(usize::from(!ends));
        Ok(tonic::Response::new(Box::pin(items.chain(rest))))
    }
}

/// A policy with `n` HTTP/1 routes to `web:80`.
fn policy(n: usize) -> api::OutboundPolicy {
    use api::http_route as hr;
    let route = api::HttpRoute {
        metadata: None,
        hosts: vec![],
        rules: vec![hr::Rule {
            backends: Some(hr::Distribution {
                kind: Some(hr::distribution::Kind::FirstAvailable(
                    hr::distribution::FirstAvailable {
                        backends: vec![hr::RouteBackend {
                            backend: Some(api::Backend {
                                metadata: None,
                                kind: Some(api::backend::Kind::Forward(
                                    linkerd_proxy_api::destination::WeightedAddr {
                                        addr: Some(
                                            "10.0.0.1:80".parse::<SocketAddr>().unwrap().into(),
                                        ),
                                        weight: 1,
                                        ..Default::default()
                                    },
                                )),
                                queue: None,
                            }),
                            ..Default::default()
                        }],
                    },
                )),
            }),
            ..Default::default()
        }],
    };
    api::OutboundPolicy {
        protocol: Some(api::ProxyProtocol {
            kind: Some(api::proxy_protocol::Kind::Http1(
                api::proxy_protocol::Http1 {
                    routes: vec![route; n],
                    failure_accrual: None,
                },
            )),
        }),
        metadata: None,
    }
}

fn routes(p: &TargetPolicy) -> Option<usize> {
    match p {
        Known::Policy(p) => match &p.protocol {
            Protocol::Http1(h) => Some(h.routes.len()),
            _ => None,
        },
        _ => None,
    }
}

async fn start(server: Server) -> Arc<OutboundPolicies> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(OutboundPoliciesServer::new(server))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    let channel = ControlChannel::unmetered(
        tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
            .unwrap()
            .connect_lazy(),
    );
    store(
        channel,
        "test".into(),
        WatchConfig {
            idle_timeout: Duration::from_secs(60),
            initial_timeout: Duration::from_secs(5),
            limits: StreamLimits::default(),
        },
    )
}

/// Waits (bounded) for the watch to hold what `f` accepts.
async fn until(
    rx: &mut tokio::sync::watch::Receiver<TargetPolicy>,
    f: impl Fn(&TargetPolicy) -> bool,
) -> TargetPolicy {
    let seen = tokio::time::timeout(Duration::from_secs(5), rx.wait_for(|p| f(p)))
        .await
        .expect("within 5s")
        .expect("the watch lives");
    seen.clone()
}

#[tokio::test]
async fn policies_are_cached_kept_through_bad_input_and_loss_and_updated() {
    let server = Server::default();
    server.scripts.lock().extend([
        // The first stream: a policy, an invalid one, a second policy, then the stream fails.
        vec![
            Ok(policy(1)),
            Ok(api::OutboundPolicy::default()),
            Ok(policy(2)),
            Err(tonic::Status::unavailable("control plane restarting")),
        ],
        // After the re-open: a third.
        vec![Ok(policy(3))],
    ]);
    let store = start(server.clone()).await;
    let web = PolicyTarget::Authority("web:80".into());
    let (first, mut rx) = store.get(web.clone()).await;
    assert!(routes(&first).is_some(), "the first policy: {first:?}");
    // The invalid policy never replaces a good one: each value seen has routes.
    let second = until(&mut rx, |p| routes(p) != Some(1)).await;
    assert_eq!(routes(&second), Some(2), "{second:?}");
    // The stream failed; the policy stayed while it was re-opened, then the new one came.
    let third = until(&mut rx, |p| routes(p) != Some(2)).await;
    assert_eq!(routes(&third), Some(3), "{third:?}");
    assert_eq!(server.calls.load(Ordering::SeqCst), 2);
    // One shared stream per target.
    let (again, _) = store.get(web).await;
    assert_eq!(routes(&again), Some(3));
    assert_eq!(server.calls.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn no_policy_is_the_default_and_only_invalid_ones_are_invalid() {
    let server = Server::default();
    server
        .scripts
        .lock()
        .push_back(vec![Ok(api::OutboundPolicy::default())]);
    let store = start(server).await;
    let (bad, _) = store
        .get(PolicyTarget::Addr("10.0.0.9:80".parse().unwrap()))
        .await;
    assert!(
        matches!(bad, Known::Invalid(ref why) if why.contains("no protocol")),
        "{bad:?}"
    );
    let (none, _) = store.get(PolicyTarget::Authority("nope:80".into())).await;
    assert!(matches!(none, Known::Default), "{none:?}");
}

#[tokio::test]
async fn a_watch_a_connection_follows_outlives_the_idle_timeout() {
    let server = Server::default();
    server
        .scripts
        .lock()
        .extend([vec![Ok(policy(1))], vec![Ok(policy(1))]]);
    let store = start(server).await;
    let (kept, followed) = (
        PolicyTarget::Addr("10.0.0.1:80".parse().unwrap()),
        PolicyTarget::Addr("10.0.0.2:80".parse().unwrap()),
    );
    let (_, rx) = store.get(followed.clone()).await;
    let (_, gone) = store.get(kept.clone()).await;
    drop(gone);
    // Both unused for longer than the idle timeout (60s).
    tokio::time::pause();
    tokio::time::advance(Duration::from_secs(120)).await;
    store.sweep_now();
    assert!(store.watching(&followed), "a live connection follows it");
    assert!(!store.watching(&kept), "idle and followed by no one");
    drop(rx);
    store.sweep_now();
    assert!(!store.watching(&followed));
}
