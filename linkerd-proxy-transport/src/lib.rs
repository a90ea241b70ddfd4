//! Listeners, original destinations, connecting with a timeout, and byte counting.
//!
//! This crate owns everything that touches a raw TCP socket: binding a listener, accepting a
//! connection and recording where the client meant to go ([`OrigDst`], `SO_ORIGINAL_DST` behind
//! iptables REDIRECT), dialing a target with a timeout and `TCP_NODELAY`, and counting the bytes
//! that cross a connection ([`Metered`], [`TcpMetrics`]), and replaying bytes read before a
//! connection is handed on ([`PrefixedIo`]).
//!
//! It does not know about protocols: detection, TLS and HTTP sit above it.
#![forbid(unsafe_code)]

/// `AsyncWrite` for an I/O wrapper `$ty<I>` (a `pin_project` struct whose pinned field
/// `inner` is the wrapped I/O) that writes straight through to `inner`.
#[macro_export]
macro_rules! write_through_inner {
    ($ty:ident) => {
        impl<I: ::tokio::io::AsyncWrite> ::tokio::io::AsyncWrite for $ty<I> {
            fn poll_write(
                self: ::std::pin::Pin<&mut Self>,
                cx: &mut ::std::task::Context<'_>,
                buf: &[u8],
            ) -> ::std::task::Poll<::std::io::Result<usize>> {
                self.project().inner.poll_write(cx, buf)
            }

            fn poll_write_vectored(
                self: ::std::pin::Pin<&mut Self>,
                cx: &mut ::std::task::Context<'_>,
                bufs: &[::std::io::IoSlice<'_>],
            ) -> ::std::task::Poll<::std::io::Result<usize>> {
                self.project().inner.poll_write_vectored(cx, bufs)
            }

            fn is_write_vectored(&self) -> bool {
                self.inner.is_write_vectored()
            }

            fn poll_flush(
                self: ::std::pin::Pin<&mut Self>,
                cx: &mut ::std::task::Context<'_>,
            ) -> ::std::task::Poll<::std::io::Result<()>> {
                self.project().inner.poll_flush(cx)
            }

            fn poll_shutdown(
                self: ::std::pin::Pin<&mut Self>,
                cx: &mut ::std::task::Context<'_>,
            ) -> ::std::task::Poll<::std::io::Result<()>> {
                self.project().inner.poll_shutdown(cx)
            }
        }
    };
}

mod connect;
mod error;
mod listen;
mod metered;
mod metrics;
mod options;
mod orig_dst;
mod prefixed;

pub use self::connect::connect;
pub use self::error::{errno_name, Error};
pub use self::listen::{accept, bind, canonical, Accepted, DEFAULT_BACKLOG};
pub use self::metered::Metered;
pub use self::metrics::{
    ConnLabeller, Direction, NoTlsReason, Peer, TcpConnMetrics, TcpMetrics, TlsLabel,
};
pub use self::options::SocketOptions;
pub use self::orig_dst::{NoOrigDst, OrigDst, SoOriginalDst};
pub use self::prefixed::PrefixedIo;
