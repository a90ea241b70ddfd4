//! The orchestrator: start each topology, run every scenario against it, measure, report.

use crate::{
    load::{LoadResult, Scenario},
    report::{self, median, Cell, Report},
    spec::{run_load, LoadSpec, Profile, SCAN_CONNS},
    topology::{self, Env, Procs, Topology},
    Cli,
};
use std::{
    process::Command,
    time::{Duration, Instant},
};

/// Runs the benchmark; returns whether every cell completed without errors.
pub fn run(cli: &Cli) -> Result<bool, String> {
    let profile = Profile::of(cli);
    let self_bin = std::env::current_exe().map_err(|e| e.to_string())?;
    let proxy_bin = cli
        .proxy_bin
        .clone()
        .unwrap_or_else(|| self_bin.with_file_name("linkerd2-proxy"));
    if !proxy_bin.exists() {
        return Err(format!(
            "{} not found: build it with `cargo build --release -p linkerd-app`, or pass --proxy-bin",
            proxy_bin.display()
        ));
    }
    let (proxy_cpus, load_cpus, server_cpus) = cpus(cli)?;
    let env = Env {
        proxy_bin,
        self_bin,
        proxy_cpus,
        load_cpus,
        server_cpus,
        proxy_threads: cli.proxy_threads,
        body_size: cli.body_size,
    };
    let scenarios: Vec<Scenario> = Scenario::ALL
        .into_iter()
        .filter(|s| cli.scenarios.is_empty() || cli.scenarios.iter().any(|n| n == s.name()))
        .collect();
    let wants = |t: &str| cli.topologies.is_empty() || cli.topologies.iter().any(|n| n == t);
    let tmp = std::env::temp_dir().join(format!("linkerd-bench-{}", std::process::id()));
    std::fs::create_dir_all(&tmp).map_err(|e| e.to_string())?;

    eprintln!(
        "linkerd-bench: profile {}, {} per cell, {} repeat(s), proxy {} (cpus {:?}), load cpus {:?}, server cpus {:?}",
        profile.name, humantime(profile.duration), cli.repeat, env.proxy_bin.display(), env.proxy_cpus, env.load_cpus, env.server_cpus
    );
    let started = Instant::now();
    let wakeup = crate::wakeup::measure(&env.self_bin, if cli.smoke { 100 } else { 2000 });
    let mut cells = Vec::new();
    let mut skipped = Vec::new();

    // Loopback topologies share one backend process.
    let (backend_child, backend) = topology::local_backend(&env)?;
    let _backend = Procs::new(vec![backend_child]);
    let mut loopback: Vec<Topology> = Vec::new();
    if wants("direct") {
        loopback.push(topology::direct(backend));
    }
    if wants("proxy") {
        loopback.push(topology::proxy(&env, backend)?);
    }
    if wants("haproxy") {
        match topology::haproxy(&env, backend, &tmp)? {
            Some(t) => loopback.push(t),
            None => skipped.push("haproxy: not installed (apt-get install haproxy)".to_string()),
        }
    }
    for topo in &loopback {
        for s in &scenarios {
            // An explicit proxy has no target for a client that speaks no HTTP.
            if *s == Scenario::TcpBanner && topo.via_proxy.is_some() {
                continue;
            }
            cells.push(cell(&env, &profile, cli.repeat, topo, *s));
        }
    }
    drop(loopback);
    let idle = match cli.idle_conns {
        0 => None,
        n => {
            match crate::idle::measure(&env, backend, n, Duration::from_secs(cli.idle_settle_secs))
            {
                Ok(r) => Some(r),
                Err(e) => {
                    skipped.push(format!("idle connections: {e}"));
                    None
                }
            }
        }
    };

    let wants_scenario = |n: &str| cli.scenarios.is_empty() || cli.scenarios.iter().any(|s| s == n);
    if wants("balance") && wants_scenario("balance") {
        match crate::balance::run(&env, &profile, cli.repeat, &tmp) {
            Ok(c) => cells.extend(c),
            Err(e) => skipped.push(format!("balance: {e}")),
        }
    }

    if wants("pair") {
        match linkerd_netns::unavailable() {
            Some(why) => skipped.push(format!("proxy-pair, direct-veth: {why}")),
            None => {
                for topo in topology::pair(&env, &tmp)? {
                    for s in &scenarios {
                        cells.push(cell(&env, &profile, cli.repeat, &topo, *s));
                    }
                }
            }
        }
    }
    let mut scan = Vec::new();
    if !cli.scan_workers.is_empty() {
        match linkerd_netns::unavailable() {
            Some(why) => skipped.push(format!("worker scan: {why}")),
            None => scan = worker_scan(&env, &profile, cli, &tmp)?,
        }
    }
    let _ = std::fs::remove_dir_all(&tmp);

    if let Some(w) = &wakeup {
        println!("{}", crate::wakeup::summary(w));
    }
    println!("{}", report::table(&cells));
    if let Some(s) = report::scan_summary(&scan) {
        println!("{s}");
    }
    if let Some(summary) = report::balance_summary(&cells) {
        println!("{summary}");
    }
    if let Some(i) = &idle {
        println!(
            "idle connections: {} open: RSS {:.1} MB -> {:.1} MB ({:.1} KB each); {}s after they closed: {:.1} MB",
            i.conns, i.rss_before_mb, i.rss_open_mb, i.kb_per_conn, i.settle_secs, i.rss_after_mb
        );
    }
    for s in &skipped {
        println!("skipped: {s}");
    }
    let failed: Vec<&Cell> = cells
        .iter()
        .filter(|c| c.errors > 0 || c.requests == 0)
        .collect();
    for c in &failed {
        println!(
            "FAILED: {} / {}: {} errors, {} requests ({})",
            c.scenario,
            c.topology,
            c.errors,
            c.requests,
            c.first_error.as_deref().unwrap_or("no requests completed")
        );
    }
    println!(
        "{} cells in {:.1}s",
        cells.len(),
        started.elapsed().as_secs_f64()
    );
    let ok = failed.is_empty();

    let report = Report {
        machine: machine(&env, &profile, cli),
        results: cells,
        worker_scan: scan,
        wakeup: wakeup.unwrap_or_default(),
        idle,
        skipped,
    };
    if let Some(dir) = cli.out.parent() {
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    }
    let json = serde_json::to_string_pretty(&report).map_err(|e| e.to_string())?;
    std::fs::write(&cli.out, json).map_err(|e| format!("{}: {e}", cli.out.display()))?;
    println!("results written to {}", cli.out.display());
    Ok(ok)
}

