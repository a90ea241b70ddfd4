//! Two "pods" in network namespaces joined by a veth pair, with proxy-init's iptables rules,
//! for the transparent-path end-to-end test and the `proxy-pair` benchmark.
//!
//! Everything is created with this process's id in its names and deleted on drop, even when
//! the test fails. It does not start proxies or apps: callers run them with [`PodPair::exec`].
#![forbid(unsafe_code)]

use std::{
    net::{Ipv4Addr, Ipv6Addr},
    process::{Command, Output},
};

/// A client pod and a server pod, each a network namespace, joined by a veth pair, with an
/// IPv4 and an IPv6 address each (a dual-stack pod).
pub struct PodPair {
    pub client: String,
    pub server: String,
    pub client_ip: Ipv4Addr,
    pub server_ip: Ipv4Addr,
    pub client_ip6: Ipv6Addr,
    pub server_ip6: Ipv6Addr,
}

/// Why the namespaces can't be made here (not root, or a tool is missing).
pub fn unavailable() -> Option<String> {
    let uid = Command::new("id").arg("-u").output().ok()?;
    if String::from_utf8_lossy(&uid.stdout).trim() != "0" {
        return Some("not running as root".into());
    }
    ["ip", "iptables", "ip6tables", "curl", "setpriv"]
        .into_iter()
        .find(|tool| !has_tool(tool))
        .map(|tool| format!("`{tool}` is not installed"))
}

