//! Per-thread CPU budgets with the cgroup v1 `cpu` controller (CFS bandwidth).
//!
//! The capped worker scan puts each proxy worker thread in its own cgroup with a fraction of a
//! CPU, so a machine with too few cores for the load generator, the backends and 2 x N proxy
//! workers can still show whether a proxy's throughput scales with its worker threads: if every
//! stream ran on one worker (ztunnel's known limit), N capped workers would deliver what one
//! does.

use std::path::{Path, PathBuf};

const ROOT: &str = "/sys/fs/cgroup/cpu";
/// The CFS period: short, so a throttled worker waits at most a few milliseconds (longer only
/// where the budget would be under the kernel's 1 ms minimum quota).
const PERIOD_US: u64 = 10_000;
const MIN_QUOTA_US: u64 = 1_000;

/// Why per-thread budgets can't be set here, if they can't.
pub fn unavailable() -> Option<String> {
    let root = Path::new(ROOT);
    if !root.join("tasks").exists() || !root.join("cpu.cfs_quota_us").exists() {
        return Some(format!(
            "needs the cgroup v1 cpu controller (CFS bandwidth) at {ROOT}"
        ));
    }
    None
}

/// Threads placed in their own capped cgroups; put back in the root cgroup, and the cgroups
/// removed, on drop.
pub struct ThreadCaps {
    dirs: Vec<PathBuf>,
}

impl ThreadCaps {
    /// Gives every thread of `pids` its own budget of `cpu` CPUs (0 < cpu <= 1).
    pub fn apply(pids: &[u32], cpu: f64) -> Result<Self, String> {
        if !(cpu > 0.0 && cpu <= 1.0) {
            return Err(format!("a worker CPU budget must be in (0, 1], not {cpu}"));
        }
        let period = PERIOD_US.max((MIN_QUOTA_US as f64 / cpu).ceil() as u64);
        let quota = ((cpu * period as f64) as u64).max(MIN_QUOTA_US);
        let mut caps = ThreadCaps { dirs: Vec::new() };
        for pid in pids {
            for tid in threads(*pid)? {
                let dir = Path::new(ROOT).join(format!("linkerd-bench-{pid}-{tid}"));
                // One left by a run that was killed is reused.
                if let Err(e) = std::fs::create_dir(&dir) {
                    if e.kind() != std::io::ErrorKind::AlreadyExists {
                        return Err(format!("{}: {e}", dir.display()));
                    }
                }
                caps.dirs.push(dir.clone());
                write(&dir.join("cpu.cfs_period_us"), &period.to_string())?;
                write(&dir.join("cpu.cfs_quota_us"), &quota.to_string())?;
                // A thread that exited since the listing (an idle blocking thread) is skipped.
                if let Err(e) = std::fs::write(dir.join("tasks"), tid.to_string()) {
                    if std::path::Path::new(&format!("/proc/{pid}/task/{tid}")).exists() {
                        return Err(format!("{}: {e}", dir.join("tasks").display()));
                    }
                }
            }
        }
        Ok(caps)
    }

    /// How many threads are capped.
    pub fn threads(&self) -> usize {
        self.dirs.len()
    }
}

impl Drop for ThreadCaps {
    fn drop(&mut self) {
        for dir in &self.dirs {
            // Threads still alive go back to the root (where the bench's processes start); a
            // cgroup with tasks can't be removed. Read twice: a capped thread may have started
            // another meanwhile.
            for _ in 0..2 {
                if let Ok(tasks) = std::fs::read_to_string(dir.join("tasks")) {
                    for tid in tasks.lines() {
                        let _ = std::fs::write(Path::new(ROOT).join("tasks"), tid);
                    }
                }
            }
            if let Err(e) = std::fs::remove_dir(dir) {
                eprintln!("linkerd-bench: {}: {e}", dir.display());
            }
        }
    }
}

/// The thread ids of `pid`.
fn threads(pid: u32) -> Result<Vec<u32>, String> {
    let dir = format!("/proc/{pid}/task");
    let entries = std::fs::read_dir(&dir).map_err(|e| format!("{dir}: {e}"))?;
    let mut tids: Vec<u32> = entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse().ok())
        .collect();
    tids.sort_unstable();
    Ok(tids)
}

fn write(path: &Path, value: &str) -> Result<(), String> {
    std::fs::write(path, value).map_err(|e| format!("{}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_busy_thread_is_held_to_its_budget_and_released() {
        if let Some(why) = unavailable() {
            eprintln!("skipped: {why}");
            return;
        }
        let mut busy = std::process::Command::new("sh")
            .args(["-c", "while :; do :; done"])
            .spawn()
            .expect("sh");
        let pid = busy.id();
        let caps = ThreadCaps::apply(&[pid], 0.2);
        if caps.is_err() {
            let _ = busy.kill();
        }
        let caps = caps.expect("caps");
        assert_eq!(caps.threads(), 1);
        let dirs = caps.dirs.clone();
        let before = crate::procfs::cpu_seconds(pid).expect("cpu");
        std::thread::sleep(Duration::from_secs(2));
        let used = crate::procfs::cpu_seconds(pid).expect("cpu") - before;
        drop(caps);
        let _ = busy.kill();
        let _ = busy.wait();
        // A spinning shell would use ~2 CPU-seconds uncapped.
        assert!(used < 0.8, "a thread held to 0.2 CPU used {used}s in 2s");
        assert!(dirs.iter().all(|d| !d.exists()), "cgroups left behind");
    }
}
