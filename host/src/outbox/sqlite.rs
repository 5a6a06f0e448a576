//! The outbox in SQLite: `<data_dir>/outbox.sqlite3`, one host per file.
//!
//! WAL mode with `synchronous = FULL`, so a `202` is never sent for a request
//! a power cut could lose. The data directory is locked (`outbox.lock`) while
//! a host has it open: two hosts sharing the file would resume each other's
//! work. Each open is a new owner, so at start-up every open record left by
//! an earlier run is stale and resumed. Inspect with `sqlite3 data/outbox.sqlite3`.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use rusqlite::{Connection, OptionalExtension, Row, params};
use tokio::sync::OnceCell;

use super::{
    Accepted, Claim, Listing, NewRecord, OpenStats, Outbox, OutboxError, RecordSummary, Stale,
    State, from_millis, millis,
};
use crate::link::LinkTag;
use crate::protocol::Fields;

/// The database file's name in the data directory.
pub const FILE: &str = "outbox.sqlite3";
const LOCK_FILE: &str = "outbox.lock";

/// Rows deleted per statement when pruning, so a large prune never holds the
/// database for long.
const PRUNE_BATCH: usize = 5_000;
/// The probe writes (and rolls back) this much: more than most records.
const PROBE_BYTES: i64 = 64 * 1024;

/// The SQLite outbox, shared by the request path and the delivery tasks. The
/// file is opened (and the data directory locked) on first use.
#[derive(Clone)]
pub struct SqliteOutbox {
    data_dir: PathBuf,
    max_size: Option<u64>,
    opened: Arc<OnceCell<Opened>>,
    /// This open's identity: records it accepted or claimed carry it.
    owner: Arc<str>,
}

/// The open database and the lock that keeps other hosts out.
struct Opened {
    db: Arc<Mutex<Connection>>,
    _lock: std::fs::File,
}

impl SqliteOutbox {
    /// The outbox in `<data_dir>/outbox.sqlite3`, capped at `max_size` bytes
    /// if set; nothing is opened yet.
    pub fn new(data_dir: &Path, max_size: Option<u64>) -> Self {
        Self {
            data_dir: data_dir.to_path_buf(),
            max_size,
            opened: Arc::default(),
            owner: format!("{:016x}", rand::random::<u64>()).into(),
        }
    }

    /// Opens (creating if needed) `<data_dir>/outbox.sqlite3` and migrates it.
    pub async fn open(data_dir: &Path) -> Result<Self, OutboxError> {
        let outbox = Self::new(data_dir, None);
        outbox.prepare().await?;
        Ok(outbox)
    }

    fn open_now(data_dir: &Path, max_size: Option<u64>) -> Result<Opened, OutboxError> {
        std::fs::create_dir_all(data_dir).map_err(|source| OutboxError::DataDir {
            path: data_dir.to_path_buf(),
            source,
        })?;
        let lock = lock(&data_dir.join(LOCK_FILE))?;
        let path = data_dir.join(FILE);
        let open = |path: &Path| -> rusqlite::Result<Connection> {
            let mut db = Connection::open(path)?;
            db.pragma_update(None, "journal_mode", "WAL")?;
            db.pragma_update(None, "synchronous", "FULL")?;
            db.busy_timeout(Duration::from_secs(5))?;
            migrate(&mut db)?;
            if let Some(max) = max_size {
                let page: u64 = db.query_row("PRAGMA page_size", [], |r| r.get(0))?;
                let pages = (max / page.max(1)).max(1);
                db.pragma_update(None, "max_page_count", pages)?;
            }
            Ok(db)
        };
        let db = open(&path).map_err(|source| OutboxError::Open { path, source })?;
        Ok(Opened {
            db: Arc::new(Mutex::new(db)),
            _lock: lock,
        })
    }

