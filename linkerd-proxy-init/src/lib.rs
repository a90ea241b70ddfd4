//! The tools the proxy image carries besides the proxy, with the command lines Linkerd's
//! injector gives them (`../shared/compat/init-containers.md`):
//!
//! - `linkerd2-proxy-init`, the `linkerd-init` init container: writes the pod's `nat` rules
//!   that send inbound TCP to the proxy's inbound port and outbound TCP to its outbound port
//!   ([`iptables`]), driving the system's `iptables`/`iptables-save` binaries as upstream does;
//! - `linkerd2-network-validator`, CNI mode's init container: checks that an outbound
//!   connection really is redirected to the proxy's port ([`validator`]);
//! - `linkerd-await`: waits until the proxy's `/ready` answers 2xx, then runs a command
//!   ([`ready`]).
#![forbid(unsafe_code)]

pub mod duration;
pub mod iptables;
pub mod ports;
pub mod ready;
pub mod validator;

/// Sets up logging to stdout, as upstream's tools log: `plain` or `json`, at `level`
/// (`info`, `debug`, ... or a full filter).
pub fn init_logging(format: &str, level: &str) -> Result<(), String> {
    let filter = tracing_subscriber::EnvFilter::try_new(level)
        .map_err(|e| format!("invalid log level {level:?}: {e}"))?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stdout)
        .with_ansi(false)
        .with_target(false);
    match format {
        "plain" => builder.init(),
        "json" => builder.json().init(),
        other => return Err(format!("invalid log format {other:?} (plain or json)")),
    }
    Ok(())
}

/// Parses the command line into `T`: `--help` and `--version` print and exit 0; a bad flag
/// prints one line naming it and exits `usage_code`.
pub fn parse_flags<T: clap::Parser>(tool: &str, usage_code: i32) -> T {
    match T::try_parse() {
        Ok(f) => f,
        Err(e) if !e.use_stderr() => {
            let _ = e.print();
            std::process::exit(0);
        }
        Err(e) => {
            let msg = e.to_string();
            let line = msg.lines().find(|l| !l.trim().is_empty()).unwrap_or(&msg);
            eprintln!("{tool}: {line}");
            std::process::exit(usage_code);
        }
    }
}

/// A single-threaded runtime (these tools do one thing at a time), or one line and exit
/// `code` if it cannot be built.
pub fn runtime(tool: &str, code: i32) -> tokio::runtime::Runtime {
    match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("{tool}: cannot start: {e}");
            std::process::exit(code);
        }
    }
}
