//! The Destination service: endpoint sets as streams of changes, and profiles.

use crate::{EndpointConfig, Mesh, MeshConfig, ProtocolHint, ServiceConfig};
use linkerd_proxy_api::destination::{
    self as api, destination_server::Destination, protocol_hint, tls_identity, update,
};
use std::{collections::HashMap, net::SocketAddr, pin::Pin};
use tokio::sync::mpsc;
use tokio_stream::{wrappers::ReceiverStream, Stream};
use tonic::{Request, Response, Status};

/// Answers `Get` and `GetProfile` from the current [`Mesh`].
#[derive(Clone)]
pub struct DestinationService {
    mesh: Mesh,
}

type Updates = Pin<Box<dyn Stream<Item = Result<api::Update, Status>> + Send>>;
type Profiles = Pin<Box<dyn Stream<Item = Result<api::DestinationProfile, Status>> + Send>>;

/// What a lookup names.
#[derive(Clone, Debug)]
pub(crate) enum Target {
    Name(String, u16),
    Addr(SocketAddr),
}

impl Target {
    /// The service it names in `config`: by `name:port`, or by `cluster_ip:port`.
    pub(crate) fn service<'a>(&self, config: &'a MeshConfig) -> Option<&'a ServiceConfig> {
        match self {
            Target::Name(name, port) => config.service(name, *port),
            Target::Addr(addr) => config.service_by_ip(*addr),
        }
    }
}

/// The endpoints of a target in one config: `None` when the target is unknown.
type EndpointSet = Option<HashMap<SocketAddr, api::WeightedAddr>>;

impl DestinationService {
    pub fn new(mesh: Mesh) -> Self {
        Self { mesh }
    }
}

/// `ip:port` or `name:port`.
pub(crate) fn parse_target(path: &str) -> Result<Target, Status> {
    if let Ok(addr) = path.parse::<SocketAddr>() {
        return Ok(Target::Addr(addr));
    }
    let (name, port) = path.rsplit_once(':').ok_or_else(|| {
        Status::invalid_argument(format!("{path:?}: expected name:port or ip:port"))
    })?;
    let port = port
        .parse()
        .map_err(|_| Status::invalid_argument(format!("{path:?}: invalid port")))?;
    Ok(Target::Name(name.to_string(), port))
}

fn weighted_addr(e: &EndpointConfig) -> api::WeightedAddr {
    api::WeightedAddr {
        addr: Some(e.addr.into()),
        weight: e.weight,
        metric_labels: e
            .labels
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
        tls_identity: e.identity.as_ref().map(|name| api::TlsIdentity {
            strategy: Some(tls_identity::Strategy::DnsLikeIdentity(
                tls_identity::DnsLikeIdentity { name: name.clone() },
            )),
            server_name: None,
        }),
        protocol_hint: protocol_hint(e),
        ..Default::default()
    }
}

/// The hint, present when either the protocol or an opaque-transport port is configured: a
/// proxy needs the port even when it must detect the protocol itself.
fn protocol_hint(e: &EndpointConfig) -> Option<api::ProtocolHint> {
    if e.protocol_hint.is_none() && e.opaque_transport_port.is_none() {
        return None;
    }
    Some(api::ProtocolHint {
        protocol: e.protocol_hint.map(|h| match h {
            ProtocolHint::H2 => protocol_hint::Protocol::H2(protocol_hint::H2 {}),
            ProtocolHint::Opaque => protocol_hint::Protocol::Opaque(protocol_hint::Opaque {}),
        }),
        opaque_transport: e
            .opaque_transport_port
            .map(|port| protocol_hint::OpaqueTransport {
                inbound_port: u32::from(port),
            }),
    })
}

fn endpoints(config: &MeshConfig, target: &Target) -> EndpointSet {
    match target {
        Target::Name(name, port) => config.service(name, *port).map(|s| {
            s.endpoints
                .iter()
                .map(|e| (e.addr, weighted_addr(e)))
                .collect()
        }),
        Target::Addr(addr) => match config.service_by_ip(*addr) {
            Some(s) => Some(
                s.endpoints
                    .iter()
                    .map(|e| (e.addr, weighted_addr(e)))
                    .collect(),
            ),
            None => config
                .endpoint(*addr)
                .map(|e| HashMap::from([(e.addr, weighted_addr(e))])),
        },
    }
}

/// Labels shared by a service's endpoints: `service` and `namespace` from its name.
fn set_labels(target: &Target) -> HashMap<String, String> {
    let mut labels = HashMap::new();
    if let Target::Name(name, _) = target {
        let mut parts = name.split('.');
        if let (Some(svc), Some(ns)) = (parts.next(), parts.next()) {
            labels.insert("service".into(), svc.to_string());
            labels.insert("namespace".into(), ns.to_string());
        }
    }
    labels
}

