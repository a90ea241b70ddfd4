//! TCP connection metrics, with Linkerd's names and labels.

use linkerd_metrics::{Counter, EncodeLabels, Family, Gauge, LabelWriter, Registry};
use std::{io, net::SocketAddr, sync::Arc};

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
    pub(crate) read_bytes: Counter,
    pub(crate) write_bytes: Counter,
    open: Gauge,
    labels: TcpLabels,
    close_total: Arc<Family<CloseLabels, Counter>>,
    errno: Option<&'static str>,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct TcpLabels {
    direction: Direction,
    peer: Peer,
    target_addr: SocketAddr,
    tls: TlsLabel,
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
        };
        self.open_total.get(&labels).incr();
        let open = self.open_connections.get(&labels);
        open.incr();
        TcpConnMetrics {
            read_bytes: self.read_bytes.get(&labels),
            write_bytes: self.write_bytes.get(&labels),
            open,
            labels,
            close_total: self.close_total.clone(),
            errno: None,
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
}

impl Drop for TcpConnMetrics {
    fn drop(&mut self) {
        self.open.decr();
        let labels = CloseLabels {
            conn: self.labels.clone(),
            errno: self.errno,
        };
        self.close_total.get(&labels).incr();
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
