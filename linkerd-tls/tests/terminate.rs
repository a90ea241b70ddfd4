//! The inbound TLS layer over real handshakes: what it terminates, what it passes through.

mod support;

use linkerd_identity::Id;
use linkerd_metrics::Counter;
use linkerd_tls::{connect, ServerTls, TerminateLayer, TerminateParams, TlsConfigs, TlsIo};
use std::{net::SocketAddr, time::Duration};
use support::{Ca, CLIENT, SERVER};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt, DuplexStream},
    net::{TcpListener, TcpStream},
};
use tower::{Layer, ServiceExt};

const T: Duration = Duration::from_secs(5);

fn params(ca: &Ca, failures: &Counter) -> TerminateParams {
    let server = TlsConfigs::new(ca.creds(SERVER, ca.anchors())).unwrap();
    TerminateParams {
        local: Some((server, Id::parse(SERVER).unwrap())),
        timeout: T,
        capacity: 32 * 1024,
        handshake_failures: failures.clone(),
    }
}

fn peer() -> SocketAddr {
    "10.0.0.1:40000".parse().unwrap()
}

/// The inner service: reads five bytes of plaintext, answers with them, and reports what the
/// layer found.
fn inner<I>() -> impl tower::Service<
    (bool, ServerTls, TlsIo<I>),
    Response = (ServerTls, Vec<u8>),
    Error = linkerd_tls::Error,
    Future = impl Send,
> + Clone
       + Send
       + 'static
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    tower::service_fn(|(_, tls, mut io): (bool, ServerTls, TlsIo<I>)| async move {
        let mut buf = vec![0; 5];
        io.read_exact(&mut buf)
            .await
            .map_err(linkerd_tls::Error::ClientHello)?;
        io.write_all(&buf)
            .await
            .map_err(linkerd_tls::Error::ClientHello)?;
        io.shutdown()
            .await
            .map_err(linkerd_tls::Error::ClientHello)?;
        Ok((tls, buf))
    })
}

/// `true` targets are looked at for TLS.
fn layer(params: TerminateParams) -> TerminateLayer<fn(&bool) -> Option<SocketAddr>> {
    TerminateLayer::new(params, |look: &bool| look.then(peer))
}

async fn tcp_pair() -> (TcpStream, TcpStream) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let client = TcpStream::connect(l.local_addr().unwrap()).await.unwrap();
    let (server, _) = l.accept().await.unwrap();
    (client, server)
}

#[tokio::test]
async fn tls_for_this_proxy_is_terminated_with_the_clients_identity() {
    let ca = Ca::new();
    let failures = Counter::default();
    let (client, server) = tcp_pair().await;
    let svc = layer(params(&ca, &failures)).layer(inner());
    let served = tokio::spawn(svc.oneshot((true, server)));

    let creds = TlsConfigs::new(ca.creds(CLIENT, ca.anchors())).unwrap();
    let mut tls = connect(client, &creds, &Id::parse(SERVER).unwrap(), true, T)
        .await
        .unwrap();
    tls.write_all(b"hello").await.unwrap();
    let mut echo = Vec::new();
    tls.read_to_end(&mut echo).await.unwrap();
    assert_eq!(echo, b"hello", "the inner service read plaintext");
    let (status, _) = served.await.unwrap().unwrap();
    assert_eq!(
        status,
        ServerTls::Terminated {
            client_id: Some(Id::parse(CLIENT).unwrap()),
            transport: true,
        }
    );
    assert_eq!(failures.value(), 0);
}

#[tokio::test]
async fn tls_for_another_name_and_plaintext_pass_through_untouched() {
    let ca = Ca::new();
    let failures = Counter::default();
    // A ClientHello for another name: the app's own TLS, replayed byte for byte.
    let (client, server) = tcp_pair().await;
    let svc = layer(params(&ca, &failures)).layer(inner());
    let served = tokio::spawn(svc.clone().oneshot((true, server)));
    let creds = TlsConfigs::new(ca.creds(CLIENT, ca.anchors())).unwrap();
    let other = Id::parse("db.ns.serviceaccount.identity.linkerd.cluster.local").unwrap();
    // The handshake never completes: the inner service only echoes the first five bytes.
    let _ = tokio::time::timeout(
        Duration::from_millis(500),
        connect(client, &creds, &other, false, T),
    )
    .await;
    let (status, first) = served.await.unwrap().unwrap();
    assert_eq!(
        status,
        ServerTls::Passthrough {
            sni: Some(other.to_string())
        }
    );
    assert_eq!(first[0], 22, "the ClientHello record, replayed");

    let svc = layer(params(&ca, &failures)).layer(inner::<DuplexStream>());
    let (mut app, io) = tokio::io::duplex(1024);
    app.write_all(b"plain").await.unwrap();
    let (status, bytes) = svc.clone().oneshot((true, io)).await.unwrap();
    assert_eq!(status, ServerTls::NoTls { silent: false });
    assert_eq!(bytes, b"plain");

    // Not looked at: nothing is read before the inner service.
    let (mut app, io) = tokio::io::duplex(1024);
    app.write_all(b"plain").await.unwrap();
    let (status, bytes) = svc.oneshot((false, io)).await.unwrap();
    assert_eq!(status, ServerTls::NotLookedFor);
    assert_eq!(bytes, b"plain");
    assert_eq!(failures.value(), 0);
}

#[tokio::test(start_paused = true)]
async fn a_silent_client_is_plaintext_after_the_timeout() {
    let ca = Ca::new();
    let svc = layer(params(&ca, &Counter::default())).layer(inner::<DuplexStream>());
    let (mut app, io) = tokio::io::duplex(1024);
    let served = tokio::spawn(svc.oneshot((true, io)));
    tokio::time::sleep(T + Duration::from_millis(1)).await;
    // The server speaks first; the client answers only then.
    app.write_all(b"hello").await.unwrap();
    let (status, bytes) = served.await.unwrap().unwrap();
    assert_eq!(status, ServerTls::NoTls { silent: true });
    assert_eq!(bytes, b"hello");
}

#[tokio::test]
async fn a_failed_handshake_is_counted_and_is_the_error() {
    let ca = Ca::new();
    let rogue = Ca::new();
    let failures = Counter::default();
    let (client, server) = tcp_pair().await;
    let svc = layer(params(&ca, &failures)).layer(inner());
    let served = tokio::spawn(svc.oneshot((true, server)));
    // A client that does not trust this proxy's CA aborts the handshake.
    let creds = TlsConfigs::new(rogue.creds(CLIENT, rogue.anchors())).unwrap();
    assert!(
        connect(client, &creds, &Id::parse(SERVER).unwrap(), false, T)
            .await
            .is_err()
    );
    let err = served.await.unwrap().unwrap_err();
    assert!(err.to_string().contains("handshake"), "{err}");
    assert_eq!(failures.value(), 1);
}
