use super::*;
use linkerd_proxy_transport::SocketOptions;

fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn err(name: &str, value: &str) -> ConfigError {
    Config::from_env(&env(&[(name, value)])).expect_err(&format!("{name}={value} must be rejected"))
}

#[test]
fn defaults() {
    let c = Config::from_env(&HashMap::new()).unwrap();
    assert_eq!(c.inbound.listen_addr, "0.0.0.0:4143".parse().unwrap());
    assert_eq!(c.outbound.listen_addr, "127.0.0.1:4140".parse().unwrap());
    assert_eq!(c.admin_listen_addr, "127.0.0.1:4191".parse().unwrap());
    assert_eq!(c.log_filter, "warn,linkerd=info,hickory=error");
    assert_eq!(c.log_format, LogFormat::Plain);
    assert_eq!(c.inbound.detect_timeout, Duration::from_secs(10));
    assert_eq!(c.outbound.detect_timeout, Duration::from_secs(10));
    assert_eq!(c.inbound.client.connect_timeout, Duration::from_millis(300));
    assert_eq!(c.outbound.client.connect_timeout, Duration::from_secs(1));
    assert_eq!(c.inbound.client.idle_timeout, Duration::from_secs(3));
    assert_eq!(c.outbound.client.max_idle_per_endpoint, 10000);
    assert_eq!(c.inbound.client.max_idle_per_endpoint, 10000);
    assert_eq!(c.outbound.also_listen_addr, None);
    assert_eq!(c.inbound.accept, SocketOptions::default());
    assert_eq!(c.outbound.connect, SocketOptions::default());
    assert_eq!(c.inbound.backlog, 1024);
    assert_eq!(c.control_streams, StreamLimits::default());
    assert!(c.inbound_ips.is_empty());
    assert!(c.policy_control.is_none());
    assert_eq!(
        c.outbound.client.h2_keep_alive_interval,
        Some(Duration::from_secs(10))
    );
    for p in [25, 587, 3306, 4444, 5432, 6379, 9300, 11211] {
        assert!(c.opaque_ports.contains(p), "{p}");
    }
    assert!(!c.opaque_ports.contains(80));
    assert_eq!(c.workers, 1, "linkerd2-proxy's default: one worker");
    assert_eq!(c.shutdown_grace_period, Duration::from_secs(120));
    assert!(!c.shutdown_endpoint_enabled);
    for server in [&c.inbound.server, &c.outbound.server] {
        assert_eq!(server.h1_header_read_timeout, Duration::from_secs(30));
        assert_eq!(server.h1_max_buf_size, 409600);
        assert_eq!(server.h2_max_concurrent_streams, 1000);
        assert_eq!(
            server.h2_keep_alive_interval, None,
            "no PINGs unless configured"
        );
        assert!(!server.h2_adaptive_window);
        let stall = &server.h2_send_stall;
        assert_eq!(stall.timeout, Some(Duration::from_secs(60)));
        assert_eq!(stall.grace, Duration::from_secs(1));
        assert_eq!(stall.max_stalled_per_connection, Some(4));
        assert_eq!(stall.max_stalled_per_client, Some(8));
        assert_eq!(server.h2_idle_timeout, Some(Duration::from_secs(600)));
        assert_eq!(
            server.h1_head_budget.as_ref().map(|b| b.max()),
            Some(64 << 20)
        );
        assert_eq!(
            server.h2_control_frames,
            Some(linkerd_http::ControlFrameLimit { per_second: 1000 })
        );
    }
    assert_eq!(c.outbound.client.h2.initial_stream_window_size, 65535);
    assert_eq!(c.outbound.client.h2.initial_connection_window_size, 1048576);
    assert!(c.env.is_empty());
    assert_eq!(
        c.warnings,
        [
            "LINKERD2_PROXY_INBOUND_DEFAULT_POLICY is not set; using all-unauthenticated",
            "LINKERD2_PROXY_DESTINATION_SVC_ADDR is not set: outbound traffic goes to original destinations only",
            "LINKERD2_PROXY_IDENTITY_SVC_ADDR is not set: traffic between proxies is plaintext",
            "LINKERD2_PROXY_POLICY_SVC_ADDR is not set: every inbound port gets the default policy",
        ]
    );
    assert!(
        c.discovery.is_none(),
        "no discovery without a destination address"
    );
}

