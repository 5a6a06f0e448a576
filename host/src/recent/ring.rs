//! The ring of recent requests: a fixed number of entries, the oldest
//! overwritten first. An entry is found by its own sequence number: a
//! request's events (its call, log lines, delivery attempts) by the ticket
//! it carries, a console page by the number in its URL. A request id is
//! chosen by the caller, so it names nothing for certain; a search by id
//! (the console's filter) walks the ring from the newest entry.
//!
//! Invariants: it never holds more than `capacity` entries, each with at most
//! [`MAX_LOG_LINES`] log lines of at most [`MAX_LOG_BYTES`] in all and
//! [`MAX_ATTEMPTS`] delivery attempts and [`MAX_CALLS`] outbound calls, so it
//! stays bounded whatever the traffic.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use super::Names;
use crate::config::Mode;
use crate::request_id::RequestId;

/// Log lines kept per request; later ones are counted, not kept.
pub const MAX_LOG_LINES: usize = 64;
/// Bytes of log text kept per request.
pub const MAX_LOG_BYTES: usize = 8 * 1024;
/// A longer line is cut to this many bytes.
pub const MAX_LOG_LINE: usize = 2 * 1024;
/// Delivery attempts kept per request (the latest ones).
pub const MAX_ATTEMPTS: usize = 8;
/// Outbound calls kept per request (the first ones); later ones are counted.
pub const MAX_CALLS: usize = 32;
/// Bytes of inputs or data kept per request when payloads are on.
pub const MAX_PAYLOAD: usize = 4 * 1024;

/// Names an entry: its sequence number. Stale once the ring has moved past it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Ticket(pub(super) u64);

/// Where a call's time went. `None` for a part that did not happen (yet).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Timings {
    /// From arrival to the handler call starting: reading, checks, admission,
    /// and for an async request its wait for the background task.
    pub queue: Option<Duration>,
    /// Making a fresh instance (none when one was reused).
    pub instantiate: Option<Duration>,
    /// The plugin's `handle` and the host's work on its answer.
    pub handler: Option<Duration>,
    /// From arrival to the answer: the response (sync) or the result ready to deliver (async).
    pub total: Option<Duration>,
}

/// One line the plugin wrote while serving the request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogLine {
    /// `trace` .. `error` for the log API, `stdout` or `stderr` for output.
    pub level: &'static str,
    pub text: Box<str>,
}

/// One POST of an async answer to its link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attempt {
    pub at: SystemTime,
    /// `delivered`, `retry` or `final`.
    pub outcome: &'static str,
    pub reason: Option<Box<str>>,
    /// When the next attempt is due (retries only).
    pub next_at: Option<SystemTime>,
    /// How long the POST took.
    pub took: Option<Duration>,
}

/// One outbound request the plugin made while serving the request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboundCall {
    /// When it started, counted from the request's arrival.
    pub start: Duration,
    pub took: Duration,
    /// `GET host:port`: never the path or the query, which may hold inputs.
    pub label: Box<str>,
    /// The status, or why there is none (`denied`, `timeout`, `error`).
    pub outcome: Result<u16, &'static str>,
}

/// One request as the console shows it: a copy made when a page reads the ring.
#[derive(Debug, Clone)]
pub struct Entry {
    pub seq: u64,
    /// When it arrived, on the wall clock (to the microsecond).
    pub at: SystemTime,
    pub id: RequestId,
    pub key: Option<Arc<str>>,
    pub plugin: Option<Arc<str>>,
    pub mode: Option<Mode>,
    /// Re-run from the outbox (an earlier run or another replica accepted it).
    pub resumed: bool,
    /// The HTTP status answered; `None` while it runs (or for a resumed run).
    pub status: Option<u16>,
    /// The answer's error code, or for an async request its handler's.
    pub code: Option<&'static str>,
    /// The error's message (known secret values redacted).
    pub message: Option<Box<str>>,
    pub timings: Timings,
    pub logs: Vec<LogLine>,
    /// Lines not kept past the caps.
    pub logs_dropped: u32,
    pub attempts: Vec<Attempt>,
    pub attempt_count: u32,
    pub calls: Vec<OutboundCall>,
    /// Calls not kept past [`MAX_CALLS`].
    pub calls_dropped: u32,
    /// The OpenTelemetry trace the request is in, when tracing is on.
    pub trace_id: Option<Box<str>>,
    pub inputs: Option<Box<str>>,
    pub data: Option<Box<str>>,
}

