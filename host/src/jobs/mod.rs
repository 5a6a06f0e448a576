//! Answers that go to `link` later: `async` mode, the slow half of `auto`
//! mode, and what an earlier run (or a dead replica) left open.
//!
//! The life of one: accept (recorded) -> run -> record the result -> deliver
//! -> close. The server calls [`Jobs::accept`] (async) or [`Jobs::auto`]
//! (auto) and only answers what they return; [`Jobs::resume`] finishes open
//! records in the background after the host is listening.
//!
//! - `modes.rs`: accept and the `auto` race, the two ways work comes in;
//! - `finish.rs`: from a handler's result to a closed record;
//! - `resume.rs`: claiming open records nobody is working on;
//! - `lease.rs`: [`Holdings`], the claims held, each with its cancellation,
//!   and the heartbeat that renews their leases;
//! - `health.rs`: whether the outbox can record, for `/readyz` and fast 503s;
//! - `prune.rs`: deleting closed records after `outbox_retention`.
//!
//! Invariants (with `outbox`): `202` is sent only after the request is
//! recorded; nothing is POSTed before its result is recorded, and a result
//! that cannot be recorded is kept and recording retried; a record is POSTed
//! only under a confirmed claim ([`Holdings::may_send`]), so a replica that
//! lost its lease sends nothing; resumed work waits for the same host and
//! plugin slots as live requests, and at most [`MAX_REDELIVERIES`] resumed
//! deliveries run at once. Links are logged only as [`LinkTag`]s.

mod finish;
mod health;
mod lease;
mod modes;
mod prune;
mod resume;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::sync::Semaphore;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument as _;

use crate::delivery::Deliverer;
use crate::dispatch::{DataBody, HandlerError, Plugin, Slots};
use crate::metrics::SharedMetrics;
use crate::outbox::{Claim, Listing, OpenStats, Outbox, OutboxError, OutboxSource, State};
use crate::protocol::Fields;
use crate::recent::Ticket;
use crate::request_id::RequestId;
use crate::router::Router;
use crate::telemetry::{self, Carried};

pub use health::OutboxHealth;
pub use lease::{Hold, Holdings};

/// Open records claimed per query while resuming.
const RESUME_BATCH: usize = 64;
/// Resumed deliveries running at once (each holds its body in memory).
pub const MAX_REDELIVERIES: usize = 64;
/// The first wait before a failed outbox write is tried again; it doubles up
/// to [`RETRY_MAX`].
const RETRY_FIRST: Duration = Duration::from_millis(100);
const RETRY_MAX: Duration = Duration::from_secs(2);

/// A handler's result, produced by a task that may outlive the HTTP request.
type Running = JoinHandle<Result<DataBody, HandlerError>>;

/// A request bound for an async answer: its link is present and checked.
#[derive(Debug, Clone)]
pub struct Work {
    pub request_id: RequestId,
    pub link: String,
    pub key: String,
    pub inputs: Fields,
    /// The console's entry, when the server admitted it in this process
    /// (`None` for work resumed from the outbox: `spawn_call` makes one).
    pub admitted: Option<Ticket>,
    /// The request's trace context (its server span's), which the outbox
    /// stores and the handler's and delivery's spans join (`(None, None)`
    /// while tracing is off).
    pub trace: Carried,
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
    /// Where the outbox is, for messages and to know whether records may wait.
    pub source: OutboxSource,
    pub link_ttl: Duration,
    /// How long closed records are kept before pruning.
    pub retention: Duration,
}

/// Runs and delivers async answers; one per host.
pub struct Jobs {
    options: JobsOptions,
    outbox: Arc<dyn Outbox>,
    deliverer: Deliverer,
    router: Arc<Router>,
    in_flight: Arc<Semaphore>,
    redeliveries: Arc<Semaphore>,
    holdings: Arc<Holdings>,
    health: Arc<OutboxHealth>,
    /// Whether the heartbeat, probe and pruning tasks run yet.
    background: AtomicBool,
    /// Stops the heartbeat and the probe, after the drain.
    background_stop: CancellationToken,
    metrics: SharedMetrics,
    tracker: TaskTracker,
    shutdown: CancellationToken,
}

impl Jobs {
    /// Jobs over `outbox` (connected or not: it connects on first use).
    pub fn new(
        options: JobsOptions,
        outbox: Arc<dyn Outbox>,
        deliverer: Deliverer,
        router: Arc<Router>,
        in_flight: Arc<Semaphore>,
        metrics: SharedMetrics,
    ) -> Self {
        let lease = outbox.lease();
        Self {
            metrics,
            options,
            outbox,
            deliverer,
            router,
            in_flight,
            redeliveries: Arc::new(Semaphore::new(MAX_REDELIVERIES)),
            holdings: Arc::new(Holdings::new(lease)),
            health: Arc::default(),
            background: AtomicBool::new(false),
            background_stop: CancellationToken::new(),
            tracker: TaskTracker::new(),
            shutdown: CancellationToken::new(),
        }
    }