#[test]
fn discovery() {
    let c = Config::from_env(&env(&[
        (
            "LINKERD2_PROXY_DESTINATION_SVC_ADDR",
            "linkerd-dst-headless.linkerd.svc.cluster.local.:8086",
        ),
        (
            "LINKERD2_PROXY_DESTINATION_CONTEXT",
            "{\"ns\":\"emojivoto\"}",
        ),
        (
            "LINKERD2_PROXY_DESTINATION_SVC_NAME",
            "linkerd-destination.linkerd.serviceaccount.identity.linkerd.cluster.local",
        ),
    ]))
    .unwrap();
    let d = c.discovery.unwrap();
    assert_eq!(
        d.name.as_ref().map(|n| n.as_str()),
        Some("linkerd-destination.linkerd.serviceaccount.identity.linkerd.cluster.local")
    );
    assert_eq!(
        d.addr,
        "linkerd-dst-headless.linkerd.svc.cluster.local.:8086"
    );
    assert_eq!(d.context, "{\"ns\":\"emojivoto\"}");
    assert_eq!(d.suffixes, ["svc.cluster.local."]);
    assert_eq!(d.idle_timeout, Duration::from_secs(5));
    assert_eq!(d.queue_capacity, 10000);
    assert_eq!(d.failfast_timeout, Duration::from_secs(3));
    assert_eq!((d.dns_min_ttl, d.dns_max_ttl), (None, None));
    assert_eq!(d.profile_initial_timeout, Duration::from_millis(500));

    let c = Config::from_env(&env(&[
        ("LINKERD2_PROXY_DESTINATION_SVC_ADDR", "127.0.0.1:8086"),
        (
            "LINKERD2_PROXY_DESTINATION_PROFILE_SUFFIXES",
            "svc.cluster.local., Example.COM",
        ),
        ("LINKERD2_PROXY_OUTBOUND_DISCOVERY_IDLE_TIMEOUT", "1m"),
        ("LINKERD2_PROXY_OUTBOUND_HTTP_QUEUE_CAPACITY", "5"),
        ("LINKERD2_PROXY_OUTBOUND_HTTP_FAILFAST_TIMEOUT", "500ms"),
        ("LINKERD2_PROXY_DNS_MIN_TTL", "5s"),
        ("LINKERD2_PROXY_DESTINATION_PROFILE_INITIAL_TIMEOUT", "2s"),
        ("LINKERD2_PROXY_DNS_MAX_TTL", "1m"),
    ]))
    .unwrap();
    let d = c.discovery.unwrap();
    assert_eq!(d.dns_min_ttl, Some(Duration::from_secs(5)));
    assert_eq!(d.profile_initial_timeout, Duration::from_secs(2));
    assert_eq!(d.dns_max_ttl, Some(Duration::from_secs(60)));
    assert_eq!(d.suffixes, ["svc.cluster.local.", "example.com."]);
    assert_eq!(d.idle_timeout, Duration::from_secs(60));
    assert_eq!(d.queue_capacity, 5);
    assert_eq!(d.failfast_timeout, Duration::from_millis(500));

    let with = |k: &str, v: &str| {
        let mut e = env(&[("LINKERD2_PROXY_DESTINATION_SVC_ADDR", "127.0.0.1:8086")]);
        e.insert(k.into(), v.into());
        Config::from_env(&e)
    };
    for (k, v) in [
        ("LINKERD2_PROXY_DESTINATION_SVC_ADDR", "no-port"),
        ("LINKERD2_PROXY_DESTINATION_SVC_ADDR", "bad host:80"),
        ("LINKERD2_PROXY_DESTINATION_SVC_ADDR", "dst:0"),
        ("LINKERD2_PROXY_DESTINATION_PROFILE_SUFFIXES", "svc..local"),
        ("LINKERD2_PROXY_OUTBOUND_DISCOVERY_IDLE_TIMEOUT", "5"),
        ("LINKERD2_PROXY_OUTBOUND_HTTP_QUEUE_CAPACITY", "0"),
        ("LINKERD2_PROXY_OUTBOUND_HTTP_FAILFAST_TIMEOUT", "soon"),
        ("LINKERD2_PROXY_DNS_MIN_TTL", "1 minute"),
        (
            "LINKERD2_PROXY_DESTINATION_PROFILE_INITIAL_TIMEOUT",
            "half a second",
        ),
        ("LINKERD2_PROXY_DNS_MAX_TTL", "-5s"),
    ] {
        let e = with(k, v).unwrap_err();
        assert_eq!((e.name.as_str(), e.value.as_str()), (k, v));
    }
}

