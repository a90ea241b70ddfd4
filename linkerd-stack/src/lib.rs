//! Glue the stacks' layers share.
//!
//! [`ThenCall`] is the future of a connection layer that first works something out
//! asynchronously (reads a ClientHello or a header, asks the control plane) and then calls its
//! inner service with what it found. Once the inner service is called, polling the future is
//! polling the inner service's future directly: a connection served for hours pays nothing per
//! wake-up for the layers that decided what it is.
//!
//! It holds no layer of its own: the layers live in the crates that own their concerns.
#![forbid(unsafe_code)]

pub mod log;

use std::{
    future::Future,
    pin::Pin,
    task::{ready, Context, Poll},
};
use tower::{util::Oneshot, Service, ServiceExt};

/// How a [`ThenCall`] prepares its inner service's request.
pub type Preparing<R, E> = Pin<Box<dyn Future<Output = Result<R, E>> + Send + 'static>>;

pin_project_lite::pin_project! {
    /// Prepares the inner service's request, then calls the inner service with it; a failure
    /// to prepare is the inner service's error type (`From<E>`).
    pub struct ThenCall<S: Service<R>, R, E> {
        #[pin]
        state: State<S, R, E>,
    }
}

pin_project_lite::pin_project! {
    #[project = Proj]
    enum State<S: Service<R>, R, E> {
        // The inner service waits for its request.
        Preparing { prepare: Preparing<R, E>, inner: Option<S> },
        Calling { #[pin] call: Oneshot<S, R> },
    }
}

impl<S: Service<R>, R, E> ThenCall<S, R, E> {
    /// Calls `inner` with what `prepare` gives.
    pub fn new(prepare: impl Future<Output = Result<R, E>> + Send + 'static, inner: S) -> Self {
        Self {
            state: State::Preparing {
                prepare: Box::pin(prepare),
                inner: Some(inner),
            },
        }
    }
}

impl<S, R, E> Future for ThenCall<S, R, E>
where
    S: Service<R>,
    S::Error: From<E>,
{
    type Output = Result<S::Response, S::Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut state = self.project().state;
        loop {
            let (req, inner) = match state.as_mut().project() {
                Proj::Calling { call } => return call.poll(cx),
                Proj::Preparing { prepare, inner } => {
                    let req = ready!(prepare.as_mut().poll(cx))?;
                    (req, inner.take())
                }
            };
            // The inner service is taken only here, on leaving `Preparing`; a future polled
            // again after completing (a caller's bug) waits forever rather than panic.
            let Some(inner) = inner else {
                return Poll::Pending;
            };
            state.set(State::Calling {
                call: inner.oneshot(req),
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test(start_paused = true)]
    async fn prepares_then_calls() {
        let inner = tower::service_fn(|n: u32| async move { Ok::<_, String>(n * 2) });
        let prepare = async {
            tokio::time::sleep(Duration::from_secs(1)).await;
            Ok::<_, &'static str>(21)
        };
        assert_eq!(ThenCall::new(prepare, inner).await, Ok(42));
    }

    #[tokio::test]
    async fn a_failure_to_prepare_is_the_inner_error_and_nothing_is_called() {
        let called = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let inner = {
            let called = called.clone();
            tower::service_fn(move |n: u32| {
                called.store(true, std::sync::atomic::Ordering::SeqCst);
                async move { Ok::<_, String>(n) }
            })
        };
        let prepare = async { Err::<u32, _>("no header") };
        let res: Result<u32, String> = ThenCall::new(prepare, inner).await;
        assert_eq!(res, Err("no header".to_string()));
        assert!(!called.load(std::sync::atomic::Ordering::SeqCst));
    }
}
