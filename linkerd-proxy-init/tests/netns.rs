//! proxy-init, the network validator and the redirect they set up, in network namespaces,
//! with the exact arguments Linkerd's injector renders.
//!
//! Needs root, `ip` and the iptables binaries. Skipped with a message otherwise, unless
//! `LINKERD_REQUIRE_NETNS=1` (CI sets it), which makes a skip a failure. Backends the machine
//! lacks (nft or legacy) are skipped the same way.

// The injector's arguments (nft mode); legacy mode is the same without the first four.
use linkerd_netns::{has_tool as has, skipped, PodPair, INJECTED_PROXY_INIT_ARGS as NFT_ARGS};
use std::{
    io::{Read, Write},
    net::{SocketAddr, TcpListener, TcpStream},
    os::fd::AsFd,
    process::{Command, Output},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::Duration,
};

const PROXY_INIT: &str = env!("CARGO_BIN_EXE_linkerd2-proxy-init");
const VALIDATOR: &str = env!("CARGO_BIN_EXE_linkerd2-network-validator");
/// The chart's `proxy.uid`.
const PROXY_UID: u32 = 2102;
const NOBODY: u32 = 65534;

/// The rules `iptables-save -t nat` shows after the defaults (the facts file's listing).
const RULES: [&str; 8] = [
    "-A PREROUTING -m comment --comment \"proxy-init/install-proxy-init-prerouting\" -j PROXY_INIT_REDIRECT",
    "-A OUTPUT -m comment --comment \"proxy-init/install-proxy-init-output\" -j PROXY_INIT_OUTPUT",
    "-A PROXY_INIT_OUTPUT -m owner --uid-owner 2102 -m comment --comment \"proxy-init/ignore-proxy-user-id\" -j RETURN",
    "-A PROXY_INIT_OUTPUT -o lo -m comment --comment \"proxy-init/ignore-loopback\" -j RETURN",
    "-A PROXY_INIT_OUTPUT -p tcp -m multiport --dports 4567,4568 -m comment --comment \"proxy-init/ignore-port-4567,4568\" -j RETURN",
    "-A PROXY_INIT_OUTPUT -p tcp -m comment --comment \"proxy-init/redirect-all-outgoing-to-proxy-port\" -j REDIRECT --to-ports 4140",
    "-A PROXY_INIT_REDIRECT -p tcp -m multiport --dports 4190,4191,4567,4568 -m comment --comment \"proxy-init/ignore-port-4190,4191,4567,4568\" -j RETURN",
    "-A PROXY_INIT_REDIRECT -p tcp -m comment --comment \"proxy-init/redirect-all-incoming-to-proxy-port\" -j REDIRECT --to-ports 4143",
];

/// `proxy-init args` in namespace `ns`.
fn proxy_init(ns: &str, args: &[&str]) -> Output {
    PodPair::exec(ns, &[&[PROXY_INIT][..], args].concat())
        .output()
        .unwrap()
}

/// The rule lines (`-A ...`) and chain names of `save -t nat` in `ns`, without counters.
fn nat_rules(ns: &str, save: &str) -> Vec<String> {
    let out = PodPair::exec(ns, &[save, "-t", "nat"]).output().unwrap();
    assert!(out.status.success(), "{save}: {out:?}");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.starts_with("-A ") || l.starts_with(":PROXY_INIT"))
        .map(|l| l.split(" [").next().unwrap_or(l).to_string())
        .collect()
}

/// Runs `f` on a thread inside namespace `ns`, as `uid` if given (per thread: the process's
/// other threads keep root).
fn in_ns<T: Send>(ns: &str, uid: Option<u32>, f: impl FnOnce() -> T + Send) -> T {
    std::thread::scope(|s| {
        s.spawn(|| {
            let file = std::fs::File::open(format!("/run/netns/{ns}")).unwrap();
            rustix::thread::move_into_link_name_space(
                file.as_fd(),
                Some(rustix::thread::LinkNameSpaceType::Network),
            )
            .unwrap();
            if let Some(uid) = uid {
                rustix::thread::set_thread_uid(rustix::process::Uid::from_raw(uid)).unwrap();
            }
            f()
        })
        .join()
        .unwrap()
    })
}

/// Listeners in a namespace that answer every connection with their name; stopped on drop.
struct Answerers(Arc<AtomicBool>, Vec<std::thread::JoinHandle<()>>);