#[test]
fn every_variable_is_read() {
    let c = Config::from_env(&env(&[
        ("LINKERD2_PROXY_INBOUND_LISTEN_ADDR", "[::]:5143"),
        ("LINKERD2_PROXY_OUTBOUND_LISTEN_ADDR", "127.0.0.1:5140"),
        ("LINKERD2_PROXY_ADMIN_LISTEN_ADDR", "0.0.0.0:5191"),
        ("LINKERD2_PROXY_LOG", "debug"),
        ("LINKERD2_PROXY_LOG_FORMAT", "JSON"),
        ("LINKERD2_PROXY_INBOUND_DETECT_TIMEOUT", "500ms"),
        ("LINKERD2_PROXY_OUTBOUND_DETECT_TIMEOUT", "2m"),
        ("LINKERD2_PROXY_INBOUND_CONNECT_TIMEOUT", "1h"),
        ("LINKERD2_PROXY_OUTBOUND_CONNECT_TIMEOUT", "20ms"),
        (
            "LINKERD2_PROXY_INBOUND_PORTS_DISABLE_PROTOCOL_DETECTION",
            " 22, 4000-4002 ,9999",
        ),
        ("LINKERD2_PROXY_CORES", "3"),
        ("LINKERD2_PROXY_SHUTDOWN_GRACE_PERIOD", "5s"),
        ("LINKERD2_PROXY_SHUTDOWN_ENDPOINT_ENABLED", "true"),
        (
            "LINKERD2_PROXY_OUTBOUND_HTTP1_CONNECTION_POOL_IDLE_TIMEOUT",
            "7s",
        ),
        ("LINKERD2_PROXY_INBOUND_MAX_IDLE_CONNS_PER_ENDPOINT", "4"),
        ("LINKERD2_PROXY_OUTBOUND_HTTP2_KEEP_ALIVE_INTERVAL", "0"),
        ("LINKERD2_PROXY_OUTBOUND_HTTP2_KEEP_ALIVE_TIMEOUT", "1s"),
        ("LINKERD2_PROXY_HTTP1_HEADER_READ_TIMEOUT", "5s"),
        ("LINKERD2_PROXY_HTTP1_MAX_HEADER_BYTES", "16384"),
        ("LINKERD2_PROXY_HTTP2_MAX_CONCURRENT_STREAMS", "10"),
        (
            "LINKERD2_PROXY_INBOUND_SERVER_HTTP2_KEEP_ALIVE_INTERVAL",
            "0",
        ),
        ("LINKERD2_PROXY_HTTP2_SEND_STALL_TIMEOUT", "0"),
        ("LINKERD2_PROXY_HTTP2_SEND_STALL_GRACE", "250ms"),
        ("LINKERD2_PROXY_HTTP2_SERVER_IDLE_TIMEOUT", "0"),
        ("LINKERD2_PROXY_HTTP1_MAX_BUFFERED_HEAD_BYTES", "0"),
        (
            "LINKERD2_PROXY_HTTP2_MAX_STALLED_STREAMS_PER_CONNECTION",
            "0",
        ),
        ("LINKERD2_PROXY_HTTP2_MAX_STALLED_STREAMS_PER_CLIENT", "0"),
        ("LINKERD2_PROXY_HTTP2_RESEND_MAX_REQUEST_BYTES", "0"),
        ("OTHER_VAR", "x"),
    ]))
    .unwrap();
    for server in [&c.inbound.server, &c.outbound.server] {
        let stall = &server.h2_send_stall;
        assert_eq!(
            (stall.timeout, stall.max_stalled_per_connection),
            (None, None)
        );
        assert_eq!(stall.grace, Duration::from_millis(250));
        assert!(!stall.enabled(), "both bounds off");
        assert_eq!(server.h2_idle_timeout, None);
        assert!(server.h1_head_budget.is_none());
    }
    for client in [&c.inbound.client, &c.outbound.client] {
        assert_eq!(client.h2_resend_max_request_bytes, 0);
    }
    assert_eq!(c.inbound.listen_addr, "[::]:5143".parse().unwrap());
    assert_eq!(c.outbound.listen_addr, "127.0.0.1:5140".parse().unwrap());
    assert_eq!(c.admin_listen_addr, "0.0.0.0:5191".parse().unwrap());
    assert_eq!(c.log_filter, "debug");
    assert_eq!(c.log_format, LogFormat::Json);
    assert_eq!(c.inbound.detect_timeout, Duration::from_millis(500));
    assert_eq!(c.outbound.detect_timeout, Duration::from_secs(120));
    assert_eq!(c.inbound.client.connect_timeout, Duration::from_secs(3600));
    assert_eq!(c.outbound.client.connect_timeout, Duration::from_millis(20));
    assert!(c.opaque_ports.contains(22));
    assert!(c.opaque_ports.contains(4001));
    assert!(c.opaque_ports.contains(9999));
    assert!(
        !c.opaque_ports.contains(25),
        "the list replaces the defaults"
    );
    let cpus = std::thread::available_parallelism().unwrap().get();
    assert_eq!(c.workers, 3.min(cpus), "at least CORES, at most the CPUs");
    assert_eq!(c.shutdown_grace_period, Duration::from_secs(5));
    assert!(c.shutdown_endpoint_enabled);
    assert_eq!(c.outbound.client.idle_timeout, Duration::from_secs(7));
    assert_eq!(c.inbound.client.max_idle_per_endpoint, 4);
    assert_eq!(c.outbound.client.h2_keep_alive_interval, None);
    assert_eq!(
        c.outbound.client.h2_keep_alive_timeout,
        Duration::from_secs(1)
    );
    assert_eq!(
        c.inbound.server.h1_header_read_timeout,
        Duration::from_secs(5)
    );
    assert_eq!(c.outbound.server.h1_max_buf_size, 16384);
    assert_eq!(c.inbound.server.h2_max_concurrent_streams, 10);
    assert_eq!(c.inbound.server.h2_keep_alive_interval, None);
    assert_eq!(c.env.len(), 29, "the whole environment, for /env.json");
    assert_eq!(c.env["OTHER_VAR"], "x");
    assert!(
        !c.warnings.iter().any(|w| w.contains("unknown")),
        "every name above is known: {:?}",
        c.warnings
    );
}

#[test]
fn empty_opaque_ports_means_none() {
    let c = Config::from_env(&env(&[(
        "LINKERD2_PROXY_INBOUND_PORTS_DISABLE_PROTOCOL_DETECTION",
        "",
    )]))
    .unwrap();
    assert!(!c.opaque_ports.contains(25));
}

#[test]
fn bad_values_name_the_variable_the_value_and_the_expectation() {
    let e = err("LINKERD2_PROXY_OUTBOUND_CONNECT_TIMEOUT", "soon");
    assert_eq!(
        e.to_string(),
        "invalid LINKERD2_PROXY_OUTBOUND_CONNECT_TIMEOUT=\"soon\": expected a duration like 500ms, 10s, 2m or 1h"
    );
    let e = err("LINKERD2_PROXY_INBOUND_LISTEN_ADDR", "localhost:4143");
    assert_eq!(e.name, "LINKERD2_PROXY_INBOUND_LISTEN_ADDR");
    assert_eq!(e.value, "localhost:4143");
    assert!(e.expected.contains("IP address and port"));
}

#[test]
fn every_variable_rejects_garbage() {
    for (name, bad) in [
        ("LINKERD2_PROXY_INBOUND_LISTEN_ADDR", "4143"),
        ("LINKERD2_PROXY_OUTBOUND_LISTEN_ADDR", "127.0.0.1"),
        ("LINKERD2_PROXY_ADMIN_LISTEN_ADDR", "127.0.0.1:99999"),
        ("LINKERD2_PROXY_LOG", "linkerd=loud"),
        ("LINKERD2_PROXY_INBOUND_DETECT_TIMEOUT", "10"),
        ("LINKERD2_PROXY_OUTBOUND_DETECT_TIMEOUT", "-1s"),
        ("LINKERD2_PROXY_INBOUND_CONNECT_TIMEOUT", "1.5s"),
        ("LINKERD2_PROXY_OUTBOUND_CONNECT_TIMEOUT", "ms"),
        (
            "LINKERD2_PROXY_INBOUND_PORTS_DISABLE_PROTOCOL_DETECTION",
            "25,smtp",
        ),
        (
            "LINKERD2_PROXY_INBOUND_PORTS_DISABLE_PROTOCOL_DETECTION",
            "0",
        ),
        (
            "LINKERD2_PROXY_INBOUND_PORTS_DISABLE_PROTOCOL_DETECTION",
            "70000",
        ),
        (
            "LINKERD2_PROXY_INBOUND_PORTS_DISABLE_PROTOCOL_DETECTION",
            "200-100",
        ),
        ("LINKERD2_PROXY_SHUTDOWN_GRACE_PERIOD", "2 minutes"),
        ("LINKERD2_PROXY_SHUTDOWN_ENDPOINT_ENABLED", "yes"),
        (
            "LINKERD2_PROXY_OUTBOUND_HTTP1_CONNECTION_POOL_IDLE_TIMEOUT",
            "x",
        ),
        ("LINKERD2_PROXY_INBOUND_MAX_IDLE_CONNS_PER_ENDPOINT", "-1"),
        ("LINKERD2_PROXY_HTTP1_MAX_HEADER_BYTES", "100"),
        ("LINKERD2_PROXY_HTTP2_MAX_CONCURRENT_STREAMS", "5000000000"),
        (
            "LINKERD2_PROXY_HTTP1_HEADER_READ_TIMEOUT",
            "99999999999999999999h",
        ),
    ] {
        let e = err(name, bad);
        assert_eq!(e.name, name);
        assert_eq!(e.value, bad);
    }
}

