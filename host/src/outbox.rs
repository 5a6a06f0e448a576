//! The durable record of accepted async requests (SQLite, `<data_dir>/outbox.sqlite3`).
//!
//! A request answered `202` is a promise: the answer reaches `link` unless the
//! link expires first. Invariants:
//! - a request is recorded (and synced to disk) before its `202` is sent;
//! - its result is recorded before the first delivery attempt;
//! - a record is closed only when delivery succeeds, fails finally, or the link expires;
//! - `link` is the primary key, so a request seen twice is run once.
//!
//! Synchronous answers are never recorded. Inspect with `sqlite3 data/outbox.sqlite3`.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rusqlite::{Connection, OptionalExtension, params};
use thiserror::Error;

use crate::protocol::Fields;

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
    #[error("outbox database: {0}")]
    Sql(#[from] rusqlite::Error),
    #[error("outbox record for {link} is corrupt: {reason}")]
    Corrupt { link: String, reason: String },
    #[error("outbox task failed: {0}")]
    Task(String),
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
}

impl State {
    fn as_str(self) -> &'static str {
        match self {
            Self::Accepted => "accepted",
            Self::Answered => "answered",
            Self::Delivered => "delivered",
            Self::Failed => "failed",
            Self::Expired => "expired",
        }
    }

    fn parse(text: &str) -> Option<Self> {
        Some(match text {
            "accepted" => Self::Accepted,
            "answered" => Self::Answered,
            "delivered" => Self::Delivered,
            "failed" => Self::Failed,
            "expired" => Self::Expired,
            _ => return None,
        })
    }
}

/// An accepted request as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub link: String,
    pub key: String,
    pub inputs: Fields,
    pub accepted_at: SystemTime,
    pub expires_at: SystemTime,
    pub state: State,
    /// The exact body to POST to `link` once the handler has answered.
    pub result: Option<Vec<u8>>,
}

/// The outbox, shared by the request path and the delivery tasks.
#[derive(Clone)]
pub struct Outbox {
    db: Arc<Mutex<Connection>>,
}

impl Outbox {
    /// Opens (creating if needed) `<data_dir>/outbox.sqlite3`.
    pub fn open(data_dir: &Path) -> Result<Self, OutboxError> {
        std::fs::create_dir_all(data_dir).map_err(|source| OutboxError::DataDir {
            path: data_dir.to_path_buf(),
            source,
        })?;
        let path = data_dir.join("outbox.sqlite3");
        let open = |path: &Path| -> rusqlite::Result<Connection> {
            let db = Connection::open(path)?;
            // WAL keeps readers off the writer's back; FULL syncs every commit, so a
            // 202 is never sent for a request a power cut could lose.
            db.pragma_update(None, "journal_mode", "WAL")?;
            db.pragma_update(None, "synchronous", "FULL")?;
            db.busy_timeout(Duration::from_secs(5))?;
            db.execute_batch(SCHEMA)?;
            Ok(db)
        };
        let db = open(&path).map_err(|source| OutboxError::Open { path, source })?;
        Ok(Self {
            db: Arc::new(Mutex::new(db)),
        })
    }

