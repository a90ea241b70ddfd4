//! The inbound TLS step: terminate what is addressed to this proxy, pass the rest through.

use crate::{
    read_client_hello, terminate, Detected, Error, Id, ServerTlsStream, TlsConfigs, TRANSPORT_ALPN,
};
use bytes::BytesMut;
use linkerd_metrics::Counter;
use linkerd_proxy_transport::PrefixedIo;
use linkerd_stack::ThenCall;
use std::{
    net::SocketAddr,
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_util::either::Either;

/// What the TLS step found on a connection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ServerTls {
    /// TLS addressed to this proxy (its SNI is this proxy's name), terminated.
    Terminated {
        /// The identity the client's certificate proved, if it presented one.
        client_id: Option<Id>,
        /// Whether the client negotiated the opaque-transport ALPN: a transport header follows.
        transport: bool,
    },
    /// TLS for another name: the app's own, passed through untouched.
    Passthrough {
        /// The name the client asked for.
        sni: Option<String>,
    },
    /// Not TLS (or a ClientHello too large to read): plaintext, passed on.
    NoTls {
        /// The client sent nothing before the timeout (a protocol where the server speaks
        /// first).
        silent: bool,
    },
    /// Not looked at: the proxy has no identity, or the connection is not one to terminate.
    NotLookedFor,
}

/// A connection after the TLS step: the terminated stream, or the original bytes replayed.
pub type TlsIo<I> = Either<ServerTlsStream<PrefixedIo<I>>, PrefixedIo<I>>;

/// How the TLS step reads and terminates.
#[derive(Clone)]
pub struct TerminateParams {
    /// The proxy's TLS configs, and the name peers send as SNI to reach it; `None` (no
    /// identity): nothing is terminated, nothing is read.
    pub local: Option<(TlsConfigs, Id)>,
    /// How long a ClientHello may take to arrive, and the first certificate and the handshake
    /// each may take.
    pub timeout: Duration,
    /// At most this many bytes are buffered to read a ClientHello.
    pub capacity: usize,
    /// Counts failed handshakes (`inbound_tls_handshake_failures_total`).
    pub handshake_failures: Counter,
}

/// A `tower` layer over a connection's `(target, io)`: reads the ClientHello and terminates
/// TLS whose SNI is this proxy's name (waiting, a timeout at most, for its first certificate);
/// passes any other TLS, and plaintext, through with every byte replayed. The inner service
/// gets `(target, ServerTls, TlsIo<io>)`.
///
/// `peer(&target)` is the client's address (named in errors) when the connection is one to
/// look at; `None` passes it on unread.
#[derive(Clone)]
pub struct TerminateLayer<F> {
    params: Arc<TerminateParams>,
    peer: F,
}

/// The service made by [`TerminateLayer`].
#[derive(Clone)]
pub struct Terminate<S, F> {
    params: Arc<TerminateParams>,
    peer: F,
    inner: S,
}

impl<F> TerminateLayer<F> {
    /// Terminates with `params`, for the connections `peer` names a client of.
    pub fn new(params: TerminateParams, peer: F) -> Self {
        Self {
            params: Arc::new(params),
            peer,
        }
    }
}

impl<S, F: Clone> tower::Layer<S> for TerminateLayer<F> {
    type Service = Terminate<S, F>;

    fn layer(&self, inner: S) -> Self::Service {
        Terminate {
            params: self.params.clone(),
            peer: self.peer.clone(),
            inner,
        }
    }
}

impl<T, I, S, F> tower::Service<(T, I)> for Terminate<S, F>
where
    T: Send + 'static,
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    F: Fn(&T) -> Option<SocketAddr>,
    S: tower::Service<(T, ServerTls, TlsIo<I>)> + Clone + Send + 'static,
    S::Error: From<Error>,
    S::Future: Send,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = ThenCall<S, (T, ServerTls, TlsIo<I>), Error>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        // Readiness is checked on the clone that serves the connection.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, (target, io): (T, I)) -> Self::Future {
        let peer = (self.peer)(&target);
        let params = self.params.clone();
        let terminating = async move {
            let (tls, io) = match (peer, &params.local) {
                (Some(peer), Some((configs, name))) => {
                    accept(io, peer, configs, name, &params).await?
                }
                _ => (
                    ServerTls::NotLookedFor,
                    Either::Right(PrefixedIo::new(bytes::Bytes::new(), io)),
                ),
            };
            Ok((target, tls, io))
        };
        ThenCall::new(terminating, self.inner.clone())
    }
}

/// Reads the ClientHello; terminates TLS addressed to `name`.
async fn accept<I>(
    mut io: I,
    peer: SocketAddr,
    configs: &TlsConfigs,
    name: &Id,
    params: &TerminateParams,
) -> Result<(ServerTls, TlsIo<I>), Error>
where
    I: AsyncRead + AsyncWrite + Unpin,
{
    let mut buf = BytesMut::new();
    let hello = read_client_hello(&mut io, &mut buf, params.capacity, params.timeout)
        .await
        .map_err(Error::ClientHello)?;
    let silent = buf.is_empty();
    let io = PrefixedIo::new(buf.freeze(), io);
    let hello = match hello {
        Detected::ClientHello(hello) => hello,
        Detected::NotClientHello => return Ok((ServerTls::NoTls { silent }, Either::Right(io))),
    };
    let ours = hello
        .sni
        .as_deref()
        .is_some_and(|sni| sni.eq_ignore_ascii_case(name.as_str()));
    if !ours {
        return Ok((ServerTls::Passthrough { sni: hello.sni }, Either::Right(io)));
    }
    // Meshed traffic waits for this proxy's first certificate.
    let creds = configs.credentials();
    if tokio::time::timeout(params.timeout, creds.ready())
        .await
        .is_err()
    {
        return Err(Error::NoCertificate(params.timeout));
    }
    let (tls, client_id) = match terminate(io, configs, peer, params.timeout).await {
        Ok(t) => t,
        Err(error) => {
            params.handshake_failures.incr();
            return Err(error);
        }
    };
    let transport = tls.get_ref().1.alpn_protocol() == Some(TRANSPORT_ALPN);
    let status = ServerTls::Terminated {
        client_id,
        transport,
    };
    Ok((status, Either::Left(tls)))
}
