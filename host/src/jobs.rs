//! Answers that go to `link` later: `async` mode, the slow half of `auto`
//! mode, and what an earlier run left open.
//!
//! The life of one: accept (recorded) -> run -> record result -> deliver ->
//! close. The server calls [`Jobs::accept`] (async) or [`Jobs::auto`] (auto)
//! and only answers what they return; [`Jobs::resume`] finishes open records
//! in the background after the host is listening.
//!
//! Invariants (with `outbox`): `202` is sent only after the request is
//! recorded; a result is recorded before delivery starts; resumed work waits
//! for the same host and plugin slots as live requests, and at most
//! [`MAX_REDELIVERIES`] resumed deliveries run at once, so a large backlog
//! never floods memory; records closed longer than `outbox_retention` ago are
//! pruned while the host runs. Links are logged only as [`LinkTag`]s.

use std::collections::HashMap;
use std::sync::{Arc, Mutex as StdMutex};
use std::time::{Duration, SystemTime};

use tokio::sync::{OnceCell, Semaphore};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument as _;

use crate::delivery::{Attempt, Deliverer, Outcome};
use crate::dispatch::{DataBody, HandlerError, Plugin, Slots};
use crate::link::LinkTag;
use crate::metrics::{OutcomeLabels, SharedMetrics};
use crate::outbox::{
    self, Claim, NewRecord, OpenStats, Outbox, OutboxError, OutboxSource, Stale, State,
};
use crate::protocol::Fields;
use crate::request_id::{self, RequestId};
use crate::router::Router;

/// Open records claimed per query while resuming.
const RESUME_BATCH: usize = 64;
/// Resumed deliveries running at once (each holds its body in memory).
pub const MAX_REDELIVERIES: usize = 64;

/// A handler's result, produced by a task that may outlive the HTTP request.
type Running = JoinHandle<Result<DataBody, HandlerError>>;

/// A request bound for an async answer: its link is present and checked.
#[derive(Debug, Clone)]
pub struct Work {
    pub request_id: RequestId,
    pub link: String,
    pub key: String,
    pub inputs: Fields,
}

/// What [`Jobs::accept`] did with a request; either way the answer is `202`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Acceptance {
    /// Recorded; it runs and is delivered in the background.
    Recorded,
    /// The link was accepted before: nothing runs again.
    Duplicate,
}

/// What `auto` mode answers.
#[derive(Debug)]
pub enum AutoAnswer {
    /// The handler finished within the sync budget (or there is no link to answer later).
    Now(Result<DataBody, HandlerError>),
    /// Recorded (or a duplicate): `202`, the answer goes to the link.
    Later(Acceptance),
}

/// How [`Jobs`] is set up.
#[derive(Debug, Clone)]
pub struct JobsOptions {
    pub outbox: OutboxSource,
    pub link_ttl: Duration,
    /// How long closed records are kept before pruning.
    pub retention: Duration,
}

/// Runs and delivers async answers; one per host.
pub struct Jobs {
    options: JobsOptions,
    outbox: OnceCell<Arc<dyn Outbox>>,
    deliverer: Deliverer,
    router: Arc<Router>,
    in_flight: Arc<Semaphore>,
    redeliveries: Arc<Semaphore>,
    /// The claims this host holds now (link -> token): renewed while it works,
    /// released if it shuts down with them unfinished.
    held: Arc<StdMutex<HashMap<String, i64>>>,
    /// Stops the lease heartbeat, after the drain.
    heartbeat_stop: CancellationToken,
    metrics: SharedMetrics,
    tracker: TaskTracker,
    shutdown: CancellationToken,
}

impl Jobs {
    pub fn new(
        options: JobsOptions,
        deliverer: Deliverer,
        router: Arc<Router>,
        in_flight: Arc<Semaphore>,
        metrics: SharedMetrics,
    ) -> Self {
        Self {
            metrics,
            options,
            outbox: OnceCell::new(),
            deliverer,
            router,
            in_flight,
            redeliveries: Arc::new(Semaphore::new(MAX_REDELIVERIES)),
            held: Arc::default(),
            heartbeat_stop: CancellationToken::new(),
            tracker: TaskTracker::new(),
            shutdown: CancellationToken::new(),
        }
    }

