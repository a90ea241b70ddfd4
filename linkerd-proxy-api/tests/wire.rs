//! Wire compatibility with the published `linkerd2-proxy-api` crate: messages encoded by one
//! decode to the same values in the other, and our generated client talks to a server built
//! from theirs.
// The deprecated `requestTimeout` fields are set on purpose: their numbers are wire facts too.
#![allow(deprecated)]

use linkerd2_proxy_api as theirs;
use linkerd_proxy_api as ours;
use prost::Message;
use std::{collections::HashMap, net::SocketAddr, pin::Pin};

fn our_update() -> ours::destination::Update {
    use ours::destination::*;
    let addr = |s: &str| ours::net::TcpAddress::from(s.parse::<SocketAddr>().unwrap());
    Update {
        update: Some(update::Update::Add(WeightedAddrSet {
            addrs: vec![
                WeightedAddr {
                    addr: Some(addr("10.1.2.3:8080")),
                    weight: 10000,
                    metric_labels: HashMap::from([("pod".into(), "web-1".into())]),
                    tls_identity: Some(TlsIdentity {
                        strategy: Some(tls_identity::Strategy::DnsLikeIdentity(
                            tls_identity::DnsLikeIdentity {
                                name: "web.default.serviceaccount.identity.linkerd.cluster.local"
                                    .into(),
                            },
                        )),
                        server_name: None,
                    }),
                    protocol_hint: Some(ProtocolHint {
                        protocol: Some(protocol_hint::Protocol::H2(protocol_hint::H2 {})),
                        opaque_transport: Some(protocol_hint::OpaqueTransport {
                            inbound_port: 4143,
                        }),
                    }),
                    authority_override: None,
                    http2: None,
                    resource_ref: None,
                },
                WeightedAddr {
                    addr: Some(addr("[2001:db8::7]:9090")),
                    weight: 1,
                    ..Default::default()
                },
            ],
            metric_labels: HashMap::from([("namespace".into(), "default".into())]),
        })),
    }
}

#[test]
fn our_update_decodes_in_theirs() {
    let ours = our_update();
    let bytes = ours.encode_to_vec();
    let theirs =
        theirs::destination::Update::decode(bytes.as_slice()).expect("theirs decodes ours");
    let Some(theirs::destination::update::Update::Add(set)) = &theirs.update else {
        panic!("an add: {theirs:?}");
    };
    assert_eq!(set.addrs.len(), 2);
    assert_eq!(set.addrs[0].weight, 10000);
    assert_eq!(set.addrs[0].metric_labels["pod"], "web-1");
    assert_eq!(set.metric_labels["namespace"], "default");
    let hint = set.addrs[0].protocol_hint.as_ref().unwrap();
    assert!(matches!(
        hint.protocol,
        Some(theirs::destination::protocol_hint::Protocol::H2(_))
    ));
    assert_eq!(hint.opaque_transport.as_ref().unwrap().inbound_port, 4143);
    let id = set.addrs[0].tls_identity.as_ref().unwrap();
    assert!(matches!(
        &id.strategy,
        Some(theirs::destination::tls_identity::Strategy::DnsLikeIdentity(d))
            if d.name == "web.default.serviceaccount.identity.linkerd.cluster.local"
    ));
    // And back: theirs re-encoded decodes to exactly our original.
    let back = ours::destination::Update::decode(theirs.encode_to_vec().as_slice()).unwrap();
    assert_eq!(back, ours);
}