#[test]
fn durations() {
    assert_eq!(parse_duration("0"), Ok(Duration::ZERO));
    assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
    assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
    assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
    assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
    assert_eq!(parse_duration("1d"), Ok(Duration::from_secs(86400)));
    for bad in [
        "",
        "s",
        "10",
        "10 s",
        "10S",
        "1.5s",
        "-1s",
        "10sec",
        "18446744073709551616s",
    ] {
        assert!(parse_duration(bad).is_err(), "{bad:?}");
    }
}

#[test]
fn a_remote_control_plane_needs_tls() {
    let remote = "linkerd-dst-headless.linkerd.svc.cluster.local.:8086";
    let e = Config::from_env(&env(&[("LINKERD2_PROXY_DESTINATION_SVC_ADDR", remote)])).unwrap_err();
    assert_eq!(e.name, "LINKERD2_PROXY_DESTINATION_SVC_ADDR");
    for local in [
        "127.0.0.1:8086",
        "[::1]:8086",
        "localhost:8086",
        "localhost.:8086",
    ] {
        let c = Config::from_env(&env(&[("LINKERD2_PROXY_DESTINATION_SVC_ADDR", local)])).unwrap();
        assert!(c.discovery.unwrap().name.is_none(), "{local}");
    }
}

fn trust_anchors() -> String {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params.self_signed(&key).unwrap().pem()
}

#[test]
fn identity_is_all_or_nothing() {
    assert!(Config::from_env(&env(&[])).unwrap().identity.is_none());
    let anchors = trust_anchors();
    let full = [
        ("LINKERD2_PROXY_IDENTITY_SVC_ADDR", "127.0.0.1:8080"),
        ("LINKERD2_PROXY_IDENTITY_TRUST_ANCHORS", anchors.as_str()),
        (
            "LINKERD2_PROXY_IDENTITY_LOCAL_NAME",
            "web.default.serviceaccount.identity.linkerd.cluster.local",
        ),
        ("LINKERD2_PROXY_IDENTITY_TOKEN_FILE", "/var/run/token"),
    ];
    let c = Config::from_env(&env(&full)).unwrap();
    let id = c.identity.unwrap();
    assert_eq!(
        id.id.as_str(),
        "web.default.serviceaccount.identity.linkerd.cluster.local"
    );
    assert_eq!(id.server_name, id.id);
    assert_eq!(id.min_refresh, Duration::from_secs(10));
    assert_eq!(id.max_refresh, Duration::from_secs(24 * 3600));
    assert!(id.control.name.is_none());
    assert!(id.dir.is_none());

    // Any one missing is an error that names it.
    for skip in 0..full.len() {
        let partial: Vec<_> = full
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != skip)
            .map(|(_, kv)| *kv)
            .collect();
        let e = Config::from_env(&env(&partial)).unwrap_err();
        assert_eq!(e.name, full[skip].0);
    }

    let mut bad = full.to_vec();
    bad[1] = ("LINKERD2_PROXY_IDENTITY_TRUST_ANCHORS", "not pem");
    assert_eq!(
        Config::from_env(&env(&bad)).unwrap_err().name,
        "LINKERD2_PROXY_IDENTITY_TRUST_ANCHORS"
    );
    let mut remote = full.to_vec();
    remote[0] = ("LINKERD2_PROXY_IDENTITY_SVC_ADDR", "10.0.0.1:8080");
    assert_eq!(
        Config::from_env(&env(&remote)).unwrap_err().name,
        "LINKERD2_PROXY_IDENTITY_SVC_ADDR"
    );
    remote.push((
        "LINKERD2_PROXY_IDENTITY_SVC_NAME",
        "linkerd-identity.linkerd.serviceaccount.identity.linkerd.cluster.local",
    ));
    remote.push(("LINKERD2_PROXY_IDENTITY_MIN_REFRESH", "1s"));
    let id = Config::from_env(&env(&remote)).unwrap().identity.unwrap();
    assert!(id.control.name.is_some());
    assert_eq!(id.min_refresh, Duration::from_secs(1));
}

