//! A cut-off for HTTP/2 control-frame floods.
//!
//! An HTTP/2 client can make a server do work without asking for anything: WINDOW_UPDATE
//! frames that grant one byte, PINGs, SETTINGS, PRIORITY, empty DATA frames. Each is cheap for
//! the server, but a client that sends millions a second pins a core (h2 answers or applies
//! every one). [`FrameGuard`] watches the frame headers a client sends as they are read (only
//! the 9-byte headers, and the 4-byte increment of a WINDOW_UPDATE; payloads are skipped, not
//! parsed) and ends the connection when the client sends more such frames than a token bucket
//! allows: a burst of ten seconds' worth, refilled at the configured rate.
//!
//! What counts: PING and SETTINGS (not their ACKs, which answer the server), PRIORITY,
//! WINDOW_UPDATE with an increment under 1 KiB (a client returns credit for data it received,
//! in steps of kilobytes; an increment can't exceed what the server sent, or the window
//! overflows, so large ones can't be flooded), and DATA without payload or END_STREAM (padding
//! is no payload: h2 returns padding's window at once).
//!
//! What the server sends earns the client credit: each DATA frame with a payload and each
//! HEADERS frame the server writes lets the client send two control frames uncounted (up to
//! [`MAX_CREDITS`] banked), since well-behaved clients answer received data with them: grpc-go
//! sends a bandwidth-estimation PING per burst of data it receives and small WINDOW_UPDATEs for
//! what it reads. Only a client that sends control frames for no answer spends the bucket.

use std::{
    io,
    pin::Pin,
    task::{Context, Poll},
};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// The client connection preface, which precedes the first frame.
const PREFACE_LEN: usize = 24;
const FRAME_HEADER_LEN: usize = 9;
/// A WINDOW_UPDATE granting less than this is a control frame, not returned credit.
const SMALL_WINDOW_UPDATE: u32 = 1024;
/// The bucket holds this many seconds of the rate.
const BURST_SECONDS: u64 = 10;
/// Control frames a server DATA (with a payload) or HEADERS frame lets the client send.
const CREDITS_PER_FRAME: u32 = 2;
/// The most credits a client may bank.
pub const MAX_CREDITS: u32 = 1024;

const DATA: u8 = 0x0;
const PRIORITY: u8 = 0x2;
const SETTINGS: u8 = 0x4;
const PING: u8 = 0x6;
const WINDOW_UPDATE: u8 = 0x8;
const HEADERS: u8 = 0x1;
const END_STREAM: u8 = 0x1;
const PADDED: u8 = 0x8;
const ACK: u8 = 0x1;

/// How many control frames per second a client may send (see the module docs).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ControlFrameLimit {
    /// Frames per second, sustained; ten seconds' worth may come at once.
    pub per_second: u32,
}

pin_project_lite::pin_project! {
    /// An HTTP/2 server connection's I/O that ends the connection (a read error) when the
    /// client floods it with control frames. Writes pass through.
    pub struct FrameGuard<I> {
        #[pin]
        inner: I,
        // The client's frames, as read.
        state: Parse,
        // The server's frames, as written.
        written: Parse,
        // `None`: not watched.
        limit: Option<ControlFrameLimit>,
        tokens: u64,
        refilled: tokio::time::Instant,
        // Control frames the server's writes have earned the client.
        credits: u32,
    }
}

/// Whose frames a [`Parse`] reads, which decides what it reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Side {
    /// Control frames.
    Client,
    /// DATA frames with a payload, and HEADERS.
    Server,
}

/// Where the parser is in the client's byte stream.
#[derive(Debug)]
enum Parse {
    /// Skipping this many more bytes (the preface, or a frame's payload).
    Skip(usize),
    /// Reading a frame header: the bytes so far.
    Header([u8; FRAME_HEADER_LEN], usize),
    /// Reading a WINDOW_UPDATE's increment (the bytes so far), then skipping `rest`.
    Increment([u8; 4], usize, usize),
    /// Reading a padded DATA frame's pad length, then skipping the rest of its payload (this
    /// many bytes).
    PadLength(usize),
}

impl<I> FrameGuard<I> {
    /// Watches `inner`, whose first bytes are the client's preface (with no `limit`, it only
    /// passes the bytes on).
    pub fn new(inner: I, limit: Option<ControlFrameLimit>) -> Self {
        let burst = limit.map_or(0, |l| u64::from(l.per_second) * BURST_SECONDS);
        Self {
            inner,
            state: Parse::Skip(PREFACE_LEN),
            // The server's preface is a SETTINGS frame.
            written: Parse::Header([0; FRAME_HEADER_LEN], 0),
            limit,
            tokens: burst,
            refilled: tokio::time::Instant::now(),
            credits: 0,
        }
    }
}

