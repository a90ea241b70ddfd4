//! Where a redirected client meant to go.

use std::{io, net::SocketAddr};
use tokio::net::TcpStream;

/// Looks up the original destination of an accepted connection.
///
/// The real implementation reads `SO_ORIGINAL_DST`; tests inject a fixed address.
pub trait OrigDst: Send + Sync + 'static {
    /// `Ok(None)` when the connection was not redirected.
    fn orig_dst(&self, socket: &TcpStream) -> io::Result<Option<SocketAddr>>;
}

/// Reads the address recorded by netfilter when iptables REDIRECTed the connection.
#[derive(Clone, Copy, Debug, Default)]
pub struct SoOriginalDst;

/// Never reports an original destination (every connection is taken as explicit).
#[derive(Clone, Copy, Debug, Default)]
pub struct NoOrigDst;

impl OrigDst for SoOriginalDst {
    fn orig_dst(&self, socket: &TcpStream) -> io::Result<Option<SocketAddr>> {
        let sock = socket2::SockRef::from(socket);
        // An IPv4 connection on a dual-stack socket has an IPv4 conntrack entry.
        let res = match crate::listen::canonical(socket.local_addr()?) {
            SocketAddr::V4(_) => sock.original_dst_v4(),
            SocketAddr::V6(_) => sock.original_dst_v6(),
        };
        match res {
            Ok(addr) => Ok(addr.as_socket().map(crate::listen::canonical)),
            // No conntrack entry, or no NAT on this socket: it was not redirected.
            Err(e)
                if matches!(
                    e.raw_os_error(),
                    Some(libc::ENOENT) | Some(libc::ENOPROTOOPT) | Some(libc::EOPNOTSUPP)
                ) =>
            {
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }
}

impl OrigDst for NoOrigDst {
    fn orig_dst(&self, _: &TcpStream) -> io::Result<Option<SocketAddr>> {
        Ok(None)
    }
}
