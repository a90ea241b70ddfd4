//! Results: one cell per scenario x topology, the readable table and the JSON file.

use serde::Serialize;

/// One scenario run against one topology (the median of its repeats).
#[derive(Clone, Debug, Serialize)]
pub struct Cell {
    pub scenario: &'static str,
    pub topology: &'static str,
    pub rps: f64,
    pub latency_us: crate::load::Latency,
    pub cpu_s_per_1k_req: f64,
    pub peak_rss_mb: f64,
    pub rss_end_mb: f64,
    pub upstream_conns_opened: u64,
    pub requests: u64,
    pub errors: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mb_per_s: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_error: Option<String>,
}

/// One worker count of the throughput scan.
#[derive(Debug, Serialize)]
pub struct ScanPoint {
    pub workers: usize,
    /// The CPU budget of each proxy worker thread, when capped.
    pub worker_cpu: Option<f64>,
    pub rps: f64,
    pub p99_us: f64,
    pub cpu_s_per_1k_req: f64,
    pub errors: u64,
}

/// The worker scan as lines: throughput per worker count and its ratio to the first of the
/// same mode (unpinned, or capped workers).
pub fn scan_summary(points: &[ScanPoint]) -> Option<String> {
    points.first()?;
    let mut out = format!(
        "worker scan (http1-keepalive-max, {} connections, through proxy-pair-h2):",
        crate::spec::SCAN_CONNS
    );
    let mut modes: Vec<Option<f64>> = Vec::new();
    for p in points {
        if !modes.contains(&p.worker_cpu) {
            modes.push(p.worker_cpu);
        }
    }
    for mode in modes {
        let same: Vec<&ScanPoint> = points.iter().filter(|p| p.worker_cpu == mode).collect();
        let first = same[0];
        out.push_str(&match mode {
            None => "\n  proxies unpinned:".to_string(),
            Some(cpu) => format!("\n  each proxy worker thread held to {cpu} CPU:"),
        });
        for p in same {
            out.push_str(&format!(
                "\n    {} worker(s): {:.0} rps ({:.2}x {} worker), p99 {:.0}us, {:.4} CPU-s/1k, {} errors",
                p.workers,
                p.rps,
                p.rps / first.rps.max(1.0),
                first.workers,
                p.p99_us,
                p.cpu_s_per_1k_req,
                p.errors
            ));
        }
    }
    Some(out)
}

/// The whole run, as written to `--out`.
#[derive(Debug, Serialize)]
pub struct Report {
    pub machine: serde_json::Value,
    pub results: Vec<Cell>,
    pub worker_scan: Vec<ScanPoint>,
    /// The machine's idle wake-up round trip, same CPU and across CPUs.
    pub wakeup: Vec<crate::wakeup::Wakeup>,
    /// `--idle-conns`: memory with idle connections open, and after they close.
    pub idle: Option<crate::idle::IdleResult>,
    pub skipped: Vec<String>,
}

/// The topology each proxied topology is compared with (same network path, no proxy).
pub fn baseline(topology: &str) -> &'static str {
    match topology {
        "proxy-pair"
        | "proxy-pair-mtls"
        | "proxy-pair-h2"
        | "proxy-pair-policy"
        | "proxy-pair-routes10" => "direct-veth",
        _ => "direct",
    }
}

fn is_proxy(topology: &str) -> bool {
    !topology.starts_with("direct")
}

impl Cell {
    pub fn reuse(&self) -> Option<f64> {
        (self.requests > 0 && self.scenario != "tcp-bulk" && !self.scenario.starts_with("balance"))
            .then(|| 1.0 - self.upstream_conns_opened as f64 / self.requests as f64)
    }
}

