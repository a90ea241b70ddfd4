//! Getting and renewing the certificate from the Identity API.

use crate::{Credentials, Error};
use linkerd_metrics::{Counter, Family, Gauge, NoLabels, Registry};
use linkerd_proxy_api::client::ControlChannel;
use linkerd_proxy_api::identity::{identity_client::IdentityClient, CertifyRequest};
use std::{
    path::PathBuf,
    sync::Arc,
    time::{Duration, SystemTime},
};

/// How the certificate is requested and renewed.
#[derive(Clone, Debug)]
pub struct CertifyConfig {
    /// Read before every request (tokens rotate); sent as proof of identity.
    pub token_file: PathBuf,
    /// Renewals happen no sooner than this after the last one, and failures retry after it.
    pub min_refresh: Duration,
    /// Renewals happen no later than this after the last one.
    pub max_refresh: Duration,
    /// How long one Certify call may take.
    pub request_timeout: Duration,
}

/// `control_identity_cert_*` metrics, linkerd2-proxy's names since 2024 (#2887).
#[derive(Clone)]
pub struct IdentityMetrics {
    expiration: Gauge,
    refreshed_at: Gauge,
    refresh: Counter,
    failures: Counter,
}

/// `result="ok"` or `result="error"`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct Outcome(&'static str);

impl linkerd_metrics::EncodeLabels for Outcome {
    fn encode(&self, w: &mut linkerd_metrics::LabelWriter<'_>) {
        w.label("result", self.0);
    }
}

impl IdentityMetrics {
    /// Creates and registers the metrics.
    pub fn register(reg: &mut Registry) -> Self {
        let expiration = Arc::new(Family::<NoLabels, Gauge>::new(
            "control_identity_cert_expiration_timestamp_seconds",
            "Time when this proxy's current certificate expires (in seconds since the UNIX epoch).",
        ));
        let refreshed_at = Arc::new(Family::<NoLabels, Gauge>::new(
            "control_identity_cert_refresh_timestamp_seconds",
            "Time of this proxy's last certificate refresh (in seconds since the UNIX epoch).",
        ));
        let refreshes = Arc::new(Family::<Outcome, Counter>::new(
            "control_identity_cert_refreshes_total",
            "Total count of certificate refreshes, by result.",
        ));
        reg.register(expiration.clone());
        reg.register(refreshed_at.clone());
        reg.register(refreshes.clone());
        Self {
            expiration: expiration.get(&NoLabels),
            refreshed_at: refreshed_at.get(&NoLabels),
            refresh: refreshes.get(&Outcome("ok")),
            failures: refreshes.get(&Outcome("error")),
        }
    }
}

/// Gets a certificate for `creds` and keeps renewing it, forever: at 70% of the remaining
/// lifetime clamped to `[min_refresh, max_refresh]`, or `min_refresh` after a failure.
pub async fn refresh(
    creds: Arc<Credentials>,
    csr: Vec<u8>,
    mut client: IdentityClient<ControlChannel>,
    config: CertifyConfig,
    metrics: IdentityMetrics,
) {
    loop {
        let wait = match certify(&creds, &csr, &mut client, &config).await {
            Ok(expiry) => {
                metrics.refresh.incr();
                let now = SystemTime::now()
                    .duration_since(SystemTime::UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs());
                metrics
                    .refreshed_at
                    .set(i64::try_from(now).unwrap_or(i64::MAX));
                let secs = expiry
                    .duration_since(SystemTime::UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs());
                metrics
                    .expiration
                    .set(i64::try_from(secs).unwrap_or(i64::MAX));
                let remaining = expiry.duration_since(SystemTime::now()).unwrap_or_default();
                let wait = next_refresh(remaining, &config);
                if wait >= remaining {
                    tracing::warn!(?remaining, min_refresh = ?config.min_refresh, "the certificate expires before the next renewal; lower LINKERD2_PROXY_IDENTITY_MIN_REFRESH or raise the certificate lifetime");
                }
                tracing::info!(id = %creds.id(), expires_in = ?remaining, renew_in = ?wait, "certified");
                wait
            }
            Err(error) => {
                metrics.failures.incr();
                tracing::warn!(id = %creds.id(), %error, retry_in = ?config.min_refresh, "failed to get a certificate");
                config.min_refresh
            }
        };
        tokio::time::sleep(wait).await;
    }
}

/// 70% of the remaining lifetime, within `[min_refresh, max_refresh]`.
fn next_refresh(remaining: Duration, config: &CertifyConfig) -> Duration {
    remaining.mul_f64(0.7).clamp(
        config.min_refresh,
        config.max_refresh.max(config.min_refresh),
    )
}

/// One Certify call; returns when the new certificate expires.
async fn certify(
    creds: &Credentials,
    csr: &[u8],
    client: &mut IdentityClient<ControlChannel>,
    config: &CertifyConfig,
) -> Result<SystemTime, Error> {
    let token = tokio::fs::read(&config.token_file)
        .await
        .map_err(|source| Error::Read {
            path: config.token_file.clone(),
            source,
        })?;
    let req = CertifyRequest {
        identity: creds.id().to_string(),
        token,
        certificate_signing_request: csr.to_vec(),
    };
    let rsp = tokio::time::timeout(config.request_timeout, client.certify(req))
        .await
        .map_err(|_| Error::Timeout(config.request_timeout))??
        .into_inner();
    let expiry = rsp
        .valid_until
        .and_then(|t| {
            let secs = u64::try_from(t.seconds).ok()?;
            Some(SystemTime::UNIX_EPOCH + Duration::from_secs(secs))
        })
        .ok_or_else(|| Error::Certificate("the response has no valid_until".into()))?;
    creds.set_certificate(rsp.leaf_certificate, rsp.intermediate_certificates)?;
    Ok(expiry)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renews_at_70_percent_within_bounds() {
        let config = CertifyConfig {
            token_file: "/dev/null".into(),
            min_refresh: Duration::from_secs(10),
            max_refresh: Duration::from_secs(24 * 3600),
            request_timeout: Duration::from_secs(10),
        };
        let s = Duration::from_secs;
        assert_eq!(next_refresh(s(100), &config), s(70));
        assert_eq!(next_refresh(s(5), &config), s(10));
        assert_eq!(next_refresh(s(30 * 24 * 3600), &config), s(24 * 3600));
    }
}
