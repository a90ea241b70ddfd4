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

/// The longest request head the admin server reads (its requests are probes, scrapes and a
/// log level: far shorter).
const ADMIN_MAX_HEAD: usize = 64 * 1024;

/// The most admin connections served at once (probes, scrapes and a few operators need far
/// fewer).
const ADMIN_MAX_CONNECTIONS: usize = 256;

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
    /// The admin port's inbound policy and TLS.
    pub policy: crate::inbound::AdminPolicy,
    /// Admin requests count in the inbound request metrics, as upstream's do.
    pub http_metrics: linkerd_http::HttpMetrics,
}

/// The largest request body the admin server reads (a log filter).
const MAX_BODY: usize = 16 * 1024;

/// Serves admin requests until the process exits: mesh TLS addressed to this proxy is
/// terminated (a meshed Prometheus scrapes over mTLS and HTTP/2), then HTTP/1 or HTTP/2, each
/// request under the admin port's inbound policy.
pub(crate) async fn serve(admin: Arc<Admin>, listener: TcpListener) {
    use linkerd_tls::{ServerTls, TerminateLayer};
    use tower::{Layer, ServiceExt};
    let local = listener
        .local_addr()
        .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)));
    let mut params = admin.policy.terminate.clone();
    // linkerd2-proxy gives the admin port's ClientHello one second.
    params.timeout = std::time::Duration::from_secs(1);
    let terminate = TerminateLayer::new(params, |peer: &SocketAddr| Some(*peer));
    let permits = Arc::new(tokio::sync::Semaphore::new(ADMIN_MAX_CONNECTIONS));
    loop {
        let (socket, peer) = match listener.accept().await {
            // On `[::]:4191`, a localhost client is `::ffff:127.0.0.1`: known as 127.0.0.1,
            // so the localhost-only endpoints and the policy's networks see it as it is.
            Ok((socket, peer)) => (socket, linkerd_proxy_transport::canonical(peer)),
            Err(error) => {
                linkerd_stack::rate_limited!(WARN, %error, "admin accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            linkerd_stack::rate_limited!(WARN, %peer, max = ADMIN_MAX_CONNECTIONS, "admin connection limit reached; closing the new connection");
            continue;
        };
        let admin = admin.clone();
        let serve_conn = tower::service_fn(
            move |(peer, tls, io): (
                SocketAddr,
                ServerTls,
                linkerd_tls::TlsIo<tokio::net::TcpStream>,
            )| { serve_conn(admin.clone(), local, peer, tls, io) },
        );
        let conn = terminate.layer(MapTlsErr(serve_conn));
        tokio::spawn(async move {
            if let Err(error) = conn.oneshot((peer, socket)).await {
                tracing::debug!(%peer, %error, "admin connection failed");
            }
            drop(permit);
        });
    }
}

/// Serves one admin connection after the TLS step.
async fn serve_conn(
    admin: Arc<Admin>,
    local: SocketAddr,
    peer: SocketAddr,
    tls: linkerd_tls::ServerTls,
    io: linkerd_tls::TlsIo<tokio::net::TcpStream>,
) -> Result<(), BoxError> {
    use crate::inbound::policy::ClientAuth;
    use linkerd_tls::ServerTls;
    let auth = match tls {
        ServerTls::Terminated {
            client_id: Some(id),
            ..
        } => ClientAuth::Authenticated(id),
        ServerTls::Terminated {
            client_id: None, ..
        } => ClientAuth::Tls,
        ServerTls::Passthrough { .. } => {
            return Err("TLS for another name on the admin port".into())
        }
        _ => ClientAuth::Plaintext,
    };
    let tls = !matches!(auth, ClientAuth::Plaintext);
    let label = match &auth {
        ClientAuth::Authenticated(id) => linkerd_proxy_transport::TlsLabel::Tls {
            client_id: Some(id.as_str().into()),
            server_id: None,
        },
        ClientAuth::Tls => linkerd_proxy_transport::TlsLabel::Tls {
            client_id: None,
            server_id: None,
        },
        ClientAuth::Plaintext => linkerd_proxy_transport::TlsLabel::NoIdentity(
            linkerd_proxy_transport::NoTlsReason::NotProvidedByRemote,
        ),
    };
    let routes = linkerd_http::AuthorityRoutes::new(
        &admin.http_metrics,
        linkerd_proxy_transport::Direction::Inbound,
        local,
        label,
    );
    let auth = Arc::new(auth);
    let port = local.port();
    let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
        let (admin, auth) = (admin.clone(), auth.clone());
        let rec = routes.route_with(&req, None).request();
        async move {
            let (parts, body) = admin.answer(port, peer, &auth, req).await.into_parts();
            let body = rec.response(parts.status, &parts.headers, body);
            Ok::<_, Infallible>(Response::from_parts(parts, body))
        }
    });
    // HTTP/1 (probes, linkerd-await) or HTTP/2 (a meshed Prometheus), detected within 1s as
    // linkerd2-proxy does; a client that says nothing in time is taken as HTTP/2 over TLS and
    // HTTP/1 in plaintext; anything else is dropped.
    use linkerd_detect::{DetectParams, Protocol};
    let params = DetectParams {
        timeout: std::time::Duration::from_secs(1),
        capacity: ADMIN_MAX_HEAD,
        // The admin server's own head limit (and its connection limit) bound it.
        budget: None,
    };
    let (detected, io) = linkerd_detect::detect(io, params)
        .await
        .map_err(|e| BoxError::from(e.to_string()))?;
    let protocol = match (detected.protocol, detected.timed_out) {
        (_, true) if tls => Protocol::Http2,
        (_, true) => Protocol::Http1,
        (p, false) => p,
    };
    let io = TokioIo::new(io);
    let served = match protocol {
        Protocol::Http1 => {
            hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(std::time::Duration::from_secs(10))
                .max_buf_size(ADMIN_MAX_HEAD)
                .serve_connection(io, svc)
                .await
        }
        Protocol::Http2 => {
            hyper::server::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
                .serve_connection(io, svc)
                .await
        }
        Protocol::Opaque | Protocol::Tls => return Err("not HTTP on the admin port".into()),
    };
    served.map_err(|e| BoxError::from(e.to_string()))
}

