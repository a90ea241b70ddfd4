//! Binding listeners and accepting connections.

use crate::{Error, OrigDst, SocketOptions};
use std::{io, net::SocketAddr};
use tokio::net::{TcpListener, TcpStream};

/// An accepted connection and the addresses that describe it.
#[derive(Debug)]
pub struct Accepted {
    /// The connection.
    pub socket: TcpStream,
    /// The client's address.
    pub client: SocketAddr,
    /// The listener address the connection arrived on.
    pub local: SocketAddr,
    /// Where the client meant to go, when iptables redirected it here.
    pub orig_dst: Option<SocketAddr>,
}

/// The accept backlog when none is configured.
pub const DEFAULT_BACKLOG: u32 = 1024;

/// Binds a listener with `SO_REUSEADDR` and an accept `backlog` (`LINKERD2_PROXY_*_TCP_LISTEN_BACKLOG`).
pub fn bind(addr: SocketAddr, backlog: u32) -> Result<TcpListener, Error> {
    let bind = || -> io::Result<TcpListener> {
        let sock = socket2::Socket::new(
            socket2::Domain::for_address(addr),
            socket2::Type::STREAM,
            Some(socket2::Protocol::TCP),
        )?;
        sock.set_reuse_address(true)?;
        sock.set_nonblocking(true)?;
        sock.bind(&addr.into())?;
        sock.listen(i32::try_from(backlog).unwrap_or(i32::MAX))?;
        TcpListener::from_std(sock.into())
    };
    bind().map_err(|source| Error::Bind { addr, source })
}

/// Accepts one connection, sets `TCP_NODELAY` and `opts`, and reads its original destination.
///
/// A failed original-destination lookup is logged and treated as "not redirected".
pub async fn accept(
    listener: &TcpListener,
    orig_dst: &dyn OrigDst,
    opts: SocketOptions,
) -> io::Result<Accepted> {
    let (socket, client) = listener.accept().await?;
    let local = socket.local_addr()?;
    opts.apply(&socket);
    let orig_dst = orig_dst.orig_dst(&socket).unwrap_or_else(|error| {
        linkerd_stack::rate_limited!(WARN, %client, %error, "failed to read the original destination");
        None
    });
    // An IPv4 client of a dual-stack listener (`[::]:4143`) is known by its IPv4 addresses,
    // so policy networks, metric labels and the own-listener checks see what it dialed.
    let (client, local, orig_dst) = (canonical(client), canonical(local), orig_dst.map(canonical));
    Ok(Accepted {
        socket,
        client,
        local,
        orig_dst,
    })
}

/// `addr`, with an IPv4-mapped IPv6 address (`[::ffff:10.0.0.1]:80`) as the IPv4 one.
pub fn canonical(addr: SocketAddr) -> SocketAddr {
    match addr {
        SocketAddr::V6(v6) => match v6.ip().to_ipv4_mapped() {
            Some(ip) => SocketAddr::from((ip, v6.port())),
            None => addr,
        },
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mapped_addresses_are_ipv4() {
        let c = |s: &str| canonical(s.parse().unwrap()).to_string();
        assert_eq!(c("[::ffff:10.0.0.1]:80"), "10.0.0.1:80");
        assert_eq!(c("10.0.0.1:80"), "10.0.0.1:80");
        assert_eq!(c("[fd00::1]:80"), "[fd00::1]:80");
        assert_eq!(c("[::1]:4140"), "[::1]:4140");
    }
}
