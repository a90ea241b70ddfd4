//! The inbound proxy: the world's connections to the app.
//!
//! The life of an inbound connection, top to bottom:
//! 1. accept it; the original destination's port is the app's port, and the app is reached on
//!    `127.0.0.1:<port>`. A connection that was not redirected is addressed to the inbound
//!    port itself: only peer proxies do that, with the opaque-transport header;
//! 2. TLS: a ClientHello whose SNI is this proxy's identity is terminated (the client's
//!    certificate, if any, is its identity); TLS for any other name is the app's own, passed
//!    through untouched. Over mTLS with the opaque-transport ALPN, the client proxy's header
//!    names the app port (and, for HTTP, the protocol);
//! 3. policy: may this client (identity, address, TLS or not) use this port?
//! 4. detect the protocol (skipped on opaque ports, and when the header named it);
//! 5. HTTP: serve it with hyper and forward each request to the app over the shared pool; a
//!    client the policy refuses gets 403 for every request;
//! 6. anything else: copy bytes to the app, unless the policy refuses the client (the
//!    connection is closed).

use crate::{
    http::{self, Authz, ConnInfo, Route},
    policy::{AuthzLabels, ClientAuth, Decision},
    tcp, ProxyStack,
};
use bytes::BytesMut;
use linkerd_detect::{detect, PrefixedIo, Protocol};
use linkerd_identity::Id;
use linkerd_proxy_transport::{Accepted, Direction, Metered, NoTlsReason, Peer, TlsLabel};
use linkerd_tls::{Detected, SessionProtocol, TransportHeader, TRANSPORT_ALPN};
use std::{
    net::{Ipv4Addr, SocketAddr},
    sync::Arc,
};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_util::sync::CancellationToken;

/// At most this much of a connection is buffered to read a ClientHello.
const CLIENT_HELLO_CAPACITY: usize = 32 * 1024;

/// Serves one accepted inbound connection.
pub(crate) async fn serve(stack: Arc<ProxyStack>, conn: Accepted, shutdown: CancellationToken) {
    // 1. The app's port, or the inbound port itself.
    let Accepted {
        mut socket,
        client,
        local,
        orig_dst,
    } = conn;
    let orig_dst = orig_dst.unwrap_or(local);
    let to_listener = orig_dst.port() == local.port();

    // 2. TLS: terminate what is addressed to this proxy, pass the rest through.
    let tls = match (&stack.tls, &stack.server_name) {
        (Some(tls), Some(name)) if to_listener || !stack.opaque_ports.contains(orig_dst.port()) => {
            Some((tls, name))
        }
        _ => None,
    };
    let mut buf = BytesMut::new();
    let hello = match tls {
        None => Detected::NotClientHello,
        Some(_) => {
            let read = linkerd_tls::read_client_hello(
                &mut socket,
                &mut buf,
                CLIENT_HELLO_CAPACITY,
                stack.detect.timeout,
            );
            match read.await {
                Ok(d) => d,
                Err(error) => {
                    tracing::info!(%error, "connection closed before its first bytes were read");
                    return;
                }
            }
        }
    };
    let peeked = buf.len();
    let (label, auth) = match (hello, tls) {
        (Detected::ClientHello(h), Some((configs, name)))
            if h.sni
                .as_deref()
                .is_some_and(|s| s.eq_ignore_ascii_case(name.as_str())) =>
        {
            // Meshed traffic waits for this proxy's first certificate.
            let creds = configs.credentials();
            if tokio::time::timeout(stack.detect.timeout, creds.ready())
                .await
                .is_err()
            {
                tracing::info!("closing a meshed connection: this proxy has no certificate yet");
                return;
            }
            let io = PrefixedIo::new(buf.freeze(), socket);
            let (io, client_id) =
                match linkerd_tls::terminate(io, configs, client, stack.detect.timeout).await {
                    Ok(t) => t,
                    Err(error) => {
                        tracing::info!(%error, "closing: TLS handshake failed");
                        stack.authz.handshake_failed();
                        return;
                    }
                };
            let transport = io.get_ref().1.alpn_protocol() == Some(TRANSPORT_ALPN);
            let label = TlsLabel::Tls {
                client_id: client_id.as_ref().map(|id| id.as_str().into()),
                server_id: None,
            };
            if let Some(id) = &client_id {
                tracing::Span::current().record("client_id", tracing::field::display(id));
            }
            let io = Metered::new(
                io,
                stack
                    .tcp
                    .open(Direction::Inbound, Peer::Src, orig_dst, label.clone()),
            );
            let auth = client_id.map_or(ClientAuth::Tls, ClientAuth::Authenticated);
            if transport || to_listener {
                return opaque_transport(stack, io, client, label, auth, transport, shutdown).await;
            }
            let port = orig_dst.port();
            return serve_app(stack, io, port, None, client, label, auth, shutdown).await;
        }
        (Detected::ClientHello(h), _) => {
            if to_listener {
                tracing::info!(sni = ?h.sni, "closing: TLS on the inbound port for a name other than this proxy's");
                return;
            }
            (TlsLabel::Opaque, ClientAuth::Plaintext)
        }
        (Detected::NotClientHello, _) => {
            let reason = match stack.tls {
                Some(_) => NoTlsReason::NotProvidedByRemote,
                None => NoTlsReason::Disabled,
            };
            (TlsLabel::NoIdentity(reason), ClientAuth::Plaintext)
        }
    };
    let io = Metered::new(
        socket,
        stack
            .tcp
            .open(Direction::Inbound, Peer::Src, orig_dst, label.clone()),
    );
    io.record_read(peeked);
    // App TLS (passed through) and a ClientHello that timed out are opaque: skip detection.
    let protocol = match label {
        TlsLabel::Opaque => Some(Protocol::Opaque),
        _ if peeked == 0 && tls.is_some() => Some(Protocol::Opaque),
        _ => None,
    };
    let io = PrefixedIo::new(buf.freeze(), io);
    serve_app(
        stack,
        io,
        orig_dst.port(),
        protocol,
        client,
        label,
        auth,
        shutdown,
    )
    .await
}

