//! Process metrics, read from `/proc/self` at scrape time.

use std::{fmt::Write, time::SystemTime};

/// Renders `process_*` and `proxy_build_info` for a process started at `start`.
pub fn collector(start: SystemTime) -> impl Fn(&mut String) + Send + Sync + 'static {
    let start_secs = start
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0);
    move |out: &mut String| {
        gauge(
            out,
            "process_start_time_seconds",
            "Time that the process started (in seconds since the UNIX epoch).",
            start_secs,
        );
        if let Some(cpu) = cpu_seconds() {
            let _ = writeln!(out, "# HELP process_cpu_seconds_total Total user and system CPU time spent in seconds.\n# TYPE process_cpu_seconds_total counter\nprocess_cpu_seconds_total {cpu}");
        }
        if let Some(rss) = status_kb("VmRSS:") {
            gauge(
                out,
                "process_resident_memory_bytes",
                "Resident memory size in bytes.",
                (rss * 1024) as f64,
            );
        }
        if let Some(vm) = status_kb("VmSize:") {
            gauge(
                out,
                "process_virtual_memory_bytes",
                "Virtual memory size in bytes.",
                (vm * 1024) as f64,
            );
        }
        if let Ok(fds) = std::fs::read_dir("/proc/self/fd") {
            gauge(
                out,
                "process_open_fds",
                "Number of open file descriptors.",
                fds.count() as f64,
            );
        }
        let _ = writeln!(
            out,
            "# HELP proxy_build_info Proxy build info.\n# TYPE proxy_build_info gauge\nproxy_build_info{{date=\"{}\",git_sha=\"{}\",profile=\"{}\",vendor=\"linkerd2-proxy\",version=\"{}\"}} 1",
            crate::BUILD_DATE,
            crate::GIT_SHA,
            if cfg!(debug_assertions) { "debug" } else { "release" },
            env!("CARGO_PKG_VERSION"),
        );
    }
}

fn gauge(out: &mut String, name: &str, help: &str, v: f64) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {v}");
}

/// utime + stime from `/proc/self/stat`, in seconds.
fn cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // The command name may contain spaces; fields are counted after its closing paren.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // Fields 14 and 15 of stat(5) are the 12th and 13th after the name.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    // USER_HZ is 100 on every Linux architecture the proxy targets (it is part of the ABI).
    Some((utime + stime) as f64 / 100.0)
}

fn status_kb(key: &str) -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with(key))?;
    line[key.len()..]
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    #[test]
    fn renders_process_metrics() {
        let mut out = String::new();
        super::collector(std::time::SystemTime::now())(&mut out);
        for name in [
            "process_start_time_seconds ",
            "process_cpu_seconds_total ",
            "process_resident_memory_bytes ",
            "process_open_fds ",
            "proxy_build_info{",
        ] {
            assert!(
                out.contains(&format!("\n{name}")) || out.starts_with("# HELP"),
                "{name} missing:\n{out}"
            );
            assert!(
                out.lines().any(|l| l.starts_with(name)),
                "{name} missing:\n{out}"
            );
        }
        let rss: f64 = out
            .lines()
            .find_map(|l| l.strip_prefix("process_resident_memory_bytes "))
            .unwrap()
            .parse()
            .unwrap();
        assert!(
            rss > 1024.0 * 1024.0,
            "a test process uses more than 1 MiB: {rss}"
        );
    }
}
