//! The store in SQLite: `<data_dir>/store.sqlite3`, beside the outbox's file,
//! created on first use. WAL mode; each call is one transaction on the
//! blocking pool, so increment and compare-and-swap are atomic. Counts of keys
//! and bytes per bucket and bytes per plugin are kept in their own tables in
//! the same transactions, so a limit is checked without a scan. Inspect with
//! `sqlite3 data/store.sqlite3`.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use rusqlite::{Connection, OptionalExtension, Transaction, params};
use tokio::sync::OnceCell;

use super::{
    Backend, Row, Standing, StoreError, Usage, Write, add, footprint, millis, signed,
    stored_integer, unavailable,
};

/// The database file's name in the data directory.
pub const FILE: &str = "store.sqlite3";

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS kv (
    bucket  TEXT NOT NULL,
    key     TEXT NOT NULL,
    value   BLOB NOT NULL,
    owner   TEXT NOT NULL,
    expires INTEGER,
    PRIMARY KEY (bucket, key)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS kv_expires ON kv (expires) WHERE expires IS NOT NULL;
CREATE TABLE IF NOT EXISTS kv_buckets (
    bucket TEXT PRIMARY KEY,
    keys   INTEGER NOT NULL,
    bytes  INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS kv_owners (
    owner TEXT PRIMARY KEY,
    bytes INTEGER NOT NULL
) WITHOUT ROWID;
";

/// The SQLite store; the file is opened on first use.
#[derive(Clone)]
pub struct SqliteBackend {
    path: PathBuf,
    db: Arc<OnceCell<Arc<Mutex<Connection>>>>,
}

fn from_millis(ms: i64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_millis(u64::try_from(ms).unwrap_or(0))
}

impl SqliteBackend {
    /// The store in `<data_dir>/store.sqlite3`; nothing is opened yet.
    pub fn new(data_dir: &Path) -> Self {
        Self {
            path: data_dir.join(FILE),
            db: Arc::default(),
        }
    }

    fn open(path: &Path) -> Result<Connection, StoreError> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)
                .map_err(|e| unavailable(format!("creating {}: {e}", dir.display())))?;
        }
        let open = || -> rusqlite::Result<Connection> {
            let db = Connection::open(path)?;
            db.pragma_update(None, "journal_mode", "WAL")?;
            db.pragma_update(None, "synchronous", "NORMAL")?;
            db.busy_timeout(Duration::from_secs(5))?;
            db.execute_batch(SCHEMA)?;
            Ok(db)
        };
        open().map_err(|e| unavailable(format!("opening {}: {e}", path.display())))
    }

    /// Runs `f` in one transaction on the blocking pool, committing if it
    /// returns `Ok`, so a refused write changes nothing.
    async fn with_tx<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Transaction<'_>) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let db = self
            .db
            .get_or_try_init(|| async {
                let path = self.path.clone();
                tokio::task::spawn_blocking(move || Self::open(&path))
                    .await
                    .map_err(unavailable)?
                    .map(|c| Arc::new(Mutex::new(c)))
            })
            .await?
            .clone();
        tokio::task::spawn_blocking(move || {
            let mut conn = db.lock().unwrap_or_else(|p| p.into_inner());
            let tx = conn.transaction().map_err(unavailable)?;
            let out = f(&tx)?;
            tx.commit().map_err(unavailable)?;
            Ok(out)
        })
        .await
        .map_err(unavailable)?
    }
}

fn read(tx: &Transaction<'_>, bucket: &str, key: &str) -> Result<Option<Row>, StoreError> {
    tx.prepare_cached("SELECT value, owner, expires FROM kv WHERE bucket = ?1 AND key = ?2")
        .map_err(unavailable)?
        .query_row(params![bucket, key], |r| {
            Ok(Row {
                value: r.get(0)?,
                owner: r.get(1)?,
                expires: r.get(2)?,
            })
        })
        .optional()
        .map_err(unavailable)
}

