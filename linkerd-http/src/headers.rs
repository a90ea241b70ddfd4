//! Header hygiene: what a proxy must not forward.

use http::{
    header::{self, HeaderName},
    HeaderMap, HeaderValue,
};

/// The error header set on every response the proxy synthesizes.
pub const L5D_PROXY_ERROR: HeaderName = HeaderName::from_static("l5d-proxy-error");

/// Set with `close` on a synthesized error after which the proxy closes the connection; a
/// client's proxy closes its app's connection in turn.
pub const L5D_PROXY_CONNECTION: HeaderName = HeaderName::from_static("l5d-proxy-connection");

/// Sent by the app to its outbound proxy: the endpoint's mesh identity must be this one.
pub const L5D_REQUIRE_ID: HeaderName = HeaderName::from_static("l5d-require-id");

/// Proxy to proxy: the logical (profile) name, `name:port`, a request was routed by.
pub const L5D_DST_CANONICAL: HeaderName = HeaderName::from_static("l5d-dst-canonical");

/// Headers that describe one hop (RFC 9110 section 7.6.1) and are never forwarded. `Trailer`
/// is end-to-end (it declares the trailer fields, and HTTP/1 servers only send declared ones).
const HOP_BY_HOP: [HeaderName; 5] = [
    header::CONNECTION,
    header::TRANSFER_ENCODING,
    header::TE,
    header::UPGRADE,
    header::PROXY_AUTHORIZATION,
];

static KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
static PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");
static HTTP2_SETTINGS: HeaderName = HeaderName::from_static("http2-settings");

/// The authority a request names: its URI's (`:authority`, or an absolute-form request line),
/// else its `Host` header.
pub fn authority_of<B>(req: &http::Request<B>) -> Option<&str> {
    req.uri().authority().map(|a| a.as_str()).or_else(|| {
        req.headers()
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
    })
}

/// Checks the headers that say where a request goes and how its body is framed, as a proxy
/// must before routing on them, and makes `Host` agree with the request target:
///
/// - more than one `Host`, or one that is not a valid authority, is 400 (RFC 9112 section 3.2);
/// - an HTTP/1 absolute-form request's `Host` is replaced with the request target's authority
///   (RFC 9112 section 3.2.2: a proxy ignores the received `Host`);
/// - an HTTP/2 request whose `host` names another authority than `:authority` is malformed:
///   400 (RFC 9113 section 8.3.1), unless it is a peer proxy's upgraded HTTP/1 request;
/// - an HTTP/1 request body with a transfer coding other than `chunked` is 501 (RFC 9112
///   section 6.1): the proxy would drop the coding with the hop's framing, and the app would
///   read a coded body as if it were plain.
pub fn check_request<B>(req: &mut http::Request<B>) -> Result<(), crate::Error> {
    use crate::Error;
    // Checked in place, without parsing into an owned `Authority`: this runs per request.
    let mut hosts = req.headers().get_all(header::HOST).iter();
    let host = hosts.next();
    if hosts.next().is_some() {
        return Err(Error::BadRequest("more than one Host header".into()));
    }
    let host = match host {
        Some(v) => Some(
            v.to_str()
                .ok()
                .and_then(split_authority)
                .ok_or_else(|| Error::BadRequest(format!("invalid Host header {v:?}")))?,
        ),
        None => None,
    };
    let target = req.uri().authority();
    if req.version() == http::Version::HTTP_2 {
        // An HTTP/1 request a peer proxy carries as HTTP/2 (`l5d-orig-proto`) keeps the
        // client's Host beside :authority; the peer has applied the HTTP/1 rules.
        if let (Some((host, port)), Some(a)) = (host, target) {
            // The same host, and the same port where both name one (a missing port is the
            // scheme's default, which the other may spell out).
            let same = host.eq_ignore_ascii_case(a.host())
                && (port.is_none()
                    || a.port().is_none()
                    || port.and_then(|p| p.parse::<u16>().ok()) == a.port_u16());
            if !same
                && !req
                    .headers()
                    .contains_key(crate::orig_proto::L5D_ORIG_PROTO)
            {
                return Err(Error::BadRequest(
                    "the host header names another authority than :authority".into(),
                ));
            }
        }
        return Ok(());
    }
    if let Some(a) = target {
        let port = a.port();
        let same =
            host.is_some_and(|(h, p)| h == a.host() && p == port.as_ref().map(|p| p.as_str()));
        if !same {
            let target = match a.port() {
                Some(port) => format!("{}:{}", a.host(), port.as_str()),
                None => a.host().to_string(),
            };
            let v = HeaderValue::from_str(&target).map_err(|_| {
                Error::BadRequest(format!("invalid request target authority {target:?}"))
            })?;
            req.headers_mut().insert(header::HOST, v);
        }
    }
    let other_coding = req
        .headers()
        .get_all(header::TRANSFER_ENCODING)
        .iter()
        .flat_map(|v| v.as_bytes().split(|b| *b == b','))
        .map(|t| t.trim_ascii())
        .any(|t| !t.is_empty() && !t.eq_ignore_ascii_case(b"chunked"));
    if other_coding {
        return Err(Error::NotImplemented(
            "a transfer coding other than chunked".into(),
        ));
    }
    Ok(())
}

