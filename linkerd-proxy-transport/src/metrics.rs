//! TCP connection metrics, with Linkerd's names and labels.

use linkerd_metrics::{Counter, EncodeLabels, Family, Gauge, LabelPairs, LabelWriter, Registry};
use std::{
    io,
    net::SocketAddr,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, OnceLock,
    },
};

/// Which listener a connection belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Direction {
    /// The world's connections to the app.
    Inbound,
    /// The app's connections to the world.
    Outbound,
}

impl Direction {
    /// The `direction` label value.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Inbound => "inbound",
            Self::Outbound => "outbound",
        }
    }
}

/// Which side of the proxy a connection faces: the accepted one (`src`) or the dialed one (`dst`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Peer {
    /// The accepted connection.
    Src,
    /// The dialed connection.
    Dst,
}

/// A connection's TLS status, as Linkerd labels it (`tls`, `client_id`/`server_id`,
/// `no_tls_reason`).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum TlsLabel {
    /// Mutual TLS the proxy terminated (with the client's identity, if it sent one) or
    /// originated (with the server's identity).
    Tls {
        /// The client's identity (inbound).
        client_id: Option<Arc<str>>,
        /// The server's identity (outbound).
        server_id: Option<Arc<str>>,
    },
    /// Plaintext, and why.
    NoIdentity(NoTlsReason),
    /// TLS that is not the proxy's (the app's own), passed through untouched.
    Opaque,
}

/// Why a connection is not mTLS.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum NoTlsReason {
    /// The proxy has no identity configured.
    Disabled,
    /// Between the proxy and its own pod's app.
    Loopback,
    /// The client did not start TLS to this proxy.
    NotProvidedByRemote,
    /// Discovery gave no identity for the target.
    NotProvidedByServiceDiscovery,
}

/// The TCP metric families of the process.
#[derive(Clone)]
pub struct TcpMetrics {
    open_total: Arc<Family<TcpLabels, Counter>>,
    close_total: Arc<Family<CloseLabels, Counter>>,
    open_connections: Arc<Family<TcpLabels, Gauge>>,
    read_bytes: Arc<Family<TcpLabels, Counter>>,
    write_bytes: Arc<Family<TcpLabels, Counter>>,
}

/// One connection's metric handles; closing (dropping) it records `tcp_close_total`.
pub struct TcpConnMetrics {
    state: ConnState,
    errno: Option<&'static str>,
}

enum ConnState {
    /// Labelled and counted when accepted or connected.
    Open(Opened),
    /// Counted once the rest of its labels are known (see [`TcpMetrics::open_deferred`]).
    Deferred(Arc<Deferred>),
}

/// The handles of a connection whose labels are complete.
struct Opened {
    read_bytes: Counter,
    write_bytes: Counter,
    open: Gauge,
    labels: TcpLabels,
    close_total: Arc<Family<CloseLabels, Counter>>,
}

struct Deferred {
    tcp: TcpMetrics,
    labels: TcpLabels,
    opened: OnceLock<Opened>,
    /// Bytes moved before the labels were complete, added once they are.
    read: AtomicU64,
    write: AtomicU64,
}