/// The flood was cut off.
#[derive(Debug, thiserror::Error)]
#[error("the client sent more than {0} HTTP/2 control frames a second (PING, SETTINGS, PRIORITY, tiny WINDOW_UPDATE, empty DATA): closing the connection")]
pub struct ControlFrameFlood(u32);

/// Counts one control frame against the bucket; `false` when it is empty.
fn spend(tokens: &mut u64, refilled: &mut tokio::time::Instant, limit: ControlFrameLimit) -> bool {
    if *tokens == 0 {
        let now = tokio::time::Instant::now();
        let elapsed = now.saturating_duration_since(*refilled);
        let earned =
            (elapsed.as_millis() as u64).saturating_mul(u64::from(limit.per_second)) / 1000;
        if earned == 0 {
            return false;
        }
        *tokens = earned.min(u64::from(limit.per_second) * BURST_SECONDS);
        *refilled = now;
    }
    *tokens -= 1;
    true
}

impl Parse {
    /// Advances over `bytes`, which `side` sent; calls `seen` for each frame it reports (a
    /// client's control frame, a server's DATA or HEADERS) and stops when that says `false`.
    fn feed(&mut self, side: Side, mut bytes: &[u8], mut seen: impl FnMut() -> bool) -> bool {
        while !bytes.is_empty() {
            match self {
                Parse::Skip(n) => {
                    let k = (*n).min(bytes.len());
                    *n -= k;
                    bytes = &bytes[k..];
                    if *n == 0 {
                        *self = Parse::Header([0; FRAME_HEADER_LEN], 0);
                    }
                }
                Parse::Header(h, have) => {
                    let k = (FRAME_HEADER_LEN - *have).min(bytes.len());
                    h[*have..*have + k].copy_from_slice(&bytes[..k]);
                    *have += k;
                    bytes = &bytes[k..];
                    if *have < FRAME_HEADER_LEN {
                        continue;
                    }
                    let len = (h[0] as usize) << 16 | (h[1] as usize) << 8 | h[2] as usize;
                    let (kind, flags) = (h[3], h[4]);
                    let client = side == Side::Client;
                    let reported = match kind {
                        PING | SETTINGS => client && flags & ACK == 0,
                        PRIORITY => client,
                        DATA if client => len == 0 && flags & END_STREAM == 0,
                        DATA => len > 0,
                        HEADERS => !client,
                        _ => false,
                    };
                    if reported && !seen() {
                        return false;
                    }
                    *self = match kind {
                        WINDOW_UPDATE if client && len >= 4 => Parse::Increment([0; 4], 0, len - 4),
                        DATA if client && flags & (PADDED | END_STREAM) == PADDED && len > 0 => {
                            Parse::PadLength(len - 1)
                        }
                        _ => Parse::Skip(len),
                    };
                    if len == 0 {
                        *self = Parse::Header([0; FRAME_HEADER_LEN], 0);
                    }
                }
                Parse::Increment(b, have, rest) => {
                    let k = (4 - *have).min(bytes.len());
                    b[*have..*have + k].copy_from_slice(&bytes[..k]);
                    *have += k;
                    bytes = &bytes[k..];
                    if *have < 4 {
                        continue;
                    }
                    let increment = u32::from_be_bytes(*b) & 0x7fff_ffff;
                    if increment < SMALL_WINDOW_UPDATE && !seen() {
                        return false;
                    }
                    *self = match *rest {
                        0 => Parse::Header([0; FRAME_HEADER_LEN], 0),
                        n => Parse::Skip(n),
                    };
                }
                Parse::PadLength(rest) => {
                    let pad = usize::from(bytes[0]);
                    bytes = &bytes[1..];
                    // No data but padding (a pad length beyond the frame is h2's error).
                    if pad >= *rest && !seen() {
                        return false;
                    }
                    *self = match *rest {
                        0 => Parse::Header([0; FRAME_HEADER_LEN], 0),
                        n => Parse::Skip(n),
                    };
                }
            }
        }
        true
    }
}

