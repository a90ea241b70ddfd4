//! The filters of a route's rule (inbound and outbound): failure injection, request and
//! response header modifiers, redirects.

use http::{Request, Response};
use linkerd_http::Error;
use linkerd_policy::route::{Filter, PathRewrite};

/// Whether this request falls in `num/den` of requests.
fn in_ratio((num, den): (u32, u32)) -> bool {
    num >= den || (num > 0 && rand::random_range(0..den) < num)
}

pub(crate) fn apply_request<B>(filter: &Filter, req: &mut Request<B>) -> Result<(), Error> {
    match filter {
        Filter::FailHttp {
            status,
            message,
            ratio,
        } => {
            if in_ratio(*ratio) {
                return Err(Error::Injected {
                    status: *status,
                    message: message.clone(),
                });
            }
        }
        Filter::FailGrpc {
            code,
            message,
            ratio,
        } => {
            if in_ratio(*ratio) {
                return Err(Error::InjectedGrpc {
                    code: u16::try_from(*code).unwrap_or(2),
                    message: message.clone(),
                });
            }
        }
        Filter::Headers { add, set, remove } => modify(req.headers_mut(), add, set, remove),
        // Applied to the response ([`apply_response`]).
        Filter::ResponseHeaders { .. } => {}
        Filter::Redirect {
            scheme,
            host,
            path,
            port,
            status,
        } => {
            let uri = req.uri();
            let scheme = scheme
                .clone()
                .or_else(|| uri.scheme_str().map(str::to_string))
                .unwrap_or_else(|| "http".into());
            let orig_host = linkerd_http::authority_of(req)
                .and_then(|a| a.parse::<http::uri::Authority>().ok())
                .map(|a| a.host().to_string())
                .unwrap_or_default();
            let host = host.clone().unwrap_or(orig_host);
            let path = match path {
                None => req.uri().path().to_string(),
                Some(PathRewrite::Full(p)) => p.clone(),
                Some(PathRewrite::Prefix(p)) => p.clone(),
            };
            let location = match port {
                Some(port) => format!("{scheme}://{host}:{port}{path}"),
                None => format!("{scheme}://{host}{path}"),
            };
            let location = http::HeaderValue::from_str(&location)
                .map_err(|_| Error::InvalidPolicy(format!("a redirect to {location:?}")))?;
            return Err(Error::Redirect {
                status: *status,
                location,
            });
        }
    }
    Ok(())
}

/// Applies a rule's response header modifiers (its other filters act on the request).
pub(crate) fn apply_response<B>(filter: &Filter, rsp: &mut Response<B>) {
    if let Filter::ResponseHeaders { add, set, remove } = filter {
        modify(rsp.headers_mut(), add, set, remove);
    }
}

/// Add, then set, then remove.
fn modify(
    h: &mut http::HeaderMap,
    add: &[(http::HeaderName, http::HeaderValue)],
    set: &[(http::HeaderName, http::HeaderValue)],
    remove: &[http::HeaderName],
) {
    for (k, v) in add {
        h.append(k.clone(), v.clone());
    }
    for (k, v) in set {
        h.insert(k.clone(), v.clone());
    }
    for k in remove {
        h.remove(k);
    }
}