/// Lets the TLS layer's errors through the connection service's boxed error.
#[derive(Clone)]
struct MapTlsErr<S>(S);

type BoxError = Box<dyn std::error::Error + Send + Sync>;

impl<R, S> tower::Service<R> for MapTlsErr<S>
where
    S: tower::Service<R, Error = BoxError>,
{
    type Response = S::Response;
    type Error = AdminConnError;
    type Future = futures_util::future::MapErr<S::Future, fn(BoxError) -> AdminConnError>;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        self.0.poll_ready(cx).map_err(AdminConnError::Serve)
    }

    fn call(&mut self, req: R) -> Self::Future {
        futures_util::TryFutureExt::map_err(
            self.0.call(req),
            AdminConnError::Serve as fn(BoxError) -> AdminConnError,
        )
    }
}

/// Why an admin connection ended badly.
#[derive(Debug, thiserror::Error)]
enum AdminConnError {
    #[error(transparent)]
    Tls(#[from] linkerd_tls::Error),
    #[error("{0}")]
    Serve(BoxError),
}

impl Admin {
    /// The admin port's inbound policy first, then the endpoint.
    async fn answer(
        &self,
        port: u16,
        peer: SocketAddr,
        auth: &crate::inbound::policy::ClientAuth,
        req: Request<Incoming>,
    ) -> Response<Full<Bytes>> {
        match self.policy.check(port, peer, auth, &req) {
            Ok(()) => self.handle(req, peer).await,
            Err(e) => {
                tracing::debug!(%peer, error = %e, "admin request refused by policy");
                let mut rsp = text(e.status(), format!("{e}\n"));
                if let Ok(v) = header::HeaderValue::from_str(&e.to_string()) {
                    rsp.headers_mut().insert(linkerd_http::L5D_PROXY_ERROR, v);
                }
                rsp
            }
        }
    }

