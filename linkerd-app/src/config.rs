//! Configuration from `LINKERD2_PROXY_*` environment variables.
//!
//! [`Config::from_env`] is a pure function of a key/value map, so every variable is unit-tested
//! without touching the process environment.

use crate::PortSet;
use linkerd_identity::{Id, TrustAnchors};
use std::{collections::HashMap, net::SocketAddr, path::PathBuf, str::FromStr, time::Duration};

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
    /// Worker threads; `None` uses every available core.
    pub cores: Option<usize>,
    /// After SIGTERM, how long in-flight requests and connections may take to finish.
    pub shutdown_grace_period: Duration,
    /// Whether `POST /shutdown` on the admin port is served.
    pub shutdown_endpoint_enabled: bool,
    /// HTTP server limits, shared by both directions.
    pub server: linkerd_http::ServerConfig,
    /// Service discovery through the Destination API; `None` forwards to original
    /// destinations only.
    pub discovery: Option<DiscoveryConfig>,
    /// The proxy's identity; `None` runs plaintext (meshed traffic is not mTLS).
    pub identity: Option<IdentityConfig>,
    /// Inbound authorization.
    pub policy: crate::inbound::policy::Policy,
    /// Every `LINKERD2_PROXY_*` variable as given, for the admin `/env.json` endpoint.
    pub env: HashMap<String, String>,
}

/// One direction's listener and client settings.
#[derive(Clone, Debug)]
pub struct ProxyConfig {
    /// The listener.
    pub listen_addr: SocketAddr,
    /// How long protocol detection (and a ClientHello) may take.
    pub detect_timeout: Duration,
    /// The client pool's settings.
    pub client: linkerd_http::ClientConfig,
}

/// The proxy's identity and how it gets its certificate.
#[derive(Clone, Debug)]
pub struct IdentityConfig {
    /// The local identity (`LINKERD2_PROXY_IDENTITY_SERVER_ID`).
    pub id: Id,
    /// The name peers use as SNI to reach this proxy (`_SERVER_NAME`, default the identity).
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

impl Config {
    /// Reads the configuration from a map of environment variables.
    pub fn from_env(env: &HashMap<String, String>) -> Result<Self, ConfigError> {
        let vars = Vars(env);
        let addr = |name: &str, default: &str| vars.parse(name, default, parse_addr);
        let duration = |name: &str, default: &str| vars.parse(name, default, parse_duration);
        let count = |name: &str, default: &str| vars.parse(name, default, parse_positive);
        let optional = |name: &str| match env.contains_key(name) {
            true => vars.parse(name, "", parse_duration).map(Some),
            false => Ok(None),
        };

        let cores = match env.contains_key("LINKERD2_PROXY_CORES") {
            true => Some(vars.parse("LINKERD2_PROXY_CORES", "", parse_positive)?),
            false => None,
        };
        let workers = cores.unwrap_or_else(|| {
            std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
        });
        let u32_in = |name: &str, default: &str, lo: u32, hi: u32, expected: &'static str| {
            vars.parse(name, default, move |v| {
                v.parse::<u32>()
                    .ok()
                    .filter(|n| (lo..=hi).contains(n))
                    .ok_or(expected)
            })
        };
        let h2 = linkerd_http::H2Settings {
            initial_stream_window_size: u32_in(
                "LINKERD2_PROXY_HTTP2_INITIAL_STREAM_WINDOW_SIZE",
                "1048576",
                1,
                (1 << 31) - 1,
                "a window size in bytes, 1 to 2147483647",
            )?,
            initial_connection_window_size: u32_in(
                "LINKERD2_PROXY_HTTP2_INITIAL_CONNECTION_WINDOW_SIZE",
                "4194304",
                1,
                (1 << 31) - 1,
                "a window size in bytes, 1 to 2147483647",
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
                max_idle_per_endpoint: count(
                    &format!("{PREFIX}{dir}_MAX_IDLE_CONNS_PER_ENDPOINT"),
                    "1000",
                )?,
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
            })
        };

