//! What the host saw recently, for the admin console: a ring of the last
//! requests (each with its timings, the plugin's log lines, its delivery
//! attempts and, if asked for, its inputs and data) and 15 minutes of chart
//! buckets. In memory only, one per host, held by [`crate::metrics::Metrics`]
//! so that the server, `Plugin::run`, the runtime and delivery all reach it.
//!
//! Recording is on the request path, so a request that logs nothing and
//! answers without error costs three short critical sections (admitted, call
//! finished, answered), no heap allocation and no clock read but the answer's:
//! keys and plugin names come shared from the routing table and the plugin,
//! ids are shared, timings are computed from instants the callers already
//! took, and the ring keeps no index that every request would have to update.
//!
//! Invariants: memory is bounded by `console_requests` and the config, never
//! by the traffic (see `ring` and `charts`); text kept from a plugin (log
//! lines, error messages, payloads) has the plugin's known secret values
//! replaced by `[redacted]`; with `console_requests = 0` nothing is kept and
//! every hook returns at once.

mod charts;
mod ring;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

pub use charts::{BUCKET, BUCKETS, CODES, ChartData};
pub use ring::{
    Attempt, Entry, LogLine, MAX_ATTEMPTS, MAX_CALLS, MAX_LOG_BYTES, MAX_LOG_LINES, MAX_PAYLOAD,
    OutboundCall, Ticket, Timings,
};

use crate::config::Mode;
use crate::redact::Redactor;
use crate::request_id::RequestId;
use charts::Charts;
use ring::{Micros, Ring, Slot, cut};

/// The chart series (and the metrics' `key` label) of requests refused before
/// routing.
pub const NO_KEY: &str = "(none)";

/// The console's memory of recent requests. Cheap to call when it keeps nothing.
pub struct Recent {
    capacity: AtomicUsize,
    payloads: AtomicBool,
    inner: Mutex<Inner>,
}

struct Inner {
    ring: Ring,
    charts: Charts,
    /// Bumped on every change, so a page can ask "anything new?" (under the
    /// lock a change takes anyway: no second shared write per change).
    version: u64,
    /// The chart series of requests refused before routing.
    no_key: Arc<str>,
    /// Requests refused before their signature was checked, by error code:
    /// counted, never kept (anyone can send them). A handful of fixed codes.
    refused: Vec<(&'static str, u64)>,
}

impl Default for Recent {
    fn default() -> Self {
        Self::new(crate::config::DEFAULT_CONSOLE_REQUESTS, false)
    }
}

impl std::fmt::Debug for Recent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Recent")
            .field("capacity", &self.capacity.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

/// The names a request is recorded under: its key and its plugin's. The
/// routing table makes them once per route and hands them to each request,
/// so an entry holds one shared pointer for both.
#[derive(Debug)]
pub struct Names {
    pub key: Arc<str>,
    pub plugin: Arc<str>,
}

/// A filter over the ring, as the Requests page takes it.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    /// The key, exactly.
    pub key: Option<String>,
    /// `2xx`, `4xx`, `5xx`, a status like `400`, or `running`.
    pub status: Option<String>,
    /// Part of a request id.
    pub id: Option<String>,
}

impl Filter {
    fn matches(&self, entry: &Slot) -> bool {
        if let Some(key) = self.key.as_deref().filter(|k| !k.is_empty())
            && entry.key().map(|k| &**k) != Some(key)
        {
            return false;
        }
        if let Some(id) = self.id.as_deref().map(str::trim).filter(|i| !i.is_empty())
            && !entry.id.as_str().contains(id)
        {
            return false;
        }
        match self
            .status
            .as_deref()
            .map(str::trim)
            .filter(|s| !s.is_empty())
        {
            None => true,
            Some("running") => entry.status().is_none(),
            Some(class) if class.len() == 3 && class.ends_with("xx") => entry
                .status()
                .is_some_and(|s| s / 100 == u16::from(class.as_bytes()[0].wrapping_sub(b'0'))),
            Some(exact) => entry.status().is_some_and(|s| exact.parse() == Ok(s)),
        }
    }
}

impl Recent {
    pub fn new(capacity: usize, payloads: bool) -> Self {
        Self {
            capacity: AtomicUsize::new(capacity),
            payloads: AtomicBool::new(payloads),
            inner: Mutex::new(Inner {
                ring: Ring::new(capacity),
                charts: Charts::default(),
                version: 0,
                no_key: NO_KEY.into(),
                refused: Vec::new(),
            }),
        }
    }

