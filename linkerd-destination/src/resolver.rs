//! Shared `Get` streams, reconnected with back-off.

use crate::{Profile, Resolution};
use linkerd_metrics::Registry;
use linkerd_proxy_api::{
    client::{ControlChannel, ControlMetrics},
    destination::{destination_client::DestinationClient, GetDestination},
};
use parking_lot::Mutex;
use rand::RngExt;
use std::{collections::HashMap, future::Future, pin::Pin, sync::Arc, time::Duration};
use tokio::sync::watch;
use tonic::transport::Endpoint as GrpcEndpoint;

/// How to reach the Destination service.
#[derive(Clone, Debug)]
pub struct DestinationConfig {
    /// `host:port` of the Destination service.
    pub addr: String,
    /// Sent as `context_token` with every lookup.
    pub context: String,
    /// A name's stream is closed this long after its last watcher goes away.
    pub idle_timeout: Duration,
    /// Reconnect back-off: starts here, doubles, with jitter, up to `max_backoff`.
    pub min_backoff: Duration,
    /// The longest back-off.
    pub max_backoff: Duration,
    /// Timeout for connecting to the Destination service.
    pub connect_timeout: Duration,
    /// `LINKERD2_PROXY_CONTROL_STREAM_*`: a stream whose first message takes longer than
    /// `initial`, or silent for longer than `idle`, or older than `lifetime`, is re-opened
    /// (the last state stays served meanwhile).
    pub stream_limits: StreamLimits,
}

/// Bounds on one Destination stream; `None`: unbounded.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StreamLimits {
    /// The first message must arrive within this.
    pub initial: Option<Duration>,
    /// No gap between messages may be longer.
    pub idle: Option<Duration>,
    /// The stream is re-opened after this long.
    pub lifetime: Option<Duration>,
}

impl StreamLimits {
    /// How long the next message may take: the initial or idle bound, and what is left of the
    /// lifetime (`true`: the lifetime is what bounds it).
    fn next_wait(&self, first: bool, age: Duration) -> Option<(Duration, bool)> {
        let gap = if first { self.initial } else { self.idle };
        let left = self.lifetime.map(|l| l.saturating_sub(age));
        match (gap, left) {
            (Some(g), Some(l)) if l <= g => Some((l, true)),
            (Some(g), _) => Some((g, false)),
            (None, Some(l)) => Some((l, true)),
            (None, None) => None,
        }
    }
}

/// The resolver could not be built.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The Destination service's address is not a valid URI authority.
    #[error("invalid destination service address {addr:?}: {reason}")]
    InvalidAddr {
        /// The address.
        addr: String,
        /// Why.
        reason: String,
    },
}

/// Resolves names through the Destination service, one shared stream per name.
#[derive(Clone)]
pub struct Resolver {
    inner: Arc<Inner>,
}

struct Inner {
    config: DestinationConfig,
    channel: ControlChannel,
    streams: Streams<Resolution>,
    profiles: Streams<Profile>,
}

impl Resolver {
    /// A resolver for the service at `config.addr` (connected lazily, on the first lookup).
    /// Must be called inside a Tokio runtime.
    pub fn new(config: DestinationConfig, registry: &mut Registry) -> Result<Self, Error> {
        let channel = GrpcEndpoint::from_shared(format!("http://{}", config.addr))
            .map_err(|e| Error::InvalidAddr {
                addr: config.addr.clone(),
                reason: e.to_string(),
            })?
            .connect_timeout(config.connect_timeout)
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(10))
            .keep_alive_timeout(Duration::from_secs(3))
            .connect_lazy();
        let channel = ControlMetrics::register(registry).channel(channel, &config.addr, None);
        Ok(Self::with_channel(config, channel))
    }

    /// A resolver over `channel` (e.g. one that speaks TLS to the control plane); `config.addr`
    /// only labels metrics and logs.
    pub fn with_channel(config: DestinationConfig, channel: ControlChannel) -> Self {
        Self {
            inner: Arc::new(Inner {
                config,
                channel,
                streams: Mutex::new(HashMap::new()),
                profiles: Mutex::new(HashMap::new()),
            }),
        }
    }

    /// Watches `name` (`host:port`), sharing the stream with every other watcher of it.
    pub fn resolve(&self, name: &str) -> watch::Receiver<Arc<Resolution>> {
        watch_lookup::<Endpoints>(&self.inner, name)
    }

    /// Watches the profile of `target` (`name:port` or `ip:port`), shared like [`resolve`].
    ///
    /// [`resolve`]: Resolver::resolve
    pub fn profile(&self, target: &str) -> watch::Receiver<Arc<Profile>> {
        watch_lookup::<Profiles>(&self.inner, target)
    }

    /// How many names have an endpoint stream open.
    pub fn streams(&self) -> usize {
        self.inner.streams.lock().len()
    }
}

/// A kind of Destination lookup: how to open its stream and fold its messages into a state.
trait Lookup: Sized + 'static {
    type State: Clone + Default + Send + Sync + 'static;
    type Msg: Send + 'static;
    const WHAT: &'static str;
    fn streams(inner: &Inner) -> &Streams<Self::State>;
    fn open(client: DestinationClient<ControlChannel>, req: GetDestination) -> Opening<Self::Msg>;
    fn apply(state: &mut Self::State, msg: Self::Msg);
}

