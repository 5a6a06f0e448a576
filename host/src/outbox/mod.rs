//! The durable record of accepted async requests, behind one trait so that
//! `jobs` does not know which database keeps it.
//!
//! A request answered `202` is a promise: the answer reaches `link` unless the
//! link expires first. Invariants every backend keeps:
//! - a request is recorded (durably) before its `202` is sent;
//! - its result is recorded before the first delivery attempt;
//! - a record is closed only when delivery succeeds, fails finally, or the link expires;
//! - `link` is the primary key, so a request seen twice is run once;
//! - work is held through a [`Claim`]: a result or a close is accepted only
//!   from the claim's current holder (a fencing token), so a holder that lost
//!   its claim can never overwrite newer work;
//! - a row that cannot be read is quarantined (logged, kept, never resumed),
//!   so one bad row never stops the host.
//!
//! Synchronous answers are never recorded.

mod postgres;
mod sqlite;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use thiserror::Error;

use crate::protocol::Fields;

pub use postgres::PostgresOutbox;
pub use sqlite::SqliteOutbox;

#[derive(Debug, Error)]
pub enum OutboxError {
    #[error("outbox database {path}: {source}")]
    Open {
        path: PathBuf,
        source: rusqlite::Error,
    },
    #[error("cannot create the data directory {path}: {source}")]
    DataDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "{path} is locked: another optech process uses this data directory; give each host its own `data_dir`"
    )]
    Locked { path: PathBuf },
    #[error("outbox database: {0}")]
    Sql(#[from] rusqlite::Error),
    #[error("outbox task failed: {0}")]
    Task(String),
    #[error("outbox (PostgreSQL): {0}")]
    Postgres(String),
    /// The last write failed and no probe has succeeded since: fail fast
    /// instead of waiting on a database that is down.
    #[error("the outbox cannot record right now: {0}")]
    Unavailable(String),
}

/// Where a record stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Recorded, `202` sent, no result yet.
    Accepted,
    /// The result is recorded; delivery is under way.
    Answered,
    Delivered,
    /// Delivery failed finally (a 4xx other than 408/429).
    Failed,
    /// The link expired before the answer got through.
    Expired,
    /// The row could not be read; it is kept for an operator and never resumed.
    Quarantined,
}

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Accepted => "accepted",
            Self::Answered => "answered",
            Self::Delivered => "delivered",
            Self::Failed => "failed",
            Self::Expired => "expired",
            Self::Quarantined => "quarantined",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Some(match text {
            "accepted" => Self::Accepted,
            "answered" => Self::Answered,
            "delivered" => Self::Delivered,
            "failed" => Self::Failed,
            "expired" => Self::Expired,
            "quarantined" => Self::Quarantined,
            _ => return None,
        })
    }
}

/// The right to work on one record: its link and which claim on it this is.
/// A later claim (another holder, or this one after a restart) has a larger token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claim {
    pub link: String,
    pub token: i64,
}

/// What recording a request came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Accepted {
    /// Recorded now; the caller holds it.
    New(Claim),
    /// The link was recorded before: do not run it again.
    Duplicate,
}

/// A request to record.
#[derive(Debug, Clone, Copy)]
pub struct NewRecord<'a> {
    pub link: &'a str,
    pub key: &'a str,
    pub inputs: &'a Fields,
    pub expires_at: SystemTime,
    /// Its id, so the answer delivered later carries the same one.
    pub request_id: &'a str,
    /// The W3C `traceparent` of the request's trace, so its delivery joins
    /// that trace wherever and whenever it runs (after a restart, or on
    /// another replica); `None` when tracing is off.
    pub traceparent: Option<&'a str>,
    /// The W3C `tracestate` that goes with [`traceparent`](Self::traceparent);
    /// `None` when there is none or tracing is off.
    pub tracestate: Option<&'a str>,
}

/// An open record no live holder has, now claimed by the caller to finish.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stale {
    pub claim: Claim,
    /// The id the request came with (`None` for a record made before ids were kept).
    pub request_id: Option<String>,
    /// The W3C `traceparent` of the request's trace, for the delivery to join
    /// (`None` for a record made before trace contexts were kept, or with
    /// tracing off).
    pub traceparent: Option<String>,
    /// The W3C `tracestate` recorded with it (`None` likewise).
    pub tracestate: Option<String>,
    pub key: String,
    pub inputs: Fields,
    pub expires_at: SystemTime,
    /// A result is recorded: deliver it (read it with [`Outbox::result`]) instead of re-running.
    pub answered: bool,
}

/// How full the outbox is: for metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OpenStats {
    /// Records accepted and not yet closed.
    pub open: u64,
    /// When the oldest of them was accepted.
    pub oldest: Option<SystemTime>,
}

/// One record as the console's Deliveries page shows it: never the link
/// itself, only its [`LinkTag`](crate::link::LinkTag).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordSummary {
    pub link: crate::link::LinkTag,
    pub request_id: Option<String>,
    pub key: String,
    pub state: Option<State>,
    pub attempts: u32,
    /// The last attempt's outcome (`retry: ...`, `final: ...`), or why it was quarantined.
    pub last_outcome: Option<String>,
    pub accepted_at: SystemTime,
    pub closed_at: Option<SystemTime>,
    /// Which host holds it (on PostgreSQL, a replica's id).
    pub owner: Option<String>,
}

/// What [`Outbox::console_listing`] returns.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Listing {
    /// Open records (no result yet, or being delivered), newest first.
    pub open: Vec<RecordSummary>,
    /// Records closed without delivery (failed, expired, quarantined), latest first.
    pub failed: Vec<RecordSummary>,
}

