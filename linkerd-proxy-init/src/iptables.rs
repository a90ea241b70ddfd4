//! proxy-init's `nat` rules: the same chains, rules, comments and order as upstream's, written
//! with the system's `iptables` binaries (nft, legacy or plain), for IPv4 and IPv6.
//!
//! A run reads the table first (`<save> -t nat`): an existing chain is flushed instead of
//! created, and a jump that exists is not added again, so a second run leaves exactly the
//! same rules.

use crate::ports::{multiport_chunks, PortRange};
use ipnet::IpNet;
use std::process::Command;

/// The inbound chain (hooked from `PREROUTING`).
pub const REDIRECT_CHAIN: &str = "PROXY_INIT_REDIRECT";
/// The outbound chain (hooked from `OUTPUT`).
pub const OUTPUT_CHAIN: &str = "PROXY_INIT_OUTPUT";

/// What went wrong; the binary prints it as its one error line.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A flag's value, or a combination of flags, is invalid.
    #[error("{0}")]
    Config(String),
    /// A binary could not be started (not installed, not executable).
    #[error("cannot run {bin}: {source}")]
    Spawn {
        /// The binary.
        bin: String,
        /// Why.
        source: std::io::Error,
    },
    /// A command ran and failed.
    #[error("`{cmd}` failed ({status}): {stderr}")]
    Failed {
        /// The command line.
        cmd: String,
        /// Its exit status.
        status: std::process::ExitStatus,
        /// What it wrote to stderr, on one line.
        stderr: String,
    },
}

/// Which iptables backend writes the rules.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// `iptables-nft`, `ip6tables-nft` (the chart's default).
    Nft,
    /// `iptables-legacy`, `ip6tables-legacy`.
    Legacy,
    /// `iptables`, `ip6tables`, whatever the system's default is.
    Plain,
}

impl Mode {
    /// The mode `--iptables-mode` names, else the one `--firewall-bin-path` implies, as
    /// upstream derives it: `iptables-nft` is nft, `iptables` plain, empty or
    /// `iptables-legacy` legacy; anything else is an error. A path's directory is ignored.
    pub fn from_flags(mode: Option<&str>, firewall_bin_path: &str) -> Result<Self, Error> {
        if let Some(mode) = mode.filter(|m| !m.is_empty()) {
            return match mode {
                "nft" => Ok(Self::Nft),
                "legacy" => Ok(Self::Legacy),
                "plain" => Ok(Self::Plain),
                other => Err(Error::Config(format!(
                    "--iptables-mode {other:?}: must be nft, legacy or plain"
                ))),
            };
        }
        let name = firewall_bin_path
            .rsplit('/')
            .next()
            .unwrap_or(firewall_bin_path);
        match name {
            "iptables-nft" => Ok(Self::Nft),
            "iptables" => Ok(Self::Plain),
            "" | "iptables-legacy" => Ok(Self::Legacy),
            other => Err(Error::Config(format!(
                "--firewall-bin-path {other:?}: must be iptables-nft, iptables-legacy or iptables"
            ))),
        }
    }

    /// The rule and save binaries of this mode for one address family.
    pub fn binaries(self, ipv6: bool) -> (&'static str, &'static str) {
        match (self, ipv6) {
            (Self::Nft, false) => ("iptables-nft", "iptables-nft-save"),
            (Self::Nft, true) => ("ip6tables-nft", "ip6tables-nft-save"),
            (Self::Legacy, false) => ("iptables-legacy", "iptables-legacy-save"),
            (Self::Legacy, true) => ("ip6tables-legacy", "ip6tables-legacy-save"),
            (Self::Plain, false) => ("iptables", "iptables-save"),
            (Self::Plain, true) => ("ip6tables", "ip6tables-save"),
        }
    }
}

