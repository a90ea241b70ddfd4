//! Forwarding one request to an endpoint and its response back.

use crate::{
    headers::{strip_hop_by_hop, wants_upgrade},
    upgrade::spawn_upgrade,
    Endpoint, Error, ProxyBody, ResponseRecorder,
};
use http::{Method, StatusCode, Version};
use hyper::{body::Incoming, Request, Response};

/// Sends `req` to `endpoint` with hop-by-hop headers removed, carries a protocol upgrade
/// (WebSocket, `CONNECT`) when the endpoint accepts one, and records the response.
///
/// A failure becomes the proxy's error response (see [`crate::Error::to_response`]).
pub async fn forward(
    endpoint: &Endpoint<Incoming>,
    req: Request<Incoming>,
    rec: ResponseRecorder,
) -> Response<ProxyBody> {
    match try_forward(endpoint, req, rec).await {
        Ok(rsp) => rsp,
        Err(error) => error.to_response(),
    }
}

/// Like [`forward`], but a failure (already logged and counted) is returned to the caller,
/// e.g. so a balancer can tell a connect failure from a response.
pub async fn try_forward(
    endpoint: &Endpoint<Incoming>,
    mut req: Request<Incoming>,
    rec: ResponseRecorder,
) -> Result<Response<ProxyBody>, Error> {
    let http1 = req.version() != Version::HTTP_2;
    let connect = req.method() == Method::CONNECT;
    let upgrade = http1 && (connect || wants_upgrade(req.headers()));
    strip_hop_by_hop(req.headers_mut(), upgrade);
    let client_upgrade = upgrade.then(|| hyper::upgrade::on(&mut req));

    let mut rsp = match endpoint.send(req).await {
        Ok(rsp) => rsp,
        Err(error) => {
            tracing::info!(%error, "request failed");
            rec.error(error.status());
            return Err(error);
        }
    };

    let switched =
        rsp.status() == StatusCode::SWITCHING_PROTOCOLS || connect && rsp.status().is_success();
    if let Some(client) = client_upgrade.filter(|_| switched) {
        spawn_upgrade(client, hyper::upgrade::on(&mut rsp));
    }
    strip_hop_by_hop(rsp.headers_mut(), switched);
    let (parts, body) = rsp.into_parts();
    let body = rec.response(parts.status, &parts.headers, body);
    Ok(Response::from_parts(parts, ProxyBody::upstream(body)))
}
