//! The topologies under test, each started as real processes: `direct`, `proxy` (one
//! linkerd2-proxy in explicit-proxy mode), `haproxy`, and, in network namespaces joined by a
//! veth pair with proxy-init's iptables rules, `proxy-pair` and its baseline `direct-veth`.

use crate::{load::Backend, procfs};
use linkerd_netns::PodPair;
use std::{
    io::{Read, Write},
    net::{SocketAddr, TcpListener, TcpStream},
    path::PathBuf,
    process::{Child, Command, Stdio},
    rc::Rc,
    time::{Duration, Instant},
};

/// What every topology needs to start its processes.
#[derive(Clone, Debug)]
pub struct Env {
    pub proxy_bin: PathBuf,
    pub self_bin: PathBuf,
    /// CPU list for proxies (and haproxy), for `taskset -c`.
    pub proxy_cpus: Option<String>,
    /// CPU list for the load generator (and the backends, unless `server_cpus` is set).
    pub load_cpus: Option<String>,
    /// CPU list for the server side: the backends and, in the pair, proxy B (its pod).
    pub server_cpus: Option<String>,
    /// Worker threads for each proxy and for haproxy.
    pub proxy_threads: usize,
    pub body_size: usize,
}

/// The backend addresses (HTTP, TCP echo, TCP sink, TCP banner).
#[derive(Clone, Copy, Debug)]
pub struct Addrs {
    pub http: SocketAddr,
    pub echo: SocketAddr,
    pub sink: SocketAddr,
    pub banner: SocketAddr,
}

/// A running topology.
pub struct Topology {
    pub name: &'static str,
    /// The network namespace the load generator runs in, if any.
    pub ns: Option<String>,
    /// The uid the load generator runs as (so iptables redirects it), if not ours.
    pub load_uid: Option<u32>,
    /// Where the load generator connects.
    pub targets: Addrs,
    /// A separate target for HTTP/2 scenarios (haproxy's `proto h2` frontend).
    pub h2_target: Option<SocketAddr>,
    /// When set, the targets are an explicit proxy and these name the backends.
    pub via_proxy: Option<Addrs>,
    /// The proxy processes whose CPU and memory are measured.
    pub pids: Vec<u32>,
    /// Where upstream connections are counted.
    pub conns: ConnCounter,
    _procs: Rc<Procs>,
}

/// How a topology counts the connections opened towards the backend side.
pub enum ConnCounter {
    /// `tcp_open_total{direction="outbound",peer="dst"}` of the proxy admin at this address.
    ProxyMetrics {
        ns: Option<String>,
        admin: SocketAddr,
    },
    /// The backend's own count of accepted connections.
    Backend {
        ns: Option<String>,
        stats: SocketAddr,
    },
}

/// Processes (and namespaces) that are stopped when the last topology using them is dropped.
#[derive(Default)]
pub struct Procs {
    children: Vec<Child>,
    pods: Option<PodPair>,
}

impl Procs {
    /// Owns `children`: they are killed on drop.
    pub fn new(children: Vec<Child>) -> Self {
        Self {
            children,
            pods: None,
        }
    }
}

impl Drop for Procs {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        // Then the namespaces go (PodPair's own drop).
        self.pods.take();
    }
}

impl Addrs {
    pub fn for_backend(&self, b: Backend) -> SocketAddr {
        match b {
            Backend::Http => self.http,
            Backend::Echo => self.echo,
            Backend::Sink => self.sink,
            Backend::Banner => self.banner,
        }
    }
}

pub(crate) fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