#[test]
fn their_messages_decode_in_ours() {
    use theirs::destination as t;
    let remove = t::Update {
        update: Some(t::update::Update::Remove(t::AddrSet {
            addrs: vec![theirs::net::TcpAddress {
                ip: Some(theirs::net::IpAddress {
                    ip: Some(theirs::net::ip_address::Ip::Ipv4(0x0a000001)),
                }),
                port: 80,
            }],
        })),
    };
    let ours = ours::destination::Update::decode(remove.encode_to_vec().as_slice()).unwrap();
    let Some(ours::destination::update::Update::Remove(set)) = &ours.update else {
        panic!("a remove: {ours:?}");
    };
    assert_eq!(
        set.addrs[0].to_socket_addr(),
        Some("10.0.0.1:80".parse().unwrap())
    );
    assert_eq!(
        t::Update::decode(ours.encode_to_vec().as_slice()).unwrap(),
        remove
    );

    let none = t::Update {
        update: Some(t::update::Update::NoEndpoints(t::NoEndpoints {
            exists: true,
        })),
    };
    let ours = ours::destination::Update::decode(none.encode_to_vec().as_slice()).unwrap();
    assert_eq!(
        ours.update,
        Some(ours::destination::update::Update::NoEndpoints(
            ours::destination::NoEndpoints { exists: true }
        ))
    );

    let profile = t::DestinationProfile {
        fully_qualified_name: "web.default.svc.cluster.local".into(),
        opaque_protocol: true,
        retry_budget: Some(t::RetryBudget {
            retry_ratio: 0.2,
            min_retries_per_second: 10,
            ttl: Some(prost_types::Duration {
                seconds: 10,
                nanos: 0,
            }),
        }),
        routes: vec![t::Route {
            condition: Some(t::RequestMatch {
                r#match: Some(t::request_match::Match::Path(t::PathMatch {
                    regex: "/api/.*".into(),
                })),
            }),
            is_retryable: true,
            timeout: Some(prost_types::Duration {
                seconds: 1,
                nanos: 500,
            }),
            ..Default::default()
        }],
        ..Default::default()
    };
    let ours =
        ours::destination::DestinationProfile::decode(profile.encode_to_vec().as_slice()).unwrap();
    assert!(ours.opaque_protocol);
    assert_eq!(ours.fully_qualified_name, "web.default.svc.cluster.local");
    assert_eq!(
        ours.retry_budget.as_ref().unwrap().min_retries_per_second,
        10
    );
    assert!(ours.routes[0].is_retryable);
    assert_eq!(
        t::DestinationProfile::decode(ours.encode_to_vec().as_slice()).unwrap(),
        profile
    );
}

/// A Destination server built from the published crate's generated service.
struct TheirServer;

type UpdateStream = Pin<
    Box<dyn tokio_stream::Stream<Item = Result<theirs::destination::Update, tonic::Status>> + Send>,
>;
type ProfileStream = Pin<
    Box<
        dyn tokio_stream::Stream<
                Item = Result<theirs::destination::DestinationProfile, tonic::Status>,
            > + Send,
    >,
>;

#[tonic::async_trait]
impl theirs::destination::destination_server::Destination for TheirServer {
    type GetStream = UpdateStream;
    type GetProfileStream = ProfileStream;

    async fn get(
        &self,
        req: tonic::Request<theirs::destination::GetDestination>,
    ) -> Result<tonic::Response<UpdateStream>, tonic::Status> {
        let req = req.into_inner();
        assert_eq!(req.path, "web.default.svc.cluster.local:8080");
        assert_eq!(req.context_token, "ctx");
        let our = our_update();
        let update = theirs::destination::Update::decode(our.encode_to_vec().as_slice()).unwrap();
        let none = theirs::destination::Update {
            update: Some(theirs::destination::update::Update::NoEndpoints(
                theirs::destination::NoEndpoints { exists: true },
            )),
        };
        Ok(tonic::Response::new(Box::pin(tokio_stream::iter(vec![
            Ok(update),
            Ok(none),
        ]))))
    }

    async fn get_profile(
        &self,
        _: tonic::Request<theirs::destination::GetDestination>,
    ) -> Result<tonic::Response<ProfileStream>, tonic::Status> {
        Err(tonic::Status::unimplemented("profiles"))
    }
}

