//! A minimal authoritative DNS server for tests: answers `A` queries for known names, and
//! NXDOMAIN for the rest.

use hickory_proto::{
    op::{Message, MessageType, ResponseCode},
    rr::{rdata::A, RData, Record, RecordType},
};
use std::{collections::HashMap, net::Ipv4Addr, net::SocketAddr};

/// Serves `records` (fully qualified names with a trailing dot, lower case) on `addr` (UDP)
/// until the runtime stops; returns the bound address.
pub async fn serve(
    addr: SocketAddr,
    records: HashMap<String, Ipv4Addr>,
) -> std::io::Result<SocketAddr> {
    let sock = tokio::net::UdpSocket::bind(addr).await?;
    let addr = sock.local_addr()?;
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
                if let Some(ip) = records.get(&name) {
                    found = true;
                    if q.query_type() == RecordType::A {
                        rsp.add_answer(Record::from_rdata(q.name().clone(), 30, RData::A(A(*ip))));
                    }
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
    Ok(addr)
}
