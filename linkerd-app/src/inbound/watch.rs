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
use linkerd_proxy_api::client::ControlChannel;
use linkerd_proxy_api::inbound::{
    inbound_server_policies_client::InboundServerPoliciesClient, PortSpec,
};
use parking_lot::Mutex;
use std::{collections::HashMap, sync::Arc, time::Duration};
use tokio::{
    sync::{oneshot, watch},
    time::Instant,
};

/// What is known of a port's policy.
#[derive(Clone, Debug)]
pub(crate) enum PortPolicy {
    /// No answer yet.
    Pending,
    /// The control plane has no policy for the port (NotFound / Unimplemented): the default.
    Default,
    /// The control plane's `Server`.
    Server(Arc<ServerPolicy>),
    /// Only invalid answers so far: every client is refused, with this reason.
    Invalid(Arc<str>),
}

/// Watches per port, shared by every connection.
pub(crate) struct PolicyStore {
    client: InboundServerPoliciesClient<ControlChannel>,
    config: PolicyControlConfig,
    limits: StreamLimits,
    ports: Mutex<HashMap<u16, Arc<PortWatch>>>,
    eager: Vec<u16>,
}

struct PortWatch {
    rx: watch::Receiver<PortPolicy>,
    last_used: Mutex<Instant>,
    /// Dropped with the watch, which stops its task.
    _stop: oneshot::Sender<()>,
}

impl PolicyStore {
    /// Starts watching the eager ports. Needs a Tokio runtime.
    pub(crate) fn new(
        channel: ControlChannel,
        config: PolicyControlConfig,
        limits: StreamLimits,
        admin_port: u16,
    ) -> Arc<Self> {
        let mut eager = config.ports.clone();
        eager.push(admin_port);
        let store = Arc::new(Self {
            client: InboundServerPoliciesClient::new(channel),
            config,
            limits,
            ports: Mutex::new(HashMap::new()),
            eager,
        });
        for port in store.eager.clone() {
            store.watch(port);
        }
        tokio::spawn(sweep(Arc::downgrade(&store)));
        store
    }

    /// The port's policy updates, starting its watch if needed.
    pub(crate) fn watch(&self, port: u16) -> watch::Receiver<PortPolicy> {
        let mut ports = self.ports.lock();
        if let Some(w) = ports.get(&port) {
            *w.last_used.lock() = Instant::now();
            return w.rx.clone();
        }
        let (tx, rx) = watch::channel(PortPolicy::Pending);
        let (stop, stopped) = oneshot::channel();
        let spec = PortSpec {
            workload: self.config.workload.clone(),
            port: u32::from(port),
        };
        tokio::spawn(follow(
            self.client.clone(),
            spec,
            tx,
            self.limits,
            self.config.initial_timeout,
            stopped,
        ));
        ports.insert(
            port,
            Arc::new(PortWatch {
                rx: rx.clone(),
                last_used: Mutex::new(Instant::now()),
                _stop: stop,
            }),
        );
        rx
    }

    /// The port's policy, waiting for the first answer at most the initial timeout.
    pub(crate) async fn get(&self, port: u16) -> (PortPolicy, watch::Receiver<PortPolicy>) {
        let mut rx = self.watch(port);
        let answered = rx.wait_for(|p| !matches!(p, PortPolicy::Pending));
        let _ = tokio::time::timeout(self.config.initial_timeout, answered).await;
        let current = rx.borrow().clone();
        (current, rx)
    }
}

/// Drops idle watches (not the eager ones).
async fn sweep(store: std::sync::Weak<PolicyStore>) {
    loop {
        let idle = match store.upgrade() {
            Some(s) => s.config.idle_timeout,
            None => return,
        };
        tokio::time::sleep(idle.max(Duration::from_secs(1)) / 2).await;
        let Some(store) = store.upgrade() else {
            return;
        };
        store
            .ports
            .lock()
            .retain(|port, w| store.eager.contains(port) || w.last_used.lock().elapsed() < idle);
    }
}

