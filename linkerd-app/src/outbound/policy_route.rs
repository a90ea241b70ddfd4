//! Routing an outbound request by its target's `OutboundPolicies` policy: the request's route
//! (Gateway API matching over `:authority`/Host, path, headers, query, method), the rule's
//! filters, a backend by weight, the rule's timeouts.
//!
//! A connection follows its original destination's policy: an update applies to the
//! connection's next request. Without a policy (none watched, the control plane has none, or
//! only invalid ones so far), or when the policy does not route HTTP, requests go to the inner
//! service (routing by authority and profile, [`super::route`]).

use super::retry;
use super::{
    discover::{Discovery, HttpBalance, Service},
    http::{target_stack, TargetStack},
    policy::TargetPolicy,
    route::count_unserved,
};
use crate::{filters, own::OwnListeners, policy_watch::Known};
use http::{Request, Response, Version};
use hyper::body::Incoming;
use linkerd_connect::Connector;
use linkerd_http::{authority_of, Client, Error, ForwardBody, HttpMetrics, ProxyBody};
use linkerd_policy::{
    outbound::{Backend, BackendTarget, Distribution, OutboundPolicy, RuleParams, Timeouts},
    route::{authority_host, select_index, Filter, Rule},
};
use linkerd_proxy_transport::TlsLabel;
use parking_lot::Mutex;
use std::{
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{ready, Context, Poll},
    time::Duration,
};
use tokio::{sync::watch, time::Sleep};
use tower::{util::Oneshot, ServiceExt};

type Req = Request<Incoming>;
type Rsp = Result<Response<ProxyBody>, Error>;

/// What a connection needs to reach a policy's backends.
#[derive(Clone)]
pub(crate) struct Backends {
    pub discovery: Option<Arc<Discovery>>,
    pub metrics: HttpMetrics,
    pub own: OwnListeners,
    pub client: Client<linkerd_http::ForwardBody, Connector>,
    pub tls: TlsLabel,
}

/// A `tower` layer over one connection's requests: routes each by the connection's policy
/// (when it has one), else passes it to the inner service.
#[derive(Clone)]
pub(crate) struct PolicyRouteLayer {
    policy: Option<watch::Receiver<TargetPolicy>>,
    backends: Arc<Backends>,
}

/// The service made by [`PolicyRouteLayer`].
#[derive(Clone)]
pub(crate) struct PolicyRoute<F> {
    /// `None`: the connection has no policy to follow.
    conn: Option<Arc<Mutex<ConnPolicy>>>,
    /// Read only when the policy changes (shared: the service is cloned per request).
    backends: Arc<Backends>,
    inner: F,
}

/// A connection's view of its policy: rebuilt when the policy changes.
struct ConnPolicy {
    rx: watch::Receiver<TargetPolicy>,
    routed: Option<Arc<Routed>>,
}

/// A policy with its backends resolved (each backend's service looked up once).
struct Routed {
    policy: Arc<OutboundPolicy>,
    /// By [`Backend::index`].
    backends: Vec<BackendSvc>,
}

/// Where a backend's requests go.
#[derive(Clone)]
pub(crate) enum BackendSvc {
    /// A discovered service's balancer.
    Balanced(Arc<Service>),
    /// One address, as is.
    Forward(TargetStack),
    /// A discovery path the proxy does not discover (outside the discovery suffixes, or no
    /// discovery configured).
    Undiscoverable(String),
}

pin_project_lite::pin_project! {
    /// The response future of [`PolicyRoute`].
    pub(crate) struct ResponseFuture<F> {
        #[pin]
        state: State<F>,
    }
}

