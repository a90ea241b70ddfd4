//! HTTP request/response metrics, with Linkerd's names and labels: the families, one route's
//! handles, and the recorder of one request. [`MetricsLayer`] applies them to a request stack;
//! [`RecordBody`] classifies a response when its body ends.

pub(crate) mod body;
mod layer;

pub(crate) use self::body::Eos;
pub use self::body::RecordBody;
pub use self::layer::{AuthorityRoutes, Metrics, MetricsLayer, OnceRoute, ResponseFuture, Routes};

use crate::ProxyBody;
use http::{HeaderMap, Response, StatusCode};
use hyper::body::Body;
use linkerd_metrics::LATENCY_BUCKETS_MS;
use linkerd_metrics::{Counter, EncodeLabels, Family, Histogram, LabelWriter, Registry};
use linkerd_proxy_transport::{Direction, TlsLabel};
use parking_lot::RwLock;
use std::{
    collections::{BTreeMap, HashMap},
    net::SocketAddr,
    sync::Arc,
};
use tokio::time::Instant;

/// The HTTP metric families of the process.
#[derive(Clone)]
pub struct HttpMetrics {
    request_total: Arc<Family<RouteLabels, Counter>>,
    response_total: Arc<Family<ResponseLabels, Counter>>,
    response_latency: Arc<Family<StatusLabels, Histogram>>,
    /// Whether inbound requests are counted by authority (a label any client can choose:
    /// `LINKERD2_PROXY_INBOUND_METRICS_AUTHORITY_LABELS=unsafe`).
    inbound_authority: bool,
}

/// What a request is counted under: its direction, authority and target address.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct RouteLabels {
    /// Inbound or outbound.
    pub direction: Direction,
    /// The request's `:authority` or `Host`, when it has one.
    pub authority: Option<String>,
    /// Where the request was sent.
    pub target_addr: SocketAddr,
    /// The endpoint's discovery labels, rendered as `dst_<name>`.
    pub dst: Option<Arc<BTreeMap<String, String>>>,
    /// The connection's TLS status (inbound: the client's identity; outbound: the server's).
    pub tls: TlsLabel,
    /// Inbound: the labels of the policy that let the request in (`srv_*`, `route_*`,
    /// `authz_*`).
    pub policy: Option<PolicyLabels>,
}

/// The labels a request's policy adds (inbound: `srv_*`, `route_*`, `authz_*`), built once
/// per decision and shared by every request it lets in.
pub type PolicyLabels = linkerd_metrics::LabelPairs;

/// One route's metric handles: look up once per target, then record per request lock-free
/// (the per-status handles sit behind this route's own lock, not a global one).
#[derive(Clone)]
pub struct RouteMetrics(Arc<RouteInner>);

struct RouteInner {
    labels: RouteLabels,
    request_total: Counter,
    families: HttpMetrics,
    latency: RwLock<HashMap<Option<u16>, Histogram>>,
    responses: RwLock<HashMap<ResponseKey, Counter>>,
}

/// Records one request's response: latency when the headers arrive, the classification when
/// the body ends.
pub struct ResponseRecorder {
    route: RouteMetrics,
    start: Instant,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct StatusLabels {
    route: RouteLabels,
    status_code: Option<u16>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) struct ResponseKey {
    status_code: Option<u16>,
    grpc_status: Option<u32>,
    success: bool,
    /// Why the response failed, when it did not end: the proxy's error, or the stream's.
    error: Option<&'static str>,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct ResponseLabels {
    route: RouteLabels,
    key: ResponseKey,
}

// === impl HttpMetrics ===

impl HttpMetrics {
    /// Creates the families and registers them.
    pub fn register(reg: &mut Registry) -> Self {
        let m = Self {
            request_total: Arc::new(Family::new("request_total", "Total count of HTTP requests.")),
            response_total: Arc::new(Family::new(
                "response_total",
                "Total count of HTTP responses.",
            )),
            response_latency: Arc::new(Family::new_with(
                "response_latency_ms",
                "Elapsed times between a request's headers being received and its response's headers being sent.",
                || Histogram::new(&LATENCY_BUCKETS_MS),
            )),
            inbound_authority: false,
        };
        reg.register(m.request_total.clone());
        reg.register(m.response_total.clone());
        reg.register(m.response_latency.clone());
        m
    }

