//! Claiming open records nobody works on: what an earlier run of this host
//! left, and, in a shared outbox, what a replica that died or lost its
//! leases left.
//!
//! Invariants: resumed work waits for the same host and plugin slots as live
//! requests; at most [`MAX_REDELIVERIES`](super::MAX_REDELIVERIES) resumed
//! deliveries run at once; a failed claim query is retried, never ends
//! resuming (with a shared outbox resuming lasts as long as the host).

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::Instrument as _;

use super::{Hold, Jobs, RESUME_BATCH, Work, retry_delay};
use crate::dispatch::{HandlerError, Slots};
use crate::link::LinkTag;
use crate::outbox::{Stale, State};
use crate::request_id::{self, RequestId};
use crate::telemetry::{self, Carried};

impl Jobs {
    /// Finishes, in the background, what an earlier run left open: re-runs
    /// records without a result and re-delivers the others, under the same
    /// caps as live requests. Call it once the host is listening.
    pub fn resume(self: &Arc<Self>) {
        if !self.has_records() {
            return;
        }
        self.start_upkeep();
        let jobs = self.clone();
        self.tracker.spawn(async move {
            match jobs.resume_all().await {
                0 => {}
                n => tracing::info!("resumed {n} async answer(s) left open"),
            }
        });
    }

    /// Claims and starts stale records batch by batch. With an outbox of its
    /// own, until none is left; with a shared one, for as long as the host
    /// runs: another replica may die at any time, and its claims then run out.
    async fn resume_all(self: &Arc<Self>) -> usize {
        let poll = self
            .outbox
            .lease()
            .map(|lease| (lease / 10).clamp(Duration::from_millis(100), Duration::from_secs(5)));
        let mut resumed = 0;
        let mut failures = 0;
        loop {
            let asked_at = Instant::now();
            let batch = match self.health.saw(self.outbox.claim_stale(RESUME_BATCH).await) {
                Ok(batch) => {
                    failures = 0;
                    batch
                }
                Err(e) => {
                    failures += 1;
                    if failures == 1 {
                        tracing::warn!("claiming open outbox records failed, retrying: {e}");
                    }
                    tokio::select! {
                        _ = tokio::time::sleep(retry_delay(failures)) => continue,
                        _ = self.shutdown.cancelled() => return resumed,
                    }
                }
            };
            if batch.is_empty() {
                let Some(poll) = poll else {
                    return resumed;
                };
                tokio::select! {
                    _ = self.outbox.wait_for_work(poll) => continue,
                    _ = self.shutdown.cancelled() => return resumed,
                }
            }
            for stale in batch {
                let hold =
                    self.holdings
                        .hold(stale.claim.clone(), asked_at, CancellationToken::new());
                if !self.resume_one(hold, stale).await {
                    // Shutting down: the rest is released (shared) or stays open for the next start.
                    return resumed;
                }
                resumed += 1;
            }
        }
    }

    /// Starts one resumed record once there is room for it. `false` if the host
    /// is shutting down.
    async fn resume_one(self: &Arc<Self>, hold: Hold, stale: Stale) -> bool {
        let Stale {
            request_id,
            key,
            inputs,
            expires_at,
            answered,
            traceparent,
            tracestate,
            ..
        } = stale;
        let carried: Carried = (traceparent, tracestate);
        let tag = LinkTag::new(&hold.claim.link);
        let request_id = request_id
            .and_then(|id| RequestId::parse(id.as_bytes()))
            .unwrap_or_else(RequestId::generate);
        let span = request_id::span(&request_id);
        span.record("key", key.as_str());
        if SystemTime::now() >= expires_at {
            tracing::warn!(parent: &span, link = %tag, key, "link expired while nobody held it; not sent");
            self.close(&hold, State::Expired).instrument(span).await;
            return true;
        }
        let plugin = if answered {
            None
        } else {
            self.router.route(&key).map(|route| route.plugin)
        };
        match plugin {
            Some(plugin) => {
                span.record("plugin", plugin.settings.name.as_str());
                tracing::info!(parent: &span, link = %tag, key, "re-running a request accepted earlier");
                // Owed already, it waits for room rather than being refused.
                let queue = telemetry::spans::queue();
                telemetry::resume(&queue, carried.0.as_deref(), carried.1.as_deref());
                let slots = tokio::select! {
                    slots = Slots::wait(&self.in_flight, &plugin).instrument(queue) => slots,
                    _ = hold.lost.cancelled() => return true,
                    _ = self.shutdown.cancelled() => return false,
                };
                let work = Work {
                    request_id: request_id.clone(),
                    link: hold.claim.link.clone(),
                    key,
                    inputs,
                    admitted: None,
                    trace: carried.clone(),
                };
                let _entered = span.enter();
                let (running, ticket) =
                    self.spawn_call(plugin, work, slots, Some(hold.lost.clone()));
                self.track(hold, request_id, carried, ticket, expires_at, running);
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
                        tracing::info!(link = %tag, key, "re-delivering an answer recorded earlier");
                        match jobs.outbox.result(&hold.claim).await {
                            Ok(Some(body)) => {
                                jobs.deliver(&hold, &request_id, &carried, None, body, expires_at)
                                    .await
                            }
                            Ok(None) => {
                                tracing::warn!(link = %tag, "the recorded result is gone; not sent")
                            }
                            // Left held: the lease runs out (or the next start claims it) and it is tried again.
                            Err(e) => {
                                tracing::error!(link = %tag, "reading the recorded result failed: {e}")
                            }
                        }
                    } else {
                        let error = HandlerError::Failed(format!(
                            "no plugin is mapped to key {key:?} any more"
                        ));
                        let body = error.body(&request_id);
                        jobs.record_and_deliver(
                            hold,
                            &request_id,
                            &carried,
                            None,
                            body,
                            expires_at,
                        )
                        .await;
                    }
                };
                self.tracker.spawn(task.instrument(span.clone()));
            }
        }
        true
    }
}
