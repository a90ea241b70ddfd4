//! `linkerd2-proxy-init`: the `linkerd-init` init container. Writes the pod's `nat` rules that
//! redirect inbound TCP to the proxy's inbound port and outbound TCP to its outbound port,
//! with upstream's flags and defaults.

use clap::{ArgAction, Parser};
use linkerd_proxy_init::{
    init_logging,
    iptables::{Error, Mode, Rules, Runner},
    ports::parse_list,
};

/// Flags as upstream's proxy-init (cobra) takes them; booleans take `--flag` or
/// `--flag=true|false`.
#[derive(Parser, Debug)]
#[command(
    name = "linkerd2-proxy-init",
    version,
    about = "Writes the iptables rules that send a pod's TCP traffic through the Linkerd proxy"
)]
struct Flags {
    /// Port to redirect incoming traffic to.
    #[arg(long, default_value_t = -1, allow_negative_numbers = true)]
    incoming_proxy_port: i32,
    /// Port to redirect outgoing traffic to.
    #[arg(long, default_value_t = -1, allow_negative_numbers = true)]
    outgoing_proxy_port: i32,
    /// Uid of the proxy, whose traffic is not redirected (none when not above 0).
    #[arg(long, default_value_t = -1, allow_negative_numbers = true)]
    proxy_uid: i64,
    /// Gid of the proxy, whose traffic is not redirected (none when not above 0).
    #[arg(long, default_value_t = -1, allow_negative_numbers = true)]
    proxy_gid: i64,
    /// Only these inbound ports are redirected (default: all).
    #[arg(long, value_delimiter = ',', action = ArgAction::Append)]
    ports_to_redirect: Vec<String>,
    /// Inbound ports (or ranges a-b) that are not redirected.
    #[arg(long, value_delimiter = ',', action = ArgAction::Append)]
    inbound_ports_to_ignore: Vec<String>,
    /// Outbound ports (or ranges a-b) that are not redirected.
    #[arg(long, value_delimiter = ',', action = ArgAction::Append)]
    outbound_ports_to_ignore: Vec<String>,
    /// Inbound source subnets (CIDRs) that are not redirected.
    #[arg(long, value_delimiter = ',', action = ArgAction::Append)]
    subnets_to_ignore: Vec<String>,
    /// Print the commands without running them.
    #[arg(long, visible_alias = "dry-run", num_args = 0..=1, require_equals = true,
          default_value_t = false, default_missing_value = "true", action = ArgAction::Set)]
    simulate: bool,
    /// Run the commands in this network namespace (`nsenter --net=<path>`).
    #[arg(long, default_value = "")]
    netns: String,
    /// Pass `-w` to iptables, to wait for the xtables lock.
    #[arg(short = 'w', long, num_args = 0..=1, require_equals = true,
          default_value_t = false, default_missing_value = "true", action = ArgAction::Set)]
    use_wait_flag: bool,
    /// nft, legacy or plain (default: from --firewall-bin-path).
    #[arg(long)]
    iptables_mode: Option<String>,
    /// iptables-nft, iptables-legacy (the default when empty) or iptables: picks the mode.
    #[arg(long, default_value = "")]
    firewall_bin_path: String,
    /// Accepted as upstream; the save binary is the mode's.
    #[arg(long, default_value = "")]
    firewall_save_bin_path: String,
    /// Also write the rules for IPv6 with ip6tables.
    #[arg(long, num_args = 0..=1, require_equals = true, default_value_t = true,
          default_missing_value = "true", action = ArgAction::Set)]
    ipv6: bool,
    /// Seconds of conntrack's TCP CLOSE_WAIT timeout to set (0: leave it).
    #[arg(long, default_value_t = 0)]
    timeout_close_wait_secs: u32,
    /// plain or json.
    #[arg(long, default_value = "plain")]
    log_format: String,
    /// error, warn, info, debug or trace.
    #[arg(long, default_value = "info")]
    log_level: String,
}

fn main() {
    let flags: Flags = linkerd_proxy_init::parse_flags("linkerd2-proxy-init", 1);
    if let Err(e) = init_logging(&flags.log_format, &flags.log_level) {
        fail(e);
    }
    if let Err(e) = run(flags) {
        tracing::error!("{e}");
        fail(e.to_string());
    }
}

fn run(flags: Flags) -> Result<(), Error> {
    let port = |name: &str, p: i32| -> Result<u16, Error> {
        u16::try_from(p)
            .ok()
            .filter(|p| *p > 0)
            .ok_or_else(|| Error::Config(format!("--{name} {p}: must be a port (1-65535)")))
    };
    let id = |id: i64| u32::try_from(id).ok().filter(|id| *id > 0);
    let ports = |name: &str, list: &[String]| {
        let (ports, invalid) = parse_list(list);
        for why in invalid {
            tracing::warn!("--{name}: skipping {why}");
        }
        ports
    };
    let mode = Mode::from_flags(flags.iptables_mode.as_deref(), &flags.firewall_bin_path)?;
    let subnets = flags
        .subnets_to_ignore
        .iter()
        .map(|s| s.trim())
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.parse()
                .map_err(|e| Error::Config(format!("--subnets-to-ignore {s:?}: {e}")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let rules = Rules {
        incoming_proxy_port: port("incoming-proxy-port", flags.incoming_proxy_port)?,
        outgoing_proxy_port: port("outgoing-proxy-port", flags.outgoing_proxy_port)?,
        proxy_uid: id(flags.proxy_uid),
        proxy_gid: id(flags.proxy_gid),
        ports_to_redirect: ports("ports-to-redirect", &flags.ports_to_redirect),
        inbound_ports_to_ignore: ports("inbound-ports-to-ignore", &flags.inbound_ports_to_ignore),
        outbound_ports_to_ignore: ports(
            "outbound-ports-to-ignore",
            &flags.outbound_ports_to_ignore,
        ),
        subnets_to_ignore: subnets,
    };
    let runner = Runner {
        simulate: flags.simulate,
        netns: Some(flags.netns).filter(|n| !n.is_empty()),
        wait: flags.use_wait_flag,
    };
    tracing::debug!(?mode, ?rules, "applying");
    if flags.timeout_close_wait_secs > 0 {
        runner.run(
            "sysctl",
            &[
                "-w".into(),
                format!(
                    "net.netfilter.nf_conntrack_tcp_timeout_close_wait={}",
                    flags.timeout_close_wait_secs
                ),
            ],
        )?;
    }
    runner.apply(&rules, mode, false)?;
    if flags.ipv6 {
        runner.apply(&rules, mode, true)?;
    }
    Ok(())
}

/// One line naming what failed, and exit 1 (as upstream).
fn fail(msg: impl std::fmt::Display) -> ! {
    eprintln!("linkerd2-proxy-init: {msg}");
    std::process::exit(1);
}