/// `http1-keepalive-max` through `proxy-pair-h2` with each worker count of `--scan-workers`
/// (proxies not pinned to one CPU, so extra workers can run); with `--scan-worker-cpu`, again
/// with every proxy worker thread held to that CPU budget.
fn worker_scan(
    env: &Env,
    profile: &Profile,
    cli: &Cli,
    tmp: &std::path::Path,
) -> Result<Vec<report::ScanPoint>, String> {
    let mut modes = vec![None];
    if let Some(cpu) = cli.scan_worker_cpu {
        match crate::cgroup::unavailable() {
            Some(why) => eprintln!("linkerd-bench: capped worker scan skipped: {why}"),
            None => modes.push(Some(cpu)),
        }
    }
    // Enough connections that the proxies, not the round trips, limit the rate.
    let profile = &Profile {
        conns: SCAN_CONNS,
        ..profile.clone()
    };
    let mut points = Vec::new();
    for worker_cpu in modes {
        for &workers in &cli.scan_workers {
            let env = Env {
                proxy_threads: workers.max(1),
                proxy_cpus: None,
                server_cpus: None,
                ..env.clone()
            };
            let topologies = topology::pair(&env, tmp)?;
            let Some(topo) = topologies.iter().find(|t| t.name == "proxy-pair-h2") else {
                return Err("the worker scan needs proxy-pair-h2 (build linkerd-control)".into());
            };
            // Every thread of each proxy gets its own budget: its workers (with one worker,
            // the main thread runs the runtime) and the idle main thread.
            let caps = match worker_cpu {
                Some(cpu) => {
                    let caps = crate::cgroup::ThreadCaps::apply(&topo.pids, cpu)?;
                    eprintln!(
                        "linkerd-bench: {workers} worker(s): {} proxy threads held to {cpu} CPU each",
                        caps.threads()
                    );
                    Some(caps)
                }
                None => None,
            };
            let c = cell(&env, profile, cli.repeat, topo, Scenario::Http1KeepaliveMax);
            drop(caps);
            points.push(report::ScanPoint {
                workers,
                worker_cpu,
                rps: c.rps,
                p99_us: c.latency_us.p99,
                cpu_s_per_1k_req: c.cpu_s_per_1k_req,
                errors: c.errors,
            });
        }
    }
    Ok(points)
}