/// One backend of the outbox.
#[async_trait::async_trait]
pub trait Outbox: Send + Sync + 'static {
    /// Records a new request, held by the caller; `Duplicate` if its link is known.
    async fn accept(&self, record: &NewRecord<'_>) -> Result<Accepted, OutboxError>;

    /// Whether a link is recorded (accepted earlier, open or closed).
    async fn contains(&self, link: &str) -> Result<bool, OutboxError>;

    /// Records the body to deliver; from now on a restart re-delivers instead of
    /// re-running. `false` when the claim is no longer the current one.
    async fn answer(&self, claim: &Claim, body: &[u8]) -> Result<bool, OutboxError>;

    /// Counts a delivery attempt and its outcome, for people reading the database.
    async fn attempted(&self, claim: &Claim, outcome: &str) -> Result<(), OutboxError>;

    /// Closes a record: delivered, failed finally, or expired. `false` when the
    /// claim is no longer the current one.
    async fn close(&self, claim: &Claim, state: State) -> Result<bool, OutboxError>;

    /// Claims up to `limit` open records that no live holder has, oldest first.
    /// Rows that cannot be read are quarantined and not returned.
    async fn claim_stale(&self, limit: usize) -> Result<Vec<Stale>, OutboxError>;

    /// The recorded result of a claimed record.
    async fn result(&self, claim: &Claim) -> Result<Option<Vec<u8>>, OutboxError>;

    /// The state of one link, for tests and tools.
    async fn state(&self, link: &str) -> Result<Option<State>, OutboxError>;

    /// How many records are open, and the oldest one's age.
    async fn open_stats(&self) -> Result<OpenStats, OutboxError>;

    /// Read only, for the admin console: up to `limit` open records and up to
    /// `limit` that closed without delivery; on a shared outbox, every host's.
    async fn console_listing(&self, limit: usize) -> Result<Listing, OutboxError>;

    /// Deletes records closed before `closed_before`; returns how many.
    async fn prune(&self, closed_before: SystemTime) -> Result<usize, OutboxError>;

    /// How long a claim lasts unless renewed, where several hosts share the
    /// outbox; `None` where one host owns it (then nothing needs renewing, and
    /// every open record found at start-up is stale).
    fn lease(&self) -> Option<Duration> {
        None
    }

    /// Keeps the caller's claims alive; returns the links of those it still
    /// holds (a claim missing from the answer was closed or taken over).
    async fn renew(&self, claims: &[Claim]) -> Result<Vec<String>, OutboxError> {
        Ok(claims.iter().map(|c| c.link.clone()).collect())
    }

    /// Whether the outbox can record a request now: a cheap round trip that
    /// fails where a real write would (database down, file read-only, full).
    async fn probe(&self) -> Result<(), OutboxError>;

    /// Connects and migrates now rather than on first use, so a host with
    /// async plugins fails at start-up on a wrong URL or an unusable file.
    async fn prepare(&self) -> Result<(), OutboxError>;

    /// Hands claims back (the host is shutting down with work unfinished), so
    /// another host can finish them at once.
    async fn release(&self, _claims: &[Claim]) -> Result<(), OutboxError> {
        Ok(())
    }

    /// Waits until another host may have left work to claim, or `max` passes.
    async fn wait_for_work(&self, max: Duration) {
        tokio::time::sleep(max).await;
    }
}

/// Unix milliseconds, as both backends store times.
fn millis(t: SystemTime) -> i64 {
    t.duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

fn from_millis(ms: i64) -> SystemTime {
    std::time::UNIX_EPOCH + Duration::from_millis(u64::try_from(ms).unwrap_or(0))
}

/// Where the outbox lives; opened on first use.
#[derive(Clone)]
pub enum OutboxSource {
    /// `<data_dir>/outbox.sqlite3`, the default: one host; at most `max_size`
    /// bytes when set.
    Sqlite {
        data_dir: PathBuf,
        max_size: Option<u64>,
    },
    /// A PostgreSQL database several replicas share.
    Postgres { url: String, lease: Duration },
}

impl std::fmt::Debug for OutboxSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Sqlite { data_dir, .. } => write!(f, "SQLite in {}", data_dir.display()),
            Self::Postgres { url, lease } => {
                write!(
                    f,
                    "PostgreSQL at {} (lease {lease:?})",
                    crate::config::redact_url(url)
                )
            }
        }
    }
}

impl OutboxSource {
    /// Whether there may be records to resume: ones an earlier run of this host
    /// left, or, in a shared outbox, ones another replica may leave at any time.
    pub fn exists(&self) -> bool {
        match self {
            Self::Sqlite { data_dir, .. } => data_dir.join(sqlite::FILE).exists(),
            Self::Postgres { .. } => true,
        }
    }

    /// Whether other hosts share it.
    pub fn shared(&self) -> bool {
        matches!(self, Self::Postgres { .. })
    }

    /// The outbox, not yet connected: it connects (and migrates) on first use
    /// or on [`Outbox::prepare`], so a host that answers only synchronously
    /// starts without its database.
    pub fn outbox(&self) -> Arc<dyn Outbox> {
        match self {
            Self::Sqlite { data_dir, max_size } => Arc::new(SqliteOutbox::new(data_dir, *max_size)),
            Self::Postgres { url, lease } => Arc::new(PostgresOutbox::new(url, *lease)),
        }
    }
}
