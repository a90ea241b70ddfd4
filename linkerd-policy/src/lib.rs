//! Policy from the control plane, validated once when it arrives, then evaluated purely and
//! without allocation per request.
//!
//! [`route`] is what inbound and outbound share: HTTP and gRPC route matches, ranked as the
//! Gateway API orders them (best host, then best rule: longer matched path, more header
//! matches, more query matches, a method), and the filters a rule applies. [`outbound`] is
//! the outbound policy (`OutboundPolicies`): per route, the filters, the backends a request is
//! split over by weight, the timeouts and the retry policy; per policy, failure accrual.
#![forbid(unsafe_code)]

pub mod outbound;
pub mod route;

pub use self::route::{InvalidPolicy, Meta};