#[tokio::test]
async fn our_client_talks_to_their_server() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(
                theirs::destination::destination_server::DestinationServer::new(TheirServer),
            )
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    let mut client =
        ours::destination::destination_client::DestinationClient::connect(format!("http://{addr}"))
            .await
            .unwrap();
    let mut stream = client
        .get(ours::destination::GetDestination {
            scheme: "k8s".into(),
            path: "web.default.svc.cluster.local:8080".into(),
            context_token: "ctx".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(stream.message().await.unwrap().unwrap(), our_update());
    let next = stream.message().await.unwrap().unwrap();
    assert!(
        matches!(next.update, Some(ours::destination::update::Update::NoEndpoints(n)) if n.exists)
    );
    assert!(stream.message().await.unwrap().is_none(), "the stream ends");
}

#[test]
fn certify_messages_match_linkerds() {
    let req = ours::identity::CertifyRequest {
        identity: "web.default.serviceaccount.identity.linkerd.cluster.local".into(),
        token: b"token".to_vec(),
        certificate_signing_request: vec![0x30, 0x82, 1, 2],
    };
    let theirs_req = theirs::identity::CertifyRequest::decode(&*req.encode_to_vec()).unwrap();
    assert_eq!(theirs_req.identity, req.identity);
    assert_eq!(theirs_req.token, req.token);
    assert_eq!(
        theirs_req.certificate_signing_request,
        req.certificate_signing_request
    );

    let rsp = theirs::identity::CertifyResponse {
        leaf_certificate: vec![1, 2, 3],
        intermediate_certificates: vec![vec![4, 5], vec![6]],
        valid_until: Some(prost_types::Timestamp {
            seconds: 1_800_000_000,
            nanos: 5,
        }),
    };
    let ours_rsp = ours::identity::CertifyResponse::decode(&*rsp.encode_to_vec()).unwrap();
    assert_eq!(ours_rsp.leaf_certificate, rsp.leaf_certificate);
    assert_eq!(
        ours_rsp.intermediate_certificates,
        rsp.intermediate_certificates
    );
    assert_eq!(ours_rsp.valid_until.unwrap().seconds, 1_800_000_000);
}

#[test]
fn transport_header_fields() {
    use ours::opaque_transport::{session_protocol, Header, SessionProtocol};
    let h = Header {
        port: 8080,
        name: String::new(),
        session_protocol: Some(SessionProtocol {
            kind: Some(session_protocol::Kind::Http1(session_protocol::Http1 {})),
        }),
    };
    // Field 1 varint 8080, field 3 message holding field 1 (empty message).
    assert_eq!(
        h.encode_to_vec(),
        vec![0x08, 0x90, 0x3f, 0x1a, 0x02, 0x0a, 0x00]
    );
}

/// A policy resource's metadata, in their types.
fn metadata(kind: &str, name: &str) -> theirs::meta::Metadata {
    use theirs::meta;
    meta::Metadata {
        kind: Some(meta::metadata::Kind::Resource(meta::Resource {
            group: "policy.linkerd.io".into(),
            kind: kind.into(),
            name: name.into(),
            namespace: "default".into(),
            section: String::new(),
            port: 0,
        })),
    }
}

/// A `Server` with every field the policy controller sends, built from their types.
fn their_server() -> theirs::inbound::Server {
    use theirs::{http_route as h, http_types as t, inbound::*, net};
    let net = |ip: u32, len: u32| net::IpNetwork {
        ip: Some(net::IpAddress {
            ip: Some(net::ip_address::Ip::Ipv4(ip)),
        }),
        prefix_len: len,
    };
    let authz = Authz {
        networks: vec![Network {
            net: Some(net(0x0a00_0000, 8)),
            except: vec![net(0x0a00_0100, 24)],
        }],
        authentication: Some(Authn {
            permit: Some(authn::Permit::MeshTls(authn::PermitMeshTls {
                clients: Some(authn::permit_mesh_tls::Clients::Identities(
                    authn::permit_mesh_tls::PermitClientIdentities {
                        identities: vec![Identity {
                            name: "web.default.serviceaccount.identity.linkerd.cluster.local"
                                .into(),
                        }],
                        suffixes: vec![IdentitySuffix {
                            parts: vec!["emojivoto".into(), "serviceaccount".into()],
                        }],
                    },
                )),
            })),
        }),
        labels: HashMap::from([("name".into(), "web-authz".into())]),
        metadata: Some(metadata("AuthorizationPolicy", "web-authz")),
    };
    let http_route = HttpRoute {
        metadata: Some(metadata("HTTPRoute", "web-route")),
        hosts: vec![
            h::HostMatch {
                r#match: Some(h::host_match::Match::Exact("web.example.com".into())),
            },
            h::HostMatch {
                r#match: Some(h::host_match::Match::Suffix(h::host_match::Suffix {
                    reverse_labels: vec!["com".into(), "example".into()],
                })),
            },
        ],
        authorizations: vec![authz.clone()],
        rules: vec![http_route::Rule {
            matches: vec![h::HttpRouteMatch {
                path: Some(h::PathMatch {
                    kind: Some(h::path_match::Kind::Prefix("/api".into())),
                }),
                headers: vec![h::HeaderMatch {
                    name: "x-env".into(),
                    value: Some(h::header_match::Value::Regex("^prod".into())),
                }],
                query_params: vec![h::QueryParamMatch {
                    name: "debug".into(),
                    value: Some(h::query_param_match::Value::Exact("1".into())),
                }],
                method: Some(t::HttpMethod {
                    r#type: Some(t::http_method::Type::Registered(
                        t::http_method::Registered::Get.into(),
                    )),
                }),
            }],
            filters: vec![
                http_route::Filter {
                    kind: Some(http_route::filter::Kind::FailureInjector(
                        h::HttpFailureInjector {
                            status: 503,
                            message: "injected".into(),
                            ratio: Some(h::Ratio {
                                numerator: 1,
                                denominator: 2,
                            }),
                        },
                    )),
                },
                http_route::Filter {
                    kind: Some(http_route::filter::Kind::RequestHeaderModifier(
                        h::RequestHeaderModifier {
                            add: Some(t::Headers {
                                headers: vec![t::headers::Header {
                                    name: "x-a".into(),
                                    value: b"1".to_vec(),
                                }],
                            }),
                            set: None,
                            remove: vec!["x-b".into()],
                        },
                    )),
                },
                http_route::Filter {
                    kind: Some(http_route::filter::Kind::Redirect(h::RequestRedirect {
                        scheme: None,
                        host: "other".into(),
                        path: Some(h::PathModifier {
                            replace: Some(h::path_modifier::Replace::Prefix("/v2".into())),
                        }),
                        port: 8443,
                        status: 302,
                    })),
                },
            ],
        }],
    };
    let limit = |rps| {
        Some(http_local_rate_limit::Limit {
            requests_per_second: rps,
        })
    };
    Server {
        protocol: Some(ProxyProtocol {
            kind: Some(proxy_protocol::Kind::Detect(proxy_protocol::Detect {
                timeout: Some(prost_types::Duration {
                    seconds: 10,
                    nanos: 0,
                }),
                http_routes: vec![http_route],
                http_local_rate_limit: Some(HttpLocalRateLimit {
                    metadata: Some(metadata("HTTPLocalRateLimitPolicy", "rl")),
                    total: limit(100),
                    identity: limit(10),
                    overrides: vec![http_local_rate_limit::Override {
                        limit: limit(50),
                        clients: Some(http_local_rate_limit::r#override::ClientIdentities {
                            identities: vec![Identity {
                                name: "batch.default.serviceaccount.identity.linkerd.cluster.local"
                                    .into(),
                            }],
                        }),
                    }],
                }),
            })),
        }),
        server_ips: vec![],
        authorizations: vec![authz],
        labels: HashMap::from([
            ("group".into(), "policy.linkerd.io".into()),
            ("kind".into(), "server".into()),
            ("name".into(), "web-http".into()),
        ]),
    }
}

