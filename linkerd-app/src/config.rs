//! Configuration from `LINKERD2_PROXY_*` environment variables.
//!
//! [`Config::from_env`] is a pure function of a key/value map, so every variable is unit-tested
//! without touching the process environment. Names, syntax and defaults are linkerd2-proxy's
//! (`../shared/compat/LINKERD-CONTRACT.md`, section (a)); where this proxy departs, the README
//! says which and why.

use crate::PortSet;
use ipnet::IpNet;
use linkerd_identity::{Id, TrustAnchors};
use linkerd_proxy_transport::SocketOptions;
use std::{
    cell::RefCell,
    collections::{BTreeSet, HashMap},
    net::{IpAddr, SocketAddr},
    path::PathBuf,
    str::FromStr,
    time::Duration,
};

/// Everything the proxy reads from its environment.
#[derive(Clone, Debug)]
pub struct Config {
    /// The inbound side (the world's connections to the app).
    pub inbound: ProxyConfig,
    /// The outbound side (the app's connections to the world).
    pub outbound: ProxyConfig,
    /// `LINKERD2_PROXY_ADMIN_LISTEN_ADDR`.
    pub admin_listen_addr: SocketAddr,
    /// The `tracing` filter, e.g. `warn,linkerd=info`.
    pub log_filter: String,
    /// `LINKERD2_PROXY_LOG_FORMAT`.
    pub log_format: LogFormat,
    /// Ports whose connections skip protocol detection and are forwarded as opaque TCP.
    pub opaque_ports: PortSet,
    /// Worker threads (`_CORES_MIN`/`_CORES`, `_CORES_MAX`, `_CORES_MAX_RATIO`); 1 runs a
    /// single-threaded runtime.
    pub workers: usize,
    /// After SIGTERM, how long in-flight requests and connections may take to finish.
    pub shutdown_grace_period: Duration,
    /// Whether `POST /shutdown` on the admin port is served.
    pub shutdown_endpoint_enabled: bool,
    /// Service discovery through the Destination API; `None` forwards to original
    /// destinations only.
    pub discovery: Option<DiscoveryConfig>,
    /// The proxy's identity; `None` runs plaintext (meshed traffic is not mTLS).
    pub identity: Option<IdentityConfig>,
    /// Inbound authorization.
    pub policy: crate::inbound::policy::Policy,
    /// The inbound policy API; `None` applies the default policy to every port.
    pub policy_control: Option<PolicyControlConfig>,
    /// `LINKERD2_PROXY_INBOUND_IPS`: the pod's IPs; empty accepts any destination IP.
    pub inbound_ips: Vec<IpAddr>,
    /// Bounds on the Destination and Policy streams (`LINKERD2_PROXY_CONTROL_STREAM_*`).
    pub control_streams: StreamLimits,
    /// The whole process environment, for the admin `/env.json` endpoint.
    pub env: HashMap<String, String>,
    /// Bounds on every metric family: series per family
    /// (`LINKERD2_PROXY_METRICS_MAX_SERIES`) and how long an unused series is kept
    /// (`LINKERD2_PROXY_METRICS_RETAIN_IDLE`).
    pub metrics: linkerd_metrics::Limits,
    /// `LINKERD2_PROXY_INBOUND_METRICS_AUTHORITY_LABELS=unsafe`: inbound requests are counted
    /// by authority too.
    pub inbound_authority_labels: bool,
    /// What the operator should hear at start-up: unknown `LINKERD2_PROXY_*` names (typos),
    /// variables accepted for features this proxy does not have, values ignored.
    pub warnings: Vec<String>,
}

/// One direction's listener and client settings.
#[derive(Clone, Debug)]
pub struct ProxyConfig {
    /// The listener.
    pub listen_addr: SocketAddr,
    /// A second listener (outbound only: `_OUTBOUND_LISTEN_ADDRS` with two addresses, IPv4
    /// and IPv6).
    pub also_listen_addr: Option<SocketAddr>,
    /// The listeners' accept backlog (`_{IN,OUT}BOUND_TCP_LISTEN_BACKLOG`).
    pub backlog: u32,
    /// At most this many connections are served at once (`_{IN,OUT}BOUND_MAX_CONNECTIONS`,
    /// ours); one more is closed as soon as it is accepted.
    pub max_connections: usize,
    /// Keep-alive and user timeout on accepted sockets (`_{IN,OUT}BOUND_ACCEPT_*`).
    pub accept: SocketOptions,
    /// Keep-alive and user timeout on dialed sockets (`_{IN,OUT}BOUND_CONNECT_*`).
    pub connect: SocketOptions,
    /// How long protocol detection (and a ClientHello) may take.
    pub detect_timeout: Duration,
    /// A client that has sent nothing for this long has its server dialed, so that a server
    /// that speaks first is forwarded at once (`_{IN,OUT}BOUND_SERVER_FIRST_DELAY`, ours;
    /// `None`: never).
    pub server_first_delay: Option<Duration>,
    /// The client pool's settings.
    pub client: linkerd_http::ClientConfig,
    /// The HTTP server's settings for this direction's connections.
    pub server: linkerd_http::ServerConfig,
}

/// The proxy's identity and how it gets its certificate.
#[derive(Clone, Debug)]
pub struct IdentityConfig {
    /// The local identity (`LINKERD2_PROXY_IDENTITY_LOCAL_NAME`).
    pub id: Id,
    /// The name peers use as SNI to reach this proxy (the local name too).
    pub server_name: Id,
    /// The mesh's root CAs (`_TRUST_ANCHORS`).
    pub trust_anchors: TrustAnchors,
    /// Holds the token proving the identity to the Identity service.
    pub token_file: PathBuf,
    /// A directory with the injector's `key.p8` and `csr.der`, used instead of a generated key.
    pub dir: Option<PathBuf>,
    /// The Identity service.
    pub control: ControlAddr,
    /// The shortest wait before a renewal (and the retry delay after a failure).
    pub min_refresh: Duration,
    /// The longest wait before a renewal.
    pub max_refresh: Duration,
}

/// A control-plane service: its address, and its TLS identity when reached over TLS.
#[derive(Clone, Debug)]
pub struct ControlAddr {
    /// `host:port`.
    pub addr: String,
    /// `None`: plaintext, which is only allowed to a loopback address.
    pub name: Option<Id>,
}

