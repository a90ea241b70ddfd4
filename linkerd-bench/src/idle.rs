//! Memory held by idle connections: a fresh proxy, `n` client connections that each made one
//! HTTP/1 request and then stay open and idle, the proxy's RSS with them open, and its RSS a
//! while after they all close (whether the allocator gives the memory back).

use crate::{
    procfs,
    topology::{self, Addrs, Env},
};
use serde::Serialize;
use std::{
    io::{Read, Write},
    net::TcpStream,
    time::{Duration, Instant},
};

/// What the idle-connection run measured.
#[derive(Debug, Serialize)]
pub struct IdleResult {
    /// Connections opened (fewer than asked when the file-descriptor limit is lower).
    pub conns: usize,
    /// The proxy's RSS before any connection, in MB.
    pub rss_before_mb: f64,
    /// With every connection open and idle, in MB.
    pub rss_open_mb: f64,
    /// (open - before) / conns, in KB.
    pub kb_per_conn: f64,
    /// `settle` after the last one closed, in MB.
    pub rss_after_mb: f64,
    /// How long after the close `rss_after_mb` was read.
    pub settle_secs: u64,
}

/// Runs the measurement with `n` connections against a new explicit proxy to `backend`.
pub fn measure(
    env: &Env,
    backend: Addrs,
    n: usize,
    settle: Duration,
) -> Result<IdleResult, String> {
    let budget = fd_budget().unwrap_or(n);
    if budget < n {
        eprintln!("idle: {budget} connections, not {n}: the open files limit is too low (raise it with `ulimit -n`)");
    }
    let n = n.min(budget);
    let topo = topology::proxy(env, backend)?;
    let pid = *topo.pids.first().ok_or("the proxy has no pid")?;
    let rss = || procfs::status_mb(pid, "VmRSS:").ok_or("the proxy's RSS is unreadable");
    // One request first, so start-up allocations are not counted per connection.
    drop(connect(topo.targets.http, backend.http)?);
    let rss_before_mb = rss()?;
    let started = Instant::now();
    let mut conns = Vec::with_capacity(n);
    for i in 0..n {
        match connect(topo.targets.http, backend.http) {
            Ok(c) => conns.push(c),
            Err(e) => return Err(format!("connection {i} of {n}: {e}")),
        }
    }
    eprintln!(
        "idle: {} connections open in {:.1}s",
        conns.len(),
        started.elapsed().as_secs_f64()
    );
    let rss_open_mb = rss()?;
    let opened = conns.len();
    drop(conns);
    std::thread::sleep(settle);
    let rss_after_mb = rss()?;
    Ok(IdleResult {
        conns: opened,
        rss_before_mb,
        rss_open_mb,
        kb_per_conn: (rss_open_mb - rss_before_mb) * 1024.0 / opened.max(1) as f64,
        rss_after_mb,
        settle_secs: settle.as_secs(),
    })
}

/// A connection to the explicit proxy at `proxy` that has made one request to `backend` and
/// read its response.
fn connect(
    proxy: std::net::SocketAddr,
    backend: std::net::SocketAddr,
) -> Result<TcpStream, String> {
    let mut s = TcpStream::connect(proxy).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .map_err(|e| e.to_string())?;
    write!(
        s,
        "GET http://{backend}/ HTTP/1.1\r\nHost: {backend}\r\n\r\n"
    )
    .map_err(|e| e.to_string())?;
    // The head, then a body of its Content-Length.
    let mut buf = Vec::with_capacity(4096);
    let mut chunk = [0u8; 4096];
    loop {
        let n = s.read(&mut chunk).map_err(|e| e.to_string())?;
        if n == 0 {
            return Err("closed before the response".into());
        }
        buf.extend_from_slice(&chunk[..n]);
        let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
            continue;
        };
        let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
        let len: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0);
        if buf.len() >= end + 4 + len {
            return Ok(s);
        }
    }
}

/// How many connections this process (and the proxy, which inherits its `RLIMIT_NOFILE`) can
/// hold open, with room to spare.
fn fd_budget() -> Option<usize> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    let soft: usize = line.split_whitespace().nth(3)?.parse().ok()?;
    Some(soft.saturating_sub(256))
}
