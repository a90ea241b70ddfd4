//! The channel every control-plane client (Destination, Identity, policy) speaks through:
//! a tonic [`Channel`] whose gRPC requests are counted as upstream counts them,
//! `control_request_total`, `control_response_total` and `control_response_latency_ms`, by
//! the control plane's address and TLS.

use bytes::Bytes;
use http_body::{Body as HttpBody, Frame, SizeHint};
use linkerd_metrics::LATENCY_BUCKETS_MS;
use linkerd_metrics::{Counter, EncodeLabels, Family, Histogram, LabelWriter, Registry};
use parking_lot::RwLock;
use std::{
    collections::HashMap,
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{ready, Context, Poll},
};
use tokio::time::Instant;
use tonic::{body::Body, transport::Channel};

/// The control-plane metric families of the process: register once, then meter each
/// client's channel with [`ControlMetrics::channel`].
#[derive(Clone)]
pub struct ControlMetrics {
    requests: Arc<Family<ControlLabels, Counter>>,
    responses: Arc<Family<ResponseLabels, Counter>>,
    latency: Arc<Family<LatencyLabels, Histogram>>,
}

/// A control-plane client's [`Channel`], metered. A streaming call (`Get`, `WatchPort`)
/// counts its response when the stream ends, by its `grpc-status`.
#[derive(Clone)]
pub struct ControlChannel {
    inner: Channel,
    handles: Arc<Handles>,
}

struct Handles {
    labels: ControlLabels,
    families: ControlMetrics,
    request: Counter,
    // Looked up once per outcome, then shared by every call on the channel.
    responses: RwLock<HashMap<Outcome, Counter>>,
    latency: RwLock<HashMap<Option<u16>, Histogram>>,
}

/// Who a client talks to: the address, and the identity it verifies (none: plaintext).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct ControlLabels {
    addr: Arc<str>,
    server_id: Option<Arc<str>>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct Outcome {
    status_code: Option<u16>,
    grpc_status: Option<i32>,
    success: bool,
    error: Option<&'static str>,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct ResponseLabels {
    control: ControlLabels,
    outcome: Outcome,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct LatencyLabels {
    control: ControlLabels,
    status_code: Option<u16>,
}

pin_project_lite::pin_project! {
    /// The response future of [`ControlChannel`].
    pub struct ResponseFuture<F> {
        #[pin]
        inner: F,
        handles: Arc<Handles>,
        start: Instant,
    }
}

pin_project_lite::pin_project! {
    /// A response body that counts the response when it ends.
    pub struct MeteredBody {
        #[pin]
        inner: Body,
        end: Option<End>,
    }

    impl PinnedDrop for MeteredBody {
        fn drop(this: Pin<&mut Self>) {
            if let Some(end) = this.project().end.take() {
                // Dropped before its end: the client cancelled the call (e.g. a stream closed
                // for its lifetime), which is no failure of the control plane's.
                end.finish(None, Some("cancel"));
            }
        }
    }
}

/// What a response is counted by when its body ends.
struct End {
    handles: Arc<Handles>,
    status_code: u16,
    // A trailers-only response carries its status in the headers.
    grpc_status: Option<i32>,
}

impl ControlMetrics {
    /// Creates the families and registers them.
    pub fn register(reg: &mut Registry) -> Self {
        let m = Self {
            requests: Arc::new(Family::new(
                "control_request_total",
                "Total count of gRPC requests to the control plane.",
            )),
            responses: Arc::new(Family::new(
                "control_response_total",
                "Total count of gRPC responses from the control plane, when each ends.",
            )),
            latency: Arc::new(Family::new_with(
                "control_response_latency_ms",
                "Elapsed times between a control-plane request and its response headers.",
                || Histogram::new(&LATENCY_BUCKETS_MS),
            )),
        };
        reg.register(m.requests.clone());
        reg.register(m.responses.clone());
        reg.register(m.latency.clone());
        m
    }

    /// Meters `channel` to `addr`, which is reached over TLS verifying `server_id`, if any.
    pub fn channel(&self, channel: Channel, addr: &str, server_id: Option<&str>) -> ControlChannel {
        let labels = ControlLabels {
            addr: addr.into(),
            server_id: server_id.map(Into::into),
        };
        ControlChannel {
            inner: channel,
            handles: Arc::new(Handles {
                request: self.requests.get(&labels),
                labels,
                families: self.clone(),
                responses: RwLock::new(HashMap::new()),
                latency: RwLock::new(HashMap::new()),
            }),
        }
    }
}

impl ControlChannel {
    /// `channel`, unmetered (its series go to a registry nobody reads): for tests and tools.
    pub fn unmetered(channel: Channel) -> Self {
        ControlMetrics::register(&mut Registry::default()).channel(channel, "", None)
    }
}

impl Handles {
    fn latency(&self, status_code: Option<u16>) -> Histogram {
        if let Some(h) = self.latency.read().get(&status_code) {
            return h.clone();
        }
        let h = self.families.latency.get(&LatencyLabels {
            control: self.labels.clone(),
            status_code,
        });
        self.latency.write().insert(status_code, h.clone());
        h
    }

    fn response(&self, outcome: Outcome) {
        if let Some(c) = self.responses.read().get(&outcome) {
            c.incr();
            return;
        }
        let c = self.families.responses.get(&ResponseLabels {
            control: self.labels.clone(),
            outcome,
        });
        c.incr();
        self.responses.write().insert(outcome, c);
    }
}

impl tower::Service<http::Request<Body>> for ControlChannel {
    type Response = http::Response<MeteredBody>;
    type Error = tonic::transport::Error;
    type Future = ResponseFuture<<Channel as tower::Service<http::Request<Body>>>::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        tower::Service::poll_ready(&mut self.inner, cx)
    }

    fn call(&mut self, req: http::Request<Body>) -> Self::Future {
        self.handles.request.incr();
        ResponseFuture {
            inner: tower::Service::call(&mut self.inner, req),
            handles: self.handles.clone(),
            start: Instant::now(),
        }
    }
}

