//! Steps 1 and 2 of an inbound connection: which port it is for, and what its TLS says of the
//! client.

use super::policy::{AuthzLabels, AuthzMetrics, ClientAuth};
use crate::PortSet;
use linkerd_detect::Speculative;
use linkerd_proxy_transport::{
    Accepted, ConnLabeller, Direction, Metered, NoTlsReason, Peer, PrefixedIo, TcpMetrics, TlsLabel,
};
use linkerd_tls::{ServerTls, ServerTlsStream, TlsIo};
use std::net::SocketAddr;
use tokio::net::TcpStream;
use tokio_util::either::Either;
use tower::BoxError;

/// An inbound connection, as accepted.
#[derive(Clone, Debug)]
pub(crate) struct InboundConn {
    pub client: SocketAddr,
    /// Where the client meant to go: the app's port, or the inbound port itself.
    pub orig_dst: SocketAddr,
    /// Addressed to the inbound port itself (not redirected): only peer proxies do that, with
    /// the opaque-transport header.
    pub to_listener: bool,
    /// Whether a ClientHello for this proxy is looked for (the proxy has an identity, and the
    /// port is not opaque).
    pub look_for_tls: bool,
    /// The app connection the TLS step made for a client that sent nothing, when the app
    /// spoke first (or nobody spoke by the timeout): the opaque forward's.
    pub server_first: Option<ServerFirstConn>,
}

/// A connection to the app dialed while the client was silent, taken once by the forward.
/// Cloning shares it (targets are cloned as they go down the stack).
#[derive(Clone)]
pub(crate) struct ServerFirstConn(
    std::sync::Arc<parking_lot::Mutex<Option<Speculative<linkerd_connect::ClientIo>>>>,
);

impl ServerFirstConn {
    pub(crate) fn new(conn: Speculative<linkerd_connect::ClientIo>) -> Self {
        Self(std::sync::Arc::new(parking_lot::Mutex::new(Some(conn))))
    }

    /// The connection, the first time.
    pub(crate) fn take(&self) -> Option<Speculative<linkerd_connect::ClientIo>> {
        self.0.lock().take()
    }
}

impl std::fmt::Debug for ServerFirstConn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ServerFirstConn")
    }
}

/// An inbound connection after TLS: what the client proved, and what follows.
#[derive(Clone, Debug)]
pub(crate) struct InboundTls {
    pub conn: InboundConn,
    /// The TLS status in metric labels.
    pub label: TlsLabel,
    /// What the client proved, for the policy.
    pub auth: ClientAuth,
    /// A peer proxy's opaque-transport connection: a transport header follows.
    pub transport: bool,
    /// The app's own TLS, or a client that sent nothing: forwarded without detection.
    pub opaque: bool,
    /// Adds the `srv_*` labels to the connection's TCP metrics, once the server is known.
    pub metrics: ConnLabeller,
}

impl InboundConn {
    /// The client, when the connection is to be looked at for TLS.
    pub(crate) fn peer(&self) -> Option<SocketAddr> {
        self.look_for_tls.then_some(self.client)
    }
}

impl InboundTls {
    /// Whether a transport header follows.
    pub(crate) fn expects_header(&self) -> bool {
        self.transport
    }
}

/// Step 1: the app's port, or the inbound port itself.
pub(crate) fn accept(
    tls_enabled: bool,
    opaque_ports: PortSet,
) -> impl Fn(Accepted) -> (InboundConn, TcpStream) + Clone {
    move |accepted: Accepted| {
        let orig_dst = accepted.orig_dst.unwrap_or(accepted.local);
        let to_listener = orig_dst.port() == accepted.local.port();
        let look_for_tls = tls_enabled && (to_listener || !opaque_ports.contains(orig_dst.port()));
        let conn = InboundConn {
            client: accepted.client,
            orig_dst,
            to_listener,
            look_for_tls,
            server_first: None,
        };
        (conn, accepted.socket)
    }
}

/// Step 1, with `LINKERD2_PROXY_INBOUND_IPS`: refuses a connection whose destination IP is not
/// one of the pod's (anything else reaching the inbound listener is misrouted).
#[derive(Clone)]
pub(crate) struct PodIps(pub std::sync::Arc<[std::net::IpAddr]>);

impl<I> tower::filter::Predicate<(InboundConn, I)> for PodIps {
    type Request = (InboundConn, I);

    fn check(&mut self, (conn, io): (InboundConn, I)) -> Result<Self::Request, BoxError> {
        let ip = conn.orig_dst.ip().to_canonical();
        if self.0.is_empty() || ip.is_loopback() || self.0.contains(&ip) {
            return Ok((conn, io));
        }
        Err(format!(
            "the destination {} is not one of this pod's IPs (LINKERD2_PROXY_INBOUND_IPS)",
            conn.orig_dst
        )
        .into())
    }
}

/// Step 2, after the TLS layer: labels the connection by what its TLS proved and counts it in
/// the TCP metrics; refuses TLS for another name on the inbound port itself, and opaque
/// transport without the opaque-transport ALPN or a client identity (counted as a denial).
#[derive(Clone)]
pub(crate) struct Label {
    tcp: TcpMetrics,
    authz: AuthzMetrics,
    tls_enabled: bool,
}

