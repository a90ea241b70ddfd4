//! Retries of a route's requests: the rule's retry policy, or what the `l5d-retry-*` request
//! headers ask when the rule allows them.
//!
//! A retried request's body is kept (up to the policy's `max_request_bytes`) while attempts
//! may still need it; a body larger than that is sent once, never truncated, and its response
//! is the answer. Each attempt goes through the backend's balancer again, so P2C may choose
//! another endpoint; an attempt has its own response-headers timeout when the policy gives one
//! (a timed-out attempt is retried); between attempts the policy's backoff is waited.

use super::policy_route::BackendSvc;
use http::{HeaderMap, HeaderName, Request, Response};
use linkerd_http::{Error, ForwardBody, ProxyBody};
use linkerd_policy::outbound::{Backoff, Retry, RetryConditions, Timeouts};
use std::{sync::Arc, time::Duration};

type Rsp = Result<Response<ProxyBody>, Error>;

/// The request's head ([`linkerd_http::head_of`]), copied for each attempt.
pub(crate) type Head = Request<()>;

/// Whether a request with these headers can be retried under `retry`: a body of a declared
/// length over `max_request_bytes` can't (one of unknown length is kept until it passes it).
pub(crate) fn fits(headers: &HeaderMap, retry: &Retry) -> bool {
    declared_len(headers).is_none_or(|len| len <= retry.max_request_bytes)
}

/// The request's `Content-Length`.
pub(crate) fn declared_len(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok())
}

/// Sends `body` with `head` to `backend`, retrying as `retry` says. A body is re-sent only
/// when it is known to fit: its declared length does (checked before), or it has been read
/// whole within the bound (one still streaming when the answer came may yet outgrow it).
pub(crate) async fn send(
    backend: BackendSvc,
    head: Head,
    body: ForwardBody,
    retry: Arc<Retry>,
) -> Rsp {
    let declared = declared_len(head.headers()).is_some();
    let mut retries = 0;
    let mut next = body.replay();
    loop {
        // The first replay of a body not yet read always exists; a later one only while
        // the body was small enough to keep.
        let Some(attempt) = next.take() else {
            // Unreachable for the first attempt; stop otherwise.
            body.release();
            return Err(Error::NoBackends);
        };
        let sent = backend.call(linkerd_http::head_of(&head).map(|()| attempt));
        let res = match retry.timeout {
            Some(timeout) => match tokio::time::timeout(timeout, sent).await {
                Ok(res) => res,
                Err(_) => Err(Error::RouteTimeout {
                    which: "retry attempt",
                    timeout,
                }),
            },
            None => sent.await,
        };
        if retries >= retry.max_retries || !retryable(&res, &retry.conditions) {
            body.release();
            return res;
        }
        next = body.replay().filter(|_| declared || body.is_kept_whole());
        if next.is_none() {
            tracing::debug!("the request body is too large (or not yet known to fit) to retry");
            body.release();
            return res;
        }
        retries += 1;
        tracing::debug!(retries, "retrying");
        // The failed response (and its stream or connection) goes.
        drop(res);
        if let Some(b) = &retry.backoff {
            tokio::time::sleep(wait(b, retries)).await;
        }
    }
}

/// The `n`th wait (from 1): `min * 2^(n-1)`, at most `max`, less up to `jitter` of it.
fn wait(b: &Backoff, n: u32) -> Duration {
    let base = b
        .min
        .saturating_mul(1u32 << (n - 1).min(20))
        .min(b.max.max(b.min));
    let jitter = f64::from(b.jitter.clamp(0.0, 1.0)) * rand::random::<f64>();
    base.mul_f64(1.0 - jitter)
}

/// Whether the outcome of an attempt is retried: a response the conditions name, or a
/// failure to reach the endpoint or to hear from it in time (never a load-shed or fail-fast
/// refusal, nor a failure of the client's own body).
fn retryable(res: &Rsp, conditions: &RetryConditions) -> bool {
    match (res, conditions) {
        (Ok(rsp), RetryConditions::Http(ranges)) => {
            let s = rsp.status().as_u16();
            ranges.iter().any(|(a, b)| (*a..=*b).contains(&s))
        }
        (Ok(rsp), RetryConditions::Grpc(codes)) => rsp
            .headers()
            .get("grpc-status")
            .and_then(|v| v.to_str().ok()?.parse::<u32>().ok())
            .is_some_and(|c| codes.contains(&c)),
        (Err(e), _) => matches!(
            e,
            Error::Connect(_)
                | Error::Handshake { .. }
                | Error::Upstream { .. }
                | Error::Tls { .. }
                | Error::TransportHeader { .. }
                | Error::ResponseHeadersTimeout { .. }
                | Error::RouteTimeout { .. }
        ),
    }
}