#[test]
fn inbound_policy() {
    use crate::policy::DefaultPolicy;
    let c = Config::from_env(&env(&[])).unwrap();
    assert_eq!(c.policy.default, DefaultPolicy::AllUnauthenticated);
    assert_eq!(c.policy.cluster_networks.len(), 5);
    assert!(!c.policy.require_identity.contains(8080));
    let c = Config::from_env(&env(&[
        (
            "LINKERD2_PROXY_INBOUND_DEFAULT_POLICY",
            "cluster-authenticated",
        ),
        ("LINKERD2_PROXY_POLICY_CLUSTER_NETWORKS", "10.0.0.0/8"),
        (
            "LINKERD2_PROXY_INBOUND_PORTS_REQUIRE_IDENTITY",
            "8080,9000-9010",
        ),
        ("LINKERD2_PROXY_INBOUND_PORTS_REQUIRE_TLS", "443"),
    ]))
    .unwrap();
    assert_eq!(c.policy.default, DefaultPolicy::ClusterAuthenticated);
    assert_eq!(c.policy.cluster_networks.len(), 1);
    assert!(c.policy.require_identity.contains(9005));
    assert!(c.policy.require_tls.contains(443));
    for (k, v) in [
        ("LINKERD2_PROXY_INBOUND_DEFAULT_POLICY", "allow-all"),
        ("LINKERD2_PROXY_POLICY_CLUSTER_NETWORKS", "10.0.0.0/40"),
        ("LINKERD2_PROXY_INBOUND_PORTS_REQUIRE_TLS", "https"),
    ] {
        assert_eq!(Config::from_env(&env(&[(k, v)])).unwrap_err().name, k);
    }
}

#[test]
fn http2_settings_and_pool_spreading() {
    let c = Config::from_env(&env(&[("LINKERD2_PROXY_CORES", "3")])).unwrap();
    assert_eq!(
        c.outbound.client.h2_max_connections, c.workers,
        "the worker count"
    );
    assert_eq!(c.outbound.client.h2_streams_per_connection, 8);
    assert_eq!(c.inbound.server.h2, linkerd_http::H2Settings::default());
    assert_eq!(c.outbound.client.h2, linkerd_http::H2Settings::default());
    let c = Config::from_env(&env(&[
        (
            "LINKERD2_PROXY_OUTBOUND_HTTP2_MAX_CONNECTIONS_PER_ENDPOINT",
            "2",
        ),
        (
            "LINKERD2_PROXY_OUTBOUND_HTTP2_STREAMS_PER_CONNECTION",
            "100",
        ),
        ("LINKERD2_PROXY_HTTP2_INITIAL_STREAM_WINDOW_SIZE", "65535"),
        (
            "LINKERD2_PROXY_HTTP2_INITIAL_CONNECTION_WINDOW_SIZE",
            "1048576",
        ),
        ("LINKERD2_PROXY_HTTP2_MAX_FRAME_SIZE", "32768"),
        ("LINKERD2_PROXY_HTTP2_MAX_HEADER_LIST_SIZE", "8192"),
    ]))
    .unwrap();
    assert_eq!(c.outbound.client.h2_max_connections, 2);
    assert_eq!(c.outbound.client.h2_streams_per_connection, 100);
    let h2 = c.outbound.server.h2;
    assert_eq!(
        (
            h2.initial_stream_window_size,
            h2.initial_connection_window_size,
            h2.max_frame_size,
            h2.max_header_list_size
        ),
        (65535, 1048576, 32768, 8192)
    );
    assert_eq!(c.inbound.client.h2, h2);
    for (k, v) in [
        ("LINKERD2_PROXY_HTTP2_MAX_FRAME_SIZE", "1024"),
        (
            "LINKERD2_PROXY_HTTP2_INITIAL_STREAM_WINDOW_SIZE",
            "2147483648",
        ),
        (
            "LINKERD2_PROXY_OUTBOUND_HTTP2_MAX_CONNECTIONS_PER_ENDPOINT",
            "0",
        ),
    ] {
        assert_eq!(Config::from_env(&env(&[(k, v)])).unwrap_err().name, k);
    }
}

/// `injected-pod.env` as a map: `# trailing-newline` values end in "\n", the trust anchors
/// substituted; with `conditional`, the conditional variables too.
fn injected(conditional: bool, ipv6: bool) -> HashMap<String, String> {
    let anchors = trust_anchors();
    let mut out = HashMap::new();
    let mut parse = |text: &str, conditional: bool| {
        let mut newline = false;
        for line in text.lines() {
            if line.starts_with("# =====") && line.contains("conditional") && !conditional {
                break;
            }
            if line.starts_with('#') {
                newline |= line.starts_with("# trailing-newline");
                continue;
            }
            let Some((k, v)) = line.split_once('=') else {
                continue;
            };
            let mut v = v
                .replace("@TRUST_ANCHORS_PEM@", anchors.trim())
                .replace("\\n", "\n");
            if std::mem::take(&mut newline) {
                v.push('\n');
            }
            out.insert(k.to_string(), v);
        }
    };
    parse(
        include_str!("../../../tests/fixtures/injected-pod.env"),
        conditional,
    );
    if ipv6 {
        parse(
            include_str!("../../../tests/fixtures/injected-pod-ipv6.env"),
            true,
        );
    }
    out
}

