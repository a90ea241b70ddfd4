//! TCP socket options set on accepted and dialed connections.

use std::time::Duration;
use tokio::net::TcpStream;

/// Keep-alive and user-timeout settings for one direction's accepted or dialed sockets
/// (`LINKERD2_PROXY_{IN,OUT}BOUND_{ACCEPT,CONNECT}_{KEEPALIVE,USER_TIMEOUT}`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SocketOptions {
    /// `SO_KEEPALIVE` with this idle time (and probe interval) before the kernel probes a
    /// silent peer; `None` leaves keep-alive off.
    pub keepalive: Option<Duration>,
    /// `TCP_USER_TIMEOUT`: how long sent data may stay unacknowledged before the kernel
    /// drops the connection; `None` leaves the kernel's default.
    pub user_timeout: Option<Duration>,
}

impl SocketOptions {
    /// Sets `TCP_NODELAY` and these options on `socket`. A failure is logged, not fatal: the
    /// connection still works without them.
    pub fn apply(&self, socket: &TcpStream) {
        if let Err(error) = socket.set_nodelay(true) {
            tracing::debug!(%error, "failed to set TCP_NODELAY");
        }
        let sock = socket2::SockRef::from(socket);
        if let Some(idle) = self.keepalive {
            let ka = socket2::TcpKeepalive::new()
                .with_time(idle)
                .with_interval(idle);
            if let Err(error) = sock.set_tcp_keepalive(&ka) {
                tracing::debug!(%error, "failed to set SO_KEEPALIVE");
            }
        }
        if let Some(timeout) = self.user_timeout {
            if let Err(error) = sock.set_tcp_user_timeout(Some(timeout)) {
                tracing::debug!(%error, "failed to set TCP_USER_TIMEOUT");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn sets_keepalive_and_user_timeout() {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let s = TcpStream::connect(l.local_addr().unwrap()).await.unwrap();
        let opts = SocketOptions {
            keepalive: Some(Duration::from_secs(10)),
            user_timeout: Some(Duration::from_secs(30)),
        };
        opts.apply(&s);
        let sock = socket2::SockRef::from(&s);
        assert!(sock.keepalive().unwrap());
        assert_eq!(sock.tcp_keepalive_time().unwrap(), Duration::from_secs(10));
        assert_eq!(
            sock.tcp_keepalive_interval().unwrap(),
            Duration::from_secs(10)
        );
        assert_eq!(
            sock.tcp_user_timeout().unwrap(),
            Some(Duration::from_secs(30))
        );
        assert!(s.nodelay().unwrap());

        let plain = TcpStream::connect(l.local_addr().unwrap()).await.unwrap();
        SocketOptions::default().apply(&plain);
        let sock = socket2::SockRef::from(&plain);
        assert!(!sock.keepalive().unwrap(), "off unless configured");
        assert_eq!(sock.tcp_user_timeout().unwrap(), None);
    }
}
