//! The load generator: open-loop (requests on a fixed timetable, latency measured from the
//! scheduled time, like wrk2, so a stall is not hidden by coordinated omission) and closed-loop
//! (as fast as each connection can go), over HTTP/1, HTTP/2, gRPC-style unary and raw TCP.

use bytes::{BufMut, Bytes, BytesMut};
use hdrhistogram::Histogram;
use http::Request;
use http_body_util::{BodyExt, Empty, Full};
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde::{Deserialize, Serialize};
use std::{
    net::SocketAddr,
    rc::Rc,
    sync::atomic::{AtomicU64, Ordering},
    time::{Duration, Instant},
};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

/// A benchmark scenario.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Scenario {
    Http1Keepalive,
    Http1KeepaliveMax,
    Http1ConnPerRequest,
    Http2,
    GrpcUnary,
    TcpPingpong,
    TcpBulk,
    /// Connect and wait for a server that speaks first (a banner): the latency is connect to
    /// first byte, what a MySQL, SMTP or NATS client waits at every connection.
    TcpBanner,
}

/// Which backend a scenario talks to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Http,
    Echo,
    Sink,
    Banner,
}

/// How one load run goes.
#[derive(Clone, Debug)]
pub struct LoadArgs {
    pub scenario: Scenario,
    /// Where to connect.
    pub target: SocketAddr,
    /// When set, `target` is an explicit proxy and this names the backend (absolute-form
    /// URIs, `:authority`, `CONNECT`).
    pub via_proxy: Option<String>,
    /// Requests per second, for open-loop scenarios.
    pub rate: u64,
    pub duration: Duration,
    /// Concurrent connections (HTTP/2: concurrent streams on one connection).
    pub conns: usize,
    /// More HTTP/1 targets: each request goes to the next of `target` and these, in turn.
    pub round_robin: Vec<SocketAddr>,
}

/// What a load run measured.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct LoadResult {
    pub requests: u64,
    pub errors: u64,
    pub elapsed_s: f64,
    pub bytes: u64,
    pub latency_us: Latency,
    pub first_error: Option<String>,
}

/// Latency percentiles, in microseconds.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Latency {
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub p999: f64,
    pub max: f64,
}

impl Scenario {
    /// Every scenario, in report order.
    pub const ALL: [Scenario; 8] = [
        Scenario::Http1Keepalive,
        Scenario::Http1KeepaliveMax,
        Scenario::Http1ConnPerRequest,
        Scenario::Http2,
        Scenario::GrpcUnary,
        Scenario::TcpPingpong,
        Scenario::TcpBulk,
        Scenario::TcpBanner,
    ];

    /// The name used in reports and JSON.
    pub fn name(self) -> &'static str {
        match self {
            Scenario::Http1Keepalive => "http1-keepalive",
            Scenario::Http1KeepaliveMax => "http1-keepalive-max",
            Scenario::Http1ConnPerRequest => "http1-conn-per-request",
            Scenario::Http2 => "http2",
            Scenario::GrpcUnary => "grpc-unary",
            Scenario::TcpPingpong => "tcp-pingpong",
            Scenario::TcpBulk => "tcp-bulk",
            Scenario::TcpBanner => "tcp-banner",
        }
    }

    pub fn backend(self) -> Backend {
        match self {
            Scenario::TcpPingpong => Backend::Echo,
            Scenario::TcpBulk => Backend::Sink,
            Scenario::TcpBanner => Backend::Banner,
            _ => Backend::Http,
        }
    }

    /// Open-loop scenarios run on a timetable; the others as fast as they can.
    pub fn open_loop(self) -> bool {
        matches!(
            self,
            Scenario::Http1Keepalive
                | Scenario::Http1ConnPerRequest
                | Scenario::Http2
                | Scenario::GrpcUnary
        )
    }
}

/// One connection's (or stream's) way of making a request.
enum Requester {
    Http1 {
        tx: Option<http1::SendRequest<Empty<Bytes>>>,
        reuse: bool,
    },
    RoundRobin {
        conns: Vec<http1::SendRequest<Empty<Bytes>>>,
        next: usize,
    },
    Http2 {
        tx: http2::SendRequest<Full<Bytes>>,
        grpc: bool,
    },
    Ping {
        io: TcpStream,
    },
    /// A new connection per request.
    Banner,
}