fn count(tx: &Transaction<'_>, bucket: &str, keys: i64, bytes: i64) -> Result<(), StoreError> {
    tx.prepare_cached("INSERT INTO kv_buckets (bucket, keys, bytes) VALUES (?1, ?2, ?3)
         ON CONFLICT (bucket) DO UPDATE SET keys = keys + excluded.keys, bytes = bytes + excluded.bytes").map_err(unavailable)?.execute(
        params![bucket, keys, bytes],
    )
    .map_err(unavailable)?;
    Ok(())
}

fn charge(tx: &Transaction<'_>, owner: &str, bytes: i64) -> Result<(), StoreError> {
    tx.prepare_cached(
        "INSERT INTO kv_owners (owner, bytes) VALUES (?1, ?2)
         ON CONFLICT (owner) DO UPDATE SET bytes = bytes + excluded.bytes",
    )
    .map_err(unavailable)?
    .execute(params![owner, bytes])
    .map_err(unavailable)?;
    Ok(())
}

/// Whether the write fits the limits, by the counts the tables keep.
fn admit(
    tx: &Transaction<'_>,
    w: &Write<'_>,
    value: &[u8],
    old: Option<&Row>,
) -> Result<(), StoreError> {
    let number = |sql: &str, arg: &str| -> Result<u64, StoreError> {
        let n: Option<i64> = tx
            .prepare_cached(sql)
            .map_err(unavailable)?
            .query_row(params![arg], |r| r.get(0))
            .optional()
            .map_err(unavailable)?;
        Ok(n.map_or(0, |n| u64::try_from(n).unwrap_or(0)))
    };
    let standing = Standing {
        existing: old.map(|o| (o.owner.as_str(), footprint(w.key, &o.value))),
        bucket_keys: number("SELECT keys FROM kv_buckets WHERE bucket = ?1", w.bucket)?,
        held: number("SELECT bytes FROM kv_owners WHERE owner = ?1", w.owner)?,
    };
    super::admit(w, value, standing)
}

/// Puts a value within the limits, pruning expired keys first if it would
/// not fit; or returns why not, having written nothing the caller commits.
fn put(
    tx: &Transaction<'_>,
    w: &Write<'_>,
    value: &[u8],
    expires: Option<SystemTime>,
) -> Result<(), StoreError> {
    let mut old = read(tx, w.bucket, w.key)?;
    if let Err(refused) = admit(tx, w, value, old.as_ref()) {
        prune(tx, millis(w.now))?;
        old = read(tx, w.bucket, w.key)?;
        admit(tx, w, value, old.as_ref()).map_err(|_| refused)?;
    }
    tx.prepare_cached(
        "INSERT INTO kv (bucket, key, value, owner, expires) VALUES (?1, ?2, ?3, ?4, ?5)
         ON CONFLICT (bucket, key) DO UPDATE SET
             value = excluded.value, owner = excluded.owner, expires = excluded.expires",
    )
    .map_err(unavailable)?
    .execute(params![
        w.bucket,
        w.key,
        value,
        w.owner,
        expires.map(millis)
    ])
    .map_err(unavailable)?;
    let new = signed(footprint(w.key, value));
    match old {
        Some(old) => {
            let gone = signed(footprint(w.key, &old.value));
            charge(tx, &old.owner, -gone)?;
            count(tx, w.bucket, 0, new - gone)?;
        }
        None => count(tx, w.bucket, 1, new)?,
    }
    charge(tx, w.owner, new)
}

/// Deletes a key and gives its bytes back; says whether it was live.
fn remove(tx: &Transaction<'_>, bucket: &str, key: &str, now: i64) -> Result<bool, StoreError> {
    let Some(old) = read(tx, bucket, key)? else {
        return Ok(false);
    };
    tx.prepare_cached("DELETE FROM kv WHERE bucket = ?1 AND key = ?2")
        .map_err(unavailable)?
        .execute(params![bucket, key])
        .map_err(unavailable)?;
    let gone = signed(footprint(key, &old.value));
    charge(tx, &old.owner, -gone)?;
    count(tx, bucket, -1, -gone)?;
    Ok(old.live(now))
}