/// The redirect to write.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rules {
    /// The proxy's inbound port (`--incoming-proxy-port`).
    pub incoming_proxy_port: u16,
    /// The proxy's outbound port (`--outgoing-proxy-port`).
    pub outgoing_proxy_port: u16,
    /// The proxy's uid, whose connections are not redirected (`--proxy-uid`; none when <= 0).
    pub proxy_uid: Option<u32>,
    /// The proxy's gid, likewise (`--proxy-gid`).
    pub proxy_gid: Option<u32>,
    /// Only these inbound ports are redirected; empty: all (`--ports-to-redirect`).
    pub ports_to_redirect: Vec<PortRange>,
    /// Inbound ports left alone (`--inbound-ports-to-ignore`).
    pub inbound_ports_to_ignore: Vec<PortRange>,
    /// Outbound ports left alone (`--outbound-ports-to-ignore`).
    pub outbound_ports_to_ignore: Vec<PortRange>,
    /// Inbound sources left alone (`--subnets-to-ignore`).
    pub subnets_to_ignore: Vec<IpNet>,
}

/// One command's arguments (after the binary).
pub type Args = Vec<String>;

impl Rules {
    /// The commands that write these rules in one family's `nat` table, given what that table
    /// holds now (`<save> -t nat`'s output). Subnets of the other family are left out.
    pub fn commands(&self, existing: &str, ipv6: bool) -> Vec<Args> {
        let mut cmds = Commands(Vec::new());
        let (incoming, outgoing) = (
            self.incoming_proxy_port.to_string(),
            self.outgoing_proxy_port.to_string(),
        );

        // Inbound.
        cmds.chain(existing, REDIRECT_CHAIN);
        cmds.ignore_ports(REDIRECT_CHAIN, &self.inbound_ports_to_ignore);
        for net in self.subnets_to_ignore.iter().filter(|n| is_v6(n) == ipv6) {
            let net = net.to_string();
            let rule = ["-p", "all", "-j", "RETURN", "-s", &net];
            cmds.append(REDIRECT_CHAIN, &rule, &format!("ignore-subnet-{net}"));
        }
        if self.ports_to_redirect.is_empty() {
            let rule = ["-p", "tcp", "-j", "REDIRECT", "--to-port", &incoming];
            cmds.append(REDIRECT_CHAIN, &rule, "redirect-all-incoming-to-proxy-port");
        }
        for port in &self.ports_to_redirect {
            let port = port.to_string();
            let rule = [
                "-p",
                "tcp",
                "--destination-port",
                &port,
                "-j",
                "REDIRECT",
                "--to-port",
                &incoming,
            ];
            let comment = format!("redirect-port-{port}-to-proxy-port");
            cmds.append(REDIRECT_CHAIN, &rule, &comment);
        }
        cmds.jump(existing, "PREROUTING", REDIRECT_CHAIN, "prerouting");

        // Outbound.
        cmds.chain(existing, OUTPUT_CHAIN);
        for (flag, id, comment) in [
            ("--uid-owner", self.proxy_uid, "ignore-proxy-user-id"),
            ("--gid-owner", self.proxy_gid, "ignore-proxy-group-id"),
        ] {
            if let Some(id) = id {
                let id = id.to_string();
                let rule = ["-m", "owner", flag, &id, "-j", "RETURN"];
                cmds.append(OUTPUT_CHAIN, &rule, comment);
            }
        }
        cmds.append(
            OUTPUT_CHAIN,
            &["-o", "lo", "-j", "RETURN"],
            "ignore-loopback",
        );
        cmds.ignore_ports(OUTPUT_CHAIN, &self.outbound_ports_to_ignore);
        let rule = ["-p", "tcp", "-j", "REDIRECT", "--to-port", &outgoing];
        cmds.append(OUTPUT_CHAIN, &rule, "redirect-all-outgoing-to-proxy-port");
        cmds.jump(existing, "OUTPUT", OUTPUT_CHAIN, "output");
        cmds.0
    }
}

/// The commands being built, each `-t nat ...`.
struct Commands(Vec<Args>);

impl Commands {
    fn push(&mut self, parts: &[&str]) -> &mut Args {
        let mut a: Args = vec!["-t".into(), "nat".into()];
        a.extend(parts.iter().map(|s| s.to_string()));
        self.0.push(a);
        // Just pushed.
        let last = self.0.len() - 1;
        &mut self.0[last]
    }

