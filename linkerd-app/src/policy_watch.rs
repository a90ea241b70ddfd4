//! Shared, cached policy watches: one control-plane stream per key (an inbound port, an
//! outbound target), followed by one task and read by every connection through a
//! `watch::Receiver`.
//!
//! A new watch's first reader waits for the first answer at most the initial timeout, then
//! the default applies until one arrives. The last good policy survives control-plane loss
//! (the stream is re-opened with back-off, honouring `LINKERD2_PROXY_CONTROL_STREAM_*`) and
//! bad input: an invalid policy is logged with the reason and the previous one kept (with
//! none, [`Known::Invalid`]). Watches unused for the idle timeout are dropped (eager keys are
//! kept).

use crate::config::StreamLimits;
use linkerd_policy::InvalidPolicy;
use parking_lot::Mutex;
use std::{
    collections::HashMap,
    fmt::Debug,
    future::Future,
    hash::Hash,
    sync::{Arc, Weak},
    time::Duration,
};
use tokio::{
    sync::{oneshot, watch},
    time::Instant,
};

/// What is known of a key's policy.
#[derive(Debug)]
pub(crate) enum Known<P> {
    /// No answer yet.
    Pending,
    /// The control plane has no policy for the key (NotFound / Unimplemented), or has not
    /// answered within the initial timeout: the default applies.
    Default,
    /// The control plane's policy.
    Policy(Arc<P>),
    /// Only invalid answers so far, with this reason.
    Invalid(Arc<str>),
}

impl<P> Clone for Known<P> {
    fn clone(&self) -> Self {
        match self {
            Known::Pending => Known::Pending,
            Known::Default => Known::Default,
            Known::Policy(p) => Known::Policy(p.clone()),
            Known::Invalid(why) => Known::Invalid(why.clone()),
        }
    }
}

/// One policy API: how a key's stream is opened and its messages validated.
pub(crate) trait PolicyApi: Clone + Send + Sync + 'static {
    type Key: Clone + Eq + Hash + Debug + Send + Sync + 'static;
    type Message: Send + 'static;
    type Policy: Send + Sync + 'static;

    /// Opens the key's stream.
    fn open(
        &mut self,
        key: &Self::Key,
    ) -> impl Future<Output = Result<tonic::Streaming<Self::Message>, tonic::Status>> + Send;

    /// Validates one message.
    fn decode(message: &Self::Message) -> Result<Self::Policy, InvalidPolicy>;
}

/// How watches are kept.
#[derive(Clone, Copy, Debug)]
pub(crate) struct WatchConfig {
    /// A watch unused this long is dropped.
    pub idle_timeout: Duration,
    /// How long the first reader waits for a first answer.
    pub initial_timeout: Duration,
    pub limits: StreamLimits,
}

/// The watches of one API, shared by every connection.
pub(crate) struct Watches<A: PolicyApi> {
    api: A,
    config: WatchConfig,
    entries: Mutex<EntryMap<A>>,
    eager: Vec<A::Key>,
}

type EntryMap<A> = HashMap<<A as PolicyApi>::Key, Arc<Entry<<A as PolicyApi>::Policy>>>;

struct Entry<P> {
    /// Its receivers are the connections following the key: an entry is kept while any is.
    tx: watch::Sender<Known<P>>,
    last_used: Mutex<Instant>,
    /// Dropped with the entry, which stops its task.
    _stop: oneshot::Sender<()>,
}

impl<A: PolicyApi> Watches<A> {
    /// Starts watching the `eager` keys (kept however idle). Needs a Tokio runtime.
    pub(crate) fn new(api: A, config: WatchConfig, eager: Vec<A::Key>) -> Arc<Self> {
        let this = Arc::new(Self {
            api,
            config,
            entries: Mutex::new(HashMap::new()),
            eager,
        });
        for key in this.eager.clone() {
            this.watch(key);
        }
        tokio::spawn(sweep(Arc::downgrade(&this)));
        this
    }

    /// The key's policy updates, starting its watch if needed.
    pub(crate) fn watch(&self, key: A::Key) -> watch::Receiver<Known<A::Policy>> {
        let mut entries = self.entries.lock();
        if let Some(e) = entries.get(&key) {
            *e.last_used.lock() = Instant::now();
            return e.tx.subscribe();
        }
        let (tx, rx) = watch::channel(Known::Pending);
        let (stop, stopped) = oneshot::channel();
        tokio::spawn(follow(
            self.api.clone(),
            key.clone(),
            tx.clone(),
            self.config,
            stopped,
        ));
        entries.insert(
            key,
            Arc::new(Entry {
                tx,
                last_used: Mutex::new(Instant::now()),
                _stop: stop,
            }),
        );
        rx
    }

