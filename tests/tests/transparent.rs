//! The real transparent path: two pods in network namespaces, iptables REDIRECT as
//! proxy-init installs it, the proxy binary in each, and plain clients that know nothing of
//! the proxies.
//!
//! Needs root, `ip`, `iptables`, `curl` and `setpriv`. Skipped with a message otherwise,
//! unless `LINKERD_REQUIRE_NETNS=1` (CI sets it), which makes a skip a failure.

use linkerd_tests::{
    eventually_blocking, holds, metric,
    netns::{self, PodPair},
};
use std::{
    process::{Child, Stdio},
    time::Duration,
};

/// The uid the proxy runs as; proxy-init exempts it from redirection. The app's client runs
/// as `nobody`, so its connections are redirected.
const PROXY_UID: u32 = 0;
const NOBODY: &str = "65534";
/// Runs what follows as `nobody`, the app's uid, so iptables redirects its traffic.
const AS_NOBODY: [&str; 6] = [
    "setpriv",
    "--reuid",
    NOBODY,
    "--regid",
    NOBODY,
    "--clear-groups",
];

struct Procs(Vec<Child>);

impl Procs {
    /// Starts `args` in namespace `ns` with `env`; killed when `self` is dropped.
    fn spawn(&mut self, ns: &str, args: &[&str], env: &[(&str, &str)]) {
        let mut cmd = PodPair::exec(ns, args);
        cmd.stdout(Stdio::null()).stderr(Stdio::null());
        for (k, v) in env {
            cmd.env(k, v);
        }
        self.0.push(cmd.spawn().unwrap());
    }
}