/// A gRPC route with a match and a failure injector, from their types.
fn their_grpc_route() -> theirs::inbound::GrpcRoute {
    use theirs::{grpc_route as g, inbound::*};
    GrpcRoute {
        metadata: Some(metadata("GRPCRoute", "rpc")),
        hosts: vec![],
        authorizations: vec![],
        rules: vec![grpc_route::Rule {
            matches: vec![g::GrpcRouteMatch {
                rpc: Some(g::GrpcRpcMatch {
                    service: "helloworld.Greeter".into(),
                    method: "SayHello".into(),
                }),
                headers: vec![],
            }],
            filters: vec![grpc_route::Filter {
                kind: Some(grpc_route::filter::Kind::FailureInjector(
                    g::GrpcFailureInjector {
                        code: 14,
                        message: "no".into(),
                        ratio: None,
                    },
                )),
            }],
        }],
    }
}

#[test]
fn inbound_policy_round_trips_every_field() {
    let theirs_server = their_server();
    let ours_server = ours::inbound::Server::decode(theirs_server.encode_to_vec().as_slice())
        .expect("ours decodes theirs");
    let back = theirs::inbound::Server::decode(ours_server.encode_to_vec().as_slice()).unwrap();
    assert_eq!(back, theirs_server, "no field lost through ours");

    let grpc = theirs::inbound::Server {
        protocol: Some(theirs::inbound::ProxyProtocol {
            kind: Some(theirs::inbound::proxy_protocol::Kind::Grpc(
                theirs::inbound::proxy_protocol::Grpc {
                    routes: vec![their_grpc_route()],
                },
            )),
        }),
        ..Default::default()
    };
    let ours_grpc = ours::inbound::Server::decode(grpc.encode_to_vec().as_slice()).unwrap();
    let back = theirs::inbound::Server::decode(ours_grpc.encode_to_vec().as_slice()).unwrap();
    assert_eq!(back, grpc);

    let spec = ours::inbound::PortSpec {
        workload: "{\"ns\":\"default\",\"pod\":\"web-0\"}\n".into(),
        port: 8080,
    };
    let theirs_spec = theirs::inbound::PortSpec::decode(spec.encode_to_vec().as_slice()).unwrap();
    assert_eq!(
        (theirs_spec.workload.as_str(), theirs_spec.port),
        (spec.workload.as_str(), 8080)
    );
}

