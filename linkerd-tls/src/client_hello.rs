//! A pure parser for the TLS ClientHello that opens a connection.
//!
//! It only reads: the caller keeps the bytes and hands them on unchanged,
//! either to the TLS acceptor or to the opaque pass-through.

use std::collections::HashSet;

/// What the first bytes of a connection say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Parsed {
    /// A complete ClientHello.
    ClientHello(ClientHello),
    /// Could still be a ClientHello: read more bytes (the caller bounds how many and how long).
    Incomplete,
    /// Not a TLS ClientHello (or a malformed one): treat the connection as opaque.
    NotClientHello,
}

/// The parts of a ClientHello the proxy routes on.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ClientHello {
    /// The server_name extension's host_name, if present and a valid DNS name (ASCII, as sent).
    pub sni: Option<String>,
    /// The ALPN protocol names offered, in order.
    pub alpn: Vec<Vec<u8>>,
}

const CONTENT_TYPE_HANDSHAKE: u8 = 22;
const HANDSHAKE_CLIENT_HELLO: u8 = 1;
const RECORD_HEADER_LEN: usize = 5;
const HANDSHAKE_HEADER_LEN: usize = 4;
/// RFC 8446 5.1: a plaintext record carries at most 2^14 bytes.
const MAX_RECORD_LEN: usize = 1 << 14;
/// Bound on the ClientHello body. Real ones are under 2 KiB even with
/// post-quantum key shares; 64 KiB leaves room for large PSK/ticket sets
/// while bounding what one connection can make the proxy reassemble.
const MAX_CLIENT_HELLO_LEN: usize = 64 * 1024;
/// Version, random, an empty session id, one cipher suite and one
/// compression method: a shorter body is rejected from its header alone.
/// The most bytes a ClientHello the parser accepts can take on the wire: the largest message
/// (its handshake header and body) split into full records, each with its record header. A
/// reader buffering this much never gives up on a ClientHello the parser would take.
pub const MAX_CLIENT_HELLO_WIRE_LEN: usize = {
    let msg = HANDSHAKE_HEADER_LEN + MAX_CLIENT_HELLO_LEN;
    msg + msg.div_ceil(MAX_RECORD_LEN) * RECORD_HEADER_LEN
};
const MIN_CLIENT_HELLO_LEN: usize = 2 + 32 + 1 + 2 + 2 + 1 + 1;
const MAX_SESSION_ID_LEN: usize = 32;
const EXT_SERVER_NAME: u16 = 0;
const EXT_ALPN: u16 = 16;
const SERVER_NAME_HOST_NAME: u8 = 0;
const MAX_DNS_NAME_LEN: usize = 253;
const MAX_DNS_LABEL_LEN: usize = 63;

/// Why parsing stopped short of a ClientHello.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stop {
    /// The bytes so far are a valid prefix.
    Incomplete,
    /// The bytes so far can't start a ClientHello, whatever follows.
    Invalid,
}

type Result<T> = std::result::Result<T, Stop>;

/// Parses the start of a connection. Never panics, whatever the input.
///
/// The ClientHello may be split over several handshake records. Its body
/// is bounded to 64 KiB; a longer declared length is `NotClientHello`.
/// Bytes after the end of the ClientHello message are ignored. Every
/// decision is made on the earliest byte that settles it, so a prefix of
/// any input is either `Incomplete` or parses as the whole input does.
///
/// An SNI that is not a valid DNS name (e.g. with a trailing dot, an
/// underscore or non-ASCII bytes) yields `sni: None` rather than
/// `NotClientHello`: it can't be the proxy's identity, so the connection is
/// passed through either way, and the ALPN is still reported.
pub fn parse_client_hello(buf: &[u8]) -> Parsed {
    match parse(buf) {
        Ok(hello) => Parsed::ClientHello(hello),
        Err(Stop::Incomplete) => Parsed::Incomplete,
        Err(Stop::Invalid) => Parsed::NotClientHello,
    }
}

fn parse(buf: &[u8]) -> Result<ClientHello> {
    let msg = reassemble(buf)?;
    // Even an unfinished message may already be invalid.
    parse_handshake(&msg)
}

