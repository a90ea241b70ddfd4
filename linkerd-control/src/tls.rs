//! The control plane's own TLS: a serving certificate from its CA, renewed as it ages.

use crate::{ca::CaError, Ca};
use rcgen::KeyPair;
use rustls::{
    server::{ClientHello, ResolvesServerCert},
    sign::CertifiedKey,
    ServerConfig,
};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use std::{
    sync::{Arc, Mutex},
    time::{Duration, SystemTime},
};

/// The name the control plane serves when not told otherwise.
pub const DEFAULT_IDENTITY: &str =
    "linkerd-identity.linkerd.serviceaccount.identity.linkerd.cluster.local";

/// How long each serving certificate is valid; it is replaced at half-life.
const SERVING_LIFETIME: Duration = Duration::from_secs(24 * 3600);

/// Serves a certificate for one name, signed by the [`Ca`] and re-signed when half its life
/// is gone (on the next handshake: signing takes well under a millisecond).
pub struct ServingCert {
    ca: Arc<Ca>,
    name: String,
    key: KeyPair,
    signing_key: Arc<dyn rustls::sign::SigningKey>,
    current: Mutex<(Arc<CertifiedKey>, SystemTime)>,
}

impl std::fmt::Debug for ServingCert {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServingCert")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl ServingCert {
    /// Generates a key and has the CA sign a certificate for `name`.
    pub fn new(ca: Arc<Ca>, name: &str) -> Result<Self, CaError> {
        let key = KeyPair::generate().map_err(|source| CaError::Rcgen {
            context: "failed to generate the serving key",
            source,
        })?;
        let der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        let signing_key = rustls::crypto::ring::default_provider()
            .key_provider
            .load_private_key(der)?;
        let first = issue(&ca, name, &key, &signing_key)?;
        Ok(Self {
            ca,
            name: name.to_string(),
            key,
            signing_key,
            current: Mutex::new(first),
        })
    }

    /// The current certificate and key, renewed first if it is past half-life.
    pub fn current(&self) -> Arc<CertifiedKey> {
        // A panic elsewhere can't leave the pair half-written: it's replaced whole.
        let mut current = self.current.lock().unwrap_or_else(|e| e.into_inner());
        if SystemTime::now() >= current.1 {
            match issue(&self.ca, &self.name, &self.key, &self.signing_key) {
                Ok(renewed) => {
                    tracing::info!(name = %self.name, "serving certificate renewed");
                    *current = renewed;
                }
                // The old one may still be valid for a while; try again on the next handshake.
                Err(error) => {
                    tracing::warn!(name = %self.name, %error, "failed to renew the serving certificate")
                }
            }
        }
        current.0.clone()
    }
}

/// A certificate for `name`, and when to renew it.
fn issue(
    ca: &Ca,
    name: &str,
    key: &KeyPair,
    signing_key: &Arc<dyn rustls::sign::SigningKey>,
) -> Result<(Arc<CertifiedKey>, SystemTime), CaError> {
    let now = SystemTime::now();
    let signed = ca.issue(name, key, SERVING_LIFETIME)?;
    let half = signed.not_after.duration_since(now).unwrap_or_default() / 2;
    let chain = vec![
        CertificateDer::from(signed.leaf_der),
        CertificateDer::from(signed.issuer_der),
    ];
    Ok((
        Arc::new(CertifiedKey::new(chain, signing_key.clone())),
        now + half,
    ))
}

impl ResolvesServerCert for ServingCert {
    fn resolve(&self, _: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }
}

/// A TLS 1.3-only server config (ring, ALPN `h2`) presenting a certificate for `name`.
pub fn server_config(ca: Arc<Ca>, name: &str) -> Result<Arc<ServerConfig>, CaError> {
    let resolver = ServingCert::new(ca, name)?;
    let mut config =
        ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .with_no_client_auth()
            .with_cert_resolver(Arc::new(resolver));
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Arc::new(config))
}