#[test]
fn the_injectors_environment_is_read_whole() {
    let c = Config::from_env(&injected(false, false)).expect("the injected env starts");
    let id = c.identity.as_ref().unwrap();
    assert_eq!(
        id.id.as_str(),
        "web.default.serviceaccount.identity.linkerd.cluster.local"
    );
    assert_eq!(id.server_name, id.id);
    assert_eq!(
        id.control.name.as_ref().unwrap().as_str(),
        "linkerd-identity.linkerd.serviceaccount.identity.linkerd.cluster.local"
    );
    assert_eq!(c.workers, 1);
    assert_eq!(
        c.log_filter,
        "warn,linkerd=info,hickory=error,[{headers}]=off,[{request}]=off"
    );
    assert_eq!(c.outbound.listen_addr, "127.0.0.1:4140".parse().unwrap());
    assert_eq!(c.outbound.also_listen_addr, None);
    assert_eq!(c.admin_listen_addr, "0.0.0.0:4191".parse().unwrap());
    assert_eq!(c.inbound.connect.keepalive, None);
    assert_eq!(
        c.inbound.accept,
        SocketOptions {
            keepalive: Some(Duration::from_secs(10)),
            user_timeout: Some(Duration::from_secs(30)),
        }
    );
    assert_eq!(c.outbound.connect, c.inbound.accept);
    assert_eq!(c.outbound.accept, SocketOptions::default());
    assert_eq!(
        c.control_streams,
        StreamLimits {
            initial_timeout: Some(Duration::from_secs(3)),
            idle_timeout: Some(Duration::from_secs(300)),
            lifetime: Some(Duration::from_secs(3600)),
        }
    );
    assert_eq!(c.inbound.client.connect_timeout, Duration::from_millis(100));
    for server in [&c.inbound.server, &c.outbound.server] {
        assert_eq!(server.h2_keep_alive_interval, Some(Duration::from_secs(10)));
        assert_eq!(server.h2_keep_alive_timeout, Duration::from_secs(3));
    }
    assert_eq!(c.inbound_ips, ["10.42.0.17".parse::<IpAddr>().unwrap()]);
    let p = c.policy_control.as_ref().unwrap();
    assert_eq!(
        p.control.addr,
        "linkerd-policy.linkerd.svc.cluster.local.:8090"
    );
    assert_eq!(
        p.workload,
        "{\"ns\":\"default\", \"pod\":\"web-5d8f7c9b4-x2x7q\"}\n"
    );
    assert_eq!(p.ports, [8080, 9090]);
    assert_eq!(p.idle_timeout, Duration::from_secs(90));
    let d = c.discovery.as_ref().unwrap();
    assert_eq!(d.profile_networks.as_ref().unwrap().len(), 5);
    assert_eq!(d.idle_timeout, Duration::from_secs(5));
    assert!(c.opaque_ports.contains(3306));
    assert!(
        c.warnings.is_empty(),
        "a default injection reads every variable: {:?}",
        c.warnings
    );
}

#[test]
fn the_injectors_conditional_and_ipv6_variables_are_accepted() {
    let c = Config::from_env(&injected(true, true)).expect("starts");
    assert_eq!(c.outbound.listen_addr, "127.0.0.1:4140".parse().unwrap());
    assert_eq!(
        c.outbound.also_listen_addr,
        Some("[::1]:4140".parse().unwrap())
    );
    assert_eq!(c.inbound.listen_addr, "[::]:4143".parse().unwrap());
    assert_eq!(c.admin_listen_addr, "[::]:4191".parse().unwrap());
    let cpus = std::thread::available_parallelism().unwrap().get();
    assert_eq!(c.workers, 2.min(cpus), "CORES_MAX=2 wins over the ratio");
    assert_eq!(c.outbound.detect_timeout, Duration::from_secs(365 * 86400));
    assert_eq!(c.shutdown_grace_period, Duration::from_secs(30));
    assert!(c.policy.require_identity.contains(8080));
    assert_eq!(c.warnings.len(), 1, "{:?}", c.warnings);
    let w = &c.warnings[0];
    assert!(
        w.starts_with("these variables are accepted, but this proxy does not implement"),
        "{w}"
    );
    for name in [
        "TAP_SVC_NAME",
        "TRACE_COLLECTOR_SVC_ADDR",
        "ACCESS_LOG",
        "INBOUND_GATEWAY_SUFFIXES",
        "INGRESS_MODE",
    ] {
        assert!(w.contains(&format!("LINKERD2_PROXY_{name}")), "{name}: {w}");
    }
    for silent in [
        "TRACE_PROTOCOL",
        "TRACE_ANNOTATIONS_PATH",
        "CONTROL_LISTEN_ADDR",
    ] {
        assert!(
            !w.contains(silent),
            "linkerd2-proxy never reads {silent}: {w}"
        );
    }
}

#[test]
fn unknown_names_warn_and_never_fail() {
    let c = Config::from_env(&env(&[
        ("LINKERD2_PROXY_INBOUND_LISTEN_ADRR", "0.0.0.0:1"),
        (
            "LINKERD2_PROXY_DESTINATION_GET_SUFFIXES",
            "svc.cluster.local.",
        ),
        ("NOT_OURS", "x"),
    ]))
    .expect("typos are not fatal");
    let unknown = c
        .warnings
        .iter()
        .find(|w| w.starts_with("unknown"))
        .unwrap();
    assert_eq!(
        unknown,
        "unknown variables (typos?) are ignored: LINKERD2_PROXY_DESTINATION_GET_SUFFIXES, LINKERD2_PROXY_INBOUND_LISTEN_ADRR"
    );
}

#[test]
fn worker_count_as_linkerd2_proxy() {
    let w = |pairs: &[(&str, &str)], cpus| {
        let e = env(pairs);
        let mut warnings = Vec::new();
        let n = workers(&Vars::new(&e), cpus, &mut warnings);
        (n, warnings.len())
    };
    assert_eq!(w(&[], 8), (1, 0));
    assert_eq!(w(&[("LINKERD2_PROXY_CORES", "3")], 8), (3, 0));
    assert_eq!(
        w(
            &[
                ("LINKERD2_PROXY_CORES_MIN", "2"),
                ("LINKERD2_PROXY_CORES", "5")
            ],
            8
        ),
        (2, 0)
    );
    assert_eq!(w(&[("LINKERD2_PROXY_CORES_MAX", "4")], 8), (4, 0));
    assert_eq!(
        w(&[("LINKERD2_PROXY_CORES_MAX", "16")], 8),
        (8, 0),
        "at most the CPUs"
    );
    assert_eq!(w(&[("LINKERD2_PROXY_CORES_MAX_RATIO", "0.5")], 8), (4, 0));
    assert_eq!(
        w(&[("LINKERD2_PROXY_CORES_MAX_RATIO", "0.3")], 8),
        (2, 0),
        "rounded"
    );
    assert_eq!(w(&[("LINKERD2_PROXY_CORES_MAX_RATIO", "1")], 6), (6, 0));
    assert_eq!(
        w(
            &[
                ("LINKERD2_PROXY_CORES_MAX_RATIO", "0.5"),
                ("LINKERD2_PROXY_CORES_MAX", "3")
            ],
            8
        ),
        (3, 0),
        "MAX wins"
    );
    assert_eq!(
        w(
            &[
                ("LINKERD2_PROXY_CORES_MAX", "2"),
                ("LINKERD2_PROXY_CORES_MIN", "4")
            ],
            8
        ),
        (4, 0),
        "at least MIN"
    );
    // Bad values are ignored with a warning, never fatal.
    assert_eq!(w(&[("LINKERD2_PROXY_CORES", "two")], 8), (1, 1));
    assert_eq!(w(&[("LINKERD2_PROXY_CORES_MIN", "0")], 8), (1, 1));
    assert_eq!(w(&[("LINKERD2_PROXY_CORES_MAX_RATIO", "1.5")], 8), (1, 1));
    assert_eq!(w(&[("LINKERD2_PROXY_CORES_MAX_RATIO", "0")], 8), (1, 1));
    assert!(Config::from_env(&env(&[("LINKERD2_PROXY_CORES", "-1")])).is_ok());
}

