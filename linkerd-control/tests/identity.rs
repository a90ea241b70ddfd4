//! The CA and the Identity service: `ca init`, Certify's checks, the issued leaf verifying for
//! both TLS roles, plaintext and TLS on one port, and the binary end to end.

use linkerd_control::{ca, serve, tls, Ca, IdentityService, Mesh, MeshConfig};
use linkerd_proxy_api::identity::{identity_client::IdentityClient, CertifyRequest};
use rcgen::{CertificateParams, DistinguishedName, DnType, KeyPair};
use rustls_pki_types::{pem::PemObject, CertificateDer, ServerName, UnixTime};
use std::{
    future::Future,
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::Arc,
    time::{Duration, SystemTime, UNIX_EPOCH},
};
use tokio::net::{TcpListener, TcpStream};
use tonic::{
    transport::{Channel, Endpoint, Uri},
    Code,
};

const WEB: &str = "web.default.serviceaccount.identity.linkerd.cluster.local";
const DB: &str = "db.default.serviceaccount.identity.linkerd.cluster.local";
const WAIT: Duration = Duration::from_secs(5);

const MESH: &str = "
identities:
  - name: web.default.serviceaccount.identity.linkerd.cluster.local
    token: web-token
  - name: db.default.serviceaccount.identity.linkerd.cluster.local
    token: db-token
";

async fn within<T>(what: &str, f: impl Future<Output = T>) -> T {
    tokio::time::timeout(WAIT, f)
        .await
        .unwrap_or_else(|_| panic!("{what}: no answer within {WAIT:?}"))
}

fn tmpdir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "linkerd-control-identity-{name}-{}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A CSR as a proxy makes it: a P-256 key and the identity as DNS SAN and CN.
fn csr_for(name: &str) -> Vec<u8> {
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(vec![name.to_string()]).unwrap();
    params.distinguished_name = DistinguishedName::new();
    params.distinguished_name.push(DnType::CommonName, name);
    params.serialize_request(&key).unwrap().der().to_vec()
}

fn certify(identity: &str, token: &str, csr: Vec<u8>) -> CertifyRequest {
    CertifyRequest {
        identity: identity.into(),
        token: token.as_bytes().to_vec(),
        certificate_signing_request: csr,
    }
}

fn anchors(dir: &Path) -> Vec<CertificateDer<'static>> {
    CertificateDer::pem_file_iter(dir.join(ca::TRUST_ANCHORS_FILE))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

/// Verifies `leaf` (with `intermediates`) for `name`, as a server and as a client.
fn verify(dir: &Path, name: &str, leaf: &[u8], intermediates: &[Vec<u8>]) {
    let anchors = anchors(dir);
    let anchors: Vec<_> = anchors
        .iter()
        .map(|a| webpki::anchor_from_trusted_cert(a).unwrap().to_owned())
        .collect();
    let intermediates: Vec<CertificateDer<'_>> = intermediates
        .iter()
        .map(|c| CertificateDer::from(c.as_slice()))
        .collect();
    let leaf = CertificateDer::from(leaf);
    let ee = webpki::EndEntityCert::try_from(&leaf).unwrap();
    for usage in [
        webpki::KeyUsage::server_auth(),
        webpki::KeyUsage::client_auth(),
    ] {
        ee.verify_for_usage(
            webpki::ALL_VERIFICATION_ALGS,
            &anchors,
            &intermediates,
            UnixTime::now(),
            usage,
            None,
            None,
        )
        .unwrap();
    }
    ee.verify_is_valid_for_subject_name(&ServerName::try_from(name).unwrap())
        .unwrap();
    let other = ServerName::try_from("other.identity.linkerd.cluster.local").unwrap();
    assert!(ee.verify_is_valid_for_subject_name(&other).is_err());
}

/// When the response says the leaf expires.
fn valid_until(resp: &linkerd_proxy_api::identity::CertifyResponse) -> SystemTime {
    let ts = resp.valid_until.as_ref().expect("valid_until is set");
    UNIX_EPOCH + Duration::new(ts.seconds as u64, ts.nanos as u32)
}

