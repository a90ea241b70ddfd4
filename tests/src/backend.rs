//! Test backends: an HTTP/1 + HTTP/2 app, a TCP echo server and a server that speaks first.

use bytes::Bytes;
use futures_util::stream;
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::{combinators::BoxBody, BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::{
    convert::Infallible,
    net::SocketAddr,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
    time::Duration,
};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpListener,
};

type Body = BoxBody<Bytes, hyper::Error>;

/// A running HTTP app.
#[derive(Clone)]
pub struct Http {
    pub addr: SocketAddr,
    connections: Arc<AtomicUsize>,
    requests: Arc<AtomicUsize>,
}

impl Http {
    /// Connections the app has accepted so far.
    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }

    /// Requests the app has received so far.
    pub fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }
}

/// Starts the app on an ephemeral loopback port. It speaks HTTP/1 and HTTP/2 (prior knowledge)
/// and serves:
/// - `/echo`: the request body back, streamed, with the request's trailers as response trailers;
/// - `/headers`: `name: value` lines of the request headers, after a first line
///   `METHOD URI VERSION`;
/// - `/trailers`: body `hello` with trailer `x-trailer: yes`;
/// - `/slow/<ms>`: waits, then 200 `slow`;
/// - `/status/<code>`: an empty response with that status;
/// - `/flaky/<path>`: 503 `flaky` for the app's 1st, 3rd, 5th... request, else as `<path>`;
/// - `/chunks`: three chunks of a streamed body;
/// - `/bytes/<n>`: a body of `n` bytes, streamed in 16 KiB chunks;
/// - `/ws`: a WebSocket-style upgrade that echoes bytes;
/// - anything else: 200 `hello`.
pub async fn http() -> Http {
    http_on("127.0.0.1:0".parse().unwrap()).await
}

/// Like [`http`], on a given address.
pub async fn http_on(addr: SocketAddr) -> Http {
    http_with(addr, Duration::ZERO).await
}

/// Like [`http`], answering every request after `delay` (a slow endpoint).
pub async fn http_delayed(delay: Duration) -> Http {
    http_with("127.0.0.1:0".parse().unwrap(), delay).await
}

/// Like [`http`], answering every request 503 `failing` while `failing` is set (an unhealthy
/// endpoint that can recover).
pub async fn http_failing(failing: Arc<std::sync::atomic::AtomicBool>) -> Http {
    http_full(
        "127.0.0.1:0".parse().unwrap(),
        Duration::ZERO,
        Some(failing),
    )
    .await
}

async fn http_with(addr: SocketAddr, delay: Duration) -> Http {
    http_full(addr, delay, None).await
}

async fn http_full(
    addr: SocketAddr,
    delay: Duration,
    failing: Option<Arc<std::sync::atomic::AtomicBool>>,
) -> Http {
    let listener = TcpListener::bind(addr).await.expect("bind backend");
    let addr = listener.local_addr().unwrap();
    let connections = Arc::new(AtomicUsize::new(0));
    let requests = Arc::new(AtomicUsize::new(0));
    let (count, reqs) = (connections.clone(), requests.clone());
    tokio::spawn(async move {
        loop {
            let Ok((socket, _)) = listener.accept().await else {
                return;
            };
            count.fetch_add(1, Ordering::SeqCst);
            let reqs = reqs.clone();
            let failing = failing.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |mut req: Request<Incoming>| {
                    let n = reqs.fetch_add(1, Ordering::SeqCst);
                    let fail = failing.as_ref().is_some_and(|f| f.load(Ordering::SeqCst));
                    async move {
                        if !delay.is_zero() {
                            tokio::time::sleep(delay).await;
                        }
                        if fail {
                            return Ok(full(StatusCode::SERVICE_UNAVAILABLE, "failing"));
                        }
                        if let Some(rest) = req.uri().path().strip_prefix("/flaky") {
                            if n % 2 == 0 {
                                return Ok(full(StatusCode::SERVICE_UNAVAILABLE, "flaky"));
                            }
                            let rest = if rest.is_empty() { "/" } else { rest };
                            *req.uri_mut() = rest.parse().expect("a path");
                        }
                        Ok::<_, Infallible>(route(req).await)
                    }
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection_with_upgrades(TokioIo::new(socket), svc)
                    .await;
            });
        }
    });
    Http {
        addr,
        connections,
        requests,
    }
}