    /// Inbound requests are counted by authority too (off by default, as linkerd2-proxy: a
    /// client could otherwise make a series per Host it sends).
    pub fn with_inbound_authority(mut self, enabled: bool) -> Self {
        self.inbound_authority = enabled;
        self
    }

    /// Whether inbound requests are counted by authority.
    pub fn inbound_authority(&self) -> bool {
        self.inbound_authority
    }

    /// The handles for one route.
    pub fn route(&self, labels: RouteLabels) -> RouteMetrics {
        RouteMetrics(Arc::new(RouteInner {
            request_total: self.request_total.get(&labels),
            labels,
            families: self.clone(),
            latency: RwLock::new(HashMap::new()),
            responses: RwLock::new(HashMap::new()),
        }))
    }
}

// === impl RouteMetrics ===

impl RouteMetrics {
    /// Counts a request and starts its latency clock.
    pub fn request(&self) -> ResponseRecorder {
        self.0.request_total.incr();
        ResponseRecorder {
            route: self.clone(),
            start: Instant::now(),
        }
    }

    /// The labels this route counts under.
    pub fn labels(&self) -> &RouteLabels {
        &self.0.labels
    }

    fn latency(&self, status: Option<u16>) -> Histogram {
        if let Some(h) = self.0.latency.read().get(&status) {
            return h.clone();
        }
        let labels = StatusLabels {
            route: self.0.labels.clone(),
            status_code: status,
        };
        let h = self.0.families.response_latency.get(&labels);
        self.0.latency.write().insert(status, h.clone());
        h
    }

    pub(crate) fn response_total(&self, key: ResponseKey) -> Counter {
        if let Some(c) = self.0.responses.read().get(&key) {
            return c.clone();
        }
        let labels = ResponseLabels {
            route: self.0.labels.clone(),
            key,
        };
        let c = self.0.families.response_total.get(&labels);
        self.0.responses.write().insert(key, c.clone());
        c
    }
}

// === impl ResponseRecorder ===

impl ResponseRecorder {
    /// Records the response headers' latency and wraps the body to classify it when it ends.
    pub fn response<B: Body>(
        self,
        status: StatusCode,
        headers: &HeaderMap,
        body: B,
    ) -> RecordBody<B> {
        RecordBody::recorded(body, self.eos(status, headers))
    }

    /// Records the response headers' latency, and classifies the response when its body ends.
    pub fn record(self, rsp: &mut Response<ProxyBody>) {
        let eos = self.eos(rsp.status(), rsp.headers());
        rsp.body_mut().record(eos);
    }

    /// Observes the latency to the response headers.
    fn eos(self, status: StatusCode, headers: &HeaderMap) -> Eos {
        let ms = self.start.elapsed().as_secs_f64() * 1000.0;
        self.route.latency(Some(status.as_u16())).observe(ms);
        Eos {
            route: self.route,
            status,
            // A trailers-only gRPC response carries its status in the headers.
            grpc_status: grpc_status(headers),
            error: None,
        }
    }

