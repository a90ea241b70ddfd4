//! The proxy's own listeners: a target that is one of them would loop (or reach the admin
//! server from outside).

use http::{Request, Response};
use linkerd_http::{Error, ProxyBody};
use std::{
    future::{ready, Ready},
    net::SocketAddr,
    sync::Arc,
    task::{Context, Poll},
};

/// The proxy's own listener addresses, and the pod's own IPs (which reach a listener bound to
/// `0.0.0.0` or `[::]`).
#[derive(Clone, Debug)]
pub(crate) struct OwnListeners(Arc<(Vec<SocketAddr>, Vec<std::net::IpAddr>)>);

impl OwnListeners {
    /// Listeners only, no pod IPs (tests).
    #[cfg(test)]
    pub(crate) fn new(addrs: Vec<SocketAddr>) -> Self {
        Self::with_local_ips(addrs, Vec::new())
    }

    /// Listeners bound to every address are also reached at `local` (the pod's IPs,
    /// `LINKERD2_PROXY_INBOUND_IPS`).
    pub(crate) fn with_local_ips(addrs: Vec<SocketAddr>, local: Vec<std::net::IpAddr>) -> Self {
        let local = local.into_iter().map(|ip| ip.to_canonical()).collect();
        Self(Arc::new((addrs, local)))
    }

    /// Whether `addr` reaches one of this proxy's listeners. An IPv4-mapped IPv6 address
    /// (`[::ffff:127.0.0.1]`) is the IPv4 one, and `[::]` takes IPv4 too (dual-stack).
    pub(crate) fn contains(&self, addr: SocketAddr) -> bool {
        let ip = addr.ip().to_canonical();
        let (listeners, local) = &*self.0;
        listeners.iter().any(|l| {
            let own = l.ip().to_canonical();
            l.port() == addr.port()
                && (own == ip
                    || own.is_unspecified()
                        && (ip.is_loopback() || ip.is_unspecified() || local.contains(&ip))
                    || own.is_loopback() && ip.is_unspecified())
        })
    }
}

/// Fails every request of a stack whose target is one of this proxy's own listeners: a
/// forwarding loop (502), or, for a target an explicit-proxy request named, a forbidden one
/// (403). Decided once, when the stack is built for its target.
#[derive(Clone, Debug)]
pub(crate) struct RefuseOwnLayer {
    refusal: Option<Arc<Refusal>>,
}

#[derive(Debug)]
enum Refusal {
    Loop(SocketAddr),
    Forbidden(String),
}

/// The service made by [`RefuseOwnLayer`].
#[derive(Clone, Debug)]
pub(crate) struct RefuseOwn<S> {
    inner: S,
    refusal: Option<Arc<Refusal>>,
}

impl RefuseOwnLayer {
    /// Requests to `addr` would loop.
    pub(crate) fn loop_to(own: &OwnListeners, addr: SocketAddr) -> Self {
        Self {
            refusal: own.contains(addr).then(|| Arc::new(Refusal::Loop(addr))),
        }
    }

    /// Requests to `target` (at `addr`) are forbidden.
    pub(crate) fn forbidden(own: &OwnListeners, addr: SocketAddr, target: String) -> Self {
        Self {
            refusal: own
                .contains(addr)
                .then(|| Arc::new(Refusal::Forbidden(target))),
        }
    }
}

impl<S> tower::Layer<S> for RefuseOwnLayer {
    type Service = RefuseOwn<S>;

    fn layer(&self, inner: S) -> RefuseOwn<S> {
        RefuseOwn {
            inner,
            refusal: self.refusal.clone(),
        }
    }
}

