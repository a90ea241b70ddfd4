//! An in-process control plane (`linkerd-control`'s Destination and OutboundPolicies
//! services) behind a link the
//! test can cut, to take the control plane away from running proxies and bring it back.

use linkerd_control::{DestinationService, Mesh, MeshConfig};
use linkerd_proxy_api::destination::destination_server::DestinationServer;
use std::{net::SocketAddr, sync::Arc, time::Duration};
use tokio::task::JoinSet;

/// A running control plane.
pub struct ControlPlane {
    pub addr: SocketAddr,
    pub mesh: Mesh,
    tasks: JoinSet<()>,
    conns: Arc<parking_lot::Mutex<JoinSet<()>>>,
}

/// A mesh file's text with one service `name:port` and these endpoints (`addr` or
/// `addr weight` or `addr weight pod`).
pub fn mesh(services: &[(&str, u16, &[&str])]) -> MeshConfig {
    let mut y = String::from("services:\n");
    for (name, port, eps) in services {
        y.push_str(&format!(
            "  - name: {name}\n    port: {port}\n    endpoints:\n"
        ));
        for e in *eps {
            let mut parts = e.split_whitespace();
            y.push_str(&format!("      - addr: {}\n", parts.next().unwrap()));
            if let Some(w) = parts.next() {
                y.push_str(&format!("        weight: {w}\n"));
            }
            if let Some(pod) = parts.next() {
                y.push_str(&format!("        labels: {{ pod: {pod} }}\n"));
            }
        }
    }
    MeshConfig::parse(&y).expect("valid mesh")
}

impl ControlPlane {
    /// Serves `config` on an ephemeral loopback port.
    pub async fn start(config: MeshConfig) -> Self {
        let front = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        Self::serve(front, Mesh::new(config)).await
    }

    /// Serves `mesh` again on `addr`, the address of one that was killed (its port is free
    /// again once the killed listener's task has ended).
    pub async fn start_on(addr: SocketAddr, mesh: Mesh) -> Self {
        let front = crate::eventually(Duration::from_secs(5), || {
            tokio::net::TcpListener::bind(addr)
        })
        .await;
        Self::serve(front, mesh).await
    }

    async fn serve(front: tokio::net::TcpListener, mesh: Mesh) -> Self {
        let addr = front.local_addr().unwrap();
        let server = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let server_addr = server.local_addr().unwrap();
        let mut tasks = JoinSet::new();
        let m = mesh.clone();
        tasks.spawn(async move {
            let _ = tonic::transport::Server::builder()
                .add_service(DestinationServer::new(DestinationService::new(m.clone())))
                .add_service(linkerd_control::OutboundPolicyService::new(m).into_server())
                .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(server))
                .await;
        });
        let conns = Arc::new(parking_lot::Mutex::new(JoinSet::new()));
        let c = conns.clone();
        tasks.spawn(async move {
            while let Ok((mut client, _)) = front.accept().await {
                let Ok(mut upstream) = tokio::net::TcpStream::connect(server_addr).await else {
                    continue;
                };
                c.lock().spawn(async move {
                    let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
                });
            }
        });
        Self {
            addr,
            mesh,
            tasks,
            conns,
        }
    }

    /// Takes the control plane away: its listener and every connection to it close at once.
    pub fn kill(mut self) -> (SocketAddr, Mesh) {
        self.tasks.abort_all();
        self.conns.lock().abort_all();
        (self.addr, self.mesh.clone())
    }
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        self.tasks.abort_all();
        self.conns.lock().abort_all();
    }
}