    /// The outbox, opened on first use; opening it starts the pruning of old records.
    pub async fn outbox(&self) -> Result<&Arc<dyn Outbox>, OutboxError> {
        self.outbox
            .get_or_try_init(|| async {
                let outbox = self.options.outbox.open().await?;
                self.tracker.spawn(prune_while_running(
                    outbox.clone(),
                    self.options.retention,
                    self.shutdown.clone(),
                ));
                if let Some(lease) = outbox.lease() {
                    // Outside the tracker: it must keep renewing through the drain.
                    tokio::spawn(renew_while_running(
                        outbox.clone(),
                        self.held.clone(),
                        lease,
                        self.heartbeat_stop.clone(),
                    ));
                }
                Ok(outbox)
            })
            .await
    }

    /// How full the outbox is, if it is open (it is not opened to answer).
    pub async fn open_stats(&self) -> Option<Result<OpenStats, OutboxError>> {
        let outbox = self.outbox.get()?;
        Some(outbox.open_stats().await)
    }

    /// Where the outbox is (a URL without its password).
    pub fn source(&self) -> &OutboxSource {
        &self.options.outbox
    }

    /// Whether an earlier run left records to resume.
    pub fn has_records(&self) -> bool {
        self.options.outbox.exists()
    }

    /// The state of one link's record, for tests and tools.
    pub async fn state(&self, link: &str) -> Result<Option<State>, OutboxError> {
        self.outbox().await?.state(link).await
    }

    /// `async` mode: records the request durably, then runs it and delivers its
    /// answer in the background. Returns once the record is synced, so the
    /// caller may answer `202`.
    pub async fn accept(
        self: &Arc<Self>,
        plugin: Arc<Plugin>,
        work: Work,
        slots: Slots,
    ) -> Result<Acceptance, OutboxError> {
        let expires_at = SystemTime::now() + self.options.link_ttl;
        let outbox = self.outbox().await?;
        let claim = match outbox.accept(&work.record(expires_at)).await? {
            outbox::Accepted::New(claim) => claim,
            outbox::Accepted::Duplicate => return Ok(Acceptance::Duplicate),
        };
        self.hold(&claim);
        let request_id = work.request_id.clone();
        let running = self.spawn_call(plugin, work, slots);
        self.track(claim, request_id, expires_at, running);
        Ok(Acceptance::Recorded)
    }

    /// `auto` mode: runs the handler; if it finishes within the plugin's
    /// `sync_budget` its answer is given now, else the request is recorded and
    /// answered later. Without a link the only answer is a synchronous one.
    pub async fn auto(
        self: &Arc<Self>,
        plugin: Arc<Plugin>,
        work: Work,
        has_link: bool,
        slots: Slots,
    ) -> Result<AutoAnswer, OutboxError> {
        // A read, not a write: the synchronous path never writes to disk.
        if has_link && self.outbox().await?.contains(&work.link).await? {
            return Ok(AutoAnswer::Later(Acceptance::Duplicate));
        }
        let budget = plugin.settings.sync_budget;
        let kept = work.clone();
        let mut running = self.spawn_call(plugin, work, slots);
        tokio::select! {
            result = &mut running => return Ok(AutoAnswer::Now(joined(result))),
            _ = tokio::time::sleep(budget) => {}
        }
        if !has_link {
            return Ok(AutoAnswer::Now(joined(running.await)));
        }
        let expires_at = SystemTime::now() + self.options.link_ttl;
        let recorded = match self.outbox().await {
            Ok(outbox) => outbox.accept(&kept.record(expires_at)).await,
            Err(e) => Err(e),
        };
        match recorded {
            Ok(outbox::Accepted::New(claim)) => {
                self.hold(&claim);
                self.track(claim, kept.request_id, expires_at, running);
                Ok(AutoAnswer::Later(Acceptance::Recorded))
            }
            Ok(outbox::Accepted::Duplicate) => {
                running.abort();
                Ok(AutoAnswer::Later(Acceptance::Duplicate))
            }
            Err(e) => {
                // Cannot promise a later answer: give the one we will have.
                tracing::error!(link = %LinkTag::new(&kept.link),
                    "cannot record an async answer, answering synchronously: {e}");
                Ok(AutoAnswer::Now(joined(running.await)))
            }
        }
    }