async fn route(mut req: Request<Incoming>) -> Response<Body> {
    let path = req.uri().path().to_string();
    match path.as_str() {
        "/echo" => {
            let ct = req.headers().get("content-type").cloned();
            let mut rsp = Response::new(req.into_body().boxed());
            if let Some(ct) = ct {
                rsp.headers_mut().insert("content-type", ct);
            }
            rsp
        }
        "/headers" => {
            let mut text = format!("{} {} {:?}\n", req.method(), req.uri(), req.version());
            for (k, v) in req.headers() {
                text.push_str(&format!("{}: {}\n", k, v.to_str().unwrap_or("<binary>")));
            }
            full(StatusCode::OK, text)
        }
        "/trailers" => {
            let mut trailers = HeaderMap::new();
            trailers.insert("x-trailer", "yes".parse().unwrap());
            let frames = vec![
                Ok::<_, hyper::Error>(Frame::data(Bytes::from("hello"))),
                Ok(Frame::trailers(trailers)),
            ];
            let mut rsp = Response::new(StreamBody::new(stream::iter(frames)).boxed());
            // HTTP/1 servers send only the trailer fields they declare.
            rsp.headers_mut()
                .insert("trailer", "x-trailer".parse().unwrap());
            rsp
        }
        "/chunks" => {
            let frames = (0..3)
                .map(|i| Ok::<_, hyper::Error>(Frame::data(Bytes::from(format!("chunk{i};")))));
            Response::new(StreamBody::new(stream::iter(frames)).boxed())
        }
        "/ws" => {
            let on_upgrade = hyper::upgrade::on(&mut req);
            tokio::spawn(async move {
                if let Ok(upgraded) = on_upgrade.await {
                    let mut io = TokioIo::new(upgraded);
                    let mut buf = [0u8; 1024];
                    loop {
                        match io.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => {
                                if io.write_all(&buf[..n]).await.is_err() {
                                    return;
                                }
                            }
                        }
                    }
                }
            });
            let mut rsp = full(StatusCode::SWITCHING_PROTOCOLS, "");
            rsp.headers_mut()
                .insert("connection", "upgrade".parse().unwrap());
            rsp.headers_mut()
                .insert("upgrade", "websocket".parse().unwrap());
            rsp
        }
        p if p.starts_with("/slow/") => {
            let ms: u64 = p[6..].parse().unwrap_or(100);
            tokio::time::sleep(Duration::from_millis(ms)).await;
            full(StatusCode::OK, "slow")
        }
        p if p.starts_with("/bytes/") => {
            const CHUNK: usize = 16 * 1024;
            let n: usize = p[7..].parse().unwrap_or(0);
            let chunk = Bytes::from(vec![b'x'; CHUNK]);
            let frames = (0..n.div_ceil(CHUNK)).map(move |i| {
                let len = CHUNK.min(n - i * CHUNK);
                Ok::<_, hyper::Error>(Frame::data(chunk.slice(..len)))
            });
            Response::new(StreamBody::new(stream::iter(frames)).boxed())
        }
        p if p.starts_with("/status/") => {
            let code: u16 = p[8..].parse().unwrap_or(500);
            full(
                StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
                "",
            )
        }
        _ => full(StatusCode::OK, "hello"),
    }
}

fn full(status: StatusCode, body: impl Into<Bytes>) -> Response<Body> {
    let mut rsp = Response::new(
        Full::new(body.into())
            .map_err(|never| match never {})
            .boxed(),
    );
    *rsp.status_mut() = status;
    rsp
}

