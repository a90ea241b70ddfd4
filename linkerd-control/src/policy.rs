//! `io.linkerd.proxy.inbound.InboundServerPolicies/WatchPort` from the mesh file's `servers`:
//! a port's `Server` as Linkerd's policy controller would render it, and a new one each time
//! the file changes it. A port without a server answers NotFound (the proxy applies its
//! default policy and asks again later).

use crate::{
    config::{Authentication, AuthorizationConfig, ServerConfig, ServerProtocol},
    Mesh,
};
use linkerd_proxy_api::{
    http_route as h, inbound as api,
    inbound::inbound_server_policies_server::{InboundServerPolicies, InboundServerPoliciesServer},
    meta, net,
};
use std::{collections::HashMap, pin::Pin};
use tokio_stream::Stream;
use tonic::{Request, Response, Status};

type Servers = Pin<Box<dyn Stream<Item = Result<api::Server, Status>> + Send>>;

/// Answers `WatchPort` from the mesh file.
#[derive(Clone)]
pub struct PolicyService {
    mesh: Mesh,
}

impl PolicyService {
    pub fn new(mesh: Mesh) -> Self {
        Self { mesh }
    }

    pub fn into_server(self) -> InboundServerPoliciesServer<Self> {
        InboundServerPoliciesServer::new(self)
    }
}

fn resource(kind: &str, name: &str) -> Option<meta::Metadata> {
    Some(meta::Metadata {
        kind: Some(meta::metadata::Kind::Resource(meta::Resource {
            group: "policy.linkerd.io".into(),
            kind: kind.into(),
            name: name.into(),
            ..Default::default()
        })),
    })
}

fn network(n: &ipnet::IpNet) -> net::IpNetwork {
    net::IpNetwork {
        ip: Some(n.addr().into()),
        prefix_len: u32::from(n.prefix_len()),
    }
}

fn authz(a: &AuthorizationConfig) -> api::Authz {
    use api::authn::{permit_mesh_tls::Clients, Permit, PermitMeshTls};
    let networks: Vec<ipnet::IpNet> = match a.networks.is_empty() {
        true => vec![
            "0.0.0.0/0".parse().expect("a CIDR"),
            "::/0".parse().expect("a CIDR"),
        ],
        false => a.networks.clone(),
    };
    let permit = match a.authentication {
        Authentication::Unauthenticated => Permit::Unauthenticated(Default::default()),
        Authentication::MeshTls => Permit::MeshTls(PermitMeshTls {
            clients: Some(Clients::Unauthenticated(Default::default())),
        }),
        Authentication::Identities => Permit::MeshTls(PermitMeshTls {
            clients: Some(Clients::Identities(
                api::authn::permit_mesh_tls::PermitClientIdentities {
                    identities: a
                        .identities
                        .iter()
                        .map(|n| api::Identity { name: n.clone() })
                        .collect(),
                    suffixes: a
                        .identity_suffixes
                        .iter()
                        .map(|s| api::IdentitySuffix {
                            parts: s
                                .split('.')
                                .filter(|p| !p.is_empty())
                                .map(str::to_string)
                                .collect(),
                        })
                        .collect(),
                },
            )),
        }),
    };
    let kind = match a.authentication {
        Authentication::Unauthenticated => "NetworkAuthentication",
        _ => "MeshTLSAuthentication",
    };
    api::Authz {
        networks: networks
            .iter()
            .map(|n| api::Network {
                net: Some(network(n)),
                except: a
                    .except
                    .iter()
                    .filter(|e| n.contains(&e.addr()))
                    .map(network)
                    .collect(),
            })
            .collect(),
        authentication: Some(api::Authn {
            permit: Some(permit),
        }),
        labels: HashMap::from([("name".into(), a.name.clone())]),
        metadata: resource(kind, &a.name),
    }
}

/// The `Server` a policy controller would send for `s`.
pub fn server(s: &ServerConfig) -> api::Server {
    use api::proxy_protocol::Kind;
    let routes: Vec<api::HttpRoute> = s
        .routes
        .iter()
        .map(|r| {
            use h::path_match::Kind as P;
            let path = match (&r.path_exact, &r.path_prefix, &r.path_regex) {
                (Some(p), _, _) => Some(P::Exact(p.clone())),
                (_, Some(p), _) => Some(P::Prefix(p.clone())),
                (_, _, Some(p)) => Some(P::Regex(p.clone())),
                _ => None,
            };
            api::HttpRoute {
                metadata: resource("HTTPRoute", &r.name),
                hosts: vec![],
                authorizations: r.authorizations.iter().map(authz).collect(),
                rules: vec![api::http_route::Rule {
                    matches: vec![h::HttpRouteMatch {
                        path: path.map(|k| h::PathMatch { kind: Some(k) }),
                        ..Default::default()
                    }],
                    filters: vec![],
                }],
            }
        })
        .collect();
    let kind = match s.protocol {
        ServerProtocol::Detect => Kind::Detect(api::proxy_protocol::Detect {
            timeout: Some(prost_types::Duration {
                seconds: 10,
                nanos: 0,
            }),
            http_routes: routes,
            http_local_rate_limit: None,
        }),
        ServerProtocol::Http1 => Kind::Http1(api::proxy_protocol::Http1 {
            routes,
            local_rate_limit: None,
        }),
        ServerProtocol::Http2 => Kind::Http2(api::proxy_protocol::Http2 {
            routes,
            local_rate_limit: None,
        }),
        ServerProtocol::Grpc => Kind::Grpc(api::proxy_protocol::Grpc { routes: vec![] }),
        ServerProtocol::Opaque => Kind::Opaque(api::proxy_protocol::Opaque {}),
    };
    api::Server {
        protocol: Some(api::ProxyProtocol { kind: Some(kind) }),
        server_ips: vec![],
        authorizations: s.authorizations.iter().map(authz).collect(),
        labels: HashMap::from([
            ("group".into(), "policy.linkerd.io".into()),
            ("kind".into(), "server".into()),
            ("name".into(), s.name.clone()),
        ]),
    }
}

#[tonic::async_trait]
impl InboundServerPolicies for PolicyService {
    async fn get_port(&self, req: Request<api::PortSpec>) -> Result<Response<api::Server>, Status> {
        let port = port(req.get_ref())?;
        match self.mesh.current().server(port) {
            Some(s) => Ok(Response::new(server(s))),
            None => Err(Status::not_found(format!("no server for port {port}"))),
        }
    }

    type WatchPortStream = Servers;

    async fn watch_port(&self, req: Request<api::PortSpec>) -> Result<Response<Servers>, Status> {
        let port = port(req.get_ref())?;
        let gone = move || Status::not_found(format!("no server for port {port}"));
        match self
            .mesh
            .follow(move |mesh| mesh.server(port).map(server), gone)
        {
            Some(stream) => Ok(Response::new(Box::pin(stream))),
            None => Err(gone()),
        }
    }
}

fn port(spec: &api::PortSpec) -> Result<u16, Status> {
    u16::try_from(spec.port)
        .ok()
        .filter(|p| *p > 0)
        .ok_or_else(|| Status::invalid_argument(format!("port {}", spec.port)))
}
