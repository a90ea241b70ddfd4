//! Dialing one endpoint: plain TCP, or mTLS with its proxy.

use crate::Error;
use linkerd_proxy_transport::{
    connect, Direction, Metered, NoTlsReason, Peer, SocketOptions, TcpMetrics, TlsLabel,
};
use linkerd_tls::{ClientTls, Id, SessionProtocol, TlsConfigs, TransportHeader};
use std::{
    future::Future,
    net::SocketAddr,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};
use tokio::{io::AsyncWriteExt, net::TcpStream};
use tokio_util::either::Either;

/// A connection to an endpoint: plain TCP, or mTLS with its proxy.
pub type ClientIo = Either<Metered<TcpStream>, ClientTls<Metered<TcpStream>>>;

/// How to reach a meshed endpoint: mutual TLS with its proxy.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Meshed {
    /// The identity the endpoint's proxy must prove.
    pub server_id: Id,
    /// Dial this port of the endpoint's proxy with the opaque-transport header naming the
    /// endpoint's port, instead of the endpoint's port itself.
    pub opaque_port: Option<u16>,
}

/// What to dial.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Target {
    /// The endpoint's address.
    pub addr: SocketAddr,
    /// Reach it with mTLS (when the proxy has an identity).
    pub meshed: Option<Meshed>,
    /// Over opaque transport, the protocol the header names (HTTP); `None` for opaque bytes.
    pub protocol: Option<SessionProtocol>,
}

/// How one direction dials endpoints: its TLS configs (when the proxy has an identity), the
/// connect timeout and the TCP metrics its connections count in. Cloning shares it.
#[derive(Clone)]
pub struct Connector(Arc<Config>);

#[derive(Clone)]
struct Config {
    tls: Option<TlsConfigs>,
    timeout: Duration,
    tcp: TcpMetrics,
    direction: Direction,
    socket: SocketOptions,
}

/// A service that dials one [`Target`] each time it is called.
#[derive(Clone)]
pub struct Connect {
    connector: Connector,
    target: Arc<Target>,
}

/// The future of a dial.
pub type Dialing = Pin<Box<dyn Future<Output = Result<ClientIo, Error>> + Send + 'static>>;

// === impl Connector ===

impl Connector {
    /// Dials with `timeout`, counting connections as `direction` in `tcp`; with `tls`, meshed
    /// targets are reached over mTLS (without it, in plaintext).
    pub fn new(
        tls: Option<TlsConfigs>,
        timeout: Duration,
        tcp: TcpMetrics,
        direction: Direction,
    ) -> Self {
        Self(Arc::new(Config {
            tls,
            timeout,
            tcp,
            direction,
            socket: SocketOptions::default(),
        }))
    }

    /// Sets keep-alive and user timeout on every dialed socket. Call before cloning.
    pub fn with_socket_options(self, socket: SocketOptions) -> Self {
        let Config {
            tls,
            timeout,
            tcp,
            direction,
            ..
        } = Arc::unwrap_or_clone(self.0);
        Self(Arc::new(Config {
            tls,
            timeout,
            tcp,
            direction,
            socket,
        }))
    }

    /// The connect timeout.
    pub fn timeout(&self) -> Duration {
        self.0.timeout
    }

    /// A service that dials `target`.
    pub fn to(&self, target: Target) -> Connect {
        Connect {
            connector: self.clone(),
            target: Arc::new(target),
        }
    }

    /// Connects to `target`: plain TCP, or mTLS with its proxy when it is meshed and the proxy
    /// has an identity (to its opaque-transport port, with a header naming the endpoint's port
    /// and protocol). Meshed connections wait (a connect timeout at most) for the first
    /// certificate.
    pub async fn connect(&self, target: &Target) -> Result<ClientIo, Error> {
        let Config {
            tls,
            timeout,
            tcp,
            direction,
            socket,
        } = &*self.0;
        let (timeout, direction, addr, opts) = (*timeout, *direction, target.addr, *socket);
        let (meshed, tls) = match (&target.meshed, tls) {
            (Some(m), Some(tls)) => (m, tls),
            (_, tls) => {
                let reason = match tls {
                    _ if addr.ip().is_loopback() => NoTlsReason::Loopback,
                    Some(_) => NoTlsReason::NotProvidedByServiceDiscovery,
                    None => NoTlsReason::Disabled,
                };
                let socket = connect(addr, timeout, opts).await?;
                let metrics = tcp.open(direction, Peer::Dst, addr, TlsLabel::NoIdentity(reason));
                tracing::debug!(%addr, "connected");
                return Ok(Either::Left(Metered::new(socket, metrics)));
            }
        };
        if !tls.credentials().is_ready() {
            tokio::time::timeout(timeout, tls.credentials().ready())
                .await
                .map_err(|_| Error::NoCertificate(timeout))?;
        }
        let dial_addr = SocketAddr::new(addr.ip(), meshed.opaque_port.unwrap_or(addr.port()));
        let socket = connect(dial_addr, timeout, opts).await?;
        let label = TlsLabel::Tls {
            client_id: None,
            server_id: Some(meshed.server_id.as_str().into()),
        };
        let io = Metered::new(socket, tcp.open(direction, Peer::Dst, addr, label));
        let transport = meshed.opaque_port.is_some();
        let mut io = linkerd_tls::connect(io, tls, &meshed.server_id, transport, timeout)
            .await
            .map_err(|source| Error::Tls { addr, source })?;
        if transport {
            let header = TransportHeader {
                port: addr.port(),
                name: None,
                protocol: target.protocol,
            };
            io.write_all(&header.encode())
                .await
                .map_err(|source| Error::TransportHeader { addr, source })?;
        }
        tracing::debug!(%addr, %dial_addr, server_id = %meshed.server_id, "connected with mTLS");
        Ok(Either::Right(io))
    }
}