impl Label {
    pub(crate) fn new(tcp: TcpMetrics, authz: AuthzMetrics, tls_enabled: bool) -> Self {
        Self {
            tcp,
            authz,
            tls_enabled,
        }
    }
}

/// A connection after step 2, counted: the terminated stream's plaintext, or the client's
/// bytes (those read to look for a ClientHello counted at once, and replayed).
pub(crate) type LabelledIo<I> =
    Either<Metered<ServerTlsStream<PrefixedIo<I>>>, PrefixedIo<Metered<I>>>;

impl<I> tower::filter::Predicate<(InboundConn, ServerTls, TlsIo<I>)> for Label {
    type Request = (InboundTls, LabelledIo<I>);

    fn check(
        &mut self,
        (conn, tls, io): (InboundConn, ServerTls, TlsIo<I>),
    ) -> Result<Self::Request, BoxError> {
        // (label, auth, a transport header follows, opaque, the transport ALPN was negotiated)
        let (label, auth, transport, opaque, alpn) = match tls {
            ServerTls::Terminated {
                client_id,
                transport: alpn,
            } => {
                if let Some(id) = &client_id {
                    tracing::Span::current().record("client_id", tracing::field::display(id));
                }
                let label = TlsLabel::Tls {
                    client_id: client_id.as_ref().map(|id| id.as_str().into()),
                    server_id: None,
                };
                let auth = client_id.map_or(ClientAuth::Tls, ClientAuth::Authenticated);
                (label, auth, alpn || conn.to_listener, false, alpn)
            }
            ServerTls::Passthrough { sni } if conn.to_listener => {
                let error =
                    format!("TLS on the inbound port for a name other than this proxy's ({sni:?})");
                return Err(error.into());
            }
            ServerTls::Passthrough { .. } => {
                (TlsLabel::Opaque, ClientAuth::Plaintext, false, true, false)
            }
            ServerTls::NoTls { silent } => {
                let label = TlsLabel::NoIdentity(NoTlsReason::NotProvidedByRemote);
                (label, ClientAuth::Plaintext, false, silent, false)
            }
            ServerTls::NotLookedFor => {
                let reason = match self.tls_enabled {
                    true => NoTlsReason::NotProvidedByRemote,
                    false => NoTlsReason::Disabled,
                };
                let label = TlsLabel::NoIdentity(reason);
                (label, ClientAuth::Plaintext, false, false, false)
            }
        };
        // Counted once the port's server is known (step 4), or when it closes before.
        let (metrics, labeller) =
            self.tcp
                .open_deferred(Direction::Inbound, Peer::Src, conn.orig_dst, label.clone());
        let io = match io {
            Either::Left(tls) => Either::Left(Metered::new(tls, metrics)),
            Either::Right(plain) => {
                let (peeked, socket) = plain.into_parts();
                let socket = Metered::new(socket, metrics);
                socket.record_read(peeked.len());
                Either::Right(PrefixedIo::new(peeked, socket))
            }
        };
        if transport && !alpn {
            return Err("mTLS to the inbound port must use the opaque-transport protocol (ALPN transport.l5d.io/v1)".into());
        }
        if transport && !matches!(auth, ClientAuth::Authenticated(_)) {
            let labels = AuthzLabels {
                target: conn.orig_dst,
                srv: super::server::Meta::default_named("opaque-transport"),
                route: None,
                authz: None,
                tls: label,
            };
            labeller.label(labels.policy_labels());
            self.authz
                .counter(false, super::policy::AuthzEvent::Deny, &labels)
                .incr();
            return Err("opaque transport requires a client identity".into());
        }
        let target = InboundTls {
            conn,
            label,
            auth,
            transport,
            opaque,
            metrics: labeller,
        };
        Ok((target, io))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use linkerd_identity::Id;
    use linkerd_metrics::Registry;
    use tower::filter::Predicate;

    const ID: &str = "web.ns.serviceaccount.identity.linkerd.cluster.local";

    #[test]
    fn only_the_pods_ips_are_accepted() {
        let to = |dst: &str| InboundConn {
            orig_dst: dst.parse().unwrap(),
            ..conn(false)
        };
        let mut none = PodIps(Vec::new().into());
        assert!(none.check((to("10.9.9.9:80"), ())).is_ok(), "empty: any");
        let mut ips = PodIps(vec!["10.0.0.1".parse().unwrap(), "fd00::1".parse().unwrap()].into());
        for ok in [
            "10.0.0.1:8080",
            "[fd00::1]:80",
            "[::ffff:10.0.0.1]:80",
            "127.0.0.1:80",
        ] {
            assert!(ips.check((to(ok), ())).is_ok(), "{ok}");
        }
        let err = ips
            .check((to("10.0.0.2:8080"), ()))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("10.0.0.2:8080 is not one of this pod's IPs"),
            "{err}"
        );
    }

