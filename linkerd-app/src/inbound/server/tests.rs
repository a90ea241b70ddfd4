use super::*;
use linkerd_identity::Id;
use linkerd_proxy_api::inbound::{Authn, Network};
use linkerd_proxy_api::{http_route as h, inbound::*, net};

fn cidr(s: &str) -> net::IpNetwork {
    let n: IpNet = s.parse().unwrap();
    net::IpNetwork {
        ip: Some(n.addr().into()),
        prefix_len: u32::from(n.prefix_len()),
    }
}

fn authz(nets: &[&str], except: &[&str], permit: authn::Permit, name: &str) -> Authz {
    Authz {
        networks: nets
            .iter()
            .map(|n| Network {
                net: Some(cidr(n)),
                except: except.iter().map(|e| cidr(e)).collect(),
            })
            .collect(),
        authentication: Some(Authn {
            permit: Some(permit),
        }),
        labels: HashMap::from([("name".into(), name.into())]),
        metadata: None,
    }
}

use std::collections::HashMap;

fn ids(exact: &[&str], suffixes: &[&[&str]]) -> authn::Permit {
    authn::Permit::MeshTls(authn::PermitMeshTls {
        clients: Some(authn::permit_mesh_tls::Clients::Identities(
            authn::permit_mesh_tls::PermitClientIdentities {
                identities: exact
                    .iter()
                    .map(|n| Identity {
                        name: n.to_string(),
                    })
                    .collect(),
                suffixes: suffixes
                    .iter()
                    .map(|p| IdentitySuffix {
                        parts: p.iter().map(|s| s.to_string()).collect(),
                    })
                    .collect(),
            },
        )),
    })
}

fn route(name: &str, path: h::path_match::Kind, authzs: Vec<Authz>) -> HttpRoute {
    HttpRoute {
        metadata: Some(linkerd_proxy_api::meta::Metadata {
            kind: Some(linkerd_proxy_api::meta::metadata::Kind::Resource(
                linkerd_proxy_api::meta::Resource {
                    group: "gateway.networking.k8s.io".into(),
                    kind: "HTTPRoute".into(),
                    name: name.into(),
                    ..Default::default()
                },
            )),
        }),
        hosts: vec![],
        authorizations: authzs,
        rules: vec![http_route::Rule {
            matches: vec![h::HttpRouteMatch {
                path: Some(h::PathMatch { kind: Some(path) }),
                ..Default::default()
            }],
            filters: vec![],
        }],
    }
}

fn server(authzs: Vec<Authz>, routes: Vec<HttpRoute>) -> Server {
    Server {
        protocol: Some(ProxyProtocol {
            kind: Some(proxy_protocol::Kind::Detect(proxy_protocol::Detect {
                timeout: None,
                http_routes: routes,
                http_local_rate_limit: None,
            })),
        }),
        server_ips: vec![],
        authorizations: authzs,
        labels: HashMap::from([("name".into(), "web-http".into())]),
    }
}

fn authed(id: &str) -> ClientAuth {
    ClientAuth::Authenticated(Id::parse(id).unwrap())
}

const WEB: &str = "web.emojivoto.serviceaccount.identity.linkerd.cluster.local";

#[test]
fn authorizations_match_networks_and_identities() {
    let s = ServerPolicy::from_api(&server(
        vec![
            authz(
                &["10.0.0.0/8"],
                &["10.9.0.0/16"],
                authn::Permit::Unauthenticated(Default::default()),
                "net",
            ),
            authz(
                &["0.0.0.0/0", "::/0"],
                &[],
                ids(
                    &[],
                    &[&[
                        "emojivoto",
                        "serviceaccount",
                        "identity",
                        "linkerd",
                        "cluster",
                        "local",
                    ]],
                ),
                "suffix",
            ),
            authz(
                &["0.0.0.0/0"],
                &[],
                ids(
                    &["db.other.serviceaccount.identity.linkerd.cluster.local"],
                    &[],
                ),
                "exact",
            ),
        ],
        vec![],
    ))
    .unwrap();
    assert_eq!(&*s.meta.name, "web-http");
    assert_eq!(
        (&*s.meta.group, &*s.meta.kind),
        ("policy.linkerd.io", "server")
    );
    let who = |ip: &str, auth: ClientAuth| {
        s.authorize(ip.parse().unwrap(), &auth)
            .map(|a| a.meta.name.to_string())
    };
    assert_eq!(
        who("10.1.2.3", ClientAuth::Plaintext).as_deref(),
        Some("net")
    );
    assert_eq!(who("10.9.2.3", ClientAuth::Plaintext), None, "except");
    assert_eq!(who("192.168.1.1", ClientAuth::Plaintext), None);
    assert_eq!(who("192.168.1.1", authed(WEB)).as_deref(), Some("suffix"));
    assert_eq!(
        who("192.168.1.1", ClientAuth::Tls),
        None,
        "an identity is required"
    );
    assert_eq!(
        who(
            "192.168.1.1",
            authed("db.other.serviceaccount.identity.linkerd.cluster.local")
        )
        .as_deref(),
        Some("exact")
    );
    assert_eq!(
        who("::ffff:10.1.2.3", ClientAuth::Plaintext).as_deref(),
        Some("net"),
        "mapped v4"
    );
    assert_eq!(
        who("127.0.0.1", ClientAuth::Plaintext).as_deref(),
        Some("localhost"),
        "always"
    );
    assert_eq!(
        who("::1", ClientAuth::Plaintext).as_deref(),
        Some("localhost")
    );
}

