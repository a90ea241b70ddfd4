//! The `linkerd2-proxy` binary itself: configuration errors, logging control, signals.

use std::{
    io::{BufRead, BufReader, Read, Write},
    net::{SocketAddr, TcpListener, TcpStream},
    process::{Child, Command, Stdio},
    sync::mpsc,
    thread::JoinHandle,
    time::Duration,
};

const BIN: &str = env!("CARGO_BIN_EXE_linkerd2-proxy");

/// How long a proxy may take to start, or to exit once signalled.
const PATIENCE: Duration = Duration::from_secs(10);

/// A blocking HTTP/1.0 request; returns the status and body.
fn http(addr: SocketAddr, method: &str, path: &str, body: &str) -> Option<(u16, String)> {
    let mut s = TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        s,
        "{method} {path} HTTP/1.0\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    let status = out.get(9..12)?.parse().ok()?;
    let body = out.split_once("\r\n\r\n")?.1.to_string();
    Some((status, body))
}

/// A proxy process whose listeners are bound to port 0 by the proxy itself; the admin address
/// is read from its start-up log line.
struct Proxy {
    child: Option<Child>,
    admin: SocketAddr,
    /// The start-up log line.
    started: String,
    /// Collects stdout (the logs) until the process closes it.
    logs: JoinHandle<String>,
}

impl Proxy {
    fn start(extra: &[(&str, &str)]) -> Self {
        let mut cmd = Command::new(BIN);
        cmd.env_clear()
            .env("LINKERD2_PROXY_INBOUND_LISTEN_ADDR", "127.0.0.1:0")
            .env("LINKERD2_PROXY_OUTBOUND_LISTEN_ADDR", "127.0.0.1:0")
            .env("LINKERD2_PROXY_ADMIN_LISTEN_ADDR", "127.0.0.1:0")
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        for (k, v) in extra {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("spawn linkerd2-proxy");
        let stderr = child.stdout.take().expect("piped stdout");
        let (lines, started) = mpsc::channel();
        let logs = std::thread::spawn(move || {
            let mut all = String::new();
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let _ = lines.send(line.clone());
                all.push_str(&line);
                all.push('\n');
            }
            all
        });
        let (admin, started) = loop {
            let line = started
                .recv_timeout(PATIENCE)
                .expect("the proxy logs that it started");
            if let Some(addr) = line
                .contains("proxy started")
                .then(|| admin_addr(&line))
                .flatten()
            {
                break (addr, line);
            }
        };
        // Listening and ready once it says so.
        assert_eq!(http(admin, "GET", "/ready", "").map(|r| r.0), Some(200));
        Self {
            child: Some(child),
            admin,
            started,
            logs,
        }
    }

    fn signal(&self, sig: &str) {
        let pid = self.child.as_ref().expect("running").id();
        let ok = Command::new("kill")
            .args([sig, &pid.to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill {sig}");
    }

    /// Waits for the process to exit; returns its status and everything it logged.
    fn wait(mut self) -> (i32, String) {
        let mut child = self.child.take().expect("running");
        let (tx, exited) = mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(child.wait());
        });
        let status = exited
            .recv_timeout(PATIENCE)
            .expect("the proxy exits")
            .unwrap();
        let logs = std::mem::replace(&mut self.logs, std::thread::spawn(String::new));
        (status.code().unwrap_or(-1), logs.join().unwrap())
    }
}

/// The `admin_addr` field of a start-up log line, plain (`admin_addr=…`, perhaps coloured) or
/// JSON (`"admin_addr":"…"`).
fn admin_addr(line: &str) -> Option<SocketAddr> {
    field_addr(line, "admin_addr")
}

/// The address in a start-up log line's field `name` (`name=…`, `name=Some(…)` or JSON).
fn field_addr(line: &str, name: &str) -> Option<SocketAddr> {
    let mut plain = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\x1b' {
            // An ANSI colour sequence: ESC [ ... m.
            chars.by_ref().find(|c| *c == 'm');
        } else {
            plain.push(c);
        }
    }
    let at = plain
        .find(&format!("{name}="))
        .or_else(|| plain.find(&format!("\"{name}\":")).map(|i| i + 1))?;
    let rest = &plain[at + name.len()..];
    let rest = rest.trim_start_matches(['=', '"', ':']);
    let rest = rest.strip_prefix("Some(").unwrap_or(rest);
    let end = rest.find(|c: char| !(c.is_ascii_hexdigit() || ".:[]".contains(c)))?;
    rest[..end].parse().ok()
}

