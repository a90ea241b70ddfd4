//! TCP connection metrics, with Linkerd's names and labels.

use linkerd_metrics::{Counter, EncodeLabels, Family, Gauge, LabelWriter, Registry};
use std::{io, net::SocketAddr, sync::Arc};

/// Which listener a connection belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Direction {
    Inbound,
    Outbound,
}

/// Which side of the proxy a connection faces: the accepted one (`src`) or the dialed one (`dst`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Peer {
    Src,
    Dst,
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
    ) -> TcpConnMetrics {
        let labels = TcpLabels {
            direction,
            peer,
            target_addr,
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
        let direction = match self.direction {
            Direction::Inbound => "inbound",
            Direction::Outbound => "outbound",
        };
        let peer = match self.peer {
            Peer::Src => "src",
            Peer::Dst => "dst",
        };
        w.label("direction", direction)
            .label("peer", peer)
            .label("target_addr", self.target_addr)
            .label("target_ip", self.target_addr.ip())
            .label("target_port", self.target_addr.port());
    }
}

impl EncodeLabels for CloseLabels {
    fn encode(&self, w: &mut LabelWriter<'_>) {
        self.conn.encode(w);
        w.label("errno", self.errno.unwrap_or(""));
    }
}
