//! rustls configs from the proxy's credentials.

use crate::Error;
use linkerd_identity::Credentials;
use rustls::{server::WebPkiClientVerifier, ClientConfig, ServerConfig};
use std::sync::Arc;

/// ALPN of Linkerd's opaque transport: the client proxy sends a transport header first.
pub const TRANSPORT_ALPN: &[u8] = b"transport.l5d.io/v1";

/// The server and client configs of one proxy; built once, they read the current certificate
/// on every handshake.
#[derive(Clone)]
pub struct TlsConfigs {
    pub(crate) creds: Arc<Credentials>,
    /// Terminates peers' mTLS: client certificates are optional (policy decides).
    pub server: Arc<ServerConfig>,
    /// Dials peers for HTTP (no ALPN, like Linkerd's proxy).
    pub client: Arc<ClientConfig>,
    /// Dials peers' inbound port with the opaque-transport ALPN.
    pub client_transport: Arc<ClientConfig>,
}

impl TlsConfigs {
    /// TLS 1.3 configs for `creds`.
    pub fn new(creds: Arc<Credentials>) -> Result<Self, Error> {
        let provider = linkerd_identity::provider();
        let err = |e: &dyn std::fmt::Display| Error::Config(e.to_string());
        let roots = creds.trust_anchors().roots();

        let verifier = WebPkiClientVerifier::builder_with_provider(roots.clone(), provider.clone())
            .allow_unauthenticated()
            .build()
            .map_err(|e| err(&e))?;
        let mut server = ServerConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(|e| err(&e))?
            .with_client_cert_verifier(verifier)
            .with_cert_resolver(creds.server_resolver());
        server.alpn_protocols = vec![TRANSPORT_ALPN.to_vec()];

        let client = ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(|e| err(&e))?
            .with_root_certificates(roots)
            .with_client_cert_resolver(creds.client_resolver());
        let mut client_transport = client.clone();
        client_transport.alpn_protocols = vec![TRANSPORT_ALPN.to_vec()];

        Ok(Self {
            creds,
            server: Arc::new(server),
            client: Arc::new(client),
            client_transport: Arc::new(client_transport),
        })
    }

    /// The local credentials.
    pub fn credentials(&self) -> &Arc<Credentials> {
        &self.creds
    }

    /// A client config for a control-plane connection: ALPN `h2`, as gRPC servers expect.
    pub fn control_client(&self) -> Arc<ClientConfig> {
        let mut c = (*self.client).clone();
        c.alpn_protocols = vec![b"h2".to_vec()];
        Arc::new(c)
    }
}
