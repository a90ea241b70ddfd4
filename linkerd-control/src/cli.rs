//! The command line, parsed into what to do.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

/// Printed on a usage error.
pub const USAGE: &str = "\
usage:
  linkerd-control --config FILE [--listen ADDR] [--ca DIR [--cert-lifetime DURATION] [--identity NAME]]
      Serve the Destination API from FILE (reloaded when it changes) on ADDR (default
      127.0.0.1:8086; port 0 picks a free port), printing `listening on ADDR`. With --ca, also serve the Identity API, signing certificates valid for
      DURATION (default 24h) with the issuer in DIR, and accept TLS on the same port with a
      certificate for NAME (default linkerd-identity.linkerd.serviceaccount.identity.linkerd.cluster.local).
  linkerd-control ca init --dir DIR [--force] [--root-validity DURATION] [--issuer-validity DURATION]
      Write DIR/trust-anchors.pem (a new root CA, its key discarded), DIR/issuer.crt.pem and
      DIR/issuer.key.pem. Validities default to 3650d and 365d.
DURATION is a number with a unit: ms, s, m, h or d (500ms, 10s, 5m, 24h, 365d).";

/// What the command line asks for.
#[derive(Clone, Debug, PartialEq)]
pub enum Command {
    /// `ca init`.
    CaInit {
        dir: PathBuf,
        force: bool,
        root_validity: Duration,
        issuer_validity: Duration,
    },
    /// Serve the control plane.
    Serve {
        config: PathBuf,
        listen: SocketAddr,
        ca: Option<PathBuf>,
        cert_lifetime: Duration,
        identity: String,
    },
}

/// Parses `500ms`, `10s`, `5m`, `24h` or `365d`; zero is refused.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (n, unit) = s.split_at(split);
    let n: u64 = n
        .parse()
        .map_err(|_| format!("{s:?}: expected a number and a unit (ms, s, m, h, d)"))?;
    let d = match unit {
        "ms" => Duration::from_millis(n),
        "s" => Duration::from_secs(n),
        "m" => Duration::from_secs(n.saturating_mul(60)),
        "h" => Duration::from_secs(n.saturating_mul(3600)),
        "d" => Duration::from_secs(n.saturating_mul(24 * 3600)),
        _ => return Err(format!("{s:?}: the unit must be ms, s, m, h or d")),
    };
    if d.is_zero() {
        return Err(format!("{s:?}: must be more than zero"));
    }
    Ok(d)
}

/// Parses the arguments after the program name; `Err` is the message to print with [`USAGE`].
pub fn parse_args(args: impl IntoIterator<Item = String>) -> Result<Command, String> {
    let mut args = args.into_iter().peekable();
    if args.peek().map(String::as_str) == Some("ca") {
        args.next();
        if args.next().as_deref() != Some("init") {
            return Err("`ca` takes one subcommand: init".into());
        }
        return parse_ca_init(args);
    }
    let mut config = None;
    let mut listen = SocketAddr::from(([127, 0, 0, 1], 8086));
    let mut ca = None;
    let mut cert_lifetime = crate::identity::DEFAULT_CERT_LIFETIME;
    let mut identity = crate::tls::DEFAULT_IDENTITY.to_string();
    while let Some(flag) = args.next() {
        let value = args
            .next()
            .ok_or_else(|| format!("{flag}: missing value"))?;
        match flag.as_str() {
            "--config" => config = Some(PathBuf::from(value)),
            "--listen" => {
                listen = value
                    .parse()
                    .map_err(|_| format!("--listen {value:?}: expected ip:port"))?
            }
            "--ca" => ca = Some(PathBuf::from(value)),
            "--cert-lifetime" => {
                cert_lifetime =
                    parse_duration(&value).map_err(|e| format!("--cert-lifetime {e}"))?
            }
            "--identity" => {
                crate::config::check_identity_name(&value)
                    .map_err(|e| format!("--identity {value:?}: {e}"))?;
                identity = value;
            }
            _ => return Err(format!("unknown flag {flag:?}")),
        }
    }
    Ok(Command::Serve {
        config: config.ok_or("--config is required")?,
        listen,
        ca,
        cert_lifetime,
        identity,
    })
}

fn parse_ca_init(mut args: impl Iterator<Item = String>) -> Result<Command, String> {
    let mut dir = None;
    let mut force = false;
    let mut root_validity = crate::ca::DEFAULT_ROOT_VALIDITY;
    let mut issuer_validity = crate::ca::DEFAULT_ISSUER_VALIDITY;
    while let Some(flag) = args.next() {
        if flag == "--force" {
            force = true;
            continue;
        }
        let value = args
            .next()
            .ok_or_else(|| format!("{flag}: missing value"))?;
        match flag.as_str() {
            "--dir" => dir = Some(PathBuf::from(value)),
            "--root-validity" => {
                root_validity = parse_duration(&value).map_err(|e| format!("{flag} {e}"))?
            }
            "--issuer-validity" => {
                issuer_validity = parse_duration(&value).map_err(|e| format!("{flag} {e}"))?
            }
            _ => return Err(format!("unknown flag {flag:?}")),
        }
    }
    Ok(Command::CaInit {
        dir: dir.ok_or("ca init: --dir is required")?,
        force,
        root_validity,
        issuer_validity,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<Command, String> {
        parse_args(s.split_whitespace().map(String::from))
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("24h"), Ok(Duration::from_secs(86400)));
        assert_eq!(parse_duration("2d"), Ok(Duration::from_secs(172800)));
        for bad in ["", "10", "s", "1.5h", "-1s", "0s", "10 s", "10sec"] {
            assert!(parse_duration(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn commands() {
        assert_eq!(
            parse("--config m.yaml"),
            Ok(Command::Serve {
                config: "m.yaml".into(),
                listen: "127.0.0.1:8086".parse().unwrap(),
                ca: None,
                cert_lifetime: Duration::from_secs(86400),
                identity: crate::tls::DEFAULT_IDENTITY.into(),
            })
        );
        let Ok(Command::Serve {
            ca,
            cert_lifetime,
            identity,
            ..
        }) = parse("--config m.yaml --ca /ca --cert-lifetime 10s --identity ctl.x")
        else {
            panic!()
        };
        assert_eq!(
            (ca, cert_lifetime),
            (Some("/ca".into()), Duration::from_secs(10))
        );
        assert_eq!(identity, "ctl.x");
        assert!(parse("--listen 1.2.3.4:5").is_err());
        assert!(parse("--config m.yaml --cert-lifetime 1x").is_err());
        assert!(parse("--config m.yaml --identity Bad_Name").is_err());
        assert_eq!(
            parse("ca init --force --dir /ca --issuer-validity 30d"),
            Ok(Command::CaInit {
                dir: "/ca".into(),
                force: true,
                root_validity: crate::ca::DEFAULT_ROOT_VALIDITY,
                issuer_validity: Duration::from_secs(30 * 86400),
            })
        );
        assert!(parse("ca init").is_err());
        assert!(parse("ca rotate --dir x").is_err());
    }
}