/// A peer proxy's opaque-transport connection: mTLS with a client identity and the
/// opaque-transport ALPN, then a header naming the app port.
async fn opaque_transport<I>(
    stack: Arc<ProxyStack>,
    mut io: I,
    client: SocketAddr,
    label: TlsLabel,
    auth: ClientAuth,
    alpn: bool,
    shutdown: CancellationToken,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    if !alpn {
        tracing::info!("closing: mTLS to the inbound port must use the opaque-transport protocol (ALPN transport.l5d.io/v1)");
        return;
    }
    if !matches!(auth, ClientAuth::Authenticated(_)) {
        tracing::info!("closing: opaque transport requires a client identity");
        let labels = AuthzLabels {
            target_port: 0,
            policy: "opaque-transport",
            reason: crate::policy::DenyReason::Unauthenticated,
            tls: label,
        };
        stack.authz.counter(false, false, &labels).incr();
        return;
    }
    let (header, rest) = match TransportHeader::read(&mut io, stack.detect.timeout).await {
        Ok(h) => h,
        Err(error) => {
            tracing::info!(%error, "closing: invalid opaque-transport header");
            return;
        }
    };
    let protocol = match header.protocol {
        Some(SessionProtocol::Http1) => Protocol::Http1,
        Some(SessionProtocol::Http2) => Protocol::Http2,
        None => Protocol::Opaque,
    };
    tracing::debug!(port = header.port, ?protocol, "opaque transport");
    let io = PrefixedIo::new(rest, io);
    serve_app(
        stack,
        io,
        header.port,
        Some(protocol),
        client,
        label,
        auth,
        shutdown,
    )
    .await
}

/// Applies the policy, detects the protocol (unless known) and forwards to the app's `port`.
#[allow(clippy::too_many_arguments)]
async fn serve_app<I>(
    stack: Arc<ProxyStack>,
    io: I,
    port: u16,
    protocol: Option<Protocol>,
    client: SocketAddr,
    label: TlsLabel,
    auth: ClientAuth,
    shutdown: CancellationToken,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let target = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    // 3. Policy.
    let decision = stack.policy.check(port, client.ip(), &auth);
    let client_id = match &auth {
        ClientAuth::Authenticated(id) => Some(id),
        _ => None,
    };

    // 4. Detect.
    let (protocol, io) = match protocol {
        Some(p) => (p, PrefixedIo::new(bytes::Bytes::new(), io)),
        None if stack.opaque_ports.contains(port) => {
            (Protocol::Opaque, PrefixedIo::new(bytes::Bytes::new(), io))
        }
        None => match detect(io, stack.detect).await {
            Ok((d, io)) => (d.protocol, io),
            Err(error) => {
                tracing::info!(%error, "connection closed during protocol detection");
                return;
            }
        },
    };
    tracing::Span::current().record("protocol", tracing::field::debug(protocol));
    let http = matches!(protocol, Protocol::Http1 | Protocol::Http2);
    let authz = match decision {
        Decision::Allow => None,
        Decision::Deny(denial) | Decision::Audit(denial) => {
            let audit = matches!(decision, Decision::Audit(_));
            let labels = AuthzLabels {
                target_port: port,
                policy: denial.policy,
                reason: denial.reason,
                tls: label.clone(),
            };
            let counter = stack.authz.counter(http, audit, &labels);
            log_denial(&denial, audit, client, client_id, http);
            Some(Authz {
                denial,
                audit,
                counter,
            })
        }
    };

    // 5. and 6. Forward to the app.
    if http {
        let info = ConnInfo { tls: label, authz };
        let route = Route::Target {
            addr: target,
            meshed: None,
            h2: false,
        };
        return http::serve(stack.http.clone(), io, protocol, route, info, shutdown).await;
    }
    if let Some(authz) = authz {
        authz.counter.incr();
        if !authz.audit {
            return;
        }
    }
    if stack.http.own.contains(target) {
        tracing::warn!(%target, "refusing to forward to this proxy's own port (a forwarding loop)");
        return;
    }
    let dial = tcp::Dial {
        tls: None,
        connect_timeout: stack.connect_timeout,
        tcp: &stack.tcp,
        direction: Direction::Inbound,
    };
    tcp::forward(io, target, None, dial).await
}

fn log_denial(
    denial: &crate::policy::Denial,
    audit: bool,
    client: SocketAddr,
    client_id: Option<&Id>,
    http: bool,
) {
    let client_id = client_id.map(|id| id.to_string()).unwrap_or_default();
    let what = if http { "requests" } else { "connection" };
    if audit {
        tracing::info!(%client, %client_id, reason = %denial, "audit: allowing a client the policy would refuse ({what})");
    } else {
        tracing::info!(%client, %client_id, reason = %denial, "refusing the client's {what}");
    }
}
