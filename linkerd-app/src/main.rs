//! The `linkerd2-proxy` binary: read the environment, start logging and the runtime, run the
//! proxy until SIGTERM/SIGINT (or `POST /shutdown`), drain, exit.
#![forbid(unsafe_code)]

use linkerd_app::{App, Config};
use std::process::ExitCode;

#[cfg(feature = "mimalloc")]
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[cfg(all(feature = "jemalloc", not(feature = "mimalloc")))]
#[global_allocator]
static ALLOC: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

const HELP: &str = "\
linkerd2-proxy: the per-pod proxy of a Linkerd service mesh.

Usage: linkerd2-proxy [--help | --version]

It takes no arguments: it is configured only by LINKERD2_PROXY_* environment variables, as
Linkerd's proxy injector sets them (names, syntax and defaults are linkerd2-proxy's; see the
README). The main ones:

  LINKERD2_PROXY_INBOUND_LISTEN_ADDR     inbound listener (0.0.0.0:4143)
  LINKERD2_PROXY_OUTBOUND_LISTEN_ADDRS   outbound listeners, one or two (127.0.0.1:4140)
  LINKERD2_PROXY_ADMIN_LISTEN_ADDR       admin server: /live, /ready, /metrics (127.0.0.1:4191)
  LINKERD2_PROXY_DESTINATION_SVC_ADDR    Destination service (discovery); _SVC_NAME its identity
  LINKERD2_PROXY_POLICY_SVC_ADDR         inbound policy service; _SVC_NAME, _WORKLOAD
  LINKERD2_PROXY_IDENTITY_SVC_ADDR       Identity service; with _LOCAL_NAME, _TRUST_ANCHORS,
                                         _TOKEN_FILE, _DIR
  LINKERD2_PROXY_INBOUND_DEFAULT_POLICY  all-unauthenticated, all-authenticated,
                                         cluster-unauthenticated, cluster-authenticated, deny, audit
  LINKERD2_PROXY_LOG                     log filter (warn,linkerd=info,hickory=error)

Exit status: 64 for a configuration error, 1 if the proxy fails to start, 0 after a drain.
";

fn main() -> ExitCode {
    // Upstream takes no arguments; these two print and exit without starting a proxy.
    if let Some(arg) = std::env::args().nth(1) {
        return match arg.as_str() {
            "--help" | "-h" | "help" => {
                print!("{HELP}");
                ExitCode::SUCCESS
            }
            "--version" | "-V" | "version" => {
                println!("{}", linkerd_app::VERSION_LINE);
                ExitCode::SUCCESS
            }
            other => {
                eprintln!("linkerd2-proxy: unexpected argument {other:?}; try --help");
                ExitCode::from(64)
            }
        };
    }
    let env = std::env::vars().collect();
    let config = match Config::from_env(&env) {
        Ok(c) => c,
        Err(error) => {
            eprintln!("linkerd2-proxy: {error}");
            return ExitCode::from(64);
        }
    };
    let log = linkerd_app::init_logging(&config.log_filter, config.log_format);
    for warning in &config.warnings {
        tracing::warn!("{warning}");
    }

    // One core: a current-thread runtime, as linkerd2-proxy does. Every task runs on this
    // thread, so nothing pays for work-stealing wake-ups between idle workers.
    let mut rt = match config.workers {
        1 => tokio::runtime::Builder::new_current_thread(),
        workers => {
            let mut rt = tokio::runtime::Builder::new_multi_thread();
            rt.worker_threads(workers);
            rt
        }
    };
    let rt = match rt.enable_all().thread_name("proxy").build() {
        Ok(rt) => rt,
        Err(error) => {
            eprintln!("linkerd2-proxy: failed to start the runtime: {error}");
            return ExitCode::from(1);
        }
    };

    rt.block_on(async move {
        let proxy = match App::new(config).with_log(log).spawn() {
            Ok(p) => p,
            Err(error) => {
                tracing::error!(%error, "failed to start");
                eprintln!("linkerd2-proxy: {error}");
                return ExitCode::from(1);
            }
        };
        tokio::select! {
            () = signal() => {}
            () = proxy.shutdown_requested() => {}
        }
        tracing::info!("shutting down: no longer accepting connections");
        proxy.shutdown();
        if proxy.drained().await {
            tracing::info!("all connections closed; exiting");
        }
        ExitCode::SUCCESS
    })
}

/// Completes on SIGTERM or SIGINT.
async fn signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::warn!("failed to install signal handlers; only POST /shutdown stops the proxy");
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("received SIGTERM"),
        _ = int.recv() => tracing::info!("received SIGINT"),
    }
}
