use super::*;

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
    assert_eq!(c.log_filter, "warn,linkerd=info");
    assert_eq!(c.log_format, LogFormat::Plain);
    assert_eq!(c.inbound.detect_timeout, Duration::from_secs(10));
    assert_eq!(c.outbound.detect_timeout, Duration::from_secs(10));
    assert_eq!(c.inbound.client.connect_timeout, Duration::from_millis(300));
    assert_eq!(c.outbound.client.connect_timeout, Duration::from_secs(1));
    assert_eq!(c.inbound.client.idle_timeout, Duration::from_secs(3));
    assert_eq!(c.outbound.client.max_idle_per_endpoint, 1000);
    assert_eq!(
        c.outbound.client.h2_keep_alive_interval,
        Some(Duration::from_secs(10))
    );
    for p in [25, 587, 3306, 4444, 5432, 6379, 9300, 11211] {
        assert!(c.opaque_ports.contains(p), "{p}");
    }
    assert!(!c.opaque_ports.contains(80));
    assert_eq!(c.cores, None);
    assert_eq!(c.shutdown_grace_period, Duration::from_secs(120));
    assert!(!c.shutdown_endpoint_enabled);
    assert_eq!(c.server.h1_header_read_timeout, Duration::from_secs(30));
    assert_eq!(c.server.h1_max_buf_size, 409600);
    assert_eq!(c.server.h2_max_concurrent_streams, 1000);
    assert!(c.env.is_empty());
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
        ("OTHER_VAR", "x"),
    ]))
    .unwrap();
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
    assert_eq!(c.cores, Some(3));
    assert_eq!(c.shutdown_grace_period, Duration::from_secs(5));
    assert!(c.shutdown_endpoint_enabled);
    assert_eq!(c.outbound.client.idle_timeout, Duration::from_secs(7));
    assert_eq!(c.inbound.client.max_idle_per_endpoint, 4);
    assert_eq!(c.outbound.client.h2_keep_alive_interval, None);
    assert_eq!(
        c.outbound.client.h2_keep_alive_timeout,
        Duration::from_secs(1)
    );
    assert_eq!(c.server.h1_header_read_timeout, Duration::from_secs(5));
    assert_eq!(c.server.h1_max_buf_size, 16384);
    assert_eq!(c.server.h2_max_concurrent_streams, 10);
    assert_eq!(c.server.h2_keep_alive_interval, None);
    assert_eq!(c.env.len(), 21, "only LINKERD2_PROXY_* variables are kept");
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
        ("LINKERD2_PROXY_LOG_FORMAT", "xml"),
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
        ("LINKERD2_PROXY_CORES", "0"),
        ("LINKERD2_PROXY_CORES", "two"),
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
            "LINKERD2_PROXY_IDENTITY_SERVER_ID",
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
    assert_eq!(c.outbound.client.h2_max_connections, 3, "the worker count");
    assert_eq!(c.outbound.client.h2_streams_per_connection, 8);
    assert_eq!(c.server.h2, linkerd_http::H2Settings::default());
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
    let h2 = c.server.h2;
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