pin_project_lite::pin_project! {
    #[project = Proj]
    enum State<F> {
        Inner { #[pin] inner: F },
        Failed { error: Option<Error> },
        Routed {
            #[pin]
            call: Call,
            // The rule's timeout, when it has one (boxed: only then).
            deadline: Option<Deadline>,
            // Response filters to apply: the policy, route, rule and backend.
            respond: Option<(Arc<Routed>, usize, usize, usize, bool)>,
        },
    }
}

type FwdReq = Request<ForwardBody>;

pin_project_lite::pin_project! {
    /// A request sent to a backend (once, or with retries).
    #[project = CallProj]
    pub(crate) enum Call {
        Balanced { #[pin] inner: Oneshot<HttpBalance, FwdReq>, svc: Arc<Service> },
        Forward { #[pin] inner: Oneshot<TargetStack, FwdReq> },
        Undiscoverable { path: Option<String> },
        // Retries: only for rules that retry (boxed: only then).
        Retrying { inner: Pin<Box<dyn Future<Output = Rsp> + Send>> },
    }
}

impl BackendSvc {
    /// Sends `req` once.
    pub(crate) fn call(&self, req: FwdReq) -> Call {
        match self {
            BackendSvc::Balanced(svc) => Call::Balanced {
                inner: svc.http().oneshot(req),
                svc: svc.clone(),
            },
            BackendSvc::Forward(stack) => Call::Forward {
                inner: stack.clone().oneshot(req),
            },
            BackendSvc::Undiscoverable(path) => Call::Undiscoverable {
                path: Some(path.clone()),
            },
        }
    }
}

impl Future for Call {
    type Output = Rsp;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Rsp> {
        match self.project() {
            CallProj::Balanced { inner, svc } => {
                let res = ready!(inner.poll(cx));
                count_unserved(svc, &res);
                Poll::Ready(res)
            }
            CallProj::Forward { inner } => inner.poll(cx),
            CallProj::Undiscoverable { path } => match path.take() {
                Some(name) => Poll::Ready(Err(Error::Resolve {
                    name,
                    reason: "the policy's backend is not under a discovery suffix".into(),
                })),
                None => Poll::Pending,
            },
            CallProj::Retrying { inner } => inner.as_mut().poll(cx),
        }
    }
}

struct Deadline {
    sleep: Pin<Box<Sleep>>,
    which: &'static str,
    timeout: Duration,
}

impl PolicyRouteLayer {
    /// Routes by `policy` (when the connection has one), over `backends`.
    pub(crate) fn new(policy: Option<watch::Receiver<TargetPolicy>>, backends: Backends) -> Self {
        Self {
            policy,
            backends: Arc::new(backends),
        }
    }
}

impl<F> tower::Layer<F> for PolicyRouteLayer {
    type Service = PolicyRoute<F>;

    fn layer(&self, inner: F) -> PolicyRoute<F> {
        PolicyRoute {
            conn: self.policy.clone().map(|rx| {
                Arc::new(Mutex::new(ConnPolicy {
                    // Marked changed, so the first request builds the routes.
                    rx: mark_changed(rx),
                    routed: None,
                }))
            }),
            backends: self.backends.clone(),
            inner,
        }
    }
}

fn mark_changed(mut rx: watch::Receiver<TargetPolicy>) -> watch::Receiver<TargetPolicy> {
    rx.mark_changed();
    rx
}

impl<F> tower::Service<Req> for PolicyRoute<F>
where
    F: tower::Service<Req, Response = Response<ProxyBody>, Error = Error>,
{
    type Response = Response<ProxyBody>;
    type Error = Error;
    type Future = ResponseFuture<F::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        // Requests without a policy go to the inner service: it is readied first. A
        // balancer is driven to readiness in the response future.
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Req) -> Self::Future {
        // A policy that routes this request's HTTP version (not one for opaque or TLS).
        let h2 = req.version() == Version::HTTP_2;
        let state = match self.routed().filter(|r| r.policy.http(h2).is_some()) {
            Some(routed) => route(routed, h2, req),
            None => State::Inner {
                inner: self.inner.call(req),
            },
        };
        ResponseFuture { state }
    }
}

/// Routes `req` by `routed`'s policy, which routes HTTP of its version.
fn route<F>(routed: Arc<Routed>, h2: bool, mut req: Req) -> State<F> {
    let failed = |e| State::Failed { error: Some(e) };
    let Some(http) = routed.policy.http(h2) else {
        return failed(Error::RouteNotFound);
    };
    let host = authority_of(&req).and_then(authority_host);
    let Some((ri, ui)) = select_index(&http.routes, host, &req) else {
        return failed(Error::RouteNotFound);
    };
    let rule = &http.routes[ri].rules[ui];
    for f in &rule.filters {
        if let Err(e) = filters::apply_request(f, &mut req) {
            return failed(e);
        }
    }
    let Some(backend) = pick(&rule.params.backends, &routed) else {
        return failed(Error::NoBackends);
    };
    for f in &backend.filters {
        if let Err(e) = filters::apply_request(f, &mut req) {
            return failed(e);
        }
    }
    let mut timeouts = rule.params.timeouts;
    let mut retry = rule.params.retry.clone();
    if rule.params.allow_l5d_request_headers {
        if let Some(r) = retry::from_headers(req.headers_mut(), retry.as_ref(), &mut timeouts) {
            retry = Some(r);
        }
    }
    let deadline = deadline(&timeouts);
    let responds = |fs: &[Filter]| {
        fs.iter()
            .any(|f| matches!(f, Filter::ResponseHeaders { .. }))
    };
    let index = backend.index;
    let svc = &routed.backends[index];
    let call = match retry.filter(|r| r.max_retries > 0 && retry::fits(req.headers(), r)) {
        Some(r) => {
            let head = linkerd_http::head_of(&req);
            let body = ForwardBody::held(req.into_body(), r.max_request_bytes);
            Call::Retrying {
                inner: Box::pin(retry::send(svc.clone(), head, body, r)),
            }
        }
        None => svc.call(req.map(ForwardBody::deferred)),
    };
    let respond = (responds(&rule.filters) || responds(&backend.filters))
        .then(|| (routed.clone(), ri, ui, index, h2));
    State::Routed {
        call,
        deadline,
        respond,
    }
}

/// The backend a request goes to: the first with a ready endpoint (else the first), or one
/// at random by weight.
fn pick<'a>(d: &'a Distribution, routed: &Routed) -> Option<&'a Backend> {
    match d {
        Distribution::Empty => None,
        Distribution::FirstAvailable(bs) => bs
            .iter()
            .find(|b| match &routed.backends[b.index] {
                BackendSvc::Balanced(svc) => svc.has_ready(),
                BackendSvc::Forward(_) => true,
                BackendSvc::Undiscoverable(_) => false,
            })
            .or(bs.first()),
        Distribution::RandomAvailable(bs) => {
            if bs.len() == 1 {
                return bs.first().map(|(b, _)| b);
            }
            let total: u64 = bs.iter().map(|(_, w)| u64::from(*w)).sum();
            let mut at = rand::random_range(0..total.max(1));
            for (b, w) in bs {
                if at < u64::from(*w) {
                    return Some(b);
                }
                at -= u64::from(*w);
            }
            bs.last().map(|(b, _)| b)
        }
    }
}

