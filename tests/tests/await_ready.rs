//! `linkerd-await` against a running proxy: as the injector's postStart hook
//! (`--timeout=2m --port=<admin>`), as a wrapper that then runs a command, and with
//! `--shutdown`; and its timeout when no proxy becomes ready.

use linkerd_tests::{proxy, refusing_addr, workspace_bin};
use std::{process::Output, time::Duration};

async fn await_ready(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = tokio::process::Command::new(workspace_bin("linkerd-await"));
    cmd.args(args)
        .env_remove("LINKERD_AWAIT_DISABLED")
        .env_remove("LINKERD_DISABLED");
    for (k, v) in env {
        cmd.env(k, v);
    }
    // Bounded: every case here ends well within this.
    tokio::time::timeout(Duration::from_secs(30), cmd.output())
        .await
        .expect("linkerd-await ends")
        .expect("linkerd-await runs")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_hook_form_returns_once_the_proxy_is_ready() {
    // The hook starts with the proxy, before its admin server listens: it waits.
    let admin = linkerd_tests::free_addr();
    let port = format!("--port={}", admin.port());
    let mut hook = tokio::process::Command::new(workspace_bin("linkerd-await"))
        .args(["--timeout=2m", "--backoff=50ms", &port])
        .env_remove("LINKERD_AWAIT_DISABLED")
        .env_remove("LINKERD_DISABLED")
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    assert!(hook.try_wait().unwrap().is_none(), "waiting for the proxy");
    let admin_env = admin.to_string();
    let proxy = proxy(&[("LINKERD2_PROXY_ADMIN_LISTEN_ADDR", &admin_env)], None);
    let status = tokio::time::timeout(Duration::from_secs(30), hook.wait())
        .await
        .expect("the hook returns once the proxy is ready")
        .unwrap();
    assert_eq!(status.code(), Some(0));

    // As a wrapper: the command runs after readiness, with its own exit code.
    let port = format!("--port={}", proxy.admin_addr.port());
    let out = await_ready(&[&port, "--", "sh", "-c", "echo app ran; exit 3"], &[]).await;
    assert_eq!(out.status.code(), Some(3), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "app ran\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proxy_that_never_becomes_ready_times_out() {
    // Nothing listens (connections are refused), as before a proxy starts.
    let (_socket, addr) = refusing_addr();
    let port = format!("--port={}", addr.port());
    let out = await_ready(
        &[
            "--timeout=1s",
            "--backoff=100ms",
            &port,
            "--",
            "echo",
            "app ran",
        ],
        &[],
    )
    .await;
    assert_eq!(out.status.code(), Some(69), "EX_UNAVAILABLE: {out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("the proxy was not ready within 1s")
            && stderr.contains(&format!("http://localhost:{}/ready", addr.port())),
        "{stderr}"
    );
    assert!(out.stdout.is_empty(), "the command did not run");
    // With the timeout not fatal, the command runs anyway.
    let out = await_ready(
        &[
            "--timeout=200ms",
            "--timeout-fatal=false",
            &port,
            "--",
            "echo",
            "app ran",
        ],
        &[],
    )
    .await;
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "app ran\n");
    // Disabled: no wait at all.
    let out = await_ready(&["--timeout=1m", &port], &[("LINKERD_AWAIT_DISABLED", "1")]).await;
    assert_eq!(out.status.code(), Some(0), "{out:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_mode_shuts_the_proxy_down_when_the_command_exits() {
    let proxy = proxy(
        &[("LINKERD2_PROXY_SHUTDOWN_ENDPOINT_ENABLED", "true")],
        None,
    );
    let port = format!("--port={}", proxy.admin_addr.port());
    let out = await_ready(&["--shutdown", &port, "--", "sh", "-c", "exit 7"], &[]).await;
    assert_eq!(out.status.code(), Some(7), "the command's code: {out:?}");
    tokio::time::timeout(Duration::from_secs(5), proxy.shutdown_requested())
        .await
        .expect("POST /shutdown was sent when the command exited");
}
