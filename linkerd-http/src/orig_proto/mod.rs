//! HTTP/1 carried over HTTP/2 between proxies: the client proxy sends an HTTP/1.x request as
//! HTTP/2 with `l5d-orig-proto` naming the original version (and `; absolute-form` when the
//! request line had an absolute URI); the server proxy turns it back into HTTP/1.x for the app
//! and the response back into HTTP/2; the client proxy gives the app an HTTP/1.x response.
//!
//! The functions here rewrite one message; [`UpgradeLayer`] (the client proxy's) and
//! [`DowngradeLayer`] (the server proxy's) apply them in a request stack.

mod downgrade;
mod upgrade;

pub use self::downgrade::{Downgrade, DowngradeLayer};
pub use self::upgrade::{Upgrade, UpgradeLayer};

use crate::{headers::wants_upgrade, Error, ProxyBody};
use http::{header, uri, HeaderName, HeaderValue, Method, Request, Response, Uri, Version};
use std::{
    future::Future,
    pin::Pin,
    task::{ready, Context, Poll},
};

/// The header naming a request's original protocol.
pub const L5D_ORIG_PROTO: HeaderName = HeaderName::from_static("l5d-orig-proto");

const ABSOLUTE_FORM: &str = "; absolute-form";

/// Whether an HTTP/1 request may be carried as HTTP/2: not `CONNECT` and not a protocol
/// upgrade (WebSocket), which need an HTTP/1.1 connection of their own.
pub fn upgradable<B>(req: &Request<B>) -> bool {
    req.version() != Version::HTTP_2
        && req.method() != Method::CONNECT
        && !wants_upgrade(req.headers())
}

/// Makes an HTTP/1.x request (already stripped of hop-by-hop headers) an HTTP/2 one for a
/// peer proxy; returns the original version, to restore on the response.
pub fn upgrade_request<B>(req: &mut Request<B>) -> Result<Version, Error> {
    let orig = req.version();
    let absolute = req.uri().scheme().is_some() && req.uri().authority().is_some();
    let value = HeaderValue::from_static(match (orig, absolute) {
        (Version::HTTP_10, false) => "HTTP/1.0",
        (Version::HTTP_10, true) => "HTTP/1.0; absolute-form",
        (_, false) => "HTTP/1.1",
        (_, true) => "HTTP/1.1; absolute-form",
    });
    if !absolute {
        // HTTP/2 needs :scheme and :authority: from the Host header.
        let host = req
            .headers()
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .and_then(|h| h.parse::<uri::Authority>().ok())
            .ok_or_else(|| Error::BadRequest("an HTTP/1 request without a Host".into()))?;
        let mut parts = std::mem::take(req.uri_mut()).into_parts();
        parts.scheme = Some(uri::Scheme::HTTP);
        parts.authority = Some(host);
        if parts.path_and_query.is_none() {
            parts.path_and_query = Some(uri::PathAndQuery::from_static("/"));
        }
        *req.uri_mut() = Uri::from_parts(parts)
            .map_err(|e| Error::BadRequest(format!("invalid request target: {e}")))?;
    }
    // The Host header stays beside :authority, as linkerd2-proxy's upgrade keeps it: its
    // downgrade does not rebuild Host, and an HTTP/1.1 app answers 400 without one.
    req.headers_mut().insert(L5D_ORIG_PROTO, value);
    *req.version_mut() = Version::HTTP_2;
    Ok(orig)
}

/// Restores the client's version on the response to an upgraded request.
pub fn downgrade_response<B>(rsp: &mut Response<B>, orig: Version) {
    rsp.headers_mut().remove(L5D_ORIG_PROTO);
    *rsp.version_mut() = orig;
}

/// On the server proxy: turns an HTTP/2 request carrying `l5d-orig-proto` back into the
/// HTTP/1.x request the client sent. `Ok(false)` when it carries none.
pub fn downgrade_request<B>(req: &mut Request<B>) -> Result<bool, Error> {
    let Some(value) = req.headers_mut().remove(L5D_ORIG_PROTO) else {
        return Ok(false);
    };
    let value = value.to_str().unwrap_or_default();
    let (proto, absolute) = match value.strip_suffix(ABSOLUTE_FORM) {
        Some(p) => (p, true),
        None => (value, false),
    };
    let version = match proto.trim() {
        "HTTP/1.1" => Version::HTTP_11,
        "HTTP/1.0" => Version::HTTP_10,
        other => {
            return Err(Error::BadRequest(format!(
                "unsupported l5d-orig-proto {other:?}"
            )))
        }
    };
    let authority = req.uri().authority().cloned();
    if let Some(a) = &authority {
        if !req.headers().contains_key(header::HOST) {
            let host = HeaderValue::from_str(a.as_str())
                .map_err(|_| Error::BadRequest("invalid :authority".into()))?;
            req.headers_mut().insert(header::HOST, host);
        }
    }
    if !absolute {
        let path = req
            .uri()
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| uri::PathAndQuery::from_static("/"));
        *req.uri_mut() = Uri::from(path);
    }
    *req.version_mut() = version;
    Ok(true)
}

/// On the server proxy: the app's HTTP/1.x response to a downgraded request, as HTTP/2 (its
/// hop-by-hop headers are already stripped).
/// Tagged with `l5d-orig-proto` naming the app's version, as linkerd2-proxy tags it.
pub fn upgrade_response<B>(rsp: &mut Response<B>) {
    let orig = match rsp.version() {
        Version::HTTP_10 => "HTTP/1.0",
        _ => "HTTP/1.1",
    };
    rsp.headers_mut()
        .insert(L5D_ORIG_PROTO, HeaderValue::from_static(orig));
    *rsp.version_mut() = Version::HTTP_2;
}

