//! The `balance` scenario: ten endpoints behind a discovered name, one of them 10x slower.
//! P2C over peak-EWMA (through the proxy, discovery from `linkerd-control`) with all endpoints
//! healthy and with the slow one, against round-robin over the same endpoints (straight from
//! the load generator); and the time to apply a one-endpoint update to a 10,000-endpoint set.

use crate::{
    load::{Latency, LoadResult, Scenario},
    procfs,
    report::{median, Cell},
    spec::{run_load, LoadSpec, Profile},
    topology::{self, Env, Procs},
};
use linkerd_balance::{Balancer, BalancerConfig};
use linkerd_destination::Resolution;
use linkerd_proxy_api::destination as api;
use std::{
    net::SocketAddr,
    path::Path,
    process::{Command, Stdio},
    sync::Arc,
    time::{Duration, Instant},
};

const NAME: &str = "web.bench.svc.cluster.local";
const PORT: u16 = 8080;
/// The healthy endpoints' latency; the slow one takes 10x.
const DELAY_MS: u64 = 1;

fn yaml(endpoints: &[SocketAddr]) -> String {
    let mut y = format!("services:\n  - name: {NAME}\n    port: {PORT}\n    endpoints:\n");
    for e in endpoints {
        y.push_str(&format!("      - addr: {e}\n"));
    }
    y
}

fn backend(env: &Env, addrs: &[SocketAddr], delay_ms: u64) -> Result<std::process::Child, String> {
    let mut cmd = topology::pinned(env.backend_cpus(), &env.self_bin);
    cmd.arg("backend").args([
        "--delay-ms",
        &delay_ms.to_string(),
        "--body-size",
        &env.body_size.to_string(),
    ]);
    for a in addrs {
        cmd.args(["--http", &a.to_string()]);
    }
    let child = cmd
        .stdout(Stdio::null())
        .spawn()
        .map_err(|e| format!("backend: {e}"))?;
    for a in addrs {
        topology::wait_listening(*a, "backend")?;
    }
    Ok(child)
}

/// Runs the scenario; `Err` when it can't run here (e.g. no `linkerd-control` binary).
/// Each cell runs `repeat` times; the report keeps the medians.
pub fn run(env: &Env, profile: &Profile, repeat: usize, tmp: &Path) -> Result<Vec<Cell>, String> {
    let control_bin = env.self_bin.with_file_name("linkerd-control");
    if !control_bin.exists() {
        return Err(format!(
            "{} not found: build it with `cargo build --release -p linkerd-control`",
            control_bin.display()
        ));
    }
    let fast: Vec<SocketAddr> = (0..10)
        .map(|_| topology::loopback(topology::free_port()))
        .collect();
    let slow = topology::loopback(topology::free_port());
    let mut procs = vec![
        backend(env, &fast, DELAY_MS)?,
        backend(env, &[slow], DELAY_MS * 10)?,
    ];

    let file = tmp.join("balance-mesh.yaml");
    std::fs::write(&file, yaml(&fast)).map_err(|e| e.to_string())?;
    let control = topology::loopback(topology::free_port());
    procs.push(
        Command::new(&control_bin)
            .args([
                "--config",
                &file.to_string_lossy(),
                "--listen",
                &control.to_string(),
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("linkerd-control: {e}"))?,
    );
    topology::wait_listening(control, "linkerd-control")?;

    let (outbound, inbound, admin) = (
        topology::loopback(topology::free_port()),
        topology::loopback(topology::free_port()),
        topology::loopback(topology::free_port()),
    );
    let proxy = topology::proxy_cmd(env, None, &env.proxy_cpus)
        .env("LINKERD2_PROXY_OUTBOUND_LISTEN_ADDR", outbound.to_string())
        .env("LINKERD2_PROXY_INBOUND_LISTEN_ADDR", inbound.to_string())
        .env("LINKERD2_PROXY_ADMIN_LISTEN_ADDR", admin.to_string())
        .env("LINKERD2_PROXY_DESTINATION_SVC_ADDR", control.to_string())
        .spawn()
        .map_err(|e| format!("{}: {e}", env.proxy_bin.display()))?;
    let pid = proxy.id();
    procs.push(proxy);
    let _procs = Procs::new(procs);
    topology::wait_listening(outbound, "linkerd2-proxy")?;

    let spec = |rr: Vec<SocketAddr>| LoadSpec {
        scenario: Scenario::Http1Keepalive,
        target: if rr.is_empty() { outbound } else { rr[0] },
        via_proxy: rr.is_empty().then(|| format!("{NAME}:{PORT}")),
        rate: profile.rate,
        duration: profile.duration,
        conns: profile.conns,
        round_robin: rr.iter().skip(1).copied().collect(),
    };
    let warm = |s: &LoadSpec| {
        let w = LoadSpec {
            duration: (profile.duration / 3).max(Duration::from_millis(200)),
            round_robin: s.round_robin.clone(),
            via_proxy: s.via_proxy.clone(),
            ..*s
        };
        run_load(env, None, None, &w)
    };
    let measured = |topology: &'static str, s: &LoadSpec, proxied: bool| {
        warm(s);
        let runs: Vec<Cell> = (0..repeat.max(1))
            .map(|_| {
                procfs::reset_peak(pid);
                let cpu = procfs::cpu_seconds(pid).unwrap_or(0.0);
                let r = run_load(env, None, None, s);
                let cpu = procfs::cpu_seconds(pid).unwrap_or(0.0) - cpu;
                cell(topology, r, proxied.then_some((cpu, pid)))
            })
            .collect();
        median_cell(runs)
    };

    let mut cells = vec![measured("p2c-ewma-healthy", &spec(Vec::new()), true)];
    let mut with_slow = fast.clone();
    with_slow[9] = slow;
    std::fs::write(&file, yaml(&with_slow)).map_err(|e| e.to_string())?;
    // linkerd-control polls the file every 200ms; the proxy gets the change at once.
    std::thread::sleep(Duration::from_millis(600));
    cells.push(measured("p2c-ewma-slow", &spec(Vec::new()), true));
    cells.push(measured("round-robin-slow", &spec(with_slow), false));
    cells.push(update_cell());
    Ok(cells)
}

