//! A policy server built from the published `linkerd2-proxy-api` crate's generated server
//! trait (as Linkerd's policy controller is): one `Server` per port, changeable while proxies
//! watch it; plaintext or mesh TLS.

use linkerd2_proxy_api::inbound as pb;
use std::{collections::HashMap, net::SocketAddr, pin::Pin, sync::Arc};
use tokio::sync::watch;

/// A policy server: one `Server` per port, changeable while proxies watch it.
#[derive(Clone, Default)]
pub struct Policies(Arc<parking_lot::Mutex<HashMap<u32, watch::Sender<Option<pb::Server>>>>>);

impl Policies {
    /// Sets (or changes) the policy of `port`.
    pub fn set(&self, port: u16, server: pb::Server) {
        let mut ports = self.0.lock();
        let tx = ports
            .entry(u32::from(port))
            .or_insert_with(|| watch::channel(None).0);
        tx.send_replace(Some(server));
    }
}

type Stream = Pin<Box<dyn futures_util::Stream<Item = Result<pb::Server, tonic::Status>> + Send>>;

#[tonic::async_trait]
impl pb::inbound_server_policies_server::InboundServerPolicies for Policies {
    async fn get_port(
        &self,
        _: tonic::Request<pb::PortSpec>,
    ) -> Result<tonic::Response<pb::Server>, tonic::Status> {
        Err(tonic::Status::unimplemented("GetPort is unused by proxies"))
    }

    type WatchPortStream = Stream;

    async fn watch_port(
        &self,
        req: tonic::Request<pb::PortSpec>,
    ) -> Result<tonic::Response<Stream>, tonic::Status> {
        let spec = req.into_inner();
        assert!(
            spec.workload.contains("\"pod\""),
            "the workload is sent: {spec:?}"
        );
        let rx = {
            let mut ports = self.0.lock();
            ports
                .entry(spec.port)
                .or_insert_with(|| watch::channel(None).0)
                .subscribe()
        };
        // The current policy (once there is one), then each change.
        let stream = futures_util::stream::unfold((rx, true), |(mut rx, first)| async move {
            if !first {
                rx.changed().await.ok()?;
            }
            loop {
                let current = rx.borrow_and_update().clone();
                if let Some(s) = current {
                    return Some((Ok(s), (rx, false)));
                }
                rx.changed().await.ok()?;
            }
        });
        let stream: Stream = Box::pin(stream);
        Ok(tonic::Response::new(stream))
    }
}

/// Serves `policies` on a loopback port until the returned handle is aborted.
pub async fn serve(policies: Policies) -> (SocketAddr, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        let _ = tonic::transport::Server::builder()
            .add_service(
                pb::inbound_server_policies_server::InboundServerPoliciesServer::new(policies),
            )
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener))
            .await;
    });
    (addr, task)
}

/// A TLS stream tonic can serve.
struct Tls(tokio_rustls::server::TlsStream<tokio::net::TcpStream>);

impl tonic::transport::server::Connected for Tls {
    type ConnectInfo = ();
    fn connect_info(&self) {}
}

impl tokio::io::AsyncRead for Tls {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_read(cx, buf)
    }
}

impl tokio::io::AsyncWrite for Tls {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().0).poll_write(cx, buf)
    }
    fn poll_flush(
        self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_flush(cx)
    }
    fn poll_shutdown(
        self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_shutdown(cx)
    }
}

/// Serves `policies` over TLS with `config` (a certificate for the policy service's name).
pub async fn serve_tls(
    policies: Policies,
    config: Arc<rustls::ServerConfig>,
) -> (SocketAddr, tokio::task::JoinHandle<()>) {
    let routes = tonic::service::Routes::new(
        pb::inbound_server_policies_server::InboundServerPoliciesServer::new(policies),
    );
    serve_routes_tls(routes, config).await
}

/// Serves gRPC `routes` over TLS with `config` on a loopback port until the handle is
/// aborted.
pub async fn serve_routes_tls(
    routes: tonic::service::Routes,
    config: Arc<rustls::ServerConfig>,
) -> (SocketAddr, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    let incoming = futures_util::stream::unfold((listener, acceptor), |(l, acceptor)| async move {
        loop {
            let Ok((tcp, _)) = l.accept().await else {
                return None;
            };
            if let Ok(tls) = acceptor.accept(tcp).await {
                return Some((Ok::<_, std::io::Error>(Tls(tls)), (l, acceptor)));
            }
        }
    });
    let task = tokio::spawn(async move {
        let _ = tonic::transport::Server::builder()
            .add_routes(routes)
            .serve_with_incoming(incoming)
            .await;
    });
    (addr, task)
}
