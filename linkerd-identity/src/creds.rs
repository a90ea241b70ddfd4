//! The current certificate, the key it certifies and the trust anchors.

use crate::{Error, Id, LocalKey};
use arc_swap::ArcSwapOption;
use rustls::{
    client::{danger::ServerCertVerifier, ResolvesClientCert, WebPkiServerVerifier},
    crypto::CryptoProvider,
    pki_types::{pem::PemObject, CertificateDer, ServerName, UnixTime},
    server::{ClientHello, ResolvesServerCert},
    sign::{CertifiedKey, SigningKey},
    RootCertStore, SignatureScheme,
};
use std::sync::{Arc, OnceLock};
use tokio::sync::watch;

/// The certificates peers' chains must end in.
#[derive(Clone, Debug)]
pub struct TrustAnchors(Arc<RootCertStore>);

/// The proxy's identity material; read on every handshake, so a renewal applies to the next one
/// without restarting anything.
pub struct Credentials {
    id: Id,
    anchors: TrustAnchors,
    key: Arc<dyn SigningKey>,
    current: ArcSwapOption<CertifiedKey>,
    ready: watch::Sender<bool>,
}

/// The crypto provider every config uses: ring, TLS 1.3 suites.
pub fn provider() -> Arc<CryptoProvider> {
    static PROVIDER: OnceLock<Arc<CryptoProvider>> = OnceLock::new();
    PROVIDER
        .get_or_init(|| Arc::new(rustls::crypto::ring::default_provider()))
        .clone()
}

// === impl TrustAnchors ===

impl TrustAnchors {
    /// Parses a PEM bundle of CA certificates; at least one must be usable.
    pub fn from_pem(pem: &str) -> Result<Self, Error> {
        let mut roots = RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(pem.as_bytes()) {
            let cert = cert.map_err(|e| Error::TrustAnchors(e.to_string()))?;
            roots
                .add(cert)
                .map_err(|e| Error::TrustAnchors(e.to_string()))?;
        }
        if roots.is_empty() {
            return Err(Error::TrustAnchors(
                "no certificate in the PEM bundle".into(),
            ));
        }
        Ok(Self(Arc::new(roots)))
    }

    /// The anchors as rustls wants them.
    pub fn roots(&self) -> Arc<RootCertStore> {
        self.0.clone()
    }
}

// === impl Credentials ===

impl Credentials {
    /// Credentials for `id` with `key`, without a certificate yet.
    pub fn new(id: Id, anchors: TrustAnchors, key: &LocalKey) -> Arc<Self> {
        Arc::new(Self {
            id,
            anchors,
            key: key.key.clone(),
            current: ArcSwapOption::empty(),
            ready: watch::Sender::new(false),
        })
    }

    /// The local identity.
    pub fn id(&self) -> &Id {
        &self.id
    }

    /// The trust anchors.
    pub fn trust_anchors(&self) -> &TrustAnchors {
        &self.anchors
    }

    /// The current certificate chain and key, once one has been issued.
    pub fn certified_key(&self) -> Option<Arc<CertifiedKey>> {
        self.current.load_full()
    }

    /// Whether a certificate has been issued.
    pub fn is_ready(&self) -> bool {
        *self.ready.borrow()
    }

    /// Completes once a certificate has been issued.
    pub async fn ready(&self) {
        let mut rx = self.ready.subscribe();
        // The sender lives in `self`, so the channel can't close while we wait.
        let _ = rx.wait_for(|ready| *ready).await;
    }

    /// Installs a newly issued certificate after checking that it chains to the trust anchors,
    /// names this identity and certifies this key.
    pub fn set_certificate(&self, leaf: Vec<u8>, intermediates: Vec<Vec<u8>>) -> Result<(), Error> {
        let leaf = CertificateDer::from(leaf);
        let intermediates: Vec<CertificateDer<'static>> = intermediates
            .into_iter()
            .map(CertificateDer::from)
            .collect();
        let bad = |e: &dyn std::fmt::Display| Error::Certificate(e.to_string());
        let verifier =
            WebPkiServerVerifier::builder_with_provider(self.anchors.roots(), provider())
                .build()
                .map_err(|e| bad(&e))?;
        let name = ServerName::try_from(self.id.as_str())
            .map_err(|e| bad(&e))?
            .to_owned();
        verifier
            .verify_server_cert(&leaf, &intermediates, &name, &[], UnixTime::now())
            .map_err(|e| bad(&e))?;
        let mut chain = Vec::with_capacity(1 + intermediates.len());
        chain.push(leaf);
        chain.extend(intermediates);
        let certified = CertifiedKey::new(chain, self.key.clone());
        match certified.keys_match() {
            Ok(()) | Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => {}
            Err(e) => return Err(bad(&e)),
        }
        self.current.store(Some(Arc::new(certified)));
        self.ready.send_replace(true);
        Ok(())
    }

