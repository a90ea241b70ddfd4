//! Binding listeners and accepting connections.

use crate::{Error, OrigDst};
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

/// Binds a listener with `SO_REUSEADDR` and a deep accept backlog.
pub fn bind(addr: SocketAddr) -> Result<TcpListener, Error> {
    let bind = || -> io::Result<TcpListener> {
        let sock = socket2::Socket::new(
            socket2::Domain::for_address(addr),
            socket2::Type::STREAM,
            Some(socket2::Protocol::TCP),
        )?;
        sock.set_reuse_address(true)?;
        sock.set_nonblocking(true)?;
        sock.bind(&addr.into())?;
        sock.listen(1024)?;
        TcpListener::from_std(sock.into())
    };
    bind().map_err(|source| Error::Bind { addr, source })
}

/// Accepts one connection, sets `TCP_NODELAY` and reads its original destination.
///
/// A failed original-destination lookup is logged and treated as "not redirected".
pub async fn accept(listener: &TcpListener, orig_dst: &dyn OrigDst) -> io::Result<Accepted> {
    let (socket, client) = listener.accept().await?;
    let local = socket.local_addr()?;
    if let Err(error) = socket.set_nodelay(true) {
        tracing::debug!(%client, %error, "failed to set TCP_NODELAY");
    }
    let orig_dst = orig_dst.orig_dst(&socket).unwrap_or_else(|error| {
        tracing::warn!(%client, %error, "failed to read the original destination");
        None
    });
    Ok(Accepted {
        socket,
        client,
        local,
        orig_dst,
    })
}
