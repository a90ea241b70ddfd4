//! The client of `OutboundPolicies/Watch`: one shared, cached stream per target (a service
//! authority or an original destination), kept through control-plane loss, an invalid policy
//! refused with the previous one kept ([`crate::policy_watch`]).
//! Each outbound connection follows its original destination's ([`super::policy_route`]).

use crate::policy_watch::{Known, PolicyApi, WatchConfig, Watches};
use linkerd_policy::outbound::OutboundPolicy;
use linkerd_proxy_api::{
    client::ControlChannel,
    outbound::{
        self as api, outbound_policies_client::OutboundPoliciesClient, traffic_spec, TrafficSpec,
    },
};
use std::{net::SocketAddr, sync::Arc};

/// What a target's policy is asked by.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) enum PolicyTarget {
    /// `name:port`.
    // Only the original destination's policy routes today (not an ingress's authority).
    #[cfg_attr(not(test), allow(dead_code))]
    Authority(String),
    /// An original destination.
    Addr(SocketAddr),
}

/// What is known of a target's policy.
pub(crate) type TargetPolicy = Known<OutboundPolicy>;

/// Watches per target, shared by every connection.
pub(crate) type OutboundPolicies = Watches<OutboundApi>;

/// `Watch` for the workload.
#[derive(Clone)]
pub(crate) struct OutboundApi {
    client: OutboundPoliciesClient<ControlChannel>,
    workload: String,
}

impl PolicyApi for OutboundApi {
    type Key = PolicyTarget;
    type Message = api::OutboundPolicy;
    type Policy = OutboundPolicy;

    async fn open(
        &mut self,
        target: &PolicyTarget,
    ) -> Result<tonic::Streaming<api::OutboundPolicy>, tonic::Status> {
        let target = match target {
            PolicyTarget::Authority(a) => traffic_spec::Target::Authority(a.clone()),
            PolicyTarget::Addr(addr) => traffic_spec::Target::Addr((*addr).into()),
        };
        let spec = TrafficSpec {
            source_workload: self.workload.clone(),
            target: Some(target),
        };
        Ok(self.client.watch(spec).await?.into_inner())
    }

    fn decode(p: &api::OutboundPolicy) -> Result<OutboundPolicy, linkerd_policy::InvalidPolicy> {
        OutboundPolicy::from_api(p)
    }
}

/// Outbound policy watches over `channel`, for `workload`. Needs a Tokio runtime.
pub(crate) fn store(
    channel: ControlChannel,
    workload: String,
    config: WatchConfig,
) -> Arc<OutboundPolicies> {
    Watches::new(
        OutboundApi {
            client: OutboundPoliciesClient::new(channel),
            workload,
        },
        config,
        Vec::new(),
    )
}

#[cfg(test)]
mod tests;
