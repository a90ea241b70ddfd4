//! Mutual TLS between two sets of credentials from one CA, over real sockets.

mod support;

use linkerd_identity::{Credentials, Id, LocalKey};
use linkerd_tls::{connect, terminate, TlsConfigs};
use rcgen::{CertificateParams, ExtendedKeyUsagePurpose, KeyPair, PKCS_ECDSA_P256_SHA256};
use std::{sync::Arc, time::Duration};
use support::{Ca, CLIENT, SERVER};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
};

const T: Duration = Duration::from_secs(5);

/// Accepts one connection, terminates TLS, echoes one message; returns the client's identity.
async fn serve_one(listener: TcpListener, server: TlsConfigs) -> Result<Option<Id>, String> {
    let (socket, peer) = listener.accept().await.map_err(|e| e.to_string())?;
    let (mut tls, id) = terminate(socket, &server, peer, T)
        .await
        .map_err(|e| e.to_string())?;
    let mut buf = [0u8; 5];
    tls.read_exact(&mut buf).await.map_err(|e| e.to_string())?;
    tls.write_all(&buf).await.map_err(|e| e.to_string())?;
    tls.shutdown().await.map_err(|e| e.to_string())?;
    Ok(id)
}

/// A server for one connection with `server`'s configs, and a socket connected to it.
async fn serve_and_connect(
    server: TlsConfigs,
) -> (
    tokio::task::JoinHandle<Result<Option<Id>, String>>,
    TcpStream,
) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let srv = tokio::spawn(serve_one(l, server));
    (srv, TcpStream::connect(addr).await.unwrap())
}

/// Writes `hello`, reads until the server closes.
async fn hello<I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(tls: &mut I) -> Vec<u8> {
    tls.write_all(b"hello").await.unwrap();
    let mut buf = Vec::new();
    tls.read_to_end(&mut buf).await.unwrap();
    buf
}

#[tokio::test]
async fn both_sides_prove_their_identity() {
    let ca = Ca::new();
    let server = TlsConfigs::new(ca.creds(SERVER, ca.anchors())).unwrap();
    let client = TlsConfigs::new(ca.creds(CLIENT, ca.anchors())).unwrap();
    let (srv, socket) = serve_and_connect(server).await;

    let mut tls = connect(socket, &client, &Id::parse(SERVER).unwrap(), false, T)
        .await
        .unwrap();
    assert_eq!(hello(&mut tls).await, b"hello");
    assert_eq!(
        srv.await.unwrap().unwrap(),
        Some(Id::parse(CLIENT).unwrap())
    );
}

#[tokio::test]
async fn the_client_refuses_a_server_with_another_identity() {
    let ca = Ca::new();
    let server = TlsConfigs::new(ca.creds(SERVER, ca.anchors())).unwrap();
    let client = TlsConfigs::new(ca.creds(CLIENT, ca.anchors())).unwrap();
    let (srv, socket) = serve_and_connect(server).await;
    let other = Id::parse("db.ns.serviceaccount.identity.linkerd.cluster.local").unwrap();
    let err = connect(socket, &client, &other, false, T)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("handshake"), "{err}");
    assert!(srv.await.unwrap().is_err());
}

#[tokio::test]
async fn the_server_refuses_a_client_certificate_from_another_ca() {
    let ca = Ca::new();
    let rogue = Ca::new();
    let server = TlsConfigs::new(ca.creds(SERVER, ca.anchors())).unwrap();
    // The rogue client trusts the real CA (so it accepts the server), but its certificate
    // comes from another CA.
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
    let mut params = CertificateParams::new(vec![CLIENT.to_string()]).unwrap();
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let cert = params.signed_by(&key, &rogue.0).unwrap();
    let config = rustls::ClientConfig::builder_with_provider(linkerd_identity::provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_root_certificates(ca.anchors().roots())
        .with_client_auth_cert(
            vec![cert.der().clone()],
            rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
        )
        .unwrap();

    let (srv, socket) = serve_and_connect(server).await;
    let name = rustls::pki_types::ServerName::try_from(SERVER).unwrap();
    // TLS 1.3: the client may finish its side before the server's alert arrives; the alert
    // then fails the first read.
    if let Ok(mut tls) = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, socket)
        .await
    {
        let _ = tls.write_all(b"hello").await;
        let mut buf = Vec::new();
        let read = tls.read_to_end(&mut buf).await;
        assert!(read.is_err() || buf.is_empty(), "the server answered");
    }
    let err = srv.await.unwrap().unwrap_err();
    assert!(err.contains("handshake"), "{err}");
}

#[tokio::test]
async fn a_client_without_a_certificate_has_no_identity() {
    let ca = Ca::new();
    let server = TlsConfigs::new(ca.creds(SERVER, ca.anchors())).unwrap();
    // Credentials that were never certified: the client sends no certificate.
    let id = Id::parse(CLIENT).unwrap();
    let key = LocalKey::generate(&id).unwrap();
    let client = TlsConfigs::new(Credentials::new(id, ca.anchors(), &key)).unwrap();
    let (srv, socket) = serve_and_connect(server).await;
    let mut tls = connect(socket, &client, &Id::parse(SERVER).unwrap(), false, T)
        .await
        .unwrap();
    hello(&mut tls).await;
    assert_eq!(srv.await.unwrap().unwrap(), None);
}

#[tokio::test]
async fn a_renewed_certificate_is_used_by_the_next_handshake() {
    let ca = Ca::new();
    let id = Id::parse(SERVER).unwrap();
    let key = LocalKey::generate(&id).unwrap();
    let server_creds = Credentials::new(id.clone(), ca.anchors(), &key);
    ca.certify(&server_creds, &key);
    let server = TlsConfigs::new(server_creds.clone()).unwrap();

    let mut seen = Vec::new();
    for round in 0..2 {
        if round == 1 {
            ca.certify(&server_creds, &key);
        }
        let (srv, socket) = serve_and_connect(server.clone()).await;
        // A new client each round, so the handshake is a full one rather than a resumption.
        let client = TlsConfigs::new(ca.creds(CLIENT, ca.anchors())).unwrap();
        let mut tls = connect(socket, &client, &id, false, T).await.unwrap();
        let cert = tls.get_ref().1.peer_certificates().unwrap()[0].clone();
        hello(&mut tls).await;
        srv.await.unwrap().unwrap();
        seen.push(cert);
    }
    assert_ne!(
        seen[0], seen[1],
        "the second handshake presented the renewed certificate"
    );
}

#[tokio::test]
async fn opaque_transport_requires_the_servers_alpn() {
    let ca = Ca::new();
    let server = TlsConfigs::new(ca.creds(SERVER, ca.anchors())).unwrap();
    let client = TlsConfigs::new(ca.creds(CLIENT, ca.anchors())).unwrap();
    let (srv, socket) = serve_and_connect(server).await;
    let mut tls = connect(socket, &client, &Id::parse(SERVER).unwrap(), true, T)
        .await
        .unwrap();
    assert_eq!(
        tls.get_ref().1.alpn_protocol(),
        Some(linkerd_tls::TRANSPORT_ALPN)
    );
    hello(&mut tls).await;
    srv.await.unwrap().unwrap();
}
