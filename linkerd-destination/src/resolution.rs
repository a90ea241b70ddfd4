//! A name's endpoints, as built from a stream of updates.

use linkerd_proxy_api::destination::{self as api, protocol_hint, tls_identity, update};
use std::{
    collections::{BTreeMap, HashMap},
    net::SocketAddr,
    sync::Arc,
};

/// What the control plane last said about a name.
///
/// The endpoint map is persistent: cloning is O(1) and [`Resolution::diff`] skips the parts
/// two versions share, so a one-endpoint change to a huge set costs O(log n), not O(n).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Resolution {
    /// The endpoints, by address.
    pub endpoints: imbl::OrdMap<SocketAddr, Endpoint>,
    /// `None` until the control plane has answered; then whether the name exists.
    pub exists: Option<bool>,
}

/// What the control plane says about a destination beyond its endpoints.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Profile {
    /// Whether the control plane has answered.
    pub received: bool,
    /// The service's name (e.g. for an `ip:port` lookup of a service address).
    pub fully_qualified_name: Option<String>,
    /// The destination's traffic is opaque: skip protocol detection.
    pub opaque: bool,
    /// Set when the lookup was an `ip:port` that is one endpoint.
    pub endpoint: Option<Endpoint>,
    /// The profile has routes or traffic-split overrides: it, not the outbound policy, decides
    /// the destination's HTTP routing (as upstream decides).
    pub routes_traffic: bool,
}

impl Profile {
    pub(crate) fn from_api(p: api::DestinationProfile) -> Self {
        Self {
            received: true,
            routes_traffic: !p.routes.is_empty() || !p.dst_overrides.is_empty(),
            fully_qualified_name: Some(p.fully_qualified_name.trim_end_matches('.').to_string())
                .filter(|n| !n.is_empty()),
            opaque: p.opaque_protocol,
            endpoint: p
                .endpoint
                .and_then(|w| Endpoint::from_api(w, &HashMap::new())),
        }
    }
}

/// One endpoint of a name.
#[derive(Clone, Debug, PartialEq)]
pub struct Endpoint {
    /// Its address.
    pub addr: SocketAddr,
    /// Its share of requests (0: the control plane left it unset).
    pub weight: u32,
    /// The set's and the endpoint's `metric_labels` (the endpoint's win), for `dst_*` labels.
    pub labels: Arc<BTreeMap<String, String>>,
    /// The TLS identity of the endpoint's proxy, if meshed.
    pub identity: Option<String>,
    /// What the endpoint's proxy accepts.
    pub hint: ProtocolHint,
    /// The port of the endpoint's proxy that takes opaque-transport connections (mTLS and a
    /// transport header naming the endpoint's port).
    pub opaque_transport_port: Option<u16>,
}

/// What the endpoint's proxy accepts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ProtocolHint {
    /// Nothing known: whatever the client speaks.
    #[default]
    Unknown,
    /// The endpoint's proxy takes HTTP/2 (HTTP/1 is carried as HTTP/2).
    H2,
    /// The endpoint's traffic is opaque.
    Opaque,
}

impl Resolution {
    /// Applies one update from the `Get` stream.
    pub fn apply(&mut self, u: api::Update) {
        match u.update {
            Some(update::Update::Add(set)) => {
                for w in set.addrs {
                    if let Some(e) = Endpoint::from_api(w, &set.metric_labels) {
                        self.endpoints.insert(e.addr, e);
                    }
                }
                self.exists = Some(true);
            }
            Some(update::Update::Remove(set)) => {
                for a in set.addrs.iter().filter_map(|a| a.to_socket_addr()) {
                    self.endpoints.remove(&a);
                }
                self.exists = Some(true);
            }
            Some(update::Update::NoEndpoints(n)) => {
                self.endpoints.clear();
                self.exists = Some(n.exists);
            }
            None => {}
        }
    }

    /// What changed from `self` to `new`: endpoints added or changed, and addresses removed.
    pub fn diff<'a>(&self, new: &'a Resolution) -> (Vec<&'a Endpoint>, Vec<SocketAddr>) {
        let (mut changed, mut removed) = (Vec::new(), Vec::new());
        for d in self.endpoints.diff(&new.endpoints) {
            match d {
                imbl::ordmap::DiffItem::Add(_, e) => changed.push(e),
                imbl::ordmap::DiffItem::Update { old, new } if old.1 != new.1 => {
                    changed.push(new.1)
                }
                imbl::ordmap::DiffItem::Update { .. } => {}
                imbl::ordmap::DiffItem::Remove(a, _) => removed.push(*a),
            }
        }
        (changed, removed)
    }
}