/// The inbound policy API (`io.linkerd.proxy.inbound.InboundServerPolicies`).
#[derive(Clone, Debug)]
pub struct PolicyControlConfig {
    /// `LINKERD2_PROXY_POLICY_SVC_ADDR` / `_NAME`.
    pub control: ControlAddr,
    /// `LINKERD2_PROXY_POLICY_WORKLOAD`, sent as is (the injector's JSON, newline included).
    pub workload: String,
    /// `LINKERD2_PROXY_INBOUND_PORTS`: watched from start-up; other ports on first use.
    pub ports: Vec<u16>,
    /// A port's watch is dropped this long after its last connection
    /// (`LINKERD2_PROXY_INBOUND_DISCOVERY_IDLE_TIMEOUT`).
    pub idle_timeout: Duration,
    /// How long a new connection waits for a port's first policy before the default applies
    /// (`LINKERD2_PROXY_INBOUND_POLICY_INITIAL_TIMEOUT`, ours).
    pub initial_timeout: Duration,
}

/// `LINKERD2_PROXY_CONTROL_STREAM_{INITIAL_TIMEOUT,IDLE_TIMEOUT,LIFETIME}`: a stream with no
/// first message in time, or silent too long, or older than its lifetime, is re-opened.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StreamLimits {
    /// The first message must arrive within this.
    pub initial_timeout: Option<Duration>,
    /// No gap between messages may be longer.
    pub idle_timeout: Option<Duration>,
    /// The stream is re-opened after this long.
    pub lifetime: Option<Duration>,
}

/// Where and how outbound names are discovered and balanced.
#[derive(Clone, Debug)]
pub struct DiscoveryConfig {
    /// `host:port` of the Destination service.
    pub addr: String,
    /// The Destination service's TLS identity (`LINKERD2_PROXY_DESTINATION_SVC_NAME`); the
    /// connection is TLS when set.
    pub name: Option<Id>,
    /// Sent as `context_token` with every lookup.
    pub context: String,
    /// Authorities under these suffixes (lower case, ending in `.`) are discovered.
    pub suffixes: Vec<String>,
    /// Original destinations in these networks are looked up with `GetProfile`
    /// (`LINKERD2_PROXY_DESTINATION_PROFILE_NETWORKS`); `None` (unset) looks up every one.
    pub profile_networks: Option<Vec<IpNet>>,
    /// A name's lookup and balancer are dropped after this long unused.
    pub idle_timeout: Duration,
    /// Requests that may wait for an endpoint of one service.
    pub queue_capacity: usize,
    /// How long a request waits for a ready endpoint before a 503.
    pub failfast_timeout: Duration,
    /// How long a new connection waits for the profile of its original destination.
    pub profile_initial_timeout: Duration,
    /// Bounds on how long DNS answers (used to canonicalise short names) are cached.
    pub dns_min_ttl: Option<Duration>,
    /// See `dns_min_ttl`.
    pub dns_max_ttl: Option<Duration>,
    /// `LINKERD2_PROXY_CONTROL_STREAM_*`, for the Destination streams.
    pub control_streams: StreamLimits,
}

/// How log lines are written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines.
    Plain,
    /// One JSON object per line.
    Json,
}

/// A variable whose value could not be used.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid {name}={value:?}: expected {expected}")]
pub struct ConfigError {
    /// The variable.
    pub name: String,
    /// Its value.
    pub value: String,
    /// What was expected instead.
    pub expected: &'static str,
}

/// Ports of protocols where the server speaks first or detection is known to be wrong,
/// as Linkerd's injector defaults them.
pub const DEFAULT_OPAQUE_PORTS: &str = "25,587,3306,4444,5432,6379,9300,11211";

const PREFIX: &str = "LINKERD2_PROXY_";

/// Variables this proxy accepts but whose feature it does not have (yet): set, each is named
/// in one start-up warning. `Some(v)`: only when set to something other than `v` (the value
/// that means "off").
const NOT_IMPLEMENTED: &[(&str, Option<&str>)] = &[
    ("TAP_SVC_NAME", None),
    ("TRACE_COLLECTOR_SVC_ADDR", None),
    ("TRACE_COLLECTOR_SVC_NAME", None),
    ("TRACE_SERVICE_NAME", None),
    ("TRACE_ATTRIBUTES_PATH", None),
    ("TRACE_EXTRA_ATTRIBUTES", None),
    ("ACCESS_LOG", None),
    ("INBOUND_GATEWAY_SUFFIXES", Some("")),
    ("INGRESS_MODE", Some("false")),
    ("OUTBOUND_DISABLE_INFORMATIONAL_HEADERS", Some("false")),
    ("OUTBOUND_METRICS_HOSTNAME_LABELS", Some("false")),
    ("IDENTITY_SPIRE_WORKLOAD_API_ADDRESS", None),
    ("IDENTITY_SPIRE_SOCKET", None),
    ("IDENTITY_SPIRE_EXP_BACKOFF_MIN", None),
    ("IDENTITY_SPIRE_EXP_BACKOFF_MAX", None),
    ("IDENTITY_SPIRE_EXP_BACKOFF_JITTER", None),
    ("INBOUND_CONNECT_EXP_BACKOFF_MIN", None),
    ("INBOUND_CONNECT_EXP_BACKOFF_MAX", None),
    ("INBOUND_CONNECT_EXP_BACKOFF_JITTER", None),
    ("OUTBOUND_CONNECT_EXP_BACKOFF_MIN", None),
    ("OUTBOUND_CONNECT_EXP_BACKOFF_MAX", None),
    ("OUTBOUND_CONNECT_EXP_BACKOFF_JITTER", None),
    ("INBOUND_HTTP_QUEUE_CAPACITY", None),
    ("INBOUND_HTTP_QUEUE_FAILFAST_TIMEOUT", None),
    ("OUTBOUND_TCP_QUEUE_CAPACITY", None),
    ("OUTBOUND_TCP_QUEUE_FAILFAST_TIMEOUT", None),
    ("INBOUND_MAX_IN_FLIGHT", None),
    ("OUTBOUND_MAX_IN_FLIGHT", None),
];

/// Names that are known though they may go unread: linkerd2-proxy defines and never reads
/// the first two (the injector may set them); `CONTROL_LISTEN_ADDR` is the tap server's; the
/// rest are read only with their feature configured (or, for `OUTBOUND_LISTEN_ADDR`, without
/// `OUTBOUND_LISTEN_ADDRS`).
const KNOWN: &[&str] = &[
    "TRACE_ANNOTATIONS_PATH",
    "TRACE_PROTOCOL",
    "CONTROL_LISTEN_ADDR",
    "OUTBOUND_LISTEN_ADDR",
    "POLICY_WORKLOAD",
    "POLICY_SVC_NAME",
    "INBOUND_PORTS",
    "INBOUND_DISCOVERY_IDLE_TIMEOUT",
    "INBOUND_POLICY_INITIAL_TIMEOUT",
    "DESTINATION_SVC_NAME",
    "DESTINATION_CONTEXT",
    "DESTINATION_PROFILE_SUFFIXES",
    "DESTINATION_PROFILE_NETWORKS",
    "DESTINATION_PROFILE_INITIAL_TIMEOUT",
    "OUTBOUND_DISCOVERY_IDLE_TIMEOUT",
    "OUTBOUND_HTTP_QUEUE_CAPACITY",
    "OUTBOUND_HTTP_QUEUE_FAILFAST_TIMEOUT",
    "OUTBOUND_HTTP_FAILFAST_TIMEOUT",
    "DNS_MIN_TTL",
    "DNS_MAX_TTL",
    "IDENTITY_SVC_NAME",
    "IDENTITY_MIN_REFRESH",
    "IDENTITY_MAX_REFRESH",
];

