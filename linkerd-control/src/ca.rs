//! A small certificate authority: `ca init` makes a root and an issuer; the control plane
//! loads the issuer and signs proxies' CSRs with it.
//!
//! The root's private key is discarded at init: nothing here needs it after the issuer is
//! signed, and a key that is never written can't leak. Rotating the issuer means a new root,
//! i.e. `ca init --force` and handing proxies the new `trust-anchors.pem`.

use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DistinguishedName,
    DnType, DnValue, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose,
    PublicKeyData, SanType, SerialNumber,
};
use rustls_pki_types::{pem::PemObject, CertificateDer, CertificateSigningRequestDer};
use std::{
    io::Write,
    path::{Path, PathBuf},
    time::{Duration, SystemTime, UNIX_EPOCH},
};
use x509_parser::{
    certification_request::X509CertificationRequest,
    oid_registry::{OID_EC_P256, OID_KEY_TYPE_EC_PUBLIC_KEY},
    prelude::FromDer,
};

/// The file proxies get as `LINKERD2_PROXY_IDENTITY_TRUST_ANCHORS`.
pub const TRUST_ANCHORS_FILE: &str = "trust-anchors.pem";
/// The issuer's certificate, signed by the root.
pub const ISSUER_CERT_FILE: &str = "issuer.crt.pem";
/// The issuer's PKCS#8 private key (mode 0600).
pub const ISSUER_KEY_FILE: &str = "issuer.key.pem";

/// The root's validity when `ca init` isn't told otherwise.
pub const DEFAULT_ROOT_VALIDITY: Duration = Duration::from_secs(10 * 365 * 24 * 3600);
/// The issuer's validity when `ca init` isn't told otherwise.
pub const DEFAULT_ISSUER_VALIDITY: Duration = Duration::from_secs(365 * 24 * 3600);

/// Certificates start this far in the past, so a peer whose clock is a little behind accepts them.
const CLOCK_SKEW: Duration = Duration::from_secs(10);

/// Why the CA couldn't do what was asked.
#[derive(Debug, thiserror::Error)]
pub enum CaError {
    #[error("{} already exists (pass --force to overwrite)", .0.display())]
    Exists(PathBuf),
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}: {reason}", path.display())]
    BadFile { path: PathBuf, reason: String },
    #[error("{context}: {source}")]
    Rcgen {
        context: &'static str,
        source: rcgen::Error,
    },
    /// The CSR can't be signed for this identity; the caller's fault.
    #[error("invalid CSR: {0}")]
    Csr(String),
    #[error("the issuer expired; run `linkerd-control ca init --force`")]
    IssuerExpired,
    #[error("TLS: {0}")]
    Tls(#[from] rustls::Error),
}

/// A certificate signed for a proxy.
#[derive(Clone, Debug)]
pub struct Signed {
    /// The leaf, DER.
    pub leaf_der: Vec<u8>,
    /// The issuer that signed it, DER: the chain the proxy presents after its leaf.
    pub issuer_der: Vec<u8>,
    /// When the leaf expires (whole seconds, as written in the certificate).
    pub not_after: SystemTime,
}

/// What `ca init` wrote.
#[derive(Clone, Debug)]
pub struct InitFiles {
    /// The root certificate.
    pub trust_anchors: PathBuf,
    /// The issuer's certificate.
    pub issuer_cert: PathBuf,
    /// The issuer's key.
    pub issuer_key: PathBuf,
}

/// The issuer, loaded from a CA directory, ready to sign.
pub struct Ca {
    issuer: Issuer<'static, KeyPair>,
    issuer_der: CertificateDer<'static>,
    issuer_not_after: SystemTime,
}

impl std::fmt::Debug for Ca {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ca")
            .field("issuer_not_after", &self.issuer_not_after)
            .finish_non_exhaustive()
    }
}

fn rcgen_err(context: &'static str) -> impl FnOnce(rcgen::Error) -> CaError {
    move |source| CaError::Rcgen { context, source }
}

fn unix_secs(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        Err(e) => -i64::try_from(e.duration().as_secs()).unwrap_or(i64::MAX),
    }
}

fn from_unix_secs(secs: i64) -> SystemTime {
    if secs >= 0 {
        UNIX_EPOCH + Duration::from_secs(secs.unsigned_abs())
    } else {
        UNIX_EPOCH - Duration::from_secs(secs.unsigned_abs())
    }
}