    /// Records the response the proxy synthesizes because forwarding failed with `error`.
    pub fn error(self, error: &crate::Error) {
        let mut eos = self.eos(error.status(), &HeaderMap::new());
        eos.error = Some(error.kind());
        eos.finish(None, body::End::Complete);
    }
}

pub(crate) fn grpc_status(headers: &HeaderMap) -> Option<u32> {
    headers.get("grpc-status")?.to_str().ok()?.parse().ok()
}

// === impl labels ===

impl EncodeLabels for RouteLabels {
    fn encode(&self, w: &mut LabelWriter<'_>) {
        w.label("direction", self.direction.as_str());
        // Inbound, the authority is a label only when enabled (`unsafe`) and present.
        if self.direction == Direction::Outbound || self.authority.is_some() {
            w.label("authority", self.authority.as_deref().unwrap_or(""));
        }
        w.label("target_addr", self.target_addr)
            .label("target_ip", self.target_addr.ip())
            .label("target_port", self.target_addr.port());
        self.tls.encode(w);
        for (k, v) in self.dst.iter().flat_map(|d| d.iter()) {
            w.label(&format!("dst_{k}"), v);
        }
        if let Some(p) = &self.policy {
            p.encode(w);
        }
    }
}

impl EncodeLabels for StatusLabels {
    fn encode(&self, w: &mut LabelWriter<'_>) {
        self.route.encode(w);
        if let Some(s) = self.status_code {
            w.label("status_code", s);
        }
    }
}

impl EncodeLabels for ResponseLabels {
    fn encode(&self, w: &mut LabelWriter<'_>) {
        self.route.encode(w);
        if let Some(s) = self.key.status_code {
            w.label("status_code", s);
        }
        // As upstream: `grpc_status` and `error` always, empty when there is none.
        w.label(
            "classification",
            if self.key.success {
                "success"
            } else {
                "failure"
            },
        );
        match self.key.grpc_status {
            Some(g) => w.label("grpc_status", g),
            None => w.label("grpc_status", ""),
        };
        w.label("error", self.key.error.unwrap_or(""));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use http_body_util::{BodyExt, Full};
    use hyper::body::Frame;

    fn route(reg: &mut Registry) -> RouteMetrics {
        HttpMetrics::register(reg).route(RouteLabels {
            direction: Direction::Outbound,
            authority: Some("web:80".into()),
            target_addr: "10.0.0.1:80".parse().unwrap(),
            dst: None,
            tls: TlsLabel::NoIdentity(linkerd_proxy_transport::NoTlsReason::Disabled),
            policy: None,
        })
    }

    #[tokio::test]
    async fn success_failure_and_grpc() {
        let mut reg = Registry::default();
        let route = route(&mut reg);

        let body = route.request().response(
            StatusCode::OK,
            &HeaderMap::new(),
            Full::new(Bytes::from("ok")),
        );
        body.collect().await.unwrap();

        let body = route.request().response(
            StatusCode::SERVICE_UNAVAILABLE,
            &HeaderMap::new(),
            Full::new(Bytes::new()),
        );
        body.collect().await.unwrap();

        let mut trailers = HeaderMap::new();
        trailers.insert("grpc-status", "14".parse().unwrap());
        let grpc = http_body_util::StreamBody::new(futures_util::stream::iter(vec![
            Ok::<_, std::convert::Infallible>(Frame::data(Bytes::from("x"))),
            Ok(Frame::trailers(trailers)),
        ]));
        route
            .request()
            .response(StatusCode::OK, &HeaderMap::new(), grpc)
            .collect()
            .await
            .unwrap();

        let addr = "10.0.0.1:80".parse().unwrap();
        route.request().error(&crate::Error::Loop { addr });

        let text = reg.encode();
        let l = "direction=\"outbound\",authority=\"web:80\",target_addr=\"10.0.0.1:80\",target_ip=\"10.0.0.1\",target_port=\"80\",tls=\"no_identity\",no_tls_reason=\"disabled\"";
        for line in [
            format!("request_total{{{l}}} 4\n"),
            format!("response_total{{{l},status_code=\"200\",classification=\"success\",grpc_status=\"\",error=\"\"}} 1\n"),
            format!("response_total{{{l},status_code=\"503\",classification=\"failure\",grpc_status=\"\",error=\"\"}} 1\n"),
            format!("response_total{{{l},status_code=\"200\",classification=\"failure\",grpc_status=\"14\",error=\"\"}} 1\n"),
            format!("response_total{{{l},status_code=\"502\",classification=\"failure\",grpc_status=\"\",error=\"loop\"}} 1\n"),
            format!("response_latency_ms_count{{{l},status_code=\"200\"}} 2\n"),
        ] {
            assert!(text.contains(&line), "missing {line} in\n{text}");
        }
    }

    #[test]
    fn dropped_body_is_a_failure() {
        let mut reg = Registry::default();
        let route = route(&mut reg);
        let body = route.request().response(
            StatusCode::OK,
            &HeaderMap::new(),
            Full::new(Bytes::from("unread")),
        );
        drop(body);
        assert!(reg.encode().contains(
            "status_code=\"200\",classification=\"failure\",grpc_status=\"\",error=\"cancel\"} 1\n"
        ));
    }
}
