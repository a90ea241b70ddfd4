//! Test clients: hyper HTTP/1 and HTTP/2 connections.

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::{
    body::Incoming,
    client::conn::{http1, http2},
};
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::net::SocketAddr;
use tokio::net::TcpStream;

/// An HTTP/1 connection to `addr`, with upgrades enabled.
pub async fn http1<B>(addr: SocketAddr) -> http1::SendRequest<B>
where
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let io = TcpStream::connect(addr).await.expect("connect");
    let (tx, conn) = http1::handshake(TokioIo::new(io))
        .await
        .expect("HTTP/1 handshake");
    tokio::spawn(async move {
        let _ = conn.with_upgrades().await;
    });
    tx
}

/// An HTTP/2 (prior knowledge) connection to `addr`.
pub async fn http2<B>(addr: SocketAddr) -> http2::SendRequest<B>
where
    B: hyper::body::Body + Send + Unpin + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let io = TcpStream::connect(addr).await.expect("connect");
    let (tx, conn) = http2::handshake(TokioExecutor::new(), TokioIo::new(io))
        .await
        .expect("HTTP/2 handshake");
    tokio::spawn(async move {
        let _ = conn.await;
    });
    tx
}

/// `GET path` over a new HTTP/1 connection; returns the status and body text.
pub async fn get(addr: SocketAddr, path: &str) -> (u16, String) {
    let mut tx = http1::<Full<Bytes>>(addr).await;
    let req = Request::get(path)
        .header("host", addr.to_string())
        .body(Full::default())
        .unwrap();
    let rsp = tx.send_request(req).await.expect("request");
    text(rsp).await
}

/// The status and body text of a response.
pub async fn text(rsp: Response<Incoming>) -> (u16, String) {
    let status = rsp.status().as_u16();
    let body = rsp.into_body().collect().await.expect("body").to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

/// Sends `req` (these extra headers, an empty body) on `tx`: the status, the response's
/// headers and its body.
pub async fn send(
    tx: &mut http1::SendRequest<Full<Bytes>>,
    mut req: http::request::Builder,
    headers: &[(&str, &str)],
) -> (u16, http::HeaderMap, Bytes) {
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let req = req.body(Full::default()).expect("a valid request");
    // The connection takes the next request once the last response is done with.
    tx.ready().await.expect("the connection is still open");
    let rsp = tx.send_request(req).await.expect("response");
    let (parts, body) = rsp.into_parts();
    let body = body.collect().await.expect("body").to_bytes();
    (parts.status.as_u16(), parts.headers, body)
}

/// `GET path` with `Host: web` and an empty body.
pub fn req(path: &str) -> Request<Full<Bytes>> {
    Request::get(path)
        .header("host", "web")
        .body(Full::default())
        .expect("a valid request")
}

/// Opens a `CONNECT target` tunnel through an explicit proxy; returns the stream after the
/// response head and the head itself (e.g. `HTTP/1.1 200 OK ...`).
pub async fn connect_tunnel(proxy: SocketAddr, target: &str) -> (TcpStream, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = TcpStream::connect(proxy)
        .await
        .expect("connect to the proxy");
    s.write_all(format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n").as_bytes())
        .await
        .expect("write CONNECT");
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut b = [0u8; 1];
        if s.read_exact(&mut b).await.is_err() {
            break;
        }
        head.push(b[0]);
    }
    (s, String::from_utf8_lossy(&head).into_owned())
}
