//! `linkerd2-network-validator`: CNI mode's init container. Exits 0 once an outbound
//! connection is seen redirected to the proxy's outbound port, 95 otherwise.

use clap::Parser;
use linkerd_proxy_init::{duration, init_logging, validator};
use std::{net::SocketAddr, time::Duration};

const TOOL: &str = "linkerd2-network-validator";

#[derive(Parser, Debug)]
#[command(
    name = "linkerd2-network-validator",
    version,
    about = "Checks that the pod's outbound TCP is redirected to the proxy's port"
)]
struct Flags {
    /// plain or json.
    #[arg(
        long,
        env = "LINKERD_NETWORK_VALIDATOR_LOG_FORMAT",
        default_value = "plain"
    )]
    log_format: String,
    /// error, warn, info, debug or trace.
    #[arg(
        long,
        env = "LINKERD_NETWORK_VALIDATOR_LOG_LEVEL",
        default_value = "info"
    )]
    log_level: String,
    /// Where the redirected connection should arrive: the proxy's outbound port.
    #[arg(long, default_value = "0.0.0.0:4140")]
    listen_addr: SocketAddr,
    /// An address nothing answers, to connect to.
    #[arg(long, default_value = "192.0.2.2:1404")]
    connect_addr: SocketAddr,
    /// How long the check may take (e.g. `10s`).
    #[arg(long, default_value = "10s", value_parser = duration::parse)]
    timeout: Duration,
}

fn main() {
    let flags: Flags = linkerd_proxy_init::parse_flags(TOOL, validator::EXIT_FAILED);
    if let Err(e) = init_logging(&flags.log_format, &flags.log_level) {
        eprintln!("{TOOL}: {e}");
        std::process::exit(validator::EXIT_FAILED);
    }
    let rt = linkerd_proxy_init::runtime(TOOL, validator::EXIT_FAILED);
    let code = rt.block_on(async {
        let check = validator::validate(flags.listen_addr, flags.connect_addr, flags.timeout);
        tokio::select! {
            res = check => match res {
                Ok(()) => {
                    tracing::info!("Validated");
                    0
                }
                Err(e) => {
                    tracing::error!("{e}");
                    validator::EXIT_FAILED
                }
            },
            sig = signal() => {
                tracing::error!("interrupted by {sig}");
                validator::EXIT_FAILED
            }
        }
    });
    std::process::exit(code);
}

/// The first SIGINT or SIGTERM.
async fn signal() -> &'static str {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut int), Ok(mut term)) = (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) else {
        return std::future::pending().await;
    };
    tokio::select! {
        _ = int.recv() => "SIGINT",
        _ = term.recv() => "SIGTERM",
    }
}
