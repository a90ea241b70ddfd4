//! `linkerd-control --config mesh.yaml --listen 127.0.0.1:8086`: serve the Destination API
//! from a YAML file, reloading it when it changes.
#![forbid(unsafe_code)]

use linkerd_control::{watch_file, DestinationService, Mesh, MeshConfig};
use linkerd_proxy_api::destination::destination_server::DestinationServer;
use std::{net::SocketAddr, path::PathBuf, process::ExitCode, time::Duration};

const USAGE: &str = "usage: linkerd-control --config FILE [--listen ADDR (default 127.0.0.1:8086)]";

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("LINKERD_CONTROL_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let mut config: Option<PathBuf> = None;
    let mut listen: SocketAddr = SocketAddr::from(([127, 0, 0, 1], 8086));
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match (a.as_str(), args.next()) {
            ("--config", Some(v)) => config = Some(v.into()),
            ("--listen", Some(v)) => match v.parse() {
                Ok(a) => listen = a,
                Err(_) => {
                    eprintln!("linkerd-control: --listen {v:?}: expected ip:port\n{USAGE}");
                    return ExitCode::from(2);
                }
            },
            _ => {
                eprintln!("{USAGE}");
                return ExitCode::from(2);
            }
        }
    }
    let Some(path) = config else {
        eprintln!("{USAGE}");
        return ExitCode::from(2);
    };
    // The first load must succeed: there is no last good config yet.
    let initial = match std::fs::read_to_string(&path)
        .map_err(|e| e.to_string())
        .and_then(|t| MeshConfig::parse(&t).map_err(|e| e.to_string()))
    {
        Ok(c) => c,
        Err(e) => {
            eprintln!("linkerd-control: {}: {e}", path.display());
            return ExitCode::from(2);
        }
    };
    let rt = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("linkerd-control: {e}");
            return ExitCode::FAILURE;
        }
    };
    rt.block_on(async move {
        let mesh = Mesh::new(initial);
        tokio::spawn(watch_file(path, mesh.clone(), Duration::from_millis(200)));
        let listener = match tokio::net::TcpListener::bind(listen).await {
            Ok(l) => l,
            Err(e) => {
                eprintln!("linkerd-control: failed to bind {listen}: {e}");
                return ExitCode::FAILURE;
            }
        };
        tracing::info!(%listen, "serving the Destination API");
        let res = tonic::transport::Server::builder()
            .add_service(DestinationServer::new(DestinationService::new(mesh)))
            .serve_with_incoming_shutdown(
                tokio_stream::wrappers::TcpListenerStream::new(listener),
                async {
                    let _ = tokio::signal::ctrl_c().await;
                },
            )
            .await;
        match res {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("linkerd-control: {e}");
                ExitCode::FAILURE
            }
        }
    })
}
