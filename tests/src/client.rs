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

/// `GET path` with `Host: web` and an empty body.
pub fn req(path: &str) -> Request<Full<Bytes>> {
    Request::get(path)
        .header("host", "web")
        .body(Full::default())
        .expect("a valid request")
}
