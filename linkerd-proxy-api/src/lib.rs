//! The Linkerd proxy API, generated from the `.proto` files in `proto/`: the `Destination`,
//! `Identity`, `InboundServerPolicies` and `OutboundPolicies` services (client and server), the opaque-transport header, and the `net`,
//! `http_types` and `meta` messages they use, with Linkerd's packages and field numbers, so an
//! existing Linkerd control plane can serve this proxy. Conversions between `net::TcpAddress` and `SocketAddr` live in [`net`].
//!
//! It holds no logic beyond those conversions and [`client::ControlChannel`], the metered
//! channel every control-plane client speaks through: clients and servers are in their own
//! crates.
#![forbid(unsafe_code)]
#![allow(clippy::doc_overindented_list_items, clippy::large_enum_variant)]
// Generated code carries the .proto files' comments, where they have any.
#![allow(missing_docs)]

pub mod client;

/// `io.linkerd.proxy.destination`: endpoint and profile discovery.
pub mod destination {
    tonic::include_proto!("io.linkerd.proxy.destination");
}

/// `io.linkerd.proxy.identity`: certificates for the proxy's identity.
pub mod identity {
    tonic::include_proto!("io.linkerd.proxy.identity");
}

/// `io.linkerd.proxy.inbound`: per-port inbound server policy.
pub mod inbound {
    tonic::include_proto!("io.linkerd.proxy.inbound");
}

/// `io.linkerd.proxy.outbound`: outbound traffic policy (routes, splits, timeouts, retries,
/// failure accrual) per target.
pub mod outbound {
    tonic::include_proto!("io.linkerd.proxy.outbound");
}

/// `io.linkerd.proxy.opaque_route`: filters of opaque and TLS routes.
pub mod opaque_route {
    tonic::include_proto!("io.linkerd.proxy.opaque_route");
}

/// `io.linkerd.proxy.tls_route`: SNI matches of TLS routes.
pub mod tls_route {
    tonic::include_proto!("io.linkerd.proxy.tls_route");
}

/// `io.linkerd.proxy.http_route`: HTTP route matches and filters.
pub mod http_route {
    tonic::include_proto!("io.linkerd.proxy.http_route");
}

/// `io.linkerd.proxy.grpc_route`: gRPC route matches and filters.
pub mod grpc_route {
    tonic::include_proto!("io.linkerd.proxy.grpc_route");
}

/// `transport.l5d.io`: the opaque-transport header one proxy sends another inside mTLS.
pub mod opaque_transport {
    tonic::include_proto!("transport.l5d.io");
}

/// `io.linkerd.proxy.http_types`.
pub mod http_types {
    tonic::include_proto!("io.linkerd.proxy.http_types");
}

/// `io.linkerd.proxy.meta`.
pub mod meta {
    tonic::include_proto!("io.linkerd.proxy.meta");
}

/// `io.linkerd.proxy.net`: addresses.
pub mod net {
    tonic::include_proto!("io.linkerd.proxy.net");

    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

    impl From<SocketAddr> for TcpAddress {
        fn from(a: SocketAddr) -> Self {
            TcpAddress {
                ip: Some(a.ip().into()),
                port: u32::from(a.port()),
            }
        }
    }

    impl IpAddress {
        /// The address, or `None` when the message lacks one.
        pub fn to_ip(&self) -> Option<IpAddr> {
            Some(match self.ip.as_ref()? {
                ip_address::Ip::Ipv4(v4) => IpAddr::V4(Ipv4Addr::from(*v4)),
                ip_address::Ip::Ipv6(v6) => IpAddr::V6(Ipv6Addr::from(
                    (u128::from(v6.first) << 64) | u128::from(v6.last),
                )),
            })
        }
    }

    impl From<IpAddr> for IpAddress {
        fn from(ip: IpAddr) -> Self {
            let ip = match ip {
                IpAddr::V4(v4) => ip_address::Ip::Ipv4(u32::from(v4)),
                IpAddr::V6(v6) => {
                    let n = u128::from(v6);
                    ip_address::Ip::Ipv6(IPv6 {
                        first: (n >> 64) as u64,
                        last: n as u64,
                    })
                }
            };
            IpAddress { ip: Some(ip) }
        }
    }

    impl TcpAddress {
        /// The socket address, or `None` when the message lacks an IP or has a port above 65535.
        pub fn to_socket_addr(&self) -> Option<SocketAddr> {
            let port = u16::try_from(self.port).ok()?;
            Some(SocketAddr::new(self.ip.as_ref()?.to_ip()?, port))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::net::TcpAddress;
    use std::net::SocketAddr;

    #[test]
    fn tcp_address_round_trips() {
        for a in [
            "10.1.2.3:8080",
            "[2001:db8::1]:443",
            "0.0.0.0:0",
            "[::1]:65535",
        ] {
            let a: SocketAddr = a.parse().unwrap();
            assert_eq!(TcpAddress::from(a).to_socket_addr(), Some(a));
        }
        let bad = TcpAddress { ip: None, port: 80 };
        assert_eq!(bad.to_socket_addr(), None);
        let mut big = TcpAddress::from("10.0.0.1:80".parse::<SocketAddr>().unwrap());
        big.port = 70000;
        assert_eq!(big.to_socket_addr(), None);
    }
}
