//! The current mesh config, and reloading it from its file.

use crate::MeshConfig;
use std::{path::PathBuf, sync::Arc, time::Duration};
use tokio::sync::watch;
use tokio_stream::wrappers::ReceiverStream;

/// The config being served; subscribers learn of every change.
#[derive(Clone)]
pub struct Mesh {
    tx: Arc<watch::Sender<Arc<MeshConfig>>>,
}

impl Mesh {
    /// Serves `config` until replaced.
    pub fn new(config: MeshConfig) -> Self {
        Self {
            tx: Arc::new(watch::channel(Arc::new(config)).0),
        }
    }

    /// Replaces the config; every stream sends what changed.
    pub fn set(&self, config: MeshConfig) {
        self.tx.send_replace(Arc::new(config));
    }

    /// The config being served now.
    pub fn current(&self) -> Arc<MeshConfig> {
        self.tx.borrow().clone()
    }

    /// A receiver of the current config and its changes.
    pub fn subscribe(&self) -> watch::Receiver<Arc<MeshConfig>> {
        self.tx.subscribe()
    }

    /// A stream of what `render` makes of the config: now, and each time that changes. When
    /// it makes nothing (what it renders was removed), the stream sends `gone` and ends (the
    /// client asks again). `None` when it makes nothing now.
    pub(crate) fn follow<T>(
        &self,
        render: impl Fn(&MeshConfig) -> Option<T> + Send + 'static,
        gone: impl Fn() -> tonic::Status + Send + 'static,
    ) -> Option<ReceiverStream<Result<T, tonic::Status>>>
    where
        T: Clone + PartialEq + Send + 'static,
    {
        let mut rx = self.subscribe();
        render(&rx.borrow())?;
        let (tx, out) = tokio::sync::mpsc::channel(4);
        tokio::spawn(async move {
            let mut last = None;
            loop {
                let Some(current) = render(&rx.borrow_and_update()) else {
                    let _ = tx.send(Err(gone())).await;
                    return;
                };
                if last.as_ref() != Some(&current) {
                    if tx.send(Ok(current.clone())).await.is_err() {
                        return;
                    }
                    last = Some(current);
                }
                tokio::select! {
                    res = rx.changed() => if res.is_err() { return },
                    () = tx.closed() => return,
                }
            }
        });
        Some(ReceiverStream::new(out))
    }
}

/// Re-reads `path` every `interval`; a changed, valid file replaces the config. A bad file is
/// logged with its line and reason, and the last good config stays served.
pub async fn watch_file(path: PathBuf, mesh: Mesh, interval: Duration) {
    let mut last: Option<String> = None;
    loop {
        match tokio::fs::read_to_string(&path).await {
            Ok(text) if last.as_deref() != Some(text.as_str()) => {
                match MeshConfig::parse(&text) {
                    Ok(config) => {
                        tracing::info!(
                            path = %path.display(),
                            services = config.services.len(),
                            identities = config.identities.len(),
                            "config loaded"
                        );
                        mesh.set(config);
                    }
                    Err(error) => {
                        tracing::error!(path = %path.display(), %error, "config rejected; still serving the last good one");
                    }
                }
                last = Some(text);
            }
            Ok(_) => {}
            Err(error) => tracing::warn!(path = %path.display(), %error, "failed to read config"),
        }
        tokio::time::sleep(interval).await;
    }
}
