//! The ring of recent requests: a fixed number of entries, the oldest
//! overwritten first, and an index by request id over exactly the entries in it.
//!
//! Invariants: it never holds more than `capacity` entries, each with at most
//! [`MAX_LOG_LINES`] log lines of at most [`MAX_LOG_BYTES`] in all and
//! [`MAX_ATTEMPTS`] delivery attempts; the index names only entries still in
//! the ring, so both stay bounded whatever the traffic.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

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
}

/// One request as the console shows it.
#[derive(Debug, Clone)]
pub struct Entry {
    pub seq: u64,
    /// When it arrived, on the wall clock.
    pub at: SystemTime,
    pub(super) arrived: Instant,
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
    /// Whether the handler call has started; until then the index routes the call here.
    pub(super) call_started: bool,
    /// The call ended before the answer was known (auto mode racing its budget).
    pub(super) call_done_at: Option<Duration>,
    pub logs: Vec<LogLine>,
    pub(super) log_bytes: usize,
    /// Lines not kept past the caps.
    pub logs_dropped: u32,
    pub attempts: Vec<Attempt>,
    pub attempt_count: u32,
    pub inputs: Option<Box<str>>,
    pub data: Option<Box<str>>,
}

impl Entry {
    pub(super) fn new(seq: u64, id: RequestId, arrived: Instant, at: SystemTime) -> Self {
        Self {
            seq,
            at,
            arrived,
            id,
            key: None,
            plugin: None,
            mode: None,
            resumed: false,
            status: None,
            code: None,
            message: None,
            timings: Timings::default(),
            call_started: false,
            call_done_at: None,
            logs: Vec::new(),
            log_bytes: 0,
            logs_dropped: 0,
            attempts: Vec::new(),
            attempt_count: 0,
            inputs: None,
            data: None,
        }
    }

    /// Keeps a log line within the caps (cut at a character boundary).
    pub(super) fn push_log(&mut self, level: &'static str, text: &str) {
        let room = MAX_LOG_BYTES.saturating_sub(self.log_bytes);
        if self.logs.len() >= MAX_LOG_LINES || room == 0 {
            self.logs_dropped = self.logs_dropped.saturating_add(1);
            return;
        }
        let text = cut(text, room.min(MAX_LOG_LINE));
        self.log_bytes += text.len();
        self.logs.push(LogLine {
            level,
            text: text.into(),
        });
    }

    pub(super) fn push_attempt(&mut self, attempt: Attempt) {
        if self.attempts.len() >= MAX_ATTEMPTS {
            self.attempts.remove(0);
        }
        self.attempts.push(attempt);
        self.attempt_count = self.attempt_count.saturating_add(1);
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
    wall: SystemTime,
}

impl Anchor {
    fn now() -> Self {
        Self {
            instant: Instant::now(),
            wall: SystemTime::now(),
        }
    }

    /// The wall time of `arrived`; the anchor moves when it is over
    /// [`REANCHOR`] old, so a changed system clock shows within a second.
    fn wall_time(&mut self, arrived: Instant) -> SystemTime {
        if arrived.saturating_duration_since(self.instant) > REANCHOR {
            *self = Self::now();
        }
        match arrived.checked_duration_since(self.instant) {
            Some(after) => self.wall + after,
            None => self
                .wall
                .checked_sub(self.instant.duration_since(arrived))
                .unwrap_or(self.wall),
        }
    }
}

/// The entries and the index by request id.
#[derive(Debug)]
pub(super) struct Ring {
    capacity: usize,
    /// Slot `seq % capacity` holds entry `seq`; filled up to `capacity`, then reused.
    slots: Vec<Entry>,
    next_seq: u64,
    by_id: HashMap<RequestId, u64, foldhash::fast::RandomState>,
    anchor: Anchor,
}

impl Ring {
    pub(super) fn new(capacity: usize) -> Self {
        Self {
            capacity,
            slots: Vec::new(),
            next_seq: 0,
            by_id: HashMap::default(),
            anchor: Anchor::now(),
        }
    }

    pub(super) fn capacity(&self) -> usize {
        self.capacity
    }

