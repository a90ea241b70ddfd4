//! Running an HTTP/2 connection's helper futures inside the connection's own task.
//!
//! hyper spawns a task per HTTP/2 stream on the server side, and on the client side one for
//! the connection driver plus one per request (and one per streaming request body). Each is a
//! task allocation, and every hand-off between them is a wake-up; with more than one worker
//! thread, those wake-ups cross threads, which costs more than the work they hand off. Here
//! they are polled by the task that serves (or drives) the connection instead: one task per
//! connection. Throughput across cores comes from several connections per endpoint, which the
//! client pool opens when load warrants.

use crate::stall::ConnStalls;
use futures_util::{stream::FuturesUnordered, FutureExt, StreamExt};
use std::{
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
};
use tokio::sync::mpsc;

type Task = Pin<Box<dyn Future<Output = ()> + Send>>;

/// hyper's executor for one connection: hands futures to that connection's [`WithConnTasks`].
#[derive(Clone)]
pub(crate) struct ConnExecutor {
    // Unbounded, but never longer than the futures hyper starts in one poll of the connection,
    // which the connection's concurrent-stream limit bounds.
    tx: mpsc::UnboundedSender<Task>,
    // A server connection's send-stall bounds: each stream's future is watched.
    stalls: Option<Arc<ConnStalls>>,
}

/// A connection future that also polls the futures hyper handed to its [`ConnExecutor`].
pub(crate) struct WithConnTasks<F> {
    conn: Pin<Box<F>>,
    rx: mpsc::UnboundedReceiver<Task>,
    running: FuturesUnordered<Task>,
}

/// An executor for one connection, and the receiving end to wrap that connection's future in.
pub(crate) fn conn_executor() -> (ConnExecutor, ConnTasks) {
    let (tx, rx) = mpsc::unbounded_channel();
    (ConnExecutor { tx, stalls: None }, ConnTasks { rx })
}

impl ConnExecutor {
    /// Watches each stream's future for send stalls (a server connection's executor).
    pub(crate) fn with_stalls(mut self, stalls: Arc<ConnStalls>) -> Self {
        self.stalls = Some(stalls);
        self
    }
}

/// The futures a [`ConnExecutor`] received, until they are attached to their connection.
pub(crate) struct ConnTasks {
    rx: mpsc::UnboundedReceiver<Task>,
}

impl ConnTasks {
    /// Drives `conn` and the connection's helper futures in one task.
    pub fn drive<F: Future>(self, conn: F) -> WithConnTasks<F> {
        WithConnTasks {
            conn: Box::pin(conn),
            rx: self.rx,
            running: FuturesUnordered::new(),
        }
    }
}

impl<F> hyper::rt::Executor<F> for ConnExecutor
where
    F: Future<Output = ()> + Send + 'static,
{
    fn execute(&self, fut: F) {
        // A panicking future (a stream, the client's connection driver) ends alone, as a
        // spawned task would, not with the connection's other work.
        let fut = std::panic::AssertUnwindSafe(fut).catch_unwind().map(|r| {
            if r.is_err() {
                tracing::error!("an HTTP/2 connection's helper task panicked");
            }
        });
        let task: Task = match &self.stalls {
            Some(stalls) => match stalls.watch(fut) {
                Ok(watched) => Box::pin(watched),
                Err(fut) => Box::pin(fut),
            },
            None => Box::pin(fut),
        };
        // After the connection's future completed, its stragglers run as tasks of their own.
        if let Err(mpsc::error::SendError(task)) = self.tx.send(task) {
            tokio::spawn(task);
        }
    }
}

impl<F: Future> WithConnTasks<F> {
    /// The connection future itself (to start a graceful shutdown, say).
    pub fn conn(&mut self) -> Pin<&mut F> {
        self.conn.as_mut()
    }

    fn poll_tasks(&mut self, cx: &mut Context<'_>) {
        while let Poll::Ready(Some(task)) = self.rx.poll_recv(cx) {
            self.running.push(task);
        }
        while let Poll::Ready(Some(())) = self.running.poll_next_unpin(cx) {}
    }
}

impl<F: Future> Future for WithConnTasks<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = self.get_mut();
        // The connection first: it may start new streams, which then run in the same poll.
        let out = this.conn.as_mut().poll(cx);
        this.poll_tasks(cx);
        let out = std::task::ready!(out);
        // Whatever still runs (a response body, the client's connection driver closing the
        // connection) goes on as tasks of its own, as with a spawning executor.
        this.rx.close();
        while let Ok(task) = this.rx.try_recv() {
            tokio::spawn(task);
        }
        for task in std::mem::take(&mut this.running) {
            tokio::spawn(task);
        }
        Poll::Ready(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hyper::rt::Executor;
    use std::sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    };

    #[tokio::test]
    async fn tasks_run_with_the_connection_and_outlive_it() {
        let (exec, tasks) = conn_executor();
        let done = Arc::new(AtomicUsize::new(0));
        let (release_tx, release_rx) = tokio::sync::oneshot::channel::<()>();
        let conn = {
            let (exec, done) = (exec.clone(), done.clone());
            async move {
                // A task that finishes at once, and one that outlives the connection.
                let d = done.clone();
                exec.execute(async move {
                    d.fetch_add(1, Ordering::SeqCst);
                });
                let d = done.clone();
                exec.execute(async move {
                    let _ = release_rx.await;
                    d.fetch_add(1, Ordering::SeqCst);
                });
                tokio::task::yield_now().await;
                "closed"
            }
        };
        assert_eq!(tasks.drive(conn).await, "closed");
        assert_eq!(
            done.load(Ordering::SeqCst),
            1,
            "ran inside the connection's task"
        );
        // The straggler was spawned; so is anything handed over after the connection ended.
        let d = done.clone();
        exec.execute(async move {
            d.fetch_add(1, Ordering::SeqCst);
        });
        let _ = release_tx.send(());
        for _ in 0..100 {
            if done.load(Ordering::SeqCst) == 3 {
                return;
            }
            tokio::task::yield_now().await;
        }
        panic!("stragglers did not run: {}", done.load(Ordering::SeqCst));
    }

    #[tokio::test]
    async fn a_panicking_task_ends_alone() {
        let (exec, tasks) = conn_executor();
        let done = Arc::new(AtomicUsize::new(0));
        let conn = {
            let done = done.clone();
            async move {
                exec.execute(async { panic!("a stream bug") });
                let d = done.clone();
                exec.execute(async move {
                    tokio::task::yield_now().await;
                    d.fetch_add(1, Ordering::SeqCst);
                });
                for _ in 0..10 {
                    tokio::task::yield_now().await;
                }
                "closed"
            }
        };
        assert_eq!(tasks.drive(conn).await, "closed");
        assert_eq!(done.load(Ordering::SeqCst), 1, "the other stream finished");
    }
}