/// The per-field median of repeated runs of one cell (errors are summed).
fn median_cell(runs: Vec<Cell>) -> Cell {
    let med = |f: &dyn Fn(&Cell) -> f64| median(runs.iter().map(f).collect());
    let mut c = runs[0].clone();
    c.rps = med(&|c| c.rps);
    c.latency_us = Latency {
        p50: med(&|c| c.latency_us.p50),
        p90: med(&|c| c.latency_us.p90),
        p99: med(&|c| c.latency_us.p99),
        p999: med(&|c| c.latency_us.p999),
        max: med(&|c| c.latency_us.max),
    };
    c.cpu_s_per_1k_req = med(&|c| c.cpu_s_per_1k_req);
    c.peak_rss_mb = med(&|c| c.peak_rss_mb);
    c.requests = med(&|c| c.requests as f64) as u64;
    c.errors = runs.iter().map(|c| c.errors).sum();
    c
}

fn cell(topology: &'static str, r: LoadResult, proxy: Option<(f64, u32)>) -> Cell {
    Cell {
        scenario: "balance",
        topology,
        rps: r.requests as f64 / r.elapsed_s.max(1e-9),
        latency_us: r.latency_us,
        cpu_s_per_1k_req: match proxy {
            Some((cpu, _)) if r.requests > 0 => cpu / r.requests as f64 * 1000.0,
            _ => 0.0,
        },
        peak_rss_mb: proxy
            .and_then(|(_, pid)| procfs::status_mb(pid, "VmHWM:"))
            .unwrap_or(0.0),
        rss_end_mb: proxy
            .and_then(|(_, pid)| procfs::status_mb(pid, "VmRSS:"))
            .unwrap_or(0.0),
        upstream_conns_opened: 0,
        requests: r.requests,
        errors: r.errors,
        mb_per_s: None,
        first_error: r.first_error,
    }
}

/// Times what the proxy does when one endpoint of a 10,000-endpoint set changes: apply the
/// update to the resolution, publish a copy, diff it, and update the balancer.
fn update_cell() -> Cell {
    const N: u32 = 10_000;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("runtime");
    let samples: Vec<f64> = rt.block_on(async {
        let addr = |i: u32| SocketAddr::from(([10, 2, (i >> 8) as u8, i as u8], 8080));
        let add = |addrs: Vec<(SocketAddr, u32)>| api::Update {
            update: Some(api::update::Update::Add(api::WeightedAddrSet {
                addrs: addrs
                    .into_iter()
                    .map(|(a, w)| api::WeightedAddr {
                        addr: Some(a.into()),
                        weight: w,
                        ..Default::default()
                    })
                    .collect(),
                metric_labels: Default::default(),
            })),
        };
        let mut resolution = Resolution::default();
        resolution.apply(add((0..N).map(|i| (addr(i), 1)).collect()));
        let mut published = Arc::new(resolution.clone());
        let balancer: Balancer<()> = Balancer::new("big", BalancerConfig::default());
        balancer.update(
            published.endpoints.values().map(|e| (e.addr, e.weight, ())),
            &[],
        );
        (0..200u32)
            .map(|i| {
                let start = Instant::now();
                resolution.apply(add(vec![(addr(i % N), 2 + i)]));
                let next = Arc::new(resolution.clone());
                let (changed, removed) = published.diff(&next);
                balancer.update(
                    changed.into_iter().map(|e| (e.addr, e.weight, ())),
                    &removed,
                );
                published = next;
                start.elapsed().as_secs_f64() * 1e6
            })
            .collect()
    });
    let q = |p: f64| {
        let mut v = samples.clone();
        v.sort_by(|a, b| a.total_cmp(b));
        v[((v.len() - 1) as f64 * p).round() as usize]
    };
    Cell {
        scenario: "balance-update",
        topology: "10k-endpoints",
        rps: 0.0,
        latency_us: Latency {
            p50: median(samples.clone()),
            p90: q(0.9),
            p99: q(0.99),
            p999: q(0.999),
            max: q(1.0),
        },
        cpu_s_per_1k_req: 0.0,
        peak_rss_mb: 0.0,
        rss_end_mb: 0.0,
        upstream_conns_opened: 0,
        requests: samples.len() as u64,
        errors: 0,
        mb_per_s: None,
        first_error: None,
    }
}