/// Completes the labels of a connection opened with [`TcpMetrics::open_deferred`] (inbound:
/// the `srv_*` labels, once the port's server is known). The first call counts the connection;
/// later ones change nothing. A connection closed before any call is counted without them.
#[derive(Clone)]
pub struct ConnLabeller(Arc<Deferred>);

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct TcpLabels {
    direction: Direction,
    peer: Peer,
    target_addr: SocketAddr,
    tls: TlsLabel,
    /// Labels known after the connection was accepted (inbound: `srv_*`).
    extra: Option<LabelPairs>,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct CloseLabels {
    conn: TcpLabels,
    errno: Option<&'static str>,
}

// === impl TcpMetrics ===

impl TcpMetrics {
    /// Creates the families and registers them.
    pub fn register(reg: &mut Registry) -> Self {
        let m = Self {
            open_total: Arc::new(Family::new(
                "tcp_open_total",
                "Total count of opened connections.",
            )),
            close_total: Arc::new(Family::new(
                "tcp_close_total",
                "Total count of closed connections.",
            )),
            open_connections: Arc::new(Family::new(
                "tcp_open_connections",
                "Number of currently-open connections.",
            )),
            read_bytes: Arc::new(Family::new(
                "tcp_read_bytes_total",
                "Total count of bytes read from peers.",
            )),
            write_bytes: Arc::new(Family::new(
                "tcp_write_bytes_total",
                "Total count of bytes written to peers.",
            )),
        };
        reg.register(m.open_total.clone());
        reg.register(m.close_total.clone());
        reg.register(m.open_connections.clone());
        reg.register(m.read_bytes.clone());
        reg.register(m.write_bytes.clone());
        m
    }

    /// Records a newly opened connection and returns its handles.
    pub fn open(
        &self,
        direction: Direction,
        peer: Peer,
        target_addr: SocketAddr,
        tls: TlsLabel,
    ) -> TcpConnMetrics {
        let labels = TcpLabels {
            direction,
            peer,
            target_addr,
            tls,
            extra: None,
        };
        TcpConnMetrics {
            state: ConnState::Open(self.opened(labels)),
            errno: None,
        }
    }

    /// A connection whose labels are completed later by the returned [`ConnLabeller`]; it is
    /// counted (`tcp_open_total`, `tcp_open_connections`) then, and the bytes it moved until
    /// then are added to its byte counters.
    pub fn open_deferred(
        &self,
        direction: Direction,
        peer: Peer,
        target_addr: SocketAddr,
        tls: TlsLabel,
    ) -> (TcpConnMetrics, ConnLabeller) {
        let deferred = Arc::new(Deferred {
            tcp: self.clone(),
            labels: TcpLabels {
                direction,
                peer,
                target_addr,
                tls,
                extra: None,
            },
            opened: OnceLock::new(),
            read: AtomicU64::new(0),
            write: AtomicU64::new(0),
        });
        let metrics = TcpConnMetrics {
            state: ConnState::Deferred(deferred.clone()),
            errno: None,
        };
        (metrics, ConnLabeller(deferred))
    }

    fn opened(&self, labels: TcpLabels) -> Opened {
        self.open_total.get(&labels).incr();
        let open = self.open_connections.get(&labels);
        open.incr();
        Opened {
            read_bytes: self.read_bytes.get(&labels),
            write_bytes: self.write_bytes.get(&labels),
            open,
            labels,
            close_total: self.close_total.clone(),
        }
    }
}

// === impl TcpConnMetrics ===

impl TcpConnMetrics {
    /// Remembers the error that ended the connection, for the `errno` label.
    pub fn record_error(&mut self, e: &io::Error) {
        if self.errno.is_none() {
            self.errno = crate::errno_name(e);
        }
    }

    /// Counts `n` bytes read from the connection.
    #[inline]
    pub(crate) fn add_read(&self, n: u64) {
        match &self.state {
            ConnState::Open(o) => o.read_bytes.add(n),
            ConnState::Deferred(d) => match d.opened.get() {
                Some(o) => o.read_bytes.add(n),
                None => {
                    d.read.fetch_add(n, Ordering::Relaxed);
                }
            },
        }
    }

    /// Counts `n` bytes written to the connection.
    #[inline]
    pub(crate) fn add_write(&self, n: u64) {
        match &self.state {
            ConnState::Open(o) => o.write_bytes.add(n),
            ConnState::Deferred(d) => match d.opened.get() {
                Some(o) => o.write_bytes.add(n),
                None => {
                    d.write.fetch_add(n, Ordering::Relaxed);
                }
            },
        }
    }
}

impl Drop for TcpConnMetrics {
    fn drop(&mut self) {
        let opened = match &self.state {
            ConnState::Open(o) => o,
            ConnState::Deferred(d) => d.open(None),
        };
        opened.open.decr();
        let labels = CloseLabels {
            conn: opened.labels.clone(),
            errno: self.errno,
        };
        opened.close_total.get(&labels).incr();
    }
}

// === impl ConnLabeller ===

impl ConnLabeller {
    /// Completes the connection's labels with `extra` and counts it, unless that was done.
    pub fn label(&self, extra: LabelPairs) {
        self.0.open(Some(extra));
    }
}

impl std::fmt::Debug for ConnLabeller {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnLabeller")
            .field("labelled", &self.0.opened.get().is_some())
            .finish()
    }
}

impl Deferred {
    /// The connection's handles, counting it with `extra` if it was not yet; moves the bytes
    /// counted meanwhile onto them.
    fn open(&self, extra: Option<LabelPairs>) -> &Opened {
        let opened = self.opened.get_or_init(|| {
            let mut labels = self.labels.clone();
            labels.extra = extra;
            self.tcp.opened(labels)
        });
        // Bytes counted by a reader that saw no handles yet (including one racing with this
        // call) are moved here; the close moves any left.
        opened.read_bytes.add(self.read.swap(0, Ordering::Relaxed));
        opened
            .write_bytes
            .add(self.write.swap(0, Ordering::Relaxed));
        opened
    }
}

// === impl labels ===

impl EncodeLabels for TcpLabels {
    fn encode(&self, w: &mut LabelWriter<'_>) {
        let peer = match self.peer {
            Peer::Src => "src",
            Peer::Dst => "dst",
        };
        w.label("direction", self.direction.as_str())
            .label("peer", peer)
            .label("target_addr", self.target_addr)
            .label("target_ip", self.target_addr.ip())
            .label("target_port", self.target_addr.port());
        self.tls.encode(w);
        if let Some(extra) = &self.extra {
            extra.encode(w);
        }
    }
}

impl EncodeLabels for TlsLabel {
    fn encode(&self, w: &mut LabelWriter<'_>) {
        match self {
            Self::Tls {
                client_id,
                server_id,
            } => {
                w.label("tls", "true");
                if let Some(id) = client_id {
                    w.label("client_id", id);
                }
                if let Some(id) = server_id {
                    w.label("server_id", id);
                }
            }
            Self::NoIdentity(reason) => {
                w.label("tls", "no_identity")
                    .label("no_tls_reason", reason.as_str());
            }
            Self::Opaque => {
                w.label("tls", "opaque");
            }
        }
    }
}

impl NoTlsReason {
    /// The label value.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Disabled => "disabled",
            Self::Loopback => "loopback",
            Self::NotProvidedByRemote => "not_provided_by_remote",
            Self::NotProvidedByServiceDiscovery => "not_provided_by_service_discovery",
        }
    }
}

impl EncodeLabels for CloseLabels {
    fn encode(&self, w: &mut LabelWriter<'_>) {
        self.conn.encode(w);
        w.label("errno", self.errno.unwrap_or(""));
    }
}