    /// Runs `f` with the connection on the blocking pool.
    async fn with_db<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> Result<T, OutboxError> + Send + 'static,
    ) -> Result<T, OutboxError> {
        let db = self.db.clone();
        tokio::task::spawn_blocking(move || {
            let conn = db.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            f(&conn)
        })
        .await
        .map_err(|e| OutboxError::Task(e.to_string()))?
    }

    /// Records an accepted request. Returns `false` if its link was already recorded
    /// (a duplicate: do not run it again).
    pub async fn accept(
        &self,
        link: &str,
        key: &str,
        inputs: &Fields,
        expires_at: SystemTime,
    ) -> Result<bool, OutboxError> {
        let (link, key) = (link.to_string(), key.to_string());
        let inputs = serde_json::to_string(inputs).map_err(|e| OutboxError::Task(e.to_string()))?;
        let now = millis(SystemTime::now());
        let expires = millis(expires_at);
        self.with_db(move |db| {
            let inserted = db.execute(
                "INSERT OR IGNORE INTO requests (link, key, inputs, accepted_at, expires_at, state, attempts)
                 VALUES (?1, ?2, ?3, ?4, ?5, 'accepted', 0)",
                params![link, key, inputs, now, expires],
            )?;
            Ok(inserted == 1)
        })
        .await
    }

    /// Whether a link is already recorded (accepted earlier, open or closed).
    pub async fn contains(&self, link: &str) -> Result<bool, OutboxError> {
        let link = link.to_string();
        self.with_db(move |db| {
            Ok(db
                .query_row("SELECT 1 FROM requests WHERE link = ?1", [link], |_| Ok(()))
                .optional()?
                .is_some())
        })
        .await
    }

    /// Records the body to deliver; from now on a restart re-delivers instead of re-running.
    pub async fn answer(&self, link: &str, body: &[u8]) -> Result<(), OutboxError> {
        let (link, body) = (link.to_string(), body.to_vec());
        self.with_db(move |db| {
            db.execute(
                "UPDATE requests SET result = ?2, state = 'answered', answered_at = ?3
                 WHERE link = ?1 AND state IN ('accepted', 'answered')",
                params![link, body, millis(SystemTime::now())],
            )?;
            Ok(())
        })
        .await
    }

    /// Counts a delivery attempt and its outcome, for people reading the database.
    pub async fn attempted(&self, link: &str, outcome: &str) -> Result<(), OutboxError> {
        let (link, outcome) = (link.to_string(), outcome.to_string());
        self.with_db(move |db| {
            db.execute(
                "UPDATE requests SET attempts = attempts + 1, last_outcome = ?2 WHERE link = ?1",
                params![link, outcome],
            )?;
            Ok(())
        })
        .await
    }

    /// Closes a record: delivered, failed finally, or expired.
    pub async fn close(&self, link: &str, state: State) -> Result<(), OutboxError> {
        let link = link.to_string();
        self.with_db(move |db| {
            db.execute(
                "UPDATE requests SET state = ?2, closed_at = ?3 WHERE link = ?1",
                params![link, state.as_str(), millis(SystemTime::now())],
            )?;
            Ok(())
        })
        .await
    }

    /// Every record not yet closed, oldest first: what a restart must resume.
    pub async fn open_records(&self) -> Result<Vec<Record>, OutboxError> {
        self.with_db(|db| {
            let mut stmt = db.prepare(
                "SELECT link, key, inputs, accepted_at, expires_at, state, result FROM requests
                 WHERE state IN ('accepted', 'answered') ORDER BY accepted_at",
            )?;
            let rows = stmt.query_map([], |row| {
                Ok((
                    row.get::<_, String>(0)?,
                    row.get::<_, String>(1)?,
                    row.get::<_, String>(2)?,
                    row.get::<_, i64>(3)?,
                    row.get::<_, i64>(4)?,
                    row.get::<_, String>(5)?,
                    row.get::<_, Option<Vec<u8>>>(6)?,
                ))
            })?;
            let mut records = Vec::new();
            for row in rows {
                let (link, key, inputs, accepted, expires, state, result) = row?;
                let corrupt = |reason: String| OutboxError::Corrupt {
                    link: link.clone(),
                    reason,
                };
                let inputs: Fields =
                    serde_json::from_str(&inputs).map_err(|e| corrupt(e.to_string()))?;
                let state = State::parse(&state)
                    .ok_or_else(|| corrupt(format!("unknown state {state:?}")))?;
                records.push(Record {
                    link,
                    key,
                    inputs,
                    accepted_at: from_millis(accepted),
                    expires_at: from_millis(expires),
                    state,
                    result,
                });
            }
            Ok(records)
        })
        .await
    }

    /// The state of one link, for tests and tools.
    pub async fn state(&self, link: &str) -> Result<Option<State>, OutboxError> {
        let link = link.to_string();
        self.with_db(move |db| {
            let state: Option<String> = db
                .query_row("SELECT state FROM requests WHERE link = ?1", [link], |r| {
                    r.get(0)
                })
                .optional()?;
            Ok(state.and_then(|s| State::parse(&s)))
        })
        .await
    }

    /// Deletes closed records whose link expired more than `keep` ago; they are only
    /// kept that long to recognise duplicates.
    pub async fn prune(&self, keep: Duration) -> Result<usize, OutboxError> {
        let before = millis(SystemTime::now().checked_sub(keep).unwrap_or(UNIX_EPOCH));
        self.with_db(move |db| {
            Ok(db.execute(
                "DELETE FROM requests WHERE state NOT IN ('accepted', 'answered') AND expires_at < ?1",
                [before],
            )?)
        })
        .await
    }
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS requests (
    link         TEXT PRIMARY KEY,
    key          TEXT NOT NULL,
    inputs       TEXT NOT NULL,     -- JSON array of [name, value] pairs
    accepted_at  INTEGER NOT NULL,  -- unix milliseconds
    expires_at   INTEGER NOT NULL,
    state        TEXT NOT NULL,     -- accepted | answered | delivered | failed | expired
    result       BLOB,              -- the exact JSON body to POST to link
    answered_at  INTEGER,
    attempts     INTEGER NOT NULL DEFAULT 0,
    last_outcome TEXT,
    closed_at    INTEGER
);
CREATE INDEX IF NOT EXISTS requests_open ON requests (state, accepted_at);
";