/// The updates that turn `old` into `new`.
fn diff(
    old: &EndpointSet,
    new: &EndpointSet,
    labels: &HashMap<String, String>,
    first: bool,
) -> Vec<api::Update> {
    let empty = HashMap::new();
    let (o, n) = (
        old.as_ref().unwrap_or(&empty),
        new.as_ref().unwrap_or(&empty),
    );
    let mut out = Vec::new();
    let removed: Vec<_> = o
        .keys()
        .filter(|a| !n.contains_key(a))
        .map(|a| (*a).into())
        .collect();
    if !removed.is_empty() && !n.is_empty() {
        out.push(api::Update {
            update: Some(update::Update::Remove(api::AddrSet { addrs: removed })),
        });
    }
    let added: Vec<_> = n
        .iter()
        .filter(|(a, w)| o.get(a) != Some(w))
        .map(|(_, w)| w.clone())
        .collect();
    if !added.is_empty() {
        out.push(api::Update {
            update: Some(update::Update::Add(api::WeightedAddrSet {
                addrs: added,
                metric_labels: labels.clone(),
            })),
        });
    }
    // No endpoints (now, or from the start): say whether the target exists at all.
    if n.is_empty() && (first || !o.is_empty() || old.is_some() != new.is_some()) {
        out.push(api::Update {
            update: Some(update::Update::NoEndpoints(api::NoEndpoints {
                exists: new.is_some(),
            })),
        });
    }
    out
}

#[tonic::async_trait]
impl Destination for DestinationService {
    type GetStream = Updates;
    type GetProfileStream = Profiles;

