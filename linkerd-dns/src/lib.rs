//! Name canonicalisation: a short name an app uses (`web`, `web.ns`) becomes the fully
//! qualified name it means (`web.ns.svc.cluster.local.`) through the resolver's search
//! domains, as the system resolver (`/etc/resolv.conf`) would expand it, so the proxy can look
//! it up by its canonical name.
//!
//! It does not resolve addresses for forwarding: discovery does that. Answers are cached by
//! hickory for their TTL, clamped by the configured minimum and maximum.
#![forbid(unsafe_code)]

#[cfg(feature = "test-server")]
pub mod test_server;

use hickory_resolver::{
    config::{ResolverConfig, ResolverOpts},
    net::runtime::TokioRuntimeProvider,
    TokioResolver,
};
use std::time::Duration;

/// TTL bounds for cached answers.
#[derive(Clone, Copy, Debug, Default)]
pub struct DnsConfig {
    /// Answers are cached at least this long.
    pub min_ttl: Option<Duration>,
    /// Answers are cached at most this long.
    pub max_ttl: Option<Duration>,
}

/// Why a name could not be canonicalised.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// `/etc/resolv.conf` could not be read.
    #[error("failed to read the system DNS configuration: {0}")]
    SystemConfig(String),
    /// Not a DNS name.
    #[error("invalid name {0:?}")]
    InvalidName(String),
    /// The lookup failed.
    #[error("DNS lookup of {name} failed: {reason}")]
    Lookup {
        /// The name.
        name: String,
        /// Why.
        reason: String,
    },
}

/// Expands names with the resolver's search domains.
#[derive(Clone)]
pub struct Canonicalizer {
    resolver: TokioResolver,
}

impl Canonicalizer {
    /// Uses the system configuration (`/etc/resolv.conf`: name servers, search, ndots).
    pub fn from_system(config: DnsConfig) -> Result<Self, Error> {
        let mut builder =
            TokioResolver::builder_tokio().map_err(|e| Error::SystemConfig(e.to_string()))?;
        apply(builder.options_mut(), config);
        let resolver = builder
            .build()
            .map_err(|e| Error::SystemConfig(e.to_string()))?;
        Ok(Self { resolver })
    }

    /// Uses an explicit configuration (tests, or a resolver other than the system's).
    pub fn from_config(
        resolver: ResolverConfig,
        ndots: usize,
        config: DnsConfig,
    ) -> Result<Self, Error> {
        let mut builder =
            TokioResolver::builder_with_config(resolver, TokioRuntimeProvider::default());
        builder.options_mut().ndots = ndots;
        apply(builder.options_mut(), config);
        let resolver = builder
            .build()
            .map_err(|e| Error::SystemConfig(e.to_string()))?;
        Ok(Self { resolver })
    }

    /// The fully qualified name (with a trailing dot) that `host` resolves as.
    pub async fn canonicalize(&self, host: &str) -> Result<String, Error> {
        let lookup = self
            .resolver
            .lookup_ip(host)
            .await
            .map_err(|e| Error::Lookup {
                name: host.to_string(),
                reason: e.to_string(),
            })?;
        let name = lookup.query().name().to_ascii();
        if name.is_empty() {
            return Err(Error::InvalidName(host.to_string()));
        }
        Ok(if name.ends_with('.') {
            name
        } else {
            format!("{name}.")
        })
    }
}

fn apply(opts: &mut ResolverOpts, config: DnsConfig) {
    opts.positive_min_ttl = config.min_ttl;
    opts.negative_min_ttl = config.min_ttl;
    opts.positive_max_ttl = config.max_ttl;
    opts.negative_max_ttl = config.max_ttl;
    opts.timeout = Duration::from_secs(1);
    opts.attempts = 2;
}
