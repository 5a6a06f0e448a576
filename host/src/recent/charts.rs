//! The console's charts: requests, latency and errors over the last 15
//! minutes, in 5-second buckets kept in memory (never scraped from `/metrics`).
//!
//! Invariants: a key has a fixed-size series (its buckets are reused as time
//! moves on), keys are only those that routed to a plugin (plus `(none)`), and
//! error codes are a fixed set, so memory is bounded by the config, not the traffic.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde::Serialize;

/// Width of one bucket.
pub const BUCKET: Duration = Duration::from_secs(5);
/// Buckets kept: 15 minutes.
pub const BUCKETS: usize = 180;
/// Latency bins: each power of two from [`FLOOR_US`] up cut in four equal
/// parts (as HDR histograms do: integer arithmetic only, at most 25% wide).
const BINS: usize = 112;
const FLOOR_US: u64 = 16;

/// The error codes the charts tell apart; anything else counts as `other`.
pub const CODES: &[&str] = &[
    "invalid_signature",
    "invalid_request",
    "unknown_key",
    "link_required",
    "invalid_input",
    "plugin_error",
    "plugin_trapped",
    "plugin_timeout",
    "output_too_large",
    "overloaded",
    "store_unavailable",
    "body_too_large",
    "unsupported_media_type",
    "method_not_allowed",
    "unreadable_body",
    "body_timeout",
    "busy",
    "host_not_allowed",
    "not_found",
    "other",
];

fn code_index(code: &str) -> usize {
    CODES
        .iter()
        .position(|c| *c == code)
        .unwrap_or(CODES.len() - 1)
}

/// The bucket a moment falls in, counted from the epoch.
fn bucket_of(at: SystemTime) -> u64 {
    bucket_of_secs(
        at.duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs(),
    )
}

/// The bucket of a moment given in seconds since the Unix epoch.
fn bucket_of_secs(at_s: u64) -> u64 {
    at_s / BUCKET.as_secs()
}

fn bin_of(latency: Duration) -> usize {
    let us = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
    if us <= FLOOR_US {
        return 0;
    }
    // `us` is in [2^octave, 2^(octave + 1)); its next two bits pick the quarter.
    let octave = u64::from(us.ilog2());
    let quarter = (us >> (octave - 2)) & 3;
    let bin = 4 * (octave - u64::from(FLOOR_US.ilog2())) + quarter;
    usize::try_from(bin).map_or(BINS - 1, |bin| bin.min(BINS - 1))
}

/// The middle of a bin, in milliseconds.
fn bin_ms(bin: usize) -> f64 {
    let octave = FLOOR_US as f64 * 2f64.powi((bin / 4) as i32);
    octave * (1.0 + ((bin % 4) as f64 + 0.5) / 4.0) / 1000.0
}

/// One key's buckets.
struct Series {
    /// The bucket number each slot holds now; a slot with an old number is empty.
    ids: Box<[u64; BUCKETS]>,
    counts: Box<[u32; BUCKETS]>,
    latency: Box<[[u32; BINS]; BUCKETS]>,
}

impl Series {
    fn new() -> Self {
        Self {
            ids: Box::new([u64::MAX; BUCKETS]),
            counts: Box::new([0; BUCKETS]),
            latency: Box::new([[0; BINS]; BUCKETS]),
        }
    }

    fn slot(&mut self, bucket: u64) -> usize {
        let slot = (bucket % BUCKETS as u64) as usize;
        if self.ids[slot] != bucket {
            self.ids[slot] = bucket;
            self.counts[slot] = 0;
            self.latency[slot] = [0; BINS];
        }
        slot
    }

    fn percentile(&self, slot: usize, q: f64) -> Option<f64> {
        let bins = &self.latency[slot];
        let total: u64 = bins.iter().map(|&n| u64::from(n)).sum();
        if total == 0 {
            return None;
        }
        let rank = ((total as f64) * q).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (bin, &n) in bins.iter().enumerate() {
            seen += u64::from(n);
            if seen >= rank {
                return Some(bin_ms(bin));
            }
        }
        None
    }
}