impl Config {
    /// Reads the configuration from a map of environment variables.
    pub fn from_env(env: &HashMap<String, String>) -> Result<Self, ConfigError> {
        let vars = Vars::new(env);
        vars.known(KNOWN);
        let mut warnings = Vec::new();
        let addr = |name: &str, default: &str| vars.parse(name, default, parse_addr);
        let duration = |name: &str, default: &str| vars.parse(name, default, parse_duration);
        let count = |name: &str, default: &str| vars.parse(name, default, parse_positive);
        let optional = |name: &str| match vars.get(name) {
            Some(_) => vars.parse(name, "", parse_duration).map(Some),
            None => Ok(None),
        };
        // Unset or empty: none.
        let maybe_duration = |name: &str| match vars.get(name).map(str::trim) {
            None | Some("") => Ok(None),
            Some(_) => vars.parse(name, "", parse_duration).map(Some),
        };

        if vars
            .get("LINKERD2_PROXY_IDENTITY_DISABLED")
            .is_some_and(|v| !v.is_empty())
        {
            return Err(ConfigError {
                name: "LINKERD2_PROXY_IDENTITY_DISABLED".into(),
                value: vars
                    .get("LINKERD2_PROXY_IDENTITY_DISABLED")
                    .unwrap_or_default()
                    .into(),
                expected:
                    "to be unset: identity cannot be disabled (linkerd2-proxy refuses it too)",
            });
        }

        let workers = workers(
            &vars,
            std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get),
            &mut warnings,
        );
        let u32_in = |name: &str, default: &str, lo: u32, hi: u32, expected: &'static str| {
            vars.parse(name, default, move |v| {
                v.parse::<u32>()
                    .ok()
                    .filter(|n| (lo..=hi).contains(n))
                    .ok_or(expected)
            })
        };
        const WINDOW: &str = "a window size in bytes, 1 to 2147483647";
        let h2 = linkerd_http::H2Settings {
            initial_stream_window_size: u32_in(
                "LINKERD2_PROXY_HTTP2_INITIAL_STREAM_WINDOW_SIZE",
                "65535",
                1,
                (1 << 31) - 1,
                WINDOW,
            )?,
            initial_connection_window_size: u32_in(
                "LINKERD2_PROXY_HTTP2_INITIAL_CONNECTION_WINDOW_SIZE",
                "1048576",
                1,
                (1 << 31) - 1,
                WINDOW,
            )?,
            max_frame_size: u32_in(
                "LINKERD2_PROXY_HTTP2_MAX_FRAME_SIZE",
                "16384",
                16_384,
                16_777_215,
                "a frame size in bytes, 16384 to 16777215",
            )?,
            max_header_list_size: u32_in(
                "LINKERD2_PROXY_HTTP2_MAX_HEADER_LIST_SIZE",
                "409600",
                1024,
                u32::MAX,
                "a size in bytes of at least 1024",
            )?,
        };
        // linkerd2-proxy names the inbound idle-connection limit without a direction.
        let max_idle = |dir: &str| match dir {
            "INBOUND"
                if vars
                    .get("LINKERD2_PROXY_INBOUND_MAX_IDLE_CONNS_PER_ENDPOINT")
                    .is_some() =>
            {
                count("LINKERD2_PROXY_INBOUND_MAX_IDLE_CONNS_PER_ENDPOINT", "")
            }
            "INBOUND" => count("LINKERD2_PROXY_MAX_IDLE_CONNS_PER_ENDPOINT", "10000"),
            _ => count(
                "LINKERD2_PROXY_OUTBOUND_MAX_IDLE_CONNS_PER_ENDPOINT",
                "10000",
            ),
        };
        // An HTTP/2 request body kept for re-sending a request the peer refused (ours).
        let h2_resend_max_request_bytes = vars.parse(
            "LINKERD2_PROXY_HTTP2_RESEND_MAX_REQUEST_BYTES",
            "65536",
            |v| {
                v.parse::<u64>()
                    .map_err(|_| "a number of bytes (0: only empty bodies are re-sent)")
            },
        )?;
        let client = |dir: &str, connect_timeout: &str| -> Result<_, ConfigError> {
            Ok(linkerd_http::ClientConfig {
                connect_timeout: duration(
                    &format!("{PREFIX}{dir}_CONNECT_TIMEOUT"),
                    connect_timeout,
                )?,
                idle_timeout: duration(
                    &format!("{PREFIX}{dir}_HTTP1_CONNECTION_POOL_IDLE_TIMEOUT"),
                    "3s",
                )?,
                max_idle_per_endpoint: max_idle(dir)?,
                h2_keep_alive_interval: Some(duration(
                    &format!("{PREFIX}{dir}_HTTP2_KEEP_ALIVE_INTERVAL"),
                    "10s",
                )?)
                .filter(|d| !d.is_zero()),
                h2_keep_alive_timeout: duration(
                    &format!("{PREFIX}{dir}_HTTP2_KEEP_ALIVE_TIMEOUT"),
                    "3s",
                )?,
                h2_max_connections: count(
                    &format!("{PREFIX}{dir}_HTTP2_MAX_CONNECTIONS_PER_ENDPOINT"),
                    &workers.to_string(),
                )?,
                h2_streams_per_connection: count(
                    &format!("{PREFIX}{dir}_HTTP2_STREAMS_PER_CONNECTION"),
                    "8",
                )?,
                h2,
                request_body_timeout: Some(duration(
                    "LINKERD2_PROXY_HTTP_REQUEST_BODY_TIMEOUT",
                    "300s",
                )?)
                .filter(|d| !d.is_zero()),
                response_headers_timeout: Some(duration(
                    "LINKERD2_PROXY_HTTP_RESPONSE_HEADERS_TIMEOUT",
                    "300s",
                )?)
                .filter(|d| !d.is_zero()),
                h2_resend_max_request_bytes,
            })
        };
        let h1_header_read_timeout = duration("LINKERD2_PROXY_HTTP1_HEADER_READ_TIMEOUT", "30s")?;
        let h1_max_buf_size =
            vars.parse("LINKERD2_PROXY_HTTP1_MAX_HEADER_BYTES", "409600", |v| {
                parse_positive(v).and_then(|n| {
                    // hyper's floor for an HTTP/1 read buffer.
                    if n >= 8192 {
                        Ok(n)
                    } else {
                        Err("a number of bytes of at least 8192")
                    }
                })
            })?;
        let max_streams =
            vars.parse("LINKERD2_PROXY_HTTP2_MAX_CONCURRENT_STREAMS", "1000", |v| {
                parse_positive(v)
                    .and_then(|n| u32::try_from(n).map_err(|_| "a positive 32-bit integer"))
            })?;
        // Request heads beyond their first 16 KiB, over all of a direction's connections (ours).
        let head_budget = vars.parse(
            "LINKERD2_PROXY_HTTP1_MAX_BUFFERED_HEAD_BYTES",
            "67108864",
            |v| {
                v.parse::<usize>()
                    .map_err(|_| "a number of bytes (0: unbounded)")
            },
        )?;
        // HTTP/2 connections with no open stream (ours: linkerd2-proxy has none).
        let h2_idle_timeout = Some(duration(
            "LINKERD2_PROXY_HTTP2_SERVER_IDLE_TIMEOUT",
            "600s",
        )?)
        .filter(|d| !d.is_zero());
        // Streams whose client does not take the response (ours: linkerd2-proxy has none).
        let stalled_streams = |name: &str, default: &str| {
            vars.parse(name, default, |v| {
                v.parse::<usize>()
                    .map_err(|_| "a count of streams (0: unbounded)")
            })
            .map(|n| (n > 0).then_some(n))
        };
        let h2_send_stall = std::sync::Arc::new(linkerd_http::SendStallConfig {
            timeout: Some(duration("LINKERD2_PROXY_HTTP2_SEND_STALL_TIMEOUT", "60s")?)
                .filter(|d| !d.is_zero()),
            grace: duration("LINKERD2_PROXY_HTTP2_SEND_STALL_GRACE", "1s")?,
            max_stalled_per_connection: stalled_streams(
                "LINKERD2_PROXY_HTTP2_MAX_STALLED_STREAMS_PER_CONNECTION",
                "4",
            )?,
            max_stalled_per_client: stalled_streams(
                "LINKERD2_PROXY_HTTP2_MAX_STALLED_STREAMS_PER_CLIENT",
                "8",
            )?,
            resets: Default::default(),
            clients: Default::default(),
        });
        let server = |dir: &str| -> Result<linkerd_http::ServerConfig, ConfigError> {
            let name = |s: &str| format!("{PREFIX}{dir}_SERVER_HTTP2_{s}");
            // PINGs only when both are set, as linkerd2-proxy.
            let interval = maybe_duration(&name("KEEP_ALIVE_INTERVAL"))?;
            let timeout = maybe_duration(&name("KEEP_ALIVE_TIMEOUT"))?;
            let (h2_keep_alive_interval, h2_keep_alive_timeout) = match (interval, timeout) {
                (Some(i), Some(t)) if !i.is_zero() => (Some(i), t),
                _ => (None, Duration::from_secs(20)),
            };
            let window = |s: &str| match vars.get(&name(s)) {
                Some(_) => u32_in(&name(s), "", 1, (1 << 31) - 1, WINDOW).map(Some),
                None => Ok(None),
            };
            let mut server_h2 = h2;
            match (
                window("INITIAL_STREAM_WINDOW_SIZE")?,
                window("INITIAL_CONNECTION_WINDOW_SIZE")?,
            ) {
                (Some(s), Some(c)) => {
                    server_h2.initial_stream_window_size = s;
                    server_h2.initial_connection_window_size = c;
                }
                (None, None) => {}
                _ => {
                    return Err(ConfigError {
                        name: name("INITIAL_STREAM_WINDOW_SIZE"),
                        value: vars
                            .get(&name("INITIAL_STREAM_WINDOW_SIZE"))
                            .unwrap_or_default()
                            .into(),
                        expected: "to be set together with _INITIAL_CONNECTION_WINDOW_SIZE",
                    })
                }
            }
            if vars.get(&name("MAX_FRAME_SIZE")).is_some() {
                server_h2.max_frame_size = u32_in(
                    &name("MAX_FRAME_SIZE"),
                    "",
                    16_384,
                    16_777_215,
                    "a frame size in bytes, 16384 to 16777215",
                )?;
            }
            if vars.get(&name("MAX_HEADER_LIST_SIZE")).is_some() {
                server_h2.max_header_list_size = u32_in(
                    &name("MAX_HEADER_LIST_SIZE"),
                    "",
                    1024,
                    u32::MAX,
                    "a size in bytes of at least 1024",
                )?;
            }
            let optional_count = |s: &str| match vars.get(&name(s)) {
                Some(_) => count(&name(s), "").map(Some),
                None => Ok(None),
            };
            Ok(linkerd_http::ServerConfig {
                h1_header_read_timeout,
                h1_max_buf_size,
                // Each direction its own.
                h1_head_budget: (head_budget > 0)
                    .then(|| linkerd_http::HeadBudget::new(head_budget)),
                h2_keep_alive_interval,
                h2_keep_alive_timeout,
                h2_max_concurrent_streams: match vars.get(&name("MAX_CONCURRENT_STREAMS")) {
                    Some(_) => u32_in(
                        &name("MAX_CONCURRENT_STREAMS"),
                        "",
                        1,
                        u32::MAX,
                        "a positive 32-bit integer",
                    )?,
                    None => max_streams,
                },
                h2: server_h2,
                h2_adaptive_window: vars.parse(
                    &name("ADAPTIVE_FLOW_CONTROL"),
                    "false",
                    parse_bool,
                )?,
                h2_max_pending_accept_reset_streams: optional_count(
                    "MAX_PENDING_ACCEPT_RESET_STREAMS",
                )?,
                h2_max_send_buf_size: optional_count("MAX_SEND_BUF_SIZE")?,
                h2_control_frames: match vars.parse(
                    "LINKERD2_PROXY_HTTP2_MAX_CONTROL_FRAMES_PER_SECOND",
                    // The server's DATA and HEADERS credit the frames clients answer them with
                    // (grpc-go's BDP PINGs), so only unanswered ones spend this.
                    "1000",
                    |v| {
                        v.parse::<u32>()
                            .map_err(|_| "a count of frames (0: unlimited)")
                    },
                )? {
                    0 => None,
                    per_second => Some(linkerd_http::ControlFrameLimit { per_second }),
                },
                h2_send_stall: h2_send_stall.clone(),
                h2_idle_timeout,
            })
        };
        let socket = |dir: &str, side: &str| -> Result<SocketOptions, ConfigError> {
            Ok(SocketOptions {
                keepalive: maybe_duration(&format!("{PREFIX}{dir}_{side}_KEEPALIVE"))?
                    .filter(|d| !d.is_zero()),
                user_timeout: maybe_duration(&format!("{PREFIX}{dir}_{side}_USER_TIMEOUT"))?
                    .filter(|d| !d.is_zero()),
            })
        };
        let backlog = |dir: &str| {
            vars.parse(
                &format!("{PREFIX}{dir}_TCP_LISTEN_BACKLOG"),
                &linkerd_proxy_transport::DEFAULT_BACKLOG.to_string(),
                |v| {
                    parse_positive(v)
                        .and_then(|n| u32::try_from(n).map_err(|_| "a positive 32-bit integer"))
                },
            )
        };

        let log_filter = vars.parse(
            "LINKERD2_PROXY_LOG",
            "warn,linkerd=info,hickory=error",
            parse_log_filter,
        )?;
        let log_format = match vars.get("LINKERD2_PROXY_LOG_FORMAT") {
            Some(v) if v.trim().eq_ignore_ascii_case("json") => LogFormat::Json,
            _ => LogFormat::Plain,
        };

        // `_OUTBOUND_LISTEN_ADDRS` (one or two) wins over the deprecated single `_ADDR`.
        let (outbound_addr, outbound_also) = match vars.get("LINKERD2_PROXY_OUTBOUND_LISTEN_ADDRS")
        {
            Some(_) => vars.parse("LINKERD2_PROXY_OUTBOUND_LISTEN_ADDRS", "", |v| {
                const EXPECTED: &str =
                    "one or two comma-separated ip:port addresses, like 127.0.0.1:4140,[::1]:4140";
                let addrs = v
                    .split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(|a| a.parse::<SocketAddr>().map_err(|_| EXPECTED))
                    .collect::<Result<Vec<_>, _>>()?;
                match addrs[..] {
                    [a] => Ok((a, None)),
                    [a, b] if a != b => Ok((a, Some(b))),
                    _ => Err(EXPECTED),
                }
            })?,
            None => (
                addr("LINKERD2_PROXY_OUTBOUND_LISTEN_ADDR", "127.0.0.1:4140")?,
                None,
            ),
        };

        let policy = crate::inbound::policy::Policy {
            default: match vars.get("LINKERD2_PROXY_INBOUND_DEFAULT_POLICY") {
                Some(_) => {
                    vars.parse("LINKERD2_PROXY_INBOUND_DEFAULT_POLICY", "", |v| v.parse())?
                }
                None => {
                    warnings.push("LINKERD2_PROXY_INBOUND_DEFAULT_POLICY is not set; using all-unauthenticated".into());
                    crate::inbound::policy::DefaultPolicy::AllUnauthenticated
                }
            },
            cluster_networks: vars.parse(
                "LINKERD2_PROXY_POLICY_CLUSTER_NETWORKS",
                crate::inbound::policy::DEFAULT_CLUSTER_NETWORKS,
                crate::inbound::policy::parse_networks,
            )?,
            require_identity: vars.parse(
                "LINKERD2_PROXY_INBOUND_PORTS_REQUIRE_IDENTITY",
                "",
                PortSet::parse,
            )?,
            require_tls: vars.parse(
                "LINKERD2_PROXY_INBOUND_PORTS_REQUIRE_TLS",
                "",
                PortSet::parse,
            )?,
        };
        if policy.cluster_networks.is_empty()
            && matches!(
                policy.default,
                crate::inbound::policy::DefaultPolicy::ClusterAuthenticated
                    | crate::inbound::policy::DefaultPolicy::ClusterUnauthenticated
            )
        {
            return Err(ConfigError {
                name: "LINKERD2_PROXY_POLICY_CLUSTER_NETWORKS".into(),
                value: vars
                    .get("LINKERD2_PROXY_POLICY_CLUSTER_NETWORKS")
                    .unwrap_or_default()
                    .into(),
                expected: "at least one network when the default policy is cluster-*",
            });
        }

        let control_streams = StreamLimits {
            initial_timeout: maybe_duration("LINKERD2_PROXY_CONTROL_STREAM_INITIAL_TIMEOUT")?,
            idle_timeout: maybe_duration("LINKERD2_PROXY_CONTROL_STREAM_IDLE_TIMEOUT")?,
            lifetime: maybe_duration("LINKERD2_PROXY_CONTROL_STREAM_LIFETIME")?,
        };
        control_streams.check()?;

        let inbound_ips = vars.parse("LINKERD2_PROXY_INBOUND_IPS", "", |v| {
            v.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(|s| {
                    s.parse::<IpAddr>()
                        .map_err(|_| "comma-separated IP addresses")
                })
                .collect()
        })?;

        let policy_control = match vars.get("LINKERD2_PROXY_POLICY_SVC_ADDR") {
            None => None,
            Some(_) => Some(PolicyControlConfig {
                control: ControlAddr {
                    addr: vars.parse("LINKERD2_PROXY_POLICY_SVC_ADDR", "", parse_host_port)?,
                    name: control_name(&vars, "POLICY")?,
                },
                workload: vars.parse("LINKERD2_PROXY_POLICY_WORKLOAD", "", |v| match v {
                    "" => Err("the workload the policy controller knows this pod by, like {\"ns\":\"default\",\"pod\":\"web-0\"}"),
                    _ => Ok(()),
                })
                .map(|()| vars.get("LINKERD2_PROXY_POLICY_WORKLOAD").unwrap_or_default().to_string())?,
                ports: vars.parse("LINKERD2_PROXY_INBOUND_PORTS", "", parse_port_list)?,
                idle_timeout: duration("LINKERD2_PROXY_INBOUND_DISCOVERY_IDLE_TIMEOUT", "90s")?,
                initial_timeout: duration("LINKERD2_PROXY_INBOUND_POLICY_INITIAL_TIMEOUT", "3s")?,
            }),
        };

        let authority_labels = vars
            .get("LINKERD2_PROXY_INBOUND_METRICS_AUTHORITY_LABELS")
            .unwrap_or_default();
        if !authority_labels.is_empty() && !authority_labels.eq_ignore_ascii_case("unsafe") {
            return Err(ConfigError {
                name: "LINKERD2_PROXY_INBOUND_METRICS_AUTHORITY_LABELS".into(),
                value: authority_labels.into(),
                expected: "`unsafe` or empty",
            });
        }

        let config = Self {
            inbound: ProxyConfig {
                listen_addr: addr("LINKERD2_PROXY_INBOUND_LISTEN_ADDR", "0.0.0.0:4143")?,
                also_listen_addr: None,
                backlog: backlog("INBOUND")?,
                max_connections: count("LINKERD2_PROXY_INBOUND_MAX_CONNECTIONS", "10000")?,
                accept: socket("INBOUND", "ACCEPT")?,
                connect: socket("INBOUND", "CONNECT")?,
                detect_timeout: duration("LINKERD2_PROXY_INBOUND_DETECT_TIMEOUT", "10s")?,
                server_first_delay: Some(duration(
                    "LINKERD2_PROXY_INBOUND_SERVER_FIRST_DELAY",
                    "100ms",
                )?)
                .filter(|d| !d.is_zero()),
                client: client("INBOUND", "300ms")?,
                server: server("INBOUND")?,
            },
            outbound: ProxyConfig {
                listen_addr: outbound_addr,
                also_listen_addr: outbound_also,
                backlog: backlog("OUTBOUND")?,
                max_connections: count("LINKERD2_PROXY_OUTBOUND_MAX_CONNECTIONS", "10000")?,
                accept: socket("OUTBOUND", "ACCEPT")?,
                connect: socket("OUTBOUND", "CONNECT")?,
                detect_timeout: duration("LINKERD2_PROXY_OUTBOUND_DETECT_TIMEOUT", "10s")?,
                server_first_delay: Some(duration(
                    "LINKERD2_PROXY_OUTBOUND_SERVER_FIRST_DELAY",
                    "100ms",
                )?)
                .filter(|d| !d.is_zero()),
                client: client("OUTBOUND", "1s")?,
                server: server("OUTBOUND")?,
            },
            admin_listen_addr: addr("LINKERD2_PROXY_ADMIN_LISTEN_ADDR", "127.0.0.1:4191")?,
            log_filter,
            log_format,
            opaque_ports: vars.parse(
                "LINKERD2_PROXY_INBOUND_PORTS_DISABLE_PROTOCOL_DETECTION",
                DEFAULT_OPAQUE_PORTS,
                PortSet::parse,
            )?,
            workers,
            shutdown_grace_period: duration("LINKERD2_PROXY_SHUTDOWN_GRACE_PERIOD", "2m")?,
            metrics: linkerd_metrics::Limits {
                max_series: count("LINKERD2_PROXY_METRICS_MAX_SERIES", "2000")?,
                retain_idle: duration("LINKERD2_PROXY_METRICS_RETAIN_IDLE", "10m")?,
            },
            inbound_authority_labels: !authority_labels.is_empty(),
            // Exactly `true` or `false`, as linkerd2-proxy.
            shutdown_endpoint_enabled: vars.parse(
                "LINKERD2_PROXY_SHUTDOWN_ENDPOINT_ENABLED",
                "false",
                |v| match v {
                    "true" => Ok(true),
                    "false" => Ok(false),
                    _ => Err("`true` or `false`"),
                },
            )?,
            identity: identity(&vars)?,
            policy,
            policy_control,
            inbound_ips,
            control_streams,
            discovery: match vars.get("LINKERD2_PROXY_DESTINATION_SVC_ADDR") {
                None => None,
                Some(_) => Some(DiscoveryConfig {
                    addr: vars.parse("LINKERD2_PROXY_DESTINATION_SVC_ADDR", "", parse_host_port)?,
                    name: control_name(&vars, "DESTINATION")?,
                    context: vars
                        .get("LINKERD2_PROXY_DESTINATION_CONTEXT")
                        .unwrap_or_default()
                        .to_string(),
                    suffixes: vars.parse(
                        "LINKERD2_PROXY_DESTINATION_PROFILE_SUFFIXES",
                        "svc.cluster.local.",
                        parse_suffixes,
                    )?,
                    profile_networks: match vars.get("LINKERD2_PROXY_DESTINATION_PROFILE_NETWORKS")
                    {
                        Some(_) => Some(vars.parse(
                            "LINKERD2_PROXY_DESTINATION_PROFILE_NETWORKS",
                            "",
                            crate::inbound::policy::parse_networks,
                        )?),
                        None => None,
                    },
                    idle_timeout: duration("LINKERD2_PROXY_OUTBOUND_DISCOVERY_IDLE_TIMEOUT", "5s")?,
                    queue_capacity: count("LINKERD2_PROXY_OUTBOUND_HTTP_QUEUE_CAPACITY", "10000")?,
                    failfast_timeout: match vars
                        .get("LINKERD2_PROXY_OUTBOUND_HTTP_QUEUE_FAILFAST_TIMEOUT")
                    {
                        Some(_) => {
                            duration("LINKERD2_PROXY_OUTBOUND_HTTP_QUEUE_FAILFAST_TIMEOUT", "")?
                        }
                        // Ours, before the upstream name was read.
                        None => duration("LINKERD2_PROXY_OUTBOUND_HTTP_FAILFAST_TIMEOUT", "3s")?,
                    },
                    profile_initial_timeout: duration(
                        "LINKERD2_PROXY_DESTINATION_PROFILE_INITIAL_TIMEOUT",
                        "500ms",
                    )?,
                    dns_min_ttl: optional("LINKERD2_PROXY_DNS_MIN_TTL")?,
                    dns_max_ttl: optional("LINKERD2_PROXY_DNS_MAX_TTL")?,
                    control_streams,
                }),
            },
            env: env.clone(),
            warnings: Vec::new(),
        };

        // What was set but not (or not yet) used, named once each.
        let not_implemented: Vec<&str> = NOT_IMPLEMENTED
            .iter()
            .filter_map(|(name, off)| {
                let full = format!("{PREFIX}{name}");
                let v = vars.get(&full)?;
                match off {
                    Some(off) if v.trim().eq_ignore_ascii_case(off) => None,
                    _ => Some(*name),
                }
            })
            .collect();
        if !not_implemented.is_empty() {
            warnings.push(format!(
                "these variables are accepted, but this proxy does not implement their features yet: {}",
                not_implemented
                    .iter()
                    .map(|n| format!("{PREFIX}{n}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        let unknown = vars.unknown();
        if !unknown.is_empty() {
            warnings.push(format!(
                "unknown variables (typos?) are ignored: {}",
                unknown.join(", ")
            ));
        }
        for (svc, set) in [
            ("DESTINATION", config.discovery.is_some()),
            ("IDENTITY", config.identity.is_some()),
            ("POLICY", config.policy_control.is_some()),
        ] {
            if !set {
                let feature = match svc {
                    "DESTINATION" => "outbound traffic goes to original destinations only",
                    "IDENTITY" => "traffic between proxies is plaintext",
                    _ => "every inbound port gets the default policy",
                };
                warnings.push(format!(
                    "LINKERD2_PROXY_{svc}_SVC_ADDR is not set: {feature}"
                ));
            }
        }
        Ok(Self { warnings, ..config })
    }
}

/// Worker threads as linkerd2-proxy counts them: `_CORES_MAX` if set, else
/// `round(CPUs × _CORES_MAX_RATIO)` if set, else 1; at least `_CORES_MIN` (fallback `_CORES`,
/// default 1); at most the CPUs. A value that does not parse is ignored with a warning.
fn workers(vars: &Vars<'_>, cpus: usize, warnings: &mut Vec<String>) -> usize {
    /// The value if it is set and good; a bad one is a warning.
    fn read<T: FromStr>(
        vars: &Vars<'_>,
        warnings: &mut Vec<String>,
        name: &str,
        good: fn(&T) -> bool,
        expected: &str,
    ) -> Option<T> {
        let v = vars.get(name)?.trim();
        let parsed = v.parse::<T>().ok().filter(good);
        if parsed.is_none() {
            warnings.push(format!("ignoring {name}={v:?}: expected {expected}"));
        }
        parsed
    }
    let mut count = |name| {
        read(
            vars,
            warnings,
            name,
            |n: &usize| *n > 0,
            "a positive integer",
        )
    };
    let (min, cores, max) = (
        count("LINKERD2_PROXY_CORES_MIN"),
        count("LINKERD2_PROXY_CORES"),
        count("LINKERD2_PROXY_CORES_MAX"),
    );
    let ratio = read(
        vars,
        warnings,
        "LINKERD2_PROXY_CORES_MAX_RATIO",
        |r: &f64| *r > 0.0 && *r <= 1.0,
        "a ratio in (0, 1]",
    );
    let min = min.or(cores).unwrap_or(1);
    // A ratio in (0, 1] times the CPU count is finite and non-negative.
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    let ratio = ratio.map(|r| (cpus as f64 * r).round() as usize);
    let want = max.or(ratio).unwrap_or(1);
    want.max(min).min(cpus).max(1)
}

impl StreamLimits {
    /// linkerd2-proxy requires `initial <= idle <= lifetime` where set.
    fn check(&self) -> Result<(), ConfigError> {
        let pairs = [
            (
                "INITIAL_TIMEOUT",
                self.initial_timeout,
                "IDLE_TIMEOUT",
                self.idle_timeout,
            ),
            ("IDLE_TIMEOUT", self.idle_timeout, "LIFETIME", self.lifetime),
            (
                "INITIAL_TIMEOUT",
                self.initial_timeout,
                "LIFETIME",
                self.lifetime,
            ),
        ];
        for (a, av, _, bv) in pairs {
            if let (Some(av), Some(bv)) = (av, bv) {
                if av > bv {
                    return Err(ConfigError {
                        name: format!("{PREFIX}CONTROL_STREAM_{a}"),
                        value: format!("{av:?}"),
                        expected: "CONTROL_STREAM_INITIAL_TIMEOUT <= _IDLE_TIMEOUT <= _LIFETIME",
                    });
                }
            }
        }
        Ok(())
    }
}

/// Comma-separated ports and ranges, expanded (at most 65535 ports).
fn parse_port_list(v: &str) -> Result<Vec<u16>, &'static str> {
    let set = PortSet::parse(v)?;
    Ok((1..=u16::MAX).filter(|p| set.contains(*p)).collect())
}

/// The identity settings: all of them, or none (plaintext).
///
/// The injector names the identity with `_IDENTITY_LOCAL_NAME` (also the server name peers
/// use as SNI); without it, `_IDENTITY_SERVER_ID` and `_IDENTITY_SERVER_NAME` (equal when both
/// are set) name it, as linkerd2-proxy accepts.
fn identity(vars: &Vars<'_>) -> Result<Option<IdentityConfig>, ConfigError> {
    const NAMES: [&str; 3] = [
        "LINKERD2_PROXY_IDENTITY_LOCAL_NAME",
        "LINKERD2_PROXY_IDENTITY_SERVER_ID",
        "LINKERD2_PROXY_IDENTITY_SERVER_NAME",
    ];
    const REQUIRED: [&str; 3] = [
        "LINKERD2_PROXY_IDENTITY_SVC_ADDR",
        "LINKERD2_PROXY_IDENTITY_TRUST_ANCHORS",
        "LINKERD2_PROXY_IDENTITY_TOKEN_FILE",
    ];
    let named = NAMES.iter().any(|v| vars.get(v).is_some());
    let dir = vars.get("LINKERD2_PROXY_IDENTITY_DIR").map(PathBuf::from);
    if !named && !REQUIRED.iter().any(|v| vars.get(v).is_some()) {
        return Ok(None);
    }
    if !named {
        return Err(ConfigError {
            name: NAMES[0].to_string(),
            value: String::new(),
            expected: "to be set: identity needs the local name (or _IDENTITY_SERVER_ID)",
        });
    }
    if let Some(missing) = REQUIRED.iter().find(|v| vars.get(v).is_none()) {
        return Err(ConfigError {
            name: missing.to_string(),
            value: String::new(),
            expected: "to be set: identity needs LINKERD2_PROXY_IDENTITY_SVC_ADDR, _TRUST_ANCHORS, _TOKEN_FILE and _LOCAL_NAME together",
        });
    }
    let id = |name: &str| {
        vars.parse(name, "", |v| {
            Id::parse(v).map_err(|_| "a DNS-like identity name")
        })
    };
    let local = match vars.get(NAMES[0]) {
        Some(_) => id(NAMES[0])?,
        None => {
            let (server_id, server_name) = (vars.get(NAMES[1]), vars.get(NAMES[2]));
            let id = id(if server_id.is_some() {
                NAMES[1]
            } else {
                NAMES[2]
            })?;
            if let (Some(a), Some(b)) = (server_id, server_name) {
                if a.trim() != b.trim() {
                    return Err(ConfigError {
                        name: NAMES[2].to_string(),
                        value: b.to_string(),
                        expected: "the same name as LINKERD2_PROXY_IDENTITY_SERVER_ID",
                    });
                }
            }
            id
        }
    };
    let duration = |name: &str, default: &str| vars.parse(name, default, parse_duration);
    Ok(Some(IdentityConfig {
        server_name: local.clone(),
        id: local,
        trust_anchors: vars.parse("LINKERD2_PROXY_IDENTITY_TRUST_ANCHORS", "", |v| {
            TrustAnchors::from_pem(v).map_err(|_| "a PEM bundle of CA certificates")
        })?,
        token_file: vars.parse("LINKERD2_PROXY_IDENTITY_TOKEN_FILE", "", |v| match v {
            "" => Err("a file path"),
            v => Ok(PathBuf::from(v)),
        })?,
        dir: dir.filter(|d| d.join("key.p8").exists() && d.join("csr.der").exists()),
        control: ControlAddr {
            addr: vars.parse("LINKERD2_PROXY_IDENTITY_SVC_ADDR", "", parse_host_port)?,
            name: control_name(vars, "IDENTITY")?,
        },
        min_refresh: duration("LINKERD2_PROXY_IDENTITY_MIN_REFRESH", "10s")?,
        max_refresh: duration("LINKERD2_PROXY_IDENTITY_MAX_REFRESH", "24h")?,
    }))
}

/// `LINKERD2_PROXY_{svc}_SVC_NAME`, the control-plane service's TLS identity; without it the
/// address must be loopback (plaintext never leaves the pod).
fn control_name(vars: &Vars<'_>, svc: &str) -> Result<Option<Id>, ConfigError> {
    let name_var = format!("{PREFIX}{svc}_SVC_NAME");
    if vars.get(&name_var).is_some_and(|v| !v.trim().is_empty()) {
        return vars
            .parse(&name_var, "", |v| {
                Id::parse(v).map_err(|_| "a DNS-like identity name")
            })
            .map(Some);
    }
    let addr_var = format!("{PREFIX}{svc}_SVC_ADDR");
    vars.parse(&addr_var, "", |v| match is_loopback(v) {
        true => Ok(None),
        false => Err("a loopback address unless the service's _SVC_NAME is set (a control plane elsewhere is reached over TLS)"),
    })
}

/// Whether `host:port` names this host.
fn is_loopback(host_port: &str) -> bool {
    if let Ok(a) = host_port.parse::<SocketAddr>() {
        return a.ip().is_loopback();
    }
    host_port
        .rsplit_once(':')
        .is_some_and(|(h, _)| h.trim_end_matches('.').eq_ignore_ascii_case("localhost"))
}

/// The environment, read one variable at a time; remembers every name asked about, so the
/// names nobody asked about are reported as unknown.
struct Vars<'a> {
    env: &'a HashMap<String, String>,
    read: RefCell<BTreeSet<String>>,
}

impl<'a> Vars<'a> {
    fn new(env: &'a HashMap<String, String>) -> Self {
        Self {
            env,
            read: RefCell::new(BTreeSet::new()),
        }
    }

    /// The variable's value, if set.
    fn get(&self, name: &str) -> Option<&'a str> {
        self.read.borrow_mut().insert(name.to_string());
        self.env.get(name).map(String::as_str)
    }

    /// Counts these names (without the prefix) as known, read or not.
    fn known(&self, names: &[&str]) {
        let mut read = self.read.borrow_mut();
        read.extend(names.iter().map(|n| format!("{PREFIX}{n}")));
    }

    /// Parses the variable (or `default` when it is unset), naming it on failure.
    fn parse<T>(
        &self,
        name: &str,
        default: &str,
        f: impl Fn(&str) -> Result<T, &'static str>,
    ) -> Result<T, ConfigError> {
        let value = self.get(name).unwrap_or(default);
        f(value.trim()).map_err(|expected| ConfigError {
            name: name.to_string(),
            value: value.to_string(),
            expected,
        })
    }

    /// The `LINKERD2_PROXY_*` names set that nothing read, sorted.
    fn unknown(&self) -> Vec<String> {
        let read = self.read.borrow();
        let mut unknown: Vec<String> = self
            .env
            .keys()
            .filter(|k| k.starts_with(PREFIX) && !read.contains(*k))
            .cloned()
            .collect();
        unknown.sort();
        unknown
    }
}

