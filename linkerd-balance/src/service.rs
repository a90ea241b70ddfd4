//! The balancer as a `tower::Service`: ready when an endpoint is, then calls that endpoint's
//! service.

use crate::{balancer::Pick, Balancer, Endpoint, Error, InFlight};
use std::{
    fmt,
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{ready, Context, Poll},
};
use tower::{util::Oneshot, Service, ServiceExt};

/// Picks, for each request, one of a [`Balancer`]'s endpoints by power of two choices over
/// peak-EWMA, and sends the request to that endpoint's service.
///
/// `poll_ready` is "an endpoint is ready": it waits, in the balancer's bounded queue and for
/// at most its fail-fast timeout, while none is (an error then says why); a name the control
/// plane says does not exist fails at once. The endpoint's service is `endpoint(&meta)`,
/// cloned per request. The response future reports back: the time to the response as the
/// endpoint's latency, and a failure that `connect_failed` recognises as a connect failure,
/// which takes the endpoint out of the ready set for a back-off.
///
/// `C` says which responses are failures, for the balancer's failure accrual (when it is on):
/// any error but a connect failure is one too.
pub struct Balance<T, S, E, C = NoFailures> {
    balancer: Arc<Balancer<T>>,
    endpoint: fn(&T) -> &S,
    connect_failed: fn(&E) -> bool,
    chosen: Option<Arc<Endpoint<T>>>,
    waiting: Option<Waiting<T>>,
    _classify: std::marker::PhantomData<fn() -> C>,
}

/// Which responses count as failures for failure accrual.
pub trait Classify<Rsp> {
    /// Whether `rsp` is a failure.
    fn is_failure(rsp: &Rsp) -> bool;
}

/// No response is a failure (failure accrual counts only errors).
#[derive(Debug)]
pub enum NoFailures {}

impl<Rsp> Classify<Rsp> for NoFailures {
    fn is_failure(_: &Rsp) -> bool {
        false
    }
}

type Waiting<T> = Pin<Box<dyn Future<Output = Result<Arc<Endpoint<T>>, Error>> + Send>>;

pin_project_lite::pin_project! {
    /// The response future of [`Balance`]: the endpoint's response, reported to the balancer.
    pub struct ResponseFuture<T, S: Service<R>, R, C = NoFailures> {
        #[pin]
        inner: Oneshot<S, R>,
        in_flight: InFlight<T>,
        balancer: Arc<Balancer<T>>,
        connect_failed: fn(&S::Error) -> bool,
        _classify: std::marker::PhantomData<fn() -> C>,
    }
}

// === impl Balance ===

impl<T, S, E, C> Balance<T, S, E, C> {
    /// Balances over `balancer`'s endpoints, calling `endpoint(&meta)` of the one chosen.
    pub fn new(
        balancer: Arc<Balancer<T>>,
        endpoint: fn(&T) -> &S,
        connect_failed: fn(&E) -> bool,
    ) -> Self {
        Self {
            balancer,
            endpoint,
            connect_failed,
            chosen: None,
            waiting: None,
            _classify: std::marker::PhantomData,
        }
    }
}

impl<T, S, E, C> Clone for Balance<T, S, E, C> {
    /// A clone has not chosen an endpoint yet.
    fn clone(&self) -> Self {
        Self::new(self.balancer.clone(), self.endpoint, self.connect_failed)
    }
}

impl<T, S, E, C> fmt::Debug for Balance<T, S, E, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Balance")
            .field("name", &self.balancer.name())
            .field("chosen", &self.chosen.as_ref().map(|e| e.addr))
            .finish()
    }
}

