//! Channels to the control plane (Destination, Identity): TLS when the service's name is
//! configured, plaintext only to loopback (the config refuses anything else).

use crate::config::ControlAddr;
use hyper_util::rt::TokioIo;
use linkerd_proxy_api::client::{ControlChannel, ControlMetrics};
use linkerd_tls::TlsConfigs;
use rustls::pki_types::ServerName;
use std::time::Duration;
use tokio::net::TcpStream;
use tokio_util::either::Either;
use tonic::transport::{Endpoint, Uri};

/// Why a control-plane channel can't be built.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("invalid control-plane address {addr}: {reason}")]
    Addr { addr: String, reason: String },
    #[error("{svc} is reached over TLS ({name} is set), which needs identity to be configured (trust anchors)")]
    NoTrustAnchors { svc: &'static str, name: String },
}

/// A lazily connected gRPC channel to `control`, its requests counted in `metrics`.
pub(crate) fn channel(
    svc: &'static str,
    control: &ControlAddr,
    tls: Option<&TlsConfigs>,
    connect_timeout: Duration,
    metrics: &ControlMetrics,
) -> Result<ControlChannel, ControlError> {
    let endpoint = Endpoint::from_shared(format!("http://{}", control.addr))
        .map_err(|e| ControlError::Addr {
            addr: control.addr.clone(),
            reason: e.to_string(),
        })?
        .connect_timeout(connect_timeout)
        .tcp_nodelay(true)
        .http2_keep_alive_interval(Duration::from_secs(10))
        .keep_alive_timeout(Duration::from_secs(3));
    let tls = match (&control.name, tls) {
        (None, _) => None,
        (Some(name), Some(tls)) => {
            let server =
                ServerName::try_from(name.to_string()).map_err(|e| ControlError::Addr {
                    addr: control.addr.clone(),
                    reason: e.to_string(),
                })?;
            Some((
                tokio_rustls::TlsConnector::from(tls.control_client()),
                server,
            ))
        }
        (Some(name), None) => {
            return Err(ControlError::NoTrustAnchors {
                svc,
                name: name.to_string(),
            })
        }
    };
    let server_id = tls.as_ref().map(|(_, name)| name.to_str().into_owned());
    let addr = control.addr.clone();
    let connector = tower::service_fn(move |_: Uri| {
        let addr = addr.clone();
        let tls = tls.clone();
        async move {
            let socket = TcpStream::connect(addr.as_str()).await?;
            socket.set_nodelay(true)?;
            let io = match tls {
                None => Either::Left(socket),
                Some((connector, name)) => Either::Right(connector.connect(name, socket).await?),
            };
            Ok::<_, std::io::Error>(TokioIo::new(io))
        }
    });
    let channel = endpoint.connect_with_connector_lazy(connector);
    Ok(metrics.channel(channel, &control.addr, server_id.as_deref()))
}