/// A duration in four bytes: whole microseconds, saturating a little under
/// 72 minutes (the console shows no longer call); `NONE` when absent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Micros(u32);

impl Micros {
    pub(super) const NONE: Self = Self(u32::MAX);

    pub(super) fn of(duration: Duration) -> Self {
        Self(u32::try_from(duration.as_micros()).map_or(u32::MAX - 1, |us| us.min(u32::MAX - 1)))
    }

    pub(super) fn get(self) -> Option<Duration> {
        (self != Self::NONE).then(|| Duration::from_micros(self.0.into()))
    }
}

/// One request as the ring keeps it. Every request writes one, so it is
/// kept to two cache lines: with a thousand of them the ring is far larger
/// than the caches, and each line a request touches is a miss. What only some
/// requests have (an error message, log lines, delivery attempts, payloads)
/// lives behind `more`, allocated when the first of it comes.
#[derive(Debug)]
#[repr(align(64))]
pub(super) struct Slot {
    pub(super) seq: u64,
    pub(super) arrived: Instant,
    /// The wall clock at arrival, in microseconds since the Unix epoch.
    pub(super) at_us: u64,
    pub(super) id: RequestId,
    /// Its key and plugin, shared with every request of the same route.
    pub(super) names: Option<Arc<Names>>,
    pub(super) code: Option<&'static str>,
    pub(super) queue: Micros,
    pub(super) instantiate: Micros,
    pub(super) handler: Micros,
    pub(super) total: Micros,
    /// The call ended, counted from arrival, before the answer was known
    /// (auto mode racing its budget, or an async call beating its 202).
    pub(super) call_done: Micros,
    /// The HTTP status answered; 0 while it runs (or for a resumed run).
    pub(super) status: u16,
    pub(super) mode: Option<Mode>,
    pub(super) resumed: bool,
    more: Option<Box<More>>,
}

const _: () = assert!(
    std::mem::size_of::<Slot>() == 128,
    "a slot is two cache lines"
);

/// The parts of an entry only some requests have.
#[derive(Debug, Default)]
struct More {
    message: Option<Box<str>>,
    logs: Vec<LogLine>,
    log_bytes: usize,
    logs_dropped: u32,
    attempts: Vec<Attempt>,
    attempt_count: u32,
    calls: Vec<OutboundCall>,
    calls_dropped: u32,
    trace_id: Option<Box<str>>,
    inputs: Option<Box<str>>,
    data: Option<Box<str>>,
}

impl Slot {
    fn new(seq: u64, id: RequestId, arrived: Instant, at_us: u64) -> Self {
        Self {
            seq,
            arrived,
            at_us,
            id,
            names: None,
            code: None,
            queue: Micros::NONE,
            instantiate: Micros::NONE,
            handler: Micros::NONE,
            total: Micros::NONE,
            call_done: Micros::NONE,
            status: 0,
            mode: None,
            resumed: false,
            more: None,
        }
    }

    fn more(&mut self) -> &mut More {
        self.more.get_or_insert_default()
    }

    pub(super) fn key(&self) -> Option<&Arc<str>> {
        self.names.as_ref().map(|n| &n.key)
    }

    pub(super) fn status(&self) -> Option<u16> {
        (self.status != 0).then_some(self.status)
    }