/// Whether `tool` is on the `PATH`.
pub fn has_tool(tool: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

/// Whether `test` must be skipped here (namespaces unavailable, or one of `tools` missing),
/// saying why; with `LINKERD_REQUIRE_NETNS=1` (CI) it panics instead.
pub fn skipped(test: &str, tools: &[&str]) -> bool {
    let why = unavailable().or_else(|| {
        tools
            .iter()
            .find(|t| !has_tool(t))
            .map(|t| format!("`{t}` is not installed"))
    });
    let Some(why) = why else { return false };
    if std::env::var("LINKERD_REQUIRE_NETNS").as_deref() == Ok("1") {
        panic!("{test} must run here, but {why}");
    }
    eprintln!("SKIPPED {test}: {why}");
    true
}

/// proxy-init's arguments as Linkerd's injector renders them by default (nft mode, IPv6
/// off, uid 2102, the default ignored ports): `init-containers.md` section 2.
pub const INJECTED_PROXY_INIT_ARGS: [&str; 15] = [
    "--firewall-bin-path",
    "iptables-nft",
    "--firewall-save-bin-path",
    "iptables-nft-save",
    "--ipv6=false",
    "--incoming-proxy-port",
    "4143",
    "--outgoing-proxy-port",
    "4140",
    "--proxy-uid",
    "2102",
    "--inbound-ports-to-ignore",
    "4190,4191,4567,4568",
    "--outbound-ports-to-ignore",
    "4567,4568",
];

/// Runs a command and fails with its output when it does not succeed.
pub fn run(args: &[&str]) -> Output {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .unwrap_or_else(|e| panic!("{args:?}: {e}"));
    assert!(
        out.status.success(),
        "{args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

impl PodPair {
    /// Creates both namespaces, the veth pair and addresses in 10.248.x.0/30 and
    /// fd00:248:x::/64 (unique local, only inside the namespaces), with `x` taken from this
    /// process's id so parallel runs don't collide.
    pub fn create(tag: &str) -> Self {
        let id = std::process::id();
        let net = (id % 250) as u8;
        let pair = Self {
            client: format!("l5d-{tag}-c-{id}"),
            server: format!("l5d-{tag}-s-{id}"),
            client_ip: Ipv4Addr::new(10, 248, net, 1),
            server_ip: Ipv4Addr::new(10, 248, net, 2),
            client_ip6: Ipv6Addr::new(0xfd00, 0x248, net.into(), 0, 0, 0, 0, 1),
            server_ip6: Ipv6Addr::new(0xfd00, 0x248, net.into(), 0, 0, 0, 0, 2),
        };
        // Constructed first so a failure below still deletes what exists.
        let (vc, vs) = (format!("l5c{id}"), format!("l5s{id}"));
        run(&["ip", "netns", "add", &pair.client]);
        run(&["ip", "netns", "add", &pair.server]);
        // Fixed MAC addresses and permanent neighbour entries: each end knows the other
        // without neighbour discovery (on a fresh veth, the first IPv6 connect was seen to
        // wait a second for it, beyond the proxy's connect timeout).
        let (mac_c, mac_s) = ("02:00:00:00:00:01", "02:00:00:00:00:02");
        run(&[
            "ip",
            "link",
            "add",
            &vc,
            "address",
            mac_c,
            "netns",
            &pair.client,
            "type",
            "veth",
            "peer",
            "name",
            &vs,
            "address",
            mac_s,
            "netns",
            &pair.server,
        ]);
        for (ns, dev, ip, ip6) in [
            (&pair.client, &vc, pair.client_ip, pair.client_ip6),
            (&pair.server, &vs, pair.server_ip, pair.server_ip6),
        ] {
            run(&[
                "ip",
                "-n",
                ns,
                "addr",
                "add",
                &format!("{ip}/30"),
                "dev",
                dev,
            ]);
            // `nodad`: usable at once, without duplicate-address detection's wait.
            run(&[
                "ip",
                "-n",
                ns,
                "-6",
                "addr",
                "add",
                &format!("{ip6}/64"),
                "dev",
                dev,
                "nodad",
            ]);
            run(&["ip", "-n", ns, "link", "set", dev, "up"]);
        }
        for (ns, dev, peer, peer6, mac) in [
            (&pair.client, &vc, pair.server_ip, pair.server_ip6, mac_s),
            (&pair.server, &vs, pair.client_ip, pair.client_ip6, mac_c),
        ] {
            for ip in [peer.to_string(), peer6.to_string()] {
                run(&[
                    "ip",
                    "-n",
                    ns,
                    "neigh",
                    "replace",
                    &ip,
                    "lladdr",
                    mac,
                    "dev",
                    dev,
                    "nud",
                    "permanent",
                ]);
            }
            run(&["ip", "-n", ns, "link", "set", "lo", "up"]);
        }
        pair
    }

    /// A command run inside namespace `ns`.
    pub fn exec(ns: &str, args: &[&str]) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", ns]).args(args);
        cmd
    }

    /// Installs proxy-init's outbound rules in the client pod, for IPv4 and IPv6 (`iptables`
    /// and `ip6tables`): every TCP connection is redirected to the outbound listener, except
    /// the proxy's own (by uid) and loopback.
    pub fn redirect_outbound(&self, proxy_uid: u32, port: u16) {
        for cmd in ["iptables", "ip6tables"] {
            self.redirect_outbound_with(cmd, proxy_uid, port);
        }
    }

    fn redirect_outbound_with(&self, cmd: &str, proxy_uid: u32, port: u16) {
        let ipt = |rule: &[&str]| nat_rule(cmd, &self.client, rule);
        let uid = proxy_uid.to_string();
        let port = port.to_string();
        ipt(&["-N", "PROXY_INIT_OUTPUT"]);
        ipt(&[
            "-A",
            "PROXY_INIT_OUTPUT",
            "-m",
            "owner",
            "--uid-owner",
            &uid,
            "-j",
            "RETURN",
        ]);
        ipt(&["-A", "PROXY_INIT_OUTPUT", "-o", "lo", "-j", "RETURN"]);
        ipt(&[
            "-A",
            "PROXY_INIT_OUTPUT",
            "-p",
            "tcp",
            "-j",
            "REDIRECT",
            "--to-port",
            &port,
        ]);
        ipt(&["-A", "OUTPUT", "-j", "PROXY_INIT_OUTPUT"]);
    }

    /// Installs proxy-init's inbound rules in the server pod, for IPv4 and IPv6: every TCP
    /// connection arriving from the network is redirected to the inbound listener, except the
    /// admin ports.
    pub fn redirect_inbound(&self, port: u16, skip: &[u16]) {
        for cmd in ["iptables", "ip6tables"] {
            self.redirect_inbound_with(cmd, port, skip);
        }
    }

    fn redirect_inbound_with(&self, cmd: &str, port: u16, skip: &[u16]) {
        let ipt = |rule: &[&str]| nat_rule(cmd, &self.server, rule);
        let port = port.to_string();
        let skip: Vec<String> = skip.iter().map(u16::to_string).collect();
        ipt(&["-N", "PROXY_INIT_REDIRECT"]);
        ipt(&[
            "-A",
            "PROXY_INIT_REDIRECT",
            "-p",
            "tcp",
            "-m",
            "multiport",
            "--dports",
            &skip.join(","),
            "-j",
            "RETURN",
        ]);
        ipt(&[
            "-A",
            "PROXY_INIT_REDIRECT",
            "-p",
            "tcp",
            "-j",
            "REDIRECT",
            "--to-port",
            &port,
        ]);
        ipt(&["-A", "PREROUTING", "-j", "PROXY_INIT_REDIRECT"]);
    }
}

/// Appends a rule to the `nat` table of namespace `ns`, with `cmd` (`iptables` or
/// `ip6tables`).
fn nat_rule(cmd: &str, ns: &str, rule: &[&str]) {
    let mut args = vec!["ip", "netns", "exec", ns, cmd, "-w", "-t", "nat"];
    args.extend_from_slice(rule);
    run(&args);
}

impl Drop for PodPair {
    fn drop(&mut self) {
        // Deleting a namespace deletes its end of the veth pair, and so the pair.
        for ns in [&self.client, &self.server] {
            let _ = Command::new("ip").args(["netns", "delete", ns]).output();
        }
    }
}