    /// The key's policy, waiting for the first answer at most the initial timeout.
    pub(crate) async fn get(
        &self,
        key: A::Key,
    ) -> (Known<A::Policy>, watch::Receiver<Known<A::Policy>>) {
        let mut rx = self.watch(key);
        let answered = rx.wait_for(|p| !matches!(p, Known::Pending));
        let _ = tokio::time::timeout(self.config.initial_timeout, answered).await;
        let current = rx.borrow().clone();
        (current, rx)
    }
}

/// Drops idle watches, every half idle timeout.
async fn sweep<A: PolicyApi>(watches: Weak<Watches<A>>) {
    loop {
        let idle = match watches.upgrade() {
            Some(w) => w.config.idle_timeout,
            None => return,
        };
        tokio::time::sleep(idle.max(Duration::from_secs(1)) / 2).await;
        let Some(w) = watches.upgrade() else {
            return;
        };
        w.sweep_idle();
    }
}

impl<A: PolicyApi> Watches<A> {
    /// Drops the watches unused for the idle timeout: not the eager ones, nor those a
    /// connection still follows (its updates keep coming however long it lives).
    fn sweep_idle(&self) {
        let idle = self.config.idle_timeout;
        self.entries.lock().retain(|key, e| {
            self.eager.contains(key)
                || e.tx.receiver_count() > 0
                || e.last_used.lock().elapsed() < idle
        });
    }

    /// Whether `key` is watched.
    #[cfg(test)]
    pub(crate) fn watching(&self, key: &A::Key) -> bool {
        self.entries.lock().contains_key(key)
    }

    /// Runs the idle sweep now.
    #[cfg(test)]
    pub(crate) fn sweep_now(&self) {
        self.sweep_idle();
    }
}

/// Follows one key's stream until `stop`: re-opened with back-off when it ends or fails.
/// Without an answer within the initial timeout, the key's policy becomes the default (so
/// later readers do not wait again) until one arrives.
async fn follow<A: PolicyApi>(
    mut api: A,
    key: A::Key,
    tx: watch::Sender<Known<A::Policy>>,
    config: WatchConfig,
    mut stop: oneshot::Receiver<()>,
) {
    let mut backoff = Duration::from_millis(100);
    let deadline = tokio::time::sleep(config.initial_timeout);
    tokio::pin!(deadline);
    let mut armed = true;
    let default_if_pending = |tx: &watch::Sender<Known<A::Policy>>| {
        if matches!(*tx.borrow(), Known::Pending) {
            tx.send_replace(Known::Default);
        }
    };
    loop {
        let run = stream_once(&mut api, &key, &tx, config.limits);
        tokio::pin!(run);
        let outcome = loop {
            tokio::select! {
                o = &mut run => break o,
                _ = &mut stop => return,
                () = &mut deadline, if armed => {
                    armed = false;
                    if matches!(*tx.borrow(), Known::Pending) {
                        tracing::info!(?key, timeout = ?config.initial_timeout, "no policy from the control plane yet; the default applies until one arrives");
                        tx.send_replace(Known::Default);
                    }
                }
            }
        };
        match outcome {
            Ended::Healthy => backoff = Duration::from_millis(100),
            Ended::NoPolicy => default_if_pending(&tx),
            Ended::Final(status) => {
                tracing::warn!(?key, code = ?status.code(), message = status.message(), "the policy controller refuses this watch; the last policy stays");
                default_if_pending(&tx);
                let _ = stop.await;
                return;
            }
            Ended::Failed(error) => {
                tracing::info!(?key, %error, retry_in = ?backoff, "policy watch failed; keeping the last policy");
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
    /// NotFound / Unimplemented: no policy for this key.
    NoPolicy,
    /// InvalidArgument / FailedPrecondition: not retried.
    Final(tonic::Status),
    Failed(String),
}

async fn stream_once<A: PolicyApi>(
    api: &mut A,
    key: &A::Key,
    tx: &watch::Sender<Known<A::Policy>>,
    limits: StreamLimits,
) -> Ended {
    let classify = |status: tonic::Status| match status.code() {
        tonic::Code::NotFound | tonic::Code::Unimplemented => Ended::NoPolicy,
        tonic::Code::InvalidArgument | tonic::Code::FailedPrecondition => Ended::Final(status),
        _ => Ended::Failed(status.to_string()),
    };
    let opened = Instant::now();
    let mut stream = match api.open(key).await {
        Ok(s) => s,
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
            Ok(Some(message)) => {
                first = false;
                match A::decode(&message) {
                    Ok(p) => {
                        tracing::debug!(?key, "policy updated");
                        tx.send_replace(Known::Policy(Arc::new(p)));
                    }
                    Err(error) => {
                        let kept = !matches!(*tx.borrow(), Known::Pending | Known::Invalid(_));
                        tracing::warn!(?key, %error, kept_previous = kept, "ignoring an invalid policy from the control plane");
                        if !kept {
                            tx.send_replace(Known::Invalid(error.to_string().into()));
                        }
                    }
                }
            }
            Ok(None) => return Ended::Healthy,
            Err(status) => return classify(status),
        }
    }
}
