//! What every instance of one plugin shares, made once at load: its name,
//! config, limits, egress, redactor, console ring, store grant and store
//! counters. The instance state (`host_api`) and the store calls (`keyvalue`)
//! read it; `plugin` makes it.

use std::collections::BTreeMap;
use std::sync::Arc;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::histogram::Histogram;

use crate::config::ConfigValue;
use crate::metrics::{Metrics, StoreCallLabels};
use crate::outbound::PluginEgress;
use crate::recent::Recent;
use crate::redact::Redactor;
use crate::store::Grant;

/// What every instance of one plugin shares.
pub(super) struct PluginInfo {
    pub name: Arc<str>,
    pub config: BTreeMap<String, ConfigValue>,
    pub memory: u64,
    pub egress: Arc<PluginEgress>,
    /// Its secrets, kept out of its log lines, output and error messages.
    pub redactor: Redactor,
    /// Where each call's log lines are kept for the console.
    pub recent: Arc<Recent>,
    /// The key-value buckets its `stores` grant.
    pub grant: Grant,
    pub store_meter: StoreMeter,
}

/// One plugin's store counters, made once at load.
pub(super) struct StoreMeter {
    pub(super) ok: Counter,
    pub(super) refused: Counter,
    pub(super) unavailable: Counter,
    pub(super) seconds: Histogram,
}

impl StoreMeter {
    pub(super) fn new(metrics: &Metrics, plugin: &str) -> Self {
        let outcome = |outcome| {
            metrics.store_calls.get_or_create_owned(&StoreCallLabels {
                plugin: plugin.into(),
                outcome,
            })
        };
        Self {
            ok: outcome("ok"),
            refused: outcome("refused"),
            unavailable: outcome("unavailable"),
            seconds: metrics
                .store_call_seconds
                .get_or_create_owned(&Metrics::plugin(plugin)),
        }
    }
}