    /// Runs `f` with the connection on the blocking pool, opening it first if
    /// this is the first use.
    async fn with_db<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Connection, &str) -> Result<T, OutboxError> + Send + 'static,
    ) -> Result<T, OutboxError> {
        let opened = self
            .opened
            .get_or_try_init(|| async {
                let (dir, max) = (self.data_dir.clone(), self.max_size);
                tokio::task::spawn_blocking(move || Self::open_now(&dir, max))
                    .await
                    .map_err(|e| OutboxError::Task(e.to_string()))?
            })
            .await?;
        let (db, owner) = (opened.db.clone(), self.owner.clone());
        tokio::task::spawn_blocking(move || {
            let mut conn = db.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            f(&mut conn, &owner)
        })
        .await
        .map_err(|e| OutboxError::Task(e.to_string()))?
    }
}

fn lock(path: &Path) -> Result<std::fs::File, OutboxError> {
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .map_err(|source| OutboxError::DataDir {
            path: path.to_path_buf(),
            source,
        })?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => Err(OutboxError::Locked {
            path: path.to_path_buf(),
        }),
        Err(std::fs::TryLockError::Error(source)) => Err(OutboxError::DataDir {
            path: path.to_path_buf(),
            source,
        }),
    }
}

#[async_trait::async_trait]
impl Outbox for SqliteOutbox {
    async fn prepare(&self) -> Result<(), OutboxError> {
        self.with_db(|_, _| Ok(())).await
    }

    /// A write the size of a large record, rolled back: it fails as a real
    /// one would on a read-only or full file.
    async fn probe(&self) -> Result<(), OutboxError> {
        self.with_db(|db, _| {
            let tx = db.transaction()?;
            tx.execute(
                "INSERT INTO probe (data) VALUES (zeroblob(?1))",
                [PROBE_BYTES],
            )?;
            tx.rollback()?;
            Ok(())
        })
        .await
    }

    async fn accept(&self, record: &NewRecord<'_>) -> Result<Accepted, OutboxError> {
        let (link, key) = (record.link.to_string(), record.key.to_string());
        let request_id = record.request_id.to_string();
        let traceparent = record.traceparent.map(str::to_string);
        let tracestate = record.tracestate.map(str::to_string);
        let inputs =
            serde_json::to_string(record.inputs).map_err(|e| OutboxError::Task(e.to_string()))?;
        let now = millis(SystemTime::now());
        let expires = millis(record.expires_at);
        self.with_db(move |db, owner| {
            let inserted = db.execute(
                "INSERT OR IGNORE INTO requests
                   (link, key, inputs, accepted_at, expires_at, state, attempts, owner, claim, request_id,
                    traceparent, tracestate)
                 VALUES (?1, ?2, ?3, ?4, ?5, 'accepted', 0, ?6, 1, ?7, ?8, ?9)",
                params![link, key, inputs, now, expires, owner, request_id, traceparent, tracestate],
            )?;
            Ok(if inserted == 1 {
                Accepted::New(Claim { link, token: 1 })
            } else {
                Accepted::Duplicate
            })
        })
        .await
    }

    async fn contains(&self, link: &str) -> Result<bool, OutboxError> {
        let link = link.to_string();
        self.with_db(move |db, _| {
            Ok(db
                .query_row("SELECT 1 FROM requests WHERE link = ?1", [link], |_| Ok(()))
                .optional()?
                .is_some())
        })
        .await
    }

    async fn answer(&self, claim: &Claim, body: &[u8]) -> Result<bool, OutboxError> {
        let (claim, body) = (claim.clone(), body.to_vec());
        self.with_db(move |db, owner| {
            let changed = db.execute(
                "UPDATE requests SET result = ?3, state = 'answered', answered_at = ?4
                 WHERE link = ?1 AND claim = ?2 AND owner = ?5 AND state IN ('accepted', 'answered')",
                params![claim.link, claim.token, body, millis(SystemTime::now()), owner],
            )?;
            Ok(changed == 1)
        })
        .await
    }

    async fn attempted(&self, claim: &Claim, outcome: &str) -> Result<(), OutboxError> {
        let (claim, outcome) = (claim.clone(), outcome.to_string());
        self.with_db(move |db, owner| {
            db.execute(
                "UPDATE requests SET attempts = attempts + 1, last_outcome = ?3
                 WHERE link = ?1 AND claim = ?2 AND owner = ?4",
                params![claim.link, claim.token, outcome, owner],
            )?;
            Ok(())
        })
        .await
    }

