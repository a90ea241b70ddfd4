//! Dialing a target.

use crate::{Error, SocketOptions};
use std::{io, net::SocketAddr, time::Duration};
use tokio::net::TcpStream;

/// Connects to `addr` within `timeout`, with `TCP_NODELAY` and `opts` set.
pub async fn connect(
    addr: SocketAddr,
    timeout: Duration,
    opts: SocketOptions,
) -> Result<TcpStream, Error> {
    let socket = match tokio::time::timeout(timeout, TcpStream::connect(addr)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) if e.kind() == io::ErrorKind::ConnectionRefused => {
            return Err(Error::ConnectRefused { addr })
        }
        Ok(Err(source)) => return Err(Error::Connect { addr, source }),
        Err(_) => return Err(Error::ConnectTimeout { addr, timeout }),
    };
    opts.apply(&socket);
    Ok(socket)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn refused_is_reported_as_refused() {
        // Bound but never listening: the port refuses connections, and stays reserved.
        let socket =
            socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
        socket.bind(&any.into()).unwrap();
        let addr = socket.local_addr().unwrap().as_socket().unwrap();
        let err = connect(addr, Duration::from_secs(1), SocketOptions::default())
            .await
            .unwrap_err();
        assert!(matches!(err, Error::ConnectRefused { .. }), "{err}");
        assert_eq!(err.to_string(), format!("connect to {addr} refused"));
    }

    #[tokio::test]
    async fn connects_with_nodelay() {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let s = connect(
            l.local_addr().unwrap(),
            Duration::from_secs(1),
            SocketOptions::default(),
        )
        .await
        .unwrap();
        assert!(s.nodelay().unwrap());
    }
}
