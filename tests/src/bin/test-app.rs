//! A stand-alone test app and client, for tests that run processes in network namespaces.
//!
//! - `test-app http ADDR`: the HTTP test backend (see `linkerd_tests::backend::http`);
//! - `test-app echo ADDR`: the TCP echo server;
//! - `test-app tcp-client ADDR PAYLOAD`: connects, sends PAYLOAD, half-closes, prints the reply;
//! - `test-app dns ADDR NAME=IP...`: an authoritative DNS server (UDP) for these A records;
//! - `test-app banner ADDR TEXT`: a server that speaks first: TEXT on each connection, then
//!   an echo;
//! - `test-app banner-client ADDR`: waits (15 s at most) for the server's first bytes, then
//!   sends `ping`, half-closes and prints how many milliseconds the first bytes took and all
//!   it received (`<ms> <bytes>`).
#![forbid(unsafe_code)]

use std::{net::SocketAddr, process::ExitCode, time::Duration};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let addr = |s: &str| -> SocketAddr { s.parse().expect("an IP:port address") };
    match args
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .as_slice()
    {
        ["http", a] => {
            linkerd_tests::backend::http_on(addr(a)).await;
            std::future::pending::<()>().await;
        }
        ["echo", a] => {
            linkerd_tests::backend::tcp_echo_on(addr(a)).await;
            std::future::pending::<()>().await;
        }
        ["dns", a, records @ ..] => {
            let records = records
                .iter()
                .filter_map(|r| r.split_once('='))
                .map(|(n, ip)| (n.to_lowercase(), ip.parse().expect("an IPv4 address")))
                .collect();
            if let Err(e) = linkerd_dns::test_server::serve(addr(a), records).await {
                eprintln!("dns: {e}");
                return ExitCode::FAILURE;
            }
            std::future::pending::<()>().await;
        }
        ["tcp-client", a, payload] => {
            let io = async {
                let mut s = tokio::net::TcpStream::connect(addr(a)).await?;
                s.write_all(payload.as_bytes()).await?;
                s.shutdown().await?;
                let mut out = Vec::new();
                s.read_to_end(&mut out).await?;
                Ok::<_, std::io::Error>(out)
            };
            match tokio::time::timeout(Duration::from_secs(10), io).await {
                Ok(Ok(out)) => print!("{}", String::from_utf8_lossy(&out)),
                Ok(Err(e)) => {
                    eprintln!("tcp-client: {e}");
                    return ExitCode::FAILURE;
                }
                Err(_) => {
                    eprintln!("tcp-client: timed out");
                    return ExitCode::FAILURE;
                }
            }
        }
        ["banner", a, text] => {
            let listener = tokio::net::TcpListener::bind(addr(a))
                .await
                .expect("bind the banner server");
            let text = text.as_bytes().to_vec();
            loop {
                let Ok((mut s, _)) = listener.accept().await else {
                    continue;
                };
                let text = text.clone();
                tokio::spawn(async move {
                    s.write_all(&text).await?;
                    let (mut r, mut w) = s.split();
                    tokio::io::copy(&mut r, &mut w).await?;
                    w.shutdown().await
                });
            }
        }
        ["banner-client", a] => {
            let io = async {
                let mut s = tokio::net::TcpStream::connect(addr(a)).await?;
                let start = tokio::time::Instant::now();
                let mut out = vec![0; 1024];
                let n = s.read(&mut out).await?;
                let waited = start.elapsed();
                out.truncate(n);
                s.write_all(b"ping").await?;
                s.shutdown().await?;
                s.read_to_end(&mut out).await?;
                Ok::<_, std::io::Error>((waited, out))
            };
            match tokio::time::timeout(Duration::from_secs(15), io).await {
                Ok(Ok((waited, out))) => {
                    print!("{} {}", waited.as_millis(), String::from_utf8_lossy(&out))
                }
                Ok(Err(e)) => {
                    eprintln!("banner-client: {e}");
                    return ExitCode::FAILURE;
                }
                Err(_) => {
                    eprintln!("banner-client: timed out");
                    return ExitCode::FAILURE;
                }
            }
        }
        _ => {
            eprintln!("usage: test-app http ADDR | echo ADDR | tcp-client ADDR PAYLOAD | dns ADDR NAME=IP... | banner ADDR TEXT | banner-client ADDR");
            return ExitCode::from(2);
        }
    }
    ExitCode::SUCCESS
}
