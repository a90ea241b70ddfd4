//! The network validator: proves that an outbound connection from the pod is redirected to
//! the proxy's outbound port, before any proxy runs (CNI mode, where no init container of
//! ours wrote the rules).
//!
//! It listens on the proxy's outbound port, connects to an address nothing should answer, and
//! expects to read, on that connection, the random token its own listener writes. Only a
//! redirect makes those two the same connection.

use rand::{distr::Alphanumeric, RngExt};
use std::{net::SocketAddr, time::Duration};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
};

/// The exit code of every failure, as upstream's validator uses it.
pub const EXIT_FAILED: i32 = 95;

/// The token's length, before its newline.
const TOKEN_LEN: usize = 63;

/// Why the validation failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The listener could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        /// The listen address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The connection failed.
    #[error("cannot connect to {addr}: {source} (is the outbound redirect in place?)")]
    Connect {
        /// The connect address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// Reading the token failed.
    #[error("reading from {addr}: {source}")]
    Read {
        /// The connect address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// Something else answered: the connection was not redirected to the listener.
    #[error("{addr} answered {got:?}, not this validator's token: the connection was not redirected to {listen}")]
    WrongToken {
        /// The connect address.
        addr: SocketAddr,
        /// The listen address.
        listen: SocketAddr,
        /// What was read (at most a token's length and a newline).
        got: String,
    },
    /// The timeout elapsed.
    #[error("no answer within {0:?}: the connection was not redirected (or is blackholed)")]
    Timeout(Duration),
}

/// Validates that connecting to `connect` reaches `listen`, within `timeout`.
pub async fn validate(
    listen: SocketAddr,
    connect: SocketAddr,
    timeout: Duration,
) -> Result<(), Error> {
    let listener = TcpListener::bind(listen)
        .await
        .map_err(|source| Error::Listen {
            addr: listen,
            source,
        })?;
    let token: String = rand::rng()
        .sample_iter(Alphanumeric)
        .take(TOKEN_LEN)
        .map(char::from)
        .collect();
    let line = format!("{token}\n");
    let serve = {
        let line = line.clone();
        async move {
            loop {
                let Ok((mut conn, peer)) = listener.accept().await else {
                    continue;
                };
                tracing::debug!(%peer, "accepted; writing the token");
                let _ = conn.write_all(line.as_bytes()).await;
                let _ = conn.shutdown().await;
            }
        }
    };
    let check = async {
        tracing::debug!(%connect, "connecting");
        let mut conn = TcpStream::connect(connect)
            .await
            .map_err(|source| Error::Connect {
                addr: connect,
                source,
            })?;
        let mut got = Vec::with_capacity(line.len() + 1);
        // Bounded: one byte more than the token line shows a longer answer.
        (&mut conn)
            .take(line.len() as u64 + 1)
            .read_to_end(&mut got)
            .await
            .map_err(|source| Error::Read {
                addr: connect,
                source,
            })?;
        if got != line.as_bytes() {
            return Err(Error::WrongToken {
                addr: connect,
                listen,
                got: String::from_utf8_lossy(&got).into_owned(),
            });
        }
        Ok(())
    };
    tokio::select! {
        res = tokio::time::timeout(timeout, check) => res.map_err(|_| Error::Timeout(timeout))?,
        () = serve => unreachable!("the accept loop never ends"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Connecting straight to the listener is what a redirect looks like.
    #[tokio::test]
    async fn its_own_listener_validates() {
        let addr: SocketAddr = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap()
        };
        validate(addr, addr, Duration::from_secs(5)).await.unwrap();
    }

    #[tokio::test]
    async fn another_server_fails() {
        let other = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let other_addr = other.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut c, _) = other.accept().await.unwrap();
            c.write_all(b"hello\n").await.unwrap();
        });
        let err = validate(
            "127.0.0.1:0".parse().unwrap(),
            other_addr,
            Duration::from_secs(5),
        )
        .await
        .unwrap_err();
        assert!(matches!(err, Error::WrongToken { .. }), "{err}");
        assert!(err.to_string().contains("not redirected"), "{err}");
    }
}
