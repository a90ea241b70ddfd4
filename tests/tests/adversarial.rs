//! The proxy under attack, one test per finding of the hardening review (issue 16), each
//! bounded in time and count and on loopback only: what a hostile or broken client sends, and
//! what must hold for it and for everyone else.

use bytes::Bytes;
use http::Request;
use http_body_util::Full;
use linkerd_tests::{backend, ca::CaControl, client, metric_sum, proxy, scrape};
use std::{net::SocketAddr, time::Duration};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

/// The longest any one exchange in this file may take: a hang is a failure, not a wait.
const BOUND: Duration = Duration::from_secs(10);

/// Writes `request` on a new connection to `addr` and reads until the proxy closes it (every
/// request here says `Connection: close`, or is one the proxy answers by closing).
async fn exchange(addr: SocketAddr, request: &[u8]) -> String {
    let read = async {
        let mut s = TcpStream::connect(addr).await.expect("connect");
        s.write_all(request).await.expect("write");
        let mut out = Vec::new();
        let _ = s.read_to_end(&mut out).await;
        String::from_utf8_lossy(&out).into_owned()
    };
    tokio::time::timeout(BOUND, read)
        .await
        .expect("the proxy answers and closes within the bound")
}

fn status_of(response: &str) -> u16 {
    response
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {response:?}"))
}

/// The `name: value` line the `/headers` backend echoed for `name`, if any.
fn echoed<'a>(response: &'a str, name: &str) -> Vec<&'a str> {
    let prefix = format!("{name}: ");
    response
        .lines()
        .filter_map(|l| l.strip_prefix(prefix.as_str()))
        .collect()
}

