//! What became of finished spans, process-wide (one exporter per process),
//! shown on every host's `/metrics`. The metrics are shared handles: each
//! registry gets a clone of the same counters.

use std::sync::LazyLock;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct Reason {
    reason: &'static str,
}

pub(super) struct Counts {
    pub exported: Counter,
    dropped: Family<Reason, Counter>,
    /// Refused at the gate: the export queue was full (a slow or absent collector).
    pub queue_full: Counter,
    /// Lost with a failed or timed-out export.
    pub export_failed: Counter,
}

pub(super) static COUNTS: LazyLock<Counts> = LazyLock::new(|| {
    let dropped = Family::<Reason, Counter>::default();
    // Both series exist from the start, so a rate is defined at once.
    let queue_full = dropped
        .get_or_create(&Reason {
            reason: "queue_full",
        })
        .clone();
    let export_failed = dropped
        .get_or_create(&Reason {
            reason: "export_failed",
        })
        .clone();
    Counts {
        exported: Counter::default(),
        dropped,
        queue_full,
        export_failed,
    }
});

/// Adds the span counters to a host's registry (prefix `optech`).
pub fn register(registry: &mut Registry) {
    registry.register(
        "trace_spans_exported",
        "Spans the trace collector accepted",
        COUNTS.exported.clone(),
    );
    registry.register(
        "trace_spans_dropped",
        "Spans lost before the trace collector accepted them, by reason: \
         queue_full (the export queue was full: the collector is slow or away) \
         or export_failed (the export failed or timed out)",
        COUNTS.dropped.clone(),
    );
}
