//! Reading a connection's first bytes with a bound and a timeout.

use crate::{classify, Classification, PrefixedIo, Protocol};
use bytes::BytesMut;
use std::{
    future::Future,
    io,
    pin::Pin,
    task::{Context, Poll},
    time::Duration,
};
use tokio::io::{AsyncRead, AsyncReadExt};

/// How detection reads: at most `capacity` bytes, for at most `timeout`.
#[derive(Clone, Copy, Debug)]
pub struct DetectParams {
    pub timeout: Duration,
    pub capacity: usize,
}

/// What detection found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Detected {
    pub protocol: Protocol,
    /// True when the timeout expired before the bytes decided (the result is then opaque).
    pub timed_out: bool,
}

/// Detection failed because the connection failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("reading the connection during protocol detection failed: {0}")]
    Read(#[from] io::Error),
}

/// A `tower` layer that detects the protocol, then calls the inner service with the result
/// and the replaying I/O.
#[derive(Clone, Copy, Debug)]
pub struct DetectLayer {
    params: DetectParams,
}

/// The service made by [`DetectLayer`].
#[derive(Clone, Debug)]
pub struct Detect<S> {
    params: DetectParams,
    inner: S,
}

impl Default for DetectParams {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(10),
            capacity: 1024,
        }
    }
}

/// Reads from `io` until the classifier decides, the buffer is full, the peer stops sending
/// (EOF) or the timeout expires, then returns the protocol and an I/O that replays every byte.
pub async fn detect<I>(mut io: I, params: DetectParams) -> Result<(Detected, PrefixedIo<I>), Error>
where
    I: AsyncRead + Unpin,
{
    let mut buf = BytesMut::with_capacity(params.capacity);
    let read = async {
        loop {
            // `read_buf` never grows the buffer past its capacity when limited with `take`.
            let room = params.capacity - buf.len();
            let n = (&mut io).take(room as u64).read_buf(&mut buf).await?;
            let verdict = classify(&buf);
            match verdict {
                Classification::Done(p) => return Ok::<_, io::Error>(p),
                Classification::NeedMore if n == 0 || buf.len() >= params.capacity => {
                    return Ok(Protocol::Opaque)
                }
                Classification::NeedMore => {}
            }
        }
    };
    let detected = match tokio::time::timeout(params.timeout, read).await {
        Ok(res) => Detected {
            protocol: res?,
            timed_out: false,
        },
        Err(_) => Detected {
            protocol: Protocol::Opaque,
            timed_out: true,
        },
    };
    Ok((detected, PrefixedIo::new(buf.freeze(), io)))
}

impl DetectLayer {
    /// A layer detecting with `params`.
    pub fn new(params: DetectParams) -> Self {
        Self { params }
    }
}

impl<S> tower::Layer<S> for DetectLayer {
    type Service = Detect<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Detect {
            params: self.params,
            inner,
        }
    }
}

impl<I, S> tower::Service<I> for Detect<S>
where
    I: AsyncRead + Unpin + Send + 'static,
    S: tower::Service<(Detected, PrefixedIo<I>)> + Clone + Send + 'static,
    S::Error: From<Error>,
    S::Future: Send,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        // Readiness is checked on the clone that serves the connection.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, io: I) -> Self::Future {
        let params = self.params;
        let mut inner = self.inner.clone();
        Box::pin(async move {
            let detected = detect(io, params).await?;
            tower::ServiceExt::ready(&mut inner).await?;
            inner.call(detected).await
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    const PARAMS: DetectParams = DetectParams {
        timeout: Duration::from_secs(10),
        capacity: 1024,
    };

    async fn read_all<I: AsyncRead + Unpin>(mut io: I) -> Vec<u8> {
        let mut v = Vec::new();
        io.read_to_end(&mut v).await.unwrap();
        v
    }

    #[tokio::test]
    async fn split_http1_is_detected_and_replayed() {
        let (client, server) = tokio::io::duplex(4096);
        let task = tokio::spawn(async move {
            let mut client = client;
            client.write_all(b"GE").await.unwrap();
            tokio::task::yield_now().await;
            client.write_all(b"T / HTTP/1.1\r\n").await.unwrap();
            client.write_all(b"Host: a\r\n\r\n").await.unwrap();
            client.shutdown().await.unwrap();
            client
        });
        let (d, io) = detect(server, PARAMS).await.unwrap();
        assert_eq!(d.protocol, Protocol::Http1);
        let _client = task.await.unwrap();
        assert_eq!(read_all(io).await, b"GET / HTTP/1.1\r\nHost: a\r\n\r\n");
    }

    #[tokio::test(start_paused = true)]
    async fn timeout_is_opaque_and_keeps_bytes() {
        let (mut client, server) = tokio::io::duplex(4096);
        client.write_all(b"GET /").await.unwrap();
        let (d, mut io) = detect(server, PARAMS).await.unwrap();
        assert_eq!(
            d,
            Detected {
                protocol: Protocol::Opaque,
                timed_out: true
            }
        );
        client.write_all(b" more").await.unwrap();
        drop(client);
        let mut v = Vec::new();
        io.read_to_end(&mut v).await.unwrap();
        assert_eq!(v, b"GET / more");
    }

    #[tokio::test]
    async fn full_buffer_is_opaque_and_nothing_is_lost() {
        let (mut client, server) = tokio::io::duplex(8192);
        // A request line longer than the buffer: still undecided when the buffer is full.
        let mut data = b"GET /".to_vec();
        data.extend(std::iter::repeat_n(b'a', 3000));
        client.write_all(&data).await.unwrap();
        drop(client);
        let (d, io) = detect(server, PARAMS).await.unwrap();
        assert_eq!(d.protocol, Protocol::Opaque);
        assert!(!d.timed_out);
        assert_eq!(io.prefix().len(), 1024);
        assert_eq!(read_all(io).await, data);
    }

    #[tokio::test]
    async fn eof_before_any_byte_is_opaque() {
        let (client, server) = tokio::io::duplex(64);
        drop(client);
        let (d, io) = detect(server, PARAMS).await.unwrap();
        assert_eq!(d.protocol, Protocol::Opaque);
        assert!(read_all(io).await.is_empty());
    }

    #[tokio::test]
    async fn layer_passes_the_result_on() {
        use tower::{Layer, Service, ServiceExt};
        let inner = tower::service_fn(
            |(d, io): (Detected, PrefixedIo<tokio::io::DuplexStream>)| async move {
                Ok::<_, Error>((d.protocol, io.prefix().to_vec()))
            },
        );
        let mut svc = DetectLayer::new(PARAMS).layer(inner);
        let (mut client, server) = tokio::io::duplex(64);
        client
            .write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
            .await
            .unwrap();
        let (p, prefix) = svc.ready().await.unwrap().call(server).await.unwrap();
        assert_eq!(p, Protocol::Http2);
        assert_eq!(prefix, b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n");
    }
}