/// A TCP server that echoes what it reads; when the client half-closes, it writes `bye` and
/// closes its side too.
pub async fn tcp_echo() -> SocketAddr {
    tcp_echo_on("127.0.0.1:0".parse().unwrap()).await
}

/// Like [`tcp_echo`], on a given address.
pub async fn tcp_echo_on(addr: SocketAddr) -> SocketAddr {
    serve_tcp(addr, |mut socket| async move {
        let mut buf = [0u8; 16 * 1024];
        loop {
            match socket.read(&mut buf).await {
                Ok(0) => {
                    let _ = socket.write_all(b"bye").await;
                    let _ = socket.shutdown().await;
                    return;
                }
                Ok(n) => {
                    if socket.write_all(&buf[..n]).await.is_err() {
                        return;
                    }
                }
                Err(_) => return,
            }
        }
    })
    .await
}

/// A TCP server that writes `banner` as soon as a client connects (like SMTP or MySQL), then
/// echoes.
pub async fn server_first(banner: &'static [u8]) -> SocketAddr {
    serve_tcp(local(), move |mut socket| async move {
        if socket.write_all(banner).await.is_err() {
            return;
        }
        let mut buf = [0u8; 1024];
        while let Ok(n) = socket.read(&mut buf).await {
            if n == 0 || socket.write_all(&buf[..n]).await.is_err() {
                return;
            }
        }
    })
    .await
}

/// A TCP server that accepts, reads and discards everything, and never answers (a hung or
/// blackholed app): the proxy hears nothing from it.
pub async fn blackhole() -> SocketAddr {
    serve_tcp(local(), |mut socket| async move {
        let mut buf = [0u8; 16 * 1024];
        while matches!(socket.read(&mut buf).await, Ok(n) if n > 0) {}
    })
    .await
}

fn local() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

/// Binds `addr` and serves each accepted connection with `serve`, in its own task.
async fn serve_tcp<F, Fut>(addr: SocketAddr, serve: F) -> SocketAddr
where
    F: Fn(tokio::net::TcpStream) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let listener = TcpListener::bind(addr).await.expect("bind a test server");
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            tokio::spawn(serve(socket));
        }
    });
    addr
}

/// An HTTP/2 server (prior knowledge) that recycles its connections as many servers do
/// (hypercorn's `max_requests`, Go's `MaxStreams`-style rotation): after `per_conn` streams on a
/// connection it shuts the connection down gracefully with `GOAWAY`, so streams a client opens
/// meanwhile are refused unprocessed. Each request is answered 200 with body `<method> <n>`,
/// `n` being the length of the request body it read. The app's count of connections is kept.
pub async fn recycling_h2(per_conn: usize) -> Http {
    let listener = TcpListener::bind(local())
        .await
        .expect("bind a test server");
    let addr = listener.local_addr().unwrap();
    let app = Http {
        addr,
        connections: Arc::new(AtomicUsize::new(0)),
        requests: Arc::new(AtomicUsize::new(0)),
    };
    let counts = app.clone();
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            counts.connections.fetch_add(1, Ordering::SeqCst);
            let requests = counts.requests.clone();
            tokio::spawn(async move {
                let Ok(mut conn) = h2::server::handshake(socket).await else {
                    return;
                };
                let mut accepted = 0;
                while let Some(Ok((req, mut respond))) = conn.accept().await {
                    requests.fetch_add(1, Ordering::SeqCst);
                    accepted += 1;
                    if accepted == per_conn {
                        conn.graceful_shutdown();
                    }
                    tokio::spawn(async move {
                        let method = req.method().clone();
                        let mut body = req.into_body();
                        let mut n = 0;
                        while let Some(Ok(chunk)) = body.data().await {
                            n += chunk.len();
                            let _ = body.flow_control().release_capacity(chunk.len());
                        }
                        let rsp = Response::builder().status(200).body(()).unwrap();
                        if let Ok(mut send) = respond.send_response(rsp, false) {
                            let _ = send.send_data(Bytes::from(format!("{method} {n}")), true);
                        }
                    });
                }
            });
        }
    });
    app
}