/// A `Host` value's host and port (RFC 9110 section 7.2: `uri-host [ ":" port ]`), if it is
/// one: a non-empty reg-name, IPv4 address or bracketed IPv6 address, and digits for the port.
fn split_authority(v: &str) -> Option<(&str, Option<&str>)> {
    let (host, port) = if v.starts_with('[') {
        let end = v.find(']')?;
        let (host, rest) = v.split_at(end + 1);
        match rest {
            "" => (host, None),
            r => (host, Some(r.strip_prefix(':')?)),
        }
    } else {
        match v.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (v, None),
        }
    };
    let host_ok = match host.strip_prefix('[') {
        Some(inner) => {
            let inner = inner.strip_suffix(']')?;
            !inner.is_empty()
                && inner
                    .bytes()
                    .all(|b| b.is_ascii_hexdigit() || b == b':' || b == b'.')
        }
        None => {
            !host.is_empty()
                && host
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=%".contains(&b))
        }
    };
    let port_ok = port.is_none_or(|p| p.len() <= 5 && p.bytes().all(|b| b.is_ascii_digit()));
    (host_ok && port_ok).then_some((host, port))
}

/// Whether the request asks to switch protocols in a way the proxy can carry (e.g. WebSocket):
/// an `Upgrade` header named by `Connection`, other than `h2c`.
pub fn wants_upgrade(headers: &HeaderMap) -> bool {
    let upgrade = headers
        .get_all(header::UPGRADE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|p| !p.trim().eq_ignore_ascii_case("h2c") && !p.trim().is_empty());
    upgrade && connection_has(headers, "upgrade")
}

/// Removes hop-by-hop headers from a request or response.
///
/// `keep_upgrade` keeps `Connection: upgrade` and `Upgrade` for an upgrade the proxy carries.
/// `Upgrade: h2c` and `HTTP2-Settings` are always removed: the proxy decides the protocol of
/// each hop itself. `TE: trailers` is kept, since gRPC over HTTP/2 requires it.
pub fn strip_hop_by_hop(headers: &mut HeaderMap, keep_upgrade: bool) {
    // Headers named by `Connection` are hop-by-hop too.
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|t| HeaderName::from_bytes(t.trim().as_bytes()).ok())
        .filter(|n| !(keep_upgrade && n == header::UPGRADE))
        // `Connection: host` must not take a request's target away from the next hop.
        .filter(|n| n != header::HOST)
        .collect();
    for n in named {
        headers.remove(n);
    }
    let te_trailers = headers
        .get(header::TE)
        .and_then(|v| v.to_str().ok())
        .map(|v| {
            v.split(',')
                .any(|t| t.trim().eq_ignore_ascii_case("trailers"))
        })
        .unwrap_or(false);
    let upgrade = keep_upgrade.then(|| {
        headers
            .get_all(header::UPGRADE)
            .iter()
            .cloned()
            .collect::<Vec<_>>()
    });
    for n in HOP_BY_HOP
        .iter()
        .chain([&KEEP_ALIVE, &PROXY_CONNECTION, &HTTP2_SETTINGS])
    {
        headers.remove(n);
    }
    if te_trailers {
        headers.insert(header::TE, HeaderValue::from_static("trailers"));
    }
    if let Some(values) = upgrade.filter(|v| !v.is_empty()) {
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        for v in values {
            headers.append(header::UPGRADE, v);
        }
    }
}

