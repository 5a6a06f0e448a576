//! Closed records are kept for `outbox_retention` (for inspection and to
//! recognise a duplicate), then deleted while the host runs.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio_util::sync::CancellationToken;

use crate::outbox::Outbox;

/// Deletes records closed more than `retention` ago, every so often, until shutdown.
pub async fn prune_while_running(
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