impl Answerers {
    fn start(ns: &str, listeners: &[(&str, &'static str)]) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let mut threads = Vec::new();
        for (addr, name) in listeners {
            let addr: SocketAddr = addr.parse().unwrap();
            let l = in_ns(ns, None, || TcpListener::bind(addr).unwrap());
            l.set_nonblocking(true).unwrap();
            let (stop, name) = (stop.clone(), *name);
            threads.push(std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    match l.accept() {
                        Ok((mut c, _)) => {
                            let _ = c.write_all(format!("{name}\n").as_bytes());
                        }
                        // Polls the stop flag between connections.
                        Err(_) => std::thread::park_timeout(Duration::from_millis(5)),
                    }
                }
            }));
        }
        Self(stop, threads)
    }
}

impl Drop for Answerers {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
        for t in self.1.drain(..) {
            let _ = t.join();
        }
    }
}

/// Who answers a connection to `addr` from namespace `ns` as `uid`.
fn who_answers(ns: &str, uid: u32, addr: &str) -> String {
    let addr: SocketAddr = addr.parse().unwrap();
    in_ns(ns, Some(uid), || {
        let mut s = match TcpStream::connect_timeout(&addr, Duration::from_secs(3)) {
            Ok(s) => s,
            Err(e) => return format!("connect failed: {e}"),
        };
        s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
        let mut got = String::new();
        let _ = s.read_to_string(&mut got);
        got.trim().to_string()
    })
}

/// proxy-init with `args` in both pods, checked on the rules `save` shows, a second run, and
/// traffic: redirected, and the proxy's uid, ignored ports and loopback not.
fn rules_and_redirect(tag: &str, args: &[&str], save: &str) {
    let pods = PodPair::create(tag);
    for ns in [&pods.client, &pods.server] {
        let out = proxy_init(ns, args);
        assert!(out.status.success(), "proxy-init: {out:?}");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            stdout.contains("-t nat -A PROXY_INIT_OUTPUT -o lo -j RETURN"),
            "it prints the rules it applies: {stdout}"
        );
        let mut rules = nat_rules(ns, save);
        rules.sort();
        let mut want: Vec<String> = RULES.iter().map(|r| r.to_string()).collect();
        want.extend([
            ":PROXY_INIT_OUTPUT -".into(),
            ":PROXY_INIT_REDIRECT -".into(),
        ]);
        want.sort();
        assert_eq!(rules, want, "{save} in {ns}");
        // A second run succeeds and changes nothing.
        let out = proxy_init(ns, args);
        assert!(out.status.success(), "second run: {out:?}");
        let mut again = nat_rules(ns, save);
        again.sort();
        assert_eq!(again, want, "after a second run");
    }

    let server = pods.server_ip;
    let _client_side = Answerers::start(
        &pods.client,
        &[
            ("0.0.0.0:4140", "outbound-proxy"),
            ("127.0.0.1:9999", "local-app"),
        ],
    );
    let _server_side = Answerers::start(
        &pods.server,
        &[
            ("0.0.0.0:4143", "inbound-proxy"),
            ("0.0.0.0:4191", "admin"),
            ("0.0.0.0:4567", "ignored"),
        ],
    );
    let to = |port: u16| format!("{server}:{port}");
    // The app's connections go to the outbound proxy, whatever the destination port.
    assert_eq!(
        who_answers(&pods.client, NOBODY, &to(8080)),
        "outbound-proxy"
    );
    assert_eq!(
        who_answers(&pods.client, NOBODY, &to(4191)),
        "outbound-proxy"
    );
    // Not the proxy's own (its uid), nor ignored outbound ports, nor loopback.
    assert_eq!(who_answers(&pods.client, NOBODY, &to(4567)), "ignored");
    assert_eq!(
        who_answers(&pods.client, NOBODY, "127.0.0.1:9999"),
        "local-app"
    );
    // The proxy's connection arrives at the server pod's inbound proxy, unless the port is
    // ignored inbound (the admin port, 4567).
    assert_eq!(
        who_answers(&pods.client, PROXY_UID, &to(8080)),
        "inbound-proxy"
    );
    assert_eq!(who_answers(&pods.client, PROXY_UID, &to(4191)), "admin");
    assert_eq!(who_answers(&pods.client, PROXY_UID, &to(4567)), "ignored");
}

