//! A real local control plane with a CA: `linkerd-control ca init`, then `linkerd-control
//! --config mesh.yaml --listen ADDR --ca DIR`, as a child process, with token files for the
//! identities it certifies, and client certificates for tests that play a peer proxy.

use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use std::{
    net::SocketAddr,
    path::PathBuf,
    process::{Child, Command, Stdio},
    sync::Arc,
    time::Duration,
};

/// A running `linkerd-control` with a CA.
pub struct CaControl {
    pub dir: PathBuf,
    pub addr: SocketAddr,
    pub trust_anchors: String,
    identities: Vec<String>,
    child: Child,
}

/// The identity name of `name` in namespace `ns`.
pub fn id(name: &str) -> String {
    format!("{name}.ns.serviceaccount.identity.linkerd.cluster.local")
}

impl CaControl {
    /// `ca init` in a fresh directory, then serves with `cert_lifetime` (e.g. `24h`, `10s`),
    /// certifying `identities` (each with its own token file).
    pub async fn start(cert_lifetime: &str, identities: &[&str]) -> Self {
        let dir = std::env::temp_dir().join(format!(
            "l5d-ca-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let bin = crate::workspace_bin("linkerd-control");
        let out = Command::new(&bin)
            .args(["ca", "init", "--dir"])
            .arg(dir.join("ca"))
            .output()
            .unwrap();
        assert!(out.status.success(), "ca init: {out:?}");
        let trust_anchors = std::fs::read_to_string(dir.join("ca/trust-anchors.pem")).unwrap();
        let identities: Vec<String> = identities.iter().map(|s| s.to_string()).collect();
        for i in &identities {
            std::fs::write(dir.join(format!("{i}.token")), format!("token-of-{i}\n")).unwrap();
        }
        let addr = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let mut ctl = Self {
            dir,
            addr,
            trust_anchors,
            identities,
            child: Command::new("true").spawn().unwrap(),
        };
        ctl.write_mesh("services: []\n");
        ctl.child = Command::new(&bin)
            .arg("--config")
            .arg(ctl.dir.join("mesh.yaml"))
            .args([
                "--listen",
                &addr.to_string(),
                "--cert-lifetime",
                cert_lifetime,
                "--ca",
            ])
            .arg(ctl.dir.join("ca"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        tokio::time::timeout(Duration::from_secs(10), async {
            while tokio::net::TcpStream::connect(addr).await.is_err() {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await
        .expect("linkerd-control listens");
        ctl
    }

    /// Replaces the mesh file's services (YAML list items under `services:`), keeping the
    /// identities; the control plane reloads it within a few hundred milliseconds.
    pub fn write_mesh(&self, services: &str) {
        let mut y = services.to_string();
        y.push_str("identities:\n");
        for i in &self.identities {
            y.push_str(&format!("  - name: {}\n    token: token-of-{i}\n", id(i)));
        }
        let tmp = self.dir.join("mesh.yaml.tmp");
        std::fs::write(&tmp, y).unwrap();
        std::fs::rename(tmp, self.dir.join("mesh.yaml")).unwrap();
    }

    /// The identity variables of a proxy that is `name`.
    pub fn proxy_env(&self, name: &str) -> Vec<(String, String)> {
        vec![
            (
                "LINKERD2_PROXY_IDENTITY_SVC_ADDR".into(),
                self.addr.to_string(),
            ),
            (
                "LINKERD2_PROXY_IDENTITY_TRUST_ANCHORS".into(),
                self.trust_anchors.clone(),
            ),
            ("LINKERD2_PROXY_IDENTITY_SERVER_ID".into(), id(name)),
            (
                "LINKERD2_PROXY_IDENTITY_TOKEN_FILE".into(),
                self.dir
                    .join(format!("{name}.token"))
                    .to_string_lossy()
                    .into_owned(),
            ),
        ]
    }

    /// A rustls client config that trusts this CA and, with `cert_for`, presents a certificate
    /// for that identity signed by this CA.
    pub fn client_config(&self, cert_for: Option<&str>) -> Arc<rustls::ClientConfig> {
        let mut roots = rustls::RootCertStore::empty();
        for c in CertificateDer::pem_slice_iter(self.trust_anchors.as_bytes()) {
            roots.add(c.unwrap()).unwrap();
        }
        let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_root_certificates(roots);
        let config = match cert_for {
            None => builder.with_no_client_auth(),
            Some(name) => {
                let ca = linkerd_control::Ca::load(&self.dir.join("ca")).unwrap();
                let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
                let signed = ca
                    .issue(&id(name), &key, Duration::from_secs(3600))
                    .unwrap();
                builder
                    .with_client_auth_cert(
                        vec![signed.leaf_der.into(), signed.issuer_der.into()],
                        PrivateKeyDer::Pkcs8(key.serialize_der().into()),
                    )
                    .unwrap()
            }
        };
        Arc::new(config)
    }
}

use rustls::pki_types::pem::PemObject;

static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

impl Drop for CaControl {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Starts an in-process proxy with owned `env` pairs (as [`CaControl::proxy_env`] returns).
pub fn start_proxy(env: &[(String, String)], orig_dst: Option<SocketAddr>) -> linkerd_app::Proxy {
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    crate::proxy(&env, orig_dst)
}

/// Waits (10 s at most) until the proxy's `/ready` says 200, i.e. it has a certificate.
pub async fn ready(admin: SocketAddr) {
    tokio::time::timeout(Duration::from_secs(10), async {
        while crate::client::get(admin, "/ready").await.0 != 200 {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("the proxy gets a certificate");
}

/// Connects to `addr` with TLS for `server` (an identity or any DNS name) using `config`.
pub async fn tls_connect(
    addr: SocketAddr,
    server: &str,
    config: Arc<rustls::ClientConfig>,
) -> std::io::Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>> {
    let socket = tokio::net::TcpStream::connect(addr).await?;
    let name = ServerName::try_from(server.to_string()).unwrap();
    tokio_rustls::TlsConnector::from(config)
        .connect(name, socket)
        .await
}