const L5D_RETRY_HTTP: HeaderName = HeaderName::from_static("l5d-retry-http");
const L5D_RETRY_GRPC: HeaderName = HeaderName::from_static("l5d-retry-grpc");
const L5D_RETRY_LIMIT: HeaderName = HeaderName::from_static("l5d-retry-limit");
const L5D_RETRY_TIMEOUT: HeaderName = HeaderName::from_static("l5d-retry-timeout");
const L5D_TIMEOUT: HeaderName = HeaderName::from_static("l5d-timeout");
const L5D_REQUEST_TIMEOUT: HeaderName = HeaderName::from_static("l5d-request-timeout");
const L5D_RESPONSE_TIMEOUT: HeaderName = HeaderName::from_static("l5d-response-timeout");

/// A retry the `l5d-retry-*` headers create when the rule has none: once, bodies up to
/// 64 KiB, after 25-250ms.
fn header_default(grpc: bool) -> Retry {
    Retry {
        max_retries: 1,
        max_request_bytes: 64 * 1024,
        conditions: match grpc {
            true => RetryConditions::Grpc(Vec::new()),
            false => RetryConditions::Http(Vec::new()),
        },
        timeout: None,
        backoff: Some(Backoff {
            min: Duration::from_millis(25),
            max: Duration::from_millis(250),
            jitter: 1.0,
            respect_retry_after: false,
        }),
    }
}

/// Takes the `l5d-retry-*` and `l5d-*-timeout` headers off a request whose rule allows them:
/// the retry they make of the rule's (`None`: they name none), and they amend `timeouts`. A
/// header that does not parse is ignored.
pub(crate) fn from_headers(
    h: &mut HeaderMap,
    rule: Option<&Arc<Retry>>,
    timeouts: &mut Timeouts,
) -> Option<Arc<Retry>> {
    let mut take = |name: &HeaderName| {
        h.remove(name)
            .and_then(|v| v.to_str().ok().map(|s| s.trim().to_string()))
    };
    let long = take(&L5D_REQUEST_TIMEOUT).and_then(|v| parse_duration(&v));
    let short = take(&L5D_TIMEOUT).and_then(|v| parse_duration(&v));
    if let Some(t) = long.or(short) {
        timeouts.request = Some(t);
    }
    if let Some(t) = take(&L5D_RESPONSE_TIMEOUT).and_then(|v| parse_duration(&v)) {
        timeouts.response = Some(t);
    }
    let http = take(&L5D_RETRY_HTTP).and_then(|v| http_conditions(&v));
    let grpc = take(&L5D_RETRY_GRPC).and_then(|v| grpc_conditions(&v));
    let limit = take(&L5D_RETRY_LIMIT).and_then(|v| v.parse::<u32>().ok());
    let timeout = take(&L5D_RETRY_TIMEOUT).and_then(|v| parse_duration(&v));
    if http.is_none() && grpc.is_none() && limit.is_none() && timeout.is_none() {
        return None;
    }
    let mut retry = match rule {
        Some(r) => Retry::clone(r),
        None => header_default(grpc.is_some()),
    };
    if let Some(c) = http {
        retry.conditions = RetryConditions::Http(c);
    }
    if let Some(c) = grpc {
        retry.conditions = RetryConditions::Grpc(c);
    }
    if let Some(l) = limit {
        retry.max_retries = l;
    }
    if timeout.is_some() {
        retry.timeout = timeout;
    }
    Some(Arc::new(retry))
}

/// `5xx`, `gateway-error`, `NNN`, `NNN-MMM`, comma-separated.
fn http_conditions(v: &str) -> Option<Vec<(u16, u16)>> {
    v.split(',')
        .map(|c| {
            let c = c.trim();
            let code = |s: &str| s.parse::<u16>().ok().filter(|c| (100..=599).contains(c));
            match c {
                "5xx" => Some((500, 599)),
                "gateway-error" => Some((502, 504)),
                _ => match c.split_once('-') {
                    Some((a, b)) => Some((code(a)?, code(b)?)).filter(|(a, b)| a <= b),
                    None => code(c).map(|c| (c, c)),
                },
            }
        })
        .collect()
}

/// gRPC status names, comma-separated.
fn grpc_conditions(v: &str) -> Option<Vec<u32>> {
    v.split(',')
        .map(|c| match c.trim() {
            "cancelled" => Some(1),
            "deadline-exceeded" => Some(4),
            "resource-exhausted" => Some(8),
            "internal" => Some(13),
            "unavailable" => Some(14),
            _ => None,
        })
        .collect()
}