#[test]
fn nft_rules_as_the_injector_renders_them() {
    if skipped(
        "nft_rules_as_the_injector_renders_them",
        &["iptables-nft", "iptables-nft-save"],
    ) {
        return;
    }
    rules_and_redirect("pin", &NFT_ARGS, "iptables-nft-save");
}

#[test]
fn legacy_rules_as_the_injector_renders_them() {
    if skipped(
        "legacy_rules_as_the_injector_renders_them",
        &["iptables-legacy", "iptables-legacy-save"],
    ) {
        return;
    }
    // `proxyInit.iptablesMode: legacy` renders neither `--firewall-*` flag.
    let args: Vec<&str> = NFT_ARGS[4..].to_vec();
    rules_and_redirect("pil", &args, "iptables-legacy-save");
}

/// With IPv6 enabled the chart omits `--ipv6=false`: the same rules in ip6tables' `nat` table.
#[test]
fn ipv6_rules_with_ip6tables() {
    if skipped(
        "ipv6_rules_with_ip6tables",
        &["iptables-nft", "ip6tables-nft", "ip6tables-nft-save"],
    ) {
        return;
    }
    let pods = PodPair::create("pi6");
    let args: Vec<&str> = NFT_ARGS
        .iter()
        .copied()
        .filter(|a| *a != "--ipv6=false")
        .collect();
    for ns in [&pods.client, &pods.server] {
        let out = proxy_init(ns, &args);
        assert!(out.status.success(), "proxy-init: {out:?}");
        let rules = nat_rules(ns, "ip6tables-nft-save");
        for want in RULES {
            assert!(rules.iter().any(|r| r == want), "{want} in {rules:#?}");
        }
    }
    let client_side = Answerers::start(&pods.client, &[("[::]:4140", "outbound-proxy")]);
    let _server_side = Answerers::start(&pods.server, &[("[::]:4143", "inbound-proxy")]);
    let server = format!("[{}]:8080", pods.server_ip6);
    assert_eq!(who_answers(&pods.client, NOBODY, &server), "outbound-proxy");
    assert_eq!(
        who_answers(&pods.client, PROXY_UID, &server),
        "inbound-proxy"
    );
    // Its port 4140 is the validator's now.
    drop(client_side);

    // The validator with the injector's IPv6 arguments (CNI mode, IPv6 enabled), through a
    // default route as a pod has.
    if has("setpriv") {
        let out = Command::new("ip")
            .args(["-n", &pods.client, "-6", "route", "add", "default", "via"])
            .arg(pods.server_ip6.to_string())
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        let out = validator(&pods.client, "[fd00::1]:20001", "[::]:4140", "10s");
        assert_eq!(out.status.code(), Some(0), "{out:?}");
        assert!(
            String::from_utf8_lossy(&out.stdout).contains("Validated"),
            "{out:?}"
        );
    }
}