/// Rounds up to a whole second: X.509 times have no fractions, and a certificate must not
/// come out shorter than asked (a 500ms one would otherwise be born expired).
fn ceil_secs(t: SystemTime) -> i64 {
    let secs = unix_secs(t);
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) if d.subsec_nanos() > 0 => secs.saturating_add(1),
        _ => secs,
    }
}

fn offset(secs: i64) -> Result<time::OffsetDateTime, CaError> {
    time::OffsetDateTime::from_unix_timestamp(secs).map_err(|_| CaError::Rcgen {
        context: "certificate time out of range",
        source: rcgen::Error::Time,
    })
}

/// A positive, non-zero 128-bit serial from the system's secure RNG.
fn random_serial() -> Result<SerialNumber, CaError> {
    let mut bytes = [0u8; 16];
    rustls::crypto::ring::default_provider()
        .secure_random
        .fill(&mut bytes)
        .map_err(|_| CaError::Rcgen {
            context: "failed to generate a serial number",
            source: rcgen::Error::RingUnspecified,
        })?;
    // Clear the sign bit and set the next one, so the DER integer is positive and 16 bytes.
    bytes[0] = (bytes[0] & 0x7f) | 0x40;
    Ok(SerialNumber::from_slice(&bytes))
}

fn ca_params(
    common_name: &str,
    path_len: u8,
    not_before: i64,
    not_after: i64,
) -> Result<CertificateParams, CaError> {
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, common_name);
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(path_len));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params.not_before = offset(not_before)?;
    params.not_after = offset(not_after)?;
    params.serial_number = Some(random_serial()?);
    params.use_authority_key_identifier_extension = true;
    Ok(params)
}

/// Writes `contents` to `path` via a temporary file and a rename, so a reader never sees half
/// a file; `mode` applies from creation, so a key is never briefly world-readable.
fn write_file(path: &Path, contents: &str, mode: u32) -> Result<(), CaError> {
    use std::os::unix::fs::OpenOptionsExt;
    let io = |source| CaError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    match std::fs::remove_file(&tmp) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(io(e)),
        _ => {}
    }
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&tmp)
        .map_err(io)?;
    f.write_all(contents.as_bytes()).map_err(io)?;
    f.sync_all().map_err(io)?;
    std::fs::rename(&tmp, path).map_err(io)
}

fn read_file(path: &Path) -> Result<Vec<u8>, CaError> {
    std::fs::read(path).map_err(|source| CaError::Io {
        path: path.to_path_buf(),
        source,
    })
}

fn bad_file(path: &Path, reason: impl ToString) -> CaError {
    CaError::BadFile {
        path: path.to_path_buf(),
        reason: reason.to_string(),
    }
}

/// A DN value as text, when it is text.
fn dn_str(v: &DnValue) -> Option<&str> {
    match v {
        DnValue::Utf8String(s) => Some(s),
        DnValue::PrintableString(s) => Some(s.as_str()),
        DnValue::Ia5String(s) => Some(s.as_str()),
        _ => None,
    }
}

impl Ca {
    /// Creates a root and an issuer in `dir` with the default validities.
    pub fn init(dir: &Path, force: bool) -> Result<InitFiles, CaError> {
        Self::init_with(dir, force, DEFAULT_ROOT_VALIDITY, DEFAULT_ISSUER_VALIDITY)
    }

