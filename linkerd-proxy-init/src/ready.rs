//! `linkerd-await`'s client of the proxy's admin server: `GET /ready` until it answers 2xx,
//! and `POST /shutdown`.

use http_body_util::{BodyExt, Empty};
use hyper::{body::Bytes, Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use std::time::Duration;
use tokio::net::TcpStream;

/// How long one attempt may take, as upstream.
pub const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(5);

/// The exit code when readiness times out (`EX_UNAVAILABLE`).
pub const EXIT_UNAVAILABLE: i32 = 69;

/// The exit code when the command ended without one (killed by a signal).
pub const EXIT_NO_CODE: i32 = 71;

/// Sends one plain HTTP/1.1 request to `localhost:port` and returns the status.
pub async fn request(port: u16, method: Method, path: &str) -> Result<StatusCode, String> {
    let attempt = async {
        let io = TcpStream::connect(("localhost", port))
            .await
            .map_err(|e| format!("connect to localhost:{port}: {e}"))?;
        let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
            .await
            .map_err(|e| format!("HTTP handshake: {e}"))?;
        tokio::spawn(conn);
        let req = Request::builder()
            .method(method)
            .uri(path)
            .header(hyper::header::HOST, format!("localhost:{port}"))
            .body(Empty::<Bytes>::new())
            .map_err(|e| format!("building the request: {e}"))?;
        let rsp = send
            .send_request(req)
            .await
            .map_err(|e| format!("request: {e}"))?;
        let status = rsp.status();
        // The body is small (`ready\n`); drain it so the connection closes cleanly.
        let _ = rsp.into_body().collect().await;
        Ok(status)
    };
    tokio::time::timeout(ATTEMPT_TIMEOUT, attempt)
        .await
        .map_err(|_| format!("no answer within {ATTEMPT_TIMEOUT:?}"))?
}

/// Polls `GET http://localhost:<port>/ready` every `backoff` until it answers 2xx. With a
/// `timeout`, gives up after it and returns the last failure.
pub async fn wait(port: u16, backoff: Duration, timeout: Option<Duration>) -> Result<(), String> {
    let deadline = timeout.map(|t| tokio::time::Instant::now() + t);
    loop {
        let last = match request(port, Method::GET, "/ready").await {
            Ok(s) if s.is_success() => {
                tracing::debug!(%s, "ready");
                return Ok(());
            }
            Ok(s) => format!("/ready answered {s}"),
            Err(e) => e,
        };
        tracing::debug!(reason = %last, "not ready");
        if let Some(deadline) = deadline {
            if tokio::time::Instant::now() + backoff >= deadline {
                return Err(last);
            }
        }
        tokio::time::sleep(backoff).await;
    }
}
