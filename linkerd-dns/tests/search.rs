//! Canonicalisation against a real DNS server on loopback (a minimal authoritative responder
//! written with hickory-proto): search domains expand short names, unknown names fail.

use hickory_resolver::{
    config::{ConnectionConfig, NameServerConfig, ResolverConfig},
    proto::rr::Name,
};
use linkerd_dns::{Canonicalizer, DnsConfig};
use std::{collections::HashMap, net::Ipv4Addr, str::FromStr};

#[tokio::test]
async fn search_domains_expand_short_names() {
    let records = HashMap::from([
        ("web.ns.svc.cluster.local.".to_string(), Ipv4Addr::LOCALHOST),
        (
            "db.other.svc.cluster.local.".to_string(),
            Ipv4Addr::LOCALHOST,
        ),
    ]);
    let server = linkerd_dns::test_server::serve("127.0.0.1:0".parse().unwrap(), records)
        .await
        .unwrap();
    let mut udp = ConnectionConfig::udp();
    udp.port = server.port();
    let config = ResolverConfig::from_parts(
        None,
        [
            "ns.svc.cluster.local.",
            "svc.cluster.local.",
            "cluster.local.",
        ]
        .iter()
        .map(|s| Name::from_str(s).unwrap())
        .collect(),
        vec![NameServerConfig::new(server.ip(), true, vec![udp])],
    );
    // Kubernetes pods use ndots:5, so short names are searched first.
    let dns = Canonicalizer::from_config(config, 5, DnsConfig::default()).unwrap();

    assert_eq!(
        dns.canonicalize("web").await.unwrap(),
        "web.ns.svc.cluster.local."
    );
    assert_eq!(
        dns.canonicalize("db.other").await.unwrap(),
        "db.other.svc.cluster.local."
    );
    assert_eq!(
        dns.canonicalize("web.ns.svc.cluster.local.").await.unwrap(),
        "web.ns.svc.cluster.local."
    );
    let err = dns.canonicalize("nope").await.unwrap_err();
    assert!(err.to_string().contains("nope"), "{err}");
}
