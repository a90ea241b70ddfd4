//! Step 5 of an outbound connection: opaque bytes to a balanced endpoint of the service, or
//! to the original destination.

use super::OutboundTarget;
use crate::own::OwnListeners;
use linkerd_connect::{ClientIo, Connector, Forward, Target};
use linkerd_detect::{Dialing, Speculate, Speculative};
use std::{future::Future, pin::Pin};
use tokio::io::{AsyncRead, AsyncWrite};
use tower::{BoxError, ServiceExt};

/// A connection being forwarded.
pub(crate) type Forwarding = Pin<Box<dyn Future<Output = Result<(), BoxError>> + Send>>;

/// Forwards an opaque connection: to the endpoint its service's balancer picks (per
/// connection), or to its original destination (over mTLS when it is a meshed endpoint); a
/// connection that names no target (not redirected) or this proxy's own listener is closed.
#[derive(Clone)]
pub(crate) struct TcpForward {
    connector: Connector,
    own: OwnListeners,
}

impl TcpForward {
    pub(crate) fn new(connector: Connector, own: OwnListeners) -> Self {
        Self { connector, own }
    }

    /// Copies between `io` and the target until both sides have closed: over `dialed`, the
    /// connection detection made while the client was silent, when there is one (it was
    /// dialed as this would dial).
    pub(crate) fn forward<I>(
        &self,
        target: OutboundTarget,
        mut io: I,
        dialed: Option<Speculative<ClientIo>>,
    ) -> Forwarding
    where
        I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let Some(dst) = target.dial else {
            let error = "not HTTP, and not redirected, so there is no target (use CONNECT)";
            return Box::pin(async move { Err(error.into()) });
        };
        if let Some(upstream) = dialed {
            return Box::pin(async move {
                linkerd_connect::copy(&mut io, upstream).await;
                // The service (and its resolution) lives as long as the connection.
                drop(target);
                Ok(())
            });
        }
        if let Some(svc) = target.service {
            // The service (and its resolution) lives as long as the connection.
            let forward = Forward::new(svc.tcp()).oneshot(io);
            return Box::pin(futures_util::FutureExt::map(forward, move |res| {
                drop(svc);
                res
            }));
        }
        if self.own.contains(dst) {
            linkerd_stack::rate_limited!(WARN, %dst, "refusing to forward to this proxy's own listener (a forwarding loop)");
            return Box::pin(async { Ok(()) });
        }
        let connect = self.connector.to(Target {
            addr: dst,
            meshed: target.meshed,
            protocol: None,
        });
        Box::pin(async move {
            Forward::new(connect).oneshot(io).await?;
            Ok(())
        })
    }
}

/// A silent client's server is dialed as its opaque forward would dial it: an endpoint of its
/// service's balancer, or its original destination (over mTLS when meshed); never a client
/// with no target or one addressed to this proxy's own listeners.
impl Speculate<OutboundTarget> for TcpForward {
    type Io = ClientIo;

    fn dial(&self, target: &OutboundTarget) -> Option<Dialing<ClientIo>> {
        let dst = target.dial?;
        if let Some(svc) = &target.service {
            // The target, and with it the service's resolution, outlives the dial.
            return Some(Box::pin(svc.tcp().oneshot(())));
        }
        if self.own.contains(dst) {
            return None;
        }
        let connect = self.connector.to(Target {
            addr: dst,
            meshed: target.meshed.clone(),
            protocol: None,
        });
        Some(Box::pin(async move { Ok(connect.oneshot(()).await?) }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use linkerd_metrics::Registry;
    use linkerd_proxy_transport::{Direction, TcpMetrics};
    use std::time::Duration;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn forward(own: Vec<std::net::SocketAddr>) -> TcpForward {
        let tcp = TcpMetrics::register(&mut Registry::default());
        let connector = Connector::new(None, Duration::from_secs(1), tcp, Direction::Outbound);
        TcpForward::new(connector, OwnListeners::new(own))
    }

    fn target(orig_dst: Option<std::net::SocketAddr>) -> OutboundTarget {
        OutboundTarget {
            orig_dst,
            dial: orig_dst,
            service: None,
            meshed: None,
            h2: false,
            opaque: true,
            policy: None,
        }
    }

    #[tokio::test]
    async fn bytes_reach_the_original_destination() {
        let server = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let dst = server.local_addr().unwrap();
        let (mut app, io) = tokio::io::duplex(1024);
        let fwd =
            tokio::spawn(async move { forward(vec![]).forward(target(Some(dst)), io, None).await });
        let (mut upstream, _) = server.accept().await.unwrap();
        app.write_all(b"ping").await.unwrap();
        let mut buf = [0; 4];
        upstream.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"ping");
        drop((app, upstream));
        fwd.await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn no_target_and_own_listeners_are_closed() {
        let (_app, io) = tokio::io::duplex(64);
        let err = forward(vec![])
            .forward(target(None), io, None)
            .await
            .unwrap_err();
        assert!(err.to_string().contains("no target"), "{err}");

        let own = "127.0.0.1:4140".parse().unwrap();
        let (mut app, io) = tokio::io::duplex(64);
        forward(vec![own])
            .forward(target(Some(own)), io, None)
            .await
            .unwrap();
        let mut buf = Vec::new();
        assert_eq!(
            app.read_to_end(&mut buf).await.unwrap(),
            0,
            "closed at once"
        );
    }
}