    /// Starts a handler call as its own task, holding `slots` until it ends,
    /// in the current request's span.
    fn spawn_call(&self, plugin: Arc<Plugin>, work: Work, slots: Slots) -> Running {
        self.tracker.spawn(
            async move {
                let result = plugin.run(work.request_id, work.key, work.inputs).await;
                drop(slots);
                result
            }
            .instrument(tracing::Span::current()),
        )
    }

    /// Sees a recorded request's handler through to delivery.
    fn track(
        self: &Arc<Self>,
        claim: Claim,
        request_id: RequestId,
        expires_at: SystemTime,
        running: Running,
    ) {
        let jobs = self.clone();
        self.tracker.spawn(
            async move {
                let body = match joined(running.await) {
                    Ok(data) => data,
                    Err(e) => {
                        tracing::info!(link = %LinkTag::new(&claim.link), code = e.code(), "async handler failed: {e}");
                        e.body(&request_id)
                    }
                };
                jobs.record_and_deliver(claim, &request_id, body, expires_at)
                    .await;
            }
            .instrument(tracing::Span::current()),
        );
    }

    async fn record_and_deliver(
        &self,
        claim: Claim,
        request_id: &RequestId,
        body: Vec<u8>,
        expires_at: SystemTime,
    ) {
        let Ok(outbox) = self.outbox().await else {
            return;
        };
        match outbox.answer(&claim, &body).await {
            Ok(true) => {}
            Ok(false) => {
                tracing::warn!(link = %LinkTag::new(&claim.link),
                    "another holder has this record now; leaving the delivery to it");
                self.let_go(&claim);
                return;
            }
            // Not recorded: a restart would re-run it; delivering now is still right.
            Err(e) => {
                tracing::error!(link = %LinkTag::new(&claim.link), "recording the result failed: {e}")
            }
        }
        self.deliver(&claim, request_id, body, expires_at).await;
    }

    async fn deliver(
        &self,
        claim: &Claim,
        request_id: &RequestId,
        body: Vec<u8>,
        expires_at: SystemTime,
    ) {
        let Ok(outbox) = self.outbox().await else {
            return;
        };
        let tag = LinkTag::new(&claim.link);
        // During shutdown this still makes one attempt; retries are left to the next start.
        let outcome = self
            .deliverer
            .deliver(&claim.link, &body, request_id, expires_at, &self.shutdown, |attempt| {
                let outbox = outbox.clone();
                let (result, text) = match &attempt {
                    Attempt::Delivered => ("delivered", "delivered".to_string()),
                    Attempt::Retry { reason, .. } => ("retry", format!("retry: {reason}")),
                    Attempt::Final(reason) => ("final", format!("final: {reason}")),
                };
                self.metrics
                    .delivery_attempts
                    .get_or_create(&OutcomeLabels { outcome: result })
                    .inc();
                async move {
                    if let Err(e) = outbox.attempted(claim, &text).await {
                        tracing::warn!(link = %LinkTag::new(&claim.link), "recording a delivery attempt failed: {e}");
                    }
                }
            })
            .await;
        let state = match &outcome {
            Outcome::Delivered { attempts } => {
                tracing::debug!(link = %tag, attempts, "delivered");
                State::Delivered
            }
            Outcome::Failed(reason) => {
                tracing::warn!(link = %tag, "delivery failed finally: {reason}");
                State::Failed
            }
            Outcome::Expired { attempts, last } => {
                tracing::warn!(link = %tag, attempts, "link expired before delivery; last error: {last}");
                State::Expired
            }
            Outcome::Interrupted => return,
        };
        let outcome = match state {
            State::Delivered => "delivered",
            State::Failed => "failed",
            _ => "expired",
        };
        self.metrics
            .deliveries
            .get_or_create(&OutcomeLabels { outcome })
            .inc();
        match outbox.close(claim, state).await {
            Ok(true) => {}
            Ok(false) => {
                tracing::warn!(link = %tag, "another holder has this record now; not closing it")
            }
            Err(e) => tracing::error!(link = %tag, "closing the record failed: {e}"),
        }
        self.let_go(claim);
    }

