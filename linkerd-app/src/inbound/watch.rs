//! The client of `InboundServerPolicies/WatchPort`: one shared stream per port.
//!
//! `LINKERD2_PROXY_INBOUND_PORTS` (and the admin port) are watched from start-up, other ports
//! on their first connection; a port's watch is dropped after `_INBOUND_DISCOVERY_IDLE_TIMEOUT`
//! without connections (eager ports are kept). A new connection waits for the port's first
//! answer at most the initial timeout, then the default policy applies. The last good policy
//! survives control-plane loss (the stream is re-opened with back-off) and bad input: an
//! invalid `Server` is logged with the reason and the previous policy kept (with none, the
//! port refuses everything; it never fails open).

use super::server::ServerPolicy;
use crate::config::{PolicyControlConfig, StreamLimits};
use crate::policy_watch::{Known, PolicyApi, WatchConfig, Watches};
use linkerd_proxy_api::client::ControlChannel;
use linkerd_proxy_api::inbound::{
    inbound_server_policies_client::InboundServerPoliciesClient, PortSpec, Server,
};
use std::sync::Arc;

/// What is known of a port's policy: with none (`Known::Invalid`), the port refuses
/// everything; it never fails open.
pub(crate) type PortPolicy = Known<ServerPolicy>;

/// Watches per port, shared by every connection.
pub(crate) type PolicyStore = Watches<InboundApi>;

/// `WatchPort` for the workload.
#[derive(Clone)]
pub(crate) struct InboundApi {
    client: InboundServerPoliciesClient<ControlChannel>,
    workload: String,
}

impl PolicyApi for InboundApi {
    type Key = u16;
    type Message = Server;
    type Policy = ServerPolicy;

    async fn open(&mut self, port: &u16) -> Result<tonic::Streaming<Server>, tonic::Status> {
        let spec = PortSpec {
            workload: self.workload.clone(),
            port: u32::from(*port),
        };
        Ok(self.client.watch_port(spec).await?.into_inner())
    }

    fn decode(server: &Server) -> Result<ServerPolicy, linkerd_policy::InvalidPolicy> {
        ServerPolicy::from_api(server)
    }
}

/// Starts watching `LINKERD2_PROXY_INBOUND_PORTS` and the admin port. Needs a Tokio runtime.
pub(crate) fn store(
    channel: ControlChannel,
    config: PolicyControlConfig,
    limits: StreamLimits,
    admin_port: u16,
) -> Arc<PolicyStore> {
    let mut eager = config.ports.clone();
    eager.push(admin_port);
    Watches::new(
        InboundApi {
            client: InboundServerPoliciesClient::new(channel),
            workload: config.workload.clone(),
        },
        WatchConfig {
            idle_timeout: config.idle_timeout,
            initial_timeout: config.initial_timeout,
            limits,
        },
        eager,
    )
}