    async fn close(&self, claim: &Claim, state: State) -> Result<bool, OutboxError> {
        let claim = claim.clone();
        self.with_db(move |db, owner| {
            let changed = db.execute(
                "UPDATE requests SET state = ?3, closed_at = ?4
                 WHERE link = ?1 AND claim = ?2 AND owner = ?5 AND state IN ('accepted', 'answered')",
                params![
                    claim.link,
                    claim.token,
                    state.as_str(),
                    millis(SystemTime::now()),
                    owner
                ],
            )?;
            Ok(changed == 1)
        })
        .await
    }

    async fn claim_stale(&self, limit: usize) -> Result<Vec<Stale>, OutboxError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.with_db(move |db, owner| {
            let tx = db.transaction()?;
            let mut claimed = Vec::new();
            let mut quarantine = Vec::new();
            {
                let mut stmt = tx.prepare(
                    "UPDATE requests SET owner = ?1, claim = claim + 1
                     WHERE rowid IN (
                       SELECT rowid FROM requests
                       WHERE state IN ('accepted', 'answered') AND owner IS NOT ?1
                       ORDER BY accepted_at LIMIT ?2)
                     RETURNING rowid, link, key, inputs, expires_at, result IS NOT NULL, claim, accepted_at, request_id,
                               traceparent, tracestate",
                )?;
                let mut rows = stmt.query(params![owner, limit])?;
                while let Some(row) = rows.next()? {
                    let rowid: i64 = row.get(0)?;
                    match read_stale(row) {
                        Ok(stale) => claimed.push(stale),
                        Err(reason) => quarantine.push((rowid, reason)),
                    }
                }
            }
            for (rowid, reason) in quarantine {
                let link: Option<String> = tx
                    .query_row("SELECT link FROM requests WHERE rowid = ?1", [rowid], |r| {
                        r.get(0)
                    })
                    .optional()
                    .ok()
                    .flatten();
                tracing::error!(
                    rowid,
                    link = %link.as_deref().map(crate::link::LinkTag::new).map(|t| t.to_string()).unwrap_or_default(),
                    "outbox row cannot be read, quarantined (kept in {FILE}, not resumed): {reason}"
                );
                tx.execute(
                    "UPDATE requests SET state = 'quarantined', last_outcome = ?2 WHERE rowid = ?1",
                    params![rowid, format!("quarantined: {reason}")],
                )?;
            }
            tx.commit()?;
            claimed.sort_by_key(|(accepted_at, _)| *accepted_at);
            Ok(claimed.into_iter().map(|(_, stale)| stale).collect())
        })
        .await
    }

    async fn result(&self, claim: &Claim) -> Result<Option<Vec<u8>>, OutboxError> {
        let claim = claim.clone();
        self.with_db(move |db, _| {
            Ok(db
                .query_row(
                    "SELECT result FROM requests WHERE link = ?1 AND claim = ?2",
                    params![claim.link, claim.token],
                    |r| r.get::<_, Option<Vec<u8>>>(0),
                )
                .optional()?
                .flatten())
        })
        .await
    }

    async fn state(&self, link: &str) -> Result<Option<State>, OutboxError> {
        let link = link.to_string();
        self.with_db(move |db, _| {
            let state: Option<String> = db
                .query_row("SELECT state FROM requests WHERE link = ?1", [link], |r| {
                    r.get(0)
                })
                .optional()?;
            Ok(state.and_then(|s| State::parse(&s)))
        })
        .await
    }

    async fn open_stats(&self) -> Result<OpenStats, OutboxError> {
        self.with_db(|db, _| {
            let (open, oldest): (i64, Option<i64>) = db.query_row(
                "SELECT count(*), min(accepted_at) FROM requests
                 WHERE state IN ('accepted', 'answered')",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )?;
            Ok(OpenStats {
                open: u64::try_from(open).unwrap_or(0),
                oldest: oldest.map(from_millis),
            })
        })
        .await
    }

    async fn console_listing(&self, limit: usize) -> Result<Listing, OutboxError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.with_db(move |db, _| {
            let list = |sql: &str| -> Result<Vec<RecordSummary>, OutboxError> {
                let mut stmt = db.prepare(sql)?;
                let rows = stmt.query_map([limit], |row| {
                    Ok(RecordSummary {
                        link: LinkTag::new(&row.get::<_, String>(0)?),
                        request_id: row.get(1)?,
                        key: row.get(2)?,
                        state: row.get::<_, String>(3).ok().and_then(|s| State::parse(&s)),
                        attempts: u32::try_from(row.get::<_, i64>(4)?).unwrap_or(0),
                        last_outcome: row.get(5)?,
                        accepted_at: from_millis(row.get(6)?),
                        closed_at: row.get::<_, Option<i64>>(7)?.map(from_millis),
                        owner: row.get(8)?,
                    })
                })?;
                Ok(rows.collect::<Result<_, _>>()?)
            };
            const COLUMNS: &str = "link, request_id, key, state, attempts, last_outcome, accepted_at, closed_at, owner";
            let open = list(&format!(
                "SELECT {COLUMNS} FROM requests WHERE state IN ('accepted', 'answered')
                 ORDER BY accepted_at DESC LIMIT ?1"
            ))?;
            let failed = list(&format!(
                "SELECT {COLUMNS} FROM requests
                 WHERE closed_at IS NOT NULL AND state IN ('failed', 'expired', 'quarantined')
                 ORDER BY closed_at DESC LIMIT ?1"
            ))?;
            Ok(Listing { open, failed })
        })
        .await
    }

    async fn prune(&self, closed_before: SystemTime) -> Result<usize, OutboxError> {
        let before = millis(closed_before);
        self.with_db(move |db, _| {
            let mut total = 0;
            loop {
                let deleted = db.execute(
                    "DELETE FROM requests WHERE rowid IN (
                       SELECT rowid FROM requests
                       WHERE closed_at IS NOT NULL AND closed_at < ?1 LIMIT ?2)",
                    params![before, PRUNE_BATCH as i64],
                )?;
                total += deleted;
                if deleted < PRUNE_BATCH {
                    return Ok(total);
                }
            }
        })
        .await
    }
}

