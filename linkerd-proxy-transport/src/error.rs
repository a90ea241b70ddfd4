use std::{io, net::SocketAddr, time::Duration};

/// A transport failure, phrased so an operator can act on it.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Binding a listener failed (address in use, not local, no permission).
    #[error("failed to bind {addr}: {source}")]
    Bind {
        /// The listener's address.
        addr: SocketAddr,
        /// What failed.
        #[source]
        source: io::Error,
    },

    /// The target actively refused the connection.
    #[error("connect to {addr} refused")]
    ConnectRefused {
        /// The target.
        addr: SocketAddr,
    },

    /// The target did not answer within the connect timeout.
    #[error("connect to {addr} timed out after {timeout:?}")]
    ConnectTimeout {
        /// The target.
        addr: SocketAddr,
        /// The connect timeout.
        timeout: Duration,
    },

    /// Any other connect failure (unreachable network, reset during handshake...).
    #[error("connect to {addr} failed: {source}")]
    Connect {
        /// The target.
        addr: SocketAddr,
        /// What failed.
        #[source]
        source: io::Error,
    },
}

/// The symbolic name of an I/O error's errno (e.g. `ECONNRESET`), for the `errno` metric label.
pub fn errno_name(e: &io::Error) -> Option<&'static str> {
    let code = e.raw_os_error()?;
    Some(match code {
        libc::ECONNRESET => "ECONNRESET",
        libc::ECONNREFUSED => "ECONNREFUSED",
        libc::ECONNABORTED => "ECONNABORTED",
        libc::ETIMEDOUT => "ETIMEDOUT",
        libc::EPIPE => "EPIPE",
        libc::EHOSTUNREACH => "EHOSTUNREACH",
        libc::ENETUNREACH => "ENETUNREACH",
        libc::ENETDOWN => "ENETDOWN",
        libc::EADDRINUSE => "EADDRINUSE",
        libc::EADDRNOTAVAIL => "EADDRNOTAVAIL",
        libc::EMFILE => "EMFILE",
        libc::ENFILE => "ENFILE",
        libc::ENOBUFS => "ENOBUFS",
        libc::ENOMEM => "ENOMEM",
        _ => "UNKNOWN",
    })
}