fn parse_addr(v: &str) -> Result<SocketAddr, &'static str> {
    SocketAddr::from_str(v).map_err(|_| "an IP address and port, like 0.0.0.0:4143 or [::]:4143")
}

/// Parses `500ms`, `10s`, `2m`, `1h` (and `0`).
pub fn parse_duration(v: &str) -> Result<Duration, &'static str> {
    const EXPECTED: &str = "a duration like 500ms, 10s, 2m or 1h";
    if v == "0" {
        return Ok(Duration::ZERO);
    }
    let split = v.find(|c: char| !c.is_ascii_digit()).ok_or(EXPECTED)?;
    let (n, unit) = v.split_at(split);
    let n: u64 = n.parse().map_err(|_| EXPECTED)?;
    let secs = |mult: u64| n.checked_mul(mult).map(Duration::from_secs).ok_or(EXPECTED);
    match unit {
        "ms" => Ok(Duration::from_millis(n)),
        "s" => secs(1),
        "m" => secs(60),
        "h" => secs(3600),
        "d" => secs(86400),
        _ => Err(EXPECTED),
    }
}

/// `host:port`, where host is a DNS name or an IP.
fn parse_host_port(v: &str) -> Result<String, &'static str> {
    const EXPECTED: &str = "a host:port address like linkerd-dst.linkerd.svc.cluster.local:8086";
    if v.parse::<SocketAddr>().is_ok() {
        return Ok(v.to_string());
    }
    let (host, port) = v.rsplit_once(':').ok_or(EXPECTED)?;
    let host_ok = !host.is_empty()
        && host
            .split('.')
            .filter(|l| !l.is_empty())
            .all(|l| l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'));
    match (host_ok, port.parse::<u16>()) {
        (true, Ok(p)) if p > 0 => Ok(v.to_string()),
        _ => Err(EXPECTED),
    }
}