impl Endpoint {
    fn from_api(w: api::WeightedAddr, set_labels: &HashMap<String, String>) -> Option<Self> {
        let addr = w.addr.as_ref()?.to_socket_addr()?;
        let mut labels: BTreeMap<String, String> = set_labels
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        labels.extend(w.metric_labels);
        let identity = w.tls_identity.and_then(|t| match t.strategy {
            Some(tls_identity::Strategy::DnsLikeIdentity(d)) => Some(d.name),
            Some(tls_identity::Strategy::UriLikeIdentity(u)) => Some(u.uri),
            None => None,
        });
        let opaque_transport_port = w
            .protocol_hint
            .as_ref()
            .and_then(|h| h.opaque_transport.as_ref())
            .and_then(|o| u16::try_from(o.inbound_port).ok())
            .filter(|p| *p != 0);
        let hint = match w.protocol_hint.and_then(|h| h.protocol) {
            Some(protocol_hint::Protocol::H2(_)) => ProtocolHint::H2,
            Some(protocol_hint::Protocol::Opaque(_)) => ProtocolHint::Opaque,
            None => ProtocolHint::Unknown,
        };
        Some(Self {
            addr,
            weight: w.weight,
            labels: Arc::new(labels),
            identity,
            hint,
            opaque_transport_port,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn add(addrs: &[(&str, u32)]) -> api::Update {
        api::Update {
            update: Some(update::Update::Add(api::WeightedAddrSet {
                addrs: addrs
                    .iter()
                    .map(|(a, w)| api::WeightedAddr {
                        addr: Some(a.parse::<SocketAddr>().unwrap().into()),
                        weight: *w,
                        metric_labels: HashMap::from([("pod".to_string(), a.to_string())]),
                        ..Default::default()
                    })
                    .collect(),
                metric_labels: HashMap::from([("namespace".to_string(), "default".to_string())]),
            })),
        }
    }

    #[test]
    fn a_profile_routes_traffic_with_routes_or_overrides() {
        let plain = api::DestinationProfile {
            fully_qualified_name: "web.ns.svc.cluster.local.".into(),
            ..Default::default()
        };
        let p = Profile::from_api(plain.clone());
        assert_eq!(
            p.fully_qualified_name.as_deref(),
            Some("web.ns.svc.cluster.local")
        );
        assert!(!p.routes_traffic);
        let routed = api::DestinationProfile {
            routes: vec![api::Route::default()],
            ..plain.clone()
        };
        assert!(Profile::from_api(routed).routes_traffic);
        let split = api::DestinationProfile {
            dst_overrides: vec![api::WeightedDst::default()],
            ..plain
        };
        assert!(Profile::from_api(split).routes_traffic);
    }

    #[test]
    fn applies_updates_and_diffs() {
        let mut r = Resolution::default();
        assert_eq!(r.exists, None);
        r.apply(add(&[("10.0.0.1:80", 1), ("10.0.0.2:80", 1)]));
        assert_eq!(r.exists, Some(true));
        let e = &r.endpoints[&"10.0.0.1:80".parse::<SocketAddr>().unwrap()];
        assert_eq!(e.labels["namespace"], "default");
        assert_eq!(e.labels["pod"], "10.0.0.1:80");

        let before = r.clone();
        r.apply(add(&[("10.0.0.2:80", 5)]));
        r.apply(api::Update {
            update: Some(update::Update::Remove(api::AddrSet {
                addrs: vec!["10.0.0.1:80".parse::<SocketAddr>().unwrap().into()],
            })),
        });
        let (changed, removed) = before.diff(&r);
        assert_eq!(changed.len(), 1);
        assert_eq!(changed[0].weight, 5);
        assert_eq!(removed, ["10.0.0.1:80".parse::<SocketAddr>().unwrap()]);

        r.apply(api::Update {
            update: Some(update::Update::NoEndpoints(api::NoEndpoints {
                exists: false,
            })),
        });
        assert!(r.endpoints.is_empty());
        assert_eq!(r.exists, Some(false));
    }
}
