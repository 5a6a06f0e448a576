//! The async answer's life: accept (recorded) -> run -> record result -> deliver.
//!
//! Invariants (with `outbox`): `202` goes out only after the request is
//! recorded; a result is recorded before delivery starts; on start-up every
//! open record is resumed while its link is valid (re-run if it has no result,
//! re-delivered if it has one) and closed as expired otherwise.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::sync::{OnceCell, Semaphore};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::delivery::{Attempt, Deliverer, Outcome};
use crate::dispatch::{Call, HandlerError, next_request_id};
use crate::outbox::{Outbox, OutboxError, Record, State};
use crate::protocol::{self, Fields};
use crate::router::{Plugin, Router};

/// A handler's result, produced by a task that may outlive the HTTP request.
pub type Running = JoinHandle<Result<Fields, HandlerError>>;

/// Runs and delivers async answers; one per host.
pub struct Jobs {
    data_dir: std::path::PathBuf,
    outbox: OnceCell<Outbox>,
    deliverer: Deliverer,
    router: Arc<Router>,
    in_flight: Arc<Semaphore>,
    link_ttl: Duration,
    tracker: TaskTracker,
    shutdown: CancellationToken,
}

impl Jobs {
    pub fn new(
        data_dir: std::path::PathBuf,
        deliverer: Deliverer,
        router: Arc<Router>,
        in_flight: Arc<Semaphore>,
        link_ttl: Duration,
    ) -> Self {
        Self {
            data_dir,
            outbox: OnceCell::new(),
            deliverer,
            router,
            in_flight,
            link_ttl,
            tracker: TaskTracker::new(),
            shutdown: CancellationToken::new(),
        }
    }

    /// The outbox, opened (and the data directory created) on first use.
    pub async fn outbox(&self) -> Result<&Outbox, OutboxError> {
        self.outbox
            .get_or_try_init(|| async {
                let dir = self.data_dir.clone();
                tokio::task::spawn_blocking(move || Outbox::open(&dir))
                    .await
                    .map_err(|e| OutboxError::Task(e.to_string()))?
            })
            .await
    }

    /// Whether a previous request with this link was accepted (so this one is a duplicate).
    pub async fn seen(&self, link: &str) -> Result<bool, OutboxError> {
        self.outbox().await?.contains(link).await
    }

    /// Records an accepted request, durably. Returns when its link expires, or
    /// `None` if the link was recorded before (a duplicate: do not run it again).
    pub async fn record(
        &self,
        link: &str,
        key: &str,
        inputs: &Fields,
    ) -> Result<Option<SystemTime>, OutboxError> {
        let expires_at = SystemTime::now() + self.link_ttl;
        let new = self
            .outbox()
            .await?
            .accept(link, key, inputs, expires_at)
            .await?;
        Ok(new.then_some(expires_at))
    }

    /// Sees a recorded request's handler through to delivery.
    pub fn track(self: &Arc<Self>, link: String, expires_at: SystemTime, running: Running) {
        let jobs = self.clone();
        self.tracker
            .spawn(async move { jobs.finish(link, expires_at, running).await });
    }