    /// What a server config asks for its certificate: the current one.
    pub fn server_resolver(self: &Arc<Self>) -> Arc<dyn ResolvesServerCert> {
        Arc::new(Resolver(self.clone()))
    }

    /// What a client config asks for its certificate: the current one (none before the first
    /// is issued, so a client connection is then unauthenticated).
    pub fn client_resolver(self: &Arc<Self>) -> Arc<dyn ResolvesClientCert> {
        Arc::new(Resolver(self.clone()))
    }
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("id", &self.id)
            .field("ready", &self.is_ready())
            .finish()
    }
}

#[derive(Debug)]
struct Resolver(Arc<Credentials>);

impl ResolvesServerCert for Resolver {
    fn resolve(&self, _: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.0.certified_key()
    }
}

impl ResolvesClientCert for Resolver {
    fn resolve(&self, _: &[&[u8]], sigschemes: &[SignatureScheme]) -> Option<Arc<CertifiedKey>> {
        let ck = self.0.certified_key()?;
        ck.key.choose_scheme(sigschemes).is_some().then_some(ck)
    }

    fn has_certs(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{
        BasicConstraints, CertificateParams, CertifiedIssuer, ExtendedKeyUsagePurpose, IsCa,
        KeyPair, PKCS_ECDSA_P256_SHA256,
    };

    fn ca() -> CertifiedIssuer<'static, KeyPair> {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
        CertifiedIssuer::self_signed(params, key).unwrap()
    }

    /// Signs a leaf for `name` over the key in `csr` (as a CA would).
    fn issue(ca: &CertifiedIssuer<'static, KeyPair>, csr: &[u8], name: &str) -> Vec<u8> {
        let csr = rcgen::CertificateSigningRequestParams::from_der(&csr.to_vec().into());
        let public = match csr {
            Ok(c) => c.public_key,
            Err(e) => panic!("{e}"),
        };
        let mut params = CertificateParams::new(vec![name.to_string()]).unwrap();
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.signed_by(&public, ca).unwrap().der().to_vec()
    }

    #[test]
    fn accepts_only_a_certificate_for_this_identity_key_and_anchors() {
        let id = Id::parse("web.ns.serviceaccount.identity.linkerd.cluster.local").unwrap();
        let ca = ca();
        let anchors = TrustAnchors::from_pem(&ca.pem()).unwrap();
        let local = LocalKey::generate(&id).unwrap();
        let creds = Credentials::new(id.clone(), anchors, &local);
        assert!(!creds.is_ready());

        let other_name = issue(
            &ca,
            &local.csr,
            "db.ns.serviceaccount.identity.linkerd.cluster.local",
        );
        assert!(creds.set_certificate(other_name, vec![]).is_err());
        let other_ca = issue(&self::ca(), &local.csr, id.as_str());
        assert!(creds.set_certificate(other_ca, vec![]).is_err());
        let other_key = LocalKey::generate(&id).unwrap();
        let other_key = issue(&ca, &other_key.csr, id.as_str());
        assert!(creds.set_certificate(other_key, vec![]).is_err());
        assert!(!creds.is_ready() && creds.certified_key().is_none());

        creds
            .set_certificate(issue(&ca, &local.csr, id.as_str()), vec![])
            .unwrap();
        assert!(creds.is_ready());
        assert!(creds.certified_key().is_some());
    }

    #[test]
    fn trust_anchors_must_hold_a_certificate() {
        assert!(TrustAnchors::from_pem("").is_err());
        assert!(TrustAnchors::from_pem(
            "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"
        )
        .is_err());
    }
}
