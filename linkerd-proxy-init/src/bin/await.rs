//! `linkerd-await`: waits until the proxy is ready, then runs a command.
//!
//! - `linkerd-await --timeout=2m --port=4191` (the injector's postStart hook): exits 0 once
//!   `GET http://localhost:4191/ready` answers 2xx, 69 when the timeout elapses first.
//! - `linkerd-await [flags] -- CMD ARGS`: then execs CMD; with `--shutdown`, runs it as a
//!   child, forwards SIGTERM/SIGINT to it, and when it exits asks the proxy to shut down
//!   (`POST /shutdown`) and exits with CMD's code (71 when it had none).
//!
//! Does not wait when `LINKERD_AWAIT_DISABLED` or `LINKERD_DISABLED` is set (non-empty).

use clap::{ArgAction, Parser};
use linkerd_proxy_init::{
    duration,
    ready::{self, EXIT_NO_CODE, EXIT_UNAVAILABLE},
};
use std::{os::unix::process::CommandExt, time::Duration};

#[derive(Parser, Debug)]
#[command(
    name = "linkerd-await",
    version,
    about = "Waits for the Linkerd proxy to be ready, then runs a command"
)]
struct Flags {
    /// The proxy's admin port.
    #[arg(short, long, default_value_t = 4191)]
    port: u16,
    /// Time between attempts (e.g. `1s`).
    #[arg(short, long, default_value = "1s", value_parser = duration::parse)]
    backoff: Duration,
    /// Give up after this long (e.g. `2m`); none: wait forever.
    #[arg(short, long, value_parser = duration::parse)]
    timeout: Option<Duration>,
    /// Whether a timeout is fatal (else the command runs anyway).
    #[arg(long, num_args = 0..=1, default_value_t = true, default_missing_value = "true",
          action = ArgAction::Set)]
    timeout_fatal: bool,
    /// Run the command as a child and shut the proxy down when it exits.
    #[arg(short = 'S', long)]
    shutdown: bool,
    /// Log every attempt.
    #[arg(short, long, env = "LINKERD_AWAIT_VERBOSE")]
    verbose: bool,
    /// The command, and its arguments.
    #[arg(last = true)]
    cmd: Vec<String>,
}

fn main() {
    let flags: Flags = linkerd_proxy_init::parse_flags("linkerd-await", 64);
    let level = if flags.verbose { "debug" } else { "info" };
    let _ = tracing_subscriber::fmt()
        .with_env_filter(level)
        .with_writer(std::io::stderr)
        .with_target(false)
        .try_init();
    let rt = linkerd_proxy_init::runtime("linkerd-await", 1);
    std::process::exit(rt.block_on(run(flags)));
}

async fn run(flags: Flags) -> i32 {
    let disabled = ["LINKERD_AWAIT_DISABLED", "LINKERD_DISABLED"]
        .into_iter()
        .find(|v| std::env::var_os(v).is_some_and(|v| !v.is_empty()));
    match disabled {
        Some(var) => tracing::debug!("{var} is set: not waiting"),
        None => {
            if let Err(last) = ready::wait(flags.port, flags.backoff, flags.timeout).await {
                let timeout = flags.timeout.unwrap_or_default();
                eprintln!(
                    "linkerd-await: the proxy was not ready within {timeout:?} (http://localhost:{}/ready: {last})",
                    flags.port
                );
                if flags.timeout_fatal {
                    return EXIT_UNAVAILABLE;
                }
            }
        }
    }
    let Some((program, args)) = flags.cmd.split_first() else {
        return 0;
    };
    let mut cmd = std::process::Command::new(program);
    cmd.args(args);
    if !flags.shutdown {
        // Only returns on failure.
        let e = cmd.exec();
        eprintln!("linkerd-await: cannot run {program}: {e}");
        return 127;
    }
    let mut child = match tokio::process::Command::from(cmd).spawn() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("linkerd-await: cannot run {program}: {e}");
            return 127;
        }
    };
    let status = forward_signals(&mut child).await;
    if disabled.is_none() {
        if let Err(e) = ready::request(flags.port, hyper::Method::POST, "/shutdown").await {
            eprintln!("linkerd-await: asking the proxy to shut down: {e}");
        }
    }
    match status {
        Ok(s) => s.code().unwrap_or(EXIT_NO_CODE),
        Err(e) => {
            eprintln!("linkerd-await: waiting for {program}: {e}");
            EXIT_NO_CODE
        }
    }
}

/// Waits for `child`, passing SIGTERM and SIGINT on to it.
async fn forward_signals(
    child: &mut tokio::process::Child,
) -> std::io::Result<std::process::ExitStatus> {
    use rustix::process::{kill_process, Pid, Signal};
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let pid = child
        .id()
        .and_then(|id| i32::try_from(id).ok())
        .and_then(Pid::from_raw);
    loop {
        let sig = tokio::select! {
            status = child.wait() => return status,
            _ = term.recv() => Signal::TERM,
            _ = int.recv() => Signal::INT,
        };
        if let Some(pid) = pid {
            let _ = kill_process(pid, sig);
        }
    }
}
