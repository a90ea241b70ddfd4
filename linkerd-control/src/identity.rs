//! The Identity service: a proxy proves who it is with its identity's token and gets a leaf
//! certificate for the key in its CSR.

use crate::{ca::CaError, Ca, Mesh};
use linkerd_proxy_api::identity::{
    identity_server::{Identity, IdentityServer},
    CertifyRequest, CertifyResponse,
};
use std::{sync::Arc, time::Duration};
use subtle::ConstantTimeEq;
use tonic::{Request, Response, Status};

/// The largest Certify request accepted: a CSR is well under 1 KiB.
pub const MAX_REQUEST_BYTES: usize = 64 * 1024;

/// The default lifetime of a proxy's certificate.
pub const DEFAULT_CERT_LIFETIME: Duration = Duration::from_secs(24 * 3600);

/// Answers `Certify` for the identities listed in the current [`Mesh`], signing with a [`Ca`].
#[derive(Clone)]
pub struct IdentityService {
    ca: Arc<Ca>,
    mesh: Mesh,
    lifetime: Duration,
}

impl IdentityService {
    /// Signs certificates valid for `lifetime` for the identities in `mesh`.
    pub fn new(ca: impl Into<Arc<Ca>>, mesh: Mesh, lifetime: Duration) -> Self {
        Self {
            ca: ca.into(),
            mesh,
            lifetime,
        }
    }

    /// The tonic service, with requests bounded to [`MAX_REQUEST_BYTES`].
    pub fn into_server(self) -> IdentityServer<Self> {
        IdentityServer::new(self).max_decoding_message_size(MAX_REQUEST_BYTES)
    }

    /// Checks the token in constant time; `Err` carries the reason for the log only.
    fn authenticate(&self, identity: &str, token: &[u8]) -> Result<(), &'static str> {
        let mesh = self.mesh.current();
        let Some(listed) = mesh.identity(identity) else {
            return Err("identity not listed in the config");
        };
        // Token files usually end with a newline; the config's may too (a YAML block scalar).
        let want = listed.token.trim_end().as_bytes();
        let got = token.trim_ascii_end();
        if bool::from(want.ct_eq(got)) {
            Ok(())
        } else {
            Err("wrong token")
        }
    }
}

#[tonic::async_trait]
impl Identity for IdentityService {
    async fn certify(
        &self,
        req: Request<CertifyRequest>,
    ) -> Result<Response<CertifyResponse>, Status> {
        let peer = req
            .remote_addr()
            .map_or_else(|| "unknown".to_string(), |a| a.to_string());
        let CertifyRequest {
            identity,
            token,
            certificate_signing_request: csr,
        } = req.into_inner();

        if let Err(reason) = self.authenticate(&identity, &token) {
            tracing::info!(%peer, ?identity, reason, "certificate refused");
            // One message for both cases, so callers can't probe which identities exist.
            return Err(Status::unauthenticated(format!(
                "identity {identity:?} is not known or its token is wrong"
            )));
        }

        let signed = match self.ca.sign_csr(&identity, &csr, self.lifetime) {
            Ok(s) => s,
            Err(CaError::Csr(reason)) => {
                tracing::info!(%peer, ?identity, %reason, "certificate refused");
                return Err(Status::invalid_argument(format!("invalid CSR: {reason}")));
            }
            Err(error) => {
                tracing::error!(%peer, ?identity, %error, "failed to sign a certificate");
                return Err(Status::internal("failed to sign the certificate"));
            }
        };
        let expires = time::OffsetDateTime::from(signed.not_after);
        tracing::info!(%peer, ?identity, %expires, "certificate issued");
        Ok(Response::new(CertifyResponse {
            leaf_certificate: signed.leaf_der,
            intermediate_certificates: vec![signed.issuer_der],
            valid_until: Some(signed.not_after.into()),
        }))
    }
}