#[test]
fn routes_rank_exact_over_prefix_and_default_when_none() {
    use h::path_match::Kind;
    let s = ServerPolicy::from_api(&server(
        vec![],
        vec![
            route("prefix", Kind::Prefix("/api".into()), vec![]),
            route("exact", Kind::Exact("/api/admin".into()), vec![]),
            route("regex", Kind::Regex("/v[0-9]+/.*".into()), vec![]),
        ],
    ))
    .unwrap();
    let name = |path: &str| {
        let req = http::Request::get(path).body(()).unwrap();
        s.route(&req).map(|(r, _)| r.meta.name.to_string())
    };
    assert_eq!(name("/api/admin").as_deref(), Some("exact"));
    assert_eq!(name("/api/users").as_deref(), Some("prefix"));
    assert_eq!(name("/api").as_deref(), Some("prefix"));
    assert_eq!(name("/apix"), None, "prefixes match whole segments");
    assert_eq!(name("/v2/x").as_deref(), Some("regex"));
    assert_eq!(name("/other"), None, "no route: 404");

    let none = ServerPolicy::from_api(&server(vec![], vec![])).unwrap();
    let req = http::Request::get("/anything").body(()).unwrap();
    let (r, _) = none.route(&req).unwrap();
    assert_eq!((&*r.meta.kind, &*r.meta.name), ("default", "default"));
}

#[test]
fn hosts_prefer_exact_then_the_longest_suffix() {
    let mut a = route("suffix", h::path_match::Kind::Prefix("/".into()), vec![]);
    a.hosts = vec![h::HostMatch {
        r#match: Some(h::host_match::Match::Suffix(h::host_match::Suffix {
            reverse_labels: vec!["com".into(), "example".into()],
        })),
    }];
    let mut b = route("exact", h::path_match::Kind::Prefix("/".into()), vec![]);
    b.hosts = vec![h::HostMatch {
        r#match: Some(h::host_match::Match::Exact("web.example.com".into())),
    }];
    let s = ServerPolicy::from_api(&server(vec![], vec![a, b])).unwrap();
    let name = |host: &str| {
        let req = http::Request::get("/")
            .header("host", host)
            .body(())
            .unwrap();
        s.route(&req).map(|(r, _)| r.meta.name.to_string())
    };
    assert_eq!(name("web.example.com:8080").as_deref(), Some("exact"));
    assert_eq!(name("API.example.com").as_deref(), Some("suffix"));
    assert_eq!(name("example.org"), None);
}

#[test]
fn bad_input_is_an_error_that_says_why() {
    let bad_regex = server(
        vec![],
        vec![route("r", h::path_match::Kind::Regex("(".into()), vec![])],
    );
    let e = ServerPolicy::from_api(&bad_regex).unwrap_err().to_string();
    assert!(e.contains("does not compile"), "{e}");
    let mut no_protocol = server(vec![], vec![]);
    no_protocol.protocol = None;
    assert!(ServerPolicy::from_api(&no_protocol).is_err());
    let no_nets = server(
        vec![authz(
            &[],
            &[],
            authn::Permit::Unauthenticated(Default::default()),
            "x",
        )],
        vec![],
    );
    assert!(ServerPolicy::from_api(&no_nets)
        .unwrap_err()
        .to_string()
        .contains("without networks"));
    let mut bad_len = authz(
        &["10.0.0.0/8"],
        &[],
        authn::Permit::Unauthenticated(Default::default()),
        "x",
    );
    bad_len.networks[0].net.as_mut().unwrap().prefix_len = 40;
    assert!(ServerPolicy::from_api(&server(vec![bad_len], vec![])).is_err());
}