    /// Sets how many requests to keep and whether to keep payloads; called once
    /// at start-up, before any request (what was kept is dropped).
    pub fn configure(&self, capacity: usize, payloads: bool) {
        let mut inner = self.lock();
        if inner.ring.capacity() != capacity {
            inner.ring = Ring::new(capacity);
        }
        self.capacity.store(capacity, Ordering::Relaxed);
        self.payloads.store(payloads, Ordering::Relaxed);
    }

    /// Whether it keeps anything.
    pub fn enabled(&self) -> bool {
        self.capacity.load(Ordering::Relaxed) > 0
    }

    /// Whether inputs and data are kept.
    pub fn payloads(&self) -> bool {
        self.enabled() && self.payloads.load(Ordering::Relaxed)
    }

    pub fn capacity(&self) -> usize {
        self.capacity.load(Ordering::Relaxed)
    }

    /// Changes since start: equal numbers mean nothing new to show.
    pub fn version(&self) -> u64 {
        self.lock().version
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The server admitted a request routed to `names`: it runs next, and
    /// its ticket travels with the work to the call.
    pub fn admitted(
        &self,
        id: &RequestId,
        arrived: Instant,
        names: &Arc<Names>,
        mode: Mode,
    ) -> Option<Ticket> {
        if !self.enabled() {
            return None;
        }
        let mut inner = self.lock();
        let ticket = inner.enter(id, arrived, names.clone(), mode)?.0;
        inner.version += 1;
        Some(ticket)
    }

    /// A handler call starts for work the server did not admit here (resumed
    /// from the outbox: an earlier run or another replica accepted it).
    pub fn call_started(
        &self,
        id: &RequestId,
        key: &str,
        plugin: &Arc<str>,
        mode: Mode,
    ) -> Option<Ticket> {
        if !self.enabled() {
            return None;
        }
        let mut inner = self.lock();
        let names = Arc::new(Names {
            key: key.into(),
            plugin: plugin.clone(),
        });
        let (ticket, entry) = inner.enter(id, Instant::now(), names, mode)?;
        entry.resumed = true;
        entry.queue = Micros::of(Duration::ZERO);
        inner.version += 1;
        Some(ticket)
    }

    /// A fresh instance was made for the call, taking `took`.
    pub fn instantiated(&self, ticket: Option<Ticket>, took: Duration) {
        let Some(ticket) = ticket else { return };
        if let Some(entry) = self.lock().ring.get_mut(ticket) {
            entry.instantiate = Micros::of(took);
        }
    }

    /// A line the plugin logged (`level`) or printed (`stdout`, `stderr`),
    /// already redacted: the same text went to the host log.
    pub fn log(&self, ticket: Option<Ticket>, level: &'static str, text: &str) {
        let Some(ticket) = ticket else { return };
        let mut inner = self.lock();
        if let Some(entry) = inner.ring.get_mut(ticket) {
            entry.push_log(level, text);
            inner.version += 1;
        }
    }

    /// The request's inputs, when payloads are kept.
    pub fn inputs(&self, ticket: Option<Ticket>, inputs: &[(String, String)], redactor: &Redactor) {
        let Some(ticket) = ticket.filter(|_| self.payloads()) else {
            return;
        };
        let text = serde_json::to_string(&inputs.iter().collect::<Vec<_>>()).unwrap_or_default();
        let text = redactor.redact_json(&text);
        if let Some(entry) = self.lock().ring.get_mut(ticket) {
            entry.set_inputs(cut(&text, MAX_PAYLOAD).into());
        }
    }

    /// The call that `started` ended after `took` (instantiation included),
    /// with its answer's body or its error.
    pub fn call_finished(
        &self,
        ticket: Option<Ticket>,
        started: Instant,
        took: Duration,
        result: Result<&[u8], (&'static str, &dyn std::fmt::Display)>,
        redactor: &Redactor,
    ) {
        let Some(ticket) = ticket else { return };
        let message = match &result {
            Err((_, error)) => Some(redactor.redact(&error.to_string()).into_owned()),
            Ok(_) => None,
        };
        let data = match result {
            Ok(body) if self.payloads() => {
                let text = String::from_utf8_lossy(body);
                Some(redactor.redact_json(&text).into_owned())
            }
            _ => None,
        };
        let mut inner = self.lock();
        let Inner {
            ring,
            charts,
            version,
            ..
        } = &mut *inner;
        let Some(entry) = ring.get_mut(ticket) else {
            return;
        };
        *version += 1;
        let queue = started.saturating_duration_since(entry.arrived);
        if !entry.resumed {
            entry.queue = Micros::of(queue);
        }
        entry.handler =
            Micros::of(took.saturating_sub(entry.instantiate.get().unwrap_or_default()));
        if let Err((code, _)) = result {
            entry.code = Some(code);
            if let Some(message) = message {
                entry.set_message(message.into_boxed_str());
            }
        }
        if let Some(data) = data {
            entry.set_data(cut(&data, MAX_PAYLOAD).into());
        }
        let since_arrival = queue + took;
        match entry.status() {
            // Answered 202 already: the result is ready to deliver now.
            Some(202) => {
                entry.total = Micros::of(since_arrival);
                if let Some(key) = entry.key() {
                    charts.latency(key, unix_secs(entry.at_us), since_arrival);
                }
                if let Some(code) = entry.code {
                    charts.error(code, unix_secs(now_us()));
                }
            }
            // Not answered yet (auto mode racing its budget, or an async
            // request whose 202 is still on its way): the answer decides.
            None if !entry.resumed => entry.call_done = Micros::of(since_arrival),
            _ => {
                if entry.resumed {
                    entry.total = Micros::of(since_arrival);
                }
            }
        }
    }

    /// The server answered: `status`, and the error's code and message. A
    /// request refused before admission (`ticket` is `None`) gets its entry now.
    pub fn answered(
        &self,
        ticket: Option<Ticket>,
        id: &RequestId,
        arrived: Instant,
        status: u16,
        error: Option<(&'static str, &str)>,
    ) {
        if !self.enabled() {
            return;
        }
        let mut inner = self.lock();
        let Inner {
            ring,
            charts,
            version,
            no_key,
            ..
        } = &mut *inner;
        let entry = match ticket {
            Some(ticket) => ring.get_mut(ticket),
            // Refused before admission: its entry is made now.
            None => ring.push(id, arrived),
        };
        let Some(entry) = entry else { return };
        *version += 1;
        entry.status = status;
        let took = arrived.elapsed();
        entry.total = if status == 202 {
            entry.call_done
        } else {
            Micros::of(took)
        };
        if let Some((code, message)) = error {
            entry.code = Some(code);
            if !entry.has_message() {
                entry.set_message(message.into());
            }
        }
        let at = unix_secs(entry.at_us);
        charts.count(entry.key().unwrap_or(no_key), at, entry.total.get());
        // A 202's handler error counts when the handler ends, unless it already has.
        if (status != 202 || entry.call_done != Micros::NONE)
            && let Some(code) = entry.code
        {
            charts.error(code, at);
        }
    }

    /// A request refused before its signature was checked (`code`): counted in the charts and by code, but given no entry, so
    /// anonymous traffic never pushes a real request out of the ring.
    pub fn refused(&self, arrived: Instant, code: &'static str) {
        if !self.enabled() {
            return;
        }
        let took = arrived.elapsed();
        let at = unix_secs(now_us());
        let mut inner = self.lock();
        // The version is not bumped: the list does not change, so a flood of
        // refusals makes no open Requests page render its rows again.
        let Inner {
            charts,
            no_key,
            refused,
            ..
        } = &mut *inner;
        charts.count(no_key, at, Some(took));
        charts.error(code, at);
        match refused.iter_mut().find(|(c, _)| *c == code) {
            Some((_, n)) => *n += 1,
            None => refused.push((code, 1)),
        }
    }

    /// Requests refused before their signature was checked, by code, since start.
    pub fn refusals(&self) -> Vec<(&'static str, u64)> {
        self.lock().refused.clone()
    }

    /// One POST of an async answer to its link, for the entry `ticket` names;
    /// `next` is the wait before the next one (retries only).
    pub fn delivery(
        &self,
        ticket: Option<Ticket>,
        outcome: &'static str,
        reason: Option<&str>,
        next: Option<Duration>,
        took: Duration,
    ) {
        let Some(ticket) = ticket else { return };
        let now = SystemTime::now();
        let mut inner = self.lock();
        if let Some(entry) = inner.ring.get_mut(ticket) {
            entry.push_attempt(Attempt {
                at: now.checked_sub(took).unwrap_or(now),
                outcome,
                reason: reason.map(Into::into),
                next_at: next.map(|d| now + d),
                took: Some(took),
            });
            inner.version += 1;
        }
    }

    /// An outbound request the plugin made for the entry `ticket` names,
    /// from `started` for `took`.
    pub fn outbound(
        &self,
        ticket: Option<Ticket>,
        started: Instant,
        took: Duration,
        label: &str,
        outcome: Result<u16, &'static str>,
    ) {
        let Some(ticket) = ticket else { return };
        let mut inner = self.lock();
        if let Some(entry) = inner.ring.get_mut(ticket) {
            let start = started.saturating_duration_since(entry.arrived());
            entry.push_call(OutboundCall {
                start,
                took,
                label: label.into(),
                outcome,
            });
            inner.version += 1;
        }
    }

    /// The OpenTelemetry trace of the entry `ticket` names (tracing on).
    pub fn traced(&self, ticket: Option<Ticket>, trace_id: &str) {
        let Some(ticket) = ticket else { return };
        if let Some(entry) = self.lock().ring.get_mut(ticket) {
            entry.set_trace_id(trace_id.into());
        }
    }

    /// The newest entries that match, at most `limit`, newest first.
    pub fn list(&self, filter: &Filter, limit: usize) -> Vec<Entry> {
        self.lock()
            .ring
            .newest_first()
            .filter(|e| filter.matches(e))
            .take(limit)
            .map(Slot::entry)
            .collect()
    }

    /// The entry numbered `seq` (as a console page's URL names it).
    pub fn get(&self, seq: u64) -> Option<Entry> {
        self.lock().ring.get(seq).map(Slot::entry)
    }

    /// The newest entry with this request id: for ids the host made itself
    /// (the console's "Send"). Any other id is the caller's choice and may
    /// name several entries; pages link entries by number.
    pub fn find(&self, id: &str) -> Option<Entry> {
        self.lock().ring.by_id(id).map(Slot::entry)
    }

    /// The charts' data for the last 15 minutes.
    pub fn charts(&self) -> ChartData {
        self.lock().charts.data(SystemTime::now())
    }

    /// Entries held (for tests of the bounds).
    pub fn held(&self) -> usize {
        self.lock().ring.len()
    }
}

impl Inner {
    /// A new entry for a request to `plugin` under `key`, and its ticket.
    fn enter(
        &mut self,
        id: &RequestId,
        arrived: Instant,
        names: Arc<Names>,
        mode: Mode,
    ) -> Option<(Ticket, &mut Slot)> {
        let entry = self.ring.push(id, arrived)?;
        entry.names = Some(names);
        entry.mode = Some(mode);
        Some((Ticket(entry.seq), entry))
    }
}

/// Seconds since the Unix epoch of a time in microseconds since it.
fn unix_secs(us: u64) -> u64 {
    us / 1_000_000
}

/// The wall clock now, in microseconds since the Unix epoch.
fn now_us() -> u64 {
    let since = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default();
    u64::try_from(since.as_micros()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(text: &str) -> RequestId {
        RequestId::parse(text.as_bytes()).unwrap()
    }

    fn shared(text: &str) -> Arc<str> {
        text.into()
    }

    fn names(key: &str, plugin: &str) -> Arc<Names> {
        Arc::new(Names {
            key: key.into(),
            plugin: plugin.into(),
        })
    }

    #[test]
    fn a_sync_request_is_admitted_run_and_answered() {
        let recent = Recent::new(10, false);
        let arrived = Instant::now();
        let call = recent.admitted(&id("r1"), arrived, &names("echo", "echo"), Mode::Sync);
        let started = Instant::now();
        recent.instantiated(call, Duration::from_millis(2));
        recent.log(call, "info", "token is [redacted]");
        recent.call_finished(
            call,
            started,
            Duration::from_millis(5),
            Ok(b"{}"),
            &Redactor::default(),
        );
        recent.answered(call, &id("r1"), arrived, 200, None);
        assert_eq!(
            recent.version(),
            4,
            "admitted, a log line, finished, answered"
        );
        let entry = recent.find("r1").unwrap();
        assert_eq!(recent.get(entry.seq).map(|e| e.id), Some(id("r1")));
        assert_eq!(entry.status, Some(200));
        assert_eq!(entry.key.as_deref(), Some("echo"));
        assert!(!entry.resumed);
        assert_eq!(entry.timings.instantiate, Some(Duration::from_millis(2)));
        assert_eq!(entry.timings.handler, Some(Duration::from_millis(3)));
        assert_eq!(
            entry.timings.queue,
            Micros::of(started.duration_since(arrived)).get(),
            "from arrival to the call, no clock read"
        );
        assert!(
            entry.timings.total >= entry.timings.queue,
            "the answer's own clock read"
        );
        assert_eq!(&*entry.logs[0].text, "token is [redacted]");
        assert!(
            entry.inputs.is_none() && entry.data.is_none(),
            "payloads are off"
        );
        let charts = recent.charts();
        assert_eq!(charts.keys[0].key, "echo");
    }

    #[test]
    fn an_async_request_keeps_its_handler_error_and_deliveries() {
        let recent = Recent::new(10, true);
        let arrived = Instant::now();
        let call = recent.admitted(&id("a1"), arrived, &names("slow", "testkit"), Mode::Async);
        recent.answered(call, &id("a1"), arrived, 202, None);
        recent.inputs(call, &[("x".into(), "1".into())], &Redactor::default());
        let failure = "the back end is down";
        recent.call_finished(
            call,
            Instant::now(),
            Duration::from_millis(1),
            Err(("plugin_error", &failure)),
            &Redactor::default(),
        );
        recent.delivery(
            call,
            "retry",
            Some("503"),
            Some(Duration::from_secs(1)),
            Duration::from_millis(3),
        );
        recent.delivery(call, "delivered", None, None, Duration::from_millis(2));
        let entry = recent.find("a1").unwrap();
        assert_eq!(
            (entry.status, entry.code),
            (Some(202), Some("plugin_error"))
        );
        assert_eq!(entry.message.as_deref(), Some(failure));
        assert_eq!(entry.inputs.as_deref(), Some(r#"[["x","1"]]"#));
        assert_eq!(entry.attempts.len(), 2);
        assert!(entry.attempts[0].next_at.is_some());
        assert!(entry.timings.total.is_some());
        let errors = recent.charts().errors;
        assert_eq!(errors[0].code, "plugin_error");
    }

    #[test]
    fn resumed_work_and_refusals_get_entries_and_filters_find_them() {
        let recent = Recent::new(10, false);
        let call = recent.call_started(&id("old"), "k", &shared("p"), Mode::Async);
        recent.call_finished(
            call,
            Instant::now(),
            Duration::from_millis(1),
            Ok(b"{}"),
            &Redactor::default(),
        );
        recent.answered(
            None,
            &id("bad"),
            Instant::now(),
            401,
            Some(("invalid_signature", "no")),
        );
        let old = recent.find("old").unwrap();
        assert!(old.resumed);
        assert_eq!(old.timings.queue, Some(Duration::ZERO));
        let refused = recent.find("bad").unwrap();
        assert_eq!((refused.status, refused.key.as_deref()), (Some(401), None));
        let find = |key: Option<&str>, status: Option<&str>, id: Option<&str>| {
            let filter = Filter {
                key: key.map(Into::into),
                status: status.map(Into::into),
                id: id.map(Into::into),
            };
            recent
                .list(&filter, 10)
                .iter()
                .map(|e| e.id.to_string())
                .collect::<Vec<_>>()
        };
        assert_eq!(find(None, None, None), ["bad", "old"]);
        assert_eq!(find(Some("k"), None, None), ["old"]);
        assert_eq!(find(None, Some("4xx"), None), ["bad"]);
        assert_eq!(find(None, Some("401"), None), ["bad"]);
        assert_eq!(find(None, Some("running"), None), ["old"]);
        assert_eq!(find(None, None, Some("ol")), ["old"]);
    }

    #[test]
    fn unsigned_refusals_are_counted_and_never_push_an_entry_out() {
        let recent = Recent::new(2, false);
        let arrived = Instant::now();
        let call = recent.admitted(&id("real"), arrived, &names("k", "p"), Mode::Async);
        recent.answered(call, &id("real"), arrived, 202, None);
        for _ in 0..1_000 {
            recent.refused(Instant::now(), "invalid_signature");
        }
        recent.refused(Instant::now(), "body_too_large");
        assert_eq!(recent.held(), 1, "no entry for an unsigned request");
        assert_eq!(
            recent.refusals(),
            [("invalid_signature", 1_000), ("body_too_large", 1)]
        );
        // A later request with the same id (a forged one) does not take over
        // the first one's deliveries: they follow the ticket.
        let forged = recent.admitted(&id("real"), Instant::now(), &names("k", "p"), Mode::Sync);
        recent.delivery(call, "delivered", None, None, Duration::from_millis(2));
        let first = recent.get(call.map(|t| t.0).unwrap()).unwrap();
        let second = recent.get(forged.map(|t| t.0).unwrap()).unwrap();
        assert_eq!((first.attempts.len(), second.attempts.len()), (1, 0));
        let charts = recent.charts();
        assert!(
            charts.errors.iter().any(|e| e.code == "invalid_signature"),
            "refusals are in the charts"
        );
    }

    #[test]
    fn off_keeps_nothing() {
        let recent = Recent::new(0, true);
        assert!(!recent.enabled() && !recent.payloads());
        let arrived = Instant::now();
        assert!(
            recent
                .admitted(&id("r"), arrived, &names("k", "p"), Mode::Sync)
                .is_none()
        );
        assert!(
            recent
                .call_started(&id("r"), "k", &shared("p"), Mode::Sync)
                .is_none()
        );
        recent.answered(None, &id("r"), arrived, 200, None);
        recent.refused(arrived, "invalid_signature");
        assert!(recent.find("r").is_none());
        assert!(recent.refusals().is_empty());
        assert_eq!(recent.version(), 0);
    }
}
