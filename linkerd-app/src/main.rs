//! The `linkerd2-proxy` binary: read the environment, start logging and the runtime, run the
//! proxy until SIGTERM/SIGINT (or `POST /shutdown`), drain, exit.
#![forbid(unsafe_code)]

use linkerd_app::{App, Config};
use std::process::ExitCode;

fn main() -> ExitCode {
    let env = std::env::vars().collect();
    let config = match Config::from_env(&env) {
        Ok(c) => c,
        Err(error) => {
            eprintln!("linkerd2-proxy: {error}");
            return ExitCode::from(2);
        }
    };
    let log = linkerd_app::init_logging(&config.log_filter, config.log_format);

    // One core: a current-thread runtime, as linkerd2-proxy does. Every task runs on this
    // thread, so nothing pays for work-stealing wake-ups between idle workers.
    let mut rt = match config.cores {
        Some(1) => tokio::runtime::Builder::new_current_thread(),
        Some(cores) => {
            let mut rt = tokio::runtime::Builder::new_multi_thread();
            rt.worker_threads(cores);
            rt
        }
        None => tokio::runtime::Builder::new_multi_thread(),
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
