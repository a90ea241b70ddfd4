//! Proxy errors and the one place they become HTTP responses.

use crate::{
    headers::{L5D_PROXY_CONNECTION, L5D_PROXY_ERROR},
    ProxyBody,
};
use http::{HeaderValue, Response, StatusCode};
use std::net::SocketAddr;

/// Why the proxy could not forward a request.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Connecting to the target failed (refused, timed out, unreachable).
    #[error(transparent)]
    Connect(#[from] linkerd_proxy_transport::Error),

    /// The HTTP handshake with the target failed.
    #[error("HTTP handshake with {addr} failed: {source}")]
    Handshake {
        /// The target.
        addr: SocketAddr,
        /// What failed.
        #[source]
        source: hyper::Error,
    },

    /// The target reset or closed the connection, or sent an invalid response.
    #[error("request to {addr} failed: {source}")]
    Upstream {
        /// The target.
        addr: SocketAddr,
        /// What failed.
        #[source]
        source: hyper::Error,
    },

    /// The request uses a feature the proxy does not carry (a transfer coding other than
    /// `chunked`).
    #[error("not implemented: {0}")]
    NotImplemented(String),

    /// The client's request body did not arrive in time (`LINKERD2_PROXY_HTTP_REQUEST_BODY_TIMEOUT`).
    #[error("{0}")]
    RequestBodyTimeout(crate::body::RequestBodyTimeout),

    /// The endpoint sent no response headers in time
    /// (`LINKERD2_PROXY_HTTP_RESPONSE_HEADERS_TIMEOUT`); the request to it was cancelled.
    #[error("no response headers from {addr} within {timeout:?}")]
    ResponseHeadersTimeout {
        /// The endpoint.
        addr: SocketAddr,
        /// The timeout.
        timeout: std::time::Duration,
    },

    /// The client's request body failed while it was being forwarded (bad chunked framing, a
    /// bare LF, a body shorter than its `Content-Length`, a reset): the client's fault, not the
    /// target's.
    #[error("the client's request body failed: {0}")]
    ClientBody(#[source] hyper::Error),

    /// The target is one of the proxy's own listeners: forwarding would loop.
    #[error("refusing to forward to {addr}: it is this proxy's own listener (a forwarding loop)")]
    Loop {
        /// The target.
        addr: SocketAddr,
    },

    /// An explicit-proxy request named a target the proxy does not serve.
    #[error("forbidden target {target}: {reason}")]
    Forbidden {
        /// The target as the request named it.
        target: String,
        /// Why it is refused.
        reason: &'static str,
    },

    /// The inbound policy does not allow this client.
    #[error("{0}")]
    Unauthorized(String),

    /// The request can't be forwarded as written.
    #[error("bad request: {0}")]
    BadRequest(String),

    /// No endpoint of a discovered service could take the request.
    #[error("service unavailable: {0}")]
    Unavailable(#[from] linkerd_balance::Error),

    /// Mutual TLS with the endpoint's proxy failed (or it is not who discovery said).
    #[error("mTLS to {addr} failed: {source}")]
    Tls {
        /// The target.
        addr: SocketAddr,
        /// What failed.
        #[source]
        source: linkerd_tls::Error,
    },

    /// The proxy has no certificate yet, so it can't reach a meshed endpoint.
    #[error("no certificate yet for this proxy's identity (waited {0:?}); meshed endpoints are unreachable until the Identity service issues one")]
    NoCertificate(std::time::Duration),

    /// Sending the opaque-transport header failed.
    #[error("failed to send the transport header to {addr}: {source}")]
    TransportHeader {
        /// The target.
        addr: SocketAddr,
        /// What failed.
        #[source]
        source: std::io::Error,
    },

    /// No route of the port's policy matches the request.
    #[error("no route found for the request")]
    RouteNotFound,

    /// The route's rule sends its requests nowhere (its backends are all invalid).
    #[error("the route has no backends")]
    NoBackends,

    /// The route's request or response timeout passed; the request to the endpoint was
    /// cancelled.
    #[error("{which} timeout of {timeout:?} passed")]
    RouteTimeout {
        /// `request` or `response`.
        which: &'static str,
        /// The route's timeout.
        timeout: std::time::Duration,
    },

    /// The port's local rate limit is exceeded.
    #[error("too many requests")]
    RateLimited,

    /// A route's failure injector answered.
    #[error("{message}")]
    Injected {
        /// The configured status.
        status: StatusCode,
        /// The configured message.
        message: String,
    },

    /// A gRPC route's failure injector answered.
    #[error("{message}")]
    InjectedGrpc {
        /// The configured gRPC status code.
        code: u16,
        /// The configured message.
        message: String,
    },

    /// A route's redirect filter answered.
    #[error("redirected to {location:?}")]
    Redirect {
        /// A 3xx status.
        status: StatusCode,
        /// The `Location`.
        location: HeaderValue,
    },

    /// The port's policy from the control plane is invalid (and there is no earlier one).
    #[error("invalid policy: {0}")]
    InvalidPolicy(String),

    /// The app asked (`l5d-require-id`) for an endpoint identity the endpoint does not have.
    #[error("endpoint {addr} is {actual}, not the required identity {required}")]
    IdentityMismatch {
        /// The endpoint.
        addr: SocketAddr,
        /// The identity the request requires.
        required: String,
        /// The endpoint's identity, or why it has none.
        actual: String,
    },

    /// An explicit-proxy target name did not resolve.
    #[error("failed to resolve {name}: {reason}")]
    Resolve {
        /// The name.
        name: String,
        /// Why it did not resolve.
        reason: String,
    },
}

impl From<linkerd_connect::Error> for Error {
    fn from(e: linkerd_connect::Error) -> Self {
        use linkerd_connect::Error as C;
        match e {
            C::Connect(e) => Self::Connect(e),
            C::NoCertificate(waited) => Self::NoCertificate(waited),
            C::Tls { addr, source } => Self::Tls { addr, source },
            C::TransportHeader { addr, source } => Self::TransportHeader { addr, source },
        }
    }
}

impl Error {
    /// Sending a request to `addr` failed with `source`: the client's body failing (hyper
    /// reports an error of the request body as a "user" error whose cause is the body's own
    /// `hyper::Error`) is the client's fault, anything else the target's.
    pub fn upstream(addr: SocketAddr, source: hyper::Error) -> Self {
        let cause = std::error::Error::source(&source).filter(|_| source.is_user());
        if let Some(t) = cause.and_then(|c| c.downcast_ref::<crate::body::RequestBodyTimeout>()) {
            return Error::RequestBodyTimeout(crate::body::RequestBodyTimeout(t.0));
        }
        if cause.is_some_and(|c| c.downcast_ref::<hyper::Error>().is_some()) {
            Error::ClientBody(source)
        } else {
            Error::Upstream { addr, source }
        }
    }

    /// The HTTP status that tells a client what went wrong.
    pub fn status(&self) -> StatusCode {
        use linkerd_proxy_transport::Error as T;
        match self {
            Error::Connect(T::ConnectTimeout { .. }) => StatusCode::GATEWAY_TIMEOUT,
            Error::Connect(_)
            | Error::Handshake { .. }
            | Error::Upstream { .. }
            | Error::Tls { .. }
            | Error::TransportHeader { .. } => StatusCode::BAD_GATEWAY,
            Error::NoCertificate(_) => StatusCode::SERVICE_UNAVAILABLE,
            Error::Loop { .. } => StatusCode::BAD_GATEWAY,
            Error::Forbidden { .. } | Error::Unauthorized(_) => StatusCode::FORBIDDEN,
            Error::BadRequest(_) | Error::ClientBody(_) => StatusCode::BAD_REQUEST,
            Error::NotImplemented(_) => StatusCode::NOT_IMPLEMENTED,
            Error::RequestBodyTimeout(_) => StatusCode::REQUEST_TIMEOUT,
            Error::ResponseHeadersTimeout { .. } => StatusCode::GATEWAY_TIMEOUT,
            Error::Resolve { .. } => StatusCode::BAD_GATEWAY,
            // No endpoint became ready in time: a timeout, as upstream answers it.
            Error::Unavailable(linkerd_balance::Error::Unavailable { .. }) => {
                StatusCode::GATEWAY_TIMEOUT
            }
            Error::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            Error::IdentityMismatch { .. } => StatusCode::BAD_GATEWAY,
            Error::RouteNotFound => StatusCode::NOT_FOUND,
            Error::NoBackends => StatusCode::INTERNAL_SERVER_ERROR,
            Error::RouteTimeout { .. } => StatusCode::GATEWAY_TIMEOUT,
            Error::RateLimited => StatusCode::TOO_MANY_REQUESTS,
            Error::Injected { status, .. } | Error::Redirect { status, .. } => *status,
            Error::InjectedGrpc { .. } => StatusCode::OK,
            Error::InvalidPolicy(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// Whether connecting to the endpoint failed (so a balancer backs the endpoint off).
    pub fn is_connect_failure(&self) -> bool {
        matches!(self, Error::Connect(_))
    }

    /// The gRPC status code a gRPC client gets for this failure (linkerd2-proxy's mapping).
    pub fn grpc_code(&self) -> u16 {
        use linkerd_balance::Error as B;
        use linkerd_proxy_transport::Error as T;
        const DEADLINE_EXCEEDED: u16 = 4;
        const NOT_FOUND: u16 = 5;
        const PERMISSION_DENIED: u16 = 7;
        const INTERNAL: u16 = 13;
        const UNAVAILABLE: u16 = 14;
        match self {
            Error::Connect(T::ConnectTimeout { .. }) => DEADLINE_EXCEEDED,
            Error::Unavailable(B::Unavailable { .. }) => DEADLINE_EXCEEDED,
            Error::Unavailable(B::NotFound { .. }) => NOT_FOUND,
            Error::Unavailable(B::QueueFull { .. }) => UNAVAILABLE,
            Error::Connect(_)
            | Error::Handshake { .. }
            | Error::Upstream { .. }
            | Error::Tls { .. }
            | Error::TransportHeader { .. }
            | Error::NoCertificate(_)
            | Error::Loop { .. }
            | Error::IdentityMismatch { .. }
            | Error::Resolve { .. } => UNAVAILABLE,
            Error::Forbidden { .. } | Error::Unauthorized(_) => PERMISSION_DENIED,
            Error::BadRequest(_) | Error::ClientBody(_) | Error::InvalidPolicy(_) => INTERNAL,
            Error::NotImplemented(_) => 12,
            Error::RequestBodyTimeout(_)
            | Error::ResponseHeadersTimeout { .. }
            | Error::RouteTimeout { .. } => DEADLINE_EXCEEDED,
            Error::NoBackends => UNAVAILABLE,
            Error::RouteNotFound | Error::Redirect { .. } => NOT_FOUND,
            Error::RateLimited => 8,
            Error::Injected { .. } => 9,
            Error::InjectedGrpc { code, .. } => *code,
        }
    }

    /// Whether the proxy closes the client's connection after answering this failure
    /// (`l5d-proxy-connection: close`; HTTP/1 `Connection: close`): everything but the
    /// answers of policy and routing, which say nothing about the connection.
    pub fn closes_connection(&self) -> bool {
        !matches!(
            self,
            Error::Forbidden { .. }
                | Error::Unauthorized(_)
                | Error::RouteNotFound
                | Error::NoBackends
                | Error::RouteTimeout { .. }
                | Error::RateLimited
                | Error::Injected { .. }
                | Error::InjectedGrpc { .. }
                | Error::Redirect { .. }
        )
    }

    /// A short, fixed name of the failure: the `error` label of `response_total`.
    pub fn kind(&self) -> &'static str {
        use linkerd_balance::Error as B;
        use linkerd_proxy_transport::Error as T;
        match self {
            Error::Connect(T::ConnectTimeout { .. }) => "connect_timeout",
            Error::Connect(_) => "connect",
            Error::Handshake { .. } => "handshake",
            Error::Upstream { .. } => "upstream",
            Error::Loop { .. } => "loop",
            Error::Forbidden { .. } => "forbidden",
            Error::Unauthorized(_) => "unauthorized",
            Error::BadRequest(_) => "bad_request",
            Error::ClientBody(_) => "request_body",
            Error::NotImplemented(_) => "not_implemented",
            Error::RequestBodyTimeout(_) => "request_body_timeout",
            Error::ResponseHeadersTimeout { .. } => "response_timeout",
            Error::Unavailable(B::NotFound { .. }) => "not_found",
            Error::Unavailable(B::Unavailable { .. }) => "failfast",
            Error::Unavailable(B::QueueFull { .. }) => "loadshed",
            Error::Tls { .. } => "tls",
            Error::NoCertificate(_) => "no_certificate",
            Error::TransportHeader { .. } => "transport_header",
            Error::RouteNotFound => "route_not_found",
            Error::NoBackends => "no_backends",
            Error::RouteTimeout {
                which: "request", ..
            } => "request_timeout",
            Error::RouteTimeout { .. } => "route_response_timeout",
            Error::RateLimited => "rate_limited",
            Error::Injected { .. } | Error::InjectedGrpc { .. } => "injected",
            Error::Redirect { .. } => "redirect",
            Error::InvalidPolicy(_) => "invalid_policy",
            Error::IdentityMismatch { .. } => "identity_mismatch",
            Error::Resolve { .. } => "resolve",
        }
    }

    /// The answer to a gRPC request: trailers-only (`:status 200`, an empty body), with
    /// `grpc-status`, `grpc-message` (percent-encoded, as gRPC requires) and `l5d-proxy-error`.
    pub fn to_grpc_response(&self) -> Response<ProxyBody> {
        let msg = self.to_string();
        let mut rsp = Response::new(ProxyBody::empty());
        let h = rsp.headers_mut();
        h.insert(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static("application/grpc"),
        );
        h.insert(http::header::CONTENT_LENGTH, HeaderValue::from_static("0"));
        h.insert("grpc-status", HeaderValue::from(self.grpc_code()));
        // Percent-encoding leaves only visible ASCII: always a valid header value.
        if let Ok(v) = HeaderValue::from_str(&grpc_percent_encode(&msg)) {
            h.insert("grpc-message", v);
        }
        let value =
            HeaderValue::from_str(&msg).unwrap_or_else(|_| HeaderValue::from_static("proxy error"));
        h.insert(L5D_PROXY_ERROR, value);
        if self.closes_connection() {
            h.insert(L5D_PROXY_CONNECTION, HeaderValue::from_static("close"));
        }
        rsp
    }

    /// The response sent to the client: the status, the `l5d-proxy-error` header and the
    /// message as a plain-text body.
    pub fn to_response(&self) -> Response<ProxyBody> {
        let msg = self.to_string();
        let mut rsp = Response::new(ProxyBody::full(format!("{msg}\n")));
        *rsp.status_mut() = self.status();
        // Header values can't hold control characters; the message never has any, but fall
        // back to a fixed text rather than fail.
        let value =
            HeaderValue::from_str(&msg).unwrap_or_else(|_| HeaderValue::from_static("proxy error"));
        rsp.headers_mut().insert(L5D_PROXY_ERROR, value);
        rsp.headers_mut().insert(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain"),
        );
        if self.closes_connection() {
            rsp.headers_mut()
                .insert(L5D_PROXY_CONNECTION, HeaderValue::from_static("close"));
        }
        if let Error::Redirect { location, .. } = self {
            rsp.headers_mut()
                .insert(http::header::LOCATION, location.clone());
        }
        rsp
    }
}

/// gRPC's `grpc-message` encoding: bytes outside visible ASCII, and `%`, as `%XX`.
fn grpc_percent_encode(msg: &str) -> String {
    use std::fmt::Write;
    let mut out = String::with_capacity(msg.len());
    for b in msg.bytes() {
        if (0x20..=0x7e).contains(&b) && b != b'%' {
            out.push(char::from(b));
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use linkerd_proxy_transport::Error as T;
    use std::time::Duration;

    #[test]
    fn grpc_answers() {
        let addr: SocketAddr = "10.0.0.1:80".parse().unwrap();
        let refused = Error::Connect(T::ConnectRefused { addr });
        let rsp = refused.to_grpc_response();
        assert_eq!(rsp.status(), 200);
        assert_eq!(rsp.headers()["grpc-status"], "14");
        assert_eq!(rsp.headers()["content-length"], "0");
        assert!(rsp.headers()["grpc-message"]
            .to_str()
            .unwrap()
            .contains("10.0.0.1:80"));
        let timeout = Error::Connect(T::ConnectTimeout {
            addr,
            timeout: Duration::from_secs(1),
        });
        assert_eq!(timeout.grpc_code(), 4);
        assert_eq!(Error::Unauthorized("no".into()).grpc_code(), 7);
        assert_eq!(grpc_percent_encode("50% é\n"), "50%25 %C3%A9%0A");
    }

    #[test]
    fn statuses() {
        let addr: SocketAddr = "10.0.0.1:80".parse().unwrap();
        let timeout = Error::Connect(T::ConnectTimeout {
            addr,
            timeout: Duration::from_secs(1),
        });
        assert_eq!(timeout.status(), StatusCode::GATEWAY_TIMEOUT);
        let rsp = timeout.to_response();
        assert_eq!(rsp.status(), 504);
        assert_eq!(
            rsp.headers()[L5D_PROXY_ERROR],
            "connect to 10.0.0.1:80 timed out after 1s"
        );
        assert_eq!(
            Error::Connect(T::ConnectRefused { addr }).status(),
            StatusCode::BAD_GATEWAY
        );
        assert_eq!(Error::Loop { addr }.status(), StatusCode::BAD_GATEWAY);
        assert_eq!(
            Error::BadRequest("no host".into()).status(),
            StatusCode::BAD_REQUEST
        );
        assert_eq!(
            Error::Forbidden {
                target: "127.0.0.1:4191".into(),
                reason: "the proxy's admin port"
            }
            .status(),
            StatusCode::FORBIDDEN
        );
    }
}