/// Collects handshake-record payloads until they hold the whole handshake
/// message or the input runs out.
fn reassemble(buf: &[u8]) -> Result<Vec<u8>> {
    let mut msg = Vec::new();
    let mut rest = buf;
    loop {
        let len = match record_header(rest) {
            Ok(len) => len,
            Err(Stop::Incomplete) => return Ok(msg),
            Err(Stop::Invalid) => return Err(Stop::Invalid),
        };
        let payload = rest.get(RECORD_HEADER_LEN..).unwrap_or_default();
        let Some((fragment, more)) = payload.split_at_checked(len) else {
            msg.extend_from_slice(payload);
            return Ok(msg);
        };
        msg.extend_from_slice(fragment);
        match body_len(&msg) {
            // Whatever follows the message is not ours to judge.
            Ok(len) if msg.len() >= HANDSHAKE_HEADER_LEN + len => return Ok(msg),
            Ok(_) | Err(Stop::Incomplete) => rest = more,
            Err(Stop::Invalid) => return Err(Stop::Invalid),
        }
    }
}

/// Checks a record header byte by byte; returns the payload length.
fn record_header(rec: &[u8]) -> Result<usize> {
    let byte = |i: usize| rec.get(i).copied().ok_or(Stop::Incomplete);
    if byte(0)? != CONTENT_TYPE_HANDSHAKE {
        return Err(Stop::Invalid);
    }
    if byte(1)? != 3 || byte(2)? > 4 {
        return Err(Stop::Invalid);
    }
    // Rejecting on the high byte alone keeps prefixes consistent.
    let hi = usize::from(byte(3)?);
    if hi << 8 > MAX_RECORD_LEN {
        return Err(Stop::Invalid);
    }
    let len = hi << 8 | usize::from(byte(4)?);
    // RFC 8446 5.1: no zero-length handshake fragments.
    if len == 0 || len > MAX_RECORD_LEN {
        return Err(Stop::Invalid);
    }
    Ok(len)
}

/// The body length declared by the ClientHello's handshake header.
fn body_len(msg: &[u8]) -> Result<usize> {
    let mut r = Reader::new(msg, HANDSHAKE_HEADER_LEN);
    if r.u8()? != HANDSHAKE_CLIENT_HELLO {
        return Err(Stop::Invalid);
    }
    let len = r.u24()?;
    if !(MIN_CLIENT_HELLO_LEN..=MAX_CLIENT_HELLO_LEN).contains(&len) {
        return Err(Stop::Invalid);
    }
    Ok(len)
}

fn parse_handshake(msg: &[u8]) -> Result<ClientHello> {
    let len = body_len(msg)?;
    let body = msg.get(HANDSHAKE_HEADER_LEN..).unwrap_or_default();
    let mut r = Reader::new(body, len);
    let hello = client_hello(&mut r)?;
    r.finish()?;
    Ok(hello)
}

/// RFC 8446 4.1.2 (the TLS 1.2 layout is the same up to the extensions).
fn client_hello(r: &mut Reader<'_>) -> Result<ClientHello> {
    if !matches!(r.take(2)?, [3, 0..=4]) {
        return Err(Stop::Invalid);
    }
    r.take(32)?; // random

    let session_id_len = usize::from(r.u8()?);
    if session_id_len > MAX_SESSION_ID_LEN {
        return Err(Stop::Invalid);
    }
    r.take(session_id_len)?;

    let cipher_suites_len = usize::from(r.u16()?);
    if cipher_suites_len < 2 || cipher_suites_len % 2 != 0 {
        return Err(Stop::Invalid);
    }
    r.take(cipher_suites_len)?;

    let compression_len = usize::from(r.u8()?);
    if compression_len < 1 {
        return Err(Stop::Invalid);
    }
    r.take(compression_len)?;

    let mut hello = ClientHello::default();
    // Pre-extension (SSL 3.0 era) ClientHellos end here.
    if r.at_end() {
        return Ok(hello);
    }
    let mut exts = r.vec16()?;
    let mut seen = HashSet::new();
    while !exts.at_end() {
        let ty = exts.u16()?;
        let mut data = exts.vec16()?;
        // RFC 8446 4.2: at most one extension of each type.
        if !seen.insert(ty) {
            return Err(Stop::Invalid);
        }
        match ty {
            EXT_SERVER_NAME => hello.sni = server_name(&mut data)?,
            EXT_ALPN => hello.alpn = alpn(&mut data)?,
            _ => {
                data.skip_rest()?;
            }
        }
        data.finish()?;
    }
    exts.finish()?;
    Ok(hello)
}

/// RFC 6066 3: the first host_name entry, if it is a valid DNS name.
fn server_name(r: &mut Reader<'_>) -> Result<Option<String>> {
    let mut list = r.vec16()?;
    if list.at_end() {
        return Err(Stop::Invalid);
    }
    let mut sni = None;
    let mut found = false;
    while !list.at_end() {
        let name_type = list.u8()?;
        // Only host_name is defined; later types are assumed to keep its
        // 16-bit length prefix.
        let name = list.vec16()?.skip_rest()?;
        if name_type == SERVER_NAME_HOST_NAME {
            // HostName<1..2^16-1>.
            if name.is_empty() {
                return Err(Stop::Invalid);
            }
            if !found {
                found = true;
                sni = dns_name(name);
            }
        }
    }
    list.finish()?;
    Ok(sni)
}