#[test]
fn outbound_listen_addrs() {
    let c = |v: &str| {
        Config::from_env(&env(&[
            ("LINKERD2_PROXY_OUTBOUND_LISTEN_ADDR", "127.0.0.1:9"),
            ("LINKERD2_PROXY_OUTBOUND_LISTEN_ADDRS", v),
        ]))
    };
    let one = c("127.0.0.1:4140").unwrap();
    assert_eq!(
        (
            one.outbound.listen_addr.port(),
            one.outbound.also_listen_addr
        ),
        (4140, None)
    );
    let two = c("127.0.0.1:4140, [::1]:4140").unwrap();
    assert_eq!(
        two.outbound.also_listen_addr,
        Some("[::1]:4140".parse().unwrap())
    );
    for bad in [
        "",
        "127.0.0.1:1,[::1]:1,127.0.0.2:1",
        "127.0.0.1:1,127.0.0.1:1",
        "localhost:4140",
    ] {
        assert_eq!(
            c(bad).unwrap_err().name,
            "LINKERD2_PROXY_OUTBOUND_LISTEN_ADDRS",
            "{bad:?}"
        );
    }
}

#[test]
fn socket_options_and_backlog() {
    let c = Config::from_env(&env(&[
        ("LINKERD2_PROXY_INBOUND_CONNECT_KEEPALIVE", "5s"),
        ("LINKERD2_PROXY_OUTBOUND_ACCEPT_USER_TIMEOUT", "1m"),
        ("LINKERD2_PROXY_INBOUND_ACCEPT_KEEPALIVE", ""),
        ("LINKERD2_PROXY_OUTBOUND_CONNECT_KEEPALIVE", "0"),
        ("LINKERD2_PROXY_OUTBOUND_TCP_LISTEN_BACKLOG", "4096"),
    ]))
    .unwrap();
    assert_eq!(c.inbound.connect.keepalive, Some(Duration::from_secs(5)));
    assert_eq!(
        c.outbound.accept.user_timeout,
        Some(Duration::from_secs(60))
    );
    assert_eq!(c.inbound.accept.keepalive, None, "empty is none");
    assert_eq!(c.outbound.connect.keepalive, None, "zero is none");
    assert_eq!(c.outbound.backlog, 4096);
    for (k, v) in [
        ("LINKERD2_PROXY_INBOUND_ACCEPT_KEEPALIVE", "10000"),
        ("LINKERD2_PROXY_OUTBOUND_CONNECT_USER_TIMEOUT", "soon"),
        ("LINKERD2_PROXY_INBOUND_TCP_LISTEN_BACKLOG", "0"),
    ] {
        assert_eq!(err(k, v).name, k);
    }
}

#[test]
fn control_streams_and_server_http2() {
    let c = Config::from_env(&env(&[
        ("LINKERD2_PROXY_CONTROL_STREAM_INITIAL_TIMEOUT", ""),
        ("LINKERD2_PROXY_CONTROL_STREAM_IDLE_TIMEOUT", "1m"),
        (
            "LINKERD2_PROXY_OUTBOUND_SERVER_HTTP2_KEEP_ALIVE_INTERVAL",
            "10s",
        ),
        (
            "LINKERD2_PROXY_INBOUND_SERVER_HTTP2_KEEP_ALIVE_TIMEOUT",
            "3s",
        ),
        (
            "LINKERD2_PROXY_INBOUND_SERVER_HTTP2_INITIAL_STREAM_WINDOW_SIZE",
            "100000",
        ),
        (
            "LINKERD2_PROXY_INBOUND_SERVER_HTTP2_INITIAL_CONNECTION_WINDOW_SIZE",
            "200000",
        ),
        (
            "LINKERD2_PROXY_INBOUND_SERVER_HTTP2_MAX_CONCURRENT_STREAMS",
            "7",
        ),
        (
            "LINKERD2_PROXY_OUTBOUND_SERVER_HTTP2_ADAPTIVE_FLOW_CONTROL",
            "true",
        ),
        (
            "LINKERD2_PROXY_OUTBOUND_SERVER_HTTP2_MAX_SEND_BUF_SIZE",
            "65536",
        ),
    ]))
    .unwrap();
    assert_eq!(c.control_streams.initial_timeout, None);
    assert_eq!(
        c.control_streams.idle_timeout,
        Some(Duration::from_secs(60))
    );
    assert_eq!(
        (
            c.inbound.server.h2_keep_alive_interval,
            c.outbound.server.h2_keep_alive_interval
        ),
        (None, None),
        "PINGs only when interval and timeout are both set"
    );
    assert_eq!(c.inbound.server.h2.initial_stream_window_size, 100000);
    assert_eq!(c.inbound.server.h2.initial_connection_window_size, 200000);
    assert_eq!(c.outbound.server.h2.initial_stream_window_size, 65535);
    assert_eq!(c.inbound.server.h2_max_concurrent_streams, 7);
    assert!(c.outbound.server.h2_adaptive_window);
    assert_eq!(c.outbound.server.h2_max_send_buf_size, Some(65536));
    let both = |pairs: &[(&str, &str)]| {
        Config::from_env(&env(pairs))
            .map(|_| ())
            .map_err(|e| e.name)
    };
    assert_eq!(
        both(&[
            ("LINKERD2_PROXY_CONTROL_STREAM_IDLE_TIMEOUT", "5m"),
            ("LINKERD2_PROXY_CONTROL_STREAM_LIFETIME", "1m"),
        ]),
        Err("LINKERD2_PROXY_CONTROL_STREAM_IDLE_TIMEOUT".into())
    );
    assert_eq!(
        both(&[(
            "LINKERD2_PROXY_INBOUND_SERVER_HTTP2_INITIAL_STREAM_WINDOW_SIZE",
            "100000"
        )]),
        Err("LINKERD2_PROXY_INBOUND_SERVER_HTTP2_INITIAL_STREAM_WINDOW_SIZE".into()),
        "both windows or none"
    );
    assert_eq!(
        err("LINKERD2_PROXY_CONTROL_STREAM_LIFETIME", "forever").name,
        "LINKERD2_PROXY_CONTROL_STREAM_LIFETIME"
    );
}

