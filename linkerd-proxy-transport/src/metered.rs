//! An I/O wrapper that counts bytes and records how the connection ended.

use crate::TcpConnMetrics;
use std::{
    io,
    pin::Pin,
    task::{Context, Poll},
};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

pin_project_lite::pin_project! {
    /// Counts the bytes read from and written to `inner` on its connection's metrics.
    pub struct Metered<T> {
        #[pin]
        inner: T,
        metrics: TcpConnMetrics,
    }
}

impl<T> Metered<T> {
    /// Wraps `inner`; the connection counts as closed when this is dropped.
    pub fn new(inner: T, metrics: TcpConnMetrics) -> Self {
        Self { inner, metrics }
    }

    /// The wrapped I/O.
    pub fn get_ref(&self) -> &T {
        &self.inner
    }

    /// Counts bytes that were read from the connection before it was wrapped (e.g. while
    /// deciding whether it is TLS).
    pub fn record_read(&self, n: usize) {
        self.metrics.add_read(n as u64);
    }
}

impl<T: AsyncRead> AsyncRead for Metered<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.project();
        let before = buf.filled().len();
        let res = this.inner.poll_read(cx, buf);
        match &res {
            Poll::Ready(Ok(())) => {
                this.metrics.add_read((buf.filled().len() - before) as u64);
            }
            Poll::Ready(Err(e)) => this.metrics.record_error(e),
            Poll::Pending => {}
        }
        res
    }
}

