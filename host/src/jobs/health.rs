//! Whether the outbox can record right now, told truthfully while it cannot.
//!
//! Invariants: a failed write marks the outbox down at once and a write or a
//! probe that succeeds marks it up; while it is down, new async requests are
//! refused at once (503) instead of waiting on a dead database, `/readyz`
//! says 503 wherever async plugins are mapped, and a probe runs every
//! [`PROBE_DOWN`] so the host takes work again as soon as the database is
//! back, without a restart. Metrics never wait on the database: the outbox's
//! gauges are the last values read.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::outbox::{OpenStats, Outbox, OutboxError};

/// How often the outbox is probed while it works, and while it does not.
pub const PROBE_UP: Duration = Duration::from_secs(2);
pub const PROBE_DOWN: Duration = Duration::from_millis(250);
/// How long a metrics scrape waits for fresh outbox figures.
pub const STATS_WAIT: Duration = Duration::from_millis(300);

/// The outbox's state as the host last saw it.
#[derive(Default)]
pub struct OutboxHealth {
    down: AtomicBool,
    /// Why it is down.
    reason: Mutex<Option<String>>,
    stats: Mutex<Option<OpenStats>>,
}

impl OutboxHealth {
    /// Whether the last write (or probe) succeeded.
    pub fn is_up(&self) -> bool {
        !self.down.load(Ordering::Acquire)
    }

    /// Why the outbox is down, if it is.
    pub fn reason(&self) -> Option<String> {
        if self.is_up() {
            return None;
        }
        self.reason
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Notes how a write (or probe) went; returns the result unchanged.
    pub fn saw<T>(&self, result: Result<T, OutboxError>) -> Result<T, OutboxError> {
        match &result {
            Ok(_) => self.up(),
            Err(e) => self.failed(e),
        }
        result
    }

    fn up(&self) {
        if self.down.swap(false, Ordering::AcqRel) {
            tracing::info!("the outbox records again");
        }
    }

    fn failed(&self, error: &OutboxError) {
        *self.reason.lock().unwrap_or_else(|p| p.into_inner()) = Some(error.to_string());
        if !self.down.swap(true, Ordering::AcqRel) {
            tracing::error!(
                "the outbox cannot record: {error}; async requests get 503 until it can"
            );
        }
    }

    /// Refuses at once while the outbox is down.
    pub fn check(&self) -> Result<(), OutboxError> {
        match self.reason() {
            Some(reason) => Err(OutboxError::Unavailable(reason)),
            None => Ok(()),
        }
    }

    /// The outbox's figures: fresh if they come within [`STATS_WAIT`], else the
    /// last ones read (`None` before any).
    pub async fn stats(&self, outbox: &dyn Outbox) -> Option<OpenStats> {
        if self.is_up()
            && let Ok(Ok(stats)) = tokio::time::timeout(STATS_WAIT, outbox.open_stats()).await
        {
            *self.stats.lock().unwrap_or_else(|p| p.into_inner()) = Some(stats);
        }
        *self.stats.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Probes the outbox, often while it is down, until `stop`.
pub async fn probe_while_running(
    outbox: Arc<dyn Outbox>,
    health: Arc<OutboxHealth>,
    stop: CancellationToken,
) {
    loop {
        let every = if health.is_up() { PROBE_UP } else { PROBE_DOWN };
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = stop.cancelled() => return,
        }
        let probed = tokio::time::timeout(PROBE_UP, outbox.probe())
            .await
            .unwrap_or_else(|_| {
                Err(OutboxError::Unavailable(format!(
                    "the probe took more than {PROBE_UP:?}"
                )))
            });
        let _ = health.saw(probed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failure_marks_it_down_until_a_success() {
        let health = OutboxHealth::default();
        assert!(health.is_up() && health.check().is_ok());
        let _ = health.saw::<()>(Err(OutboxError::Postgres("connection refused".into())));
        assert!(!health.is_up());
        let refused = health.check().unwrap_err().to_string();
        assert!(refused.contains("connection refused"), "{refused}");
        let _ = health.saw(Ok(()));
        assert!(health.is_up() && health.reason().is_none());
    }
}
