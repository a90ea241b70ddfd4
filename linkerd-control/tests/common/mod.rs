//! The `linkerd-control` binary run over a mesh file in a temporary directory.

use std::{
    net::SocketAddr,
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::Duration,
};

/// A running control plane, killed (and its directory removed) when dropped.
pub struct Control {
    child: Child,
    pub addr: SocketAddr,
    pub file: PathBuf,
    dir: PathBuf,
}

impl Drop for Control {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Control {
    /// Serves `mesh` (the test's `name` keeps directories apart) on a free loopback port.
    pub fn start(name: &str, mesh: &str) -> Self {
        let dir =
            std::env::temp_dir().join(format!("linkerd-control-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("mesh.yaml");
        std::fs::write(&file, mesh).unwrap();
        let addr: SocketAddr = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap()
        };
        let child = Command::new(env!("CARGO_BIN_EXE_linkerd-control"))
            .args([
                "--config",
                file.to_str().unwrap(),
                "--listen",
                &addr.to_string(),
            ])
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        Self {
            child,
            addr,
            file,
            dir,
        }
    }

    /// Replaces the mesh file.
    pub fn write(&self, mesh: &str) {
        std::fs::write(&self.file, mesh).unwrap();
    }

    /// A gRPC channel to it, once it listens.
    pub async fn channel(&self) -> tonic::transport::Channel {
        let endpoint =
            tonic::transport::Endpoint::from_shared(format!("http://{}", self.addr)).unwrap();
        for _ in 0..250 {
            if let Ok(c) = endpoint.connect().await {
                return c;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("linkerd-control did not listen on {}", self.addr);
    }
}