pub(crate) fn loopback(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// A command pinned to `cpus` with `taskset`, when given.
pub(crate) fn pinned(cpus: &Option<String>, program: &std::path::Path) -> Command {
    match cpus {
        Some(c) => {
            let mut cmd = Command::new("taskset");
            cmd.args(["-c", c]).arg(program);
            cmd
        }
        None => Command::new(program),
    }
}

/// Waits until `addr` accepts connections.
pub(crate) fn wait_listening(addr: SocketAddr, what: &str) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
        if Instant::now() > deadline {
            return Err(format!("{what} did not start listening on {addr}"));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

/// A blocking `GET` (HTTP/1.0) on loopback; returns the body.
pub fn http_get(addr: SocketAddr, path: &str) -> Result<String, String> {
    let mut s =
        TcpStream::connect_timeout(&addr, Duration::from_secs(2)).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .map_err(|e| e.to_string())?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").map_err(|e| e.to_string())?;
    let mut out = String::new();
    s.read_to_string(&mut out).map_err(|e| e.to_string())?;
    out.split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .ok_or_else(|| "malformed response".into())
}

/// A `GET` from inside a namespace, through `linkerd-bench fetch`.
fn ns_get(env: &Env, ns: &Option<String>, addr: SocketAddr, path: &str) -> Result<String, String> {
    match ns {
        None => http_get(addr, path),
        Some(ns) => {
            let out = PodPair::exec(
                ns,
                &[
                    env.self_bin.to_str().unwrap_or_default(),
                    "fetch",
                    &addr.to_string(),
                    path,
                ],
            )
            .output()
            .map_err(|e| e.to_string())?;
            if !out.status.success() {
                return Err(String::from_utf8_lossy(&out.stderr).into_owned());
            }
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        }
    }
}

impl ConnCounter {
    /// The current count.
    pub fn read(&self, env: &Env) -> Result<u64, String> {
        match self {
            ConnCounter::ProxyMetrics { ns, admin } => {
                let text = ns_get(env, ns, *admin, "/metrics")?;
                Ok(text
                    .lines()
                    .filter(|l| l.starts_with("tcp_open_total{"))
                    .filter(|l| l.contains("direction=\"outbound\"") && l.contains("peer=\"dst\""))
                    .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
                    .sum::<f64>() as u64)
            }
            ConnCounter::Backend { ns, stats } => {
                let text = ns_get(env, ns, *stats, "/__stats")?;
                text.trim()
                    .trim_start_matches("{\"connections\": ")
                    .trim_end_matches('}')
                    .parse()
                    .map_err(|_| format!("bad backend stats: {text}"))
            }
        }
    }
}

/// Starts the loopback backends (shared by `direct`, `proxy` and `haproxy`).
pub fn local_backend(env: &Env) -> Result<(Child, Addrs), String> {
    let addrs = Addrs {
        http: loopback(free_port()),
        echo: loopback(free_port()),
        sink: loopback(free_port()),
        banner: loopback(free_port()),
    };
    let child = pinned(env.backend_cpus(), &env.self_bin)
        .args([
            "backend",
            "--http",
            &addrs.http.to_string(),
            "--echo",
            &addrs.echo.to_string(),
        ])
        .args([
            "--sink",
            &addrs.sink.to_string(),
            "--banner",
            &addrs.banner.to_string(),
            "--body-size",
            &env.body_size.to_string(),
        ])
        .stdout(Stdio::null())
        .spawn()
        .map_err(|e| format!("backend: {e}"))?;
    for a in [addrs.http, addrs.echo, addrs.sink, addrs.banner] {
        wait_listening(a, "backend")?;
    }
    Ok((child, addrs))
}

/// Client -> backend.
pub fn direct(backend: Addrs) -> Topology {
    Topology {
        name: "direct",
        ns: None,
        load_uid: None,
        targets: backend,
        h2_target: None,
        via_proxy: None,
        pids: Vec::new(),
        conns: ConnCounter::Backend {
            ns: None,
            stats: backend.http,
        },
        _procs: Rc::new(Procs::default()),
    }
}

impl Env {
    /// Where the backends run.
    pub fn backend_cpus(&self) -> &Option<String> {
        match &self.server_cpus {
            Some(_) => &self.server_cpus,
            None => &self.load_cpus,
        }
    }
}

/// A proxy command (in namespace `ns`, pinned to `cpus`) with the bench's base environment.
pub(crate) fn proxy_cmd(env: &Env, ns: Option<&str>, cpus: &Option<String>) -> Command {
    let bin = env.proxy_bin.to_str().unwrap_or_default();
    let mut args: Vec<&str> = Vec::new();
    if let Some(c) = cpus {
        args.extend(["taskset", "-c", c]);
    }
    args.push(bin);
    let mut cmd = match ns {
        Some(ns) => PodPair::exec(ns, &args),
        None => {
            let mut c = Command::new(args[0]);
            c.args(&args[1..]);
            c
        }
    };
    cmd.env_clear()
        .env("LINKERD2_PROXY_CORES", env.proxy_threads.to_string())
        .env("LINKERD2_PROXY_LOG", "warn")
        .env(
            "LINKERD2_PROXY_INBOUND_PORTS_DISABLE_PROTOCOL_DETECTION",
            "",
        )
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    cmd
}

/// Client -> one proxy's outbound listener in explicit-proxy mode -> backend.
pub fn proxy(env: &Env, backend: Addrs) -> Result<Topology, String> {
    let (outbound, inbound, admin) = (
        loopback(free_port()),
        loopback(free_port()),
        loopback(free_port()),
    );
    let child = proxy_cmd(env, None, &env.proxy_cpus)
        .env("LINKERD2_PROXY_OUTBOUND_LISTEN_ADDR", outbound.to_string())
        .env("LINKERD2_PROXY_INBOUND_LISTEN_ADDR", inbound.to_string())
        .env("LINKERD2_PROXY_ADMIN_LISTEN_ADDR", admin.to_string())
        .spawn()
        .map_err(|e| format!("{}: {e}", env.proxy_bin.display()))?;
    let pid = child.id();
    let procs = Rc::new(Procs {
        children: vec![child],
        pods: None,
    });
    wait_listening(outbound, "linkerd2-proxy")?;
    Ok(Topology {
        name: "proxy",
        ns: None,
        load_uid: None,
        targets: Addrs {
            http: outbound,
            echo: outbound,
            sink: outbound,
            // Explicit-proxy mode has no target for bytes that are not HTTP (not run).
            banner: outbound,
        },
        h2_target: None,
        via_proxy: Some(backend),
        pids: vec![pid],
        conns: ConnCounter::ProxyMetrics { ns: None, admin },
        _procs: procs,
    })
}

/// Client -> haproxy (same thread count as the proxy) -> backend; `None` when not installed.
pub fn haproxy(
    env: &Env,
    backend: Addrs,
    dir: &std::path::Path,
) -> Result<Option<Topology>, String> {
    let found = Command::new("haproxy")
        .arg("-v")
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if !found {
        return Ok(None);
    }
    let (h1, h2, echo, sink, banner) = (
        free_port(),
        free_port(),
        free_port(),
        free_port(),
        free_port(),
    );
    let config = format!(
        "global\n  nbthread {threads}\n  maxconn 4000\n\
         defaults\n  timeout connect 5s\n  timeout client 60s\n  timeout server 60s\n\
         frontend h1\n  mode http\n  bind 127.0.0.1:{h1}\n  default_backend h1b\n\
         backend h1b\n  mode http\n  http-reuse always\n  server s1 {http}\n\
         frontend h2\n  mode http\n  bind 127.0.0.1:{h2} proto h2\n  default_backend h2b\n\
         backend h2b\n  mode http\n  http-reuse always\n  server s1 {http} proto h2\n\
         listen echo\n  mode tcp\n  bind 127.0.0.1:{echo}\n  server s1 {becho}\n\
         listen sink\n  mode tcp\n  bind 127.0.0.1:{sink}\n  server s1 {bsink}\n\
         listen banner\n  mode tcp\n  bind 127.0.0.1:{banner}\n  server s1 {bbanner}\n",
        threads = env.proxy_threads,
        http = backend.http,
        becho = backend.echo,
        bsink = backend.sink,
        bbanner = backend.banner,
    );
    let path = dir.join("haproxy.cfg");
    std::fs::write(&path, config).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut cmd = pinned(&env.proxy_cpus, std::path::Path::new("haproxy"));
    let child = cmd
        .arg("-db")
        .arg("-f")
        .arg(&path)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("haproxy: {e}"))?;
    let pid = child.id();
    let procs = Rc::new(Procs {
        children: vec![child],
        pods: None,
    });
    for p in [h1, h2, echo, sink, banner] {
        wait_listening(loopback(p), "haproxy")?;
    }
    Ok(Some(Topology {
        name: "haproxy",
        ns: None,
        load_uid: None,
        targets: Addrs {
            http: loopback(h1),
            echo: loopback(echo),
            sink: loopback(sink),
            banner: loopback(banner),
        },
        h2_target: Some(loopback(h2)),
        via_proxy: None,
        pids: vec![pid],
        conns: ConnCounter::Backend {
            ns: None,
            stats: backend.http,
        },
        _procs: procs,
    }))
}

/// The identities of the two proxies of the pair.
const ID_A: &str = "client.bench.serviceaccount.identity.linkerd.cluster.local";
const ID_B: &str = "server.bench.serviceaccount.identity.linkerd.cluster.local";

/// The meshed path in two pods: client -> (iptables) proxy A outbound -> veth -> (iptables)
/// proxy B inbound -> backend; and `direct-veth`, the same pods and veth without the proxies
/// (backend ports exempted from redirection, client running as the exempted uid).
///
/// When `linkerd-control` was built beside the bench, both proxies get identities from a CA
/// (a `linkerd-control` in each pod, sharing one CA directory and mesh file), and
/// `proxy-pair-mtls` targets backend ports that discovery says are behind proxy B: proxy A
/// reaches them with mTLS, which proxy B terminates. `proxy-pair` stays plaintext (its ports
/// are not in discovery), so the two differ only by mTLS. `proxy-pair-h2` is `proxy-pair-mtls`
/// with the endpoints hinted `h2`: HTTP/1 travels between the proxies as multiplexed HTTP/2.
pub fn pair(env: &Env, tmp: &std::path::Path) -> Result<Vec<Topology>, String> {
    const MESHED: [u16; 4] = [8080, 9000, 9001, 9002];
    const MTLS: [u16; 4] = [28080, 29000, 29001, 29002];
    const H2: [u16; 4] = [38080, 39000, 39001, 39002];
    // Services whose ClusterIP is the server pod's: routed by their outbound policy (the
    // controller's default route; ten routes).
    const POLICY: [u16; 4] = [48080, 49000, 49001, 49002];
    const ROUTES: [u16; 4] = [58080, 59000, 59001, 59002];
    const DIRECT: [u16; 4] = [18080, 19000, 19001, 19002];
    const NOBODY: u32 = 65534;
    let control_bin = env.self_bin.with_file_name("linkerd-control");
    let mtls = control_bin.exists();
    let pods = PodPair::create("bench");
    let server = pods.server.clone();
    let client = pods.client.clone();
    let ip = pods.server_ip;
    let mut procs = Procs {
        children: Vec::new(),
        pods: Some(pods),
    };

    // Server pod: the backend on every port, proxy B, inbound redirection except the admin
    // ports and the direct-veth ports.
    let self_bin = env.self_bin.to_str().unwrap_or_default().to_string();
    let listen = |p: u16| format!("0.0.0.0:{p}");
    let mut backend_args: Vec<String> = Vec::new();
    if let Some(c) = env.backend_cpus() {
        backend_args.extend(["taskset".into(), "-c".into(), c.clone()]);
    }
    backend_args.extend([
        self_bin.clone(),
        "backend".into(),
        "--body-size".into(),
        env.body_size.to_string(),
    ]);
    for (flag, i) in [("--http", 0), ("--echo", 1), ("--sink", 2), ("--banner", 3)] {
        for ports in [MESHED, DIRECT, MTLS, H2, POLICY, ROUTES] {
            backend_args.extend([flag.to_string(), listen(ports[i])]);
        }
    }
    let args: Vec<&str> = backend_args.iter().map(String::as_str).collect();
    procs.children.push(
        PodPair::exec(&server, &args)
            .stdout(Stdio::null())
            .spawn()
            .map_err(|e| format!("backend: {e}"))?,
    );
    let identity = match mtls {
        true => Some(mesh_identity(
            &control_bin,
            tmp,
            ip.into(),
            [&MTLS, &H2, &POLICY, &ROUTES],
            &mut procs,
            [&client, &server],
        )?),
        false => None,
    };
    let server_cpus = env
        .server_cpus
        .as_ref()
        .or(env.proxy_cpus.as_ref())
        .cloned();
    let mut proxy_b = proxy_cmd(env, Some(&server), &server_cpus);
    if let Some(dir) = &identity {
        proxy_b.envs(identity_env(dir, "server", ID_B));
    }
    let proxy_b = proxy_b.spawn().map_err(|e| format!("proxy B: {e}"))?;
    let pid_b = proxy_b.id();
    procs.children.push(proxy_b);
    let mut skip = vec![4190, 4191];
    skip.extend(DIRECT);
    let pods = procs.pods.as_ref().expect("set above");
    pods.redirect_inbound(4143, &skip);

    // Client pod: proxy A (root, exempt from redirection) and outbound redirection.
    let mut proxy_a = proxy_cmd(env, Some(&client), &env.proxy_cpus);
    if let Some(dir) = &identity {
        proxy_a
            .envs(identity_env(dir, "client", ID_A))
            .env("LINKERD2_PROXY_DESTINATION_SVC_ADDR", "127.0.0.1:8086")
            .env("LINKERD2_PROXY_POLICY_SVC_ADDR", "127.0.0.1:8086")
            .env(
                "LINKERD2_PROXY_POLICY_WORKLOAD",
                "{\"ns\":\"bench\",\"pod\":\"client\"}\n",
            );
    }
    let proxy_a = proxy_a.spawn().map_err(|e| format!("proxy A: {e}"))?;
    let pid_a = proxy_a.id();
    procs.children.push(proxy_a);
    pods.redirect_outbound(0, 4140);

    let admin = loopback(4191);
    for ns in [&server, &client] {
        let deadline = Instant::now() + Duration::from_secs(10);
        while ns_get(env, &Some(ns.clone()), admin, "/ready").map(|b| b == "ready\n") != Ok(true) {
            if Instant::now() > deadline {
                return Err(format!("the proxy in {ns} did not become ready"));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    let addrs = |ports: [u16; 4]| Addrs {
        http: SocketAddr::from((ip, ports[0])),
        echo: SocketAddr::from((ip, ports[1])),
        sink: SocketAddr::from((ip, ports[2])),
        banner: SocketAddr::from((ip, ports[3])),
    };
    let procs = Rc::new(procs);
    let mut topologies = vec![Topology {
        name: "direct-veth",
        ns: Some(client.clone()),
        load_uid: None,
        targets: addrs(DIRECT),
        h2_target: None,
        via_proxy: None,
        pids: Vec::new(),
        conns: ConnCounter::Backend {
            ns: Some(server.clone()),
            stats: loopback(DIRECT[0]),
        },
        _procs: procs.clone(),
    }];
    // The proxied topologies differ only in their backend ports (and so in what discovery
    // says of them).
    let mut proxied = vec![("proxy-pair", MESHED)];
    if mtls {
        proxied.extend([
            ("proxy-pair-mtls", MTLS),
            ("proxy-pair-h2", H2),
            ("proxy-pair-policy", POLICY),
            ("proxy-pair-routes10", ROUTES),
        ]);
    }
    for (name, ports) in proxied {
        topologies.push(Topology {
            name,
            ns: Some(client.clone()),
            load_uid: Some(NOBODY),
            targets: addrs(ports),
            h2_target: None,
            via_proxy: None,
            pids: vec![pid_a, pid_b],
            conns: ConnCounter::ProxyMetrics {
                ns: Some(client.clone()),
                admin,
            },
            _procs: procs.clone(),
        });
    }
    Ok(topologies)
}

/// A CA (`linkerd-control ca init`), a mesh file naming the `mtls` backend ports of the server
/// pod as endpoints behind proxy B, token files, and a `linkerd-control` on 127.0.0.1:8086 in
/// each pod; returns the directory.
fn mesh_identity(
    control_bin: &std::path::Path,
    tmp: &std::path::Path,
    server_ip: std::net::IpAddr,
    [mtls, h2, policy, routes]: [&[u16; 4]; 4],
    procs: &mut Procs,
    pods: [&String; 2],
) -> Result<std::path::PathBuf, String> {
    let dir = tmp.join("mesh");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let out = Command::new(control_bin)
        .args(["ca", "init", "--dir"])
        .arg(dir.join("ca"))
        .output()
        .map_err(|e| format!("linkerd-control ca init: {e}"))?;
    if !out.status.success() {
        return Err(format!("linkerd-control ca init: {out:?}"));
    }
    let mut yaml = String::from("services:\n");
    for (i, port) in mtls.iter().enumerate() {
        yaml.push_str(&format!(
            "  - name: mtls{i}.bench.svc.cluster.local\n    port: {port}\n    endpoints:\n      - addr: {}\n        identity: {ID_B}\n",
            SocketAddr::from((server_ip, *port))
        ));
    }
    // The same, hinted h2: HTTP/1 is carried over multiplexed HTTP/2 between the proxies.
    for (i, port) in h2.iter().enumerate() {
        yaml.push_str(&format!(
            "  - name: h2{i}.bench.svc.cluster.local\n    port: {port}\n    endpoints:\n      - addr: {}\n        identity: {ID_B}\n        protocol_hint: h2\n",
            SocketAddr::from((server_ip, *port))
        ));
    }
    // Services at the server pod's IP, as a ClusterIP: the default policy (one route), and
    // ten routes of which the last matches (each request is ranked against all ten).
    let service = |name: String, port: u16| {
        format!(
            "  - name: {name}.bench.svc.cluster.local\n    port: {port}\n    cluster_ip: {server_ip}\n    endpoints:\n      - addr: {}\n        identity: {ID_B}\n",
            SocketAddr::from((server_ip, port))
        )
    };
    for (i, port) in policy.iter().enumerate() {
        yaml.push_str(&service(format!("policy{i}"), *port));
    }
    for (i, port) in routes.iter().enumerate() {
        yaml.push_str(&service(format!("routes{i}"), *port));
        yaml.push_str("    policy:\n      routes:\n");
        for r in 0..9 {
            yaml.push_str(&format!(
                "        - {{ name: r{r}, matches: [{{ path_prefix: /r{r}, headers: {{ x-route: \"{r}\" }} }}] }}\n"
            ));
        }
        yaml.push_str("        - { name: rest }\n");
    }
    yaml.push_str("identities:\n");
    for (name, id) in [("client", ID_A), ("server", ID_B)] {
        yaml.push_str(&format!("  - name: {id}\n    token: bench-{name}\n"));
        std::fs::write(dir.join(format!("{name}.token")), format!("bench-{name}"))
            .map_err(|e| e.to_string())?;
    }
    std::fs::write(dir.join("mesh.yaml"), yaml).map_err(|e| e.to_string())?;
    let control = control_bin.to_str().unwrap_or_default();
    let mesh = dir.join("mesh.yaml");
    let ca = dir.join("ca");
    for ns in pods {
        let args = [
            control,
            "--config",
            mesh.to_str().unwrap_or_default(),
            "--listen",
            "127.0.0.1:8086",
            "--ca",
            ca.to_str().unwrap_or_default(),
        ];
        procs.children.push(
            PodPair::exec(ns, &args)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .map_err(|e| format!("linkerd-control: {e}"))?,
        );
        let deadline = Instant::now() + Duration::from_secs(10);
        let listening = || {
            PodPair::exec(ns, &["bash", "-c", "echo > /dev/tcp/127.0.0.1/8086"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        };
        while !listening() {
            if Instant::now() > deadline {
                return Err(format!("linkerd-control in {ns} did not start"));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    Ok(dir)
}

/// A pair proxy's identity variables.
fn identity_env(dir: &std::path::Path, name: &str, id: &str) -> Vec<(String, String)> {
    let anchors = std::fs::read_to_string(dir.join("ca/trust-anchors.pem")).unwrap_or_default();
    let token = dir.join(format!("{name}.token"));
    vec![
        (
            "LINKERD2_PROXY_IDENTITY_SVC_ADDR".into(),
            "127.0.0.1:8086".into(),
        ),
        ("LINKERD2_PROXY_IDENTITY_TRUST_ANCHORS".into(), anchors),
        ("LINKERD2_PROXY_IDENTITY_LOCAL_NAME".into(), id.into()),
        (
            "LINKERD2_PROXY_IDENTITY_TOKEN_FILE".into(),
            token.to_string_lossy().into_owned(),
        ),
    ]
}

impl Topology {
    /// Measures the proxies' CPU seconds (summed) right now.
    pub fn cpu_seconds(&self) -> f64 {
        self.pids
            .iter()
            .filter_map(|p| procfs::cpu_seconds(*p))
            .sum()
    }
}