/// An outbound policy with every kind of message the proxy reads set: HTTP routes with each
/// match, filter, timeouts and retries, a weighted split over a balanced backend and a
/// forwarded one, failure accrual.
fn our_outbound_policy() -> ours::outbound::OutboundPolicy {
    use ours::{http_route as h, outbound::*};
    let d = |ms: i32| {
        Some(prost_types::Duration {
            seconds: 0,
            nanos: ms * 1_000_000,
        })
    };
    let meta = |kind: &str, name: &str| {
        Some(ours::meta::Metadata {
            kind: Some(ours::meta::metadata::Kind::Resource(ours::meta::Resource {
                group: "gateway.networking.k8s.io".into(),
                kind: kind.into(),
                name: name.into(),
                namespace: "default".into(),
                section: "http".into(),
                port: 8080,
            })),
        })
    };
    let backoff = Some(ExponentialBackoff {
        min_backoff: d(25),
        max_backoff: d(250),
        jitter_ratio: 0.5,
        respect_retry_after_hint: true,
    });
    let balancer = |path: &str| Backend {
        metadata: meta("Service", path),
        kind: Some(backend::Kind::Balancer(backend::BalanceP2c {
            discovery: Some(backend::EndpointDiscovery {
                kind: Some(backend::endpoint_discovery::Kind::Dst(
                    backend::endpoint_discovery::DestinationGet { path: path.into() },
                )),
            }),
            load: Some(backend::balance_p2c::Load::PeakEwma(
                backend::balance_p2c::PeakEwma {
                    default_rtt: d(30),
                    decay: d(900),
                },
            )),
        })),
        queue: Some(Queue {
            capacity: 100,
            failfast_timeout: d(300),
        }),
    };
    let forward = Backend {
        metadata: meta("Service", "fixed"),
        kind: Some(backend::Kind::Forward(ours::destination::WeightedAddr {
            addr: Some(ours::net::TcpAddress::from(
                "10.1.1.1:8080".parse::<SocketAddr>().unwrap(),
            )),
            weight: 1,
            ..Default::default()
        })),
        queue: None,
    };
    let header_value = |v: &str| ours::http_types::headers::Header {
        name: "x-added".into(),
        value: v.as_bytes().to_vec(),
    };
    let rule = http_route::Rule {
        matches: vec![h::HttpRouteMatch {
            path: Some(h::PathMatch {
                kind: Some(h::path_match::Kind::Prefix("/api".into())),
            }),
            headers: vec![h::HeaderMatch {
                name: "x-canary".into(),
                value: Some(h::header_match::Value::Exact(b"yes".to_vec())),
            }],
            query_params: vec![h::QueryParamMatch {
                name: "v".into(),
                value: Some(h::query_param_match::Value::Regex("[0-9]+".into())),
            }],
            method: Some(ours::http_types::HttpMethod {
                r#type: Some(ours::http_types::http_method::Type::Registered(
                    ours::http_types::http_method::Registered::Post.into(),
                )),
            }),
        }],
        filters: vec![
            http_route::Filter {
                kind: Some(http_route::filter::Kind::FailureInjector(
                    h::HttpFailureInjector {
                        status: 503,
                        message: "injected".into(),
                        ratio: Some(h::Ratio {
                            numerator: 1,
                            denominator: 10,
                        }),
                    },
                )),
            },
            http_route::Filter {
                kind: Some(http_route::filter::Kind::RequestHeaderModifier(
                    h::RequestHeaderModifier {
                        add: Some(ours::http_types::Headers {
                            headers: vec![header_value("1")],
                        }),
                        set: None,
                        remove: vec!["x-removed".into()],
                    },
                )),
            },
            http_route::Filter {
                kind: Some(http_route::filter::Kind::Redirect(h::RequestRedirect {
                    scheme: None,
                    host: "other.example".into(),
                    path: Some(h::PathModifier {
                        replace: Some(h::path_modifier::Replace::Prefix("/v2".into())),
                    }),
                    port: 8443,
                    status: 302,
                })),
            },
            http_route::Filter {
                kind: Some(http_route::filter::Kind::ResponseHeaderModifier(
                    h::ResponseHeaderModifier {
                        add: None,
                        set: Some(ours::http_types::Headers {
                            headers: vec![header_value("2")],
                        }),
                        remove: vec![],
                    },
                )),
            },
        ],
        backends: Some(http_route::Distribution {
            kind: Some(http_route::distribution::Kind::RandomAvailable(
                http_route::distribution::RandomAvailable {
                    backends: vec![
                        http_route::WeightedRouteBackend {
                            backend: Some(http_route::RouteBackend {
                                backend: Some(balancer("web.default.svc.cluster.local:8080")),
                                filters: vec![],
                                request_timeout: None,
                            }),
                            weight: 90,
                        },
                        http_route::WeightedRouteBackend {
                            backend: Some(http_route::RouteBackend {
                                backend: Some(forward),
                                filters: vec![],
                                request_timeout: d(5),
                            }),
                            weight: 10,
                        },
                    ],
                },
            )),
        }),
        request_timeout: d(7),
        timeouts: Some(h::Timeouts {
            response: d(100),
            request: d(200),
            idle: d(300),
        }),
        retry: Some(http_route::Retry {
            max_retries: 3,
            max_request_bytes: 65536,
            conditions: Some(http_route::retry::Conditions {
                status_ranges: vec![http_route::retry::conditions::StatusRange {
                    start: 500,
                    end: 599,
                }],
            }),
            timeout: d(150),
            backoff,
        }),
        allow_l5d_request_headers: true,
    };
    let accrual = Some(FailureAccrual {
        kind: Some(failure_accrual::Kind::ConsecutiveFailures(
            failure_accrual::ConsecutiveFailures {
                max_failures: 7,
                backoff,
            },
        )),
        ejection: Some(EjectionConfig {
            min_ready_endpoints: 2,
        }),
    });
    OutboundPolicy {
        protocol: Some(ProxyProtocol {
            kind: Some(proxy_protocol::Kind::Detect(proxy_protocol::Detect {
                timeout: d(10),
                opaque: Some(proxy_protocol::Opaque { routes: vec![] }),
                http1: Some(proxy_protocol::Http1 {
                    routes: vec![HttpRoute {
                        metadata: meta("HTTPRoute", "canary"),
                        hosts: vec![h::HostMatch {
                            r#match: Some(h::host_match::Match::Exact("web.example".into())),
                        }],
                        rules: vec![rule.clone()],
                    }],
                    failure_accrual: accrual,
                }),
                http2: Some(proxy_protocol::Http2 {
                    routes: vec![HttpRoute {
                        metadata: meta("HTTPRoute", "canary"),
                        hosts: vec![],
                        rules: vec![rule],
                    }],
                    failure_accrual: None,
                }),
            })),
        }),
        metadata: meta("Service", "web"),
    }
}