    fn conn(to_listener: bool) -> InboundConn {
        InboundConn {
            client: "10.0.0.9:40000".parse().unwrap(),
            orig_dst: "10.0.0.1:8080".parse().unwrap(),
            to_listener,
            look_for_tls: true,
            server_first: None,
        }
    }

    fn label(reg: &mut Registry) -> Label {
        let tcp = TcpMetrics::register(reg);
        Label::new(tcp, AuthzMetrics::register(reg), true)
    }

    /// A plaintext connection whose first `n` bytes were read looking for a ClientHello.
    fn peeked(n: usize) -> TlsIo<()> {
        Either::Right(PrefixedIo::new(bytes::Bytes::from(vec![b'x'; n]), ()))
    }

    fn terminated(id: Option<&str>, transport: bool) -> ServerTls {
        ServerTls::Terminated {
            client_id: id.map(|i| Id::parse(i).unwrap()),
            transport,
        }
    }

    #[test]
    fn what_the_tls_proved_labels_the_connection() {
        let mut reg = Registry::default();
        let mut label = label(&mut reg);
        let (t, _) = label
            .check((conn(false), terminated(Some(ID), false), peeked(0)))
            .unwrap();
        assert_eq!(t.auth, ClientAuth::Authenticated(Id::parse(ID).unwrap()));
        assert!(!t.transport && !t.opaque);
        let (t, _) = label
            .check((conn(false), terminated(Some(ID), true), peeked(0)))
            .unwrap();
        assert!(t.transport, "the transport ALPN: a header follows");
        let passthrough = ServerTls::Passthrough { sni: None };
        let (t, _) = label.check((conn(false), passthrough, peeked(0))).unwrap();
        assert_eq!(
            (t.label, t.auth, t.opaque),
            (TlsLabel::Opaque, ClientAuth::Plaintext, true)
        );
        let (t, _) = label
            .check((conn(false), ServerTls::NoTls { silent: true }, peeked(0)))
            .unwrap();
        assert!(t.opaque, "a silent client is forwarded without detection");
        // Bytes read while looking for a ClientHello count as read, replayed or not.
        // They are counted once the port's server is known (the policy step labels it).
        let (t, _io) = label
            .check((conn(false), ServerTls::NoTls { silent: false }, peeked(5)))
            .unwrap();
        assert!(!reg
            .encode()
            .contains("no_tls_reason=\"not_provided_by_remote\"} 5"));
        t.metrics.label(linkerd_metrics::LabelPairs::new(vec![(
            "srv_name",
            "web".into(),
        )]));
        assert!(reg.encode().contains(
            "tcp_read_bytes_total{direction=\"inbound\",peer=\"src\",target_addr=\"10.0.0.1:8080\",target_ip=\"10.0.0.1\",target_port=\"8080\",tls=\"no_identity\",no_tls_reason=\"not_provided_by_remote\",srv_name=\"web\"} 5"
        ), "{}", reg.encode());
        assert!(reg.encode().contains(
            "tcp_open_total{direction=\"inbound\",peer=\"src\",target_addr=\"10.0.0.1:8080\""
        ));
    }

    #[test]
    fn the_inbound_port_takes_only_authenticated_opaque_transport() {
        let mut reg = Registry::default();
        let mut label = label(&mut reg);
        let other = ServerTls::Passthrough {
            sni: Some("db".into()),
        };
        let mut refused = |tls| match label.check((conn(true), tls, peeked(0))) {
            Ok(_) => panic!("accepted"),
            Err(e) => e.to_string(),
        };
        let err = refused(other);
        assert!(err.contains("other than this proxy's"), "{err}");
        let err = refused(terminated(Some(ID), false));
        assert!(err.contains("ALPN"), "{err}");
        let err = refused(terminated(None, true));
        assert!(err.contains("client identity"), "{err}");
        assert!(reg
            .encode()
            .contains("srv_kind=\"default\",srv_name=\"opaque-transport\""));
        assert!(label
            .check((conn(true), terminated(Some(ID), true), peeked(0)))
            .is_ok());
    }

    #[tokio::test]
    async fn accept_finds_the_app_port_and_whether_to_look_for_tls() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let local = listener.local_addr().unwrap();
        let app: SocketAddr = "10.0.0.1:8080".parse().unwrap();
        let opaque: SocketAddr = "10.0.0.1:5432".parse().unwrap();
        for (tls, orig_dst, expected) in [
            (true, Some(app), (app, false, true)),
            (true, Some(opaque), (opaque, false, false)),
            // Not redirected: addressed to the inbound port itself (opaque transport).
            (true, None, (local, true, true)),
            (false, Some(app), (app, false, false)),
        ] {
            let accept = accept(tls, PortSet::parse("5432").unwrap());
            let _client = tokio::net::TcpStream::connect(local).await.unwrap();
            let (socket, client) = listener.accept().await.unwrap();
            let (conn, _) = accept(Accepted {
                socket,
                client,
                local,
                orig_dst,
            });
            assert_eq!(
                (conn.orig_dst, conn.to_listener, conn.look_for_tls),
                expected,
                "tls {tls}, orig_dst {orig_dst:?}"
            );
        }
    }
}