/// An in-process control plane with a fresh CA, stopped when dropped.
struct Server {
    addr: SocketAddr,
    dir: PathBuf,
    mesh: Mesh,
    _stop: tokio::sync::oneshot::Sender<()>,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

async fn start(name: &str, lifetime: Duration) -> Server {
    // Logs show with --nocapture (or on failure).
    let _ = tracing_subscriber::fmt().with_test_writer().try_init();
    let dir = tmpdir(name);
    Ca::init(&dir, false).unwrap();
    let ca = Arc::new(Ca::load(&dir).unwrap());
    let mesh = Mesh::new(MeshConfig::parse(MESH).unwrap());
    let identity = IdentityService::new(ca.clone(), mesh.clone(), lifetime);
    let tls = tls::server_config(ca, tls::DEFAULT_IDENTITY).unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(serve(
        listener,
        mesh.clone(),
        Some(identity),
        Some(tls),
        async move {
            let _ = stopped.await;
        },
    ));
    Server {
        addr,
        dir,
        mesh,
        _stop: stop,
    }
}

async fn plaintext(addr: SocketAddr) -> IdentityClient<Channel> {
    within("connect", async {
        loop {
            match IdentityClient::connect(format!("http://{addr}")).await {
                Ok(c) => break c,
                Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        }
    })
    .await
}

/// A client over TLS 1.3 trusting the CA's trust anchors, asking for `sni`.
async fn over_tls(
    addr: SocketAddr,
    dir: &Path,
    sni: &str,
) -> Result<IdentityClient<Channel>, tonic::transport::Error> {
    let mut roots = rustls::RootCertStore::empty();
    for a in anchors(dir) {
        roots.add(a).unwrap();
    }
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_protocol_versions(&[&rustls::version::TLS13])
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec()];
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let sni = ServerName::try_from(sni.to_string()).unwrap();
    let endpoint = Endpoint::from_shared(format!("http://{addr}")).unwrap();
    let channel = endpoint.connect_with_connector(tower::service_fn(move |_: Uri| {
        let (connector, sni) = (connector.clone(), sni.clone());
        async move {
            let tcp = TcpStream::connect(addr).await?;
            let tls = connector.connect(sni, tcp).await?;
            assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
            Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(tls))
        }
    }));
    within("TLS connect", channel)
        .await
        .map(IdentityClient::new)
}

#[tokio::test]
async fn certify_checks_the_token_and_the_csr() {
    let server = start("checks", Duration::from_secs(3600)).await;
    let mut client = plaintext(server.addr).await;

    // The right token (with the newline a token file ends with) and CSR: a leaf for the name.
    let resp = within(
        "certify",
        client.certify(certify(WEB, "web-token\n", csr_for(WEB))),
    )
    .await
    .unwrap()
    .into_inner();
    assert_eq!(resp.intermediate_certificates.len(), 1);
    verify(
        &server.dir,
        WEB,
        &resp.leaf_certificate,
        &resp.intermediate_certificates,
    );

    let status = |req| {
        let mut client = client.clone();
        async move {
            within("certify", client.certify(req))
                .await
                .expect_err("refused")
        }
    };
    // Another identity's token.
    let s = status(certify(WEB, "db-token", csr_for(WEB))).await;
    assert_eq!(s.code(), Code::Unauthenticated, "{s:?}");
    assert!(!s.message().contains("db-token"), "{s:?}");
    // An identity not in the file.
    let s = status(certify(
        "cache.identity",
        "web-token",
        csr_for("cache.identity"),
    ))
    .await;
    assert_eq!(s.code(), Code::Unauthenticated, "{s:?}");
    // A CSR for another name.
    let s = status(certify(WEB, "web-token", csr_for(DB))).await;
    assert_eq!(s.code(), Code::InvalidArgument, "{s:?}");
    // A CSR whose signature doesn't verify (its last byte is the signature's).
    let mut bad = csr_for(WEB);
    let last = bad.len() - 1;
    bad[last] ^= 0x01;
    let s = status(certify(WEB, "web-token", bad)).await;
    assert_eq!(s.code(), Code::InvalidArgument, "{s:?}");
    assert!(s.message().contains("signature"), "{s:?}");
    // Not a CSR at all.
    let s = status(certify(WEB, "web-token", b"hello".to_vec())).await;
    assert_eq!(s.code(), Code::InvalidArgument, "{s:?}");
    // Too big to be a CSR: refused before it is decoded.
    let s = status(certify(WEB, "web-token", vec![0; 100 * 1024])).await;
    assert_eq!(s.code(), Code::OutOfRange, "{s:?}");
}