/// RFC 7301 3.1: a non-empty list of non-empty protocol names.
fn alpn(r: &mut Reader<'_>) -> Result<Vec<Vec<u8>>> {
    let mut list = r.vec16()?;
    if list.at_end() {
        return Err(Stop::Invalid);
    }
    let mut protocols = Vec::new();
    while !list.at_end() {
        let len = usize::from(list.u8()?);
        if len == 0 {
            return Err(Stop::Invalid);
        }
        protocols.push(list.take(len)?.to_vec());
    }
    list.finish()?;
    Ok(protocols)
}

/// A host name as RFC 6066 allows in SNI: LDH labels, no trailing dot.
fn dns_name(name: &[u8]) -> Option<String> {
    if name.len() > MAX_DNS_NAME_LEN {
        return None;
    }
    let valid_label = |label: &[u8]| {
        (1..=MAX_DNS_LABEL_LEN).contains(&label.len())
            && label
                .iter()
                .all(|&b| b.is_ascii_alphanumeric() || b == b'-')
            && label.first() != Some(&b'-')
            && label.last() != Some(&b'-')
    };
    if !name.split(|&b| b == b'.').all(valid_label) {
        return None;
    }
    String::from_utf8(name.to_vec()).ok()
}

/// A cursor over a TLS vector whose declared length may exceed the bytes
/// received so far. Reading past the declared length is `Invalid`; reading
/// past the received bytes (but within the declared length) is `Incomplete`.
struct Reader<'a> {
    /// The bytes received, never longer than `len`.
    buf: &'a [u8],
    pos: usize,
    /// The declared length.
    len: usize,
}

impl<'a> Reader<'a> {
    fn new(buf: &'a [u8], len: usize) -> Self {
        let buf = buf.get(..len).unwrap_or(buf);
        Self { buf, pos: 0, len }
    }

    fn at_end(&self) -> bool {
        self.pos >= self.len
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        let end = self.pos.checked_add(n).ok_or(Stop::Invalid)?;
        if end > self.len {
            return Err(Stop::Invalid);
        }
        let bytes = self.buf.get(self.pos..end).ok_or(Stop::Incomplete)?;
        self.pos = end;
        Ok(bytes)
    }

    fn u8(&mut self) -> Result<u8> {
        match self.take(1)? {
            [b] => Ok(*b),
            _ => Err(Stop::Invalid),
        }
    }

    fn u16(&mut self) -> Result<u16> {
        match self.take(2)? {
            [a, b] => Ok(u16::from_be_bytes([*a, *b])),
            _ => Err(Stop::Invalid),
        }
    }

    fn u24(&mut self) -> Result<usize> {
        match self.take(3)? {
            [a, b, c] => Ok(usize::from(*a) << 16 | usize::from(*b) << 8 | usize::from(*c)),
            _ => Err(Stop::Invalid),
        }
    }