/// Decodes a claimed row, or says why it cannot be (the row is then quarantined).
fn read_stale(row: &Row<'_>) -> Result<(i64, Stale), String> {
    let text = |i: usize, what: &str| -> Result<String, String> {
        row.get::<_, String>(i)
            .map_err(|e| format!("`{what}` is unreadable: {e}"))
    };
    let int = |i: usize, what: &str| -> Result<i64, String> {
        row.get::<_, i64>(i)
            .map_err(|e| format!("`{what}` is unreadable: {e}"))
    };
    let link = text(1, "link")?;
    let key = text(2, "key")?;
    let inputs: Fields = serde_json::from_str(&text(3, "inputs")?)
        .map_err(|e| format!("`inputs` is not a list of name/value pairs: {e}"))?;
    let expires_at = from_millis(int(4, "expires_at")?);
    let answered = int(5, "result")? != 0;
    let token = int(6, "claim")?;
    let accepted_at = int(7, "accepted_at")?;
    // Optional context: a value that cannot be read is dropped, never a
    // reason to quarantine the row.
    let request_id = row.get::<_, Option<String>>(8).ok().flatten();
    let traceparent = row.get::<_, Option<String>>(9).ok().flatten();
    let tracestate = row.get::<_, Option<String>>(10).ok().flatten();
    Ok((
        accepted_at,
        Stale {
            claim: Claim { link, token },
            request_id,
            traceparent,
            tracestate,
            key,
            inputs,
            expires_at,
            answered,
        },
    ))
}

