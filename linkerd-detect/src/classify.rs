//! The pure classifier.

/// The protocol a connection speaks, as far as detection can tell.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Protocol {
    /// An HTTP/1.x request line.
    Http1,
    /// The HTTP/2 connection preface (prior knowledge, h2c).
    Http2,
    /// A TLS ClientHello record.
    Tls,
    /// Anything else: forwarded byte for byte.
    Opaque,
}

/// The classifier's verdict on a prefix of a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Classification {
    /// The prefix decides the protocol.
    Done(Protocol),
    /// The prefix is consistent with a known protocol but too short to say.
    NeedMore,
}

const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Classifies the first bytes read from a connection.
///
/// `NeedMore` means "read more, then ask again"; a caller that can't read more (EOF, full
/// buffer, timeout) treats it as [`Protocol::Opaque`].
pub fn classify(buf: &[u8]) -> Classification {
    if buf.is_empty() {
        return Classification::NeedMore;
    }
    match h2(buf).or_else(|| tls(buf)).or_else(|| http1(buf)) {
        Some(c) => c,
        None => Classification::Done(Protocol::Opaque),
    }
}

/// HTTP/2 prior knowledge: the 24-byte preface.
fn h2(buf: &[u8]) -> Option<Classification> {
    let n = buf.len().min(H2_PREFACE.len());
    if buf[..n] != H2_PREFACE[..n] {
        return None;
    }
    Some(if n == H2_PREFACE.len() {
        Classification::Done(Protocol::Http2)
    } else {
        Classification::NeedMore
    })
}

/// A TLS handshake record (content type 22, version 3.x) whose first message is a ClientHello.
fn tls(buf: &[u8]) -> Option<Classification> {
    const HANDSHAKE: u8 = 0x16;
    const CLIENT_HELLO: u8 = 0x01;
    if buf[0] != HANDSHAKE {
        return None;
    }
    if buf.len() >= 2 && buf[1] != 0x03 {
        return None;
    }
    // buf[2] is the minor record version and buf[3..5] the record length.
    if buf.len() >= 3 && buf[2] > 0x04 {
        return None;
    }
    if buf.len() < 6 {
        return Some(Classification::NeedMore);
    }
    (buf[5] == CLIENT_HELLO).then_some(Classification::Done(Protocol::Tls))
}

/// The longest method accepted (the longest registered one, `UPDATEREDIRECTREF`, has 17).
const MAX_METHOD_LEN: usize = 20;