impl Drop for Procs {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn curl(ns: &str, as_nobody: bool, args: &[&str]) -> (bool, String) {
    let mut cmd_args: Vec<&str> = Vec::new();
    if as_nobody {
        cmd_args.extend(AS_NOBODY);
    }
    cmd_args.extend(["curl", "-s", "-m", "10"]);
    cmd_args.extend_from_slice(args);
    let out = PodPair::exec(ns, &cmd_args).output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

/// The test app's TCP client, as `nobody` (so it is redirected): sends `msg`, half-closes,
/// returns what came back and its stderr.
fn tcp_client(ns: &str, app: &str, addr: &str, msg: &str) -> (String, String) {
    let mut args = AS_NOBODY.to_vec();
    args.extend([app, "tcp-client", addr, msg]);
    let out = PodPair::exec(ns, &args).output().unwrap();
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A client in `ns` (as `nobody`, so redirected through its proxy; else as root, which is
/// not) of a server that speaks first at `addr` (`test-app banner`): the server's banner
/// arrives through the proxies in well under a second (not after their detect timeouts), and
/// the connection then carries the client's bytes both ways.
fn assert_banner_at_once(ns: &str, app: &str, addr: &str, as_nobody: bool) {
    let mut args = if as_nobody {
        AS_NOBODY.to_vec()
    } else {
        Vec::new()
    };
    args.extend([app, "banner-client", addr]);
    let out = PodPair::exec(ns, &args).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "banner-client {addr}: {stdout} {stderr}"
    );
    let (ms, got) = stdout.split_once(' ').unwrap_or_default();
    assert_eq!(got, "220 ready\r\nping", "{stdout}");
    let ms: u64 = ms.parse().unwrap();
    assert!(
        ms < 1000,
        "the banner took {ms} ms through the proxies (their detect timeouts are 10 s)"
    );
}

/// The app's `GET <url>` (a `/headers` echo) from the client pod, as `nobody` so it goes
/// through both proxies: the request head the server's app received.
fn app_headers(ns: &str, url: &str) -> String {
    let (ok, body) = curl(ns, true, &[url]);
    assert!(ok, "curl {url} through the proxies failed: {body}");
    assert!(body.starts_with("GET /headers HTTP/1.1\n"), "{body}");
    body
}

fn wait_ready(ns: &str) {
    eventually_blocking(Duration::from_secs(10), || {
        let (ok, body) = curl(ns, false, &["http://127.0.0.1:4191/ready"]);
        holds(
            ok && body == "ready\n",
            format!("the proxy in {ns}: {body:?}"),
        )
    });
}

/// Waits until something listens on `addr` in `ns` (a refused connection is curl's exit 7).
fn wait_listening(ns: &str, addr: &str) {
    eventually_blocking(Duration::from_secs(10), || {
        let url = format!("http://{addr}/");
        let out = PodPair::exec(ns, &["curl", "-s", "-o", "/dev/null", "-m", "2", &url])
            .output()
            .unwrap();
        holds(
            out.status.code() != Some(7),
            format!("nothing listens on {addr} in {ns}"),
        )
    });
}

#[test]
fn transparent_path_through_two_proxies() {
    if netns::skipped("transparent_path_through_two_proxies", &[]) {
        return;
    }
    let proxy = linkerd_tests::proxy_bin();
    let proxy = proxy.to_str().unwrap();
    let app = env!("CARGO_BIN_EXE_test-app");

    let pods = PodPair::create("tp");
    let server_ip = pods.server_ip;
    let mut procs = Procs(Vec::new());

    // The server pod: the app on loopback, the proxy on the default ports.
    procs.spawn(&pods.server, &[app, "http", "127.0.0.1:8080"], &[]);
    procs.spawn(&pods.server, &[app, "echo", "127.0.0.1:9000"], &[]);
    procs.spawn(
        &pods.server,
        &[app, "banner", "127.0.0.1:4222", "220 ready\r\n"],
        &[],
    );
    procs.spawn(
        &pods.server,
        &[proxy],
        &[("LINKERD2_PROXY_LOG", "linkerd=debug")],
    );
    pods.redirect_inbound(4143, &[4190, 4191]);

    // The client pod: the proxy, and outbound redirection for everyone but the proxy.
    procs.spawn(
        &pods.client,
        &[proxy],
        &[
            ("LINKERD2_PROXY_LOG", "linkerd=debug"),
            ("LINKERD2_PROXY_OUTBOUND_CONNECT_TIMEOUT", "500ms"),
        ],
    );
    pods.redirect_outbound(PROXY_UID, 4140);
    // Connections from the proxy to port 7777 vanish: a connect timeout.
    netns::run(&[
        "ip",
        "netns",
        "exec",
        &pods.client,
        "iptables",
        "-w",
        "-A",
        "OUTPUT",
        "-p",
        "tcp",
        "--dport",
        "7777",
        "-m",
        "owner",
        "--uid-owner",
        &PROXY_UID.to_string(),
        "-j",
        "DROP",
    ]);
    wait_ready(&pods.server);
    wait_ready(&pods.client);

    // A plain HTTP client in the client pod reaches the app through both proxies.
    let body = app_headers(&pods.client, &format!("http://{server_ip}:8080/headers"));
    assert!(body.contains(&format!("host: {server_ip}:8080")), "{body}");

    // Opaque TCP, with half-close, through both proxies.
    let (out, err) = tcp_client(
        &pods.client,
        app,
        &format!("{server_ip}:9000"),
        "\u{1}opaque",
    );
    assert_eq!(out, "\u{1}opaquebye", "{err}");

    // A server that speaks first, on a port not known to be opaque.
    assert_banner_at_once(&pods.client, app, &format!("{server_ip}:4222"), true);

    // A connect timeout is a 504 with the reason.
    let (_, head) = curl(
        &pods.client,
        true,
        &["-i", &format!("http://{server_ip}:7777/")],
    );
    assert!(head.starts_with("HTTP/1.1 504"), "{head}");
    assert!(head.contains("l5d-proxy-error: connect to"), "{head}");

    // Both proxies counted it.
    let (_, client_metrics) = curl(&pods.client, false, &["http://127.0.0.1:4191/metrics"]);
    let (_, server_metrics) = curl(&pods.server, false, &["http://127.0.0.1:4191/metrics"]);
    let dst = format!("target_addr=\"{server_ip}:8080\"");
    assert_eq!(
        metric(
            &client_metrics,
            "response_total",
            &["direction=\"outbound\"", &dst, "status_code=\"200\""]
        ),
        Some(1.0),
        "{client_metrics}"
    );
    assert_eq!(
        metric(
            &server_metrics,
            "response_total",
            &[
                "direction=\"inbound\"",
                "target_addr=\"127.0.0.1:8080\"",
                "status_code=\"200\""
            ]
        ),
        Some(1.0),
        "{server_metrics}"
    );
    assert_eq!(
        metric(
            &server_metrics,
            "tcp_open_total",
            &[
                "direction=\"inbound\"",
                "peer=\"src\"",
                &format!("target_addr=\"{server_ip}:9000\"")
            ]
        ),
        Some(1.0),
        "{server_metrics}"
    );
    assert_eq!(
        metric(&client_metrics, "response_total", &["status_code=\"504\""]),
        Some(1.0),
        "{client_metrics}"
    );
}

/// A dual-stack pod pair, each proxy with the listeners Linkerd's injector gives it when IPv6
/// is enabled (`injected-pod-ipv6.env`): the client's app reaches the server's app over IPv6
/// through the IPv6 outbound listener (`[::1]:4140`, where `ip6tables` redirects it) and over
/// IPv4 through the IPv4 one; the server's single `[::]:4143` takes both families, and knows an
/// IPv4 client by its IPv4 addresses.
#[test]
fn ipv6_outbound_listener_beside_the_ipv4_one() {
    if netns::skipped("ipv6_outbound_listener_beside_the_ipv4_one", &[]) {
        return;
    }
    let proxy = linkerd_tests::proxy_bin();
    let proxy = proxy.to_str().unwrap();
    let app = env!("CARGO_BIN_EXE_test-app");

    let pods = PodPair::create("v6");
    let (server_ip, server_ip6) = (pods.server_ip, pods.server_ip6);
    let inbound_ips = format!("{server_ip},{server_ip6}");
    let mut procs = Procs(Vec::new());
    procs.spawn(&pods.server, &[app, "http", "127.0.0.1:8080"], &[]);
    procs.spawn(&pods.server, &[app, "echo", "127.0.0.1:9000"], &[]);
    procs.spawn(
        &pods.server,
        &[proxy],
        &[
            ("LINKERD2_PROXY_INBOUND_LISTEN_ADDR", "[::]:4143"),
            ("LINKERD2_PROXY_ADMIN_LISTEN_ADDR", "[::]:4191"),
            ("LINKERD2_PROXY_CONTROL_LISTEN_ADDR", "[::]:4190"),
            ("LINKERD2_PROXY_INBOUND_IPS", &inbound_ips),
        ],
    );
    pods.redirect_inbound(4143, &[4190, 4191]);
    procs.spawn(
        &pods.client,
        &[proxy],
        &[
            ("LINKERD2_PROXY_OUTBOUND_LISTEN_ADDR", "127.0.0.1:4140"),
            (
                "LINKERD2_PROXY_OUTBOUND_LISTEN_ADDRS",
                "127.0.0.1:4140,[::1]:4140",
            ),
            ("LINKERD2_PROXY_INBOUND_LISTEN_ADDR", "[::]:4143"),
            ("LINKERD2_PROXY_ADMIN_LISTEN_ADDR", "[::]:4191"),
            ("LINKERD2_PROXY_CONTROL_LISTEN_ADDR", "[::]:4190"),
        ],
    );
    pods.redirect_outbound(PROXY_UID, 4140);
    wait_ready(&pods.server);
    wait_ready(&pods.client);

    // HTTP over IPv6, then over IPv4, from the same app.
    let body = app_headers(&pods.client, &format!("http://[{server_ip6}]:8080/headers"));
    assert!(
        body.contains(&format!("host: [{server_ip6}]:8080")),
        "{body}"
    );
    let body = app_headers(&pods.client, &format!("http://{server_ip}:8080/headers"));
    assert!(body.contains(&format!("host: {server_ip}:8080")), "{body}");
    // Opaque TCP over IPv6.
    let (out, err) = tcp_client(
        &pods.client,
        app,
        &format!("[{server_ip6}]:9000"),
        "\u{1}six",
    );
    assert_eq!(out, "\u{1}sixbye", "{err}");

    let (_, client_metrics) = curl(&pods.client, false, &["http://127.0.0.1:4191/metrics"]);
    let (_, server_metrics) = curl(&pods.server, false, &["http://127.0.0.1:4191/metrics"]);
    for (dst, what) in [
        (format!("[{server_ip6}]:8080"), "HTTP over IPv6"),
        (format!("{server_ip}:8080"), "HTTP over IPv4"),
    ] {
        let target = format!("target_addr=\"{dst}\"");
        assert_eq!(
            metric(
                &client_metrics,
                "tcp_open_total",
                &["direction=\"outbound\"", "peer=\"src\"", &target]
            ),
            Some(1.0),
            "{what}, accepted by the outbound proxy: {client_metrics}"
        );
        assert_eq!(
            metric(
                &client_metrics,
                "response_total",
                &["direction=\"outbound\"", &target, "status_code=\"200\""]
            ),
            Some(1.0),
            "{what}: {client_metrics}"
        );
        assert_eq!(
            metric(
                &server_metrics,
                "tcp_open_total",
                &["direction=\"inbound\"", "peer=\"src\"", &target]
            ),
            Some(1.0),
            "{what}, accepted by the inbound proxy: {server_metrics}"
        );
    }
    assert_eq!(
        metric(
            &server_metrics,
            "tcp_open_total",
            &[
                "direction=\"inbound\"",
                "peer=\"src\"",
                &format!("target_addr=\"[{server_ip6}]:9000\"")
            ]
        ),
        Some(1.0),
        "{server_metrics}"
    );
}

/// The pods' iptables written by this workspace's `linkerd2-proxy-init`, with the exact
/// arguments Linkerd's injector renders (nft mode, uid 2102, the default ignored ports), and
/// both proxies running as uid 2102 as the chart runs them: an app's HTTP reaches the other
/// pod's app through both proxies; an ignored outbound port goes straight to the server.
#[test]
fn proxy_init_as_injected_with_real_proxies() {
    if netns::skipped("proxy_init_as_injected_with_real_proxies", &[]) {
        return;
    }
    let proxy = linkerd_tests::proxy_bin();
    let proxy = proxy.to_str().unwrap();
    let proxy_init = linkerd_tests::workspace_bin("linkerd2-proxy-init");
    let proxy_init = proxy_init.to_str().unwrap();
    let app = env!("CARGO_BIN_EXE_test-app");
    let as_proxy = [
        "setpriv",
        "--reuid",
        "2102",
        "--regid",
        "2102",
        "--clear-groups",
    ];

    let pods = PodPair::create("pi");
    let server_ip = pods.server_ip;
    let mut procs = Procs(Vec::new());
    for ns in [&pods.client, &pods.server] {
        let out = PodPair::exec(
            ns,
            &[&[proxy_init][..], &netns::INJECTED_PROXY_INIT_ARGS].concat(),
        )
        .output()
        .unwrap();
        assert!(out.status.success(), "proxy-init in {ns}: {out:?}");
        procs.spawn(ns, &[&as_proxy[..], &[proxy]].concat(), &[]);
    }
    procs.spawn(&pods.server, &[app, "http", "127.0.0.1:8080"], &[]);
    // An ignored port: reached without either proxy.
    procs.spawn(&pods.server, &[app, "http", "0.0.0.0:4567"], &[]);
    wait_ready(&pods.server);
    wait_ready(&pods.client);

    let body = app_headers(&pods.client, &format!("http://{server_ip}:8080/headers"));
    assert!(body.contains(&format!("host: {server_ip}:8080")), "{body}");
    let body = app_headers(&pods.client, &format!("http://{server_ip}:4567/headers"));
    assert!(body.contains(&format!("host: {server_ip}:4567")), "{body}");

    let (_, client_metrics) = curl(&pods.client, false, &["http://127.0.0.1:4191/metrics"]);
    let (_, server_metrics) = curl(&pods.server, false, &["http://127.0.0.1:4191/metrics"]);
    for (m, direction) in [(&client_metrics, "outbound"), (&server_metrics, "inbound")] {
        let dir = format!("direction=\"{direction}\"");
        let port = |p: &str| {
            linkerd_tests::metric_sum(m, "request_total", &[&dir, &format!("target_port=\"{p}\"")])
        };
        assert_eq!(port("8080"), 1.0, "through the {direction} proxy: {m}");
        assert_eq!(port("4567"), 0.0, "the ignored port bypasses it: {m}");
    }
}

/// Writes `/etc/netns/<ns>/resolv.conf`, which `ip netns exec` mounts over `/etc/resolv.conf`
/// inside the namespace; removed on drop.
struct NetnsResolvConf(std::path::PathBuf);

impl NetnsResolvConf {
    fn write(ns: &str, text: &str) -> Self {
        let dir = std::path::PathBuf::from(format!("/etc/netns/{ns}"));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("resolv.conf"), text).unwrap();
        Self(dir)
    }
}

impl Drop for NetnsResolvConf {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A pod's app calls `http://web:8080/`: its own resolver expands the short name to a service
/// address; the outbound proxy canonicalises `web` the same way (the pod's resolv.conf search
/// domains, through hickory), discovers `web.default.svc.cluster.local:8080` from the control
/// plane and balances to the server pod, whose proxy hands it to the app.
#[test]
fn short_names_are_canonicalised_and_discovered() {
    if netns::skipped("short_names_are_canonicalised_and_discovered", &[]) {
        return;
    }
    let proxy = linkerd_tests::proxy_bin();
    let proxy = proxy.to_str().unwrap();
    let control = linkerd_tests::workspace_bin("linkerd-control");
    let control = control.to_str().unwrap();
    let app = env!("CARGO_BIN_EXE_test-app");

    let pods = PodPair::create("dn");
    let server_ip = pods.server_ip;
    // Service addresses are virtual: route everything through the veth, where iptables
    // redirects it to the proxy first.
    netns::run(&[
        "ip",
        "-n",
        &pods.client,
        "route",
        "add",
        "default",
        "via",
        &server_ip.to_string(),
    ]);
    let _resolv = NetnsResolvConf::write(
        &pods.client,
        "nameserver 127.0.0.1\nsearch default.svc.cluster.local svc.cluster.local cluster.local\noptions ndots:5\n",
    );
    let dir = std::env::temp_dir().join(format!("l5d-dns-test-{}", std::process::id()));
    let _cleanup = RemoveDir(dir.clone());
    std::fs::create_dir_all(&dir).unwrap();
    let mesh = dir.join("mesh.yaml");
    std::fs::write(
        &mesh,
        format!("services:\n  - name: web.default.svc.cluster.local\n    port: 8080\n    endpoints:\n      - addr: {server_ip}:8080\n        labels: {{ pod: web-0 }}\n"),
    )
    .unwrap();

    let mut procs = Procs(Vec::new());
    procs.spawn(&pods.server, &[app, "http", "127.0.0.1:8080"], &[]);
    procs.spawn(&pods.server, &[proxy], &[]);
    pods.redirect_inbound(4143, &[4190, 4191]);

    // The client pod: a DNS server (the cluster's), the control plane, the proxy.
    procs.spawn(
        &pods.client,
        &[
            app,
            "dns",
            "127.0.0.1:53",
            "web.default.svc.cluster.local.=10.96.0.10",
        ],
        &[],
    );
    procs.spawn(
        &pods.client,
        &[
            control,
            "--config",
            mesh.to_str().unwrap(),
            "--listen",
            "127.0.0.1:8086",
        ],
        &[],
    );
    procs.spawn(
        &pods.client,
        &[proxy],
        &[
            ("LINKERD2_PROXY_DESTINATION_SVC_ADDR", "127.0.0.1:8086"),
            ("LINKERD2_PROXY_LOG", "linkerd=debug"),
        ],
    );
    pods.redirect_outbound(PROXY_UID, 4140);
    wait_ready(&pods.server);
    wait_ready(&pods.client);

    let body = app_headers(&pods.client, "http://web:8080/headers");
    assert!(body.contains("host: web:8080"), "{body}");

    let (_, metrics) = curl(&pods.client, false, &["http://127.0.0.1:4191/metrics"]);
    assert_eq!(
        metric(
            &metrics,
            "request_total",
            &[
                "authority=\"web.default.svc.cluster.local:8080\"",
                &format!("target_addr=\"{server_ip}:8080\""),
                "dst_pod=\"web-0\""
            ]
        ),
        Some(1.0),
        "{metrics}"
    );
}

/// mTLS on the transparent path: both proxies get certificates from a CA (a `linkerd-control`
/// in each pod, sharing the CA and the mesh file, which names the server pod's ports as
/// endpoints behind the server proxy's identity). The client proxy dials the server pod's app
/// port with mTLS; iptables sends it to the server proxy's inbound port, which terminates it
/// because the SNI is its identity, and sees the client proxy's identity.
#[test]
fn transparent_mtls_between_two_pods() {
    if netns::skipped("transparent_mtls_between_two_pods", &[]) {
        return;
    }
    let proxy = linkerd_tests::proxy_bin();
    let proxy = proxy.to_str().unwrap();
    let control = linkerd_tests::workspace_bin("linkerd-control");
    let control = control.to_str().unwrap();
    let app = env!("CARGO_BIN_EXE_test-app");
    let id = linkerd_tests::ca::id;

    let pods = PodPair::create("tm");
    let server_ip = pods.server_ip;
    let dir = std::env::temp_dir().join(format!("l5d-tm-{}", std::process::id()));
    let _cleanup = RemoveDir(dir.clone());
    std::fs::create_dir_all(&dir).unwrap();
    let ca = dir.join("ca");
    let out = std::process::Command::new(control)
        .args(["ca", "init", "--dir", ca.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let mut mesh = String::from("services:\n");
    for (name, port) in [("web", 8080), ("db", 9000), ("nats", 4222)] {
        mesh.push_str(&format!(
            "  - name: {name}.ns.svc.cluster.local\n    port: {port}\n    endpoints:\n      - addr: {server_ip}:{port}\n        identity: {}\n",
            id("server")
        ));
    }
    mesh.push_str("identities:\n");
    for name in ["client", "server"] {
        mesh.push_str(&format!("  - name: {}\n    token: t-{name}\n", id(name)));
        std::fs::write(dir.join(name), format!("t-{name}")).unwrap();
    }
    let mesh_file = dir.join("mesh.yaml");
    std::fs::write(&mesh_file, mesh).unwrap();
    let anchors = std::fs::read_to_string(ca.join("trust-anchors.pem")).unwrap();
    let identity_env = |name: &str| {
        vec![
            (
                "LINKERD2_PROXY_IDENTITY_SVC_ADDR",
                "127.0.0.1:8086".to_string(),
            ),
            ("LINKERD2_PROXY_IDENTITY_TRUST_ANCHORS", anchors.clone()),
            ("LINKERD2_PROXY_IDENTITY_SERVER_ID", id(name)),
            (
                "LINKERD2_PROXY_IDENTITY_TOKEN_FILE",
                dir.join(name).to_str().unwrap().to_string(),
            ),
        ]
    };

    let mut procs = Procs(Vec::new());
    for ns in [&pods.server, &pods.client] {
        procs.spawn(
            ns,
            &[
                control,
                "--config",
                mesh_file.to_str().unwrap(),
                "--listen",
                "127.0.0.1:8086",
                "--ca",
                ca.to_str().unwrap(),
            ],
            &[],
        );
    }
    // Both control planes listen before the proxies' first Certify.
    for ns in [&pods.server, &pods.client] {
        wait_listening(ns, "127.0.0.1:8086");
    }
    procs.spawn(&pods.server, &[app, "http", "127.0.0.1:8080"], &[]);
    procs.spawn(&pods.server, &[app, "echo", "127.0.0.1:9000"], &[]);
    procs.spawn(
        &pods.server,
        &[app, "banner", "127.0.0.1:4222", "220 ready\r\n"],
        &[],
    );
    let server_env = identity_env("server");
    let server_env: Vec<(&str, &str)> = server_env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    procs.spawn(&pods.server, &[proxy], &server_env);
    pods.redirect_inbound(4143, &[4190, 4191]);
    let mut client_env = identity_env("client");
    client_env.push((
        "LINKERD2_PROXY_DESTINATION_SVC_ADDR",
        "127.0.0.1:8086".into(),
    ));
    let client_env: Vec<(&str, &str)> = client_env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    procs.spawn(&pods.client, &[proxy], &client_env);
    pods.redirect_outbound(PROXY_UID, 4140);
    wait_ready(&pods.server);
    wait_ready(&pods.client);

    app_headers(&pods.client, &format!("http://{server_ip}:8080/headers"));
    let (out, err) = tcp_client(&pods.client, app, &format!("{server_ip}:9000"), "\u{1}mtls");
    assert_eq!(out, "\u{1}mtlsbye", "{err}");
    // A server that speaks first, over mTLS between the proxies; and from a client without
    // a proxy (root is not redirected) to the meshed server, whose proxy waits for a
    // ClientHello.
    assert_banner_at_once(&pods.client, app, &format!("{server_ip}:4222"), true);
    assert_banner_at_once(&pods.client, app, &format!("{server_ip}:4222"), false);

    let (_, client_metrics) = curl(&pods.client, false, &["http://127.0.0.1:4191/metrics"]);
    let (_, server_metrics) = curl(&pods.server, false, &["http://127.0.0.1:4191/metrics"]);
    let server_id = format!("server_id=\"{}\"", id("server"));
    let client_id = format!("client_id=\"{}\"", id("client"));
    for port in [8080, 9000, 4222] {
        let dst = format!("target_addr=\"{server_ip}:{port}\"");
        assert_eq!(
            metric(
                &client_metrics,
                "tcp_open_total",
                &["peer=\"dst\"", "tls=\"true\"", &server_id, &dst]
            ),
            Some(1.0),
            "{client_metrics}"
        );
        assert_eq!(
            metric(
                &server_metrics,
                "tcp_open_total",
                &[
                    "direction=\"inbound\"",
                    "peer=\"src\"",
                    "tls=\"true\"",
                    &client_id,
                    &dst
                ]
            ),
            Some(1.0),
            "{server_metrics}"
        );
    }
    // The client without a proxy, forwarded as plaintext TCP.
    assert_eq!(
        metric(
            &server_metrics,
            "tcp_open_total",
            &[
                "direction=\"inbound\"",
                "peer=\"src\"",
                "tls=\"no_identity\"",
                &format!("target_addr=\"{server_ip}:4222\"")
            ]
        ),
        Some(1.0),
        "{server_metrics}"
    );
    assert_eq!(
        metric(
            &server_metrics,
            "response_total",
            &[
                "direction=\"inbound\"",
                "tls=\"true\"",
                &client_id,
                "status_code=\"200\""
            ]
        ),
        Some(1.0),
        "{server_metrics}"
    );
}

struct RemoveDir(std::path::PathBuf);

impl Drop for RemoveDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
