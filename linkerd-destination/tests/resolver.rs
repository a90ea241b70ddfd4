//! The resolver against a real Destination server (`linkerd-control`, in-process): shared
//! streams, incremental updates, the control plane going away and coming back, idle close.

use linkerd_control::{DestinationService, Mesh, MeshConfig};
use linkerd_destination::{DestinationConfig, Resolution, Resolver};
use linkerd_proxy_api::destination::destination_server::DestinationServer;
use std::{net::SocketAddr, sync::Arc, time::Duration};
use tokio::sync::watch;

fn mesh(addrs: &[&str]) -> MeshConfig {
    let eps: String = addrs
        .iter()
        .map(|a| format!("      - addr: {a}\n"))
        .collect();
    MeshConfig::parse(&format!(
        "services:\n  - name: web.default.svc.cluster.local\n    port: 8080\n    endpoints:\n{eps}"
    ))
    .unwrap()
}

/// Serves `mesh` on an ephemeral port, reachable at `addr` through a link that
/// [`Link::cut`] severs (the server and every open connection go away at once).
struct Link(tokio::task::JoinSet<()>);

impl Link {
    fn cut(mut self) {
        self.0.abort_all();
    }
}

async fn serve(addr: SocketAddr, mesh: Mesh) -> Link {
    let server = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let server_addr = server.local_addr().unwrap();
    let mut tasks = tokio::task::JoinSet::new();
    tasks.spawn(async move {
        let _ = tonic::transport::Server::builder()
            .add_service(DestinationServer::new(DestinationService::new(mesh)))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(server))
            .await;
    });
    let front = loop {
        match tokio::net::TcpListener::bind(addr).await {
            Ok(l) => break l,
            Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    };
    let conns = std::sync::Arc::new(tokio::sync::Mutex::new(tokio::task::JoinSet::new()));
    let c = conns.clone();
    tasks.spawn(async move {
        // Dropping this task (on cut) drops the listener and aborts every forwarded connection.
        let _guard = AbortOnDrop(c.clone());
        while let Ok((mut client, _)) = front.accept().await {
            let mut upstream = tokio::net::TcpStream::connect(server_addr).await.unwrap();
            c.lock().await.spawn(async move {
                let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
            });
        }
    });
    Link(tasks)
}

struct AbortOnDrop(std::sync::Arc<tokio::sync::Mutex<tokio::task::JoinSet<()>>>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        if let Ok(mut set) = self.0.try_lock() {
            set.abort_all();
        }
    }
}

async fn until(
    rx: &mut watch::Receiver<Arc<Resolution>>,
    f: impl Fn(&Resolution) -> bool,
) -> Arc<Resolution> {
    tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            let r = rx.borrow_and_update().clone();
            if f(&r) {
                return r;
            }
            rx.changed().await.unwrap();
        }
    })
    .await
    .expect("the resolution reached the expected state")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shared_streams_survive_control_plane_loss() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter("linkerd=debug")
        .with_test_writer()
        .try_init();
    let addr: SocketAddr = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let m = Mesh::new(mesh(&["127.0.0.1:9001", "127.0.0.1:9002"]));
    let stop = serve(addr, m.clone()).await;

    let mut registry = linkerd_metrics::Registry::default();
    let resolver = Resolver::new(
        DestinationConfig {
            addr: addr.to_string(),
            context: "{\"ns\":\"test\"}".into(),
            idle_timeout: Duration::from_millis(300),
            min_backoff: Duration::from_millis(50),
            max_backoff: Duration::from_millis(200),
            connect_timeout: Duration::from_secs(1),
            stream_limits: Default::default(),
        },
        &mut registry,
    )
    .unwrap();
    let name = "web.default.svc.cluster.local:8080";
    let mut a = resolver.resolve(name);
    let mut b = resolver.resolve(name);
    assert_eq!(resolver.streams(), 1, "one stream per name");
    until(&mut a, |r| r.endpoints.len() == 2).await;
    until(&mut b, |r| r.endpoints.len() == 2).await;
    let text = registry.encode();
    assert!(
        text.contains(&format!(
            "control_request_total{{addr=\"{addr}\",tls=\"no_identity\",no_tls_reason=\"disabled\"}} 1\n"
        )),
        "{text}"
    );

    // Incremental change.
    m.set(mesh(&["127.0.0.1:9001"]));
    until(&mut a, |r| r.endpoints.len() == 1).await;

    // The control plane goes away: the last known endpoints stay.
    stop.cut();
    tokio::time::sleep(Duration::from_millis(400)).await;
    let r = a.borrow().clone();
    assert_eq!(r.endpoints.len(), 1);
    assert_eq!(r.exists, Some(true));

    // It comes back with other endpoints: picked up within the back-off.
    let m2 = Mesh::new(mesh(&[
        "127.0.0.1:9003",
        "127.0.0.1:9004",
        "127.0.0.1:9005",
    ]));
    let _stop = serve(addr, m2).await;
    let r = until(&mut a, |r| r.endpoints.len() == 3).await;
    assert!(r
        .endpoints
        .contains_key(&"127.0.0.1:9005".parse::<SocketAddr>().unwrap()));
    assert!(registry.encode().contains("classification=\"failure\""));

    // Unknown names are known not to exist.
    let mut u = resolver.resolve("nope.default.svc.cluster.local:80");
    until(&mut u, |r| r.exists == Some(false)).await;

    // Nobody watches: the streams close after the idle timeout.
    drop((a, b, u));
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(resolver.streams(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_stream_is_reopened_and_the_state_kept() {
    let addr: SocketAddr = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let m = Mesh::new(mesh(&["127.0.0.1:9001", "127.0.0.1:9002"]));
    let _stop = serve(addr, m.clone()).await;
    let mut registry = linkerd_metrics::Registry::default();
    let resolver = Resolver::new(
        DestinationConfig {
            addr: addr.to_string(),
            context: String::new(),
            idle_timeout: Duration::from_secs(30),
            min_backoff: Duration::from_millis(10),
            max_backoff: Duration::from_millis(50),
            connect_timeout: Duration::from_secs(1),
            // LINKERD2_PROXY_CONTROL_STREAM_IDLE_TIMEOUT: a stable service's stream is silent.
            stream_limits: linkerd_destination::StreamLimits {
                initial: Some(Duration::from_secs(1)),
                idle: Some(Duration::from_millis(100)),
                lifetime: None,
            },
        },
        &mut registry,
    )
    .unwrap();
    let mut a = resolver.resolve("web.default.svc.cluster.local:8080");
    until(&mut a, |r| r.endpoints.len() == 2).await;
    // Re-opened at least twice more, each stream's first message restoring the same state.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    let requests = |text: &str| -> f64 {
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("control_request_total{{addr=\"{addr}\",tls=\"no_identity\",no_tls_reason=\"disabled\"}} ")))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0)
    };
    loop {
        let text = registry.encode();
        if requests(&text) >= 3.0 {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{text}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(a.borrow().endpoints.len(), 2, "the state stays served");
}