/// All series, and errors by code.
pub(super) struct Charts {
    keys: HashMap<Arc<str>, Series, foldhash::fast::RandomState>,
    error_ids: Box<[u64; BUCKETS]>,
    errors: Box<[[u32; CODES.len()]; BUCKETS]>,
}

impl Default for Charts {
    fn default() -> Self {
        Self {
            keys: HashMap::default(),
            error_ids: Box::new([u64::MAX; BUCKETS]),
            errors: Box::new([[0; CODES.len()]; BUCKETS]),
        }
    }
}

/// What the charts page draws: one point per bucket, oldest first.
#[derive(Debug, Serialize)]
pub struct ChartData {
    /// Bucket starts, in unix seconds.
    pub t: Vec<u64>,
    pub bucket_seconds: u64,
    pub keys: Vec<KeyChart>,
    pub errors: Vec<ErrorChart>,
}

#[derive(Debug, Serialize)]
pub struct KeyChart {
    pub key: String,
    /// Requests per second over the bucket.
    pub rps: Vec<f64>,
    /// Milliseconds; `null` where the bucket had no request.
    pub p50: Vec<Option<f64>>,
    pub p99: Vec<Option<f64>>,
}

#[derive(Debug, Serialize)]
pub struct ErrorChart {
    pub code: &'static str,
    pub counts: Vec<u32>,
}

impl Charts {
    /// Counts one answer that arrived at `at_s` (Unix seconds): under its
    /// key, with its latency when it has one.
    pub(super) fn count(&mut self, key: &Arc<str>, at_s: u64, latency: Option<Duration>) {
        let bucket = bucket_of_secs(at_s);
        let series = match self.keys.get_mut(&**key) {
            Some(series) => series,
            None => self.keys.entry(key.clone()).or_insert_with(Series::new),
        };
        let slot = series.slot(bucket);
        series.counts[slot] = series.counts[slot].saturating_add(1);
        if let Some(latency) = latency {
            let bin = bin_of(latency);
            series.latency[slot][bin] = series.latency[slot][bin].saturating_add(1);
        }
    }

    /// Adds a latency to a request counted before (an async one, finished later).
    pub(super) fn latency(&mut self, key: &str, at_s: u64, latency: Duration) {
        let bucket = bucket_of_secs(at_s);
        if let Some(series) = self.keys.get_mut(key) {
            let slot = series.slot(bucket);
            let bin = bin_of(latency);
            series.latency[slot][bin] = series.latency[slot][bin].saturating_add(1);
        }
    }

    pub(super) fn error(&mut self, code: &str, at_s: u64) {
        let bucket = bucket_of_secs(at_s);
        let slot = (bucket % BUCKETS as u64) as usize;
        if self.error_ids[slot] != bucket {
            self.error_ids[slot] = bucket;
            self.errors[slot] = [0; CODES.len()];
        }
        let i = code_index(code);
        self.errors[slot][i] = self.errors[slot][i].saturating_add(1);
    }