impl tower::Service<Target> for Connector {
    type Response = ClientIo;
    type Error = Error;
    type Future = Dialing;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, target: Target) -> Self::Future {
        let this = self.clone();
        Box::pin(async move { this.connect(&target).await })
    }
}

// === impl Connect ===

impl tower::Service<()> for Connect {
    type Response = ClientIo;
    type Error = Error;
    type Future = Dialing;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, (): ()) -> Self::Future {
        let Self { connector, target } = self.clone();
        Box::pin(async move { connector.connect(&target).await })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use linkerd_metrics::Registry;
    use tower::ServiceExt;

    const ID: &str = "web.ns.serviceaccount.identity.linkerd.cluster.local";

    fn connector(tls: Option<TlsConfigs>, reg: &mut Registry) -> Connector {
        let tcp = TcpMetrics::register(reg);
        Connector::new(tls, Duration::from_secs(1), tcp, Direction::Outbound)
    }

    fn meshed() -> Option<Meshed> {
        Some(Meshed {
            server_id: Id::parse(ID).unwrap(),
            opaque_port: Some(4143),
        })
    }

    /// TLS configs whose credentials never get a certificate.
    fn uncertified() -> TlsConfigs {
        use linkerd_identity::{Credentials, LocalKey, TrustAnchors};
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca = params
            .self_signed(&rcgen::KeyPair::generate().unwrap())
            .unwrap();
        let anchors = TrustAnchors::from_pem(&ca.pem()).unwrap();
        let id = Id::parse(ID).unwrap();
        let key = LocalKey::generate(&id).unwrap();
        TlsConfigs::new(Credentials::new(id, anchors, &key)).unwrap()
    }

    #[tokio::test]
    async fn dials_plain_tcp_and_counts_the_connection() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mut reg = Registry::default();
        let target = Target {
            addr,
            meshed: None,
            protocol: None,
        };
        let io = connector(None, &mut reg)
            .to(target)
            .oneshot(())
            .await
            .unwrap();
        assert!(matches!(io, Either::Left(_)), "plain TCP");
        listener.accept().await.unwrap();
        let text = reg.encode();
        let line = format!("tcp_open_total{{direction=\"outbound\",peer=\"dst\",target_addr=\"{addr}\",target_ip=\"127.0.0.1\",target_port=\"{}\",tls=\"no_identity\",no_tls_reason=\"loopback\"}} 1", addr.port());
        assert!(text.contains(&line), "missing {line} in\n{text}");
    }

    #[tokio::test]
    async fn a_meshed_target_without_identity_is_dialed_in_plaintext() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let target = Target {
            addr: listener.local_addr().unwrap(),
            meshed: meshed(),
            protocol: None,
        };
        let io = connector(None, &mut Registry::default())
            .call_with(target)
            .await
            .unwrap();
        assert!(matches!(io, Either::Left(_)), "no identity: plain TCP");
    }

    #[tokio::test(start_paused = true)]
    async fn a_meshed_target_waits_for_the_certificate_then_fails() {
        let target = Target {
            addr: "127.0.0.1:1".parse().unwrap(),
            meshed: meshed(),
            protocol: None,
        };
        let start = tokio::time::Instant::now();
        let err = connector(Some(uncertified()), &mut Registry::default())
            .call_with(target)
            .await
            .map(|_| ())
            .unwrap_err();
        assert!(matches!(err, Error::NoCertificate(_)), "{err}");
        assert_eq!(
            start.elapsed(),
            Duration::from_secs(1),
            "one connect timeout"
        );
    }

    #[tokio::test]
    async fn a_refused_connect_names_the_target() {
        // Bound but never listening: the port refuses connections, and stays reserved.
        let socket =
            socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
        socket.bind(&any.into()).unwrap();
        let addr = socket.local_addr().unwrap().as_socket().unwrap();
        let target = Target {
            addr,
            meshed: None,
            protocol: None,
        };
        let err = connector(None, &mut Registry::default())
            .call_with(target)
            .await
            .map(|_| ())
            .unwrap_err();
        assert_eq!(err.to_string(), format!("connect to {addr} refused"));
    }

    impl Connector {
        async fn call_with(self, target: Target) -> Result<ClientIo, Error> {
            self.oneshot(target).await
        }
    }
}