type Streams<S> = Mutex<HashMap<String, watch::Sender<Arc<S>>>>;

/// A stream being opened (once per stream, so boxing is not on any hot path).
type Opening<M> = Pin<Box<dyn Future<Output = Result<tonic::Streaming<M>, tonic::Status>> + Send>>;

/// `Get`: endpoint sets.
struct Endpoints;
/// `GetProfile`: profiles.
struct Profiles;

impl Lookup for Endpoints {
    type State = Resolution;
    type Msg = linkerd_proxy_api::destination::Update;
    const WHAT: &'static str = "endpoints";
    fn streams(inner: &Inner) -> &Streams<Resolution> {
        &inner.streams
    }
    fn open(
        mut client: DestinationClient<ControlChannel>,
        req: GetDestination,
    ) -> Pin<Box<dyn Future<Output = Result<tonic::Streaming<Self::Msg>, tonic::Status>> + Send>>
    {
        Box::pin(async move { Ok(client.get(req).await?.into_inner()) })
    }
    fn apply(state: &mut Resolution, msg: Self::Msg) {
        state.apply(msg)
    }
}

impl Lookup for Profiles {
    type State = Profile;
    type Msg = linkerd_proxy_api::destination::DestinationProfile;
    const WHAT: &'static str = "profile";
    fn streams(inner: &Inner) -> &Streams<Profile> {
        &inner.profiles
    }
    fn open(
        mut client: DestinationClient<ControlChannel>,
        req: GetDestination,
    ) -> Pin<Box<dyn Future<Output = Result<tonic::Streaming<Self::Msg>, tonic::Status>> + Send>>
    {
        Box::pin(async move { Ok(client.get_profile(req).await?.into_inner()) })
    }
    fn apply(state: &mut Profile, msg: Self::Msg) {
        *state = Profile::from_api(msg);
    }
}

fn watch_lookup<L: Lookup>(inner: &Arc<Inner>, name: &str) -> watch::Receiver<Arc<L::State>> {
    let mut streams = L::streams(inner).lock();
    if let Some(tx) = streams.get(name) {
        return tx.subscribe();
    }
    let (tx, rx) = watch::channel(Arc::new(L::State::default()));
    streams.insert(name.to_string(), tx.clone());
    tokio::spawn(follow::<L>(inner.clone(), name.to_string(), tx));
    rx
}

/// Keeps `name`'s state current until nobody watches it for the idle timeout.
async fn follow<L: Lookup>(inner: Arc<Inner>, name: String, tx: watch::Sender<Arc<L::State>>) {
    let cfg = &inner.config;
    let what = L::WHAT;
    let mut backoff = cfg.min_backoff;
    loop {
        // Each stream starts from nothing and describes the whole state: its first message
        // replaces what the last stream said (which stays served until then).
        let mut current = L::State::default();
        let session = async {
            let req = GetDestination {
                scheme: "k8s".into(),
                path: name.clone(),
                context_token: cfg.context.clone(),
            };
            let mut stream = L::open(DestinationClient::new(inner.channel.clone()), req).await?;
            tracing::debug!(%name, what, "destination stream open");
            let opened = tokio::time::Instant::now();
            let mut first = true;
            loop {
                let next = match cfg.stream_limits.next_wait(first, opened.elapsed()) {
                    None => stream.message().await?,
                    Some((wait, lifetime)) => {
                        match tokio::time::timeout(wait, stream.message()).await {
                            Ok(m) => m?,
                            // Old enough: re-open (not a failure).
                            Err(_) if lifetime => return Ok(()),
                            Err(_) => {
                                return Err(tonic::Status::deadline_exceeded(format!(
                                    "no message within {wait:?}"
                                )))
                            }
                        }
                    }
                };
                let Some(msg) = next else { break };
                first = false;
                L::apply(&mut current, msg);
                tx.send_replace(Arc::new(current.clone()));
                backoff = cfg.min_backoff;
            }
            Ok::<_, tonic::Status>(())
        };
        tokio::select! {
            res = session => match res {
                Ok(()) => tracing::debug!(%name, what, "destination stream ended; reopening"),
                Err(status) => {
                    linkerd_stack::rate_limited!(INFO, %name, what, code = ?status.code(), message = %status.message(), "destination lookup failed; keeping the last known state");
                }
            },
            () = idle::<L>(&inner, &name, &tx) => {
                tracing::debug!(%name, what, "no longer watched; closing its destination stream");
                return;
            }
        }
        // Back off with jitter (up to half the back-off again) before reopening.
        let jitter = rand::rng().random_range(0..=backoff.as_millis() as u64 / 2);
        let wait = backoff + Duration::from_millis(jitter);
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            () = idle::<L>(&inner, &name, &tx) => return,
        }
        backoff = (backoff * 2).min(cfg.max_backoff);
    }
}

/// Completes (and forgets the name) once nobody has watched it for the idle timeout.
async fn idle<L: Lookup>(inner: &Inner, name: &str, tx: &watch::Sender<Arc<L::State>>) {
    loop {
        tx.closed().await;
        tokio::time::sleep(inner.config.idle_timeout).await;
        let mut streams = L::streams(inner).lock();
        // Watchers subscribe under this lock, so the count can't change under us.
        if tx.receiver_count() == 0 {
            streams.remove(name);
            return;
        }
    }
}