    pub(super) fn at(&self) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_micros(self.at_us)
    }

    pub(super) fn has_message(&self) -> bool {
        self.more.as_ref().is_some_and(|m| m.message.is_some())
    }

    pub(super) fn set_message(&mut self, message: Box<str>) {
        self.more().message = Some(message);
    }

    pub(super) fn set_inputs(&mut self, inputs: Box<str>) {
        self.more().inputs = Some(inputs);
    }

    pub(super) fn set_data(&mut self, data: Box<str>) {
        self.more().data = Some(data);
    }

    /// Keeps a log line within the caps (cut at a character boundary).
    pub(super) fn push_log(&mut self, level: &'static str, text: &str) {
        let more = self.more();
        let room = MAX_LOG_BYTES.saturating_sub(more.log_bytes);
        if more.logs.len() >= MAX_LOG_LINES || room == 0 {
            more.logs_dropped = more.logs_dropped.saturating_add(1);
            return;
        }
        let text = cut(text, room.min(MAX_LOG_LINE));
        more.log_bytes += text.len();
        more.logs.push(LogLine {
            level,
            text: text.into(),
        });
    }

    pub(super) fn push_call(&mut self, call: OutboundCall) {
        let more = self.more();
        if more.calls.len() >= MAX_CALLS {
            more.calls_dropped = more.calls_dropped.saturating_add(1);
            return;
        }
        more.calls.push(call);
    }

    pub(super) fn set_trace_id(&mut self, trace_id: Box<str>) {
        self.more().trace_id = Some(trace_id);
    }

    pub(super) fn arrived(&self) -> Instant {
        self.arrived
    }

    pub(super) fn push_attempt(&mut self, attempt: Attempt) {
        let more = self.more();
        if more.attempts.len() >= MAX_ATTEMPTS {
            more.attempts.remove(0);
        }
        more.attempts.push(attempt);
        more.attempt_count = more.attempt_count.saturating_add(1);
    }

    /// The copy a page shows.
    pub(super) fn entry(&self) -> Entry {
        let more = self.more.as_deref();
        Entry {
            seq: self.seq,
            at: self.at(),
            id: self.id.clone(),
            key: self.names.as_ref().map(|n| n.key.clone()),
            plugin: self.names.as_ref().map(|n| n.plugin.clone()),
            mode: self.mode,
            resumed: self.resumed,
            status: self.status(),
            code: self.code,
            message: more.and_then(|m| m.message.clone()),
            timings: Timings {
                queue: self.queue.get(),
                instantiate: self.instantiate.get(),
                handler: self.handler.get(),
                total: self.total.get(),
            },
            logs: more.map(|m| m.logs.clone()).unwrap_or_default(),
            logs_dropped: more.map_or(0, |m| m.logs_dropped),
            attempts: more.map(|m| m.attempts.clone()).unwrap_or_default(),
            attempt_count: more.map_or(0, |m| m.attempt_count),
            calls: more.map(|m| m.calls.clone()).unwrap_or_default(),
            calls_dropped: more.map_or(0, |m| m.calls_dropped),
            trace_id: more.and_then(|m| m.trace_id.clone()),
            inputs: more.and_then(|m| m.inputs.clone()),
            data: more.and_then(|m| m.data.clone()),
        }
    }
}

