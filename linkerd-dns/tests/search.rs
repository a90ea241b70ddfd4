//! Canonicalisation against a real DNS server on loopback (a minimal authoritative responder
//! written with hickory-proto): search domains expand short names, unknown names fail.

use hickory_proto::{
    op::{Message, MessageType, ResponseCode},
    rr::{rdata::A, Name, RData, Record, RecordType},
};
use hickory_resolver::config::{ConnectionConfig, NameServerConfig, ResolverConfig};
use linkerd_dns::{Canonicalizer, DnsConfig};
use std::{
    net::{Ipv4Addr, SocketAddr},
    str::FromStr,
};

/// Answers A queries for `known` names with 127.0.0.1; NXDOMAIN for everything else.
async fn dns_server(known: &'static [&'static str]) -> SocketAddr {
    let sock = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let addr = sock.local_addr().unwrap();
    tokio::spawn(async move {
        let mut buf = [0u8; 1500];
        loop {
            let Ok((n, peer)) = sock.recv_from(&mut buf).await else {
                return;
            };
            let Ok(query) = Message::from_vec(&buf[..n]) else {
                continue;
            };
            let mut rsp = Message::response(query.metadata.id, query.metadata.op_code);
            rsp.metadata.message_type = MessageType::Response;
            rsp.metadata.authoritative = true;
            rsp.metadata.recursion_desired = query.metadata.recursion_desired;
            rsp.metadata.recursion_available = true;
            let mut found = false;
            for q in &query.queries {
                rsp.add_query(q.clone());
                let name = q.name().to_ascii().to_lowercase();
                if known.contains(&name.as_str()) && q.query_type() == RecordType::A {
                    rsp.add_answer(Record::from_rdata(
                        q.name().clone(),
                        30,
                        RData::A(A(Ipv4Addr::LOCALHOST)),
                    ));
                    found = true;
                } else if known.contains(&name.as_str()) {
                    found = true; // exists, but no record of this type: NOERROR, empty
                }
            }
            if !found {
                rsp.metadata.response_code = ResponseCode::NXDomain;
            }
            if let Ok(bytes) = rsp.to_vec() {
                let _ = sock.send_to(&bytes, peer).await;
            }
        }
    });
    addr
}

#[tokio::test]
async fn search_domains_expand_short_names() {
    let server = dns_server(&["web.ns.svc.cluster.local.", "db.other.svc.cluster.local."]).await;
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