// --- Host handling (finding 4) ---

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_absolute_form_request_goes_with_its_target_as_host() {
    let app = backend::http().await;
    let proxy = proxy(&[], None);
    let req = format!(
        "GET http://{}/headers HTTP/1.1\r\nHost: evil.example\r\nConnection: close\r\n\r\n",
        app.addr
    );
    let rsp = exchange(proxy.outbound_addr, req.as_bytes()).await;
    assert_eq!(status_of(&rsp), 200, "{rsp}");
    assert_eq!(
        echoed(&rsp, "host"),
        [app.addr.to_string().as_str()],
        "RFC 9112 3.2.2: the proxy replaces the client's Host with the target's: {rsp}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_host_headers_are_a_bad_request_and_reach_nobody() {
    let app = backend::http().await;
    for proxy in [proxy(&[], None), proxy(&[], Some(app.addr))] {
        for listener in [proxy.outbound_addr, proxy.inbound_addr] {
            let req = format!(
                "GET /headers HTTP/1.1\r\nHost: {}\r\nHost: other.example\r\nConnection: close\r\n\r\n",
                app.addr
            );
            let rsp = exchange(listener, req.as_bytes()).await;
            assert_eq!(status_of(&rsp), 400, "{rsp}");
        }
    }
    assert_eq!(app.requests(), 0, "no request with two Hosts was forwarded");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_host_is_a_bad_request() {
    let app = backend::http().await;
    let proxy = proxy(&[], Some(app.addr));
    let rsp = exchange(
        proxy.outbound_addr,
        b"GET / HTTP/1.1\r\nHost: a b@c\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(status_of(&rsp), 400, "{rsp}");
    assert_eq!(app.requests(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http2_host_that_differs_from_the_authority_is_a_bad_request() {
    let app = backend::http().await;
    let proxy = proxy(&[], Some(app.addr));
    let mut h2 = client::http2::<Full<Bytes>>(proxy.outbound_addr).await;
    let req = Request::get(format!("http://{}/headers", app.addr))
        .header("host", "other.example")
        .body(Full::default())
        .unwrap();
    let (status, body) = client::text(h2.send_request(req).await.unwrap()).await;
    assert_eq!(status, 400, "{body}");
    // The same authority in both is fine.
    let req = Request::get(format!("http://{}/headers", app.addr))
        .header("host", app.addr.to_string())
        .body(Full::default())
        .unwrap();
    let (status, body) = client::text(h2.send_request(req).await.unwrap()).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        app.requests(),
        1,
        "only the consistent request was forwarded"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_cannot_strip_host() {
    let app = backend::http().await;
    let proxy = proxy(&[], Some(app.addr));
    let rsp = exchange(
        proxy.outbound_addr,
        b"GET /headers HTTP/1.1\r\nHost: web.example\r\nConnection: Host, close\r\n\r\n",
    )
    .await;
    assert_eq!(status_of(&rsp), 200, "{rsp}");
    assert_eq!(echoed(&rsp, "host"), ["web.example"], "{rsp}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transfer_coding_the_proxy_would_drop_is_not_implemented() {
    let app = backend::http().await;
    let proxy = proxy(&[], Some(app.addr));
    let rsp = exchange(
        proxy.outbound_addr,
        b"POST /echo HTTP/1.1\r\nHost: web\r\nTransfer-Encoding: gzip, chunked\r\nConnection: close\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
    )
    .await;
    assert_eq!(status_of(&rsp), 501, "{rsp}");
    assert_eq!(
        app.requests(),
        0,
        "the gzip-coded body never reached the app"
    );
    // Plain chunked is carried.
    let rsp = exchange(
        proxy.outbound_addr,
        b"POST /echo HTTP/1.1\r\nHost: web\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
    )
    .await;
    assert_eq!(status_of(&rsp), 200, "{rsp}");
    assert!(rsp.contains("abc"), "{rsp}");
}

// --- Legitimate traffic the bounds broke (finding 6) ---

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_4_kib_request_line_is_served() {
    let app = backend::http().await;
    let path = format!("/long/{}", "a".repeat(4096));
    // Explicit mode (the absolute-form line is longer still) and transparent mode.
    let explicit = proxy(&[], None);
    let req = format!(
        "GET http://{}{path} HTTP/1.1\r\nHost: web\r\nConnection: close\r\n\r\n",
        app.addr
    );
    let rsp = exchange(explicit.outbound_addr, req.as_bytes()).await;
    assert_eq!(status_of(&rsp), 200, "{rsp}");
    let transparent = proxy(&[], Some(app.addr));
    let req = format!("GET {path} HTTP/1.1\r\nHost: web\r\nConnection: close\r\n\r\n");
    for listener in [transparent.outbound_addr, transparent.inbound_addr] {
        let rsp = exchange(listener, req.as_bytes()).await;
        assert_eq!(status_of(&rsp), 200, "{rsp}");
    }
    assert_eq!(app.requests(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_head_over_the_limit_is_answered_not_reset() {
    let app = backend::http().await;
    let proxy = proxy(&[("LINKERD2_PROXY_HTTP1_MAX_HEADER_BYTES", "16384")], None);
    let req = format!(
        "GET http://{}/{} HTTP/1.1\r\nHost: web\r\nConnection: close\r\n\r\n",
        app.addr,
        "a".repeat(20_000)
    );
    let rsp = exchange(proxy.outbound_addr, req.as_bytes()).await;
    assert_eq!(
        status_of(&rsp),
        431,
        "too large a head gets hyper's answer: {rsp}"
    );
    assert_eq!(app.requests(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_50_kib_client_hello_for_the_app_passes_through_a_meshed_proxy() {
    let ctl = CaControl::start("24h", &["server", "client"]).await;
    let echo = backend::tcp_echo().await;
    let server = linkerd_tests::ca::start_proxy(&ctl.proxy_env("server"), Some(echo));
    linkerd_tests::ca::ready(server.admin_addr).await;
    // TLS for the app's own name (not the proxy's identity): the proxy reads the whole
    // ClientHello to learn that, then forwards it untouched.
    let hello = padded(&client_hello(&ctl, "app.example.com"), 50 * 1024);
    assert!(hello.len() > 50 * 1024);
    let read = async {
        let mut s = TcpStream::connect(server.inbound_addr).await.unwrap();
        s.write_all(&hello).await.unwrap();
        s.shutdown().await.unwrap();
        let mut out = Vec::new();
        s.read_to_end(&mut out).await.unwrap();
        out
    };
    let out = tokio::time::timeout(BOUND, read)
        .await
        .expect("echoed in time");
    assert_eq!(
        out.len(),
        hello.len() + 3,
        "the echo of every byte, then bye"
    );
    assert_eq!(&out[..hello.len()], &hello[..]);
}

/// The ClientHello a rustls client with a mesh certificate sends for `server`.
fn client_hello(ctl: &CaControl, server: &str) -> Vec<u8> {
    let name = rustls::pki_types::ServerName::try_from(server.to_string()).unwrap();
    let mut conn = rustls::ClientConnection::new(ctl.client_config(Some("client")), name).unwrap();
    let mut hello = Vec::new();
    while conn.wants_write() {
        conn.write_tls(&mut hello).unwrap();
    }
    hello
}

/// `hello` (one record holding a ClientHello, as rustls writes it) with a padding extension of
/// `pad` bytes added first in its extension list, reframed in full 16 KiB records: the same
/// ClientHello, as a client with a large extension set would send it.
fn padded(hello: &[u8], pad: usize) -> Vec<u8> {
    let u16_at = |b: &[u8], i: usize| usize::from(u16::from_be_bytes([b[i], b[i + 1]]));
    let msg = &hello[5..];
    assert_eq!(msg[0], 1, "a ClientHello");
    let body = &msg[4..];
    let mut i = 2 + 32;
    i += 1 + usize::from(body[i]); // session id
    i += 2 + u16_at(body, i); // cipher suites
    i += 1 + usize::from(body[i]); // compression methods
    let exts_len = u16_at(body, i);
    let mut padding = 21u16.to_be_bytes().to_vec();
    padding.extend_from_slice(&(pad as u16).to_be_bytes());
    padding.extend(std::iter::repeat_n(0, pad));
    let mut new_body = body[..i].to_vec();
    new_body.extend_from_slice(&((exts_len + padding.len()) as u16).to_be_bytes());
    new_body.extend(padding);
    new_body.extend_from_slice(&body[i + 2..]);
    let mut new_msg = vec![1];
    new_msg.extend_from_slice(&(new_body.len() as u32).to_be_bytes()[1..]);
    new_msg.extend(new_body);
    let mut wire = Vec::new();
    for fragment in new_msg.chunks(16 * 1024) {
        wire.extend_from_slice(&[22, 3, 1]);
        wire.extend_from_slice(&(fragment.len() as u16).to_be_bytes());
        wire.extend_from_slice(fragment);
    }
    wire
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_50_kib_client_hello_for_the_proxy_is_terminated_not_passed_to_the_app() {
    let ctl = CaControl::start("24h", &["server", "client"]).await;
    let echo = backend::tcp_echo().await;
    let server = linkerd_tests::ca::start_proxy(&ctl.proxy_env("server"), Some(echo));
    linkerd_tests::ca::ready(server.admin_addr).await;
    // A real client's ClientHello for the proxy's identity, made 50 KiB larger.
    let hello = padded(
        &client_hello(&ctl, &linkerd_tests::ca::id("server")),
        50 * 1024,
    );
    let read = async {
        let mut s = TcpStream::connect(server.inbound_addr).await.unwrap();
        s.write_all(&hello).await.unwrap();
        let mut first = [0u8; 6];
        s.read_exact(&mut first).await.unwrap();
        first
    };
    let first = tokio::time::timeout(BOUND, read)
        .await
        .expect("an answer in time");
    assert_eq!(
        (first[0], first[5]),
        (22, 2),
        "the proxy answers with its ServerHello (not the app with the echoed ClientHello)"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_framing_errors_are_bad_requests_not_upstream_failures() {
    // An app that waits for the whole body before it answers (here: forever), so the body's
    // failure is what ends the request.
    let app = backend::blackhole().await;
    let proxy = proxy(&[], Some(app));
    for (what, req) in [
        (
            "a chunk size that is not hex",
            &b"POST /echo HTTP/1.1\r\nHost: web\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n"[..],
        ),
        (
            "a chunk without its CRLF",
            b"POST /echo HTTP/1.1\r\nHost: web\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabcdef\r\n0\r\n\r\n",
        ),
    ] {
        let rsp = exchange(proxy.outbound_addr, req).await;
        assert_eq!(status_of(&rsp), 400, "{what}: {rsp}");
    }
    let m = scrape(proxy.admin_addr).await;
    assert_eq!(
        metric_sum(&m, "response_total", &["status_code=\"502\""]),
        0.0,
        "no framing error is counted as an upstream failure:\n{m}"
    );
    assert_eq!(
        metric_sum(
            &m,
            "response_total",
            &["status_code=\"400\"", "error=\"request_body\""]
        ),
        2.0,
        "{m}"
    );
}

// --- Metrics cardinality (finding 2) ---

/// Sends `n` requests over one HTTP/2 connection to `addr`, each with its own random-looking
/// authority (`:authority`), 100 at a time; returns how many got a response.
async fn random_authorities(addr: SocketAddr, n: usize, host_len: usize) -> usize {
    let h2 = client::http2::<Full<Bytes>>(addr).await;
    let mut answered = 0;
    for batch in (0..n).collect::<Vec<_>>().chunks(100) {
        let sends = batch.iter().map(|i| {
            let mut h2 = h2.clone();
            let host = format!("{i:x}{}.example", "h".repeat(host_len.saturating_sub(16)));
            async move {
                let req = Request::get(format!("http://{host}/"))
                    .body(Full::default())
                    .unwrap();
                match h2.send_request(req).await {
                    // Read to the end: a dropped response resets its stream.
                    Ok(rsp) => client::text(rsp).await.0 == 200,
                    Err(_) => false,
                }
            }
        });
        answered += futures_util::future::join_all(sends)
            .await
            .into_iter()
            .filter(|ok| *ok)
            .count();
    }
    answered
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_authorities_from_a_client_leave_metrics_bounded() {
    let app = backend::http().await;
    // Inbound, authorities are not labels (as linkerd2-proxy, unless `unsafe`); outbound they
    // are, and the family cap holds (a small one here, to keep the test short).
    let proxy = proxy(
        &[("LINKERD2_PROXY_METRICS_MAX_SERIES", "100")],
        Some(app.addr),
    );
    let n = 20_000;
    let inbound = random_authorities(proxy.inbound_addr, n, 16);
    let outbound = random_authorities(proxy.outbound_addr, n, 16);
    let (inbound, outbound) = tokio::time::timeout(Duration::from_secs(120), async {
        tokio::join!(inbound, outbound)
    })
    .await
    .expect("40,000 requests in time");
    assert_eq!((inbound, outbound), (n, n), "every request was answered");
    let m = scrape(proxy.admin_addr).await;
    assert!(
        m.len() < 1024 * 1024,
        "/metrics is {} bytes after 40,000 distinct authorities",
        m.len()
    );
    // Every request is still counted, under its own series or the overflow one (inbound, the
    // scrape itself counts too).
    let inbound_total = metric_sum(&m, "request_total", &["direction=\"inbound\""]);
    assert!(
        (n as f64..=n as f64 + 1.0).contains(&inbound_total),
        "{inbound_total}"
    );
    assert_eq!(
        metric_sum(&m, "request_total", &["direction=\"outbound\""]),
        n as f64,
        "every request is still counted"
    );
    assert!(
        m.lines()
            .filter(|l| l.starts_with("request_total{") && l.contains("direction=\"inbound\""))
            .all(|l| !l.contains("authority=")),
        "no inbound authority label by default"
    );
    assert!(
        m.contains("request_total{direction=\"outbound\",authority=\"other\""),
        "the outbound overflow goes to one `other` series"
    );
    let overflowed = metric_sum(
        &m,
        "metrics_series_overflow_total",
        &["metric=\"request_total\""],
    );
    assert!(
        overflowed >= (n - 100) as f64,
        "overflow counted: {overflowed}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_4_kib_authority_does_not_make_a_4_kib_label() {
    let app = backend::http().await;
    let proxy = proxy(&[], Some(app.addr));
    let before = scrape(proxy.admin_addr).await.len();
    assert_eq!(random_authorities(proxy.outbound_addr, 1, 4096).await, 1);
    let m = scrape(proxy.admin_addr).await;
    let longest = m.lines().map(str::len).max().unwrap_or(0);
    assert!(longest < 1024, "the longest line is {longest} bytes");
    assert!(
        m.len() - before < 64 * 1024,
        "{} bytes more",
        m.len() - before
    );
}

// --- Limits and timeouts (finding 5) ---

/// Sends a `POST` whose 100-byte body trickles in a byte every 200 ms (for at most the
/// bound), and returns what the proxy answered.
async fn slow_post(addr: SocketAddr) -> String {
    let s = TcpStream::connect(addr).await.unwrap();
    let (mut rd, mut wr) = s.into_split();
    wr.write_all(b"POST /echo HTTP/1.1\r\nHost: web\r\nContent-Length: 100\r\n\r\n")
        .await
        .unwrap();
    let mut tick = tokio::time::interval(Duration::from_millis(200));
    let trickle = async move {
        for _ in 0..100 {
            tick.tick().await;
            if wr.write_all(b"x").await.is_err() {
                break;
            }
        }
        std::future::pending::<()>().await
    };
    let mut out = Vec::new();
    let read = rd.read_to_end(&mut out);
    let _ = tokio::time::timeout(BOUND, async {
        tokio::select! {
            _ = read => {}
            _ = trickle => {}
        }
    })
    .await;
    String::from_utf8_lossy(&out).into_owned()
}

/// Waits until the proxy whose admin server is `admin` holds no connection to an endpoint.
async fn no_upstream_connections(admin: SocketAddr) {
    linkerd_tests::eventually(BOUND, || async {
        let m = scrape(admin).await;
        let open = metric_sum(&m, "tcp_open_connections", &["peer=\"dst\""]);
        linkerd_tests::holds(open == 0.0, open)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_post_is_cut_at_the_request_body_timeout() {
    let app = backend::blackhole().await;
    let proxy = proxy(
        &[("LINKERD2_PROXY_HTTP_REQUEST_BODY_TIMEOUT", "1s")],
        Some(app),
    );
    let rsp = slow_post(proxy.outbound_addr).await;
    assert_eq!(status_of(&rsp), 408, "{rsp}");
    // The upstream connection is let go too.
    no_upstream_connections(proxy.admin_addr).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blackholed_backend_is_cut_at_the_response_headers_timeout() {
    let app = backend::blackhole().await;
    let proxy = proxy(
        &[("LINKERD2_PROXY_HTTP_RESPONSE_HEADERS_TIMEOUT", "1s")],
        Some(app),
    );
    let rsp = exchange(
        proxy.outbound_addr,
        b"GET / HTTP/1.1\r\nHost: web\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(status_of(&rsp), 504, "{rsp}");
    assert!(
        rsp.contains("l5d-proxy-error: no response headers"),
        "{rsp}"
    );
    no_upstream_connections(proxy.admin_addr).await;
}

/// Whether the proxy closes `s` (EOF or reset) before the bound, without a byte.
async fn closed_at_once(s: &mut TcpStream) -> bool {
    let mut buf = [0u8; 1];
    matches!(
        tokio::time::timeout(BOUND, s.read(&mut buf)).await,
        Ok(Ok(0) | Err(_))
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_over_the_limit_are_refused_while_served_ones_go_on() {
    let app = backend::http().await;
    let proxy = proxy(
        &[("LINKERD2_PROXY_INBOUND_MAX_CONNECTIONS", "20")],
        Some(app.addr),
    );
    // A legitimate client, connected first, keeps its connection.
    let mut legit = client::http1::<Full<Bytes>>(proxy.inbound_addr).await;
    legit.ready().await.unwrap();
    assert_eq!(
        client::text(legit.send_request(client::req("/")).await.unwrap())
            .await
            .0,
        200
    );
    // An attacker fills the rest of the limit with idle connections.
    let mut idle = Vec::new();
    for _ in 0..19 {
        idle.push(TcpStream::connect(proxy.inbound_addr).await.unwrap());
    }
    // Accepted and closed at once, counted.
    let mut over = TcpStream::connect(proxy.inbound_addr).await.unwrap();
    assert!(closed_at_once(&mut over).await, "over the limit: closed");
    // The legitimate client is still served, on the proxy's other listeners too.
    legit.ready().await.unwrap();
    let rsp = legit.send_request(client::req("/")).await.unwrap();
    assert_eq!(client::text(rsp).await.0, 200);
    assert_eq!(client::get(proxy.outbound_addr, "/").await.0, 200);
    let m = scrape(proxy.admin_addr).await;
    assert!(
        metric_sum(&m, "tcp_accept_refused_total", &["direction=\"inbound\""]) >= 1.0,
        "{m}"
    );
    // Once the idle ones go, new clients get in again.
    idle.clear();
    linkerd_tests::eventually(BOUND, || async {
        let rsp = exchange(
            proxy.inbound_addr,
            b"GET / HTTP/1.1\r\nHost: web\r\nConnection: close\r\n\r\n",
        )
        .await;
        linkerd_tests::holds(rsp.starts_with("HTTP/1.1 200"), rsp)
    })
    .await;
}

/// Writes one more header byte on each of `socks` every `every`, until the proxy has closed
/// them all or `bound` has passed; returns how many are still open.
async fn trickle(socks: &mut [TcpStream], every: Duration, bound: Duration) -> usize {
    let mut tick = tokio::time::interval(every);
    let started = tokio::time::Instant::now();
    let mut open = socks.len();
    while open > 0 && started.elapsed() < bound {
        tick.tick().await;
        open = 0;
        for s in socks.iter_mut() {
            if s.write_all(b"x").await.is_err() {
                continue;
            }
            let mut buf = [0u8; 256];
            // Closed (perhaps after an error response) or still waiting.
            if tokio::time::timeout(Duration::from_millis(1), s.read(&mut buf))
                .await
                .is_err()
            {
                open += 1;
            }
        }
    }
    open
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unfinished_large_heads_share_a_budget_and_small_ones_are_still_served() {
    let app = backend::http().await;
    let proxy = proxy(
        &[("LINKERD2_PROXY_HTTP1_MAX_BUFFERED_HEAD_BYTES", "1048576")],
        Some(app.addr),
    );
    let big_head = |len: usize| {
        let mut head = b"GET / HTTP/1.1\r\nHost: web\r\nX-Big: ".to_vec();
        head.extend(std::iter::repeat_n(b'a', len));
        head
    };
    // Ten clients each send 200 KiB of a head and never finish it: each charges 184 KiB (the
    // first 16 KiB are free), so the 1 MiB budget holds five.
    let mut socks = Vec::new();
    for _ in 0..10 {
        let mut s = TcpStream::connect(proxy.inbound_addr).await.unwrap();
        // The proxy may close it while it writes.
        let _ = s.write_all(&big_head(200 * 1024)).await;
        socks.push(s);
    }
    let open = |socks: &[TcpStream]| {
        let mut buf = [0u8; 1];
        socks
            .iter()
            .filter(|s| {
                matches!(s.try_read(&mut buf), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
            })
            .count()
    };
    let held = linkerd_tests::eventually(BOUND, || {
        let n = open(&socks);
        async move { linkerd_tests::holds(n <= 5, n).map(|()| n) }
    })
    .await;
    assert!(held >= 4, "the budget holds what fits: {held} open");
    // A client with a small head is served meanwhile.
    let rsp = exchange(
        proxy.inbound_addr,
        b"GET / HTTP/1.1\r\nHost: web\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(status_of(&rsp), 200, "{rsp}");
    // Once the unfinished heads go, a large head fits again.
    drop(socks);
    linkerd_tests::eventually(BOUND, || async {
        let mut req = big_head(200 * 1024);
        req.extend_from_slice(b"\r\nConnection: close\r\n\r\n");
        let rsp = exchange(proxy.inbound_addr, &req).await;
        linkerd_tests::holds(
            status_of(&rsp) == 200,
            rsp.chars().take(200).collect::<String>(),
        )
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trickling_admin_clients_are_cut_at_the_header_timeout() {
    let proxy = proxy(&[], None);
    let mut socks = Vec::new();
    for _ in 0..20 {
        let mut s = TcpStream::connect(proxy.admin_addr).await.unwrap();
        s.write_all(b"GET /ready HTTP/1.1\r\n").await.unwrap();
        socks.push(s);
    }
    // A header byte every 500 ms, for at most 20 s: every socket must be closed well before.
    let open = trickle(
        &mut socks,
        Duration::from_millis(500),
        Duration::from_secs(20),
    )
    .await;
    assert_eq!(open, 0, "the admin server closed every trickling client");
}

// --- What already held, kept as regression tests ---

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rapid_reset_leaves_the_proxy_serving_others() {
    let app = backend::http().await;
    let proxy = proxy(&[], Some(app.addr));
    // HEADERS then RST_STREAM, as fast as the connection takes them (CVE-2023-44487), for at
    // most 20,000 streams or until the proxy closes the connection.
    let attack = async {
        let io = TcpStream::connect(proxy.outbound_addr).await.unwrap();
        let (client, conn) = h2::client::handshake(io).await.unwrap();
        let conn = tokio::spawn(conn);
        let mut client = client;
        let mut reset = 0;
        for _ in 0..20_000 {
            client = match client.clone().ready().await {
                Ok(ready) => ready,
                Err(_) => break,
            };
            let req = Request::get(format!("http://{}/", app.addr))
                .body(())
                .unwrap();
            match client.send_request(req, true) {
                // Dropping both halves resets the stream.
                Ok((rsp, _)) => drop(rsp),
                Err(_) => break,
            }
            reset += 1;
        }
        drop(client);
        let _ = conn.await;
        reset
    };
    let reset = tokio::time::timeout(Duration::from_secs(60), attack)
        .await
        .expect("the attack ends (all sent, or the proxy closed the connection)");
    assert!(reset > 0);
    // Everyone else is still served at once.
    let rsp = exchange(
        proxy.outbound_addr,
        b"GET / HTTP/1.1\r\nHost: web\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(status_of(&rsp), 200, "{rsp}");
    let mut h2 = client::http2::<Full<Bytes>>(proxy.outbound_addr).await;
    let rsp = h2
        .send_request(
            Request::get(format!("http://{}/", app.addr))
                .body(Full::default())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(client::text(rsp).await.0, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slowloris_on_the_http_listeners_is_cut_at_the_header_read_timeout() {
    let app = backend::http().await;
    let proxy = proxy(
        &[("LINKERD2_PROXY_HTTP1_HEADER_READ_TIMEOUT", "1s")],
        Some(app.addr),
    );
    let mut socks = Vec::new();
    for listener in [proxy.outbound_addr, proxy.inbound_addr] {
        for _ in 0..10 {
            let mut s = TcpStream::connect(listener).await.unwrap();
            s.write_all(b"GET / HTTP/1.1\r\nHost: web\r\n")
                .await
                .unwrap();
            socks.push(s);
        }
    }
    // A header byte every 200 ms, for at most the bound: every socket must be closed before.
    let open = trickle(&mut socks, Duration::from_millis(200), BOUND).await;
    assert_eq!(open, 0, "every trickling client was cut");
    assert_eq!(app.requests(), 0, "no partial request reached the app");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http2_stream_outlives_the_request_body_timeout() {
    let app = backend::http().await;
    let proxy = proxy(
        &[("LINKERD2_PROXY_HTTP_REQUEST_BODY_TIMEOUT", "1s")],
        Some(app.addr),
    );
    // A streamed HTTP/2 body (no content-length, as gRPC streams send) that pauses past the
    // body timeout between its two chunks: a stream is not a slow upload, and is carried.
    let chunks = futures_util::stream::unfold(0, |i| async move {
        match i {
            0 => Some((
                Ok::<_, std::convert::Infallible>(hyper::body::Frame::data(Bytes::from("a"))),
                1,
            )),
            1 => {
                // Pacing the client's stream, not waiting for the proxy.
                tokio::time::sleep(Duration::from_millis(1500)).await;
                Some((Ok(hyper::body::Frame::data(Bytes::from("b"))), 2))
            }
            _ => None,
        }
    });
    let mut h2 = client::http2(proxy.outbound_addr).await;
    let req = Request::post(format!("http://{}/echo", app.addr))
        .body(http_body_util::StreamBody::new(Box::pin(chunks)))
        .unwrap();
    let rsp = tokio::time::timeout(BOUND, h2.send_request(req))
        .await
        .expect("answered in time")
        .unwrap();
    assert_eq!(client::text(rsp).await, (200, "ab".into()));
}

// --- One slow HTTP/2 client must not stall others (finding 3) ---

/// Opens `n` streams asking for `path` on one HTTP/2 connection whose client grants no stream
/// window (SETTINGS_INITIAL_WINDOW_SIZE 0) and never will; returns the connection and the
/// response bodies once every response head has arrived.
async fn zero_window_streams(
    proxy: SocketAddr,
    authority: SocketAddr,
    path: &str,
    n: usize,
) -> (h2::client::SendRequest<Bytes>, Vec<h2::RecvStream>) {
    let io = TcpStream::connect(proxy).await.unwrap();
    let (client, conn) = h2::client::Builder::new()
        .initial_window_size(0)
        .handshake::<_, Bytes>(io)
        .await
        .unwrap();
    tokio::spawn(conn);
    let mut client = client.ready().await.unwrap();
    let mut pending = Vec::with_capacity(n);
    for _ in 0..n {
        let req = Request::get(format!("http://{authority}{path}"))
            .body(())
            .unwrap();
        let (rsp, _) = client.send_request(req, true).unwrap();
        pending.push(rsp);
        client = client.ready().await.unwrap();
    }
    let mut bodies = Vec::with_capacity(n);
    for rsp in pending {
        let rsp = tokio::time::timeout(BOUND, rsp)
            .await
            .expect("a response head, which flow control does not hold")
            .unwrap();
        assert_eq!(rsp.status(), 200);
        bodies.push(rsp.into_body());
    }
    (client, bodies)
}

/// How many of `bodies` the proxy has reset (RST_STREAM CANCEL) by now.
fn cancelled(bodies: &mut [h2::RecvStream]) -> usize {
    use futures_util::FutureExt;
    bodies
        .iter_mut()
        .map(|b| match b.data().now_or_never() {
            Some(Some(Err(e))) => e.reason() == Some(h2::Reason::CANCEL),
            _ => false,
        })
        .filter(|&c| c)
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_zero_window_client_does_not_delay_another_clients_requests() {
    let app = backend::http().await;
    // The send-stall timeout is left at its default (60 s): only the per-connection share of
    // stalled streams can free the upstream connections within the bound.
    let proxy = proxy(&[], Some(app.addr));
    // 64 streams x the proxy's 64 KiB upstream stream window: four times the 1 MiB connection
    // window of every upstream connection the pool may open to the app.
    let (_attacker, mut bodies) =
        zero_window_streams(proxy.outbound_addr, app.addr, "/bytes/1048576", 64).await;
    // Another client's large responses from the same app, through the same upstream pool.
    let mut h2 = client::http2::<Full<Bytes>>(proxy.outbound_addr).await;
    for _ in 0..5 {
        let req = Request::get(format!("http://{}/bytes/262144", app.addr))
            .body(Full::default())
            .unwrap();
        let got = tokio::time::timeout(BOUND, async {
            let rsp = h2.send_request(req).await.unwrap();
            client::text(rsp).await
        })
        .await
        .expect("another client's response is not held by the stalled streams");
        assert_eq!((got.0, got.1.len()), (200, 262144));
    }
    // All but the connection's share (4 by default) were reset, and counted.
    let reset = linkerd_tests::eventually(BOUND, || {
        let n = cancelled(&mut bodies);
        async move { linkerd_tests::holds(n == 60, n).map(|()| n) }
    })
    .await;
    assert_eq!(reset, 60);
    let m = scrape(proxy.admin_addr).await;
    let share = metric_sum(
        &m,
        "http2_send_stall_resets_total",
        &[r#"direction="outbound""#, r#"reason="share""#],
    );
    assert_eq!(share, 60.0, "{m}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_holds_a_bounded_share_of_stalled_streams_over_all_its_connections() {
    let app = backend::http().await;
    let proxy = proxy(&[], Some(app.addr));
    // Inbound, three connections from one address, each with 4 stalled streams: within each
    // connection's share (4), beyond the client's (8).
    let mut conns = Vec::new();
    let mut bodies = Vec::new();
    for _ in 0..3 {
        let (conn, b) =
            zero_window_streams(proxy.inbound_addr, app.addr, "/bytes/1048576", 4).await;
        conns.push(conn);
        bodies.extend(b);
    }
    let reset = linkerd_tests::eventually(BOUND, || {
        let n = cancelled(&mut bodies);
        async move { linkerd_tests::holds(n == 4, n).map(|()| n) }
    })
    .await;
    assert_eq!(reset, 4);
    let m = scrape(proxy.admin_addr).await;
    let share = metric_sum(
        &m,
        "http2_send_stall_resets_total",
        &[r#"direction="inbound""#, r#"reason="share""#],
    );
    assert_eq!(share, 4.0, "{m}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_stream_is_reset_at_the_send_stall_timeout_and_a_slow_reader_is_not() {
    let app = backend::http().await;
    let proxy = proxy(
        &[("LINKERD2_PROXY_HTTP2_SEND_STALL_TIMEOUT", "2s")],
        Some(app.addr),
    );
    // One stream (within the connection's share) whose client takes nothing: reset at the
    // timeout, which releases its upstream stream.
    let (_attacker, mut bodies) =
        zero_window_streams(proxy.outbound_addr, app.addr, "/bytes/1048576", 1).await;
    linkerd_tests::eventually(BOUND, || {
        let n = cancelled(&mut bodies);
        async move { linkerd_tests::holds(n == 1, n) }
    })
    .await;
    let m = scrape(proxy.admin_addr).await;
    let timeouts = metric_sum(
        &m,
        "http2_send_stall_resets_total",
        &[r#"direction="outbound""#, r#"reason="timeout""#],
    );
    assert_eq!(timeouts, 1.0, "{m}");
    // A client that reads slowly but steadily (a 16 KiB frame every 100 ms, 4 s in all) keeps
    // its stream past the timeout: it takes data within every 2 s.
    let mut h2 = client::http2::<Full<Bytes>>(proxy.outbound_addr).await;
    let req = Request::get(format!("http://{}/bytes/655360", app.addr))
        .body(Full::default())
        .unwrap();
    let rsp = h2.send_request(req).await.unwrap();
    let mut body = rsp.into_body();
    let mut read = 0;
    while let Some(frame) = http_body_util::BodyExt::frame(&mut body).await {
        let frame = frame.expect("the slow reader's stream is not reset");
        if let Ok(data) = frame.into_data() {
            read += data.len();
            // Pacing the client's reads, not waiting for the proxy.
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    assert_eq!(read, 655360);
    let m = scrape(proxy.admin_addr).await;
    let total = metric_sum(&m, "http2_send_stall_resets_total", &[]);
    assert_eq!(total, 1.0, "only the stalled stream was reset: {m}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_http2_connection_is_closed_and_a_busy_one_is_not() {
    let app = backend::http().await;
    let proxy = proxy(
        &[("LINKERD2_PROXY_HTTP2_SERVER_IDLE_TIMEOUT", "1s")],
        Some(app.addr),
    );
    let mut idle = client::http2::<Full<Bytes>>(proxy.outbound_addr).await;
    let mut busy = client::http2::<Full<Bytes>>(proxy.outbound_addr).await;
    let get = |path: &str| {
        Request::get(format!("http://{}{path}", app.addr))
            .body(Full::default())
            .unwrap()
    };
    let rsp = idle.send_request(get("/")).await.unwrap();
    assert_eq!(client::text(rsp).await.0, 200);
    // A request that outlasts the idle timeout keeps its connection open.
    let slow = tokio::spawn(busy.send_request(get("/slow/3000")));
    linkerd_tests::eventually(BOUND, || {
        let closed = idle.is_closed();
        async move { linkerd_tests::holds(closed, "the idle connection is open") }
    })
    .await;
    let rsp = tokio::time::timeout(BOUND, slow)
        .await
        .expect("the slow response in time")
        .unwrap()
        .expect("the busy connection was not closed under its stream");
    assert_eq!(client::text(rsp).await, (200, "slow".into()));
    // Then it is idle too.
    linkerd_tests::eventually(BOUND, || {
        let closed = busy.is_closed();
        async move { linkerd_tests::holds(closed, "the once-busy connection is open") }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_http1_connection_is_closed_at_the_header_read_timeout() {
    let app = backend::http().await;
    let proxy = proxy(
        &[("LINKERD2_PROXY_HTTP1_HEADER_READ_TIMEOUT", "1s")],
        Some(app.addr),
    );
    let mut s = TcpStream::connect(proxy.outbound_addr).await.unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: web\r\n\r\n")
        .await
        .unwrap();
    // The response (keep-alive), then nothing from the client: closed once the next request
    // head is overdue.
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let closed = tokio::time::timeout(BOUND, async {
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "an idle keep-alive connection is closed");
    let text = String::from_utf8_lossy(&got);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
}

// --- Regression tests for what held (HTTP/2 floods, HPACK, smuggling) ---

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const DATA: u8 = 0;
const HEADERS: u8 = 1;
const RST_STREAM: u8 = 3;
const SETTINGS: u8 = 4;
const PING: u8 = 6;
const GOAWAY: u8 = 7;
const WINDOW_UPDATE: u8 = 8;
const CONTINUATION: u8 = 9;
const END_STREAM: u8 = 0x1;
const END_HEADERS: u8 = 0x4;

/// One raw HTTP/2 frame.
fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len();
    let mut f = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags];
    f.extend_from_slice(&stream.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// The preface and an empty SETTINGS: the start of every raw HTTP/2 client here.
fn h2_start() -> Vec<u8> {
    let mut v = PREFACE.to_vec();
    v.extend(frame(SETTINGS, 0, 0, &[]));
    v
}

/// An HPACK block for `METHOD http://web/` (static-table method, scheme and path; the
/// authority a literal with incremental indexing, so the dynamic table's entry 62).
fn request_block(post: bool) -> Vec<u8> {
    let mut b = vec![if post { 0x83 } else { 0x82 }, 0x86, 0x84, 0x41, 3];
    b.extend_from_slice(b"web");
    b
}

/// What the proxy said on a raw HTTP/2 connection, read frame by frame.
#[derive(Debug, Default)]
struct Heard {
    /// A GOAWAY, EOF or read error: the connection is over.
    closed: bool,
    /// A HEADERS frame on stream 1 (a response), and its first payload bytes.
    response: Option<Vec<u8>>,
    /// A RST_STREAM on stream 1.
    reset: bool,
}

/// Reads frames from `r` until the connection ends, or `until` says what was heard is enough.
async fn hear(mut r: tokio::net::tcp::OwnedReadHalf, until: fn(&Heard) -> bool) -> Heard {
    let mut heard = Heard::default();
    let mut buf = Vec::new();
    let mut chunk = vec![0u8; 64 * 1024];
    loop {
        while buf.len() >= 9 {
            let len = (buf[0] as usize) << 16 | (buf[1] as usize) << 8 | buf[2] as usize;
            if buf.len() < 9 + len {
                break;
            }
            let (kind, stream) = (buf[3], u32::from_be_bytes([buf[5], buf[6], buf[7], buf[8]]));
            match (kind, stream & 0x7fff_ffff) {
                (GOAWAY, _) => heard.closed = true,
                (HEADERS, 1) => heard.response = Some(buf[9..9 + len].to_vec()),
                (RST_STREAM, 1) => heard.reset = true,
                _ => {}
            }
            buf.drain(..9 + len);
        }
        if heard.closed || until(&heard) {
            return heard;
        }
        match r.read(&mut chunk).await {
            Ok(0) | Err(_) => {
                heard.closed = true;
                return heard;
            }
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

/// Writes `first`, then `repeat` over and over, to a new connection to `addr`: at most
/// `max_bytes` in all, or until the proxy ends the connection, while reading what it sends.
/// Returns what was heard and the bytes written.
async fn flood(addr: SocketAddr, first: &[u8], repeat: &[u8], max_bytes: usize) -> (Heard, usize) {
    let (r, mut w) = TcpStream::connect(addr).await.unwrap().into_split();
    let mut listening = tokio::spawn(hear(r, |_| false));
    let batch = repeat.repeat((64 * 1024 / repeat.len()).max(1));
    let mut written = 0;
    let writing = async {
        if w.write_all(first).await.is_err() {
            return;
        }
        written += first.len();
        while written < max_bytes {
            if w.write_all(&batch).await.is_err() {
                return;
            }
            written += batch.len();
        }
        // Everything sent: the proxy has the rest of the bound to end it (or not).
        std::future::pending::<()>().await
    };
    let heard = tokio::time::timeout(BOUND, async {
        tokio::select! {
            heard = &mut listening => Some(heard.unwrap()),
            () = writing => None,
        }
    })
    .await;
    let heard = match heard {
        Ok(Some(heard)) => heard,
        // The proxy stopped reading (the write failed): it then closes.
        Ok(None) => tokio::time::timeout(BOUND, listening)
            .await
            .map(|h| h.unwrap())
            .unwrap_or_default(),
        // The whole flood was taken within the bound and the connection stays open.
        Err(_) => Heard::default(),
    };
    (heard, written)
}

/// Downloads `path` on a raw HTTP/2 connection as grpc-go's bandwidth estimator does: a PING
/// for every DATA frame received (window credit returned in 32 KiB steps). Returns the bytes
/// received, or `None` if the proxy ended the connection first. It reads and writes at once,
/// as a real client does (a reader blocked on its own writes could deadlock with a server that
/// waits to write its PING ACKs).
async fn download_pinging_per_frame(addr: SocketAddr, path: &str) -> Option<usize> {
    let (mut r, mut w) = TcpStream::connect(addr).await.unwrap().into_split();
    let mut block = vec![0x82, 0x86, 0x04, path.len() as u8];
    block.extend_from_slice(path.as_bytes());
    block.extend_from_slice(&[0x41, 3]);
    block.extend_from_slice(b"web");
    let mut start = h2_start();
    start.extend(frame(HEADERS, END_HEADERS | END_STREAM, 1, &block));
    // What the reader answers, written by a task of its own (at most a few bytes per frame).
    let (answers, mut to_write) = tokio::sync::mpsc::unbounded_channel::<Vec<u8>>();
    let writer = tokio::spawn(async move {
        w.write_all(&start).await.ok()?;
        while let Some(mut answer) = to_write.recv().await {
            // Whatever else is ready goes in the same write.
            while let Ok(more) = to_write.try_recv() {
                answer.extend(more);
            }
            w.write_all(&answer).await.ok()?;
        }
        Some(())
    });
    let (mut buf, mut chunk) = (Vec::new(), vec![0u8; 64 * 1024]);
    let (mut received, mut unacked) = (0, 0u32);
    let got = 'read: loop {
        while buf.len() >= 9 {
            let len = (buf[0] as usize) << 16 | (buf[1] as usize) << 8 | buf[2] as usize;
            if buf.len() < 9 + len {
                break;
            }
            let (kind, flags) = (buf[3], buf[4]);
            let mut answer = Vec::new();
            match kind {
                GOAWAY => break 'read None,
                SETTINGS if flags & 0x1 == 0 => answer.extend(frame(SETTINGS, 0x1, 0, &[])),
                DATA if len > 0 => {
                    received += len;
                    answer.extend(frame(PING, 0, 0, &[3; 8]));
                    unacked += len as u32;
                    if unacked >= 32 * 1024 {
                        for stream in [0, 1] {
                            answer.extend(frame(WINDOW_UPDATE, 0, stream, &unacked.to_be_bytes()));
                        }
                        unacked = 0;
                    }
                }
                _ => {}
            }
            if kind == DATA && flags & END_STREAM != 0 {
                break 'read Some(received);
            }
            buf.drain(..9 + len);
            if !answer.is_empty() && answers.send(answer).is_err() {
                break 'read None;
            }
        }
        match r.read(&mut chunk).await {
            Ok(0) | Err(_) => break None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    };
    writer.abort();
    got
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pings_that_answer_the_proxys_data_are_not_a_flood() {
    let app = backend::http().await;
    // A bucket of 100 frames, 10 a second.
    let proxy = proxy(
        &[("LINKERD2_PROXY_HTTP2_MAX_CONTROL_FRAMES_PER_SECOND", "10")],
        Some(app.addr),
    );
    // 16 MiB: about 1,000 DATA frames, each answered by a PING (ten times the bucket). A
    // debug build on a loaded 2-core machine moves it in seconds; the bound is for a hang.
    let got = tokio::time::timeout(
        3 * BOUND,
        download_pinging_per_frame(proxy.outbound_addr, "/bytes/16777216"),
    )
    .await
    .expect("downloaded in time");
    assert_eq!(got, Some(16 << 20), "not cut off");
    // The same PINGs with no data to answer are a flood.
    let (heard, _) = flood(
        proxy.outbound_addr,
        &h2_start(),
        &frame(PING, 0, 0, &[3; 8]),
        1 << 20,
    )
    .await;
    assert!(heard.closed, "unanswered PINGs are cut off");
}

/// Another client, HTTP/1 and HTTP/2, is served at once.
async fn others_are_served(proxy: &linkerd_app::Proxy, app: SocketAddr) {
    let rsp = exchange(
        proxy.outbound_addr,
        b"GET / HTTP/1.1\r\nHost: web\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(status_of(&rsp), 200, "{rsp}");
    let mut h2 = client::http2::<Full<Bytes>>(proxy.outbound_addr).await;
    let req = Request::get(format!("http://{app}/"))
        .body(Full::default())
        .unwrap();
    let rsp = tokio::time::timeout(BOUND, h2.send_request(req))
        .await
        .expect("served within the bound")
        .unwrap();
    assert_eq!(client::text(rsp).await.0, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_continuation_flood_is_cut_off() {
    let app = backend::http().await;
    let proxy = proxy(&[], Some(app.addr));
    // HEADERS without END_HEADERS, then CONTINUATION frames of valid literal headers that
    // never end the block (the 2024 CONTINUATION flood), up to 32 MiB.
    let mut first = h2_start();
    first.extend(frame(HEADERS, 0, 1, &request_block(false)));
    let mut block = Vec::new();
    while block.len() < 16_000 {
        block.extend_from_slice(&[0x00, 3]);
        block.extend_from_slice(b"x-a");
        block.push(100);
        block.extend_from_slice(&[b'a'; 100]);
    }
    let (heard, written) = flood(
        proxy.outbound_addr,
        &first,
        &frame(CONTINUATION, 0, 1, &block),
        32 << 20,
    )
    .await;
    assert!(
        heard.closed,
        "the proxy ends the connection ({written} bytes sent)"
    );
    assert!(
        written < 32 << 20,
        "before the whole flood: {written} bytes"
    );
    assert_eq!(app.requests(), 0, "no request reached the app");
    others_are_served(&proxy, app.addr).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_hpack_bomb_is_refused_without_reaching_the_app() {
    let app = backend::http().await;
    let proxy = proxy(&[], Some(app.addr));
    // A 4,000-byte header put in the dynamic table once, then referenced 12,000 times in one
    // 16 KiB block: 48 MB of headers if decoded in full.
    let mut block = request_block(false);
    block.extend_from_slice(&[0x40, 6]);
    block.extend_from_slice(b"x-bomb");
    // 4000 as an HPACK integer with a 7-bit prefix: 127 + 3873.
    block.extend_from_slice(&[0x7f, 0xa1, 0x1e]);
    block.extend_from_slice(&[b'b'; 4000]);
    block.extend(std::iter::repeat_n(0x80 | 62, 12_000));
    let mut bytes = h2_start();
    bytes.extend(frame(HEADERS, END_STREAM | END_HEADERS, 1, &block));
    let (r, mut w) = TcpStream::connect(proxy.outbound_addr)
        .await
        .unwrap()
        .into_split();
    w.write_all(&bytes).await.unwrap();
    let heard = tokio::time::timeout(BOUND, hear(r, |h| h.reset || h.response.is_some()))
        .await
        .expect("the proxy answers within the bound");
    // Refused: a reset stream, a closed connection, or a response that is not the app's 200
    // (`:status: 200` is the static table's entry 8, 0x88).
    let served = heard
        .response
        .as_ref()
        .is_some_and(|b| b.first() == Some(&0x88));
    assert!(
        !served && (heard.reset || heard.closed || heard.response.is_some()),
        "{heard:?}"
    );
    assert_eq!(app.requests(), 0, "the request did not reach the app");
    others_are_served(&proxy, app.addr).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn control_frame_floods_are_cut_off_and_others_served() {
    let app = backend::http().await;
    let proxy = proxy(
        &[("LINKERD2_PROXY_HTTP2_MAX_CONTROL_FRAMES_PER_SECOND", "100")],
        Some(app.addr),
    );
    let mut with_stream = h2_start();
    with_stream.extend(frame(HEADERS, END_HEADERS, 1, &request_block(true)));
    for (what, first, repeat) in [
        (
            "WINDOW_UPDATE +1",
            h2_start(),
            frame(WINDOW_UPDATE, 0, 0, &1u32.to_be_bytes()),
        ),
        ("PING", h2_start(), frame(PING, 0, 0, &[7; 8])),
        ("SETTINGS", h2_start(), frame(SETTINGS, 0, 0, &[])),
        ("empty DATA", with_stream.clone(), frame(DATA, 0, 1, &[])),
    ] {
        // Up to 16 MiB of each (about 1.5 million frames); the proxy takes a burst of 1,000.
        let (heard, written) = flood(proxy.outbound_addr, &first, &repeat, 16 << 20).await;
        assert!(
            heard.closed,
            "{what}: the connection is closed ({written} bytes sent)"
        );
        assert!(
            written < 16 << 20,
            "{what}: cut before the end ({written} bytes)"
        );
        others_are_served(&proxy, app.addr).await;
    }
    // A client that moves a lot of data returns window credit in large steps: never cut.
    let mut h2 = client::http2::<Full<Bytes>>(proxy.outbound_addr).await;
    let body = Bytes::from(vec![b'x'; 8 << 20]);
    let req = Request::post(format!("http://{}/echo", app.addr))
        .body(Full::new(body))
        .unwrap();
    let rsp = tokio::time::timeout(BOUND, h2.send_request(req))
        .await
        .expect("answered in time")
        .unwrap();
    let (status, echoed) = client::text(rsp).await;
    assert_eq!((status, echoed.len()), (200, 8 << 20));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conflicting_framing_never_smuggles_a_request() {
    let app = backend::http().await;
    let proxy = proxy(&[], Some(app.addr));
    // Each carries a second request in what one reading calls the body: if the proxy and the
    // app read the framing differently, the app gets `/smuggled`.
    let smuggled = "GET /smuggled HTTP/1.1\r\nHost: web\r\n\r\n";
    let chunked = format!("0\r\n\r\n{smuggled}");
    let cl = smuggled.len() + 5;
    let cases: Vec<(&str, String)> = vec![
        (
            "CL then TE",
            format!("Content-Length: {cl}\r\nTransfer-Encoding: chunked\r\n\r\n{chunked}"),
        ),
        (
            "TE then CL",
            format!("Transfer-Encoding: chunked\r\nContent-Length: {cl}\r\n\r\n{chunked}"),
        ),
        (
            "two Content-Lengths",
            format!(
                "Content-Length: 0\r\nContent-Length: {}\r\n\r\n{smuggled}",
                smuggled.len()
            ),
        ),
        (
            "a Content-Length list",
            format!("Content-Length: 0, {}\r\n\r\n{smuggled}", smuggled.len()),
        ),
        (
            "a signed Content-Length",
            format!("Content-Length: +{}\r\n\r\n{smuggled}", smuggled.len()),
        ),
        (
            "a hex Content-Length",
            format!("Content-Length: 0x{:x}\r\n\r\n{smuggled}", smuggled.len()),
        ),
        (
            "TE: xchunked",
            format!("Transfer-Encoding: xchunked\r\n\r\n{chunked}"),
        ),
        (
            "TE: chunked, identity",
            format!("Transfer-Encoding: chunked, identity\r\n\r\n{chunked}"),
        ),
        (
            "TE twice",
            format!("Transfer-Encoding: chunked\r\nTransfer-Encoding: identity\r\n\r\n{chunked}"),
        ),
        (
            "a space before the colon",
            format!("Transfer-Encoding : chunked\r\nContent-Length: 0\r\n\r\n{chunked}"),
        ),
        (
            "TE folded",
            format!("Transfer-Encoding:\r\n chunked\r\nContent-Length: 0\r\n\r\n{chunked}"),
        ),
        (
            "a chunk size that overflows",
            format!(
                "Transfer-Encoding: chunked\r\n\r\nffffffffffffffffff1\r\n{smuggled}\r\n0\r\n\r\n"
            ),
        ),
        (
            "a chunk extension with a bare LF",
            format!("Transfer-Encoding: chunked\r\n\r\n0;a\n\r\n{smuggled}"),
        ),
    ];
    let mut answered = 0;
    for (what, rest) in &cases {
        let req = format!("POST /echo HTTP/1.1\r\nHost: web\r\n{rest}");
        let before = app.requests();
        let rsp = exchange(proxy.outbound_addr, req.as_bytes()).await;
        let status = status_of(&rsp);
        assert!(
            !rsp.contains("smuggled") || status == 200,
            "{what}: the app answered the smuggled request: {rsp}"
        );
        let reached = app.requests() - before;
        assert!(
            reached <= 1,
            "{what}: {reached} requests reached the app: {rsp}"
        );
        if reached == 1 {
            answered += 1;
        } else {
            assert!((400..=501).contains(&status), "{what}: {status}: {rsp}");
        }
    }
    // A last request on its own connection: by then every request that reached the app was
    // one the client sent and got an answer to (no smuggled one arrived late).
    others_are_served(&proxy, app.addr).await;
    assert_eq!(
        app.requests(),
        answered + 2,
        "only the clients' own requests reached the app"
    );
}
