//! A service's outbound policy in the mesh file, as its `HTTPRoute`s and annotations would
//! make it in a cluster: served by `OutboundPolicies.Watch` ([`crate::outbound`]).
//!
//! ```yaml
//! services:
//!   - name: web.ns.svc.cluster.local
//!     port: 8080
//!     endpoints: [...]
//!     policy:
//!       queue: { capacity: 100, failfast_timeout: 3s }
//!       failure_accrual: { consecutive_failures: 7, backoff: { min: 1s, max: 60s, jitter: 0.5 } }
//!       routes:
//!         - name: canary
//!           hosts: [web.example.com, "*.example.org"]
//!           matches:
//!             - { path_prefix: /api, method: POST, headers: { x-canary: "yes" }, query: { v: "2" } }
//!           filters:
//!             - request_header_modifier: { set: { x-route: canary }, remove: [x-debug] }
//!           backends:
//!             - { service: web-v2.ns.svc.cluster.local:8080, weight: 10 }
//!             - { service: web.ns.svc.cluster.local:8080, weight: 90 }
//!           timeouts: { request: 2s, response: 1s }
//!           retry: { max_retries: 3, statuses: [5xx], timeout: 500ms }
//! ```

use super::ConfigError;
use serde::Deserialize;
use std::{collections::BTreeMap, net::SocketAddr, time::Duration};

/// What `OutboundPolicies` says of a service.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutboundConfig {
    /// How the proxy treats connections to it: `detect` (default), `http1`, `http2`, `opaque`.
    #[serde(default)]
    pub protocol: OutboundProtocol,
    /// HTTP routes; none: one match-all route to the service itself.
    #[serde(default)]
    pub routes: Vec<HttpRouteConfig>,
    /// Every backend's queue; default the policy controller's (100, 3s).
    #[serde(default)]
    pub queue: Option<QueueConfig>,
    #[serde(default)]
    pub failure_accrual: Option<FailureAccrualConfig>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OutboundProtocol {
    #[default]
    Detect,
    Http1,
    Http2,
    Opaque,
}

/// An `HTTPRoute` with one rule.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpRouteConfig {
    pub name: String,
    /// Exact names, or `*.suffix`; none: any host.
    #[serde(default)]
    pub hosts: Vec<String>,
    /// Any of them; none: every request.
    #[serde(default)]
    pub matches: Vec<HttpMatchConfig>,
    /// Each a one-key map: `- failure_injector: { status: 503 }`.
    #[serde(default, with = "serde_yaml::with::singleton_map_recursive")]
    pub filters: Vec<FilterConfig>,
    /// A weighted split; none: the service itself.
    #[serde(default)]
    pub backends: Vec<BackendConfig>,
    #[serde(default)]
    pub timeouts: TimeoutsConfig,
    #[serde(default)]
    pub retry: Option<RetryConfig>,
    /// Whether `l5d-retry-*` and `l5d-timeout` request headers are honoured.
    #[serde(default)]
    pub allow_l5d_request_headers: bool,
}

/// Every part must match; at most one path kind.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpMatchConfig {
    #[serde(default)]
    pub path_exact: Option<String>,
    #[serde(default)]
    pub path_prefix: Option<String>,
    #[serde(default)]
    pub path_regex: Option<String>,
    /// Header name to exact value.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Header name to a regex of the value.
    #[serde(default)]
    pub header_regexes: BTreeMap<String, String>,
    /// Query parameter to exact value.
    #[serde(default)]
    pub query: BTreeMap<String, String>,
    #[serde(default)]
    pub method: Option<String>,
}

/// A route filter (one key per item).
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum FilterConfig {
    RequestHeaderModifier(HeaderModifierConfig),
    ResponseHeaderModifier(HeaderModifierConfig),
    /// Answers `status` (with `message`) to a `ratio` of the requests (default all).
    FailureInjector {
        status: u16,
        #[serde(default)]
        message: String,
        #[serde(default)]
        ratio: Option<f64>,
    },
    /// Answers a redirect: what is unset is the request's own.
    Redirect {
        #[serde(default)]
        scheme: Option<String>,
        #[serde(default)]
        host: Option<String>,
        #[serde(default)]
        port: Option<u16>,
        /// Replaces the whole path.
        #[serde(default)]
        path: Option<String>,
        /// Replaces the prefix the route matched.
        #[serde(default)]
        path_prefix: Option<String>,
        /// Default 302.
        #[serde(default)]
        status: Option<u16>,
    },
}