fn connection_has(headers: &HeaderMap, token: &str) -> bool {
    headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

/// Whether `req` is gRPC: HTTP/2 with a `content-type` starting `application/grpc`.
pub fn is_grpc<B>(req: &http::Request<B>) -> bool {
    req.version() == http::Version::HTTP_2
        && req
            .headers()
            .get(http::header::CONTENT_TYPE)
            .is_some_and(|ct| ct.as_bytes().starts_with(b"application/grpc"))
}

/// A copy of `req`'s head (method, URI, version, headers, extensions), for sending it again
/// (the pool's refused re-send, a route's retries).
pub fn head_of<B>(req: &http::Request<B>) -> http::Request<()> {
    let mut head = http::Request::new(());
    *head.method_mut() = req.method().clone();
    *head.uri_mut() = req.uri().clone();
    *head.version_mut() = req.version();
    *head.headers_mut() = req.headers().clone();
    *head.extensions_mut() = req.extensions().clone();
    head
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_values() {
        for (v, want) in [
            ("web", Some(("web", None))),
            ("web.ns:8080", Some(("web.ns", Some("8080")))),
            ("10.0.0.1:80", Some(("10.0.0.1", Some("80")))),
            ("[::1]:4140", Some(("[::1]", Some("4140")))),
            ("[fd00::1]", Some(("[fd00::1]", None))),
        ] {
            assert_eq!(split_authority(v), want, "{v}");
        }
        for bad in [
            "",
            ":80",
            "a b",
            "user@host",
            "web:80x",
            "web:123456",
            "[::1",
            "[]:80",
            "[::1]x",
            "a/b",
            "a\\b",
        ] {
            assert_eq!(split_authority(bad), None, "{bad:?}");
        }
    }

    fn map(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    #[test]
    fn strips_standard_and_named_hop_by_hop() {
        let mut h = map(&[
            ("connection", "keep-alive, x-hop"),
            ("keep-alive", "timeout=5"),
            ("x-hop", "1"),
            ("transfer-encoding", "chunked"),
            ("proxy-connection", "keep-alive"),
            ("proxy-authorization", "Basic abc"),
            ("trailer", "x-checksum"),
            ("x-end-to-end", "kept"),
            ("content-type", "text/plain"),
        ]);
        strip_hop_by_hop(&mut h, false);
        let mut names: Vec<_> = h.keys().map(|k| k.as_str()).collect();
        names.sort_unstable();
        // `Trailer` is end-to-end: it declares the trailer fields.
        assert_eq!(names, ["content-type", "trailer", "x-end-to-end"]);
    }

    #[test]
    fn keeps_te_trailers_only() {
        let mut h = map(&[("te", "trailers, deflate")]);
        strip_hop_by_hop(&mut h, false);
        assert_eq!(h.get("te").unwrap(), "trailers");
        let mut h = map(&[("te", "gzip")]);
        strip_hop_by_hop(&mut h, false);
        assert!(h.get("te").is_none());
    }

    #[test]
    fn h2c_upgrade_is_never_forwarded() {
        let mut h = map(&[
            ("connection", "Upgrade, HTTP2-Settings"),
            ("upgrade", "h2c"),
            ("http2-settings", "AAMAAABkAAQAoAAAAAIAAAAA"),
        ]);
        assert!(!wants_upgrade(&h));
        let upgrade = wants_upgrade(&h);
        strip_hop_by_hop(&mut h, upgrade);
        assert!(h.is_empty(), "{h:?}");
    }

    #[test]
    fn websocket_upgrade_is_kept_when_carried() {
        let mut h = map(&[
            ("connection", "keep-alive, Upgrade"),
            ("upgrade", "websocket"),
            ("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ=="),
        ]);
        assert!(wants_upgrade(&h));
        strip_hop_by_hop(&mut h, true);
        assert_eq!(h.get("connection").unwrap(), "upgrade");
        assert_eq!(h.get("upgrade").unwrap(), "websocket");
        assert!(h.get("sec-websocket-key").is_some());
        assert!(h.get("keep-alive").is_none());
    }

    #[test]
    fn upgrade_without_connection_token_is_not_an_upgrade() {
        let h = map(&[("upgrade", "websocket")]);
        assert!(!wants_upgrade(&h));
    }
}