/// The rule's deadline for a request starting now, until its response headers: the request
/// timeout; the response timeout, which the API counts from the request's end, is counted
/// from its start too (the same for a request without a body; stricter for one with a body).
fn deadline(t: &Timeouts) -> Option<Deadline> {
    let (which, timeout) = match (t.request, t.response) {
        (None, None) => return None,
        (Some(r), None) => ("request", r),
        (None, Some(r)) => ("response", r),
        (Some(a), Some(b)) if a <= b => ("request", a),
        (Some(_), Some(b)) => ("response", b),
    };
    Some(Deadline {
        sleep: Box::pin(tokio::time::sleep(timeout)),
        which,
        timeout,
    })
}

impl<F> PolicyRoute<F> {
    /// The connection's routed policy, rebuilt when it changed; `None` without one.
    fn routed(&self) -> Option<Arc<Routed>> {
        let conn = self.conn.as_ref()?;
        let mut conn = conn.lock();
        if conn.rx.has_changed().unwrap_or(false) {
            let known = conn.rx.borrow_and_update().clone();
            conn.routed = match known {
                Known::Policy(policy) => Some(Arc::new(self.resolve(policy))),
                Known::Pending | Known::Default | Known::Invalid(_) => None,
            };
        }
        conn.routed.clone()
    }

    /// Looks each backend of `policy` up once; its services get the policy's failure
    /// accrual.
    fn resolve(&self, policy: Arc<OutboundPolicy>) -> Routed {
        let accrual = [false, true]
            .into_iter()
            .find_map(|h2| policy.http(h2)?.failure_accrual.as_ref());
        let backends = policy
            .backends
            .iter()
            .map(|(t, queue)| match t {
                BackendTarget::Balance { path, .. } => {
                    match self
                        .backends
                        .discovery
                        .as_ref()
                        .and_then(|d| d.service(path))
                    {
                        Some(svc) => {
                            svc.set_accrual(accrual);
                            svc.set_queue(queue);
                            BackendSvc::Balanced(svc)
                        }
                        None => BackendSvc::Undiscoverable(path.clone()),
                    }
                }
                BackendTarget::Forward(addr) => BackendSvc::Forward(target_stack(
                    &self.backends.metrics,
                    &self.backends.own,
                    &self.backends.client,
                    *addr,
                    None,
                    false,
                    self.backends.tls.clone(),
                )),
            })
            .collect();
        Routed { policy, backends }
    }
}

impl<F> Future for ResponseFuture<F>
where
    F: Future<Output = Rsp>,
{
    type Output = Rsp;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Rsp> {
        match self.project().state.project() {
            Proj::Inner { inner } => inner.poll(cx),
            // Polled once more after it answered: it never answers again.
            Proj::Failed { error } => error.take().map_or(Poll::Pending, |e| Poll::Ready(Err(e))),
            Proj::Routed {
                call,
                deadline,
                respond,
            } => {
                if let Some(d) = deadline {
                    if d.sleep.as_mut().poll(cx).is_ready() {
                        // Dropping the call (with this future) cancels the request upstream.
                        return Poll::Ready(Err(Error::RouteTimeout {
                            which: d.which,
                            timeout: d.timeout,
                        }));
                    }
                }
                let mut rsp = ready!(call.poll(cx))?;
                if let Some((routed, ri, ui, bi, h2)) = respond.take() {
                    apply_response(&routed, ri, ui, bi, h2, &mut rsp);
                }
                Poll::Ready(Ok(rsp))
            }
        }
    }
}

/// The response header modifiers of the rule and of its backend.
fn apply_response(
    routed: &Routed,
    ri: usize,
    ui: usize,
    bi: usize,
    h2: bool,
    rsp: &mut Response<ProxyBody>,
) {
    let Some(http) = routed.policy.http(h2) else {
        return;
    };
    let rule: &Rule<RuleParams> = &http.routes[ri].rules[ui];
    let backend = match &rule.params.backends {
        Distribution::Empty => None,
        Distribution::FirstAvailable(bs) => bs.iter().find(|b| b.index == bi),
        Distribution::RandomAvailable(bs) => bs.iter().map(|(b, _)| b).find(|b| b.index == bi),
    };
    let backend_filters = backend.map(|b| b.filters.as_slice()).unwrap_or_default();
    for f in rule.filters.iter().chain(backend_filters) {
        filters::apply_response(f, rsp);
    }
}
