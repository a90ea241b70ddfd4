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

/// The identity name of `name` in namespace `ns`; a full name (with dots) is itself.
pub fn id(name: &str) -> String {
    match name.contains('.') {
        true => name.to_string(),
        false => format!("{name}.ns.serviceaccount.identity.linkerd.cluster.local"),
    }
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
        write_mesh(&dir, &identities, "services: []\n");
        let (child, addr) = spawn_control(&dir, cert_lifetime, &[]).await;
        Self {
            dir,
            addr,
            trust_anchors,
            identities,
            child,
        }
    }

    /// A rustls server config with a certificate for `name` from this CA (mesh TLS 1.3).
    pub fn server_config(&self, name: &str) -> Arc<rustls::ServerConfig> {
        let ca = linkerd_control::Ca::load(&self.dir.join("ca")).unwrap();
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let signed = ca.issue(name, &key, Duration::from_secs(3600)).unwrap();
        let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![signed.leaf_der.into(), signed.issuer_der.into()],
            PrivateKeyDer::Pkcs8(key.serialize_der().into()),
        )
        .unwrap();
        config.alpn_protocols = vec![b"h2".to_vec()];
        Arc::new(config)
    }

    /// The trust anchors (PEM).
    pub fn trust_anchors(&self) -> &str {
        &self.trust_anchors
    }

    /// The token file of identity `name`.
    pub fn token_file(&self, name: &str) -> std::path::PathBuf {
        self.dir.join(format!("{name}.token"))
    }

    /// Waits until the control plane serves `authority` (`name:port`) with endpoints: the mesh
    /// file it watches has been (re)loaded.
    pub async fn serves(&self, authority: &str) {
        use linkerd_proxy_api::destination::{
            destination_client::DestinationClient, update, GetDestination,
        };
        let addr = self.addr;
        crate::eventually(Duration::from_secs(10), || async move {
            let mut client = DestinationClient::connect(format!("http://{addr}"))
                .await
                .map_err(|e| e.to_string())?;
            let get = GetDestination {
                scheme: "k8s".into(),
                path: authority.into(),
                context_token: String::new(),
            };
            let mut updates = client
                .get(get)
                .await
                .map_err(|e| e.to_string())?
                .into_inner();
            let first = tokio::time::timeout(Duration::from_secs(1), updates.message())
                .await
                .map_err(|_| "no answer within 1s".to_string())?
                .map_err(|e| e.to_string())?;
            match first.and_then(|u| u.update) {
                Some(update::Update::Add(set)) if !set.addrs.is_empty() => Ok(()),
                other => Err(format!("{other:?}")),
            }
        })
        .await
    }

    /// Replaces the mesh file's services (YAML list items under `services:`), keeping the
    /// identities; the control plane reloads it within a few hundred milliseconds.
    pub fn write_mesh(&self, services: &str) {
        write_mesh(&self.dir, &self.identities, services)
    }

    /// Starts a server proxy with identity `server` in front of `app`, and makes `name:port`
    /// discoverable with that one endpoint, meshed through the proxy's opaque-transport port
    /// and hinted `h2`; returns once the proxy is ready and the control plane serves the name.
    pub async fn h2_service_behind(
        &self,
        name: &str,
        port: u16,
        app: SocketAddr,
        server: &str,
    ) -> linkerd_app::Proxy {
        let proxy = start_proxy(&self.proxy_env(server), None);
        self.write_mesh(&format!(
            "services:\n  - name: {name}\n    port: {port}\n    endpoints:\n      - addr: {app}\n        identity: {}\n        opaque_transport_port: {}\n        protocol_hint: h2\n",
            id(server),
            proxy.inbound_addr.port()
        ));
        ready(proxy.admin_addr).await;
        self.serves(&format!("{name}:{port}")).await;
        proxy
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
            ("LINKERD2_PROXY_IDENTITY_LOCAL_NAME".into(), id(name)),
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

/// Starts `linkerd-control` on `dir`'s mesh file and CA; returns it and its address.
async fn spawn_control(
    dir: &std::path::Path,
    cert_lifetime: &str,
    extra: &[&str],
) -> (Child, SocketAddr) {
    let bin = crate::workspace_bin("linkerd-control");
    let mut child = Command::new(&bin)
        .arg("--config")
        .arg(dir.join("mesh.yaml"))
        .args([
            "--listen",
            "127.0.0.1:0",
            "--cert-lifetime",
            cert_lifetime,
            "--ca",
        ])
        .arg(dir.join("ca"))
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // It picks a free port and says which on its first line.
    let stdout = child.stdout.take().unwrap();
    let first = tokio::task::spawn_blocking(move || {
        let mut line = String::new();
        std::io::BufRead::read_line(&mut std::io::BufReader::new(stdout), &mut line).map(|_| line)
    });
    let line = tokio::time::timeout(Duration::from_secs(10), first)
        .await
        .expect("linkerd-control listens")
        .unwrap()
        .unwrap();
    let addr = line
        .trim()
        .strip_prefix("listening on ")
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("linkerd-control said {line:?}"));
    (child, addr)
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

/// Writes `dir/mesh.yaml`: `services` and the `identities`' tokens, replaced at once.
fn write_mesh(dir: &std::path::Path, identities: &[String], services: &str) {
    let mut y = services.to_string();
    y.push_str("identities:\n");
    for i in identities {
        y.push_str(&format!("  - name: {}\n    token: token-of-{i}\n", id(i)));
    }
    let tmp = dir.join("mesh.yaml.tmp");
    std::fs::write(&tmp, y).unwrap();
    std::fs::rename(tmp, dir.join("mesh.yaml")).unwrap();
}

/// Starts an in-process proxy with owned `env` pairs (as [`CaControl::proxy_env`] returns).
pub fn start_proxy(env: &[(String, String)], orig_dst: Option<SocketAddr>) -> linkerd_app::Proxy {
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    crate::proxy(&env, orig_dst)
}

/// Waits (10 s at most) until the proxy's `/ready` says 200, i.e. it has a certificate.
pub async fn ready(admin: SocketAddr) {
    crate::eventually(Duration::from_secs(10), || async {
        let (status, body) = crate::client::get(admin, "/ready").await;
        crate::holds(status == 200, body)
    })
    .await;
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
