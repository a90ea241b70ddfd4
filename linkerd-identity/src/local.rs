//! The proxy's private key and certificate signing request.

use crate::{Error, Id};
use rustls::{pki_types::PrivateKeyDer, sign::SigningKey};
use std::{path::Path, sync::Arc};

/// The local private key, ready to sign handshakes, and a CSR for the identity.
pub struct LocalKey {
    pub(crate) key: Arc<dyn SigningKey>,
    /// DER-encoded PKCS#10 request naming the identity (CN and DNS SAN).
    pub csr: Vec<u8>,
}

impl LocalKey {
    /// Generates an ECDSA P-256 key in memory and a CSR for `id`.
    pub fn generate(id: &Id) -> Result<Self, Error> {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
            .map_err(|e| Error::Key(e.to_string()))?;
        let mut params = rcgen::CertificateParams::new(vec![id.to_string()])
            .map_err(|e| Error::Csr(e.to_string()))?;
        params.distinguished_name = rcgen::DistinguishedName::new();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, id.as_str());
        let csr = params
            .serialize_request(&key)
            .map_err(|e| Error::Csr(e.to_string()))?;
        let pkcs8 = key.serialize_der();
        Self::from_parts(&pkcs8, csr.der().to_vec())
    }

    /// Loads `key.p8` (PKCS#8 DER) and `csr.der` from `dir`, as Linkerd's injector provides
    /// them.
    pub fn load(dir: &Path) -> Result<Self, Error> {
        let read = |name: &str| {
            let path = dir.join(name);
            std::fs::read(&path).map_err(|source| Error::Read { path, source })
        };
        let pkcs8 = read("key.p8")?;
        let csr = read("csr.der")?;
        Self::from_parts(&pkcs8, csr)
    }

    fn from_parts(pkcs8: &[u8], csr: Vec<u8>) -> Result<Self, Error> {
        let der = PrivateKeyDer::Pkcs8(pkcs8.to_vec().into());
        let key = rustls::crypto::ring::sign::any_ecdsa_type(&der)
            .map_err(|e| Error::Key(e.to_string()))?;
        Ok(Self { key, csr })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_csr_names_the_identity() {
        let id = Id::parse("web.default.serviceaccount.identity.linkerd.cluster.local").unwrap();
        let local = LocalKey::generate(&id).unwrap();
        // DER SEQUENCE, and the name appears in it (as the CN and the SAN).
        assert_eq!(local.csr[0], 0x30);
        let hits = local
            .csr
            .windows(id.as_str().len())
            .filter(|w| *w == id.as_str().as_bytes())
            .count();
        assert_eq!(hits, 2, "CN and DNS SAN");
    }

    #[test]
    fn loads_an_injected_key_and_csr() {
        let dir = std::env::temp_dir().join(format!("l5d-id-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        std::fs::write(dir.join("key.p8"), key.serialize_der()).unwrap();
        std::fs::write(dir.join("csr.der"), b"\x30\x00").unwrap();
        let local = LocalKey::load(&dir).unwrap();
        assert_eq!(local.csr, b"\x30\x00");
        std::fs::write(dir.join("key.p8"), b"not a key").unwrap();
        assert!(matches!(LocalKey::load(&dir), Err(Error::Key(_))));
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(matches!(LocalKey::load(&dir), Err(Error::Read { .. })));
    }
}