/// Versioned, idempotent schema steps; `PRAGMA user_version` counts those applied.
const MIGRATIONS: &[&str] = &[
    // 1: the outbox as first released.
    "CREATE TABLE IF NOT EXISTS requests (
        link         TEXT PRIMARY KEY,
        key          TEXT NOT NULL,
        inputs       TEXT NOT NULL,     -- JSON array of [name, value] pairs
        accepted_at  INTEGER NOT NULL,  -- unix milliseconds
        expires_at   INTEGER NOT NULL,
        state        TEXT NOT NULL,     -- accepted | answered | delivered | failed | expired | quarantined
        result       BLOB,              -- the exact JSON body to POST to link
        answered_at  INTEGER,
        attempts     INTEGER NOT NULL DEFAULT 0,
        last_outcome TEXT,
        closed_at    INTEGER
    );
    CREATE INDEX IF NOT EXISTS requests_open ON requests (state, accepted_at);",
    // 2: claims (who holds a record, and a fencing token), and pruning by close time.
    "ALTER TABLE requests ADD COLUMN owner TEXT;
    ALTER TABLE requests ADD COLUMN claim INTEGER NOT NULL DEFAULT 0;
    CREATE INDEX IF NOT EXISTS requests_closed ON requests (closed_at) WHERE closed_at IS NOT NULL;",
    // 3: the request's id, delivered with its answer.
    "ALTER TABLE requests ADD COLUMN request_id TEXT;",
    // 4: a scratch table for the health probe's rolled-back write.
    "CREATE TABLE IF NOT EXISTS probe (data BLOB);",
    // 5: the request's W3C trace context, so its delivery joins its trace.
    "ALTER TABLE requests ADD COLUMN traceparent TEXT;
    ALTER TABLE requests ADD COLUMN tracestate TEXT;",
];

