//! Linkerd's opaque-transport header: `transport.l5d.io/v1\r\n\r\n`, a 4-byte big-endian
//! length, then a protobuf `transport.l5d.io.Header` naming the target port (and, for HTTP
//! carried this way, the session protocol).

use bytes::{Bytes, BytesMut};
use linkerd_proxy_api::opaque_transport as api;
use prost::Message;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt};

/// The header's first bytes.
pub const PREFACE: &[u8] = b"transport.l5d.io/v1\r\n\r\n";

/// A header longer than this is refused (it names a port and at most a DNS name).
const MAX_MESSAGE_LEN: usize = 1024;

/// What a client proxy tells the server proxy before the payload.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TransportHeader {
    /// The application port on the server's pod.
    pub port: u16,
    /// A name, for gateways; unused by the inbound proxy.
    pub name: Option<String>,
    /// When set, the payload is this protocol rather than opaque bytes.
    pub protocol: Option<SessionProtocol>,
}

/// The protocol carried after a transport header.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SessionProtocol {
    /// HTTP/1.x.
    Http1,
    /// HTTP/2.
    Http2,
}

/// Why a transport header could not be read.
#[derive(Debug, thiserror::Error)]
pub enum HeaderError {
    /// The bytes are not a transport header.
    #[error("the connection does not start with the transport header preface")]
    Preface,
    #[error("the transport header is {0} bytes long (at most {MAX_MESSAGE_LEN})")]
    /// The header is longer than any valid one.
    TooLong(usize),
    #[error("the transport header is not a valid message: {0}")]
    /// The header's message does not decode.
    Decode(#[from] prost::DecodeError),
    #[error("the transport header names port {0}, which is not a valid port")]
    /// The header names no valid port.
    Port(i32),
    #[error("the transport header was not received within {0:?}")]
    /// The header did not arrive in time.
    Timeout(Duration),
    #[error("failed to read the transport header: {0}")]
    /// Reading the connection failed.
    Io(#[from] std::io::Error),
}

impl TransportHeader {
    /// The bytes to send.
    pub fn encode(&self) -> Vec<u8> {
        let msg = api::Header {
            port: i32::from(self.port),
            name: self.name.clone().unwrap_or_default(),
            session_protocol: self.protocol.map(|p| api::SessionProtocol {
                kind: Some(match p {
                    SessionProtocol::Http1 => {
                        api::session_protocol::Kind::Http1(api::session_protocol::Http1 {})
                    }
                    SessionProtocol::Http2 => {
                        api::session_protocol::Kind::Http2(api::session_protocol::Http2 {})
                    }
                }),
            }),
        };
        let len = msg.encoded_len();
        let mut out = Vec::with_capacity(PREFACE.len() + 4 + len);
        out.extend_from_slice(PREFACE);
        // MAX_MESSAGE_LEN is far below u32::MAX for any header we build.
        out.extend_from_slice(&(len as u32).to_be_bytes());
        msg.encode(&mut out)
            .expect("a Vec grows to fit: encoding can't run out of space");
        out
    }

    /// Decodes a header from the start of `buf`: `Ok(None)` while it is incomplete, else the
    /// header and how many bytes it took.
    pub fn decode(buf: &[u8]) -> Result<Option<(Self, usize)>, HeaderError> {
        let n = buf.len().min(PREFACE.len());
        if buf[..n] != PREFACE[..n] {
            return Err(HeaderError::Preface);
        }
        let Some(len) = buf.get(PREFACE.len()..PREFACE.len() + 4) else {
            return Ok(None);
        };
        let len = u32::from_be_bytes([len[0], len[1], len[2], len[3]]) as usize;
        if len > MAX_MESSAGE_LEN {
            return Err(HeaderError::TooLong(len));
        }
        let start = PREFACE.len() + 4;
        let Some(msg) = buf.get(start..start + len) else {
            return Ok(None);
        };
        let msg = api::Header::decode(msg)?;
        let port = u16::try_from(msg.port)
            .ok()
            .filter(|p| *p != 0)
            .ok_or(HeaderError::Port(msg.port))?;
        let protocol = msg.session_protocol.and_then(|p| p.kind).map(|k| match k {
            api::session_protocol::Kind::Http1(_) => SessionProtocol::Http1,
            api::session_protocol::Kind::Http2(_) => SessionProtocol::Http2,
        });
        let header = Self {
            port,
            name: (!msg.name.is_empty()).then_some(msg.name),
            protocol,
        };
        Ok(Some((header, start + len)))
    }

    /// Reads a header from `io`; returns it and the payload bytes read after it.
    pub async fn read<I: AsyncRead + Unpin>(
        io: &mut I,
        timeout: Duration,
    ) -> Result<(Self, Bytes), HeaderError> {
        let read = async {
            let mut buf = BytesMut::with_capacity(128);
            loop {
                if let Some((header, n)) = Self::decode(&buf)? {
                    let rest = buf.split_off(n).freeze();
                    return Ok((header, rest));
                }
                if io.read_buf(&mut buf).await? == 0 {
                    return Err(HeaderError::Io(std::io::ErrorKind::UnexpectedEof.into()));
                }
            }
        };
        tokio::time::timeout(timeout, read)
            .await
            .map_err(|_| HeaderError::Timeout(timeout))?
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header() -> TransportHeader {
        TransportHeader {
            port: 8080,
            name: Some("web.default.svc.cluster.local".into()),
            protocol: Some(SessionProtocol::Http1),
        }
    }

    #[test]
    fn round_trips_and_reports_incomplete_prefixes() {
        for h in [
            header(),
            TransportHeader {
                port: 5432,
                name: None,
                protocol: None,
            },
        ] {
            let mut bytes = h.encode();
            for n in 0..bytes.len() {
                assert!(
                    matches!(TransportHeader::decode(&bytes[..n]), Ok(None)),
                    "{n}"
                );
            }
            bytes.extend_from_slice(b"payload");
            let (decoded, n) = TransportHeader::decode(&bytes).unwrap().unwrap();
            assert_eq!(decoded, h);
            assert_eq!(&bytes[n..], b"payload");
        }
    }

    #[test]
    fn refuses_what_is_not_a_header() {
        assert!(matches!(
            TransportHeader::decode(b"GET / HTTP/1.1\r\n"),
            Err(HeaderError::Preface)
        ));
        let mut long = PREFACE.to_vec();
        long.extend_from_slice(&u32::MAX.to_be_bytes());
        assert!(matches!(
            TransportHeader::decode(&long),
            Err(HeaderError::TooLong(_))
        ));
        let mut garbage = PREFACE.to_vec();
        garbage.extend_from_slice(&[0, 0, 0, 3, 0xff, 0xff, 0xff]);
        assert!(matches!(
            TransportHeader::decode(&garbage),
            Err(HeaderError::Decode(_))
        ));
        let mut port0 = PREFACE.to_vec();
        port0.extend_from_slice(&[0, 0, 0, 0]);
        assert!(matches!(
            TransportHeader::decode(&port0),
            Err(HeaderError::Port(0))
        ));
        let bad_port = api::Header {
            port: 70000,
            ..Default::default()
        }
        .encode_to_vec();
        let mut big = PREFACE.to_vec();
        big.extend_from_slice(&(bad_port.len() as u32).to_be_bytes());
        big.extend_from_slice(&bad_port);
        assert!(matches!(
            TransportHeader::decode(&big),
            Err(HeaderError::Port(70000))
        ));
    }

    #[test]
    fn mutated_headers_never_panic() {
        let base = header().encode();
        let mut state = 0x9e37_79b9_7f4a_7c15_u64;
        for _ in 0..20_000 {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let mut b = base.clone();
            let i = (state as usize) % b.len();
            b[i] = (state >> 32) as u8;
            b.truncate(((state >> 16) as usize) % (b.len() + 1));
            let _ = TransportHeader::decode(&b);
        }
    }

    #[tokio::test]
    async fn reads_from_a_stream_with_a_timeout() {
        let mut bytes = header().encode();
        bytes.extend_from_slice(b"GET /");
        let (h, rest) = TransportHeader::read(&mut &bytes[..], Duration::from_secs(1))
            .await
            .unwrap();
        assert_eq!(h, header());
        assert_eq!(&rest[..], b"GET /");

        let (_client, mut server) = tokio::io::duplex(64);
        let e = TransportHeader::read(&mut server, Duration::from_millis(20))
            .await
            .unwrap_err();
        assert!(matches!(e, HeaderError::Timeout(_)));
    }
}
