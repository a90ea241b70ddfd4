//! The policy's truth tables, and the connection steps that apply it.

use super::*;

const ID: &str = "app.ns.serviceaccount.identity.linkerd.cluster.local";

fn policy(default: DefaultPolicy) -> Policy {
    Policy {
        default,
        cluster_networks: parse_networks("10.0.0.0/8,fd00::/8").unwrap(),
        require_identity: PortSet::parse("9000").unwrap(),
        require_tls: PortSet::parse("9001-9002").unwrap(),
    }
}

/// Every client kind, from inside and outside the cluster networks.
fn clients() -> Vec<(&'static str, IpAddr, ClientAuth)> {
    let id = ClientAuth::Authenticated(Id::parse(ID).unwrap());
    let inside: IpAddr = "10.1.2.3".parse().unwrap();
    let outside: IpAddr = "192.0.2.1".parse().unwrap();
    vec![
        ("in/plain", inside, ClientAuth::Plaintext),
        ("in/tls", inside, ClientAuth::Tls),
        ("in/id", inside, id.clone()),
        ("out/plain", outside, ClientAuth::Plaintext),
        ("out/tls", outside, ClientAuth::Tls),
        ("out/id", outside, id),
    ]
}

fn allowed(p: &Policy, port: u16) -> Vec<&'static str> {
    clients()
        .into_iter()
        .filter(|(_, ip, auth)| !matches!(p.check(port, *ip, auth), Decision::Deny(_)))
        .map(|(name, _, _)| name)
        .collect()
}

#[test]
fn every_default_policy() {
    use DefaultPolicy::*;
    let all = vec![
        "in/plain",
        "in/tls",
        "in/id",
        "out/plain",
        "out/tls",
        "out/id",
    ];
    assert_eq!(allowed(&policy(AllUnauthenticated), 80), all);
    assert_eq!(allowed(&policy(AllAuthenticated), 80), ["in/id", "out/id"]);
    assert_eq!(allowed(&policy(ClusterAuthenticated), 80), ["in/id"]);
    assert_eq!(
        allowed(&policy(ClusterUnauthenticated), 80),
        ["in/plain", "in/tls", "in/id"]
    );
    assert!(allowed(&policy(Deny), 80).is_empty());
    assert_eq!(allowed(&policy(Audit), 80), all);
}

#[test]
fn reasons() {
    let p = policy(DefaultPolicy::ClusterAuthenticated);
    let outside = "192.0.2.1".parse().unwrap();
    let inside = "10.0.0.1".parse().unwrap();
    assert_eq!(
        p.check(80, outside, &ClientAuth::Plaintext),
        Decision::Deny(Denial {
            policy: "cluster-authenticated",
            reason: DenyReason::OutsideClusterNetworks
        })
    );
    assert_eq!(
        p.check(80, inside, &ClientAuth::Tls),
        Decision::Deny(Denial {
            policy: "cluster-authenticated",
            reason: DenyReason::Unauthenticated
        })
    );
}

#[test]
fn audit_flags_what_all_authenticated_would_refuse() {
    let p = policy(DefaultPolicy::Audit);
    let ip = "10.0.0.1".parse().unwrap();
    assert_eq!(
        p.check(80, ip, &ClientAuth::Tls),
        Decision::Audit(Denial {
            policy: "audit",
            reason: DenyReason::Unauthenticated
        })
    );
    let id = ClientAuth::Authenticated(Id::parse(ID).unwrap());
    assert_eq!(p.check(80, ip, &id), Decision::Allow);
}

#[test]
fn port_overrides_win_over_the_default() {
    use DefaultPolicy::*;
    for default in [AllUnauthenticated, Deny, Audit, ClusterUnauthenticated] {
        let p = policy(default);
        assert_eq!(allowed(&p, 9000), ["in/id", "out/id"], "{default:?}");
        assert_eq!(
            allowed(&p, 9002),
            ["in/tls", "in/id", "out/tls", "out/id"],
            "{default:?}"
        );
    }
}

#[test]
fn parses_policies_and_networks() {
    assert_eq!("Deny".parse(), Ok(DefaultPolicy::Deny));
    assert!("allow".parse::<DefaultPolicy>().is_err());
    let n = parse_networks(DEFAULT_CLUSTER_NETWORKS).unwrap();
    assert_eq!(n.len(), 5);
    assert_eq!(
        parse_networks("10.1.2.3, ::1").unwrap(),
        vec![
            "10.1.2.3/32".parse::<IpNet>().unwrap(),
            "::1/128".parse().unwrap()
        ]
    );
    assert!(parse_networks("10.0.0.0/33").is_err());
    assert!(parse_networks("example.com").is_err());
}

