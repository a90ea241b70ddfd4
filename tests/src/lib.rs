//! Support for the end-to-end tests: proxies started in-process on loopback, test backends
//! (HTTP/1 + HTTP/2, TCP echo, server-speaks-first), clients and metric scraping.
//!
//! The tests themselves live in `tests/tests/*.rs`; each starts its own proxy and backends on
//! ephemeral loopback ports, so they run in parallel.
#![forbid(unsafe_code)]

pub mod api;
pub mod backend;
pub mod ca;
pub mod client;
pub mod control;
pub mod policy;

use linkerd_app::{App, Config, Proxy};
pub use linkerd_netns as netns;
use linkerd_proxy_transport::OrigDst;

use std::{
    collections::HashMap,
    fmt::Debug,
    future::Future,
    io,
    net::SocketAddr,
    path::PathBuf,
    time::{Duration, Instant},
};
use tokio::net::TcpStream;

/// How often [`eventually`] tries again.
const RETRY: Duration = Duration::from_millis(20);

/// Tries `check` until it succeeds, for at most `patience`, and returns what it found; panics
/// with the last failure otherwise. The one way the tests wait for something to happen.
pub async fn eventually<T, E, F, Fut>(patience: Duration, mut check: F) -> T
where
    E: Debug,
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    let deadline = Instant::now() + patience;
    loop {
        match check().await {
            Ok(found) => return found,
            Err(last) if Instant::now() >= deadline => {
                panic!("not within {patience:?}; last: {last:?}")
            }
            Err(_) => tokio::time::sleep(RETRY).await,
        }
    }
}

/// [`eventually`] for tests that run on a plain thread (subprocesses, network namespaces).
pub fn eventually_blocking<T, E: Debug>(
    patience: Duration,
    mut check: impl FnMut() -> Result<T, E>,
) -> T {
    let deadline = Instant::now() + patience;
    loop {
        match check() {
            Ok(found) => return found,
            Err(last) if Instant::now() >= deadline => {
                panic!("not within {patience:?}; last: {last:?}")
            }
            Err(_) => std::thread::sleep(RETRY),
        }
    }
}

/// `Ok` when `cond` holds, else `Err(what)`: for [`eventually`] checks.
pub fn holds<T: Debug>(cond: bool, what: T) -> Result<(), T> {
    cond.then_some(()).ok_or(what)
}

/// Reports the same original destination for every connection, as iptables REDIRECT would for
/// an app that only talks to one target.
#[derive(Clone, Copy, Debug)]
pub struct FixedOrigDst(pub SocketAddr);

impl OrigDst for FixedOrigDst {
    fn orig_dst(&self, _: &TcpStream) -> io::Result<Option<SocketAddr>> {
        Ok(Some(self.0))
    }
}

/// An original destination set once the proxy is up (e.g. to one of its own listeners, bound
/// to port 0 by the proxy itself).
#[derive(Clone, Debug, Default)]
pub struct LaterOrigDst(std::sync::Arc<std::sync::OnceLock<SocketAddr>>);

impl LaterOrigDst {
    /// Every connection from now on reports `addr`.
    pub fn set(&self, addr: SocketAddr) {
        self.0.set(addr).expect("set once");
    }
}

impl OrigDst for LaterOrigDst {
    fn orig_dst(&self, _: &TcpStream) -> io::Result<Option<SocketAddr>> {
        Ok(self.0.get().copied())
    }
}

/// A loopback address that was free a moment ago, for a server a test starts later on a
/// known port (e.g. a proxy's admin address a waiter is told beforehand).
pub fn free_addr() -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("local addr")
}

/// An address that refuses connections, reserved while the socket lives: bound, never
/// listening (so no other test can take the port meanwhile).
pub fn refusing_addr() -> (socket2::Socket, SocketAddr) {
    let socket =
        socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).expect("a socket");
    let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
    socket.bind(&any.into()).expect("bind");
    let addr = socket
        .local_addr()
        .ok()
        .and_then(|a| a.as_socket())
        .expect("a bound address");
    (socket, addr)
}

/// Logs to the test's captured output when `RUST_LOG` is set.
pub fn trace_init() {
    if let Ok(filter) = std::env::var("RUST_LOG") {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_test_writer()
            .try_init();
    }
}