impl Drop for Proxy {
    fn drop(&mut self) {
        if let Some(child) = &mut self.child {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

#[test]
fn bad_env_exits_64_with_one_line() {
    for (name, value, expected) in [
        (
            "LINKERD2_PROXY_OUTBOUND_CONNECT_TIMEOUT",
            "fast",
            "expected a duration like 500ms, 10s, 2m or 1h",
        ),
        (
            "LINKERD2_PROXY_INBOUND_LISTEN_ADDR",
            "nowhere",
            "expected an IP address and port",
        ),
        (
            "LINKERD2_PROXY_INBOUND_PORTS_DISABLE_PROTOCOL_DETECTION",
            "25,x",
            "expected a comma-separated list of ports",
        ),
        (
            "LINKERD2_PROXY_SHUTDOWN_ENDPOINT_ENABLED",
            "yes",
            "expected `true` or `false`",
        ),
    ] {
        let out = Command::new(BIN)
            .env_clear()
            .env(name, value)
            .output()
            .unwrap();
        assert_eq!(
            out.status.code(),
            Some(64),
            "{name}={value}: EX_USAGE, as linkerd2-proxy"
        );
        let err = String::from_utf8(out.stderr).unwrap();
        assert_eq!(err.lines().count(), 1, "one line: {err}");
        assert!(
            err.contains(name) && err.contains(value) && err.contains(expected),
            "{err}"
        );
        assert!(!err.contains("panicked"), "{err}");
    }
}

#[test]
fn listener_in_use_fails_with_a_clear_error() {
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let out = Command::new(BIN)
        .env_clear()
        .env("LINKERD2_PROXY_OUTBOUND_LISTEN_ADDR", &addr)
        .env("LINKERD2_PROXY_INBOUND_LISTEN_ADDR", "127.0.0.1:0")
        .env("LINKERD2_PROXY_ADMIN_LISTEN_ADDR", "127.0.0.1:0")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(
        err.contains(&format!(
            "failed to start the outbound listener: failed to bind {addr}"
        )),
        "{err}"
    );
}

#[test]
fn log_level_can_be_read_and_changed() {
    let proxy = Proxy::start(&[("LINKERD2_PROXY_LOG", "warn,linkerd=info")]);
    assert_eq!(
        http(proxy.admin, "GET", "/proxy-log-level", ""),
        Some((200, "warn,linkerd=info\n".into()))
    );
    assert_eq!(
        http(proxy.admin, "PUT", "/proxy-log-level", "linkerd=debug").map(|r| r.0),
        Some(204)
    );
    assert_eq!(
        http(proxy.admin, "GET", "/proxy-log-level", ""),
        Some((200, "linkerd=debug\n".into()))
    );
    let (status, body) = http(proxy.admin, "PUT", "/proxy-log-level", "linkerd=loud").unwrap();
    assert_eq!(status, 400, "{body}");
    assert_eq!(
        http(proxy.admin, "GET", "/proxy-log-level", ""),
        Some((200, "linkerd=debug\n".into()))
    );
    // The new level is in force: a debug line from the proxy appears on SIGTERM.
    proxy.signal("-TERM");
    let (code, logs) = proxy.wait();
    assert_eq!(code, 0);
    assert!(logs.contains("received SIGTERM"), "{logs}");
    assert!(
        logs.contains("no longer accepting connections"),
        "a debug line: {logs}"
    );
}

#[test]
fn json_logs() {
    let proxy = Proxy::start(&[("LINKERD2_PROXY_LOG_FORMAT", "json")]);
    proxy.signal("-INT");
    let (code, logs) = proxy.wait();
    assert_eq!(code, 0);
    assert!(logs.lines().all(|l| l.starts_with('{')), "{logs}");
    assert!(
        logs.lines()
            .any(|l| l.contains("\"level\":\"INFO\"") && l.contains("proxy started")),
        "{logs}"
    );
    assert!(logs.contains("received SIGINT"), "{logs}");
}

#[test]
fn sigterm_exits_zero() {
    let proxy = Proxy::start(&[]);
    proxy.signal("-TERM");
    let (code, logs) = proxy.wait();
    assert_eq!(code, 0, "{logs}");
    assert!(logs.contains("all connections closed"), "{logs}");
}

#[test]
fn help_and_version_print_and_exit() {
    for arg in ["--help", "--version"] {
        // A proxy would bind this taken port and fail; printing never binds.
        let taken = TcpListener::bind("127.0.0.1:0").unwrap();
        let out = Command::new(BIN)
            .arg(arg)
            .env_clear()
            .env(
                "LINKERD2_PROXY_ADMIN_LISTEN_ADDR",
                taken.local_addr().unwrap().to_string(),
            )
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(0), "{arg}");
        let stdout = String::from_utf8(out.stdout).unwrap();
        assert!(
            out.stderr.is_empty()
                && !stdout.contains("proxy started")
                && !stdout.contains(" WARN "),
            "{arg}: nothing logged, no proxy started: {stdout}"
        );
        match arg {
            "--help" => assert!(
                stdout.contains("LINKERD2_PROXY_INBOUND_LISTEN_ADDR"),
                "{stdout}"
            ),
            _ => assert!(
                stdout.starts_with(&format!("linkerd2-proxy {} (", env!("CARGO_PKG_VERSION"))),
                "{stdout}"
            ),
        }
    }
    let out = Command::new(BIN)
        .arg("--serve")
        .env_clear()
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
}

#[test]
fn unknown_variables_are_a_warning_and_both_outbound_listeners_serve() {
    if TcpListener::bind("[::1]:0").is_err() {
        return eprintln!("no IPv6 loopback here; skipping");
    }
    let proxy = Proxy::start(&[
        (
            "LINKERD2_PROXY_OUTBOUND_LISTEN_ADDRS",
            "127.0.0.1:0,[::1]:0",
        ),
        ("LINKERD2_PROXY_INBOUND_LISTEN_ADRR", "typo"),
    ]);
    let v4 = field_addr(&proxy.started, "outbound_addr").expect("the first listener");
    let v6 = field_addr(&proxy.started, "outbound_also_addr").expect("the second listener");
    assert!(v4.is_ipv4() && v6.is_ipv6(), "{}", proxy.started);
    for addr in [v4, v6] {
        // Not redirected: the outbound listener answers (explicit-proxy mode) rather than refusing.
        let (status, _) = http(addr, "GET", "/", "").expect("the listener serves");
        assert!(status >= 400, "{addr}: {status}");
    }
    proxy.signal("-TERM");
    let (_, logs) = proxy.wait();
    assert!(
        logs.contains("unknown variables (typos?) are ignored: LINKERD2_PROXY_INBOUND_LISTEN_ADRR"),
        "{logs}"
    );
}