    /// Connects the outbox now and starts its upkeep (lease heartbeat,
    /// health probe, pruning): for a host whose plugins answer later, so a
    /// wrong URL or an unusable file is a start-up error.
    pub async fn prepare(&self) -> Result<(), OutboxError> {
        self.health.saw(self.outbox.prepare().await)?;
        self.start_upkeep();
        Ok(())
    }

    /// Starts the outbox's upkeep once, on first use.
    fn start_upkeep(&self) {
        if self.background.swap(true, Ordering::AcqRel) {
            return;
        }
        self.tracker.spawn(prune::prune_while_running(
            self.outbox.clone(),
            self.options.retention,
            self.shutdown.clone(),
        ));
        // Outside the tracker: they must keep going through the drain.
        tokio::spawn(health::probe_while_running(
            self.outbox.clone(),
            self.health.clone(),
            self.background_stop.clone(),
        ));
        if let Some(lease) = self.outbox.lease() {
            tokio::spawn(lease::heartbeat(
                self.outbox.clone(),
                self.holdings.clone(),
                lease,
                self.background_stop.clone(),
            ));
        }
    }

    /// How many outbox records this host holds a claim on now.
    pub fn claims_held(&self) -> usize {
        self.holdings.len()
    }

    /// Whether the outbox can record now (as of its last write or probe).
    pub fn health(&self) -> &Arc<OutboxHealth> {
        &self.health
    }

    /// How full the outbox is, if it was ever used (never waits long on it).
    pub async fn open_stats(&self) -> Option<Result<OpenStats, OutboxError>> {
        if !self.background.load(Ordering::Acquire) {
            return None;
        }
        self.health.stats(self.outbox.as_ref()).await.map(Ok)
    }

    /// Where the outbox is (a URL without its password).
    pub fn source(&self) -> &OutboxSource {
        &self.options.source
    }

    /// Whether an earlier run left records to resume.
    pub fn has_records(&self) -> bool {
        self.options.source.exists()
    }

    /// The newest open and failed records, for the console: read-only, and
    /// quick to fail while the outbox is down (its health says so first).
    pub async fn listing(&self, limit: usize) -> Result<Listing, OutboxError> {
        self.outbox.console_listing(limit).await
    }

    /// The state of one link's record, for tests and tools.
    pub async fn state(&self, link: &str) -> Result<Option<State>, OutboxError> {
        self.outbox.state(link).await
    }

    /// Starts a handler call as its own task, holding `slots` until it ends,
    /// in the current request's span. The call stops if `lost` is cancelled.
    /// Returns the call and its console entry (made now for resumed work), so
    /// its delivery attempts are shown there.
    fn spawn_call(
        &self,
        plugin: Arc<Plugin>,
        mut work: Work,
        slots: Slots,
        lost: Option<CancellationToken>,
    ) -> (Running, Option<Ticket>) {
        // Only work resumed from the outbox comes without a console entry.
        let resumed = work.admitted.is_none();
        if resumed {
            work.admitted = self.metrics.recent.call_started(
                &work.request_id,
                &work.key,
                plugin.console_name(),
                plugin.settings.mode,
            );
        }
        let ticket = work.admitted;
        if let (true, Some(trace_id)) = (resumed, telemetry::trace_id(&work.trace)) {
            self.metrics.recent.traced(ticket, trace_id);
        }
        let trace = telemetry::spans::background(work.request_id.as_str(), resumed);
        telemetry::resume(&trace, work.trace.0.as_deref(), work.trace.1.as_deref());
        let running = self.tracker.spawn(
            async move {
                let run = plugin.run(work.request_id, work.key, work.inputs, work.admitted);
                let result = match lost {
                    Some(lost) => tokio::select! {
                        result = run => result,
                        _ = lost.cancelled() => Err(HandlerError::Failed(
                            "the claim on this request was lost; another holder runs it".into(),
                        )),
                    },
                    None => run.await,
                };
                drop(slots);
                result
            }
            .instrument(tracing::Span::current())
            // Outermost, so the trace's spans made inside have it as parent.
            .instrument(trace),
        );
        (running, ticket)
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
        self.background_stop.cancel();
        let unfinished: Vec<Claim> = self.holdings.claims();
        if self.outbox.lease().is_some() && !unfinished.is_empty() {
            match self.outbox.release(&unfinished).await {
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

fn joined(
    result: Result<Result<DataBody, HandlerError>, tokio::task::JoinError>,
) -> Result<DataBody, HandlerError> {
    result.unwrap_or_else(|e| {
        Err(HandlerError::Trapped(format!(
            "the handler task failed: {e}"
        )))
    })
}

/// The wait before the `attempt`-th retry of an outbox write (1-based).
fn retry_delay(attempt: u32) -> Duration {
    RETRY_FIRST
        .saturating_mul(1 << attempt.saturating_sub(1).min(8))
        .min(RETRY_MAX)
}