    /// Creates a self-signed ECDSA P-256 root (written as `trust-anchors.pem`, its key
    /// discarded) and an issuer it signs with pathlen 0 (`issuer.crt.pem`, `issuer.key.pem`).
    /// Existing files are kept, and an error returned, unless `force`.
    pub fn init_with(
        dir: &Path,
        force: bool,
        root_validity: Duration,
        issuer_validity: Duration,
    ) -> Result<InitFiles, CaError> {
        let files = InitFiles {
            trust_anchors: dir.join(TRUST_ANCHORS_FILE),
            issuer_cert: dir.join(ISSUER_CERT_FILE),
            issuer_key: dir.join(ISSUER_KEY_FILE),
        };
        if !force {
            for p in [&files.trust_anchors, &files.issuer_cert, &files.issuer_key] {
                if p.exists() {
                    return Err(CaError::Exists(p.clone()));
                }
            }
        }
        std::fs::create_dir_all(dir).map_err(|source| CaError::Io {
            path: dir.to_path_buf(),
            source,
        })?;

        let now = SystemTime::now();
        let not_before = unix_secs(now - CLOCK_SKEW);
        let root_not_after = unix_secs(now + root_validity);
        // An issuer outliving its root would only produce chains that fail to verify.
        let issuer_not_after = unix_secs(now + issuer_validity).min(root_not_after);

        let root_key = KeyPair::generate().map_err(rcgen_err("failed to generate the root key"))?;
        let root_params = ca_params(
            "root.linkerd-control.cluster.local",
            1,
            not_before,
            root_not_after,
        )?;
        let root_cert = root_params
            .self_signed(&root_key)
            .map_err(rcgen_err("failed to sign the root"))?;
        let root = Issuer::new(root_params, root_key);

        let issuer_key =
            KeyPair::generate().map_err(rcgen_err("failed to generate the issuer key"))?;
        let issuer_cert = ca_params(
            "identity.linkerd-control.cluster.local",
            0,
            not_before,
            issuer_not_after,
        )?
        .signed_by(&issuer_key, &root)
        .map_err(rcgen_err("failed to sign the issuer"))?;

        // The key first: if anything fails later, no certificate points at a missing key.
        write_file(&files.issuer_key, &issuer_key.serialize_pem(), 0o600)?;
        write_file(&files.issuer_cert, &issuer_cert.pem(), 0o644)?;
        write_file(&files.trust_anchors, &root_cert.pem(), 0o644)?;
        Ok(files)
    }

    /// Loads the issuer from `dir`, checking that it is a CA, that its key matches, that it is
    /// signed by a certificate in `trust-anchors.pem`, and that it hasn't expired.
    pub fn load(dir: &Path) -> Result<Ca, CaError> {
        let cert_path = dir.join(ISSUER_CERT_FILE);
        let key_path = dir.join(ISSUER_KEY_FILE);
        let anchors_path = dir.join(TRUST_ANCHORS_FILE);

        let issuer_der = CertificateDer::from_pem_slice(&read_file(&cert_path)?)
            .map_err(|e| bad_file(&cert_path, format!("no PEM certificate: {e}")))?;
        let key_pem = String::from_utf8(read_file(&key_path)?)
            .map_err(|_| bad_file(&key_path, "not UTF-8 PEM"))?;
        let key = KeyPair::from_pem(&key_pem)
            .map_err(|e| bad_file(&key_path, format!("not a PKCS#8 private key: {e}")))?;
        let anchors: Vec<CertificateDer<'static>> =
            CertificateDer::pem_slice_iter(&read_file(&anchors_path)?)
                .collect::<Result<_, _>>()
                .map_err(|e| bad_file(&anchors_path, format!("bad PEM: {e}")))?;

        let (_, x509) = x509_parser::parse_x509_certificate(&issuer_der)
            .map_err(|e| bad_file(&cert_path, format!("not an X.509 certificate: {e}")))?;
        if !x509.is_ca() {
            return Err(bad_file(&cert_path, "not a CA certificate"));
        }
        if x509.public_key().subject_public_key.data.as_ref() != key.public_key_raw() {
            return Err(bad_file(&key_path, "does not match the issuer certificate"));
        }
        let signed_by_anchor = anchors.iter().any(|a| {
            x509_parser::parse_x509_certificate(a)
                .is_ok_and(|(_, root)| x509.verify_signature(Some(root.public_key())).is_ok())
        });
        if !signed_by_anchor {
            return Err(bad_file(
                &cert_path,
                format!("not signed by any certificate in {TRUST_ANCHORS_FILE}"),
            ));
        }
        let issuer_not_after = from_unix_secs(x509.validity().not_after.timestamp());
        if issuer_not_after <= SystemTime::now() {
            return Err(CaError::IssuerExpired);
        }

        let issuer = Issuer::from_ca_cert_der(&issuer_der, key)
            .map_err(|e| bad_file(&cert_path, format!("unusable as an issuer: {e}")))?;
        Ok(Ca {
            issuer,
            issuer_der: issuer_der.into_owned(),
            issuer_not_after,
        })
    }