/// Runs one scenario against one topology `repeat` times and keeps the medians.
fn cell(env: &Env, profile: &Profile, repeat: usize, topo: &Topology, s: Scenario) -> Cell {
    let runs: Vec<Run> = (0..repeat.max(1))
        .map(|_| run_once(env, profile, topo, s))
        .collect();
    let med = |f: &dyn Fn(&Run) -> f64| median(runs.iter().map(f).collect());
    let rps = med(&|r| r.rps());
    Cell {
        scenario: s.name(),
        topology: topo.name,
        rps,
        latency_us: crate::load::Latency {
            p50: med(&|r| r.load.latency_us.p50),
            p90: med(&|r| r.load.latency_us.p90),
            p99: med(&|r| r.load.latency_us.p99),
            p999: med(&|r| r.load.latency_us.p999),
            max: med(&|r| r.load.latency_us.max),
        },
        cpu_s_per_1k_req: med(&|r| {
            if r.load.requests > 0 {
                r.cpu_s / r.load.requests as f64 * 1000.0
            } else {
                0.0
            }
        }),
        peak_rss_mb: med(&|r| r.peak_rss_mb),
        rss_end_mb: med(&|r| r.rss_end_mb),
        upstream_conns_opened: med(&|r| r.conns as f64) as u64,
        requests: med(&|r| r.load.requests as f64) as u64,
        errors: runs.iter().map(|r| r.load.errors).sum(),
        mb_per_s: (s == Scenario::TcpBulk)
            .then(|| med(&|r| r.load.bytes as f64 / r.load.elapsed_s.max(1e-9) / 1e6)),
        first_error: runs.iter().find_map(|r| r.load.first_error.clone()),
    }
}

struct Run {
    load: LoadResult,
    cpu_s: f64,
    peak_rss_mb: f64,
    rss_end_mb: f64,
    conns: u64,
}

impl Run {
    fn rps(&self) -> f64 {
        self.load.requests as f64 / self.load.elapsed_s.max(1e-9)
    }
}

fn run_once(env: &Env, profile: &Profile, topo: &Topology, s: Scenario) -> Run {
    for pid in &topo.pids {
        crate::procfs::reset_peak(*pid);
    }
    let cpu_before = topo.cpu_seconds();
    let conns_before = topo.conns.read(env);
    let load = load(env, profile, topo, s);
    let cpu_s = topo.cpu_seconds() - cpu_before;
    let conns = match (conns_before, topo.conns.read(env)) {
        (Ok(a), Ok(b)) => b.saturating_sub(a),
        _ => 0,
    };
    let mb = |key| {
        topo.pids
            .iter()
            .filter_map(|p| crate::procfs::status_mb(*p, key))
            .fold(0.0, f64::max)
    };
    Run {
        load,
        cpu_s,
        peak_rss_mb: mb("VmHWM:"),
        rss_end_mb: mb("VmRSS:"),
        conns,
    }
}

