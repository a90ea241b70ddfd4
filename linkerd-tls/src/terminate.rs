//! The inbound TLS step: terminate what is addressed to this proxy, pass the rest through.

use crate::{
    read_client_hello, terminate, Detected, Error, Id, ServerTlsStream, TlsConfigs, TRANSPORT_ALPN,
};
use bytes::{Bytes, BytesMut};
use linkerd_detect::{first_bytes, Dialing, First, NoSpeculation, Speculative};
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
pub struct TerminateLayer<F, P = NoSpeculation> {
    params: Arc<TerminateParams>,
    peer: F,
    server_first: P,
    delay: Option<Duration>,
}

/// The service made by [`TerminateLayer`].
#[derive(Clone)]
pub struct Terminate<S, F, P = NoSpeculation> {
    params: Arc<TerminateParams>,
    peer: F,
    server_first: P,
    delay: Option<Duration>,
    inner: S,
}

/// How the TLS step hears a server that speaks first while its client sends nothing (a
/// client that waits for the server is no TLS client).
pub trait ServerFirst<T> {
    /// The connection a dial gives.
    type Io: AsyncRead + Unpin + Send + 'static;

    /// Dials `target`'s server; `None` when it must not be dialed before the client speaks.
    fn dial(&self, target: &T) -> Option<Dialing<Self::Io>>;

    /// Hands on, with the target, the connection to a server that spoke first (what it sent
    /// is the prefix), or one dialed for a client that stayed silent to the timeout.
    fn attach(&self, target: &mut T, conn: Speculative<Self::Io>);
}

impl<T> ServerFirst<T> for NoSpeculation {
    type Io = tokio::io::Empty;

    fn dial(&self, _: &T) -> Option<Dialing<tokio::io::Empty>> {
        None
    }

    fn attach(&self, _: &mut T, _: Speculative<tokio::io::Empty>) {}
}

impl<F> TerminateLayer<F> {
    /// Terminates with `params`, for the connections `peer` names a client of.
    pub fn new(params: TerminateParams, peer: F) -> Self {
        Self {
            params: Arc::new(params),
            peer,
            server_first: NoSpeculation,
            delay: None,
        }
    }

    /// A client that has sent nothing for `delay` (`None`: never) while its ClientHello is
    /// awaited gets its server dialed with `server_first`; a server that speaks first ends
    /// the wait at once (`ServerTls::NoTls { silent: true }`, the connection attached to the
    /// target). A client that speaks first is read as ever, and the dialed connection dropped.
    pub fn with_server_first<P>(
        self,
        delay: Option<Duration>,
        server_first: P,
    ) -> TerminateLayer<F, P> {
        TerminateLayer {
            params: self.params,
            peer: self.peer,
            server_first,
            delay,
        }
    }
}

impl<S, F: Clone, P: Clone> tower::Layer<S> for TerminateLayer<F, P> {
    type Service = Terminate<S, F, P>;

    fn layer(&self, inner: S) -> Self::Service {
        Terminate {
            params: self.params.clone(),
            peer: self.peer.clone(),
            server_first: self.server_first.clone(),
            delay: self.delay,
            inner,
        }
    }
}

impl<T, I, S, F, P> tower::Service<(T, I)> for Terminate<S, F, P>
where
    T: Send + Sync + 'static,
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    F: Fn(&T) -> Option<SocketAddr>,
    P: ServerFirst<T> + Clone + Send + Sync + 'static,
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

    fn call(&mut self, (mut target, io): (T, I)) -> Self::Future {
        let peer = (self.peer)(&target);
        let params = self.params.clone();
        let (server_first, delay) = (self.server_first.clone(), self.delay);
        let terminating = async move {
            let (tls, io) = match (peer, &params.local) {
                (Some(peer), Some((configs, name))) => {
                    let t = &target;
                    let speculate = delay.map(|d| (d, || server_first.dial(t)));
                    let (tls, io, dialed) =
                        accept(io, peer, configs, name, &params, speculate).await?;
                    if let Some(conn) = dialed {
                        server_first.attach(&mut target, conn);
                    }
                    (tls, io)
                }
                _ => (
                    ServerTls::NotLookedFor,
                    Either::Right(PrefixedIo::new(Bytes::new(), io)),
                ),
            };
            Ok((target, tls, io))
        };
        ThenCall::new(terminating, self.inner.clone())
    }
}

/// What the TLS step found, the connection, and a server connection dialed for a silent
/// client.
type Accepted<I, U> = (ServerTls, TlsIo<I>, Option<Speculative<U>>);

/// Reads the ClientHello (dialing the server of a client silent for `speculate`'s delay);
/// terminates TLS addressed to `name`.
async fn accept<I, U, D>(
    mut io: I,
    peer: SocketAddr,
    configs: &TlsConfigs,
    name: &Id,
    params: &TerminateParams,
    speculate: Option<(Duration, D)>,
) -> Result<Accepted<I, U>, Error>
where
    I: AsyncRead + AsyncWrite + Unpin,
    U: AsyncRead + Unpin,
    D: FnOnce() -> Option<Dialing<U>>,
{
    let mut buf = BytesMut::new();
    let deadline = tokio::time::Instant::now() + params.timeout;
    if let Some((delay, dial)) = speculate {
        let heard = first_bytes(&mut io, &mut buf, params.capacity, delay, dial, deadline).await;
        let conn = match heard {
            First::Server(conn) => Some(conn),
            First::TimedOut(conn) => conn,
            First::Client(Ok(0), _) => {
                return Err(Error::ClientHello(std::io::ErrorKind::UnexpectedEof.into()))
            }
            First::Client(Err(e), _) => return Err(Error::ClientHello(e)),
            // The client spoke: it is read as ever (a server connection is dropped).
            First::Client(Ok(_), _) => None,
        };
        if conn.is_some() || buf.is_empty() {
            // The server spoke first, or nobody did by the timeout.
            let io = Either::Right(PrefixedIo::new(Bytes::new(), io));
            return Ok((ServerTls::NoTls { silent: true }, io, conn));
        }
    }
    let left = deadline.saturating_duration_since(tokio::time::Instant::now());
    let hello = read_client_hello(&mut io, &mut buf, params.capacity, left)
        .await
        .map_err(Error::ClientHello)?;
    let silent = buf.is_empty();
    let io = PrefixedIo::new(buf.freeze(), io);
    let hello = match hello {
        Detected::ClientHello(hello) => hello,
        Detected::NotClientHello => {
            return Ok((ServerTls::NoTls { silent }, Either::Right(io), None))
        }
    };
    let ours = hello
        .sni
        .as_deref()
        .is_some_and(|sni| sni.eq_ignore_ascii_case(name.as_str()));
    if !ours {
        let tls = ServerTls::Passthrough { sni: hello.sni };
        return Ok((tls, Either::Right(io), None));
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
    Ok((status, Either::Left(tls), None))
}