    /// A sub-vector with a 16-bit length prefix. Its bytes need not all
    /// have arrived yet; its declared length must fit in this one.
    fn vec16(&mut self) -> Result<Reader<'a>> {
        let len = usize::from(self.u16()?);
        let end = self.pos.checked_add(len).ok_or(Stop::Invalid)?;
        if end > self.len {
            return Err(Stop::Invalid);
        }
        let buf = self.buf.get(self.pos..).unwrap_or_default();
        self.pos = end;
        Ok(Reader::new(buf, len))
    }

    fn skip_rest(&mut self) -> Result<&'a [u8]> {
        self.take(self.len.saturating_sub(self.pos))
    }

    /// Everything declared must have been consumed.
    fn finish(&self) -> Result<()> {
        if self.pos == self.len {
            Ok(())
        } else {
            Err(Stop::Invalid)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    /// `openssl s_client -connect 127.0.0.1:PORT -servername web.example.svc.cluster.local
    /// -alpn h2,http/1.1` (OpenSSL 3.0.19), captured by a local TCP listener.
    const OPENSSL_HELLO: &[&str] = &[
        "160301015c01000158030325adc0af9b940da4bc3bda6dba3631f6f5679bc344",
        "a498a696eb32ba2922826020b138a402b5fad68a5c44803daa6e5e70bb564d0b",
        "9f236b0976742443c7e04e32003e130213031301c02cc030009fcca9cca8ccaa",
        "c02bc02f009ec024c028006bc023c0270067c00ac0140039c009c0130033009d",
        "009c003d003c0035002f00ff010000d100000022002000001d7765622e657861",
        "6d706c652e7376632e636c75737465722e6c6f63616c000b000403000102000a",
        "00160014001d0017001e0019001801000101010201030104002300000010000e",
        "000c02683208687474702f312e310016000000170000000d002a002804030503",
        "0603080708080809080a080b0804080508060401050106010303030103020402",
        "05020602002b0009080304030303020301002d00020101003300260024001d00",
        "2085a8bfb3b3a4b69a7967c3e0cbeab66dc11c407115d3f19866f01477722943",
        "53",
    ];

    /// `curl --http2 --resolve api.example.com:PORT:127.0.0.1 https://api.example.com:PORT/`
    /// (curl 7.88.1, OpenSSL 3.0.19), captured the same way.
    const CURL_HELLO: &[&str] = &[
        "1603010200010001fc0303777090bba04829330a52a5ed229a36912e4571d85d",
        "acb6eaba37963baaa2fcd42081b73f07e6595e9699e9cde2371aa780dbb7c54e",
        "b3180a01e9af3dd0adc840be003e130213031301c02cc030009fcca9cca8ccaa",
        "c02bc02f009ec024c028006bc023c0270067c00ac0140039c009c0130033009d",
        "009c003d003c0035002f00ff0100017500000014001200000f6170692e657861",
        "6d706c652e636f6d000b000403000102000a00160014001d0017001e00190018",
        "010001010102010301040010000e000c02683208687474702f312e3100160000",
        "0017000000310000000d002a0028040305030603080708080809080a080b0804",
        "08050806040105010601030303010302040205020602002b0009080304030303",
        "020301002d00020101003300260024001d00204d85a7f3ab0fc51df25d18e448",
        "8d3162ae4d0e7f8b012580f18b1a43a45ed631001500ae000000000000000000",
        "0000000000000000000000000000000000000000000000000000000000000000",
        "0000000000000000000000000000000000000000000000000000000000000000",
        "0000000000000000000000000000000000000000000000000000000000000000",
        "0000000000000000000000000000000000000000000000000000000000000000",
        "0000000000000000000000000000000000000000000000000000000000000000",
        "0000000000",
    ];

    fn unhex(lines: &[&str]) -> Vec<u8> {
        let hex: String = lines.concat();
        (0..hex.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).expect("hex"))
            .collect()
    }

    fn rustls_hello(server_name: &str, alpn: &[&[u8]]) -> Vec<u8> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_root_certificates(rustls::RootCertStore::empty())
            .with_no_client_auth();
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        let name = rustls::pki_types::ServerName::try_from(server_name.to_string()).expect("name");
        let mut conn = rustls::ClientConnection::new(Arc::new(config), name).expect("conn");
        let mut out = Vec::new();
        while conn.wants_write() {
            conn.write_tls(&mut out).expect("write_tls");
        }
        out
    }

    const IDENTITY: &str = "default.emojivoto.serviceaccount.identity.linkerd.cluster.local";

    fn real_hellos() -> Vec<Vec<u8>> {
        vec![
            rustls_hello(IDENTITY, &[b"h2", b"http/1.1"]),
            rustls_hello("127.0.0.1", &[b"transport.l5d.io/v1"]),
            unhex(OPENSSL_HELLO),
            unhex(CURL_HELLO),
        ]
    }

    fn hello(sni: Option<&str>, alpn: &[&[u8]]) -> Parsed {
        Parsed::ClientHello(ClientHello {
            sni: sni.map(Into::into),
            alpn: alpn.iter().map(|p| p.to_vec()).collect(),
        })
    }

    /// The handshake bytes of a capture made of handshake records only.
    fn handshake_bytes(records: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        let mut rest = records;
        while !rest.is_empty() {
            assert_eq!(rest[0], CONTENT_TYPE_HANDSHAKE);
            let len = usize::from(u16::from_be_bytes([rest[3], rest[4]]));
            out.extend_from_slice(&rest[5..5 + len]);
            rest = &rest[5 + len..];
        }
        out
    }

    /// Frames handshake bytes into records of the given sizes; the last
    /// record takes what is left.
    fn frame(msg: &[u8], sizes: &[usize]) -> Vec<u8> {
        let mut out = Vec::new();
        let mut rest = msg;
        let mut sizes = sizes.iter();
        while !rest.is_empty() {
            let n = sizes.next().map_or(rest.len(), |&n| n.min(rest.len()));
            let (fragment, more) = rest.split_at(n);
            out.extend_from_slice(&[CONTENT_TYPE_HANDSHAKE, 3, 3]);
            out.extend_from_slice(&(n as u16).to_be_bytes());
            out.extend_from_slice(fragment);
            rest = more;
        }
        out
    }

    fn vec8(body: &[u8]) -> Vec<u8> {
        let mut v = vec![body.len() as u8];
        v.extend_from_slice(body);
        v
    }

    fn vec16(body: &[u8]) -> Vec<u8> {
        let mut v = (body.len() as u16).to_be_bytes().to_vec();
        v.extend_from_slice(body);
        v
    }

    /// A minimal ClientHello body (without extensions).
    fn body_prefix() -> Vec<u8> {
        let mut b = vec![3, 3];
        b.extend_from_slice(&[7; 32]);
        b.extend(vec8(&[1; 32]));
        b.extend(vec16(&[0x13, 0x01, 0x13, 0x02]));
        b.extend(vec8(&[0]));
        b
    }

    fn ext(ty: u16, body: &[u8]) -> Vec<u8> {
        let mut e = ty.to_be_bytes().to_vec();
        e.extend(vec16(body));
        e
    }

    fn sni_ext(name: &[u8]) -> Vec<u8> {
        let mut entry = vec![SERVER_NAME_HOST_NAME];
        entry.extend(vec16(name));
        ext(EXT_SERVER_NAME, &vec16(&entry))
    }

    fn alpn_ext(names: &[&[u8]]) -> Vec<u8> {
        let list: Vec<u8> = names.iter().flat_map(|n| vec8(n)).collect();
        ext(EXT_ALPN, &vec16(&list))
    }

    /// A single-record ClientHello around `body`.
    fn record(body: &[u8]) -> Vec<u8> {
        let mut msg = vec![HANDSHAKE_CLIENT_HELLO];
        msg.extend_from_slice(&(body.len() as u32).to_be_bytes()[1..]);
        msg.extend_from_slice(body);
        frame(&msg, &[])
    }

    fn with_exts(exts: &[Vec<u8>]) -> Vec<u8> {
        let mut body = body_prefix();
        body.extend(vec16(&exts.concat()));
        record(&body)
    }

    /// xorshift64*: deterministic, dependency-free.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }
        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }
    }

    #[test]
    fn rustls_sni_and_alpn() {
        let buf = rustls_hello(IDENTITY, &[b"h2", b"http/1.1"]);
        assert_eq!(
            parse_client_hello(&buf),
            hello(Some(IDENTITY), &[b"h2", b"http/1.1"])
        );
    }

    #[test]
    fn rustls_ip_server_name_sends_no_sni() {
        let buf = rustls_hello("127.0.0.1", &[b"transport.l5d.io/v1"]);
        assert_eq!(
            parse_client_hello(&buf),
            hello(None, &[b"transport.l5d.io/v1"])
        );
    }

    #[test]
    fn rustls_without_alpn() {
        let buf = rustls_hello("Web.Example.COM", &[]);
        assert_eq!(
            parse_client_hello(&buf),
            hello(Some("Web.Example.COM"), &[])
        );
    }

    #[test]
    fn openssl_capture() {
        assert_eq!(
            parse_client_hello(&unhex(OPENSSL_HELLO)),
            hello(Some("web.example.svc.cluster.local"), &[b"h2", b"http/1.1"])
        );
    }

    #[test]
    fn curl_capture() {
        assert_eq!(
            parse_client_hello(&unhex(CURL_HELLO)),
            hello(Some("api.example.com"), &[b"h2", b"http/1.1"])
        );
    }

    #[test]
    fn every_prefix_is_incomplete() {
        for buf in real_hellos() {
            for n in 0..buf.len() {
                assert_eq!(parse_client_hello(&buf[..n]), Parsed::Incomplete, "{n}");
            }
        }
    }

    #[test]
    fn fragmented_records_parse_identically() {
        let mut rng = Rng(0x5eed);
        for buf in real_hellos() {
            let want = parse_client_hello(&buf);
            let msg = handshake_bytes(&buf);
            let mut splits = vec![
                vec![1; msg.len()],
                vec![1, 1, 1, 1],
                vec![3, 100],
                vec![4],
                vec![msg.len() - 1],
                vec![msg.len() / 3, msg.len() / 3],
            ];
            for _ in 0..20 {
                splits.push((0..3).map(|_| 1 + rng.below(msg.len())).collect());
            }
            for sizes in splits {
                let framed = frame(&msg, &sizes);
                assert_eq!(parse_client_hello(&framed), want, "{sizes:?}");
                for n in 0..framed.len() {
                    assert_eq!(parse_client_hello(&framed[..n]), Parsed::Incomplete);
                }
            }
        }
    }

    #[test]
    fn bytes_after_the_message_are_ignored() {
        for buf in real_hellos() {
            let want = parse_client_hello(&buf);
            // ChangeCipherSpec, as TLS 1.3 middlebox compatibility sends next.
            let mut more = buf.clone();
            more.extend_from_slice(&[20, 3, 3, 0, 1, 1]);
            assert_eq!(parse_client_hello(&more), want);
            // Another handshake message coalesced into the same record.
            let mut msg = handshake_bytes(&buf);
            msg.extend_from_slice(&[0xff; 10]);
            assert_eq!(parse_client_hello(&frame(&msg, &[])), want);
        }
    }

    #[test]
    fn non_handshake_record_mid_message() {
        let msg = handshake_bytes(&rustls_hello(IDENTITY, &[b"h2"]));
        let first = frame(&msg[..50], &[]);
        let rest = frame(&msg[50..], &[]);
        for interloper in [
            &[21, 3, 3, 0, 2, 2, 40][..], // alert
            &[20, 3, 3, 0, 1, 1],         // change_cipher_spec
            &[23, 3, 3, 0, 1, 0],         // application_data
        ] {
            let buf = [&first[..], interloper, &rest[..]].concat();
            assert_eq!(parse_client_hello(&buf), Parsed::NotClientHello);
            // Decided on the interloper's first byte.
            let n = first.len() + 1;
            assert_eq!(parse_client_hello(&buf[..n]), Parsed::NotClientHello);
        }
    }

    #[test]
    fn plaintext_is_rejected_on_the_first_byte() {
        for buf in [
            &b"GET / HTTP/1.1\r\nHost: example.com\r\n\r\n"[..],
            b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
            b"\x15\x03\x03\x00\x02\x02\x28", // alert
            b"\x80\x2e\x01\x00\x02",         // SSLv2-style hello
            b"\x00",
        ] {
            assert_eq!(parse_client_hello(buf), Parsed::NotClientHello);
            assert_eq!(parse_client_hello(&buf[..1]), Parsed::NotClientHello);
        }
    }

    #[test]
    fn record_headers() {
        let cases: &[(&[u8], Parsed)] = &[
            (b"", Parsed::Incomplete),
            (b"\x16", Parsed::Incomplete),
            (b"\x16\x03", Parsed::Incomplete),
            (b"\x16\x03\x01\x00", Parsed::Incomplete),
            (b"\x16\x03\x01\x00\x10", Parsed::Incomplete),
            (b"\x16\x03\x04\x40\x00", Parsed::Incomplete),
            (b"\x16\x02", Parsed::NotClientHello),
            (b"\x16\x03\x05", Parsed::NotClientHello),
            (b"\x16\x03\x01\x41", Parsed::NotClientHello),
            (b"\x16\x03\x01\xff\xff", Parsed::NotClientHello),
            (b"\x16\x03\x01\x40\x01", Parsed::NotClientHello),
            (b"\x16\x03\x01\x00\x00", Parsed::NotClientHello),
            // A ServerHello, not a ClientHello.
            (b"\x16\x03\x03\x00\x10\x02", Parsed::NotClientHello),
        ];
        for (buf, want) in cases {
            assert_eq!(&parse_client_hello(buf), want, "{buf:x?}");
        }
    }

    #[test]
    fn handshake_length_bound() {
        let header = |len: u32| {
            let mut msg = vec![HANDSHAKE_CLIENT_HELLO];
            msg.extend_from_slice(&len.to_be_bytes()[1..]);
            msg.extend(body_prefix());
            frame(&msg, &[])
        };
        assert_eq!(
            parse_client_hello(&header(0xff_ffff)),
            Parsed::NotClientHello
        );
        assert_eq!(
            parse_client_hello(&header(MAX_CLIENT_HELLO_LEN as u32 + 1)),
            Parsed::NotClientHello
        );
        assert_eq!(
            parse_client_hello(&header(MAX_CLIENT_HELLO_LEN as u32)),
            Parsed::Incomplete
        );
        // Too short for the fixed fields: rejected before the body arrives.
        let short = [22, 3, 1, 0, 4, 1, 0, 0, 10];
        assert_eq!(parse_client_hello(&short), Parsed::NotClientHello);
    }

    #[test]
    fn the_largest_client_hello_fits_the_wire_bound() {
        // A body of exactly the bound (padded with a padding extension), in full records.
        let sni = sni_ext(b"api.example.com");
        let fixed = body_prefix().len() + 2 + sni.len() + 4;
        let padding = ext(21, &vec![0; MAX_CLIENT_HELLO_LEN - fixed]);
        let mut body = body_prefix();
        body.extend(vec16(&[sni, padding].concat()));
        assert_eq!(body.len(), MAX_CLIENT_HELLO_LEN);
        let mut msg = vec![HANDSHAKE_CLIENT_HELLO];
        msg.extend_from_slice(&(body.len() as u32).to_be_bytes()[1..]);
        msg.extend_from_slice(&body);
        let wire = frame(&msg, &[MAX_RECORD_LEN; 8]);
        assert_eq!(wire.len(), MAX_CLIENT_HELLO_WIRE_LEN);
        assert_eq!(
            parse_client_hello(&wire),
            hello(Some("api.example.com"), &[])
        );
        assert_eq!(
            parse_client_hello(&wire[..wire.len() - 1]),
            Parsed::Incomplete
        );
    }

    #[test]
    fn fixed_fields() {
        assert_eq!(
            parse_client_hello(&record(&body_prefix())),
            hello(None, &[])
        );

        let mut bad_version = body_prefix();
        bad_version[0] = 2;
        let mut long_session_id = body_prefix();
        long_session_id[34] = 33;
        let mut odd_suites = body_prefix();
        odd_suites[2 + 32 + 1 + 32 + 1] = 3;
        let mut no_suites = body_prefix();
        no_suites.truncate(2 + 32 + 1 + 32);
        no_suites.extend([0, 0]);
        no_suites.extend(vec8(&[0]));
        let mut no_compression = body_prefix();
        no_compression.pop();
        *no_compression.last_mut().unwrap() = 0;
        let mut no_compression_at_all = body_prefix();
        no_compression_at_all.pop();
        no_compression_at_all.pop();
        let mut trailing = body_prefix();
        trailing.extend(vec16(&[]));
        trailing.push(0);
        let mut truncated_exts = body_prefix();
        truncated_exts.push(0);
        for body in [
            bad_version,
            long_session_id,
            odd_suites,
            no_suites,
            no_compression,
            no_compression_at_all,
            trailing,
            truncated_exts,
        ] {
            assert_eq!(parse_client_hello(&record(&body)), Parsed::NotClientHello);
        }
    }

    #[test]
    fn extensions() {
        let ok = with_exts(&[
            ext(0xff01, &[0]),
            sni_ext(b"a.b"),
            alpn_ext(&[b"h2"]),
            ext(0x1234, &[]),
        ]);
        assert_eq!(parse_client_hello(&ok), hello(Some("a.b"), &[b"h2"]));
        assert_eq!(parse_client_hello(&with_exts(&[])), hello(None, &[]));

        // The first host_name wins; other name types are skipped.
        let mut list = vec![7];
        list.extend(vec16(b"opaque"));
        list.push(SERVER_NAME_HOST_NAME);
        list.extend(vec16(b"first.example"));
        list.push(SERVER_NAME_HOST_NAME);
        list.extend(vec16(b"second.example"));
        let buf = with_exts(&[ext(EXT_SERVER_NAME, &vec16(&list))]);
        assert_eq!(parse_client_hello(&buf), hello(Some("first.example"), &[]));
    }

    #[test]
    fn malformed_extensions() {
        let sni_entry = {
            let mut e = vec![SERVER_NAME_HOST_NAME];
            e.extend(vec16(b"a.example"));
            e
        };
        let mut sni_list_too_long = vec16(&sni_entry);
        sni_list_too_long[1] += 1;
        let mut sni_name_too_long = sni_entry.clone();
        sni_name_too_long[2] += 1;
        let mut alpn_name_too_long = vec16(&vec8(b"h2"));
        alpn_name_too_long[2] = 3;

        let cases = [
            vec![sni_ext(b"a.example"), sni_ext(b"b.example")],
            vec![alpn_ext(&[b"h2"]), alpn_ext(&[b"h2"])],
            vec![ext(0x1234, &[]), ext(0x1234, &[])],
            vec![ext(EXT_SERVER_NAME, &sni_list_too_long)],
            vec![ext(EXT_SERVER_NAME, &vec16(&sni_name_too_long))],
            vec![ext(EXT_SERVER_NAME, &[])],
            vec![ext(EXT_SERVER_NAME, &vec16(&[]))],
            vec![sni_ext(b"")],
            vec![ext(
                EXT_SERVER_NAME,
                &[&vec16(&sni_entry)[..], &[0]].concat(),
            )],
            vec![alpn_ext(&[b"h2", b""])],
            vec![alpn_ext(&[])],
            vec![ext(EXT_ALPN, &[])],
            vec![ext(EXT_ALPN, &alpn_name_too_long)],
            vec![ext(EXT_ALPN, &[&vec16(&vec8(b"h2"))[..], &[0]].concat())],
        ];
        for exts in cases {
            let buf = with_exts(&exts);
            assert_eq!(
                parse_client_hello(&buf),
                Parsed::NotClientHello,
                "{exts:x?}"
            );
        }

        // An extension whose length runs past the extensions block.
        let mut buf = with_exts(&[alpn_ext(&[b"h2"])]);
        let ext_len_at = buf.len() - 7;
        buf[ext_len_at] = 0xff;
        assert_eq!(parse_client_hello(&buf), Parsed::NotClientHello);
        // An extensions block longer than the message.
        let mut buf = with_exts(&[alpn_ext(&[b"h2"])]);
        let exts_len_at = buf.len() - 11;
        buf[exts_len_at] = 0xff;
        assert_eq!(parse_client_hello(&buf), Parsed::NotClientHello);
    }

    #[test]
    fn sni_validation() {
        let label63 = "a".repeat(63);
        let name253 = [
            &"a".repeat(63)[..],
            &"b".repeat(63),
            &"c".repeat(63),
            &"d".repeat(61),
        ]
        .join(".");
        assert_eq!(name253.len(), 253);
        for valid in [
            "localhost",
            "a-b.c0.example",
            "x",
            &label63,
            &name253,
            "1.2.3.4",
        ] {
            let buf = with_exts(&[sni_ext(valid.as_bytes())]);
            assert_eq!(parse_client_hello(&buf), hello(Some(valid), &[]), "{valid}");
        }
        let label64 = "a".repeat(64);
        let name254 = format!("{name253}a");
        for invalid in [
            &b"example.com."[..],
            b".example.com",
            b"a..b",
            b"-a.example",
            b"a-.example",
            b"a_b.example",
            b"a b",
            b"caf\xc3\xa9.example",
            b"\xff",
            label64.as_bytes(),
            name254.as_bytes(),
        ] {
            let buf = with_exts(&[sni_ext(invalid), alpn_ext(&[b"h2"])]);
            assert_eq!(
                parse_client_hello(&buf),
                hello(None, &[b"h2"]),
                "{invalid:x?}"
            );
        }
    }

    /// Whatever the bytes, a prefix is `Incomplete` or decides the same way.
    fn check_consistent(buf: &[u8], rng: &mut Rng) -> Parsed {
        let full = parse_client_hello(buf);
        for _ in 0..3 {
            let n = rng.below(buf.len() + 1);
            let p = parse_client_hello(&buf[..n]);
            assert!(
                p == Parsed::Incomplete || p == full,
                "{n}: {p:?} vs {full:?}"
            );
        }
        full
    }

    #[test]
    fn mutated_captures() {
        let mut rng = Rng(0x1234_5678_9abc_def0);
        let seeds = real_hellos();
        let mut counts = [0usize; 3];
        for i in 0..20_000 {
            let mut buf = seeds[i % seeds.len()].clone();
            for _ in 0..1 + rng.below(4) {
                let at = rng.below(buf.len());
                match rng.below(4) {
                    0 => buf[at] ^= 1 << rng.below(8),
                    1 => buf[at] = rng.next() as u8,
                    2 => buf[at] = [0, 0xff, 0x80, 1][rng.below(4)],
                    _ => buf.truncate(at),
                }
                if buf.is_empty() {
                    break;
                }
            }
            let idx = match check_consistent(&buf, &mut rng) {
                Parsed::ClientHello(_) => 0,
                Parsed::Incomplete => 1,
                Parsed::NotClientHello => 2,
            };
            counts[idx] += 1;
        }
        // The mutations reach every outcome.
        assert!(counts.iter().all(|&c| c > 0), "{counts:?}");
    }

    #[test]
    fn random_bytes() {
        let mut rng = Rng(42);
        for _ in 0..20_000 {
            let len = rng.below(300);
            let mut buf: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
            // Mostly plausible record headers, to get past the first checks.
            if rng.below(4) != 0 {
                let header = [22, 3, 1, 0, len.saturating_sub(5) as u8, 1, 0, 0];
                for (b, h) in buf.iter_mut().zip(header) {
                    *b = h;
                }
            }
            check_consistent(&buf, &mut rng);
        }
    }
}
