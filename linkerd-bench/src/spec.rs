//! What every part of a run shares: the profile (how long and how hard each cell runs) and
//! one load-generator run (its spec, and the subprocess that runs it).

use crate::{
    load::{LoadResult, Scenario},
    topology::Env,
    Cli,
};
use std::{
    process::{Command, Stdio},
    time::{Duration, Instant},
};

/// How long and how hard each cell runs.
#[derive(Clone)]
pub(crate) struct Profile {
    pub name: &'static str,
    pub duration: Duration,
    pub rate: u64,
    pub conn_per_request_rate: u64,
    pub conns: usize,
}

impl Profile {
    pub(crate) fn of(cli: &Cli) -> Self {
        if cli.smoke {
            Profile {
                name: "smoke",
                duration: Duration::from_millis(200),
                rate: 200,
                conn_per_request_rate: 100,
                conns: 4,
            }
        } else if cli.quick {
            Profile {
                name: "quick",
                duration: Duration::from_secs(3),
                rate: 1000,
                conn_per_request_rate: 500,
                conns: 16,
            }
        } else {
            Profile {
                name: "default",
                duration: Duration::from_secs(20),
                rate: 1000,
                conn_per_request_rate: 500,
                conns: 16,
            }
        }
    }
}

/// Concurrent connections of the worker scan.
pub(crate) const SCAN_CONNS: usize = 64;

/// One load-generator run.
pub(crate) struct LoadSpec {
    pub scenario: Scenario,
    pub target: std::net::SocketAddr,
    pub via_proxy: Option<String>,
    pub rate: u64,
    pub duration: Duration,
    pub conns: usize,
    pub round_robin: Vec<std::net::SocketAddr>,
}

/// Runs the load generator as a subprocess (in namespace `ns`, as `uid`, pinned).
pub(crate) fn run_load(
    env: &Env,
    ns: Option<&str>,
    uid: Option<u32>,
    spec: &LoadSpec,
) -> LoadResult {
    let mut args: Vec<String> = Vec::new();
    if let Some(uid) = uid {
        let uid = uid.to_string();
        args.extend([
            "setpriv".into(),
            "--reuid".into(),
            uid.clone(),
            "--regid".into(),
            uid,
            "--clear-groups".into(),
        ]);
    }
    if let Some(c) = &env.load_cpus {
        args.extend(["taskset".into(), "-c".into(), c.clone()]);
    }
    args.push(env.self_bin.to_string_lossy().into_owned());
    args.extend(["load", "--scenario", spec.scenario.name(), "--target"].map(String::from));
    args.push(spec.target.to_string());
    if let Some(via) = &spec.via_proxy {
        args.extend(["--via-proxy".into(), via.clone()]);
    }
    if !spec.round_robin.is_empty() {
        let list: Vec<String> = spec.round_robin.iter().map(|a| a.to_string()).collect();
        args.extend(["--round-robin".into(), list.join(",")]);
    }
    args.extend([
        "--rate".into(),
        spec.rate.to_string(),
        "--duration-ms".into(),
        spec.duration.as_millis().to_string(),
        "--conns".into(),
        spec.conns.to_string(),
    ]);
    let argv: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut cmd = match ns {
        Some(ns) => linkerd_netns::PodPair::exec(ns, &argv),
        None => {
            let mut c = Command::new(argv[0]);
            c.args(&argv[1..]);
            c
        }
    };
    let fail = |e: String| LoadResult {
        errors: 1,
        first_error: Some(e),
        ..Default::default()
    };
    let child = match cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn() {
        Ok(c) => c,
        Err(e) => return fail(format!("load generator: {e}")),
    };
    // The load generator bounds its own run; this bounds a hung one.
    let deadline = Instant::now() + spec.duration + Duration::from_secs(30);
    let id = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    let out = match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
        Ok(Ok(out)) => out,
        Ok(Err(e)) => return fail(format!("load generator: {e}")),
        Err(_) => {
            let _ = Command::new("kill").args(["-9", &id.to_string()]).status();
            return fail("load generator timed out".into());
        }
    };
    match serde_json::from_slice::<LoadResult>(&out.stdout) {
        Ok(r) => r,
        Err(e) => fail(format!(
            "load generator output: {e}: {}",
            String::from_utf8_lossy(&out.stderr)
        )),
    }
}