    /// Adds an entry, overwriting the oldest when full. `None` when it keeps nothing.
    pub(super) fn push(&mut self, id: &RequestId, arrived: Instant) -> Option<&mut Entry> {
        if self.capacity == 0 {
            return None;
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        let at = self.anchor.wall_time(arrived);
        let entry = Entry::new(seq, id.clone(), arrived, at);
        let slot = self.slot_of(seq);
        if slot < self.slots.len() {
            let old = std::mem::replace(&mut self.slots[slot], entry);
            if self.by_id.get(&old.id) == Some(&old.seq) {
                self.by_id.remove(&old.id);
            }
        } else {
            self.slots.push(entry);
        }
        self.by_id.insert(id.clone(), seq);
        self.slots.get_mut(slot)
    }

    fn slot_of(&self, seq: u64) -> usize {
        usize::try_from(seq % self.capacity.max(1) as u64).unwrap_or(0)
    }

    /// The entry a ticket names, if the ring has not moved past it.
    pub(super) fn get_mut(&mut self, ticket: Ticket) -> Option<&mut Entry> {
        if self.capacity == 0 {
            return None;
        }
        let slot = self.slot_of(ticket.0);
        self.slots.get_mut(slot).filter(|e| e.seq == ticket.0)
    }

    /// The latest entry with this request id.
    pub(super) fn by_id(&self, id: &str) -> Option<&Entry> {
        let seq = *self.by_id.get(id)?;
        self.slots.get(self.slot_of(seq)).filter(|e| e.seq == seq)
    }

    pub(super) fn by_id_mut(&mut self, id: &RequestId) -> Option<&mut Entry> {
        let seq = *self.by_id.get(id)?;
        let slot = self.slot_of(seq);
        self.slots.get_mut(slot).filter(|e| e.seq == seq)
    }

    /// The entries, newest first.
    pub(super) fn newest_first(&self) -> impl Iterator<Item = &Entry> {
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

    pub(super) fn index_len(&self) -> usize {
        self.by_id.len()
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
        let before = anchor.wall;
        let earlier = anchor.instant.checked_sub(Duration::from_millis(250));
        if let Some(earlier) = earlier {
            let at = anchor.wall_time(earlier);
            assert_eq!(
                before.duration_since(at).ok(),
                Some(Duration::from_millis(250))
            );
        }
        let later = anchor.instant + Duration::from_millis(400);
        assert_eq!(anchor.wall_time(later), before + Duration::from_millis(400));
        // Past the re-anchoring interval the wall clock is read again, and
        // the arrival is still dated after the anchor by as much.
        let much_later = anchor.instant + REANCHOR + Duration::from_millis(1);
        let at = anchor.wall_time(much_later);
        assert!(at >= before + REANCHOR, "{at:?} is not after {before:?}");
    }

    #[test]
    fn the_ring_keeps_the_newest_and_its_index_only_what_it_holds() {
        let mut ring = Ring::new(3);
        for i in 0..10 {
            ring.push(&id(&format!("r{i}")), Instant::now());
        }
        let ids: Vec<&str> = ring.newest_first().map(|e| e.id.as_str()).collect();
        assert_eq!(ids, ["r9", "r8", "r7"]);
        assert_eq!((ring.len(), ring.index_len()), (3, 3));
        assert!(ring.by_id("r6").is_none());
        assert_eq!(ring.by_id("r8").map(|e| e.seq), Some(8));
        assert!(
            ring.get_mut(Ticket(2)).is_none(),
            "a stale ticket names nothing"
        );
        assert!(ring.get_mut(Ticket(9)).is_some());
        // A repeated id points at its latest entry, and survives the older one's eviction.
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
        let mut entry = Entry::new(0, id("r"), Instant::now(), SystemTime::now());
        for _ in 0..(MAX_LOG_LINES + 10) {
            entry.push_log("info", "short line");
        }
        assert_eq!(entry.logs.len(), MAX_LOG_LINES);
        assert_eq!(entry.logs_dropped, 10);
        let mut entry = Entry::new(0, id("r"), Instant::now(), SystemTime::now());
        let long = "é".repeat(MAX_LOG_LINE);
        for _ in 0..10 {
            entry.push_log("stdout", &long);
        }
        assert!(entry.log_bytes <= MAX_LOG_BYTES);
        assert!(entry.logs.iter().all(|l| l.text.len() <= MAX_LOG_LINE));
        assert!(entry.logs_dropped > 0);
        for i in 0..20 {
            entry.push_attempt(Attempt {
                at: SystemTime::now(),
                outcome: if i == 19 { "delivered" } else { "retry" },
                reason: None,
                next_at: None,
            });
        }
        assert_eq!(entry.attempts.len(), MAX_ATTEMPTS);
        assert_eq!(entry.attempt_count, 20);
        assert_eq!(entry.attempts.last().map(|a| a.outcome), Some("delivered"));
    }
}