/// A config with every listener on an ephemeral loopback port, plus `env` overrides.
pub fn config(env: &[(&str, &str)]) -> Config {
    let mut map: HashMap<String, String> = [
        ("LINKERD2_PROXY_INBOUND_LISTEN_ADDR", "127.0.0.1:0"),
        ("LINKERD2_PROXY_OUTBOUND_LISTEN_ADDR", "127.0.0.1:0"),
        ("LINKERD2_PROXY_ADMIN_LISTEN_ADDR", "127.0.0.1:0"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    for (k, v) in env {
        map.insert(k.to_string(), v.to_string());
    }
    Config::from_env(&map).expect("test config must be valid")
}

/// Starts a proxy on the current runtime whose connections report what `orig_dst` says.
pub fn proxy_with(env: &[(&str, &str)], orig_dst: impl OrigDst) -> Proxy {
    trace_init();
    App::new(config(env))
        .with_orig_dst(orig_dst)
        .spawn()
        .expect("proxy must start")
}

/// Starts a proxy on the current runtime whose connections all report `orig_dst` (or none, for
/// explicit-proxy tests).
pub fn proxy(env: &[(&str, &str)], orig_dst: Option<SocketAddr>) -> Proxy {
    trace_init();
    let app = App::new(config(env));
    let app = match orig_dst {
        Some(dst) => app.with_orig_dst(FixedOrigDst(dst)),
        None => app.with_orig_dst(linkerd_proxy_transport::NoOrigDst),
    };
    app.spawn().expect("proxy must start")
}

/// Fetches the proxy's `/metrics` text.
pub async fn scrape(admin: SocketAddr) -> String {
    let (status, body) = client::get(admin, "/metrics").await;
    assert_eq!(status, 200, "GET /metrics");
    body
}

/// The value of the first sample of `name` whose labels contain every one of `labels`
/// (each written `key="value"`).
pub fn metric(text: &str, name: &str, labels: &[&str]) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| {
            let (n, _) = l.split_once(['{', ' ']).unwrap_or((l, ""));
            n == name
        })
        .find(|l| labels.iter().all(|lbl| l.contains(lbl)))
        .and_then(|l| l.rsplit_once(' '))
        .and_then(|(_, v)| v.parse().ok())
}

/// The sum of every sample of `name` whose labels contain every one of `labels`.
pub fn metric_sum(text: &str, name: &str, labels: &[&str]) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| {
            l.split_once(['{', ' '])
                .map(|(n, _)| n == name)
                .unwrap_or(false)
        })
        .filter(|l| labels.iter().all(|lbl| l.contains(lbl)))
        .filter_map(|l| l.rsplit_once(' ').and_then(|(_, v)| v.parse::<f64>().ok()))
        .sum()
}

/// A binary of the workspace built beside this test executable (e.g. `linkerd-control`).
pub fn workspace_bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    let bin = exe
        .parent()
        .and_then(|deps| deps.parent())
        .map(|dir| dir.join(name))
        .expect("target directory");
    assert!(
        bin.exists(),
        "{} is missing: build the workspace (`cargo build`) first",
        bin.display()
    );
    bin
}

/// The built `linkerd2-proxy` binary: `$LINKERD2_PROXY_BIN`, or the one beside this test
/// executable's directory (cargo builds it for `linkerd-app`'s integration tests).
pub fn proxy_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("LINKERD2_PROXY_BIN") {
        return p.into();
    }
    let exe = std::env::current_exe().expect("current exe");
    // target/<profile>/deps/<test> -> target/<profile>/linkerd2-proxy
    let bin = exe
        .parent()
        .and_then(|deps| deps.parent())
        .map(|dir| dir.join("linkerd2-proxy"))
        .expect("target directory");
    assert!(
        bin.exists(),
        "{} is missing: build it with `cargo build -p linkerd-app` or run the whole workspace's tests",
        bin.display()
    );
    bin
}

/// The environment Linkerd's injector gives the proxy container (`tests/fixtures/
/// injected-pod.env`, a copy of the compatibility contract's), default variables only, in
/// order: `# trailing-newline` values end with a newline, as the real ones do; with `ipv6`,
/// `injected-pod-ipv6.env`'s lines replace theirs. `@TRUST_ANCHORS_PEM@` is left for the
/// caller.
pub fn injected_env(ipv6: bool) -> Vec<(String, String)> {
    fn parse(text: &str, stop_at_conditional: bool) -> Vec<(String, String)> {
        let mut out = Vec::new();
        let mut newline = false;
        for line in text.lines() {
            if stop_at_conditional && line.starts_with("# =====") && line.contains("conditional") {
                break;
            }
            if line.starts_with('#') {
                newline |= line.starts_with("# trailing-newline");
                continue;
            }
            let Some((k, v)) = line.split_once('=') else {
                continue;
            };
            let mut v = v.to_string();
            if std::mem::take(&mut newline) {
                v.push('\n');
            }
            out.push((k.to_string(), v));
        }
        out
    }
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures");
    let read = |f: &str| std::fs::read_to_string(dir.join(f)).expect("the fixture");
    let mut env = parse(&read("injected-pod.env"), true);
    if ipv6 {
        for (k, v) in parse(&read("injected-pod-ipv6.env"), false) {
            match env.iter_mut().find(|(name, _)| *name == k) {
                Some(slot) => slot.1 = v,
                None => env.push((k, v)),
            }
        }
    }
    env
}