    /// Starts a handler call as its own task, holding `permits` until it ends.
    pub fn spawn_call<P: Send + 'static>(
        &self,
        plugin: Arc<Plugin>,
        call: Call,
        permits: P,
    ) -> Running {
        self.tracker.spawn(async move {
            let result = plugin.handler.call(call).await;
            drop(permits);
            result
        })
    }

    async fn finish(self: Arc<Self>, link: String, expires_at: SystemTime, running: Running) {
        let body = match running.await {
            Ok(Ok(data)) => protocol::data_body(&data),
            Ok(Err(e)) => {
                tracing::info!(link, code = e.code(), "async handler failed: {e}");
                protocol::error_body(e.code(), &e.to_string())
            }
            Err(e) => {
                protocol::error_body("plugin_trapped", &format!("the handler task failed: {e}"))
            }
        };
        let Ok(outbox) = self.outbox().await else {
            return;
        };
        if let Err(e) = outbox.answer(&link, &body).await {
            // Not recorded: a restart would re-run it; delivering now is still right.
            tracing::error!(link, "recording the result failed: {e}");
        }
        self.deliver(link, body, expires_at).await;
    }

    async fn deliver(&self, link: String, body: Vec<u8>, expires_at: SystemTime) {
        let Ok(outbox) = self.outbox().await else {
            return;
        };
        // During shutdown this still makes one attempt; retries are left to the next start.
        let outcome = self
            .deliverer
            .deliver(&link, &body, expires_at, &self.shutdown, |attempt| {
                let outbox = outbox.clone();
                let link = link.clone();
                async move {
                    let text = match &attempt {
                        Attempt::Delivered => "delivered".to_string(),
                        Attempt::Retry { reason, .. } => format!("retry: {reason}"),
                        Attempt::Final(reason) => format!("final: {reason}"),
                    };
                    if let Err(e) = outbox.attempted(&link, &text).await {
                        tracing::warn!(link, "recording a delivery attempt failed: {e}");
                    }
                }
            })
            .await;
        let state = match &outcome {
            Outcome::Delivered { attempts } => {
                tracing::debug!(link, attempts, "delivered");
                State::Delivered
            }
            Outcome::Failed(reason) => {
                tracing::warn!(link, "delivery failed finally: {reason}");
                State::Failed
            }
            Outcome::Expired { attempts, last } => {
                tracing::warn!(
                    link,
                    attempts,
                    "link expired before delivery; last error: {last}"
                );
                State::Expired
            }
            Outcome::Interrupted => return,
        };
        if let Err(e) = outbox.close(&link, state).await {
            tracing::error!(link, "closing the record failed: {e}");
        }
    }

    /// Resumes what a previous run left open. Returns how many records were resumed.
    pub async fn resume(self: &Arc<Self>) -> Result<usize, OutboxError> {
        if !self.data_dir.join("outbox.sqlite3").exists() {
            return Ok(0);
        }
        let outbox = self.outbox().await?;
        let pruned = outbox.prune(Duration::from_secs(3600)).await?;
        if pruned > 0 {
            tracing::debug!(pruned, "pruned old closed records");
        }
        let records = outbox.open_records().await?;
        let count = records.len();
        for record in records {
            self.resume_one(record).await?;
        }
        Ok(count)
    }

    async fn resume_one(self: &Arc<Self>, record: Record) -> Result<(), OutboxError> {
        let Record {
            link,
            key,
            inputs,
            expires_at,
            result,
            ..
        } = record;
        if SystemTime::now() >= expires_at {
            tracing::warn!(link, key, "link expired while the host was down; not sent");
            return self.outbox().await?.close(&link, State::Expired).await;
        }
        let jobs = self.clone();
        match result {
            Some(body) => {
                tracing::info!(
                    link,
                    key,
                    "re-delivering an answer left open by the last run"
                );
                self.tracker
                    .spawn(async move { jobs.deliver(link, body, expires_at).await });
            }
            None => {
                tracing::info!(link, key, "re-running a request accepted by the last run");
                let running = match self.router.route(&key) {
                    Some(plugin) => {
                        let permit = self.in_flight.clone().acquire_owned().await.ok();
                        let call = Call {
                            request_id: next_request_id(),
                            key,
                            inputs,
                        };
                        self.spawn_call(plugin, call, permit)
                    }
                    None => self.tracker.spawn(async move {
                        Err(HandlerError::Failed(format!(
                            "no plugin is mapped to key {key:?} any more"
                        )))
                    }),
                };
                self.tracker
                    .spawn(async move { jobs.finish(link, expires_at, running).await });
            }
        }
        Ok(())
    }

    /// Stops retry waits, lets running handlers finish within `grace`, and leaves
    /// everything unfinished open in the outbox for the next start.
    pub async fn shutdown(&self, grace: Duration) {
        self.shutdown.cancel();
        self.tracker.close();
        if tokio::time::timeout(grace, self.tracker.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                "shutdown grace of {grace:?} ran out; unfinished answers stay in the outbox"
            );
        }
    }
}