    fn hold(&self, claim: &Claim) {
        self.lock_held().insert(claim.link.clone(), claim.token);
    }

    fn let_go(&self, claim: &Claim) {
        let mut held = self.lock_held();
        if held.get(&claim.link) == Some(&claim.token) {
            held.remove(&claim.link);
        }
    }

    fn lock_held(&self) -> std::sync::MutexGuard<'_, HashMap<String, i64>> {
        self.held.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Finishes, in the background, what an earlier run left open: re-runs
    /// records without a result and re-delivers the others, under the same
    /// caps as live requests. Call it once the host is listening.
    pub fn resume(self: &Arc<Self>) {
        if !self.has_records() {
            return;
        }
        let jobs = self.clone();
        self.tracker.spawn(async move {
            match jobs.resume_all().await {
                Ok(0) => {}
                Ok(n) => tracing::info!("resumed {n} async answer(s) left open by an earlier run"),
                Err(e) => tracing::error!("resuming async answers stopped: {e}"),
            }
        });
    }

    /// Claims and starts stale records batch by batch. With an outbox of its
    /// own, until none is left; with a shared one, for as long as the host
    /// runs: another replica may die at any time, and its claims then run out.
    async fn resume_all(self: &Arc<Self>) -> Result<usize, OutboxError> {
        let outbox = self.outbox().await?.clone();
        let poll = outbox
            .lease()
            .map(|lease| (lease / 10).clamp(Duration::from_millis(100), Duration::from_secs(5)));
        let mut resumed = 0;
        loop {
            let batch = match outbox.claim_stale(RESUME_BATCH).await {
                Ok(batch) => batch,
                Err(e) if poll.is_some() => {
                    tracing::warn!("claiming stale outbox records failed, retrying: {e}");
                    Vec::new()
                }
                Err(e) => return Err(e),
            };
            if batch.is_empty() {
                let Some(poll) = poll else {
                    return Ok(resumed);
                };
                tokio::select! {
                    _ = outbox.wait_for_work(poll) => continue,
                    _ = self.shutdown.cancelled() => return Ok(resumed),
                }
            }
            for stale in batch {
                self.hold(&stale.claim);
                if !self.resume_one(stale).await {
                    // Shutting down: the rest is released (shared) or stays open for the next start.
                    return Ok(resumed);
                }
                resumed += 1;
            }
        }
    }

    /// Starts one resumed record once there is room for it. `false` if the host
    /// is shutting down.
    async fn resume_one(self: &Arc<Self>, stale: Stale) -> bool {
        let Stale {
            claim,
            request_id,
            key,
            inputs,
            expires_at,
            answered,
        } = stale;
        let tag = LinkTag::new(&claim.link);
        let request_id = request_id
            .and_then(|id| RequestId::parse(id.as_bytes()))
            .unwrap_or_else(RequestId::generate);
        let span = request_id::span(&request_id);
        span.record("key", key.as_str());
        if SystemTime::now() >= expires_at {
            tracing::warn!(parent: &span, link = %tag, key, "link expired while the host was down; not sent");
            if let Ok(outbox) = self.outbox().await
                && let Err(e) = outbox.close(&claim, State::Expired).await
            {
                tracing::error!(parent: &span, link = %tag, "closing the record failed: {e}");
            }
            self.let_go(&claim);
            return true;
        }
        let plugin = if answered {
            None
        } else {
            self.router.route(&key)
        };
        match plugin {
            Some(plugin) => {
                span.record("plugin", plugin.settings.name.as_str());
                tracing::info!(parent: &span, link = %tag, key, "re-running a request accepted by an earlier run");
                let slots = tokio::select! {
                    slots = Slots::wait(&self.in_flight, &plugin) => slots,
                    _ = self.shutdown.cancelled() => return false,
                };
                let work = Work {
                    request_id: request_id.clone(),
                    link: claim.link.clone(),
                    key,
                    inputs,
                };
                let _entered = span.enter();
                let running = self.spawn_call(plugin, work, slots);
                self.track(claim, request_id, expires_at, running);
            }
            None => {
                let permit = tokio::select! {
                    permit = self.redeliveries.clone().acquire_owned() => permit.ok(),
                    _ = self.shutdown.cancelled() => return false,
                };
                let jobs = self.clone();
                let task = async move {
                    let _permit = permit;
                    if answered {
                        tracing::info!(link = %tag, key, "re-delivering an answer left open by an earlier run");
                        let body = match jobs.outbox().await {
                            Ok(outbox) => outbox.result(&claim).await,
                            Err(e) => Err(e),
                        };
                        match body {
                            Ok(Some(body)) => {
                                jobs.deliver(&claim, &request_id, body, expires_at).await
                            }
                            Ok(None) => {
                                tracing::warn!(link = %tag, "the recorded result is gone; not sent")
                            }
                            Err(e) => {
                                tracing::error!(link = %tag, "reading the recorded result failed: {e}")
                            }
                        }
                    } else {
                        let error = HandlerError::Failed(format!(
                            "no plugin is mapped to key {key:?} any more"
                        ));
                        let body = error.body(&request_id);
                        jobs.record_and_deliver(claim, &request_id, body, expires_at)
                            .await;
                    }
                };
                self.tracker.spawn(task.instrument(span.clone()));
            }
        }
        true
    }