        let log_filter = vars.parse("LINKERD2_PROXY_LOG", "warn,linkerd=info", parse_log_filter)?;
        let log_format = vars.parse("LINKERD2_PROXY_LOG_FORMAT", "plain", |v| {
            match v.to_ascii_lowercase().as_str() {
                "plain" => Some(LogFormat::Plain),
                "json" => Some(LogFormat::Json),
                _ => None,
            }
            .ok_or("`plain` or `json`")
        })?;

        Ok(Self {
            inbound: ProxyConfig {
                listen_addr: addr("LINKERD2_PROXY_INBOUND_LISTEN_ADDR", "0.0.0.0:4143")?,
                detect_timeout: duration("LINKERD2_PROXY_INBOUND_DETECT_TIMEOUT", "10s")?,
                client: client("INBOUND", "300ms")?,
            },
            outbound: ProxyConfig {
                listen_addr: addr("LINKERD2_PROXY_OUTBOUND_LISTEN_ADDR", "127.0.0.1:4140")?,
                detect_timeout: duration("LINKERD2_PROXY_OUTBOUND_DETECT_TIMEOUT", "10s")?,
                client: client("OUTBOUND", "1s")?,
            },
            admin_listen_addr: addr("LINKERD2_PROXY_ADMIN_LISTEN_ADDR", "127.0.0.1:4191")?,
            log_filter,
            log_format,
            opaque_ports: vars.parse(
                "LINKERD2_PROXY_INBOUND_PORTS_DISABLE_PROTOCOL_DETECTION",
                DEFAULT_OPAQUE_PORTS,
                PortSet::parse,
            )?,
            cores,
            shutdown_grace_period: duration("LINKERD2_PROXY_SHUTDOWN_GRACE_PERIOD", "2m")?,
            shutdown_endpoint_enabled: vars.parse(
                "LINKERD2_PROXY_SHUTDOWN_ENDPOINT_ENABLED",
                "false",
                parse_bool,
            )?,
            server: linkerd_http::ServerConfig {
                h1_header_read_timeout: duration(
                    "LINKERD2_PROXY_HTTP1_HEADER_READ_TIMEOUT",
                    "30s",
                )?,
                h1_max_buf_size: vars.parse(
                    "LINKERD2_PROXY_HTTP1_MAX_HEADER_BYTES",
                    "409600",
                    |v| {
                        parse_positive(v).and_then(|n| {
                            // hyper's floor for an HTTP/1 read buffer.
                            if n >= 8192 {
                                Ok(n)
                            } else {
                                Err("a number of bytes of at least 8192")
                            }
                        })
                    },
                )?,
                h2_keep_alive_interval: Some(duration(
                    "LINKERD2_PROXY_INBOUND_SERVER_HTTP2_KEEP_ALIVE_INTERVAL",
                    "10s",
                )?)
                .filter(|d| !d.is_zero()),
                h2_keep_alive_timeout: duration(
                    "LINKERD2_PROXY_INBOUND_SERVER_HTTP2_KEEP_ALIVE_TIMEOUT",
                    "20s",
                )?,
                h2_max_concurrent_streams: vars.parse(
                    "LINKERD2_PROXY_HTTP2_MAX_CONCURRENT_STREAMS",
                    "1000",
                    |v| {
                        parse_positive(v)
                            .and_then(|n| u32::try_from(n).map_err(|_| "a positive 32-bit integer"))
                    },
                )?,
                h2,
            },
            identity: identity(&vars)?,
            policy: crate::inbound::policy::Policy {
                default: vars.parse(
                    "LINKERD2_PROXY_INBOUND_DEFAULT_POLICY",
                    "all-unauthenticated",
                    |v| v.parse(),
                )?,
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
            },
            discovery: match env.get("LINKERD2_PROXY_DESTINATION_SVC_ADDR") {
                None => None,
                Some(_) => Some(DiscoveryConfig {
                    addr: vars.parse("LINKERD2_PROXY_DESTINATION_SVC_ADDR", "", parse_host_port)?,
                    name: control_name(&vars, "DESTINATION")?,
                    context: env
                        .get("LINKERD2_PROXY_DESTINATION_CONTEXT")
                        .cloned()
                        .unwrap_or_default(),
                    suffixes: vars.parse(
                        "LINKERD2_PROXY_DESTINATION_PROFILE_SUFFIXES",
                        "svc.cluster.local.",
                        parse_suffixes,
                    )?,
                    idle_timeout: duration("LINKERD2_PROXY_OUTBOUND_DISCOVERY_IDLE_TIMEOUT", "5s")?,
                    queue_capacity: count("LINKERD2_PROXY_OUTBOUND_HTTP_QUEUE_CAPACITY", "10000")?,
                    failfast_timeout: duration(
                        "LINKERD2_PROXY_OUTBOUND_HTTP_FAILFAST_TIMEOUT",
                        "3s",
                    )?,
                    profile_initial_timeout: duration(
                        "LINKERD2_PROXY_DESTINATION_PROFILE_INITIAL_TIMEOUT",
                        "500ms",
                    )?,
                    dns_min_ttl: optional("LINKERD2_PROXY_DNS_MIN_TTL")?,
                    dns_max_ttl: optional("LINKERD2_PROXY_DNS_MAX_TTL")?,
                }),
            },
            env: env
                .iter()
                .filter(|(k, _)| k.starts_with(PREFIX))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        })
    }
}