    /// The issuer's certificate, DER.
    pub fn issuer_der(&self) -> &CertificateDer<'static> {
        &self.issuer_der
    }

    /// When the issuer expires; no leaf outlives it.
    pub fn issuer_not_after(&self) -> SystemTime {
        self.issuer_not_after
    }

    /// Checks the CSR (DER PKCS#10) — a valid signature, an ECDSA P-256 key, and exactly
    /// `identity` as its DNS SAN (and CN, if any) — and signs a leaf for it valid `lifetime`.
    /// A CSR that fails the checks is [`CaError::Csr`].
    pub fn sign_csr(
        &self,
        identity: &str,
        csr_der: &[u8],
        lifetime: Duration,
    ) -> Result<Signed, CaError> {
        // Look at the key type first: rcgen infers the key's algorithm from the signature's, so
        // the curve must be checked on the parsed SubjectPublicKeyInfo.
        let (_, parsed) = X509CertificationRequest::from_der(csr_der)
            .map_err(|e| CaError::Csr(format!("not a DER PKCS#10 request: {e}")))?;
        let spki = &parsed.certification_request_info.subject_pki;
        let curve = spki
            .algorithm
            .parameters
            .as_ref()
            .and_then(|p| p.as_oid().ok());
        if spki.algorithm.algorithm != OID_KEY_TYPE_EC_PUBLIC_KEY || curve != Some(OID_EC_P256) {
            return Err(CaError::Csr("the key must be ECDSA P-256".into()));
        }

        let csr =
            CertificateSigningRequestParams::from_der(&CertificateSigningRequestDer::from(csr_der))
                .map_err(|e| match e {
                    rcgen::Error::InvalidCertificationRequestSignature => {
                        CaError::Csr("the signature does not verify".into())
                    }
                    e => CaError::Csr(e.to_string()),
                })?;
        if csr.public_key.algorithm() != &rcgen::PKCS_ECDSA_P256_SHA256 {
            return Err(CaError::Csr(
                "the signature must be ECDSA with SHA-256".into(),
            ));
        }
        match csr.params.subject_alt_names.as_slice() {
            [SanType::DnsName(name)] if name.as_str() == identity => {}
            sans => {
                let asked: Vec<String> = sans
                    .iter()
                    .map(|san| match san {
                        SanType::DnsName(name) => format!("{:?}", name.as_str()),
                        other => format!("{other:?}"),
                    })
                    .collect();
                return Err(CaError::Csr(format!(
                    "it must ask for exactly the DNS name {identity:?}, not [{}]",
                    asked.join(", ")
                )));
            }
        }
        for (ty, value) in csr.params.distinguished_name.iter() {
            if *ty == DnType::CommonName && dn_str(value) != Some(identity) {
                return Err(CaError::Csr(format!(
                    "its subject CN must be {identity:?}, not {value:?}"
                )));
            }
        }
        self.issue(identity, &csr.public_key, lifetime)
    }

    /// Signs a leaf for `identity` and `public_key`, valid from a little before now for
    /// `lifetime` (but not past the issuer's expiry), for TLS server and client auth.
    pub fn issue(
        &self,
        identity: &str,
        public_key: &impl PublicKeyData,
        lifetime: Duration,
    ) -> Result<Signed, CaError> {
        let now = SystemTime::now();
        if now >= self.issuer_not_after {
            return Err(CaError::IssuerExpired);
        }
        let not_after = ceil_secs(now + lifetime).min(unix_secs(self.issuer_not_after));
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, identity);
        params.distinguished_name = dn;
        params.subject_alt_names =
            vec![SanType::DnsName(identity.try_into().map_err(
                |e: rcgen::Error| CaError::Csr(format!("{identity:?}: {e}")),
            )?)];
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.not_before = offset(unix_secs(now - CLOCK_SKEW))?;
        params.not_after = offset(not_after)?;
        params.serial_number = Some(random_serial()?);
        params.use_authority_key_identifier_extension = true;
        let leaf = params
            .signed_by(public_key, &self.issuer)
            .map_err(rcgen_err("failed to sign the leaf"))?;
        Ok(Signed {
            leaf_der: leaf.der().to_vec(),
            issuer_der: self.issuer_der.to_vec(),
            not_after: from_unix_secs(not_after),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmpdir(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("linkerd-control-ca-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    fn csr(names: &[&str], cn: Option<&str>) -> (KeyPair, Vec<u8>) {
        let key = KeyPair::generate().unwrap();
        let mut params =
            CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>())
                .unwrap();
        params.distinguished_name = DistinguishedName::new();
        if let Some(cn) = cn {
            params.distinguished_name.push(DnType::CommonName, cn);
        }
        let der = params.serialize_request(&key).unwrap().der().to_vec();
        (key, der)
    }

    #[test]
    fn init_writes_a_loadable_ca_and_a_private_key() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tmpdir("init");
        let files = Ca::init(&dir, false).unwrap();
        let mode = std::fs::metadata(&files.issuer_key)
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let ca = Ca::load(&dir).unwrap();
        let year = Duration::from_secs(365 * 24 * 3600);
        let left = ca
            .issuer_not_after()
            .duration_since(SystemTime::now())
            .unwrap();
        assert!(
            left <= year && left > year - Duration::from_secs(60),
            "{left:?}"
        );
        assert!(matches!(Ca::init(&dir, false), Err(CaError::Exists(_))));
        Ca::init(&dir, true).unwrap();
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn load_rejects_mismatched_files() {
        let (a, b) = (tmpdir("mismatch-a"), tmpdir("mismatch-b"));
        Ca::init(&a, false).unwrap();
        Ca::init(&b, false).unwrap();
        // An issuer from another root.
        std::fs::copy(b.join(TRUST_ANCHORS_FILE), a.join(TRUST_ANCHORS_FILE)).unwrap();
        let e = Ca::load(&a).unwrap_err().to_string();
        assert!(e.contains("not signed by"), "{e}");
        // A key from another issuer.
        std::fs::copy(b.join(ISSUER_CERT_FILE), a.join(ISSUER_CERT_FILE)).unwrap();
        let e = Ca::load(&a).unwrap_err().to_string();
        assert!(e.contains("does not match"), "{e}");
        let _ = std::fs::remove_dir_all(&a);
        let _ = std::fs::remove_dir_all(&b);
    }

    #[test]
    fn csr_checks() {
        let dir = tmpdir("csr");
        Ca::init(&dir, false).unwrap();
        let ca = Ca::load(&dir).unwrap();
        let id = "web.default.serviceaccount.identity.linkerd.cluster.local";
        let day = Duration::from_secs(24 * 3600);

        let (_, good) = csr(&[id], Some(id));
        let signed = ca.sign_csr(id, &good, day).unwrap();
        assert_eq!(signed.issuer_der, ca.issuer_der().to_vec());
        let (_, no_cn) = csr(&[id], None);
        ca.sign_csr(id, &no_cn, day).unwrap();

        let reject = |der: &[u8]| match ca.sign_csr(id, der, day) {
            Err(CaError::Csr(reason)) => reason,
            other => panic!("expected a CSR error, got {other:?}"),
        };
        assert!(reject(&csr(&["db.identity"], None).1).contains("exactly"));
        assert!(reject(&csr(&[id, "db.identity"], None).1).contains("exactly"));
        assert!(reject(&csr(&[], Some(id)).1).contains("exactly"));
        assert!(reject(&csr(&[id], Some("db.identity")).1).contains("CN"));
        assert!(reject(b"not a csr").contains("PKCS#10"));
        let p384 = {
            let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384).unwrap();
            let params = CertificateParams::new(vec![id.to_string()]).unwrap();
            params.serialize_request(&key).unwrap().der().to_vec()
        };
        assert!(reject(&p384).contains("P-256"));
        let mut bad_sig = good.clone();
        let last = bad_sig.len() - 1;
        bad_sig[last] ^= 0x01;
        assert!(
            reject(&bad_sig).contains("signature"),
            "{}",
            reject(&bad_sig)
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn leaves_are_capped_by_the_issuer() {
        let dir = tmpdir("cap");
        Ca::init_with(
            &dir,
            false,
            Duration::from_secs(3600),
            Duration::from_secs(7200),
        )
        .unwrap();
        let ca = Ca::load(&dir).unwrap();
        // The issuer is capped by the root, and the leaf by the issuer.
        let root_end = SystemTime::now() + Duration::from_secs(3601);
        assert!(ca.issuer_not_after() <= root_end);
        let (key, _) = csr(&["a.b"], None);
        let signed = ca
            .issue("a.b", &key, Duration::from_secs(30 * 24 * 3600))
            .unwrap();
        assert!(signed.not_after <= ca.issuer_not_after());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