struct Ctx {
    args: LoadArgs,
    authority: String,
    next: AtomicU64,
    /// When the schedule starts: after every connection is up, so connection set-up (a
    /// warm-up cost, except where a scenario makes it per request) is not counted as latency.
    start: std::cell::Cell<Instant>,
}

/// Runs the load and returns what it measured.
pub async fn run(args: LoadArgs) -> LoadResult {
    if args.scenario == Scenario::TcpBulk {
        return bulk(&args).await;
    }
    let authority = args
        .via_proxy
        .clone()
        .unwrap_or_else(|| args.target.to_string());
    let ctx = Rc::new(Ctx {
        args,
        authority,
        next: AtomicU64::new(0),
        start: std::cell::Cell::new(Instant::now()),
    });
    // One HTTP/2 connection carries every stream.
    let h2 = match ctx.args.scenario {
        Scenario::Http2 | Scenario::GrpcUnary => match h2_connect(&ctx).await {
            Ok(tx) => Some(tx),
            Err(e) => {
                return LoadResult {
                    errors: 1,
                    first_error: Some(e),
                    ..Default::default()
                }
            }
        },
        _ => None,
    };
    let local = tokio::task::LocalSet::new();
    // Connect every worker first (a failure is retried, and counted, by the worker).
    let mut initial = Vec::new();
    for _ in 0..ctx.args.conns.max(1) {
        initial.push(local.run_until(connect(&ctx, h2.as_ref())).await.ok());
    }
    ctx.start.set(Instant::now());
    let workers: Vec<_> = initial
        .into_iter()
        .map(|requester| {
            let (ctx, h2) = (ctx.clone(), h2.clone());
            local.spawn_local(async move { worker(ctx, h2, requester).await })
        })
        .collect();
    let results = local
        .run_until(async move {
            let mut out = Vec::new();
            for w in workers {
                out.push(w.await.expect("worker"));
            }
            out
        })
        .await;
    let elapsed = ctx.start.get().elapsed().as_secs_f64();
    let mut hist = new_hist();
    let mut res = LoadResult {
        elapsed_s: elapsed,
        ..Default::default()
    };
    for (h, requests, errors, bytes, first_error) in results {
        hist.add(h).expect("same bounds");
        res.requests += requests;
        res.errors += errors;
        res.bytes += bytes;
        if res.first_error.is_none() {
            res.first_error = first_error;
        }
    }
    res.latency_us = latency(&hist);
    res
}

type WorkerResult = (Histogram<u64>, u64, u64, u64, Option<String>);