fn inbound_tls(auth: ClientAuth, opaque: bool) -> InboundTls {
    let tcp = linkerd_proxy_transport::TcpMetrics::register(&mut Default::default());
    let label = TlsLabel::NoIdentity(linkerd_proxy_transport::NoTlsReason::NotProvidedByRemote);
    let (_, metrics) = tcp.open_deferred(
        linkerd_proxy_transport::Direction::Inbound,
        linkerd_proxy_transport::Peer::Src,
        "10.0.0.1:8080".parse().unwrap(),
        label.clone(),
    );
    InboundTls {
        conn: super::super::tls::InboundConn {
            client: "192.0.2.1:40000".parse().unwrap(),
            orig_dst: "10.0.0.1:8080".parse().unwrap(),
            to_listener: false,
            look_for_tls: true,
            server_first: None,
        },
        label,
        auth,
        transport: false,
        opaque,
        metrics,
    }
}

#[tokio::test]
async fn decide_takes_the_port_and_protocol_a_header_names() {
    let mut decide = Decide::new(
        Arc::new(policy(DefaultPolicy::AllUnauthenticated)),
        PortSet::parse("5432").unwrap(),
        None,
    );
    let header = TransportHeader {
        port: 9000,
        name: None,
        protocol: Some(SessionProtocol::Http2),
    };
    let tls = inbound_tls(ClientAuth::Plaintext, false);
    let (t, ()) = decide.check((tls.clone(), Some(header), ())).await.unwrap();
    assert_eq!((t.port, t.protocol), (9000, Some(Protocol::Http2)));
    assert!(
        matches!(t.decision, Decision::Deny(_)),
        "9000 requires an identity"
    );

    let (t, ()) = decide.check((tls, None, ())).await.unwrap();
    assert_eq!((t.port, t.protocol), (8080, None), "detected");
    assert_eq!(t.decision, Decision::Allow);

    let (t, ()) = decide
        .check((inbound_tls(ClientAuth::Plaintext, true), None, ()))
        .await
        .unwrap();
    assert_eq!(t.protocol, Some(Protocol::Opaque), "the app's own TLS");
}

fn target(decision: Decision) -> InboundTarget {
    InboundTarget {
        client: "192.0.2.1:40000".parse().unwrap(),
        target: "10.0.0.1:8080".parse().unwrap(),
        port: 8080,
        label: TlsLabel::Opaque,
        auth: ClientAuth::Plaintext,
        decision,
        default_policy: "deny",
        protocol: None,
        server: None,
        detect_timeout: None,
        server_first: None,
    }
}

fn detected(protocol: Protocol) -> Detected {
    Detected {
        protocol,
        timed_out: false,
        server_first: false,
    }
}

#[test]
fn authorize_closes_a_refused_tcp_client_and_hands_http_its_denial() {
    let mut reg = Registry::default();
    let mut authorize = Authorize::new(AuthzMetrics::register(&mut reg));
    let denial = Denial {
        policy: "deny",
        reason: DenyReason::DenyAll,
    };
    let err = authorize
        .check((
            target(Decision::Deny(denial)),
            detected(Protocol::Opaque),
            (),
        ))
        .unwrap_err();
    assert!(
        err.to_string().contains("refusing the client's connection"),
        "{err}"
    );
    assert!(reg.encode().contains(
        "inbound_tcp_authz_deny_total{target_addr=\"10.0.0.1:8080\",target_ip=\"10.0.0.1\",target_port=\"8080\",srv_group=\"\",srv_kind=\"default\",srv_name=\"deny\",srv_port=\"8080\",tls=\"opaque\"} 1"
    ));

    // Audited TCP goes on, counted.
    let (a, ()) = authorize
        .check((
            target(Decision::Audit(denial)),
            detected(Protocol::Opaque),
            (),
        ))
        .unwrap();
    assert!(a.authz.is_none());
    assert!(reg.encode().contains(
        "inbound_tcp_authz_audit_total{target_addr=\"10.0.0.1:8080\",target_ip=\"10.0.0.1\",target_port=\"8080\",srv_group=\"\",srv_kind=\"default\",srv_name=\"deny\",srv_port=\"8080\",tls=\"opaque\"} 1"
    ));

    // HTTP: the decision goes to the requests, counted there.
    let (a, ()) = authorize
        .check((
            target(Decision::Deny(denial)),
            detected(Protocol::Http1),
            (),
        ))
        .unwrap();
    let authz = a.authz.expect("each request is refused");
    assert!(authz.denial.is_some());
    assert_eq!(
        authz.counter.value(),
        0,
        "counted per request, not per connection"
    );
    let (a, ()) = authorize
        .check((target(Decision::Allow), detected(Protocol::Http2), ()))
        .unwrap();
    let allowed = a.authz.expect("allowed requests are counted");
    assert!(allowed.denial.is_none());
}

#[test]
fn a_refused_client_is_not_dialed_for_before_it_speaks() {
    let denial = Denial {
        policy: "deny",
        reason: DenyReason::DenyAll,
    };
    assert!(!target(Decision::Deny(denial)).allows_tcp());
    assert!(target(Decision::Audit(denial)).allows_tcp());
    assert!(target(Decision::Allow).allows_tcp());
}