fn prune(tx: &Transaction<'_>, now: i64) -> Result<u64, StoreError> {
    let mut statement = tx
        .prepare_cached(
            "DELETE FROM kv WHERE expires IS NOT NULL AND expires <= ?1
             RETURNING bucket, owner, length(key) + length(value)",
        )
        .map_err(unavailable)?;
    let gone: Vec<(String, String, i64)> = statement
        .query_map(params![now], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .map_err(unavailable)?
        .collect::<Result<_, _>>()
        .map_err(unavailable)?;
    for (bucket, owner, bytes) in &gone {
        charge(tx, owner, -bytes)?;
        count(tx, bucket, -1, -bytes)?;
    }
    Ok(gone.len() as u64)
}

/// What a key holds now, if live.
fn live(
    tx: &Transaction<'_>,
    bucket: &str,
    key: &str,
    now: i64,
) -> Result<Option<Row>, StoreError> {
    Ok(read(tx, bucket, key)?.filter(|row| row.live(now)))
}

#[async_trait::async_trait]
impl Backend for SqliteBackend {
    async fn get(
        &self,
        bucket: &str,
        key: &str,
        now: SystemTime,
    ) -> Result<Option<Vec<u8>>, StoreError> {
        let (bucket, key) = (bucket.to_owned(), key.to_owned());
        self.with_tx(move |tx| Ok(live(tx, &bucket, &key, millis(now))?.map(|r| r.value)))
            .await
    }

    async fn set(
        &self,
        write: Write<'_>,
        value: &[u8],
        expires: Option<SystemTime>,
    ) -> Result<(), StoreError> {
        let owned = Owned::from(&write);
        let value = value.to_vec();
        self.with_tx(move |tx| put(tx, &owned.write(), &value, expires))
            .await
    }

    async fn delete(&self, write: Write<'_>) -> Result<bool, StoreError> {
        let owned = Owned::from(&write);
        self.with_tx(move |tx| remove(tx, &owned.bucket, &owned.key, millis(owned.now)))
            .await
    }

    async fn increment(&self, write: Write<'_>, by: i64) -> Result<i64, StoreError> {
        let owned = Owned::from(&write);
        self.with_tx(move |tx| {
            let w = owned.write();
            let current = live(tx, w.bucket, w.key, millis(w.now))?;
            let expires = current.as_ref().and_then(|r| r.expires).map(from_millis);
            let sum = add(
                w.key,
                stored_integer(w.key, current.as_ref().map(|r| r.value.as_slice()))?,
                by,
            )?;
            put(tx, &w, sum.to_string().as_bytes(), expires)?;
            Ok(sum)
        })
        .await
    }

    async fn compare_and_swap(
        &self,
        write: Write<'_>,
        expected: Option<&[u8]>,
        value: &[u8],
        expires: Option<SystemTime>,
    ) -> Result<bool, StoreError> {
        let owned = Owned::from(&write);
        let (expected, value) = (expected.map(<[u8]>::to_vec), value.to_vec());
        self.with_tx(move |tx| {
            let w = owned.write();
            let current = live(tx, w.bucket, w.key, millis(w.now))?;
            if current.as_ref().map(|r| r.value.as_slice()) != expected.as_deref() {
                return Ok(false);
            }
            put(tx, &w, &value, expires)?;
            Ok(true)
        })
        .await
    }

    async fn keys(
        &self,
        bucket: &str,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
        now: SystemTime,
    ) -> Result<Vec<String>, StoreError> {
        let (bucket, prefix, after) = (
            bucket.to_owned(),
            prefix.to_owned(),
            after.map(str::to_owned),
        );
        self.with_tx(move |tx| {
            // Keys compare as bytes (SQLite's BINARY collation); the prefix
            // test is on the key's leading bytes, so `%` and `_` mean nothing.
            let mut statement = tx
                .prepare_cached(
                    "SELECT key FROM kv
                     WHERE bucket = ?1 AND key >= ?2 AND substr(key, 1, length(?2)) = ?2
                       AND (?3 IS NULL OR key > ?3)
                       AND (expires IS NULL OR expires > ?4)
                     ORDER BY key LIMIT ?5",
                )
                .map_err(unavailable)?;
            statement
                .query_map(
                    params![bucket, prefix, after, millis(now), signed(limit as u64)],
                    |r| r.get(0),
                )
                .map_err(unavailable)?
                .collect::<Result<Vec<String>, _>>()
                .map_err(unavailable)
        })
        .await
    }

    async fn usage(&self, bucket: &str) -> Result<Usage, StoreError> {
        let bucket = bucket.to_owned();
        self.with_tx(move |tx| {
            let row: Option<(i64, i64)> = tx
                .query_row(
                    "SELECT keys, bytes FROM kv_buckets WHERE bucket = ?1",
                    params![bucket],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .optional()
                .map_err(unavailable)?;
            let (keys, bytes) = row.unwrap_or((0, 0));
            Ok(Usage {
                keys: u64::try_from(keys).unwrap_or(0),
                bytes: u64::try_from(bytes).unwrap_or(0),
            })
        })
        .await
    }

    async fn prune(&self, now: SystemTime) -> Result<u64, StoreError> {
        // Pruning never creates the file: no file, nothing to prune.
        if self.db.get().is_none() && !self.path.exists() {
            return Ok(0);
        }
        self.with_tx(move |tx| prune(tx, millis(now))).await
    }
}

/// A `Write` with owned strings, to move onto the blocking pool.
struct Owned {
    owner: String,
    bucket: String,
    key: String,
    limits: super::Limits,
    now: SystemTime,
}

impl From<&Write<'_>> for Owned {
    fn from(w: &Write<'_>) -> Self {
        Self {
            owner: w.owner.into(),
            bucket: w.bucket.into(),
            key: w.key.into(),
            limits: *w.limits,
            now: w.now,
        }
    }
}

impl Owned {
    fn write(&self) -> Write<'_> {
        Write {
            owner: &self.owner,
            bucket: &self.bucket,
            key: &self.key,
            limits: &self.limits,
            now: self.now,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_sqlite_backend_keeps_the_store_invariants() {
        let dir = tempfile::tempdir().unwrap();
        crate::store::conformance::run(&SqliteBackend::new(dir.path())).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_increments_and_swaps_are_atomic() {
        let dir = tempfile::tempdir().unwrap();
        crate::store::conformance::races(Arc::new(SqliteBackend::new(dir.path()))).await;
    }

    #[tokio::test]
    async fn keys_values_and_counts_survive_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let limits = crate::store::Limits::default();
        let now = SystemTime::now();
        let w = Write {
            owner: "p",
            bucket: "b",
            key: "k",
            limits: &limits,
            now,
        };
        SqliteBackend::new(dir.path())
            .set(w, b"kept", None)
            .await
            .unwrap();
        let again = SqliteBackend::new(dir.path());
        assert_eq!(
            again.get("b", "k", now).await.unwrap().as_deref(),
            Some(&b"kept"[..])
        );
        assert_eq!(again.usage("b").await.unwrap(), Usage { keys: 1, bytes: 5 });
    }

    #[tokio::test]
    async fn a_file_that_cannot_be_opened_is_an_error_not_a_panic() {
        let dir = tempfile::tempdir().unwrap();
        let blocker = dir.path().join("file");
        std::fs::write(&blocker, b"").unwrap();
        let store = SqliteBackend::new(&blocker.join("data"));
        let err = store.get("b", "k", SystemTime::now()).await.unwrap_err();
        assert!(matches!(err, StoreError::Unavailable(_)), "{err}");
    }
}
