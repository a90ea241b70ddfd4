//! The admin server: health, metrics, environment, log level and shutdown.

use crate::LogHandle;
use bytes::Bytes;
use http::{header, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use linkerd_metrics::Registry;
use std::{
    collections::HashMap,
    convert::Infallible,
    net::SocketAddr,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// State the admin endpoints read.
pub(crate) struct Admin {
    pub registry: Registry,
    /// Set once the listeners are bound; cleared when shutdown begins.
    pub ready: Arc<AtomicBool>,
    /// With identity, the proxy is ready only once it has a certificate.
    pub identity: Option<Arc<linkerd_identity::Credentials>>,
    pub log: Option<LogHandle>,
    pub env: HashMap<String, String>,
    pub shutdown_enabled: bool,
    pub shutdown: CancellationToken,
}

/// The largest request body the admin server reads (a log filter).
const MAX_BODY: usize = 16 * 1024;

/// Serves admin requests until the process exits.
pub(crate) async fn serve(admin: Arc<Admin>, listener: TcpListener) {
    loop {
        let (socket, peer) = match listener.accept().await {
            Ok(c) => c,
            Err(error) => {
                tracing::warn!(%error, "admin accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let admin = admin.clone();
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req| {
                let admin = admin.clone();
                async move { Ok::<_, Infallible>(admin.handle(req, peer).await) }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(socket), svc);
            if let Err(error) = conn.await {
                tracing::debug!(%peer, %error, "admin connection failed");
            }
        });
    }
}

impl Admin {
    async fn handle(&self, req: Request<Incoming>, peer: SocketAddr) -> Response<Full<Bytes>> {
        let loopback = peer.ip().is_loopback();
        match (req.method(), req.uri().path()) {
            (&Method::GET, "/live") => text(StatusCode::OK, "live\n"),
            (&Method::GET, "/ready") => {
                let certified = self.identity.as_ref().is_none_or(|c| c.is_ready());
                if self.ready.load(Ordering::Acquire) && certified {
                    text(StatusCode::OK, "ready\n")
                } else {
                    let why = match certified {
                        true => "not ready\n",
                        false => "not ready: waiting for a certificate from the Identity service\n",
                    };
                    text(StatusCode::SERVICE_UNAVAILABLE, why)
                }
            }
            (&Method::GET, "/metrics") => {
                let mut rsp = text(StatusCode::OK, self.registry.encode());
                rsp.headers_mut().insert(
                    header::CONTENT_TYPE,
                    header::HeaderValue::from_static("text/plain; version=0.0.4"),
                );
                rsp
            }
            (&Method::GET, "/env.json") => {
                let body = serde_json::to_string_pretty(&self.env).unwrap_or_default();
                let mut rsp = text(StatusCode::OK, body);
                rsp.headers_mut().insert(
                    header::CONTENT_TYPE,
                    header::HeaderValue::from_static("application/json"),
                );
                rsp
            }
            (_, "/proxy-log-level") => self.log_level(req, loopback).await,
            (&Method::POST, "/shutdown") if self.shutdown_enabled && loopback => {
                tracing::info!(%peer, "shutdown requested on the admin endpoint");
                self.shutdown.cancel();
                text(StatusCode::OK, "shutdown\n")
            }
            (_, "/live" | "/ready" | "/metrics" | "/env.json") => {
                text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n")
            }
            _ => text(StatusCode::NOT_FOUND, "not found\n"),
        }
    }

    async fn log_level(&self, req: Request<Incoming>, loopback: bool) -> Response<Full<Bytes>> {
        let Some(log) = &self.log else {
            return text(
                StatusCode::NOT_FOUND,
                "the log level can't be changed in this process\n",
            );
        };
        match *req.method() {
            Method::GET => text(StatusCode::OK, format!("{}\n", log.get())),
            Method::PUT if !loopback => text(
                StatusCode::FORBIDDEN,
                "the log level may only be changed from localhost\n",
            ),
            Method::PUT => {
                let body = match Limited::new(req.into_body(), MAX_BODY).collect().await {
                    Ok(b) => b.to_bytes(),
                    Err(e) => return text(StatusCode::PAYLOAD_TOO_LARGE, format!("{e}\n")),
                };
                let filter = String::from_utf8_lossy(&body);
                match log.set(filter.trim()) {
                    Ok(()) => {
                        tracing::info!(filter = %filter.trim(), "log level changed");
                        text(StatusCode::NO_CONTENT, "")
                    }
                    Err(e) => text(
                        StatusCode::BAD_REQUEST,
                        format!("invalid log filter: {e}\n"),
                    ),
                }
            }
            _ => text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n"),
        }
    }
}

fn text(status: StatusCode, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    let mut rsp = Response::new(Full::new(body.into()));
    *rsp.status_mut() = status;
    rsp
}
