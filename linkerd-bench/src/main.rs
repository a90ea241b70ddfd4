//! `linkerd-bench`: starts the real `linkerd2-proxy` binary, its own backends and load
//! generator, and compares topologies (direct, one proxy, a meshed proxy pair in network
//! namespaces, haproxy) side by side in one run: latency percentiles, request rate, proxy CPU
//! per 1,000 requests, peak RSS and upstream connection reuse.
//!
//! The load generator and backends run as subprocesses of this same binary (hidden
//! subcommands), so they can be pinned to their own cores and run inside a namespace.
#![forbid(unsafe_code)]

mod backend;
mod balance;
mod cgroup;
mod idle;
mod load;
mod procfs;
mod report;
mod run;
mod spec;
mod topology;
mod wakeup;

use clap::{Parser, Subcommand};
use std::{net::SocketAddr, path::PathBuf, process::ExitCode, time::Duration};

#[derive(Parser, Debug)]
#[command(about = "Benchmark linkerd2-proxy against direct connections and haproxy")]
struct Cli {
    #[command(subcommand)]
    cmd: Option<Cmd>,
    /// Every scenario for a few seconds (whole run under 3 minutes on 2 cores).
    #[arg(long)]
    quick: bool,
    /// Every scenario for a moment; fails unless every cell completes with zero errors.
    #[arg(long, conflicts_with = "quick")]
    smoke: bool,
    /// Where to write the JSON results.
    #[arg(long, default_value = "target/bench/latest.json")]
    out: PathBuf,
    /// CPU pinning: `proxy=0,load=1` (the default on 2+ cores), optionally `,server=LIST` for
    /// the backends and the pair's proxy B, or `pods` (client pod on CPU 0, server pod on 1).
    #[arg(long)]
    cpus: Option<String>,
    /// Run each cell this many times and report the median.
    #[arg(long, default_value_t = 1)]
    repeat: usize,
    /// The proxy binary (default: `linkerd2-proxy` beside this binary).
    #[arg(long)]
    proxy_bin: Option<PathBuf>,
    /// Worker threads for each proxy and for haproxy.
    #[arg(long, default_value_t = 1)]
    proxy_threads: usize,
    /// Response body size of the HTTP backend, in bytes.
    #[arg(long, default_value_t = 1024)]
    body_size: usize,
    /// Only these scenarios (comma-separated names).
    #[arg(long, value_delimiter = ',')]
    scenarios: Vec<String>,
    /// Only these topologies (comma-separated: direct, proxy, haproxy, pair, balance).
    #[arg(long, value_delimiter = ',')]
    topologies: Vec<String>,
    /// Also measure `http1-keepalive-max` through `proxy-pair-h2` with each of these worker
    /// counts per proxy (e.g. `1,2,4`), proxies not pinned, to see throughput scale.
    #[arg(long, value_delimiter = ',')]
    scan_workers: Vec<usize>,
    /// Run the worker scan again with each proxy worker thread limited to this fraction of a
    /// CPU (its own cgroup v1 `cpu` quota), emulating one core per worker where the machine
    /// has too few for load, backends and 2 x N workers (e.g. `0.25` with `1,2` on 2 cores).
    #[arg(long)]
    scan_worker_cpu: Option<f64>,
    /// Also measure the proxy's memory with this many idle client connections open (each made
    /// one HTTP/1 request), and again `--idle-settle-secs` after they close (needs an open
    /// files limit above it: `ulimit -n`).
    #[arg(long, default_value_t = 0)]
    idle_conns: usize,
    /// How long after the idle connections close their memory is measured again.
    #[arg(long, default_value_t = 30)]
    idle_settle_secs: u64,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// (internal) Serve the benchmark backends.
    #[command(hide = true)]
    Backend {
        #[arg(long)]
        http: Vec<SocketAddr>,
        #[arg(long)]
        echo: Vec<SocketAddr>,
        #[arg(long)]
        sink: Vec<SocketAddr>,
        #[arg(long)]
        banner: Vec<SocketAddr>,
        #[arg(long, default_value_t = 1024)]
        body_size: usize,
        #[arg(long, default_value_t = 0)]
        delay_ms: u64,
    },
    /// (internal) Run one load cell and print its result as JSON.
    #[command(hide = true)]
    Load {
        #[arg(long, value_enum)]
        scenario: load::Scenario,
        #[arg(long)]
        target: SocketAddr,
        #[arg(long)]
        via_proxy: Option<String>,
        #[arg(long, default_value_t = 1000)]
        rate: u64,
        #[arg(long, default_value_t = 1000)]
        duration_ms: u64,
        #[arg(long, default_value_t = 16)]
        conns: usize,
        /// More targets: HTTP/1 requests go round-robin over `--target` and these.
        #[arg(long, value_delimiter = ',')]
        round_robin: Vec<SocketAddr>,
    },
    /// (internal) Echo single bytes (wake-up calibration).
    #[command(hide = true)]
    WakeupEcho { addr: SocketAddr },
    /// (internal) Time single-byte round trips and print them as JSON (wake-up calibration).
    #[command(hide = true)]
    WakeupPing { addr: SocketAddr, count: usize },
    /// (internal) GET a path from an address and print the body.
    #[command(hide = true)]
    Fetch { addr: SocketAddr, path: String },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.cmd {
        Some(Cmd::Backend {
            http,
            echo,
            sink,
            banner,
            body_size,
            delay_ms,
        }) => {
            let args = backend::BackendArgs {
                http,
                echo,
                sink,
                banner,
                body_size,
                delay: Duration::from_millis(delay_ms),
            };
            match current_thread().block_on(backend::run(args)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("backend: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Some(Cmd::Load {
            scenario,
            target,
            via_proxy,
            rate,
            duration_ms,
            conns,
            round_robin,
        }) => {
            let args = load::LoadArgs {
                scenario,
                target,
                via_proxy,
                rate,
                duration: Duration::from_millis(duration_ms),
                conns,
                round_robin,
            };
            let res = current_thread().block_on(load::run(args));
            println!("{}", serde_json::to_string(&res).unwrap_or_default());
            ExitCode::SUCCESS
        }
        Some(Cmd::WakeupEcho { addr }) => match wakeup::echo(addr) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("wakeup-echo {addr}: {e}");
                ExitCode::FAILURE
            }
        },
        Some(Cmd::WakeupPing { addr, count }) => match wakeup::ping(addr, count) {
            Ok(us) => {
                println!("{}", serde_json::to_string(&us).unwrap_or_default());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("wakeup-ping {addr}: {e}");
                ExitCode::FAILURE
            }
        },
        Some(Cmd::Fetch { addr, path }) => match topology::http_get(addr, &path) {
            Ok(body) => {
                print!("{body}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("fetch {addr}{path}: {e}");
                ExitCode::FAILURE
            }
        },
        None => match run::run(&cli) {
            Ok(true) => ExitCode::SUCCESS,
            Ok(false) => ExitCode::FAILURE,
            Err(e) => {
                eprintln!("linkerd-bench: {e}");
                ExitCode::from(2)
            }
        },
    }
}

fn current_thread() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a current-thread runtime")
}