#[tokio::test]
async fn the_lifetime_is_respected() {
    let lifetime = Duration::from_secs(10);
    let server = start("lifetime", lifetime).await;
    let mut client = plaintext(server.addr).await;
    let before = SystemTime::now();
    let resp = within(
        "certify",
        client.certify(certify(DB, "db-token", csr_for(DB))),
    )
    .await
    .unwrap()
    .into_inner();
    let until = valid_until(&resp);
    let left = until.duration_since(before).unwrap();
    // Rounded up to a whole second, as X.509 writes it.
    assert!(
        left <= lifetime + Duration::from_secs(1) && left >= lifetime - Duration::from_secs(1),
        "{left:?}"
    );
    // valid_until is what the certificate says.
    let (_, leaf) = x509_parser::parse_x509_certificate(&resp.leaf_certificate).unwrap();
    let not_after = leaf.validity().not_after.timestamp();
    assert_eq!(
        not_after,
        until.duration_since(UNIX_EPOCH).unwrap().as_secs() as i64
    );
    let not_before = leaf.validity().not_before.timestamp();
    let now = before.duration_since(UNIX_EPOCH).unwrap().as_secs() as i64;
    assert!(
        (now - 11..=now - 9).contains(&not_before),
        "clock skew allowance"
    );
    assert!(!leaf.is_ca());
}

#[tokio::test]
async fn a_reload_changes_who_may_ask() {
    let server = start("reload", Duration::from_secs(3600)).await;
    let mut client = plaintext(server.addr).await;
    let new = "cache.default.serviceaccount.identity.linkerd.cluster.local";
    let s = within("certify", client.certify(certify(new, "c", csr_for(new))))
        .await
        .unwrap_err();
    assert_eq!(s.code(), Code::Unauthenticated);
    server
        .mesh
        .set(MeshConfig::parse(&format!("identities:\n  - name: {new}\n    token: c\n")).unwrap());
    within("certify", client.certify(certify(new, "c", csr_for(new))))
        .await
        .unwrap();
    let s = within(
        "certify",
        client.certify(certify(WEB, "web-token", csr_for(WEB))),
    )
    .await
    .unwrap_err();
    assert_eq!(s.code(), Code::Unauthenticated, "WEB is gone");
}

#[tokio::test]
async fn tls_and_plaintext_share_the_port() {
    let server = start("tls", Duration::from_secs(3600)).await;
    let mut tls_client = over_tls(server.addr, &server.dir, tls::DEFAULT_IDENTITY)
        .await
        .unwrap();
    let resp = within(
        "certify over TLS",
        tls_client.certify(certify(WEB, "web-token", csr_for(WEB))),
    )
    .await
    .unwrap()
    .into_inner();
    verify(
        &server.dir,
        WEB,
        &resp.leaf_certificate,
        &resp.intermediate_certificates,
    );
    let mut plain = plaintext(server.addr).await;
    within(
        "certify in plaintext",
        plain.certify(certify(DB, "db-token", csr_for(DB))),
    )
    .await
    .unwrap();
    // The server's certificate is for its name only.
    assert!(over_tls(
        server.addr,
        &server.dir,
        "other.identity.linkerd.cluster.local"
    )
    .await
    .is_err());
    // Nor does another CA's client trust it.
    let other = tmpdir("tls-other");
    Ca::init(&other, false).unwrap();
    assert!(over_tls(server.addr, &other, tls::DEFAULT_IDENTITY)
        .await
        .is_err());
    let _ = std::fs::remove_dir_all(&other);
}

/// Runs the binary; killed when dropped.
struct Control(Child);