#[test]
fn an_outbound_policy_round_trips_through_theirs_unchanged() {
    let ours = our_outbound_policy();
    let bytes = ours.encode_to_vec();
    let theirs =
        theirs::outbound::OutboundPolicy::decode(bytes.as_slice()).expect("theirs decodes ours");
    // Every field we set is one they know, with the same number and type: nothing is dropped
    // or reinterpreted on the way through theirs.
    let again = theirs.encode_to_vec();
    assert_eq!(again, bytes, "theirs re-encodes ours byte for byte");
    let back = ours::outbound::OutboundPolicy::decode(again.as_slice()).unwrap();
    assert_eq!(back, ours);
    // Spot checks through their types.
    let Some(theirs::outbound::proxy_protocol::Kind::Detect(detect)) =
        theirs.protocol.and_then(|p| p.kind)
    else {
        panic!("detect");
    };
    let rule = &detect.http1.unwrap().routes[0].rules[0];
    assert_eq!(rule.retry.as_ref().unwrap().max_retries, 3);
    assert_eq!(rule.filters.len(), 4);
    let Some(theirs::outbound::http_route::distribution::Kind::RandomAvailable(split)) =
        rule.backends.as_ref().and_then(|b| b.kind.clone())
    else {
        panic!("a weighted split");
    };
    assert_eq!(
        split.backends.iter().map(|b| b.weight).collect::<Vec<_>>(),
        [90, 10]
    );
}

