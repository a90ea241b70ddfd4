//! `linkerd-control --config mesh.yaml --listen 127.0.0.1:8086 [--ca DIR]`: serve the
//! Destination API (and, with a CA, the Identity API) from a YAML file, reloading it when it
//! changes. `linkerd-control ca init --dir DIR` creates the CA. See `cli::USAGE`.
#![forbid(unsafe_code)]

use linkerd_control::{
    cli::{self, Command},
    serve, tls, watch_file, Ca, CaError, IdentityService, Mesh, MeshConfig,
};
use std::{net::SocketAddr, path::Path, process::ExitCode, sync::Arc, time::Duration};

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("LINKERD_CONTROL_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    match cli::parse_args(std::env::args().skip(1)) {
        Ok(Command::CaInit {
            dir,
            force,
            root_validity,
            issuer_validity,
        }) => ca_init(&dir, force, root_validity, issuer_validity),
        Ok(Command::Serve {
            config,
            listen,
            ca,
            cert_lifetime,
            identity,
        }) => run(&config, listen, ca.as_deref(), cert_lifetime, &identity),
        Err(e) => {
            eprintln!("linkerd-control: {e}\n{}", cli::USAGE);
            ExitCode::from(2)
        }
    }
}

fn ca_init(dir: &Path, force: bool, root: Duration, issuer: Duration) -> ExitCode {
    match Ca::init_with(dir, force, root, issuer) {
        Ok(files) => {
            println!("wrote {}", files.trust_anchors.display());
            println!("wrote {}", files.issuer_cert.display());
            println!("wrote {} (mode 0600)", files.issuer_key.display());
            println!(
                "the root CA's private key was discarded: to replace the issuer, run \
                 `ca init --force` again and give proxies the new trust anchors"
            );
            ExitCode::SUCCESS
        }
        Err(e @ CaError::Exists(_)) => {
            eprintln!("linkerd-control: {e}");
            ExitCode::from(2)
        }
        Err(e) => {
            eprintln!("linkerd-control: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(
    path: &Path,
    listen: SocketAddr,
    ca_dir: Option<&Path>,
    lifetime: Duration,
    name: &str,
) -> ExitCode {
    // The first load must succeed: there is no last good config yet.
    let initial = match std::fs::read_to_string(path)
        .map_err(|e| e.to_string())
        .and_then(|t| MeshConfig::parse(&t).map_err(|e| e.to_string()))
    {
        Ok(c) => c,
        Err(e) => {
            eprintln!("linkerd-control: {}: {e}", path.display());
            return ExitCode::from(2);
        }
    };
    let ca = match ca_dir.map(Ca::load).transpose() {
        Ok(ca) => ca.map(Arc::new),
        Err(e) => {
            eprintln!("linkerd-control: --ca: {e}");
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
        tokio::spawn(watch_file(
            path.to_path_buf(),
            mesh.clone(),
            Duration::from_millis(200),
        ));
        let (identity, tls) = match ca {
            None => (None, None),
            Some(ca) => match tls::server_config(ca.clone(), name) {
                Ok(tls) => (
                    Some(IdentityService::new(ca, mesh.clone(), lifetime)),
                    Some(tls),
                ),
                Err(e) => {
                    eprintln!("linkerd-control: serving certificate: {e}");
                    return ExitCode::FAILURE;
                }
            },
        };
        let listener = match tokio::net::TcpListener::bind(listen).await {
            Ok(l) => l,
            Err(e) => {
                eprintln!("linkerd-control: failed to bind {listen}: {e}");
                return ExitCode::FAILURE;
            }
        };
        // With port 0 the system picks the port: say which, on the first line of stdout.
        let listen = listener.local_addr().unwrap_or(listen);
        println!("listening on {listen}");
        if identity.is_some() {
            tracing::info!(%listen, tls_name = name, ?lifetime, "serving the Destination and Identity APIs, plaintext and TLS");
        } else {
            tracing::info!(%listen, "serving the Destination API");
        }
        let shutdown = async {
            let _ = tokio::signal::ctrl_c().await;
        };
        match serve(listener, mesh, identity, tls, shutdown).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("linkerd-control: {e}");
                ExitCode::FAILURE
            }
        }
    })
}