/// The readable table, with ratios to the baseline and to haproxy.
pub fn table(cells: &[Cell]) -> String {
    let mut out = format!(
        "{:<23} {:<12} {:>9} {:>8} {:>8} {:>8} {:>8} {:>7} {:>7} {:>6} | {:>8} {:>8} {:>6} | {:>6} {:>6}\n",
        "scenario", "topology", "rps", "p50us", "p99us", "p999us", "cpu/1k", "rssMB", "reuse", "errs",
        "+p50us", "+p99us", "rps x", "hp rps", "hp cpu"
    );
    out.push_str(&"-".repeat(out.len()));
    out.push('\n');
    let find = |s: &str, t: &str| cells.iter().find(|c| c.scenario == s && c.topology == t);
    for c in cells {
        let rps = match c.mb_per_s {
            Some(mb) => format!("{mb:.0}MB/s"),
            None => format!("{:.0}", c.rps),
        };
        let proxied = is_proxy(c.topology);
        let dash = || "-".to_string();
        let (cpu, rss) = if proxied {
            (
                format!("{:.4}", c.cpu_s_per_1k_req),
                format!("{:.1}", c.peak_rss_mb),
            )
        } else {
            (dash(), dash())
        };
        let reuse = c
            .reuse()
            .filter(|_| proxied)
            .map(|r| format!("{:.3}", r))
            .unwrap_or_else(dash);
        let (dp50, dp99, rps_x) = match find(c.scenario, baseline(c.topology)).filter(|_| proxied) {
            Some(b) => (
                format!("{:+.0}", c.latency_us.p50 - b.latency_us.p50),
                format!("{:+.0}", c.latency_us.p99 - b.latency_us.p99),
                ratio(throughput(c), throughput(b)),
            ),
            None => (dash(), dash(), dash()),
        };
        let (hp_rps, hp_cpu) =
            match find(c.scenario, "haproxy").filter(|_| proxied && c.topology != "haproxy") {
                Some(h) => (
                    ratio(throughput(c), throughput(h)),
                    ratio(c.cpu_s_per_1k_req, h.cpu_s_per_1k_req),
                ),
                None => (dash(), dash()),
            };
        out.push_str(&format!(
            "{:<23} {:<12} {:>9} {:>8.0} {:>8.0} {:>8.0} {:>8} {:>7} {:>7} {:>6} | {:>8} {:>8} {:>6} | {:>6} {:>6}\n",
            c.scenario, c.topology, rps, c.latency_us.p50, c.latency_us.p99, c.latency_us.p999, cpu, rss, reuse,
            c.errors, dp50, dp99, rps_x, hp_rps, hp_cpu
        ));
    }
    out
}

/// The `balance` scenario's verdicts: P2C-EWMA's p99 with a slow endpoint against all healthy
/// (goal <= 1.2x) and against round-robin, and the 10,000-endpoint update time (goal < 1 ms).
pub fn balance_summary(cells: &[Cell]) -> Option<String> {
    let find = |s: &str, t: &str| cells.iter().find(|c| c.scenario == s && c.topology == t);
    let healthy = find("balance", "p2c-ewma-healthy")?;
    let slow = find("balance", "p2c-ewma-slow")?;
    let rr = find("balance", "round-robin-slow")?;
    let mut out = format!(
        "balance: p99 with one 10x-slow endpoint {:.0}us = {:.2}x all-healthy ({:.0}us; goal <= 1.2x); round-robin {:.0}us ({:.2}x P2C-EWMA)",
        slow.latency_us.p99,
        slow.latency_us.p99 / healthy.latency_us.p99.max(1.0),
        healthy.latency_us.p99,
        rr.latency_us.p99,
        rr.latency_us.p99 / slow.latency_us.p99.max(1.0),
    );
    if let Some(u) = find("balance-update", "10k-endpoints") {
        out.push_str(&format!(
            "\nbalance-update: one endpoint changed in a 10,000-endpoint set: p50 {:.0}us, p99 {:.0}us (goal < 1000us)",
            u.latency_us.p50, u.latency_us.p99
        ));
    }
    Some(out)
}

fn throughput(c: &Cell) -> f64 {
    c.mb_per_s.unwrap_or(c.rps)
}

fn ratio(a: f64, b: f64) -> String {
    if b > 0.0 {
        format!("{:.2}", a / b)
    } else {
        "-".into()
    }
}

/// The median of `v` (the mean of the middle two for an even count).
pub fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians() {
        assert_eq!(median(vec![3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(vec![4.0, 1.0, 2.0, 3.0]), 2.5);
        assert_eq!(median(vec![]), 0.0);
    }

    #[test]
    fn table_compares_with_baselines() {
        let cell = |topology, rps, p50, cpu| Cell {
            scenario: "http1-keepalive",
            topology,
            rps,
            latency_us: crate::load::Latency {
                p50,
                p90: p50,
                p99: p50 * 2.0,
                p999: p50 * 3.0,
                max: p50 * 4.0,
            },
            cpu_s_per_1k_req: cpu,
            peak_rss_mb: 5.0,
            rss_end_mb: 4.0,
            upstream_conns_opened: 1,
            requests: 1000,
            errors: 0,
            mb_per_s: None,
            first_error: None,
        };
        let t = table(&[
            cell("direct", 1000.0, 100.0, 0.0),
            cell("proxy", 800.0, 150.0, 0.02),
            cell("haproxy", 900.0, 120.0, 0.03),
        ]);
        let proxy = t.lines().find(|l| l.contains(" proxy ")).unwrap();
        assert!(proxy.contains("+50"), "{t}");
        assert!(proxy.contains("0.80"), "rps ratio to direct: {t}");
        assert!(proxy.contains("0.89"), "rps ratio to haproxy: {t}");
        assert!(proxy.contains("0.67"), "cpu ratio to haproxy: {t}");
        assert!(proxy.contains("0.999"), "reuse: {t}");
    }
}
