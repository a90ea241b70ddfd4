//! Destination and Identity servers built from the published `linkerd2-proxy-api` crate's
//! generated server traits, as Linkerd's own controllers are: what a proxy under test talks
//! to when the test must show it speaks upstream's API, not only our copy of it.

use linkerd2_proxy_api::{destination as d, identity as i, net};
use std::{
    collections::HashMap,
    net::{IpAddr, SocketAddr},
    pin::Pin,
    sync::Arc,
    time::{Duration, SystemTime},
};

/// One endpoint of a service: its address, the identity of its proxy and the proxy's
/// opaque-transport (inbound) port.
#[derive(Clone, Debug)]
pub struct Endpoint {
    pub addr: SocketAddr,
    pub identity: String,
    pub opaque_port: u16,
}

/// A Destination server with a fixed set of services (`name:port`); `Get` of any other name
/// says it does not exist; every profile is empty but for its name.
#[derive(Clone, Default)]
pub struct Destinations {
    services: Arc<parking_lot::Mutex<HashMap<String, Vec<Endpoint>>>>,
}

impl Destinations {
    /// Adds (or replaces) the service `authority` (`name:port`).
    pub fn set(&self, authority: &str, endpoints: Vec<Endpoint>) {
        self.services
            .lock()
            .insert(authority.to_string(), endpoints);
    }
}

fn tcp_addr(addr: SocketAddr) -> net::TcpAddress {
    let ip = match addr.ip() {
        IpAddr::V4(v4) => net::ip_address::Ip::Ipv4(u32::from(v4)),
        IpAddr::V6(v6) => {
            let bits = u128::from(v6);
            net::ip_address::Ip::Ipv6(net::IPv6 {
                first: (bits >> 64) as u64,
                last: bits as u64,
            })
        }
    };
    net::TcpAddress {
        ip: Some(net::IpAddress { ip: Some(ip) }),
        port: u32::from(addr.port()),
    }
}

impl Endpoint {
    fn to_api(&self) -> d::WeightedAddr {
        d::WeightedAddr {
            addr: Some(tcp_addr(self.addr)),
            weight: 10_000,
            tls_identity: Some(d::TlsIdentity {
                strategy: Some(d::tls_identity::Strategy::DnsLikeIdentity(
                    d::tls_identity::DnsLikeIdentity {
                        name: self.identity.clone(),
                    },
                )),
                server_name: None,
            }),
            protocol_hint: Some(d::ProtocolHint {
                protocol: Some(d::protocol_hint::Protocol::H2(d::protocol_hint::H2 {})),
                opaque_transport: Some(d::protocol_hint::OpaqueTransport {
                    inbound_port: u32::from(self.opaque_port),
                }),
            }),
            metric_labels: HashMap::from([("pod".to_string(), "test".to_string())]),
            ..Default::default()
        }
    }
}

type Updates = Pin<Box<dyn futures_util::Stream<Item = Result<d::Update, tonic::Status>> + Send>>;
type Profiles =
    Pin<Box<dyn futures_util::Stream<Item = Result<d::DestinationProfile, tonic::Status>> + Send>>;

/// One answer, then the stream stays open (as the controller's does).
fn once_then_open<T: Send + 'static>(
    item: T,
) -> Pin<Box<dyn futures_util::Stream<Item = Result<T, tonic::Status>> + Send>> {
    Box::pin(futures_util::StreamExt::chain(
        futures_util::stream::iter([Ok(item)]),
        futures_util::stream::pending(),
    ))
}

#[tonic::async_trait]
impl d::destination_server::Destination for Destinations {
    type GetStream = Updates;
    type GetProfileStream = Profiles;

    async fn get(
        &self,
        req: tonic::Request<d::GetDestination>,
    ) -> Result<tonic::Response<Updates>, tonic::Status> {
        let req = req.into_inner();
        assert!(
            req.context_token.contains("\"ns\""),
            "the context token is sent: {req:?}"
        );
        let endpoints = self.services.lock().get(&req.path).cloned();
        let update = match endpoints {
            Some(eps) => d::update::Update::Add(d::WeightedAddrSet {
                addrs: eps.iter().map(Endpoint::to_api).collect(),
                metric_labels: HashMap::from([("service".to_string(), req.path.clone())]),
            }),
            None => d::update::Update::NoEndpoints(d::NoEndpoints { exists: false }),
        };
        Ok(tonic::Response::new(once_then_open(d::Update {
            update: Some(update),
        })))
    }

    async fn get_profile(
        &self,
        req: tonic::Request<d::GetDestination>,
    ) -> Result<tonic::Response<Profiles>, tonic::Status> {
        let path = req.into_inner().path;
        let known = self.services.lock().contains_key(&path);
        let profile = d::DestinationProfile {
            fully_qualified_name: match known {
                true => path
                    .rsplit_once(':')
                    .map_or(path.clone(), |(n, _)| n.to_string()),
                false => String::new(),
            },
            ..Default::default()
        };
        Ok(tonic::Response::new(once_then_open(profile)))
    }
}

/// An Identity server: signs the CSR of an identity whose token matches, with `ca`.
pub struct Certifier {
    pub ca: Arc<linkerd_control::Ca>,
    /// Identity -> its token.
    pub tokens: HashMap<String, Vec<u8>>,
    pub lifetime: Duration,
}

#[tonic::async_trait]
impl i::identity_server::Identity for Certifier {
    async fn certify(
        &self,
        req: tonic::Request<i::CertifyRequest>,
    ) -> Result<tonic::Response<i::CertifyResponse>, tonic::Status> {
        let req = req.into_inner();
        match self.tokens.get(&req.identity) {
            Some(t) if t.trim_ascii_end() == req.token.trim_ascii_end() => {}
            _ => {
                return Err(tonic::Status::permission_denied(
                    "unknown identity or token",
                ))
            }
        }
        let signed = self
            .ca
            .sign_csr(
                &req.identity,
                &req.certificate_signing_request,
                self.lifetime,
            )
            .map_err(|e| tonic::Status::invalid_argument(e.to_string()))?;
        let valid_until = signed
            .not_after
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default();
        Ok(tonic::Response::new(i::CertifyResponse {
            leaf_certificate: signed.leaf_der,
            intermediate_certificates: vec![signed.issuer_der],
            valid_until: Some(prost_types::Timestamp {
                seconds: valid_until.as_secs() as i64,
                nanos: 0,
            }),
        }))
    }
}

/// Serves `routes` over mesh TLS with `config` on a loopback port until the handle is
/// aborted.
pub async fn serve_tls(
    routes: tonic::service::Routes,
    config: Arc<rustls::ServerConfig>,
) -> (SocketAddr, tokio::task::JoinHandle<()>) {
    crate::policy::serve_routes_tls(routes, config).await
}