/// Applied in order: add, set, remove.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HeaderModifierConfig {
    #[serde(default)]
    pub add: BTreeMap<String, String>,
    #[serde(default)]
    pub set: BTreeMap<String, String>,
    #[serde(default)]
    pub remove: Vec<String>,
}

/// A backend of a split: a service of the mesh file (`name:port`, balanced over its
/// endpoints), or one address forwarded to as is.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackendConfig {
    #[serde(default)]
    pub service: Option<String>,
    #[serde(default)]
    pub addr: Option<SocketAddr>,
    #[serde(default = "one")]
    pub weight: u32,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TimeoutsConfig {
    /// The whole exchange, request to response end.
    #[serde(default, with = "duration")]
    pub request: Option<Duration>,
    /// From the request's end to the response's end.
    #[serde(default, with = "duration")]
    pub response: Option<Duration>,
    /// No frame either way for this long.
    #[serde(default, with = "duration")]
    pub idle: Option<Duration>,
}

#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetryConfig {
    pub max_retries: u32,
    /// Bodies larger than this are not retried.
    #[serde(default = "retry_body")]
    pub max_request_bytes: u32,
    /// `5xx`, `NNN` or `NNN-MMM`; default `5xx`.
    #[serde(default)]
    pub statuses: Vec<String>,
    /// Each attempt's.
    #[serde(default, with = "duration")]
    pub timeout: Option<Duration>,
    #[serde(default)]
    pub backoff: Option<BackoffConfig>,
}

#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackoffConfig {
    #[serde(with = "duration")]
    pub min: Option<Duration>,
    #[serde(with = "duration")]
    pub max: Option<Duration>,
    #[serde(default)]
    pub jitter: f32,
}

#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QueueConfig {
    pub capacity: u32,
    #[serde(with = "duration")]
    pub failfast_timeout: Option<Duration>,
}

#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FailureAccrualConfig {
    /// Ejected after this many failures in a row.
    pub consecutive_failures: u32,
    #[serde(default)]
    pub backoff: Option<BackoffConfig>,
    /// Never eject below this many ready endpoints.
    #[serde(default)]
    pub min_ready_endpoints: u32,
}

fn one() -> u32 {
    1
}

fn retry_body() -> u32 {
    64 * 1024
}

/// Durations as the command line writes them (`250ms`, `3s`, `2m`, `1h`, `1d`; not zero).
mod duration {
    use serde::{Deserialize, Deserializer};
    use std::time::Duration;

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        let s = String::deserialize(d)?;
        crate::cli::parse_duration(&s)
            .map(Some)
            .map_err(serde::de::Error::custom)
    }
}

/// A retry status condition: `5xx`, `NNN` or `NNN-MMM`, as an inclusive range.
pub fn status_range(s: &str) -> Option<(u16, u16)> {
    let code = |c: &str| c.parse::<u16>().ok().filter(|c| (100..=599).contains(c));
    match s.trim() {
        "5xx" => Some((500, 599)),
        "gateway-error" => Some((502, 504)),
        r => match r.split_once('-') {
            Some((a, b)) => Some((code(a)?, code(b)?)).filter(|(a, b)| a <= b),
            None => code(r).map(|c| (c, c)),
        },
    }
}

