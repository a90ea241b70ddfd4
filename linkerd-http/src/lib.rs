//! hyper glue and the HTTP layers of the request stacks.
//!
//! This crate knows how to carry HTTP: serve a detected connection ([`HttpServer`]), send a
//! request to an endpoint over the connection pool shared by every worker ([`Client`],
//! [`EndpointClient`]), and the layers a request passes on the way, each a `tower::Layer`:
//! - [`ErrorResponseLayer`]: a failure becomes a response with `l5d-proxy-error`, in one place
//!   ([`Error::to_response`]);
//! - [`MetricsLayer`]: `request_total`, `response_latency_ms`, `response_total` with Linkerd's
//!   labels and classification (gRPC status included);
//! - [`TunnelLayer`]: `CONNECT` to a named target, dialed by the proxy;
//! - [`HopByHopLayer`]: hop-by-hop headers stripped, protocol upgrades carried;
//! - [`orig_proto::UpgradeLayer`] / [`orig_proto::DowngradeLayer`]: HTTP/1 carried between
//!   proxies as HTTP/2 (`l5d-orig-proto`).
//!
//! It does not decide where a request goes: routing, discovery and explicit-proxy targets are
//! the application's. Dialing (plain, mTLS) is `linkerd-connect`'s.
#![forbid(unsafe_code)]

mod body;
mod conn_tasks;
mod error;
mod flood;
mod head_budget;
mod headers;
mod hop;
mod mesh_headers;
mod metrics;
pub mod orig_proto;
mod pool;
mod respond;
mod server;
mod stall;
mod tunnel;
mod upgrade;

pub use self::body::{ForwardBody, IntoForwardBody, ProxyBody, RequestBodyTimeout};
pub use self::error::Error;
pub use self::flood::{ControlFrameFlood, ControlFrameLimit, FrameGuard};
pub use self::head_budget::{HeadBudget, HeadBudgetExhausted, SMALL_HEAD};
pub use self::headers::{
    authority_of, head_of, is_grpc, strip_hop_by_hop, wants_upgrade, L5D_DST_CANONICAL,
    L5D_PROXY_CONNECTION, L5D_PROXY_ERROR, L5D_REQUIRE_ID,
};
pub use self::hop::{HopByHop, HopByHopLayer};
pub use self::mesh_headers::{MeshHeaders, MeshHeadersLayer};
pub use self::metrics::{
    AuthorityRoutes, HttpMetrics, Metrics, MetricsLayer, OnceRoute, PolicyLabels, RecordBody,
    ResponseFuture as MetricsFuture, ResponseRecorder, RouteLabels, RouteMetrics, Routes,
};
pub use self::pool::{
    Client, ClientConfig, Dial, EndpointClient, H2Settings, Pool, PoolBody, PoolMetrics,
    RequestBody, Version,
};
pub use self::respond::{ErrorResponse, ErrorResponseLayer};
pub use self::server::{serve, ClientIp, HttpServer, RequestFuture, RequestStack, ServerConfig};
pub use self::stall::{ClientStalls, SendStallConfig, StallResets};
pub use self::tunnel::{Tunnel, TunnelLayer};