    async fn get(&self, req: Request<api::GetDestination>) -> Result<Response<Updates>, Status> {
        let target = parse_target(&req.get_ref().path)?;
        tracing::debug!(?target, "Get");
        let mut rx = self.mesh.subscribe();
        let (tx, out) = mpsc::channel(16);
        tokio::spawn(async move {
            let labels = set_labels(&target);
            let mut current: EndpointSet = None;
            let mut first = true;
            loop {
                let next = endpoints(&rx.borrow_and_update(), &target);
                for u in diff(&current, &next, &labels, first) {
                    if tx.send(Ok(u)).await.is_err() {
                        return;
                    }
                }
                current = next;
                first = false;
                tokio::select! {
                    res = rx.changed() => if res.is_err() { return },
                    () = tx.closed() => return,
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(out))))
    }

    async fn get_profile(
        &self,
        req: Request<api::GetDestination>,
    ) -> Result<Response<Profiles>, Status> {
        let target = parse_target(&req.get_ref().path)?;
        let mut rx = self.mesh.subscribe();
        let (tx, out) = mpsc::channel(4);
        tokio::spawn(async move {
            let mut last = None;
            loop {
                let profile = profile(&rx.borrow_and_update(), &target);
                if last.as_ref() != Some(&profile) {
                    if tx.send(Ok(profile.clone())).await.is_err() {
                        return;
                    }
                    last = Some(profile);
                }
                tokio::select! {
                    res = rx.changed() => if res.is_err() { return },
                    () = tx.closed() => return,
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(out))))
    }
}

/// A service's profile: its name, and opaque when all its endpoints are.
fn profile(config: &MeshConfig, target: &Target) -> api::DestinationProfile {
    match (target, target.service(config)) {
        (_, Some(s)) => api::DestinationProfile {
            fully_qualified_name: s.name.trim_end_matches('.').to_string(),
            opaque_protocol: !s.endpoints.is_empty()
                && s.endpoints
                    .iter()
                    .all(|e| e.protocol_hint == Some(ProtocolHint::Opaque)),
            routes: s.profile.routes.iter().map(profile_route).collect(),
            retry_budget: s.profile.retry_budget.as_ref().map(|b| api::RetryBudget {
                retry_ratio: b.retry_ratio,
                min_retries_per_second: b.min_retries_per_second,
                ttl: b.ttl.and_then(|t| prost_types::Duration::try_from(t).ok()),
            }),
            dst_overrides: s
                .profile
                .dst_overrides
                .iter()
                .map(|d| api::WeightedDst {
                    authority: d.authority.clone(),
                    weight: d.weight,
                    backend_ref: None,
                })
                .collect(),
            ..Default::default()
        },
        (Target::Name(..), None) => api::DestinationProfile::default(),
        (Target::Addr(addr), None) => api::DestinationProfile {
            endpoint: config.endpoint(*addr).map(weighted_addr),
            opaque_protocol: config
                .endpoint(*addr)
                .is_some_and(|e| e.protocol_hint == Some(ProtocolHint::Opaque)),
            ..Default::default()
        },
    }
}

/// A ServiceProfile route: path regex (and method), failure classes, metrics label.
fn profile_route(r: &crate::config::ProfileRouteConfig) -> api::Route {
    use api::{request_match::Match, response_match::Match as R};
    let path = api::RequestMatch {
        r#match: Some(Match::Path(api::PathMatch {
            regex: r.path_regex.clone(),
        })),
    };
    let condition = match r.method.as_deref() {
        None => path,
        Some(m) => api::RequestMatch {
            r#match: Some(Match::All(api::request_match::Seq {
                matches: vec![
                    path,
                    api::RequestMatch {
                        r#match: Some(Match::Method(crate::outbound::method(m))),
                    },
                ],
            })),
        },
    };
    let failures: Vec<(u16, u16)> = if r.failure_statuses.is_empty() {
        vec![(500, 599)]
    } else {
        r.failure_statuses
            .iter()
            .filter_map(|s| crate::config::status_range(s))
            .collect()
    };
    api::Route {
        condition: Some(condition),
        response_classes: failures
            .into_iter()
            .map(|(min, max)| api::ResponseClass {
                condition: Some(api::ResponseMatch {
                    r#match: Some(R::Status(api::HttpStatusRange {
                        min: u32::from(min),
                        max: u32::from(max),
                    })),
                }),
                is_failure: true,
            })
            .collect(),
        metrics_labels: HashMap::from([("route".to_string(), r.name.clone())]),
        is_retryable: r.retryable,
        timeout: r
            .timeout
            .and_then(|t| prost_types::Duration::try_from(t).ok()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(addrs: &[(&str, u32)]) -> EndpointSet {
        Some(
            addrs
                .iter()
                .map(|(a, w)| {
                    let a: SocketAddr = a.parse().unwrap();
                    (
                        a,
                        api::WeightedAddr {
                            addr: Some(a.into()),
                            weight: *w,
                            ..Default::default()
                        },
                    )
                })
                .collect(),
        )
    }

    fn kinds(us: &[api::Update]) -> Vec<String> {
        us.iter()
            .map(|u| match u.update.as_ref().unwrap() {
                update::Update::Add(s) => format!("add{}", s.addrs.len()),
                update::Update::Remove(s) => format!("remove{}", s.addrs.len()),
                update::Update::NoEndpoints(n) => format!("none:{}", n.exists),
            })
            .collect()
    }

    #[test]
    fn diffs_are_incremental() {
        let l = HashMap::new();
        assert_eq!(kinds(&diff(&None, &None, &l, true)), ["none:false"]);
        assert_eq!(
            kinds(&diff(&None, &Some(HashMap::new()), &l, true)),
            ["none:true"]
        );
        let a = set(&[("10.0.0.1:80", 1), ("10.0.0.2:80", 1)]);
        assert_eq!(kinds(&diff(&None, &a, &l, true)), ["add2"]);
        // One endpoint changes weight: only it is re-sent.
        let b = set(&[("10.0.0.1:80", 1), ("10.0.0.2:80", 5)]);
        assert_eq!(kinds(&diff(&a, &b, &l, false)), ["add1"]);
        // One removed, one added.
        let c = set(&[("10.0.0.1:80", 1), ("10.0.0.3:80", 1)]);
        assert_eq!(kinds(&diff(&b, &c, &l, false)), ["remove1", "add1"]);
        // Nothing changed: nothing sent.
        assert!(diff(&c, &c, &l, false).is_empty());
        // All gone, service still exists; then the service is deleted.
        assert_eq!(
            kinds(&diff(&c, &Some(HashMap::new()), &l, false)),
            ["none:true"]
        );
        assert_eq!(
            kinds(&diff(&Some(HashMap::new()), &None, &l, false)),
            ["none:false"]
        );
    }

    fn endpoint(yaml: &str) -> EndpointConfig {
        let text = format!(
            "services:\n  - name: web.default.svc.cluster.local\n    port: 80\n    endpoints:\n      - addr: 10.0.0.1:80\n{yaml}"
        );
        let config = MeshConfig::parse(&text).unwrap();
        config.services[0].endpoints[0].clone()
    }

    #[test]
    fn opaque_transport_port_is_hinted() {
        // No hint, no port: no ProtocolHint at all.
        assert_eq!(weighted_addr(&endpoint("")).protocol_hint, None);
        // A port alone: a hint with no protocol.
        let hint = weighted_addr(&endpoint("        opaque_transport_port: 4143\n"))
            .protocol_hint
            .unwrap();
        assert_eq!(hint.protocol, None);
        assert_eq!(hint.opaque_transport.unwrap().inbound_port, 4143);
        // Both.
        let hint = weighted_addr(&endpoint(
            "        protocol_hint: opaque\n        opaque_transport_port: 4143\n",
        ))
        .protocol_hint
        .unwrap();
        assert!(matches!(
            hint.protocol,
            Some(protocol_hint::Protocol::Opaque(_))
        ));
        assert_eq!(hint.opaque_transport.unwrap().inbound_port, 4143);
        // A hint alone: no opaque transport.
        let hint = weighted_addr(&endpoint("        protocol_hint: h2\n"))
            .protocol_hint
            .unwrap();
        assert!(matches!(
            hint.protocol,
            Some(protocol_hint::Protocol::H2(_))
        ));
        assert_eq!(hint.opaque_transport, None);
    }

    #[test]
    fn profile_endpoints_carry_the_opaque_transport_port() {
        let text = "services:\n  - name: web.default.svc.cluster.local\n    port: 80\n    endpoints:\n      - addr: 10.0.0.1:80\n        opaque_transport_port: 4143\n";
        let config = MeshConfig::parse(text).unwrap();
        let p = profile(&config, &Target::Addr("10.0.0.1:80".parse().unwrap()));
        let hint = p.endpoint.unwrap().protocol_hint.unwrap();
        assert_eq!(hint.opaque_transport.unwrap().inbound_port, 4143);
    }
}