/// A duration as Go writes it: `300ms`, `1.5s`, `1m30s` (units ns, us, ms, s, m, h); a bare
/// number is milliseconds.
fn parse_duration(v: &str) -> Option<Duration> {
    if let Ok(ms) = v.parse::<u64>() {
        return Some(Duration::from_millis(ms));
    }
    let mut rest = v;
    let mut total = 0.0f64;
    while !rest.is_empty() {
        let num_end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let n: f64 = rest[..num_end].parse().ok()?;
        rest = &rest[num_end..];
        let unit_end = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let secs = match &rest[..unit_end] {
            "ns" => 1e-9,
            "us" | "µs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return None,
        };
        total += n * secs;
        rest = &rest[unit_end..];
    }
    Duration::try_from_secs_f64(total).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_override_and_create_retries_and_timeouts() {
        let mut h = HeaderMap::new();
        h.insert("l5d-retry-http", "gateway-error, 429".parse().unwrap());
        h.insert("l5d-retry-limit", "3".parse().unwrap());
        h.insert("l5d-retry-timeout", "150ms".parse().unwrap());
        h.insert("l5d-timeout", "9s".parse().unwrap());
        h.insert("l5d-request-timeout", "1m30s".parse().unwrap());
        h.insert("l5d-response-timeout", "1.5s".parse().unwrap());
        let mut t = Timeouts::default();
        let r = from_headers(&mut h, None, &mut t).expect("a retry");
        assert!(h.is_empty(), "the headers are taken: {h:?}");
        assert_eq!(
            r.conditions,
            RetryConditions::Http(vec![(502, 504), (429, 429)])
        );
        assert_eq!(r.max_retries, 3);
        assert_eq!(r.timeout, Some(Duration::from_millis(150)));
        assert_eq!(r.max_request_bytes, 64 * 1024);
        assert_eq!(
            t.request,
            Some(Duration::from_secs(90)),
            "the long name wins"
        );
        assert_eq!(t.response, Some(Duration::from_millis(1500)));

        // Only timeouts: no retry; a bad value is ignored.
        let mut h = HeaderMap::new();
        h.insert("l5d-timeout", "soon".parse().unwrap());
        h.insert("l5d-retry-grpc", "nonsense".parse().unwrap());
        let mut t = Timeouts::default();
        assert!(from_headers(&mut h, None, &mut t).is_none());
        assert_eq!(t, Timeouts::default());

        // Amending the rule's retry keeps what the headers do not name.
        let rule = Arc::new(Retry {
            max_retries: 2,
            max_request_bytes: 10,
            conditions: RetryConditions::Http(vec![(500, 599)]),
            timeout: None,
            backoff: None,
        });
        let mut h = HeaderMap::new();
        h.insert("l5d-retry-grpc", "unavailable,internal".parse().unwrap());
        let r = from_headers(&mut h, Some(&rule), &mut Timeouts::default()).unwrap();
        assert_eq!(r.conditions, RetryConditions::Grpc(vec![14, 13]));
        assert_eq!((r.max_retries, r.max_request_bytes), (2, 10));
    }

    #[test]
    fn backoff_grows_to_its_max_with_jitter_below() {
        let b = Backoff {
            min: Duration::from_millis(25),
            max: Duration::from_millis(250),
            jitter: 0.0,
            respect_retry_after: false,
        };
        let waits: Vec<_> = (1..=6).map(|n| wait(&b, n).as_millis()).collect();
        assert_eq!(waits, [25, 50, 100, 200, 250, 250]);
        let j = Backoff { jitter: 0.5, ..b };
        for n in 1..=6 {
            let w = wait(&j, n);
            assert!(w <= wait(&b, n) && w >= wait(&b, n) / 2, "{w:?}");
        }
    }

    #[test]
    fn what_is_retried() {
        let rsp = |status: u16, grpc: Option<&str>| {
            let mut r = Response::new(ProxyBody::empty());
            *r.status_mut() = http::StatusCode::from_u16(status).unwrap();
            if let Some(g) = grpc {
                r.headers_mut().insert("grpc-status", g.parse().unwrap());
            }
            Ok(r)
        };
        let http = RetryConditions::Http(vec![(500, 504)]);
        assert!(retryable(&rsp(503, None), &http));
        assert!(!retryable(&rsp(505, None), &http));
        assert!(!retryable(&rsp(200, None), &http));
        let grpc = RetryConditions::Grpc(vec![14]);
        assert!(retryable(&rsp(200, Some("14")), &grpc));
        assert!(!retryable(&rsp(200, Some("13")), &grpc));
        assert!(!retryable(&rsp(200, None), &grpc));
        let timeout = Err(Error::RouteTimeout {
            which: "retry attempt",
            timeout: Duration::from_secs(1),
        });
        assert!(retryable(&timeout, &http));
        let shed = Err(Error::Unavailable(linkerd_balance::Error::QueueFull {
            name: "web".into(),
            capacity: 1,
        }));
        assert!(!retryable(&shed, &http), "load shedding is not retried");
    }
}
