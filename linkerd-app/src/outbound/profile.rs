//! Step 2 of an outbound connection: what the control plane knows of its original destination.

use super::{
    discover::Discovery,
    policy::{OutboundPolicies, PolicyTarget, TargetPolicy},
    OutboundConn,
};
use crate::policy_watch::Known;
use crate::{own::OwnListeners, PortSet};
use linkerd_connect::Meshed;
use linkerd_destination::ProtocolHint;
use linkerd_detect::Protocol;
use linkerd_policy::outbound::Protocol as PolicyProtocol;
use linkerd_stack::ThenCall;
use std::{
    convert::Infallible,
    net::SocketAddr,
    sync::Arc,
    task::{Context, Poll},
};
use tokio::sync::watch;

/// An outbound connection with what the control plane said of its original destination.
#[derive(Clone)]
pub(crate) struct OutboundTarget {
    /// The original destination; `None` in explicit-proxy mode.
    pub orig_dst: Option<SocketAddr>,
    /// The discovered service the original destination is (its profile named one: a
    /// ClusterIP): its endpoints are balanced.
    pub service: Option<Arc<super::discover::Service>>,
    /// The address to dial for the original destination: the profile's endpoint address when
    /// the profile names one (it may differ from the address asked about), else `orig_dst`.
    pub dial: Option<SocketAddr>,
    /// The original destination's proxy and identity, when it is a meshed endpoint.
    pub meshed: Option<Meshed>,
    /// The original destination's proxy takes HTTP/2 (HTTP/1 is carried as HTTP/2).
    pub h2: bool,
    /// Skip detection: the port is opaque, or the profile says so.
    pub opaque: bool,
    /// The original destination's `OutboundPolicies` watch (with a policy controller).
    pub policy: Option<watch::Receiver<TargetPolicy>>,
}

/// The outbound client is the pod's own app: one address for all its connections, so only the
/// per-connection bounds apply to it.
impl linkerd_http::ClientIp for OutboundTarget {
    fn client_ip(&self) -> Option<std::net::IpAddr> {
        None
    }
}

impl OutboundTarget {
    /// The protocol known without detection.
    pub(crate) fn known_protocol(&self) -> Option<Protocol> {
        self.opaque.then_some(Protocol::Opaque)
    }
}

/// A `tower` layer over `(OutboundConn, io)`: with discovery, asks for the original
/// destination's profile (`GetProfile`) and, with a policy controller, its policy
/// (`OutboundPolicies.Watch`, shared by every connection to it), in parallel, waiting at most
/// the initial timeouts; the inner service gets `(OutboundTarget, io)`. A destination that is
/// this proxy's own listener is not looked up.
#[derive(Clone)]
pub(crate) struct ProfileLayer {
    discovery: Option<Arc<Discovery>>,
    policies: Option<Arc<OutboundPolicies>>,
    own: OwnListeners,
    opaque_ports: PortSet,
}

/// The service made by [`ProfileLayer`].
#[derive(Clone)]
pub(crate) struct Profile<S> {
    layer: ProfileLayer,
    inner: S,
}

impl ProfileLayer {
    pub(crate) fn new(
        discovery: Option<Arc<Discovery>>,
        policies: Option<Arc<OutboundPolicies>>,
        own: OwnListeners,
        opaque_ports: PortSet,
    ) -> Self {
        Self {
            discovery,
            policies,
            own,
            opaque_ports,
        }
    }

    /// What the control plane says of `conn`'s original destination.
    async fn target(&self, conn: OutboundConn) -> OutboundTarget {
        let mut target = OutboundTarget {
            orig_dst: conn.orig_dst,
            dial: conn.orig_dst,
            service: None,
            meshed: None,
            h2: false,
            opaque: false,
            policy: None,
        };
        let Some(dst) = conn.orig_dst else {
            return target;
        };
        target.opaque = self.opaque_ports.contains(dst.port());
        let discovery = match &self.discovery {
            Some(d) if !self.own.contains(dst) => d,
            _ => return target,
        };
        let policy = async {
            match &self.policies {
                Some(p) => Some(p.get(PolicyTarget::Addr(dst)).await),
                None => None,
            }
        };
        let (profile, policy) = futures_util::join!(discovery.profile(dst), policy);
        // A profile with routes or traffic splits wins over the policy, as upstream decides.
        let profile_routes = profile.as_ref().is_some_and(|p| p.routes_traffic);
        if let Some((known, rx)) = policy.filter(|_| !profile_routes) {
            // The policy says the traffic is opaque: no detection.
            if let Known::Policy(p) = &known {
                target.opaque |= matches!(p.protocol, PolicyProtocol::Opaque(_));
            }
            target.policy = Some(rx);
        }
        if let Some(p) = profile {
            target.service = p
                .fully_qualified_name
                .as_ref()
                .and_then(|name| discovery.service(&format!("{name}:{}", dst.port())));
            if let Some(e) = &p.endpoint {
                target.dial = Some(e.addr);
            }
            target.meshed = p.endpoint.as_ref().and_then(|e| discovery.meshed(e));
            target.h2 = p
                .endpoint
                .as_ref()
                .is_some_and(|e| e.hint == ProtocolHint::H2);
            target.opaque |= p.opaque;
        }
        target
    }
}

impl<S> tower::Layer<S> for ProfileLayer {
    type Service = Profile<S>;

    fn layer(&self, inner: S) -> Profile<S> {
        Profile {
            layer: self.clone(),
            inner,
        }
    }
}

impl<I, S> tower::Service<(OutboundConn, I)> for Profile<S>
where
    I: Send + 'static,
    S: tower::Service<(OutboundTarget, I)> + Clone + Send + 'static,
    S::Error: From<Infallible>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = ThenCall<S, (OutboundTarget, I), Infallible>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        // Readiness is checked on the clone that serves the connection.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, (conn, io): (OutboundConn, I)) -> Self::Future {
        let layer = self.layer.clone();
        let looking_up = async move { Ok((layer.target(conn).await, io)) };
        ThenCall::new(looking_up, self.inner.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tower::{Layer, ServiceExt};

    /// Reports what the inner service was given.
    fn inner() -> impl tower::Service<
        (OutboundTarget, ()),
        Response = (Option<SocketAddr>, bool, bool),
        Error = std::convert::Infallible,
        Future = impl Send,
    > + Clone
           + Send
           + 'static {
        tower::service_fn(|(t, ()): (OutboundTarget, ())| async move {
            Ok((t.orig_dst, t.opaque, t.service.is_some()))
        })
    }

    fn layer() -> ProfileLayer {
        let own = OwnListeners::new(vec!["127.0.0.1:4140".parse().unwrap()]);
        ProfileLayer::new(None, None, own, PortSet::parse("3306,5432").unwrap())
    }

    #[tokio::test]
    async fn opaque_ports_skip_detection_and_explicit_mode_has_no_target() {
        let svc = layer().layer(inner());
        let conn = |dst: &str| OutboundConn {
            orig_dst: Some(dst.parse().unwrap()),
        };
        let got = svc
            .clone()
            .oneshot((conn("10.0.0.5:5432"), ()))
            .await
            .unwrap();
        assert_eq!(got, (Some("10.0.0.5:5432".parse().unwrap()), true, false));
        let got = svc
            .clone()
            .oneshot((conn("10.0.0.5:8080"), ()))
            .await
            .unwrap();
        assert!(!got.1, "detected");
        let got = svc
            .oneshot((OutboundConn { orig_dst: None }, ()))
            .await
            .unwrap();
        assert_eq!(got, (None, false, false));
    }
}