#[test]
fn identity_names() {
    let anchors = trust_anchors();
    let base = [
        ("LINKERD2_PROXY_IDENTITY_SVC_ADDR", "127.0.0.1:8080"),
        ("LINKERD2_PROXY_IDENTITY_TRUST_ANCHORS", anchors.as_str()),
        ("LINKERD2_PROXY_IDENTITY_TOKEN_FILE", "/var/run/token"),
    ];
    let with = |extra: &[(&'static str, &'static str)]| {
        let mut pairs = base.to_vec();
        pairs.extend_from_slice(extra);
        Config::from_env(&env(&pairs))
    };
    const A: &str = "a.ns.serviceaccount.identity.linkerd.cluster.local";
    const B: &str = "b.ns.serviceaccount.identity.linkerd.cluster.local";
    let id = |c: Result<Config, ConfigError>| c.unwrap().identity.unwrap().id.as_str().to_string();
    assert_eq!(id(with(&[("LINKERD2_PROXY_IDENTITY_SERVER_ID", A)])), A);
    assert_eq!(
        id(with(&[
            ("LINKERD2_PROXY_IDENTITY_SERVER_ID", A),
            ("LINKERD2_PROXY_IDENTITY_SERVER_NAME", A)
        ])),
        A
    );
    assert_eq!(
        with(&[
            ("LINKERD2_PROXY_IDENTITY_SERVER_ID", A),
            ("LINKERD2_PROXY_IDENTITY_SERVER_NAME", B)
        ])
        .unwrap_err()
        .name,
        "LINKERD2_PROXY_IDENTITY_SERVER_NAME"
    );
    assert_eq!(
        id(with(&[
            ("LINKERD2_PROXY_IDENTITY_LOCAL_NAME", A),
            ("LINKERD2_PROXY_IDENTITY_SERVER_ID", B)
        ])),
        A,
        "the local name wins"
    );
    assert_eq!(
        with(&[]).unwrap_err().name,
        "LINKERD2_PROXY_IDENTITY_LOCAL_NAME"
    );
    assert_eq!(
        err("LINKERD2_PROXY_IDENTITY_DISABLED", "disabled").name,
        "LINKERD2_PROXY_IDENTITY_DISABLED"
    );
}

#[test]
fn policy_variables() {
    let c = Config::from_env(&env(&[
        ("LINKERD2_PROXY_POLICY_SVC_ADDR", "127.0.0.1:8090"),
        (
            "LINKERD2_PROXY_POLICY_WORKLOAD",
            "{\"ns\":\"a\",\"pod\":\"b\"}\n",
        ),
        ("LINKERD2_PROXY_INBOUND_PORTS", "80,8000-8002"),
        ("LINKERD2_PROXY_INBOUND_DISCOVERY_IDLE_TIMEOUT", "1m"),
    ]))
    .unwrap();
    let p = c.policy_control.unwrap();
    assert_eq!(
        p.workload, "{\"ns\":\"a\",\"pod\":\"b\"}\n",
        "sent as given"
    );
    assert_eq!(p.ports, [80, 8000, 8001, 8002]);
    assert_eq!(p.idle_timeout, Duration::from_secs(60));
    assert_eq!(p.initial_timeout, Duration::from_secs(3));
    assert_eq!(
        err("LINKERD2_PROXY_POLICY_SVC_ADDR", "127.0.0.1:8090").name,
        "LINKERD2_PROXY_POLICY_WORKLOAD",
        "the workload is required with the policy service"
    );
    let e = Config::from_env(&env(&[
        (
            "LINKERD2_PROXY_INBOUND_DEFAULT_POLICY",
            "cluster-unauthenticated",
        ),
        ("LINKERD2_PROXY_POLICY_CLUSTER_NETWORKS", ""),
    ]))
    .unwrap_err();
    assert_eq!(e.name, "LINKERD2_PROXY_POLICY_CLUSTER_NETWORKS");
    assert_eq!(
        err("LINKERD2_PROXY_INBOUND_METRICS_AUTHORITY_LABELS", "yes").name,
        "LINKERD2_PROXY_INBOUND_METRICS_AUTHORITY_LABELS"
    );
    assert_eq!(
        err("LINKERD2_PROXY_INBOUND_IPS", "10.0.0.1,pod").name,
        "LINKERD2_PROXY_INBOUND_IPS"
    );
    let c = Config::from_env(&env(&[(
        "LINKERD2_PROXY_INBOUND_IPS",
        "10.42.0.17, fd00::11",
    )]))
    .unwrap();
    assert_eq!(c.inbound_ips.len(), 2);
}