impl OutboundConfig {
    /// Checks what the proxy would reject, naming the service `name`.
    pub(super) fn validate(&self, name: &str) -> Result<(), ConfigError> {
        let bad = |reason| ConfigError::Invalid {
            name: name.to_string(),
            reason,
        };
        let mut names = std::collections::HashSet::new();
        for r in &self.routes {
            if r.name.is_empty() || !names.insert(r.name.as_str()) {
                return Err(bad("route names must be given and unique"));
            }
            for m in &r.matches {
                let paths = [&m.path_exact, &m.path_prefix, &m.path_regex];
                if paths.iter().filter(|p| p.is_some()).count() > 1 {
                    return Err(bad(
                        "a match takes one of path_exact, path_prefix, path_regex",
                    ));
                }
                let regexes = m.path_regex.iter().chain(m.header_regexes.values());
                if regexes
                    .into_iter()
                    .any(|re| super::regex_lite_check(re).is_err())
                {
                    return Err(bad("a route's regex does not compile"));
                }
                if m.method.as_deref().is_some_and(|m| !is_method(m)) {
                    return Err(bad("a route's method is not an HTTP method"));
                }
            }
            for f in &r.filters {
                match f {
                    FilterConfig::FailureInjector { status, ratio, .. } => {
                        if !(100..=599).contains(status) {
                            return Err(bad("a failure injector's status must be 100-599"));
                        }
                        if ratio.is_some_and(|r| !(0.0..=1.0).contains(&r)) {
                            return Err(bad("a failure injector's ratio must be in [0, 1]"));
                        }
                    }
                    FilterConfig::Redirect {
                        status,
                        path,
                        path_prefix,
                        ..
                    } => {
                        if status.is_some_and(|s| !(300..=399).contains(&s)) {
                            return Err(bad("a redirect's status must be 3xx"));
                        }
                        if path.is_some() && path_prefix.is_some() {
                            return Err(bad("a redirect takes one of path, path_prefix"));
                        }
                    }
                    FilterConfig::RequestHeaderModifier(_)
                    | FilterConfig::ResponseHeaderModifier(_) => {}
                }
            }
            for b in &r.backends {
                match (&b.service, &b.addr) {
                    (Some(s), None)
                        if s.rsplit_once(':')
                            .is_some_and(|(_, p)| p.parse::<u16>().is_ok()) => {}
                    (None, Some(_)) => {}
                    _ => return Err(bad("a backend is one `service: name:port` or one `addr`")),
                }
            }
            if let Some(retry) = &r.retry {
                if retry.statuses.iter().any(|s| status_range(s).is_none()) {
                    return Err(bad("a retry status must be 5xx, NNN or NNN-MMM"));
                }
                if retry
                    .backoff
                    .as_ref()
                    .is_some_and(|b| !(0.0..=1.0).contains(&b.jitter))
                {
                    return Err(bad("a backoff's jitter must be in [0, 1]"));
                }
            }
        }
        if let Some(fa) = &self.failure_accrual {
            if fa.consecutive_failures == 0 {
                return Err(bad("failure_accrual.consecutive_failures must be > 0"));
            }
        }
        Ok(())
    }
}