/// Runs the load generator as a subprocess (in the topology's namespace, as its uid, pinned).
fn load(env: &Env, profile: &Profile, topo: &Topology, s: Scenario) -> LoadResult {
    let mut target = topo.targets.for_backend(s.backend());
    if matches!(s, Scenario::Http2 | Scenario::GrpcUnary) {
        target = topo.h2_target.unwrap_or(target);
    }
    let spec = LoadSpec {
        scenario: s,
        target,
        via_proxy: topo
            .via_proxy
            .map(|v| v.for_backend(s.backend()).to_string()),
        rate: if s == Scenario::Http1ConnPerRequest {
            profile.conn_per_request_rate
        } else {
            profile.rate
        },
        duration: profile.duration,
        conns: match s {
            Scenario::TcpBulk => 1,
            _ => profile.conns,
        },
        round_robin: Vec::new(),
    };
    run_load(env, topo.ns.as_deref(), topo.load_uid, &spec)
}

/// CPU lists for (proxies, load generator, server side).
type Cpus = (Option<String>, Option<String>, Option<String>);

/// Parses `--cpus proxy=0,load=1[,server=1]` or `--cpus pods` (the client pod, load generator
/// and proxy A, on CPU 0; the server pod, backends and proxy B, on CPU 1: one CPU per node).
/// On 2+ cores without the flag, pins proxies to CPU 0 and the load generator and backends to
/// the rest.
fn cpus(cli: &Cli) -> Result<Cpus, String> {
    let has_taskset = Command::new("taskset")
        .arg("-V")
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    let one = |c: &str| Some(c.to_string());
    match cli.cpus.as_deref() {
        Some("pods") => Ok((one("0"), one("0"), one("1"))),
        Some(spec) => {
            let (mut proxy, mut load, mut server) = (None, None, None);
            for part in spec.split(',') {
                match part.split_once('=') {
                    Some(("proxy", v)) => proxy = Some(v.replace('+', ",")),
                    Some(("load", v)) => load = Some(v.replace('+', ",")),
                    Some(("server", v)) => server = Some(v.replace('+', ",")),
                    _ => return Err(format!("--cpus {spec:?}: expected `pods` or proxy=LIST,load=LIST[,server=LIST] (LIST like 0 or 2-3 or 0+2)")),
                }
            }
            Ok((proxy, load, server))
        }
        None => {
            let n = std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1);
            if n >= 2 && has_taskset {
                Ok((one("0"), Some(format!("1-{}", n - 1)), None))
            } else {
                Ok((None, None, None))
            }
        }
    }
}

fn machine(env: &Env, profile: &Profile, cli: &Cli) -> serde_json::Value {
    let cpu_model = std::fs::read_to_string("/proc/cpuinfo").ok().and_then(|c| {
        c.lines()
            .find(|l| l.starts_with("model name"))
            .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
    });
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .ok();
    let date = Command::new("date")
        .arg("-u")
        .arg("+%Y-%m-%dT%H:%M:%SZ")
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string());
    serde_json::json!({
        "cpus": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
        "cpu_model": cpu_model,
        "kernel": kernel,
        "date": date,
        "profile": profile.name,
        "duration_s": profile.duration.as_secs_f64(),
        "rate": profile.rate,
        "conns": profile.conns,
        "repeat": cli.repeat,
        "proxy_threads": env.proxy_threads,
        "proxy_cpus": env.proxy_cpus,
        "scan_worker_cpu": cli.scan_worker_cpu,
        "load_cpus": env.load_cpus,
        "server_cpus": env.server_cpus,
        "body_size": env.body_size,
    })
}

fn humantime(d: Duration) -> String {
    format!("{:.1}s", d.as_secs_f64())
}