    /// Answers one request as linkerd2-proxy's admin server does
    /// (`LINKERD-CONTRACT.md`, section (e)).
    async fn handle(&self, req: Request<Incoming>, peer: SocketAddr) -> Response<Full<Bytes>> {
        let loopback = peer.ip().to_canonical().is_loopback();
        match req.uri().path() {
            "/live" => text(StatusCode::OK, "live\n"),
            "/ready" => {
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
            "/metrics" => self.metrics(&req),
            "/env.json" => self.env_json(&req),
            "/proxy-log-level" => self.log_level(req, loopback).await,
            "/shutdown" => match *req.method() {
                Method::POST if !loopback => text(
                    StatusCode::FORBIDDEN,
                    "shutdown may only be requested from localhost\n",
                ),
                Method::POST if !self.shutdown_enabled => {
                    text(StatusCode::NOT_FOUND, "shutdown endpoint is not enabled\n")
                }
                Method::POST => {
                    tracing::info!(%peer, "shutdown requested on the admin endpoint");
                    self.shutdown.cancel();
                    text(StatusCode::OK, "shutdown\n")
                }
                _ => text(StatusCode::METHOD_NOT_ALLOWED, ""),
            },
            _ => text(StatusCode::NOT_FOUND, ""),
        }
    }

    /// The Prometheus text, ending with `# EOF`; gzipped when the client accepts it.
    fn metrics(&self, req: &Request<Incoming>) -> Response<Full<Bytes>> {
        let mut body = self.registry.encode();
        if !body.ends_with('\n') && !body.is_empty() {
            body.push('\n');
        }
        body.push_str("# EOF\n");
        let gzip = req
            .headers()
            .get_all(header::ACCEPT_ENCODING)
            .iter()
            .any(|v| v.to_str().is_ok_and(|v| v.contains("gzip")));
        let mut rsp = match gzip.then(|| gzip_bytes(body.as_bytes())).flatten() {
            Some(zipped) => {
                let mut rsp = text(StatusCode::OK, zipped);
                rsp.headers_mut().insert(
                    header::CONTENT_ENCODING,
                    header::HeaderValue::from_static("gzip"),
                );
                rsp
            }
            None => text(StatusCode::OK, body),
        };
        rsp.headers_mut().insert(
            header::CONTENT_TYPE,
            header::HeaderValue::from_static("text/plain; version=0.0.4"),
        );
        rsp
    }

    /// The process environment as JSON; `?A&B` names the variables wanted (`null` if unset).
    fn env_json(&self, req: &Request<Incoming>) -> Response<Full<Bytes>> {
        if req.method() != Method::GET {
            return text(StatusCode::METHOD_NOT_ALLOWED, "");
        }
        let accepts_json = req.headers().get_all(header::ACCEPT).iter().all(|v| {
            v.to_str().is_ok_and(|v| {
                v.split(',').any(|t| {
                    let t = t.split(';').next().unwrap_or("").trim();
                    matches!(t, "application/json" | "application/*" | "*/*")
                })
            })
        });
        if !accepts_json {
            return text(
                StatusCode::NOT_ACCEPTABLE,
                "only application/json is served\n",
            );
        }
        let body = match req.uri().query().filter(|q| !q.is_empty()) {
            None => serde_json::to_string_pretty(&self.env),
            Some(q) if q.contains('=') => {
                return text(
                    StatusCode::BAD_REQUEST,
                    "the query names variables (?A&B); it has no values\n",
                )
            }
            Some(q) => {
                let wanted: serde_json::Map<String, serde_json::Value> = q
                    .split('&')
                    .filter(|n| !n.is_empty())
                    .map(|n| {
                        let v = self
                            .env
                            .get(n)
                            .map_or(serde_json::Value::Null, |v| v.clone().into());
                        (n.to_string(), v)
                    })
                    .collect();
                serde_json::to_string_pretty(&wanted)
            }
        };
        let mut rsp = text(StatusCode::OK, body.unwrap_or_default());
        rsp.headers_mut().insert(
            header::CONTENT_TYPE,
            header::HeaderValue::from_static("application/json"),
        );
        rsp
    }

    async fn log_level(&self, req: Request<Incoming>, loopback: bool) -> Response<Full<Bytes>> {
        let Some(log) = &self.log else {
            return text(
                StatusCode::NOT_FOUND,
                "the log level can't be changed in this process\n",
            );
        };
        match *req.method() {
            Method::GET | Method::PUT if !loopback => text(
                StatusCode::FORBIDDEN,
                "the log level may only be read or changed from localhost\n",
            ),
            Method::GET => text(StatusCode::OK, format!("{}\n", log.get())),
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
            _ => text(StatusCode::METHOD_NOT_ALLOWED, ""),
        }
    }
}

/// `body` gzipped; `None` if compression failed (the caller sends it plain).
fn gzip_bytes(body: &[u8]) -> Option<Vec<u8>> {
    use std::io::Write;
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    enc.write_all(body).ok()?;
    enc.finish().ok()
}

fn text(status: StatusCode, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    let mut rsp = Response::new(Full::new(body.into()));
    *rsp.status_mut() = status;
    rsp
}
