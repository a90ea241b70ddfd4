//! `linkerd-bench --smoke`: every scenario against every available topology completes with
//! zero errors, so the harness can't rot. Timing is not asserted.

use std::process::Command;

#[test]
fn smoke() {
    let out_dir = std::env::temp_dir().join(format!("linkerd-bench-smoke-{}", std::process::id()));
    let out_file = out_dir.join("smoke.json");
    let out = Command::new(env!("CARGO_BIN_EXE_linkerd-bench"))
        .arg("--smoke")
        .arg("--out")
        .arg(&out_file)
        .output()
        .expect("run linkerd-bench");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "linkerd-bench --smoke failed:\n{stdout}\n{stderr}"
    );

    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&out_file).expect("results file"))
            .expect("valid JSON");
    let _ = std::fs::remove_dir_all(&out_dir);
    let results = json["results"].as_array().expect("results");
    let topologies: Vec<&str> = results
        .iter()
        .filter_map(|r| r["topology"].as_str())
        .collect();
    for scenario in [
        "http1-keepalive",
        "http1-keepalive-max",
        "http1-conn-per-request",
        "http2",
        "grpc-unary",
        "tcp-pingpong",
        "tcp-bulk",
    ] {
        for topology in ["direct", "proxy"] {
            let cell = results
                .iter()
                .find(|r| r["scenario"] == scenario && r["topology"] == topology)
                .unwrap_or_else(|| panic!("{scenario}/{topology} missing:\n{stdout}"));
            assert_eq!(cell["errors"], 0, "{scenario}/{topology}");
            assert!(
                cell["requests"].as_u64().unwrap() > 0,
                "{scenario}/{topology}"
            );
            assert!(cell["latency_us"]["p99"].is_number());
        }
    }
    let has = |t: &str| topologies.contains(&t);
    if std::env::var("LINKERD_REQUIRE_NETNS").as_deref() == Ok("1") {
        assert!(
            has("proxy-pair") && has("direct-veth"),
            "the namespace topologies must run here:\n{stdout}"
        );
        let control = std::path::Path::new(env!("CARGO_BIN_EXE_linkerd-bench"))
            .with_file_name("linkerd-control");
        assert_eq!(
            has("proxy-pair-mtls") && has("proxy-pair-h2"),
            control.exists(),
            "the mTLS pair runs exactly when linkerd-control is built:\n{stdout}"
        );
    }
    let haproxy = Command::new("haproxy")
        .arg("-v")
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    assert_eq!(
        has("haproxy"),
        haproxy,
        "haproxy runs exactly when installed:\n{stdout}"
    );
    // The balance scenario runs when `linkerd-control` was built beside the bench (as in a
    // workspace test run).
    let control =
        std::path::Path::new(env!("CARGO_BIN_EXE_linkerd-bench")).with_file_name("linkerd-control");
    if control.exists() {
        for t in [
            "p2c-ewma-healthy",
            "p2c-ewma-slow",
            "round-robin-slow",
            "10k-endpoints",
        ] {
            let cell = results
                .iter()
                .find(|r| r["topology"] == t)
                .unwrap_or_else(|| panic!("{t} missing:\n{stdout}"));
            assert_eq!(cell["errors"], 0, "{t}");
        }
    }
    assert!(json["machine"]["cpus"].as_u64().unwrap() >= 1);
}