    /// `-A <chain> <rule> -m comment --comment proxy-init/<comment>`.
    fn append(&mut self, chain: &str, rule: &[&str], comment: &str) {
        let a = self.push(&["-A", chain]);
        a.extend(rule.iter().map(|s| s.to_string()));
        a.extend(["-m", "comment", "--comment"].map(String::from));
        a.push(format!("proxy-init/{comment}"));
    }

    /// Creates `chain`, or flushes it if it exists.
    fn chain(&mut self, existing: &str, chain: &str) {
        self.push(&[new_or_flush(existing, chain), chain]);
    }

    /// One `multiport` RETURN rule per [`multiport_chunks`] of `ports`.
    fn ignore_ports(&mut self, chain: &str, ports: &[PortRange]) {
        for ports in multiport_chunks(ports) {
            let rule = [
                "-p",
                "tcp",
                "--match",
                "multiport",
                "--dports",
                &ports,
                "-j",
                "RETURN",
            ];
            self.append(chain, &rule, &format!("ignore-port-{ports}"));
        }
    }

    /// The hook from `from` to `to`, unless it exists.
    fn jump(&mut self, existing: &str, from: &str, to: &str, name: &str) {
        if !has_jump(existing, from, to) {
            let comment = format!("install-proxy-init-{name}");
            self.append(from, &["-j", to], &comment);
        }
    }
}

fn is_v6(net: &IpNet) -> bool {
    matches!(net, IpNet::V6(_))
}

/// `-F` when `iptables-save` lists the chain, else `-N`.
fn new_or_flush(existing: &str, chain: &str) -> &'static str {
    let header = format!(":{chain} ");
    match existing.lines().any(|l| l.starts_with(&header)) {
        true => "-F",
        false => "-N",
    }
}

/// Whether `existing` has a rule in `from` jumping to `to`.
fn has_jump(existing: &str, from: &str, to: &str) -> bool {
    existing.lines().any(|l| {
        let words: Vec<&str> = l.split_whitespace().collect();
        words.get(..2) == Some(&["-A", from][..]) && words.windows(2).any(|w| w == ["-j", to])
    })
}

/// Runs (or, simulating, only prints) the commands, in a network namespace if asked.
#[derive(Clone, Debug, Default)]
pub struct Runner {
    /// Print each command without running it (`--simulate`).
    pub simulate: bool,
    /// Run each command with `nsenter --net=<netns> --` (`--netns`).
    pub netns: Option<String>,
    /// Append `-w` to rule commands, to wait for the xtables lock (`-w/--use-wait-flag`).
    pub wait: bool,
}