impl Drop for Control {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn control(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_linkerd-control"))
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn ca_init_writes_the_files_and_refuses_to_overwrite() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tmpdir("init").join("ca");
    let d = dir.to_str().unwrap();
    let out = control(&["ca", "init", "--dir", d]);
    assert!(out.status.success(), "{out:?}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("discarded"), "{stdout}");
    for f in [
        ca::TRUST_ANCHORS_FILE,
        ca::ISSUER_CERT_FILE,
        ca::ISSUER_KEY_FILE,
    ] {
        let text = std::fs::read_to_string(dir.join(f)).unwrap();
        assert!(text.starts_with("-----BEGIN "), "{f}: {text}");
    }
    let mode = std::fs::metadata(dir.join(ca::ISSUER_KEY_FILE))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    assert!(!dir.join("ca.key.pem").exists(), "the root key is not kept");
    let root = std::fs::read(dir.join(ca::TRUST_ANCHORS_FILE)).unwrap();

    let out = control(&["ca", "init", "--dir", d]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("already exists") && stderr.contains("--force"),
        "{stderr}"
    );
    assert_eq!(
        std::fs::read(dir.join(ca::TRUST_ANCHORS_FILE)).unwrap(),
        root
    );

    let out = control(&[
        "ca",
        "init",
        "--dir",
        d,
        "--force",
        "--issuer-validity",
        "2h",
    ]);
    assert!(out.status.success(), "{out:?}");
    assert_ne!(
        std::fs::read(dir.join(ca::TRUST_ANCHORS_FILE)).unwrap(),
        root
    );
    let ca = Ca::load(&dir).unwrap();
    let left = ca
        .issuer_not_after()
        .duration_since(SystemTime::now())
        .unwrap();
    assert!(left <= Duration::from_secs(7200), "{left:?}");
    let _ = std::fs::remove_dir_all(dir.parent().unwrap());
}

#[tokio::test]
async fn the_binary_serves_identity_and_opaque_transport_hints() {
    use linkerd_proxy_api::destination::{
        destination_client::DestinationClient, update, GetDestination,
    };
    let dir = tmpdir("binary");
    let ca_dir = dir.join("ca");
    Ca::init(&ca_dir, false).unwrap();
    let file = dir.join("mesh.yaml");
    std::fs::write(
        &file,
        format!(
            "{MESH}services:\n  - name: web.default.svc.cluster.local\n    port: 8080\n    endpoints:\n      - addr: 127.0.0.1:9001\n        opaque_transport_port: 4143\n"
        ),
    )
    .unwrap();
    let free_port = || {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let (with_ca, without_ca) = (free_port(), free_port());
    let spawn = |addr: SocketAddr, extra: &[&str]| {
        let mut args = vec![
            "--config".to_string(),
            file.to_str().unwrap().to_string(),
            "--listen".to_string(),
            addr.to_string(),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        Control(
            Command::new(env!("CARGO_BIN_EXE_linkerd-control"))
                .args(args)
                .stderr(Stdio::null())
                .spawn()
                .unwrap(),
        )
    };
    let _a = spawn(
        with_ca,
        &["--ca", ca_dir.to_str().unwrap(), "--cert-lifetime", "10s"],
    );
    let _b = spawn(without_ca, &[]);

    let mut client = plaintext(with_ca).await;
    let before = SystemTime::now();
    let resp = within(
        "certify",
        client.certify(certify(WEB, "web-token\n", csr_for(WEB))),
    )
    .await
    .unwrap()
    .into_inner();
    verify(
        &ca_dir,
        WEB,
        &resp.leaf_certificate,
        &resp.intermediate_certificates,
    );
    let left = valid_until(&resp).duration_since(before).unwrap();
    assert!(left <= Duration::from_secs(11), "{left:?}");
    let mut tls_client = over_tls(with_ca, &ca_dir, tls::DEFAULT_IDENTITY)
        .await
        .unwrap();
    let s = within(
        "certify over TLS",
        tls_client.certify(certify(WEB, "nope", csr_for(WEB))),
    )
    .await
    .unwrap_err();
    assert_eq!(s.code(), Code::Unauthenticated);

    // The Destination API says where the endpoint takes opaque transport.
    let mut dst = within(
        "connect",
        DestinationClient::connect(format!("http://{with_ca}")),
    )
    .await
    .unwrap();
    let mut updates = within(
        "get",
        dst.get(GetDestination {
            scheme: "k8s".into(),
            path: "web.default.svc.cluster.local:8080".into(),
            context_token: String::new(),
        }),
    )
    .await
    .unwrap()
    .into_inner();
    let u = within("update", updates.message()).await.unwrap().unwrap();
    let Some(update::Update::Add(set)) = u.update else {
        panic!("{u:?}")
    };
    let hint = set.addrs[0].protocol_hint.unwrap();
    assert_eq!(hint.protocol, None);
    assert_eq!(hint.opaque_transport.unwrap().inbound_port, 4143);

    // Without --ca, Identity isn't served.
    let mut client = plaintext(without_ca).await;
    let s = within(
        "certify",
        client.certify(certify(WEB, "web-token", csr_for(WEB))),
    )
    .await
    .unwrap_err();
    assert_eq!(s.code(), Code::Unimplemented);
    let _ = std::fs::remove_dir_all(&dir);
}
