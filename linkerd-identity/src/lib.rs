//! The proxy's own identity: a private key made at start-up (in memory, never on disk), a
//! certificate for it from the Identity API, renewed before it expires, and the trust anchors
//! peers are verified against.
//!
//! [`Credentials`] holds the current certificate and is what TLS configs read on every
//! handshake (a renewal is seen by the next handshake, nothing restarts); [`refresh`] keeps it
//! current. This crate does not speak TLS on connections: `linkerd-tls` builds rustls configs
//! from [`Credentials`].
#![forbid(unsafe_code)]

mod certify;
mod creds;
mod local;
mod name;

pub use self::certify::{refresh, CertifyConfig, IdentityMetrics};
pub use self::creds::{provider, Credentials, TrustAnchors};
pub use self::local::LocalKey;
pub use self::name::Id;

/// Identity failures: bad configuration or material, or a failed certification.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A name that is not a valid identity.
    #[error("invalid identity name {name:?}: {reason}")]
    InvalidName {
        /// The name.
        name: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The trust anchors are not a usable PEM bundle.
    #[error("invalid trust anchors: {0}")]
    TrustAnchors(String),
    /// A file (token, key, CSR) could not be read.
    #[error("failed to read {path}: {source}")]
    Read {
        /// The file.
        path: std::path::PathBuf,
        /// What failed.
        #[source]
        source: std::io::Error,
    },
    /// The private key is unusable.
    #[error("invalid private key: {0}")]
    Key(String),
    /// The CSR could not be made.
    #[error("failed to make a CSR: {0}")]
    Csr(String),
    /// The Identity service refused to certify.
    #[error("the Identity service refused the request: {0}")]
    Certify(#[from] tonic::Status),
    /// The Identity service did not answer in time.
    #[error("the Identity service did not answer within {0:?}")]
    Timeout(std::time::Duration),
    /// The certificate issued does not match the key or the trust anchors.
    #[error("the issued certificate is unusable: {0}")]
    Certificate(String),
}