impl Runner {
    /// Runs `bin args` and returns its stdout; logs the command line at info first.
    pub fn run(&self, bin: &str, args: &[String]) -> Result<String, Error> {
        let line = format!("{bin} {}", args.join(" "));
        tracing::info!("{line}");
        if self.simulate {
            return Ok(String::new());
        }
        let mut cmd = match &self.netns {
            Some(ns) => {
                let mut c = Command::new("nsenter");
                c.arg(format!("--net={ns}")).arg("--").arg(bin);
                c
            }
            None => Command::new(bin),
        };
        // Not /dev/null (which `output` would open for stdin): nothing is read, and a root
        // without /dev (a bare chroot of the image) must work too.
        cmd.args(args).stdin(std::process::Stdio::inherit());
        let out = cmd.output().map_err(|source| Error::Spawn {
            bin: match &self.netns {
                Some(_) => format!("nsenter (for {bin})"),
                None => bin.to_string(),
            },
            source,
        })?;
        if !out.status.success() {
            return Err(Error::Failed {
                cmd: line,
                status: out.status,
                // One line: the binary's own message, its lines joined.
                stderr: String::from_utf8_lossy(&out.stderr)
                    .lines()
                    .map(str::trim)
                    .filter(|l| !l.is_empty())
                    .collect::<Vec<_>>()
                    .join("; "),
            });
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Writes `rules` in one family's `nat` table with `mode`'s binaries: reads the table,
    /// runs every command (stopping at the first failure), and prints the table after.
    pub fn apply(&self, rules: &Rules, mode: Mode, ipv6: bool) -> Result<(), Error> {
        let (bin, save) = mode.binaries(ipv6);
        let save_args = ["-t".to_string(), "nat".to_string()];
        let existing = self.run(save, &save_args)?;
        for mut args in rules.commands(&existing, ipv6) {
            if self.wait {
                args.push("-w".into());
            }
            self.run(bin, &args)?;
        }
        let after = self.run(save, &save_args)?;
        if !after.is_empty() {
            tracing::info!("{}", after.trim_end());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ports::parse_list;

    fn defaults() -> Rules {
        Rules {
            incoming_proxy_port: 4143,
            outgoing_proxy_port: 4140,
            proxy_uid: Some(2102),
            proxy_gid: None,
            ports_to_redirect: vec![],
            inbound_ports_to_ignore: parse_list(&["4190,4191,4567,4568"]).0,
            outbound_ports_to_ignore: parse_list(&["4567,4568"]).0,
            subnets_to_ignore: vec![],
        }
    }

    fn lines(cmds: &[Args]) -> Vec<String> {
        cmds.iter().map(|a| a.join(" ")).collect()
    }

    /// The injector's defaults give upstream's command sequence, rule for rule.
    #[test]
    fn the_injectors_defaults() {
        let want = [
            "-t nat -N PROXY_INIT_REDIRECT",
            "-t nat -A PROXY_INIT_REDIRECT -p tcp --match multiport --dports 4190,4191,4567,4568 -j RETURN -m comment --comment proxy-init/ignore-port-4190,4191,4567,4568",
            "-t nat -A PROXY_INIT_REDIRECT -p tcp -j REDIRECT --to-port 4143 -m comment --comment proxy-init/redirect-all-incoming-to-proxy-port",
            "-t nat -A PREROUTING -j PROXY_INIT_REDIRECT -m comment --comment proxy-init/install-proxy-init-prerouting",
            "-t nat -N PROXY_INIT_OUTPUT",
            "-t nat -A PROXY_INIT_OUTPUT -m owner --uid-owner 2102 -j RETURN -m comment --comment proxy-init/ignore-proxy-user-id",
            "-t nat -A PROXY_INIT_OUTPUT -o lo -j RETURN -m comment --comment proxy-init/ignore-loopback",
            "-t nat -A PROXY_INIT_OUTPUT -p tcp --match multiport --dports 4567,4568 -j RETURN -m comment --comment proxy-init/ignore-port-4567,4568",
            "-t nat -A PROXY_INIT_OUTPUT -p tcp -j REDIRECT --to-port 4140 -m comment --comment proxy-init/redirect-all-outgoing-to-proxy-port",
            "-t nat -A OUTPUT -j PROXY_INIT_OUTPUT -m comment --comment proxy-init/install-proxy-init-output",
        ];
        assert_eq!(lines(&defaults().commands("", false)), want);
    }

    /// What `iptables-save -t nat` prints after the defaults were applied once.
    const APPLIED: &str = "\
*nat
:PREROUTING ACCEPT [0:0]
:INPUT ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:POSTROUTING ACCEPT [0:0]
:PROXY_INIT_OUTPUT - [0:0]
:PROXY_INIT_REDIRECT - [0:0]
-A PREROUTING -m comment --comment \"proxy-init/install-proxy-init-prerouting\" -j PROXY_INIT_REDIRECT
-A OUTPUT -m comment --comment \"proxy-init/install-proxy-init-output\" -j PROXY_INIT_OUTPUT
-A PROXY_INIT_OUTPUT -m owner --uid-owner 2102 -m comment --comment \"proxy-init/ignore-proxy-user-id\" -j RETURN
COMMIT
";

    #[test]
    fn a_second_run_flushes_and_adds_no_jump() {
        let cmds = lines(&defaults().commands(APPLIED, false));
        assert_eq!(cmds[0], "-t nat -F PROXY_INIT_REDIRECT");
        assert!(cmds.contains(&"-t nat -F PROXY_INIT_OUTPUT".to_string()));
        assert!(
            !cmds
                .iter()
                .any(|c| c.contains("-A PREROUTING") || c.contains("-A OUTPUT ")),
            "{cmds:#?}"
        );
        assert!(!cmds.iter().any(|c| c.contains(" -N ")));
        // Another chain's jump does not count as ours.
        let other = "-A PREROUTING -j PROXY_INIT_REDIRECT_X\n";
        assert!(!has_jump(other, "PREROUTING", REDIRECT_CHAIN));
    }

    #[test]
    fn variants() {
        let mut r = defaults();
        r.proxy_gid = Some(2103);
        r.subnets_to_ignore = vec!["10.0.0.0/8".parse().unwrap(), "fd00::/8".parse().unwrap()];
        r.ports_to_redirect = parse_list(&["8080,9000"]).0;
        r.outbound_ports_to_ignore.clear();
        let v4 = lines(&r.commands("", false));
        assert!(v4.contains(&"-t nat -A PROXY_INIT_REDIRECT -p all -j RETURN -s 10.0.0.0/8 -m comment --comment proxy-init/ignore-subnet-10.0.0.0/8".to_string()), "{v4:#?}");
        assert!(
            !v4.iter().any(|c| c.contains("fd00::/8")),
            "IPv6 subnets stay out of iptables"
        );
        assert!(v4.contains(&"-t nat -A PROXY_INIT_REDIRECT -p tcp --destination-port 9000 -j REDIRECT --to-port 4143 -m comment --comment proxy-init/redirect-port-9000-to-proxy-port".to_string()));
        assert!(!v4.iter().any(|c| c.contains("redirect-all-incoming")));
        let uid = v4.iter().position(|c| c.contains("--uid-owner")).unwrap();
        assert_eq!(v4[uid + 1], "-t nat -A PROXY_INIT_OUTPUT -m owner --gid-owner 2103 -j RETURN -m comment --comment proxy-init/ignore-proxy-group-id");
        assert!(!v4
            .iter()
            .any(|c| c.contains("PROXY_INIT_OUTPUT -p tcp --match")));
        let v6 = lines(&r.commands("", true));
        assert!(v6.iter().any(|c| c.contains("-s fd00::/8")));
        assert!(!v6.iter().any(|c| c.contains("10.0.0.0/8")));
    }

    #[test]
    fn modes_as_upstream_derives_them() {
        let m = |mode: Option<&str>, bin: &str| Mode::from_flags(mode, bin);
        assert_eq!(m(None, "iptables-nft").unwrap(), Mode::Nft);
        assert_eq!(m(None, "/usr/sbin/iptables-nft").unwrap(), Mode::Nft);
        assert_eq!(m(None, "iptables").unwrap(), Mode::Plain);
        assert_eq!(m(None, "").unwrap(), Mode::Legacy);
        assert_eq!(m(None, "iptables-legacy").unwrap(), Mode::Legacy);
        assert_eq!(m(Some("nft"), "iptables").unwrap(), Mode::Nft);
        assert!(m(None, "nft").is_err());
        assert!(m(Some("fast"), "").is_err());
        assert_eq!(
            Mode::Nft.binaries(true),
            ("ip6tables-nft", "ip6tables-nft-save")
        );
        assert_eq!(
            Mode::Legacy.binaries(false),
            ("iptables-legacy", "iptables-legacy-save")
        );
    }

    #[test]
    fn simulating_runs_nothing() {
        let runner = Runner {
            simulate: true,
            ..Default::default()
        };
        // A binary that does not exist: nothing is started.
        assert!(runner.run("no-such-iptables", &[]).is_ok());
        let err = Runner::default()
            .run("no-such-iptables", &[])
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("cannot run no-such-iptables:"), "{err}");
    }
}