impl<F> Future for ResponseFuture<F>
where
    F: Future<Output = Result<http::Response<Body>, tonic::transport::Error>>,
{
    type Output = Result<http::Response<MeteredBody>, tonic::transport::Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let res = ready!(this.inner.poll(cx));
        let ms = this.start.elapsed().as_secs_f64() * 1000.0;
        let rsp = match res {
            Ok(rsp) => rsp,
            Err(e) => {
                this.handles.latency(None).observe(ms);
                this.handles.response(Outcome {
                    status_code: None,
                    grpc_status: None,
                    success: false,
                    error: Some("transport"),
                });
                return Poll::Ready(Err(e));
            }
        };
        let status_code = rsp.status().as_u16();
        this.handles.latency(Some(status_code)).observe(ms);
        let end = End {
            handles: this.handles.clone(),
            status_code,
            grpc_status: grpc_status(rsp.headers()),
        };
        Poll::Ready(Ok(rsp.map(|inner| MeteredBody {
            inner,
            end: Some(end),
        })))
    }
}

fn grpc_status(headers: &http::HeaderMap) -> Option<i32> {
    headers.get("grpc-status")?.to_str().ok()?.parse().ok()
}

impl End {
    fn finish(self, trailers: Option<&http::HeaderMap>, error: Option<&'static str>) {
        let grpc_status = trailers.and_then(grpc_status).or(self.grpc_status);
        // A call the client cancelled (dropped) is no failure of the control plane's.
        let failed = matches!(error, Some(e) if e != "cancel");
        let success = !failed && (200..300).contains(&self.status_code);
        let success = success && grpc_status.is_none_or(|code| code == 0);
        self.handles.response(Outcome {
            status_code: Some(self.status_code),
            grpc_status,
            success,
            error,
        });
    }
}

impl HttpBody for MeteredBody {
    type Data = Bytes;
    type Error = tonic::Status;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let mut this = self.project();
        let res = ready!(this.inner.as_mut().poll_frame(cx));
        match &res {
            Some(Ok(frame)) => {
                if let Some(trailers) = frame.trailers_ref() {
                    if let Some(end) = this.end.take() {
                        end.finish(Some(trailers), None);
                    }
                }
            }
            None => {
                if let Some(end) = this.end.take() {
                    end.finish(None, None);
                }
            }
            Some(Err(_)) => {
                if let Some(end) = this.end.take() {
                    end.finish(None, Some("stream"));
                }
            }
        }
        Poll::Ready(res)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl EncodeLabels for ControlLabels {
    fn encode(&self, w: &mut LabelWriter<'_>) {
        w.label("addr", &self.addr);
        match &self.server_id {
            Some(id) => w.label("tls", "true").label("server_id", id),
            None => w
                .label("tls", "no_identity")
                .label("no_tls_reason", "disabled"),
        };
    }
}

impl EncodeLabels for LatencyLabels {
    fn encode(&self, w: &mut LabelWriter<'_>) {
        self.control.encode(w);
        if let Some(s) = self.status_code {
            w.label("status_code", s);
        }
    }
}

impl EncodeLabels for ResponseLabels {
    fn encode(&self, w: &mut LabelWriter<'_>) {
        self.control.encode(w);
        let o = &self.outcome;
        if let Some(s) = o.status_code {
            w.label("status_code", s);
        }
        w.label(
            "classification",
            if o.success { "success" } else { "failure" },
        );
        match o.grpc_status {
            Some(g) => w.label("grpc_status", g),
            None => w.label("grpc_status", ""),
        };
        w.label("error", o.error.unwrap_or(""));
    }
}