pin_project_lite::pin_project! {
    /// The response future of [`Upgrade`] and [`Downgrade`]: the response, its version restored.
    pub struct ResponseFuture<F> {
        #[pin]
        state: State<F>,
    }
}

pin_project_lite::pin_project! {
    #[project = Proj]
    enum State<F> {
        // The request went on as it was.
        Unchanged { #[pin] inner: F },
        // The request was upgraded from `orig`: the response goes back to it.
        Upgraded { #[pin] inner: F, orig: Version },
        // The request was downgraded: the response goes back to HTTP/2.
        Downgraded { #[pin] inner: F },
        // The request could not be rewritten.
        Failed { error: Option<Error> },
    }
}

impl<F> ResponseFuture<F> {
    fn unchanged(inner: F) -> Self {
        Self {
            state: State::Unchanged { inner },
        }
    }

    fn upgraded(inner: F, orig: Version) -> Self {
        Self {
            state: State::Upgraded { inner, orig },
        }
    }

    fn downgraded(inner: F) -> Self {
        Self {
            state: State::Downgraded { inner },
        }
    }

    fn failed(error: Error) -> Self {
        Self {
            state: State::Failed { error: Some(error) },
        }
    }
}

impl<F> Future for ResponseFuture<F>
where
    F: Future<Output = Result<Response<ProxyBody>, Error>>,
{
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Poll::Ready(match self.project().state.project() {
            Proj::Unchanged { inner } => ready!(inner.poll(cx)),
            Proj::Upgraded { inner, orig } => ready!(inner.poll(cx)).map(|mut rsp| {
                downgrade_response(&mut rsp, *orig);
                rsp
            }),
            Proj::Downgraded { inner } => ready!(inner.poll(cx)).map(|mut rsp| {
                upgrade_response(&mut rsp);
                rsp
            }),
            Proj::Failed { error } => match error.take() {
                Some(e) => Err(e),
                None => return Poll::Pending,
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(uri: &str, version: Version) -> Request<()> {
        Request::builder()
            .uri(uri)
            .version(version)
            .header("host", "web.ns.svc.cluster.local:8080")
            .header("x-app", "1")
            .body(())
            .unwrap()
    }

    #[test]
    fn origin_form_round_trips() {
        for v in [Version::HTTP_11, Version::HTTP_10] {
            let mut r = req("/a/b?c=d", v);
            assert_eq!(upgrade_request(&mut r).unwrap(), v);
            assert_eq!(r.version(), Version::HTTP_2);
            assert_eq!(
                r.uri().to_string(),
                "http://web.ns.svc.cluster.local:8080/a/b?c=d"
            );
            let want = if v == Version::HTTP_10 {
                "HTTP/1.0"
            } else {
                "HTTP/1.1"
            };
            assert_eq!(r.headers()[&L5D_ORIG_PROTO], want);
            assert_eq!(
                r.headers()["host"],
                "web.ns.svc.cluster.local:8080",
                "kept for peers that do not rebuild it"
            );

            assert!(downgrade_request(&mut r).unwrap());
            assert_eq!(r.version(), v);
            assert_eq!(r.uri().to_string(), "/a/b?c=d");
            assert_eq!(r.headers()["host"], "web.ns.svc.cluster.local:8080");
            assert_eq!(r.headers()["x-app"], "1");
            assert!(r.headers().get(&L5D_ORIG_PROTO).is_none());
        }
    }

    #[test]
    fn absolute_form_round_trips() {
        let mut r = req("http://web.ns.svc.cluster.local:8080/x", Version::HTTP_11);
        upgrade_request(&mut r).unwrap();
        assert_eq!(r.headers()[&L5D_ORIG_PROTO], "HTTP/1.1; absolute-form");
        assert!(downgrade_request(&mut r).unwrap());
        assert_eq!(
            r.uri().to_string(),
            "http://web.ns.svc.cluster.local:8080/x"
        );
        assert_eq!(r.version(), Version::HTTP_11);
    }

    #[test]
    fn refuses_what_it_cant_carry() {
        let mut r = Request::builder().uri("/").body(()).unwrap();
        assert!(upgrade_request(&mut r).is_err(), "no Host");
        let mut r = req("http://web/", Version::HTTP_2);
        r.headers_mut()
            .insert(L5D_ORIG_PROTO, HeaderValue::from_static("HTTP/3"));
        assert!(downgrade_request(&mut r).is_err());
        let mut plain = req("http://web/", Version::HTTP_2);
        assert!(!downgrade_request(&mut plain).unwrap());
        assert_eq!(plain.version(), Version::HTTP_2);
    }

    #[test]
    fn responses() {
        let mut rsp = Response::builder()
            .version(Version::HTTP_2)
            .header(L5D_ORIG_PROTO, "HTTP/1.1")
            .body(())
            .unwrap();
        downgrade_response(&mut rsp, Version::HTTP_10);
        assert_eq!(rsp.version(), Version::HTTP_10);
        assert!(rsp.headers().get(&L5D_ORIG_PROTO).is_none());
        upgrade_response(&mut rsp);
        assert_eq!(rsp.version(), Version::HTTP_2);
        assert_eq!(
            rsp.headers()[&L5D_ORIG_PROTO],
            "HTTP/1.0",
            "tagged, as upstream"
        );
    }
}