impl<I: AsyncRead> AsyncRead for FrameGuard<I> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.project();
        let before = buf.filled().len();
        std::task::ready!(this.inner.poll_read(cx, buf))?;
        let Some(limit) = *this.limit else {
            return Poll::Ready(Ok(()));
        };
        let (tokens, refilled, credits) = (this.tokens, this.refilled, this.credits);
        let ok = this.state.feed(Side::Client, &buf.filled()[before..], || {
            if *credits > 0 {
                *credits -= 1;
                return true;
            }
            spend(tokens, refilled, limit)
        });
        if !ok {
            linkerd_stack::rate_limited!(
                WARN,
                per_second = limit.per_second,
                "closing an HTTP/2 connection that floods the proxy with control frames"
            );
            // What this read brought is not handed on with the error.
            buf.set_filled(before);
            let error = ControlFrameFlood(limit.per_second);
            return Poll::Ready(Err(io::Error::new(io::ErrorKind::InvalidData, error)));
        }
        Poll::Ready(Ok(()))
    }
}

/// Credits the client for the server's frames in the first `n` bytes of `bufs` (just written).
fn credit<'a>(
    written: &mut Parse,
    credits: &mut u32,
    bufs: impl IntoIterator<Item = &'a [u8]>,
    mut n: usize,
) {
    for buf in bufs {
        if n == 0 {
            return;
        }
        let k = n.min(buf.len());
        n -= k;
        written.feed(Side::Server, &buf[..k], || {
            *credits = (*credits + CREDITS_PER_FRAME).min(MAX_CREDITS);
            true
        });
    }
}