fn millis(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

fn from_millis(ms: i64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(u64::try_from(ms).unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn lifecycle_survives_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let expires = SystemTime::now() + Duration::from_secs(600);
        let inputs = vec![("a".to_string(), "1".to_string())];
        {
            let outbox = Outbox::open(dir.path()).unwrap();
            assert!(
                outbox
                    .accept("http://l/1", "k", &inputs, expires)
                    .await
                    .unwrap()
            );
            assert!(
                !outbox
                    .accept("http://l/1", "k", &inputs, expires)
                    .await
                    .unwrap(),
                "duplicate"
            );
            assert!(
                outbox
                    .accept("http://l/2", "k", &inputs, expires)
                    .await
                    .unwrap()
            );
            outbox.answer("http://l/2", b"{\"data\":{}}").await.unwrap();
            assert!(
                outbox
                    .accept("http://l/3", "k", &inputs, expires)
                    .await
                    .unwrap()
            );
            outbox.close("http://l/3", State::Delivered).await.unwrap();
        }
        let outbox = Outbox::open(dir.path()).unwrap();
        let open = outbox.open_records().await.unwrap();
        assert_eq!(open.len(), 2);
        assert_eq!(
            (open[0].link.as_str(), open[0].state, open[0].result.clone()),
            ("http://l/1", State::Accepted, None)
        );
        assert_eq!(open[0].inputs, inputs);
        assert_eq!(open[1].state, State::Answered);
        assert_eq!(open[1].result.as_deref(), Some(&b"{\"data\":{}}"[..]));
        assert!(outbox.contains("http://l/3").await.unwrap());
        assert_eq!(
            outbox.state("http://l/3").await.unwrap(),
            Some(State::Delivered)
        );
        // A closed record is not answered again.
        outbox.answer("http://l/3", b"late").await.unwrap();
        assert_eq!(
            outbox.state("http://l/3").await.unwrap(),
            Some(State::Delivered)
        );
    }

    #[tokio::test]
    async fn prune_keeps_open_and_recent_records() {
        let dir = tempfile::tempdir().unwrap();
        let outbox = Outbox::open(dir.path()).unwrap();
        let past = SystemTime::now() - Duration::from_secs(7200);
        outbox
            .accept("old-closed", "k", &vec![], past)
            .await
            .unwrap();
        outbox.close("old-closed", State::Expired).await.unwrap();
        outbox.accept("old-open", "k", &vec![], past).await.unwrap();
        assert_eq!(outbox.prune(Duration::from_secs(3600)).await.unwrap(), 1);
        assert!(outbox.contains("old-open").await.unwrap());
    }
}
