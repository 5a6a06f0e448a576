//! Every metric the host keeps, in one registry, with its name and labels in
//! one place. Served by the admin listener at `GET /metrics`.
//!
//! Invariants: names follow Prometheus conventions (`optech_` prefix, `_total`
//! on counters, `_seconds` for times); a label value is never an input, a link
//! or a secret: `key` and `plugin` take only values the config names (a
//! request that matched no key counts as `key="(none)"`), every other label
//! has a fixed set of values. So no series set grows without bound.

use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};

pub use crate::recent::NO_KEY;
use crate::recent::Recent;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub key: String,
    /// `2xx`, `4xx` or `5xx`.
    pub status_class: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PluginLabels {
    pub plugin: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CauseLabels {
    /// `host` (its in-flight cap), `plugin` (the plugin's cap), `instances`
    /// (no instance slot), `store` (the outbox could not record).
    pub cause: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    pub reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutboundLabels {
    pub plugin: String,
    /// `response` (any status), `denied`, `timeout` or `error`.
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StoreCallLabels {
    pub plugin: String,
    /// `ok`, `refused` (a grant or a limit: the plugin's doing) or
    /// `unavailable` (the database, or the request's deadline).
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RegistryLabels {
    pub plugin: String,
    /// Fetches: `pulled`, `cached`, `unchanged`, `offline`. Errors: a
    /// `registry::RegistryError` kind (`unreachable`, `timeout`, ...).
    pub outcome: &'static str,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

fn handler_buckets() -> Histogram {
    // 0.5 ms to about 33 s.
    Histogram::new(exponential_buckets(0.0005, 2.0, 17))
}

fn store_buckets() -> Histogram {
    // 5 µs to about 5 s.
    Histogram::new(exponential_buckets(0.000005, 2.0, 21))
}

fn instantiation_buckets() -> Histogram {
    // 10 µs to about 0.3 s.
    Histogram::new(exponential_buckets(0.00001, 2.0, 16))
}

/// One host's metrics.
pub struct Metrics {
    registry: Registry,
    /// Data requests answered, by key and status class.
    pub requests: Family<RequestLabels, Counter>,
    /// Time of whole handler calls (instantiation, running, the host's work on the answer).
    pub handler_seconds: HistogramFamily<PluginLabels>,
    /// Time to make a fresh instance.
    pub instantiation_seconds: HistogramFamily<PluginLabels>,
    /// `503` answers, by cause.
    pub unavailable: Family<CauseLabels, Counter>,
    /// Async answers whose delivery ended, by outcome: `delivered`, `failed`, `expired`.
    pub deliveries: Family<OutcomeLabels, Counter>,
    /// Delivery attempts, by result: `delivered`, `retry`, `final`.
    pub delivery_attempts: Family<OutcomeLabels, Counter>,
    /// Open records in the outbox (set when scraped).
    pub outbox_open: Gauge,
    /// Age of the oldest open record, in seconds (set when scraped).
    pub outbox_oldest_age: Gauge<f64, AtomicU64>,
    /// Claims on outbox records this host holds now (set when scraped).
    pub outbox_claims_held: Gauge,
    /// 1 while the outbox can record, 0 while it cannot (set when scraped).
    pub outbox_up: Gauge,
    /// Reloads of the config and plugin files, by result: `ok`, `failed`.
    pub reloads: Family<OutcomeLabels, Counter>,
    /// Plugins fetched from a registry, by plugin and how: `pulled` (the
    /// layer downloaded), `cached` (already here), `unchanged` (a refresh
    /// found the same digest), `offline` (registry unreachable, the cached
    /// digest served).
    pub registry_fetches: Family<RegistryLabels, Counter>,
    /// Failed registry fetches and refreshes, by plugin and kind; the
    /// version serving keeps serving.
    pub registry_errors: Family<RegistryLabels, Counter>,
    /// Reloads of the TLS certificate and key, by result: `ok`, `failed` (a
    /// failed renewal keeps the old certificate until it expires: alert on it).
    pub tls_reloads: Family<OutcomeLabels, Counter>,
    /// Requests running now, over the whole host (set when scraped).
    pub in_flight: Gauge,
    /// Calls running now, by plugin (set when scraped).
    pub plugin_in_flight: Family<PluginLabels, Gauge>,
    /// Plugins' outbound HTTP requests, by plugin and outcome.
    pub outbound: Family<OutboundLabels, Counter>,
    /// The public listener's open connections, and those it refused or
    /// closed before they finished a request.
    pub connections: ConnectionCounters,
    /// Body bytes read from requests whose signature is not yet checked.
    pub unverified_body_bytes: Gauge,
    /// Plugins' key-value store calls, by plugin and outcome.
    pub store_calls: Family<StoreCallLabels, Counter>,
    /// Time of store calls as the plugin waits on them, by plugin.
    pub store_call_seconds: HistogramFamily<PluginLabels>,
    /// Freed pool slots kept warm for the next instance (set when scraped).
    pub pool_warm_slots: Gauge,
    /// Bytes those warm slots keep resident, memories and tables (set when scraped).
    pub pool_warm_bytes: Gauge,
    /// Not exported: the admin console's memory of recent requests. Kept here
    /// because everything that counts a request already holds this struct.
    pub recent: Arc<Recent>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("optech");
        let requests = Family::default();
        registry.register(
            "requests",
            "Data requests answered, by key and status class",
            requests.clone(),
        );
        let handler_seconds: HistogramFamily<PluginLabels> =
            Family::new_with_constructor(handler_buckets);
        registry.register_with_unit(
            "handler_duration",
            "Time of whole handler calls, by plugin",
            Unit::Seconds,
            handler_seconds.clone(),
        );
        let instantiation_seconds: HistogramFamily<PluginLabels> =
            Family::new_with_constructor(instantiation_buckets);
        registry.register_with_unit(
            "instantiation_duration",
            "Time to make a fresh plugin instance, by plugin",
            Unit::Seconds,
            instantiation_seconds.clone(),
        );
        let unavailable = Family::default();
        registry.register(
            "unavailable",
            "503 answers, by cause: host, plugin, instances, store",
            unavailable.clone(),
        );
        let deliveries = Family::default();
        registry.register(
            "deliveries",
            "Async answers whose delivery ended, by outcome: delivered, failed, expired",
            deliveries.clone(),
        );
        let delivery_attempts = Family::default();
        registry.register(
            "delivery_attempts",
            "Delivery attempts, by result: delivered, retry, final",
            delivery_attempts.clone(),
        );
        let outbox_open = Gauge::default();
        registry.register(
            "outbox_open_records",
            "Async requests recorded and not yet closed",
            outbox_open.clone(),
        );
        let outbox_oldest_age = Gauge::<f64, AtomicU64>::default();
        registry.register_with_unit(
            "outbox_oldest_open_age",
            "Age of the oldest open record in the outbox",
            Unit::Seconds,
            outbox_oldest_age.clone(),
        );
        let outbox_claims_held = Gauge::default();
        registry.register(
            "outbox_claims_held",
            "Claims on outbox records this host holds now (running, recording or delivering)",
            outbox_claims_held.clone(),
        );
        let outbox_up = Gauge::default();
        registry.register(
            "outbox_up",
            "1 while the outbox can record, 0 while it cannot (async requests get 503)",
            outbox_up.clone(),
        );
        let reloads = Family::default();
        registry.register(
            "reloads",
            "Reloads of the config and plugin files, by result: ok, failed",
            reloads.clone(),
        );
        let registry_fetches = Family::default();
        registry.register(
            "registry_fetches",
            "Plugins fetched from an OCI registry, by plugin and outcome: pulled, cached, unchanged, offline",
            registry_fetches.clone(),
        );
        let registry_errors = Family::default();
        registry.register(
            "registry_errors",
            "Failed registry fetches and refreshes, by plugin and kind (the version serving keeps serving)",
            registry_errors.clone(),
        );
        let tls_reloads = Family::default();
        registry.register(
            "tls_reloads",
            "Reloads of the TLS certificate and key files, by result: ok, failed",
            tls_reloads.clone(),
        );
        let in_flight = Gauge::default();
        registry.register(
            "in_flight_requests",
            "Requests running now, over the whole host",
            in_flight.clone(),
        );
        let plugin_in_flight = Family::default();
        registry.register(
            "plugin_in_flight_calls",
            "Handler calls running now, by plugin",
            plugin_in_flight.clone(),
        );
        let outbound = Family::default();
        registry.register(
            "outbound_requests",
            "Plugins' outbound HTTP requests, by plugin and outcome: response, denied, timeout, error",
            outbound.clone(),
        );
        let connections = ConnectionCounters::default();
        registry.register(
            "connections_open",
            "Connections open now on the public listener",
            connections.open.clone(),
        );
        registry.register(
            "connections_closed",
            "Connections the public listener refused or closed early, by reason: \
             max_connections, header_timeout, tls_handshake, send_timeout",
            connections.closed.clone(),
        );
        let unverified_body_bytes = Gauge::default();
        registry.register_with_unit(
            "unverified_body",
            "Body bytes read from requests whose signature is not yet checked, \
             held against server.max_unverified",
            Unit::Bytes,
            unverified_body_bytes.clone(),
        );
        let store_calls = Family::default();
        registry.register(
            "store_calls",
            "Plugins' key-value store calls, by plugin and outcome: ok, refused (a grant \
             or a limit), unavailable (the database or the request's deadline)",
            store_calls.clone(),
        );
        let store_call_seconds: HistogramFamily<PluginLabels> =
            Family::new_with_constructor(store_buckets);
        registry.register_with_unit(
            "store_call_duration",
            "Time of plugins' key-value store calls, by plugin",
            Unit::Seconds,
            store_call_seconds.clone(),
        );
        let pool_warm_slots = Gauge::default();
        registry.register(
            "pool_warm_slots",
            "Freed instance slots kept warm (image mapped, touched pages reset in \
             place) for the next instance, at most 64",
            pool_warm_slots.clone(),
        );
        let pool_warm_bytes = Gauge::default();
        registry.register_with_unit(
            "pool_warm",
            "Memory the warm slots keep resident for the next instance, each \
             memory at most server.keep_resident",
            Unit::Bytes,
            pool_warm_bytes.clone(),
        );
        crate::telemetry::register(&mut registry);
        // Series with a fixed set of label values start at zero, so a rate is
        // defined from the first scrape and an absent series means a typo.
        for cause in ["host", "plugin", "instances", "store"] {
            let _ = unavailable.get_or_create(&CauseLabels { cause });
        }
        for outcome in ["delivered", "failed", "expired"] {
            let _ = deliveries.get_or_create(&OutcomeLabels { outcome });
        }
        for outcome in ["delivered", "retry", "final"] {
            let _ = delivery_attempts.get_or_create(&OutcomeLabels { outcome });
        }
        for reason in [
            "max_connections",
            "header_timeout",
            "tls_handshake",
            "send_timeout",
        ] {
            let _ = connections.closed.get_or_create(&ReasonLabels { reason });
        }
        for outcome in ["ok", "failed"] {
            let _ = reloads.get_or_create(&OutcomeLabels { outcome });
            let _ = tls_reloads.get_or_create(&OutcomeLabels { outcome });
        }
        Self {
            registry,
            requests,
            handler_seconds,
            instantiation_seconds,
            unavailable,
            deliveries,
            delivery_attempts,
            outbox_open,
            outbox_oldest_age,
            outbox_claims_held,
            outbox_up,
            reloads,
            registry_fetches,
            registry_errors,
            tls_reloads,
            in_flight,
            plugin_in_flight,
            outbound,
            connections,
            unverified_body_bytes,
            store_calls,
            store_call_seconds,
            pool_warm_slots,
            pool_warm_bytes,
            recent: Arc::default(),
        }
    }

    /// Counts one answered data request.
    pub fn request(&self, key: Option<&str>, status: u16) {
        let status_class = match status {
            200..=299 => "2xx",
            300..=399 => "3xx",
            400..=499 => "4xx",
            _ => "5xx",
        };
        self.requests
            .get_or_create(&RequestLabels {
                key: key.unwrap_or(NO_KEY).to_string(),
                status_class,
            })
            .inc();
    }

    pub fn plugin(plugin: &str) -> PluginLabels {
        PluginLabels {
            plugin: plugin.to_string(),
        }
    }

    /// Counts a `503`.
    pub fn unavailable(&self, cause: &'static str) {
        self.unavailable.get_or_create(&CauseLabels { cause }).inc();
    }

    /// The registry in the text exposition format.
    pub fn encode(&self) -> Result<String, std::fmt::Error> {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry)?;
        Ok(text)
    }
}

/// Where a listener counts its connections (`server::listener`).
#[derive(Clone, Default, Debug)]
pub struct ConnectionCounters {
    /// Connections open now.
    pub open: Gauge,
    /// Connections refused or closed early, by reason: `max_connections`,
    /// `header_timeout`, `tls_handshake`, `send_timeout`.
    pub closed: Family<ReasonLabels, Counter>,
}

impl ConnectionCounters {
    pub fn count(&self, reason: &'static str) {
        self.closed.get_or_create(&ReasonLabels { reason }).inc();
    }
}

/// Shared by everything that counts.
pub type SharedMetrics = Arc<Metrics>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_prometheus_conventions() {
        let metrics = Metrics::new();
        metrics.request(Some("echo"), 200);
        metrics.request(None, 401);
        metrics
            .handler_seconds
            .get_or_create(&Metrics::plugin("echo"))
            .observe(0.002);
        let text = metrics.encode().unwrap();
        assert!(
            text.contains(r#"optech_requests_total{key="echo",status_class="2xx"} 1"#),
            "{text}"
        );
        assert!(
            text.contains(r#"optech_requests_total{key="(none)",status_class="4xx"} 1"#),
            "{text}"
        );
        assert!(
            text.contains("optech_handler_duration_seconds_bucket"),
            "{text}"
        );
        assert!(
            text.contains("optech_handler_duration_seconds_count{plugin=\"echo\"} 1"),
            "{text}"
        );
    }
}
