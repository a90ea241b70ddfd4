//! A test CA shared by the integration tests.
#![allow(dead_code)]

use linkerd_identity::{Credentials, Id, LocalKey, TrustAnchors};
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    PKCS_ECDSA_P256_SHA256,
};
use std::sync::Arc;

/// A CA issuing proxies' certificates.
pub struct Ca(pub CertifiedIssuer<'static, KeyPair>);

impl Ca {
    pub fn new() -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
        Self(CertifiedIssuer::self_signed(params, key).unwrap())
    }

    pub fn anchors(&self) -> TrustAnchors {
        TrustAnchors::from_pem(&self.0.pem()).unwrap()
    }

    /// Credentials for `name`, certified by this CA.
    pub fn creds(&self, name: &str, anchors: TrustAnchors) -> Arc<Credentials> {
        let id = Id::parse(name).unwrap();
        let key = LocalKey::generate(&id).unwrap();
        let creds = Credentials::new(id, anchors, &key);
        self.certify(&creds, &key);
        creds
    }

    pub fn certify(&self, creds: &Credentials, key: &LocalKey) {
        let csr =
            rcgen::CertificateSigningRequestParams::from_der(&key.csr.clone().into()).unwrap();
        let mut params = CertificateParams::new(vec![creds.id().to_string()]).unwrap();
        // rcgen derives the serial from the key; renewals need their own.
        static SERIAL: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
        let serial = SERIAL.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        params.serial_number = Some(rcgen::SerialNumber::from(serial));
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let leaf = params.signed_by(&csr.public_key, &self.0).unwrap();
        creds.set_certificate(leaf.der().to_vec(), vec![]).unwrap();
    }
}

pub const SERVER: &str = "web.ns.serviceaccount.identity.linkerd.cluster.local";
pub const CLIENT: &str = "app.ns.serviceaccount.identity.linkerd.cluster.local";