/// An HTTP/1.x request line, validated by `httparse`.
///
/// The method must be upper-case letters, `-` or `_` (as every registered method is): a
/// client protocol whose first bytes are anything else (e.g. a one-byte lower-case ping) is
/// opaque at once rather than waiting for the detect timeout.
fn http1(buf: &[u8]) -> Option<Classification> {
    let method_len = buf.iter().position(|b| *b == b' ').unwrap_or(buf.len());
    let method_ok = buf[..method_len]
        .iter()
        .all(|b| b.is_ascii_uppercase() || *b == b'-' || *b == b'_');
    if !method_ok || method_len > MAX_METHOD_LEN {
        return None;
    }
    let mut headers = [];
    let mut req = httparse::Request::new(&mut headers);
    // The request line alone decides: what follows it (headers, valid or not) is hyper's
    // business, so a verdict never changes as more bytes arrive.
    let line_end = buf.iter().position(|b| *b == b'\n');
    let line_done = line_end.is_some();
    let line = line_end.map_or(buf, |i| &buf[..=i]);
    match req.parse(line) {
        Ok(_) | Err(httparse::Error::TooManyHeaders) if line_done => {
            // The request line parsed in full; headers are hyper's business.
            req.version.map(|_| Classification::Done(Protocol::Http1))
        }
        Ok(httparse::Status::Partial) => Some(Classification::NeedMore),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Classification::*;

    #[test]
    fn http1_request_lines() {
        for req in [
            &b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"[..],
            b"GET / HTTP/1.1\r\n",
            b"POST /x?y=1 HTTP/1.0\r\nContent-Length: 3\r\n\r\nabc",
            b"CONNECT example.com:443 HTTP/1.1\r\n\r\n",
            b"GET http://example.com/ HTTP/1.1\r\n\r\n",
            b"OPTIONS * HTTP/1.1\r\n\r\n",
        ] {
            assert_eq!(
                classify(req),
                Done(Protocol::Http1),
                "{:?}",
                String::from_utf8_lossy(req)
            );
        }
    }

    #[test]
    fn http1_split_and_truncated() {
        let full = b"GET /index.html HTTP/1.1\r\nHost: a\r\n\r\n";
        let line_end = full.iter().position(|b| *b == b'\n').unwrap();
        for n in 1..=line_end {
            assert_eq!(classify(&full[..n]), NeedMore, "prefix of {n} bytes");
        }
        for n in line_end + 1..full.len() {
            assert_eq!(
                classify(&full[..n]),
                Done(Protocol::Http1),
                "prefix of {n} bytes"
            );
        }
    }

    #[test]
    fn headers_after_the_request_line_do_not_change_the_verdict() {
        // Found by the `classify` fuzz target: a bad header line after a valid request line
        // made the whole input opaque while its request-line prefix was HTTP/1.
        let input = b"PPRI * HTTP/1.0\nRI  HTT* H -PRJDT";
        assert_eq!(classify(&input[..16]), Done(Protocol::Http1));
        assert_eq!(classify(input), Done(Protocol::Http1));
    }

    #[test]
    fn http2_preface() {
        assert_eq!(classify(H2_PREFACE), Done(Protocol::Http2));
        let mut with_settings = H2_PREFACE.to_vec();
        with_settings.extend_from_slice(&[0, 0, 0, 4, 0, 0, 0, 0, 0]);
        assert_eq!(classify(&with_settings), Done(Protocol::Http2));
        // Every strict prefix needs more (it is also not yet an HTTP/1 line).
        for n in 1..H2_PREFACE.len() {
            assert_eq!(classify(&H2_PREFACE[..n]), NeedMore, "prefix of {n} bytes");
        }
        // A corrupted preface is not HTTP/2, nor HTTP/1.
        assert_eq!(
            classify(b"PRI * HTTP/2.0\r\n\r\nXX\r\n\r\n"),
            Done(Protocol::Opaque)
        );
    }

    #[test]
    fn tls_client_hello() {
        let hello = [
            0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03,
        ];
        assert_eq!(classify(&hello), Done(Protocol::Tls));
        for n in 1..6 {
            assert_eq!(classify(&hello[..n]), NeedMore, "prefix of {n} bytes");
        }
        // A handshake record that is not a ClientHello (e.g. a ServerHello) is opaque.
        let server_hello = [0x16, 0x03, 0x03, 0x00, 0x10, 0x02, 0x00];
        assert_eq!(classify(&server_hello), Done(Protocol::Opaque));
        // An application-data record is opaque.
        assert_eq!(classify(&[0x17, 0x03, 0x03, 0, 5]), Done(Protocol::Opaque));
        // A bogus version byte is opaque.
        assert_eq!(classify(&[0x16, 0x09]), Done(Protocol::Opaque));
    }

    #[test]
    fn opaque_inputs() {
        for input in [
            &b"\x00\x01\x02"[..],
            b"SSH-2.0-OpenSSH_9.0\r\n",
            b"hello world\n",
            b"GET / FTP/1.0\r\n",
            b"GET\r\n",
            b"p",
            b"get / HTTP/1.1\r\n",
            b"ping",
            b"ABCDEFGHIJKLMNOPQRSTUVWXYZ",
            b"\r\n",
            &[0xff; 1024],
        ] {
            assert_eq!(classify(input), Done(Protocol::Opaque), "{input:?}");
        }
        assert_eq!(classify(b""), NeedMore);
    }

    #[test]
    fn never_panics_on_any_short_input() {
        // Every 1- and 2-byte input, and 3-byte inputs over a spread of values.
        for a in 0..=255u8 {
            classify(&[a]);
            for b in 0..=255u8 {
                classify(&[a, b]);
                classify(&[a, b, a ^ b, b'\n']);
            }
        }
    }
}