fn migrate(db: &mut Connection) -> rusqlite::Result<()> {
    let tx = db.transaction()?;
    let applied: usize = tx.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    for (i, step) in MIGRATIONS.iter().enumerate().skip(applied) {
        tx.execute_batch(step)?;
        tx.pragma_update(None, "user_version", i + 1)?;
    }
    tx.commit()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn path(data_dir: &Path) -> std::path::PathBuf {
        data_dir.join(FILE)
    }

    const TRACEPARENT: &str = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";

    fn rec<'a>(link: &'a str, inputs: &'a Fields, expires_at: SystemTime) -> NewRecord<'a> {
        NewRecord {
            link,
            key: "k",
            inputs,
            expires_at,
            request_id: "r-1",
            traceparent: Some(TRACEPARENT),
            tracestate: Some("vendor=x"),
        }
    }

    /// A record accepted with tracing off.
    fn untraced<'a>(link: &'a str, inputs: &'a Fields, expires_at: SystemTime) -> NewRecord<'a> {
        NewRecord {
            traceparent: None,
            tracestate: None,
            ..rec(link, inputs, expires_at)
        }
    }

    fn claim(accepted: Accepted) -> Claim {
        match accepted {
            Accepted::New(claim) => claim,
            Accepted::Duplicate => panic!("a duplicate"),
        }
    }

    #[tokio::test]
    async fn lifecycle_survives_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let expires = SystemTime::now() + Duration::from_secs(600);
        let inputs = vec![("a".to_string(), "1".to_string())];
        {
            let outbox = SqliteOutbox::open(dir.path()).await.unwrap();
            claim(
                outbox
                    .accept(&rec("http://l/1", &inputs, expires))
                    .await
                    .unwrap(),
            );
            assert_eq!(
                outbox
                    .accept(&rec("http://l/1", &inputs, expires))
                    .await
                    .unwrap(),
                Accepted::Duplicate
            );
            let two = claim(
                outbox
                    .accept(&untraced("http://l/2", &inputs, expires))
                    .await
                    .unwrap(),
            );
            assert!(outbox.answer(&two, b"{\"data\":{}}").await.unwrap());
            let three = claim(
                outbox
                    .accept(&rec("http://l/3", &inputs, expires))
                    .await
                    .unwrap(),
            );
            assert!(outbox.close(&three, State::Delivered).await.unwrap());
            // This open holds its own records: none of them is stale to itself.
            assert!(outbox.claim_stale(10).await.unwrap().is_empty());
        }
        let outbox = SqliteOutbox::open(dir.path()).await.unwrap();
        let stale = outbox.claim_stale(10).await.unwrap();
        assert_eq!(stale.len(), 2);
        assert_eq!(
            (
                stale[0].claim.link.as_str(),
                stale[0].answered,
                stale[0].claim.token
            ),
            ("http://l/1", false, 2)
        );
        assert_eq!(stale[0].inputs, inputs);
        assert_eq!(stale[0].request_id.as_deref(), Some("r-1"));
        assert_eq!(stale[0].traceparent.as_deref(), Some(TRACEPARENT));
        assert_eq!(stale[0].tracestate.as_deref(), Some("vendor=x"));
        assert!(stale[1].answered);
        assert_eq!(stale[1].traceparent, None);
        assert_eq!(stale[1].tracestate, None);
        assert_eq!(
            outbox.result(&stale[1].claim).await.unwrap().as_deref(),
            Some(&b"{\"data\":{}}"[..])
        );
        assert!(
            outbox.claim_stale(10).await.unwrap().is_empty(),
            "claimed twice"
        );
        let stats = outbox.open_stats().await.unwrap();
        assert_eq!(stats.open, 2);
        assert!(stats.oldest.is_some());
        assert!(outbox.contains("http://l/3").await.unwrap());
        assert_eq!(
            outbox.state("http://l/3").await.unwrap(),
            Some(State::Delivered)
        );
    }

    #[tokio::test]
    async fn only_the_current_claim_may_answer_or_close() {
        let dir = tempfile::tempdir().unwrap();
        let expires = SystemTime::now() + Duration::from_secs(600);
        let first = {
            let outbox = SqliteOutbox::open(dir.path()).await.unwrap();
            claim(
                outbox
                    .accept(&rec("http://l/1", &vec![], expires))
                    .await
                    .unwrap(),
            )
        };
        let outbox = SqliteOutbox::open(dir.path()).await.unwrap();
        let stale = outbox.claim_stale(10).await.unwrap();
        assert_eq!(stale[0].claim.token, first.token + 1);
        assert!(!outbox.answer(&first, b"old").await.unwrap());
        assert!(!outbox.close(&first, State::Delivered).await.unwrap());
        assert_eq!(
            outbox.state("http://l/1").await.unwrap(),
            Some(State::Accepted)
        );
        assert!(
            outbox
                .close(&stale[0].claim, State::Delivered)
                .await
                .unwrap()
        );
        // A closed record is not answered again.
        assert!(!outbox.answer(&stale[0].claim, b"late").await.unwrap());
    }

    #[tokio::test]
    async fn the_console_listing_shows_open_and_failed_records_by_their_tags() {
        let dir = tempfile::tempdir().unwrap();
        let outbox = SqliteOutbox::open(dir.path()).await.unwrap();
        let expires = SystemTime::now() + Duration::from_secs(600);
        let open = claim(
            outbox
                .accept(&rec("http://l/open?token=s3cr3t", &vec![], expires))
                .await
                .unwrap(),
        );
        outbox.attempted(&open, "retry: 503").await.unwrap();
        let failed = claim(
            outbox
                .accept(&rec("http://l/f", &vec![], expires))
                .await
                .unwrap(),
        );
        outbox.close(&failed, State::Failed).await.unwrap();
        let done = claim(
            outbox
                .accept(&rec("http://l/d", &vec![], expires))
                .await
                .unwrap(),
        );
        outbox.close(&done, State::Delivered).await.unwrap();
        let listing = outbox.console_listing(10).await.unwrap();
        assert_eq!(listing.open.len(), 1);
        let first = &listing.open[0];
        assert_eq!(
            (first.attempts, first.last_outcome.as_deref()),
            (1, Some("retry: 503"))
        );
        assert_eq!(first.request_id.as_deref(), Some("r-1"));
        assert!(!first.link.to_string().contains("s3cr3t"));
        assert_eq!(listing.failed.len(), 1);
        assert_eq!(listing.failed[0].state, Some(State::Failed));
        assert!(listing.failed[0].closed_at.is_some());
    }

    #[tokio::test]
    async fn a_second_host_cannot_open_a_locked_data_dir() {
        let dir = tempfile::tempdir().unwrap();
        let _first = SqliteOutbox::open(dir.path()).await.unwrap();
        assert!(matches!(
            SqliteOutbox::open(dir.path()).await,
            Err(OutboxError::Locked { .. })
        ));
    }

    #[tokio::test]
    async fn a_corrupt_row_is_quarantined_and_the_rest_resumed() {
        let dir = tempfile::tempdir().unwrap();
        let expires = SystemTime::now() + Duration::from_secs(600);
        {
            let outbox = SqliteOutbox::open(dir.path()).await.unwrap();
            for link in ["http://l/a", "http://l/bad", "http://l/c"] {
                claim(outbox.accept(&rec(link, &vec![], expires)).await.unwrap());
            }
        }
        let db = Connection::open(path(dir.path())).unwrap();
        db.execute(
            "UPDATE requests SET inputs = 'garbage' WHERE link = 'http://l/bad'",
            [],
        )
        .unwrap();
        // An unreadable trace context (not UTF-8) is dropped, not quarantined.
        db.execute(
            "UPDATE requests SET traceparent = CAST(X'FF' AS TEXT) WHERE link = 'http://l/c'",
            [],
        )
        .unwrap();
        drop(db);
        let outbox = SqliteOutbox::open(dir.path()).await.unwrap();
        let stale = outbox.claim_stale(10).await.unwrap();
        let links: Vec<&str> = stale.iter().map(|s| s.claim.link.as_str()).collect();
        assert_eq!(links, ["http://l/a", "http://l/c"]);
        assert_eq!(stale[1].traceparent, None);
        assert_eq!(stale[1].tracestate.as_deref(), Some("vendor=x"));
        assert_eq!(
            outbox.state("http://l/bad").await.unwrap(),
            Some(State::Quarantined)
        );
    }

    #[tokio::test]
    async fn prune_removes_only_records_closed_long_enough_ago() {
        let dir = tempfile::tempdir().unwrap();
        let outbox = SqliteOutbox::open(dir.path()).await.unwrap();
        let expires = SystemTime::now() + Duration::from_secs(600);
        let closed = claim(
            outbox
                .accept(&rec("closed", &vec![], expires))
                .await
                .unwrap(),
        );
        outbox.close(&closed, State::Expired).await.unwrap();
        claim(outbox.accept(&rec("open", &vec![], expires)).await.unwrap());
        let past = SystemTime::now() - Duration::from_secs(60);
        assert_eq!(outbox.prune(past).await.unwrap(), 0);
        let future = SystemTime::now() + Duration::from_secs(1);
        assert_eq!(outbox.prune(future).await.unwrap(), 1);
        assert!(outbox.contains("open").await.unwrap());
        assert!(!outbox.contains("closed").await.unwrap());
    }

    #[tokio::test]
    async fn a_file_from_the_first_release_is_migrated() {
        let dir = tempfile::tempdir().unwrap();
        {
            let db = Connection::open(path(dir.path())).unwrap();
            db.execute_batch(MIGRATIONS[0]).unwrap();
            db.execute(
                "INSERT INTO requests (link, key, inputs, accepted_at, expires_at, state)
                 VALUES ('http://l/old', 'k', '[]', 1, ?1, 'accepted')",
                [millis(SystemTime::now() + Duration::from_secs(600))],
            )
            .unwrap();
        }
        let outbox = SqliteOutbox::open(dir.path()).await.unwrap();
        let stale = outbox.claim_stale(10).await.unwrap();
        assert_eq!(stale.len(), 1);
        assert_eq!(stale[0].claim.token, 1);
        assert_eq!(stale[0].request_id, None);
        assert_eq!(stale[0].traceparent, None);
        assert_eq!(stale[0].tracestate, None);
        drop(outbox);
        // Opening again applies nothing twice.
        SqliteOutbox::open(dir.path()).await.unwrap();
    }
}