impl<B, S> tower::Service<Request<B>> for RefuseOwn<S>
where
    S: tower::Service<Request<B>, Response = Response<ProxyBody>, Error = Error>,
{
    type Response = Response<ProxyBody>;
    type Error = Error;
    type Future =
        futures_util::future::Either<S::Future, Ready<Result<Response<ProxyBody>, Error>>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        use futures_util::future::Either;
        match self.refusal.as_deref() {
            None => Either::Left(self.inner.call(req)),
            Some(Refusal::Loop(addr)) => Either::Right(ready(Err(Error::Loop { addr: *addr }))),
            Some(Refusal::Forbidden(target)) => Either::Right(ready(Err(Error::Forbidden {
                target: target.clone(),
                reason: "it is one of this proxy's own listeners",
            }))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tower::{Layer, ServiceExt};

    fn own() -> OwnListeners {
        OwnListeners::new(vec![
            "0.0.0.0:4143".parse().unwrap(),
            "127.0.0.1:4140".parse().unwrap(),
        ])
    }

    #[test]
    fn own_listeners() {
        let own = own();
        assert!(own.contains("127.0.0.1:4143".parse().unwrap()));
        assert!(own.contains("127.0.0.1:4140".parse().unwrap()));
        assert!(own.contains("0.0.0.0:4140".parse().unwrap()));
        assert!(!own.contains("127.0.0.1:8080".parse().unwrap()));
        assert!(!own.contains("10.0.0.2:4140".parse().unwrap()));
        // The same listeners, spelled as IPv4-mapped IPv6 addresses.
        assert!(own.contains("[::ffff:127.0.0.1]:4140".parse().unwrap()));
        assert!(own.contains("[::ffff:127.0.0.1]:4143".parse().unwrap()));
        assert!(own.contains("[::ffff:0.0.0.0]:4140".parse().unwrap()));
        assert!(own.contains("[::]:4140".parse().unwrap()));
        assert!(!own.contains("[::ffff:10.0.0.2]:4140".parse().unwrap()));
        // A dual-stack listener is reached over IPv4 and IPv6 loopback.
        let dual = OwnListeners::new(vec!["[::]:4191".parse().unwrap()]);
        assert!(dual.contains("127.0.0.1:4191".parse().unwrap()));
        assert!(dual.contains("[::1]:4191".parse().unwrap()));
        assert!(dual.contains("[::ffff:127.0.0.1]:4191".parse().unwrap()));
        // Every spelling of loopback reaches a listener on every address; so do the pod's IPs.
        assert!(own.contains("127.1.2.3:4143".parse().unwrap()));
        let pod = OwnListeners::with_local_ips(
            vec![
                "0.0.0.0:4191".parse().unwrap(),
                "127.0.0.1:4140".parse().unwrap(),
            ],
            vec!["10.0.0.7".parse().unwrap(), "fd00::7".parse().unwrap()],
        );
        assert!(pod.contains("10.0.0.7:4191".parse().unwrap()));
        assert!(pod.contains("[::ffff:10.0.0.7]:4191".parse().unwrap()));
        assert!(
            !pod.contains("10.0.0.7:4140".parse().unwrap()),
            "loopback only"
        );
        assert!(!pod.contains("10.0.0.8:4191".parse().unwrap()));
    }

    fn app() -> impl tower::Service<
        Request<()>,
        Response = Response<ProxyBody>,
        Error = Error,
        Future = impl std::future::Future<Output = Result<Response<ProxyBody>, Error>>,
    > + Clone {
        tower::service_fn(|_: Request<()>| async { Ok(Response::new(ProxyBody::empty())) })
    }

    #[tokio::test]
    async fn requests_to_an_own_listener_are_refused_and_others_pass() {
        let req = || Request::new(());
        let looped = RefuseOwnLayer::loop_to(&own(), "127.0.0.1:4143".parse().unwrap());
        let err = looped.layer(app()).oneshot(req()).await.unwrap_err();
        assert_eq!(err.status(), 502);
        assert!(err.to_string().contains("forwarding loop"), "{err}");

        let admin = "127.0.0.1:4140".parse().unwrap();
        let forbidden = RefuseOwnLayer::forbidden(&own(), admin, "localhost:4140".into());
        let err = forbidden.layer(app()).oneshot(req()).await.unwrap_err();
        assert_eq!(err.status(), 403);
        assert!(err.to_string().contains("localhost:4140"), "{err}");

        let app_port = RefuseOwnLayer::loop_to(&own(), "127.0.0.1:8080".parse().unwrap());
        let rsp = app_port.layer(app()).oneshot(req()).await.unwrap();
        assert_eq!(rsp.status(), 200);
    }
}