/// The identity settings: all of them, or none (plaintext).
fn identity(vars: &Vars<'_>) -> Result<Option<IdentityConfig>, ConfigError> {
    const REQUIRED: [&str; 4] = [
        "LINKERD2_PROXY_IDENTITY_SVC_ADDR",
        "LINKERD2_PROXY_IDENTITY_TRUST_ANCHORS",
        "LINKERD2_PROXY_IDENTITY_SERVER_ID",
        "LINKERD2_PROXY_IDENTITY_TOKEN_FILE",
    ];
    if !REQUIRED.iter().any(|v| vars.0.contains_key(*v)) {
        return Ok(None);
    }
    if let Some(missing) = REQUIRED.iter().find(|v| !vars.0.contains_key(**v)) {
        return Err(ConfigError {
            name: missing.to_string(),
            value: String::new(),
            expected: "to be set: identity needs LINKERD2_PROXY_IDENTITY_SVC_ADDR, _TRUST_ANCHORS, _SERVER_ID and _TOKEN_FILE together",
        });
    }
    let id = |name: &str, default: &str| {
        vars.parse(name, default, |v| {
            Id::parse(v).map_err(|_| "a DNS-like identity name")
        })
    };
    let local = id("LINKERD2_PROXY_IDENTITY_SERVER_ID", "")?;
    let dir = vars.0.get("LINKERD2_PROXY_IDENTITY_DIR").map(PathBuf::from);
    let duration = |name: &str, default: &str| vars.parse(name, default, parse_duration);
    Ok(Some(IdentityConfig {
        server_name: id("LINKERD2_PROXY_IDENTITY_SERVER_NAME", local.as_str())?,
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
    if vars.0.get(&name_var).is_some_and(|v| !v.trim().is_empty()) {
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

/// The environment, read one variable at a time.
struct Vars<'a>(&'a HashMap<String, String>);

impl Vars<'_> {
    /// Parses the variable (or `default` when it is unset), naming it on failure.
    fn parse<T>(
        &self,
        name: &str,
        default: &str,
        f: impl Fn(&str) -> Result<T, &'static str>,
    ) -> Result<T, ConfigError> {
        let value = self.0.get(name).map(String::as_str).unwrap_or(default);
        f(value.trim()).map_err(|expected| ConfigError {
            name: name.to_string(),
            value: value.to_string(),
            expected,
        })
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
