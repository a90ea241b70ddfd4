//! The opaque TCP forward: dial, then copy bytes both ways.

use std::{
    future::Future,
    pin::Pin,
    task::{Context, Poll},
};
use tokio::io::{AsyncRead, AsyncWrite};
use tower::{Service, ServiceExt};

/// The copy buffer for each direction of a forwarded connection.
const COPY_BUF: usize = 16 * 1024;

/// A service over a client connection: dials with `C` (a fixed target, or a balancer over a
/// service's endpoints), then copies between the two until both sides have closed. Each
/// side's EOF is passed on as a half-close, so protocols that shut down writing work.
///
/// A failed dial is the service's error; a connection that fails while copying is logged and
/// ends the copy.
#[derive(Clone, Debug)]
pub struct Forward<C> {
    connect: C,
}

impl<C> Forward<C> {
    /// Forwards to what `connect` dials.
    pub fn new(connect: C) -> Self {
        Self { connect }
    }
}

impl<C, I, U> Service<I> for Forward<C>
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    C: Service<(), Response = U> + Clone + Send + 'static,
    C::Future: Send,
    U: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    type Response = ();
    type Error = C::Error;
    type Future = Pin<Box<dyn Future<Output = Result<(), C::Error>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), C::Error>> {
        // Readiness (e.g. a ready endpoint) is awaited per connection, in `call`.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, mut client: I) -> Self::Future {
        let connect = self.connect.clone();
        Box::pin(async move {
            let upstream = connect.oneshot(()).await?;
            copy(&mut client, upstream).await;
            Ok(())
        })
    }
}

/// Copies between a client and a connection already made (as [`Forward`] does after its dial)
/// until both sides have closed; a failure is logged and ends the copy.
pub async fn copy<I, U>(client: &mut I, mut upstream: U)
where
    I: AsyncRead + AsyncWrite + Unpin,
    U: AsyncRead + AsyncWrite + Unpin,
{
    let copied =
        tokio::io::copy_bidirectional_with_sizes(client, &mut upstream, COPY_BUF, COPY_BUF);
    match copied.await {
        Ok((sent, received)) => tracing::debug!(sent, received, "connection closed"),
        Err(error) => linkerd_stack::rate_limited!(INFO, %error, "connection failed"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};

    /// A dialer handing out the one end of a pipe (once).
    fn dial_once(
        upstream: DuplexStream,
    ) -> impl Service<(), Response = DuplexStream, Error = &'static str, Future = impl Send>
           + Clone
           + Send
           + 'static {
        let upstream = std::sync::Arc::new(parking_lot::Mutex::new(Some(upstream)));
        tower::service_fn(move |()| {
            let io = upstream.lock().take();
            async move { io.ok_or("dialed twice") }
        })
    }

    #[tokio::test]
    async fn copies_both_ways_and_passes_half_closes_on() {
        let (client, mut app) = tokio::io::duplex(1024);
        let (upstream, mut server) = tokio::io::duplex(1024);
        let fwd = tokio::spawn(Forward::new(dial_once(upstream)).oneshot(client));
        app.write_all(b"ping").await.unwrap();
        app.shutdown().await.unwrap();
        let mut got = Vec::new();
        server.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, b"ping", "the client's bytes, then its EOF");
        server.write_all(b"pong").await.unwrap();
        drop(server);
        let mut got = Vec::new();
        app.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, b"pong");
        fwd.await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn a_failed_dial_is_the_error() {
        let fail = tower::service_fn(|()| async { Err::<DuplexStream, _>("unreachable") });
        let (client, _app) = tokio::io::duplex(64);
        assert_eq!(Forward::new(fail).oneshot(client).await, Err("unreachable"));
    }
}
