//! Explicit-proxy mode: the client names its target in the request (`curl -x`).

use http::{header, uri::Authority, HeaderValue, Method, Request, Uri};
use linkerd_http::Error;
use std::{net::SocketAddr, time::Duration};

/// The host and port an explicit-proxy request names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct ExplicitTarget {
    pub host: String,
    pub port: u16,
}

/// Reads the target from `CONNECT host:port`, an absolute-form URI or the `Host` header.
pub(crate) fn target_of<B>(req: &Request<B>) -> Result<ExplicitTarget, Error> {
    let uri = req.uri();
    if req.method() == Method::CONNECT {
        let auth = uri
            .authority()
            .ok_or_else(|| Error::BadRequest("CONNECT needs a host:port target".into()))?;
        let port = auth
            .port_u16()
            .ok_or_else(|| Error::BadRequest(format!("CONNECT target {auth} has no port")))?;
        return Ok(ExplicitTarget {
            host: auth.host().to_string(),
            port,
        });
    }
    if let Some(scheme) = uri.scheme_str() {
        if scheme != "http" {
            return Err(Error::BadRequest(format!(
                "{scheme}:// targets can't be proxied as plain HTTP; use CONNECT"
            )));
        }
    }
    let auth = match uri.authority() {
        Some(a) => a.clone(),
        None => host_header(req)?,
    };
    Ok(ExplicitTarget {
        host: auth.host().to_string(),
        port: auth.port_u16().unwrap_or(80),
    })
}

fn host_header<B>(req: &Request<B>) -> Result<Authority, Error> {
    let host = req.headers().get(header::HOST).ok_or_else(|| {
        Error::BadRequest("the request has neither an absolute URI nor a Host header".into())
    })?;
    host.to_str()
        .ok()
        .and_then(|h| h.parse::<Authority>().ok())
        .filter(|a| !a.host().is_empty())
        .ok_or_else(|| Error::BadRequest(format!("invalid Host header {host:?}")))
}

/// Rewrites an HTTP/1 absolute-form request to origin-form, as the origin server expects it,
/// keeping the authority in `Host`.
pub(crate) fn to_origin_form<B>(req: &mut Request<B>) {
    let Some(auth) = req.uri().authority().cloned() else {
        return;
    };
    if !req.headers().contains_key(header::HOST) {
        if let Ok(v) = HeaderValue::from_str(auth.as_str()) {
            req.headers_mut().insert(header::HOST, v);
        }
    }
    let path = req
        .uri()
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/");
    // A path taken from a valid URI is itself a valid URI.
    if let Ok(uri) = path.parse::<Uri>() {
        *req.uri_mut() = uri;
    }
}

/// Resolves the target's host (an IP literal, or a name through the system resolver).
pub(crate) async fn resolve(
    target: &ExplicitTarget,
    timeout: Duration,
) -> Result<SocketAddr, Error> {
    let host = target.host.trim_start_matches('[').trim_end_matches(']');
    if let Ok(ip) = host.parse() {
        return Ok(SocketAddr::new(ip, target.port));
    }
    let fail = |reason: String| Error::Resolve {
        name: target.host.clone(),
        reason,
    };
    let lookup = tokio::net::lookup_host((host, target.port));
    match tokio::time::timeout(timeout, lookup).await {
        Ok(Ok(mut addrs)) => addrs.next().ok_or_else(|| fail("no addresses".into())),
        Ok(Err(e)) => Err(fail(e.to_string())),
        Err(_) => Err(fail(format!("timed out after {timeout:?}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(method: &str, uri: &str, host: Option<&str>) -> Request<()> {
        let mut b = Request::builder().method(method).uri(uri);
        if let Some(h) = host {
            b = b.header("host", h);
        }
        b.body(()).unwrap()
    }

    fn t(host: &str, port: u16) -> ExplicitTarget {
        ExplicitTarget {
            host: host.into(),
            port,
        }
    }

    #[test]
    fn targets() {
        assert_eq!(
            target_of(&req("CONNECT", "example.com:443", None)).unwrap(),
            t("example.com", 443)
        );
        assert_eq!(
            target_of(&req("GET", "http://10.0.0.1:8080/a", Some("x"))).unwrap(),
            t("10.0.0.1", 8080)
        );
        assert_eq!(
            target_of(&req("GET", "http://web/a", None)).unwrap(),
            t("web", 80)
        );
        assert_eq!(
            target_of(&req("GET", "/a", Some("web.ns:9000"))).unwrap(),
            t("web.ns", 9000)
        );
        assert_eq!(
            target_of(&req("GET", "http://[::1]:81/", None)).unwrap(),
            t("[::1]", 81)
        );
    }

    #[test]
    fn malformed_targets_are_bad_requests() {
        for r in [
            req("GET", "/a", None),
            req("GET", "/a", Some("bad host")),
            req("GET", "https://example.com/", None),
            req("CONNECT", "example.com", None),
        ] {
            let e = target_of(&r).unwrap_err();
            assert_eq!(e.status(), 400, "{e}");
        }
    }

    #[test]
    fn origin_form_keeps_host() {
        let mut r = req("GET", "http://web:81/p?q=1", None);
        to_origin_form(&mut r);
        assert_eq!(r.uri(), "/p?q=1");
        assert_eq!(r.headers()["host"], "web:81");
        let mut r = req("GET", "http://web:81/p", Some("other"));
        to_origin_form(&mut r);
        assert_eq!(r.headers()["host"], "other");
    }

    #[tokio::test]
    async fn resolves_literals_and_names() {
        let timeout = Duration::from_secs(5);
        assert_eq!(
            resolve(&t("[::1]", 81), timeout).await.unwrap(),
            "[::1]:81".parse().unwrap()
        );
        assert_eq!(
            resolve(&t("127.0.0.1", 80), timeout).await.unwrap(),
            "127.0.0.1:80".parse().unwrap()
        );
        let localhost = resolve(&t("localhost", 80), timeout).await.unwrap();
        assert!(localhost.ip().is_loopback());
        let e = resolve(&t("no-such-host.invalid", 80), timeout)
            .await
            .unwrap_err();
        assert_eq!(e.status(), 502);
    }
}