/// Follows one port's stream until `stop`: re-opened with back-off when it ends or fails.
/// Without an answer within `initial_timeout`, the port's policy becomes the default (so later
/// connections do not wait again) until one arrives.
async fn follow(
    mut client: InboundServerPoliciesClient<ControlChannel>,
    spec: PortSpec,
    tx: watch::Sender<PortPolicy>,
    limits: StreamLimits,
    initial_timeout: Duration,
    mut stop: oneshot::Receiver<()>,
) {
    let port = spec.port;
    let mut backoff = Duration::from_millis(100);
    let deadline = tokio::time::sleep(initial_timeout);
    tokio::pin!(deadline);
    let mut armed = true;
    loop {
        let run = stream_once(&mut client, spec.clone(), &tx, limits);
        tokio::pin!(run);
        let outcome = loop {
            tokio::select! {
                o = &mut run => break o,
                _ = &mut stop => return,
                () = &mut deadline, if armed => {
                    armed = false;
                    if matches!(*tx.borrow(), PortPolicy::Pending) {
                        tracing::info!(port, timeout = ?initial_timeout, "no policy from the control plane yet; the default policy applies until one arrives");
                        tx.send_replace(PortPolicy::Default);
                    }
                }
            }
        };
        match outcome {
            Ended::Healthy => backoff = Duration::from_millis(100),
            Ended::NoPolicy => {
                if matches!(*tx.borrow(), PortPolicy::Pending) {
                    tx.send_replace(PortPolicy::Default);
                }
            }
            Ended::Final(status) => {
                tracing::warn!(port, code = ?status.code(), message = status.message(), "the policy controller refuses this port's watch; the last policy stays");
                if matches!(*tx.borrow(), PortPolicy::Pending) {
                    tx.send_replace(PortPolicy::Default);
                }
                let _ = stop.await;
                return;
            }
            Ended::Failed(error) => {
                tracing::info!(port, %error, retry_in = ?backoff, "policy watch failed; keeping the last policy");
            }
        }
        tokio::select! {
            () = tokio::time::sleep(backoff) => {}
            _ = &mut stop => return,
        }
        backoff = (backoff * 2).min(Duration::from_secs(10));
    }
}

enum Ended {
    /// The stream reached its lifetime (or ended cleanly after answers): re-open at once.
    Healthy,
    /// NotFound / Unimplemented: no policy for this port.
    NoPolicy,
    /// InvalidArgument / FailedPrecondition: not retried.
    Final(tonic::Status),
    Failed(String),
}

async fn stream_once(
    client: &mut InboundServerPoliciesClient<ControlChannel>,
    spec: PortSpec,
    tx: &watch::Sender<PortPolicy>,
    limits: StreamLimits,
) -> Ended {
    let port = spec.port;
    let classify = |status: tonic::Status| match status.code() {
        tonic::Code::NotFound | tonic::Code::Unimplemented => Ended::NoPolicy,
        tonic::Code::InvalidArgument | tonic::Code::FailedPrecondition => Ended::Final(status),
        _ => Ended::Failed(status.to_string()),
    };
    let opened = Instant::now();
    let mut stream = match client.watch_port(spec).await {
        Ok(rsp) => rsp.into_inner(),
        Err(status) => return classify(status),
    };
    let mut first = true;
    loop {
        let wait = match (first, limits.initial_timeout, limits.idle_timeout) {
            (true, Some(t), _) | (false, _, Some(t)) => Some(t),
            _ => None,
        };
        let lifetime_left = limits.lifetime.map(|l| l.saturating_sub(opened.elapsed()));
        let wait = match (wait, lifetime_left) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        let next = match wait {
            Some(w) => match tokio::time::timeout(w, stream.message()).await {
                Ok(m) => m,
                Err(_) if lifetime_left.is_some_and(|l| l <= w) => return Ended::Healthy,
                Err(_) => return Ended::Failed(format!("no message within {w:?}")),
            },
            None => stream.message().await,
        };
        match next {
            Ok(Some(server)) => {
                first = false;
                match ServerPolicy::from_api(&server) {
                    Ok(p) => {
                        tracing::debug!(port, server = %p.meta.name, "policy updated");
                        tx.send_replace(PortPolicy::Server(Arc::new(p)));
                    }
                    Err(error) => {
                        let kept =
                            !matches!(*tx.borrow(), PortPolicy::Pending | PortPolicy::Invalid(_));
                        tracing::warn!(port, %error, kept_previous = kept, "ignoring an invalid policy from the control plane");
                        if !kept {
                            tx.send_replace(PortPolicy::Invalid(error.to_string().into()));
                        }
                    }
                }
            }
            Ok(None) => return Ended::Healthy,
            Err(status) => return classify(status),
        }
    }
}