/// Whether `s` is an HTTP method token (RFC 9110 section 9).
fn is_method(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::MeshConfig;

    fn with_policy(policy: &str) -> Result<MeshConfig, ConfigError> {
        MeshConfig::parse(&format!(
            "services:\n  - name: web.ns.svc.cluster.local\n    port: 80\n    policy:\n{policy}"
        ))
    }

    #[test]
    fn policies_parse() {
        let c = with_policy(
            "      protocol: http2\n      queue: { capacity: 5, failfast_timeout: 250ms }\n      routes:\n        - name: r\n          hosts: ['*.example.com']\n          matches: [{ path_exact: /x }]\n          filters:\n            - redirect: { host: other, status: 301 }\n            - response_header_modifier: { add: { a: b } }\n          backends: [{ addr: 10.0.0.1:80, weight: 3 }]\n          timeouts: { idle: 1m }\n          retry: { max_retries: 1, backoff: { min: 25ms, max: 250ms, jitter: 0.5 } }\n",
        )
        .unwrap();
        let p = &c.services[0].policy;
        assert_eq!(p.protocol, OutboundProtocol::Http2);
        let q = p.queue.as_ref().unwrap();
        assert_eq!(q.failfast_timeout, Some(Duration::from_millis(250)));
        let r = &p.routes[0];
        assert_eq!(r.timeouts.idle, Some(Duration::from_secs(60)));
        assert_eq!(r.backends[0].weight, 3);
        assert_eq!(r.retry.as_ref().unwrap().max_request_bytes, 65536);
        assert!(matches!(r.filters[0], FilterConfig::Redirect { .. }));
    }

    #[test]
    fn bad_policies_are_refused() {
        for bad in [
            "      routes:\n        - name: r\n        - name: r\n",
            "      routes:\n        - name: r\n          matches: [{ path_exact: /a, path_prefix: /b }]\n",
            "      routes:\n        - name: r\n          matches: [{ path_regex: '([' }]\n",
            "      routes:\n        - name: r\n          matches: [{ method: 'GE T' }]\n",
            "      routes:\n        - name: r\n          filters: [{ failure_injector: { status: 700 } }]\n",
            "      routes:\n        - name: r\n          filters: [{ failure_injector: { status: 500, ratio: 1.5 } }]\n",
            "      routes:\n        - name: r\n          filters: [{ redirect: { status: 200 } }]\n",
            "      routes:\n        - name: r\n          backends: [{ service: web }]\n",
            "      routes:\n        - name: r\n          backends: [{ service: 'a:1', addr: 10.0.0.1:1 }]\n",
            "      routes:\n        - name: r\n          retry: { max_retries: 1, statuses: [6xx] }\n",
            "      routes:\n        - name: r\n          timeouts: { request: 2 }\n",
            "      routes:\n        - name: r\n          timeouts: { request: 2w }\n",
            "      failure_accrual: { consecutive_failures: 0 }\n",
            "      protocol: udp\n",
        ] {
            assert!(with_policy(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn bad_profiles_are_refused() {
        let with = |profile: &str| {
            MeshConfig::parse(&format!(
                "services:\n  - name: web.ns.svc.cluster.local\n    port: 80\n    profile:\n{profile}"
            ))
        };
        assert!(with("      routes: [{ name: r, path_regex: '/a/.*', method: GET }]\n").is_ok());
        for bad in [
            "      routes: [{ name: r, path_regex: '([' }]\n",
            "      routes: [{ name: r, path_regex: /a, method: 'G T' }]\n",
            "      routes: [{ name: r, path_regex: /a, failure_statuses: [6xx] }]\n",
            "      retry_budget: { retry_ratio: -1, min_retries_per_second: 1, ttl: 1s }\n",
            "      dst_overrides: [{ authority: web, weight: 1 }]\n",
        ] {
            assert!(with(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn status_ranges() {
        assert_eq!(status_range("5xx"), Some((500, 599)));
        assert_eq!(status_range("gateway-error"), Some((502, 504)));
        assert_eq!(status_range("503"), Some((503, 503)));
        assert_eq!(status_range("500-504"), Some((500, 504)));
        for bad in ["504-500", "99", "600", "5xy", ""] {
            assert_eq!(status_range(bad), None, "{bad}");
        }
    }
}

/// A service's ServiceProfile (`Destination.GetProfile`): routes with their timeouts,
/// retryability and failure classes, the retry budget, and traffic-split overrides.
///
/// ```yaml
/// profile:
///   retry_budget: { retry_ratio: 0.2, min_retries_per_second: 10, ttl: 10s }
///   routes:
///     - { name: get-book, path_regex: '/books/[^/]+', method: GET, timeout: 1s, retryable: true, failure_statuses: ['500-599'] }
///   dst_overrides:
///     - { authority: web-v2.ns.svc.cluster.local:8080, weight: 100 }
/// ```
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProfileConfig {
    #[serde(default)]
    pub routes: Vec<ProfileRouteConfig>,
    #[serde(default)]
    pub retry_budget: Option<RetryBudgetConfig>,
    #[serde(default)]
    pub dst_overrides: Vec<DstOverrideConfig>,
}

/// A profile route: requests whose path matches `path_regex` (whole) and, if given, `method`.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProfileRouteConfig {
    /// The `rt_route` metric label.
    pub name: String,
    pub path_regex: String,
    #[serde(default)]
    pub method: Option<String>,
    #[serde(default, with = "duration")]
    pub timeout: Option<Duration>,
    #[serde(default)]
    pub retryable: bool,
    /// Responses with these statuses (`5xx`, `NNN`, `NNN-MMM`) are failures; default 5xx.
    #[serde(default)]
    pub failure_statuses: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetryBudgetConfig {
    pub retry_ratio: f32,
    pub min_retries_per_second: u32,
    #[serde(with = "duration")]
    pub ttl: Option<Duration>,
}

/// Traffic to the service goes to `authority` (`name:port`) by weight.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DstOverrideConfig {
    pub authority: String,
    pub weight: u32,
}

impl ProfileConfig {
    /// Checks what the proxy would reject, naming the service `name`.
    pub(super) fn validate(&self, name: &str) -> Result<(), ConfigError> {
        let bad = |reason| ConfigError::Invalid {
            name: name.to_string(),
            reason,
        };
        for r in &self.routes {
            if super::regex_lite_check(&r.path_regex).is_err() {
                return Err(bad("a profile route's path_regex does not compile"));
            }
            if r.method.as_deref().is_some_and(|m| !is_method(m)) {
                return Err(bad("a profile route's method is not an HTTP method"));
            }
            if r.failure_statuses.iter().any(|s| status_range(s).is_none()) {
                return Err(bad("a failure status must be 5xx, NNN or NNN-MMM"));
            }
        }
        if let Some(b) = &self.retry_budget {
            if !(0.0..=1000.0).contains(&b.retry_ratio) {
                return Err(bad("a retry budget's ratio must be >= 0"));
            }
        }
        if self.dst_overrides.iter().any(|d| {
            d.authority
                .rsplit_once(':')
                .and_then(|(_, p)| p.parse::<u16>().ok())
                .is_none()
        }) {
            return Err(bad("a dst_override's authority must be name:port"));
        }
        Ok(())
    }
}