impl<I: AsyncWrite> AsyncWrite for FrameGuard<I> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.project();
        let n = std::task::ready!(this.inner.poll_write(cx, buf))?;
        if this.limit.is_some() {
            credit(this.written, this.credits, [buf], n);
        }
        Poll::Ready(Ok(n))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.project();
        let n = std::task::ready!(this.inner.poll_write_vectored(cx, bufs))?;
        if this.limit.is_some() {
            credit(this.written, this.credits, bufs.iter().map(|b| &**b), n);
        }
        Poll::Ready(Ok(n))
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

    fn frame(kind: u8, flags: u8, payload: &[u8]) -> Vec<u8> {
        let len = payload.len();
        let mut f = vec![
            (len >> 16) as u8,
            (len >> 8) as u8,
            len as u8,
            kind,
            flags,
            0,
            0,
            0,
            1,
        ];
        f.extend_from_slice(payload);
        f
    }

    /// How many frames of `side`'s kind `bytes` holds, fed `step` bytes at a time.
    fn count_side(side: Side, bytes: &[u8], step: usize) -> usize {
        let mut parse = match side {
            Side::Client => Parse::Skip(PREFACE_LEN),
            Side::Server => Parse::Header([0; FRAME_HEADER_LEN], 0),
        };
        let mut n = 0;
        for chunk in bytes.chunks(step) {
            assert!(parse.feed(side, chunk, || {
                n += 1;
                true
            }));
        }
        n
    }

    /// How many control frames `bytes` holds, fed `step` bytes at a time.
    fn count(bytes: &[u8], step: usize) -> usize {
        count_side(Side::Client, bytes, step)
    }

    #[test]
    fn control_frames_are_counted_in_any_split() {
        let mut bytes = vec![b'P'; PREFACE_LEN];
        bytes.extend(frame(SETTINGS, 0, &[0; 6])); // 1
        bytes.extend(frame(SETTINGS, ACK, &[])); // an ACK: no
        bytes.extend(frame(0x1, 0x4, &[0x82; 40])); // HEADERS: no
        bytes.extend(frame(DATA, 0, &[b'x'; 100])); // DATA with a payload: no
        bytes.extend(frame(DATA, 0, &[])); // 2: empty DATA
        bytes.extend(frame(DATA, END_STREAM, &[])); // ends the stream: no
        bytes.extend(frame(WINDOW_UPDATE, 0, &1u32.to_be_bytes())); // 3: +1
        bytes.extend(frame(WINDOW_UPDATE, 0, &65_535u32.to_be_bytes())); // credit: no
        bytes.extend(frame(PING, 0, &[1; 8])); // 4
        bytes.extend(frame(PING, ACK, &[1; 8])); // an answer: no
        bytes.extend(frame(PRIORITY, 0, &[0; 5])); // 5
        bytes.extend(frame(DATA, PADDED, &[0])); // 6: padded, pad length 0, no data
        bytes.extend(frame(DATA, PADDED, &[3, 0, 0, 0])); // 7: nothing but padding
        bytes.extend(frame(DATA, PADDED, &[2, b'x', 0, 0])); // one byte of data: no
        bytes.extend(frame(DATA, PADDED | END_STREAM, &[0])); // ends the stream: no
        bytes.extend(frame(PING, 0, &[2; 8])); // 8: still in step after the padded frames
        for step in [1, 2, 3, 7, 9, 13, 64, bytes.len()] {
            assert_eq!(count(&bytes, step), 8, "fed {step} bytes at a time");
        }
    }

    #[test]
    fn the_servers_data_and_headers_are_seen_in_any_split() {
        let mut bytes = frame(SETTINGS, 0, &[0; 6]); // the server's preface: no
        bytes.extend(frame(HEADERS, 0x4, &[0x88])); // 1
        bytes.extend(frame(DATA, 0, &[b'x'; 300])); // 2
        bytes.extend(frame(DATA, END_STREAM, &[])); // no payload: no
        bytes.extend(frame(PING, ACK, &[1; 8])); // no
        bytes.extend(frame(WINDOW_UPDATE, 0, &1u32.to_be_bytes())); // no
        bytes.extend(frame(DATA, END_STREAM, &[b'y'; 5])); // 3
        for step in [1, 2, 5, 9, 10, 64, bytes.len()] {
            assert_eq!(count_side(Side::Server, &bytes, step), 3, "fed {step}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_flood_is_cut_and_a_steady_client_is_not() {
        let limit = ControlFrameLimit { per_second: 100 };
        let (mut tokens, mut refilled) = (1000, tokio::time::Instant::now());
        // The burst: ten seconds' worth at once.
        for _ in 0..1000 {
            assert!(spend(&mut tokens, &mut refilled, limit));
        }
        assert!(
            !spend(&mut tokens, &mut refilled, limit),
            "the flood is cut"
        );
        // At the rate, forever.
        for _ in 0..50 {
            tokio::time::advance(std::time::Duration::from_millis(10)).await;
            assert!(spend(&mut tokens, &mut refilled, limit));
        }
    }

    #[tokio::test]
    async fn the_guard_ends_a_flooding_connection_with_an_error() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let (mut client, server) = tokio::io::duplex(1 << 20);
        let mut guard = FrameGuard::new(server, Some(ControlFrameLimit { per_second: 10 }));
        let mut bytes = vec![b'P'; PREFACE_LEN];
        for _ in 0..200 {
            bytes.extend(frame(WINDOW_UPDATE, 0, &1u32.to_be_bytes()));
        }
        client.write_all(&bytes).await.unwrap();
        drop(client);
        let mut out = Vec::new();
        let err = guard.read_to_end(&mut out).await.unwrap_err();
        assert!(err.to_string().contains("control frames"), "{err}");
    }

    #[tokio::test]
    async fn control_frames_that_answer_the_servers_data_are_not_a_flood() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let (mut client, server) = tokio::io::duplex(1 << 20);
        let mut guard = FrameGuard::new(server, Some(ControlFrameLimit { per_second: 10 }));
        client.write_all(&[b'P'; PREFACE_LEN]).await.unwrap();
        let mut buf = [0; 4096];
        assert_eq!(guard.read(&mut buf).await.unwrap(), PREFACE_LEN);
        // 1,000 rounds of a DATA frame from the server answered by a PING and a small
        // WINDOW_UPDATE (grpc-go's pattern): ten times the bucket, never cut.
        for _ in 0..1000 {
            guard
                .write_all(&frame(DATA, 0, &[b'x'; 100]))
                .await
                .unwrap();
            let mut answer = frame(PING, 0, &[7; 8]);
            answer.extend(frame(WINDOW_UPDATE, 0, &100u32.to_be_bytes()));
            client.write_all(&answer).await.unwrap();
            let mut read = 0;
            while read < answer.len() {
                read += guard.read(&mut buf).await.expect("not cut off");
            }
            let mut sent = [0; 109];
            client.read_exact(&mut sent).await.unwrap();
        }
        // Unanswered frames still spend the bucket.
        let mut flood = Vec::new();
        for _ in 0..200 {
            flood.extend(frame(PING, 0, &[9; 8]));
        }
        client.write_all(&flood).await.unwrap();
        drop(client);
        let mut out = Vec::new();
        let err = guard.read_to_end(&mut out).await.unwrap_err();
        assert!(err.to_string().contains("control frames"), "{err}");
    }
}