impl<T, S, R, C> Service<R> for Balance<T, S, S::Error, C>
where
    T: Send + Sync + 'static,
    S: Service<R> + Clone,
    S::Error: From<Error>,
    C: Classify<S::Response>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = ResponseFuture<T, S, R, C>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        if self.chosen.is_some() {
            return Poll::Ready(Ok(()));
        }
        // The common case, an endpoint ready now, waits for nothing and allocates nothing.
        if self.waiting.is_none() {
            // A request's first ask (a waiting one asks again through `waiting`).
            self.balancer.count_request();
            match self.balancer.pick() {
                Pick::Chosen(e) => {
                    self.chosen = Some(e);
                    return Poll::Ready(Ok(()));
                }
                Pick::NotFound => {
                    let name = self.balancer.name().to_string();
                    return Poll::Ready(Err(Error::NotFound { name }.into()));
                }
                Pick::Wait(_) => {
                    let balancer = self.balancer.clone();
                    self.waiting = Some(Box::pin(async move { balancer.ready().await }));
                }
            }
        }
        let Some(waiting) = self.waiting.as_mut() else {
            // Set just above when it was empty.
            return Poll::Pending;
        };
        let res = ready!(waiting.as_mut().poll(cx));
        self.waiting = None;
        self.chosen = Some(res?);
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: R) -> Self::Future {
        // The `Service` contract: `call` follows a successful `poll_ready`, which chose.
        let endpoint = self
            .chosen
            .take()
            .expect("Balance::call without a successful poll_ready");
        let svc = (self.endpoint)(&endpoint.meta).clone();
        ResponseFuture {
            in_flight: endpoint.start(),
            inner: svc.oneshot(req),
            balancer: self.balancer.clone(),
            connect_failed: self.connect_failed,
            _classify: std::marker::PhantomData,
        }
    }
}

// === impl ResponseFuture ===

impl<T, S: Service<R>, R, C: Classify<S::Response>> Future for ResponseFuture<T, S, R, C> {
    type Output = Result<S::Response, S::Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let res = ready!(this.inner.poll(cx));
        let endpoint = this.in_flight.endpoint();
        match &res {
            Ok(rsp) => {
                this.in_flight.first_byte();
                this.balancer.connected(endpoint);
                this.balancer.outcome(endpoint, C::is_failure(rsp));
            }
            Err(e) if (this.connect_failed)(e) => this.balancer.connect_failed(endpoint),
            Err(_) => this.balancer.outcome(endpoint, true),
        }
        Poll::Ready(res)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::BalancerConfig;
    use std::{net::SocketAddr, time::Duration};
    use tokio::time::Instant;

    /// A test endpoint's service: answers with its id, or fails as told.
    #[derive(Clone)]
    struct Ep {
        id: u16,
        fail: Option<TestError>,
        delay: Duration,
    }

    #[derive(Clone, Debug, PartialEq)]
    enum TestError {
        Connect,
        Reset,
        Balance(String),
    }

    impl From<Error> for TestError {
        fn from(e: Error) -> Self {
            TestError::Balance(e.to_string())
        }
    }

    impl Service<()> for Ep {
        type Response = u16;
        type Error = TestError;
        type Future = Pin<Box<dyn Future<Output = Result<u16, TestError>> + Send>>;

        fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), TestError>> {
            Poll::Ready(Ok(()))
        }