#[test]
fn grpc_tls_and_opaque_policies_round_trip_through_theirs_unchanged() {
    use ours::outbound::*;
    let grpc = ProxyProtocol {
        kind: Some(proxy_protocol::Kind::Grpc(proxy_protocol::Grpc {
            routes: vec![GrpcRoute {
                metadata: None,
                hosts: vec![],
                rules: vec![grpc_route::Rule {
                    matches: vec![ours::grpc_route::GrpcRouteMatch {
                        rpc: Some(ours::grpc_route::GrpcRpcMatch {
                            service: "pkg.Svc".into(),
                            method: "Get".into(),
                        }),
                        headers: vec![],
                    }],
                    filters: vec![grpc_route::Filter {
                        kind: Some(grpc_route::filter::Kind::FailureInjector(
                            ours::grpc_route::GrpcFailureInjector {
                                code: 14,
                                message: "injected".into(),
                                ratio: None,
                            },
                        )),
                    }],
                    backends: Some(grpc_route::Distribution {
                        kind: Some(grpc_route::distribution::Kind::FirstAvailable(
                            grpc_route::distribution::FirstAvailable { backends: vec![] },
                        )),
                    }),
                    request_timeout: None,
                    timeouts: None,
                    retry: Some(grpc_route::Retry {
                        max_retries: 2,
                        max_request_bytes: 1024,
                        conditions: Some(grpc_route::retry::Conditions {
                            cancelled: true,
                            deadine_exceeded: true,
                            resource_exhausted: true,
                            internal: true,
                            unavailable: true,
                        }),
                        timeout: None,
                        backoff: None,
                    }),
                    allow_l5d_request_headers: false,
                }],
            }],
            failure_accrual: None,
        })),
    };
    let tls = ProxyProtocol {
        kind: Some(proxy_protocol::Kind::Tls(proxy_protocol::Tls {
            routes: vec![TlsRoute {
                metadata: None,
                snis: vec![ours::tls_route::SniMatch {
                    r#match: Some(ours::tls_route::sni_match::Match::Suffix(
                        ours::tls_route::sni_match::Suffix {
                            reverse_labels: vec!["com".into(), "example".into()],
                        },
                    )),
                }],
                rules: vec![tls_route::Rule {
                    backends: None,
                    filters: vec![tls_route::Filter {
                        kind: Some(tls_route::filter::Kind::Forbidden(
                            ours::opaque_route::Forbidden {},
                        )),
                    }],
                }],
            }],
        })),
    };
    let opaque = ProxyProtocol {
        kind: Some(proxy_protocol::Kind::Opaque(proxy_protocol::Opaque {
            routes: vec![OpaqueRoute {
                metadata: None,
                rules: vec![opaque_route::Rule {
                    backends: Some(opaque_route::Distribution {
                        kind: Some(opaque_route::distribution::Kind::Empty(
                            opaque_route::distribution::Empty {},
                        )),
                    }),
                    filters: vec![opaque_route::Filter {
                        kind: Some(opaque_route::filter::Kind::Invalid(
                            ours::opaque_route::Invalid {
                                message: "bad".into(),
                            },
                        )),
                    }],
                }],
            }],
        })),
    };
    for protocol in [grpc, tls, opaque] {
        let ours = OutboundPolicy {
            protocol: Some(protocol),
            metadata: None,
        };
        let bytes = ours.encode_to_vec();
        let theirs = theirs::outbound::OutboundPolicy::decode(bytes.as_slice()).unwrap();
        assert_eq!(theirs.encode_to_vec(), bytes, "{ours:?}");
    }
}
