//! The proxy binary in the pod Linkerd's injector makes: started with `injected-pod.env` as
//! it is (only addresses, the token file and the trust anchors substituted), it certifies,
//! becomes ready and serves meshed HTTP and TCP in both directions. Its control plane is
//! built from the published `linkerd2-proxy-api` crate's server traits, as Linkerd's
//! controllers are, each over mesh TLS under its controller's name: Identity (signing with
//! the test CA), Destination and the inbound policy service. The meshed peer on the other
//! side is an in-process proxy on `linkerd-control`.

use linkerd2_proxy_api::inbound as pb;
use linkerd_tests::{
    api::{self, Certifier, Destinations},
    backend,
    ca::{self, id, CaControl},
    client, eventually, holds, injected_env, metric_sum,
    policy::{serve_tls, Policies},
    scrape,
};
use std::{
    collections::HashMap,
    io::{BufRead, BufReader},
    net::SocketAddr,
    process::{Child, Command, Stdio},
    sync::Arc,
    time::Duration,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const WEB_ID: &str = "web.default.serviceaccount.identity.linkerd.cluster.local";
const DST_ID: &str = "linkerd-destination.linkerd.serviceaccount.identity.linkerd.cluster.local";
const IDENTITY_ID: &str = "linkerd-identity.linkerd.serviceaccount.identity.linkerd.cluster.local";

/// The injected proxy, a child process; killed on drop.
struct Injected {
    child: Child,
    admin: SocketAddr,
    inbound: SocketAddr,
    outbound: SocketAddr,
    also_outbound: Option<SocketAddr>,
}

impl Drop for Injected {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `name=addr` (or `name=Some(addr)`) in a plain log line.
fn field(line: &str, name: &str) -> Option<SocketAddr> {
    let at = line.find(&format!(" {name}="))?;
    let rest = &line[at + name.len() + 2..];
    let rest = rest.strip_prefix("Some(").unwrap_or(rest);
    let end = rest
        .find(|c: char| !(c.is_ascii_hexdigit() || ".:[]".contains(c)))
        .unwrap_or(rest.len());
    rest[..end].parse().ok()
}

fn start_injected(env: Vec<(String, String)>) -> Injected {
    let mut child = Command::new(linkerd_tests::proxy_bin())
        .env_clear()
        .envs(env)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn linkerd2-proxy");
    let stderr = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            eprintln!("injected: {line}");
            let _ = tx.send(line);
        }
    });
    let line = loop {
        let line = rx
            .recv_timeout(Duration::from_secs(10))
            .expect("the injected proxy starts");
        assert!(!line.contains("ERROR"), "{line}");
        if line.contains("proxy started") {
            break line;
        }
    };
    Injected {
        admin: field(&line, "admin_addr").expect("admin"),
        inbound: field(&line, "inbound_addr").expect("inbound"),
        outbound: field(&line, "outbound_addr").expect("outbound"),
        also_outbound: field(&line, "outbound_also_addr"),
        child,
    }
}

fn allow_all(kind: pb::proxy_protocol::Kind) -> pb::Server {
    let all = |ip: linkerd2_proxy_api::net::ip_address::Ip| pb::Network {
        net: Some(linkerd2_proxy_api::net::IpNetwork {
            ip: Some(linkerd2_proxy_api::net::IpAddress { ip: Some(ip) }),
            prefix_len: 0,
        }),
        except: vec![],
    };
    pb::Server {
        protocol: Some(pb::ProxyProtocol { kind: Some(kind) }),
        server_ips: vec![],
        authorizations: vec![pb::Authz {
            networks: vec![
                all(linkerd2_proxy_api::net::ip_address::Ip::Ipv4(0)),
                all(linkerd2_proxy_api::net::ip_address::Ip::Ipv6(
                    linkerd2_proxy_api::net::IPv6 { first: 0, last: 0 },
                )),
            ],
            authentication: Some(pb::Authn {
                permit: Some(pb::authn::Permit::Unauthenticated(Default::default())),
            }),
            labels: HashMap::from([("name".into(), "all".into())]),
            metadata: None,
        }],
        labels: HashMap::from([("name".into(), "web".into())]),
    }
}

async fn get(outbound: SocketAddr, url: &str) -> (u16, String) {
    let mut tx = client::http1::<http_body_util::Full<bytes::Bytes>>(outbound).await;
    let req = http::Request::get(url)
        .body(http_body_util::Full::default())
        .unwrap();
    match tx.send_request(req).await {
        Ok(rsp) => client::text(rsp).await,
        Err(e) => (0, e.to_string()),
    }
}

async fn tcp_roundtrip(outbound: SocketAddr, target: &str) -> Result<Vec<u8>, String> {
    let (mut s, head) = client::connect_tunnel(outbound, target).await;
    if !head.starts_with("HTTP/1.1 200") {
        return Err(head);
    }
    s.write_all(b"PING").await.map_err(|e| e.to_string())?;
    s.shutdown().await.map_err(|e| e.to_string())?;
    let mut got = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut got))
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())?;
    Ok(got)
}