    /// Stops retry waits and resuming, lets running handlers finish within
    /// `grace`, and leaves everything unfinished open in the outbox: for the
    /// next start, or, in a shared outbox, released for another replica to
    /// finish at once.
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
        self.heartbeat_stop.cancel();
        let unfinished: Vec<Claim> = self
            .lock_held()
            .iter()
            .map(|(link, token)| Claim {
                link: link.clone(),
                token: *token,
            })
            .collect();
        if let Some(outbox) = self.outbox.get()
            && outbox.lease().is_some()
            && !unfinished.is_empty()
        {
            match outbox.release(&unfinished).await {
                Ok(()) => tracing::info!(
                    "released {} unfinished answer(s) for the other replicas",
                    unfinished.len()
                ),
                Err(e) => tracing::warn!(
                    "releasing unfinished answers failed (their leases will run out): {e}"
                ),
            }
        }
    }
}

impl Work {
    fn record(&self, expires_at: SystemTime) -> NewRecord<'_> {
        NewRecord {
            link: &self.link,
            key: &self.key,
            inputs: &self.inputs,
            expires_at,
            request_id: self.request_id.as_str(),
        }
    }
}

fn joined(
    result: Result<Result<DataBody, HandlerError>, tokio::task::JoinError>,
) -> Result<DataBody, HandlerError> {
    result.unwrap_or_else(|e| {
        Err(HandlerError::Trapped(format!(
            "the handler task failed: {e}"
        )))
    })
}

/// Renews this host's claims every third of a lease, until stopped.
async fn renew_while_running(
    outbox: Arc<dyn Outbox>,
    held: Arc<StdMutex<HashMap<String, i64>>>,
    lease: Duration,
    stop: CancellationToken,
) {
    let every = (lease / 3).max(Duration::from_millis(50));
    loop {
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = stop.cancelled() => return,
        }
        let claims: Vec<Claim> = held
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|(link, token)| Claim {
                link: link.clone(),
                token: *token,
            })
            .collect();
        match outbox.renew(&claims).await {
            Ok(kept) if kept < claims.len() => tracing::debug!(
                "{} of {} claims are no longer held (closed since, or taken over)",
                claims.len() - kept,
                claims.len()
            ),
            Ok(_) => {}
            Err(e) => tracing::warn!("renewing leases failed: {e}"),
        }
    }
}

/// Deletes records closed more than `retention` ago, every so often, until shutdown.
async fn prune_while_running(
    outbox: Arc<dyn Outbox>,
    retention: Duration,
    shutdown: CancellationToken,
) {
    let every = (retention / 2).clamp(Duration::from_millis(100), Duration::from_secs(60));
    loop {
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = shutdown.cancelled() => return,
        }
        let before = SystemTime::now()
            .checked_sub(retention)
            .unwrap_or(SystemTime::UNIX_EPOCH);
        match outbox.prune(before).await {
            Ok(0) => {}
            Ok(n) => tracing::debug!(pruned = n, "pruned closed outbox records"),
            Err(e) => tracing::warn!("pruning the outbox failed: {e}"),
        }
    }
}
