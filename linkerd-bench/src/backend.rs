//! The benchmark backends: an HTTP/1 + HTTP/2 server with a fixed body (and gRPC-style unary
//! replies), a TCP echo server and a TCP sink. Each counts the connections it accepts.

use bytes::{BufMut, Bytes, BytesMut};
use http::{HeaderMap, Request, Response};
use http_body_util::{combinators::BoxBody, BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::{
    convert::Infallible,
    net::SocketAddr,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpListener,
};

/// Where the backends listen.
#[derive(Clone, Debug)]
pub struct BackendArgs {
    pub http: Vec<SocketAddr>,
    pub echo: Vec<SocketAddr>,
    pub sink: Vec<SocketAddr>,
    /// Servers that speak first: a banner on each connection, then they read to EOF.
    pub banner: Vec<SocketAddr>,
    pub body_size: usize,
    /// Every HTTP response waits this long (a slow endpoint).
    pub delay: std::time::Duration,
}

/// Serves until killed. `GET /__stats` on an HTTP port returns `{"connections": N}`, the
/// connections accepted on every port so far.
pub async fn run(args: BackendArgs) -> std::io::Result<()> {
    let conns = Arc::new(AtomicU64::new(0));
    let body = Bytes::from(vec![b'x'; args.body_size]);
    let delay = args.delay;
    for addr in &args.http {
        let l = TcpListener::bind(addr).await?;
        let (conns, body) = (conns.clone(), body.clone());
        tokio::spawn(async move {
            while let Ok((s, _)) = l.accept().await {
                conns.fetch_add(1, Ordering::Relaxed);
                let _ = s.set_nodelay(true);
                let (conns, body) = (conns.clone(), body.clone());
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req| {
                        let (body, conns) = (body.clone(), conns.clone());
                        async move {
                            if !delay.is_zero() && req.uri().path() != "/__stats" {
                                tokio::time::sleep(delay).await;
                            }
                            Ok::<_, Infallible>(respond(req, &body, &conns).await)
                        }
                    });
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(s), svc)
                        .await;
                });
            }
        });
    }
    for addr in &args.echo {
        let l = TcpListener::bind(addr).await?;
        let conns = conns.clone();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = l.accept().await {
                conns.fetch_add(1, Ordering::Relaxed);
                let _ = s.set_nodelay(true);
                tokio::spawn(async move {
                    let (mut r, mut w) = s.split();
                    let _ = tokio::io::copy(&mut r, &mut w).await;
                });
            }
        });
    }
    for addr in &args.sink {
        let l = TcpListener::bind(addr).await?;
        let conns = conns.clone();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = l.accept().await {
                conns.fetch_add(1, Ordering::Relaxed);
                tokio::spawn(async move {
                    // Read to EOF, then report the byte count (8 bytes, big-endian).
                    let mut buf = vec![0u8; 64 * 1024];
                    let mut total = 0u64;
                    while let Ok(n) = s.read(&mut buf).await {
                        if n == 0 {
                            break;
                        }
                        total += n as u64;
                    }
                    let _ = s.write_all(&total.to_be_bytes()).await;
                });
            }
        });
    }
    for addr in &args.banner {
        let l = TcpListener::bind(addr).await?;
        let conns = conns.clone();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = l.accept().await {
                conns.fetch_add(1, Ordering::Relaxed);
                let _ = s.set_nodelay(true);
                tokio::spawn(async move {
                    s.write_all(b"220 linkerd-bench ready\r\n").await?;
                    let mut buf = [0u8; 1024];
                    while s.read(&mut buf).await? > 0 {}
                    Ok::<_, std::io::Error>(())
                });
            }
        });
    }
    std::future::pending().await
}

type Body = BoxBody<Bytes, Infallible>;

async fn respond(req: Request<Incoming>, body: &Bytes, conns: &AtomicU64) -> Response<Body> {
    if req.uri().path() == "/__stats" {
        let stats = format!("{{\"connections\": {}}}", conns.load(Ordering::Relaxed));
        return Response::new(Full::new(Bytes::from(stats)).boxed());
    }
    let grpc = req
        .headers()
        .get("content-type")
        .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"));
    // Read the request (as a real server would) before answering: answering first makes
    // HTTP/2 reset the stream while the client is still sending.
    let _ = req.into_body().collect().await;
    if !grpc {
        return Response::new(Full::new(body.clone()).boxed());
    }
    // A gRPC-style unary reply: one length-prefixed message, then `grpc-status: 0`.
    let mut msg = BytesMut::with_capacity(5 + body.len());
    msg.put_u8(0);
    msg.put_u32(body.len() as u32);
    msg.put_slice(body);
    let mut trailers = HeaderMap::new();
    trailers.insert("grpc-status", http::HeaderValue::from_static("0"));
    let frames = vec![
        Ok::<_, Infallible>(Frame::data(msg.freeze())),
        Ok(Frame::trailers(trailers)),
    ];
    let mut rsp = Response::new(StreamBody::new(futures_util::stream::iter(frames)).boxed());
    rsp.headers_mut().insert(
        "content-type",
        http::HeaderValue::from_static("application/grpc"),
    );
    rsp
}