    /// The last 15 minutes up to `now`; a key or code with nothing in them is left out.
    pub(super) fn data(&mut self, now: SystemTime) -> ChartData {
        let last = bucket_of(now);
        let first = last.saturating_sub(BUCKETS as u64 - 1);
        let buckets: Vec<u64> = (first..=last).collect();
        // The current bucket is partial: rates over the part that has passed.
        let into_last = now
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs_f64()
            - (last * BUCKET.as_secs()) as f64;
        let width = |b: u64| {
            if b == last {
                into_last.max(1.0)
            } else {
                BUCKET.as_secs_f64()
            }
        };
        self.keys
            .retain(|_, s| s.ids.iter().any(|&id| id != u64::MAX && id >= first));
        let mut keys: Vec<KeyChart> = self
            .keys
            .iter()
            .map(|(key, series)| {
                let mut chart = KeyChart {
                    key: key.to_string(),
                    rps: Vec::with_capacity(BUCKETS),
                    p50: Vec::with_capacity(BUCKETS),
                    p99: Vec::with_capacity(BUCKETS),
                };
                for &b in &buckets {
                    let slot = (b % BUCKETS as u64) as usize;
                    if series.ids[slot] == b {
                        chart.rps.push(f64::from(series.counts[slot]) / width(b));
                        chart.p50.push(series.percentile(slot, 0.5));
                        chart.p99.push(series.percentile(slot, 0.99));
                    } else {
                        chart.rps.push(0.0);
                        chart.p50.push(None);
                        chart.p99.push(None);
                    }
                }
                chart
            })
            .collect();
        keys.sort_by(|a, b| a.key.cmp(&b.key));
        let errors = CODES
            .iter()
            .enumerate()
            .map(|(i, &code)| ErrorChart {
                code,
                counts: buckets
                    .iter()
                    .map(|&b| {
                        let slot = (b % BUCKETS as u64) as usize;
                        if self.error_ids[slot] == b {
                            self.errors[slot][i]
                        } else {
                            0
                        }
                    })
                    .collect(),
            })
            .filter(|e| e.counts.iter().any(|&n| n > 0))
            .collect();
        ChartData {
            t: buckets.iter().map(|b| b * BUCKET.as_secs()).collect(),
            bucket_seconds: BUCKET.as_secs(),
            keys,
            errors,
        }
    }

    #[cfg(test)]
    pub(super) fn key_count(&self) -> usize {
        self.keys.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_percentiles_and_errors_come_out_per_bucket() {
        let mut charts = Charts::default();
        let now = SystemTime::now();
        let now_s = now
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let key: Arc<str> = "echo".into();
        for i in 0..100u64 {
            charts.count(&key, now_s, Some(Duration::from_millis(1 + i / 50 * 99)));
        }
        charts.error("plugin_error", now_s);
        charts.error("made_up", now_s);
        let data = charts.data(now);
        assert_eq!(data.t.len(), BUCKETS);
        let echo = &data.keys[0];
        assert_eq!(echo.key, "echo");
        let p50 = echo.p50.last().copied().flatten().unwrap();
        let p99 = echo.p99.last().copied().flatten().unwrap();
        assert!((0.9..1.2).contains(&p50), "{p50}");
        assert!((90.0..115.0).contains(&p99), "{p99}");
        assert!(echo.rps.last().copied().unwrap() > 0.0);
        assert!(echo.p50[0].is_none());
        let codes: Vec<&str> = data.errors.iter().map(|e| e.code).collect();
        assert_eq!(codes, ["plugin_error", "other"]);
    }

    #[test]
    fn old_buckets_are_reused_and_quiet_keys_dropped() {
        let mut charts = Charts::default();
        let now = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap();
        let then = now.as_secs() - 3600;
        let key: Arc<str> = "old".into();
        charts.count(&key, then, None);
        charts.error("plugin_error", then);
        let data = charts.data(SystemTime::now());
        assert!(data.keys.is_empty() && data.errors.is_empty());
        assert_eq!(charts.key_count(), 0);
        assert_eq!(bin_of(Duration::from_secs(100_000)), BINS - 1);
        assert_eq!(bin_of(Duration::ZERO), 0);
    }

    #[test]
    fn a_bin_holds_the_latencies_around_its_middle() {
        for us in [
            17u64,
            31,
            100,
            999,
            1_000,
            1_001,
            65_536,
            3_000_000,
            2_000_000_000,
        ] {
            let latency = Duration::from_micros(us);
            let middle = bin_ms(bin_of(latency)) * 1000.0;
            let error = (middle - us as f64).abs() / us as f64;
            assert!(error <= 0.125, "{us} us is in the bin around {middle} us");
            assert!(bin_of(latency) <= bin_of(latency + Duration::from_micros(1)));
        }
    }
}