        fn call(&mut self, (): ()) -> Self::Future {
            let Ep { id, fail, delay } = self.clone();
            Box::pin(async move {
                tokio::time::sleep(delay).await;
                fail.map_or(Ok(id), Err)
            })
        }
    }

    fn addr(i: u16) -> SocketAddr {
        SocketAddr::from(([10, 0, 0, 1], i))
    }

    fn ep(id: u16) -> (SocketAddr, u32, Ep) {
        let ep = Ep {
            id,
            fail: None,
            delay: Duration::ZERO,
        };
        (addr(id), 1, ep)
    }

    type Svc = Balance<Ep, Ep, TestError>;

    fn balance(b: &Arc<Balancer<Ep>>) -> Svc {
        Balance::new(b.clone(), |ep| ep, |e| *e == TestError::Connect)
    }

    fn balancer() -> Arc<Balancer<Ep>> {
        Arc::new(Balancer::new("web:80", BalancerConfig::default()))
    }

    #[tokio::test(start_paused = true)]
    async fn ready_waits_for_an_endpoint_then_calls_it() {
        let b = balancer();
        let call = tokio::spawn(balance(&b).oneshot(()));
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(b.stats().queued, 1, "waiting in the queue");
        b.update([ep(7)], &[]);
        assert_eq!(call.await.unwrap(), Ok(7));
        assert_eq!(b.stats().queued, 0);
    }

    #[tokio::test(start_paused = true)]
    async fn no_endpoint_fails_fast_and_a_missing_name_at_once() {
        let b = balancer();
        b.no_endpoints(true);
        let start = Instant::now();
        let err = balance(&b).oneshot(()).await.unwrap_err();
        assert_eq!(
            err,
            TestError::Balance("no endpoints of web:80 became ready within 3s".into())
        );
        assert_eq!(
            start.elapsed(),
            Duration::from_secs(3),
            "the fail-fast timeout"
        );

        b.no_endpoints(false);
        let start = Instant::now();
        let err = balance(&b).oneshot(()).await.unwrap_err();
        assert_eq!(err, TestError::Balance("web:80 does not exist".into()));
        assert_eq!(start.elapsed(), Duration::ZERO);
    }

    #[tokio::test(start_paused = true)]
    async fn the_queue_is_bounded() {
        let cfg = BalancerConfig {
            queue_capacity: 1,
            ..BalancerConfig::default()
        };
        let b = Arc::new(Balancer::new("web:80", cfg));
        let first = tokio::spawn(balance(&b).oneshot(()));
        tokio::time::sleep(Duration::from_millis(1)).await;
        let err = balance(&b).oneshot(()).await.unwrap_err();
        assert_eq!(
            err,
            TestError::Balance("web:80 already has 1 requests waiting for an endpoint".into())
        );
        b.update([ep(1)], &[]);
        assert_eq!(first.await.unwrap(), Ok(1));
    }

    #[tokio::test(start_paused = true)]
    async fn a_connect_failure_backs_the_endpoint_off_and_a_reset_does_not() {
        let b = balancer();
        let mut bad = ep(1);
        bad.2.fail = Some(TestError::Connect);
        b.update([bad, ep(2)], &[]);
        // Until endpoint 1 has failed, some requests reach it.
        let mut failed = false;
        for _ in 0..100 {
            if balance(&b).oneshot(()).await == Err(TestError::Connect) {
                failed = true;
                break;
            }
        }
        assert!(failed, "endpoint 1 was never chosen");
        assert_eq!(b.stats().ready, 1, "in back-off");
        for _ in 0..50 {
            assert_eq!(balance(&b).oneshot(()).await, Ok(2));
        }

        // A failure that is not a connect failure leaves the endpoint ready.
        let mut reset = ep(3);
        reset.2.fail = Some(TestError::Reset);
        b.update([reset], &[addr(1), addr(2)]);
        assert_eq!(balance(&b).oneshot(()).await, Err(TestError::Reset));
        assert_eq!(b.stats().ready, 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_request_in_flight_counts_as_load() {
        let b = balancer();
        let (mut one, mut two) = (ep(1), ep(2));
        one.2.delay = Duration::from_secs(1);
        two.2.delay = Duration::from_secs(1);
        b.update([one, two], &[]);
        // Whichever endpoint the first request went to, the next goes to the other: its
        // pending request makes the first endpoint the more loaded of the two.
        let mut first = balance(&b);
        futures_poll_ready(&mut first).await;
        let chosen = first.chosen.as_ref().map(|e| e.addr).unwrap();
        let pending = tokio::spawn(first.call(()));
        for _ in 0..20 {
            let mut next = balance(&b);
            futures_poll_ready(&mut next).await;
            assert_ne!(next.chosen.as_ref().map(|e| e.addr), Some(chosen));
        }
        pending.await.unwrap().unwrap();
    }

    async fn futures_poll_ready(svc: &mut Svc) {
        std::future::poll_fn(|cx| Service::<()>::poll_ready(svc, cx))
            .await
            .unwrap();
    }
}
