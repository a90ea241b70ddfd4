//! The `linkerd-control` binary: serves the file, streams changes within a second, keeps the
//! last good config when the file turns bad.

mod common;

use common::Control;
use linkerd_proxy_api::destination::{
    destination_client::DestinationClient, update, GetDestination, Update,
};
use std::{process::Command, time::Duration};

const MESH: &str = "
services:
  - name: web.default.svc.cluster.local
    port: 8080
    endpoints:
      - addr: 127.0.0.1:9001
        labels: { pod: web-1 }
      - addr: 127.0.0.1:9002
        weight: 2
";

fn kinds(u: &Update) -> String {
    match u.update.as_ref().unwrap() {
        update::Update::Add(s) => {
            let mut a: Vec<String> = s
                .addrs
                .iter()
                .map(|w| {
                    w.addr
                        .as_ref()
                        .unwrap()
                        .to_socket_addr()
                        .unwrap()
                        .to_string()
                })
                .collect();
            a.sort();
            format!("add {}", a.join(" "))
        }
        update::Update::Remove(s) => format!(
            "remove {}",
            s.addrs
                .iter()
                .map(|w| w.to_socket_addr().unwrap().to_string())
                .collect::<Vec<_>>()
                .join(" ")
        ),
        update::Update::NoEndpoints(n) => format!("none exists={}", n.exists),
    }
}

async fn next(s: &mut tonic::Streaming<Update>) -> String {
    let u = tokio::time::timeout(Duration::from_secs(2), s.message())
        .await
        .expect("an update within 2s")
        .unwrap()
        .expect("the stream stays open");
    kinds(&u)
}

#[tokio::test]
async fn serves_and_follows_the_file() {
    let control = Control::start("destination", MESH);
    let mut client = DestinationClient::new(control.channel().await);
    let get = |path: &str| GetDestination {
        scheme: "k8s".into(),
        path: path.into(),
        context_token: String::new(),
    };
    let mut web = client
        .get(get("web.default.svc.cluster.local:8080"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(next(&mut web).await, "add 127.0.0.1:9001 127.0.0.1:9002");

    let mut unknown = client
        .get(get("nope.default.svc.cluster.local:80"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(next(&mut unknown).await, "none exists=false");

    // A bad file changes nothing; the next good one is streamed as a diff.
    control.write(&MESH.replace("127.0.0.1:9002", "not-an-address"));
    tokio::time::sleep(Duration::from_millis(600)).await;
    control.write(&MESH.replace(
        "      - addr: 127.0.0.1:9002\n        weight: 2\n",
        "      - addr: 127.0.0.1:9003\n",
    ));
    let a = next(&mut web).await;
    let b = next(&mut web).await;
    assert_eq!(
        (a.as_str(), b.as_str()),
        ("remove 127.0.0.1:9002", "add 127.0.0.1:9003")
    );

    // The unknown service appears.
    control.write(&format!("{MESH}  - name: nope.default.svc.cluster.local\n    port: 80\n    endpoints:\n      - addr: 127.0.0.1:7000\n"));
    assert_eq!(next(&mut unknown).await, "add 127.0.0.1:7000");
}

#[test]
fn a_bad_file_at_start_exits_2_with_the_line() {
    let dir = std::env::temp_dir().join(format!("linkerd-control-bad-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("mesh.yaml");
    std::fs::write(&file, MESH.replace("weight: 2", "weight: heavy")).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_linkerd-control"))
        .args([
            "--config",
            file.to_str().unwrap(),
            "--listen",
            "127.0.0.1:0",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("weight") && err.contains("line 9"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}