/// `text` cut to at most `max` bytes, at a character boundary.
pub fn cut(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// How often the wall clock is read again to date entries: between two
/// reads, an arrival's wall time is the last read plus the monotonic time since.
const REANCHOR: Duration = Duration::from_secs(1);

/// An `Instant` and the wall time it was, so dating an entry reads no clock.
#[derive(Debug, Clone, Copy)]
struct Anchor {
    instant: Instant,
    /// Microseconds since the Unix epoch (0 for a clock set before it).
    wall_us: u64,
}

impl Anchor {
    fn now() -> Self {
        let wall = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default();
        Self {
            instant: Instant::now(),
            wall_us: u64::try_from(wall.as_micros()).unwrap_or(u64::MAX),
        }
    }

    /// The wall time of `arrived`, in microseconds since the epoch; the
    /// anchor moves when it is over [`REANCHOR`] old, so a changed system
    /// clock shows within a second.
    fn wall_us(&mut self, arrived: Instant) -> u64 {
        let mut after = arrived.checked_duration_since(self.instant);
        if after.is_some_and(|after| after > REANCHOR) {
            *self = Self::now();
            after = arrived.checked_duration_since(self.instant);
        }
        let micros = |d: Duration| u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        match after {
            Some(after) => self.wall_us.saturating_add(micros(after)),
            None => self
                .wall_us
                .saturating_sub(micros(self.instant.duration_since(arrived))),
        }
    }
}

/// The entries, in slots reused oldest first.
#[derive(Debug)]
pub(super) struct Ring {
    capacity: usize,
    /// Slot `seq % capacity` holds entry `seq`; filled up to `capacity`, then reused.
    slots: Vec<Slot>,
    next_seq: u64,
    anchor: Anchor,
}

impl Ring {
    pub(super) fn new(capacity: usize) -> Self {
        Self {
            capacity,
            slots: Vec::new(),
            next_seq: 0,
            anchor: Anchor::now(),
        }
    }

    pub(super) fn capacity(&self) -> usize {
        self.capacity
    }

    /// Adds an entry, overwriting the oldest when full. `None` when it keeps nothing.
    pub(super) fn push(&mut self, id: &RequestId, arrived: Instant) -> Option<&mut Slot> {
        if self.capacity == 0 {
            return None;
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        let at_us = self.anchor.wall_us(arrived);
        let entry = Slot::new(seq, id.clone(), arrived, at_us);
        let slot = self.slot_of(seq);
        match self.slots.get_mut(slot) {
            Some(old) => *old = entry,
            None => self.slots.push(entry),
        }
        self.slots.get_mut(slot)
    }

    fn slot_of(&self, seq: u64) -> usize {
        usize::try_from(seq % self.capacity.max(1) as u64).unwrap_or(0)
    }

    /// The entry a ticket names, if the ring has not moved past it.
    pub(super) fn get_mut(&mut self, ticket: Ticket) -> Option<&mut Slot> {
        if self.capacity == 0 {
            return None;
        }
        let slot = self.slot_of(ticket.0);
        self.slots.get_mut(slot).filter(|e| e.seq == ticket.0)
    }

    /// The entry numbered `seq`, if the ring has not moved past it.
    pub(super) fn get(&self, seq: u64) -> Option<&Slot> {
        if self.capacity == 0 {
            return None;
        }
        self.slots.get(self.slot_of(seq)).filter(|e| e.seq == seq)
    }

    /// The latest entry with this request id.
    pub(super) fn by_id(&self, id: &str) -> Option<&Slot> {
        self.newest_first().find(|e| e.id.as_str() == id)
    }

    /// The entries, newest first.
    pub(super) fn newest_first(&self) -> impl Iterator<Item = &Slot> {
        let len = self.slots.len() as u64;
        let newest = self.next_seq;
        (0..len).filter_map(move |back| {
            let seq = newest.checked_sub(back + 1)?;
            self.slots.get(self.slot_of(seq)).filter(|e| e.seq == seq)
        })
    }

    pub(super) fn len(&self) -> usize {
        self.slots.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(text: &str) -> RequestId {
        RequestId::parse(text.as_bytes()).unwrap()
    }

    #[test]
    fn an_entry_is_dated_by_the_wall_clock_without_reading_it() {
        let mut anchor = Anchor::now();
        let before = anchor.wall_us;
        if let Some(earlier) = anchor.instant.checked_sub(Duration::from_millis(250)) {
            assert_eq!(anchor.wall_us(earlier), before - 250_000);
        }
        let later = anchor.instant + Duration::from_millis(400);
        assert_eq!(anchor.wall_us(later), before + 400_000);
        // Past the re-anchoring interval the wall clock is read again, and
        // the arrival is still dated after the anchor by as much.
        let much_later = anchor.instant + REANCHOR + Duration::from_millis(1);
        let at = anchor.wall_us(much_later);
        assert!(at >= before + 1_000_000, "{at} is not after {before}");
    }

    #[test]
    fn a_duration_keeps_its_microseconds_and_saturates() {
        let d = Duration::from_micros(1_234_567);
        assert_eq!(Micros::of(d).get(), Some(d));
        assert_eq!(
            Micros::of(Duration::from_nanos(1_999)).get(),
            Some(Duration::from_micros(1))
        );
        let long = Micros::of(Duration::from_secs(10 * 3600)).get();
        assert_eq!(long, Some(Duration::from_micros(u64::from(u32::MAX - 1))));
        assert_eq!(Micros::NONE.get(), None);
    }

    #[test]
    fn the_ring_keeps_the_newest_and_its_index_only_what_it_holds() {
        let mut ring = Ring::new(3);
        for i in 0..10 {
            ring.push(&id(&format!("r{i}")), Instant::now());
        }
        let ids: Vec<&str> = ring.newest_first().map(|e| e.id.as_str()).collect();
        assert_eq!(ids, ["r9", "r8", "r7"]);
        assert_eq!(ring.len(), 3);
        assert!(ring.by_id("r6").is_none());
        assert_eq!(ring.by_id("r8").map(|e| e.seq), Some(8));
        assert!(
            ring.get_mut(Ticket(2)).is_none(),
            "a stale ticket names nothing"
        );
        assert!(ring.get_mut(Ticket(9)).is_some());
        assert_eq!(ring.get(8).map(|e| e.id.as_str()), Some("r8"));
        assert!(ring.get(6).is_none() && ring.get(10).is_none());
        // A repeated id finds its latest entry, and still does after the older one's eviction.
        ring.push(&id("r9"), Instant::now());
        for i in 10..12 {
            ring.push(&id(&format!("r{i}")), Instant::now());
        }
        assert_eq!(ring.by_id("r9").map(|e| e.seq), Some(10));
        let mut off = Ring::new(0);
        assert!(off.push(&id("x"), Instant::now()).is_none());
        assert_eq!(off.newest_first().count(), 0);
    }

    #[test]
    fn logs_and_attempts_are_capped() {
        let mut slot = Slot::new(0, id("r"), Instant::now(), 0);
        for _ in 0..(MAX_LOG_LINES + 10) {
            slot.push_log("info", "short line");
        }
        let entry = slot.entry();
        assert_eq!(entry.logs.len(), MAX_LOG_LINES);
        assert_eq!(entry.logs_dropped, 10);
        let mut slot = Slot::new(0, id("r"), Instant::now(), 0);
        let long = "é".repeat(MAX_LOG_LINE);
        for _ in 0..10 {
            slot.push_log("stdout", &long);
        }
        let entry = slot.entry();
        let bytes: usize = entry.logs.iter().map(|l| l.text.len()).sum();
        assert!(bytes <= MAX_LOG_BYTES);
        assert!(entry.logs.iter().all(|l| l.text.len() <= MAX_LOG_LINE));
        assert!(entry.logs_dropped > 0);
        for i in 0..20 {
            slot.push_attempt(Attempt {
                at: SystemTime::now(),
                outcome: if i == 19 { "delivered" } else { "retry" },
                reason: None,
                next_at: None,
                took: None,
            });
        }
        let entry = slot.entry();
        assert_eq!(entry.attempts.len(), MAX_ATTEMPTS);
        assert_eq!(entry.attempt_count, 20);
        assert_eq!(entry.attempts.last().map(|a| a.outcome), Some("delivered"));
        for i in 0..40 {
            slot.push_call(OutboundCall {
                start: Duration::from_millis(i),
                took: Duration::from_millis(1),
                label: "GET example.com:443".into(),
                outcome: Ok(200),
            });
        }
        let entry = slot.entry();
        assert_eq!(entry.calls.len(), MAX_CALLS, "the first ones are kept");
        assert_eq!(entry.calls[0].start, Duration::ZERO);
        assert_eq!(entry.calls_dropped, 40 - MAX_CALLS as u32);
    }

    #[test]
    fn a_plain_request_allocates_nothing_beyond_its_slot() {
        let mut ring = Ring::new(2);
        let slot = ring.push(&id("r"), Instant::now()).unwrap();
        slot.status = 200;
        slot.queue = Micros::of(Duration::from_micros(5));
        assert!(slot.more.is_none());
        slot.push_log("info", "a line");
        assert!(slot.more.is_some());
    }
}
