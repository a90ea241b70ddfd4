//! The machine's own wake-up cost: a one-byte TCP round trip between two idle processes, one
//! millisecond apart, with both on one CPU and with each on its own CPU.
//!
//! Every hop of a proxied request wakes a sleeping process; when the two sides sit on different
//! CPUs the wake-up needs an inter-processor interrupt, which on a virtual machine can cost far
//! more than the proxy's own work. Reporting this floor beside the results says how much of an
//! added latency is the machine's.

use serde::Serialize;
use std::{
    io::{Read, Write},
    net::{SocketAddr, TcpListener, TcpStream},
    process::Stdio,
    time::{Duration, Instant},
};

const GAP: Duration = Duration::from_millis(1);

/// One placement's round-trip latency.
#[derive(Clone, Debug, Serialize)]
pub struct Wakeup {
    /// `same-cpu` or `cross-cpu`.
    pub placement: &'static str,
    pub p50_us: f64,
    pub p99_us: f64,
    pub p999_us: f64,
}

/// Measures both placements on CPUs 0 and 1, `count` round trips each; `None` without two
/// CPUs or `taskset`.
pub fn measure(self_bin: &std::path::Path, count: usize) -> Option<Vec<Wakeup>> {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    if cpus < 2 {
        return None;
    }
    let mut out = Vec::new();
    for (placement, echo_cpu, ping_cpu) in [("same-cpu", "1", "1"), ("cross-cpu", "0", "1")] {
        match once(self_bin, echo_cpu, ping_cpu, count) {
            Ok(mut us) if !us.is_empty() => {
                us.sort_by(|a, b| a.total_cmp(b));
                // Nearest rank: the smallest value with at least q of the samples at or below.
                let at = |q: f64| {
                    let rank = (us.len() as f64 * q).ceil() as usize;
                    us[rank.clamp(1, us.len()) - 1]
                };
                out.push(Wakeup {
                    placement,
                    p50_us: at(0.5),
                    p99_us: at(0.99),
                    p999_us: at(0.999),
                });
            }
            Ok(_) => {
                eprintln!("linkerd-bench: wake-up calibration ({placement}): no round trips");
                return None;
            }
            Err(e) => {
                eprintln!("linkerd-bench: wake-up calibration ({placement}): {e}");
                return None;
            }
        }
    }
    Some(out)
}

/// One line for the report.
pub fn summary(w: &[Wakeup]) -> String {
    let mut out =
        String::from("machine: idle wake-up round trip (1-byte TCP ping-pong, 1 ms apart):");
    for p in w {
        out.push_str(&format!(
            " {} p50 {:.0}us p99 {:.0}us p999 {:.0}us;",
            p.placement, p.p50_us, p.p99_us, p.p999_us
        ));
    }
    out.pop();
    out
}

fn once(
    self_bin: &std::path::Path,
    echo_cpu: &str,
    ping_cpu: &str,
    count: usize,
) -> Result<Vec<f64>, String> {
    let addr = crate::topology::loopback(crate::topology::free_port());
    let pinned = |cpu: &str| crate::topology::pinned(&Some(cpu.to_string()), self_bin);
    let mut echo = pinned(echo_cpu)
        .args(["wakeup-echo", &addr.to_string()])
        .stdout(Stdio::null())
        .spawn()
        .map_err(|e| format!("taskset: {e}"))?;
    let result = (|| {
        crate::topology::wait_listening(addr, "wake-up echo")?;
        let out = pinned(ping_cpu)
            .args(["wakeup-ping", &addr.to_string(), &count.to_string()])
            .output()
            .map_err(|e| format!("taskset: {e}"))?;
        if !out.status.success() {
            return Err(String::from_utf8_lossy(&out.stderr).into_owned());
        }
        serde_json::from_slice::<Vec<f64>>(&out.stdout).map_err(|e| e.to_string())
    })();
    let _ = echo.kill();
    let _ = echo.wait();
    result
}

/// (subcommand) Echoes one byte at a time on the first connection, until it closes.
pub fn echo(addr: SocketAddr) -> std::io::Result<()> {
    let l = TcpListener::bind(addr)?;
    loop {
        let (mut s, _) = l.accept()?;
        // The readiness probe connects and closes; serve the connection that sends bytes.
        s.set_nodelay(true)?;
        let mut b = [0u8; 1];
        while s.read_exact(&mut b).is_ok() {
            s.write_all(&b)?;
        }
    }
}

/// (subcommand) `count` round trips, `GAP` apart; returns each in microseconds.
pub fn ping(addr: SocketAddr, count: usize) -> std::io::Result<Vec<f64>> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    s.set_nodelay(true)?;
    s.set_read_timeout(Some(Duration::from_secs(2)))?;
    let mut us = Vec::with_capacity(count);
    let mut b = [0u8; 1];
    for _ in 0..count.max(1) {
        std::thread::sleep(GAP);
        let t = Instant::now();
        s.write_all(b"p")?;
        s.read_exact(&mut b)?;
        us.push(t.elapsed().as_secs_f64() * 1e6);
    }
    Ok(us)
}
