//! The two ways async work comes in: `async` mode records first and answers
//! `202`; `auto` mode races the handler against its sync budget and records
//! only if it is slower.

use std::sync::Arc;
use std::time::SystemTime;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::Instrument as _;

use super::{Acceptance, AutoAnswer, Jobs, Work, joined};
use crate::dispatch::{Plugin, Slots};
use crate::link::LinkTag;
use crate::outbox::{Accepted, NewRecord, OutboxError};
use crate::telemetry;

impl Jobs {
    /// `async` mode: records the request durably, then runs it and delivers its
    /// answer in the background. Returns once the record is synced, so the
    /// caller may answer `202`; refuses at once while the outbox is down.
    pub async fn accept(
        self: &Arc<Self>,
        plugin: Arc<Plugin>,
        work: Work,
        slots: Slots,
    ) -> Result<Acceptance, OutboxError> {
        self.start_upkeep();
        self.health.check()?;
        let expires_at = SystemTime::now() + self.options.link_ttl;
        let asked_at = Instant::now();
        let accepted = self.health.saw(
            self.outbox
                .accept(&work.record(expires_at))
                .instrument(telemetry::spans::outbox_accept())
                .await,
        )?;
        let claim = match accepted {
            Accepted::New(claim) => claim,
            Accepted::Duplicate => return Ok(Acceptance::Duplicate),
        };
        let lost = CancellationToken::new();
        let hold = self.holdings.hold(claim, asked_at, lost.clone());
        let (request_id, carried) = (work.request_id.clone(), work.trace.clone());
        let (running, ticket) = self.spawn_call(plugin, work, slots, Some(lost));
        self.track(hold, request_id, carried, ticket, expires_at, running);
        Ok(Acceptance::Recorded)
    }

    /// `auto` mode: runs the handler; if it finishes within the plugin's
    /// `sync_budget` its answer is given now, else the request is recorded and
    /// answered later. Without a link the only answer is a synchronous one, and
    /// so it is when the outbox cannot record: an answer ready in time never
    /// depends on the outbox.
    pub async fn auto(
        self: &Arc<Self>,
        plugin: Arc<Plugin>,
        work: Work,
        has_link: bool,
        slots: Slots,
    ) -> Result<AutoAnswer, OutboxError> {
        self.start_upkeep();
        // A read, not a write: the synchronous path never writes to disk.
        if has_link && self.health.is_up() {
            match self.outbox.contains(&work.link).await {
                Ok(true) => return Ok(AutoAnswer::Later(Acceptance::Duplicate)),
                Ok(false) => {}
                Err(e) => {
                    let _ = self.health.saw::<()>(Err(e));
                }
            }
        }
        let budget = plugin.settings.sync_budget;
        let kept = work.clone();
        let lost = CancellationToken::new();
        let (mut running, ticket) = self.spawn_call(plugin, work, slots, Some(lost.clone()));
        tokio::select! {
            result = &mut running => return Ok(AutoAnswer::Now(joined(result))),
            _ = tokio::time::sleep(budget) => {}
        }
        if !has_link {
            return Ok(AutoAnswer::Now(joined(running.await)));
        }
        let expires_at = SystemTime::now() + self.options.link_ttl;
        let asked_at = Instant::now();
        let recorded = match self.health.check() {
            Ok(()) => self.health.saw(
                self.outbox
                    .accept(&kept.record(expires_at))
                    .instrument(telemetry::spans::outbox_accept())
                    .await,
            ),
            Err(e) => Err(e),
        };
        match recorded {
            Ok(Accepted::New(claim)) => {
                let hold = self.holdings.hold(claim, asked_at, lost);
                self.track(
                    hold,
                    kept.request_id,
                    kept.trace,
                    ticket,
                    expires_at,
                    running,
                );
                Ok(AutoAnswer::Later(Acceptance::Recorded))
            }
            Ok(Accepted::Duplicate) => {
                running.abort();
                Ok(AutoAnswer::Later(Acceptance::Duplicate))
            }
            Err(e) => {
                // Cannot promise a later answer: give the one we will have.
                tracing::warn!(link = %LinkTag::new(&kept.link),
                    "cannot record an async answer, answering synchronously: {e}");
                Ok(AutoAnswer::Now(joined(running.await)))
            }
        }
    }
}

impl Work {
    /// The record to keep, with the request's trace context.
    fn record(&self, expires_at: SystemTime) -> NewRecord<'_> {
        NewRecord {
            link: &self.link,
            key: &self.key,
            inputs: &self.inputs,
            expires_at,
            request_id: self.request_id.as_str(),
            traceparent: self.trace.0.as_deref(),
            tracestate: self.trace.1.as_deref(),
        }
    }
}