/// Comma-separated DNS suffixes, normalized to lower case with a trailing dot (`.` is all).
fn parse_suffixes(v: &str) -> Result<Vec<String>, &'static str> {
    v.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| {
            let s = s.to_ascii_lowercase();
            let ok = s == "."
                || s.trim_end_matches('.').split('.').all(|l| {
                    !l.is_empty() && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
                });
            if !ok {
                return Err("comma-separated DNS suffixes like svc.cluster.local.");
            }
            Ok(if s.ends_with('.') { s } else { format!("{s}.") })
        })
        .collect()
}

fn parse_positive(v: &str) -> Result<usize, &'static str> {
    match v.parse::<usize>() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err("a positive integer"),
    }
}

fn parse_bool(v: &str) -> Result<bool, &'static str> {
    // linkerd2-proxy accepts any case for its booleans.
    match v.to_ascii_lowercase().as_str() {
        "true" => Ok(true),
        "false" => Ok(false),
        _ => Err("`true` or `false`"),
    }
}

fn parse_log_filter(v: &str) -> Result<String, &'static str> {
    tracing_subscriber::EnvFilter::try_new(v)
        .map(|_| v.to_string())
        .map_err(|_| "a log filter like `warn,linkerd=info`")
}

#[cfg(test)]
mod tests;
