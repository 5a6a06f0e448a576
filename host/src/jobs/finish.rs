//! From a handler's result to a closed record: record the result, deliver it
//! under a confirmed claim, close the record.
//!
//! Invariants: nothing is POSTed before its result is recorded; a result that
//! cannot be recorded is kept in memory and recording retried until it is
//! recorded, the claim is lost (another holder re-runs it) or the host shuts
//! down (the record stays open and runs again); every POST waits for
//! [`Holdings::ready_to_send`](super::Holdings::ready_to_send).

use std::sync::Arc;
use std::time::SystemTime;

use tracing::Instrument as _;

use super::{Hold, Jobs, Running, joined, retry_delay};
use crate::delivery::{Attempt, Outcome};
use crate::link::LinkTag;
use crate::metrics::OutcomeLabels;
use crate::outbox::{OutboxError, State};
use crate::recent::Ticket;
use crate::request_id::RequestId;
use crate::telemetry::{self, Carried};

/// What became of a write that must happen.
enum Written {
    Done,
    /// The claim is someone else's now (the database said so, or the lease lapsed).
    Lost,
    /// The host is shutting down before it could be written.
    ShuttingDown,
}

impl Jobs {
    /// Sees a recorded request's handler through to delivery.
    pub(super) fn track(
        self: &Arc<Self>,
        hold: Hold,
        request_id: RequestId,
        trace: Carried,
        ticket: Option<Ticket>,
        expires_at: SystemTime,
        running: Running,
    ) {
        let jobs = self.clone();
        self.tracker.spawn(
            async move {
                let body = match joined(running.await) {
                    _ if hold.lost.is_cancelled() => {
                        tracing::info!(link = %LinkTag::new(&hold.claim.link),
                            "the claim on this request was lost while it ran; another holder runs it");
                        return;
                    }
                    Ok(data) => data,
                    Err(e) => {
                        tracing::info!(link = %LinkTag::new(&hold.claim.link), code = e.code(), "async handler failed: {e}");
                        e.body(&request_id)
                    }
                };
                jobs.record_and_deliver(hold, &request_id, &trace, ticket, body, expires_at)
                    .await;
            }
            .instrument(tracing::Span::current()),
        );
    }

    pub(super) async fn record_and_deliver(
        &self,
        hold: Hold,
        request_id: &RequestId,
        trace: &Carried,
        ticket: Option<Ticket>,
        body: Vec<u8>,
        expires_at: SystemTime,
    ) {
        let outbox = self.outbox.clone();
        let recorded = self
            .must_write(&hold, "recording the result", || {
                outbox.answer(&hold.claim, &body)
            })
            .await;
        if let Written::Done = recorded {
            self.deliver(&hold, request_id, trace, ticket, body, expires_at)
                .await;
        }
    }

    /// A fenced write that must happen before the work goes on: retried while
    /// the outbox fails, until it is done, the claim is lost or the host shuts
    /// down. `Ok(false)` from the outbox means another holder has the record.
    async fn must_write<'a, F, Fut>(&self, hold: &Hold, what: &str, mut write: F) -> Written
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<bool, OutboxError>> + 'a,
    {
        let tag = LinkTag::new(&hold.claim.link);
        let mut failures = 0;
        loop {
            match self.health.saw(write().await) {
                Ok(true) => {
                    if failures > 0 {
                        tracing::info!(link = %tag, "{what} succeeded after {failures} failed attempt(s)");
                    }
                    return Written::Done;
                }
                Ok(false) => {
                    tracing::warn!(link = %tag, "{what}: another holder has this record now; leaving it to them");
                    self.holdings.let_go(&hold.claim);
                    return Written::Lost;
                }
                Err(e) => {
                    failures += 1;
                    if failures == 1 {
                        tracing::warn!(link = %tag, "{what} failed, retrying (nothing is sent meanwhile): {e}");
                    }
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(retry_delay(failures)) => {}
                _ = hold.lost.cancelled() => {
                    tracing::warn!(link = %tag, "{what} failed until the claim lapsed; another holder finishes it");
                    return Written::Lost;
                }
                _ = self.shutdown.cancelled() => {
                    tracing::warn!(link = %tag, "{what} failed until shutdown; the record stays open and is finished later");
                    return Written::ShuttingDown;
                }
            }
        }
    }

    /// Delivers a recorded result under a confirmed claim and closes the record.
    pub(super) async fn deliver(
        &self,
        hold: &Hold,
        request_id: &RequestId,
        trace: &Carried,
        ticket: Option<Ticket>,
        body: Vec<u8>,
        expires_at: SystemTime,
    ) {
        let tag = LinkTag::new(&hold.claim.link);
        // Joined to the request's trace through the stored context: the same
        // trace whichever process delivers, and after a restart.
        let span = telemetry::spans::delivery(request_id.as_str());
        telemetry::resume(&span, trace.0.as_deref(), trace.1.as_deref());
        // During shutdown this still makes one attempt; retries are left to the next start.
        let outcome = self
            .deliverer
            .deliver(
                &hold.claim.link,
                &body,
                request_id,
                ticket,
                expires_at,
                (&self.shutdown, &hold.lost),
                || self.holdings.ready_to_send(hold),
                |attempt| {
                    let outbox = self.outbox.clone();
                    let (result, text) = match &attempt {
                        Attempt::Delivered => ("delivered", "delivered".to_string()),
                        Attempt::Retry { reason, .. } => ("retry", format!("retry: {reason}")),
                        Attempt::Final(reason) => ("final", format!("final: {reason}")),
                    };
                    self.metrics
                        .delivery_attempts
                        .get_or_create(&OutcomeLabels { outcome: result })
                        .inc();
                    let claim = hold.claim.clone();
                    async move {
                        // Bookkeeping for people reading the database: it may fail.
                        if let Err(e) = outbox.attempted(&claim, &text).await {
                            tracing::warn!(link = %LinkTag::new(&claim.link), "recording a delivery attempt failed: {e}");
                        }
                    }
                },
            )
            .instrument(span.clone())
            .await;
        record_outcome(&span, &outcome);
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
            Outcome::Interrupted => {
                if hold.lost.is_cancelled() {
                    tracing::info!(link = %tag, "the claim was lost before delivery; another holder delivers it");
                }
                return;
            }
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
        self.close(hold, state).await;
    }

    /// Closes a record (retrying while the outbox fails) and lets its claim go.
    pub(super) async fn close(&self, hold: &Hold, state: State) {
        let outbox = self.outbox.clone();
        let closed = self
            .must_write(hold, "closing the record", || {
                outbox.close(&hold.claim, state)
            })
            .await;
        if let Written::Done = closed {
            self.holdings.let_go(&hold.claim);
        }
    }
}

/// How the delivery ended, on its span: a failure or expiry marks it failed.
fn record_outcome(span: &tracing::Span, outcome: &Outcome) {
    if span.is_none() {
        return;
    }
    let (name, attempts) = match outcome {
        Outcome::Delivered { attempts } => ("delivered", Some(*attempts)),
        Outcome::Failed(_) => ("failed", None),
        Outcome::Expired { attempts, .. } => ("expired", Some(*attempts)),
        Outcome::Interrupted => ("interrupted", None),
    };
    span.record("optech.delivery.outcome", name);
    if let Some(attempts) = attempts {
        span.record("optech.delivery.attempts", attempts);
    }
    if matches!(outcome, Outcome::Failed(_) | Outcome::Expired { .. }) {
        span.record("otel.status_code", "ERROR");
        span.record("otel.status_description", name);
    }
}