async fn worker(
    ctx: Rc<Ctx>,
    h2: Option<http2::SendRequest<Full<Bytes>>>,
    mut requester: Option<Requester>,
) -> WorkerResult {
    let args = &ctx.args;
    let start = ctx.start.get();
    let deadline = start + args.duration;
    let interval = Duration::from_secs_f64(1.0 / args.rate.max(1) as f64);
    let total = (args.rate as f64 * args.duration.as_secs_f64()) as u64;
    let mut hist = new_hist();
    let (mut ok, mut errors, mut bytes, mut first_error) = (0u64, 0u64, 0u64, None);
    loop {
        let scheduled = if args.scenario.open_loop() {
            let i = ctx.next.fetch_add(1, Ordering::Relaxed);
            if i >= total {
                break;
            }
            let at = start + interval * i as u32;
            if at > Instant::now() {
                // Ahead of schedule: wait. A timer fires up to a millisecond or two late;
                // that is the generator's slack, not the system's, so the clock starts at
                // the wake-up.
                tokio::time::sleep_until(at.into()).await;
                Instant::now()
            } else {
                // Behind schedule (this connection was still busy at its slot): the wait is
                // the system's, measured from the scheduled time (no coordinated omission).
                at
            }
        } else {
            let now = Instant::now();
            if now >= deadline {
                break;
            }
            now
        };
        if requester.is_none() {
            match connect(&ctx, h2.as_ref()).await {
                Ok(r) => requester = Some(r),
                Err(e) => {
                    errors += 1;
                    first_error.get_or_insert(e);
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            }
        }
        let r = requester.as_mut().expect("connected above");
        match once(&ctx, r).await {
            Ok(n) => {
                ok += 1;
                bytes += n;
                let us = scheduled.elapsed().as_micros() as u64;
                let _ = hist.record(us.clamp(1, 60_000_000));
            }
            Err(e) => {
                errors += 1;
                first_error.get_or_insert(e);
                requester = None;
            }
        }
    }
    (hist, ok, errors, bytes, first_error)
}

async fn connect(
    ctx: &Ctx,
    h2: Option<&http2::SendRequest<Full<Bytes>>>,
) -> Result<Requester, String> {
    let scenario = ctx.args.scenario;
    Ok(match scenario {
        Scenario::Http2 | Scenario::GrpcUnary => Requester::Http2 {
            tx: h2.cloned().ok_or("no HTTP/2 connection")?,
            grpc: scenario == Scenario::GrpcUnary,
        },
        Scenario::TcpPingpong => Requester::Ping {
            io: tcp_connect(ctx).await?,
        },
        Scenario::TcpBanner => Requester::Banner,
        Scenario::Http1ConnPerRequest => Requester::Http1 {
            tx: None,
            reuse: false,
        },
        _ if !ctx.args.round_robin.is_empty() => {
            let mut conns = vec![h1_connect_to(ctx.args.target).await?];
            for t in &ctx.args.round_robin {
                conns.push(h1_connect_to(*t).await?);
            }
            Requester::RoundRobin { conns, next: 0 }
        }
        _ => Requester::Http1 {
            tx: Some(h1_connect(ctx).await?),
            reuse: true,
        },
    })
}

async fn once(ctx: &Ctx, r: &mut Requester) -> Result<u64, String> {
    match r {
        Requester::Http1 { tx, reuse } => {
            let mut conn = match tx.take() {
                Some(c) => c,
                None => h1_connect(ctx).await?,
            };
            let req = match &ctx.args.via_proxy {
                Some(auth) => Request::get(format!("http://{auth}/")),
                None => Request::get("/").header("host", &ctx.authority),
            };
            let n = h1_get(&mut conn, req).await?;
            if *reuse {
                *tx = Some(conn);
            }
            Ok(n)
        }
        Requester::RoundRobin { conns, next } => {
            let i = *next % conns.len();
            *next = next.wrapping_add(1);
            h1_get(&mut conns[i], Request::get("/")).await
        }
        Requester::Http2 { tx, grpc } => {
            let uri = format!("http://{}/bench.Echo/Unary", ctx.authority);
            let req = if *grpc {
                let mut msg = BytesMut::with_capacity(5 + 100);
                msg.put_u8(0);
                msg.put_u32(100);
                msg.put_slice(&[b'g'; 100]);
                Request::post(uri)
                    .header("content-type", "application/grpc")
                    .header("te", "trailers")
                    .body(Full::new(msg.freeze()))
            } else {
                Request::get(uri).body(Full::default())
            }
            .map_err(|e| e.to_string())?;
            let mut tx = tx.clone();
            let rsp = tx.send_request(req).await.map_err(|e| e.to_string())?;
            let status = rsp.status();
            let collected = rsp.into_body().collect().await.map_err(|e| e.to_string())?;
            if !status.is_success() {
                return Err(format!("status {status}"));
            }
            if *grpc {
                let ok = collected
                    .trailers()
                    .and_then(|t| t.get("grpc-status"))
                    .is_some_and(|s| s == "0");
                if !ok {
                    return Err("missing grpc-status: 0".into());
                }
            }
            Ok(collected.to_bytes().len() as u64)
        }
        Requester::Ping { io } => {
            io.write_all(b"p").await.map_err(|e| e.to_string())?;
            let mut b = [0u8; 1];
            io.read_exact(&mut b).await.map_err(|e| e.to_string())?;
            Ok(1)
        }
        Requester::Banner => {
            // Bounded: without server-first detection a banner waits out both proxies'
            // detect timeouts (10 s each).
            let banner = async {
                let mut io = tcp_connect(ctx).await?;
                let mut b = [0u8; 64];
                match io.read(&mut b).await.map_err(|e| e.to_string())? {
                    0 => Err("closed before the banner".to_string()),
                    n => Ok(n as u64),
                }
            };
            tokio::time::timeout(Duration::from_secs(30), banner)
                .await
                .map_err(|_| "no banner in 30 s".to_string())?
        }
    }
}

/// Sends a bodyless request on an HTTP/1 connection; returns the response body's length.
async fn h1_get(
    conn: &mut http1::SendRequest<Empty<Bytes>>,
    req: http::request::Builder,
) -> Result<u64, String> {
    conn.ready().await.map_err(|e| e.to_string())?;
    let req = req.body(Empty::new()).map_err(|e| e.to_string())?;
    let rsp = conn.send_request(req).await.map_err(|e| e.to_string())?;
    let status = rsp.status();
    let body = rsp
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    if !status.is_success() {
        return Err(format!("status {status}"));
    }
    Ok(body.len() as u64)
}

async fn h1_connect(ctx: &Ctx) -> Result<http1::SendRequest<Empty<Bytes>>, String> {
    h1_connect_to(ctx.args.target).await
}

async fn h1_connect_to(target: SocketAddr) -> Result<http1::SendRequest<Empty<Bytes>>, String> {
    let io = TcpStream::connect(target)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let _ = io.set_nodelay(true);
    let (tx, conn) = http1::handshake(TokioIo::new(io))
        .await
        .map_err(|e| e.to_string())?;
    tokio::task::spawn_local(async move {
        let _ = conn.await;
    });
    Ok(tx)
}

async fn h2_connect(ctx: &Ctx) -> Result<http2::SendRequest<Full<Bytes>>, String> {
    let io = TcpStream::connect(ctx.args.target)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let _ = io.set_nodelay(true);
    let (tx, conn) = http2::Builder::new(TokioExecutor::new())
        .handshake(TokioIo::new(io))
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(tx)
}

/// Connects to the TCP target, through a `CONNECT` tunnel when going via an explicit proxy.
async fn tcp_connect(ctx: &Ctx) -> Result<TcpStream, String> {
    let mut io = TcpStream::connect(ctx.args.target)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let _ = io.set_nodelay(true);
    if let Some(auth) = &ctx.args.via_proxy {
        io.write_all(format!("CONNECT {auth} HTTP/1.1\r\nHost: {auth}\r\n\r\n").as_bytes())
            .await
            .map_err(|e| e.to_string())?;
        let mut head = Vec::new();
        while !head.ends_with(b"\r\n\r\n") {
            let mut b = [0u8; 1];
            io.read_exact(&mut b)
                .await
                .map_err(|e| format!("CONNECT: {e}"))?;
            head.push(b[0]);
            if head.len() > 4096 {
                return Err("CONNECT: response head too long".into());
            }
        }
        if !head.starts_with(b"HTTP/1.1 200") {
            return Err(format!(
                "CONNECT: {}",
                String::from_utf8_lossy(&head).lines().next().unwrap_or("")
            ));
        }
    }
    Ok(io)
}

/// Bulk transfer: one connection writes for the whole duration, then checks the sink's count.
async fn bulk(args: &LoadArgs) -> LoadResult {
    let authority = args
        .via_proxy
        .clone()
        .unwrap_or_else(|| args.target.to_string());
    let ctx = Ctx {
        args: args.clone(),
        authority,
        next: AtomicU64::new(0),
        start: std::cell::Cell::new(Instant::now()),
    };
    let run = async {
        let mut io = tcp_connect(&ctx).await?;
        let chunk = Bytes::from(vec![0xabu8; 64 * 1024]);
        let start = Instant::now();
        let mut sent = 0u64;
        while start.elapsed() < args.duration {
            io.write_all(&chunk).await.map_err(|e| e.to_string())?;
            sent += chunk.len() as u64;
        }
        io.shutdown().await.map_err(|e| e.to_string())?;
        let mut count = [0u8; 8];
        io.read_exact(&mut count)
            .await
            .map_err(|e| format!("sink count: {e}"))?;
        let elapsed = start.elapsed().as_secs_f64();
        let got = u64::from_be_bytes(count);
        if got != sent {
            return Err(format!("sink received {got} of {sent} bytes"));
        }
        Ok::<_, String>((sent, elapsed))
    };
    match run.await {
        // A bulk "request" is one megabyte, so CPU per 1,000 requests reads as CPU per GB.
        Ok((bytes, elapsed_s)) => LoadResult {
            requests: bytes / 1_000_000,
            bytes,
            elapsed_s,
            ..Default::default()
        },
        Err(e) => LoadResult {
            errors: 1,
            first_error: Some(e),
            ..Default::default()
        },
    }
}

fn new_hist() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid bounds")
}

fn latency(h: &Histogram<u64>) -> Latency {
    if h.is_empty() {
        return Latency::default();
    }
    Latency {
        p50: h.value_at_quantile(0.50) as f64,
        p90: h.value_at_quantile(0.90) as f64,
        p99: h.value_at_quantile(0.99) as f64,
        p999: h.value_at_quantile(0.999) as f64,
        max: h.max() as f64,
    }
}