impl<T: AsyncWrite> AsyncWrite for Metered<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.project();
        let res = this.inner.poll_write(cx, buf);
        match &res {
            Poll::Ready(Ok(n)) => this.metrics.add_write(*n as u64),
            Poll::Ready(Err(e)) => this.metrics.record_error(e),
            Poll::Pending => {}
        }
        res
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.project();
        let res = this.inner.poll_write_vectored(cx, bufs);
        match &res {
            Poll::Ready(Ok(n)) => this.metrics.add_write(*n as u64),
            Poll::Ready(Err(e)) => this.metrics.record_error(e),
            Poll::Pending => {}
        }
        res
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().inner.poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().inner.poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Direction, Peer, TcpMetrics, TlsLabel};
    use linkerd_metrics::Registry;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn counts_bytes_and_close() {
        let mut reg = Registry::default();
        let tcp = TcpMetrics::register(&mut reg);
        let target = "10.1.2.3:80".parse().unwrap();
        let (a, mut b) = tokio::io::duplex(64);
        let mut io = Metered::new(
            a,
            tcp.open(
                Direction::Outbound,
                Peer::Dst,
                target,
                TlsLabel::Tls {
                    client_id: None,
                    server_id: Some("web.ns.serviceaccount.identity.linkerd.cluster.local".into()),
                },
            ),
        );
        io.write_all(b"hello").await.unwrap();
        b.write_all(b"abc").await.unwrap();
        let mut buf = [0u8; 3];
        io.read_exact(&mut buf).await.unwrap();
        let text = reg.encode();
        let l = "direction=\"outbound\",peer=\"dst\",target_addr=\"10.1.2.3:80\",target_ip=\"10.1.2.3\",target_port=\"80\",tls=\"true\",server_id=\"web.ns.serviceaccount.identity.linkerd.cluster.local\"";
        assert!(
            text.contains(&format!("tcp_write_bytes_total{{{l}}} 5\n")),
            "{text}"
        );
        assert!(
            text.contains(&format!("tcp_read_bytes_total{{{l}}} 3\n")),
            "{text}"
        );
        assert!(
            text.contains(&format!("tcp_open_connections{{{l}}} 1\n")),
            "{text}"
        );
        drop(io);
        let text = reg.encode();
        assert!(
            text.contains(&format!("tcp_open_connections{{{l}}} 0\n")),
            "{text}"
        );
        assert!(
            text.contains(&format!("tcp_close_total{{{l},errno=\"\"}} 1\n")),
            "{text}"
        );
    }

    /// Reads fail with a connection reset.
    struct Reset;

    impl AsyncRead for Reset {
        fn poll_read(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
            _: &mut ReadBuf<'_>,
        ) -> Poll<io::Result<()>> {
            Poll::Ready(Err(io::Error::from_raw_os_error(libc::ECONNRESET)))
        }
    }

    #[tokio::test]
    async fn close_records_the_errno() {
        let mut reg = Registry::default();
        let tcp = TcpMetrics::register(&mut reg);
        let target = "10.1.2.3:80".parse().unwrap();
        let mut io = Metered::new(
            Reset,
            tcp.open(
                Direction::Inbound,
                Peer::Src,
                target,
                TlsLabel::NoIdentity(crate::NoTlsReason::NotProvidedByRemote),
            ),
        );
        let mut buf = [0u8; 1];
        assert!(io.read(&mut buf).await.is_err());
        drop(io);
        let text = reg.encode();
        assert!(text.contains("errno=\"ECONNRESET\"} 1\n"), "{text}");
    }

    #[tokio::test]
    async fn deferred_labels_count_the_connection_with_every_byte() {
        let mut reg = Registry::default();
        let tcp = TcpMetrics::register(&mut reg);
        let target = "10.1.2.3:8080".parse().unwrap();
        let tls = TlsLabel::NoIdentity(crate::NoTlsReason::NotProvidedByRemote);
        let (metrics, labeller) = tcp.open_deferred(Direction::Inbound, Peer::Src, target, tls);
        let (a, mut b) = tokio::io::duplex(64);
        let mut io = Metered::new(a, metrics);
        // Before the server is known: nothing is counted yet, but the bytes are kept.
        b.write_all(b"header").await.unwrap();
        let mut buf = [0u8; 6];
        io.read_exact(&mut buf).await.unwrap();
        let text = reg.encode();
        assert!(!text.contains("tcp_open_total{"), "{text}");
        let srv = linkerd_metrics::LabelPairs::new(vec![
            ("srv_kind", "server".into()),
            ("srv_name", "web".into()),
        ]);
        labeller.label(srv.clone());
        // A second call (e.g. a retried decision) changes nothing.
        labeller.label(linkerd_metrics::LabelPairs::new(vec![(
            "srv_name",
            "x".into(),
        )]));
        io.write_all(b"hi").await.unwrap();
        let l = "direction=\"inbound\",peer=\"src\",target_addr=\"10.1.2.3:8080\",target_ip=\"10.1.2.3\",target_port=\"8080\",tls=\"no_identity\",no_tls_reason=\"not_provided_by_remote\",srv_kind=\"server\",srv_name=\"web\"";
        let text = reg.encode();
        for want in [
            format!("tcp_open_total{{{l}}} 1\n"),
            format!("tcp_open_connections{{{l}}} 1\n"),
            format!("tcp_read_bytes_total{{{l}}} 6\n"),
            format!("tcp_write_bytes_total{{{l}}} 2\n"),
        ] {
            assert!(text.contains(&want), "{want} in {text}");
        }
        assert!(!text.contains("srv_name=\"x\""), "{text}");
        drop(io);
        let text = reg.encode();
        assert!(
            text.contains(&format!("tcp_close_total{{{l},errno=\"\"}} 1\n")),
            "{text}"
        );
        assert!(
            text.contains(&format!("tcp_open_connections{{{l}}} 0\n")),
            "{text}"
        );
    }

    #[tokio::test]
    async fn a_deferred_connection_closed_before_labelling_is_counted_without_them() {
        let mut reg = Registry::default();
        let tcp = TcpMetrics::register(&mut reg);
        let target = "10.1.2.3:8080".parse().unwrap();
        let tls = TlsLabel::NoIdentity(crate::NoTlsReason::NotProvidedByRemote);
        let (metrics, _labeller) = tcp.open_deferred(Direction::Inbound, Peer::Src, target, tls);
        let (a, mut b) = tokio::io::duplex(64);
        let mut io = Metered::new(a, metrics);
        b.write_all(b"abc").await.unwrap();
        let mut buf = [0u8; 3];
        io.read_exact(&mut buf).await.unwrap();
        drop(io);
        let l = "direction=\"inbound\",peer=\"src\",target_addr=\"10.1.2.3:8080\",target_ip=\"10.1.2.3\",target_port=\"8080\",tls=\"no_identity\",no_tls_reason=\"not_provided_by_remote\"";
        let text = reg.encode();
        for want in [
            format!("tcp_open_total{{{l}}} 1\n"),
            format!("tcp_read_bytes_total{{{l}}} 3\n"),
            format!("tcp_close_total{{{l},errno=\"\"}} 1\n"),
            format!("tcp_open_connections{{{l}}} 0\n"),
        ] {
            assert!(text.contains(&want), "{want} in {text}");
        }
    }
}
