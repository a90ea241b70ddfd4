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
//! overflows, so large ones can't be flooded), and DATA without payload or END_STREAM.

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

const DATA: u8 = 0x0;
const PRIORITY: u8 = 0x2;
const SETTINGS: u8 = 0x4;
const PING: u8 = 0x6;
const WINDOW_UPDATE: u8 = 0x8;
const END_STREAM: u8 = 0x1;
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
        state: Parse,
        // `None`: not watched.
        limit: Option<ControlFrameLimit>,
        tokens: u64,
        refilled: tokio::time::Instant,
    }
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
}

impl<I> FrameGuard<I> {
    /// Watches `inner`, whose first bytes are the client's preface (with no `limit`, it only
    /// passes the bytes on).
    pub fn new(inner: I, limit: Option<ControlFrameLimit>) -> Self {
        let burst = limit.map_or(0, |l| u64::from(l.per_second) * BURST_SECONDS);
        Self {
            inner,
            state: Parse::Skip(PREFACE_LEN),
            limit,
            tokens: burst,
            refilled: tokio::time::Instant::now(),
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
    /// Advances over `bytes`; calls `control` for each control frame seen.
    fn feed(&mut self, mut bytes: &[u8], mut control: impl FnMut() -> bool) -> bool {
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
                    let counted = match kind {
                        PING | SETTINGS => flags & ACK == 0,
                        PRIORITY => true,
                        DATA => len == 0 && flags & END_STREAM == 0,
                        _ => false,
                    };
                    if counted && !control() {
                        return false;
                    }
                    *self = match kind {
                        WINDOW_UPDATE if len >= 4 => Parse::Increment([0; 4], 0, len - 4),
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
                    if increment < SMALL_WINDOW_UPDATE && !control() {
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
        let (tokens, refilled) = (this.tokens, this.refilled);
        let ok = this
            .state
            .feed(&buf.filled()[before..], || spend(tokens, refilled, limit));
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

impl<I: AsyncWrite> AsyncWrite for FrameGuard<I> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.project().inner.poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.project().inner.poll_write_vectored(cx, bufs)
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

    /// How many control frames `bytes` holds, fed `step` bytes at a time.
    fn count(bytes: &[u8], step: usize) -> usize {
        let mut parse = Parse::Skip(PREFACE_LEN);
        let mut n = 0;
        for chunk in bytes.chunks(step) {
            assert!(parse.feed(chunk, || {
                n += 1;
                true
            }));
        }
        n
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
        for step in [1, 2, 3, 7, 9, 13, 64, bytes.len()] {
            assert_eq!(count(&bytes, step), 5, "fed {step} bytes at a time");
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
}