#[test]
fn bad_input_is_one_line_and_non_zero() {
    let run = |args: &[&str]| Command::new(PROXY_INIT).args(args).output().unwrap();
    for (args, says) in [
        (&["--no-such-flag"][..], "--no-such-flag"),
        (
            &["--outgoing-proxy-port", "4140"][..],
            "--incoming-proxy-port -1",
        ),
        (
            &[
                "--incoming-proxy-port",
                "4143",
                "--outgoing-proxy-port",
                "4140",
                "--firewall-bin-path",
                "nft",
            ][..],
            "--firewall-bin-path \"nft\"",
        ),
        (
            &[
                "--incoming-proxy-port",
                "4143",
                "--outgoing-proxy-port",
                "4140",
                "--iptables-mode",
                "plain",
                "--subnets-to-ignore",
                "10.0.0.0/33",
            ][..],
            "--subnets-to-ignore \"10.0.0.0/33\"",
        ),
    ] {
        let out = run(args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {out:?}");
        assert_eq!(stderr.trim().lines().count(), 1, "one line: {stderr}");
        assert!(stderr.contains(says), "{args:?}: {stderr}");
    }
    // A missing binary names it (an empty PATH: nothing can be found).
    let out = Command::new(PROXY_INIT)
        .args([
            "--incoming-proxy-port",
            "4143",
            "--outgoing-proxy-port",
            "4140",
            "--ipv6=false",
        ])
        .env("PATH", "/nonexistent")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(
        stderr.contains("cannot run iptables-legacy-save"),
        "{stderr}"
    );
    // A command that fails (iptables without the privilege) names it, on one line.
    if rustix::process::getuid().is_root() && has("setpriv") && has("iptables-save") {
        let out = Command::new("setpriv")
            .args([
                "--reuid",
                "65534",
                "--regid",
                "65534",
                "--clear-groups",
                PROXY_INIT,
            ])
            .args([
                "--incoming-proxy-port",
                "4143",
                "--outgoing-proxy-port",
                "4140",
            ])
            .args(["--iptables-mode", "plain", "--ipv6=false"])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{out:?}");
        assert_eq!(stderr.trim().lines().count(), 1, "one line: {stderr}");
        assert!(stderr.contains("`iptables-save -t nat` failed"), "{stderr}");
    }
    // --simulate prints every command and runs none (so no binary is needed).
    let out = Command::new(PROXY_INIT)
        .args([
            "--simulate",
            "--incoming-proxy-port",
            "4143",
            "--outgoing-proxy-port",
            "4140",
        ])
        .env("PATH", "/nonexistent")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    assert!(
        stdout.contains("iptables-legacy -t nat -N PROXY_INIT_REDIRECT"),
        "{stdout}"
    );
    assert!(
        stdout.contains("ip6tables-legacy -t nat -A OUTPUT -j PROXY_INIT_OUTPUT"),
        "{stdout}"
    );
    // --help and --version print and exit 0.
    for flag in ["--help", "--version"] {
        let out = run(&[flag]);
        assert!(out.status.success(), "{flag}: {out:?}");
        assert!(!out.stdout.is_empty());
    }
}

/// The validator as the injector runs it in CNI mode: passes where outbound TCP is
/// redirected to 4140, exits 95 where it is not.
#[test]
fn the_validator_passes_only_with_the_redirect() {
    if skipped(
        "the_validator_passes_only_with_the_redirect",
        &["iptables-nft", "setpriv"],
    ) {
        return;
    }
    let pods = PodPair::create("val");
    // A pod has a default route; addresses nothing answers are reached through it.
    let out = Command::new("ip")
        .args(["-n", &pods.client, "route", "add", "default", "via"])
        .arg(pods.server_ip.to_string())
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    // The server pod's app port answers something else: without the redirect the validator
    // reaches it, and must see that the answer is not its own.
    let _server_side = Answerers::start(&pods.server, &[("0.0.0.0:20001", "not-the-token")]);
    let validate_within =
        |ns: &str, connect: &str, timeout: &str| validator(ns, connect, "0.0.0.0:4140", timeout);
    let validate = |ns: &str, connect: &str| validate_within(ns, connect, "10s");
    let connect = format!("{}:20001", pods.server_ip);
    let out = validate(&pods.client, &connect);
    assert_eq!(out.status.code(), Some(95), "no redirect yet: {out:?}");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("not redirected"),
        "{out:?}"
    );
    // An address nothing answers (blackholed): the timeout, also 95.
    let out = validate_within(&pods.client, "192.0.2.2:1404", "1s");
    assert_eq!(out.status.code(), Some(95), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("no answer within 1s"),
        "{out:?}"
    );

    let out = proxy_init(&pods.client, &NFT_ARGS);
    assert!(out.status.success(), "proxy-init: {out:?}");
    for connect in [connect.as_str(), "192.0.2.2:1404", "1.1.1.1:20001"] {
        let out = validate(&pods.client, connect);
        assert_eq!(
            out.status.code(),
            Some(0),
            "redirected ({connect}): {out:?}"
        );
        assert!(
            String::from_utf8_lossy(&out.stdout).contains("Validated"),
            "{out:?}"
        );
    }
}

/// The validator in `ns` as the injector runs it in CNI mode (uid 65534, debug logs), with
/// these addresses and timeout.
fn validator(ns: &str, connect: &str, listen: &str, timeout: &str) -> Output {
    let args = [
        "setpriv",
        "--reuid",
        "65534",
        "--regid",
        "65534",
        "--clear-groups",
        VALIDATOR,
        "--log-format",
        "plain",
        "--log-level",
        "debug",
        "--connect-addr",
        connect,
        "--listen-addr",
        listen,
        "--timeout",
        timeout,
    ];
    PodPair::exec(ns, &args).output().unwrap()
}
