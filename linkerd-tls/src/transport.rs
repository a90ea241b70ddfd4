//! The inbound opaque-transport step: a peer proxy's header names the app port.

use crate::{HeaderError, TransportHeader};
use linkerd_proxy_transport::PrefixedIo;
use linkerd_stack::ThenCall;
use std::{
    task::{Context, Poll},
    time::Duration,
};
use tokio::io::AsyncRead;

/// A `tower` layer over a connection's `(target, io)`: when `expects(&target)` (a peer proxy
/// dialed the inbound port with the opaque-transport protocol), reads the transport header
/// within `timeout`; the inner service gets `(target, Some(header), io)` with the bytes read
/// past the header replayed, or `(target, None, io)` for other connections. A missing,
/// malformed or late header is the layer's error.
#[derive(Clone, Copy, Debug)]
pub struct TransportHeaderLayer<F> {
    timeout: Duration,
    expects: F,
}

/// The service made by [`TransportHeaderLayer`].
#[derive(Clone, Debug)]
pub struct ReadTransportHeader<S, F> {
    timeout: Duration,
    expects: F,
    inner: S,
}

impl<F> TransportHeaderLayer<F> {
    /// Reads headers within `timeout` on the connections `expects` names.
    pub fn new(timeout: Duration, expects: F) -> Self {
        Self { timeout, expects }
    }
}

impl<S, F: Clone> tower::Layer<S> for TransportHeaderLayer<F> {
    type Service = ReadTransportHeader<S, F>;

    fn layer(&self, inner: S) -> Self::Service {
        ReadTransportHeader {
            timeout: self.timeout,
            expects: self.expects.clone(),
            inner,
        }
    }
}

impl<T, I, S, F> tower::Service<(T, I)> for ReadTransportHeader<S, F>
where
    T: Send + 'static,
    I: AsyncRead + Unpin + Send + 'static,
    F: Fn(&T) -> bool,
    S: tower::Service<(T, Option<TransportHeader>, PrefixedIo<I>)> + Clone + Send + 'static,
    S::Error: From<HeaderError>,
    S::Future: Send,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = ThenCall<S, (T, Option<TransportHeader>, PrefixedIo<I>), HeaderError>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        // Readiness is checked on the clone that serves the connection.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, (target, mut io): (T, I)) -> Self::Future {
        let expects = (self.expects)(&target);
        let timeout = self.timeout;
        let reading = async move {
            let (header, io) = match expects {
                true => {
                    let (header, rest) = TransportHeader::read(&mut io, timeout).await?;
                    (Some(header), PrefixedIo::new(rest, io))
                }
                false => (None, PrefixedIo::new(bytes::Bytes::new(), io)),
            };
            Ok((target, header, io))
        };
        ThenCall::new(reading, self.inner.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::SessionProtocol;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tower::{Layer, ServiceExt};

    type Inner = (
        bool,
        Option<TransportHeader>,
        PrefixedIo<tokio::io::DuplexStream>,
    );

    /// Passes on the header and the payload.
    fn inner() -> impl tower::Service<
        Inner,
        Response = (Option<TransportHeader>, Vec<u8>),
        Error = HeaderError,
        Future = impl Send,
    > + Clone
           + Send
           + 'static {
        tower::service_fn(|(_, header, mut io): Inner| async move {
            let mut payload = Vec::new();
            io.read_to_end(&mut payload).await?;
            Ok::<_, HeaderError>((header, payload))
        })
    }

    fn layer() -> TransportHeaderLayer<fn(&bool) -> bool> {
        TransportHeaderLayer::new(Duration::from_secs(1), |expects: &bool| *expects)
    }

    #[tokio::test]
    async fn reads_the_header_and_replays_the_payload() {
        let header = TransportHeader {
            port: 8080,
            name: None,
            protocol: Some(SessionProtocol::Http1),
        };
        let (mut client, server) = tokio::io::duplex(1024);
        let mut bytes = header.encode();
        bytes.extend_from_slice(b"GET / HTTP/1.1\r\n\r\n");
        client.write_all(&bytes).await.unwrap();
        drop(client);
        let (got, payload) = layer()
            .layer(inner())
            .oneshot((true, server))
            .await
            .unwrap();
        assert_eq!(got, Some(header));
        assert_eq!(payload, b"GET / HTTP/1.1\r\n\r\n");
    }

    #[tokio::test]
    async fn other_connections_are_not_read() {
        let (mut client, server) = tokio::io::duplex(1024);
        client.write_all(b"not a header").await.unwrap();
        drop(client);
        let (got, payload) = layer()
            .layer(inner())
            .oneshot((false, server))
            .await
            .unwrap();
        assert_eq!(got, None);
        assert_eq!(payload, b"not a header");
    }

    #[tokio::test(start_paused = true)]
    async fn a_bad_or_late_header_is_the_error() {
        let (mut client, server) = tokio::io::duplex(1024);
        client.write_all(b"GET / HTTP/1.1\r\n\r\n").await.unwrap();
        let err = layer()
            .layer(inner())
            .oneshot((true, server))
            .await
            .unwrap_err();
        assert!(matches!(err, HeaderError::Preface), "{err}");

        let (_client, server) = tokio::io::duplex(1024);
        let err = layer()
            .layer(inner())
            .oneshot((true, server))
            .await
            .unwrap_err();
        assert!(matches!(err, HeaderError::Timeout(_)), "{err}");
    }
}