async fn meshed_both_ways(ipv6: bool) {
    let ctl = CaControl::start("24h", &[WEB_ID, "client"]).await;
    // The injected proxy's Destination and Identity services, from linkerd2-proxy-api.
    let destinations = Destinations::default();
    let (dst_addr, _dst) = api::serve_tls(
        tonic::service::Routes::new(
            linkerd2_proxy_api::destination::destination_server::DestinationServer::new(
                destinations.clone(),
            ),
        ),
        ctl.server_config(DST_ID),
    )
    .await;
    let certifier = Certifier {
        ca: Arc::new(linkerd_control::Ca::load(&ctl.dir.join("ca")).unwrap()),
        tokens: HashMap::from([(
            WEB_ID.to_string(),
            std::fs::read(ctl.token_file(WEB_ID)).unwrap(),
        )]),
        lifetime: Duration::from_secs(3600),
    };
    let (identity_addr, _identity) = api::serve_tls(
        tonic::service::Routes::new(
            linkerd2_proxy_api::identity::identity_server::IdentityServer::new(certifier),
        ),
        ctl.server_config(IDENTITY_ID),
    )
    .await;
    let (web_app, web_echo) = (backend::http().await, backend::tcp_echo().await);
    let (client_app, client_echo) = (backend::http().await, backend::tcp_echo().await);
    let policies = Policies::default();
    policies.set(
        web_app.addr.port(),
        allow_all(pb::proxy_protocol::Kind::Detect(
            pb::proxy_protocol::Detect {
                timeout: Some(prost_types::Duration {
                    seconds: 10,
                    nanos: 0,
                }),
                http_routes: vec![],
                http_local_rate_limit: None,
            },
        )),
    );
    policies.set(
        web_echo.port(),
        allow_all(pb::proxy_protocol::Kind::Opaque(Default::default())),
    );
    let (policy_addr, _policy) = serve_tls(policies, ctl.server_config(DST_ID)).await;

    let mut env = injected_env(ipv6);
    let any = if ipv6 { "[::]:0" } else { "0.0.0.0:0" };
    let set = |env: &mut Vec<(String, String)>, k: &str, v: String| {
        let slot = env
            .iter_mut()
            .find(|(name, _)| name == k)
            .unwrap_or_else(|| panic!("{k} is in the injected env"));
        slot.1 = v;
    };
    let anchors = format!("{}\n", ctl.trust_anchors().trim());
    for (k, v) in [
        ("LINKERD2_PROXY_DESTINATION_SVC_ADDR", dst_addr.to_string()),
        ("LINKERD2_PROXY_POLICY_SVC_ADDR", policy_addr.to_string()),
        (
            "LINKERD2_PROXY_IDENTITY_SVC_ADDR",
            identity_addr.to_string(),
        ),
        ("LINKERD2_PROXY_INBOUND_LISTEN_ADDR", any.to_string()),
        ("LINKERD2_PROXY_ADMIN_LISTEN_ADDR", any.to_string()),
        ("LINKERD2_PROXY_CONTROL_LISTEN_ADDR", any.to_string()),
        ("LINKERD2_PROXY_OUTBOUND_LISTEN_ADDR", "127.0.0.1:0".into()),
        (
            "LINKERD2_PROXY_OUTBOUND_LISTEN_ADDRS",
            if ipv6 {
                "127.0.0.1:0,[::1]:0"
            } else {
                "127.0.0.1:0"
            }
            .into(),
        ),
        (
            "LINKERD2_PROXY_INBOUND_IPS",
            if ipv6 { "127.0.0.1,::1" } else { "127.0.0.1" }.into(),
        ),
        (
            "LINKERD2_PROXY_INBOUND_PORTS",
            format!("{},{}", web_app.addr.port(), web_echo.port()),
        ),
        ("LINKERD2_PROXY_IDENTITY_TRUST_ANCHORS", anchors),
        (
            "LINKERD2_PROXY_IDENTITY_TOKEN_FILE",
            ctl.token_file(WEB_ID).to_string_lossy().into_owned(),
        ),
    ] {
        set(&mut env, k, v);
    }
    let injected = start_injected(env);
    if ipv6 {
        assert!(
            injected.also_outbound.is_some_and(|a| a.is_ipv6()),
            "both outbound listeners"
        );
    }
    // Certified: ready.
    eventually(Duration::from_secs(10), || async {
        let (status, body) = client::get(
            SocketAddr::new("127.0.0.1".parse().unwrap(), injected.admin.port()),
            "/ready",
        )
        .await;
        holds(status == 200, (status, body))
    })
    .await;

    // The other side: an in-process meshed proxy.
    let mut client_env = ctl.proxy_env("client");
    client_env.push((
        "LINKERD2_PROXY_DESTINATION_SVC_ADDR".into(),
        ctl.addr.to_string(),
    ));
    // On every address: the injected proxy reaches it at 127.0.0.2, as 127.0.0.1 is its own
    // pod's address (`INBOUND_IPS`), which it reaches without mTLS.
    client_env.push((
        "LINKERD2_PROXY_INBOUND_LISTEN_ADDR".into(),
        "0.0.0.0:0".into(),
    ));
    let peer = ca::start_proxy(&client_env, None);
    ca::ready(peer.admin_addr).await;

    let endpoint = |name: &str, port: u16, addr: SocketAddr, ident: &str, inbound: u16| {
        format!(
            "  - name: {name}\n    port: {port}\n    endpoints:\n      - addr: {addr}\n        identity: {ident}\n        opaque_transport_port: {inbound}\n"
        )
    };
    // What the peer's control plane knows of the injected pod.
    ctl.write_mesh(&format!(
        "services:\n{}{}",
        endpoint(
            "web.default.svc.cluster.local",
            8080,
            web_app.addr,
            WEB_ID,
            injected.inbound.port()
        ),
        endpoint(
            "echo.default.svc.cluster.local",
            6379,
            web_echo,
            WEB_ID,
            injected.inbound.port()
        ),
    ));
    ctl.serves("web.default.svc.cluster.local:8080").await;
    // What the injected proxy's Destination service knows of the peer.
    for (name, addr) in [
        ("peer.ns.svc.cluster.local:8080", client_app.addr.port()),
        ("peerecho.ns.svc.cluster.local:7000", client_echo.port()),
    ] {
        let addr = SocketAddr::from(([127, 0, 0, 2], addr));
        destinations.set(
            name,
            vec![api::Endpoint {
                addr,
                identity: id("client"),
                opaque_port: peer.inbound_addr.port(),
            }],
        );
    }

    // Into the injected pod: meshed HTTP, the app sees the peer's identity.
    let (status, body) = eventually(Duration::from_secs(10), || async {
        let r = get(
            peer.outbound_addr,
            "http://web.default.svc.cluster.local:8080/headers",
        )
        .await;
        holds(r.0 == 200, r.clone()).map(|()| r)
    })
    .await;
    assert_eq!(status, 200);
    assert!(
        body.contains(&format!("l5d-client-id: {}", id("client"))),
        "{body}"
    );
    // Out of the injected pod: meshed HTTP, the peer's app sees the injected identity.
    let outbound = SocketAddr::new("127.0.0.1".parse().unwrap(), injected.outbound.port());
    let (status, body) = eventually(Duration::from_secs(10), || async {
        let r = get(outbound, "http://peer.ns.svc.cluster.local:8080/headers").await;
        holds(r.0 == 200, r.clone()).map(|()| r)
    })
    .await;
    assert_eq!(status, 200);
    assert!(body.contains(&format!("l5d-client-id: {WEB_ID}")), "{body}");
    // Meshed TCP both ways.
    assert_eq!(
        tcp_roundtrip(peer.outbound_addr, "echo.default.svc.cluster.local:6379").await,
        Ok(b"PINGbye".to_vec())
    );
    assert_eq!(
        tcp_roundtrip(outbound, "peerecho.ns.svc.cluster.local:7000").await,
        Ok(b"PINGbye".to_vec())
    );
    if let Some(v6) = injected.also_outbound {
        let (status, _) = get(v6, "http://peer.ns.svc.cluster.local:8080/").await;
        assert_eq!(status, 200, "the IPv6 outbound listener serves too");
    }

    // Its policy came from the policy service, over mesh TLS.
    let admin = SocketAddr::new("127.0.0.1".parse().unwrap(), injected.admin.port());
    let m = scrape(admin).await;
    assert!(
        metric_sum(
            &m,
            "inbound_http_authz_allow_total",
            &["srv_name=\"web\"", "authz_name=\"all\""]
        ) >= 1.0,
        "{m}"
    );
    assert!(
        metric_sum(&m, "inbound_tcp_authz_allow_total", &["srv_name=\"web\""]) >= 1.0,
        "{m}"
    );
    // Each control-plane client spoke TLS to its controller's identity.
    for (addr, server) in [
        (dst_addr, DST_ID),
        (identity_addr, IDENTITY_ID),
        (policy_addr, DST_ID),
    ] {
        let labels = [
            format!("addr=\"{addr}\""),
            format!("server_id=\"{server}\""),
        ];
        let labels: Vec<&str> = labels.iter().map(String::as_str).collect();
        assert!(
            metric_sum(&m, "control_request_total", &labels) >= 1.0,
            "{m}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_injected_pod_env_meshes_both_ways() {
    meshed_both_ways(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_injected_ipv6_pod_env_meshes_both_ways() {
    if std::net::TcpListener::bind("[::1]:0").is_err() {
        return eprintln!("no IPv6 loopback here; skipping");
    }
    meshed_both_ways(true).await;
}
