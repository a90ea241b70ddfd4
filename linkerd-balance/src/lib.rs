//! Load balancing: power of two choices over a peak-EWMA latency estimate.
//!
//! [`choose`] is the pure decision (two weighted random picks, the lower load wins); [`PeakEwma`]
//! the latency estimate of one endpoint; [`Balancer`] holds a set of endpoints, applies
//! discovery updates incrementally (an update to one endpoint leaves the others, and their
//! estimates, untouched), keeps endpoints that failed to connect out of the ready set for a
//! back-off, and makes requests wait, boundedly, while nothing is ready.
//!
//! [`Balance`] is the same as a `tower::Service` over the endpoints' own services: it is ready
//! when an endpoint is, sends each request to the endpoint chosen, and reports the response's
//! latency or a connect failure back to the balancer.
//!
//! It does not connect or send itself: the endpoints' services do.
#![forbid(unsafe_code)]

mod balancer;
mod choose;
mod ewma;
mod service;

pub use self::balancer::{
    Accrual, Balancer, BalancerConfig, BalancerStats, Endpoint, Error, InFlight,
};
pub use self::choose::choose;
pub use self::ewma::PeakEwma;
pub use self::service::{Balance, Classify, NoFailures, ResponseFuture};
